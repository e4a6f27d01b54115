"""The stepping API of the reference unit: what others build on (OPC UA server, daemon tests, training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from boiler_ai.sim.scenario import SCENARIOS, Event, Scenario, named_scenario
from boiler_ai.sim.unit import PROCESS_LIMITS, SIGNALS, ReferenceUnit, default_tag_map_path
from boiler_ai.tagmap import load_tag_map


def test_default_tag_map_is_the_packaged_one(tag_map):
    assert default_tag_map_path().exists()
    unit = ReferenceUnit()
    assert unit.tag_map.signals.keys() == tag_map.signals.keys()
    # the unit publishes an AI setpoint for every MV it has; the tag map reads those it hands to the AI
    assert set(tag_map.readable) <= set(SIGNALS)
    sprays = ("sh_spray_1", "sh_spray_2", "rh_spray")
    unread = {f"{s}_valve_pct_{k}" for s in sprays for k in ("ai_sp", "ai_enable")}
    assert set(SIGNALS) - set(tag_map.readable) == unread


def test_values_cover_every_readable_tag_in_range(tag_map):
    unit = ReferenceUnit(named_scenario("demo"))
    for _ in range(120):
        unit.step()
    v = unit.values()
    assert list(v) == tag_map.readable
    for name, x in v.items():
        spec = tag_map.signals[name]
        assert math.isfinite(x), name
        assert spec.lo <= x <= spec.hi, (name, x)
        if spec.data_type == "Boolean":
            assert x in (0.0, 1.0), name
    for mv in tag_map.manipulated:  # AI setpoints track the DCS while AI mode is off
        assert v[f"{mv}_ai_sp"] == v[f"{mv}_dcs_sp"]
    assert np.array_equal(unit.values_array(), np.array([v[n] for n in unit.value_names]))


def test_deterministic_for_a_seed_and_noisy_across_seeds():
    def run(seed):
        unit = ReferenceUnit(named_scenario("demo", seed), seed=seed)
        for _ in range(300):
            unit.step()
        return unit.values()

    a, b, c = run(3), run(3), run(4)
    assert a == b
    assert a["o2_economiser_pct"] != c["o2_economiser_pct"]
    assert abs(a["o2_economiser_pct"] - c["o2_economiser_pct"]) < 0.3


def test_noise_stays_inside_the_rate_and_frozen_checks(tag_map):
    """Noise, DCS resolution and deadband: no implausible rate, and no analyser held long enough for
    the daemon's frozen-sensor check."""
    unit = ReferenceUnit()
    prev = unit.values()
    watched = [n for n, s in tag_map.signals.items() if s.frozen_s is not None and s.readable]
    held = dict.fromkeys(watched, 0)
    longest = dict.fromkeys(watched, 0)
    for _ in range(900):
        unit.step()
        v = unit.values()
        for name, spec in tag_map.signals.items():
            if spec.max_rate_per_s is not None and spec.readable:
                assert abs(v[name] - prev[name]) <= spec.max_rate_per_s, name
        for name in watched:
            held[name] = held[name] + 1 if v[name] == prev[name] else 0
            longest[name] = max(longest[name], held[name])
        prev = v
    for name in watched:
        assert longest[name] < 0.5 * tag_map.signals[name].frozen_s, (name, longest[name])


@pytest.mark.parametrize("load_mw", [300.0, 450.0, 600.0])
def test_a_mill_trip_is_a_plausible_rate_for_every_analyser_and_thermocouple(tag_map, load_mw):
    """A mill trip is a real process change, not a failed instrument: what the unit shows of it stays inside
    the tag map's implausible-rate checks with margin. The O2 probes see it fastest at low load, where a mill
    is a third of the fuel (about 2.4 % O2 within the probes' 9 s to 63 %: about 1 %/s)."""
    trip = Scenario("trip", 1500.0, ((0.0, load_mw),), events=(Event(1200.0, "mill_trip", "a"),))
    unit = ReferenceUnit(trip, seed=1)
    checked = {n: s.max_rate_per_s for n, s in tag_map.signals.items() if s.max_rate_per_s is not None and s.readable}
    prev, fastest = unit.values(), dict.fromkeys(checked, 0.0)
    for _ in range(1500):
        unit.step()
        v = unit.values()
        for name in checked:
            fastest[name] = max(fastest[name], abs(v[name] - prev[name]))
        prev = v
    assert unit.values()["mill_a_in_service"] == 0.0
    for name, limit in checked.items():
        assert fastest[name] <= 0.75 * limit, (name, fastest[name], limit)
    assert fastest["o2_economiser_pct"] > 0.5  # the trip does show: the O2 step is fast, and checked


def test_write_only_writable_tags_with_clear_errors():
    unit = ReferenceUnit()
    with pytest.raises(KeyError, match="no_such_tag"):
        unit.write("no_such_tag", 1.0)
    with pytest.raises(ValueError, match="'o2_economiser_pct' is not writable"):
        unit.write("o2_economiser_pct", 3.0)
    with pytest.raises(ValueError, match="'sofa_damper_1_pct_dcs_sp' is not writable"):
        unit.write("sofa_damper_1_pct_dcs_sp", 50.0)
    with pytest.raises(ValueError, match="'sa_damper_a_pct_ai_sp'.*finite"):
        unit.write("sa_damper_a_pct_ai_sp", float("nan"))
    with pytest.raises(ValueError, match=r"'o2_setpoint_bias_pct_ai_sp'.*outside its range \[-2, 2\]"):
        unit.write("o2_setpoint_bias_pct_ai_sp", -3.0)
    with pytest.raises(ValueError, match="'ai_request' is Boolean"):
        unit.write("ai_request", 0.5)
    with pytest.raises(ValueError, match="'ai_heartbeat' is a counter"):
        unit.write("ai_heartbeat", 1.5)
    unit.write("ai_request", True)
    unit.write("ai_heartbeat", 7)
    unit.write("sa_damper_a_pct_ai_sp", 55.0)
    v = unit.values()  # read back at once, as a DCS holds what was written
    assert v["ai_request"] == 1.0 and v["ai_heartbeat"] == 7.0 and v["sa_damper_a_pct_ai_sp"] == 55.0


def test_performance_is_noise_free_and_flags_limits():
    unit = ReferenceUnit()
    unit.step()
    p = unit.performance()
    for key in ("efficiency_pct", "efficiency_lhv_pct", "nox_mg_nm3", "co_ppm", "o2_pct", "spray_tph",
                "main_steam_temp_c", "reheat_steam_temp_c", "load_mw", "coal_tph", "carbon_in_fly_ash_pct"):
        assert math.isfinite(p[key]), key
    assert set(p["violations"]) == set(PROCESS_LIMITS) and p["any_violation"] is False
    assert set(p["limit_signals"]) == {signal for signal, _, _ in PROCESS_LIMITS.values()}
    assert p["limit_signals"]["co_ppm"] == p["co_minute_ppm"] and p["limit_signals"]["o2_economiser_pct"] == p["o2_pct"]
    assert unit.performance() is p  # computed once per step
    assert abs(p["o2_pct"] - unit.values()["o2_economiser_pct"]) < 0.2
    # Online efficiency tag: the DCS's heat-loss calculation on its own instruments
    for _ in range(20):
        unit.step()
    assert unit.values()["boiler_efficiency_pct"] == pytest.approx(unit.performance()["efficiency_pct"], abs=0.3)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_named_scenarios_run(name):
    sc = named_scenario(name, seed=1)
    assert sc.name == name and sc.duration_s >= 1800
    unit = ReferenceUnit(sc, seed=1)
    for _ in range(600):
        unit.step()
    assert unit.t == 600.0
    assert all(math.isfinite(x) for x in unit.values().values())
    assert not any(unit.violation_s.values()), unit.violation_s


def test_agc_day_profile():
    sc = named_scenario("agc_day_24h", seed=0)
    assert sc.duration_s == 86400
    loads = [sc.agc_target_mw(t) for t in range(0, 86400, 60)]
    assert 300 <= min(loads) and max(loads) <= 600 and max(loads) - min(loads) > 200
    rates = [abs(b - a) / 60.0 * 60 / 6.0 for a, b in zip(loads, loads[1:])]  # % of 600 MW per minute
    assert max(rates) <= 2.0 + 1e-9
    assert named_scenario("agc_day_24h", seed=0) == sc and named_scenario("agc_day_24h", seed=1) != sc
    kinds = {(c[1]) for c in sc.coal_changes}
    assert {"high_moisture_blend", "low_volatile_lean"} <= kinds


def test_coal_changes_blend_through_their_transition():
    sc = Scenario("t", 3600.0, ((0.0, 600.0),), coal_changes=((100.0, "high_moisture_blend", 200.0),))
    assert sc.coal_at(50.0).name == "design_bituminous"
    mid = sc.coal_at(200.0)
    assert mid.moisture_pct == pytest.approx(15.0) and mid.hhv_kj_per_kg == pytest.approx(20800.0)
    assert sc.coal_at(400.0).name == "high_moisture_blend"


def test_events_are_checked_and_ordered():
    with pytest.raises(ValueError, match="unknown event kind"):
        Event(0.0, "explode")
    with pytest.raises(ValueError, match="mill letter"):
        Event(0.0, "mill_trip", "g")
    with pytest.raises(ValueError, match="target load"):
        Event(0.0, "runback", 900.0)
    with pytest.raises(KeyError, match="unknown scenario 'nope'"):
        named_scenario("nope")
    sc = named_scenario("steady_full_load").with_events(Event(60.0, "mill_trip", "a"), Event(30.0, "sootblow"))
    assert [e.t for e in sc.events] == [30.0, 60.0]
    unit = ReferenceUnit(sc)
    for _ in range(61):
        unit.step()
    assert unit.values()["mill_a_in_service"] == 0.0


def test_a_tag_map_the_unit_cannot_serve_is_refused(tmp_path):
    data = yaml.safe_load(default_tag_map_path().read_text())
    data["signals"]["bogus_flow_tph"] = {"node": "s=Bogus", "type": "Double", "unit": "t/h", "range": [0, 1],
                                         "access": "read", "critical": False, "description": "not simulated"}
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="no signal 'bogus_flow_tph'"):
        ReferenceUnit(tag_map=load_tag_map(path))


def test_step_rejects_bad_dt():
    unit = ReferenceUnit()
    with pytest.raises(ValueError, match="dt"):
        unit.step(0.0)
    unit.step(0.5)
    unit.step(2.0)
    assert unit.t == 2.5
