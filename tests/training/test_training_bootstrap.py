"""The training side: dataset building, export checked against torch, and the bootstrap pipeline end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from rigs.contracts import sample_contract

from boiler_ai.control.model_contract import read_contract
from boiler_ai.control.policy import PolicyRunner
from boiler_ai.tagmap import load_tag_map
from training import bootstrap_bc
from training.ensemble import ResidualMLPEnsemble, predict
from training.export import ExportError, export_policy
from training.policy_dataset import build_dataset, concat, observation_signals

ROOT = Path(__file__).resolve().parents[2]

TM = load_tag_map(ROOT / "opc" / "reference_unit.yaml")
TARGETS = {"feeder_a_bias_tph": "feeder_a_bias_tph_dcs_sp", "sa_damper_a_pct": "sa_damper_a_pct_dcs_sp"}
SIGNALS = ("unit_load_mw", "feeder_a_bias_tph_dcs_sp", "sa_damper_a_pct_dcs_sp")


def row(t: float) -> dict[str, float]:
    return {"unit_load_mw": 400 + t, "feeder_a_bias_tph_dcs_sp": t / 10, "sa_damper_a_pct_dcs_sp": 50 - t,
            "co_ppm": 1.0}


def test_observation_signals_are_process_signals_and_dcs_setpoints():
    names = observation_signals(TM)
    assert "o2_economiser_pct" in names and "feeder_a_bias_tph_dcs_sp" in names and "mill_a_in_service" in names
    assert not any(n.endswith("_ai_sp") for n in names)
    assert not set(TM.handshake.values()) & set(names)
    assert names == [n for n in TM.signals if n in names]  # tag-map order
    read_handshake = set(TM.handshake.values()) & set(TM.readable)  # the status codes are written only
    assert len(names) == len(TM.readable) - len(read_handshake) - len(TM.manipulated)


def test_dataset_stacks_history_oldest_first_and_targets_the_next_setpoint():
    ds = build_dataset((row(t) for t in range(6)), input_signals=SIGNALS, targets=TARGETS, history=2, source=4)
    assert len(ds) == 6 - 2  # windows (0,1)->2, (1,2)->3, (2,3)->4, (3,4)->5
    np.testing.assert_array_equal(ds.x[0], [400, 0.0, 50, 401, 0.1, 49])
    np.testing.assert_array_equal(ds.y[0], [0.2, 48])  # row 2's DCS setpoints
    np.testing.assert_array_equal(ds.y[-1], [0.5, 45])
    assert ds.source.tolist() == [4] * 4
    lead3 = build_dataset((row(t) for t in range(6)), input_signals=SIGNALS, targets=TARGETS, history=2, lead=3)
    assert len(lead3) == 2 and lead3.y[0].tolist() == [0.4, 46]


def test_gaps_nan_and_missing_signals_break_the_sequence():
    rows = [row(t) for t in range(12)]
    rows[3] = None  # a gap in the log
    rows[7] = {**row(7), "unit_load_mw": float("nan")}
    del rows[10]["sa_damper_a_pct_dcs_sp"]
    ds = build_dataset(rows, input_signals=SIGNALS, targets=TARGETS, history=2)
    # a sample spans 3 rows (2 inputs + the target); only those starting at rows 0 and 4 avoid rows 3, 7 and 10
    assert [x[0] - 400 for x in ds.x] == [0, 4]
    assert np.isfinite(ds.x).all() and np.isfinite(ds.y).all()
    empty = build_dataset([row(0)], input_signals=SIGNALS, targets=TARGETS, history=2)
    assert len(empty) == 0 and empty.x.shape == (0, 6)


def test_dataset_hash_pins_layout_and_numbers():
    a = build_dataset((row(t) for t in range(8)), input_signals=SIGNALS, targets=TARGETS, history=2)
    b = build_dataset((row(t) for t in range(8)), input_signals=SIGNALS, targets=TARGETS, history=2)
    c = build_dataset((row(t) for t in range(8)), input_signals=SIGNALS, targets=TARGETS, history=3)
    assert a.sha256() == b.sha256() != c.sha256()
    both = concat([a, b])
    assert len(both) == 2 * len(a) and both.sha256() != a.sha256()
    with pytest.raises(ValueError, match="different layouts"):
        concat([a, c])


def _small_export(tmp_path: Path, atol: float = 1e-4):
    torch.manual_seed(0)
    contract = sample_contract(ensemble_size=4)
    model = ResidualMLPEnsemble(contract.input_width, contract.n_actions, [5] * contract.n_actions,
                                [0.5] * contract.n_actions, members=4, hidden=8)
    batch = np.random.default_rng(0).normal(size=(32, contract.input_width)).astype(np.float32)
    return model, contract, batch, export_policy(model, contract, tmp_path / "m" / "policy.onnx", batch, atol=atol)


def test_export_writes_the_contract_and_matches_torch_in_the_runner(tmp_path):
    model, contract, batch, sha = _small_export(tmp_path)
    path = tmp_path / "m" / "policy.onnx"
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_contract(path) == contract
    assert not list(path.parent.glob("*.data")) and not list(path.parent.glob("*.tmp"))  # weights inside, no leftovers
    runner = PolicyRunner(path, tag_map=TM, expected_sha256=sha, mv_names=contract.action_names)
    action, spread = predict(model, batch[:1])
    for block in batch[0].reshape(contract.history_length, contract.n_inputs):
        raw = np.array(contract.input_offset) + block.astype(np.float64) * np.array(contract.input_scale)
        runner.observe(dict(zip(contract.input_signals, raw.tolist())))
    out = runner.infer()
    np.testing.assert_allclose(out.action, action[0] * contract.output_scale + np.array(contract.output_offset),
                               atol=1e-3)
    np.testing.assert_allclose(out.spread, spread[0] * np.array(contract.output_scale), atol=1e-3)
    assert onnx.load(path).opset_import[0].version >= 18


def test_export_refuses_to_write_a_graph_that_differs_from_torch(tmp_path):
    with pytest.raises(ExportError, match=r"ONNX output 'action' differs from torch by .* > -1"):
        _small_export(tmp_path, atol=-1.0)  # no difference passes a negative tolerance: the check runs
    assert not (tmp_path / "m" / "policy.onnx").exists()


def _synthetic_rows(seed: int, cycles: int):
    """A stand-in unit for a fast test of the pipeline: load wanders, the 'DCS' moves each setpoint
    towards a load schedule of its own."""
    rng = np.random.default_rng(seed)
    inputs = observation_signals(TM)
    sp = {mv.dcs_setpoint: 0.0 for mv in TM.manipulated.values()}
    load = 450.0
    for _ in range(cycles):
        load += rng.normal()
        row = {s: (TM.signals[s].lo + TM.signals[s].hi) / 2 + rng.normal() for s in inputs}
        for k, tag in enumerate(sp):
            sp[tag] += 0.1 * ((load - 450) / 50 * (k % 3) - sp[tag])
        yield {**row, **sp, "unit_load_mw": load}


def _fit(out_dir: Path) -> dict:
    inputs = observation_signals(TM)
    targets = {mv: spec.dcs_setpoint for mv, spec in TM.manipulated.items()}
    train = concat([build_dataset(_synthetic_rows(k, 400), input_signals=inputs, targets=targets, history=2, source=k)
                    for k in range(2)])
    held_out = build_dataset(_synthetic_rows(9, 200), input_signals=inputs, targets=targets, history=2)
    return bootstrap_bc.fit_and_export(train, held_out, tag_map=TM, out_dir=out_dir, model_id="synthetic-bc", seed=3,
                                       spec=bootstrap_bc.EnsembleSpec(epochs=2, members=3, hidden=16),
                                       cycle_period_s=1.0, data_note="synthetic rows", log=lambda _: None)


def test_fit_and_export_is_deterministic_and_its_card_quotes_its_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first, second = _fit(tmp_path / "a"), _fit(tmp_path / "b")
    assert first["policy_sha256"] == second["policy_sha256"]  # same seed, same time, same commit: same bytes
    assert (tmp_path / "a" / "policy.onnx").read_bytes() == (tmp_path / "b" / "policy.onnx").read_bytes()
    assert first["created_utc"] == "2023-11-14T22:13:20Z"
    card = (tmp_path / "a" / "MODEL_CARD.md").read_text()
    assert first["policy_sha256"] in card and first["dataset_sha256"] in card and "synthetic rows" in card
    for mv, figures in first["per_mv"].items():
        line = next(x for x in card.splitlines() if x.startswith(f"| {mv}"))
        assert f" | {figures['unit']} | {figures['mae']:.4g} | {figures['mae_hold_last']:.4g} |" in line
    assert first["runner_vs_torch_max_abs"] < 1e-3


def test_bootstrap_pipeline_on_the_simulator_exports_a_model_the_runner_accepts(tmp_path, capsys):
    from boiler_ai.sim.scenario import named_scenario
    from boiler_ai.sim.unit import ReferenceUnit

    out = tmp_path / "bootstrap"
    assert bootstrap_bc.main(["--out", str(out), "--seconds", "240", "--epochs", "2", "--members", "3",
                              "--hidden", "16", "--seed", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    path = out / "policy.onnx"
    assert summary["policy_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.stat().st_size < 1_000_000 and (out / "MODEL_CARD.md").exists()
    assert summary["runner_vs_torch_max_abs"] < 1e-3  # the pipeline itself fails above 1e-4 of each output scale
    assert set(summary["per_mv"]) == set(TM.manipulated)
    contract = read_contract(path)
    assert contract.input_signals == tuple(observation_signals(TM)) and contract.ensemble_size == 3
    assert contract.seed == 1 and "behaviour cloning" in contract.algorithm

    # The edge runs it on a unit it has not seen: actions stay close to what the DCS itself asks for.
    mv_names = list(TM.manipulated)
    runner = PolicyRunner(path, tag_map=TM, expected_sha256=summary["policy_sha256"], mv_names=mv_names)
    unit = ReferenceUnit(named_scenario("demo", 5), seed=5)
    span = np.array([TM.signals[TM.manipulated[mv].dcs_setpoint].hi - TM.signals[TM.manipulated[mv].dcs_setpoint].lo
                     for mv in mv_names])
    for _ in range(30):
        unit.step(1.0)
        values = unit.values()
        runner.observe(values)
        if runner.ready:
            result = runner.infer()
            dcs = np.array([values[TM.manipulated[mv].dcs_setpoint] for mv in mv_names])
            assert result.finite and result.spread is not None and min(result.spread) >= 0
            assert np.all(np.abs(result.action - dcs) < 0.05 * span)
