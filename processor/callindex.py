"""The call index: one row per VoIP call in the processor's SQLite database.

Rows come from the per-call writer (:mod:`lc.processor.callfiles`), committed in the
ledger's transaction (see :mod:`lc.processor.ingest`), and are read by
``lc list calls`` (the ListCalls RPC) and the event log (a call event names its
call file). A call's ``packets`` and ``bytes`` describe exactly what its file holds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence

from lc.common.errors import LcError, ValidationError

__all__ = ["CallIndex"]

_COLUMNS = (
    "call_id",
    "method",
    "state",
    "from_user",
    "to_user",
    "from_uri",
    "to_uri",
    "start_ns",
    "end_ns",
    "last_seen_ns",
    "hunters",
    "packets",
    "bytes",
    "sip_packets",
    "rtp_packets",
    "rtcp_packets",
    "pcap_path",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,          -- the initial method: INVITE, REGISTER...
    state TEXT NOT NULL,           -- ringing, answered, ended, failed, cancelled
    from_user TEXT NOT NULL,
    to_user TEXT NOT NULL,
    from_uri TEXT NOT NULL,
    to_uri TEXT NOT NULL,
    start_ns INTEGER NOT NULL,     -- capture time of the first packet
    end_ns INTEGER,                -- BYE, CANCEL, failing response or idle end; NULL if going
    last_seen_ns INTEGER NOT NULL,
    hunters TEXT NOT NULL,         -- JSON list of hunter ids, sorted
    packets INTEGER NOT NULL,      -- records in the pcap file
    bytes INTEGER NOT NULL,        -- their captured bytes, record headers excluded
    sip_packets INTEGER NOT NULL,
    rtp_packets INTEGER NOT NULL,
    rtcp_packets INTEGER NOT NULL,
    pcap_path TEXT NOT NULL        -- absolute
);
CREATE INDEX IF NOT EXISTS calls_from_user ON calls (from_user);
CREATE INDEX IF NOT EXISTS calls_to_user ON calls (to_user);
CREATE INDEX IF NOT EXISTS calls_state ON calls (state);
CREATE INDEX IF NOT EXISTS calls_start ON calls (start_ns);
"""

_UPSERT = "INSERT INTO calls ({}) VALUES ({}) ON CONFLICT (call_id) DO UPDATE SET {}".format(
    ", ".join(_COLUMNS),
    ", ".join("?" * len(_COLUMNS)),
    ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:]),
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM calls"
# Most rows change only in their counters between two flushes: an UPDATE of columns
# that no index covers costs a fraction of a full upsert (measured 3-4x).
_UPDATE_COUNTS = (
    "UPDATE calls SET packets = ?, bytes = ?, sip_packets = ?, rtp_packets = ?, "
    "rtcp_packets = ?, last_seen_ns = ? WHERE call_id = ?"
)


class CallIndex:
    """The call index: one row per call in the SQLite table ``calls``.

    Its own connection (WAL, ``synchronous=NORMAL``: a commit survives a process
    crash, the last ones may not survive a power cut), one transaction per
    :meth:`update_many`, safe to use from several threads. A :class:`CallWriter`
    commits through :meth:`commit`, which takes rows already in column order.
    """

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        path = os.fspath(db_path)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise LcError(f"cannot open the call index {path}: {e}") from None
        self.path = path
        self._lock = threading.Lock()

    def update_many(self, rows: Iterable[Mapping[str, object]]) -> int:
        """Insert or replace whole rows (keys: the column names) in one transaction.

        ``hunters`` may be any iterable of ids; it is stored as a sorted JSON list.
        Returns the number of rows written.
        """
        params = [
            tuple(_hunters_json(r[c]) if c == "hunters" else r[c] for c in _COLUMNS) for r in rows
        ]
        self.commit(params)
        return len(params)

    def commit(
        self, rows: Sequence[tuple[object, ...]], counts: Sequence[tuple[object, ...]] = ()
    ) -> None:
        """Upsert ``rows`` (values in column order, hunters as JSON) and update the
        counters of existing calls (``packets, bytes, sip_packets, rtp_packets,
        rtcp_packets, last_seen_ns, call_id``), all in one transaction."""
        if not rows and not counts:
            return
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if rows:
                    db.executemany(_UPSERT, rows)
                if counts:
                    db.executemany(_UPDATE_COUNTS, counts)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def statements(
        rows: Sequence[tuple[object, ...]], counts: Sequence[tuple[object, ...]]
    ) -> list[tuple[str, Sequence[tuple[object, ...]]]]:
        """What :meth:`commit` executes, for a caller that commits it in its own
        transaction (the processor's ledger: files, ranges and calls agree at once)."""
        out: list[tuple[str, Sequence[tuple[object, ...]]]] = []
        if rows:
            out.append((_UPSERT, rows))
        if counts:
            out.append((_UPDATE_COUNTS, counts))
        return out

    def get(self, call_id: str) -> dict[str, object] | None:
        """The call's row, or None if the index has no such call."""
        with self._lock:
            row = self._db.execute(f"{_SELECT} WHERE call_id = ?", (call_id,)).fetchone()
        return None if row is None else _as_dict(row)

    def query(
        self, active: bool = False, user: str | None = None, limit: int | None = None
    ) -> list[dict[str, object]]:
        """Calls, newest first (by start time).

        ``active``: only calls ringing or answered (no end time). ``user``: only calls
        whose From or To user is exactly ``user``. ``limit``: at most that many.
        """
        where: list[str] = []
        args: list[object] = []
        if active:
            where.append("state IN ('ringing', 'answered') AND end_ns IS NULL")
        if user is not None:
            where.append("(from_user = ? OR to_user = ?)")
            args += [user, user]
        sql = _SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_ns DESC, call_id"
        if limit is not None:
            if limit < 0:
                raise ValidationError(f"limit must be 0 or more, not {limit}")
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_as_dict(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _hunters_json(hunters: object) -> str:
    if isinstance(hunters, str) or not isinstance(hunters, Iterable):
        raise ValidationError(f"hunters must be a collection of ids, not {hunters!r}")
    return json.dumps(sorted(hunters))


def _int(value: object) -> int:
    if not isinstance(value, int):
        raise ValueError(f"expected an int in the call index, found {value!r}")
    return value


def _as_dict(row: tuple) -> dict[str, object]:
    d = dict(zip(_COLUMNS, row, strict=True))
    d["hunters"] = json.loads(str(d["hunters"]))
    return d
