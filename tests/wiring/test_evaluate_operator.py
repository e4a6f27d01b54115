"""The evaluation's simulated operator: after a release it re-enables AI the way the HMI asks (AI_ENABLE off
and on), and the engagement's own entry checks decide when AI mode returns."""

from __future__ import annotations

import dataclasses
import hashlib

from boiler_ai.daemon import build_core
from boiler_ai.demo import PROMOTED_MODEL
from boiler_ai.evaluate import ClosedLoop, echo_policy, evaluation_config
from boiler_ai.messages import Mode
from boiler_ai.sim.scenario import named_scenario
from boiler_ai.sim.unit import ReferenceUnit


def analyser_fault_loop(rearm_after_s: float) -> tuple[ClosedLoop, list[Mode]]:
    """The DCS's own setpoints echoed through the core (no model's doing); from 20 min the CO analyser reads
    500 ppm for two minutes (a fault on the unit's analyser), which releases AI mode (co_max)."""
    policy = PROMOTED_MODEL / "policy.onnx"
    cfg = evaluation_config(policy, hashlib.sha256(policy.read_bytes()).hexdigest())
    unit = ReferenceUnit(dataclasses.replace(named_scenario("steady_full_load", 9001), duration_s=2700.0), seed=9001)
    unit.set_ai_enable(True)
    core = build_core(cfg)
    loop = ClosedLoop(cfg, unit, policy=echo_policy(core.tag_map, core.envelope), rearm_after_s=rearm_after_s)
    modes = []
    for k in range(round(2700.0 / cfg.cycle_period_s)):
        if 1200.0 <= k * cfg.cycle_period_s < 1320.0:
            unit.co_meas = 500.0  # the analyser's lag pulls each reading a step back toward the true CO
        modes.append(loop.cycle().mode)
    return loop, modes


def test_the_operator_re_enables_ai_after_a_release_and_the_engagement_decides_when():
    never, never_modes = analyser_fault_loop(0.0)
    assert sum(never.releases.values()) >= 1 and never.rearms == 0
    released_at = next(i for i, m in enumerate(never_modes) if i > 0 and m is not Mode.ACTIVE
                       and never_modes[i - 1] is Mode.ACTIVE)
    assert Mode.ACTIVE not in never_modes[released_at:]  # nobody re-enables: AI mode is over for the run
    loop, modes = analyser_fault_loop(600.0)
    assert loop.rearms >= 1 and modes[released_at] is not Mode.ACTIVE
    back = next(i for i in range(released_at, len(modes)) if modes[i] is Mode.ACTIVE)
    # not before the operator's 10 minutes, and AI mode holds once it is back
    assert back * never.plant.step_s >= released_at * never.plant.step_s + 600.0
    assert all(m is Mode.ACTIVE for m in modes[back + 60:])


def test_a_process_limit_release_is_tallied_by_the_limit_that_caused_it():
    """The evaluation's JSON names which limit released AI mode, not only the reason: the CO analyser reads
    about 440 ppm from the moment AI mode is in (a fault held on the unit's analyser), so co_max's hold runs
    out before the minute's mean has been over its limit for its own hold."""
    policy = PROMOTED_MODEL / "policy.onnx"
    cfg = evaluation_config(policy, hashlib.sha256(policy.read_bytes()).hexdigest())
    unit = ReferenceUnit(dataclasses.replace(named_scenario("steady_full_load", 9001), duration_s=900.0), seed=9001)
    unit.set_ai_enable(True)
    core = build_core(cfg)
    loop = ClosedLoop(cfg, unit, policy=echo_policy(core.tag_map, core.envelope), rearm_after_s=0.0)
    while loop.cycle().mode is not Mode.ACTIVE:
        pass
    for _ in range(120):
        unit.co_meas = 500.0  # the analyser's lag pulls each reading a step back toward the true CO
        loop.cycle()
    assert dict(loop.releases) == {"process_limit_exceeded": 1} and dict(loop.release_limits) == {"co_max": 1}
