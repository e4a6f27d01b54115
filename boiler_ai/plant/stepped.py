"""PlantIO over a simulated unit's stepping API: the daemon against the unit without a network.

Each `read` is the unit's present values with Good status, stamped with the unit's simulated clock
(offset to an epoch), so staleness and rates are judged in simulated time. Each `write` goes to
`unit.write` and reads back what the DCS now holds. With `step_s`, every read after the first
advances the unit by `step_s` simulated seconds first (one cycle period: `boiler-ai run` with
`plant: {kind: stepped}`); without it, stepping is the caller's job (tests decide how many seconds
pass between cycles). The unit comes from the wiring (anything with `t`, `values()`, `write()` and
`step()`): this room never imports the simulator.
"""

from __future__ import annotations

from boiler_ai.messages.plant import Reading, Snapshot, WriteResult
from boiler_ai.tagmap import TagMap

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: simulated time zero


class SteppedPlant:
    def __init__(self, unit, tag_map: TagMap, step_s: float | None = None):
        self.unit = unit
        self.tag_map = tag_map
        self.step_s = step_s
        self._readable = tag_map.readable
        self._read_once = False

    @property
    def now(self) -> float:
        return EPOCH + self.unit.t

    def clock(self) -> tuple[float, float]:
        """(wall, monotonic) time on the unit's simulated clock, for the daemon to hand to the core."""
        return EPOCH + self.unit.t, self.unit.t

    def snapshot(self) -> Snapshot:
        now = self.now
        values = self.unit.values()
        return Snapshot({name: Reading(values[name], 0, now) for name in self._readable}, now)

    def apply(self, values: dict[str, float]) -> WriteResult:
        status = {}
        for name, value in values.items():
            self.unit.write(name, value)
            status[name] = 0
        held = self.unit.values()
        return WriteResult(True, status, {name: held[name] for name in values if name in held})

    async def connect(self) -> None:
        pass

    async def read(self) -> Snapshot:
        if self.step_s is not None:
            if self._read_once:
                self.unit.step(self.step_s)
            self._read_once = True
        return self.snapshot()

    async def write(self, values: dict[str, float]) -> WriteResult:
        return self.apply(values)

    async def close(self) -> None:
        pass
