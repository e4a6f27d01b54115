"""PlantIO over the simulator's stepping API: the controller core against the unit without a network.

Each `read` is the unit's present values with Good status, stamped with the unit's simulated clock
(offset to an epoch), so staleness and rates are judged in simulated time. Each `write` goes to
`unit.write` and reads back what the DCS now holds. Stepping the unit is the caller's job: tests and
training loops decide how many simulated seconds pass between cycles.
"""

from __future__ import annotations

from boiler_ai.plant.tagmap import TagMap
from boiler_ai.plant.types import Reading, Snapshot, WriteResult

EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: simulated time zero


class SteppedPlant:
    def __init__(self, unit, tag_map: TagMap):
        self.unit = unit
        self.tag_map = tag_map
        self._readable = tag_map.readable

    @property
    def now(self) -> float:
        return EPOCH + self.unit.t

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
        return self.snapshot()

    async def write(self, values: dict[str, float]) -> WriteResult:
        return self.apply(values)

    async def close(self) -> None:
        pass
