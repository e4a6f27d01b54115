"""ZeroMQ CURVE on the decision stream: only authorized client keys get records, live or from the log."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import zmq
from rigs.stream_keys import stream_keys
from rigs.waiting import wait_for

from boiler_ai.record.curve import ClientKeys, CurveKeyError, load_server_keys, secure_client
from boiler_ai.record.historian import CatchupClient, CatchupUnavailable
from boiler_ai.record.recorder import Recorder
from boiler_ai.record.synthetic import signal_names, stamped, synthetic_record

ROOT = Path(__file__).resolve().parents[2]
ANY = "tcp://127.0.0.1:*"
SIGNALS = signal_names(10)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def keys(tmp_path):
    return stream_keys(tmp_path / "keys", "historian", "dashboard")


def stranger(keys) -> ClientKeys:
    """A well-formed key pair the daemon was never told about, aimed at the right server key."""
    public, secret = zmq.curve_keypair()
    return ClientKeys(public, secret, keys.client().server_public)


def append(recorder, n=1):
    import random

    rng = random.Random(recorder.log.next_seq)
    for _ in range(n):
        seq = recorder.log.next_seq
        recorder.append(stamped(recorder.log, synthetic_record(rng, cycle=seq, wall_time=1.7e9 + seq,
                                                               signals=SIGNALS)))


def subscriber(ctx, endpoint, curve):
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.subscribe(b"unit1")
    secure_client(sub, curve)
    sub.connect(endpoint)
    return sub


def received(recorder, sub, seconds=1.5) -> int:
    """Messages that reach `sub` while records are published for `seconds`."""
    got = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        append(recorder)
        while sub.poll(50):
            sub.recv_multipart()
            got += 1
    return got


def catchup_answers(ctx, endpoint, curve) -> bool:
    client = CatchupClient(endpoint, ctx, 1.0, curve)
    try:
        head, payloads = client.request({"op": "fetch", "from_seq": 0, "max_records": 3})
    except CatchupUnavailable:
        return False
    finally:
        client.close()
    assert head["ok"] and len(payloads) == 3
    return True


def test_only_an_authorized_key_gets_records_from_the_publisher_and_the_catchup_service(tmp_path, ctx, keys):
    with Recorder(tmp_path / "log", "unit1", publish_endpoint=ANY, catchup_endpoint=ANY, context=ctx,
                  curve=keys.server(), fsync="never") as recorder:
        append(recorder, 5)
        wait_for(lambda: recorder.log.published_next >= 5, 5.0, "records published")
        pub, catchup = recorder.publisher.endpoint, recorder.catchup.endpoint
        subs = {name: subscriber(ctx, pub, curve) for name, curve in
                (("no key", None), ("unauthorized key", stranger(keys)), ("authorized", keys.client("dashboard")))}
        try:
            got = {name: received(recorder, sub) for name, sub in subs.items()}
        finally:
            for sub in subs.values():
                sub.close()
        assert got["no key"] == 0 and got["unauthorized key"] == 0
        assert got["authorized"] > 0
        assert not catchup_answers(ctx, catchup, None)
        assert not catchup_answers(ctx, catchup, stranger(keys))
        assert catchup_answers(ctx, catchup, keys.client("historian"))


def test_without_keys_the_stream_is_in_clear(tmp_path, ctx):
    with Recorder(tmp_path / "log", "unit1", publish_endpoint=ANY, catchup_endpoint=ANY, context=ctx,
                  fsync="never") as recorder:
        append(recorder, 5)
        wait_for(lambda: recorder.log.published_next >= 5, 5.0, "records published")
        assert catchup_answers(ctx, recorder.catchup.endpoint, None)


def boiler_ai(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "boiler_ai", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_keys_command_writes_the_layout_and_refuses_to_overwrite(tmp_path):
    done = boiler_ai("keys", tmp_path / "k", "--client", "historian")
    assert done.returncode == 0, done.stderr
    assert f"--client-key {tmp_path / 'k' / 'clients' / 'historian.key_secret'}" in done.stdout
    server = load_server_keys(tmp_path / "k" / "server.key_secret", tmp_path / "k" / "authorized_clients")
    assert len(server.authorized) == 1
    assert (tmp_path / "k" / "server.key_secret").stat().st_mode & 0o077 == 0
    before = (tmp_path / "k" / "server.key_secret").read_bytes()
    again = boiler_ai("keys", tmp_path / "k", "--client", "historian")
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1 and "exists already" in again.stderr
    added = boiler_ai("keys", tmp_path / "k", "--client", "dashboard")
    assert added.returncode == 0, added.stderr
    assert (tmp_path / "k" / "server.key_secret").read_bytes() == before  # the server keeps its key
    assert len(load_server_keys(tmp_path / "k" / "server.key_secret", tmp_path / "k" / "authorized_clients")
               .authorized) == 2


def test_a_malformed_or_public_only_key_is_named(tmp_path, keys):
    bad = tmp_path / "bad.key_secret"
    bad.write_text('curve\n    public-key = "short"\n')
    with pytest.raises(CurveKeyError, match="bad.key_secret: no valid CURVE public key"):
        load_server_keys(bad, keys.directory / "authorized_clients")
    with pytest.raises(CurveKeyError, match="server.key: no valid CURVE secret key"):
        load_server_keys(keys.directory / "server.key", keys.directory / "authorized_clients")


def test_historian_command_names_a_missing_server_key(tmp_path, keys):
    done = boiler_ai("historian", "--unit", "u", "--pub", "tcp://127.0.0.1:1", "--catchup", "tcp://127.0.0.1:2",
                     "--db", tmp_path / "h.sqlite", "--client-key", keys.directory / "clients" / "historian.key_secret")
    assert done.returncode == 2 and "--client-key needs --server-key" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def daemon_config(tmp_path, curve) -> Path:
    cfg = yaml.safe_load((ROOT / "deploy" / "examples" / "reference_unit.yaml").read_text())
    for key in ("tag_map", "envelope"):
        cfg[key] = str((ROOT / "deploy" / "examples" / cfg[key]).resolve())
    cfg["model"]["path"] = str((ROOT / "deploy" / "examples" / cfg["model"]["path"]).resolve())
    cfg["record"]["log_dir"] = str(tmp_path / "log")
    if curve is ...:
        del cfg["record"]["curve"]
    else:
        cfg["record"]["curve"] = curve
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml.safe_dump(cfg) if curve is not False else yaml.safe_dump(cfg).replace("curve: false",
                                                                                               "curve: off"))
    return path


def test_config_needs_keys_or_an_explicit_off(tmp_path, keys):
    from boiler_ai.config import load_config
    from boiler_ai.strict import ConfigError

    with pytest.raises(ConfigError, match="record.curve: required field is missing") as caught:
        load_config(daemon_config(tmp_path, ...))
    assert "curve: off" in str(caught.value)
    assert load_config(daemon_config(tmp_path, False)).record.curve is None
    with pytest.raises(ConfigError, match="record.curve: expected off"):
        load_config(daemon_config(tmp_path, True))
    with pytest.raises(ConfigError, match="record.curve.server_key: unknown field"):
        load_config(daemon_config(tmp_path, {**keys.config, "server_key": "x"}))
    assert load_config(daemon_config(tmp_path, keys.config)).record.curve.authorized_clients == \
        keys.directory / "authorized_clients"


def test_check_names_missing_keys_in_one_line(tmp_path, keys):
    cfg = daemon_config(tmp_path, {**keys.config, "server_secret_key": str(tmp_path / "nowhere.key_secret")})
    done = boiler_ai("check", cfg)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "record.curve.server_secret_key: file not found" in done.stderr
    (tmp_path / "empty").mkdir()
    done = boiler_ai("check", daemon_config(tmp_path, {**keys.config, "authorized_clients": str(tmp_path / "empty")}))
    assert done.returncode == 2 and "no client public keys" in done.stderr
    done = boiler_ai("check", daemon_config(tmp_path, keys.config))
    assert done.returncode == 0, done.stderr
    assert "CURVE, 2 authorized client keys" in done.stdout


def test_explain_over_catchup_with_keys(tmp_path, keys):
    with Recorder(tmp_path / "log", "unit1", publish_endpoint=None, catchup_endpoint=ANY, curve=keys.server(),
                  fsync="never") as recorder:
        append(recorder, 3)
        wait_for(lambda: recorder.log.published_next >= 3, 5.0, "records logged")
        endpoint = recorder.catchup.endpoint
        refused = boiler_ai("explain", "latest", "--catchup", endpoint, "--timeout-s", "1", "--json")
        assert refused.returncode == 2 and "give --client-key and --server-key" in refused.stderr
        done = boiler_ai("explain", "latest", "--catchup", endpoint, "--json", *keys.options())
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)
