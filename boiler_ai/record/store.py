"""Where the historian keeps decision records: SQLite (embedded default) or PostgreSQL (psycopg 3).

Tables (the same in both):
  decisions(unit_id, seq, wall_time, record)   primary key (unit_id, seq): each record stored once;
                                               `record` is the wire payload as text (JSON)
  lost_ranges(unit_id, first_seq, last_seq, reason, noted_at)
                                               seqs the unit's log no longer holds (dropped at the
                                               source, or removed by retention before we got them)
  sources(unit_id, log_id, updated_at)         which log the seqs belong to
  conflicts(unit_id, seq, record, noted_at)    a record offered for a seq already stored with different
                                               content: never stored in decisions (the first stays)
Everything a batch brings (records, lost ranges, log id) is committed in one transaction, so after
a crash the store resumes from max(seq) with nothing half-written.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from boiler_ai.errors import CannotConnect, FileAccessError, MissingExtra

Row = tuple[int, float, str]  # seq, wall_time, record (JSON text)
Lost = tuple[int, int, str]  # first_seq, last_seq, reason


class Store(Protocol):
    def resume_point(self, unit_id: str) -> tuple[int | None, str | None]:
        """(max seq stored, log id) for the unit, or (None, None) when nothing is stored yet."""

    def save(self, unit_id: str, log_id: str, rows: Sequence[Row], lost: Sequence[Lost]) -> list[int]:
        """Store rows and lost ranges in one transaction. A row whose seq is stored already is skipped when
        identical, else put in `conflicts`; returns the seqs of those conflicts."""

    def units(self) -> list[str]: ...

    def count(self, unit_id: str) -> int: ...

    def lost_ranges(self, unit_id: str) -> list[Lost]: ...

    def conflicts(self, unit_id: str) -> list[tuple[int, str]]:
        """(seq, record offered and refused) for every conflict, in seq order."""

    def records(self, unit_id: str, start: float | None, end: float | None) -> Iterator[tuple[int, str]]:
        """(seq, record text) with start <= wall_time < end, in seq order."""

    def close(self) -> None: ...


def is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


def open_store(db: str) -> Store:
    """A PostgreSQL DSN (postgresql://...) or a SQLite file path."""
    return PostgresStore(db) if is_postgres(db) else SqliteStore(Path(db))


_TABLES = (
    "CREATE TABLE IF NOT EXISTS decisions (unit_id TEXT NOT NULL, seq {int} NOT NULL, wall_time {real} NOT NULL,"
    " record TEXT NOT NULL, PRIMARY KEY (unit_id, seq)){suffix}",
    "CREATE INDEX IF NOT EXISTS decisions_time ON decisions (unit_id, wall_time)",
    "CREATE TABLE IF NOT EXISTS lost_ranges (unit_id TEXT NOT NULL, first_seq {int} NOT NULL, last_seq {int} NOT NULL,"
    " reason TEXT NOT NULL, noted_at {real} NOT NULL, PRIMARY KEY (unit_id, first_seq))",
    "CREATE TABLE IF NOT EXISTS sources (unit_id TEXT PRIMARY KEY, log_id TEXT NOT NULL, updated_at {real} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS conflicts (unit_id TEXT NOT NULL, seq {int} NOT NULL, record TEXT NOT NULL,"
    " noted_at {real} NOT NULL)",
)


class _SqlStore:
    """The SQL both databases share; subclasses set the placeholder style and the upsert wording."""

    conn: object
    ph = "?"

    def _ddl(self, int_type: str, real_type: str, suffix: str) -> list[str]:
        return [t.format(int=int_type, real=real_type, suffix=suffix) for t in _TABLES]

    def _sql(self, text: str) -> str:
        return text.replace("?", self.ph)

    def resume_point(self, unit_id):
        cur = self.conn.execute(self._sql("SELECT max(seq) FROM decisions WHERE unit_id = ?"), (unit_id,))
        (max_seq,) = cur.fetchone()
        cur = self.conn.execute(self._sql("SELECT log_id FROM sources WHERE unit_id = ?"), (unit_id,))
        row = cur.fetchone()
        return max_seq, (row[0] if row else None)

    def units(self):
        cur = self.conn.execute("SELECT DISTINCT unit_id FROM decisions ORDER BY unit_id")
        out = [r[0] for r in cur.fetchall()]
        return out

    def count(self, unit_id):
        cur = self.conn.execute(self._sql("SELECT count(*) FROM decisions WHERE unit_id = ?"), (unit_id,))
        (n,) = cur.fetchone()
        return n

    def lost_ranges(self, unit_id):
        cur = self.conn.execute(self._sql("SELECT first_seq, last_seq, reason FROM lost_ranges WHERE unit_id = ?"
                                          " ORDER BY first_seq"), (unit_id,))
        out = [tuple(r) for r in cur.fetchall()]
        return out

    def conflicts(self, unit_id):
        cur = self.conn.execute(self._sql("SELECT seq, record FROM conflicts WHERE unit_id = ? ORDER BY seq, noted_at"),
                                (unit_id,))
        return [tuple(r) for r in cur.fetchall()]

    def records(self, unit_id, start, end):
        sql = "SELECT seq, record FROM decisions WHERE unit_id = ?"
        args: list = [unit_id]
        if start is not None:
            sql += " AND wall_time >= ?"
            args.append(start)
        if end is not None:
            sql += " AND wall_time < ?"
            args.append(end)
        yield from self._stream(self._sql(sql + " ORDER BY seq"), args)

    def _stream(self, sql: str, args: list) -> Iterator[tuple[int, str]]:
        raise NotImplementedError

    def _write_batch(self, cur, unit_id, log_id, rows, lost) -> list[int]:
        """One batch's statements, idempotent on (unit_id, seq): the caller wraps them in one transaction.

        Rows for seqs already stored (none, unless a batch is repeated or the log reused seqs) are
        found with one range query: identical ones are skipped, different ones go to `conflicts`.
        """
        stored = {}
        if rows:
            seqs = [seq for seq, _, _ in rows]
            found = cur.execute(self._sql("SELECT seq, record FROM decisions WHERE unit_id = ? AND seq >= ?"
                                          " AND seq <= ?"), (unit_id, min(seqs), max(seqs))).fetchall()
            stored = dict(found)
        conflicts = [(seq, text) for seq, _, text in rows if seq in stored and stored[seq] != text]
        if stored:
            rows = [row for row in rows if row[0] not in stored]
        cur.executemany(self._sql("INSERT INTO decisions VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"),
                        [(unit_id, seq, wall, text) for seq, wall, text in rows])
        if conflicts:
            cur.executemany(self._sql("INSERT INTO conflicts VALUES (?, ?, ?, ?)"),
                            [(unit_id, seq, text, time.time()) for seq, text in conflicts])
        cur.executemany(self._sql("INSERT INTO lost_ranges VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"),
                        [(unit_id, a, b, why, time.time()) for a, b, why in lost])
        cur.execute(self._sql("INSERT INTO sources VALUES (?, ?, ?) ON CONFLICT (unit_id) DO UPDATE"
                              " SET log_id = excluded.log_id, updated_at = excluded.updated_at"),
                    (unit_id, log_id, time.time()))
        return [seq for seq, _ in conflicts]

    def close(self):
        self.conn.close()


class SqliteStore(_SqlStore):
    def __init__(self, path: Path):
        self.path = path
        try:
            self._open(path)
        except (OSError, sqlite3.Error) as exc:
            raise FileAccessError(f"{path}: cannot open it as a SQLite store ({exc})") from None

    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open each write transaction ourselves (BEGIN IMMEDIATE).
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
        # A 7 kB record fits in a 32 kB page without overflow chains: twice the insert rate of 4 kB
        # pages, measured. Takes effect only when the file is created.
        self.conn.execute("PRAGMA page_size=32768")
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL can lose the last transactions on power loss, never corrupt: the
        # historian then resumes from an earlier max(seq) and fetches them again from the log.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        for ddl in self._ddl("INTEGER", "REAL", " WITHOUT ROWID"):
            self.conn.execute(ddl)

    def save(self, unit_id, log_id, rows, lost):
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conflicts = self._write_batch(conn, unit_id, log_id, rows, lost)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return conflicts

    def _stream(self, sql, args):
        yield from self.conn.execute(sql, args)


class PostgresStore(_SqlStore):
    ph = "%s"

    def __init__(self, dsn: str):
        try:
            import psycopg  # optional dependency: only PostgreSQL users need it
        except ImportError:
            raise MissingExtra("a PostgreSQL store", "postgres", "psycopg") from None

        self.dsn = dsn
        # Autocommit: reads take no transaction; save() opens a real one with conn.transaction().
        try:
            self.conn = psycopg.connect(dsn, connect_timeout=10, autocommit=True)
        except psycopg.OperationalError as exc:
            raise CannotConnect(_refusal(dsn, exc)) from None
        with self.conn.transaction():
            for ddl in self._ddl("BIGINT", "DOUBLE PRECISION", ""):
                self.conn.execute(ddl)

    def save(self, unit_id, log_id, rows, lost):
        with self.conn.transaction(), self.conn.cursor() as cur:
            return self._write_batch(cur, unit_id, log_id, rows, lost)

    def _stream(self, sql, args):
        # A named (server-side) cursor streams a large export instead of loading it whole.
        with self.conn.transaction(), self.conn.cursor(name="boiler_ai_export") as cur:
            cur.itersize = 2000
            cur.execute(sql, args)
            yield from cur


def _refusal(dsn: str, exc: Exception) -> str:
    """One line naming the PostgreSQL server (host:port, database, user; never the password) and why it
    refused, out of psycopg's several-line message."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 (a DSN psycopg could not even parse: its message says why)
        info = {}
    where = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    why = lines[0].rpartition(" failed: ")[2] if lines else type(exc).__name__
    return (f"cannot connect to PostgreSQL at {where} (database {info.get('dbname', '?')!r}, user "
            f"{info.get('user', '?')!r}): {why}")
