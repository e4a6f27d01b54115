"""`--help` and the docs agree on every default.

For each subcommand, the parser `boiler-ai` builds (boiler_ai.cli.command_parser) is read for its
defaults: every option with one states it in its help, truly; wherever the README or a doc names the
option with a value as its default (`--hours` (default 4), a usage line's `[--speed 1]`, "port 8650 by
default"), the value is the default; and the example endpoints in help texts use the ports the example
config and the docs use.
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest
from rigs.cycle_rig import ROOT

from boiler_ai.cli import SUBCOMMANDS, DefaultsShown, command_parser, has_default
from boiler_ai.config import load_config

DOCS = [ROOT / "README.md", ROOT / "training" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "deploy").glob("*.md")), *sorted((ROOT / "opc").rglob("*.md"))]
COMMAND = re.compile(r"(?:boiler-ai|python -m boiler_ai) ([a-z]+)")
BRACKETED = re.compile(r"\[(--[a-z][\w-]*)[ =]([^\]\s|]+)\]")  # a usage line's [--speed 1]
STATED = re.compile(r"`?(--[a-z][\w-]*)`?[^.;\n`]{0,12}?\bdefault:?\s+([^\s;,)]+)")  # `--hours` (default 4
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")  # [--seed N], [--pki DIR]
# Defaults said in prose, not next to the option: (command, option, pattern whose group 1 is the value)
PROSE = [("dashboard", "--port", r"on port (\d+) by default"), ("dashboard", "--host", r"binds (\S+) on port \d+ by")]


def parsers() -> dict[str, argparse.ArgumentParser]:
    return {name: command_parser(name, importlib.import_module(module)) for name, (module, _) in SUBCOMMANDS.items()}


PARSERS = parsers()


def options(command: str) -> dict[str, argparse.Action]:
    return {o: a for a in PARSERS[command]._actions for o in a.option_strings}


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = DefaultsShown(parser.prog)
    return formatter._expand_help(action) if action.help else ""


def stated_default(text: str) -> str | None:
    match = re.search(r"\bdefault:?\s+(\S+)", text)
    return None if match is None else match[1].rstrip(".,;:)")


def same(text: str, default) -> bool:
    text = text.rstrip(".,;:)")
    if isinstance(default, bool):
        return False
    if isinstance(default, int | float):
        try:
            return float(text) == float(default)
        except ValueError:
            return False
    return text == str(default) or (isinstance(default, Path) and text == default.name)


def effective_default(command: str, option: str):
    """The option's default; for one that defaults to None, the choice its help names as the default, else
    None (a doc's `[--start 2025-01-01]` is then an example, not a claim)."""
    action = options(command)[option]
    if has_default(action):
        return action.default
    stated = stated_default(help_text(PARSERS[command], action))
    return stated if action.choices and stated in action.choices else None


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_help_states_each_default_truly(command):
    parser = PARSERS[command]
    for action in parser._actions:
        if not has_default(action):
            continue
        text = help_text(parser, action)
        assert "default" in text, f"boiler-ai {command} {action.option_strings[-1]}: --help does not say the default"
        value = stated_default(text)
        # "source: ... (default)" names the default before the word
        ok = same(value, action.default) if value is not None else str(action.default) in text
        assert ok, f"boiler-ai {command} {action.option_strings[-1]}: --help says {text!r}, the default is " \
                   f"{action.default!r}"


def doc_claims() -> list[tuple[str, str, str, str, str]]:
    """(doc, command, option, claimed value, the passage) for every default a doc claims for a command's option;
    a passage belongs to the last command named before it in its paragraph."""
    claims = []
    for doc in DOCS:
        text = doc.read_text()
        for paragraph in re.split(r"\n\s*\n", text):
            commands = [(m.start(), m[1]) for m in COMMAND.finditer(paragraph) if m[1] in SUBCOMMANDS]
            for pattern in (BRACKETED, STATED):
                for match in pattern.finditer(paragraph):
                    before = [name for start, name in commands if start < match.start()]
                    if before and match[1] in options(before[-1]):
                        claims.append((doc.name, before[-1], match[1], match[2], match[0]))
        for command, option, pattern in PROSE:
            claims += [(doc.name, command, option, m[1], m[0]) for m in re.finditer(pattern, text)]
    return claims


def test_the_docs_claim_defaults_for_many_options():
    claimed = {(command, option) for _, command, option, _, _ in doc_claims()}
    assert {("sim", "--endpoint"), ("sim", "--speed"), ("dashboard", "--hours"), ("dashboard", "--nice"),
            ("dashboard", "--port"), ("historian", "--batch")} <= claimed


@pytest.mark.parametrize("doc, command, option, value, passage", doc_claims(),
                         ids=[f"{c[0]}:{c[1]}{c[2]}={c[3]}" for c in doc_claims()])
def test_the_docs_state_the_same_defaults_as_help(doc, command, option, value, passage):
    if PLACEHOLDER.fullmatch(value):
        return  # a placeholder, not a value
    default = effective_default(command, option)
    if default is None:
        return  # no default: the value is an example
    assert same(value, default), \
        f"{doc} says {passage!r} for boiler-ai {command}, whose --help default is {default!r}"


def test_example_endpoints_in_help_use_the_ports_of_the_docs():
    example = load_config(ROOT / "deploy" / "examples" / "reference_unit.yaml").record
    ports = {"--pub": example.publish_endpoint.rpartition(":")[2],
             "--catchup": example.catchup_endpoint.rpartition(":")[2]}
    readme = (ROOT / "README.md").read_text()
    for option, port in ports.items():
        assert f"{option} tcp://EDGE:{port}" in readme
    for command, parser in PARSERS.items():
        for action in parser._actions:
            for option in set(action.option_strings) & ports.keys():
                for shown in re.findall(r"tcp://[^\s,;)]+:(\d+)", help_text(parser, action)):
                    assert shown == ports[option], f"boiler-ai {command} {option} --help shows port {shown}, the " \
                                                   f"docs and the example config {ports[option]}"
