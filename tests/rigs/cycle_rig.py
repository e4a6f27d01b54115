"""A closed-loop rig for controller tests: the real core on the simulator's stepping API, no network."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import yaml
from rigs.policies import follower

from boiler_ai.config import load_config
from boiler_ai.daemon import Core, build_core
from boiler_ai.messages import Outcome, Record, StageTimings
from boiler_ai.plant.stepped import SteppedPlant
from boiler_ai.sim.dcs import DcsConfig
from boiler_ai.sim.scenario import named_scenario
from boiler_ai.sim.unit import ReferenceUnit
from boiler_ai.tagmap import load_tag_map

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "reference_unit.yaml"
# The shipped bootstrap policy and its hash (the example config and the model card pin the same value).
BOOTSTRAP = ROOT / "models" / "bootstrap-bc-v1" / "policy.onnx"
BOOTSTRAP_SHA = hashlib.sha256(BOOTSTRAP.read_bytes()).hexdigest()


def write_config(tmp: Path, model: Path, sha: str, **changes) -> Path:
    """The example daemon config, pointed at `model` and the repo's tag map and envelope, with changes."""
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg.update(tag_map=str(ROOT / "opc" / "reference_unit.yaml"),
               envelope=str(ROOT / "constraints" / "reference_unit.yaml"),
               model={"path": str(model), "sha256": sha})
    # no stream by default; a test that serves one gives record={"publish_endpoint": ..., "curve": keys or False}
    cfg["record"].update(log_dir=str(tmp / "log"), publish_endpoint=None, catchup_endpoint=None, fsync="never",
                         curve=False)
    cfg["metrics"] = {"listen": None}
    cfg["host"] = {"cpu_latency_limit_us": None}  # tests leave the machine's idle states alone
    cfg["engagement"].update(healthy_cycles_to_engage=3, arm_on_start=True)
    for key, value in changes.items():
        if isinstance(value, dict) and not (key == "plant" and "kind" in value):  # another kind: replace
            cfg[key].update(value)
        else:
            cfg[key] = value
    path = tmp / "daemon.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def follower_config(tmp: Path, offsets=None, nan_above_ambient_c=None, training_envelope=None, **changes) -> Path:
    tag_map = load_tag_map(ROOT / "opc" / "reference_unit.yaml")
    model = tmp / "follower.onnx"
    sha = follower(model, tag_map, offsets, nan_above_ambient_c, training_envelope)
    return write_config(tmp, model, sha, **changes)


class Rig:
    """Steps the unit 1 s per cycle and runs one controller cycle per step."""

    def __init__(self, config: Path, scenario: str = "steady_full_load", seed: int = 0, decision_log=None,
                 dcs_config: DcsConfig | None = None):
        self.core: Core = build_core(load_config(config))
        self.log = decision_log  # a DurableLog, when the records should be kept
        self.controller = self.core.controller
        self.unit = ReferenceUnit(named_scenario(scenario, seed), seed=seed, dcs_config=dcs_config)
        self.plant = SteppedPlant(self.unit, self.core.tag_map)
        self.records: list[dict] = []
        self.snapshot_hook = None  # optional: Snapshot -> Snapshot (fault injection without a server)

    def cycle(self) -> dict:
        """One cycle as the daemon runs it (without timing it); returns the record's wire dict."""
        snapshot = self.plant.snapshot()
        if self.snapshot_hook is not None:
            snapshot = self.snapshot_hook(snapshot)
        decision = self.controller.step(snapshot, self.plant.now, self.unit.t)
        result = self.plant.apply(decision.writes) if decision.writes else None
        decision, follow_up = self.controller.finish(decision, result)
        if follow_up:
            self.plant.apply(follow_up)
        seq = self.log.next_seq if self.log is not None else len(self.records)
        record = Record(seq, self.core.origin, decision,
                        Outcome(result, self.controller.read_back(result), StageTimings()))
        if self.log is not None:
            self.log.append(record, wait=True)  # the rig keeps no real time: it waits for the writer
        self.records.append(record.as_dict())
        self.unit.step(1.0)
        return self.records[-1]

    def run(self, cycles: int) -> list[dict]:
        return [self.cycle() for _ in range(cycles)]

    def engage(self, limit: int = 60) -> None:
        self.unit.set_ai_enable(True)
        for _ in range(limit):
            self.cycle()
            if self.unit.values()[self.core.tag_map.handshake["ai_active"]] >= 0.5:
                return
        raise AssertionError(f"did not engage in {limit} cycles: {self.records[-1]['events']}")


def outside_envelope(env, record) -> list[str]:
    """An independent check of a written action against the absolute, rate and deviation limits."""
    problems = []
    w, prev, dcs = (np.array(record[k]) for k in ("written", "u_prev", "u_dcs"))
    for i, name in enumerate(env.mv_names):
        pinned = env.available_when[i] is not None and w[i] == dcs[i]
        if not np.isfinite(w[i]):
            problems.append(f"{name} not finite")
        elif not pinned and not env.lo[i] - 1e-9 <= w[i] <= env.hi[i] + 1e-9:
            problems.append(f"{name} {w[i]} outside [{env.lo[i]}, {env.hi[i]}]")
        elif not pinned and not -env.rate_down[i] - 1e-6 <= w[i] - prev[i] <= env.rate_up[i] + 1e-6:
            problems.append(f"{name} moved {w[i] - prev[i]} in one cycle")
        elif abs(w[i] - dcs[i]) > env.max_dev[i] + 1e-6:
            problems.append(f"{name} {w[i] - dcs[i]} from the DCS setpoint")
    return problems
