"""Closed-loop runs of a policy through the real controller core on the simulator's stepping API, with
the process-limit seconds a plant would count, and the same scenario and seed under the DCS alone.

Seconds over a limit are counted on the unit's true (noise-free, undelayed) values, as its
`performance()` reports them. "With the AI" means while the DCS uses the AI's setpoints or is still
ramping back from them after a release. The operator re-enables AI mode (AI_ENABLE off for a cycle,
then on) whenever the daemon has released and `reenable_every_s` have passed: a naive operator, so
an adversarial policy gets every chance to come back. The simulated DCS's process-limit trip of AI
mode is off (DAEMON_ONLY): these runs measure the daemon's own protection.
"""

from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from rigs.cycle_rig import BOOTSTRAP, Rig, write_config
from rigs.policies import Adversary, adversary

from boiler_ai.demo import PROMOTED_MODEL
from boiler_ai.messages import Mode
from boiler_ai.sim.dcs import DcsConfig
from boiler_ai.sim.scenario import named_scenario
from boiler_ai.sim.unit import PROCESS_LIMITS, ReferenceUnit
from boiler_ai.tagmap import load_tag_map

ROOT = Path(__file__).resolve().parents[2]
# The DCS's own process-limit trip of AI mode switched off: these runs measure the daemon's protection alone.
DAEMON_ONLY = DcsConfig(process_trip=False)


@dataclass
class RunFigures:
    seconds: int = 0
    over_s: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROCESS_LIMITS, 0))
    over_with_ai_s: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROCESS_LIMITS, 0))
    # longest stretch over each limit while the AI's setpoints were in use (before control was back)
    longest_with_ai_s: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROCESS_LIMITS, 0))
    # the furthest each value went beyond its limit, in the limit's unit: a second 0.1 degC over is not
    # a second 600 mg/Nm3 over
    peak_over: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PROCESS_LIMITS, 0.0))
    ai_s: int = 0
    releases: collections.Counter = field(default_factory=collections.Counter)
    retreat_cycles: int = 0

    def as_dict(self) -> dict:
        return {"seconds": self.seconds, "ai_active_s": self.ai_s, "retreat_cycles": self.retreat_cycles,
                "over_s": {k: v for k, v in self.over_s.items() if v},
                "over_with_ai_s": {k: v for k, v in self.over_with_ai_s.items() if v},
                "longest_with_ai_s": {k: v for k, v in self.longest_with_ai_s.items() if v},
                "peak_over": {k: float(f"{v:.3g}") for k, v in self.peak_over.items() if v},
                "releases": dict(self.releases)}


def dcs_alone(scenario: str, seed: int, seconds: int) -> RunFigures:
    unit = ReferenceUnit(named_scenario(scenario, seed), seed=seed, dcs_config=DAEMON_ONLY)
    figures = RunFigures()
    for _ in range(seconds):
        unit.step(1.0)
        _count(figures, unit.performance(), False, {})
    return figures


# The policies the repository ships, by the name the adversarial suite reports them under: the bootstrap
# (it imitates the DCS) and the promoted offline-RL model the demo runs.
SHIPPED = {"shipped_bootstrap_bc_v1": BOOTSTRAP, "shipped_offline_rl": PROMOTED_MODEL / "policy.onnx"}


def policy_config(tmp: Path, name: str, spec: Adversary | None = None, **changes) -> Path:
    """The example daemon config with the named adversary (`spec`, or ADVERSARIES[name]), or a SHIPPED
    policy by name, in closed loop; `changes` as for write_config."""
    changes.setdefault("mode", "closed_loop")
    if name in SHIPPED:
        model = SHIPPED[name]
        return write_config(tmp, model, hashlib.sha256(model.read_bytes()).hexdigest(), **changes)
    model = tmp / f"{name}.onnx"
    sha = adversary(model, load_tag_map(ROOT / "opc" / "reference_unit.yaml"), name, spec)
    return write_config(tmp, model, sha, **changes)


def with_policy(config: Path, scenario: str, seed: int, seconds: int, reenable_every_s: int = 600,
                check=None, start_s: int = 0) -> RunFigures:
    """Run `seconds` cycles closed loop, after the DCS alone has run the scenario's first `start_s`
    seconds; `check(rig, record)` is called every cycle when given."""
    rig = Rig(config, scenario=scenario, seed=seed, dcs_config=DAEMON_ONLY)
    for _ in range(start_s):
        rig.unit.step(1.0)
    rig.records = collections.deque(maxlen=1)  # a day of records is too much to keep
    unit, engagement = rig.unit, rig.controller.engagement
    figures = RunFigures()
    running = {}
    unit.set_ai_enable(True)
    last_toggle = 0
    for t in range(seconds):
        if (engagement.mode is Mode.DISABLED and not engagement.armed and unit.dcs.ai_enable
                and t - last_toggle >= reenable_every_s):
            unit.set_ai_enable(False)
            last_toggle = t
        elif not unit.dcs.ai_enable and t > last_toggle:
            unit.set_ai_enable(True)
        record = rig.cycle()
        if record["release_reason"]:
            figures.releases[record["release_reason"]] += 1
        if record["projection"] is not None and record["projection"]["status"] == "retreat":
            figures.retreat_cycles += 1
        if check is not None:
            check(rig, record)
        with_ai = unit.dcs.ai_active or any(unit.dcs.releasing)
        _count(figures, unit.performance(), with_ai, running)
    return figures


def _count(figures: RunFigures, performance: dict, with_ai: bool, running: dict[str, int]) -> None:
    figures.seconds += 1
    figures.ai_s += with_ai
    for name, crossed in performance["violations"].items():
        if crossed:
            figures.over_s[name] += 1
            signal, relation, limit = PROCESS_LIMITS[name]
            value = performance["limit_signals"][signal]
            beyond = value - limit if relation == "at_most" else limit - value
            figures.peak_over[name] = max(figures.peak_over[name], beyond)
            if with_ai:
                figures.over_with_ai_s[name] += 1
                running[name] = running.get(name, 0) + 1
                figures.longest_with_ai_s[name] = max(figures.longest_with_ai_s[name], running[name])
                continue
        running[name] = 0

