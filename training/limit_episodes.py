"""How long a process signal stays beyond its limit in logged operation: the evidence for a limit's hold.

    python -m training.limit_episodes --history runs/history [--limit co_max] [--envelope FILE]

A hard limit releases AI mode once the measured signal has been beyond it for the limit's `hold_s`. A
single-point analyser also reads what the plant's own judgement of the limit never counts: a local CO
pocket passing the probe reads hundreds of ppm for seconds while the flue gas's CO over a minute stays at
its usual tens. For the limit asked (one judged as read, `average_s` 0), this lists every stretch of the
history stage's logged signal beyond it: episode, hours into it, length, peak, and the largest mean over the
window of the envelope's averaged limit on the same signal (co_minute_max for CO: the plant's limit judged
over a minute). A stretch that mean does not carry beyond its own limit is a spike; the longest spike is
the hold the limit needs to ride through them. Stretches the mean confirms are released by the averaged
limit whatever the hold. Lengths are counted in logged samples (the history's cycle, 5 s by default), so
each is known to within one sample.

The last line is JSON: the limit, its hold, the episodes, `longest_spike_s`, `shortest_confirmed_s` and
`hold_rides_through_spikes` (hold_s > longest_spike_s).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from boiler_ai.strict import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Stretch:
    """One stretch of samples beyond the limit."""

    episode: int
    start_h: float  # its first sample, hours into the episode
    length_s: float  # samples x the logging cycle
    peak: float
    window_mean: float  # largest mean over the averaged limit's window, from its start to one window after
    confirmed: bool  # that mean beyond the averaged limit's own limit (no averaged limit: every stretch counts)


def stretches(values: np.ndarray, times: np.ndarray, episodes: np.ndarray, cycle_s: float, limit, averaged
              ) -> list[Stretch]:
    """Every run of samples beyond `limit` (a ProcessLimit), episode by episode; a NaN sample ends a run."""
    window = max(1, round(averaged.average_s / cycle_s)) if averaged is not None else 1
    found = []
    for episode in np.unique(episodes):
        mine = episodes == episode
        x, t = values[mine], times[mine]
        beyond = limit.beyond(x, limit.limit)  # a NaN compares false: a gap in the signal ends a stretch
        # trailing mean over the window, NaN where the window holds a gap (as supervision restarts it)
        csum = np.concatenate([[0.0], np.cumsum(np.nan_to_num(x))])
        gaps = np.concatenate([[0], np.cumsum(~np.isfinite(x))])
        idx = np.arange(len(x))
        lo = np.maximum(idx + 1 - window, 0)
        means = np.where(gaps[idx + 1] - gaps[lo] == 0, (csum[idx + 1] - csum[lo]) / (idx + 1 - lo), np.nan)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], beyond.astype(np.int8), [0]])))
        for k, end in zip(edges[::2], edges[1::2]):  # each stretch: samples k..end-1 beyond
            span = means[k:min(end + window, len(x))]
            worst = float(np.nanmax(span)) if np.isfinite(span).any() else math.nan
            confirmed = averaged is None or (math.isfinite(worst) and averaged.beyond(worst, averaged.limit))
            peak = float(np.max(x[k:end])) if limit.relation == "at_most" else float(np.min(x[k:end]))
            found.append(Stretch(int(episode), float(t[k] - t[0]) / 3600.0, float((end - k) * cycle_s), peak, worst,
                                 confirmed))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=Path, required=True, help="the history stage's folder")
    parser.add_argument("--limit", default="co_max", help="a process limit of the envelope judged as read")
    parser.add_argument("--envelope", type=Path, default=ROOT / "constraints" / "reference_unit.yaml")
    parser.add_argument("--tag-map", type=Path, default=ROOT / "opc" / "reference_unit.yaml")
    args = parser.parse_args(argv)
    from boiler_ai.control.envelope import load_envelope
    from boiler_ai.tagmap import load_tag_map
    from training.history import read_history

    envelope = load_envelope(args.envelope, load_tag_map(args.tag_map))
    limits = {p.name: p for p in envelope.process_limits}
    if args.limit not in limits:
        raise ConfigError(args.envelope, f"process_limits.{args.limit}",
                          f"no such limit (the envelope has {', '.join(limits)})")
    limit = limits[args.limit]
    if limit.average_s:
        raise ConfigError(args.envelope, f"process_limits.{args.limit}.average_s",
                          "judged on an average already: its spikes are averaged out")
    averaged = next((p for p in envelope.process_limits if p.signal == limit.signal and p.average_s
                     and p.relation == limit.relation), None)
    history = read_history(args.history)
    if limit.signal not in history.signals:
        raise ConfigError(args.history, "episodes", f"the history has no column {limit.signal!r}")
    values = history.column(limit.signal)
    found = stretches(values, history.plant_time, history.episode, history.cycle_s, limit, averaged)
    hours = len(values) * history.cycle_s / 3600.0
    print(f"{limit.name}: {limit.signal} {limit.relation.replace('_', ' ')} {limit.limit:g} {limit.unit}, hold "
          f"{limit.hold_s:g} s; {hours:.0f} h of history at {history.cycle_s:g} s per sample; "
          + (f"confirmed by {averaged.name} (mean over {averaged.average_s:g} s beyond {averaged.limit:g})"
             if averaged is not None else "no averaged limit on this signal: every stretch counts as confirmed"))
    print(f"{'episode':>8}{'at h':>8}{'length s':>10}{'peak':>9}{'mean':>9}  confirmed")
    for s in sorted(found, key=lambda s: s.length_s):
        print(f"{s.episode:>8}{s.start_h:>8.2f}{s.length_s:>10.0f}{s.peak:>9.4g}{s.window_mean:>9.4g}  "
              f"{'yes' if s.confirmed else 'no: a spike'}")
    spikes = [s.length_s for s in found if not s.confirmed]
    confirmed = [s.length_s for s in found if s.confirmed]
    longest = max(spikes, default=0.0)
    print(f"longest spike {longest:g} s (to within {history.cycle_s:g} s, one sample), shortest confirmed stretch "
          f"{min(confirmed) if confirmed else 'none'} s: a hold of {limit.hold_s:g} s "
          + ("rides through every spike" if limit.hold_s > longest else "releases on spikes"))
    print(json.dumps({"limit": limit.name, "hold_s": limit.hold_s, "history_h": round(hours, 1),
                      "sample_s": history.cycle_s, "episodes": len(found), "spikes": len(spikes),
                      "longest_spike_s": longest, "shortest_confirmed_s": min(confirmed, default=None),
                      "hold_rides_through_spikes": limit.hold_s > longest}))
    return 0


if __name__ == "__main__":
    from training.stages import run_command

    run_command(main, "training.limit_episodes")
