"""A stand-in for boiler_ai.sim.unit.ReferenceUnit's stepping interface, for the OPC UA server tests."""

from __future__ import annotations

import time
from collections.abc import Callable


class StandInUnit:
    """Serves `values_at(simulated seconds)`, holds what the daemon wrote, and may cost wall time per step."""

    def __init__(self, values_at: Callable[[float], dict[str, float]], step_cost_s: float = 0.0) -> None:
        self.values_at, self.step_cost_s = values_at, step_cost_s
        self.t = 0.0
        self.written: dict[str, float] = {}
        self.ai_enable = False

    def step(self, dt: float = 1.0) -> None:
        time.sleep(self.step_cost_s)
        self.t += dt

    def values(self) -> dict[str, float]:
        values = self.values_at(self.t)
        values.update(self.written)
        values["ai_enable"] = float(self.ai_enable)
        return values

    def write(self, signal: str, value: float) -> None:
        self.written[signal] = value

    def set_ai_enable(self, on: bool) -> None:
        self.ai_enable = on
