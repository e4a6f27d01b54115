"""What `run` would meet on this host before its first cycle, tried before it starts (and by `check`).

Each problem is raised typed (boiler_ai.errors), naming the config file and field, so the command
line prints it as one line: a decision-log directory that cannot be created or written, CURVE key
files that are missing or malformed, a metrics, publish or catch-up address that cannot be bound, an
OPC UA host name that does not resolve.
"""

from __future__ import annotations

import socket
import tempfile
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from boiler_ai.addresses import tcp_listening, zmq_bound
from boiler_ai.config import DaemonConfig, OpcUaConfig, RecordConfig
from boiler_ai.errors import FileAccessError, UnknownHost
from boiler_ai.record.curve import ServerKeys, load_server_keys


def preflight(cfg: DaemonConfig) -> None:
    """What `run` would meet on this host before its first cycle; the first problem is raised, typed,
    naming the config file and field."""
    writable_directory(cfg.record.log_dir, f"{cfg.source}: record.log_dir")
    server_keys(cfg.record, str(cfg.source))
    with ExitStack() as held:  # every address held until all are bound
        if cfg.metrics_address is not None:
            held.enter_context(tcp_listening(*cfg.metrics_address, f"{cfg.source}: metrics.listen"))
        for field, endpoint, kind in (("publish_endpoint", cfg.record.publish_endpoint, "XPUB"),
                                      ("catchup_endpoint", cfg.record.catchup_endpoint, "ROUTER")):
            if endpoint is not None:
                held.enter_context(zmq_bound(endpoint, kind, f"{cfg.source}: record.{field}"))


def server_keys(rc: RecordConfig, source: str) -> ServerKeys | None:
    """The daemon's CURVE keys as the config's `record.curve` names them; None when the stream is in clear
    or not served (a demo or evaluation that turned the endpoints off)."""
    if rc.curve is None or (rc.publish_endpoint is None and rc.catchup_endpoint is None):
        return None
    return load_server_keys(rc.curve.server_secret_key, rc.curve.authorized_clients, f"{source}: record.curve")


def resolve_server(cfg: DaemonConfig) -> None:
    """The OPC UA server's host name resolves here (`run` would otherwise retry it forever)."""
    if not isinstance(cfg.plant, OpcUaConfig):
        return
    url = urlsplit(cfg.plant.endpoint)
    try:
        socket.getaddrinfo(url.hostname, url.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnknownHost(f"{cfg.source}: plant.endpoint: host {url.hostname!r} does not resolve on this machine "
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
