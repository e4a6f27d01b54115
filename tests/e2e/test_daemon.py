"""`boiler-ai run` as a plant runs it: a process beside the simulated unit's OPC UA server, structured logs,
a Prometheus endpoint, decisions published to a historian, and a clean release on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rigs.cycle_rig import follower_config
from rigs.served import SPEED, free_port, until_engaged
from rigs.stream_keys import stream_keys

from boiler_ai.config import load_config
from boiler_ai.daemon import Daemon, build_core, open_recorder
from boiler_ai.plant.stepped import SteppedPlant
from boiler_ai.record.log import iter_records
from boiler_ai.record.store import open_store
from boiler_ai.sim.scenario import named_scenario
from boiler_ai.sim.serve import SimulatedUnitServer
from boiler_ai.sim.unit import ReferenceUnit


def test_run_publishes_serves_metrics_and_releases_on_sigterm(tmp_path: Path):
    async def body():
        endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
        pub, catchup, metrics = (f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}",
                                 f"127.0.0.1:{free_port()}")
        unit = ReferenceUnit(named_scenario("steady_full_load", 0), seed=0)
        sim = SimulatedUnitServer(unit, endpoint=endpoint, speed=SPEED)
        await sim.set_ai_enable(True)
        await sim.start()
        keys = stream_keys(tmp_path / "keys", "historian")  # the stream behind CURVE, as at a plant
        config = follower_config(tmp_path, {"sa_damper_c_pct": 6.0}, mode="closed_loop",
                                 plant={"endpoint": endpoint, "timeout_s": 0.5},
                                 record={"publish_endpoint": pub, "catchup_endpoint": catchup, "fsync": "interval",
                                         "curve": keys.config},
                                 metrics={"listen": metrics})
        db = tmp_path / "historian.sqlite"
        historian = subprocess.Popen([sys.executable, "-m", "boiler_ai", "historian", "--unit", "reference_unit",
                                      "--pub", pub, "--catchup", catchup, "--db", str(db), "--poll-s", "0.5",
                                      *keys.options("historian")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        daemon = subprocess.Popen([sys.executable, "-m", "boiler_ai", "run", str(config), "--sim-speed", str(SPEED)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            await until_engaged(unit)
            await asyncio.sleep(1.0)
            text = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode())
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for family in text_string_to_metric_families(text) for s in family.samples}
            label = ("unit", "reference_unit")
            assert samples[("boiler_ai_mode", (("mode", "active"), label))] == 1
            assert samples[("boiler_ai_log_dropped_records_total", (label,))] == 0
            cycles = samples[("boiler_ai_cycles_total", (label,))]
            assert samples[("boiler_ai_cycle_stage_duration_seconds_count", (("stage", "infer"), label))] == cycles > 10
            daemon.send_signal(signal.SIGTERM)
            out, err = await asyncio.to_thread(daemon.communicate, timeout=30)
            assert daemon.returncode == 0, err
            # released through the handshake, not by the watchdog: AI_ACTIVE fell before the heartbeat timed out
            assert not unit.dcs.ai_active
        finally:
            if daemon.poll() is None:
                daemon.kill()
            await sim.stop()
        assert out == ""  # the logs are on stderr, one JSON object per line
        logs = [json.loads(line) for line in err.splitlines()]
        envelope = [entry["msg"] for entry in logs if entry.get("part") == "effective envelope"]
        assert logs[len(envelope)]["msg"] == "starting" and logs[-1]["msg"] == "stopped"
        # a table: a line per manipulated variable and per limit, none of them long
        assert sum(line.lstrip().startswith("o2_min:") for line in envelope) == 1
        assert sum(line.lstrip().startswith("sa_damper_c_pct ") for line in envelope) == 1
        assert max(map(len, envelope)) < 400
        # what it waits for: one line each time that changes, not one per cycle
        waits = [entry["msg"] for entry in logs if "waiting" in entry["msg"]]
        assert waits[:4] == ["waiting: Waiting for enough healthy cycles before engaging",
                             "waiting: AI asking the DCS for control",
                             "no longer waiting: AI in control: the AI writes setpoints within its envelope",
                             "waiting: Handing back: AI request dropped, waiting for the DCS to confirm"]
        assert any(entry["msg"] == "mode active -> releasing" and entry["release_reason"] == "daemon_stopping"
                   for entry in logs)
        records = list(iter_records(tmp_path / "log"))
        assert records[-1]["mode"] == "disabled"
        assert any(r["release_reason"] == "daemon_stopping" for r in records)
        # the historian holds every record exactly once
        deadline = time.monotonic() + 20
        while True:
            store = open_store(str(db))
            try:
                count = store.count("reference_unit")
            finally:
                store.close()
            if count == len(records) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        historian.send_signal(signal.SIGTERM)
        historian.wait(20)
        assert count == len(records)
    asyncio.run(asyncio.wait_for(body(), 120))


def test_a_bug_in_the_cycle_releases_and_stops_the_daemon(tmp_path: Path):
    """An unexpected exception is not a plant fault to ride through: drop AI_REQUEST and exit non-zero."""
    core = build_core(replace(load_config(follower_config(tmp_path, mode="closed_loop")), time_scale=1000.0))
    unit = ReferenceUnit(named_scenario("steady_full_load", 0), seed=0)
    unit.set_ai_enable(True)

    class SteppingPlant(SteppedPlant):  # one simulated second per cycle
        async def read(self):
            unit.step(1.0)
            return self.snapshot()

    real_step, calls = core.controller.step, []

    def step_with_a_bug(*args, **kwargs):
        calls.append(unit.dcs.ai_active)
        if len(calls) > 20:
            raise RuntimeError("a bug")
        return real_step(*args, **kwargs)

    core.controller.step = step_with_a_bug
    with open_recorder(core.config) as recorder, pytest.raises(RuntimeError, match="a bug"):
        asyncio.run(Daemon(core, SteppingPlant(unit, core.tag_map), recorder).run(asyncio.Event()))
    assert calls[-1], "engaged when the bug struck"
    assert unit.values()["ai_request"] == 0.0
    unit.step(1.0)
    assert not unit.dcs.ai_active
