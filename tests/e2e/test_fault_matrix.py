"""The fault matrix (README): each fault end to end over OPC UA on 127.0.0.1.

The simulated unit is served by its OPC UA server at 20x real time; the daemon (the real Daemon,
OPC UA adapter, core and decision log) runs against it with a follower policy. For every fault:
control is back with the DCS within one cycle of the fault being detected (the watchdog time when
the daemon is killed), nothing outside the envelope was ever written, and the decision record names
the reason.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rigs.cycle_rig import follower_config, outside_envelope
from rigs.served import PERIOD, SPEED, ServedDaemon, free_port, until_engaged

from boiler_ai import status_codes
from boiler_ai.record.log import iter_records
from boiler_ai.sim.scenario import named_scenario
from boiler_ai.sim.serve import SimulatedUnitServer
from boiler_ai.sim.unit import ReferenceUnit

ROOT = Path(__file__).resolve().parents[2]


class SensorFaults:
    """The unit as its transmitters report it: a stuck transmitter keeps one value (fresh timestamps)."""

    def __init__(self, unit):
        self.unit = unit
        self.stuck: dict[str, float] = {}

    def __getattr__(self, name):
        return getattr(self.unit, name)

    @property
    def t(self) -> float:
        return self.unit.t

    def values(self) -> dict[str, float]:
        values = self.unit.values()
        values.update(self.stuck)
        return values


class Bench(ServedDaemon):
    def __init__(self, tmp_path: Path, **policy):
        unit = SensorFaults(ReferenceUnit(named_scenario("steady_full_load", 0), seed=0))
        super().__init__(tmp_path, unit, policy.pop("offsets", {"sa_damper_c_pct": 6.0}), **policy)

    @property
    def ai_active(self) -> bool:
        return self.unit.dcs.ai_active

    async def engage(self) -> None:
        for _ in range(80):
            await self.cycle()
            if self.records[-1]["mode"] == "active" and self.ai_active:
                for _ in range(3):
                    await self.cycle()
                return
        raise AssertionError(f"not engaged: {self.records[-1]['events']}")

    async def until_release(self, detected, limit: int = 160) -> dict:
        """Cycle until a record shows the fault detected (a frozen O2 analyser takes its 120 s); that same
        record must release."""
        for _ in range(limit):
            record = await self.cycle()
            if detected(record):
                assert record["release_reason"] is not None, f"detected but not released: {record['events']}"
                # the DCS answers within its next scan (one simulated second)
                for _ in range(40):
                    if not self.ai_active:
                        break
                    await asyncio.sleep(PERIOD / 4)
                assert not self.ai_active, "the DCS still uses AI setpoints after the release"
                return record
        raise AssertionError(f"fault never detected in {limit} cycles")

    def assert_envelope_kept(self) -> None:
        core = self.daemon.core
        for record in self.records:
            if record["written"] is not None:
                assert outside_envelope(core.envelope, record) == [], record["seq"]


def issue_of(signal):
    return lambda record: signal in record["inputs"]["issue"]


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _fault_case(tmp_path, inject, detected, reason, **policy):
    async with Bench(tmp_path, **policy) as bench:
        await bench.engage()
        await inject(bench)
        record = await bench.until_release(detected)
        assert record["release_reason"] == reason, record["events"]
        # the faceplate shows it, written over OPC UA in the same cycle
        faceplate = (bench.unit.dcs.ai_status, bench.unit.dcs.ai_reason)
        assert faceplate == (record["ai_status"], status_codes.BY_NAME[reason].code)
        # nothing written on the release cycle, except the attempt whose rejection is the fault
        assert record["written"] is None or not record["write"]["ok"]
        bench.assert_envelope_kept()
        # the durable log holds the same story
        bench.daemon.recorder.log.flush(5)
    logged = list(iter_records(Path(bench.daemon.core.config.record.log_dir)))
    assert [r["seq"] for r in logged] == list(range(len(logged)))
    assert any(r["release_reason"] == reason for r in logged)
    return record


async def _stale(b):
    await b.sim.server.faults.freeze("o2_economiser_pct")


async def _bad(b):
    await b.sim.server.faults.bad_quality("main_steam_temp_c")


async def _nan(b):
    await b.sim.server.faults.nan("co_ppm")


async def _frozen(b):
    b.unit.stuck["o2_economiser_pct"] = b.unit.values()["o2_economiser_pct"]


async def _out_of_range(b):
    await b.sim.server.faults.out_of_range("drum_pressure_mpa", 40.0)


async def _operator(b):
    await b.sim.set_ai_enable(False)


async def _runback(b):
    b.unit.inject("runback", 360.0)


async def _reject_write(b):
    b.sim.server.faults.reject_writes("sa_damper_c_pct_ai_sp")


async def _infeasible(b):
    # the DCS's own setpoint for damper C steps 40 % down: the deviation limit (20 % from it) and the
    # rate limit (1 %/s from the setpoint in force) no longer overlap, and holding breaks the deviation
    values = b.unit.values()
    b.unit.stuck["sa_damper_c_pct_dcs_sp"] = max(25.0, values["sa_damper_c_pct_ai_sp"] - 40.0)


async def _model_nan(b):
    b.unit.stuck["ambient_temp_c"] = 35.0


CASES = {
    "critical tag stale": (_stale, issue_of("o2_economiser_pct"), "critical_input_invalid", {}),
    "bad quality": (_bad, issue_of("main_steam_temp_c"), "critical_input_invalid", {}),
    "NaN from the plant": (_nan, issue_of("co_ppm"), "critical_input_invalid", {}),
    "frozen sensor": (_frozen, issue_of("o2_economiser_pct"), "critical_input_invalid", {}),
    "out-of-range value": (_out_of_range, issue_of("drum_pressure_mpa"), "critical_input_invalid", {}),
    "AI_ENABLE dropped by the operator": (_operator, lambda r: r["release_reason"] is not None,
                                          "ai_enable_dropped", {}),
    "DCS permissive lost (runback)": (_runback, lambda r: r["release_reason"] is not None, "dcs_permissive_lost", {}),
    "write rejected by the server": (_reject_write, lambda r: r["write"] is not None and not r["write"]["ok"],
                                     "write_failed", {}),
    "infeasible envelope": (_infeasible, lambda r: r["release_reason"] is not None, "envelope_infeasible", {}),
    "model emitting NaN": (_model_nan, lambda r: r["release_reason"] is not None, "model_output_not_finite",
                           {"nan_above_ambient_c": 30.0}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fault_hands_control_back_within_one_cycle(tmp_path, case):
    inject, detected, reason, policy = CASES[case]
    run(_fault_case(tmp_path, inject, detected, reason, **policy))


def test_server_stops_and_comes_back(tmp_path):
    async def body():
        async with Bench(tmp_path) as bench:
            await bench.engage()
            await bench.sim.server.stop()
            record = await bench.cycle()
            assert record["release_reason"] == "read_failed" and record["read_error"]
            # the daemon cannot reach the DCS now: the DCS watchdog takes control back by itself
            watchdog_s = bench.unit.dcs.config.watchdog_s
            deadline = time.monotonic() + (watchdog_s + 2) / SPEED + 1.0
            while bench.ai_active and time.monotonic() < deadline:
                await bench.cycle()
            assert not bench.ai_active
            await bench.sim.server.start()
            for _ in range(200):
                record = await bench.cycle()
                if record["read_error"] is None:
                    break
            assert record["read_error"] is None, "never reconnected"
            # back, healthy, but not engaged again until the operator re-asserts AI_ENABLE
            for _ in range(10):
                record = await bench.cycle()
            assert record["mode"] == "disabled" and not bench.ai_active
            assert any(e["reason"] == "awaiting_operator_reenable" for e in record["events"])
            bench.assert_envelope_kept()
    run(body())


def test_corrupt_model_file_refused_at_start(tmp_path):
    config = follower_config(tmp_path)
    model = tmp_path / "follower.onnx"
    model.write_bytes(model.read_bytes()[: len(model.read_bytes()) // 2])
    done = subprocess.run([sys.executable, "-m", "boiler_ai", "run", str(config)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert str(model) in done.stderr and "sha256" in done.stderr


def test_daemon_killed_the_dcs_watchdog_takes_over(tmp_path):
    async def body():
        endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
        unit = ReferenceUnit(named_scenario("steady_full_load", 0), seed=0)
        sim = SimulatedUnitServer(unit, endpoint=endpoint, speed=SPEED)
        await sim.set_ai_enable(True)
        await sim.start()
        config = follower_config(tmp_path, {"sa_damper_c_pct": 6.0}, mode="closed_loop",
                                 plant={"endpoint": endpoint, "timeout_s": 0.5})
        daemon = subprocess.Popen([sys.executable, "-m", "boiler_ai", "run", str(config), "--sim-speed", str(SPEED)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            await until_engaged(unit)
            await asyncio.sleep(0.5)
            os.kill(daemon.pid, signal.SIGKILL)
            killed_at = unit.t
            while unit.dcs.ai_active and unit.t < killed_at + 30:
                await asyncio.sleep(0.02)
            assert not unit.dcs.ai_active
            # the watchdog's time (plus the cycle in flight and one DCS scan)
            assert unit.t - killed_at <= unit.dcs.config.watchdog_s + 2.0
        finally:
            if daemon.poll() is None:
                daemon.kill()
            daemon.wait(10)
            await sim.stop()
        records = list(iter_records(tmp_path / "log"))
        assert records and all(math.isfinite(r["wall_time"]) for r in records)
    run(body())
