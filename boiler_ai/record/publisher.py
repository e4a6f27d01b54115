"""Live copy of the decision log on a ZeroMQ PUB socket (wire format: docs/DECISION_RECORD.md).

Each record is one multipart message [topic, header, payload]:
  topic    the unit id, UTF-8 (subscribe to it; compare it exactly, ZeroMQ matches prefixes)
  header   18 bytes, big-endian: u16 header version (1), u64 seq, f64 wall_time
  payload  the encoded record, byte for byte as in the durable log

The socket is an XPUB with XPUB_NODROP, so a subscriber whose queue (SNDHWM) is full makes the send
fail at once instead of blocking or dropping silently; the record is then counted as a publish drop
(the catch-up service still serves it from the log). It lives in the log's writer thread.
Given the daemon's CURVE keys it is a CURVE server (boiler_ai/record/curve.py): only authorized clients connect.
"""

from __future__ import annotations

import logging
import struct
import time

import zmq

from boiler_ai.record.curve import ServerKeys, secure_server

log = logging.getLogger("boiler_ai.record.publisher")

HEADER = struct.Struct(">HQd")
HEADER_VERSION = 1
_MORE = zmq.SNDMORE | zmq.NOBLOCK


def pack_header(seq: int, wall_time: float) -> bytes:
    return HEADER.pack(HEADER_VERSION, seq, wall_time)


def unpack_header(data: bytes) -> tuple[int, float]:
    """(seq, wall_time) from a PUB header; ValueError if it is not a version-1 header."""
    if len(data) != HEADER.size:
        raise ValueError(f"PUB header must be {HEADER.size} bytes, got {len(data)}")
    version, seq, wall_time = HEADER.unpack(data)
    if version != HEADER_VERSION:
        raise ValueError(f"unknown PUB header version {version}")
    return seq, wall_time


# ZeroMQ closes a socket in its I/O thread after close() returns: a service re-bound at once in the same
# process (a recorder restarted on its endpoints) can find the port still held by its own old socket for a few ms.
REBIND_WAIT_S = 0.5


def bind(socket: zmq.Socket, endpoint: str, what: str) -> str:
    """Bind a record-path socket (no linger: a stopping daemon must not wait on a slow subscriber), or
    close it and say which service could not bind where. Returns the endpoint actually bound."""
    socket.setsockopt(zmq.LINGER, 0)
    deadline = time.monotonic() + REBIND_WAIT_S
    while True:
        try:
            socket.bind(endpoint)
            return socket.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EADDRINUSE and time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            socket.close()
            raise OSError(f"cannot bind {what} on {endpoint}: {exc}") from exc


class Publisher:
    def __init__(self, endpoint: str, unit_id: str, *, hwm: int = 2000, context: zmq.Context | None = None,
                 curve: ServerKeys | None = None):
        self.topic = unit_id.encode("utf-8")
        self.drop_count = 0
        self.sent_count = 0
        self._socket = (context or zmq.Context.instance()).socket(zmq.XPUB)
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        if curve is not None:
            secure_server(self._socket, curve)
        self.endpoint = bind(self._socket, endpoint, "the decision publisher")

    def publish(self, seq: int, wall_time: float, payload: bytes) -> bool:
        """Send one record without blocking; False (and counted) if it was not sent."""
        send = self._socket.send
        try:
            # Three sends beat send_multipart by ~1.5 us. With XPUB_NODROP only the first part can
            # meet a full queue: the parts of a message go out whole or not at all.
            send(self.topic, _MORE)
            send(pack_header(seq, wall_time), _MORE)
            send(payload, zmq.NOBLOCK)
        except zmq.Again:
            self.drop_count += 1
            return False
        except zmq.ZMQError as exc:
            self.drop_count += 1
            log.error("decision publisher %s: send of seq %d failed: %s", self.endpoint, seq, exc)
            return False
        self.sent_count += 1
        if self.sent_count % 256 == 0:
            self._drain_subscriptions()
        return True

    def _drain_subscriptions(self) -> None:
        """An XPUB queues (un)subscribe notices for us to read; discard them so they do not pile up."""
        try:
            while True:
                self._socket.recv(zmq.NOBLOCK)
        except zmq.Again:
            pass

    def close(self) -> None:
        self._socket.close(linger=0)
