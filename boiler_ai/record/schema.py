"""The decision record: one per control cycle, versioned, documented in docs/DECISION_RECORD.md.

The record is a message (boiler_ai.messages.Record); this schema is generated from its types, and
`Record.as_dict()` is its in-memory form. `encode` turns that dict into the wire form: one UTF-8
JSON object, the same bytes in the durable log, on the PUB socket, from the catch-up service and in
the historian's database. Two rules make the wire form exact and readable anywhere:

- Bulk numbers (per-input values and timestamps, per-MV actions) are packed arrays: base64 of
  little-endian IEEE-754 float64 (or uint32 for StatusCodes). NaN and inf survive bit for bit, and
  packing is ~20x faster than printing floats, which the throughput budget needs (measured: printing
  one float costs ~0.4 us here, and a record carries 400+ of them).
- A scalar number that is not finite is written as the string "NaN", "Infinity" or "-Infinity"
  (plain JSON has no such numbers). Finite floats are written in the shortest form that round-trips exactly.

Fields are never changed or removed, only added (a new version): tests/data holds the frozen v1 field
list and a test compares it with this module; docs/decision_record.v1.schema.json is `json_schema()`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import math
import struct
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from boiler_ai import messages
from boiler_ai.messages import ABSENT_STATUS, SCHEMA_VERSION, STAGES, wire  # noqa: F401 - the record room's names

MODES = tuple(m.value for m in messages.Mode)
EVENT_TYPES = tuple(t.value for t in messages.EventType)
REASONS = tuple(r.value for r in messages.Reason)
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class RecordError(ValueError):
    """A record does not match the schema. `field` is the dotted path of the offending field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"decision record field {field or '<record>'}: {message}")


# ---------------------------------------------------------------------------------------------
# Types. Each knows its signature (frozen in tests/data), how to check an in-memory value, and its
# JSON Schema on the wire.


class Type:
    sig = ""
    nullable = False

    def check(self, value: Any, path: str) -> None:
        raise NotImplementedError

    def wire_schema(self) -> dict:
        raise NotImplementedError

    def children(self) -> Iterator[tuple[str, Type]]:
        return iter(())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Num(Type):
    def __init__(self, *, finite: bool = False):
        self.finite = finite
        self.sig = "finite_number" if finite else "number"

    def check(self, value, path):
        if not _is_number(value):
            raise RecordError(path, f"expected a number, got {value!r}")
        if self.finite and not math.isfinite(value):
            raise RecordError(path, f"must be finite, got {value!r}")

    def wire_schema(self):
        if self.finite:
            return {"type": "number"}
        return {"oneOf": [{"type": "number"}, {"enum": list(NON_FINITE)}]}


class Int(Type):
    sig = "uint"

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RecordError(path, f"expected an integer >= 0, got {value!r}")

    def wire_schema(self):
        return {"type": "integer", "minimum": 0}


class Str(Type):
    sig = "string"

    def check(self, value, path):
        if not isinstance(value, str):
            raise RecordError(path, f"expected a string, got {value!r}")

    def wire_schema(self):
        return {"type": "string"}


class Hex64(Str):
    sig = "sha256_hex"

    def check(self, value, path):
        if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
            raise RecordError(path, f"expected 64 lowercase hex digits, got {value!r}")

    def wire_schema(self):
        return {"type": "string", "pattern": "^[0-9a-f]{64}$"}


class Enum(Type):
    def __init__(self, values: Sequence[str]):
        self.values = tuple(values)
        self.sig = "enum(" + "|".join(self.values) + ")"

    def check(self, value, path):
        if value not in self.values:
            raise RecordError(path, f"must be one of {', '.join(self.values)}, got {value!r}")

    def wire_schema(self):
        return {"enum": list(self.values)}


class Bool(Type):
    sig = "bool"

    def check(self, value, path):
        if not isinstance(value, bool):
            raise RecordError(path, f"expected true or false, got {value!r}")

    def wire_schema(self):
        return {"type": "boolean"}


class Packed(Type):
    """A list of numbers in memory; base64 of little-endian fixed-width values on the wire."""

    def __init__(self, code: str, sig: str, what: str):
        self.code, self.sig, self.what = code, sig, what

    def check(self, value, path):
        if not isinstance(value, (list, tuple)):
            raise RecordError(path, f"expected a list of numbers, got {type(value).__name__}")
        for i, item in enumerate(value):
            if not _is_number(item) or (self.code == "I" and (not isinstance(item, int) or not 0 <= item < 2**32)):
                raise RecordError(f"{path}[{i}]", f"expected a {self.what}, got {item!r}")

    def wire_schema(self):
        return {"type": "string", "contentEncoding": "base64",
                "description": f"base64 of a little-endian {self.what} array"}

    def pack(self, values: Sequence[float], path: str) -> bytes:
        """The base64 text (without quotes) of the values."""
        try:
            raw = _struct(self.code, len(values)).pack(*values)
        except (struct.error, TypeError) as exc:
            raise RecordError(path, f"cannot pack as {self.what} array: {exc}") from exc
        return binascii.b2a_base64(raw, newline=False)

    def unpack(self, text: str, path: str) -> list:
        try:
            raw = base64.b64decode(text, validate=True)
            return list(_struct(self.code, len(raw) // struct.calcsize("<" + self.code)).unpack(raw))
        except (binascii.Error, struct.error, TypeError) as exc:
            raise RecordError(path, f"not a base64 {self.what} array: {exc}") from exc


_structs: dict[tuple[str, int], struct.Struct] = {}
_b2a = binascii.b2a_base64


def _struct(code: str, n: int) -> struct.Struct:
    packer = _structs.get((code, n))
    if packer is None:
        packer = _structs[code, n] = struct.Struct(f"<{n}{code}")
    return packer


F64 = Packed("d", "f64_array", "IEEE-754 float64")
U32 = Packed("I", "u32_array", "uint32")


class ListOf(Type):
    def __init__(self, item: Type):
        self.item = item
        self.sig = f"list<{item.sig}>"

    def check(self, value, path):
        if not isinstance(value, (list, tuple)):
            raise RecordError(path, f"expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            self.item.check(item, f"{path}[{i}]")

    def wire_schema(self):
        return {"type": "array", "items": self.item.wire_schema()}

    def children(self):
        yield "[]", self.item


class MapOf(Type):
    def __init__(self, value: Type):
        self.value = value
        self.sig = f"map<string,{value.sig}>"

    def check(self, value, path):
        if not isinstance(value, Mapping):
            raise RecordError(path, f"expected a mapping, got {type(value).__name__}")
        for key, item in value.items():
            if not isinstance(key, str):
                raise RecordError(path, f"keys must be strings, got {key!r}")
            self.value.check(item, f"{path}.{key}")

    def wire_schema(self):
        return {"type": "object", "additionalProperties": self.value.wire_schema()}

    def children(self):
        yield "*", self.value


class Field:
    def __init__(self, type_: Type, doc: str):
        self.type, self.doc = type_, doc


class Obj(Type):
    sig = "object"

    def __init__(self, fields: dict[str, Field]):
        self.fields = fields

    def check(self, value, path):
        if not isinstance(value, Mapping):
            raise RecordError(path, f"expected a mapping, got {type(value).__name__}")
        for name, spec in self.fields.items():
            where = f"{path}.{name}" if path else name
            if name not in value:
                raise RecordError(where, "required field is missing")
            spec.type.check(value[name], where)
        unknown = sorted(set(value) - set(self.fields))
        if unknown:
            where = f"{path}.{unknown[0]}" if path else unknown[0]
            raise RecordError(where, f"unknown field (schema version {SCHEMA_VERSION})")

    def wire_schema(self):
        return {"type": "object",
                "properties": {n: {**f.type.wire_schema(), "description": f.doc} for n, f in self.fields.items()},
                "required": list(self.fields), "additionalProperties": False}

    def children(self):
        for name, spec in self.fields.items():
            yield name, spec.type


class Nullable(Type):
    nullable = True

    def __init__(self, inner: Type):
        self.inner = inner
        self.sig = f"{inner.sig}|null"

    def check(self, value, path):
        if value is not None:
            self.inner.check(value, path)

    def wire_schema(self):
        return {"anyOf": [self.inner.wire_schema(), {"type": "null"}]}

    def children(self):
        return self.inner.children()


class Opaque(Type):
    """Any JSON value, owned by its writer (the controller core). Non-finite floats inside it use the
    same strings as scalar numbers, so those three strings always read back as floats here."""

    sig = "opaque"

    def check(self, value, path):
        try:
            json.dumps(value, allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise RecordError(path, f"not JSON-serialisable: {exc}") from exc

    def wire_schema(self):
        return {}


# ---------------------------------------------------------------------------------------------
# Version 1, generated from the messages (boiler_ai.messages.record.Record and its parts): their
# field annotations say the wire type, their metadata the reference text.


class OpenEnum(Str):
    """A string whose values this version lists; a later version may list more (readers must accept them)."""

    def __init__(self, values: Sequence[str]):
        self.values = tuple(values)

    def check(self, value, path):
        if value not in self.values:
            raise RecordError(path, f"must be one of {', '.join(self.values)}, got {value!r}")

    def wire_schema(self):
        return {"type": "string", "enum": list(self.values)}


_TAGGED = {"finite_number": lambda: Num(finite=True), "number": Num, "uint": Int, "sha256_hex": Hex64,
           "f64_array": lambda: F64, "u32_array": lambda: U32, "opaque": Opaque}


def type_of(hint: Any) -> Type:
    """The schema type of a message field's annotation (boiler_ai.messages.wire says how they read)."""
    bare, tags, nullable = wire.unwrap(hint)
    node: Type
    tagged = [t for t in tags if t in _TAGGED]
    if tagged:
        node = _TAGGED[tagged[0]]()
    elif dataclasses.is_dataclass(bare):
        node = object_of(bare)
    elif isinstance(bare, type) and issubclass(bare, enum.Enum):
        values = [m.value for m in bare]
        node = OpenEnum(values) if wire.OPEN in tags else Enum(values)
    elif bare is str:
        node = Str()
    elif bare is bool:
        node = Bool()
    elif typing.get_origin(bare) in (Mapping, dict):
        node = MapOf(type_of(typing.get_args(bare)[1]))
    elif wire.is_sequence(bare):
        node = ListOf(type_of(typing.get_args(bare)[0]))
    else:
        raise TypeError(f"no wire type for {hint!r}")
    return Nullable(node) if nullable else node


def object_of(cls: type, fields: dict[str, Field] | None = None) -> Obj:
    """The wire object of a message: its fields (inlined messages' fields at the same level)."""
    fields = {} if fields is None else fields
    for name, attr, hint, f in wire.wire_fields(cls):
        if name is None:
            object_of(wire.unwrap(hint)[0], fields)
        else:
            fields[name] = Field(type_of(hint), f.metadata.get("doc", ""))
    return Obj(fields)


def _record_type() -> Obj:
    record = object_of(messages.Record)
    for path, hint, text in messages.record.DERIVED:
        *parents, leaf = path.split(".")
        holder = record
        for part in parents:
            node = holder.fields[part].type
            holder = node.inner if isinstance(node, Nullable) else node
        holder.fields[leaf] = Field(type_of(hint), text)
    # the version first, as readers look for it first
    return Obj({"schema_version": record.fields.pop("schema_version"), **record.fields})


RECORD = _record_type()

# Fields the durable log stamps in append(); a record handed to append() need not carry them.
STAMPED = ("seq", "log_dropped_count", "publish_drop_count")


def _paths(node: Type, prefix: tuple[str, ...], pick) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, what `pick` says of it) for the fields under `node`, through objects, that `pick` does not answer
    None for."""
    inner = node.inner if isinstance(node, Nullable) else node
    if isinstance(inner, Obj):
        for name, spec in inner.fields.items():
            yield from _paths(spec.type, prefix + (name,), pick)
    else:
        what = pick(inner)
        if what is not None:
            yield prefix, what


PACKED_PATHS = tuple(_paths(RECORD, (), lambda node: node if isinstance(node, Packed) else None))


def flatten(node: Type = RECORD, prefix: str = "") -> dict[str, str]:
    """Every field path with its type signature, e.g. {"inputs.value": "f64_array", "events[].type": ...}."""
    out: dict[str, str] = {}
    for name, child in node.children():
        path = f"{prefix}{name}" if name == "[]" else f"{prefix}.{name}" if prefix else name
        out[path] = child.sig
        out.update(flatten(child, path))
    return out


def json_schema() -> dict:
    """The machine-checkable form of the wire format (docs/decision_record.v1.schema.json)."""
    schema = RECORD.wire_schema()
    schema["properties"]["schema_version"] = {"const": SCHEMA_VERSION,
                                              "description": RECORD.fields["schema_version"].doc}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:boiler-ai:decision-record:v{SCHEMA_VERSION}",
            "title": f"boiler-ai decision record, version {SCHEMA_VERSION} (wire form)", **schema}


# ---------------------------------------------------------------------------------------------
# Validation, encoding, decoding.


def validate(record: Mapping, *, stamped: bool = True) -> None:
    """Raise RecordError naming the first field that does not match the schema.

    stamped=False checks a record as the daemon hands it to the log (seq and counters not yet set).
    """
    if not isinstance(record, Mapping):
        raise RecordError("", f"expected a mapping, got {type(record).__name__}")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise RecordError("schema_version", f"expected {SCHEMA_VERSION}, got {record.get('schema_version')!r}")
    if not stamped:
        record = {**{k: 0 for k in STAMPED}, **record}
    RECORD.check(record, "")
    n = len(record["inputs"]["signals"])
    for key in ("value", "source_ts", "status_code"):
        if len(record["inputs"][key]) != n:
            raise RecordError(f"inputs.{key}", f"has {len(record['inputs'][key])} entries for {n} signals")
    known = set(record["inputs"]["signals"])
    for key in ("issue", "held"):
        stray = sorted(set(record["inputs"][key]) - known)
        if stray:
            raise RecordError(f"inputs.{key}.{stray[0]}", "not in inputs.signals")
    m = len(record["mvs"])
    for key in ("requested", "projected", "written", "u_prev", "u_dcs", "read_back"):
        if record[key] is not None and len(record[key]) != m:
            raise RecordError(key, f"has {len(record[key])} entries for {m} manipulated variables")


def _number_kind(node: Type) -> bool | None:
    """False for a scalar number, True for a container that may hold numbers, None for the rest (packed
    arrays hold theirs bit for bit)."""
    if isinstance(node, Num):
        return False
    return True if isinstance(node, (Opaque, MapOf, ListOf)) and _may_hold_number(node) else None


def _may_hold_number(node: Type) -> bool:
    inner = node.inner if isinstance(node, Nullable) else node
    return isinstance(inner, (Num, Opaque)) or any(_may_hold_number(child) for _, child in inner.children())


def _by_parent(paths) -> tuple[list, dict[str, list]]:
    """(leaf, what, dotted path) of each path, split into top-level ones and those one level down, by parent."""
    top: list = []
    nested: dict[str, list] = {}
    for path, what in paths:
        assert len(path) <= 2, path  # records nest packed arrays and numbers at most one level deep
        entry = (path[-1], what, ".".join(path))
        (top if len(path) == 1 else nested.setdefault(path[0], [])).append(entry)
    return top, nested


_PACKED_TOP, _PACKED_NESTED = _by_parent(PACKED_PATHS)
# nested blocks that may be null (and absent from records written before they were added)
_NULLABLE_NESTED = frozenset(name for name in _PACKED_NESTED if isinstance(RECORD.fields[name].type, Nullable))
_NUMBER_TOP, _NUMBER_NESTED = _by_parent(_paths(RECORD, (), _number_kind))
_MISSING = object()


def _finite_or_string(value: Any) -> Any:
    """Replace non-finite floats anywhere in a JSON-like value with their reserved strings."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {k: _finite_or_string(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_string(v) for v in value]
    return value


def _holds_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(_holds_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_non_finite(v) for v in value)
    return False


def _numbers_finite(holder: Mapping, entries: list) -> bool:
    isfinite = math.isfinite
    for leaf, container, _ in entries:
        value = holder.get(leaf)
        if container:
            if value and _holds_non_finite(value):
                return False
        elif isinstance(value, float) and not isfinite(value):
            return False
    return True


def _pack_into(holder: dict, entries: list) -> None:
    """Replace each packed field's list by its base64 text (None stays None)."""
    for leaf, packer, dotted in entries:
        value = holder.get(leaf, _MISSING)
        if value is _MISSING:
            raise RecordError(dotted, "required field is missing")
        if value is not None:
            try:  # Packed.pack inlined: this runs ten times per record
                holder[leaf] = _b2a(_structs[packer.code, len(value)].pack(*value), newline=False).decode("ascii")
            except (KeyError, struct.error, TypeError):
                holder[leaf] = packer.pack(value, dotted).decode("ascii")  # first of its length, or names the fault


def _plain_number(value: Any) -> Any:
    """orjson's fallback for the numpy scalars a policy's output may leave in a record."""
    if isinstance(value, (float, int)):  # float and int subclasses (numpy.float64 is one)
        return float(value) if isinstance(value, float) else int(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode(record: Mapping) -> bytes:
    """In-memory record -> wire bytes (UTF-8 JSON). Does not validate: call validate() in tests."""
    return _encode_owned(record, copy=True)


def encode_record(record: messages.Record) -> bytes:
    """A Record -> wire bytes: its fresh `as_dict()`, encoded without the copies `encode` makes."""
    return _encode_owned(record.as_dict(), copy=False)


def _encode_owned(record: Mapping, *, copy: bool) -> bytes:
    # orjson (a compiled encoder, ~5x the standard library here) writes the record; it would write a
    # non-finite float as null, so the few places a number can sit are checked first, and the rare
    # record with one goes through the walk that writes the reserved strings instead.
    out = dict(record) if copy else record
    for name, entries in _PACKED_NESTED.items():
        child = out.get(name)
        if not isinstance(child, Mapping):
            if child is None and name in _NULLABLE_NESTED:
                continue
            raise RecordError(name, "required mapping is missing")
        out[name] = holder = dict(child) if copy else child  # on a copy: the caller's record stays as it was
        _pack_into(holder, entries)
    _pack_into(out, _PACKED_TOP)
    finite = _numbers_finite(out, _NUMBER_TOP) and all(
        not isinstance(out.get(name), Mapping) or _numbers_finite(out[name], entries)
        for name, entries in _NUMBER_NESTED.items())
    try:
        return orjson.dumps(out if finite else _finite_or_string(out), default=_plain_number)
    except orjson.JSONEncodeError as exc:
        raise TypeError(str(exc)) from exc


def _restore_non_finite(value: Any, node: Type) -> Any:
    """Turn the reserved strings back into floats where the schema has a number (or opaque state)."""
    if isinstance(node, Nullable):
        if value is None:
            return None
        node = node.inner
    if isinstance(node, (Num, Opaque)):
        if isinstance(value, str):
            return NON_FINITE.get(value, value)
        if isinstance(node, Opaque) and isinstance(value, (dict, list)):
            return _restore_opaque(value)
        return value
    if isinstance(node, Obj) and isinstance(value, dict):
        for name, spec in node.fields.items():
            if name in value:
                value[name] = _restore_non_finite(value[name], spec.type)
    elif isinstance(node, MapOf) and isinstance(value, dict):
        for key in value:
            value[key] = _restore_non_finite(value[key], node.value)
    elif isinstance(node, ListOf) and isinstance(value, list):
        value[:] = [_restore_non_finite(v, node.item) for v in value]
    return value


def _restore_opaque(value: Any) -> Any:
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _restore_opaque(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_opaque(v) for v in value]
    return value


def decode(payload: bytes | str) -> dict:
    """Wire bytes -> in-memory record (packed arrays back to lists, reserved strings back to floats)."""
    try:
        record = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError("", f"not a JSON decision record: {exc}") from exc
    if not isinstance(record, dict):
        raise RecordError("", f"expected a JSON object, got {type(record).__name__}")
    for path, packed in PACKED_PATHS:
        parent = record
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and isinstance(parent.get(path[-1]), str):
            parent[path[-1]] = packed.unpack(parent[path[-1]], ".".join(path))
    raw = payload if isinstance(payload, bytes) else payload.encode("utf-8")
    if b'"NaN"' in raw or b'Infinity"' in raw:
        _restore_non_finite(record, RECORD)
    return record


# ---------------------------------------------------------------------------------------------
# Helpers for the daemon (building) and for readers (expanding the packed arrays).


def action_list(mvs: Sequence[str], action: Mapping[str, float] | None) -> list[float] | None:
    """MV -> value mapping as the list the record carries (in `mvs` order), None stays None."""
    return None if action is None else [action[mv] for mv in mvs]


def inputs_by_signal(record: Mapping) -> dict[str, dict]:
    """The `inputs` block expanded per signal: {signal: {value, status_code, source_ts, valid, issue, used}}."""
    block = record["inputs"]
    issue, held = block["issue"], block["held"]
    out = {}
    for name, value, ts, code in zip(block["signals"], block["value"], block["source_ts"], block["status_code"]):
        problem = issue.get(name)
        out[name] = {"value": value, "status_code": code, "source_ts": ts, "valid": problem is None,
                     "issue": problem, "used": value if problem is None else held.get(name)}
    return out


def action_by_mv(record: Mapping, key: str) -> dict[str, float] | None:
    """One action array (requested, projected, written, ...) as MV -> value, or None."""
    values = record[key]
    return None if values is None else dict(zip(record["mvs"], values))


def main(argv: list[str] | None = None) -> int:
    """`python -m boiler_ai.record.schema json-schema|fields`: print the generated forms."""
    import sys

    what = (argv if argv is not None else sys.argv[1:]) or ["json-schema"]
    if what[0] == "json-schema":
        print(json.dumps(json_schema(), indent=2))
    elif what[0] == "fields":
        print(json.dumps(flatten(), indent=2))
    else:
        print("usage: python -m boiler_ai.record.schema json-schema|fields", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
