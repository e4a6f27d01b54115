"""A simulated hour in closed loop: `boiler-ai run` with `plant: {kind: stepped}` (the whole daemon against the
simulated unit in process, as fast as it steps), then `boiler-ai replay` of its log.

Prints the wall time of each and whether the replay was identical. Budget: the hour in under a minute.
Last line: JSON with "run_s", "cycles", "active_share", "replay_s", "identical".

    python benchmarks/stepped_hour.py [--hours 1] [--scenario demo] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--scenario", default="demo")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="boiler-ai-stepped-") as tmp:
        cfg = yaml.safe_load((ROOT / "deploy" / "examples" / "reference_unit.yaml").read_text())
        cfg.update(tag_map=str(ROOT / "opc" / "reference_unit.yaml"),
                   envelope=str(ROOT / "constraints" / "reference_unit.yaml"), mode="closed_loop",
                   plant={"kind": "stepped", "scenario": args.scenario, "seed": args.seed, "ai_enable": True},
                   metrics={"listen": None}, host={"cpu_latency_limit_us": None})
        cfg["model"]["path"] = str(ROOT / "models" / "bootstrap-bc-v1" / "policy.onnx")
        cfg["engagement"]["arm_on_start"] = True
        cfg["record"].update(log_dir=str(Path(tmp) / "log"), publish_endpoint=None, catchup_endpoint=None,
                             fsync="interval")
        config = Path(tmp) / "stepped.yaml"
        config.write_text(yaml.safe_dump(cfg))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "boiler_ai", "run", str(config), "--sim-hours", str(args.hours)],
                       check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        run_s = time.perf_counter() - started
        from boiler_ai.record.log import iter_records

        modes = [r["mode"] for r in iter_records(Path(tmp) / "log")]
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "boiler_ai", "replay", str(Path(tmp) / "log"), "--config",
                               str(config), "--json"], capture_output=True, text=True, cwd=ROOT)
        replay_s = time.perf_counter() - started
    result = json.loads(done.stdout.splitlines()[-1])
    active = round(modes.count("active") / len(modes), 3)
    verdict = "identical" if result["identical"] else f"DIFFERENT at seq {result['first_difference_seq']}"
    print(f"{args.hours:g} simulated hour(s), scenario {args.scenario}, seed {args.seed}: {len(modes)} cycles in "
          f"{run_s:.1f} s (process start included), {active:.1%} in AI mode; replay {replay_s:.1f} s, {verdict}")
    print(json.dumps({"run_s": round(run_s, 1), "cycles": len(modes), "active_share": active,
                      "replay_s": round(replay_s, 1), "identical": result["identical"]}))
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
