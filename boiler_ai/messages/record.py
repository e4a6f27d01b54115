"""The core's `Decision`, the shell's `Outcome`, and the `Record` the durable log frames.

One control cycle produces one of each: the controller core decides (pure, from the snapshot and the
times handed in), the shell writes and times the stages (`Outcome`), and the daemon joins them with
who decided (`Origin`) and the log's sequence number into the immutable `Record`. Its wire form is
the decision record, version `SCHEMA_VERSION` (docs/DECISION_RECORD.md): fields are only ever added.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from boiler_ai.messages.engagement import Event, Mode, Reason
from boiler_ai.messages.plant import ABSENT_STATUS, InputIssue, WriteResult
from boiler_ai.messages.wire import OPEN, Finite, Floats, Json, Number, Sha256, StatusCodes, UInt, doc

SCHEMA_VERSION = 1
STAGES = ("read", "validate", "observe", "infer", "project", "guard", "write", "record")
_ACTION = "per MV in `mvs` order"


class ProjectionStatus(enum.StrEnum):
    OK = "ok"  # the request already fits the envelope
    CLIPPED = "clipped"  # moved to the closest point that fits
    RETREAT = "retreat"  # supervision asked for a retreat: toward the DCS setpoints at the rate limits
    HOLD = "hold"  # nothing fits; the last applied setpoints still do: hold them
    RELEASE = "release"  # nothing fits, not even the last applied setpoints: hand back to the DCS


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    ok: bool = field(metadata=doc("true: accept; false: block the whole write and release"))
    violations: tuple[str, ...] = field(metadata=doc("what the guard found, one line each"))


@dataclass(frozen=True, slots=True)
class PolicyCheck:
    """How far to trust the policy's answer this cycle."""

    spread: Number | None = field(metadata=doc("ensemble spread, in units of allowed deviation; "
                                               "null without ensemble"))
    out_of_training_envelope: Sequence[str] = field(metadata=doc("inputs outside the model's training envelope"))


@dataclass(frozen=True, slots=True)
class ProjectionResult:
    status: Annotated[ProjectionStatus, OPEN] = field(metadata=doc(
        "ok (the request fits), clipped (moved to the closest action that fits), retreat (a process value is beyond "
        "its warning threshold: toward the DCS setpoints at the rate limits), hold (nothing fits: "
        "the setpoints in force are held), release (nothing fits, not even those: hand back)"))
    active_constraints: Sequence[str] = field(metadata=doc(
        "names of the envelope rows at their limit: `<mv>:<bound>` (min, max, rate_up, rate_down, "
        "deviation_low, deviation_high, retreat), `coupling:<name>`, `process:<name>`, `influence_budget`"))


@dataclass(frozen=True, slots=True)
class ModeChange:
    from_: Mode = field(metadata=doc("mode before this cycle", wire="from"))
    to: Mode = field(metadata=doc("mode after this cycle"))


@dataclass(frozen=True, slots=True)
class Inputs:
    """Every mapped readable signal: valid = not in `issue`; value used = value if valid, else `held`."""

    signals: Sequence[str] = field(metadata=doc("logical signal names, in tag-map order; every array below follows it"))
    value: Floats = field(metadata=doc("value as read (NaN when absent from the read)"))
    source_ts: Floats = field(metadata=doc("source timestamp, epoch seconds (NaN when absent)"))
    status_code: StatusCodes = field(metadata=doc(f"OPC UA StatusCode as read ({ABSENT_STATUS:#x} when absent)"))
    issue: Mapping[str, Annotated[InputIssue, OPEN]] = field(metadata=doc(
        "signal -> validation issue, only for signals that failed a check"))
    held: Mapping[str, Number] = field(metadata=doc(
        "signal -> last good value used instead (non-critical signals on hold)"))
    # added to v1 later (records written before have none): last, with a default
    server_ts: Floats = field(default=(), metadata=doc(
        "server timestamp, epoch seconds (NaN when absent, or not trusted: sent with picosecond fields); age "
        "is judged from it where there is no source timestamp"))


@dataclass(frozen=True, slots=True)
class ModelRef:
    id: str = field(metadata=doc("model id (models/<id>/)"))
    sha256: Sha256 = field(metadata=doc("sha256 of policy.onnx"))


@dataclass(frozen=True, slots=True)
class ChallengerRun:
    """A challenger model run in shadow beside the active one on the same inputs: what it would have asked and
    what the projector would have let through. Never written, never guarded; the basis for a switch."""

    model: ModelRef = field(metadata=doc("the challenger"))
    requested: Floats | None = field(metadata=doc(
        f"action it asked, {_ACTION}; null while its history fills, or when its answer was not finite"))
    projected: Floats | None = field(metadata=doc(
        f"that action after projection into the envelope from the same setpoints in force, {_ACTION}; null when "
        "nothing was projected (nothing requested, or the projector found nothing that fits)"))
    spread: Number | None = field(metadata=doc("its ensemble spread, in units of allowed deviation; null without "
                                               "ensemble or answer"))


@dataclass(frozen=True, slots=True)
class Decision:
    """What the controller core decided in one cycle, from the snapshot and the times handed in."""

    wall_time: Finite = field(metadata=doc("cycle start, epoch seconds (UTC)"))
    mono_time: Finite = field(metadata=doc("cycle start, monotonic seconds of the daemon's host"))
    read_time: Finite | None = field(metadata=doc("epoch seconds when the batch read returned"))
    read_error: str | None = field(metadata=doc("why the batch read failed as a whole, else null"))
    mode: Mode = field(metadata=doc("engagement state after this cycle"))
    events: tuple[Event, ...] = field(metadata=doc("this cycle's typed events, in the order raised"))
    transition: ModeChange | None = field(metadata=doc("set when the mode changed this cycle"))
    inputs: Inputs = field(metadata=doc("every mapped readable signal; valid = not in `issue`; "
                                        "value used = value if valid, else `held`"))
    policy: PolicyCheck | None = field(metadata=doc("how far to trust the answer; null when the policy did not run"))
    requested: Floats | None = field(metadata=doc(
        f"action asked by the policy, {_ACTION}; null when the policy did not run"))
    projected: Floats | None = field(metadata=doc(f"action after projection into the envelope, {_ACTION}"))
    written: Floats | None = field(metadata=doc(f"AI setpoints written, {_ACTION}; null when nothing was written"))
    u_prev: Floats | None = field(metadata=doc(f"previous applied action the rate limits start from, {_ACTION}"))
    u_dcs: Floats | None = field(metadata=doc(f"the DCS's own setpoints this cycle, {_ACTION}"))
    projection: ProjectionResult | None = field(metadata=doc("null when nothing was projected"))
    guard: GuardVerdict | None = field(metadata=doc("null when nothing was guarded"))
    release_reason: Annotated[Reason, OPEN] | None = field(metadata=doc("set on the cycle that drops AI_REQUEST"))
    heartbeat: UInt = field(metadata=doc("AI_HEARTBEAT value written this cycle"))
    controller_state: Json | None = field(metadata=doc(
        "the core's resumable state (replay can start here); every state_every_cycles cycles counting from "
        "the daemon's start (so in its first record), else null"))
    # For the shell, not recorded: this cycle's one batch write (tag -> value; empty: write nothing),
    # and whether it carries AI setpoints (not only the handshake).
    writes: Mapping[str, float] = field(default_factory=dict, metadata={"wire": False})
    setpoints_written: bool = field(default=False, metadata={"wire": False})
    # added to v1 later (records written before have none)
    server_time: Finite | None = field(default=None, metadata=doc(
        "the OPC UA server's clock (ServerStatus/CurrentTime) read in the same batch, epoch seconds; ages are "
        "judged against it and it must keep advancing; null when not read"))
    ai_status: UInt | None = field(default=None, metadata=doc(
        "AI_STATUS this cycle, the mode's code for the DCS faceplate (boiler_ai/status_codes.py; written to the "
        "DCS in closed loop where the tag map maps handshake.ai_status); null in records written before"))
    ai_reason: UInt | None = field(default=None, metadata=doc(
        "AI_REASON this cycle: the code of the last release (until the AI engages again), else of this cycle's "
        "most serious hold, else 0 (boiler_ai/status_codes.py; written like ai_status); null in records "
        "written before"))
    handed_back: Sequence[str] = field(default=(), metadata=doc(
        "manipulated variables the operator has taken back to the DCS this cycle (their `ai_enable` tag off): "
        "held at the DCS's own setpoint like an unavailable MV, while the AI keeps the others; absent from "
        "records written before"))
    challenger: ChallengerRun | None = field(default=None, metadata=doc(
        "the challenger model's shadow run this cycle (`challenger:` in the daemon config; `boiler-ai model "
        "install`); null without one, and absent from records written before"))


@dataclass(frozen=True, slots=True)
class StageTimings:
    """Microseconds spent in each stage of this cycle (0 when skipped)."""

    read: UInt = field(default=0, metadata=doc("the batch read"))
    validate: UInt = field(default=0, metadata=doc("input validation"))
    observe: UInt = field(default=0, metadata=doc("building the policy's input"))
    infer: UInt = field(default=0, metadata=doc("the policy"))
    project: UInt = field(default=0, metadata=doc("the projector"))
    guard: UInt = field(default=0, metadata=doc("the guard"))
    write: UInt = field(default=0, metadata=doc("the batch write with read-back (and a release write after a "
                                                "failed one)"))
    record: UInt = field(default=0, metadata=doc(
        "this cycle's record stage up to the hand-over to the log: controller state, engagement decision, "
        "building the decision and the record (queuing it in the log comes after and is not included)"))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the shell did with a decision: the write, what the DCS holds after it, how long each stage took."""

    write: WriteResult | None = field(metadata=doc("null when no write was attempted"))
    read_back: Floats | None = field(metadata=doc(f"AI setpoints the DCS holds after the write, {_ACTION}"))
    timings: StageTimings = field(metadata=doc("time spent in each stage of this cycle", wire="timings_us"))


@dataclass(frozen=True, slots=True)
class Origin:
    """Who decided: the same for every cycle of a daemon run."""

    unit_id: str = field(metadata=doc("the unit (also the PUB topic)"))
    cycle_period_s: Finite = field(metadata=doc("configured cycle period, seconds"))
    model: ModelRef = field(metadata=doc("the policy that ran"))
    mvs: Sequence[str] = field(metadata=doc(
        "manipulated variables, in tag-map order; every action array follows it"))
    config_hash: Sha256 = field(metadata=doc("sha256 of the daemon config and every file it brings in"))
    software: str = field(metadata=doc("the daemon's software version (and commit when known), e.g. boiler-ai 0.1.0"))


@dataclass(frozen=True, slots=True)
class Record:
    """One cycle's decision record as the durable log frames it. The writer stamps `seq` (the log's
    `next_seq`: there is one writer) and the loss counters before handing it over; nobody edits it."""

    seq: UInt = field(metadata=doc("monotonic per unit, never reused; a gap means a record was lost"))
    origin: Origin = field(metadata=doc("", inline=True))
    decision: Decision = field(metadata=doc("", inline=True))
    outcome: Outcome = field(metadata=doc("", inline=True))
    log_dropped_count: UInt = field(default=0, metadata=doc(
        "records the durable log could not keep since the daemon started (queue full or write failed; each "
        "left a seq gap)"))
    publish_drop_count: UInt = field(default=0, metadata=doc(
        "records not published because a subscriber was full, since start (catch-up still serves them)"))

    def as_dict(self) -> dict:
        """The in-memory wire form (boiler_ai.record.schema.encode takes it).

        Written out rather than walked: the log's writer calls it for every record, and a walk over the
        fields costs as much as the encoding. tests/record/test_record_schema.py proves it field by
        field against the schema generated from these types."""
        o, d, out = self.origin, self.decision, self.outcome
        t, inputs, policy, projection, guard, write, change = (
            out.timings, d.inputs, d.policy, d.projection, d.guard, out.write, d.transition)
        return {
            "schema_version": SCHEMA_VERSION, "seq": self.seq, "unit_id": o.unit_id, "cycle_period_s": o.cycle_period_s,
            "model": {"id": o.model.id, "sha256": o.model.sha256}, "mvs": o.mvs, "config_hash": o.config_hash,
            "software": o.software, "wall_time": d.wall_time, "mono_time": d.mono_time, "read_time": d.read_time,
            "read_error": d.read_error, "mode": d.mode, "events": [e.as_dict() for e in d.events],
            "transition": None if change is None else {"from": change.from_, "to": change.to},
            "server_time": d.server_time, "ai_status": d.ai_status, "ai_reason": d.ai_reason,
            "handed_back": d.handed_back, "challenger": None if d.challenger is None else {
                "model": {"id": d.challenger.model.id, "sha256": d.challenger.model.sha256},
                "requested": d.challenger.requested, "projected": d.challenger.projected,
                "spread": d.challenger.spread},
            "inputs": {"signals": inputs.signals, "value": inputs.value, "source_ts": inputs.source_ts,
                       "server_ts": inputs.server_ts, "status_code": inputs.status_code, "issue": inputs.issue,
                       "held": inputs.held},
            "policy": None if policy is None else {"spread": policy.spread,
                                                   "out_of_training_envelope": policy.out_of_training_envelope},
            "requested": d.requested, "projected": d.projected, "written": d.written, "u_prev": d.u_prev,
            "u_dcs": d.u_dcs,
            "projection": None if projection is None else {
                "status": projection.status, "active_constraints": list(projection.active_constraints),
                "solve_us": t.project},
            "guard": None if guard is None else {"ok": guard.ok, "violations": list(guard.violations)},
            "release_reason": d.release_reason, "heartbeat": d.heartbeat, "controller_state": d.controller_state,
            "write": None if write is None else {"ok": write.ok, "status": write.status, "error": write.error},
            "read_back": out.read_back,
            "timings_us": {"read": t.read, "validate": t.validate, "observe": t.observe, "infer": t.infer,
                           "project": t.project, "guard": t.guard, "write": t.write, "record": t.record},
            "log_dropped_count": self.log_dropped_count, "publish_drop_count": self.publish_drop_count,
        }


# Wire fields computed from others when the record is framed: (path, type annotation, doc).
DERIVED: tuple[tuple[str, Any, str], ...] = (
    ("schema_version", UInt, f"always {SCHEMA_VERSION} for this version"),
    ("projection.solve_us", UInt, "the project stage's time this cycle, microseconds (= timings_us.project)"),
)
