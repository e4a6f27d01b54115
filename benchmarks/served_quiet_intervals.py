"""How long each analog of the tag map keeps its served value on a server that rounds and deadbands.

A server that stamps only on change keeps the timestamp of a value that sits inside its deadband, so a
tag's `stale_s` must exceed the longest such quiet interval (opc/reference_unit.yaml states the rule).
This steps the simulated unit through a scenario and shapes every analog the way the simulator's server
does with `--analog-decimals` and `--analog-deadband`, without a network. Prints each analog's longest
quiet interval beside its stale_s and frozen_s; the last line is JSON: {"quiet_s": {tag: s}, ...}.

    python benchmarks/served_quiet_intervals.py [--scenario agc_day_24h] [--seconds 30000]
                                                [--decimals 2] [--deadband 0.05] [--seed 1]
"""

from __future__ import annotations

import argparse
import json

from boiler_ai.plant.opcua_server import TagServer, VendorHabits
from boiler_ai.sim.scenario import SCENARIOS, named_scenario
from boiler_ai.sim.unit import ReferenceUnit, default_tag_map_path
from boiler_ai.tagmap import load_tag_map

ANALOG = ("Float", "Double")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="agc_day_24h")
    parser.add_argument("--seconds", type=int, default=30000, help="simulated seconds (default 30000)")
    parser.add_argument("--decimals", type=int, default=2)
    parser.add_argument("--deadband", type=float, default=0.05, help="percent of range (default 0.05)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    tag_map = load_tag_map(default_tag_map_path())
    server = TagServer(tag_map, "opc.tcp://127.0.0.1:0",
                       habits=VendorHabits("on-change", args.deadband, args.decimals))
    unit = ReferenceUnit(scenario=named_scenario(args.scenario, args.seed), seed=args.seed, tag_map=tag_map)
    analogs = [s for s in tag_map.signals.values() if s.readable and s.data_type in ANALOG]
    served: dict[str, float] = {}
    changed_at: dict[str, int] = {}
    quiet = dict.fromkeys((s.name for s in analogs), 0)
    for t in range(args.seconds):
        unit.step(1.0)
        values = unit.values()
        for spec in analogs:
            value = server._analog(spec, values[spec.name], served.get(spec.name))
            if served.get(spec.name) != value:
                served[spec.name], changed_at[spec.name] = value, t
            quiet[spec.name] = max(quiet[spec.name], t - changed_at[spec.name])
    print(f"{args.scenario}, seed {args.seed}, {args.seconds} s, analogs at {args.decimals} decimals, "
          f"deadband {args.deadband:g} % of range")
    print(f"{'tag':32s} {'longest quiet (s)':>18s} {'stale_s':>8s} {'frozen_s':>9s}")
    for spec in analogs:
        flag = "  <- over stale_s" if spec.stale_s and quiet[spec.name] >= spec.stale_s else ""
        print(f"{spec.name:32s} {quiet[spec.name]:18d} {spec.stale_s:8g} {spec.frozen_s or 0:9g}{flag}")
    judged = {s.name: quiet[s.name] for s in analogs if s.stale_s > 0}
    print(json.dumps({"quiet_s": quiet, "longest_judged_s": max(judged.values(), default=0),
                      "over_stale_s": sorted(n for n in judged if judged[n] >= tag_map.signals[n].stale_s)}))


if __name__ == "__main__":
    main()
