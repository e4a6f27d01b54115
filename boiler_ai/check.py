"""`boiler-ai check CONFIG [--server]`: validate everything the daemon would load, before it runs.

Without --server: the config, the tag map, the envelope (and the guard's own reading of it), the
model (pinned sha256, contract, fit to the tag map, action units and cycle period, shapes), the
security files, and this host: the decision-log directory can be created and written, the metrics,
publish and catch-up addresses can be bound (all at once, so two settings on one port collide here
too), the OPC UA server's host name resolves. `run` makes the same host checks (`preflight`) before
its first cycle. With --server: also connect and check that every mapped node exists with the right
type and access. Exit 0 when all is well, 1 when the server check finds problems, 2 for a bad setting.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from boiler_ai.addresses import tcp_listening, zmq_bound
from boiler_ai.config import DaemonConfig, load_config
from boiler_ai.errors import FileAccessError, UnknownHost
from boiler_ai.host import CpuLatencyLimit
from boiler_ai.strict import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="daemon config YAML")
    parser.add_argument("--server", action="store_true",
                        help="also connect to the OPC UA server and verify every mapped node")


def run(args: argparse.Namespace) -> int:
    from boiler_ai.daemon import build_core, make_plant
    from boiler_ai.plant.security import SecurityError, load_credentials

    cfg = load_config(args.config)
    core = build_core(cfg)
    preflight(cfg)
    resolve_server(cfg)
    if cfg.opcua.security.secured:
        try:  # certificates readable, valid, matching the application URI
            load_credentials(cfg.opcua.security)
        except SecurityError as exc:
            raise ConfigError(cfg.source, "opcua.security", str(exc)) from None
    tm = core.tag_map
    policy = core.controller.policy
    print(f"config      {cfg.source}  (hash {core.controller.settings.config_hash[:16]}...)")
    print(f"unit        {cfg.unit}  mode {cfg.mode}  cycle {cfg.cycle_period_s} s")
    print(f"tag map     {tm.source}: {len(tm.signals)} tags, {len(tm.readable)} read, {len(tm.writable)} written")
    print(f"model       {cfg.model_path}: {policy.model_id}, sha256 {cfg.model_sha256[:16]}... "
          f"{len(policy.input_signals)} inputs")
    print(f"opcua       {cfg.opcua.endpoint}  security {cfg.opcua.security.policy}")
    print(f"decision log {cfg.record.log_dir}  (writable)")
    listening = [a for a in (cfg.metrics_listen, cfg.record.publish_endpoint, cfg.record.catchup_endpoint) if a]
    print(f"listen      {', '.join(listening) or 'nothing'}  (free on this host)")
    with CpuLatencyLimit(cfg.cpu_latency_limit_us) as limit:  # try it as the daemon will, then let go
        latency = ("left to the OS" if limit.limit_us is None else f"{limit.limit_us} us, granted" if limit.held
                   else f"{limit.limit_us} us, NOT granted ({limit.error}): see deploy/99-boiler-ai-cpu-latency.rules")
    print(f"host        cpu latency limit {latency}")
    print(core.envelope.describe())
    if not args.server:
        print("check: files OK (use --server to check the OPC UA server too)")
        return 0

    async def verify() -> list[str]:
        plant = make_plant(core)
        try:
            await plant.connect()
            return await plant.verify()
        except ConnectionError as exc:
            return [f"cannot connect to {cfg.opcua.endpoint}: {exc}"]
        finally:
            await plant.close()

    problems = asyncio.run(verify())
    for problem in problems:
        print(f"server: {problem}")
    print("check: server OK" if not problems else f"check: {len(problems)} problem(s) on the server")
    return 0 if not problems else 1


def preflight(cfg: DaemonConfig) -> None:
    """What `run` would meet on this host before its first cycle; the first problem is raised, typed,
    naming the config file and field."""
    writable_directory(cfg.record.log_dir, f"{cfg.source}: record.log_dir")
    with ExitStack() as held:  # every address held until all are bound
        if cfg.metrics_address is not None:
            held.enter_context(tcp_listening(*cfg.metrics_address, f"{cfg.source}: metrics.listen"))
        for field, endpoint, kind in (("publish_endpoint", cfg.record.publish_endpoint, "XPUB"),
                                      ("catchup_endpoint", cfg.record.catchup_endpoint, "ROUTER")):
            if endpoint is not None:
                held.enter_context(zmq_bound(endpoint, kind, f"{cfg.source}: record.{field}"))


def resolve_server(cfg: DaemonConfig) -> None:
    """The OPC UA server's host name resolves here (`run` would otherwise retry it forever)."""
    url = urlsplit(cfg.opcua.endpoint)
    try:
        socket.getaddrinfo(url.hostname, url.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnknownHost(f"{cfg.source}: opcua.endpoint: host {url.hostname!r} does not resolve on this machine "
                          f"({exc.strerror})") from None


def writable_directory(directory: Path, what: str) -> None:
    """`directory` exists and takes new files, or can be created: tried with a temporary file, not
    judged from permission bits (root passes those, a read-only or full file system does not)."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FileAccessError(f"{what}: {existing} is not a directory, so {directory} cannot be created")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        doing = "write in" if existing == directory else f"create {directory} in"
        raise FileAccessError(f"{what}: cannot {doing} {existing} ({exc.strerror or exc})") from None
