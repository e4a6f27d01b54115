"""A unit that is not the reference one, from its tag map to an exported dataset, without a model.

The example 330 MW unit (opc/example_330mw.yaml: four mills, the vendor's string NodeIds in its own
namespace, seven MVs) is served by a stand-in OPC UA server. `boiler-ai check --server` passes and says
what to do next; the daemon in observe mode records the unit's history and writes nothing; `boiler-ai
export` turns that history into a dataset.
"""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from rigs.served import free_port
from rigs.stand_in_unit import StandInUnit

from boiler_ai.record.log import iter_records
from boiler_ai.sim.serve import SimulatedUnitServer
from boiler_ai.tagmap import TagMap, load_tag_map

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "deploy" / "examples" / "example_330mw.yaml"
SPEED = 4.0  # simulated seconds per wall second, for the server and the daemon alike


def plant_values(tag_map: TagMap):
    """A unit at steady load: every analog near the middle of its range with a small, moving ripple;
    mills in service, coordinated control on, no trip; the DCS holds its setpoints."""
    def values_at(t: float) -> dict[str, float]:
        out = {}
        for i, (name, spec) in enumerate(tag_map.signals.items()):
            if not spec.readable:
                continue
            if spec.data_type == "Boolean":
                out[name] = 1.0 if name.endswith("_in_service") or name == "coordinated_control" else 0.0
            elif spec.data_type == "UInt32":
                out[name] = 0.0
            else:
                mid, span = (spec.lo + spec.hi) / 2, spec.hi - spec.lo
                out[name] = mid + 0.002 * span * math.sin(0.3 * t + i)
        return out
    return values_at


def observe_config(tmp_path: Path, endpoint: str) -> Path:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config.update(tag_map=str(ROOT / "opc" / "example_330mw.yaml"),
                  envelope=str(ROOT / "constraints" / "example_330mw.yaml"),
                  cycle_period_s=1.0, metrics={"listen": None})
    config["plant"]["endpoint"] = endpoint
    config["record"].update(log_dir=str(tmp_path / "log"), publish_endpoint=None, catchup_endpoint=None)
    path = tmp_path / "example_330mw.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def boiler_ai(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "boiler_ai", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_new_unit_from_tag_map_to_observe_history_to_dataset(tmp_path: Path):
    tag_map = load_tag_map(ROOT / "opc" / "example_330mw.yaml")
    assert len(tag_map.manipulated) == 7 and not tag_map.namespace_uri.startswith("urn:boiler-ai")
    unit = StandInUnit(plant_values(tag_map))
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    config = observe_config(tmp_path, endpoint)

    async def body() -> None:
        sim = SimulatedUnitServer(unit, tag_map=tag_map, endpoint=endpoint, speed=SPEED)
        await sim.start()
        try:
            check = await asyncio.to_thread(boiler_ai, "check", str(config), "--server")
            assert check.returncode == 0, check.stdout + check.stderr
            assert "model       none (mode observe)" in check.stdout
            assert "check: server OK" in check.stdout and "next: run this config (mode: observe)" in check.stdout

            daemon = subprocess.Popen([sys.executable, "-m", "boiler_ai", "run", str(config),
                                       "--sim-speed", str(SPEED)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                # until about 12 cycles are logged (a loaded machine takes a while to start the daemon)
                deadline = time.monotonic() + 90
                while len(list(iter_records(tmp_path / "log"))) < 12 and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
            finally:
                daemon.send_signal(signal.SIGTERM)
                out, err = await asyncio.to_thread(daemon.communicate, timeout=30)
            assert daemon.returncode == 0, err
        finally:
            await sim.stop()

    asyncio.run(body())
    assert unit.written == {}  # observe mode wrote nothing, not even a heartbeat

    records = list(iter_records(tmp_path / "log"))
    assert len(records) >= 10
    assert {r["mode"] for r in records} == {"disabled"}
    assert all(r["model"]["id"] == "none" and r["requested"] is None and r["written"] is None for r in records)
    assert all(any(e["reason"] == "observe_mode" for e in r["events"]) for r in records)
    late = records[5:]  # the first cycles may meet values not yet served
    assert all(not r["inputs"]["issue"] for r in late), [r["inputs"]["issue"] for r in late if r["inputs"]["issue"]]

    dataset = tmp_path / "example_330mw.parquet"
    export = boiler_ai("export", str(tmp_path / "log"), "-o", str(dataset))
    assert export.returncode == 0, export.stderr
    table = pq.read_table(dataset)
    assert table.num_rows == len(records)
    columns = set(table.column_names)
    assert {"mill_d_coal_flow_tph", "o2_economiser_pct", "sofa_damper_2_pct.dcs"} <= columns
    assert "mill_e_coal_flow_tph" not in columns  # this unit has four mills
    o2 = table.column("o2_economiser_pct").to_pylist()[5:]
    assert all(10.0 < v < 11.0 for v in o2)  # the stand-in's O2 (mid-range 10.5 %), as served


def test_check_refuses_another_units_model_and_says_what_to_do(tmp_path: Path):
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    reference = yaml.safe_load((ROOT / "deploy" / "examples" / "reference_unit.yaml").read_text())
    config.update(tag_map=str(ROOT / "opc" / "example_330mw.yaml"),
                  envelope=str(ROOT / "constraints" / "example_330mw.yaml"), mode="shadow",
                  model={"path": str(ROOT / "models" / "bootstrap-bc-v1" / "policy.onnx"),
                         "sha256": reference["model"]["sha256"]})
    config["record"]["log_dir"] = str(tmp_path / "log")
    path = tmp_path / "shadow.yaml"
    path.write_text(yaml.safe_dump(config))
    result = boiler_ai("check", str(path))
    assert result.returncode == 2
    assert "not in the tag map" in result.stderr and "mode: observe" in result.stderr
    assert "Traceback" not in result.stderr
