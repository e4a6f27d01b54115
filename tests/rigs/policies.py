"""Small hand-built ONNX policies with the full contract, for controller and fault-matrix tests.

`follower`: each AI setpoint = the DCS's own setpoint + a fixed offset (a policy whose intent is
known exactly, so tests can tell what the envelope did to it). With `nan_above_ambient_c`, every
action is NaN whenever the ambient temperature input exceeds that value: a real model emitting NaN.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from boiler_ai.control.model_contract import ModelContract, write_contract
from boiler_ai.plant.tagmap import TagMap


def follower(path: Path, tag_map: TagMap, offsets: dict[str, float] | None = None,
             nan_above_ambient_c: float | None = None,
             training_envelope: dict[str, tuple[float, float]] | None = None) -> str:
    """Write the policy to `path`; return its sha256. `training_envelope` narrows the declared
    training range of some inputs (default: each input's physical range)."""
    mvs = list(tag_map.manipulated)
    dcs = [tag_map.manipulated[m].dcs_setpoint for m in mvs]
    inputs = dcs + ["ambient_temp_c", "o2_economiser_pct"]
    n, width = len(mvs), len(inputs)
    weights = np.zeros((width, n), np.float32)
    weights[np.arange(n), np.arange(n)] = 1.0
    bias = np.array([(offsets or {}).get(m, 0.0) for m in mvs], np.float32)
    nodes = [helper.make_node("MatMul", ["observation", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["raw"])]
    inits = [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")]
    if nan_above_ambient_c is None:
        nodes.append(helper.make_node("Identity", ["raw"], ["action"]))
    else:
        # 0 * sqrt(limit - ambient) is 0 below the limit and NaN above it
        pick = np.zeros((width, 1), np.float32)
        pick[inputs.index("ambient_temp_c"), 0] = -1.0
        nodes += [helper.make_node("MatMul", ["observation", "P"], ["neg_ambient"]),
                  helper.make_node("Add", ["neg_ambient", "L"], ["headroom"]),
                  helper.make_node("Sqrt", ["headroom"], ["root"]),
                  helper.make_node("Mul", ["root", "Z"], ["zero_or_nan"]),
                  helper.make_node("Add", ["raw", "zero_or_nan"], ["action"])]
        inits += [numpy_helper.from_array(pick, "P"),
                  numpy_helper.from_array(np.array([nan_above_ambient_c], np.float32), "L"),
                  numpy_helper.from_array(np.zeros(1, np.float32), "Z")]
    graph = helper.make_graph(
        nodes, "follower", [helper.make_tensor_value_info("observation", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    specs = [tag_map.signals[name] for name in inputs]
    contract = ModelContract(
        model_id="test-follower", input_name="observation", input_signals=tuple(inputs), history_length=1,
        cycle_period_s=1.0, input_offset=(0.0,) * width, input_scale=(1.0,) * width,
        action_output="action", action_names=tuple(mvs),
        action_units=tuple(tag_map.signals[tag_map.manipulated[m].ai_setpoint].unit for m in mvs),
        output_offset=(0.0,) * n, output_scale=(1.0,) * n, ensemble_size=1, spread_output=None,
        training_envelope=tuple((training_envelope or {}).get(s.name, (s.lo, s.hi)) for s in specs),
        dataset_sha256="0" * 64,
        algorithm="hand-built follower (tests)", seed=0, created_utc="2026-01-01T00:00:00Z",
        code_commit="0" * 40)
    write_contract(model, contract)
    onnx.save_model(model, path)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
