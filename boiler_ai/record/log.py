"""The durable decision log: the truth about what the daemon decided (docs/DECISION_RECORD.md).

Layout: one directory per unit, append-only segment files named `<first seq, 20 digits>.seg`.
A segment starts with a header (magic, length, JSON {unit_id, log_id, first_seq, created}) and then
holds frames:

    u32 payload length | u32 CRC-32 of (seq, wall_time, payload) | u64 seq | f64 wall_time | payload

all big-endian; the payload is the encoded record (schema.encode).

The log never lies about what it holds:
- Damage (a torn write after a crash, a truncated file, a flipped bit, foreign bytes) is found at
  restart (the newest segment is read through), while running (before every write the writer checks
  that the live segment is still the size it wrote, and in idle time it re-reads the whole log and
  checks every CRC) and by every reader. Readers resynchronise after damage: the intact frames after
  a damaged region are still served. A damaged segment is repaired: its original bytes go to
  `quarantine/` with a machine-readable report (`<name>.json`: damaged byte ranges, the seqs
  recovered and the seqs lost), and the segment keeps every intact frame.
- `seq` is never reused. `high_water` (two CRC-checked slots, overwritten in place, so it needs no
  new disk space) holds one past the highest seq the log has written or given up, updated with
  every fsync; a restart continues after it even when the newest segment lost its tail.
- Every seq the log does not hold is in `gaps.jsonl` with its reason (`queue_full`, `write_failed`,
  `encode_failed`, `damaged_segment`, `missing_at_restart`); the catch-up service hands these to
  historians with the records around them.

The control cycle only enqueues (`append`) a record it has stamped itself; a writer thread encodes,
writes, fsyncs per policy and then publishes, so a subscriber never sees a record the log could
still lose, and the encoding (the largest cost of recording) is off the cycle's critical path. If the bounded queue
is full the record is dropped, counted, logged and counted in the next record
(`log_dropped_count`); its seq stays consumed, so the gap is visible everywhere. `not_durable`
says, cheaply, whether records are persisting now (the daemon reads it every cycle and keeps the
AI out of control while they are not).
"""

from __future__ import annotations

import binascii
import errno
import io
import json
import logging
import os
import re
import secrets
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self

from boiler_ai.messages import Record, settings
from boiler_ai.messages.settings import FSYNC_POLICIES
from boiler_ai.record.schema import RecordError, decode, encode_record

log = logging.getLogger("boiler_ai.record.log")

MAGIC = b"BAIDLOG1"
_HEADER_LEN = struct.Struct(">I")
FRAME = struct.Struct(">IIQd")  # payload length, crc32, seq, wall_time
_TAIL = struct.Struct(">Qd")  # the part of the frame header the CRC covers, with the payload
MAX_PAYLOAD = 64 * 1024 * 1024  # a larger length field is corruption, not a record
_WRITE_CHUNK = 1 << 20  # bytes per write(): a backlog is written in cache-sized pieces, not one huge copy
_WRITE_PARTS = 1000  # buffers per writev(), under the system's IOV_MAX (1024 on Linux)
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
# A frame header's seq field starts with at least three zero bytes (seq < 2**40); a JSON payload
# holds none. After damage, only the zero runs are candidates for the next frame's start.
_ZERO_RUN = re.compile(rb"\x00{3,}")

QUARANTINE = "quarantine"
GAPS = "gaps.jsonl"
HIGH_WATER = "high_water"
_HW_MAGIC = b"BAIDHWM1"
_HW_SLOT = struct.Struct(">8s16sQQI")  # magic, log id, next seq, write count, crc32 of the rest
_SCRUB_STEP_BYTES = 256 * 1024  # verified per idle turn of the writer...
_SCRUB_PAUSE_S = 0.05  # ...at most this often: a few MB/s, so the check never competes with the cycle


class LogError(RuntimeError):
    """The log directory cannot be used as asked (wrong unit, unreadable). The message names the path."""


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    wall_time: float
    payload: bytes


class Publisher(Protocol):
    """What the writer thread hands each durable record to (publisher.Publisher is the ZeroMQ one)."""

    drop_count: int

    def publish(self, seq: int, wall_time: float, payload: bytes) -> bool: ...

    def close(self) -> None: ...


def segment_path(directory: Path, first_seq: int) -> Path:
    return directory / f"{first_seq:020d}.seg"


def list_segments(directory: str | Path) -> list[tuple[int, Path]]:
    """(first_seq from the name, path) of every segment, oldest first."""
    directory = Path(directory)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    out = [(int(m.group(1)), directory / name) for name in names if (m := _SEGMENT_NAME.match(name))]
    out.sort()
    return out


def _frame_crc(head: bytes, payload: bytes) -> int:
    return binascii.crc32(payload, binascii.crc32(head[8:]))


def read_header(f) -> dict | None:
    """The segment header, or None if it is incomplete or not a segment (a torn segment start)."""
    magic = f.read(len(MAGIC))
    if magic != MAGIC:
        return None
    raw_len = f.read(_HEADER_LEN.size)
    if len(raw_len) < _HEADER_LEN.size:
        return None
    (length,) = _HEADER_LEN.unpack(raw_len)
    raw = f.read(length)
    if len(raw) < length or length > 65536:
        return None
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def _scan(f, offset: int) -> Iterator[tuple[int, Frame]]:
    """Frames from `offset` (just after the header or a known frame end) as (end offset, frame).

    Stops at end of file, at an incomplete frame or at the first frame whose length or CRC is wrong;
    the caller compares the last end offset with the file size to tell which.
    """
    f.seek(offset)
    read = f.read
    size = FRAME.size
    while True:
        head = read(size)
        if len(head) < size:
            return
        length, crc, seq, wall_time = FRAME.unpack(head)
        if length == 0 or length > MAX_PAYLOAD:
            return
        payload = read(length)
        if len(payload) < length or _frame_crc(head, payload) != crc:
            return
        offset += size + length
        yield offset, Frame(seq, wall_time, payload)


def _frame_at(data: bytes, pos: int, after_seq: int) -> Frame | None:
    """The intact frame starting at data[pos] with a seq above after_seq, else None."""
    if pos + FRAME.size > len(data):
        return None
    length, crc, seq, wall_time = FRAME.unpack_from(data, pos)
    body = pos + FRAME.size
    if length == 0 or length > MAX_PAYLOAD or seq <= after_seq or body + length > len(data):
        return None
    payload = data[body:body + length]
    if binascii.crc32(payload, binascii.crc32(data[pos + 8:body])) != crc:
        return None
    return Frame(seq, wall_time, payload)


def _next_intact(data: bytes, pos: int, after_seq: int) -> tuple[int, Frame] | None:
    """The first intact frame starting at or after `pos` (seq above after_seq): resynchronising after damage.

    A candidate start p has the seq's zero high bytes at p+8.. and a non-zero wall time from p+16, so a
    zero run ending at r admits only p in [r-16, r-11]: a few CRC checks per run, not one per byte.
    """
    for run in _ZERO_RUN.finditer(data, pos + 8):
        r = run.end()
        for p in range(max(pos, run.start() - 8, r - 16), r - 10):
            frame = _frame_at(data, p, after_seq)
            if frame is not None:
                return p, frame
    return None


def _resync(data: bytes, pos: int, after_seq: int) -> Iterator[tuple[int, int, Frame]]:
    """Every intact frame in data from `pos` on, skipping damaged bytes, as (start, end, frame)."""
    while pos < len(data):
        frame = _frame_at(data, pos, after_seq)
        if frame is None:
            found = _next_intact(data, pos + 1, after_seq)
            if found is None:
                return
            pos, frame = found
        end = pos + FRAME.size + len(frame.payload)
        yield pos, end, frame
        after_seq, pos = frame.seq, end


@dataclass
class Survey:
    """What a segment file holds: its header, every intact frame, and the byte ranges that are not frames."""

    header: dict | None
    header_end: int  # 0 when the header is damaged
    frames: list[tuple[int, int, Frame]]  # (start, end, frame)
    damaged: list[tuple[int, int]]  # [start, end) byte ranges
    size: int

    @property
    def tail_only(self) -> bool:
        """Only the end is damaged (a torn write): nothing intact follows it."""
        return (self.header is not None and len(self.damaged) == 1
                and self.damaged[0][1] == self.size)


def survey(data: bytes) -> Survey:
    f = io.BytesIO(data)
    header = read_header(f)
    start = f.tell() if header is not None else 0
    frames = list(_resync(data, start, -1))
    damaged = []
    expected = start
    for begin, end, _ in frames:
        if begin > expected:
            damaged.append((expected, begin))
        expected = end
    if expected < len(data):
        damaged.append((expected, len(data)))
    return Survey(header, start, frames, damaged, len(data))


def iter_frames(directory: str | Path, from_seq: int = 0, *, stop_seq: int | None = None,
                start: tuple[Path, int] | None = None) -> Iterator[tuple[Path, int, Frame]]:
    """Every intact frame with seq >= from_seq (and < stop_seq), oldest first, as (segment, end offset, frame).

    `start` (a segment and an offset at a frame boundary in it) skips the search for from_seq.
    Reads tolerate a live writer (segments appearing, rotating, being deleted by retention): the
    directory is listed again after each segment. Damaged bytes are logged and skipped: the reader
    resynchronises on the next intact frame, so only the damaged frames' seqs show as a gap. In the
    newest segment, a frame at or past stop_seq (or not complete yet) is the live writer's, not damage.
    """
    directory = Path(directory)
    if start is not None:
        path, offset = start
        current = int(_SEGMENT_NAME.match(path.name).group(1))
    else:
        segments = list_segments(directory)
        if not segments:
            return
        candidates = [s for s in segments if s[0] <= from_seq]
        current, path = candidates[-1] if candidates else segments[0]
        offset = None
    while True:
        newest = not [s for s in list_segments(directory) if s[0] > current]
        try:
            # A large buffer: a catch-up scan reads frame after frame, and every system call hands
            # the GIL to another thread (the control cycle's, which should have it).
            with open(path, "rb", buffering=1 << 20) as f:
                if offset is None and read_header(f) is None:
                    end, last = 0, -1
                else:
                    end, last = (f.tell() if offset is None else offset), -1
                    for frame_end, frame in _scan(f, end):
                        end, last = frame_end, frame.seq
                        if stop_seq is not None and frame.seq >= stop_seq:
                            return
                        if frame.seq >= from_seq:
                            yield path, end, frame
                size = os.fstat(f.fileno()).st_size
                if end < size and not (newest and _beyond(f, end, size, stop_seq)):
                    log.warning("%s: damaged data at offset %d; reading on from the next intact frame", path, end)
                    f.seek(end)
                    data = f.read()
                    for _, frame_end, frame in _resync(data, 0, last):
                        if stop_seq is not None and frame.seq >= stop_seq:
                            return
                        if frame.seq >= from_seq:
                            yield path, end + frame_end, frame
        except FileNotFoundError:  # retention removed it under us: its records are gone
            pass
        later = [s for s in list_segments(directory) if s[0] > current]
        if not later:
            return
        current, path = later[0]
        offset = None


def _beyond(f, offset: int, size: int, stop_seq: int | None) -> bool:
    """True if the frame at `offset` is a live writer's tail, not damage: at or past stop_seq, or not complete yet."""
    f.seek(offset)
    head = f.read(FRAME.size)
    if len(head) < FRAME.size:
        return True
    length, _, seq, _ = FRAME.unpack(head)
    if stop_seq is not None and seq >= stop_seq:
        return True
    return 0 < length <= MAX_PAYLOAD and offset + FRAME.size + length > size


def iter_records(directory: str | Path, from_seq: int = 0) -> Iterator[dict]:
    """Every intact record in a log directory, decoded, oldest first (for tools: export, replay)."""
    for _, _, frame in iter_frames(directory, from_seq):
        yield decode(frame.payload)


def read_gaps(directory: str | Path) -> list[dict]:
    """The log's record of every seq it does not hold: {first, last, reason, detail, noted_at}, in the order noted."""
    gaps = []
    try:
        with open(Path(directory) / GAPS, encoding="utf-8") as f:
            for line in f:
                try:
                    gaps.append(json.loads(line))
                except ValueError:  # a line torn by a crash: its gap is noted again from the high-water mark
                    log.warning("%s: unreadable line skipped", Path(directory) / GAPS)
    except FileNotFoundError:
        pass
    return gaps


class _HighWater:
    """One past the highest seq ever written or given up, in two alternating CRC-checked slots.

    Overwritten in place, so a full disk cannot stop it; a torn write spoils one slot, the other holds
    the previous value.
    """

    def __init__(self, path: Path, sync: bool):
        self.path = path
        self.sync = sync
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.count = 0
        if os.fstat(self.fd).st_size < 2 * _HW_SLOT.size:
            os.pwrite(self.fd, bytes(2 * _HW_SLOT.size), 0)  # both slots' blocks allocated now
            os.fsync(self.fd)

    def read(self) -> tuple[str, int] | None:
        best = None
        for slot in range(2):
            raw = os.pread(self.fd, _HW_SLOT.size, slot * _HW_SLOT.size)
            if len(raw) < _HW_SLOT.size:
                continue
            magic, log_id, next_seq, count, crc = _HW_SLOT.unpack(raw)
            if magic != _HW_MAGIC or binascii.crc32(raw[:-4]) != crc:
                continue
            if best is None or count > best[0]:
                best = (count, log_id.rstrip(b"\0").decode("ascii", "replace"), next_seq)
        if best is None:
            return None
        self.count = best[0]
        return best[1], best[2]

    def write(self, log_id: str, next_seq: int) -> None:
        self.count += 1
        body = _HW_SLOT.pack(_HW_MAGIC, log_id.encode("ascii", "replace")[:16], next_seq, self.count, 0)[:-4]
        os.pwrite(self.fd, body + struct.pack(">I", binascii.crc32(body)), (self.count % 2) * _HW_SLOT.size)
        if self.sync:
            os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


@dataclass(slots=True)
class _Segment:
    path: Path
    fd: int  # unbuffered: every write goes straight to the OS
    size: int
    created: float
    first_seq: int
    last_seq: int | None = None  # of the newest frame written into it


# How long append(wait=True) waits for room in a full queue before it drops the record as usual.
APPEND_WAIT_S = 30.0

class DurableLog:
    """Append-only decision log of one unit. `append` is called from the control cycle only.

    fsync: "every_record" (nothing is published before it is on disk; the writer groups the records
    queued meanwhile into one fsync), "interval" (fsync at most every fsync_interval_ms; records are
    published after the fsync that covers them) or "never" (the OS decides: after a power loss, records
    already published may be lost and, the high-water mark being unsynced too, their seqs reused; for
    tests and benchmarks). A closed segment is always fsynced.

    Health (`not_durable`): records are not persisting when a write, fsync or the high-water mark
    failed and no write has succeeded since, when the queue overflowed, when the file system has
    less than `min_free_bytes` free (so control is handed back while records still fit), or when
    the writer has made no progress for `max_lag_s` with records waiting.
    """

    def __init__(self, directory: str | Path, unit_id: str, *, fsync: str = "interval",
                 fsync_interval_ms: int = settings.LOG_FSYNC_INTERVAL_MS,
                 segment_max_bytes: int = int(settings.LOG_SEGMENT_MAX_MB * 1024 * 1024),
                 segment_max_age_s: float = settings.LOG_SEGMENT_MAX_AGE_S,
                 retention_s: float | None = settings.LOG_RETENTION_DAYS * 86400.0,
                 retention_max_bytes: int | None = None,
                 queue_size: int = settings.LOG_QUEUE_SIZE, publisher: Publisher | None = None, first_seq: int = 0,
                 min_free_bytes: int = int(settings.LOG_MIN_FREE_MB * 1024 * 1024),
                 max_lag_s: float = settings.LOG_MAX_LAG_S,
                 scrub_interval_s: float | None = settings.LOG_SCRUB_INTERVAL_S,
                 clock: Callable[[], float] = time.time):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        self.directory = Path(directory)
        self.unit_id = unit_id
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_ms / 1000.0
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_age_s = segment_max_age_s
        self.retention_s = retention_s
        self.retention_max_bytes = retention_max_bytes
        self.queue_size = queue_size
        self.publisher = publisher
        self.min_free_bytes = min_free_bytes
        self.max_lag_s = max_lag_s
        self.scrub_interval_s = scrub_interval_s
        self.clock = clock

        self.dropped_count = 0  # records the log could not keep (queue full or write failed)
        self.last_error: str | None = None
        self.damage_reports: list[Path] = []  # quarantine reports written by this process
        self._last_alarm = -1e18
        self._cond = threading.Condition()
        self._append_lock = threading.Lock()
        self._pending: list[tuple[int, float, Record]] = []  # (seq, wall_time, record), encoded by the writer
        self.encode_error: str | None = None
        self._enqueued = 0
        self._processed = 0
        self._progress_at = time.monotonic()  # the writer's last completed turn (or the start of a wait)
        self._closing = False
        self._segment: _Segment | None = None
        self._fault: str | None = None  # why records are not persisting, until a write succeeds again
        self._failures = 0  # counts every failure...
        self._written_after = 0  # ...and this is its value when a write last succeeded
        self._low_space: str | None = None
        self._gaps: list[dict] = []  # every gap noted (loaded from gaps.jsonl, then appended)
        self._unsaved_gaps: list[dict] = []
        self._consumed_next = 0  # one past the highest seq written or given up
        self._hw_saved = 0
        self._scrub_at = None if scrub_interval_s is None else time.monotonic()
        self._scrub_segment = 0  # the scrub's position: segment first seq, offset in it (None: header next)
        self._scrub_offset: int | None = None

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._high_water = _HighWater(self.directory / HIGH_WATER, fsync != "never")
        except OSError as exc:
            raise LogError(f"{self.directory}: cannot create the log directory ({exc.strerror or exc})") from exc
        try:
            self._gaps = read_gaps(self.directory)
            self.log_id, self._next_seq = self._recover(first_seq)
        except BaseException:
            self._high_water.close()
            raise
        self._consumed_next = self._hw_saved = self._next_seq
        self._persist_marks()
        self.published_next = self._next_seq  # records below this are durable (per policy) and published
        self._apply_retention()
        self._check_space()
        self._writer = threading.Thread(target=self._write_loop, name=f"decision-log-{unit_id}", daemon=True)
        self._writer.start()

    # ---- the control cycle's side -------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def publish_drop_count(self) -> int:
        return self.publisher.drop_count if self.publisher is not None else 0

    @property
    def not_durable(self) -> str | None:
        """Why records are not persisting now, or None when they are. Cheap: read every cycle."""
        why = self._fault or self._low_space
        if why is None and self.writer_stalled:
            why = (f"the log's writer has made no progress for {time.monotonic() - self._progress_at:.1f} s "
                   f"(bound {self.max_lag_s:g} s)")
        return why

    @property
    def writer_stalled(self) -> bool:
        """The writer thread has made no progress for `max_lag_s` while records wait (it hangs, or the
        disk does), as opposed to a fault it reports (a failed write, a full disk)."""
        return self._enqueued > self._processed and time.monotonic() - self._progress_at > self.max_lag_s

    def append(self, record: Record, *, wait: bool = False) -> int:
        """Queue `record` for the writer thread; never blocks on I/O unless told to wait. Returns its seq.

        The caller stamps the record (it is immutable; the log never edits it): `seq` must be this
        log's `next_seq` (there is one writer), the loss counters `dropped_count` and
        `publish_drop_count` as they stand. A full queue drops the record (counted, logged, and in
        the counter of the next record); its seq stays consumed. With `wait` (a caller that keeps no
        real time: a stepped plant, a test rig) a full queue first waits up to APPEND_WAIT_S for the
        writer to make room, so running faster than the disk costs time, not records. A record the writer cannot encode
        is a defect: it is counted as dropped and the next `append` raises LogError naming its seq
        and field, so a daemon stops deciding things it cannot record.
        """
        with self._append_lock:
            if self.encode_error is not None:
                raise LogError(f"{self.directory}: {self.encode_error}")
            seq = self._next_seq
            if record.seq != seq:
                raise LogError(f"{self.directory}: record stamped seq {record.seq}, the log's next is {seq} "
                               "(one writer stamps log.next_seq)")
            wall_time = record.decision.wall_time
            if not isinstance(wall_time, (int, float)) or isinstance(wall_time, bool):
                raise RecordError("wall_time", f"expected a number, got {wall_time!r}")
            self._next_seq = seq + 1
        with self._cond:
            if self._closing:
                raise LogError(f"{self.directory}: append after close")
            if wait:
                deadline = time.monotonic() + APPEND_WAIT_S
                while len(self._pending) >= self.queue_size and not self._closing \
                        and self._cond.wait(max(0.0, deadline - time.monotonic())):
                    pass
            if len(self._pending) >= self.queue_size:
                self._drop(seq, seq, "queue_full", f"queue full ({self.queue_size} records)")
                return seq
            self._pending.append((seq, float(wall_time), record))
            self._enqueued += 1
            if len(self._pending) == 1:
                if self._processed == self._enqueued - 1:  # the writer was idle: its lag counts from now
                    self._progress_at = time.monotonic()
                self._cond.notify_all()
        return seq

    def _drop(self, first: int, last: int, reason: str, why: str) -> None:
        """Seqs first..last will never be in the log: count, note the gap, raise the alarm."""
        count = last - first + 1
        with self._cond:  # both threads drop; the condition's lock is reentrant
            self.dropped_count += count
            self._failures += 1
            self._fault = f"{count} record(s) lost: {why}"
            self._note_gap(first, last, reason, why)
            now = time.monotonic()
            if now - self._last_alarm < 10.0:  # one alarm per 10 s, with the running total
                return
            self._last_alarm = now
        log.error("decision log %s: %d record(s) dropped: %s (%d dropped since start)",
                  self.directory, count, why, self.dropped_count)

    def _note_gap(self, first: int, last: int, reason: str, detail: str) -> None:
        """Record seqs first..last as absent (those not noted already), to be saved by the writer."""
        with self._cond:
            for a, b in _uncovered(first, last, self._gaps):
                previous = self._unsaved_gaps[-1] if self._unsaved_gaps else None
                if previous is not None and previous["reason"] == reason and previous["last"] == a - 1:
                    previous["last"] = b  # consecutive drops for one reason: one gap
                    continue
                gap = {"first": a, "last": b, "reason": reason, "detail": detail, "noted_at": self.clock()}
                self._gaps.append(gap)
                self._unsaved_gaps.append(gap)
            self._consumed_next = max(self._consumed_next, last + 1)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued so far is written, synced per policy and published."""
        with self._cond:
            target = self._enqueued
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._processed >= target, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write and publish everything queued, fsync, stop the writer, close the publisher."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        self._writer.join(timeout)
        if self._writer.is_alive():
            log.error("decision log %s: writer did not finish within %.0f s", self.directory, timeout)
        else:
            self._high_water.close()
        if self.publisher is not None:
            self.publisher.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- readers ------------------------------------------------------------------------------

    def first_seq(self) -> int | None:
        """The oldest published seq still in the log, or None when there is none yet."""
        for _, path in list_segments(self.directory):
            try:
                with open(path, "rb") as f:  # small reads: only the first frame is wanted
                    if read_header(f) is None:
                        continue
                    frame = next((frame for _, frame in _scan(f, f.tell())), None)
            except FileNotFoundError:  # removed by retention meanwhile
                continue
            if frame is not None:
                return frame.seq if frame.seq < self.published_next else None
        return None

    def frames_from(self, seq: int, *, start: tuple[Path, int] | None = None) -> Iterator[tuple[Path, int, Frame]]:
        """Published records with seq >= `seq`, as (segment, end offset, frame)."""
        return iter_frames(self.directory, seq, stop_seq=self.published_next, start=start)

    def read_from(self, seq: int) -> Iterator[dict]:
        """Published records with seq >= `seq`, decoded."""
        for _, _, frame in self.frames_from(seq):
            yield decode(frame.payload)

    def gaps_between(self, first: int, last: int) -> list[tuple[int, int, str]]:
        """(first, last, reason) of every noted gap overlapping seqs first..last."""
        return [(g["first"], g["last"], g["reason"]) for g in list(self._gaps)
                if g["first"] <= last and g["last"] >= first]

    # ---- opening: find the end, repair damage -------------------------------------------------

    def _recover(self, first_seq: int) -> tuple[str, int]:
        """Repair the newest segment, find its last intact record and continue after the high-water mark.

        Returns (log_id, next seq).
        """
        mark = self._high_water.read()
        segments = list_segments(self.directory)
        log_id, last_seq, damaged = None, None, None
        while segments and last_seq is None:
            first, path = segments.pop()
            found = self._repair(path, "restart", tail_upto=None if mark is None else mark[1] - 1)
            if found is None:  # nothing readable at all: the file went to quarantine
                continue
            header, last_seq, report = found
            damaged = damaged or report
            log_id = str(header["log_id"])
            if last_seq is None:
                # No record in it: remove it, so the next segment can take its name and seq.
                path.unlink()
                self._sync_directory()
                last_seq = int(header["first_seq"]) - 1
        if mark is not None and log_id is not None and mark[0] != log_id:
            log.warning("%s: high-water mark belongs to log %s, not %s: ignored", self.directory, mark[0], log_id)
            mark = None
        if log_id is None:
            log_id = mark[0] if mark is not None else secrets.token_hex(8)
        next_seq = first_seq if last_seq is None else last_seq + 1
        if mark is not None and mark[1] > next_seq:
            reason, detail = (("damaged_segment", damaged.name) if damaged is not None
                              else ("missing_at_restart", "written before the restart, not in the log"))
            log.error("decision log %s: seqs %d..%d were written before the restart but are not in the log (%s); "
                      "the log continues at %d, never reusing them", self.directory, next_seq, mark[1] - 1,
                      reason, mark[1])
            self._note_gap(next_seq, mark[1] - 1, reason, detail)
            next_seq = mark[1]
        return log_id, next_seq

    def _repair(self, path: Path, detected: str, *, tail_upto: int | None = None, expect_last: int | None = None,
                why: str = "") -> tuple[dict, int | None, Path | None] | None:
        """Check one segment; if damaged, quarantine its bytes with a report and keep every intact frame.

        Returns (header, last intact seq or None, report path or None), or None when nothing in the
        file was readable (it is then in quarantine). `tail_upto`: the highest seq the damaged end
        may have held (the newest segment: from the high-water mark; a closed one: up to the next).
        `expect_last`: the seq the writer knows it wrote last into this segment; ending earlier, even
        on a frame boundary, is damage.
        """
        with open(path, "rb", buffering=1 << 20) as f:  # the usual case: intact, read through once
            header = read_header(f)
            if header is not None and header.get("unit_id") != self.unit_id:
                raise LogError(f"{path}: segment belongs to unit {header.get('unit_id')!r}, not {self.unit_id!r}")
            if header is not None:
                end, last = f.tell(), None
                for end, frame in _scan(f, end):
                    last = frame.seq
                if end == os.fstat(f.fileno()).st_size and (expect_last is None
                                                            or (last is not None and last >= expect_last)):
                    return header, last, None
        data = path.read_bytes()
        found = survey(data)
        header = found.header
        last = found.frames[-1][2].seq if found.frames else None
        if expect_last is not None and (last is None or last < expect_last) \
                and not (found.damaged and found.damaged[-1][1] == found.size):
            found.damaged.append((found.size, found.size))  # cut on a frame boundary: the frames after it are gone
        if header is None and not found.frames:  # torn while the segment was being created (or still empty)
            if data:  # an empty file holds nothing to keep
                self._quarantine(path, data, found, detected, why or "no segment header and no intact frame", [],
                                 "whole")
            path.unlink()
            self._sync_directory()
            return None
        if not found.damaged:
            return header, last, None
        first_seq = int(_SEGMENT_NAME.match(path.name).group(1))
        lost = self._lost_seqs(found, first_seq, tail_upto)
        if found.tail_only:
            kind = "tail"
            cut = found.damaged[0][0]
            report = self._quarantine(path, data[cut:], found, detected, why or "torn or truncated end", lost, kind)
            with open(path, "r+b") as f:
                f.truncate(cut)
                os.fsync(f.fileno())
        else:
            kind = "whole"
            report = self._quarantine(path, data, found, detected, why or "damaged frames", lost, kind)
            if header is None:
                header = {"unit_id": self.unit_id, "log_id": self._known_log_id(), "first_seq": first_seq,
                          "created": self.clock(), "format": 1}
                raw_header = self._header_bytes(header)
            else:
                raw_header = data[:found.header_end]
            tmp = path.with_name(path.name + ".repair")
            with open(tmp, "wb") as f:
                f.write(raw_header)
                for start, end, _ in found.frames:
                    f.write(data[start:end])
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            self._sync_directory()
        for a, b in lost:
            self._note_gap(a, b, "damaged_segment", report.name)
        return header, last, report

    @staticmethod
    def _lost_seqs(found: Survey, first_seq: int, tail_upto: int | None) -> list[tuple[int, int]]:
        """The seqs the damaged byte ranges held: between the intact frames around each range."""
        lost = []
        starts = {start: frame.seq for start, _, frame in found.frames}
        ends = {end: frame.seq for _, end, frame in found.frames}
        for begin, end in found.damaged:
            before = ends.get(begin, first_seq - 1)
            after = starts.get(end)
            upper = after - 1 if after is not None else tail_upto
            if upper is not None and upper > before:
                lost.append((before + 1, upper))
        return lost

    def _quarantine(self, path: Path, data: bytes, found: Survey, detected: str, why: str,
                    lost: list[tuple[int, int]], kind: str) -> Path:
        """Keep the damaged bytes (a link to the whole file, or a copy of its end) and a JSON report."""
        directory = self.directory / QUARANTINE
        directory.mkdir(exist_ok=True)
        name = f"{path.name}.{detected}-{time.time_ns()}"
        target = directory / name
        if kind == "whole":
            try:
                os.link(path, target)  # the original inode, untouched: the repair replaces the name only
            except OSError:
                shutil.copyfile(path, target)
        else:
            with open(target, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        frames = found.frames
        report = {
            "segment": path.name, "quarantined": name, "kept": kind,
            "kept_from_offset": found.damaged[0][0] if kind == "tail" else 0,
            "detected": detected, "why": why, "unit_id": self.unit_id,
            "log_id": None if found.header is None else found.header.get("log_id"),
            "size": found.size, "header_intact": found.header is not None,
            "damaged_ranges": [list(r) for r in found.damaged],
            "recovered": {"count": len(frames), "first_seq": frames[0][2].seq if frames else None,
                          "last_seq": frames[-1][2].seq if frames else None},
            "lost_seqs": [list(r) for r in lost], "noted_at": self.clock(),
        }
        report_path = directory / f"{name}.json"
        with open(report_path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        self._sync_directory(directory)
        self.damage_reports.append(report_path)
        log.error("decision log %s: %s damaged (%s, found at %s): %d intact record(s) kept, seqs lost: %s; "
                  "original bytes in %s, report %s", self.directory, path.name, why, detected, len(frames),
                  ", ".join(f"{a}..{b}" for a, b in lost) or "none", target, report_path.name)
        return report_path

    def _known_log_id(self) -> str:
        for _, path in reversed(list_segments(self.directory)):
            try:
                with open(path, "rb") as f:
                    header = read_header(f)
            except FileNotFoundError:
                continue
            if header is not None:
                return str(header["log_id"])
        mark = self._high_water.read()
        return mark[0] if mark is not None else getattr(self, "log_id", None) or secrets.token_hex(8)

    def _sync_directory(self, directory: Path | None = None) -> None:
        if self.fsync == "never":
            return
        fd = os.open(directory or self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ---- the writer thread --------------------------------------------------------------------

    def _write_loop(self) -> None:
        unsynced: list[Frame] = []  # written, waiting for the fsync that lets them be published
        last_sync = time.monotonic()
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    due = [t for t in (self._scrub_at, last_sync + self.fsync_interval_s if unsynced else None)
                           if t is not None]
                    if not due:
                        self._cond.wait()
                        continue
                    remaining = min(due) - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                queued, self._pending = self._pending, []
                closing = self._closing
            self._check_live()
            batch = self._encode(queued)
            written = self._write(batch)
            done = len(queued) - len(written)  # the lost ones are done too: counted in _encode and _write
            unsynced += written
            synced = False
            if unsynced and (closing or self.fsync != "interval"
                             or time.monotonic() - last_sync >= self.fsync_interval_s):
                self._sync(closing)
                last_sync = time.monotonic()
                self._persist_marks()
                self._publish(unsynced)
                done += len(unsynced)
                unsynced = []
                synced = True
            elif self._unsaved_gaps:
                self._persist_marks()
            if written or self._fault is not None:
                self._check_space()
            if synced and self._written_after == self._failures:
                self._fault = None  # the newest event is a write that succeeded and is synced: records persist
            if not queued and not synced and not closing and self._scrub_at is not None \
                    and time.monotonic() >= self._scrub_at:
                self._scrub_step()
            with self._cond:
                self._processed += done
                self._progress_at = time.monotonic()
                self._cond.notify_all()
                if closing and not self._pending:
                    break
        self._close_segment()
        self._persist_marks()

    def _encode(self, queued: list[tuple[int, float, Record]]) -> list[Frame]:
        frames = []
        for seq, wall_time, record in queued:
            try:
                frames.append(Frame(seq, wall_time, encode_record(record)))
            except (ValueError, TypeError) as exc:  # RecordError, or a value JSON cannot hold: a defect
                self.encode_error = f"record seq {seq} cannot be encoded: {exc}"
                self._drop(seq, seq, "encode_failed", self.encode_error)
        return frames

    def _write(self, batch: list[Frame]) -> list[Frame]:
        """Write a batch with one write per segment touched; return the frames now in the OS's hands."""
        written: list[Frame] = []
        i = 0
        while i < len(batch):
            try:
                segment = self._segment_for(FRAME.size + len(batch[i].payload), batch[i].seq)
            except OSError as exc:
                self._write_failed(batch[i:i + 1], exc)
                i += 1
                continue
            room = self.segment_max_bytes - segment.size
            chunk: list[Frame] = []
            parts: list[bytes] = []
            size = 0
            while i < len(batch):
                frame = batch[i]
                length = FRAME.size + len(frame.payload)
                if chunk and (size + length > room or size >= _WRITE_CHUNK or len(parts) >= _WRITE_PARTS):
                    break  # the rest goes to the next segment, or the next write
                head = _TAIL.pack(frame.seq, frame.wall_time)
                crc = binascii.crc32(frame.payload, binascii.crc32(head))
                parts += (FRAME.pack(len(frame.payload), crc, frame.seq, frame.wall_time), frame.payload)
                chunk.append(frame)
                size += length
                i += 1
            try:
                done = os.writev(segment.fd, parts)  # one system call, no joined copy
                if done != size:
                    raise OSError(errno.EIO, f"short write: {done} of {size} bytes")
            except OSError as exc:
                try:
                    os.ftruncate(segment.fd, segment.size)  # no partial frame stays behind
                except OSError:
                    pass  # the next reopen cuts it as a torn tail
                self._write_failed(chunk, exc)
                continue
            segment.size += size
            segment.last_seq = chunk[-1].seq
            written += chunk
            self._written_after = self._failures
        if written:
            with self._cond:
                self._consumed_next = max(self._consumed_next, written[-1].seq + 1)
        return written

    def _write_failed(self, frames: list[Frame], exc: OSError) -> None:
        """Count the frames as lost and leave the segment for a new one."""
        self.last_error = f"{exc.strerror or exc}"
        start = 0
        for k in range(1, len(frames) + 1):  # one gap per run of consecutive seqs
            if k == len(frames) or frames[k].seq != frames[k - 1].seq + 1:
                self._drop(frames[start].seq, frames[k - 1].seq, "write_failed", f"write failed: {self.last_error}")
                start = k
        self._close_segment()  # synced: the frames written into it before the failure may still be unsynced

    def _check_live(self) -> None:
        """The live segment must be exactly what the writer wrote: another size means someone cut or grew it."""
        segment = self._segment
        if segment is None:
            return
        try:
            size = os.fstat(segment.fd).st_size
        except OSError:
            size = -1
        if size != segment.size:
            self._repair_live(f"live segment is {size} bytes, the writer wrote {segment.size}", "running")

    def _repair_live(self, why: str, detected: str) -> None:
        segment = self._segment
        self._close_segment()
        try:
            self._repair(segment.path, detected, tail_upto=segment.last_seq, expect_last=segment.last_seq, why=why)
        except OSError as exc:
            self.last_error = f"{exc.strerror or exc}"
            log.error("decision log %s: cannot repair %s: %s", self.directory, segment.path, self.last_error)

    def _segment_for(self, frame_len: int, seq: int) -> _Segment:
        segment = self._segment
        if segment is not None and (segment.size + frame_len > self.segment_max_bytes
                                    or self.clock() - segment.created >= self.segment_max_age_s):
            self._close_segment()
            self._apply_retention()
            segment = None
        if segment is None:
            segment = self._segment = self._open_segment(seq)
        return segment

    def _header_bytes(self, header: dict) -> bytes:
        raw = json.dumps(header).encode("utf-8")
        return MAGIC + _HEADER_LEN.pack(len(raw)) + raw

    def _open_segment(self, seq: int) -> _Segment:
        path = segment_path(self.directory, seq)
        created = self.clock()
        head = self._header_bytes({"unit_id": self.unit_id, "log_id": self.log_id, "first_seq": seq,
                                   "created": created, "format": 1})
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            if os.write(fd, head) != len(head):
                raise OSError(errno.EIO, f"short write of the segment header of {path}")
            self._sync_directory()
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return _Segment(path, fd, len(head), created, seq)

    def _close_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        try:
            os.fsync(segment.fd)
        except OSError as exc:
            self._failed(f"cannot sync {segment.path.name}: {exc.strerror or exc}")
        finally:
            try:
                os.close(segment.fd)
            except OSError:
                pass  # nothing left to lose: the fsync above said whether its data is safe

    def _sync(self, closing: bool) -> None:
        if self._segment is None or (self.fsync == "never" and not closing):
            return
        try:
            os.fsync(self._segment.fd)
        except OSError as exc:
            self._failed(f"fsync failed: {exc.strerror or exc}")

    def _failed(self, why: str) -> None:
        self.last_error = why
        self._failures += 1
        if why != self._fault:  # each new trouble once, not once per cycle
            log.error("decision log %s: %s", self.directory, why)
        self._fault = why

    def _persist_marks(self) -> None:
        """Save the new gaps, then the high-water mark that covers them and every seq written."""
        with self._cond:
            gaps, self._unsaved_gaps = self._unsaved_gaps, []
            consumed = self._consumed_next
        try:
            if gaps:
                with open(self.directory / GAPS, "a", encoding="utf-8") as f:
                    f.write("".join(json.dumps(g) + "\n" for g in gaps))
                    f.flush()
                    if self.fsync != "never":
                        os.fsync(f.fileno())
            if consumed > self._hw_saved:
                self._high_water.write(self.log_id, consumed)
                self._hw_saved = consumed
        except OSError as exc:
            with self._cond:
                self._unsaved_gaps[:0] = gaps  # tried again with the next sync
            self._failed(f"cannot save the seq high-water mark or gaps: {exc.strerror or exc}")

    def _check_space(self) -> None:
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return
        free = st.f_bavail * st.f_frsize
        self._low_space = (None if free >= self.min_free_bytes else
                           f"{free // 1024} kB free on the log's file system, below the {self.min_free_bytes // 1024}"
                           f" kB the log keeps in reserve")

    def _publish(self, frames: list[Frame]) -> None:
        # Durable now, so catch-up may serve them: advance before sending, so that a subscriber
        # never receives a seq that catch-up does not admit yet.
        self.published_next = frames[-1].seq + 1
        if self.publisher is not None:
            publish = self.publisher.publish
            for frame in frames:
                publish(frame.seq, frame.wall_time, frame.payload)

    # ---- scrubbing: re-reading the log in idle time --------------------------------------------

    def _scrub_step(self) -> None:
        """Verify the next piece of the log; a damaged segment is repaired at once. A pass ends at the live end."""
        segments = [s for s in list_segments(self.directory) if s[0] >= self._scrub_segment]
        if not segments:
            self._scrub_pass_done()
            return
        first, path = segments[0]
        if first != self._scrub_segment:
            self._scrub_segment, self._scrub_offset = first, None
        live = self._segment is not None and self._segment.path == path
        try:
            with open(path, "rb") as f:
                size = self._segment.size if live else os.fstat(f.fileno()).st_size
                if self._scrub_offset is None:
                    if read_header(f) is None:
                        self._scrub_found(path, live, len(segments) > 1, "segment header unreadable")
                        return
                    self._scrub_offset = f.tell()
                end = begin = self._scrub_offset
                for frame_end, _ in _scan(f, begin):
                    end = frame_end
                    if end >= size or end - begin >= _SCRUB_STEP_BYTES:
                        break
        except FileNotFoundError:  # retention removed it
            self._scrub_segment += 1
            return
        self._scrub_offset = end
        self._scrub_at = time.monotonic() + _SCRUB_PAUSE_S
        if end - begin >= _SCRUB_STEP_BYTES and end < size:
            return
        if end < size:
            self._scrub_found(path, live, len(segments) > 1, f"CRC or length wrong at offset {end}")
        elif live or len(segments) == 1:
            self._scrub_pass_done()
        else:
            self._scrub_segment, self._scrub_offset = first + 1, None

    def _scrub_found(self, path: Path, live: bool, has_next: bool, why: str) -> None:
        if live:
            self._repair_live(why, "scrub")
        else:
            later = [s for s, _ in list_segments(self.directory) if s > int(path.name[:20])]
            try:
                self._repair(path, "scrub", tail_upto=later[0] - 1 if later else None, why=why)
            except OSError as exc:
                self._failed(f"cannot repair {path.name}: {exc.strerror or exc}")
        self._scrub_segment, self._scrub_offset = int(path.name[:20]) + 1, None
        if not has_next:
            self._scrub_pass_done()

    def _scrub_pass_done(self) -> None:
        self._scrub_segment, self._scrub_offset = 0, None
        self._scrub_at = time.monotonic() + self.scrub_interval_s

    # ---- retention ----------------------------------------------------------------------------

    def _apply_retention(self) -> None:
        """Delete whole closed segments older than retention_s, then the oldest beyond retention_max_bytes.

        A segment's age counts from the creation of the segment after it (when it stopped growing).
        The newest segment (the open one) is never deleted, nor are the gaps and the high-water mark.
        Retention beats catch-up: a historian away for longer than the retention finds the oldest
        records gone and records the range as lost. A removed segment's quarantined bytes go with it.
        """
        segments = [p for _, p in list_segments(self.directory)]
        candidates = segments[:-1]
        now = self.clock()
        doomed: list[Path] = []
        if self.retention_s is not None:
            for path, successor in zip(candidates, segments[1:]):
                ended = self._created(successor)
                if ended is None or now - ended < self.retention_s:
                    break
                doomed.append(path)
        if self.retention_max_bytes is not None:
            sizes = {p: p.stat().st_size for p in segments if p.exists()}
            total = sum(sizes.values()) - sum(sizes.get(p, 0) for p in doomed)
            for path in candidates[len(doomed):]:
                if total <= self.retention_max_bytes:
                    break
                doomed.append(path)
                total -= sizes.get(path, 0)
        for path in doomed:
            for stale in [path, *(self.directory / QUARANTINE).glob(path.name + ".*")]:
                stale.unlink(missing_ok=True)
            log.info("decision log %s: retention removed %s", self.directory, path.name)

    @staticmethod
    def _created(path: Path) -> float | None:
        try:
            with open(path, "rb") as f:
                header = read_header(f)
        except FileNotFoundError:
            return None
        return None if header is None else float(header["created"])


def _uncovered(first: int, last: int, gaps: list[dict]) -> list[tuple[int, int]]:
    """The parts of first..last that no gap in `gaps` covers."""
    pieces = [(first, last)]
    for g in gaps:
        if g["first"] > last or g["last"] < first:
            continue
        pieces = [piece for a, b in pieces
                  for piece in ((a, min(b, g["first"] - 1)), (max(a, g["last"] + 1), b)) if piece[0] <= piece[1]]
    return pieces
