"""The DCS alone through every standard scenario and its named seeds: seconds over each process limit
(issue 11: must be 0), with the run's mean true boiler efficiency and unit heat rate.

    python benchmarks/sim_scenarios.py [--workers 2] [--scenario NAME ...]

Prints one line per run and, as the last line, a JSON object with "total_violation_s" and the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from boiler_ai.sim.scenario import STANDARD_SCENARIOS, named_scenario  # noqa: E402
from boiler_ai.sim.unit import ReferenceUnit  # noqa: E402


def run(name: str, seed: int) -> dict:
    sc = named_scenario(name, seed)
    unit = ReferenceUnit(sc, seed)
    eff = hr = 0.0
    n = 0
    extremes: dict[str, list[float]] = {}
    while unit.t < sc.duration_s:
        unit.step()
        p = unit.performance()
        eff += p["efficiency_pct"]
        hr += p["heat_rate_kj_kwh"]
        n += 1
        for k in ("main_steam_temp_c", "reheat_steam_temp_c", "co_minute_ppm", "nox_mg_nm3", "o2_pct"):
            lo_hi = extremes.setdefault(k, [p[k], p[k]])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], p[k]), max(lo_hi[1], p[k])
    return {"scenario": name, "seed": seed, "violation_s": {k: v for k, v in unit.violation_s.items() if v},
            "efficiency_pct": round(eff / n, 3), "heat_rate_kj_kwh": round(hr / n, 1),
            "extremes": {k: [round(a, 1), round(b, 1)] for k, (a, b) in extremes.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scenario", nargs="+", default=list(STANDARD_SCENARIOS), choices=list(STANDARD_SCENARIOS))
    args = parser.parse_args()
    jobs = [(name, seed) for name in args.scenario for seed in STANDARD_SCENARIOS[name]]
    with ProcessPoolExecutor(max_workers=max(args.workers, 1)) as pool:
        runs = list(pool.map(run, *zip(*jobs)))
    for r in runs:
        print(f"{r['scenario']:16} seed {r['seed']}: {sum(r['violation_s'].values()):5.0f} s over limits "
              f"{r['violation_s'] or ''}  efficiency {r['efficiency_pct']:.2f} %  heat rate {r['heat_rate_kj_kwh']:.0f}"
              f" kJ/kWh  extremes {r['extremes']}")
    total = sum(sum(r["violation_s"].values()) for r in runs)
    print(json.dumps({"total_violation_s": total, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
