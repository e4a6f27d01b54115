"""Pieces shared by the end-to-end tests that run the daemon against the simulated unit served over OPC UA."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace
from pathlib import Path

from rigs.cycle_rig import follower_config

from boiler_ai.config import load_config
from boiler_ai.daemon import Daemon, build_core, make_plant, open_recorder
from boiler_ai.sim.serve import SimulatedUnitServer

SPEED = 20.0  # simulated seconds per wall second in the served end-to-end tests
PERIOD = 1.0 / SPEED  # wall seconds per daemon cycle (1 simulated second)


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


class ServedDaemon:
    """The real Daemon (OPC UA adapter, core, decision log) against `unit` served on 127.0.0.1 at SPEED,
    with a follower policy offset by `offsets`; cycled by the test, one simulated second per cycle."""

    def __init__(self, tmp_path: Path, unit, offsets: dict[str, float], *, habits=None, **policy):
        self.endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
        self.unit = unit
        server_options = {} if habits is None else {"habits": habits}
        self.sim = SimulatedUnitServer(unit, endpoint=self.endpoint, speed=SPEED, **server_options)
        self.config = follower_config(tmp_path, offsets, mode="closed_loop",
                                      plant={"endpoint": self.endpoint, "timeout_s": 0.5}, **policy)
        self.daemon: Daemon | None = None
        self.records: list[dict] = []

    async def __aenter__(self):
        await self.sim.set_ai_enable(True)
        await self.sim.start()
        core = build_core(replace(load_config(self.config), time_scale=SPEED))  # the simulator drives time
        plant, pace = make_plant(core)
        self.daemon = Daemon(core, plant, open_recorder(core.config), pace=pace)
        await self.daemon.plant.connect()
        return self

    async def __aexit__(self, *exc):
        await self.daemon.plant.close()
        self.daemon.recorder.close()
        await self.sim.stop()

    async def cycle(self) -> dict:
        record = (await self.daemon.cycle()).as_dict()
        self.records.append(record)
        await asyncio.sleep(PERIOD)
        return record
