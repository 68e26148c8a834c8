"""An index of the runs dir in SQLite, so that listing 10,000 sessions is a query.

The runs dir stays the source of truth: each run's row is what its manifest.json and
trace.jsonl say, read once per change of them (their size and mtime are the row's
stamp). The index lives beside the runs (`runs_dir/.tuneloop/index.sqlite`; in memory when
the runs dir cannot be written) and is brought up to date from the files:

- `sync()` stats every run's two files and re-reads those that changed, adds new runs and
  drops removed ones; a server runs it when it starts (a missing or older index is
  rebuilt this way) and then every `RESCAN_S` in the background, for runs written by
  others (the CLI, `eval`, another server);
- `refresh(ids)` re-reads a few runs at once: the sessions this server is running, before
  every listing.

`page()` answers a listing: filters (method, function, status, model, prompt, created
since), newest first, `limit` rows and a cursor for the next page (keyset pagination on
(created, id): a page is as fast deep in the list as at its head, and a session started
meanwhile does not shift the pages).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     idx = RunIndex(Path(d))
    ...     idx.sync(), idx.page(Query(limit=10)).rows
    ((0, 0), [])
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.evaluation.service.schemas import SessionRow

INDEX_FILE = Path(".tuneloop") / "index.sqlite"
SCHEMA_VERSION = 1  # a different one is dropped and rebuilt
RESCAN_S = 5.0  # how often the background sync looks for runs written by others
FILES = ("trace.jsonl", "manifest.json")
_COLUMNS = ("id", "stamp", "study", "method", "function", "model", "prompt", "status", "budget", "trials_charged",
            "best_value", "created", "reason")
_SORT = "COALESCE(created, '9999')"  # newest first; a run without a creation time (queued) before all
FILTERS = ("method", "function", "status", "model", "prompt")


@dataclass(frozen=True)
class Query:
    """A listing: filters, how many rows, and where the last page ended."""

    limit: int = 100
    cursor: str | None = None
    method: str | None = None
    function: str | None = None
    status: str | None = None
    model: str | None = None
    prompt: str | None = None
    since: str | None = None  # ISO time: created at or after it


@dataclass(frozen=True)
class Page:
    rows: list[SessionRow]
    total: int  # rows matching the filters, every page together
    next: str | None  # the cursor of the next page; None on the last


class CursorError(ValueError):
    """A cursor this index did not write."""


# A cursor is the last row's position, "<created>~<id>", in plain text: any string of this
# form is a position in the list (the next page starts after it), so a client, or a fuzzer,
# cannot write a well-formed cursor the server must refuse.
CURSOR_PATTERN = r"^[0-9A-Za-z:.+-]{1,40}~[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$"


def encode_cursor(sort_key: str, run_id: str) -> str:
    return f"{sort_key}~{run_id}"


def decode_cursor(cursor: str) -> tuple[str, str]:
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise CursorError("cursor: not a position in the list (use the `next` of the previous page)")
    key, _, rid = cursor.partition("~")
    return key, rid


def stamp_of(d: Path) -> str | None:
    """The run's files' sizes and mtimes, as text; None when it has neither file."""
    parts = []
    for name in FILES:
        try:
            st = os.stat(d / name)
        except OSError:
            parts.append("-")
            continue
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return None if parts == ["-", "-"] else "|".join(parts)


class RunIndex:
    """The runs dir's rows in SQLite. `read_row(dir)` makes a run's row from its files (the
    session manager's rule, with the live status left to the caller); None for a run it
    does not list. Thread-safe: one connection behind a lock (queries take a millisecond)."""

    def __init__(self, runs_dir: Path, read_row: Callable[[Path], tuple[SessionRow, bool] | None] | None = None,
                 is_run_id: Callable[[str], bool] = lambda name: not name.startswith(".")) -> None:
        self.runs_dir = Path(runs_dir)
        self.read_row = read_row or (lambda d: None)
        self.is_run_id = is_run_id
        self.lock = threading.Lock()
        self.db = self._open()
        self.synced = threading.Event()  # the first sync is done: listings wait for it
        self._stop = threading.Event()

    def _open(self) -> sqlite3.Connection:
        path = self.runs_dir / INDEX_FILE
        for attempt in range(2):
            try:
                path.parent.mkdir(exist_ok=True)
                return self._prepare(sqlite3.connect(path, check_same_thread=False, isolation_level=None), wal=True)
            except (OSError, sqlite3.Error):
                if attempt == 0:  # a damaged index (or one left by a crash): the files rebuild it
                    for leftover in path.parent.glob(path.name + "*"):
                        leftover.unlink(missing_ok=True)
        # a runs dir that cannot be written: the index lives in memory
        return self._prepare(sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None), wal=False)

    @staticmethod
    def _prepare(db: sqlite3.Connection, wal: bool) -> sqlite3.Connection:
        if wal:  # readers (another server on the same runs dir) do not wait for a writer
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # an index: a crash loses at most its last writes, rebuilt
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            db.execute("DROP TABLE IF EXISTS runs")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("""CREATE TABLE IF NOT EXISTS runs (
            id TEXT PRIMARY KEY, stamp TEXT NOT NULL, study INTEGER NOT NULL, method TEXT, function TEXT,
            model TEXT, prompt TEXT, status TEXT NOT NULL, budget INTEGER, trials_charged INTEGER NOT NULL,
            best_value REAL, created TEXT, reason TEXT)""")
        db.execute(f"CREATE INDEX IF NOT EXISTS runs_newest ON runs({_SORT} DESC, id DESC)")
        db.execute("SELECT COUNT(*) FROM runs").fetchone()  # a damaged file fails here, not in a request
        return db

    # ------------------------------------------------------------------ keeping it true
    def sync(self) -> tuple[int, int]:
        """Bring every row up to date with the files: (rows re-read, rows dropped)."""
        with self.lock:
            known = dict(self.db.execute("SELECT id, stamp FROM runs").fetchall())
        seen: set[str] = set()
        changed: list[tuple[str, str]] = []
        try:
            entries = list(os.scandir(self.runs_dir))
        except OSError:
            entries = []
        for entry in entries:
            if not self.is_run_id(entry.name) or not entry.is_dir():
                continue
            stamp = stamp_of(Path(entry.path))
            if stamp is None:
                continue
            seen.add(entry.name)
            if known.get(entry.name) != stamp:
                changed.append((entry.name, stamp))
        gone = [rid for rid in known if rid not in seen]
        self._store(changed, gone)
        self.synced.set()
        return len(changed), len(gone)

    def refresh(self, ids: Iterable[str], force: Iterable[str] = ()) -> None:
        """Re-read these runs if their files changed (the ones this server is writing), and
        the `force` ones whatever their files say."""
        forced = {rid for rid in force if self.is_run_id(rid)}
        wanted = [rid for rid in {*ids, *forced} if self.is_run_id(rid)]
        if not wanted:
            return
        with self.lock:
            marks = ",".join("?" * len(wanted))
            known = dict(self.db.execute(f"SELECT id, stamp FROM runs WHERE id IN ({marks})", wanted).fetchall())
        changed = []
        for rid in wanted:
            stamp = stamp_of(self.runs_dir / rid)
            if stamp is not None and (rid in forced or known.get(rid) != stamp):
                changed.append((rid, stamp))
        self._store(changed, [])

    def _store(self, changed: list[tuple[str, str]], gone: list[str]) -> None:
        rows = []
        for rid, stamp in changed:  # read outside the lock: listings go on meanwhile
            made = self.read_row(self.runs_dir / rid)
            if made is None:  # not readable yet (a run being created): not listed, read again next time
                continue
            row, study = made
            rows.append((rid, stamp, int(study), row.method, row.function, row.model, row.prompt, row.status,
                         row.budget, row.trials_charged, row.best_value, row.created, row.reason))
        if not rows and not gone:
            return
        with self.lock:
            self.db.execute("BEGIN")
            self.db.executemany(f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) "
                                f"VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
            self.db.executemany("DELETE FROM runs WHERE id = ?", [(rid,) for rid in gone])
            self.db.execute("COMMIT")

    def start(self) -> None:
        """Sync now in the background, then every RESCAN_S until `stop()`."""

        def loop() -> None:
            while True:
                try:
                    self.sync()
                except Exception:  # noqa: BLE001 - a failed scan (a run dir removed mid-read): the next one
                    self.synced.set()
                if self._stop.wait(RESCAN_S):
                    return

        threading.Thread(target=loop, name="tuneloop-run-index", daemon=True).start()

    def stop(self) -> None:
        """End the background sync and close the database."""
        self._stop.set()
        with self.lock:
            self.db.close()

    # ------------------------------------------------------------------ reading
    def page(self, q: Query, studies: bool = False) -> Page:
        """One page of sessions (or, with `studies`, of ask/tell studies), newest first."""
        where: list[str] = ["study = ?"]
        args: list[object] = [int(studies)]
        for name in FILTERS:
            value = getattr(q, name)
            if value is not None:
                where.append(f"{name} = ?")
                args.append(value)
        if q.since is not None:
            where.append("created >= ?")
            args.append(q.since)
        cond = " AND ".join(where)
        page_cond, page_args = cond, list(args)
        if q.cursor is not None:
            key, rid = decode_cursor(q.cursor)
            page_cond += f" AND ({_SORT}, id) < (?, ?)"
            page_args += [key, rid]
        with self.lock:
            total = self.db.execute(f"SELECT COUNT(*) FROM runs WHERE {cond}", args).fetchone()[0]
            found = self.db.execute(
                f"SELECT {', '.join(_COLUMNS)}, {_SORT} FROM runs WHERE {page_cond} "
                f"ORDER BY {_SORT} DESC, id DESC LIMIT ?", [*page_args, q.limit + 1]).fetchall()
        more = len(found) > q.limit
        found = found[: q.limit]
        rows = [SessionRow(**{k: v for k, v in zip(_COLUMNS, r, strict=False) if k not in ("stamp", "study")})
                for r in found]
        nxt = encode_cursor(found[-1][-1], found[-1][0]) if more and found else None
        return Page(rows=rows, total=total, next=nxt)

    def ids(self, studies: bool) -> list[str]:
        """Every run's id, of sessions or of studies."""
        with self.lock:
            return [r[0] for r in self.db.execute("SELECT id FROM runs WHERE study = ?", (int(studies),))]

    def row_values(self, run_id: str) -> dict[str, Any] | None:
        with self.lock:
            r = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if r is None else dict(zip(_COLUMNS, r, strict=True))
