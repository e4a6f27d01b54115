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

    python benchmarks/cycle_latency.py [--cycles 2600] [--window 500] [--speed 20] [--config CONFIG]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from boiler_ai.config import load_config
from boiler_ai.daemon import Daemon, build_core, cpu_latency_limit, make_plant, open_recorder
from boiler_ai.demo import demo_config, free_port
from boiler_ai.messages import STAGES

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


async def measure(cfg, cycles: int, speed: float) -> tuple[list[dict], str]:
    """Per-cycle timings, and what became of the config's CPU latency limit."""
    core = build_core(cfg)
    plant, pace = make_plant(core)
    daemon = Daemon(core, plant, open_recorder(cfg), pace=pace)
    await daemon.plant.connect()
    gc.collect()
    gc.freeze()  # as run_daemon does
    timings = []
    with cpu_latency_limit(cfg) as limit:  # as run_daemon does
        latency = (f"held at {limit.limit_us} us" if limit.held else
                   "not set" if limit.error is None else f"not held ({limit.error})")
        await cycle_at_period(daemon, cycles, speed, timings)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2600)
    parser.add_argument("--window", type=int, default=500, help="cycles per window (medians are taken over windows)")
    parser.add_argument("--speed", type=float, default=20.0)
    parser.add_argument("--config", type=Path, default=ROOT / "deploy" / "examples" / "reference_unit.yaml")
    parser.add_argument("--no-cpu-latency-limit", action="store_true",
                        help="ignore the config's host.cpu_latency_limit_us (measure with the OS's idle states)")
    args = parser.parse_args()
    if args.cycles - WARM_UP < args.window:
        parser.error(f"--cycles must be at least {WARM_UP} + --window")

    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    sim = subprocess.Popen([sys.executable, "-m", "boiler_ai", "sim", "--endpoint", endpoint, "--speed",
                            str(args.speed), "--scenario", "steady_full_load", "--ai-enable"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_server(endpoint)
        with tempfile.TemporaryDirectory() as tmp:
            base = load_config(args.config)
            cfg = demo_config(base, endpoint, args.speed, Path(tmp))
            cfg = dataclasses.replace(cfg, record=dataclasses.replace(cfg.record, fsync="interval"),
                                      cpu_latency_limit_us=None if args.no_cpu_latency_limit
                                      else base.cpu_latency_limit_us)
            timings, latency = asyncio.run(measure(cfg, args.cycles, args.speed))
    finally:
        sim.terminate()
        sim.wait(10)
    for t in timings:
        t["compute"] = sum(t[s] for s in COMPUTE)
    measured = timings[WARM_UP:]
    windows = [measured[i:i + args.window] for i in range(0, len(measured) - args.window + 1, args.window)]
    active = sum(t["mode"] == "active" for t in measured) / len(measured)
    print(f"{len(measured)} cycles measured ({active:.0%} in AI mode) in {len(windows)} windows of {args.window}, "
          f"speed {args.speed:g}x, {args.config.name}, CPU latency limit {latency}")
    print(f"{'stage':10}{'p50 ms':>10}{'p99 ms':>10}   median over windows; p99 of each window")
    summary = {}
    for stage in STAGES + ("compute", "total"):
        per_window = [percentiles([t[stage] for t in w]) for w in windows]
        summary[stage] = (float(np.median([w[0] for w in per_window])), float(np.median([w[1] for w in per_window])))
        print(f"{stage:10}{summary[stage][0]:>10.3f}{summary[stage][1]:>10.3f}   "
              + " ".join(f"{w[1]:.3f}" for w in per_window))
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
