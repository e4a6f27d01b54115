"""Training datasets for setpoint policies, built from rows of signal values, one row per control cycle.

A row is a mapping of logical tag-map names to values: a `ReferenceUnit.values()` from the simulator
today, a logged decision's validated inputs tomorrow. `build_dataset` stacks `history` consecutive
rows into one input, oldest first (the layout of the model contract), and takes as target each
manipulated variable's DCS setpoint `lead` cycles after the newest row. A `None` row, or a row that
lacks a needed signal or holds NaN/inf, breaks the sequence: no sample spans it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from boiler_ai.tagmap import TagMap


def observation_signals(tag_map: TagMap) -> list[str]:
    """What a policy may look at: every readable process signal and the DCS's own setpoints, in tag-map
    order. Not the handshake (the state machine's business) nor the AI setpoints (our own echo)."""
    excluded = set(tag_map.handshake.values()) | {mv.ai_setpoint for mv in tag_map.manipulated.values()}
    return [name for name, spec in tag_map.signals.items() if spec.readable and name not in excluded]


@dataclass(frozen=True)
class Dataset:
    input_signals: tuple[str, ...]
    action_names: tuple[str, ...]
    history: int
    lead: int
    x: np.ndarray  # [N, history * n_inputs] engineering units, oldest cycle first
    y: np.ndarray  # [N, n_actions] DCS setpoints `lead` cycles after the newest input cycle
    source: np.ndarray  # [N] int: which row sequence (episode) each sample came from

    def __len__(self) -> int:
        return len(self.y)

    def sha256(self) -> str:
        """Hash of the layout and every number, so a model card pins exactly what it was trained on."""
        head = json.dumps({"input_signals": self.input_signals, "action_names": self.action_names,
                           "history": self.history, "lead": self.lead, "shape": [len(self), self.x.shape[1]]})
        h = hashlib.sha256(head.encode())
        h.update(np.ascontiguousarray(self.x, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(self.y, dtype="<f8").tobytes())
        return h.hexdigest()

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(self.input_signals, self.action_names, self.history, self.lead,
                       self.x[mask], self.y[mask], self.source[mask])


def build_dataset(rows: Iterable[Mapping[str, float] | None], *, input_signals: Sequence[str],
                  targets: Mapping[str, str], history: int, lead: int = 1, source: int = 0) -> Dataset:
    """Samples from one sequence of rows at the cycle period. `targets`: action name -> signal whose
    value is the target (the MV's DCS setpoint). `source` tags the samples (e.g. the episode number)."""
    if history < 1 or lead < 1:
        raise ValueError(f"history and lead must be >= 1, got {history}, {lead}")
    input_signals, action_names = tuple(input_signals), tuple(targets)
    columns = [*input_signals, *targets.values()]
    n_in = len(input_signals)
    table = np.array([_row(r, columns) for r in rows], dtype=np.float64).reshape(-1, len(columns))
    good = np.isfinite(table).all(axis=1)

    n_samples = len(table) - history - lead + 1
    if n_samples <= 0:
        x, y, keep = np.empty((0, history * n_in)), np.empty((0, len(action_names))), np.empty(0, bool)
    else:
        # Sample i uses rows i .. i+history-1 as inputs and row i+history-1+lead as the target:
        # every row in that span must be good, so a gap or a bad row never sits inside a sample.
        span = history + lead
        good_run = np.lib.stride_tricks.sliding_window_view(good, span).all(axis=1)
        windows = np.lib.stride_tricks.sliding_window_view(table[:, :n_in], (history, n_in))[:n_samples, 0]
        x = windows.reshape(n_samples, history * n_in)
        y = table[history - 1 + lead:, n_in:]
        keep = good_run[:n_samples]
    return Dataset(input_signals, action_names, history, lead, np.ascontiguousarray(x[keep]),
                   np.ascontiguousarray(y[keep]), np.full(int(keep.sum()), source, dtype=np.int64))


def concat(parts: Sequence[Dataset]) -> Dataset:
    first = parts[0]
    layout = (first.input_signals, first.action_names, first.history, first.lead)
    if any((p.input_signals, p.action_names, p.history, p.lead) != layout for p in parts):
        raise ValueError("datasets with different layouts cannot be joined")
    return Dataset(*layout, np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                   np.concatenate([p.source for p in parts]))


def _row(row: Mapping[str, float] | None, columns: Sequence[str]) -> list[float]:
    if row is None:
        return [np.nan] * len(columns)
    return [float(row.get(c, np.nan)) for c in columns]
