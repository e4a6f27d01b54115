"""`boiler-ai model install|switch|rollback|status CONFIG`: a new model beside the active one, in shadow,
then in control, and back, without the operator losing the permissive.

    install CONFIG MODEL      check MODEL against the unit (tag map, MVs, cycle period) and pin it as the
                              `challenger:` of CONFIG: after a reload the daemon runs it in shadow beside the
                              active model, and every decision record holds what it asked (`challenger`)
    switch CONFIG --sha256 X  the challenger, pinned again by its sha256, becomes the active model; the model
                              it replaces stays as challenger (`previous: true`), still observing
    rollback CONFIG           the previous model back in control (the challenger, if it is the previous one)
    status CONFIG             the active model and the challenger

Each changes only the `model:` and `challenger:` of CONFIG (the rest of the file, comments included, is
kept), checks the result as the daemon will, and replaces the file atomically. Then `systemctl reload
boiler-ai@<unit>` (SIGHUP): the daemon takes the new models between two cycles. The runner of a model
already running keeps its input history, so a switch to the challenger is seamless: no hand-back, no new
AI_ENABLE; the records' `model` changes from that seq on.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import tempfile
from pathlib import Path

from boiler_ai.config import DaemonConfig, load_config
from boiler_ai.strict import ConfigError

RELOAD = "reload the daemon to take it (systemctl reload boiler-ai@<unit>, or kill -HUP its pid)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = actions.add_parser("install", help="check a model and run it as the challenger, in shadow")
    install.add_argument("config", type=Path, help="the daemon config")
    install.add_argument("model", type=Path, help="the model file (e.g. models/<id>/policy.onnx from promote)")
    switch = actions.add_parser("switch", help="make the challenger the active model")
    switch.add_argument("config", type=Path, help="the daemon config")
    switch.add_argument("--sha256", required=True, help="the challenger's sha256, as install printed it")
    rollback = actions.add_parser("rollback", help="the model active before the last switch, back in control")
    rollback.add_argument("config", type=Path, help="the daemon config")
    status = actions.add_parser("status", help="the active model and the challenger")
    status.add_argument("config", type=Path, help="the daemon config")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if cfg.model_path is None:
        raise ConfigError(cfg.source, "mode", "observe mode runs no model: add model: and choose mode: shadow first")
    active = (cfg.model_path, cfg.model_sha256)
    challenger = None if cfg.challenger is None else (cfg.challenger.path, cfg.challenger.sha256)
    if args.action == "status":
        print(describe(cfg))
        return 0
    if args.action == "install":
        model = args.model.resolve()
        sha256 = hashlib.sha256(model.read_bytes()).hexdigest()
        if sha256 == cfg.model_sha256:
            raise ConfigError(model, "", "is the active model already")
        check_fits(cfg, model, sha256)
        rewrite(cfg, active, (model, sha256), previous=False)
        print(f"challenger {model} sha256 {sha256}: {RELOAD}; it runs in shadow beside the active model")
        return 0
    if challenger is None:
        raise ConfigError(cfg.source, "challenger", "there is none: boiler-ai model install CONFIG MODEL first")
    if args.action == "switch":
        if args.sha256 != cfg.challenger.sha256:
            raise ConfigError(cfg.source, "challenger.sha256", f"is {cfg.challenger.sha256}, not the {args.sha256} "
                                                               "given: switch only to the model that ran in shadow")
        rewrite(cfg, challenger, active, previous=True)
        print(f"active {challenger[0]} sha256 {challenger[1]}: {RELOAD}; "
              f"boiler-ai model rollback {args.config} goes back")
        return 0
    if not cfg.challenger.previous:  # rollback
        raise ConfigError(cfg.source, "challenger", "is a new model, not the one active before the last switch "
                                                    "(previous: true): nothing to roll back to")
    rewrite(cfg, challenger, active, previous=False)
    print(f"active {challenger[0]} sha256 {challenger[1]} again: {RELOAD}")
    return 0


def describe(cfg: DaemonConfig) -> str:
    lines = [f"active      {cfg.model_path}  sha256 {cfg.model_sha256}"]
    if cfg.challenger is not None:
        role = "previous" if cfg.challenger.previous else "challenger"
        lines.append(f"{role:<11} {cfg.challenger.path}  sha256 {cfg.challenger.sha256}")
    return "\n".join(lines)


def check_fits(cfg: DaemonConfig, model: Path, sha256: str) -> None:
    """Load it as the daemon will: its contract against this unit's tag map, MVs and cycle period."""
    from boiler_ai.daemon import load_policy
    from boiler_ai.tagmap import load_tag_map

    load_policy(cfg, load_tag_map(cfg.tag_map), model, sha256)


# A top-level key of the daemon config starts a line; its block runs to the next one.
_TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:")


def rewrite(cfg: DaemonConfig, model: tuple[Path, str], challenger: tuple[Path, str], *, previous: bool) -> None:
    """Set `model:` and `challenger:` in the config file, keep every other line, check, replace atomically."""
    path = cfg.source
    blocks = _blocks(path.read_text(encoding="utf-8"))
    model_text = _pin_text("model", path.parent, *model)
    challenger_text = _pin_text("challenger", path.parent, *challenger, previous=previous)
    out, placed = [], False
    for key, text in blocks:
        if key == "model":
            out += [model_text, challenger_text]
            placed = True
        elif key != "challenger":
            out.append(text)
    if not placed:
        raise ConfigError(path, "model", "not found as a top-level key")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(out))
        os.chmod(tmp, path.stat().st_mode & 0o777)
        load_config(tmp)  # what the daemon will read: refused here, not at the reload
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _blocks(text: str) -> list[tuple[str | None, str]]:
    """The file as (top-level key or None, its lines). Comments and blank lines right before a key belong to
    the block before it, so a key's block is only its own lines."""
    blocks: list[tuple[str | None, str]] = [(None, "")]
    for line in text.splitlines(keepends=True):
        match = _TOP_KEY.match(line)
        if match:
            blocks.append((match.group(1), line))
        else:
            key, body = blocks[-1]
            blocks[-1] = (key, body + line)
    for i, (key, body) in enumerate(blocks):  # trailing comments of a replaced block stay in the file
        if key in ("model", "challenger"):
            lines = body.splitlines(keepends=True)
            own = 1
            while own < len(lines) and lines[own][:1] in (" ", "\t"):
                own += 1
            blocks[i] = (key, "".join(lines[:own]))
            if lines[own:]:
                blocks.insert(i + 1, (None, "".join(lines[own:])))
    return blocks


def _pin_text(key: str, base: Path, path: Path, sha256: str, *, previous: bool | None = None) -> str:
    lines = [f"{key}:", f"  path: {os.path.relpath(path, base)}", f"  sha256: {sha256}"]
    if previous:
        lines.append("  previous: true  # active before the last switch: boiler-ai model rollback returns to it")
    return "\n".join(lines) + "\n"
