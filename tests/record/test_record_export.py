"""`boiler-ai export`: a log directory or a historian database to Parquet/CSV, values exactly as logged."""

import math
import random
import struct

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from boiler_ai.cli import main
from boiler_ai.record.export import export, parse_time, records_from
from boiler_ai.record.log import DurableLog, iter_frames
from boiler_ai.record.store import SqliteStore
from boiler_ai.record.synthetic import signal_names, stamped, synthetic_record
from boiler_ai.strict import ConfigError

SIGNALS = signal_names(12)
T0 = 1_732_406_400.0  # 2024-11-24T00:00:00Z


@pytest.fixture
def logged(tmp_path):
    """40 cycles, one a second from T0, every fifth with NaN/inf/absent inputs; returns (log dir, records)."""
    rng = random.Random(5)
    directory = tmp_path / "log"
    records = []
    with DurableLog(directory, "unit1", fsync="never") as log:
        for i in range(40):
            record = synthetic_record(rng, cycle=i, wall_time=T0 + i, signals=SIGNALS, nan_input=i % 5 == 0)
            log.append(stamped(log, record))
            records.append(record)
    return directory, records


def bits(values):
    return [None if v is None else struct.pack("<d", v) for v in values]


def test_parquet_from_a_log_directory_round_trips_exactly(tmp_path, logged):
    directory, records = logged
    out = tmp_path / "all.parquet"
    assert main(["export", str(directory), "-o", str(out)]) == 0
    table = pq.read_table(out)
    assert table.column("seq").to_pylist() == list(range(40))
    assert table.column("wall_time").to_pylist() == [r["wall_time"] for r in records]
    assert table.column("time").to_pylist()[1].isoformat() == "2024-11-24T00:00:01+00:00"
    assert table.column("mode").to_pylist() == [r["mode"] for r in records]
    for i, name in enumerate(SIGNALS):
        assert bits(table.column(name).to_pylist()) == bits([r["inputs"]["value"][i] for r in records]), name
        assert table.column(f"{name}.valid").to_pylist() == [name not in r["inputs"]["issue"] for r in records]
    mv = records[0]["mvs"][3]
    assert table.column(f"{mv}.requested").to_pylist() == [r["requested"][3] for r in records]
    assert table.column(f"{mv}.written").to_pylist() == [None if r["written"] is None else r["written"][3]
                                                         for r in records]
    assert table.column(f"{mv}.dcs").to_pylist() == [r["u_dcs"][3] for r in records]


def test_csv_from_a_historian_database_with_chosen_signals_and_time_range(tmp_path, logged):
    directory, records = logged
    store = SqliteStore(tmp_path / "h.sqlite")
    store.save("unit1", "abc", [(f.seq, f.wall_time, f.payload.decode()) for _, _, f in iter_frames(directory)], [])
    store.close()
    out = tmp_path / "slice.csv"
    chosen = [SIGNALS[0], SIGNALS[7]]
    assert main(["export", str(tmp_path / "h.sqlite"), "-o", str(out), "--signals", ",".join(chosen),
                 "--start", "2024-11-24T00:00:10", "--end", str(T0 + 20), "--no-actions"]) == 0
    table = pacsv.read_csv(out, convert_options=pacsv.ConvertOptions(null_values=[""]))
    assert table.column("seq").to_pylist() == list(range(10, 20))
    assert [c for c in table.column_names if "." in c] == [f"{SIGNALS[0]}.valid", f"{SIGNALS[7]}.valid"]
    for name, i in ((SIGNALS[0], 0), (SIGNALS[7], 7)):
        want = [records[k]["inputs"]["value"][i] for k in range(10, 20)]
        got = table.column(name).to_pylist()
        assert [math.isnan(v) for v in got] == [math.isnan(v) for v in want]
        assert [v for v in got if not math.isnan(v)] == [v for v in want if not math.isnan(v)]  # shortest repr


def test_bad_requests_name_what_is_wrong(tmp_path, logged, capsys):
    directory, _ = logged
    assert main(["export", str(directory), "-o", str(tmp_path / "x.parquet"), "--signals", "no_such_tag"]) == 2
    assert "--signals" in capsys.readouterr().err
    assert main(["export", str(directory), "-o", str(tmp_path / "x.txt")]) == 2
    assert "--format" in capsys.readouterr().err
    assert main(["export", str(directory), "-o", str(tmp_path / "x.csv"), "--start", "yesterday"]) == 2
    assert "--start" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.csv")]) == 2
    assert "not a log directory" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no records"):
        export(records_from(str(directory), None, T0 + 1000, None), tmp_path / "empty.csv", "csv")


def test_database_with_several_units_needs_unit(tmp_path, logged):
    directory, _ = logged
    store = SqliteStore(tmp_path / "h.sqlite")
    rows = [(f.seq, f.wall_time, f.payload.decode()) for _, _, f in iter_frames(directory)]
    store.save("unit1", "abc", rows, [])
    store.save("unit2", "def", rows[:3], [])
    store.close()
    with pytest.raises(ConfigError, match="choose one with --unit"):
        list(records_from(str(tmp_path / "h.sqlite"), None, None, None))
    assert len(list(records_from(str(tmp_path / "h.sqlite"), "unit2", None, None))) == 3


def test_time_forms():
    assert parse_time("1732406400", "--start") == T0
    assert parse_time("2024-11-24T00:00:00", "--start") == T0
    assert parse_time("2024-11-24T08:00:00+08:00", "--start") == T0
    assert parse_time(None, "--end") is None
