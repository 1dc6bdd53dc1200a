"""The hunter's bounded store of batches between capture and acknowledgement.

Capture threads ``put`` sealed batches; the uplink takes them in sequence order
(``next_batch``), keeps them as in flight until the processor acknowledges them
(``ack``), and puts every unacknowledged one back at the front after a broken
stream (``requeue_inflight``), so delivery is at least once and the processor's
(hunter, epoch, sequence) check makes it exactly once in its output.

Memory is bounded by ``max_bytes`` over queued plus in-flight batches. A live
capture never waits for room: a batch that does not fit is dropped and its packets
are counted under ``dropped["queue_full"]``. An offline replay (``block=True``)
waits instead, because a file can be read at the pace the link allows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from lc.hunter.batcher import SealedBatch

__all__ = ["Outbox", "Pending"]


@dataclass(slots=True)
class Pending:
    sequence: int
    batch: SealedBatch
    sent_at: float = 0.0


class Outbox:
    def __init__(self, max_bytes: int = 256 * 1024 * 1024, max_inflight: int = 64) -> None:
        self.max_bytes = max_bytes
        self.max_inflight = max_inflight
        self._lock = threading.Condition()
        self._queue: deque[Pending] = deque()
        self._inflight: dict[int, Pending] = {}
        self._bytes = 0
        self._next_seq = 1
        self.dropped_packets = 0
        self.dropped_batches = 0
        self.acked_packets = 0
        self.acked_batches = 0
        self.sent_batches = 0
        self.resent_batches = 0

    # -- producer side -------------------------------------------------------------
    def put(self, batch: SealedBatch, block: bool = False, timeout: float | None = None) -> bool:
        """Queue a batch; False (and counted) when it had to be dropped for lack of room."""
        size = batch.nbytes + 64
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._bytes + size > self.max_bytes and self._bytes > 0:
                if not block:
                    self.dropped_packets += len(batch)
                    self.dropped_batches += 1
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self.dropped_packets += len(batch)
                    self.dropped_batches += 1
                    return False
                self._lock.wait(remaining if remaining is not None else 0.5)
            seq = self._next_seq
            self._next_seq += 1
            self._queue.append(Pending(seq, batch))
            self._bytes += size
            self._lock.notify_all()
            return True

    @property
    def backlog(self) -> int:
        """Batches queued and not yet sent (the batcher grows batches while this is > 0)."""
        return len(self._queue)

    # -- uplink side ---------------------------------------------------------------
    def next_batch(self, timeout: float) -> Pending | None:
        """The oldest unsent batch, moved to in flight; None if none within ``timeout``
        or the in-flight window is full."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self._queue or len(self._inflight) >= self.max_inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._lock.wait(remaining)
            p = self._queue.popleft()
            if p.sent_at:
                self.resent_batches += 1
            p.sent_at = time.monotonic()
            self._inflight[p.sequence] = p
            self.sent_batches += 1
            return p

    def ack(self, sequence: int) -> int:
        """Forget an acknowledged batch; returns its packet count (0 if unknown)."""
        with self._lock:
            p = self._inflight.pop(sequence, None)
            if p is None:
                return 0
            self._bytes -= p.batch.nbytes + 64
            self.acked_packets += len(p.batch)
            self.acked_batches += 1
            self._lock.notify_all()
            return len(p.batch)

    def requeue_inflight(self) -> int:
        """After a broken stream: unacknowledged batches go back, in order, to the front."""
        with self._lock:
            items = sorted(self._inflight.values(), key=lambda p: p.sequence)
            self._inflight.clear()
            self._queue.extendleft(reversed(items))
            self._lock.notify_all()
            return len(items)

    def wake(self) -> None:
        with self._lock:
            self._lock.notify_all()

    # -- state ---------------------------------------------------------------------
    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def drained(self) -> bool:
        with self._lock:
            return not self._queue and not self._inflight

    def wait_drained(self, timeout: float) -> bool:
        """Wait until every batch is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue or self._inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.5))
            return True

    def unacked_packets(self) -> int:
        with self._lock:
            return sum(len(p.batch) for p in self._queue) + sum(
                len(p.batch) for p in self._inflight.values()
            )
