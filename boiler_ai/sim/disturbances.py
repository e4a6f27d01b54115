"""What varies on a real unit between scheduled events: the disturbances of the reference unit.

Each disturbance is switched and sized per scenario (`Disturbances`) and driven by its own random
stream spawned from the unit's seed, so switching one off leaves the others' realisations unchanged.
Most are Ornstein-Uhlenbeck processes (mean-reverting noise with a standard deviation and a time
constant); their sizes are this unit's assumptions unless the docstring of the field cites a range.

- coal-flow pulsation out of each mill (fast surges and slow inventory swings) and a fixed
  calibration error of each gravimetric feeder;
- continuous coal-quality variation (moisture, ash, volatile matter; the heating value follows from
  the analysis) about the scenario's named coal, with the lab's analysis of a shift composite
  arriving hours later;
- the flame wandering about its mean height (the furnace's heat absorption and steam temperatures
  move with it);
- a drifting secondary-air imbalance between burner levels (damper linkages, duct deposits);
- slagging that grows with furnace exit gas temperature and ash, and sheds at random;
- weather: ambient temperature and humidity beyond the daily cycle;
- air-heater leakage that drifts (seal wear).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from boiler_ai.sim.clamp import clamp
from boiler_ai.sim.coal import Coal
from boiler_ai.sim.fireside import N_LEVELS

_BLOCK = 1024


@dataclass(frozen=True)
class Disturbances:
    """Sizes of the disturbances a scenario runs (0 or False switches one off). *assumptions* unless noted."""

    feeder_pulsation_pct: float = 1.5  # std of each mill's fast output surges (tau 20 s)
    feeder_swing_pct: float = 1.2  # std of each mill's slow inventory swings (tau 150 s)
    feeder_calibration_pct: float = 1.0  # std of each gravimetric feeder's fixed error (0.5-1 % class)
    coal_moisture_pt: float = 1.2  # std of as-fired moisture about the named coal, percentage points (tau 3 h)
    coal_ash_pt: float = 1.5  # std of ash, percentage points (tau 4 h)
    coal_volatile_pt: float = 2.0  # std of volatile matter daf, percentage points (tau 4 h)
    lab_composite_h: float = 8.0  # the lab analyses one composite sample per shift ...
    lab_delay_h: float = 4.0  # ... and reports it this long after the shift ends
    flame_wander: float = 0.085  # std of the fireball's height wandering (0-1 = level A-F; tau 90 s)
    windbox_drift_pct: float = 3.0  # std of each burner level's secondary-air imbalance drift (tau 6 h)
    slag_growth: bool = True  # slag grows with FEGT and ash (False: the scenario's fixed rate)
    slag_shedding_per_h: float = 0.6  # rate of shedding events at full slag (fewer with less slag)
    weather_c: float = 1.5  # std of ambient temperature beyond the daily cycle (tau 3 h)
    airheater_leakage_pct: float = 8.0  # mean rotary air-heater leakage, % of gas flow (typical 5-10 %)
    airheater_leakage_drift_pct: float = 1.0  # std of its drift (tau 12 h)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, bool) and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"Disturbances.{f.name} must be a finite number >= 0, got {v!r}")
        if self.lab_composite_h <= 0:
            raise ValueError("Disturbances.lab_composite_h must be > 0")


NO_DISTURBANCES = Disturbances(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 8.0, 4.0, 0.0, 0.0, False, 0.0, 0.0, 8.0, 0.0)


class _OU:
    """A bank of independent Ornstein-Uhlenbeck processes stepped at a fixed dt, exact discretisation."""

    __slots__ = ("x", "a", "b", "_rng", "_rows", "_i")

    def __init__(self, rng: np.random.Generator, n: int, std: float, tau_s: float, dt: float = 1.0):
        self._rng = rng
        self.a = math.exp(-dt / tau_s)
        self.b = std * math.sqrt(1.0 - self.a * self.a)
        self.x = (rng.standard_normal(n) * std).tolist()  # start in the stationary distribution
        self._rows: list[list[float]] = []
        self._i = _BLOCK

    def step(self) -> list[float]:
        if self._i >= _BLOCK:
            self._rows = self._rng.standard_normal((_BLOCK, len(self.x))).tolist()
            self._i = 0
        row = self._rows[self._i]
        self._i += 1
        a, b, x = self.a, self.b, self.x
        x[:] = [a * v + b * r for v, r in zip(x, row)]
        return x


def vary_coal(coal: Coal, d_moisture: float, d_ash: float, d_volatile: float) -> Coal:
    """The named coal with more or less moisture and ash: the combustible part keeps its dry ash-free
    analysis and heating value, so carbon, hydrogen ... and the HHV scale with 1 - moisture - ash."""
    m = clamp(coal.moisture_pct + d_moisture, 1.0, 40.0)
    a = clamp(coal.ash_pct + d_ash, 2.0, 45.0)
    k = (100.0 - m - a) / (100.0 - coal.moisture_pct - coal.ash_pct)
    return Coal(name=coal.name, carbon_pct=coal.carbon_pct * k, hydrogen_pct=coal.hydrogen_pct * k,
                nitrogen_pct=coal.nitrogen_pct * k, sulfur_pct=coal.sulfur_pct * k, oxygen_pct=coal.oxygen_pct * k,
                moisture_pct=m, ash_pct=a, hhv_kj_per_kg=coal.hhv_kj_per_kg * k,
                volatile_daf_pct=clamp(coal.volatile_daf_pct + d_volatile, 5.0, 60.0), hgi=coal.hgi)


_COAL_FIELDS = ("carbon_pct", "hydrogen_pct", "nitrogen_pct", "sulfur_pct", "oxygen_pct", "moisture_pct", "ash_pct",
                "hhv_kj_per_kg", "volatile_daf_pct", "hgi")


class LabAnalysis:
    """The coal analysis the DCS's performance calculation uses: the shift composite's, reported late."""

    def __init__(self, first: Coal, composite_s: float, delay_s: float):
        self.coal = first
        self._composite_s, self._delay_s = composite_s, delay_s
        self._sum = [0.0] * len(_COAL_FIELDS)
        self._n = 0
        self._shift_end = composite_s
        self._pending: list[tuple[float, Coal]] = []

    def sample(self, t: float, coal: Coal, dt: float) -> None:
        s = self._sum
        for k, name in enumerate(_COAL_FIELDS):
            s[k] += getattr(coal, name) * dt
        self._n += dt
        if t >= self._shift_end:
            mean = {name: s[k] / self._n for k, name in enumerate(_COAL_FIELDS)}
            total = sum(mean[n] for n in _COAL_FIELDS[:7])
            for n in _COAL_FIELDS[:7]:  # a composite of analyses that each sum to 100 does too; keep it exact
                mean[n] *= 100.0 / total
            self._pending.append((self._shift_end + self._delay_s, Coal(name=f"lab composite to {t / 3600:.0f} h",
                                                                         **mean)))
            self._sum = [0.0] * len(_COAL_FIELDS)
            self._n = 0
            self._shift_end += self._composite_s
        while self._pending and self._pending[0][0] <= t:
            self.coal = self._pending.pop(0)[1]


class DisturbanceState:
    """The disturbances now. Stepped once per second by the unit."""

    def __init__(self, d: Disturbances, seed: int, first_coal: Coal):
        self.spec = d
        streams = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, 11]).spawn(9)]
        self._fast = _OU(streams[0], N_LEVELS, 0.01 * d.feeder_pulsation_pct, 20.0)
        self._slow = _OU(streams[1], N_LEVELS, 0.01 * d.feeder_swing_pct, 150.0)
        self.calibration = (streams[2].standard_normal(N_LEVELS) * 0.01 * d.feeder_calibration_pct).tolist()
        self._coal = _OU(streams[3], 3, 1.0, 3.5 * 3600.0)
        self._windbox = _OU(streams[4], N_LEVELS, 0.01 * d.windbox_drift_pct, 6 * 3600.0)
        self._weather = _OU(streams[5], 2, 1.0, 3 * 3600.0)
        self._shed_rng = streams[6]
        self._wander = _OU(streams[8], 1, d.flame_wander, 90.0)
        self.fireball_shift = 0.0
        self.pulsation = [0.0] * N_LEVELS  # relative surge of each mill's output now
        self.windbox = list(self._windbox.x)  # relative deviation of each level's air passage
        self.coal_dev = (0.0, 0.0, 0.0)  # moisture, ash, volatile deviations (points)
        self.weather_c = 0.0
        self.humidity_dev = 0.0  # relative-humidity deviation, fraction
        self.leakage_pct = d.airheater_leakage_pct
        self._leak = _OU(streams[7], 1, d.airheater_leakage_drift_pct, 12 * 3600.0)
        self.shedding = 0.0  # fraction of the slag falling per second while a fall is in progress
        self._shed_left = 0.0
        self.lab = LabAnalysis(first_coal, 3600.0 * d.lab_composite_h, 3600.0 * d.lab_delay_h)
        self.step(0.0)

    def step(self, slag: float) -> None:
        d = self.spec
        fast, slow = self._fast.step(), self._slow.step()
        self.pulsation = [a + b for a, b in zip(fast, slow)]
        self.windbox = self._windbox.step()
        self.fireball_shift = self._wander.step()[0]
        c = self._coal.step()
        self.coal_dev = (d.coal_moisture_pt * c[0], d.coal_ash_pt * c[1], d.coal_volatile_pt * c[2])
        w = self._weather.step()
        self.weather_c = d.weather_c * w[0]
        self.humidity_dev = 0.1 * (1.0 if d.weather_c > 0 else 0.0) * w[1]
        self.leakage_pct = max(d.airheater_leakage_pct + self._leak.step()[0], 0.0)
        # Slag shedding: a fall starts at random (more often with more slag), takes a quarter to
        # two thirds of the slag off over about a minute.
        if self._shed_left > 0.0:
            self._shed_left -= 1.0
            if self._shed_left <= 0.0:
                self.shedding = 0.0
        elif d.slag_shedding_per_h > 0 and self._shed_rng.random() < d.slag_shedding_per_h * slag / 3600.0:
            self._shed_left = 60.0
            self.shedding = float(self._shed_rng.uniform(0.25, 0.67)) / 60.0
