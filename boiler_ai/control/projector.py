"""The projector: the closest action to the model's request that fits the envelope (docs/ARCHITECTURE.md, The cycle).

    minimise  || W (u - u_requested) ||^2
    subject to  per MV:   absolute min/max, rate limits around u_prev, max deviation around u_dcs,
                          u = u_dcs for an MV that is not available, or whose DCS setpoint is
                          outside the AI's absolute range (left to the DCS)
                couplings (rows over the setpoints or over their deviations from the DCS setpoints)
                process limits, linearised about the setpoints now in force:
                          y_now + S (u - u_prev)  within its limit

A process limit that is already crossed (y_now beyond it) must not lock the AI out, nor may the AI
make it worse: its row becomes S (u - u_prev) <= 0 (for an upper limit; >= 0 for a lower one), so
holding the current setpoints always satisfies it and only moves that pull the signal back are allowed.

The per-cycle box is the intersection of all per-MV limits. If it is empty (crossed bounds) the problem
is infeasible without asking a solver. If the clipped request satisfies every row, it is the answer (the
weighted projection onto a box is the clip, and it is feasible). Otherwise a small QP is solved by DAQP,
a dual active-set solver set up once and cold-started each cycle so an answer depends only on its
inputs (replayable). Every answer is checked independently; any doubt counts as infeasible, and then
the last applied setpoints are held if they still fit, else control is released. project() never raises.

The per-cycle path (box, clip, row checks) runs on Python floats over sparse rows: on vectors of
eighteen, each numpy call costs more than its work, and a cycle that starts with cold caches after
the idle wait pays that overhead several times over. The rare QP path uses numpy and DAQP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import daqp
import numpy as np

from boiler_ai.control.envelope import Envelope
from boiler_ai.messages.record import ProjectionStatus

SOLVER_INF = 1e30  # DAQP's infinity; np.inf makes it return NaN with a "solved" flag
SOLVER_OPTIMAL = 1
SOLVER_PRIMAL_TOL = 1e-9  # rows may be violated by this much; far inside the check tolerance
ACTIVE_MULTIPLIER = 1e-12  # a constraint binds when its multiplier is above rounding noise (~1e-17)
_EQUALITY, _INEQUALITY = 5, 0  # DAQP constraint sense flags
_LO_NAMES = ("min", "rate_down", "deviation_low")
_HI_NAMES = ("max", "rate_up", "deviation_high")


@dataclass(frozen=True, slots=True)
class Projection:
    action: list[float] | None  # in envelope MV order; None only with RELEASE
    status: ProjectionStatus
    active_constraints: tuple[str, ...]  # e.g. "sa_damper_a_pct:rate_up", "coupling:feeder_fuel_balance"
    iterations: int  # active-set iterations of the QP solver (0 when no QP was needed)
    reason: str  # why HOLD or RELEASE; empty otherwise


class Projector:
    def __init__(self, envelope: Envelope):
        e = self.envelope = envelope
        n = self._n = len(e.mv_names)
        # Our own acceptance checks use half the guard's slack, so rounding differences between our
        # arithmetic and the guard's can never turn an accepted answer into a guard block.
        self._tol = e.guard_tolerance / 2
        self._conditional = [(i, signal) for i, signal in enumerate(e.available_when) if signal is not None]
        # Per MV, for the per-cycle box: (min, max, rate up /s, rate down /s, max deviation from the DCS).
        self._box = list(zip(e.lo.tolist(), e.hi.tolist(), e.rate_up.tolist(), e.rate_down.tolist(),
                             e.max_dev.tolist()))
        # Rows as (MV index, coefficient) pairs of their non-zero terms: a coupling touches a few MVs.
        # (lower, upper, on the deviation from the DCS, terms) per coupling; (upper limit?, limit,
        # terms) per process limit.
        self._coupling_bounds = [(c.limit if c.relation != "at_most" else -SOLVER_INF,
                                  c.limit if c.relation != "at_least" else SOLVER_INF,
                                  c.basis == "deviation_from_dcs", _terms(c.coefficients)) for c in e.couplings]
        self._process_bounds = [(p.relation == "at_most", p.limit, _terms(p.sensitivity)) for p in e.process_limits]
        self._row_terms = [b[3] for b in self._coupling_bounds] + [b[2] for b in self._process_bounds]
        coupling_lo = [b[0] for b in self._coupling_bounds]
        coupling_hi = [b[1] for b in self._coupling_bounds]
        self._rows = np.array([c.coefficients for c in e.couplings]
                              + [p.sensitivity for p in e.process_limits]).reshape(-1, n)
        self._row_names = (tuple(f"coupling:{c.name}" for c in e.couplings)
                           + tuple(f"process:{p.name}" for p in e.process_limits))
        self._h_diag = e.weights ** 2
        self._model: daqp.Model | None = None
        if len(self._rows):
            self._sense = np.array([_INEQUALITY] * n
                                   + [_EQUALITY if c.relation == "equal" else _INEQUALITY for c in e.couplings]
                                   + [_INEQUALITY] * len(e.process_limits), dtype=np.int32)
            model = daqp.Model()
            settings = model.settings
            # An iteration limit, never a wall-clock one: a replay must reach the same answer on any machine.
            settings.update(primal_tol=SOLVER_PRIMAL_TOL, iter_limit=e.iteration_limit, time_limit=0.0)
            model.settings = settings
            # Set up once with the static limits; every cycle updates the cost and the bounds only.
            upper = np.concatenate((e.hi, coupling_hi, np.full(len(e.process_limits), SOLVER_INF)))
            lower = np.concatenate((e.lo, coupling_lo, np.full(len(e.process_limits), -SOLVER_INF)))
            flag = model.setup(np.diag(self._h_diag), np.zeros(n), self._rows, upper, lower, self._sense)[0]
            if flag < 0:
                raise RuntimeError(f"DAQP setup failed with exit flag {flag} for {e.source}")
            self._model = model

    def project(self, requested: np.ndarray, u_prev: np.ndarray, u_dcs: np.ndarray,
                process_now: Mapping[str, float], available: Mapping[str, bool], dt: float) -> Projection:
        """The action to write, in envelope MV order; see the module docstring.

        u_prev: setpoints in force (last applied, or the DCS setpoints while not active);
        process_now: current value of every process-limit signal; available: value of every
        `available_when` signal (missing = false); dt: seconds until the next cycle's setpoints.
        """
        try:
            return self._project(requested, u_prev, u_dcs, process_now, available, dt)
        except Exception as exc:  # noqa: BLE001 -- a bug here must hand control back, never crash the cycle
            return Projection(None, ProjectionStatus.RELEASE, (), 0, f"projector error: {exc!r}")

    def _project(self, requested, u_prev, u_dcs, process_now, available, dt) -> Projection:
        u_prev, u_dcs = self._floats(u_prev), self._floats(u_dcs)
        if u_prev is None:
            return _release("last applied setpoints missing or not finite")
        if u_dcs is None:
            return _release("DCS setpoints missing or not finite")
        dt = _finite(dt)
        if dt is None or dt < 0.0:
            return _release("cycle period is not a finite non-negative number")
        y_now = []
        for p in self.envelope.process_limits:
            value = _finite(process_now.get(p.signal))
            if value is None:
                return _release(f"process signal {p.signal} has no usable value ({process_now.get(p.signal)!r})")
            y_now.append(value)

        limits = self._limits(u_prev, u_dcs, y_now, available, dt)
        lo, hi = limits.lo, limits.hi
        crossed = [i for i in range(self._n) if lo[i] > hi[i]]
        if crossed:
            i = crossed[0]
            names = tuple(self._bound(limits, j, upper) for j in crossed for upper in (False, True))
            low, high = (self._bound(limits, i, upper).split(":")[1] for upper in (False, True))
            return self._fallback(limits, f"no setpoint fits {self.envelope.mv_names[i]}: its {low} bound "
                                          f"{lo[i]:g} is above its {high} bound {hi[i]:g}", names)
        request = self._floats(requested)
        if request is None:
            return self._fallback(limits, "requested action missing or not finite", ())

        # the clip, as np.clip computes it: bounds are not crossed here
        clipped = [min(max(r, low), high) for r, low, high in zip(request, lo, hi)]
        if self._rows_fit(clipped, limits):
            names = tuple(self._bound(limits, i, r > hi[i])
                          for i, (c, r) in enumerate(zip(clipped, request)) if c != r)
            status = ProjectionStatus.CLIPPED if names else ProjectionStatus.OK
            return Projection(clipped, status, names, 0, "")
        return self._solve(request, limits)

    def _floats(self, values) -> list[float] | None:
        """`values` as n finite Python floats, or None."""
        try:
            floats = [float(v) for v in (np.ravel(values).tolist() if isinstance(values, np.ndarray) else values)]
        except (TypeError, ValueError):
            return None
        if len(floats) != self._n or not all(map(math.isfinite, floats)):
            return None
        return floats

    def _limits(self, u_prev, u_dcs, y_now, available, dt) -> _Limits:
        # A DCS setpoint outside the AI's range (a burner level starting up from its cooling position,
        # say) leaves that MV to the DCS until it is back inside: following the DCS is never a risk.
        pinned = [not low <= dcs <= high for dcs, (low, high, _, _, _) in zip(u_dcs, self._box)]
        for i, signal in self._conditional:
            if not available.get(signal, False):
                pinned[i] = True
        # The box is the tightest of: absolute, rate around u_prev, deviation around u_dcs; a pinned
        # MV is the DCS setpoint (it moves as the DCS moves it, not at the AI's rate). Which one
        # binds is only worked out when a name is needed (_bound), off the hot path.
        lo: list[float] = []
        hi: list[float] = []
        for prev, dcs, pin, (low, high, up, down, dev) in zip(u_prev, u_dcs, pinned, self._box):
            if pin:
                lo.append(dcs)
                hi.append(dcs)
            else:
                lo.append(max(low, prev - down * dt, dcs - dev))
                hi.append(min(high, prev + up * dt, dcs + dev))

        row_lo: list[float] = []
        row_hi: list[float] = []
        for low, high, on_deviation, terms in self._coupling_bounds:
            offset = sum([c * u_dcs[i] for i, c in terms]) if on_deviation else 0.0
            row_lo.append(low + offset)
            row_hi.append(high + offset)
        # Process rows as bounds on S u: S u_prev + room left to the limit, never less than no change.
        for (upper, limit, terms), now in zip(self._process_bounds, y_now):
            base = sum([c * u_prev[i] for i, c in terms])
            room = limit - now
            if upper:
                row_lo.append(-SOLVER_INF)
                row_hi.append(base + (room if room > 0.0 else 0.0))
            else:
                row_lo.append(base + (room if room < 0.0 else 0.0))
                row_hi.append(SOLVER_INF)
        return _Limits(u_prev, u_dcs, dt, lo, hi, row_lo, row_hi, pinned)

    def _bound(self, limits: _Limits, i: int, upper: bool) -> str:
        """Name of the per-MV limit that sets MV i's lower (or upper) bound this cycle: the first of
        absolute, rate, deviation that is tightest, as in _limits."""
        if limits.pinned[i]:
            return f"{self.envelope.mv_names[i]}:unavailable"
        low, high, up, down, dev = self._box[i]
        u_prev, u_dcs, dt = limits.u_prev[i], limits.u_dcs[i], limits.dt
        if upper:
            candidates = (high, u_prev + up * dt, u_dcs + dev)
            kind = _HI_NAMES[candidates.index(min(candidates))]
        else:
            candidates = (low, u_prev - down * dt, u_dcs - dev)
            kind = _LO_NAMES[candidates.index(max(candidates))]
        return f"{self.envelope.mv_names[i]}:{kind}"

    def _rows_fit(self, x: list[float], limits: _Limits) -> bool:
        tol = self._tol
        for terms, low, high in zip(self._row_terms, limits.row_lo, limits.row_hi):
            value = sum([c * x[i] for i, c in terms])
            if not low - tol <= value <= high + tol:
                return False
        return True

    def _solve(self, request: list[float], limits: _Limits) -> Projection:
        lo, hi = limits.lo, limits.hi
        self._model.update(f=-self._h_diag * np.array(request), bupper=np.array(hi + limits.row_hi),
                           blower=np.array(lo + limits.row_lo), sense=self._sense)
        x, _, flag, info = self._model.solve()
        iterations = int(info.get("iterations", 1)) or 1
        if flag != SOLVER_OPTIMAL:
            return self._fallback(limits, f"no action fits the envelope (QP exit flag {flag})", (), iterations)
        x = self._floats(x)
        # The solver's word is not taken: finite, inside the box (up to rounding, then clipped exactly)
        # and every row within tolerance, or it is treated as infeasible.
        tol = self._tol
        if x is None or not all(low - tol <= v <= high + tol for v, low, high in zip(x, lo, hi)):
            return self._fallback(limits, "QP answer failed the independent check (bounds)", (), iterations)
        x = [min(max(v, low), high) for v, low, high in zip(x, lo, hi)]
        if not self._rows_fit(x, limits):
            return self._fallback(limits, "QP answer failed the independent check (rows)", (), iterations)
        lam = np.asarray(info.get("lam", ()), dtype=float).reshape(-1)
        names = []
        for k in np.flatnonzero(np.abs(lam) > ACTIVE_MULTIPLIER):
            if k < self._n:
                names.append(self._bound(limits, k, lam[k] > 0))  # DAQP: positive = upper bound active
            elif k - self._n < len(self._row_names):
                names.append(self._row_names[k - self._n])
        return Projection(x, ProjectionStatus.CLIPPED, tuple(names), iterations, "")

    def _fallback(self, limits: _Limits, reason: str, names: tuple[str, ...], iterations: int = 0) -> Projection:
        """Infeasible this cycle: hold the setpoints in force if they still fit every hard limit, else release."""
        u_prev = limits.u_prev
        if (all(low <= v <= high for v, low, high in zip(u_prev, limits.lo, limits.hi))
                and self._rows_fit(u_prev, limits)):
            return Projection(list(u_prev), ProjectionStatus.HOLD, names, iterations, reason)
        return Projection(None, ProjectionStatus.RELEASE, names, iterations,
                          f"{reason}; the setpoints in force do not fit either")


@dataclass(frozen=True, slots=True)
class _Limits:
    """This cycle's limits: the per-MV box with the setpoints and period it came from, and the row bounds."""

    u_prev: list[float]
    u_dcs: list[float]
    dt: float
    lo: list[float]
    hi: list[float]
    row_lo: list[float]  # couplings, then process limits
    row_hi: list[float]
    pinned: list[bool]


def _terms(row: np.ndarray) -> tuple[tuple[int, float], ...]:
    return tuple((i, c) for i, c in enumerate(row.tolist()) if c)


def _release(reason: str) -> Projection:
    return Projection(None, ProjectionStatus.RELEASE, (), 0, reason)


def _finite(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
