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
from boiler_ai.plant.tagmap import TagMap, load_tag_map
from boiler_ai.sim import steam
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
from boiler_ai.sim.efficiency import EfficiencyResult
from boiler_ai.sim.fireside import N_LEVELS, CoalProps, FireState, fire_side
from boiler_ai.sim.mills import MILLS, MillBank, MillStatus
from boiler_ai.sim.scenario import Event, Scenario, named_scenario
from boiler_ai.sim.steady import HUMIDITY_KG_PER_KG, OperatingPoint, efficiency_at


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
                      for s in (f"mill_{m}_coal_flow_tph", f"mill_{m}_in_service", f"mill_{m}_outlet_temp_c"))
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
)
_WRITABLE = frozenset({"ai_request", "ai_heartbeat", *(f"{mv}_ai_sp" for mv in MV_NAMES)})
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
_IDX = {name: i for i, name in enumerate(SIGNALS)}
_NOISY = tuple(_IDX[n] for n in NOISE_STD)
_NOISE_BLOCK = 4096
_DESIGN_AIR = stoichiometry(DESIGN_COAL).air_stoich_kg

FD_FAN_TAU_S = 6.0
DAMPER_RATE_PCT_S = 2.0
FEGT_TAU_S = 15.0
EXIT_GAS_TAU_S = 240.0  # air heater and back-pass metal
ANALYSER_TAU_S = 8.0
UBC_SAMPLE_S = 300.0  # online carbon-in-ash analyser: one result per 5 minutes
ONLINE_EFFICIENCY_S = 10.0  # the DCS's performance calculation


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
        self._noise_std = [NOISE_STD[SIGNALS[i]] for i in _NOISY]
        self._ranges = [(self._range(SIGNALS[i])) for i in _NOISY]
        self.t = 0.0
        self._next_event = 0
        self.slag, self.fouling = sc.initial_slag, sc.initial_fouling
        self.ambient_c = sc.ambient_c(0.0)
        self._coal_key = self._coal_key_at(0.0)
        self._set_coal(self._coal_key)
        self.violation_s = {name: 0.0 for name in PROCESS_LIMITS}  # seconds each limit was crossed (true values)
        self._start(sc.agc_target_mw(0.0), dcs_config or DcsConfig())

    # ── set-up ───────────────────────────────────────────────────────────────────────────────────
    def _bind_tag_map(self) -> None:
        tm = self.tag_map
        unknown = [n for n in tm.readable if n not in _IDX]
        if unknown:
            raise ValueError(f"{tm.source}: the simulated unit has no signal {unknown[0]!r}")
        bad_write = [n for n in tm.writable if n not in _WRITABLE]
        if bad_write:
            raise ValueError(f"{tm.source}: tag {bad_write[0]!r} is writable in the map, but the unit's DCS "
                             "accepts writes only to AI setpoints, ai_request and ai_heartbeat")
        for mv in MV_NAMES:
            spec = tm.manipulated.get(mv)
            if spec is not None and (spec.ai_setpoint != f"{mv}_ai_sp" or spec.dcs_setpoint != f"{mv}_dcs_sp"):
                raise ValueError(f"{tm.source}: manipulated.{mv} must map to {mv}_dcs_sp / {mv}_ai_sp")
        self.value_names: tuple[str, ...] = tuple(tm.readable)
        self._value_idx = [_IDX[n] for n in self.value_names]

    def _range(self, name: str) -> tuple[float, float]:
        spec = self.tag_map.signals.get(name)
        return (spec.lo, spec.hi) if spec is not None else (-math.inf, math.inf)

    def _coal_key_at(self, t: float) -> tuple[str, str, float]:
        """The coal reaching the mills, in steps of 1 % of a changeover (recomputed only on a change)."""
        old, new, x = self.scenario.coal_mix(t)
        return old, new, round(x, 2)

    def _set_coal(self, key: tuple[str, str, float]) -> None:
        self.coal = coal = blend(coal_named(key[0]), coal_named(key[1]), key[2])
        self.cp = CoalProps.of(coal)

    def _start(self, load_mw: float, config: DcsConfig) -> None:
        """Start settled at the scenario's first load under the DCS: every lag and integrator at rest."""
        op = OperatingPoint(load_mw, self.coal, slag=self.slag, fouling=self.fouling, ambient_c=self.ambient_c)
        sp = op.evaluate()
        status = [MillStatus.RUNNING if s else MillStatus.IDLE for s in op.in_service]
        self.mills = MillBank(self.cp, sp.feeders_tph, status, self.ambient_c)
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
        self.steam = steam.SteamSide(load_mw, rises, sp.spray_tph)
        o2_sp = o2_curve_pct(load_mw / steam.RATED_MW)
        trim = sp.air_tph / (sp.coal_tph * _DESIGN_AIR * air_ratio_for_o2(o2_sp)) - 1.0
        self.dcs = Dcs(config, load_mw, sp.mvs, sp.coal_tph, sp.air_tph, trim, self.steam.steam_kgs)
        self.dcs.ai_driven = [mv in self.tag_map.manipulated for mv in MV_NAMES]
        self._analyser_buf = [(f.o2_pct, f.co_ppm, f.nox_mg_nm3)] * 128
        self._analyser_i = 0
        self.o2_meas, self.co_meas, self.nox_meas = f.o2_pct, f.co_ppm, f.nox_mg_nm3
        self.ubc_meas = f.carbon_in_fly_ash_pct
        self._ubc_sum, self._ubc_n, self._ubc_next = 0.0, 0, UBC_SAMPLE_S
        self.online_eff = sp.efficiency.efficiency_pct
        self._online_next = ONLINE_EFFICIENCY_S
        self._perf: dict | None = None
        self._measured = Measured()
        self._publish()

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
        if sc.coal_changes:
            key = self._coal_key_at(t)
            if key != self._coal_key:
                self._coal_key = key
                self._set_coal(key)
                self.mills.cp = self.cp
        self.slag = min(self.slag + sc.slag_rate_per_h * dt / 3600.0, 1.0)
        self.fouling = min(self.fouling + sc.fouling_rate_per_h * dt / 3600.0, 1.0)
        self.ambient_c = ambient = sc.ambient_c(t) if sc.ambient_swing_c else sc.ambient_mean_c

        # The DCS acts on what its instruments showed at the end of the last step.
        out, m, dcs = self._out, self._measured, self.dcs
        m.load_mw = out[_IDX["unit_load_mw"]]
        m.main_pressure_mpa = out[_IDX["main_steam_pressure_mpa"]]
        m.steam_flow_kgs = out[_IDX["main_steam_flow_tph"]] / 3.6
        m.o2_pct = out[_IDX["o2_economiser_pct"]]
        m.main_steam_c = out[_IDX["main_steam_temp_c"]]
        m.reheat_c = out[_IDX["reheat_steam_temp_c"]]
        m.platen_out_c = self.steam.platen_out_c
        m.drum_level_mm = out[_IDX["drum_level_mm"]]
        m.feeder_tph = [out[_IDX[f"mill_{x}_coal_flow_tph"]] for x in MILLS]
        m.coal_tph = sum(m.feeder_tph)
        dcs.step(dt, m, self.mills, sc.agc_target_mw(t))

        # Mills, air, dampers, fire side
        mills = self.mills
        mills.step(dt, dcs.feeder_demand, ambient)
        self.air_tph += (dcs.air_demand - self.air_tph) * (1.0 - math.exp(-dt / FD_FAN_TAU_S))
        applied = dcs.applied
        step = DAMPER_RATE_PCT_S * dt
        sa, sofa = self.sa_pos, self.sofa_pos
        for i in range(N_LEVELS):
            sa[i] = min(max(applied[I_SA + i], sa[i] - step), sa[i] + step)
        for i in range(2):
            sofa[i] = min(max(applied[I_SOFA + i], sofa[i] - step), sofa[i] + step)
        self.fire = f = fire_side(self.cp, mills.burner, mills.primary_air(), mills.r90_pct(), sa, sofa,
                                  self.air_tph, self.slag, self.fouling, ambient)
        self.fegt_c += (f.fegt_c - self.fegt_c) * (1.0 - math.exp(-dt / FEGT_TAU_S))
        self.exit_gas_c += (f.airheater_exit_c - self.exit_gas_c) * (1.0 - math.exp(-dt / EXIT_GAS_TAU_S))

        # Efficiency and heat to steam
        burning = sum(mills.burner)
        if burning > 1.0:
            self.eff = efficiency_at(self.coal, f.o2_pct, f.co_ppm, self.exit_gas_c, f.carbon_in_fly_ash_pct,
                                     f.carbon_in_bottom_ash_pct, f.firing_rate, ambient, HUMIDITY_KG_PER_KG)
            heat = burning * self.coal.hhv_kj_per_kg / 3.6e3 * self.eff.efficiency_pct * 0.01
        else:
            heat = 0.0
        sprays = [0.0, 0.0, 0.0] if dcs.mft else applied[I_SPRAY:]
        self.steam.step(dt, heat, dcs.turbine_valve, sprays, dcs.feedwater,
                        (f.gain_primary_sh, f.gain_platen_sh, f.gain_final_sh, f.gain_reheater))

        # Analysers: gas transport delay, then the analyser's own lag.
        self._analyser_i = i = (self._analyser_i + 1) % 128
        self._analyser_buf[i] = (f.o2_pct, f.co_ppm, f.nox_mg_nm3)
        delayed = self._analyser_buf[(i - min(int(round(sc.analyser_delay_s / dt)), 127)) % 128]
        k = 1.0 - math.exp(-dt / ANALYSER_TAU_S)
        self.o2_meas += (delayed[0] - self.o2_meas) * k
        self.co_meas += (delayed[1] - self.co_meas) * k
        self.nox_meas += (delayed[2] - self.nox_meas) * k
        self._ubc_sum += f.carbon_in_fly_ash_pct * dt
        self._ubc_n += dt
        if t >= self._ubc_next:
            self.ubc_meas = self._ubc_sum / self._ubc_n
            self._ubc_sum, self._ubc_n = 0.0, 0
            self._ubc_next += UBC_SAMPLE_S
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

    def _online_efficiency(self) -> None:
        """The DCS's own performance calculation: the heat-loss method on its instruments."""
        o = self._out
        if self.dcs.mft or sum(self.mills.burner) < 1.0:
            self.online_eff = 0.0
        else:
            self.online_eff = efficiency_at(
                self.coal, o[_IDX["o2_economiser_pct"]], max(o[_IDX["co_ppm"]], 0.0),
                o[_IDX["airheater_exit_gas_temp_c"]], self.ubc_meas, 1.6 * self.ubc_meas, self.fire.firing_rate,
                o[_IDX["ambient_temp_c"]], HUMIDITY_KG_PER_KG).efficiency_pct
        o[_IDX["boiler_efficiency_pct"]] = self.online_eff

    def _publish(self) -> None:
        """What the instruments and the DCS show now (noise added, clipped to each tag's range)."""
        d, st, mills, f = self.dcs, self.steam, self.mills, self.fire
        in_service = mills.in_service
        mill_values = []
        for i in range(N_LEVELS):
            mill_values += (mills.feeder[i], 1.0 if in_service[i] else 0.0, mills.outlet_temp[i])
        sp = []
        for k in range(len(MV_NAMES)):
            sp += (d.dcs_sp[k], d.ai_sp[k])
        out = [
            st.load_mw, d.load_demand_mw, float(d.coordinated), float(d.mft), float(d.runback), self.ambient_c,
            *mill_values,
            self.air_tph, *self.sa_pos, *self.sofa_pos, f.windbox_dp_kpa,
            self.o2_meas, self.co_meas, self.nox_meas, self.fegt_c, self.exit_gas_c, self.ubc_meas,
            st.p_drum, st.p_main, st.steam_kgs * 3.6, st.main_steam_c, st.reheat_c,
            *st.spray_tph, st.drum_level_mm, self.online_eff,
            float(d.ai_enable), float(d.ai_permissive), float(d.ai_active), float(d.ai_request), d.heartbeat,
            *sp,
        ]
        if self._noise_on:
            if self._noise_i >= _NOISE_BLOCK:
                self._noise_rows = self._rng.standard_normal((_NOISE_BLOCK, len(_NOISY))).tolist()
                self._noise_i = 0
            row = self._noise_rows[self._noise_i]
            self._noise_i += 1
            for j, i in enumerate(_NOISY):
                lo, hi = self._ranges[j]
                out[i] = min(max(out[i] + self._noise_std[j] * row[j], lo), hi)
        self._out = out

    # ── the API ──────────────────────────────────────────────────────────────────────────────────
    def values(self) -> dict[str, float]:
        """Every readable signal of the tag map by logical name (bools as 0.0/1.0)."""
        out = self._out
        return {n: out[i] for n, i in zip(self.value_names, self._value_idx)}

    def values_array(self) -> np.ndarray:
        """The same as values(), as an array in the order of `value_names` (for training loops)."""
        out = self._out
        return np.array([out[i] for i in self._value_idx])

    def write(self, signal: str, value: float) -> None:
        """Write a writable tag (the <mv>_ai_sp AI setpoints, ai_request, ai_heartbeat), as over OPC UA."""
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
        else:
            d.ai_sp[MV_NAMES.index(signal[:-len("_ai_sp")])] = value
        self._out[_IDX[signal]] = value

    def set_ai_enable(self, on: bool) -> None:
        """The operator's AI permissive on the DCS faceplate."""
        self.dcs.ai_enable = bool(on)
        self._out[_IDX["ai_enable"]] = float(self.dcs.ai_enable)

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
        elif e.kind == "sootblow":
            self.slag, self.fouling = min(self.slag, 0.02), min(self.fouling, 0.02)

    def performance(self) -> dict:
        """True (noise-free, undelayed) KPIs now, and which process limits are crossed."""
        if self._perf is not None:
            return self._perf
        f, st, e = self.fire, self.steam, self.eff
        firing = not self.dcs.mft and sum(self.mills.burner) > 1.0
        kpi = {
            "efficiency_pct": e.efficiency_pct if firing else 0.0,
            "efficiency_lhv_pct": e.efficiency_lhv_pct if firing else 0.0,
            "losses_pct": dict(e.losses_pct) if firing else {},
            "o2_pct": f.o2_pct, "co_ppm": f.co_ppm, "nox_mg_nm3": f.nox_mg_nm3,
            "carbon_in_fly_ash_pct": f.carbon_in_fly_ash_pct,
            "spray_tph": sum(st.spray_tph), "sh_spray_tph": st.spray_tph[0] + st.spray_tph[1],
            "rh_spray_tph": st.spray_tph[2],
            "main_steam_temp_c": st.main_steam_c, "reheat_steam_temp_c": st.reheat_c,
            "airheater_exit_gas_temp_c": self.exit_gas_c, "furnace_exit_gas_temp_c": self.fegt_c,
            "load_mw": st.load_mw, "load_demand_mw": self.dcs.load_demand_mw, "coal_tph": sum(self.mills.feeder),
            "steam_flow_tph": st.steam_kgs * 3.6, "main_steam_pressure_mpa": st.p_main,
            "air_ratio": f.air_ratio, "lower_furnace_air_ratio": f.lower_furnace_ratio,
        }
        signal = {"o2_economiser_pct": f.o2_pct, "co_ppm": f.co_ppm, "nox_mg_nm3": f.nox_mg_nm3,
                  "main_steam_temp_c": st.main_steam_c, "reheat_steam_temp_c": st.reheat_c,
                  "airheater_exit_gas_temp_c": self.exit_gas_c}
        kpi["violations"] = {name: firing and (signal[s] > lim if rel == "at_most" else signal[s] < lim)
                             for name, (s, rel, lim) in PROCESS_LIMITS.items()}
        kpi["any_violation"] = any(kpi["violations"].values())
        self._perf = kpi
        return kpi

    def operating_point(self) -> OperatingPoint:
        """The unit's conditions now (load demand, coal, mills in service, slag, fouling, ambient) as a
        steady-state operating point, for the oracle."""
        return OperatingPoint(self.dcs.load_demand_mw, self.coal, self.mills.in_service, slag=self.slag,
                              fouling=self.fouling, ambient_c=self.ambient_c)

