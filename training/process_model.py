"""Stage 2, process model: an ensemble of next-step models of the controlled outputs, from the history alone.

    python -m training.process_model --history runs/history --out runs/process_model --seed 0

One step is `--step-s` of plant time (default 60 s). Each member predicts every output's change over
the step from the outputs now, the manipulated variables' setpoints in force now and one step ago, and the
unit's operating conditions (load, steam flow and pressure, total coal, mills in service, ambient). The
setpoint in force is the AI's while AI mode was active in the log and the DCS's otherwise, so a log of
shadow or closed-loop operation trains it the same way. Members are trained on their own bootstrap draws,
so their spread says where the data is thin. Beside the ensemble, `settled_response.json`: the slow, settled
effect of the MVs on NOx, excess O2, total air, the efficiency tag and hot reheat from the step tests and
standing trims (training.settled_response), which the policy stage's rollouts use for those outputs.

Held out: every fifth episode (other days, other seeds), never random cycles of the training days.
Reported per output: mean absolute error against the persistence forecast (no change), and calibration
of the spread: the share of held-out errors inside 1 and 2 spreads (a calibrated Gaussian: 68 % and 95 %),
and `spread_scale`, the factor that makes the 1-spread share 68 % (the policy stage scales by it).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from boiler_ai.control.envelope import load_envelope
from boiler_ai.strict import ConfigError
from boiler_ai.tagmap import TagMap, load_tag_map
from training.ensemble import ResidualMLPEnsemble, predict, train_ensemble
from training.history import History, read_history
from training.settled_response import NOX, REHEAT, fit_settled_response
from training.stages import Artefacts, read_stage, sha256_file, stage_parser

ROOT = Path(__file__).resolve().parent.parent
TAG_MAP = ROOT / "opc" / "reference_unit.yaml"
ENVELOPE = ROOT / "constraints" / "reference_unit.yaml"
SETTLED_FILE = "settled_response.json"  # training.settled_response, beside the ensemble
# The controlled outputs of the reference unit (tag-map names); another unit names its own with --outputs.
OUTPUTS = ("o2_economiser_pct", "co_ppm", "nox_mg_nm3", "airheater_exit_gas_temp_c", "carbon_in_fly_ash_pct",
           "main_steam_temp_c", "reheat_steam_temp_c", "sh_spray_1_flow_tph", "sh_spray_2_flow_tph",
           "rh_spray_flow_tph", "boiler_efficiency_pct", "total_air_flow_tph")
# Operating conditions the AI does not set: read as logged, also in the policy stage's model rollouts.
CONDITIONS = ("unit_load_demand_mw", "unit_load_mw", "main_steam_flow_tph", "main_steam_pressure_mpa",
              "ambient_temp_c")
TOTAL_COAL = "total_coal_tph"  # derived: the sum of the mills' coal flows (the boiler master's fuel)
HELD_OUT_EVERY = 5


@dataclass(frozen=True)
class Layout:
    """Which columns the model reads and predicts, by tag-map name."""

    outputs: tuple[str, ...]
    mvs: tuple[str, ...]  # manipulated variables (tag-map `manipulated`, in order)
    conditions: tuple[str, ...]  # incl. the mills in service and the derived total coal

    @property
    def inputs(self) -> tuple[str, ...]:
        return (*self.outputs, *self.mvs, *(f"{mv}@prev" for mv in self.mvs), *self.conditions)

    def to_json(self) -> dict:
        return {"outputs": list(self.outputs), "mvs": list(self.mvs), "conditions": list(self.conditions)}


def layout_for(tag_map: TagMap, outputs: tuple[str, ...]) -> Layout:
    missing = [s for s in outputs if s not in tag_map.signals]
    if missing:
        raise ConfigError("command line", "--outputs",
                          f"{missing[0]!r} is not a signal of the tag map {tag_map.source}")
    mills = tuple(s for s in tag_map.signals if s.endswith("_in_service"))
    return Layout(tuple(outputs), tuple(tag_map.manipulated), (*CONDITIONS, *mills, TOTAL_COAL))


def frame(history: History, layout: Layout, tag_map: TagMap) -> dict[str, np.ndarray]:
    """Columns by name: the outputs and conditions as logged, each MV's setpoint in force, total coal."""
    cols = {name: history.column(name) for name in (*layout.outputs, *layout.conditions) if name != TOTAL_COAL}
    flows = [s for s in history.signals if s.startswith("mill_") and s.endswith("_coal_flow_tph")]
    cols[TOTAL_COAL] = np.sum([history.column(s) for s in flows], axis=0)
    active = history.column(tag_map.handshake["ai_active"]) > 0.5 if "ai_active" in tag_map.handshake else False
    for mv in layout.mvs:
        spec = tag_map.manipulated[mv]
        cols[mv] = np.where(active, history.column(spec.ai_setpoint), history.column(spec.dcs_setpoint))
    return cols


def held_out_rows(history: History) -> np.ndarray:
    """Every fifth episode (other days, other seeds); in a one-episode run, its last fifth."""
    held = history.episode % HELD_OUT_EVERY == HELD_OUT_EVERY - 1
    if held.all() or not held.any():
        held = np.arange(len(held)) >= int(0.8 * len(held))
    return held


def samples(history: History, cols: dict[str, np.ndarray], layout: Layout, k: int,
            rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y_next, row index) for every row i with rows i-k, i, i+k in the same episode and all finite."""
    n = len(history.episode)
    base = np.arange(k, n - k) if rows is None else rows
    ep = history.episode
    ok = (ep[base - k] == ep[base]) & (ep[base + k] == ep[base])
    base = base[ok]
    x = np.column_stack([*(cols[o][base] for o in layout.outputs), *(cols[m][base] for m in layout.mvs),
                         *(cols[m][base - k] for m in layout.mvs), *(cols[c][base] for c in layout.conditions)])
    y = np.column_stack([cols[o][base + k] for o in layout.outputs])
    good = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    return x[good], y[good], base[good]


class ProcessModel:
    """The trained ensemble with its scaling, in engineering units in and out."""

    def __init__(self, net: ResidualMLPEnsemble, layout: Layout, x_offset: np.ndarray, x_scale: np.ndarray,
                 step_s: float, spread_scale: np.ndarray):
        self.net, self.layout = net, layout
        self.x_offset, self.x_scale = x_offset.astype(np.float32), x_scale.astype(np.float32)
        self.step_s = step_s
        self.spread_scale = spread_scale  # per output: calibrates the members' std to the held-out errors
        n_out = len(layout.outputs)
        self._y_offset, self._y_scale = self.x_offset[:n_out], self.x_scale[:n_out]

    def members(self, x: np.ndarray) -> np.ndarray:
        """Every member's next outputs [K, B, n_out], engineering units."""
        xs = torch.as_tensor((x - self.x_offset) / self.x_scale, dtype=torch.float32)
        with torch.no_grad():
            nxt = xs[:, self.net.residual_cols] + self.net.moves(xs) * self.net.move_scale
        return nxt.numpy() * self._y_scale + self._y_offset

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean next outputs, calibrated spread), engineering units."""
        m = self.members(x)
        return m.mean(axis=0), m.std(axis=0) * self.spread_scale

    def save(self, path: Path) -> None:
        torch.save({"state": self.net.state_dict(), "layout": self.layout.to_json(), "x_offset": self.x_offset,
                    "x_scale": self.x_scale, "step_s": self.step_s, "spread_scale": self.spread_scale,
                    "members": self.net.members, "hidden": self.net.w1.shape[2]}, path)

    @classmethod
    def load(cls, path: Path) -> ProcessModel:
        blob = torch.load(path, weights_only=False)
        layout = Layout(*(tuple(blob["layout"][k]) for k in ("outputs", "mvs", "conditions")))
        n_in, n_out = len(layout.inputs), len(layout.outputs)
        net = ResidualMLPEnsemble(n_in, n_out, list(range(n_out)), [1.0] * n_out, members=blob["members"],
                                  hidden=blob["hidden"])
        net.load_state_dict(blob["state"])
        net.eval()
        return cls(net, layout, blob["x_offset"], blob["x_scale"], blob["step_s"], blob["spread_scale"])


def fit(history: History, layout: Layout, tag_map: TagMap, *, step_s: float, seed: int, members: int, hidden: int,
        epochs: int, stride: int, art: Artefacts | None = None, progress=None) -> tuple[ProcessModel, dict]:
    k = max(1, round(step_s / history.cycle_s))
    cols = frame(history, layout, tag_map)
    held = held_out_rows(history)
    rows = np.arange(k, len(history.episode) - k)
    x_tr, y_tr, _ = samples(history, cols, layout, k, rows[~held[rows]][::stride])
    x_te, y_te, _ = samples(history, cols, layout, k, rows[held[rows]])
    if len(x_tr) < 10 or len(x_te) < 10:
        raise ConfigError("history", "", f"too little data: {len(x_tr)} training and {len(x_te)} held-out samples")
    n_out = len(layout.outputs)
    offset, scale = x_tr.mean(axis=0), x_tr.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    # an MV's input one step ago is scaled like the MV now, so a held setpoint reads the same in both
    n_mv = len(layout.mvs)
    offset[n_out + n_mv:n_out + 2 * n_mv], scale[n_out + n_mv:n_out + 2 * n_mv] = (
        offset[n_out:n_out + n_mv], scale[n_out:n_out + n_mv])
    xs_tr = ((x_tr - offset) / scale).astype(np.float32)
    ys_tr = ((y_tr - offset[:n_out]) / scale[:n_out]).astype(np.float32)
    move_std = np.maximum((ys_tr - xs_tr[:, :n_out]).std(axis=0), 1e-3)
    torch.manual_seed(seed)
    net = ResidualMLPEnsemble(xs_tr.shape[1], n_out, list(range(n_out)), move_std, members=members, hidden=hidden)

    def on_epoch(epoch: int, loss: float) -> None:
        if art is not None:
            art.loss(epoch=epoch, train_mse=round(loss, 6))
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss:.4f}")

    losses = train_ensemble(net, xs_tr, ys_tr, epochs=epochs, seed=seed, on_epoch=on_epoch)
    # calibration of the spread on the held-out episodes
    xs_te = ((x_te - offset) / scale).astype(np.float32)
    mean, spread = predict(net, xs_te)
    err = (mean - (y_te - offset[:n_out]) / scale[:n_out]) * scale[:n_out]
    spread = spread * scale[:n_out]
    z = np.abs(err) / np.maximum(spread, 1e-9)
    spread_scale = np.maximum(np.quantile(z, 0.683, axis=0), 1e-3)
    persistence = np.abs(x_te[:, :n_out] - y_te)
    per_output = {}
    for j, name in enumerate(layout.outputs):
        unit = tag_map.signals[name].unit
        per_output[name] = {
            "unit": unit, "mae": _r(np.mean(np.abs(err[:, j]))), "mae_persistence": _r(np.mean(persistence[:, j])),
            "skill": _r(1.0 - np.mean(np.abs(err[:, j])) / max(np.mean(persistence[:, j]), 1e-12)),
            "spread_mean": _r(np.mean(spread[:, j])),
            "within_1_spread": _r(np.mean(z[:, j] <= 1.0)), "within_2_spread": _r(np.mean(z[:, j] <= 2.0)),
            "spread_error_corr": _r(np.corrcoef(spread[:, j], np.abs(err[:, j]))[0, 1]) if len(err) > 2 else None,
            "spread_scale": _r(spread_scale[j]),
        }
    model = ProcessModel(net, layout, offset, scale, float(k * history.cycle_s), spread_scale)
    figures = {"train_samples": len(x_tr), "held_out_samples": len(x_te), "step_s": model.step_s,
               "final_train_mse": _r(losses[-1]), "per_output": per_output}
    return model, figures


def _r(v: float) -> float:
    return round(float(v), 5)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, "history")
    parser.add_argument("--tag-map", type=Path, default=TAG_MAP)
    parser.add_argument("--envelope", type=Path, default=ENVELOPE,
                        help="the unit's envelope: its allowed deviations tell a step test from a schedule's move")
    parser.add_argument("--outputs", default=",".join(OUTPUTS), help="comma-separated tag-map names to predict")
    parser.add_argument("--step-s", type=float, default=60.0, help="plant time per model step (default 60 s)")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--stride", type=int, default=2, help="use every N-th training row (neighbours are alike)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.step_s) and args.step_s > 0) or min(args.members, args.epochs, args.stride) < 1:
        raise ConfigError("command line", "--step-s/--members/--epochs/--stride", "must be positive")
    from tqdm import tqdm

    torch.set_num_threads(1)
    _, hist_metrics = read_stage(args.history, "history")
    tag_map = load_tag_map(args.tag_map)
    envelope = load_envelope(args.envelope, tag_map)
    layout = layout_for(tag_map, tuple(s for s in args.outputs.split(",") if s))
    art = Artefacts(args.out, "process_model", {"seed": args.seed, "history": str(args.history),
                                                "history_sha256": hist_metrics["data_sha256"], "step_s": args.step_s,
                                                "members": args.members, "hidden": args.hidden, "epochs": args.epochs,
                                                "stride": args.stride, "layout": layout.to_json()})
    started = time.perf_counter()
    history = read_history(args.history)
    with tqdm(total=args.epochs, unit="epoch", file=sys.stderr, desc="process model") as bar:
        model, figures = fit(history, layout, tag_map, step_s=args.step_s, seed=args.seed, members=args.members,
                             hidden=args.hidden, epochs=args.epochs, stride=args.stride, art=art, progress=bar)
    path = args.out / "process_model.pt"
    model.save(path)
    settled_figures = None  # a unit whose outputs leave out NOx or hot reheat: the ensemble alone
    if {NOX, REHEAT} <= set(layout.outputs):
        settled, settled_figures = fit_settled_response(
            history, frame(history, layout, tag_map), layout.mvs, layout.conditions,
            np.array([envelope.max_dev[envelope.mv_names.index(mv)] for mv in layout.mvs]), held_out_rows(history))
        (args.out / SETTLED_FILE).write_text(json.dumps(settled.to_json(), indent=2) + "\n")
    metrics = art.finish({"data_sha256": sha256_file(path), "history_sha256": hist_metrics["data_sha256"],
                          **figures, "settled_response": settled_figures,
                          "wall_s": round(time.perf_counter() - started, 1)})
    _print_table(figures)
    print(f"settled response: {json.dumps(settled_figures)}")
    print(json.dumps(metrics))
    return 0


def _print_table(figures: dict) -> None:
    print(f"{'output':28}{'unit':>8}{'MAE':>10}{'persist.':>10}{'skill':>8}{'in 1 sd':>9}{'in 2 sd':>9}")
    for name, f in figures["per_output"].items():
        print(f"{name:28}{f['unit']:>8}{f['mae']:>10.4g}{f['mae_persistence']:>10.4g}{f['skill']:>8.2f}"
              f"{f['within_1_spread']:>9.2f}{f['within_2_spread']:>9.2f}")


if __name__ == "__main__":
    from training.stages import run_command

    run_command(main, "training.process_model")
