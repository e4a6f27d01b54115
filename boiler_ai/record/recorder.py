"""The daemon's record stage in one object: durable log, then publisher, plus the catch-up service."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from boiler_ai.record.catchup import CatchupService
from boiler_ai.record.log import DurableLog
from boiler_ai.record.publisher import Publisher

if TYPE_CHECKING:
    from boiler_ai.config import RecordConfig


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

    @classmethod
    def from_config(cls, cfg: RecordConfig, unit_id: str, *, context: zmq.Context | None = None) -> Recorder:
        return cls(cfg.log_dir, unit_id, publish_endpoint=cfg.publish_endpoint,
                   catchup_endpoint=cfg.catchup_endpoint, context=context, fsync=cfg.fsync,
                   fsync_interval_ms=cfg.fsync_interval_ms,
                   segment_max_bytes=int(cfg.segment_max_mb * 1024 * 1024),
                   segment_max_age_s=cfg.segment_max_age_s,
                   retention_s=cfg.retention_days * 86400.0 if cfg.retention_days > 0 else None,
                   retention_max_bytes=(None if cfg.retention_max_mb is None
                                        else int(cfg.retention_max_mb * 1024 * 1024)),
                   queue_size=cfg.queue_size)

    def append(self, record: dict) -> int:
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
