"""The projector: the closest action to the model's request that fits the envelope (docs/ARCHITECTURE.md, The cycle).

    minimise  || W (u - u_requested) ||^2
    subject to  per MV:   absolute min/max, rate limits around u_prev, max deviation around u_dcs,
                          u = u_dcs for an MV that is not available, or whose DCS setpoint is
                          outside the AI's absolute range (left to the DCS)
                couplings (rows over the setpoints or over their deviations from the DCS setpoints)
                influence budget: sum_j b_j |u_j - u_dcs_j| <= B
                process limits, linearised about the setpoints now in force, against their warning
                threshold: y_now + S (u - u_prev) on the safe side of it (S: the conservative end of
                its fitted interval)

The influence budget is made linear exactly by an auxiliary split: one extra variable t_j per budgeted
MV with t_j >= u_j - u_dcs_j and t_j >= u_dcs_j - u_j, and sum_j b_j t_j <= B. The rows then allow
exactly the budget's set: nothing is given up to a conservative box (scaling every MV's box down so the
sum of the boxes fits the budget would forbid a large move of one MV that the budget allows). A tiny
cost on t (1e-6 of its MV's own weight) keeps the Hessian positive definite for the dual solver and
pulls t onto |u_j - u_dcs_j|; it also pulls u toward u_dcs by that relative amount, so the QP is first
solved with the budget's rows switched off (t free at 0, no effect: the exact projection), and only an
answer that overspends the budget is solved again with them. The fast path and every check evaluate
the budget directly.

A process threshold or a budget already crossed (by the process, or by the DCS moving its own setpoints)
must not lock the AI out, nor may the AI make it worse: its row becomes "no worse than now", so holding
the current setpoints always satisfies it and only moves that pull back are allowed. Likewise a coupling
crossed by an MV handed back to the DCS (a mill trip under a feeder bias) or by the DCS moving its own
setpoints: no worse than the setpoints in force with the MVs left to the DCS on its setpoints.

Retreat (requested by supervision when a measured value is inside its warning band, supervision.py):
the request becomes the DCS's own setpoints and every MV may only move from where it is toward its DCS
setpoint, at its rate limits; couplings and the budget still hold, the linearised process rows do not
apply (the DCS's own setpoints are the reference the limits are judged against). A hold (a limit whose
warning_action is hold, or any limit's off-delay once the value is back inside) is a retreat whose
request is the setpoints in force: nothing moves except an MV that follows the DCS (unavailable) or
that a move of the DCS's own setpoint leaves beyond its deviation limit.

The per-cycle box is the intersection of all per-MV limits. If it is empty (crossed bounds) the problem
is infeasible without asking a solver. If the clipped request satisfies every row, it is the answer (the
weighted projection onto a box is the clip, and it is feasible). Otherwise a small QP is solved by DAQP,
a dual active-set solver set up once and cold-started each cycle, with an iteration limit and no clock,
so an answer depends only on its inputs and replays bit for bit on any machine. Every answer is checked
independently; any doubt counts as infeasible, and then the last applied setpoints are held if they still
fit, else control is released. project() never raises.

The per-cycle path (box, clip, row checks) runs on Python floats over sparse rows: on vectors of
fifteen, each numpy call costs more than its work, and a cycle that starts with cold caches after
the idle wait pays that overhead several times over. The rare QP path uses numpy and DAQP.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import daqp
import numpy as np

from boiler_ai.control.envelope import Envelope, Retreat
from boiler_ai.messages.record import ProjectionStatus

SOLVER_INF = 1e30  # DAQP's infinity; np.inf makes it return NaN with a "solved" flag
AUX_WEIGHT = 1e-6  # cost on a budget auxiliary variable, relative to its MV's weight
SOLVER_PRIMAL_TOL = 1e-9  # rows may be violated by this much; far inside the check tolerance
ACTIVE_MULTIPLIER = 1e-12  # a constraint binds when its multiplier is above rounding noise (~1e-17)
_EQUALITY, _INEQUALITY = 5, 0  # DAQP constraint sense flags
_OVER_BUDGET = "QP answer over the influence budget"
_LO_NAMES = ("min", "rate_down", "deviation_low", "retreat")
_HI_NAMES = ("max", "rate_up", "deviation_high", "retreat")


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
        self._n = len(e.mv_names)
        # Our own acceptance checks use half the guard's slack, so rounding differences between our
        # arithmetic and the guard's can never turn an accepted answer into a guard block.
        self._tol = e.guard_tolerance / 2
        self._conditional = e.conditions()  # available_when and the operator's per-MV AI enable
        # Per MV, for the per-cycle box: (min, max, rate up /s, rate down /s, max deviation from the DCS).
        self._box = list(zip(e.lo.tolist(), e.hi.tolist(), e.rate_up.tolist(), e.rate_down.tolist(),
                             e.max_dev.tolist()))
        # Rows as (MV index, coefficient) pairs of their non-zero terms: a coupling touches a few MVs.
        # (lower, upper, on the deviation from the DCS, terms) per coupling; (upper limit?, warning
        # threshold, terms) per process limit.
        self._coupling_bounds = [(c.limit if c.relation != "at_most" else -SOLVER_INF,
                                  c.limit if c.relation != "at_least" else SOLVER_INF,
                                  c.basis == "deviation_from_dcs", _terms(c.coefficients)) for c in e.couplings]
        self._process_bounds = [(p.relation == "at_most", p.warning, _terms(p.sensitivity)) for p in e.process_limits]
        self._equal_rows = [c.relation == "equal" for c in e.couplings]  # coupling rows DAQP takes as equalities
        self._row_terms = [b[3] for b in self._coupling_bounds] + [b[2] for b in self._process_bounds]
        self._budget = _terms(e.budget.weights)  # (MV index, weight) of the budgeted MVs
        self._budget_limit = e.budget.limit
        self._row_names = (tuple(f"coupling:{c.name}" for c in e.couplings)
                           + tuple(f"process:{p.name}" for p in e.process_limits))
        self._setup_qp()

    def _setup_qp(self) -> None:
        """The QP over [u; t]: u the MVs, t one auxiliary per budgeted MV (module docstring). Rows:
        couplings, process limits, then per budgeted MV t - u >= -u_dcs and t + u >= u_dcs, then the budget."""
        e, n = self.envelope, self._n
        budget = self._budget
        m = len(budget)
        rows = [np.r_[c.coefficients, np.zeros(m)] for c in e.couplings]
        rows += [np.r_[p.sensitivity, np.zeros(m)] for p in e.process_limits]
        for k, (i, _) in enumerate(budget):
            for sign in (-1.0, 1.0):
                row = np.zeros(n + m)
                row[i], row[n + k] = sign, 1.0
                rows.append(row)
        last = np.zeros(n + m)
        last[n:] = [w for _, w in budget]
        rows.append(last)
        self._h_diag = np.r_[e.weights ** 2, [AUX_WEIGHT * e.weights[i] ** 2 for i, _ in budget]]
        # the linear cost's constant factor and its zero block over t: a cycle only multiplies in the request
        self._f_factor, self._f_aux = -self._h_diag[:n], np.zeros(m)
        self._sense = np.array([_INEQUALITY] * (n + m)
                               + [_EQUALITY if c.relation == "equal" else _INEQUALITY for c in e.couplings]
                               + [_INEQUALITY] * (len(e.process_limits) + 2 * m + 1), dtype=np.int32)
        model = daqp.Model()
        settings = model.settings
        # An iteration limit, not a time limit: the answer must not depend on how busy the machine is.
        settings.update(primal_tol=SOLVER_PRIMAL_TOL, iter_limit=e.iteration_limit, time_limit=0.0)
        model.settings = settings
        upper = np.full(n + m + len(rows), SOLVER_INF)
        lower = np.full(n + m + len(rows), -SOLVER_INF)
        flag = model.setup(np.diag(self._h_diag), np.zeros(n + m), np.array(rows), upper, lower, self._sense)[0]
        if flag < 0:
            raise RuntimeError(f"DAQP setup failed with exit flag {flag} for {e.source}")
        self._model = model

    def project(self, requested: np.ndarray, u_prev: np.ndarray, u_dcs: np.ndarray,
                process_now: Mapping[str, float], available: Mapping[str, bool], dt: float,
                retreat: Retreat = Retreat.NONE) -> Projection:
        """The action to write, in envelope MV order; see the module docstring.

        u_prev: setpoints in force (last applied, or the DCS setpoints while not active);
        process_now: current value of every process-limit signal; available: value of every
        `available_when` signal (missing = false); dt: seconds until the next cycle's setpoints;
        retreat: supervision's request to move back toward the DCS setpoints, or to stand still (either way
        the policy's request is ignored).
        """
        try:
            return self._project(requested, u_prev, u_dcs, process_now, available, dt, retreat)
        except Exception as exc:  # noqa: BLE001 -- a bug here must hand control back, never crash the cycle
            return Projection(None, ProjectionStatus.RELEASE, (), 0, f"projector error: {exc!r}")

    def _project(self, requested, u_prev, u_dcs, process_now, available, dt, mode: Retreat) -> Projection:
        retreat = mode is not Retreat.NONE  # a hold is a retreat whose request is the setpoints in force
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

        limits = self._limits(u_prev, u_dcs, y_now, available, dt, retreat)
        lo, hi = limits.lo, limits.hi
        crossed = [i for i in range(self._n) if lo[i] > hi[i]]
        if crossed:
            i = crossed[0]
            names = tuple(self._bound(limits, j, upper) for j in crossed for upper in (False, True))
            low, high = (self._bound(limits, i, upper).split(":")[1] for upper in (False, True))
            return self._fallback(limits, f"no setpoint fits {self.envelope.mv_names[i]}: its {low} bound "
                                          f"{lo[i]:g} is above its {high} bound {hi[i]:g}", names)
        request = u_prev if mode is Retreat.HOLD else u_dcs if retreat else self._floats(requested)
        if request is None:
            return self._fallback(limits, "requested action missing or not finite", ())

        # the clip, as np.clip computes it: bounds are not crossed here
        clipped = [min(max(r, low), high) for r, low, high in zip(request, lo, hi)]
        if self._fits(clipped, limits):
            names = tuple(self._bound(limits, i, r > hi[i])
                          for i, (c, r) in enumerate(zip(clipped, request)) if c != r)
            status = ProjectionStatus.RETREAT if retreat else (
                ProjectionStatus.CLIPPED if names else ProjectionStatus.OK)
            return Projection(clipped, status, names, 0, "")
        return self._solve(request, limits, retreat)

    def _floats(self, values) -> list[float] | None:
        """`values` as n finite Python floats, or None."""
        try:
            floats = list(map(float, np.ravel(values).tolist() if isinstance(values, np.ndarray) else values))
        except (TypeError, ValueError):
            return None
        if len(floats) != self._n or not all(map(math.isfinite, floats)):
            return None
        return floats

    def usage(self, u: list[float], u_dcs: list[float]) -> float:
        """How much of the influence budget the setpoints `u` use against the DCS setpoints."""
        return sum([w * abs(u[i] - u_dcs[i]) for i, w in self._budget])

    def _limits(self, u_prev, u_dcs, y_now, available, dt, retreat) -> _Limits:
        # A DCS setpoint outside the AI's range (a burner level starting up from its cooling position,
        # say) leaves that MV to the DCS until it is back inside: following the DCS is never a risk.
        pinned = [not low <= dcs <= high for dcs, (low, high, _, _, _) in zip(u_dcs, self._box)]
        for i, signal in self._conditional:
            if not available.get(signal, False):
                pinned[i] = True
        # The box is the tightest of: absolute, rate around u_prev, deviation around u_dcs; a pinned
        # MV is the DCS setpoint (it moves as the DCS moves it, not at the AI's rate). In a retreat,
        # also between the setpoint in force and the DCS's. Which one binds is only worked out when a
        # name is needed (_bound), off the hot path.
        lo: list[float] = []
        hi: list[float] = []
        for prev, dcs, pin, (low, high, up, down, dev) in zip(u_prev, u_dcs, pinned, self._box):
            if pin:
                lo.append(dcs)
                hi.append(dcs)
            elif retreat:
                lo.append(max(low, prev - down * dt, dcs - dev, min(prev, dcs)))
                hi.append(min(high, prev + up * dt, dcs + dev, max(prev, dcs)))
            else:
                lo.append(max(low, prev - down * dt, dcs - dev))
                hi.append(min(high, prev + up * dt, dcs + dev))

        row_lo: list[float] = []
        row_hi: list[float] = []
        for low, high, on_deviation, terms in self._coupling_bounds:
            offset = sum([c * u_dcs[i] for i, c in terms]) if on_deviation else 0.0
            low, high = low + offset, high + offset
            # A coupling the setpoints in force no longer meet once the MVs left to the DCS are on its
            # setpoints (a mill tripped under a feeder bias, say) must not lock the AI out: no worse than that.
            held = sum([c * (u_dcs[i] if pinned[i] else u_prev[i]) for i, c in terms])
            row_lo.append(min(low, held))
            row_hi.append(max(high, held))
        # Process rows as bounds on S u: S u_prev + room left to the warning threshold, never less
        # than no change. None in a retreat.
        for (upper, threshold, terms), now in zip(self._process_bounds, y_now):
            if retreat:
                row_lo.append(-SOLVER_INF)
                row_hi.append(SOLVER_INF)
                continue
            base = sum([c * u_prev[i] for i, c in terms])
            room = threshold - now
            if upper:
                row_lo.append(-SOLVER_INF)
                row_hi.append(base + (room if room > 0.0 else 0.0))
            else:
                row_lo.append(base + (room if room < 0.0 else 0.0))
                row_hi.append(SOLVER_INF)
        budget = max(self._budget_limit, self.usage(u_prev, u_dcs))
        return _Limits(u_prev, u_dcs, dt, lo, hi, row_lo, row_hi, budget, pinned, retreat)

    def _bound(self, limits: _Limits, i: int, upper: bool) -> str:
        """Name of the per-MV limit that sets MV i's lower (or upper) bound this cycle: the first of
        absolute, rate, deviation (and in a retreat, the setpoint in force or the DCS's) that is
        tightest, as in _limits."""
        if limits.pinned[i]:
            return f"{self.envelope.mv_names[i]}:unavailable"
        low, high, up, down, dev = self._box[i]
        u_prev, u_dcs, dt = limits.u_prev[i], limits.u_dcs[i], limits.dt
        if upper:
            candidates = (high, u_prev + up * dt, u_dcs + dev) + ((max(u_prev, u_dcs),) if limits.retreat else ())
            kind = _HI_NAMES[candidates.index(min(candidates))]
        else:
            candidates = (low, u_prev - down * dt, u_dcs - dev) + ((min(u_prev, u_dcs),) if limits.retreat else ())
            kind = _LO_NAMES[candidates.index(max(candidates))]
        return f"{self.envelope.mv_names[i]}:{kind}"

    def _fits(self, x: list[float], limits: _Limits) -> bool:
        """x (inside the box) meets every row and the influence budget."""
        return self._rows_fit(x, limits) and self.usage(x, limits.u_dcs) <= limits.budget + self._tol

    def _rows_fit(self, x: list[float], limits: _Limits) -> bool:
        tol = self._tol
        for terms, low, high in zip(self._row_terms, limits.row_lo, limits.row_hi):
            value = sum([c * x[i] for i, c in terms])
            if not low - tol <= value <= high + tol:
                return False
        return True

    def _solve(self, request: list[float], limits: _Limits, retreat: bool) -> Projection:
        """The QP, first without the budget's rows (its auxiliaries are then free at 0 and cost nothing,
        so the answer is the exact projection); only if that answer overspends the budget, again with them."""
        first = self._qp(request, limits, retreat, budget=False)
        if isinstance(first, Projection):
            return first
        # Decided here, not by the first answer's fallback: whether the setpoints in force still fit
        # (they may not once the DCS has moved its own) says nothing about the budgeted QP.
        second = self._qp(request, limits, retreat, budget=True)
        if isinstance(second, Projection):
            return dataclasses.replace(second, iterations=first + second.iterations)
        return self._fallback(limits, _OVER_BUDGET, (), first + second)

    def _qp(self, request: list[float], limits: _Limits, retreat: bool, budget: bool) -> Projection | int:
        """The projection, or (its answer over the influence budget) the solver iterations it took."""
        lo, hi, n = limits.lo, limits.hi, self._n
        u_dcs = limits.u_dcs
        m = len(self._budget)
        # t_j in [0, inf); rows t - u >= -u_dcs and t + u >= u_dcs per budgeted MV; then the budget
        aux_lo = [v for i, _ in self._budget for v in (-u_dcs[i], u_dcs[i])] if budget else [-SOLVER_INF] * (2 * m)
        upper = np.array(hi + [SOLVER_INF] * m + limits.row_hi + [SOLVER_INF] * (2 * m)
                         + [limits.budget if budget else SOLVER_INF])
        lower = np.array(lo + [0.0] * m + limits.row_lo + aux_lo + [-SOLVER_INF])
        f = np.concatenate((self._f_factor * np.array(request), self._f_aux))
        # an equality coupling left crossed (_limits: no worse than the setpoints in force) is an interval
        widened = [n + m + k for k, equal in enumerate(self._equal_rows)
                   if equal and limits.row_lo[k] != limits.row_hi[k]]
        sense = self._sense
        if widened:
            sense = sense.copy()
            sense[widened] = _INEQUALITY
        self._model.update(f=f, bupper=upper, blower=lower, sense=sense)
        x, _, flag, info = self._model.solve()
        iterations = int(info.get("iterations", 1)) or 1
        # Any positive exit flag is a candidate answer (DAQP 0.11 also answers 4 where the budget's
        # rows are tight; measured on the adversarial day): the checks below decide, not the flag.
        if flag <= 0:
            return self._fallback(limits, f"no action fits the envelope (QP exit flag {flag})", (), iterations)
        x = self._floats(np.asarray(x)[:n])
        # The solver's word is not taken: finite, inside the box (up to rounding, then clipped exactly)
        # and every row and the budget within tolerance, or it is treated as infeasible.
        tol = self._tol
        if x is None or not all(low - tol <= v <= high + tol for v, low, high in zip(x, lo, hi)):
            return self._fallback(limits, "QP answer failed the independent check (bounds)", (), iterations)
        x = [min(max(v, low), high) for v, low, high in zip(x, lo, hi)]
        if not self._rows_fit(x, limits):
            return self._fallback(limits, "QP answer failed the independent check (rows)", (), iterations)
        if self.usage(x, u_dcs) > limits.budget + tol:
            return iterations
        lam = np.asarray(info.get("lam", ()), dtype=float).reshape(-1)
        names = []
        n_rows = len(self._row_names)
        # as Python ints and floats: a handful of constraints, each cheaper so than as numpy scalars
        active, lam = np.flatnonzero(np.abs(lam) > ACTIVE_MULTIPLIER).tolist(), lam.tolist()
        for k in active:
            if k < n:
                names.append(self._bound(limits, k, lam[k] > 0))  # DAQP: positive = upper bound active
            elif n + m <= k < n + m + n_rows:
                names.append(self._row_names[k - n - m])
            elif k >= n + m + n_rows and "influence_budget" not in names:
                names.append("influence_budget")
        status = ProjectionStatus.RETREAT if retreat else ProjectionStatus.CLIPPED
        return Projection(x, status, tuple(names), iterations, "")

    def _fallback(self, limits: _Limits, reason: str, names: tuple[str, ...], iterations: int = 0) -> Projection:
        """Infeasible this cycle: hold the setpoints in force if they still fit every hard limit, else release."""
        u_prev = limits.u_prev
        if all(low <= v <= high for v, low, high in zip(u_prev, limits.lo, limits.hi)) and self._fits(u_prev, limits):
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
    budget: float  # the influence budget this cycle: the envelope's, or what u_prev already uses if more
    pinned: list[bool]
    retreat: bool


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
