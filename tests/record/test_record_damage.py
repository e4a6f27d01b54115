"""The log never lies: damage found while the daemon runs, seqs never reused, historians consistent with the log.

The issue's scenario: `truncate -s -3000` on the live segment mid-run, the daemon goes on, then
restarts. Before the fix the log set aside 201 intact records as a "torn tail", reused their seqs,
and the historian ended up holding records that differ from the log's for the same seq.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import threading
import time

import pytest
import zmq
from rigs.waiting import wait_for

from boiler_ai.record.historian import Historian
from boiler_ai.record.log import QUARANTINE, DurableLog, iter_frames, list_segments, read_gaps
from boiler_ai.record.recorder import Recorder
from boiler_ai.record.store import SqliteStore
from boiler_ai.record.synthetic import signal_names, stamped, synthetic_record

SIGNALS = signal_names(30)


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"



def feed(log: DurableLog, rng: random.Random, n: int) -> None:
    """n cycles' records, a few milliseconds apart."""
    for _ in range(n):
        seq = log.next_seq
        log.append(stamped(log, synthetic_record(rng, cycle=seq, wall_time=1.7e9 + seq, signals=SIGNALS)))
        time.sleep(0.002)


def logged(directory) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for _, _, frame in iter_frames(directory):
        assert frame.seq not in out, f"seq {frame.seq} twice in the log"
        out[frame.seq] = frame.payload
    return out


class HistorianThread:
    def __init__(self, store, pub: str, catchup: str, context):
        self.historian = Historian(store, "unit1", pub, catchup, context=context, poll_s=0.3, commit_interval_s=0.05)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        try:
            self.historian.run(self.stop)
        except BaseException as exc:  # handed to the test
            self.errors.append(exc)

    def close(self):
        self.stop.set()
        self.thread.join(20)
        assert not self.errors, self.errors


@pytest.mark.parametrize("historian_during_damage", [True, False], ids=["historian live", "historian away"])
def test_live_segment_truncated_mid_run_then_restart(tmp_path, historian_during_damage):
    directory = tmp_path / "log"
    pub, catchup = free_endpoint(), free_endpoint()
    ctx = zmq.Context()
    store = SqliteStore(tmp_path / "historian.sqlite")
    rng = random.Random(5)
    options = dict(publish_endpoint=pub, catchup_endpoint=catchup, context=ctx, fsync="interval",
                   fsync_interval_ms=20)
    historian = HistorianThread(store, pub, catchup, ctx) if historian_during_damage else None
    try:
        with Recorder(directory, "unit1", **options) as recorder:
            feed(recorder.log, rng, 300)
            recorder.log.flush(10)
            before = logged(directory)
            segment = list_segments(directory)[-1][1]
            subprocess.run(["truncate", "-s", "-3000", str(segment)], check=True)
            cut = segment.stat().st_size
            intact = {seq: payload for _, end, f in iter_frames(directory) if end <= cut
                      for seq, payload in [(f.seq, f.payload)]}
            feed(recorder.log, rng, 300)  # the daemon goes on
            end_of_first_run = recorder.log.next_seq
        with Recorder(directory, "unit1", **options) as recorder:  # restart
            assert recorder.log.next_seq == end_of_first_run
            if historian is None:
                historian = HistorianThread(store, pub, catchup, ctx)
            feed(recorder.log, rng, 200)
            recorder.log.flush(10)
            last = recorder.log.next_seq - 1
            wait_for(lambda: store.resume_point("unit1")[0] == last, 60, "the historian to reach the end")
            historian.close()
    finally:
        if historian is not None:
            historian.stop.set()
            historian.thread.join(20)
        store.close()
        ctx.destroy(linger=0)

    log = logged(directory)
    truncated = sorted(set(before) - set(intact))
    assert 0 < len(truncated) <= 2  # 3000 bytes of ~4 kB records: the frame cut into, maybe one more
    # no intact record lost, none changed
    assert all(log[seq] == payload for seq, payload in intact.items())
    assert sorted(log) == [s for s in range(last + 1) if s not in truncated]  # every later record is there
    # no seq reused: the seqs the truncation took stay unused, and the gap says why
    gaps = read_gaps(directory)
    assert [(g["first"], g["last"], g["reason"]) for g in gaps] == [(truncated[0], truncated[-1], "damaged_segment")]
    report = json.loads((directory / QUARANTINE / gaps[0]["detail"]).read_text())
    assert report["detected"] == "running" and report["lost_seqs"] == [[truncated[0], truncated[-1]]]
    # the historian agrees with the log on every seq both hold, and holds every record of the log
    stored = dict(store_records(tmp_path / "historian.sqlite"))
    assert all(stored[seq] == payload for seq, payload in log.items())
    assert set(stored) - set(log) <= set(truncated)
    lost = SqliteStore(tmp_path / "historian.sqlite")
    try:
        assert lost.conflicts("unit1") == []
        ranges = lost.lost_ranges("unit1")
    finally:
        lost.close()
    if historian_during_damage:
        assert set(stored) == set(log) | set(truncated) and ranges == []  # it had them live, before the cut
    else:
        assert ranges == [(truncated[0], truncated[-1], "damaged_segment")]


def store_records(path):
    store = SqliteStore(path)
    try:
        return [(seq, text.encode()) for seq, text in store.records("unit1", None, None)]
    finally:
        store.close()


@pytest.mark.parametrize("into_next_frame", [100, 0], ids=["mid-frame", "on a frame boundary"])
def test_truncation_while_running_is_found_before_the_next_write(tmp_path, into_next_frame):
    rng = random.Random(1)
    with DurableLog(tmp_path, "unit1", fsync="every_record", scrub_interval_s=None) as log:
        feed(log, rng, 20)
        log.flush()
        segment = list_segments(tmp_path)[-1][1]
        frames = [(end, f.seq) for _, end, f in iter_frames(tmp_path)]
        with open(segment, "r+b") as f:
            f.truncate(frames[-3][0] + into_next_frame)  # the last two frames gone
        feed(log, rng, 5)
        log.flush()
        assert len(list_segments(tmp_path)) == 2  # the writer left the damaged segment for a new one
    assert sorted(logged(tmp_path)) == list(range(18)) + list(range(20, 25))
    assert [(g["first"], g["last"]) for g in read_gaps(tmp_path)] == [(18, 19)]


@pytest.mark.parametrize("where", ["closed segment", "live segment"])
def test_idle_scrub_finds_a_flipped_bit_and_keeps_every_intact_record(tmp_path, where):
    rng = random.Random(2)
    with DurableLog(tmp_path, "unit1", fsync="every_record", segment_max_bytes=30_000, scrub_interval_s=0.1) as log:
        feed(log, rng, 20)
        log.flush()
        segments = list_segments(tmp_path)
        path = segments[0][1] if where == "closed segment" else segments[-1][1]
        victim = [(start, f.seq) for p, end, f in iter_frames(tmp_path) if p == path
                  for start in [end - 24 - len(f.payload)]][1]
        with open(path, "r+b") as f:
            f.seek(victim[0] + 60)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x10]))
        wait_for(lambda: list((tmp_path / QUARANTINE).glob("*.json")), 10, "the scrub to find the damage")
        feed(log, rng, 2)
    assert sorted(logged(tmp_path)) == [s for s in range(22) if s != victim[1]]
    report = json.loads(next((tmp_path / QUARANTINE).glob("*.json")).read_text())
    assert report["detected"] == "scrub" and report["lost_seqs"] == [[victim[1], victim[1]]]
    assert [(g["first"], g["last"], g["reason"]) for g in read_gaps(tmp_path)] == [
        (victim[1], victim[1], "damaged_segment")]
