"""A store of batches between capture (or commit) and acknowledgement: memory, then disk.

Capture threads ``put`` sealed batches; each gets the next sequence number of this
run's epoch. The uplink takes them in order (``next_batch``), keeps them in flight
until the processor acknowledges them (``ack``), and puts every unacknowledged one
back after a broken stream (``requeue_inflight``): delivery is at least once, and the
processor's (hunter, epoch, sequence) ledger makes it exactly once in its output.

**One queue, two tiers.** The in-memory queue is the head; the optional disk
:class:`~lc.link.spool.Spool` is the tail. A batch goes to the spool when

* the uplink is *offline*: not connected, or the processor asked it to PAUSE;
* the memory queue has no room (``max_bytes``); or
* the spool already holds unacknowledged batches: everything behind a spooled batch
  is spooled too, so batches still leave in capture order.

Before any batch goes to the spool while memory holds older ones (going offline, or
memory full), what memory holds (in flight and queued) moves to the spool first, in
capture order; so an outage's batches are all on disk, where a hunter crash cannot take
them, and the spool, read in append order, always holds a run's batches in capture
order, also when the hunter stops and the next run sends them. Batches in flight stay
in flight, now backed by their spool record. The uplink reads the memory queue first,
then the spool; once every spooled batch is acknowledged, batches stay in memory again.
Batches that an earlier run left in the spool keep their own epoch and are sent
first.

**Losses are counted, never silent.** Without a spool, a live capture never waits:
a batch that does not fit is dropped (``dropped_packets``). A full or unwritable
spool drops the newest batch (the spool counts it), for a replay too. A replay
(``block=True``) waits for room in memory while connected, since a file can be read
at the pace the link allows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from lc.common.wire import encode_extras
from lc.link.spool import Spool, SpooledBatch

__all__ = ["MemoryBatch", "Outbox", "Pending"]

log = logging.getLogger(__name__)

_OVERHEAD = 64  # bytes charged per batch on top of its records


class MemoryBatch(Protocol):
    """A sealed batch as the outbox keeps it in memory (the hunter's
    :class:`lc.hunter.batcher.SealedBatch`): records and their metadata, unnumbered."""

    records: bytes
    count: int
    iface: Any  # array('H') per packet, or None when every packet is on interface 0
    nbytes: int
    meta: list
    events: list
    event_bytes: int
    keylog: list
    tunnel: list
    caplen: Any  # array('I') per packet, sent and spooled as the caplen column; or None

    def __len__(self) -> int: ...


@dataclass(slots=True)
class Pending:
    sequence: int
    batch: MemoryBatch | SpooledBatch
    sent_at: float = 0.0
    epoch: int = 0
    spooled: bool = False
    source: str = ""  # the hunter a forwarded batch comes from ("": our own)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.source, self.epoch, self.sequence)

    @property
    def size(self) -> int:
        return _size(self.batch)


def _size(batch: MemoryBatch | SpooledBatch) -> int:
    """Memory charged for a batch: its packet bytes, events and a fixed overhead."""
    if isinstance(batch, SpooledBatch):
        return batch.nbytes + _OVERHEAD
    return batch.nbytes + batch.event_bytes + _OVERHEAD


def _extras_estimate(batch: MemoryBatch | SpooledBatch) -> int:
    """Spool bytes a batch's metadata and events will take, at most (roughly)."""
    if isinstance(batch, SpooledBatch):
        return len(batch.extras)
    caplen = 4 * batch.count + 8 if batch.caplen is not None else 0
    return 64 * len(batch.meta) + batch.event_bytes + 8 * len(batch.events) + caplen


class Outbox:
    def __init__(
        self,
        max_bytes: int = 256 * 1024 * 1024,
        max_inflight: int = 64,
        spool: Spool | None = None,
        epoch: int = 0,
        max_spool_inflight_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_inflight = max_inflight
        # Batches read back from the spool to be sent are in memory until acknowledged;
        # memory batches count in max_bytes, these here: 64 of the largest (8 MiB) would
        # be half a gigabyte. One is always allowed, whatever its size.
        self.max_spool_inflight_bytes = max_spool_inflight_bytes
        self._spool_inflight_bytes = 0
        self.spool = spool
        self.epoch = epoch
        self._lock = threading.Condition()
        self._queue: deque[Pending] = deque()
        self._inflight: dict[tuple[str, int, int], Pending] = {}
        self._bytes = 0
        self._next_seq = 1
        self._online = spool is None  # without a spool, memory is the only place to queue
        self._cursor: tuple[int, int] | None = None  # where reading the spool stands
        self.dropped_packets = 0
        self.dropped_batches = 0
        self._full_at: tuple[int, int] | None = None  # drop counters when memory became full
        self.acked_packets = 0
        self.acked_batches = 0
        self.sent_batches = 0
        self.resent_batches = 0
        self.spooled_batches = 0

    # -- producer side -------------------------------------------------------------
    def put(self, batch: MemoryBatch, block: bool = False, timeout: float | None = None) -> bool:
        """Queue a batch (memory or spool); False when it was dropped (and counted)."""
        size = _size(batch)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                seq = self._next_seq  # read again after every wait: others may have put
                full = self._bytes + size > self.max_bytes and self._bytes > 0
                to_spool = self.spool is not None and (
                    self._spooling or not self._online or (full and not block)
                )
                if to_spool and self._in_memory() and not self._spill():
                    # Memory's batches do not all fit in the spool, and this newer batch
                    # must not overtake them there: it joins them in memory, or is dropped.
                    if full:
                        self._drop(batch)
                        return False
                    to_spool = False
                if to_spool:
                    if self._to_spool(seq, batch):
                        self._next_seq += 1
                        self._lock.notify_all()
                        return True
                    # Full or unwritable: drop-newest (counted by the spool), replay or not.
                    return False
                elif not full:
                    self._next_seq += 1
                    self._queue.append(Pending(seq, batch, epoch=self.epoch))
                    self._bytes += size
                    if self._full_at is not None:
                        self._room_again()
                    self._lock.notify_all()
                    return True
                elif not block:
                    self._drop(batch)
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._drop(batch)
                    return False
                self._lock.wait(min(remaining, 0.2) if remaining is not None else 0.2)

    def put_spooled(
        self,
        source: str,
        epoch: int,
        sequence: int,
        records: bytes,
        count: int,
        iface: Any = None,
        extras: bytes = b"",
    ) -> bool:
        """Append a batch that keeps its own numbering (an edge processor forwarding a
        hunter's batch: ``source`` is the hunter) straight to the spool, where the uplink
        finds it in append order; False when the spool refused it (full or unwritable,
        counted by the spool) or there is none."""
        if self.spool is None:
            return False
        ok = self.spool.append(epoch, sequence, records, count, iface, extras, source)
        if ok:
            with self._lock:
                self.spooled_batches += 1
                self._lock.notify_all()
        return ok

    def _drop(self, batch: MemoryBatch) -> None:
        """Count a batch memory has no room for; say so once when dropping starts."""
        if self._full_at is None:
            self._full_at = (self.dropped_batches, self.dropped_packets)
            log.warning(
                "memory queue full (%d bytes; --queue-mb): dropping new batches "
                "until the processor acknowledges older ones",
                self.max_bytes,
            )
        self.dropped_packets += len(batch)
        self.dropped_batches += 1

    def _room_again(self) -> None:
        assert self._full_at is not None
        b0, p0 = self._full_at
        self._full_at = None
        log.warning(
            "memory queue has room again; %d batches (%d packets) were dropped while it was full",
            self.dropped_batches - b0,
            self.dropped_packets - p0,
        )

    def _to_spool(
        self, seq: int, batch: MemoryBatch | SpooledBatch, epoch: int | None = None
    ) -> bool:
        assert self.spool is not None
        if isinstance(batch, SpooledBatch):  # already there
            return True
        b = batch
        extras = encode_extras(b.meta, b.count, b.events, b.keylog, b.tunnel, b.caplen)
        ok = self.spool.append(
            self.epoch if epoch is None else epoch, seq, b.records, b.count, b.iface, extras
        )
        if ok:
            self.spooled_batches += 1
        return ok

    def _in_memory(self) -> bool:
        """Memory holds batches not yet in the spool (queued, or in flight)."""
        return bool(self._queue) or any(not p.spooled for p in self._inflight.values())

    @property
    def backlog(self) -> int:
        """Batches waiting to be sent (the batcher grows batches while this is > 0)."""
        with self._lock:  # capture threads ask while the uplink changes what is in flight
            n = len(self._queue)
            if self.spool is not None and self._spooling:
                n += max(0, len(self.spool) - sum(p.spooled for p in self._inflight.values()))
            return n

    # -- the uplink's side -----------------------------------------------------------
    def set_online(self, online: bool) -> None:
        """Connected and not paused (True), or not (False: new batches go to the spool,
        and what memory holds moves there first)."""
        with self._lock:
            if online == self._online:
                return
            self._online = online
            if not online and self.spool is not None:
                self._spill()
            self._lock.notify_all()

    def _spill(self) -> bool:
        """Move every memory batch, in flight and queued, to the spool in capture order;
        True when memory holds none afterwards.

        Called before any batch goes to the spool while memory holds older ones (going
        offline, or memory full), so the spool, read in append order, always holds a
        run's batches in capture order, at run time and for the next run alike. All or
        nothing: if they do not all fit, they all stay in memory (which is sent first),
        so neither order nor the spool's drop counters are disturbed. In-flight batches
        stay in flight, now backed by their spool record: the processor's ack
        acknowledges the record, and after a broken stream they are read back from it."""
        assert self.spool is not None
        items = sorted(
            [p for p in self._inflight.values() if not p.spooled] + list(self._queue),
            key=lambda p: (p.epoch, p.sequence),
        )
        if not items:
            return True
        need = sum(
            self.spool.record_size(len(p.batch.records), p.batch.count, _extras_estimate(p.batch))
            for p in items
        )
        if need > self.spool.room():
            return False
        moved = 0
        for p in items:
            if not self._to_spool(p.sequence, p.batch, p.epoch):
                break  # a write error (counted by the spool): the rest stays in memory
            self._bytes -= p.size
            p.spooled = True
            if self._inflight.get(p.key) is p:  # still in memory until acknowledged
                self._spool_inflight_bytes += p.size
            moved += 1
        self._queue = deque(p for p in self._queue if not p.spooled)
        self._cursor = None  # reread the spool from its first unacknowledged batch
        log.info("moved %d batches from memory to the disk spool", moved)
        return moved == len(items)

    def next_batch(self, timeout: float, closing: threading.Event | None = None) -> Pending | None:
        """The oldest unsent batch, moved to in flight; None if none within ``timeout``
        or the in-flight window is full, or, once ``closing`` is set, as soon as every
        batch is acknowledged (the last ack or :meth:`wake` ends the wait: a closing
        stream ends at once rather than when ``timeout`` runs out)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if closing is not None and closing.is_set() and self._drained():
                    return None
                if len(self._inflight) < self.max_inflight:
                    if self._queue:
                        p = self._queue.popleft()
                        break
                    if self._spooling and (
                        self._spool_inflight_bytes < self.max_spool_inflight_bytes
                    ):
                        p = self._from_spool()
                        if p is not None:
                            self._spool_inflight_bytes += p.size
                            break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(min(remaining, 0.2))
            if p.sent_at:
                self.resent_batches += 1
            p.sent_at = time.monotonic()
            self._inflight[p.key] = p
            self.sent_batches += 1
            return p

    def _from_spool(self) -> Pending | None:
        assert self.spool is not None
        while True:
            got = self.spool.next_after(self._cursor)
            if got is None:
                if len(self.spool) == 0:
                    self._cursor = None
                return None
            b, self._cursor = got
            if (b.source, b.epoch, b.sequence) not in self._inflight:
                return Pending(b.sequence, b, epoch=b.epoch, spooled=True, source=b.source)

    def ack(self, sequence: int, epoch: int | None = None, source: str = "") -> int:
        """Forget an acknowledged batch; returns its packet count (0 if unknown)."""
        key = (source, self.epoch if epoch is None else epoch, sequence)
        with self._lock:
            p = self._inflight.pop(key, None)
            if p is None:
                return 0
            if p.spooled:
                assert self.spool is not None
                self._spool_inflight_bytes -= p.size
                self.spool.ack(p.epoch, p.sequence, p.source)
                if len(self.spool) == 0:
                    self._cursor = None
            else:
                self._bytes -= p.size
            n = p.batch.count
            self.acked_packets += n
            self.acked_batches += 1
            self._lock.notify_all()
            return n

    def unsend(self, p: Pending) -> None:
        """Give back a batch taken for a stream that has ended before sending it.

        A stream's request generator may take a batch after the stream broke and after
        ``requeue_inflight`` ran; without this, that batch would sit in flight (and the
        spool's read position past it) and never be sent."""
        with self._lock:
            key = p.key
            if self._inflight.get(key) is not p:
                return  # already requeued or acknowledged
            del self._inflight[key]
            if p.spooled:
                self._spool_inflight_bytes -= p.size
                self._cursor = None  # reread the spool from its first unacknowledged batch
            else:
                self._queue.appendleft(p)
            self._lock.notify_all()

    def requeue_inflight(self) -> int:
        """After a broken stream: unacknowledged batches go back, in order, to be sent again."""
        with self._lock:
            items = sorted(self._inflight.values(), key=lambda p: (p.spooled, p.epoch, p.sequence))
            self._inflight.clear()
            self._spool_inflight_bytes = 0
            self._queue.extendleft(reversed([p for p in items if not p.spooled]))
            if any(p.spooled for p in items):
                self._cursor = None  # reread the spool from its first unacknowledged batch
            self._lock.notify_all()
            return len(items)

    def spool_rest(self) -> int:
        """At shutdown: move every unacknowledged memory batch to the spool; returns how
        many batches are left only in memory (lost when the process exits)."""
        with self._lock:
            if self.spool is None:
                return len(self._queue) + len(self._inflight)
            items = sorted(
                [p for p in self._inflight.values() if not p.spooled] + list(self._queue),
                key=lambda p: (p.epoch, p.sequence),
            )
            self._inflight = {k: p for k, p in self._inflight.items() if p.spooled}
            self._queue.clear()
            left = 0
            for p in items:
                if self._to_spool(p.sequence, p.batch, p.epoch):
                    self._bytes -= p.size
                else:
                    left += 1
            return left

    def wake(self) -> None:
        with self._lock:
            self._lock.notify_all()

    # -- state ---------------------------------------------------------------------
    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def spool_inflight_bytes(self) -> int:
        """Bytes of batches read back from the spool and not yet acknowledged."""
        return self._spool_inflight_bytes

    @property
    def queued_bytes(self) -> int:
        """Bytes held in memory (queued and in flight)."""
        return self._bytes

    @property
    def _spooling(self) -> bool:
        """The spool holds unacknowledged batches: new ones queue behind them."""
        return self.spool is not None and len(self.spool) > 0

    @property
    def spooling(self) -> bool:
        return self._spooling

    def drained(self) -> bool:
        with self._lock:
            return self._drained()

    def _drained(self) -> bool:
        if self._queue or self._inflight:
            return False
        return not self._spooling

    def wait_drained(self, timeout: float, give_up: Callable[[], bool] | None = None) -> bool:
        """Wait until every batch (spooled ones too) is acknowledged; False on timeout,
        or as soon as ``give_up()`` is true (checked whenever :meth:`wake` is called)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._drained():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (give_up is not None and give_up()):
                    return False
                self._lock.wait(min(remaining, 0.2))
            return True

    def unacked_packets(self) -> int:
        with self._lock:
            n = sum(p.batch.count for p in self._queue)
            n += sum(p.batch.count for p in self._inflight.values() if not p.spooled)
            return n

    def memory_batches(self) -> int:
        with self._lock:
            return len(self._queue) + sum(not p.spooled for p in self._inflight.values())
