"""The durable decision log: the truth about what the daemon decided (DESIGN.md section 6).

Layout: one directory per unit, append-only segment files named `<first seq, 20 digits>.seg`.
A segment starts with a header (magic, length, JSON {unit_id, log_id, first_seq, created}) and then
holds frames:

    u32 payload length | u32 CRC-32 of (seq, wall_time, payload) | u64 seq | f64 wall_time | payload

all big-endian; the payload is the encoded record (schema.encode). After a crash or power loss the
last segment may end in a torn frame: reopening finds the last frame whose CRC checks, keeps
everything before it, moves the torn bytes aside to `<segment>.torn-<offset>` (never silently
dropped) and truncates. The log then continues in a new segment with the next seq.

The control cycle only enqueues (`append`) a record it has stamped itself; a writer thread encodes,
writes, fsyncs per policy and then publishes, so a subscriber never sees a record the log could
still lose, and the encoding (the largest cost of recording) is off the cycle's critical path. If the bounded queue
is full the record is dropped, counted, logged and counted in the next record
(`log_dropped_count`); its seq stays consumed, so the gap is visible everywhere.
"""

from __future__ import annotations

import binascii
import errno
import json
import logging
import os
import re
import secrets
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


def iter_frames(directory: str | Path, from_seq: int = 0, *, stop_seq: int | None = None,
                start: tuple[Path, int] | None = None) -> Iterator[tuple[Path, int, Frame]]:
    """Every intact frame with seq >= from_seq (and < stop_seq), oldest first, as (segment, end offset, frame).

    `start` (a segment and an offset at a frame boundary in it) skips the search for from_seq.
    Reads tolerate a live writer (segments appearing, rotating, being deleted by retention): the
    directory is listed again after each segment. A damaged frame in a segment that is not the newest
    one is logged and the rest of that segment skipped; its seqs then show as a gap.
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
        damaged_at = None
        try:
            # A large buffer: a catch-up scan reads frame after frame, and every system call hands
            # the GIL to another thread (the control cycle's, which should have it).
            with open(path, "rb", buffering=1 << 20) as f:
                if offset is None and read_header(f) is None:
                    damaged_at = 0
                else:
                    end = f.tell() if offset is None else offset
                    for frame_end, frame in _scan(f, end):
                        end = frame_end
                        if stop_seq is not None and frame.seq >= stop_seq:
                            return
                        if frame.seq >= from_seq:
                            yield path, end, frame
                    if end < os.fstat(f.fileno()).st_size and not _beyond(f, end, stop_seq):
                        damaged_at = end
        except FileNotFoundError:  # retention removed it under us: its records are gone
            pass
        later = [s for s in list_segments(directory) if s[0] > current]
        if not later:
            return
        if damaged_at is not None:
            log.warning("%s: damaged data at offset %d, rest of the segment skipped", path, damaged_at)
        current, path = later[0]
        offset = None


def _beyond(f, offset: int, stop_seq: int | None) -> bool:
    """True if the frame at `offset` is at or past stop_seq: a live writer's tail, not damage."""
    if stop_seq is None:
        return False
    f.seek(offset)
    head = f.read(FRAME.size)
    return len(head) < FRAME.size or FRAME.unpack(head)[2] >= stop_seq


def iter_records(directory: str | Path, from_seq: int = 0) -> Iterator[dict]:
    """Every intact record in a log directory, decoded, oldest first (for tools: export, replay)."""
    for _, _, frame in iter_frames(directory, from_seq):
        yield decode(frame.payload)


@dataclass(slots=True)
class _Segment:
    path: Path
    fd: int  # unbuffered: every write goes straight to the OS
    size: int
    created: float


class DurableLog:
    """Append-only decision log of one unit. `append` is called from the control cycle only.

    fsync: "every_record" (nothing is published before it is on disk; the writer groups the records
    queued meanwhile into one fsync), "interval" (fsync at most every fsync_interval_ms; records are
    published after the fsync that covers them) or "never" (the OS decides: a power loss may lose
    records already published, and their seqs would be reused; for tests and benchmarks).
    A closed segment is always fsynced, so only the newest segment can be torn.
    """

    def __init__(self, directory: str | Path, unit_id: str, *, fsync: str = "interval",
                 fsync_interval_ms: int = settings.LOG_FSYNC_INTERVAL_MS,
                 segment_max_bytes: int = int(settings.LOG_SEGMENT_MAX_MB * 1024 * 1024),
                 segment_max_age_s: float = settings.LOG_SEGMENT_MAX_AGE_S,
                 retention_s: float | None = settings.LOG_RETENTION_DAYS * 86400.0,
                 retention_max_bytes: int | None = None,
                 queue_size: int = settings.LOG_QUEUE_SIZE, publisher: Publisher | None = None, first_seq: int = 0,
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
        self.clock = clock

        self.dropped_count = 0  # records the log could not keep (queue full or write failed)
        self.last_error: str | None = None
        self._last_alarm = -1e18
        self._cond = threading.Condition()
        self._append_lock = threading.Lock()
        self._pending: list[tuple[int, float, Record]] = []  # (seq, wall_time, record), encoded by the writer
        self.encode_error: str | None = None
        self._enqueued = 0
        self._processed = 0
        self._closing = False
        self._segment: _Segment | None = None

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LogError(f"{self.directory}: cannot create the log directory ({exc.strerror or exc})") from exc
        self.log_id, self._next_seq = self._recover(first_seq)
        self.published_next = self._next_seq  # records below this are durable (per policy) and published
        self._apply_retention()
        self._writer = threading.Thread(target=self._write_loop, name=f"decision-log-{unit_id}", daemon=True)
        self._writer.start()

    # ---- the control cycle's side -------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def publish_drop_count(self) -> int:
        return self.publisher.drop_count if self.publisher is not None else 0

    def append(self, record: Record) -> int:
        """Queue `record` for the writer thread; never blocks on I/O. Returns its seq.

        The caller stamps the record (it is immutable; the log never edits it): `seq` must be this
        log's `next_seq` (there is one writer), the loss counters `dropped_count` and
        `publish_drop_count` as they stand. A full queue drops the record (counted, logged, and in
        the counter of the next record); its seq stays consumed. A record the writer cannot encode
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
            if len(self._pending) >= self.queue_size:
                self._drop(1, f"queue full ({self.queue_size} records)")
                return seq
            self._pending.append((seq, float(wall_time), record))
            self._enqueued += 1
            if len(self._pending) == 1:
                self._cond.notify_all()
        return seq

    def _drop(self, count: int, why: str) -> None:
        with self._cond:  # both threads drop; the condition's lock is reentrant
            self.dropped_count += count
            now = time.monotonic()
            if now - self._last_alarm < 10.0:  # one alarm per 10 s, with the running total
                return
            self._last_alarm = now
        log.error("decision log %s: %d record(s) dropped: %s (%d dropped since start)",
                  self.directory, count, why, self.dropped_count)

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

    # ---- opening: find the end, repair a torn tail ----------------------------------------------

    def _recover(self, first_seq: int) -> tuple[str, int]:
        """Find the newest intact record, set aside and cut off a torn tail; return (log_id, next seq)."""
        segments = list_segments(self.directory)
        while segments:
            _, path = segments.pop()
            with open(path, "r+b") as f:
                header = read_header(f)
                if header is None:  # torn while the segment was being created: it holds no record
                    self._set_aside(f, path, 0)
                else:
                    if header.get("unit_id") != self.unit_id:
                        raise LogError(f"{path}: segment belongs to unit {header.get('unit_id')!r}, "
                                       f"not {self.unit_id!r}")
                    offset, last_seq = f.tell(), None
                    for frame_end, frame in _scan(f, offset):
                        offset, last_seq = frame_end, frame.seq
                    if offset < os.fstat(f.fileno()).st_size:
                        self._set_aside(f, path, offset)
                        f.truncate(offset)
                        os.fsync(f.fileno())
                    if last_seq is not None:
                        return str(header["log_id"]), last_seq + 1
            # No record in it: remove it, so the next segment can take its name and seq.
            path.unlink()
            self._sync_directory()
            if header is not None:
                return str(header["log_id"]), int(header["first_seq"])
        return secrets.token_hex(8), first_seq

    def _set_aside(self, f, path: Path, offset: int) -> None:
        f.seek(offset)
        torn = f.read()
        if not torn:
            return
        aside = path.with_name(f"{path.name}.torn-{offset}")
        aside.write_bytes(torn)
        log.warning("%s: torn tail of %d bytes at offset %d set aside in %s; the log continues after the last "
                    "intact record", path, len(torn), offset, aside.name)

    def _sync_directory(self) -> None:
        if self.fsync == "never":
            return
        fd = os.open(self.directory, os.O_RDONLY)
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
                    if not unsynced:
                        self._cond.wait()
                        continue
                    remaining = last_sync + self.fsync_interval_s - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                queued, self._pending = self._pending, []
                closing = self._closing
            batch = self._encode(queued)
            written = self._write(batch)
            done = len(queued) - len(written)  # the lost ones are done too: counted in _encode and _write
            unsynced += written
            if unsynced and (closing or self.fsync != "interval"
                             or time.monotonic() - last_sync >= self.fsync_interval_s):
                self._sync(closing)
                last_sync = time.monotonic()
                self._publish(unsynced)
                done += len(unsynced)
                unsynced = []
            with self._cond:
                self._processed += done
                self._cond.notify_all()
                if closing and not self._pending:
                    break
        self._close_segment()

    def _encode(self, queued: list[tuple[int, float, Record]]) -> list[Frame]:
        frames = []
        for seq, wall_time, record in queued:
            try:
                frames.append(Frame(seq, wall_time, encode_record(record)))
            except (ValueError, TypeError) as exc:  # RecordError, or a value JSON cannot hold: a defect
                self.encode_error = f"record seq {seq} cannot be encoded: {exc}"
                self._drop(1, self.encode_error)
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
            written += chunk
        return written

    def _write_failed(self, frames: list[Frame], exc: OSError) -> None:
        """Count the frames as lost and leave the segment (it may end in a partial frame) for a new one."""
        self.last_error = f"{exc.strerror or exc}"
        self._drop(len(frames), f"write failed: {self.last_error}")
        segment, self._segment = self._segment, None
        if segment is not None:
            try:
                os.close(segment.fd)
            except OSError:
                pass

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

    def _open_segment(self, seq: int) -> _Segment:
        path = segment_path(self.directory, seq)
        created = self.clock()
        header = json.dumps({"unit_id": self.unit_id, "log_id": self.log_id, "first_seq": seq,
                             "created": created, "format": 1}).encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        head = MAGIC + _HEADER_LEN.pack(len(header)) + header
        try:
            if os.write(fd, head) != len(head):
                raise OSError(errno.EIO, f"short write of the segment header of {path}")
            self._sync_directory()
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return _Segment(path, fd, len(head), created)

    def _close_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        try:
            os.fsync(segment.fd)
        except OSError as exc:
            self.last_error = f"{exc.strerror or exc}"
            log.error("decision log %s: cannot sync %s: %s", self.directory, segment.path, self.last_error)
        finally:
            os.close(segment.fd)

    def _sync(self, closing: bool) -> None:
        if self._segment is None or (self.fsync == "never" and not closing):
            return
        try:
            os.fsync(self._segment.fd)
        except OSError as exc:
            self.last_error = f"{exc.strerror or exc}"
            log.error("decision log %s: fsync failed: %s", self.directory, self.last_error)

    def _publish(self, frames: list[Frame]) -> None:
        # Durable now, so catch-up may serve them: advance before sending, so that a subscriber
        # never receives a seq that catch-up does not admit yet.
        self.published_next = frames[-1].seq + 1
        if self.publisher is not None:
            publish = self.publisher.publish
            for frame in frames:
                publish(frame.seq, frame.wall_time, frame.payload)

    # ---- retention ----------------------------------------------------------------------------

    def _apply_retention(self) -> None:
        """Delete whole closed segments older than retention_s, then the oldest beyond retention_max_bytes.

        A segment's age counts from the creation of the segment after it (when it stopped growing).
        The newest segment (the open one) is never deleted. Retention beats catch-up: a historian away
        for longer than the retention finds the oldest records gone and records the range as lost.
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
            for stale in [path, *path.parent.glob(path.name + ".torn-*")]:
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
