"""The operating envelope file: loading, strictness, and what it says about the reference unit."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import yaml

from boiler_ai.control.envelope import load_envelope
from boiler_ai.sim.dcs import CO_OVERRIDE_PPM
from boiler_ai.strict import ConfigError


@pytest.fixture(scope="module")
def envelope_path(root):
    return root / "constraints" / "reference_unit.yaml"


@pytest.fixture(scope="module")
def envelope(envelope_path, tag_map):
    return load_envelope(envelope_path, tag_map)


def test_reference_envelope_follows_the_tag_map(envelope, envelope_path, tag_map):
    assert envelope.mv_names == tuple(tag_map.manipulated)
    assert envelope.unit == tag_map.unit
    assert envelope.sha256 == hashlib.sha256(envelope_path.read_bytes()).hexdigest()
    for array in (envelope.lo, envelope.hi, envelope.rate_up, envelope.rate_down, envelope.max_dev, envelope.weights):
        assert array.shape == (15,) and not array.flags.writeable
    assert envelope.condition_signals == tuple(sorted([*(f"mill_{m}_in_service" for m in "abcdef"),
                                                       *(f"{mv}_ai_enable" for mv in tag_map.manipulated)]))
    assert set(envelope.process_signals) == {"o2_economiser_pct", "co_ppm", "nox_mg_nm3", "main_steam_temp_c",
                                             "reheat_steam_temp_c", "airheater_exit_gas_temp_c"}


def test_reference_limits_are_ones_a_plant_engineer_signs(envelope):
    i = {n: k for k, n in enumerate(envelope.mv_names)}
    for level in "abcdef":
        feeder, damper = i[f"feeder_{level}_bias_tph"], i[f"sa_damper_{level}_pct"]
        # A mill out of service gets no bias and its burner level keeps the DCS's cooling air.
        assert envelope.available_when[feeder] == envelope.available_when[damper] == f"mill_{level}_in_service"
        assert envelope.lo[damper] >= 20.0  # burner cooling and flame stability
    o2 = i["o2_setpoint_bias_pct"]
    assert (envelope.lo[o2], envelope.hi[o2], envelope.rate_up[o2]) == (-1.0, 1.0, 0.01)
    balance = next(c for c in envelope.couplings if c.name == "feeder_fuel_balance")
    assert balance.relation == "equal" and balance.basis == "deviation_from_dcs" and balance.limit == 0.0
    assert [balance.coefficients[i[f"feeder_{m}_bias_tph"]] for m in "abcdef"] == [1.0] * 6
    assert not any("spray" in name for name in envelope.mv_names)  # steam temperature stays with the DCS
    limits = {p.name: p for p in envelope.process_limits}
    # fitted sensitivities (training/fit_sensitivities.py): the signs the physics says, intervals around them
    # the O2 trim follows its bias one to one: the interval brackets 1 and stays positive
    assert limits["o2_min"].limit == 2.0 and 0.0 < limits["o2_min"].sensitivity_low[o2] <= 1.0
    assert limits["o2_min"].sensitivity_high[o2] >= 1.0
    assert limits["nox_max"].sensitivity_low[o2] > 0 or limits["nox_max"].sensitivity[o2] > 0  # more air, more NOx
    assert limits["nox_max"].sensitivity_high[i["sofa_damper_2_pct"]] < 0  # staging lowers NOx
    nox_sa_a = limits["nox_max"].sensitivity_low[i["sa_damper_a_pct"]] + limits["nox_max"].sensitivity_high[
        i["sa_damper_a_pct"]]
    assert nox_sa_a > 0  # burner-zone air raises it (the interval's middle; its low end may reach below 0)
    for p in envelope.process_limits:
        assert np.all(p.sensitivity_low <= p.sensitivity_high)
        assert np.all(np.abs(p.sensitivity) == np.maximum(np.abs(p.sensitivity_low), np.abs(p.sensitivity_high)))
        # an averaged limit is supervision only: nothing fitted
        assert p.sensitivity_source.startswith("none" if p.average_s else "python -m training.fit_sensitivities")
        assert p.beyond(p.limit, p.warning) and p.hold_s > 0  # the warning threshold is inside the limit
    assert limits["main_steam_temp_max"].limit == limits["reheat_temp_max"].limit == 545.0
    assert limits["nox_max"].analyser_lag_s >= 20 and limits["co_max"].analyser_lag_s >= 20
    # O2 falls slowly enough that the CO analyser shows a move before 0.05 % more has gone by (the CO knee)
    assert envelope.rate_down[o2] * limits["co_max"].analyser_lag_s <= 0.05 < envelope.rate_up[o2] * 25
    # the AI keeps the minute-averaged CO below where the DCS's CO trim starts adding O2
    assert limits["co_minute_max"].average_s == 60 and limits["co_minute_max"].warning < CO_OVERRIDE_PPM
    assert envelope.budget.limit > 0 and np.all(envelope.budget.weights > 0)


def test_describe_shows_every_limit(envelope):
    text = envelope.describe()
    for name in envelope.mv_names:
        assert name in text
    for row in (*envelope.couplings, *envelope.process_limits):
        assert row.name in text
    assert envelope.sha256 in text and "mill_c_in_service" in text and "co_ppm <= 200 ppm" in text


def test_vector_and_mapping_round_trip(envelope):
    values = {n: float(k) for k, n in enumerate(envelope.mv_names)}
    assert envelope.mapping(envelope.vector(values)) == values
    values.pop("o2_setpoint_bias_pct")
    assert np.isnan(envelope.vector(values)[-1])


def _write_changed(tmp_path, source, change):
    data = yaml.safe_load(source.read_text())
    change(data)
    path = tmp_path / "envelope.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _set(path_keys, value):
    def change(data):
        node = data
        for key in path_keys[:-1]:
            node = node[key]
        node[path_keys[-1]] = value
    return change


def _delete(path_keys):
    def change(data):
        node = data
        for key in path_keys[:-1]:
            node = node[key]
        del node[path_keys[-1]]
    return change


@pytest.mark.parametrize("change, field, words", [
    (_delete(["manipulated", "sa_damper_c_pct", "weight"]), "manipulated.sa_damper_c_pct.weight",
     "required field is missing"),
    (_delete(["guard"]), "guard", "required field is missing"),
    (_delete(["process_limits", "co_max", "sensitivity"]), "process_limits.co_max.sensitivity", "missing"),
    (_set(["manipulated", "sofa_damper_1_pct", "max_rate"], 1.0), "manipulated.sofa_damper_1_pct.max_rate",
     "unknown field"),
    (_set(["solver", "iterations"], 10), "solver.iterations", "unknown field"),
    (_delete(["solver", "iteration_limit"]), "solver.iteration_limit", "required field is missing"),
    (_set(["solver", "time_budget_us"], 500), "solver.time_budget_us", "unknown field"),
    (_delete(["influence_budget"]), "influence_budget", "required field is missing"),
    (_delete(["influence_budget", "weights", "sofa_damper_2_pct"]), "influence_budget.weights",
     "missing: sofa_damper_2_pct"),
    (_set(["influence_budget", "weights", "sh_spray_1_valve_pct"], 0.1),
     "influence_budget.weights.sh_spray_1_valve_pct", "unknown field"),
    (_set(["influence_budget", "limit"], -1.0), "influence_budget.limit", ">= 0.0"),
    (_set(["influence_budget", "cap"], 1.0), "influence_budget.cap", "unknown field"),
    (_delete(["process_limits", "nox_max", "warning"]), "process_limits.nox_max.warning", "required field is missing"),
    (_set(["process_limits", "nox_max", "warning"], 520.0), "process_limits.nox_max.warning", "safe side"),
    (_set(["process_limits", "o2_min", "warning"], 1.5), "process_limits.o2_min.warning", "safe side"),
    (_delete(["process_limits", "co_max", "hold_s"]), "process_limits.co_max.hold_s", "required field is missing"),
    (_set(["process_limits", "co_max", "recover_s"], -5), "process_limits.co_max.recover_s", ">= 0.0"),
    (_delete(["process_limits", "co_max", "analyser_lag_s"]), "process_limits.co_max.analyser_lag_s",
     "required field is missing"),
    (_delete(["process_limits", "co_max", "retreat_off_delay_s"]), "process_limits.co_max.retreat_off_delay_s",
     "required field is missing"),
    (_set(["process_limits", "co_max", "retreat_off_delay_s"], 10), "process_limits.co_max.retreat_off_delay_s",
     "between analyser_lag_s (25) and recover_s (300), got 10"),
    (_set(["process_limits", "o2_min", "retreat_off_delay_s"], 600), "process_limits.o2_min.retreat_off_delay_s",
     "between analyser_lag_s (25) and recover_s (120), got 600"),
    (_set(["process_limits", "nox_max", "warning_action"], "freeze"), "process_limits.nox_max.warning_action",
     "must be one of retreat, hold, got 'freeze'"),
    (_delete(["process_limits", "nox_max", "warning_action"]), "process_limits.nox_max.warning_action",
     "required field is missing"),
    (_delete(["process_limits", "reheat_temp_max", "trend_lookahead_s"]),
     "process_limits.reheat_temp_max.trend_lookahead_s", "required field is missing"),
    (_set(["process_limits", "reheat_temp_max", "trend_lookahead_s"], -1),
     "process_limits.reheat_temp_max.trend_lookahead_s", ">= 0.0"),
    (_delete(["process_limits", "co_minute_max", "average_s"]), "process_limits.co_minute_max.average_s",
     "required field is missing"),
    (_set(["process_limits", "co_minute_max", "average_s"], -60), "process_limits.co_minute_max.average_s",
     ">= 0.0"),
    (_set(["process_limits", "co_minute_max", "trend_lookahead_s"], 30), "process_limits.co_minute_max.average_s",
     "without a trend look-ahead"),
    (_set(["process_limits", "co_minute_max", "sensitivity", "o2_setpoint_bias_pct"], [-80.0, -10.0]),
     "process_limits.co_minute_max.average_s", "no sensitivity rows"),
    (_delete(["process_limits", "co_max", "sensitivity_source"]), "process_limits.co_max.sensitivity_source",
     "required field is missing"),
    (_set(["process_limits", "co_max", "sensitivity", "o2_setpoint_bias_pct"], -60.0),
     "process_limits.co_max.sensitivity.o2_setpoint_bias_pct", "expected [lo, hi]"),
    (_set(["process_limits", "co_max", "sensitivity", "o2_setpoint_bias_pct"], [-10.0, -80.0]),
     "process_limits.co_max.sensitivity.o2_setpoint_bias_pct", "above hi"),
    (_set(["process_limits", "co_max", "hold"], 5), "process_limits.co_max.hold", "unknown field"),
    (_set(["process_limits", "reheat_temp_min", "analyser_lag_s"], 30), "process_limits.reheat_temp_min.analyser_lag_s",
     "one signal, one lag"),
    (lambda data: [_set(["process_limits", name, "analyser_lag_s"], 30)(data)
                   for name in ("main_steam_temp_max", "main_steam_temp_min")],
     "process_limits.main_steam_temp_min.relation", "limited on both sides"),
    (_set(["manipulated", "feeder_a_bias_tph", "available_when"], "mill_g_in_service"),
     "manipulated.feeder_a_bias_tph.available_when", "unknown tag 'mill_g_in_service'"),
    (_set(["manipulated", "feeder_a_bias_tph", "available_when"], "unit_load_mw"),
     "manipulated.feeder_a_bias_tph.available_when", "readable Boolean"),
    (_set(["process_limits", "co_max", "signal"], "co_stack_ppm"), "process_limits.co_max.signal", "unknown tag"),
    (_set(["process_limits", "co_max", "sensitivity", "sofa_damper_3_pct"], [1.0, 2.0]),
     "process_limits.co_max.sensitivity.sofa_damper_3_pct", "not a manipulated variable"),
    (_set(["couplings", "feeder_fuel_balance", "relation"], "="), "couplings.feeder_fuel_balance.relation",
     "must be one of"),
    (_set(["couplings", "sofa_level_order", "terms"], {"sofa_damper_1_pct": 0}), "couplings.sofa_level_order.terms",
     "non-zero"),
    (_set(["manipulated", "o2_setpoint_bias_pct", "min"], -3.0), "manipulated.o2_setpoint_bias_pct.min",
     ">= -2.0"),
    (_set(["manipulated", "o2_setpoint_bias_pct", "max"], -1.5), "manipulated.o2_setpoint_bias_pct.max",
     "below min"),
    (_set(["manipulated", "sofa_damper_2_pct", "rate_up_per_s"], "fast"),
     "manipulated.sofa_damper_2_pct.rate_up_per_s", "finite number"),
    (_set(["manipulated", "sofa_damper_2_pct", "weight"], 0), "manipulated.sofa_damper_2_pct.weight", "above 0"),
    (_set(["guard", "tolerance"], 0.5), "guard.tolerance", "<= 0.001"),
    (_delete(["manipulated", "o2_setpoint_bias_pct"]), "manipulated", "missing: o2_setpoint_bias_pct"),
    (_set(["manipulated", "sh_spray_1_valve_pct"], {}), "manipulated", "not in the tag map: sh_spray_1_valve_pct"),
    (_set(["manipulated", "sofa_damper_3_pct"], {}), "manipulated", "not in the tag map: sofa_damper_3_pct"),
    (_set(["unit"], "unit_2"), "unit", "not the tag map's unit"),
])
def test_file_errors_name_the_field(tmp_path, envelope_path, tag_map, change, field, words):
    path = _write_changed(tmp_path, envelope_path, change)
    with pytest.raises(ConfigError) as err:
        load_envelope(path, tag_map)
    assert err.value.field == field
    assert str(path) in str(err.value) and words in str(err.value)


def test_unreadable_or_broken_file_names_the_file(tmp_path, tag_map):
    with pytest.raises(ConfigError, match="cannot read file"):
        load_envelope(tmp_path / "absent.yaml", tag_map)
    broken = tmp_path / "broken.yaml"
    broken.write_text("unit: [reference_unit\n")
    with pytest.raises(ConfigError, match="broken.yaml.*not valid YAML"):
        load_envelope(broken, tag_map)
