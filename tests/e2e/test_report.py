"""`boiler-ai report` on the log of a short `demo --log-dir`, and the AI-on/AI-off comparison on known data."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from boiler_ai.report import History, compare

ROOT = Path(__file__).resolve().parents[2]
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*(?!["']?(?:data:|#))|url\(|https?://|//[a-z0-9.-]+\.[a-z]{2,}/""", re.I)


def boiler_ai(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "boiler_ai", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if (path := shutil.which(name))), None)


def assert_self_contained(page: Path) -> None:
    text = page.read_text()
    assert not EXTERNAL.findall(text), EXTERNAL.findall(text)[:5]
    browser = chromium()
    if browser is None:
        return  # no browser here: the file names no resource outside itself, which is what a browser would fetch
    # Headless Chromium with the network cut: any resource it would fetch fails and is logged.
    result = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                             "--v=0", "--proxy-server=127.0.0.1:9", "--virtual-time-budget=5000", "--dump-dom",
                             page.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "<img" in result.stdout
    assert "net::ERR" not in result.stderr and "Failed to load resource" not in result.stderr, result.stderr[-2000:]


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory) -> Path:
    log_dir = tmp_path_factory.mktemp("demo") / "log"
    result = boiler_ai("demo", "--minutes", "4", "--speed", "30", "--log-dir", str(log_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {log_dir / 'report.html'}" in result.stdout
    return log_dir


def test_demo_log_report_has_trends_and_the_benefit_table(demo_log: Path):
    page = demo_log / "report.html"
    text = page.read_text()
    assert text.count("<img") >= 6
    for heading in ("Trends", "AI on against AI off at matched load", "Benefit", "Releases to the DCS by reason",
                    "Time each constraint binds"):
        assert f"<h2>{heading}" in text
    for row in ("boiler efficiency", "heat rate", "coal saved", "CO2 avoided", "money saved"):
        assert f"<td>{row}</td>" in text
    assert "daemon_stopping" in text
    assert_self_contained(page)


def test_report_shadow_compares_requested_with_the_dcs_per_mv(demo_log: Path, tmp_path: Path):
    out = tmp_path / "shadow.html"
    result = boiler_ai("report", str(demo_log), "--shadow", "--coal-price", "80", "--currency", "EUR",
                       "--block-s", "30", "--settle-s", "30", "-o", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "Shadow: requested against the DCS" in text
    for mv in ("feeder_a_bias_tph", "o2_setpoint_bias_pct", "sofa_damper_2_pct"):  # from the records' mvs
        assert f"<td>{mv}</td>" in text
    assert "80 EUR/t" in text


def test_report_refuses_an_empty_range_in_one_line(demo_log: Path, tmp_path: Path):
    result = boiler_ai("report", str(demo_log), "--from", "2001-01-01", "--to", "2001-01-02",
                       "-o", str(tmp_path / "r.html"))
    assert result.returncode == 2
    assert "no records in the chosen source and time range" in result.stderr and "Traceback" not in result.stderr


def test_comparison_finds_a_known_difference_at_matched_load():
    """AI on adds 0.3 points of efficiency at every load; load differs between on and off time, and efficiency
    depends on load, so an unmatched comparison would be wrong by much more than that."""
    rng = np.random.default_rng(0)
    n = 4 * 3600
    t = np.arange(n, dtype=float)
    on = (t // 1800) % 2 == 1  # half an hour on, half an hour off
    load = np.where(t < n / 2, 405.0, 605.0) + np.where(on, 2.0, -2.0) + rng.normal(0, 1.0, n)
    efficiency = 85.0 + 0.01 * load + np.where(on, 0.3, 0.0) + rng.normal(0, 0.2, n)
    h = History(t=list(t), mode=["active" if x else "disabled" for x in on], period_s=[1.0] * n)
    diffs, matched = compare(h, {"boiler efficiency": (efficiency, "pp")}, load, None, load_bin=10.0, coal_bin=1.0,
                             block_s=300.0, settle_s=120.0)
    (d,) = diffs
    assert d.strata == 2 and matched.any()
    assert abs(d.diff - (0.3 + 0.01 * 4.0)) < d.half_width < 0.2  # the 4 MW mismatch within a bin stays, honestly
