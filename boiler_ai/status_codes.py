"""The one table of status and reason codes the operator sees: on the DCS faceplate (AI_STATUS,
AI_REASON), on the dashboard and in `boiler-ai explain`. deploy/DCS_INTEGRATION.md prints the same
table (a test compares them), so a DCS engineer can build the faceplate text list from it.

AI_STATUS is the engagement mode. AI_REASON is why the AI is not doing all it could: the reason of
the last release (kept until the AI engages again, so the operator sees why it dropped even after
the cycle that dropped it), else of a hold this cycle (a non-critical input on its last good value,
the model unsure, the envelope holding), else of what keeps it from engaging; 0 when nothing does.
Codes are never renumbered; a new reason in boiler_ai.messages.Reason gets a new code here (a test
holds the two together). Standard library only: the controller core,
the dashboard and the simulator's DCS emulation all read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# AI_STATUS: engagement mode -> code.
MODE_CODES: dict[str, int] = {"disabled": 0, "shadow": 1, "active": 2, "releasing": 3}
MODE_TEXT: dict[str, str] = {
    "disabled": "DCS in control: the AI computes and logs, does not ask for control",
    "shadow": "Shadow: the AI computes and logs, never writes (commissioning)",
    "active": "AI in control: the AI writes setpoints within its envelope",
    "releasing": "Handing back: AI request dropped, waiting for the DCS to confirm",
}


@dataclass(frozen=True)
class Reason:
    code: int
    name: str  # the decision record's machine name (events[].reason, release_reason)
    text: str  # what the operator reads on the faceplate and the dashboard
    action: str  # what the operator can do about it ("" when nothing is needed)


NONE = Reason(0, "none", "No restriction", "")
OTHER = Reason(999, "other", "Other reason: see the decision record", "Ask the control engineer (boiler-ai explain)")

# Grouped by hundreds: 1xx operator and DCS handshake, 2xx plant inputs, 3xx model, 4xx envelope and
# guard, 5xx write and daemon.
REASONS: tuple[Reason, ...] = (
    NONE,
    Reason(101, "ai_enable_off", "AI not enabled on the faceplate",
           "Switch AI_ENABLE on to let the AI ask for control"),
    Reason(102, "awaiting_operator_reenable", "Released: waiting for the operator to re-enable",
           "Check the release reason, then switch AI_ENABLE off and on"),
    Reason(103, "ai_enable_dropped", "Operator switched AI off", ""),
    Reason(104, "dcs_permissive_off", "DCS permissive off (coordinated control, load, MFT, runback)",
           "AI can engage once the DCS permissive is back"),
    Reason(105, "dcs_permissive_lost", "DCS permissive lost (runback, MFT, coordinated control off)", ""),
    Reason(106, "ai_active_lost", "DCS dropped AI mode (watchdog or DCS logic)", "Check the DCS AI selector logic"),
    Reason(107, "ai_active_not_granted", "DCS did not grant AI mode in time", "Check the DCS AI selector logic"),
    Reason(108, "not_enough_healthy_cycles", "Waiting for enough healthy cycles before engaging", ""),
    Reason(109, "requesting_ai_mode", "AI asking the DCS for control", ""),
    Reason(110, "dcs_confirmed", "DCS confirmed the hand-back", ""),
    Reason(201, "read_failed", "Cannot read the plant (OPC UA connection)", "Check the OPC UA link to the DCS"),
    Reason(202, "critical_input_invalid", "Critical measurement bad, stale or out of range",
           "Check the instrument named in the record"),
    Reason(203, "holding_last_good", "Non-critical measurement bad: holding its last good value",
           "Check the instrument; the AI releases if it does not recover"),
    Reason(300, "observe_mode", "Observe mode: recording the unit's history, no model",
           "Train a model for this unit (training/README.md), then run it in shadow mode"),
    Reason(301, "policy_history_filling", "Model filling its input history", ""),
    Reason(302, "model_output_not_finite", "Model output invalid", "Call the control engineer"),
    Reason(303, "model_out_of_depth_holding", "Plant outside the model's experience: holding setpoints", ""),
    Reason(304, "model_out_of_depth", "Plant outside the model's experience for too long", ""),
    Reason(401, "envelope_infeasible_holding", "No move fits the envelope: holding setpoints", ""),
    Reason(402, "envelope_infeasible", "No setpoint fits the envelope", "Check DCS setpoints against the AI limits"),
    Reason(403, "guard_block", "Safety guard blocked the write", "Call the control engineer"),
    Reason(404, "no_safe_action", "No checked action to write", ""),
    Reason(501, "write_failed", "Writing the AI setpoints failed", "Check the OPC UA link and write permissions"),
    Reason(502, "daemon_stopping", "AI software stopping", ""),
    Reason(503, "record_not_durable", "Decisions cannot be recorded: AI kept off",
           "Check the decision log's disk (free space, errors); the AI may be re-enabled once records are kept"),
    OTHER,
)
BY_NAME: dict[str, Reason] = {r.name: r for r in REASONS}
BY_CODE: dict[int, Reason] = {r.code: r for r in REASONS}
assert len(BY_NAME) == len(BY_CODE) == len(REASONS), "reason names and codes must be unique"

# Events that say why the AI holds back this cycle, most serious first.
_HOLD_TYPES = ("immediate_disable", "soft_disable", "no_entry")


def reason(name: str | None) -> Reason:
    """The table entry for a record's reason name (NONE for None, OTHER for a name not in the table)."""
    if name is None:
        return NONE
    return BY_NAME.get(name, OTHER)


def mode_code(mode: str) -> int:
    return MODE_CODES[mode]


class StatusLatch:
    """AI_STATUS and AI_REASON cycle by cycle, from the mode and events of each decision.

    A release reason is kept (latched) until the AI engages again; otherwise the reason is that of
    this cycle's most serious hold event, or NONE.
    """

    def __init__(self) -> None:
        self.released: Reason | None = None

    def update(self, mode: str, events: Iterable[Mapping[str, str]], release_reason: str | None) -> tuple[int, int]:
        events = list(events)
        if release_reason is not None:
            self.released = reason(release_reason)
        elif mode == "active":
            self.released = None
        if self.released is not None and mode != "active":
            return MODE_CODES[mode], self.released.code
        for kind in _HOLD_TYPES:
            hit = next((e for e in events if e["type"] == kind), None)
            if hit is not None:
                return MODE_CODES[mode], reason(hit["reason"]).code
        return MODE_CODES[mode], NONE.code
