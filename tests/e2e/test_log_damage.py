"""The issue's scenario end to end: `boiler-ai run` against the simulated unit over OPC UA, `boiler-ai
historian` subscribed, `truncate -s -3000` on the live segment mid-run, the daemon restarted.

Before the fix the restarted log set aside 201 intact records as a torn tail and reused their seqs;
the historian then held records differing from the log's for the same seq and marked valid seqs lost.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from rigs.cycle_rig import follower_config
from rigs.served import SPEED, free_port, until_engaged

from boiler_ai.record.log import iter_frames, list_segments, read_gaps
from boiler_ai.sim.scenario import named_scenario
from boiler_ai.sim.serve import SimulatedUnitServer
from boiler_ai.sim.unit import ReferenceUnit


def log_frames(directory: Path) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for _, _, frame in iter_frames(directory):
        assert frame.seq not in out, f"seq {frame.seq} twice in the log"
        out[frame.seq] = frame.payload
    return out


def historian_rows(db: Path) -> tuple[dict[int, bytes], list[tuple], list[tuple]]:
    with sqlite3.connect(db, timeout=10) as conn:
        rows = {seq: text.encode() for seq, text in conn.execute("SELECT seq, record FROM decisions")}
        lost = conn.execute("SELECT first_seq, last_seq, reason FROM lost_ranges ORDER BY first_seq").fetchall()
        conflicts = conn.execute("SELECT seq FROM conflicts").fetchall()
    return rows, lost, conflicts


async def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def test_live_segment_truncated_mid_run_then_daemon_restarted(tmp_path: Path):
    async def body():
        endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
        pub, catchup = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        unit = ReferenceUnit(named_scenario("steady_full_load", 0), seed=0)
        sim = SimulatedUnitServer(unit, endpoint=endpoint, speed=SPEED)
        await sim.set_ai_enable(True)
        await sim.start()
        config = follower_config(tmp_path, {"sa_damper_c_pct": 6.0}, mode="closed_loop",
                                 plant={"endpoint": endpoint, "timeout_s": 0.5},
                                 record={"publish_endpoint": pub, "catchup_endpoint": catchup, "fsync": "interval"})
        log_dir, db = tmp_path / "log", tmp_path / "historian.sqlite"
        historian = subprocess.Popen([sys.executable, "-m", "boiler_ai", "historian", "--unit", "reference_unit",
                                      "--pub", pub, "--catchup", catchup, "--db", str(db), "--poll-s", "0.5"],
                                     stdout=subprocess.DEVNULL, stderr=(tmp_path / "historian.err").open("w"))
        daemons = []

        def start_daemon():
            # stderr to a file: an unread pipe that fills up would stall the process writing to it
            err = (tmp_path / f"daemon{len(daemons)}.err").open("w")
            daemons.append(subprocess.Popen([sys.executable, "-m", "boiler_ai", "run", str(config), "--sim-speed",
                                             str(SPEED)], stdout=subprocess.DEVNULL, stderr=err))

        def stop_daemon():
            daemons[-1].send_signal(signal.SIGTERM)
            assert daemons[-1].wait(30) == 0, (tmp_path / f"daemon{len(daemons) - 1}.err").read_text()

        def logged_count() -> int:
            return len(log_frames(log_dir)) if log_dir.exists() else 0

        try:
            start_daemon()
            await until_engaged(unit)
            await wait_until(lambda: logged_count() >= 60, 60, "60 records")
            before = log_frames(log_dir)
            segment = list_segments(log_dir)[-1][1]
            subprocess.run(["truncate", "-s", "-3000", str(segment)], check=True)
            cut = segment.stat().st_size
            intact = {f.seq: f.payload for _, end, f in iter_frames(log_dir) if end <= cut}
            await wait_until(lambda: logged_count() >= len(intact) + 60, 60, "60 more records")  # the daemon goes on
            stop_daemon()
            start_daemon()  # restart
            await wait_until(lambda: len(list_segments(log_dir)) >= 3, 60, "the restarted daemon's first records")
            await wait_until(lambda: logged_count() >= len(intact) + 100, 60, "records after the restart")
            # Caught up while the daemon still serves catch-up: records published in its last moments may miss
            # the historian (a stopping daemon's socket does not linger) and come with its next start.
            caught_up = max(log_frames(log_dir))
            await wait_until(lambda: db.exists() and caught_up in historian_rows(db)[0], 60,
                             "the historian to catch up")
            stop_daemon()
        finally:
            for daemon in daemons:
                if daemon.poll() is None:
                    daemon.kill()
                    daemon.wait(10)
            historian.send_signal(signal.SIGTERM)
            historian.wait(20)
            await sim.stop()

        log = log_frames(log_dir)
        # What the cut took: the seqs missing from the log. The writer may have appended records between
        # reading `before` and the truncate, so the cut can take records `before` never saw, but never spare
        # one it saw beyond the cut.
        truncated = [s for s in range(max(log) + 1) if s not in log]
        assert truncated, "the truncation took no record"
        assert set(before) - set(intact) <= set(truncated)
        assert truncated == list(range(max(intact) + 1, truncated[-1] + 1))  # one tail, right after the cut
        # no intact record lost or changed
        assert all(log.get(seq) == payload for seq, payload in intact.items())
        # no seq reused: the truncated seqs stay unused, every other seq up to the end is in the log
        assert sorted(log) == [s for s in range(max(log) + 1) if s not in truncated]
        assert [(g["first"], g["last"], g["reason"]) for g in read_gaps(log_dir)] == [
            (truncated[0], truncated[-1], "damaged_segment")]
        # the historian agrees with the log wherever both hold a seq, and holds every record the log has
        stored, lost, conflicts = historian_rows(db)
        assert conflicts == []
        assert all(stored[seq] == payload for seq, payload in log.items() if seq <= caught_up)
        assert all(stored.get(seq, payload) == payload for seq, payload in log.items())
        assert set(stored) - set(log) <= set(truncated)  # what it got live before the cut
        for a, b, reason in lost:  # only what the log does not have, and why
            assert not set(range(a, b + 1)) & set(log) and reason == "damaged_segment"

    asyncio.run(asyncio.wait_for(body(), 240))
