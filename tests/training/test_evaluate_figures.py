"""`boiler-ai evaluate`'s figures from known traces: the steam-temperature band is counted per second and
judged against the DCS alone run by run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from boiler_ai.evaluate import STEAM_BAND_C, STEAM_SET_POINTS_C, Trace, aggregate

MAIN_SP_C, REHEAT_SP_C = dict(STEAM_SET_POINTS_C).values()


def point(main_c: float, reheat_c: float) -> dict:
    return {"efficiency_pct": 93.0, "heat_rate_kj_kwh": 9400.0, "nox_mg_nm3": 300.0, "o2_pct": 3.5,
            "co_ppm": 20.0, "main_steam_temp_c": main_c, "reheat_steam_temp_c": reheat_c}


def test_seconds_outside_the_steam_band_count_either_temperature():
    trace = Trace(SimpleNamespace(t=0.0))
    trace.observe(point(MAIN_SP_C + STEAM_BAND_C - 0.1, REHEAT_SP_C), 1.0)  # inside
    trace.observe(point(MAIN_SP_C, REHEAT_SP_C - STEAM_BAND_C - 0.5), 2.0)  # hot reheat low
    trace.observe(point(MAIN_SP_C + STEAM_BAND_C + 1.0, REHEAT_SP_C), 3.0)  # main steam high
    figures = trace.figures()
    assert figures["steam_outside_band_s"] == 5.0
    assert figures["steam_dev_c"] == pytest.approx(((4.9 + 0.0) / 2 + (0.0 + 5.5) / 2 * 2 + (6.0 + 0.0) / 2 * 3) / 6)


def test_each_steam_temperature_is_judged_about_the_set_point_the_dcs_holds_it_at():
    from boiler_ai.sim import steam

    # the reference unit's DCS runs hot reheat 2 degC under main steam (margin below its 545 degC limit)
    assert (MAIN_SP_C, REHEAT_SP_C) == (steam.STEAM_TEMP_SP_C, steam.REHEAT_SP_C) == (540.0, 538.0)
    trace = Trace(SimpleNamespace(t=0.0))
    trace.observe(point(MAIN_SP_C, 534.5), 1.0)  # 3.5 under reheat's set point: inside
    trace.observe(point(MAIN_SP_C, 543.5), 2.0)  # 5.5 over it (still under the 545 limit): outside
    assert trace.figures()["steam_outside_band_s"] == 2.0


def run(scenario: str, ai_outside_s: float, dcs_outside_s: float) -> dict:
    side = {"nox_mg_nm3": 300.0, "co_p99_ppm": 20.0, "steam_dev_c": 2.0, "violation_s": {}}
    return {"scenario": scenario, "seed": 9001, "hours": 1.0, "efficiency_gain_pct_pt": 0.2, "heat_rate_gain_pct": 0.3,
            "oracle_headroom_pct_pt": 0.3, "oracle_heat_rate_headroom_pct": 0.4, "ai_time_share": 1.0,
            "guard_blocks": 0, "releases": {}, "dcs_echo_releases": {},
            "ai": {**side, "steam_outside_band_s": ai_outside_s},
            "dcs": {**side, "steam_outside_band_s": dcs_outside_s}}


def test_steam_band_seconds_beyond_the_dcs_are_judged_run_by_run():
    # the AI's 10 s fewer on one run do not pay for its 30 s more on another
    result = aggregate([run("agc_day_24h", 40.0, 10.0), run("coal_switch", 0.0, 10.0)])
    assert result["steam_outside_band_excess_s"] == 30.0
    assert result["per_scenario"]["agc_day_24h"]["steam_outside_band_excess_s"] == 30.0
    assert result["per_scenario"]["coal_switch"]["steam_outside_band_excess_s"] == 0.0
    assert result["dcs_steam_outside_band_s"] == 20.0
    assert result["share_of_headroom"] == pytest.approx(0.75)


def test_the_model_card_shows_the_steam_band_where_the_evaluation_has_it():
    from boiler_ai.promote import evaluation_md

    result = aggregate([run("agc_day_24h", 40.0, 10.0), run("coal_switch", 0.0, 10.0)])
    assert "beyond ±5 °C 30 s more than the DCS (DCS alone 20 s)" in evaluation_md(result)
    older = {k: v for k, v in result.items() if not k.startswith(("steam_outside", "dcs_steam_outside"))}
    assert "steam temperatures" not in evaluation_md(older)


def test_the_dcs_echo_s_steam_band_and_limit_seconds_beyond_the_dcs_alone_are_its_floor_on_the_card():
    from boiler_ai.promote import evaluation_md

    def echoed(r: dict, echo_outside_s: float, echo_over_s: float) -> dict:
        return {**r, "dcs_echo": {**r["dcs"], "steam_outside_band_s": echo_outside_s,
                                  "violation_s": {"reheat_temp_max": echo_over_s}}}

    runs = [echoed(run("agc_day_24h", 40.0, 10.0), 25.0, 3.0), echoed(run("coal_switch", 0.0, 10.0), 4.0, 0.0)]
    result = aggregate(runs)
    assert result["dcs_echo_steam_outside_band_excess_s"] == 15.0  # run by run, as the AI's
    assert result["dcs_echo_excess_violation_s"] == 3.0
    assert result["per_scenario"]["coal_switch"]["dcs_echo_steam_outside_band_excess_s"] == 0.0
    assert ("30 s more than the DCS (DCS alone 20 s; the DCS echoed through the AI path 15 s more than it)"
            in evaluation_md(result))
    # an evaluation whose runs did not keep the echo's figures has none, rather than a partial sum
    assert "dcs_echo_steam_outside_band_excess_s" not in aggregate([runs[0], run("mill_trip", 0.0, 0.0)])


def test_the_model_card_says_when_the_operator_re_enabled_ai():
    from boiler_ai.promote import evaluation_md

    result = aggregate([{**run("mill_trip", 0.0, 0.0), "rearms": 1}])
    assert "re-enables" not in evaluation_md(result)  # an evaluation without the operator
    card = evaluation_md({**result, "rearm_after_min": 15.0})
    assert "| time in AI mode | 100.0% (a simulated operator re-enables AI 15 min after a release: 1 time) |" in card


def test_releases_are_summed_by_reason_and_by_limit_and_shown_on_the_card():
    from boiler_ai.promote import evaluation_md

    a = {**run("coal_switch", 0.0, 0.0), "releases": {"process_limit_exceeded": 2},
         "release_limits": {"co_max": 1, "nox_max": 1}, "dcs_echo_releases": {"critical_input_invalid": 1}}
    b = {**run("mill_trip", 0.0, 0.0), "releases": {"process_limit_exceeded": 1}, "release_limits": {"co_max": 1},
         "dcs_echo_releases": {"process_limit_exceeded": 1}, "dcs_echo_release_limits": {"co_max": 1}}
    result = aggregate([a, b])
    assert result["releases"] == 3 and result["releases_by_limit"] == {"co_max": 2, "nox_max": 1}
    assert result["dcs_faults_by_limit"] == {"co_max": 1}
    card = evaluation_md(result)
    assert ("| releases | process_limit_exceeded x3; process limits co_max x2, nox_max x1 (DCS echo: "
            "critical_input_invalid x1, process_limit_exceeded x1; process limits co_max x1) |") in card
    older = aggregate([run("mill_trip", 0.0, 0.0)])  # runs written before the tally by limit
    assert older["releases_by_limit"] == {} and "| releases | " not in evaluation_md(
        {k: v for k, v in older.items() if k != "releases_by_limit"})
