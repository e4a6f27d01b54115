"""Values as they cross the plant boundary, independent of the protocol that carried them."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from boiler_ai.messages.wire import UInt, doc

# StatusCode given to a signal that is absent from the batch read (its issue says missing/read_failed).
ABSENT_STATUS = 0x80000000


class InputIssue(enum.StrEnum):
    """Why validation did not take a reading this cycle (the decision record's `inputs.issue`)."""

    READ_FAILED = "read_failed"  # the batch read failed as a whole
    MISSING = "missing"  # absent from the read
    BAD_QUALITY = "bad_quality"
    UNCERTAIN_QUALITY = "uncertain_quality"
    STALE = "stale"  # timestamp (source, else server) older than the tag's stale_s
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    RATE_OF_CHANGE = "rate_of_change"
    FROZEN = "frozen"  # has not moved for longer than a live signal can
    NO_TIMESTAMP = "no_timestamp"  # must be fresh (stale_s > 0) but came with neither timestamp
    SERVER_CLOCK_STALLED = "server_clock_stalled"  # the server's clock (ServerStatus/CurrentTime) stopped


class Quality(enum.IntEnum):
    """OPC UA StatusCode severity (the top two bits of the code)."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2

    @classmethod
    def from_status_code(cls, code: int) -> Quality:
        severity = (code >> 30) & 0b11
        return cls.GOOD if severity == 0 else cls.UNCERTAIN if severity == 1 else cls.BAD


class Reading(NamedTuple):
    """One tag as read: value (bools as 0.0/1.0), the raw StatusCode, the source and server timestamps
    (epoch s; NaN where the server sent none: both are optional in OPC UA). A NamedTuple, immutable as the
    frozen dataclasses are: about a hundred are built every cycle, and a tuple builds in 0.6 of the time."""

    value: float
    status_code: int
    source_ts: float
    server_ts: float = math.nan

    @property
    def quality(self) -> Quality:
        return Quality.from_status_code(self.status_code)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every mapped readable tag from one batch read, keyed by logical signal name.

    `error` is set when the read failed as a whole (connection lost, session invalid, timeout):
    then `readings` is empty and every input counts as invalid for the cycle.
    `server_time` is the server's own clock (ServerStatus/CurrentTime) read in the same batch, None
    when the server did not give it: ages are judged against it, and it must keep advancing.
    """

    readings: Mapping[str, Reading]
    read_time: float  # wall time (epoch s) when the read returned
    error: str | None = None
    server_time: float | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of one batch write: per-tag StatusCode and what the DCS holds afterwards."""

    ok: bool = field(metadata=doc("the batch write as a whole succeeded"))
    status: Mapping[str, UInt] = field(default_factory=dict, metadata=doc("signal -> StatusCode of its write"))
    # signal -> value the DCS holds after the write; the record carries it per MV (`read_back`)
    read_back: Mapping[str, float] = field(default_factory=dict, metadata={"wire": False})
    error: str | None = field(default=None, metadata=doc("why it failed, else null"))
