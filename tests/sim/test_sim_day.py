"""Issue 2, done when: the 24 h standard scenario under the DCS alone has no process-limit violation,
and the oracle's headroom over the DCS on it is plausible (0.5-1.5 points of boiler efficiency)."""

from __future__ import annotations

import pytest

from boiler_ai.sim.oracle import HeadroomReport, scenario_headroom
from boiler_ai.sim.scenario import named_scenario

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def day() -> HeadroomReport:
    return scenario_headroom(named_scenario("agc_day_24h", seed=0), seed=0, sample_s=3600.0)


def test_24h_under_the_dcs_alone_has_no_process_limit_violation(day):
    assert day.violation_s and not any(day.violation_s.values()), day.violation_s
    assert all(p["feasible_baseline"] for p in day.points)


def test_oracle_headroom_over_the_dcs_is_plausible(day):
    s = day.summary()
    assert s["points"] == 24
    assert 0.5 <= s["mean_headroom_pct"] <= 1.5, s
    assert 0.1 <= s["min_headroom_pct"] and s["max_headroom_pct"] <= 3.0, s
    # The DCS-only run and the steady-state DCS baseline describe the same unit.
    assert s["dcs_run_efficiency_pct"] == pytest.approx(s["mean_dcs_efficiency_pct"], abs=0.3)
