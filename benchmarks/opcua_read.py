"""Time OpcUaPlantIO's batch read (and its write with read-back) against the simulator's tag server.

The server runs in its own process on 127.0.0.1, as a DCS's server would be its own machine: the
figures are one client's round trips, not two event loops sharing one interpreter. Measured: the
reference tag map (every readable tag), the same map padded to ~200 tags, and a write of the 20
writable tags (15 AI setpoints, AI_REQUEST, AI_HEARTBEAT) with its read-back.

    python benchmarks/opcua_read.py [--reads 500]      (boiler-ai installed: make install)

The last line is one JSON object with median and p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path

from boiler_ai.plant.opcua_client import OpcUaPlantIO
from boiler_ai.tagmap import SignalSpec, TagMap, load_tag_map

ROOT = Path(__file__).resolve().parent.parent
TAG_MAP = ROOT / "opc" / "reference_unit.yaml"
PADDED_TAGS = 200


def padding(tag_map: TagMap) -> list[SignalSpec]:
    """Read-only Double tags that bring the map to PADDED_TAGS readable signals."""
    count = PADDED_TAGS - len(tag_map.readable)
    return [SignalSpec(f"bench_fill_{i:03d}", f"s=Bench.Fill{i:03d}", "Double", "", 0.0, 100.0, "read", False,
                       "benchmark filler", 10.0, 30.0, None, None) for i in range(count)]


def plant_values(specs: list[SignalSpec]) -> dict[str, float]:
    return {s.name: 0.0 if s.data_type in ("Boolean", "UInt32") else (s.lo + s.hi) / 2 for s in specs if s.readable}


def serve(endpoint_out, stop) -> None:
    """Child process: the simulator's tag server with the padded map, until `stop` is set."""
    from boiler_ai.plant.opcua_server import TagServer

    async def main() -> None:
        tag_map = load_tag_map(TAG_MAP)
        extra = padding(tag_map)
        async with TagServer(tag_map, "opc.tcp://127.0.0.1:0", extra_signals=extra) as server:
            await server.publish(plant_values([*tag_map.signals.values(), *extra]), time.time())
            endpoint_out.send(server.endpoint)
            await asyncio.to_thread(stop.wait)

    asyncio.run(main())


def summary(samples_s: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e3, p99 * 1e3


async def time_reads(io: OpcUaPlantIO, reads: int) -> list[float]:
    samples = []
    for i in range(reads + 20):  # the first 20 warm up both ends
        start = time.perf_counter()
        snapshot = await io.read()
        elapsed = time.perf_counter() - start
        if snapshot.error is not None:
            raise RuntimeError(f"read failed during the benchmark: {snapshot.error}")
        if i >= 20:
            samples.append(elapsed)
    return samples


async def measure(endpoint: str, reads: int) -> dict[str, float]:
    reference = load_tag_map(TAG_MAP)
    padded = dataclasses.replace(reference, signals={**reference.signals, **{s.name: s for s in padding(reference)}})
    results: dict[str, float] = {}
    for label, tag_map in (("reference", reference), ("padded", padded)):
        io = OpcUaPlantIO(tag_map, endpoint)
        await io.connect()
        try:
            median, p99 = summary(await time_reads(io, reads))
            n = len(tag_map.readable)
            results[f"read_{n}_median_ms"], results[f"read_{n}_p99_ms"] = round(median, 3), round(p99, 3)
            print(f"read of {n:3d} tags ({label} map): median {median:.2f} ms, p99 {p99:.2f} ms over {reads} reads")
            if label == "reference":
                writes = []
                for k in range(reads // 5 + 5):
                    values = {mv.ai_setpoint: 0.0 for mv in tag_map.manipulated.values()}
                    values.update({"ai_request": 0.0, "ai_heartbeat": float(k)})
                    start = time.perf_counter()
                    result = await io.write(values)
                    if not result.ok:
                        raise RuntimeError(f"write failed during the benchmark: {result.error}")
                    if k >= 5:
                        writes.append(time.perf_counter() - start)
                median, p99 = summary(writes)
                results[f"write_{len(values)}_median_ms"] = round(median, 3)
                results[f"write_{len(values)}_p99_ms"] = round(p99, 3)
                print(f"write of {len(values)} tags with read-back: median {median:.2f} ms, p99 {p99:.2f} ms "
                      f"over {len(writes)} writes")
        finally:
            await io.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=500, help="timed reads per tag map (default 500)")
    args = parser.parse_args()
    receive, send = mp.Pipe(duplex=False)
    stop = mp.Event()
    server = mp.Process(target=serve, args=(send, stop), daemon=True)
    server.start()
    try:
        if not receive.poll(60):
            raise RuntimeError("the tag server did not start within 60 s")
        results = asyncio.run(measure(receive.recv(), args.reads))
    finally:
        stop.set()
        server.join(15)
        if server.is_alive():
            server.terminate()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
