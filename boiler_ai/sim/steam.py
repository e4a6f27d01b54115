"""The steam side: drum pressure and storage, turbine and load, superheater and reheater temperatures.

Structure (boiler-facts.md): heat to steam through the waterwall lag into a steam-storage integrator
(VDI/VDE 3508, T_s = 200 s), choked flow through the turbine valves, IP/LP lag to the generator.
Superheat in three stages (primary SH, platen, final SH) with a spray before the platen and before the
final stage, reheat with a spray at its inlet; each stage a two-lag chain whose time constants grow as
steam flow falls (spray to outlet 60-200 s). Stage temperature rises are design figures scaled by the
fire side's heat pick-up gains, by the heat per kg of steam and by the specific heat at the pressure.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from boiler_ai.sim.clamp import clamp

RATED_MW = 600.0
STEAM_RATED_TPH = 1800.0
STEAM_RATED_KGS = STEAM_RATED_TPH / 3.6
CYCLE_EFF_RATED = 0.44  # gross turbine-cycle efficiency at rated load (heat rate ~8180 kJ/kWh)
HEAT_TO_STEAM_RATED_MW = RATED_MW / CYCLE_EFF_RATED
MAIN_PRESSURE_RATED_MPA = 16.2
SH_DP_RATED_MPA = 0.8  # drum to turbine stop valve at rated flow
DRUM_PRESSURE_RATED_MPA = MAIN_PRESSURE_RATED_MPA + SH_DP_RATED_MPA
STORAGE_TIME_S = 200.0  # VDI/VDE 3508 steam storage
WATERWALL_TAU_S = 25.0  # heat release to steam generation (tube metal, circulation)
GENERATOR_TAU_S = 8.0  # reheater volume and IP/LP turbine
VALVE_RATED = 0.92  # turbine valve position at rated load: throttle reserve

STEAM_TEMP_SP_C = 540.0  # main steam temperature set point (design 538-541), the heat-rate reference for both
REHEAT_SP_C = 538.0  # hot reheat set point: run 2 degC low for margin below the 545 degC limit
# Reheat is held by burner tilt; its spray is an over-temperature trim this far above the set point
# (reheat spray bypasses the HP turbine and costs heat rate, so the DCS uses it last).
RH_SPRAY_MARGIN_C = 1.5
# Design temperature rises (degC) at rated load, clean surfaces, DCS air and firing pattern.
DT_PRIMARY_SH, DT_PLATEN, DT_FINAL_SH, DT_REHEATER = 94.0, 62.0, 45.0, 221.0
REHEAT_FLOW_SHARE = 0.83  # reheat steam / main steam
REHEAT_SHORT_BELOW = 0.75  # steam flow below which the reheater cannot make its set point. *calibrated*
SPRAY_DH_SH = 1900.0  # kJ/kg: steam enthalpy above spray water (feed pump discharge), superheater
SPRAY_DH_RH = 2330.0  # reheater spray from the feed pump interstage, colder
CP_SH, CP_RH = 3.5, 2.4  # effective specific heats, kJ/kg K
SPRAY_MAX_TPH = (100.0, 60.0, 50.0)  # SH stage 1, SH stage 2, RH valves wide open
SPRAY_VALVE_TAU_S = 3.0
# Lag time constants at rated flow (each stage is two such lags in series).
TAU_PRIMARY_SH, TAU_PLATEN, TAU_FINAL_SH, TAU_REHEATER = 40.0, 25.0, 30.0, 45.0

# Saturation temperature of water, IAPWS-IF97 table points (MPa, degC); interpolated in ln p.
_SAT_P = (0.1, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0)
_SAT_T = (99.6, 151.8, 179.9, 212.4, 250.4, 275.6, 295.0, 311.0, 324.7, 336.7, 347.4, 352.3, 357.0, 361.5, 365.7, 369.8)
_SAT_LNP = tuple(math.log(p) for p in _SAT_P)


def sat_temp_c(p_mpa: float) -> float:
    lnp = math.log(clamp(p_mpa, _SAT_P[0], _SAT_P[-1]))
    i = clamp(bisect.bisect_right(_SAT_LNP, lnp) - 1, 0, len(_SAT_P) - 2)
    w = (lnp - _SAT_LNP[i]) / (_SAT_LNP[i + 1] - _SAT_LNP[i])
    return _SAT_T[i] + w * (_SAT_T[i + 1] - _SAT_T[i])


def main_pressure_sp(load_frac: float) -> float:
    """Sliding-pressure curve: 16.2 MPa above 90 % load, sliding to 9.5 MPa at 50 %, floor 7 MPa."""
    return clamp(9.5 + 16.75 * (load_frac - 0.5), 7.0, MAIN_PRESSURE_RATED_MPA)


def power_mw(flow_frac: float) -> float:
    """Generator output for a main steam flow (fraction of rated); part load costs cycle efficiency."""
    return RATED_MW * flow_frac * (1.0 - 0.28 * (1.0 - flow_frac) ** 2)


def flow_for_power(mw: float) -> float:
    """Inverse of power_mw (Newton; monotone on 0..1.2)."""
    x = max(mw / RATED_MW, 0.0)
    for _ in range(8):
        f = power_mw(x) - mw
        df = RATED_MW * (1.0 - 0.28 * (1.0 - x) ** 2 + 0.56 * x * (1.0 - x))
        x -= f / df
    return x


def cold_reheat_c(flow_frac: float, main_steam_c: float) -> float:
    return 322.0 - 12.0 * (1.0 - flow_frac) + 0.75 * (main_steam_c - STEAM_TEMP_SP_C)


def after_spray(t_c: float, steam_kgs: float, spray_kgs: float, dh: float, cp: float) -> float:
    """Temperature after mixing spray water into steam (enthalpy balance, constant cp)."""
    return t_c - spray_kgs * dh / ((steam_kgs + spray_kgs) * cp)


def spray_for(t_before_c: float, t_target_c: float, steam_kgs: float, dh: float, cp: float) -> float:
    """Spray flow (kg/s) that brings t_before down to t_target; 0 if it is already below."""
    drop = t_before_c - t_target_c
    return 0.0 if drop <= 0.0 else steam_kgs * drop * cp / (dh - drop * cp)


def pressure_factor(p_drum_mpa: float) -> float:
    """Lower pressure, lower specific heat of superheated steam: the same heat raises it further."""
    return (DRUM_PRESSURE_RATED_MPA / max(p_drum_mpa, 3.0)) ** 0.25


@dataclass(slots=True)
class StageRises:
    """Temperature rise each stage would give now (degC), before sprays."""

    primary: float
    platen: float
    final: float
    reheater: float


def stage_rises(gains: tuple[float, float, float, float], heat_per_steam: float, p_drum_mpa: float,
                flow_frac: float) -> StageRises:
    """heat_per_steam: heat to steam per kg of steam relative to design (1 at any steady state). Over-
    and under-firing move the stage rises by about half as much: tube metal and the furnace's own
    radiation share buffer it. The convective reheater picks up less per kg of steam as load falls
    (cooler, slower gas): reheat runs short at low load, as on drum units."""
    heat_per_steam = clamp(heat_per_steam, 0.6, 1.4) ** 0.5
    pf = pressure_factor(p_drum_mpa) * heat_per_steam
    return StageRises(DT_PRIMARY_SH * gains[0] * pf, DT_PLATEN * gains[1] * pf, DT_FINAL_SH * gains[2] * pf,
                      DT_REHEATER * gains[3] * heat_per_steam * reheat_flow_factor(flow_frac))


def reheat_flow_factor(flow_frac: float) -> float:
    """Reheater rise against flow at fixed fire-side gains: a little more per kg as flow falls, until
    below about 75 % flow the cooler, slower gas leaves it short: at half load on the design coal,
    even with the burners tilted fully up, reheat stays a few degrees below its set point."""
    x = max(flow_frac, 0.2)
    return x ** -0.1 * min(x / REHEAT_SHORT_BELOW, 1.0) ** 0.4


def platen_outlet_sp(load_frac: float) -> float:
    """DCS set point for the platen outlet (first spray loop), keeping the second spray in range."""
    return 499.5 - 6.0 * (1.0 - clamp(load_frac, 0.3, 1.0))


@dataclass(slots=True)
class SteadySteam:
    platen_out_c: float
    main_c: float
    reheat_c: float
    spray_kgs: tuple[float, float, float]  # SH stage 1, SH stage 2, RH
    reheat_unsprayed_c: float  # what the burner tilt loop acts on


def steady_temperatures(rises: StageRises, p_drum_mpa: float, flow_frac: float, load_frac: float,
                        sprays_kgs: tuple[float, float, float] | None) -> SteadySteam:
    """Settled steam temperatures. sprays_kgs None: the DCS spray loops at their set points
    (each spray opens only as far as its valve allows); else those spray flows."""
    m = max(flow_frac, 0.05) * STEAM_RATED_KGS
    t1 = sat_temp_c(p_drum_mpa) + rises.primary
    if sprays_kgs is None:
        s1 = min(spray_for(t1 + rises.platen, platen_outlet_sp(load_frac), m, SPRAY_DH_SH, CP_SH),
                 SPRAY_MAX_TPH[0] / 3.6)
    else:
        s1 = sprays_kgs[0]
    t2 = after_spray(t1, m, s1, SPRAY_DH_SH, CP_SH) + rises.platen
    if sprays_kgs is None:
        s2 = min(spray_for(t2 + rises.final, STEAM_TEMP_SP_C, m, SPRAY_DH_SH, CP_SH), SPRAY_MAX_TPH[1] / 3.6)
    else:
        s2 = sprays_kgs[1]
    t3 = after_spray(t2, m, s2, SPRAY_DH_SH, CP_SH) + rises.final
    m_rh = REHEAT_FLOW_SHARE * m
    crh = cold_reheat_c(flow_frac, t3)
    if sprays_kgs is None:
        sr = min(spray_for(crh + rises.reheater, REHEAT_SP_C + RH_SPRAY_MARGIN_C, m_rh, SPRAY_DH_RH, CP_RH),
                 SPRAY_MAX_TPH[2] / 3.6)
    else:
        sr = sprays_kgs[2]
    t_rh = after_spray(crh, m_rh, sr, SPRAY_DH_RH, CP_RH) + rises.reheater
    return SteadySteam(t2, t3, t_rh, (s1, s2, sr), crh + rises.reheater)


def _tau_scale(flow_frac: float) -> float:
    """Stage lags grow as the steam flow falls (less steam to carry the metal's heat)."""
    return max(flow_frac, 0.25) ** -0.8


class SteamSide:
    """Drum, turbine, generator and the steam-temperature chains, stepped at dt with exact lags."""

    def __init__(self, load_mw: float, rises: StageRises, sprays_tph: tuple[float, float, float]):
        x = flow_for_power(load_mw)
        self.flow_frac = x
        self.p_drum = main_pressure_sp(load_mw / RATED_MW) + SH_DP_RATED_MPA * x * x
        self.p_main = self.p_drum - SH_DP_RATED_MPA * x * x
        self.valve = VALVE_RATED * x * MAIN_PRESSURE_RATED_MPA / self.p_main
        self.heat_lagged = x * HEAT_TO_STEAM_RATED_MW  # heat reaching the water/steam, MW
        self.load_mw = load_mw
        self.spray_tph = list(sprays_tph)
        self.feedwater_kgs = x * STEAM_RATED_KGS
        self.level_mm = 0.0  # water inventory part of the drum level
        self.drum_level_mm = 0.0  # what the level transmitter sees (with swell)
        self._swell = 0.0
        self.dp_dt = 0.0
        st = self._settled(rises, sprays_tph)
        # two lag states per stage, settled
        self.t_primary = [st[0], st[0]]
        self.t_platen = [st[1], st[1]]
        self.t_final = [st[2], st[2]]
        self.t_reheat = [st[3], st[3]]

    def _settled(self, rises: StageRises, sprays_tph: tuple[float, float, float]) -> tuple[float, float, float, float]:
        m = self.flow_frac * STEAM_RATED_KGS
        t1 = sat_temp_c(self.p_drum) + rises.primary
        t2 = after_spray(t1, m, sprays_tph[0] / 3.6, SPRAY_DH_SH, CP_SH) + rises.platen
        t3 = after_spray(t2, m, sprays_tph[1] / 3.6, SPRAY_DH_SH, CP_SH) + rises.final
        crh = cold_reheat_c(self.flow_frac, t3)
        t_rh = after_spray(crh, REHEAT_FLOW_SHARE * m, sprays_tph[2] / 3.6, SPRAY_DH_RH, CP_RH) + rises.reheater
        return t1, t2, t3, t_rh

    @property
    def platen_out_c(self) -> float:
        return self.t_platen[1]

    @property
    def main_steam_c(self) -> float:
        return self.t_final[1]

    @property
    def reheat_c(self) -> float:
        return self.t_reheat[1]

    @property
    def steam_kgs(self) -> float:
        return self.flow_frac * STEAM_RATED_KGS

    def step(self, dt: float, heat_to_steam_mw: float, valve_demand: float, spray_valves_pct: list[float],
             feedwater_demand_kgs: float, gains: tuple[float, float, float, float]) -> None:
        # Heat into the steam through the waterwall lag; steam storage integrates the imbalance.
        self.heat_lagged += (heat_to_steam_mw - self.heat_lagged) * (1.0 - math.exp(-dt / WATERWALL_TAU_S))
        generated = self.heat_lagged / HEAT_TO_STEAM_RATED_MW  # steam generation, fraction of rated
        self.valve += (clamp(valve_demand, 0.0, 1.05) - self.valve) * (1.0 - math.exp(-dt / 2.0))
        x = self.flow_frac
        self.p_main = max(self.p_drum - SH_DP_RATED_MPA * x * x, 0.1)
        x = self.flow_frac = self.valve / VALVE_RATED * self.p_main / MAIN_PRESSURE_RATED_MPA
        self.dp_dt = DRUM_PRESSURE_RATED_MPA / STORAGE_TIME_S * (generated - x)
        self.p_drum = max(self.p_drum + self.dp_dt * dt, 0.1)
        self.load_mw += (power_mw(x) - self.load_mw) * (1.0 - math.exp(-dt / GENERATOR_TAU_S))
        # Drum level: feedwater against steam, plus swell when the pressure falls.
        self.feedwater_kgs += (feedwater_demand_kgs - self.feedwater_kgs) * (1.0 - math.exp(-dt / 5.0))
        self._swell += (-1500.0 * self.dp_dt - self._swell) * (1.0 - math.exp(-dt / 15.0))
        m = x * STEAM_RATED_KGS
        self.level_mm += 20.0 * (self.feedwater_kgs - m) / STEAM_RATED_KGS * dt
        level = self.level_mm + self._swell
        # Sprays: valve to flow through the actuator lag.
        k_spray = 1.0 - math.exp(-dt / SPRAY_VALVE_TAU_S)
        for k in range(3):
            target = SPRAY_MAX_TPH[k] * 0.01 * clamp(spray_valves_pct[k], 0.0, 100.0)
            self.spray_tph[k] += (target - self.spray_tph[k]) * k_spray
        # Stage temperatures: each stage's settled outlet through two lags.
        heat_per_steam = self.heat_lagged / (HEAT_TO_STEAM_RATED_MW * max(x, 0.05))
        rises = stage_rises(gains, heat_per_steam, self.p_drum, x)
        m = max(m, 0.05 * STEAM_RATED_KGS)
        scale = _tau_scale(x)
        t1 = _lag2(self.t_primary, sat_temp_c(self.p_drum) + rises.primary, TAU_PRIMARY_SH * scale, dt)
        t2 = _lag2(self.t_platen, after_spray(t1, m, self.spray_tph[0] / 3.6, SPRAY_DH_SH, CP_SH) + rises.platen,
                   TAU_PLATEN * scale, dt)
        t3 = _lag2(self.t_final, after_spray(t2, m, self.spray_tph[1] / 3.6, SPRAY_DH_SH, CP_SH) + rises.final,
                   TAU_FINAL_SH * scale, dt)
        crh = cold_reheat_c(x, t3)
        _lag2(self.t_reheat, after_spray(crh, REHEAT_FLOW_SHARE * m, self.spray_tph[2] / 3.6, SPRAY_DH_RH, CP_RH)
              + rises.reheater, TAU_REHEATER * scale, dt)
        self.drum_level_mm = level


def _lag2(state: list[float], target: float, tau: float, dt: float) -> float:
    k = 1.0 - math.exp(-dt / tau)
    state[0] += (target - state[0]) * k
    state[1] += (state[0] - state[1]) * k
    return state[1]
