"""How 00000000000000000000.seg.gz was written: by the code before the messages room (commit 5667097), so
tests/wiring/test_replay.py proves such logs still decode (and that replaying them against a newer model
is refused). Two daemon runs share the log (a restart between them); the 18-MV bootstrap policy of that
commit runs in closed loop on the stepped reference unit.

    git worktree add /tmp/old 5667097
    PYTHONPATH=/tmp/old python tests/data/decision_log_v1/make_log.py /tmp/old /tmp/oldlog
    gzip -9 -c /tmp/oldlog/log/00000000000000000000.seg > tests/data/decision_log_v1/00000000000000000000.seg.gz
"""

import sys
from pathlib import Path

old, out = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(old / "tests"))
from rigs.cycle_rig import ROOT, Rig, write_config  # noqa: E402

from boiler_ai.record.log import DurableLog  # noqa: E402

model = ROOT / "models" / "bootstrap-bc-v1" / "policy.onnx"
sha = "e502e01fcac04dc69216a83eb7eb671ddc657048f003ba4ba5c2e949091b0ee5"
out.mkdir(parents=True, exist_ok=True)
cfg = write_config(out, model, sha, mode="closed_loop", record={"state_every_cycles": 10})
with DurableLog(out / "log", "reference_unit", fsync="never") as log:
    first = Rig(cfg, scenario="steady_full_load", seed=2, decision_log=log)
    first.unit.set_ai_enable(True)
    first.run(12)
    second = Rig(cfg, scenario="steady_full_load", seed=2, decision_log=log)  # the restarted daemon
    second.unit, second.plant = first.unit, first.plant  # on the same unit
    second.run(10)
print([r["mode"] for r in first.records + second.records])
