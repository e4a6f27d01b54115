"""The `boiler-ai` command: wiring only. Each subcommand lives in its own room's module.

A subcommand module provides `add_arguments(parser)` and `run(args) -> int`; it is imported only
when its subcommand is used, so `boiler-ai efficiency` does not pay for ONNX Runtime or asyncua.

Every command logs JSON lines on stderr, set up here once (boiler_ai/logs.py).

Failures an operator can fix end here, for every command alike: one line on stderr naming the
file, field, address or package, exit code 2, no traceback. They are raised as the types in
boiler_ai.errors (ConfigError among them); a missing package and an operating-system error that
no check turned into such a type yet are reported the same way. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from boiler_ai import __version__
from boiler_ai.errors import EXIT_CODE, ExpectedError, MissingExtra
from boiler_ai.logs import setup_logging

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("boiler_ai.demo", "Run the simulated unit with the daemon, then under the DCS alone; compare"),
    "run": ("boiler_ai.daemon", "Run the controller daemon for one unit (long-running)"),
    "check": ("boiler_ai.check", "Validate a daemon config, tag map, envelope and model (and the server)"),
    "sim": ("boiler_ai.sim.serve", "Serve the simulated reference unit over OPC UA"),
    "efficiency": ("boiler_ai.sim.efficiency_cli", "Boiler efficiency by the heat-loss method from a test sheet"),
    "replay": ("boiler_ai.replay", "Replay a decision log through the controller core and compare"),
    "keys": ("boiler_ai.record.curve", "Create the CURVE keys of a unit's decision stream and its subscribers"),
    "historian": ("boiler_ai.record.historian", "Subscribe to a unit's decisions and store each exactly once"),
    "export": ("boiler_ai.record.export", "Export logged decisions as a training dataset (Parquet or CSV)"),
    "explain": ("boiler_ai.explain", "One decision in the plant's words: inputs, setpoints, limits, guard, mode"),
    "dashboard": ("boiler_ai.dashboard.app", "Serve a read-only live view of a unit's decisions (separate process)"),
    "report": ("boiler_ai.report", "Trends, AI on against off, benefit and releases as one HTML file"),
    "evaluate": ("boiler_ai.evaluate", "A policy in closed loop on held-out simulated days against the DCS and oracle"),
    "promote": ("boiler_ai.promote", "Gate a policy on its evaluation; on a pass, install it under models/<id>/"),
    "model": ("boiler_ai.lifecycle", "A new model beside the active one: install (shadow), switch, rollback"),
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"usage: boiler-ai [--version] COMMAND [ARGS]\n\n"
             f"boiler-ai {__version__}: combustion optimisation beside the DCS.\n\ncommands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines.append("\n'boiler-ai COMMAND --help' for a command's options.")
    return "\n".join(lines)


class DefaultsShown(argparse.HelpFormatter):
    """`--help` states every option's default: the ones a help text does not mention get "(default: X)"
    (tests/wiring/test_help_defaults.py holds the stated defaults to the real ones and to the docs)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not has_default(action):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def has_default(action: argparse.Action) -> bool:
    """An option whose default is a value (not absent, not off, not an empty list)."""
    return bool(action.option_strings) and not (action.default is None or action.default is False
                                                or action.default is argparse.SUPPRESS or action.default == [])


def command_parser(command: str, module) -> argparse.ArgumentParser:
    """The parser of one subcommand, from its module's add_arguments."""
    parser = argparse.ArgumentParser(prog=f"boiler-ai {command}", description=SUBCOMMANDS[command][1],
                                     formatter_class=DefaultsShown)
    module.add_arguments(parser)
    for action in parser._actions:
        if action.help is None and has_default(action):
            action.help = "(default: %(default)s)"  # argparse leaves out an option without help text
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"boiler-ai {__version__}")
        return 0
    command = argv[0]
    if command not in SUBCOMMANDS:
        print(f"boiler-ai: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = SUBCOMMANDS[command][0]
    setup_logging("warning")  # every command logs the same way (boiler_ai/logs.py); long-running ones raise it
    try:
        module = importlib.import_module(module_name)
        args = command_parser(command, module).parse_args(argv[1:])
        return int(module.run(args) or 0)
    except ExpectedError as exc:
        return _fail(command, str(exc))
    except ModuleNotFoundError as exc:
        return _fail(command, str(_missing_package(exc, command)))
    except OSError as exc:
        return _fail(command, _os_error(exc))
    except KeyboardInterrupt:
        return 130


# the optional packages, by the extra of setup.cfg that installs them
EXTRAS = {"pyarrow": "parquet", "psycopg": "postgres", "torch": "train", "onnxscript": "train"}


def _missing_package(exc: ModuleNotFoundError, command: str) -> MissingExtra | ExpectedError:
    module = (exc.name or "").partition(".")[0]
    if module in EXTRAS:
        return MissingExtra(f"boiler-ai {command}", EXTRAS[module], module)
    return ExpectedError(f"the Python package {module or exc.name!r} is not installed: reinstall boiler-ai "
                         "(pip install boiler-ai)")


def _os_error(exc: OSError) -> str:
    """One line naming the file or address an unforeseen operating-system error is about."""
    what = exc.filename if exc.filename is not None else ""
    if exc.strerror and what:
        return f"{what}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _fail(command: str, message: str) -> int:
    line = "; ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"boiler-ai {command}: {line}", file=sys.stderr)
    return EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
