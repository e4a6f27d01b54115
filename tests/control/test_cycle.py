"""The controller core in closed loop with the simulated unit (stepping API, no network)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rigs.cycle_rig import Rig, follower_config, outside_envelope

from boiler_ai import status_codes
from boiler_ai.control.policy import Inference
from boiler_ai.messages.plant import Reading
from boiler_ai.record.schema import validate

BAD_SENSOR = 0x808B0000


@pytest.fixture
def rig(tmp_path):
    return Rig(follower_config(tmp_path, {"sa_damper_c_pct": 8.0, "o2_setpoint_bias_pct": -0.4}, mode="closed_loop"))


def mv_value(record, key, mv):
    return record[key][record["mvs"].index(mv)]


def test_engages_bumplessly_from_the_dcs_setpoints(rig):
    rig.engage()
    engaged = next(r for r in rig.records if r["mode"] == "active")
    env = rig.core.envelope
    i = env.mv_names.index("sa_damper_c_pct")
    # the first AI setpoint starts from the DCS setpoint and moves at most one rate step
    assert engaged["u_prev"] == engaged["u_dcs"]
    assert abs(engaged["written"][i] - engaged["u_dcs"][i]) <= env.rate_up[i] * 1.0 + 1e-9
    assert engaged["transition"] == {"from": "disabled", "to": "active"}
    for record in rig.records:
        validate(record | {"seq": 0, "log_dropped_count": 0, "publish_drop_count": 0})


def test_policy_intent_reached_through_rate_limits(rig):
    rig.engage()
    rig.run(30)
    last = rig.records[-1]
    assert last["mode"] == "active"
    # +8 % on damper C is within the deviation limit: reached after 8 s at 1 %/s
    target = mv_value(last, "u_dcs", "sa_damper_c_pct") + 8.0
    assert mv_value(last, "written", "sa_damper_c_pct") == pytest.approx(target, abs=1.5)
    # and the DCS uses it
    assert rig.unit.values()["sa_damper_c_pct_ai_sp"] == pytest.approx(mv_value(last, "written", "sa_damper_c_pct"))


def test_shadow_mode_computes_but_never_writes(tmp_path):
    rig = Rig(follower_config(tmp_path, {"sa_damper_c_pct": 8.0}, mode="shadow"))
    rig.unit.set_ai_enable(True)
    records = rig.run(20)
    assert all(r["mode"] == "shadow" and r["written"] is None and r["write"] is None for r in records)
    assert records[-1]["projected"] is not None
    assert rig.unit.values()["ai_active"] == 0.0
    # the faceplate codes are recorded, never written: the faceplate keeps what the DCS set (0)
    assert records[-1]["ai_status"] == status_codes.MODE_CODES["shadow"] and rig.unit.dcs.ai_status == 0


def corrupt(signal, reading_of):
    def hook(snapshot):
        readings = dict(snapshot.readings)
        readings[signal] = reading_of(readings[signal])
        return dataclasses.replace(snapshot, readings=readings)
    return hook


@pytest.mark.parametrize("signal, reading_of, issue", [
    ("o2_economiser_pct", lambda r: Reading(math.nan, 0, r.source_ts), "not_finite"),
    ("main_steam_temp_c", lambda r: Reading(r.value, BAD_SENSOR, r.source_ts), "bad_quality"),
    ("drum_pressure_mpa", lambda r: Reading(35.0, 0, r.source_ts), "out_of_range"),
    ("o2_economiser_pct", lambda r: Reading(r.value, 0, r.source_ts - 60.0), "stale"),
])
def test_critical_input_fault_releases_in_the_same_cycle(rig, signal, reading_of, issue):
    rig.engage()
    rig.run(3)
    rig.snapshot_hook = corrupt(signal, reading_of)
    record = rig.cycle()
    assert record["release_reason"] == "critical_input_invalid"
    assert record["mode"] == "releasing" and record["written"] is None
    assert {"type": "immediate_disable", "reason": "critical_input_invalid", "detail": f"{signal}: {issue}"} \
        in record["events"]
    assert rig.unit.values()["ai_active"] == 0.0  # the DCS took control back in the step after the cycle


def test_non_critical_fault_holds_then_releases(rig):
    rig.engage()
    rig.snapshot_hook = corrupt("nox_mg_nm3", lambda r: Reading(r.value, BAD_SENSOR, r.source_ts))
    held = rig.run(30)
    assert all(r["mode"] == "active" for r in held)
    assert all("nox_mg_nm3" in r["inputs"]["held"] for r in held)
    record = rig.cycle()
    assert record["release_reason"] == "critical_input_invalid"


def test_model_emitting_nan_releases(tmp_path):
    rig = Rig(follower_config(tmp_path, nan_above_ambient_c=30.0, mode="closed_loop"))
    rig.engage()
    rig.snapshot_hook = corrupt("ambient_temp_c", lambda r: Reading(35.0, 0, r.source_ts))
    record = rig.cycle()
    assert record["release_reason"] == "model_output_not_finite"


def test_model_out_of_its_depth_holds_then_releases(tmp_path):
    # trained on O2 between 3.0 and 4.0 % only (+ 0.21 % margin); 4.6 % is valid but new to the model
    rig = Rig(follower_config(tmp_path, {"sa_damper_c_pct": 6.0}, training_envelope={"o2_economiser_pct": (3.0, 4.0)},
                              mode="closed_loop"))
    rig.engage()
    rig.run(10)
    # the analyser's reading climbs 0.3 %/s (a plausible rate) to about 4.6 %
    bias = iter(np.minimum(np.arange(1, 100) * 0.3, 1.0))
    rig.snapshot_hook = corrupt("o2_economiser_pct", lambda r: Reading(r.value + next(bias), 0, r.source_ts))
    records = rig.run(40)
    first = next(i for i, r in enumerate(records) if r["policy"]["out_of_training_envelope"])
    held, released = records[first:first + 30], records[first + 30]  # out_of_depth_hold_s = 30 s
    for record in held:
        assert record["mode"] == "active" and record["policy"]["out_of_training_envelope"] == ["o2_economiser_pct"]
        assert record["events"][0]["reason"] == "model_out_of_depth_holding"
        assert record["requested"] == record["u_prev"]  # the setpoints in force are held, not the model's answer
    assert released["release_reason"] == "model_out_of_depth"


def test_ensemble_disagreement_holds_like_an_unknown_input(rig):
    rig.engage()
    policy = rig.controller.policy
    answer = policy.infer
    spread = [0.0] * len(rig.core.envelope.mv_names)
    spread[rig.core.envelope.mv_names.index("sa_damper_c_pct")] = 15.0  # std 15 % against a 20 % deviation limit

    def unsure():
        inference = answer()
        return Inference(inference.action, spread, [], True)

    policy.infer = unsure
    record = rig.cycle()
    assert record["policy"]["spread"] == pytest.approx(0.75)
    assert record["events"][0]["reason"] == "model_out_of_depth_holding" and "spread 0.750 > 0.5" in \
        record["events"][0]["detail"]


def test_operator_disable_releases_in_the_same_cycle_and_needs_re_enable(rig):
    rig.engage()
    rig.unit.set_ai_enable(False)
    record = rig.cycle()
    assert record["release_reason"] == "ai_enable_dropped" and record["written"] is None
    rig.run(10)
    assert rig.records[-1]["mode"] == "disabled"
    rig.unit.set_ai_enable(True)
    rig.engage()


def test_faceplate_status_and_reason_are_written_every_cycle_and_the_release_reason_is_kept(rig):
    code = status_codes.BY_NAME
    dcs = rig.unit.dcs
    rig.cycle()  # AI_ENABLE off: the faceplate says why the AI does not ask
    assert (dcs.ai_status, dcs.ai_reason) == (status_codes.MODE_CODES["disabled"], code["ai_enable_off"].code)
    rig.engage()
    rig.run(2)
    assert (dcs.ai_status, dcs.ai_reason) == (status_codes.MODE_CODES["active"], 0)
    assert rig.records[-1]["ai_status"] == dcs.ai_status and rig.records[-1]["ai_reason"] == dcs.ai_reason
    rig.unit.set_ai_enable(False)
    record = rig.cycle()
    assert record["release_reason"] == "ai_enable_dropped"
    assert (dcs.ai_status, dcs.ai_reason) == (status_codes.MODE_CODES["releasing"], code["ai_enable_dropped"].code)
    rig.run(5)  # disabled now: the release reason stays on the faceplate until the AI engages again
    assert (dcs.ai_status, dcs.ai_reason) == (status_codes.MODE_CODES["disabled"], code["ai_enable_dropped"].code)
    rig.unit.set_ai_enable(True)
    rig.engage()
    rig.run(1)
    assert (dcs.ai_status, dcs.ai_reason) == (status_codes.MODE_CODES["active"], 0)


def test_read_failure_releases(rig):
    from boiler_ai.messages.plant import Snapshot

    rig.engage()
    rig.snapshot_hook = lambda s: Snapshot({}, s.read_time, error="BadSessionIdInvalid")
    record = rig.cycle()
    assert record["release_reason"] == "read_failed"
    assert record["events"][0]["detail"] == "BadSessionIdInvalid"


actions = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                             st.floats(-50, 150)), min_size=15, max_size=15)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(actions, min_size=5, max_size=25))
def test_whatever_the_policy_asks_written_setpoints_stay_in_the_envelope(rig, requests):
    """A policy emitting anything at all (NaN, inf, wild values): every written setpoint is in the envelope."""
    if rig.records == []:
        rig.engage()
    queue = list(requests)

    def wild_policy() -> Inference:
        action = queue.pop(0) if queue else rig.records[-1]["u_dcs"]
        return Inference([float(a) for a in action], None, [], True)

    rig.controller.policy.infer = wild_policy
    for _ in range(len(requests)):
        record = rig.cycle()
        if record["written"] is not None:
            assert outside_envelope(rig.core.envelope, record) == []
        if record["mode"] == "disabled":
            rig.unit.set_ai_enable(False)
            rig.cycle()
            rig.engage()
