"""The steady-state oracle: the best unit heat rate (by default; or boiler efficiency) the manipulated
variables can reach within the envelope, for a load, a coal and the unit's condition. The upper bound
every controller is measured by; both figures are reported whichever is maximised.

Solved with scipy's SLSQP on the steady state of the unit's own model (boiler_ai.sim.steady), from the
DCS's setting and a few other starts. Decision variables: the biases of the feeders in service, the
secondary-air dampers of the firing levels, both SOFA dampers and the O2 set-point bias; idle levels and
feeders keep the DCS's values (the envelope makes them unavailable). The spray valves only move steam
temperatures, not boiler efficiency: at the optimum they sit where the spray loops would put them, and
the steam-temperature limits are checked with them there.

Limits: the envelope file's MV ranges, deviations from the DCS setpoints, couplings, process limits and
influence budget (constraints/reference_unit.yaml, read with the daemon's own loader): whatever the
envelope forbids the AI is no headroom; without the file, the tag map's ranges, the DCS clamps and the
unit's PROCESS_LIMITS.

    python -m boiler_ai.sim.oracle --scenario agc_day_24h
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from boiler_ai.sim.dcs import I_FEEDER, I_O2, I_SA, I_SOFA, I_SPRAY, MV_NAMES, MV_RANGE, DcsConfig
from boiler_ai.sim.fireside import N_LEVELS
from boiler_ai.sim.scenario import Scenario, named_scenario
from boiler_ai.sim.steady import OperatingPoint, SteadyPoint
from boiler_ai.sim.unit import PROCESS_LIMITS, ReferenceUnit, default_tag_map_path, project_file

# Each tag's value at a steady point (the signals process limits are written on).
_STEADY_VALUE = {
    "o2_economiser_pct": lambda sp: sp.fire.o2_pct, "co_ppm": lambda sp: sp.fire.co_ppm,
    "nox_mg_nm3": lambda sp: sp.fire.nox_mg_nm3, "main_steam_temp_c": lambda sp: sp.main_steam_c,
    "reheat_steam_temp_c": lambda sp: sp.reheat_c, "airheater_exit_gas_temp_c": lambda sp: sp.fire.airheater_exit_c,
    "carbon_in_fly_ash_pct": lambda sp: sp.fire.carbon_in_fly_ash_pct,
    "furnace_exit_gas_temp_c": lambda sp: sp.fire.fegt_c, "windbox_furnace_dp_kpa": lambda sp: sp.fire.windbox_dp_kpa,
}


def steady_signal(sp: SteadyPoint, signal: str) -> float:
    """A tag's value at a steady point (the signals process limits are written on)."""
    return _STEADY_VALUE[signal](sp)


@dataclass(frozen=True)
class Coupling:
    basis: str  # "setpoint" or "deviation_from_dcs"
    coefficients: tuple[float, ...]  # per MV in MV_NAMES order
    relation: str  # "equal", "at_most", "at_least"
    limit: float


@dataclass(frozen=True)
class OracleLimits:
    """What the oracle may do: absolute MV ranges, deviation from the DCS setpoint, couplings, process limits
    and the influence budget (sum of weight x |setpoint - DCS setpoint| <= limit; none without an envelope)."""

    source: str
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    max_dev: tuple[float, ...]
    couplings: tuple[Coupling, ...]
    process: tuple[tuple[str, str, str, float], ...]  # (name, signal, relation, limit)
    budget_weights: tuple[float, ...] = ()  # per MV in MV_NAMES order
    budget_limit: float = math.inf

    @staticmethod
    def default() -> OracleLimits:
        """The tag map's ranges, the DCS-side clamps and the unit's process limits."""
        clamp = DcsConfig().clamp
        balance = Coupling("deviation_from_dcs", tuple(1.0 if n.startswith("feeder_") else 0.0 for n in MV_NAMES),
                           "equal", 0.0)
        return OracleLimits("tag map ranges, DCS clamps, PROCESS_LIMITS",
                            tuple(MV_RANGE[n][0] for n in MV_NAMES), tuple(MV_RANGE[n][1] for n in MV_NAMES),
                            tuple(clamp[n] for n in MV_NAMES), (balance,),
                            tuple((k, *v) for k, v in PROCESS_LIMITS.items()))

    @staticmethod
    def from_envelope(path: str | Path, tag_map_path: str | Path) -> OracleLimits:
        """The daemon's envelope file, read by the daemon's own loader (so both see the same limits)."""
        from boiler_ai.control.envelope import load_envelope
        from boiler_ai.tagmap import load_tag_map

        env = load_envelope(path, load_tag_map(tag_map_path))
        # A DCS setpoint the envelope does not list is not the AI's to move: held at the DCS's value.
        idx = [env.mv_names.index(n) if n in env.mv_names else None for n in MV_NAMES]
        signals = set(STEADY_SIGNALS)
        skipped = [p.signal for p in env.process_limits if p.signal not in signals]
        if skipped:
            raise ValueError(f"{path}: the oracle has no steady-state value for {', '.join(skipped)}")

        def per_mv(values, absent: float) -> tuple[float, ...]:
            return tuple(absent if i is None else float(values[i]) for i in idx)

        return OracleLimits(
            str(path), per_mv(env.lo, -math.inf), per_mv(env.hi, math.inf), per_mv(env.max_dev, 0.0),
            tuple(Coupling(c.basis, per_mv(c.coefficients, 0.0), c.relation, c.limit) for c in env.couplings),
            tuple((p.name, p.signal, p.relation, p.limit) for p in env.process_limits),
            per_mv(env.budget.weights, 0.0), float(env.budget.limit))


STEADY_SIGNALS = tuple(_STEADY_VALUE)


def default_limits() -> OracleLimits:
    """The envelope shipped with the package if it is there, else OracleLimits.default()."""
    envelope = project_file("constraints", "reference_unit.yaml")
    if envelope.exists():
        return OracleLimits.from_envelope(envelope, default_tag_map_path())
    return OracleLimits.default()


# MV groups, for the decomposition of the headroom: which setpoints each may move.
MV_GROUPS: dict[str, tuple[int, ...]] = {
    "o2_bias": (I_O2,), "sofa_dampers": (I_SOFA, I_SOFA + 1), "sa_dampers": tuple(range(I_SA, I_SOFA)),
    "feeder_biases": tuple(range(I_FEEDER, I_SA)),
}
OBJECTIVES = ("heat_rate", "efficiency")


@dataclass
class OracleResult:
    baseline: SteadyPoint  # the DCS's own setting
    best: SteadyPoint
    feasible_baseline: bool
    violations_baseline: list[str]

    @property
    def headroom_pct(self) -> float:
        """Boiler efficiency gained, percentage points (HHV)."""
        return self.best.efficiency_pct - self.baseline.efficiency_pct

    @property
    def heat_rate_headroom_pct(self) -> float:
        """Unit heat rate saved, % of the DCS's."""
        return 100.0 * (1.0 - self.best.heat_rate_kj_kwh / self.baseline.heat_rate_kj_kwh)

    def summary(self) -> dict:
        b, o = self.baseline, self.best
        return {"load_mw": round(b.load_mw, 1), "dcs_efficiency_pct": round(b.efficiency_pct, 3),
                "oracle_efficiency_pct": round(o.efficiency_pct, 3), "headroom_pct": round(self.headroom_pct, 3),
                "dcs_heat_rate_kj_kwh": round(b.heat_rate_kj_kwh, 1),
                "oracle_heat_rate_kj_kwh": round(o.heat_rate_kj_kwh, 1),
                "heat_rate_headroom_pct": round(self.heat_rate_headroom_pct, 3),
                "dcs_reheat_c": round(b.reheat_c, 1), "oracle_reheat_c": round(o.reheat_c, 1),
                "oracle_mvs": {n: round(v, 2) for n, v in zip(MV_NAMES, o.mvs)},
                "oracle_o2_pct": round(o.fire.o2_pct, 2), "dcs_o2_pct": round(b.fire.o2_pct, 2),
                "oracle_nox_mg_nm3": round(o.fire.nox_mg_nm3, 1), "oracle_co_ppm": round(o.fire.co_ppm, 1),
                "oracle_carbon_in_fly_ash_pct": round(o.fire.carbon_in_fly_ash_pct, 2),
                "dcs_carbon_in_fly_ash_pct": round(b.fire.carbon_in_fly_ash_pct, 2)}


BUDGET_SMOOTHING = 1e-3


def _residuals(sp: SteadyPoint, dcs_u: list[float], limits: OracleLimits, free: list[int]) -> list[float]:
    """Inequality residuals (>= 0 when satisfied) for everything but the plain bounds."""
    u = sp.mvs
    deviation = [a - b for a, b in zip(u, dcs_u)]
    out = []
    for i in free:  # the DCS setpoint of a damper follows its feeder, so this is not a plain bound
        out.append(limits.max_dev[i] - deviation[i])
        out.append(limits.max_dev[i] + deviation[i])
    for c in limits.couplings:
        if c.relation == "equal":
            continue
        x = u if c.basis == "setpoint" else deviation
        value = sum([k * v for k, v in zip(c.coefficients, x) if k])
        out.append(c.limit - value if c.relation == "at_most" else value - c.limit)
    if math.isfinite(limits.budget_limit):
        # |x| smoothed (a kink at 0 stalls SLSQP), on the conservative side by at most 0.1 % of each MV's band
        out.append(limits.budget_limit - sum([
            w * math.sqrt((a - b) ** 2 + (BUDGET_SMOOTHING * d) ** 2)
            for w, a, b, d in zip(limits.budget_weights, u, dcs_u, limits.max_dev) if w]))
    for _, signal, relation, limit in limits.process:
        y = _STEADY_VALUE[signal](sp)
        out.append(limit - y if relation == "at_most" else y - limit)
    return out


PULL_BACK = (1.0, 0.999, 0.997, 0.99, 0.98, 0.95, 0.9)


def _pulled_back(z: np.ndarray, feasible) -> np.ndarray | None:
    """SLSQP may stop a hair outside a curved limit (the budget, a process limit); the DCS's own setting
    (z = 0) is inside, so the first of a few points on the way back to it that is feasible, if any.
    Scaling keeps the fuel balance (its right-hand side is 0 at the DCS's setting)."""
    for a in PULL_BACK:
        if feasible(a * z):
            return a * z
    return None


def violations(sp: SteadyPoint, limits: OracleLimits, tol: float = 1e-6) -> list[str]:
    bad = []
    for name, signal, relation, limit in limits.process:
        y = steady_signal(sp, signal)
        if (relation == "at_most" and y > limit + tol) or (relation == "at_least" and y < limit - tol):
            bad.append(f"{name}: {signal} {y:.2f} vs {limit:g}")
    return bad


def solve(op: OperatingPoint, limits: OracleLimits, objective: str = "heat_rate",
          groups: tuple[str, ...] = tuple(MV_GROUPS)) -> OracleResult:
    """Best steady state at this operating point within the limits: the lowest unit heat rate (or the
    highest boiler efficiency), moving only the MVs of the given groups."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    base = op.evaluate()
    dcs_u = base.mvs
    allowed = {i for g in groups for i in MV_GROUPS[g]}
    serving = [i for i in range(N_LEVELS) if op.in_service[i]]
    movable = [i for i in range(len(MV_NAMES)) if i in allowed and limits.max_dev[i] > 0.0]
    biases = [I_FEEDER + i for i in serving if I_FEEDER + i in movable]
    if len(biases) < 2:  # the fuel balance leaves one feeder nothing to move
        biases = []
    dampers = [I_SA + i for i in serving if I_SA + i in movable]
    others = [i for i in (I_SOFA, I_SOFA + 1, I_O2) if i in movable]
    var = biases + dampers + others
    base_result = OracleResult(base, base, not violations(base, limits), violations(base, limits))
    if not var:
        return base_result
    scale = np.array([5.0] * len(biases) + [20.0] * len(dampers) + [1.0 if i == I_O2 else 20.0 for i in others])
    x0 = np.array([dcs_u[i] for i in var])
    # Plain bounds: absolute range, and deviation where the DCS setpoint does not move with the MVs.
    lo, hi = [], []
    for i in var:
        a, b = limits.lo[i], limits.hi[i]
        if i not in dampers:
            a, b = max(a, dcs_u[i] - limits.max_dev[i]), min(b, dcs_u[i] + limits.max_dev[i])
        lo.append(a)
        hi.append(b)
    lo_z, hi_z = (np.array(lo) - x0) / scale, (np.array(hi) - x0) / scale
    # Physical floor the envelope may not state: O2 at or above the process limit is in the residuals.
    cache: dict[bytes, tuple[SteadyPoint, list[float]]] = {}

    def at(z: np.ndarray) -> tuple[SteadyPoint, list[float]]:
        key = z.tobytes()
        if key not in cache:
            u = list(dcs_u)
            for k, i in enumerate(var):
                u[i] = float(x0[k] + scale[k] * z[k])
            u[I_SPRAY:] = dcs_u[I_SPRAY:]
            sp = op.evaluate(u)
            cache[key] = (sp, _residuals(sp, op.dcs_mvs(sp.feeders_tph), limits, dampers))
        return cache[key]

    equalities = []
    for c in limits.couplings:
        if c.relation == "equal":
            row = np.array([c.coefficients[i] * scale[k] for k, i in enumerate(var)])
            rhs = c.limit - sum(c.coefficients[i] * (x0[k] - (dcs_u[i] if c.basis == "deviation_from_dcs" else 0.0))
                                for k, i in enumerate(var))
            if np.any(row):
                equalities.append({"type": "eq", "fun": lambda z, r=row, b=rhs: float(r @ z - b),
                                   "jac": lambda z, r=row: r})
    constraints = [{"type": "ineq", "fun": lambda z: np.array(at(z)[1])}] + equalities
    hr0, eff0 = base.heat_rate_kj_kwh, base.efficiency_pct

    def cost(z: np.ndarray) -> float:
        """Heat rate change, % (or efficiency lost, points): near 0, so an absolute tolerance makes sense."""
        sp = at(z)[0]
        return 100.0 * (sp.heat_rate_kj_kwh / hr0 - 1.0) if objective == "heat_rate" else eff0 - sp.efficiency_pct

    best_z, best_cost = None, cost(np.zeros(len(var))) if min(at(np.zeros(len(var)))[1], default=0.0) >= -1e-4 \
        else math.inf
    o2_start = np.where(np.array(var) == I_O2, -0.5, 0.0)
    starts = [np.zeros(len(var))] + ([np.clip(o2_start, lo_z, hi_z)] if I_O2 in var else [])
    for z0 in starts:
        res = minimize(cost, z0, method="SLSQP", bounds=list(zip(lo_z, hi_z)),
                       constraints=constraints, options={"maxiter": 100, "ftol": 1e-6, "eps": 1e-5})
        z = _pulled_back(np.clip(res.x, lo_z, hi_z), lambda x: min(at(x)[1], default=0.0) >= -1e-4)
        if z is not None and all(abs(e["fun"](z)) < 1e-6 for e in equalities):
            c = cost(z)
            if c < best_cost:
                best_z, best_cost = z, c
    if best_z is None:
        return base_result
    return OracleResult(base, at(best_z)[0], base_result.feasible_baseline, base_result.violations_baseline)


@dataclass
class HeadroomReport:
    """The oracle against the DCS along a scenario, at operating points sampled from a DCS-only run."""

    scenario: str
    seed: int
    limits_source: str
    points: list[dict]
    dcs_run_efficiency_pct: float  # time average of the true efficiency over the DCS-only run
    violation_s: dict[str, float]  # process-limit violations of the DCS-only run (true values)
    objective: str = "heat_rate"

    @property
    def headroom_pct(self) -> list[float]:
        return [p["headroom_pct"] for p in self.points]

    def summary(self) -> dict:
        h = self.headroom_pct
        hr = [p["heat_rate_headroom_pct"] for p in self.points]

        def mean(key: str) -> float:
            return round(float(np.mean([p[key] for p in self.points])), 3)

        return {"scenario": self.scenario, "seed": self.seed, "points": len(h), "objective": self.objective,
                "mean_headroom_pct": round(float(np.mean(h)), 3), "min_headroom_pct": round(min(h), 3),
                "max_headroom_pct": round(max(h), 3),
                "mean_heat_rate_headroom_pct": round(float(np.mean(hr)), 3),
                "min_heat_rate_headroom_pct": round(min(hr), 3), "max_heat_rate_headroom_pct": round(max(hr), 3),
                "mean_dcs_efficiency_pct": mean("dcs_efficiency_pct"),
                "mean_oracle_efficiency_pct": mean("oracle_efficiency_pct"),
                "mean_dcs_heat_rate_kj_kwh": mean("dcs_heat_rate_kj_kwh"),
                "mean_oracle_heat_rate_kj_kwh": mean("oracle_heat_rate_kj_kwh"),
                "dcs_run_efficiency_pct": round(self.dcs_run_efficiency_pct, 3),
                "dcs_violation_s": {k: v for k, v in self.violation_s.items() if v},
                "limits": self.limits_source}


class OperatingPointSampler:
    """Rides along a DCS-only run of a scenario: every sample_s (mid-interval) it takes the unit's conditions
    (load demand, coal as fired, mills in service, slag, fouling, ambient, windbox imbalance, air-heater
    leakage) as an operating point, and keeps the run's mean true efficiency and process-limit seconds.
    A caller that runs the DCS alone anyway (the evaluation's baseline) hands it each step instead of
    simulating the same run twice."""

    def __init__(self, sample_s: float = 3600.0):
        self.sample_s = sample_s
        self.points: list[tuple[float, OperatingPoint]] = []
        self._next_t = sample_s / 2.0
        self._eff_sum, self._n = 0.0, 0
        self._unit: ReferenceUnit | None = None

    def after_step(self, unit: ReferenceUnit, perf: dict) -> None:
        self._eff_sum += perf["efficiency_pct"]
        self._n += 1
        if unit.t >= self._next_t:
            self._next_t += self.sample_s
            self.points.append((unit.t, unit.operating_point()))
        self._unit = unit

    def sampled(self) -> tuple[list[tuple[float, OperatingPoint]], float, dict[str, float]]:
        return self.points, self._eff_sum / max(self._n, 1), dict(self._unit.violation_s) if self._unit else {}


def sample_operating_points(scenario: Scenario, seed: int = 0, sample_s: float = 3600.0
                            ) -> tuple[list[tuple[float, OperatingPoint]], float, dict[str, float]]:
    """Run the scenario under the DCS alone and sample it (OperatingPointSampler)."""
    unit, sampler = ReferenceUnit(scenario, seed), OperatingPointSampler(sample_s)
    while unit.t < scenario.duration_s:
        unit.step()
        sampler.after_step(unit, unit.performance())
    return sampler.sampled()


def scenario_headroom(scenario: Scenario, seed: int = 0, sample_s: float = 3600.0,
                      limits: OracleLimits | None = None, objective: str = "heat_rate",
                      sampler: OperatingPointSampler | None = None) -> HeadroomReport:
    """The oracle against the DCS at operating points sampled from a DCS-only run of the scenario (the
    sampler of one the caller ran, or a run of its own)."""
    limits = limits or default_limits()
    sampled, eff, violation_s = sampler.sampled() if sampler is not None else \
        sample_operating_points(scenario, seed, sample_s)
    points = []
    for t, op in sampled:
        res = solve(op, limits, objective)
        points.append({"t_s": t, "coal": op.coal.name, "mills": "".join(
            m.upper() if s else "." for m, s in zip("abcdef", op.in_service)),
            "feasible_baseline": res.feasible_baseline, **res.summary()})
    return HeadroomReport(scenario.name, seed, limits.source, points, eff, violation_s, objective)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boiler_ai.sim.oracle", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="agc_day_24h", help="named scenario (default agc_day_24h)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-min", type=float, default=60.0, help="minutes between sampled operating points")
    parser.add_argument("--objective", choices=OBJECTIVES, default="heat_rate",
                        help="what the oracle maximises: unit heat rate improvement (default) or boiler efficiency")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = parser.parse_args(argv)
    report = scenario_headroom(named_scenario(args.scenario, args.seed), args.seed, args.sample_min * 60.0,
                               objective=args.objective)
    summary = report.summary()
    if not args.json:
        print(f"oracle vs DCS on {report.scenario} (seed {report.seed}), limits: {report.limits_source}")
        print(f"objective: {report.objective}")
        print(f"{'t h':>6} {'load MW':>8} {'mills':>7} {'coal':<20} {'DCS %':>7} {'oracle %':>8} {'eff +pt':>7}"
              f" {'HR -%':>6} {'O2 DCS->AI':>11} {'NOx AI':>7} {'RH DCS->AI':>12}")
        for p in report.points:
            print(f"{p['t_s'] / 3600:6.2f} {p['load_mw']:8.1f} {p['mills']:>7} {p['coal'][:20]:<20}"
                  f" {p['dcs_efficiency_pct']:7.2f} {p['oracle_efficiency_pct']:8.2f} {p['headroom_pct']:7.2f}"
                  f" {p['heat_rate_headroom_pct']:6.2f} {p['dcs_o2_pct']:5.2f}->{p['oracle_o2_pct']:<5.2f}"
                  f" {p['oracle_nox_mg_nm3']:7.0f} {p['dcs_reheat_c']:6.1f}->{p['oracle_reheat_c']:<5.1f}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
