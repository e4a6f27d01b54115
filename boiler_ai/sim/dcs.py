"""The unit's DCS as operators run it, and its side of the AI handshake (docs/ARCHITECTURE.md, The DCS handshake).

Loops: coordinated control (turbine master on MW with a pressure correction, boiler master on coal with
a sliding-pressure set point, load feedforward and a boiler-energy kicker, as in the IDAES plant), mill
starts and stops by feeder loading, total air from fuel with an O2 trim on a conservative load curve,
secondary-air and SOFA dampers on fixed load schedules, three spray PI loops, three-element drum level.

AI handshake: ai_active = ai_enable AND ai_request AND watchdog healthy AND the DCS's own permissives
(coordinated control, load above minimum, no MFT, no runback). For every manipulated variable the DCS
holds its own setpoint and the AI setpoint; while AI mode is off the AI setpoint tracks the DCS's
(engaging is bumpless); while on, the AI setpoint is used, clamped to the DCS setpoint +- a per-MV band;
when AI mode drops, each MV ramps from the AI value back to the DCS's own setpoint. Each MV also has the
operator's own AI enable (faceplate): off, that MV alone goes back to the DCS the same way while AI
mode goes on for the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from boiler_ai.sim import steam
from boiler_ai.sim.clamp import clamp, toward
from boiler_ai.sim.coal import DESIGN_COAL, stoichiometry
from boiler_ai.sim.fireside import N_LEVELS, TILT_RANGE_DEG
from boiler_ai.sim.mills import (
    FEEDER_MAX_TPH,
    FEEDER_MIN_TPH,
    IDLE,
    MILLS,
    RUNNING,
    STARTING,
    STOPPING,
    TRIPPED,
    MillBank,
    MillStatus,
)

FEEDER_BIAS = tuple(f"feeder_{m}_bias_tph" for m in MILLS)
SA_DAMPER = tuple(f"sa_damper_{m}_pct" for m in MILLS)
SOFA_DAMPER = ("sofa_damper_1_pct", "sofa_damper_2_pct")
O2_BIAS = "o2_setpoint_bias_pct"
SPRAY_VALVE = ("sh_spray_1_valve_pct", "sh_spray_2_valve_pct", "rh_spray_valve_pct")
# Every setpoint the DCS itself drives, in this order. Which of them the AI may set is the tag map's
# `manipulated` list (opc/reference_unit.yaml), not this tuple: the rest stay DCS-only loops.
MV_NAMES: tuple[str, ...] = FEEDER_BIAS + SA_DAMPER + SOFA_DAMPER + (O2_BIAS,) + SPRAY_VALVE
I_FEEDER, I_SA, I_SOFA, I_O2, I_SPRAY = 0, 6, 12, 14, 15
# Physical travel of each actuator setpoint; an AI setpoint is further limited to its tag's range.
MV_RANGE = {**{n: (-10.0, 10.0) for n in FEEDER_BIAS}, O2_BIAS: (-2.0, 2.0),
            **{n: (0.0, 100.0) for n in SA_DAMPER + SOFA_DAMPER + SPRAY_VALVE}}

_DESIGN_STOICH = stoichiometry(DESIGN_COAL)
# Loop tuning (gain, integral time s), found on this simulator: IDAES structure, this unit's scale.
BOILER_MASTER_PI = (12.0, 800.0)  # t/h coal per MPa main steam pressure error
PRESSURE_SP_TAU_S = 120.0
TURBINE_MASTER_PI = (4e-4, 15.0)  # valve fraction per MW
PRESSURE_CORRECTION_MW_PER_MPA = 15.0
PRESSURE_CORRECTION_MAX_MW = 20.0  # turbine master gives up load to hold pressure
KICKER_MILL_S, KICKER_STORAGE, KICKER_TAU_S = 90.0, 0.5, 30.0  # boiler energy kicker on demand ramps
KICKER_MAX_TPH = 25.0
O2_TRIM_PI = (0.02, 45.0)  # air fraction per % O2
SPRAY_PI = ((2.0, 80.0), (3.0, 60.0), (6.0, 150.0))  # valve % per degC: SH stage 1, SH stage 2, RH
TILT_PI = (1.5, 150.0)  # burner tilt degrees per degC of hot reheat below its set point
FUEL_RATE_TPH_S = 0.25  # fuel master rate limit, 15 t/h per minute
AIR_LEAD = 0.1
CO_OVERRIDE_PPM, CO_OVERRIDE_TAU_S = 60.0, 60.0
CO_OVERRIDE_RATE = 0.005  # % O2 per s at twice the threshold
CO_OVERRIDE_RELEASE = 0.0005  # % O2 per s
CO_OVERRIDE_MAX_PCT = 1.0
FIRING_TPH = 2.0
DESIGN_EFFICIENCY = 0.891  # the boiler master's feedforward assumes the design coal at this efficiency
O2_MARGIN_PCT = 0.65  # operators' margin over the IDAES O2 schedule
AIR_MIN_TPH = 650.0  # 30 % of rated air: purge and minimum-air floor
SA_COOLING_PCT = 5.0  # damper of a burner level without fire: cooling air only


# ── The DCS's fixed curves and schedules (also used by the steady-state oracle as the baseline) ────
def o2_curve_pct(load_frac: float) -> float:
    """O2 set point over load: the IDAES schedule (a cubic in coal flow of its 320 MW unit, 3.0 % at
    full, 4.3 % at 62 %) on load fraction, plus the operators' margin: conservative on purpose."""
    f = 29.0 * clamp(load_frac, 0.3, 1.05)
    return -0.00075 * f ** 3 + 0.067 * f ** 2 - 2.0 * f + 22.95 + O2_MARGIN_PCT


def sa_damper_schedule_pct(coal_tph: float) -> float:
    """Secondary-air ("fuel air") damper of a burner level, scheduled on the coal reaching it: 70 % at
    the design 50 t/h, about proportional to the level's fuel, the cooling position without fire."""
    return clamp(6.0 + 1.28 * coal_tph, SA_COOLING_PCT, 95.0)


def sofa_damper_schedule_pct(load_frac: float, idle_above: float) -> float:
    """SOFA dampers (both levels): a load table set at commissioning on the design coal for NOx, less
    for each idle burner level above the top flame (its cooling air already acts as over-fire air)."""
    base = _interp(load_frac, _SOFA_LOAD, _SOFA_PCT)
    return clamp(base - 12.0 * idle_above, 0.0, 100.0)


_SOFA_LOAD = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_SOFA_PCT = (100.0, 87.0, 82.0, 80.0, 83.0, 89.0)


def _interp(x: float, xs: tuple[float, ...], ys: tuple[float, ...]) -> float:
    if x <= xs[0]:
        return ys[0]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            w = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
            return ys[i - 1] + w * (ys[i] - ys[i - 1])
    return ys[-1]


def dcs_damper_setpoints(load_frac: float, coal_tph: list[float]) -> tuple[list[float], list[float]]:
    """The DCS's own damper setpoints from the load and the coal reaching each burner level. A level
    coming into or out of service counts as partly idle until it carries 25 t/h, so nothing jumps."""
    top = next((i for i in _LEVELS_TOP_DOWN if coal_tph[i] > FIRING_TPH), N_LEVELS - 1)
    idle_above = N_LEVELS - 1 - top + 1.0 - min(coal_tph[top] / 25.0, 1.0)
    sofa = sofa_damper_schedule_pct(load_frac, idle_above)
    return [sa_damper_schedule_pct(c) for c in coal_tph], [sofa, sofa]


_LEVELS_TOP_DOWN = range(N_LEVELS - 1, -1, -1)


def air_ratio_for_o2(o2_pct: float) -> float:
    return _DESIGN_STOICH.excess_air_ratio(o2_pct)


def coal_feedforward_tph(load_mw: float) -> float:
    """Boiler-master feedforward: coal for this load on the design coal at design efficiency."""
    return _coal_for_steam(steam.flow_for_power(load_mw))


def _coal_for_steam(flow_frac: float) -> float:
    """The feedforward's coal for a steam flow (fraction of rated)."""
    heat = flow_frac * steam.HEAT_TO_STEAM_RATED_MW
    return heat / (DESIGN_EFFICIENCY * DESIGN_COAL.hhv_kj_per_kg) * 3.6e3


_FF_RATED_TPH = coal_feedforward_tph(steam.RATED_MW)


@dataclass(frozen=True)
class ProcessTrip:
    """A high-high alarm that trips AI mode: measured signal above limit for delay_s seconds. The
    delay rides through analyser spikes; the trip latches until the operator resets AI mode
    (ai_enable off, then on)."""

    name: str
    signal: str  # a field of Measured
    limit: float
    delay_s: float
    label: str  # as the alarm text shows it


# Set like a DCS engineer would: above the envelope's process limits (NOx 500, CO 200, steam 545 degC)
# so they act only when the daemon's own protection has not.
PROCESS_TRIPS = (
    ProcessTrip("nox_high_high", "nox_mg_nm3", 550.0, 30.0, "NOx"),
    ProcessTrip("co_high_high", "co_ppm", 400.0, 60.0, "CO"),
    ProcessTrip("main_steam_temp_high_high", "main_steam_c", 550.0, 10.0, "main steam temperature"),
    ProcessTrip("reheat_temp_high_high", "reheat_c", 550.0, 10.0, "hot reheat temperature"),
)


@dataclass
class DcsConfig:
    """DCS-side settings of the AI interface. Clamps are a bit wider than the daemon's envelope
    (constraints/reference_unit.yaml) so that the envelope, not the DCS, is what normally binds."""

    watchdog_s: float = 5.0
    min_load_mw: float = 270.0  # AI permissive: 45 % load
    clamp: dict[str, float] = field(default_factory=lambda: {
        **{n: 6.0 for n in FEEDER_BIAS}, **{n: 25.0 for n in SA_DAMPER + SOFA_DAMPER},
        O2_BIAS: 1.2, **{n: 20.0 for n in SPRAY_VALVE}})
    handback_rate_per_s: dict[str, float] = field(default_factory=lambda: {
        **{n: 0.2 for n in FEEDER_BIAS}, **{n: 1.0 for n in SA_DAMPER + SOFA_DAMPER},
        O2_BIAS: 0.02, **{n: 1.0 for n in SPRAY_VALVE}})
    load_rate_mw_per_min: float = 12.0  # 2 %/min AGC demand limiter
    runback_rate_mw_per_min: float = 150.0
    # AI-mode trip on process high-high limits, on the DCS's measured values. False: the DCS leaves
    # process protection to the daemon (to test the daemon's own protection).
    process_trip: bool = True
    process_trips: tuple[ProcessTrip, ...] = field(default_factory=lambda: PROCESS_TRIPS)

    def __post_init__(self) -> None:
        for table in ("clamp", "handback_rate_per_s"):
            got = getattr(self, table)
            if set(got) != set(MV_NAMES) or any(not (math.isfinite(v) and v > 0) for v in got.values()):
                raise ValueError(f"DcsConfig.{table} must give a positive number for each of {', '.join(MV_NAMES)}")
        if not (self.watchdog_s > 0 and self.min_load_mw >= 0):
            raise ValueError("DcsConfig: watchdog_s must be > 0 and min_load_mw >= 0")
        for trip in self.process_trips:
            if trip.signal not in Measured.__slots__ or not trip.delay_s >= 0:
                raise ValueError(f"DcsConfig.process_trips: {trip.name}: unknown signal {trip.signal!r} or delay < 0")


@dataclass(slots=True)
class Measured:
    """What the DCS sees this step (instrument values: noisy, analysers delayed). The unit fills it."""

    load_mw: float = 0.0
    main_pressure_mpa: float = 0.0
    steam_flow_kgs: float = 0.0
    o2_pct: float = 0.0
    co_ppm: float = 0.0
    nox_mg_nm3: float = 0.0
    main_steam_c: float = 0.0
    reheat_c: float = 0.0
    platen_out_c: float = 0.0
    drum_level_mm: float = 0.0
    coal_tph: float = 0.0
    feeder_tph: list[float] = field(default_factory=lambda: [0.0] * N_LEVELS)


class _PI:
    """PI with the integral clamped so the output stays in [lo, hi] (no wind-up)."""

    __slots__ = ("kp", "ki", "lo", "hi", "integral")

    def __init__(self, kp: float, ti: float, lo: float, hi: float, out0: float = 0.0):
        self.kp, self.ki, self.lo, self.hi, self.integral = kp, kp / ti, lo, hi, out0

    def step(self, error: float, dt: float, hold: bool = False) -> float:
        """hold: keep the integral (the loop's output is not in use), proportional action only."""
        p = self.kp * error
        lo, hi = self.lo, self.hi
        if not hold:
            self.integral = clamp(self.integral + self.ki * error * dt, lo - min(p, 0.0), hi - max(p, 0.0))
        return clamp(p + self.integral, lo, hi)


class Dcs:
    def __init__(self, config: DcsConfig, load_mw: float, mvs: list[float], fuel_demand_tph: float,
                 air_tph: float, o2_trim: float, steam_kgs: float, ai_mvs: tuple[str, ...] = MV_NAMES,
                 ai_range: dict[str, tuple[float, float]] | None = None, tilt_deg: float = 0.0):
        """Start at a steady operating point: the MVs in force, the fuel and air there (see ReferenceUnit).
        ai_mvs: the setpoints the AI may set (the tag map's manipulated variables); ai_range: the range
        of each one's AI setpoint tag (default MV_RANGE)."""
        unknown = [m for m in ai_mvs if m not in MV_NAMES]
        if unknown:
            raise ValueError(f"the DCS has no setpoint {unknown[0]!r} the AI could set (known: {', '.join(MV_NAMES)})")
        self.config = c = config
        self.t = 0.0
        # Unit state seen by the permissives
        self.coordinated = True
        self.mft = False
        self.runback = False
        self.load_cap_mw = steam.RATED_MW  # after a runback the unit stays at what it can carry
        self.load_demand_mw = load_mw
        self.pressure_sp = steam.main_pressure_sp(load_mw / steam.RATED_MW)
        # Handshake
        self.ai_enable = False
        self.ai_request = False
        self.heartbeat = 0.0
        self._heartbeat_changed_t = -math.inf
        self.ai_permissive = False
        self.watchdog_healthy = False
        self.ai_active = False
        # What the daemon shows on the faceplate: its mode and reason codes (boiler_ai/status_codes.py)
        self.ai_status = 0
        self.ai_reason = 0
        self.reasons: tuple[str, ...] = ()
        self.trip: str | None = None  # latched AI-mode trip, until the operator resets AI mode
        self._trip_timer = [0.0] * len(c.process_trips)
        # Manipulated variables: DCS setpoint, AI setpoint, the value in force, hand-back in progress
        n = len(MV_NAMES)
        self._clamp = [c.clamp[m] for m in MV_NAMES]
        self._handback = [c.handback_rate_per_s[m] for m in MV_NAMES]
        ai_range = {**MV_RANGE, **(ai_range or {})}
        self._range = [(max(ai_range[m][0], MV_RANGE[m][0]), min(ai_range[m][1], MV_RANGE[m][1])) for m in MV_NAMES]
        self.ai_mvs = tuple(m for m in MV_NAMES if m in ai_mvs)
        self._ai_index = tuple(MV_NAMES.index(m) for m in self.ai_mvs)
        self._dcs_only = tuple(i for i in range(len(MV_NAMES)) if i not in self._ai_index)
        self._ai_spray = tuple(MV_NAMES[I_SPRAY + k] in ai_mvs for k in range(3))
        self.dcs_sp = list(mvs)
        self.ai_sp = list(self.dcs_sp)
        self.applied = list(self.dcs_sp)
        self.releasing = [False] * n
        self.mv_enable = [True] * n  # the operator's per-MV AI enable (faceplate)
        self._use_ai = [False] * n  # AI setpoint in force last step, per MV
        self.operator_feeder_bias = [0.0] * N_LEVELS  # the DCS's own feeder biases (faceplate)
        self.operator_o2_bias = 0.0
        # an operator's bias on each damper's load schedule (SA levels A-F, then SOFA 1-2): step tests
        self.operator_damper_bias = [0.0] * (N_LEVELS + 2)
        # Loops (gains per IDAES structure, scaled to this unit; tuned on the simulator)
        ff = coal_feedforward_tph(load_mw)
        self.boiler_master = _PI(*BOILER_MASTER_PI, -150.0, 150.0, fuel_demand_tph - ff)
        self.fuel_demand = fuel_demand_tph
        self._kicker = 0.0
        self._last_demand = load_mw
        self.turbine_master = _PI(*TURBINE_MASTER_PI, -1.0, 1.0, 0.0)  # trim on the valve feedforward
        flow = steam.flow_for_power(load_mw)
        self.turbine_valve = steam.VALVE_RATED * flow * steam.MAIN_PRESSURE_RATED_MPA / self.pressure_sp
        self.o2_trim = _PI(*O2_TRIM_PI, -0.2, 0.2, o2_trim)
        self.o2_trim_out = o2_trim
        self.o2_sp = o2_curve_pct(load_mw / steam.RATED_MW) + mvs[I_O2]
        self.air_demand = air_tph
        self.co_filtered = 0.0
        self.co_override = 0.0  # % O2 the CO override adds to the set point
        self.spray_pi = [_PI(*SPRAY_PI[k], 0.0, 100.0, self.dcs_sp[I_SPRAY + k]) for k in range(3)]
        self.tilt_pi = _PI(*TILT_PI, -TILT_RANGE_DEG, TILT_RANGE_DEG, tilt_deg)
        self.tilt_demand = tilt_deg
        self.level_pi = _PI(0.05, 200.0, -60.0, 60.0, 0.0)
        self.feedwater = steam_kgs
        self._flow = (math.nan, math.nan)  # (load demand, its steam flow fraction) last worked out
        self.feeder_demand = [0.0] * N_LEVELS
        self._coal_model = None  # DCS mill model: feeder flows through the mills' nominal lags
        self._mill_timer = 0.0  # how long the loading has asked for a mill start (+) or stop (-)
        self._mill_quiet = 0.0  # seconds since the last mill start or stop

    # ── handshake ────────────────────────────────────────────────────────────────────────────────
    def write_heartbeat(self, value: float) -> None:
        if value != self.heartbeat:
            self.heartbeat = value
            self._heartbeat_changed_t = self.t

    def set_ai_enable(self, on: bool) -> None:
        """The operator's faceplate permissive; switching it off also resets a latched process trip."""
        self.ai_enable = bool(on)
        if not on:
            self.trip = None

    def set_mv_ai_enable(self, mv: str, on: bool) -> None:
        """The operator's AI enable of one manipulated variable: off hands it back to the DCS's own loop."""
        self.mv_enable[MV_NAMES.index(mv)] = bool(on)

    def _process_trips(self, dt: float, m: Measured) -> list[str]:
        """High-high alarms standing now (each after its delay). One standing while AI mode is on
        latches a trip; while AI mode is off it only blocks engaging."""
        c = self.config
        standing = []
        if not c.process_trip:
            return standing
        for k, trip in enumerate(c.process_trips):
            value = getattr(m, trip.signal)
            self._trip_timer[k] = self._trip_timer[k] + dt if value > trip.limit else 0.0
            if self._trip_timer[k] >= trip.delay_s and value > trip.limit:
                standing.append(f"process trip {trip.name}: {trip.label} {value:.0f} above {trip.limit:g} "
                                f"for {trip.delay_s:g} s")
        if standing and self.ai_active and self.trip is None:
            self.trip = standing[0] + " (latched: operator resets AI mode)"
        return standing

    def _handshake(self, load_mw: float, dt: float, m: Measured) -> None:
        c = self.config
        standing = self._process_trips(dt, m)
        silent = self.t - self._heartbeat_changed_t
        self.watchdog_healthy = silent <= c.watchdog_s
        permissive_reasons = []
        if not self.coordinated:
            permissive_reasons.append("unit not in coordinated control")
        if load_mw < c.min_load_mw:
            permissive_reasons.append(f"load {load_mw:.0f} MW below the {c.min_load_mw:.0f} MW minimum")
        if self.mft:
            permissive_reasons.append("master fuel trip")
        if self.runback:
            permissive_reasons.append("runback in progress")
        if self.trip is not None:
            permissive_reasons.append(self.trip)
        else:
            permissive_reasons += standing
        self.ai_permissive = not permissive_reasons
        reasons = []
        if not self.ai_enable:
            reasons.append("ai_enable off (operator)")
        if not self.ai_request:
            reasons.append("ai_request off")
        if not self.watchdog_healthy:
            reasons.append("watchdog: heartbeat never changed" if math.isinf(silent)
                           else f"watchdog: heartbeat unchanged for {silent:.0f} s (limit {c.watchdog_s:g} s)")
        reasons += permissive_reasons
        self.ai_active = not reasons
        self.reasons = tuple(reasons)

    def _select(self, dt: float) -> None:
        """Which setpoint is in force for each MV."""
        dcs, ai, applied = self.dcs_sp, self.ai_sp, self.applied
        active, mv_enable, releasing, use_ai = self.ai_active, self.mv_enable, self.releasing, self._use_ai
        for i in self._ai_index:
            use = active and mv_enable[i]
            if use:
                lo, hi = self._range[i]
                c = self._clamp[i]
                applied[i] = min(max(ai[i], dcs[i] - c, lo), dcs[i] + c, hi)
                releasing[i] = False
            else:
                if use_ai[i]:  # AI mode dropped, or the operator took this MV back: ramp home
                    releasing[i] = True
                ai[i] = dcs[i]
                if releasing[i]:
                    step = self._handback[i] * dt
                    a = applied[i]
                    applied[i] = a = toward(dcs[i], a, step)
                    releasing[i] = a != dcs[i]
                else:
                    applied[i] = dcs[i]
            use_ai[i] = use
        for i in self._dcs_only:
            ai[i] = applied[i] = dcs[i]

    # ── the loops ────────────────────────────────────────────────────────────────────────────────
    def step(self, dt: float, m: Measured, mills: MillBank, agc_target_mw: float) -> None:
        self.t += dt
        c = self.config
        # Unit load demand: AGC target through the rate limiter, a runback overrides.
        target = min(agc_target_mw, self.load_cap_mw) if self.coordinated else self.load_demand_mw
        rate = (c.runback_rate_mw_per_min if self.runback else c.load_rate_mw_per_min) / 60.0 * dt
        if self.mft:
            target, rate = 0.0, math.inf
        self.load_demand_mw = d = toward(target, self.load_demand_mw, rate)
        if self.runback and d <= self.load_cap_mw:  # the demand has run back: the loops take over
            self.runback = False
        load_frac = d / steam.RATED_MW
        self._handshake(m.load_mw, dt, m)

        # Air follows the coal reaching the burners, not the feeders: the DCS runs each feeder's flow
        # through a model of the mill lags (a first-order pair) for the air demand and damper schedules.
        burner = self._mill_model(dt, m.feeder_tph, mills.status)

        # DCS setpoints of the MVs
        self.dcs_sp[I_FEEDER:I_SA] = self.operator_feeder_bias
        sa, sofa = dcs_damper_setpoints(load_frac, burner)
        self.dcs_sp[I_SA:I_O2] = [clamp(p + b, 0.0, 100.0) for p, b in zip([*sa, *sofa], self.operator_damper_bias)]
        self.dcs_sp[I_O2] = self.operator_o2_bias
        if self.mft:
            sprays = [0.0, 0.0, 0.0]
        else:
            psp = steam.platen_outlet_sp(load_frac)
            # While the AI drives the spray valves, each DCS loop keeps its integral and offers its
            # integral plus proportional action as its own setpoint: bounded, and ready to take over.
            # A spray valve the AI may not set is a DCS-only loop: full PI action whatever the AI does.
            hold = [self.ai_active and a for a in self._ai_spray]
            sprays = [self.spray_pi[0].step(m.platen_out_c - psp, dt, hold[0]),
                      self.spray_pi[1].step(m.main_steam_c - steam.STEAM_TEMP_SP_C, dt, hold[1]),
                      self.spray_pi[2].step(m.reheat_c - steam.REHEAT_SP_C - steam.RH_SPRAY_MARGIN_C, dt,
                                            hold[2])]
            # Burner tilt holds hot reheat; its spray only trims an over-temperature the tilt cannot.
            self.tilt_demand = self.tilt_pi.step(steam.REHEAT_SP_C - m.reheat_c, dt)
        self.dcs_sp[I_SPRAY:] = sprays
        self._select(dt)

        if self.mft:
            self.fuel_demand = 0.0
            self.feeder_demand = [0.0] * N_LEVELS
            self.turbine_valve = 0.0
            self.air_demand = AIR_MIN_TPH
            self.feedwater = 0.0
            return

        # Coordinated control: turbine master on MW (with pressure correction), boiler master on pressure.
        # The sliding-pressure set point is lagged so that the boiler can follow it; during a runback
        # it tracks the pressure, so the pressure loop picks up from there when the runback ends.
        psp_target = m.main_pressure_mpa if self.runback else steam.main_pressure_sp(load_frac)
        psp = self.pressure_sp
        self.pressure_sp = psp = psp + (psp_target - psp) * (1.0 - math.exp(-dt / PRESSURE_SP_TAU_S))
        p_err = psp - m.main_pressure_mpa
        if d != self._flow[0] or not d:  # the Newton inverse only when the demand has moved (most seconds not)
            self._flow = d, steam.flow_for_power(d)
        flow = self._flow[1]
        valve_ff = steam.VALVE_RATED * flow * steam.MAIN_PRESSURE_RATED_MPA / psp
        self.turbine_master.lo, self.turbine_master.hi = 0.05 - valve_ff, 1.0 - valve_ff
        correction = clamp(PRESSURE_CORRECTION_MW_PER_MPA * p_err, -PRESSURE_CORRECTION_MAX_MW,
                           PRESSURE_CORRECTION_MAX_MW)
        mw_err = (d - m.load_mw) - correction
        self.turbine_valve = valve_ff + self.turbine_master.step(mw_err, dt)
        # Boiler energy kicker: extra coal while the demand ramps, for the mill lag and for the stored
        # energy the sliding-pressure set point asks for.
        ff = _coal_for_steam(flow)
        ahead = (d - self._last_demand) / dt  # MW/s
        self._last_demand = d
        sliding = steam.main_pressure_sp
        dpsp = (sliding((d + 1.0) / steam.RATED_MW) - sliding((d - 1.0) / steam.RATED_MW)) / 2.0  # MPa per MW
        ff_rated = _FF_RATED_TPH
        kick = ahead * ff_rated * (KICKER_MILL_S / steam.RATED_MW
                                   + KICKER_STORAGE * steam.STORAGE_TIME_S * dpsp / steam.DRUM_PRESSURE_RATED_MPA)
        kick = clamp(kick, -KICKER_MAX_TPH, KICKER_MAX_TPH)
        if self.runback:
            # Runback: fuel comes off with the load demand on the feedforward alone, as fast as the
            # load; the pressure loop holds its integral and waits for the runback to end.
            self._kicker = 0.0
            want = ff + self.boiler_master.integral
            step = max(FUEL_RATE_TPH_S, c.runback_rate_mw_per_min / 60.0 * ff_rated / steam.RATED_MW) * dt
        else:
            self._kicker += (kick - self._kicker) * (1.0 - math.exp(-dt / KICKER_TAU_S))
            want = ff + self.boiler_master.step(p_err, dt) + self._kicker
            step = FUEL_RATE_TPH_S * dt
        want = max(want, 0.0)
        self.fuel_demand = toward(want, self.fuel_demand, step)

        self._manage_mills(dt, mills)
        self._feeders(mills)

        # Air: fuel-led demand at the air ratio of the O2 set point, trimmed on measured O2. CO override:
        # while the minute-averaged CO stands above 60 ppm the O2 set point climbs (up to +1 %), and
        # creeps back over about half an hour once CO is low again.
        self.co_filtered += (m.co_ppm - self.co_filtered) * (1.0 - math.exp(-dt / CO_OVERRIDE_TAU_S))
        if self.co_filtered > CO_OVERRIDE_PPM:
            rise = CO_OVERRIDE_RATE * (self.co_filtered / CO_OVERRIDE_PPM - 1.0) * dt
            self.co_override = min(self.co_override + rise, CO_OVERRIDE_MAX_PCT)
        elif self.co_filtered < 0.6 * CO_OVERRIDE_PPM:
            self.co_override = max(self.co_override - CO_OVERRIDE_RELEASE * dt, 0.0)
        self.o2_sp = o2 = o2_curve_pct(load_frac) + self.applied[I_O2] + self.co_override
        self.o2_trim_out = self.o2_trim.step(o2 - m.o2_pct, dt)
        # Air leads the coal on the way up (a tenth of the feeders' lead over the burners), and on the
        # way down waits for the coal in the mills to burn out.
        modelled = sum(burner)
        fuel = modelled + AIR_LEAD * max(min(self.fuel_demand, m.coal_tph) - modelled, 0.0)
        self.air_demand = max(fuel * _DESIGN_STOICH.air_stoich_kg * air_ratio_for_o2(o2) * (1.0 + self.o2_trim_out),
                              AIR_MIN_TPH)
        # Three-element drum level
        self.feedwater = max(m.steam_flow_kgs + self.level_pi.step(-m.drum_level_mm, dt), 0.0)

    def _mill_model(self, dt: float, feeder_tph: list[float], status: list[MillStatus]) -> list[float]:
        if self._coal_model is None:
            self._coal_model = [[f, f] for f in feeder_tph]
        k1, k2 = 1.0 - math.exp(-dt / MILL_MODEL_TAU_S[0]), 1.0 - math.exp(-dt / MILL_MODEL_TAU_S[1])
        out = []
        for f, state, st in zip(feeder_tph, self._coal_model, status):
            if st == TRIPPED:  # the trip signal: nothing more reaches those burners
                state[0] = state[1] = 0.0
            state[0] += (f - state[0]) * k1
            state[1] += (state[0] - state[1]) * k2
            out.append(state[1])
        return out

    def _feeders(self, mills: MillBank) -> None:
        """Split the fuel demand over the feeders by their shares; AI/DCS biases shift coal between
        in-service feeders only, and the DCS removes their mean so total fuel is the boiler master's."""
        share = mills.share
        total_share = sum(share)
        bias = self.applied[I_FEEDER:I_SA]
        serving = [s >= 1.0 for s in share]
        n = sum(serving)
        mean = sum(b for b, s in zip(bias, serving) if s) / n if n else 0.0
        demand, fuel = self.feeder_demand, self.fuel_demand
        for i in range(N_LEVELS):
            if total_share <= 0.0 or share[i] <= 0.0:
                demand[i] = 0.0
                continue
            base = fuel * share[i] / total_share
            demand[i] = clamp(base + bias[i] - mean, FEEDER_MIN_TPH, FEEDER_MAX_TPH) if serving[i] else base

    def _manage_mills(self, dt: float, mills: MillBank) -> None:
        """Start the next mill when the feeders run heavily loaded, stop one when they run light.
        Start order A..F (F is the reserve), stop order top down; one change at a time."""
        self._mill_quiet += dt
        status = mills.status
        if STARTING in status or STOPPING in status:
            self._mill_timer = 0.0
            return
        running = [i for i, s in enumerate(status) if s == RUNNING]
        idle = [i for i, s in enumerate(status) if s == IDLE]
        per_mill = self.fuel_demand / max(len(running), 1)
        if (per_mill > MILL_START_TPH or not running) and idle:
            self._mill_timer = max(self._mill_timer, 0.0) + dt
        elif per_mill < MILL_STOP_TPH and len(running) > MIN_MILLS:
            self._mill_timer = min(self._mill_timer, 0.0) - dt
        else:
            self._mill_timer = 0.0
        if self._mill_timer >= MILL_DECIDE_S:
            mills.start(idle[0])
        elif self._mill_timer <= -MILL_DECIDE_S and (self._mill_quiet >= 300.0 or self.runback):
            mills.stop(running[-1])
        else:
            return
        self._mill_timer, self._mill_quiet = 0.0, 0.0


MILL_MODEL_TAU_S = (60.0, 35.0)  # the DCS's picture of a mill: feeder to burners in about 95 s
MILL_START_TPH = 55.0  # average feeder loading that calls for one more mill
MILL_STOP_TPH = 36.0  # ... and for one mill fewer
MIN_MILLS = 3
MILL_DECIDE_S = 60.0


def mills_for_coal(coal_tph: float) -> int:
    """Mills in service at a steady state reached from below: the fewest that carry this coal flow
    without the DCS calling for another (inside the start/stop hysteresis band either count holds)."""
    n = MIN_MILLS
    while n < N_LEVELS and coal_tph / n > MILL_START_TPH:
        n += 1
    return n
