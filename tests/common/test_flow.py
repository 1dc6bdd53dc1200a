"""The flow layer (lc.common.flow): flow keys, TCP streams framed into messages with the
frames that carried them, the reassembler's flush hook, IP fragments."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from lc.common.decode import TCP_ACK, TCP_FIN, TCP_SYN, decode_packet
from lc.common.flow import (
    PEEK_IPV4,
    PEEK_OFFSET,
    Fragments,
    Frame,
    TcpStreams,
    endpoint_key,
    flow_key,
    icmp_quoted_flow,
)

A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


class LineFramer:
    """A minimal framer: one message per LF-terminated line."""

    def __init__(self) -> None:
        self.buf = b""
        self.base = 0

    @property
    def offset(self) -> int:
        return self.base + len(self.buf)

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self.buf += data
        out = []
        while (i := self.buf.find(b"\n")) >= 0:
            out.append((self.base, self.base + i + 1, self.buf[:i]))
            self.base += i + 1
            self.buf = self.buf[i + 1 :]
        return out


def tcp_frame(seq: int, payload: bytes, flags: int = TCP_ACK, src=A, dst=B, sport=40000, dport=7):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 0x50, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, src, dst)
    return b"\x00" * 12 + b"\x08\x00" + ip + tcp


def feed(streams: TcpStreams, ts: int, raw: bytes, name: str):
    d = decode_packet(1, raw)
    return streams.segment(ts, name, d, memoryview(raw))


def frames_of(msgs):
    return [(m, [f.frame if isinstance(f, Frame) else f for f in fr]) for _, m, fr in msgs]


def test_flow_key_is_one_key_for_both_directions():
    k1, fwd1 = flow_key(A, 40000, B, 7, 6)
    k2, fwd2 = flow_key(B, 7, A, 40000, 6)
    assert k1 == k2 and fwd1 != fwd2
    assert endpoint_key(A, 7) == int.from_bytes(A, "big") << 16 | 7
    assert endpoint_key(b"\x20" * 16, 7) == (b"\x20" * 16, 7)
    raw = tcp_frame(1, b"x")
    etype, vihl, _, proto, src, _, sport, dport = PEEK_IPV4.unpack_from(raw, PEEK_OFFSET)
    assert (etype, vihl, proto, sport, dport) == (0x0800, 0x45, 6, 40000, 7)
    assert endpoint_key(A, sport) == src << 16 | sport


def test_messages_come_with_the_frames_that_carried_them_and_a_straddling_frame_with_both():
    s = TcpStreams(LineFramer)
    assert feed(s, 1, tcp_frame(100, b"", TCP_SYN), "syn") == []
    assert feed(s, 2, tcp_frame(101, b"one "), "f1") == []
    msgs = feed(s, 3, tcp_frame(105, b"line\ntw"), "f2")  # end of "one line", start of "two"
    assert frames_of(msgs) == [(b"one line", ["f1", "f2"])]
    msgs = feed(s, 4, tcp_frame(112, b"o\nthree\n"), "f3")
    assert frames_of(msgs) == [(b"two", ["f2", "f3"]), (b"three", ["f3"])]
    straddling = msgs[0][2][0]
    assert isinstance(straddling, Frame) and straddling.frame == "f2"
    # The frame shared by two messages is the same token each time.
    assert feed(s, 5, tcp_frame(120, b"", TCP_ACK), "ack") == []
    assert s.counters["no_message"] == 2  # the SYN and the pure ACK


def test_bytes_behind_a_hole_are_framed_when_the_hole_times_out_not_dropped():
    s = TcpStreams(LineFramer)
    feed(s, 0, tcp_frame(100, b"", TCP_SYN), "syn")
    feed(s, 1, tcp_frame(101, b"first\n"), "f1")
    # Bytes 107-110 never captured; "held\n" waits behind the hole.
    assert feed(s, 2, tcp_frame(111, b"held\n"), "f3") == []
    assert s.expire(3 * 10**9) == []  # not yet
    msgs = s.expire(20 * 10**9)  # past the reassembler's gap timeout: skipped, delivered
    assert frames_of(msgs) == [(b"held", ["f3"])]
    assert s.figures()["gaps"] == 1


def test_the_end_of_the_capture_frames_what_is_still_held():
    s = TcpStreams(LineFramer)
    feed(s, 0, tcp_frame(100, b"", TCP_SYN), "syn")
    feed(s, 1, tcp_frame(107, b"late\n"), "f2")  # the first bytes never came
    msgs = s.close_all()
    assert frames_of(msgs) == [(b"late", ["f2"])]
    assert s.figures()["streams"] == 0


def test_a_fin_ends_the_direction_and_unclaimed_frames_are_counted():
    s = TcpStreams(LineFramer)
    feed(s, 0, tcp_frame(100, b"", TCP_SYN), "syn")
    feed(s, 1, tcp_frame(101, b"no newline"), "f1")
    feed(s, 2, tcp_frame(111, b"", TCP_FIN | TCP_ACK), "fin")
    assert s.counters["frames_unclaimed"] == 1
    assert s.figures()["streams"] == 0


def test_each_direction_has_its_own_framer():
    s = TcpStreams(LineFramer)
    feed(s, 0, tcp_frame(100, b"ab"), "a1")
    feed(s, 1, tcp_frame(500, b"xy\n", src=B, dst=A, sport=7, dport=40000), "b1")
    msgs = feed(s, 2, tcp_frame(102, b"c\n"), "a2")
    assert frames_of(msgs) == [(b"abc", ["a1", "a2"])]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=12), min_size=1, max_size=12), st.randoms())
def test_every_message_gets_exactly_the_frames_whose_bytes_it_holds(pieces, rnd):
    """Segments in any order: each message's frames are those overlapping it."""
    stream = b"".join(pieces).replace(b"\n", b"") + b"\n"
    cuts = sorted(rnd.sample(range(1, len(stream)), min(4, len(stream) - 1)))
    bounds = [0, *cuts, len(stream)]
    segs = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    order = list(range(len(segs)))
    rnd.shuffle(order)
    s = TcpStreams(LineFramer)
    feed(s, 0, tcp_frame(99, b"", TCP_SYN), "syn")
    got = []
    for ts, k in enumerate(order, 1):
        a, b = segs[k]
        got += frames_of(feed(s, ts, tcp_frame(100 + a, stream[a:b]), k))
    assert got == [(stream[:-1], sorted(range(len(segs)), key=order.index))]


def test_fragments_come_back_whole_with_their_frames():
    payload = bytes(range(200)) * 3
    udp = struct.pack("!HHHH", 5000, 5060, 8 + len(payload), 0) + payload
    frags = []
    for off in range(0, len(udp), 256):
        part = udp[off : off + 256]
        more = 0x2000 if off + 256 < len(udp) else 0
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(part), 77, more | off // 8, 64, 17, 0, A, B
        )
        frags.append(b"\x00" * 12 + b"\x08\x00" + ip + part)
    f = Fragments()
    out = None
    for k, raw in enumerate(frags):
        d = decode_packet(1, raw)
        out = f.feed(k, f"frag{k}", 1, memoryview(raw), d)
        if k < len(frags) - 1:
            assert out is None
    assert out is not None
    whole, frames = out
    assert frames == ["frag0", "frag1", "frag2"]
    dd = decode_packet(101, whole)
    assert whole[dd.payload_offset :] == payload


def test_icmp_errors_name_the_flow_they_quote():
    # IPv4 "fragmentation needed" quoting a TCP segment A:1470 -> B:25 (IHL 5, then 6).
    for ihl in (5, 6):
        ip = bytes([0x40 | ihl, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0]) + A + B + bytes(ihl * 4 - 20)
        quote = ip + struct.pack("!HHI", 1470, 25, 7)
        icmp = bytes([3, 4, 0, 0, 0, 0, 5, 0xD4]) + quote
        assert icmp_quoted_flow(1, icmp) == (A, 1470, B, 25, 6)
        assert icmp_quoted_flow(1, memoryview(icmp)) == (A, 1470, B, 25, 6)
        assert icmp_quoted_flow(1, icmp[: 8 + ihl * 4 + 3]) is None  # ports cut short
    assert icmp_quoted_flow(1, bytes([11, 0]) + icmp[2:]) == (A, 1470, B, 25, 6)  # TTL
    assert icmp_quoted_flow(1, bytes([8, 0]) + icmp[2:]) is None  # an echo request
    assert icmp_quoted_flow(1, icmp[:8] + bytes([0x45]) + icmp[9:15] + b"\x08" + icmp[16:]) is None
    assert icmp_quoted_flow(1, b"") is None and icmp_quoted_flow(17, icmp) is None
    # ICMPv6 "packet too big" quoting UDP; an extension header first gives None.
    a6, b6 = bytes(15) + b"\x01", bytes(15) + b"\x02"
    ip6 = bytes([0x60, 0, 0, 0, 0, 16, 17, 64]) + a6 + b6 + struct.pack("!HHHH", 5060, 53, 16, 0)
    icmp6 = bytes([2, 0, 0, 0, 0, 0, 5, 0xDC]) + ip6
    assert icmp_quoted_flow(58, icmp6) == (a6, 5060, b6, 53, 17)
    assert icmp_quoted_flow(58, icmp6[:8] + ip6[:6] + b"\x00" + ip6[7:]) is None
    assert icmp_quoted_flow(58, bytes([128]) + icmp6[1:]) is None  # an echo request
