"""The daemon's Prometheus endpoint: the client library's own parser reads it, the names follow Prometheus
conventions, the counts match the cycles the daemon ran, and it is served off the control loop."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rigs.cycle_rig import BOOTSTRAP, BOOTSTRAP_SHA, write_config
from rigs.served import free_port

from boiler_ai.config import load_config
from boiler_ai.daemon import Daemon, build_core, make_plant, open_recorder
from boiler_ai.messages import STAGES
from boiler_ai.metrics import MetricsServer
from boiler_ai.record.log import iter_records

UNIT = ("unit", "reference_unit")


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture(scope="module")
def stepped_run(tmp_path_factory) -> tuple[Daemon, MetricsServer, Path]:
    """120 cycles of the daemon in closed loop on the stepped unit, its metrics served on a free port."""
    tmp = tmp_path_factory.mktemp("metrics")
    config = write_config(tmp, BOOTSTRAP, BOOTSTRAP_SHA, mode="closed_loop",
                          plant={"kind": "stepped", "scenario": "steady_full_load", "seed": 0, "ai_enable": True})
    core = build_core(load_config(config))
    plant, pace = make_plant(core)
    with open_recorder(core.config) as recorder:
        daemon = Daemon(core, plant, recorder, pace=pace)
        server = MetricsServer(daemon.metrics, "127.0.0.1", free_port(), render_interval_s=0.0)
        try:
            asyncio.run(daemon.run(asyncio.Event(), max_cycles=120))
            yield daemon, server, tmp / "log"
        finally:
            server.close()


def test_metrics_parse_and_count_the_daemons_cycles(stepped_run):
    daemon, server, log_dir = stepped_run
    records = list(iter_records(log_dir))
    # no event loop runs now: the endpoint is served by its own thread
    samples = scrape(server.port)
    cycles = samples[("boiler_ai_cycles_total", (UNIT,))]
    assert cycles == len(records) == daemon.metrics.cycles >= 120  # and the release cycles at stop
    assert samples[("boiler_ai_cycle_duration_seconds_count", (UNIT,))] == cycles
    assert samples[("boiler_ai_cycle_duration_seconds_bucket", (("le", "+Inf"), UNIT))] == cycles
    recorded_s = sum(sum(r["timings_us"].values()) for r in records) / 1e6
    assert samples[("boiler_ai_cycle_duration_seconds_sum", (UNIT,))] == pytest.approx(recorded_s, rel=1e-6)
    for stage in STAGES:
        labels = (("stage", stage), UNIT)
        assert samples[("boiler_ai_cycle_stage_duration_seconds_count", labels)] == cycles
        stage_s = sum(r["timings_us"][stage] for r in records) / 1e6
        assert samples[("boiler_ai_cycle_stage_duration_seconds_sum", labels)] == pytest.approx(stage_s, rel=1e-6)
    releases = {dict(labels)["reason"]: value for (name, labels), value in samples.items()
                if name == "boiler_ai_releases_total"}
    assert releases == {"daemon_stopping": sum(r["release_reason"] == "daemon_stopping" for r in records)} != {}
    assert samples[("boiler_ai_mode", (("mode", records[-1]["mode"]), UNIT))] == 1
    assert sum(v for (name, _), v in samples.items() if name == "boiler_ai_mode") == 1
    assert samples[("boiler_ai_log_dropped_records_total", (UNIT,))] == 0
    assert samples[("boiler_ai_cycle_overruns_total", (UNIT,))] == daemon.overruns == 0  # free-running
    assert samples[("boiler_ai_heartbeat", (UNIT,))] == records[-1]["heartbeat"]


def test_metric_names_follow_prometheus_conventions(stepped_run):
    _, server, _ = stepped_run
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text) if f.name.startswith("boiler_ai_")}
    for name, family in families.items():
        assert family.type in ("counter", "gauge", "histogram"), name  # no summary that forgets
        if family.type == "histogram":
            assert name.endswith("_seconds"), name
            assert {s.name for s in family.samples} == {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), name
        assert all(dict(s.labels).get("unit") == "reference_unit" for s in family.samples), name


def test_only_metrics_is_served_and_a_fast_client_is_paced(stepped_run):
    _, server, _ = stepped_run
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=10)
    assert error.value.code == 404
    started = time.monotonic()
    for _ in range(6):
        scrape(server.port)
    assert time.monotonic() - started >= 5 * server.answer_gap_s  # at most MAX_ANSWERS_PER_S answers a second
