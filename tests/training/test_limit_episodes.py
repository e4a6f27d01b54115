"""training.limit_episodes: stretches of a logged signal beyond a limit, told apart into analyser spikes
(the averaged limit's mean stays inside) and excursions the averaged limit confirms."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from boiler_ai.control.envelope import load_envelope
from boiler_ai.tagmap import load_tag_map
from training.limit_episodes import stretches

ROOT = Path(__file__).resolve().parents[2]
ENV = load_envelope(ROOT / "constraints" / "reference_unit.yaml", load_tag_map(ROOT / "opc" / "reference_unit.yaml"))
LIMITS = {p.name: p for p in ENV.process_limits}
CYCLE_S = 5.0


def _series(*parts: tuple[float, int]) -> np.ndarray:
    return np.concatenate([np.full(n, value) for value, n in parts])


def test_spikes_and_confirmed_excursions_are_told_apart():
    co = _series((20.0, 60), (260.0, 3), (20.0, 60), (300.0, 14), (20.0, 30), (250.0, 2), (float("nan"), 1),
                 (250.0, 2), (20.0, 40))
    times = np.arange(len(co)) * CYCLE_S
    found = stretches(co, times, np.zeros(len(co), int), CYCLE_S, LIMITS["co_max"], LIMITS["co_minute_max"])
    assert [(s.length_s, s.peak, s.confirmed) for s in found] == [
        (15.0, 260.0, False), (70.0, 300.0, True), (10.0, 250.0, False), (10.0, 250.0, False)]
    # plain Python values: the command prints them as JSON
    assert all(type(s.length_s) is float and type(s.peak) is float and type(s.confirmed) is bool for s in found)
    spike, standing = found[0], found[1]
    # the mean over the minute: three samples of 260 among twelve
    assert abs(spike.window_mean - (3 * 260.0 + 9 * 20.0) / 12) < 1e-9
    assert standing.window_mean == 300.0 and standing.start_h == (123 * CYCLE_S) / 3600.0


def test_episodes_are_not_joined_and_an_at_least_limit_counts_below():
    co = _series((250.0, 4), (20.0, 4))
    two = np.concatenate([co, co])
    found = stretches(two, np.arange(len(two)) * CYCLE_S, np.repeat([0, 1], len(co)), CYCLE_S, LIMITS["co_max"],
                      None)
    assert [(s.episode, s.start_h, s.length_s) for s in found] == [(0, 0.0, 20.0), (1, 0.0, 20.0)]
    assert all(s.confirmed for s in found)  # no averaged limit on the signal: every stretch counts
    o2 = _series((3.5, 5), (1.8, 2), (3.5, 5))
    low = stretches(o2, np.arange(len(o2)) * CYCLE_S, np.zeros(len(o2), int), CYCLE_S, LIMITS["o2_min"], None)
    assert [(s.length_s, s.peak) for s in low] == [(10.0, 1.8)]


def test_an_unknown_or_averaged_limit_is_one_line_and_exit_2(tmp_path):
    for limit, field in (("co_maxx", "process_limits.co_maxx: no such limit"),
                         ("co_minute_max", "process_limits.co_minute_max.average_s")):
        done = subprocess.run([sys.executable, "-m", "training.limit_episodes", "--history", str(tmp_path),
                               "--limit", limit], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 2 and done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1 and field in done.stderr
