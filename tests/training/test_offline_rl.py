"""The offline-RL pipeline end to end on a tiny run: each stage's documented command, its artefact folder,
and what the next stage reads from it. Full-size runs are benchmarks (benchmarks/offline_rl.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.history import OperatedUnit, excursion_schedule, read_history
from training.policy import build_candidates

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


class _Bowl:
    """Rollouts stand-in: every start state's reward peaks where every MV moves together, at 0.6 of its
    allowed deviation, as the oracle's settings do; the projector and filters keep everything."""

    def __init__(self, n_rows=400, n_mv=15):
        self.rows, self.bands, self.movable = np.arange(n_rows), np.ones(n_mv), np.ones(n_mv, bool)
        self.obs = np.random.default_rng(0).normal(size=(n_rows, 4)).astype(np.float32)

    def project(self, offsets):
        return offsets, np.ones(len(offsets), bool)

    def supported(self, offsets):
        return np.ones(len(offsets), bool)

    def score(self, offsets):
        zeros = np.zeros(len(offsets))
        return {"reward": -((offsets - 0.6) ** 2).sum(axis=1), "cost": zeros, "disagreement": zeros}


def test_refinement_finds_settings_that_move_many_mvs_at_once():
    ro = _Bowl()
    plain = build_candidates(ro, 4, 0, 0.15, seed=0)
    refined = build_candidates(ro, 4, 8, 0.15, seed=0)
    assert plain["stats"]["improved_by_refinement"] == 0 < refined["stats"]["improved_by_refinement"]
    # random draws of a few MVs stay far from the peak; the cross-entropy rounds close in on it
    assert plain["reward"].max() < -3.0 and refined["reward"].max() > -0.5
    top = refined["actions"][refined["reward"] >= np.quantile(refined["reward"], 0.9)]
    np.testing.assert_allclose(top.mean(axis=0), 0.6, atol=0.15)


def test_step_tests_stay_inside_the_envelope_and_keep_feeder_sums():
    bands = {"feeder_a_bias_tph": 5.0, "feeder_b_bias_tph": 5.0, "sa_damper_a_pct": 20.0,
             "o2_setpoint_bias_pct": 1.0}
    changes = excursion_schedule(48 * 3600.0, bands, seed=5)
    assert changes == excursion_schedule(48 * 3600.0, bands, seed=5)  # deterministic for a seed
    assert {c.mv for c in changes} >= set(bands)
    reach = []
    for c in changes:
        if c.why == "mill_trip":
            continue
        band = bands["o2_setpoint_bias_pct"] if c.mv == "operator_o2_trim" else bands[c.mv]
        assert abs(c.value) <= band + 1e-9
        reach.append(abs(c.value) / band)
    assert max(reach) > 0.9  # the tests go to the envelope's edge, where an optimiser will want to be
    starts = [c for c in changes if c.why == "step_test" and c.value != 0.0 and c.mv.startswith("feeder_")]
    by_time: dict[float, float] = {}
    for c in starts:
        by_time[c.t] = by_time.get(c.t, 0.0) + c.value
    assert all(abs(total) < 1e-9 for total in by_time.values())  # a shift between feeders, not more coal
    trips = [c for c in changes if c.why == "mill_trip"]
    assert 1 <= len(trips) <= 6  # about one a day
    assert [c for c in changes if c.why != "mill_trip"] == [  # the trips leave the seed's step tests as they were
        c for c in excursion_schedule(48 * 3600.0, bands, seed=5) if c.why != "mill_trip"]


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


def test_limit_episodes_reads_the_history_stage(history, tmp_path):
    """The hold's evidence comes from the same history the learner reads: every stretch counted once. The
    tiny history never reaches 200 ppm, so co_max is set at 25 ppm in a copy of the envelope."""
    import yaml

    envelope = yaml.safe_load((ROOT / "constraints" / "reference_unit.yaml").read_text())
    envelope["process_limits"]["co_max"].update(limit=25.0, warning=20.0)
    (tmp_path / "envelope.yaml").write_text(yaml.safe_dump(envelope, sort_keys=False))
    figures = stage("limit_episodes", "--history", str(history), "--limit", "co_max",
                    "--envelope", str(tmp_path / "envelope.yaml"))
    assert figures["limit"] == "co_max" and figures["history_h"] == 1.5 and figures["sample_s"] == 5.0
    h = read_history(history)
    over = np.nan_to_num(h.column("co_ppm")) > 25.0
    starts = over & ~np.concatenate([[False], over[:-1]]) | over & np.concatenate([[True], np.diff(h.episode) != 0])
    assert figures["episodes"] == int(starts.sum()) > 0 and 0 <= figures["spikes"] <= figures["episodes"]
    assert figures["longest_spike_s"] % figures["sample_s"] == 0


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


def test_policy_rollouts_take_nox_air_and_reheat_from_the_settled_response(process_model, history, tag_map):
    from boiler_ai.control.envelope import load_envelope
    from training.policy import Rollouts
    from training.process_model import ENVELOPE, ProcessModel
    from training.settled_response import SettledResponse

    figures = json.loads((process_model / "metrics.json").read_text())["settled_response"]
    assert {"step_events", "step_events_held_out", "standing_trims"} <= set(figures)
    assert (process_model / "settled_response.json").is_file()
    model = ProcessModel.load(process_model / "process_model.pt")
    mvs = model.layout.mvs
    o2, sofa = mvs.index("o2_setpoint_bias_pct"), mvs.index("sofa_damper_1_pct")
    reheat = np.zeros((3, len(mvs)))
    reheat[:, o2] = 6.0
    nox = np.zeros(2 * len(mvs))
    nox[sofa] = -1.0  # % NOx per % of over-fire air
    air = np.zeros(2 * len(mvs))
    air[o2] = 100.0  # t/h of total air per % O2 bias
    settled = SettledResponse(mvs, nox, 450.0, reheat, {"total_air_flow_tph": air})
    ro = Rollouts(read_history(history), model, tag_map, load_envelope(ENVELOPE, tag_map), horizon=2, starts=20,
                  seed=0, settled=settled)
    offsets = np.zeros((len(ro.rows), len(mvs)))
    still = ro._rollout(offsets)
    for key in ("mean", "members"):
        np.testing.assert_array_equal(still[key], ro.baseline[key])  # the DCS's setting: the ensemble's own
    offsets[:, o2], offsets[:, sofa] = -0.5, 0.5
    moved = ro._rollout(offsets)
    out = model.layout.outputs
    j_rh, j_nox = out.index("reheat_steam_temp_c"), out.index("nox_mg_nm3")
    d_o2, d_sofa = -0.5 * ro.bands[o2], 0.5 * ro.bands[sofa]
    # every member moves by the same settled change, however the ensemble's own rollout responds
    np.testing.assert_allclose(moved["members"][..., j_rh] - ro.baseline["members"][..., j_rh], 6.0 * d_o2)
    np.testing.assert_allclose(moved["members"][..., j_nox] / ro.baseline["members"][..., j_nox],
                               1.0 - d_sofa / 100.0)
    j_air = out.index("total_air_flow_tph")
    np.testing.assert_allclose(moved["members"][..., j_air] - ro.baseline["members"][..., j_air], 100.0 * d_o2)
    others = [j for j in range(len(out)) if j not in (j_rh, j_nox, j_air)]
    assert not np.allclose(moved["mean"][..., others], ro.baseline["mean"][..., others])  # still the ensemble's
    # the policy stage's figures set the ensemble's response beside the settled one, per unit of each MV
    figures = ro.settled_against_rollout()
    assert set(figures) == set(mvs) and set(figures["o2_setpoint_bias_pct"]) == {
        "nox_mg_nm3", "total_air_flow_tph", "reheat_steam_temp_c"}
    o2_air = figures["o2_setpoint_bias_pct"]["total_air_flow_tph"]
    assert o2_air["settled"] == pytest.approx(100.0)
    assert o2_air["rollout_lower"] != o2_air["settled"] and np.isfinite(o2_air["rollout_raise"])
    assert figures["o2_setpoint_bias_pct"]["reheat_steam_temp_c"]["settled"] == pytest.approx(6.0)
    assert figures["sofa_damper_1_pct"]["nox_mg_nm3"]["settled"] < 0.0  # less NOx with more over-fire air


def test_a_unit_without_nox_or_reheat_outputs_gets_the_ensemble_alone(runs, history):
    out = runs / "process_model_o2_co"
    metrics = stage("process_model", "--history", str(history), "--out", str(out), "--epochs", "1", "--members", "2",
                    "--hidden", "8", "--outputs", "o2_economiser_pct,co_ppm")
    assert metrics["settled_response"] is None and not (out / "settled_response.json").exists()


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


def test_a_logged_mill_trip_trips_a_mill_in_service_and_the_dcs_starts_the_reserve(tag_map):
    from boiler_ai.sim.mills import MILLS
    from boiler_ai.sim.scenario import named_scenario
    from boiler_ai.sim.unit import ReferenceUnit
    from training.history import Change

    unit = OperatedUnit(ReferenceUnit(named_scenario("steady_full_load", 0), seed=0, tag_map=tag_map),
                        [Change(10.0, "mill_trip", 7.0, "mill_trip")])
    running = [m for m in MILLS if unit.values()[f"mill_{m}_in_service"] == 1.0]
    for _ in range(300):
        unit.step(1.0)
    v = unit.values()
    tripped = running[7 % len(running)]
    assert v[f"mill_{tripped}_in_service"] == 0.0
    assert v["mill_f_in_service"] == 1.0 or v["mill_f_sequence_active"] == 1.0  # the reserve mill is starting


@pytest.fixture(scope="module")
def policy(runs, history, process_model) -> Path:
    out = runs / "policy"
    stage("policy", "--history", str(history), "--process-model", str(process_model), "--out", str(out),
          "--starts", "150", "--candidates", "2", "--refine", "1", "--rounds", "2", "--steps", "60",
          "--check-minutes", "3")
    return out


@pytest.fixture(scope="module")
def package(runs, history, process_model, policy) -> Path:
    out = runs / "package"
    stage("package", "--history", str(history), "--process-model", str(process_model), "--policy", str(policy),
          "--out", str(out), "--epochs", "2", "--members", "3", "--hidden", "16", "--model-id", "tiny-rl")
    return out


def test_zero_offsets_run_the_unit_as_its_twin_under_the_dcs(tag_map):
    from training.env import BoilerEnv
    from training.policy_dataset import observation_signals

    env = BoilerEnv([("steady_full_load", 100)], input_signals=tuple(observation_signals(tag_map)), decision_s=30,
                    episode_s=300)
    obs, info = env.reset()
    assert obs.shape == env.observation_space.shape and info["scenario"] == "steady_full_load"
    obs, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
    # the AI's setpoints echo the DCS's one cycle late (the spray loops move every second): nearly no difference
    assert abs(reward) < 0.005 and info["cost"] == 0.0 and info["ai_active"] == 1.0 and info["guard_blocks"] == 0
    o2 = env.mv_names.index("o2_setpoint_bias_pct")
    action = np.zeros(env.action_space.shape)
    action[o2] = -0.5
    # a 0.5 % step swings steam past the band's margin for a minute or two, which the band charges; then
    for _ in range(6):
        obs, reward, *_ = env.step(action)
    assert reward > 0.0  # less excess air: less stack loss and fan power (the twin keeps the DCS's O2)


def test_policy_stage_logs_its_lagrangian_rounds(policy, process_model):
    metrics = json.loads((policy / "metrics.json").read_text())
    assert metrics["process_model_sha256"] == json.loads((process_model / "metrics.json").read_text())["data_sha256"]
    assert "IQL" in metrics["algorithm"] and "Lagrangian" in metrics["algorithm"]
    assert metrics["held_mvs"] == []  # every MV of the envelope may move unless --hold-mvs says otherwise
    assert "o2_setpoint_bias_pct" in metrics["settled_against_rollout"]
    config = json.loads((policy / "config.json").read_text())  # the steam band's price, as offline-rl-v6's
    assert (config["steam_band_penalty"], config["steam_band_margin"]) == (1.0, 0.5)
    assert [r["round"] for r in metrics["rounds"]] == [1, 2]
    assert {"lambda", "model_reward", "model_cost", "env_reward", "env_ai_active"} <= set(metrics["rounds"][0])
    c = metrics["candidates"]
    assert c["kept"] <= c["proposed"] and c["kept"] >= metrics["start_states"]  # the DCS's setting always stays
    # the DCS's setting, two random, one refinement round (around each state's best, and around the best of all)
    assert c["proposed"] == 5 * metrics["start_states"]
    assert (policy / "policy.d3").is_file() and (policy / "losses.csv").is_file()


def test_packaged_model_carries_the_full_contract_and_a_card(package, history, tag_map):
    from boiler_ai.control.model_contract import read_contract

    contract = read_contract(package / "policy.onnx")
    hist = json.loads((history / "metrics.json").read_text())
    assert contract.model_id == "tiny-rl" and contract.dataset_sha256 == hist["data_sha256"]
    assert "IQL" in contract.algorithm and "distilled" in contract.algorithm
    assert contract.ensemble_size == 3 and contract.spread_output and contract.seed == 0
    assert contract.action_names == tuple(tag_map.manipulated) and contract.code_commit
    assert len(contract.training_envelope) == contract.n_inputs
    card = json.loads((package / "MODEL_CARD.json").read_text())
    assert set(card) >= {"history", "process_model", "policy", "export"}
    assert "Process model" in (package / "MODEL_CARD.md").read_text()


def test_evaluate_reports_the_issue_keys_without_torch(package, runs):
    report = runs / "report"
    code = (f"import sys; from boiler_ai.cli import main; rc = main(['evaluate', {str(package / 'policy.onnx')!r}, "
            f"'--scenarios', 'mill_trip', '--max-seeds', '1', '--hours', '0.1', '--workers', '1', '--json', "
            f"'--opcua', 'steady_full_load', '--opcua-minutes', '3', '--opcua-speed', '30', "
            f"'--report', {str(report)!r}]); "
            "assert 'torch' not in sys.modules and 'd3rlpy' not in sys.modules, 'evaluate imported torch'; "
            "sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("efficiency_gain_pct_pt", "heat_rate_gain_pct", "oracle_headroom_pct_pt",
                "oracle_heat_rate_headroom_pct", "share_of_headroom", "nox_ratio", "co_p99_ppm", "excess_violation_s",
                "ai_time_share", "guard_blocks", "releases", "releases_per_h", "dcs_faults_per_h", "per_scenario",
                "steam_outside_band_excess_s", "dcs_steam_outside_band_s"):
        assert key in result
    assert result["per_scenario"]["mill_trip"]["seeds"] == [9001]
    # the envelope it was measured under, by content: the example config's
    assert result["envelope_sha256"] == hashlib.sha256((ROOT / "constraints" / "reference_unit.yaml").read_bytes()
                                                       ).hexdigest()
    assert result["oracle_heat_rate_headroom_pct"] > 0
    # one scenario through the whole daemon over OPC UA, every cycle run (the tiny model, trained on a few
    # hours of history, is out of its depth there: whether it engages is not the point here)
    opcua = result["opcua"]
    assert opcua["scenario"] == "steady_full_load" and opcua["seed"] == 9001 and opcua["cycles"] >= 170
    assert {"efficiency_gain_pct_pt", "heat_rate_gain_pct", "ai_time_share", "releases", "excess_violation_s"} \
        <= set(opcua)
    assert (report / "report.html").is_file() and (report / "mill_trip_9001.png").is_file()


def test_promote_refuses_a_model_without_gain_in_one_line(package, runs, tmp_path):
    models = tmp_path / "models"
    done = subprocess.run([sys.executable, "-m", "boiler_ai", "promote", str(package / "policy.onnx"), "--evaluation",
                           str(runs / "report" / "evaluation.json"), "--models-dir", str(models)],
                          capture_output=True, text=True, cwd=ROOT, env=ENV)
    assert done.returncode == 2 and "not promoted" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not models.exists()


def test_the_gate_names_each_failed_condition():
    from boiler_ai.promote import gate

    good = {"excess_violation_s": 0, "releases_per_h": 0.0, "dcs_faults_per_h": 0.0, "guard_blocks": 0,
            "heat_rate_gain_pct": 0.3, "efficiency_gain_pct_pt": 0.2}
    assert gate(good) == []
    assert "beyond the DCS" in gate({**good, "excess_violation_s": 3})[0]
    assert "fault rate" in gate({**good, "releases_per_h": 0.1})[0]
    assert "guard blocks" in gate({**good, "guard_blocks": 1})[0]
    assert "no gain" in gate({**good, "heat_rate_gain_pct": 0.001})[0]
    assert "no gain" in gate({**good, "efficiency_gain_pct_pt": -0.01})[0]


def test_promote_installs_a_passing_model_and_prints_its_sha256(package, runs, tmp_path):
    evaluation = json.loads((runs / "report" / "evaluation.json").read_text())
    evaluation["summary"].update(excess_violation_s=0, releases_per_h=0.0, guard_blocks=0, heat_rate_gain_pct=0.3,
                                 efficiency_gain_pct_pt=0.2)  # as if it had passed: the gate is tested above
    passing = tmp_path / "evaluation.json"
    passing.write_text(json.dumps(evaluation))
    models = tmp_path / "models"
    done = subprocess.run([sys.executable, "-m", "boiler_ai", "promote", str(package / "policy.onnx"), "--evaluation",
                           str(passing), "--models-dir", str(models)], capture_output=True, text=True, cwd=ROOT,
                          env=ENV)
    assert done.returncode == 0, done.stderr
    sha = done.stdout.strip().splitlines()[-1].split()[-1]
    assert (models / "tiny-rl" / "policy.onnx").read_bytes() == (package / "policy.onnx").read_bytes()
    assert sha == hashlib.sha256((models / "tiny-rl" / "policy.onnx").read_bytes()).hexdigest()
    assert "promotion gate" in (models / "tiny-rl" / "MODEL_CARD.md").read_text()
    assert f"under the envelope with sha256 {evaluation['summary']['envelope_sha256']}" in (
        models / "tiny-rl" / "MODEL_CARD.md").read_text()
    assert json.loads((models / "tiny-rl" / "MODEL_CARD.json").read_text())["evaluation"]["heat_rate_gain_pct"] == 0.3
    # Promoted again from where it is installed (a new evaluation, say after an envelope change): the card
    # carries the new evaluation once, in place of the old, and keeps the notes written after it.
    installed = models / "tiny-rl" / "MODEL_CARD.md"
    installed.write_text(installed.read_text() + "\n## Notes\n\n- an engineer's note\n")
    evaluation["summary"]["heat_rate_gain_pct"] = 0.25
    passing.write_text(json.dumps(evaluation))
    again = subprocess.run([sys.executable, "-m", "boiler_ai", "promote", str(models / "tiny-rl" / "policy.onnx"),
                            "--evaluation", str(passing), "--models-dir", str(models)], capture_output=True,
                           text=True, cwd=ROOT, env=ENV)
    assert again.returncode == 0, again.stderr
    card = (models / "tiny-rl" / "MODEL_CARD.md").read_text()
    assert card.count("## Evaluation (boiler-ai evaluate") == 1 and "+0.2500 %" in card
    assert card.index("+0.2500 %") < card.index("## Notes\n\n- an engineer's note\n")
