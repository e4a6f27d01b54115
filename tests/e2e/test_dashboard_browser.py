"""The dashboard in a real browser (headless Chromium from Debian's packages) against a live decision
stream: the simulated unit served over OPC UA, the daemon engaging on it, the dashboard following
the daemon's PUB and catch-up endpoints in its own process. On failure the page's screenshot and
HTML are kept in $BOILER_AI_TEST_ARTIFACTS (default test-artifacts/ at the repository root)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from rigs.cycle_rig import follower_config
from rigs.served import SPEED, free_port
from rigs.stream_keys import stream_keys

from boiler_ai.sim.scenario import named_scenario
from boiler_ai.sim.serve import SimulatedUnitServer
from boiler_ai.sim.unit import ReferenceUnit

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("BOILER_AI_TEST_ARTIFACTS", ROOT / "test-artifacts"))
MODE_CHANGE_S = 2.0  # the dashboard shows a mode change within this (issue 12)


def unavailable(why: str):
    """A missing browser fails under CI=true (the suite must prove the page works) and skips elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture
def browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        unavailable("headless Chromium not installed (bash tests/install_chromium.sh installs Debian's chromium "
                    "and chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium not installed (pip install -e '.[dev]')")

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class SimulatedUnit:
    """The simulated unit's OPC UA server on an event loop of its own, so the test can drive the browser."""

    def __init__(self, endpoint: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sim", daemon=True)
        self.thread.start()
        self.unit = ReferenceUnit(named_scenario("steady_full_load", 0), seed=0)
        self.server = SimulatedUnitServer(self.unit, endpoint=endpoint, speed=SPEED)
        self.call(self.server.set_ai_enable(True))
        self.call(self.server.start())

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def close(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def keep_artefacts(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    (ARTIFACTS / f"{name}.html").write_text(driver.page_source, encoding="utf-8")


@pytest.mark.slow
def test_dashboard_shows_live_mode_trends_and_an_explanation(tmp_path, browser, request):
    from selenium.webdriver.common.by import By

    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    pub, catchup, port = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", free_port()
    sim = SimulatedUnit(endpoint)
    keys = stream_keys(tmp_path / "keys", "dashboard")  # the stream behind CURVE, as at a plant
    config = follower_config(tmp_path, {"sa_damper_c_pct": 6.0}, mode="closed_loop",
                             plant={"endpoint": endpoint, "timeout_s": 0.5},
                             record={"publish_endpoint": pub, "catchup_endpoint": catchup, "fsync": "interval",
                                     "curve": keys.config})
    daemon = subprocess.Popen([sys.executable, "-m", "boiler_ai", "run", str(config), "--sim-speed", str(SPEED)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dashboard = subprocess.Popen([sys.executable, "-m", "boiler_ai", "dashboard", "--catchup", catchup, "--pub", pub,
                                  "--config", str(config), "--port", str(port), *keys.options("dashboard")],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    mode = lambda: browser.find_element(By.ID, "mode").get_attribute("data-mode")  # noqa: E731

    def mv_rows() -> dict:
        """The MV table read in one script: the page rebuilds its rows on every update, so an element found
        by one WebDriver call can be gone by the next (StaleElementReferenceException)."""
        return browser.execute_script(
            "const rows = {};"
            "for (const r of document.querySelectorAll('#mvs tbody tr'))"
            "  rows[r.dataset.mv] = {class: r.className, text: r.innerText};"
            "return rows;")
    try:
        wait_for(lambda: sim.unit.dcs.ai_active, 60, "the daemon engaging")

        def up():
            try:
                return urllib.request.urlopen(url + "api/status", timeout=2).status == 200
            except OSError:
                return False

        wait_for(up, 30, f"the dashboard serving {url}", poll_s=0.2)
        browser.get(url)
        wait_for(lambda: mode() == "active", 15, "the page showing AI in control")
        assert "AI IN CONTROL" in browser.find_element(By.ID, "mode").text
        # each MV's AI and DCS setpoints, with limits from the envelope
        assert ".." in mv_rows()["sa_damper_c_pct"]["text"]
        # a trend with data points, drawn
        trend = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#trend-o2_economiser_pct[data-points]"),
                         15, "the O2 trend")[0]
        wait_for(lambda: int(trend.get_attribute("data-points")) > 5, 15, "O2 trend points")
        assert trend.find_elements(By.TAG_NAME, "canvas")

        # the operator takes damper C back on its own enable: the page greys its row and says why
        sim.call(sim.server.set_mv_ai_enable("sa_damper_c_pct", False))
        damper_c = wait_for(lambda: (row := mv_rows().get("sa_damper_c_pct")) and row["class"] == "handed-back" and row,
                            MODE_CHANGE_S + 1, "damper C shown handed back")
        assert "taken back to the DCS by the operator" in damper_c["text"] and mode() == "active"
        assert "AI_REASON 111" in browser.find_element(By.ID, "reason-code").text
        assert "Operator took a variable back" in browser.find_element(By.ID, "reason").text

        # the operator drops AI_ENABLE: the page shows the hand-back within two seconds
        sim.call(sim.server.set_ai_enable(False))
        dropped = time.monotonic()
        wait_for(lambda: mode() in ("releasing", "disabled"), MODE_CHANGE_S, "the page showing the hand-back")
        shown_after = time.monotonic() - dropped
        wait_for(lambda: "Operator switched AI off" in browser.find_element(By.ID, "reason").text, 5,
                 "the release reason on the page")
        assert shown_after <= MODE_CHANGE_S

        # a decision's explanation
        browser.find_element(By.ID, "explain-latest").click()
        explained = wait_for(lambda: browser.find_element(By.ID, "explain").get_attribute("data-seq"), 10,
                             "an explanation")
        text = browser.find_element(By.ID, "explain").text
        assert text.startswith(f"Decision {explained} of reference_unit") and "Inputs that mattered" in text
    except BaseException:
        keep_artefacts(browser, request.node.name)
        raise
    finally:
        for process in (dashboard, daemon):
            process.terminate()
        for process in (dashboard, daemon):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        sim.close()
