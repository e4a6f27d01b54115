"""The messages against the record schema: field by field, and every listed value emitted and documented."""

from __future__ import annotations

import ast
import math
import random
from pathlib import Path

import pytest

from boiler_ai.messages import Event, EventType, InputIssue, Mode, ProjectionStatus, Reason, Record
from boiler_ai.messages.wire import from_wire
from boiler_ai.record import schema
from boiler_ai.record.schema import decode, encode, validate
from boiler_ai.record.synthetic import synthetic_record

ROOT = Path(__file__).resolve().parents[2]


def full_record(rng: random.Random) -> dict:
    """A stamped record dict with every optional block present, so every field is compared."""
    record = synthetic_record(rng, cycle=0, nan_input=True, controller_state={"cycle": 3, "x": [math.inf]})
    record.update(seq=5, log_dropped_count=1, publish_drop_count=2, release_reason="guard_block",
                  transition={"from": "active", "to": "releasing"},
                  events=[{"type": "immediate_disable", "reason": "guard_block", "detail": "sa_damper_c_pct"},
                          {"type": "released", "reason": "guard_block", "detail": ""}])
    record["guard"] = {"ok": False, "violations": ["sa_damper_c_pct: rate"]}
    return record


def test_record_as_dict_is_the_generated_schema_field_by_field():
    wire = full_record(random.Random(4))
    message = from_wire(Record, wire)
    back = message.as_dict()
    validate(back)  # every field of the schema present, none it does not know, each of its type
    assert back.keys() == schema.RECORD.fields.keys()
    derived = {"schema_version", "projection"}  # solve_us is the project stage's time, by definition
    assert {k: v for k, v in back.items() if k not in derived} == {k: v for k, v in wire.items() if k not in derived}
    assert back["projection"] == {**wire["projection"], "solve_us": wire["timings_us"]["project"]}
    assert decode(encode(back))["inputs"]["status_code"] == wire["inputs"]["status_code"]


def test_the_published_schema_lists_exactly_the_message_enums():
    props = schema.json_schema()["properties"]
    event = props["events"]["items"]["properties"]
    assert event["type"]["enum"] == [t.value for t in EventType]
    assert event["reason"]["enum"] == [r.value for r in Reason]
    assert props["release_reason"]["anyOf"][0]["enum"] == [r.value for r in Reason]
    assert props["mode"]["enum"] == [m.value for m in Mode]
    assert props["inputs"]["properties"]["issue"]["additionalProperties"]["enum"] == [i.value for i in InputIssue]
    projection = props["projection"]["anyOf"][0]["properties"]
    assert projection["status"]["enum"] == [s.value for s in ProjectionStatus]


def test_an_event_outside_the_table_cannot_be_made():
    with pytest.raises(ValueError):
        Event(EventType.NO_ENTRY, "not_a_reason_anyone_documented")
    assert Event("no_entry", "ai_enable_off").reason is Reason.AI_ENABLE_OFF


def _used_names() -> tuple[set[str], set[str]]:
    """`Enum.MEMBER` attributes and string constants in boiler_ai/ outside the messages room and the code table
    (status_codes.py names every reason, whether raised or not)."""
    attributes, strings = set(), set()
    for path in (ROOT / "boiler_ai").rglob("*.py"):
        if path.relative_to(ROOT / "boiler_ai").parts[0] in ("messages", "status_codes.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                attributes.add(f"{node.value.id}.{node.attr}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    return attributes, strings


@pytest.mark.parametrize("enum", [Reason, EventType, ProjectionStatus, Mode, InputIssue])
def test_every_listed_value_is_raised_somewhere_in_the_code(enum):
    attributes, strings = _used_names()
    unused = [m.value for m in enum if f"{enum.__name__}.{m.name}" not in attributes and m.value not in strings]
    assert not unused, f"{enum.__name__} lists values no code emits: {unused}"


def test_the_operator_has_a_code_and_text_for_every_reason():
    from boiler_ai import status_codes

    missing = [r.value for r in Reason if r.value not in status_codes.BY_NAME]
    assert not missing, f"boiler_ai/status_codes.py has no AI_REASON code for {missing}"
    assert list(status_codes.MODE_CODES) == [m.value for m in Mode]


def test_the_reference_documents_every_reason_and_projection_status():
    text = (ROOT / "docs" / "DECISION_RECORD.md").read_text()
    missing = [v.value for enum in (Reason, EventType, ProjectionStatus, Mode, InputIssue) for v in enum
               if f"`{v.value}`" not in text]
    assert not missing, f"docs/DECISION_RECORD.md does not name {missing}"
    for never_emitted in ("optimal", "infeasible_hold", "infeasible_release"):
        assert f"`{never_emitted}`" not in text
