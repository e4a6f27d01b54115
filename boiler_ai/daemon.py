"""`boiler-ai run CONFIG`: the long-running controller daemon for one unit (the shell around the core).

Each cycle: one batch read, the pure controller core (a `Decision`), one batch write (AI setpoints,
AI_REQUEST, AI_HEARTBEAT) with read-back (the `Outcome`, with every stage's time), then the `Record`
(stamped with the log's next seq) to the durable log, which publishes it. SIGTERM or SIGINT release
control through the normal path (AI_REQUEST dropped, DCS confirmation awaited for a few cycles),
flush the log, and exit. SIGHUP (systemctl reload) takes the config file's `model:` and `challenger:`
between two cycles, engaged or not (boiler-ai model switch); any other change needs a restart. The
plant is the config's: a DCS over OPC UA, paced by the wall clock, or the simulated unit stepped in
process, as fast as it goes (`plant: {kind: stepped}`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import zmq

from boiler_ai import __version__, status_codes
from boiler_ai.config import DaemonConfig, RecordConfig, SteppedConfig, check_unit_matches, load_config
from boiler_ai.control.cycle import Controller, ControllerSettings
from boiler_ai.control.envelope import Envelope, load_envelope
from boiler_ai.control.guard import Guard
from boiler_ai.control.policy import PolicyRunner
from boiler_ai.control.projector import Projector
from boiler_ai.host import CpuLatencyLimit
from boiler_ai.logs import event, setup_logging
from boiler_ai.messages import (
    STAGES,
    Event,
    EventType,
    Mode,
    ModelRef,
    Origin,
    Outcome,
    Reason,
    Record,
    StageTimings,
)
from boiler_ai.metrics import Metrics, MetricsServer
from boiler_ai.plant.types import PlantIO
from boiler_ai.preflight import preflight, server_keys
from boiler_ai.record.recorder import Recorder
from boiler_ai.service import ServiceManager
from boiler_ai.strict import ConfigError
from boiler_ai.tagmap import TagMap, load_tag_map

SOFTWARE = f"boiler-ai {__version__}"

log = logging.getLogger("boiler_ai.daemon")

# What an observe-mode record names as its model: no model, no file hash (docs/DECISION_RECORD.md)
NO_MODEL_ID = "none"
NO_MODEL_SHA256 = "0" * 64
STOP_CONFIRM_CYCLES = 10  # cycles to wait for the DCS to confirm AI_ACTIVE false at shutdown
# The events that say why the AI is not in control (what the daemon waits for), as AI_REASON takes them
WAIT_EVENTS = frozenset({EventType.IMMEDIATE_DISABLE, EventType.SOFT_DISABLE, EventType.NO_ENTRY})


@dataclass
class Core:
    """Everything loaded from a config that the controller core needs."""

    config: DaemonConfig
    tag_map: TagMap
    envelope: Envelope
    controller: Controller
    origin: Origin  # who decides: the same in every record of this run


def build_core(cfg: DaemonConfig, policy=None) -> Core:
    """`policy`: anything with PolicyRunner's interface, in place of the config's model (a training agent)."""
    tag_map = load_tag_map(cfg.tag_map)
    check_unit_matches(cfg, tag_map.unit)
    envelope = load_envelope(cfg.envelope, tag_map)
    policy = policy if policy is not None else None if cfg.model_path is None else load_policy(
        cfg, tag_map, cfg.model_path, cfg.model_sha256)
    model = ModelRef(NO_MODEL_ID, NO_MODEL_SHA256) if policy is None else ModelRef(policy.model_id, cfg.model_sha256)
    settings = ControllerSettings(
        unit_id=cfg.unit, closed_loop=cfg.mode == "closed_loop", cycle_period_s=cfg.cycle_period_s,
        time_scale=cfg.time_scale, healthy_cycles_to_engage=cfg.engagement.healthy_cycles_to_engage,
        grant_timeout_cycles=cfg.engagement.grant_timeout_cycles, arm_on_start=cfg.engagement.arm_on_start,
        max_spread=cfg.policy.max_spread,
        out_of_depth_hold_s=cfg.policy.out_of_depth_hold_s, state_every_cycles=cfg.record.state_every_cycles,
        model_id=model.id, model_sha256=model.sha256, config_hash=cfg.config_hash())
    controller = Controller(settings, tag_map, envelope, Projector(envelope), Guard(cfg.envelope, tag_map), policy,
                            load_challenger(cfg, tag_map))
    origin = Origin(cfg.unit, cfg.cycle_period_s, model,
                    tuple(controller.mv_names), settings.config_hash, SOFTWARE)
    return Core(cfg, tag_map, envelope, controller, origin)


def load_policy(cfg: DaemonConfig, tag_map: TagMap, path: Path, sha256: str) -> PolicyRunner:
    return PolicyRunner(path, tag_map=tag_map, expected_sha256=sha256, mv_names=list(tag_map.manipulated),
                        envelope_margin=cfg.policy.training_envelope_margin,
                        cycle_period_s=cfg.cycle_period_s, cycle_period_from=str(cfg.source))


def load_challenger(cfg: DaemonConfig, tag_map: TagMap,
                    running: Mapping[str, PolicyRunner] = {}) -> tuple[PolicyRunner, ModelRef] | None:
    """The config's challenger; `running` (sha256 -> runner) reuses a runner already observing."""
    c = cfg.challenger
    if c is None:
        return None
    runner = running.get(c.sha256) or load_policy(cfg, tag_map, c.path, c.sha256)
    return runner, ModelRef(runner.model_id, c.sha256)


def reload_models(core: Core, cfg: DaemonConfig) -> str:
    """Take the models of `cfg` (the config file as it is now) into the running core, between cycles.

    Only `model:` and `challenger:` may differ from the config the daemon runs: anything else needs a
    restart (ConfigError). A model already running (as active or challenger) keeps its runner, so its input
    history carries over and a switch to the challenger is seamless. Returns what changed, for the log."""
    old = core.config
    cfg = replace(cfg, time_scale=old.time_scale)  # --sim-speed is not in the file
    same = replace(cfg, model_path=old.model_path, model_sha256=old.model_sha256, challenger=old.challenger)
    # (the mode is part of `same`: observe mode, without a model, never reaches the swap below)
    if (same != old or load_tag_map(cfg.tag_map) != core.tag_map
            or hashlib.sha256(cfg.envelope.read_bytes()).hexdigest() != core.envelope.sha256):
        raise ConfigError(str(cfg.source), "", "changed beyond model: and challenger: (the file, its tag map or "
                                               "envelope; restart the daemon to apply that); the models were not "
                                               "reloaded either")
    controller = core.controller
    running = {old.model_sha256: controller.policy} if controller.policy is not None else {}
    if controller.challenger is not None:
        running[old.challenger.sha256] = controller.challenger[0]
    policy = None if cfg.model_path is None else (
        running.get(cfg.model_sha256) or load_policy(cfg, core.tag_map, cfg.model_path, cfg.model_sha256))
    challenger = load_challenger(cfg, core.tag_map, running)
    controller.use_models(policy, cfg.model_sha256 or NO_MODEL_SHA256, challenger)
    core.config = cfg
    core.origin = replace(core.origin, model=ModelRef(controller.settings.model_id, controller.settings.model_sha256),
                          config_hash=cfg.config_hash())
    before = f"active {old.model_sha256}, challenger {None if old.challenger is None else old.challenger.sha256}"
    return f"{before} -> active {cfg.model_sha256}, challenger {None if challenger is None else cfg.challenger.sha256}"


def open_recorder(cfg: DaemonConfig) -> Recorder:
    """The durable log (which publishes) and the catch-up service, as the config says."""
    return recorder_for(cfg.record, cfg.unit, source=str(cfg.source))


def recorder_for(rc: RecordConfig, unit_id: str, *, context: zmq.Context | None = None,
                 source: str = "config") -> Recorder:
    """A Recorder from the config's `record:` section: the one place the config's units (MB, days) become
    the log's (bytes, seconds)."""
    mib = 1024 * 1024
    return Recorder(rc.log_dir, unit_id, publish_endpoint=rc.publish_endpoint, catchup_endpoint=rc.catchup_endpoint,
                    context=context, curve=server_keys(rc, source),
                    fsync=rc.fsync, fsync_interval_ms=rc.fsync_interval_ms,
                    segment_max_bytes=int(rc.segment_max_mb * mib), segment_max_age_s=rc.segment_max_age_s,
                    retention_s=rc.retention_days * 86400.0 if rc.retention_days > 0 else None,
                    retention_max_bytes=None if rc.retention_max_mb is None else int(rc.retention_max_mb * mib),
                    queue_size=rc.queue_size)


@dataclass(frozen=True)
class Pace:
    """How the daemon keeps time: `now()` gives the (wall, monotonic) times handed to the core, and
    cycles start `period_s` wall seconds apart (0: each as soon as the last is done)."""

    now: Callable[[], tuple[float, float]]
    period_s: float

    @classmethod
    def wall_clock(cls, cfg: DaemonConfig) -> Pace:
        return cls(lambda: (time.time(), time.monotonic()), cfg.cycle_period_s / cfg.time_scale)


class StageClock:
    """Times the cycle's stages: `lap(stage)` adds the time since the previous lap to that stage."""

    __slots__ = ("_last", "_ns")

    def __init__(self) -> None:
        self._ns = dict.fromkeys(STAGES, 0)
        self._last = 0

    def start(self) -> None:
        for stage in self._ns:
            self._ns[stage] = 0
        self._last = time.perf_counter_ns()

    def lap(self, stage: str) -> None:
        now = time.perf_counter_ns()
        self._ns[stage] += now - self._last
        self._last = now

    def timings(self) -> StageTimings:
        ns = self._ns
        return StageTimings(ns["read"] // 1000, ns["validate"] // 1000, ns["observe"] // 1000, ns["infer"] // 1000,
                            ns["project"] // 1000, ns["guard"] // 1000, ns["write"] // 1000, ns["record"] // 1000)


class Daemon:
    """Runs the cycle against a PlantIO at the pace's period until asked to stop."""

    def __init__(self, core: Core, plant: PlantIO, recorder: Recorder, metrics: Metrics | None = None,
                 pace: Pace | None = None, service: ServiceManager | None = None,
                 reload: asyncio.Event | None = None):
        self.core = core
        self.reload = reload  # set (SIGHUP): take the config file's model: and challenger: before the next cycle
        self.controller = core.controller
        self.plant = plant
        self.recorder = recorder
        self.metrics = metrics or Metrics(core.config.unit)
        self.pace = pace or Pace.wall_clock(core.config)
        self.stages = StageClock()
        self.overruns = 0
        self.active_cycles = 0
        self.service = service or ServiceManager({})  # none: a daemon run by hand or in a test
        self.waiting: tuple[str, ...] | None = None  # the reasons last logged as what the daemon waits for

    async def run(self, stop: asyncio.Event, max_cycles: int | None = None) -> None:
        period = self.pace.period_s  # wall seconds per cycle
        next_start = time.monotonic()
        cycles = 0
        while not stop.is_set() and (max_cycles is None or cycles < max_cycles):
            if self.reload is not None and self.reload.is_set():
                self.reload.clear()
                self.reload_models()
            try:
                await self.cycle()
            except Exception:
                # A bug, not a plant fault: drop AI_REQUEST if we still can and exit non-zero. The
                # service manager restarts us after a pause; the operator must re-enable AI mode.
                log.exception("control cycle failed; releasing and exiting")
                if self.controller.settings.closed_loop:
                    await self.plant.write({self.core.tag_map.handshake["ai_request"]: 0.0})
                raise
            cycles += 1
            if not self.recorder.log.writer_stalled:
                # healthy: the cycle ran to its end and the log keeps up. A plant fault (a failed read, a bad
                # input) is a healthy cycle that records it: a restart would not mend the plant.
                self.service.healthy_cycle()
            if period <= 0:
                await asyncio.sleep(0)  # free-running: let signals and the metrics endpoint in
                continue
            next_start += period
            delay = next_start - time.monotonic()
            if delay < 0:
                # Late: start the next cycle now, and do not try to catch up with a burst.
                self.overruns += 1
                self.metrics.overrun()
                next_start = time.monotonic()
                delay = 0
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
        self.service.stopping()
        await self.release_and_stop(period)

    async def cycle(self, extra_events: Sequence[Event] = ()) -> Record:
        stages = self.stages
        stages.start()
        snapshot = await self.plant.read()
        stages.lap("read")
        wall, mono = self.pace.now()
        decision = self.controller.step(snapshot, wall, mono, self._record_durable(extra_events), stages.lap)
        result = await self.plant.write(decision.writes) if decision.writes else None
        decision, follow_up = self.controller.finish(decision, result)
        if follow_up:
            # the write failed while in control: drop AI_REQUEST in the same cycle
            await self.plant.write(follow_up)
        stages.lap("write")
        decision_log = self.recorder.log
        read_back = self.controller.read_back(result)
        stages.lap("record")
        record = Record(decision_log.next_seq, self.core.origin, decision, Outcome(result, read_back, stages.timings()),
                        decision_log.dropped_count, decision_log.publish_drop_count)
        # A plant paced by nothing but the cycle itself (stepped) waits for the log rather than lose records
        self.recorder.append(record, wait=self.pace.period_s == 0)
        self._report(record)
        return record

    def reload_models(self) -> None:
        """Between cycles: the models the config file names now (boiler-ai model install/switch/rollback)."""
        try:
            change = reload_models(self.core, load_config(self.core.config.source))
        except ConfigError as exc:
            event(log, logging.ERROR, "reload refused: running on with the models as they were", error=str(exc))
            return
        event(log, logging.WARNING, "models reloaded", change=change, mode=self.controller.engagement.mode.value,
              model=self.controller.settings.model_id)

    def _record_durable(self, extra_events: Sequence[Event]) -> Sequence[Event]:
        """No AI control without a durable record: while the log cannot persist records, release and stay out."""
        why = self.recorder.log.not_durable
        if why is None:
            return extra_events
        return [*extra_events, Event(EventType.IMMEDIATE_DISABLE, Reason.RECORD_NOT_DURABLE, why)]

    def _report(self, record: Record) -> None:
        decision = record.decision
        self.metrics.observe_cycle(decision.mode, decision.release_reason, record.outcome.timings, decision.heartbeat,
                                   record.log_dropped_count, record.publish_drop_count)
        self.active_cycles += decision.mode is Mode.ACTIVE
        if decision.transition is not None:
            reasons = [f"{e.type}:{e.reason}" for e in decision.events if e.type is not EventType.SOFT_DISABLE]
            event(log, logging.INFO if decision.release_reason is None else logging.WARNING,
                  f"mode {decision.transition.from_} -> {decision.transition.to}",
                  unit=record.origin.unit_id, seq=record.seq, release_reason=decision.release_reason,
                  events=reasons)
        self._report_waiting(record)

    def _report_waiting(self, record: Record) -> None:
        """One line (and the service manager's status) each time what keeps the AI from control changes."""
        decision = record.decision
        if decision.mode is Mode.ACTIVE:
            waiting = () if self.controller.engagement.granted else (Reason.REQUESTING_AI_MODE.value,)
        elif decision.mode is Mode.RELEASING:
            waiting = ("releasing",)
        else:
            waiting = tuple(dict.fromkeys(e.reason.value for e in decision.events if e.type in WAIT_EVENTS))
            if len(waiting) > 1:  # "no checked action" follows from the others
                waiting = tuple(r for r in waiting if r != Reason.NO_SAFE_ACTION)
        if waiting == self.waiting:
            return
        self.waiting = waiting
        if not waiting:
            text = status_codes.MODE_TEXT[decision.mode]
            event(log, logging.INFO, f"no longer waiting: {text}", unit=record.origin.unit_id, seq=record.seq,
                  mode=decision.mode.value)
            self.service.status(text)
            return
        if waiting == ("releasing",):
            text = status_codes.MODE_TEXT[Mode.RELEASING]
            reasons, details, actions = [], [], []
        else:
            entries = [status_codes.reason(name) for name in waiting]
            text = "; ".join(r.text for r in entries)
            reasons = list(waiting)
            details = [e.detail for e in decision.events if e.reason.value in waiting and e.detail]
            actions = [r.action for r in entries if r.action]
        event(log, logging.INFO, f"waiting: {text}", unit=record.origin.unit_id, seq=record.seq,
              mode=decision.mode.value, reasons=reasons, details=details, actions=actions)
        self.service.status(f"waiting: {text}")

    async def release_and_stop(self, period: float) -> None:
        """Hand control back through the normal cycle path, then flush the log."""
        if self.controller.engagement.mode in (Mode.ACTIVE, Mode.RELEASING):
            for _ in range(STOP_CONFIRM_CYCLES):
                await self.cycle([Event(EventType.IMMEDIATE_DISABLE, Reason.DAEMON_STOPPING, "stop requested")])
                if self.controller.engagement.mode is Mode.DISABLED:
                    break
                await asyncio.sleep(period)
        self.recorder.log.flush(timeout=10.0)
        event(log, logging.INFO, "stopped", unit=self.core.config.unit,
              mode=self.controller.engagement.mode.value, overruns=self.overruns)


def make_plant(core: Core) -> tuple[PlantIO, Pace]:
    """The config's plant and how the daemon keeps time with it."""
    plant = core.config.plant
    if isinstance(plant, SteppedConfig):
        from boiler_ai.plant.stepped import SteppedPlant
        from boiler_ai.sim.scenario import named_scenario
        from boiler_ai.sim.unit import ReferenceUnit

        unit = ReferenceUnit(named_scenario(plant.scenario, plant.seed), seed=plant.seed)
        unit.set_ai_enable(plant.ai_enable)
        stepped = SteppedPlant(unit, core.tag_map, step_s=core.config.cycle_period_s)
        return stepped, Pace(stepped.clock, 0.0)
    from boiler_ai.plant.opcua_client import OpcUaPlantIO

    return (OpcUaPlantIO(core.tag_map, plant.endpoint, security=plant.security, timeout_s=plant.timeout_s,
                         max_nodes_per_read=plant.max_nodes_per_read, max_nodes_per_write=plant.max_nodes_per_write),
            Pace.wall_clock(core.config))


@contextmanager
def cpu_latency_limit(cfg: DaemonConfig) -> Iterator[CpuLatencyLimit]:
    """Hold the config's CPU latency limit; say in the log whether the machine granted it."""
    with CpuLatencyLimit(cfg.cpu_latency_limit_us) as limit:
        if limit.held:
            event(log, logging.INFO, "cpu latency limit held", limit_us=limit.limit_us, device=str(limit.device))
        elif limit.error is not None:
            event(log, logging.WARNING, "cpu latency limit not held: cycles start slower after idle "
                  "(grant access with deploy/99-boiler-ai-cpu-latency.rules)", limit_us=limit.limit_us,
                  error=limit.error)
        yield limit


async def run_daemon(core: Core, plant: PlantIO, stop: asyncio.Event, *, max_cycles: int | None = None,
                     pace: Pace | None = None, reload: asyncio.Event | None = None) -> Daemon:
    cfg = core.config
    recorder = open_recorder(cfg)
    metrics_server = None
    service = ServiceManager()
    try:
        daemon = Daemon(core, plant, recorder, pace=pace, service=service, reload=reload)
        if cfg.metrics_address is not None:
            metrics_server = MetricsServer(daemon.metrics, *cfg.metrics_address)
        event(log, logging.INFO, "starting", unit=cfg.unit, mode=cfg.mode, plant=_describe(cfg),
              model=core.controller.settings.model_id, model_sha256=cfg.model_sha256,
              config_hash=core.controller.settings.config_hash, log_dir=str(cfg.record.log_dir),
              next_seq=recorder.log.next_seq, cycle_period_s=cfg.cycle_period_s, time_scale=cfg.time_scale)
        try:
            await plant.connect()
        except ConnectionError as exc:
            # The DCS may come up after us: run anyway; every cycle reads "not connected" (inputs
            # invalid, nothing engaged) while the adapter keeps reconnecting.
            event(log, logging.ERROR, "cannot connect yet; retrying in the background", error=str(exc))
        # Everything loaded so far lives as long as the daemon: keep it out of the collector's scans,
        # which would otherwise land inside a cycle as millisecond pauses.
        gc.collect()
        gc.freeze()
        with cpu_latency_limit(cfg):
            await daemon.run(stop, max_cycles)
        return daemon
    finally:
        if metrics_server is not None:
            metrics_server.close()
        await plant.close()
        recorder.close()
        service.close()


def log_envelope(envelope: Envelope) -> None:
    """The effective envelope once at start, as the table `check` prints: one line per row (a manipulated
    variable, a coupling, a process limit), readable with `jq -r .msg`, each marked as part of it."""
    for line in envelope.describe().splitlines():
        event(log, logging.INFO, line, part="effective envelope", envelope_sha256=envelope.sha256)


def _describe(cfg: DaemonConfig) -> str:
    plant = cfg.plant
    if isinstance(plant, SteppedConfig):
        return f"stepped simulated unit, scenario {plant.scenario}, seed {plant.seed}"
    return plant.endpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="daemon config YAML (see deploy/examples/)")
    parser.add_argument("--sim-hours", type=float, default=None,
                        help="stop after this many simulated hours of cycles (any plant; meant for a stepped one)")
    parser.add_argument("--max-cycles", type=int, default=None, help="stop after this many cycles")
    parser.add_argument("--sim-speed", type=float, default=None, metavar="N",
                        help="the OPC UA server is boiler-ai's simulated unit at N x real time (boiler-ai sim "
                             "--speed N): rates, ages and holds in its simulated seconds. Never against a plant.")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.sim_speed is not None:
        if not (math.isfinite(args.sim_speed) and args.sim_speed > 0):
            raise ConfigError("command line", "--sim-speed", f"expected a positive number, got {args.sim_speed}")
        if isinstance(cfg.plant, SteppedConfig):
            raise ConfigError("command line", "--sim-speed", "a stepped plant keeps its own simulated time: "
                                                            "it is for the OPC UA simulator (boiler-ai sim)")
        cfg = replace(cfg, time_scale=args.sim_speed)
    setup_logging(cfg.log_level)
    preflight(cfg)
    core = build_core(cfg)
    log_envelope(core.envelope)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reload = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, reload.set)  # systemctl reload: the models only
        plant, pace = make_plant(core)
        await run_daemon(core, plant, stop, max_cycles=max_cycles, pace=pace, reload=reload)

    max_cycles = args.max_cycles
    if args.sim_hours is not None:
        cycles = round(args.sim_hours * 3600.0 / cfg.cycle_period_s)
        max_cycles = cycles if max_cycles is None else min(max_cycles, cycles)

    asyncio.run(main())
    return 0
