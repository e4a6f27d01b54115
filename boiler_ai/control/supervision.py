"""Process-limit supervision on measured values (docs/ARCHITECTURE.md): the local layer vetoes on what it
measures, not only on what its linear model predicts.

Each process limit of the envelope has a hard limit and a warning threshold on its safe side. Every
cycle, per limit, the value judged is the worse of
  measured    the signal as read now, and
  predicted   measured + S (offset now - offset analyser_lag_s ago), with offset = AI setpoint - DCS
              setpoint and S the conservative end of the fitted interval: the effect of the AI's own
              recent moves that a lagging analyser (NOx, CO: 20-30 s) has not shown yet.
The judged values are also what the projector's linearised rows and the guard start from, so moves
made within an analyser's lag add up instead of each being judged against the same stale reading.
For the warning alone, the value judged may also be where the measured trend leads:
  trend       measured + (measured now - measured trend_lookahead_s ago), where that is worse: a steam
              temperature behind a 20 s thermocouple and the superheater's heat capacity is still rising
              when it first reads beyond the threshold. The hard limit stays on measured and predicted.
A limit with average_s judges instead the mean of the values read over that window (CO over a minute, as
the DCS's CO trim judges it): spikes that mean nothing to combustion do not count, a CO that stands does.
Then:
  beyond the warning threshold   while the AI is active: retreat (the projector moves every AI setpoint
                                 toward the DCS's at its rate limits, ignoring the policy), or, for a
                                 limit whose warning_action is hold, stand still and leave the value to
                                 the DCS's own loop (steam temperature: its sprays); then, once
                                 the value is back inside, hold the setpoints for retreat_off_delay_s
                                 (an alarm off-delay): the policy cannot push straight back across the
                                 band while the analyser still shows its last push, and the retreat
                                 stops where the value recovered instead of undoing every AI move (on
                                 a slow steam-temperature loop, undoing them all is a disturbance of
                                 its own, the other way)
  beyond the hard limit          for hold_s while active: release, reason process_limit_exceeded, naming
                                 the limit
  not inside the warning band    for recover_s (since it was last beyond): no entry, reason
                                 process_limit_recovering; the operator's AI_ENABLE is needed as always
And independently of any value: while a plant transient of the envelope's `retreat_while` runs (a mill
start or stop sequence; an unreadable signal counts as running) and for its settle_s after, retreat,
reason plant_transient. A mill change moves combustion faster than a 25 s CO analyser shows it: measured
CO alone would see the spike only once it is there. A mill that trips runs no sequence: the fall of one of
`retreat_while.trips` (a mill's in-service status) starts the settling at once, so a lowered O2 goes back
while the trip's fuel loss still cools the steam, not a minute later, when the reserve mill's start
would add its air to the DCS's own recovery overshoot.

Pure: values and the cycle period are handed in; the state (offset and trend history, timers) is plain
data for the decision record's controller state, so a replay resumes it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from boiler_ai.control.envelope import Envelope, Retreat
from boiler_ai.messages import Event, EventType, Reason


def limit_named(detail: str) -> str:
    """The process limit a warning or release event of this module is about: its detail starts with the
    limit's name ("co_max: co_ppm 235 ppm beyond its limit 200 ..."), the one format written below."""
    return detail.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Supervision:
    """This cycle's verdict."""

    retreat: Retreat  # toward the DCS setpoints, or stand still (no limit beyond its threshold moves back)
    events: tuple[Event, ...]  # warning (soft), release (immediate) or no-entry events, in limit order
    # Per process signal, the value judged (measured, or predicted where that is worse): what the
    # projector's rows and the guard start from, so moves made within an analyser's lag add up.
    judged: dict[str, float]


class Supervisor:
    def __init__(self, envelope: Envelope, cycle_period_s: float):
        self.envelope = envelope
        self.dt = cycle_period_s
        self._limits = envelope.process_limits
        # per limit: its lag in cycles and its sensitivity as (MV index, S) pairs
        self._lag_cycles = [max(0, round(p.analyser_lag_s / cycle_period_s)) for p in self._limits]
        self._terms = [tuple((i, s) for i, s in enumerate(p.sensitivity.tolist()) if s) for p in self._limits]
        self._depth = max(self._lag_cycles, default=0) + 1
        self.offsets: list[list[float]] = []  # newest last, at most _depth entries
        # per signal with a trend look-ahead or an average: its measured values, newest last, as many as
        # the longest look-ahead (plus one) or average on that signal needs
        self._trend_cycles = [max(0, round(p.trend_lookahead_s / cycle_period_s)) for p in self._limits]
        self._average_cycles = [max(1, round(p.average_s / cycle_period_s)) if p.average_s else 0
                                for p in self._limits]
        self._history_depth = {p.signal: max(max(t + 1, a) for q, t, a in
                                             zip(self._limits, self._trend_cycles, self._average_cycles)
                                             if q.signal == p.signal)
                               for p in self._limits if p.trend_lookahead_s > 0 or p.average_s > 0}
        self.measured: dict[str, list[float]] = {}
        self.over_hard_s = [0.0] * len(self._limits)
        # Seconds since each value was last beyond its warning threshold. A new daemon has no history:
        # it starts as recovered and the first value beyond the threshold resets it.
        self.inside_s = [p.recover_s for p in self._limits]
        self._transients = envelope.retreat_while
        self.since_transient_s = self._transients.settle_s  # seconds since a transient last ran
        self.trips_on: dict[str, bool] = {}  # each trip signal as last read: on (a mill in service) or off

    def update(self, process_now: Mapping[str, float], u_prev: Sequence[float], u_dcs: Sequence[float],
               active: bool, transients: Mapping[str, float]) -> Supervision:
        """`transients`: this cycle's values, with those of the `retreat_while` signals and trips (NaN or absent:
        unreadable)."""
        dt = self.dt
        offsets = [p - d for p, d in zip(u_prev, u_dcs)]
        if all(map(math.isfinite, offsets)):
            self.offsets.append(offsets)
            del self.offsets[:-self._depth]
        for signal, depth in self._history_depth.items():
            value = process_now.get(signal, math.nan)
            history = self.measured.setdefault(signal, [])
            if math.isfinite(value):
                history.append(value)
                del history[:-depth]
            else:
                history.clear()  # a trend or an average across a gap in the signal means nothing
        retreat = hold = False
        warnings, releases, recovering = [], [], []
        judged_values = dict(process_now)
        for k, p in enumerate(self._limits):
            measured = process_now.get(p.signal, math.nan)
            if not math.isfinite(measured):
                continue  # validation and the projector deal with a missing value
            history = self.measured.get(p.signal, ())
            note = ""
            if self._average_cycles[k]:  # no sensitivity rows (envelope.py): judged on the mean alone
                window = history[-self._average_cycles[k]:]
                measured, note = math.fsum(window) / len(window), f" ({p.average_s:g} s average)"
            judged = measured
            if self._lag_cycles[k] and self.offsets:
                past = self.offsets[max(0, len(self.offsets) - 1 - self._lag_cycles[k])]
                now = self.offsets[-1]
                predicted = measured + sum([s * (now[i] - past[i]) for i, s in self._terms[k]])
                if p.beyond(predicted, measured):
                    judged, note = predicted, f" (measured {measured:.4g}, predicted {predicted:.4g})"
                    judged_values[p.signal] = predicted
            over_hard = p.beyond(judged, p.limit)
            self.over_hard_s[k] = self.over_hard_s[k] + dt if over_hard else 0.0
            warned, warn_note = judged, note
            if self._trend_cycles[k] and len(history) > 1:
                trend = 2.0 * measured - history[max(0, len(history) - 1 - self._trend_cycles[k])]
                if p.beyond(trend, judged):
                    warned, warn_note = trend, f" (measured {measured:.4g}, trend {trend:.4g})"
            if p.beyond(warned, p.warning):
                self.inside_s[k] = 0.0
                if active:
                    if p.warning_action is Retreat.HOLD:
                        hold = True
                    else:
                        retreat = True
                    warnings.append(f"{p.name}: {p.signal} {warned:.4g}{warn_note} beyond its warning threshold "
                                    f"{p.warning:g} {p.unit}")
            else:
                self.inside_s[k] += dt
                if active and self.inside_s[k] < p.retreat_off_delay_s:
                    hold = True
                    warnings.append(f"{p.name}: {p.signal} back inside its warning threshold {p.warning:g} "
                                    f"{p.unit} for {self.inside_s[k]:g} of {p.retreat_off_delay_s:g} s: holding")
            if active and over_hard and self.over_hard_s[k] >= p.hold_s:
                releases.append(f"{p.name}: {p.signal} {judged:.4g} {p.unit}{note} beyond its limit {p.limit:g} "
                                f"for {self.over_hard_s[k]:g} s (hold {p.hold_s:g} s)")
            if not active and self.inside_s[k] < p.recover_s:
                recovering.append(f"{p.name}: {p.signal} inside its warning threshold {p.warning:g} for "
                                  f"{self.inside_s[k]:g} of {p.recover_s:g} s")
        # what the event's detail names: each sequence flag that runs, each in-service status that fell
        causes = [s for s in self._transients.signals if not transients.get(s, math.nan) < 0.5]
        for s in self._transients.trips:
            value = transients.get(s, math.nan)
            if math.isfinite(value):  # unreadable: validation releases a critical status; no fall judged
                if self.trips_on.get(s, False) and value < 0.5:
                    causes.append(f"{s} fell")
                self.trips_on[s] = value >= 0.5
        self.since_transient_s = 0.0 if causes else self.since_transient_s + dt
        settling = self.since_transient_s < self._transients.settle_s
        events = [Event(EventType.SOFT_DISABLE, Reason.PROCESS_LIMIT_WARNING, w) for w in warnings]
        if active and settling:
            retreat = True
            events.append(Event(EventType.SOFT_DISABLE, Reason.PLANT_TRANSIENT, ", ".join(causes) if causes else
                                f"settling: {self.since_transient_s:g} of {self._transients.settle_s:g} s"))
        events += [Event(EventType.IMMEDIATE_DISABLE, Reason.PROCESS_LIMIT_EXCEEDED, r) for r in releases]
        if recovering:
            events.append(Event(EventType.NO_ENTRY, Reason.PROCESS_LIMIT_RECOVERING, "; ".join(recovering)))
        # a limit that retreats, or a transient, moves back rather than stand still; a release ends both
        if releases or not (retreat or hold):
            return Supervision(Retreat.NONE, tuple(events), judged_values)
        return Supervision(Retreat.TOWARD_DCS if retreat else Retreat.HOLD, tuple(events), judged_values)

    def state(self) -> dict:
        return {"offsets": [list(o) for o in self.offsets], "over_hard_s": list(self.over_hard_s),
                "inside_s": list(self.inside_s), "since_transient_s": self.since_transient_s,
                "trips_on": dict(self.trips_on),
                "measured": {signal: list(h) for signal, h in self.measured.items()}}

    def restore(self, state: dict) -> None:
        self.offsets = [list(o) for o in state["offsets"]]
        self.over_hard_s = list(state["over_hard_s"])
        self.inside_s = list(state["inside_s"])
        # absent from states logged before retreat_while: as a new daemon, settled
        self.since_transient_s = state.get("since_transient_s", self._transients.settle_s)
        # absent from states logged before retreat_while.trips: as a new daemon, nothing seen yet
        self.trips_on = dict(state.get("trips_on", {}))
        # absent from states logged before the trend look-ahead: no trend yet, as a new daemon
        self.measured = {signal: list(h) for signal, h in state.get("measured", {}).items()}
