"""The daemon's record stage in one object: durable log, then publisher, plus the catch-up service."""

from __future__ import annotations

from pathlib import Path

import zmq

from boiler_ai.messages import Record
from boiler_ai.record.catchup import CatchupService
from boiler_ai.record.log import DurableLog
from boiler_ai.record.publisher import Publisher


class Recorder:
    """Owns the log's writer thread (which publishes) and the catch-up thread; `append` is the cycle's call."""

    def __init__(self, directory: str | Path, unit_id: str, *, publish_endpoint: str | None = None,
                 catchup_endpoint: str | None = None, context: zmq.Context | None = None,
                 publish_hwm: int = 2000, **log_options):
        self.publisher = (Publisher(publish_endpoint, unit_id, hwm=publish_hwm, context=context)
                          if publish_endpoint is not None else None)
        try:
            self.log = DurableLog(directory, unit_id, publisher=self.publisher, **log_options)
        except BaseException:
            if self.publisher is not None:
                self.publisher.close()
            raise
        try:
            self.catchup = (CatchupService(self.log, catchup_endpoint, context=context)
                            if catchup_endpoint is not None else None)
        except BaseException:
            self.log.close()
            raise

    def append(self, record: Record) -> int:
        return self.log.append(record)

    def close(self) -> None:
        """Log and publish everything queued, then stop serving catch-up."""
        self.log.close()
        if self.catchup is not None:
            self.catchup.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
