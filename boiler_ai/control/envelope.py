"""The operating envelope of a unit (`constraints/<unit>.yaml`; docs/ARCHITECTURE.md).

What the AI may do with each manipulated variable (MV), and which unit-level rules bind them together:
  per MV     absolute min/max, rate up/down per second, maximum deviation from the DCS's own setpoint,
             projection weight, and the boolean signal that makes it available (else it follows the
             DCS setpoint exactly)
  couplings  linear rows over the MVs' setpoints or over their deviations from the DCS setpoints
  budget     the influence budget: sum of weight x |AI setpoint - DCS setpoint| over all MVs
  process    limits on measured signals: a hard limit, a warning band inside it (where the AI retreats
             to the DCS setpoints, for an off-delay after the value is back, and which a trend look-ahead
             may enter early), a hold time, a recovery time and an analyser lag; linearised each
             cycle as y_now + S (u - u_prev) against the warning threshold, with S taken on the
             conservative side of its fitted interval

Every field is required and every name must be in the tag map; the MV set must be the tag map's.
The projector works on this object; the guard reads the file again on its own (guard.py).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from boiler_ai.strict import ConfigError, Fields, load_yaml
from boiler_ai.tagmap import SignalSpec, TagMap

ALWAYS = "always"  # available_when value for an MV the AI may always move
RELATIONS = ("equal", "at_most", "at_least")
COUPLING_BASES = ("setpoint", "deviation_from_dcs")
PROCESS_RELATIONS = ("at_most", "at_least")
MAX_GUARD_TOLERANCE = 1e-3  # a looser guard stops being a check


class Retreat(enum.Enum):
    """What supervision asks of the projector this cycle; a process limit's warning_action names the
    retreat its warning band asks for (the envelope file's words: retreat | hold)."""

    NONE = "none"  # follow the policy, inside the envelope
    TOWARD_DCS = "retreat"  # ignore the policy: every setpoint toward the DCS's, at its rate limits
    HOLD = "hold"  # ignore the policy: every setpoint stands still (the DCS's own loop acts)


WARNING_ACTIONS = (Retreat.TOWARD_DCS.value, Retreat.HOLD.value)


@dataclass(frozen=True)
class Coupling:
    """coefficients · x  (relation)  limit, with x the setpoints or their deviations from the DCS."""

    name: str
    description: str
    basis: str  # "setpoint" or "deviation_from_dcs"
    coefficients: np.ndarray  # per MV, in envelope MV order
    relation: str  # "equal", "at_most" or "at_least"
    limit: float


@dataclass(frozen=True)
class ProcessLimit:
    """signal (relation) limit, with a warning band; predicted as y_now + sensitivity · (u - u_prev)."""

    name: str
    description: str
    signal: str
    unit: str
    relation: str  # "at_most" or "at_least"
    limit: float  # the hard limit: beyond it for hold_s, control goes back to the DCS
    warning: float  # the warning threshold, on the safe side of the limit: beyond it the AI retreats
    hold_s: float
    recover_s: float  # inside the warning band this long before the AI may engage again
    analyser_lag_s: float  # dead time plus lag of the measurement
    warning_action: Retreat  # beyond the warning: TOWARD_DCS (file word: retreat) or HOLD (stand still)
    retreat_off_delay_s: float  # back inside the warning band, the setpoints hold this long
    trend_lookahead_s: float  # the warning also judges measured + (measured now - measured this long ago)
    average_s: float  # judged on the mean of the measured values over this long (0: the value as read)
    sensitivity: np.ndarray  # the conservative side of the interval (larger magnitude), in MV order
    sensitivity_low: np.ndarray  # the fitted interval, signal units per MV unit
    sensitivity_high: np.ndarray
    sensitivity_source: str  # where the interval comes from (the fit, its data and date)

    def beyond(self, value: float, threshold: float) -> bool:
        """True when `value` is on the unsafe side of `threshold` for this limit."""
        return value > threshold if self.relation == "at_most" else value < threshold


@dataclass(frozen=True)
class RetreatWhile:
    """Boolean signals of plant transients (a mill start or stop sequence) during which, and for settle_s
    after, the AI retreats to the DCS setpoints: combustion then moves faster than the lagging analysers
    show it, so the AI gives the DCS its own margins back before the measurements could. `trips`: Boolean
    signals whose fall from true to false starts the same settling at once (a mill tripping out of service,
    which runs no sequence)."""

    description: str
    signals: tuple[str, ...]
    settle_s: float
    trips: tuple[str, ...] = ()


NO_TRANSIENTS = RetreatWhile("", (), 0.0)


@dataclass(frozen=True)
class InfluenceBudget:
    """sum_i weights_i |u_i - u_dcs_i| <= limit: a bound on the AI's combined offset from the DCS."""

    description: str
    limit: float
    weights: np.ndarray  # per MV, per engineering unit, in MV order


@dataclass(frozen=True)
class Envelope:
    unit: str
    source: str
    sha256: str
    mv_names: tuple[str, ...]  # tag-map order; every array below follows it
    mv_units: tuple[str, ...]
    lo: np.ndarray
    hi: np.ndarray
    rate_up: np.ndarray  # per second
    rate_down: np.ndarray  # per second, positive
    max_dev: np.ndarray  # from the DCS setpoint
    weights: np.ndarray
    available_when: tuple[str | None, ...]  # boolean signal per MV, None = always
    couplings: tuple[Coupling, ...]
    budget: InfluenceBudget
    process_limits: tuple[ProcessLimit, ...]
    iteration_limit: int  # the QP solver's budget, counted in iterations so a replay is machine-independent
    guard_tolerance: float
    # The tag map's per-MV AI enable (the DCS operator's hand-back), None where it has none: a second
    # condition, like available_when. Empty: none at all.
    ai_enable: tuple[str | None, ...] = ()
    retreat_while: RetreatWhile = NO_TRANSIENTS

    @property
    def condition_signals(self) -> tuple[str, ...]:
        """Boolean signals the caller must hand in as `available` each cycle."""
        return tuple(sorted({s for s in (*self.available_when, *self.ai_enable) if s is not None}))

    def conditions(self) -> list[tuple[int, str]]:
        """(MV index, Boolean signal) for every condition an MV needs to be the AI's: all must be true."""
        return [(i, s) for per_mv in (self.available_when, self.ai_enable) for i, s in enumerate(per_mv)
                if s is not None]

    @property
    def process_signals(self) -> tuple[str, ...]:
        """Measured signals the caller must hand in as `process_now` each cycle."""
        return tuple(sorted({p.signal for p in self.process_limits}))

    def vector(self, values: Mapping[str, float]) -> np.ndarray:
        """MV name -> value mapping as an array in MV order; a missing MV is NaN (the projector releases)."""
        return np.array([float(values.get(n, np.nan)) for n in self.mv_names], dtype=float)

    def mapping(self, vector: np.ndarray) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.mv_names, vector)}

    def describe(self) -> str:
        """The effective envelope as text, printed when the daemon starts."""
        header = (f"  {'manipulated variable':<24} {'unit':>6} {'min':>8} {'max':>8} {'rate up/s':>10} "
                  f"{'rate dn/s':>10} {'max dev':>8} {'weight':>7}  available when")
        lines = [f"operating envelope of {self.unit}: {self.source}", f"  sha256 {self.sha256}", header]
        for i, name in enumerate(self.mv_names):
            lines.append(f"  {name:<24} {self.mv_units[i]:>6} {self.lo[i]:>8g} {self.hi[i]:>8g} {self.rate_up[i]:>10g} "
                         f"{self.rate_down[i]:>10g} {self.max_dev[i]:>8g} {self.weights[i]:>7g}  "
                         f"{' and '.join(s for i_, s in self.conditions() if i_ == i) or ALWAYS}")
        lines.append("  couplings:")
        for c in self.couplings:
            terms = " ".join(f"{v:+g} {self.mv_names[i]}" for i, v in enumerate(c.coefficients) if v)
            lines.append(f"    {c.name} [{c.basis}]: {terms} {_SYMBOL[c.relation]} {c.limit:g}")
        if not self.couplings:
            lines.append("    none")
        b = self.budget
        # a line per term: fifteen terms on one line would not read as a table
        lines.append(f"  influence budget: the sum of these terms (offsets from the DCS setpoints) <= {b.limit:g}")
        lines += [f"    {w:g} |{self.mv_names[i]}|" for i, w in enumerate(b.weights) if w]
        lines.append("  process limits (hard limit, warning threshold; linearised against the warning threshold as "
                     "y_now + S (u - u_prev), S on the conservative side; a threshold already crossed must not "
                     "get worse):")
        for p in self.process_limits:
            terms = ", ".join(f"{self.mv_names[i]} {v:+g}" for i, v in enumerate(p.sensitivity) if v)
            lines.append(f"    {p.name}: {p.signal} {_SYMBOL[p.relation]} {p.limit:g} {p.unit} (warning "
                         f"{p.warning:g}, hold {p.hold_s:g} s, recover {p.recover_s:g} s, analyser lag "
                         f"{p.analyser_lag_s:g} s)   S: {terms or 'none'}")
        if not self.process_limits:
            lines.append("    none")
        lines.append(f"  solver iteration limit {self.iteration_limit}, guard tolerance {self.guard_tolerance:g}")
        return "\n".join(lines)


_SYMBOL = {"equal": "=", "at_most": "<=", "at_least": ">="}


def load_envelope(path: str | Path, tag_map: TagMap) -> Envelope:
    path = Path(path)
    top = Fields(path, "", load_yaml(path))
    unit = top.string("unit")
    if unit != tag_map.unit:
        raise top.error("unit", f"{unit!r} is not the tag map's unit {tag_map.unit!r} ({tag_map.source})")

    solver = top.mapping("solver")
    iteration_limit = solver.integer("iteration_limit", lo=10)
    solver.done()
    guard = top.mapping("guard")
    tolerance = guard.number("tolerance", lo=0.0, hi=MAX_GUARD_TOLERANCE)
    if tolerance <= 0.0:
        raise guard.error("tolerance", "must be above 0 (floating-point rounding needs a little room)")
    guard.done()

    mv_fields = top.mapping("manipulated")
    names = tuple(tag_map.manipulated)
    missing = [n for n in names if n not in mv_fields.data]
    extra = [n for n in mv_fields.data if n not in tag_map.manipulated]
    if missing or extra:
        raise ConfigError(path, "manipulated", "the manipulated variables must be exactly the tag map's"
                              + (f"; missing: {', '.join(missing)}" if missing else "")
                              + (f"; not in the tag map: {', '.join(map(str, extra))}" if extra else ""))
    rows: dict[str, list] = {k: [] for k in ("lo", "hi", "rate_up", "rate_down", "max_dev", "weights")}
    units, available_when = [], []
    for name in names:
        f = mv_fields.mapping(name)
        spec = tag_map.signals[tag_map.manipulated[name].ai_setpoint]
        lo = f.number("min", lo=spec.lo, hi=spec.hi)
        hi = f.number("max", lo=spec.lo, hi=spec.hi)
        if lo > hi:
            raise f.error("max", f"max {hi} is below min {lo}")
        rows["lo"].append(lo)
        rows["hi"].append(hi)
        rows["rate_up"].append(f.number("rate_up_per_s", lo=0.0))
        rows["rate_down"].append(f.number("rate_down_per_s", lo=0.0))
        rows["max_dev"].append(f.number("max_deviation_from_dcs", lo=0.0))
        weight = f.number("weight", lo=0.0)
        if weight <= 0.0:
            raise f.error("weight", "must be above 0")
        rows["weights"].append(weight)
        available_when.append(_condition(f, tag_map))
        units.append(spec.unit)
        f.done()

    couplings = _couplings(top.mapping("couplings"), names)
    budget = _budget(top.mapping("influence_budget"), names)
    process_limits = _process_limits(top.mapping("process_limits"), names, tag_map)
    retreat_while = _retreat_while(top.mapping("retreat_while"), tag_map) if top.has("retreat_while") \
        else NO_TRANSIENTS
    top.done()

    def frozen(values: list[float]) -> np.ndarray:
        array = np.array(values, dtype=float)
        array.setflags(write=False)
        return array

    return Envelope(
        unit=unit, source=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        mv_names=names, mv_units=tuple(units),
        lo=frozen(rows["lo"]), hi=frozen(rows["hi"]), rate_up=frozen(rows["rate_up"]),
        rate_down=frozen(rows["rate_down"]), max_dev=frozen(rows["max_dev"]), weights=frozen(rows["weights"]),
        available_when=tuple(available_when), couplings=couplings, budget=budget, process_limits=process_limits,
        iteration_limit=iteration_limit, guard_tolerance=tolerance,
        ai_enable=tuple(tag_map.manipulated[n].ai_enable for n in names), retreat_while=retreat_while,
    )


def _condition(f: Fields, tag_map: TagMap) -> str | None:
    signal = f.string("available_when")
    if signal == ALWAYS:
        return None
    spec = _signal(f, "available_when", signal, tag_map)
    if spec.data_type != "Boolean" or not spec.readable:
        raise f.error("available_when", f"tag {signal!r} must be a readable Boolean (or write {ALWAYS!r})")
    return signal


def _signal(f: Fields, key: str, name: str, tag_map: TagMap) -> SignalSpec:
    try:
        return tag_map.signals[name]
    except KeyError:
        raise f.error(key, f"unknown tag {name!r} (not in the tag map {tag_map.source})") from None


def _coefficients(f: Fields, key: str, names: tuple[str, ...]) -> np.ndarray:
    """A {mv: number} mapping as a row in MV order; MVs not listed have coefficient 0."""
    terms = f.mapping(key)
    row = np.zeros(len(names))
    for mv in terms.data:
        if mv not in names:
            raise terms.error(str(mv), "not a manipulated variable of this envelope")
        row[names.index(mv)] = terms.number(mv)
    terms.done()
    if not row.any():
        raise f.error(key, "needs at least one non-zero term")
    row.setflags(write=False)
    return row


def _couplings(section: Fields, names: tuple[str, ...]) -> tuple[Coupling, ...]:
    out = []
    for name in section.data:
        f = section.mapping(name)
        out.append(Coupling(
            name=str(name), description=f.string("description"), basis=f.string("applies_to", choices=COUPLING_BASES),
            coefficients=_coefficients(f, "terms", names), relation=f.string("relation", choices=RELATIONS),
            limit=f.number("limit"),
        ))
        f.done()
    return tuple(out)


def _retreat_while(f: Fields, tag_map: TagMap) -> RetreatWhile:
    description = f.string("description")
    signals = _booleans(f, "signals", tag_map)
    trips = _booleans(f, "trips", tag_map)
    settle_s = f.number("settle_s", lo=0.0)
    f.done()
    return RetreatWhile(description, signals, settle_s, trips)


def _booleans(f: Fields, key: str, tag_map: TagMap) -> tuple[str, ...]:
    names = f.raw(key)
    if not isinstance(names, list) or not names or not all(isinstance(s, str) for s in names):
        raise f.error(key, f"expected a list of Boolean signal names, got {names!r}")
    for name in names:
        spec = _signal(f, key, name, tag_map)
        if not spec.readable or spec.data_type != "Boolean":
            raise f.error(key, f"tag {name!r} must be a readable Boolean")
    if len(set(names)) != len(names):
        raise f.error(key, "a signal is listed twice")
    return tuple(names)


def _budget(f: Fields, names: tuple[str, ...]) -> InfluenceBudget:
    description = f.string("description")
    limit = f.number("limit", lo=0.0)
    weights = f.mapping("weights")
    missing = [n for n in names if n not in weights.data]
    if missing:
        raise f.error("weights", f"every manipulated variable needs a weight (0 leaves it out); missing: "
                                 f"{', '.join(missing)}")
    row = np.array([weights.number(n, lo=0.0) for n in names])
    weights.done()
    if not row.any():
        raise f.error("weights", "needs at least one weight above 0")
    row.setflags(write=False)
    f.done()
    return InfluenceBudget(description, limit, row)


def _sensitivity(f: Fields, key: str, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """{mv: [low, high]} intervals as (conservative, low, high) rows in MV order; MVs not listed are 0.
    The conservative side is the end of larger magnitude: it predicts more of any move's effect."""
    terms = f.mapping(key)
    low, high = np.zeros(len(names)), np.zeros(len(names))
    for mv in terms.data:
        if mv not in names:
            raise terms.error(str(mv), "not a manipulated variable of this envelope")
        low[names.index(mv)], high[names.index(mv)] = terms.pair(mv)
    terms.done()
    conservative = np.where(np.abs(high) >= np.abs(low), high, low)
    for row in (conservative, low, high):
        row.setflags(write=False)
    return conservative, low, high


def _process_limits(section: Fields, names: tuple[str, ...], tag_map: TagMap) -> tuple[ProcessLimit, ...]:
    out = []
    for name in section.data:
        f = section.mapping(name)
        signal = f.string("signal")
        spec = _signal(f, "signal", signal, tag_map)
        if not spec.readable or spec.data_type == "Boolean":
            raise f.error("signal", f"tag {signal!r} must be a readable measurement")
        relation = f.string("relation", choices=PROCESS_RELATIONS)
        limit = f.number("limit", lo=spec.lo, hi=spec.hi)
        warning = f.number("warning", lo=spec.lo, hi=spec.hi)
        if (warning >= limit) if relation == "at_most" else (warning <= limit):
            raise f.error("warning", f"the warning threshold {warning:g} must be on the safe side of the limit "
                                     f"{limit:g} ({'below' if relation == 'at_most' else 'above'} it)")
        conservative, low, high = _sensitivity(f, "sensitivity", names)
        recover_s, lag_s = f.number("recover_s", lo=0.0), f.number("analyser_lag_s", lo=0.0)
        # The retreat's own effect must reach the analyser before the policy may push again, and a value
        # recovered for an engagement (recover_s) must also count as recovered for a retreat.
        off_delay_s = f.number("retreat_off_delay_s", lo=0.0)
        if not lag_s <= off_delay_s <= recover_s:
            raise f.error("retreat_off_delay_s", f"must lie between analyser_lag_s ({lag_s:g}) and recover_s "
                                                 f"({recover_s:g}), got {off_delay_s:g}")
        trend_s, average_s = f.number("trend_lookahead_s", lo=0.0), f.number("average_s", lo=0.0)
        if average_s and trend_s:
            raise f.error("average_s", "an averaged limit is judged without a trend look-ahead (trend_lookahead_s: 0)")
        if average_s and conservative.any():
            raise f.error("average_s", "an averaged limit has no sensitivity rows (sensitivity: {}): the projector's "
                                       "rows start from the value as read")
        out.append(ProcessLimit(
            name=str(name), description=f.string("description"), signal=signal, unit=spec.unit,
            relation=relation, limit=limit, warning=warning, hold_s=f.number("hold_s", lo=0.0),
            recover_s=recover_s, analyser_lag_s=lag_s,
            warning_action=Retreat(f.string("warning_action", choices=WARNING_ACTIONS)),
            retreat_off_delay_s=off_delay_s,
            trend_lookahead_s=trend_s, average_s=average_s,
            sensitivity=conservative, sensitivity_low=low, sensitivity_high=high,
            sensitivity_source=f.string("sensitivity_source"),
        ))
        f.done()
    # Supervision judges one value per signal (measured, or measured plus a prediction over the analyser's
    # lag): the limits on a signal must agree on the lag, and a lagging signal is limited on one side only.
    for p in out:
        first = next(q for q in out if q.signal == p.signal)
        if p.analyser_lag_s != first.analyser_lag_s:
            raise section.error(f"{p.name}.analyser_lag_s", f"{p.signal} has analyser_lag_s "
                                f"{first.analyser_lag_s:g} in {first.name}: one signal, one lag")
        if p.analyser_lag_s > 0 and p.relation != first.relation:
            raise section.error(f"{p.name}.relation", f"{p.signal} lags ({p.analyser_lag_s:g} s) and is "
                                f"limited on both sides ({first.name}): supervision predicts one side only")
    return tuple(out)
