"""TagServer (boiler_ai.plant.opcua_server) seen through a plain asyncua Client on 127.0.0.1.

Servers run on their own event loop in a daemon thread, so the tests drive them the way the daemon
and the demo do (in-process) while clients connect over TCP. Every server is closed by its fixture
or by a finally block; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from rigs.stand_in_unit import StandInUnit

from boiler_ai.plant.opcua_server import (
    ServerSecurity,
    TagServer,
    VendorHabits,
    certificate_path,
    make_certificate,
    private_key_path,
    trust,
)
from boiler_ai.sim.dcs import MV_NAMES
from boiler_ai.sim.serve import SimulatedUnitServer, add_arguments
from boiler_ai.sim.serve import run as run_sim
from boiler_ai.tagmap import TagMap, load_tag_map

pytestmark = pytest.mark.timeout(120)

LOCAL = "opc.tcp://127.0.0.1:0"


class LoopThread:
    """An event loop in a daemon thread: servers live here while tests call in from outside."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def fake_values(tag_map: TagMap, k: int) -> dict[str, float]:
    """Deterministic plant values for step k: every readable tag inside its range, changing each step."""
    values = {}
    for i, (name, spec) in enumerate(tag_map.signals.items()):
        if not spec.readable:
            continue
        if spec.data_type == "Boolean":
            values[name] = float((k + i) % 2)
        elif spec.data_type == "UInt32":
            values[name] = float(k)
        else:
            values[name] = spec.lo + (spec.hi - spec.lo) * (0.2 + 0.6 * ((0.37 * k + 0.013 * i) % 1.0))
    return values


class Recorder:
    """on_write callback that records what reached the plant and can be told to refuse."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, float]] = []
        self.refuse = False

    def __call__(self, signal: str, value: float) -> None:
        if self.refuse:
            raise ValueError("plant refuses")
        self.writes.append((signal, value))


@pytest.fixture(scope="module")
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def served(loop, tag_map):
    """One TagServer over the reference tag map for the read/write/fault tests of this file."""
    recorder = Recorder()
    server = TagServer(tag_map, LOCAL, on_write=recorder)
    loop.run(server.start())
    try:
        yield server, recorder
    finally:
        loop.run(server.close())


@pytest.fixture
def plant(loop, served):
    """The module server with faults cleared and the write record emptied after each test."""
    server, recorder = served
    yield server, recorder
    loop.run(server.faults.clear())
    recorder.writes.clear()
    recorder.refuse = False


async def ns_index(client: Client, tag_map: TagMap) -> int:
    return await client.get_namespace_index(tag_map.namespace_uri)


async def read_dvs(
    client: Client, nodeids: list[ua.NodeId], timestamps: ua.TimestampsToReturn = ua.TimestampsToReturn.Both
) -> list[ua.DataValue]:
    """Full DataValues of many nodes in one Read (value, StatusCode, timestamps)."""
    params = ua.ReadParameters(TimestampsToReturn=timestamps)
    for nid in nodeids:
        params.NodesToRead.append(ua.ReadValueId(NodeId=nid, AttributeId=ua.AttributeIds.Value))
    return await client.uaclient.read(params)


async def write_raw(client: Client, nodeid: ua.NodeId, dv: ua.DataValue) -> ua.StatusCode:
    return (await client.uaclient.write_attributes([nodeid], [dv], ua.AttributeIds.Value))[0]


def plain(value: Any, vtype: ua.VariantType) -> ua.DataValue:
    """What a well-behaved client writes: a typed Variant, no StatusCode, no timestamps."""
    return ua.DataValue(ua.Variant(value, vtype))


def node_of(tag_map: TagMap, ns: int, signal: str) -> ua.NodeId:
    return ua.NodeId.from_string(f"ns={ns};{tag_map.signals[signal].node}")


# ---------------------------------------------------------------------------------------------
# Address space


def test_address_space_has_folders_types_units_ranges_and_access(loop, plant, tag_map):
    async def check():
        async with Client(plant[0].endpoint) as client:
            ns = await ns_index(client, tag_map)
            objects = client.nodes.objects
            coal = await objects.get_child([f"{ns}:Mills", f"{ns}:A", f"{ns}:CoalFlow"])
            assert coal.nodeid == ua.NodeId("Mills.A.CoalFlow", ns)
            folder = await objects.get_child([f"{ns}:Mills", f"{ns}:A"])
            assert await folder.read_type_definition() == ua.NodeId(ua.ObjectIds.FolderType)
            assert (await coal.read_description()).Text == tag_map.signals["mill_a_coal_flow_tph"].description
            assert await coal.read_type_definition() == ua.NodeId(ua.ObjectIds.AnalogItemType)
            assert await coal.read_data_type() == ua.NodeId(ua.ObjectIds.Double)
            eu_range = await (await coal.get_child("0:EURange")).read_value()
            assert (eu_range.Low, eu_range.High) == (0.0, 70.0)
            units = await (await coal.get_child("0:EngineeringUnits")).read_value()
            assert units.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
            assert units.UnitId == (ord("E") << 16 | ord("1") << 8 | ord("8"))  # UNECE E18: tonne per hour
            assert units.DisplayName.Text == "t/h"

            temp = await objects.get_child([f"{ns}:Steam", f"{ns}:MainTemp"])
            units = await (await temp.get_child("0:EngineeringUnits")).read_value()
            assert (units.UnitId, units.DisplayName.Text) == (ord("C") << 16 | ord("E") << 8 | ord("L"), "°C")

            # Every mapped signal: its DataType and its access level, as the map says.
            for name, spec in tag_map.signals.items():
                node = client.get_node(node_of(tag_map, ns, name))
                assert await node.read_data_type() == ua.NodeId(getattr(ua.ObjectIds, spec.data_type)), name
                access = await node.read_attribute(ua.AttributeIds.AccessLevel)
                assert access.Value.Value == spec.readable * 1 + spec.writable * 2, name
            heartbeat = client.get_node(node_of(tag_map, ns, "ai_heartbeat"))
            assert await heartbeat.read_type_definition() == ua.NodeId(ua.ObjectIds.BaseDataVariableType)

    loop.run(check())


# ---------------------------------------------------------------------------------------------
# Publishing


def test_published_values_arrive_typed_good_and_timestamped(loop, plant, tag_map):
    server, _ = plant
    values = fake_values(tag_map, 3)
    source_ts = 1_700_000_000.125

    async def check():
        await server.publish(values, source_ts)
        async with Client(server.endpoint) as client:
            ns = await ns_index(client, tag_map)
            names = list(values)
            before = time.time()
            dvs = await read_dvs(client, [node_of(tag_map, ns, n) for n in names])
            for name, dv in zip(names, dvs, strict=True):
                spec = tag_map.signals[name]
                assert dv.StatusCode.value == ua.StatusCodes.Good, name
                assert dv.Value.VariantType == getattr(ua.VariantType, spec.data_type), name
                assert float(dv.Value.Value) == pytest.approx(values[name]), name
                assert dv.SourceTimestamp.timestamp() == pytest.approx(source_ts, abs=1e-6), name
                assert dv.ServerTimestamp.timestamp() <= before + 1.0, name
                assert dv.ServerTimestamp.timestamp() >= source_ts, name
            load = node_of(tag_map, ns, "unit_load_mw")
            (source_only,) = await read_dvs(client, [load], ua.TimestampsToReturn.Source)
            (server_only,) = await read_dvs(client, [load], ua.TimestampsToReturn.Server)
            (neither,) = await read_dvs(client, [load], ua.TimestampsToReturn.Neither)
            assert source_only.SourceTimestamp and not source_only.ServerTimestamp
            assert server_only.ServerTimestamp and not server_only.SourceTimestamp
            assert not (neither.SourceTimestamp or neither.ServerTimestamp) and neither.Value.Value

    loop.run(check())
    assert server.served("unit_load_mw").value == pytest.approx(values["unit_load_mw"])


# ---------------------------------------------------------------------------------------------
# Vendor habits: how other servers stamp, shape and limit


def test_server_only_timestamps_send_no_source_timestamp(loop, tag_map):
    async def check():
        async with TagServer(tag_map, LOCAL, habits=VendorHabits(timestamps="server-only")) as server:
            await server.publish(fake_values(tag_map, 1), time.time() - 30)
            async with Client(server.endpoint) as client:
                ns = await ns_index(client, tag_map)
                took = time.time()
                (load,) = await read_dvs(client, [node_of(tag_map, ns, "unit_load_mw")])
                assert load.StatusCode.is_good() and load.SourceTimestamp is None
                assert load.ServerTimestamp.timestamp() == pytest.approx(took, abs=5)  # when the server took it

    loop.run(check())


def test_on_change_keeps_the_stamps_of_an_unchanged_value(loop, tag_map):
    async def check():
        async with TagServer(tag_map, LOCAL, habits=VendorHabits(timestamps="on-change")) as server:
            values = fake_values(tag_map, 1)
            await server.publish(values, 1_700_000_000.0)
            moved = {**values, "unit_load_mw": values["unit_load_mw"] + 1.0}
            await server.publish(moved, 1_700_000_060.0)
            async with Client(server.endpoint) as client:
                ns = await ns_index(client, tag_map)
                load, demand = await read_dvs(client, [node_of(tag_map, ns, n)
                                                       for n in ("unit_load_mw", "unit_load_demand_mw")])
                assert load.SourceTimestamp.timestamp() == 1_700_000_060.0
                assert demand.SourceTimestamp.timestamp() == 1_700_000_000.0  # unchanged: stamped once

    loop.run(check())


def test_analogs_rounded_and_held_inside_the_deadband(loop, tag_map):
    habits = VendorHabits(timestamps="on-change", analog_deadband_pct=1.0, analog_decimals=1)  # 7 MW of 0..700

    async def check():
        async with TagServer(tag_map, LOCAL, habits=habits) as server:
            values = fake_values(tag_map, 1)
            values["unit_load_mw"] = 500.04
            await server.publish(values, 1_700_000_000.0)
            first = server.served("unit_load_mw")
            await server.publish({"unit_load_mw": 506.0}, 1_700_000_001.0)
            within = server.served("unit_load_mw")
            await server.publish({"unit_load_mw": 507.26}, 1_700_000_002.0)
            beyond = server.served("unit_load_mw")
            await server.publish({"ai_permissive": 1.0}, 1_700_000_003.0)  # not an analog: untouched
            return first, within, beyond

    first, within, beyond = loop.run(check())
    assert (first.value, first.source_ts) == (500.0, 1_700_000_000.0)
    assert (within.value, within.source_ts) == (500.0, 1_700_000_000.0)
    assert (beyond.value, beyond.source_ts) == (507.3, 1_700_000_002.0)
    with pytest.raises(ValueError, match="timestamps must be one of"):
        VendorHabits(timestamps="sometimes")
    with pytest.raises(ValueError, match="max nodes per read"):
        VendorHabits(max_nodes_per_read=0)


def test_max_nodes_per_read_is_advertised_and_enforced(loop, tag_map):
    habits = VendorHabits(max_nodes_per_read=50, max_nodes_per_write=10)

    async def check():
        async with TagServer(tag_map, LOCAL, habits=habits) as server:
            await server.publish(fake_values(tag_map, 1), time.time())
            async with Client(server.endpoint) as client:
                limits = ua.ObjectIds
                read_cap = client.get_node(limits.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
                write_cap = client.get_node(limits.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite)
                assert (await read_cap.read_value(), await write_cap.read_value()) == (50, 10)
                ns = await ns_index(client, tag_map)
                nodes = [node_of(tag_map, ns, n) for n in tag_map.readable]
                assert len(await read_dvs(client, nodes[:50])) == 50
                with pytest.raises(ua.uaerrors.BadTooManyOperations):
                    await read_dvs(client, nodes[:51])
                setpoints = [node_of(tag_map, ns, tag_map.manipulated[mv].ai_setpoint) for mv in tag_map.manipulated]
                with pytest.raises(ua.uaerrors.BadTooManyOperations):
                    await client.uaclient.write_attributes(setpoints[:11], [plain(0.0, ua.VariantType.Double)] * 11,
                                                           ua.AttributeIds.Value)

    loop.run(check())


def test_current_time_is_the_clock_at_the_read(loop, plant):
    async def check():
        async with Client(plant[0].endpoint) as client:
            clock = ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime)
            stamps = []
            for _ in range(3):
                (dv,) = await read_dvs(client, [clock])
                stamps.append(dv.Value.Value.timestamp())
                await asyncio.sleep(0.05)
            assert stamps[0] < stamps[1] < stamps[2] and abs(stamps[2] - time.time()) < 1.0

    loop.run(check())


def test_subscribers_see_published_changes(loop, plant, tag_map):
    server, _ = plant

    class Handler:
        def __init__(self) -> None:
            self.values: list[float] = []

        def datachange_notification(self, node, val, data) -> None:
            self.values.append(val)

    async def check():
        async with Client(server.endpoint) as client:
            ns = await ns_index(client, tag_map)
            handler = Handler()
            sub = await client.create_subscription(20, handler)
            await sub.subscribe_data_change(client.get_node(node_of(tag_map, ns, "co_ppm")))
            for value in (11.0, 12.0, 13.0):
                await server.publish({"co_ppm": value}, time.time())
                await asyncio.sleep(0.1)
            deadline = time.monotonic() + 10
            while 13.0 not in handler.values and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await sub.delete()
            return handler.values

    assert 13.0 in loop.run(check())


def test_bad_publish_changes_nothing_and_names_the_tag(loop, plant, tag_map):
    server, _ = plant
    loop.run(server.publish({"unit_load_mw": 500.0, "ai_enable": 1.0}, time.time()))
    with pytest.raises(KeyError, match="no_such_tag"):
        loop.run(server.publish({"unit_load_mw": 1.0, "no_such_tag": 1.0}, time.time()))
    with pytest.raises(ValueError, match="'ai_enable'.*Boolean"):
        loop.run(server.publish({"unit_load_mw": 2.0, "ai_enable": math.nan}, time.time()))
    with pytest.raises(ValueError, match="'ai_heartbeat'.*UInt32"):
        loop.run(server.publish({"ai_heartbeat": 1.5}, time.time()))
    with pytest.raises(ValueError, match="'ai_heartbeat'.*UInt32"):
        loop.run(server.publish({"ai_heartbeat": -1.0}, time.time()))
    assert server.served("unit_load_mw").value == 500.0
    assert server.served("ai_enable").value == 1.0


# ---------------------------------------------------------------------------------------------
# Client writes


def test_client_writes_reach_the_plant_and_are_checked_like_a_strict_server(loop, plant, tag_map):
    server, recorder = plant

    async def check():
        async with Client(server.endpoint) as client:
            ns = await ns_index(client, tag_map)
            o2_bias = node_of(tag_map, ns, "o2_setpoint_bias_pct_ai_sp")
            o2 = node_of(tag_map, ns, "o2_economiser_pct")
            heartbeat = node_of(tag_map, ns, "ai_heartbeat")
            request = node_of(tag_map, ns, "ai_request")
            Double = ua.VariantType.Double
            uncertain = ua.StatusCode(ua.StatusCodes.UncertainInitialValue)
            codes = {
                "accepted": await write_raw(client, o2_bias, plain(0.5, Double)),
                "heartbeat": await write_raw(client, heartbeat, plain(7, ua.VariantType.UInt32)),
                "request": await write_raw(client, request, plain(True, ua.VariantType.Boolean)),
                "read_only": await write_raw(client, o2, plain(3.0, Double)),
                "float_into_double": await write_raw(client, o2_bias, plain(0.5, ua.VariantType.Float)),
                "above_range": await write_raw(client, o2_bias, plain(2.5, Double)),
                "nan": await write_raw(client, o2_bias, plain(math.nan, Double)),
                "with_timestamp": await write_raw(
                    client, o2_bias, ua.DataValue(ua.Variant(0.1, Double), SourceTimestamp=datetime.now(UTC))
                ),
                "with_status": await write_raw(client, o2_bias, ua.DataValue(ua.Variant(0.1, Double), uncertain)),
            }
            read_back = await read_dvs(client, [o2_bias, heartbeat])
            return {k: v.value for k, v in codes.items()}, read_back

    codes, read_back = loop.run(check())
    S = ua.StatusCodes
    assert codes == {
        "accepted": S.Good,
        "heartbeat": S.Good,
        "request": S.Good,
        "read_only": S.BadNotWritable,
        "float_into_double": S.BadTypeMismatch,
        "above_range": S.BadOutOfRange,
        "nan": S.BadOutOfRange,
        "with_timestamp": S.BadWriteNotSupported,
        "with_status": S.BadWriteNotSupported,
    }
    assert recorder.writes == [("o2_setpoint_bias_pct_ai_sp", 0.5), ("ai_heartbeat", 7.0), ("ai_request", 1.0)]
    assert read_back[0].Value.Value == 0.5 and read_back[0].StatusCode.is_good() and read_back[0].SourceTimestamp
    assert read_back[1].Value == ua.Variant(7, ua.VariantType.UInt32)


def test_a_write_the_plant_refuses_is_not_served(loop, plant, tag_map):
    server, recorder = plant
    loop.run(server.publish({"sofa_damper_2_pct_ai_sp": 20.0}, time.time()))
    recorder.refuse = True

    async def check():
        async with Client(server.endpoint) as client:
            ns = await ns_index(client, tag_map)
            node = node_of(tag_map, ns, "sofa_damper_2_pct_ai_sp")
            return (await write_raw(client, node, plain(30.0, ua.VariantType.Double))).value

    assert loop.run(check()) == ua.StatusCodes.BadInternalError
    assert server.served("sofa_damper_2_pct_ai_sp").value == 20.0


# ---------------------------------------------------------------------------------------------
# Fault injection


def test_read_faults_show_in_what_clients_read(loop, plant, tag_map):
    server, _ = plant
    S = ua.StatusCodes
    faulted = ["o2_economiser_pct", "co_ppm", "nox_mg_nm3", "main_steam_temp_c", "drum_level_mm", "mill_a_in_service"]

    async def read_all(client, ns):
        dvs = await read_dvs(client, [node_of(tag_map, ns, n) for n in faulted])
        return dict(zip(faulted, dvs, strict=True))

    async def check():
        await server.publish(fake_values(tag_map, 1), 1_700_000_001.0)
        await server.faults.freeze("o2_economiser_pct")
        await server.faults.bad_quality("co_ppm")
        await server.faults.uncertain("nox_mg_nm3")
        await server.faults.nan("main_steam_temp_c")
        await server.faults.out_of_range("drum_level_mm", 999.0)
        await server.faults.bad_quality("mill_a_in_service", S.BadCommunicationError)
        later = fake_values(tag_map, 2)
        await server.publish(later, 1_700_000_002.0)
        async with Client(server.endpoint) as client:
            ns = await ns_index(client, tag_map)
            during = await read_all(client, ns)
            await server.faults.clear("o2_economiser_pct")
            await server.faults.clear()
            after = await read_all(client, ns)
        return later, during, after

    later, during, after = loop.run(check())
    first = fake_values(tag_map, 1)
    o2 = during["o2_economiser_pct"]
    assert o2.StatusCode.is_good() and o2.Value.Value == pytest.approx(first["o2_economiser_pct"])
    assert o2.SourceTimestamp.timestamp() == 1_700_000_001.0  # frozen: neither value nor time moved
    co = during["co_ppm"]
    assert co.StatusCode.value == S.BadSensorFailure and co.Value.Value is None
    assert co.SourceTimestamp.timestamp() == 1_700_000_002.0
    nox = during["nox_mg_nm3"]
    assert nox.StatusCode.value == S.UncertainSensorNotAccurate
    assert nox.Value.Value == pytest.approx(later["nox_mg_nm3"])
    steam = during["main_steam_temp_c"]
    assert steam.StatusCode.is_good() and math.isnan(steam.Value.Value)
    level = during["drum_level_mm"]
    assert level.StatusCode.is_good() and level.Value.Value == 999.0
    assert during["mill_a_in_service"].StatusCode.value == S.BadCommunicationError
    for name, dv in after.items():  # cleared: the latest published value, Good
        assert dv.StatusCode.is_good(), name
        assert float(dv.Value.Value) == pytest.approx(later[name]), name
        assert dv.SourceTimestamp.timestamp() == 1_700_000_002.0, name


def test_fault_requests_that_make_no_sense_are_refused(loop, plant):
    server, _ = plant
    with pytest.raises(ValueError, match="Boolean cannot hold NaN"):
        loop.run(server.faults.nan("ai_enable"))
    with pytest.raises(ValueError, match="is inside"):
        loop.run(server.faults.out_of_range("o2_economiser_pct", 5.0))
    with pytest.raises(ValueError, match="not a valid UInt32"):
        loop.run(server.faults.out_of_range("ai_heartbeat", -1.0))
    with pytest.raises(ValueError, match="is not BAD"):
        loop.run(server.faults.bad_quality("co_ppm", ua.StatusCodes.UncertainInitialValue))
    with pytest.raises(KeyError, match="no_such_tag"):
        loop.run(server.faults.freeze("no_such_tag"))
    with pytest.raises(ValueError, match="not writable"):
        server.faults.reject_writes("o2_economiser_pct")
    with pytest.raises(ValueError, match="seconds"):
        server.faults.slow(-1)


def test_rejected_writes_answer_the_injected_code(loop, plant, tag_map):
    server, recorder = plant
    S = ua.StatusCodes

    async def check():
        async with Client(server.endpoint) as client:
            ns = await ns_index(client, tag_map)
            sa = node_of(tag_map, ns, "sa_damper_a_pct_ai_sp")
            sofa = node_of(tag_map, ns, "sofa_damper_1_pct_ai_sp")
            v = plain(40.0, ua.VariantType.Double)
            server.faults.reject_writes("sa_damper_a_pct_ai_sp", S.BadOutOfService)
            one = [await write_raw(client, sa, v), await write_raw(client, sofa, v)]
            server.faults.reject_writes(code=S.BadUserAccessDenied)
            every = [await write_raw(client, sa, v), await write_raw(client, sofa, v)]
            await server.faults.clear()
            cleared = [await write_raw(client, sa, v), await write_raw(client, sofa, v)]
            return [[c.value for c in codes] for codes in (one, every, cleared)]

    one, every, cleared = loop.run(check())
    assert one == [S.BadOutOfService, S.Good]
    assert every == [S.BadOutOfService, S.BadUserAccessDenied]  # the tag's own rejection wins
    assert cleared == [S.Good, S.Good]
    assert recorder.writes == [
        ("sofa_damper_1_pct_ai_sp", 40.0),
        ("sa_damper_a_pct_ai_sp", 40.0),
        ("sofa_damper_1_pct_ai_sp", 40.0),
    ]


def test_slow_delays_reads_and_writes(loop, plant, tag_map):
    server, _ = plant

    async def check():
        async with Client(server.endpoint) as client:
            ns = await ns_index(client, tag_map)
            node = node_of(tag_map, ns, "unit_load_mw")
            server.faults.slow(0.5)
            t0 = time.monotonic()
            await read_dvs(client, [node])
            read_s = time.monotonic() - t0
            t0 = time.monotonic()
            await write_raw(client, node_of(tag_map, ns, "ai_request"), plain(False, ua.VariantType.Boolean))
            write_s = time.monotonic() - t0
            async with Client(server.endpoint, timeout=0.2) as impatient:
                with pytest.raises((TimeoutError, asyncio.TimeoutError)):
                    await read_dvs(impatient, [node])
            server.faults.slow(0)
            return read_s, write_s

    read_s, write_s = loop.run(check())
    assert read_s >= 0.5 and write_s >= 0.5


# ---------------------------------------------------------------------------------------------
# Its own servers: first values, restart, security


def test_waits_for_initial_data_then_stops_and_comes_back_on_the_same_endpoint(loop, tag_map):
    server = TagServer(tag_map, LOCAL)

    async def check():
        await server.start()
        endpoint = server.endpoint
        assert not endpoint.endswith(":0")
        async with Client(endpoint) as client:
            ns = await ns_index(client, tag_map)
            o2 = node_of(tag_map, ns, "o2_economiser_pct")
            (first,) = await read_dvs(client, [o2])
            await server.publish({"o2_economiser_pct": 3.5, "co_ppm": 40.0}, time.time())
            await server.faults.uncertain("co_ppm")
            await server.stop()
            with pytest.raises(Exception):  # noqa: B017 - any failure: the server is gone
                await read_dvs(client, [o2])
        with pytest.raises(Exception):  # noqa: B017 - connection refused
            async with Client(endpoint, timeout=2) as client:
                pass
        await server.publish({"o2_economiser_pct": 3.6}, time.time())  # the plant runs on meanwhile
        await server.start()
        assert server.endpoint == endpoint
        async with Client(endpoint) as client:
            ns = await ns_index(client, tag_map)
            back = await read_dvs(client, [node_of(tag_map, ns, "o2_economiser_pct"), node_of(tag_map, ns, "co_ppm")])
        return first, back

    try:
        first, (o2, co) = loop.run(check())
    finally:
        loop.run(server.close())
    assert first.StatusCode.value == ua.StatusCodes.BadWaitingForInitialData and first.Value.Value is None
    assert o2.StatusCode.is_good() and o2.Value.Value == 3.6
    assert co.StatusCode.value == ua.StatusCodes.UncertainSensorNotAccurate  # faults survive a restart


SERVER_URI = "urn:boiler-ai:test:sim"
CLIENT_URI = "urn:boiler-ai:test:daemon"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Server and client PKI folders (the server trusts nobody yet; the client pins the server)."""
    root = tmp_path_factory.mktemp("pki")
    server_pki, client_pki = root / "server", root / "client"
    server_cert = make_certificate(server_pki, "server", SERVER_URI, role="server")
    make_certificate(client_pki, "daemon", CLIENT_URI, role="client")
    make_certificate(client_pki, "stranger", CLIENT_URI, role="client")
    trust(client_pki, server_cert)
    (root / "password").write_text("s3cret-burner\n")
    return server_pki, client_pki


def test_secured_server_needs_a_trusted_certificate_and_a_password(loop, tag_map, pki):
    server_pki, client_pki = pki
    security = ServerSecurity(server_pki, users={"operator": "s3cret-burner"})
    server = TagServer(tag_map, LOCAL, security=security, application_uri=SERVER_URI)

    async def session(cert: str = "daemon", user: str | None = "operator", password: str = "s3cret-burner",
                      uri: str = CLIENT_URI) -> float:
        client = Client(server.endpoint, timeout=5)
        client.application_uri = uri
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=str(certificate_path(client_pki, cert)),
            private_key=str(private_key_path(client_pki, cert)),
            server_certificate=str(certificate_path(server_pki, "server")),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        if user is not None:
            client.set_user(user)
            client.set_password(password)
        async with client:
            ns = await ns_index(client, tag_map)
            (dv,) = await read_dvs(client, [node_of(tag_map, ns, "unit_load_mw")])
            return dv.Value.Value

    async def refused(**kwargs) -> str:
        try:
            await session(**kwargs)
        except Exception as exc:  # noqa: BLE001 - the message is what we check
            return f"{type(exc).__name__}: {exc}"
        return "connected"

    async def unsecured() -> str:
        try:
            async with Client(server.endpoint, timeout=5):
                return "connected"
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"

    async def check():
        await server.start()
        await server.publish({"unit_load_mw": 600.0}, time.time())
        trusting_nobody = await refused()
        trust(server_pki, certificate_path(client_pki, "daemon"))
        await server.stop()
        await server.start()
        outcomes = (
            trusting_nobody,
            await session(),
            await refused(password="wrong"),
            await refused(user=None),
            await refused(cert="stranger"),
            await refused(uri="urn:boiler-ai:test:other"),
            await unsecured(),
        )
        # An administrator trusts the stranger's filed certificate; the server reads trusted/ at start.
        stranger_der = certificate_path(client_pki, "stranger").read_bytes()
        (filed,) = [p for p in (server_pki / "rejected" / "certs").iterdir() if p.read_bytes() == stranger_der]
        trust(server_pki, filed)
        await server.stop()
        await server.start()
        return outcomes, await session(cert="stranger")

    try:
        (nobody, value, wrong_password, anonymous, stranger, other_uri, no_security), trusted_later = loop.run(
            check(), timeout=90
        )
    finally:
        loop.run(server.close())
    assert "BadCertificateUntrusted" in nobody  # an empty trust list trusts nobody
    assert value == 600.0
    assert "BadUserAccessDenied" in wrong_password
    assert "BadIdentityTokenRejected" in anonymous
    assert "BadCertificateUntrusted" in stranger
    assert "BadCertificateUriInvalid" in other_uri
    assert no_security != "connected"
    rejected = sorted(p.name for p in (server_pki / "rejected" / "certs").iterdir())
    assert len(rejected) == 2  # the daemon's (before it was trusted, and under another URI) and the stranger's
    assert trusted_later == 600.0


def test_secured_server_refuses_a_certificate_of_another_application(tmp_path, tag_map):
    make_certificate(tmp_path, "server", "urn:boiler-ai:test:someone-else", role="server")
    server = TagServer(tag_map, LOCAL, security=ServerSecurity(tmp_path), application_uri=SERVER_URI)
    with pytest.raises(ValueError, match="someone-else"):
        asyncio.run(server.start())


def test_layout_errors_name_the_tag(tag_map):
    def with_node(name: str, node: str) -> TagMap:
        signals = dict(tag_map.signals)
        signals[name] = replace(signals[name], node=node)
        return replace(tag_map, signals=signals)

    with pytest.raises(ValueError, match="signals.co_ppm.node.*nsu="):
        TagServer(with_node("co_ppm", "ns=2;s=FlueGas.CO"))
    with pytest.raises(ValueError, match="signals.co_ppm.node.*also the node of 'o2_economiser_pct'"):
        TagServer(with_node("co_ppm", "s=FlueGas.O2"))
    with pytest.raises(ValueError, match="signals.co_ppm.node.*empty part"):
        TagServer(with_node("co_ppm", "s=FlueGas..CO"))
    with pytest.raises(ValueError, match="'s=Mills.A' is a variable and also a folder"):
        TagServer(with_node("co_ppm", "s=Mills.A"))
    with pytest.raises(ValueError, match="expected opc.tcp"):
        TagServer(tag_map, "http://127.0.0.1:4840")


# ---------------------------------------------------------------------------------------------
# SimulatedUnitServer: a unit stepped in time and served


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


def test_simulator_runs_its_duration_and_counts_lag_instead_of_bursting(loop, tag_map):
    unit = StandInUnit(lambda t: fake_values(tag_map, int(t)), step_cost_s=0.02)  # 20 ms a step, asked for every 1 ms
    sim = SimulatedUnitServer(unit, tag_map=tag_map, endpoint=LOCAL, speed=1000, duration_s=15)
    try:
        loop.run(sim.start())
        loop.run(sim.wait())
        assert unit.t == 15 and sim.steps == 15
        assert sim.server.served("sim_time_s").value == 15
        assert sim.server.serving  # serving goes on until stop()
    finally:
        loop.run(sim.stop())
    assert sim.lag_events >= 10 and sim.lag_s > 0.1


def test_simulator_failure_surfaces_in_wait(loop, tag_map):
    class BrokenUnit(StandInUnit):
        def step(self, dt: float = 1.0) -> None:
            super().step(dt)
            if self.t >= 3:
                raise RuntimeError("drum level transmitter model diverged")

    unit = BrokenUnit(lambda t: fake_values(tag_map, int(t)))
    sim = SimulatedUnitServer(unit, tag_map=tag_map, endpoint=LOCAL, speed=1000)
    try:
        loop.run(sim.start())
        with pytest.raises(RuntimeError, match="diverged"):
            loop.run(sim.wait())
    finally:
        loop.run(sim.stop())


def test_sim_command_refuses_inconsistent_security_options(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for argv, message in (
        (["--user", "op"], "--user and --password-file go together"),
        (["--user", "op", "--password-file", "pw"], "needs --security sign-encrypt"),
        (["--security", "sign-encrypt"], "needs --pki"),
    ):
        assert run_sim(parser.parse_args(argv)) == 2
        assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The reference unit end to end, and the command


def test_reference_unit_end_to_end_over_opc_ua(loop, tag_map):
    sim = SimulatedUnitServer(tag_map=tag_map, endpoint=LOCAL, speed=20, seed=3)
    unit = sim.unit
    readable = tag_map.readable

    async def check():
        await sim.start()
        async with Client(sim.endpoint) as client:
            ns = await ns_index(client, tag_map)
            node = {name: node_of(tag_map, ns, name) for name in tag_map.signals}
            folders = {(await child.read_browse_name()).Name for child in await client.nodes.objects.get_children()}
            operator = await client.nodes.objects.get_child([f"{ns}:Simulator", f"{ns}:OperatorAIEnable"])
            sim_time = await client.nodes.objects.get_child([f"{ns}:Simulator", f"{ns}:SimTime"])

            now = time.time()
            snapshot = dict(zip(readable, await read_dvs(client, [node[n] for n in readable]), strict=True))

            # The DCS handshake over OPC UA: operator permissive, request, heartbeat -> AI active.
            beating = True

            async def heartbeat():
                count = 0
                while beating:
                    count += 1
                    await write_raw(client, node["ai_heartbeat"], plain(count, ua.VariantType.UInt32))
                    await asyncio.sleep(0.05)  # 1 simulated second at speed 20; the watchdog allows 5

            async def read_value(name_or_node) -> Any:
                nid = node.get(name_or_node, name_or_node)
                return (await read_dvs(client, [nid]))[0].Value.Value

            async def until(name, expected, timeout=15.0):
                deadline = time.monotonic() + timeout
                while await read_value(name) != expected:
                    assert time.monotonic() < deadline, f"{name} never became {expected}"
                    await asyncio.sleep(0.02)

            beat = asyncio.create_task(heartbeat())
            # The daemon's view of the permissive is read-only; the operator's faceplate is not.
            not_writable = await write_raw(client, node["ai_enable"], plain(True, ua.VariantType.Boolean))
            assert (await write_raw(client, operator.nodeid, plain(True, ua.VariantType.Boolean))).is_good()
            assert (await write_raw(client, node["ai_request"], plain(True, ua.VariantType.Boolean))).is_good()
            await until("ai_active", True)
            bias = await read_value("o2_setpoint_bias_pct_dcs_sp") + 0.3
            code = await write_raw(client, node["o2_setpoint_bias_pct_ai_sp"], plain(bias, ua.VariantType.Double))
            steps = sim.steps
            await wait_for(lambda: sim.steps >= steps + 3)
            held = await read_value("o2_setpoint_bias_pct_ai_sp")  # active: the DCS uses it, no tracking
            in_dcs = unit.dcs.ai_sp[MV_NAMES.index("o2_setpoint_bias_pct")]
            beating = False
            await beat
            await until("ai_active", False)  # the DCS watchdog drops AI mode by itself
            await sim.set_ai_enable(False)  # the operator withdraws the permissive: served at once
            enable_off = await read_value("ai_enable"), await read_value(operator.nodeid)

            # Faults on top of the live unit.
            await sim.server.faults.bad_quality("o2_economiser_pct")
            await sim.server.faults.freeze("unit_load_mw")
            (o2_bad, load_1) = await read_dvs(client, [node["o2_economiser_pct"], node["unit_load_mw"]])
            steps = sim.steps
            await wait_for(lambda: sim.steps >= steps + 2)
            (load_2,) = await read_dvs(client, [node["unit_load_mw"]])
            await sim.server.faults.clear()

            # The server goes away and comes back; the plant runs on meanwhile.
            t_before = await read_value(sim_time.nodeid)
            await sim.server.stop()
        await asyncio.sleep(0.3)
        await sim.server.start()
        async with Client(sim.endpoint) as client:
            ns = await ns_index(client, tag_map)
            (o2_back, t_back) = await read_dvs(client, [node_of(tag_map, ns, "o2_economiser_pct"), sim_time.nodeid])
        return (folders, now, snapshot, not_writable, code, bias, held, in_dcs, enable_off, o2_bad, load_1, load_2,
                t_before, o2_back, t_back)

    try:
        (folders, now, snapshot, not_writable, code, bias, held, in_dcs, enable_off, o2_bad, load_1, load_2,
         t_before, o2_back, t_back) = loop.run(check(), timeout=90)
    finally:
        loop.run(sim.stop())
    assert {"Unit", "Mills", "Air", "FlueGas", "Steam", "Performance", "Interface", "Simulator"} <= folders
    for name, dv in snapshot.items():
        spec = tag_map.signals[name]
        assert dv.StatusCode.is_good(), name
        assert spec.lo <= float(dv.Value.Value) <= spec.hi, name
        assert abs(dv.SourceTimestamp.timestamp() - now) < 5, name
    assert 560 < snapshot["unit_load_mw"].Value.Value < 640
    assert not_writable.value == ua.StatusCodes.BadNotWritable
    assert code.is_good() and held == pytest.approx(bias)
    assert in_dcs == pytest.approx(bias)  # it reached the unit's DCS
    assert enable_off == (False, False) and not unit.dcs.ai_enable
    assert o2_bad.StatusCode.value == ua.StatusCodes.BadSensorFailure
    assert load_2.Value.Value == load_1.Value.Value and load_2.SourceTimestamp == load_1.SourceTimestamp
    assert o2_back.StatusCode.is_good() and t_back.Value.Value > t_before
    assert not sim.stepping


def test_sim_command_serves_until_sigterm(root, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"opc.tcp://127.0.0.1:{sock.getsockname()[1]}"
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "boiler_ai", "sim", "--endpoint", endpoint, "--speed", "10", "--seed", "1"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        while not any("serving reference_unit on" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            lines.append(proc.stderr.readline())

        async def read_load() -> ua.DataValue:
            async with Client(endpoint) as client:
                ns = await client.get_namespace_index("urn:boiler-ai:reference-unit")
                return (await read_dvs(client, [ua.NodeId("Unit.GeneratorOutput", ns)]))[0]

        load = asyncio.run(read_load())
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert load.StatusCode.is_good() and load.Value.Value > 500
    assert proc.returncode == 0, rest
    served = len(load_tag_map(root / "opc" / "reference_unit.yaml").signals)
    assert f"on {endpoint}: {served} tags, speed x10, scenario steady_full_load, seed 1, security none" in \
        "".join(lines)
    assert "stopped at t=" in rest
