"""Network addresses in settings: parsed strictly (a malformed one fails at load, naming its field,
never in a retry loop at run time) and tried on this host before a command listens on them.

Parsers raise ValueError saying what is wrong (the caller names the field); probes raise
CannotListen with `what` (the file and field, or the option) in front.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

from boiler_ai.errors import CannotListen
from boiler_ai.strict import ConfigError

_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):([0-9]+)")


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    return port


def listen_address(text: str) -> tuple[str, int]:
    """(host, port) from "HOST:PORT" or "[IPv6]:PORT"; ValueError saying what is wrong."""
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        raise ValueError(f"expected HOST:PORT, e.g. 127.0.0.1:9108, got {text!r}")
    return match[1].strip("[]"), _port(match[2])


def zmq_endpoint(text: str) -> str:
    """A ZeroMQ endpoint the record path can bind or connect: tcp://HOST:PORT or ipc://PATH."""
    transport, sep, address = text.partition("://")
    # a wildcard port ("*") would change at every start: subscribers need a fixed one
    if not sep or transport not in ("tcp", "ipc") or not address or (transport == "tcp"
                                                                      and not _HOST_PORT.fullmatch(address)):
        raise ValueError(f"expected tcp://HOST:PORT or ipc://PATH, got {text!r}")
    if transport == "tcp":
        listen_address(address)
    return text


def endpoint_options(**options: str | None) -> None:
    """Command-line ZeroMQ endpoints (option name with `_` for `-`, e.g. catchup=...): a malformed one
    is a one-line error naming the option, not a library traceback or a retry loop."""
    for name, value in options.items():
        if value is not None:
            try:
                zmq_endpoint(value)
            except ValueError as exc:
                raise ConfigError("command line", f"--{name.replace('_', '-')}", str(exc)) from None


def opc_endpoint(text: str) -> str:
    """An OPC UA endpoint URL, opc.tcp://HOST:PORT[/PATH]."""
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise ValueError(f"expected opc.tcp://HOST:PORT[/PATH], got {text!r} ({exc})") from None
    if url.scheme != "opc.tcp" or not url.hostname or port is None:
        raise ValueError(f"expected opc.tcp://HOST:PORT[/PATH], got {text!r}")
    _port(str(port))
    return text


@contextmanager
def tcp_listening(host: str, port: int, what: str) -> Iterator[None]:
    """Listen on every address `host` resolves to, as the daemon's metrics server will."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CannotListen(f"{what}: {host!r} is not an address of this host ({exc.strerror})") from None
    with ExitStack() as sockets:
        for family, kind, proto, _, address in infos:
            sock = sockets.enter_context(socket.socket(family, kind, proto))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
            try:
                sock.bind(address)
                sock.listen()
            except OSError as exc:
                raise CannotListen(f"{what}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
        yield


@contextmanager
def zmq_bound(endpoint: str, kind: str, what: str) -> Iterator[None]:
    import zmq

    sock = zmq.Context.instance().socket(getattr(zmq, kind))
    sock.setsockopt(zmq.LINGER, 0)
    try:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise CannotListen(f"{what}: cannot bind {endpoint} ({exc.strerror})") from None
        yield
    finally:
        sock.close(linger=0)
