"""The simulated reference unit: a 600 MW subcritical drum unit with its DCS, stepped at 1 s.

    unit = ReferenceUnit(named_scenario("agc_day_24h"), seed=0)
    unit.step()                      # one second of plant time
    unit.values()                    # every readable tag of the tag map, by logical name
    unit.write("o2_setpoint_bias_pct_ai_sp", -0.3)   # writable tags only
    unit.performance()               # true (noise-free) KPIs and process-limit flags now

One step: scenario (events, coal, slag, ambient) -> DCS on last step's measurements (handshake, MV
selection, loops) -> mills -> air and dampers -> fire side -> heat-loss efficiency -> steam side ->
analysers -> published measurements (noise, ranges). Deterministic for a seed; plain floats throughout.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import boiler_ai
from boiler_ai.sim import steam
from boiler_ai.sim.clamp import clamp, toward
from boiler_ai.sim.coal import DESIGN_COAL, blend, coal_named, stoichiometry
from boiler_ai.sim.dcs import (
    I_O2,
    I_SA,
    I_SOFA,
    I_SPRAY,
    MV_NAMES,
    Dcs,
    DcsConfig,
    Measured,
    air_ratio_for_o2,
    o2_curve_pct,
)
from boiler_ai.sim.disturbances import DisturbanceState, vary_coal
from boiler_ai.sim.efficiency import EfficiencyResult
from boiler_ai.sim.fireside import N_LEVELS, SA_FLOW_COEFF, CoalProps, FireState, fire_side
from boiler_ai.sim.heatrate import fan_power_mw, unit_heat_rate
from boiler_ai.sim.mills import IN_SEQUENCE, IN_SERVICE, MILLS, MillBank, MillStatus
from boiler_ai.sim.scenario import Event, Scenario, named_scenario
from boiler_ai.sim.steady import HUMIDITY_KG_PER_KG, OperatingPoint, efficiency_at, flue_gas_tph, humidity_ratio
from boiler_ai.tagmap import TagMap, load_tag_map


def project_file(*parts: str) -> Path:
    """A file of the project tree the package ships beside (opc/, constraints/, ...)."""
    return Path(boiler_ai.__file__).resolve().parent.parent.joinpath(*parts)


def default_tag_map_path() -> Path:
    return project_file("opc", "reference_unit.yaml")


# The unit's process limits: (signal, relation, limit). The envelope file states the same for the daemon.
PROCESS_LIMITS: dict[str, tuple[str, str, float]] = {
    "o2_min": ("o2_economiser_pct", "at_least", 2.0),
    "co_max": ("co_ppm", "at_most", 200.0),
    "nox_max": ("nox_mg_nm3", "at_most", 500.0),
    "main_steam_temp_max": ("main_steam_temp_c", "at_most", 545.0),
    "main_steam_temp_min": ("main_steam_temp_c", "at_least", 525.0),
    "reheat_temp_max": ("reheat_steam_temp_c", "at_most", 545.0),
    "reheat_temp_min": ("reheat_steam_temp_c", "at_least", 520.0),
    "airheater_exit_min": ("airheater_exit_gas_temp_c", "at_least", 110.0),
    "airheater_exit_max": ("airheater_exit_gas_temp_c", "at_most", 160.0),
}

_MILL_SIGNALS = tuple(s for m in MILLS
                      for s in (f"mill_{m}_coal_flow_tph", f"mill_{m}_in_service", f"mill_{m}_outlet_temp_c",
                                f"mill_{m}_sequence_active"))
# Every signal the unit publishes, in the order _publish() builds them.
SIGNALS: tuple[str, ...] = (
    "unit_load_mw", "unit_load_demand_mw", "coordinated_control", "mft_active", "runback_active", "ambient_temp_c",
    *_MILL_SIGNALS,
    "total_air_flow_tph", *(f"sa_damper_{m}_pos_pct" for m in MILLS), "sofa_damper_1_pos_pct",
    "sofa_damper_2_pos_pct", "windbox_furnace_dp_kpa",
    "o2_economiser_pct", "co_ppm", "nox_mg_nm3", "furnace_exit_gas_temp_c", "airheater_exit_gas_temp_c",
    "carbon_in_fly_ash_pct",
    "drum_pressure_mpa", "main_steam_pressure_mpa", "main_steam_flow_tph", "main_steam_temp_c", "reheat_steam_temp_c",
    "sh_spray_1_flow_tph", "sh_spray_2_flow_tph", "rh_spray_flow_tph", "drum_level_mm", "boiler_efficiency_pct",
    "ai_enable", "ai_permissive", "ai_active", "ai_request", "ai_heartbeat",
    *(f"{mv}_{k}_sp" for mv in MV_NAMES for k in ("dcs", "ai")),
    *(f"{mv}_ai_enable" for mv in MV_NAMES),
)
# Instrument noise, one standard deviation in the tag's unit (analysers and temperatures kept well
# inside the tag map's rate-of-change plausibility limits).
NOISE_STD: dict[str, float] = {
    "unit_load_mw": 0.5, "ambient_temp_c": 0.05, "total_air_flow_tph": 6.0, "windbox_furnace_dp_kpa": 0.01,
    "o2_economiser_pct": 0.03, "co_ppm": 1.5, "nox_mg_nm3": 4.0, "furnace_exit_gas_temp_c": 3.0,
    "airheater_exit_gas_temp_c": 0.3, "drum_pressure_mpa": 0.02, "main_steam_pressure_mpa": 0.02,
    "main_steam_flow_tph": 4.0, "main_steam_temp_c": 0.2, "reheat_steam_temp_c": 0.2, "sh_spray_1_flow_tph": 0.3,
    "sh_spray_2_flow_tph": 0.3, "rh_spray_flow_tph": 0.3, "drum_level_mm": 3.0,
    **{f"mill_{m}_coal_flow_tph": 0.2 for m in MILLS}, **{f"mill_{m}_outlet_temp_c": 0.3 for m in MILLS},
    **{f"sa_damper_{m}_pos_pct": 0.1 for m in MILLS}, "sofa_damper_1_pos_pct": 0.1, "sofa_damper_2_pos_pct": 0.1,
}
# What the DCS shows: its resolution per tag; a new value replaces the shown one only when it moves by
# at least that much (exception reporting deadband, one resolution step).
DCS_RESOLUTION: dict[str, float] = {
    "unit_load_mw": 0.1, "ambient_temp_c": 0.1, "total_air_flow_tph": 1.0, "windbox_furnace_dp_kpa": 0.01,
    "o2_economiser_pct": 0.01, "co_ppm": 1.0, "nox_mg_nm3": 1.0, "furnace_exit_gas_temp_c": 1.0,
    "airheater_exit_gas_temp_c": 0.1, "drum_pressure_mpa": 0.01, "main_steam_pressure_mpa": 0.01,
    "main_steam_flow_tph": 1.0, "main_steam_temp_c": 0.1, "reheat_steam_temp_c": 0.1, "sh_spray_1_flow_tph": 0.1,
    "sh_spray_2_flow_tph": 0.1, "rh_spray_flow_tph": 0.1, "drum_level_mm": 1.0,
    **{f"mill_{m}_coal_flow_tph": 0.1 for m in MILLS}, **{f"mill_{m}_outlet_temp_c": 0.1 for m in MILLS},
    **{f"sa_damper_{m}_pos_pct": 0.1 for m in MILLS}, "sofa_damper_1_pos_pct": 0.1, "sofa_damper_2_pos_pct": 0.1,
}
_IDX = {name: i for i, name in enumerate(SIGNALS)}
_NOISY = tuple(_IDX[n] for n in NOISE_STD)
_FEEDER_FLOW = tuple(_IDX[f"mill_{m}_coal_flow_tph"] for m in MILLS)
_NOISE_BLOCK = 4096
_DESIGN_AIR = stoichiometry(DESIGN_COAL).air_stoich_kg

FD_FAN_TAU_S = 6.0
DAMPER_RATE_PCT_S = 2.0
TILT_RATE_DEG_S = 0.5
FEGT_TAU_S = 15.0
EXIT_GAS_TAU_S = 240.0  # air heater and back-pass metal
# Analysers. O2: in-situ zirconia probes, a grid of six across the two economiser-outlet ducts, 5 s
# of gas transport and a 4 s cell response (5-20 s, boiler-facts.md). CO and NOx: extractive, the
# scenario's sample-line dead time (20 s) and an 8 s analyser lag: 20-30 s to 63 %.
O2_DELAY_S, O2_TAU_S = 5, 4.0
GAS_ANALYSER_TAU_S = 8.0
O2_PROBES = 6
O2_PROBE_STRATIFICATION_PCT = 0.2  # std of a probe's offset from the duct mean at full load (*assumption*)
O2_PROBE_DRIFT_PCT, O2_PROBE_DRIFT_TAU_S = 0.15, 24 * 3600.0  # cell drift between calibrations (*assumption*)
CO_SPIKES_PER_H = 6.0  # local CO pockets passing the single-point analyser, well above the knee (*assumption*)
CO_SPIKE_MEDIAN_PPM, CO_SPIKE_TAU_S = 40.0, 15.0
# CO is a combustion-quality limit judged on a short average, as the plant's analyser (and any emission
# limit) sees it: true CO through a one-minute filter. Seconds-long peaks from coal surges near the knee
# are in performance()["co_ppm"] but do not count as time over the limit.
CO_LIMIT_AVERAGE_S = 60.0
UBC_SAMPLE_S = 300.0  # online carbon-in-ash analyser: one result per 5 minutes ...
UBC_NOISE_PCT = 0.15  # ... with this repeatability (one std, percentage points; *assumption*)
THERMOCOUPLE_TAU_S = 20.0  # steam temperature thermocouples in thermowells
EXIT_GAS_TC_TAU_S = 30.0
ONLINE_EFFICIENCY_S = 10.0  # the DCS's performance calculation
DESIGN_LEAKAGE_PCT = 7.0  # the air-heater leakage the DCS corrects its exit-gas temperature for
CP_AIR_OVER_GAS = 0.93
COAL_UPDATE_S = 60.0  # the as-fired coal analysis is re-evaluated this often
# Sootblowing: a DCS sequence of wall blowers then retractables over 40 minutes; slag and fouling come
# off gradually; the blowers use steam. *assumption*
SOOTBLOW_S = 2400.0
SOOTBLOW_SLAG_TAU_S, SOOTBLOW_FOULING_TAU_S = 600.0, 900.0
SOOTBLOW_STEAM_TPH = 6.0
SLAG_REF_FEGT_C = 950.0  # slag grows with FEGT above this (ash softening); the scenario's rate at 1063 degC


class ReferenceUnit:
    def __init__(self, scenario: Scenario | None = None, seed: int = 0, tag_map: TagMap | None = None,
                 dcs_config: DcsConfig | None = None):
        self.scenario = sc = scenario if scenario is not None else named_scenario("steady_full_load")
        self.tag_map = tag_map if tag_map is not None else load_tag_map(default_tag_map_path())
        self._bind_tag_map()
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._noise_on = sc.noise
        self._noise_rows: list[list[float]] = []
        self._noise_i = _NOISE_BLOCK
        # Per noisy signal: its index, noise, range, resolution and exception-reporting deadband.
        self._instruments_shown = [(i, NOISE_STD[SIGNALS[i]], *self._range(SIGNALS[i]), DCS_RESOLUTION[SIGNALS[i]],
                                    DCS_RESOLUTION[SIGNALS[i]] * 0.999) for i in _NOISY]
        self.t = 0.0
        self._next_event = 0
        self.slag, self.fouling = sc.initial_slag, sc.initial_fouling
        self.sootblow_left_s = 0.0
        self._next_sootblow = sc.sootblow_every_h * 3600.0 if sc.sootblow_every_h > 0 else math.inf
        self._coal_key = self._coal_key_at(0.0)
        self.dist = DisturbanceState(sc.disturbances, seed, self._named_coal(self._coal_key))
        self.mills_calibration = list(self.dist.calibration)
        self._sa_coeff = self._windbox()
        self._weather()
        self._set_coal(self._coal_key)
        self._next_coal = COAL_UPDATE_S
        self.violation_s = {name: 0.0 for name in PROCESS_LIMITS}  # seconds each limit was crossed (true values)
        self._start(sc.agc_target_mw(0.0), dcs_config or DcsConfig())

    # ── set-up ───────────────────────────────────────────────────────────────────────────────────
    def _bind_tag_map(self) -> None:
        """The tag map decides what the unit serves and which setpoints the AI may set: its
        `manipulated` list. Every other DCS setpoint stays a DCS-only loop."""
        tm = self.tag_map
        bad_mv = [mv for mv in tm.manipulated if mv not in MV_NAMES]
        if bad_mv:
            raise ValueError(f"{tm.source}: manipulated.{bad_mv[0]} is not a setpoint of the unit's DCS "
                             f"(known: {', '.join(MV_NAMES)})")
        unknown = [n for n in tm.readable if n not in _IDX]
        if unknown:
            raise ValueError(f"{tm.source}: the simulated unit has no signal {unknown[0]!r}")
        for mv, spec in tm.manipulated.items():
            if spec.ai_setpoint != f"{mv}_ai_sp" or spec.dcs_setpoint != f"{mv}_dcs_sp":
                raise ValueError(f"{tm.source}: manipulated.{mv} must map to {mv}_dcs_sp / {mv}_ai_sp")
            if spec.ai_enable not in (None, f"{mv}_ai_enable"):
                raise ValueError(f"{tm.source}: manipulated.{mv}.ai_enable must be {mv}_ai_enable")
        self.ai_mvs: tuple[str, ...] = tuple(mv for mv in MV_NAMES if mv in tm.manipulated)
        writable = {"ai_request", "ai_heartbeat", "ai_status", "ai_reason", *(f"{mv}_ai_sp" for mv in self.ai_mvs)}
        bad_write = [n for n in tm.writable if n not in writable]
        if bad_write:
            raise ValueError(f"{tm.source}: tag {bad_write[0]!r} is writable in the map, but the unit's DCS "
                             "accepts writes only to the AI setpoints of its manipulated variables, ai_request, "
                             "ai_heartbeat, ai_status and ai_reason")
        self.value_names: tuple[str, ...] = tuple(tm.readable)
        self._value_idx = [_IDX[n] for n in self.value_names]
        self._ai_sp_index = {f"{mv}_ai_sp": MV_NAMES.index(mv) for mv in self.ai_mvs}

    def _range(self, name: str) -> tuple[float, float]:
        spec = self.tag_map.signals.get(name)
        return (spec.lo, spec.hi) if spec is not None else (-math.inf, math.inf)

    def _coal_key_at(self, t: float) -> tuple[str, str, float]:
        """The named coal reaching the mills, in steps of 1 % of a changeover."""
        old, new, x = self.scenario.coal_mix(t)
        return old, new, round(x, 2)

    @staticmethod
    def _named_coal(key: tuple[str, str, float]):
        return blend(coal_named(key[0]), coal_named(key[1]), key[2])

    def _set_coal(self, key: tuple[str, str, float]) -> None:
        """The coal as fired: the scenario's named coal (or blend) with the present quality variation."""
        dm, da, dv = self.dist.coal_dev
        self.coal = coal = vary_coal(self._named_coal(key), dm, da, dv)
        self.cp = CoalProps.of(coal)

    def _windbox(self) -> list[float]:
        return [c * (1.0 + w) for c, w in zip(SA_FLOW_COEFF, self.dist.windbox)]

    def _weather(self) -> None:
        sc, t = self.scenario, self.t
        self.ambient_c = (sc.ambient_c(t) if sc.ambient_swing_c else sc.ambient_mean_c) + self.dist.weather_c
        # Relative humidity is highest in the cold of the early morning.
        daily = math.cos(2.0 * math.pi * (t / 3600.0 - 5.0) / 24.0) if sc.ambient_swing_c else 0.0
        rh = clamp(0.01 * sc.humidity_rh_pct + 0.15 * daily + self.dist.humidity_dev, 0.1, 1.0)
        self.humidity = humidity_ratio(self.ambient_c, rh)

    def _start(self, load_mw: float, config: DcsConfig) -> None:
        """Start settled at the scenario's first load under the DCS: every lag and integrator at rest."""
        op = OperatingPoint(load_mw, self.coal, slag=self.slag, fouling=self.fouling, ambient_c=self.ambient_c,
                            humidity=self.humidity, sa_coeff=self._sa_coeff)
        sp = op.evaluate()
        status = [MillStatus.RUNNING if s else MillStatus.IDLE for s in op.in_service]
        self.mills = MillBank(self.cp, sp.feeders_tph, status, self.ambient_c)
        self.mills.calibration = self.mills_calibration
        self.air_tph = sp.air_tph
        self.sa_pos = list(sp.mvs[I_SA:I_SOFA])
        self.sofa_pos = list(sp.mvs[I_SOFA:I_O2])
        self.fire: FireState = sp.fire
        self.fegt_c = sp.fire.fegt_c
        self.exit_gas_c = sp.fire.airheater_exit_c
        self.eff: EfficiencyResult = sp.efficiency
        f = sp.fire
        rises = steam.stage_rises((f.gain_primary_sh, f.gain_platen_sh, f.gain_final_sh, f.gain_reheater), 1.0,
                                  op.drum_pressure, op.flow_frac)
        self.steam = st = steam.SteamSide(load_mw, rises, sp.spray_tph)
        o2_sp = o2_curve_pct(load_mw / steam.RATED_MW)
        trim = sp.air_tph / (sp.coal_tph * _DESIGN_AIR * air_ratio_for_o2(o2_sp)) - 1.0
        ai_range = {mv: self._range(f"{mv}_ai_sp") for mv in self.ai_mvs}
        self.dcs = Dcs(config, load_mw, sp.mvs, sp.coal_tph, sp.air_tph, trim, self.steam.steam_kgs,
                       self.ai_mvs, ai_range, sp.tilt_deg)
        self.tilt_deg = sp.tilt_deg
        # Instruments, settled on the steady state.
        self._o2_buf = [f.o2_pct] * 32
        self._gas_buf = [(f.co_ppm, f.nox_mg_nm3)] * 128
        self._buf_i = 0
        self.o2_true_lagged, self.co_meas, self.nox_meas = f.o2_pct, f.co_ppm, f.nox_mg_nm3
        self._mrng = np.random.default_rng(np.random.SeedSequence([self.seed, 23]))
        realistic = self._noise_on
        self.o2_probe_offset = (self._mrng.standard_normal(O2_PROBES) * O2_PROBE_STRATIFICATION_PCT).tolist() \
            if realistic else [0.0] * O2_PROBES
        self.o2_probe_drift = (self._mrng.standard_normal(O2_PROBES) * O2_PROBE_DRIFT_PCT).tolist() \
            if realistic else [0.0] * O2_PROBES
        self._drift_a = math.exp(-1.0 / O2_PROBE_DRIFT_TAU_S)
        self._drift_b = O2_PROBE_DRIFT_PCT * math.sqrt(1.0 - self._drift_a ** 2)
        self.o2_meas = f.o2_pct + self._o2_grid_bias(f)
        self._co_spike = 0.0
        self.co_minute = f.co_ppm  # true CO averaged over about a minute: what the CO limit is judged on
        self.ubc_meas = f.carbon_in_fly_ash_pct
        self._ubc_sum, self._ubc_n, self._ubc_next = 0.0, 0, UBC_SAMPLE_S
        self.tc = [st.platen_out_c, st.main_steam_c, st.reheat_c, self.exit_gas_c]  # thermocouples
        self.online_eff = sp.efficiency.efficiency_pct
        self._online_next = ONLINE_EFFICIENCY_S
        self._perf: dict | None = None
        self._measured = Measured()
        self._shown: list[float] | None = None
        self._publish()

    def _o2_grid_bias(self, f: FireState) -> float:
        """The probe grid's average minus the true duct mean: stratification (worse at low load and
        with poor mixing) and cell drift."""
        spread = 1.0 + max(0.0, 1.0 - f.firing_rate) + 5.0 * f.mismatch
        return (spread * sum(self.o2_probe_offset) + sum(self.o2_probe_drift)) / O2_PROBES

    # ── the step ─────────────────────────────────────────────────────────────────────────────────
    def step(self, dt: float = 1.0) -> None:
        if not (dt > 0.0 and math.isfinite(dt)):
            raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
        self.t = t = self.t + dt
        sc = self.scenario
        events = sc.events
        while self._next_event < len(events) and events[self._next_event].t <= t:
            self._apply(events[self._next_event])
            self._next_event += 1
        if t >= self._next_sootblow:
            self._next_sootblow += sc.sootblow_every_h * 3600.0
            self._apply(Event(t, "sootblow"))
        dist = self.dist
        dist.step(self.slag)
        mills = self.mills
        mills.pulsation = dist.pulsation
        self._sa_coeff = self._windbox()
        self._weather()
        ambient = self.ambient_c
        if t >= self._next_coal:
            self._next_coal += COAL_UPDATE_S
            self._coal_key = self._coal_key_at(t)
            self._set_coal(self._coal_key)
            mills.cp = self.cp
            dist.lab.sample(t, self.coal, COAL_UPDATE_S)
        self._surfaces(dt)

        # The DCS acts on what its instruments showed at the end of the last step.
        out, m, dcs = self._out, self._measured, self.dcs
        m.load_mw = out[_IDX["unit_load_mw"]]
        m.main_pressure_mpa = out[_IDX["main_steam_pressure_mpa"]]
        m.steam_flow_kgs = out[_IDX["main_steam_flow_tph"]] / 3.6
        m.o2_pct = out[_IDX["o2_economiser_pct"]]
        m.co_ppm = out[_IDX["co_ppm"]]
        m.nox_mg_nm3 = out[_IDX["nox_mg_nm3"]]
        m.main_steam_c = out[_IDX["main_steam_temp_c"]]
        m.reheat_c = out[_IDX["reheat_steam_temp_c"]]
        m.platen_out_c = self.tc[0]
        m.drum_level_mm = out[_IDX["drum_level_mm"]]
        m.feeder_tph = [out[i] for i in _FEEDER_FLOW]
        m.coal_tph = sum(m.feeder_tph)
        dcs.step(dt, m, mills, sc.agc_target_mw(t))

        # Mills, air, dampers, fire side
        mills.step(dt, dcs.feeder_demand, ambient)
        self.air_tph += (dcs.air_demand - self.air_tph) * (1.0 - math.exp(-dt / FD_FAN_TAU_S))
        applied = dcs.applied
        step = DAMPER_RATE_PCT_S * dt
        sa, sofa = self.sa_pos, self.sofa_pos
        for i in range(N_LEVELS):
            sa[i] = toward(applied[I_SA + i], sa[i], step)
        for i in range(2):
            sofa[i] = toward(applied[I_SOFA + i], sofa[i], step)
        tilt_step = TILT_RATE_DEG_S * dt
        self.tilt_deg = toward(dcs.tilt_demand, self.tilt_deg, tilt_step)
        self.fire = f = fire_side(self.cp, mills.burner, mills.primary_air(), mills.r90_pct(), sa, sofa,
                                  self.air_tph, self.slag, self.fouling, ambient, self._sa_coeff, self.tilt_deg,
                                  dist.fireball_shift)
        self.fegt_c += (f.fegt_c - self.fegt_c) * (1.0 - math.exp(-dt / FEGT_TAU_S))
        self.exit_gas_c += (f.airheater_exit_c - self.exit_gas_c) * (1.0 - math.exp(-dt / EXIT_GAS_TAU_S))

        # Efficiency and heat to steam
        burning = sum(mills.burner)
        if burning > 1.0:
            self.eff = efficiency_at(self.coal, f.o2_pct, f.co_ppm, self.exit_gas_c, f.carbon_in_fly_ash_pct,
                                     f.carbon_in_bottom_ash_pct, f.firing_rate, ambient, self.humidity)
            heat = burning * self.coal.hhv_kj_per_kg / 3.6e3 * self.eff.efficiency_pct * 0.01
        else:
            heat = 0.0
        sprays = [0.0, 0.0, 0.0] if dcs.mft else applied[I_SPRAY:]
        self.steam.step(dt, heat, dcs.turbine_valve, sprays, dcs.feedwater,
                        (f.gain_primary_sh, f.gain_platen_sh, f.gain_final_sh, f.gain_reheater))

        self._instruments(dt, f)
        self._perf = None
        if not dcs.mft:
            perf = self.performance()
            for name, crossed in perf["violations"].items():
                if crossed:
                    self.violation_s[name] += dt
        self._publish()
        if t >= self._online_next:
            self._online_next += ONLINE_EFFICIENCY_S
            self._online_efficiency()

    def _surfaces(self, dt: float) -> None:
        """Slag grows with the furnace exit temperature and the ash (or at the scenario's fixed rate),
        sheds at random; fouling builds steadily; a sootblowing sequence takes both off gradually."""
        sc, d = self.scenario, self.dist
        if d.spec.slag_growth:
            hot = max(self.fegt_c - SLAG_REF_FEGT_C, 0.0) / (1063.0 - SLAG_REF_FEGT_C)
            rate = sc.slag_rate_per_h * hot * hot * self.coal.ash_pct / 20.2
        else:
            rate = sc.slag_rate_per_h
        slag = self.slag + rate * dt / 3600.0
        slag -= slag * d.shedding * dt
        fouling = self.fouling + sc.fouling_rate_per_h * dt / 3600.0
        if self.sootblow_left_s > 0.0:
            self.sootblow_left_s -= dt
            slag *= math.exp(-dt / SOOTBLOW_SLAG_TAU_S)
            fouling *= math.exp(-dt / SOOTBLOW_FOULING_TAU_S)
        self.slag, self.fouling = clamp(slag, 0.0, 1.0), min(fouling, 1.0)

    def _instruments(self, dt: float, f: FireState) -> None:
        """Analysers (transport dead time and lag, probe grid, CO pockets), carbon-in-ash sampling and
        thermocouple lags: the values the instruments hold before noise and the DCS's resolution."""
        sc = self.scenario
        self._buf_i = i = self._buf_i + 1
        self._o2_buf[i % 32] = f.o2_pct
        self._gas_buf[i % 128] = (f.co_ppm, f.nox_mg_nm3)
        o2 = self._o2_buf[(i - O2_DELAY_S) % 32]
        co, nox = self._gas_buf[(i - min(int(round(sc.analyser_delay_s / dt)), 127)) % 128]
        self.o2_true_lagged += (o2 - self.o2_true_lagged) * (1.0 - math.exp(-dt / O2_TAU_S))
        k = 1.0 - math.exp(-dt / GAS_ANALYSER_TAU_S)
        if self._noise_on:
            drift = self.o2_probe_drift
            row = self._mrng.standard_normal(O2_PROBES + 2)
            for j in range(O2_PROBES):
                drift[j] = self._drift_a * drift[j] + self._drift_b * row[j]
            # CO pockets: more often and larger as O2 nears the knee.
            near = math.exp(min((f.co_knee_o2_pct + 1.0 - f.o2_pct) / 0.5, 4.0))
            if self._mrng.random() < CO_SPIKES_PER_H * near * dt / 3600.0:
                self._co_spike += CO_SPIKE_MEDIAN_PPM * math.exp(0.7 * row[O2_PROBES + 1])
            self._co_spike *= math.exp(-dt / CO_SPIKE_TAU_S)
            co += self._co_spike
        self.o2_meas = self.o2_true_lagged + (self._o2_grid_bias(f) if self._noise_on else 0.0)
        self.co_meas += (co - self.co_meas) * k
        self.co_minute += (f.co_ppm - self.co_minute) * (1.0 - math.exp(-dt / CO_LIMIT_AVERAGE_S))
        self.nox_meas += (nox - self.nox_meas) * k
        self._ubc_sum += f.carbon_in_fly_ash_pct * dt
        self._ubc_n += dt
        if self.t >= self._ubc_next:
            noise = UBC_NOISE_PCT * float(self._mrng.standard_normal()) if self._noise_on else 0.0
            self.ubc_meas = max(self._ubc_sum / self._ubc_n + noise, 0.0)
            self._ubc_sum, self._ubc_n = 0.0, 0
            self._ubc_next += UBC_SAMPLE_S
        st, tc = self.steam, self.tc
        k_tc = 1.0 - math.exp(-dt / THERMOCOUPLE_TAU_S)
        tc[0] += (st.platen_out_c - tc[0]) * k_tc
        tc[1] += (st.main_steam_c - tc[1]) * k_tc
        tc[2] += (st.reheat_c - tc[2]) * k_tc
        # The exit-gas thermocouple sees gas cooled by the air-heater leakage; the DCS corrects it for
        # its design leakage, not the leakage there is.
        amb = self.ambient_c
        k_true = 0.01 * self.dist.leakage_pct * CP_AIR_OVER_GAS
        k_dcs = 0.01 * DESIGN_LEAKAGE_PCT * CP_AIR_OVER_GAS
        mixed = (self.exit_gas_c + k_true * amb) / (1.0 + k_true)
        tc[3] += (mixed + k_dcs * (mixed - amb) - tc[3]) * (1.0 - math.exp(-dt / EXIT_GAS_TC_TAU_S))

    def _online_efficiency(self) -> None:
        """The DCS's own performance calculation: the heat-loss method on its instruments, with the
        lab's last coal analysis and the design air humidity (the unit has no humidity transmitter)."""
        o = self._out
        if self.dcs.mft or sum(self.mills.burner) < 1.0:
            self.online_eff = 0.0
        else:
            self.online_eff = efficiency_at(
                self.dist.lab.coal, clamp(o[_IDX["o2_economiser_pct"]], 0.0, 20.0), max(o[_IDX["co_ppm"]], 0.0),
                o[_IDX["airheater_exit_gas_temp_c"]], self.ubc_meas, 1.6 * self.ubc_meas,
                o[_IDX["unit_load_mw"]] / steam.RATED_MW, o[_IDX["ambient_temp_c"]],
                HUMIDITY_KG_PER_KG).efficiency_pct
        o[_IDX["boiler_efficiency_pct"]] = self.online_eff

    def _publish(self) -> None:
        """What the instruments and the DCS show now: noise, each tag's range, the DCS's resolution
        and deadband."""
        d, st, mills, f = self.dcs, self.steam, self.mills, self.fire
        feeder, outlet_temp = mills.feeder, mills.outlet_temp
        mill_values = []
        for i, status in enumerate(mills.status):
            mill_values += (feeder[i], 1.0 if status in IN_SERVICE else 0.0, outlet_temp[i],
                            1.0 if status in IN_SEQUENCE else 0.0)
        sp = [0.0] * (2 * len(MV_NAMES))  # each MV's DCS and AI setpoint, in turn
        sp[::2], sp[1::2] = d.dcs_sp, d.ai_sp
        tc = self.tc
        out = [
            st.load_mw, d.load_demand_mw, float(d.coordinated), float(d.mft), float(d.runback), self.ambient_c,
            *mill_values,
            self.air_tph, *self.sa_pos, *self.sofa_pos, f.windbox_dp_kpa,
            self.o2_meas, self.co_meas, self.nox_meas, self.fegt_c, tc[3], self.ubc_meas,
            st.p_drum, st.p_main, st.steam_kgs * 3.6, tc[1], tc[2],
            *st.spray_tph, st.drum_level_mm, self.online_eff,
            float(d.ai_enable), float(d.ai_permissive), float(d.ai_active), float(d.ai_request), d.heartbeat,
            *sp, *map(float, d.mv_enable),
        ]
        if self._noise_on:
            if self._noise_i >= _NOISE_BLOCK:
                self._noise_rows = self._rng.standard_normal((_NOISE_BLOCK, len(_NOISY))).tolist()
                self._noise_i = 0
            row = self._noise_rows[self._noise_i]
            self._noise_i += 1
            shown = self._shown
            for (i, std, lo, hi, res, deadband), noise in zip(self._instruments_shown, row):
                v = round((out[i] + std * noise) / res) * res
                v = lo if lo > v else v  # clamp() inline: the hottest loop of the step
                v = hi if hi < v else v
                if shown is not None and abs(v - shown[i]) < deadband:
                    v = shown[i]
                out[i] = v
        self._out = self._shown = out

    # ── the API ──────────────────────────────────────────────────────────────────────────────────
    def values(self) -> dict[str, float]:
        """Every readable signal of the tag map by logical name (bools as 0.0/1.0)."""
        return dict(zip(self.value_names, map(self._out.__getitem__, self._value_idx)))

    def values_array(self) -> np.ndarray:
        """The same as values(), as an array in the order of `value_names` (for training loops)."""
        return np.array(list(map(self._out.__getitem__, self._value_idx)))

    def write(self, signal: str, value: float) -> None:
        """Write a writable tag (the AI setpoints of the tag map's manipulated variables, ai_request,
        ai_heartbeat, the faceplate's ai_status and ai_reason), as over OPC UA."""
        spec = self.tag_map.signals.get(signal)
        if spec is None:
            raise KeyError(f"unknown tag {signal!r} (not in the tag map {self.tag_map.source})")
        if not spec.writable:
            raise ValueError(f"tag {signal!r} is not writable (access {spec.access})")
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"tag {signal!r}: value must be a finite number, got {value!r}")
        value = float(value)
        if not spec.lo <= value <= spec.hi:
            raise ValueError(f"tag {signal!r}: {value:g} is outside its range [{spec.lo:g}, {spec.hi:g}]")
        d = self.dcs
        if signal == "ai_request":
            if value not in (0.0, 1.0):
                raise ValueError(f"tag {signal!r} is Boolean: write 0 or 1, got {value:g}")
            d.ai_request = value == 1.0
        elif signal == "ai_heartbeat":
            if value != int(value):
                raise ValueError(f"tag {signal!r} is a counter: write a whole number, got {value:g}")
            d.write_heartbeat(value)
        elif signal in ("ai_status", "ai_reason"):  # write-only: the faceplate shows them, nobody reads them back
            if value != int(value):
                raise ValueError(f"tag {signal!r} is a code: write a whole number, got {value:g}")
            setattr(d, signal, int(value))
            return
        else:
            d.ai_sp[self._ai_sp_index[signal]] = value
        self._out[_IDX[signal]] = value

    def set_ai_enable(self, on: bool) -> None:
        """The operator's AI permissive on the DCS faceplate (off also resets a latched process trip)."""
        self.dcs.set_ai_enable(on)
        self._out[_IDX["ai_enable"]] = float(self.dcs.ai_enable)

    def set_mv_ai_enable(self, mv: str, on: bool) -> None:
        """The operator's AI enable of one manipulated variable on the DCS faceplate (off: back to the DCS)."""
        if mv not in self.ai_mvs:
            raise ValueError(f"{mv!r} is not a manipulated variable of {self.tag_map.source}")
        self.dcs.set_mv_ai_enable(mv, on)
        self._out[_IDX[f"{mv}_ai_enable"]] = float(bool(on))

    def inject(self, kind: str, target: str | float | None = None) -> None:
        """Make an event happen now (mill_trip 'c', mft, runback 420.0, coordinated_off, ...)."""
        self._apply(Event(self.t, kind, target))

    def _apply(self, e: Event) -> None:
        d = self.dcs
        if e.kind == "mill_trip":
            self.mills.trip(MILLS.index(str(e.target).lower()))
        elif e.kind == "mft":
            d.mft, d.coordinated = True, False
            self.mills.trip_all()
        elif e.kind == "runback":
            d.runback, d.load_cap_mw = True, float(e.target)
        elif e.kind == "coordinated_off":
            d.coordinated = False
        elif e.kind == "coordinated_on":
            d.coordinated = not d.mft
        elif e.kind == "sootblow":  # the DCS's sootblowing sequence starts (or restarts)
            self.sootblow_left_s = SOOTBLOW_S

    def performance(self) -> dict:
        """True (noise-free, undelayed) KPIs now, and which process limits are crossed (on true values;
        CO on its one-minute average)."""
        if self._perf is not None:
            return self._perf
        f, st, e = self.fire, self.steam, self.eff
        firing = not self.dcs.mft and sum(self.mills.burner) > 1.0
        coal_tph = sum(self.mills.feeder)
        fans = fan_power_mw(self.air_tph, sum(self.mills.pa), flue_gas_tph(self.air_tph, coal_tph, self.coal),
                            self.dist.leakage_pct, self.exit_gas_c)
        hr = unit_heat_rate(boiler_efficiency_pct=e.efficiency_pct, flow_frac=st.flow_frac, gross_mw=st.load_mw,
                            main_steam_c=st.main_steam_c, reheat_c=st.reheat_c,
                            sh_spray_tph=st.spray_tph[0] + st.spray_tph[1], rh_spray_tph=st.spray_tph[2],
                            fan_mw=fans, sootblow_steam_tph=SOOTBLOW_STEAM_TPH if self.sootblow_left_s > 0 else 0.0)
        kpi = {
            "efficiency_pct": e.efficiency_pct if firing else 0.0,
            "efficiency_lhv_pct": e.efficiency_lhv_pct if firing else 0.0,
            "heat_rate_kj_kwh": hr.heat_rate_kj_kwh if firing else 0.0,
            "fan_power_mw": fans, "turbine_heat_rate_correction_pct": hr.turbine_correction_pct,
            "losses_pct": dict(e.losses_pct) if firing else {},
            "o2_pct": f.o2_pct, "co_ppm": f.co_ppm, "co_minute_ppm": self.co_minute, "nox_mg_nm3": f.nox_mg_nm3,
            "carbon_in_fly_ash_pct": f.carbon_in_fly_ash_pct,
            "spray_tph": sum(st.spray_tph), "sh_spray_tph": st.spray_tph[0] + st.spray_tph[1],
            "rh_spray_tph": st.spray_tph[2],
            "main_steam_temp_c": st.main_steam_c, "reheat_steam_temp_c": st.reheat_c,
            "airheater_exit_gas_temp_c": self.exit_gas_c, "furnace_exit_gas_temp_c": self.fegt_c,
            "load_mw": st.load_mw, "load_demand_mw": self.dcs.load_demand_mw, "coal_tph": coal_tph,
            "steam_flow_tph": st.steam_kgs * 3.6, "main_steam_pressure_mpa": st.p_main,
            "air_ratio": f.air_ratio, "lower_furnace_air_ratio": f.lower_furnace_ratio,
            "burner_tilt_deg": self.tilt_deg,
            "slag": self.slag, "fouling": self.fouling, "sootblowing": self.sootblow_left_s > 0.0,
        }
        signal = {"o2_economiser_pct": f.o2_pct, "co_ppm": self.co_minute, "nox_mg_nm3": f.nox_mg_nm3,
                  "main_steam_temp_c": st.main_steam_c, "reheat_steam_temp_c": st.reheat_c,
                  "airheater_exit_gas_temp_c": self.exit_gas_c}
        kpi["limit_signals"] = signal  # the values the limits are judged on, by signal
        kpi["violations"] = {name: firing and (signal[s] > lim if rel == "at_most" else signal[s] < lim)
                             for name, (s, rel, lim) in PROCESS_LIMITS.items()}
        kpi["any_violation"] = any(kpi["violations"].values())
        self._perf = kpi
        return kpi

    def operating_point(self) -> OperatingPoint:
        """The unit's conditions now (load demand, coal, mills in service, slag, fouling, ambient,
        windbox imbalance, air-heater leakage) as a steady-state operating point, for the oracle."""
        return OperatingPoint(self.dcs.load_demand_mw, self.coal, self.mills.in_service, slag=self.slag,
                              fouling=self.fouling, ambient_c=self.ambient_c, humidity=self.humidity,
                              sa_coeff=list(self._sa_coeff), leakage_pct=self.dist.leakage_pct)
