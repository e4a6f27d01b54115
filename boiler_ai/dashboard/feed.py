"""The dashboard's view of a unit's decision stream: the last hours in memory, fed like a historian.

`Timeline` keeps, for the window shown (a few hours), one small point per decision (mode, AI_STATUS
and AI_REASON, the trended process values, model trust) and the newest full records for the detail
views; older full records are fetched on demand from the source. It is the `Store` a
`boiler_ai.record.historian.Historian` writes into, so a dashboard on a daemon's PUB and catch-up
endpoints gets its records exactly as a historian does (in seq order, gaps backfilled). A log
directory on the same host is followed by polling it instead.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, OrderedDict, deque
from pathlib import Path

import zmq

from boiler_ai import status_codes
from boiler_ai.record.curve import ClientKeys
from boiler_ai.record.historian import CatchupClient, CatchupUnavailable, Historian, HistorianError
from boiler_ai.record.log import iter_frames, list_segments
from boiler_ai.record.schema import RecordError, decode

log = logging.getLogger("boiler_ai.dashboard")

# Trended signals by default (the reference unit's names); a unit whose tag map names them otherwise
# passes its own with --trend. A signal a record does not carry is left out of the trends.
DEFAULT_TRENDS = ("boiler_efficiency_pct", "o2_economiser_pct", "co_ppm", "nox_mg_nm3", "main_steam_temp_c",
                  "reheat_steam_temp_c")


def envelope_distance(values: dict[str, float], training: dict[str, tuple[float, float]]) -> float | None:
    """How far the inputs are outside the model's training envelope: the largest excursion beyond an
    input's training range, as a fraction of that range (0 inside). None without a contract or values."""
    worst = None
    for name, (lo, hi) in training.items():
        x = values.get(name)
        if x is None or not math.isfinite(x):
            continue
        span = hi - lo if hi > lo else 1.0
        d = max(lo - x, x - hi, 0.0) / span
        worst = d if worst is None else max(worst, d)
    return worst


class Timeline:
    """What the dashboard shows; every method is safe to call from the feed thread and the web server."""

    def __init__(self, hours: float, trends: tuple[str, ...] = DEFAULT_TRENDS, keep_records: int = 900,
                 training_envelope: dict[str, tuple[float, float]] | None = None):
        self.window_s = hours * 3600.0
        self.trends = tuple(trends)
        self.keep_records = keep_records
        self.training = training_envelope or {}
        self.lock = threading.Lock()
        self.start_seq: int | None = None  # where the feed starts (the window's first seq), set before it runs
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.unit_id: str | None = None
            self.log_id: str | None = None
            self.points: deque[tuple] = deque()  # (seq, wall_time, status, reason, spread, distance, *trends)
            self.records: OrderedDict[int, bytes] = OrderedDict()  # newest payloads, for the detail views
            self.latest: dict | None = None
            self.latch = status_codes.StatusLatch()
            self.status: tuple[int, int] | None = None
            self.releases: Counter[str] = Counter()
            self._release_points: deque[tuple[float, str]] = deque()
            self.lost = 0
            self.received_at: float | None = None  # monotonic time of the newest record

    # --- the historian's Store protocol ---------------------------------------------------------

    def resume_point(self, unit_id: str) -> tuple[int | None, str | None]:
        newest = self.points[-1][0] if self.points else None
        if newest is None and self.start_seq is not None:
            newest = self.start_seq - 1
        return (None if newest is None or newest < 0 else newest), self.log_id

    def save(self, unit_id: str, log_id: str, rows, lost) -> list[int]:
        self.log_id = log_id or self.log_id
        for first, last, _ in lost:
            self.lost += last - first + 1
        for seq, wall_time, text in rows:
            self.add(seq, text.encode("utf-8") if isinstance(text, str) else text)
        return []  # nothing kept, so no conflict to find

    # --- feeding ------------------------------------------------------------------------------

    def add(self, seq: int, payload: bytes) -> None:
        try:
            record = decode(payload)
        except RecordError as exc:
            log.error("dashboard: decision %d is not a readable record (%s); skipped", seq, exc)
            return
        inputs = record["inputs"]
        issue, held = inputs["issue"], inputs["held"]
        used = {name: (value if name not in issue else held.get(name))
                for name, value in zip(inputs["signals"], inputs["value"])}
        policy = record["policy"] or {}
        with self.lock:
            self.unit_id = record["unit_id"]
            self.status = self.latch.of_record(record)
            point = (seq, record["wall_time"], *self.status, policy.get("spread"),
                     envelope_distance(used, self.training) if policy else None,
                     *(used.get(name) for name in self.trends))
            self.points.append(point)
            if record["release_reason"] is not None:
                self.releases[record["release_reason"]] += 1
                self._release_points.append((record["wall_time"], record["release_reason"]))
            self.records[seq] = payload
            while len(self.records) > self.keep_records:
                self.records.popitem(last=False)
            self.latest = record
            self.received_at = time.monotonic()
            horizon = record["wall_time"] - self.window_s
            while self.points and self.points[0][1] < horizon:
                self.points.popleft()
            while self._release_points and self._release_points[0][0] < horizon:
                self.releases[self._release_points.popleft()[1]] -= 1
            self.releases += Counter()  # drops reasons counted down to zero

    # --- reading ------------------------------------------------------------------------------

    def trend(self, after: int = -1) -> dict:
        """Columns of the points with seq > after (all when -1)."""
        with self.lock:
            points = [p for p in self.points if p[0] > after] if after >= 0 else list(self.points)
        columns = list(zip(*points)) if points else [()] * (6 + len(self.trends))
        out = {"seq": list(columns[0]), "time": list(columns[1]), "ai_status": list(columns[2]),
               "ai_reason": list(columns[3]), "spread": list(columns[4]), "envelope_distance": list(columns[5])}
        out["signals"] = {name: list(columns[6 + i]) for i, name in enumerate(self.trends)}
        return out

    def record(self, seq: int) -> bytes | None:
        with self.lock:
            return self.records.get(seq)


class CatchupFeed:
    """Follows a daemon through its catch-up service (and its PUB socket when given), as a historian."""

    def __init__(self, timeline: Timeline, catchup: str, pub: str | None, poll_s: float, timeout_s: float = 5.0,
                 curve: ClientKeys | None = None):
        self.timeline = timeline
        self.curve = curve
        self.catchup = catchup
        self.pub = pub
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.context = zmq.Context.instance()
        self._client = CatchupClient(catchup, self.context, timeout_s, curve)
        self._lock = threading.Lock()  # one request at a time on the detail views' client

    def describe(self) -> str:
        return f"catch-up {self.catchup}" + (f", live {self.pub}" if self.pub else "")

    def start_point(self) -> tuple[str, int]:
        """The unit id and the seq the window starts at (about `hours` before the newest decision)."""
        head, _ = self._client.request({"op": "info"})
        first, next_seq = head["first_seq"], head["next_seq"]
        if first is None or next_seq == 0:
            return head["unit_id"], next_seq
        newest = self.fetch(next_seq - 1)
        period = decode(newest)["cycle_period_s"] if newest is not None else 1.0
        return head["unit_id"], max(first, next_seq - int(self.timeline.window_s / max(period, 1e-3)))

    def fetch(self, seq: int) -> bytes | None:
        """One record's payload from the unit's log, or None when the log does not have it."""
        with self._lock:
            head, payloads = self._client.request({"op": "fetch", "from_seq": seq, "max_records": 1})
        return payloads[0] if head["seqs"] and head["seqs"][0] == seq else None

    def run(self, stop: threading.Event) -> None:
        """Feed the timeline until `stop`; a replaced log or an unreachable daemon is retried."""
        while not stop.is_set():
            try:
                unit_id, start = self.start_point()
                self.timeline.start_seq = start
                historian = Historian(self.timeline, unit_id, self.pub, self.catchup, context=self.context,
                                      commit_interval_s=0.05, poll_s=self.poll_s, timeout_s=self.timeout_s,
                                      curve=self.curve)
                historian.run(stop)
            except CatchupUnavailable as exc:
                log.error("dashboard: %s; retrying", exc)
                stop.wait(self.poll_s)
            except HistorianError as exc:
                log.warning("dashboard: %s; starting over on the new log", exc)
                self.timeline.reset()


class LogFeed:
    """Follows a log directory on this host (the daemon's, or a copy) by polling it."""

    def __init__(self, timeline: Timeline, directory: Path, poll_s: float):
        self.timeline = timeline
        self.directory = directory
        self.poll_s = poll_s

    def describe(self) -> str:
        return f"log {self.directory}"

    def fetch(self, seq: int) -> bytes | None:
        for _, _, frame in iter_frames(self.directory, seq):
            return frame.payload if frame.seq == seq else None
        return None

    def start_point(self) -> int:
        segments = list_segments(self.directory)
        if not segments:
            return 0
        newest = None
        for _, _, frame in iter_frames(self.directory, segments[-1][0]):
            newest = frame
        if newest is None:
            return segments[-1][0]
        period = decode(newest.payload)["cycle_period_s"]
        return max(segments[0][0], newest.seq + 1 - int(self.timeline.window_s / max(period, 1e-3)))

    def run(self, stop: threading.Event) -> None:
        next_seq = self.start_point()
        start = None
        while not stop.is_set():
            for path, end, frame in iter_frames(self.directory, next_seq, start=start):
                if frame.seq > next_seq:
                    self.timeline.lost += frame.seq - next_seq
                self.timeline.add(frame.seq, frame.payload)
                next_seq, start = frame.seq + 1, (path, end)
                if stop.is_set():
                    return
            stop.wait(self.poll_s)


def check_source(directory: Path) -> None:
    """A log directory the dashboard can follow, or a clear error."""
    from boiler_ai.strict import ConfigError

    if not directory.is_dir() or not list_segments(directory):
        raise ConfigError(directory, "", "not a decision log directory (no .seg files)")
