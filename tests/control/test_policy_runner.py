"""The policy runner: refuses unfit models with clear messages, stacks history, flags the envelope, resumes exactly."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from rigs.contracts import (
    INPUTS,
    MVS,
    N_MVS,
    TAG_MAP,
    UNITS,
    linear_policy,
    sample_contract,
    save_policy,
)

from boiler_ai.control.model_contract import ModelError, write_contract
from boiler_ai.control.policy import Inference, PolicyRunner, session_options
from boiler_ai.strict import ConfigError
from boiler_ai.tagmap import load_tag_map

TM = load_tag_map(TAG_MAP)
REVERSED = tuple(reversed(MVS))


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def runner_for(path, tag_map=TM, mv_names=REVERSED, **kwargs) -> PolicyRunner:
    return PolicyRunner(path, tag_map=tag_map, expected_sha256=sha(path), mv_names=mv_names, **kwargs)


def values(o2=3.5, load=450.0, bias=0.2) -> dict[str, float]:
    return {"o2_economiser_pct": o2, "unit_load_mw": load, "feeder_a_bias_tph_dcs_sp": bias, "co_ppm": 40.0}


def expected_action(contract, weights, bias, rows) -> np.ndarray:
    """What the contract says the runner must return, computed independently with numpy (float64)."""
    x = np.concatenate([(np.array(r) - contract.input_offset) / contract.input_scale for r in rows])
    y = x.astype(np.float32).astype(np.float64) @ weights + bias
    action = y * contract.output_scale + np.array(contract.output_offset)
    return action[[MVS.index(mv) for mv in REVERSED]]


def test_action_follows_the_contract_in_mv_order(tmp_path):
    contract = sample_contract()
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(6, N_MVS)).astype(np.float32), rng.normal(size=N_MVS).astype(np.float32)
    runner = runner_for(save_policy(tmp_path / "p.onnx", contract, weights=w, bias=b))
    assert runner.contract == contract and runner.mv_names == REVERSED
    assert runner.input_signals == INPUTS and runner.model_id == "test-model"
    rows = [(3.1, 420.0, 0.5), (3.4, 430.0, -0.25)]
    for o2, load, bias in rows:
        assert not runner.ready
        runner.observe(values(o2, load, bias))
    assert runner.ready
    out = runner.infer()
    assert isinstance(out, Inference) and out.finite and out.out_of_envelope == []
    np.testing.assert_allclose(out.action, expected_action(contract, w.astype(np.float64), b, rows),
                               rtol=1e-5, atol=1e-4)
    x = np.concatenate([(np.array(r) - contract.input_offset) / contract.input_scale for r in rows])
    spread_scaled = np.abs(x) @ (np.abs(w) / 10)
    np.testing.assert_allclose(out.spread, (spread_scaled * 2.0)[[MVS.index(mv) for mv in REVERSED]], rtol=1e-5)


def test_history_is_oldest_first_and_rolls(tmp_path):
    contract = sample_contract(input_offset=(0.0,) * 3, input_scale=(1.0,) * 3, output_offset=(0.0,) * N_MVS,
                               output_scale=(1.0,) * N_MVS)
    w = np.zeros((6, N_MVS), np.float32)
    w[0, 0] = 1.0  # feeder A bias <- O2 of the oldest cycle
    w[3, 1] = 1.0  # feeder B bias <- O2 of the newest cycle
    runner = runner_for(save_policy(tmp_path / "p.onnx", contract, weights=w), mv_names=MVS)
    for o2, (old, new) in zip([2.0, 3.0, 4.0, 5.0], [(None, None), (2.0, 3.0), (3.0, 4.0), (4.0, 5.0)]):
        runner.observe(values(o2=o2))
        if old is not None:
            a = runner.infer().action
            assert (a[0], a[1]) == (old, new)
    runner.reset()
    assert not runner.ready
    with pytest.raises(RuntimeError, match="history not full"):
        runner.infer()


def test_sha256_mismatch_names_both_hashes(tmp_path):
    path = save_policy(tmp_path / "p.onnx", sample_contract())
    with pytest.raises(ModelError) as info:
        PolicyRunner(path, tag_map=TM, expected_sha256="0" * 64, mv_names=MVS)
    assert str(path) in str(info.value) and "0" * 64 in str(info.value) and sha(path) in str(info.value)
    assert isinstance(info.value, ConfigError)
    with pytest.raises(ModelError, match="pinned sha256 must be 64 lowercase hex digits"):
        PolicyRunner(path, tag_map=TM, expected_sha256=sha(path).upper(), mv_names=MVS)


def test_corrupt_or_missing_files_are_refused_naming_the_file(tmp_path):
    good = save_policy(tmp_path / "good.onnx", sample_contract()).read_bytes()
    for name, data in {"truncated.onnx": good[: len(good) - 200], "noise.onnx": bytes(range(256)) * 8,
                       "empty.onnx": b""}.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ModelError) as info:
            runner_for(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
    with pytest.raises(ModelError, match="cannot read model file"):
        PolicyRunner(tmp_path / "absent.onnx", tag_map=TM, expected_sha256="0" * 64, mv_names=MVS)


def test_inputs_must_be_readable_tags_of_the_map(tmp_path):
    contract = sample_contract(input_signals=("o2_economiser_pct", "unit_load_mw", "no_such_tag"))
    with pytest.raises(ModelError, match=r"input_signals: not in the tag map .*: no_such_tag"):
        runner_for(save_policy(tmp_path / "p.onnx", contract))
    signals = dict(TM.signals)
    signals["unit_load_mw"] = dataclasses.replace(signals["unit_load_mw"], access="write")
    write_only = dataclasses.replace(TM, signals=signals)
    with pytest.raises(ModelError, match=r"input_signals: not readable in the tag map .*: unit_load_mw"):
        runner_for(save_policy(tmp_path / "q.onnx", sample_contract()), tag_map=write_only)


def test_actions_must_be_exactly_the_manipulated_variables(tmp_path):
    short = sample_contract(action_names=MVS[:-1], action_units=UNITS[:-1], output_offset=(0.0,) * (N_MVS - 1),
                            output_scale=(1.0,) * (N_MVS - 1))
    with pytest.raises(ModelError, match="action_names: .*missing: o2_setpoint_bias_pct; not manipulated there: none"):
        runner_for(save_policy(tmp_path / "short.onnx", short))
    wrong = sample_contract(action_names=(*MVS[:-1], "unit_load_mw"))
    with pytest.raises(ModelError, match="missing: o2_setpoint_bias_pct; not manipulated there: unit_load_mw"):
        runner_for(save_policy(tmp_path / "wrong.onnx", wrong))
    with pytest.raises(ValueError, match="mv_names must be the tag map's manipulated variables"):
        runner_for(save_policy(tmp_path / "p.onnx", sample_contract()), mv_names=MVS[:-1])


def _save_raw(path, model, contract):
    write_contract(model, contract)
    onnx.save_model(model, path)
    return path


@pytest.mark.parametrize(("case", "message"), [
    ("input_width", r"input_name: graph tensor 'observation' has shape \['batch', 5\], the contract needs \[batch, 6"),
    ("output_width", r"action_output: graph tensor 'action' has shape \['batch', 14\], the contract needs \[batch, 15"),
    ("input_name", r"input_name: graph inputs are \['obs'\], the contract declares one input 'observation'"),
    ("no_spread", r"spread_output: graph has no output 'action_spread'"),
    ("double_input", r"input_name: graph tensor 'observation' is tensor\(double\)"),
    ("fixed_batch", r"input_name: graph tensor 'observation' has shape \[4, 6\]"),
])
def test_graph_shapes_must_agree_with_the_contract(tmp_path, case, message):
    contract = sample_contract()
    if case == "input_width":
        model = linear_policy(contract, input_width=5)
    elif case == "output_width":
        model = linear_policy(contract, n_out=N_MVS - 1)
    elif case == "input_name":
        model = linear_policy(dataclasses.replace(contract, input_name="obs"))
    elif case == "no_spread":
        model = linear_policy(contract, spread=False)
    else:
        model = linear_policy(contract)
        inp = model.graph.input[0]
        if case == "double_input":
            model.graph.node.insert(0, helper.make_node("Cast", ["observation"], ["x32"], to=TensorProto.FLOAT))
            for node in model.graph.node[1:]:
                node.input[:] = ["x32" if i == "observation" else i for i in node.input]
            inp.type.tensor_type.elem_type = TensorProto.DOUBLE
        else:
            inp.type.tensor_type.shape.dim[0].Clear()
            inp.type.tensor_type.shape.dim[0].dim_value = 4
    with pytest.raises(ModelError, match=message):
        runner_for(_save_raw(tmp_path / f"{case}.onnx", model, contract))


def test_out_of_envelope_with_margin_over_the_whole_history(tmp_path):
    # o2 envelope [2, 5]: span 3, counted as a fifth of its 21 % physical range (4.2): 10 % margin = 0.42
    contract = sample_contract()
    runner = runner_for(save_policy(tmp_path / "p.onnx", contract), envelope_margin=0.1)
    runner.observe(values(o2=5.41))
    runner.observe(values(o2=1.59))
    assert runner.infer().out_of_envelope == []
    runner.observe(values(o2=5.43, load=299.0))  # load envelope [300, 600] +- 30: inside
    assert runner.infer().out_of_envelope == ["o2_economiser_pct"]
    runner.observe(values(o2=3.0, load=269.0, bias=1.45))
    assert runner.infer().out_of_envelope == ["o2_economiser_pct", "unit_load_mw", "feeder_a_bias_tph_dcs_sp"]
    runner.observe(values())
    assert runner.infer().out_of_envelope == ["unit_load_mw", "feeder_a_bias_tph_dcs_sp"]
    runner.observe(values())
    out = runner.infer()
    assert out.out_of_envelope == [] and out.finite


def test_missing_or_nan_input_flags_the_signal_and_the_answer_is_not_finite(tmp_path):
    runner = runner_for(save_policy(tmp_path / "p.onnx", sample_contract()))
    runner.observe(values())
    partial = values()
    del partial["unit_load_mw"]
    runner.observe(partial)
    out = runner.infer()
    assert out.out_of_envelope == ["unit_load_mw"] and not out.finite
    runner.observe(values(o2=float("nan")))
    assert runner.infer().out_of_envelope == ["o2_economiser_pct", "unit_load_mw"]
    runner.observe(values())
    assert runner.infer().out_of_envelope == ["o2_economiser_pct"]  # still in the 2-cycle history
    runner.observe(values())
    out = runner.infer()
    assert out.finite and out.out_of_envelope == []


def test_model_emitting_nan_is_not_finite(tmp_path):
    bias = np.zeros(N_MVS, np.float32)
    bias[5] = np.nan
    runner = runner_for(save_policy(tmp_path / "p.onnx", sample_contract(), bias=bias))
    runner.observe(values())
    runner.observe(values())
    out = runner.infer()
    assert not out.finite and np.isnan(out.action).sum() == 1


def test_single_model_has_no_spread(tmp_path):
    contract = sample_contract(ensemble_size=1, spread_output=None)
    runner = runner_for(save_policy(tmp_path / "p.onnx", contract, spread=False))
    runner.observe(values())
    runner.observe(values())
    out = runner.infer()
    assert out.spread is None and out.finite


def test_state_restore_resumes_bit_exactly_through_json(tmp_path):
    contract = sample_contract(history_length=3)
    rng = np.random.default_rng(11)
    path = save_policy(tmp_path / "p.onnx", contract, weights=rng.normal(size=(9, N_MVS)))
    first, second = runner_for(path), runner_for(path)
    log = [values(o2=3 + rng.random(), load=400 + 100 * rng.random(), bias=rng.random() - 0.5) for _ in range(12)]
    for row in log[:2]:
        first.observe(row)
    second.restore(json.loads(json.dumps(first.state())))  # partly filled history survives too
    assert not second.ready
    for i, row in enumerate(log[2:7]):
        first.observe(row)
        second.observe(row)
        if i >= 1:
            assert np.array_equal(first.infer().action, second.infer().action)
    third = runner_for(path)
    third.restore(json.loads(json.dumps(first.state())))
    for row in log[7:]:
        first.observe(row)
        third.observe(row)
        a, b = first.infer(), third.infer()
        assert np.array_equal(a.action, b.action) and np.array_equal(a.spread, b.spread)
    other = runner_for(save_policy(tmp_path / "other.onnx", sample_contract(history_length=3, model_id="other")))
    with pytest.raises(ValueError, match="policy state is for model"):
        other.restore(first.state())
    with pytest.raises(ValueError, match="at most 3 rows of 3 numbers"):
        third.restore({"model_sha256": third.sha256, "history": [[1.0, 2.0]]})


def test_session_is_single_threaded_without_spinning(tmp_path):
    opts = session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    runner = runner_for(save_policy(tmp_path / "p.onnx", sample_contract()))
    session = runner._session
    assert session.get_providers() == ["CPUExecutionProvider"]
    used = session.get_session_options()
    assert used.intra_op_num_threads == 1 and used.inter_op_num_threads == 1
    assert used.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_the_shipped_bootstrap_model_fits_the_reference_unit():
    folder = TAG_MAP.parent.parent / "models" / "bootstrap-bc-v1"
    card = (folder / "MODEL_CARD.md").read_text()
    pinned = sha(folder / "policy.onnx")
    assert f"| sha256 (pin this in the daemon config) | `{pinned}` |" in card  # the card describes this very file
    runner = PolicyRunner(folder / "policy.onnx", tag_map=TM, expected_sha256=pinned, mv_names=MVS)
    assert runner.contract.ensemble_size == 5 and runner.contract.spread_output == "action_spread"
    assert not runner.contract.code_commit.endswith("-dirty")
    lo_hi = dict(zip(runner.contract.input_signals, runner.contract.training_envelope))
    mid = {name: (lo + hi) / 2 for name, (lo, hi) in lo_hi.items()}
    for _ in range(runner.contract.history_length):
        runner.observe(mid)
    out = runner.infer()
    assert out.finite and out.out_of_envelope == [] and len(out.action) == N_MVS
