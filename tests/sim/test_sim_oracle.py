"""The steady-state oracle: the best efficiency the MVs can reach inside the envelope."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from boiler_ai.sim.coal import COALS, DESIGN_COAL
from boiler_ai.sim.dcs import I_FEEDER, I_O2, I_SA, I_SOFA, MV_NAMES
from boiler_ai.sim.oracle import OracleLimits, default_limits, main, solve, steady_signal, violations
from boiler_ai.sim.steady import OperatingPoint
from boiler_ai.sim.unit import PROCESS_LIMITS


@pytest.fixture(scope="module")
def limits() -> OracleLimits:
    return default_limits()


def budget_used(limits: OracleLimits, u, dcs) -> float:
    """The influence budget's sum, exactly (the oracle smooths it)."""
    return sum(w * abs(a - b) for w, a, b in zip(limits.budget_weights, u, dcs))


def check_inside(limits: OracleLimits, op: OperatingPoint, best) -> None:
    """An independent reading of the result against every limit the oracle was given."""
    u = best.mvs
    dcs = op.dcs_mvs(best.feeders_tph)
    for i, name in enumerate(MV_NAMES[:15]):
        assert limits.lo[i] - 1e-6 <= u[i] <= limits.hi[i] + 1e-6 or u[i] == dcs[i], name
        assert abs(u[i] - dcs[i]) <= limits.max_dev[i] + 1e-4, name
    for c in limits.couplings:
        x = u if c.basis == "setpoint" else [a - b for a, b in zip(u, dcs)]
        value = sum(k * v for k, v in zip(c.coefficients, x))
        if c.relation == "equal":
            assert value == pytest.approx(c.limit, abs=1e-4)
        elif c.relation == "at_most":
            assert value <= c.limit + 1e-4
        else:
            assert value >= c.limit - 1e-4
    if math.isfinite(limits.budget_limit):
        assert budget_used(limits, u, dcs) <= limits.budget_limit + 1e-4
    assert violations(best, limits, tol=1e-3) == []


def test_limits_come_from_the_envelope_file(limits):
    assert limits.source.endswith("constraints/reference_unit.yaml")
    names = {p[1] for p in limits.process}
    assert {"o2_economiser_pct", "co_ppm", "nox_mg_nm3", "main_steam_temp_c", "reheat_steam_temp_c"} <= names
    # The unit's own process limits say the same as the envelope's.
    for name, signal, relation, limit in limits.process:
        if name in PROCESS_LIMITS:
            assert PROCESS_LIMITS[name] == (signal, relation, limit)


@pytest.mark.parametrize("load, coal", [(600.0, "design_bituminous"), (420.0, "design_bituminous"),
                                        (330.0, "low_volatile_lean"), (540.0, "high_moisture_blend")])
def test_oracle_beats_the_dcs_inside_every_limit(limits, load, coal):
    op = OperatingPoint(load, COALS[coal])
    res = solve(op, limits)
    assert res.feasible_baseline and res.violations_baseline == []
    # Never worse than the DCS (its own setting is feasible); the size is reported, not pinned.
    assert res.heat_rate_headroom_pct >= 0.0
    assert res.best.heat_rate_kj_kwh <= res.baseline.heat_rate_kj_kwh
    check_inside(limits, op, res.best)
    # Idle levels and out-of-service feeders keep the DCS's values.
    for i in range(6):
        if not op.in_service[i]:
            assert res.best.mvs[I_FEEDER + i] == 0.0 and res.best.mvs[I_SA + i] == res.baseline.mvs[I_SA + i]


def test_the_influence_budget_binds_the_oracle_as_it_binds_the_ai(limits):
    """The envelope's influence budget is one of its limits: headroom beyond it is headroom no controller
    may take. At full load the oracle spends the whole budget, and without it would claim more."""
    assert limits.budget_limit == 2.0 and max(limits.budget_weights) == 1.0  # the O2 bias, per % O2
    op = OperatingPoint(600.0, DESIGN_COAL)
    res = solve(op, limits)
    dcs = op.dcs_mvs(res.best.feeders_tph)
    assert budget_used(limits, res.best.mvs, dcs) == pytest.approx(limits.budget_limit, abs=0.05)
    unbounded = solve(op, dataclasses.replace(limits, budget_limit=math.inf))
    assert unbounded.heat_rate_headroom_pct > res.heat_rate_headroom_pct + 0.05


def test_the_oracle_finds_headroom_at_every_point_of_a_night(limits):
    """Near the budget's curved limit SLSQP can stop a hair outside it after its iterations; the oracle
    then steps back toward the DCS's setting rather than report no headroom (it did, at one point in three
    of the standard day)."""
    from boiler_ai.sim.oracle import scenario_headroom
    from boiler_ai.sim.scenario import named_scenario

    report = scenario_headroom(named_scenario("low_load_night", 0), 0, sample_s=7200.0, limits=limits)
    assert len(report.points) == 4
    assert min(p["heat_rate_headroom_pct"] for p in report.points) > 0.3


def test_the_evaluation_s_dcs_run_samples_the_same_points_as_the_oracle_s_own_run(limits):
    """The evaluation hands the oracle the operating points of the DCS-only run it makes anyway, instead of
    simulating that run a second time: the headroom must be the same as from the oracle's own run."""
    from boiler_ai.evaluate import Trace
    from boiler_ai.sim.oracle import OperatingPointSampler, scenario_headroom
    from boiler_ai.sim.scenario import named_scenario
    from boiler_ai.sim.unit import ReferenceUnit

    scenario = dataclasses.replace(named_scenario("coal_switch", 9004), duration_s=1800.0)
    dcs = Trace(ReferenceUnit(scenario, seed=9004), OperatingPointSampler(900.0))
    while dcs.t < scenario.duration_s:
        dcs.step(1.0)
    ridden = scenario_headroom(scenario, 9004, 900.0, limits, sampler=dcs.sampler)
    own = scenario_headroom(scenario, 9004, 900.0, limits)
    assert [p["t_s"] for p in ridden.points] == [450.0, 1350.0]
    assert ridden.summary() == own.summary()


def test_no_random_setting_inside_the_envelope_beats_the_oracle(limits):
    """An independent search: settings drawn inside every limit (the budget spent in full or in part)
    never save more heat rate than the oracle's solution."""
    from boiler_ai.sim.oracle import _residuals

    op = OperatingPoint(450.0, DESIGN_COAL)
    res = solve(op, limits)
    dcs, hr0 = res.baseline.mvs, res.baseline.heat_rate_kj_kwh
    serving = [i for i in range(6) if op.in_service[i]]
    feeders = [I_FEEDER + i for i in serving]
    moved = feeders + [I_SA + i for i in serving] + [I_SOFA, I_SOFA + 1, I_O2]
    band = np.array([limits.max_dev[i] for i in moved])
    weights = np.array([limits.budget_weights[i] for i in moved])
    rng = np.random.default_rng(7)
    best, feasible = -math.inf, 0
    for _ in range(400):
        d = np.clip(rng.normal(0.0, 0.5, len(moved)), -1.0, 1.0) * band
        d[:len(feeders)] -= d[:len(feeders)].mean()  # the feeders' fuel balance
        d *= min(1.0, rng.uniform(0.3, 1.0) * limits.budget_limit / float(weights @ np.abs(d)))
        u = list(dcs)
        for i, x in zip(moved, d):
            u[i] += float(x)
        sp = op.evaluate(u)
        if min(_residuals(sp, op.dcs_mvs(sp.feeders_tph), limits, [I_SA + i for i in serving])) >= -1e-4:
            feasible += 1
            best = max(best, 100.0 * (1.0 - sp.heat_rate_kj_kwh / hr0))
    assert feasible > 100
    assert best <= res.heat_rate_headroom_pct + 1e-3


def test_default_limits_without_an_envelope_file():
    op = OperatingPoint(600.0, DESIGN_COAL)
    lim = OracleLimits.default()
    res = solve(op, lim)
    check_inside(lim, op, res.best)
    assert res.best.mvs[I_O2] >= -1.2 - 1e-6  # the DCS clamp on the O2 bias
    assert res.heat_rate_headroom_pct >= 0.0


def test_steady_signals_for_process_limits():
    sp = OperatingPoint(600.0, DESIGN_COAL).evaluate()
    assert steady_signal(sp, "o2_economiser_pct") == sp.fire.o2_pct
    assert steady_signal(sp, "main_steam_temp_c") == sp.main_steam_c


def test_cli_prints_the_headroom_json_last(capsys):
    assert main(["--scenario", "demo", "--sample-min", "20", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["scenario"] == "demo" and summary["points"] == 2 and summary["objective"] == "heat_rate"
    assert summary["mean_heat_rate_headroom_pct"] >= 0.0 and "mean_headroom_pct" in summary


def test_objectives_report_both_figures():
    op = OperatingPoint(600.0, DESIGN_COAL)
    lim = default_limits()
    by_hr, by_eff = solve(op, lim, "heat_rate"), solve(op, lim, "efficiency")
    # Each is at least as good as the other on its own objective (within the solver's tolerance).
    assert by_hr.best.heat_rate_kj_kwh <= by_eff.best.heat_rate_kj_kwh + 0.5
    assert by_eff.best.efficiency_pct >= by_hr.best.efficiency_pct - 0.01
    with pytest.raises(ValueError, match="objective"):
        solve(op, lim, "profit")


def test_one_group_alone_moves_only_its_mvs():
    op = OperatingPoint(600.0, DESIGN_COAL)
    res = solve(op, default_limits(), groups=("o2_bias",))
    assert res.best.mvs[:I_O2] == res.baseline.mvs[:I_O2]
    assert res.best.mvs[I_O2] < 0.0  # the DCS runs conservative O2


def test_mvs_the_envelope_does_not_list_stay_at_the_dcs(limits):
    from dataclasses import replace

    no_o2 = replace(limits, max_dev=tuple(0.0 if i == I_O2 else d for i, d in enumerate(limits.max_dev)))
    res = solve(OperatingPoint(600.0, DESIGN_COAL), no_o2)
    assert res.best.mvs[I_O2] == 0.0
