"""Realistic synthetic decision records for the record room's tests, benchmark and docs.

Shaped like the reference unit's (about 100 inputs, 18 manipulated variables), deterministic for a
given random.Random. Not plant data: the values are plausible in range and type, nothing more.
"""

from __future__ import annotations

import math
import random

from boiler_ai.messages import ABSENT_STATUS, SCHEMA_VERSION, STAGES, Record
from boiler_ai.messages.wire import from_wire

_MEASUREMENTS = ("o2_pct", "co_ppm", "nox_mg_nm3", "main_steam_temp_c", "reheat_steam_temp_c", "drum_pressure_mpa",
                 "feeder_flow_t_h", "mill_outlet_temp_c", "sa_damper_pos_pct", "flue_gas_temp_c")
_MVS = ("feeder_bias", "sa_damper", "sofa_damper", "spray_valve")


def signal_names(n: int = 100) -> list[str]:
    return [f"{_MEASUREMENTS[i % len(_MEASUREMENTS)]}_{i // len(_MEASUREMENTS):02d}" for i in range(n)]


def mv_names(n: int = 18) -> list[str]:
    return [f"{_MVS[i % len(_MVS)]}_{chr(ord('a') + i // len(_MVS))}" for i in range(n)]


def synthetic_record(rng: random.Random, *, unit_id: str = "unit1", wall_time: float = 1.7e9, cycle: int = 0,
                     signals: list[str] | None = None, mvs: list[str] | None = None,
                     controller_state: dict | None = None, nan_input: bool = False) -> dict:
    """One cycle's record as the daemon hands it to the log (seq and log counters not yet stamped).

    nan_input=True puts NaN, +inf and an absent reading among the inputs, the way a failing
    transmitter does, so the lossless encoding is exercised.
    """
    signals = signals if signals is not None else signal_names()
    mvs = mvs if mvs is not None else mv_names()
    n, m = len(signals), len(mvs)
    read_time = wall_time + 0.004
    value = [rng.uniform(0.0, 600.0) for _ in range(n)]
    source_ts = [read_time - rng.uniform(0.0, 0.5) for _ in range(n)]
    server_ts = [ts + 0.001 for ts in source_ts]
    status = [0] * n
    issue: dict[str, str] = {}
    held: dict[str, float] = {}
    if nan_input and n >= 3:
        value[0], value[1], value[2] = math.nan, math.inf, math.nan
        source_ts[2], server_ts[2], status[2] = math.nan, math.nan, ABSENT_STATUS
        issue = {signals[0]: "not_finite", signals[1]: "not_finite", signals[2]: "missing"}
        held = {signals[0]: 3.25}
    u_dcs = [rng.uniform(-5.0, 60.0) for _ in range(m)]
    requested = [u + rng.uniform(-2.0, 2.0) for u in u_dcs]
    projected = [u + rng.uniform(-1.0, 1.0) for u in u_dcs]
    active = cycle % 2 == 0
    return {
        "schema_version": SCHEMA_VERSION,
        "unit_id": unit_id,
        "wall_time": wall_time,
        "mono_time": 1000.0 + cycle,
        "cycle_period_s": 1.0,
        "read_time": read_time,
        "read_error": None,
        "server_time": read_time - 0.001,
        "mode": "active" if active else "shadow",
        "events": [] if active else [{"type": "no_entry", "reason": "ai_enable_off", "detail": ""}],
        "transition": None,
        "inputs": {"signals": signals, "value": value, "source_ts": source_ts, "server_ts": server_ts,
                   "status_code": status, "issue": issue, "held": held},
        "model": {"id": "bc-bootstrap", "sha256": "0" * 63 + "1"},
        "policy": {"spread": rng.uniform(0.0, 0.2), "out_of_training_envelope": []},
        "mvs": mvs,
        "requested": requested,
        "projected": projected,
        "written": projected if active else None,
        "u_prev": u_dcs,
        "u_dcs": u_dcs,
        "read_back": projected if active else None,
        "projection": {"status": "clipped" if cycle % 3 == 0 else "ok",
                       "active_constraints": ["o2_min"] if cycle % 3 == 0 else [], "solve_us": rng.randrange(5, 40)},
        "guard": {"ok": True, "violations": []},
        "write": {"ok": True, "status": {f"{mv}_ai_sp": 0 for mv in mvs}, "error": None} if active else None,
        "release_reason": None,
        "heartbeat": cycle % 65536,
        "ai_status": 2 if active else 1,
        "ai_reason": 0 if active else 101,
        "handed_back": [] if active else mvs[:1],
        "challenger": None,
        "timings_us": {stage: rng.randrange(1, 400) for stage in STAGES},
        "config_hash": "ab" * 32,
        "software": "boiler-ai 0.1.0",
        "controller_state": controller_state,
    }


def stamped(log, record: dict) -> Record:
    """A record dict as the single writer hands it to `log`: stamped with its next seq and loss counters."""
    return from_wire(Record, {**record, "seq": log.next_seq, "log_dropped_count": log.dropped_count,
                              "publish_drop_count": log.publish_drop_count})
