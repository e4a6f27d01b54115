"""`boiler-ai evaluate --baseline-cache`: the runs that do not depend on the model (the DCS alone, the DCS
echo, the oracle) are kept and reused, and a reused baseline gives the same figures as a fresh one."""

from __future__ import annotations

from boiler_ai.demo import PROMOTED_MODEL
from boiler_ai.evaluate import evaluate

MODEL = PROMOTED_MODEL / "policy.onnx"


def figures(run: dict) -> dict:
    return {k: v for k, v in run.items() if k not in ("wall_s", "baseline_reused")}


def test_a_cached_baseline_gives_the_same_figures_and_a_changed_key_a_new_one(tmp_path):
    def once(**kw):
        summary, runs = evaluate(MODEL, scenarios=["mill_trip"], seeds=[9001], hours=0.1, workers=1,
                                 baseline_cache=tmp_path, **kw)
        return summary, runs[0]

    fresh_summary, fresh = once()
    assert not fresh["baseline_reused"] and len(list(tmp_path.glob("*.json"))) == 1
    again_summary, again = once()
    assert again["baseline_reused"] and again_summary["baseline_runs_reused"] == 1
    assert figures(again) == figures(fresh)
    assert {k: v for k, v in again_summary.items() if k != "baseline_runs_reused"} == \
        {k: v for k, v in fresh_summary.items() if k != "baseline_runs_reused"}
    # an unreadable file is recomputed and rewritten, not trusted
    cached = next(tmp_path.glob("*.json"))
    cached.write_text("{not json")
    _, rewritten = once()
    assert not rewritten["baseline_reused"] and figures(rewritten) == figures(fresh)
    # the operator's re-enable delay changes the echo's releases: another key
    once(rearm_after_min=5.0)
    assert len(list(tmp_path.glob("*.json"))) == 2 and not list(tmp_path.glob("*.tmp"))


def test_the_longest_runs_are_started_first_and_the_runs_come_back_in_scenario_and_seed_order():
    from boiler_ai.evaluate import longest_first

    # capped at 1.5 h: the 24 h day and the 2 h coal switch run 1.5 h, the mill trip its own hour
    jobs = [{"scenario": s, "seed": 9001, "hours": 1.5} for s in ("mill_trip", "agc_day_24h", "coal_switch")]
    assert longest_first(jobs) == [1, 2, 0]
    # the 45-minute demo scenario is shorter than a mill trip capped at 46 minutes: the mill trip runs first
    # (one worker: this test shares the machine with timing-sensitive ones)
    started = []
    summary, runs = evaluate(MODEL, scenarios=["demo", "mill_trip"], seeds=[9001], hours=0.77, workers=1,
                             progress=lambda r: started.append(r["scenario"]))
    assert started == ["mill_trip", "demo"]
    assert [r["scenario"] for r in runs] == list(summary["per_scenario"]) == ["demo", "mill_trip"]
    assert [r["hours"] for r in runs] == [0.75, 0.77]
