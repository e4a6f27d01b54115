"""OpcUaPlantIO against real OPC UA servers on 127.0.0.1 (free ports), each on its own event loop in a
thread so the client side can run under plain asyncio.run. The servers are plain asyncua.Server objects
built from a tag map here: the client must work with any compliant server, not only the simulator's."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import socket
import struct
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from rigs.stand_in_unit import StandInUnit

from boiler_ai.messages.plant import Quality
from boiler_ai.plant.opcua_client import (
    STATUS_BAD_TYPE_MISMATCH,
    VARIANT_TYPES,
    OpcUaConnectError,
    OpcUaPlantIO,
    _reading,
    _write_value,
    parse_node,
)
from boiler_ai.plant.security import SecurityError, SecuritySettings
from boiler_ai.strict import ConfigError
from boiler_ai.tagmap import SignalSpec, TagMap

pytestmark = pytest.mark.timeout(120)

OTHER_NAMESPACE = "urn:boiler-ai:test:other"  # registered first, so the map's namespace is not at index 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def initial_value(spec: SignalSpec):
    if spec.data_type == "Boolean":
        return False
    if spec.data_type in ("UInt32", "Int32"):
        return int(spec.lo)
    return (spec.lo + spec.hi) / 2


class _Users:
    """Server-side user manager: one username/password pair."""

    def __init__(self, username: str, password: str):
        self.username, self.password = username, password

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == self.username and password == self.password:
            return User(role=UserRole.User)
        return None


class ServerThread:
    """A plain asyncua.Server serving every signal of a tag map, on its own loop in a daemon thread.

    `read_limit`/`write_limit` advertise and enforce MaxNodesPerRead/Write (BadTooManyOperations beyond);
    `reads`/`writes` record the requests of external sessions that touched the map's namespace.
    """

    def __init__(self, tag_map: TagMap, *, port: int | None = None, read_limit: int = 0, write_limit: int = 0,
                 certificate=None, private_key=None, application_uri=None, users: _Users | None = None,
                 trusted_client=None, skip: tuple[str, ...] = (), read_only: tuple[str, ...] = ()):
        self.tag_map, self.port = tag_map, port or free_port()
        self.read_limit, self.write_limit = read_limit, write_limit
        self.reads: list[int] = []
        self.writes: list[ua.WriteParameters] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self._build(certificate, private_key, application_uri, users, trusted_client, skip, read_only))

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/"

    def call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _build(self, certificate, private_key, application_uri, users, trusted_client, skip, read_only):
        self.server = Server(user_manager=users)
        await self.server.init()
        self.server.set_endpoint(self.endpoint)
        if certificate is not None:
            await self.server.load_certificate(str(certificate))
            await self.server.load_private_key(str(private_key))
            await self.server.set_application_uri(application_uri)
            self.server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        if users is not None:
            self.server.set_identity_tokens([ua.UserNameIdentityToken])
        if trusted_client is not None:
            async def only_trusted(cert: x509.Certificate, _app) -> None:
                if cert.public_bytes(serialization.Encoding.DER) != trusted_client:
                    raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
            self.server.set_certificate_validator(only_trusted)
        await self.server.register_namespace(OTHER_NAMESPACE)
        self.ns = await self.server.register_namespace(self.tag_map.namespace_uri)
        self.nodes = {}
        for name, spec in self.tag_map.signals.items():
            if name in skip:
                continue
            node_id = ua.NodeId.from_string(f"ns={self.ns};{parse_node(spec.node)[1]}")
            var = await self.server.nodes.objects.add_variable(
                node_id, name, ua.Variant(initial_value(spec), VARIANT_TYPES[spec.data_type]))
            if spec.writable and name not in read_only:
                await var.set_writable()
            self.nodes[name] = var
        limits = ua.ObjectIds
        for node, limit in ((limits.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead, self.read_limit),
                            (limits.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite, self.write_limit)):
            await self.server.get_node(node).write_value(ua.Variant(limit, ua.VariantType.UInt32))
        self.server.subscribe_server_callback(CallbackType.PreRead, self._pre_read)
        self.server.subscribe_server_callback(CallbackType.PreWrite, self._pre_write)
        await self.server.start()

    def _pre_read(self, event, _dispatcher) -> None:
        if not event.is_external:
            return
        items = event.request_params.NodesToRead
        if any(item.NodeId.NamespaceIndex == self.ns for item in items):
            self.reads.append(len(items))
        if self.read_limit and len(items) > self.read_limit:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)

    def _pre_write(self, event, _dispatcher) -> None:
        if not event.is_external:
            return
        self.writes.append(event.request_params)
        if self.write_limit and len(event.request_params.NodesToWrite) > self.write_limit:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)

    def sessions(self) -> int:
        async def count() -> int:
            return len(self.server.iserver._external_sessions)
        return self.call(count())

    def set(self, name: str, value: ua.DataValue) -> None:
        self.call(self.nodes[name].write_value(value))

    def get(self, name: str) -> ua.DataValue:
        return self.call(self.nodes[name].read_data_value())

    def stop_listening(self) -> None:
        async def stop() -> None:
            # asyncua closes its listening socket only after the client connections: a client that
            # reconnects in between is accepted and never closed, and stop() waits for it forever.
            self.server.bserver._server.close()
            await self.server.stop()
        self.call(stop())

    def start_listening(self) -> None:
        self.call(self.server.start())

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already stopped by the test
            self.stop_listening()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def extend(tag_map: TagMap, *specs: SignalSpec) -> TagMap:
    signals = dict(tag_map.signals)
    signals.update({s.name: s for s in specs})
    return dataclasses.replace(tag_map, signals=signals)


def spec(name: str, node: str, data_type: str, access: str, lo: float = -1e6, hi: float = 1e6) -> SignalSpec:
    return SignalSpec(name, node, data_type, "", lo, hi, access, False, "test signal", 10.0, 30.0, None, None)


@pytest.fixture(scope="module")
def test_map(tag_map) -> TagMap:
    """The reference map plus the two DataTypes it lacks (Float, Int32) and a tag the server keeps read-only."""
    return extend(tag_map,
                  spec("test_float_sp", "s=Test.FloatSetpoint", "Float", "readwrite"),
                  spec("test_int_sp", "s=Test.IntSetpoint", "Int32", "readwrite"),
                  spec("test_locked_sp", "s=Test.LockedSetpoint", "Double", "readwrite"))


@pytest.fixture(scope="module")
def server(test_map):
    srv = ServerThread(test_map, read_only=("test_locked_sp",))
    yield srv
    srv.close()


def run(coro):
    return asyncio.run(coro)


async def wait_for_read(io: OpcUaPlantIO, within_s: float):
    deadline = time.monotonic() + within_s
    while True:
        snap = await io.read()
        if snap.error is None or time.monotonic() > deadline:
            return snap
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------ pure parts


def test_parse_node_forms():
    assert parse_node("s=Unit.MFT") == (None, "s=Unit.MFT")
    assert parse_node("i=1234") == (None, "i=1234")
    assert parse_node("ns=4;s=A;B") == (4, "s=A;B")
    assert parse_node("nsu=urn:x:y;s=Mills.A.CoalFlow") == ("urn:x:y", "s=Mills.A.CoalFlow")
    for bad in ("Unit.MFT", "i=abc", "ns=x;s=a", "nsu=;s=a", ""):
        with pytest.raises(ValueError):
            parse_node(bad)


def test_malformed_node_in_tag_map_names_the_field(tag_map):
    broken = extend(tag_map, spec("broken", "Unit.Broken", "Double", "read"))
    with pytest.raises(ConfigError, match=r"signals\.broken\.node.*not a NodeId"):
        OpcUaPlantIO(broken, "opc.tcp://127.0.0.1:1/")


def test_reading_quality_rules():
    now = datetime.now(UTC)
    server_ts = now - timedelta(seconds=5)
    good = _reading(ua.DataValue(ua.Variant(True), SourceTimestamp=now, ServerTimestamp=server_ts))
    assert good.value == 1.0 and good.status_code == 0 and good.source_ts == pytest.approx(now.timestamp())
    assert good.server_ts == pytest.approx(server_ts.timestamp())
    # Timestamps are optional: a missing one is NaN and never lowers the quality the server gave.
    untimed = _reading(ua.DataValue(ua.Variant(3.5), ServerTimestamp=server_ts))
    assert untimed.status_code == 0 and untimed.quality is Quality.GOOD and untimed.value == 3.5
    assert math.isnan(untimed.source_ts) and untimed.server_ts == pytest.approx(server_ts.timestamp())
    bare = _reading(ua.DataValue(ua.Variant(3.5)))
    assert bare.quality is Quality.GOOD and math.isnan(bare.source_ts) and math.isnan(bare.server_ts)
    # Not a number: NaN and Bad; a Bad status stays as the server said.
    text = _reading(ua.DataValue(ua.Variant("hello"), SourceTimestamp=now))
    assert math.isnan(text.value) and text.status_code == STATUS_BAD_TYPE_MISMATCH
    bad = _reading(ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure), SourceTimestamp=now))
    assert math.isnan(bad.value) and bad.status_code == ua.StatusCodes.BadSensorFailure


def _datavalue_on_the_wire(value: float, source: datetime, source_pico: int, server: datetime, server_pico: int):
    """A DataValue encoded as OPC 10000-6 5.2.2.17 orders it (as node-opcua sends it), decoded by asyncua."""
    def ticks(stamp: datetime) -> bytes:
        return struct.pack("<q", int((stamp - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds() * 10_000_000))
    body = (bytes([0x3D]) + bytes([ua.VariantType.Double.value]) + struct.pack("<d", value)
            + ticks(source) + struct.pack("<H", source_pico) + ticks(server) + struct.pack("<H", server_pico))
    return struct_from_binary(ua.DataValue, ua.utils.Buffer(body))


def test_picosecond_fields_do_not_corrupt_the_timestamps_we_use():
    source = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    server = source + timedelta(seconds=2)
    dv = _datavalue_on_the_wire(3.25, source, 500, server, 700)
    # asyncua 2.1.0 reads the fields in declaration order: the ServerTimestamp it gives is garbage
    assert dv.SourceTimestamp == source and dv.ServerTimestamp != server
    reading = _reading(dv)
    assert reading.value == 3.25 and reading.quality is Quality.GOOD
    assert reading.source_ts == source.timestamp() and math.isnan(reading.server_ts)  # not trusted


def test_written_datavalue_carries_the_value_alone(test_map):
    for name in ("ai_heartbeat", "ai_request", "test_float_sp"):
        dv = _write_value(ua.NodeId(1, 2), test_map.signals[name], 1.0).Value
        assert struct_to_binary(dv)[0] == 0x01  # encoding mask: value only, no status, no timestamps


def test_security_settings_are_checked():
    with pytest.raises(SecurityError, match="need policy Basic256Sha256"):
        SecuritySettings(username="op", password_file="/x")
    with pytest.raises(SecurityError, match="certificate is required"):
        SecuritySettings(policy="Basic256Sha256", mode="SignAndEncrypt")
    with pytest.raises(SecurityError, match="mode must be one of"):
        SecuritySettings(policy="Basic256Sha256", mode="None", certificate="c", private_key="k",
                         server_certificate="s", application_uri="urn:a")
    with pytest.raises(SecurityError, match="go together"):
        SecuritySettings(policy="Basic256Sha256", mode="Sign", certificate="c", private_key="k",
                         server_certificate="s", application_uri="urn:a", username="op")


# ------------------------------------------------------------------ against a plain server


def test_batch_read_keeps_status_and_source_timestamps(server, test_map):
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    server.set("o2_economiser_pct", ua.DataValue(ua.Variant(3.25, ua.VariantType.Double), SourceTimestamp=stamp))
    server.set("mft_active", ua.DataValue(ua.Variant(True, ua.VariantType.Boolean), SourceTimestamp=stamp))

    async def scenario():
        io = OpcUaPlantIO(test_map, server.endpoint)
        await io.connect()
        before = len(server.reads)
        snap = await io.read()
        requests = server.reads[before:]
        await io.close()
        return snap, requests

    snap, requests = run(scenario())
    assert snap.error is None
    assert requests == [len(test_map.readable) + 1]  # one Read request for the whole map and the server clock
    assert set(snap.readings) == set(test_map.readable)
    o2 = snap.readings["o2_economiser_pct"]
    assert (o2.value, o2.status_code, o2.source_ts) == (3.25, 0, stamp.timestamp())
    assert snap.readings["mft_active"].value == 1.0
    assert snap.readings["coordinated_control"].value == 0.0
    assert snap.readings["unit_load_mw"].value == 350.0
    assert abs(snap.read_time - time.time()) < 60


def test_bad_and_uncertain_quality_surface_as_status_codes(server, test_map):
    now = datetime.now(UTC)
    bad = ua.StatusCodes.BadSensorFailure
    uncertain = ua.StatusCodes.UncertainLastUsableValue
    server.set("co_ppm", ua.DataValue(StatusCode=ua.StatusCode(bad), SourceTimestamp=now))
    server.set("nox_mg_nm3", ua.DataValue(ua.Variant(180.0, ua.VariantType.Double),
                                          StatusCode=ua.StatusCode(uncertain), SourceTimestamp=now))
    try:
        snap = run(read_once(test_map, server.endpoint))
    finally:
        for name in ("co_ppm", "nox_mg_nm3"):
            server.set(name, ua.DataValue(ua.Variant(100.0, ua.VariantType.Double), SourceTimestamp=now))
    assert snap.error is None
    co, nox = snap.readings["co_ppm"], snap.readings["nox_mg_nm3"]
    assert co.status_code == bad and co.quality is Quality.BAD and math.isnan(co.value)
    assert nox.status_code == uncertain and nox.quality is Quality.UNCERTAIN and nox.value == 180.0
    assert nox.source_ts == pytest.approx(now.timestamp())


async def read_once(tag_map, endpoint):
    """Connect, one batch read, close."""
    io = OpcUaPlantIO(tag_map, endpoint)
    await io.connect()
    try:
        return await io.read()
    finally:
        await io.close()


def test_write_sends_typed_variants_without_timestamps_and_reads_back(server, test_map):
    """A request for AI mode: setpoints in one Write, AI_REQUEST and the heartbeat in a second one."""
    values = {test_map.manipulated[mv].ai_setpoint: 0.0 for mv in test_map.manipulated}
    values["o2_setpoint_bias_pct_ai_sp"] = -0.4
    values.update({"ai_request": 1.0, "ai_heartbeat": 4294967295.0, "test_float_sp": 1.5, "test_int_sp": -7})

    async def scenario():
        io = OpcUaPlantIO(test_map, server.endpoint)
        await io.connect()
        before = len(server.writes)
        result = await io.write(values)
        sent = server.writes[before:]
        await io.close()
        return result, sent

    result, sent = run(scenario())
    assert result.ok, result.error
    assert result.status == {name: 0 for name in values}
    handshake = {"ai_request", "ai_heartbeat"}
    assert result.read_back == {k: v for k, v in values.items() if k not in handshake}
    assert len(sent) == 2  # two Write requests, the handshake last
    identifier = {parse_node(test_map.signals[name].node)[1][2:]: name for name in values}
    assert {identifier[w.NodeId.Identifier] for w in sent[1].NodesToWrite} == handshake
    assert not handshake & {identifier[w.NodeId.Identifier] for w in sent[0].NodesToWrite}
    by_node = {w.NodeId.Identifier: w.Value for request in sent for w in request.NodesToWrite}
    for name in values:
        dv = by_node[parse_node(test_map.signals[name].node)[1][2:]]
        assert dv.Value.VariantType == VARIANT_TYPES[test_map.signals[name].data_type]
    assert server.get("ai_heartbeat").Value == ua.Variant(4294967295, ua.VariantType.UInt32)
    assert server.get("ai_request").Value == ua.Variant(True, ua.VariantType.Boolean)
    assert server.get("test_float_sp").Value == ua.Variant(1.5, ua.VariantType.Float)
    assert server.get("test_int_sp").Value == ua.Variant(-7, ua.VariantType.Int32)


def test_write_outside_the_allow_list_is_refused_before_the_wire(server, test_map):
    cases = {
        "o2_economiser_pct": "not on the write allow-list",
        "feeder_a_bias_tph_dcs_sp": "not on the write allow-list",
        "no_such_tag": "unknown tag 'no_such_tag'",
    }
    bad_values = {
        ("sa_damper_a_pct_ai_sp", math.nan): "not finite",
        ("sa_damper_a_pct_ai_sp", 140.0): "outside the tag map range",
        ("ai_heartbeat", 1.5): "not a UInt32",
        ("ai_request", 0.5): "not 0 or 1",
    }

    async def scenario():
        io = OpcUaPlantIO(test_map, server.endpoint)
        await io.connect()
        before = len(server.writes)
        results = {name: await io.write({"sa_damper_a_pct_ai_sp": 50.0, name: 1.0}) for name in cases}
        results.update({key: await io.write({key[0]: key[1]}) for key in bad_values})
        sent = server.writes[before:]
        await io.close()
        return results, sent

    results, sent = run(scenario())
    assert sent == []
    for key, why in {**cases, **bad_values}.items():
        name = key if isinstance(key, str) else key[0]
        assert not results[key].ok and results[key].status == {}
        assert f"{name!r}" in results[key].error and why in results[key].error


def test_write_rejected_by_the_server_reports_per_tag_status(server, test_map):
    async def scenario():
        io = OpcUaPlantIO(test_map, server.endpoint)
        await io.connect()
        try:
            return await io.write({"test_locked_sp": 2.0, "sofa_damper_1_pct_ai_sp": 40.0})
        finally:
            await io.close()

    result = run(scenario())
    assert not result.ok
    assert result.status["sofa_damper_1_pct_ai_sp"] == 0
    assert Quality.from_status_code(result.status["test_locked_sp"]) is Quality.BAD
    assert "test_locked_sp" in result.error
    assert result.read_back["sofa_damper_1_pct_ai_sp"] == 40.0
    assert result.read_back["test_locked_sp"] == 0.0  # what the server holds: unchanged


def test_explicit_namespace_forms_resolve(server, test_map):
    uri = test_map.namespace_uri
    signals = {
        "unit_load_mw": dataclasses.replace(test_map.signals["unit_load_mw"],
                                            node=f"ns={server.ns};s=Unit.GeneratorOutput"),
        "mft_active": dataclasses.replace(test_map.signals["mft_active"], node=f"nsu={uri};s=Unit.MFT"),
        "drum_level_mm": test_map.signals["drum_level_mm"],
    }
    mixed = dataclasses.replace(test_map, signals=signals)

    snap = run(read_once(mixed, server.endpoint))
    assert snap.error is None and set(snap.readings) == set(signals)
    assert all(r.quality is Quality.GOOD for r in snap.readings.values())


def test_verify_passes_a_matching_server_and_names_each_problem(server, tag_map, test_map):
    wrong = extend(test_map,
                   spec("test_missing", "s=Test.DoesNotExist", "Double", "read"),
                   dataclasses.replace(test_map.signals["drum_level_mm"], data_type="Float"),
                   dataclasses.replace(test_map.signals["ai_heartbeat"], node="ns=0;i=85"))  # the Objects folder

    async def scenario(tm):
        io = OpcUaPlantIO(tm, server.endpoint)
        await io.connect()
        try:
            return await io.verify()
        finally:
            await io.close()

    assert run(scenario(tag_map)) == []
    problems = run(scenario(wrong))
    assert len(problems) == 4, problems
    text = "\n".join(problems)
    ns = server.ns
    assert f"test_missing (ns={ns};s=Test.DoesNotExist): node not found on the server (BadNodeIdUnknown)" in text
    assert f"drum_level_mm (ns={ns};s=Steam.DrumLevel): DataType is i=11 (Double), the tag map says Float" in text
    assert f"test_locked_sp (ns={server.ns};s=Test.LockedSetpoint): not writable" in text
    assert "ai_heartbeat (i=85): is a Object, not a Variable" in text


def test_connect_errors_are_clear_and_read_never_raises(server, test_map):
    nowhere = f"opc.tcp://127.0.0.1:{free_port()}/"
    foreign = dataclasses.replace(test_map, namespace_uri="urn:not-on-this-server")

    async def scenario():
        io = OpcUaPlantIO(test_map, nowhere, timeout_s=0.5)
        with pytest.raises(OpcUaConnectError, match=f"connect to {nowhere} failed"):
            await io.connect()
        snap = await io.read()
        write = await io.write({"ai_request": 1.0})
        await io.close()
        io = OpcUaPlantIO(foreign, server.endpoint)
        with pytest.raises(OpcUaConnectError, match="'urn:not-on-this-server'.*NamespaceArray"):
            await io.connect()
        await io.close()
        return snap, write

    snap, write = run(scenario())
    assert snap.readings == {} and "not connected" in snap.error
    assert not write.ok and "not connected" in write.error


def test_chunks_to_the_server_operation_limits(test_map):
    srv = ServerThread(test_map, read_limit=20, write_limit=7)
    try:
        values = {test_map.manipulated[mv].ai_setpoint: 0.0 for mv in test_map.manipulated}
        values.update({"ai_request": 0.0, "ai_heartbeat": 12.0})

        async def scenario(cap: int | None):
            io = OpcUaPlantIO(test_map, srv.endpoint, max_nodes_per_read=cap)
            await io.connect()
            reads, writes = len(srv.reads), len(srv.writes)
            snap = await io.read()
            result = await io.write(values) if cap is None else None
            problems = await io.verify()
            sent = [len(w.NodesToWrite) for w in srv.writes[writes:]]
            await io.close()
            return snap, result, problems, srv.reads[reads:], sent

        snap, result, problems, reads, writes = run(scenario(None))
        n = len(test_map.readable)
        assert snap.error is None and len(snap.readings) == n and snap.server_time is not None
        m = n + 1  # and the server's clock, last
        assert reads[: math.ceil(m / 20)] == [20] * (m // 20) + [m % 20]
        assert max(reads) <= 20  # the write's read-back and verify() are chunked too
        assert result.ok and result.read_back == values
        assert writes == [7, 7, 3]  # 15 AI setpoints + 2 handshake tags, 7 per request
        assert problems == []
        # Our own cap applies below the server's.
        snap, _, _, reads, _ = run(scenario(9))
        assert snap.error is None and reads[: math.ceil(m / 9)] == [9] * (m // 9) + [m % 9]
    finally:
        srv.close()


def test_reconnects_after_server_restarts_without_leaking_sessions(test_map):
    srv = ServerThread(test_map)
    replacement = None
    try:
        async def scenario():
            nonlocal srv, replacement
            io = OpcUaPlantIO(test_map, srv.endpoint, timeout_s=0.5)
            await io.connect()
            assert (await io.read()).error is None
            assert await asyncio.to_thread(srv.sessions) == 1
            outcomes = []
            for restart in range(3):
                if restart < 2:
                    await asyncio.to_thread(srv.stop_listening)  # same server process: its sessions die
                else:
                    await asyncio.to_thread(srv.close)  # a fresh server on the same port
                down = await io.read()
                write = await io.write({"ai_request": 1.0})
                if restart < 2:
                    await asyncio.to_thread(srv.start_listening)
                else:
                    srv = replacement = await asyncio.to_thread(ServerThread, test_map, port=srv.port)
                started = time.monotonic()
                up = await wait_for_read(io, within_s=8.0)
                outcomes.append((down, write, up, time.monotonic() - started, await asyncio.to_thread(srv.sessions)))
            await io.close()
            await asyncio.sleep(0.2)
            return outcomes, await asyncio.to_thread(srv.sessions)

        outcomes, after_close = run(scenario())
        for down, write, up, took, sessions in outcomes:
            assert down.readings == {} and down.error  # an error snapshot, not an exception
            assert not write.ok and write.error
            assert up.error is None and len(up.readings) == len(test_map.readable), up.error
            assert took < 8.0
            assert sessions == 1  # the old session is gone, exactly one is ours
        assert after_close == 0
    finally:
        srv.close()
        if replacement is not None and replacement is not srv:
            replacement.close()


# ------------------------------------------------------------------ security


def make_cert(folder, name: str, uri: str, *, server: bool):
    key = cert_gen.generate_private_key()
    usage = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {}, [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")], extended=usage)
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    paths = {
        "server": make_cert(folder, "server", "urn:boiler-ai:test-dcs", server=True),
        "impostor": make_cert(folder, "impostor", "urn:boiler-ai:test-dcs", server=True),
        "client": make_cert(folder, "client", "urn:boiler-ai:reference_unit", server=False),
        "stranger": make_cert(folder, "stranger", "urn:boiler-ai:reference_unit", server=False),
    }
    (folder / "password").write_text("s3cret-burner\n")
    (folder / "wrong_password").write_text("guess\n")
    return folder, paths


@pytest.fixture(scope="module")
def secure_server(test_map, pki):
    _, paths = pki
    srv = ServerThread(test_map, certificate=paths["server"][0], private_key=paths["server"][1],
                       application_uri="urn:boiler-ai:test-dcs", users=_Users("operator", "s3cret-burner"),
                       trusted_client=paths["client"][0].read_bytes())
    yield srv
    srv.close()


def secure(pki, *, client="client", pinned="server", password="password", uri="urn:boiler-ai:reference_unit"):
    folder, paths = pki
    return SecuritySettings(policy="Basic256Sha256", mode="SignAndEncrypt", certificate=paths[client][0],
                            private_key=paths[client][1], server_certificate=paths[pinned][0],
                            application_uri=uri, username="operator", password_file=folder / password)


def test_secure_connect_with_username_password_reads_and_writes(secure_server, test_map, pki):
    async def scenario():
        io = OpcUaPlantIO(test_map, secure_server.endpoint, security=secure(pki))
        await io.connect()
        try:
            return await io.read(), await io.write({"ai_heartbeat": 7.0, "ai_request": 0.0})
        finally:
            await io.close()

    snap, result = run(scenario())
    assert snap.error is None and len(snap.readings) == len(test_map.readable)
    assert result.ok and result.read_back == {"ai_heartbeat": 7.0, "ai_request": 0.0}


@pytest.mark.parametrize("settings, message", [
    ({"password": "wrong_password"}, "BadUserAccessDenied.*refused user 'operator'.*password file"),
    ({"pinned": "impostor"}, r"presents certificate [0-9A-F]{40}, not the pinned .*impostor\.der.*refused"),
    ({"client": "stranger"}, "BadCertificateUntrusted.*refused our certificate"),
    ({"uri": "urn:boiler-ai:somebody-else"}, "application_uri 'urn:boiler-ai:somebody-else' is not in the certificate"),
])
def test_secure_connect_refusals_are_clear(secure_server, test_map, pki, settings, message):
    async def scenario():
        io = OpcUaPlantIO(test_map, secure_server.endpoint, security=secure(pki, **settings))
        try:
            with pytest.raises(OpcUaConnectError, match=message):
                await io.connect()
            return await io.read()
        finally:
            await io.close()

    assert run(scenario()).error is not None


def test_unsecured_client_is_refused_by_a_secured_server(secure_server, test_map):
    async def scenario():
        io = OpcUaPlantIO(test_map, secure_server.endpoint, timeout_s=1.0)
        try:
            with pytest.raises(OpcUaConnectError):
                await io.connect()
        finally:
            await io.close()

    run(scenario())


# ------------------------------------------------------------------ against the simulator's TagServer


def served_values(tag_map: TagMap) -> dict[str, float]:
    return {name: float(initial_value(s)) for name, s in tag_map.signals.items() if s.readable}


def test_tag_server_cycle_with_faults(tag_map):
    from boiler_ai.plant.opcua_server import TagServer

    plant_writes: list[tuple[str, float]] = []
    setpoints = {tag_map.manipulated[mv].ai_setpoint: 0.5 for mv in tag_map.manipulated if "bias" in mv}
    setpoints.update({"sa_damper_c_pct_ai_sp": 42.0, "ai_request": 1.0, "ai_heartbeat": 17.0})

    async def scenario():
        plant = TagServer(tag_map, "opc.tcp://127.0.0.1:0", on_write=lambda s, v: plant_writes.append((s, v)))
        async with plant as srv:
            measured = time.time() - 1.0
            await srv.publish(served_values(tag_map), measured)
            io = OpcUaPlantIO(tag_map, srv.endpoint)
            await io.connect()
            try:
                problems = await io.verify()
                clean = await io.read()
                written = await io.write(setpoints)
                after = await io.read()
                await srv.faults.bad_quality("o2_economiser_pct")
                await srv.faults.uncertain("co_ppm")
                await srv.faults.nan("nox_mg_nm3")
                srv.faults.reject_writes("sofa_damper_1_pct_ai_sp")
                faulted = await io.read()
                rejected = await io.write({"sofa_damper_1_pct_ai_sp": 30.0, "ai_heartbeat": 18.0})
                await srv.faults.clear()
                return measured, problems, clean, written, after, faulted, rejected
            finally:
                await io.close()

    measured, problems, clean, written, after, faulted, rejected = run(scenario())
    assert problems == []
    assert clean.error is None and len(clean.readings) == len(tag_map.readable)
    assert all(r.quality is Quality.GOOD for r in clean.readings.values())
    assert clean.readings["unit_load_mw"].value == 350.0
    assert clean.readings["unit_load_mw"].source_ts == pytest.approx(measured, abs=1e-3)
    handshake = ("ai_request", "ai_heartbeat")
    assert written.ok and written.read_back == {k: v for k, v in setpoints.items() if k not in handshake}
    assert sorted(plant_writes[: len(setpoints)]) == sorted(setpoints.items())
    assert plant_writes[len(setpoints):] == [("ai_heartbeat", 18.0)]  # the rejected tag never reached the plant
    for name, value in setpoints.items():  # the server stamps what the daemon wrote
        assert after.readings[name].value == value and after.readings[name].quality is Quality.GOOD
    o2, co, nox = (faulted.readings[n] for n in ("o2_economiser_pct", "co_ppm", "nox_mg_nm3"))
    assert o2.status_code == ua.StatusCodes.BadSensorFailure and math.isnan(o2.value)
    assert co.quality is Quality.UNCERTAIN and co.value == 2500.0
    assert nox.quality is Quality.GOOD and math.isnan(nox.value)
    assert not rejected.ok and rejected.status["ai_heartbeat"] == 0
    assert rejected.status["sofa_damper_1_pct_ai_sp"] == ua.StatusCodes.BadNotWritable
    assert "sofa_damper_1_pct_ai_sp (BadNotWritable)" in rejected.error


def test_ai_request_is_never_written_beside_a_rejected_setpoint(tag_map):
    """One AI setpoint refused: AI_REQUEST=1 (and the heartbeat) never reach the DCS; dropping it does."""
    from boiler_ai.plant.opcua_server import TagServer

    plant_writes: list[tuple[str, float]] = []
    setpoints = {tag_map.manipulated[mv].ai_setpoint: 0.5 for mv in tag_map.manipulated if "bias" in mv}
    request = {**setpoints, "ai_request": 1.0, "ai_heartbeat": 5.0}

    async def scenario():
        plant = TagServer(tag_map, "opc.tcp://127.0.0.1:0", on_write=lambda s, v: plant_writes.append((s, v)))
        async with plant as srv:
            await srv.publish(served_values(tag_map), time.time())
            srv.faults.reject_writes("feeder_c_bias_tph_ai_sp", ua.StatusCodes.BadOutOfRange)
            io = OpcUaPlantIO(tag_map, srv.endpoint)
            await io.connect()
            try:
                refused = await io.write(request)
                release = await io.write({"ai_request": 0.0})
                return refused, release, srv.served("ai_request")
            finally:
                await io.close()

    refused, release, served = run(scenario())
    assert not refused.ok
    assert refused.status["feeder_c_bias_tph_ai_sp"] == ua.StatusCodes.BadOutOfRange
    assert "ai_request" not in refused.status and "ai_heartbeat" not in refused.status
    assert "not written: ai_request, ai_heartbeat" in refused.error
    assert ("ai_request", 1.0) not in plant_writes and not any(name == "ai_heartbeat" for name, _ in plant_writes)
    assert sorted(plant_writes[:-1]) == sorted((k, v) for k, v in setpoints.items() if k != "feeder_c_bias_tph_ai_sp")
    assert release.ok and plant_writes[-1] == ("ai_request", 0.0) and served.value == 0.0


def test_tag_server_slow_stopped_and_back(tag_map):
    from boiler_ai.plant.opcua_server import TagServer

    async def scenario():
        async with TagServer(tag_map, "opc.tcp://127.0.0.1:0") as srv:
            await srv.publish(served_values(tag_map), time.time())
            io = OpcUaPlantIO(tag_map, srv.endpoint, timeout_s=0.5)
            await io.connect()
            try:
                srv.faults.slow(1.0)
                slow = await io.read()
                srv.faults.slow(0.0)
                recovered = await wait_for_read(io, within_s=8.0)
                await srv.stop()
                down = await io.read()
                await srv.start()
                started = time.monotonic()
                back = await wait_for_read(io, within_s=8.0)
                took = time.monotonic() - started
                sessions = len(srv._ua.iserver._external_sessions)
            finally:
                await io.close()
            return slow, recovered, down, back, took, sessions

    slow, recovered, down, back, took, sessions = run(scenario())
    assert slow.readings == {} and "timeout" in slow.error
    assert recovered.error is None
    assert down.readings == {} and down.error
    assert back.error is None and len(back.readings) == len(tag_map.readable) and took < 8.0
    assert sessions == 1


def test_tag_server_secured_with_pki_layout(tag_map, tmp_path):
    from boiler_ai.plant.opcua_server import (
        ServerSecurity,
        TagServer,
        make_certificate,
        private_key_path,
        trust,
    )

    server_pki, daemon_pki = tmp_path / "sim", tmp_path / "daemon"
    server_cert = make_certificate(server_pki, "server", "urn:boiler-ai:server:reference_unit", role="server")
    client_cert = make_certificate(daemon_pki, "daemon", "urn:boiler-ai:daemon:reference_unit", role="client")
    trust(server_pki, client_cert)
    pinned = trust(daemon_pki, server_cert)
    (daemon_pki / "password").write_text("op-pass\n")
    (daemon_pki / "wrong").write_text("nope\n")

    def settings(password_file: str) -> SecuritySettings:
        return SecuritySettings(policy="Basic256Sha256", mode="SignAndEncrypt", certificate=client_cert,
                                private_key=private_key_path(daemon_pki, "daemon"), server_certificate=pinned,
                                application_uri="urn:boiler-ai:daemon:reference_unit", username="operator",
                                password_file=daemon_pki / password_file)

    async def scenario():
        security = ServerSecurity(server_pki, users={"operator": "op-pass"})
        async with TagServer(tag_map, "opc.tcp://127.0.0.1:0", security=security) as srv:
            await srv.publish(served_values(tag_map), time.time())
            io = OpcUaPlantIO(tag_map, srv.endpoint, security=settings("password"))
            await io.connect()
            try:
                snap, result = await io.read(), await io.write({"ai_heartbeat": 3.0})
            finally:
                await io.close()
            refused = OpcUaPlantIO(tag_map, srv.endpoint, security=settings("wrong"))
            with pytest.raises(OpcUaConnectError, match="refused user 'operator'"):
                await refused.connect()
            await refused.close()
            return snap, result

    snap, result = run(scenario())
    assert snap.error is None and len(snap.readings) == len(tag_map.readable)
    assert result.ok and result.read_back == {"ai_heartbeat": 3.0}


def test_simulated_unit_server_is_read_and_written(tag_map):
    from boiler_ai.sim.serve import SimulatedUnitServer

    # load ramps with simulated time; the DCS holds what the daemon wrote
    unit = StandInUnit(lambda t: served_values(tag_map) | {"unit_load_mw": 300.0 + 0.1 * t})
    sim = SimulatedUnitServer(unit, tag_map=tag_map, endpoint="opc.tcp://127.0.0.1:0", speed=50)
    request = {"ai_request": 1.0, "ai_heartbeat": 5.0, "sa_damper_a_pct_ai_sp": 55.0}

    async def scenario():
        await sim.start()
        io = OpcUaPlantIO(tag_map, sim.endpoint)
        try:
            await io.connect()
            first = await io.read()
            await asyncio.sleep(0.3)
            second = await io.read()
            written = await io.write(request)
            await sim.set_ai_enable(True)
            third = await io.read()
            return first, second, written, third
        finally:
            await io.close()
            await sim.stop()

    first, second, written, third = run(scenario())
    for snap in (first, second, third):
        assert snap.error is None and all(r.quality is Quality.GOOD for r in snap.readings.values())
    load1, load2 = first.readings["unit_load_mw"], second.readings["unit_load_mw"]
    assert load2.value > load1.value and load2.source_ts > load1.source_ts
    assert written.ok and unit.written == request
    assert third.readings["ai_enable"].value == 1.0
    assert {name: third.readings[name].value for name in request} == request
