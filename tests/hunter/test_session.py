"""The session layer (lc.hunter.session): holding, deciding, bounds, expiry, shared frames."""

from __future__ import annotations

import struct

from lc.common.flow import Frame
from lc.hunter.session import (
    MATCHED,
    REJECTED,
    UNDECIDED,
    Out,
    Session,
    SessionLimits,
    SessionTable,
)
from lc.proto import lc_pb2

MSG, MEDIA = 1, 0


def pkt(ts: int, body: bytes = b"x" * 40, iface: int = 0) -> tuple:
    rec = struct.pack("<IIII", ts // 10**9, ts % 10**9, len(body), len(body)) + body
    return (ts, len(body), len(body), rec, iface)


def meta(s: Session, tag: int, summary: object) -> lc_pb2.PacketMeta:
    return lc_pb2.PacketMeta(
        protocol=("media", "msg")[tag], session_id=s.name, filter_ids=s.ids, index=summary or 0
    )


def table(**limits) -> tuple[SessionTable, list[Session]]:
    gone: list[Session] = []
    t = SessionTable(SessionLimits(**limits), 2, MSG, meta, gone.append)
    return t, gone


def times(out: Out) -> list[int]:
    return list(out.ts)


def test_held_packets_go_out_in_capture_order_when_the_session_matches():
    t, _ = table()
    s = t.open("c1", 1, None)
    out = Out()
    t.message_frames(s, [pkt(1)], 7, None, out)
    t.hold(s, pkt(2), MEDIA)
    t.hold(s, pkt(3), MEDIA)
    assert len(out) == 0 and t.held_bytes > 0
    t.decide(s, ["f"], out)
    t.message_frames(s, [pkt(4)], 8, meta(s, MSG, 8), out)
    assert times(out) == [1, 2, 3, 4]
    assert [out.meta[i].protocol for i in range(4)] == ["msg", "media", "media", "msg"]
    assert out.meta[0].index == 7 and out.meta[3].index == 8  # the message's own summary
    assert out.meta[1] is out.meta[2]  # one metadata object per (session, tag)
    assert list(out.meta[1].filter_ids) == ["f"] and s.state == MATCHED
    assert t.held_bytes == 0 and s.pk == [0, 2]  # media is counted by the mode's loop


def test_rejected_sessions_drop_their_buffer_and_count_it():
    t, gone = table()
    s = t.open("c1", 1, None)
    t.hold(s, pkt(2), MEDIA)
    t.reject(s)
    out = Out()
    t.message_frames(s, [pkt(3)], None, None, out)
    assert s.state == REJECTED and len(out) == 0 and t.unmatched_packets == 2
    t.forget(s)
    assert gone == [s] and t.counters["unmatched"] == 1


def test_bounds_packets_per_session_bytes_overall_and_sessions():
    t, gone = table(max_sessions=2, max_held_packets=2, max_held_bytes=10_000)
    a = t.open("a", 1, None)
    for k in range(5):
        t.hold(a, pkt(k), MEDIA)
    assert a.buf_n == 2 and t.buffer_full == 3
    for k in range(7):
        t.hold(a, pkt(k), MSG)  # message packets may take four times as many
    assert a.buf_n == 8 and t.buffer_full == 4
    b = t.open("b", 2, None)
    big = pkt(3, b"y" * 9600)
    t.hold(b, big, MEDIA)
    assert b.buf_n == 0 and t.buffer_full == 5  # the byte budget is over all sessions
    t.decide(b, [], Out())
    t.touch(a)  # a is the most recently active now
    t.open("c", 3, None)  # full: the least recently active one not matched goes
    assert gone == [a] and t.counters["evicted"] == 1
    assert set(t.sessions) == {"b", "c"}


def test_expiry_forgets_ended_and_idle_sessions_and_rejects_undecided_ones():
    t, gone = table(grace_ns=5, idle_timeout_ns=100, decide_timeout_ns=50)
    ended = t.open("ended", 0, None)
    ended.end_ns = 10
    waiting = t.open("waiting", 0, None)
    waiting.last_ns = 60
    idle = t.open("idle", 0, None)
    t.decide(idle, [], Out())
    t.expire(16)
    assert gone == [ended]
    t.expire(70)
    assert waiting.state == REJECTED and waiting in t.sessions.values()
    t.expire(101)
    assert gone == [ended, idle]
    assert t.counters["ended"] == 1 and t.counters["idle"] == 1
    t.finish()
    assert gone == [ended, idle, waiting] and not t.sessions


def test_aliases_follow_the_newest_session_and_leave_with_it():
    t, _ = table()
    a = t.open("a", 0, None)
    b = t.open("b", 0, None)
    t.alias(a, 1234, MEDIA)
    t.alias(b, 1234, MEDIA)  # the newest claim wins the key
    assert t.aliases[1234] == (b, MEDIA)
    t.forget(a)
    assert 1234 in t.aliases  # a does not take b's key with it
    t.forget(b)
    assert 1234 not in t.aliases


def test_a_frame_shared_by_two_sessions_is_forwarded_once():
    # Matched first, then claimed by another matched session: once, with the first's meta.
    t, _ = table()
    a, b = t.open("a", 0, None), t.open("b", 0, None)
    out = Out()
    t.decide(a, ["fa"], out)
    t.decide(b, ["fb"], out)
    shared = Frame(0, 10, pkt(5))
    t.message_frames(a, [pkt(4), shared], None, meta(a, MSG, None), out)
    t.message_frames(b, [shared, pkt(6)], None, meta(b, MSG, None), out)
    assert times(out) == [4, 5, 6]
    assert [out.meta[i].session_id for i in range(3)] == ["a", "a", "b"]

    # Held by an undecided session, forwarded by another that matched: not again on flush.
    t, _ = table()
    a, b = t.open("a", 0, None), t.open("b", 0, None)
    out = Out()
    shared = Frame(0, 10, pkt(5))
    t.message_frames(a, [pkt(4), shared], None, None, out)
    t.decide(b, ["fb"], out)
    t.message_frames(b, [shared, pkt(6)], None, meta(b, MSG, None), out)
    t.decide(a, ["fa"], out)
    assert times(out) == [5, 6, 4]
    assert [out.meta[i].session_id for i in range(3)] == ["b", "b", "a"]

    # Claimed twice by the same undecided session: held once.
    t, _ = table()
    a = t.open("a", 0, None)
    shared = Frame(0, 10, pkt(5))
    t.message_frames(a, [shared], None, None, Out())
    t.message_frames(a, [shared], None, None, Out())
    assert a.buf_n == 1 and a.state == UNDECIDED


def test_session_names_are_wire_text():
    t, _ = table()
    s = t.open("bad\udcff-id", 0, None)
    assert s.name == "bad\ufffd-id"
    s.name.encode("utf-8")
    assert t.open("ok", 0, None).name == "ok"


def test_a_full_table_looks_only_so_far_for_an_unmatched_session_to_evict():
    """A table full of matched sessions (the allow policy, whole connections) must not
    be walked whole for each new session: past EVICTION_SCAN, the oldest goes."""
    from lc.hunter.session import EVICTION_SCAN

    n = EVICTION_SCAN + 10
    t, gone = table(max_sessions=n)
    for k in range(n - 1):
        t.decide(t.open(f"m{k}", k, None), ["f"], Out())
    late = t.open("late-undecided", n, None)
    t.open("new", n + 1, None)
    assert gone[0].key == "m0" and late.key in t.sessions
