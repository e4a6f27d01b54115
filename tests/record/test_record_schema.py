"""Decision-record schema: frozen fields, lossless encoding, validation naming the field, docs in step."""

import json
import math
import random
import struct
from pathlib import Path

import pytest

from boiler_ai.record import schema
from boiler_ai.record.schema import RecordError, decode, encode, validate
from boiler_ai.record.synthetic import synthetic_record

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"


def stamped(record: dict, seq: int = 7) -> dict:
    return {**record, "seq": seq, "log_dropped_count": 0, "publish_drop_count": 0}


@pytest.mark.parametrize("version", range(1, schema.SCHEMA_VERSION + 1))
def test_fields_of_every_released_version_are_unchanged(version):
    frozen = json.loads((DATA / f"decision_record.v{version}.fields.json").read_text())
    current = schema.flatten()
    removed = sorted(set(frozen) - set(current))
    assert not removed, f"fields of schema v{version} removed: {removed}"
    changed = {k: (frozen[k], current[k]) for k in frozen if frozen[k] != current[k]}
    assert not changed, f"fields of schema v{version} changed type (old, new): {changed}"


def test_adding_a_field_is_allowed_but_changing_one_is_caught(monkeypatch):
    frozen = json.loads((DATA / "decision_record.v1.fields.json").read_text())
    fields = dict(schema.RECORD.fields)
    monkeypatch.setitem(schema.RECORD.fields, "new_field", schema.Field(schema.Str(), "added later"))
    assert set(frozen) <= set(schema.flatten())
    monkeypatch.setattr(schema.RECORD, "fields", {**fields, "heartbeat": schema.Field(schema.Str(), "retyped")})
    assert schema.flatten()["heartbeat"] != frozen["heartbeat"]


def test_published_json_schema_is_the_generated_one():
    published = json.loads((ROOT / "docs" / f"decision_record.v{schema.SCHEMA_VERSION}.schema.json").read_text())
    assert published == schema.json_schema(), "regenerate: python -m boiler_ai.record.schema json-schema"


def test_reference_documents_every_field():
    text = (ROOT / "docs" / "DECISION_RECORD.md").read_text()
    missing = [path for path in schema.flatten() if not path.endswith(("[]", "*")) and f"`{path}`" not in text]
    assert not missing, f"docs/DECISION_RECORD.md does not describe {missing}"


def test_wire_form_passes_the_published_json_schema():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (dev tooling)")
    published = json.loads((ROOT / "docs" / "decision_record.v1.schema.json").read_text())
    rng = random.Random(3)
    for record in (synthetic_record(rng, cycle=0), synthetic_record(rng, cycle=1, nan_input=True,
                                                                    controller_state={"x": [math.inf]})):
        record["policy"]["spread"] = math.nan
        jsonschema.validate(json.loads(encode(stamped(record))), published)
    bad = json.loads(encode(stamped(synthetic_record(rng))))
    bad["mode"] = "manual"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, published)


def test_round_trip_is_exact_for_every_double_and_non_finite_value():
    rng = random.Random(11)
    record = stamped(synthetic_record(rng, nan_input=True))
    specials = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1 / 3, -math.inf]
    randoms = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(90)]
    record["inputs"]["value"][3:3 + len(specials)] = specials
    record["inputs"]["source_ts"][:90] = randoms
    record["policy"]["spread"] = math.inf
    record["inputs"]["held"] = {record["inputs"]["signals"][0]: -math.inf}
    record["controller_state"] = {"validator": {"o2": [math.nan, 1e-300, -math.inf]}, "label": "kept"}
    back = decode(encode(record))
    for key in ("value", "source_ts"):
        sent = [struct.pack("<d", v) for v in record["inputs"][key]]
        got = [struct.pack("<d", v) for v in back["inputs"][key]]
        assert got == sent, key  # bit for bit, NaN and -0.0 included
    assert back["inputs"]["status_code"] == record["inputs"]["status_code"]
    assert back["policy"]["spread"] == math.inf
    assert back["inputs"]["held"] == {record["inputs"]["signals"][0]: -math.inf}
    state = back["controller_state"]["validator"]["o2"]
    assert math.isnan(state[0]) and state[1] == 1e-300 and state[2] == -math.inf
    assert back["controller_state"]["label"] == "kept"
    assert back["wall_time"] == record["wall_time"] and back["read_time"] == record["read_time"]
    validate(back)


def test_wire_form_is_plain_json_with_reserved_strings_for_non_finite_scalars():
    record = stamped(synthetic_record(random.Random(1)))
    record["policy"]["spread"] = math.nan
    text = encode(record).decode("ascii")
    plain = json.loads(text)  # strict JSON: Python would accept NaN literals, so check for them too
    assert "NaN," not in text and "Infinity," not in text
    assert plain["policy"]["spread"] == "NaN"
    assert plain["inputs"]["signals"] == record["inputs"]["signals"]
    import base64
    raw = base64.b64decode(plain["inputs"]["value"])
    assert list(struct.unpack(f"<{len(raw) // 8}d", raw)) == record["inputs"]["value"]


def test_text_that_looks_like_a_marker_or_a_reserved_word_stays_text():
    record = stamped(synthetic_record(random.Random(2)))
    record["events"] = [{"type": "soft_disable", "reason": "\x00" + "0123456789abcdef:00", "detail": "NaN"}]
    record["read_error"] = "Infinity"
    back = decode(encode(record))
    assert back["events"] == record["events"]
    assert back["read_error"] == "Infinity"


def test_encode_leaves_the_callers_record_untouched():
    record = stamped(synthetic_record(random.Random(4)))
    before = json.dumps(record, sort_keys=True)
    encode(record)
    assert json.dumps(record, sort_keys=True) == before


def test_repeated_fields_follow_changes():
    """The encoder caches the fields that repeat every cycle; a change must still reach the wire."""
    rng = random.Random(5)
    record = stamped(synthetic_record(rng))
    assert decode(encode(record))["model"]["id"] == "bc-bootstrap"
    record["model"] = {**record["model"], "id": "sac-v2"}
    record["inputs"]["signals"][0] = "renamed_signal"
    assert decode(encode(record))["model"]["id"] == "sac-v2"
    assert decode(encode(record))["inputs"]["signals"][0] == "renamed_signal"


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.pop("mode"), "mode"),
    (lambda r: r.update(mode="manual"), "mode"),
    (lambda r: r.update(seq=-1), "seq"),
    (lambda r: r.update(wall_time=math.nan), "wall_time"),
    (lambda r: r["inputs"]["value"].pop(), "inputs.value"),
    (lambda r: r["inputs"]["status_code"].__setitem__(4, 2**32), "inputs.status_code[4]"),
    (lambda r: r["inputs"]["issue"].update(no_such_signal="stale"), "inputs.issue.no_such_signal"),
    (lambda r: r.update(requested=[1.0]), "requested"),
    (lambda r: r["events"].append({"type": "engaged", "reason": "requesting_ai_mode"}), "events[1].detail"),
    (lambda r: r["model"].update(sha256="ABC"), "model.sha256"),
    (lambda r: r["timings_us"].update(infer=1.5), "timings_us.infer"),
    (lambda r: r.update(typo_field=1), "typo_field"),
    (lambda r: r.update(controller_state={"x": object()}), "controller_state"),
    (lambda r: r.update(schema_version=2), "schema_version"),
])
def test_validate_names_the_offending_field(mutate, field):
    record = stamped(synthetic_record(random.Random(6), cycle=1))
    validate(record)
    mutate(record)
    with pytest.raises(RecordError) as info:
        validate(record)
    assert info.value.field == field


def test_validate_before_stamping_and_encode_errors_name_the_field():
    record = synthetic_record(random.Random(8))
    validate(record, stamped=False)
    with pytest.raises(RecordError) as info:
        validate(record)
    assert info.value.field == "seq"
    record = stamped(record)
    record["projected"] = [1.0, None]
    with pytest.raises(RecordError) as info:
        encode(record)
    assert info.value.field == "projected"
    del record["inputs"]
    with pytest.raises(RecordError) as info:
        encode(record)
    assert info.value.field == "inputs"


def test_decode_rejects_what_is_not_a_record():
    with pytest.raises(RecordError):
        decode(b"\x00\x01garbage")
    with pytest.raises(RecordError):
        decode(b"[1, 2]")
    with pytest.raises(RecordError) as info:
        decode(b'{"inputs": {"value": "not base64!"}}')
    assert info.value.field == "inputs.value"


def test_helpers_expand_the_packed_arrays():
    record = stamped(synthetic_record(random.Random(9), nan_input=True))
    by_signal = schema.inputs_by_signal(decode(encode(record)))
    first, absent = record["inputs"]["signals"][0], record["inputs"]["signals"][2]
    assert by_signal[first]["valid"] is False and by_signal[first]["used"] == 3.25
    assert by_signal[absent]["status_code"] == schema.ABSENT_STATUS and by_signal[absent]["used"] is None
    ok = record["inputs"]["signals"][5]
    assert by_signal[ok]["valid"] and by_signal[ok]["used"] == record["inputs"]["value"][5]
    assert schema.action_by_mv(record, "u_dcs") == dict(zip(record["mvs"], record["u_dcs"]))
    assert schema.action_by_mv({**record, "written": None}, "written") is None


def test_inputs_block_from_readings():
    from boiler_ai.control.cycle import inputs_of
    from boiler_ai.messages.plant import Reading

    block = inputs_of(["o2_pct", "co_ppm", "nox"], {"o2_pct": Reading(3.1, 0, 100.0),
                                                    "nox": Reading(math.nan, 0x80000000, 99.0)},
                      {"co_ppm": "missing", "nox": "bad_quality"}, {"nox": 310.0})
    assert block.value[0] == 3.1 and math.isnan(block.value[1]) and math.isnan(block.value[2])
    assert block.status_code == [0, schema.ABSENT_STATUS, 0x80000000]
    assert schema.action_list(["a", "b"], {"b": 2.0, "a": 1.0}) == [1.0, 2.0]
    assert schema.action_list(["a"], None) is None


def _variant(rng: random.Random, i: int) -> dict:
    """A record with a random shape: optional blocks null or not, odd text, any sizes."""
    texts = ["", "o2 \"trim\" \\ low", "NaN", "Infinity", "\x00\x01", "温度", "\u2028", "a" * 300]
    n, m = rng.randrange(0, 40), rng.randrange(0, 20)
    record = synthetic_record(rng, cycle=i, signals=[f"s{k}" for k in range(n)], mvs=[f"mv{k}" for k in range(m)],
                              nan_input=rng.random() < 0.3)
    for key in ("policy", "projection", "guard", "write", "requested", "projected", "written", "u_prev",
                "read_back"):
        if rng.random() < 0.3:
            record[key] = None
    record["events"] = [{"type": rng.choice(schema.EVENT_TYPES), "reason": rng.choice(texts),
                         "detail": rng.choice(texts)} for _ in range(rng.randrange(4))]
    if rng.random() < 0.5:
        record["transition"] = {"from": rng.choice(schema.MODES), "to": rng.choice(schema.MODES)}
    if n and rng.random() < 0.5:
        record["inputs"]["issue"] = {f"s{rng.randrange(n)}": rng.choice(texts)}
        record["inputs"]["held"] = {f"s{rng.randrange(n)}": rng.choice([1.5, math.nan, -math.inf, -0.0])}
    record["release_reason"] = rng.choice([None, *texts])
    record["read_error"] = rng.choice([None, *texts])
    if rng.random() < 0.3:
        record["controller_state"] = {"v": [rng.random(), math.nan], "t": rng.choice(texts), "n": None}
    return stamped(record, seq=i)


def test_round_trip_of_records_of_every_shape():
    rng = random.Random(12)
    for i in range(300):
        record = _variant(rng, i)
        wire = encode(record)
        json.loads(wire)  # valid JSON every time
        back = decode(wire)
        if record["controller_state"] is not None:  # the one documented transformation: "NaN" text in
            record["controller_state"]["t"] = schema.NON_FINITE.get(record["controller_state"]["t"],
                                                                   record["controller_state"]["t"])
        assert json.dumps(back, sort_keys=True) == json.dumps(record, sort_keys=True), i
