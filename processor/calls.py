"""VoIP per-call capture on the processor: one pcap file per call and a call index.

Hunters forward the packets of VoIP calls with their Call-ID, protocol ("sip",
"rtp", "rtcp"), hunter id and, for SIP, a :class:`SipSummary`. :class:`CallWriter`
appends each packet's nanosecond pcap record to its call's file and keeps the
call's row for :class:`CallIndex` (SQLite) in memory, pushed once per batch by
:meth:`CallWriter.flush`. The writer is single-threaded (the ingest thread owns
it); the index may be queried from any thread.

File naming
    The ``pattern`` (default ``{timestamp}_{callid}.pcap``) takes the tokens
    ``{callid}``, ``{from}`` and ``{to}`` (the SIP users of the call's first packet,
    ``unknown`` when it was not SIP), ``{timestamp}`` (UTC of the first packet, as
    ``20261122T143000.123456789Z``) and ``{hunter}`` (the first packet's hunter).
    Any other token, a positional ``{}``, a format spec or a path separator in the
    pattern is refused when the writer is built. Every character outside
    ``[A-Za-z0-9._@+=-]`` becomes ``_`` (in tokens and in the pattern's own text),
    each token is cut to 64 characters, runs of dots collapse to one, a leading
    dot becomes ``_`` and the whole name is cut to 200 characters, extension kept:
    a name can never leave the directory. Files are created exclusively, never
    overwritten: when the name exists (another call, an earlier run, anything),
    ``-2``, ``-3``... is put before the extension.

Deduplication
    Two hunters may capture the same packet. A packet is dropped (counted in
    ``duplicates``) when its bytes (the record without its 16-byte header) equal
    those of a packet already written for the same call and either (a) another
    hunter wrote it with a timestamp within ``dedup_window_ns`` (±50 ms: clock
    skew and path delay between hunters) or (b) it has exactly the same
    timestamp (the same capture sent again, e.g. a batch replayed after a failed
    write). One hunter's own identical packets at different times are kept: SIP
    retransmissions (T1 = 500 ms and more) and true duplicates on its wire. A
    duplicate is dropped before its SIP summary is applied. The rule matches
    64-bit hashes, remembered per call for ``dedup_history_ns`` of
    capture time (2 s; a hunter's batches arrive up to that much later than
    another's) and at most 4096 per call. Limits: copies that differ in any byte
    (another VLAN tag or MAC, a decremented TTL), hunters whose clocks are more
    than 50 ms apart, and copies delivered more than 2 s late (a replayed spool)
    are written twice.

Order
    Records are written in arrival order. One hunter's packets arrive in capture
    order; two hunters' packets may interleave slightly out of order, which
    Wireshark and tshark read without complaint (``reordercap`` sorts a file if
    needed). No reorder buffer: it would delay every packet and hold memory for
    every call.

Link types
    A classic pcap has one link type: the call's first packet sets it; a packet of
    another link type for the same call is counted (``linktype_mismatch``) and
    skipped.

Lifecycle and clock
    Times are capture timestamps (int ns) throughout: the caller runs
    :meth:`CallWriter.tick` with the largest timestamp seen (:attr:`clock_ns`),
    and, for live capture only, may pass the wall clock (``time.time_ns()``)
    while no packets come, so that idle calls still close; both are ns since the
    epoch (a replay of an old capture must stay on :attr:`clock_ns`). A call's file is
    closed ``grace_ns`` (5 s) after the call ends (BYE, CANCEL, final failure;
    late RTP within the grace still lands in it), or ``idle_timeout_ns`` (300 s)
    after its last packet; an idle call that was still ringing or answered is
    marked ``ended`` at its last packet's time. Either way the call leaves memory
    and its final row goes to the index at once. More packets for it later
    (``late_packets`` when it had ended) continue the same file in append mode,
    found through the index, and so do calls continued after a processor restart.
    When more than ``max_open_files`` files are open, the least recently written
    is closed (the call stays tracked) and reopened in append mode on its next
    packet (``reopened``).

Durability
    A call's ``packets`` and ``bytes`` in the index describe exactly what its file
    holds (24 + 16 * packets + bytes bytes). :meth:`CallWriter.flush` flushes the
    files first and then commits the rows, so a crash leaves every file at least
    as long as its row says; continuing a call cuts its file back to that length
    (records of batches never acknowledged, which the hunter sends again) before
    appending. Call ``flush()`` before acknowledging a batch. A file that is gone
    or shorter than its row is not appended to: a new file is started
    (``files_replaced``) and the call's counts restart with it.

Call states follow the one SIP call-state table, :mod:`lc.common.sipcall`, which
the hunter's VoIP mode follows too: ringing, answered, ended, failed, cancelled;
``end_ns`` is set when a call enters ended, failed or cancelled and cleared when it
leaves them; ``method`` is the call's initial method. From/To users and URIs come
from the call's first SIP message that carries them.

Cost. Per packet in the common case (a known call, no SIP summary): one dict
look-up, one hash of the packet bytes, one buffered ``file.write`` and a few
integer updates, about 2 µs (1.8-2.4 µs for 200-byte RTP records on the 2-vCPU
development VM, against 0.6-0.7 µs for a bare dict look-up plus ``file.write``).
Per flush, per call written since the last one: a ``flush`` system call (plus
``fsync`` if asked) and a row update, about 10 µs; so the flush cost follows the
number of calls a batch touches, not its packets. A row is upserted whole only
when something besides its counters changed (state, parties, hunters, path);
otherwise only its counters are updated, 3-4 times cheaper in SQLite.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import sqlite3
import string
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from lc.common.errors import LcError, ValidationError
from lc.common.sipcall import ACTIVE as _ACTIVE
from lc.common.sipcall import FINAL as _FINAL
from lc.common.sipcall import STATES, SipSummary, initial_method, next_state

__all__ = [
    "DEFAULT_PATTERN",
    "STATES",
    "TOKENS",
    "CallIndex",
    "CallWriter",
    "SipSummary",
    "next_state",
]

DEFAULT_PATTERN = "{timestamp}_{callid}.pcap"
TOKENS = ("callid", "from", "to", "timestamp", "hunter")

_NS = 1_000_000_000
_PCAP_NS_MAGIC = 0xA1B23C4D
_SNAPLEN = 262144
_PCAP_HEADER = struct.Struct("<IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, lt
_HEADER_LEN = _PCAP_HEADER.size  # 24
_RECORD_HEADER_LEN = 16

_TOKEN_MAX = 64
_NAME_MAX = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
_DOTS = re.compile(r"\.{2,}")
_FILE_BUFFER = 32 * 1024  # per open file; up to max_open_files of them

_SEEN_MAX = 4096  # dedup hashes kept per call, at most
_SEEN_MIN_LIMIT = 256  # below this many, a call's hashes are never pruned

# ------------------------------------------------------------------------------ index

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


# ----------------------------------------------------------------------------- writer


def _check_pattern(pattern: str) -> None:
    allowed = ", ".join(f"{{{t}}}" for t in TOKENS)
    if not pattern:
        raise ValidationError("the call file pattern is empty")
    if "/" in pattern or "\\" in pattern or "\0" in pattern:
        raise ValidationError(
            f"call file pattern {pattern!r} holds a path separator; it names a file in "
            "the capture directory"
        )
    try:
        fields = list(string.Formatter().parse(pattern))
    except ValueError as e:
        raise ValidationError(f"call file pattern {pattern!r}: {e}") from None
    for _text, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in TOKENS:
            raise ValidationError(
                f"unknown token {{{name}}} in call file pattern {pattern!r}; allowed: {allowed}"
            )
        if spec or conversion:
            raise ValidationError(
                f"token {{{name}}} in call file pattern {pattern!r} has a format spec or "
                "conversion; use the bare token"
            )


def _clean_token(value: str) -> str:
    value = _DOTS.sub(".", _UNSAFE.sub("_", value))[:_TOKEN_MAX]
    return value or "unknown"


def _timestamp(ts_ns: int) -> str:
    sec, ns = divmod(ts_ns, _NS)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(sec)) + f".{ns:09d}Z"


class _Call:
    """One call the writer tracks: its file, its index row, its dedup memory."""

    __slots__ = (
        "bytes",
        "call_id",
        "deadline",
        "dirty",
        "end_ns",
        "file",
        "from_uri",
        "from_user",
        "hunters",
        "hunters_json",
        "last_ns",
        "late",
        "linktype",
        "meta",
        "method",
        "packets",
        "parties",
        "path",
        "rtcp",
        "rtp",
        "seen",
        "seen_limit",
        "sip",
        "start_ns",
        "state",
        "to_uri",
        "to_user",
    )

    def __init__(self, call_id: str, ts_ns: int, linktype: int) -> None:
        self.call_id = call_id
        self.path = ""
        self.file: BinaryIO | None = None
        self.linktype = linktype
        self.hunters: set[str] = set()
        self.method = ""
        self.state = "ringing"
        self.parties = False  # From/To taken from a SIP message yet
        self.from_user = self.to_user = self.from_uri = self.to_uri = ""
        self.start_ns = self.last_ns = ts_ns
        self.end_ns: int | None = None
        self.packets = self.bytes = self.sip = self.rtp = self.rtcp = 0
        self.seen: dict[int, tuple[int, str]] = {}  # hash(packet bytes) -> (ts_ns, hunter)
        self.seen_limit = _SEEN_MIN_LIMIT
        self.dirty = False  # written since the last flush (file and row)
        self.meta = True  # a column besides the counters changed: the row needs an upsert
        self.hunters_json = ""  # cache; "" = to be made
        self.late = False  # continued after it had ended and been closed
        self.deadline = 0  # of its live entry in the writer's heap

    def row(self) -> tuple[object, ...]:
        """The whole index row, in column order."""
        if not self.hunters_json:
            self.hunters_json = json.dumps(sorted(self.hunters))
        return (
            self.call_id,
            self.method,
            self.state,
            self.from_user,
            self.to_user,
            self.from_uri,
            self.to_uri,
            self.start_ns,
            self.end_ns,
            self.last_ns,
            self.hunters_json,
            self.packets,
            self.bytes,
            self.sip,
            self.rtp,
            self.rtcp,
            self.path,
        )

    def counts(self) -> tuple[object, ...]:
        """The parameters of the index's counters update."""
        return (self.packets, self.bytes, self.sip, self.rtp, self.rtcp, self.last_ns, self.call_id)

    def restore(self, row: Mapping[str, object]) -> None:
        """Take over a row from the index (a call continued after it left memory)."""
        self.method = str(row["method"])
        self.state = str(row["state"])
        self.from_user = str(row["from_user"])
        self.to_user = str(row["to_user"])
        self.from_uri = str(row["from_uri"])
        self.to_uri = str(row["to_uri"])
        self.parties = any((self.from_user, self.to_user, self.from_uri, self.to_uri))
        self.start_ns = min(self.start_ns, _int(row["start_ns"]))
        self.last_ns = max(self.last_ns, _int(row["last_seen_ns"]))
        end = row["end_ns"]
        self.end_ns = None if end is None else _int(end)
        hunters = row["hunters"]
        self.hunters = set(hunters) if isinstance(hunters, list) else set()
        self.meta = False
        self.packets = _int(row["packets"])
        self.bytes = _int(row["bytes"])
        self.sip = _int(row["sip_packets"])
        self.rtp = _int(row["rtp_packets"])
        self.rtcp = _int(row["rtcp_packets"])
        self.path = str(row["pcap_path"])

    def reset_counts(self) -> None:
        self.packets = self.bytes = self.sip = self.rtp = self.rtcp = 0
        self.meta = True


class CallWriter:
    """Writes one pcap file per call and keeps the calls' index rows (module docstring).

    Raises:
        ValidationError: (a ValueError) a bad pattern or parameter, named in the text.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        pattern: str = DEFAULT_PATTERN,
        *,
        index: CallIndex,
        grace_ns: int = 5 * _NS,
        idle_timeout_ns: int = 300 * _NS,
        max_open_files: int = 1000,
        fsync: bool = False,
        dedup_window_ns: int = 50_000_000,
        dedup_history_ns: int = 2 * _NS,
    ) -> None:
        _check_pattern(pattern)
        for name, value, least in (
            ("grace_ns", grace_ns, 0),
            ("idle_timeout_ns", idle_timeout_ns, 1),
            ("max_open_files", max_open_files, 1),
            ("dedup_window_ns", dedup_window_ns, 0),
            ("dedup_history_ns", dedup_history_ns, 0),
        ):
            if not isinstance(value, int) or value < least:
                raise ValidationError(f"{name} must be an int of at least {least}, not {value!r}")
        self._dir = os.path.abspath(os.fspath(directory))
        os.makedirs(self._dir, exist_ok=True)
        self._pattern = pattern
        self._index = index
        self._grace = grace_ns
        self._idle = idle_timeout_ns
        self._max_open = max_open_files
        self._fsync = fsync
        self._window = dedup_window_ns
        self._history = max(dedup_history_ns, dedup_window_ns)
        self._calls: dict[str, _Call] = {}
        self._lru: OrderedDict[str, _Call] = OrderedDict()  # calls with an open file
        self._heap: list[tuple[int, str]] = []  # (deadline, call_id), checked lazily
        self._dirty: list[_Call] = []
        self._clock = 0
        self._closed = False
        # Counters: plain ints on the hot path, a dict on request.
        self._calls_opened = 0
        self._files_closed = 0
        self._packets = 0
        self._bytes = 0
        self._duplicates = 0
        self._late_packets = 0
        self._linktype_mismatch = 0
        self._reopened = 0
        self._files_replaced = 0

    # -- the hot path

    def write(
        self,
        call_id: str,
        hunter_id: str,
        ts_ns: int,
        record: bytes,
        linktype: int,
        protocol: str,
        sip: SipSummary | None = None,
    ) -> None:
        """Append one nanosecond pcap record (16-byte header + packet) to its call's file.

        Raises:
            ValueError: the writer is closed.
            OSError: the file cannot be created or written. This packet is not
                counted; do not acknowledge its batch (see :meth:`_abandon`).
        """
        c = self._calls.get(call_id)
        if c is None:
            c = self._start(call_id, hunter_id, ts_ns, linktype, sip)
        if hunter_id not in c.hunters:
            self._add_hunter(c, hunter_id)
        if linktype != c.linktype:
            self._linktype_mismatch += 1
            return
        key = hash(record[_RECORD_HEADER_LEN:])
        seen = c.seen
        prev = seen.get(key)
        if prev is not None:
            d = ts_ns - prev[0]
            if d == 0 or (prev[1] != hunter_id and -self._window <= d <= self._window):
                self._duplicates += 1
                return
        f = c.file
        if f is None:
            f = self._reopen(c)
        else:
            self._lru.move_to_end(call_id)
        try:  # free in 3.11 unless it raises
            f.write(record)
        except OSError:
            self._abandon(c)
            raise
        seen[key] = (ts_ns, hunter_id)  # only once written, so that a resend is not dropped
        if len(seen) > c.seen_limit:
            self._prune_seen(c)
        n = len(record) - _RECORD_HEADER_LEN
        c.packets += 1
        c.bytes += n
        if protocol == "rtp":
            c.rtp += 1
        elif protocol == "sip":
            c.sip += 1
        elif protocol == "rtcp":
            c.rtcp += 1
        if ts_ns > c.last_ns:
            c.last_ns = ts_ns
            if ts_ns > self._clock:
                self._clock = ts_ns
        elif ts_ns < c.start_ns:
            c.start_ns = ts_ns
            c.meta = True
        if not c.dirty:
            c.dirty = True
            self._dirty.append(c)
        if c.late:
            self._late_packets += 1
        if sip is not None:
            self._on_sip(c, ts_ns, sip)
        self._packets += 1
        self._bytes += n

    # -- calls and files

    def _add_hunter(self, c: _Call, hunter_id: str) -> None:
        c.hunters.add(hunter_id)
        c.hunters_json = ""
        c.meta = True
        if not c.dirty:
            c.dirty = True
            self._dirty.append(c)

    def _start(
        self, call_id: str, hunter_id: str, ts_ns: int, linktype: int, sip: SipSummary | None
    ) -> _Call:
        """Track a call not in memory: continue it from the index, or start its file."""
        if self._closed:
            raise ValueError("write to a closed CallWriter")
        c = _Call(call_id, ts_ns, linktype)
        row = self._index.get(call_id)
        if row is not None:
            c.restore(row)
            c.late = c.state in _FINAL
            opened = self._open_append(c.path, _HEADER_LEN + 16 * c.packets + c.bytes)
            if opened is not None:
                c.file, c.linktype = opened
                self._reopened += 1
            else:
                self._files_replaced += 1
                c.reset_counts()
                self._create(c, hunter_id, c.start_ns)
        else:
            if sip is not None:
                self._take_parties(c, sip)
            self._create(c, hunter_id, ts_ns)
            self._calls_opened += 1
        if ts_ns > self._clock:
            self._clock = ts_ns
        self._calls[call_id] = c
        self._track_open(c)
        c.deadline = self._deadline(c)
        heapq.heappush(self._heap, (c.deadline, call_id))
        return c

    def _create(self, c: _Call, hunter_id: str, ts_ns: int) -> None:
        """Create the call's file, exclusively, under the first free name; write the header."""
        name = self._pattern.format_map(
            {
                "callid": _clean_token(c.call_id),
                "from": _clean_token(c.from_user),
                "to": _clean_token(c.to_user),
                "timestamp": _clean_token(_timestamp(ts_ns)),
                "hunter": _clean_token(hunter_id),
            }
        )
        name = _DOTS.sub(".", _UNSAFE.sub("_", name))
        if name.startswith("."):
            name = "_" + name[1:]
        stem, ext = os.path.splitext(name)
        if len(ext) > 16:  # not an extension worth keeping whole
            stem, ext = name, ""
        for n in range(1, 100_000):
            suffix = "" if n == 1 else f"-{n}"
            path = os.path.join(
                self._dir, stem[: _NAME_MAX - len(ext) - len(suffix)] + suffix + ext
            )
            try:
                f = open(path, "xb", buffering=_FILE_BUFFER)  # noqa: SIM115 (closed by _close_file)
            except FileExistsError:
                continue
            break
        else:
            raise LcError(f"no free file name for call {c.call_id!r} in {self._dir}")
        f.write(_PCAP_HEADER.pack(_PCAP_NS_MAGIC, 2, 4, 0, 0, _SNAPLEN, c.linktype))
        if self._fsync:
            _fsync_dir(self._dir)
        c.file = f
        c.path = path
        c.meta = True

    def _open_append(self, path: str, size: int) -> tuple[BinaryIO, int] | None:
        """Open a call's file to append after its first ``size`` bytes; None if unusable.

        Unusable: missing, not our nanosecond pcap, or shorter than ``size``. Bytes
        past ``size`` (written but never committed to the index) are cut off.
        """
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except OSError:
            return None
        try:
            head = os.pread(fd, _HEADER_LEN, 0)
            if len(head) < _HEADER_LEN or size < _HEADER_LEN:
                raise ValueError
            magic, major, minor, _, _, _, linktype = _PCAP_HEADER.unpack(head)
            if (magic, major, minor) != (_PCAP_NS_MAGIC, 2, 4):
                raise ValueError
            have = os.fstat(fd).st_size
            if have < size:
                raise ValueError
            if have > size:
                os.ftruncate(fd, size)
            return os.fdopen(fd, "ab", buffering=_FILE_BUFFER), linktype
        except (OSError, ValueError):
            os.close(fd)
            return None

    def _reopen(self, c: _Call) -> BinaryIO:
        """Reopen a tracked call's file (closed to respect max_open_files) to append."""
        opened = self._open_append(c.path, _HEADER_LEN + 16 * c.packets + c.bytes)
        if opened is not None and opened[1] == c.linktype:
            c.file = opened[0]
            self._reopened += 1
        else:  # gone or changed behind our back: start afresh rather than append to it
            if opened is not None:
                opened[0].close()
            self._files_replaced += 1
            c.reset_counts()
            self._create(c, next(iter(sorted(c.hunters)), ""), c.start_ns)
        self._track_open(c)
        assert c.file is not None
        return c.file

    def _track_open(self, c: _Call) -> None:
        lru = self._lru
        lru[c.call_id] = c
        while len(lru) > self._max_open:
            _, old = lru.popitem(last=False)
            self._close_file(old)

    def _close_file(self, c: _Call) -> None:
        f = c.file
        if f is None:
            return
        c.file = None
        self._lru.pop(c.call_id, None)
        if self._fsync:
            f.flush()
            os.fsync(f.fileno())
        f.close()
        self._files_closed += 1

    def _abandon(self, c: _Call) -> None:
        """Drop a file whose write or flush failed (a full disk...); the error propagates.

        The call forgets its dedup hashes, so that the hunter's resend of the batch
        (never acknowledged) is written, and its next packet reopens the file, which
        is continued if it holds every record counted, or else replaced by a new one.
        """
        f = c.file
        c.file = None
        c.seen = {}
        self._lru.pop(c.call_id, None)
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
        self._files_closed += 1

    def _prune_seen(self, c: _Call) -> None:
        # Amortised: runs when the map has doubled since the last pruning.
        floor = c.last_ns - self._history
        kept = {k: v for k, v in c.seen.items() if v[0] >= floor}
        if len(kept) > _SEEN_MAX:
            kept = dict(list(kept.items())[-(_SEEN_MAX // 2) :])
        c.seen = kept
        c.seen_limit = max(_SEEN_MIN_LIMIT, min(2 * len(kept), _SEEN_MAX))

    # -- SIP

    def _take_parties(self, c: _Call, sip: SipSummary) -> None:
        if sip.from_user or sip.to_user or sip.from_uri or sip.to_uri:
            c.from_user, c.to_user = sip.from_user, sip.to_user
            c.from_uri, c.to_uri = sip.from_uri, sip.to_uri
            c.parties = True
            c.meta = True

    def _on_sip(self, c: _Call, ts_ns: int, sip: SipSummary) -> None:
        if not c.method:
            c.method = initial_method(sip)
            c.meta = True
        if not c.parties:
            self._take_parties(c, sip)
        old = c.state
        new = next_state(old, c.method, sip)
        if new == old:
            return
        c.state = new
        c.meta = True
        if new in _FINAL:
            if old not in _FINAL:
                c.end_ns = ts_ns
                deadline = self._deadline(c)
                if deadline < c.deadline:
                    c.deadline = deadline
                    heapq.heappush(self._heap, (deadline, c.call_id))
        else:
            c.end_ns = None
            c.late = False

    # -- time

    def _deadline(self, c: _Call) -> int:
        """When the call's file closes if nothing changes (capture-time ns)."""
        idle = c.last_ns + self._idle
        if c.end_ns is None:
            return idle
        return min((c.last_ns if c.late else c.end_ns) + self._grace, idle)

    def tick(self, now_ns: int) -> int:
        """Close the files of calls ended ``grace_ns`` ago or idle ``idle_timeout_ns``.

        ``now_ns`` is capture time (see the module docstring). The closed calls leave
        memory and their rows are committed to the index now. Returns how many closed.
        """
        heap = self._heap
        calls = self._calls
        done: list[_Call] = []
        while heap and heap[0][0] <= now_ns:
            deadline, call_id = heapq.heappop(heap)
            c = calls.get(call_id)
            if c is None or c.deadline != deadline:
                continue  # a stale entry: the call left, or has a newer one
            real = self._deadline(c)
            if real > now_ns:
                c.deadline = real
                heapq.heappush(heap, (real, call_id))
                continue
            if c.end_ns is None:  # idle: a call nobody hung up (or not seen to)
                c.end_ns = c.last_ns
                if c.state in _ACTIVE:
                    c.state = "ended"
            self._close_file(c)
            del calls[call_id]
            done.append(c)
        if done:
            self._index.commit([c.row() for c in done])
            for c in done:
                c.dirty = c.meta = False
            self._dirty = [c for c in self._dirty if c.dirty]
        return len(done)

    # -- flushing and closing

    def flush(self, defer: bool = False):
        """Flush (and fsync, if asked) the files written since the last flush, then
        commit their calls' rows to the index in one transaction.

        With ``defer``, return the rows instead, as ``(rows, counts)`` for
        :meth:`CallIndex.statements`, for the caller to commit in its own transaction.
        """
        dirty = self._dirty
        if not dirty:
            return ([], []) if defer else None
        for c in dirty:
            f = c.file
            if f is not None:
                try:
                    f.flush()
                    if self._fsync:
                        os.fsync(f.fileno())
                except OSError:
                    self._abandon(c)
                    raise
        rows = [c.row() for c in dirty if c.meta]
        counts = [c.counts() for c in dirty if not c.meta]
        if not defer:
            self._index.commit(rows, counts)
        for c in dirty:
            c.dirty = c.meta = False
        self._dirty = []
        return (rows, counts) if defer else None

    def close(self) -> None:
        """Close every file and commit every pending row; safe to call twice.

        Calls still going stay ringing or answered in the index: a later writer on
        the same directory and index continues their files.
        """
        if self._closed:
            return
        for c in list(self._lru.values()):
            self._close_file(c)
        self.flush()
        self._closed = True
        self._calls.clear()
        self._heap.clear()

    # -- introspection

    @property
    def counters(self) -> dict[str, int]:
        return {
            "calls_opened": self._calls_opened,
            "files_closed": self._files_closed,
            "packets": self._packets,
            "bytes": self._bytes,
            "duplicates": self._duplicates,
            "late_packets": self._late_packets,
            "linktype_mismatch": self._linktype_mismatch,
            "reopened": self._reopened,
            "files_replaced": self._files_replaced,
        }

    @property
    def open_files(self) -> int:
        return len(self._lru)

    @property
    def calls(self) -> int:
        """Calls tracked in memory (with an open file or not)."""
        return len(self._calls)

    @property
    def clock_ns(self) -> int:
        """The largest capture timestamp written so far: the clock for :meth:`tick`."""
        return self._clock

    @property
    def directory(self) -> Path:
        return Path(self._dir)

    def __enter__(self) -> CallWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
