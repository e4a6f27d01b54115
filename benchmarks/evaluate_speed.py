"""`boiler-ai evaluate` wall time, cold and with its baseline cache warm.

A run simulates four things: the unit under the DCS alone, the DCS's setpoints echoed through the core
(the DCS's own fault rate), the oracle at sampled operating points, and the policy in closed loop. Only
the last depends on the model; `--baseline-cache DIR` keeps the other three. This runs the same
evaluation twice into a fresh cache folder: cold (everything simulated) and warm (the baselines reused),
and checks that both give the same summary. Target (issue 14): an evaluation within 20 minutes on 2 cores.
`--keep-cache DIR` uses DIR (which must not hold baselines yet) instead of a temporary folder and keeps it,
so that other models' evaluations (`boiler-ai evaluate --baseline-cache DIR`) reuse the baselines.

    python benchmarks/evaluate_speed.py MODEL [--max-seeds 4] [--hours 4] [--workers 2] [--keep-cache DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--max-seeds", type=int, default=4, help="first N held-out seeds (all 20: the full set)")
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep-cache", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    if args.keep_cache is not None and args.keep_cache.is_dir() and any(args.keep_cache.iterdir()):
        print(f"--keep-cache {args.keep_cache}: not empty (a cold run needs an empty cache)", file=sys.stderr)
        return 2
    from boiler_ai.evaluate import evaluate
    from boiler_ai.sim.scenario import HELD_OUT_SEEDS, STANDARD_SCENARIOS

    seeds = list(HELD_OUT_SEEDS)[:args.max_seeds]
    timings, summaries = {}, {}
    with contextlib.nullcontext(args.keep_cache) if args.keep_cache is not None else \
            tempfile.TemporaryDirectory(prefix="boiler-ai-baselines-") as cache:
        for name in ("cold", "warm"):
            started = time.perf_counter()
            summary, runs = evaluate(args.model, scenarios=list(STANDARD_SCENARIOS), seeds=seeds, hours=args.hours,
                                     workers=args.workers, baseline_cache=Path(cache))
            timings[name] = time.perf_counter() - started
            summaries[name] = {k: v for k, v in summary.items() if k != "baseline_runs_reused"}
            print(f"{name}: {len(runs)} runs, {summary['simulated_h']} simulated h, {timings[name]:.0f} s, "
                  f"baselines reused {summary['baseline_runs_reused']}", flush=True)
    result = {"runs": len(runs), "seeds": len(seeds), "hours_per_run": args.hours, "workers": args.workers,
              "cold_s": round(timings["cold"], 1), "warm_s": round(timings["warm"], 1),
              "warm_over_cold": round(timings["warm"] / timings["cold"], 3),
              "same_summary": summaries["cold"] == summaries["warm"]}
    print(json.dumps(result))
    return 0 if result["same_summary"] else 1


if __name__ == "__main__":
    sys.exit(main())
