"""How the messages map to their wire form (JSON-like dicts), and the annotations that say how.

A message field's annotation says what it is on the wire: `Finite` (a finite number), `Number`
(NaN and infinities allowed), `UInt`, `Sha256`, `Floats`/`StatusCodes` (packed arrays), `Json` (any
JSON value), an enum (closed: only its values; `Open[...]`: a string whose values are listed, and a
later version may list more), a message (an object), `X | None` (nullable). Field metadata: "doc"
(the reference text), "wire" (the name on the wire, or False: not on the wire), "inline" (the
message's fields go in at this level). boiler_ai.record.schema generates the schema from these.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

Finite = Annotated[float, "finite_number"]
Number = Annotated[float, "number"]
UInt = Annotated[int, "uint"]
Sha256 = Annotated[str, "sha256_hex"]
Floats = Annotated[Sequence[float], "f64_array"]
StatusCodes = Annotated[Sequence[int], "u32_array"]
Json = Annotated[Any, "opaque"]
OPEN = "open_enum"


def doc(text: str, **more) -> dict:
    """Field metadata: its reference text, and optionally wire=NAME|False or inline=True."""
    return {"doc": text, **more}


def wire_fields(cls: type) -> list[tuple[str | None, str, Any, dataclasses.Field]]:
    """(wire name or None when inlined, attribute, resolved annotation, field) of a message, in order."""
    plan = _plans.get(cls)
    if plan is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        plan = []
        for f in dataclasses.fields(cls):
            wire = f.metadata.get("wire", f.name)
            if wire is False:
                continue
            plan.append((None if f.metadata.get("inline") else wire, f.name, hints[f.name], f))
        _plans[cls] = plan
    return plan


_plans: dict[type, list] = {}


def unwrap(hint: Any) -> tuple[Any, tuple, bool]:
    """(bare type, Annotated tags, nullable) of an annotation."""
    tags: tuple = ()
    nullable = False
    if typing.get_origin(hint) is Annotated:
        hint, *extra = typing.get_args(hint)
        tags = tuple(extra)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else hint
        inner, more, _ = unwrap(hint)
        return inner, tags + more, nullable
    return hint, tags, nullable


def from_wire(cls: type, data: Mapping) -> Any:
    """A message from its wire dict (as `decode` gives it); fields not on the wire take their defaults."""
    kwargs = {}
    for wire, attr, hint, f in wire_fields(cls):
        if wire is None:
            kwargs[attr] = from_wire(unwrap(hint)[0], data)
        elif wire in data:
            kwargs[attr] = _from(hint, data[wire])
    return cls(**kwargs)


def _from(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    bare, _, _ = unwrap(hint)
    if dataclasses.is_dataclass(bare):
        return from_wire(bare, value)
    if isinstance(bare, type) and issubclass(bare, enum.Enum):
        return bare(value)
    origin = typing.get_origin(bare)
    if origin is tuple:
        item = typing.get_args(bare)[0]
        return tuple(_from(item, v) for v in value)
    return value


def is_sequence(bare: Any) -> bool:
    return typing.get_origin(bare) in (tuple, list, Sequence) or bare in (tuple, list)
