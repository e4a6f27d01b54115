"""Prometheus text-format metrics over a minimal HTTP endpoint (GET /metrics), on the daemon's loop."""

from __future__ import annotations

import asyncio
from collections import Counter, deque

import numpy as np

from boiler_ai.messages import STAGES, Mode, StageTimings


class Metrics:
    def __init__(self, unit_id: str, window: int = 3600):
        self.unit_id = unit_id
        self.cycles = 0
        self.mode = "disabled"
        self.releases: Counter[str] = Counter()
        self.stage_us: dict[str, deque[float]] = {stage: deque(maxlen=window) for stage in STAGES}
        self.window = window
        self.heartbeat = 0
        self.log_dropped = 0  # records the durable log could not keep
        self.publish_dropped = 0  # records not sent live (catch-up still serves them)

    def observe_cycle(self, mode: str, release_reason: str | None, timings: StageTimings,
                      heartbeat: int, log_dropped: int, publish_dropped: int) -> None:
        self.cycles += 1
        self.log_dropped, self.publish_dropped = log_dropped, publish_dropped
        self.mode = mode
        self.heartbeat = heartbeat
        if release_reason:
            self.releases[release_reason] += 1
        for stage, samples in self.stage_us.items():
            samples.append(getattr(timings, stage))

    def render(self) -> str:
        u = f'unit="{self.unit_id}"'
        out = [
            "# HELP boiler_ai_cycles_total Control cycles run.",
            "# TYPE boiler_ai_cycles_total counter",
            f"boiler_ai_cycles_total{{{u}}} {self.cycles}",
            "# HELP boiler_ai_mode Engagement mode (1 for the current one).",
            "# TYPE boiler_ai_mode gauge",
        ]
        out += [f'boiler_ai_mode{{{u},mode="{m}"}} {int(m == self.mode)}' for m in Mode]
        out += ["# HELP boiler_ai_releases_total Hand-backs to the DCS, by reason.",
                "# TYPE boiler_ai_releases_total counter"]
        out += [f'boiler_ai_releases_total{{{u},reason="{r}"}} {n}' for r, n in sorted(self.releases.items())]
        out += ["# HELP boiler_ai_heartbeat Last heartbeat counter value written.",
                "# TYPE boiler_ai_heartbeat gauge", f"boiler_ai_heartbeat{{{u}}} {self.heartbeat}",
                "# HELP boiler_ai_log_dropped_total Decision records the durable log could not keep (alarm on any).",
                "# TYPE boiler_ai_log_dropped_total counter", f"boiler_ai_log_dropped_total{{{u}}} {self.log_dropped}",
                "# HELP boiler_ai_publish_dropped_total Decision records not sent live (catch-up serves them).",
                "# TYPE boiler_ai_publish_dropped_total counter",
                f"boiler_ai_publish_dropped_total{{{u}}} {self.publish_dropped}",
                "# HELP boiler_ai_stage_seconds Cycle stage durations over the recent window.",
                "# TYPE boiler_ai_stage_seconds summary"]
        for stage, samples in sorted(self.stage_us.items()):
            if not samples:
                continue
            data = np.fromiter(samples, float)
            for q in (0.5, 0.99):
                seconds = np.quantile(data, q) / 1e6
                out.append(f'boiler_ai_stage_seconds{{{u},stage="{stage}",quantile="{q}"}} {seconds:.9f}')
            out.append(f'boiler_ai_stage_seconds_count{{{u},stage="{stage}"}} {len(data)}')
        return "\n".join(out) + "\n"


async def serve_metrics(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
                status, body, ctype = "200 OK", metrics.render().encode(), "text/plain; version=0.0.4"
            else:
                status, body, ctype = "404 Not Found", b"only /metrics here\n", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
