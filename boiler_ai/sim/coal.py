"""Coal as fired: ultimate analysis, heating value, and the combustion stoichiometry built on them.

The three named coals are invented but typical of what a Chinese 600 MW unit burns: a design
bituminous coal, a wetter and more reactive blend, and a lean, low-volatile coal that grinds easily
but burns out slowly. Their heating values are close to Dulong's estimate from the analysis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from boiler_ai.sim.efficiency import Fuel

# Molar masses, g/mol
_M_C, _M_H2, _M_S, _M_O2, _M_N2, _M_AIR = 12.011, 2.016, 32.06, 31.999, 28.013, 28.965
_AIR_O2 = 0.2095  # mole fraction of O2 in dry air


@dataclass(frozen=True, slots=True)
class Coal(Fuel):
    """A coal is a fuel (ultimate analysis as fired, gross calorific value) with a name and the two
    properties combustion and grinding depend on."""

    name: str
    volatile_daf_pct: float  # volatile matter, dry ash-free: reactivity (CO knee, burnout)
    hgi: float  # Hardgrove grindability index: grinding time and fineness

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "name" and (not math.isfinite(v) or v < 0):
                raise ValueError(f"coal {self.name!r}: {f.name} must be a finite non-negative number, got {v!r}")
        total = (self.carbon_pct + self.hydrogen_pct + self.nitrogen_pct + self.sulfur_pct + self.oxygen_pct
                 + self.moisture_pct + self.ash_pct)
        if abs(total - 100.0) > 0.5:
            raise ValueError(f"coal {self.name!r}: ultimate analysis sums to {total:.2f} %, expected 100")
        if self.hhv_kj_per_kg < 5000 or self.hgi <= 0:
            raise ValueError(f"coal {self.name!r}: hhv_kj_per_kg or hgi implausible")


def blend(a: Coal, b: Coal, x: float) -> Coal:
    """Mass blend: fraction x of b, 1 - x of a (what reaches the mills while the bunkers change over)."""
    if x <= 0.0:
        return a
    if x >= 1.0:
        return b
    mixed = {f.name: (1.0 - x) * getattr(a, f.name) + x * getattr(b, f.name) for f in fields(a) if f.name != "name"}
    return Coal(name=f"{a.name}+{b.name}@{x:.3f}", **mixed)


@dataclass(frozen=True, slots=True)
class Stoichiometry:
    """Per kg of coal as fired: what complete combustion needs and makes (mol/kg unless stated)."""

    o2_stoich: float  # O2 needed
    dry_products: float  # CO2 + SO2 + fuel N2 (dry, before any air nitrogen)
    water: float  # H2O from hydrogen and fuel moisture
    air_stoich_kg: float  # stoichiometric dry air, kg/kg

    def excess_air_ratio(self, o2_dry_pct: float) -> float:
        """Air ratio lambda (total air / stoichiometric) giving this dry O2 in the flue gas."""
        o = o2_dry_pct / 100.0
        n, a, k = self.o2_stoich, self.dry_products, (1.0 - _AIR_O2) / _AIR_O2
        return (n * (1.0 - o) + o * a) / (n * (1.0 - o * (1.0 + k)))

    def o2_dry_pct(self, air_ratio: float) -> float:
        """Dry O2 % in the flue gas at air ratio lambda (complete combustion)."""
        n, k = self.o2_stoich, (1.0 - _AIR_O2) / _AIR_O2
        excess = max(air_ratio - 1.0, 0.0) * n
        return 100.0 * excess / (self.dry_products + k * air_ratio * n + excess)


def stoichiometry(coal: Coal) -> Stoichiometry:
    c, h, s, o, n = (coal.carbon_pct * 10.0 / _M_C, coal.hydrogen_pct * 10.0 / _M_H2, coal.sulfur_pct * 10.0 / _M_S,
                     coal.oxygen_pct * 10.0 / _M_O2, coal.nitrogen_pct * 10.0 / _M_N2)
    o2 = c + 0.5 * h + s - o
    return Stoichiometry(o2_stoich=o2, dry_products=c + s + n, water=h + coal.moisture_pct * 10.0 / 18.015,
                         air_stoich_kg=o2 / _AIR_O2 * _M_AIR / 1000.0)


COALS: dict[str, Coal] = {c.name: c for c in (
    Coal(name="design_bituminous", carbon_pct=55.0, hydrogen_pct=3.5, nitrogen_pct=1.0, sulfur_pct=0.7,
         oxygen_pct=7.6, moisture_pct=12.0, ash_pct=20.2, hhv_kj_per_kg=22000.0, volatile_daf_pct=36.0, hgi=60.0),
    Coal(name="high_moisture_blend", carbon_pct=50.0, hydrogen_pct=3.4, nitrogen_pct=0.7, sulfur_pct=0.5,
         oxygen_pct=10.4, moisture_pct=18.0, ash_pct=17.0, hhv_kj_per_kg=19600.0, volatile_daf_pct=42.0, hgi=55.0),
    Coal(name="low_volatile_lean", carbon_pct=62.0, hydrogen_pct=3.0, nitrogen_pct=1.1, sulfur_pct=0.9,
         oxygen_pct=3.5, moisture_pct=7.0, ash_pct=22.5, hhv_kj_per_kg=24200.0, volatile_daf_pct=22.0, hgi=75.0),
)}
DESIGN_COAL = COALS["design_bituminous"]


def coal_named(name: str) -> Coal:
    try:
        return COALS[name]
    except KeyError:
        raise KeyError(f"unknown coal {name!r} (known: {', '.join(COALS)})") from None
