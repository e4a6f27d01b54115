"""The dashboard's web app and feed without a browser: what each route serves, read from a real decision log
of the stepped simulated unit, and how it refuses to serve plant data unprotected."""

from __future__ import annotations

import base64
import threading

import pytest
from rigs.cycle_rig import Rig, follower_config

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from boiler_ai import status_codes  # noqa: E402
from boiler_ai.cli import main  # noqa: E402
from boiler_ai.dashboard.app import create_app  # noqa: E402
from boiler_ai.dashboard.feed import CatchupFeed, LogFeed, Timeline  # noqa: E402
from boiler_ai.explain import load_unit_files  # noqa: E402
from boiler_ai.record.catchup import CatchupService  # noqa: E402
from boiler_ai.record.log import DurableLog  # noqa: E402


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Engaged, then released twice by the operator; 1 s cycles."""
    tmp = tmp_path_factory.mktemp("dashboard")
    config = follower_config(tmp, {"sa_damper_c_pct": 12.0}, mode="closed_loop")
    log = DurableLog(tmp / "log", "reference_unit", fsync="never")
    rig = Rig(config, decision_log=log)
    for _ in range(2):
        rig.engage()
        rig.run(5)
        rig.unit.set_ai_enable(False)
        rig.run(3)
    log.close()
    return config, tmp / "log", rig.records


def follow(feed, timeline, count):
    stop = threading.Event()
    worker = threading.Thread(target=feed.run, args=(stop,), daemon=True)
    worker.start()
    try:
        deadline = 200
        while (not timeline.points or timeline.points[-1][0] < count - 1) and deadline:
            stop.wait(0.05)
            deadline -= 1
    finally:
        stop.set()
        worker.join(10)
    assert timeline.points and timeline.points[-1][0] == count - 1


def test_status_trend_and_explain_from_a_log(logged):
    config, log_dir, records = logged
    timeline = Timeline(hours=1.0)
    feed = LogFeed(timeline, log_dir, poll_s=0.05)
    follow(feed, timeline, len(records))
    client = TestClient(create_app(timeline, feed, load_unit_files(config)))

    status = client.get("/api/status").json()
    assert status["seq"] == len(records) - 1 and status["mode"] == records[-1]["mode"] == "disabled"
    # the release reason stays on the faceplate after the cycle that released
    assert status["ai_status"] == 0 and status["ai_reason"]["code"] == status_codes.BY_NAME["ai_enable_dropped"].code
    assert status["releases"] == {"ai_enable_dropped": 2}
    mv = next(row for row in status["mvs"] if row["mv"] == "sa_damper_c_pct")
    assert mv["limits"]["min"] == 25.0 and mv["unit"] == "%"

    trend = client.get("/api/trend").json()
    assert trend["seq"] == list(range(len(records)))
    assert len(trend["signals"]["o2_economiser_pct"]) == len(records)
    assert all(isinstance(v, float) for v in trend["signals"]["o2_economiser_pct"])
    assert status_codes.MODE_CODES["active"] in trend["ai_status"]
    assert client.get("/api/trend", params={"after": len(records) - 3}).json()["seq"] == [len(records) - 2,
                                                                                         len(records) - 1]
    first = client.get("/api/explain/0").json()  # older than the newest kept records too: read from the log
    assert first["text"].startswith("Decision 0 of reference_unit")
    assert client.get("/api/explain/99999").status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
    assert client.get("/static/vendor/uPlot.iife.min.js").status_code == 200


def test_catch_up_feed_starts_at_the_window_not_at_the_oldest_record(logged):
    _, log_dir, records = logged
    window = 6  # seconds, at 1 s per cycle
    timeline = Timeline(hours=window / 3600.0)
    with DurableLog(log_dir, "reference_unit", fsync="never") as log:
        service = CatchupService(log, "tcp://127.0.0.1:*")
        try:
            feed = CatchupFeed(timeline, service.endpoint, None, poll_s=0.05)
            follow(feed, timeline, len(records))
            assert feed.fetch(0) is not None  # and any older seq is still at hand for the explain view
        finally:
            service.close()
    assert timeline.points[0][0] == len(records) - window


def test_password_protects_every_route(logged):
    _, log_dir, _ = logged
    timeline = Timeline(hours=1.0)
    client = TestClient(create_app(timeline, LogFeed(timeline, log_dir, 0.1), password="correct horse"))
    assert client.get("/api/status").status_code == 401
    assert client.get("/static/dashboard.js").status_code == 401
    good = base64.b64encode(b"operator:correct horse").decode()
    bad = base64.b64encode(b"operator:wrong").decode()
    assert client.get("/api/status", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    assert client.get("/api/status", headers={"Authorization": f"Basic {good}"}).status_code == 200


def test_a_client_polling_back_to_back_is_answered_at_the_paced_rate_only():
    """What keeps a runaway client from taking the edge box's CPU: it waits (asleep) for its turn."""
    import time

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from boiler_ai.dashboard.app import Paced

    answered = []
    app = Starlette(routes=[Route("/api/x", lambda r: answered.append(1) or PlainTextResponse("x"))])
    client = TestClient(Paced(app, per_s=50.0))
    start = time.monotonic()
    for _ in range(26):
        assert client.get("/api/x").status_code == 200
    assert time.monotonic() - start >= 25 / 50.0 * 0.95  # 25 gaps of 20 ms at least
    assert len(answered) == 26


@pytest.mark.parametrize("args, says", [
    (["--host", "0.0.0.0"], "needs --tls-cert, --tls-key and --password-file"),
    (["--tls-cert", "cert.pem"], "--tls-cert/--tls-key: give both or neither"),
    (["--hours", "100"], "--hours"),
])
def test_refuses_to_serve_unprotected_or_misconfigured(logged, capsys, args, says):
    _, log_dir, _ = logged
    assert main(["dashboard", "--log", str(log_dir), *args]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_not_a_log_directory_is_one_line(tmp_path, capsys):
    assert main(["dashboard", "--log", str(tmp_path)]) == 2
    assert "not a decision log directory" in capsys.readouterr().err


def self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key, PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "boiler-ai dashboard test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "dashboard.crt", tmp_path / "dashboard.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_serves_https_with_a_password(logged, tmp_path):
    import ssl
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from rigs.served import free_port

    _, log_dir, _ = logged
    cert, key = self_signed(tmp_path)
    password = tmp_path / "password"
    password.write_text("correct horse battery\n")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "boiler_ai", "dashboard", "--log", str(log_dir), "--port",
                               str(port), "--tls-cert", str(cert), "--tls-key", str(key), "--password-file",
                               str(password)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    context = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{port}/api/status"
    auth = {"Authorization": "Basic " + base64.b64encode(b"operator:correct horse battery").decode()}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=auth), context=context,
                                            timeout=5) as answer:
                    assert answer.status == 200
                    break
            except urllib.error.URLError as exc:
                if isinstance(exc, urllib.error.HTTPError) or time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, context=context, timeout=5)
        assert refused.value.code == 401
        refused.value.close()
    finally:
        server.terminate()
        server.wait(20)
