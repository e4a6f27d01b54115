"""Input validation: each check fires for its fault, and criticality decides hold or release."""

import math

import pytest

from boiler_ai.control import validate as v
from boiler_ai.messages.plant import InputIssue, Reading, Snapshot

GOOD = 0
BAD_SENSOR = 0x808B0000  # BadSensorFailure
UNCERTAIN = 0x40000000


def spec(tag_map, name):
    return tag_map.signals[name]


def snap(t, **values):
    return Snapshot({k: (val if isinstance(val, Reading) else Reading(val, GOOD, t)) for k, val in values.items()}, t)


@pytest.fixture
def o2_nox(tag_map):
    return v.Validator([spec(tag_map, "o2_economiser_pct"), spec(tag_map, "nox_mg_nm3")])


def test_good_values_pass(o2_nox):
    out = o2_nox.validate(snap(100.0, o2_economiser_pct=3.5, nox_mg_nm3=320.0), 1.0)
    assert out.values == {"o2_economiser_pct": 3.5, "nox_mg_nm3": 320.0}
    assert out.healthy and not out.issues


@pytest.mark.parametrize("reading, issue", [
    (Reading(3.5, BAD_SENSOR, 100.0), InputIssue.BAD_QUALITY),
    (Reading(3.5, UNCERTAIN, 100.0), InputIssue.UNCERTAIN_QUALITY),
    (Reading(math.nan, GOOD, 100.0), InputIssue.NOT_FINITE),
    (Reading(math.inf, GOOD, 100.0), InputIssue.NOT_FINITE),
    (Reading(3.5, GOOD, 60.0), InputIssue.STALE),  # O2: stale_s 30
    (Reading(25.0, GOOD, 100.0), InputIssue.OUT_OF_RANGE),
    (Reading(-0.1, GOOD, 100.0), InputIssue.OUT_OF_RANGE),
])
def test_critical_fault_releases(o2_nox, reading, issue):
    out = o2_nox.validate(snap(100.0, o2_economiser_pct=reading, nox_mg_nm3=300.0), 1.0)
    assert out.issues == {"o2_economiser_pct": issue}
    assert out.critical_bad == ["o2_economiser_pct"] and not out.healthy
    assert "o2_economiser_pct" not in out.values


def test_missing_and_read_failure(o2_nox):
    out = o2_nox.validate(snap(1.0, nox_mg_nm3=300.0), 1.0)
    assert out.issues == {"o2_economiser_pct": InputIssue.MISSING} and not out.healthy
    failed = o2_nox.validate(Snapshot({}, 2.0, error="BadSessionIdInvalid"), 1.0)
    assert failed.snapshot_error == "BadSessionIdInvalid" and not failed.healthy
    assert set(failed.issues.values()) == {InputIssue.READ_FAILED}


def test_non_critical_holds_last_good_then_releases(o2_nox):
    o2_nox.validate(snap(0.0, o2_economiser_pct=3.5, nox_mg_nm3=300.0), 1.0)
    hold_s = 30  # tag map default
    for k in range(1, hold_s + 1):
        out = o2_nox.validate(snap(k, o2_economiser_pct=3.5, nox_mg_nm3=Reading(300.0, BAD_SENSOR, k)), 1.0)
        assert out.values["nox_mg_nm3"] == 300.0 and out.held == ["nox_mg_nm3"] and out.healthy
    out = o2_nox.validate(snap(hold_s + 1, o2_economiser_pct=3.5, nox_mg_nm3=Reading(300.0, BAD_SENSOR, 0)), 1.0)
    assert out.critical_bad == ["nox_mg_nm3"] and "nox_mg_nm3" not in out.values


def test_frozen_sensor(o2_nox):
    # O2 is declared frozen after 120 s without any change: analysers always show some noise
    for k in range(120):
        assert o2_nox.validate(snap(k, o2_economiser_pct=3.5, nox_mg_nm3=300.0 + k), 1.0).healthy
    out = o2_nox.validate(snap(120.5, o2_economiser_pct=3.5, nox_mg_nm3=500.0), 1.0)
    assert out.issues == {"o2_economiser_pct": InputIssue.FROZEN}
    assert o2_nox.validate(snap(121.5, o2_economiser_pct=3.51, nox_mg_nm3=500.0), 1.0).healthy


def test_implausible_rate_of_change_then_accepts_a_real_step(o2_nox):
    o2_nox.validate(snap(0, o2_economiser_pct=3.5, nox_mg_nm3=300.0), 1.0)
    out = o2_nox.validate(snap(1, o2_economiser_pct=6.0, nox_mg_nm3=300.0), 1.0)  # 2.5 %/s > 2 %/s
    assert out.issues == {"o2_economiser_pct": InputIssue.RATE_OF_CHANGE}
    # the new level persists: after enough time it is a real change, not a spike
    for k in range(2, 8):
        out = o2_nox.validate(snap(k, o2_economiser_pct=6.0, nox_mg_nm3=300.0), 1.0)
    assert out.healthy and out.values["o2_economiser_pct"] == 6.0


def test_time_scale_stretches_timestamp_age(tag_map):
    fast = v.Validator([spec(tag_map, "o2_economiser_pct")], time_scale=60.0)
    # 0.6 s of wall time is 36 plant seconds at 60x: older than stale_s = 30
    out = fast.validate(Snapshot({"o2_economiser_pct": Reading(3.5, GOOD, 99.4)}, 100.0), 1.0)
    assert out.issues == {"o2_economiser_pct": InputIssue.STALE}


def test_state_roundtrip(o2_nox, tag_map):
    o2_nox.validate(snap(0, o2_economiser_pct=3.5, nox_mg_nm3=300.0), 1.0)
    other = v.Validator([spec(tag_map, "o2_economiser_pct"), spec(tag_map, "nox_mg_nm3")])
    other.restore(o2_nox.state())
    s = snap(1, o2_economiser_pct=9.0, nox_mg_nm3=Reading(0, BAD_SENSOR, 1))
    assert other.validate(s, 1.0) == o2_nox.validate(s, 1.0)


def test_steady_booleans_and_setpoints_are_not_judged_stale(tag_map):
    # a compliant server may stamp a value only when it changes: MFT has been false for a week
    names = ["mft_active", "sa_damper_a_pct_dcs_sp", "o2_economiser_pct"]
    val = v.Validator([spec(tag_map, n) for n in names])
    week = 7 * 86400.0
    out = val.validate(Snapshot({"mft_active": Reading(0.0, GOOD, 100.0 - week),
                                 "sa_damper_a_pct_dcs_sp": Reading(70.0, GOOD, 100.0 - week),
                                 "o2_economiser_pct": Reading(3.5, GOOD, 100.0 - week)}, 100.0), 1.0)
    assert out.issues == {"o2_economiser_pct": InputIssue.STALE}


# --- timestamps as vendor servers send them ---------------------------------------------------


def test_age_from_the_server_timestamp_where_there_is_no_source_timestamp(o2_nox):
    fresh = Reading(3.5, GOOD, math.nan, 99.0)
    out = o2_nox.validate(snap(100.0, o2_economiser_pct=fresh, nox_mg_nm3=300.0), 1.0)
    assert out.healthy and out.values["o2_economiser_pct"] == 3.5  # Good stays Good: no downgrade
    old = Reading(3.6, GOOD, math.nan, 60.0)
    assert o2_nox.validate(snap(101.0, o2_economiser_pct=old, nox_mg_nm3=300.0), 1.0).issues == {
        "o2_economiser_pct": InputIssue.STALE}
    bare = Reading(3.7, GOOD, math.nan, math.nan)
    assert o2_nox.validate(snap(102.0, o2_economiser_pct=bare, nox_mg_nm3=300.0), 1.0).issues == {
        "o2_economiser_pct": InputIssue.NO_TIMESTAMP}


def test_no_age_judged_where_stale_s_is_zero(tag_map):
    assert spec(tag_map, "unit_load_demand_mw").stale_s == 0  # a computed setpoint, constant at steady load
    validator = v.Validator([spec(tag_map, "unit_load_demand_mw"), spec(tag_map, "ai_enable")])
    for t in (100.0, 5000.0):
        out = validator.validate(Snapshot({"unit_load_demand_mw": Reading(600.0, GOOD, 1.0),  # stamped on change
                                           "ai_enable": Reading(1.0, GOOD, math.nan, math.nan)}, t), 1.0)
        assert out.healthy and not out.issues


def test_age_is_judged_on_the_server_clock(o2_nox):
    # the daemon's clock runs 1000 s ahead of the server's: ages come from the server's own clock
    stamped = Reading(3.5, GOOD, 995.0)
    out = o2_nox.validate(Snapshot({"o2_economiser_pct": stamped, "nox_mg_nm3": Reading(300.0, GOOD, 995.0)},
                                   2000.0, server_time=1000.0), 1.0)
    assert out.healthy


def test_a_server_clock_that_stops_invalidates_every_input(o2_nox):
    def at(k, clock):
        return Snapshot({"o2_economiser_pct": Reading(3.5 + k / 1000, GOOD, clock),
                         "nox_mg_nm3": Reading(300.0 + k, GOOD, clock)}, 100.0 + k, server_time=clock)

    for k in range(5):
        assert o2_nox.validate(at(k, 100.0 + k), 1.0).healthy
    stall = int(v.SERVER_CLOCK_STALL_S)
    for k in range(5, 5 + stall - 1):  # the clock stands at 104: tolerated for a while
        assert o2_nox.validate(at(k, 104.0), 1.0).healthy
    out = o2_nox.validate(at(5 + stall, 104.0), 1.0)
    assert not out.healthy and "stalled" in out.snapshot_error
    assert set(out.issues.values()) == {InputIssue.SERVER_CLOCK_STALLED} and out.critical_bad == ["o2_economiser_pct"]
    state = o2_nox.state()
    assert o2_nox.validate(at(6 + stall, 110.0), 1.0).healthy  # it moves again: alive
    restored = v.Validator(o2_nox.specs)
    restored.restore(state)  # replay resumes with the clock's track
    assert not restored.validate(at(6 + stall, 104.0), 1.0).healthy
