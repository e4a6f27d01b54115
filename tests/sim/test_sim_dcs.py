"""The DCS emulation and its side of the AI handshake (docs/ARCHITECTURE.md), through the stepping API."""

from __future__ import annotations

import pytest

from boiler_ai.sim.dcs import I_FEEDER, I_O2, I_SA, I_SPRAY, MV_NAMES, DcsConfig, o2_curve_pct
from boiler_ai.sim.disturbances import NO_DISTURBANCES
from boiler_ai.sim.scenario import Event, Scenario
from boiler_ai.sim.unit import ReferenceUnit


def unit_at(load_mw: float = 600.0, duration: float = 7200.0, **kw) -> ReferenceUnit:
    return ReferenceUnit(Scenario("test", duration, ((0.0, load_mw),), noise=False, disturbances=NO_DISTURBANCES), **kw)


class Daemon:
    """What the daemon writes each cycle: AI setpoints, request, heartbeat +1."""

    def __init__(self, unit: ReferenceUnit):
        self.unit, self.beat = unit, 0

    def cycle(self, heartbeat: bool = True, request: bool = True, **setpoints: float) -> None:
        u = self.unit
        if heartbeat:
            self.beat += 1
            u.write("ai_heartbeat", self.beat)
        u.write("ai_request", 1.0 if request else 0.0)
        for mv, v in setpoints.items():
            u.write(f"{mv}_ai_sp", v)
        u.step()


def engaged(load_mw: float = 600.0, **kw) -> tuple[ReferenceUnit, Daemon]:
    unit = unit_at(load_mw, **kw)
    unit.set_ai_enable(True)
    d = Daemon(unit)
    d.cycle()
    assert unit.dcs.ai_active, unit.dcs.reasons
    return unit, d


def test_inactive_by_default_with_reasons():
    unit = unit_at()
    unit.step()
    v = unit.values()
    assert v["ai_active"] == 0.0 and v["ai_enable"] == 0.0 and v["ai_permissive"] == 1.0
    reasons = " | ".join(unit.dcs.reasons)
    assert "ai_enable off" in reasons and "ai_request off" in reasons and "heartbeat never changed" in reasons


def test_active_needs_enable_request_heartbeat_and_permissive():
    unit = unit_at()
    d = Daemon(unit)
    d.cycle()
    assert not unit.dcs.ai_active and unit.dcs.reasons == ("ai_enable off (operator)",)
    unit.set_ai_enable(True)
    d.cycle(request=False)
    assert not unit.dcs.ai_active and unit.dcs.reasons == ("ai_request off",)
    d.cycle()
    assert unit.dcs.ai_active and unit.values()["ai_active"] == 1.0 and unit.dcs.reasons == ()


def test_ai_setpoints_track_the_dcs_while_inactive_so_engaging_is_bumpless():
    unit = unit_at(480.0)
    unit.write("sa_damper_c_pct_ai_sp", 90.0)  # written while inactive: overwritten by tracking
    for _ in range(5):
        unit.step()
    v = unit.values()
    for mv in unit.tag_map.manipulated:
        assert v[f"{mv}_ai_sp"] == v[f"{mv}_dcs_sp"], mv
    before = list(unit.dcs.applied)
    unit.set_ai_enable(True)
    Daemon(unit).cycle()  # engage, writing nothing: the AI setpoints are the DCS's
    assert unit.dcs.ai_active
    for i, mv in enumerate(MV_NAMES):
        if not mv.startswith("sh_") and not mv.startswith("rh_"):  # spray loops move a little each step
            assert unit.dcs.applied[i] == pytest.approx(before[i], abs=0.05), mv


def test_watchdog_drops_ai_mode_when_the_heartbeat_stops():
    unit, d = engaged()  # last heartbeat written at t = 0
    for _ in range(4):
        d.cycle(heartbeat=False)  # at t = 5 it has been unchanged for 5 s: still within watchdog_s
    assert unit.dcs.ai_active
    d.cycle(heartbeat=False)
    assert not unit.dcs.ai_active and not unit.dcs.watchdog_healthy
    assert "watchdog: heartbeat unchanged for 6 s" in unit.dcs.reasons[0]
    d.cycle()  # a fresh heartbeat and the DCS lends control again
    assert unit.dcs.ai_active


def test_watchdog_period_is_configurable():
    unit, d = engaged(dcs_config=DcsConfig(watchdog_s=2.0))
    d.cycle(heartbeat=False)
    assert unit.dcs.ai_active
    d.cycle(heartbeat=False)
    assert not unit.dcs.ai_active


def test_operator_disable_drops_ai_mode_at_once():
    unit, d = engaged()
    unit.set_ai_enable(False)
    assert unit.values()["ai_enable"] == 0.0
    d.cycle()
    assert not unit.dcs.ai_active and unit.dcs.reasons == ("ai_enable off (operator)",)


def test_ai_setpoint_is_clamped_around_the_dcs_setpoint():
    unit, d = engaged()
    dcs_sa_c = unit.dcs.dcs_sp[I_SA + 2]
    d.cycle(sa_damper_c_pct=dcs_sa_c - 40.0, o2_setpoint_bias_pct=-2.0)
    clamp = unit.dcs.config.clamp
    assert unit.dcs.applied[I_SA + 2] == pytest.approx(unit.dcs.dcs_sp[I_SA + 2] - clamp["sa_damper_c_pct"])
    assert unit.dcs.applied[I_O2] == pytest.approx(-clamp["o2_setpoint_bias_pct"])
    # The DCS holds what was written; the clamp acts on what it applies.
    assert unit.values()["sa_damper_c_pct_ai_sp"] == pytest.approx(dcs_sa_c - 40.0)
    # Clamps are a bit wider than the daemon's envelope (constraints/reference_unit.yaml).
    assert clamp["o2_setpoint_bias_pct"] > 1.0 and clamp["sa_damper_c_pct"] > 20.0
    assert clamp["feeder_a_bias_tph"] > 5.0 and clamp["sh_spray_1_valve_pct"] > 15.0


def test_o2_bias_moves_the_o2_set_point_and_the_flue_gas():
    unit, d = engaged()
    for _ in range(400):
        d.cycle(o2_setpoint_bias_pct=-0.6)
    assert unit.dcs.o2_sp == pytest.approx(o2_curve_pct(1.0) - 0.6)
    assert unit.performance()["o2_pct"] == pytest.approx(o2_curve_pct(1.0) - 0.6, abs=0.05)


def test_feeder_biases_shift_coal_but_keep_total_fuel():
    unit, d = engaged()
    for _ in range(200):
        d.cycle()
    total_before = sum(unit.dcs.feeder_demand)
    for _ in range(5):  # +5 t/h on A only: the DCS removes the mean over the in-service feeders
        d.cycle(feeder_a_bias_tph=5.0)
    dem = unit.dcs.feeder_demand
    assert sum(dem) == pytest.approx(total_before, rel=0.01)
    assert dem[0] - dem[1] == pytest.approx(5.0, abs=0.01)
    assert dem[1] == pytest.approx(dem[2]) == pytest.approx(dem[4])
    assert dem[5] == 0.0  # F is in reserve: a bias on it does nothing
    d.cycle(feeder_f_bias_tph=5.0)
    assert unit.dcs.feeder_demand[5] == 0.0


def test_spray_loops_stay_with_the_dcs_and_keep_integrating_in_ai_mode():
    """The tag map gives the AI no spray valve: the DCS's loops run on, integral action and all."""
    unit, d = engaged()
    with pytest.raises(KeyError, match="sh_spray_2_valve_pct_ai_sp"):
        unit.write("sh_spray_2_valve_pct_ai_sp", 50.0)
    assert unit.dcs._ai_spray == (False, False, False)
    pi = unit.dcs.spray_pi[1]
    integral = pi.integral
    for _ in range(300):
        d.cycle(o2_setpoint_bias_pct=0.5)  # hotter flue gas: the spray loops must take it out
    assert unit.dcs.ai_active
    assert pi.integral != integral  # integrating, not frozen
    assert unit.dcs.applied[I_SPRAY:] == unit.dcs.dcs_sp[I_SPRAY:]  # the DCS's own demand is the valve's
    assert abs(unit.performance()["main_steam_temp_c"] - 540.0) < 2.0


def test_hand_back_ramps_to_the_dcs_setpoints():
    unit, d = engaged()
    for _ in range(60):
        d.cycle(o2_setpoint_bias_pct=-1.0, feeder_b_bias_tph=-4.0)
    assert unit.dcs.applied[I_O2] == pytest.approx(-1.0)
    unit.set_ai_enable(False)
    rate = unit.dcs.config.handback_rate_per_s["o2_setpoint_bias_pct"]
    path = []
    for _ in range(80):
        d.cycle()
        path.append(unit.dcs.applied[I_O2])
    assert path[0] == pytest.approx(-1.0 + rate)
    assert all(b - a == pytest.approx(rate) for a, b in zip(path, path[1:]) if b < 0.0)
    assert path[-1] == 0.0 and not any(unit.dcs.releasing)
    assert unit.dcs.applied[I_FEEDER + 1] == 0.0


@pytest.mark.parametrize("event, reason", [
    (Event(0.0, "coordinated_off"), "unit not in coordinated control"),
    (Event(0.0, "runback", 420.0), "runback in progress"),
    (Event(0.0, "mft"), "master fuel trip"),
])
def test_dcs_permissives(event, reason):
    unit, d = engaged()
    unit.inject(event.kind, event.target)
    d.cycle()
    assert not unit.dcs.ai_active and not unit.dcs.ai_permissive
    assert reason in unit.dcs.reasons and unit.values()["ai_permissive"] == 0.0


def test_load_below_minimum_is_not_permissive():
    unit = unit_at(250.0)
    unit.step()
    assert unit.values()["ai_permissive"] == 0.0
    assert any("below the 270 MW minimum" in r for r in unit.dcs.reasons)


def test_runback_lowers_load_fast_then_clears():
    unit = unit_at(600.0)
    unit.inject("runback", 400.0)
    unit.step()
    assert unit.values()["runback_active"] == 1.0
    loads = []
    for _ in range(1500):
        unit.step()
        loads.append(unit.performance()["load_mw"])
    assert unit.dcs.load_demand_mw == pytest.approx(400.0) and unit.values()["runback_active"] == 0.0
    assert loads[120] < 500.0  # most of the load is off within two minutes
    assert min(loads) > 350.0  # the stored energy is burnt off without a deep undershoot
    assert loads[-1] == pytest.approx(400.0, abs=15.0)


def test_coordinated_off_freezes_the_load_demand():
    unit = ReferenceUnit(Scenario("t", 3600.0, ((0.0, 500.0), (60.0, 500.0), (660.0, 600.0)), noise=False,
                                  disturbances=NO_DISTURBANCES))
    for _ in range(120):
        unit.step()
    unit.inject("coordinated_off")
    held = unit.dcs.load_demand_mw
    for _ in range(300):
        unit.step()
    assert unit.dcs.load_demand_mw == held and unit.values()["coordinated_control"] == 0.0
    unit.inject("coordinated_on")
    for _ in range(120):
        unit.step()
    assert unit.dcs.load_demand_mw > held + 10.0


def test_mill_trip_starts_the_reserve_mill():
    unit = unit_at(600.0)
    unit.inject("mill_trip", "c")
    for _ in range(900):
        unit.step()
    v = unit.values()
    assert v["mill_c_in_service"] == 0.0 and v["mill_c_coal_flow_tph"] == 0.0
    assert v["mill_f_in_service"] == 1.0 and v["mill_f_coal_flow_tph"] > 30.0
    assert unit.performance()["load_mw"] == pytest.approx(600.0, abs=10.0)


def test_mills_come_out_of_service_as_load_falls():
    ramp = 0.02 * 600 / 60
    unit = ReferenceUnit(Scenario("t", 4000.0, ((0.0, 600.0), (60.0, 600.0), (60.0 + 300.0 / ramp, 300.0)),
                                  noise=False, disturbances=NO_DISTURBANCES))
    while unit.t < 4000.0:
        unit.step()
    v = unit.values()
    assert [v[f"mill_{m}_in_service"] for m in "abcdef"] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert not any(unit.violation_s.values()), unit.violation_s


def test_mft_trips_everything_and_stays_finite():
    unit = unit_at(600.0)
    unit.inject("mft")
    for _ in range(120):
        unit.step()
    v = unit.values()
    assert v["mft_active"] == 1.0 and v["coordinated_control"] == 0.0
    assert all(v[f"mill_{m}_in_service"] == 0.0 for m in "abcdef")
    assert v["unit_load_mw"] < 5.0 and v["o2_economiser_pct"] > 18.0
    assert unit.performance()["efficiency_pct"] == 0.0
    assert all(x == x and abs(x) < 1e12 for x in v.values())
