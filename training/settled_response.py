"""Settled responses, part of the process-model stage: the steady effect of the manipulated variables on NOx,
excess O2, total air, the online efficiency tag and hot reheat, from the history's step tests and the
operators' standing trims.

Why beside the next-step ensemble: that ensemble learns one-minute changes and the policy stage rolls it
out eight minutes; it reads the fast part of a response, not the slow one. On the reference unit's history
an O2 bias the operators held for an hour moved hot reheat by +6 degC per % below 400 MW while the
ensemble's rollout says +0.5, and secondary air or over-fire air moved settled NOx the other way round
from the rollout. A policy trained on the rollouts alone took the low-load reheat under its warning.

  * NOx: every step test (an MV jumping by >= 20 % of its allowed deviation in one cycle, held >= 8 min)
    gives one event: the mean over the 5 min before the step and over the last 5 min of the hold. A ridge
    fit of NOx's change (% of its value before) on the MVs' changes and their changes x load, with the
    operating conditions' changes as nuisance terms.
  * Excess O2, total air and the efficiency tag: the same events and fit, on their change in their own
    units. With the O2 bias 1 % lower on the reference unit's history, the ensemble's eight-minute rollout
    ends with 24 t/h less total air and the efficiency tag 0.02 pct-pt lower, where the step tests have
    103 t/h less and 0.075 pct-pt higher (the policy stage's metrics.json, `settled_against_rollout`): the
    learner saw a quarter of the fans' saving and the efficiency tag's gain with the wrong sign.
  * Hot reheat: every standing trim (an MV changed and then held >= 1 h, load within 15 MW) gives its
    change 30-60 min after against the 10 min before; per load band, a gain (degC per unit of the MV)
    through the origin, kept where the trims tell it from zero (|t| >= 3). Main steam is left to the
    ensemble: its sprays hold it (trims of the reference unit moved it by -0.1 to -0.3 degC per % O2 bias),
    while nothing lifts a reheat that the air leaves cold.
Held out as in the ensemble (every fifth episode); the figures say how well each transfers to those days.
Both are linear: the step tests and trims are small moves around the DCS's setting, and the policy's
offsets stay inside the same allowed deviations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from training.history import History

NOX = "nox_mg_nm3"
REHEAT = "reheat_steam_temp_c"
LOAD = "unit_load_mw"
# outputs whose settled step change is fitted in their own units (NOx's in % of its value), where the
# process model predicts them: the objective's fans and efficiency, and the O2 the process limits judge
STEP_OUTPUTS = ("o2_economiser_pct", "total_air_flow_tph", "boiler_efficiency_pct")
STEP_SHARE = 0.2  # a step test: one cycle's jump of at least this share of the MV's allowed deviation
SETTLE_S = 300.0  # averaging window before a step and at the end of its hold
MIN_HOLD_S = 480.0
TRIM_HOLD_S = 3600.0
TRIM_BEFORE_S = 600.0
TRIM_AFTER_S = 1800.0  # a trim's effect is read from here to the end of its hold
TRIM_LOAD_MW = 15.0  # load may drift this much over a trim, or the trim says nothing about the MV
TRIM_STEP = 0.05  # a change of an MV's setpoint smaller than this (its units) is noise, not a trim
LOAD_BAND_EDGES_MW = (400.0, 520.0)  # reheat gains below 400, 400-520 and above 520 MW
MIN_TRIMS = 3
MIN_T = 3.0  # a trim gain kept: |gain / its standard error|; with 15 MVs x 3 bands, |t| > 2 turns up by chance
RIDGE = 1e-3


@dataclass(frozen=True)
class SettledResponse:
    """Settled changes of NOx, the STEP_OUTPUTS and hot reheat for setpoint changes `du` (MV units, [B, n_mv])
    at loads [B]. None (or absent from `step`) where the history has too few step tests or standing trims to
    say, or the process model does not predict the output: the ensemble's rollout stands."""

    mvs: tuple[str, ...]
    nox_pct: np.ndarray | None  # [2 n_mv]: % NOx per unit of each MV, then per unit per 100 MW above load_centre_mw
    load_centre_mw: float
    reheat_c: np.ndarray | None  # [n_bands, n_mv] degC per unit of each MV, per load band
    step: dict[str, np.ndarray] = field(default_factory=dict)  # output -> [2 n_mv] as nox_pct, in its own units

    @property
    def outputs(self) -> tuple[str, ...]:
        """The outputs this response moves."""
        return ((NOX,) if self.nox_pct is not None else ()) + tuple(self.step) + \
            ((REHEAT,) if self.reheat_c is not None else ())

    def nox_change_pct(self, du: np.ndarray, load: np.ndarray) -> np.ndarray:
        return self._linear(self.nox_pct, du, load)

    def step_change(self, output: str, du: np.ndarray, load: np.ndarray) -> np.ndarray:
        return self._linear(self.step[output], du, load)

    def _linear(self, gains: np.ndarray, du: np.ndarray, load: np.ndarray) -> np.ndarray:
        lf = ((load - self.load_centre_mw) / 100.0)[:, None]
        return np.column_stack([du, du * lf]) @ gains

    def reheat_change_c(self, du: np.ndarray, load: np.ndarray) -> np.ndarray:
        band = np.searchsorted(LOAD_BAND_EDGES_MW, load, side="right")
        return np.einsum("bm,bm->b", du, self.reheat_c[band])

    def to_json(self) -> dict:
        n = len(self.mvs)
        nox = None if self.nox_pct is None else {"per_unit": _round(self.nox_pct[:n]),
                                                 "per_unit_per_100mw": _round(self.nox_pct[n:])}
        reheat = None if self.reheat_c is None else [_round(row) for row in self.reheat_c]
        step = {o: {"per_unit": _round(g[:n]), "per_unit_per_100mw": _round(g[n:])} for o, g in self.step.items()}
        return {"mvs": list(self.mvs), "nox_pct": nox, "load_centre_mw": round(self.load_centre_mw, 3),
                "load_band_edges_mw": list(LOAD_BAND_EDGES_MW), "reheat_c_per_unit": reheat, "step": step}

    @classmethod
    def from_json(cls, blob: dict) -> SettledResponse:
        def gains(g: dict) -> np.ndarray:
            return np.array(g["per_unit"] + g["per_unit_per_100mw"], dtype=float)

        nox, reheat = blob["nox_pct"], blob["reheat_c_per_unit"]
        return cls(tuple(blob["mvs"]), None if nox is None else gains(nox), float(blob["load_centre_mw"]),
                   None if reheat is None else np.array(reheat, dtype=float),
                   {o: gains(g) for o, g in blob.get("step", {}).items()})  # older folders: NOx and reheat only


def fit_settled_response(history: History, cols: dict[str, np.ndarray], mvs: tuple[str, ...],
                         conditions: tuple[str, ...], max_dev: np.ndarray,
                         held_out: np.ndarray) -> tuple[SettledResponse, dict]:
    """(the response, its figures on the held-out rows). `cols` is the process model's frame (setpoints in
    force, conditions by name); `held_out` marks the rows the process model holds out."""
    u = np.column_stack([cols[m] for m in mvs])
    steps = _step_events(history, cols, conditions, u, max_dev, held_out)
    n_mv = len(mvs)
    centre = float(np.mean(steps["load"][~steps["held"]])) if (~steps["held"]).any() else 0.0
    lf = ((steps["load"] - centre) / 100.0)[:, None]
    x = np.column_stack([steps["du"], steps["du"] * lf, steps["dc"], np.ones(len(lf))])
    train, held = ~steps["held"], steps["held"]
    nox_pct, step = None, {}
    figures = {"step_events": int(train.sum()), "step_events_held_out": int(held.sum())}
    if train.sum() > x.shape[1]:
        for output, y in [(NOX, steps["nox_pct"]), *steps["changes"].items()]:
            w = _ridge(x[train], y[train])
            if output == NOX:
                nox_pct = w[:2 * n_mv]
            else:
                step[output] = w[:2 * n_mv]
            if held.sum() > 2:
                err = y[held] - x[held] @ w
                key = "nox_held_out_r2" if output == NOX else f"{output}_held_out_r2"
                figures[key] = round(1.0 - float(np.mean(err ** 2) / np.var(y[held])), 4)
    trims = _standing_trims(history, cols, u, held_out)
    bands = len(LOAD_BAND_EDGES_MW) + 1
    reheat, t_stat = np.zeros((bands, n_mv)), np.zeros((bands, n_mv))
    counts = np.zeros((bands, n_mv), int)
    for m in range(n_mv):
        for b in range(bands):
            rows = (trims["mv"] == m) & ~trims["held"] & (trims["band"] == b)
            counts[b, m] = rows.sum()
            if counts[b, m] >= MIN_TRIMS:
                reheat[b, m], t_stat[b, m] = _gain_through_zero(trims["du"][rows], trims["d_reheat"][rows])
        known = np.flatnonzero(counts[:, m] >= MIN_TRIMS)
        for b in range(bands):  # a band without trims borrows the nearest band's gain
            if counts[b, m] < MIN_TRIMS and len(known):
                near = known[np.argmin(np.abs(known - b))]
                reheat[b, m], t_stat[b, m] = reheat[near, m], t_stat[near, m]
    reheat[np.abs(t_stat) < MIN_T] = 0.0
    response = SettledResponse(tuple(mvs), nox_pct, centre, reheat if reheat.any() else None, step)
    figures["standing_trims"] = {mv: {"trims_per_band": counts[:, m].tolist(), "gain_c_per_unit": _round(reheat[:, m]),
                                      "t": _round(t_stat[:, m])} for m, mv in enumerate(mvs) if counts[:, m].any()}
    # the held-out days' own gains, where they have trims: what the fitted gains should come close to
    held_gains = {}
    for m, mv in enumerate(mvs):
        if response.reheat_c is None or not response.reheat_c[:, m].any():
            continue
        per_band = [(trims["mv"] == m) & trims["held"] & (trims["band"] == b) for b in range(bands)]
        held_gains[mv] = {"trims_per_band": [int(rows.sum()) for rows in per_band], "gain_c_per_unit": [
            round(_gain_through_zero(trims["du"][rows], trims["d_reheat"][rows])[0], 3) if rows.sum() >= 2 else None
            for rows in per_band]}
    figures["reheat_held_out"] = held_gains
    return response, figures


def _gain_through_zero(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(least-squares gain of y on x through the origin, its t statistic)."""
    gain = float(x @ y / (x @ x))
    res = y - gain * x
    se = math.sqrt(max(res @ res, 1e-12) / max(len(x) - 1, 1) / (x @ x))
    return gain, gain / se


def _step_events(history: History, cols, conditions, u: np.ndarray, max_dev: np.ndarray, held_out) -> dict:
    ep, n = history.episode, len(history.episode)
    w, hold = round(SETTLE_S / history.cycle_s), round(MIN_HOLD_S / history.cycle_s)
    jump = np.zeros(n, bool)
    jump[1:] = (np.abs(np.diff(u, axis=0)) >= STEP_SHARE * max_dev).any(axis=1) & (ep[1:] == ep[:-1])
    events = np.flatnonzero(jump)
    ends = np.searchsorted(ep, ep, side="right")  # first row after each row's episode
    conditions = [c for c in conditions if c != LOAD]
    mills = [j for j, k in enumerate(conditions) if k.endswith("_in_service")]
    c = np.column_stack([cols[k] for k in conditions])
    nox, load = cols[NOX], cols[LOAD]
    others = {o: cols[o] for o in STEP_OUTPUTS if o in cols}
    rows = {"du": [], "dc": [], "nox_pct": [], "load": [], "held": [], **{o: [] for o in others}}
    for a, i in enumerate(events):
        prev = events[a - 1] if a else -n
        end = min(events[a + 1] if a + 1 < len(events) else n, ends[i])
        if i - prev < w or end - i < hold or i < w or ep[i - w] != ep[i]:
            continue
        before, after = slice(i - w, i), slice(end - w, end)
        du = np.nanmean(u[after], axis=0) - np.nanmean(u[before], axis=0)
        dc = np.nanmean(c[after], axis=0) - np.nanmean(c[before], axis=0)
        n0 = np.nanmean(nox[before])
        changes = {o: np.nanmean(v[after]) - np.nanmean(v[before]) for o, v in others.items()}
        if (not (np.isfinite(du).all() and np.isfinite(dc).all() and np.isfinite(n0)) or n0 <= 0
                or not all(map(np.isfinite, changes.values()))
                or np.abs(dc[mills]).sum() > 1e-6):  # a mill started or stopped
            continue
        for o, change in changes.items():
            rows[o].append(change)
        rows["du"].append(du)
        rows["dc"].append(dc)
        rows["nox_pct"].append(100.0 * (np.nanmean(nox[after]) / n0 - 1.0))
        rows["load"].append(np.nanmean(load[before]))
        rows["held"].append(held_out[i])
    n_mv, n_c = u.shape[1], c.shape[1]
    return {"du": np.reshape(rows["du"], (-1, n_mv)), "dc": np.reshape(rows["dc"], (-1, n_c)),
            "nox_pct": np.asarray(rows["nox_pct"], float), "load": np.asarray(rows["load"], float),
            "held": np.asarray(rows["held"], bool), "changes": {o: np.asarray(rows[o], float) for o in others}}


def _standing_trims(history: History, cols, u: np.ndarray, held_out) -> dict:
    ep, n = history.episode, len(history.episode)
    before_n, after_n, hold_n = (round(s / history.cycle_s) for s in (TRIM_BEFORE_S, TRIM_AFTER_S, TRIM_HOLD_S))
    reheat, load = cols[REHEAT], cols[LOAD]
    rows = {"mv": [], "du": [], "d_reheat": [], "load": [], "band": [], "held": []}
    for m in range(u.shape[1]):
        changed = np.flatnonzero(np.abs(np.diff(u[:, m])) > TRIM_STEP) + 1
        for i in changed:
            if i < before_n or i + hold_n >= n or ep[i - before_n] != ep[i + hold_n]:
                continue
            if np.nanmax(np.abs(u[i:i + hold_n, m] - u[i, m])) > 0.01:
                continue  # not held: a step test that reverts, or a schedule
            before, after = slice(i - before_n, i), slice(i + after_n, i + hold_n)
            l0 = np.nanmean(load[before])
            if abs(np.nanmean(load[after]) - l0) > TRIM_LOAD_MW:
                continue
            d_reheat = np.nanmean(reheat[after]) - np.nanmean(reheat[before])
            if not np.isfinite(d_reheat):
                continue
            rows["mv"].append(m)
            rows["du"].append(u[i, m] - u[i - 1, m])
            rows["d_reheat"].append(d_reheat)
            rows["load"].append(l0)
            rows["band"].append(int(np.searchsorted(LOAD_BAND_EDGES_MW, l0, side="right")))
            rows["held"].append(held_out[i])
    return {k: np.asarray(v, dtype=bool if k == "held" else int if k in ("mv", "band") else float)
            for k, v in rows.items()}


def _ridge(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ridge on standardised columns (the constant column is left unscaled), in the columns' own units."""
    s = x.std(axis=0)
    s = np.where(s > 1e-12, s, 1.0)
    xs = x / s
    return np.linalg.solve(xs.T @ xs + RIDGE * np.eye(x.shape[1]), xs.T @ y) / s


def _round(values) -> list[float]:
    return [round(float(v), 5) for v in values]
