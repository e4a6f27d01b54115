"""One control cycle, pure: snapshot and times in, a `Decision` out.

validate -> observe -> infer -> project -> guard -> engagement -> writes. The shell (daemon.py) does
the I/O around it (read before; write, outcome and record after), hands in every time value and a
`lap(stage)` callback it times the stages with; the core reads no clock, so a logged cycle replays
to the same decision (boiler_ai.replay).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

from boiler_ai.control.engagement import Engagement
from boiler_ai.control.envelope import Envelope
from boiler_ai.control.guard import Guard
from boiler_ai.control.policy import PolicyRunner
from boiler_ai.control.projector import Projector
from boiler_ai.control.supervision import Supervision, Supervisor
from boiler_ai.control.validate import Validator
from boiler_ai.messages import (
    ABSENT_STATUS,
    ChallengerRun,
    Decision,
    Event,
    EventType,
    Handshake,
    Inputs,
    Mode,
    ModeChange,
    ModelRef,
    PolicyCheck,
    ProjectionResult,
    ProjectionStatus,
    Reason,
    Snapshot,
    WriteResult,
)
from boiler_ai.status_codes import StatusLatch
from boiler_ai.tagmap import TagMap


@dataclass(frozen=True)
class ControllerSettings:
    unit_id: str
    closed_loop: bool
    cycle_period_s: float
    time_scale: float
    healthy_cycles_to_engage: int
    grant_timeout_cycles: int
    arm_on_start: bool
    max_spread: float
    out_of_depth_hold_s: float
    state_every_cycles: int
    model_id: str
    model_sha256: str
    config_hash: str


def no_lap(stage: str) -> None:
    """The stage clock of a replay: nothing is timed."""


# A signal absent from the readings, and the four per-input arrays taken from every reading in one
# C-level pass each: this runs every cycle, for about a hundred signals.
_ABSENT_READING = SimpleNamespace(value=math.nan, source_ts=math.nan, server_ts=math.nan, status_code=ABSENT_STATUS)
_READING_FIELDS = tuple(map(operator.attrgetter, ("value", "source_ts", "server_ts", "status_code")))


def inputs_of(signals: Sequence[str], readings: Mapping, issues: Mapping[str, str],
              held: Mapping[str, float]) -> Inputs:
    """The record's `inputs` from this cycle's readings (Reading: .value/.status_code/.source_ts/.server_ts).

    `signals` is every mapped readable signal in tag-map order; one absent from `readings` is recorded
    as value NaN, timestamps NaN, status ABSENT_STATUS (its issue says missing or read_failed).
    `signals`, `issues` and `held` are kept as given, not copied: the caller must not change them later.
    """
    present = [readings.get(name, _ABSENT_READING) for name in signals]
    value, source_ts, server_ts, status = (list(map(get, present)) for get in _READING_FIELDS)
    return Inputs(signals, value, source_ts, status, issues, held, server_ts)


class Controller:
    """The controller core for one unit. Holds all state that a replay must reproduce."""

    def __init__(self, settings: ControllerSettings, tag_map: TagMap, envelope: Envelope,
                 projector: Projector, guard: Guard, policy: PolicyRunner | None,
                 challenger: tuple[PolicyRunner, ModelRef] | None = None):
        self.settings = settings
        self.tag_map = tag_map
        self.envelope = envelope
        self.projector = projector
        self.guard = guard
        # No policy: observe mode. Read, validate and record the unit's history; never engage or write.
        self.use_models(policy, settings.model_sha256, challenger)
        self.mv_names = list(tag_map.manipulated)
        self._readable = tag_map.readable
        self.validator = Validator([tag_map.signals[n] for n in self._readable], settings.time_scale)
        self.engagement = Engagement(closed_loop=settings.closed_loop,
                                     healthy_cycles_to_engage=settings.healthy_cycles_to_engage,
                                     grant_timeout_cycles=settings.grant_timeout_cycles,
                                     arm_on_start=settings.arm_on_start)
        if policy is None:
            self.engagement.mode = Mode.DISABLED  # nothing is computed, so there is nothing to shadow
        self.hs = tag_map.handshake
        self._dcs_tags = [tag_map.manipulated[n].dcs_setpoint for n in self.mv_names]
        self.ai_tags = [tag_map.manipulated[n].ai_setpoint for n in self.mv_names]
        # the operator's per-MV AI enable, where the tag map has one: (MV name, tag)
        self._enable_tags = [(n, tag_map.manipulated[n].ai_enable) for n in self.mv_names
                             if tag_map.manipulated[n].ai_enable is not None]
        # A spread is judged against each action's allowed deviation from the DCS: 0.5 t/h of
        # disagreement matters for a feeder bias, not for a damper opening.
        self._spread_scale = [max(dev, 1e-9) for dev in envelope.max_dev.tolist()]
        self.supervisor = Supervisor(envelope, settings.cycle_period_s)
        # what every cycle hands the supervisor, projector and guard, worked out once (the envelope is frozen)
        self._process_signals = envelope.process_signals
        self._condition_signals = envelope.condition_signals
        self._handshake_tags = tuple(self.hs[k] for k in ("ai_enable", "ai_permissive", "ai_active"))
        self.heartbeat = 0
        self.cycle = 0
        self.out_of_depth_s = 0.0
        self.status = StatusLatch()  # AI_STATUS and AI_REASON for the DCS faceplate

    def use_models(self, policy: PolicyRunner | None, sha256: str,
                   challenger: tuple[PolicyRunner, ModelRef] | None) -> None:
        """The active model and the challenger run in shadow beside it. Between cycles a switch hands in the
        challenger's runner as the active one: its input history is already full, so the next cycle infers
        and the engagement (the operator's permissive) goes on untouched."""
        self.policy = policy
        self._policy_inputs = frozenset(policy.input_signals) if policy is not None else frozenset()
        if policy is not None:
            self.settings = dataclasses.replace(self.settings, model_id=policy.model_id, model_sha256=sha256)
        self.challenger = challenger
        self._challenger_inputs = frozenset(challenger[0].input_signals) if challenger is not None else frozenset()

    # --- the cycle -------------------------------------------------------------------------

    def step(self, snapshot: Snapshot, wall_time: float, mono_time: float, extra_events: Sequence[Event] = (),
             lap: Callable[[str], None] = no_lap) -> Decision:
        """One cycle. `extra_events` come from outside the core (e.g. the daemon stopping). `lap(stage)` is
        called as each stage ends, so the shell can time them; the record stage's share here is the
        controller state taken first and the engagement decision and the decision built last."""
        s = self.settings
        dt = s.cycle_period_s
        state_before = self.state() if self.cycle % s.state_every_cycles == 0 else None
        lap("record")
        events: list[Event] = list(extra_events)

        validation = self.validator.validate(snapshot, dt)
        values = validation.values
        if validation.snapshot_error is not None:
            events.append(Event(EventType.IMMEDIATE_DISABLE, Reason.READ_FAILED, validation.snapshot_error))
        else:
            for name in validation.critical_bad:
                events.append(Event(EventType.IMMEDIATE_DISABLE, Reason.CRITICAL_INPUT_INVALID,
                                    f"{name}: {validation.issues[name]}"))
        for name in validation.held:
            events.append(Event(EventType.SOFT_DISABLE, Reason.HOLDING_LAST_GOOD,
                                f"{name}: {validation.issues[name]}"))
        lap("validate")

        # What is in effect now: the AI setpoints the DCS holds while we are in control, its own
        # setpoints otherwise (the DCS makes the AI setpoints track them, so engaging is bumpless).
        # Vectors are lists of floats in MV order throughout the cycle: no numpy on fifteen numbers.
        u_dcs = self._vector(values, self._dcs_tags)
        u_prev = self._vector(values, self.ai_tags) if self.engagement.mode is Mode.ACTIVE else u_dcs.copy()
        observed = self._observe(values, events)
        lap("observe")
        requested, policy_check = self._infer(u_prev, events) if observed else (None, None)
        lap("infer")

        handshake = Handshake(*[self._flag(values, tag) for tag in self._handshake_tags])
        process_now = {name: values.get(name, math.nan) for name in self._process_signals}
        available = {sig: values.get(sig, 0.0) >= 0.5 for sig in self._condition_signals}
        supervision = self.supervisor.update(process_now, u_prev, u_dcs, self.engagement.mode is Mode.ACTIVE,
                                             values)
        events.extend(supervision.events)
        process_now = supervision.judged  # measured, or measured plus the lagging analysers' prediction
        # Taken back by the operator (or its enable unreadable): the projector and guard hold it at the
        # DCS's setpoint, as an unavailable MV, and the AI goes on with the others.
        handed_back = [mv for mv, tag in self._enable_tags if not values.get(tag, 0.0) >= 0.5]

        projection = None
        verdict = None
        action = None
        if requested is not None and all(map(math.isfinite, u_prev)) and all(map(math.isfinite, u_dcs)):
            projection = self.projector.project(requested, u_prev, u_dcs, process_now, available, dt,
                                                supervision.retreat)
            if projection.status is ProjectionStatus.RELEASE:
                events.append(Event(EventType.IMMEDIATE_DISABLE, Reason.ENVELOPE_INFEASIBLE, projection.reason))
            else:
                if projection.status is ProjectionStatus.HOLD:
                    events.append(Event(EventType.SOFT_DISABLE, Reason.ENVELOPE_INFEASIBLE_HOLDING,
                                        projection.reason))
                action = projection.action
        lap("project")
        if action is not None:
            mvs = self.mv_names
            verdict = self.guard.check(dict(zip(mvs, action)), dict(zip(mvs, u_prev)), dict(zip(mvs, u_dcs)),
                                       process_now, available, dt)
            if not verdict.ok:
                events.append(Event(EventType.IMMEDIATE_DISABLE, Reason.GUARD_BLOCK, "; ".join(verdict.violations)))
        lap("guard")
        challenger = None
        if self.challenger is not None:
            challenger = self._challenge(values, u_prev, u_dcs, process_now, available, supervision)
            lap("infer")

        safe_action = action if verdict is not None and verdict.ok else None
        if safe_action is None and not any(e.type is EventType.IMMEDIATE_DISABLE for e in events):
            # nothing checked to write: never engage on it, and never stay engaged without it
            kind = EventType.IMMEDIATE_DISABLE if self.engagement.mode is Mode.ACTIVE else EventType.NO_ENTRY
            events.append(Event(kind, Reason.NO_SAFE_ACTION, ""))
        transition = self.engagement.update(handshake, events)
        healthy = not any(e.type is EventType.IMMEDIATE_DISABLE for e in events)
        if handed_back and transition.mode is Mode.ACTIVE:  # in AI mode with less than all it could move
            events.append(Event(EventType.SOFT_DISABLE, Reason.MV_HANDED_BACK, ", ".join(handed_back)))
        ai_status, ai_reason = self.status.update(transition.mode, [e.as_dict() for e in events],
                                                  transition.release_reason)
        writes, setpoints = self._writes(safe_action, healthy, ai_status, ai_reason)

        decision = Decision(
            wall_time=wall_time, mono_time=mono_time, read_time=snapshot.read_time, read_error=snapshot.error,
            server_time=snapshot.server_time,
            mode=transition.mode, events=tuple(events),
            transition=ModeChange(transition.previous, transition.mode) if transition.changed else None,
            inputs=inputs_of(self._readable, snapshot.readings, validation.issues,
                             {n: validation.values[n] for n in validation.held}),
            policy=policy_check, requested=requested, projected=action,
            written=[writes[t] for t in self.ai_tags] if setpoints else None, u_prev=u_prev, u_dcs=u_dcs,
            projection=None if projection is None else ProjectionResult(projection.status,
                                                                        projection.active_constraints),
            guard=verdict, release_reason=transition.release_reason, heartbeat=self.heartbeat,
            controller_state=state_before, writes=writes, setpoints_written=setpoints,
            ai_status=ai_status, ai_reason=ai_reason, handed_back=handed_back, challenger=challenger)
        self.cycle += 1
        lap("record")
        return decision

    def finish(self, decision: Decision, result: WriteResult | None) -> tuple[Decision, dict[str, float]]:
        """Take the write's outcome into the state. Returns the decision as it stands after the write
        (changed only when the write failed) and a release write to send at once (same cycle) when
        the write failed while we were in control, else {}."""
        if result is None or result.ok:
            return decision, {}
        events = list(decision.events)
        transition = self.engagement.write_failed(result.error or "write rejected", events)
        changed = decision.transition
        if transition.changed:
            changed = ModeChange(decision.transition.from_ if decision.transition else transition.previous,
                                 transition.mode)
        release_reason = decision.release_reason or transition.release_reason
        ai_status, ai_reason = self.status.update(self.engagement.mode, [e.as_dict() for e in events], release_reason)
        decision = dataclasses.replace(
            decision, events=tuple(events), mode=self.engagement.mode, transition=changed,
            release_reason=release_reason, ai_status=ai_status, ai_reason=ai_reason)
        if not self.settings.closed_loop:
            return decision, {}
        return decision, {self.hs["ai_request"]: 0.0, **self._status_writes(ai_status, ai_reason)}

    def read_back(self, result: WriteResult | None) -> list[float] | None:
        """The AI setpoints the DCS holds after the write, in MV order (None unless all were read back)."""
        if result is None or not all(tag in result.read_back for tag in self.ai_tags):
            return None
        return [result.read_back[tag] for tag in self.ai_tags]

    # --- pieces ------------------------------------------------------------------------------

    def _observe(self, values: dict[str, float], events: list[Event]) -> bool:
        """Feed this cycle's inputs to the policy's history; True when it can infer."""
        policy = self.policy
        if policy is None:
            events.append(Event(EventType.NO_ENTRY, Reason.OBSERVE_MODE, "no model: reading and recording only"))
            return False
        fed = _feed(policy, self._policy_inputs, values)
        if fed is False:
            events.append(Event(EventType.NO_ENTRY, Reason.POLICY_HISTORY_FILLING, ""))
        return bool(fed)

    def _spread(self, inference) -> float | None:
        """The ensemble's largest disagreement, in units of each action's allowed deviation."""
        if inference.spread is None:
            return None
        ratios = [s / k for s, k in zip(inference.spread, self._spread_scale)]
        return math.nan if any(map(math.isnan, ratios)) else max(ratios)

    def _challenge(self, values: dict[str, float], u_prev: list[float], u_dcs: list[float],
                   process_now: dict[str, float], available: dict[str, bool],
                   supervision: Supervision) -> ChallengerRun:
        """The challenger on this cycle's inputs, projected from the same setpoints in force; never written."""
        runner, model = self.challenger
        requested = projected = spread = None
        if _feed(runner, self._challenger_inputs, values):
            inference = runner.infer()
            spread = self._spread(inference)
            requested = inference.action if inference.finite else None
        if requested is not None and all(map(math.isfinite, u_prev)) and all(map(math.isfinite, u_dcs)):
            projection = self.projector.project(requested, u_prev, u_dcs, process_now, available,
                                                self.settings.cycle_period_s, supervision.retreat)
            projected = None if projection.status is ProjectionStatus.RELEASE else projection.action
        return ChallengerRun(model, requested, projected, spread)

    def _infer(self, u_prev: list[float], events: list[Event]) -> tuple[list[float] | None, PolicyCheck]:
        inference = self.policy.infer()
        spread = self._spread(inference)
        info = PolicyCheck(spread, list(inference.out_of_envelope))
        if not inference.finite:
            events.append(Event(EventType.IMMEDIATE_DISABLE, Reason.MODEL_OUTPUT_NOT_FINITE, ""))
            return None, info
        reasons = []
        if inference.out_of_envelope:
            reasons.append("inputs outside training envelope: " + ", ".join(inference.out_of_envelope))
        if spread is not None and not spread <= self.settings.max_spread:
            reasons.append(f"ensemble spread {spread:.3f} > {self.settings.max_spread}")
        if not reasons:
            self.out_of_depth_s = 0.0
            return inference.action, info
        # The model is out of its depth: hold what is in effect; release if it does not recover.
        self.out_of_depth_s += self.settings.cycle_period_s
        if self.out_of_depth_s > self.settings.out_of_depth_hold_s:
            events.append(Event(EventType.IMMEDIATE_DISABLE, Reason.MODEL_OUT_OF_DEPTH, "; ".join(reasons)))
            return None, info
        events.append(Event(EventType.SOFT_DISABLE, Reason.MODEL_OUT_OF_DEPTH_HOLDING, "; ".join(reasons)))
        return u_prev.copy(), info

    def _writes(self, action: list[float] | None, healthy: bool, ai_status: int,
                ai_reason: int) -> tuple[dict[str, float], bool]:
        if not self.settings.closed_loop:
            return {}, False  # shadow: compute and log, never write
        if healthy:
            self.heartbeat = (self.heartbeat + 1) % 2**32
        writes = {self.hs["ai_heartbeat"]: float(self.heartbeat), **self._status_writes(ai_status, ai_reason)}
        if self.engagement.mode is Mode.ACTIVE and action is not None:
            writes.update(zip(self.ai_tags, action))
            writes[self.hs["ai_request"]] = 1.0
            return writes, True
        writes[self.hs["ai_request"]] = 0.0
        return writes, False

    def _status_writes(self, ai_status: int, ai_reason: int) -> dict[str, float]:
        """AI_STATUS and AI_REASON for the faceplate, where the tag map has them."""
        codes = {"ai_status": ai_status, "ai_reason": ai_reason}
        return {self.hs[role]: float(code) for role, code in codes.items() if role in self.hs}

    @staticmethod
    def _vector(values: dict[str, float], tags: list[str]) -> list[float]:
        """Values in `tags` order as floats; NaN where a tag has no usable value."""
        return [float(values.get(t, math.nan)) for t in tags]

    @staticmethod
    def _flag(values: dict[str, float], tag: str) -> bool | None:
        value = values.get(tag)
        return None if value is None else value >= 0.5

    # --- state for replay --------------------------------------------------------------------

    def state(self) -> dict:
        return {"validator": self.validator.state(), "engagement": self.engagement.state(),
                "policy": None if self.policy is None else self.policy.state(), "heartbeat": self.heartbeat,
                "cycle": self.cycle, "out_of_depth_s": self.out_of_depth_s, "status": self.status.state(),
                "supervision": self.supervisor.state(),
                "challenger": None if self.challenger is None else self.challenger[0].state()}

    def restore(self, state: dict) -> None:
        self.validator.restore(state["validator"])
        self.engagement.restore(state["engagement"])
        if self.policy is not None:
            self.policy.restore(state["policy"])
        self.heartbeat = state["heartbeat"]
        self.cycle = state["cycle"]
        self.out_of_depth_s = state["out_of_depth_s"]
        self.status.restore(state.get("status"))  # absent from states logged before AI_STATUS existed
        self.supervisor.restore(state["supervision"])
        if self.challenger is not None and state.get("challenger") is not None:  # absent from states logged before
            self.challenger[0].restore(state["challenger"])


def _feed(runner: PolicyRunner, inputs: frozenset[str], values: dict[str, float]) -> bool | None:
    """This cycle's inputs into a model's history: True when it can infer, False while the history fills,
    None when an input is missing (the history is reset: a gap would feed the model a picture that never
    existed)."""
    if not inputs <= values.keys():
        runner.reset()
        return None
    runner.observe(values)
    return runner.ready
