"""VoIP per-call capture on the processor: one pcap file per call.

Hunters forward the packets of VoIP calls with their Call-ID, protocol ("sip",
"rtp", "rtcp"), hunter id and, for SIP, a :class:`SipSummary`. :class:`CallWriter`
appends each packet's nanosecond pcap record to its call's file and keeps the
call's row for :class:`~lc.processor.callindex.CallIndex` (SQLite) in memory,
pushed once per group of batches by :meth:`CallWriter.flush`. The writer is
single-threaded (the ingest thread owns it); the index may be queried from any
thread.

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
    those of a packet another hunter wrote for the same call with a timestamp within
    ``dedup_window_ns`` (±50 ms: clock skew and path delay between hunters). A
    hunter's own packets are never dropped here: a batch it sends again is dropped
    whole by the ledger, its identical packets at different times are SIP
    retransmissions or true duplicates on its wire, and a capture it sends again as a
    new run (a file replayed twice) is written again, in the call file as in the
    unified file (issue 9 item 6d: before, such a replay was dropped or not depending
    on whether its call was still open, 498 or 996 packets for one replay). A
    duplicate is dropped before its SIP summary is applied. The rule matches 64-bit
    hashes, remembered per call for ``dedup_history_ns`` of capture time (2 s; a
    hunter's batches arrive up to that much later than another's) and at most 4096
    per call. Limits: copies that differ in any byte (another VLAN tag or MAC, a
    decremented TTL), hunters whose clocks are more than 50 ms apart, and copies
    delivered more than 2 s late are written twice.

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

Durability and undo
    A call's ``packets`` and ``bytes`` in the index describe exactly what its file
    holds (24 + 16 * packets + bytes bytes). Records wait in memory per call and
    :meth:`CallWriter.flush` writes each call's with one ``write`` (a
    :class:`~lc.common.pcapwriter.PcapWriter`), then gives (or commits) the rows, so
    a crash leaves every file at least as long as its row says; continuing a call
    (:meth:`PcapWriter.resume`) cuts its file back to that length (records of
    batches never acknowledged, which the hunter sends again) before appending.
    Call ``flush()`` before acknowledging a batch. A file that is gone or shorter
    than its row is not appended to: a new file is started (``files_replaced``) and
    the call's counts restart with it.

    :meth:`CallWriter.mark` and :meth:`CallWriter.rollback` take back everything
    written since a mark: records, counts, states, dedup memory, calls and files
    started. The processor marks before every batch and rolls back a batch that
    failed anywhere (another call's file, the unified output), and a group whose
    flush failed: so a batch is in its call files entirely or not at all, and the
    hunter's resend writes it once (issue 9, item 6a: before, the records written
    before a failure stayed and the resend wrote them again).

Call states follow the one SIP call-state table, :mod:`lc.common.sipcall`, which
the hunter's VoIP mode follows too: ringing, answered, ended, failed, cancelled;
``end_ns`` is set when a call enters ended, failed or cancelled and cleared when it
leaves them; ``method`` is the call's initial method. From/To users and URIs come
from the call's first SIP message that carries them.

Cost. Per packet in the common case (a known call, no SIP summary): one dict
look-up, one hash of the packet bytes, a ``bytearray`` append and a few integer
updates, about 2 µs on the 2-vCPU development VM. A batch of dense metadata (a VoIP
hunter's: one table entry per call and protocol) goes through :meth:`CallWriter.write_dense`,
which takes it call by call with the same outcome: a call's packets without a SIP summary
are appended as runs (the hash per packet stays; snapshot, recency and counts once per
run), about a quarter fewer instructions per packet. Per flush, per call written since
the last one: one ``write`` system call (plus ``fsync`` if asked) and a row update,
about 10 µs; so the flush cost follows the number of calls a group touches, not its
packets. A row is upserted whole only
when something besides its counters changed (state, parties, hunters, path);
otherwise only its counters are updated, 3-4 times cheaper in SQLite.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import re
import string
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from itertools import repeat
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lc.common.errors import LcError, ParseError, ValidationError
from lc.common.pcapwriter import PcapWriter
from lc.common.sipcall import ACTIVE as _ACTIVE
from lc.common.sipcall import FINAL as _FINAL
from lc.common.sipcall import SipSummary, initial_method, next_state
from lc.processor.callindex import CallIndex

__all__ = ["DEFAULT_PATTERN", "TOKENS", "CallWriter", "check_pattern"]

DEFAULT_PATTERN = "{timestamp}_{callid}.pcap"
TOKENS = ("callid", "from", "to", "timestamp", "hunter")

_NS = 1_000_000_000
_HEADER_LEN = 24
_RECORD_HEADER_LEN = 16

_TOKEN_MAX = 64
_NAME_MAX = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
_DOTS = re.compile(r"\.{2,}")

_PROTO_CODE = {"rtp": 1, "sip": 2, "rtcp": 3}  # CallWriter.write_dense's protocol codes

_SEEN_MAX = 4096  # dedup hashes kept per call, at most
_SEEN_MIN_LIMIT = 256  # below this many, a call's hashes are never pruned

# What a mark remembers of a call (besides its hunters and the length of its pending
# records): everything a batch may change.
_SNAPSHOT = (
    "packets", "bytes", "sip", "rtp", "rtcp", "last_ns", "start_ns", "late", "state",
    "method", "end_ns", "parties", "from_user", "to_user", "from_uri", "to_uri", "meta",
    "dirty", "hunters_json", "deadline", "npend", "path", "size", "linktype",
)  # fmt: skip
_snapshot = attrgetter(*_SNAPSHOT)

_COUNTERS = (
    "_calls_opened", "_files_closed", "_packets", "_bytes", "_duplicates", "_late_packets",
    "_linktype_mismatch", "_reopened", "_files_replaced",
)  # fmt: skip


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | str) else 0


def check_pattern(pattern: str) -> None:
    """Refuse a call file pattern (ValidationError naming the problem)."""
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
    """One call the writer tracks: its file, its pending records, its index row, its
    dedup memory."""

    __slots__ = (
        "bytes", "call_id", "deadline", "dirty", "end_ns", "file", "from_uri", "from_user",
        "gen", "hunters", "hunters_json", "last_ns", "late", "linktype", "meta", "method",
        "npend", "packets", "parties", "path", "pend", "rtcp", "rtp", "seen", "seen_limit",
        "sip", "size", "start_ns", "state", "to_uri", "to_user",
    )  # fmt: skip

    def __init__(self, call_id: str, ts_ns: int, linktype: int) -> None:
        self.call_id = call_id
        self.path = ""
        self.file: PcapWriter | None = None
        self.size = 0  # bytes in the file (written, not pending)
        self.pend = bytearray()  # records not yet written
        self.npend = 0
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
        self.gen = -1  # the writer's mark generation when this call was last snapshotted

    def row(self) -> tuple[object, ...]:
        """The whole index row, in column order."""
        if not self.hunters_json:
            self.hunters_json = json.dumps(sorted(self.hunters))
        return (
            self.call_id, self.method, self.state, self.from_user, self.to_user,
            self.from_uri, self.to_uri, self.start_ns, self.end_ns, self.last_ns,
            self.hunters_json, self.packets, self.bytes, self.sip, self.rtp, self.rtcp,
            self.path,
        )  # fmt: skip

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

    def recorded_size(self) -> int:
        """The file size the counts say (written and pending records)."""
        return _HEADER_LEN + _RECORD_HEADER_LEN * self.packets + self.bytes


class _Cols(NamedTuple):
    """A batch's columns for :meth:`CallWriter.write_dense`, per packet."""

    records: bytes
    mv: memoryview  # of the records
    starts: list[int]  # where each record starts in them
    ends: list[int]
    ts: list[int]  # timestamps, ns
    proto: list[int]  # _PROTO_CODE of its metadata's protocol (0: none of them)


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
        check_pattern(pattern)
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
        # Undo (mark/rollback): a journal of what changed since the first mark, and
        # a generation that makes a call snapshot itself once per mark.
        self._journal: list[tuple] | None = None
        self._gen = 0
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
        """Add one nanosecond pcap record (16-byte header + packet) to its call's file
        (written by the next :meth:`flush`).

        Raises:
            ValueError: the writer is closed.
            OSError: a file cannot be created or opened (the batch must not be
                acknowledged; :meth:`rollback` takes it back).
        """
        c = self._calls.get(call_id)
        if c is None:
            c = self._start(call_id, hunter_id, ts_ns, linktype, sip)
        elif c.gen != self._gen and self._journal is not None:
            self._snap(c)
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
            if prev[1] != hunter_id and -self._window <= d <= self._window:
                self._duplicates += 1
                return
        if c.file is None:
            self._reopen(c)
        else:
            self._lru.move_to_end(call_id)
        c.pend += record
        c.npend += 1
        seen[key] = (ts_ns, hunter_id)
        if self._journal is not None:
            self._journal.append(("s", c, key))
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

    def write_dense(
        self,
        hunter_id: str,
        records: bytes,
        caplen: Sequence[int],
        ref: Sequence[int],
        entries: Sequence[tuple[str, str, SipSummary | None] | None],
        linktype: int,
    ) -> bool:
        """:meth:`write` for every packet of a batch whose metadata is dense: packet
        ``i`` (record ``i`` of ``records``, ``caplen[i]`` bytes captured) is
        ``entries[ref[i]]`` (call id, protocol, SIP summary; None: no call), all of
        ``linktype``. The outcome is what :meth:`write` gives packet by packet in order
        (files, counts, states, dedup memory, undo journal, the open files' recency),
        with the batch taken call by call: a call's packets without a SIP summary are
        appended in runs, SIP ones go through :meth:`write`.

        Returns False, having written nothing, when the batch could make the writer
        close a file to respect ``max_open_files`` (the per-packet order then matters:
        the caller writes it with :meth:`write`).

        Raises:
            as :meth:`write`.
        """
        number: dict[str, int] = {}
        slot_call = np.full(len(entries), -1, np.int64)
        slot_sip = np.zeros(len(entries), bool)
        slot_proto = np.zeros(len(entries), np.int8)
        for k, e in enumerate(entries):
            if e is not None:
                slot_call[k] = number.setdefault(e[0], len(number))
                slot_sip[k] = e[2] is not None
                slot_proto[k] = _PROTO_CODE.get(e[1], 0)
        if not number:
            return True
        if len(self._lru) + len(number) > self._max_open:
            return False
        slots = np.frombuffer(ref, np.uint16) if isinstance(ref, array) else np.asarray(ref)
        calls = slot_call[slots]
        mine = np.flatnonzero(calls >= 0)
        if not len(mine):
            return True
        # The packets of each call in order; calls in the order of their first packet.
        order = mine[np.argsort(calls[mine], kind="stable")]
        cs = calls[order]
        lo = np.flatnonzero(np.concatenate(([True], cs[1:] != cs[:-1])))
        hi = np.append(lo[1:], len(order))
        first = np.argsort(order[lo], kind="stable")
        cap = np.frombuffer(caplen, np.uint32).astype(np.int64)
        ends = np.cumsum(cap + _RECORD_HEADER_LEN)
        starts = ends - _RECORD_HEADER_LEN - cap
        head = np.frombuffer(records, np.uint8)[(starts[:, None] + np.arange(8)).ravel()]
        sec_ns = head.view("<u4").reshape(-1, 2).astype(np.int64)
        cols = _Cols(
            records,
            memoryview(records),
            starts.tolist(),
            ends.tolist(),
            (sec_ns[:, 0] * _NS + sec_ns[:, 1]).tolist(),
            slot_proto[slots].tolist(),
        )
        slots_l = slots.tolist()
        order_l, lo_l, hi_l = order.tolist(), lo.tolist(), hi.tolist()
        sip_at = np.flatnonzero(slot_sip[slots[order]]).tolist()  # positions in order
        touched: list[tuple[int, str]] = []  # (last packet that touched its file, call id)
        ndirty = len(self._dirty)
        dirtied: dict[int, int] = {}  # id of a call made dirty -> the packet that did
        for g in first.tolist():
            p, q = lo_l[g], hi_l[g]
            call_id = entries[slots_l[order_l[p]]][0]  # type: ignore[index]
            last_touch = -1
            s = bisect_left(sip_at, p)
            while p < q:
                c = self._calls.get(call_id)
                nxt = sip_at[s] if s < len(sip_at) and sip_at[s] < q else q
                if c is None or nxt == p:  # a SIP packet, or the call's first: as write()
                    j = order_l[p]
                    _, protocol, sip = entries[slots_l[j]]  # type: ignore[misc]
                    packets, nd = self._packets, len(self._dirty)
                    record = records[cols.starts[j] : cols.ends[j]]
                    self.write(call_id, hunter_id, cols.ts[j], record, linktype, protocol, sip)
                    if self._packets != packets or c is None:
                        last_touch = j
                    if len(self._dirty) != nd:
                        dirtied[id(self._dirty[-1])] = j
                    if nxt == p:
                        s += 1
                    p += 1
                    continue
                touch, dirty_at = self._write_run(c, hunter_id, order_l[p:nxt], cols, linktype)
                if touch >= 0:
                    last_touch = touch
                if dirty_at >= 0:
                    dirtied[id(c)] = dirty_at
                p = nxt
            if last_touch >= 0:
                touched.append((last_touch, call_id))
        lru = self._lru
        for _, call_id in sorted(touched):
            if call_id in lru:
                lru.move_to_end(call_id)
        if len(self._dirty) - ndirty > 1:  # in the order write() makes them dirty
            self._dirty[ndirty:] = sorted(self._dirty[ndirty:], key=lambda c: dirtied[id(c)])
        return True

    def _write_run(
        self, c: _Call, hunter_id: str, run: list[int], cols: _Cols, linktype: int
    ) -> tuple[int, int]:
        """Packets ``run`` of call ``c``, none with a SIP summary, as :meth:`write` takes
        them one by one (the files' recency and the order of the dirty calls aside:
        :meth:`write_dense` sets them). Returns the last packet appended (-1: none) and
        the packet that made the call dirty (-1: it was, or is not)."""
        if c.gen != self._gen and self._journal is not None:
            self._snap(c)
        was_dirty = c.dirty
        if hunter_id not in c.hunters:
            self._add_hunter(c, hunter_id)
        # Made dirty now (a new hunter): by the run's first packet.
        dirty_at = -1 if was_dirty or not c.dirty else run[0]
        n = len(run)
        if linktype != c.linktype:
            self._linktype_mismatch += n
            return -1, dirty_at
        mv = cols.mv
        a = list(map(cols.starts.__getitem__, run))
        b = list(map(cols.ends.__getitem__, run))
        ts = list(map(cols.ts.__getitem__, run))
        seen = c.seen
        last0 = c.last_ns
        if len(c.hunters) == 1 and c.file is not None and len(seen) + n <= c.seen_limit:
            # Every packet is taken: the call's dedup memory holds only this hunter's
            # packets (a hunter's own are never duplicates), and does not need pruning.
            rec = cols.records  # a bytes slice hashes faster than a memoryview's
            keys = [hash(rec[x + _RECORD_HEADER_LEN : y]) for x, y in zip(a, b, strict=True)]
            c.pend += b"".join([mv[x:y] for x, y in zip(a, b, strict=True)])
            seen.update(zip(keys, zip(ts, repeat(hunter_id)), strict=False))
            nbytes = sum(b) - sum(a) - _RECORD_HEADER_LEN * n
            last = max(last0, max(ts))
            low = min(ts)
            if low < c.start_ns:
                c.start_ns = low
                c.meta = True
            touch = run[-1]
        else:
            window = self._window
            last = last0
            start = c.start_ns
            earlier = False
            keys = []
            parts: list[memoryview] = []
            nbytes = 0
            touch = -1
            taken: list[int] = []
            for j, x, y, t in zip(run, a, b, ts, strict=True):
                key = hash(mv[x + _RECORD_HEADER_LEN : y])
                prev = seen.get(key)
                if prev is not None and prev[1] != hunter_id and -window <= t - prev[0] <= window:
                    self._duplicates += 1
                    continue
                if c.file is None:  # before anything of this run was taken (nothing closes)
                    self._reopen(c)
                parts.append(mv[x:y])
                seen[key] = (t, hunter_id)
                keys.append(key)
                if len(seen) > c.seen_limit:
                    c.last_ns = last
                    self._prune_seen(c)
                    seen = c.seen
                nbytes += y - x - _RECORD_HEADER_LEN
                if t > last:
                    last = t
                elif t < start:
                    start = t
                    earlier = True
                touch = j
                taken.append(j)
            n = len(parts)
            if not n:
                return -1, dirty_at
            c.pend += b"".join(parts)
            c.start_ns = start
            if earlier:
                c.meta = True
            run = taken
        c.npend += n
        if self._journal is not None:
            self._journal.append(("S", c, keys))
        codes = list(map(cols.proto.__getitem__, run))
        c.packets += n
        c.bytes += nbytes
        c.rtp += codes.count(1)
        c.sip += codes.count(2)
        c.rtcp += codes.count(3)
        c.last_ns = last
        if last > last0 and last > self._clock:
            self._clock = last
        if not c.dirty:
            c.dirty = True
            self._dirty.append(c)
        if c.late:
            self._late_packets += n
        self._packets += n
        self._bytes += nbytes
        if not was_dirty and dirty_at < 0:  # made dirty by its first packet taken
            dirty_at = run[0]
        return touch, dirty_at

    # -- undo

    def mark(self) -> tuple:
        """Where the writer stands now, for :meth:`rollback` (until the next flush)."""
        if self._journal is None:
            self._journal = []
        self._gen += 1
        counters = tuple(getattr(self, k) for k in _COUNTERS)
        return (len(self._journal), counters, self._clock, len(self._dirty))

    def rollback(self, mark: tuple) -> None:
        """Take back everything written since ``mark`` (see the module docstring).

        Raises:
            OSError: a file cannot be cut back (the writer is then unreliable).
        """
        pos, counters, clock, ndirty = mark
        journal = self._journal
        if journal is None or pos > len(journal):
            raise ValueError("rollback to a mark from before the last flush")
        while len(journal) > pos:
            entry = journal.pop()
            kind = entry[0]
            if kind == "s":
                entry[1].seen.pop(entry[2], None)
            elif kind == "S":  # a run of write_dense
                seen = entry[1].seen
                for key in reversed(entry[2]):
                    seen.pop(key, None)
            elif kind == "c":
                self._restore(entry[1], entry[2], entry[3], entry[4])
            else:
                self._forget(entry[1], entry[2])
        for k, v in zip(_COUNTERS, counters, strict=True):
            setattr(self, k, v)
        self._clock = clock
        del self._dirty[ndirty:]
        self._gen += 1

    def _snap(self, c: _Call) -> None:
        c.gen = self._gen
        assert self._journal is not None
        self._journal.append(("c", c, _snapshot(c), set(c.hunters), len(c.pend)))

    def _restore(self, c: _Call, snap: tuple, hunters: set[str], npend_bytes: int) -> None:
        old = dict(zip(_SNAPSHOT, snap, strict=True))
        if c.path != old["path"]:  # a new file was started since: remove it
            if c.file is not None:
                c.file.close()
                c.file = None
                self._lru.pop(c.call_id, None)
            with contextlib.suppress(OSError):
                os.unlink(c.path)
        elif c.size > old["size"]:  # written since (a file closed to bound them, a flush)
            if c.file is not None:
                c.file.cut_back(old["size"])
            else:
                os.truncate(c.path, old["size"])
        for k, v in old.items():
            setattr(c, k, v)
        c.hunters = hunters
        del c.pend[npend_bytes:]

    def _forget(self, c: _Call, created: bool) -> None:
        """Undo the start of a call: out of memory; its file removed if it was new."""
        self._calls.pop(c.call_id, None)
        self._lru.pop(c.call_id, None)
        if c.file is not None:
            c.file.close()
            c.file = None
        if created:
            with contextlib.suppress(OSError):
                os.unlink(c.path)

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
        c.gen = self._gen
        row = self._index.get(call_id)
        created = True
        if row is not None:
            c.restore(row)
            c.late = c.state in _FINAL
            w = self._continue(c.path, c.recorded_size())
            if w is not None:
                self._adopt(c, w)
                c.linktype = w.linktype
                self._reopened += 1
                created = False
            else:
                self._files_replaced += 1
                c.reset_counts()
                self._create(c, hunter_id, c.start_ns)
        else:
            if sip is not None:
                self._take_parties(c, sip)
            self._create(c, hunter_id, ts_ns)
            self._calls_opened += 1
        if self._journal is not None:
            self._journal.append(("n", c, created))
        if ts_ns > self._clock:
            self._clock = ts_ns
        self._calls[call_id] = c
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
                w = PcapWriter(path, c.linktype, exclusive=True, buffered=False)
            except FileExistsError:
                continue
            break
        else:
            raise LcError(f"no free file name for call {c.call_id!r} in {self._dir}")
        if self._fsync:
            _fsync_dir(self._dir)
        c.path = path
        c.meta = True
        self._adopt(c, w)

    @staticmethod
    def _continue(path: str, size: int) -> PcapWriter | None:
        """A call's file continued after its first ``size`` bytes (the PCAP writer's
        resume: bytes past ``size``, never committed to the index, are cut off); None
        if unusable: missing, not our nanosecond pcap, or shorter than ``size``."""
        if size < _HEADER_LEN:
            return None
        try:
            return PcapWriter.resume(path, None, size)
        except (OSError, ParseError):
            return None

    def _adopt(self, c: _Call, w: PcapWriter) -> None:
        c.file = w
        c.size = w.bytes
        self._track_open(c)

    def _reopen(self, c: _Call) -> None:
        """Reopen a tracked call's file (closed to respect max_open_files) to append."""
        w = self._continue(c.path, c.size)
        if w is not None and w.linktype == c.linktype:
            self._adopt(c, w)
            self._reopened += 1
        else:  # gone or changed behind our back: start afresh rather than append to it
            if w is not None:
                w.close()
            self._files_replaced += 1
            c.reset_counts()
            c.pend.clear()
            c.npend = 0
            self._create(c, next(iter(sorted(c.hunters)), ""), c.start_ns)

    def _track_open(self, c: _Call) -> None:
        lru = self._lru
        lru[c.call_id] = c
        lru.move_to_end(c.call_id)
        if len(lru) <= self._max_open:
            return
        # Close the least recently written, writing what it holds; while undo is on,
        # only a call untouched since the last mark (whose size that mark knows).
        gen = self._gen if self._journal is not None else None
        for old in list(lru.values()):
            if len(lru) <= self._max_open:
                break
            if old is c or old.gen == gen:
                continue
            self._close_file(old)

    def _write_pending(self, c: _Call) -> None:
        if c.npend:
            assert c.file is not None
            c.file.write_records(c.pend, c.npend)  # cuts itself back if it fails
            c.size = c.file.bytes
            c.pend.clear()
            c.npend = 0

    def _close_file(self, c: _Call) -> None:
        f = c.file
        if f is None:
            return
        self._write_pending(c)
        c.file = None
        self._lru.pop(c.call_id, None)
        if self._fsync:
            f.fsync()
        f.close()
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
            self._journal = None  # what tick closed cannot be taken back
        return len(done)

    # -- flushing and closing

    def flush(self, defer: bool = False):
        """Write every call's pending records (one write per call; fsync if asked),
        then commit their calls' rows to the index in one transaction.

        With ``defer``, return the rows instead, as ``(rows, counts)`` for
        :meth:`CallIndex.statements`, for the caller to commit in its own transaction.
        After a flush, earlier marks are void.

        Raises:
            OSError: a file cannot be written; every file written by this flush is cut
                back as it was, so :meth:`rollback` to an earlier mark still holds.
        """
        dirty = self._dirty
        if not dirty:
            self._journal = None
            return ([], []) if defer else None
        written: list[tuple[_Call, bytes, int]] = []
        try:
            for c in dirty:
                if c.npend:
                    if c.file is None:
                        self._reopen(c)
                    pend, npend = bytes(c.pend), c.npend
                    self._write_pending(c)
                    written.append((c, pend, npend))
                if self._fsync and c.file is not None:
                    c.file.fsync()
        except OSError:
            for c, pend, npend in written:  # as before this flush, pending again
                if c.file is not None:
                    c.file.cut_back(c.size - len(pend))
                    c.size = c.file.bytes
                c.pend[:0] = pend
                c.npend += npend
            raise
        rows = [c.row() for c in dirty if c.meta]
        counts = [c.counts() for c in dirty if not c.meta]
        if not defer:
            self._index.commit(rows, counts)
        for c in dirty:
            c.dirty = c.meta = False
        self._dirty = []
        self._journal = None
        self._trim_open()
        return (rows, counts) if defer else None

    def _trim_open(self) -> None:
        lru = self._lru
        while len(lru) > self._max_open:
            _, old = next(iter(lru.items()))
            self._close_file(old)

    def close(self) -> None:
        """Close every file and commit every pending row; safe to call twice.

        Calls still going stay ringing or answered in the index: a later writer on
        the same directory and index continues their files.
        """
        if self._closed:
            return
        self.flush()
        for c in list(self._lru.values()):
            self._close_file(c)
        self._closed = True
        self._calls.clear()
        self._heap.clear()

    # -- state

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
        return len(self._calls)

    @property
    def clock_ns(self) -> int:
        """The largest capture timestamp written so far (the writer's clock)."""
        return self._clock

    @property
    def directory(self) -> Path:
        return Path(self._dir)

    def call_path(self, call_id: str) -> str:
        """The file of a call in memory ("" if none): the event log names it."""
        c = self._calls.get(call_id)
        return c.path if c is not None else ""

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
