"""Pieces shared by the end-to-end tests that run the daemon against the simulated unit served over OPC UA."""

from __future__ import annotations

import asyncio
import socket
import time

SPEED = 20.0  # simulated seconds per wall second in the served end-to-end tests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until_engaged(unit, timeout_s: float = 30.0) -> None:
    """Wait until the simulated DCS uses the AI setpoints of a daemon running in another process."""
    deadline = time.monotonic() + timeout_s
    while not unit.dcs.ai_active and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert unit.dcs.ai_active, f"the daemon never engaged: {unit.dcs.reasons}"
