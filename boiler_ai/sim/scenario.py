"""Scenarios: what happens to the unit over a run. Deterministic for a seed.

A scenario gives the AGC dispatch target over time (the DCS rate-limits it into the unit load demand),
the coal reaching the mills (switches blend in over a transition as the bunkers change over), slagging
and fouling drift between sootblows, the ambient temperature, measurement noise and analyser delay, and
events at given times: mill trips, master fuel trip, runback, loss and return of coordinated control,
sootblowing. Tests add their own events with `with_events`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace

import numpy as np

from boiler_ai.sim.coal import Coal, blend, coal_named
from boiler_ai.sim.disturbances import Disturbances
from boiler_ai.sim.mills import MILLS
from boiler_ai.sim.steam import RATED_MW

EVENT_KINDS = ("mill_trip", "mft", "runback", "coordinated_off", "coordinated_on", "sootblow")


@dataclass(frozen=True)
class Event:
    """Something that happens at time t (s): mill_trip (target: mill letter 'a'..'f'), mft, runback
    (target: the load in MW the unit runs back to), coordinated_off, coordinated_on, sootblow."""

    t: float
    kind: str
    target: str | float | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r} (known: {', '.join(EVENT_KINDS)})")
        if self.kind == "mill_trip" and (not isinstance(self.target, str) or self.target.lower() not in MILLS):
            raise ValueError(f"mill_trip needs a mill letter a-f as target, got {self.target!r}")
        if self.kind == "runback" and not (isinstance(self.target, (int, float)) and 0 < self.target <= RATED_MW):
            raise ValueError(f"runback needs a target load in MW, got {self.target!r}")
        if not math.isfinite(self.t) or self.t < 0:
            raise ValueError(f"event time must be a finite time >= 0, got {self.t!r}")


@dataclass(frozen=True)
class Scenario:
    name: str
    duration_s: float
    load_points: tuple[tuple[float, float], ...]  # (t s, AGC target MW), linear in between, held after the last
    initial_coal: str = "design_bituminous"
    coal_changes: tuple[tuple[float, str, float], ...] = ()  # (t s, coal name, transition s)
    initial_slag: float = 0.0  # waterwall slagging 0..1
    initial_fouling: float = 0.0  # convective-pass fouling 0..1
    slag_rate_per_h: float = 0.0
    fouling_rate_per_h: float = 0.0
    ambient_mean_c: float = 20.0
    ambient_swing_c: float = 0.0  # daily swing (amplitude), coldest at 05:00
    humidity_rh_pct: float = 60.0  # mean relative humidity (higher at night when the day swings)
    sootblow_every_h: float = 0.0  # the DCS's sootblowing schedule (0: only the events below)
    # Measurements as a plant has them: instrument noise, O2 probe stratification and drift, CO
    # pockets, carbon-in-ash repeatability, DCS resolution and deadband. False: clean instruments
    # (lags and dead times stay: they are physics).
    noise: bool = True
    analyser_delay_s: float = 20.0  # sample line dead time to the extractive CO/NOx analysers
    disturbances: Disturbances = field(default_factory=Disturbances)
    events: tuple[Event, ...] = ()
    _load_t: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.load_points or any(b[0] < a[0] for a, b in zip(self.load_points, self.load_points[1:])):
            raise ValueError(f"scenario {self.name!r}: load_points must be a non-empty list in time order")
        if any(not 0.0 <= mw <= RATED_MW * 1.05 for _, mw in self.load_points):
            raise ValueError(f"scenario {self.name!r}: load targets must be within 0..{RATED_MW * 1.05:g} MW")
        for _, name, transition in self.coal_changes:
            coal_named(name)
            if transition <= 0:
                raise ValueError(f"scenario {self.name!r}: a coal change needs a transition time > 0")
        coal_named(self.initial_coal)
        if not 0 <= self.analyser_delay_s <= 120 or not 0 <= self.humidity_rh_pct <= 100 or self.sootblow_every_h < 0:
            raise ValueError(f"scenario {self.name!r}: analyser_delay_s must be 0-120 s, humidity_rh_pct 0-100, "
                             "sootblow_every_h >= 0")
        object.__setattr__(self, "_load_t", tuple(t for t, _ in self.load_points))
        object.__setattr__(self, "events", tuple(sorted(self.events, key=lambda e: e.t)))

    def with_events(self, *events: Event) -> Scenario:
        return replace(self, events=self.events + tuple(events))

    def agc_target_mw(self, t: float) -> float:
        pts = self.load_points
        i = bisect.bisect_right(self._load_t, t)
        if i == 0:
            return pts[0][1]
        if i == len(pts):
            return pts[-1][1]
        (t0, p0), (t1, p1) = pts[i - 1], pts[i]
        return p0 + (p1 - p0) * (t - t0) / (t1 - t0)

    def coal_mix(self, t: float) -> tuple[str, str, float]:
        """(from coal, to coal, fraction of the new one) reaching the mills at t."""
        old, new, x = self.initial_coal, self.initial_coal, 1.0
        for t0, name, transition in self.coal_changes:
            if t < t0:
                break
            old = new if x >= 1.0 else old
            new, x = name, min((t - t0) / transition, 1.0)
        return old, new, x

    def coal_at(self, t: float) -> Coal:
        old, new, x = self.coal_mix(t)
        return blend(coal_named(old), coal_named(new), x)

    def ambient_c(self, t: float) -> float:
        return self.ambient_mean_c - self.ambient_swing_c * math.cos(2.0 * math.pi * (t / 3600.0 - 5.0) / 24.0)


def _agc_day(seed: int, duration_s: float = 86400.0) -> tuple[tuple[float, float], ...]:
    """A dispatch day: night trough near 50 %, morning ramp, evening peak at full load; the AGC moves
    the target every 8-25 minutes around that shape, ramping at 1-2 %/min, within 50-100 %."""
    rng = np.random.default_rng(seed)
    hours = (0, 3, 6, 8, 10, 13, 16, 18, 20, 22, 24)
    shape = (330, 305, 350, 520, 575, 540, 555, 600, 590, 460, 340)
    t, mw = 0.0, float(shape[0])
    points = [(0.0, mw)]
    while t < duration_s:
        t += float(rng.uniform(480.0, 1500.0))  # hold
        points.append((t, mw))
        base = float(np.interp((t / 3600.0) % 24.0, hours, shape))
        target = float(np.clip(base + rng.normal(0.0, 25.0), 0.5 * RATED_MW, RATED_MW))
        rate = float(rng.uniform(0.01, 0.02)) * RATED_MW / 60.0  # MW/s
        t += abs(target - mw) / rate
        mw = target
        points.append((t, mw))
    return tuple(points)


def steady_full_load(seed: int = 0) -> Scenario:
    """Four hours at 600 MW on the design coal: the reference point, with the plant's disturbances."""
    return Scenario("steady_full_load", 4 * 3600.0, ((0.0, RATED_MW),))


def agc_day_24h(seed: int = 0) -> Scenario:
    """The standard day: 24 h of AGC dispatch (50-100 % at 1-2 %/min), four coal changes, slag and
    fouling building up between the DCS's sootblows, a daily ambient swing, every disturbance."""
    h = 3600.0
    return Scenario(
        "agc_day_24h", 24 * h, _agc_day(seed),
        coal_changes=((6 * h, "high_moisture_blend", 2400.0), (11 * h, "design_bituminous", 2400.0),
                      (17 * h, "low_volatile_lean", 2400.0), (21.5 * h, "design_bituminous", 2400.0)),
        initial_slag=0.1, initial_fouling=0.1, slag_rate_per_h=0.08, fouling_rate_per_h=0.03,
        ambient_mean_c=16.0, ambient_swing_c=6.0,
        events=(Event(8 * h, "sootblow"), Event(16 * h, "sootblow"), Event(23 * h, "sootblow")))


def coal_switch(seed: int = 0) -> Scenario:
    """Two hours at 90 % load; the bunkers change to a wet, reactive blend after 20 minutes."""
    return Scenario("coal_switch", 2 * 3600.0, ((0.0, 540.0),),
                    coal_changes=((1200.0, "high_moisture_blend", 1200.0),), initial_slag=0.1, initial_fouling=0.1)


def mill_trip(seed: int = 0) -> Scenario:
    """One hour at full load; mill C trips after 20 minutes and the DCS starts the reserve mill."""
    return Scenario("mill_trip", 3600.0, ((0.0, RATED_MW),), events=(Event(1200.0, "mill_trip", "c"),),
                    initial_slag=0.1, initial_fouling=0.1)


def fouling_drift(seed: int = 0) -> Scenario:
    """Twelve hours at 90 % load with the sootblowers out of service: slag and convective fouling
    build up (exit gas and steam temperatures drift up, efficiency down) until one sootblow at 11 h."""
    h = 3600.0
    return Scenario("fouling_drift", 12 * h, ((0.0, 540.0),), initial_slag=0.05, initial_fouling=0.05,
                    slag_rate_per_h=0.05, fouling_rate_per_h=0.06, ambient_mean_c=18.0, ambient_swing_c=4.0,
                    events=(Event(11 * h, "sootblow"),))


def low_load_night(seed: int = 0) -> Scenario:
    """Eight hours of night minimum: 50-60 % load with small AGC moves, three mills, cool air; reheat
    runs short of its set point and the CO knee is high."""
    rng = np.random.default_rng([seed, 7])
    points, t = [(0.0, 330.0)], 0.0
    while t < 8 * 3600.0:
        t += float(rng.uniform(900.0, 2400.0))
        points.append((t, points[-1][1]))
        target = float(rng.uniform(0.5, 0.6)) * RATED_MW
        t += abs(target - points[-1][1]) / (0.01 * RATED_MW / 60.0)
        points.append((t, target))
    return Scenario("low_load_night", 8 * 3600.0, tuple(points), initial_slag=0.05, initial_fouling=0.1,
                    slag_rate_per_h=0.03, fouling_rate_per_h=0.02, ambient_mean_c=8.0, ambient_swing_c=2.0,
                    humidity_rh_pct=80.0)


def hot_summer_day(seed: int = 0) -> Scenario:
    """The standard day's dispatch in a hot, humid summer: 26-38 degC, the evening peak at full load
    with the air heater and fans at their warmest, the sootblowers on their 8-hour schedule."""
    h = 3600.0
    return Scenario("hot_summer_day", 24 * h, _agc_day(seed), initial_slag=0.1, initial_fouling=0.1,
                    slag_rate_per_h=0.08, fouling_rate_per_h=0.03, ambient_mean_c=32.0, ambient_swing_c=6.0,
                    humidity_rh_pct=65.0, sootblow_every_h=8.0)


def demo(seed: int = 0) -> Scenario:
    """45 minutes: a load ramp from 80 % to full at 1.5 %/min, a coal change, a ramp down to 70 %."""
    ramp = 0.015 * RATED_MW / 60.0
    up_end = 300.0 + 120.0 / ramp
    down_end = 1920.0 + 180.0 / ramp
    return Scenario("demo", 2700.0, ((0.0, 480.0), (300.0, 480.0), (up_end, 600.0), (1920.0, 600.0), (down_end, 420.0)),
                    coal_changes=((1200.0, "high_moisture_blend", 600.0),))


SCENARIOS = {f.__name__: f for f in (steady_full_load, agc_day_24h, coal_switch, mill_trip, fouling_drift,
                                     low_load_night, hot_summer_day, demo)}

# The standard scenario set, and the seeds each is reported on. Policies are trained on TRAIN_SEEDS
# only; HELD_OUT_SEEDS are reserved for evaluating trained policies and must never be trained on.
STANDARD_SCENARIOS: dict[str, tuple[int, ...]] = {
    "agc_day_24h": (0, 1, 2), "coal_switch": (0, 1, 2), "mill_trip": (0, 1, 2), "fouling_drift": (0, 1, 2),
    "low_load_night": (0, 1, 2), "hot_summer_day": (0, 1, 2),
}
TRAIN_SEEDS: tuple[int, ...] = tuple(range(100, 1100))
HELD_OUT_SEEDS: tuple[int, ...] = tuple(range(9001, 9021))


def named_scenario(name: str, seed: int = 0) -> Scenario:
    try:
        return SCENARIOS[name](seed)
    except KeyError:
        raise KeyError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})") from None
