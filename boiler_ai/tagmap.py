"""Tag maps (`opc/<unit>.yaml`): logical signal name -> NodeId, type, unit, range, criticality, access."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from boiler_ai.status_codes import REASONS
from boiler_ai.strict import ConfigError, Fields, load_yaml

DATA_TYPES = ("Boolean", "Int32", "UInt32", "Float", "Double")
ACCESS = ("read", "write", "readwrite")
HANDSHAKE = ("ai_enable", "ai_permissive", "ai_active", "ai_request", "ai_heartbeat")
# Optional roles: the daemon's status back to the DCS faceplate (mode and reason codes of
# boiler_ai/status_codes.py), written every cycle in closed loop when mapped.
STATUS_ROLES = ("ai_status", "ai_reason")
STATUS_CODE_MAX = max(r.code for r in REASONS)  # the largest code a status tag must hold


@dataclass(frozen=True, slots=True)
class SignalSpec:
    name: str
    node: str  # NodeId string as written in the map
    data_type: str
    unit: str
    lo: float
    hi: float
    access: str
    critical: bool
    description: str
    stale_s: float = 0.0
    hold_s: float = 0.0
    frozen_s: float | None = None
    max_rate_per_s: float | None = None

    @property
    def readable(self) -> bool:
        return self.access in ("read", "readwrite")

    @property
    def writable(self) -> bool:
        return self.access in ("write", "readwrite")


@dataclass(frozen=True, slots=True)
class ManipulatedVariable:
    name: str
    dcs_setpoint: str  # signal holding the DCS's own setpoint
    ai_setpoint: str  # signal the daemon writes
    # the DCS operator's per-MV AI enable (readable Boolean); None: the MV follows the unit's AI_ENABLE only
    ai_enable: str | None = None


@dataclass(frozen=True)
class TagMap:
    source: str
    unit: str
    namespace_uri: str
    signals: dict[str, SignalSpec]
    handshake: dict[str, str]  # role -> signal name (the optional STATUS_ROLES only when mapped)
    manipulated: dict[str, ManipulatedVariable]

    @property
    def readable(self) -> list[str]:
        return [n for n, s in self.signals.items() if s.readable]

    @property
    def writable(self) -> list[str]:
        return [n for n, s in self.signals.items() if s.writable]

    def require(self, name: str, where: str) -> SignalSpec:
        """The spec of `name`, or an error saying which file and field asked for an unknown tag."""
        try:
            return self.signals[name]
        except KeyError:
            raise ConfigError(self.source, where, f"unknown tag {name!r} (not in the tag map)") from None


def load_tag_map(path: str | Path) -> TagMap:
    path = Path(path)
    top = Fields(path, "", load_yaml(path))
    unit = top.string("unit")
    namespace_uri = top.string("namespace_uri")
    defaults = top.mapping("defaults", {})
    default_stale = defaults.number("stale_s", 10.0, lo=0.0)
    default_hold = defaults.number("hold_s", 30.0, lo=0.0)
    defaults.done()

    signals: dict[str, SignalSpec] = {}
    sig_fields = top.mapping("signals")
    for name in sig_fields.data:
        f = sig_fields.mapping(name)
        lo, hi = f.pair("range")
        spec = SignalSpec(
            name=name,
            node=f.string("node"),
            data_type=f.string("type", choices=DATA_TYPES),
            unit=f.raw("unit", ""),
            lo=lo,
            hi=hi,
            access=f.string("access", choices=ACCESS),
            critical=f.boolean("critical"),
            description=f.string("description"),
            stale_s=f.number("stale_s", default_stale, lo=0.0),
            hold_s=f.number("hold_s", default_hold, lo=0.0),
            frozen_s=f.number("frozen_s", None, lo=0.0),
            max_rate_per_s=f.number("max_rate_per_s", None, lo=0.0),
        )
        if not isinstance(spec.unit, str):
            raise f.error("unit", "expected a string")
        f.done()
        signals[name] = spec
    if not signals:
        raise sig_fields.error("", "no signals")
    nodes: dict[str, str] = {}
    for spec in signals.values():
        if spec.node in nodes:
            raise ConfigError(path, f"signals.{spec.name}.node",
                              f"NodeId {spec.node!r} is also used by {nodes[spec.node]!r}")
        nodes[spec.node] = spec.name

    tm = TagMap(str(path), unit, namespace_uri, signals, {}, {})

    hs = top.mapping("handshake")
    for role in HANDSHAKE:
        name = hs.string(role)
        spec = tm.require(name, f"handshake.{role}")
        needs_write = role in ("ai_request", "ai_heartbeat")
        if needs_write and not spec.writable:
            raise hs.error(role, f"tag {name!r} must be writable (access write or readwrite)")
        if not needs_write and not spec.readable:
            raise hs.error(role, f"tag {name!r} must be readable")
        tm.handshake[role] = name
    for role in STATUS_ROLES:
        name = hs.string(role, None)
        if name is None:
            continue
        spec = tm.require(name, f"handshake.{role}")
        if not spec.writable or spec.data_type == "Boolean" or not spec.lo <= 0 < STATUS_CODE_MAX <= spec.hi:
            raise hs.error(role, f"tag {name!r} must be a writable number whose range holds the codes "
                                 f"0..{STATUS_CODE_MAX} (got {spec.data_type}, access {spec.access}, "
                                 f"range [{spec.lo:g}, {spec.hi:g}])")
        tm.handshake[role] = name
    hs.done()

    mv_fields = top.mapping("manipulated")
    for name in mv_fields.data:
        f = mv_fields.mapping(name)
        mv = ManipulatedVariable(name, f.string("dcs_setpoint"), f.string("ai_setpoint"), f.string("ai_enable", None))
        if not tm.require(mv.dcs_setpoint, f"manipulated.{name}.dcs_setpoint").readable:
            raise f.error("dcs_setpoint", f"tag {mv.dcs_setpoint!r} must be readable")
        if not tm.require(mv.ai_setpoint, f"manipulated.{name}.ai_setpoint").writable:
            raise f.error("ai_setpoint", f"tag {mv.ai_setpoint!r} must be writable")
        if mv.ai_enable is not None:
            spec = tm.require(mv.ai_enable, f"manipulated.{name}.ai_enable")
            if spec.data_type != "Boolean" or not spec.readable:
                raise f.error("ai_enable", f"tag {mv.ai_enable!r} must be a readable Boolean")
        f.done()
        tm.manipulated[name] = mv
    if not tm.manipulated:
        raise mv_fields.error("", "no manipulated variables")
    top.done()
    return tm
