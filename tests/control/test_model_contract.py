"""The model contract in ONNX metadata_props: round trip, and a clear refusal of every bad key or file."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from rigs.contracts import INPUTS, linear_policy, sample_contract, save_policy

from boiler_ai.control.model_contract import (
    KEYS,
    ModelContract,
    ModelError,
    read_contract,
    write_contract,
)


def test_round_trip_through_metadata_and_file(tmp_path):
    contract = sample_contract()
    meta = contract.to_metadata()
    assert tuple(meta) == KEYS and all(isinstance(v, str) for v in meta.values())
    assert json.loads(meta["input_signals"]) == list(INPUTS)
    assert ModelContract.from_metadata(meta, "mem") == contract
    path = save_policy(tmp_path / "p.onnx", contract)
    assert read_contract(path) == contract
    assert contract.n_inputs == 3 and contract.n_actions == 15 and contract.input_width == 6


def test_write_contract_replaces_its_keys_and_keeps_foreign_ones():
    model = linear_policy(sample_contract())
    entry = model.metadata_props.add()
    entry.key, entry.value = "exporter_note", "kept"
    write_contract(model, sample_contract(model_id="first"))
    write_contract(model, sample_contract(model_id="second"))
    props = {p.key: p.value for p in model.metadata_props}
    assert len(model.metadata_props) == len(KEYS) + 1
    assert props["model_id"] == "second" and props["exporter_note"] == "kept"


def test_no_spread_output_for_a_single_model():
    contract = sample_contract(ensemble_size=1, spread_output=None)
    meta = contract.to_metadata()
    assert meta["spread_output"] == ""
    assert ModelContract.from_metadata(meta, "mem").spread_output is None


@pytest.mark.parametrize("key", KEYS)
def test_every_missing_key_is_named_with_the_file(key):
    meta = sample_contract().to_metadata()
    del meta[key]
    with pytest.raises(ModelError, match=rf"models/x\.onnx: {key}: required model-contract key is missing"):
        ModelContract.from_metadata(meta, "models/x.onnx")


GARBAGE = [
    ("contract_version", "2", "unsupported contract version"),
    ("model_id", "", "expected a non-empty string"),
    ("model_id", "bad id!", "not a valid name"),
    ("input_signals", "o2_economiser_pct", "not valid JSON"),
    ("input_signals", '{"a": 1}', "JSON list of strings"),
    ("input_signals", "[]", "empty list"),
    ("input_signals", '["o2_economiser_pct", "unit_load_mw", "unit_load_mw"]', "duplicate names: unit_load_mw"),
    ("history_length", "two", "expected an integer"),
    ("history_length", "0", "must be >= 1"),
    ("cycle_period_s", "nan", "positive finite"),
    ("cycle_period_s", "-1", "positive finite"),
    ("input_scaling", '{"offset": [0, 0, 0]}', 'exactly "offset" and "scale"'),
    ("input_scaling", '{"offset": [0, 0], "scale": [1, 1, 1]}', "offset: expected a list of 3 finite numbers"),
    ("input_scaling", '{"offset": [0, 0, 0], "scale": [1, 0, 1]}', "every scale must be a positive"),
    ("input_scaling", '{"offset": [0, 0, 0], "scale": [1, true, 1]}', "scale: expected a list of 3"),
    ("output_scaling", '{"offset": [0], "scale": [1]}', "expected a list of 15"),
    ("action_names", '["feeder_a_bias_tph"]', "output_scaling: offset: expected a list of 1 finite numbers"),
    ("action_type", "move", "must be one of absolute_setpoint"),
    ("action_units", '["t/h"]', "expected 15 entries"),
    ("ensemble_size", "0", "must be >= 1"),
    ("spread_output", "", "an ensemble of 3 must output its spread"),
    ("spread_output", "action", "must differ from action_output"),
    ("training_envelope", "[[0, 1], [0, 1]]", "3 [lo, hi] pairs"),
    ("training_envelope", "[[0, 1], [0, 1], [2, 1]]", "expected finite lo <= hi"),
    ("training_envelope", '[[0, 1], [0, 1], [0, "x"]]', "entry 2: expected a list of 2 finite numbers"),
    ("dataset_sha256", "abc", "64 lowercase hex digits"),
    ("seed", "-3", "must be >= 0"),
    ("seed", "1.5", "expected an integer"),
    ("created_utc", "yesterday", "not an ISO 8601 time"),
    ("created_utc", "2025-01-31T12:00:00+02:00", "must be UTC"),
    ("created_utc", "2025-01-31T12:00:00", "must be UTC"),
    ("code_commit", "main", "7-40 lowercase hex digits"),
]


@pytest.mark.parametrize(("key", "value", "message"), GARBAGE)
def test_garbage_values_are_refused_naming_the_key(key, value, message):
    meta = sample_contract().to_metadata()
    meta[key] = value
    with pytest.raises(ModelError) as info:
        ModelContract.from_metadata(meta, "m.onnx")
    assert str(info.value).startswith("m.onnx: ")
    assert message in str(info.value)
    assert info.value.field == (key if key != "action_names" else "output_scaling")  # the list that disagrees


def test_a_bad_contract_is_never_written():
    with pytest.raises(ModelError, match="output_scaling: every scale must be a positive finite number"):
        write_contract(linear_policy(sample_contract()), sample_contract(output_scale=(0.0,) * 15))


def test_unreadable_and_corrupt_files_name_the_file(tmp_path):
    good = save_policy(tmp_path / "good.onnx", sample_contract()).read_bytes()
    cases = {
        "missing.onnx": None,
        "empty.onnx": b"",
        "noise.onnx": bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)),
        "truncated.onnx": good[: len(good) // 2],
    }
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(ModelError) as info:
            read_contract(path)
        assert str(path) in str(info.value), name
        assert "Traceback" not in str(info.value)


def test_a_model_without_a_contract_is_refused(tmp_path):
    path = tmp_path / "bare.onnx"
    onnx.save_model(linear_policy(sample_contract()), path)
    with pytest.raises(ModelError, match=rf"{path}: contract_version: required model-contract key is missing"):
        read_contract(path)
