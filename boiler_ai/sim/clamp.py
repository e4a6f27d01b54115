"""Clamps written as comparisons: the simulator clamps a few hundred values every simulated second, and
min(max(x, lo), hi) costs several times what the two comparisons do. Each returns exactly the object
min(max(x, lo), hi) would (ties and NaN included), so results do not change by a bit."""

from __future__ import annotations


def clamp(x: float, lo: float, hi: float) -> float:
    """min(max(x, lo), hi)."""
    v = lo if lo > x else x
    return hi if hi < v else v


def toward(target: float, now: float, step: float) -> float:
    """A rate limit: now moved towards target by at most step, min(max(target, now - step), now + step)."""
    return clamp(target, now - step, now + step)
