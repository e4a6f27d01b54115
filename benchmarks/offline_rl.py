"""The offline-RL pipeline at full size: history, process model, policy, package, evaluate, promote (dry run).

Each stage is its documented command; the wall time of each is measured. The promotion gate is applied
with --models-dir inside the run folder, so a benchmark never installs a model. Target (issue 14): the
whole pipeline within 30 minutes on 2 CPU cores and the evaluation within 20. Last line: JSON.

    python benchmarks/offline_rl.py --out runs/bench [--days 20] [--seed 0] [--max-seeds 20] [--hours 24]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], log: Path) -> tuple[dict | None, float, int, str]:
    started = time.perf_counter()
    with open(log, "w") as err:
        done = subprocess.run([sys.executable, *args], stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    tail = log.read_text().strip().splitlines()[-1:] if done.returncode else [""]
    return result, time.perf_counter() - started, done.returncode, tail[0][-300:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--days", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--starts", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--max-seeds", type=int, default=20)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-history", action="store_true", help="reuse OUT/history")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    seed = str(args.seed)
    stages = []
    if not args.skip_history:
        stages.append(("history", ["-m", "training.history", "--out", str(out / "history"), "--days", str(args.days),
                                   "--seed", seed]))
    # Spray valves, where the AI still has them, are DCS loops faster than the AI's rate limit: left to the DCS
    from boiler_ai.tagmap import load_tag_map

    sprays = [mv for mv in load_tag_map(ROOT / "opc" / "reference_unit.yaml").manipulated if "spray" in mv]
    stages += [
        ("process_model", ["-m", "training.process_model", "--history", str(out / "history"), "--out",
                           str(out / "process_model"), "--seed", seed]),
        ("policy", ["-m", "training.policy", "--history", str(out / "history"), "--process-model",
                    str(out / "process_model"), "--out", str(out / "policy"), "--seed", seed, "--starts",
                    str(args.starts), "--rounds", str(args.rounds), "--steps", str(args.steps),
                    *(["--hold-mvs", ",".join(sprays)] if sprays else [])]),
        ("package", ["-m", "training.package", "--history", str(out / "history"), "--process-model",
                     str(out / "process_model"), "--policy", str(out / "policy"), "--out", str(out / "package"),
                     "--seed", seed, "--model-id", f"offline-rl-s{seed}"]),
        ("evaluate", ["-m", "boiler_ai", "evaluate", str(out / "package" / "policy.onnx"), "--seeds", "held-out",
                      "--max-seeds", str(args.max_seeds), "--hours", str(args.hours), "--workers", str(args.workers),
                      "--report", str(out / "evaluation"), "--json"]),
    ]
    results, wall = {}, {}
    for name, cmd in stages:
        print(f"{name}: python {' '.join(cmd)}", file=sys.stderr, flush=True)
        result, seconds, code, tail = run(cmd, out / f"{name}.log")
        wall[name] = round(seconds, 1)
        if code != 0:
            print(json.dumps({"failed_stage": name, "error": tail, "wall_s": wall}))
            return 1
        results[name] = result
    _, seconds, code, tail = run(["-m", "boiler_ai", "promote", str(out / "package" / "policy.onnx"), "--evaluation",
                                  str(out / "evaluation" / "evaluation.json"), "--models-dir", str(out / "models")],
                                 out / "promote.log")
    wall["promote"] = round(seconds, 1)
    ev = results["evaluate"]
    pm = results["process_model"]["per_output"]
    summary = {
        "seed": args.seed, "wall_s": wall, "pipeline_s": round(sum(wall.values()), 1),
        "history_hours": results.get("history", {}).get("simulated_hours"),
        "process_model_skill": {k: v["skill"] for k, v in pm.items()},
        "process_model_within_1_spread": {k: v["within_1_spread"] for k, v in pm.items()},
        "policy_rounds": results["policy"]["rounds"], "policy_candidates": results["policy"]["candidates"],
        "model_sha256": results["package"]["policy_sha256"],
        "promoted": code == 0, "promote_refusal": None if code == 0 else tail,
        **{k: v for k, v in ev.items() if k not in ("model", "wall_s")},  # the stages' wall times are above
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
