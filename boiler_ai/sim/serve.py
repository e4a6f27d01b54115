"""`boiler-ai sim`: the simulated reference unit served over OPC UA, in real time or accelerated.

SimulatedUnitServer wires a unit (boiler_ai.sim.unit.ReferenceUnit by default) to a TagServer:
each simulated second it steps the unit, publishes every readable signal with the wall time of the
update as source timestamp, and forwards client writes to `unit.write`. Tests and the demo start it
in-process and reach the server's fault injection through `.server.faults`.

It can serve the way vendor DCS servers do (`VendorHabits`: no SourceTimestamp, timestamps only on
change, rounded and deadbanded analogs, a MaxNodesPerRead/Write limit), so the daemon is tested against
each habit, not only against this server's own.

Besides the tag map's nodes the simulator serves a folder Objects/Simulator that a real DCS does not
have (not in the tag map, so the daemon never sees it):
- Simulator/OperatorAIEnable (Boolean, read/write): the operator's AI permissive on the DCS
  faceplate. The daemon reads it as Interface.AI.Enable, which stays read-only.
- Simulator/OperatorMvAIEnable/<mv> (Boolean, read/write), for each manipulated variable the tag map gives
  an `ai_enable`: the operator's AI enable of that variable alone. The daemon reads it as that tag.
- Simulator/SimTime (Double, s): simulated seconds since the unit started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import socket
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from boiler_ai.addresses import opc_endpoint, tcp_listening
from boiler_ai.plant.opcua_server import (
    DEFAULT_ENDPOINT,
    TIMESTAMP_MODES,
    ServerSecurity,
    TagServer,
    VendorHabits,
    certificate_path,
    make_certificate,
)
from boiler_ai.plant.security import SecurityError, read_password
from boiler_ai.sim.scenario import SCENARIOS, Scenario, named_scenario
from boiler_ai.sim.unit import ReferenceUnit, default_tag_map_path
from boiler_ai.strict import ConfigError
from boiler_ai.tagmap import SignalSpec, TagMap, load_tag_map

log = logging.getLogger(__name__)

LAG_LOG_INTERVAL_S = 10.0  # wall seconds between two "falling behind" warnings

OPERATOR_AI_ENABLE = SignalSpec(
    name="sim_operator_ai_enable",
    node="s=Simulator.OperatorAIEnable",
    data_type="Boolean",
    unit="",
    lo=0.0,
    hi=1.0,
    access="readwrite",
    critical=False,
    description="Operator's AI permissive on the DCS faceplate (simulator only; the daemon reads Interface.AI.Enable)",
)
SIM_TIME = SignalSpec(
    name="sim_time_s",
    node="s=Simulator.SimTime",
    data_type="Double",
    unit="s",
    lo=0.0,
    hi=1e9,
    access="read",
    critical=False,
    description="Simulated seconds since the unit started (simulator only)",
)


def _operator_mv_enable(name: str, mv: str) -> SignalSpec:
    return SignalSpec(name=name, node=f"s=Simulator.OperatorMvAIEnable.{mv}", data_type="Boolean", unit="", lo=0.0,
                      hi=1.0, access="readwrite", critical=False,
                      description=f"Operator's AI enable of {mv} on the DCS faceplate (simulator only)")


class Unit(Protocol):
    """What the server needs of a simulated unit (boiler_ai.sim.unit.ReferenceUnit provides it)."""

    t: float

    def step(self, dt: float = 1.0) -> None: ...

    def values(self) -> dict[str, float]: ...

    def write(self, signal: str, value: float) -> None: ...

    def set_ai_enable(self, on: bool) -> None: ...

    def set_mv_ai_enable(self, mv: str, on: bool) -> None: ...


class SimulatedUnitServer:
    """A unit stepped at `speed` × real time (1 s steps) and served over OPC UA.

    Without `unit`, a ReferenceUnit(scenario, seed, tag_map) is made (scenario by name or object;
    None: the unit's default). The tag map defaults to opc/reference_unit.yaml.

    If the host cannot keep up, it does not try to catch up with a burst of steps: the lost wall time
    is counted in `lag_s` / `lag_events` and logged, and simulated time runs slower than asked.
    `duration_s` (simulated seconds) ends the stepping; the server keeps serving until `stop()`.
    """

    def __init__(
        self,
        unit: Unit | None = None,
        *,
        tag_map: TagMap | None = None,
        endpoint: str = DEFAULT_ENDPOINT,
        speed: float = 1.0,
        scenario: Scenario | str | None = None,
        seed: int = 0,
        duration_s: float | None = None,
        security: ServerSecurity | None = None,
        application_uri: str | None = None,
        habits: VendorHabits = VendorHabits(),
    ):
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a positive number, got {speed}")
        if duration_s is not None and not duration_s > 0:
            raise ValueError(f"duration must be positive simulated seconds, got {duration_s}")
        self.tag_map = tag_map or load_tag_map(default_tag_map_path())
        if unit is None:
            if isinstance(scenario, str):
                scenario = named_scenario(scenario, seed)
            unit = ReferenceUnit(scenario=scenario, seed=seed, tag_map=self.tag_map)
        self._unit = unit
        # the operator's per-MV enable nodes: simulator signal -> (MV, the tag the daemon reads)
        self._mv_operator = {f"sim_operator_{mv}_ai_enable": (mv, spec.ai_enable)
                             for mv, spec in self.tag_map.manipulated.items() if spec.ai_enable is not None}
        self.speed = float(speed)
        self.duration_s = duration_s
        self._server = TagServer(
            self.tag_map,
            endpoint,
            security=security,
            on_write=self._client_write,
            extra_signals=(OPERATOR_AI_ENABLE, SIM_TIME, *(_operator_mv_enable(name, mv)
                                                           for name, (mv, _) in self._mv_operator.items())),
            application_uri=application_uri or f"urn:boiler-ai:server:{self.tag_map.unit}",
            name=f"boiler-ai simulated {self.tag_map.unit}",
            habits=habits,
        )
        self._task: asyncio.Task[None] | None = None
        self.steps = 0
        self.lag_events = 0
        self.lag_s = 0.0
        self.error: BaseException | None = None

    @property
    def unit(self) -> Unit:
        return self._unit

    @property
    def server(self) -> TagServer:
        return self._server

    @property
    def endpoint(self) -> str:
        return self._server.endpoint

    @property
    def stepping(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Serve the unit's present state, then step it in the background."""
        await self._publish()
        await self._server.start()
        self._task = asyncio.create_task(self._run(), name="simulated unit")

    async def stop(self) -> None:
        """Stop stepping and close the server (a test's or the CLI's last call)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._server.close()

    async def wait(self) -> None:
        """Until the stepping ends (duration reached); raises what stopped it if it failed."""
        if self._task is not None:
            await asyncio.wait({self._task})  # returns however the task ended; our own cancellation propagates
        if self.error is not None:
            raise self.error

    async def set_ai_enable(self, on: bool) -> None:
        """The operator's AI permissive (faceplate), served at once."""
        self._unit.set_ai_enable(on)
        await self._publish()

    async def set_mv_ai_enable(self, mv: str, on: bool) -> None:
        """The operator's AI enable of one manipulated variable (faceplate), served at once."""
        self._unit.set_mv_ai_enable(mv, on)
        await self._publish()

    def _client_write(self, signal: str, value: float) -> None:
        if signal == OPERATOR_AI_ENABLE.name:
            self._unit.set_ai_enable(value >= 0.5)
        elif signal in self._mv_operator:
            self._unit.set_mv_ai_enable(self._mv_operator[signal][0], value >= 0.5)
        else:
            self._unit.write(signal, value)

    async def _publish(self) -> None:
        values = self._unit.values()
        values[OPERATOR_AI_ENABLE.name] = values[self.tag_map.handshake["ai_enable"]]
        values[SIM_TIME.name] = self._unit.t
        for name, (_, tag) in self._mv_operator.items():
            values[name] = values[tag]
        await self._server.publish(values, time.time())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.speed  # wall seconds per simulated second
        next_step = loop.time() + period
        last_warning = -math.inf
        try:
            while self.duration_s is None or self._unit.t < self.duration_s:
                delay = next_step - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif -delay > period:
                    # More than a step behind: drop the backlog instead of stepping in a burst.
                    self.lag_events += 1
                    self.lag_s += -delay
                    next_step = loop.time()
                    if loop.time() - last_warning >= LAG_LOG_INTERVAL_S:
                        last_warning = loop.time()
                        log.warning(
                            "simulator falling behind at speed %g: %.1f s of wall time lost in %d stalls so far",
                            self.speed, self.lag_s, self.lag_events,
                        )
                else:
                    await asyncio.sleep(0)  # let clients be served between steps
                self._unit.step(1.0)
                self.steps += 1
                await self._publish()
                next_step += period
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = exc
            log.exception("simulated unit stopped at t=%.0f s", self._unit.t)


# ---------------------------------------------------------------------------------------------
# The `boiler-ai sim` command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"OPC UA endpoint (default {DEFAULT_ENDPOINT})")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second (default 1)")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default=None,
                        help="disturbance scenario (boiler_ai/sim/scenario.py; default: steady_full_load)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of noise and disturbances (default 0)")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop after S simulated seconds (default: run until interrupted)")
    parser.add_argument("--tag-map", type=Path, default=default_tag_map_path(),
                        help="tag map to serve (default: %(default)s)")
    parser.add_argument("--security", choices=("none", "sign-encrypt"), default="none",
                        help="none (local only) or Basic256Sha256 SignAndEncrypt (needs --pki)")
    parser.add_argument("--pki", type=Path, default=None, help="PKI folder (layout: opc/pki/README.md)")
    parser.add_argument("--user", default=None, help="user name sessions must log in with (sign-encrypt only)")
    parser.add_argument("--password-file", type=Path, default=None, help="file holding that user's password")
    parser.add_argument("--ai-enable", action="store_true",
                        help="start with the operator's AI permissive on (else toggle Simulator/OperatorAIEnable)")
    vendor = parser.add_argument_group("vendor server habits", "serve the way some DCS OPC UA servers do")
    vendor.add_argument("--timestamps", choices=TIMESTAMP_MODES, default="source",
                        help="source: stamp every value each step (default); server-only: no SourceTimestamp; "
                             "on-change: a value keeps its timestamps until it changes")
    vendor.add_argument("--analog-deadband", type=float, default=0.0, metavar="PCT",
                        help="hold each analog until it moves more than PCT %% of its range (default 0)")
    vendor.add_argument("--analog-decimals", type=int, default=None, metavar="N",
                        help="round analogs to N decimals (default: full resolution)")
    vendor.add_argument("--max-nodes-per-read", type=int, default=None, metavar="N",
                        help="advertise and enforce MaxNodesPerRead: larger reads fail BadTooManyOperations")
    vendor.add_argument("--max-nodes-per-write", type=int, default=None, metavar="N",
                        help="the same for MaxNodesPerWrite")


def run(args: argparse.Namespace) -> int:
    try:
        url = urlparse(opc_endpoint(args.endpoint))
    except ValueError as exc:
        raise ConfigError("command line", "--endpoint", str(exc)) from None
    with tcp_listening(url.hostname, url.port, f"--endpoint {args.endpoint}"):
        pass  # free: asyncua would log a traceback of its own before failing
    try:
        security = _security(args)
        habits = VendorHabits(args.timestamps, args.analog_deadband, args.analog_decimals,
                              args.max_nodes_per_read, args.max_nodes_per_write)
    except (SecurityError, ValueError) as exc:
        print(f"boiler-ai sim: {exc}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(logging.INFO)  # boiler-ai's JSON lines (set up by the command line)
    return asyncio.run(_serve(args, security, habits))


def _security(args: argparse.Namespace) -> ServerSecurity | None:
    if (args.user is None) != (args.password_file is None):
        raise ValueError("--user and --password-file go together")
    if args.security == "none":
        if args.user is not None:
            raise ValueError("--user needs --security sign-encrypt (the password would cross the wire in clear)")
        return None
    if args.pki is None:
        raise ValueError("--security sign-encrypt needs --pki DIR")
    users = {args.user: read_password(args.password_file)} if args.user else {}
    return ServerSecurity(args.pki, users=users)


async def _serve(args: argparse.Namespace, security: ServerSecurity | None, habits: VendorHabits) -> int:
    tag_map = load_tag_map(args.tag_map)
    application_uri = f"urn:boiler-ai:server:{tag_map.unit}"
    if security is not None and not certificate_path(security.pki, security.certificate_name).is_file():
        host = urlparse(args.endpoint).hostname or "localhost"
        cert = make_certificate(
            security.pki, security.certificate_name, application_uri, role="server",
            hostnames=sorted({"localhost", "127.0.0.1", host, socket.gethostname()}),
        )
        log.info("created a self-signed server certificate %s (trust clients in %s/trusted/certs)", cert, security.pki)
    scenario = named_scenario(args.scenario, args.seed) if args.scenario else None
    unit = ReferenceUnit(scenario=scenario, seed=args.seed, tag_map=tag_map)
    unit.set_ai_enable(args.ai_enable)
    sim = SimulatedUnitServer(
        unit, tag_map=tag_map, endpoint=args.endpoint, speed=args.speed, duration_s=args.duration,
        security=security, application_uri=application_uri, habits=habits,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.create_task(stop.wait())
    try:
        await sim.start()
        log.info(
            "serving %s on %s: %d tags, speed x%g, scenario %s, seed %d, security %s, timestamps %s, "
            "analog deadband %g %%, analog decimals %s, max nodes per read %s, per write %s",
            tag_map.unit, sim.endpoint, len(tag_map.signals), sim.speed, unit.scenario.name, args.seed,
            args.security, habits.timestamps, habits.analog_deadband_pct, habits.analog_decimals,
            habits.max_nodes_per_read or "unlimited", habits.max_nodes_per_write or "unlimited",
        )
        stepping = asyncio.create_task(_quietly(sim.wait()))  # a failure is logged and kept in sim.error
        await asyncio.wait({stepping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stepping.cancel()
    finally:
        stopping.cancel()
        await sim.stop()
    if sim.error is not None:
        return 1  # logged where it happened
    log.info("stopped at t=%.0f s, %d steps (%d stalls, %.1f s lost)", unit.t, sim.steps, sim.lag_events, sim.lag_s)
    return 0


async def _quietly(awaitable: Awaitable[None]) -> None:
    with contextlib.suppress(Exception):
        await awaitable
