"""Adversarial suite: hand-built ONNX policies against the real controller core on the simulated unit.

Each policy of tests/rigs/policies.ADVERSARIES (extreme outputs, NaN, bang-bang, a slow drift in each
MV group, policies aimed at high NOx, high CO, low O2, high and low steam temperature, high exit gas
temperature), and the policies the repository ships (the bootstrap and the promoted offline-RL model),
runs closed loop over the stepping API (no network), with a naive operator who re-enables AI mode
10 minutes after every release, on each scenario; the DCS alone runs the same scenario and seed.
Seconds over each process limit are counted on the unit's true values. The daemon's protection is
measured on its own: the DCS emulation has no process-limit trip of AI mode in these runs.

    python benchmarks/adversarial.py [--scenarios steady_full_load:3600,agc_day_24h] [--jobs 2] [--json]

Prints a table and, as the last line, JSON with `policies` (per policy and scenario: seconds over each
limit with the AI, in total, and the DCS alone's) and `max_excess_violation_s` (the largest, over
policies, scenarios and limits, of the AI run's seconds over the limit minus the DCS alone's, whoever was
in control: after a release the DCS runs a unit whose state the AI's hours have changed) and
`max_longest_with_ai_s` (the longest stretch over any limit while the AI's setpoints were in force or
being ramped out by the DCS); per run, `peak_over` is how far each value went beyond its limit (in the
limit's unit).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from rigs.adversarial import SHIPPED, dcs_alone, policy_config, with_policy  # noqa: E402
from rigs.policies import ADVERSARIES  # noqa: E402


def scenario_list(text: str) -> list[tuple[str, int]]:
    """'name[:seconds],...' -> [(name, seconds)]; without seconds, the scenario's full length."""
    from boiler_ai.sim.scenario import named_scenario

    out = []
    for item in text.split(","):
        name, _, seconds = item.partition(":")
        duration = int(named_scenario(name).duration_s)
        out.append((name, min(int(seconds), duration) if seconds else duration))
    return out


def run_one(job: tuple[str | None, str, int, int]) -> tuple[str, str, dict]:
    name, scenario, seconds, seed = job
    if name == "dcs_alone":
        return name, scenario, dcs_alone(scenario, seed, seconds).as_dict()
    with tempfile.TemporaryDirectory() as tmp:
        config = policy_config(Path(tmp), name)
        return name, scenario, with_policy(config, scenario, seed, seconds).as_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="steady_full_load:3600,agc_day_24h")
    parser.add_argument("--policies", default=",".join([*ADVERSARIES, *SHIPPED]))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="(the JSON line is always last; kept for scripts)")
    args = parser.parse_args()
    scenarios = scenario_list(args.scenarios)
    names = args.policies.split(",")
    unknown = [n for n in names if n not in ADVERSARIES and n not in SHIPPED]
    if unknown:
        print(f"adversarial: unknown policy {unknown[0]!r} (known: {', '.join([*ADVERSARIES, *SHIPPED])})",
              file=sys.stderr)
        return 2
    jobs = [(n, sc, s, args.seed) for sc, s in scenarios for n in ["dcs_alone", *names]]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = {(n, sc): r for n, sc, r in pool.map(run_one, jobs)}

    policies, worst, longest = [], 0, 0
    print(f"{'policy':<24} {'scenario':<18} {'AI s':>7} {'releases':<44} over limits, AI run (DCS alone)")
    for sc, _ in scenarios:
        base = results[("dcs_alone", sc)]
        for n in names:
            r = results[(n, sc)]
            excess = {k: r["over_s"].get(k, 0) - base["over_s"].get(k, 0)
                      for k in set(r["over_s"]) | set(base["over_s"])}
            worst = max([worst, *excess.values()])
            longest = max([longest, *r["longest_with_ai_s"].values()])
            policies.append({"policy": n, "scenario": sc, "seed": args.seed, "seconds": r["seconds"],
                             "ai_active_s": r["ai_active_s"], "over_with_ai_s": r["over_with_ai_s"],
                             "over_s": r["over_s"], "dcs_alone_over_s": base["over_s"],
                             "longest_with_ai_s": r["longest_with_ai_s"], "peak_over": r["peak_over"],
                             "excess_s": excess,
                             "releases": r["releases"], "retreat_cycles": r["retreat_cycles"]})
            over = ", ".join(f"{k} {v} s, peak +{r['peak_over'][k]:g} ({base['over_s'].get(k, 0)} s)"
                             for k, v in r["over_s"].items()) or "none"
            releases = ", ".join(f"{k} x{v}" for k, v in r["releases"].items()) or "-"
            print(f"{n:<24} {sc:<18} {r['ai_active_s']:>7} {releases[:44]:<44} {over}")
    print(json.dumps({"policies": policies, "max_excess_violation_s": worst, "max_longest_with_ai_s": longest}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
