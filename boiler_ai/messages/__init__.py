"""The messages room: every typed, frozen value that crosses a room boundary. Stdlib only.

engagement  Mode, EventType, Reason (the one table of reasons), Event, Handshake, Transition
plant       Quality, Reading, Snapshot, WriteResult (what a PlantIO reads and writes), InputIssue
record      Decision (the core's), Outcome (the shell's), Origin, Record (what the log frames) and
            their parts; SCHEMA_VERSION and the stage names
settings    facts shared by several rooms: log defaults and fsync policies, control modes
wire        how a message maps to its wire dict; the annotations the record schema is generated from
"""

from boiler_ai.messages.engagement import EXTERNAL_REASONS, Event, EventType, Handshake, Mode, Reason, Transition
from boiler_ai.messages.plant import ABSENT_STATUS, InputIssue, Quality, Reading, Snapshot, WriteResult
from boiler_ai.messages.record import (
    SCHEMA_VERSION,
    STAGES,
    ChallengerRun,
    Decision,
    GuardVerdict,
    Inputs,
    ModeChange,
    ModelRef,
    Origin,
    Outcome,
    PolicyCheck,
    ProjectionResult,
    ProjectionStatus,
    Record,
    StageTimings,
)

__all__ = [
    "ABSENT_STATUS", "EXTERNAL_REASONS", "SCHEMA_VERSION", "STAGES", "ChallengerRun", "Decision", "Event",
    "EventType", "GuardVerdict", "Handshake", "InputIssue", "Inputs", "Mode", "ModeChange", "ModelRef", "Origin",
    "Outcome", "PolicyCheck", "ProjectionResult", "ProjectionStatus", "Quality", "Reading", "Reason", "Record",
    "Snapshot", "StageTimings", "Transition", "WriteResult",
]
