"""Stage 3, policy: model-based offline RL on the history and filtered process-model rollouts, with a Lagrangian
on the process limits, through d3rlpy's IQL (or TD3+BC).

    python -m training.policy --history runs/history --process-model runs/process_model --out runs/policy --seed 0

A decision is a set of offsets from the DCS's setpoints (per MV, in units of the envelope's allowed
deviation, in [-1, 1]) held for `--horizon` model steps. Data, from the training episodes of the history:
  * start states every model step; at each, the DCS's own setting (offset 0), `--candidates` random offsets (one
    to six MVs moved, each by up to its allowed deviation) and `--refine` rounds of offsets drawn around the
    best kept so far at that state and around the best states' settings (build_candidates), each passed through
    the daemon's own projector (boiler_ai.control.projector, with the row's process values and the MVs'
    availability), so only what the projector lets through is ever scored;
  * each is rolled out with the process model along the logged operating conditions, beside the DCS's
    setting rolled out the same way; reward = `training.objective.reward` (heat rate saved against the
    DCS, minus NOx, CO and steam-temperature penalties), cost = the process-limit cost beyond the
    DCS setting's, both averaged over the horizon;
  * restrictive exploration: a candidate is kept only where the ensemble's members agree on its reward
    (std below `--max-disagreement`, % heat rate, scaled by the model's calibration) and every setpoint it
    asks for lies inside what the history shows at that load (0.5-99.5 % of the logged setpoints in the
    same 50 MW band). Where the data has no support, nothing is learned.
IQL (d3rlpy) learns an actor from these one-decision transitions (each ends its episode:
the offsets' effects settle within the horizon, while the unit's state is driven by load and coal, not by
them). Lagrangian: after each round, the actor's expected cost on the start states (projected and rolled
out through the model) updates the multiplier, lambda <- max(0, lambda + lr * (cost - budget)); the
rewards are relabelled r - lambda * c and training continues. Each round's actor is also run in closed loop
through the real controller core on the stepped plant (training.env.BoilerEnv, training seeds), and the
round with the best closed-loop reward among those within the cost budget is kept.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

from boiler_ai.control.envelope import load_envelope
from boiler_ai.control.projector import Projector
from boiler_ai.strict import ConfigError
from boiler_ai.tagmap import load_tag_map
from training import objective
from training.history import read_history
from training.policy_dataset import observation_signals
from training.process_model import ENVELOPE, HELD_OUT_EVERY, SETTLED_FILE, TAG_MAP, ProcessModel, frame
from training.settled_response import NOX, REHEAT, SettledResponse
from training.stages import Artefacts, read_stage, sha256_file, stage_parser

ROOT = Path(__file__).resolve().parent.parent
LOAD_BAND_MW = 50.0
MAX_MOVED = 6  # a candidate moves 1..6 MVs at once
STEP_REACH = 1.0  # ... each by up to this much of its allowed deviation (as far as the step tests went)
COST_TOLERANCE = 1e-3  # % of a limit: a round's mean cost below this is rounding in the rollouts, not a crossing
REFINE_SPREAD = 0.3  # first refinement round: std of the draws around a state's best, of the allowed deviation
ELITE_SHARE = 0.1  # the draws for all states centre on the states' best offsets where they gain most
MIN_SPREAD = 0.05  # ... with at least this spread per MV


class Rollouts:
    """Start states and the model-based scoring of offsets there, everything in arrays over start rows."""

    def __init__(self, history, model: ProcessModel, tag_map, envelope, *, horizon: int, starts: int, seed: int,
                 settled: SettledResponse | None = None, band: objective.SteamBand = objective.SteamBand()):
        self.model, self.tag_map, self.envelope, self.horizon = model, tag_map, envelope, horizon
        self.settled, self.band = settled, band
        lay = model.layout
        if list(lay.mvs) != list(envelope.mv_names):
            raise ConfigError("process model", "layout", "its manipulated variables differ from the envelope's")
        self.k = k = max(1, round(model.step_s / history.cycle_s))
        cols = frame(history, lay, tag_map)
        n = len(history.episode)
        ep = history.episode
        train = ep % HELD_OUT_EVERY != HELD_OUT_EVERY - 1
        if not (~train).any() or train.sum() == 0:
            train = np.ones(n, bool)
        base = np.arange(k, n - horizon * k)
        steps = base[:, None] + k * np.arange(-1, horizon + 1)[None, :]  # t-1 .. t+H per start
        ok = train[base] & (ep[steps] == ep[base][:, None]).all(axis=1)
        needed = [*lay.outputs, *lay.mvs, *lay.conditions]
        stack = np.column_stack([cols[c] for c in needed])
        ok &= np.isfinite(stack[steps]).all(axis=(1, 2))
        obs_signals = tuple(observation_signals(tag_map))
        obs = np.column_stack([history.column(s) for s in obs_signals])
        ok &= np.isfinite(obs[base]).all(axis=1)
        base = base[ok]
        rng = np.random.default_rng([seed, 3])
        if len(base) > starts:
            base = np.sort(rng.choice(base, starts, replace=False))
        if len(base) < 10:
            raise ConfigError("history", "", f"only {len(base)} usable start states for the rollouts")
        self.rows = base
        self.obs_signals, self.obs = obs_signals, obs[base].astype(np.float32)
        self.cols = cols
        self.steps = base[:, None] + k * np.arange(-1, horizon + 1)[None, :]
        self.u_dcs = np.column_stack([cols[m] for m in lay.mvs])  # setpoints in force, per row
        self.bands = np.asarray(envelope.max_dev, dtype=float)
        # every condition an MV needs (available_when, the operator's per-MV AI enable), per row
        self.available = {sig: history.column(sig) >= 0.5 for sig in envelope.condition_signals}
        self.process_now = {p: history.column(p) for p in envelope.process_signals}
        self.projector = Projector(envelope)
        self.movable = np.ones(len(envelope.mv_names), bool)  # MVs the policy may move from the DCS setpoint
        self.support = self._support(history, cols, lay.mvs, train)
        self._log = {s: history.column(s) for s in objective.SIGNALS}  # what the model does not predict
        self.baseline = self._ensemble_rollout(np.zeros((len(base), len(lay.mvs))))

    def _support(self, history, cols, mvs, train) -> dict:
        """Per 50 MW load band, per MV: the 0.5-99.5 % range of the setpoints in force in the history."""
        band = np.floor(history.column("unit_load_mw") / LOAD_BAND_MW)
        lo, hi = {}, {}
        for b in np.unique(band[np.isfinite(band) & train]):
            sel = train & (band == b)
            u = np.column_stack([cols[m][sel] for m in mvs])
            u = u[np.isfinite(u).all(axis=1)]
            if len(u) >= 50:
                lo[b], hi[b] = np.quantile(u, 0.005, axis=0), np.quantile(u, 0.995, axis=0)
        return {"band": band, "lo": lo, "hi": hi}

    def supported(self, offsets: np.ndarray) -> np.ndarray:
        band = self.support["band"][self.rows]
        u = self.u_dcs[self.rows] + offsets * self.bands
        ok = np.zeros(len(self.rows), bool)
        for b, lo in self.support["lo"].items():
            sel = band == b
            moved = np.abs(offsets[sel]) > 1e-6  # an MV left where the DCS has it needs no support
            inside = (u[sel] >= lo - 1e-9) & (u[sel] <= self.support["hi"][b] + 1e-9)
            ok[sel] = (inside | ~moved).all(axis=1)
        return ok

    def project(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's offsets as the daemon's projector lets them through a steady hold (rates do not bind
        over the horizon); (projected offsets, kept) — a release means the row is dropped."""
        out, kept = np.zeros_like(offsets), np.ones(len(offsets), bool)
        dt = self.horizon * self.model.step_s
        names = self.envelope.process_signals
        for j, r in enumerate(self.rows):
            u = self.u_dcs[r]
            available = {s: bool(a[r]) for s, a in self.available.items()}
            p = self.projector.project(u + offsets[j] * self.bands, u, u, {s: self.process_now[s][r] for s in names},
                                       available, dt)
            if p.action is None:
                kept[j] = False
                continue
            out[j] = (np.asarray(p.action) - u) / self.bands
        return out, kept

    def _rollout(self, offsets: np.ndarray) -> dict:
        """The ensemble's rollout, with the outputs the process model has a settled response for moved by it."""
        return self._settle(self._ensemble_rollout(offsets), offsets)

    def _settle(self, roll: dict, offsets: np.ndarray) -> dict:
        """NOx, excess O2, total air, the efficiency tag and hot reheat of a rollout (in place) moved from the DCS
        setting's rollout by their settled response where the process model has one (the same for every
        member: it is one fit)."""
        if self.settled is None:
            return roll
        lay = self.model.layout
        du = offsets * self.bands
        load = self.cols["unit_load_mw"][self.steps[:, 1]]
        if self.settled.nox_pct is not None:
            nox = lay.outputs.index(NOX)
            factor = 1.0 + self.settled.nox_change_pct(du, load) / 100.0
            for key in ("mean", "members"):
                roll[key][..., nox] = self.baseline[key][..., nox] * factor
        added = {o: self.settled.step_change(o, du, load) for o in self.settled.step if o in lay.outputs}
        if self.settled.reheat_c is not None:
            added[REHEAT] = self.settled.reheat_change_c(du, load)
        for output, change in added.items():
            j = lay.outputs.index(output)
            for key in ("mean", "members"):
                roll[key][..., j] = self.baseline[key][..., j] + change
        return roll

    def settled_against_rollout(self) -> dict:
        """Why the rollouts take the settled response: for each MV held one allowed deviation below and above
        the DCS's setting, each settled output's change at the horizon's end per unit of the MV, as the
        ensemble rolls it out and as the settled response has it (mean over the start states; the settled
        response is linear, the same both ways)."""
        if self.settled is None:
            return {}
        outputs = self.model.layout.outputs
        settled_js = [j for j, o in enumerate(outputs) if o in self.settled.outputs]
        figures = {}
        for m, mv in enumerate(self.model.layout.mvs):
            lower, settled = self._change_per_unit(m, -1.0)
            higher, _ = self._change_per_unit(m, 1.0)
            figures[mv] = {outputs[j]: {"rollout_lower": round(float(lower[j]), 4),
                                        "rollout_raise": round(float(higher[j]), 4),
                                        "settled": round(float(settled[j]), 4)} for j in settled_js}
        return figures

    def _change_per_unit(self, m: int, sign: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean change of every output at the horizon's end per unit of MV m held at sign x its allowed
        deviation: (the ensemble's rollout, with the settled response)."""
        offsets = np.zeros((len(self.rows), len(self.model.layout.mvs)))
        offsets[:, m] = sign
        roll = self._ensemble_rollout(offsets)
        ensemble = (roll["mean"][-1] - self.baseline["mean"][-1]).mean(axis=0)
        settled = (self._settle(roll, offsets)["mean"][-1] - self.baseline["mean"][-1]).mean(axis=0)
        return ensemble / (sign * self.bands[m]), settled / (sign * self.bands[m])

    def _ensemble_rollout(self, offsets: np.ndarray) -> dict:
        """Mean trajectory of the ensemble over the horizon with the offsets held; per step the members'
        outputs too. Returns {"mean": [H, B, n_out], "members": [H, K, B, n_out]}."""
        lay, cols, steps = self.model.layout, self.cols, self.steps
        y = np.column_stack([cols[o][steps[:, 1]] for o in lay.outputs])
        u_prev = self.u_dcs[steps[:, 0]] + offsets * self.bands
        means, members = [], []
        for h in range(self.horizon):
            t = steps[:, 1 + h]
            u = self.u_dcs[t] + offsets * self.bands
            cond = np.column_stack([cols[c][t] for c in lay.conditions])
            m = self.model.members(np.column_stack([y, u, u_prev, cond]))
            y = m.mean(axis=0)
            means.append(y)
            members.append(m)
            u_prev = u
        return {"mean": np.stack(means), "members": np.stack(members)}

    def _named(self, arr: np.ndarray, t_rows: np.ndarray) -> dict:
        """Objective's signals: the model's outputs where it predicts them, the log's otherwise."""
        lay = self.model.layout
        named = {o: arr[..., i] for i, o in enumerate(lay.outputs)}
        for s in objective.SIGNALS:
            if s not in named:
                named[s] = self._log[s][t_rows]
        return named

    def score(self, offsets: np.ndarray) -> dict:
        """Reward, cost and the members' disagreement on the reward, per row, for offsets held over the horizon."""
        roll = self._rollout(offsets)
        t_rows = self.steps[:, 2:].T  # [H, B] the rows the predictions are for
        base = self._named(self.baseline["mean"], t_rows)
        pol = self._named(roll["mean"], t_rows)
        reward = objective.reward(pol, base, self.band).mean(axis=0)
        # only what crosses the limits beyond the DCS's own setting counts against the action
        cost = np.maximum(objective.limit_cost(pol, self.envelope) - objective.limit_cost(base, self.envelope),
                          0.0).mean(axis=0)
        per_member = []
        for k in range(roll["members"].shape[1]):
            mem = self._named(roll["members"][:, k], t_rows)
            per_member.append(objective.reward(mem, base, self.band).mean(axis=0))
        scale = float(np.median(self.model.spread_scale))
        return {"reward": reward, "cost": cost, "disagreement": np.std(per_member, axis=0) * scale}


def build_candidates(ro: Rollouts, n_candidates: int, n_refine: int, max_disagreement: float, seed: int,
                     progress=None) -> dict:
    """Start states x (DCS setting + random offsets + refinements), projected, scored, filtered.

    Random offsets move a few MVs at a time, as far as the step tests went: where the history can say what
    happens. The best settings move many MVs at once (the oracle's: O2 down, over-fire air to the burner
    levels, coal shifted between mills), which such draws rarely find, so each refinement round is a
    cross-entropy step, twice: per start state around the best offsets kept there so far, and for all
    states around the mean of those best offsets at the tenth of the states where they gain most, with
    that tenth's spread (the good direction is much the same across states). The same projection, support
    and agreement filters decide what is kept."""
    rng = np.random.default_rng([seed, 5])
    n_rows, n_mv = len(ro.rows), len(ro.bands)
    obs, act, rew, cost, dis = [], [], [], [], []
    stats = {"proposed": 0, "released_by_projector": 0, "no_support": 0, "ensemble_disagrees": 0, "kept": 0,
             "improved_by_refinement": 0}
    best = np.zeros((n_rows, n_mv))  # per start state, the best offsets kept so far (the DCS's own setting first)
    best_reward = np.full(n_rows, -np.inf)
    n_movable = max(int(ro.movable.sum()), 1)
    # (kind, refinement round): the DCS's own setting, the random offsets, then per round both draws
    draws = [("dcs", 0)] + [("random", 0)] * n_candidates
    draws += [(kind, r) for r in range(1, n_refine + 1) for kind in ("state", "all")]
    for kind, rnd in draws:
        raw = np.zeros((n_rows, n_mv))
        if kind == "random":
            share = rng.integers(1, min(MAX_MOVED, n_movable) + 1, (n_rows, 1)) / n_movable
            moved = (rng.random((n_rows, n_mv)) < share) & ro.movable
            raw = np.where(moved, rng.uniform(-STEP_REACH, STEP_REACH, raw.shape), 0.0)
        elif kind == "state":
            raw = best + rng.normal(0.0, REFINE_SPREAD / rnd, raw.shape)
        elif kind == "all":
            elite = best[best_reward >= np.quantile(best_reward, 1.0 - ELITE_SHARE)]
            spread = np.maximum(elite.std(axis=0), MIN_SPREAD)
            raw = elite.mean(axis=0) + rng.normal(0.0, 1.0, raw.shape) * spread
        raw = np.clip(raw, -1.0, 1.0) * ro.movable
        offsets, kept = ro.project(raw)
        support = ro.supported(offsets)
        s = ro.score(offsets)
        agree = s["disagreement"] <= max_disagreement
        keep = kept & support & (agree | (kind == "dcs"))  # the DCS's own setting is always in the data
        better = keep & (s["cost"] <= 0.0) & (s["reward"] > best_reward)
        best[better], best_reward[better] = offsets[better], s["reward"][better]
        stats["improved_by_refinement"] += int(better.sum()) if rnd else 0
        stats["proposed"] += len(raw)
        stats["released_by_projector"] += int((~kept).sum())
        stats["no_support"] += int((kept & ~support).sum())
        stats["ensemble_disagrees"] += int((kept & support & ~agree).sum()) if kind != "dcs" else 0
        stats["kept"] += int(keep.sum())
        obs.append(ro.obs[keep])
        act.append(offsets[keep])
        rew.append(s["reward"][keep])
        cost.append(s["cost"][keep])
        dis.append(s["disagreement"][keep])
        if progress is not None:
            progress.update(1)
    return {"obs": np.concatenate(obs), "actions": np.concatenate(act).astype(np.float32),
            "reward": np.concatenate(rew), "cost": np.concatenate(cost), "disagreement": np.concatenate(dis),
            "stats": stats}


def actor_offsets(algo, obs: np.ndarray, movable: np.ndarray) -> np.ndarray:
    """The actor's offsets (units of each MV's allowed deviation), zero for the MVs it leaves to the DCS."""
    return algo.predict(np.asarray(obs, dtype=np.float32)).astype(float) * movable


def make_algorithm(d3rlpy, name: str, alpha: float, temperature: float):
    """d3rlpy's IQL (advantage-weighted regression on the data's actions: the actor stays where the data
    is) or TD3+BC (the actor maximises the critic, held to the data by a behaviour-cloning term)."""
    common = {"observation_scaler": d3rlpy.preprocessing.StandardObservationScaler(), "batch_size": 256,
              "gamma": 0.0, "actor_encoder_factory": d3rlpy.models.VectorEncoderFactory([128, 128]),
              "critic_encoder_factory": d3rlpy.models.VectorEncoderFactory([128, 128])}
    if name == "iql":
        return d3rlpy.algos.IQLConfig(value_encoder_factory=d3rlpy.models.VectorEncoderFactory([128, 128]),
                                      expectile=0.7, weight_temp=temperature, max_weight=100.0,
                                      **common).create(device="cpu:0")
    return d3rlpy.algos.TD3PlusBCConfig(alpha=alpha, **common).create(device="cpu:0")


def closed_loop_check(algo, movable, obs_signals, plan, minutes: float, decision_s: float,
                      band: objective.SteamBand = objective.SteamBand()) -> dict:
    """The actor in closed loop through the real core on the stepped plant (training seeds): mean reward
    (% heat rate saved against the twin under the DCS), cost, AI-mode share, guard blocks."""
    from training.env import BoilerEnv

    env = BoilerEnv(plan, input_signals=obs_signals, decision_s=decision_s, episode_s=minutes * 60.0, band=band)
    rewards, costs, active, blocks = [], [], [], 0
    for _ in plan:
        obs, _ = env.reset()
        done = False
        while not done:
            action = actor_offsets(algo, obs[None, :], movable)[0]
            obs, r, _, done, info = env.step(action)
            rewards.append(r)
            costs.append(info["cost"])
            active.append(info["ai_active"])
            blocks += info["guard_blocks"]
    return {"env_reward": float(np.mean(rewards)), "env_cost": float(np.mean(costs)),
            "env_ai_active": float(np.mean(active)), "env_guard_blocks": int(blocks)}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__, "history", "process-model")
    parser.add_argument("--tag-map", type=Path, default=TAG_MAP)
    parser.add_argument("--envelope", type=Path, default=ENVELOPE)
    parser.add_argument("--horizon", type=int, default=8, help="model steps an offset is held and scored over")
    parser.add_argument("--starts", type=int, default=8000, help="start states sampled from the history")
    parser.add_argument("--candidates", type=int, default=4, help="random offsets tried per start state")
    parser.add_argument("--refine", type=int, default=8,
                        help="cross-entropy refinement rounds: offsets drawn around each start state's best so far "
                             "and around the best states' settings")
    parser.add_argument("--max-disagreement", type=float, default=0.15,
                        help="largest ensemble std of a candidate's reward kept (%% heat rate)")
    parser.add_argument("--rounds", type=int, default=3, help="Lagrangian rounds")
    parser.add_argument("--steps", type=int, default=3000, help="gradient steps per round")
    parser.add_argument("--algorithm", choices=("iql", "td3+bc"), default="iql")
    parser.add_argument("--alpha", type=float, default=2.5, help="TD3+BC's weight of the Q term against BC")
    parser.add_argument("--temperature", type=float, default=30.0,
                        help="IQL's advantage temperature, per %% heat rate (weight = exp(temperature x advantage))")
    parser.add_argument("--hold-mvs", default="",
                        help="comma-separated MVs the policy leaves at the DCS's setpoint (e.g. loops the DCS "
                             "closes faster than the envelope lets the AI follow)")
    parser.add_argument("--cost-budget", type=float, default=0.0, help="allowed mean process-limit cost")
    parser.add_argument("--lambda-lr", type=float, default=2.0)
    parser.add_argument("--steam-band-penalty", type=float, default=objective.SteamBand.penalty,
                        help="%% heat rate per degC of steam outside the +-5 degC band beyond the DCS's own "
                             "(training.objective.SteamBand)")
    parser.add_argument("--steam-band-margin", type=float, default=objective.SteamBand.margin_c,
                        help="degC inside the band where that charge starts")
    parser.add_argument("--check-minutes", type=float, default=60.0,
                        help="closed-loop check per round: minutes per training episode (0: none)")
    args = parser.parse_args(argv)
    if min(args.horizon, args.starts, args.rounds, args.steps) < 1 or args.candidates < 1 or args.refine < 0:
        raise ConfigError("command line", "--horizon/--starts/--candidates/--rounds/--steps/--refine",
                          "must be >= 1 (--refine >= 0)")
    if not (math.isfinite(args.max_disagreement) and args.max_disagreement > 0):
        raise ConfigError("command line", "--max-disagreement", "must be a positive number")
    if not (math.isfinite(args.steam_band_penalty) and args.steam_band_penalty >= 0):
        raise ConfigError("command line", "--steam-band-penalty", "must be a number >= 0")
    if not (math.isfinite(args.steam_band_margin) and 0 <= args.steam_band_margin < objective.STEAM_BAND_C):
        raise ConfigError("command line", "--steam-band-margin", f"must be >= 0 and below the band's "
                          f"{objective.STEAM_BAND_C:g} degC")
    import d3rlpy
    import structlog
    import torch
    from tqdm import tqdm

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # d3rlpy's chatter

    torch.set_num_threads(1)
    d3rlpy.seed(args.seed)
    _, hist_metrics = read_stage(args.history, "history")
    pm_config, pm_metrics = read_stage(args.process_model, "process_model")
    if pm_metrics["history_sha256"] != hist_metrics["data_sha256"]:
        raise ConfigError(args.process_model, "history_sha256", "this process model was trained on another history")
    tag_map = load_tag_map(args.tag_map)
    envelope = load_envelope(args.envelope, tag_map)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    art = Artefacts(args.out, "policy", {**config, "history_sha256": hist_metrics["data_sha256"],
                                         "process_model_sha256": pm_metrics["data_sha256"]})
    started = time.perf_counter()
    history = read_history(args.history)
    model = ProcessModel.load(args.process_model / "process_model.pt")
    settled = _settled(args.process_model, model)
    held = [mv for mv in args.hold_mvs.split(",") if mv]
    unknown = [mv for mv in held if mv not in envelope.mv_names]
    if unknown:
        raise ConfigError("command line", "--hold-mvs", f"{unknown[0]!r} is not a manipulated variable of the envelope")
    band = objective.SteamBand(args.steam_band_penalty, args.steam_band_margin)
    ro = Rollouts(history, model, tag_map, envelope, horizon=args.horizon, starts=args.starts, seed=args.seed,
                  settled=settled, band=band)
    ro.movable = np.array([mv not in held for mv in envelope.mv_names])
    with tqdm(total=args.candidates + 2 * args.refine + 1, desc="model rollouts", unit="set", file=sys.stderr) as bar:
        data = build_candidates(ro, args.candidates, args.refine, args.max_disagreement, args.seed, bar)
    np.savez_compressed(args.out / "rollouts.npz", obs=data["obs"], actions=data["actions"], reward=data["reward"],
                        cost=data["cost"], obs_signals=np.array(ro.obs_signals))
    plan = [(s, k) for s, k in _check_plan(args.seed)] if args.check_minutes > 0 else []

    algo = make_algorithm(d3rlpy, args.algorithm, args.alpha, args.temperature)
    lam, best, rounds = 0.0, None, []
    for rnd in range(1, args.rounds + 1):
        rewards = (data["reward"] - lam * data["cost"]).astype(np.float32)
        dataset = d3rlpy.dataset.MDPDataset(data["obs"], data["actions"], rewards, np.ones(len(rewards), np.float32),
                                            action_space=d3rlpy.ActionSpace.CONTINUOUS)
        fitted = algo.fit(dataset, n_steps=args.steps, n_steps_per_epoch=args.steps, experiment_name=f"round{rnd}",
                          with_timestamp=False, logger_adapter=d3rlpy.logging.NoopAdapterFactory(), show_progress=True)
        losses = fitted[-1][1]
        offsets, kept = ro.project(actor_offsets(algo, ro.obs, ro.movable))
        s = ro.score(offsets)
        model_reward, model_cost = float(s["reward"][kept].mean()), float(s["cost"][kept].mean())
        check = (closed_loop_check(algo, ro.movable, ro.obs_signals, plan, args.check_minutes, model.step_s, band)
                 if plan else {})
        row = {"round": rnd, "lambda": round(lam, 4), "critic_loss": round(losses.get("critic_loss", math.nan), 6),
               "actor_loss": round(losses.get("actor_loss", math.nan), 6), "model_reward": round(model_reward, 5),
               "model_cost": round(model_cost, 5),
               "model_disagreement": round(float(s["disagreement"][kept].mean()), 5),
               **{k: round(v, 5) if isinstance(v, float) else v for k, v in check.items()}}
        art.loss(**row)
        rounds.append(row)
        print(json.dumps(row), file=sys.stderr)
        ok_cost = max(model_cost, check.get("env_cost", 0.0)) <= args.cost_budget + COST_TOLERANCE
        score = check.get("env_reward", model_reward)
        if ok_cost and (best is None or score > best[0]):
            best = (score, rnd)
            algo.save(str(args.out / "policy.d3"))
        lam = max(0.0, lam + args.lambda_lr * (model_cost - args.cost_budget))
    if best is None:
        algo.save(str(args.out / "policy.d3"))
    metrics = art.finish({
        "data_sha256": sha256_file(args.out / "policy.d3"), "rollouts_sha256": sha256_file(args.out / "rollouts.npz"),
        "history_sha256": hist_metrics["data_sha256"], "process_model_sha256": pm_metrics["data_sha256"],
        "held_mvs": held,
        "algorithm": (f"model-based offline RL: {_describe(args)} (d3rlpy {d3rlpy.__version__}) on "
                      f"filtered model rollouts of {args.candidates} random offsets and {args.refine} cross-entropy "
                      f"refinement rounds per start state (horizon {args.horizon} x "
                      f"{model.step_s:g} s, ensemble of {model.net.members}), Lagrangian on process-limit cost"),
        "kept_round": None if best is None else best[1], "within_cost_budget": best is not None,
        "candidates": data["stats"], "start_states": len(ro.rows),
        "settled_against_rollout": ro.settled_against_rollout(),
        "transitions": len(data["reward"]), "data_reward_mean": round(float(data["reward"].mean()), 5),
        "data_cost_mean": round(float(data["cost"].mean()), 5), "rounds": rounds,
        "process_model_step_s": model.step_s, "check_plan": plan,
        "wall_s": round(time.perf_counter() - started, 1)})
    print(json.dumps(metrics))
    return 0


def _settled(folder: Path, model: ProcessModel) -> SettledResponse | None:
    """The process-model stage's settled response, where that stage wrote one for these outputs and MVs."""
    path = folder / SETTLED_FILE
    if not path.exists():
        return None
    settled = SettledResponse.from_json(json.loads(path.read_text()))
    if settled.mvs != model.layout.mvs:
        raise ConfigError(path, "mvs", "its manipulated variables differ from the process model's")
    return settled


def _describe(args) -> str:
    if args.algorithm == "iql":
        return f"IQL (expectile 0.7, temperature {args.temperature:g} per % heat rate)"
    return f"TD3+BC (alpha {args.alpha:g})"


def _check_plan(seed: int) -> list[tuple[str, int]]:
    """Closed-loop check episodes: a dispatch day and a low-load night on training seeds the history skipped."""
    from boiler_ai.sim.scenario import TRAIN_SEEDS

    return [("agc_day_24h", TRAIN_SEEDS[-1 - seed % 100]), ("low_load_night", TRAIN_SEEDS[-101 - seed % 100])]


if __name__ == "__main__":
    from training.stages import run_command

    run_command(main, "training.policy")
