"""Accepting packet batches: queue, deduplicate, write, commit, acknowledge.

Pure of gRPC. Each hunter's stream hands its batches to :meth:`Ingest.submit`; one
writer thread takes everything queued at once (a *group*), writes the batches that
are new, hands the bytes to the OS, commits the group to the :class:`Ledger` in one
transaction, and only then acknowledges each batch through the callback it came
with. An Ack therefore means "in the output file, and known to be there after a
crash" (see :mod:`lc.processor.ledger` for why the two always agree).

Deduplication is by (hunter id, epoch, sequence) against the ledger's ranges, so a
batch sent again after a reconnect, or replayed from a hunter's disk spool after
either side restarted, is acknowledged without being written twice.

Flow control comes from the real depth of the writer's queue (batches received and
not yet written), with hysteresis:

==========================  ==============================================
queue depth                 state announced to every hunter
==========================  ==============================================
>= ``pause_depth`` batches  PAUSE: stop sending, spool to disk
  or 3/4 of the byte cap
>= ``slow_depth``           SLOW: send less often, in bigger batches
<= ``resume_depth``         CONTINUE (announced as RESUME after SLOW/PAUSE)
==========================  ==============================================

Streams poll :attr:`Ingest.flow` on their own, so RESUME reaches a paused hunter
that sends nothing. The queue itself is bounded by bytes: a stream whose batch does
not fit waits, which gRPC's flow control turns into back-pressure on that hunter.

Per-call PCAPs. With a :class:`~lc.processor.calls.CallWriter` (``calls``), a group
is written in three steps: (1) each new batch's packets that carry a Call-ID go to
their calls' files (buffered); (2) ``calls.flush(defer=True)`` hands those files to
the OS; (3) each batch goes to the unified output and is marked in the ledger, which
is then committed together with the call index's rows, in one transaction (so after a
crash the call files, cut back to the index's lengths, agree with the ledger too);
then ``calls.tick()`` closes the calls that are over. An Ack therefore means "in the
unified file and in its call files". A batch whose call write fails is not written
to the unified file nor acknowledged (the hunter sends it again; the CallWriter drops
the packets of it that it already holds, by their timestamp and bytes); a failed
``calls.flush()`` fails every new batch of the group the same way. The per-call work
runs on the writer thread, so it counts in the queue depth that drives flow control.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import accumulate, compress, repeat
from operator import add, truth

from lc.common.errors import LcError
from lc.common.pcapfile import PcapSink
from lc.common.wire import BatchRecords, unpack_batch
from lc.processor.calls import CallIndex, CallWriter, SipSummary
from lc.processor.ledger import Ledger
from lc.proto import lc_pb2

__all__ = ["Ingest", "flow_to_announce"]

log = logging.getLogger(__name__)

SLOW_DEPTH = 16
PAUSE_DEPTH = 48  # below a hunter's in-flight window (64), so one hunter can trigger it
RESUME_DEPTH = 4
MAX_QUEUE_BYTES = 256 * 1024 * 1024
_GROUP_BYTES = 32 * 1024 * 1024  # a group's commit waits for at most this much writing
_NS = 1_000_000_000
_RECORD_TS = struct.Struct("<II").unpack_from  # seconds, nanoseconds of a record header

Reply = Callable[[lc_pb2.Ack | LcError | OSError], None]


@dataclass(slots=True)
class _Item:
    hunter_id: str
    epoch: int
    sequence: int
    cols: BatchRecords
    reply: Reply
    size: int


class Ingest:
    def __init__(
        self,
        sink: PcapSink,
        ledger: Ledger | None = None,
        output: str = "",
        max_queue_bytes: int = MAX_QUEUE_BYTES,
        slow_depth: int = SLOW_DEPTH,
        pause_depth: int = PAUSE_DEPTH,
        resume_depth: int = RESUME_DEPTH,
        slow_writer_file: str | None = None,
        calls: CallWriter | None = None,
    ) -> None:
        self.sink = sink
        self.calls = calls  # per-call PCAPs; owned by the writer thread from start()
        self.ledger = ledger if ledger is not None else Ledger(":memory:")
        self.output = output or os.path.abspath(sink.path)
        self.max_queue_bytes = max_queue_bytes
        self.slow_depth = slow_depth
        self.pause_depth = pause_depth
        self.resume_depth = resume_depth
        self.slow_writer_file = slow_writer_file
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._queue_bytes = 0
        self._busy = 0  # batches taken by the writer and not yet acknowledged
        self._closing = False
        self._closed = False
        self._flow = lc_pb2.FLOW_CONTINUE
        self._writer: threading.Thread | None = None
        self.packets = 0
        self.bytes = 0
        self.batches = 0
        self.received = 0
        self.duplicates = 0
        self.write_errors = 0
        self.call_write_errors = 0  # batches refused because their call files failed
        self.groups = 0
        self.filter_matches: dict[str, int] = {}
        self.extra_writers: list[Callable[[list[tuple[str, BatchRecords]]], None]] = []

    # -- producer side (stream threads) ----------------------------------------------
    def start(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._run, name="lc-writer", daemon=True)
            self._writer.start()

    def submit(self, batch: lc_pb2.PacketBatch, cols: BatchRecords, reply: Reply) -> None:
        """Queue a checked batch; ``reply`` gets its Ack (or the error) once written.

        Waits while the queue is over its byte cap (back-pressure on that stream).
        """
        size = len(cols.records) + 64
        item = _Item(batch.hunter_id, batch.epoch, batch.sequence, cols, reply, size)
        with self._cond:
            while (
                self._queue_bytes + size > self.max_queue_bytes
                and self._queue
                and not self._closing
            ):
                self._cond.wait(0.5)
            if self._closed:
                raise LcError("the processor is shutting down")
            self._queue.append(item)
            self._queue_bytes += size
            self.received += 1
            self._update_flow()
            self._cond.notify_all()

    def accept(
        self, batch: lc_pb2.PacketBatch, timeout: float = 30.0
    ) -> tuple[lc_pb2.Ack, int, int]:
        """Submit one batch and wait for it to be written: (ack, packets, bytes).

        Raises:
            ParseError: the batch's columns are inconsistent (nothing is written).
            OSError: it could not be written.
        """
        cols = unpack_batch(batch)
        self.start()
        done = threading.Event()
        box: list[object] = []

        def reply(r: object) -> None:
            box.append(r)
            done.set()

        self.submit(batch, cols, reply)
        if not done.wait(timeout):
            raise LcError("the writer did not answer in time")
        r = box[0]
        if isinstance(r, BaseException):
            raise r
        assert isinstance(r, lc_pb2.Ack)
        n = 0 if r.duplicate else len(cols)
        return r, n, 0 if r.duplicate else len(cols.records) - 16 * len(cols)

    # -- the writer --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait(0.5)
                if not self._queue and self._closing:
                    return
                group: list[_Item] = []
                nbytes = 0
                while self._queue and nbytes < _GROUP_BYTES:
                    it = self._queue.popleft()
                    group.append(it)
                    nbytes += it.size
                self._queue_bytes -= nbytes
                self._busy = len(group)
                self._cond.notify_all()
            try:
                self._write_group(group)
            except Exception:  # a bug: report it to every hunter in the group, go on
                log.exception("writing a group of %d batches failed", len(group))
                for it in group:
                    it.reply(LcError("processor error while writing"))
            with self._cond:
                self._busy = 0
                self._update_flow()
                self._cond.notify_all()

    def _write_group(self, group: list[_Item]) -> None:
        ledger = self.ledger
        calls = self.calls
        # Per batch of the group: its reply (an Ack or an error), or the position of an
        # earlier copy of the same batch in this group, whose fate it shares.
        results: list[object] = [None] * len(group)
        fresh: list[int] = []  # new batches, in order (already in their call files)
        first: dict[tuple[str, int, int], int] = {}
        for k, it in enumerate(group):
            if self.slow_writer_file and os.path.exists(self.slow_writer_file):
                time.sleep(0.05)  # test hook: a writer that cannot keep up
            key = (it.hunter_id, it.epoch, it.sequence)
            if ledger.written(it.hunter_id, it.epoch, it.sequence):
                self.duplicates += 1
                results[k] = lc_pb2.Ack(epoch=it.epoch, sequence=it.sequence, duplicate=True)
                continue
            earlier = first.get(key)
            if earlier is not None:
                results[k] = earlier
                continue
            if calls is not None:
                try:
                    _write_calls(calls, it.hunter_id, it.cols)
                except (OSError, LcError, sqlite3.Error) as e:
                    self.write_errors += 1
                    self.call_write_errors += 1
                    log.error(
                        "cannot write batch %d of %s to its call files: %s",
                        it.sequence,
                        it.hunter_id,
                        e,
                    )
                    results[k] = _reply_error(e)
                    continue
            first[key] = k
            fresh.append(k)
        pending_calls = None
        if calls is not None:
            try:
                # Files handed to the OS now; their index rows are committed with the
                # ledger below, in one transaction: an Ack implies the call files too,
                # and after a crash the call files are cut back to what the ledger has.
                pending_calls = calls.flush(defer=True)
            except (OSError, LcError, sqlite3.Error) as e:
                self.write_errors += 1
                self.call_write_errors += len(fresh)
                log.error("cannot flush the call files (%d batches refused): %s", len(fresh), e)
                err = _reply_error(e)
                for k in fresh:
                    results[k] = err
                fresh = []
        written: list[tuple[str, BatchRecords]] = []
        fm = self.filter_matches
        for k in fresh:
            it = group[k]
            cols = it.cols
            try:
                for linktype, records, count in cols.linktype_groups():
                    self.sink.write_records(linktype, records, count)
            except OSError as e:
                self.write_errors += 1
                log.error("cannot write batch %d of %s: %s", it.sequence, it.hunter_id, e)
                results[k] = e
                continue
            ledger.mark(it.hunter_id, it.epoch, it.sequence)
            written.append((it.hunter_id, cols))
            for m in cols.meta:
                for fid in m.filter_ids:
                    fm[fid] = fm.get(fid, 0) + 1
            if cols.meta_ref is not None and cols.meta_table:
                for ref, n in Counter(cols.meta_ref).items():  # dense: count at C speed
                    if ref:
                        for fid in cols.meta_table[ref - 1].filter_ids:
                            fm[fid] = fm.get(fid, 0) + n
            self.packets += len(cols)
            self.bytes += len(cols.records) - 16 * len(cols)
            self.batches += 1
            results[k] = lc_pb2.Ack(epoch=it.epoch, sequence=it.sequence, packets=len(cols))
        for k, r in enumerate(results):
            if isinstance(r, int):  # a copy of batch r: acknowledged as a duplicate if it was
                r = results[r]
                if isinstance(r, lc_pb2.Ack):
                    self.duplicates += 1
                    it = group[k]
                    r = lc_pb2.Ack(epoch=it.epoch, sequence=it.sequence, duplicate=True)
                results[k] = r
        for w in self.extra_writers:
            w(written)
        try:
            self.sink.flush()
            ledger.file_state(self.output, self.sink.state())
            extra = CallIndex.statements(*pending_calls) if pending_calls else ()
            ledger.commit(time.time_ns(), extra)
        except Exception as e:
            log.error("cannot commit what was written: %s", e)
            err = LcError(f"processor cannot record what it wrote: {e}")
            results = [err] * len(group)
        if calls is not None:
            try:
                calls.tick(calls.clock_ns)  # closes finished calls, flushed and committed
            except Exception:
                log.exception("closing finished calls failed")
        self.groups += 1
        for it, r in zip(group, results, strict=True):
            it.reply(r)  # type: ignore[arg-type]

    # -- flow ----------------------------------------------------------------------------
    def _update_flow(self) -> None:
        # Hysteresis: SLOW/PAUSE hold until the queue is nearly empty again.
        depth = len(self._queue) + self._busy
        if depth >= self.pause_depth or self._queue_bytes >= self.max_queue_bytes * 3 // 4:
            self._flow = lc_pb2.FLOW_PAUSE
        elif depth >= self.slow_depth and self._flow != lc_pb2.FLOW_PAUSE:
            self._flow = lc_pb2.FLOW_SLOW
        elif depth <= self.resume_depth:
            self._flow = lc_pb2.FLOW_CONTINUE

    @property
    def flow(self) -> int:
        """CONTINUE, SLOW or PAUSE; each stream turns a return to CONTINUE into RESUME."""
        return self._flow

    @property
    def queue_batches(self) -> int:
        return len(self._queue) + self._busy

    @property
    def queue_bytes(self) -> int:
        return self._queue_bytes

    def close(self) -> None:
        """Stop taking batches, write (and commit) everything queued, fsync, close."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._writer is not None:
            self._writer.join()
        with self._cond:
            self._closed = True
            leftover = list(self._queue)  # only if the writer never started
            self._queue.clear()
        if leftover:
            self._write_group(leftover)
        if self.calls is not None:
            try:
                self.calls.close()  # every call file closed, every row committed
            except OSError as e:
                log.error("cannot close the call files: %s", e)
        self.sink.flush()
        self.sink.fsync()
        self.ledger.file_state(self.output, self.sink.state())
        self.ledger.commit(time.time_ns())
        self.sink.close()


def _write_calls(calls: CallWriter, hunter_id: str, cols: BatchRecords) -> None:
    """Write each packet of a batch that carries a Call-ID to its call's file.

    The hot path of per-call capture. What a PacketMeta means (call, protocol, SIP
    summary) is worked out once per distinct PacketMeta (a dense batch shares a few
    table entries between all its packets); the per-packet loop then only cuts the
    record out, reads its timestamp and calls :meth:`CallWriter.write`. (C-level maps
    for the cutting and the timestamps too measured slower: they keep thousands of
    objects alive at once, which sets the garbage collector off.)

    Raises:
        OSError: from the CallWriter; the batch must not be acknowledged.
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


def _reply_error(e: Exception) -> LcError | OSError:
    """What a hunter is told when its batch could not go to its call files."""
    if isinstance(e, OSError | LcError):
        return e
    return LcError(f"cannot record the calls: {e}")


def _call_of(m: lc_pb2.PacketMeta) -> tuple[str, str, SipSummary | None] | None:
    """(call id, protocol, SIP summary or None) of a packet's metadata; None: no call."""
    call_id = m.session_id
    if not call_id:
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


def flow_to_announce(announced: int, state: int) -> int | None:
    """What a stream tells its hunter now, given what it said last; None for nothing.

    A return to CONTINUE after SLOW or PAUSE is announced as RESUME, unprompted, so
    a paused hunter (which sends nothing) is never left waiting.
    """
    if state == lc_pb2.FLOW_CONTINUE:
        if announced in (lc_pb2.FLOW_SLOW, lc_pb2.FLOW_PAUSE):
            return lc_pb2.FLOW_RESUME
        return None
    return None if state == announced else state
