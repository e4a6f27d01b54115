"""Unit heat rate: what the plant pays for a boiler setting, beyond boiler efficiency.

    unit heat rate = turbine-cycle heat rate at this flow x steam-temperature and spray corrections
                     x (1 + sootblowing steam share) / boiler efficiency x gross / (gross - fan power)

in kJ of coal (HHV) per kWh sent out net of the draught fans. The turbine-side corrections are the
usual correction-curve figures for a subcritical reheat unit (*typical figures, not this turbine's
curves*): +0.027 % heat rate per degC of main steam below rated, +0.022 % per degC of hot reheat below
rated (the same slope above), +0.15 % per 1 % of main steam flow sprayed into the reheater (it bypasses
the HP turbine), +0.03 % per 1 % of superheater spray (taken before the HP heaters). Fans: forced
draught, primary air and induced draught at 3.6, 4.8 and 7.0 MW at rated flow (2.4 % of 600 MW,
*assumption*), power rising with the square of the flow they move (variable-pitch fans on a fixed
system); the ID fan moves the flue gas plus the air-heater leakage at the air-heater exit temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

from boiler_ai.sim import steam

MAIN_TEMP_HR_PCT_PER_C = 0.027
REHEAT_TEMP_HR_PCT_PER_C = 0.022
RH_SPRAY_HR_PCT_PER_PCT = 0.15
SH_SPRAY_HR_PCT_PER_PCT = 0.03
FAN_RATED_MW = {"fd": 3.6, "pa": 4.8, "id": 7.0}
# Rated-load flows the fan powers refer to (the unit on the design coal at 600 MW, 8 % leakage): the
# ID fan's as t/h at 0 degC-equivalent volume.
FD_RATED_TPH, PA_RATED_TPH, ID_RATED_M3 = 1840.0, 530.0, 2575.0 * (273.15 + 127.0) / 273.15


@dataclass(frozen=True, slots=True)
class HeatRate:
    heat_rate_kj_kwh: float  # unit, net of draught-fan power
    cycle_heat_rate_kj_kwh: float  # turbine cycle at this flow, design temperatures, no sprays
    turbine_correction_pct: float  # steam temperatures and sprays
    fan_power_mw: float


def fan_power_mw(total_air_tph: float, pa_tph: float, flue_gas_tph: float, leakage_pct: float,
                 exit_gas_c: float) -> float:
    leak = 0.01 * leakage_pct * flue_gas_tph
    fd = max(total_air_tph - pa_tph, 0.0) + 0.5 * leak
    pa = pa_tph + 0.5 * leak
    id_m3 = (flue_gas_tph + leak) * (273.15 + exit_gas_c) / 273.15
    return (FAN_RATED_MW["fd"] * (fd / FD_RATED_TPH) ** 2 + FAN_RATED_MW["pa"] * (pa / PA_RATED_TPH) ** 2
            + FAN_RATED_MW["id"] * (id_m3 / ID_RATED_M3) ** 2)


def cycle_heat_rate(flow_frac: float) -> float:
    """The turbine cycle's own heat rate at this steam flow (kJ/kWh gross): the simulator's cycle."""
    x = max(flow_frac, 0.05)
    return 3600.0 * x * steam.HEAT_TO_STEAM_RATED_MW / steam.power_mw(x)


def unit_heat_rate(*, boiler_efficiency_pct: float, flow_frac: float, gross_mw: float, main_steam_c: float,
                   reheat_c: float, sh_spray_tph: float, rh_spray_tph: float, fan_mw: float,
                   sootblow_steam_tph: float = 0.0) -> HeatRate:
    steam_tph = max(flow_frac, 0.05) * steam.STEAM_RATED_TPH
    correction = (MAIN_TEMP_HR_PCT_PER_C * (steam.STEAM_TEMP_SP_C - main_steam_c)
                  + REHEAT_TEMP_HR_PCT_PER_C * (steam.STEAM_TEMP_SP_C - reheat_c)
                  + RH_SPRAY_HR_PCT_PER_PCT * 100.0 * rh_spray_tph / steam_tph
                  + SH_SPRAY_HR_PCT_PER_PCT * 100.0 * sh_spray_tph / steam_tph)
    cycle = cycle_heat_rate(flow_frac)
    gross = max(gross_mw, 1.0)
    hr = (cycle * (1.0 + 0.01 * correction) * (1.0 + sootblow_steam_tph / steam_tph)
          / (0.01 * max(boiler_efficiency_pct, 1.0)) * gross / max(gross - fan_mw, 1.0))
    return HeatRate(hr, cycle, correction, fan_mw)
