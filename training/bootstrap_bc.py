"""Bootstrap policy: behaviour cloning of the reference unit's DCS from simulated operation.

Runs the simulated unit under its DCS alone over several scenarios and seeds, learns to predict each
manipulated variable's DCS setpoint one cycle ahead from a short history of every readable signal,
holds one scenario out for evaluation, and exports an ensemble with the full model contract:

    python -m training.bootstrap_bc --out models/bootstrap-bc-v1

It is a policy to run the daemon with until a trained one exists: it follows the DCS (and so should
gain nothing), while exercising every part of the edge path (contract, history, spread, envelope).
`fit_and_export` is the reusable part: it takes datasets from any source (see training/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from boiler_ai.control.model_contract import ModelContract
from boiler_ai.control.policy import PolicyRunner
from boiler_ai.tagmap import TagMap, load_tag_map
from training.ensemble import ResidualMLPEnsemble, predict, train_ensemble
from training.export import code_commit, created_utc, export_policy
from training.policy_dataset import Dataset, build_dataset, concat, observation_signals

ROOT = Path(__file__).resolve().parent.parent

TAG_MAP = ROOT / "opc" / "reference_unit.yaml"


# Training: two dispatch days (50-100 % load, coal changes, slagging, sootblows) and the special cases
# (steady full load, a coal switch, a mill trip with the reserve mill starting). Held out: the demo
# scenario (ramps and a coal change), the one `boiler-ai demo` runs, so its figures are on unseen data.
TRAIN_PLAN = (("agc_day_24h", 0), ("agc_day_24h", 1), ("steady_full_load", 2), ("coal_switch", 3), ("mill_trip", 4))
HELD_OUT_PLAN = (("demo", 9),)


@dataclass(frozen=True)
class EnsembleSpec:
    epochs: int = 12
    members: int = 5
    hidden: int = 64  # two hidden layers of this width per member


def simulated_rows(scenario: str, seed: int, seconds: float | None, cycle_s: float) -> Iterator[dict[str, float]]:
    """One row of every readable tag per cycle, the unit under its DCS alone (AI never enabled)."""
    from boiler_ai.sim.scenario import named_scenario
    from boiler_ai.sim.unit import ReferenceUnit

    sc = named_scenario(scenario, seed)
    unit = ReferenceUnit(scenario=sc, seed=seed)
    duration = sc.duration_s if seconds is None else min(seconds, sc.duration_s)
    for _ in range(round(duration / cycle_s)):
        unit.step(cycle_s)
        yield unit.values()


def scaling(dataset: Dataset, tag_map: TagMap) -> tuple[np.ndarray, np.ndarray]:
    """Per-signal offset and scale (mean and std over training). A signal that barely moved in training
    is scaled by its instrument span instead, so a value the model never saw cannot blow up its input."""
    rows = dataset.x.reshape(-1, len(dataset.input_signals))
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    span = np.array([tag_map.signals[s].hi - tag_map.signals[s].lo for s in dataset.input_signals])
    return mean, np.where(std >= 1e-3 * span, std, span)


def fit_and_export(train: Dataset, held_out: Dataset, *, tag_map: TagMap, out_dir: Path, model_id: str, seed: int,
                   spec: EnsembleSpec, cycle_period_s: float, data_note: str,
                   log: Callable[[str], None] = print, algorithm: str | None = None,
                   dataset_sha256: str | None = None,
                   card: Callable[[dict, ModelContract], str] | None = None,
                   on_epoch: Callable[[int, float], None] | None = None) -> dict:
    """Scale, train, evaluate on `held_out`, export `out_dir/policy.onnx` and its model card; return the figures.
    A policy distilled from another learner names itself (`algorithm`), the data it was learned from
    (`dataset_sha256`, default: the hash of `train`) and writes its own card (`card(summary, contract)`)."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    started = time.perf_counter()
    signals, actions = train.input_signals, train.action_names
    n, h = len(signals), train.history
    sp_signal = {mv: tag_map.manipulated[mv].dcs_setpoint for mv in actions}
    missing = [sp for sp in sp_signal.values() if sp not in signals]
    if missing:
        raise ValueError(f"the DCS setpoints must be inputs (the policy moves from them): missing {missing}")
    offset, scale = scaling(train, tag_map)
    sp_index = [signals.index(sp_signal[mv]) for mv in actions]
    out_offset, out_scale = offset[sp_index], scale[sp_index]  # the output is scaled like its DCS setpoint

    def scaled(ds: Dataset) -> np.ndarray:
        return ((ds.x.reshape(len(ds), h, n) - offset) / scale).reshape(len(ds), h * n).astype(np.float32)

    x_train, x_test = scaled(train), scaled(held_out)
    y_train = ((train.y - out_offset) / out_scale).astype(np.float32)
    newest = [(h - 1) * n + i for i in sp_index]  # each MV's DCS setpoint in the newest cycle
    move_std = (y_train - x_train[:, newest]).std(axis=0)
    model = ResidualMLPEnsemble(h * n, len(actions), newest, np.maximum(move_std, 1e-3),
                                members=spec.members, hidden=spec.hidden)
    log(f"training {spec.members} x MLP({h * n}->{spec.hidden}->{spec.hidden}->{len(actions)}) on "
        f"{len(train)} samples, {spec.epochs} epochs")
    losses = train_ensemble(model, x_train, y_train, epochs=spec.epochs, seed=seed, on_epoch=on_epoch)
    train_s = time.perf_counter() - started
    log(f"trained in {train_s:.1f} s, final loss {losses[-1]:.4g}")

    action, spread = predict(model, x_test)
    action_eng = action * out_scale + out_offset
    spread_eng = spread * out_scale
    hold_eng = held_out.x[:, newest]  # persistence: next setpoint = this one
    per_mv = {
        mv: {
            "unit": tag_map.signals[sp_signal[mv]].unit,
            "mae": float(np.mean(np.abs(action_eng[:, j] - held_out.y[:, j]))),
            "mae_hold_last": float(np.mean(np.abs(hold_eng[:, j] - held_out.y[:, j]))),
            "spread_mean": float(np.mean(spread_eng[:, j])),
            "spread_p95": float(np.percentile(spread_eng[:, j], 95)),
            "spread_max": float(np.max(spread_eng[:, j])),
            "dcs_constant_in_training": bool(np.ptp(train.y[:, j]) == 0.0),
        }
        for j, mv in enumerate(actions)
    }

    low, high = train.x.reshape(-1, n).min(axis=0), train.x.reshape(-1, n).max(axis=0)
    contract = ModelContract(
        model_id=model_id, input_name="observation", input_signals=signals, history_length=h,
        cycle_period_s=cycle_period_s, input_offset=tuple(map(float, offset)), input_scale=tuple(map(float, scale)),
        action_output="action", action_names=actions,
        action_units=tuple(tag_map.signals[sp_signal[mv]].unit for mv in actions),
        output_offset=tuple(map(float, out_offset)), output_scale=tuple(map(float, out_scale)),
        ensemble_size=spec.members, spread_output="action_spread",
        training_envelope=tuple((float(lo), float(hi)) for lo, hi in zip(low, high)),
        dataset_sha256=dataset_sha256 or train.sha256(),
        algorithm=algorithm or (f"behaviour cloning of the DCS, {train.lead}-cycle-ahead setpoints, residual MLP "
                                f"ensemble {spec.members}x(2x{spec.hidden}, ReLU), bootstrap draws, Adam, MSE"),
        seed=seed, created_utc=created_utc(), code_commit=code_commit(),
    )
    path = out_dir / "policy.onnx"
    sha256 = export_policy(model, contract, path, x_test[: min(len(x_test), 512)])
    runner_diff, envelope_share, envelope_signals = _replay_through_runner(path, sha256, tag_map, held_out, action_eng)
    log(f"exported {path} ({path.stat().st_size} bytes), sha256 {sha256}")

    summary = {
        "model_id": model_id, "policy_sha256": sha256, "onnx_bytes": path.stat().st_size,
        "dataset_sha256": contract.dataset_sha256, "train_samples": len(train), "held_out_samples": len(held_out),
        "inputs": n, "history": h, "seed": seed, "epochs": spec.epochs, "final_train_loss": losses[-1],
        "train_seconds": round(train_s, 1), "code_commit": contract.code_commit, "created_utc": contract.created_utc,
        "runner_vs_torch_max_abs": runner_diff, "held_out_cycles_out_of_envelope": envelope_share,
        "held_out_out_of_envelope_by_signal": envelope_signals,
        "per_mv": per_mv, "data": data_note,
    }
    (out_dir / "MODEL_CARD.md").write_text((card or model_card)(summary, contract), encoding="utf-8")
    return summary


def _replay_through_runner(path: Path, sha256: str, tag_map: TagMap, held_out: Dataset,
                           torch_action: np.ndarray) -> tuple[float, float, dict[str, int]]:
    """Feed every held-out window cycle by cycle through the edge's PolicyRunner (default envelope
    margin). Return the largest difference from torch (engineering units; fails above 1e-4 of each
    output's scale), the share of windows with an input outside the training envelope, and how many
    windows flagged each such input."""
    runner = PolicyRunner(path, tag_map=tag_map, expected_sha256=sha256, mv_names=held_out.action_names)
    n, h = len(held_out.input_signals), held_out.history
    worst, flagged, by_signal = 0.0, 0, Counter()
    tolerance = 1e-4 * np.array(runner.contract.output_scale) + 1e-9
    for i, window in enumerate(held_out.x):
        runner.reset()
        for row in window.reshape(h, n):
            runner.observe(dict(zip(held_out.input_signals, row.tolist())))
        out = runner.infer()
        diff = np.abs(out.action - torch_action[i])
        if not (out.finite and np.all(diff <= tolerance)):
            raise RuntimeError(f"PolicyRunner disagrees with torch on held-out sample {i}: max diff {diff.max():.3g}")
        worst = max(worst, float(diff.max()))
        flagged += bool(out.out_of_envelope)
        by_signal.update(out.out_of_envelope)
    return worst, flagged / max(len(held_out), 1), dict(by_signal.most_common())


def model_card(s: dict, contract: ModelContract) -> str:
    rows = "\n".join(
        f"| {mv}{' (DCS constant)' if f['dcs_constant_in_training'] else ''} | {f['unit']} | {f['mae']:.4g} | "
        f"{f['mae_hold_last']:.4g} | {f['spread_mean']:.3g} | "
        f"{f['spread_p95']:.3g} | {f['spread_max']:.3g} |" for mv, f in s["per_mv"].items())
    return f"""# Model card: {s['model_id']}

**What it is.** A bootstrap policy for the boiler-ai daemon: behaviour cloning of the reference unit's
DCS. It predicts, for each of the {len(contract.action_names)} manipulated variables, the DCS's own setpoint
one cycle ahead, from the last {s['history']} cycles of {s['inputs']} signals. It imitates the DCS and is
not expected to improve combustion; it exists so the whole edge path (contract, history, ensemble spread,
training envelope, projector, guard, handshake) runs with a real model until a trained policy replaces it.
Do not promote it past shadow mode on a real unit: it has only seen the simulator.

| | |
|---|---|
| file | `policy.onnx`, {s['onnx_bytes']} bytes |
| sha256 (pin this in the daemon config) | `{s['policy_sha256']}` |
| algorithm | {contract.algorithm} |
| seed | {s['seed']} |
| epochs / final training loss (normalised moves, MSE) | {s['epochs']} / {s['final_train_loss']:.4g} |
| dataset sha256 | `{s['dataset_sha256']}` |
| created (UTC) | {s['created_utc']} |
| code commit | `{s['code_commit']}` |
| contract | version {contract.contract_version}, input `{contract.input_name}` [batch, {contract.input_width}], \
outputs `{contract.action_output}` and `{contract.spread_output}` [batch, {contract.n_actions}] |

## Data
{s['data']}

Training samples: {s['train_samples']}; held-out samples: {s['held_out_samples']}. The training envelope in
the contract is the per-signal [min, max] over the training samples.

## Evaluation on the held-out scenario
Mean absolute error of the ensemble's setpoint against the DCS's actual next setpoint, beside the
trivial "hold the last setpoint" predictor; ensemble spread (std across members) in engineering units.
"(DCS constant)": the DCS never moved this setpoint in the training data, so there is nothing to learn.

| MV | unit | MAE | MAE hold-last | spread mean | spread p95 | spread max |
|---|---|---|---|---|---|---|
{rows}

Share of held-out cycles with some input outside the training envelope (the runner's default 5 %
margin), where the daemon holds or releases: {s['held_out_cycles_out_of_envelope']:.3f}; cycles per
signal: {', '.join(f'{k} {v}' for k, v in s['held_out_out_of_envelope_by_signal'].items()) or 'none'}.
Edge check: the held-out windows replayed through `PolicyRunner` (ONNX Runtime, edge session settings)
match torch within {s['runner_vs_torch_max_abs']:.2g} (engineering units).

## Reproduce
`python -m training.bootstrap_bc --out <dir> --seed {s['seed']}` (see training/README.md). The weights are
deterministic for a seed; the file's sha256 also covers the creation time and the code commit
(set SOURCE_DATE_EPOCH to fix the time).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "bootstrap-bc-v1")
    parser.add_argument("--model-id", default="bootstrap-bc-v1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=None,
                        help="cap on simulated seconds per episode (default: each scenario's full length)")
    parser.add_argument("--epochs", type=int, default=EnsembleSpec.epochs)
    parser.add_argument("--members", type=int, default=EnsembleSpec.members)
    parser.add_argument("--hidden", type=int, default=EnsembleSpec.hidden)
    parser.add_argument("--history", type=int, default=3, help="cycles stacked into one model input")
    parser.add_argument("--cycle-s", type=float, default=1.0, help="the daemon's cycle period")
    args = parser.parse_args(argv)
    spec = EnsembleSpec(args.epochs, args.members, args.hidden)
    if not math.isfinite(args.cycle_s) or args.cycle_s <= 0:
        parser.error("--cycle-s must be > 0")

    tag_map = load_tag_map(TAG_MAP)
    inputs = observation_signals(tag_map)
    targets = {name: mv.dcs_setpoint for name, mv in tag_map.manipulated.items()}

    def episodes(plan: list[tuple[str, int]]) -> Dataset:
        parts = []
        for k, (scenario, seed) in enumerate(plan):
            t0 = time.perf_counter()
            rows = simulated_rows(scenario, seed, args.seconds, args.cycle_s)
            parts.append(build_dataset(rows, input_signals=inputs, targets=targets, history=args.history, source=k))
            print(f"simulated {scenario!r} seed {seed}: {len(parts[-1])} samples in {time.perf_counter() - t0:.1f} s")
        return concat(parts)

    # the run's seed also shifts the simulation seeds, so another seed is another data set too
    train_plan = [(scenario, args.seed * 100 + k) for scenario, k in TRAIN_PLAN]
    held_plan = [(scenario, args.seed * 100 + k) for scenario, k in HELD_OUT_PLAN]
    length = "each scenario's full length" if args.seconds is None else f"at most {args.seconds:g} s per episode"
    note = (f"Simulated reference unit (`boiler_ai.sim.unit.ReferenceUnit`, scenarios of `boiler_ai.sim.scenario`) "
            f"under its DCS alone, one row per {args.cycle_s:g} s cycle, {length}. Training episodes "
            f"(scenario, seed): {', '.join(f'{s} {k}' for s, k in train_plan)}. Held out: "
            f"{', '.join(f'{s} {k}' for s, k in held_plan)}.")
    summary = fit_and_export(episodes(train_plan), episodes(held_plan), tag_map=tag_map, out_dir=args.out,
                             model_id=args.model_id, seed=args.seed, spec=spec, cycle_period_s=args.cycle_s,
                             data_note=note)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
