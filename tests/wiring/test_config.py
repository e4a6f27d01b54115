"""The daemon config and `boiler-ai check`: strict loading with the file and field named."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rigs.cycle_rig import EXAMPLE, ROOT, follower_config
from rigs.served import free_port
from rigs.stream_keys import stream_keys

from boiler_ai.config import load_config
from boiler_ai.daemon import build_core
from boiler_ai.sim.serve import SimulatedUnitServer
from boiler_ai.strict import ConfigError


def edited(tmp_path: Path, edit) -> Path:
    cfg = yaml.safe_load(EXAMPLE.read_text())
    for key in ("tag_map", "envelope"):
        cfg[key] = str((EXAMPLE.parent / cfg[key]).resolve())
    cfg["model"]["path"] = str((EXAMPLE.parent / cfg["model"]["path"]).resolve())
    edit(cfg)
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_example_config_loads_and_builds(tmp_path):
    cfg = load_config(EXAMPLE)
    assert cfg.unit == "reference_unit" and cfg.mode == "shadow" and cfg.cycle_period_s == 1.0
    assert cfg.model_path == ROOT / "models" / "bootstrap-bc-v1" / "policy.onnx"
    core = build_core(cfg)
    assert core.controller.policy.model_id == "bootstrap-bc-v1"
    assert len(cfg.config_hash()) == 64
    assert cfg.cpu_latency_limit_us == 0


def test_host_section_is_optional(tmp_path):
    assert load_config(edited(tmp_path, lambda c: c.pop("host"))).cpu_latency_limit_us is None


@pytest.mark.parametrize("edit, field, words", [
    (lambda c: c.update(cycle_periods=1.0), "cycle_periods", "unknown field"),
    (lambda c: c.pop("mode"), "mode", "required field is missing"),
    (lambda c: c.update(mode="autopilot"), "mode", "must be one of observe, shadow, closed_loop"),
    (lambda c: c.update(cycle_period_s="1 s"), "cycle_period_s", "expected a finite number"),
    (lambda c: c["engagement"].update(healthy_cycles_to_engage=2.5), "engagement.healthy_cycles_to_engage",
     "expected an integer"),
    (lambda c: c["model"].update(sha256="abc"), "model.sha256", "64 lowercase hex"),
    (lambda c: c.update(tag_map="/nonexistent/unit.yaml"), "tag_map", "file not found"),
    (lambda c: c["plant"].update(endpoint="http://dcs:4840"), "plant.endpoint", "opc.tcp://"),
    (lambda c: c["plant"].update(security={"policy": "Basic256Sha256", "mode": "SignAndEncrypt"}),
     "plant.security.certificate", "required field is missing"),
    (lambda c: c["record"].update(fsync="sometimes"), "record.fsync", "must be one of"),
    (lambda c: c["host"].update(cpu_latency_limit_us=-1), "host.cpu_latency_limit_us", "must be >= 0"),
    (lambda c: c["host"].update(cpu_latency_limit_us=2**31), "host.cpu_latency_limit_us", "must be <= 2000000000"),
    (lambda c: c["host"].update(cpu_latency_us=0), "host.cpu_latency_us", "unknown field"),
    (lambda c: c.update(opcua=c.pop("plant")), "opcua", "moved: write it as `plant:` with `kind: opcua`"),
    (lambda c: c["plant"].update(kind="modbus"), "plant.kind", "must be one of opcua, stepped"),
    (lambda c: c.update(plant={"kind": "stepped", "scenario": "nowhere"}), "plant.scenario", "must be one of"),
    (lambda c: c.update(plant={"kind": "stepped", "scenario": "demo", "endpoint": "opc.tcp://dcs:4840"}),
     "plant.endpoint", "unknown field"),
])
def test_config_errors_name_the_file_and_field(tmp_path, edit, field, words):
    path = edited(tmp_path, edit)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.field == field and words in str(caught.value)
    assert str(path) in str(caught.value)


def test_unit_must_match_the_tag_map(tmp_path):
    path = edited(tmp_path, lambda c: c.update(unit="unit_7"))
    with pytest.raises(ConfigError, match="'unit_7' but the tag map .* is for unit 'reference_unit'"):
        build_core(load_config(path))


def test_pinned_sha256_mismatch_refuses_the_model(tmp_path):
    path = edited(tmp_path, lambda c: c["model"].update(sha256="0" * 64))
    with pytest.raises(ConfigError, match="sha256"):
        build_core(load_config(path))


def test_unknown_tag_in_the_envelope_is_named(tmp_path):
    envelope = yaml.safe_load((ROOT / "constraints" / "reference_unit.yaml").read_text())
    envelope["process_limits"]["o2_min"]["signal"] = "o2_analyser_b_pct"
    bad = tmp_path / "envelope.yaml"
    bad.write_text(yaml.safe_dump(envelope))
    path = edited(tmp_path, lambda c: c.update(envelope=str(bad)))
    with pytest.raises(ConfigError) as caught:
        build_core(load_config(path))
    assert "o2_analyser_b_pct" in str(caught.value) and str(bad) in str(caught.value)


def check(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "boiler_ai", "check", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_check_command_prints_the_effective_envelope(tmp_path):
    # the example as shipped, with the stream keys `boiler-ai keys` writes in place of /etc/boiler-ai/keys
    keys = stream_keys(tmp_path / "keys", "historian")
    done = check(edited(tmp_path, lambda c: c["record"].update(curve=keys.config)))
    assert done.returncode == 0, done.stderr
    assert "stream      CURVE, 1 authorized client keys" in done.stdout
    assert "check: files OK" in done.stdout and "o2_min" in done.stdout and "sa_damper_a_pct" in done.stdout
    # the example's CPU latency limit is tried on this machine: granted, or not and why
    assert "host        cpu latency limit 0 us, granted" in done.stdout or "0 us, NOT granted (cannot" in done.stdout


def test_check_command_names_a_bad_field(tmp_path):
    done = check(edited(tmp_path, lambda c: c.update(mode="autopilot")))
    assert done.returncode == 2 and "mode: must be one of" in done.stderr


def test_check_server_verifies_every_node(tmp_path):
    async def body():
        endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
        sim = SimulatedUnitServer(endpoint=endpoint, speed=1.0)
        await sim.start()
        try:
            good = follower_config(tmp_path, plant={"endpoint": endpoint})
            ok = await asyncio.to_thread(check, good, "--server")
            # a tag map naming a node the server does not have
            tag_map = (ROOT / "opc" / "reference_unit.yaml").read_text().replace(
                's=FlueGas.CO"', 's=FlueGas.COAnalyser"')
            (tmp_path / "map.yaml").write_text(tag_map)
            (tmp_path / "bad").mkdir()
            bad = follower_config(tmp_path / "bad", plant={"endpoint": endpoint}, tag_map=str(tmp_path / "map.yaml"))
            missing = await asyncio.to_thread(check, bad, "--server")
        finally:
            await sim.stop()
        return ok, missing

    ok, missing = asyncio.run(asyncio.wait_for(body(), 120))
    assert ok.returncode == 0 and "check: server OK" in ok.stdout, ok.stdout + ok.stderr
    assert missing.returncode == 1 and "co_ppm" in missing.stdout and "FlueGas.COAnalyser" in missing.stdout
