"""ZeroMQ CURVE on the decision stream: encryption and client keys for the publisher and the catch-up service.

Keys are zmq.auth certificates (the czmq format: a `NAME.key` file holds a public key, `NAME.key_secret`
the public and the secret key) in this layout, written by `boiler-ai keys DIR --client NAME ...`:

    DIR/server.key                     the daemon's public key: every subscriber needs it
    DIR/server.key_secret              the daemon's key pair: stays on the edge box (mode 0600)
    DIR/authorized_clients/NAME.key    public key of each client allowed to subscribe
    DIR/clients/NAME.key_secret        each client's key pair: move it to that client's host

The daemon's sockets are CURVE servers; a ZAP handler (pyzmq's zmq.auth.ThreadAuthenticator) admits only
clients whose public key is in the authorized directory, so a subscriber without a key, or with a key
that is not listed, never completes the handshake and receives nothing. The list is read at start: a
new client's key takes effect when the daemon restarts.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from boiler_ai.errors import ExpectedError, FileAccessError

log = logging.getLogger("boiler_ai.record.curve")

SERVER = "server"
AUTHORIZED = "authorized_clients"
CLIENTS = "clients"


class CurveKeyError(ExpectedError):
    """A CURVE key file that is missing, unreadable or malformed (the message names the file)."""


@dataclass(frozen=True)
class ServerKeys:
    """The daemon's key pair and the public keys of the clients it admits."""

    public: bytes
    secret: bytes
    authorized: frozenset[bytes]
    authorized_dir: Path


@dataclass(frozen=True)
class ClientKeys:
    """A subscriber's key pair and the public key of the daemon it talks to."""

    public: bytes
    secret: bytes
    server_public: bytes


def _key(value: bytes | None, path: Path, what: str) -> bytes:
    """A z85 CURVE key (40 characters, 32 bytes decoded), or an error naming the file."""
    try:
        ok = value is not None and len(value) == 40 and len(z85.decode(value)) == 32
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise CurveKeyError(f"{path}: no valid CURVE {what} in it (expected a zmq.auth certificate: boiler-ai keys)")
    return value


def _certificate(path: Path, what: str, *, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise FileAccessError(f"{what}: file not found: {path} (create the keys with: boiler-ai keys DIR)")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except ValueError:
        public, secret_key = None, None
    except OSError as exc:
        raise FileAccessError(f"{what}: cannot read {path} ({exc.strerror or exc})") from None
    _key(public, path, "public key")
    if secret:
        _key(secret_key, path, "secret key (give the .key_secret file, not the public .key)")
    return public, secret_key


def load_server_keys(secret_file: Path, authorized_dir: Path, what: str = "curve") -> ServerKeys:
    """The daemon's keys; `what` prefixes every error (the config file and field)."""
    public, secret = _certificate(Path(secret_file), f"{what}.server_secret_key", secret=True)
    directory = Path(authorized_dir)
    if not directory.is_dir():
        raise FileAccessError(f"{what}.authorized_clients: not a directory: {directory} "
                              "(create the keys with: boiler-ai keys DIR --client NAME)")
    authorized = set()
    for path in sorted(directory.glob("*.key")):
        key, _ = _certificate(path, f"{what}.authorized_clients", secret=False)
        authorized.add(key)
    if not authorized:
        raise FileAccessError(f"{what}.authorized_clients: no client public keys (*.key) in {directory}: nobody "
                              "could subscribe (add one with: boiler-ai keys DIR --client NAME)")
    return ServerKeys(public, secret, frozenset(authorized), directory)


def load_client_keys(client_secret_file: Path, server_public_file: Path) -> ClientKeys:
    public, secret = _certificate(Path(client_secret_file), "--client-key", secret=True)
    server_public, _ = _certificate(Path(server_public_file), "--server-key", secret=False)
    return ClientKeys(public, secret, server_public)


def secure_server(socket: zmq.Socket, keys: ServerKeys) -> None:
    """Make `socket` a CURVE server (before it binds); the Gate decides who may connect."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True


def secure_client(socket: zmq.Socket, keys: ClientKeys | None) -> None:
    """Make `socket` a CURVE client of the daemon (before it connects); None leaves it in clear."""
    if keys is None:
        return
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = keys.server_public


class Gate:
    """The ZAP handler of one ZeroMQ context: admits the authorized client keys on its CURVE servers."""

    def __init__(self, context: zmq.Context, keys: ServerKeys):
        self._auth = ThreadAuthenticator(context, log=logging.getLogger("boiler_ai.record.curve.zap"))
        self._auth.start()
        # configure_curve re-reads the directory; the keys were just checked, so it finds the same ones
        self._auth.configure_curve(domain="*", location=str(keys.authorized_dir))

    def close(self) -> None:
        self._auth.stop()


def create_keys(directory: Path, clients: list[str]) -> list[Path]:
    """Write the layout above: the server key pair unless it exists, and a key pair for each new client
    with its public key authorized. Returns the files written. An existing client name is refused, so
    nothing is overwritten."""
    directory = Path(directory)
    written: list[Path] = []
    for name in clients:
        if not name or name in (SERVER,) or "/" in name or name.startswith("."):
            raise ExpectedError(f"--client {name!r}: a client name is a plain file name other than {SERVER!r}")
        if (directory / AUTHORIZED / f"{name}.key").exists() or (directory / CLIENTS / f"{name}.key_secret").exists():
            raise ExpectedError(f"--client {name}: {directory / AUTHORIZED / (name + '.key')} or its key pair "
                                "exists already: choose another name, or delete the old key first")
    try:
        for sub in (directory, directory / AUTHORIZED, directory / CLIENTS):
            sub.mkdir(parents=True, exist_ok=True)
        if not (directory / f"{SERVER}.key_secret").exists():
            written += [Path(p) for p in zmq.auth.create_certificates(directory, SERVER)]
        for name in clients:
            public, secret = (Path(p) for p in zmq.auth.create_certificates(directory / CLIENTS, name))
            shutil.copyfile(public, directory / AUTHORIZED / public.name)
            written += [secret, public, directory / AUTHORIZED / public.name]
        for path in written:
            if path.name.endswith(".key_secret"):
                os.chmod(path, 0o600)
    except OSError as exc:
        raise FileAccessError(f"{exc.filename or directory}: cannot write keys ({exc.strerror or exc})") from None
    return written


def add_client_arguments(parser) -> None:
    """--client-key and --server-key for every command that subscribes to a daemon's stream."""
    parser.add_argument("--client-key", type=Path, metavar="FILE",
                        help="this client's CURVE key pair (NAME.key_secret from boiler-ai keys), when the daemon's "
                             "stream uses CURVE (record.curve); needs --server-key")
    parser.add_argument("--server-key", type=Path, metavar="FILE",
                        help="the daemon's public key (server.key from boiler-ai keys)")


def client_keys(args) -> ClientKeys | None:
    """The keys given on the command line; None when neither option is (a stream in clear)."""
    if args.client_key is None and args.server_key is None:
        return None
    if args.client_key is None or args.server_key is None:
        given, missing = ("--client-key", "--server-key") if args.server_key is None else ("--server-key",
                                                                                          "--client-key")
        raise ExpectedError(f"{given} needs {missing} too (the client's key pair and the daemon's public key)")
    return load_client_keys(args.client_key, args.server_key)


# ---- boiler-ai keys ------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("directory", type=Path,
                        help="the unit's key directory, e.g. /etc/boiler-ai/keys/reference_unit")
    parser.add_argument("--client", action="append", default=[], metavar="NAME",
                        help="create a key pair for this subscriber (historian, dashboard, ...) and authorize it; "
                             "repeat for several")


def run(args) -> int:
    written = create_keys(args.directory, args.client)
    for path in written:
        print(f"wrote {path}")
    directory = args.directory.resolve()
    print(f"daemon config:  record: {{curve: {{server_secret_key: {directory / (SERVER + '.key_secret')}, "
          f"authorized_clients: {directory / AUTHORIZED}}}}}")
    for name in args.client:
        print(f"client {name}: --client-key {directory / CLIENTS / (name + '.key_secret')} "
              f"--server-key {directory / (SERVER + '.key')}  (move the key pair to that client's host)")
    if not args.client and not written:
        print(f"{directory}: the server key pair exists; add clients with --client NAME")
    return 0
