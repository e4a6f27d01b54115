"""The one table of status and reason codes the operator sees: on the DCS faceplate (AI_STATUS,
AI_REASON), on the dashboard and in `boiler-ai explain`. deploy/DCS_INTEGRATION.md prints the same
table (a test compares them), so a DCS engineer can build the faceplate text list from it.

AI_STATUS is the engagement mode. AI_REASON is why the AI is not doing all it could: the reason of
the last release (kept until the AI engages again, so the operator sees why it dropped even after
the cycle that dropped it), else of a hold this cycle (a non-critical input on its last good value,
the model unsure, the envelope holding), else of what keeps it from engaging; 0 when nothing does.
Codes are never renumbered; a new reason in boiler_ai.messages.Reason gets a new code here (the
table is keyed on it, and the import fails when one is missing). Ground floor (it imports only the
messages): the controller core, the dashboard and `explain` all read it.

`python -m boiler_ai.status_codes` prints both tables as Markdown, as deploy/DCS_INTEGRATION.md shows them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from boiler_ai.messages import Mode, Reason

# AI_STATUS: engagement mode -> code.
MODE_CODES: dict[Mode, int] = {Mode.DISABLED: 0, Mode.SHADOW: 1, Mode.ACTIVE: 2, Mode.RELEASING: 3}
MODE_TEXT: dict[Mode, str] = {
    Mode.DISABLED: "DCS in control: the AI computes and logs, does not ask for control",
    Mode.SHADOW: "Shadow: the AI computes and logs, never writes (commissioning)",
    Mode.ACTIVE: "AI in control: the AI writes setpoints within its envelope",
    Mode.RELEASING: "Handing back: AI request dropped, waiting for the DCS to confirm",
}


@dataclass(frozen=True)
class ReasonCode:
    code: int
    name: str  # the decision record's machine name (events[].reason, release_reason)
    text: str  # what the operator reads on the faceplate and the dashboard
    action: str  # what the operator can do about it ("" when nothing is needed)


NONE = ReasonCode(0, "none", "No restriction", "")
OTHER = ReasonCode(999, "other", "Other reason: see the decision record",
                   "Ask the control engineer (boiler-ai explain)")

# Every messages.Reason -> (code, text, action). Grouped by hundreds: 1xx operator and DCS handshake,
# 2xx plant inputs, 3xx model, 4xx envelope and guard, 5xx write and daemon.
_CODES: dict[Reason, tuple[int, str, str]] = {
    Reason.AI_ENABLE_OFF: (101, "AI not enabled on the faceplate", "Switch AI_ENABLE on to let the AI ask for control"),
    Reason.AWAITING_OPERATOR_REENABLE: (102, "Released: waiting for the operator to re-enable",
                                        "Check the release reason, then switch AI_ENABLE off and on"),
    Reason.AI_ENABLE_DROPPED: (103, "Operator switched AI off", ""),
    Reason.DCS_PERMISSIVE_OFF: (104, "DCS permissive off (coordinated control, load, MFT, runback)",
                                "AI can engage once the DCS permissive is back"),
    Reason.DCS_PERMISSIVE_LOST: (105, "DCS permissive lost (runback, MFT, coordinated control off)", ""),
    Reason.AI_ACTIVE_LOST: (106, "DCS dropped AI mode (watchdog or DCS logic)", "Check the DCS AI selector logic"),
    Reason.AI_ACTIVE_NOT_GRANTED: (107, "DCS did not grant AI mode in time", "Check the DCS AI selector logic"),
    Reason.NOT_ENOUGH_HEALTHY_CYCLES: (108, "Waiting for enough healthy cycles before engaging", ""),
    Reason.REQUESTING_AI_MODE: (109, "AI asking the DCS for control", ""),
    Reason.DCS_CONFIRMED: (110, "DCS confirmed the hand-back", ""),
    Reason.MV_HANDED_BACK: (111, "Operator took a variable back to the DCS: the AI runs the others",
                            "Switch the variable's AI enable on to give it back to the AI"),
    Reason.READ_FAILED: (201, "Cannot read the plant (OPC UA connection)", "Check the OPC UA link to the DCS"),
    Reason.CRITICAL_INPUT_INVALID: (202, "Critical measurement bad, stale or out of range",
                                    "Check the instrument named in the record"),
    Reason.HOLDING_LAST_GOOD: (203, "Non-critical measurement bad: holding its last good value",
                               "Check the instrument; the AI releases if it does not recover"),
    Reason.OBSERVE_MODE: (300, "Observe mode: recording the unit's history, no model",
                          "Train a model for this unit (training/README.md), then run it in shadow mode"),
    Reason.POLICY_HISTORY_FILLING: (301, "Model filling its input history", ""),
    Reason.MODEL_OUTPUT_NOT_FINITE: (302, "Model output invalid", "Call the control engineer"),
    Reason.MODEL_OUT_OF_DEPTH_HOLDING: (303, "Plant outside the model's experience: holding setpoints", ""),
    Reason.MODEL_OUT_OF_DEPTH: (304, "Plant outside the model's experience for too long", ""),
    Reason.ENVELOPE_INFEASIBLE_HOLDING: (401, "No move fits the envelope: holding setpoints", ""),
    Reason.ENVELOPE_INFEASIBLE: (402, "No setpoint fits the envelope", "Check DCS setpoints against the AI limits"),
    Reason.GUARD_BLOCK: (403, "Safety guard blocked the write", "Call the control engineer"),
    Reason.NO_SAFE_ACTION: (404, "No checked action to write", ""),
    Reason.PROCESS_LIMIT_WARNING: (405, "Process value near its limit: AI moving back to the DCS setpoints", ""),
    Reason.PROCESS_LIMIT_EXCEEDED: (406, "Process value over its limit: control handed back to the DCS",
                                    "Check the limit named in the record, then switch AI_ENABLE off and on"),
    Reason.PROCESS_LIMIT_RECOVERING: (407, "Waiting for the process value to settle inside its limit", ""),
    Reason.PLANT_TRANSIENT: (408, "Mill starting, stopping or tripped: AI moving back to the DCS setpoints until it "
                                  "settles", ""),
    Reason.WRITE_FAILED: (501, "Writing the AI setpoints failed", "Check the OPC UA link and write permissions"),
    Reason.DAEMON_STOPPING: (502, "AI software stopping", ""),
    Reason.RECORD_NOT_DURABLE: (503, "Decisions cannot be recorded: AI kept off",
                                "Check the decision log's disk (free space, errors); the AI may be re-enabled once "
                                "records are kept"),
}
_missing = [r.value for r in Reason if r not in _CODES]
assert not _missing, f"no AI_REASON code for {_missing}"
REASONS: tuple[ReasonCode, ...] = tuple(sorted(
    (NONE, OTHER, *(ReasonCode(code, r.value, text, action) for r, (code, text, action) in _CODES.items())),
    key=lambda r: r.code))
BY_NAME: dict[str, ReasonCode] = {r.name: r for r in REASONS}
BY_CODE: dict[int, ReasonCode] = {r.code: r for r in REASONS}
assert len(BY_NAME) == len(BY_CODE) == len(REASONS), "reason names and codes must be unique"

# Events that say why the AI holds back this cycle, most serious first.
_HOLD_TYPES = ("immediate_disable", "soft_disable", "no_entry")


def reason(name: str | None) -> ReasonCode:
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
        self.released: ReasonCode | None = None

    def state(self) -> str | None:
        """The latched release reason's name (the controller's state for replay)."""
        return None if self.released is None else self.released.name

    def restore(self, state: str | None) -> None:
        self.released = None if state is None else reason(state)

    def of_record(self, record: Mapping) -> tuple[int, int]:
        """AI_STATUS and AI_REASON of a decision record (fed in seq order): as the daemon recorded them, or,
        in records written before they were recorded, as this latch reconstructs them."""
        codes = self.update(record["mode"], record["events"], record["release_reason"])
        if record.get("ai_status") is None:
            return codes
        return record["ai_status"], record["ai_reason"]

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


def markdown() -> str:
    """The AI_STATUS and AI_REASON tables as deploy/DCS_INTEGRATION.md prints them (a test compares)."""
    lines = ["| AI_STATUS | mode | faceplate text |", "|---|---|---|"]
    lines += [f"| {MODE_CODES[m]} | `{m.value}` | {MODE_TEXT[m]} |" for m in MODE_CODES]
    lines += ["", "| AI_REASON | record name | faceplate text | what the operator can do |", "|---|---|---|---|"]
    lines += [f"| {r.code} | `{r.name}` | {r.text} | {r.action or '—'} |" for r in REASONS]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
