"""Who is in control and why: modes, typed events with their reasons, transitions, the DCS handshake.

Every reason the daemon can give is in `Reason`, the one table of them: the engagement state
machine, the cycle, the daemon and the decision-record schema all take their names from it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Annotated

from boiler_ai.messages.wire import OPEN, doc


class Mode(enum.StrEnum):
    DISABLED = "disabled"  # not requesting; the DCS runs on its own loops
    SHADOW = "shadow"  # configured shadow mode: compute and log, never write
    ACTIVE = "active"  # requesting AI mode and writing setpoints
    RELEASING = "releasing"  # AI_REQUEST dropped; waiting for the DCS to confirm AI_ACTIVE is false


class EventType(enum.StrEnum):
    NO_ENTRY = "no_entry"  # cannot engage now
    SOFT_DISABLE = "soft_disable"  # degraded but still allowed (for a grace period where the cause can escalate)
    IMMEDIATE_DISABLE = "immediate_disable"  # release this cycle
    ENGAGED = "engaged"
    RELEASED = "released"


class Reason(enum.StrEnum):
    """Stable machine names of every event and release reason (docs/DECISION_RECORD.md lists them)."""

    # inputs
    READ_FAILED = "read_failed"  # the batch read failed as a whole
    CRITICAL_INPUT_INVALID = "critical_input_invalid"
    HOLDING_LAST_GOOD = "holding_last_good"  # a non-critical input on hold
    # model
    OBSERVE_MODE = "observe_mode"  # no model configured: read, validate and record only
    POLICY_HISTORY_FILLING = "policy_history_filling"
    MODEL_OUTPUT_NOT_FINITE = "model_output_not_finite"
    MODEL_OUT_OF_DEPTH = "model_out_of_depth"
    MODEL_OUT_OF_DEPTH_HOLDING = "model_out_of_depth_holding"
    # envelope and guard
    ENVELOPE_INFEASIBLE = "envelope_infeasible"
    ENVELOPE_INFEASIBLE_HOLDING = "envelope_infeasible_holding"
    GUARD_BLOCK = "guard_block"
    NO_SAFE_ACTION = "no_safe_action"
    # process limits (supervision on measured values)
    PROCESS_LIMIT_WARNING = "process_limit_warning"  # a value beyond its warning threshold: retreat to the DCS
    PROCESS_LIMIT_EXCEEDED = "process_limit_exceeded"  # beyond its hard limit for hold_s: release
    PROCESS_LIMIT_RECOVERING = "process_limit_recovering"  # not yet back inside its warning band for recover_s
    PLANT_TRANSIENT = "plant_transient"  # a DCS sequence (mill start or stop) runs or just ran: retreat to the DCS
    # the DCS and the operator
    AI_ENABLE_OFF = "ai_enable_off"
    AWAITING_OPERATOR_REENABLE = "awaiting_operator_reenable"
    DCS_PERMISSIVE_OFF = "dcs_permissive_off"
    NOT_ENOUGH_HEALTHY_CYCLES = "not_enough_healthy_cycles"
    AI_ENABLE_DROPPED = "ai_enable_dropped"
    DCS_PERMISSIVE_LOST = "dcs_permissive_lost"
    AI_ACTIVE_LOST = "ai_active_lost"
    AI_ACTIVE_NOT_GRANTED = "ai_active_not_granted"
    REQUESTING_AI_MODE = "requesting_ai_mode"
    DCS_CONFIRMED = "dcs_confirmed"
    MV_HANDED_BACK = "mv_handed_back"  # the operator took MVs back to the DCS (their ai_enable); the AI keeps the rest
    # the write and the daemon
    WRITE_FAILED = "write_failed"
    DAEMON_STOPPING = "daemon_stopping"
    RECORD_NOT_DURABLE = "record_not_durable"  # the decision log cannot persist records (the detail says why)


# Reasons raised from outside the core (by the daemon); a replay feeds them back in.
EXTERNAL_REASONS = frozenset({Reason.DAEMON_STOPPING, Reason.RECORD_NOT_DURABLE})


@dataclass(frozen=True, slots=True)
class Event:
    type: Annotated[EventType, OPEN] = field(metadata=doc("what the event does to engagement"))
    # a plain string is accepted and checked against the table
    reason: Annotated[Reason, OPEN] = field(metadata=doc("stable machine name, e.g. critical_input_invalid"))
    detail: str = field(default="", metadata=doc("the signal or figure behind it; may be empty"))

    def __post_init__(self) -> None:
        if type(self.reason) is not Reason:
            object.__setattr__(self, "reason", Reason(self.reason))
        if type(self.type) is not EventType:
            object.__setattr__(self, "type", EventType(self.type))

    def as_dict(self) -> dict:
        return {"type": self.type.value, "reason": self.reason.value, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Handshake:
    """The DCS's side of the handshake as read this cycle (None: not readable this cycle)."""

    ai_enable: bool | None
    ai_permissive: bool | None
    ai_active: bool | None


@dataclass(frozen=True, slots=True)
class Transition:
    """The engagement state machine's answer for one cycle."""

    previous: Mode
    mode: Mode
    release_reason: Reason | None  # set on the cycle that drops AI_REQUEST

    @property
    def changed(self) -> bool:
        return self.previous is not self.mode
