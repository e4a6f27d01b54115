"""The characterisation (small version): every figure inside the range docs/REFERENCE_UNIT.md cites,
the headroom reported (never pinned), the JSON last."""

from __future__ import annotations

import json

import pytest

from boiler_ai.sim.characterise import RANGES, main


@pytest.fixture(scope="module")
def figures():
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["--quick", "--json", "--workers", "1"]) == 0
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def test_json_has_the_figures_the_issue_names(figures):
    for key in ("nox_change_pct_per_o2_pct", "oracle_headroom_pct_pt", "oracle_heat_rate_headroom_pct"):
        assert isinstance(figures[key], float)
    assert figures["full_load"]["o2_std_pct"] > 0 and figures["full_load"]["main_steam_temp_std_c"] > 0
    assert set(figures["co_knee_o2_pct"]) == {"full_load", "half_load"}
    assert set(figures["oracle_heat_rate_headroom_by_mv_group_pct"]) == {"o2_bias", "sofa_dampers", "sa_dampers",
                                                                        "feeder_biases"}


@pytest.mark.parametrize("name", sorted(RANGES))
def test_each_figure_is_inside_its_cited_range(figures, name):
    assert figures["in_range"][name], (name, RANGES[name])


def test_the_dcs_alone_crossed_no_limit_in_the_runs(figures):
    assert figures["full_load"]["violation_s"] == {} and figures["half_load"]["violation_s"] == {}
    assert all(v == {} for v in figures["dcs_violation_s"].values())


def test_bad_workers_exit_2(capsys):
    assert main(["--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
