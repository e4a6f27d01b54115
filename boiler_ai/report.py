"""`boiler-ai report SOURCE [--from] [--to] -o report.html`: what the AI did for a unit, for its engineers.

SOURCE is a decision log directory, a historian's SQLite file or a postgresql:// DSN (as for `export`).
One self-contained HTML file (plots embedded as PNG, no script, no external resource), with:
  - trends: load with the AI-on periods shaded, boiler efficiency, heat rate, O2, CO, NOx, steam temperatures
  - AI on against AI off at matched load (and coal, with --coal-signal), each difference with a 95 % interval
  - the benefit in coal, CO2 and money at the given coal price
  - releases to the DCS by reason, and how long each envelope constraint bound the projector
  - with --shadow: the model's requested actions against the DCS's own setpoints, per manipulated variable

It reads the decoded records only (docs/DECISION_RECORD.md) and the tag map's logical signal names the
report names below (`--*-signal` options change them). A value counts only when validation accepted it
(or held it); a signal a unit does not map is left out of the report, with a note.

Heat rate. When the records carry a heat-rate signal (`--heat-rate-signal`, default the one signal whose name
contains `heat_rate`, if there is exactly one), it is used as logged. Otherwise it is computed from the
coal fired, as the gross fuel-input heat rate on the coal's higher heating value:
    heat rate [kJ/kWh] = coal flow [t/h] x HHV [kJ/kg] / gross load [MW]
(t/h x 1000 kg/t x kJ/kg over MW x 1000 kW/MW). Coal flow is the sum of the feeders' gravimetric flows
(`mill_*_coal_flow_tph`, or `--coal-flow-signals`). The HHV is a constant (`--coal-hhv-mj-kg`), so this
heat rate sees the boiler and cycle, not a change of coal: compare AI on and off on the same coal.

Comparison. Cycles are grouped into blocks of at most `--block-s` seconds of one state (AI on: mode
`active`; AI off: every other mode) and one stratum (load in `--load-bin-mw` bins, and the coal signal's
bin if given); a block ends at a state or stratum change or a gap in the records, and blocks shorter than
half a block or starting within `--settle-s` of an engagement change are left out (transients).
Blocks, not cycles, are the samples: neighbouring cycles are nearly the same and would make any
interval far too narrow. Per stratum with at least two blocks on each side, the difference of block means
(on minus off) and its Welch standard error; strata are pooled weighted by their AI-on blocks, and the 95 %
interval uses Student's t with (blocks - 2 x strata) degrees of freedom.

Benefit. Coal saved = -(difference in specific coal, t/MWh) x the energy generated with the AI on in
the matched strata; CO2 = coal x `--co2-t-per-t-coal` (default 2.02: the reference design coal's 55.0 %
carbon x 44/12); money = coal x `--coal-price`.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from boiler_ai.record.export import parse_time, records_from
from boiler_ai.strict import ConfigError

# (key, signal option default, label, unit) of the trends; the key is also the --<key>-signal option
TRENDS = (
    ("load", "unit_load_mw", "Gross load", "MW"),
    ("efficiency", "boiler_efficiency_pct", "Boiler efficiency (online, HHV)", "%"),
    ("o2", "o2_economiser_pct", "Excess O2, dry", "%"),
    ("co", "co_ppm", "CO", "ppm"),
    ("nox", "nox_mg_nm3", "NOx before SCR", "mg/Nm3"),
    ("main_steam_temp", "main_steam_temp_c", "Main steam temperature", "degC"),
    ("reheat_temp", "reheat_steam_temp_c", "Hot reheat temperature", "degC"),
)
COAL_FLOW_PATTERN = re.compile(r"^mill_[a-z0-9]+_coal_flow_tph$")
CO2_T_PER_T_COAL = 0.550 * 44.0 / 12.0  # reference design coal: 55.0 % carbon as fired (docs/REFERENCE_UNIT.md)
MAX_POINTS = 2000  # per trend line; longer series are averaged over equal time slices
GAP_CYCLES = 5  # a pause in the records longer than this many cycle periods ends a block
UNAVAILABLE = ":unavailable"  # projector's name for an MV left to the DCS (boiler_ai.control.projector)


@dataclass
class History:
    """The records as columns: one entry per cycle."""

    unit: str | None = None
    t: list[float] = field(default_factory=list)
    mode: list[str] = field(default_factory=list)
    period_s: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    seq_first: int | None = None
    seq_last: int | None = None
    seq_gaps: int = 0
    models: Counter = field(default_factory=Counter)
    releases: Counter = field(default_factory=Counter)
    binding_s: Counter = field(default_factory=Counter)
    projected_s: float = 0.0
    mvs: list[str] | None = None
    requested: list[list[float]] = field(default_factory=list)  # per cycle, nan when none
    dcs: list[list[float]] = field(default_factory=list)


def _used_values(record: dict, wanted: Iterable[str], index_cache: dict) -> dict[str, float]:
    """Value used by the controller per wanted signal (valid as read, or held); NaN otherwise."""
    block = record["inputs"]
    signals = block["signals"]
    key = tuple(signals)
    index = index_cache.get(key)
    if index is None:
        index = index_cache[key] = {name: i for i, name in enumerate(signals)}
    issue, held, value = block["issue"], block["held"], block["value"]
    out = {}
    for name in wanted:
        i = index.get(name)
        if i is None:
            out[name] = math.nan
        elif name in issue:
            out[name] = float(held.get(name, math.nan))
        else:
            out[name] = float(value[i])
    return out


def load_history(records: Iterable[dict], signals: list[str], shadow: bool) -> History:
    h = History()
    h.values = {name: [] for name in signals}
    cache: dict = {}
    for record in records:
        seq = record["seq"]
        if h.seq_last is not None and seq != h.seq_last + 1:
            h.seq_gaps += 1
        h.seq_first = seq if h.seq_first is None else h.seq_first
        h.seq_last = seq
        h.unit = record["unit_id"]
        period = float(record["cycle_period_s"])
        h.t.append(float(record["wall_time"]))
        h.mode.append(record["mode"])
        h.period_s.append(period)
        h.models[record["model"]["id"]] += 1
        if record["release_reason"]:
            h.releases[record["release_reason"]] += 1
        projection = record.get("projection")
        if projection is not None:
            h.projected_s += period
            for name in projection["active_constraints"]:
                h.binding_s[name] += period
        for name, value in _used_values(record, signals, cache).items():
            h.values[name].append(value)
        if shadow:
            mvs = record["mvs"]
            if h.mvs is None:
                h.mvs = list(mvs)
            elif list(mvs) != h.mvs:
                raise ConfigError("records", f"seq {seq}.mvs", "the manipulated variables change within the "
                                  "period: report each configuration's period on its own (--from/--to)")
            nan = [math.nan] * len(mvs)
            h.requested.append(record["requested"] or nan)
            h.dcs.append(record["u_dcs"] or nan)
    return h


# ---------------------------------------------------------------------------------------------
# The comparison


@dataclass
class Difference:
    metric: str
    unit: str
    on: float  # mean over matched AI-on blocks
    off: float
    diff: float  # on - off, pooled over strata
    half_width: float  # 95 % interval: diff +- half_width
    blocks_on: int
    blocks_off: int
    strata: int


def blocks(wall: np.ndarray, on: np.ndarray, period: np.ndarray, block_s: float,
           settle_s: float) -> list[np.ndarray]:
    """Index arrays of the blocks (see the module docstring), transients left out.

    Durations are plant seconds (the cycles' periods added up), so a log of an accelerated simulator
    is cut the same way as a plant's; a gap is a wall-clock pause longer than GAP_CYCLES periods."""
    plant = np.cumsum(period) - period
    out, start = [], 0
    last_change = -math.inf
    n = len(wall)
    for i in range(1, n + 1):
        ends = (i == n or on[i] != on[i - 1]
                or wall[i] - wall[i - 1] > GAP_CYCLES * period[i - 1] or plant[i] - plant[start] >= block_s)
        if not ends:
            continue
        if plant[i - 1] - plant[start] + period[i - 1] >= block_s / 2 and plant[start] - last_change >= settle_s:
            out.append(np.arange(start, i))
        if i < n and on[i] != on[i - 1]:
            last_change = plant[i]
        start = i
    return out


def compare(h: History, metrics: dict[str, tuple[np.ndarray, str]], load: np.ndarray, coal: np.ndarray | None,
            load_bin: float, coal_bin: float, block_s: float, settle_s: float
            ) -> tuple[list[Difference], np.ndarray]:
    """Differences on - off per metric, and which cycles lie in a matched stratum."""
    from scipy import stats

    t = np.asarray(h.t)
    on = np.array([m == "active" for m in h.mode])
    by_stratum: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    stratum = np.full(len(t), np.nan)  # per cycle, for the caller: the stratum of its block
    all_blocks = blocks(t, on, np.asarray(h.period_s), block_s, settle_s)
    for b, idx in enumerate(all_blocks):
        # A block's stratum is that of its mean load (and coal): a load sitting on a bin edge must not
        # cut the blocks into pieces. A block that ramps through more than a bin matches nothing.
        block_load = load[idx]
        if not np.isfinite(block_load).all() or np.ptp(block_load) > load_bin:
            continue
        key = (int(block_load.mean() // load_bin), 0)
        if coal is not None:
            if not np.isfinite(coal[idx]).all():
                continue
            key = (key[0], int(coal[idx].mean() // coal_bin))
        by_stratum.setdefault(key, ([], []))[0 if on[idx[0]] else 1].append(b)
        stratum[idx] = hash(key)
    matched = {s: sides for s, sides in by_stratum.items() if len(sides[0]) >= 2 and len(sides[1]) >= 2}
    results = []
    for name, (series, unit) in metrics.items():
        means = np.array([np.nanmean(series[idx]) if np.isfinite(series[idx]).any() else np.nan
                          for idx in all_blocks])
        num = var = weight = 0.0
        mean_on = mean_off = 0.0
        n_on = n_off = strata = 0
        for on_blocks, off_blocks in matched.values():
            a, b = means[on_blocks], means[off_blocks]
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            if len(a) < 2 or len(b) < 2:
                continue
            w = float(len(a))
            num += w * (a.mean() - b.mean())
            var += w * w * (a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
            mean_on += w * a.mean()
            mean_off += w * b.mean()
            weight += w
            n_on, n_off, strata = n_on + len(a), n_off + len(b), strata + 1
        if not weight:
            continue
        dof = max(n_on + n_off - 2 * strata, 1)
        results.append(Difference(name, unit, mean_on / weight, mean_off / weight, num / weight,
                                  float(stats.t.ppf(0.975, dof)) * math.sqrt(var) / weight, n_on, n_off, strata))
    return results, np.isin(stratum, [hash(k) for k in matched])


# ---------------------------------------------------------------------------------------------
# Plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a plant server
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _thin(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS points: means over equal slices (a plot cannot show more anyway)."""
    if len(t) <= MAX_POINTS:
        return t, y
    edges = np.linspace(0, len(t), MAX_POINTS + 1).astype(int)
    with np.errstate(invalid="ignore"):
        ys = np.array([np.nanmean(y[a:b]) if np.isfinite(y[a:b]).any() else np.nan
                       for a, b in zip(edges[:-1], edges[1:])])
    return np.array([t[a:b].mean() for a, b in zip(edges[:-1], edges[1:])]), ys


def _times(t: np.ndarray) -> list[datetime]:
    return [datetime.fromtimestamp(x, timezone.utc) for x in t]


def trend(t: np.ndarray, on: np.ndarray, lines: list[tuple[str, np.ndarray]], title: str, unit: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 2.8))
    for label, y in lines:
        tt, yy = _thin(t, y)
        ax.plot(_times(tt), yy, linewidth=1.0, label=label)
    tt, oo = _thin(t, on.astype(float))
    ax.fill_between(_times(tt), 0, 1, where=oo >= 0.5, transform=ax.get_xaxis_transform(), color="tab:green",
                    alpha=0.12, linewidth=0, label="AI on")
    ax.set_title(title)
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.autofmt_xdate()
    return _png(fig)


def bars(items: list[tuple[str, float]], title: str, xlabel: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(items) + 1.2))
    names = [n for n, _ in items][::-1]
    ax.barh(names, [v for _, v in items][::-1], color="tab:blue")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def scatter_on_off(load: np.ndarray, y: np.ndarray, on: np.ndarray, title: str, unit: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    step = max(1, len(load) // 5000)
    for mask, label, colour in ((~on, "AI off", "tab:gray"), (on, "AI on", "tab:green")):
        ax.scatter(load[mask][::step], y[mask][::step], s=4, alpha=0.5, label=label, color=colour)
    ax.set_xlabel("gross load (MW)")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _png(fig)


def shadow_plot(t: np.ndarray, requested: np.ndarray, dcs: np.ndarray, mvs: list[str]) -> str:
    plt = _plt()
    fig, axes = plt.subplots(len(mvs), 1, figsize=(10, 1.6 * len(mvs) + 0.6), sharex=True, squeeze=False)
    for k, (ax, mv) in enumerate(zip(axes[:, 0], mvs)):
        for y, label in ((dcs[:, k], "DCS setpoint"), (requested[:, k], "model requested")):
            tt, yy = _thin(t, y)
            ax.plot(_times(tt), yy, linewidth=1.0, label=label)
        ax.set_ylabel(mv, rotation=0, ha="right", fontsize="small")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize="small")
    axes[0, 0].set_title("Shadow: the model's requested setpoints against the DCS's, per manipulated variable")
    fig.autofmt_xdate()
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# The page


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _img(png: str, alt: str) -> str:
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{png}"></figure>'


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:,.{digits}f}"


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}figure{margin:0.5em 0}
.note{color:#555;font-size:90%}.warn{color:#a30}"""


@dataclass
class Options:
    coal_price: float
    currency: str
    coal_hhv_mj_kg: float
    co2_t_per_t_coal: float
    load_bin_mw: float
    coal_bin: float
    block_s: float
    settle_s: float
    signals: dict[str, str]
    coal_flow_signals: list[str] | None
    heat_rate_signal: str | None
    coal_signal: str | None
    shadow: bool


def build_report(records: Iterable[dict], opts: Options, source: str) -> tuple[str, int]:
    """The report's HTML and its number of plots."""
    records = iter(records)
    first = next(records, None)
    if first is None:
        raise ConfigError(source, "", "no records in the chosen source and time range: no report written")
    known = list(first["inputs"]["signals"])
    coal_flows = opts.coal_flow_signals or (["total_coal_flow_tph"] if "total_coal_flow_tph" in known
                                            else [s for s in known if COAL_FLOW_PATTERN.match(s)])
    heat_rate_signal = opts.heat_rate_signal
    if heat_rate_signal is None:
        candidates = [s for s in known if "heat_rate" in s]
        heat_rate_signal = candidates[0] if len(candidates) == 1 else None
    extra = [s for s in (heat_rate_signal, opts.coal_signal) if s]
    for name in [*extra, *(opts.coal_flow_signals or [])]:
        if name not in known:
            raise ConfigError("command line", name, f"signal {name!r} is not in the records")
    wanted = sorted({*opts.signals.values(), *coal_flows, *extra} & set(known))
    h = load_history(_chain(first, records), wanted, opts.shadow)

    t = np.asarray(h.t)
    col = {name: np.asarray(values, dtype=float) for name, values in h.values.items()}
    nan = np.full(len(t), np.nan)
    series = {key: col.get(sig, nan) for key, sig in opts.signals.items()}
    load = series["load"]
    coal_flow = np.sum([col[s] for s in coal_flows], axis=0) if coal_flows else nan
    with np.errstate(divide="ignore", invalid="ignore"):
        positive_load = np.where(load > 1.0, load, np.nan)
        if heat_rate_signal:
            heat_rate = col[heat_rate_signal]
            heat_rate_note = f"heat rate as logged ({heat_rate_signal})"
        else:
            heat_rate = coal_flow * opts.coal_hhv_mj_kg * 1000.0 / positive_load
            heat_rate_note = (f"heat rate computed: coal flow x HHV {opts.coal_hhv_mj_kg:g} MJ/kg / gross load "
                              f"(coal flow = {' + '.join(coal_flows) or 'none mapped'})")
        specific_coal = coal_flow / positive_load  # t/MWh
    on = np.array([m == "active" for m in h.mode])
    missing = [f"{label} ({opts.signals[key]})" for key, _, label, _ in TRENDS if opts.signals[key] not in known]

    plots: list[str] = []
    parts = [f"<h1>boiler-ai report: {html.escape(h.unit or '?')}</h1>",
             f'<p class="note">source {html.escape(source)}; {_utc(t[0])} to {_utc(t[-1])}</p>']
    duration_s = float(np.sum(h.period_s))
    modes = Counter(h.mode)
    summary = [["records", f"{len(t):,} (seq {h.seq_first}..{h.seq_last}, {h.seq_gaps} gap(s))"],
               ["time covered by cycles", f"{duration_s / 3600:,.2f} h"],
               *[[f"time in mode {m}", f"{n / len(t):.1%}"] for m, n in sorted(modes.items())],
               ["models", ", ".join(f"{html.escape(m)} ({n:,} cycles)" for m, n in h.models.most_common())]]
    parts += ["<h2>Summary</h2>", _table(["", ""], summary)]
    if missing:
        parts.append(f'<p class="note">not in these records, left out: {html.escape(", ".join(missing))}</p>')

    parts.append("<h2>Trends</h2>")
    for key, _, label, unit in TRENDS:
        if key in ("main_steam_temp", "reheat_temp"):
            continue
        if opts.signals[key] in known:
            plots.append(trend(t, on, [(label, series[key])], label, unit))
            parts.append(_img(plots[-1], label))
        if key == "efficiency" and np.isfinite(heat_rate).any():
            plots.append(trend(t, on, [("heat rate", heat_rate)], "Heat rate (gross)", "kJ/kWh"))
            parts += [_img(plots[-1], "heat rate"), f'<p class="note">{html.escape(heat_rate_note)}</p>']
    steam = [(label, series[key]) for key, sig, label, _ in TRENDS
             if key in ("main_steam_temp", "reheat_temp") and opts.signals[key] in known]
    if steam:
        plots.append(trend(t, on, steam, "Steam temperatures", "degC"))
        parts.append(_img(plots[-1], "steam temperatures"))

    # AI on against AI off
    metrics = {"boiler efficiency": (series["efficiency"], "percentage points"),
               "heat rate": (heat_rate, "kJ/kWh"), "specific coal": (specific_coal, "t/MWh"),
               "excess O2": (series["o2"], "percentage points"), "CO": (series["co"], "ppm"),
               "NOx": (series["nox"], "mg/Nm3")}
    coal_series = col.get(opts.coal_signal) if opts.coal_signal else None
    diffs, in_matched = compare(h, metrics, load, coal_series, opts.load_bin_mw, opts.coal_bin, opts.block_s,
                                opts.settle_s)
    matched_on = "load" + (f" and {opts.coal_signal}" if opts.coal_signal else "")
    parts.append(f"<h2>AI on against AI off at matched {html.escape(matched_on)}</h2>")
    parts.append(f'<p class="note">blocks of up to {opts.block_s:g} s, load bins of {opts.load_bin_mw:g} MW'
                 + (f", {html.escape(opts.coal_signal)} bins of {opts.coal_bin:g}" if opts.coal_signal else
                    "; not matched on coal (no coal-quality signal given: --coal-signal)")
                 + f"; {opts.settle_s:g} s after each engagement change left out. Differences are AI on minus "
                   "AI off with a 95 % interval.</p>")
    if diffs:
        parts.append(_table(["metric", "AI on", "AI off", "difference", "95 % interval", "unit",
                             "blocks on / off", "strata"],
                            [[d.metric, _fmt(d.on, 3), _fmt(d.off, 3), _fmt(d.diff, 3),
                              f"&plusmn; {_fmt(d.half_width, 3)}", d.unit, f"{d.blocks_on} / {d.blocks_off}",
                              str(d.strata)] for d in diffs]))
    else:
        parts.append('<p class="warn">not enough matched periods: a comparison needs, at the same load, at least '
                     "two blocks with the AI on and two with it off. No difference is estimated.</p>")
    if np.isfinite(series["efficiency"]).any() and np.isfinite(load).any():
        plots.append(scatter_on_off(load, series["efficiency"], on, "Efficiency against load", "%"))
        parts.append(_img(plots[-1], "efficiency against load, AI on and off"))

    parts.append("<h2>Benefit</h2>")
    parts.append(_benefit_table(diffs, h, on & in_matched, load, opts))

    parts.append("<h2>Releases to the DCS by reason</h2>")
    if h.releases:
        parts.append(_table(["reason", "releases"], [[html.escape(r), str(n)] for r, n in h.releases.most_common()]))
        plots.append(bars(h.releases.most_common(), "Releases by reason", "releases"))
        parts.append(_img(plots[-1], "releases by reason"))
    else:
        parts.append("<p>none</p>")

    parts.append("<h2>Time each constraint binds</h2>")
    # an MV whose availability condition is false follows the DCS: not a limit the AI met
    binding = [(n, s) for n, s in h.binding_s.most_common() if not n.endswith(UNAVAILABLE)]
    left = [(n.removesuffix(UNAVAILABLE), s) for n, s in h.binding_s.most_common() if n.endswith(UNAVAILABLE)]
    if binding:
        rows = [[html.escape(n), _fmt(s / 60, 1), f"{s / h.projected_s:.1%}"] for n, s in binding]
        parts.append(_table(["constraint", "minutes binding", "share of projected cycles"], rows))
        plots.append(bars([(n, s / 60) for n, s in binding], "Time binding", "minutes"))
        parts.append(_img(plots[-1], "time each constraint binds"))
    if left:
        parts.append('<p class="note">left to the DCS while unavailable (availability condition false): '
                     + ", ".join(f"{html.escape(n)} {s / 60:,.1f} min" for n, s in left) + "</p>")
    if not binding:
        parts.append(f"<p>no constraint bound ({h.projected_s / 60:,.1f} minutes of projected actions)</p>")

    if opts.shadow:
        parts += _shadow_section(h, t, plots)
    page = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>boiler-ai report {html.escape(h.unit or '')}</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    return page, len(plots)


def _chain(first: dict, rest: Iterable[dict]) -> Iterable[dict]:
    yield first
    yield from rest


def _benefit_table(diffs: list[Difference], h: History, on_matched: np.ndarray, load: np.ndarray,
                   opts: Options) -> str:
    sc = next((d for d in diffs if d.metric == "specific coal"), None)
    period = np.asarray(h.period_s)
    energy_on = float(np.nansum(np.where(on_matched, load, 0.0) * period) / 3600.0)  # MWh, AI on, matched load
    if sc is None:
        return ('<p class="warn">not estimated: no matched AI-on and AI-off periods with coal flow and '
                "load.</p>")
    coal = -sc.diff * energy_on
    half = sc.half_width * energy_on
    hours = float(np.sum(period)) / 3600.0
    rows = []
    for label, factor, unit in (("coal saved", 1.0, "t"), ("CO2 avoided", opts.co2_t_per_t_coal, "t"),
                                ("money saved", opts.coal_price, html.escape(opts.currency))):
        per_year = 8760.0 / hours * factor
        rows.append([label, _fmt(coal * factor, 1), f"&plusmn; {_fmt(half * factor, 1)}", unit,
                     f"{_fmt(coal * per_year, 0)} &plusmn; {_fmt(half * per_year, 0)}"])
    note = (f"over {energy_on:,.1f} MWh generated with the AI on at matched load in this period ({hours:,.2f} h); "
            "specific coal "
            f"{_fmt(sc.off, 4)} t/MWh with the AI off, {_fmt(sc.on, 4)} with it on. CO2 at "
            f"{opts.co2_t_per_t_coal:g} t per t of coal; coal at {opts.coal_price:g} {html.escape(opts.currency)}/t. "
            "The per-year figure assumes a year run like this period.")
    return (_table(["", "this period", "95 % interval", "unit", "per year at this rate"], rows)
            + f'<p class="note">{note}</p>')


def _shadow_section(h: History, t: np.ndarray, plots: list[str]) -> list[str]:
    parts = ["<h2>Shadow: requested against the DCS, per manipulated variable</h2>"]
    requested, dcs = np.asarray(h.requested, dtype=float), np.asarray(h.dcs, dtype=float)
    have = np.isfinite(requested).all(axis=1) & np.isfinite(dcs).all(axis=1) if len(t) else np.array([], bool)
    if h.mvs is None or not have.any():
        return parts + ["<p>no cycle with a requested action in these records</p>"]
    delta = requested[have] - dcs[have]
    rows = [[html.escape(mv), _fmt(float(np.mean(delta[:, k])), 3), _fmt(float(np.mean(np.abs(delta[:, k]))), 3),
             _fmt(float(np.percentile(np.abs(delta[:, k]), 95)), 3), _fmt(float(np.max(np.abs(delta[:, k]))), 3)]
            for k, mv in enumerate(h.mvs)]
    parts.append(f'<p class="note">{int(have.sum()):,} cycles with a requested action; requested minus the '
                 "DCS's own setpoint, in each variable's engineering unit</p>")
    parts.append(_table(["manipulated variable", "mean", "mean |difference|", "95th percentile |difference|",
                         "largest |difference|"], rows))
    plots.append(shadow_plot(t[have], requested[have], dcs[have], h.mvs))
    parts.append(_img(plots[-1], "requested against DCS setpoints"))
    return parts


def write_report(source: str, out: Path, opts: Options, *, unit: str | None = None, start: float | None = None,
                 end: float | None = None) -> int:
    page, n_plots = build_report(records_from(source, unit, start, end), opts, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return n_plots


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a decision log directory, a historian SQLite file, or postgresql://...")
    parser.add_argument("-o", "--output", type=Path, default=Path("report.html"),
                        help="HTML file to write (default: report.html)")
    parser.add_argument("--unit", help="unit id (needed when a database holds several units)")
    parser.add_argument("--from", dest="start", help="first cycle: epoch seconds or ISO 8601 (UTC unless an offset)")
    parser.add_argument("--to", dest="end", help="cycles before this time (same forms as --from)")
    parser.add_argument("--shadow", action="store_true",
                        help="also compare the model's requested actions with the DCS's setpoints, per MV")
    parser.add_argument("--coal-price", type=float, default=100.0, help="price of coal per tonne (default 100)")
    parser.add_argument("--currency", default="USD", help="currency of --coal-price (default USD)")
    parser.add_argument("--coal-hhv-mj-kg", type=float, default=22.0,
                        help="coal higher heating value for the computed heat rate (default 22.0, the reference "
                             "design coal)")
    parser.add_argument("--co2-t-per-t-coal", type=float, default=round(CO2_T_PER_T_COAL, 2),
                        help="t of CO2 per t of coal burnt (default %(default)s: 55.0 %% carbon x 44/12)")
    parser.add_argument("--load-bin-mw", type=float, default=10.0, help="load bin for matching (default 10 MW)")
    parser.add_argument("--coal-signal", help="a coal-quality signal to match on as well (e.g. an online HHV)")
    parser.add_argument("--coal-bin", type=float, default=0.5, help="bin width of --coal-signal (default 0.5)")
    parser.add_argument("--block-s", type=float, default=300.0,
                        help="longest block of one state, the comparison's sample (default 300 s)")
    parser.add_argument("--settle-s", type=float, default=120.0,
                        help="seconds after an engagement change left out of the comparison (default 120)")
    parser.add_argument("--coal-flow-signals", help="comma-separated coal flow signals summed as the coal fired "
                                                    "(default: total_coal_flow_tph, else every mill_*_coal_flow_tph)")
    parser.add_argument("--heat-rate-signal", help="a logged heat-rate signal (kJ/kWh) to use instead of computing it")
    for key, default, label, _ in TRENDS:
        parser.add_argument(f"--{key.replace('_', '-')}-signal", dest=f"{key}_signal", default=default,
                            help=f"{label} signal (default {default})")


def default_options(shadow: bool = False) -> Options:
    """The options `boiler-ai report` runs with when none are given."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["unused-source", *(["--shadow"] if shadow else [])])
    return options_from(args)


def options_from(args: argparse.Namespace) -> Options:
    for name in ("coal_price", "coal_hhv_mj_kg", "co2_t_per_t_coal", "load_bin_mw", "coal_bin", "block_s"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError("command line", f"--{name.replace('_', '-')}", f"must be a positive number, got {value}")
    if not (math.isfinite(args.settle_s) and args.settle_s >= 0):
        raise ConfigError("command line", "--settle-s", f"must be >= 0, got {args.settle_s}")
    opts = Options(
        coal_price=args.coal_price, currency=args.currency, coal_hhv_mj_kg=args.coal_hhv_mj_kg,
        co2_t_per_t_coal=args.co2_t_per_t_coal, load_bin_mw=args.load_bin_mw, coal_bin=args.coal_bin,
        block_s=args.block_s, settle_s=args.settle_s,
        signals={key: getattr(args, f"{key}_signal") for key, *_ in TRENDS},
        coal_flow_signals=[s.strip() for s in args.coal_flow_signals.split(",")] if args.coal_flow_signals else None,
        heat_rate_signal=args.heat_rate_signal, coal_signal=args.coal_signal, shadow=args.shadow)
    return opts


def run(args: argparse.Namespace) -> int:
    opts = options_from(args)
    start, end = parse_time(args.start, "--from"), parse_time(args.end, "--to")
    n_plots = write_report(args.source, args.output, opts, unit=args.unit, start=start, end=end)
    print(f"wrote {args.output} ({n_plots} plots)")
    return 0
