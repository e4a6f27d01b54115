"""`boiler-ai explain SEQ`: one decision in the plant's words.

Reads one decision record (from a log directory or a daemon's catch-up service) and tells its story:
the mode and why, the inputs that mattered and their quality, what the model asked for each
manipulated variable and what the envelope let through and was written, which limits bound and by
how much, the guard's verdict and the write. Everything comes from the record itself (its `mvs`,
inputs and events); with `--config` the unit's tag map and envelope add units, descriptions and the
limits behind each binding constraint. The dashboard shows the same story (`story()` is shared).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from boiler_ai import status_codes
from boiler_ai.addresses import endpoint_options
from boiler_ai.record.schema import inputs_by_signal
from boiler_ai.strict import ConfigError

# StatusCode severity: the top two bits.
_QUALITY = {0: "good", 1: "uncertain", 2: "bad", 3: "bad"}
_BOUND_TEXT = {
    "min": "absolute minimum", "max": "absolute maximum", "rate_up": "rate limit (rise)",
    "rate_down": "rate limit (fall)", "deviation_low": "largest deviation below the DCS setpoint",
    "deviation_high": "largest deviation above the DCS setpoint",
    "unavailable": "left to the DCS (not available to the AI, or taken back by the operator)",
}
HANDED_BACK = "taken back to the DCS by the operator (its AI enable is off)"
_SYMBOL = {"equal": "=", "at_most": "<=", "at_least": ">="}


@dataclass(frozen=True)
class UnitFiles:
    """What the unit's own files add to a record: units, descriptions, limits (all optional)."""

    tag_map: object | None = None  # boiler_ai.tagmap.TagMap
    envelope: object | None = None  # boiler_ai.control.envelope.Envelope
    config_hash: str | None = None


def load_unit_files(config: Path | None) -> UnitFiles:
    """The tag map and envelope named by a daemon config; empty without one."""
    if config is None:
        return UnitFiles()
    from boiler_ai.config import load_config
    from boiler_ai.control.envelope import load_envelope
    from boiler_ai.tagmap import load_tag_map

    cfg = load_config(config)
    tag_map = load_tag_map(cfg.tag_map)
    return UnitFiles(tag_map, load_envelope(cfg.envelope, tag_map), cfg.config_hash())


# ---------------------------------------------------------------------------------------------
# Fetching one record.


def read_record(seq: int | None, *, log_dir: Path | None = None, catchup: str | None = None,
                timeout_s: float = 5.0, curve=None) -> dict:
    """Decision `seq` (None: the newest) from a log directory or a catch-up endpoint."""
    from boiler_ai.record.schema import RecordError, decode

    if log_dir is not None:
        payload = _from_log(seq, log_dir)
    else:
        payload = _from_catchup(seq, catchup, timeout_s, curve)
    try:
        return decode(payload)
    except RecordError as exc:
        raise ConfigError(log_dir or catchup, f"decision {seq}", str(exc)) from exc


def _from_log(seq: int | None, log_dir: Path) -> bytes:
    from boiler_ai.record.log import iter_frames, list_segments

    segments = list_segments(log_dir) if log_dir.is_dir() else []
    if not segments:
        raise ConfigError(log_dir, "", "not a decision log directory (no .seg files)")
    start = segments[-1][0] if seq is None else seq
    found = None
    for _, _, frame in iter_frames(log_dir, start):
        if seq is not None:
            found = frame if frame.seq == seq else None
            break
        found = frame
    if found is None:
        held = f"it holds {segments[0][0]}.. onwards" if seq is not None else "it is empty"
        raise ConfigError(log_dir, "seq", f"no decision {'at all' if seq is None else seq} in this log ({held})")
    return found.payload


def _from_catchup(seq: int | None, endpoint: str, timeout_s: float, curve) -> bytes:
    import zmq

    from boiler_ai.record.historian import CatchupClient, CatchupUnavailable, HistorianError

    client = CatchupClient(endpoint, zmq.Context.instance(), timeout_s, curve)
    try:
        if seq is None:
            head, _ = client.request({"op": "info"})
            if head["next_seq"] == 0 or head["first_seq"] is None:
                raise ConfigError(endpoint, "seq", "the unit's log is empty")
            seq = head["next_seq"] - 1
        head, payloads = client.request({"op": "fetch", "from_seq": seq, "max_records": 1})
    except (CatchupUnavailable, HistorianError) as exc:
        raise ConfigError(endpoint, "catch-up", str(exc)) from exc
    finally:
        client.close()
    if not head["seqs"] or head["seqs"][0] != seq:
        raise ConfigError(endpoint, "seq", f"decision {seq} is not in the unit's log "
                                           f"(it holds {head['first_seq']}..{head['next_seq'] - 1})")
    return payloads[0]


# ---------------------------------------------------------------------------------------------
# The story of one decision, as plain data (the dashboard renders the same dict).


def _num(x) -> float | None:
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _significant(x) -> bool:
    """Large enough to show at the three decimals setpoints are printed with."""
    x = _num(x)
    return x is not None and abs(x) >= 5e-4


def _quality(code: int) -> str:
    return _QUALITY[(code >> 30) & 3]


def _reason_entry(name: str | None) -> dict | None:
    if name is None:
        return None
    r = status_codes.reason(name)
    return {"name": name, "code": r.code, "text": r.text, "action": r.action}


def story(record: dict, files: UnitFiles = UnitFiles()) -> dict:
    """Everything `explain` says about one record, as a JSON-able dict."""
    tag_map, env = files.tag_map, files.envelope
    dt = record["cycle_period_s"]
    mvs = list(record["mvs"])
    inputs = _inputs(record)
    ai_status, ai_reason = status_codes.StatusLatch().of_record(record)
    shown = status_codes.BY_CODE.get(ai_reason, status_codes.OTHER)
    out = {
        "seq": record["seq"], "unit_id": record["unit_id"], "wall_time": record["wall_time"],
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record["wall_time"])) + " UTC",
        "cycle_period_s": dt, "model": record["model"]["id"], "software": record["software"],
        "mode": record["mode"], "mode_text": status_codes.MODE_TEXT[record["mode"]],
        "ai_status": ai_status, "ai_reason": {**_reason_entry(shown.name), "code": ai_reason},
        "transition": record["transition"],
        "release_reason": _reason_entry(record["release_reason"]),
        "events": [{**e, "code": status_codes.reason(e["reason"]).code,
                    "text": status_codes.reason(e["reason"]).text} for e in record["events"]],
        "read_error": record["read_error"],
        "config_note": None,
    }
    if files.config_hash is not None and files.config_hash != record["config_hash"]:
        out["config_note"] = ("the config given is not the one this decision ran with (config hash differs): "
                              "units and limits shown are those of the files given")

    # Indices of the record's MVs in the envelope (which may list others, or be newer).
    env_index = {name: i for i, name in enumerate(env.mv_names)} if env is not None else {}
    arrays = {k: record[k] for k in ("requested", "projected", "written", "u_prev", "u_dcs", "read_back")}
    used = {name: entry["used"] for name, entry in inputs.items()}
    active = list((record["projection"] or {}).get("active_constraints", ()))

    constraints = [_constraint(name, record, arrays, env, env_index, used, dt) for name in active]
    mv_rows = []
    for k, mv in enumerate(mvs):
        row = {"mv": mv, "unit": env.mv_units[env_index[mv]] if mv in env_index else "",
               **{key: (None if arr is None else arr[k]) for key, arr in arrays.items()}}
        if mv in env_index:
            i = env_index[mv]
            row["limits"] = {"min": float(env.lo[i]), "max": float(env.hi[i]),
                             "max_deviation": float(env.max_dev[i]), "rate_up_per_s": float(env.rate_up[i]),
                             "rate_down_per_s": float(env.rate_down[i]), "available_when": env.available_when[i]}
        row["binding"] = [c for c in constraints if c.get("mv") == mv]
        row["handed_back"] = mv in record.get("handed_back", ())  # absent from records written before
        row["note"] = HANDED_BACK if row["handed_back"] else None
        req, proj, prev = _num(row["requested"]), _num(row["projected"]), _num(row["u_prev"])
        row["held_back"] = None if req is None or proj is None else req - proj
        wrote = _num(row["written"])
        row["move"] = None if wrote is None or prev is None else wrote - prev
        dcs = _num(row["u_dcs"])
        row["from_dcs"] = None if wrote is None or dcs is None else wrote - dcs
        mv_rows.append(row)
    out["mvs"] = mv_rows
    out["constraints"] = constraints
    out["inputs"] = _inputs_that_mattered(record, inputs, env, tag_map, constraints)
    bad = sum(1 for e in inputs.values() if not e["valid"])
    out["inputs_summary"] = {"read": len(inputs), "invalid": bad, "held": len(record["inputs"]["held"]),
                             "not_good_quality": sum(1 for e in inputs.values() if e["quality"] != "good")}
    policy = record["policy"]
    out["trust"] = None if policy is None else {
        "spread": policy["spread"], "out_of_training_envelope": list(policy["out_of_training_envelope"])}
    proj = record["projection"]
    out["projection"] = None if proj is None else {"status": proj["status"], "solve_us": proj["solve_us"]}
    guard = record["guard"]
    out["guard"] = ({"verdict": "not run", "violations": []} if guard is None else
                    {"verdict": "accepted" if guard["ok"] else "blocked", "violations": list(guard["violations"])})
    out["write"] = record["write"]
    out["headline"] = _headline(out)
    return out


def _inputs(record: dict) -> dict[str, dict]:
    held = record["inputs"]["held"]
    return {name: {"signal": name, **entry, "quality": _quality(entry["status_code"]), "held": name in held}
            for name, entry in inputs_by_signal(record).items()}


def _constraint(name: str, record: dict, arrays: dict, env, env_index: dict, used: dict, dt: float) -> dict:
    """One binding constraint: what it is, the limit it set this cycle, and how much it cut the request."""
    scope, _, kind = name.rpartition(":")
    req, proj = arrays["requested"], arrays["projected"]
    mvs = record["mvs"]
    entry: dict = {"name": name, "text": name, "limit": None, "requested": None, "projected": None, "by": None}
    if scope in ("coupling", "process"):
        entry["kind"] = scope
        row = None
        if env is not None:
            pool = env.couplings if scope == "coupling" else env.process_limits
            row = next((r for r in pool if r.name == kind), None)
        if row is None:
            entry["text"] = f"{scope} rule {kind}"
            return entry
        entry["text"] = row.description
        entry["relation"] = _SYMBOL[row.relation]
        entry["limit"] = row.limit

        def value_at(u):
            if u is None:
                return None
            if scope == "coupling":
                base = arrays["u_dcs"] if row.basis == "deviation_from_dcs" else None
                total = 0.0
                for k, mv in enumerate(mvs):
                    if mv in env_index:
                        total += row.coefficients[env_index[mv]] * (u[k] - (base[k] if base is not None else 0.0))
                return total
            y_now = _num(used.get(row.signal))
            if y_now is None or arrays["u_prev"] is None:
                return None
            return y_now + sum(row.sensitivity[env_index[mv]] * (u[k] - arrays["u_prev"][k])
                               for k, mv in enumerate(mvs) if mv in env_index)

        entry["requested"], entry["projected"] = value_at(req), value_at(proj)
        if scope == "process":
            entry["signal"] = row.signal
            entry["unit"] = row.unit
            entry["now"] = _num(used.get(row.signal))
        if entry["requested"] is not None:
            gap = entry["requested"] - row.limit
            # How far past its limit the request would have taken this rule (0 when it would not have).
            entry["by"] = (max(gap, 0.0) if row.relation == "at_most" else max(-gap, 0.0)
                           if row.relation == "at_least" else abs(gap))
        return entry
    entry["kind"] = "mv"
    entry["mv"] = scope
    entry["bound"] = kind
    entry["text"] = _BOUND_TEXT.get(kind, kind)
    k = mvs.index(scope) if scope in mvs else None
    if k is None:
        return entry
    if req is not None and proj is not None:
        entry["requested"], entry["projected"] = req[k], proj[k]
        entry["by"] = abs(req[k] - proj[k])
    if scope in env_index:
        i = env_index[scope]
        prev, dcs = arrays["u_prev"], arrays["u_dcs"]
        limit = {"min": lambda: env.lo[i], "max": lambda: env.hi[i],
                 "rate_up": lambda: prev[k] + env.rate_up[i] * dt, "rate_down": lambda: prev[k] - env.rate_down[i] * dt,
                 "deviation_high": lambda: dcs[k] + env.max_dev[i], "deviation_low": lambda: dcs[k] - env.max_dev[i],
                 "unavailable": lambda: dcs[k]}.get(kind)
        if limit is not None and prev is not None and dcs is not None:
            entry["limit"] = float(limit())
        entry["unit"] = env.mv_units[i]
    return entry


def _inputs_that_mattered(record: dict, inputs: dict, env, tag_map, constraints: list[dict]) -> list[dict]:
    """Inputs with a quality issue or on hold, outside the model's training envelope, named by an event,
    the handshake, the signals behind process limits and MV availability (with the unit's files)."""
    why: dict[str, list[str]] = {}

    def note(name: str, text: str) -> None:
        if name in inputs and text not in why.setdefault(name, []):
            why[name].append(text)

    for name, e in inputs.items():
        if e["issue"] is not None:
            note(name, f"invalid: {e['issue']}" + (" (running on its last good value)" if e["held"] else ""))
        elif e["quality"] != "good":
            note(name, f"quality {e['quality']}")
    for event in record["events"]:
        head = event["detail"].split(":", 1)[0].strip()
        if head in inputs:
            note(head, f"named by {event['type']} {event['reason']}")
    for name in (record["policy"] or {}).get("out_of_training_envelope", ()):
        note(name, "outside the model's training envelope")
    if tag_map is not None:
        for role, name in tag_map.handshake.items():
            if name in inputs and tag_map.signals[name].access == "read":
                note(name, f"handshake ({role})")
    if env is not None:
        binding = {c["name"].split(":", 1)[1] for c in constraints if c.get("kind") == "process"}
        for p in env.process_limits:
            state = "binding" if p.name in binding else "checked"
            now = _num(inputs[p.signal]["used"]) if p.signal in inputs else None
            margin = "" if now is None else f", {abs(now - p.limit):.4g} {p.unit} " + (
                "inside" if (now <= p.limit if p.relation == "at_most" else now >= p.limit) else "PAST")
            note(p.signal, f"process limit {p.name} {_SYMBOL[p.relation]} {p.limit:g} ({state}{margin})")
        for mv, signal in zip(env.mv_names, env.available_when):
            if signal is not None and signal in inputs and not (_num(inputs[signal]["used"]) or 0.0) >= 0.5:
                note(signal, f"{mv} not available to the AI")
    out = []
    for name, reasons in why.items():
        e = inputs[name]
        spec = tag_map.signals.get(name) if tag_map is not None else None
        out.append({"signal": name, "description": spec.description if spec else "", "unit": spec.unit if spec else "",
                    "value": e["value"], "used": e["used"], "quality": e["quality"],
                    "status_code": f"0x{e['status_code']:08X}", "issue": e["issue"], "held": e["held"],
                    "why": "; ".join(reasons)})
    return out


def _headline(s: dict) -> str:
    mode = s["mode"]
    if s["release_reason"] is not None:
        return f"Control handed back to the DCS: {s['release_reason']['text']}."
    if mode == "active":
        moved = [r for r in s["mvs"] if _significant(r["move"])]
        cut = [c for c in s["constraints"] if _significant(c.get("by"))]
        tail = f"; {len(cut)} limit(s) held the request back" if cut else ""
        return f"AI in control: {len(moved)} of {len(s['mvs'])} setpoints moved{tail}."
    reason = s["ai_reason"]
    if reason["code"]:
        return f"{status_codes.MODE_TEXT[mode].split(':')[0]}: {reason['text']}."
    return status_codes.MODE_TEXT[mode] + "."


def plain(value):
    """A story as strict JSON data: NaN and infinities become null (browsers' JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Text.


def _f(x, digits: int = 4) -> str:
    x = _num(x)
    return "-" if x is None else f"{x:.{digits}g}"


def _mv(x) -> str:
    x = _num(x)
    return "-" if x is None else f"{x + 0.0:.3f}" if abs(x) >= 5e-4 else "0.000"


def render(s: dict) -> str:
    lines = [f"Decision {s['seq']} of {s['unit_id']} at {s['time_utc']} (cycle {s['cycle_period_s']:g} s, "
             f"model {s['model']}, {s['software']})", "", s["headline"], ""]
    if s["config_note"]:
        lines += [f"Note: {s['config_note']}", ""]
    r = s["ai_reason"]
    lines.append(f"Mode: {s['mode_text']} [AI_STATUS {s['ai_status']}, AI_REASON {r['code']} {r['text']}]")
    if s["transition"]:
        lines.append(f"Mode changed: {s['transition']['from']} -> {s['transition']['to']}")
    if s["release_reason"]:
        rel = s["release_reason"]
        lines.append(f"Released because: {rel['text']} ({rel['name']}, code {rel['code']})"
                     + (f". Operator: {rel['action']}" if rel["action"] else ""))
    if s["read_error"]:
        lines.append(f"Plant read failed: {s['read_error']}")
    lines.append("Events:" if s["events"] else "Events: none")
    for e in s["events"]:
        lines.append(f"  {e['type']:<17} {e['reason']} ({e['code']}): {e['text']}"
                     + (f" [{e['detail']}]" if e["detail"] else ""))

    summary = s["inputs_summary"]
    lines += ["", f"Inputs that mattered ({summary['read']} read: {summary['invalid']} invalid, "
                  f"{summary['held']} on their last good value, {summary['not_good_quality']} not of good quality)"]
    if s["inputs"]:
        lines.append(f"  {'signal':<28} {'value':>10} {'used':>10} {'unit':<7} {'quality':<10} {'StatusCode':<10}  why")
        for i in s["inputs"]:
            lines.append(f"  {i['signal']:<28} {_f(i['value'], 6):>10} {_f(i['used'], 6):>10} {i['unit']:<7} "
                         f"{i['quality']:<10} {i['status_code']:<10}  {i['why']}")
    else:
        lines.append("  none stood out: every input valid and of good quality")

    trust = s["trust"]
    if trust is None:
        lines += ["", "Model: did not run this cycle"]
    else:
        spread = ("no ensemble" if trust["spread"] is None
                  else f"ensemble spread {_f(trust['spread'], 3)} of the allowed deviation")
        ooe = trust["out_of_training_envelope"]
        lines += ["", f"Model trust: {spread}; " + (f"outside the training envelope: {', '.join(ooe)}" if ooe
                                                     else "every input inside the training envelope")]

    lines += ["", "Setpoints per manipulated variable (requested -> projected -> written; DCS's own; move this cycle)"]
    lines.append(f"  {'manipulated variable':<24} {'unit':<5} {'DCS':>9} {'in force':>9} {'requested':>10} "
                 f"{'projected':>10} {'written':>9} {'read back':>10} {'move':>8}  limits that bound")
    for row in s["mvs"]:
        bound = "; ".join(f"{c['text']}" + (f" (held back {_mv(c['by'])})" if _significant(c["by"]) else "")
                          for c in row["binding"])
        if row["note"]:
            bound = row["note"]
        lines.append(f"  {row['mv']:<24} {row['unit']:<5} {_mv(row['u_dcs']):>9} {_mv(row['u_prev']):>9} "
                     f"{_mv(row['requested']):>10} {_mv(row['projected']):>10} {_mv(row['written']):>9} "
                     f"{_mv(row['read_back']):>10} {_mv(row['move']):>8}  {bound}")

    lines += ["", "Limits at their bound this cycle:" if s["constraints"] else "Limits at their bound this cycle: none"]
    for c in s["constraints"]:
        lines.append("  " + _constraint_line(c))
    proj = s["projection"]
    lines += ["", "Projection: " + ("not run (no request from the model)" if proj is None else
                                    f"{proj['status']} ({proj['solve_us']} us in the QP solver)")]
    g = s["guard"]
    lines.append(f"Guard: {g['verdict']}" + (": " + "; ".join(g["violations"]) if g["violations"] else ""))
    w = s["write"]
    if w is None:
        lines.append("Write: none attempted")
    else:
        lines.append("Write: " + ("ok" if w["ok"] else f"FAILED: {w['error']}"))
    return "\n".join(lines)


def _constraint_line(c: dict) -> str:
    unit = c.get("unit", "")
    if c["kind"] == "mv":
        text = f"{c['mv']}: {c['text']}"
        if c["limit"] is not None:
            text += f" at {_mv(c['limit'])} {unit}"
        if _significant(c["by"]):
            text += f"; asked {_mv(c['requested'])}, allowed {_mv(c['projected'])} (held back {_mv(c['by'])} {unit})"
        return text
    text = f"{c['name']}: {c['text']}"
    if c["limit"] is None:
        return text
    what = f" [{c.get('signal', 'sum')} {c['relation']} {c['limit']:g} {unit}".rstrip() + "]"
    text += what
    if c.get("now") is not None:
        text += f"; now {_f(c['now'])}"
    if c["requested"] is not None:
        text += f"; the request would give {_f(c['requested'])}, projected {_f(c['projected'])}"
        if _significant(c["by"]):
            text += f" ({_f(c['by'])} past the limit avoided)"
    return text


# ---------------------------------------------------------------------------------------------
# Command.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("seq", help="decision seq, or 'latest'")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--log", type=Path, metavar="DIR", help="the unit's decision log directory")
    source.add_argument("--catchup", metavar="ENDPOINT", help="a daemon's catch-up service, e.g. tcp://10.0.0.5:5602")
    parser.add_argument("--config", type=Path, help="the daemon config: adds units, descriptions and the limits "
                                                    "behind each binding constraint (from its tag map and envelope)")
    parser.add_argument("--json", action="store_true", help="print the story as JSON")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="catch-up request timeout")
    from boiler_ai.record.curve import add_client_arguments

    add_client_arguments(parser)


def parse_seq(text: str) -> int | None:
    if text == "latest":
        return None
    if not text.isdigit():
        raise ConfigError("command line", "SEQ", f"expected a decision number (an integer >= 0) or 'latest', "
                                                 f"got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    seq = parse_seq(args.seq)
    endpoint_options(catchup=args.catchup)
    files = load_unit_files(args.config)
    from boiler_ai.record.curve import client_keys

    record = read_record(seq, log_dir=args.log, catchup=args.catchup, timeout_s=args.timeout_s,
                         curve=client_keys(args))
    s = story(record, files)
    if args.json:
        print(json.dumps(plain(s), indent=1))
    else:
        print(render(s))
    return 0
