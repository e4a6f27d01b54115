"""Every long-running command logs the same way: one JSON object per line on stderr (boiler_ai/logs.py),
with the same keys. `run` is checked in tests/wiring/test_service.py and tests/e2e/test_daemon.py,
`demo` in tests/e2e/test_demo.py; here the simulator, the historian and the dashboard (uvicorn's own
lines included)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from rigs.cycle_rig import ROOT
from rigs.served import free_port

from boiler_ai.record.log import DurableLog
from boiler_ai.record.synthetic import signal_names, stamped, synthetic_record

KEYS = {"ts", "level", "logger", "msg"}


def json_lines(stderr: str) -> list[dict]:
    lines = stderr.splitlines()
    assert lines, "nothing logged"
    entries = [json.loads(line) for line in lines]  # each line is one JSON object
    assert all(KEYS <= entry.keys() for entry in entries), entries
    return entries


def started(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "boiler_ai", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def stopped_after(process: subprocess.Popen, seconds: float) -> tuple[str, str]:
    time.sleep(seconds)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    return out, err


def test_sim_logs_json_lines():
    done = subprocess.run([sys.executable, "-m", "boiler_ai", "sim", "--endpoint",
                           f"opc.tcp://127.0.0.1:{free_port()}", "--speed", "10", "--duration", "3"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    entries = json_lines(done.stderr)
    assert any(e["msg"].startswith("serving reference_unit on opc.tcp://127.0.0.1:") for e in entries)


def test_historian_logs_json_lines(tmp_path: Path):
    # nothing serves these endpoints: the historian says so and retries
    historian = started("historian", "--unit", "unit1", "--pub", f"tcp://127.0.0.1:{free_port()}",
                        "--catchup", f"tcp://127.0.0.1:{free_port()}", "--db", str(tmp_path / "h.sqlite"),
                        "--timeout-s", "0.5", "--poll-s", "0.5")
    _, err = stopped_after(historian, 4.0)
    entries = json_lines(err)
    assert any("not reachable" in e["msg"] and e["level"] == "error" for e in entries), entries


def test_dashboard_logs_json_lines_and_uvicorns_too(tmp_path: Path):
    rng = random.Random(1)
    with DurableLog(tmp_path / "log", "unit1", fsync="never") as log:
        for i in range(3):
            log.append(stamped(log, synthetic_record(rng, cycle=i, wall_time=1.7e9 + i, signals=signal_names(4))))
    dashboard = started("dashboard", "--log", str(tmp_path / "log"), "--port", str(free_port()), "--log-level", "info")
    out, err = stopped_after(dashboard, 6.0)
    assert out.startswith("boiler-ai dashboard: http://127.0.0.1:")  # its answer, on stdout
    entries = json_lines(err)
    assert any(e["logger"].startswith("uvicorn") for e in entries), entries
