"""`boiler-ai historian`: subscribe to a unit's decisions and store each exactly once.

Live records come from the daemon's PUB socket; whatever the stream missed (the historian was down,
a queue was full, the network dropped) is fetched from the catch-up service, which serves the
durable log. Records are stored in seq order, so the store always holds every seq from its first
to max(seq) except the ranges recorded in `lost_ranges` (seqs the log itself does not have, with the
reason the log noted for them). On start the historian resumes from max(seq) + 1; the (unit_id, seq)
primary key makes a repeated insert a no-op, so a crash at any moment neither loses nor duplicates a
record. It never stores two different records for one seq: a different record offered for a stored
seq is kept out (the first one stays), put in the `conflicts` table and reported as an error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time

import zmq

from boiler_ai.addresses import endpoint_options
from boiler_ai.record.curve import ClientKeys, add_client_arguments, client_keys, secure_client
from boiler_ai.record.publisher import unpack_header
from boiler_ai.record.store import Lost, Row, Store, open_store

log = logging.getLogger("boiler_ai.record.historian")

LOST_REASON = "absent_from_log"  # not in the log, and the log noted no reason: removed by retention


class HistorianError(RuntimeError):
    """The stored history and the unit's log disagree in a way that needs a person (message says how)."""


class CatchupUnavailable(RuntimeError):
    pass


class CatchupClient:
    """REQ-like client on a DEALER socket: one request at a time, with a timeout and stale replies ignored."""

    def __init__(self, endpoint: str, context: zmq.Context, timeout_s: float, curve: ClientKeys | None = None):
        self.endpoint = endpoint
        self.context = context
        self.curve = curve
        self.timeout_ms = int(timeout_s * 1000)
        self._socket: zmq.Socket | None = None
        self._next_id = 0

    def _connect(self) -> zmq.Socket:
        if self._socket is None:
            sock = self.context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing towards a service that is not there
            secure_client(sock, self.curve)
            sock.connect(self.endpoint)
            self._socket = sock
        return self._socket

    def send(self, body: dict) -> int:
        """Send a request without waiting for the reply; returns its id for receive()."""
        sock = self._connect()
        self._next_id += 1
        body = {**body, "id": self._next_id}
        deadline = time.monotonic() + self.timeout_ms / 1000.0
        while True:  # waits for a connection, up to the timeout
            try:
                sock.send_multipart([b"", json.dumps(body).encode()], flags=zmq.NOBLOCK)
                return self._next_id
            except zmq.Again:
                if time.monotonic() >= deadline:
                    self.close()
                    raise CatchupUnavailable(f"catch-up service {self.endpoint} not reachable{self._hint()}") from None
                time.sleep(0.05)

    def receive(self, request_id: int) -> tuple[dict, list[bytes]]:
        """The reply to request `request_id` (older replies are skipped)."""
        sock = self._connect()
        deadline = time.monotonic() + self.timeout_ms / 1000.0
        while True:
            remaining = int((deadline - time.monotonic()) * 1000)
            if remaining <= 0 or not sock.poll(remaining):
                self.close()  # a fresh socket next time: nothing stale queued either way
                raise CatchupUnavailable(f"catch-up service {self.endpoint}: no reply within "
                                         f"{self.timeout_ms / 1000:.1f} s{self._hint()}")
            frames = sock.recv_multipart()
            head = json.loads(frames[1])
            if head.get("id") == request_id:
                break
        if not head.get("ok"):
            raise HistorianError(f"catch-up service {self.endpoint} refused a request: {head.get('error')}")
        return head, frames[2:]

    def _hint(self) -> str:
        # A CURVE server does not answer a client it refuses: say what that looks like from here.
        return (" (with CURVE on the daemon: is this client's key in its authorized_clients, and the daemon "
                "restarted since?)" if self.curve is not None else
                " (if the daemon's stream uses CURVE, give --client-key and --server-key)")

    def request(self, body: dict) -> tuple[dict, list[bytes]]:
        return self.receive(self.send(body))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None


class Historian:
    def __init__(self, store: Store, unit_id: str, pub_endpoint: str | None, catchup_endpoint: str, *,
                 context: zmq.Context | None = None, batch: int = 2000, commit_interval_s: float = 0.25,
                 poll_s: float = 2.0, timeout_s: float = 5.0, curve: ClientKeys | None = None):
        self.store = store
        self.unit_id = unit_id
        self.topic = unit_id.encode("utf-8")
        self.pub_endpoint = pub_endpoint
        self.context = context or zmq.Context.instance()
        self.curve = curve
        self.client = CatchupClient(catchup_endpoint, self.context, timeout_s, curve)
        self.batch = batch
        self.commit_interval_s = commit_interval_s
        self.poll_s = poll_s
        self.next_seq: int | None = None
        self.log_id: str | None = None
        self.stored = 0
        self.lost_count = 0
        self.conflict_count = 0
        self._rows: list[Row] = []
        self._lost: list[Lost] = []
        self._last_commit = time.monotonic()
        self._retry_at = 0.0  # after the catch-up service failed, do not ask again before this
        self._stop = threading.Event()

    # ---- main loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Store records until `stop` is set (a long backfill stops between batches too)."""
        self._stop = stop
        sub = None  # without a PUB endpoint (a dashboard on catch-up only) the log is polled every poll_s
        if self.pub_endpoint is not None:
            sub = self.context.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.RCVHWM, 100000)
            sub.setsockopt(zmq.SUBSCRIBE, self.topic)
            secure_client(sub, self.curve)
            sub.connect(self.pub_endpoint)
        try:
            max_seq, self.log_id = self.store.resume_point(self.unit_id)
            self.next_seq = None if max_seq is None else max_seq + 1
            log.info("historian %s: resuming after seq %s (log %s)", self.unit_id, max_seq, self.log_id)
            last_live = time.monotonic()
            self._catch_up()
            while not stop.is_set():
                if sub is None:
                    stop.wait(self.poll_s)
                    self._catch_up()
                elif sub.poll(100):
                    for _ in range(self.batch):
                        try:
                            frames = sub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._live(frames)
                    last_live = time.monotonic()
                elif time.monotonic() - last_live >= self.poll_s:
                    self._catch_up()  # quiet: make sure nothing at the tail was missed
                    last_live = time.monotonic()
                if self._rows and (len(self._rows) >= self.batch
                                   or time.monotonic() - self._last_commit >= self.commit_interval_s):
                    self._commit()
        finally:
            self._commit()
            if sub is not None:
                sub.close(linger=0)
            self.client.close()
            log.info("historian %s: stopped at seq %s, %d stored this run, %d lost seqs recorded, %d conflicts",
                     self.unit_id, None if self.next_seq is None else self.next_seq - 1, self.stored, self.lost_count,
                     self.conflict_count)

    def _live(self, frames: list[bytes]) -> None:
        if len(frames) != 3 or frames[0] != self.topic:  # ZeroMQ matches topics by prefix
            return
        try:
            seq, wall_time = unpack_header(frames[1])
        except ValueError as exc:
            log.warning("historian %s: malformed message ignored (%s); catch-up will fill the gap", self.unit_id, exc)
            return
        if self.next_seq is None or seq > self.next_seq:
            self._backfill(seq)
        if self.next_seq is not None and seq == self.next_seq:
            self._rows.append((seq, wall_time, frames[2].decode("utf-8")))
            self.next_seq = seq + 1

    # ---- catch-up -----------------------------------------------------------------------------

    def _ask(self, body: dict, sent: int | None = None) -> tuple[dict, list[bytes]] | None:
        """One request (or the reply to one already `sent`); None (logged, retried later) if unavailable."""
        if sent is None and time.monotonic() < self._retry_at:
            return None
        try:
            head, payloads = self.client.receive(sent if sent is not None else self.client.send(body))
        except CatchupUnavailable as exc:
            self._retry_at = time.monotonic() + self.poll_s
            log.error("historian %s: %s; will retry (the daemon's log keeps every record)", self.unit_id, exc)
            return None
        self._check_source(head)
        return head, payloads

    def _check_source(self, head: dict) -> None:
        if self.log_id is None:
            self.log_id = head["log_id"]
        elif head["log_id"] != self.log_id:
            raise HistorianError(
                f"unit {self.unit_id}: the daemon's log is {head['log_id']}, but this store holds log {self.log_id}: "
                f"the log was replaced and its seq numbering restarted. Store this unit in a new database "
                f"(or move the old rows aside) before resuming.")
        if self.next_seq is not None and head["next_seq"] < self.next_seq:
            raise HistorianError(
                f"unit {self.unit_id}: the daemon's log ends before seq {self.next_seq - 1}, which is already "
                f"stored (its next seq is {head['next_seq']}): records were lost at the source after being "
                f"published (power loss with fsync: never?), and new records would reuse their seqs.")

    def _catch_up(self) -> None:
        answer = self._ask({"op": "info"})
        if answer is not None:
            self._backfill(answer[0]["next_seq"])

    def _backfill(self, upto: int) -> None:
        """Fetch every record with seq < upto that we do not have yet, in seq order.

        The next batch is requested before this one is stored, so the log is read while we write.
        """
        sent = None
        while (self.next_seq is None or self.next_seq < upto) and not self._stop.is_set():
            start = 0 if self.next_seq is None else self.next_seq
            answer = self._ask(self._fetch(start), sent)
            if answer is None:
                return
            head, payloads = answer
            seqs = head["seqs"]
            if self.next_seq is None:  # an empty store starts from the oldest record the log has
                self.next_seq = seqs[0] if seqs else head["next_seq"]
            noted = head.get("lost", [])
            if not seqs:
                if head["next_seq"] > self.next_seq:  # nothing left below the log's end: those seqs are gone
                    self._lose(self.next_seq, head["next_seq"] - 1, noted)
                    self.next_seq = head["next_seq"]
                return
            sent = None
            if seqs[-1] + 1 < upto:
                try:
                    sent = self.client.send(self._fetch(seqs[-1] + 1))
                except CatchupUnavailable:
                    sent = None  # asked again (and reported) on the next turn
            rows = self._rows
            for seq, wall_time, payload in zip(seqs, head["wall_times"], payloads):
                if seq > self.next_seq:  # the log skips these: they will never come
                    self._lose(self.next_seq, seq - 1, noted)
                rows.append((seq, wall_time, payload.decode("utf-8")))
                self.next_seq = seq + 1
            if len(rows) >= self.batch:
                self._commit()

    def _fetch(self, from_seq: int) -> dict:
        return {"op": "fetch", "from_seq": from_seq, "max_records": self.batch}

    def _lose(self, first: int, last: int, noted: list) -> None:
        """Record seqs first..last as lost, with the reasons the log noted for them (`noted`: [first, last, reason])."""
        reason = ",".join(sorted({r for a, b, r in noted if a <= last and b >= first})) or LOST_REASON
        log.warning("historian %s: seqs %d..%d are not in the daemon's log (%s); recorded in lost_ranges",
                    self.unit_id, first, last, reason)
        self._lost.append((first, last, reason))
        self.lost_count += last - first + 1

    def _commit(self) -> None:
        if self._rows or self._lost:
            conflicts = self.store.save(self.unit_id, self.log_id or "", self._rows, self._lost)
            self.stored += len(self._rows) - len(conflicts)
            self._rows, self._lost = [], []
            if conflicts:
                self.conflict_count += len(conflicts)
                log.error("historian %s: CONFLICT: %d record(s) differ from the ones already stored for the same seq "
                          "(seqs %s): the stored ones are kept, the others are in the conflicts table. The unit's "
                          "log has reused seqs or been replaced; find out why before trusting this history.",
                          self.unit_id, len(conflicts), _ranges(conflicts))
        self._last_commit = time.monotonic()


def _ranges(seqs: list[int]) -> str:
    """'3..5, 9' for [3, 4, 5, 9]."""
    out, start = [], None
    for i, seq in enumerate(seqs):
        if start is None:
            start = seq
        if i + 1 == len(seqs) or seqs[i + 1] != seq + 1:
            out.append(str(start) if start == seq else f"{start}..{seq}")
            start = None
    return ", ".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unit", required=True, help="unit id (the PUB topic)")
    parser.add_argument("--pub", required=True, metavar="ENDPOINT",
                        help="the daemon's PUB endpoint (its record.publish_endpoint), e.g. tcp://10.0.0.5:5601")
    parser.add_argument("--catchup", required=True, metavar="ENDPOINT",
                        help="the daemon's catch-up endpoint (its record.catchup_endpoint), e.g. tcp://10.0.0.5:5602")
    parser.add_argument("--db", default="boiler-ai-historian.sqlite",
                        help="SQLite file (default: %(default)s) or postgresql://user:pass@host:port/dbname")
    parser.add_argument("--batch", type=int, default=2000, help="records per transaction and per catch-up fetch")
    parser.add_argument("--commit-ms", type=int, default=250, help="commit at least this often while records flow")
    parser.add_argument("--poll-s", type=float, default=2.0,
                        help="when the stream is quiet, ask the log for missed records this often")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="catch-up request timeout")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    add_client_arguments(parser)


def run(args: argparse.Namespace) -> int:
    endpoint_options(pub=args.pub, catchup=args.catchup)
    curve = client_keys(args)
    logging.getLogger().setLevel(args.log_level.upper())  # boiler-ai's JSON lines (set up by the command line)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    store = open_store(args.db)
    try:
        historian = Historian(store, args.unit, args.pub, args.catchup, batch=args.batch,
                              commit_interval_s=args.commit_ms / 1000.0, poll_s=args.poll_s, timeout_s=args.timeout_s,
                              curve=curve)
        historian.run(stop)
    except HistorianError as exc:
        log.error("%s", exc)
        return 3
    finally:
        store.close()
    return 0
