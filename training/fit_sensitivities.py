"""Fit the envelope's process-limit sensitivities S, with their uncertainty, from step tests.

    python -m training.fit_sensitivities --envelope constraints/reference_unit.yaml   # simulate, fit, write
    python -m training.fit_sensitivities --log steps.csv --no-simulate ...           # fit a plant's own log

Two stages, as on a plant (docs/STEP_TESTS.md):
  1. Step tests. The unit runs in AI mode with every AI setpoint on its DCS setpoint; one MV at a time is
     stepped +delta, back, -delta, back, each held `--hold-s` seconds, at several loads. Every second the
     tag-map signals are logged (here from the simulated unit's stepping API; on a plant, the historian).
     The log is a CSV: time_s, load_point, mv, then tag-map signals: the load, the process-limit signals
     and each MV's DCS and AI setpoints.
  2. The fit reads only the log. For each step, the change of each process signal is the mean over the
     last `--settle-window-s` of the stepped plateau minus the mean of the same window of the baseline
     plateaus before and after it (which cancels slow drift), divided by the applied offset (AI setpoint
     minus DCS setpoint, from the logged tags). Over all steps of an MV (up and down, every load) the
     estimate is their mean, the uncertainty their standard deviation (nonlinearity and load dependence
     show up here) plus the noise of the plateau means; the interval written is
     mean +- (2 x uncertainty + margin x |mean|), rounded outwards.
The intervals are written into the envelope's process limits (`sensitivity`, `sensitivity_source`); the
rest of the file, comments included, is kept. The projector and guard use the end of larger magnitude.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from boiler_ai.cli import DefaultsShown
from boiler_ai.control.envelope import Envelope, load_envelope
from boiler_ai.strict import ConfigError
from boiler_ai.tagmap import TagMap, load_tag_map

ROOT = Path(__file__).resolve().parent.parent
LOADS_MW = (330.0, 450.0, 600.0)
# Step size per MV group: large enough to read through noise, inside the envelope's deviation limits.
STEP = {"feeder_": 2.0, "sa_damper_": 10.0, "sofa_damper_": 10.0, "o2_setpoint_bias_pct": 0.4}
SETTLE_S = 900.0  # under the DCS alone before the first step
K_SIGMA = 2.0
MARGIN = 0.25  # on top of the statistical interval, as a share of |S|: the linear model's own error
MIN_STEPS = 2  # an MV with fewer usable steps gets no sensitivity (and the report says so)


@dataclass(frozen=True)
class Fit:
    mean: float
    sigma: float
    steps: int

    def interval(self, k: float = K_SIGMA, margin: float = MARGIN) -> tuple[float, float]:
        half = k * self.sigma + margin * abs(self.mean)
        return _round_out(self.mean - half, math.floor), _round_out(self.mean + half, math.ceil)


def _round_out(value: float, direction) -> float:
    """Round to three significant figures, away from the interval's centre."""
    if value == 0.0:
        return 0.0
    scale = 10.0 ** (math.floor(math.log10(abs(value))) - 2)
    return float(f"{direction(value / scale) * scale:.3g}")


def step_size(mv: str) -> float:
    return next(v for prefix, v in STEP.items() if mv.startswith(prefix))


# ── stage 1: step tests on the simulated unit ──────────────────────────────────────────────────────

def simulate_step_tests(tag_map: TagMap, envelope: Envelope, log_path: Path, hold_s: float, seed: int,
                        loads: tuple[float, ...] = LOADS_MW, mvs: tuple[str, ...] | None = None) -> None:
    """Run the step tests on the simulated unit and log every readable signal each second."""
    from boiler_ai.sim.scenario import Scenario
    from boiler_ai.sim.unit import ReferenceUnit

    # what a plant engineer exports from the historian: load, the process signals, the MVs' setpoints
    readable = ["unit_load_mw", *envelope.process_signals,
                *(t for mv in envelope.mv_names for t in (tag_map.manipulated[mv].dcs_setpoint,
                                                          tag_map.manipulated[mv].ai_setpoint))]
    hs = tag_map.handshake
    mvs = tuple(envelope.mv_names) if mvs is None else mvs
    with log_path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["time_s", "load_point", "mv", *readable])
        for k, load in enumerate(loads):
            duration = SETTLE_S + len(mvs) * 4 * hold_s + 60.0
            unit = ReferenceUnit(Scenario(f"step_tests_{load:g}mw", duration, ((0.0, load),)), seed=seed + k,
                                 tag_map=tag_map)
            unit.set_ai_enable(True)
            heartbeat = 0

            def run(seconds: float, mv: str, offset: float) -> None:
                nonlocal heartbeat
                for _ in range(round(seconds)):
                    values = unit.values()
                    heartbeat += 1
                    unit.write(hs["ai_heartbeat"], float(heartbeat))
                    unit.write(hs["ai_request"], 1.0)
                    for name in envelope.mv_names:  # every AI setpoint on the DCS's, the tested one offset
                        spec = tag_map.manipulated[name]
                        target = values[spec.dcs_setpoint] + (offset if name == mv else 0.0)
                        sig = tag_map.signals[spec.ai_setpoint]
                        unit.write(spec.ai_setpoint, min(max(target, sig.lo), sig.hi))
                    unit.step(1.0)
                    row = unit.values()
                    out.writerow([f"{unit.t:g}", f"{load:g}", mv, *(f"{row[n]:.6g}" for n in readable)])

            run(SETTLE_S, "", 0.0)
            for mv in mvs:
                delta = step_size(mv)
                for offset in (delta, 0.0, -delta, 0.0):
                    run(hold_s, mv, offset)


# ── stage 2: the fit, from the log alone ───────────────────────────────────────────────────────────

def read_log(path: Path) -> tuple[list[str], dict[str, np.ndarray], list[tuple[str, str]]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0][:3] != ["time_s", "load_point", "mv"]:
        raise ConfigError(path, "header", "a step-test log starts with the columns time_s, load_point, mv")
    header, body = rows[0], rows[1:]
    try:
        columns = {name: np.array([float(r[i]) for r in body]) for i, name in enumerate(header) if i == 0 or i > 2}
    except (ValueError, IndexError) as exc:
        raise ConfigError(path, "rows", f"every row needs a number in each signal column ({exc})") from None
    return header[3:], columns, [(r[1], r[2]) for r in body]


def steps(load: np.ndarray, offset: np.ndarray) -> list[tuple[int, int, float]]:
    """The steps in one MV's offset: (start, end, mean offset) of each run away from zero at one load
    point. The DCS setpoint moves a little under a held offset (it follows the load and the coal), so
    zero is under 2 % of the largest offset and a run holds while within 10 % of where it started."""
    zero = 0.02 * float(np.max(np.abs(offset), initial=0.0))
    out = []
    i, n = 0, len(offset)
    while i < n:
        if abs(offset[i]) <= zero:
            i += 1
            continue
        j = i
        while j < n and load[j] == load[i] and abs(offset[j] - offset[i]) < 0.1 * abs(offset[i]):
            j += 1
        out.append((i, j, float(np.mean(offset[i:j]))))
        i = j
    return out


def fit_log(path: Path, tag_map: TagMap, envelope: Envelope, window_s: float) -> dict[tuple[str, str], Fit]:
    """(process signal, MV) -> Fit, from a step-test log.

    A step of length L from `start` to `end` is compared with the baseline: the mean of the window just
    before it and of the same window L seconds after its end (after the return has settled as long as
    the step did); both must be at zero offset and at the same load point."""
    signals, columns, labels = read_log(path)
    missing = [s for s in envelope.process_signals if s not in columns]
    if missing:
        raise ConfigError(path, "header", f"the log has no column for process signal {missing[0]!r}")
    load = np.array([float(point) for point, _ in labels])
    n = int(window_s)
    estimates: dict[tuple[str, str], list[float]] = defaultdict(list)
    noise: dict[tuple[str, str], list[float]] = defaultdict(list)
    for mv in envelope.mv_names:
        spec = tag_map.manipulated[mv]
        if spec.ai_setpoint not in columns or spec.dcs_setpoint not in columns:
            continue
        offset = columns[spec.ai_setpoint] - columns[spec.dcs_setpoint]
        zero = 0.02 * float(np.max(np.abs(offset), initial=0.0))
        for start, end, applied in steps(load, offset):
            length = end - start
            before, after = slice(start - n, start), slice(end + length - n, end + length)
            if (length < n or start < n or end + length > len(offset)
                    or np.any(np.abs(offset[start - n:start]) > zero) or np.any(np.abs(offset[end:end + length]) > zero)
                    or np.any(load[start - n:end + length] != load[start])):
                continue
            for signal in envelope.process_signals:
                y = columns[signal]
                base = 0.5 * (y[before].mean() + y[after].mean())
                stepped = y[end - n:end]
                estimates[(signal, mv)].append((stepped.mean() - base) / applied)
                noise[(signal, mv)].append(stepped.std() / math.sqrt(n) / abs(applied))
    fits = {}
    for key, values in estimates.items():
        if len(values) < MIN_STEPS:
            continue
        spread = float(np.std(values, ddof=1))
        fits[key] = Fit(float(np.mean(values)), math.hypot(spread, float(np.mean(noise[key]))), len(values))
    return fits


def significant(fit: Fit) -> bool:
    """Worth a term: the estimate is clear of its own noise, or its interval is wide enough to matter."""
    return abs(fit.mean) > fit.sigma


def write_envelope(path: Path, out: Path, envelope: Envelope, fits: dict[tuple[str, str], Fit], source: str) -> str:
    """Replace each process limit's `sensitivity` and `sensitivity_source` lines; return a report."""
    text = path.read_text()
    report = []
    for p in envelope.process_limits:
        if p.average_s:  # judged on an average, by supervision alone: no projector rows to fit
            report.append(f"  {p.name} ({p.signal}): averaged over {p.average_s:g} s, supervision only, not fitted")
            continue
        terms = {}
        for mv in envelope.mv_names:
            fit = fits.get((p.signal, mv))
            if fit is not None and significant(fit):
                terms[mv] = fit.interval()
        flow = ", ".join(f"{mv}: [{lo:g}, {hi:g}]" for mv, (lo, hi) in terms.items())
        block = re.compile(rf"(\n  {re.escape(p.name)}:\n(?:    .*\n)*?)"
                           r"    sensitivity: .*\n    sensitivity_source: .*\n")
        text, count = block.subn(lambda m: f"{m.group(1)}    sensitivity: {{{flow}}}\n"
                                           f"    sensitivity_source: \"{source}\"\n", text)
        if count != 1:
            raise ConfigError(path, f"process_limits.{p.name}",
                              "expected its sensitivity and sensitivity_source lines, in that order, last in its block")
        report.append(f"  {p.name} ({p.signal}): " + (", ".join(
            f"{mv} {fits[(p.signal, mv)].mean:+.3g} +- {fits[(p.signal, mv)].sigma:.2g} "
            f"({fits[(p.signal, mv)].steps} steps) -> [{lo:g}, {hi:g}]" for mv, (lo, hi) in terms.items()) or "none"))
    out.write_text(text)
    return "\n".join(report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=DefaultsShown)
    parser.add_argument("--envelope", type=Path, default=ROOT / "constraints" / "reference_unit.yaml",
                        help="envelope whose process limits are fitted (default: constraints/reference_unit.yaml)")
    parser.add_argument("--tag-map", type=Path, default=ROOT / "opc" / "reference_unit.yaml",
                        help="the unit's tag map (default: opc/reference_unit.yaml)")
    parser.add_argument("--out", type=Path, help="envelope file to write (default: --envelope, in place)")
    parser.add_argument("--log", type=Path, default=Path("step_tests.csv"), help="step-test log (written, then read)")
    parser.add_argument("--no-simulate", action="store_true", help="fit an existing log (a plant's own step tests)")
    parser.add_argument("--hold-s", type=float, default=600.0, help="seconds per plateau of a simulated step test")
    parser.add_argument("--settle-window-s", type=float, default=240.0, help="seconds averaged at a plateau's end")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed (default: 0)")
    args = parser.parse_args(argv)
    try:
        tag_map = load_tag_map(args.tag_map)
        envelope = load_envelope(args.envelope, tag_map)
        if not args.no_simulate:
            print(f"step tests on the simulated unit at {', '.join(f'{x:g}' for x in LOADS_MW)} MW, "
                  f"{args.hold_s:g} s per plateau, seed {args.seed} -> {args.log}", flush=True)
            simulate_step_tests(tag_map, envelope, args.log, args.hold_s, args.seed)
        elif not args.log.is_file():
            raise ConfigError(args.log, "log", "no such step-test log")
        fits = fit_log(args.log, tag_map, envelope, args.settle_window_s)
        origin = (f"simulated step tests at {'/'.join(f'{x:g}' for x in LOADS_MW)} MW, seed {args.seed}"
                  if not args.no_simulate else f"step-test log {args.log.name}")
        source = (f"python -m training.fit_sensitivities ({origin}, {args.hold_s:g} s plateaus, last "
                  f"{args.settle_window_s:g} s averaged), {date.today().isoformat()}: mean +- "
                  f"({K_SIGMA:g} sigma + {MARGIN:g} |mean|)")
        report = write_envelope(args.envelope, args.out or args.envelope, envelope, fits, source)
        load_envelope(args.out or args.envelope, tag_map)  # what was written must load
    except (ConfigError, OSError) as exc:
        print(f"fit-sensitivities: {exc}", file=sys.stderr)
        return 2
    print(f"fitted sensitivities written to {args.out or args.envelope}:\n{report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
