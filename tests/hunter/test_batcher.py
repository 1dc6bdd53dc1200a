"""Tests for lc.hunter.batcher.Batcher: pure, time is a parameter, so no clocks here.

The packets are random (hypothesis), framed with lc.common.pcapfile.frame_records and
cut into random chunks. The expectations come from the module's contract, checked
against a small model of the targets, never from the batcher's own state alone.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lc.common.pcapfile import frame_records, record_lengths
from lc.hunter.batcher import MAX_BATCH_EVENTS, Batcher, SealedBatch
from lc.proto import lc_pb2

NS = 1_000_000_000
TS_MAX = (1 << 32) * NS - 1  # pcap seconds are unsigned 32-bit

HYP = settings(
    deadline=None,
    max_examples=80,
    report_multiple_bugs=False,  # one shrunk failure is enough, and much faster
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- helpers


@dataclass
class Chunk:
    ts_ns: array
    caplen: array
    origlen: array
    records: bytes
    iface: int | array

    def __len__(self) -> int:
        return len(self.caplen)

    def iface_list(self) -> list[int]:
        if isinstance(self.iface, int):
            return [self.iface] * len(self)
        return list(self.iface)


def make_chunk(packets: list[tuple[int, bytes, int]], iface: int | list[int] = 0) -> Chunk:
    """packets: (ts_ns, data, extra origlen) -> a framed chunk."""
    ts = array("q", [p[0] for p in packets])
    cap = array("I", [len(p[1]) for p in packets])
    orig = array("I", [len(p[1]) + p[2] for p in packets])
    blob = b"".join(p[1] for p in packets)
    ifc: int | array = iface if isinstance(iface, int) else array("H", iface)
    return Chunk(ts, cap, orig, frame_records(ts, cap, orig, blob), ifc)


def packets_of(sizes: list[int], seed: int = 0) -> list[tuple[int, bytes, int]]:
    rnd = random.Random(seed)
    return [(1_700_000_000 * NS + i, rnd.randbytes(s), 0) for i, s in enumerate(sizes)]


def add(b: Batcher, c: Chunk, now: int, busy: bool = False) -> list[SealedBatch]:
    return b.add_chunk(c.ts_ns, c.caplen, c.origlen, c.records, c.iface, now, busy)


def batch_ifaces(sb: SealedBatch) -> list[int]:
    return [0] * sb.count if sb.iface is None else list(sb.iface)


def split(items: list, cuts: list[int]) -> list[list]:
    """``items`` cut at the given positions (sorted, deduplicated, clipped)."""
    pos = sorted({min(max(c, 0), len(items)) for c in cuts} | {0, len(items)})
    return [items[a:b] for a, b in pairwise(pos)]


# (ts_ns, size, origlen - caplen): sizes are drawn and contents derived from them,
# so hypothesis explores sizes (what the targets depend on) instead of byte strings,
# which it keeps short, and a failing example prints as a few numbers.
packet_st = st.tuples(st.integers(0, TS_MAX), st.integers(0, 300), st.integers(0, 1000))


def materialise(specs: list[tuple[int, int, int]]) -> list[tuple[int, bytes, int]]:
    return [(ts, random.Random(ts ^ size).randbytes(size), extra) for ts, size, extra in specs]


packets_st = st.lists(packet_st, min_size=0, max_size=80)


# --------------------------------------------------------------------------- properties


# The broad net. Shrinking this many parameters takes longer than the whole suite
# may, so a failure here is reported as found (the messages name the batch and its
# numbers); the focused tests below shrink their failures to a few packets.
@settings(HYP, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    specs=packets_st,
    cuts=st.lists(st.integers(0, 80), max_size=15),
    batch_size=st.integers(1, 40),
    byte_target=st.integers(1, 700),
    max_mul=st.integers(1, 8),
    busy=st.lists(st.booleans(), min_size=1, max_size=20),
    iface_kind=st.sampled_from(["zero", "int", "array"]),
    seed=st.integers(0, 2**32),
)
def test_batches_preserve_the_stream_and_respect_the_targets(
    specs, cuts, batch_size, byte_target, max_mul, busy, iface_kind, seed
):
    packets = materialise(specs)
    rnd = random.Random(seed)
    max_packets = batch_size * max_mul
    max_bytes = byte_target * rnd.randint(1, 8)
    b = Batcher(
        batch_size=batch_size,
        timeout_ns=10**9,
        byte_target=byte_target,
        max_packets=max_packets,
        max_bytes=max_bytes,
    )
    # The target model, from the module's contract: doubles on a busy seal up to the
    # maximum, halves back toward the configured size on a calm one.
    tp, tb = batch_size, byte_target

    def next_targets(tp: int, tb: int, was_busy: bool) -> tuple[int, int]:
        if was_busy:
            return min(tp * 2, max_packets), min(tb * 2, max_bytes)
        return max(tp // 2, batch_size), max(tb // 2, byte_target)

    chunks: list[Chunk] = []
    for i, part in enumerate(split(packets, cuts)):
        if iface_kind == "zero":
            ifc: int | list[int] = 0
        elif iface_kind == "int":
            ifc = rnd.randint(0, 3)
        else:
            ifc = [
                rnd.randint(0, 0xFFFF) if rnd.random() < 0.1 else rnd.randint(0, 2) for _ in part
            ]
        chunks.append(make_chunk(part, ifc))
        assert len(chunks[-1]) == len(part), i

    all_caplens = [len(p[1]) for p in packets]
    sealed: list[tuple[SealedBatch, int, int, bool]] = []  # batch, its targets, from add_chunk
    for i, c in enumerate(chunks):
        flag = busy[i % len(busy)]
        for sb in add(b, c, now=i, busy=flag):
            sealed.append((sb, tp, tb, True))
            tp, tb = next_targets(tp, tb, flag)
        assert (b.target_packets, b.target_bytes) == (tp, tb)
    if b.pending:
        sealed.append((b.seal(), tp, tb, False))
        tp, tb = next_targets(tp, tb, False)
        assert (b.target_packets, b.target_bytes) == (tp, tb)
    assert b.pending == 0

    # Exactly the input records, in order, with their interfaces.
    assert b"".join(sb.records for sb, *_ in sealed) == b"".join(c.records for c in chunks)
    assert sum(sb.count for sb, *_ in sealed) == len(packets)
    got_ifaces = [i for sb, *_ in sealed for i in batch_ifaces(sb)]
    assert got_ifaces == [i for c in chunks for i in c.iface_list()]

    pos = 0
    for k, (sb, target_p, target_b, from_add) in enumerate(sealed):
        assert sb.count >= 1, f"batch {k} is empty"
        assert len(sb) == sb.count
        caps = all_caplens[pos : pos + sb.count]
        # A sealed batch is valid framing for the wire and says what it holds.
        assert list(record_lengths(sb.records, sb.count)) == caps
        # Its caplen column (sent for the processor's bulk check) is the records' own.
        assert sb.caplen is not None and sb.caplen.typecode == "I" and list(sb.caplen) == caps
        assert sb.nbytes == sum(caps)
        assert sb.iface is None or (len(sb.iface) == sb.count and any(sb.iface))
        # The targets in force when the batch was filled.
        assert sb.count <= target_p, f"batch {k}: {sb.count} packets > target {target_p}"
        assert sb.count == 1 or sb.nbytes <= target_b, (
            f"batch {k}: {sb.count} packets of {caps} = {sb.nbytes} bytes > byte target {target_b}"
        )
        # Not sealed early: full, at its byte target, or the next packet does not fit.
        if from_add:
            nxt = all_caplens[pos + sb.count] if pos + sb.count < len(packets) else 0
            assert sb.count == target_p or sb.nbytes >= target_b or sb.nbytes + nxt > target_b, (
                f"batch {k} sealed early: {sb.count}/{target_p} packets, {sb.nbytes}/{target_b} B"
            )
        pos += sb.count


@HYP
@given(
    sizes=st.lists(st.integers(0, 400), min_size=1, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=10),
    byte_target=st.integers(1, 1500),
)
def test_byte_target_with_unlimited_packets(sizes, cuts, byte_target):
    """Only the byte target limits these batches; an oversized packet travels alone."""
    b = Batcher(batch_size=10_000, byte_target=byte_target, max_packets=10_000)
    out: list[SealedBatch] = []
    for i, part in enumerate(split(packets_of(sizes), cuts)):
        out += add(b, make_chunk(part), now=i)
    if b.pending:
        out.append(b.seal())
    assert [s for sb in out for s in record_lengths(sb.records, sb.count)] == sizes
    for sb in out:
        caps = list(record_lengths(sb.records, sb.count))
        if any(c > byte_target for c in caps):
            assert sb.count == 1, f"oversized packet shares a batch: {caps} (target {byte_target})"
        else:
            assert sb.nbytes <= byte_target, f"{caps} = {sb.nbytes} B > target {byte_target}"


def test_byte_target_examples():
    # A packet that does not fit what is left of the budget starts the next batch.
    b = Batcher(batch_size=100, byte_target=100)
    out = add(b, make_chunk(packets_of([90, 50])), now=0)
    out += [b.seal()] if b.pending else []
    assert [list(record_lengths(x.records, x.count)) for x in out] == [[90], [50]]

    # An oversized packet arriving while a batch is pending goes alone, in its own batch.
    b = Batcher(batch_size=100, byte_target=100)
    out = add(b, make_chunk(packets_of([30])), now=0)
    out += add(b, make_chunk(packets_of([300], seed=1)), now=1)
    out += add(b, make_chunk(packets_of([20], seed=2)), now=2)
    out += [b.seal()] if b.pending else []
    assert [list(record_lengths(x.records, x.count)) for x in out] == [[30], [300], [20]]

    # Exactly at the byte target: sealed at once.
    b = Batcher(batch_size=100, byte_target=100)
    out = add(b, make_chunk(packets_of([40, 60, 10])), now=0)
    assert [x.nbytes for x in out] == [100]
    assert b.pending == 1


def test_packet_target_seals_full_batches():
    b = Batcher(batch_size=4, byte_target=10**6)
    out = add(b, make_chunk(packets_of([10] * 10)), now=0)
    assert [x.count for x in out] == [4, 4]
    assert b.pending == 2
    out = add(b, make_chunk(packets_of([10] * 2, seed=1)), now=1)
    assert [x.count for x in out] == [4]
    assert b.pending == 0


# --------------------------------------------------------------------------- timeout


def test_due_only_after_timeout_since_first_pending_packet():
    t = 1_000_000
    b = Batcher(batch_size=100, timeout_ns=50)
    assert not b.due(0) and not b.due(10**18)  # nothing pending: never due
    assert add(b, make_chunk(packets_of([10])), now=t) == []
    assert not b.due(t) and not b.due(t + 49)
    # A later packet does not restart the clock of the pending batch.
    add(b, make_chunk(packets_of([10], seed=1)), now=t + 40)
    assert not b.due(t + 49)
    assert b.due(t + 50) and b.due(t + 51)
    assert b.due(t + 50)  # asking has no side effect
    b.seal()
    assert not b.due(t + 10**9)
    # The next batch's clock starts with its own first packet.
    add(b, make_chunk(packets_of([10], seed=2)), now=t + 500)
    assert not b.due(t + 549)
    assert b.due(t + 550)


def test_due_clock_restarts_for_leftover_after_a_seal():
    b = Batcher(batch_size=3, timeout_ns=100)
    add(b, make_chunk(packets_of([5, 5])), now=0)
    # This chunk completes the first batch and leaves 2 packets pending, which
    # arrived at now=70: their clock starts there, not at 0.
    out = add(b, make_chunk(packets_of([5, 5, 5], seed=1)), now=70)
    assert [x.count for x in out] == [3]
    assert b.pending == 2
    assert not b.due(100) and not b.due(169)
    assert b.due(170)


@HYP
@given(
    events=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 300), st.booleans()), min_size=1, max_size=40
    ),
    batch_size=st.integers(1, 8),
    timeout=st.integers(1, 500),
)
def test_due_matches_a_model(events, batch_size, timeout):
    """events: (packets in the chunk, time step, seal if due)."""
    b = Batcher(batch_size=batch_size, timeout_ns=timeout, byte_target=10**6)
    now = 10**6
    pending = 0
    first: int | None = None
    for i, (n, step, tick) in enumerate(events):
        now += step
        sealed = add(b, make_chunk(packets_of([1] * n, seed=i)), now=now)
        pending += n - sum(x.count for x in sealed)
        if pending and (first is None or sealed):
            first = now
        if not pending:
            first = None
        for probe in (now, now + timeout - 1, now + timeout, now + 10 * timeout):
            expect = first is not None and probe - first >= timeout
            assert b.due(probe) == expect, (probe, first, pending)
        if first is not None:
            assert not b.due(first + timeout - 1)
            assert b.due(first + timeout)
        if tick and b.due(now):
            sb = b.seal()
            assert sb.count == pending
            pending, first = 0, None


def add_live(b: Batcher, c: Chunk, now: int, offset: int) -> list[SealedBatch]:
    return b.add_chunk(c.ts_ns, c.caplen, c.origlen, c.records, c.iface, now, ts_offset_ns=offset)


def test_live_timeout_counts_from_the_capture_time():
    # Capture clock (the packets' timestamps) = monotonic clock + 5 s here.
    off = -5 * NS
    b = Batcher(batch_size=100, timeout_ns=100)
    assert b.deadline() is None
    now = 10_000
    # Captured 30 ns before it is added (it waited in the kernel's ring).
    add_live(b, make_chunk([(now - 30 - off, b"x" * 10, 0)]), now=now, offset=off)
    assert b.deadline() == now - 30 + 100
    assert not b.due(now + 69) and b.due(now + 70)
    # A packet captured earlier than the pending ones (a mode held it) moves the
    # deadline earlier; a later one does not move it.
    add_live(b, make_chunk([(now - 50 - off, b"y", 0), (now + 5 - off, b"z", 0)]), now + 10, off)
    assert b.deadline() == now - 50 + 100
    assert not b.due(now + 49) and b.due(now + 50)
    b.seal()
    assert b.deadline() is None
    # A capture time after now (the wall clock stepped back) counts as now.
    add_live(b, make_chunk([(now + 10**6 - off, b"w", 0)]), now=now + 20, offset=off)
    assert b.deadline() == now + 20 + 100
    # Without an offset (a replayed file) the capture time does not count.
    b.seal()
    add(b, make_chunk([(0, b"v", 0)]), now=now + 30)
    assert b.deadline() == now + 30 + 100


def test_live_leftover_after_a_seal_counts_from_its_own_capture():
    off = 0
    b = Batcher(batch_size=2, timeout_ns=100)
    out = add_live(
        b, make_chunk([(1000, b"a", 0), (1010, b"b", 0), (1020, b"c", 0)]), now=1050, offset=off
    )
    assert [x.count for x in out] == [2]
    assert b.deadline() == 1020 + 100  # "c" was captured at 1020, not 1000


def test_deadline_of_events_that_fill_a_batch_is_now():
    b = Batcher(batch_size=100, timeout_ns=10**9)
    ev = [lc_pb2.Event(dataset="x") for _ in range(MAX_BATCH_EVENTS)]
    b.add_events(ev, now_ns=500)
    assert b.deadline() == 500 and b.due(500)


@HYP
@given(
    steps=st.lists(
        st.tuples(
            st.lists(st.integers(0, 400), max_size=6),  # packets: how long before now captured
            st.integers(0, 300),  # time step
            st.booleans(),  # seal if due
        ),
        min_size=1,
        max_size=40,
    ),
    batch_size=st.integers(1, 8),
    timeout=st.integers(1, 500),
    live=st.booleans(),
)
def test_deadline_matches_a_model(steps, batch_size, timeout, live):
    """Pending packets' (added at, captured at); the deadline is the earliest of the
    batch's first add and (live) its packets' captures, plus the timeout."""
    off = -(10**9) if live else None
    b = Batcher(batch_size=batch_size, timeout_ns=timeout, byte_target=10**6)
    now = 10**6
    pending: list[int] = []  # capture times (monotonic) of the pending packets
    started: int | None = None  # when the pending batch got its first packet
    for i, (ages, step, tick) in enumerate(steps):
        now += step
        caps = [now - a for a in ages]
        chunk = make_chunk([(c - (off or 0), bytes([i & 255]), 0) for c in caps])
        sealed = add_live(b, chunk, now=now, offset=off) if live else add(b, chunk, now=now)
        full = 0
        for c in caps:  # the batcher's cuts: full batches of batch_size
            if not pending:
                started = now
            pending.append(c)
            if len(pending) == batch_size:
                pending, started = [], None
                full += 1
        assert [x.count for x in sealed] == [batch_size] * full
        assert b.pending == len(pending)
        if not pending:
            assert b.deadline() is None and not b.due(now + 10 * timeout)
            continue
        first = min([started, *pending]) if live else started
        assert b.deadline() == first + timeout
        assert not b.due(first + timeout - 1) and b.due(first + timeout)
        if tick and b.due(now):
            assert b.seal().count == len(pending)
            pending, started = [], None


# --------------------------------------------------------------------------- adaptive targets


def test_targets_double_when_busy_and_halve_back():
    b = Batcher(batch_size=4, byte_target=1000, max_packets=32, max_bytes=5000)
    ch = make_chunk(packets_of([1]))
    seen = []
    for _ in range(5):
        add(b, ch, now=0)
        b.seal(busy=True)
        seen.append((b.target_packets, b.target_bytes))
    assert seen == [(8, 2000), (16, 4000), (32, 5000), (32, 5000), (32, 5000)]
    seen = []
    for _ in range(5):
        add(b, ch, now=0)
        b.seal(busy=False)
        seen.append((b.target_packets, b.target_bytes))
    assert seen == [(16, 2500), (8, 1250), (4, 1000), (4, 1000), (4, 1000)]


def test_grown_target_makes_bigger_batches():
    b = Batcher(batch_size=4, byte_target=10**6, max_packets=16)
    pk = make_chunk(packets_of([10] * 40))
    out = add(b, pk, now=0, busy=True)
    # 4 (target then 8), 8 (then 16), 16 (stays 16), and 12 left pending.
    assert [x.count for x in out] == [4, 8, 16]
    assert b.pending == 12
    out = add(b, make_chunk(packets_of([10] * 4, seed=1)), now=1, busy=False)
    assert [x.count for x in out] == [16]
    assert b.target_packets == 8


def test_busy_flag_of_add_chunk_applies_to_its_seals_only():
    b = Batcher(batch_size=2, byte_target=10**6, max_packets=64)
    add(b, make_chunk(packets_of([1, 1])), now=0, busy=True)
    assert b.target_packets == 4
    add(b, make_chunk(packets_of([1])), now=1, busy=True)  # seals nothing
    assert b.target_packets == 4


def test_limits_are_normalised():
    with pytest.raises(ValueError):
        Batcher(batch_size=0)
    b = Batcher(batch_size=100, max_packets=10, byte_target=10**9, max_bytes=1000)
    assert b.target_packets == 100 and b.max_packets == 100
    assert b.target_bytes == 1000


# --------------------------------------------------------------------------- interfaces


def test_iface_int_and_array_are_preserved():
    b = Batcher(batch_size=3, byte_target=10**6)
    out = add(b, make_chunk(packets_of([1, 2, 3, 4]), iface=2), now=0)
    out += add(b, make_chunk(packets_of([5, 6]), iface=[0, 7]), now=1)
    out += add(b, make_chunk(packets_of([7, 8, 9]), iface=0), now=2)
    assert b.pending == 0
    assert [batch_ifaces(x) for x in out] == [[2, 2, 2], [2, 0, 7], [0, 0, 0]]
    assert out[2].iface is None  # all on interface 0
    assert isinstance(out[0].iface, array) and out[0].iface.typecode == "H"


def test_iface_none_when_all_zero():
    b = Batcher(batch_size=4, byte_target=10**6)
    out = add(b, make_chunk(packets_of([1, 2]), iface=[0, 0]), now=0)
    out += add(b, make_chunk(packets_of([3, 4]), iface=0), now=1)
    assert len(out) == 1 and out[0].iface is None and out[0].count == 4


# --------------------------------------------------------------------------- events


def event(n: int) -> lc_pb2.Event:
    return lc_pb2.Event(dataset="sip", session_id=f"call-{n}", start_ns=n, end_ns=n + 1)


def test_events_ride_on_the_next_sealed_batch_in_order():
    b = Batcher(batch_size=4, timeout_ns=100, byte_target=10**6)
    add(b, make_chunk(packets_of([10, 10])), now=0)
    b.add_events([event(1), event(2)], now_ns=5)
    b.add_events([], now_ns=6)
    b.add_events([event(3)], now_ns=7)
    assert b.pending == 2 + 3
    out = add(b, make_chunk(packets_of([10, 10, 10], seed=1)), now=8)
    assert [x.count for x in out] == [4]
    assert [e.session_id for e in out[0].events] == ["call-1", "call-2", "call-3"]
    assert out[0].event_bytes == sum(event(i).ByteSize() for i in (1, 2, 3))
    assert b.pending == 1
    # The next batch starts without them.
    assert b.seal().events == []


def test_a_batch_of_events_only_is_sealed_by_the_timeout():
    b = Batcher(batch_size=4, timeout_ns=100)
    assert not b.due(10**12)
    b.add_events([event(1)], now_ns=1_000)
    assert not b.due(1_099)
    # Packets arriving later do not restart the clock the event started.
    add(b, make_chunk(packets_of([10])), now=1_050)
    assert b.due(1_100)
    sb = b.seal()
    assert sb.count == 1 and len(sb) == 1 and [e.session_id for e in sb.events] == ["call-1"]
    b.add_events([event(2)], now_ns=5_000)
    assert not b.due(5_099) and b.due(5_100)
    sb = b.seal()
    assert (sb.count, sb.records, sb.nbytes, sb.iface, sb.meta) == (0, b"", 0, None, [])
    assert [e.session_id for e in sb.events] == ["call-2"]
    assert b.pending == 0 and not b.due(10**12)


def test_many_events_make_a_batch_due_at_once():
    b = Batcher(batch_size=4, timeout_ns=10**12)
    b.add_events([event(i) for i in range(MAX_BATCH_EVENTS - 1)], now_ns=0)
    assert not b.due(1)
    b.add_events([event(10**6)], now_ns=1)
    assert b.due(1)
    assert len(b.seal().events) == MAX_BATCH_EVENTS
    # Their bytes count too: big events reach the byte target before the count.
    small = Batcher(batch_size=4, timeout_ns=10**12, byte_target=1_000)
    big = lc_pb2.Event(dataset="sip", session_id="x" * 600)
    small.add_events([big], now_ns=0)
    assert not small.due(0)
    small.add_events([big], now_ns=0)
    assert small.due(0)


def test_a_modes_extras_ride_on_the_next_batch_by_kind() -> None:
    b = Batcher(batch_size=8, timeout_ns=100)
    stats = lc_pb2.DnsTunnelStats(domain="pirate.sea", stats=b"{}")
    b.add_extras("keylog", [b"CLIENT_RANDOM aa bb"], now_ns=1000)
    b.add_extras("tunnel", [stats], now_ns=1050)
    b.add_extras("keylog", [b"CLIENT_RANDOM cc dd"], now_ns=1060)
    b.add_extras("keylog", [], now_ns=1070)  # nothing: no change
    assert b.pending == 3
    assert not b.due(1099) and b.due(1100)  # the first extra started the clock
    with pytest.raises(ValueError, match="unknown batch extra"):
        b.add_extras("sip", [b"x"])
    sealed = b.seal()
    assert sealed.count == 0 and sealed.events == []
    assert sealed.keylog == [b"CLIENT_RANDOM aa bb", b"CLIENT_RANDOM cc dd"]
    assert sealed.tunnel == [stats]
    assert sealed.event_bytes == 2 * (len(b"CLIENT_RANDOM aa bb") + 4) + stats.ByteSize()
    assert b.pending == 0
