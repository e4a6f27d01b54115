"""What every stage of the offline-RL pipeline shares: its artefact folder and how the next stage reads it.

A stage writes into its own folder:
  config.json   the command line it ran with (seed included) and the folders it read
  metrics.json  its figures; the last line it prints is the same object as JSON
  losses.csv    one row per logged step (epoch, round...) of what it minimised
  <data>        what the next stage needs (history.parquet, process_model.pt, policy.pt, policy.onnx)
and `data_sha256` in metrics.json pins the data it produced, so a later stage can say what it was built on.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

from boiler_ai.strict import ConfigError

STAGE_FOLDERS = {"history": "the history stage's folder", "process-model": "the process-model stage's folder",
                 "policy": "the policy stage's folder"}


def stage_parser(doc: str, *reads: str, seed_help: str = "seed (default: 0)") -> argparse.ArgumentParser:
    """A stage's command line: the earlier stages' folders it reads (required), its own --out and --seed."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for stage in reads:
        parser.add_argument(f"--{stage}", type=Path, required=True, help=STAGE_FOLDERS[stage])
    parser.add_argument("--out", type=Path, required=True, help="artefact folder of this stage")
    parser.add_argument("--seed", type=int, default=0, help=seed_help)
    return parser


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Artefacts:
    """One stage's folder: write config first, losses as they come, metrics last."""

    def __init__(self, folder: Path, stage: str, config: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stage = stage
        self.config = {"stage": stage, "argv": sys.argv, "code_commit": _commit(), **config}
        (self.folder / "config.json").write_text(json.dumps(self.config, indent=2, default=str) + "\n")
        self._losses = None
        self._writer = None

    def loss(self, **row) -> None:
        if self._writer is None:
            self._losses = open(self.folder / "losses.csv", "w", newline="")
            self._writer = csv.DictWriter(self._losses, fieldnames=list(row))
            self._writer.writeheader()
        self._writer.writerow(row)
        self._losses.flush()

    def finish(self, metrics: dict) -> dict:
        if self._losses is not None:
            self._losses.close()
        metrics = {"stage": self.stage, **metrics}
        (self.folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics


def _commit() -> str | None:
    """The training code's git commit (with -dirty), or None outside a git checkout."""
    from training.export import ExportError, code_commit

    try:
        return code_commit()
    except ExportError:
        return None


def read_stage(folder: Path, stage: str) -> tuple[dict, dict]:
    """(config, metrics) of an earlier stage's folder, or one clear line saying what is missing."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
    except FileNotFoundError as exc:
        raise ConfigError(folder, "", f"not a finished {stage} stage folder ({Path(exc.filename).name} missing): "
                                      f"run `python -m training.{stage}` first") from None
    if config.get("stage") != stage:
        raise ConfigError(folder, "stage", f"expected a {stage} stage folder, got {config.get('stage')!r}")
    return config, metrics


def run_command(main, name: str) -> None:
    """A training command's `__main__`: an expected failure (bad input) is one line naming what is wrong,
    and exit code 2, as for `boiler-ai` itself; anything else is a bug and keeps its traceback."""
    from boiler_ai.cli import _fail
    from boiler_ai.errors import ExpectedError

    try:
        sys.exit(main())
    except ExpectedError as exc:
        sys.exit(_fail(name, str(exc)))
