"""`boiler-ai export`: decision records as a training dataset (Parquet or CSV), one row per cycle.

Source: a durable log directory, a historian's SQLite file, or a PostgreSQL DSN. Columns:
  unit_id, seq, wall_time (epoch s), time (UTC timestamp), mode, model_id, release_reason
  <signal>            value as read (NaN when absent or not finite as read)
  <signal>.valid      whether validation accepted it this cycle
  <mv>.requested, <mv>.projected, <mv>.written, <mv>.dcs
                      the actions (null when the record has none that cycle), unless --no-actions
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from boiler_ai.errors import FileAccessError, MissingExtra, UnknownUnit
from boiler_ai.record.log import iter_frames
from boiler_ai.record.schema import decode
from boiler_ai.record.store import is_postgres, open_store
from boiler_ai.strict import ConfigError

ACTIONS = (("requested", "requested"), ("projected", "projected"), ("written", "written"), ("dcs", "u_dcs"))
CHUNK_ROWS = 10000


def parse_time(text: str | None, option: str) -> float | None:
    """Epoch seconds, or ISO 8601 (a time without an offset is taken as UTC)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError("command line", option, f"expected epoch seconds or ISO 8601, got {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def records_from(source: str, unit: str | None, start: float | None, end: float | None) -> Iterator[dict]:
    """Decoded records in seq order from a log directory or a historian database, within [start, end)."""
    if not is_postgres(source) and Path(source).is_dir():
        for _, _, frame in iter_frames(source):
            if (start is None or frame.wall_time >= start) and (end is None or frame.wall_time < end):
                record = decode(frame.payload)
                if unit is not None and record.get("unit_id") != unit:  # a log holds one unit
                    raise UnknownUnit(f"{source}: --unit {unit!r}: this log is unit {record.get('unit_id')!r}")
                yield record
        return
    if not is_postgres(source) and not Path(source).is_file():
        raise ConfigError(source, "", "not a log directory, a SQLite file or a postgresql:// DSN")
    store = open_store(source)
    try:
        units = store.units()
        if unit is None:
            if len(units) != 1:
                raise ConfigError(source, "--unit", f"the database holds units {units}: choose one with --unit")
            unit = units[0]
        elif unit not in units:
            raise UnknownUnit(f"{source}: --unit {unit!r}: not in this database (units: {', '.join(units) or 'none'})")
        for _, text in store.records(unit, start, end):
            yield decode(text)
    finally:
        store.close()


class _Table:
    """Rows gathered column by column, handed to the writer in chunks."""

    def __init__(self, signals: list[str], mvs: list[str], actions: bool):
        self.signals, self.mvs = signals, (mvs if actions else [])
        fields = [("unit_id", "string"), ("seq", "int"), ("wall_time", "float"), ("time", "time"),
                  ("mode", "string"), ("model_id", "string"), ("release_reason", "string")]
        for name in signals:
            fields += [(name, "float"), (f"{name}.valid", "bool")]
        for mv in self.mvs:
            fields += [(f"{mv}.{column}", "float") for column, _ in ACTIONS]
        self.fields = fields
        self.columns: dict[str, list] = {name: [] for name, _ in fields}

    def add(self, record: dict) -> None:
        c = self.columns
        c["unit_id"].append(record["unit_id"])
        c["seq"].append(record["seq"])
        c["wall_time"].append(record["wall_time"])
        c["time"].append(int(round(record["wall_time"] * 1e6)))  # microseconds since the epoch, UTC
        c["mode"].append(record["mode"])
        c["model_id"].append(record["model"]["id"])
        c["release_reason"].append(record["release_reason"])
        block = record["inputs"]
        index = {name: i for i, name in enumerate(block["signals"])}
        issue = block["issue"]
        for name in self.signals:
            i = index.get(name)
            c[name].append(math.nan if i is None else block["value"][i])
            c[f"{name}.valid"].append(None if i is None else name not in issue)
        if self.mvs:
            where = {mv: i for i, mv in enumerate(record["mvs"])}
            for column, key in ACTIONS:
                values = record[key]
                for mv in self.mvs:
                    i = where.get(mv)
                    c[f"{mv}.{column}"].append(None if values is None or i is None else values[i])

    def __len__(self) -> int:
        return len(self.columns["seq"])

    def take(self) -> dict[str, list]:
        taken = self.columns
        self.columns = {name: [] for name, _ in self.fields}
        return taken


def export(records: Iterable[dict], out: Path, fmt: str, *, signals: list[str] | None = None,
           actions: bool = True) -> int:
    """Write the records as a dataset; returns the number of rows. Columns come from the first record."""
    writer_class = _ParquetWriter if fmt == "parquet" else _CsvWriter
    if fmt == "parquet":
        _ParquetWriter.require()  # before reading a months-long log only to fail at the end
    iterator = iter(records)
    first = next(iterator, None)
    if first is None:
        raise ConfigError(out, "", "no records in the chosen source and time range: nothing written")
    known = first["inputs"]["signals"]
    if signals is None:
        signals = list(known)
    unknown = [s for s in signals if s not in known]
    if unknown:
        raise ConfigError("command line", "--signals", f"{unknown[0]!r} is not in the records "
                                                      f"(known: {', '.join(known)})")
    table = _Table(signals, list(first["mvs"]), actions)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = writer_class(out, table.fields)
    except OSError as exc:
        raise FileAccessError(f"{out}: cannot write the output ({exc.strerror or exc})") from None
    rows = 0
    try:
        table.add(first)
        for record in iterator:
            table.add(record)
            if len(table) >= CHUNK_ROWS:
                rows += len(table)
                writer.write(table.take())
        rows += len(table)
        if len(table):
            writer.write(table.take())
    finally:
        writer.close()
    return rows


class _CsvWriter:
    """Plain CSV with the standard library: a header row, then one row per cycle. Floats in their
    shortest exact form (nan, inf as Python writes them), booleans true/false, times ISO 8601 UTC,
    an empty field for null."""

    def __init__(self, out: Path, fields: list[tuple[str, str]]):
        self._file = open(out, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._kinds = [kind for _, kind in fields]
        self._csv.writerow(name for name, _ in fields)

    @staticmethod
    def _text(value, kind: str) -> str:
        if value is None:
            return ""
        if kind == "bool":
            return "true" if value else "false"
        if kind == "time":
            seconds, micros = divmod(value, 1_000_000)
            when = datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=micros)
            return when.isoformat(timespec="microseconds").replace("+00:00", "Z")
        return repr(value) if kind == "float" else str(value)

    def write(self, columns: dict[str, list]) -> None:
        kinds = self._kinds
        self._csv.writerows([self._text(v, k) for v, k in zip(row, kinds)] for row in zip(*columns.values()))

    def close(self) -> None:
        self._file.close()


class _ParquetWriter:
    """Parquet through pyarrow (the `parquet` extra), zstd-compressed, typed columns."""

    @staticmethod
    def require():
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingExtra("export to Parquet", "parquet", "pyarrow") from None
        return pa, pq

    def __init__(self, out: Path, fields: list[tuple[str, str]]):
        pa, pq = self.require()
        types = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(),
                 "time": pa.timestamp("us", tz="UTC"), "bool": pa.bool_()}
        self.pa = pa
        self.schema = pa.schema([(name, types[kind]) for name, kind in fields])
        self._writer = pq.ParquetWriter(out, self.schema, compression="zstd")

    def write(self, columns: dict[str, list]) -> None:
        arrays = [self.pa.array(columns[field.name], type=field.type) for field in self.schema]
        self._writer.write_batch(self.pa.record_batch(arrays, schema=self.schema))

    def close(self) -> None:
        self._writer.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a decision log directory, a historian SQLite file, or postgresql://...")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output file (.parquet or .csv)")
    parser.add_argument("--format", choices=("parquet", "csv"), help="default: from the output's extension")
    parser.add_argument("--unit", help="unit id (needed when a database holds several units)")
    parser.add_argument("--signals", help="comma-separated signal names (default: every input)")
    parser.add_argument("--start",
                        help="first cycle to include: epoch seconds or ISO 8601 (UTC unless an offset is given)")
    parser.add_argument("--end", help="export cycles before this time (same forms as --start)")
    parser.add_argument("--no-actions", action="store_true",
                        help="leave out the requested/projected/written/DCS columns")


def run(args: argparse.Namespace) -> int:
    fmt = args.format or {".parquet": "parquet", ".csv": "csv"}.get(args.output.suffix.lower())
    if fmt is None:
        raise ConfigError("command line", "--format", f"cannot tell the format from {args.output.name}: "
                                                     "use .parquet or .csv, or pass --format")
    signals = [s.strip() for s in args.signals.split(",") if s.strip()] if args.signals else None
    start, end = parse_time(args.start, "--start"), parse_time(args.end, "--end")
    rows = export(records_from(args.source, args.unit, start, end), args.output, fmt,
                  signals=signals, actions=not args.no_actions)
    print(f"wrote {rows} rows to {args.output} ({fmt})")
    return 0
