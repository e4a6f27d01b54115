"""Disturbances and measurements as a plant has them: seeded, switchable per scenario, and sized to the
figures docs/REFERENCE_UNIT.md cites."""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest

from boiler_ai.sim.coal import DESIGN_COAL
from boiler_ai.sim.disturbances import NO_DISTURBANCES, Disturbances, DisturbanceState, LabAnalysis, vary_coal
from boiler_ai.sim.heatrate import cycle_heat_rate, unit_heat_rate
from boiler_ai.sim.scenario import Event, Scenario
from boiler_ai.sim.unit import ReferenceUnit


def steady(duration: float = 3600.0, **kw) -> Scenario:
    return Scenario("t", duration, ((0.0, 600.0),), **kw)


def run(unit: ReferenceUnit, seconds: float, every: float = 1.0) -> list[dict]:
    out = []
    end = unit.t + seconds
    while unit.t < end:
        unit.step()
        if unit.t % every == 0:
            out.append({**unit.performance(), **{f"m_{k}": v for k, v in unit.values().items()}})
    return out


def test_disturbances_are_seeded_and_each_has_its_own_stream():
    a = DisturbanceState(Disturbances(), 3, DESIGN_COAL)
    b = DisturbanceState(Disturbances(), 3, DESIGN_COAL)
    c = DisturbanceState(replace(Disturbances(), windbox_drift_pct=0.0), 3, DESIGN_COAL)
    for _ in range(50):
        for s in (a, b, c):
            s.step(0.2)
    assert a.pulsation == b.pulsation and a.coal_dev == b.coal_dev and a.windbox == b.windbox
    # Switching one off leaves the others' realisations as they were.
    assert c.windbox == [0.0] * 6 and c.pulsation == a.pulsation and c.coal_dev == a.coal_dev
    assert DisturbanceState(Disturbances(), 4, DESIGN_COAL).calibration != a.calibration


def test_none_means_none():
    unit = ReferenceUnit(steady(noise=False, disturbances=NO_DISTURBANCES))
    rows = run(unit, 600.0)
    assert statistics.pstdev(r["o2_pct"] for r in rows) < 1e-3
    assert unit.dist.pulsation == [0.0] * 6 and unit.coal.moisture_pct == DESIGN_COAL.moisture_pct


def test_bad_sizes_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="Disturbances.coal_ash_pt"):
        Disturbances(coal_ash_pt=-1.0)


def test_coal_quality_varies_and_the_heating_value_follows_the_analysis():
    wet = vary_coal(DESIGN_COAL, 3.0, 2.0, -4.0)
    assert wet.moisture_pct == 15.0 and wet.ash_pct == pytest.approx(22.2)
    k = (100 - 15.0 - 22.2) / (100 - 12.0 - 20.2)
    assert wet.hhv_kj_per_kg == pytest.approx(DESIGN_COAL.hhv_kj_per_kg * k)
    assert wet.carbon_pct == pytest.approx(DESIGN_COAL.carbon_pct * k) and wet.volatile_daf_pct == 32.0
    unit = ReferenceUnit(steady(4 * 3600.0), seed=5)
    seen = {round(r["coal_tph"]) for r in run(unit, 4 * 3600.0, every=600.0)}
    assert len(seen) > 1  # the boiler master follows the heating value
    assert abs(unit.coal.moisture_pct - DESIGN_COAL.moisture_pct) > 0.05


def test_the_lab_reports_the_shift_composite_hours_late():
    lab = LabAnalysis(DESIGN_COAL, 8 * 3600.0, 4 * 3600.0)
    wet = vary_coal(DESIGN_COAL, 4.0, 0.0, 0.0)
    t = 0.0
    while t < 8 * 3600.0:
        t += 60.0
        lab.sample(t, wet, 60.0)
    assert lab.coal is DESIGN_COAL  # the shift is over, the analysis is not back yet
    while t < 12 * 3600.0:
        t += 60.0
        lab.sample(t, wet, 60.0)
    assert lab.coal.moisture_pct == pytest.approx(16.0, abs=0.01)


def test_online_efficiency_uses_instruments_and_the_lab_not_the_truth():
    sc = steady(3 * 3600.0, coal_changes=((60.0, "high_moisture_blend", 600.0),))
    unit = ReferenceUnit(sc, seed=2)
    run(unit, 3 * 3600.0 - 1.0, every=3600.0)
    # Three hours into a wet coal the lab still reports the design coal: the tag reads high.
    assert unit.dist.lab.coal.moisture_pct < 13.0 < unit.coal.moisture_pct
    assert unit.values()["boiler_efficiency_pct"] > unit.performance()["efficiency_pct"] + 0.5


def test_o2_grid_reads_off_the_true_o2_by_stratification_and_drift():
    offsets = []
    for seed in range(6):
        unit = ReferenceUnit(steady(1200.0), seed=seed)
        rows = run(unit, 900.0)
        offsets.append(statistics.fmean(r["m_o2_economiser_pct"] - r["o2_pct"] for r in rows[300:]))
    assert max(abs(o) for o in offsets) > 0.03 and max(abs(o) for o in offsets) < 0.6
    assert len({round(o, 3) for o in offsets}) == 6


def test_co_analyser_shows_pockets_the_true_average_does_not():
    unit = ReferenceUnit(steady(3600.0), seed=1)
    rows = run(unit, 3600.0)
    meas = [r["m_co_ppm"] for r in rows]
    assert max(meas) > statistics.median(meas) + 10.0
    assert max(r["co_minute_ppm"] for r in rows) < max(meas)


def test_gas_analysers_dead_time_and_lag_are_20_to_30_s_to_63_percent():
    unit = ReferenceUnit(steady(2000.0, noise=False, disturbances=NO_DISTURBANCES))
    run(unit, 100.0)
    nox0 = unit.performance()["nox_mg_nm3"]
    unit.dcs.operator_o2_bias = 0.8
    rows = run(unit, 400.0)
    true_final, meas0 = rows[-1]["nox_mg_nm3"], rows[0]["m_nox_mg_nm3"]
    i_true = next(i for i, r in enumerate(rows) if r["nox_mg_nm3"] - nox0 >= 0.63 * (true_final - nox0))
    i_meas = next(i for i, r in enumerate(rows) if r["m_nox_mg_nm3"] - meas0 >= 0.63 * (true_final - nox0))
    assert 20 <= i_meas - i_true <= 32


def test_carbon_in_ash_comes_every_five_minutes_with_repeatability():
    unit = ReferenceUnit(steady(3600.0), seed=3)
    rows = run(unit, 1800.0)
    values = [r["m_carbon_in_fly_ash_pct"] for r in rows]
    changes = sum(1 for a, b in zip(values, values[1:]) if a != b)
    assert 4 <= changes <= 6
    samples = sorted(set(values))
    assert any(abs(s - rows[-1]["carbon_in_fly_ash_pct"]) > 0.02 for s in samples)


def test_sootblowing_takes_slag_off_gradually_and_uses_steam():
    unit = ReferenceUnit(steady(4000.0, initial_slag=0.5, initial_fouling=0.5, disturbances=replace(
        NO_DISTURBANCES, slag_growth=False)).with_events(Event(10.0, "sootblow")))
    hr_before = unit.performance()["heat_rate_kj_kwh"]
    rows = run(unit, 2500.0, every=60.0)
    slag = [r["slag"] for r in rows]
    assert all(b <= a for a, b in zip(slag, slag[1:])) and slag[0] > 0.4 and slag[-1] < 0.05
    assert max(a - b for a, b in zip(slag, slag[1:])) < 0.1  # no reset in one go
    assert rows[1]["sootblowing"] and not rows[-1]["sootblowing"]
    assert rows[1]["heat_rate_kj_kwh"] > hr_before


def test_slag_grows_with_furnace_temperature_and_sheds():
    hot = ReferenceUnit(steady(7200.0, slag_rate_per_h=0.1, initial_slag=0.3), seed=4)
    run(hot, 7200.0, every=600.0)
    cool = ReferenceUnit(Scenario("t", 7200.0, ((0.0, 330.0),), slag_rate_per_h=0.1, initial_slag=0.3), seed=4)
    run(cool, 7200.0, every=600.0)
    assert cool.slag < hot.slag
    d = replace(Disturbances(), slag_shedding_per_h=50.0)
    shed = ReferenceUnit(steady(1800.0, initial_slag=0.6, disturbances=d), seed=4)
    slag = [r["slag"] for r in run(shed, 1800.0, every=10.0)]
    assert min(b - a for a, b in zip(slag, slag[1:])) < -0.02


def test_ambient_and_humidity_follow_the_day_and_the_weather():
    sc = Scenario("t", 86400.0, ((0.0, 500.0),), ambient_mean_c=30.0, ambient_swing_c=6.0, humidity_rh_pct=70.0)
    unit = ReferenceUnit(sc, seed=1)
    amb, hum = [], []
    while unit.t < 86400.0:
        unit.step(60.0)
        amb.append(unit.ambient_c)
        hum.append(unit.humidity)
    assert max(amb) - min(amb) > 9.0 and 0.012 < statistics.fmean(hum) < 0.03


def test_airheater_leakage_biases_the_corrected_exit_gas_reading_and_costs_fan_power():
    def with_leakage(pct: float) -> ReferenceUnit:
        d = replace(NO_DISTURBANCES, airheater_leakage_pct=pct)
        return ReferenceUnit(steady(1200.0, noise=False, disturbances=d))

    tight, leaky = with_leakage(4.0), with_leakage(12.0)
    run(tight, 900.0)
    run(leaky, 900.0)
    # The DCS corrects for its design leakage (7 %): more leakage reads low, less reads high.
    assert tight.values()["airheater_exit_gas_temp_c"] > tight.performance()["airheater_exit_gas_temp_c"]
    assert leaky.values()["airheater_exit_gas_temp_c"] < leaky.performance()["airheater_exit_gas_temp_c"] - 1.0
    assert leaky.performance()["fan_power_mw"] > tight.performance()["fan_power_mw"] + 0.5


def test_heat_rate_corrections_follow_the_cited_typical_figures():
    kw = dict(boiler_efficiency_pct=89.0, flow_frac=1.0, gross_mw=600.0, sh_spray_tph=0.0, fan_mw=15.0)
    base = unit_heat_rate(main_steam_c=540.0, reheat_c=540.0, rh_spray_tph=0.0, **kw)
    cold = unit_heat_rate(main_steam_c=530.0, reheat_c=540.0, rh_spray_tph=0.0, **kw)
    rh_cold = unit_heat_rate(main_steam_c=540.0, reheat_c=530.0, rh_spray_tph=0.0, **kw)
    sprayed = unit_heat_rate(main_steam_c=540.0, reheat_c=540.0, rh_spray_tph=18.0, **kw)  # 1 % of main steam
    assert cold.heat_rate_kj_kwh / base.heat_rate_kj_kwh - 1 == pytest.approx(0.0027, rel=0.01)
    assert rh_cold.heat_rate_kj_kwh / base.heat_rate_kj_kwh - 1 == pytest.approx(0.0022, rel=0.01)
    assert sprayed.heat_rate_kj_kwh / base.heat_rate_kj_kwh - 1 == pytest.approx(0.0015, rel=0.01)
    # 8182 kJ/kWh turbine cycle / 0.89 boiler x 600/585 fans
    assert base.heat_rate_kj_kwh == pytest.approx(cycle_heat_rate(1.0) / 0.89 * 600 / 585)


def test_unit_heat_rate_at_full_load_is_plausible():
    unit = ReferenceUnit(steady(600.0, noise=False, disturbances=NO_DISTURBANCES))
    run(unit, 300.0)
    p = unit.performance()
    assert 9200 <= p["heat_rate_kj_kwh"] <= 9800  # about 37-39 % net of fans, subcritical 600 MW
    assert 12.0 <= p["fan_power_mw"] <= 20.0  # fans about 2-3 % of gross
