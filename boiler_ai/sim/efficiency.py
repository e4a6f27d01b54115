"""Boiler efficiency by the indirect (heat-loss) method, on the gross and the net basis.

Gross (HHV) basis: the ASME PTC 4 / BS 845 loss structure -- dry flue gas, moisture from hydrogen, fuel
moisture, air moisture, CO, unburned carbon, radiation and convection, ash sensible heat.
Net (LHV) basis: the same heat flows grouped as GB/T 10184 does (q2 exhaust, q3 unburned gas, q4 unburned
carbon, q5 radiation, q6 ash sensible heat) and divided by the net calorific value.

Conventions (one kilogram of coal as fired is the basis throughout):
- The reference temperature is the ambient air temperature, as in BS 845 and GB/T 10184: air and coal enter at
  it, so there is no entering-air credit. O2 (dry), CO (dry) and the gas temperature are measured in the same
  plane, the boiler exit (air-heater gas outlet); air-heater leakage is therefore inside the measured O2.
- The flue gas comes from a molar balance on the carbon actually burned: fuel carbon less the carbon left in fly
  and bottom ash (ASME PTC 4 "carbon burned"), sulfur to SO2, fuel nitrogen to N2, the CO measured.
  GB/T 10184 computes gas volumes from the full ultimate analysis and scales q2 and q3 by (1 - q4/100) to remove
  the fuel that did not burn; computing the gas from the burned carbon directly is the exact form of that factor.
- Net calorific value: HHV less the latent heat at 25 C of the water formed from hydrogen and the fuel moisture.
  The net-basis losses exclude exactly that latent heat, so both efficiencies describe the same absorbed heat:
  efficiency_pct * HHV == efficiency_lhv_pct * LHV.

The calculator is plain float arithmetic (the plant simulator calls it every simulated second).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from boiler_ai.strict import ConfigError

# Molar masses, kg/kmol. "Atmospheric nitrogen" is N2 with the air's argon (ASME PTC 4), so dry air is two gases.
# Compounds are built from the same element masses so that mass is conserved exactly.
_M_C, _M_H2, _M_S, _M_O2, _M_N2, _M_N2A = 12.011, 2.016, 32.06, 31.999, 28.013, 28.158
_M_CO2, _M_CO, _M_SO2, _M_H2O = _M_C + _M_O2, _M_C + _M_O2 / 2, _M_S + _M_O2, _M_H2 + _M_O2 / 2
_AIR_O2 = 0.2095  # mole fraction of O2 in dry air (ASME PTC 4)
_M_AIR = _AIR_O2 * _M_O2 + (1.0 - _AIR_O2) * _M_N2A  # 28.963 kg/kmol

_HV_CARBON = 33_727.0  # kJ/kg of unburned carbon: ASME PTC 4 (14,500 Btu/lb); GB/T 10184's q4 coefficient 337.27
_HV_CO = 10_111.0  # kJ/kg CO: ASME PTC 4 (4,347 Btu/lb); GB/T 10184 uses 12,636 kJ/Nm3, the same within 0.1 %
_LATENT_25 = 2442.0  # kJ/kg, latent heat of water at 25 C (steam tables; ISO 1928 gross -> net)
_CP_WATER = 4.18  # kJ/(kg K), liquid water
_BOTTOM_ASH_TEMP_C = 800.0  # GB/T 10184 value for dry-bottom pulverised-coal furnaces when not measured
_O2_MAX_PCT = 100.0 * _AIR_O2  # flue gas cannot hold more O2 than the air itself

# Shomate coefficients A..E (cp = A + B t + C t^2 + D t^3 + E / t^2, J/(mol K), t = T/1000), NIST Chemistry
# WebBook (Chase, NIST-JANAF Tables, 1998), the ranges that cover 230-700 K. Argon has cp = 20.786 J/(mol K).
_SHOMATE = {
    "N2": (28.98641, 1.853978, -9.647459, 16.63537, 0.000117),
    "O2": (31.32234, -20.23531, 57.86644, -36.50624, -0.007374),
    "CO2": (24.99735, 55.18696, -33.69137, 7.948387, -0.136638),
    "H2O": (30.09200, 6.832514, 6.793435, -2.534480, 0.082139),
    "CO": (25.56759, 6.096130, 4.054656, -2.671301, 0.131021),
    "SO2": (21.43049, 74.35094, -57.75217, 16.35534, 0.086731),
}
_AR_IN_N2A = 0.0093 / (1.0 - _AIR_O2)  # mole fraction of argon in atmospheric nitrogen
_SHOMATE["N2A"] = tuple((1.0 - _AR_IN_N2A) * k for k in _SHOMATE["N2"])  # argon's constant cp is added below
_T25_K = 298.15


def _basis(t_k: float) -> tuple[float, float, float, float, float]:
    """Integrated Shomate basis at T: enthalpy = sum(coef * basis), kJ/mol."""
    t = t_k / 1000.0
    t2 = t * t
    return t, t2 / 2.0, t2 * t / 3.0, t2 * t2 / 4.0, -1.0 / t


def _change(b1: tuple, b2: tuple) -> tuple[float, float, float, float, float]:
    """The basis at one temperature less the basis at another: the same for every gas, so taken once."""
    return b2[0] - b1[0], b2[1] - b1[1], b2[2] - b1[2], b2[3] - b1[3], b2[4] - b1[4]


def _rise(coefficients: tuple, change: tuple) -> float:
    """Enthalpy rise of an ideal gas (its Shomate coefficients) over a change of the basis, kJ/kmol."""
    a, b, c, d, e = coefficients
    return 1000.0 * (a * change[0] + b * change[1] + c * change[2] + d * change[3] + e * change[4])


_B25 = _basis(_T25_K)
_CO2, _CO, _SO2, _N2, _N2A, _O2, _H2O = (_SHOMATE[s] for s in ("CO2", "CO", "SO2", "N2", "N2A", "O2", "H2O"))


def _residue_enthalpy(temp_c: float) -> float:
    """Enthalpy of ash/residue above 25 C, kJ/kg (ASME PTC 4 residue curve, Btu/lb of T in F)."""
    f = 1.8 * temp_c + 32.0
    return 2.326 * (0.16 * f + 1.09e-4 * f * f - 2.843e-8 * f * f * f - 12.95)


_RESIDUE_BOTTOM = _residue_enthalpy(_BOTTOM_ASH_TEMP_C)


@dataclass(frozen=True, slots=True)
class Fuel:
    """Coal as fired: ultimate analysis in mass % (summing to 100) and gross calorific value."""

    carbon_pct: float
    hydrogen_pct: float
    nitrogen_pct: float
    sulfur_pct: float
    oxygen_pct: float
    moisture_pct: float
    ash_pct: float
    hhv_kj_per_kg: float


@dataclass(frozen=True, slots=True)
class FlueGas:
    """At the boiler exit (air-heater gas outlet): dry O2, dry CO, gas temperature."""

    o2_pct_dry: float
    co_ppm: float
    exit_temp_c: float


@dataclass(frozen=True, slots=True)
class Ambient:
    temp_c: float  # combustion air inlet temperature: the reference temperature of every loss
    humidity_kg_per_kg_dry_air: float


@dataclass(frozen=True, slots=True)
class Ash:
    carbon_in_fly_ash_pct: float  # combustible (carbon) in fly ash, mass %
    carbon_in_bottom_ash_pct: float
    fly_ash_fraction: float  # share of the coal's ash leaving as fly ash (typically 0.8-0.9 for PC firing)


@dataclass(frozen=True, slots=True)
class EfficiencyResult:
    efficiency_pct: float  # gross (HHV) basis, ASME PTC 4
    efficiency_lhv_pct: float  # net (LHV) basis, GB/T 10184
    losses_pct: dict[str, float]  # gross basis; sums to 100 - efficiency_pct
    losses_lhv_pct: dict[str, float]  # net basis, q2..q6; sums to 100 - efficiency_lhv_pct
    lhv_kj_per_kg: float
    excess_air_pct: float  # from dry O2 and CO, on the carbon actually burned
    theoretical_air_kg_per_kg: float  # dry air for complete combustion of the fuel that burns
    dry_air_kg_per_kg: float
    dry_flue_gas_kg_per_kg: float
    wet_flue_gas_kg_per_kg: float  # dry flue gas plus water vapour
    flue_gas_water_kg_per_kg: float  # from hydrogen, fuel moisture and air moisture
    unburned_carbon_kg_per_kg: float
    unburned_carbon_fly_ash_pct: float  # the two parts of losses_pct["unburned_carbon"]
    unburned_carbon_bottom_ash_pct: float
    radiation_loss_pct: float  # gross basis, as used (given or the default for the unit size)


def radiation_loss_default_pct(rated_mw: float) -> float:
    """Radiation and convection loss at full load, % of gross heat input, for a unit of this rating (MWe).

    The ABMA Standard Radiation Loss Chart (American Boiler Manufacturers Association; reproduced in ASME PTC 4.1
    and in Taplin, Boiler Plant and Distribution System Optimization Manual, ch. "Efficiency Calculation Methods")
    is a straight line on log-log axes for water-cooled furnaces: about 0.2 % for a 600 MW-class unit, rising
    for smaller ones. Slope -0.38 as in the q5 curve of GB 10184-88 (q5 = 5.82 D^-0.38 against rated steam
    flow D). Values read off a chart: pass radiation_loss_pct when the unit has a measured or guaranteed value.
    At part load the absolute loss stays roughly constant, so the percentage grows as 1/load.
    """
    if not (rated_mw > 0.0 and math.isfinite(rated_mw)):
        raise ValueError(f"rated_mw must be a positive number, got {rated_mw!r}")
    return 0.2 * (600.0 / rated_mw) ** 0.38


def water_formed_kg_per_kg(fuel: Fuel) -> float:
    """Water formed by burning the fuel's hydrogen, kg per kg of coal."""
    return fuel.hydrogen_pct / 100.0 * _M_H2O / _M_H2


def lhv_from_hhv(fuel: Fuel) -> float:
    """Net calorific value as fired, kJ/kg: HHV less the latent heat at 25 C of the water formed and the moisture."""
    return fuel.hhv_kj_per_kg - _LATENT_25 * (water_formed_kg_per_kg(fuel) + fuel.moisture_pct / 100.0)


def hhv_estimate_kj_per_kg(fuel: Fuel) -> float:
    """HHV from the ultimate analysis (Channiwala & Parikh, Fuel 81 (2002) 1051), kJ/kg: a plausibility check."""
    return 1000.0 * (0.3491 * fuel.carbon_pct + 1.1783 * fuel.hydrogen_pct + 0.1005 * fuel.sulfur_pct
                     - 0.1034 * fuel.oxygen_pct - 0.0151 * fuel.nitrogen_pct - 0.0211 * fuel.ash_pct)


_FUEL_PCT_FIELDS = ("carbon_pct", "hydrogen_pct", "nitrogen_pct", "sulfur_pct", "oxygen_pct", "moisture_pct",
                    "ash_pct")
_HHV_TOLERANCE = 0.20  # the correlation's scatter is ~2 %; 20 % still catches kcal/kg, MJ/kg and dry-basis typos


def validate_inputs(fuel: Fuel, flue_gas: FlueGas, ambient: Ambient, ash: Ash,
                    radiation_loss_pct: float | None = None, rated_mw: float = 600.0, *,
                    source: str = "efficiency inputs") -> None:
    """Raise ConfigError naming the first field that is not a number, out of range or inconsistent."""

    def check(field: str, value: float, lo: float, hi: float, why: str = "") -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(source, field, f"expected a finite number, got {value!r}")
        if not lo <= value <= hi:
            raise ConfigError(source, field, f"must be within [{lo:g}, {hi:g}]{why}, got {value:g}")

    for name in _FUEL_PCT_FIELDS:
        check(f"fuel.{name}", getattr(fuel, name), 0.0, 100.0)
    if fuel.carbon_pct <= 0.0:
        raise ConfigError(source, "fuel.carbon_pct", "a coal without carbon is not a coal")
    total = sum(getattr(fuel, name) for name in _FUEL_PCT_FIELDS)
    if abs(total - 100.0) > 0.5:
        raise ConfigError(source, "fuel", f"ultimate analysis (C+H+N+S+O+moisture+ash) sums to {total:.2f} %, "
                                          "expected 100 +/- 0.5 (as-fired basis, mass %)")
    check("fuel.hhv_kj_per_kg", fuel.hhv_kj_per_kg, 5000.0, 40000.0, " kJ/kg for coal as fired")
    estimate = hhv_estimate_kj_per_kg(fuel)
    if abs(fuel.hhv_kj_per_kg - estimate) > _HHV_TOLERANCE * estimate:
        raise ConfigError(source, "fuel.hhv_kj_per_kg",
                          f"{fuel.hhv_kj_per_kg:.0f} kJ/kg does not fit the ultimate analysis, which implies about "
                          f"{estimate:.0f} kJ/kg (gross, as fired); check units (kJ/kg, not kcal/kg) and basis")

    check("flue_gas.o2_pct_dry", flue_gas.o2_pct_dry, 0.0, 100.0)
    if flue_gas.o2_pct_dry >= _O2_MAX_PCT:
        raise ConfigError(source, "flue_gas.o2_pct_dry",
                          f"{flue_gas.o2_pct_dry:g} % is not below the {_O2_MAX_PCT:.2f} % O2 of air itself")
    check("flue_gas.co_ppm", flue_gas.co_ppm, 0.0, 50_000.0)
    check("ambient.temp_c", ambient.temp_c, -40.0, 55.0, " C")
    check("flue_gas.exit_temp_c", flue_gas.exit_temp_c, -40.0, 400.0, " C (range of the gas property fits)")
    if flue_gas.exit_temp_c <= ambient.temp_c:
        raise ConfigError(source, "flue_gas.exit_temp_c",
                          f"flue gas at {flue_gas.exit_temp_c:g} C is not hotter than ambient "
                          f"({ambient.temp_c:g} C)")
    check("ambient.humidity_kg_per_kg_dry_air", ambient.humidity_kg_per_kg_dry_air, 0.0, 0.1)
    check("ash.carbon_in_fly_ash_pct", ash.carbon_in_fly_ash_pct, 0.0, 99.0)
    check("ash.carbon_in_bottom_ash_pct", ash.carbon_in_bottom_ash_pct, 0.0, 99.0)
    check("ash.fly_ash_fraction", ash.fly_ash_fraction, 0.0, 1.0)
    uc_fly, uc_bottom, _, _ = _unburned_carbon(fuel, ash.carbon_in_fly_ash_pct, ash.carbon_in_bottom_ash_pct,
                                               ash.fly_ash_fraction)
    unburned = uc_fly + uc_bottom
    if unburned >= fuel.carbon_pct / 100.0:
        raise ConfigError(source, "ash", f"carbon left in the ash ({100 * unburned:.2f} % of the coal) is not "
                                         f"less than the coal's carbon ({fuel.carbon_pct:g} %)")
    if radiation_loss_pct is not None:
        check("radiation_loss_pct", radiation_loss_pct, 0.0, 10.0, " % of gross heat input")
    check("rated_mw", rated_mw, 1.0, 2000.0, " MW")


def _unburned_carbon(fuel: Fuel, carbon_fly_pct: float, carbon_bottom_pct: float,
                     fly_ash_fraction: float) -> tuple[float, float, float, float]:
    """Carbon left in fly and bottom ash, and the fly and bottom refuse (ash + carbon), kg per kg of coal."""
    ash_kg = fuel.ash_pct / 100.0
    fly = ash_kg * fly_ash_fraction / (1.0 - carbon_fly_pct / 100.0)
    bottom = ash_kg * (1.0 - fly_ash_fraction) / (1.0 - carbon_bottom_pct / 100.0)
    return fly * carbon_fly_pct / 100.0, bottom * carbon_bottom_pct / 100.0, fly, bottom


def heat_loss_efficiency(fuel: Fuel, flue_gas: FlueGas, ambient: Ambient, ash: Ash,
                         radiation_loss_pct: float | None = None, rated_mw: float = 600.0, *,
                         check: bool = True, source: str = "efficiency inputs") -> EfficiencyResult:
    """Efficiency and losses by the heat-loss method (see the module docstring for the conventions).

    radiation_loss_pct is on the gross basis; None takes radiation_loss_default_pct(rated_mw) (full load).
    check=False skips validate_inputs for callers that validated the same kind of inputs already; with check,
    a ConfigError names the field (and source, the file the inputs came from).
    """
    if check:
        validate_inputs(fuel, flue_gas, ambient, ash, radiation_loss_pct, rated_mw, source=source)
    result = heat_loss_method(fuel, flue_gas.o2_pct_dry, flue_gas.co_ppm, flue_gas.exit_temp_c, ambient.temp_c,
                              ambient.humidity_kg_per_kg_dry_air, ash.carbon_in_fly_ash_pct,
                              ash.carbon_in_bottom_ash_pct, ash.fly_ash_fraction, radiation_loss_pct, rated_mw)
    if check and result.efficiency_pct <= 0.0:
        raise ConfigError(source, "flue_gas", f"the losses add up to {sum(result.losses_pct.values()):.0f} % of "
                          "the heat input: no boiler runs at this O2 and exit temperature")
    return result


def heat_loss_method(fuel: Fuel, o2_pct_dry: float, co_ppm: float, exit_temp_c: float, ambient_c: float,
                     humidity_kg_per_kg_dry_air: float, carbon_fly_pct: float, carbon_bottom_pct: float,
                     fly_ash_fraction: float, radiation_loss_pct: float | None = None,
                     rated_mw: float = 600.0) -> EfficiencyResult:
    """heat_loss_efficiency on plain numbers, unchecked: the plant simulator's every-second path, without
    building the input records."""
    hhv = fuel.hhv_kj_per_kg
    uc_fly, uc_bottom, refuse_fly, refuse_bottom = _unburned_carbon(fuel, carbon_fly_pct, carbon_bottom_pct,
                                                                    fly_ash_fraction)

    # Molar balance per kg of coal (kmol/kg): unknown dry air and CO, fixed by the measured dry O2 and CO.
    n_c = (fuel.carbon_pct / 100.0 - uc_fly - uc_bottom) / _M_C
    n_h2 = fuel.hydrogen_pct / 100.0 / _M_H2
    n_s = fuel.sulfur_pct / 100.0 / _M_S
    n_n2_fuel = fuel.nitrogen_pct / 100.0 / _M_N2
    o2_needed = n_c + 0.5 * n_h2 + n_s - fuel.oxygen_pct / 100.0 / _M_O2
    y_o2 = o2_pct_dry / 100.0
    y_co = co_ppm * 1e-6
    dry_gas = ((n_c + n_s + n_n2_fuel + o2_needed * (1.0 / _AIR_O2 - 1.0))
               / (1.0 - 0.5 * y_co - (y_o2 - 0.5 * y_co) / _AIR_O2))
    n_co = y_co * dry_gas
    n_o2 = y_o2 * dry_gas
    air = (dry_gas * (y_o2 - 0.5 * y_co) + o2_needed) / _AIR_O2
    n_n2a = (1.0 - _AIR_O2) * air
    n_co2 = n_c - n_co

    t_ref, t_gas = ambient_c, exit_temp_c
    b_gas = _basis(t_gas + 273.15)
    warming = _change(_basis(t_ref + 273.15), b_gas)
    dt = t_gas - t_ref
    dry_gas_heat = (n_co2 * _rise(_CO2, warming) + n_co * _rise(_CO, warming)
                    + n_s * _rise(_SO2, warming) + n_n2_fuel * _rise(_N2, warming)
                    + n_n2a * (_rise(_N2A, warming) + _AR_IN_N2A * 20.786 * dt)
                    + n_o2 * _rise(_O2, warming))

    # Water: liquid at the reference temperature leaving as vapour at the gas temperature (gross), and the same
    # less the latent heat at 25 C that the net calorific value already excludes (net). Air moisture enters as
    # vapour and only warms up.
    water_h = n_h2 * _M_H2O
    water_fuel = fuel.moisture_pct / 100.0
    water_air = humidity_kg_per_kg_dry_air * air * _M_AIR
    vapour_from_ref = _rise(_H2O, warming) / _M_H2O
    per_kg_liquid = _LATENT_25 + _rise(_H2O, _change(_B25, b_gas)) / _M_H2O - _CP_WATER * (t_ref - 25.0)

    radiation = radiation_loss_default_pct(rated_mw) if radiation_loss_pct is None else radiation_loss_pct
    residue_ref = _residue_enthalpy(t_ref)
    heat = {  # kJ per kg of coal
        "dry_flue_gas": dry_gas_heat,
        "hydrogen_moisture": water_h * per_kg_liquid,
        "fuel_moisture": water_fuel * per_kg_liquid,
        "air_moisture": water_air * vapour_from_ref,
        "co": n_co * _M_CO * _HV_CO,
        "unburned_carbon": (uc_fly + uc_bottom) * _HV_CARBON,
        "radiation_convection": radiation / 100.0 * hhv,
        "ash_sensible": (refuse_fly * (_residue_enthalpy(t_gas) - residue_ref)
                         + refuse_bottom * (_RESIDUE_BOTTOM - residue_ref)),
    }
    to_gross = 100.0 / hhv
    losses = {name: q * to_gross for name, q in heat.items()}

    lhv = hhv - _LATENT_25 * (water_h + water_fuel)
    to_net = 100.0 / lhv
    q2 = (heat["dry_flue_gas"] + heat["air_moisture"]
          + (water_h + water_fuel) * (per_kg_liquid - _LATENT_25))
    losses_lhv = {
        "q2_exhaust": q2 * to_net,
        "q3_unburned_gas": heat["co"] * to_net,
        "q4_unburned_carbon": heat["unburned_carbon"] * to_net,
        "q5_radiation": heat["radiation_convection"] * to_net,
        "q6_ash_sensible": heat["ash_sensible"] * to_net,
    }

    dry_gas_kg = (n_co2 * _M_CO2 + n_co * _M_CO + n_s * _M_SO2 + n_n2_fuel * _M_N2 + n_n2a * _M_N2A
                  + n_o2 * _M_O2)
    water_kg = water_h + water_fuel + water_air
    air_needed = o2_needed / _AIR_O2
    return EfficiencyResult(
        efficiency_pct=100.0 - sum(losses.values()),
        efficiency_lhv_pct=100.0 - sum(losses_lhv.values()),
        losses_pct=losses,
        losses_lhv_pct=losses_lhv,
        lhv_kj_per_kg=lhv,
        excess_air_pct=100.0 * (air / air_needed - 1.0),
        theoretical_air_kg_per_kg=air_needed * _M_AIR,
        dry_air_kg_per_kg=air * _M_AIR,
        dry_flue_gas_kg_per_kg=dry_gas_kg,
        wet_flue_gas_kg_per_kg=dry_gas_kg + water_kg,
        flue_gas_water_kg_per_kg=water_kg,
        unburned_carbon_kg_per_kg=uc_fly + uc_bottom,
        unburned_carbon_fly_ash_pct=uc_fly * _HV_CARBON * to_gross,
        unburned_carbon_bottom_ash_pct=uc_bottom * _HV_CARBON * to_gross,
        radiation_loss_pct=radiation,
    )
