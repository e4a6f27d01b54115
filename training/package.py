"""Stage 4, package: the learned policy as an ONNX model with the full model contract, and its model card.

    python -m training.package --history runs/history --policy runs/policy --out runs/package --seed 0

The policy stage's actor (a d3rlpy network: its own ONNX export does not run on this torch) is distilled
into the edge's residual MLP ensemble (training/ensemble.py): K members, each on its own bootstrap draws
of the history's training rows, learn the actor's absolute setpoints (the DCS setpoint plus the actor's
offset times the allowed deviation). The members' disagreement is the contract's ensemble spread, so the
daemon holds or releases where the learned policy is not pinned down; the training envelope is the
history's range of every input. Exported by training/export.py (checked against torch in ONNX Runtime),
then every held-out row is replayed through the edge's PolicyRunner. Writes policy.onnx, MODEL_CARD.md
and MODEL_CARD.json (training figures of every stage; `boiler-ai promote` adds the evaluation).
"""

from __future__ import annotations

import json
import logging
import sys
import time

import numpy as np

from boiler_ai.control.envelope import load_envelope
from boiler_ai.control.model_contract import ModelContract
from boiler_ai.strict import ConfigError
from boiler_ai.tagmap import load_tag_map
from training.bootstrap_bc import EnsembleSpec, fit_and_export
from training.history import read_history
from training.policy import actor_offsets
from training.policy_dataset import Dataset
from training.process_model import HELD_OUT_EVERY
from training.stages import Artefacts, read_stage, stage_parser


def distillation_data(history, tag_map, envelope, algo, obs_signals: tuple[str, ...], stride: int,
                      held_mvs: list[str]) -> tuple[Dataset, Dataset]:
    """(train, held-out) rows of the history with the actor's absolute setpoints as targets."""
    movable = np.array([mv not in held_mvs for mv in envelope.mv_names])
    mvs = tuple(tag_map.manipulated)
    bands = np.asarray(envelope.max_dev, dtype=float)
    x = np.column_stack([history.column(s) for s in obs_signals])
    good = np.isfinite(x).all(axis=1)
    held = history.episode % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    if held.all() or not held.any():
        held = np.arange(len(held)) >= int(0.8 * len(held))
    dcs = [obs_signals.index(tag_map.manipulated[mv].dcs_setpoint) for mv in mvs]

    def part(mask: np.ndarray, source: int) -> Dataset:
        rows = np.flatnonzero(mask & good)[::stride]
        obs = x[rows]
        y = obs[:, dcs] + actor_offsets(algo, obs, movable) * bands
        return Dataset(obs_signals, mvs, 1, 1, np.ascontiguousarray(obs), np.ascontiguousarray(y),
                       np.full(len(rows), source, dtype=np.int64))

    return part(~held, 0), part(held, 1)


def card_md(figures: dict):
    """The model card's Markdown, from the figures of every stage (history, process model, policy, export)."""

    def write(summary: dict, contract: ModelContract) -> str:
        h, pm, pol = figures["history"], figures["process_model"], figures["policy"]
        outputs = "\n".join(f"| {name} | {f['unit']} | {f['mae']:.4g} | {f['mae_persistence']:.4g} | "
                            f"{f['within_1_spread']:.2f} | {f['within_2_spread']:.2f} | {f['spread_scale']:.3g} |"
                            for name, f in pm["per_output"].items())
        rounds = "\n".join(f"| {r['round']} | {r['lambda']} | {r['model_reward']} | {r['model_cost']} | "
                           f"{r.get('env_reward', '-')} | {r.get('env_cost', '-')} | {r.get('env_ai_active', '-')} |"
                           for r in pol["rounds"])
        mvs = "\n".join(f"| {mv} | {f['unit']} | {f['mae']:.4g} | {f['spread_mean']:.3g} | {f['spread_p95']:.3g} |"
                        for mv, f in summary["per_mv"].items())
        return f"""# Model card: {summary['model_id']}

**What it is.** A combustion-optimisation policy for the boiler-ai daemon learned offline from logged
operation of the simulated reference unit (the DCS plus operators' step tests), by model-based offline RL
(training/README.md). It asks, for each of the {contract.n_actions} manipulated variables, for an absolute
setpoint: the DCS's own setpoint plus a learned offset. It has only seen the simulator: shadow mode first
on any real unit. Whether it beats the DCS is decided by `boiler-ai evaluate` on held-out seeds and the
promotion gate (`boiler-ai promote`), whose figures are added to this card when it is promoted.

| | |
|---|---|
| file | `policy.onnx`, {summary['onnx_bytes']} bytes |
| sha256 (pin this in the daemon config) | `{summary['policy_sha256']}` |
| algorithm | {contract.algorithm} |
| seed | {summary['seed']} |
| dataset sha256 (the history) | `{contract.dataset_sha256}` |
| created (UTC) / code commit | {contract.created_utc} / `{contract.code_commit}` |
| contract | input `{contract.input_name}` [batch, {contract.input_width}] (history {contract.history_length}, \
cycle {contract.cycle_period_s:g} s), outputs `{contract.action_output}` and `{contract.spread_output}` |

## Data (stage 1, history)
{h['simulated_hours']} simulated hours in {h['episodes']} episodes ({h['rows']} logged cycles), {h['step_tests']}
step tests, {h['operator_changes']} operator O2 trims and {h.get('mill_trips', 0)} mill trips, logged by the daemon
in observe mode and exported with `boiler-ai export`. History sha256 `{h['data_sha256']}`.

## Process model (stage 2)
Ensemble next-step models, step {pm['step_s']:g} s, {pm['train_samples']} training and
{pm['held_out_samples']} held-out samples (every fifth episode held out). Held-out mean absolute error
beside persistence, share of errors within one and two ensemble spreads, and the calibration factor:

| output | unit | MAE | MAE persistence | within 1 spread | within 2 spreads | spread scale |
|---|---|---|---|---|---|---|
{outputs}

## Policy (stage 3)
{pol['transitions']} transitions from {pol['start_states']} start states; candidates {pol['candidates']}.
Per Lagrangian round: multiplier, the actor's mean reward and cost on the process model (% heat rate,
cost beyond the DCS's), and in closed loop through the real core on training seeds (reward, cost, share
of time in AI mode). Kept round: {pol['kept_round']}.

| round | lambda | model reward | model cost | closed-loop reward | closed-loop cost | AI mode |
|---|---|---|---|---|---|---|
{rounds}

## Distilled ensemble (stage 4)
{summary['train_samples']} training rows, {summary['held_out_samples']} held-out rows. Held-out error of the
ensemble against the actor's setpoints and the ensemble's spread (engineering units):

| MV | unit | MAE vs actor | spread mean | spread p95 |
|---|---|---|---|---|
{mvs}

Held-out rows with an input outside the training envelope (5 % margin): \
{summary['held_out_cycles_out_of_envelope']:.3f}. PolicyRunner matches torch within \
{summary['runner_vs_torch_max_abs']:.2g}.
"""
    return write


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, "history", "process-model", "policy")
    parser.add_argument("--model-id", default="offline-rl-v6")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--stride", type=int, default=3, help="use every N-th history row")
    parser.add_argument("--cycle-s", type=float, default=1.0, help="the daemon's cycle period")
    args = parser.parse_args(argv)
    if min(args.members, args.hidden, args.epochs, args.stride) < 1:
        raise ConfigError("command line", "--members/--hidden/--epochs/--stride", "must be >= 1")
    import d3rlpy
    import structlog
    import torch

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    torch.set_num_threads(1)
    _, hist = read_stage(args.history, "history")
    _, pm = read_stage(args.process_model, "process_model")
    pol_config, pol = read_stage(args.policy, "policy")
    if pol["history_sha256"] != hist["data_sha256"] or pol["process_model_sha256"] != pm["data_sha256"]:
        raise ConfigError(args.policy, "history_sha256", "this policy was trained on another history or process model")
    art = Artefacts(args.out, "package", {"seed": args.seed, "model_id": args.model_id, "members": args.members,
                                          "hidden": args.hidden, "epochs": args.epochs, "stride": args.stride,
                                          "history": str(args.history), "policy": str(args.policy),
                                          "policy_sha256": pol["data_sha256"]})
    started = time.perf_counter()
    tag_map = load_tag_map(pol_config["tag_map"])
    envelope = load_envelope(pol_config["envelope"], tag_map)
    algo = d3rlpy.load_learnable(str(args.policy / "policy.d3"))
    obs_signals = tuple(str(s) for s in np.load(args.policy / "rollouts.npz")["obs_signals"])
    train, held_out = distillation_data(read_history(args.history), tag_map, envelope, algo, obs_signals,
                                        args.stride, pol["held_mvs"])
    figures = {"history": hist, "process_model": pm, "policy": pol}
    from tqdm import tqdm

    bar = tqdm(total=args.epochs, desc="distilling", unit="epoch", file=sys.stderr)

    def on_epoch(epoch: int, loss: float) -> None:
        art.loss(epoch=epoch, distillation_mse=round(loss, 6))
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    summary = fit_and_export(
        train, held_out, tag_map=tag_map, out_dir=args.out, model_id=args.model_id, seed=args.seed,
        spec=EnsembleSpec(args.epochs, args.members, args.hidden), cycle_period_s=args.cycle_s,
        data_note="", log=lambda line: print(line, file=sys.stderr),
        algorithm=f"{pol['algorithm']}; distilled into a residual MLP ensemble {args.members}x(2x{args.hidden})",
        dataset_sha256=hist["data_sha256"], card=card_md(figures), on_epoch=on_epoch)
    bar.close()
    card = {"model_id": args.model_id, "policy_sha256": summary["policy_sha256"], "export": summary, **figures}
    (args.out / "MODEL_CARD.json").write_text(json.dumps(card, indent=2) + "\n")
    metrics = art.finish({"data_sha256": summary["policy_sha256"], "model_id": args.model_id,
                          "policy_sha256": summary["policy_sha256"], "history_sha256": hist["data_sha256"],
                          "distillation_final_loss": summary["final_train_loss"],
                          "held_out_out_of_envelope": summary["held_out_cycles_out_of_envelope"],
                          "wall_s": round(time.perf_counter() - started, 1)})
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    from training.stages import run_command

    run_command(main, "training.package")
