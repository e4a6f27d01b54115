"""`boiler-ai demo`, the README's main job, on a short run: both runs happen and the summary is complete."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_prints_a_side_by_side_summary_and_json():
    done = subprocess.run([sys.executable, "-m", "boiler_ai", "demo", "--minutes", "4", "--speed", "40", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # its progress is logged as every command logs: JSON lines on stderr
    progress = [json.loads(line)["msg"] for line in done.stderr.splitlines()]
    assert progress[0] == "running the daemon against the simulated unit"
    lines = done.stdout.splitlines()
    assert any(line.startswith("boiler efficiency, HHV (%)") for line in lines)
    assert any(line.startswith("releases to the DCS by reason: daemon_stopping x1") for line in lines), done.stdout
    summary = json.loads(lines[-1])
    ai, dcs = summary["ai"], summary["dcs"]
    assert ai["simulated_s"] >= 200 and dcs["simulated_s"] == 240
    assert ai["active_share"] > 0.5 and ai["violation_s"] == {} and dcs["violation_s"] == {}
    # four minutes include the AI's start at its rate limits: the two runs are close
    assert abs(ai["efficiency_pct"] - dcs["efficiency_pct"]) < 0.3
    assert 85 < ai["efficiency_pct"] < 92
