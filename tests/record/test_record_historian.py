"""The historian stores every record exactly once, across its own SIGKILL, in SQLite and PostgreSQL."""

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import zmq
from rigs.stream_keys import stream_keys
from rigs.waiting import wait_for

from boiler_ai.record.catchup import CatchupService
from boiler_ai.record.historian import LOST_REASON, Historian, HistorianError
from boiler_ai.record.log import DurableLog, iter_frames
from boiler_ai.record.recorder import Recorder
from boiler_ai.record.schema import decode
from boiler_ai.record.store import SqliteStore, open_store
from boiler_ai.record.synthetic import signal_names, stamped, synthetic_record

ROOT = Path(__file__).resolve().parents[2]
ANY = "tcp://127.0.0.1:*"
SIGNALS = signal_names(30)
RUN = 10_000


def postgres_dsn() -> str:
    """The DSN tests/start_postgres.sh wrote; skip without it, except in CI where it must be there."""
    path = Path(os.environ.get("BOILER_AI_PG_DSN_FILE", "/tmp/boiler-ai-test-pg.dsn"))
    why = None
    if not path.is_file():
        why = f"no PostgreSQL for the tests: {path} missing (run tests/start_postgres.sh as root)"
    else:
        dsn = path.read_text().strip()
        try:
            import psycopg

            psycopg.connect(dsn, connect_timeout=5).close()
        except Exception as exc:  # any failure to reach the server means: no PostgreSQL here
            why = f"PostgreSQL from {path} not reachable: {exc}"
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; CI must test PostgreSQL")
        pytest.skip(why)
    return dsn


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """A database URL and a unit id nobody else uses; PostgreSQL rows are removed afterwards."""
    unit = f"unit-{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        yield str(tmp_path / "historian.sqlite"), unit
        return
    dsn = postgres_dsn()
    yield dsn, unit
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("decisions", "lost_ranges", "sources"):
            conn.execute(f"DELETE FROM {table} WHERE unit_id = %s", (unit,))


def start_historian(db_url, unit, recorder, *options: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "boiler_ai", "historian", "--unit", unit, "--pub", recorder.publisher.endpoint,
         "--catchup", recorder.catchup.endpoint, "--db", db_url, "--poll-s", "0.5", "--commit-ms", "100",
         "--batch", "1000", "--log-level", "warning", *options],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)



def stored(store, unit) -> int:
    return store.count(unit)


def test_historian_killed_mid_run_ends_with_every_record_exactly_once(tmp_path, db):
    db_url, unit = db
    ctx = zmq.Context()
    store = open_store(db_url)
    historian = None
    try:
        with Recorder(tmp_path / "log", unit, publish_endpoint=ANY, catchup_endpoint=ANY, context=ctx,
                      fsync="interval", fsync_interval_ms=50) as recorder:
            historian = start_historian(db_url, unit, recorder)
            rng = random.Random(7)
            killed = threading.Event()

            def feed():  # 10 000 cycles in bursts like a busy daemon; the kill comes at 3000 at the latest
                for i in range(RUN):
                    if i == 3000:
                        killed.wait(60)
                    record = synthetic_record(rng, cycle=i, wall_time=1.7e9 + i, signals=SIGNALS)
                    recorder.append(stamped(recorder.log, record))
                    if i % 200 == 199:
                        time.sleep(0.03)

            feeder = threading.Thread(target=feed)
            feeder.start()
            try:
                wait_for(lambda: stored(store, unit) >= 1500, 60, "the historian to store 1500 records")
                historian.send_signal(signal.SIGKILL)  # no chance to commit or say goodbye
                historian.wait(10)
                killed_at = stored(store, unit)
                killed.set()  # the run goes on while no historian listens
                time.sleep(0.5)
                historian = start_historian(db_url, unit, recorder)
            finally:
                killed.set()
                feeder.join()
            recorder.log.flush(30)
            wait_for(lambda: stored(store, unit) >= RUN, 90, "every record to be stored")
            historian.send_signal(signal.SIGTERM)
            assert historian.wait(20) == 0, historian.stderr.read()
        assert 1500 <= killed_at < RUN
        assert store.count(unit) == RUN
        assert store.lost_ranges(unit) == []
        logged = {f.seq: f.payload for _, _, f in iter_frames(tmp_path / "log")}
        seqs = []
        for seq, text in store.records(unit, None, None):
            assert text.encode() == logged[seq]  # byte for byte what the daemon logged
            seqs.append(seq)
        assert seqs == list(range(RUN))  # each exactly once, in order
        assert decode(text)["seq"] == RUN - 1
    finally:
        if historian is not None and historian.poll() is None:
            historian.kill()
            historian.wait(10)
        store.close()
        ctx.destroy(linger=0)


def test_historian_with_a_client_key_stores_every_record_of_a_curve_stream(tmp_path, db):
    """The daemon's stream behind CURVE: the historian command with its key pair backfills and follows it."""
    db_url, unit = db
    keys = stream_keys(tmp_path / "keys", "historian")
    rng = random.Random(3)
    store = open_store(db_url)
    historian = None
    try:
        with Recorder(tmp_path / "log", unit, publish_endpoint=ANY, catchup_endpoint=ANY, curve=keys.server(),
                      fsync="interval", fsync_interval_ms=50) as recorder:
            for i in range(300):  # before the historian starts: from the catch-up service
                recorder.append(stamped(recorder.log, synthetic_record(rng, cycle=i, wall_time=1.7e9 + i,
                                                                       signals=SIGNALS)))
            historian = start_historian(db_url, unit, recorder, *keys.options("historian"))
            wait_for(lambda: stored(store, unit) >= 300, 60, "the backfill through CURVE")
            for i in range(300, 600):  # while it listens: live from the publisher
                recorder.append(stamped(recorder.log, synthetic_record(rng, cycle=i, wall_time=1.7e9 + i,
                                                                       signals=SIGNALS)))
                time.sleep(0.002)
            wait_for(lambda: stored(store, unit) >= 600, 60, "the live records through CURVE")
            historian.send_signal(signal.SIGTERM)
            assert historian.wait(20) == 0, historian.stderr.read()
        assert store.count(unit) == 600 and store.lost_ranges(unit) == []
    finally:
        if historian is not None and historian.poll() is None:
            historian.kill()
            historian.wait(10)
        store.close()


def run_in_thread(historian: Historian):
    stop = threading.Event()
    errors: list[BaseException] = []

    def target():
        try:
            historian.run(stop)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return stop, thread, errors


class Stall:
    """Publisher stand-in that holds the writer until released (to make the log's queue overflow)."""

    drop_count = 0

    def __init__(self):
        self.gate = threading.Event()

    def publish(self, seq, wall_time, payload):
        self.gate.wait()
        return False

    def close(self):
        self.gate.set()


def test_seqs_the_log_never_had_are_recorded_as_lost_not_waited_for(tmp_path):
    ctx = zmq.Context()
    stall = Stall()
    log = DurableLog(tmp_path / "log", "unit1", fsync="never", queue_size=3, publisher=stall)
    service = CatchupService(log, ANY, context=ctx)
    store = SqliteStore(tmp_path / "h.sqlite")
    rng = random.Random(1)
    try:
        log.append(stamped(log, synthetic_record(rng, cycle=0, signals=SIGNALS)))
        time.sleep(0.3)
        for i in range(1, 10):  # 1-3 queue, 4-9 are dropped
            log.append(stamped(log, synthetic_record(rng, cycle=i, signals=SIGNALS)))
        stall.gate.set()
        log.flush(10)
        log.append(stamped(log, synthetic_record(rng, cycle=10, signals=SIGNALS)))
        log.flush(10)
        historian = Historian(store, "unit1", "tcp://127.0.0.1:1", service.endpoint, context=ctx, poll_s=0.2)
        stop, thread, errors = run_in_thread(historian)
        wait_for(lambda: store.count("unit1") == 5 or errors, 20, "the backfill")
        stop.set()
        thread.join(10)
        assert not errors
        assert [s for s, _ in store.records("unit1", None, None)] == [0, 1, 2, 3, 10]
        assert store.lost_ranges("unit1") == [(4, 9, "queue_full")]  # with the reason the log noted
        assert store.resume_point("unit1") == (10, log.log_id)
    finally:
        service.close()
        log.close()
        store.close()
        ctx.destroy(linger=0)


@pytest.mark.parametrize("stored_log, stored_seq, message", [
    ("0123456789abcdef", 0, "log was replaced"),
    (None, 50, "ends before seq 50"),  # None: the daemon's own log id
])
def test_a_log_that_disagrees_with_the_store_is_refused_not_mixed(tmp_path, stored_log, stored_seq, message):
    ctx = zmq.Context()
    store = SqliteStore(tmp_path / "h.sqlite")
    try:
        with Recorder(tmp_path / "log", "unit1", publish_endpoint=ANY, catchup_endpoint=ANY,
                      context=ctx) as recorder:
            recorder.append(stamped(recorder.log, synthetic_record(random.Random(0), signals=SIGNALS)))
            store.save("unit1", stored_log or recorder.log.log_id, [(stored_seq, 1.7e9, "{}")], [])
            historian = Historian(store, "unit1", recorder.publisher.endpoint, recorder.catchup.endpoint,
                                  context=ctx)
            stop, thread, errors = run_in_thread(historian)
            thread.join(20)
            stop.set()
        assert len(errors) == 1 and isinstance(errors[0], HistorianError)
        assert message in str(errors[0])
        assert store.count("unit1") == 1
    finally:
        store.close()
        ctx.destroy(linger=0)


def test_seqs_retention_removed_are_lost_without_a_noted_reason(tmp_path):
    ctx = zmq.Context()
    now = [0.0]
    log = DurableLog(tmp_path / "log", "unit1", fsync="never", segment_max_age_s=10, retention_s=15,
                     clock=lambda: now[0])
    service = CatchupService(log, ANY, context=ctx)
    store = SqliteStore(tmp_path / "h.sqlite")
    rng = random.Random(1)
    try:
        for i in range(8):  # one segment every two records; the oldest ones age out
            log.append(stamped(log, synthetic_record(rng, cycle=i, signals=SIGNALS)))
            log.flush(10)
            now[0] += 6
        store.save("unit1", log.log_id, [(0, 1.7e9, "{}")], [])  # stored before the historian went away
        historian = Historian(store, "unit1", "tcp://127.0.0.1:1", service.endpoint, context=ctx, poll_s=0.2)
        stop, thread, errors = run_in_thread(historian)
        wait_for(lambda: store.lost_ranges("unit1") or errors, 20, "the backfill")
        stop.set()
        thread.join(10)
        assert not errors
        first = log.first_seq()
        assert first > 1 and store.lost_ranges("unit1") == [(1, first - 1, LOST_REASON)]
    finally:
        service.close()
        log.close()
        store.close()
        ctx.destroy(linger=0)


def test_a_different_record_for_a_stored_seq_is_kept_out_and_reported(tmp_path, db, caplog):
    """Two different records for one seq: the first stays, the second goes to `conflicts`, an error is logged."""
    db_url, unit = db
    store = open_store(db_url)
    try:
        assert store.save(unit, "log1", [(0, 1.7e9, '{"a": 1}'), (1, 1.7e9, '{"a": 2}')], []) == []
        assert store.save(unit, "log1", [(1, 1.7e9, '{"a": 2}'), (2, 1.7e9, '{"a": 3}')], []) == []  # a repeat
        assert store.save(unit, "log1", [(2, 1.7e9, '{"b": 3}'), (3, 1.7e9, '{"a": 4}')], []) == [2]
        assert list(store.records(unit, None, None)) == [(0, '{"a": 1}'), (1, '{"a": 2}'), (2, '{"a": 3}'),
                                                         (3, '{"a": 4}')]
        assert store.conflicts(unit) == [(2, '{"b": 3}')]
        historian = Historian(store, unit, "tcp://127.0.0.1:1", "tcp://127.0.0.1:1")
        historian._rows = [(3, 1.7e9, '{"c": 4}'), (4, 1.7e9, '{"a": 5}')]
        historian.log_id = "log1"
        with caplog.at_level(logging.ERROR):
            historian._commit()
        assert "CONFLICT: 1 record(s)" in caplog.text and "seqs 3)" in caplog.text
        assert historian.conflict_count == 1 and historian.stored == 1
        assert store.count(unit) == 5
    finally:
        store.close()


def test_historian_command_exits_cleanly_when_told(tmp_path):
    """SIGTERM while the daemon is away: the command waits, retries, and stops with status 0."""
    db_url = str(tmp_path / "h.sqlite")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "boiler_ai", "historian", "--unit", "unit1", "--pub", "tcp://127.0.0.1:9",
         "--catchup", "tcp://127.0.0.1:9", "--db", db_url, "--timeout-s", "0.3", "--poll-s", "0.3"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "not reachable" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
