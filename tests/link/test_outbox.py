"""Tests for lc.link.outbox.Outbox: sequencing, acknowledgement, bounds, threads.

No test depends on timing for its verdict: waits that are expected to end are
bounded joins that fail loudly, and "still blocked" checks can only pass late.
"""

from __future__ import annotations

import logging
import threading

import pytest

from lc.hunter.batcher import SealedBatch
from lc.link.outbox import Outbox

OVERHEAD = 64  # the outbox charges each batch its packet bytes plus this
JOIN = 10.0  # upper bound for a thread that must finish; never reached when all is well


def batch(count: int = 1, nbytes: int = 100) -> SealedBatch:
    return SealedBatch(records=b"", count=count, iface=None, nbytes=nbytes)


def take(ob: Outbox) -> int | None:
    p = ob.next_batch(0)
    return None if p is None else p.sequence


def start(target, *args) -> tuple[threading.Thread, list]:
    result: list = []
    t = threading.Thread(target=lambda: result.append(target(*args)), daemon=True)
    t.start()
    return t, result


# --------------------------------------------------------------------------- sequencing


def test_sequences_follow_put_order_and_batches_come_out_in_order():
    ob = Outbox()
    bs = [batch(count=i + 1) for i in range(3)]
    assert all(ob.put(b) for b in bs)
    assert ob.backlog == 3
    out = [ob.next_batch(0) for _ in range(3)]
    assert [p.sequence for p in out] == [1, 2, 3]
    assert [p.batch for p in out] == bs  # the very objects, in put order
    assert ob.next_batch(0) is None
    assert ob.backlog == 0 and ob.inflight == 3
    assert ob.sent_batches == 3 and ob.resent_batches == 0


def test_next_batch_times_out_with_none_when_empty():
    ob = Outbox()
    assert ob.next_batch(0) is None
    assert ob.next_batch(0.01) is None


def test_ack_forgets_a_batch_and_counts_it():
    ob = Outbox()
    ob.put(batch(count=5, nbytes=1000))
    ob.put(batch(count=7, nbytes=10))
    assert ob.queued_bytes == 1000 + 10 + 2 * OVERHEAD
    assert ob.ack(1) == 0  # not sent yet: unknown to ack
    p = ob.next_batch(0)
    assert ob.ack(p.sequence) == 5
    assert ob.ack(p.sequence) == 0  # twice: nothing more
    assert ob.ack(99) == 0
    assert ob.acked_packets == 5 and ob.acked_batches == 1
    assert ob.queued_bytes == 10 + OVERHEAD
    assert ob.inflight == 0 and ob.backlog == 1


def test_requeue_puts_unacked_batches_back_first_in_sequence_order():
    ob = Outbox()
    for i in range(6):
        ob.put(batch(count=10 + i))
    sent = [take(ob) for _ in range(4)]
    assert sent == [1, 2, 3, 4]
    ob.ack(2)
    ob.ack(4)
    assert ob.requeue_inflight() == 2
    assert ob.inflight == 0 and ob.backlog == 4
    ob.put(batch())  # a new batch queues behind everything already numbered
    assert [take(ob) for _ in range(5)] == [1, 3, 5, 6, 7]
    assert ob.resent_batches == 2
    assert ob.sent_batches == 4 + 5
    # Each resend is counted every time it happens.
    assert ob.requeue_inflight() == 5
    assert [take(ob) for _ in range(5)] == [1, 3, 5, 6, 7]
    assert ob.resent_batches == 2 + 5
    assert ob.requeue_inflight() == 5  # still unacked
    assert ob.requeue_inflight() == 0  # nothing in flight any more


def test_requeue_order_does_not_depend_on_ack_order():
    ob = Outbox()
    for _ in range(8):
        ob.put(batch())
    assert [take(ob) for _ in range(8)] == list(range(1, 9))
    for s in (7, 1, 4):
        ob.ack(s)
    ob.requeue_inflight()
    assert [take(ob) for _ in range(5)] == [2, 3, 5, 6, 8]


# --------------------------------------------------------------------------- window


def test_inflight_window_limits_unacked_batches():
    ob = Outbox(max_inflight=2)
    for _ in range(4):
        ob.put(batch())
    assert take(ob) == 1 and take(ob) == 2
    assert ob.next_batch(0) is None  # window full, although batches are queued
    assert ob.next_batch(0.01) is None
    assert ob.inflight == 2 and ob.backlog == 2
    ob.ack(1)
    assert take(ob) == 3
    assert take(ob) is None
    ob.ack(2)
    ob.ack(3)
    assert take(ob) == 4


def test_window_freed_by_ack_wakes_a_waiting_uplink():
    ob = Outbox(max_inflight=1)
    ob.put(batch())
    ob.put(batch())
    assert take(ob) == 1
    t, got = start(ob.next_batch, JOIN)
    t.join(0.05)
    assert t.is_alive(), "next_batch returned while the window was full"
    ob.ack(1)
    t.join(JOIN)
    assert not t.is_alive()
    assert got[0] is not None and got[0].sequence == 2


# --------------------------------------------------------------------------- bounds


def test_non_blocking_put_drops_and_counts_when_full():
    ob = Outbox(max_bytes=3 * (100 + OVERHEAD))
    assert ob.put(batch(count=3, nbytes=100))
    assert ob.put(batch(count=4, nbytes=100))
    assert ob.put(batch(count=5, nbytes=100))
    assert ob.queued_bytes == ob.max_bytes
    assert not ob.put(batch(count=11, nbytes=100))
    assert not ob.put(batch(count=12, nbytes=1))
    assert ob.dropped_packets == 23 and ob.dropped_batches == 2
    assert ob.queued_bytes == ob.max_bytes
    # Dropped batches take no sequence number and never come out.
    assert [take(ob) for _ in range(4)] == [1, 2, 3, None]
    # In-flight batches still count against the bound until acknowledged.
    assert not ob.put(batch(count=1, nbytes=100))
    ob.ack(2)
    assert ob.put(batch(count=6, nbytes=100))
    p = ob.next_batch(0)
    assert p.sequence == 4 and p.batch.count == 6
    assert ob.dropped_packets == 24 and ob.dropped_batches == 3


def test_a_batch_larger_than_the_bound_is_taken_when_empty():
    ob = Outbox(max_bytes=1000)
    assert ob.put(batch(count=2, nbytes=5000))
    assert not ob.put(batch(count=1, nbytes=1))
    assert ob.dropped_packets == 1


def test_blocking_put_waits_until_an_ack_frees_room():
    ob = Outbox(max_bytes=2 * (100 + OVERHEAD))
    ob.put(batch(nbytes=100))
    ob.put(batch(nbytes=100))
    assert take(ob) == 1
    t, got = start(lambda: ob.put(batch(count=9, nbytes=100), block=True))
    t.join(0.1)
    assert t.is_alive(), "blocking put returned although the outbox was full"
    assert ob.backlog == 1
    ob.ack(1)
    t.join(JOIN)
    assert not t.is_alive(), "blocking put did not wake up after an ack freed room"
    assert got == [True]
    assert ob.dropped_packets == 0 and ob.dropped_batches == 0
    assert take(ob) == 2
    p = ob.next_batch(0)
    assert p.sequence == 3 and p.batch.count == 9


def test_blocking_put_with_expired_timeout_drops():
    ob = Outbox(max_bytes=100 + OVERHEAD)
    ob.put(batch(nbytes=100))
    assert not ob.put(batch(count=3, nbytes=100), block=True, timeout=0)
    assert not ob.put(batch(count=4, nbytes=100), block=True, timeout=0.01)
    assert ob.dropped_packets == 7 and ob.dropped_batches == 2
    assert [take(ob) for _ in range(2)] == [1, None]


# --------------------------------------------------------------------------- draining


def test_wait_drained():
    ob = Outbox()
    assert ob.drained() and ob.wait_drained(0)
    ob.put(batch())
    ob.put(batch())
    assert not ob.drained()
    assert not ob.wait_drained(0)  # queued
    assert not ob.wait_drained(0.01)
    take(ob)
    take(ob)
    assert not ob.drained()
    assert not ob.wait_drained(0)  # in flight, not acknowledged
    ob.ack(1)
    assert not ob.drained()
    assert not ob.wait_drained(0)
    ob.ack(2)
    assert ob.drained() and ob.wait_drained(0)


def test_wait_drained_wakes_on_the_last_ack():
    ob = Outbox()
    ob.put(batch())
    take(ob)
    t, got = start(ob.wait_drained, JOIN)
    t.join(0.05)
    assert t.is_alive()
    ob.ack(1)
    t.join(JOIN)
    assert not t.is_alive() and got == [True]


def test_a_closing_uplink_stops_waiting_for_a_batch_at_the_last_ack():
    """Once ``closing`` is set, next_batch returns None when the last batch is
    acknowledged, long before its timeout (a closing stream half-closes at once)."""
    ob = Outbox()
    ob.put(batch())
    p = ob.next_batch(0)
    assert p is not None
    closing = threading.Event()
    t, result = start(ob.next_batch, 3600.0, closing)
    closing.set()
    ob.wake()
    t.join(0.2)
    assert t.is_alive()  # closing, but a batch is still unacknowledged: still waiting
    assert ob.ack(p.sequence) == 1
    t.join(JOIN)
    assert not t.is_alive() and result == [None]
    # Closing with batches still to send: they are handed out first.
    ob.put(batch())
    q = ob.next_batch(0, closing)
    assert q is not None and q.sequence == 2


def test_unacked_packets_counts_queued_and_inflight():
    ob = Outbox()
    assert ob.unacked_packets() == 0
    for n in (3, 5, 7):
        ob.put(batch(count=n))
    assert ob.unacked_packets() == 15
    take(ob)
    take(ob)
    assert ob.unacked_packets() == 15
    ob.ack(2)
    assert ob.unacked_packets() == 10
    ob.requeue_inflight()
    assert ob.unacked_packets() == 10
    ob.ack(1)  # requeued, not in flight: not acknowledgeable
    assert ob.unacked_packets() == 10
    take(ob)
    ob.ack(1)
    assert ob.unacked_packets() == 7


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize("max_inflight", [1, 4])
def test_concurrent_producers_and_consumer(max_inflight):
    """Every batch delivered exactly once, sequence numbers unique and gap-free."""
    ob = Outbox(max_bytes=8 * (10 + OVERHEAD), max_inflight=max_inflight)
    producers, per = 4, 150
    done = threading.Event()
    seen: list[tuple[int, int]] = []

    def produce(k: int) -> None:
        for i in range(per):
            assert ob.put(batch(count=1000 * k + i, nbytes=10), block=True, timeout=JOIN)

    def consume() -> None:
        while not (done.is_set() and ob.drained()):
            p = ob.next_batch(0.01)
            if p is None:
                continue
            seen.append((p.sequence, p.batch.count))
            if p.sequence % 7 == 0 and len(seen) % 3 == 0:
                ob.requeue_inflight()  # a broken stream: resend what is unacked
                continue
            ob.ack(p.sequence)

    threads = [threading.Thread(target=produce, args=(k,), daemon=True) for k in range(producers)]
    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
        assert not t.is_alive()
    done.set()
    assert ob.wait_drained(JOIN)
    consumer.join(JOIN)
    assert not consumer.is_alive()

    total = producers * per
    assert ob.acked_batches == total and ob.dropped_batches == 0
    first = dict(reversed(seen))  # sequence -> batch, at first delivery
    assert sorted(first) == list(range(1, total + 1))
    assert sorted(first.values()) == sorted(
        1000 * k + i for k in range(producers) for i in range(per)
    )
    # A resend carries the same batch under the same number.
    assert all(first[s] == c for s, c in seen)
    # Each producer's batches are numbered in its put order.
    for k in range(producers):
        mine = sorted((s, c) for s, c in first.items() if c // 1000 == k)
        assert [c for _, c in mine] == [1000 * k + i for i in range(per)]
    assert ob.resent_batches == len(seen) - total
    assert ob.queued_bytes == 0


def test_a_full_memory_queue_says_once_when_dropping_starts_and_once_when_it_ends(caplog):
    ob = Outbox(max_bytes=2 * (batch(3).nbytes + 64))
    with caplog.at_level(logging.WARNING, logger="lc.link.outbox"):
        assert ob.put(batch(3)) and ob.put(batch(3))
        assert not ob.put(batch(4)) and not ob.put(batch(5))
        assert len(caplog.messages) == 1 and "memory queue full" in caplog.messages[0]
        p = ob.next_batch(0)
        ob.ack(p.sequence)
        assert ob.put(batch(3))
    assert len(caplog.messages) == 2, caplog.messages
    assert "has room again; 2 batches (9 packets) were dropped" in caplog.messages[1]
