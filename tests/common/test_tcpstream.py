"""Tests for lc.common.tcpstream: bounded TCP stream reassembly.

Segments are cut from a known byte string and fed in every order, with
retransmissions, overlaps, holes and sequence-number wraparound; the reassembled
bytes must be the original. The real-capture test reassembles SIP over TCP from
the public corpus and finds every SIP start line tshark lists, in order.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Hashable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.decode import (
    IPPROTO_TCP,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    decode_packet,
)
from lc.common.errors import ValidationError
from lc.common.pcapfile import open_capture
from lc.common.tcpstream import Delivery, TcpReassembler

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
IN_CI = os.environ.get("CI", "").lower() == "true"
SECOND = 1_000_000_000
KEY = ("10.0.0.1", 5060, "10.0.0.2", 40000)
OTHER = ("10.0.0.2", 40000, "10.0.0.1", 5060)
DATA = bytes(range(256)) * 4


def _require(ok: bool, reason: str) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def joined(d: Delivery) -> bytes:
    return b"".join(chunk for _, chunk in d.chunks)


def segments(data: bytes, cuts: list[int], isn: int) -> list[tuple[int, bytes]]:
    """(seq, payload) pieces of ``data`` cut at the offsets ``cuts``; data starts at isn+1."""
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [((isn + 1 + a) % 2**32, data[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


class Collector:
    """Collects deliveries per key, checking that chunk offsets never go backwards
    within a stream and jump only at a flagged gap."""

    def __init__(self) -> None:
        self.data: dict[Hashable, bytearray] = {}
        self.pos: dict[Hashable, int] = {}
        self.delivered = 0
        self.closed: list[Hashable] = []

    def add(self, key: Hashable, d: Delivery) -> None:
        pos = self.pos.get(key, 0)
        buf = self.data.setdefault(key, bytearray())
        for off, chunk in d.chunks:
            assert chunk, "empty chunk"
            if off != pos:
                assert d.gap and off > pos, (key, off, pos, d)
            buf += chunk
            pos = off + len(chunk)
            self.delivered += len(chunk)
        self.pos[key] = pos
        if d.closed:
            self.pos[key] = 0
            self.closed.append(key)

    def flush(self, key: Hashable, d: Delivery) -> None:
        assert d.start == d.end
        self.add(key, d)


# --- in order, out of order ----------------------------------------------------------------


def test_in_order_stream_with_syn_and_fin() -> None:
    r = TcpReassembler()
    isn = 1000
    d = r.feed(0, KEY, isn, TCP_SYN, b"")
    assert (d.start, d.end, d.chunks, d.gap, d.closed) == (0, 0, [], False, False)
    assert r.stream_count == 1
    d = r.feed(1, KEY, isn + 1, TCP_ACK, b"")  # pure ACK of the handshake
    assert (d.start, d.end, d.chunks) == (0, 0, [])
    d = r.feed(2, KEY, isn + 1, TCP_ACK | TCP_PSH, b"INVITE ")
    assert (d.start, d.end, d.chunks) == (0, 7, [(0, b"INVITE ")])
    d = r.feed(3, KEY, isn + 8, TCP_ACK, memoryview(b"sip:bob"))
    assert d.chunks == [(7, b"sip:bob")] and isinstance(d.chunks[0][1], bytes)
    d = r.feed(4, KEY, isn + 15, TCP_ACK | TCP_FIN, b" SIP/2.0\r\n")
    assert d.chunks == [(14, b" SIP/2.0\r\n")] and d.closed and not d.gap
    assert r.stream_count == 0
    c = r.counters
    assert c["segments"] == 5 and c["bytes_delivered"] == 24
    assert c["streams_opened"] == 1 and c["streams_closed"] == 1
    assert c["out_of_order"] == c["gaps"] == c["retransmitted_bytes"] == 0


def test_pure_fin_closes_and_later_segments_are_ignored() -> None:
    r = TcpReassembler()
    r.feed(0, KEY, 0, TCP_SYN, b"")
    r.feed(1, KEY, 1, TCP_ACK, b"abc")
    d = r.feed(2, KEY, 4, TCP_ACK | TCP_FIN, b"")
    assert d.closed and d.chunks == [] and d.start == d.end == 3
    # A retransmitted FIN, a late retransmission and a stray ACK: no new stream.
    for flags, seq, payload in ((TCP_FIN, 4, b""), (TCP_ACK, 1, b"abc"), (TCP_ACK, 5, b"")):
        d = r.feed(3, KEY, seq, flags, payload)
        assert d.chunks == [] and not d.closed
    assert r.stream_count == 0
    assert r.counters["retransmitted_bytes"] == 3
    # A new SYN on the same key is a new stream.
    r.feed(4, KEY, 9000, TCP_SYN, b"")
    d = r.feed(5, KEY, 9001, TCP_ACK, b"new")
    assert d.chunks == [(0, b"new")]
    assert r.counters["streams_opened"] == 2


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_every_order_of_four_segments(order: tuple[int, ...]) -> None:
    r = TcpReassembler()
    data = b"REGISTER sip:example.com SIP/2.0\r\nCSeq: 1 REGISTER\r\n\r\n"
    segs = segments(data, [9, 25, 40], isn=77)
    r.feed(0, KEY, 77, TCP_SYN, b"")
    col = Collector()
    for i in order:
        seq, payload = segs[i]
        d = r.feed(1, KEY, seq, TCP_ACK, payload)
        assert d.end - d.start == len(payload)
        assert not d.gap
        col.add(KEY, d)
    assert bytes(col.data[KEY]) == data
    assert r.buffered_bytes == 0
    expected_ooo = sum(1 for k, i in enumerate(order) if any(j < i for j in order[k + 1 :]))
    assert r.counters["out_of_order"] == expected_ooo
    assert r.counters["bytes_delivered"] == len(data)


def test_out_of_order_delivery_carries_held_data() -> None:
    r = TcpReassembler()
    r.feed(0, KEY, 0, TCP_SYN, b"")
    d = r.feed(1, KEY, 5, TCP_ACK, b"world")
    assert (d.start, d.end, d.chunks) == (4, 9, [])
    assert r.buffered_bytes == 5 and r.stream_buffered_bytes(KEY) == 5
    d = r.feed(2, KEY, 1, TCP_ACK, b"hell")
    assert (d.start, d.end) == (0, 4)
    assert d.chunks == [(0, b"hell"), (4, b"world")]
    assert r.buffered_bytes == 0


# --- retransmissions and overlaps ---------------------------------------------------------------


def test_retransmission_and_overlap_are_trimmed() -> None:
    r = TcpReassembler()
    r.feed(0, KEY, 0, TCP_SYN, b"")
    r.feed(1, KEY, 1, TCP_ACK, b"abcdef")
    d = r.feed(2, KEY, 1, TCP_ACK, b"abcdef")  # exact retransmission
    assert (d.start, d.end, d.chunks) == (0, 6, [])
    d = r.feed(3, KEY, 4, TCP_ACK, b"defghi")  # overlaps 3 delivered bytes
    assert d.chunks == [(6, b"ghi")]
    assert r.counters["retransmitted_bytes"] == 9
    assert r.counters["bytes_delivered"] == 9


def test_first_copy_wins_over_held_data() -> None:
    r = TcpReassembler()
    r.feed(0, KEY, 0, TCP_SYN, b"")
    r.feed(1, KEY, 5, TCP_ACK, b"EFGH")  # offsets 4..8 held
    r.feed(2, KEY, 7, TCP_ACK, b"xyZZ")  # 6..10: 6,7 already held; 8,9 new
    assert r.buffered_bytes == 6
    d = r.feed(3, KEY, 1, TCP_ACK, b"abcdXX")  # 0..6: 4,5 already held
    assert joined(d) == b"abcdEFGHZZ"
    assert r.counters["retransmitted_bytes"] == 2 + 2
    assert r.buffered_bytes == 0


def test_segment_spanning_several_held_pieces() -> None:
    r = TcpReassembler()
    r.feed(0, KEY, 0, TCP_SYN, b"")
    data = b"0123456789abcdefghij"
    for off, n in ((3, 2), (8, 3), (14, 1)):
        r.feed(1, KEY, 1 + off, TCP_ACK, data[off : off + n])
    d = r.feed(2, KEY, 1 + 1, TCP_ACK, b"?" * 18)  # offsets 1..19, holes filled with '?'
    assert d.chunks == []
    d = r.feed(3, KEY, 1, TCP_ACK, b"0")
    assert joined(d) == b"0??34???89a???e?????"[: len(joined(d))]
    assert joined(d) == b"0" + b"??" + b"34" + b"???" + b"89a" + b"???" + b"e" + b"????"


# --- wraparound ---------------------------------------------------------------------------------


@pytest.mark.parametrize("isn", [2**32 - 1, 2**32 - 2, 2**32 - 500, 2**32 - 1000, 2**31 - 500])
def test_sequence_wraparound_in_the_middle(isn: int) -> None:
    r = TcpReassembler()
    segs = segments(DATA, [100, 300, 499, 500, 501, 700, 900], isn)
    # The wrap (or, for the last case, the sign bit flip) falls inside the data.
    assert any(seq < 1000 for seq, _ in segs) or any(seq > 2**31 for seq, _ in segs)
    r.feed(0, KEY, isn, TCP_SYN, b"")
    col = Collector()
    order = list(range(len(segs)))
    random.Random(isn).shuffle(order)
    for i in order:
        col.add(KEY, r.feed(1, KEY, *segs[i][:1], TCP_ACK, segs[i][1]))
    d = r.feed(2, KEY, (isn + 1 + len(DATA)) % 2**32, TCP_FIN | TCP_ACK, b"")
    assert d.closed and d.start == len(DATA)
    assert bytes(col.data[KEY]) == DATA


def test_stream_longer_than_the_sequence_space() -> None:
    r = TcpReassembler()
    r.feed(0, KEY, 5, TCP_SYN, b"")
    chunk = b"x" * 65536
    seq = 6
    for i in range(2**32 // len(chunk) + 3):
        d = r.feed(i, KEY, seq, TCP_ACK, chunk)
        assert d.start == i * len(chunk)
        seq = (seq + len(chunk)) % 2**32
    assert d.end > 2**32


def test_odd_sequence_numbers_are_taken_modulo_2_32() -> None:
    r = TcpReassembler()
    r.feed(0, KEY, -1, TCP_SYN, b"")  # ISN 2**32 - 1
    d = r.feed(1, KEY, 2**32, TCP_ACK, b"ab")
    assert d.chunks == [(0, b"ab")]
    d = r.feed(2, KEY, 2 + 5 * 2**32, TCP_ACK, b"cd")
    assert d.chunks == [(2, b"cd")]


# --- holes --------------------------------------------------------------------------------------


def test_gap_skipped_when_held_bytes_exceed_the_stream_limit() -> None:
    r = TcpReassembler(max_buffered_bytes_per_stream=100, max_total_bytes=1000)
    r.feed(0, KEY, 0, TCP_SYN, b"")
    r.feed(1, KEY, 1, TCP_ACK, b"a" * 10)
    # 10..20 is lost; held data grows behind the hole.
    for i in range(3):
        d = r.feed(2, KEY, 21 + 30 * i, TCP_ACK, bytes([65 + i]) * 30)
        assert d.chunks == [] and not d.gap
    assert r.buffered_bytes == 90
    d = r.feed(3, KEY, 111, TCP_ACK, b"D" * 30)  # 120 bytes held > 100
    assert d.gap and not d.closed
    assert d.chunks == [(20, b"A" * 30), (50, b"B" * 30), (80, b"C" * 30), (110, b"D" * 30)]
    assert r.counters["gaps"] == 1 and r.counters["gap_bytes"] == 10
    assert r.buffered_bytes == 0
    # The lost segment shows up late: it is behind the stream now.
    d = r.feed(4, KEY, 11, TCP_ACK, b"b" * 10)
    assert d.chunks == [] and r.counters["retransmitted_bytes"] == 10
    d = r.feed(5, KEY, 141, TCP_ACK, b"E")
    assert d.chunks == [(140, b"E")] and not d.gap


def test_gap_skipped_when_too_many_segments_are_held() -> None:
    r = TcpReassembler(max_segments_per_stream=3)
    r.feed(0, KEY, 0, TCP_SYN, b"")
    for i in range(3):
        assert r.feed(1, KEY, 1 + 10 + 2 * i, TCP_ACK, b"x").chunks == []
    d = r.feed(2, KEY, 1 + 20, TCP_ACK, b"y")  # a fourth piece
    # Only as many holes are skipped as the cap needs: the first one, to offset 10.
    assert d.gap and d.chunks == [(10, b"x")]
    assert r.stream_buffered_bytes(KEY) == 3
    assert r.counters["gaps"] == 1 and r.counters["gap_bytes"] == 10


def test_gap_timeout_checked_by_feed() -> None:
    r = TcpReassembler(gap_timeout_ns=2 * SECOND)
    r.feed(0, KEY, 0, TCP_SYN, b"")
    r.feed(0, KEY, 11, TCP_ACK, b"later")  # offset 10; 0..10 missing
    d = r.feed(1 * SECOND, KEY, 16, TCP_ACK, b"more")
    assert d.chunks == [] and not d.gap
    d = r.feed(3 * SECOND, KEY, 20, TCP_ACK, b"!")
    assert d.gap and d.chunks == [(10, b"later"), (15, b"more"), (19, b"!")]
    assert r.counters["gap_bytes"] == 10


def test_gap_skipped_on_expire_with_a_hook() -> None:
    col = Collector()
    r = TcpReassembler(gap_timeout_ns=2 * SECOND, idle_timeout_ns=60 * SECOND, on_flush=col.flush)
    r.feed(0, KEY, 0, TCP_SYN, b"")
    col.add(KEY, r.feed(0, KEY, 1, TCP_ACK, b"head"))
    col.add(KEY, r.feed(SECOND, KEY, 11, TCP_ACK, b"tail"))  # offset 10: 4..10 missing
    assert r.expire(2 * SECOND) == 0 and col.pos[KEY] == 4  # not yet
    assert r.expire(4 * SECOND) == 0  # the stream is not idle, but the hole timed out
    assert bytes(col.data[KEY]) == b"headtail" and col.pos[KEY] == 14
    assert r.stream_count == 1 and r.buffered_bytes == 0
    assert r.counters["gaps"] == 1 and r.counters["gap_bytes"] == 6
    col.add(KEY, r.feed(5 * SECOND, KEY, 15, TCP_ACK, b"+"))
    assert bytes(col.data[KEY]) == b"headtail+"


def test_idle_expiry_hands_over_held_data() -> None:
    col = Collector()
    r = TcpReassembler(idle_timeout_ns=10 * SECOND, on_flush=col.flush)
    r.feed(0, KEY, 0, TCP_SYN, b"")
    r.feed(0, KEY, 6, TCP_ACK, b"orphan")  # offset 5, never completed
    r.feed(0, OTHER, 50, TCP_ACK, b"alive")
    r.feed(9 * SECOND, OTHER, 55, TCP_ACK, b"!")
    assert r.expire(10 * SECOND) == 0
    assert r.expire(11 * SECOND) == 1
    assert col.closed == [KEY] and bytes(col.data[KEY]) == b"orphan"
    assert r.stream_count == 1 and KEY not in r and OTHER in r
    assert r.counters["streams_expired"] == 1 and r.counters["dropped_bytes"] == 0
    assert r.expire(20 * SECOND) == 1
    assert r.stream_count == 0


def test_idle_expiry_without_a_hook_counts_dropped_bytes() -> None:
    r = TcpReassembler(idle_timeout_ns=SECOND)
    r.feed(0, KEY, 0, TCP_SYN, b"")
    r.feed(0, KEY, 6, TCP_ACK, b"orphan")
    assert r.expire(2 * SECOND) == 1
    assert r.counters["dropped_bytes"] == 6 and r.buffered_bytes == 0


def test_pending_fin_behind_a_hole_times_out() -> None:
    col = Collector()
    r = TcpReassembler(gap_timeout_ns=SECOND, on_flush=col.flush)
    r.feed(0, KEY, 0, TCP_SYN, b"")
    col.add(KEY, r.feed(0, KEY, 1, TCP_ACK, b"ab"))
    d = r.feed(0, KEY, 10, TCP_FIN | TCP_ACK, b"")  # FIN at 9; 2..9 never seen
    assert not d.closed
    r.expire(2 * SECOND)
    assert col.closed == [KEY] and r.stream_count == 0
    assert r.counters["streams_closed"] == 1 and r.counters["gap_bytes"] == 7


# --- FIN, RST, close --------------------------------------------------------------------------


def test_fin_waits_for_missing_data() -> None:
    r = TcpReassembler()
    r.feed(0, KEY, 0, TCP_SYN, b"")
    d = r.feed(1, KEY, 4, TCP_FIN | TCP_ACK, b"def")  # offsets 3..6, FIN at 6
    assert not d.closed and d.chunks == []
    d = r.feed(2, KEY, 1, TCP_ACK, b"abc")
    assert d.closed and joined(d) == b"abcdef"
    assert r.stream_count == 0


def test_pure_fin_before_the_last_data() -> None:
    r = TcpReassembler()
    r.feed(0, KEY, 0, TCP_SYN, b"")
    assert not r.feed(1, KEY, 4, TCP_FIN | TCP_ACK, b"").closed
    d = r.feed(2, KEY, 1, TCP_ACK, b"abc")  # in order, but the FIN is pending
    assert d.closed and d.chunks == [(0, b"abc")]


def test_rst_closes_at_once_and_hands_over_held_data() -> None:
    r = TcpReassembler()
    r.feed(0, KEY, 0, TCP_SYN, b"")
    r.feed(1, KEY, 1, TCP_ACK, b"abc")
    r.feed(2, KEY, 8, TCP_ACK, b"held")
    d = r.feed(3, KEY, 12, TCP_RST, b"diagnostic text")
    assert d.closed and d.gap and d.chunks == [(7, b"held")]
    assert d.start == d.end == 11
    assert r.stream_count == 0 and r.buffered_bytes == 0
    assert r.counters["streams_closed"] == 1
    assert r.feed(4, KEY, 15, TCP_ACK, b"late").chunks == []  # no phantom pickup
    assert r.stream_count == 0


def test_rst_for_an_unknown_key_is_ignored() -> None:
    r = TcpReassembler()
    d = r.feed(0, KEY, 123, TCP_RST | TCP_ACK, b"")
    assert (d.chunks, d.closed) == ([], False) and r.stream_count == 0


def test_close_returns_held_data() -> None:
    r = TcpReassembler()
    assert r.close(KEY) is None
    r.feed(0, KEY, 0, TCP_SYN, b"")
    r.feed(1, KEY, 1, TCP_ACK, b"ab")
    r.feed(2, KEY, 5, TCP_ACK, b"ef")
    d = r.close(KEY)
    assert d is not None and d.closed and d.gap and d.chunks == [(4, b"ef")]
    assert r.stream_count == 0 and r.buffered_bytes == 0
    # close() does not make the key sticky: data may start a pickup stream again.
    assert r.feed(3, KEY, 100, TCP_ACK, b"x").chunks == [(0, b"x")]


def test_new_isn_on_a_live_key_restarts_the_stream() -> None:
    col = Collector()
    r = TcpReassembler(on_flush=col.flush)
    r.feed(0, KEY, 100, TCP_SYN, b"")
    r.feed(1, KEY, 101, TCP_ACK, b"old")
    r.feed(1, KEY, 100, TCP_SYN, b"")  # a retransmitted SYN changes nothing
    assert col.closed == []
    d = r.feed(2, KEY, 5000, TCP_SYN, b"")
    assert col.closed == [KEY] and r.counters["streams_closed"] == 1
    assert (d.start, d.end, d.chunks, d.closed) == (0, 0, [], False)
    assert r.feed(3, KEY, 5001, TCP_ACK, b"new").chunks == [(0, b"new")]


def test_syn_carrying_data() -> None:
    r = TcpReassembler()
    d = r.feed(0, KEY, 41, TCP_SYN, b"fast open")
    assert d.chunks == [(0, b"fast open")]
    assert r.feed(1, KEY, 51, TCP_ACK, b"!").chunks == [(9, b"!")]


# --- pickup -------------------------------------------------------------------------------------


def test_mid_stream_pickup() -> None:
    r = TcpReassembler()
    assert r.feed(0, KEY, 5555, TCP_ACK, b"").chunks == []  # a pure ACK anchors nothing
    assert r.stream_count == 0
    d = r.feed(1, KEY, 7000, TCP_ACK, b"SIP/2.0 200 OK\r\n")
    assert d.chunks == [(0, b"SIP/2.0 200 OK\r\n")] and (d.start, d.end) == (0, 16)
    d = r.feed(2, KEY, 6990, TCP_ACK, b"0123456789")  # older than the pickup point
    assert d.chunks == [] and (d.start, d.end) == (-10, 0)
    assert r.counters["retransmitted_bytes"] == 10
    d = r.feed(3, KEY, 6995, TCP_ACK, b"56789" + b"SIP/2.0 200 OK\r\n" + b"tail")
    assert d.chunks == [(16, b"tail")]


# --- bounds -------------------------------------------------------------------------------------


def test_lru_eviction() -> None:
    col = Collector()
    r = TcpReassembler(max_streams=2, on_flush=col.flush)
    r.feed(0, "a", 0, TCP_SYN, b"")
    r.feed(1, "b", 0, TCP_SYN, b"")
    r.feed(2, "a", 1, TCP_ACK, b"x")  # "a" is now the most recently used
    r.feed(3, "c", 0, TCP_SYN, b"")
    assert "b" not in r and "a" in r and "c" in r
    assert col.closed == ["b"]
    assert r.counters["streams_evicted"] == 1 and r.stream_count == 2


def test_total_bytes_limit_evicts_the_oldest_holder() -> None:
    col = Collector()
    r = TcpReassembler(max_buffered_bytes_per_stream=100, max_total_bytes=150, on_flush=col.flush)
    for key in ("a", "b", "c"):
        r.feed(0, key, 0, TCP_SYN, b"")
    r.feed(1, "a", 11, TCP_ACK, b"A" * 60)
    r.feed(2, "b", 11, TCP_ACK, b"B" * 60)
    assert r.buffered_bytes == 120
    d = r.feed(3, "c", 11, TCP_ACK, b"C" * 60)
    assert d.chunks == []
    assert r.buffered_bytes == 120 and "a" not in r and "b" in r and "c" in r
    assert col.closed == ["a"] and bytes(col.data["a"]) == b"A" * 60
    assert r.counters["streams_evicted"] == 1


def test_constructor_validation() -> None:
    for kwargs in (
        {"max_streams": 0},
        {"max_buffered_bytes_per_stream": -1},
        {"max_total_bytes": 10, "max_buffered_bytes_per_stream": 11},
        {"idle_timeout_ns": 0},
        {"max_segments_per_stream": 1.5},
        {"gap_timeout_ns": True},
        {"on_flush": 3},
    ):
        with pytest.raises(ValidationError):
            TcpReassembler(**kwargs)  # type: ignore[arg-type]


def test_clear() -> None:
    r = TcpReassembler()
    r.feed(0, KEY, 0, TCP_SYN, b"")
    r.feed(0, KEY, 5, TCP_ACK, b"x")
    r.clear()
    assert r.stream_count == 0 and r.buffered_bytes == 0


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(min_size=1, max_size=3000),
    isn=st.integers(0, 2**32 - 1) | st.sampled_from([2**32 - 1, 2**32 - 100, 0, 2**31]),
    cuts=st.lists(st.integers(1, 2999), max_size=40),
    dup_picks=st.lists(st.integers(0, 10**6), max_size=20),
    overlaps=st.lists(st.tuples(st.integers(0, 2999), st.integers(1, 300)), max_size=10),
    seed=st.integers(0, 2**32),
    fin=st.booleans(),
)
def test_shuffled_duplicated_segments_reassemble_exactly(
    data: bytes,
    isn: int,
    cuts: list[int],
    dup_picks: list[int],
    overlaps: list[tuple[int, int]],
    seed: int,
    fin: bool,
) -> None:
    segs = segments(data, [c for c in cuts if c < len(data)], isn)
    # Duplicates of whole segments and arbitrary overlapping slices of the original.
    extra = [segs[p % len(segs)] for p in dup_picks]
    for off, n in overlaps:
        off %= len(data)
        extra.append(((isn + 1 + off) % 2**32, data[off : off + n]))
    feed = [(seq, payload, TCP_ACK) for seq, payload in segs + extra]
    random.Random(seed).shuffle(feed)
    if fin:
        feed.append(((isn + 1 + len(data)) % 2**32, b"", TCP_ACK | TCP_FIN))
    r = TcpReassembler()
    col = Collector()
    r.feed(0, KEY, isn, TCP_SYN, b"")
    for i, (seq, payload, flags) in enumerate(feed):
        d = r.feed(i, KEY, seq, flags, payload)
        assert not d.gap
        col.add(KEY, d)
        assert d.closed == (fin and i == len(feed) - 1)
    assert bytes(col.data[KEY]) == data
    assert r.counters["bytes_delivered"] == len(data)
    assert r.counters["gaps"] == 0
    assert r.buffered_bytes == 0
    assert r.stream_count == (0 if fin else 1)


LIMITS = {
    "max_streams": 3,
    "max_buffered_bytes_per_stream": 64,
    "max_total_bytes": 100,
    "max_segments_per_stream": 4,
    "idle_timeout_ns": 50,
    "gap_timeout_ns": 20,
}

_flag_bits = st.integers(0, 0xFFF) | st.sampled_from(
    [TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN | TCP_FIN | TCP_RST, -1]
)
_op = st.tuples(
    st.sampled_from(["feed"] * 8 + ["expire", "close"]),
    st.integers(-5, 200),  # time step (may go backwards)
    st.integers(0, 4),  # key
    st.integers(-(2**40), 2**40) | st.integers(0, 300) | st.sampled_from([2**32 - 3, 2**32]),
    _flag_bits,
    st.binary(max_size=40),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, max_size=80), hook=st.booleans())
def test_arbitrary_input_never_raises_and_stays_bounded(ops, hook: bool) -> None:
    col = Collector()
    r = TcpReassembler(**LIMITS, on_flush=col.flush if hook else None)
    now = 0
    for kind, step, key, seq, flags, payload in ops:
        now += step
        if kind == "feed":
            d = r.feed(now, key, seq, flags, payload)
            assert d.start <= d.end
            if hook:
                col.add(key, d)
        elif kind == "expire":
            assert r.expire(now) >= 0
        else:
            d = r.close(key)
            if hook and d is not None:
                col.add(key, d)
        assert r.buffered_bytes <= LIMITS["max_total_bytes"]
        assert r.stream_count <= LIMITS["max_streams"]
        for k in range(5):
            assert r.stream_buffered_bytes(k) <= LIMITS["max_buffered_bytes_per_stream"]
        assert sum(r.stream_buffered_bytes(k) for k in range(5)) == r.buffered_bytes
        assert all(v >= 0 for v in r.counters.values())
    if hook:
        assert col.delivered == r.counters["bytes_delivered"]


# --- a real capture ------------------------------------------------------------------------------


def _sip_start_lines(oracle: Path) -> dict[tuple[str, int, str, int], list[bytes]]:
    lines = oracle.read_text().splitlines()
    assert lines[0].startswith("# oracle=sip ")
    header = lines[1].split("\t")
    out: dict[tuple[str, int, str, int], list[bytes]] = {}
    for line in lines[2:]:
        row = dict(zip(header, line.split("\t"), strict=True))
        key = (row["ip.src"], int(row["tcp.srcport"]), row["ip.dst"], int(row["tcp.dstport"]))
        if row["sip.Method"]:
            start = f"{row['sip.Method']} {row['sip.r-uri']} SIP/2.0\r\n"
        else:
            start = f"SIP/2.0 {row['sip.Status-Code']} "
        out.setdefault(key, []).append(start.encode())
    return out


@pytest.mark.parametrize("order", ["capture", "reversed", "split-and-shuffled"])
def test_sip_over_tcp_capture(order: str) -> None:
    """Both directions of a real SIP/TCP call carry every start line tshark lists, in
    order: as captured, with each direction's data segments reversed, and cut into
    100-byte pieces fed in a random order (the SYNs first)."""
    _require(CORPUS.is_dir(), f"capture corpus not found at {CORPUS}")
    capture = CORPUS / "sip/heplify_sip_ipv4_tcp.pcap"
    expected = _sip_start_lines(Path(f"{capture}.expected.tsv"))
    assert sum(map(len, expected.values())) == 7 and len(expected) == 2

    segs: list[tuple[int, Hashable, int, int, bytes]] = []
    with open_capture(capture) as reader:
        for ts, iface, frame, _orig in reader.records():
            d = decode_packet(reader.interfaces[iface].linktype, frame)
            if d.proto == IPPROTO_TCP:
                key = (d.src_text, d.sport, d.dst_text, d.dport)
                payload = frame[d.payload_offset : d.payload_offset + d.payload_len]
                segs.append((ts, key, d.tcp_seq, d.tcp_flags, payload))
    assert len(segs) > 10 and sum(1 for s in segs if s[3] & TCP_SYN) == 2
    if order != "capture":
        syns = [s for s in segs if s[3] & TCP_SYN]
        rest = [s for s in segs if not s[3] & TCP_SYN]
        if order == "reversed":
            rest.reverse()
        else:
            pieces = []
            for ts, key, seq, flags, payload in rest:
                for off in range(0, max(len(payload), 1), 100):
                    pieces.append((ts, key, (seq + off) % 2**32, flags, payload[off : off + 100]))
            random.Random(5060).shuffle(pieces)
            rest = pieces
        segs = syns + rest

    r = TcpReassembler()
    col = Collector()
    for ts, key, seq, flags, payload in segs:
        delivery = r.feed(ts, key, seq, flags, memoryview(payload))
        assert not delivery.gap and not delivery.closed
        col.add(key, delivery)
    for key, starts in expected.items():
        stream = bytes(col.data[key])
        pos = 0
        for start in starts:
            found = stream.find(start, pos)
            assert found >= 0, f"{start!r} not found in {key} after offset {pos}"
            pos = found + len(start)
    c = r.counters
    assert c["gaps"] == 0 and r.buffered_bytes == 0
    assert c["bytes_delivered"] == sum(len(b) for b in col.data.values()) == 4035
    assert (c["out_of_order"] > 0) is (order != "capture")


class _SlowOnly(TcpReassembler):
    """The reassembler with every segment through the general path (the oracle of the
    in-order fast paths of ``feed``)."""

    def feed(self, ts_ns, key, seq, flags, payload):  # type: ignore[no-untyped-def]
        return self._feed_slow(ts_ns, key, self._streams.get(key), seq & 0xFFFFFFFF, flags,
                               bytes(payload))  # fmt: skip


def _state(r: TcpReassembler) -> tuple:
    # held_since is read only while data waits (it is set again before anything waits).
    streams = [
        (k, s.next_seq, s.next_off, s.last_ts, s.held, s.held_bytes,
         s.held_since if s.waiting() else None, s.fin_off, s.fin_ts)
        for k, s in r._streams.items()
    ]  # fmt: skip
    return streams, list(r._waiting), list(r._closed.items()), r.counters, r.buffered_bytes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["feed"] * 8 + ["expire", "close"]),
            st.integers(0, 30),
            st.integers(0, 2),
            st.integers(0, 60),  # small sequence numbers: in order, pure ACKs and holes
            st.sampled_from([TCP_ACK, TCP_ACK, TCP_ACK, TCP_SYN, TCP_FIN | TCP_ACK, TCP_RST]),
            st.sampled_from([b"", b"", b"", b"abc", b"0123456789"]),
        ),
        max_size=60,
    ),
    hook=st.booleans(),
)
def test_fast_paths_do_what_the_general_path_does(ops, hook: bool) -> None:
    """In-order data and pure ACKs take shortcuts in ``feed``: same deliveries, same
    state (held_since, the waiting set, LRU order, counters) as the general path."""
    fast_col, slow_col = Collector(), Collector()
    fast = TcpReassembler(**LIMITS, on_flush=fast_col.flush if hook else None)
    slow = _SlowOnly(**LIMITS, on_flush=slow_col.flush if hook else None)
    now = 0
    for kind, step, key, seq, flags, payload in ops:
        now += step
        if kind == "feed":
            assert fast.feed(now, key, seq, flags, payload) == slow.feed(
                now, key, seq, flags, payload
            )
        elif kind == "expire":
            assert fast.expire(now) == slow.expire(now)
        else:
            assert fast.close(key) == slow.close(key)
        assert _state(fast) == _state(slow)
    assert (fast_col.data, fast_col.closed) == (slow_col.data, slow_col.closed)
