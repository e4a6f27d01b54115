"""Control-cycle latency against the simulated unit's OPC UA server on loopback, per stage.

The simulator runs in its own process (`boiler-ai sim`), as a DCS would; this process runs the real
daemon (OPC UA adapter, controller core, durable log) in closed loop, one cycle per simulated second.
Prints p50/p99 per stage, then as its last line a JSON object with "compute_p99_ms" (validate ->
record: our own code), "cycle_p99_ms" (read -> record, including the loopback OPC UA round trips)
and "rss_mb" (this daemon process's resident memory at the end).

    python benchmarks/cycle_latency.py [--cycles 1500] [--speed 20] [--config deploy/examples/reference_unit.yaml]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from boiler_ai.config import load_config
from boiler_ai.daemon import Daemon, build_core, make_plant, open_recorder
from boiler_ai.demo import demo_config, free_port

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("read", "validate", "observe", "infer", "project", "guard", "write", "record")
COMPUTE = ("validate", "observe", "infer", "project", "guard", "record")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(cfg, cycles: int, speed: float) -> list[dict]:
    core = build_core(cfg)
    daemon = Daemon(core, make_plant(core), open_recorder(cfg))
    await daemon.plant.connect()
    gc.collect()
    gc.freeze()  # as run_daemon does
    timings = []
    try:
        period = 1.0 / speed
        next_start = time.monotonic()
        for _ in range(cycles):
            started = time.perf_counter_ns()
            out = await daemon.cycle()
            total_us = (time.perf_counter_ns() - started) / 1000
            # the record stage of this cycle is stamped into the next record; measure it here
            t = dict(out.record["timings_us"], record=daemon._last_record_us, total=total_us,
                     mode=out.record["mode"])
            timings.append(t)
            next_start += period
            await asyncio.sleep(max(0.0, next_start - time.monotonic()))
    finally:
        await daemon.plant.close()
        daemon.recorder.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1500)
    parser.add_argument("--speed", type=float, default=20.0)
    parser.add_argument("--config", type=Path, default=ROOT / "deploy" / "examples" / "reference_unit.yaml")
    args = parser.parse_args()

    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    sim = subprocess.Popen([sys.executable, "-m", "boiler_ai", "sim", "--endpoint", endpoint, "--speed",
                            str(args.speed), "--scenario", "steady_full_load", "--ai-enable"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3.0)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = demo_config(load_config(args.config), endpoint, args.speed, Path(tmp))
            cfg = dataclasses.replace(cfg, record=dataclasses.replace(cfg.record, fsync="interval"))
            timings = asyncio.run(measure(cfg, args.cycles, args.speed))
    finally:
        sim.terminate()
        sim.wait(10)
    warm = timings[len(timings) // 10:]  # skip the connect and history-filling start
    active = sum(t["mode"] == "active" for t in warm) / len(warm)
    print(f"{len(warm)} cycles measured ({active:.0%} in AI mode), speed {args.speed:g}x, {args.config.name}")
    print(f"{'stage':10}{'p50 ms':>10}{'p99 ms':>10}")
    summary = {}
    for stage in STAGES + ("compute", "total"):
        if stage == "compute":
            data = np.array([sum(t[s] for s in COMPUTE) for t in warm]) / 1000
        else:
            data = np.array([t[stage] for t in warm]) / 1000
        summary[stage] = (float(np.percentile(data, 50)), float(np.percentile(data, 99)))
        print(f"{stage:10}{summary[stage][0]:>10.3f}{summary[stage][1]:>10.3f}")
    figures = {f"{name}_{q}_ms": round(summary[stage][k], 3)
               for name, stage in (("compute", "compute"), ("cycle", "total")) for k, q in enumerate(("p50", "p99"))}
    print(json.dumps(figures | {"rss_mb": round(rss_mb(), 1), "cycles": len(warm), "active_share": round(active, 3)}))


if __name__ == "__main__":
    main()
