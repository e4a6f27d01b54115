"""The subscriber printed in docs/DECISION_RECORD.md works as written against a live decision feed."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from pathlib import Path

from rigs.served import free_port
from rigs.stream_keys import stream_keys

from boiler_ai.record.recorder import Recorder
from boiler_ai.record.synthetic import stamped, synthetic_record

DOC = Path(__file__).resolve().parents[2] / "docs" / "DECISION_RECORD.md"


def documented_subscriber() -> str:
    text = DOC.read_text()
    section = text[text.index("## Writing a subscriber"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_documented_subscriber_backfills_then_follows_live(tmp_path):
    pub, catchup = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    keys = stream_keys(tmp_path / "keys", "historian")  # the documented one talks CURVE, as at a plant
    code = documented_subscriber().replace("tcp://127.0.0.1:5601", pub).replace("tcp://127.0.0.1:5602", catchup)
    code = code.replace('"clients/', f'"{keys.directory}/clients/').replace('"server.key"',
                                                                           f'"{keys.directory}/server.key"')
    rng = random.Random(7)
    with Recorder(tmp_path / "log", "reference_unit", publish_endpoint=pub, catchup_endpoint=catchup,
                  curve=keys.server(), fsync="never") as recorder:
        for k in range(30):  # before the subscriber starts: it must backfill these
            recorder.append(stamped(recorder.log, synthetic_record(rng, unit_id="reference_unit", cycle=k)))
        recorder.log.flush(5)
        subscriber = subprocess.Popen([sys.executable, "-u", "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(1.5)
            for k in range(30, 60):  # live
                recorder.append(stamped(recorder.log, synthetic_record(rng, unit_id="reference_unit", cycle=k)))
                time.sleep(0.01)
            recorder.log.flush(5)
            lines = []
            deadline = time.monotonic() + 20
            while len(lines) < 60 and time.monotonic() < deadline:
                line = subscriber.stdout.readline()
                if line:
                    lines.append(line.split())
        finally:
            subscriber.kill()
            subscriber.wait(10)
    assert [int(parts[0]) for parts in lines] == list(range(60))
