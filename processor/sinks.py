"""What the processor's writer does with a batch: sinks inside the commit, observers after.

Two kinds of outputs, by what they promise:

* A **sink** writes something that must agree with the acknowledgement: the unified
  PCAP (:class:`UnifiedPcap`), the per-call files (:class:`CallFiles`), the event log
  (:class:`lc.processor.eventlog.EventLog`), an edge's upstream spool
  (:class:`lc.processor.forward.Forwarder`: what the edge acknowledged must reach its
  upstream). The writer (:mod:`lc.processor.ingest`)
  drives every sink through the same steps:

  1. per batch, :meth:`Sink.mark` then :meth:`Sink.write`; a batch that fails in any
     sink is taken back from every sink that got it (:meth:`Sink.rollback` to the
     mark), so it is in all outputs or in none, and the hunter's resend writes it once;
  2. per group, :meth:`Sink.prepare` hands what is written to the OS and returns the
     sink's statements for the ledger (its committed sizes, its index rows); a failed
     prepare takes the whole group back (rollback to the group's mark);
  3. the ledger commits the group's batches and every sink's statements in one SQLite
     transaction, and only then are the batches acknowledged;
  4. :meth:`Sink.committed` lets a sink act on what is now durable (close finished
     calls, rotate a file).

  On start each sink cuts its files back to the sizes the ledger holds, so after a
  crash the outputs hold exactly the acknowledged batches.

* An **observer** (:class:`Observer`) learns about committed batches afterwards, on
  its own thread, and can never delay or fail an acknowledgement: metrics, status
  counters. Its queue is bounded; when it is full the
  oldest notifications are dropped and counted (``Observers.dropped``).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, compress, repeat
from operator import add, truth
from typing import Any, Protocol

from lc.common.pcapwriter import PcapSink
from lc.common.sipcall import SipSummary
from lc.common.wire import BatchRecords
from lc.processor.callfiles import CallWriter
from lc.processor.callindex import CallIndex
from lc.processor.ledger import Ledger
from lc.proto import lc_pb2

__all__ = [
    "CallFiles",
    "Observer",
    "Observers",
    "Received",
    "Sink",
    "StatusCounters",
    "UnifiedPcap",
]

log = logging.getLogger(__name__)

Statements = Sequence[tuple[str, Sequence[tuple[Any, ...]]]]

_NS = 1_000_000_000


@dataclass(slots=True)
class Received:
    """One batch the writer took: who sent it and its checked content."""

    hunter_id: str
    epoch: int
    sequence: int
    cols: BatchRecords


class Sink(Protocol):
    """An output written inside the ledger's transaction (see the module docstring).
    A sink may also have ``idle(now)``, which the writer calls (on its thread, at most
    every half second) while no batch comes; ``now`` is time.monotonic()."""

    name: str

    def mark(self) -> object: ...

    def write(self, batch: Received) -> None: ...

    def rollback(self, mark: object) -> None: ...

    def prepare(self) -> Statements: ...

    def committed(self) -> None: ...

    def close(self) -> Statements: ...


class Observer(Protocol):
    """Told about committed batches after their acknowledgement; never fails one."""

    def observe(self, batches: Sequence[Received]) -> None: ...


# -- the unified PCAP ------------------------------------------------------------------


class UnifiedPcap:
    """Every packet of every batch, by link type, into the ``-w`` output (a PcapSink).

    Its committed files and sizes are the ledger's ``sink_files`` rows. A batch whose
    link type cannot be written (out of range) fails alone, never its group.
    """

    name = "pcap"

    def __init__(self, sink: PcapSink, ledger: Ledger, output: str) -> None:
        self.sink = sink
        self.ledger = ledger
        self.output = output

    def mark(self) -> object:
        return self.sink.mark()

    def write(self, batch: Received) -> None:
        for linktype, records, count in batch.cols.linktype_groups():
            self.sink.write_records(linktype, records, count)

    def rollback(self, mark: object) -> None:
        self.sink.rollback(mark)  # type: ignore[arg-type]

    def prepare(self) -> Statements:
        self.sink.flush()
        self.ledger.file_state(self.output, self.sink.state())
        return ()

    def committed(self) -> None:
        pass

    def close(self) -> Statements:
        self.sink.flush()
        self.sink.fsync()
        self.ledger.file_state(self.output, self.sink.state())
        self.sink.close()
        return ()


# -- the per-call files ------------------------------------------------------------------


class CallFiles:
    """The packets that carry a Call-ID into their calls' files (a CallWriter); the
    call index's rows are the ledger statements. Rows handed out by :meth:`prepare`
    are handed out again until a commit took them."""

    name = "calls"

    def __init__(self, calls: CallWriter) -> None:
        self.calls = calls
        self._rows: list[tuple[Any, ...]] = []
        self._counts: list[tuple[Any, ...]] = []
        self._given = (0, 0)
        self._at = 0.0  # when the last group was committed (monotonic)

    def mark(self) -> object:
        return self.calls.mark()

    def write(self, batch: Received) -> None:
        write_calls(self.calls, batch.hunter_id, batch.cols)

    def rollback(self, mark: object) -> None:
        self.calls.rollback(mark)  # type: ignore[arg-type]

    def prepare(self) -> Statements:
        rows, counts = self.calls.flush(defer=True)
        self._rows += rows
        self._counts += counts
        self._given = (len(self._rows), len(self._counts))
        return CallIndex.statements(self._rows, self._counts)

    def committed(self) -> None:
        r, c = self._given
        del self._rows[:r]
        del self._counts[:c]
        self._given = (0, 0)
        calls = self.calls
        calls.tick(calls.clock_ns)  # closes finished calls, flushed and committed
        self._at = time.monotonic()

    def idle(self, now: float) -> None:
        """No batch since :meth:`committed` (``now``: time.monotonic()): the capture
        clock moves on by the time that passed, so a call that ended shortly before
        the last packet (a replay's last call, a quiet link's) closes after its grace
        instead of staying open until more packets come. Packets that do come for it
        later continue its file (``late_packets``)."""
        calls = self.calls
        if calls.calls and self._at:
            calls.tick(calls.clock_ns + int((now - self._at) * 1e9))

    def close(self) -> Statements:
        self.calls.close()  # every call file closed, every row committed
        return ()


def write_calls(calls: CallWriter, hunter_id: str, cols: BatchRecords) -> None:
    """Write each packet of a batch that carries a Call-ID to its call's file.

    The hot path of per-call capture. What a PacketMeta means (call, protocol, SIP
    summary) is worked out once per distinct PacketMeta (a dense batch shares a few
    table entries between all its packets); the per-packet loop then only cuts the
    record out, reads its timestamp and calls :meth:`CallWriter.write`. (C-level maps
    for the cutting and the timestamps too measured slower: they keep thousands of
    objects alive at once, which sets the garbage collector off.)

    Raises:
        OSError: from the CallWriter; the batch must be taken back.
    """
    # Per packet, what its metadata means, as BatchRecords.packet_meta() resolves it
    # (the dense table entry, else the sparse entry), but without a PacketMeta list:
    # each table entry is interpreted once, and the per-packet step is a C-level map.
    ref = cols.meta_ref
    whats: Iterable
    if ref is not None:
        table = [None, *map(_call_of, cols.meta_table)]
        whats = list(map(table.__getitem__, ref))
        for m in cols.meta:
            if not ref[m.index]:
                whats[m.index] = _call_of(m)
    elif cols.meta:
        whats = [None] * len(cols)
        for m in cols.meta:
            whats[m.index] = _call_of(m)
    else:
        return
    keep = list(map(truth, whats))
    if not any(keep):
        return
    offsets = list(accumulate(map(add, cols.caplen, repeat(16)), initial=0))
    starts: Iterable[int] = offsets[:-1]
    ends: Iterable[int] = offsets[1:]
    iface = cols.iface
    linktypes = [lt for _, lt in cols.interfaces]
    lts: Iterable[int] = (
        repeat(linktypes[0]) if iface is None else map(linktypes.__getitem__, iface)
    )
    if not all(keep):
        whats = compress(whats, keep)
        starts = compress(starts, keep)
        ends = compress(ends, keep)
        lts = compress(lts, keep)
    records = cols.records
    write = calls.write
    unpack = _RECORD_TS
    # Not strict: lts may be an endless repeat.
    for (call_id, protocol, sip), start, end, linktype in zip(
        whats, starts, ends, lts, strict=False
    ):
        sec, ns = unpack(records, start)
        write(call_id, hunter_id, sec * _NS + ns, records[start:end], linktype, protocol, sip)


CALL_PROTOCOLS = frozenset(("sip", "rtp", "rtcp"))  # PacketMeta.protocol of a VoIP call's packets
_RECORD_TS = struct.Struct("<II").unpack_from  # seconds, nanoseconds of a record header


def _call_of(m: lc_pb2.PacketMeta) -> tuple[str, str, SipSummary | None] | None:
    """(call id, protocol, SIP summary or None) of a packet's metadata; None: no call
    (no session, or the session of another mode: a DNS transaction, a mail session)."""
    call_id = m.session_id
    if not call_id or m.protocol not in CALL_PROTOCOLS:
        return None
    sip = None
    if m.HasField("sip"):
        s = m.sip
        if s.method or s.status:
            sip = SipSummary(
                method=s.method,
                status=s.status,
                cseq_method=s.cseq_method,
                from_user=s.from_user,
                to_user=s.to_user,
                from_uri=s.from_uri,
                to_uri=s.to_uri,
            )
    return call_id, m.protocol, sip


# -- observers ---------------------------------------------------------------------------


class StatusCounters:
    """Packets per matched filter id, and events by dataset, for ``lc show status``.

    Both keys come from hunters, so each table keeps at most ``max_keys`` names; what
    comes later under a new name is counted under ``OTHER``."""

    OTHER = "(other)"

    def __init__(self, max_keys: int = 1024) -> None:
        self._lock = threading.Lock()
        self.max_keys = max_keys
        self.filter_matches: dict[str, int] = {}
        self.events: dict[str, int] = {}

    def observe(self, batches: Sequence[Received]) -> None:
        fm: Counter[str] = Counter()
        ev: Counter[str] = Counter()
        for b in batches:
            cols = b.cols
            for m in cols.meta:
                for fid in m.filter_ids:
                    fm[fid] += 1
            if cols.meta_ref is not None and cols.meta_table:
                for ref, n in Counter(cols.meta_ref).items():  # dense: count at C speed
                    if ref:
                        for fid in cols.meta_table[ref - 1].filter_ids:
                            fm[fid] += n
            for _, e in cols.events:
                ev[e.dataset] += 1
        with self._lock:
            self._add(self.filter_matches, fm)
            self._add(self.events, ev)

    def _add(self, table: dict[str, int], counts: Counter[str]) -> None:
        for k, n in counts.items():
            if k not in table and len(table) >= self.max_keys:
                k = self.OTHER
            table[k] = table.get(k, 0) + n

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.filter_matches), dict(self.events)


class Observers:
    """Runs observers on one thread, fed with committed batches through a bounded queue."""

    def __init__(self, observers: Sequence[Observer] = (), max_pending: int = 4096) -> None:
        self.observers = list(observers)
        self.max_pending = max_pending
        self.dropped = 0  # groups of batches never shown to the observers (queue full)
        self.failures = 0  # observer calls that raised (logged)
        self._cond = threading.Condition()
        self._queue: deque[Sequence[Received]] = deque()
        self._submitted = 0
        self._done = 0
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.observers:
            self._thread = threading.Thread(target=self._run, name="lc-observers", daemon=True)
            self._thread.start()

    def submit(self, batches: Sequence[Received]) -> None:
        """Hand over committed batches; never waits."""
        if not self.observers or not batches:
            return
        with self._cond:
            if len(self._queue) >= self.max_pending:
                self._queue.popleft()
                self.dropped += 1
                self._done += 1
            self._queue.append(batches)
            self._submitted += 1
            self._cond.notify_all()

    def settle(self, timeout: float = 1.0) -> bool:
        """Wait until every batch submitted so far was observed (status reads)."""
        if self._thread is None:
            return True
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait(0.5)
                if not self._queue:
                    return
                item = self._queue.popleft()
            for o in self.observers:
                try:
                    o.observe(item)
                except Exception:
                    self.failures += 1
                    log.exception("observer %s failed", type(o).__name__)
            with self._cond:
                self._done += 1
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)


def fsync_dir(path: str) -> None:
    """Make a directory's entries (files created, removed) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
