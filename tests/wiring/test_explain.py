"""`boiler-ai explain`: a logged decision of the stepped simulated unit told in the plant's words."""

from __future__ import annotations

import dataclasses
import json

import pytest
from rigs.cycle_rig import Rig, follower_config

from boiler_ai import status_codes
from boiler_ai.cli import main
from boiler_ai.explain import load_unit_files, read_record, render, story
from boiler_ai.messages.plant import Reading
from boiler_ai.record.catchup import CatchupService
from boiler_ai.record.log import DurableLog

BAD_SENSOR = 0x808B0000


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """An engaged run with a fuel shift the balance rule refuses and dampers asked to jump past their rate,
    then a bad CO analyser (critical: release), logged through the real durable log."""
    tmp = tmp_path_factory.mktemp("explain")
    config = follower_config(tmp, {"sa_damper_c_pct": 12.0, "feeder_a_bias_tph": 3.0}, mode="closed_loop")
    log = DurableLog(tmp / "log", "reference_unit", fsync="never")
    rig = Rig(config, decision_log=log)
    rig.engage()
    rig.run(3)

    def bad_co(snapshot):
        co = snapshot.readings["co_ppm"]
        return dataclasses.replace(snapshot, readings={**snapshot.readings,
                                                       "co_ppm": Reading(co.value, BAD_SENSOR, co.source_ts)})

    rig.snapshot_hook = bad_co
    rig.run(2)
    log.close()
    return config, tmp / "log", rig.records


def seq_of(records, predicate):
    return next(i for i, r in enumerate(records) if predicate(r))  # the log numbers records from 0


def test_an_engaged_decision_names_each_binding_limit_and_by_how_much(logged):
    config, log_dir, records = logged
    seq = seq_of(records, lambda r: r["mode"] == "active" and r["transition"] is None)
    record = read_record(seq, log_dir=log_dir)
    s = story(record, load_unit_files(config))
    assert s["seq"] == seq and s["mode"] == "active" and s["ai_status"] == status_codes.MODE_CODES["active"]
    by_name = {c["name"]: c for c in s["constraints"]}
    # damper C asked +12 % at once, the rate limit allows 1 %/s x 1 s
    rate = by_name["sa_damper_c_pct:rate_up"]
    k = record["mvs"].index("sa_damper_c_pct")
    assert rate["limit"] == pytest.approx(record["u_prev"][k] + 1.0)
    assert rate["by"] == pytest.approx(record["requested"][k] - record["projected"][k])
    # the 3 t/h shift onto feeder A breaks the fuel balance by exactly 3 t/h
    balance = by_name["coupling:feeder_fuel_balance"]
    assert balance["requested"] == pytest.approx(3.0) and balance["projected"] == pytest.approx(0.0, abs=1e-6)
    assert balance["by"] == pytest.approx(3.0)
    row = next(r for r in s["mvs"] if r["mv"] == "sa_damper_c_pct")
    assert row["unit"] == "%" and row["limits"]["max"] == 100.0 and [c["name"] for c in row["binding"]] == [
        "sa_damper_c_pct:rate_up"]
    text = render(s)
    assert "AI in control" in text and "rate limit (rise)" in text and "feeder_fuel_balance" in text
    assert "Guard: accepted" in text and "Write: ok" in text
    # the process limits' signals are among the inputs that mattered, with their margin
    o2 = next(i for i in s["inputs"] if i["signal"] == "o2_economiser_pct")
    assert "process limit o2_min >= 2 (checked" in o2["why"] and o2["quality"] == "good"


def test_a_release_names_the_bad_input_its_quality_and_the_reason_code(logged):
    _, log_dir, records = logged
    seq = seq_of(records, lambda r: r["release_reason"] is not None)
    s = story(read_record(seq, log_dir=log_dir))  # without the unit's files: the record alone
    assert s["release_reason"]["name"] == "critical_input_invalid"
    assert s["ai_reason"]["code"] == status_codes.BY_NAME["critical_input_invalid"].code
    co = next(i for i in s["inputs"] if i["signal"] == "co_ppm")
    assert co["quality"] == "bad" and co["issue"] == "bad_quality" and co["status_code"] == "0x808B0000"
    text = render(s)
    assert text.splitlines()[2] == "Control handed back to the DCS: Critical measurement bad, stale or out of range."
    assert "co_ppm" in text and "Released because: Critical measurement bad" in text


def test_explain_command_over_catch_up_prints_json(logged, capsys):
    _, log_dir, records = logged
    with DurableLog(log_dir, "reference_unit", fsync="never") as log:
        service = CatchupService(log, "tcp://127.0.0.1:*")
        try:
            assert main(["explain", "latest", "--catchup", service.endpoint, "--json"]) == 0
        finally:
            service.close()
    s = json.loads(capsys.readouterr().out)
    assert s["seq"] == len(records) - 1 and s["unit_id"] == "reference_unit"


@pytest.mark.parametrize("args, says", [
    (["12345"], "seq: no decision 12345 in this log"),
    (["-1"], "SEQ: expected a decision number"),
])
def test_bad_input_is_one_line_and_exit_2(logged, capsys, args, says):
    _, log_dir, _ = logged
    assert main(["explain", *args, "--log", str(log_dir)]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_every_reason_the_daemon_gives_has_one_code_for_the_operator():
    from boiler_ai.messages import Reason

    names = {r.value for r in Reason}
    assert names <= set(status_codes.BY_NAME)
    assert set(status_codes.BY_NAME) - names == {"none", "other"}
    assert status_codes.reason("a_reason_from_a_newer_daemon") is status_codes.OTHER


def test_a_variable_the_operator_took_back_is_named_so(logged):
    _, log_dir, records = logged
    seq = seq_of(records, lambda r: r["mode"] == "active" and r["transition"] is None)
    record = {**read_record(seq, log_dir=log_dir), "handed_back": ["sofa_damper_1_pct"]}
    s = story(record)
    assert [r["mv"] for r in s["mvs"] if r["handed_back"]] == ["sofa_damper_1_pct"]
    line = next(x for x in render(s).splitlines() if x.strip().startswith("sofa_damper_1_pct"))
    assert line.endswith("taken back to the DCS by the operator (its AI enable is off)")
