"""The `boiler-ai` command: wiring only. Each subcommand lives in its own room's module.

A subcommand module provides `add_arguments(parser)` and `run(args) -> int`; it is imported only
when its subcommand is used, so `boiler-ai efficiency` does not pay for ONNX Runtime or asyncua.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from boiler_ai import __version__
from boiler_ai.strict import ConfigError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("boiler_ai.demo", "Run the simulated unit with the daemon, then under the DCS alone; compare"),
    "run": ("boiler_ai.daemon", "Run the controller daemon for one unit (long-running)"),
    "check": ("boiler_ai.check", "Validate a daemon config, tag map, envelope and model (and the server)"),
    "sim": ("boiler_ai.sim.serve", "Serve the simulated reference unit over OPC UA"),
    "efficiency": ("boiler_ai.sim.efficiency_cli", "Boiler efficiency by the heat-loss method from a test sheet"),
    "replay": ("boiler_ai.replay", "Replay a decision log through the controller core and compare"),
    "historian": ("boiler_ai.record.historian", "Subscribe to a unit's decisions and store each exactly once"),
    "export": ("boiler_ai.record.export", "Export logged decisions as a training dataset (Parquet or CSV)"),
    "explain": ("boiler_ai.explain", "One decision in the plant's words: inputs, setpoints, limits, guard, mode"),
    "dashboard": ("boiler_ai.dashboard.app", "Serve a read-only live view of a unit's decisions (separate process)"),
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"usage: boiler-ai [--version] COMMAND [ARGS]\n\n"
             f"boiler-ai {__version__}: combustion optimisation beside the DCS.\n\ncommands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines.append("\n'boiler-ai COMMAND --help' for a command's options.")
    return "\n".join(lines)


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
    module_name, summary = SUBCOMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"boiler-ai {command}", description=summary)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        print(f"boiler-ai {command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
