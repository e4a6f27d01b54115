"""Process-limit supervision on measured values: warning band -> retreat (with an off-delay, and early on
a slow signal's trend), hard limit for hold_s -> release naming the limit, recovery time before
re-engaging, lagging analysers judged on measured plus predicted values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from boiler_ai.control.envelope import Retreat, load_envelope
from boiler_ai.control.supervision import Supervisor, limit_named
from boiler_ai.messages import EventType, Reason
from boiler_ai.tagmap import load_tag_map

ROOT = Path(__file__).resolve().parents[2]
ENV = load_envelope(ROOT / "constraints" / "reference_unit.yaml", load_tag_map(ROOT / "opc" / "reference_unit.yaml"))
LIMITS = {p.name: p for p in ENV.process_limits}
NOX = LIMITS["nox_max"]
O2_MIN = LIMITS["o2_min"]
STEAM_MAX = LIMITS["main_steam_temp_max"]
NORMAL = {"o2_economiser_pct": 3.5, "co_ppm": 20.0, "nox_mg_nm3": 300.0, "main_steam_temp_c": 540.0,
          "reheat_steam_temp_c": 538.0, "airheater_exit_gas_temp_c": 130.0}
DCS = [0.0] * 6 + [60.0] * 5 + [15.0] + [40.0, 40.0, 0.0]
I_O2 = ENV.mv_names.index("o2_setpoint_bias_pct")
QUIET = {name: 0.0 for name in ENV.retreat_while.signals}  # no mill starting or stopping


def reasons(verdict, kind=None):
    return [e.reason for e in verdict.events if kind is None or e.type is kind]


def test_normal_values_raise_nothing():
    sup = Supervisor(ENV, 1.0)
    for active in (True, False):
        verdict = sup.update(NORMAL, DCS, DCS, active, QUIET)
        assert verdict.retreat is Retreat.NONE and verdict.events == ()


def test_warning_band_retreats_and_the_hard_limit_releases_after_its_hold():
    sup = Supervisor(ENV, 1.0)
    in_band = dict(NORMAL, nox_mg_nm3=(NOX.warning + NOX.limit) / 2)
    verdict = sup.update(in_band, DCS, DCS, True, QUIET)
    assert verdict.retreat is Retreat.TOWARD_DCS and reasons(verdict) == [Reason.PROCESS_LIMIT_WARNING]
    assert "nox_max" in verdict.events[0].detail
    over = dict(NORMAL, nox_mg_nm3=NOX.limit + 30.0)
    for _ in range(int(NOX.hold_s) - 1):
        verdict = sup.update(over, DCS, DCS, True, QUIET)
        assert verdict.retreat is Retreat.TOWARD_DCS and Reason.PROCESS_LIMIT_EXCEEDED not in reasons(verdict)
    verdict = sup.update(over, DCS, DCS, True, QUIET)
    assert reasons(verdict, EventType.IMMEDIATE_DISABLE) == [Reason.PROCESS_LIMIT_EXCEEDED]
    assert verdict.retreat is Retreat.NONE
    detail = verdict.events[-1].detail
    assert detail.startswith("nox_max: nox_mg_nm3 530") and f"for {NOX.hold_s:g} s" in detail
    # a dip back under the hard limit restarts the hold
    sup.update(in_band, DCS, DCS, True, QUIET)
    assert Reason.PROCESS_LIMIT_EXCEEDED not in reasons(sup.update(over, DCS, DCS, True, QUIET))


def test_lower_limits_work_the_same_way():
    sup = Supervisor(ENV, 1.0)
    low = dict(NORMAL, o2_economiser_pct=O2_MIN.limit - 0.2)
    verdicts = [sup.update(low, DCS, DCS, True, QUIET) for _ in range(int(O2_MIN.hold_s))]
    assert all(v.retreat is Retreat.TOWARD_DCS for v in verdicts[:-1])
    assert "o2_min: o2_economiser_pct 1.8" in verdicts[-1].events[-1].detail


def test_the_retreat_holds_for_its_off_delay_after_the_value_is_back_inside():
    """NOx lags 25 s: were the retreat to end the cycle NOx reads inside again, a policy could push straight
    back and saw-tooth across the band with the true value over the limit. The setpoints stand still
    meanwhile."""
    sup = Supervisor(ENV, 1.0)
    assert NOX.retreat_off_delay_s >= NOX.analyser_lag_s > 0
    verdict = sup.update(dict(NORMAL, nox_mg_nm3=NOX.warning + 5.0), DCS, DCS, True, QUIET)
    assert verdict.retreat is Retreat.TOWARD_DCS
    for second in range(1, int(NOX.retreat_off_delay_s)):
        verdict = sup.update(NORMAL, DCS, DCS, True, QUIET)
        assert verdict.retreat is Retreat.HOLD and reasons(verdict) == [Reason.PROCESS_LIMIT_WARNING], second
        assert f"back inside its warning threshold {NOX.warning:g} mg/Nm3 for {second:g} of" in verdict.events[0].detail
        if second == 10:  # another value beyond its threshold meanwhile: move back, not hold
            moving = Supervisor(ENV, 1.0)
            moving.restore(sup.state())
            both = moving.update(dict(NORMAL, co_ppm=LIMITS["co_max"].warning + 1.0), DCS, DCS, True, QUIET)
            assert both.retreat is Retreat.TOWARD_DCS
    verdict = sup.update(NORMAL, DCS, DCS, True, QUIET)
    assert verdict.retreat is Retreat.NONE and verdict.events == ()


def test_a_slow_signal_warns_on_where_its_trend_leads():
    """Main steam read through a 20 s thermocouple, rising 2.5 degC over the look-ahead: 1 degC below the
    warning threshold as read, beyond it where the trend leads; a steady value at the same reading raises
    nothing, and the trend never releases (the hard limit is judged on the value as read)."""
    sup = Supervisor(ENV, 1.0)
    lookahead = int(STEAM_MAX.trend_lookahead_s)
    assert lookahead > 0
    rising = [STEAM_MAX.warning - 3.5 + 2.5 * k / lookahead for k in range(lookahead + 1)]
    for value in rising:
        verdict = sup.update(dict(NORMAL, main_steam_temp_c=value), DCS, DCS, True, QUIET)
    assert rising[-1] < STEAM_MAX.warning and verdict.retreat is Retreat.HOLD
    assert f"main_steam_temp_c {2 * rising[-1] - rising[0]:.4g} (measured {rising[-1]:.4g}, trend" in \
        verdict.events[0].detail
    steady = Supervisor(ENV, 1.0)
    for _ in range(lookahead + 1):
        verdict = steady.update(dict(NORMAL, main_steam_temp_c=rising[-1]), DCS, DCS, True, QUIET)
    assert verdict.retreat is Retreat.NONE and verdict.events == ()
    steep = Supervisor(ENV, 1.0)  # the trend far beyond the hard limit, the reading inside it
    for k in range(lookahead + 30):
        verdict = steep.update(dict(NORMAL, main_steam_temp_c=min(540.0 + 0.2 * k, STEAM_MAX.limit - 0.5)), DCS,
                               DCS, True, QUIET)
        assert Reason.PROCESS_LIMIT_EXCEEDED not in reasons(verdict)
    # a gap in the signal starts the trend afresh
    steep.update(dict(NORMAL, main_steam_temp_c=float("nan")), DCS, DCS, True, QUIET)
    assert steep.measured["main_steam_temp_c"] == []


def test_an_averaged_limit_judges_the_mean_over_its_window():
    """CO averaged over a minute, as the DCS's CO trim sees it: a few spikes mean nothing; a CO that
    stands at 50 ppm (a third of the instantaneous warning) warns once the minute's mean crosses 45 ppm;
    a mean over the hard limit for its hold releases, naming the averaged limit."""
    minute = LIMITS["co_minute_max"]
    window = int(minute.average_s)
    sup = Supervisor(ENV, 1.0)
    for k in range(window):
        verdict = sup.update(dict(NORMAL, co_ppm=140.0 if k % 20 == 10 else 20.0), DCS, DCS, True, QUIET)
        assert verdict.retreat is Retreat.NONE and verdict.events == ()
    standing = [sup.update(dict(NORMAL, co_ppm=50.0), DCS, DCS, True, QUIET) for _ in range(window)]
    first = next(i for i, v in enumerate(standing) if v.retreat is Retreat.TOWARD_DCS)
    assert 0.75 * window < first < window  # when the minute's mean passes the warning, not at the first reading
    detail = standing[first].events[0].detail
    assert detail.startswith("co_minute_max: co_ppm") and "(60 s average) beyond its warning threshold 45" in detail
    assert all(not any(e.detail.startswith("co_max") for e in v.events) for v in standing)
    # CO over 200 ppm four seconds in every five: never long enough for co_max's hold as read, but the
    # minute's mean stands at 270 ppm
    over = [sup.update(dict(NORMAL, co_ppm=290.0 if k % 5 else 190.0), DCS, DCS, True, QUIET)
            for k in range(window + int(minute.hold_s))]
    released = [v for v in over if Reason.PROCESS_LIMIT_EXCEEDED in reasons(v)]
    assert released and released[0].events[-1].detail.startswith("co_minute_max: co_ppm")
    assert not any(e.detail.startswith("co_max") for v in over for e in v.events
                   if e.type is EventType.IMMEDIATE_DISABLE)
    assert f"(hold {minute.hold_s:g} s)" in released[0].events[-1].detail
    # a gap in the signal starts the average afresh
    sup.update(dict(NORMAL, co_ppm=float("nan")), DCS, DCS, True, QUIET)
    assert sup.measured["co_ppm"] == []


def _released_on(sup, co_trace) -> list[tuple[int, str]]:
    """(second, limit) of every release while CO follows the trace, everything else normal."""
    out = []
    for k, co in enumerate(co_trace):
        verdict = sup.update(dict(NORMAL, co_ppm=float(co)), DCS, DCS, True, QUIET)
        out += [(k, limit_named(e.detail)) for e in verdict.events if e.type is EventType.IMMEDIATE_DISABLE]
    return out


def test_a_co_pocket_passing_the_analyser_is_ridden_through_a_co_that_stands_is_not():
    """A pocket as the simulated unit makes one (boiler_ai.sim.unit: a jump decaying over CO_SPIKE_TAU_S,
    read through the analyser's GAS_ANALYSER_TAU_S lag) reads over 200 ppm for 13 s with the unit's true
    CO at its usual tens: no release, only the warning's retreat. CO standing at 230 ppm is released by
    co_max at its hold, before the minute's mean reaches the limit; a mill-stop rise to 790 ppm (the one
    the envelope's retreat_while notes) by the minute's mean, sooner than co_max's hold would."""
    from boiler_ai.sim.unit import CO_SPIKE_TAU_S, GAS_ANALYSER_TAU_S

    co_max, minute = LIMITS["co_max"], LIMITS["co_minute_max"]
    raw = 20.0 + 480.0 * np.exp(-np.arange(200) / CO_SPIKE_TAU_S)
    read = np.empty_like(raw)
    read[0] = 20.0
    for k in range(1, len(raw)):
        read[k] = read[k - 1] + (raw[k] - read[k - 1]) * (1.0 - np.exp(-1.0 / GAS_ANALYSER_TAU_S))
    over = int(np.sum(read > co_max.limit))
    assert 10 <= over < co_max.hold_s
    sup = Supervisor(ENV, 1.0)
    pocket = np.concatenate([np.full(60, 20.0), read, np.full(60, 20.0)])
    assert _released_on(sup, pocket) == []
    standing = np.concatenate([np.full(60, 20.0), np.full(120, 230.0)])
    first = _released_on(Supervisor(ENV, 1.0), standing)[0]
    assert first == (60 + int(co_max.hold_s) - 1, "co_max")
    rise = np.concatenate([np.full(60, 40.0), np.linspace(40.0, 790.0, 25), np.full(100, 790.0)])
    second, limit = _released_on(Supervisor(ENV, 1.0), rise)[0]
    crossed = int(np.argmax(rise > co_max.limit))
    assert limit == "co_minute_max" and second < crossed + co_max.hold_s - 1 and second - 60 <= 35
    assert minute.hold_s < co_max.hold_s


def test_steam_over_temperature_holds_and_leaves_the_cooling_to_the_dcs_sprays():
    """Sprays can cool, not heat: beyond the over-temperature warning the AI setpoints stand still (undoing a
    lowered O2 at once would add heat); beyond the under-temperature warning they retreat."""
    assert STEAM_MAX.warning_action is Retreat.HOLD
    assert LIMITS["main_steam_temp_min"].warning_action is Retreat.TOWARD_DCS
    hot = Supervisor(ENV, 1.0).update(dict(NORMAL, main_steam_temp_c=STEAM_MAX.warning + 0.5), DCS, DCS, True, QUIET)
    assert hot.retreat is Retreat.HOLD and reasons(hot) == [Reason.PROCESS_LIMIT_WARNING]
    cold_limit = LIMITS["main_steam_temp_min"]
    cold = Supervisor(ENV, 1.0).update(dict(NORMAL, main_steam_temp_c=cold_limit.warning - 0.5), DCS, DCS, True,
                                       QUIET)
    assert cold.retreat is Retreat.TOWARD_DCS
    # a hold does not excuse the hard limit: over it for hold_s releases as for any limit
    sup = Supervisor(ENV, 1.0)
    for _ in range(int(STEAM_MAX.hold_s)):
        verdict = sup.update(dict(NORMAL, main_steam_temp_c=STEAM_MAX.limit + 0.5), DCS, DCS, True, QUIET)
    assert reasons(verdict, EventType.IMMEDIATE_DISABLE) == [Reason.PROCESS_LIMIT_EXCEEDED]
    assert verdict.retreat is Retreat.NONE


def test_reengaging_waits_until_the_value_has_been_inside_its_band_for_recover_s():
    sup = Supervisor(ENV, 1.0)
    sup.update(dict(NORMAL, nox_mg_nm3=NOX.limit + 10.0), DCS, DCS, False, QUIET)
    for second in range(int(NOX.recover_s) - 1):
        verdict = sup.update(NORMAL, DCS, DCS, False, QUIET)
        assert reasons(verdict, EventType.NO_ENTRY) == [Reason.PROCESS_LIMIT_RECOVERING], second
        assert f"nox_max: nox_mg_nm3 inside its warning threshold {NOX.warning:g}" in verdict.events[0].detail
    assert sup.update(NORMAL, DCS, DCS, False, QUIET).events == ()


def test_a_lagging_analyser_is_judged_on_measured_plus_predicted():
    """The AI raised its O2 bias over the last seconds; NOx as measured has not moved yet (analyser
    lag), but the prediction puts it in the warning band: retreat now, not when the analyser shows it."""
    sup = Supervisor(ENV, 1.0)
    s_o2 = NOX.sensitivity[I_O2]
    assert s_o2 > 0 and NOX.analyser_lag_s >= 20
    measured = dict(NORMAL, nox_mg_nm3=NOX.warning - 0.1 * s_o2)  # 0.1 % O2 bias away from the band
    u = list(DCS)
    for k in range(int(NOX.analyser_lag_s)):
        u[I_O2] = 0.005 * k  # the AI's O2 bias ramps up
        verdict = sup.update(measured, u, DCS, True, QUIET)
    assert verdict.retreat is Retreat.TOWARD_DCS and "predicted" in verdict.events[0].detail
    assert verdict.judged["nox_mg_nm3"] > NOX.warning > measured["nox_mg_nm3"]  # the projector starts from it
    # The same measured value with no recent AI move is fine: it is the move that counts.
    assert Supervisor(ENV, 1.0).update(measured, u, DCS, True, QUIET).retreat is Retreat.NONE
    # Moves that lower NOx are not credited: the measured value stands.
    down = Supervisor(ENV, 1.0)
    for k in range(30):
        verdict = down.update(dict(NORMAL, nox_mg_nm3=NOX.warning + 5.0), [*DCS[:I_O2], 0.3 - 0.01 * k], DCS, True,
                              QUIET)
    assert verdict.retreat is Retreat.TOWARD_DCS and "predicted" not in verdict.events[0].detail
    assert verdict.judged["nox_mg_nm3"] == NOX.warning + 5.0


def test_state_resumes_exactly_through_json():
    first, second = Supervisor(ENV, 1.0), Supervisor(ENV, 1.0)
    rng = np.random.default_rng(4)
    values = [dict(NORMAL, nox_mg_nm3=float(v), main_steam_temp_c=float(t), co_ppm=float(c))
              for v, t, c in zip(rng.uniform(400, 520, 40), rng.uniform(538, 546, 40), rng.uniform(20, 140, 40))]
    offsets = [[*DCS[:I_O2], float(o)] for o in rng.uniform(-0.3, 0.3, 40)]
    for v, u in zip(values[:20], offsets[:20]):
        first.update(v, u, DCS, True, QUIET)
    second.restore(json.loads(json.dumps(first.state())))
    for v, u in zip(values[20:], offsets[20:]):
        assert first.update(v, u, DCS, True, QUIET) == second.update(v, u, DCS, True, QUIET)


def test_a_mill_sequence_retreats_while_it_runs_and_until_it_settles():
    """A mill start or stop moves combustion faster than the CO analyser shows it: retreat, whatever the values."""
    sup = Supervisor(ENV, 1.0)
    settle = ENV.retreat_while.settle_s
    assert settle > 0 and "mill_e_sequence_active" in ENV.retreat_while.signals
    stopping = dict(QUIET, mill_e_sequence_active=1.0)
    for _ in range(30):
        verdict = sup.update(NORMAL, DCS, DCS, True, stopping)
        assert verdict.retreat is Retreat.TOWARD_DCS and reasons(verdict) == [Reason.PLANT_TRANSIENT]
        assert verdict.events[0].detail == "mill_e_sequence_active" and verdict.events[0].type is EventType.SOFT_DISABLE
    for k in range(int(settle) - 1):  # sequence over: still settling
        verdict = sup.update(NORMAL, DCS, DCS, True, QUIET)
        assert verdict.retreat is Retreat.TOWARD_DCS and "settling" in verdict.events[0].detail
    assert sup.update(NORMAL, DCS, DCS, True, QUIET).retreat is Retreat.NONE
    # an unreadable sequence flag counts as a sequence running; out of AI mode nothing is raised
    unreadable = dict(QUIET, mill_a_sequence_active=float("nan"))
    assert sup.update(NORMAL, DCS, DCS, True, unreadable).retreat is Retreat.TOWARD_DCS
    assert sup.update(NORMAL, DCS, DCS, False, stopping).events == ()


def test_a_mill_trip_retreats_from_the_moment_its_mill_falls_out_of_service():
    """A trip runs no sequence: the fall of a mill's in-service status starts the settling at once; a mill
    coming into service, or out of service all along, does not; after an unreadable status the fall is judged
    against the last status read."""
    settle = ENV.retreat_while.settle_s
    assert "mill_c_in_service" in ENV.retreat_while.trips
    running = {**QUIET, **{s: 1.0 for s in ENV.retreat_while.trips}, "mill_f_in_service": 0.0}
    sup = Supervisor(ENV, 1.0)
    for _ in range(5):
        assert sup.update(NORMAL, DCS, DCS, True, running).retreat is Retreat.NONE
    assert sup.update(NORMAL, DCS, DCS, True, dict(running, mill_f_in_service=1.0)).retreat is Retreat.NONE
    tripped = dict(running, mill_f_in_service=1.0, mill_c_in_service=0.0)
    resumed = Supervisor(ENV, 1.0)  # the statuses seen are controller state: a replay judges the same fall
    resumed.restore(json.loads(json.dumps(sup.state())))
    verdict = sup.update(NORMAL, DCS, DCS, True, tripped)
    assert resumed.update(NORMAL, DCS, DCS, True, tripped) == verdict
    assert verdict.retreat is Retreat.TOWARD_DCS and reasons(verdict) == [Reason.PLANT_TRANSIENT]
    assert verdict.events[0].detail == "mill_c_in_service fell"
    for _ in range(int(settle) - 1):
        assert "settling" in sup.update(NORMAL, DCS, DCS, True, tripped).events[0].detail
    assert sup.update(NORMAL, DCS, DCS, True, tripped).retreat is Retreat.NONE
    # unreadable for a cycle, then out of service: a fall from the last status read
    fresh = Supervisor(ENV, 1.0)
    fresh.update(NORMAL, DCS, DCS, True, running)
    fresh.update(NORMAL, DCS, DCS, True, dict(running, mill_a_in_service=float("nan")))
    assert fresh.update(NORMAL, DCS, DCS, True, dict(running, mill_a_in_service=0.0)).retreat is Retreat.TOWARD_DCS
    # a daemon that starts with a mill already out has seen no fall
    assert Supervisor(ENV, 1.0).update(NORMAL, DCS, DCS, True, tripped).retreat is Retreat.NONE
