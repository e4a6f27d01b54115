"""One control cycle, pure: snapshot in, writes and a decision record out.

validate -> observe -> infer -> project -> guard -> engagement -> writes. The daemon does the I/O
around it (read before, write and record after) and hands in every clock value, so a logged cycle
replays to the same decision (boiler_ai.record.replay).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from boiler_ai import __version__
from boiler_ai.control.engagement import Engagement, Event, EventType, Handshake, Mode, Transition
from boiler_ai.control.envelope import Envelope
from boiler_ai.control.guard import Guard
from boiler_ai.control.policy import PolicyRunner
from boiler_ai.control.projector import ProjectionStatus, Projector
from boiler_ai.control.supervision import Supervisor
from boiler_ai.control.validate import Validation, Validator
from boiler_ai.plant.tagmap import TagMap
from boiler_ai.plant.types import Snapshot, WriteResult
from boiler_ai.record.schema import SCHEMA_VERSION, inputs_block

SOFTWARE = f"boiler-ai {__version__}"


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


@dataclass(slots=True)
class CycleOutput:
    writes: dict[str, float]  # tag -> value for this cycle's one batch write; empty: write nothing
    record: dict  # the decision record, completed by finish()
    setpoints_written: bool  # the writes carry AI setpoints (not only the handshake)
    # the record stage's share in the core: controller state, engagement decision, building the record
    record_build_us: int


class Controller:
    """The controller core for one unit. Holds all state that a replay must reproduce."""

    def __init__(self, settings: ControllerSettings, tag_map: TagMap, envelope: Envelope,
                 projector: Projector, guard: Guard, policy: PolicyRunner,
                 clock_ns: Callable[[], int]):
        self.settings = settings
        self.tag_map = tag_map
        self.envelope = envelope
        self.projector = projector
        self.guard = guard
        self.policy = policy
        self._policy_inputs = frozenset(policy.input_signals)
        self.clock_ns = clock_ns
        self.mv_names = list(tag_map.manipulated)
        self._readable = tag_map.readable
        self.validator = Validator([tag_map.signals[n] for n in self._readable], settings.time_scale)
        self.engagement = Engagement(closed_loop=settings.closed_loop,
                                     healthy_cycles_to_engage=settings.healthy_cycles_to_engage,
                                     grant_timeout_cycles=settings.grant_timeout_cycles,
                                     arm_on_start=settings.arm_on_start)
        self.hs = tag_map.handshake
        self._dcs_tags = [tag_map.manipulated[n].dcs_setpoint for n in self.mv_names]
        self._ai_tags = [tag_map.manipulated[n].ai_setpoint for n in self.mv_names]
        # A spread is judged against each action's allowed deviation from the DCS: 0.5 t/h of
        # disagreement matters for a feeder bias, not for a damper opening.
        self._spread_scale = [max(dev, 1e-9) for dev in envelope.max_dev.tolist()]
        self.supervisor = Supervisor(envelope, settings.cycle_period_s)
        self.heartbeat = 0
        self.cycle = 0
        self.out_of_depth_s = 0.0

    # --- the cycle -------------------------------------------------------------------------

    def step(self, snapshot: Snapshot, wall_time: float, mono_time: float,
             extra_events: list[Event] | None = None) -> CycleOutput:
        """One cycle. `extra_events` come from outside the core (e.g. the daemon stopping)."""
        s = self.settings
        dt = s.cycle_period_s
        clock = self.clock_ns
        t_state = clock()
        state_before = self.state() if self.cycle % s.state_every_cycles == 0 else None
        t0 = clock()
        events: list[Event] = list(extra_events or ())

        validation = self.validator.validate(snapshot, dt)
        values = validation.values
        if validation.snapshot_error is not None:
            events.append(Event(EventType.IMMEDIATE_DISABLE, "read_failed", validation.snapshot_error))
        else:
            for name in validation.critical_bad:
                events.append(Event(EventType.IMMEDIATE_DISABLE, "critical_input_invalid",
                                    f"{name}: {validation.issues[name]}"))
        for name in validation.held:
            events.append(Event(EventType.SOFT_DISABLE, "holding_last_good", f"{name}: {validation.issues[name]}"))
        t1 = clock()

        # What is in effect now: the AI setpoints the DCS holds while we are in control, its own
        # setpoints otherwise (the DCS makes the AI setpoints track them, so engaging is bumpless).
        # Vectors are lists of floats in MV order throughout the cycle: no numpy on eighteen numbers.
        u_dcs = self._vector(values, self._dcs_tags)
        u_prev = self._vector(values, self._ai_tags) if self.engagement.mode is Mode.ACTIVE else u_dcs.copy()
        observed = self._observe(values, events)
        t2 = clock()
        requested, policy_info = self._infer(u_prev, events) if observed else (None, None)
        t3 = clock()

        handshake = Handshake(*(self._flag(values, self.hs[k]) for k in ("ai_enable", "ai_permissive", "ai_active")))
        process_now = {name: values.get(name, math.nan) for name in self.envelope.process_signals}
        available = {sig: values.get(sig, 0.0) >= 0.5 for sig in self.envelope.condition_signals}
        supervision = self.supervisor.update(process_now, u_prev, u_dcs, self.engagement.mode is Mode.ACTIVE)
        events.extend(supervision.events)
        process_now = supervision.judged  # measured, or measured plus the lagging analysers' prediction

        projection = None
        verdict = None
        action = None
        if requested is not None and all(map(math.isfinite, u_prev)) and all(map(math.isfinite, u_dcs)):
            projection = self.projector.project(requested, u_prev, u_dcs, process_now, available, dt,
                                                supervision.retreat)
            if projection.status is ProjectionStatus.RELEASE:
                events.append(Event(EventType.IMMEDIATE_DISABLE, "envelope_infeasible", projection.reason))
            else:
                if projection.status is ProjectionStatus.HOLD:
                    events.append(Event(EventType.SOFT_DISABLE, "envelope_infeasible_holding", projection.reason))
                action = projection.action
        t4 = clock()
        if action is not None:
            mvs = self.mv_names
            verdict = self.guard.check(dict(zip(mvs, action)), dict(zip(mvs, u_prev)), dict(zip(mvs, u_dcs)),
                                       process_now, available, dt)
            if not verdict.ok:
                events.append(Event(EventType.IMMEDIATE_DISABLE, "guard_block", "; ".join(verdict.violations)))
        t5 = clock()

        safe_action = action if verdict is not None and verdict.ok else None
        if safe_action is None and not any(e.type is EventType.IMMEDIATE_DISABLE for e in events):
            # nothing checked to write: never engage on it, and never stay engaged without it
            kind = EventType.IMMEDIATE_DISABLE if self.engagement.mode is Mode.ACTIVE else EventType.NO_ENTRY
            events.append(Event(kind, "no_safe_action", ""))
        transition = self.engagement.update(handshake, events)
        healthy = not any(e.type is EventType.IMMEDIATE_DISABLE for e in events)
        writes, setpoints = self._writes(safe_action, healthy)

        record = self._record(snapshot, wall_time, mono_time, validation, events, transition, requested,
                              action, projection, verdict, writes if setpoints else None, u_prev, u_dcs,
                              policy_info, state_before, (t4 - t3) // 1000)
        t6 = clock()
        # read, write and record are the daemon's; it fills them in
        record["timings_us"] = {"read": 0, "validate": (t1 - t0) // 1000, "observe": (t2 - t1) // 1000,
                                "infer": (t3 - t2) // 1000, "project": (t4 - t3) // 1000,
                                "guard": (t5 - t4) // 1000, "write": 0, "record": 0}
        self.cycle += 1
        return CycleOutput(writes, record, setpoints, (t6 - t5 + t0 - t_state) // 1000)

    def finish(self, output: CycleOutput, result: WriteResult | None) -> dict[str, float]:
        """Take the write's outcome into the record and the state. Returns a release write to send
        at once (same cycle) when the write failed while we were in control, else {}."""
        record = output.record
        if result is None:
            record["write"] = None
            return {}
        record["write"] = {"ok": result.ok, "status": result.status, "error": result.error}
        if all(tag in result.read_back for tag in self._ai_tags):
            record["read_back"] = [result.read_back[tag] for tag in self._ai_tags]
        if result.ok:
            return {}
        events: list[Event] = []
        transition = self.engagement.write_failed(result.error or "write rejected", events)
        record["events"].extend(e.as_dict() for e in events)
        record["mode"] = self.engagement.mode.value
        if transition.changed:
            record["transition"] = {"from": (record["transition"] or {"from": transition.previous.value})["from"],
                                    "to": transition.mode.value}
        if transition.release_reason is not None:
            record["release_reason"] = record["release_reason"] or transition.release_reason
        return {self.hs["ai_request"]: 0.0} if self.settings.closed_loop else {}

    # --- pieces ------------------------------------------------------------------------------

    def _observe(self, values: dict[str, float], events: list[Event]) -> bool:
        """Feed this cycle's inputs to the policy's history; True when it can infer."""
        policy = self.policy
        if not self._policy_inputs <= values.keys():
            policy.reset()  # a gap in the history would feed the model a picture that never existed
            return False
        policy.observe(values)
        if not policy.ready:
            events.append(Event(EventType.NO_ENTRY, "policy_history_filling", ""))
        return policy.ready

    def _infer(self, u_prev: list[float], events: list[Event]) -> tuple[list[float] | None, dict]:
        inference = self.policy.infer()
        spread = None
        if inference.spread is not None:
            ratios = [s / k for s, k in zip(inference.spread, self._spread_scale)]
            spread = math.nan if any(map(math.isnan, ratios)) else max(ratios)
        info = {"spread": spread, "out_of_training_envelope": list(inference.out_of_envelope)}
        if not inference.finite:
            events.append(Event(EventType.IMMEDIATE_DISABLE, "model_output_not_finite", ""))
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
            events.append(Event(EventType.IMMEDIATE_DISABLE, "model_out_of_depth", "; ".join(reasons)))
            return None, info
        events.append(Event(EventType.SOFT_DISABLE, "model_out_of_depth_holding", "; ".join(reasons)))
        return u_prev.copy(), info

    def _writes(self, action: list[float] | None, healthy: bool) -> tuple[dict[str, float], bool]:
        if not self.settings.closed_loop:
            return {}, False  # shadow: compute and log, never write
        if healthy:
            self.heartbeat = (self.heartbeat + 1) % 2**32
        writes = {self.hs["ai_heartbeat"]: float(self.heartbeat)}
        if self.engagement.mode is Mode.ACTIVE and action is not None:
            writes.update(zip(self._ai_tags, action))
            writes[self.hs["ai_request"]] = 1.0
            return writes, True
        writes[self.hs["ai_request"]] = 0.0
        return writes, False

    @staticmethod
    def _vector(values: dict[str, float], tags: list[str]) -> list[float]:
        """Values in `tags` order as floats; NaN where a tag has no usable value."""
        return [float(values.get(t, math.nan)) for t in tags]

    @staticmethod
    def _flag(values: dict[str, float], tag: str) -> bool | None:
        value = values.get(tag)
        return None if value is None else value >= 0.5

    def _record(self, snapshot: Snapshot, wall_time: float, mono_time: float, validation: Validation,
                events: list[Event], transition: Transition, requested, projected: list[float] | None,
                projection, verdict, writes, u_prev: list[float], u_dcs: list[float], policy_info: dict | None,
                state_before: dict | None, project_us: int) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "unit_id": self.settings.unit_id,
            "seq": None,  # the durable log stamps it
            "wall_time": wall_time,
            "mono_time": mono_time,
            "cycle_period_s": self.settings.cycle_period_s,
            "read_time": snapshot.read_time,
            "read_error": snapshot.error,
            "mode": transition.mode.value,
            "events": [e.as_dict() for e in events],
            "transition": ({"from": transition.previous.value, "to": transition.mode.value}
                           if transition.changed else None),
            "inputs": inputs_block(self._readable, snapshot.readings, validation.issues,
                                   {n: validation.values[n] for n in validation.held}),
            "model": {"id": self.settings.model_id, "sha256": self.settings.model_sha256},
            "policy": policy_info,
            "mvs": self.mv_names,
            "requested": requested,
            "projected": projected,
            "written": None if writes is None else [writes[t] for t in self._ai_tags],
            "u_prev": u_prev,
            "u_dcs": u_dcs,
            "read_back": None,
            "projection": None if projection is None else {
                "status": projection.status.value, "active_constraints": list(projection.active_constraints),
                "solve_us": project_us},
            "guard": None if verdict is None else {"ok": verdict.ok, "violations": list(verdict.violations)},
            "write": None,
            "release_reason": transition.release_reason,
            "heartbeat": self.heartbeat,
            "config_hash": self.settings.config_hash,
            "software": SOFTWARE,
            "controller_state": state_before,
        }

    # --- state for replay --------------------------------------------------------------------

    def state(self) -> dict:
        return {"validator": self.validator.state(), "engagement": self.engagement.state(),
                "policy": self.policy.state(), "heartbeat": self.heartbeat, "cycle": self.cycle,
                "out_of_depth_s": self.out_of_depth_s, "supervision": self.supervisor.state()}

    def restore(self, state: dict) -> None:
        self.validator.restore(state["validator"])
        self.engagement.restore(state["engagement"])
        self.policy.restore(state["policy"])
        self.heartbeat = state["heartbeat"]
        self.cycle = state["cycle"]
        self.out_of_depth_s = state["out_of_depth_s"]
        self.supervisor.restore(state["supervision"])
