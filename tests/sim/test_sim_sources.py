"""One source per fact: the simulator's MVs come from the tag map; its limits agree with the envelope.
And the DCS emulation's own protection: the process trip of AI mode."""

from __future__ import annotations

import pytest
import yaml

from boiler_ai.control.envelope import load_envelope
from boiler_ai.sim.dcs import I_SPRAY, MV_NAMES, MV_RANGE, SPRAY_VALVE, DcsConfig, ProcessTrip
from boiler_ai.sim.disturbances import NO_DISTURBANCES
from boiler_ai.sim.scenario import Scenario
from boiler_ai.sim.unit import PROCESS_LIMITS, ReferenceUnit, default_tag_map_path, project_file
from boiler_ai.tagmap import load_tag_map


@pytest.fixture(scope="module")
def tag_map():
    return load_tag_map(default_tag_map_path())


@pytest.fixture(scope="module")
def envelope(tag_map):
    return load_envelope(project_file("constraints", "reference_unit.yaml"), tag_map)


def quiet_unit(**kw) -> ReferenceUnit:
    return ReferenceUnit(Scenario("t", 7200.0, ((0.0, 600.0),), noise=False, disturbances=NO_DISTURBANCES), **kw)


def test_the_ai_may_set_exactly_the_tag_maps_manipulated_variables(tag_map):
    unit = ReferenceUnit(tag_map=tag_map)
    assert set(unit.ai_mvs) == set(tag_map.manipulated)
    assert set(unit.dcs.ai_mvs) == set(tag_map.manipulated)


def test_ai_setpoint_ranges_are_the_tag_maps(tag_map):
    unit = ReferenceUnit(tag_map=tag_map)
    for k, mv in enumerate(MV_NAMES):
        if mv in tag_map.manipulated:
            spec = tag_map.signals[f"{mv}_ai_sp"]
            lo, hi = unit.dcs._range[k]
            assert (lo, hi) == (max(spec.lo, MV_RANGE[mv][0]), min(spec.hi, MV_RANGE[mv][1])), mv


def test_the_envelope_names_only_mvs_the_unit_has_and_limits_agree(tag_map, envelope):
    assert set(envelope.mv_names) <= set(tag_map.manipulated) <= set(MV_NAMES)
    # The unit's process limits are the envelope's, figure for figure; an averaged one (CO over a minute)
    # is one of them judged over the window, which is how the simulator counts CO too.
    env = {p.name: (p.signal, p.relation, p.limit) for p in envelope.process_limits if not p.average_s}
    assert env == PROCESS_LIMITS
    averaged = [(p.signal, p.relation, p.limit) for p in envelope.process_limits if p.average_s]
    assert averaged and all(a in PROCESS_LIMITS.values() for a in averaged)
    # The DCS-side clamp is never tighter than the envelope's deviation, so the envelope is what binds.
    clamp = DcsConfig().clamp
    for i, name in enumerate(envelope.mv_names):
        assert clamp[name] >= float(envelope.max_dev[i]), name
        spec = tag_map.signals[f"{name}_ai_sp"]
        assert spec.lo <= float(envelope.lo[i]) and float(envelope.hi[i]) <= spec.hi, name


def test_spray_valves_are_not_in_the_tag_map_and_stay_dcs_loops_whatever_the_ai_does(tag_map):
    assert not set(SPRAY_VALVE) & set(tag_map.manipulated)  # docs/STEAM_TEMPERATURE.md
    unit = quiet_unit(tag_map=tag_map)
    assert not set(SPRAY_VALVE) & set(unit.ai_mvs)
    with pytest.raises(KeyError, match="sh_spray_1_valve_pct_ai_sp"):
        unit.write("sh_spray_1_valve_pct_ai_sp", 0.0)
    unit.set_ai_enable(True)
    beat = 0
    for _ in range(5):
        beat += 1
        unit.write("ai_heartbeat", beat)
        unit.write("ai_request", 1)
        unit.step()
    assert unit.dcs.ai_active
    # The AI pushes O2 up and SOFA shut: steam temperatures rise; the spray loops answer with full
    # PI action (their integrals move) and hold main steam on its set point.
    integral0 = [pi.integral for pi in unit.dcs.spray_pi]
    for _ in range(1500):
        beat += 1
        unit.write("ai_heartbeat", beat)
        unit.write("o2_setpoint_bias_pct_ai_sp", 1.0)
        unit.write("sofa_damper_1_pct_ai_sp", max(unit.dcs.dcs_sp[12] - 20.0, 0.0))
        unit.step()
    assert unit.dcs.ai_active
    assert any(abs(pi.integral - i0) > 1.0 for pi, i0 in zip(unit.dcs.spray_pi, integral0))
    assert unit.dcs.applied[I_SPRAY:] == unit.dcs.dcs_sp[I_SPRAY:]
    assert unit.performance()["main_steam_temp_c"] == pytest.approx(540.0, abs=1.0)


def test_a_tag_map_naming_an_mv_the_dcs_lacks_is_refused(tmp_path):
    data = yaml.safe_load(default_tag_map_path().read_text())
    data["signals"]["burner_tilt_deg_dcs_sp"] = {"node": "s=T.D", "type": "Double", "unit": "deg", "range": [-30, 30],
                                                 "access": "read", "critical": False, "description": "tilt"}
    data["signals"]["burner_tilt_deg_ai_sp"] = {"node": "s=T.A", "type": "Double", "unit": "deg", "range": [-30, 30],
                                                "access": "readwrite", "critical": False, "description": "tilt"}
    data["manipulated"]["burner_tilt_deg"] = {"dcs_setpoint": "burner_tilt_deg_dcs_sp",
                                              "ai_setpoint": "burner_tilt_deg_ai_sp"}
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="manipulated.burner_tilt_deg is not a setpoint of the unit's DCS"):
        ReferenceUnit(tag_map=load_tag_map(path))


# ── the DCS's process trip of AI mode ────────────────────────────────────────────────────────────
def engage(unit: ReferenceUnit) -> int:
    unit.set_ai_enable(True)
    for beat in range(1, 4):
        unit.write("ai_heartbeat", beat)
        unit.write("ai_request", 1)
        unit.step()
    assert unit.dcs.ai_active, unit.dcs.reasons
    return 3


def drive_nox_up(unit: ReferenceUnit, beat: int, seconds: int) -> int:
    """Shut SOFA and open the burner-level dampers: NOx climbs past its high-high limit."""
    for _ in range(seconds):
        beat += 1
        unit.write("ai_heartbeat", beat)
        for k in range(2):
            unit.write(f"sofa_damper_{k + 1}_pct_ai_sp", 0.0)
        unit.write("o2_setpoint_bias_pct_ai_sp", 1.2)
        unit.step()
    return beat


def test_nox_high_high_trips_ai_mode_and_latches_until_the_operator_resets():
    unit = quiet_unit(dcs_config=DcsConfig(process_trips=(
        ProcessTrip("nox_high_high", "nox_mg_nm3", 380.0, 30.0, "NOx"),)))
    beat = drive_nox_up(unit, engage(unit), 600)
    assert not unit.dcs.ai_active
    assert unit.dcs.trip is not None and "nox_high_high" in unit.dcs.trip
    assert any("latched" in r for r in unit.dcs.reasons) and unit.values()["ai_permissive"] == 0.0
    # Back under the DCS NOx falls, but the trip holds until the operator resets AI mode.
    for _ in range(300):
        beat += 1
        unit.write("ai_heartbeat", beat)
        unit.step()
    assert unit.values()["nox_mg_nm3"] < 380.0 and not unit.dcs.ai_active
    unit.set_ai_enable(False)
    unit.set_ai_enable(True)
    beat += 1
    unit.write("ai_heartbeat", beat)
    unit.step()
    assert unit.dcs.ai_active and unit.dcs.trip is None


def test_process_trip_can_be_switched_off():
    trips = (ProcessTrip("nox_high_high", "nox_mg_nm3", 380.0, 30.0, "NOx"),)
    unit = quiet_unit(dcs_config=DcsConfig(process_trip=False, process_trips=trips))
    drive_nox_up(unit, engage(unit), 600)
    assert unit.values()["nox_mg_nm3"] > 380.0
    assert unit.dcs.ai_active and unit.dcs.trip is None


def test_default_trips_sit_above_the_envelopes_process_limits():
    limits = {p[0]: p[2] for p in PROCESS_LIMITS.values() if p[1] == "at_most"}
    signal = {"nox_mg_nm3": "nox_mg_nm3", "co_ppm": "co_ppm", "main_steam_c": "main_steam_temp_c",
              "reheat_c": "reheat_steam_temp_c"}
    for trip in DcsConfig().process_trips:
        assert trip.limit > limits[signal[trip.signal]] and trip.delay_s > 0, trip.name


def test_a_bad_trip_setting_is_refused():
    with pytest.raises(ValueError, match="unknown signal 'nox'"):
        DcsConfig(process_trips=(ProcessTrip("x", "nox", 1.0, 1.0, "NOx"),))
