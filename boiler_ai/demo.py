"""`boiler-ai demo`: the daemon against the simulated unit, then the DCS alone, side by side.

1. The simulated reference unit is served over OPC UA on loopback at `--speed` times real time.
2. The daemon runs against it with the example config (deploy/examples/reference_unit.yaml) in
   closed loop; the operator enables AI mode at the start.
3. The same scenario and seed then run under the DCS alone (stepping API, no OPC UA).
4. A summary compares efficiency, NOx, CO, spray, process-limit violations and releases by reason.
5. With `--log-dir`, the daemon's decision log is kept there and `boiler-ai report` is written beside
   it (report.html in the same folder); without it the log goes to a temporary folder. The DCS-alone
   run is then served over OPC UA too, with the daemon in observe mode recording it into the same log,
   so the report has the same scenario with the AI on and off to compare.

When this machine cannot keep the speed asked (the daemon's cycles overrun their period, or the
simulator falls behind), the comparison measures the machine rather than the AI: the demo says so.

Both runs are measured on the simulator's true (noise-free) performance, sampled every simulated second.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import logging
import math
import socket
import tempfile
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

from boiler_ai.config import DaemonConfig, load_config
from boiler_ai.logs import event
from boiler_ai.strict import ConfigError

log = logging.getLogger("boiler_ai.demo")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "deploy" / "examples" / "reference_unit.yaml"
# The promoted offline-RL policy (`boiler-ai promote`; training/README.md): the demo runs it when present
PROMOTED_MODEL = ROOT / "models" / "offline-rl-v6"
# Above this share of overrunning cycles (or of simulated time lost), the run does not show the AI's effect
OVERRUN_WARN_SHARE = 0.05
KPIS = ("efficiency_pct", "efficiency_lhv_pct", "heat_rate_kj_kwh", "nox_mg_nm3", "co_ppm", "o2_pct", "spray_tph",
        "rh_spray_tph")


class UnitTap:
    """Wraps a simulated unit: after every step it hands the unit's true performance to `observe` and
    counts the seconds each process limit is crossed; the rest of the unit's API passes through."""

    def __init__(self, unit):
        self.unit = unit
        self.violation_s: Counter[str] = Counter()

    def __getattr__(self, name):
        return getattr(self.unit, name)

    @property
    def t(self) -> float:
        return self.unit.t

    def step(self, dt: float = 1.0) -> None:
        self.unit.step(dt)
        perf = self.unit.performance()
        for limit, crossed in perf["violations"].items():
            if crossed:
                self.violation_s[limit] += dt
        self.observe(perf, dt)

    def observe(self, perf: dict, dt: float) -> None:
        raise NotImplementedError


class KpiMeter(UnitTap):
    """Running sums of the demo's KPIs, one sample per step."""

    def __init__(self, unit):
        super().__init__(unit)
        self.sums = dict.fromkeys(KPIS, 0.0)
        self.samples = 0

    def observe(self, perf: dict, dt: float) -> None:
        for key in KPIS:
            self.sums[key] += perf[key]
        self.samples += 1

    def summary(self) -> dict:
        n = max(self.samples, 1)
        out = {key: round(self.sums[key] / n, 3) for key in KPIS}
        out["violation_s"] = dict(self.violation_s)
        out["simulated_s"] = self.samples
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RUN_OPTIONS = ("--scenario", "--minutes", "--speed")


def check_run(scenario: str, minutes: float, speed: float, options: tuple[str, str, str] = RUN_OPTIONS) -> None:
    """A served run's scenario, minutes and speed; an error names the command-line `options` they came from."""
    from boiler_ai.sim.scenario import SCENARIOS

    if scenario not in SCENARIOS:
        raise ConfigError("command line", options[0], f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
    for option, value in zip(options[1:], (minutes, speed)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError("command line", option, f"expected a positive number, got {value:g}")


def demo_config(base: DaemonConfig, endpoint: str, speed: float, log_dir: Path) -> DaemonConfig:
    # the operator has AI_ENABLE on from the start of the demo; a demo does not pin the machine's cores
    return dataclasses.replace(
        base, mode="closed_loop", time_scale=speed,
        engagement=dataclasses.replace(base.engagement, arm_on_start=True),
        plant=dataclasses.replace(base.plant, endpoint=endpoint),
        record=dataclasses.replace(base.record, log_dir=log_dir, publish_endpoint=None, catchup_endpoint=None,
                                   fsync="never"),
        metrics_listen=None, cpu_latency_limit_us=None)


async def run_with_daemon(cfg: DaemonConfig, scenario: str, seed: int, minutes: float, speed: float) -> dict:
    from boiler_ai.daemon import build_core, make_plant, run_daemon
    from boiler_ai.sim.scenario import named_scenario
    from boiler_ai.sim.serve import SimulatedUnitServer
    from boiler_ai.sim.unit import ReferenceUnit

    meter = KpiMeter(ReferenceUnit(scenario=named_scenario(scenario, seed), seed=seed))
    sim = SimulatedUnitServer(meter, endpoint=cfg.plant.endpoint, speed=speed, duration_s=minutes * 60)
    await sim.set_ai_enable(cfg.mode != "observe")
    await sim.start()
    core = build_core(cfg)
    stop = asyncio.Event()
    try:
        plant, pace = make_plant(core)
        daemon_task = asyncio.create_task(run_daemon(core, plant, stop, pace=pace))
        await sim.wait()
        stop.set()
        daemon = await daemon_task
    finally:
        stop.set()
        await sim.stop()
    releases = dict(daemon.metrics.releases)
    summary = meter.summary()
    summary.update(releases=releases, cycles=daemon.metrics.cycles, model=core.controller.settings.model_id,
                   active_share=round(daemon.active_cycles / max(daemon.metrics.cycles, 1), 3),
                   overruns=daemon.overruns, sim_lag_s=round(sim.lag_s, 1))
    return summary


def run_dcs_alone(scenario: str, seed: int, minutes: float) -> dict:
    from boiler_ai.sim.scenario import named_scenario
    from boiler_ai.sim.unit import ReferenceUnit

    meter = KpiMeter(ReferenceUnit(scenario=named_scenario(scenario, seed), seed=seed))
    while meter.t < minutes * 60:
        meter.step(1.0)
    summary = meter.summary()
    summary.update(releases={}, active_share=0.0)
    return summary


def with_model(cfg: DaemonConfig, folder: Path | None) -> DaemonConfig:
    """The config with a promoted model's policy.onnx pinned to the sha256 its model card records."""
    if folder is None:
        return cfg
    card = folder / "MODEL_CARD.json"
    try:
        sha256 = json.loads(card.read_text())["policy_sha256"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(card, "policy_sha256", f"not a promoted model's card ({exc})") from None
    return dataclasses.replace(cfg, model_path=folder / "policy.onnx", model_sha256=sha256)


def render(ai: dict, dcs: dict, args) -> str:
    rows = [("boiler efficiency, HHV (%)", "efficiency_pct", 2),
            ("boiler efficiency, LHV (%)", "efficiency_lhv_pct", 2),
            ("unit heat rate (kJ/kWh net of fans)", "heat_rate_kj_kwh", 0), ("excess O2, dry (%)", "o2_pct", 2),
            ("NOx before SCR (mg/Nm3 @6% O2)", "nox_mg_nm3", 0),
            ("CO (ppm)", "co_ppm", 0), ("spray flow, all stages (t/h)", "spray_tph", 1),
            ("  of which reheat spray (t/h)", "rh_spray_tph", 1)]
    lines = [f"boiler-ai demo: scenario {args.scenario!r}, seed {args.seed}, {args.minutes:g} simulated minutes "
             f"at {args.speed:g}x, model {ai['model']}",
             f"{'':34}{'AI (daemon)':>14}{'DCS alone':>14}{'difference':>14}"]
    for label, key, digits in rows:
        lines.append(f"{label:34}{ai[key]:>14.{digits}f}{dcs[key]:>14.{digits}f}{ai[key] - dcs[key]:>+14.{digits}f}")
    lines.append(f"{'process-limit violations (s)':34}{sum(ai['violation_s'].values()):>14.0f}"
                 f"{sum(dcs['violation_s'].values()):>14.0f}")
    lines.append(f"{'time in AI mode':34}{ai['active_share']:>14.1%}{dcs['active_share']:>14.1%}")
    releases = ", ".join(f"{reason} x{n}" for reason, n in sorted(ai["releases"].items())) or "none"
    lines.append(f"releases to the DCS by reason: {releases}")
    lines.append(f"daemon cycles {ai['cycles']}, cycle overruns {ai['overruns']}, simulator lag {ai['sim_lag_s']} s")
    warning = speed_warning(ai, args)
    if warning:
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)


def speed_warning(ai: dict, args) -> str | None:
    """Why the comparison does not hold when this machine could not keep the speed asked, else None."""
    overrun_share = ai["overruns"] / max(ai["cycles"], 1)
    lag_share = ai["sim_lag_s"] * args.speed / max(args.minutes * 60, 1)  # simulated seconds lost
    if overrun_share <= OVERRUN_WARN_SHARE and lag_share <= OVERRUN_WARN_SHARE:
        return None
    return (f"this machine could not keep {args.speed:g}x: {ai['overruns']} of {ai['cycles']} daemon cycles overran "
            f"their period and the simulator lost {ai['sim_lag_s']} s; the AI ran on late data, so this comparison "
            f"is not meaningful. Run with a lower --speed.")


def write_demo_report(log_dir: Path, minutes: float) -> Path:
    """`boiler-ai report` of the demo's log, beside it; needs the report extra (matplotlib). Its blocks are
    shortened so a short demo still has several on each side."""
    if importlib.util.find_spec("matplotlib") is None:
        return Path("not written: the report needs matplotlib (pip install 'boiler-ai[report]')")
    from boiler_ai.report import default_options, write_report

    out = log_dir / "report.html"
    opts = default_options()
    opts.block_s = min(opts.block_s, max(30.0, minutes * 60 / 8))
    opts.settle_s = min(opts.settle_s, opts.block_s)
    write_report(str(log_dir), out, opts)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=30.0, help="simulated minutes per run (default 30)")
    parser.add_argument("--speed", type=float, default=60.0, help="simulated seconds per wall second (default 60)")
    parser.add_argument("--scenario", default="demo", help="simulator scenario (default demo)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", type=Path, default=EXAMPLE_CONFIG, help="daemon config to start from")
    parser.add_argument("--model", type=Path, default=None,
                        help="a promoted model's folder (models/<id>/: policy.onnx, its sha256 pinned by its "
                             "MODEL_CARD.json) to run instead of the config's model (default: models/offline-rl-v6 "
                             "when it is there, else the config's)")
    parser.add_argument("--json", action="store_true", help="also print the summary as one JSON object, last line")
    parser.add_argument("--log-dir", type=Path,
                        help="keep the daemon's decision log in this folder and write report.html beside it "
                             "(default: a temporary folder, deleted)")


def run(args: argparse.Namespace) -> int:
    log.setLevel(logging.INFO)  # the demo's progress; the daemon's own lines only from warning up

    started = time.monotonic()
    base = with_model(load_config(args.config), args.model if args.model is not None else
                      PROMOTED_MODEL if (PROMOTED_MODEL / "policy.onnx").is_file() else None)
    check_run(args.scenario, args.minutes, args.speed)
    kept = args.log_dir is not None
    with (nullcontext(str(args.log_dir)) if kept else tempfile.TemporaryDirectory(prefix="boiler-ai-demo-")) as tmp:
        log_dir = Path(tmp) if kept else Path(tmp) / "log"
        cfg = demo_config(base, f"opc.tcp://127.0.0.1:{free_port()}", args.speed, log_dir)
        event(log, logging.INFO, "running the daemon against the simulated unit", minutes=args.minutes,
              speed=args.speed, scenario=args.scenario, seed=args.seed)
        ai = asyncio.run(run_with_daemon(cfg, args.scenario, args.seed, args.minutes, args.speed))
    warning = speed_warning(ai, args)
    if warning:
        event(log, logging.WARNING, warning)
    event(log, logging.INFO, "running the same scenario under the DCS alone")
    if kept:  # recorded by the daemon in observe mode, for the report's AI-off periods
        observe = dataclasses.replace(cfg, mode="observe", model_path=None, model_sha256=None,
                                      plant=dataclasses.replace(cfg.plant,
                                                                endpoint=f"opc.tcp://127.0.0.1:{free_port()}"))
        dcs = asyncio.run(run_with_daemon(observe, args.scenario, args.seed, args.minutes, args.speed))
    else:
        dcs = run_dcs_alone(args.scenario, args.seed, args.minutes)
    print(render(ai, dcs, args))
    if kept:
        print(f"decision log: {log_dir}")
        print(f"report: {write_demo_report(log_dir, args.minutes)}")
    print(f"(wall time {time.monotonic() - started:.0f} s)")
    if args.json:
        print(json.dumps({"scenario": args.scenario, "seed": args.seed, "minutes": args.minutes, "speed": args.speed,
                          "ai": ai, "dcs": dcs}))
    return 0
