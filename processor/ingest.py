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
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lc.common.errors import LcError
from lc.common.pcapfile import PcapSink
from lc.common.wire import BatchRecords, unpack_batch
from lc.processor.ledger import Ledger
from lc.proto import lc_pb2

__all__ = ["Ingest", "flow_to_announce"]

log = logging.getLogger(__name__)

SLOW_DEPTH = 16
PAUSE_DEPTH = 48  # below a hunter's in-flight window (64), so one hunter can trigger it
RESUME_DEPTH = 4
MAX_QUEUE_BYTES = 256 * 1024 * 1024
_GROUP_BYTES = 32 * 1024 * 1024  # a group's commit waits for at most this much writing

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
    ) -> None:
        self.sink = sink
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
        results: list[tuple[_Item, object]] = []
        written: list[tuple[str, BatchRecords]] = []
        fm = self.filter_matches
        for it in group:
            if self.slow_writer_file and os.path.exists(self.slow_writer_file):
                time.sleep(0.05)  # test hook: a writer that cannot keep up
            if ledger.written(it.hunter_id, it.epoch, it.sequence):
                self.duplicates += 1
                results.append(
                    (it, lc_pb2.Ack(epoch=it.epoch, sequence=it.sequence, duplicate=True))
                )
                continue
            cols = it.cols
            try:
                for linktype, records, count in cols.linktype_groups():
                    self.sink.write_records(linktype, records, count)
            except OSError as e:
                self.write_errors += 1
                log.error("cannot write batch %d of %s: %s", it.sequence, it.hunter_id, e)
                results.append((it, e))
                continue
            ledger.mark(it.hunter_id, it.epoch, it.sequence)
            written.append((it.hunter_id, cols))
            for m in cols.meta:
                for fid in m.filter_ids:
                    fm[fid] = fm.get(fid, 0) + 1
            self.packets += len(cols)
            self.bytes += len(cols.records) - 16 * len(cols)
            self.batches += 1
            results.append(
                (it, lc_pb2.Ack(epoch=it.epoch, sequence=it.sequence, packets=len(cols)))
            )
        for w in self.extra_writers:
            w(written)
        try:
            self.sink.flush()
            ledger.file_state(self.output, self.sink.state())
            ledger.commit(time.time_ns())
        except Exception as e:
            log.error("cannot commit what was written: %s", e)
            err = LcError(f"processor cannot record what it wrote: {e}")
            results = [(it, err) for it, _ in results]
        self.groups += 1
        for it, r in results:
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
        self.sink.flush()
        self.sink.fsync()
        self.ledger.file_state(self.output, self.sink.state())
        self.ledger.commit(time.time_ns())
        self.sink.close()


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
