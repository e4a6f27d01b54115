"""The offline-RL pipeline end to end on a tiny run: each stage's documented command, its artefact folder,
and what the next stage reads from it. Full-size runs are benchmarks (benchmarks/offline_rl.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.history import OperatedUnit, excursion_schedule, read_history

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def stage(module: str, *args: str) -> dict:
    """Run `python -m training.<module>`; its last stdout line is its metrics as JSON."""
    done = subprocess.run([sys.executable, "-m", f"training.{module}", *args], capture_output=True, text=True,
                          cwd=ROOT, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("offline-rl")


@pytest.fixture(scope="module")
def history(runs) -> Path:
    out = runs / "history"
    stage("history", "--out", str(out), "--hours", "1.5", "--seed", "3")
    return out


@pytest.fixture(scope="module")
def process_model(runs, history) -> Path:
    out = runs / "process_model"
    stage("process_model", "--history", str(history), "--out", str(out), "--epochs", "2", "--members", "3",
          "--hidden", "16")
    return out


def test_step_tests_stay_inside_the_envelope_and_keep_feeder_sums():
    bands = {"feeder_a_bias_tph": 5.0, "feeder_b_bias_tph": 5.0, "sa_damper_a_pct": 20.0,
             "o2_setpoint_bias_pct": 1.0}
    changes = excursion_schedule(48 * 3600.0, bands, seed=5)
    assert changes == excursion_schedule(48 * 3600.0, bands, seed=5)  # deterministic for a seed
    assert {c.mv for c in changes} >= set(bands)
    for c in changes:
        band = bands["o2_setpoint_bias_pct"] if c.mv == "operator_o2_trim" else bands[c.mv]
        assert abs(c.value) <= 0.7 * band + 1e-9
    starts = [c for c in changes if c.why == "step_test" and c.value != 0.0 and c.mv.startswith("feeder_")]
    by_time: dict[float, float] = {}
    for c in starts:
        by_time[c.t] = by_time.get(c.t, 0.0) + c.value
    assert all(abs(total) < 1e-9 for total in by_time.values())  # a shift between feeders, not more coal


def test_history_is_the_daemons_record_read_back(history, tag_map):
    config = json.loads((history / "config.json").read_text())
    metrics = json.loads((history / "metrics.json").read_text())
    assert config["seed"] == 3 and metrics["data_sha256"] and metrics["step_tests"] > 0
    h = read_history(history)
    assert len(h.episode) == metrics["rows"] == round(1.5 * 3600 / config["cycle_s"])
    assert set(h.signals) <= set(tag_map.readable)  # tag-map signals only
    assert np.all(np.diff(h.plant_time) == config["cycle_s"])  # plant time, one cycle apart
    moved = [mv for mv, spec in tag_map.manipulated.items() if np.ptp(h.column(spec.dcs_setpoint)) > 0]
    assert moved, "the step tests moved no DCS setpoint"
    assert (history / "losses.csv").read_text().startswith("episode,")


def test_process_model_reports_error_and_calibration_per_output(process_model, history):
    metrics = json.loads((process_model / "metrics.json").read_text())
    hist = json.loads((history / "metrics.json").read_text())
    assert metrics["history_sha256"] == hist["data_sha256"]
    for name in ("o2_economiser_pct", "co_ppm", "nox_mg_nm3", "boiler_efficiency_pct", "main_steam_temp_c"):
        f = metrics["per_output"][name]
        assert f["mae"] >= 0 and 0 <= f["within_1_spread"] <= f["within_2_spread"] <= 1 and f["spread_scale"] > 0
    assert len((process_model / "losses.csv").read_text().splitlines()) == 1 + 2  # header + one row per epoch
    from training.process_model import ProcessModel

    model = ProcessModel.load(process_model / "process_model.pt")
    x = np.zeros((4, len(model.layout.inputs))) + model.x_offset
    mean, spread = model.predict(x)
    assert mean.shape == spread.shape == (4, len(model.layout.outputs)) and np.all(spread >= 0)


def test_a_stage_refuses_a_folder_that_is_not_its_input(runs, process_model):
    done = subprocess.run([sys.executable, "-m", "training.process_model", "--history", str(process_model),
                           "--out", str(runs / "x")], capture_output=True, text=True, cwd=ROOT, env=ENV)
    assert done.returncode == 2 and "expected a history stage folder" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_operators_move_the_dcs_setpoints_and_the_ai_has_no_part(tag_map):
    from boiler_ai.sim.scenario import named_scenario
    from boiler_ai.sim.unit import ReferenceUnit
    from training.history import Change

    changes = [Change(10.0, "o2_setpoint_bias_pct", -0.5, "step_test"), Change(10.0, "sa_damper_b_pct", 8.0,
                                                                               "step_test"),
               Change(10.0, "operator_o2_trim", 0.2, "operator"), Change(60.0, "o2_setpoint_bias_pct", 0.0,
                                                                         "step_test")]
    unit = OperatedUnit(ReferenceUnit(named_scenario("steady_full_load", 0), seed=0, tag_map=tag_map), changes)
    before = unit.values()
    for _ in range(30):
        unit.step(1.0)
    v = unit.values()
    assert v["o2_setpoint_bias_pct_dcs_sp"] == pytest.approx(-0.3)  # the step test on top of the standing trim
    assert v["sa_damper_b_pct_dcs_sp"] > before["sa_damper_b_pct_dcs_sp"] + 7.0
    assert v["o2_setpoint_bias_pct_ai_sp"] == v["o2_setpoint_bias_pct_dcs_sp"]  # AI mode off: it tracks the DCS
    for _ in range(40):
        unit.step(1.0)
    assert unit.values()["o2_setpoint_bias_pct_dcs_sp"] == pytest.approx(0.2)
