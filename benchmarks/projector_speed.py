"""Time per projection on the reference unit's envelope over random plant states.

Two cases: the box alone (a clip, no QP) and the full envelope with requests that break the fuel
balance and push on crossed process limits, so the QP runs every time. Figures are the whole
project() call as the cycle sees it; the QP solver's iteration counts are printed too.
Last line: {"projector_p50_us": .., "projector_p99_us": ..} for the full QP case.

    python benchmarks/projector_speed.py [--states N] [--seed S]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from boiler_ai.control.envelope import Envelope, load_envelope
from boiler_ai.control.projector import ProjectionStatus, Projector
from boiler_ai.tagmap import load_tag_map

ROOT = Path(__file__).resolve().parent.parent


def random_state(env: Envelope, rng: np.random.Generator):
    """A unit on five or six mills, setpoints in force near the DCS's, a request a few rate steps away."""
    available = {signal: bool(rng.random() < 0.85) for signal in env.condition_signals}
    u_dcs = rng.uniform(env.lo + 0.3 * (env.hi - env.lo), env.lo + 0.6 * (env.hi - env.lo))
    feeders = [i for i, n in enumerate(env.mv_names) if n.startswith("feeder_")]
    u_dcs[feeders] = 0.0
    u_dcs[env.mv_names.index("sofa_damper_2_pct")] = u_dcs[env.mv_names.index("sofa_damper_1_pct")]  # one schedule
    u_prev = u_dcs.copy()  # just engaged: the setpoints in force are the DCS's
    request = u_prev + rng.normal(0.0, 3.0, len(u_prev)) * env.rate_up
    process = {}
    for p in env.process_limits:  # around each limit, a third of them already crossed
        margin = abs(p.limit) * rng.uniform(-0.05, 0.1)
        process.setdefault(p.signal, p.limit - margin if p.relation == "at_most" else p.limit + margin)
    return request, u_prev, u_dcs, process, available


def measure(projector: Projector, states: list) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    wall, solver, outcomes = [], [], {}
    for request, u_prev, u_dcs, process, available in states:
        started = time.perf_counter()
        result = projector.project(request, u_prev, u_dcs, process, available, 1.0)
        wall.append((time.perf_counter() - started) * 1e6)
        solver.append(result.iterations)
        key = "qp" if result.iterations > 0 and result.status is ProjectionStatus.CLIPPED else result.status.value
        outcomes[key] = outcomes.get(key, 0) + 1
    return np.array(wall), np.array(solver), outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    tag_map = load_tag_map(ROOT / "opc" / "reference_unit.yaml")
    env = load_envelope(ROOT / "constraints" / "reference_unit.yaml", tag_map)
    rng = np.random.default_rng(args.seed)
    states = [random_state(env, rng) for _ in range(args.states)]
    full = Projector(env)
    box = Projector(dataclasses.replace(env, couplings=(), process_limits=(), budget=dataclasses.replace(
        env.budget, limit=1e9)))
    for projector in (full, box):  # warm up allocations and caches
        measure(projector, states[:200])

    box_wall, _, box_outcomes = measure(box, states)
    qp_wall, qp_solver, qp_outcomes = measure(full, states)
    rows = len(env.couplings) + len(env.process_limits)
    print(f"{len(env.mv_names)} manipulated variables, {rows} coupling and process-limit rows, {len(states)} states")
    for label, wall, outcomes in (("box only (clip)", box_wall, box_outcomes), ("full envelope", qp_wall, qp_outcomes)):
        print(f"  {label:<18} p50 {np.percentile(wall, 50):7.1f} us   p99 {np.percentile(wall, 99):7.1f} us   "
              f"max {wall.max():8.1f} us   outcomes {outcomes}")
    solved = qp_solver[qp_solver > 0]
    print(f"  {'DAQP iterations':<18} p50 {np.percentile(solved, 50):7.0f}      "
          f"p99 {np.percentile(solved, 99):7.0f}      "
          f"max {solved.max():8.0f}      (limit {env.iteration_limit})")
    print(json.dumps({"projector_p50_us": round(float(np.percentile(qp_wall, 50)), 1),
                      "projector_p99_us": round(float(np.percentile(qp_wall, 99)), 1),
                      "box_p50_us": round(float(np.percentile(box_wall, 50)), 1),
                      "box_p99_us": round(float(np.percentile(box_wall, 99)), 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
