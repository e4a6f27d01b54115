"""What the operator sees on the DCS faceplate, end to end over OPC UA on 127.0.0.1: the daemon writes
AI_STATUS and AI_REASON every cycle to the simulated unit's server, and its DCS emulation holds them."""

from __future__ import annotations

import asyncio

from rigs.served import ServedDaemon

from boiler_ai import status_codes
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
