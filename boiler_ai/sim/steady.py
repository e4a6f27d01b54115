"""The unit at steady state: where its lags settle for a load, a coal and a setting of the MVs.

At steady state the DCS's integrating loops have done their work: steam flow makes the load, drum
pressure sits on the sliding-pressure curve, the O2 trim holds O2 on its set point (curve + bias), the
boiler master fires whatever coal the efficiency asks for, and the spray loops hold their set points
as far as their valves allow. What is left is algebra: the same fire-side and steam-side functions the
dynamic unit lags, solved for the coal flow by fixed-point iteration on the efficiency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from boiler_ai.sim import steam
from boiler_ai.sim.clamp import clamp
from boiler_ai.sim.coal import Coal
from boiler_ai.sim.dcs import (
    I_FEEDER,
    I_O2,
    I_SA,
    I_SOFA,
    I_SPRAY,
    MV_NAMES,
    dcs_damper_setpoints,
    mills_for_coal,
    o2_curve_pct,
)
from boiler_ai.sim.efficiency import EfficiencyResult, Fuel, heat_loss_method
from boiler_ai.sim.fireside import (
    FLY_ASH_FRACTION,
    MILL_RATED_TPH,
    N_LEVELS,
    SA_FLOW_COEFF,
    TILT_RANGE_DEG,
    CoalProps,
    FireState,
    fire_side,
)
from boiler_ai.sim.heatrate import HeatRate, fan_power_mw, unit_heat_rate
from boiler_ai.sim.mills import FEEDER_MAX_TPH, FEEDER_MIN_TPH, WEAR, MillStatus, primary_air_tph

HUMIDITY_KG_PER_KG = 0.010  # design air humidity (the DCS's performance calculation assumes it)
RADIATION_LOSS_RATED_PCT = 0.2  # ABMA chart for a 600 MW-class unit; the absolute loss is constant over load
AIRHEATER_LEAKAGE_PCT = 8.0


def humidity_ratio(temp_c: float, relative: float) -> float:
    """kg water per kg dry air at 101.325 kPa (Magnus formula for the saturation pressure)."""
    p_sat = 610.94 * math.exp(17.625 * temp_c / (temp_c + 243.04))
    p_w = relative * p_sat
    return 0.622 * p_w / (101325.0 - p_w)


def flue_gas_tph(air_tph: float, coal_tph: float, coal: Coal) -> float:
    """Flue gas mass leaving the furnace: the air and the coal, less its ash."""
    return air_tph + coal_tph * (1.0 - 0.01 * coal.ash_pct)


def efficiency_at(fuel: Fuel, o2_pct: float, co_ppm: float, exit_gas_c: float, carbon_fly_pct: float,
                  carbon_bottom_pct: float, firing_rate: float, ambient_c: float, humidity: float) -> EfficiencyResult:
    """The boiler's heat-loss efficiency (gas at the air-heater exit); radiation loss grows as 1/load."""
    return heat_loss_method(fuel, min(o2_pct, 20.0), co_ppm, max(exit_gas_c, ambient_c + 1.0), ambient_c, humidity,
                            carbon_fly_pct, carbon_bottom_pct, FLY_ASH_FRACTION,
                            RADIATION_LOSS_RATED_PCT / max(firing_rate, 0.2))


def efficiency_of(fuel: Fuel, fire: FireState, ambient_c: float, humidity: float) -> EfficiencyResult:
    return efficiency_at(fuel, fire.o2_pct, fire.co_ppm, fire.airheater_exit_c, fire.carbon_in_fly_ash_pct,
                         fire.carbon_in_bottom_ash_pct, fire.firing_rate, ambient_c, humidity)


def split_feeders(total_tph: float, bias: list[float], in_service: list[bool]) -> list[float]:
    """Coal per feeder at steady state: equal shares plus mean-free biases, within the feeder limits;
    the boiler master makes up what a limited feeder cannot take on the others."""
    n = sum(in_service)
    mean = sum(b for b, s in zip(bias, in_service) if s) / n
    each = total_tph / n
    feed = [clamp(each + b - mean, FEEDER_MIN_TPH, FEEDER_MAX_TPH) if s else 0.0 for b, s in zip(bias, in_service)]
    free = [i for i, f in enumerate(feed) if in_service[i] and FEEDER_MIN_TPH < f < FEEDER_MAX_TPH]
    if free:
        extra = (total_tph - sum(feed)) / len(free)
        for i in free:
            feed[i] = clamp(feed[i] + extra, FEEDER_MIN_TPH, FEEDER_MAX_TPH)
    return feed


@dataclass(slots=True)
class SteadyPoint:
    load_mw: float
    coal_tph: float
    feeders_tph: list[float]
    air_tph: float
    fire: FireState
    efficiency: EfficiencyResult
    steam_flow_frac: float
    drum_pressure_mpa: float
    main_pressure_mpa: float
    platen_out_c: float
    main_steam_c: float
    reheat_c: float
    spray_tph: tuple[float, float, float]
    mvs: list[float]  # applied MV values in dcs.MV_NAMES order (sprays as valve %)
    heat_rate: HeatRate
    tilt_deg: float  # where the DCS's burner tilt loop settles
    reheat_unsprayed_c: float

    @property
    def efficiency_pct(self) -> float:
        return self.efficiency.efficiency_pct

    @property
    def heat_rate_kj_kwh(self) -> float:
        return self.heat_rate.heat_rate_kj_kwh


class OperatingPoint:
    """A load, a coal and the unit's condition; evaluate() gives the steady state for a setting of the MVs."""

    def __init__(self, load_mw: float, coal: Coal, in_service: list[bool] | None = None, *, slag: float = 0.0,
                 fouling: float = 0.0, ambient_c: float = 20.0, humidity: float = HUMIDITY_KG_PER_KG,
                 sa_coeff: tuple[float, ...] | list[float] = SA_FLOW_COEFF,
                 leakage_pct: float = AIRHEATER_LEAKAGE_PCT):
        self.load_mw, self.coal = load_mw, coal
        self.sa_coeff, self.leakage_pct = tuple(sa_coeff), leakage_pct
        self._tilt_guess, self._tilt_slope = 0.0, 0.6
        self.cp = CoalProps.of(coal)
        self.slag, self.fouling, self.ambient_c, self.humidity = slag, fouling, ambient_c, humidity
        self.load_frac = load_mw / steam.RATED_MW
        self.flow_frac = steam.flow_for_power(load_mw)
        self.heat_to_steam_mw = self.flow_frac * steam.HEAT_TO_STEAM_RATED_MW
        self.main_pressure = steam.main_pressure_sp(self.load_frac)
        self.drum_pressure = self.main_pressure + steam.SH_DP_RATED_MPA * self.flow_frac ** 2
        if in_service is None:
            first_guess = self.heat_to_steam_mw / (0.89 * coal.hhv_kj_per_kg) * 3.6e3
            n = mills_for_coal(first_guess)
            in_service = [i < n for i in range(N_LEVELS)]  # the DCS starts mills A, B, ... in order
        self.in_service = list(in_service)
        if not any(self.in_service):
            raise ValueError("no mill in service")

    def dcs_mvs(self, feeders_tph: list[float]) -> list[float]:
        """The DCS's own settings at these feeder flows: biases zero, dampers on their schedules, sprays
        left to their loops (zeros here)."""
        sa, sofa = dcs_damper_setpoints(self.load_frac, feeders_tph)
        return [0.0] * N_LEVELS + sa + sofa + [0.0, 0.0, 0.0, 0.0]

    def evaluate(self, mvs: list[float] | None = None, sprays: str = "dcs",
                 tilt_deg: float | None = None) -> SteadyPoint:
        """mvs: applied values in dcs.MV_NAMES order (None: the DCS's own). The spray entries are ignored
        unless sprays="mvs"; with sprays="dcs" the spray loops hold their set points. tilt_deg: the burner
        tilt (None: where the DCS's tilt loop puts it)."""
        dcs = mvs is None
        u = self.dcs_mvs([0.0] * N_LEVELS) if dcs else list(mvs)
        if len(u) != len(MV_NAMES):
            raise ValueError(f"expected {len(MV_NAMES)} MV values, got {len(u)}")
        if tilt_deg is not None:
            return self._settle(u, dcs, tilt_deg, sprays)
        # The DCS's burner tilt loop holds reheat (before its spray) on the set point within the tilt's
        # range: secant steps on the tilt, each a settled fire side.
        # Starts from the last answer: an optimiser's next point is close by.
        tilt, prev, slope = self._tilt_guess, None, self._tilt_slope
        for _ in range(5):
            sp = self._settle(u, dcs, tilt, sprays)
            miss = steam.REHEAT_SP_C - sp.reheat_unsprayed_c
            if prev is not None and prev[0] != tilt:
                slope = max((sp.reheat_unsprayed_c - prev[1]) / (tilt - prev[0]), 0.05)
            prev = (tilt, sp.reheat_unsprayed_c)
            new_tilt = clamp(tilt + miss / slope, -TILT_RANGE_DEG, TILT_RANGE_DEG)
            if abs(new_tilt - tilt) < 1e-8:
                break
            tilt = new_tilt
        else:
            sp = self._settle(u, dcs, tilt, sprays)
        self._tilt_guess, self._tilt_slope = sp.tilt_deg, slope
        return sp

    def _settle(self, u: list[float], dcs: bool, tilt: float, sprays: str) -> SteadyPoint:
        """The steady state at this burner tilt: the coal flow that makes the load at the efficiency it gives."""
        u = list(u)
        cp, coal = self.cp, self.coal
        o2 = o2_curve_pct(self.load_frac) + u[I_O2]
        air_ratio = cp.stoich.excess_air_ratio(o2)
        sa, sofa = u[I_SA:I_SOFA], u[I_SOFA:I_O2]
        bias = u[I_FEEDER:I_SA]
        in_service = self.in_service
        status = [MillStatus.RUNNING if s else MillStatus.IDLE for s in in_service]
        r90_design = [cp.r90_ref_pct * w for w in WEAR]  # each mill's fineness at its design loading
        coal_tph = self.heat_to_steam_mw / (0.89 * coal.hhv_kj_per_kg) * 3.6e3
        for _ in range(6):
            feed = split_feeders(coal_tph, bias, in_service)
            if dcs:
                u = self.dcs_mvs(feed)
                sa, sofa = u[I_SA:I_SOFA], u[I_SOFA:I_O2]
            pa = [primary_air_tph(s, f) for s, f in zip(status, feed)]
            r90 = [r * (max(f, 10.0) / MILL_RATED_TPH) ** 0.5 for r, f in zip(r90_design, feed)]
            air = air_ratio * sum(feed) * cp.air_stoich
            fire = fire_side(cp, feed, pa, r90, sa, sofa, air, self.slag, self.fouling, self.ambient_c, self.sa_coeff,
                             tilt)
            eff = efficiency_of(self.coal, fire, self.ambient_c, self.humidity)
            new = self.heat_to_steam_mw / (eff.efficiency_pct * 0.01 * coal.hhv_kj_per_kg) * 3.6e3
            done = abs(new - coal_tph) < 1e-4
            coal_tph = new
            if done:
                break
        rises = steam.stage_rises((fire.gain_primary_sh, fire.gain_platen_sh, fire.gain_final_sh, fire.gain_reheater),
                                  1.0, self.drum_pressure, self.flow_frac)
        fixed = None if sprays == "dcs" else tuple(
            u[I_SPRAY + k] * 0.01 * steam.SPRAY_MAX_TPH[k] / 3.6 for k in range(3))
        st = steam.steady_temperatures(rises, self.drum_pressure, self.flow_frac, self.load_frac, fixed)
        spray_tph = tuple(s * 3.6 for s in st.spray_kgs)
        u[I_SPRAY:] = [100.0 * spray_tph[k] / steam.SPRAY_MAX_TPH[k] for k in range(3)]
        fans = fan_power_mw(air, sum(pa), flue_gas_tph(air, coal_tph, coal), self.leakage_pct, fire.airheater_exit_c)
        hr = unit_heat_rate(boiler_efficiency_pct=eff.efficiency_pct, flow_frac=self.flow_frac, gross_mw=self.load_mw,
                            main_steam_c=st.main_c, reheat_c=st.reheat_c, sh_spray_tph=spray_tph[0] + spray_tph[1],
                            rh_spray_tph=spray_tph[2], fan_mw=fans)
        return SteadyPoint(self.load_mw, coal_tph, feed, air, fire, eff, self.flow_frac, self.drum_pressure,
                           self.main_pressure, st.platen_out_c, st.main_c, st.reheat_c, spray_tph, u, hr, tilt,
                           st.reheat_unsprayed_c)
