"""Every command turns the failures an operator meets into one line naming the thing, exit code 2.

Each case runs the real command in a subprocess, as an operator would: a port in use, a missing or
unreadable file, a directory that cannot be written, a missing optional package, an unknown unit.
The assertion is the same for all: exit 2, exactly one line on stderr, no traceback, the thing named.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rigs.cycle_rig import ROOT, follower_config
from rigs.served import free_port

from boiler_ai.record.log import DurableLog
from boiler_ai.record.store import SqliteStore
from boiler_ai.record.synthetic import signal_names, stamped, synthetic_record

SHEET = ROOT / "deploy" / "examples" / "performance_test_sheet.yaml"
CANNOT_CREATE = "/proc/boiler-ai-test"  # root may write anywhere but here

# python -c: block one optional package, then run the command line as `boiler-ai` would
WITHOUT = "import sys; sys.modules[{module!r}] = None; from boiler_ai.cli import main; sys.exit(main(sys.argv[1:]))"


def boiler_ai(*args, without: str | None = None) -> subprocess.CompletedProcess:
    prefix = ["-c", WITHOUT.format(module=without)] if without else ["-m", "boiler_ai"]
    return subprocess.run([sys.executable, *prefix, *map(str, args)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


@pytest.fixture
def held_port():
    """A TCP port on 127.0.0.1 that something else is listening on."""
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield port


@pytest.fixture
def log_of_unit1(tmp_path) -> Path:
    directory = tmp_path / "unit1-log"
    rng = random.Random(1)
    with DurableLog(directory, "unit1", fsync="never") as log:
        for i in range(3):
            log.append(stamped(log, synthetic_record(rng, cycle=i, wall_time=1.7e9 + i, signals=signal_names(4))))
    return directory


def config(tmp_path: Path, **changes) -> Path:
    return follower_config(tmp_path, **changes)


def edited(tmp_path: Path, **top_level) -> Path:
    """The follower config with top-level entries replaced (the rig's changes only update sections)."""
    path = config(tmp_path)
    data = yaml.safe_load(path.read_text())
    data.update(top_level)
    path.write_text(yaml.safe_dump(data))
    return path


def not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "notes.sqlite"
    path.write_text("this is not a SQLite file\n" * 100)
    return path


def store_of_unit1(tmp_path: Path) -> Path:
    path = tmp_path / "h.sqlite"
    store = SqliteStore(path)
    store.save("unit1", "log-a", [(0, 1.7e9, "{}")], [])
    store.close()
    return path


# (case id, command line builder, words the one line must contain). Builders get tmp_path and fixtures.
CASES = [
    # run
    ("run-missing-config", lambda t, f: ["run", t / "absent.yaml"], "absent.yaml: cannot read file"),
    ("run-config-is-a-directory", lambda t, f: ["run", t], "cannot read file (Is a directory)"),
    ("run-metrics-port-in-use", lambda t, f: ["run", config(t, metrics={"listen": f"127.0.0.1:{f['port']}"})],
     "metrics.listen: cannot listen on"),
    ("run-publish-port-in-use",
     lambda t, f: ["run", config(t, record={"publish_endpoint": f"tcp://127.0.0.1:{f['port']}"})],
     "record.publish_endpoint: cannot bind"),
    ("run-log-dir-uncreatable", lambda t, f: ["run", config(t, record={"log_dir": f"{CANNOT_CREATE}/log"})],
     "record.log_dir: cannot create"),
    ("run-curve-key-missing",
     lambda t, f: ["run", config(t, record={"publish_endpoint": "tcp://127.0.0.1:5601", "curve": {
         "server_secret_key": str(t / "absent.key_secret"), "authorized_clients": str(t)}})],
     "record.curve.server_secret_key: file not found"),
    ("run-curve-missing",
     lambda t, f: ["run", config(t, record={"publish_endpoint": "tcp://127.0.0.1:5601", "curve": None})],
     "record.curve: expected off"),
    ("run-missing-model", lambda t, f: ["run", edited(t, model={"path": str(t / "gone.onnx"), "sha256": "0" * 64})],
     "model.path: file not found"),
    ("run-unknown-unit", lambda t, f: ["run", edited(t, unit="unit_7")], "'unit_7' but the tag map"),
    ("run-malformed-endpoint", lambda t, f: ["run", config(t, plant={"endpoint": "opc.tcp://dcs:48x0"})],
     "plant.endpoint: expected opc.tcp://HOST:PORT"),
    # check
    ("check-missing-config", lambda t, f: ["check", t / "absent.yaml"], "absent.yaml: cannot read file"),
    ("check-catchup-port-in-use",
     lambda t, f: ["check", config(t, record={"catchup_endpoint": f"tcp://127.0.0.1:{f['port']}"})],
     "record.catchup_endpoint: cannot bind"),
    ("check-log-dir-uncreatable", lambda t, f: ["check", config(t, record={"log_dir": f"{CANNOT_CREATE}/log"})],
     "record.log_dir: cannot create"),
    ("check-unknown-unit", lambda t, f: ["check", edited(t, unit="unit_7")], "'unit_7' but the tag map"),
    # sim
    ("sim-port-in-use", lambda t, f: ["sim", "--endpoint", f"opc.tcp://127.0.0.1:{f['port']}", "--duration", "1"],
     "cannot listen on 127.0.0.1:{port}"),
    ("sim-malformed-endpoint", lambda t, f: ["sim", "--endpoint", "opc.tcp://127.0.0.1:4x", "--duration", "1"],
     "--endpoint: expected opc.tcp://HOST:PORT"),
    ("sim-missing-tag-map", lambda t, f: ["sim", "--tag-map", t / "absent.yaml", "--duration", "1"],
     "absent.yaml: cannot read file"),
    ("sim-missing-password-file",
     lambda t, f: ["sim", "--security", "sign-encrypt", "--pki", t / "pki", "--user", "op",
                   "--password-file", t / "absent.pw", "--endpoint", f"opc.tcp://127.0.0.1:{free_port()}"],
     "absent.pw: cannot read"),
    ("sim-pki-uncreatable",
     lambda t, f: ["sim", "--security", "sign-encrypt", "--pki", f"{CANNOT_CREATE}/pki", "--duration", "1",
                   "--endpoint", f"opc.tcp://127.0.0.1:{free_port()}"], CANNOT_CREATE),
    # demo
    ("demo-missing-config", lambda t, f: ["demo", "--config", t / "absent.yaml"], "absent.yaml: cannot read file"),
    ("demo-unknown-scenario", lambda t, f: ["demo", "--scenario", "tuesday"], "--scenario: unknown scenario 'tuesday'"),
    # evaluate: a bad OPC UA run is refused before hours of stepped runs, not after
    ("evaluate-unknown-opcua-scenario",
     lambda t, f: ["evaluate", ROOT / "models" / "offline-rl-v2" / "policy.onnx", "--opcua", "tuesday"],
     "--opcua: unknown scenario 'tuesday'"),
    # model lifecycle
    ("model-switch-without-challenger", lambda t, f: ["model", "switch", config(t), "--sha256", "0" * 64],
     "challenger: there is none"),
    # replay
    ("replay-missing-log", lambda t, f: ["replay", t / "no-log", "--config", config(t)],
     "no-log: not a decision log directory"),
    ("replay-missing-config", lambda t, f: ["replay", f["log"], "--config", t / "absent.yaml"],
     "absent.yaml: cannot read file"),
    ("replay-unknown-unit", lambda t, f: ["replay", f["log"], "--config", config(t)],
     "a record of unit 'unit1', the config is for unit 'reference_unit'"),
    # historian
    ("historian-db-uncreatable",
     lambda t, f: ["historian", "--unit", "u1", "--pub", "tcp://127.0.0.1:1", "--catchup", "tcp://127.0.0.1:2",
                   "--db", f"{CANNOT_CREATE}/h.sqlite"], "h.sqlite: cannot open it as a SQLite store"),
    ("historian-db-not-a-database",
     lambda t, f: ["historian", "--unit", "u1", "--pub", "tcp://127.0.0.1:1", "--catchup", "tcp://127.0.0.1:2",
                   "--db", not_a_database(t)], "notes.sqlite: cannot open it as a SQLite store"),
    ("historian-postgres-refuses",
     lambda t, f: ["historian", "--unit", "u1", "--pub", "tcp://127.0.0.1:1", "--catchup", "tcp://127.0.0.1:2",
                   "--db", f"postgresql://historian:pw-never-shown@127.0.0.1:{f['closed']}/plant"],
     "cannot connect to PostgreSQL at 127.0.0.1:{closed} (database 'plant', user 'historian'): Connection refused"),
    ("historian-malformed-endpoint",
     lambda t, f: ["historian", "--unit", "u1", "--pub", "tcp://dcs", "--catchup", "tcp://127.0.0.1:2"],
     "--pub: expected tcp://HOST:PORT"),
    # export
    ("export-missing-source", lambda t, f: ["export", t / "absent", "-o", t / "out.csv"],
     "absent: not a log directory, a SQLite file"),
    ("export-source-not-a-database", lambda t, f: ["export", not_a_database(t), "-o", t / "out.csv"],
     "notes.sqlite: cannot open it as a SQLite store"),
    ("export-postgres-refuses", lambda t, f: ["export", f"postgresql://reader@127.0.0.1:{f['closed']}/plant", "-o",
                                              t / "out.csv"], "cannot connect to PostgreSQL at 127.0.0.1:{closed}"),
    ("export-output-unwritable", lambda t, f: ["export", f["log"], "-o", f"{CANNOT_CREATE}/out.csv"],
     "out.csv: cannot write the output"),
    ("export-unknown-unit-in-log", lambda t, f: ["export", f["log"], "-o", t / "out.csv", "--unit", "unit9"],
     "--unit 'unit9': this log is unit 'unit1'"),
    ("export-unknown-unit-in-database",
     lambda t, f: ["export", store_of_unit1(t), "-o", t / "out.csv", "--unit", "unit9"],
     "--unit 'unit9': not in this database (units: unit1)"),
    # explain
    ("explain-missing-log", lambda t, f: ["explain", "latest", "--log", t / "no-log"], "not a decision log directory"),
    ("explain-missing-config", lambda t, f: ["explain", "latest", "--log", f["log"], "--config", t / "absent.yaml"],
     "absent.yaml: cannot read file"),
    ("explain-malformed-endpoint", lambda t, f: ["explain", "3", "--catchup", "tcp://dcs"],
     "--catchup: expected tcp://HOST:PORT"),
    # dashboard
    ("dashboard-port-in-use", lambda t, f: ["dashboard", "--log", f["log"], "--port", f["port"]],
     "cannot listen on 127.0.0.1:{port}"),
    ("dashboard-missing-log", lambda t, f: ["dashboard", "--log", t / "no-log", "--port", free_port()],
     "not a decision log directory"),
    ("dashboard-malformed-endpoint", lambda t, f: ["dashboard", "--catchup", "tcp://dcs", "--port", free_port()],
     "--catchup: expected tcp://HOST:PORT"),
    # efficiency
    ("efficiency-missing-sheet", lambda t, f: ["efficiency", t / "absent.yaml"], "absent.yaml: cannot read file"),
    ("efficiency-sheet-is-a-directory", lambda t, f: ["efficiency", t], "cannot read file (Is a directory)"),
    ("efficiency-duplicate-key",
     lambda t, f: ["efficiency", _with_duplicate(t, SHEET)], "duplicate key"),
]


def _with_duplicate(tmp_path: Path, source: Path) -> Path:
    path = tmp_path / source.name
    path.write_text(source.read_text() + "rated_mw: 600\nrated_mw: 660\n")
    return path


def assert_one_line(done: subprocess.CompletedProcess, command: str, words: str) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"boiler-ai {command}: ") and words in lines[0], lines[0]


@pytest.mark.parametrize("case, build, words", CASES, ids=[c[0] for c in CASES])
def test_each_command_fails_in_one_line(tmp_path, held_port, log_of_unit1, case, build, words):
    closed = free_port()  # nothing listens there
    argv = build(tmp_path, {"port": held_port, "log": log_of_unit1, "closed": closed})
    done = boiler_ai(*argv)
    assert_one_line(done, argv[0], words.format(port=held_port, closed=closed))
    assert "pw-never-shown" not in done.stderr


@pytest.mark.parametrize("argv, words", [
    (lambda t, log: ["export", log, "-o", t / "out.parquet"],
     "export to Parquet needs the Python package 'pyarrow', which is not installed: pip install 'boiler-ai[parquet]'"),
    (lambda t, log: ["historian", "--unit", "u1", "--pub", "tcp://127.0.0.1:1", "--catchup", "tcp://127.0.0.1:2",
                     "--db", "postgresql://historian@127.0.0.1:1/decisions"],
     "a PostgreSQL store needs the Python package 'psycopg', which is not installed: "
     "pip install 'boiler-ai[postgres]'"),
], ids=["export-parquet-without-pyarrow", "historian-postgres-without-psycopg"])
def test_a_missing_optional_package_names_its_extra(tmp_path, log_of_unit1, argv, words):
    args = argv(tmp_path, log_of_unit1)
    module = "pyarrow" if args[0] == "export" else "psycopg"
    assert_one_line(boiler_ai(*args, without=module), args[0], words)


def test_csv_export_needs_no_pyarrow(tmp_path, log_of_unit1):
    out = tmp_path / "out.csv"
    done = boiler_ai("export", log_of_unit1, "-o", out, without="pyarrow")
    assert done.returncode == 0, done.stderr
    header, *rows = out.read_text().splitlines()
    assert header.startswith("unit_id,seq,wall_time,time,mode,model_id,release_reason,")
    assert len(rows) == 3 and rows[1].startswith("unit1,1,1700000001.0,2023-11-14T22:13:21.000000Z,")
