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
    (Reading(3.5, GOOD, 80.0), InputIssue.STALE),
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
    out = o2_nox.validate(snap(1, o2_economiser_pct=6.0, nox_mg_nm3=300.0), 1.0)  # 2.5 %/s > 0.5 %/s
    assert out.issues == {"o2_economiser_pct": InputIssue.RATE_OF_CHANGE}
    # the new level persists: after enough time it is a real change, not a spike
    for k in range(2, 8):
        out = o2_nox.validate(snap(k, o2_economiser_pct=6.0, nox_mg_nm3=300.0), 1.0)
    assert out.healthy and out.values["o2_economiser_pct"] == 6.0


def test_time_scale_stretches_timestamp_age(tag_map):
    fast = v.Validator([spec(tag_map, "o2_economiser_pct")], time_scale=60.0)
    # 0.2 s of wall time is 12 plant seconds at 60x: older than stale_s = 10
    out = fast.validate(Snapshot({"o2_economiser_pct": Reading(3.5, GOOD, 99.8)}, 100.0), 1.0)
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
