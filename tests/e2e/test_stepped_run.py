"""`boiler-ai run` with `plant: {kind: stepped}`: the whole daemon against the simulated unit in process, as
fast as it steps, and its log replays identically, across a restart too. (An hour: benchmarks/stepped_hour.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from rigs.cycle_rig import BOOTSTRAP, BOOTSTRAP_SHA, ROOT, write_config

from boiler_ai.record.log import iter_records


def stepped_config(tmp: Path, scenario: str = "demo", seed: int = 1) -> Path:
    return write_config(tmp, BOOTSTRAP, BOOTSTRAP_SHA, mode="closed_loop",
                        plant={"kind": "stepped", "scenario": scenario, "seed": seed, "ai_enable": True})


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "boiler_ai", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_a_stepped_quarter_hour_runs_closed_loop_fast_and_replays_identically_across_a_restart(tmp_path):
    config = stepped_config(tmp_path)
    started = time.monotonic()
    first = run("run", str(config), "--sim-hours", "0.25")
    wall_s = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    second = run("run", str(config), "--max-cycles", "120")  # the daemon restarts on the same log
    assert second.returncode == 0, second.stderr
    records = list(iter_records(tmp_path / "log"))
    assert len(records) == 900 + 2 + 120 + 2  # each run ends releasing through the handshake
    assert sum(r["mode"] == "active" for r in records[:902]) > 850  # closed loop, not shadow
    assert records[0]["wall_time"] == 1_767_225_600.0  # stamped with the simulated clock
    # every record's record stage is this cycle's own, and every stage was timed
    assert all(r["timings_us"]["record"] > 0 and r["timings_us"]["infer"] > 0 for r in records if r["policy"])
    assert wall_s < 60, f"a simulated quarter hour took {wall_s:.1f} s"
    replayed = run("replay", str(tmp_path / "log"), "--config", str(config), "--json")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert json.loads(replayed.stdout.splitlines()[-1]) == {"compared": len(records), "identical": True,
                                                           "first_difference_seq": None, "field": None}


def test_old_opcua_key_names_the_migration(tmp_path):
    config = stepped_config(tmp_path)
    config.write_text(config.read_text().replace("plant:", "opcua:\n  endpoint: opc.tcp://127.0.0.1:4840\nplant:"))
    done = run("run", str(config))
    assert done.returncode == 2 and "opcua" in done.stderr and "plant:" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
