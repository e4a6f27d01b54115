"""The daemon under systemd: the notify protocol on a real unix datagram socket (READY=1 after the first
healthy cycle, WATCHDOG=1 per healthy cycle, STATUS= what it waits for, STOPPING=1), one log line each
time what it waits for changes, and the service unit itself (systemd-analyze verify where available)."""

from __future__ import annotations

import asyncio
import configparser
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rigs.cycle_rig import BOOTSTRAP, BOOTSTRAP_SHA, ROOT, write_config

from boiler_ai.config import load_config
from boiler_ai.daemon import Daemon, build_core, make_plant, open_recorder
from boiler_ai.record.log import DurableLog
from boiler_ai.service import ServiceManager

UNIT_FILE = ROOT / "deploy" / "boiler-ai@.service"


class NotifySocket:
    """What systemd listens on: a unix datagram socket, abstract ('@name') or a path, read as it arrives
    (the kernel queues only a few datagrams)."""

    def __init__(self, path: Path | None = None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"boiler-ai-test-{secrets.token_hex(6)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(0.1)
        self._received: list[list[str]] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self._received.append(self.sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                pass

    def messages(self) -> list[list[str]]:
        time.sleep(0.3)  # what is in flight
        return list(self._received)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(5)
        self.sock.close()


def stepped(tmp: Path, **changes) -> Path:
    return write_config(tmp, BOOTSTRAP, BOOTSTRAP_SHA, mode="closed_loop",
                        plant={"kind": "stepped", "scenario": "steady_full_load", "seed": 0, "ai_enable": True},
                        **changes)


def run_cycles(config: Path, service: ServiceManager, cycles: int) -> Daemon:
    core = build_core(load_config(config))
    plant, pace = make_plant(core)

    async def body(daemon: Daemon) -> None:
        stop = asyncio.Event()
        await daemon.run(stop, max_cycles=cycles)

    with open_recorder(core.config) as recorder:
        daemon = Daemon(core, plant, recorder, pace=pace, service=service)
        asyncio.run(body(daemon))
    return daemon


@pytest.mark.parametrize("kind", ["abstract", "path"])
def test_ready_after_the_first_healthy_cycle_then_a_watchdog_ping_per_cycle(tmp_path, kind):
    listener = NotifySocket(None if kind == "abstract" else tmp_path / "notify.sock")
    try:
        service = ServiceManager({"NOTIFY_SOCKET": listener.address})
        assert service.active
        daemon = run_cycles(stepped(tmp_path), service, 12)
        messages = listener.messages()
    finally:
        listener.close()
    ready = messages.index(["READY=1", "WATCHDOG=1"])
    assert all(m[0].startswith("STATUS=") for m in messages[:ready])
    pings = [m for m in messages if m == ["WATCHDOG=1"]]
    assert len(pings) == 12 - 1  # every cycle after the first
    assert daemon.metrics.cycles > 12  # and the release cycles at stop, which do not count
    statuses = [m[0] for m in messages if m[0].startswith("STATUS=")]
    assert statuses[0].startswith("STATUS=waiting: ")  # the policy fills its history first
    assert "STATUS=AI in control: the AI writes setpoints within its envelope" in statuses
    stopping = messages.index(["STOPPING=1", "STATUS=stopping: handing control back to the DCS"])
    assert all(m != ["WATCHDOG=1"] for m in messages[stopping:])  # release cycles do not feed the watchdog


def test_a_stalled_log_writer_starves_the_watchdog(tmp_path, monkeypatch):
    monkeypatch.setattr(DurableLog, "writer_stalled", property(lambda self: True))
    listener = NotifySocket()
    try:
        run_cycles(stepped(tmp_path), ServiceManager({"NOTIFY_SOCKET": listener.address}), 5)
        messages = listener.messages()
    finally:
        listener.close()
    assert not any("READY=1" in m or "WATCHDOG=1" in m for m in messages)


def test_without_notify_socket_nothing_is_sent_and_a_gone_manager_does_not_stop_the_cycle(tmp_path, caplog):
    assert not ServiceManager({}).active
    listener = NotifySocket()
    service = ServiceManager({"NOTIFY_SOCKET": listener.address})
    listener.close()  # the service manager went away
    with caplog.at_level(logging.WARNING, "boiler_ai.service"):
        daemon = run_cycles(stepped(tmp_path), service, 5)
    assert daemon.metrics.cycles >= 5
    assert [r.getMessage() for r in caplog.records].count(
        "cannot notify the service manager (watchdog may restart the daemon)") == 1


def test_boiler_ai_run_notifies_and_logs_what_it_waits_for_once(tmp_path):
    """After a restart the daemon waits for the operator to switch AI_ENABLE off and on: it says so once."""
    config = stepped(tmp_path, engagement={"arm_on_start": False})
    listener = NotifySocket()
    try:
        done = subprocess.run([sys.executable, "-m", "boiler_ai", "run", str(config), "--max-cycles", "40"],
                              capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env={**os.environ, "NOTIFY_SOCKET": listener.address})
        messages = listener.messages()
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr
    logs = [json.loads(line) for line in done.stderr.splitlines()]
    waits = [entry for entry in logs if "waiting" in entry["msg"]]
    assert [w["reasons"] for w in waits] == [["policy_history_filling", "awaiting_operator_reenable"],
                                             ["awaiting_operator_reenable"]]
    assert waits[-1]["msg"] == "waiting: Released: waiting for the operator to re-enable"
    assert waits[-1]["actions"] == ["Check the release reason, then switch AI_ENABLE off and on"]
    assert ["READY=1", "WATCHDOG=1"] in messages
    assert ["STATUS=waiting: Released: waiting for the operator to re-enable"] in messages
    assert messages[-1][0] == "STOPPING=1"


def unit_file() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(UNIT_FILE.read_text())
    return parser


def test_the_service_unit_uses_the_watchdog_a_start_limit_and_hardening():
    unit = unit_file()
    service, section = unit["Service"], unit["Unit"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert 1 < int(service["WatchdogSec"]) <= 30  # cycles are 1 s: several missed cycles, not one
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # a bad config is not retried (boiler_ai/errors.py)
    assert int(section["StartLimitBurst"]) <= 5 and int(section["StartLimitIntervalSec"]) >= 5 * int(
        service["RestartSec"])  # the burst fits in the interval, so a crash loop does stop
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "true", "PrivateTmp": "true",
                       "ProtectHome": "true", "User": "boiler-ai"}.items():
        assert service[key] == value, key
    # the decision log (deploy/examples/reference_unit.yaml record.log_dir) is under a writable path
    log_dir = load_config(ROOT / "deploy" / "examples" / "reference_unit.yaml").record.log_dir
    assert any(log_dir.is_relative_to(path) for path in service["ReadWritePaths"].split())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    # an instance of the template, with an executable that exists here
    text = UNIT_FILE.read_text().replace("/opt/boiler-ai/venv/bin/boiler-ai", sys.executable)
    instance = tmp_path / "boiler-ai@reference_unit.service"
    instance.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(instance)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if instance.name in line] == []
