"""The guard: an independent accept/block check of a write before it leaves (docs/ARCHITECTURE.md, The cycle).

Built apart from the projector on purpose, so a bug in one does not hide in the other: it reads the
envelope file again itself (only what it checks; envelope.py is the strict validator), keeps plain
floats and evaluates every limit in its own arithmetic. No optimiser, no repair: a block drops the
whole write and the daemon releases control.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from boiler_ai.messages.record import GuardVerdict
from boiler_ai.strict import ConfigError, Fields, load_yaml
from boiler_ai.tagmap import TagMap

_RELATIONS = ("equal", "at_most", "at_least")
_BASES = ("setpoint", "deviation_from_dcs")


class Guard:
    def __init__(self, envelope_path: str | Path, tag_map: TagMap):
        top = Fields(envelope_path, "", load_yaml(envelope_path))
        self.tolerance = top.mapping("guard").number("tolerance", lo=0.0)
        mvs = top.mapping("manipulated")
        allowed = {n for n, mv in tag_map.manipulated.items() if tag_map.signals[mv.ai_setpoint].writable}
        if set(mvs.data) != allowed:
            raise ConfigError(envelope_path, "manipulated",
                              "must name exactly the tag map's writable manipulated variables")
        # per MV: (min, max, rate up /s, rate down /s, max deviation from the DCS, available_when or None,
        # the tag map's per-MV AI enable or None); plain tuples, unpacked in one step per MV on the hot path
        self.limits: dict[str, tuple[float, float, float, float, float, str | None, str | None]] = {}
        for name in mvs.data:
            f = mvs.mapping(name)
            when = f.string("available_when")
            self.limits[name] = (f.number("min"), f.number("max"), f.number("rate_up_per_s"),
                                 f.number("rate_down_per_s"), f.number("max_deviation_from_dcs"),
                                 None if when == "always" else when, tag_map.manipulated[name].ai_enable)
        self.couplings = []
        rows = top.mapping("couplings")
        for name in rows.data:
            f = rows.mapping(name)
            self.couplings.append((name, f.string("applies_to", choices=_BASES) == _BASES[1], _terms(f, "terms"),
                                   f.string("relation", choices=_RELATIONS), f.number("limit")))
        budget = top.mapping("influence_budget")
        self.budget_limit = budget.number("limit", lo=0.0)
        self.budget = tuple((name, w) for name, w in _terms(budget, "weights") if w)
        # Process rows are checked against the warning threshold, with S at the end of its interval
        # of larger magnitude, as the envelope file says.
        self.process = []
        rows = top.mapping("process_limits")
        for name in rows.data:
            f = rows.mapping(name)
            terms = f.mapping("sensitivity")
            sensitivity = tuple((str(mv), max(terms.pair(mv), key=abs)) for mv in terms.data)
            self.process.append((name, f.string("signal"), f.string("relation", choices=_RELATIONS[1:]),
                                 f.number("warning"), sensitivity))

    def check(self, written: Mapping[str, float], u_prev: Mapping[str, float], u_dcs: Mapping[str, float],
              process_now: Mapping[str, float], available: Mapping[str, bool], dt: float) -> GuardVerdict:
        """Accept or block one write. Mappings are keyed by MV name, except `process_now` (process-limit
        signal -> value) and `available` (`available_when` and per-MV AI enable signal -> value; missing =
        false)."""
        try:
            violations = self._violations(written, u_prev, u_dcs, process_now, available, dt)
        except Exception as exc:  # noqa: BLE001 -- anything unexpected blocks the write
            violations = [f"guard error: {exc!r}"]
        return GuardVerdict(not violations, tuple(violations))

    def _violations(self, written, u_prev, u_dcs, process_now, available, dt) -> list[str]:
        tol = self.tolerance
        out = [f"{name}: not on the write allow-list" for name in written if name not in self.limits]
        dt = _number(dt)
        if dt is None or dt < 0:
            return out + ["cycle period is not a finite non-negative number"]
        x, prev, dcs, held = {}, {}, {}, {}
        complete = True
        for name, (lo, hi, up, down, dev, when, enable) in self.limits.items():
            xv = x[name] = _number(written.get(name))
            pv = prev[name] = _number(u_prev.get(name))
            dv = dcs[name] = _number(u_dcs.get(name))
            if xv is None or pv is None or dv is None:
                out.append(f"{name}: written value, setpoint in force or DCS setpoint missing or not finite")
                complete = False
                continue
            # Left to the DCS (its condition is false, the operator took it back, or the DCS holds it
            # outside the AI's range): the only acceptable value is the DCS's own setpoint.
            if ((when is not None and not available.get(when, False))
                    or (enable is not None and not available.get(enable, False)) or not lo <= dv <= hi):
                held[name] = dv
                if abs(xv - dv) > tol:
                    out.append(f"{name}: left to the DCS but {xv:g} is not the DCS setpoint {dv:g}")
                continue
            held[name] = pv
            step = xv - pv
            if step > up * dt + tol or -step > down * dt + tol:
                out.append(f"{name}: moves {step:+g} in {dt:g} s, beyond its rate limit")
            if not lo <= xv <= hi:
                out.append(f"{name}: {xv:g} outside [{lo:g}, {hi:g}]")
            if abs(xv - dv) > dev + tol:
                out.append(f"{name}: {xv:g} is more than {dev:g} from the DCS setpoint {dv:g}")
        if not complete:
            return out
        for name, on_deviation, terms, relation, limit in self.couplings:
            if on_deviation:
                total = sum([c * (x[mv] - dcs[mv]) for mv, c in terms])
            else:
                total = sum([c * x[mv] for mv, c in terms])
            # Crossed with the setpoints in force and the MVs left to the DCS on its setpoints (a mill
            # tripped under a feeder bias): met by coming back, or at least not going further out. The
            # row's basis is the same for both, so only the difference of the setpoints counts.
            before = total + sum([c * (held[mv] - x[mv]) for mv, c in terms])
            if not (_holds(total, relation, limit, tol) or _no_worse(total, before, relation, limit, tol)):
                out.append(f"coupling {name}: {total:g} is not {relation} {limit:g}")
        used = sum([w * abs(x[mv] - dcs[mv]) for mv, w in self.budget])
        before = sum([w * abs(prev[mv] - dcs[mv]) for mv, w in self.budget])
        # A budget overrun from the DCS moving its own setpoints is met by not making it worse.
        if used > max(self.budget_limit, before) + tol:
            out.append(f"influence budget: {used:g} used, limit {self.budget_limit:g}")
        now = {signal: _number(process_now.get(signal)) for _, signal, _, _, _ in self.process}
        out += [f"process limit {name}: {signal} has no usable value"
                for name, signal, _, _, _ in self.process if now[signal] is None]
        # Every setpoint moving from where it is toward the DCS's own (none past it) is the retreat:
        # the DCS's setpoints are what the limits are judged against, so no prediction is needed.
        if all(min(prev[mv], dcs[mv]) - tol <= x[mv] <= max(prev[mv], dcs[mv]) + tol for mv in x):
            return out
        for name, signal, relation, warning, sensitivity in self.process:
            if now[signal] is None:
                continue
            predicted = now[signal] + sum([s * (x[mv] - prev[mv]) for mv, s in sensitivity])
            # A threshold already crossed is met by not making it worse.
            if not (_holds(predicted, relation, warning, tol) or _holds(predicted, relation, now[signal], tol)):
                out.append(f"process limit {name}: {signal} predicted {predicted:g}, not {relation} {warning:g}"
                           f" (its warning threshold) and worse than now ({now[signal]:g})")
        return out


def _terms(f: Fields, key: str) -> tuple[tuple[str, float], ...]:
    terms = f.mapping(key)
    return tuple((str(mv), terms.number(mv)) for mv in terms.data)


def _holds(value: float, relation: str, limit: float, tol: float) -> bool:
    if relation == "at_most":
        return value <= limit + tol
    if relation == "at_least":
        return value >= limit - tol
    return abs(value - limit) <= tol


def _no_worse(value: float, before: float, relation: str, limit: float, tol: float) -> bool:
    """`value` lies between `before` (on the wrong side of `limit`) and the limit."""
    if relation == "at_most":
        return value <= before + tol
    if relation == "at_least":
        return value >= before - tol
    return min(before, limit) - tol <= value <= max(before, limit) + tol


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
