"""Values as they cross the plant boundary, independent of the protocol that carried them."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from boiler_ai.messages.wire import UInt, doc

# StatusCode given to a signal that is absent from the batch read (its issue says missing/read_failed).
ABSENT_STATUS = 0x80000000


class InputIssue(enum.StrEnum):
    """Why validation did not take a reading this cycle (the decision record's `inputs.issue`)."""

    READ_FAILED = "read_failed"  # the batch read failed as a whole
    MISSING = "missing"  # absent from the read
    BAD_QUALITY = "bad_quality"
    UNCERTAIN_QUALITY = "uncertain_quality"
    STALE = "stale"  # source timestamp too old
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    RATE_OF_CHANGE = "rate_of_change"
    FROZEN = "frozen"  # has not moved for longer than a live signal can


class Quality(enum.IntEnum):
    """OPC UA StatusCode severity (the top two bits of the code)."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2

    @classmethod
    def from_status_code(cls, code: int) -> Quality:
        severity = (code >> 30) & 0b11
        return cls.GOOD if severity == 0 else cls.UNCERTAIN if severity == 1 else cls.BAD


@dataclass(frozen=True, slots=True)
class Reading:
    """One tag as read: value (bools as 0.0/1.0), the raw StatusCode, the source timestamp (epoch s)."""

    value: float
    status_code: int
    source_ts: float

    @property
    def quality(self) -> Quality:
        return Quality.from_status_code(self.status_code)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every mapped readable tag from one batch read, keyed by logical signal name.

    `error` is set when the read failed as a whole (connection lost, session invalid, timeout):
    then `readings` is empty and every input counts as invalid for the cycle.
    """

    readings: Mapping[str, Reading]
    read_time: float  # wall time (epoch s) when the read returned
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of one batch write: per-tag StatusCode and what the DCS holds afterwards."""

    ok: bool = field(metadata=doc("the batch write as a whole succeeded"))
    status: Mapping[str, UInt] = field(default_factory=dict, metadata=doc("signal -> StatusCode of its write"))
    # signal -> value the DCS holds after the write; the record carries it per MV (`read_back`)
    read_back: Mapping[str, float] = field(default_factory=dict, metadata={"wire": False})
    error: str | None = field(default=None, metadata=doc("why it failed, else null"))
