"""Tests for lc.link.outbox.Outbox with its disk tier, lc.link.spool.Spool.

Every spool lives in a real directory; batches are real nanosecond pcap records
(``frame_records``) with filter metadata, and what comes back is compared byte for
byte. No verdict depends on timing: ``next_batch(0)`` never waits, and a thread that
must finish is joined with a bound that fails loudly.
"""

from __future__ import annotations

import logging
import random
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.pcapfile import frame_records, record_lengths
from lc.common.wire import encode_batch, encode_extras
from lc.hunter.batcher import SealedBatch
from lc.link.outbox import Outbox, Pending
from lc.link.spool import HEADER_SIZE, Spool, SpooledBatch
from lc.proto import lc_pb2

T0 = 1_700_000_000_123_456_789  # a 2023 time in ns
JOIN = 10.0  # bound for a thread that must finish; never reached when all is well


def make_batch(tag: int, count: int = 3, size: int = 40) -> SealedBatch:
    """``count`` real packets whose bytes and times identify ``tag``."""
    caps = [size + (k % 3) for k in range(count)]
    blob = b"".join(bytes([(tag + k) % 256]) * c for k, c in enumerate(caps))
    ts = [T0 + tag * 1_000_000 + k for k in range(count)]
    records = frame_records(ts, caps, [c + 7 for c in caps], blob)
    meta = [(k, [f"filter-{tag}"]) for k in range(0, count, 2)]
    return SealedBatch(records=records, count=count, iface=None, nbytes=sum(caps), meta=meta)


def record_size(b: SealedBatch) -> int:
    """What one batch occupies in a spool segment (header + records + meta blob)."""
    blob = encode_extras(b.meta, b.count, b.events)
    return HEADER_SIZE + len(b.records) + len(blob)


def sent(p: Pending) -> lc_pb2.PacketBatch:
    """The PacketBatch the uplink builds for a pending batch, whichever tier it came from."""
    b = p.batch
    if isinstance(b, SpooledBatch):
        return encode_batch("h", p.epoch, p.sequence, [("eth0", 1)], b.records, b.count,
                            b.iface, extras=b.extras)  # fmt: skip
    return encode_batch("h", p.epoch, p.sequence, [("eth0", 1)], b.records, b.count,
                        b.iface, b.meta, b.events)  # fmt: skip


def meta_of(p: Pending) -> list[tuple[int, list[str]]]:
    """The (index, filter ids) a pending batch carries, whichever tier it came from."""
    return [(m.index, list(m.filter_ids)) for m in sent(p).meta]


def same(p: Pending, b: SealedBatch) -> bool:
    return (
        bytes(p.batch.records) == b.records
        and p.batch.count == b.count
        and p.batch.nbytes == b.nbytes
        and meta_of(p) == b.meta
    )


def take(ob: Outbox) -> Pending | None:
    return ob.next_batch(0)


def drain(ob: Outbox) -> list[Pending]:
    """Take and acknowledge everything the outbox hands out now."""
    out = []
    while (p := take(ob)) is not None:
        assert ob.ack(p.sequence, p.epoch) == p.batch.count
        out.append(p)
    return out


@pytest.fixture
def spool(tmp_path):
    sp = Spool(tmp_path / "spool")
    yield sp
    sp.close()


# --------------------------------------------------------------------------- offline


def test_offline_puts_go_to_spool_and_come_back_in_order(spool):
    ob = Outbox(max_bytes=1 << 20, spool=spool, epoch=7)
    batches = [make_batch(i) for i in range(5)]
    assert all(ob.put(b) for b in batches)
    assert len(spool) == 5
    assert ob.queued_bytes == 0 and ob.memory_batches() == 0
    assert ob.spooling
    got = [take(ob) for _ in range(5)]
    assert take(ob) is None
    assert [p.sequence for p in got] == [1, 2, 3, 4, 5]
    assert all(p.spooled and p.epoch == 7 for p in got)
    assert all(isinstance(p.batch, SpooledBatch) for p in got)
    for p, b in zip(got, batches, strict=True):
        assert same(p, b)
        record_lengths(bytes(p.batch.records), p.batch.count)  # still valid records
        # the batch sent from the spool has PacketMeta with the original index and filter ids
        metas = sent(p).meta
        assert [m.index for m in metas] == [i for i, _ in b.meta]
        assert [list(m.filter_ids) for m in metas] == [ids for _, ids in b.meta]


def test_acks_remove_spooled_batches(spool):
    ob = Outbox(spool=spool, epoch=3)
    for i in range(4):
        ob.put(make_batch(i, count=i + 1))
    got = [take(ob) for _ in range(4)]
    assert spool.counters()["records"] == 4
    assert ob.inflight == 4
    for n, p in enumerate(got, 1):
        assert ob.ack(p.sequence, 3) == p.batch.count
        c = spool.counters()
        assert c["records"] == 4 - n
        assert c["acked"] == n
    assert ob.ack(got[0].sequence, 3) == 0  # twice: nothing
    assert ob.acked_batches == 4 and ob.acked_packets == 1 + 2 + 3 + 4
    assert not ob.spooling
    assert ob.drained()
    assert spool.segments() == []  # every segment file acknowledged away
    assert not list(Path(spool.directory).glob("*.seg"))


def test_ack_needs_the_right_epoch(spool):
    ob = Outbox(spool=spool, epoch=3)
    ob.put(make_batch(1))
    p = take(ob)
    assert ob.ack(p.sequence, 4) == 0
    assert len(spool) == 1
    assert ob.ack(p.sequence) == p.batch.count  # default: this run's epoch
    assert len(spool) == 0


def test_memory_stays_flat_while_offline(spool):
    ob = Outbox(max_bytes=10_000, spool=spool, epoch=1)
    for i in range(300):
        assert ob.put(make_batch(i, count=4, size=200))
        assert ob.queued_bytes == 0
    assert ob.memory_batches() == 0 and ob.unacked_packets() == 0
    assert len(spool) == 300
    assert ob.backlog == 300
    assert ob.dropped_batches == 0


# ---------------------------------------------------------------------------- online


def test_online_puts_stay_in_memory(spool):
    ob = Outbox(spool=spool, epoch=1)
    ob.set_online(True)
    b = make_batch(1)
    assert ob.put(b)
    assert len(spool) == 0 and spool.counters()["appended"] == 0
    assert ob.queued_bytes == b.nbytes + 64
    assert not ob.spooling
    p = take(ob)
    assert p.batch is b and not p.spooled and p.epoch == 1
    assert ob.ack(p.sequence) == b.count
    assert ob.queued_bytes == 0


def test_online_with_memory_full_moves_memory_to_the_spool_before_the_new_batch(spool):
    b = make_batch(0)
    ob = Outbox(max_bytes=2 * (b.nbytes + 64), spool=spool, epoch=1)
    ob.set_online(True)
    batches = [make_batch(i) for i in range(5)]
    assert all(ob.put(x) for x in batches[:2])
    assert ob.memory_batches() == 2 and len(spool) == 0
    assert all(ob.put(x) for x in batches[2:])
    # The spool is read in append order: memory's older batches go in first.
    assert ob.memory_batches() == 0 and ob.queued_bytes == 0 and len(spool) == 5
    assert [x.sequence for x in spool.peek(10)] == [1, 2, 3, 4, 5]
    got = [take(ob) for _ in range(5)]
    assert [p.sequence for p in got] == [1, 2, 3, 4, 5]
    assert all(p.spooled for p in got)
    assert all(same(p, x) for p, x in zip(got, batches, strict=True))


def test_going_offline_moves_memory_and_inflight_to_the_spool_in_order(spool):
    ob = Outbox(spool=spool, epoch=2)
    ob.set_online(True)
    batches = [make_batch(i) for i in range(5)]
    for b in batches:
        ob.put(b)
    first = [take(ob), take(ob)]  # 1 and 2 in flight, 3..5 queued
    assert [p.sequence for p in first] == [1, 2]
    ob.set_online(False)
    assert len(spool) == 5
    assert ob.queued_bytes == 0 and ob.memory_batches() == 0
    assert [b.sequence for b in spool.peek(10)] == [1, 2, 3, 4, 5]
    assert ob.spooled_batches == 5
    # In flight they stay (PAUSE keeps the stream): their ack acknowledges the spool record.
    assert ob.inflight == 2
    assert ob.ack(1, 2) == batches[0].count and len(spool) == 4
    ob.requeue_inflight()  # the stream broke after all: 2 is read back from the spool
    got = drain(ob)
    assert [p.sequence for p in got] == [2, 3, 4, 5]
    assert all(p.spooled for p in got)
    assert all(same(p, b) for p, b in zip(got, batches[1:], strict=True))
    assert len(spool) == 0


def test_going_offline_twice_or_with_spool_busy_moves_nothing_more(spool):
    ob = Outbox(spool=spool, epoch=1)
    ob.put(make_batch(1))  # offline: spooled
    ob.set_online(True)
    ob.put(make_batch(2))  # spool holds something: spooled too
    assert len(spool) == 2 and ob.memory_batches() == 0
    ob.set_online(False)
    ob.set_online(False)
    assert len(spool) == 2 and spool.counters()["appended"] == 2


def test_while_spool_holds_anything_new_puts_follow_it(spool):
    ob = Outbox(spool=spool, epoch=1)
    ob.put(make_batch(1))
    ob.set_online(True)
    for i in range(2, 5):
        ob.put(make_batch(i))
        assert ob.queued_bytes == 0
    assert len(spool) == 4
    got = drain(ob)
    assert [p.sequence for p in got] == [1, 2, 3, 4]
    assert not ob.spooling
    ob.put(make_batch(5))  # spool empty again: memory
    assert ob.queued_bytes > 0 and len(spool) == 0
    p = take(ob)
    assert p.sequence == 5 and not p.spooled


def test_requeue_inflight_resends_spooled_batches(spool):
    ob = Outbox(spool=spool, epoch=1)
    for i in range(4):
        ob.put(make_batch(i))
    got = [take(ob) for _ in range(3)]
    assert [p.sequence for p in got] == [1, 2, 3]
    ob.ack(2, 1)
    assert ob.requeue_inflight() == 2
    assert ob.inflight == 0
    again = [take(ob) for _ in range(3)]
    assert [p.sequence for p in again] == [1, 3, 4]
    assert take(ob) is None
    assert ob.resent_batches == 0  # spooled batches come back as new Pending objects
    assert ob.sent_batches == 6
    for p in again:
        assert ob.ack(p.sequence, p.epoch) == p.batch.count
    assert len(spool) == 0 and ob.drained()


def test_requeue_mixes_memory_and_spool_in_order(spool):
    b = make_batch(0)
    ob = Outbox(max_bytes=2 * (b.nbytes + 64), spool=spool, epoch=1)
    ob.set_online(True)
    ob.put(make_batch(0))
    ob.put(make_batch(1))  # 1, 2 in memory
    assert [take(ob).sequence for _ in range(2)] == [1, 2]
    ob.put(make_batch(2))  # 3 in memory, 1 and 2 in flight: full
    ob.put(make_batch(3))  # memory (1, 2 in flight, 3 queued) moves to the spool first
    assert ob.memory_batches() == 0 and len(spool) == 4
    assert [take(ob).sequence for _ in range(2)] == [3, 4]
    assert ob.requeue_inflight() == 4
    got = [take(ob) for _ in range(4)]
    assert [p.sequence for p in got] == [1, 2, 3, 4]
    assert all(p.spooled for p in got)
    assert ob.resent_batches == 0  # read back from the spool: new Pending objects


def test_max_inflight_applies_to_spooled_batches(spool):
    ob = Outbox(max_inflight=2, spool=spool, epoch=1)
    for i in range(4):
        ob.put(make_batch(i))
    assert take(ob).sequence == 1
    assert take(ob).sequence == 2
    assert take(ob) is None
    ob.ack(1, 1)
    assert take(ob).sequence == 3


# -------------------------------------------------------------------------- restart


def test_restart_hands_back_the_earlier_runs_batches_first(tmp_path):
    d = tmp_path / "spool"
    sp = Spool(d)
    ob = Outbox(spool=sp, epoch=100)
    old = [make_batch(i) for i in range(3)]
    for b in old:
        ob.put(b)
    p = take(ob)  # in flight, never acknowledged, when the process stops
    assert p.sequence == 1
    assert ob.spool_rest() == 0
    sp.close()

    sp2 = Spool(d)
    try:
        assert len(sp2) == 3
        ob2 = Outbox(spool=sp2, epoch=200)
        assert ob2.spooling and ob2.backlog == 3
        assert not ob2.drained()
        new = make_batch(50)
        ob2.set_online(True)
        assert ob2.put(new)  # behind the spooled ones, so spooled too
        assert ob2.queued_bytes == 0
        got = [take(ob2) for _ in range(4)]
        assert [(p.epoch, p.sequence) for p in got] == [(100, 1), (100, 2), (100, 3), (200, 1)]
        assert all(same(p, b) for p, b in zip(got, [*old, new], strict=True))
        assert ob2.ack(1, 200) == new.count
        for p in got[:3]:
            assert ob2.ack(p.sequence) == 0  # this run's epoch: not these
            assert ob2.ack(p.sequence, 100) == p.batch.count
        assert len(sp2) == 0 and ob2.drained() and not ob2.spooling
    finally:
        sp2.close()


def test_spool_rest_moves_memory_batches_and_they_survive_a_restart(tmp_path):
    d = tmp_path / "spool"
    sp = Spool(d)
    ob = Outbox(spool=sp, epoch=5)
    ob.set_online(True)
    batches = [make_batch(i) for i in range(4)]
    for b in batches:
        ob.put(b)
    assert take(ob).sequence == 1  # one in flight
    assert ob.memory_batches() == 4 and len(sp) == 0
    assert ob.spool_rest() == 0
    assert ob.memory_batches() == 0 and ob.queued_bytes == 0
    assert len(sp) == 4
    sp.close()
    with Spool(d) as sp2:
        ob2 = Outbox(spool=sp2, epoch=6)
        got = drain(ob2)
        assert [(p.epoch, p.sequence) for p in got] == [(5, 1), (5, 2), (5, 3), (5, 4)]
        assert all(same(p, b) for p, b in zip(got, batches, strict=True))


def test_spool_rest_without_spool_counts_what_is_lost():
    ob = Outbox()
    ob.put(make_batch(1))
    ob.put(make_batch(2))
    take(ob)
    assert ob.spool_rest() == 2


# ------------------------------------------------------------------------ spool full


def test_spool_full_drops_new_live_batches_and_keeps_the_spooled_ones(tmp_path):
    b = make_batch(0)
    rec = record_size(b)
    sp = Spool(tmp_path / "s", max_bytes=3 * rec + rec // 2)
    try:
        ob = Outbox(spool=sp, epoch=1)
        batches = [make_batch(i) for i in range(6)]
        results = [ob.put(x) for x in batches]
        assert results == [True, True, True, False, False, False]
        c = sp.counters()
        assert c["dropped_batches"] == 3
        assert c["dropped_packets"] == sum(x.count for x in batches[3:])
        assert c["records"] == 3
        ob.set_online(True)
        got = drain(ob)
        assert [p.sequence for p in got] == [1, 2, 3]
        assert all(same(p, x) for p, x in zip(got, batches[:3], strict=True))
        assert ob.drained()
    finally:
        sp.close()


def test_spool_full_frees_room_once_acknowledged(tmp_path):
    b = make_batch(0)
    rec = record_size(b)
    sp = Spool(tmp_path / "s", max_bytes=2 * rec, segment_bytes=1)  # one record per segment
    try:
        ob = Outbox(spool=sp, epoch=1)
        assert ob.put(make_batch(1)) and ob.put(make_batch(2))
        assert not ob.put(make_batch(3))
        p = take(ob)
        ob.ack(p.sequence, p.epoch)
        assert ob.put(make_batch(4))  # the acknowledged segment's room is free again
        assert [q.sequence for q in drain(ob)] == [2, 3]
    finally:
        sp.close()


def test_a_full_spool_says_once_when_dropping_starts_and_once_when_it_ends(tmp_path, caplog):
    b = make_batch(0)
    sp = Spool(tmp_path / "s", max_bytes=2 * record_size(b), segment_bytes=1)
    try:
        ob = Outbox(spool=sp, epoch=1)
        with caplog.at_level(logging.WARNING, logger="lc.link.spool"):
            assert ob.put(make_batch(1)) and ob.put(make_batch(2))
            assert caplog.messages == []
            assert not any(ob.put(make_batch(i, count=2)) for i in range(3, 6))
            assert len(caplog.messages) == 1 and "is full" in caplog.messages[0]
            p = take(ob)
            ob.ack(p.sequence, p.epoch)
            assert ob.put(make_batch(6))
            assert ob.put(make_batch(7)) is False  # full again: said again
        assert len(caplog.messages) == 3, caplog.messages
        assert "has room again; 3 batches (6 packets) were dropped" in caplog.messages[1]
        assert "is full" in caplog.messages[2]
    finally:
        sp.close()


def test_blocking_put_on_a_full_spool_drops_at_once_counted_once(tmp_path):
    b = make_batch(0)
    sp = Spool(tmp_path / "s", max_bytes=record_size(b))
    try:
        ob = Outbox(spool=sp, epoch=1)  # offline: a replay during an outage
        assert ob.put(make_batch(1))
        result: list[bool] = []
        t = threading.Thread(
            target=lambda: result.append(ob.put(make_batch(2, count=5), block=True)),
            daemon=True,
        )
        t.start()
        t.join(JOIN)  # drop-newest, replay or not: it must not wait for room
        assert not t.is_alive() and result == [False]
        c = sp.counters()
        assert c["dropped_batches"] == 1 and c["dropped_packets"] == 5
        assert ob.dropped_batches == 0 and ob.dropped_packets == 0  # counted once
        assert c["records"] == 1
        ob.set_online(True)
        assert [p.sequence for p in drain(ob)] == [1]
    finally:
        sp.close()


def test_blocking_put_online_waits_for_memory_and_not_the_spool(spool):
    b = make_batch(0)
    ob = Outbox(max_bytes=b.nbytes + 64, spool=spool, epoch=1)
    ob.set_online(True)
    assert ob.put(make_batch(1))
    p = take(ob)
    result: list[bool] = []
    t = threading.Thread(
        target=lambda: result.append(ob.put(make_batch(2), block=True)), daemon=True
    )
    t.start()
    assert ob.ack(p.sequence, p.epoch) == p.batch.count  # frees memory
    t.join(JOIN)
    assert not t.is_alive() and result == [True]
    assert len(spool) == 0 and spool.counters()["appended"] == 0
    q = take(ob)
    assert q.sequence == 2 and not q.spooled


def test_partial_spill_keeps_capture_order(tmp_path):
    b = make_batch(0)
    sp = Spool(tmp_path / "s", max_bytes=record_size(b) + 10)  # room for one batch
    try:
        ob = Outbox(spool=sp, epoch=1)
        ob.set_online(True)
        for i in range(3):
            ob.put(make_batch(i))
        ob.set_online(False)  # only batch 1 fits in the spool
        ob.set_online(True)
        assert [p.sequence for p in drain(ob)] == [1, 2, 3]
    finally:
        sp.close()


def test_partial_spill_counts_no_drop_for_batches_kept_in_memory(tmp_path):
    b = make_batch(0)
    sp = Spool(tmp_path / "s", max_bytes=record_size(b) + 10)
    try:
        ob = Outbox(spool=sp, epoch=1)
        ob.set_online(True)
        for i in range(3):
            ob.put(make_batch(i))
        ob.set_online(False)
        ob.set_online(True)
        assert sorted(p.sequence for p in drain(ob)) == [1, 2, 3]  # nothing lost...
        assert sp.counters()["dropped_batches"] == 0  # ...so nothing counted as dropped
    finally:
        sp.close()


# ---------------------------------------------------------------- drained / backlog


def test_wait_drained_considers_the_spool(spool):
    ob = Outbox(spool=spool, epoch=1)
    assert ob.wait_drained(0)
    ob.put(make_batch(1))
    ob.put(make_batch(2))
    assert not ob.drained()
    assert not ob.wait_drained(0)  # no memory batch, but two spooled ones
    p = take(ob)
    ob.ack(p.sequence, p.epoch)
    assert not ob.wait_drained(0)
    p = take(ob)
    assert not ob.wait_drained(0)  # in flight
    ob.ack(p.sequence, p.epoch)
    assert ob.wait_drained(0) and ob.drained()


def test_wait_drained_wakes_on_ack_from_another_thread(spool):
    ob = Outbox(spool=spool, epoch=1)
    ob.put(make_batch(1))
    p = take(ob)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(ob.wait_drained(JOIN)), daemon=True)
    t.start()
    ob.ack(p.sequence, p.epoch)
    t.join(JOIN)
    assert result == [True]


def test_backlog_counts_spooled_unsent_batches(spool):
    b = make_batch(0)
    ob = Outbox(max_bytes=2 * (b.nbytes + 64), spool=spool, epoch=1)
    assert ob.backlog == 0
    for i in range(3):
        ob.put(make_batch(i))
    assert ob.backlog == 3
    p1 = take(ob)
    assert ob.backlog == 2  # sent, not acknowledged: no longer waiting
    ob.ack(p1.sequence, p1.epoch)
    assert ob.backlog == 2
    take(ob)
    take(ob)
    assert ob.backlog == 0
    ob.requeue_inflight()
    assert ob.backlog == 2
    drain(ob)
    assert ob.backlog == 0
    ob.set_online(True)
    ob.put(make_batch(9))
    ob.put(make_batch(10))
    ob.put(make_batch(11))  # memory full: memory's two go to the spool, then this one
    assert ob.memory_batches() == 0 and len(spool) == 3
    assert ob.backlog == 3


# ------------------------------------------------------------------ random schedule


def run_schedule(rnd: random.Random, directory: str, steps: int, restart: bool = False) -> None:
    """Random puts, outages, sends, acks and broken streams; then the link comes back
    for good, or (``restart``) the hunter stops, keeping what is owed in the spool, and a
    new run on the same spool delivers it. Either way every batch is delivered, and
    first deliveries follow capture order."""
    sample = make_batch(0)
    mem_batches = rnd.choice([1, 2, 4, 100])
    ob = Outbox(
        max_bytes=mem_batches * (sample.nbytes + 64),
        max_inflight=rnd.choice([1, 3, 64]),
        spool=Spool(directory, segment_bytes=rnd.choice([1, 600, 1 << 20])),
        epoch=rnd.randint(1, 1 << 40),
    )
    sp = ob.spool
    assert sp is not None
    try:
        put: dict[int, SealedBatch] = {}
        seen: dict[int, Pending] = {}  # what the test last received, by sequence
        first_order: list[int] = []
        acked: set[int] = set()
        online = False
        for _ in range(steps):
            op = rnd.choices(["put", "online", "next", "ack", "requeue"], weights=[5, 1, 4, 3, 1])[
                0
            ]
            if op == "put":
                seq = len(put) + 1
                b = make_batch(seq, count=rnd.randint(1, 4), size=rnd.randint(1, 60))
                before = ob.queued_bytes
                assert ob.put(b)
                put[seq] = b
                if not online:
                    assert ob.queued_bytes == before  # offline: memory does not grow
            elif op == "online":
                was_online = online
                online = rnd.random() < 0.5
                ob.set_online(online)
                if was_online and not online:
                    # an outage starts: what memory held is now on disk
                    assert ob.memory_batches() == 0 and ob.queued_bytes == 0
            elif op == "next":
                p = take(ob)
                if p is not None:
                    assert p.epoch == ob.epoch
                    assert p.sequence not in acked
                    assert same(p, put[p.sequence])
                    if p.sequence not in seen:
                        first_order.append(p.sequence)
                    seen[p.sequence] = p
            elif op == "ack" and seen:
                seq = rnd.choice(sorted(seen))
                n = ob.ack(seq, seen[seq].epoch)
                if n:
                    assert n == put[seq].count
                    assert seq not in acked, f"batch {seq} acknowledged twice"
                    acked.add(seq)
                    del seen[seq]
            elif op == "requeue":
                ob.requeue_inflight()
            assert ob.inflight <= ob.max_inflight
            assert ob.queued_bytes >= 0
            assert len(sp) <= len(put) - len(acked)
        if restart:  # stop: what memory holds joins the spool, and a new run sends it all
            assert ob.spool_rest() == 0
            sp.close()
            acked_before = ob.acked_batches
            sp = Spool(directory)
            ob = Outbox(spool=sp, epoch=ob.epoch + 1)
            assert ob.acked_batches == 0
        else:  # the link comes back for good: everything still owed is delivered
            acked_before = 0
        ob.set_online(True)
        ob.requeue_inflight()
        while (p := take(ob)) is not None:
            assert same(p, put[p.sequence])
            if p.sequence not in seen and p.sequence not in acked:
                first_order.append(p.sequence)
            seen[p.sequence] = p
            assert ob.ack(p.sequence, p.epoch) == p.batch.count
            assert p.sequence not in acked, f"batch {p.sequence} acknowledged twice"
            acked.add(p.sequence)
        assert acked == set(put), f"never delivered: {sorted(set(put) - acked)}"
        assert first_order == sorted(first_order), "first deliveries out of capture order"
        assert ob.drained() and ob.wait_drained(0)
        assert len(sp) == 0 and ob.queued_bytes == 0 and ob.backlog == 0
        c = sp.counters()
        assert c["dropped_batches"] == 0 and c["write_errors"] == 0
        if not restart:
            assert c["acked"] == c["appended"] and c["records"] == 0  # each spooled one acked
            assert ob.acked_packets == sum(b.count for b in put.values())
        assert acked_before + ob.acked_batches == len(put)
    finally:
        sp.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(0, 80))
def test_random_schedules_deliver_every_batch_once_in_order(seed, steps):
    with tempfile.TemporaryDirectory() as d:
        run_schedule(random.Random(seed), d, steps)


@pytest.mark.parametrize("seed", range(8))
def test_long_random_schedules(seed, tmp_path):
    run_schedule(random.Random(1000 + seed), str(tmp_path / "spool"), 400)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(0, 80))
def test_random_schedules_then_a_stop_and_a_new_run_deliver_in_capture_order(seed, steps):
    with tempfile.TemporaryDirectory() as d:
        run_schedule(random.Random(seed), d, steps, restart=True)


def test_a_stop_with_batches_in_memory_and_in_the_spool_keeps_capture_order(tmp_path):
    """Memory full while online: the newer batches went to the spool while the older ones
    were still in memory; at the stop the older ones were appended behind them, so the
    next run sent them after the newer ones (the order swapped in the output)."""
    d = tmp_path / "spool"
    b = make_batch(0)
    sp = Spool(d)
    ob = Outbox(max_bytes=2 * (b.nbytes + 64), spool=sp, epoch=5)
    ob.set_online(True)
    batches = [make_batch(i) for i in range(6)]
    assert all(ob.put(x) for x in batches)
    assert take(ob).sequence == 1  # in flight when the hunter stops
    assert ob.spool_rest() == 0
    sp.close()
    with Spool(d) as sp2:
        got = drain(Outbox(spool=sp2, epoch=6))
    assert [(p.epoch, p.sequence) for p in got] == [(5, i) for i in range(1, 7)]
    assert all(same(p, x) for p, x in zip(got, batches, strict=True))


def test_every_spool_counter_reaches_the_heartbeat(tmp_path):
    """The hunter copies Spool.counters() into SpoolCounters by name."""
    with Spool(tmp_path / "s") as sp:
        names = set(sp.counters())
    assert names <= {f.name for f in lc_pb2.SpoolCounters.DESCRIPTOR.fields}


def test_a_batch_taken_by_a_dead_stream_after_requeue_is_sent_again(tmp_path):
    """The race that lost a batch in the processor-SIGKILL test: the stream breaks, its
    batches are spilled to the spool and requeued, and only then does the dying stream's
    request generator take the first spooled batch. Given back with unsend, it is sent
    by the next stream, in order."""
    with Spool(tmp_path / "s") as sp:
        ob = Outbox(spool=sp, epoch=5)
        ob.set_online(True)
        for k in range(3):
            assert ob.put(make_batch(k))
        assert ob.next_batch(0).sequence == 1  # in flight on the stream that breaks
        ob.set_online(False)  # the break: memory goes to the spool
        ob.requeue_inflight()
        late = ob.next_batch(0)  # the dying generator, after the requeue
        assert late.sequence == 1 and late.spooled
        ob.unsend(late)
        ob.set_online(True)  # the next stream
        got = []
        while (p := ob.next_batch(0)) is not None:
            got.append(p.sequence)
            ob.ack(p.sequence, p.epoch)
        assert got == [1, 2, 3]
        assert ob.wait_drained(1) and len(sp) == 0


# --------------------------------------------------------------------------- events


def events_batch(n: int) -> SealedBatch:
    evs = [lc_pb2.Event(dataset="sip", session_id=f"c{n}-{i}", captured=True) for i in range(3)]
    return SealedBatch(b"", 0, None, 0, events=evs, event_bytes=sum(e.ByteSize() for e in evs))


def test_events_only_batches_go_through_memory_and_the_spool(tmp_path):
    with Spool(tmp_path / "spool") as sp:
        ob = Outbox(spool=sp, epoch=4)
        # Offline: to the spool, with the packets' batches around it, in order.
        mixed = make_batch(1)
        mixed.events = [lc_pb2.Event(dataset="sip", session_id="m")]
        assert ob.put(events_batch(0)) and ob.put(mixed) and ob.put(events_batch(2))
        assert len(sp) == 3
        got = [take(ob) for _ in range(3)]
        assert all(p.spooled for p in got)
        msgs = [sent(p) for p in got]
        assert [[e.session_id for e in m.events] for m in msgs] == [
            ["c0-0", "c0-1", "c0-2"], ["m"], ["c2-0", "c2-1", "c2-2"],
        ]  # fmt: skip
        assert [m.count for m in msgs] == [0, 3, 0]
        assert meta_of(got[1]) == mixed.meta
        for p in got:
            assert ob.ack(p.sequence, p.epoch) == p.batch.count
        assert len(sp) == 0
        # Online: in memory, charged for its events.
        ob.set_online(True)
        b = events_batch(3)
        assert ob.put(b)
        assert len(sp) == 0 and ob.queued_bytes == b.event_bytes + 64
        p = take(ob)
        assert [e.session_id for e in sent(p).events] == ["c3-0", "c3-1", "c3-2"]
        assert ob.ack(p.sequence, p.epoch) == 0 and ob.drained()


def test_events_survive_a_hunter_restart_in_the_spool(tmp_path):
    with Spool(tmp_path / "spool") as sp:
        ob = Outbox(spool=sp, epoch=4)
        assert ob.put(events_batch(7))
    with Spool(tmp_path / "spool") as sp:
        ob = Outbox(spool=sp, epoch=5)
        p = take(ob)
        assert p.epoch == 4 and p.sequence == 1
        assert [e.session_id for e in sent(p).events] == ["c7-0", "c7-1", "c7-2"]


def test_the_uplink_sends_the_caplen_column_from_memory_and_from_the_spool(tmp_path):
    """What the uplink serialises for a batch (Uplink._build, encode_batch_bytes) carries
    its caplen column whether the batch is in memory or was read back from the spool,
    and the processor's bulk check takes it; a batch without the column goes without."""
    from array import array

    from lc.common.wire import split_batch, unpack_batch
    from lc.link.uplink import HunterIdentity, Uplink

    sp = Spool(tmp_path / "spool")
    ob = Outbox(max_bytes=1 << 20, spool=sp, epoch=7)
    ob.set_online(True)
    ident = HunterIdentity("h", 7, "host", "0", "generic", ["eth0"])
    up = Uplink("127.0.0.1:9", None, ident, ob, [("eth0", 1)], lambda: None)  # never started
    with_col = [make_batch(i, count=5) for i in range(3)]
    for b in with_col:
        b.caplen = array("I", record_lengths(b.records, b.count))
    plain = make_batch(9, count=4)
    assert ob.put(with_col[0])  # online: memory
    first = take(ob)
    assert first is not None and first.batch is with_col[0]
    sent = [up._build(first)]
    ob.set_online(False)
    assert all(ob.put(b) for b in (*with_col[1:], plain))  # offline: the spool
    got = [take(ob) for _ in range(3)]
    assert all(p is not None and isinstance(p.batch, SpooledBatch) for p in got)
    sent += [up._build(p) for p in got]  # type: ignore[arg-type]
    for raw, b in zip(sent, [*with_col, plain], strict=True):
        msg, view = split_batch(raw)
        assert view is not None and bytes(view) == b.records
        if b.caplen is None:
            assert msg.caplen == b""
        else:
            assert msg.caplen == b.caplen.tobytes()
        cols = unpack_batch(msg, view)
        assert list(cols.caplen) == list(record_lengths(b.records, b.count))
        assert [(m.index, list(m.filter_ids)) for m in msg.meta] == b.meta
    sp.close()


def test_spooled_batches_in_flight_are_bounded_by_bytes_too(spool):
    """Batches read back from the spool stay in memory until acknowledged: besides the
    window of 64 batches, at most max_spool_inflight_bytes of them (one always goes)."""
    big = [make_batch(i, count=4, size=1000) for i in range(6)]
    each = big[0].nbytes + 64  # what a batch is charged (bytes + overhead)
    ob = Outbox(spool=spool, epoch=1, max_spool_inflight_bytes=2 * each)
    for b in big:
        assert ob.put(b)  # offline: to the spool
    ob.set_online(True)
    first = [take(ob), take(ob)]
    assert [p.sequence for p in first] == [1, 2] and take(ob) is None
    assert ob.spool_inflight_bytes == 2 * each
    ob.ack(1, 1)
    assert take(ob).sequence == 3 and take(ob) is None
    ob.requeue_inflight()  # a broken stream: nothing is in flight any more
    assert ob.spool_inflight_bytes == 0
    got = drain(ob)
    assert [p.sequence for p in got] == [2, 3, 4, 5, 6]
    assert all(same(p, big[p.sequence - 1]) for p in got)
    assert ob.spool_inflight_bytes == 0 and len(spool) == 0
    # One batch larger than the bound still goes, alone.
    ob.set_online(False)
    ob.put(make_batch(9, count=8, size=1000))
    ob.set_online(True)
    p = take(ob)
    assert p is not None and p.batch.count == 8 and take(ob) is None
    ob.ack(p.sequence, p.epoch)
    assert ob.spool_inflight_bytes == 0
