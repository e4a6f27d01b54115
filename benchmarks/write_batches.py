"""Cost of writing AI_REQUEST in a second request, after the AI setpoints were accepted.

Against the simulator's tag server on loopback (in this process), alternating per cycle: a write that
drops or holds AI_REQUEST at 0 (one Write request, then the read-back) and one that asks for AI mode
(the setpoints, then AI_REQUEST=1 and the heartbeat in a second Write with the read-back beside it).
Alternating keeps both under the same load. Last line JSON: p50/p99 of each in ms and the p50 ratio.

    python benchmarks/write_batches.py [--cycles 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from boiler_ai.plant.opcua_client import OpcUaPlantIO
from boiler_ai.plant.opcua_server import TagServer
from boiler_ai.sim.unit import default_tag_map_path
from boiler_ai.tagmap import load_tag_map


def quantile_ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(cycles: int) -> dict:
    tag_map = load_tag_map(default_tag_map_path())
    readable = {n: (s.lo + s.hi) / 2 if s.data_type in ("Float", "Double") else 0.0
                for n, s in tag_map.signals.items() if s.readable}
    setpoints = {mv.ai_setpoint: readable[mv.ai_setpoint] for mv in tag_map.manipulated.values()}
    times: dict[float, list[float]] = {0.0: [], 1.0: []}
    async with TagServer(tag_map, "opc.tcp://127.0.0.1:0", on_write=lambda signal, value: None) as server:
        await server.publish(readable, time.time())
        plant = OpcUaPlantIO(tag_map, server.endpoint)
        await plant.connect()
        try:
            for k in range(cycles):
                for request, samples in times.items():
                    started = time.perf_counter()
                    result = await plant.write({**setpoints, "ai_request": request, "ai_heartbeat": float(k)})
                    samples.append(time.perf_counter() - started)
                    assert result.ok, result.error
        finally:
            await plant.close()
    one, two = times[0.0], times[1.0]
    return {"one_request_p50_ms": round(quantile_ms(one, 0.5), 3),
            "one_request_p99_ms": round(quantile_ms(one, 0.99), 3),
            "two_requests_p50_ms": round(quantile_ms(two, 0.5), 3),
            "two_requests_p99_ms": round(quantile_ms(two, 0.99), 3),
            "p50_ratio": round(quantile_ms(two, 0.5) / quantile_ms(one, 0.5), 3), "cycles": cycles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=300)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.cycles))
    print(f"AI_REQUEST 0, one request + read-back:       p50 {figures['one_request_p50_ms']} ms, "
          f"p99 {figures['one_request_p99_ms']} ms")
    print(f"AI_REQUEST 1, setpoints then AI_REQUEST:    p50 {figures['two_requests_p50_ms']} ms, "
          f"p99 {figures['two_requests_p99_ms']} ms (x{figures['p50_ratio']} at p50)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
