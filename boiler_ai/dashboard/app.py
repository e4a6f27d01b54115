"""`boiler-ai dashboard`: a read-only live view of one unit's decisions, for operators and engineers.

A separate process that follows the decision stream as a historian does (the daemon's catch-up
service, plus its PUB socket when given, or a log directory on this host), so the control loop
never serves a page. Starlette on uvicorn; the charts are uPlot, shipped inside this package
(static/vendor), so the page works on a plant network without internet access.

It binds 127.0.0.1 unless told otherwise; anything else needs TLS and a password (HTTP Basic,
over TLS only). It has no route that changes anything, and it never talks to the plant.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import ipaddress
import logging
import os
import secrets
import threading
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from boiler_ai import status_codes
from boiler_ai.addresses import endpoint_options, tcp_listening
from boiler_ai.dashboard.feed import DEFAULT_TRENDS, CatchupFeed, LogFeed, Timeline, check_source
from boiler_ai.explain import UnitFiles, load_unit_files, plain, render, story
from boiler_ai.logs import setup_logging
from boiler_ai.record.curve import add_client_arguments, client_keys
from boiler_ai.record.schema import decode
from boiler_ai.strict import ConfigError

log = logging.getLogger("boiler_ai.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
STALE_S = 5.0  # no decision for this long: the page says the stream is stale
# A page asks 1.5 times a second; this leaves room for a control room full of screens, while a client gone
# wrong (a script polling back to back) cannot take the edge box's CPU from the control loop.
MAX_API_ANSWERS_PER_S = 20.0


class BasicAuth:
    """HTTP Basic authentication (any user name, one password) as ASGI middleware."""

    def __init__(self, app, password: str):
        self.app = app
        self.password = password.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self._allowed(dict(scope["headers"]).get(b"authorization", b"")):
            response = Response("password required", status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="boiler-ai dashboard", charset="UTF-8"'})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, header: bytes) -> bool:
        kind, _, value = header.partition(b" ")
        if kind.lower() != b"basic":
            return False
        try:
            _, _, password = base64.b64decode(value, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        return secrets.compare_digest(password, self.password)


class Paced:
    """ASGI middleware: `/api/` answers go out at most `per_s` a second in all; a request beyond that
    waits its turn asleep (in the event loop, spending no CPU), so answering can never busy the host."""

    def __init__(self, app, per_s: float = MAX_API_ANSWERS_PER_S):
        self.app = app
        self.gap_s = 1.0 / per_s
        self._next = 0.0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            now = asyncio.get_running_loop().time()
            turn = max(now, self._next)
            self._next = turn + self.gap_s
            if turn > now:
                await asyncio.sleep(turn - now)
        await self.app(scope, receive, send)


def create_app(timeline: Timeline, feed, files: UnitFiles = UnitFiles(), password: str | None = None):
    """The web app over a timeline (fed elsewhere) and a feed that can fetch any seq for the explain view."""
    cache: dict[str, object] = {"seq": None, "story": None}

    def story_of(seq: int) -> dict | None:
        payload = timeline.record(seq)
        if payload is None:
            payload = feed.fetch(seq)
        return None if payload is None else story(decode(payload), files)

    async def index(request):
        return FileResponse(STATIC / "index.html")

    def status(request):
        with timeline.lock:
            latest, code, releases = timeline.latest, timeline.status, dict(timeline.releases)
            distance = timeline.points[-1][5] if timeline.points else None
            age = None if timeline.received_at is None else time.monotonic() - timeline.received_at
            lost = timeline.lost
        body = {"source": feed.describe(), "trends": list(timeline.trends), "stale_after_s": STALE_S,
                "age_s": age, "lost": lost, "releases": releases}
        if latest is None:
            return JSONResponse({**body, "seq": None})
        if cache["seq"] != latest["seq"]:
            cache["story"], cache["seq"] = story(latest, files), latest["seq"]
        s = cache["story"]
        reason = status_codes.BY_CODE.get(code[1], status_codes.OTHER)
        body.update(
            seq=s["seq"], unit_id=s["unit_id"], time_utc=s["time_utc"], wall_time=s["wall_time"], mode=s["mode"],
            mode_text=s["mode_text"], ai_status=code[0],
            ai_reason={"code": reason.code, "name": reason.name, "text": reason.text, "action": reason.action},
            headline=s["headline"], mvs=s["mvs"], constraints=s["constraints"], trust=s["trust"],
            envelope_distance=distance, model=s["model"],
            releases_text={name: status_codes.reason(name).text for name in releases})
        return JSONResponse(plain(body))

    def trend(request):
        try:
            after = int(request.query_params.get("after", "-1"))
        except ValueError:
            return JSONResponse({"error": "after must be an integer seq"}, status_code=400)
        return JSONResponse(plain(timeline.trend(after)))

    def explain(request):
        seq = request.path_params["seq"]
        s = story_of(seq)
        if s is None:
            return JSONResponse({"error": f"decision {seq} is not in the unit's log"}, status_code=404)
        return JSONResponse(plain({"text": render(s), "story": s}))

    routes = [Route("/", index), Route("/api/status", status), Route("/api/trend", trend),
              Route("/api/explain/{seq:int}", explain), Mount("/static", StaticFiles(directory=STATIC))]
    app = Paced(Starlette(routes=routes))
    return BasicAuth(app, password) if password is not None else app


# ---------------------------------------------------------------------------------------------
# Command.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--catchup", metavar="ENDPOINT", help="the daemon's catch-up service, e.g. tcp://10.0.0.5:5602")
    source.add_argument("--log", type=Path, metavar="DIR", help="a decision log directory on this host")
    parser.add_argument("--pub", metavar="ENDPOINT", help="with --catchup: the daemon's PUB endpoint for live "
                                                          "records (without it the log is polled every --poll-s)")
    parser.add_argument("--config", type=Path, help="the daemon config: adds units, MV limits, process-limit rules "
                                                    "and the model's training envelope")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default %(default)s; any other "
                                                            "needs --tls-cert, --tls-key and --password-file)")
    parser.add_argument("--port", type=int, default=8650, help="port (default %(default)s)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain to serve HTTPS")
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument("--password-file", type=Path, help="file holding the dashboard password (HTTP Basic auth)")
    parser.add_argument("--hours", type=float, default=4.0, help="trend window, hours (default %(default)s)")
    parser.add_argument("--trend", default=",".join(DEFAULT_TRENDS),
                        help="signals to trend, comma-separated (default: %(default)s)")
    parser.add_argument("--poll-s", type=float, default=0.5, help="how often to look for new decisions without PUB")
    parser.add_argument("--nice", type=int, default=10, help="CPU priority increment (default %(default)s: on the "
                                                             "edge box the control loop comes first)")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    add_client_arguments(parser)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read the password file ({exc.strerror or exc})") from exc
    if len(text) < 8:
        raise ConfigError(path, "", "the password must be at least 8 characters")
    return text


def check_arguments(args: argparse.Namespace) -> None:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("command line", "--tls-cert/--tls-key", "give both or neither")
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise ConfigError(path, "", "file not found")
    if not _is_loopback(args.host) and (args.tls_cert is None or args.password_file is None):
        raise ConfigError("command line", "--host", f"serving on {args.host} (beyond this host) needs --tls-cert, "
                                                    "--tls-key and --password-file: the page shows plant data")
    if args.password_file is not None and args.tls_cert is None and not _is_loopback(args.host):
        raise ConfigError("command line", "--password-file", "a password is only sent over TLS")
    if not 0 < args.hours <= 48:
        raise ConfigError("command line", "--hours", f"expected a number of hours in (0, 48], got {args.hours}")
    if args.pub and not args.catchup:
        raise ConfigError("command line", "--pub", "needs --catchup (the log fills what the live stream misses)")
    endpoint_options(catchup=args.catchup, pub=args.pub)
    with tcp_listening(args.host, args.port, f"--host/--port {args.host}:{args.port}"):
        pass  # free: uvicorn would log its own error and exit 1


def run(args: argparse.Namespace) -> int:
    import uvicorn

    setup_logging(args.log_level)
    check_arguments(args)
    if args.nice:
        os.nice(args.nice)
    password = _password(args.password_file)
    files = load_unit_files(args.config)
    training = {}
    if args.config is not None:
        from boiler_ai.config import load_config
        from boiler_ai.control.model_contract import read_contract

        contract = read_contract(load_config(args.config).model_path)
        training = dict(zip(contract.input_signals, contract.training_envelope))
    trends = tuple(name.strip() for name in args.trend.split(",") if name.strip())
    timeline = Timeline(args.hours, trends, training_envelope=training)
    if args.log is not None:
        check_source(args.log)
        feed = LogFeed(timeline, args.log, args.poll_s)
    else:
        feed = CatchupFeed(timeline, args.catchup, args.pub, args.poll_s, curve=client_keys(args))
    stop = threading.Event()
    worker = threading.Thread(target=feed.run, args=(stop,), name="dashboard-feed", daemon=True)
    worker.start()
    config = uvicorn.Config(create_app(timeline, feed, files, password), host=args.host, port=args.port,
                            ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key, log_level=args.log_level,
                            log_config=None,  # its lines go through ours (boiler_ai/logs.py), as JSON
                            access_log=False, lifespan="off", timeout_graceful_shutdown=2)  # browsers hold connections
    scheme = "https" if args.tls_cert else "http"
    print(f"boiler-ai dashboard: {scheme}://{args.host}:{args.port}/ following {feed.describe()}", flush=True)
    try:
        uvicorn.Server(config).run()
    finally:
        stop.set()
        worker.join(5.0)
    return 0
