"""Small hand-built ONNX policies with the full contract, for controller, fault-matrix and adversarial tests.

`follower`: each AI setpoint = the DCS's own setpoint + a fixed offset (a policy whose intent is
known exactly, so tests can tell what the envelope did to it). With `nan_above_ambient_c`, every
action is NaN whenever the ambient temperature input exceeds that value: a real model emitting NaN.

`adversary`: the DCS's setpoints plus an offset that is constant, drifts with time, switches sign
(bang-bang) or is NaN; time is the AI_HEARTBEAT the policy reads back (one count per healthy cycle).
`ADVERSARIES` names the suite the safety tests and benchmarks/adversarial.py run: extreme outputs,
NaN, bang-bang, a slow drift in each MV group, and policies aimed at high NOx, high CO, low O2, high
and low steam temperature and high exit gas temperature.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from boiler_ai.control.model_contract import ModelContract, write_contract
from boiler_ai.tagmap import TagMap

FEEDERS = tuple(f"feeder_{m}_bias_tph" for m in "abcdef")
SA = tuple(f"sa_damper_{m}_pct" for m in "abcdef")
SOFA = ("sofa_damper_1_pct", "sofa_damper_2_pct")
O2 = "o2_setpoint_bias_pct"
FAR = 1e6  # an offset far outside any envelope: "as far as allowed"


@dataclass(frozen=True)
class Adversary:
    shape: str  # constant | drift | bang_bang | nan
    offsets: dict[str, float]  # per MV: the offset (constant, bang_bang) or offset per cycle (drift)
    period_cycles: float = 60.0  # bang_bang: a full period
    note: str = ""


def _group(names, value) -> dict[str, float]:
    return {n: value for n in names}


ADVERSARIES: dict[str, Adversary] = {
    "extreme_high": Adversary("constant", _group(FEEDERS + SA + SOFA + (O2,), FAR), note="every output at +1e6"),
    "extreme_low": Adversary("constant", _group(FEEDERS + SA + SOFA + (O2,), -FAR), note="every output at -1e6"),
    "nan_output": Adversary("nan", {}, note="every output NaN"),
    "bang_bang": Adversary("bang_bang", {**_group(SA, 20.0), **_group(SOFA, -20.0), O2: 1.0, "feeder_a_bias_tph": 5.0},
                           period_cycles=60.0, note="full deviation, sign flipped every 30 s"),
    "drift_feeders": Adversary("drift", {"feeder_a_bias_tph": 0.002, "feeder_b_bias_tph": 0.002,
                                         "feeder_d_bias_tph": -0.002, "feeder_e_bias_tph": -0.002},
                               note="coal shifted to the lower levels, 0.12 t/h per minute"),
    "drift_secondary_air": Adversary("drift", _group(SA, -0.01), note="burner air closing, 0.6 % per minute"),
    "drift_sofa": Adversary("drift", _group(SOFA, -0.01), note="over-fire air closing, 0.6 % per minute"),
    "drift_o2": Adversary("drift", {O2: -0.0002}, note="O2 bias falling, 0.012 % per minute"),
    "high_nox": Adversary("constant", {**_group(SA, FAR), **_group(SOFA, -FAR), O2: FAR},
                          note="burner air open, over-fire air shut, O2 up"),
    "high_co": Adversary("constant", {**_group(SA, -FAR), **_group(SOFA, FAR), O2: -FAR, "feeder_a_bias_tph": FAR},
                         note="burner air shut, deep staging, O2 down, coal to the bottom level"),
    "low_o2": Adversary("constant", {O2: -FAR, **_group(SA, -FAR)}, note="O2 bias and burner air down"),
    "high_steam_temp": Adversary("constant", {O2: FAR, **_group(SOFA, FAR), "feeder_e_bias_tph": FAR},
                                 note="more excess air, burnout air and coal higher in the furnace"),
    "low_steam_temp": Adversary("constant", {O2: -FAR, **_group(SOFA, -FAR), "feeder_a_bias_tph": FAR},
                                note="less excess air, no burnout air, coal to the bottom level"),
    "high_exit_gas_temp": Adversary("constant", {O2: FAR, **_group(SOFA, FAR), **_group(SA, FAR)},
                                    note="as much air as allowed, burning late"),
}


def follower(path: Path, tag_map: TagMap, offsets: dict[str, float] | None = None,
             nan_above_ambient_c: float | None = None,
             training_envelope: dict[str, tuple[float, float]] | None = None) -> str:
    """Write the policy to `path`; return its sha256. `training_envelope` narrows the declared
    training range of some inputs (default: each input's physical range)."""
    mvs, inputs = _signals(tag_map)
    n, width = len(mvs), len(inputs)
    nodes, inits = _base(mvs, inputs, offsets or {})
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
    return _save(path, tag_map, mvs, inputs, nodes, inits, n, "test-follower", "hand-built follower (tests)",
                 training_envelope)


def adversary(path: Path, tag_map: TagMap, name: str, spec: Adversary | None = None) -> str:
    """Write the adversarial policy `spec` (default: ADVERSARIES[name]) to `path`; return its sha256."""
    spec = ADVERSARIES[name] if spec is None else spec
    mvs, inputs = _signals(tag_map)
    n, width = len(mvs), len(inputs)
    constant = {} if spec.shape == "drift" else spec.offsets
    nodes, inits = _base(mvs, inputs, constant if spec.shape in ("constant", "nan") else {})
    offsets = np.array([spec.offsets.get(m, 0.0) for m in mvs], np.float32)
    pick = np.zeros((width, 1), np.float32)
    pick[inputs.index("ai_heartbeat"), 0] = 1.0
    inits.append(numpy_helper.from_array(pick, "P"))
    if spec.shape == "constant":
        nodes.append(helper.make_node("Identity", ["raw"], ["action"]))
    elif spec.shape == "nan":
        inits.append(numpy_helper.from_array(np.full(n, np.nan, np.float32), "N"))
        nodes.append(helper.make_node("Add", ["raw", "N"], ["action"]))
    elif spec.shape == "drift":  # offset grows by `offsets` per heartbeat count
        inits.append(numpy_helper.from_array(offsets, "D"))
        nodes += [helper.make_node("MatMul", ["observation", "P"], ["count"]),
                  helper.make_node("Mul", ["count", "D"], ["drift"]),
                  helper.make_node("Add", ["raw", "drift"], ["action"])]
    elif spec.shape == "bang_bang":  # offsets x sign(sin(pi x count / half period))
        inits += [numpy_helper.from_array(offsets, "D"),
                  numpy_helper.from_array(np.array([2 * np.pi / spec.period_cycles], np.float32), "W2")]
        nodes += [helper.make_node("MatMul", ["observation", "P"], ["count"]),
                  helper.make_node("Mul", ["count", "W2"], ["phase"]),
                  helper.make_node("Sin", ["phase"], ["wave"]),
                  helper.make_node("Sign", ["wave"], ["switch"]),
                  helper.make_node("Mul", ["switch", "D"], ["swing"]),
                  helper.make_node("Add", ["raw", "swing"], ["action"])]
    else:
        raise ValueError(f"unknown adversary shape {spec.shape!r}")
    return _save(path, tag_map, mvs, inputs, nodes, inits, n, f"adversary-{name}",
                 f"hand-built adversary (tests): {spec.note}", None)


def _signals(tag_map: TagMap) -> tuple[list[str], list[str]]:
    mvs = list(tag_map.manipulated)
    inputs = [tag_map.manipulated[m].dcs_setpoint for m in mvs] + ["ambient_temp_c", "o2_economiser_pct",
                                                                   "ai_heartbeat"]
    return mvs, inputs


def _base(mvs: list[str], inputs: list[str], offsets: dict[str, float]) -> tuple[list, list]:
    """raw = each MV's DCS setpoint + its offset."""
    n, width = len(mvs), len(inputs)
    weights = np.zeros((width, n), np.float32)
    weights[np.arange(n), np.arange(n)] = 1.0
    bias = np.array([offsets.get(m, 0.0) for m in mvs], np.float32)
    nodes = [helper.make_node("MatMul", ["observation", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["raw"])]
    return nodes, [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")]


def _save(path: Path, tag_map: TagMap, mvs: list[str], inputs: list[str], nodes: list, inits: list, n: int,
          model_id: str, algorithm: str, training_envelope: dict[str, tuple[float, float]] | None) -> str:
    width = len(inputs)
    graph = helper.make_graph(
        nodes, model_id, [helper.make_tensor_value_info("observation", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    specs = [tag_map.signals[name] for name in inputs]
    contract = ModelContract(
        model_id=model_id, input_name="observation", input_signals=tuple(inputs), history_length=1,
        cycle_period_s=1.0, input_offset=(0.0,) * width, input_scale=(1.0,) * width,
        action_output="action", action_names=tuple(mvs),
        action_units=tuple(tag_map.signals[tag_map.manipulated[m].ai_setpoint].unit for m in mvs),
        output_offset=(0.0,) * n, output_scale=(1.0,) * n, ensemble_size=1, spread_output=None,
        training_envelope=tuple((training_envelope or {}).get(s.name, (s.lo, s.hi)) for s in specs),
        dataset_sha256="0" * 64,
        algorithm=algorithm, seed=0, created_utc="2026-01-01T00:00:00Z",
        code_commit="0" * 40)
    write_contract(model, contract)
    onnx.save_model(model, path)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
