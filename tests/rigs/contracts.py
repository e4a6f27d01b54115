"""Hand-built model contracts and one-layer ONNX policies for the model-contract, runner and training tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from boiler_ai.control.model_contract import ModelContract, write_contract

ROOT = Path(__file__).resolve().parents[2]
TAG_MAP = ROOT / "opc" / "reference_unit.yaml"
MVS = ("feeder_a_bias_tph", "feeder_b_bias_tph", "feeder_c_bias_tph", "feeder_d_bias_tph", "feeder_e_bias_tph",
       "feeder_f_bias_tph", "sa_damper_a_pct", "sa_damper_b_pct", "sa_damper_c_pct", "sa_damper_d_pct",
       "sa_damper_e_pct", "sa_damper_f_pct", "sofa_damper_1_pct", "sofa_damper_2_pct", "o2_setpoint_bias_pct")
N_MVS = len(MVS)
UNITS = ("t/h",) * 6 + ("%",) * 9
INPUTS = ("o2_economiser_pct", "unit_load_mw", "feeder_a_bias_tph_dcs_sp")


def sample_contract(**changes) -> ModelContract:
    """A valid contract for 3 inputs x 2 cycles of history and the 15 MVs of the reference unit."""
    base = ModelContract(
        model_id="test-model", input_name="observation", input_signals=INPUTS, history_length=2,
        cycle_period_s=1.0, input_offset=(3.0, 500.0, 0.0), input_scale=(1.0, 100.0, 2.0),
        action_output="action", action_names=MVS, action_units=UNITS,
        output_offset=tuple(float(i) for i in range(N_MVS)), output_scale=(2.0,) * N_MVS,
        ensemble_size=3, spread_output="action_spread",
        training_envelope=((2.0, 5.0), (300.0, 600.0), (-1.0, 1.0)),
        dataset_sha256="ab" * 32, algorithm="test", seed=7, created_utc="2025-01-31T12:00:00Z",
        code_commit="0123456789abcdef0123456789abcdef01234567",
    )
    return dataclasses.replace(base, **changes)


def linear_policy(contract: ModelContract, *, weights: np.ndarray | None = None, bias: np.ndarray | None = None,
                  input_width: int | None = None, n_out: int | None = None, spread: bool = True) -> onnx.ModelProto:
    """A one-layer ONNX policy built by hand: action = x @ W + b, spread = |x| @ |W| / 10, batch symbolic."""
    width = contract.input_width if input_width is None else input_width
    n = contract.n_actions if n_out is None else n_out
    w = np.full((width, n), 0.1, np.float32) if weights is None else weights.astype(np.float32)
    b = np.zeros(n, np.float32) if bias is None else bias.astype(np.float32)
    x = contract.input_name
    nodes = [helper.make_node("MatMul", [x, "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["action"])]
    outputs = [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", n])]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
    if spread:
        nodes += [helper.make_node("Abs", [x], ["ax"]), helper.make_node("MatMul", ["ax", "AW"], ["action_spread"])]
        inits.append(numpy_helper.from_array(np.abs(w) / 10, "AW"))
        outputs.append(helper.make_tensor_value_info("action_spread", TensorProto.FLOAT, ["batch", n]))
    graph = helper.make_graph(nodes, "policy", [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", width])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def save_policy(path: Path, contract: ModelContract, **kwargs) -> Path:
    model = linear_policy(contract, **kwargs)
    write_contract(model, contract)
    onnx.save_model(model, path)
    return path
