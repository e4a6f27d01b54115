"""Strict files and settings: duplicate keys, time_scale, endpoints, the host, the model's units and period.

Each setting that would otherwise fail at `run` (or worse, run wrongly) fails at load or in `check`
with the file and field named.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import socket
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import yaml
from rigs.cycle_rig import ROOT, follower_config
from rigs.served import free_port

from boiler_ai.config import load_config
from boiler_ai.control.guard import Guard
from boiler_ai.control.model_contract import ModelContract, write_contract
from boiler_ai.daemon import build_core
from boiler_ai.errors import CannotListen, FileAccessError
from boiler_ai.preflight import preflight
from boiler_ai.strict import ConfigError, load_yaml
from boiler_ai.tagmap import load_tag_map

ENVELOPE = ROOT / "constraints" / "reference_unit.yaml"
TAG_MAP = ROOT / "opc" / "reference_unit.yaml"


def envelope_with_a_looser_duplicate(tmp_path: Path) -> tuple[Path, int, int]:
    """The reference envelope with o2_setpoint_bias_pct given a second time, with 50x the rate up
    (the red team's case); returns the file and the lines of the first and second entry."""
    lines = ENVELOPE.read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("  o2_setpoint_bias_pct: {"))
    rate = re.search(r"rate_up_per_s: ([0-9.]+)", lines[first])
    looser = lines[first].replace(rate[0], f"rate_up_per_s: {float(rate[1]) * 50:g}")
    path = tmp_path / "envelope.yaml"
    path.write_text("".join(lines[:first + 1] + [looser] + lines[first + 1:]))
    return path, first + 1, first + 2


def test_a_duplicate_key_names_the_file_the_key_and_both_lines(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("unit: u1\nsignals:\n  o2: {range: [0, 21]}\n  co: {range: [0, 1000]}\n  o2: {range: [0, 50]}\n")
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    assert caught.value.field == "signals.o2"
    assert str(caught.value) == (f"{path}: signals.o2: duplicate key 'o2' at line 5 (first at line 3): "
                                 "YAML would silently keep the second; remove one")


@pytest.mark.parametrize("text, field", [
    ("a: {x: 1, x: 2}\n", "a.x"),  # flow style: both on one line
    ("a:\n  - {x: 1}\n  - {x: 1, y: 2, x: 3}\n", "a[1].x"),
    ("a: 1\nb: 2\na: 1\n", "a"),  # even when the values agree
])
def test_duplicates_are_found_in_every_form(tmp_path, text, field):
    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="duplicate key") as caught:
        load_yaml(path)
    assert caught.value.field == field


def test_anchors_and_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("base: &b {rate: 1, dev: 2}\nmv1: *b\nmv2: {<<: *b, rate: 3}\n")
    assert load_yaml(path) == {"base": {"rate": 1, "dev": 2}, "mv1": {"rate": 1, "dev": 2},
                               "mv2": {"rate": 3, "dev": 2}}


def test_the_guard_reads_the_envelope_with_the_same_loader(tmp_path):
    bad, first, second = envelope_with_a_looser_duplicate(tmp_path)
    with pytest.raises(ConfigError, match=f"duplicate key 'o2_setpoint_bias_pct' at line {second} "
                                          f"\\(first at line {first}\\)"):
        Guard(bad, load_tag_map(TAG_MAP))


def test_check_refuses_an_envelope_with_a_duplicated_key(tmp_path):
    bad, first, second = envelope_with_a_looser_duplicate(tmp_path)
    config = follower_config(tmp_path, envelope=str(bad))
    done = subprocess.run([sys.executable, "-m", "boiler_ai", "check", str(config)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert (f"{bad}: manipulated.o2_setpoint_bias_pct: duplicate key 'o2_setpoint_bias_pct' at line {second} "
            f"(first at line {first})") in done.stderr


def test_a_config_file_cannot_scale_time(tmp_path):
    with pytest.raises(ConfigError, match="would multiply every rate limit by 60") as caught:
        load_config(follower_config(tmp_path, time_scale=60))
    assert caught.value.field == "time_scale"
    assert load_config(follower_config(tmp_path, time_scale=1)).time_scale == 1.0


@pytest.mark.parametrize("section, key, value, words", [
    ("plant", "endpoint", "opc.tcp://dcs-01:48x0", "expected opc.tcp://HOST:PORT"),
    ("plant", "endpoint", "opc.tcp://:4840", "expected opc.tcp://HOST:PORT"),
    ("plant", "endpoint", "opc.tcp://dcs-01", "expected opc.tcp://HOST:PORT"),
    ("metrics", "listen", "9108", "expected HOST:PORT"),
    ("metrics", "listen", "127.0.0.1:99999", "port 99999 is outside 1..65535"),
    ("record", "publish_endpoint", "tcp://127.0.0.1", "expected tcp://HOST:PORT or ipc://PATH"),
    ("record", "publish_endpoint", "tcp://127.0.0.1:*", "expected tcp://HOST:PORT or ipc://PATH"),
    ("record", "catchup_endpoint", "udp://127.0.0.1:5602", "expected tcp://HOST:PORT or ipc://PATH"),
])
def test_a_malformed_address_fails_at_load_naming_the_field(tmp_path, section, key, value, words):
    with pytest.raises(ConfigError, match=words) as caught:
        load_config(follower_config(tmp_path, **{section: {key: value}}))
    assert caught.value.field == f"{section}.{key}"


def test_publish_and_catchup_need_their_own_endpoints(tmp_path):
    same = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match="also the publish_endpoint") as caught:
        load_config(follower_config(tmp_path, record={"publish_endpoint": same, "catchup_endpoint": same}))
    assert caught.value.field == "record.catchup_endpoint"


def listening(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.mark.parametrize("field", ["metrics.listen", "record.publish_endpoint", "record.catchup_endpoint"])
def test_preflight_finds_an_address_in_use(tmp_path, field):
    port = free_port()
    section, key = field.split(".")
    value = f"127.0.0.1:{port}" if section == "metrics" else f"tcp://127.0.0.1:{port}"
    cfg = load_config(follower_config(tmp_path, **{section: {key: value}}))
    with listening(port), pytest.raises(CannotListen, match=f"{field}: cannot (listen on|bind) .*{port}") as caught:
        preflight(cfg)
    assert str(cfg.source) in str(caught.value)
    preflight(cfg)  # free again: passes


def test_preflight_finds_two_settings_on_one_port(tmp_path):
    port = free_port()
    cfg = load_config(follower_config(tmp_path, metrics={"listen": f"127.0.0.1:{port}"},
                                      record={"publish_endpoint": f"tcp://127.0.0.1:{port}"}))
    with pytest.raises(CannotListen, match="record.publish_endpoint"):
        preflight(cfg)


@pytest.mark.parametrize("log_dir, words", [
    ("{file}/log", "is not a directory, so .* cannot be created"),
    ("/proc/boiler-ai-test/log", "cannot create /proc/boiler-ai-test/log in /proc"),
])
def test_preflight_finds_a_log_directory_that_cannot_be_made(tmp_path, log_dir, words):
    (tmp_path / "file").write_text("")
    cfg = load_config(follower_config(tmp_path, record={"log_dir": log_dir.format(file=tmp_path / "file")}))
    with pytest.raises(FileAccessError, match=f"record.log_dir: .*{words}"):
        preflight(cfg)


def rewritten_model(tmp_path: Path, config: Path, **contract_changes) -> Path:
    """The config's follower model with its contract changed, re-pinned in a copy of the config."""
    data = yaml.safe_load(config.read_text())
    model = onnx.load(data["model"]["path"])
    contract = ModelContract.from_metadata({p.key: p.value for p in model.metadata_props}, "follower")
    write_contract(model, dataclasses.replace(contract, **contract_changes))
    path = tmp_path / "changed.onnx"
    onnx.save_model(model, path)
    data["model"] = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(data))
    return changed


def test_a_model_in_other_action_units_is_refused_naming_both(tmp_path):
    config = follower_config(tmp_path)
    tag_map = load_tag_map(TAG_MAP)
    kg_s = tuple("kg/s" if mv == "feeder_a_bias_tph" else tag_map.signals[tag_map.manipulated[mv].ai_setpoint].unit
                 for mv in tag_map.manipulated)
    changed = rewritten_model(tmp_path, config, action_units=kg_s)
    with pytest.raises(ConfigError) as caught:
        build_core(load_config(changed))
    message = str(caught.value)
    assert caught.value.field == "action_units" and "changed.onnx" in message
    assert f"feeder_a_bias_tph is in 'kg/s', but the tag map {TAG_MAP} writes feeder_a_bias_tph_ai_sp in 't/h'" \
        in message


def test_a_model_built_for_another_cycle_period_is_refused(tmp_path):
    changed = rewritten_model(tmp_path, follower_config(tmp_path), cycle_period_s=2.0)
    with pytest.raises(ConfigError) as caught:
        build_core(load_config(changed))
    assert caught.value.field == "cycle_period_s"
    assert f"the model's history is 2 s per cycle, but {changed} runs 1 s cycles" in str(caught.value)


def test_check_reports_an_unresolvable_opcua_host(tmp_path):
    config = follower_config(tmp_path, plant={"endpoint": "opc.tcp://no-such-dcs.invalid:4840"})
    done = subprocess.run([sys.executable, "-m", "boiler_ai", "check", str(config)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "plant.endpoint: host 'no-such-dcs.invalid' does not resolve" in done.stderr


def _tag_map_with(tmp_path: Path, change) -> Path:
    data = yaml.safe_load(TAG_MAP.read_text())
    change(data)
    path = tmp_path / "tag_map.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_faceplate_status_tags_are_optional_and_checked(tmp_path):
    def without_status(data):
        for role in ("ai_status", "ai_reason"):
            del data["handshake"][role], data["signals"][role]

    assert "ai_status" not in load_tag_map(_tag_map_with(tmp_path, without_status)).handshake

    def too_small(data):
        data["signals"]["ai_reason"]["range"] = [0, 100]

    with pytest.raises(ConfigError, match=r"handshake\.ai_reason: tag 'ai_reason' must be a writable number whose "
                                          r"range holds the codes 0\.\.999"):
        load_tag_map(_tag_map_with(tmp_path, too_small))

    def unknown_role(data):
        data["handshake"]["ai_mode"] = "ai_status"

    with pytest.raises(ConfigError, match=r"handshake\.ai_mode: unknown field"):
        load_tag_map(_tag_map_with(tmp_path, unknown_role))


def test_per_mv_ai_enable_is_optional_and_must_be_a_readable_boolean(tmp_path):
    def without(data):
        del data["manipulated"]["o2_setpoint_bias_pct"]["ai_enable"]

    tag_map = load_tag_map(_tag_map_with(tmp_path, without))
    assert tag_map.manipulated["o2_setpoint_bias_pct"].ai_enable is None
    assert tag_map.manipulated["sofa_damper_1_pct"].ai_enable == "sofa_damper_1_pct_ai_enable"

    def a_number(data):
        data["manipulated"]["o2_setpoint_bias_pct"]["ai_enable"] = "o2_economiser_pct"

    with pytest.raises(ConfigError, match=r"manipulated\.o2_setpoint_bias_pct\.ai_enable: tag 'o2_economiser_pct' "
                                          r"must be a readable Boolean"):
        load_tag_map(_tag_map_with(tmp_path, a_number))

    def misspelt(data):
        data["manipulated"]["o2_setpoint_bias_pct"]["ai_enabled"] = "o2_setpoint_bias_pct_ai_enable"

    with pytest.raises(ConfigError, match=r"manipulated\.o2_setpoint_bias_pct\.ai_enabled: unknown field"):
        load_tag_map(_tag_map_with(tmp_path, misspelt))


@pytest.mark.parametrize("change, says", [
    (lambda rw: rw.update(settle_seconds=120), r"retreat_while\.settle_seconds: unknown field"),
    (lambda rw: rw.pop("settle_s"), r"retreat_while\.settle_s: required field is missing"),
    (lambda rw: rw.update(signals=["mill_a_sequence_active", "mill_q_sequence_active"]),
     r"retreat_while\.signals: unknown tag 'mill_q_sequence_active'"),
    (lambda rw: rw.update(signals=["mill_a_coal_flow_tph"]), r"retreat_while\.signals: .* must be a readable Boolean"),
    (lambda rw: rw.update(settle_s=-1), r"retreat_while\.settle_s"),
    (lambda rw: rw.pop("trips"), r"retreat_while\.trips: required field is missing"),
    (lambda rw: rw.update(trips=["mill_a_in_service", "mill_a_in_service"]), r"retreat_while\.trips: .* listed twice"),
    (lambda rw: rw.update(trips=["mill_a_outlet_temp_c"]), r"retreat_while\.trips: .* must be a readable Boolean"),
])
def test_the_plant_transients_section_is_checked_strictly(tmp_path, change, says):
    from boiler_ai.control.envelope import load_envelope

    data = yaml.safe_load(ENVELOPE.read_text())
    change(data["retreat_while"])
    path = tmp_path / "envelope.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=says):
        load_envelope(path, load_tag_map(TAG_MAP))
