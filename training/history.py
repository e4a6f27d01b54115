"""Stage 1, history: simulated operation as a plant would log it, through the daemon's own decision record.

    python -m training.history --out runs/history --days 20 --seed 0

Each episode is one scenario of the standard set on a training seed (boiler_ai.sim.scenario.TRAIN_SEEDS,
never a held-out one), run by `boiler-ai run`'s daemon in observe mode on the stepped plant: the DCS
alone in control, every cycle validated and written to a durable decision log, which `boiler-ai export`
turns into `episodes/NNN.parquet` (its `wall_time` column is plant time: the stepped plant's clock).
The DCS is run as operators run it: besides its normal loops, a scripted test schedule moves its own
setpoints (never the AI's) inside the envelope: step tests of the O2 bias, of each secondary-air and
over-fire-air damper and of feeder-bias shifts between two mills, held 10-15 minutes, one to three at a
time, and standing operator changes of the O2 bias every few hours. Those excursions are what the
process model learns the levers' effects from; under the DCS alone they never move. Mills also trip, about
once a day (`MILL_TRIP_EVERY_S`), so the log has the reserve mill in service across loads and coals: the
runtime holds, then releases, a model whose inputs leave what it was trained on.

The reader (`read_history`) gives the learner tag-map signals only: the columns of the export.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from boiler_ai.strict import ConfigError
from training.stages import Artefacts, read_stage, sha256_file, stage_parser

ROOT = Path(__file__).resolve().parent.parent
BASE_CONFIG = ROOT / "deploy" / "examples" / "reference_unit.yaml"
# Which standard scenarios the days are made of, in turn: dispatch days, a hot summer, fouling, nights,
# a coal switch and a mill trip (the scenario set evaluation uses, on other seeds).
PLAN = ("agc_day_24h", "hot_summer_day", "fouling_drift", "low_load_night", "coal_switch", "mill_trip")
STEP_HOLD_S = (600.0, 900.0)  # a step test is held 10-15 minutes
STEP_GAP_S = (300.0, 1200.0)  # then the unit settles 5-20 minutes on the DCS's own setpoints
STEP_SIZE = (0.3, 1.0)  # of the MV's allowed deviation from the DCS (max_deviation_from_dcs): up to its edge
OPERATOR_O2_EVERY_S = (4 * 3600.0, 8 * 3600.0)  # how often the operator re-trims the O2 bias
OPERATOR_O2_SIZE = 0.4  # of the O2 bias's allowed deviation, either way
# A mill trips (a choke, a feeder fault, a flame-scanner trip) about once a day of operation; the DCS starts the
# reserve mill and the tripped one stays out for the episode. Without these, the reserve mill ran only after the
# one trip of each mill_trip episode (six in 20 days): offline-rl-v4 met mill F at 60 t/h on held-out seed 9001,
# outside its training envelope (56 t/h), and released.
MILL_TRIP_EVERY_S = 24 * 3600.0


@dataclass(frozen=True)
class Change:
    """At plant time t the operator sets the DCS-side bias of `mv` to `value` (why: step_test or operator), or a
    mill trips (why and mv: mill_trip; value: which of the mills then in service, counted from the first)."""

    t: float
    mv: str
    value: float
    why: str


def excursion_schedule(duration_s: float, bands: dict[str, float], seed: int) -> list[Change]:
    """The excursions of one episode, deterministic for its seed. `bands`: MV -> the largest move allowed
    from the DCS's setpoint (only MVs the DCS has an operator bias for: feeder biases, dampers, O2 bias)."""
    rng = np.random.default_rng([seed, 14])
    feeders = [mv for mv in bands if mv.startswith("feeder_")]
    singles = [mv for mv in bands if not mv.startswith("feeder_")]
    changes: list[Change] = []
    t = float(rng.uniform(*STEP_GAP_S))
    while t < duration_s:
        hold = float(rng.uniform(*STEP_HOLD_S))
        moves: dict[str, float] = {}
        for _ in range(int(rng.choice([1, 1, 2, 3]))):
            if feeders and rng.random() < 0.3:  # a shift of coal between two feeders (their sum is kept)
                up, down = rng.choice(feeders, 2, replace=False)
                size = float(rng.uniform(*STEP_SIZE)) * min(bands[up], bands[down])
                moves[str(up)], moves[str(down)] = size, -size
            elif singles:
                mv = str(rng.choice(singles))
                moves[mv] = float(rng.choice([-1.0, 1.0]) * rng.uniform(*STEP_SIZE) * bands[mv])
        for mv, value in moves.items():
            changes += [Change(t, mv, value, "step_test"), Change(t + hold, mv, 0.0, "step_test")]
        t += hold + float(rng.uniform(*STEP_GAP_S))
    o2 = "o2_setpoint_bias_pct"
    if o2 in bands:
        t = float(rng.uniform(*OPERATOR_O2_EVERY_S))
        while t < duration_s:
            changes.append(Change(t, "operator_o2_trim", float(rng.uniform(-1, 1) * OPERATOR_O2_SIZE * bands[o2]),
                                  "operator"))
            t += float(rng.uniform(*OPERATOR_O2_EVERY_S))
    trips = np.random.default_rng([seed, 15])  # its own stream: the step tests stay those of the same seed
    t = float(trips.exponential(MILL_TRIP_EVERY_S))
    while t < duration_s:
        changes.append(Change(t, "mill_trip", float(trips.integers(0, 6)), "mill_trip"))
        t += float(trips.exponential(MILL_TRIP_EVERY_S))
    return sorted(changes, key=lambda c: c.t)


class OperatedUnit:
    """The simulated unit with its operators: before each step, the schedule's due changes are made on the
    DCS faceplate (the DCS's own operator biases). The daemon sees only what the tag map serves."""

    def __init__(self, unit, changes: list[Change], progress=None):
        from boiler_ai.sim.dcs import MV_NAMES

        self.unit = unit
        self._changes = changes
        self._next = 0
        self._progress = progress
        self._index = {mv: MV_NAMES.index(mv) for mv in MV_NAMES}
        self._test_o2 = 0.0  # the O2 bias of a running step test, on top of the operator's trim
        self._trim_o2 = 0.0

    @property
    def t(self) -> float:
        return self.unit.t

    def values(self) -> dict[str, float]:
        return self.unit.values()

    def write(self, signal: str, value: float) -> None:
        self.unit.write(signal, value)

    def step(self, dt: float) -> None:
        while self._next < len(self._changes) and self._changes[self._next].t <= self.unit.t:
            self._apply(self._changes[self._next])
            self._next += 1
        self.unit.step(dt)
        if self._progress is not None:
            self._progress.update(dt)

    def _apply(self, change: Change) -> None:
        from boiler_ai.sim.dcs import I_SA

        dcs = self.unit.dcs
        if change.mv == "mill_trip":
            from boiler_ai.sim.mills import MILLS

            running = [m for m, on in zip(MILLS, self.unit.mills.in_service) if on]
            if running:
                self.unit.inject("mill_trip", running[int(change.value) % len(running)])
            return
        if change.mv == "operator_o2_trim":
            self._trim_o2 = change.value
        elif change.mv == "o2_setpoint_bias_pct":
            self._test_o2 = change.value
        else:
            i = self._index[change.mv]
            if i < I_SA:
                dcs.operator_feeder_bias[i] = change.value
            else:
                dcs.operator_damper_bias[i - I_SA] = change.value
        dcs.operator_o2_bias = self._trim_o2 + self._test_o2  # the operator's standing trim plus any step test


def episode_plan(days: float, hours: float | None, seed: int) -> list[tuple[str, int, float]]:
    """(scenario, training seed, simulated seconds) per episode until the total reaches the days asked
    (or `hours`, for a small run: episodes are cut short to fit)."""
    from boiler_ai.sim.scenario import TRAIN_SEEDS, named_scenario

    total = (hours if hours is not None else days * 24.0) * 3600.0
    plan, done, k = [], 0.0, 0
    while done < total:
        name = PLAN[k % len(PLAN)]
        train_seed = TRAIN_SEEDS[(seed * 101 + k) % len(TRAIN_SEEDS)]
        seconds = min(named_scenario(name, train_seed).duration_s, total - done)
        plan.append((name, train_seed, seconds))
        done += seconds
        k += 1
    return plan


def daemon_config(folder: Path, scenario: str, seed: int, cycle_s: float) -> Path:
    """The example daemon config in observe mode on the stepped plant, its log in `folder/log` (the
    stepped daemon waits for the log's writer when it runs ahead, so no record is dropped). The log's path is
    absolute: the config resolves relative paths from its own folder, not from where the command runs."""
    cfg = yaml.safe_load(BASE_CONFIG.read_text())
    cfg.pop("model", None)
    cfg.update(tag_map=str(ROOT / "opc" / "reference_unit.yaml"),
               envelope=str(ROOT / "constraints" / "reference_unit.yaml"), mode="observe", cycle_period_s=cycle_s,
               plant={"kind": "stepped", "scenario": scenario, "seed": seed, "ai_enable": False},
               metrics={"listen": None}, host={"cpu_latency_limit_us": None}, log_level="warning")
    cfg["record"].update(log_dir=str((folder / "log").resolve()), publish_endpoint=None, catchup_endpoint=None,
                         fsync="never", retention_days=0, retention_max_mb=None)
    path = folder / "daemon.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_episode(folder: Path, scenario: str, seed: int, seconds: float, cycle_s: float, progress) -> dict:
    """One episode through the daemon (observe mode) into folder/log; return what the operators did."""
    from boiler_ai.config import load_config
    from boiler_ai.daemon import Pace, build_core, run_daemon
    from boiler_ai.plant.stepped import SteppedPlant
    from boiler_ai.sim.scenario import named_scenario
    from boiler_ai.sim.unit import ReferenceUnit

    cfg = load_config(daemon_config(folder, scenario, seed, cycle_s))
    core = build_core(cfg)
    env = core.envelope
    from boiler_ai.sim.dcs import I_SPRAY, MV_NAMES

    knobs = set(MV_NAMES[:I_SPRAY])  # MVs the DCS has an operator bias for (the sprays are PI loops)
    bands = {mv: float(dev) for mv, dev in zip(env.mv_names, env.max_dev) if mv in knobs}
    changes = excursion_schedule(seconds, bands, seed)
    unit = OperatedUnit(ReferenceUnit(named_scenario(scenario, seed), seed=seed, tag_map=core.tag_map), changes,
                        progress)
    plant = SteppedPlant(unit, core.tag_map, step_s=cycle_s)
    asyncio.run(run_daemon(core, plant, asyncio.Event(), max_cycles=round(seconds / cycle_s),
                           pace=Pace(plant.clock, 0.0)))
    return {"step_tests": sum(c.why == "step_test" and c.value != 0.0 for c in changes),
            "operator_changes": sum(c.why == "operator" for c in changes),
            "mill_trips": sum(c.why == "mill_trip" for c in changes)}


def export_log(log_dir: Path, out: Path) -> None:
    """`boiler-ai export` of one episode's log, as a plant engineer would run it."""
    done = subprocess.run([sys.executable, "-m", "boiler_ai", "export", str(log_dir), "-o", str(out)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ConfigError(log_dir, "", f"boiler-ai export failed: {done.stderr.strip()}")


# ── the reader ──────────────────────────────────────────────────────────────────────────────────

@dataclass(frozen=True)
class History:
    """Exported decision records, one row per cycle, episodes one after another."""

    signals: tuple[str, ...]  # tag-map names, column order of `values`
    values: np.ndarray  # [rows, signals] as read (NaN where absent or invalid)
    plant_time: np.ndarray  # [rows] plant time, s (the export's wall_time)
    episode: np.ndarray  # [rows] int
    cycle_s: float

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.signals.index(name)]


def read_history(folder: Path) -> History:
    """The history stage's episodes as one table of tag-map signals. Values that validation rejected
    that cycle are NaN, so no sample is built on them."""
    import pyarrow.parquet as pq

    config, _ = read_stage(folder, "history")
    files = sorted((Path(folder) / "episodes").glob("*.parquet"))
    if not files:
        raise ConfigError(folder, "episodes", "no exported episodes (*.parquet)")
    parts, times, episodes, signals = [], [], [], None
    for k, path in enumerate(files):
        table = pq.read_table(path)
        names = [c for c in table.column_names if f"{c}.valid" in table.column_names]
        if signals is None:
            signals = names
        elif names != signals:
            raise ConfigError(path, "", "its signals differ from the first episode's")
        values = np.column_stack([table[c].to_numpy(zero_copy_only=False).astype(float) for c in signals])
        valid = np.column_stack([table[f"{c}.valid"].to_numpy(zero_copy_only=False).astype(bool) for c in signals])
        values[~valid] = np.nan
        parts.append(values)
        times.append(table["wall_time"].to_numpy())
        episodes.append(np.full(len(values), k))
    return History(tuple(signals), np.concatenate(parts), np.concatenate(times), np.concatenate(episodes),
                   float(config["cycle_s"]))


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, seed_help="picks the training seeds and the test schedule (default: 0)")
    parser.add_argument("--days", type=float, default=20.0, help="simulated days of operation (default 20)")
    parser.add_argument("--hours", type=float, default=None, help="simulated hours instead of days (small runs)")
    parser.add_argument("--cycle-s", type=float, default=5.0,
                        help="the logging daemon's cycle period (default 5 s, a historian's typical rate)")
    parser.add_argument("--keep-logs", action="store_true", help="keep each episode's decision log beside its export")
    args = parser.parse_args(argv)
    for option, value in (("--days", args.days), ("--cycle-s", args.cycle_s), ("--hours", args.hours or 1.0)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError("command line", option, f"expected a positive number, got {value}")
    from tqdm import tqdm

    plan = episode_plan(args.days, args.hours, args.seed)
    art = Artefacts(args.out, "history", {"seed": args.seed, "days": args.days, "hours": args.hours,
                                          "cycle_s": args.cycle_s, "episodes": plan})
    (args.out / "episodes").mkdir(exist_ok=True)
    started = time.perf_counter()
    ops = {"step_tests": 0, "operator_changes": 0, "mill_trips": 0}
    with tqdm(total=sum(s for _, _, s in plan) / 3600.0, unit="sim h", file=sys.stderr,
              bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} sim h [{elapsed}<{remaining}]") as bar:
        progress = _Hours(bar)
        for k, (scenario, seed, seconds) in enumerate(plan):
            folder = args.out / "episodes" / f"{k:03d}"
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            bar.set_description(f"{scenario} seed {seed}")
            done = run_episode(folder, scenario, seed, seconds, args.cycle_s, progress)
            export_log(folder / "log", args.out / "episodes" / f"{k:03d}.parquet")
            if not args.keep_logs:
                shutil.rmtree(folder / "log")
            art.loss(episode=k, scenario=scenario, seed=seed, hours=seconds / 3600.0, **done)
            for key in ops:
                ops[key] += done[key]
    files = sorted((args.out / "episodes").glob("*.parquet"))
    metrics = art.finish({"data_sha256": _digest(files), "episodes": len(plan),
                          "simulated_hours": round(sum(s for _, _, s in plan) / 3600.0, 3),
                          "rows": _rows(files), **ops, "wall_s": round(time.perf_counter() - started, 1)})
    print(json.dumps(metrics))
    return 0


class _Hours:
    """Progress in simulated hours, from the unit's steps in seconds."""

    def __init__(self, bar):
        self.bar = bar

    def update(self, seconds: float) -> None:
        self.bar.update(seconds / 3600.0)


def _rows(files: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in files)


def _digest(files: list[Path]) -> str:
    import hashlib

    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        h.update(bytes.fromhex(sha256_file(path)))
    return h.hexdigest()


if __name__ == "__main__":
    from training.stages import run_command

    run_command(main, "training.history")
