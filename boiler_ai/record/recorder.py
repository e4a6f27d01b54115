"""The daemon's record stage in one object: durable log, then publisher, plus the catch-up service
(both behind ZeroMQ CURVE when given the server keys: boiler_ai/record/curve.py)."""

from __future__ import annotations

from pathlib import Path

import zmq

from boiler_ai.messages import Record
from boiler_ai.record.catchup import CatchupService
from boiler_ai.record.curve import Gate, ServerKeys
from boiler_ai.record.log import DurableLog
from boiler_ai.record.publisher import Publisher


class Recorder:
    """Owns the log's writer thread (which publishes) and the catch-up thread; `append` is the cycle's call."""

    def __init__(self, directory: str | Path, unit_id: str, *, publish_endpoint: str | None = None,
                 catchup_endpoint: str | None = None, context: zmq.Context | None = None,
                 publish_hwm: int = 2000, curve: ServerKeys | None = None, **log_options):
        self.gate = None
        self.publisher = None
        self._own_context = None
        if curve is not None and (publish_endpoint is not None or catchup_endpoint is not None):
            # a ZAP handler serves one context: give the CURVE servers their own (or the caller's)
            if context is None:
                context = self._own_context = zmq.Context()
            self.gate = Gate(context, curve)
        try:
            self.publisher = (Publisher(publish_endpoint, unit_id, hwm=publish_hwm, context=context, curve=curve)
                              if publish_endpoint is not None else None)
            self.log = DurableLog(directory, unit_id, publisher=self.publisher, **log_options)
        except BaseException:
            if self.publisher is not None:
                self.publisher.close()
            self._close_gate()
            raise
        try:
            self.catchup = (CatchupService(self.log, catchup_endpoint, context=context, curve=curve)
                            if catchup_endpoint is not None else None)
        except BaseException:
            self.log.close()
            self._close_gate()
            raise

    def append(self, record: Record, *, wait: bool = False) -> int:
        return self.log.append(record, wait=wait)

    def close(self) -> None:
        """Log and publish everything queued, then stop serving catch-up."""
        self.log.close()
        if self.catchup is not None:
            self.catchup.close()
        self._close_gate()

    def _close_gate(self) -> None:
        if self.gate is not None:
            self.gate.close()
            self.gate = None
        if self._own_context is not None:
            self._own_context.destroy(linger=0)
            self._own_context = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
