"""Mutation check of the guard: each deliberate mutation of guard.py must make the guard's own tests fail.

A guard whose tests still pass after a comparison is flipped, a check dropped or a tolerance widened is a
guard nobody has really checked. Each mutant is a copy of the package with one edit to guard.py; the guard
tests of tests/safety run against it in a subprocess and must fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUARD_SOURCE = (ROOT / "boiler_ai" / "control" / "guard.py").read_text()
GUARD_TESTS = ROOT / "tests" / "safety" / "test_projector_guard.py"

# (what the mutation does, text in guard.py, replacement)
MUTATIONS = [
    ("rate-up limit doubled", "step > up * dt + tol", "step > 2 * up * dt + tol"),
    ("rate-down check dropped", " or -step > down * dt + tol", ""),
    ("upper range bound dropped", "if not lo <= xv <= hi:", "if not lo <= xv:"),
    ("lower range bound flipped", "if not lo <= xv <= hi:", "if not lo >= xv <= hi:"),
    ("deviation limit widened", "abs(xv - dv) > dev + tol", "abs(xv - dv) > dev + tol + 1.0"),
    ("tolerance widened", "tol = self.tolerance\n", "tol = self.tolerance + 1.0\n"),
    ("allow-list check dropped", "for name in written if name not in self.limits]", "for name in written if False]"),
    ("unavailable MV not held at the DCS setpoint", "if abs(xv - dv) > tol:", "if abs(xv - dv) > tol + 1.0:"),
    ("at_most comparison flipped", "return value <= limit + tol", "return value >= limit - tol"),
    ("equality coupling widened", "return abs(value - limit) <= tol", "return abs(value - limit) <= tol + 1.0"),
    ("crossed process limit may get worse", "_holds(predicted, relation, now[signal], tol))", "True)"),
    ("influence budget dropped", "if used > max(self.budget_limit, before) + tol:", "if False:"),
    ("budget overrun may grow", "max(self.budget_limit, before) + tol", "max(self.budget_limit, before) + tol + 0.5"),
    ("retreat moves may overshoot the DCS setpoint", "<= max(prev[mv], dcs[mv]) + tol for mv in x)",
     "<= max(prev[mv], dcs[mv]) + tol + 1.0 for mv in x)"),
    ("non-finite values accepted", "return number if math.isfinite(number) else None", "return number"),
    ("missing process value accepted", "for name, signal, _, _, _ in self.process if now[signal] is None]",
     "for name, signal, _, _, _ in self.process if False]"),
]


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("mutant")
    shutil.copytree(ROOT / "boiler_ai", where / "boiler_ai", ignore=shutil.ignore_patterns("__pycache__"))
    return where


def test_every_mutation_applies_to_the_guard_once():
    for what, old, _ in MUTATIONS:
        assert GUARD_SOURCE.count(old) == 1, f"{what}: {old!r} must occur exactly once in guard.py"


def run_guard_tests(package: Path, source: str) -> subprocess.CompletedProcess:
    """The guard's tests against a copy of the package whose guard.py is `source`."""
    (package / "boiler_ai" / "control" / "guard.py").write_text(source)
    # Run from the copy so `import boiler_ai` finds it first; the ini's pythonpath (the repository) is emptied.
    env = {**os.environ, "PYTHONPATH": str(package)}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "-x",
                           "-o", "pythonpath=", "--rootdir", str(ROOT), str(GUARD_TESTS),
                           "-k", "guard and not always_passes"],
                          cwd=package, env=env, capture_output=True, text=True, timeout=300)


def test_the_unmutated_copy_passes(package_copy):
    run = run_guard_tests(package_copy, GUARD_SOURCE)
    assert run.returncode == 0, run.stdout[-2000:]


@pytest.mark.parametrize("what, old, new", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_the_guard_tests_kill_the_mutant(package_copy, what, old, new):
    run = run_guard_tests(package_copy, GUARD_SOURCE.replace(old, new, 1))
    caught = run.returncode == 1 and " failed" in run.stdout
    assert caught, f"the guard tests did not catch: {what}\n{run.stdout[-2000:]}"
