"""Publisher and catch-up service on real ZeroMQ sockets (127.0.0.1, ports chosen by the OS)."""

import json
import random
import struct
import threading
import time

import pytest
import zmq

from boiler_ai.record.catchup import CatchupService
from boiler_ai.record.log import DurableLog, iter_frames
from boiler_ai.record.publisher import Publisher, unpack_header
from boiler_ai.record.recorder import Recorder
from boiler_ai.record.schema import decode
from boiler_ai.record.synthetic import signal_names, stamped, synthetic_record

ANY = "tcp://127.0.0.1:*"
SIGNALS = signal_names(20)


def records(n, seed=0, start=0):
    rng = random.Random(seed)
    return [synthetic_record(rng, cycle=start + i, wall_time=1.7e9 + start + i, signals=SIGNALS) for i in range(n)]


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def subscribe(ctx, endpoint, topic=b"unit1", hwm=1000):
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, hwm)
    sub.setsockopt(zmq.LINGER, 0)
    sub.subscribe(topic)
    sub.connect(endpoint)
    return sub


def request(ctx, endpoint, body, *, dealer=False):
    sock = ctx.socket(zmq.DEALER if dealer else zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        sock.send_multipart([b"", payload] if dealer else [payload])
        assert sock.poll(5000), "no reply from the catch-up service"
        frames = sock.recv_multipart()
    finally:
        sock.close()
    if dealer:
        assert frames[0] == b""
        frames = frames[1:]
    return json.loads(frames[0]), frames[1:]


def wait_for_subscription(recorder, sub, timeout=5.0):
    """Publish until the subscription is live (ZeroMQ's slow joiner); return what arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recorder.append(stamped(recorder.log, records(1, start=recorder.log.next_seq)[0]))
        if sub.poll(100):
            return
    raise AssertionError("subscription never became live")


def test_live_messages_carry_topic_header_and_the_logged_bytes(tmp_path, ctx):
    with Recorder(tmp_path, "unit1", publish_endpoint=ANY, catchup_endpoint=ANY, context=ctx,
                  fsync="every_record") as recorder:
        sub = subscribe(ctx, recorder.publisher.endpoint)
        wait_for_subscription(recorder, sub)
        while sub.poll(200):
            sub.recv_multipart()
        first = recorder.log.next_seq
        for r in records(5, seed=1, start=first):
            recorder.append(stamped(recorder.log, r))
        got = [sub.recv_multipart() for _ in range(5)]
    logged = {f.seq: f for _, _, f in iter_frames(tmp_path)}
    for i, (topic, header, payload) in enumerate(got):
        seq, wall_time = unpack_header(header)
        assert topic == b"unit1" and seq == first + i
        assert struct.unpack(">HQd", header) == (1, seq, wall_time)
        assert payload == logged[seq].payload and wall_time == logged[seq].wall_time
        assert decode(payload)["seq"] == seq
    sub.close()


def test_catchup_serves_from_a_seq_and_reports_what_the_log_lacks(tmp_path, ctx):
    class Stall:
        drop_count = 0
        gate = threading.Event()

        def publish(self, seq, wall_time, payload):
            self.gate.wait()

        def close(self):
            self.gate.set()

    stall = Stall()
    log = DurableLog(tmp_path, "unit1", fsync="never", queue_size=4, publisher=stall)
    service = CatchupService(log, ANY, context=ctx, max_records=3)
    try:
        for r in records(2):
            log.append(stamped(log, r))
        time.sleep(0.3)  # the writer takes seqs 0-1 and stalls; 2-5 queue; 6-9 are dropped
        for r in records(8, seed=1, start=2):
            log.append(stamped(log, r))
        stall.gate.set()
        log.flush(10)
        for r in records(2, seed=2, start=10):
            log.append(stamped(log, r))
        log.flush(10)

        head, frames = request(ctx, service.endpoint, {"op": "info", "id": "a"})
        assert head["ok"] and head["id"] == "a" and head["unit_id"] == "unit1"
        assert head["log_id"] == log.log_id and head["first_seq"] == 0 and head["next_seq"] == 12
        assert frames == []

        head, frames = request(ctx, service.endpoint, {"op": "fetch", "from_seq": 0, "max_records": 100})
        assert head["seqs"] == [0, 1, 2]  # capped by the service's max_records
        assert [decode(f)["seq"] for f in frames] == [0, 1, 2]
        assert head["wall_times"] == [1.7e9, 1.7e9 + 1, 1.7e9 + 2]

        head, frames = request(ctx, service.endpoint, {"op": "fetch", "from_seq": 3, "max_records": 3})
        assert head["seqs"] == [3, 4, 5]
        head, frames = request(ctx, service.endpoint, {"op": "fetch", "from_seq": 6, "max_records": 3},
                               dealer=True)
        assert head["seqs"] == [10, 11]  # 6-9 were never written: a gap the client records as lost
        assert decode(frames[0])["log_dropped_count"] == 4
        head, frames = request(ctx, service.endpoint, {"op": "fetch", "from_seq": 12, "max_records": 3})
        assert head["seqs"] == [] and head["next_seq"] == 12  # nothing newer yet
    finally:
        service.close()
        log.close()


@pytest.mark.parametrize("body, error", [
    (b"not json", "bad request"),
    (b"[1]", "expected a JSON object"),
    ({"op": "delete"}, "unknown op"),
    ({"op": "fetch", "from_seq": -1}, "from_seq >= 0"),
    ({"op": "fetch", "from_seq": 0, "max_records": 0}, "max_records >= 1"),
])
def test_catchup_answers_bad_requests_and_keeps_serving(tmp_path, ctx, body, error):
    with DurableLog(tmp_path, "unit1") as log:
        service = CatchupService(log, ANY, context=ctx)
        try:
            head, _ = request(ctx, service.endpoint, body)
            assert head["ok"] is False and error in head["error"]
            head, _ = request(ctx, service.endpoint, {"op": "info"})
            assert head["ok"] and head["first_seq"] is None and head["next_seq"] == 0
        finally:
            service.close()


def test_full_subscriber_queue_never_blocks_and_drops_are_counted(tmp_path, ctx):
    publisher = Publisher(ANY, "unit1", hwm=5, context=ctx)
    sub = subscribe(ctx, publisher.endpoint, hwm=5)  # subscribes, then never reads
    deadline = time.monotonic() + 5
    while publisher.sent_count == 0 and time.monotonic() < deadline:
        publisher.publish(0, 0.0, b"probe")  # until the subscription is live
        time.sleep(0.01)
    with DurableLog(tmp_path, "unit1", fsync="never", publisher=publisher) as log:
        for r in records(300):
            log.append(stamped(log, r))
        assert log.flush(20)
        drops = publisher.drop_count
        assert drops > 0
        later = stamped(log, records(1, start=300)[0])
        log.append(later)
    assert later.publish_drop_count == drops  # the count travels in the next record
    assert len(list(iter_frames(tmp_path))) == 301  # dropped live, never from the log
    sub.close()


def test_endpoints_already_taken_fail_with_the_endpoint_named(tmp_path, ctx):
    publisher = Publisher(ANY, "unit1", context=ctx)
    try:
        with pytest.raises(OSError, match="decision publisher on tcp://127.0.0.1"):
            Publisher(publisher.endpoint, "unit1", context=ctx)
        with pytest.raises(OSError, match="catch-up service on tcp://127.0.0.1"):
            Recorder(tmp_path, "unit1", catchup_endpoint=publisher.endpoint, context=ctx)
    finally:
        publisher.close()


def test_a_port_freed_while_binding_is_taken_a_port_held_longer_is_not(ctx):
    # a restart in the same process: the old socket's port is released by ZeroMQ's I/O thread, a little later
    publisher = Publisher(ANY, "unit1", context=ctx)
    endpoint = publisher.endpoint
    threading.Timer(0.1, publisher.close).start()
    again = Publisher(endpoint, "unit1", context=ctx)
    try:
        assert again.endpoint == endpoint
        started = time.monotonic()
        with pytest.raises(OSError, match="decision publisher on tcp://127.0.0.1"):
            Publisher(endpoint, "unit1", context=ctx)
        assert time.monotonic() - started < 2.0  # a port really in use is reported, after the short wait
    finally:
        again.close()


def test_recorder_from_the_daemon_config(tmp_path, ctx):
    from boiler_ai.config import RecordConfig
    from boiler_ai.daemon import recorder_for

    cfg = RecordConfig(log_dir=tmp_path / "log", publish_endpoint=ANY, catchup_endpoint=ANY, fsync="every_record",
                       fsync_interval_ms=200, segment_max_mb=0.05, segment_max_age_s=3600.0, retention_days=0.0,
                       retention_max_mb=1.0, queue_size=100, state_every_cycles=60)
    with recorder_for(cfg, "unit1", context=ctx) as recorder:
        assert recorder.log.fsync == "every_record" and recorder.log.retention_s is None
        assert recorder.log.retention_max_bytes == 1024 * 1024
        assert recorder.log.segment_max_bytes == int(0.05 * 1024 * 1024)
        for r in records(30):
            recorder.append(stamped(recorder.log, r))
        recorder.log.flush(10)
        head, frames = request(ctx, recorder.catchup.endpoint, {"op": "fetch", "from_seq": 25, "max_records": 10})
        assert head["seqs"] == [25, 26, 27, 28, 29]
    assert len(list(iter_frames(tmp_path / "log"))) == 30
