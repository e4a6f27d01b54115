"""`boiler-ai evaluate MODEL`: a policy in closed loop through the real controller core on the stepped plant,
against the DCS alone and against the steady-state oracle, on the standard scenarios' held-out seeds.

Each run (scenario, seed) is simulated four ways in one worker process: the unit under its DCS alone;
the same unit with the controller core in closed loop (validation, the ONNX policy, projector, guard,
engagement, the DCS handshake: the daemon's cycle without its log) at the daemon config's cycle period;
the same loop echoing the DCS's own setpoints (`OffsetPolicy` with zero offsets: what it releases for is
the plant's and the loop's doing, never a model's, so its release rate is the DCS's own fault rate, and its
seconds outside the steam band or over a limit beyond the DCS alone's are those figures' floor); and
the oracle's headroom at operating points sampled along the DCS run. In both loops a simulated operator
re-enables AI (AI_ENABLE off and on, what the HMI asks for after a release) `--rearm-after-min` after each
release; the engagement's own entry checks decide when AI mode returns. The DCS and AI runs are measured on
the simulator's true (noise-free) performance every simulated second. ONNX Runtime only: no torch here.

With `--opcua SCENARIO` (default demo) one more run goes through the whole daemon (OPC UA adapter, core,
durable log) against the simulated unit served over OPC UA, beside the DCS alone on the same seed: its
figures are the summary's `opcua`. The last line printed is JSON (see `aggregate` for the keys);
`--report DIR` also writes report.html with PNG plots and evaluation.json there.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from boiler_ai.config import DaemonConfig, SteppedConfig, load_config
from boiler_ai.control.supervision import limit_named
from boiler_ai.demo import UnitTap, check_run
from boiler_ai.errors import ExpectedError
from boiler_ai.sim.steam import REHEAT_SP_C, STEAM_TEMP_SP_C
from boiler_ai.strict import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "deploy" / "examples" / "reference_unit.yaml"
TRACE_EVERY_S = 60  # one point per simulated minute in the report's plots
STEAM_BAND_C = 5.0  # main and hot reheat within this of set point: the offline-RL target, judged against the DCS's
# Each about the set point the DCS holds it at: hot reheat runs 2 degC under main steam (margin below its 545 degC
# limit), so 540 for both would leave it 3 degC of band below and 7 above.
STEAM_SET_POINTS_C = (("main_steam_temp_c", STEAM_TEMP_SP_C), ("reheat_steam_temp_c", REHEAT_SP_C))
REARM_AFTER_MIN = 15.0  # a shift's operator re-enables AI this long after a release (0: never)


class Trace(UnitTap):
    """Time-weighted figures of a simulated unit's true performance and a one-per-minute series; what the
    AI did (mode, offsets) is added by the caller. A DCS-only run also feeds the oracle's operating-point
    sampler, so the baseline does not simulate that run twice."""

    def __init__(self, unit, sampler=None):
        super().__init__(unit)
        self.sampler = sampler
        self.seconds = 0.0
        self.sums: Counter[str] = Counter()
        self.co: list[float] = []
        self.series: dict[str, list[float]] = {k: [] for k in ("t_h", "efficiency_pct", "heat_rate_kj_kwh", "o2_pct",
                                                               "co_ppm", "nox_mg_nm3", "main_steam_temp_c",
                                                               "reheat_steam_temp_c")}

    def observe(self, p: dict, dt: float) -> None:
        self.seconds += dt
        for key in ("efficiency_pct", "heat_rate_kj_kwh", "nox_mg_nm3", "o2_pct"):
            self.sums[key] += p[key] * dt
        main, reheat = abs(p["main_steam_temp_c"] - STEAM_TEMP_SP_C), abs(p["reheat_steam_temp_c"] - REHEAT_SP_C)
        self.sums["steam_dev_c"] += (main + reheat) / 2 * dt
        self.sums["steam_outside_band_s"] += dt if max(main, reheat) > STEAM_BAND_C else 0.0
        self.co.append(p["co_ppm"])
        if self.sampler is not None:
            self.sampler.after_step(self.unit, p)
        if int(self.unit.t) % TRACE_EVERY_S < dt:
            s = self.series
            s["t_h"].append(self.unit.t / 3600.0)
            for key in ("efficiency_pct", "heat_rate_kj_kwh", "o2_pct", "co_ppm", "nox_mg_nm3", "main_steam_temp_c",
                        "reheat_steam_temp_c"):
                s[key].append(p[key])

    def figures(self) -> dict:
        n = max(self.seconds, 1.0)
        return {"efficiency_pct": self.sums["efficiency_pct"] / n,
                "heat_rate_kj_kwh": self.sums["heat_rate_kj_kwh"] / n, "nox_mg_nm3": self.sums["nox_mg_nm3"] / n,
                "o2_pct": self.sums["o2_pct"] / n,
                "co_p99_ppm": float(np.percentile(self.co, 99)) if self.co else 0.0,
                "steam_dev_c": self.sums["steam_dev_c"] / n,
                "steam_outside_band_s": self.sums["steam_outside_band_s"], "violation_s": dict(self.violation_s),
                "simulated_h": self.seconds / 3600.0}


class OffsetPolicy:
    """PolicyRunner's interface answering with the DCS's own setpoints plus `offset` x the allowed deviation
    (per MV, tag-map order). With zero offsets it is the DCS echoed through the AI path: a run with it
    releases only for what the plant and the loop do, never for a model; its release rate is the DCS's
    own fault rate the promotion gate compares a model with. A training agent sets `offset` itself."""

    model_id = "dcs-echo"

    def __init__(self, input_signals: tuple[str, ...], dcs_tags: list[str], bands):
        self.input_signals = tuple(input_signals)
        self._dcs_tags, self._bands = list(dcs_tags), [float(b) for b in bands]
        self.offset = [0.0] * len(self._dcs_tags)
        self._values = None

    @property
    def ready(self) -> bool:
        return self._values is not None

    def reset(self) -> None:
        self._values = None

    def observe(self, values) -> None:
        self._values = values

    def infer(self):
        from boiler_ai.control.policy import Inference

        u = [self._values.get(t, math.nan) + float(o) * b for t, o, b in zip(self._dcs_tags, self.offset, self._bands)]
        return Inference(u, None, [], all(map(math.isfinite, u)))

    def state(self) -> dict:
        return {}

    def restore(self, state) -> None:
        pass


def echo_policy(tag_map, envelope) -> OffsetPolicy:
    dcs_tags = [tag_map.manipulated[mv].dcs_setpoint for mv in tag_map.manipulated]
    return OffsetPolicy(tuple(dcs_tags), dcs_tags, envelope.max_dev.tolist())


class ClosedLoop:
    """The controller core in closed loop on a stepped unit, one cycle per `cycle()`: the daemon's cycle
    (read, core, write, finish) without its log. `policy` replaces the config's model (a training agent).
    With `rearm_after_s`, the operator toggles AI_ENABLE that long after each release that left the daemon
    awaiting them; without, a release ends AI mode for the rest of the run."""

    def __init__(self, cfg: DaemonConfig, unit, policy=None, rearm_after_s: float = 0.0):
        from boiler_ai.daemon import build_core
        from boiler_ai.messages import EventType, Mode, Reason
        from boiler_ai.plant.stepped import SteppedPlant

        self.core = build_core(cfg, policy=policy)
        self.controller = self.core.controller
        self.plant = SteppedPlant(unit, self.core.tag_map, step_s=cfg.cycle_period_s)
        self.unit = unit
        self._active, self._guard = Mode.ACTIVE, Reason.GUARD_BLOCK
        self.cycles = self.active_cycles = self.guard_blocks = 0
        self.releases: Counter[str] = Counter()
        self.release_limits: Counter[str] = Counter()  # a process-limit release's limit, by name
        self._limit_release, self._immediate = Reason.PROCESS_LIMIT_EXCEEDED, EventType.IMMEDIATE_DISABLE
        self.last = None
        self.rearm_after_s, self.rearms = rearm_after_s, 0
        self._no_entry, self._awaiting = EventType.NO_ENTRY, Reason.AWAITING_OPERATOR_REENABLE
        self._since_release: float | None = None  # s since the last release, until the operator re-enables
        self._enable_off = False

    def cycle(self):
        plant, controller = self.plant, self.controller
        snapshot = plant.snapshot() if self.last is None else self._step_and_read()
        wall, mono = plant.clock()
        decision = controller.step(snapshot, wall, mono)
        result = plant.apply(decision.writes) if decision.writes else None
        decision, follow_up = controller.finish(decision, result)
        if follow_up:
            plant.apply(follow_up)
        self.cycles += 1
        self.active_cycles += decision.mode is self._active
        self.guard_blocks += any(e.reason is self._guard for e in decision.events)
        if decision.release_reason is not None:
            self.releases[str(decision.release_reason)] += 1
            self.release_limits.update({limit_named(e.detail) for e in decision.events
                                        if e.type is self._immediate and e.reason is self._limit_release})
        self.last = decision
        if self.rearm_after_s > 0:
            self._operator(decision)
        return decision

    def _operator(self, decision) -> None:
        if self._enable_off:  # AI_ENABLE was off for one cycle: on again, the rising edge re-arms
            self.unit.set_ai_enable(True)
            self._enable_off, self._since_release = False, None
            self.rearms += 1
        elif decision.release_reason is not None:
            self._since_release = 0.0
        elif self._since_release is not None:
            self._since_release += self.plant.step_s
            awaiting = any(e.type is self._no_entry and e.reason == self._awaiting for e in decision.events)
            if awaiting and self._since_release >= self.rearm_after_s:
                self.unit.set_ai_enable(False)
                self._enable_off = True

    def _step_and_read(self):
        self.plant.unit.step(self.plant.step_s)
        return self.plant.snapshot()


def evaluation_config(model: Path, sha256: str, base: Path = EXAMPLE_CONFIG) -> DaemonConfig:
    """The example daemon config in closed loop on the stepped plant with `model` pinned, AI_ENABLE on."""
    cfg = load_config(base)
    return dataclasses.replace(
        cfg, mode="closed_loop", model_path=Path(model).resolve(), model_sha256=sha256,
        plant=SteppedConfig("demo", 0, True),
        engagement=dataclasses.replace(cfg.engagement, arm_on_start=True),
        record=dataclasses.replace(cfg.record, publish_endpoint=None, catchup_endpoint=None), metrics_listen=None,
        cpu_latency_limit_us=None)


class RunFailed(ExpectedError):
    """A worker's run could not start (its config, tag map or model): one message, so it crosses processes."""


def run_one(job: dict) -> dict:
    """One (scenario, seed) in a worker process; a failure an operator can fix comes back as one line."""
    try:
        return _run_one(job)
    except ExpectedError as exc:
        raise RunFailed(f"{job['scenario']} seed {job['seed']}: {exc}") from None


def _run_one(job: dict) -> dict:
    """One (scenario, seed): DCS alone, the policy in closed loop, the DCS echoed, the oracle; every figure."""
    from boiler_ai.sim.scenario import named_scenario
    from boiler_ai.sim.unit import ReferenceUnit

    started = time.perf_counter()
    cfg = evaluation_config(Path(job["model"]), job["sha256"], Path(job["config"]))
    scenario = named_scenario(job["scenario"], job["seed"])
    scenario = dataclasses.replace(scenario, duration_s=min(scenario.duration_s, job["hours"] * 3600.0))
    steps = round(scenario.duration_s / cfg.cycle_period_s)
    cached = _baseline_path(job)
    base = _read_baseline(cached) if cached is not None else None
    if base is None:
        base = _baseline(job, cfg, scenario, steps)
        if cached is not None:
            _write_baseline(cached, base)
    ai = Trace(ReferenceUnit(scenario, seed=job["seed"], tag_map=None))
    ai.unit.set_ai_enable(True)
    loop = ClosedLoop(dataclasses.replace(cfg, plant=SteppedConfig(job["scenario"], job["seed"], True)), ai,
                      rearm_after_s=60.0 * job["rearm_after_min"])
    mvs = loop.controller.mv_names
    offsets: dict[str, list[float]] = {mv: [] for mv in mvs}
    mode_series: list[float] = []
    for _ in range(steps):
        d = loop.cycle()
        if int(ai.t) % TRACE_EVERY_S < cfg.cycle_period_s:
            mode_series.append(1.0 if d.mode is loop._active else 0.0)
            for mv, a, u in zip(mvs, d.written or d.u_dcs, d.u_dcs):
                offsets[mv].append(a - u)
    a, b = ai.figures(), base["dcs"]
    return {"scenario": job["scenario"], "seed": job["seed"], "hours": scenario.duration_s / 3600.0,
            "ai": a, "dcs": b, "dcs_echo": base["dcs_echo"],
            "efficiency_gain_pct_pt": a["efficiency_pct"] - b["efficiency_pct"],
            "heat_rate_gain_pct": 100.0 * (1.0 - a["heat_rate_kj_kwh"] / b["heat_rate_kj_kwh"]),
            "oracle_headroom_pct_pt": base["oracle_headroom_pct_pt"],
            "oracle_heat_rate_headroom_pct": base["oracle_heat_rate_headroom_pct"],
            "ai_time_share": loop.active_cycles / max(loop.cycles, 1), "guard_blocks": loop.guard_blocks,
            "releases": dict(loop.releases), "dcs_echo_releases": base["dcs_echo_releases"], "rearms": loop.rearms,
            "release_limits": dict(loop.release_limits),
            "dcs_echo_release_limits": base.get("dcs_echo_release_limits", {}),
            "dcs_echo_time_share": base["dcs_echo_time_share"],
            "series": {"ai": ai.series, "dcs": base["dcs_series"], "ai_mode": mode_series, "offsets": offsets},
            "baseline_reused": base.get("from_cache", False),
            "wall_s": time.perf_counter() - started}


def _baseline(job: dict, cfg: DaemonConfig, scenario, steps: int) -> dict:
    """What a run compares the policy with and does not depend on it: the unit under the DCS alone, the DCS's
    setpoints echoed through the same core (its releases are the DCS's own fault rate), the oracle."""
    from boiler_ai.control.envelope import load_envelope
    from boiler_ai.sim.oracle import OperatingPointSampler, OracleLimits, scenario_headroom
    from boiler_ai.sim.unit import ReferenceUnit
    from boiler_ai.tagmap import load_tag_map

    sample_s = min(3600.0, scenario.duration_s / 4)
    dcs = Trace(ReferenceUnit(scenario, seed=job["seed"]), OperatingPointSampler(sample_s))
    while dcs.t < scenario.duration_s:
        dcs.step(1.0)
    tag_map = load_tag_map(cfg.tag_map)
    echo_trace = Trace(ReferenceUnit(scenario, seed=job["seed"]))
    echo_trace.unit.set_ai_enable(True)
    echo = ClosedLoop(dataclasses.replace(cfg, plant=SteppedConfig(job["scenario"], job["seed"], True)), echo_trace,
                      policy=echo_policy(tag_map, load_envelope(cfg.envelope, tag_map)),
                      rearm_after_s=60.0 * job["rearm_after_min"])
    for _ in range(steps):
        echo.cycle()
    limits = OracleLimits.from_envelope(cfg.envelope, cfg.tag_map)
    oracle = scenario_headroom(scenario, job["seed"], sample_s, limits, sampler=dcs.sampler).summary()
    return {"dcs": dcs.figures(), "dcs_series": dcs.series, "dcs_echo": echo_trace.figures(),
            "dcs_echo_releases": dict(echo.releases),
            "dcs_echo_release_limits": dict(echo.release_limits),
            "dcs_echo_time_share": echo.active_cycles / max(echo.cycles, 1),
            "oracle_headroom_pct_pt": oracle["mean_headroom_pct"],
            "oracle_heat_rate_headroom_pct": oracle["mean_heat_rate_headroom_pct"]}


def baseline_digest(config: Path) -> str:
    """What the baseline runs depend on besides scenario, seed, hours and the operator: the daemon config,
    its tag map and envelope, and this package's code (any change to the simulator or the core is a new key)."""
    from boiler_ai.sim.unit import default_tag_map_path

    cfg = load_config(config)
    h = hashlib.sha256()
    # the simulated unit reads its own tag map (the shipped one), which the config need not name
    for path in (Path(config), cfg.tag_map, cfg.envelope, default_tag_map_path(),
                 *sorted(Path(__file__).parent.rglob("*.py"))):
        h.update(str(path.name).encode())
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def _baseline_path(job: dict) -> Path | None:
    if job.get("baseline_cache") is None:
        return None
    key = hashlib.sha256(json.dumps([job["baseline_digest"], job["scenario"], job["seed"], job["hours"],
                                     job["rearm_after_min"]]).encode()).hexdigest()[:20]
    return Path(job["baseline_cache"]) / f"{job['scenario']}_{job['seed']}_{key}.json"


def _read_baseline(path: Path) -> dict | None:
    """A cached baseline, or None (absent or unreadable: it is recomputed and rewritten)."""
    try:
        return {**json.loads(path.read_text()), "from_cache": True}
    except (OSError, ValueError):
        return None


def _write_baseline(path: Path, base: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two workers never write one file; a reader sees whole files
    tmp.write_text(json.dumps(base))
    os.replace(tmp, path)


def excess_seconds(ai: dict, dcs: dict) -> float:
    """Seconds over the process limits with the AI beyond the DCS alone's, limit by limit."""
    return sum(max(ai["violation_s"].get(k, 0.0) - dcs["violation_s"].get(k, 0.0), 0.0)
               for k in set(ai["violation_s"]) | set(dcs["violation_s"]))


def steam_band_excess(runs: list[dict], loop: str = "ai") -> float:
    """Seconds with main or hot reheat steam outside the band beyond the DCS alone's, run by run (a run where
    the AI does better does not pay for another). `loop` "dcs_echo": the DCS's own setpoints through the AI
    path, what two runs of one unit differ by without any model (the figure's floor)."""
    return sum(max(r[loop]["steam_outside_band_s"] - r["dcs"]["steam_outside_band_s"], 0.0) for r in runs)


def echo_figures(runs: list[dict]) -> dict:
    """The DCS echo's seconds beyond the DCS alone, as the AI's are counted (none for runs evaluated before
    the echo's figures were kept)."""
    if not runs or not all("dcs_echo" in r for r in runs):
        return {}
    return {"dcs_echo_steam_outside_band_excess_s": round(steam_band_excess(runs, "dcs_echo"), 1),
            "dcs_echo_excess_violation_s": round(sum(excess_seconds(r["dcs_echo"], r["dcs"]) for r in runs), 1)}


def aggregate(runs: list[dict]) -> dict:
    """Figures over all runs (time-weighted), the ones the promotion gate and the issue's targets read."""
    hours = np.array([r["hours"] for r in runs])
    w = hours / hours.sum()

    def mean(key: str) -> float:
        return float(np.dot(w, [r[key] for r in runs]))

    hr_gain, hr_headroom = mean("heat_rate_gain_pct"), mean("oracle_heat_rate_headroom_pct")
    excess = sum(excess_seconds(r["ai"], r["dcs"]) for r in runs)
    releases = sum(sum(r["releases"].values()) for r in runs)
    per_scenario = {}
    for name in dict.fromkeys(r["scenario"] for r in runs):
        mine = [r for r in runs if r["scenario"] == name]
        per_scenario[name] = {
            "seeds": [r["seed"] for r in mine],
            **{k: round(float(np.mean([r[k] for r in mine])), 4)
               for k in ("efficiency_gain_pct_pt", "heat_rate_gain_pct", "oracle_headroom_pct_pt",
                         "oracle_heat_rate_headroom_pct", "ai_time_share")},
            "nox_ratio": round(float(np.mean([r["ai"]["nox_mg_nm3"] / r["dcs"]["nox_mg_nm3"] for r in mine])), 4),
            "guard_blocks": sum(r["guard_blocks"] for r in mine),
            "releases": sum(sum(r["releases"].values()) for r in mine),
            "steam_outside_band_excess_s": round(steam_band_excess(mine), 1), **echo_figures(mine)}
    return {
        "efficiency_gain_pct_pt": round(mean("efficiency_gain_pct_pt"), 4),
        "heat_rate_gain_pct": round(hr_gain, 4),
        "oracle_headroom_pct_pt": round(mean("oracle_headroom_pct_pt"), 4),
        "oracle_heat_rate_headroom_pct": round(hr_headroom, 4),
        "share_of_headroom": round(hr_gain / hr_headroom, 4) if hr_headroom > 0 else None,
        "nox_ratio": round(float(np.dot(w, [r["ai"]["nox_mg_nm3"] for r in runs])
                                 / np.dot(w, [r["dcs"]["nox_mg_nm3"] for r in runs])), 4),
        "co_p99_ppm": round(max(r["ai"]["co_p99_ppm"] for r in runs), 1),
        "dcs_co_p99_ppm": round(max(r["dcs"]["co_p99_ppm"] for r in runs), 1),
        "steam_dev_c": round(float(np.dot(w, [r["ai"]["steam_dev_c"] for r in runs])), 3),
        "dcs_steam_dev_c": round(float(np.dot(w, [r["dcs"]["steam_dev_c"] for r in runs])), 3),
        "steam_outside_band_excess_s": round(steam_band_excess(runs), 1),
        "dcs_steam_outside_band_s": round(sum(r["dcs"]["steam_outside_band_s"] for r in runs), 1),
        **echo_figures(runs),
        "excess_violation_s": round(excess, 1),
        "ai_time_share": round(mean("ai_time_share"), 4),
        "guard_blocks": sum(r["guard_blocks"] for r in runs),
        "releases": releases,
        "releases_per_h": round(releases / hours.sum(), 4),
        "operator_rearms": sum(r.get("rearms", 0) for r in runs),
        "baseline_runs_reused": sum(r.get("baseline_reused", False) for r in runs),
        "dcs_faults_per_h": round(sum(sum(r["dcs_echo_releases"].values()) for r in runs) / hours.sum(), 4),
        "releases_by_reason": dict(sum((Counter(r["releases"]) for r in runs), Counter())),
        "dcs_faults_by_reason": dict(sum((Counter(r["dcs_echo_releases"]) for r in runs), Counter())),
        "releases_by_limit": dict(sum((Counter(r.get("release_limits", {})) for r in runs), Counter())),
        "dcs_faults_by_limit": dict(sum((Counter(r.get("dcs_echo_release_limits", {})) for r in runs), Counter())),
        "worst_scenario_efficiency_gain_pct_pt": round(min(v["efficiency_gain_pct_pt"] for v in per_scenario.values()),
                                                       4),
        "worst_scenario_heat_rate_gain_pct": round(min(v["heat_rate_gain_pct"] for v in per_scenario.values()), 4),
        "runs": len(runs), "simulated_h": round(float(hours.sum()), 2),
        "per_scenario": per_scenario,
    }


def evaluate(model: Path, *, scenarios: list[str], seeds: list[int], hours: float, workers: int,
             config: Path = EXAMPLE_CONFIG, rearm_after_min: float = REARM_AFTER_MIN,
             baseline_cache: Path | None = None, progress=None) -> tuple[dict, list[dict]]:
    from boiler_ai.control.model_contract import read_contract

    model = Path(model)
    read_contract(model)  # a file that is not a model fails here, in one line, before any worker starts
    sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
    # which envelope the figures are measured under (read before the runs, as each worker reads it; as
    # Envelope.sha256): the same model under another envelope is another evaluation
    envelope_sha256 = hashlib.sha256(load_config(config).envelope.read_bytes()).hexdigest()
    cache = {} if baseline_cache is None else {"baseline_cache": str(baseline_cache),
                                                "baseline_digest": baseline_digest(config)}
    jobs = [{"model": str(model), "sha256": sha256, "config": str(config), "scenario": s, "seed": k, "hours": hours,
             "rearm_after_min": rearm_after_min, **cache} for s in scenarios for k in seeds]
    order = longest_first(jobs)
    runs: list[dict] = [{}] * len(jobs)
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, run in zip(order, pool.map(run_one, [jobs[i] for i in order])):
            runs[i] = run
            if progress is not None:
                progress(run)
    return {"model": str(model), "model_sha256": sha256, "envelope_sha256": envelope_sha256,
            "rearm_after_min": rearm_after_min, **aggregate(runs)}, runs


def longest_first(jobs: list[dict]) -> list[int]:
    """The jobs' indices, longest simulated run first: the short ones (a one-hour mill trip, about a third of a
    four-hour run's wall time) fill in at the end, so no worker idles through another's last long run."""
    from boiler_ai.sim.scenario import named_scenario

    def simulated_s(job: dict) -> float:
        return min(named_scenario(job["scenario"], job["seed"]).duration_s, job["hours"] * 3600.0)

    return sorted(range(len(jobs)), key=lambda i: -simulated_s(jobs[i]))


def over_opcua(model: Path, sha256: str, config: Path, scenario: str, seed: int, minutes: float,
               speed: float) -> dict:
    """The model through the whole daemon (OPC UA adapter, core, durable log) against the simulated unit
    served over OPC UA at `speed`, then the DCS alone on the same scenario and seed: what a plant's
    commissioning run would see, beside the stepped runs."""
    import asyncio
    import tempfile

    from boiler_ai.demo import demo_config, free_port, run_dcs_alone, run_with_daemon

    base = dataclasses.replace(load_config(config), model_path=Path(model).resolve(), model_sha256=sha256)
    with tempfile.TemporaryDirectory(prefix="boiler-ai-evaluate-") as tmp:
        cfg = demo_config(base, f"opc.tcp://127.0.0.1:{free_port()}", speed, Path(tmp) / "log")
        ai = asyncio.run(run_with_daemon(cfg, scenario, seed, minutes, speed))
    dcs = run_dcs_alone(scenario, seed, minutes)
    return {"scenario": scenario, "seed": seed, "minutes": minutes, "speed": speed,
            "efficiency_gain_pct_pt": round(ai["efficiency_pct"] - dcs["efficiency_pct"], 4),
            "heat_rate_gain_pct": round(100.0 * (1.0 - ai["heat_rate_kj_kwh"] / dcs["heat_rate_kj_kwh"]), 4),
            "ai_time_share": ai["active_share"], "releases": ai["releases"], "cycles": ai["cycles"],
            "overruns": ai["overruns"], "excess_violation_s": round(excess_seconds(ai, dcs), 1)}


def seeds_from(text: str) -> list[int]:
    from boiler_ai.sim.scenario import HELD_OUT_SEEDS

    if text == "held-out":
        return list(HELD_OUT_SEEDS)
    try:
        seeds = [int(s) for s in text.split(",") if s]
    except ValueError:
        raise ConfigError("command line", "--seeds", f"expected 'held-out' or comma-separated seeds, got {text!r}")
    bad = [s for s in seeds if s not in HELD_OUT_SEEDS]
    if bad or not seeds:
        raise ConfigError("command line", "--seeds", f"policies are evaluated on held-out seeds only "
                                                     f"({HELD_OUT_SEEDS[0]}-{HELD_OUT_SEEDS[-1]}); got {bad or text!r}")
    return seeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="ONNX policy with the model contract")
    parser.add_argument("--scenarios", default=None, help="comma-separated scenario names (default: the standard set)")
    parser.add_argument("--seeds", default="held-out", help="'held-out' (all of them) or a comma-separated subset")
    parser.add_argument("--max-seeds", type=int, default=None, help="use only the first N of those seeds")
    parser.add_argument("--hours", type=float, default=24.0, help="cap on simulated hours per run (default 24)")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    parser.add_argument("--config", type=Path, default=EXAMPLE_CONFIG, help="daemon config to evaluate with")
    parser.add_argument("--rearm-after-min", type=float, default=REARM_AFTER_MIN,
                        help="minutes after a release until the simulated operator re-enables AI (0: never; "
                             f"default {REARM_AFTER_MIN:g})")
    parser.add_argument("--baseline-cache", type=Path, default=None, metavar="DIR",
                        help="keep the runs that do not depend on the model (the DCS alone, the DCS echo, the oracle) "
                             "in DIR, keyed by scenario, seed, hours, operator, config, tag map, envelope and this "
                             "package's code, and reuse them in later evaluations")
    parser.add_argument("--opcua", default="demo", metavar="SCENARIO",
                        help="also run this scenario (first selected seed) through the whole daemon against the "
                             "simulated unit served over OPC UA, against the DCS alone ('none': skip; default demo)")
    parser.add_argument("--opcua-minutes", type=float, default=30.0, help="simulated minutes of the OPC UA run")
    parser.add_argument("--opcua-speed", type=float, default=60.0, help="its simulated seconds per wall second")
    parser.add_argument("--report", type=Path, default=None, help="write report.html, PNG plots and evaluation.json")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary (last line)")


def options(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    from boiler_ai.sim.scenario import STANDARD_SCENARIOS

    scenarios = list(STANDARD_SCENARIOS) if args.scenarios is None else [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in STANDARD_SCENARIOS]
    if unknown or not scenarios:
        raise ConfigError("command line", "--scenarios", f"unknown scenario {unknown[0] if unknown else ''!r} "
                                                         f"(standard set: {', '.join(STANDARD_SCENARIOS)})")
    seeds = seeds_from(args.seeds)
    if args.max_seeds is not None:
        if args.max_seeds < 1:
            raise ConfigError("command line", "--max-seeds", "must be >= 1")
        seeds = seeds[:args.max_seeds]
    if not (math.isfinite(args.hours) and args.hours > 0) or args.workers < 1:
        raise ConfigError("command line", "--hours/--workers", "must be positive")
    if not (math.isfinite(args.rearm_after_min) and args.rearm_after_min >= 0):
        raise ConfigError("command line", "--rearm-after-min", f"expected minutes >= 0, got {args.rearm_after_min}")
    if args.opcua != "none":  # checked before hours of stepped runs, not after
        check_run(args.opcua, args.opcua_minutes, args.opcua_speed, ("--opcua", "--opcua-minutes", "--opcua-speed"))
    if not Path(args.model).is_file():
        raise ConfigError(args.model, "", "no such model file")
    return scenarios, seeds


def run(args: argparse.Namespace) -> int:
    scenarios, seeds = options(args)
    started = time.monotonic()

    def progress(r: dict) -> None:
        print(f"{r['scenario']} seed {r['seed']}: efficiency {r['efficiency_gain_pct_pt']:+.3f} pct-pt, heat rate "
              f"{r['heat_rate_gain_pct']:+.3f} %, oracle {r['oracle_heat_rate_headroom_pct']:.3f} %, AI mode "
              f"{r['ai_time_share']:.1%} ({r['wall_s']:.0f} s)", file=sys.stderr, flush=True)

    summary, runs = evaluate(args.model, scenarios=scenarios, seeds=seeds, hours=args.hours, workers=args.workers,
                             config=args.config, rearm_after_min=args.rearm_after_min,
                             baseline_cache=args.baseline_cache, progress=progress)
    if args.opcua != "none":
        summary["opcua"] = over_opcua(args.model, summary["model_sha256"], args.config, args.opcua, seeds[0],
                                      args.opcua_minutes, args.opcua_speed)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    if args.report is not None:
        from boiler_ai.evaluate_report import write_report

        path = write_report(args.report, summary, runs)
        print(f"report: {path}", file=sys.stderr)
    if not args.json:
        print(render(summary))
    print(json.dumps(summary))
    return 0


def render(s: dict) -> str:
    lines = [f"{'scenario':18}{'eff pct-pt':>11}{'HR gain %':>11}{'oracle HR %':>12}{'NOx ratio':>10}{'AI mode':>9}"
             f"{'blocks':>8}{'releases':>9}"]
    for name, r in s["per_scenario"].items():
        lines.append(f"{name:18}{r['efficiency_gain_pct_pt']:>+11.3f}{r['heat_rate_gain_pct']:>+11.3f}"
                     f"{r['oracle_heat_rate_headroom_pct']:>12.3f}{r['nox_ratio']:>10.3f}{r['ai_time_share']:>9.1%}"
                     f"{r['guard_blocks']:>8}{r['releases']:>9}")
    lines.append(f"all ({s['runs']} runs, {s['simulated_h']} h): efficiency {s['efficiency_gain_pct_pt']:+.3f} pct-pt "
                 f"(oracle {s['oracle_headroom_pct_pt']:.3f}), heat rate {s['heat_rate_gain_pct']:+.3f} % (oracle "
                 f"{s['oracle_heat_rate_headroom_pct']:.3f} %, share {s['share_of_headroom']}), excess limit seconds "
                 f"{s['excess_violation_s']}, CO p99 {s['co_p99_ppm']} ppm")
    lines.append(f"releases {s['releases_per_h']}/h (the DCS echo's {s['dcs_faults_per_h']}/h); process limits "
                 f"released on: {tally(s['releases_by_limit'])} (the DCS echo: {tally(s['dcs_faults_by_limit'])})")
    if "opcua" in s:
        o = s["opcua"]
        lines.append(f"through OPC UA ({o['scenario']} seed {o['seed']}, {o['minutes']:g} min at {o['speed']:g}x, the "
                     f"whole daemon): efficiency {o['efficiency_gain_pct_pt']:+.3f} pct-pt, heat rate "
                     f"{o['heat_rate_gain_pct']:+.3f} %, AI mode {o['ai_time_share']:.1%}, releases "
                     f"{sum(o['releases'].values())}, overruns {o['overruns']}, excess limit seconds "
                     f"{o['excess_violation_s']}")
    return "\n".join(lines)


def tally(counts: dict[str, int]) -> str:
    """{"co_max": 2, "nox_max": 1} -> "co_max x2, nox_max x1" ("none" when empty)."""
    return ", ".join(f"{name} x{n}" for name, n in sorted(counts.items())) or "none"
