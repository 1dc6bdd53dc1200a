"""The processor's durable state in SQLite: the filter store.

One database file under ``--data-dir`` (``lc.db``), in WAL mode. Every change is
one transaction that also bumps the filter-set version, so the version a hunter
reports names exactly one set of filters, and a restart finds both again.

In a processor tree the store also keeps the filters its upstream pushed down
(``origin`` ``upstream``, with the upstream's per-filter version): they are changed only
by the upstream (:meth:`FilterStore.replace_upstream`, :meth:`FilterStore.apply_upstream`),
never by this processor's own admin commands, and a restart while the upstream is down
keeps them. Every change of either kind bumps this processor's own set version.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Sequence

from lc.common.errors import LcError, NotFound, ValidationError
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
UPSTREAM = "upstream"
_COLUMNS = "id, type, pattern, enabled, description, hunters, version"


class FilterStore:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            cols = [r[1] for r in self._db.execute("PRAGMA table_info(filters)")]
            if "origin" not in cols:  # a database from before processor trees
                self._db.execute("ALTER TABLE filters ADD COLUMN origin TEXT NOT NULL DEFAULT ''")
            ups = self._db.execute("SELECT id FROM filters WHERE origin=?", (UPSTREAM,))
            self._upstream = frozenset(r[0] for r in ups)
        except sqlite3.Error as e:
            raise LcError(f"cannot open the processor database {path}: {e}") from None
        self.path = path
        self._lock = threading.Lock()

    @property
    def upstream_ids(self) -> frozenset[str]:
        """Ids of the filters the upstream processor pushed down."""
        return self._upstream

    @property
    def version(self) -> int:
        with self._lock:
            return self._version()

    def _version(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='filter_version'").fetchone()
        return int(row[0])

    def upsert(self, filters: Sequence[Filter]) -> tuple[list[StoredFilter], int]:
        """Create or replace ``filters`` (all or none); returns them and the new version.

        Raises:
            ValidationError: one of the ids belongs to a filter the upstream pushed down.
        """
        with self._lock:
            theirs = [f.id for f in filters if f.id in self._upstream]
            if theirs:
                raise ValidationError(
                    f"filter {theirs[0]!r} was set at the upstream processor: change it there"
                )
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                version = self._version() + 1
                for f in filters:
                    _put(db, f, version, "")
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
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM filters WHERE id=?", (filter_id,)
                ).fetchone()
                if row is None:
                    raise NotFound(f"no filter with id {filter_id!r}")
                if filter_id in self._upstream:
                    raise ValidationError(
                        f"filter {filter_id!r} was set at the upstream processor: remove it there"
                    )
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
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM filters ORDER BY id").fetchall()
            return [_row(r) for r in rows], self._version()

    def get(self, filter_id: str) -> StoredFilter:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM filters WHERE id=?", (filter_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no filter with id {filter_id!r}")
        return _row(row)

    # -- filters pushed down by the upstream processor ------------------------------------
    def replace_upstream(
        self, filters: Sequence[StoredFilter]
    ) -> tuple[list[StoredFilter], list[str], int]:
        """The upstream's complete set (its filters and their versions) replaces the one
        it sent before: (filters new or changed, ids gone, this store's set version). The
        version moves only when something changed (a reconnect usually changes nothing).
        A local filter with the id of an upstream one gives way to it."""
        with self._lock:
            have = {f.id: (f, v) for f, v in self._rows(UPSTREAM)}
            new = {f.id: (f, v) for f, v in filters}
            changed = [(f, v) for fid, (f, v) in new.items() if have.get(fid) != (f, v)]
            gone = [fid for fid in have if fid not in new]
            return changed, gone, self._apply_upstream(changed, gone)

    def apply_upstream(
        self, filters: Sequence[StoredFilter], removed: Sequence[str]
    ) -> tuple[list[StoredFilter], list[str], int]:
        """One change the upstream sent: filters created or changed, ids deleted
        (ids it does not hold are ignored)."""
        with self._lock:
            gone = [fid for fid in removed if fid in self._upstream]
            return list(filters), gone, self._apply_upstream(list(filters), gone)

    def _apply_upstream(self, changed: list[StoredFilter], gone: list[str]) -> int:
        db = self._db
        if not changed and not gone:
            return self._version()
        db.execute("BEGIN IMMEDIATE")
        try:
            for f, v in changed:
                _put(db, f, v, UPSTREAM)
            for fid in gone:
                db.execute("DELETE FROM filters WHERE id=? AND origin=?", (fid, UPSTREAM))
            version = self._version() + 1
            db.execute("UPDATE meta SET value=? WHERE key='filter_version'", (version,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._upstream = (self._upstream | {f.id for f, _ in changed}) - set(gone)
        return version

    def _rows(self, origin: str) -> list[StoredFilter]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM filters WHERE origin=? ORDER BY id", (origin,)
        ).fetchall()
        return [_row(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _put(db: sqlite3.Connection, f: Filter, version: int, origin: str) -> None:
    db.execute(
        "INSERT OR REPLACE INTO filters (id, type, pattern, enabled, description, hunters, "
        "version, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            f.id,
            f.type,
            f.pattern,
            int(f.enabled),
            f.description,
            json.dumps(list(f.hunters)),
            version,
            origin,
        ),
    )


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
