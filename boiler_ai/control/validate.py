"""Input validation: decide, per signal and per cycle, whether a reading can be used.

Checks, in order: read failure or a stalled server, bad/uncertain quality, NaN/inf, stale timestamp,
outside the physical range, implausible rate of change, frozen sensor. A critical signal that fails
releases control at once. A non-critical one holds its last good value for at most `hold_s` plant
seconds; past that it counts as critical, because a controller steering on a stale picture is not healthy.

Timestamps, as vendor OPC UA servers send them (both are optional; many stamp only on change):
- The server is alive while its own clock (ServerStatus/CurrentTime, read in the same batch) advances;
  when it has not advanced for SERVER_CLOCK_STALL_S plant seconds, every input is invalid.
- Age is judged only where the tag map gives `stale_s` > 0 (signals that must move), from the
  SourceTimestamp, or the ServerTimestamp where there is none, against the server's clock (against the
  read time when the server gave no clock). Such a signal with neither timestamp cannot show it is
  fresh: `no_timestamp`. Where `stale_s` is 0 age is not judged and timestamps may be absent.

Pure: all time arrives as arguments. Time inside is plant seconds (cycles times the cycle period),
so the same log replays identically; only timestamp age is measured on the clocks of the read,
scaled by `time_scale` for an accelerated simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from boiler_ai.messages.plant import InputIssue, Snapshot
from boiler_ai.tagmap import SignalSpec

# Issue names (messages.InputIssue) are part of the decision record: add, never rename.

# Plant seconds the server's clock may stand still before the server counts as stalled: a server
# refreshes CurrentTime at least once a second (asyncua's own does exactly that).
SERVER_CLOCK_STALL_S = 10.0

_SERVER_CLOCK = "@server_clock"  # key of the server clock's track in state(): never a signal name
_SEVERITY = 0xC0000000  # StatusCode severity bits: 00 Good, 01 Uncertain, 1x Bad
_BAD = 0x80000000
_INFINITE = (math.inf, -math.inf)


@dataclass(slots=True)
class _Track:
    last_good: float | None = None
    since_good_s: float = 0.0  # plant seconds since the last good reading
    unchanged_s: float = 0.0  # plant seconds the raw value has not moved
    last_raw: float | None = None


@dataclass(slots=True)
class Validation:
    values: dict[str, float]  # usable value per signal (good, or held); absent when neither
    issues: dict[str, str]  # signal -> issue, for every signal that failed a check this cycle
    held: list[str]  # non-critical signals running on their last good value
    critical_bad: list[str] = field(default_factory=list)  # signals whose failure releases control
    snapshot_error: str | None = None

    @property
    def healthy(self) -> bool:
        return not self.critical_bad and self.snapshot_error is None


class Validator:
    def __init__(self, specs: list[SignalSpec], time_scale: float = 1.0):
        self.specs = specs
        self.time_scale = time_scale
        self._tracks = {s.name: _Track() for s in specs}
        self._server_time: float | None = None  # the server clock's latest reading
        self._server_still_s = 0.0  # plant seconds it has not advanced
        # per signal, in signal order: what its checks need, and its track, so the hot loop does no
        # lookups (SignalSpec is frozen); restore() keeps these track objects
        self._checks = [(s.name, s.critical, s.hold_s, s.stale_s, s.lo, s.hi, s.frozen_s, s.max_rate_per_s,
                         self._tracks[s.name]) for s in specs]

    def validate(self, snapshot: Snapshot, dt: float) -> Validation:
        error = snapshot.error if snapshot.error is not None else self._server_stalled(snapshot.server_time, dt)
        if error is not None:
            for track in self._tracks.values():
                track.since_good_s += dt
            issue = InputIssue.READ_FAILED if snapshot.error is not None else InputIssue.SERVER_CLOCK_STALLED
            return Validation({}, {s.name: issue for s in self.specs}, [],
                              [s.name for s in self.specs if s.critical], error)
        values: dict[str, float] = {}
        issues: dict[str, str] = {}
        held: list[str] = []
        critical_bad: list[str] = []
        get = snapshot.readings.get
        now = snapshot.server_time if snapshot.server_time is not None else snapshot.read_time
        time_scale = self.time_scale
        for name, critical, hold_s, stale_s, lo, hi, frozen_s, max_rate_per_s, track in self._checks:
            # the checks in the module docstring's order, inline: this runs for about a hundred signals
            reading = get(name)
            if reading is None:
                issue = InputIssue.MISSING
            elif reading.status_code & _SEVERITY:
                issue = InputIssue.BAD_QUALITY if reading.status_code & _BAD else InputIssue.UNCERTAIN_QUALITY
            elif (value := reading.value) != value or value in _INFINITE:
                issue = InputIssue.NOT_FINITE
            elif stale_s > 0 and (age := _age_issue(reading, now, time_scale, stale_s)) is not None:
                issue = age
            elif not lo <= value <= hi:
                issue = InputIssue.OUT_OF_RANGE
            else:
                previous = track.last_raw
                track.last_raw = value
                issue = None if frozen_s is None and max_rate_per_s is None else _motion_issue(
                    track, previous, value, frozen_s, max_rate_per_s, dt)
            if issue is None:
                track.last_good = values[name] = value
                track.since_good_s = 0.0
                continue
            issues[name] = issue
            track.since_good_s += dt
            if not critical and track.last_good is not None and track.since_good_s <= hold_s:
                values[name] = track.last_good
                held.append(name)
            else:
                critical_bad.append(name)
        return Validation(values, issues, held, critical_bad)

    def _server_stalled(self, server_time: float | None, dt: float) -> str | None:
        """Why the server counts as stalled (its clock stands still), else None. No clock: not judged."""
        if server_time is None:
            return None
        if self._server_time is not None and server_time <= self._server_time:
            self._server_still_s += dt
            if self._server_still_s >= SERVER_CLOCK_STALL_S:
                return (f"server clock (ServerStatus/CurrentTime) stalled: no advance for "
                        f"{self._server_still_s:g} s, standing at {self._server_time:.3f}")
            return None
        self._server_time = server_time
        self._server_still_s = 0.0
        return None

    def state(self) -> dict:
        state = {name: [t.last_good, t.since_good_s, t.unchanged_s, t.last_raw] for name, t in self._tracks.items()}
        if self._server_time is not None:  # only once a server gave its clock: older logs replay unchanged
            state[_SERVER_CLOCK] = [self._server_time, self._server_still_s]
        return state

    def restore(self, state: dict) -> None:
        state = dict(state)
        # absent from states saved before the server clock was tracked: start afresh
        self._server_time, self._server_still_s = state.pop(_SERVER_CLOCK, (None, 0.0))
        for name, (last_good, since_good_s, unchanged_s, last_raw) in state.items():
            track = self._tracks.get(name)
            if track is None:  # a signal this validator does not check: kept, as state() hands it on
                self._tracks[name] = _Track(last_good, since_good_s, unchanged_s, last_raw)
                continue
            # updated in place: self._checks holds the same objects
            track.last_good, track.since_good_s, track.unchanged_s, track.last_raw = (
                last_good, since_good_s, unchanged_s, last_raw)


def _age_issue(reading, now: float, time_scale: float, stale_s: float) -> str | None:
    """Why a signal that must be fresh (stale_s > 0) is not, else None."""
    stamp = reading.source_ts
    if stamp != stamp:  # no SourceTimestamp: the server's stamp says when it last had the value
        stamp = reading.server_ts
        if stamp != stamp:
            return InputIssue.NO_TIMESTAMP
    return InputIssue.STALE if (now - stamp) * time_scale > stale_s else None


def _motion_issue(track: _Track, previous: float | None, value: float, frozen_s: float | None,
                  max_rate_per_s: float | None, dt: float) -> str | None:
    """Frozen, or moving faster than it can (a value inside its range, `previous` the raw value before it)."""
    if frozen_s is not None:
        track.unchanged_s = track.unchanged_s + dt if value == previous else 0.0
        if track.unchanged_s >= frozen_s:
            return InputIssue.FROZEN
    if (max_rate_per_s is not None and track.last_good is not None and dt > 0
            and abs(value - track.last_good) / max(dt, track.since_good_s + dt) > max_rate_per_s):
        return InputIssue.RATE_OF_CHANGE
    return None
