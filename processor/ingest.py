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
not yet written) beyond one batch per hunter, and from how long writing that backlog
would take, with hysteresis. Every hunter that keeps up has a batch waiting for the
next group most of the time, so 50 hunters keep ~50 batches queued while the writer
keeps up: counting those would PAUSE them all (and make them spool to disk) for
nothing. The depth is therefore the batches queued behind another batch of the same
hunter. And a backlog the writer clears in a few milliseconds (16 small batches of
one fast hunter) is no overload: a state needs both its depth and its *work*, the
depth times the writer's recent time per batch (or the time its current group has
taken so far, per batch, when that is longer):

===========================================  =======================================
queue                                        state announced to every hunter
===========================================  =======================================
depth >= ``pause_depth`` and work >= 0.25 s  PAUSE: stop sending, spool to disk
  or 3/4 of the byte cap
depth >= ``slow_depth`` and work >= 50 ms    SLOW: send less often, in bigger batches
depth <= ``resume_depth`` or work < 12.5 ms  CONTINUE (announced as RESUME after
  and under half the byte cap                SLOW/PAUSE)
===========================================  =======================================

Streams poll :attr:`Ingest.flow` on their own, so RESUME reaches a paused hunter
that sends nothing. The queue itself is bounded by bytes: a stream whose batch does
not fit waits, which gRPC's flow control turns into back-pressure on that hunter.

What a group's batches go to: every output that must agree with the Ack is a
*sink* written inside the ledger's transaction (the per-call files, the event log,
the unified PCAP: see :mod:`lc.processor.sinks` for the steps), and a batch that
fails in any of them is taken back from all; things that must never delay an Ack
(status counters, metrics) *observe* the committed batches afterwards, on their own
thread. The per-call and event work runs on the writer thread, so it counts in the
queue depth that drives flow control.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lc.common.errors import LcError
from lc.common.metrics import Buckets
from lc.common.pcapwriter import PcapSink
from lc.common.text import log_text
from lc.common.wire import BatchRecords, unpack_batch
from lc.processor.callfiles import CallWriter
from lc.processor.ledger import Ledger
from lc.processor.sinks import (
    CallFiles,
    Observer,
    Observers,
    Received,
    Sink,
    StatusCounters,
    UnifiedPcap,
)
from lc.proto import lc_pb2

__all__ = ["Ingest", "flow_to_announce"]

log = logging.getLogger(__name__)

SLOW_DEPTH = 16
PAUSE_DEPTH = 48  # below a hunter's in-flight window (64), so one hunter can trigger it
RESUME_DEPTH = 4
SLOW_WORK_S = 0.05  # seconds of writing queued before SLOW (with slow_depth batches)
PAUSE_WORK_S = 0.25  # ... before PAUSE (with pause_depth batches)
MAX_QUEUE_BYTES = 256 * 1024 * 1024
_GROUP_BYTES = 32 * 1024 * 1024  # a group's commit waits for at most this much writing
_IDLE_S = 0.5  # the writer's housekeeping while no batch comes, at most this often

Reply = Callable[[lc_pb2.Ack | LcError | OSError], None]

# What a sink may raise for one batch (or a group): the batch fails, nothing else.
_WRITE_ERRORS = (OSError, LcError, ValueError, sqlite3.Error)


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
        slow_work_s: float = SLOW_WORK_S,
        pause_work_s: float = PAUSE_WORK_S,
        slow_writer_file: str | None = None,
        calls: CallWriter | None = None,
        events: Sink | None = None,
        keys: Sink | None = None,
        observers: list[Observer] | None = None,
        tunnels: Sink | None = None,
        forward: Sink | None = None,
    ) -> None:
        self.sink = sink
        self.calls = calls  # per-call PCAPs; owned by the writer thread from start()
        self.ledger = ledger if ledger is not None else Ledger(":memory:")
        self.output = output or os.path.abspath(sink.path)
        # The sinks, in the order a batch goes to them: the per-call files (which the
        # event log names), the event log, the unified output. Prepared in reverse:
        # the call writer's flush ends its undo journal, so it goes last.
        self.sinks: list[Sink] = []
        if calls is not None:
            self.sinks.append(CallFiles(calls))
        if forward is not None:  # the upstream spool: sees the hunter's batch as it came
            self.sinks.append(forward)  # (before the tunnel sink adds its alerts)
        if tunnels is not None:  # DNS tunneling: its alerts go into the batch's events
            self.sinks.append(tunnels)
        if events is not None:
            self.sinks.append(events)
        if keys is not None:
            self.sinks.append(keys)
        self.sinks.append(UnifiedPcap(sink, self.ledger, self.output))
        self.status = StatusCounters()
        self.observers = Observers([self.status, *(observers or [])])
        self.max_queue_bytes = max_queue_bytes
        self.slow_depth = slow_depth
        self.pause_depth = pause_depth
        self.resume_depth = resume_depth
        self.slow_work_s = slow_work_s
        self.pause_work_s = pause_work_s
        self._batch_s = 0.0  # the writer's recent seconds per batch (moving average)
        self._group_t0 = 0.0  # when the writer took its current group (monotonic)
        self._idle_at = 0.0  # the writer's last housekeeping while idle (monotonic)
        self.slow_writer_file = slow_writer_file
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._queue_bytes = 0
        self._busy = 0  # batches taken by the writer and not yet acknowledged
        self._waiting: dict[str, int] = {}  # per hunter, batches queued or being written
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
        self.rollback_errors = 0  # batches that could not be taken back after a failure
        self.events = 0  # events of written batches
        self.bad_events = 0  # events skipped as malformed (see lc.common.wire.event_problem)
        self.groups = 0
        # Seconds from the writer taking a group to its ledger commit (the time each of its
        # batches waits for its Ack once dequeued), per group: plain integers, read at a
        # metrics scrape.
        self.commit_seconds = Buckets()

    # -- producer side (stream threads) ----------------------------------------------
    def start(self) -> None:
        if self._writer is None:
            self.observers.start()
            self._writer = threading.Thread(target=self._run, name="lc-writer", daemon=True)
            self._writer.start()

    def submit(self, batch: lc_pb2.PacketBatch, cols: BatchRecords, reply: Reply) -> None:
        """Queue a checked batch; ``reply`` gets its Ack (or the error) once written.

        Waits while the queue is over its byte cap (back-pressure on that stream).

        Raises:
            LcError: the processor is shutting down.
        """
        self._submit(batch, cols, reply, wait=True)

    def try_submit(self, batch: lc_pb2.PacketBatch, cols: BatchRecords, reply: Reply) -> bool:
        """:meth:`submit` without waiting: False (nothing queued) when it would wait."""
        return self._submit(batch, cols, reply, wait=False)

    def _submit(
        self, batch: lc_pb2.PacketBatch, cols: BatchRecords, reply: Reply, wait: bool
    ) -> bool:
        size = len(cols.records) + 64 + 128 * len(cols.events)
        hid = batch.hunter_id
        with self._cond:
            while (
                self._queue_bytes + size > self.max_queue_bytes
                and self._queue
                and not self._closing
            ):
                if not wait:
                    return False
                self._cond.wait(0.5)
            if self._closed:
                raise LcError("the processor is shutting down")
            self._queue.append(_Item(hid, batch.epoch, batch.sequence, cols, reply, size))
            self._queue_bytes += size
            w = self._waiting
            w[hid] = w.get(hid, 0) + 1
            self.received += 1
            self._update_flow()
            self._cond.notify_all()
        return True

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

    @property
    def filter_matches(self) -> dict[str, int]:
        """Packets received per matched filter id (committed batches)."""
        self.observers.settle()
        return self.status.snapshot()[0]

    @property
    def events_by_dataset(self) -> dict[str, int]:
        """Events written per dataset (committed batches)."""
        self.observers.settle()
        return self.status.snapshot()[1]

    @property
    def events_file(self) -> str:
        """The event log's current file ("" without one)."""
        for s in self.sinks:
            path = getattr(s, "path", None)
            if s.name == "events" and isinstance(path, str):
                return path
        return ""

    # -- the writer --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    self._cond.wait(_IDLE_S)
                if not self._queue:
                    if self._closing:
                        return
                    group: list[_Item] = []
                else:
                    group = []
                    nbytes = 0
                    while self._queue and nbytes < _GROUP_BYTES:
                        it = self._queue.popleft()
                        group.append(it)
                        nbytes += it.size
                    self._queue_bytes -= nbytes
                    self._busy = len(group)
                    self._group_t0 = t0 = time.monotonic()
                    self._cond.notify_all()
            if not group:  # nothing came: time moves on for the sinks all the same
                self._idle(time.monotonic())
                continue
            try:
                self._write_group(group)
            except Exception:  # a bug: report it to every hunter in the group, go on
                log.exception("writing a group of %d batches failed", len(group))
                for it in group:
                    it.reply(LcError("processor error while writing"))
            per = (time.monotonic() - t0) / len(group)
            with self._cond:
                self._busy = 0
                self._batch_s = per if not self._batch_s else 0.75 * self._batch_s + 0.25 * per
                w = self._waiting
                for it in group:
                    k = w[it.hunter_id] - 1
                    if k:
                        w[it.hunter_id] = k
                    else:
                        del w[it.hunter_id]
                self._update_flow()
                self._cond.notify_all()

    def _idle(self, now: float) -> None:
        """No batch came for a while (``now``: time.monotonic()): sinks that close
        things by time (the per-call files) get to, on the writer thread."""
        if now - self._idle_at < _IDLE_S:
            return
        self._idle_at = now
        for s in self.sinks:
            idle = getattr(s, "idle", None)
            if idle is not None:
                try:
                    idle(now)
                except Exception:  # a sink's housekeeping never stops the writer
                    log.exception("%s: idle housekeeping failed", s.name)

    def _write_batch(self, it: _Item) -> object:
        """One new batch into every sink: None, or the error its hunter is told (the
        batch is then in no sink)."""
        rb = Received(it.hunter_id, it.epoch, it.sequence, it.cols)
        sinks = self.sinks
        marks = [s.mark() for s in sinks]
        done = 0
        try:
            for s in sinks:
                s.write(rb)
                done += 1
        except _WRITE_ERRORS as e:
            failed = sinks[done]
            self.write_errors += 1
            if failed.name == "calls":
                self.call_write_errors += 1
            log.error(
                "cannot write batch %d of %s (%s): %s",
                it.sequence, log_text(it.hunter_id), failed.name, log_text(e),
            )  # fmt: skip
            self._rollback(sinks[: done + 1], marks, f"batch {it.sequence}")
            return _reply_error(e)
        return None

    def _rollback(self, sinks: list[Sink], marks: list[object], what: str) -> None:
        for s, m in reversed(list(zip(sinks, marks, strict=False))):
            try:
                s.rollback(m)
            except Exception as e:  # the sink may now hold part of it: say so loudly
                self.rollback_errors += 1
                log.error("cannot take %s back from the %s output: %s", what, s.name, e)

    def _write_group(self, group: list[_Item]) -> None:
        t0 = time.perf_counter()
        ledger = self.ledger
        sinks = self.sinks
        # Per batch of the group: its reply (an Ack or an error), or the position of an
        # earlier copy of the same batch in this group, whose fate it shares.
        results: list[object] = [None] * len(group)
        fresh: list[int] = []  # new batches, in order, written to every sink
        first: dict[tuple[str, int, int], int] = {}
        group_marks = [s.mark() for s in sinks]
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
            err = self._write_batch(it)
            if err is not None:
                results[k] = err
                continue
            first[key] = k
            fresh.append(k)
        # Hand everything to the OS and gather the sinks' ledger statements; the call
        # writer's flush last (it ends its undo journal). A failure takes the group back.
        extra: list = []
        preparing = ""
        try:
            for s in reversed(sinks):
                preparing = s.name
                extra.extend(s.prepare())
        except _WRITE_ERRORS as e:
            self.write_errors += 1
            if preparing == "calls":
                self.call_write_errors += len(fresh)
            log.error("cannot hand the group to the OS (%d batches refused): %s", len(fresh), e)
            self._rollback(sinks, group_marks, "a group")
            err = _reply_error(e)
            for k in fresh:
                results[k] = err
            fresh = []
            extra = []
            for s in reversed(sinks):  # the state as it is again (nothing new)
                try:
                    extra.extend(s.prepare())
                except _WRITE_ERRORS:
                    pass
        written: list[Received] = []
        for k in fresh:
            it = group[k]
            cols = it.cols
            ledger.mark(it.hunter_id, it.epoch, it.sequence)
            written.append(Received(it.hunter_id, it.epoch, it.sequence, cols))
            self.packets += len(cols)
            self.bytes += len(cols.records) - 16 * len(cols)
            self.batches += 1
            self.events += len(cols.events)
            self.bad_events += cols.bad_events
            results[k] = lc_pb2.Ack(epoch=it.epoch, sequence=it.sequence, packets=len(cols))
        for k, r in enumerate(results):
            if isinstance(r, int):  # a copy of batch r: acknowledged as a duplicate if it was
                r = results[r]
                if isinstance(r, lc_pb2.Ack):
                    self.duplicates += 1
                    it = group[k]
                    r = lc_pb2.Ack(epoch=it.epoch, sequence=it.sequence, duplicate=True)
                results[k] = r
        committed = True
        try:
            ledger.commit(time.time_ns(), extra)
        except Exception as e:
            log.error("cannot commit what was written: %s", e)
            err = LcError(f"processor cannot record what it wrote: {e}")
            results = [err] * len(group)
            committed = False
        if committed:
            self.commit_seconds.observe(time.perf_counter() - t0)
            for s in sinks:
                try:
                    s.committed()  # e.g. close finished calls, rotate the event log
                except Exception:
                    log.exception("the %s output failed after a commit", s.name)
        self.groups += 1
        for it, r in zip(group, results, strict=True):
            it.reply(r)  # type: ignore[arg-type]
        if committed:
            self.observers.submit(written)  # after the Acks: observers never delay one

    # -- flow ----------------------------------------------------------------------------
    def _update_flow(self) -> None:
        # Hysteresis: SLOW/PAUSE hold until the queue is nearly empty again.
        depth = len(self._queue) + self._busy - len(self._waiting)
        per = self._batch_s
        if self._busy:  # a group that takes long (a stalled disk) counts before it ends
            per = max(per, (time.monotonic() - self._group_t0) / self._busy)
        work = depth * per
        if (
            depth >= self.pause_depth and work >= self.pause_work_s
        ) or self._queue_bytes >= self.max_queue_bytes * 3 // 4:
            self._flow = lc_pb2.FLOW_PAUSE
        elif (
            depth >= self.slow_depth
            and work >= self.slow_work_s
            and self._flow != lc_pb2.FLOW_PAUSE
        ):
            self._flow = lc_pb2.FLOW_SLOW
        elif (
            depth <= self.resume_depth or work < self.slow_work_s / 4
        ) and self._queue_bytes < self.max_queue_bytes // 2:
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
        extra: list = []
        for s in self.sinks:
            try:
                extra.extend(s.close())  # every file closed; call rows committed
            except (OSError, LcError, sqlite3.Error) as e:
                log.error("cannot close the %s output: %s", s.name, e)
        self.ledger.commit(time.time_ns(), extra)
        self.observers.close()


def _reply_error(e: Exception) -> LcError | OSError:
    """What a hunter is told when its batch could not be written. Without its
    traceback, which nobody reads: that holds the writer's frames, whose group and
    results name this error, so every failed batch (a full disk: all of them) was
    cyclic garbage holding its group's records."""
    if isinstance(e, OSError | LcError):
        return e.with_traceback(None)
    return LcError(f"cannot write the batch: {e}")


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
