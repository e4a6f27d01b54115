"""The fire side at one instant: air distribution, O2, CO, NOx, unburned carbon, gas temperatures.

Algebraic (no state): the unit lags what it needs (gas temperatures, analysers), and the steady-state
oracle evaluates exactly the same function. Structures follow boiler-facts.md: NOx and carbon in ash
from the IDAES fire-side surrogate trends (lower-furnace stoichiometry dominates NOx; carbon in ash is
U-shaped in the overall air ratio and rises with staging), a CO knee whose position moves with air
distribution and volatile matter. Coefficients marked *calibrated* are this unit's assumptions,
chosen so the figures land in the ranges of boiler-facts.md; see docs/REFERENCE_UNIT.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from boiler_ai.sim.clamp import clamp
from boiler_ai.sim.coal import Coal, Stoichiometry, stoichiometry

N_LEVELS = 6  # burner levels A-F, bottom to top, one mill each
LEVEL_HEIGHT = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # burner level elevation, 0 = A, 1 = F
# This unit's windbox: the level ducts do not pass the same air at the same damper opening
# (duct lengths and bends), which fixed DCS schedules do not correct. *calibrated*
SA_FLOW_COEFF = (1.12, 0.97, 0.94, 1.00, 1.07, 1.00)
SOFA_FLOW_COEFF = 0.8  # one SOFA level passes less air than a burner level at the same opening
DAMPER_LEAKAGE = 0.06  # effective area of a closed damper (cooling flow), fraction of open

HEAT_INPUT_RATED_MW = 1525.0  # fuel heat input (HHV) at 600 MW on the design coal
R90_REF_PCT = 17.0  # design fineness: residue on 90 um sieve at design mill loading and HGI 60
MILL_RATED_TPH = 50.0  # design loading of one mill (five mills carry full load)
FLY_ASH_FRACTION = 0.9  # pulverised coal: about 90 % of the ash leaves as fly ash
FULL_FLAME_TPH = 25.0  # coal on a level from which its air fully joins the burner zone

# Load-dependent references used by every temperature (firing rate f = heat input / rated).
FEGT_RATED_C = 1060.0
NOX_PER_SR_LF = 5.0  # per unit SR_lf: 16 ppm per 0.01 at 320 ppm, the IDAES surrogate slope at its nominal point (~17)
NOX_REF_MG = 320.0  # mg/Nm3 at SR_lf 0.97, SR 1.2, full load, design coal. *calibrated* to 250-450
CO_KNEE_LOW_LOAD = 6.5  # knee rise at low load, % O2 per (1 - firing)^2: 3.5-5 % O2 at half load (typical)
TILT_LIFT = 0.011  # fireball per degree of burner tilt: +-25 deg moves FEGT about +-50 degC. *calibrated*
TILT_RANGE_DEG = 25.0
AIR_LIFT = 1.5  # fireball lift per unit of secondary-air-weighted height above the firing levels' mean. *calibrated*


@dataclass(frozen=True, slots=True)
class CoalProps:
    """What the fire side needs from a coal, computed once per coal (or blend)."""

    coal: Coal
    stoich: Stoichiometry
    air_stoich: float  # t air per t coal
    r90_ref_pct: float  # fineness at design loading: harder coal (low HGI) grinds coarser
    grind_tau_s: float  # mill table grinding time constant

    @staticmethod
    def of(coal: Coal) -> CoalProps:
        st = stoichiometry(coal)
        return CoalProps(coal, st, st.air_stoich_kg, R90_REF_PCT * (60.0 / coal.hgi) ** 0.8,
                         55.0 * (60.0 / coal.hgi) ** 0.5)


_DAMPER_AREA_PER_PCT = (1.0 - DAMPER_LEAKAGE) * 0.01


def damper_area(position_pct: float) -> float:
    """Effective flow area of a damper, 0..1 of fully open: leakage when closed, then linear."""
    return DAMPER_LEAKAGE + _DAMPER_AREA_PER_PCT * clamp(position_pct, 0.0, 100.0)


def level_areas(sa_pos: list[float], sofa_pos: list[float],
                sa_coeff: tuple[float, ...] | list[float] = SA_FLOW_COEFF) -> tuple[list[float], list[float]]:
    return ([sa_coeff[i] * damper_area(sa_pos[i]) for i in _LEVELS],
            [SOFA_FLOW_COEFF * damper_area(p) for p in sofa_pos])


_LEVELS = range(N_LEVELS)
_LEVELS_TOP_DOWN = range(N_LEVELS - 1, -1, -1)


@dataclass(slots=True)
class FireState:
    """The fire side now. Temperatures are the values the gas would settle to (the unit lags them)."""

    o2_pct: float  # dry, economiser outlet
    co_ppm: float
    nox_mg_nm3: float  # as NO2 at 6 % O2 dry, before SCR
    carbon_in_fly_ash_pct: float
    carbon_in_bottom_ash_pct: float
    fegt_c: float  # furnace exit gas temperature
    airheater_exit_c: float  # air-heater exit gas temperature (uncorrected)
    windbox_dp_kpa: float
    air_ratio: float  # total air / stoichiometric
    lower_furnace_ratio: float  # burner-zone air / stoichiometric
    mismatch: float  # rms relative deviation of each burning level's air ratio from the zone's
    fireball: float  # effective height of heat release, 0 = level A, 1 = level F
    firing_rate: float  # fuel heat input / rated
    co_knee_o2_pct: float
    # Convective and radiant heat pick-up of the steam stages relative to design (1.0 = design):
    gain_primary_sh: float
    gain_platen_sh: float
    gain_final_sh: float
    gain_reheater: float


def fire_side(cp: CoalProps, coal_tph: list[float], pa_tph: list[float], r90_pct: list[float],
              sa_pos: list[float], sofa_pos: list[float], total_air_tph: float,
              slag: float, fouling: float, ambient_c: float,
              sa_coeff: tuple[float, ...] | list[float] = SA_FLOW_COEFF, tilt_deg: float = 0.0,
              fireball_shift: float = 0.0) -> FireState:
    """Evaluate the fire side for per-level coal and primary air, damper positions and total air.

    slag: waterwall slagging 0..1 (furnace absorbs less, FEGT up); fouling: convective-pass
    deposits 0..1 (less pick-up in the back pass, air-heater exit up); sa_coeff: how much air each
    level's duct passes at the same opening (this windbox's imbalance, drifting on the dynamic unit);
    tilt_deg: burner tilt, + up (the DCS's reheat temperature control); fireball_shift: the flame's
    wandering about its mean height (a disturbance of the dynamic unit).
    """
    coal = cp.coal
    total_coal = sum(coal_tph)
    sa_area, sofa_area = level_areas(sa_pos, sofa_pos, sa_coeff)
    area = sum(sa_area) + sum(sofa_area)
    pa_total = sum(pa_tph)
    sa_total = max(total_air_tph - pa_total, 0.0)
    # Windbox to furnace dp: the FD fan pushes the secondary air through the open area. *calibrated*
    windbox_dp = 9.0 * (sa_total / (1000.0 * area)) ** 2
    if total_coal < 1.0:  # no fire: air only
        return FireState(20.95, 0.0, 0.0, 0.0, 0.0, ambient_c + 30.0, ambient_c + 10.0, windbox_dp, 0.0, 0.0, 0.0,
                         0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    stoich_air = total_coal * cp.air_stoich
    share = sa_total / area
    # Weights that grow smoothly as a level comes into service.
    flame = [min(c / FULL_FLAME_TPH, 1.0) for c in coal_tph]
    level_air = [pa_tph[i] + share * sa_area[i] for i in _LEVELS]
    # Burner-zone air: a level's primary and secondary air joins the flame in so far as there is a
    # flame at or above it (full at 25 t/h); the air of idle levels above the top flame, like SOFA,
    # is over-fire air. Continuous, so a mill coming into service moves it smoothly.
    zone_air = 0.0
    reach = 0.0
    for i in _LEVELS_TOP_DOWN:
        if flame[i] > reach:
            reach = flame[i]
        zone_air += level_air[i] * reach
    ofa_air = total_air_tph - zone_air
    sr = total_air_tph / stoich_air
    sr_lf = zone_air / stoich_air

    fireball = 0.0
    mis2 = 0.0
    r90 = 0.0
    sa_height = sa_firing = even_height = flames = 0.0
    air_stoich = cp.air_stoich
    for i in _LEVELS:
        c, f, height = coal_tph[i], flame[i], LEVEL_HEIGHT[i]
        sa_flame = f * sa_area[i]
        sa_height += sa_flame * height
        sa_firing += sa_flame
        even_height += f * height
        flames += f
        if c > 0.5:
            w = c / total_coal
            fireball += w * height
            lam = level_air[i] / (c * air_stoich)
            mis2 += w * min(abs(lam / sr_lf - 1.0), 0.3) ** 2  # a nearly empty level counts no more than this
            r90 += w * r90_pct[i]
    mismatch = math.sqrt(mis2)
    ofa_share = ofa_air / total_air_tph
    # Staging delays burnout: the flame's centre of heat release moves up with the over-fire share;
    # in a tangentially fired furnace, secondary air biased to the upper burner levels (against an
    # even opening of the firing levels) lifts the fireball too: the "pagoda" against the "waist"
    # distribution. *calibrated*: 3-10 degC of steam temperature for the distributions operators use.
    air_bias = sa_height / sa_firing - even_height / flames if flames > 0.0 else 0.0
    fireball += 0.6 * (ofa_share - 0.2) + AIR_LIFT * air_bias + TILT_LIFT * tilt_deg
    fireball += fireball_shift
    firing = total_coal * coal.hhv_kj_per_kg / 3.6e3 / HEAT_INPUT_RATED_MW
    excess_air = (sr - 1.0) * 100.0
    o2 = cp.stoich.o2_dry_pct(sr)

    # CO knee: good mixing at full load, poorer at low load; a level short of air or a coal low in
    # volatiles needs more O2 before CO stays flat. 50 ppm at 2.7 % O2 on a real unit (boiler-facts).
    knee = (2.2 + CO_KNEE_LOW_LOAD * (1.0 - min(firing, 1.0)) ** 2 + 7.0 * mismatch
            + 0.03 * (36.0 - coal.volatile_daf_pct) + 3.0 * max(0.0, 0.94 - sr_lf))
    co = 12.0 + 50.0 * math.exp(min((knee - o2) / 0.25, 6.0))

    # NOx: exponential in lower-furnace stoichiometry with the IDAES surrogate's local slope at its
    # nominal point (about 17 ppm per 0.01 of SR_lf at 320 ppm, +5.3 % per 0.01) over its fitted
    # range 0.93-1.05, and on below it to 0.85 (deep staging: about half the NOx of SR_lf 0.97, as
    # air-staging retrofits report 40-60 %; *assumption*); weakly rising with the overall air ratio;
    # fuel nitrogen, volatile matter and moisture scale it. This tangential unit with low-NOx burners:
    # 320 mg/Nm3 at SR_lf 0.97 (IDAES: 550 mg/Nm3 for its wall-fired unit).
    staging = math.exp(NOX_PER_SR_LF * (clamp(sr_lf, 0.85, 1.05) - 0.97))
    nox = (NOX_REF_MG * staging * (0.70 + 0.30 * min(firing, 1.1)) * (1.0 + 0.1 * (sr - 1.2))
           * (coal.nitrogen_pct / 1.0) ** 0.6 * (36.0 / coal.volatile_daf_pct) ** 0.3
           * (1.0 - 0.02 * (coal.moisture_pct - 12.0)))  # wetter coal, cooler flame

    # Carbon in fly ash: the IDAES staging trend (1.9 / 2.3 / 2.6 / 4 % at SR_lf 1.00 / 0.97 / 0.95 /
    # 0.90, fitted a little flatter below 0.95) scaled to this tangential unit (0.75); up steeply when
    # the overall air ratio falls short of burnout (minimum moving up at low load); coarser grinding,
    # less volatile coal, poor mixing and a high fireball all worse.
    d = clamp(1.0 - sr_lf, -0.06, 0.15)
    short = max(0.0, 1.15 + 0.15 * (1.0 - firing) - sr)
    ubc = (0.75 * (1.9 + 11.0 * d + 40.0 * d * d) * (1.0 + 4.0 * short + 40.0 * short * short)
           * (r90 / R90_REF_PCT) ** 0.8 * (36.0 / coal.volatile_daf_pct) ** 0.8
           * (1.0 + 6.0 * mismatch) * (1.0 + 0.5 * (fireball - 0.4)) * (1.0 + 0.3 * max(0.0, 1.0 - firing)))
    ubc = min(ubc, 24.0)

    # Gas temperatures. *calibrated*: FEGT about 1060 degC at full load, higher with a high fireball,
    # excess air and slag; lower with wet coal. Air-heater exit about 128 degC at full load.
    fegt_sched = FEGT_RATED_C + 160.0 * (firing - 1.0)
    d_fegt = (180.0 * (fireball - 0.4) + 1.2 * (excess_air - 20.0) + 80.0 * slag
              - 4.0 * (coal.moisture_pct - 12.0))
    fegt = fegt_sched + d_fegt
    t_exit = (128.0 + 32.0 * (firing - 1.0) + 0.33 * (excess_air - 20.0) + 0.05 * d_fegt + 22.0 * fouling
              + 0.45 * (ambient_c - 20.0) + 0.5 * (coal.moisture_pct - 12.0))

    ea = excess_air - 20.0
    return FireState(
        o2_pct=o2, co_ppm=min(co, 4900.0), nox_mg_nm3=nox, carbon_in_fly_ash_pct=ubc,
        carbon_in_bottom_ash_pct=min(1.6 * ubc, 30.0), fegt_c=fegt, airheater_exit_c=t_exit,
        windbox_dp_kpa=windbox_dp, air_ratio=sr, lower_furnace_ratio=sr_lf, mismatch=mismatch,
        fireball=fireball, firing_rate=firing, co_knee_o2_pct=knee,
        gain_primary_sh=1.0 + 0.15 * (firing - 1.0) + 0.0008 * d_fegt + 0.004 * ea - 0.10 * fouling,
        gain_platen_sh=1.0 - 0.25 * (firing - 1.0) + 0.0012 * d_fegt,
        gain_final_sh=1.0 + 0.12 * (firing - 1.0) + 0.0012 * d_fegt + 0.004 * ea - 0.08 * fouling,
        gain_reheater=1.0 + 0.15 * (firing - 1.0) + 0.0012 * d_fegt + 0.005 * ea - 0.08 * fouling,
    )
