"""The DCS alone runs every standard scenario without crossing a process limit: short versions here;
the full runs are benchmarks/sim_scenarios.py. The headroom is reported (characterise, the oracle's
CLI), never pinned to a band."""

from __future__ import annotations

import pytest

from boiler_ai.sim.scenario import HELD_OUT_SEEDS, SCENARIOS, STANDARD_SCENARIOS, TRAIN_SEEDS, named_scenario
from boiler_ai.sim.unit import ReferenceUnit


def test_the_standard_set_is_defined_once_with_named_and_held_out_seeds():
    assert set(STANDARD_SCENARIOS) == {"agc_day_24h", "coal_switch", "mill_trip", "fouling_drift", "low_load_night",
                                       "hot_summer_day"}
    assert set(STANDARD_SCENARIOS) <= set(SCENARIOS)
    named = {s for seeds in STANDARD_SCENARIOS.values() for s in seeds}
    assert not named & set(HELD_OUT_SEEDS) and not set(TRAIN_SEEDS) & set(HELD_OUT_SEEDS)
    assert len(HELD_OUT_SEEDS) >= 10


@pytest.mark.parametrize("name", sorted(STANDARD_SCENARIOS))
def test_dcs_alone_first_half_hour_of_each_standard_scenario(name):
    seed = STANDARD_SCENARIOS[name][0]
    unit = ReferenceUnit(named_scenario(name, seed), seed)
    while unit.t < 1800.0:
        unit.step()
    assert not any(unit.violation_s.values()), unit.violation_s


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mill_trip", "coal_switch"])
def test_dcs_alone_whole_short_scenarios(name):
    for seed in STANDARD_SCENARIOS[name]:
        sc = named_scenario(name, seed)
        unit = ReferenceUnit(sc, seed)
        while unit.t < sc.duration_s:
            unit.step()
        assert not any(unit.violation_s.values()), (seed, unit.violation_s)
