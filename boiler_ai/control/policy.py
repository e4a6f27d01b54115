"""The policy runner: one ONNX Runtime session, the model's own contract, a stacked history of inputs.

The runner refuses, at construction, any model that is not the pinned file, cannot be parsed, or does
not fit the unit (signals missing from the tag map, actions not exactly the unit's manipulated
variables, graph shapes that disagree with its contract). After that each cycle is `observe` then
`infer`, with every buffer preallocated. Pure: no clock, no threads of its own (ONNX Runtime is told
to use none either), so a replay of the same inputs gives the same actions bit for bit.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from boiler_ai.control.model_contract import ModelContract, ModelError, first_line
from boiler_ai.tagmap import TagMap

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Inference:
    action: list[float]  # absolute setpoints in engineering units, in the runner's MV order
    spread: list[float] | None  # ensemble std per action in engineering units; None without an ensemble
    out_of_envelope: list[str]  # inputs outside the training envelope (plus margin) anywhere in the history
    finite: bool  # False when any action or spread is NaN/inf: the cycle must release


def session_options() -> ort.SessionOptions:
    """Single-threaded, sequential, no spinning: same latency as the defaults here, half the CPU, no
    millisecond outliers from threads waking (measured on the reference unit's policy)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3  # warnings about unused initialisers are noise in a daemon's journal
    return opts


SPAN_FLOOR = 0.2  # training spans count as at least this fraction of the physical range


class PolicyRunner:
    def __init__(self, model_path: str | Path, *, tag_map: TagMap, expected_sha256: str,
                 mv_names: Sequence[str], envelope_margin: float = 0.05, cycle_period_s: float | None = None,
                 cycle_period_from: str = "the daemon config"):
        """`mv_names`: the order of the returned actions (the tag map's manipulated variables, in any order).
        `cycle_period_s`: the period the runner will be stepped at (set in `cycle_period_from`); a model
        whose history was built at another period is refused. None: not compared (offline tools).
        `envelope_margin`: tolerance outside the training envelope, as a fraction of each input's
        training span, that span taken as at least a fifth of the signal's physical range (tag map): a
        signal the DCS held tight in training (main steam temperature within a few degC, a bias always 0)
        would otherwise flag every tenth of a degree the AI lets it move."""
        path = Path(model_path)
        self.path = path
        mv_names = list(mv_names)
        if sorted(mv_names) != sorted(tag_map.manipulated):
            raise ValueError(f"mv_names must be the tag map's manipulated variables {sorted(tag_map.manipulated)}, "
                             f"got {mv_names}")
        if not (math.isfinite(envelope_margin) and envelope_margin >= 0):
            raise ValueError(f"envelope_margin must be a finite number >= 0, got {envelope_margin}")
        if not _SHA256.fullmatch(expected_sha256 or ""):
            raise ModelError(path, "sha256",
                             f"the pinned sha256 must be 64 lowercase hex digits, got {expected_sha256!r}")

        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(path, "", f"cannot read model file ({exc.strerror or exc})") from exc
        # Hash the very bytes the session is built from: no window between check and load.
        self.sha256 = hashlib.sha256(data).hexdigest()
        if self.sha256 != expected_sha256:
            raise ModelError(path, "sha256", f"file sha256 {self.sha256} does not match the pinned {expected_sha256}")
        try:
            session = ort.InferenceSession(data, sess_options=session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own Exception subclasses (InvalidProtobuf, Fail, InvalidGraph...)
            raise ModelError(path, "", f"not a loadable ONNX model ({type(exc).__name__}: {first_line(exc)})") from None
        contract = ModelContract.from_metadata(dict(session.get_modelmeta().custom_metadata_map), path)
        _check_fit(path, contract, session, tag_map)
        if cycle_period_s is not None and not math.isclose(contract.cycle_period_s, cycle_period_s, rel_tol=1e-9):
            raise ModelError(path, "cycle_period_s",
                             f"the model's history is {contract.cycle_period_s:g} s per cycle, but {cycle_period_from} "
                             f"runs {cycle_period_s:g} s cycles (its cycle_period_s): retrain or change the period")
        self.contract = contract
        self.mv_names = tuple(mv_names)
        self._session = session

        n, h = contract.n_inputs, contract.history_length
        self._x = np.zeros((1, n * h), dtype=np.float32)  # the model input, newest cycle in the last block
        self._window = self._x.reshape(h, n)  # a view: rows are cycles, oldest first
        self._newest = self._window[h - 1]
        self._offset = np.asarray(contract.input_offset, dtype=np.float64)
        self._scale = np.asarray(contract.input_scale, dtype=np.float64)
        # The per-cycle arithmetic runs on Python floats (the same IEEE float64 operations numpy does):
        # on arrays this small each numpy call costs more than the work it does.
        self._offsets, self._scales = self._offset.tolist(), self._scale.tolist()
        self._filled = 0
        names = contract.input_signals
        self._get = operator.itemgetter(*names) if n > 1 else (lambda v, k=names[0]: (v[k],))
        # Bound once to preallocated buffers (ONNX Runtime reads and writes the numpy memory in place):
        # about 3 us less per call than session.run with a feed dict, measured here.
        self._action_out = np.zeros((1, contract.n_actions), dtype=np.float32)
        self._spread_out = np.zeros((1, contract.n_actions), dtype=np.float32) if contract.spread_output else None
        self._binding = session.io_binding()
        buffers = (self._x, self._action_out, self._spread_out)
        self._bound = [ort.OrtValue.ortvalue_from_numpy(a) for a in buffers if a is not None]
        self._binding.bind_ortvalue_input(contract.input_name, self._bound[0])
        self._binding.bind_ortvalue_output(contract.action_output, self._bound[1])
        if contract.spread_output:
            self._binding.bind_ortvalue_output(contract.spread_output, self._bound[2])

        # Envelope bounds pushed through the same scaling as the inputs, so the check runs on the
        # model's own (float32) input values with no per-cycle unscaling; rounding keeps the order, so a
        # value inside [lo, hi] is never flagged. Each cycle checks only its own row, as it enters the
        # history; the answer is every input flagged in any row still in the history.
        lo = np.array([p[0] for p in contract.training_envelope])
        hi = np.array([p[1] for p in contract.training_envelope])
        physical = np.array([tag_map.signals[n].hi - tag_map.signals[n].lo for n in contract.input_signals])
        margin = envelope_margin * np.maximum(hi - lo, SPAN_FLOOR * physical)
        self._env_lo = ((lo - margin - self._offset) / self._scale).astype(np.float32).tolist()
        self._env_hi = ((hi + margin - self._offset) / self._scale).astype(np.float32).tolist()
        self._outside: deque[list[int]] = deque(maxlen=h)  # per history row, oldest first

        order = [contract.action_names.index(mv) for mv in mv_names]
        # per returned action: (its index in the model's output, scale, offset)
        self._unscaling = [(k, float(contract.output_scale[k]), float(contract.output_offset[k])) for k in order]

    @property
    def input_signals(self) -> tuple[str, ...]:
        return self.contract.input_signals

    @property
    def model_id(self) -> str:
        return self.contract.model_id

    @property
    def ready(self) -> bool:
        """True once `history_length` observations have been stacked."""
        return self._filled == self.contract.history_length

    def reset(self) -> None:
        self._x.fill(0.0)
        self._filled = 0
        self._outside.clear()

    def observe(self, values: Mapping[str, float]) -> None:
        """Append this cycle's validated values. A model input absent from `values` enters as NaN: it
        shows in `out_of_envelope` and makes the answer non-finite until it leaves the history."""
        try:
            raw = self._get(values)
        except KeyError:
            raw = [values.get(name, math.nan) for name in self.contract.input_signals]
        window = self._x[0]
        n = self.contract.n_inputs
        window[:-n] = window[n:]  # shift one cycle older; numpy handles the overlap
        # scaled in float64, rounded once to float32 as it enters the model's input
        # (an int or bool input converts exactly as float() would)
        self._newest[:] = [(v - offset) / scale for v, offset, scale in zip(raw, self._offsets, self._scales)]
        self._outside.append(self._outside_training(self._newest.tolist()))
        self._filled = min(self._filled + 1, self.contract.history_length)

    def _outside_training(self, row: list[float]) -> list[int]:
        """Indices of the inputs of one history row outside the training envelope (NaN included)."""
        return [i for i, (v, lo, hi) in enumerate(zip(row, self._env_lo, self._env_hi)) if not lo <= v <= hi]

    def infer(self) -> Inference:
        if not self.ready:
            raise RuntimeError(f"{self.path}: history not full "
                               f"({self._filled} of {self.contract.history_length} cycles observed)")
        self._session.run_with_iobinding(self._binding)
        # float32 outputs widened exactly to float64, then unscaled: as numpy would, on Python floats
        out = self._action_out[0].tolist()
        action = [out[k] * scale + offset for k, scale, offset in self._unscaling]
        finite = all(map(math.isfinite, action))
        spread = None
        if self._spread_out is not None:
            out = self._spread_out[0].tolist()
            spread = [out[k] * scale for k, scale, _ in self._unscaling]
            finite = finite and all(map(math.isfinite, spread))
        if not any(self._outside):
            return Inference(action, spread, [], finite)
        names = self.contract.input_signals
        return Inference(action, spread, [names[i] for i in sorted(set().union(*self._outside))], finite)

    def state(self) -> dict[str, Any]:
        """The history as plain data (scaled float32 values, exact as Python floats), oldest cycle first."""
        rows = self._window[self.contract.history_length - self._filled:]
        return {"model_sha256": self.sha256, "history": rows.tolist()}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Resume from `state()`: the next `infer` is bit-identical to the one the saved runner would give."""
        h, n = self.contract.history_length, self.contract.n_inputs
        if state.get("model_sha256") != self.sha256:
            raise ValueError(f"policy state is for model {state.get('model_sha256')!r}, this runner has {self.sha256}")
        rows = state.get("history")
        if (not isinstance(rows, list) or len(rows) > h
                or any(not isinstance(r, list) or len(r) != n for r in rows)):
            raise ValueError(f"policy state history must be a list of at most {h} rows of {n} numbers")
        self.reset()
        if rows:
            self._window[h - len(rows):] = np.asarray(rows, dtype=np.float64)
            self._outside.extend(self._outside_training(row) for row in self._window[h - len(rows):].tolist())
        self._filled = len(rows)


def _check_fit(path: Path, contract: ModelContract, session: ort.InferenceSession, tag_map: TagMap) -> None:
    """Refuse a model that does not fit this unit or whose graph disagrees with its own contract."""
    unknown = [s for s in contract.input_signals if s not in tag_map.signals]
    if unknown:
        raise ModelError(path, "input_signals", f"not in the tag map {tag_map.source}: {', '.join(unknown)}")
    unreadable = [s for s in contract.input_signals if not tag_map.signals[s].readable]
    if unreadable:
        raise ModelError(path, "input_signals",
                         f"not readable in the tag map {tag_map.source}: {', '.join(unreadable)}")
    if set(contract.action_names) != set(tag_map.manipulated):
        missing = sorted(set(tag_map.manipulated) - set(contract.action_names))
        extra = sorted(set(contract.action_names) - set(tag_map.manipulated))
        raise ModelError(path, "action_names", "must be exactly the manipulated variables of the tag map "
                         f"{tag_map.source}; missing: {', '.join(missing) or 'none'}; "
                         f"not manipulated there: {', '.join(extra) or 'none'}")

    wrong_units = [(mv, unit, tag_map.manipulated[mv].ai_setpoint)
                   for mv, unit in zip(contract.action_names, contract.action_units)
                   if unit.strip() != tag_map.signals[tag_map.manipulated[mv].ai_setpoint].unit.strip()]
    if wrong_units:
        mv, unit, tag = wrong_units[0]
        more = f" (and {len(wrong_units) - 1} more)" if len(wrong_units) > 1 else ""
        raise ModelError(path, "action_units", f"{mv} is in {unit!r}, but the tag map {tag_map.source} writes {tag} "
                         f"in {tag_map.signals[tag].unit!r}{more}: the model was trained for other units")

    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != contract.input_name:
        raise ModelError(path, "input_name", f"graph inputs are {[i.name for i in inputs]}, "
                         f"the contract declares one input {contract.input_name!r}")
    _check_tensor(path, "input_name", inputs[0], contract.input_width,
                  f"n_inputs * history_length = {contract.n_inputs} * {contract.history_length}")
    outputs = {o.name: o for o in session.get_outputs()}
    for key, name in (("action_output", contract.action_output), ("spread_output", contract.spread_output)):
        if name is None:
            continue
        if name not in outputs:
            raise ModelError(path, key, f"graph has no output {name!r} (outputs: {', '.join(outputs)})")
        _check_tensor(path, key, outputs[name], contract.n_actions, "n_actions")


def _check_tensor(path: Path, key: str, arg: Any, width: int, what: str) -> None:
    """A float32 tensor [batch, width]: batch 1 or symbolic, width as the contract says."""
    shape = arg.shape
    if arg.type != "tensor(float)":
        raise ModelError(path, key, f"graph tensor {arg.name!r} is {arg.type}, expected tensor(float)")
    batch_ok = len(shape) == 2 and (shape[0] == 1 or not isinstance(shape[0], int))
    if not batch_ok or shape[1] != width:
        raise ModelError(path, key,
                         f"graph tensor {arg.name!r} has shape {shape}, the contract needs [batch, {width}] ({what})")

