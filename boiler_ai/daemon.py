"""`boiler-ai run CONFIG`: the long-running controller daemon for one unit.

Each cycle: one batch read, the pure controller core, one batch write (AI setpoints, AI_REQUEST,
AI_HEARTBEAT) with read-back, then the decision record to the durable log (which publishes it).
SIGTERM or SIGINT release control through the normal path (AI_REQUEST dropped, DCS confirmation
awaited for a few cycles), flush the log, and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from boiler_ai.config import DaemonConfig, check_unit_matches, load_config
from boiler_ai.control.cycle import Controller, ControllerSettings, CycleOutput
from boiler_ai.control.engagement import Event, EventType, Mode
from boiler_ai.control.envelope import Envelope, load_envelope
from boiler_ai.control.guard import Guard
from boiler_ai.control.policy import PolicyRunner
from boiler_ai.control.projector import Projector
from boiler_ai.host import CpuLatencyLimit
from boiler_ai.logs import event, setup_logging
from boiler_ai.metrics import Metrics, serve_metrics
from boiler_ai.plant.tagmap import TagMap, load_tag_map
from boiler_ai.plant.types import PlantIO
from boiler_ai.record.recorder import Recorder
from boiler_ai.strict import ConfigError

log = logging.getLogger("boiler_ai.daemon")

STOP_CONFIRM_CYCLES = 10  # cycles to wait for the DCS to confirm AI_ACTIVE false at shutdown


@dataclass
class Core:
    """Everything loaded from a config that the controller core needs."""

    config: DaemonConfig
    tag_map: TagMap
    envelope: Envelope
    controller: Controller


def build_core(cfg: DaemonConfig, clock_ns=time.perf_counter_ns) -> Core:
    tag_map = load_tag_map(cfg.tag_map)
    check_unit_matches(cfg, tag_map.unit)
    envelope = load_envelope(cfg.envelope, tag_map)
    policy = PolicyRunner(cfg.model_path, tag_map=tag_map, expected_sha256=cfg.model_sha256,
                          mv_names=list(tag_map.manipulated), envelope_margin=cfg.policy.training_envelope_margin,
                          cycle_period_s=cfg.cycle_period_s, cycle_period_from=str(cfg.source))
    settings = ControllerSettings(
        unit_id=cfg.unit, closed_loop=cfg.mode == "closed_loop", cycle_period_s=cfg.cycle_period_s,
        time_scale=cfg.time_scale, healthy_cycles_to_engage=cfg.engagement.healthy_cycles_to_engage,
        grant_timeout_cycles=cfg.engagement.grant_timeout_cycles, arm_on_start=cfg.engagement.arm_on_start,
        max_spread=cfg.policy.max_spread,
        out_of_depth_hold_s=cfg.policy.out_of_depth_hold_s, state_every_cycles=cfg.record.state_every_cycles,
        model_id=policy.model_id, model_sha256=cfg.model_sha256, config_hash=cfg.config_hash())
    controller = Controller(settings, tag_map, envelope, Projector(envelope), Guard(cfg.envelope, tag_map),
                            policy, clock_ns)
    return Core(cfg, tag_map, envelope, controller)


def open_recorder(cfg: DaemonConfig) -> Recorder:
    """The durable log (which publishes) and the catch-up service, as the config says."""
    return Recorder.from_config(cfg.record, cfg.unit)


class Daemon:
    """Runs the cycle against a PlantIO at the configured period until asked to stop."""

    def __init__(self, core: Core, plant: PlantIO, recorder: Recorder, metrics: Metrics | None = None):
        self.core = core
        self.controller = core.controller
        self.plant = plant
        self.recorder = recorder
        self.metrics = metrics or Metrics(core.config.unit)
        self.overruns = 0
        self.active_cycles = 0
        self._last_record_us = 0

    async def run(self, stop: asyncio.Event, max_cycles: int | None = None) -> None:
        cfg = self.core.config
        period = cfg.cycle_period_s / cfg.time_scale  # wall seconds per cycle
        next_start = time.monotonic()
        cycles = 0
        while not stop.is_set() and (max_cycles is None or cycles < max_cycles):
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
            next_start += period
            delay = next_start - time.monotonic()
            if delay < 0:
                # Late: start the next cycle now, and do not try to catch up with a burst.
                self.overruns += 1
                next_start = time.monotonic()
                delay = 0
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
        await self.release_and_stop(period)

    async def cycle(self, extra_events: list[Event] | None = None) -> CycleOutput:
        t_read = time.perf_counter_ns()
        snapshot = await self.plant.read()
        wall, mono = time.time(), time.monotonic()
        t_core = time.perf_counter_ns()
        output = self.controller.step(snapshot, wall, mono, extra_events)
        t_write = time.perf_counter_ns()
        result = await self.plant.write(output.writes) if output.writes else None
        follow_up = self.controller.finish(output, result)
        if follow_up:
            # the write failed while in control: drop AI_REQUEST in the same cycle
            await self.plant.write(follow_up)
        t_record = time.perf_counter_ns()
        record = output.record
        timings = record["timings_us"]
        timings["read"] = (t_core - t_read) // 1000
        timings["write"] = (t_record - t_write) // 1000
        timings["record"] = self._last_record_us
        self.recorder.append(record)
        self._last_record_us = output.record_build_us + (time.perf_counter_ns() - t_record) // 1000
        self._report(record)
        return output

    def _report(self, record: dict) -> None:
        self.metrics.observe_cycle(record["mode"], record["release_reason"], record["timings_us"], record["heartbeat"],
                                   record["log_dropped_count"], record["publish_drop_count"])
        self.active_cycles += record["mode"] == "active"
        if record["transition"] is not None:
            reasons = [f'{e["type"]}:{e["reason"]}' for e in record["events"] if e["type"] != "soft_disable"]
            event(log, logging.INFO if record["release_reason"] is None else logging.WARNING,
                  f'mode {record["transition"]["from"]} -> {record["transition"]["to"]}',
                  unit=record["unit_id"], seq=record["seq"], release_reason=record["release_reason"],
                  events=reasons)

    async def release_and_stop(self, period: float) -> None:
        """Hand control back through the normal cycle path, then flush the log."""
        if self.controller.engagement.mode in (Mode.ACTIVE, Mode.RELEASING):
            for _ in range(STOP_CONFIRM_CYCLES):
                await self.cycle([Event(EventType.IMMEDIATE_DISABLE, "daemon_stopping", "stop requested")])
                if self.controller.engagement.mode is Mode.DISABLED:
                    break
                await asyncio.sleep(period)
        self.recorder.log.flush(timeout=10.0)
        event(log, logging.INFO, "stopped", unit=self.core.config.unit,
              mode=self.controller.engagement.mode.value, overruns=self.overruns)


def make_plant(core: Core) -> PlantIO:
    from boiler_ai.plant.opcua_client import OpcUaPlantIO

    op = core.config.opcua
    return OpcUaPlantIO(core.tag_map, op.endpoint, security=op.security, timeout_s=op.timeout_s,
                        max_nodes_per_read=op.max_nodes_per_read, max_nodes_per_write=op.max_nodes_per_write)


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


async def run_daemon(core: Core, plant: PlantIO, stop: asyncio.Event, *, max_cycles: int | None = None) -> Daemon:
    cfg = core.config
    recorder = open_recorder(cfg)
    metrics_server = None
    try:
        daemon = Daemon(core, plant, recorder)
        if cfg.metrics_address is not None:
            metrics_server = await serve_metrics(daemon.metrics, *cfg.metrics_address)
        event(log, logging.INFO, "starting", unit=cfg.unit, mode=cfg.mode, endpoint=cfg.opcua.endpoint,
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="daemon config YAML (see deploy/examples/)")
    parser.add_argument("--sim-speed", type=float, default=None, metavar="N",
                        help="the OPC UA server is boiler-ai's simulated unit at N x real time (boiler-ai sim "
                             "--speed N): rates, ages and holds in its simulated seconds. Never against a plant.")


def run(args: argparse.Namespace) -> int:
    from boiler_ai.check import preflight

    cfg = load_config(args.config)
    if args.sim_speed is not None:
        if not (math.isfinite(args.sim_speed) and args.sim_speed > 0):
            raise ConfigError("command line", "--sim-speed", f"expected a positive number, got {args.sim_speed}")
        cfg = replace(cfg, time_scale=args.sim_speed)
    setup_logging(cfg.log_level)
    preflight(cfg)
    core = build_core(cfg)
    event(log, logging.INFO, "effective envelope", envelope=core.envelope.describe())

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_daemon(core, make_plant(core), stop)

    asyncio.run(main())
    return 0
