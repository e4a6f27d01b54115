"""Catch-up service: records from a given seq, out of the durable log, for a subscriber that was away.

ZeroMQ ROUTER socket, so REQ and DEALER clients both work (a DEALER sends an empty delimiter frame
first, as REQ does). A request is one JSON frame:
  {"op": "info", "id": any}                                   -> header only
  {"op": "fetch", "from_seq": N, "max_records": M, "id": any}  -> header + up to M payload frames
The reply is a JSON header frame, then one frame per record (the payload, byte for byte as logged):
  {"ok": true, "id": <echoed>, "unit_id": "...", "log_id": "...", "first_seq": oldest seq in the log
   or null, "next_seq": one past the newest record that can be served, "seqs": [seq of each frame],
   "wall_times": [wall_time of each frame], "lost": [[first, last, reason], ...]}
  {"ok": false, "id": <echoed>, "error": "..."}
Records are served only once they are durable and published (seq < next_seq). A fetch returns the
records with seq >= from_seq in seq order; if the first has seq > from_seq, the seqs in between are
not in the log and never will be. `lost` lists the gaps the log noted (with the reason: queue_full,
write_failed, encode_failed, damaged_segment, missing_at_restart) that overlap the seqs from
from_seq to the last one served (to next_seq when none is); seqs missing without a noted gap were
removed by retention.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import zmq

from boiler_ai.record.curve import ServerKeys, secure_server
from boiler_ai.record.log import DurableLog, iter_frames
from boiler_ai.record.publisher import bind

log = logging.getLogger("boiler_ai.record.catchup")

MAX_RECORDS = 5000
MAX_BYTES = 16 * 1024 * 1024


class CatchupService:
    def __init__(self, durable_log: DurableLog, endpoint: str, *, context: zmq.Context | None = None,
                 max_records: int = MAX_RECORDS, max_bytes: int = MAX_BYTES, curve: ServerKeys | None = None):
        self.log = durable_log
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.requests = 0
        self._socket = (context or zmq.Context.instance()).socket(zmq.ROUTER)
        if curve is not None:
            secure_server(self._socket, curve)
        self.endpoint = bind(self._socket, endpoint, "the catch-up service")
        # Where the last fetch ended, so a client walking the log does not rescan segments.
        self._cursor: tuple[int, Path, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"catchup-{durable_log.unit_id}", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _serve(self) -> None:
        sock = self._socket
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                frames = sock.recv_multipart()
                envelope, body = frames[:-1], frames[-1]
                try:
                    reply = self._answer(body)
                except Exception as exc:  # a bad request must never stop the service
                    log.exception("catch-up %s: request failed", self.endpoint)
                    reply = [json.dumps({"ok": False, "id": None, "error": f"internal error: {exc}"}).encode()]
                sock.send_multipart(envelope + reply)
                self.requests += 1
        finally:
            sock.close(linger=0)

    def _answer(self, body: bytes) -> list[bytes]:
        try:
            request = json.loads(body)
        except ValueError as exc:
            return [json.dumps({"ok": False, "id": None, "error": f"bad request: {exc}"}).encode()]
        if not isinstance(request, dict):
            return [json.dumps({"ok": False, "id": None, "error": "bad request: expected a JSON object"}).encode()]
        rid = request.get("id")
        op = request.get("op")
        head = {"ok": True, "id": rid, "unit_id": self.log.unit_id, "log_id": self.log.log_id}
        next_seq = self.log.published_next
        if op == "info":
            head.update(first_seq=self.log.first_seq(), next_seq=next_seq, seqs=[], wall_times=[], lost=[])
            return [json.dumps(head).encode()]
        if op != "fetch":
            return [json.dumps({"ok": False, "id": rid, "error": f"unknown op {op!r} (info, fetch)"}).encode()]
        from_seq, limit = request.get("from_seq"), request.get("max_records", self.max_records)
        if (not isinstance(from_seq, int) or isinstance(from_seq, bool) or from_seq < 0
                or not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            return [json.dumps({"ok": False, "id": rid,
                                "error": "fetch needs from_seq >= 0 and max_records >= 1 (integers)"}).encode()]
        limit = min(limit, self.max_records)
        seqs: list[int] = []
        wall_times: list[float] = []
        payloads: list[bytes] = []
        size = 0
        start = None
        if self._cursor is not None and self._cursor[0] == from_seq:
            start = self._cursor[1:]
        for path, end, frame in iter_frames(self.log.directory, from_seq, stop_seq=next_seq, start=start):
            seqs.append(frame.seq)
            wall_times.append(frame.wall_time)
            payloads.append(frame.payload)
            size += len(frame.payload)
            self._cursor = (frame.seq + 1, path, end)
            if len(seqs) >= limit or size >= self.max_bytes:
                break
        upto = seqs[-1] if seqs else next_seq - 1
        head.update(first_seq=self.log.first_seq(), next_seq=next_seq, seqs=seqs, wall_times=wall_times,
                    lost=self.log.gaps_between(from_seq, upto))
        return [json.dumps(head).encode(), *payloads]
