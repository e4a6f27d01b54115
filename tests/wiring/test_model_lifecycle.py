"""Model lifecycle (issue 13): install a model beside the active one as a challenger in shadow, switch to
it with its pinned sha256, roll back with one command; the daemon takes each on SIGHUP between two cycles,
engaged, without a hand-back when only the models changed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rigs.cycle_rig import ROOT, Rig, follower_config
from rigs.policies import follower

from boiler_ai.cli import main
from boiler_ai.config import load_config
from boiler_ai.daemon import reload_models
from boiler_ai.record.log import iter_frames
from boiler_ai.record.schema import decode
from boiler_ai.strict import ConfigError
from boiler_ai.tagmap import load_tag_map

DAMPER = "sa_damper_c_pct"


def two_models(tmp_path: Path, **changes) -> tuple[Path, Path, str, str]:
    """A config whose active model opens damper C 6 % above the DCS, and a second model that opens it 3 %."""
    config = follower_config(tmp_path, {DAMPER: 6.0}, **changes)
    second = tmp_path / "models" / "second" / "policy.onnx"
    second.parent.mkdir(parents=True)
    sha_second = follower(second, load_tag_map(ROOT / "opc" / "reference_unit.yaml"), {DAMPER: 3.0})
    return config, second, load_config(config).model_sha256, sha_second


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_install_switch_and_rollback_change_only_the_models(tmp_path, capsys):
    config, second, sha_first, sha_second = two_models(tmp_path)
    text = config.read_text()
    config.write_text("# plant notes kept by the engineer\n" + text)
    others = [line for line in config.read_text().splitlines() if "path:" not in line and "sha256:" not in line]

    assert main(["model", "install", str(config), str(second)]) == 0
    cfg = load_config(config)
    assert (cfg.model_sha256, cfg.challenger.sha256, cfg.challenger.previous) == (sha_first, sha_second, False)
    assert "runs in shadow" in capsys.readouterr().out

    assert main(["model", "switch", str(config), "--sha256", sha_first]) == 2
    assert "switch only to the model that ran in shadow" in one_line_error(capsys)
    assert main(["model", "rollback", str(config)]) == 2  # nothing switched yet
    assert "nothing to roll back to" in one_line_error(capsys)

    assert main(["model", "switch", str(config), "--sha256", sha_second]) == 0
    cfg = load_config(config)
    assert (cfg.model_sha256, cfg.challenger.sha256, cfg.challenger.previous) == (sha_second, sha_first, True)
    capsys.readouterr()
    assert main(["model", "status", str(config)]) == 0
    assert "previous" in capsys.readouterr().out

    assert main(["model", "rollback", str(config)]) == 0
    cfg = load_config(config)
    assert (cfg.model_sha256, cfg.challenger.sha256, cfg.challenger.previous) == (sha_first, sha_second, False)
    # everything but the two model blocks is as the engineer left it, comments included
    kept = [line for line in config.read_text().splitlines()
            if "path:" not in line and "sha256:" not in line and not line.startswith(("model:", "challenger:"))]
    assert kept == [line for line in others if not line.startswith("model:")]


def test_a_model_that_does_not_fit_is_refused_and_the_config_kept(tmp_path, capsys):
    config, _, _, _ = two_models(tmp_path)
    before = config.read_text()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    assert main(["model", "install", str(config), str(corrupt)]) == 2
    assert str(corrupt) in one_line_error(capsys)
    assert config.read_text() == before


def test_the_challenger_runs_in_shadow_and_a_switch_keeps_the_ai_in_control(tmp_path):
    config, second, sha_first, sha_second = two_models(tmp_path, mode="closed_loop")
    assert main(["model", "install", str(config), str(second)]) == 0
    rig = Rig(config)
    rig.engage()
    record = rig.run(20)[-1]
    k = record["mvs"].index(DAMPER)
    # the active model writes +6 %, the challenger's request (+3 %) is logged beside it, never written
    assert record["mode"] == "active" and record["written"][k] > record["u_dcs"][k] + 5.0
    assert record["challenger"]["model"]["sha256"] == sha_second
    assert abs(record["challenger"]["requested"][k] - record["u_dcs"][k] - 3.0) < 1e-3
    assert record["challenger"]["projected"] is not None

    assert main(["model", "switch", str(config), "--sha256", sha_second]) == 0
    reload_models(rig.core, load_config(config))
    after = rig.run(30)
    assert all(r["mode"] == "active" and r["release_reason"] is None for r in after)
    assert after[0]["model"]["sha256"] == sha_second and after[0]["challenger"]["model"]["sha256"] == sha_first
    assert abs(after[-1]["written"][k] - after[-1]["u_dcs"][k] - 3.0) < 1e-3  # moved to the new model's setpoint

    assert main(["model", "rollback", str(config)]) == 0
    reload_models(rig.core, load_config(config))
    back = rig.run(30)
    assert all(r["mode"] == "active" and r["release_reason"] is None for r in back)
    assert back[0]["model"]["sha256"] == sha_first
    assert abs(back[-1]["written"][k] - back[-1]["u_dcs"][k] - 6.0) < 1e-3


def test_a_reload_that_changes_more_than_the_models_is_refused(tmp_path):
    envelope = tmp_path / "envelope.yaml"
    envelope.write_text((ROOT / "constraints" / "reference_unit.yaml").read_text())
    config, second, sha_first, _ = two_models(tmp_path, envelope=str(envelope))
    rig = Rig(config)
    original = config.read_text()
    config.write_text(original.replace("cycle_period_s: 1.0", "cycle_period_s: 2.0"))
    with pytest.raises(ConfigError, match="restart the daemon"):
        reload_models(rig.core, load_config(config))
    # the same for a changed envelope file, which the config only names
    config.write_text(original)
    envelope.write_text(envelope.read_text().replace("settle_s: 180", "settle_s: 120"))
    with pytest.raises(ConfigError, match="restart the daemon"):
        reload_models(rig.core, load_config(config))
    assert rig.core.config.model_sha256 == sha_first


def test_the_daemon_takes_a_switch_on_sighup_without_a_hand_back(tmp_path):
    config, second, sha_first, sha_second = two_models(
        tmp_path, mode="closed_loop",
        plant={"kind": "stepped", "scenario": "steady_full_load", "seed": 0, "ai_enable": True})
    assert main(["model", "install", str(config), str(second)]) == 0
    log_dir = tmp_path / "log"
    err = (tmp_path / "daemon.err").open("w")
    daemon = subprocess.Popen([sys.executable, "-m", "boiler_ai", "run", str(config), "--sim-hours", "48"],
                              stdout=subprocess.DEVNULL, stderr=err)

    def records() -> list[dict]:
        return [decode(frame.payload) for _, _, frame in iter_frames(log_dir)] if log_dir.exists() else []

    def wait_for(predicate, what: str, timeout_s: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = records()
            if predicate(found):
                return found
            assert daemon.poll() is None, (tmp_path / "daemon.err").read_text()
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    try:
        wait_for(lambda rs: sum(r["mode"] == "active" for r in rs) > 50, "the daemon in AI mode")
        assert main(["model", "switch", str(config), "--sha256", sha_second]) == 0
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda rs: sum(r["model"]["sha256"] == sha_second for r in rs) > 50, "records of the new model")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, (tmp_path / "daemon.err").read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    logged = records()
    first_active = next(i for i, r in enumerate(logged) if r["mode"] == "active")
    switched = next(i for i, r in enumerate(logged) if r["model"]["sha256"] == sha_second)
    stopping = next(i for i, r in enumerate(logged) if r["release_reason"] == "daemon_stopping")
    # engaged from before the switch until the stop, under one model then the other, with no hand-back
    assert first_active < switched < stopping
    assert all(r["mode"] == "active" and r["release_reason"] is None for r in logged[first_active:stopping])
    assert all(r["challenger"]["model"]["sha256"] == sha_first for r in logged[switched:stopping])
    assert "models reloaded" in (tmp_path / "daemon.err").read_text()
