"""A gymnasium environment: the reference unit on the stepped plant, in closed loop through the real controller
core (validation, projector, guard, engagement and the DCS handshake: `boiler_ai.evaluate.ClosedLoop`).

Action: per manipulated variable (tag-map order), an offset from the DCS's own setpoint in units of the
envelope's allowed deviation, in [-1, 1], held for `decision_s`. The agent's request goes through the same
projector and guard as a model's would, so what moves the plant is what they let through; an MV whose
`available_when` signal is false follows the DCS whatever is asked. Observation: the policy's input
signals (tag-map names, `observation_signals`). Reward: `training.objective.reward` from the tags of this
unit against a twin of it under the DCS alone (same scenario and seed, stepped alongside), averaged over
the decision interval; `info["cost"]`: the process-limit cost, `info["guard_blocks"]`, `info["ai_active"]`.

Used by the policy stage to check each Lagrangian round's policy in closed loop on training seeds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gymnasium
import numpy as np

from boiler_ai.evaluate import ClosedLoop, OffsetPolicy, evaluation_config
from boiler_ai.messages import Mode
from training import objective

ROOT = Path(__file__).resolve().parent.parent
# Any model satisfies the closed-loop config's pin; the agent replaces it in the core.
PLACEHOLDER_MODEL = ROOT / "models" / "bootstrap-bc-v1" / "policy.onnx"
ENGAGE_CYCLES = 200  # cycles to wait for AI mode at the start of an episode


class BoilerEnv(gymnasium.Env):
    metadata = {"render_modes": []}

    def __init__(self, plan: list[tuple[str, int]], *, input_signals: tuple[str, ...], decision_s: float = 60.0,
                 episode_s: float = 3600.0, config: Path | None = None,
                 band: objective.SteamBand = objective.SteamBand()):
        """`plan`: (scenario, training seed) episodes, taken in turn at each reset."""
        from boiler_ai.evaluate import EXAMPLE_CONFIG

        sha = hashlib.sha256(PLACEHOLDER_MODEL.read_bytes()).hexdigest()
        self.cfg = evaluation_config(PLACEHOLDER_MODEL, sha, config or EXAMPLE_CONFIG)
        self.plan, self.decision_s, self.episode_s, self.band = list(plan), decision_s, episode_s, band
        self.input_signals = tuple(input_signals)
        self._episode = 0
        self.loop = self.twin = self.agent = None
        from boiler_ai.control.envelope import load_envelope
        from boiler_ai.tagmap import load_tag_map

        self.tag_map = load_tag_map(self.cfg.tag_map)
        self.envelope = load_envelope(self.cfg.envelope, self.tag_map)
        self.mv_names = list(self.tag_map.manipulated)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (len(self.mv_names),), dtype=np.float32)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (len(self.input_signals),), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        import dataclasses

        from boiler_ai.config import SteppedConfig
        from boiler_ai.sim.scenario import named_scenario
        from boiler_ai.sim.unit import ReferenceUnit

        scenario, sim_seed = self.plan[self._episode % len(self.plan)]
        self._episode += 1
        sc = named_scenario(scenario, sim_seed)
        unit = ReferenceUnit(sc, seed=sim_seed)
        unit.set_ai_enable(True)
        self.twin = ReferenceUnit(sc, seed=sim_seed)
        dcs_tags = [self.tag_map.manipulated[mv].dcs_setpoint for mv in self.mv_names]
        self.agent = OffsetPolicy(self.input_signals, dcs_tags, self.envelope.max_dev.tolist())
        cfg = dataclasses.replace(self.cfg, plant=SteppedConfig(scenario, sim_seed, True))
        self.loop = ClosedLoop(cfg, unit, policy=self.agent)
        self._end = min(sc.duration_s, self.episode_s)
        for _ in range(ENGAGE_CYCLES):
            self._cycle()
            if self.loop.last.mode is Mode.ACTIVE:
                break
        return self._observation(), {"scenario": scenario, "seed": sim_seed}

    def _cycle(self):
        decision = self.loop.cycle()
        while self.twin.t < self.loop.unit.t:
            self.twin.step(self.cfg.cycle_period_s)
        return decision

    def _observation(self) -> np.ndarray:
        values = self.loop.unit.values()
        return np.array([values[s] for s in self.input_signals], dtype=np.float32)

    def step(self, action):
        self.agent.offset = np.clip(np.asarray(action, dtype=float), -1.0, 1.0).tolist()
        rewards, costs, active, blocks = [], [], 0, self.loop.guard_blocks
        n = max(1, round(self.decision_s / self.cfg.cycle_period_s))
        for _ in range(n):
            decision = self._cycle()
            active += decision.mode is Mode.ACTIVE
            ai, dcs = self.loop.unit.values(), self.twin.values()
            a = {s: np.asarray(ai[s]) for s in objective.SIGNALS}
            rewards.append(float(objective.reward(a, {s: np.asarray(dcs[s]) for s in objective.SIGNALS}, self.band)))
            costs.append(float(objective.limit_cost(ai, self.envelope)))
        truncated = self.loop.unit.t >= self._end
        info = {"cost": float(np.mean(costs)), "ai_active": active / n, "guard_blocks": self.loop.guard_blocks - blocks}
        return self._observation(), float(np.mean(rewards)), False, truncated, info
