"""`boiler-ai check CONFIG [--server]`: validate everything the daemon would load, before it runs.

Without --server: the config, the tag map, the envelope (and the guard's own reading of it), the
model (pinned sha256, contract, fit to the tag map, action units and cycle period, shapes), the
security files, and this host: the decision-log directory can be created and written, the metrics,
publish and catch-up addresses can be bound (all at once, so two settings on one port collide here
too), the OPC UA server's host name resolves (boiler_ai/preflight.py, which `run` uses too). With
--server: also connect, check that every mapped node exists with the right type and access, read every
value once and report how the server stamps (timestamps missing, server-only, on change, picosecond
fields, its clock) and what that means for the daemon.
Exit 0 when all is well, 1 when the server check finds problems, 2 for a bad setting.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from boiler_ai.config import OpcUaConfig, load_config
from boiler_ai.control.model_contract import ModelError
from boiler_ai.host import CpuLatencyLimit
from boiler_ai.preflight import preflight, resolve_server, server_keys
from boiler_ai.strict import ConfigError

# The road for a unit without a model of its own (training/README.md has the steps in full).
NO_MODEL_NEXT = (
    "next: run this config (mode: observe) so the unit records its own history from today; run the step\n"
    "      tests of training/README.md; train on `boiler-ai export` of that history; then commission the\n"
    "      model in mode: shadow before closed_loop")
NO_MODEL_ROAD = (
    "  this model does not fit this unit. A unit without a model of its own: remove model: and set\n"
    "  mode: observe to record its history, then train one for it (training/README.md)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="daemon config YAML")
    parser.add_argument("--server", action="store_true",
                        help="also connect to the OPC UA server and verify every mapped node")


def run(args: argparse.Namespace) -> int:
    from boiler_ai.daemon import build_core, make_plant
    from boiler_ai.plant.security import SecurityError, load_credentials

    cfg = load_config(args.config)
    try:
        core = build_core(cfg)
    except ModelError as exc:
        if exc.field in ("input_signals", "action_names"):  # a model of another unit: say what to do instead
            exc.args = (f"{exc.args[0]}\n{NO_MODEL_ROAD}",)
        raise
    preflight(cfg)
    resolve_server(cfg)
    opcua = cfg.plant if isinstance(cfg.plant, OpcUaConfig) else None
    if opcua is not None and opcua.security.secured:
        try:  # certificates readable, valid, matching the application URI
            load_credentials(opcua.security)
        except SecurityError as exc:
            raise ConfigError(cfg.source, "plant.security", str(exc)) from None
    tm = core.tag_map
    policy = core.controller.policy
    print(f"config      {cfg.source}  (hash {core.controller.settings.config_hash[:16]}...)")
    print(f"unit        {cfg.unit}  mode {cfg.mode}  cycle {cfg.cycle_period_s} s")
    print(f"tag map     {tm.source}: {len(tm.signals)} tags, {len(tm.readable)} read, {len(tm.writable)} written")
    if policy is None:
        print(f"model       none (mode {cfg.mode}): reads, validates and records; never writes")
    else:
        print(f"model       {cfg.model_path}: {policy.model_id}, sha256 {cfg.model_sha256[:16]}... "
              f"{len(policy.input_signals)} inputs")
    if core.controller.challenger is not None:
        runner, ref = core.controller.challenger
        print(f"challenger  {cfg.challenger.path}: {runner.model_id}, sha256 {ref.sha256[:16]}... in shadow"
              + ("  (the previous model: boiler-ai model rollback returns to it)" if cfg.challenger.previous else ""))
    if opcua is not None:
        print(f"plant       OPC UA {opcua.endpoint}  security {opcua.security.policy}")
    else:
        print(f"plant       stepped simulated unit, scenario {cfg.plant.scenario}, seed {cfg.plant.seed}")
    print(f"decision log {cfg.record.log_dir}  (writable)")
    listening = [a for a in (cfg.metrics_listen, cfg.record.publish_endpoint, cfg.record.catchup_endpoint) if a]
    print(f"listen      {', '.join(listening) or 'nothing'}  (free on this host)")
    if cfg.record.publish_endpoint or cfg.record.catchup_endpoint:
        keys = server_keys(cfg.record, str(cfg.source))
        print("stream      " + ("in clear to anyone who reaches the ports (record.curve: off)" if keys is None else
                                f"CURVE, {len(keys.authorized)} authorized client keys in {keys.authorized_dir}"))
    with CpuLatencyLimit(cfg.cpu_latency_limit_us) as limit:  # try it as the daemon will, then let go
        latency = ("left to the OS" if limit.limit_us is None else f"{limit.limit_us} us, granted" if limit.held
                   else f"{limit.limit_us} us, NOT granted ({limit.error}): see deploy/99-boiler-ai-cpu-latency.rules")
    print(f"host        cpu latency limit {latency}")
    print(core.envelope.describe())
    if not args.server or opcua is None:
        print("check: files OK" + (" (use --server to check the OPC UA server too)" if opcua is not None else ""))
        if policy is None:
            print(NO_MODEL_NEXT)
        return 0

    async def verify() -> tuple[list[str], list[str]]:
        plant, _ = make_plant(core)
        try:
            await plant.connect()
            problems = await plant.verify()
            lines, stamping = await plant.stamping()
            return lines, problems + stamping
        except ConnectionError as exc:
            return [], [f"cannot connect to {opcua.endpoint}: {exc}"]
        finally:
            await plant.close()

    lines, problems = asyncio.run(verify())
    for line in lines:
        print(f"server {line}")
    for problem in problems:
        print(f"server: {problem}")
    print("check: server OK" if not problems else f"check: {len(problems)} problem(s) on the server")
    if policy is None and not problems:
        print(NO_MODEL_NEXT)
    return 0 if not problems else 1

