"""Control-cycle latency against the simulated unit's OPC UA server on loopback, per stage.

The simulator runs in its own process (`boiler-ai sim`), as a DCS would; this process runs the real
daemon (OPC UA adapter, controller core, durable log) in closed loop, one cycle per simulated second.
"compute" is our own code, validate -> record (the record stage: controller state, engagement
decision, building the record and queuing it; the log's writer thread encodes it off the cycle);
"cycle" is read -> record, with the loopback OPC UA round trips.

Shared virtual machines stall a process now and then for a millisecond or more, whatever it runs, so
one run's p99 says as much about the neighbours as about the code. The measured cycles are cut into
windows of equal length; each window gets its own p50 and p99, and the figures reported are the
medians over the windows (each window's figures are printed too, and the pooled p99 beside them).
Last line: a JSON object with "compute_p99_ms", "cycle_p99_ms" (medians over windows) and "rss_mb"
(this daemon process's resident memory at the end).

With --dashboard it measures what a dashboard costs the control loop: runs alternate without and with
a `boiler-ai dashboard` process following the daemon (PUB and catch-up, as at a plant) and a busy
client polling the dashboard's status and trend as fast as it answers; both kinds of run serve
records on PUB and catch-up. Alternating pairs (--pairs) keep the neighbours' noise out of the
comparison; the last line then adds "dashboard": the medians over the runs of each kind and the
change of the cycle and compute p99 in percent.

With --poll-metrics it measures what a Prometheus client polling `/metrics` as fast as it answers
costs the control loop: the daemon serves its metrics endpoint in every run (as `boiler-ai run` does),
and runs alternate without and with a client in another process polling it back to back; the last
line adds "metrics", as for --dashboard.

    python benchmarks/cycle_latency.py [--cycles 2600] [--window 500] [--speed 20] [--config CONFIG]
    python benchmarks/cycle_latency.py --dashboard [--pairs 2]
    python benchmarks/cycle_latency.py --poll-metrics [--pairs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from boiler_ai.config import CurveConfig, load_config
from boiler_ai.daemon import Daemon, build_core, cpu_latency_limit, make_plant, open_recorder
from boiler_ai.demo import demo_config, free_port
from boiler_ai.messages import STAGES
from boiler_ai.metrics import MetricsServer
from boiler_ai.record.curve import create_keys

ROOT = Path(__file__).resolve().parent.parent
COMPUTE = ("validate", "observe", "infer", "project", "guard", "record")


def wait_for_server(endpoint: str, timeout_s: float = 60.0) -> None:
    """Until the simulator's OPC UA server accepts connections (it takes seconds on a loaded machine)."""
    host, port = endpoint.removeprefix("opc.tcp://").rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(cfg, cycles: int, speed: float, metrics_port: int | None = None) -> tuple[list[dict], str]:
    """Per-cycle timings, and what became of the config's CPU latency limit; with metrics_port, the
    daemon's metrics served there meanwhile, as run_daemon serves them."""
    core = build_core(cfg)
    plant, pace = make_plant(core)
    daemon = Daemon(core, plant, open_recorder(cfg), pace=pace)
    metrics_server = None if metrics_port is None else MetricsServer(daemon.metrics, "127.0.0.1", metrics_port)
    await daemon.plant.connect()
    gc.collect()
    gc.freeze()  # as run_daemon does
    timings = []
    with cpu_latency_limit(cfg) as limit:  # as run_daemon does
        latency = (f"held at {limit.limit_us} us" if limit.held else
                   "not set" if limit.error is None else f"not held ({limit.error})")
        try:
            await cycle_at_period(daemon, cycles, speed, timings)
        finally:
            if metrics_server is not None:
                metrics_server.close()
    return timings, latency


async def cycle_at_period(daemon: Daemon, cycles: int, speed: float, timings: list[dict]) -> None:
    try:
        period = 1.0 / speed
        next_start = time.monotonic()
        for _ in range(cycles):
            started = time.perf_counter_ns()
            record = await daemon.cycle()
            total_us = (time.perf_counter_ns() - started) / 1000
            t = {stage: getattr(record.outcome.timings, stage) for stage in STAGES}
            t.update(total=total_us, mode=record.decision.mode.value)
            timings.append(t)
            next_start += period
            await asyncio.sleep(max(0.0, next_start - time.monotonic()))
    finally:
        await daemon.plant.close()
        daemon.recorder.close()


WARM_UP = 100  # cycles skipped at the start: connect, history filling, engagement


def percentiles(values) -> tuple[float, float]:
    data = np.asarray(values, dtype=float) / 1000  # us -> ms
    return float(np.percentile(data, 50)), float(np.percentile(data, 99))


def busy_client(url: str, stop_file: Path) -> None:
    """Poll the dashboard's status and trend, or a metrics endpoint, back to back until stop_file exists
    (run in its own process)."""
    after, polls = -1, 0
    while not stop_file.exists():
        try:
            if url.endswith("/metrics"):
                urllib.request.urlopen(url, timeout=5).read()
            else:
                urllib.request.urlopen(url + "api/status", timeout=5).read()
                trend = json.loads(urllib.request.urlopen(f"{url}api/trend?after={after}", timeout=5).read())
                after = trend["seq"][-1] if trend["seq"] else after
            polls += 1
        except OSError:
            time.sleep(0.1)  # not up yet
    stop_file.with_suffix(".polls").write_text(str(polls))


def run_once(args, endpoint: str, dashboard: bool | None, poll_metrics: bool | None = None
             ) -> tuple[list[dict], str, int]:
    """One measured daemon run; with dashboard (True or False) the daemon serves PUB and catch-up and,
    when True, a dashboard follows it under a busy client; with poll_metrics (True or False) it serves its
    metrics endpoint and, when True, a client polls it back to back. Returns timings, CPU limit state, polls."""
    extra: list[subprocess.Popen] = []
    polls = 0
    metrics_port = None if poll_metrics is None else free_port()
    with tempfile.TemporaryDirectory() as tmp:
        base = load_config(args.config)
        cfg = demo_config(base, endpoint, args.speed, Path(tmp))
        record = dataclasses.replace(cfg.record, fsync="interval")
        if dashboard is not None:
            pub, catchup = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
            # the stream behind CURVE with throwaway keys, as a plant runs it
            keys = Path(tmp) / "keys"
            create_keys(keys, ["dashboard"])
            record = dataclasses.replace(record, publish_endpoint=pub, catchup_endpoint=catchup, curve=CurveConfig(
                keys / "server.key_secret", keys / "authorized_clients"))
        cfg = dataclasses.replace(cfg, record=record, cpu_latency_limit_us=None if args.no_cpu_latency_limit
                                  else base.cpu_latency_limit_us)
        stop_file = Path(tmp) / "stop"
        try:
            if dashboard:
                port = free_port()
                # The dashboard lowers its own priority; the client stands in for a browser on another
                # machine, so it runs at the same low priority (and on its own core with --dashboard-cpu).
                def pin():
                    if args.dashboard_cpu is not None:
                        os.sched_setaffinity(0, {args.dashboard_cpu})
                extra.append(subprocess.Popen(
                    [sys.executable, "-m", "boiler_ai", "dashboard", "--catchup", catchup, "--pub", pub,
                     "--port", str(port), "--client-key", str(keys / "clients" / "dashboard.key_secret"),
                     "--server-key", str(keys / "server.key")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin))
                extra.append(subprocess.Popen(
                    [sys.executable, __file__, "--busy-client", f"http://127.0.0.1:{port}/", str(stop_file)],
                    preexec_fn=lambda: (pin(), os.nice(10))))
            if poll_metrics:  # a scraper gone wrong: not niced, as fast as the endpoint answers
                extra.append(subprocess.Popen(
                    [sys.executable, __file__, "--busy-client", f"http://127.0.0.1:{metrics_port}/metrics",
                     str(stop_file)]))
            timings, latency = asyncio.run(measure(cfg, args.cycles, args.speed, metrics_port))
        finally:
            stop_file.touch()
            for process in extra[::-1]:
                if process.args[-1] == str(stop_file):
                    process.wait(30)
                else:
                    process.terminate()
                    process.wait(30)
            if dashboard or poll_metrics:
                polls = int(stop_file.with_suffix(".polls").read_text() or 0)
    return timings, latency, polls


def summarise(timings: list[dict], window: int) -> tuple[list[dict], list[list[dict]], dict]:
    for t in timings:
        t["compute"] = sum(t[s] for s in COMPUTE)
    measured = timings[WARM_UP:]
    windows = [measured[i:i + window] for i in range(0, len(measured) - window + 1, window)]
    summary = {}
    for stage in STAGES + ("compute", "total"):
        per_window = [percentiles([t[stage] for t in w]) for w in windows]
        summary[stage] = (float(np.median([w[0] for w in per_window])), float(np.median([w[1] for w in per_window])),
                          per_window)
    return measured, windows, summary


def compare_pairs(args, endpoint: str, what: str) -> None:
    """Alternating runs without and with `what` ("dashboard" or "metrics") under a busy client."""
    if args.dashboard_cpu is not None:  # the daemon (this process) off the dashboard's core, in both kinds of run
        os.sched_setaffinity(0, os.sched_getaffinity(0) - {args.dashboard_cpu} or {args.dashboard_cpu})
    label = {"dashboard": "a dashboard polled by a busy client", "metrics": "/metrics polled by a busy client"}[what]
    runs: dict[bool, list[dict]] = {False: [], True: []}
    for pair in range(args.pairs):
        for polled in (False, True):
            timings, latency, polls = (run_once(args, endpoint, polled) if what == "dashboard" else
                                       run_once(args, endpoint, None, poll_metrics=polled))
            measured, windows, summary = summarise(timings, args.window)
            figures = {"compute_p99_ms": summary["compute"][1], "cycle_p99_ms": summary["total"][1],
                       "cycle_p50_ms": summary["total"][0], "polls": polls, "seconds": len(timings) / args.speed}
            runs[polled].append(figures)
            print(f"pair {pair + 1} {'with' if polled else 'without'} {label}: cycle p50 "
                  f"{figures['cycle_p50_ms']:.3f} ms, p99 {figures['cycle_p99_ms']:.3f} ms, compute p99 "
                  f"{figures['compute_p99_ms']:.3f} ms" + (f", {polls} client polls "
                                                            f"({polls / figures['seconds']:.0f}/s)"
                                                            if polled else "")
                  + f"; CPU latency limit {latency}", flush=True)
    med = {k: {f: float(np.median([r[f] for r in runs[k]])) for f in ("cycle_p99_ms", "compute_p99_ms",
                                                                        "cycle_p50_ms")} for k in runs}
    change = {f: 100.0 * (med[True][f] - med[False][f]) / med[False][f] for f in ("cycle_p99_ms", "compute_p99_ms")}
    print(f"median over {args.pairs} runs each: cycle p99 {med[False]['cycle_p99_ms']:.3f} ms without, "
          f"{med[True]['cycle_p99_ms']:.3f} ms with {label} "
          f"({change['cycle_p99_ms']:+.1f} %); compute p99 {change['compute_p99_ms']:+.1f} %")
    print(json.dumps({what: {
        "without": {k: round(v, 3) for k, v in med[False].items()},
        "with": {k: round(v, 3) for k, v in med[True].items()},
        "cycle_p99_change_pct": round(change["cycle_p99_ms"], 1),
        "compute_p99_change_pct": round(change["compute_p99_ms"], 1),
        "pairs": args.pairs, "cycles_per_run": args.cycles - WARM_UP, "dashboard_cpu": args.dashboard_cpu,
        "client_polls_per_s": round(float(np.median([r["polls"] / r["seconds"] for r in runs[True]])), 1)}}))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--busy-client":
        busy_client(sys.argv[2], Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2600)
    parser.add_argument("--window", type=int, default=500, help="cycles per window (medians are taken over windows)")
    parser.add_argument("--speed", type=float, default=20.0)
    parser.add_argument("--config", type=Path, default=ROOT / "deploy" / "examples" / "reference_unit.yaml")
    parser.add_argument("--no-cpu-latency-limit", action="store_true",
                        help="ignore the config's host.cpu_latency_limit_us (measure with the OS's idle states)")
    parser.add_argument("--dashboard", action="store_true",
                        help="compare runs without and with a dashboard under a busy client (alternating pairs)")
    parser.add_argument("--poll-metrics", action="store_true",
                        help="compare runs without and with a client polling the daemon's /metrics as fast as it "
                             "answers, from another process (alternating pairs)")
    parser.add_argument("--pairs", type=int, default=2, help="with --dashboard or --poll-metrics: pairs of runs")
    parser.add_argument("--dashboard-cpu", type=int, default=-1,
                        help="with --dashboard: a CPU for the dashboard and its client, the daemon on the others "
                             "(default -1: no pinning)")
    args = parser.parse_args()
    if args.dashboard_cpu is not None and args.dashboard_cpu < 0:
        args.dashboard_cpu = None
    if args.dashboard and args.poll_metrics:
        parser.error("--dashboard and --poll-metrics are two separate comparisons: one at a time")
    if args.cycles - WARM_UP < args.window:
        parser.error(f"--cycles must be at least {WARM_UP} + --window")

    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    sim = subprocess.Popen([sys.executable, "-m", "boiler_ai", "sim", "--endpoint", endpoint, "--speed",
                            str(args.speed), "--scenario", "steady_full_load", "--ai-enable"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_server(endpoint)
        if args.dashboard or args.poll_metrics:
            compare_pairs(args, endpoint, "dashboard" if args.dashboard else "metrics")
            return
        timings, latency, _ = run_once(args, endpoint, None)
    finally:
        sim.terminate()
        sim.wait(10)
    measured, windows, summary = summarise(timings, args.window)
    active = sum(t["mode"] == "active" for t in measured) / len(measured)
    print(f"{len(measured)} cycles measured ({active:.0%} in AI mode) in {len(windows)} windows of {args.window}, "
          f"speed {args.speed:g}x, {args.config.name}, CPU latency limit {latency}")
    print(f"{'stage':10}{'p50 ms':>10}{'p99 ms':>10}   median over windows; p99 of each window")
    for stage in STAGES + ("compute", "total"):
        print(f"{stage:10}{summary[stage][0]:>10.3f}{summary[stage][1]:>10.3f}   "
              + " ".join(f"{w[1]:.3f}" for w in summary[stage][2]))
    pooled = {stage: percentiles([t[stage] for t in measured])[1] for stage in ("compute", "total")}
    print(f"pooled over all {len(measured)} cycles: compute p99 {pooled['compute']:.3f} ms, "
          f"cycle p99 {pooled['total']:.3f} ms")
    figures = {f"{name}_{q}_ms": round(summary[stage][k], 3)
               for name, stage in (("compute", "compute"), ("cycle", "total")) for k, q in enumerate(("p50", "p99"))}
    figures |= {"compute_p99_pooled_ms": round(pooled["compute"], 3), "cycle_p99_pooled_ms": round(pooled["total"], 3),
                "windows": len(windows), "cpu_latency_limit": latency, "rss_mb": round(rss_mb(), 1),
                "cycles": len(measured), "active_share": round(active, 3)}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
