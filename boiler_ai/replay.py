"""`boiler-ai replay LOG_DIR --config CONFIG`: process replay of logged decisions.

Every logged cycle's inputs (values, StatusCodes, source timestamps, read error, write outcome) are
fed back through a freshly built controller core, and its decisions are compared with the logged
ones field by field. Identical code and config reproduce every decision exactly; after a change,
the first differing decision is reported with what differs and the events on both sides.

Replay starts at the first record of the range that carries `controller_state` (the daemon stamps
it every `state_every_cycles` cycles, counting from its start), so it can begin in the middle of a
months-long log. A record whose state says cycle 0 is a daemon's first after a (re)start: the replay
restores that state too, as the daemon started afresh there. Every other state on the way is compared
with the replayed controller's, so a difference in state shows even before it changes a decision.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from boiler_ai.config import load_config
from boiler_ai.control.cycle import no_lap
from boiler_ai.daemon import Core, build_core
from boiler_ai.errors import FileAccessError, UnknownUnit
from boiler_ai.messages import (
    ABSENT_STATUS,
    EXTERNAL_REASONS,
    Event,
    EventType,
    Outcome,
    Reading,
    Record,
    Snapshot,
    StageTimings,
    WriteResult,
)
from boiler_ai.record.log import iter_records

# What a replay must reproduce. Timings and wall-clock fields naturally differ.
COMPARED = ("mode", "transition", "events", "release_reason", "requested", "projected", "written",
            "u_prev", "u_dcs", "projection.status", "projection.active_constraints", "guard", "heartbeat", "policy",
            "ai_status", "ai_reason", "handed_back")
# What a later version added to the record and to the controller's state: records and states logged before
# have none of it, and are compared without it.
ADDED_LATER = frozenset({"ai_status", "ai_reason", "handed_back"})
STATE_ADDED_LATER = frozenset({"status"})


@dataclass
class Difference:
    seq: int
    field: str
    logged: object
    replayed: object
    logged_events: list
    replayed_events: list

    def describe(self) -> str:
        return (f"first difference at seq {self.seq}, field {self.field}:\n"
                f"  logged:   {_short(self.logged)}\n  replayed: {_short(self.replayed)}\n"
                f"  logged events:   {_events(self.logged_events)}\n"
                f"  replayed events: {_events(self.replayed_events)}")


@dataclass
class ReplayResult:
    compared: int
    first_seq: int | None
    last_seq: int | None
    difference: Difference | None
    skipped_before_state: int


def _short(value: object, width: int = 400) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[:width] + "..."


def _events(events: list) -> str:
    return ", ".join(f'{e["type"]}:{e["reason"]}' + (f' ({e["detail"]})' if e["detail"] else "") for e in events) or "-"


def snapshot_of(record: dict) -> Snapshot:
    if record["read_error"] is not None:
        return Snapshot({}, record["read_time"], error=record["read_error"])
    inputs = record["inputs"]
    # server_ts and server_time were added to v1 later: records written before have neither
    server_ts = inputs.get("server_ts") or [math.nan] * len(inputs["signals"])
    readings = {
        name: Reading(value, status, ts, server)
        for name, value, status, ts, server in zip(inputs["signals"], inputs["value"], inputs["status_code"],
                                                   inputs["source_ts"], server_ts, strict=True)
        if status != ABSENT_STATUS
    }
    return Snapshot(readings, record["read_time"], server_time=record.get("server_time"))


def write_result_of(record: dict, tag_map) -> WriteResult | None:
    write = record["write"]
    if write is None:
        return None
    read_back = {}
    if record["read_back"] is not None:
        tags = [tag_map.manipulated[mv].ai_setpoint for mv in record["mvs"]]
        read_back = dict(zip(tags, record["read_back"], strict=True))
    return WriteResult(write["ok"], dict(write["status"]), read_back, write["error"])


def _get(record: dict, path: str):
    value = record
    for part in path.split("."):
        value = None if value is None else value.get(part)
    return value


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _as_logged(state: dict, logged: dict) -> dict:
    """The controller's state without what a later version added and the logged state lacks."""
    return {k: v for k, v in state.items() if k in logged or k not in STATE_ADDED_LATER}


def replay(records: Iterable[dict], core: Core) -> ReplayResult:
    """Replay `records` (in seq order) through `core` (freshly built from the config)."""
    controller = core.controller
    compared = skipped = 0
    first = last = None
    started = False
    no_timings = StageTimings()
    for record in records:
        if record["unit_id"] != controller.settings.unit_id:
            raise UnknownUnit(f"seq {record['seq']} is a record of unit {record['unit_id']!r}, "
                              f"the config is for unit {controller.settings.unit_id!r}")
        state = record["controller_state"]
        if not started:
            if state is None:
                skipped += 1
                continue
            controller.restore(state)
            started = True
        elif state is not None:
            if state["cycle"] == 0:
                controller.restore(state)  # the daemon restarted here, with a fresh controller
            elif not _same(state, current := _as_logged(controller.state(), state)):
                return ReplayResult(compared, first, record["seq"],
                                    Difference(record["seq"], "controller_state", state, current,
                                               record["events"], []), skipped)
        # what the daemon handed in (the core's own "released" event for the same reason is not)
        external = [Event(e["type"], e["reason"], e["detail"]) for e in record["events"]
                    if e["reason"] in EXTERNAL_REASONS and e["type"] == EventType.IMMEDIATE_DISABLE]
        decision = controller.step(snapshot_of(record), record["wall_time"], record["mono_time"], external, no_lap)
        result = write_result_of(record, core.tag_map)
        decision, _ = controller.finish(decision, result)
        outcome = Outcome(result, controller.read_back(result), no_timings)
        replayed = Record(record["seq"], core.origin, decision, outcome).as_dict()
        for field in COMPARED:
            logged_value, replayed_value = _get(record, field), _get(replayed, field)
            if logged_value is None and field in ADDED_LATER:
                continue
            if not _same(logged_value, replayed_value):
                return ReplayResult(compared, first, record["seq"],
                                    Difference(record["seq"], field, logged_value, replayed_value,
                                               record["events"], replayed["events"]), skipped)
        compared += 1
        first = record["seq"] if first is None else first
        last = record["seq"]
    return ReplayResult(compared, first, last, None, skipped)


def records_in(log_dir: Path, from_seq: int, to_seq: int | None) -> Iterator[dict]:
    for record in iter_records(log_dir, from_seq):
        if to_seq is not None and record["seq"] > to_seq:
            return
        yield record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log_dir", type=Path, help="the daemon's decision-log directory")
    parser.add_argument("--config", type=Path, required=True,
                        help="daemon config to rebuild the controller from (the one that ran, or a candidate)")
    parser.add_argument("--from-seq", type=int, default=0)
    parser.add_argument("--to-seq", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    core = build_core(cfg)
    if not args.log_dir.is_dir():
        raise FileAccessError(f"{args.log_dir}: not a decision log directory")
    result = replay(records_in(args.log_dir, args.from_seq, args.to_seq), core)
    if result.compared == 0 and result.difference is None:
        print(f"replay: no record with controller state in {args.log_dir} from seq {args.from_seq}", file=sys.stderr)
        return 2
    if result.difference is None:
        print(f"replay: {result.compared} decisions reproduced exactly (seq {result.first_seq}..{result.last_seq})")
    else:
        print(f"replay: {result.compared} decisions reproduced, then:\n{result.difference.describe()}")
    if args.json:
        diff = result.difference
        print(json.dumps({"compared": result.compared, "identical": diff is None,
                          "first_difference_seq": None if diff is None else diff.seq,
                          "field": None if diff is None else diff.field}))
    return 0 if result.difference is None else 1
