"""The plant interface: what the daemon needs from the plant, whatever carries the values.

The values themselves (Snapshot, Reading, WriteResult) are messages (boiler_ai.messages.plant).
"""

from __future__ import annotations

from typing import Protocol

from boiler_ai.messages.plant import Snapshot, WriteResult


class PlantIO(Protocol):
    """The OPC UA adapter (opcua_client.py) and the stepped simulated unit (stepped.py) implement it."""

    async def connect(self) -> None: ...

    async def read(self) -> Snapshot: ...

    async def write(self, values: dict[str, float]) -> WriteResult: ...

    async def close(self) -> None: ...
