"""The daemon against the simulator served the way vendor DCS servers serve (issue 10, item 3).

Each case runs the real Daemon (OPC UA adapter, core, decision log) against the simulated unit at 20x
real time, its server behaving like one vendor stack: no SourceTimestamp, timestamps only on change
with rounded and deadbanded analogs, a MaxNodesPerRead limit of 50. In each it must engage and run
closed loop, nothing outside the envelope written. And a setpoint the DCS refuses: AI_REQUEST=1 never
reaches it.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rigs.cycle_rig import follower_config, outside_envelope
from rigs.served import ServedDaemon, free_port

from boiler_ai.plant.opcua_server import VendorHabits
from boiler_ai.sim.scenario import named_scenario
from boiler_ai.sim.serve import SimulatedUnitServer
from boiler_ai.sim.unit import ReferenceUnit

pytestmark = pytest.mark.timeout(180)

CLOSED_LOOP_CYCLES = 90  # simulated seconds in AI mode: three times the longest stale_s of the map


class WritesSeen:
    """The unit, recording every client write that reached it (the DCS's view of the daemon)."""

    def __init__(self, unit: ReferenceUnit):
        self.unit = unit
        self.writes: list[tuple[str, float]] = []

    def __getattr__(self, name):
        return getattr(self.unit, name)

    @property
    def t(self) -> float:
        return self.unit.t

    def write(self, signal: str, value: float) -> None:
        self.writes.append((signal, value))
        self.unit.write(signal, value)


class VendorBench(ServedDaemon):
    def __init__(self, tmp_path: Path, habits: VendorHabits):
        unit = WritesSeen(ReferenceUnit(named_scenario("steady_full_load", 0), seed=0))
        super().__init__(tmp_path, unit, {"sa_damper_c_pct": 6.0}, habits=habits)

    async def engage(self, limit: int = 80) -> None:
        for _ in range(limit):
            record = await self.cycle()
            if record["mode"] == "active" and self.unit.dcs.ai_active:
                return
        raise AssertionError(f"not engaged in {limit} cycles: {self.records[-1]['events']}, "
                             f"issues {self.records[-1]['inputs']['issue']}")


def run(coro, timeout=150):
    return asyncio.run(asyncio.wait_for(coro, timeout))


HABITS = {
    "source timestamps": VendorHabits(),
    "server timestamps only": VendorHabits(timestamps="server-only"),
    "timestamps on change, rounded and deadbanded": VendorHabits(timestamps="on-change", analog_decimals=2,
                                                                 analog_deadband_pct=0.05),
    "MaxNodesPerRead 50": VendorHabits(max_nodes_per_read=50),
}


@pytest.mark.parametrize("case", list(HABITS))
def test_daemon_engages_and_runs_closed_loop(tmp_path, case):
    habits = HABITS[case]

    async def body():
        async with VendorBench(tmp_path, habits) as bench:
            await bench.engage()
            for _ in range(CLOSED_LOOP_CYCLES):
                record = await bench.cycle()
                assert record["mode"] == "active" and record["release_reason"] is None, \
                    (record["events"], record["inputs"]["issue"])
                assert record["write"]["ok"] and record["written"] is not None
            assert bench.unit.dcs.ai_active
            link = bench.daemon.plant._link
            for record in bench.records:
                if record["written"] is not None:
                    assert outside_envelope(bench.daemon.core.envelope, record) == [], record["seq"]
            return bench.records, link

    records, link = run(body())
    last = records[-1]
    assert last["server_time"] is not None
    if habits.timestamps == "server-only":
        sources = [ts for ts in last["inputs"]["source_ts"]]
        assert all(ts != ts for ts in sources)  # NaN: no SourceTimestamp at all, and still Good
        assert not any(code for code in last["inputs"]["status_code"])
    if habits.max_nodes_per_read:
        assert link.max_read == 50 and all(len(r.NodesToRead) <= 50 for r in link.read_requests)
        assert len(link.read_requests) >= 2


def test_ai_request_never_written_when_a_setpoint_is_rejected(tmp_path):
    """The DCS refuses one AI setpoint from the start: the daemon asks to engage, the setpoints go first,
    one is refused, so AI_REQUEST=1 is never written and the DCS never hands over."""

    async def body():
        async with VendorBench(tmp_path, VendorHabits()) as bench:
            bench.sim.server.faults.reject_writes("sa_damper_c_pct_ai_sp")
            for _ in range(60):
                await bench.cycle()
            return bench.records, bench.unit.writes, bench.unit.dcs.ai_active

    records, writes, ai_active = run(body())
    attempts = [r for r in records if r["write"] is not None and not r["write"]["ok"]]
    assert attempts, "the daemon never tried to engage"
    for record in attempts:
        assert "sa_damper_c_pct_ai_sp (BadNotWritable)" in record["write"]["error"]
        assert "not written: ai_request" in record["write"]["error"]
        assert record["release_reason"] == "write_failed"
    assert ("ai_request", 1.0) not in writes
    assert not ai_active


def check_server(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "boiler_ai", "check", str(config), "--server"],
                          capture_output=True, text=True, timeout=120)


def test_check_server_reports_how_the_server_stamps(tmp_path):
    async def body():
        results = {}
        for habits in (VendorHabits(), VendorHabits(timestamps="server-only")):
            endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
            sim = SimulatedUnitServer(endpoint=endpoint, speed=1.0, habits=habits)
            await sim.start()
            try:
                folder = tmp_path / habits.timestamps
                folder.mkdir()
                config = follower_config(folder, plant={"endpoint": endpoint})
                results[habits.timestamps] = await asyncio.to_thread(check_server, config)
                if habits.timestamps == "source":
                    # a must-move value whose stamp is old, as an on-change server or a dead source leaves it
                    await sim.server.publish({"o2_economiser_pct": 3.5}, time.time() - 100)
                    await sim.server.faults.freeze("o2_economiser_pct")
                    results["old"] = await asyncio.to_thread(check_server, config)
            finally:
                await sim.stop()
        return results

    results = asyncio.run(asyncio.wait_for(body(), 150))
    source, server_only, old = results["source"], results["server-only"], results["old"]
    assert source.returncode == 0 and "check: server OK" in source.stdout, source.stdout + source.stderr
    assert "values carry a SourceTimestamp" in source.stdout and "CurrentTime read with the values" in source.stdout
    assert server_only.returncode == 0, server_only.stdout + server_only.stderr
    assert "have no SourceTimestamp, only a ServerTimestamp: their age is judged from it" in server_only.stdout
    assert old.returncode == 1
    assert re.search(r"server: o2_economiser_pct \(1\d\d s > stale_s 30\): timestamp older than its stale_s now",
                     old.stdout), old.stdout
