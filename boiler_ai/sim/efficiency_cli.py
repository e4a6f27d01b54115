"""`boiler-ai efficiency FILE.yaml [--json]`: boiler efficiency from a performance-test sheet.

The sheet holds what a plant engineer measures during an efficiency test (see
deploy/examples/performance_test_sheet.yaml): the coal's ultimate analysis and gross calorific value as fired,
O2, CO and temperature at the boiler exit, ambient temperature and humidity, carbon in fly and bottom ash.
Every field is required except radiation_loss_pct (default from the unit size) and rated_mw (default 600).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from boiler_ai.sim.efficiency import (
    Ambient,
    Ash,
    EfficiencyResult,
    FlueGas,
    Fuel,
    heat_loss_efficiency,
)
from boiler_ai.strict import Fields, load_yaml

_GROSS_HEADER, _NET_HEADER = "Gross basis (ASME PTC 4 / BS 845), % of HHV", "Net basis (GB/T 10184), % of LHV"
_GROSS_LABELS = {
    "dry_flue_gas": "dry flue gas",
    "hydrogen_moisture": "moisture from burning hydrogen",
    "fuel_moisture": "moisture in the coal",
    "air_moisture": "moisture in the air",
    "co": "CO (incomplete combustion)",
    "unburned_carbon": "unburned carbon in fly + bottom ash",
    "radiation_convection": "radiation and convection",
    "ash_sensible": "sensible heat in ash",
}
_NET_LABELS = {
    "q2_exhaust": "q2 exhaust gas (dry gas + water vapour)",
    "q3_unburned_gas": "q3 unburned gas (CO)",
    "q4_unburned_carbon": "q4 unburned carbon",
    "q5_radiation": "q5 radiation and convection",
    "q6_ash_sensible": "q6 sensible heat in ash",
}


@dataclass(frozen=True, slots=True)
class PerformanceSheet:
    fuel: Fuel
    flue_gas: FlueGas
    ambient: Ambient
    ash: Ash
    radiation_loss_pct: float | None
    rated_mw: float


def _declare(f: Fields, names: tuple[str, ...]) -> None:
    """Reject unknown keys before missing ones: a misspelt field is reported as the typo it is."""
    for name in names:
        f.raw(name, None)
    f.done()


def _section(top: Fields, key: str, names: tuple[str, ...]) -> dict[str, float]:
    f = top.mapping(key)
    _declare(f, names)
    return {name: f.number(name) for name in names}


def load_sheet(path: str | Path) -> PerformanceSheet:
    """Read a performance-test sheet strictly: a missing, unknown or non-numeric field is a ConfigError."""
    top = Fields(path, "", load_yaml(path))
    _declare(top, ("fuel", "flue_gas", "ambient", "ash", "radiation_loss_pct", "rated_mw"))
    sheet = PerformanceSheet(
        fuel=Fuel(**_section(top, "fuel", ("carbon_pct", "hydrogen_pct", "nitrogen_pct", "sulfur_pct", "oxygen_pct",
                                           "moisture_pct", "ash_pct", "hhv_kj_per_kg"))),
        flue_gas=FlueGas(**_section(top, "flue_gas", ("o2_pct_dry", "co_ppm", "exit_temp_c"))),
        ambient=Ambient(**_section(top, "ambient", ("temp_c", "humidity_kg_per_kg_dry_air"))),
        ash=Ash(**_section(top, "ash", ("carbon_in_fly_ash_pct", "carbon_in_bottom_ash_pct", "fly_ash_fraction"))),
        radiation_loss_pct=top.number("radiation_loss_pct", None),
        rated_mw=top.number("rated_mw", 600.0),
    )
    return sheet


def compute(sheet: PerformanceSheet, source: str | Path) -> EfficiencyResult:
    """The efficiency; nonsense values (ranges, analysis not summing to 100, ...) are a ConfigError naming them."""
    return heat_loss_efficiency(sheet.fuel, sheet.flue_gas, sheet.ambient, sheet.ash, sheet.radiation_loss_pct,
                                sheet.rated_mw, source=str(source))


def to_json(result: EfficiencyResult) -> dict:
    return {
        "efficiency_pct": round(result.efficiency_pct, 4),
        "efficiency_lhv_pct": round(result.efficiency_lhv_pct, 4),
        "losses_pct": {k: round(v, 4) for k, v in result.losses_pct.items()},
        "losses_lhv_pct": {k: round(v, 4) for k, v in result.losses_lhv_pct.items()},
        "unburned_carbon_fly_ash_pct": round(result.unburned_carbon_fly_ash_pct, 4),
        "unburned_carbon_bottom_ash_pct": round(result.unburned_carbon_bottom_ash_pct, 4),
        "radiation_loss_pct": round(result.radiation_loss_pct, 4),
        "lhv_kj_per_kg": round(result.lhv_kj_per_kg, 1),
        "excess_air_pct": round(result.excess_air_pct, 2),
        "theoretical_air_kg_per_kg": round(result.theoretical_air_kg_per_kg, 4),
        "dry_air_kg_per_kg": round(result.dry_air_kg_per_kg, 4),
        "dry_flue_gas_kg_per_kg": round(result.dry_flue_gas_kg_per_kg, 4),
        "wet_flue_gas_kg_per_kg": round(result.wet_flue_gas_kg_per_kg, 4),
    }


def format_report(path: str, sheet: PerformanceSheet, r: EfficiencyResult) -> str:
    width = max(map(len, (*_GROSS_LABELS.values(), *_NET_LABELS.values(), _GROSS_HEADER)))
    fuel, gas, air = sheet.fuel, sheet.flue_gas, sheet.ambient
    radiation = "as given" if sheet.radiation_loss_pct is not None else f"default for {sheet.rated_mw:g} MW"
    split = f"{r.unburned_carbon_fly_ash_pct:.2f} / {r.unburned_carbon_bottom_ash_pct:.2f}"

    def row(label: str, value: str) -> str:
        return f"  {label:<{width}}  {value:>7}"

    lines = [
        f"Boiler efficiency by the heat-loss method: {path}",
        f"  coal as fired: HHV {fuel.hhv_kj_per_kg:,.0f} kJ/kg, LHV {r.lhv_kj_per_kg:,.0f} kJ/kg",
        f"  boiler exit: O2 {gas.o2_pct_dry:.2f} % dry, CO {gas.co_ppm:.0f} ppm, {gas.exit_temp_c:.1f} C",
        f"  ambient: {air.temp_c:.1f} C, {air.humidity_kg_per_kg_dry_air:.4f} kg water/kg dry air",
        f"  excess air {r.excess_air_pct:.1f} %; per kg coal: dry air {r.dry_air_kg_per_kg:.2f} kg, "
        + f"dry flue gas {r.dry_flue_gas_kg_per_kg:.2f} kg",
        "",
        row(_GROSS_HEADER, "loss %"),
        *(row(_GROSS_LABELS[k], f"{v:.2f}") for k, v in r.losses_pct.items()),
        row("  unburned carbon, fly / bottom ash", split),
        f"    radiation and convection {radiation}",
        row("total losses", f"{100.0 - r.efficiency_pct:.2f}"),
        row("EFFICIENCY, gross (HHV)", f"{r.efficiency_pct:.2f}") + " %",
        "",
        row(_NET_HEADER, "loss %"),
        *(row(_NET_LABELS[k], f"{v:.2f}") for k, v in r.losses_lhv_pct.items()),
        row("total losses", f"{100.0 - r.efficiency_lhv_pct:.2f}"),
        row("EFFICIENCY, net (LHV)", f"{r.efficiency_lhv_pct:.2f}") + " %",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sheet", metavar="FILE.yaml", help="performance-test sheet (see "
                        "deploy/examples/performance_test_sheet.yaml)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (efficiency_pct, efficiency_lhv_pct, losses_pct, ...) instead")


def run(args: argparse.Namespace) -> int:
    sheet = load_sheet(args.sheet)
    result = compute(sheet, args.sheet)
    print(json.dumps(to_json(result)) if args.json else format_report(args.sheet, sheet, result))
    return 0
