"""`boiler-ai promote MODEL`: the promotion gate. A policy is installed under models/<model id>/ only if, on the
held-out evaluation (`boiler-ai evaluate`, run here or read from its report's evaluation.json):

  * it adds no process-limit second beyond the DCS's own (excess_violation_s == 0),
  * it releases to the DCS no more often than the DCS itself drops the AI permissive (its own faults),
  * the guard never blocked it,
  * it gains: heat rate at least 0.02 % better and boiler efficiency better than under the DCS alone.

A refusal is one line naming the failed condition, exit code 2. On a pass: models/<id>/policy.onnx, the
model card (MODEL_CARD.md and .json beside the model, with the evaluation added) and evaluation.json, and
the file's sha256 (the value to pin in the daemon config) as the last line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from boiler_ai.errors import ExpectedError
from boiler_ai.evaluate import EXAMPLE_CONFIG, ROOT, evaluate, options, render, tally

# Below this heat-rate gain (%) a model has not shown it does anything: the DCS runs the unit as well.
MIN_GAIN_PCT = 0.02


class Refused(ExpectedError):
    """The model failed the promotion gate."""


def gate(s: dict) -> list[str]:
    """Why the evaluation `s` does not pass, in the gate's order (empty: it passes)."""
    why = []
    if s["excess_violation_s"] > 0:
        why.append(f"{s['excess_violation_s']:g} process-limit seconds beyond the DCS's own")
    if s["releases_per_h"] > s["dcs_faults_per_h"]:
        why.append(f"{s['releases_per_h']:.3g} releases per hour, above the DCS's own fault rate "
                   f"({s['dcs_faults_per_h']:.3g} per hour)")
    if s["guard_blocks"] > 0:
        why.append(f"{s['guard_blocks']} guard blocks")
    if not (s["heat_rate_gain_pct"] >= MIN_GAIN_PCT and s["efficiency_gain_pct_pt"] > 0):
        why.append(f"no gain (heat rate {s['heat_rate_gain_pct']:+.4f} %, boiler efficiency "
                   f"{s['efficiency_gain_pct_pt']:+.4f} pct-pt)")
    return why


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="ONNX policy with the model contract")
    parser.add_argument("--evaluation", type=Path, default=None,
                        help="evaluation.json of `boiler-ai evaluate --report` for this model (else evaluate now)")
    parser.add_argument("--scenarios", default=None)
    parser.add_argument("--seeds", default="held-out")
    parser.add_argument("--max-seeds", type=int, default=None)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--config", type=Path, default=EXAMPLE_CONFIG)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models", help="where models/<id>/ is written")


def run(args: argparse.Namespace) -> int:
    from boiler_ai.control.model_contract import read_contract

    contract = read_contract(args.model)
    sha256 = hashlib.sha256(args.model.read_bytes()).hexdigest()
    if args.evaluation is not None:
        try:
            summary = json.loads(args.evaluation.read_text())["summary"]
        except (OSError, ValueError, KeyError) as exc:
            raise ExpectedError(f"{args.evaluation}: not an evaluation.json of boiler-ai evaluate ({exc})") from None
        if summary.get("model_sha256") != sha256:
            raise ExpectedError(f"{args.evaluation}: evaluates model {summary.get('model_sha256')}, not {args.model} "
                                f"({sha256})")
    else:
        scenarios, seeds = options(args)
        summary, _ = evaluate(args.model, scenarios=scenarios, seeds=seeds, hours=args.hours, workers=args.workers,
                              config=args.config)
        print(render(summary), file=sys.stderr)
    why = gate(summary)
    if why:
        raise Refused(f"{args.model}: not promoted: {'; '.join(why)}")
    folder = args.models_dir / contract.model_id
    folder.mkdir(parents=True, exist_ok=True)
    if args.model.resolve() != (folder / "policy.onnx").resolve():  # else re-promoting it where it is installed
        shutil.copyfile(args.model, folder / "policy.onnx")
    (folder / "evaluation.json").write_text(json.dumps(summary, indent=2) + "\n")
    card_md, card_json = args.model.with_name("MODEL_CARD.md"), args.model.with_name("MODEL_CARD.json")
    card = json.loads(card_json.read_text()) if card_json.is_file() else {"model_id": contract.model_id}
    card["evaluation"] = summary
    (folder / "MODEL_CARD.json").write_text(json.dumps(card, indent=2) + "\n")
    text = card_md.read_text() if card_md.is_file() else f"# Model card: {contract.model_id}\n"
    (folder / "MODEL_CARD.md").write_text(with_evaluation(text, evaluation_md(summary)))
    print(f"promoted {contract.model_id} to {folder}")
    print(f"sha256 {sha256}")
    return 0


def with_evaluation(card: str, evaluation: str) -> str:
    """The card with `evaluation` as its evaluation section: re-promoting an installed model (a new evaluation,
    say after an envelope change) replaces the old section in place and keeps the sections after it (notes)."""
    head, found, rest = card.partition(EVALUATION_HEADING)
    tail = rest[rest.find("\n## "):] if found and "\n## " in rest else ""
    return head.rstrip() + "\n\n" + evaluation.rstrip() + "\n" + (tail.rstrip() + "\n" if tail else "")


def echo_band(s: dict) -> str:
    """The DCS's own setpoints through the AI path against the DCS alone, where the evaluation has it."""
    if "dcs_echo_steam_outside_band_excess_s" not in s:
        return ""
    return f"; the DCS echoed through the AI path {s['dcs_echo_steam_outside_band_excess_s']:g} s more than it"


def envelope(s: dict) -> str:
    """Which envelope the evaluation ran under, where it says (evaluations written before do not)."""
    return f", under the envelope with sha256 {s['envelope_sha256']}" if "envelope_sha256" in s else ""


EVALUATION_HEADING = "## Evaluation (boiler-ai evaluate, held-out seeds) and the promotion gate"


def evaluation_md(s: dict) -> str:
    rows = "\n".join(f"| {name} | {', '.join(map(str, r['seeds']))} | {r['efficiency_gain_pct_pt']:+.3f} | "
                     f"{r['heat_rate_gain_pct']:+.3f} | {r['oracle_heat_rate_headroom_pct']:.3f} | "
                     f"{r['nox_ratio']:.3f} | "
                     f"{r['ai_time_share']:.1%} | {r['guard_blocks']} | {r['releases']} |"
                     for name, r in s["per_scenario"].items())
    # evaluations written before the steam band was counted have no such figure
    steam = (f"\n| steam temperatures | {s['steam_dev_c']} °C mean from set point (DCS {s['dcs_steam_dev_c']} °C); "
             f"beyond ±5 °C {s['steam_outside_band_excess_s']:g} s more than the DCS (DCS alone "
             f"{s['dcs_steam_outside_band_s']:g} s{echo_band(s)}) |" if "steam_outside_band_excess_s" in s else "")
    # evaluations written before releases were tallied by limit name only their reasons
    releases = (f"\n| releases | {tally(s['releases_by_reason'])}; process limits {tally(s['releases_by_limit'])} "
                f"(DCS echo: {tally(s['dcs_faults_by_reason'])}; process limits {tally(s['dcs_faults_by_limit'])}) |"
                if "releases_by_limit" in s else "")
    n = s.get("operator_rearms", 0)
    rearm = (f" (a simulated operator re-enables AI {s['rearm_after_min']:g} min after a release: "
             f"{n} time{'' if n == 1 else 's'})" if s.get("rearm_after_min") else "")
    return f"""{EVALUATION_HEADING}

{s['runs']} runs, {s['simulated_h']} simulated hours, closed loop through the real controller core on the
stepped plant against the DCS alone and the steady-state oracle on the same seeds{envelope(s)}. Passed the gate: no
process-limit second beyond the DCS's ({s['excess_violation_s']:g}), releases {s['releases_per_h']:.3g}/h
against the DCS's own faults {s['dcs_faults_per_h']:.3g}/h, {s['guard_blocks']} guard blocks, a gain.

| | |
|---|---|
| boiler efficiency gain | {s['efficiency_gain_pct_pt']:+.4f} pct-pt (oracle {s['oracle_headroom_pct_pt']:.4f}) |
| unit heat rate gain | {s['heat_rate_gain_pct']:+.4f} % (oracle headroom {s['oracle_heat_rate_headroom_pct']:.4f} %, \
share {s['share_of_headroom']}) |
| NOx, AI / DCS | {s['nox_ratio']:.4f} |
| CO p99 | {s['co_p99_ppm']} ppm (DCS {s['dcs_co_p99_ppm']} ppm) |{steam}
| time in AI mode | {s['ai_time_share']:.1%}{rearm} |{releases}

| scenario | seeds | efficiency pct-pt | heat rate % | oracle heat rate % | NOx ratio | AI mode | blocks | releases |
|---|---|---|---|---|---|---|---|---|
{rows}
"""
