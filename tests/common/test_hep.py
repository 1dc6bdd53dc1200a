"""lc.common.hep: HEPv3 encoding checked byte by byte against the specification's layout,
and the decoder the end-to-end tests use."""

from __future__ import annotations

import struct

import pytest

from lc.common.errors import ParseError
from lc.common.hep import HEP_RTCP, HEP_SIP, decode_hep3, encode_hep3

SIP = b"OPTIONS sip:x@example.com SIP/2.0\r\nCall-ID: abc@h\r\nContent-Length: 0\r\n\r\n"


def chunks(msg: bytes) -> list[tuple[int, int, bytes]]:
    """(vendor, type, value) of every chunk, by the specification's framing."""
    assert msg[:4] == b"HEP3"
    (total,) = struct.unpack_from("!H", msg, 4)
    assert total == len(msg)
    out, off = [], 6
    while off < total:
        vendor, kind, length = struct.unpack_from("!HHH", msg, off)
        out.append((vendor, kind, msg[off + 6 : off + length]))
        off += length
    assert off == total
    return out


def test_ipv4_sip_message_chunk_by_chunk():
    ts = 1_700_000_000 * 10**9 + 123_456_789
    msg = encode_hep3(
        bytes([192, 0, 2, 1]), bytes([198, 51, 100, 7]), 5060, 5080, ts, SIP,
        agent_id=2001, correlation_id=b"abc@h",
    )  # fmt: skip
    assert chunks(msg) == [
        (0, 0x0001, b"\x02"),  # IPv4
        (0, 0x0002, b"\x11"),  # UDP
        (0, 0x0007, struct.pack("!H", 5060)),
        (0, 0x0008, struct.pack("!H", 5080)),
        (0, 0x0009, struct.pack("!I", 1_700_000_000)),
        (0, 0x000A, struct.pack("!I", 123_456)),  # microseconds within the second
        (0, 0x000B, b"\x01"),  # SIP
        (0, 0x000C, struct.pack("!I", 2001)),
        (0, 0x0003, bytes([192, 0, 2, 1])),
        (0, 0x0004, bytes([198, 51, 100, 7])),
        (0, 0x000F, SIP),
        (0, 0x0011, b"abc@h"),
    ]
    # sngrep 1.6 reads the first eight chunks at fixed offsets: 6 + 7+7+8+8+10+10+7+10.
    assert msg[6 + 67 : 6 + 67 + 4] == struct.pack("!HH", 0, 0x0003)


def test_ipv6_tcp_rtcp_with_key_round_trip():
    src, dst = bytes(range(16)), bytes(range(16, 32))
    rtcp = b"\x80\xc8\x00\x06" + bytes(24)
    msg = encode_hep3(
        src, dst, 40000, 40001, 5 * 10**9 + 999_999_999, rtcp, ip_proto=6,
        proto_type=HEP_RTCP, agent_id=7, correlation_id=b"call-1", auth_key=b"secret",
    )  # fmt: skip
    kinds = [k for _, k, _ in chunks(msg)]
    assert kinds == [1, 2, 7, 8, 9, 10, 11, 12, 5, 6, 0x0E, 0x0F, 0x11]
    assert chunks(msg)[0][2] == b"\x0a"  # AF_INET6 as HEP writes it: 10
    m = decode_hep3(msg)
    assert (m.src, m.dst, m.sport, m.dport) == (src, dst, 40000, 40001)
    assert (m.ts_sec, m.ts_usec) == (5, 999_999)
    assert (m.ip_proto, m.proto_type, m.agent_id) == (6, HEP_RTCP, 7)
    assert (m.payload, m.correlation_id, m.auth_key) == (rtcp, b"call-1", b"secret")


def test_decoder_reads_any_order_and_skips_vendor_chunks():
    body = [
        struct.pack("!HHH", 0, 0x000F, 6 + 3) + b"abc",
        struct.pack("!HHH", 0x0BAD, 0x0001, 6 + 2) + b"zz",  # a vendor's chunk: skipped
        struct.pack("!HHHH", 0, 0x0008, 8, 9),
        struct.pack("!HHHB", 0, 0x000B, 7, HEP_SIP),
    ]
    data = b"".join(body)
    m = decode_hep3(b"HEP3" + struct.pack("!H", 6 + len(data)) + data)
    assert (m.payload, m.dport, m.proto_type) == (b"abc", 9, HEP_SIP)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"HEP2\x00\x06",
        b"HEP3\x00\x05",
        b"HEP3\x00\x20" + bytes(4),  # longer than the data
        b"HEP3\x00\x0a" + struct.pack("!HH", 0, 1),  # chunk header cut short
        b"HEP3\x00\x0c" + struct.pack("!HHH", 0, 1, 3),  # chunk length below its header
        b"HEP3\x00\x0d" + struct.pack("!HHH", 0, 7, 7) + b"\x01",  # a port of one byte
    ],
)
def test_decoder_refuses_malformed(data):
    with pytest.raises(ParseError):
        decode_hep3(data)


def test_encoder_refuses_what_hep_cannot_carry():
    with pytest.raises(ValueError, match="addresses"):
        encode_hep3(bytes(4), bytes(16), 1, 2, 0, b"")
    with pytest.raises(ValueError, match="65535"):
        encode_hep3(bytes(4), bytes(4), 1, 2, 0, bytes(70000))
