"""Prometheus metrics of the daemon, with the maintained client library (prometheus_client).

Names follow Prometheus conventions: base units (`_seconds`), counters end in `_total`, cycle and stage
times are histograms (`_bucket`, `_sum`, `_count`: the server computes rates and quantiles over any
window, and the count never stops). Every `boiler_ai_` series carries the unit id as the label `unit`;
the `process_` ones describe the process (CPU seconds, resident memory, start time).

`GET /metrics` is served by its own thread (`MetricsServer`), never by the asyncio loop the control
cycle runs on: the cycle only adds to counters and histograms. The server is built so that a client
polling as fast as it can costs the cycle little, because every request it answers takes the
interpreter lock from the cycle for a while: it answers one request at a time, at most
`MAX_ANSWERS_PER_S` a second (a request beyond that waits, sleeping, not spinning), from a copy of
the text rendered at most every `RENDER_INTERVAL_S` (a Prometheus server scrapes every 15 s or so).
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from boiler_ai.messages import STAGES, Mode, StageTimings

# Stage and cycle times from 10 us (a projection) to 2.5 s (past a 1 s cycle period), about x2.5 apart
DURATION_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
                    1.0, 2.5)
RENDER_INTERVAL_S = 1.0
# The `_created` gauge the library adds beside each counter and histogram doubles the series for a
# start time the registry's process collector gives (`process_start_time_seconds`).
disable_created_metrics()
MAX_ANSWERS_PER_S = 5.0  # a Prometheus server scrapes every 15 s: room for several, and for a person with curl


class Metrics:
    """What the daemon reports; `observe_cycle` is the cycle's one call, `overrun` the pacer's.

    `cycles` and `releases` stay plain numbers too, for the demo's summary."""

    def __init__(self, unit_id: str):
        self.unit_id = unit_id
        self.registry = CollectorRegistry(auto_describe=True)
        self.cycles = 0
        self.releases: dict[str, int] = {}
        self._dropped_seen = (0, 0)
        self._mode_now: Mode | None = None
        r, unit = self.registry, unit_id
        ProcessCollector(registry=r)  # process_* : CPU seconds, resident memory, open files, start time
        self._cycles = Counter("boiler_ai_cycles", "Control cycles run.", ["unit"], registry=r).labels(unit)
        self._overruns = Counter("boiler_ai_cycle_overruns", "Cycles that ended after the next one was due.",
                                 ["unit"], registry=r).labels(unit)
        self._cycle_seconds = Histogram("boiler_ai_cycle_duration_seconds", "Time from the read to the queued record "
                                        "of each control cycle.", ["unit"], buckets=DURATION_BUCKETS,
                                        registry=r).labels(unit)
        stage = Histogram("boiler_ai_cycle_stage_duration_seconds", "Time spent in each stage of the control cycle.",
                          ["unit", "stage"], buckets=DURATION_BUCKETS, registry=r)
        self._stages = [(name, stage.labels(unit, name)) for name in STAGES]
        mode = Gauge("boiler_ai_mode", "Engagement mode: 1 for the current one, 0 for the others.", ["unit", "mode"],
                     registry=r)
        self._mode = {m: mode.labels(unit, m.value) for m in Mode}
        self._releases = Counter("boiler_ai_releases", "Hand-backs to the DCS, by reason.", ["unit", "reason"],
                                 registry=r)
        self._heartbeat = Gauge("boiler_ai_heartbeat", "Last heartbeat counter value written to the DCS.", ["unit"],
                                registry=r).labels(unit)
        self._log_dropped = Counter("boiler_ai_log_dropped_records", "Decision records the durable log could not "
                                    "keep (alarm on any).", ["unit"], registry=r).labels(unit)
        self._publish_dropped = Counter("boiler_ai_publish_dropped_records", "Decision records not sent live (the "
                                        "catch-up service still serves them).", ["unit"], registry=r).labels(unit)

    def observe_cycle(self, mode: Mode, release_reason: str | None, timings: StageTimings,
                      heartbeat: int, log_dropped: int, publish_dropped: int) -> None:
        self.cycles += 1
        self._cycles.inc()
        if mode is not self._mode_now:
            for m, gauge in self._mode.items():
                gauge.set(m is mode)
            self._mode_now = mode
        if release_reason:
            self.releases[release_reason] = self.releases.get(release_reason, 0) + 1
            self._releases.labels(self.unit_id, release_reason).inc()
        self._heartbeat.set(heartbeat)
        # the log reports running totals; the counters take what is new
        seen_log, seen_publish = self._dropped_seen
        if log_dropped > seen_log:
            self._log_dropped.inc(log_dropped - seen_log)
        if publish_dropped > seen_publish:
            self._publish_dropped.inc(publish_dropped - seen_publish)
        self._dropped_seen = (max(log_dropped, seen_log), max(publish_dropped, seen_publish))
        total_us = 0
        for name, histogram in self._stages:
            us = getattr(timings, name)
            total_us += us
            histogram.observe(us / 1e6)
        self._cycle_seconds.observe(total_us / 1e6)

    def overrun(self) -> None:
        self._overruns.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _OneAtATime(socketserver.TCPServer):
    """Requests answered in turn on the serving thread (a fast client queues instead of adding threads);
    the host's first address family (IPv4 or IPv6), and no reverse DNS look-up as http.server does."""

    allow_reuse_address = True  # as asyncio's servers and the preflight's probe do

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        self.address_family = socket.getaddrinfo(*address, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        super().__init__(address, handler)


class MetricsServer:
    """`GET /metrics` on a thread of its own, one request at a time, paced; see the module docstring."""

    def __init__(self, metrics: Metrics, host: str, port: int, *, render_interval_s: float = RENDER_INTERVAL_S,
                 max_answers_per_s: float = MAX_ANSWERS_PER_S):
        self.metrics = metrics
        self.render_interval_s = render_interval_s
        self.answer_gap_s = 1.0 / max_answers_per_s
        self._text = b""
        self._rendered_at = -float("inf")
        self._answered_at = -float("inf")
        serving = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5.0  # a client that stops mid-request does not hold the endpoint

            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                if self.path.split("?")[0] != "/metrics":
                    self._send(404, "text/plain; charset=utf-8", b"only /metrics here\n")
                    return
                self._send(200, CONTENT_TYPE_LATEST, serving.text())

            def _send(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # a scrape is not news
                pass

        self._httpd = _OneAtATime((host, port), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._serve, name="metrics-http", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._httpd.serve_forever(poll_interval=0.5)

    def text(self) -> bytes:
        """The metrics text, at most `render_interval_s` old; sleeps first if the last answer was too recent."""
        now = time.monotonic()
        wait = self._answered_at + self.answer_gap_s - now
        if wait > 0:
            time.sleep(wait)
            now = time.monotonic()
        self._answered_at = now
        if now - self._rendered_at >= self.render_interval_s:
            self._text = self.metrics.render()
            self._rendered_at = now
        return self._text

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)
