"""Stepping speed of the simulated reference unit without OPC UA (budget >= 2000x real time; README, Benchmarks).

One step is one second of plant time, measured together with values() (every readable tag), as a
training loop or the daemon tests use it. Prints the median step time and, as the last line, a JSON
object with "realtime_factor" (simulated seconds per wall second, from the median step).

    python benchmarks/sim_speed.py [--steps 20000] [--scenario agc_day_24h]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from boiler_ai.sim.scenario import named_scenario  # noqa: E402
from boiler_ai.sim.unit import ReferenceUnit  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--scenario", default="agc_day_24h")
    args = parser.parse_args()
    unit = ReferenceUnit(named_scenario(args.scenario, 0), seed=0)
    for _ in range(500):  # warm up
        unit.step()
        unit.values()
    times = []
    clock = time.perf_counter
    start = clock()
    for _ in range(args.steps):
        t0 = clock()
        unit.step()
        unit.values()
        times.append(clock() - t0)
    wall = clock() - start
    median = statistics.median(times)
    p99 = sorted(times)[int(0.99 * len(times))]
    print(f"{args.steps} steps of 1 s from t = 500 s of {args.scenario}: median {median * 1e6:.0f} us, "
          f"p99 {p99 * 1e6:.0f} us per step incl. values(); {args.steps / wall:.0f} steps/s overall")
    print(json.dumps({"realtime_factor": round(1.0 / median), "median_step_us": round(median * 1e6, 1),
                      "p99_step_us": round(p99 * 1e6, 1), "overall_realtime_factor": round(args.steps / wall),
                      "scenario": args.scenario, "steps": args.steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
