"""Observe mode in the daemon config: no model, and a model where none may be is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from boiler_ai.config import load_config
from boiler_ai.strict import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, **changes) -> Path:
    config = yaml.safe_load((ROOT / "deploy" / "examples" / "reference_unit.yaml").read_text())
    for key in ("tag_map", "envelope"):
        config[key] = str((ROOT / "deploy" / "examples" / config[key]).resolve())
    config["model"]["path"] = str((ROOT / "deploy" / "examples" / config["model"]["path"]).resolve())
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    path = tmp_path / "unit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_observe_mode_runs_without_a_model(tmp_path: Path):
    cfg = load_config(write(tmp_path, mode="observe", model=None))
    assert cfg.mode == "observe" and cfg.model_path is None and cfg.model_sha256 is None
    assert len(cfg.config_hash()) == 64


def test_observe_mode_refuses_a_model_and_other_modes_need_one(tmp_path: Path):
    with pytest.raises(ConfigError, match="model: observe mode runs no model"):
        load_config(write(tmp_path, mode="observe"))
    with pytest.raises(ConfigError, match="model: required field is missing .*mode: observe"):
        load_config(write(tmp_path, mode="shadow", model=None))
