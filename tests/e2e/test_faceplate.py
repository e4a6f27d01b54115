"""What the operator sees and does on the DCS faceplate, end to end over OPC UA on 127.0.0.1: the daemon
writes AI_STATUS and AI_REASON every cycle to the simulated unit's server, whose DCS emulation holds them;
the operator's per-variable AI enable hands one variable back while the AI keeps the others."""

from __future__ import annotations

import asyncio

from asyncua import Client, ua
from rigs.served import PERIOD, ServedDaemon

from boiler_ai import status_codes
from boiler_ai.sim.dcs import MV_NAMES
from boiler_ai.sim.scenario import named_scenario
from boiler_ai.sim.unit import ReferenceUnit

MODE = status_codes.MODE_CODES
REASON = {name: r.code for name, r in status_codes.BY_NAME.items()}


def faceplate(served: ServedDaemon) -> tuple[int, int]:
    return served.unit.dcs.ai_status, served.unit.dcs.ai_reason


async def engage(served: ServedDaemon) -> None:
    for _ in range(80):
        record = await served.cycle()
        if record["mode"] == "active" and served.unit.dcs.ai_active:
            return
    raise AssertionError(f"not engaged: {served.records[-1]['events']}")


def test_the_faceplate_follows_the_mode_and_keeps_the_release_reason(tmp_path):
    async def body():
        unit = ReferenceUnit(named_scenario("steady_full_load", 0), seed=0)
        async with ServedDaemon(tmp_path, unit, {"sa_damper_c_pct": 6.0}) as served:
            await engage(served)
            record = await served.cycle()
            assert faceplate(served) == (record["ai_status"], record["ai_reason"]) == (MODE["active"], 0)
            await served.sim.set_ai_enable(False)
            record = await served.cycle()
            assert record["release_reason"] == "ai_enable_dropped"
            assert faceplate(served) == (MODE["releasing"], REASON["ai_enable_dropped"])
            for _ in range(5):
                record = await served.cycle()
            assert record["mode"] == "disabled"
            assert faceplate(served) == (MODE["disabled"], REASON["ai_enable_dropped"])  # kept until re-engaged
            await served.sim.set_ai_enable(True)
            await engage(served)
            await served.cycle()
            assert faceplate(served) == (MODE["active"], 0)

    asyncio.run(asyncio.wait_for(body(), 90))


def test_one_variable_handed_back_by_its_enable_while_the_ai_keeps_the_others(tmp_path):
    async def body():
        unit = ReferenceUnit(named_scenario("steady_full_load", 0), seed=0)
        offsets = {"sa_damper_c_pct": 6.0, "sofa_damper_1_pct": 6.0}
        async with ServedDaemon(tmp_path, unit, offsets) as served:
            await engage(served)
            for _ in range(10):  # the AI moves both dampers away from the DCS's setpoints
                record = await served.cycle()
            c, sofa = (record["mvs"].index(mv) for mv in offsets)
            assert record["written"][c] > record["u_dcs"][c] + 3.0 and record["written"][sofa] > record["u_dcs"][sofa]
            in_force = unit.dcs.applied[MV_NAMES.index("sa_damper_c_pct")]

            await served.sim.set_mv_ai_enable("sa_damper_c_pct", False)  # the operator takes damper C back
            record = await served.cycle()
            # within one cycle: the AI stays in AI mode, holds damper C at the DCS's setpoint, moves the rest
            assert record["mode"] == "active" and record["release_reason"] is None and unit.dcs.ai_active
            assert record["handed_back"] == ["sa_damper_c_pct"]
            assert record["written"][c] == record["u_dcs"][c] and "sa_damper_c_pct:unavailable" in \
                record["projection"]["active_constraints"]
            assert record["written"][sofa] > record["u_dcs"][sofa]
            assert {"type": "soft_disable", "reason": "mv_handed_back", "detail": "sa_damper_c_pct"} in record["events"]
            assert faceplate(served) == (MODE["active"], REASON["mv_handed_back"])
            # the DCS ramps damper C home from where it was (bumpless), at its hand-back rate
            i = MV_NAMES.index("sa_damper_c_pct")
            assert unit.dcs.releasing[i] and unit.dcs.applied[i] < in_force
            for _ in range(12):
                record = await served.cycle()
            assert unit.dcs.applied[i] == unit.dcs.dcs_sp[i] and not unit.dcs.releasing[i]
            assert record["mode"] == "active" and record["written"][sofa] > record["u_dcs"][sofa]

            # and gives it back, on the simulator's operator node as any OPC UA client would
            async with Client(served.endpoint) as client:
                ns = await client.get_namespace_index(served.sim.tag_map.namespace_uri)
                node = client.get_node(f"ns={ns};s=Simulator.OperatorMvAIEnable.sa_damper_c_pct")
                await node.write_value(ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
            await asyncio.sleep(2 * PERIOD)  # the simulator serves it with its next step
            record = await served.cycle()
            assert record["handed_back"] == [] and faceplate(served) == (MODE["active"], 0)
            step = record["written"][c] - record["u_prev"][c]
            assert 0.0 < step <= 1.0 + 1e-9  # from the tracked DCS setpoint, at the envelope's rate (1 %/s)

    asyncio.run(asyncio.wait_for(body(), 120))
