"""Durable decision log: framing, crash recovery, rotation, retention, fsync policies, overflow."""

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from boiler_ai.record.log import (
    FRAME,
    QUARANTINE,
    DurableLog,
    LogError,
    iter_frames,
    iter_records,
    list_segments,
    read_gaps,
    segment_path,
)
from boiler_ai.record.schema import decode, validate
from boiler_ai.record.synthetic import signal_names, stamped, synthetic_record

ROOT = Path(__file__).resolve().parents[2]
SIGNALS = signal_names(30)


def record(rng: random.Random, cycle: int, wall_time: float = 1.7e9) -> dict:
    return synthetic_record(rng, cycle=cycle, wall_time=wall_time + cycle, signals=SIGNALS)


def fill(log: DurableLog, n: int, seed: int = 0, wall_time: float = 1.7e9) -> list[int]:
    rng = random.Random(seed)
    start = log.next_seq
    return [log.append(stamped(log, record(rng, start + i, wall_time))) for i in range(n)]


def assert_consistent(records: list[dict]) -> None:
    """Seqs strictly increase, and every gap is accounted for by the log's dropped counter."""
    for a, b in zip(records, records[1:]):
        assert b["seq"] > a["seq"]
        gap = b["seq"] - a["seq"] - 1
        if b["log_dropped_count"] >= a["log_dropped_count"]:  # same daemon run
            assert gap == b["log_dropped_count"] - a["log_dropped_count"], (a["seq"], b["seq"])


class Collector:
    """Publisher stand-in: records what the writer published; can be made to stall."""

    def __init__(self):
        self.seqs: list[int] = []
        self.drop_count = 0
        self.gate = threading.Event()
        self.gate.set()

    def publish(self, seq, wall_time, payload):
        self.gate.wait()
        self.seqs.append(seq)
        return True

    def close(self):
        self.gate.set()


def test_append_read_back_and_restart_continues_seq(tmp_path):
    with DurableLog(tmp_path, "unit1", fsync="every_record") as log:
        assert fill(log, 50) == list(range(50))
        log.flush()
        assert [r["seq"] for r in log.read_from(45)] == [45, 46, 47, 48, 49]
        assert log.first_seq() == 0
    with DurableLog(tmp_path, "unit1") as log:
        assert log.next_seq == 50
        fill(log, 10, seed=1)
    records = list(iter_records(tmp_path))
    assert [r["seq"] for r in records] == list(range(60))
    for r in records:
        validate(r)
    assert len(list_segments(tmp_path)) == 2  # a restart starts a new segment


def test_seq_starts_where_asked_in_an_empty_directory(tmp_path):
    with DurableLog(tmp_path, "unit1", first_seq=1) as log:
        assert fill(log, 3) == [1, 2, 3]


def test_log_of_another_unit_is_refused(tmp_path):
    with DurableLog(tmp_path, "unit1") as log:
        fill(log, 1)
    with pytest.raises(LogError, match="belongs to unit 'unit1'"):
        DurableLog(tmp_path, "unit2")


def _last_segment(directory: Path) -> Path:
    return list_segments(directory)[-1][1]


def _frame_offsets(path: Path) -> list[int]:
    """Start offset of every frame in a segment."""
    return [end - FRAME.size - len(frame.payload) for _, end, frame in iter_frames(path.parent)
            if _ == path]


def _tear_mid_payload(path, offsets):
    with open(path, "r+b") as f:
        f.truncate(offsets[-1] + FRAME.size + 100)


def _tear_mid_header(path, offsets):
    with open(path, "r+b") as f:
        f.truncate(offsets[-1] + 10)


def _flip_a_payload_byte(path, offsets):
    with open(path, "r+b") as f:
        f.seek(offsets[-1] + FRAME.size + 50)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x40]))


def _zero_filled_tail(path, offsets):
    with open(path, "ab") as f:  # what some file systems leave after a power loss
        f.write(b"\x00" * 4096)


def _garbage_tail(path, offsets):
    with open(path, "ab") as f:
        f.write(os.urandom(3000))


def _flip_a_middle_frame(path, offsets):
    with open(path, "r+b") as f:
        f.seek(offsets[5] + FRAME.size + 50)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x01]))


def _tear_the_length_field_of_a_middle_frame(path, offsets):
    with open(path, "r+b") as f:
        f.seek(offsets[5])
        f.write(b"\xff\xff")


def _report(directory: Path) -> dict:
    reports = list((directory / QUARANTINE).glob("*.json"))
    assert len(reports) == 1, reports
    return json.loads(reports[0].read_text())


@pytest.mark.parametrize("tear, intact", [
    (_tear_mid_payload, 19), (_tear_mid_header, 19), (_flip_a_payload_byte, 19),
    (_zero_filled_tail, 20), (_garbage_tail, 20),
])
def test_damaged_end_is_cut_and_quarantined_and_seq_continues_after_the_highest_written(tmp_path, tear, intact,
                                                                                        caplog):
    with DurableLog(tmp_path, "unit1", fsync="every_record") as log:
        fill(log, 20)
    path = _last_segment(tmp_path)
    before = path.read_bytes()
    offsets = _frame_offsets(path)
    assert len(offsets) == 20
    tear(path, offsets)
    damaged = path.read_bytes()
    with caplog.at_level(logging.WARNING), DurableLog(tmp_path, "unit1") as log:
        assert log.next_seq == 20  # never a seq that was written before, even one the damage took
        fill(log, 5, seed=9)
    records = list(iter_records(tmp_path))
    assert [r["seq"] for r in records] == list(range(intact)) + list(range(20, 25))
    cut = offsets[intact] if intact < 20 else len(before)
    assert path.read_bytes() == before[:cut]  # every byte before the damage is untouched
    report = _report(tmp_path)
    assert report["kept"] == "tail" and report["kept_from_offset"] == cut and report["detected"] == "restart"
    assert report["damaged_ranges"] == [[cut, len(damaged)]]
    assert report["recovered"] == {"count": intact, "first_seq": 0, "last_seq": intact - 1}
    assert (tmp_path / QUARANTINE / report["quarantined"]).read_bytes() == damaged[cut:]
    lost = [[19, 19]] if intact == 19 else []
    assert report["lost_seqs"] == lost
    assert [[g["first"], g["last"], g["reason"]] for g in read_gaps(tmp_path)] == [[*r, "damaged_segment"]
                                                                                   for r in lost]
    assert "damaged" in caplog.text


@pytest.mark.parametrize("damage", [_flip_a_middle_frame, _tear_the_length_field_of_a_middle_frame])
def test_intact_records_after_a_damaged_frame_are_kept_at_restart(tmp_path, damage):
    with DurableLog(tmp_path, "unit1", fsync="every_record") as log:
        fill(log, 20)
    path = _last_segment(tmp_path)
    offsets = _frame_offsets(path)
    damage(path, offsets)
    original = path.read_bytes()
    with DurableLog(tmp_path, "unit1") as log:
        assert log.next_seq == 20
        fill(log, 2, seed=3)
    assert [r["seq"] for r in iter_records(tmp_path)] == [s for s in range(22) if s != 5]
    report = _report(tmp_path)
    assert report["kept"] == "whole" and report["lost_seqs"] == [[5, 5]]
    assert report["damaged_ranges"] == [[offsets[5], offsets[6]]]
    assert report["recovered"] == {"count": 19, "first_seq": 0, "last_seq": 19}
    # the quarantined file is the segment exactly as found; the segment now holds only intact frames
    assert (tmp_path / QUARANTINE / report["quarantined"]).read_bytes() == original
    assert path.read_bytes() == original[:offsets[5]] + original[offsets[6]:]
    assert [(g["first"], g["last"], g["reason"]) for g in read_gaps(tmp_path)] == [(5, 5, "damaged_segment")]


def test_seq_continues_after_the_high_water_mark_when_the_live_segment_lost_its_end(tmp_path):
    """The issue's case, with the daemon down: `truncate -s -3000` on the newest segment."""
    with DurableLog(tmp_path, "unit1", fsync="interval", fsync_interval_ms=10) as log:
        fill(log, 40)
    path = _last_segment(tmp_path)
    offsets = _frame_offsets(path)
    subprocess.run(["truncate", "-s", "-3000", str(path)], check=True)
    kept = sum(1 for o in offsets if o + 3000 <= path.stat().st_size) - 0
    with DurableLog(tmp_path, "unit1") as log:
        assert log.next_seq == 40
        fill(log, 3, seed=1)
    seqs = [r["seq"] for r in iter_records(tmp_path)]
    survivors = [s for s in range(40) if s in seqs]
    assert seqs == survivors + [40, 41, 42] and len(survivors) >= kept - 1 > 0
    assert [(g["first"], g["last"]) for g in read_gaps(tmp_path)] == [(len(survivors), 39)]


def test_seq_continues_after_the_high_water_mark_when_every_segment_is_gone(tmp_path):
    with DurableLog(tmp_path, "unit1", fsync="every_record") as log:
        fill(log, 5)
        log_id = log.log_id
    for _, path in list_segments(tmp_path):
        path.unlink()
    with DurableLog(tmp_path, "unit1") as log:
        assert (log.log_id, log.next_seq) == (log_id, 5)
    assert [(g["first"], g["last"], g["reason"]) for g in read_gaps(tmp_path)] == [(0, 4, "missing_at_restart")]


def test_segment_torn_while_being_created_is_dropped(tmp_path):
    with DurableLog(tmp_path, "unit1", fsync="every_record") as log:
        fill(log, 7)
    (tmp_path / f"{7:020d}.seg").write_bytes(b"BAIDLO")  # crash after a few bytes of the header
    with DurableLog(tmp_path, "unit1") as log:
        assert log.next_seq == 7
        fill(log, 1)
    assert [r["seq"] for r in iter_records(tmp_path)] == list(range(8))


CHILD = """
import random, sys
from boiler_ai.record.log import DurableLog
from boiler_ai.record.synthetic import signal_names, stamped, synthetic_record
log = DurableLog(sys.argv[1], "unit1", fsync="never", segment_max_bytes=150_000)
rng, first = random.Random(int(sys.argv[2])), log.next_seq
print(first, flush=True)
i = 0
while True:
    record = synthetic_record(rng, cycle=first + i, wall_time=1.7e9 + first + i, signals=signal_names(30))
    log.append(stamped(log, record))
    i += 1
"""


def test_writer_killed_while_appending_reopens_to_a_valid_log(tmp_path):
    """SIGKILL a process appending as fast as it can, three times; the log stays valid and continuous."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(42)
    starts = []
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), str(round_)],
                                 stdout=subprocess.PIPE, env=env, text=True)
        try:
            starts.append(int(child.stdout.readline()))
            time.sleep(rng.uniform(0.3, 0.8))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            child.stdout.close()
    with DurableLog(tmp_path, "unit1") as log:
        next_seq = log.next_seq
    records = list(iter_records(tmp_path))
    assert len(records) > 100, "the child did not get to append"
    assert records[-1]["seq"] == next_seq - 1
    assert starts[1] > 0 and starts == sorted(starts)  # each restart continued after the highest seq written
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(set(seqs))
    # every seq missing (dropped when the queue overflowed, or lost in a kill) is noted with a reason
    noted = {s for g in read_gaps(tmp_path) for s in range(g["first"], g["last"] + 1)}
    assert set(range(seqs[-1] + 1)) - set(seqs) <= noted
    for r in records[:: max(1, len(records) // 50)]:
        validate(r)


def test_a_segment_killed_before_its_header_was_written_is_removed_on_reopen(tmp_path):
    """A kill between creating a segment and writing its header leaves an empty file at the log's end."""
    with DurableLog(tmp_path, "unit1", fsync="never") as log:
        fill(log, 5)
    segment_path(tmp_path, 5).touch()
    with DurableLog(tmp_path, "unit1") as log:
        assert log.next_seq == 5
        fill(log, 2, seed=1)
    assert [r["seq"] for r in iter_records(tmp_path)] == list(range(7))


def test_rotation_by_size_and_by_age(tmp_path):
    now = [1000.0]
    size_dir, age_dir = tmp_path / "size", tmp_path / "age"
    with DurableLog(size_dir, "unit1", segment_max_bytes=40_000, fsync="never") as log:
        fill(log, 40)
    segments = list_segments(size_dir)
    assert len(segments) >= 3
    assert all(p.stat().st_size <= 40_000 for _, p in segments)
    assert [s for s, _ in segments] == [next(iter_frames(p.parent, s))[2].seq for s, p in segments]
    assert [r["seq"] for r in iter_records(size_dir)] == list(range(40))

    with DurableLog(age_dir, "unit1", segment_max_age_s=60, fsync="never", clock=lambda: now[0]) as log:
        for _ in range(6):
            fill(log, 2)
            log.flush()
            now[0] += 31  # a new segment every other batch
    assert [s for s, _ in list_segments(age_dir)] == [0, 4, 8]


def test_retention_by_age_and_by_total_size(tmp_path, caplog):
    now = [0.0]
    day = 86400.0
    with caplog.at_level(logging.INFO), DurableLog(
            tmp_path, "unit1", segment_max_age_s=day, retention_s=3 * day, fsync="never",
            clock=lambda: now[0]) as log:
        for _ in range(6):  # one segment per day
            fill(log, 3)
            log.flush()
            now[0] += day
        fill(log, 1)
        log.flush()
        # Day 6: segments that stopped growing 3 days ago or more (at days 1, 2, 3) are gone.
        assert [s for s, _ in list_segments(tmp_path)] == [9, 12, 15, 18]
        assert log.first_seq() == 9
        assert [r["seq"] for r in log.read_from(0)][:2] == [9, 10]
    assert "retention removed" in caplog.text

    sized = tmp_path / "sized"
    with DurableLog(sized, "unit1", segment_max_bytes=30_000, retention_max_bytes=100_000, fsync="never") as log:
        fill(log, 60)
        log.flush()
    total = sum(p.stat().st_size for _, p in list_segments(sized))
    assert total <= 100_000 + 30_000
    seqs = [r["seq"] for r in iter_records(sized)]
    assert seqs == list(range(seqs[0], 60)) and seqs[0] > 0


def test_overflow_is_counted_logged_and_recorded_never_silent(tmp_path, caplog):
    stalled = Collector()
    stalled.gate.clear()  # the writer will hang in publish(): a disk or network that stopped
    with caplog.at_level(logging.ERROR), DurableLog(tmp_path, "unit1", fsync="never", queue_size=5,
                                                    publisher=stalled) as log:
        seqs = fill(log, 3)
        time.sleep(0.3)  # the writer takes them and stalls publishing
        started = time.monotonic()
        seqs += fill(log, 20, seed=1)
        assert time.monotonic() - started < 2.0  # appending did not wait for the stalled writer
        assert log.dropped_count == 15  # 5 queued, the rest dropped
        assert "dropped" in caplog.text and "queue full" in caplog.text
        stalled.gate.set()
        assert log.flush(10)
        last = log.append(stamped(log, record(random.Random(2), 99)))
    assert seqs == list(range(23)) and last == 23
    records = list(iter_records(tmp_path))
    kept = [r["seq"] for r in records]
    assert kept == [0, 1, 2, 3, 4, 5, 6, 7, 23]
    assert records[-1]["log_dropped_count"] == 15
    assert_consistent(records)


def test_a_caller_that_keeps_no_real_time_waits_for_room_instead_of_dropping(tmp_path):
    """A stepped plant or a test rig appends faster than any disk: with wait=True a full queue delays
    the append until the writer has made room, and nothing is dropped."""
    slow = Collector()
    slow.gate.clear()
    with DurableLog(tmp_path, "unit1", fsync="never", queue_size=5, publisher=slow) as log:
        fill(log, 3)
        time.sleep(0.3)  # the writer takes them and stalls publishing
        threading.Timer(0.5, slow.gate.set).start()  # the writer comes back half a second later
        started = time.monotonic()
        rng = random.Random(1)
        for i in range(20):
            log.append(stamped(log, record(rng, 3 + i)), wait=True)
        assert time.monotonic() - started >= 0.4  # it waited for the writer
        assert log.flush(10)
        assert log.dropped_count == 0
    assert [r["seq"] for r in iter_records(tmp_path)] == list(range(23))


def test_record_the_writer_cannot_encode_is_counted_and_stops_further_appends(tmp_path, caplog):
    """Encoding runs on the writer thread, off the control cycle. A record it cannot encode is a
    defect in the code that built it: counted as dropped, and the next append refuses with its seq
    and field, so a daemon never goes on deciding things it cannot record."""
    with caplog.at_level(logging.ERROR), DurableLog(tmp_path, "unit1", fsync="never") as log:
        fill(log, 2)
        broken = record(random.Random(1), 2)
        broken["inputs"]["value"][0] = "not a number"
        log.append(stamped(log, broken))
        log.flush()
        assert log.dropped_count == 1
        with pytest.raises(LogError, match=r"record seq 2 cannot be encoded: decision record field inputs\.value"):
            log.append(stamped(log, record(random.Random(2), 3)))
    assert [r["seq"] for r in iter_records(tmp_path)] == [0, 1]
    assert "record seq 2 cannot be encoded" in caplog.text


@pytest.mark.parametrize("failure", ["disk_full", "short_write"])
def test_write_failure_is_counted_and_the_log_goes_on_in_a_new_segment(tmp_path, caplog, monkeypatch, failure):
    real_writev = os.writev

    def failing_writev(fd, parts):
        if failure == "disk_full":
            raise OSError(28, "No space left on device")
        return os.write(fd, parts[0][:10])  # the disk took 10 bytes, then filled up

    with caplog.at_level(logging.ERROR), DurableLog(tmp_path, "unit1", fsync="every_record") as log:
        fill(log, 2)
        log.flush()
        first = log._segment.path
        monkeypatch.setattr(os, "writev", failing_writev)
        fill(log, 3, seed=1)
        log.flush()
        monkeypatch.setattr(os, "writev", real_writev)
        assert log.dropped_count == 3 and log.last_error
        fill(log, 2, seed=2)
    records = list(iter_records(tmp_path))
    assert [r["seq"] for r in records] == [0, 1, 5, 6]
    assert records[2]["log_dropped_count"] == 3
    assert "write failed" in caplog.text
    in_first = [(end, frame.seq) for path, end, frame in iter_frames(tmp_path) if path == first]
    assert [seq for _, seq in in_first] == [0, 1]
    assert first.stat().st_size == in_first[-1][0]  # the partial frame was cut off at once


def test_fsync_policies_publish_only_what_is_durable(tmp_path):
    for policy in ("every_record", "never"):
        collector = Collector()
        with DurableLog(tmp_path / policy, "unit1", fsync=policy, publisher=collector) as log:
            fill(log, 10)
            assert log.flush(10)
            assert log.published_next == 10 and collector.seqs == list(range(10))
    collector = Collector()
    log = DurableLog(tmp_path / "interval", "unit1", fsync="interval", fsync_interval_ms=60_000, publisher=collector)
    fill(log, 5)
    time.sleep(0.3)
    assert log.published_next == 0 and collector.seqs == []  # written, but not yet covered by an fsync
    assert list(log.read_from(0)) == []  # catch-up does not serve it either
    log.close()  # closing syncs, then publishes
    assert collector.seqs == list(range(5)) and log.published_next == 5


def test_a_reader_resynchronises_after_a_damaged_frame_in_an_older_segment(tmp_path, caplog):
    with DurableLog(tmp_path, "unit1", segment_max_bytes=40_000, fsync="never") as log:
        fill(log, 30)
    first = list_segments(tmp_path)[0][1]
    offsets = _frame_offsets(first)
    _flip_a_payload_byte(first, offsets[:3])  # damage the third frame of the oldest segment
    with caplog.at_level(logging.WARNING):
        seqs = [r["seq"] for r in iter_records(tmp_path)]
    assert seqs == [s for s in range(30) if s != 2]  # only the damaged frame is missing
    assert "damaged" in caplog.text


def test_readers_resume_from_a_cursor(tmp_path):
    with DurableLog(tmp_path, "unit1", segment_max_bytes=40_000, fsync="never") as log:
        fill(log, 30)
        log.flush()
        frames = list(log.frames_from(0))
        path, end, frame = frames[11]
        rest = [f.seq for _, _, f in log.frames_from(12, start=(path, end))]
        assert rest == list(range(12, 30))
    assert decode(frames[0][2].payload)["seq"] == 0


def test_not_durable_from_a_failed_write_until_a_write_is_synced_again(tmp_path, monkeypatch):
    real_writev = os.writev
    with DurableLog(tmp_path, "unit1", fsync="interval", fsync_interval_ms=20) as log:
        fill(log, 2)
        log.flush()
        assert log.not_durable is None
        monkeypatch.setattr(os, "writev", lambda fd, parts: (_ for _ in ()).throw(OSError(5, "Input/output error")))
        fill(log, 1, seed=1)
        log.flush()
        assert "Input/output error" in log.not_durable
        fill(log, 1, seed=2)  # still failing: still not durable
        log.flush()
        assert "Input/output error" in log.not_durable
        monkeypatch.setattr(os, "writev", real_writev)
        fill(log, 1, seed=3)
        log.flush()
        assert log.not_durable is None
    assert [(g["first"], g["last"], g["reason"]) for g in read_gaps(tmp_path)] == [(2, 2, "write_failed"),
                                                                                   (3, 3, "write_failed")]


def test_not_durable_when_fsync_fails(tmp_path, monkeypatch):
    with DurableLog(tmp_path, "unit1", fsync="every_record") as log:
        fill(log, 1)
        log.flush()
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "Input/output error")))
        fill(log, 1, seed=1)
        log.flush()
        assert "fsync failed: Input/output error" in log.not_durable
        monkeypatch.undo()


def test_not_durable_while_the_file_system_is_short_of_the_reserve(tmp_path):
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with DurableLog(tmp_path, "unit1", min_free_bytes=free * 2) as log:
        fill(log, 1)
        log.flush()
        assert "kB free on the log's file system, below the" in log.not_durable
        log.min_free_bytes = 0
        fill(log, 1)
        log.flush()
        assert log.not_durable is None
    assert [r["seq"] for r in iter_records(tmp_path)] == [0, 1]  # the reserve is for records still to come


def test_not_durable_when_the_writer_makes_no_progress(tmp_path):
    stalled = Collector()
    with DurableLog(tmp_path, "unit1", fsync="never", publisher=stalled, max_lag_s=0.2) as log:
        fill(log, 1)
        log.flush()
        stalled.gate.clear()  # the writer hangs (a disk that stopped answering)
        fill(log, 2, seed=1)
        assert log.not_durable is None  # behind, but not yet by the bound
        time.sleep(0.4)
        assert "no progress for" in log.not_durable
        stalled.gate.set()
        assert log.flush(10)
        assert log.not_durable is None
        time.sleep(0.3)
        fill(log, 1, seed=2)  # after an idle spell, a new record does not count the idle time as lag
        assert log.not_durable is None
