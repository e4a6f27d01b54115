"""Engagement state machine (docs/ARCHITECTURE.md): who is in control, and why.

The daemon never takes control; the DCS lends it. States:
  disabled   not requesting; the DCS runs on its own loops (in closed-loop mode we still compute and log)
  shadow     configured shadow mode: compute and log, never write
  active     requesting AI mode and writing setpoints
  releasing  AI_REQUEST dropped; waiting for the DCS to confirm AI_ACTIVE is false

Events are typed. The operator and the DCS always win: AI_ENABLE falling, AI_ACTIVE lost or any
immediate_disable releases in the same cycle. After an immediate release the operator must
re-assert AI_ENABLE (a rising edge) before the daemon asks again, and the inputs must have been
healthy for `healthy_cycles_to_engage` cycles in a row. The same holds at start unless `arm_on_start`.
"""

from __future__ import annotations

from boiler_ai.messages.engagement import Event, EventType, Handshake, Mode, Reason, Transition


class Engagement:
    def __init__(self, *, closed_loop: bool, healthy_cycles_to_engage: int, grant_timeout_cycles: int,
                 arm_on_start: bool = False):
        self.closed_loop = closed_loop
        self.healthy_cycles_to_engage = healthy_cycles_to_engage
        self.grant_timeout_cycles = grant_timeout_cycles
        self.mode = Mode.DISABLED if closed_loop else Mode.SHADOW
        self.healthy_cycles = 0
        # Whether an AI_ENABLE found on at start counts. Off, a restarted daemon (after a crash, say)
        # waits for the operator to switch AI_ENABLE off and on again before it asks for control.
        self.armed = arm_on_start
        self.cycles_waiting_for_grant = 0
        self.granted = False
        self.last_ai_enable: bool | None = None

    @property
    def requesting(self) -> bool:
        return self.mode is Mode.ACTIVE

    def update(self, handshake: Handshake, events: list[Event]) -> Transition:
        """Advance one cycle. `events` holds this cycle's findings; engagement events are appended."""
        previous = self.mode
        enable = bool(handshake.ai_enable)
        if enable and self.last_ai_enable is False:
            self.armed = True  # rising edge: the operator asks again
        self.last_ai_enable = handshake.ai_enable

        if not self.closed_loop:
            return Transition(previous, self.mode, None)

        if self.mode is Mode.RELEASING:
            if handshake.ai_active is False:
                self.mode = Mode.DISABLED
                events.append(Event(EventType.RELEASED, "dcs_confirmed"))

        if self.mode is Mode.ACTIVE:
            reason = self._release_reason(handshake, events)
            if reason is not None:
                return self._release(previous, reason, events)
            return Transition(previous, self.mode, None)

        healthy = not any(e.type is EventType.IMMEDIATE_DISABLE for e in events)
        self.healthy_cycles = self.healthy_cycles + 1 if healthy else 0
        if self.mode is Mode.DISABLED:
            blocker = self._entry_blocker(handshake, healthy, events)
            if blocker is None:
                self.mode = Mode.ACTIVE
                self.cycles_waiting_for_grant = 0
                self.granted = False
                events.append(Event(EventType.ENGAGED, "requesting_ai_mode"))
            elif not any(e.type is EventType.NO_ENTRY and e.reason == blocker[0] for e in events):
                events.append(Event(EventType.NO_ENTRY, *blocker))
        return Transition(previous, self.mode, None)

    def _entry_blocker(self, handshake: Handshake, healthy: bool, events: list[Event]) -> tuple[str, str] | None:
        if not handshake.ai_enable:
            return "ai_enable_off", ""
        if not self.armed:
            return "awaiting_operator_reenable", "toggle AI_ENABLE to re-engage after a release"
        if not handshake.ai_permissive:
            return "dcs_permissive_off", ""
        if not healthy or self.healthy_cycles < self.healthy_cycles_to_engage:
            return "not_enough_healthy_cycles", f"{self.healthy_cycles}/{self.healthy_cycles_to_engage}"
        blocked = next((e for e in events if e.type is EventType.NO_ENTRY), None)
        return None if blocked is None else (blocked.reason, blocked.detail)

    def _release_reason(self, handshake: Handshake, events: list[Event]) -> Reason | None:
        if handshake.ai_enable is False:
            events.append(Event(EventType.IMMEDIATE_DISABLE, "ai_enable_dropped", "operator"))
        if handshake.ai_permissive is False:
            # MFT, runback, loss of coordinated control: the DCS drops AI mode too; do not wait for it
            events.append(Event(EventType.IMMEDIATE_DISABLE, "dcs_permissive_lost", ""))
        if handshake.ai_active:
            self.granted = True
        elif self.granted:
            events.append(Event(EventType.IMMEDIATE_DISABLE, "ai_active_lost", "DCS dropped AI mode"))
        else:
            self.cycles_waiting_for_grant += 1
            if self.cycles_waiting_for_grant > self.grant_timeout_cycles:
                events.append(Event(EventType.IMMEDIATE_DISABLE, "ai_active_not_granted",
                                    f"no AI_ACTIVE after {self.grant_timeout_cycles} cycles"))
        first = next((e for e in events if e.type is EventType.IMMEDIATE_DISABLE), None)
        return None if first is None else first.reason

    def _release(self, previous: Mode, reason: Reason, events: list[Event]) -> Transition:
        self.mode = Mode.RELEASING
        self.healthy_cycles = 0
        self.armed = False
        events.append(Event(EventType.RELEASED, reason))
        return Transition(previous, self.mode, reason)

    def write_failed(self, detail: str, events: list[Event]) -> Transition:
        """The write of this cycle failed after update(): release within the same cycle."""
        previous = self.mode
        events.append(Event(EventType.IMMEDIATE_DISABLE, "write_failed", detail))
        if self.mode is Mode.ACTIVE:
            return self._release(previous, Reason.WRITE_FAILED, events)
        return Transition(previous, self.mode, None)

    def state(self) -> dict:
        return {"mode": self.mode.value, "healthy_cycles": self.healthy_cycles, "armed": self.armed,
                "cycles_waiting_for_grant": self.cycles_waiting_for_grant, "granted": self.granted,
                "last_ai_enable": self.last_ai_enable}

    def restore(self, state: dict) -> None:
        self.mode = Mode(state["mode"])
        self.healthy_cycles = state["healthy_cycles"]
        self.armed = state["armed"]
        self.cycles_waiting_for_grant = state["cycles_waiting_for_grant"]
        self.granted = state["granted"]
        self.last_ai_enable = state["last_ai_enable"]
