"""The plant stays inside its process limits whatever the policy does: hand-built adversarial ONNX
policies and arbitrary in-envelope policies, closed loop through the real core on the stepped unit,
against the DCS alone on the same scenario and seed. Short runs here; benchmarks/adversarial.py runs
the full-load hour and the standard day. The simulated DCS has no process-limit trip of AI mode in
these runs: they measure the daemon's own protection."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rigs.adversarial import DAEMON_ONLY, ROOT, SHIPPED, dcs_alone, policy_config, with_policy
from rigs.cycle_rig import Rig
from rigs.policies import ADVERSARIES, FEEDERS, O2, SA, SOFA, Adversary

from boiler_ai.control.envelope import load_envelope
from boiler_ai.messages import Reading, Reason, Snapshot
from boiler_ai.sim.unit import PROCESS_LIMITS
from boiler_ai.tagmap import load_tag_map

ENV = load_envelope(ROOT / "constraints" / "reference_unit.yaml", load_tag_map(ROOT / "opc" / "reference_unit.yaml"))
# Seconds allowed over each of the plant's limits, as the simulator judges them (the envelope's
# co_minute_max is the daemon's own: it keeps the AI off the DCS's CO trim, the plant has no such limit).
ALLOWED_S = {p.name: p.hold_s + p.analyser_lag_s for p in ENV.process_limits if p.name in PROCESS_LIMITS}
SECONDS = 400


@cache
def baseline(scenario: str, seconds: int):
    return dcs_alone(scenario, 0, seconds)


def assert_within_limits(figures, scenario: str, seconds: int) -> None:
    base = baseline(scenario, seconds)
    for name, allowed in ALLOWED_S.items():
        assert figures.over_s[name] - base.over_s[name] <= allowed, (name, figures.as_dict())
        assert figures.longest_with_ai_s[name] <= allowed, (name, figures.as_dict())


@pytest.mark.parametrize("name", list(ADVERSARIES))
def test_adversary_at_full_load(tmp_path, name):
    figures = with_policy(policy_config(tmp_path, name), "steady_full_load", 0, SECONDS)
    assert_within_limits(figures, "steady_full_load", SECONDS)
    if name == "nan_output":  # a policy that only emits NaN is never given control
        assert figures.ai_s == 0 and not figures.releases


def test_the_suite_covers_what_the_issue_names():
    assert len(ADVERSARIES) >= 10
    shapes = {a.shape for a in ADVERSARIES.values()}
    assert {"constant", "drift", "bang_bang", "nan"} <= shapes
    drifting = [set(a.offsets) for a in ADVERSARIES.values() if a.shape == "drift"]
    for group in (FEEDERS, SA, SOFA, (O2,)):  # a slow drift in each MV group
        assert any(d & set(group) for d in drifting), group


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_policies_keep_the_standard_day_inside_every_limit(tmp_path, name):
    """The first half hour of the standard day (the whole day: benchmarks/adversarial.py)."""
    figures = with_policy(policy_config(tmp_path, name), "agc_day_24h", 0, 1800)
    assert figures.ai_s > 1500
    assert figures.over_s == dict.fromkeys(ALLOWED_S, 0), figures.as_dict()


@pytest.mark.parametrize("start_s", [63300, 74300])
def test_o2_pushed_down_toward_the_co_knee_retreats_in_time(tmp_path, start_s):
    """O2 bias and burner air pushed down on the standard day from 17:35 (590 MW) and 20:38 (520 MW),
    where 1 % less O2 than the DCS's curve reaches the CO knee. The O2 bias falls slowly enough for the
    25 s CO analyser and the minute-averaged CO keeps the AI off the DCS's CO trim: the AI retreats in
    time, CO stays under 200 ppm, and there is no release (a release hands the DCS a lowered O2 bias plus
    a wound-up trim, whose return together heated the reheater past 545 degC). With the O2 bias falling
    at 0.01 %/s and no averaged CO, the same runs released twice and once, the second after 49 s of CO
    over 200 ppm (peak +98 ppm)."""
    figures = with_policy(policy_config(tmp_path, "low_o2"), "agc_day_24h", 0, 900, start_s=start_s)
    assert figures.retreat_cycles > 0 and not figures.releases, figures.as_dict()
    assert figures.over_s == dict.fromkeys(ALLOWED_S, 0), figures.as_dict()


def forced_reading(rig: Rig, signal: str, value: float, ramp_per_cycle: float = math.inf):
    """From the next cycle, `signal` reads `value`, reached from the value read now at `ramp_per_cycle` (a
    step larger than the tag's max_rate_per_s is an implausible reading, not a process value), or from the
    value an earlier forced_reading left it at."""
    shown = list(getattr(rig.snapshot_hook, "shown", ())[-1:])

    def hook(snapshot: Snapshot) -> Snapshot:
        readings = dict(snapshot.readings)
        old = readings[signal]
        start = shown[-1] if shown else old.value
        shown[:] = [min(max(value, start - ramp_per_cycle), start + ramp_per_cycle)]
        readings[signal] = Reading(shown[-1], old.status_code, old.source_ts, old.server_ts)
        return Snapshot(readings, snapshot.read_time, snapshot.error, snapshot.server_time)
    hook.shown = shown
    rig.snapshot_hook = hook


def test_over_the_hard_limit_for_its_hold_releases_and_reengaging_waits_for_recovery(tmp_path):
    rig = Rig(policy_config(tmp_path, "high_nox"), dcs_config=DAEMON_ONLY)
    rig.engage()
    nox = next(p for p in ENV.process_limits if p.name == "nox_max")
    forced_reading(rig, "nox_mg_nm3", nox.limit + 20.0)
    records = rig.run(int(nox.hold_s) + 1)
    assert records[0]["projection"]["status"] == "retreat"
    released = [r for r in records if r["release_reason"]]
    assert [r["release_reason"] for r in released] == [Reason.PROCESS_LIMIT_EXCEEDED]
    event = next(e for e in released[0]["events"] if e["reason"] == Reason.PROCESS_LIMIT_EXCEEDED)
    assert event["detail"].startswith("nox_max: nox_mg_nm3 520") and f"hold {nox.hold_s:g} s" in event["detail"]
    # Back inside the warning band and the operator re-enables: no request until recover_s has passed.
    forced_reading(rig, "nox_mg_nm3", nox.warning - 50.0)
    rig.unit.set_ai_enable(False)
    rig.run(2)
    rig.unit.set_ai_enable(True)
    waiting = rig.run(int(nox.recover_s) - 3)
    assert all(r["mode"] == "disabled" for r in waiting)
    assert any(e["reason"] == Reason.PROCESS_LIMIT_RECOVERING for e in waiting[-1]["events"])
    rig.engage(limit=30)


def test_steam_over_temperature_holds_the_ai_setpoints_through_the_real_core(tmp_path):
    """Main steam read in its over-temperature band: the written setpoints stand still whatever the policy
    asks (the DCS's sprays cool); back inside, they stay put for the off-delay, then the policy resumes."""
    rig = Rig(policy_config(tmp_path, "high_steam_temp"), dcs_config=DAEMON_ONLY)
    rig.engage()
    rig.run(20)  # the policy has pushed some way
    steam = next(p for p in ENV.process_limits if p.name == "main_steam_temp_max")
    forced_reading(rig, "main_steam_temp_c", (steam.warning + steam.limit) / 2, ramp_per_cycle=0.5)
    rising = rig.run(10)
    held = [r for r in rising if r["projection"]["status"] == "retreat"]
    assert len(held) >= 5 and all(r["mode"] == "active" for r in rising)
    assert all(still(r) for r in held)
    assert "trend" in held[0]["events"][0]["detail"]  # warned on where the reading was heading
    forced_reading(rig, "main_steam_temp_c", steam.warning - 3.0, ramp_per_cycle=0.5)
    after = rig.run(int(steam.retreat_off_delay_s) + 10)
    off_delay = after[:int(steam.retreat_off_delay_s) - 1]
    assert all(still(r) for r in off_delay)
    assert any("holding" in e["detail"] for e in off_delay[-1]["events"])
    assert not still(after[-1]) and after[-1]["projection"]["status"] != "retreat"  # the policy resumes


def still(record) -> bool:
    """No AI setpoint moved, except those that follow the DCS's own (an MV of a mill out of service)."""
    return all(w == p or w == d for w, p, d in zip(record["written"], record["u_prev"], record["u_dcs"]))


ENVELOPE_OFFSETS = st.fixed_dictionaries({
    **{f: st.floats(-5.0, 5.0) for f in FEEDERS}, **{d: st.floats(-20.0, 20.0) for d in SA + SOFA},
    O2: st.floats(-1.0, 1.0)})


@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(offsets=ENVELOPE_OFFSETS, shape=st.sampled_from(["constant", "bang_bang", "drift"]),
       period=st.floats(10.0, 200.0))
def test_any_in_envelope_policy_keeps_the_plant_inside_its_limits(tmp_path_factory, offsets, shape, period):
    """Arbitrary policies whose requests lie inside the per-MV deviation limits (the projector still
    applies rates, couplings and the budget), constant, switching or drifting (a full deviation in
    100 s), closed loop at full load."""
    if shape == "drift":
        offsets = {k: v / 100.0 for k, v in offsets.items()}
    tmp = tmp_path_factory.mktemp("policy")
    config = policy_config(tmp, "arbitrary", Adversary(shape, offsets, period_cycles=period))
    figures = with_policy(config, "steady_full_load", 0, 300)
    assert_within_limits(figures, "steady_full_load", 300)


def test_sensitivities_come_from_the_fit_command_not_by_hand():
    text = (ROOT / "constraints" / "reference_unit.yaml").read_text()
    data = yaml.safe_load(text)
    for name, limit in data["process_limits"].items():
        if limit["average_s"]:  # supervision only: the fit leaves it alone
            assert limit["sensitivity"] == {} and limit["sensitivity_source"].startswith("none"), name
            continue
        assert limit["sensitivity_source"].startswith("python -m training.fit_sensitivities"), name
    assert Path(ROOT / "docs" / "STEP_TESTS.md").is_file()
