"""Decision records appended and published per second, and historian ingest per second into SQLite.

Realistic records (100 inputs, 18 manipulated variables, ~8.7 kB each) go through the daemon's record
stage as configured on a plant (durable log with fsync "interval", ZeroMQ publisher, catch-up service):

  append_publish_per_s    records / (time from the first append until the last is durable and published),
                          appending as fast as possible, with a subscriber in another process reading
  historian_ingest_per_s  `boiler-ai historian` in its own process filling an empty SQLite file from the
                          log those records are in (catch-up), from its first commit to its last
Each figure is the best of --repeat runs: machines are shared, the best run is the least disturbed.
The last line is a JSON object. Targets: append_publish_per_s >= 20000, historian_ingest_per_s >= 10000.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from boiler_ai.messages import Record  # noqa: E402
from boiler_ai.messages.wire import from_wire  # noqa: E402
from boiler_ai.record.recorder import Recorder  # noqa: E402
from boiler_ai.record.schema import encode  # noqa: E402
from boiler_ai.record.synthetic import mv_names, signal_names, synthetic_record  # noqa: E402

ANY = "tcp://127.0.0.1:*"


def stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    except sqlite3.OperationalError:  # the historian has not created its tables yet
        return 0


def historian(recorder: Recorder, db: Path) -> subprocess.Popen:
    """`boiler-ai historian` in its own process, as on a plant."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "boiler_ai", "historian", "--unit", "unit1", "--pub", recorder.publisher.endpoint,
         "--catchup", recorder.catchup.endpoint, "--db", str(db), "--log-level", "warning"],
        cwd=ROOT, env=env)


def wait_stored(db: Path, count: int, timeout: float = 300.0) -> tuple[float, int, float]:
    """Poll until `count` records are stored: (time of the first non-zero count, that count, time of the last)."""
    first_time, first_count = None, 0
    deadline = time.monotonic() + timeout
    while True:
        n = stored(db)
        now = time.perf_counter()
        if n and first_time is None:
            first_time, first_count = now, n
        if n >= count:
            return first_time, first_count, now
        if time.monotonic() > deadline:
            raise TimeoutError(f"historian stored {n} of {count} records in {timeout:.0f} s")
        time.sleep(0.01)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


SUBSCRIBER = """
import sys, zmq
sub = zmq.Context().socket(zmq.SUB)
sub.setsockopt(zmq.RCVHWM, 0)  # no limit: the benchmark's burst is bounded
sub.subscribe(b"unit1")
sub.connect(sys.argv[1])
print("ready", flush=True)
count = 0
while sub.poll(3000):
    sub.recv_multipart()
    count += 1
print(count, flush=True)
"""


def append(recorder: Recorder, record: Record) -> None:
    """As the daemon appends: a new Record around this cycle's parts, stamped with the log's seq and counters."""
    log = recorder.log
    recorder.append(Record(log.next_seq, record.origin, record.decision, record.outcome, log.dropped_count,
                           log.publish_drop_count))


def one_run(records: list[Record], warmup: list[Record], work: Path) -> dict:
    # Queues deep enough for the whole burst: every record is really sent to the subscriber, none
    # dropped at a full queue (a drop costs less than a send and would flatter the figure).
    with Recorder(work / "log", "unit1", publish_endpoint=ANY, catchup_endpoint=ANY, fsync="interval",
                  fsync_interval_ms=200, queue_size=len(records) + len(warmup),
                  publish_hwm=len(records) + len(warmup)) as recorder:
        reader = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, recorder.publisher.endpoint],
                                  stdout=subprocess.PIPE, text=True)
        try:
            reader.stdout.readline()
            time.sleep(0.5)  # the subscription travels to the publisher (ZeroMQ's slow joiner)
            for record in warmup:
                append(recorder, record)
            recorder.log.flush()
            cpu0, start = time.process_time(), time.perf_counter()
            for record in records:
                append(recorder, record)
            appended = time.perf_counter()
            recorder.log.flush()
            published = time.perf_counter()
            cpu = time.process_time() - cpu0
            received = int(reader.stdout.readline())
        finally:
            reader.kill()
            reader.wait()
        total = recorder.log.next_seq
        db = work / "historian.sqlite"
        fresh = historian(recorder, db)
        try:
            first_time, first_count, last_time = wait_stored(db, total)
        finally:
            stop(fresh)
    n = len(records)
    return {
        "append_per_s": n / (appended - start),
        "append_publish_per_s": n / (published - start),
        "historian_ingest_per_s": (total - first_count) / (last_time - first_time),
        "daemon_cpu_us_per_record": cpu / n * 1e6,
        "received_live": received,
        "publish_drops": recorder.publisher.drop_count,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--signals", type=int, default=100)
    parser.add_argument("--mvs", type=int, default=18)
    args = parser.parse_args()

    rng = random.Random(2024)
    signals, mvs = signal_names(args.signals), mv_names(args.mvs)
    # A daemon appends the record it has just built, still in the CPU cache: cycle through a pool of
    # 16 different records rather than 20 000 prebuilt ones (which would measure cache misses).
    pool = [from_wire(Record, {**synthetic_record(rng, cycle=i, wall_time=1.7e9 + i, signals=signals, mvs=mvs,
                                                  nan_input=i == 0), "seq": 0})
            for i in range(16)]
    build = [pool[i % len(pool)] for i in range(args.records + 500)]
    warmup, records = build[:500], build[500:]
    size = len(encode(records[0].as_dict()))
    print(f"{args.records} records of {size} bytes ({args.signals} inputs, {args.mvs} MVs), "
          f"best of {args.repeat} runs, fsync interval 200 ms")
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="boiler-ai-bench-") as work:
            run = one_run(records, warmup, Path(work))
        runs.append(run)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:,.0f}" for k, v in run.items()))
    best = {k: max(r[k] for r in runs) if k.endswith("_per_s") else min(r[k] for r in runs) for k in runs[0]}
    print(f"the subscriber received {best['received_live']} records live; {best['publish_drops']} were not "
          f"sent live (full queue), which catch-up serves")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"append_publish_per_s": round(best["append_publish_per_s"]),
                      "historian_ingest_per_s": round(best["historian_ingest_per_s"]),
                      "append_per_s": round(best["append_per_s"]),
                      "daemon_cpu_us_per_record": round(best["daemon_cpu_us_per_record"], 1),
                      "record_bytes": size, "records": args.records, "bench_rss_mb": round(rss_mb)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
