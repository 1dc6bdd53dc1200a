"""The processor's durable state in SQLite: the filter store.

One database file under ``--data-dir`` (``lc.db``), in WAL mode. Every change is
one transaction that also bumps the filter-set version, so the version a hunter
reports names exactly one set of filters, and a restart finds both again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence

from lc.common.errors import LcError, NotFound
from lc.common.filters import Filter

__all__ = ["FilterStore", "StoredFilter"]

StoredFilter = tuple[Filter, int]  # the filter and the version of its last change

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS filters (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    pattern TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    description TEXT NOT NULL,
    hunters TEXT NOT NULL,      -- JSON list of hunter ids; [] = every hunter
    version INTEGER NOT NULL    -- filter-set version of the last change
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('filter_version', 0);
"""


class FilterStore:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise LcError(f"cannot open the processor database {path}: {e}") from None
        self.path = path
        self._lock = threading.Lock()

    @property
    def version(self) -> int:
        with self._lock:
            return self._version()

    def _version(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='filter_version'").fetchone()
        return int(row[0])

    def upsert(self, filters: Sequence[Filter]) -> tuple[list[StoredFilter], int]:
        """Create or replace ``filters`` (all or none); returns them and the new version."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                version = self._version() + 1
                for f in filters:
                    db.execute(
                        "INSERT OR REPLACE INTO filters VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            f.id,
                            f.type,
                            f.pattern,
                            int(f.enabled),
                            f.description,
                            json.dumps(list(f.hunters)),
                            version,
                        ),
                    )
                db.execute("UPDATE meta SET value=? WHERE key='filter_version'", (version,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return [(f, version) for f in filters], version

    def delete(self, filter_id: str) -> tuple[Filter, int]:
        """Remove a filter; returns it and the new version.

        Raises:
            NotFound: no filter has this id.
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT * FROM filters WHERE id=?", (filter_id,)).fetchone()
                if row is None:
                    raise NotFound(f"no filter with id {filter_id!r}")
                version = self._version() + 1
                db.execute("DELETE FROM filters WHERE id=?", (filter_id,))
                db.execute("UPDATE meta SET value=? WHERE key='filter_version'", (version,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return _row(row)[0], version

    def all(self) -> tuple[list[StoredFilter], int]:
        """Every filter (sorted by id) and the version they make up, read together."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM filters ORDER BY id").fetchall()
            return [_row(r) for r in rows], self._version()

    def get(self, filter_id: str) -> StoredFilter:
        with self._lock:
            row = self._db.execute("SELECT * FROM filters WHERE id=?", (filter_id,)).fetchone()
        if row is None:
            raise NotFound(f"no filter with id {filter_id!r}")
        return _row(row)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(r: tuple) -> StoredFilter:
    fid, ftype, pattern, enabled, description, hunters, version = r
    return (
        Filter(
            id=fid,
            type=ftype,
            pattern=pattern,
            enabled=bool(enabled),
            description=description,
            hunters=tuple(json.loads(hunters)),
        ),
        int(version),
    )
