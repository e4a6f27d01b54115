"""Process replay: a recorded simulated hour replays to identical decisions; a changed projector is caught."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rigs.cycle_rig import Rig, follower_config

from boiler_ai.config import load_config
from boiler_ai.control.projector import Projector
from boiler_ai.daemon import build_core
from boiler_ai.messages.plant import Reading, Snapshot
from boiler_ai.record.log import DurableLog, iter_records
from boiler_ai.replay import replay


@pytest.fixture(scope="module")
def recorded_hour(tmp_path_factory):
    """One simulated hour of the demo scenario in closed loop, with an operator release and a sensor fault."""
    tmp = tmp_path_factory.mktemp("hour")
    config = follower_config(tmp, {"sa_damper_c_pct": 6.0, "sofa_damper_2_pct": 10.0, "o2_setpoint_bias_pct": -0.3},
                             mode="closed_loop")
    with DurableLog(tmp / "log", "reference_unit", fsync="never") as log:
        rig = Rig(config, scenario="demo", seed=3, decision_log=log)
        rig.engage()
        for k in range(3600 - len(rig.records)):
            if k == 900:
                rig.unit.set_ai_enable(False)
            if k == 960:
                rig.unit.set_ai_enable(True)
            if 1500 <= k < 1503:  # the O2 analyser reports NaN for three seconds
                rig.snapshot_hook = _nan_o2
            else:
                rig.snapshot_hook = None
            if k == 1600:
                rig.unit.set_ai_enable(False)
            if k == 1610:
                rig.unit.set_ai_enable(True)
            rig.cycle()
    return config, tmp / "log", rig.records


def _nan_o2(snapshot: Snapshot) -> Snapshot:
    readings = dict(snapshot.readings)
    old = readings["o2_economiser_pct"]
    readings["o2_economiser_pct"] = Reading(float("nan"), 0, old.source_ts)
    return Snapshot(readings, snapshot.read_time)


def test_recorded_hour_replays_with_identical_decisions(recorded_hour):
    config, log_dir, records = recorded_hour
    modes = {r["mode"] for r in records}
    assert {"active", "releasing", "disabled"} <= modes
    reasons = {r["release_reason"] for r in records} - {None}
    assert {"ai_enable_dropped", "critical_input_invalid"} <= reasons
    result = replay(iter_records(log_dir), build_core(load_config(config)))
    assert result.difference is None, result.difference.describe()
    assert result.compared == 3600 and result.first_seq == 0 and result.last_seq == 3599


def test_replay_can_start_mid_log(recorded_hour):
    config, log_dir, _ = recorded_hour
    result = replay(iter_records(log_dir, 1234), build_core(load_config(config)))
    assert result.difference is None
    assert result.first_seq == 1260  # the first record from 1234 on that carries controller state
    assert result.skipped_before_state == 1260 - 1234


def test_a_changed_projector_is_reported_at_the_first_differing_decision(recorded_hour, monkeypatch):
    config, log_dir, records = recorded_hour
    original = Projector.project

    def slower_dampers(self, requested, u_prev, u_dcs, *args):
        # the "code change": the projector now holds secondary-air damper C at its previous value
        i = self.envelope.mv_names.index("sa_damper_c_pct")
        requested = np.array(requested, dtype=float)
        requested[i] = u_prev[i]
        return original(self, requested, u_prev, u_dcs, *args)

    monkeypatch.setattr(Projector, "project", slower_dampers)
    result = replay(iter_records(log_dir), build_core(load_config(config)))
    diff = result.difference
    assert diff is not None
    first_moved = next(r["seq"] for r in records
                       if r["projected"] is not None and r["projected"][8] != r["u_prev"][8])
    assert diff.seq == first_moved and diff.field == "projected"
    assert result.compared == first_moved
    assert f"first difference at seq {first_moved}, field projected" in diff.describe()


def test_replay_command_line(recorded_hour):
    config, log_dir, _ = recorded_hour
    done = subprocess.run([sys.executable, "-m", "boiler_ai", "replay", str(log_dir), "--config", str(config),
                           "--from-seq", "3000", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"identical": true' in done.stdout.splitlines()[-1]


def test_a_log_written_before_the_messages_room_still_decodes_and_its_model_is_named(tmp_path):
    """tests/data/decision_log_v1 was written by the code before the typed records (make_log.py there says
    how): two daemon runs in one log. It still decodes, restart and all. It was written by the 18-MV
    bootstrap policy, which the spray valves leaving the AI's variables retired (issue 9): replaying it
    against today's model is refused, naming the model the log's state is for, instead of comparing
    decisions that cannot agree. (Replay across a restart: tests/e2e/test_stepped_run.py.)"""
    import hashlib

    from rigs.cycle_rig import ROOT, write_config

    data = Path(__file__).resolve().parents[1] / "data" / "decision_log_v1"
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    with gzip.open(data / "00000000000000000000.seg.gz") as packed:
        (log_dir / "00000000000000000000.seg").write_bytes(packed.read())
    records = list(iter_records(log_dir))
    restarts = [r["seq"] for r in records if r["controller_state"] is not None and r["controller_state"]["cycle"] == 0]
    assert len(records) == 22 and restarts == [0, 12]
    assert {r["mode"] for r in records[12:]} == {"disabled", "active"}  # engaged again after the restart
    assert all(len(r["mvs"]) == 18 for r in records)
    model = ROOT / "models" / "bootstrap-bc-v1" / "policy.onnx"
    config = write_config(tmp_path, model, hashlib.sha256(model.read_bytes()).hexdigest(), mode="closed_loop",
                          record={"state_every_cycles": 10})
    with pytest.raises(ValueError, match="policy state is for model 'e502e01fcac04dc69216a83eb7eb671ddc657048f"):
        replay(iter_records(log_dir), build_core(load_config(config)))


def test_a_state_that_differs_is_reported_before_it_changes_a_decision(recorded_hour):
    config, log_dir, _ = recorded_hour
    core = build_core(load_config(config))
    records = iter_records(log_dir)

    def altered():
        for record in records:
            if record["seq"] == 120:  # a logged state with a heartbeat the controller never had
                record["controller_state"] = {**record["controller_state"], "heartbeat": 7}
            yield record

    result = replay(altered(), core)
    assert result.difference is not None and result.difference.seq == 120
    assert result.difference.field == "controller_state" and result.compared == 120
