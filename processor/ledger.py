"""What the processor has written: the record that makes delivery exactly once.

Two tables in the processor's SQLite database (``lc.db`` under ``--data-dir``):

``delivered``
    Per (hunter id, epoch) the batch sequence numbers already written, as ranges
    (``"1-5120,5200-5301"``). A hunter resends every batch that was not acknowledged,
    and replays its disk spool after an outage, so a batch can arrive twice, and out
    of order after a hunter restart; a batch whose sequence is in the ranges is
    acknowledged again without being written.

``sink_files``
    Per output (the ``-w`` path) and link type, the file being written, its rotation
    counter, and its size after the last batch that was committed. A new file is
    recorded *before* it is created, with size 0.

``sink_state``
    The same for other sinks with one current file (the event log): per (sink, key)
    the file being written and its committed size; recorded before creation too.

The commit rule. For each group of batches the writer (1) writes them to the files,
(2) hands the bytes to the OS, (3) commits the new ranges and file sizes in one
transaction, and (4) only then acknowledges them. After a SIGKILL at any point, the
database describes a prefix of what is in the files: on start the processor cuts
every file it continues back to the recorded size (removing a torn record and any
batch that was written but never acknowledged; the hunter still holds those and
sends them again) and rewrites a file recorded with size 0 from scratch. So the
ranges and the files agree, and nothing acknowledged is ever missing or doubled.

``synchronous=NORMAL`` in WAL mode: a committed transaction survives a crash of the
process (the case above); a power failure may lose the last transactions, together
with the unsynced tail of the files, which the hunters resend.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from bisect import bisect_right
from collections.abc import Sequence

from lc.common.errors import LcError
from lc.common.pcapfile import SinkFile

__all__ = ["SINK_STATE_SQL", "Ledger", "RangeSet"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (
    hunter_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    ranges TEXT NOT NULL,          -- "lo-hi,lo-hi" of batch sequences written
    updated_ns INTEGER NOT NULL,
    PRIMARY KEY (hunter_id, epoch)
);
CREATE TABLE IF NOT EXISTS sink_files (
    output TEXT NOT NULL,          -- the -w path as given (absolute)
    linktype INTEGER NOT NULL,
    label TEXT NOT NULL,           -- "" for the link type owning the plain name
    counter INTEGER NOT NULL,      -- rotation counter (0 without rotation)
    path TEXT NOT NULL,
    size INTEGER NOT NULL,         -- bytes of committed batches, header included
    PRIMARY KEY (output, linktype)
);
CREATE TABLE IF NOT EXISTS sink_state (
    sink TEXT NOT NULL,            -- "events"
    key TEXT NOT NULL,             -- the sink's directory (absolute)
    path TEXT NOT NULL,            -- its current file
    size INTEGER NOT NULL,         -- bytes of committed batches
    PRIMARY KEY (sink, key)
);
"""

#: Statement (sink, key, path, size) a sink gives :meth:`Ledger.commit` for its file.
SINK_STATE_SQL = "INSERT OR REPLACE INTO sink_state VALUES (?, ?, ?, ?)"


class RangeSet:
    """Sorted, disjoint, inclusive integer ranges; adding is O(log n) plus a merge."""

    __slots__ = ("_hi", "_lo")

    def __init__(self, text: str = "") -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        for part in filter(None, text.split(",")):
            lo, _, hi = part.partition("-")
            self.add_range(int(lo), int(hi or lo))

    def __contains__(self, n: int) -> bool:
        i = bisect_right(self._lo, n) - 1
        return i >= 0 and n <= self._hi[i]

    def add(self, n: int) -> None:
        self.add_range(n, n)

    def add_range(self, lo: int, hi: int) -> None:
        los, his = self._lo, self._hi
        i = bisect_right(los, lo) - 1
        if i >= 0 and his[i] >= lo - 1:  # touches or overlaps the range on the left
            lo = los[i]
            hi = max(hi, his[i])
        else:
            i += 1
        j = i
        while j < len(los) and los[j] <= hi + 1:
            hi = max(hi, his[j])
            j += 1
        los[i:j] = [lo]
        his[i:j] = [hi]

    def __len__(self) -> int:
        return sum(h - lo + 1 for lo, h in zip(self._lo, self._hi, strict=True))

    def __str__(self) -> str:
        return ",".join(
            f"{lo}-{hi}" if hi != lo else str(lo) for lo, hi in zip(self._lo, self._hi, strict=True)
        )

    @property
    def spans(self) -> int:
        return len(self._lo)


class Ledger:
    """The ``delivered`` and ``sink_files`` tables, with the ranges kept in memory.

    Raises:
        LcError: the database cannot be opened.
    """

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
            rows = self._db.execute("SELECT hunter_id, epoch, ranges FROM delivered").fetchall()
        except sqlite3.Error as e:
            raise LcError(f"cannot open the processor database {path}: {e}") from None
        self.path = path
        self._lock = threading.Lock()
        self._ranges: dict[tuple[str, int], RangeSet] = {(h, e): RangeSet(r) for h, e, r in rows}
        self._dirty: set[tuple[str, int]] = set()
        self._files: dict[tuple[str, int], SinkFile] = {}
        self.commits = 0

    # -- delivered ---------------------------------------------------------------------
    def written(self, hunter_id: str, epoch: int, sequence: int) -> bool:
        with self._lock:
            rs = self._ranges.get((hunter_id, epoch))
            return rs is not None and sequence in rs

    def mark(self, hunter_id: str, epoch: int, sequence: int) -> None:
        """Record a batch as written (in memory until :meth:`commit`)."""
        key = (hunter_id, epoch)
        with self._lock:
            rs = self._ranges.get(key)
            if rs is None:
                rs = self._ranges[key] = RangeSet()
            rs.add(sequence)
            self._dirty.add(key)

    def delivered(self, hunter_id: str) -> dict[int, str]:
        """Epoch -> ranges written, for one hunter (tests and diagnostics)."""
        with self._lock:
            return {e: str(r) for (h, e), r in self._ranges.items() if h == hunter_id}

    # -- files ---------------------------------------------------------------------------
    def sink_files(self, output: str) -> list[SinkFile]:
        rows = self._db.execute(
            "SELECT linktype, label, counter, path, size FROM sink_files WHERE output=?"
            " ORDER BY label != '', linktype",
            (output,),
        ).fetchall()
        return [SinkFile(*r) for r in rows]

    def file_opening(self, output: str, linktype: int, label: str, counter: int, path: str) -> None:
        """Record, before it is created, the file a link type now writes (size 0)."""
        with self._lock:
            self._files.pop((output, linktype), None)
            self._db.execute(
                "INSERT OR REPLACE INTO sink_files VALUES (?, ?, ?, ?, ?, 0)",
                (output, linktype, label, counter, path),
            )

    def file_state(self, output: str, files: list[SinkFile]) -> None:
        """The sink's current files and sizes (in memory until :meth:`commit`)."""
        with self._lock:
            for f in files:
                self._files[(output, f.linktype)] = f

    def sink_state(self, sink: str, key: str) -> tuple[str, int] | None:
        """(path, committed size) of a sink's current file, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT path, size FROM sink_state WHERE sink=? AND key=?", (sink, key)
            ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def sink_state_opening(self, sink: str, key: str, path: str) -> None:
        """Record, before it is created, the file a sink now writes (size 0)."""
        with self._lock:
            self._db.execute(SINK_STATE_SQL, (sink, key, path, 0))

    def commit(self, now_ns: int, extra: Sequence[tuple[str, Sequence[tuple]]] = ()) -> None:
        """One transaction with every range and file size changed since the last commit,
        plus ``extra`` statements (sql, parameter rows): the per-call index's rows."""
        with self._lock:
            dirty = [(h, e, str(self._ranges[(h, e)]), now_ns) for h, e in self._dirty]
            files = [
                (out, f.linktype, f.label, f.counter, f.path, f.size)
                for (out, _), f in self._files.items()
            ]
            self._dirty.clear()
            self._files.clear()
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                if dirty:
                    db.executemany("INSERT OR REPLACE INTO delivered VALUES (?, ?, ?, ?)", dirty)
                if files:
                    db.executemany(
                        "INSERT OR REPLACE INTO sink_files VALUES (?, ?, ?, ?, ?, ?)", files
                    )
                for sql, params in extra:
                    db.executemany(sql, params)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                # Keep what was not committed for the next attempt.
                self._dirty.update((h, e) for h, e, _, _ in dirty)
                for out, lt, label, counter, path, size in files:
                    self._files.setdefault((out, lt), SinkFile(lt, label, counter, path, size))
                raise
            self.commits += 1

    def close(self) -> None:
        with self._lock:
            self._db.close()
