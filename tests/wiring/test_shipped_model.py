"""The promoted model the demo runs by default: its card pins the file, it fits today's tag map and
envelope, its evaluation (under that envelope) passes the promotion gate, and it runs closed loop through
the real core."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from rigs.cycle_rig import ROOT

from boiler_ai.config import load_config
from boiler_ai.daemon import build_core
from boiler_ai.demo import PROMOTED_MODEL, with_model
from boiler_ai.evaluate import ClosedLoop, evaluation_config
from boiler_ai.promote import gate
from boiler_ai.sim.scenario import named_scenario
from boiler_ai.sim.unit import ReferenceUnit


def test_the_demo_runs_the_promoted_model_and_it_passes_its_gate():
    policy = PROMOTED_MODEL / "policy.onnx"
    sha256 = hashlib.sha256(policy.read_bytes()).hexdigest()
    card = json.loads((PROMOTED_MODEL / "MODEL_CARD.json").read_text())
    assert card["policy_sha256"] == sha256
    evaluation = json.loads((PROMOTED_MODEL / "evaluation.json").read_text())
    assert evaluation["model_sha256"] == sha256 and gate(evaluation) == []
    assert evaluation["excess_violation_s"] == 0 and evaluation["heat_rate_gain_pct"] > 0
    # its figures were measured under the envelope it ships with: a changed envelope needs a new evaluation
    envelope = load_config(ROOT / "deploy" / "examples" / "reference_unit.yaml").envelope
    assert evaluation["envelope_sha256"] == hashlib.sha256(envelope.read_bytes()).hexdigest()
    # what `make demo` runs: the example config with the model pinned by its card, loaded as the daemon does
    cfg = with_model(load_config(ROOT / "deploy" / "examples" / "reference_unit.yaml"), PROMOTED_MODEL)
    assert cfg.model_path == policy
    assert build_core(cfg).controller.settings.model_id == card["model_id"] == "offline-rl-v6"


def test_the_promoted_model_engages_and_holds_on_a_held_out_day():
    policy = PROMOTED_MODEL / "policy.onnx"
    cfg = evaluation_config(policy, hashlib.sha256(policy.read_bytes()).hexdigest())
    unit = ReferenceUnit(dataclasses.replace(named_scenario("steady_full_load", 9001), duration_s=900.0), seed=9001)
    unit.set_ai_enable(True)
    loop = ClosedLoop(cfg, unit)
    for _ in range(900):
        loop.cycle()
    assert loop.active_cycles > 800 and not loop.releases and loop.guard_blocks == 0
