"""The HEP forwarder's TCP framing: whole SIP messages out of segments that split,
coalesce, repeat and skip, sent to a real UDP socket and read back with the decoder."""

from __future__ import annotations

import socket
import struct
from array import array

import pytest

from lc.common.errors import ValidationError
from lc.common.hep import HEP_SIP, decode_hep3
from lc.common.wire import BatchRecords
from lc.processor.hepout import HepOut, parse_hep_url
from lc.processor.sinks import Received
from lc.proto import lc_pb2
from tests.voip_tools import _tcp_packet, _udp_packet

A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def sip(method: str, call_id: str, body: bytes = b"") -> bytes:
    return (
        f"{method} sip:b@x SIP/2.0\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def batch(frames: list[bytes], call_id: str = "c1", protocol: str = "sip") -> Received:
    records = b"".join(
        struct.pack("<IIII", 1000 + i, 500_000_000, len(f), len(f)) + f
        for i, f in enumerate(frames)
    )
    cols = BatchRecords(
        records=records,
        caplen=array("I", [len(f) for f in frames]),
        iface=None,
        interfaces=[("eth0", 1)],
        meta_table=[lc_pb2.PacketMeta(session_id=call_id, protocol=protocol)],
        meta_ref=array("H", [1] * len(frames)),
    )
    return Received("h1", 1, 1, cols)


@pytest.fixture
def receiver():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    yield s
    s.close()


def received(sock: socket.socket, n: int) -> list:
    return [decode_hep3(sock.recv(65536)) for _ in range(n)]


def test_tcp_segments_become_whole_messages(receiver):
    hep = HepOut(f"udp://127.0.0.1:{receiver.getsockname()[1]}", agent_id=9)
    invite = sip("INVITE", "c1", b"v=0\r\n" * 40)
    ack, bye = sip("ACK", "c1"), sip("BYE", "c1")
    isn = 1000
    seq = isn + 1
    frames = [
        _tcp_packet(A, B, 5060, 5060, isn, 0, 0x02),  # SYN
        _tcp_packet(A, B, 5060, 5060, seq, 1, 0x18, invite[:70]),  # the INVITE, split
        _tcp_packet(A, B, 5060, 5060, seq, 1, 0x18, invite[:70]),  # a retransmission
        _tcp_packet(A, B, 5060, 5060, seq + 70, 1, 0x18, invite[70:]),
        _tcp_packet(A, B, 5060, 5060, seq + len(invite), 1, 0x18, ack + bye),  # two in one
    ]
    hep._batch(batch(frames))
    got = received(receiver, 3)
    assert [m.payload for m in got] == [invite, ack, bye]
    assert all(m.correlation_id == b"c1" and m.ip_proto == 6 for m in got)
    assert all(m.proto_type == HEP_SIP and m.agent_id == 9 for m in got)
    assert (got[0].src, got[0].dst, got[0].sport, got[0].dport) == (A, B, 5060, 5060)
    # Its capture time: the segment that completed it (the fourth record: 1003.5 s).
    assert (got[0].ts_sec, got[0].ts_usec) == (1003, 500_000)
    # A gap (a lost segment): framing starts afresh at the next message.
    s2 = seq + len(invite) + len(ack) + len(bye)
    lost = sip("INFO", "c1")
    after = sip("BYE", "c1")
    hep._batch(batch([
        _tcp_packet(A, B, 5060, 5060, s2 + 20, 1, 0x18, lost[20:]),
        _tcp_packet(A, B, 5060, 5060, s2 + len(lost), 1, 0x18, after),
    ]))  # fmt: skip
    assert [m.payload for m in received(receiver, 1)] == [after]
    assert hep.sent == 4


def test_udp_sip_and_rtcp_and_what_is_not_sent(receiver):
    hep = HepOut(f"udp://127.0.0.1:{receiver.getsockname()[1]}")
    msg = sip("OPTIONS", "c2")
    rtcp = b"\x80\xc9\x00\x01" + bytes(4)
    hep._batch(batch([_udp_packet(A, B, 5060, 5070, msg, 0)], "c2"))
    hep._batch(batch([_udp_packet(A, B, 10001, 10003, rtcp, 0)], "c2", "rtcp"))
    hep._batch(batch([_udp_packet(A, B, 10000, 10002, b"\x80" * 20, 0)], "c2", "rtp"))
    hep._batch(batch([_udp_packet(A, B, 5060, 5070, b"\r\n\r\n", 0)], "c2"))  # keep-alive
    hep._batch(batch([b"\x00" * 10], "c2"))  # not even Ethernet
    got = received(receiver, 2)
    assert [(m.payload, m.proto_type) for m in got] == [(msg, 1), (rtcp, 5)]
    with pytest.raises(socket.timeout):
        receiver.recv(65536)
    assert hep.dropped["malformed"] == 1 and hep.sent == 2


@pytest.mark.parametrize("url", ["udp://h", "http://h:1", "tcp://:9060", "h:9060", "udp://h:x"])
def test_bad_urls(url):
    with pytest.raises(ValidationError, match="--hep-out"):
        parse_hep_url(url)


def test_unreachable_tcp_collector_counts_drops():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    hep = HepOut(f"tcp://127.0.0.1:{port}")
    hep._batch(batch([_udp_packet(A, B, 5060, 5070, sip("OPTIONS", "c3"), 0)] * 3, "c3"))
    assert hep.sent == 0 and hep.dropped["not_connected"] == 3
