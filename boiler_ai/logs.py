"""Structured logs, the same for every command: one JSON object per line on stderr.

stderr, so that stdout stays the command's own output (check's report, demo's table, export's
summary, `--json` answers) and a pipe reads only that; journald and container runtimes keep both.
`boiler-ai` sets this up before any command runs (at `warning`, so a short command prints nothing
unless something is wrong); the long-running ones (run, sim, historian, dashboard) raise it to
their `--log-level` or config's `log_level`. The one-line errors of the command line (exit 2) are
not log lines: they are the command's answer, for a person.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "info") -> None:
    """JSON lines on stderr from every logger at `level` and above; calling it again changes the level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # asyncua logs every request at info and every reconnect attempt at warning with tracebacks; our own
    # lines say what matters
    logging.getLogger("asyncua").setLevel(logging.ERROR)


def event(logger: logging.Logger, level: int, msg: str, **fields) -> None:
    logger.log(level, msg, extra={"fields": fields})
