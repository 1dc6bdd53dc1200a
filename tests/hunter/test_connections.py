"""Whole-connection capture (capture_unit "connection", lc.hunter.modes.sessions) with a
toy TCP line protocol (tests/hunter/conn_toy.py): hold, flush in order, bounds, the end
by FIN/RST plus grace, idle, mid-stream pickup, a late match after a rejection."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from lc.common.filters import Filter, compile_filters
from lc.common.flow import connection_id
from lc.hunter.session import MATCHED, REJECTED, SessionLimits
from tests.hunter.conn_toy import Conn, chunk, ether_ip, ip4, line_mode, records, udp
from tests.hunter.test_mode_fuzz import through_the_wire

T0 = 1_700_000_000 * 10**9
S = 10**9


def keyword(mode, *patterns: str, ip: str | None = None) -> None:
    fs = [Filter(id=f"kw{k}", type="keyword", pattern=p) for k, p in enumerate(patterns)]
    if ip:
        fs.append(Filter(id="ip", type="ip_address", pattern=ip))
    mode.apply(compile_filters(fs, "h", ("keyword", "ip_address")))


def feed(mode, frames: list[bytes], t0: int = T0, step: int = 1000) -> list[bytes]:
    """Each frame in a chunk of its own; what was forwarded, in order."""
    got = []
    for k, f in enumerate(frames):
        got += records(mode.process(chunk([f], t0 + k * step)))
    return got


def test_a_matching_connection_is_forwarded_whole_in_capture_order():
    m = line_mode()
    keyword(m, "secret")
    a, b = Conn(1), Conn(2)
    want = [*a.handshake(), a.client(b"hello\n"), a.server_ack()]
    other = [*b.handshake(), b.client(b"hello\n"), b.server(b"plain\n")]
    frames = [x for pair in zip(want, other, strict=True) for x in pair]
    # Nothing leaves before the match.
    assert feed(m, frames) == []
    assert m.table.held_bytes > 0
    # The line that matches spans two segments: the match comes with the second.
    tail = [a.client(b"the sec"), a.client(b"ret word\n"), a.server(b"ok\n"), a.client_ack()]
    got = feed(m, tail, T0 + S)
    assert got == want + tail
    s = m.table.sessions[next(iter(k for k in m.table.sessions if k[1] == 40001))]
    assert s.state == MATCHED and s.ids == ["kw0"]
    assert s.name == connection_id(s.key, T0) and s.name.startswith("tcp:10.0.0.1:40001-10.0.1.1")
    # After the match, every packet of the connection goes at once, both directions.
    more = [a.server(b"x" * 100), a.client_ack(), *a.close()]
    assert feed(m, more, T0 + 2 * S) == more
    f = m.counters()
    assert f.figures["connections_matched"] == 1 and f.figures["connection_frames"] == 19
    assert f.dropped["filtered"] == 0  # the other connection is still held


def test_metadata_message_frames_carry_their_message_the_others_the_connection():
    m = line_mode()
    keyword(m, "secret")
    a = Conn(1)
    frames = [*a.handshake(), a.client(b"one\n"), a.client(b"sec"), a.client(b"ret\n")]
    fwd = m.process(chunk(frames, T0))
    assert records(fwd) == frames
    protos = [fwd.meta[i].protocol for i in range(len(frames))]
    assert protos == ["line"] * 3 + ["line:one", "line:secret", "line:secret"]
    assert {fwd.meta[i].session_id for i in range(6)} == {
        connection_id(next(iter(m.table.sessions)), T0)
    }
    assert all(list(fwd.meta[i].filter_ids) == ["kw0"] for i in range(6))
    # Matched already: a message completed within the chunk carries its summary.
    fwd = m.process(chunk([a.server(b"re"), a.server(b"ply\n"), a.client_ack()], T0 + S))
    assert [fwd.meta[i].protocol for i in range(3)] == ["line:reply", "line:reply", "line"]
    # A message whose first frame left in an earlier chunk: that frame kept the
    # connection's metadata, the one completing it carries the message's.
    f1 = m.process(chunk([a.server(b"split ")], T0 + 2 * S))
    f2 = m.process(chunk([a.server(b"line\n")], T0 + 3 * S))
    assert f1.meta[0].protocol == "line" and f2.meta[0].protocol == "line:split line"


def test_a_settled_connection_stops_being_held_and_a_later_match_takes_the_rest():
    m = line_mode()
    keyword(m, "secret")
    a = Conn(1)
    before = [*a.handshake(), a.client(b"hello\n"), a.server(b"DONE\n"), a.client_ack()]
    assert feed(m, before) == []
    (s,) = m.table.sessions.values()
    assert s.state == REJECTED and s.buf_n == 0 and m.table.held_bytes == 0
    assert m.counters().dropped["filtered"] == len(before)
    gap = [a.client(b"still plain\n"), a.server_ack()]
    assert feed(m, gap, T0 + S) == []
    # Later messages are still judged: the rest of the connection from the frame that
    # completes the matching message on (its earlier segments are missing).
    head = a.client(b"now the ")
    rest = [a.client(b"secret\n"), a.server_ack(), *a.close()]
    assert feed(m, [head, *rest], T0 + 2 * S) == rest
    assert s.state == MATCHED
    assert m.counters().dropped["filtered"] == len(before) + len(gap) + 1


def test_fin_both_ways_plus_grace_ends_it_rst_at_once_and_idle_connections_go():
    lim = SessionLimits(grace_ns=2 * S, idle_timeout_ns=30 * S)
    m = line_mode(lim, policy="allow")  # no filter: every connection
    a, b, c = Conn(1), Conn(2), Conn(3)
    fin = [*a.handshake(), a.client(b"hi\n"), *a.close()]
    assert feed(m, fin) == fin
    sa = m.table.sessions[next(iter(m.table.sessions))]
    assert sa.end_ns == T0 + (len(fin) - 2) * 1000  # the second FIN
    late = a.server_ack()
    assert feed(m, [late], T0 + S) == [late]  # within the grace
    rst = [*b.handshake(), b.reset()]
    assert feed(m, rst, T0 + S + 10) == rst
    sb = next(s for s in m.table.sessions.values() if s.key[1] == 40002)
    assert sb.end_ns == T0 + S + 10 + 3000
    half = [*c.handshake(), c.client(b"x\n"), c.close()[0]]  # one FIN: not over
    assert feed(m, half, T0 + S + 100) == half
    m.tick(T0 + 4 * S)
    assert [s.key[1] for s in m.table.sessions.values()] == [40003]
    assert m.table.counters["ended"] == 2
    m.tick(T0 + 40 * S)
    assert not m.table.sessions and m.table.counters["idle"] == 1
    # A packet of a connection that left starts a new one (mid-stream, as any).
    again = c.server_ack()
    assert feed(m, [again], T0 + 41 * S) == [again]
    (s,) = m.table.sessions.values()
    assert s.first_ns == T0 + 41 * S and s.flow[3] == 7070  # the server side is known


def test_a_new_syn_on_an_ended_connections_5_tuple_is_a_new_connection():
    m = line_mode(SessionLimits(grace_ns=5 * S))
    keyword(m, "secret")
    a = Conn(1)
    first = [*a.handshake(), a.client(b"secret\n"), *a.close()]
    assert feed(m, first) == first
    (old,) = m.table.sessions.values()
    b = Conn(1)  # same 5-tuple, within the grace
    b.cseq += 7777
    second = [*b.handshake(), b.client(b"plain\n")]
    assert feed(m, second, T0 + S) == []
    (new,) = m.table.sessions.values()
    assert new is not old and new.name != old.name and new.first_ns == T0 + S
    assert m.counters().figures["connections_reused"] == 1


def test_mid_stream_connections_are_followed_and_captured():
    m = line_mode()
    keyword(m, "secret")
    a = Conn(1)
    a.handshake()  # not captured: the hunter started later
    frames = [a.server_ack(), a.client(b"ial line\nthen the secret\n"), a.server_ack()]
    assert feed(m, frames) == frames
    (s,) = m.table.sessions.values()
    # Oriented by the protocol's port, though the first packet came from the server.
    assert s.flow[1] == 40001 and s.flow[3] == 7070


def test_retransmissions_and_out_of_order_segments_belong_to_the_connection():
    m = line_mode()
    keyword(m, "secret")
    a = Conn(1)
    hs = a.handshake()
    p1 = a.client(b"first ")
    p2 = a.client(b"secret\n")
    frames = [*hs, p2, p1, p1, a.server_ack()]  # reordered, then a retransmission
    assert feed(m, frames) == frames
    assert m.dis.seen == [b"first secret"]


def icmp_error(frame: bytes, router: bytes, type_: int = 3, code: int = 4) -> bytes:
    """An ICMP error from ``router`` quoting ``frame`` (its IP packet), back to its sender."""
    ip = frame[14:]
    body = bytes([type_, code, 0, 0, 0, 0, 0x05, 0xD4]) + ip
    return ether_ip(router, ip[12:16], 1, body)


def test_icmp_errors_quoting_a_connections_segments_are_its_frames():
    # smtp/zeek_smtp.pcap frames 26, 28-30: "fragmentation needed" errors quoting the
    # client's segments, in tshark's tcp.stream of the connection, were not forwarded.
    m = line_mode()
    keyword(m, "secret")
    a, b = Conn(1), Conn(2)
    hs = a.handshake()
    big = a.client(b"x" * 400)
    frames = [*hs, big, icmp_error(big, ip4(999)), a.client(b"\n")]
    assert feed(m, frames) == []  # held with the connection
    tail = [a.client(b"secret\n"), icmp_error(a.client(b"more\n"), ip4(999), 11, 0)]
    assert feed(m, tail, T0 + S) == frames + tail
    assert m.dis.seen == [b"x" * 400, b"secret"]  # an error's quote is no stream bytes
    assert m.counters().figures["connection_frames"] == len(frames + tail)
    # About an unknown connection, or not an error (an echo request): not a frame of any.
    other = [icmp_error(b.client(b"hi\n"), ip4(999)), ether_ip(ip4(5), ip4(6), 1, bytes(16))]
    assert feed(m, other, T0 + 2 * S) == []
    assert m.counters().figures["unassociated"] == 2


def test_bounds_held_bytes_per_connection_overall_and_lru_eviction_of_undecided():
    lim = SessionLimits(max_held_session_bytes=1000, max_sessions=3)
    m = line_mode(lim)
    keyword(m, "secret")
    a = Conn(1)
    big = [a.client(b"y" * 300) for _ in range(5)]
    feed(m, [*a.handshake(), *big])
    (s,) = m.table.sessions.values()
    assert s.buf_bytes <= 1000 and m.table.buffer_full == 3  # held: handshake + 2 of 300
    assert m.counters().dropped["connection_buffer_full"] == 3
    # Later packets are not held; a match flushes what was, and the frames of the
    # message that matched (counted as not held until then).
    hit = a.client(b"\nsecret\n")
    got = feed(m, [hit], T0 + S)
    assert len(got) == s.pk[0] - 3 and got[-1] == hit and m.table.buffer_full == 3
    # The table: the least recently active connection not matched goes.
    b, c, d = Conn(2), Conn(3), Conn(4)
    feed(m, b.handshake()[:1], T0 + 2 * S)
    feed(m, c.handshake()[:1], T0 + 3 * S)
    feed(m, b.handshake()[1:2], T0 + 4 * S)  # b active again: c is the oldest
    feed(m, d.handshake()[:1], T0 + 5 * S)
    assert sorted(k[1] for k in m.table.sessions) == [40001, 40002, 40004]
    assert m.table.counters["evicted"] == 1


def test_held_bytes_overall_are_bounded():
    m = line_mode(SessionLimits(max_held_bytes=2000))
    keyword(m, "secret")
    conns = [Conn(n) for n in range(1, 6)]
    for k, c in enumerate(conns):
        feed(m, [*c.handshake(), c.client(b"z" * 400)], T0 + k * S)
    assert m.table.held_bytes <= 2000 and m.table.buffer_full > 0


def test_events_wait_for_the_decision():
    m = line_mode(events="captured")
    keyword(m, "secret")
    a, b = Conn(1), Conn(2)
    fwd = m.process(chunk([*a.handshake(), a.client(b"one\n"), a.client(b"two\n")], T0))
    assert fwd.events == []
    fwd = m.process(chunk([a.client(b"secret\n")], T0 + S))
    evs = fwd.events
    assert len(evs) == 3 and all(e.captured and list(e.filter_ids) == ["kw0"] for e in evs)
    assert {e.session_id for e in evs} == {connection_id(next(iter(m.table.sessions)), T0)}
    assert evs[0].flow.src_port == 40001 and evs[0].flow.dst_port == 7070
    assert evs[0].dataset == "line" and evs[2].start_ns == T0 + S
    # A rejected connection's events go only with --events all, not captured.
    fwd = m.process(chunk([*b.handshake(), b.client(b"x\n"), b.client(b"DONE\n")], T0 + 2 * S))
    assert fwd.events == []
    m2 = line_mode(events="all")
    keyword(m2, "secret")
    b = Conn(2)
    fwd = m2.process(chunk([*b.handshake(), b.client(b"x\n"), b.client(b"DONE\n")], T0))
    assert len(fwd.events) == 2 and not any(e.captured or e.filter_ids for e in fwd.events)
    # Undecided ones at the end of the capture, too.
    m2.process(chunk([Conn(3).handshake()[0], Conn(3).client(b"y\n")], T0 + S))
    assert [e.captured for e in m2.finish().events] == [False]


def test_an_ip_address_filter_or_the_allow_policy_decides_at_the_first_packet():
    m = line_mode()
    keyword(m, "never", ip="10.0.0.2/32")
    a, b = Conn(1), Conn(2)
    frames = [*a.handshake(), *b.handshake()]
    assert feed(m, frames) == frames[3:]
    m = line_mode(policy="allow")
    assert feed(m, frames) == frames


def test_ignore_rest_stops_parsing_but_not_capture():
    m = line_mode()
    keyword(m, "secret")
    a = Conn(1)
    frames = [*a.handshake(), a.client(b"secret\nIGNORE\n"), a.client(b"more secret\n")]
    frames += a.close()
    assert feed(m, frames) == frames
    assert m.dis.seen == [b"secret", b"IGNORE"]
    assert m.counters().figures["tcp_streams"] == 0
    # Its later frames take the per-chunk loop (no decoding), FINs included.
    (s,) = m.table.sessions.values()
    assert list(m._conn_fast_tcp.values()) == [s, s]
    assert s.end_ns == T0 + 6000  # the second FIN
    assert m.counters().figures["decode_errors"] == 0 and s.pk[0] == len(frames)
    m.tick(T0 + 10 * S)
    assert not m.table.sessions and not m._conn_fast_tcp
    # Rejected ones too: counted, not held.
    b = Conn(2)
    frames = [*b.handshake(), b.client(b"DONE\nIGNORE\n"), b.server(b"x" * 500), b.reset()]
    assert feed(m, frames, T0 + 20 * S) == []
    (s,) = m.table.sessions.values()
    assert s.state == REJECTED and s.end_ns == T0 + 20 * S + 5000 and m.table.held_bytes == 0
    assert m.counters().dropped["filtered"] == len(frames)


def test_udp_flows_are_connections_when_the_dissector_asks():
    m = line_mode(udp_flows=True)
    keyword(m, "secret")
    c, s = Conn(1).c, Conn(1).s
    frames = [
        udp(c, 5555, s, 7070, b"hello"),
        udp(s, 7070, c, 5555, b"\xff\x00 not a line"),
        udp(c, 5555, s, 7070, b"secret"),
        udp(s, 7070, c, 5555, b"after"),
    ]
    other = udp(c, 5556, s, 7070, b"plain")
    assert feed(m, [*frames[:2], other, *frames[2:]]) == frames
    assert len(m.table.sessions) == 2
    (name,) = {s.name for s in m.table.sessions.values() if s.state == MATCHED}
    assert name.startswith("udp:10.0.0.1:5555-10.0.1.1:7070@")


def test_message_sessions_are_unchanged_by_the_connection_machinery():
    """A message-unit dissector (the toy of test_mode_seam, VoIP) never sees a token."""
    from lc.hunter.modes.voip import SipDissector, VoipConfig

    assert SipDissector(VoipConfig()).capture_unit == "message"


# -- properties ----------------------------------------------------------------------------

WORDS = [b"a", b"bc", b"secret", b"DONE", b"IGNORE", b" ", b"xyz"]


@st.composite
def conversations(draw):
    """Connections (1-4) of random lines both ways, cut into random segments, with or
    without a handshake and a close, interleaved, some segments sent twice."""
    per_conn = []
    for n in range(1, draw(st.integers(1, 4)) + 1):
        c = Conn(n)
        frames = c.handshake() if draw(st.booleans()) else []
        for _ in range(draw(st.integers(0, 6))):
            client = draw(st.booleans())
            words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))
            line = b"".join(words) + b"\n"
            cuts = sorted(draw(st.sets(st.integers(1, len(line) - 1), max_size=2)))
            parts = [line[a:b] for a, b in zip([0, *cuts], [*cuts, len(line)], strict=True)]
            for part in parts:
                f = c.client(part) if client else c.server(part)
                frames.append(f)
                if draw(st.integers(0, 4)) == 0:
                    frames.append(f)  # a retransmission
                if draw(st.booleans()):
                    frames.append(c.server_ack() if client else c.client_ack())
        end = draw(st.sampled_from(["fin", "rst", "open"]))
        frames += c.close() if end == "fin" else [c.reset()] if end == "rst" else []
        per_conn.append(frames)
    order = draw(st.permutations([k for k, fs in enumerate(per_conn) for _ in fs]))
    its = [iter(fs) for fs in per_conn]
    frames = [(k, next(its[k])) for k in order]
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(frames) - 1)), max_size=5)))
    return per_conn, frames, cuts


def expected(frames: list[bytes]) -> list[bytes]:
    """What a connection's frames should give: all if a line with the keyword completes
    before a DONE line; after a DONE, from the frame completing such a line on; no line
    after an IGNORE line counts."""
    bufs = {}
    state = "undecided"
    for k, f in enumerate(frames):
        sport = int.from_bytes(f[34:36], "big")
        data = f[54:]
        if frames.index(f) != k:
            continue  # a retransmission completes nothing
        buf = bufs.get(sport, b"") + data
        *lines, bufs[sport] = buf.split(b"\n")
        for line in lines:
            if b"secret" in line:
                return frames if state == "undecided" else frames[k:]
            if line == b"DONE" and state == "undecided":
                state = "rejected"
            if line == b"IGNORE":
                return []
    return []


@settings(max_examples=200, deadline=None)
@given(conversations())
def test_any_interleaving_forwards_exactly_each_connections_due_frames(conv):
    per_conn, frames, cuts = conv
    m = line_mode()
    keyword(m, "secret")
    got: list[bytes] = []
    bounds = [0, *cuts, len(frames)]
    for a, b in itertools.pairwise(bounds):
        if a < b:
            got += records(m.process(chunk([f for _, f in frames[a:b]], T0 + a * 1000)))
    got += records(m.finish())
    by_conn: dict[int, list[bytes]] = {}
    for f in got:
        ports = {int.from_bytes(f[34:36], "big"), int.from_bytes(f[36:38], "big")}
        by_conn.setdefault(max(ports) - 40001, []).append(f)
    for k, fs in enumerate(per_conn):
        assert by_conn.get(k, []) == expected(fs), k
    assert m.table.held_bytes == 0 and not m.table.sessions


def test_connection_mode_figures_fit_a_heartbeat():
    c = line_mode(udp_flows=True).counters()
    assert len(c.figures) <= 60 and len(c.dropped) <= 10


def test_a_connection_dissectors_kernel_filter_is_tcp_unless_it_wants_udp():
    assert line_mode().dis.kernel_bpf() == "tcp and (port 7070)"
    assert line_mode(udp_flows=True).dis.kernel_bpf().startswith("((udp or tcp) and (port 7070))")
    # Without udp_flows nor session_key, UDP on its port belongs to nothing.
    m = line_mode(policy="allow")
    c = Conn(1)
    assert feed(m, [udp(c.c, 5555, c.s, 7070, b"secret\n")]) == []
    assert m.counters().figures["unassociated"] == 1


def test_connection_ids_name_ipv6_in_brackets():
    key = (b"\x20\x01" + b"\0" * 13 + b"\x01", 443, b"\x20\x01" + b"\0" * 13 + b"\x02", 5555, 6)
    assert connection_id(key, 1_700_000_000_000_000_007) == (
        "tcp:[2001::1]:443-[2001::2]:5555@1700000000.000000007"
    )


@st.composite
def hostile(draw) -> list[bytes]:
    """Connection frames with bytes flipped, cut short or spliced in (headers too)."""
    c, d = Conn(1), Conn(2)
    frames = [*c.handshake(), c.client(b"a secret\n"), c.server(b"DONE\nIGNORE\n"),
              *d.handshake(), d.client(b"x" * 50 + b"\n"), c.client(b"more\n"), *c.close(),
              udp(c.c, 5555, c.s, 7070, b"secret"), d.reset()]  # fmt: skip
    out = []
    for f in draw(st.lists(st.sampled_from(frames), min_size=1, max_size=30)):
        f = bytearray(f)
        for _ in range(draw(st.integers(0, 3))):
            how = draw(st.integers(0, 2))
            pos = draw(st.integers(0, len(f)))
            if how == 0 and pos < len(f):
                f[pos] = draw(st.integers(0, 255))
            elif how == 1:
                del f[pos:]
            else:
                f[pos:pos] = draw(st.binary(max_size=20))
        out.append(bytes(f))
    return out


@settings(max_examples=150, deadline=None)
@given(hostile(), st.sampled_from(["allow", "filters"]), st.booleans())
def test_hostile_frames_never_stop_a_connection_mode(frames, how, udp_flows):
    m = line_mode(SessionLimits(max_sessions=2, max_held_session_bytes=300), policy=how,
                  events="all", udp_flows=udp_flows)  # fmt: skip
    if how == "filters":
        keyword(m, "secret", ip="10.0.0.2/32")
    interfaces = [("eth0", 1)]
    half = len(frames) // 2
    sent = through_the_wire(m.process(chunk(frames[:half], T0)), interfaces, 1)
    sent += through_the_wire(m.process(chunk(frames[half:], T0 + S)), interfaces, 2)
    sent += through_the_wire(m.tick(T0 + 400 * S), interfaces, 3)
    sent += through_the_wire(m.finish(), interfaces, 4)
    assert sent <= len(frames)  # nothing forwarded twice
    c = m.counters()
    assert all(isinstance(v, int) and v >= 0 for v in [*c.figures.values(), *c.dropped.values()])
    assert m.table.held_bytes == 0 and not m.table.sessions and not m._conn_fast_tcp
