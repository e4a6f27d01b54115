"""The model contract: what an ONNX policy promises the runtime, carried in its own `metadata_props`.

Every key is a string; structured values are JSON. The runtime reads everything it needs from here
(signal order, history length, scaling, action names and units, training envelope, ensemble spread),
so a model cannot be run with a wrong idea of its inputs. Keys (contract_version "1"):

  contract_version   "1"
  model_id           e.g. "bootstrap-bc-v1"
  input_name         name of the single ONNX input, a float32 tensor [batch, history * n_inputs]
  input_signals      JSON list of logical tag-map names, in model order
  history_length     cycles stacked, oldest first: element t * n_inputs + i is signal i, t cycles
                     after the oldest (the newest cycle is the last block)
  cycle_period_s     the cycle period the history was built at
  input_scaling      JSON {"offset": [...], "scale": [...]}, per input signal: model sees (x - offset) / scale
  action_output      name of the ONNX output holding the action, float32 [batch, n_actions]
  action_names       JSON list of manipulated-variable names (tag map `manipulated`), in output order
  action_type        "absolute_setpoint": outputs are setpoints in engineering units, not moves
  action_units       JSON list, one engineering unit per action
  output_scaling     JSON {"offset": [...], "scale": [...]}, per action: setpoint = y * scale + offset
  ensemble_size      members averaged into the action (1 = no ensemble)
  spread_output      name of the ONNX output holding the ensemble std per action (same scaling as
                     the action, without the offset), or "" when the model has no spread
  training_envelope  JSON list of [lo, hi] per input signal, the range seen in training
  dataset_sha256     sha256 of the training dataset
  algorithm          free text, e.g. "behaviour cloning, MLP ensemble 5x(2x64)"
  seed               integer
  created_utc        ISO 8601 UTC time, e.g. "2025-01-31T12:00:00Z"
  code_commit        git commit of the training code (7-40 hex digits, optional "-dirty")
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from boiler_ai.strict import ConfigError

CONTRACT_VERSION = "1"
ACTION_TYPES = ("absolute_setpoint",)
KEYS = (
    "contract_version", "model_id", "input_name", "input_signals", "history_length", "cycle_period_s",
    "input_scaling", "action_output", "action_names", "action_type", "action_units", "output_scaling",
    "ensemble_size", "spread_output", "training_envelope", "dataset_sha256", "algorithm", "seed",
    "created_utc", "code_commit",
)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{7,40}(-dirty)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]*")


class ModelError(ConfigError):
    """A model file cannot be run: unreadable, not the pinned one, or its contract is wrong or unfit.

    Raised as `<file>: <key>: <message>`, like any other configuration error.
    """


@dataclass(frozen=True)
class ModelContract:
    model_id: str
    input_name: str
    input_signals: tuple[str, ...]
    history_length: int
    cycle_period_s: float
    input_offset: tuple[float, ...]
    input_scale: tuple[float, ...]
    action_output: str
    action_names: tuple[str, ...]
    action_units: tuple[str, ...]
    output_offset: tuple[float, ...]
    output_scale: tuple[float, ...]
    ensemble_size: int
    spread_output: str | None
    training_envelope: tuple[tuple[float, float], ...]
    dataset_sha256: str
    algorithm: str
    seed: int
    created_utc: str
    code_commit: str
    action_type: str = "absolute_setpoint"
    contract_version: str = CONTRACT_VERSION

    @property
    def n_inputs(self) -> int:
        return len(self.input_signals)

    @property
    def n_actions(self) -> int:
        return len(self.action_names)

    @property
    def input_width(self) -> int:
        return self.n_inputs * self.history_length

    def to_metadata(self) -> dict[str, str]:
        """The `metadata_props` entries, every value a string. Checked first: never write a bad contract."""
        self.validate("<contract being written>")
        meta = {
            "contract_version": self.contract_version,
            "model_id": self.model_id,
            "input_name": self.input_name,
            "input_signals": json.dumps(list(self.input_signals)),
            "history_length": str(self.history_length),
            "cycle_period_s": repr(self.cycle_period_s),
            "input_scaling": json.dumps({"offset": list(self.input_offset), "scale": list(self.input_scale)}),
            "action_output": self.action_output,
            "action_names": json.dumps(list(self.action_names)),
            "action_type": self.action_type,
            "action_units": json.dumps(list(self.action_units)),
            "output_scaling": json.dumps({"offset": list(self.output_offset), "scale": list(self.output_scale)}),
            "ensemble_size": str(self.ensemble_size),
            "spread_output": self.spread_output or "",
            "training_envelope": json.dumps([list(p) for p in self.training_envelope]),
            "dataset_sha256": self.dataset_sha256,
            "algorithm": self.algorithm,
            "seed": str(self.seed),
            "created_utc": self.created_utc,
            "code_commit": self.code_commit,
        }
        assert tuple(meta) == KEYS
        return meta

    @classmethod
    def from_metadata(cls, props: dict[str, str], source: str | Path) -> ModelContract:
        """Parse and validate the contract from `metadata_props`; any missing or garbage key -> ModelError."""
        p = _Props(source, props)
        version = p.text("contract_version")
        if version != CONTRACT_VERSION:
            raise p.error("contract_version",
                          f"unsupported contract version {version!r} (this runtime reads {CONTRACT_VERSION!r})")
        signals = p.names("input_signals")
        actions = p.names("action_names")
        in_offset, in_scale = p.scaling("input_scaling", len(signals))
        out_offset, out_scale = p.scaling("output_scaling", len(actions))
        spread = p.text("spread_output", allow_empty=True)
        contract = cls(
            model_id=p.text("model_id"),
            input_name=p.text("input_name"),
            input_signals=signals,
            history_length=p.integer("history_length"),
            cycle_period_s=p.number("cycle_period_s"),
            input_offset=in_offset,
            input_scale=in_scale,
            action_output=p.text("action_output"),
            action_names=actions,
            action_type=p.text("action_type"),
            action_units=p.units("action_units", len(actions)),
            output_offset=out_offset,
            output_scale=out_scale,
            ensemble_size=p.integer("ensemble_size"),
            spread_output=spread or None,
            training_envelope=p.envelope("training_envelope", len(signals)),
            dataset_sha256=p.text("dataset_sha256"),
            algorithm=p.text("algorithm"),
            seed=p.integer("seed"),
            created_utc=p.text("created_utc"),
            code_commit=p.text("code_commit"),
            contract_version=version,
        )
        contract.validate(source)
        return contract

    def validate(self, source: str | Path) -> None:
        """Cross-field rules (the per-key ones are enforced by parsing)."""

        def fail(key: str, msg: str) -> ModelError:
            return ModelError(source, key, msg)

        for key, names in (("input_signals", self.input_signals), ("action_names", self.action_names)):
            if not names:
                raise fail(key, "empty list")
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise fail(key, f"duplicate names: {', '.join(dup)}")
        if self.history_length < 1:
            raise fail("history_length", f"must be >= 1, got {self.history_length}")
        if not (math.isfinite(self.cycle_period_s) and self.cycle_period_s > 0):
            raise fail("cycle_period_s", f"must be a positive finite number, got {self.cycle_period_s}")
        for key, n, lists in (
            ("input_scaling", self.n_inputs, (self.input_offset, self.input_scale)),
            ("output_scaling", self.n_actions, (self.output_offset, self.output_scale)),
        ):
            if any(len(v) != n for v in lists):
                raise fail(key, f"offset and scale need {n} entries each")
            if not all(math.isfinite(v) for v in lists[0]):
                raise fail(key, "offset has a non-finite entry")
            if not all(math.isfinite(v) and v > 0 for v in lists[1]):
                raise fail(key, "every scale must be a positive finite number")
        if len(self.action_units) != self.n_actions:
            raise fail("action_units", f"need {self.n_actions} entries, got {len(self.action_units)}")
        if len(self.training_envelope) != self.n_inputs:
            raise fail("training_envelope", f"need {self.n_inputs} [lo, hi] pairs, got {len(self.training_envelope)}")
        for name, (lo, hi) in zip(self.input_signals, self.training_envelope):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise fail("training_envelope", f"{name}: expected finite lo <= hi, got [{lo}, {hi}]")
        if self.action_type not in ACTION_TYPES:
            raise fail("action_type", f"must be one of {', '.join(ACTION_TYPES)}")
        if self.ensemble_size < 1:
            raise fail("ensemble_size", f"must be >= 1, got {self.ensemble_size}")
        if self.ensemble_size > 1 and not self.spread_output:
            raise fail("spread_output", f"an ensemble of {self.ensemble_size} must output its spread")
        if self.spread_output == self.action_output:
            raise fail("spread_output", "must differ from action_output")
        for key, value in (("model_id", self.model_id), ("input_name", self.input_name),
                           ("action_output", self.action_output), ("spread_output", self.spread_output or "x")):
            if not _NAME.fullmatch(value):
                raise fail(key, f"not a valid name: {value!r}")
        if not _SHA256.fullmatch(self.dataset_sha256):
            raise fail("dataset_sha256", "expected 64 lowercase hex digits")
        if not _COMMIT.fullmatch(self.code_commit):
            raise fail("code_commit", "expected 7-40 lowercase hex digits, optionally '-dirty'")
        if self.seed < 0:
            raise fail("seed", "must be >= 0")
        _parse_utc(self.created_utc, lambda msg: fail("created_utc", msg))


def read_contract(path: str | Path) -> ModelContract:
    """The contract of the ONNX file at `path`. Unreadable, corrupt or contract-less files -> ModelError."""
    # The edge reads metadata through ONNX Runtime; onnx and protobuf are for tools and training.
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(path, "", f"cannot read model file ({exc.strerror or exc})") from exc
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError) as exc:  # never a raw protobuf traceback: name the file
        raise ModelError(path, "", f"not a valid ONNX model ({type(exc).__name__}: {first_line(exc)})") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(path, "", "not a valid ONNX model (no graph)")
    return ModelContract.from_metadata({p.key: p.value for p in model.metadata_props}, path)


def write_contract(onnx_model: Any, contract: ModelContract) -> None:
    """Set the contract in an `onnx.ModelProto`'s metadata_props, replacing any earlier contract keys."""
    meta = contract.to_metadata()
    keep = [(p.key, p.value) for p in onnx_model.metadata_props if p.key not in meta]
    del onnx_model.metadata_props[:]
    for key, value in [*keep, *meta.items()]:
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no detail"


def _parse_utc(text: str, fail) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"not an ISO 8601 time: {text!r}") from None
    if when.utcoffset() != timedelta(0):
        raise fail(f"must be UTC (suffix Z or +00:00), got {text!r}")
    return when


class _Props:
    """Typed, strict reading of metadata_props, naming the file and the key on every error."""

    def __init__(self, source: str | Path, props: dict[str, str]):
        self.source, self.props = source, props

    def error(self, key: str, message: str) -> ModelError:
        return ModelError(self.source, key, message)

    def text(self, key: str, *, allow_empty: bool = False) -> str:
        if key not in self.props:
            raise self.error(key, "required model-contract key is missing from metadata_props")
        value = self.props[key]
        if not isinstance(value, str) or (not value and not allow_empty):
            raise self.error(key, f"expected a non-empty string, got {value!r}")
        return value

    def json(self, key: str) -> Any:
        raw = self.text(key)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise self.error(key, f"not valid JSON ({exc.msg} at position {exc.pos})") from None

    def integer(self, key: str) -> int:
        raw = self.text(key)
        if not re.fullmatch(r"-?[0-9]+", raw):
            raise self.error(key, f"expected an integer, got {raw!r}")
        return int(raw)

    def number(self, key: str) -> float:
        raw = self.text(key)
        try:
            return float(raw)
        except ValueError:
            raise self.error(key, f"expected a number, got {raw!r}") from None

    def _strings(self, key: str, n: int | None) -> tuple[str, ...]:
        value = self.json(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "expected a JSON list of strings")
        if n is not None and len(value) != n:
            raise self.error(key, f"expected {n} entries, got {len(value)}")
        return tuple(value)

    def names(self, key: str) -> tuple[str, ...]:
        names = self._strings(key, None)
        if not names:
            raise self.error(key, "empty list")
        if not all(names):
            raise self.error(key, "empty name in list")
        return names

    def units(self, key: str, n: int) -> tuple[str, ...]:
        return self._strings(key, n)

    def _numbers(self, key: str, value: Any, n: int, what: str) -> tuple[float, ...]:
        if (not isinstance(value, list) or len(value) != n
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value)):
            raise self.error(key, f"{what}: expected a list of {n} finite numbers")
        return tuple(float(v) for v in value)

    def scaling(self, key: str, n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        value = self.json(key)
        if not isinstance(value, dict) or set(value) != {"offset", "scale"}:
            raise self.error(key, 'expected a JSON object with exactly "offset" and "scale"')
        return self._numbers(key, value["offset"], n, "offset"), self._numbers(key, value["scale"], n, "scale")

    def envelope(self, key: str, n: int) -> tuple[tuple[float, float], ...]:
        value = self.json(key)
        if not isinstance(value, list) or len(value) != n:
            raise self.error(key, f"expected a JSON list of {n} [lo, hi] pairs")
        return tuple(self._numbers(key, pair, 2, f"entry {i}") for i, pair in enumerate(value))  # type: ignore[misc]
