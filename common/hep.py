"""HEPv3 (the Homer Encapsulation Protocol, "EEP"): encoding and decoding, sans-IO.

A HEPv3 message is ``HEP3``, its total length (uint16, network order, header
included), then chunks: vendor id (uint16; 0 = the generic chunks below), chunk type
(uint16), chunk length (uint16, its 6-byte header included), value. The generic chunk
types used here (HEP3 specification):

======  ==========================  ==========================================
type    value                       here
======  ==========================  ==========================================
0x0001  IP protocol family (u8)     2 (IPv4) or 10 (IPv6)
0x0002  IP protocol id (u8)         17 (UDP) or 6 (TCP)
0x0003  IPv4 source address         4 bytes
0x0004  IPv4 destination address    4 bytes
0x0005  IPv6 source address         16 bytes
0x0006  IPv6 destination address    16 bytes
0x0007  source port (u16)
0x0008  destination port (u16)
0x0009  timestamp, seconds (u32)
0x000a  timestamp, microseconds     the offset within the second (u32)
0x000b  protocol type (u8)          1 = SIP, 5 = RTCP
0x000c  capture agent id (u32)
0x000e  authentication key          optional (a string)
0x000f  payload                     the captured message
0x0011  internal correlation id     the Call-ID
======  ==========================  ==========================================

:func:`encode_hep3` writes the chunks in the order the common receivers read them
(sngrep 1.6 reads the first eight chunks at fixed offsets, then the addresses, the
key when it has one, then the payload; the correlation id comes last).
:func:`decode_hep3` reads any order (the tests' own decoder).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from lc.common.errors import ParseError

__all__ = [
    "HEP_RTCP",
    "HEP_SIP",
    "MAX_HEP_BYTES",
    "HepMessage",
    "decode_hep3",
    "encode_hep3",
]

HEP_SIP = 1
HEP_RTCP = 5
MAX_HEP_BYTES = 0xFFFF  # the total length is a uint16

_FAMILY = {4: 2, 16: 10}  # address length -> AF_INET, AF_INET6 (as HEP writes them)
_HDR = struct.Struct("!HHH")  # vendor, type, length
_U8 = struct.Struct("!HHHB")
_U16 = struct.Struct("!HHHH")
_U32 = struct.Struct("!HHHI")


@dataclass(slots=True)
class HepMessage:
    """One HEPv3 message's fields (what :func:`decode_hep3` returns)."""

    src: bytes
    dst: bytes
    sport: int
    dport: int
    ts_sec: int
    ts_usec: int
    ip_proto: int = 17
    proto_type: int = HEP_SIP
    agent_id: int = 0
    payload: bytes = b""
    correlation_id: bytes = b""
    auth_key: bytes = b""


def _chunk(kind: int, value: bytes) -> bytes:
    return _HDR.pack(0, kind, 6 + len(value)) + value


def encode_hep3(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    ts_ns: int,
    payload: bytes,
    *,
    ip_proto: int = 17,
    proto_type: int = HEP_SIP,
    agent_id: int = 0,
    correlation_id: bytes = b"",
    auth_key: bytes = b"",
) -> bytes:
    """One HEPv3 message (see the module docstring).

    Raises:
        ValueError: addresses that are not both 4 or both 16 bytes, a port, protocol or
            agent id out of range, or a message longer than 65535 bytes.
    """
    family = _FAMILY.get(len(src))
    if family is None or len(dst) != len(src):
        raise ValueError("addresses must be both IPv4 (4 bytes) or both IPv6 (16 bytes)")
    variable = len(payload) + len(auth_key) + len(correlation_id)
    if variable + 2 * len(src) + 6 + 67 + 3 * 6 > MAX_HEP_BYTES:
        raise ValueError(f"a HEP message holds at most {MAX_HEP_BYTES} bytes")
    sec, ns = divmod(ts_ns, 1_000_000_000)
    v6 = family == 10
    parts = [
        _U8.pack(0, 0x0001, 7, family),
        _U8.pack(0, 0x0002, 7, ip_proto),
        _U16.pack(0, 0x0007, 8, sport),
        _U16.pack(0, 0x0008, 8, dport),
        _U32.pack(0, 0x0009, 10, sec & 0xFFFFFFFF),
        _U32.pack(0, 0x000A, 10, ns // 1000),
        _U8.pack(0, 0x000B, 7, proto_type),
        _U32.pack(0, 0x000C, 10, agent_id),
        _chunk(0x0005 if v6 else 0x0003, src),
        _chunk(0x0006 if v6 else 0x0004, dst),
    ]
    if auth_key:
        parts.append(_chunk(0x000E, auth_key))
    parts.append(_chunk(0x000F, payload))
    if correlation_id:
        parts.append(_chunk(0x0011, correlation_id))
    body = b"".join(parts)
    total = 6 + len(body)
    if total > MAX_HEP_BYTES:
        raise ValueError(f"a HEP message holds at most {MAX_HEP_BYTES} bytes, not {total}")
    return b"HEP3" + struct.pack("!H", total) + body


def decode_hep3(data: bytes) -> HepMessage:
    """The fields of one HEPv3 message (chunks in any order; unknown ones skipped).

    Raises:
        ParseError: not HEP3, a length that does not add up, or a chunk cut short.
    """
    if len(data) < 6 or data[:4] != b"HEP3":
        raise ParseError("not a HEP3 message")
    (total,) = struct.unpack_from("!H", data, 4)
    if total < 6 or total > len(data):
        raise ParseError(f"HEP3 length {total} does not fit the {len(data)} bytes")
    m = HepMessage(b"", b"", 0, 0, 0, 0)
    off = 6
    while off < total:
        if off + 6 > total:
            raise ParseError(f"chunk header cut short at offset {off}")
        vendor, kind, length = _HDR.unpack_from(data, off)
        if length < 6 or off + length > total:
            raise ParseError(f"chunk {kind:#06x} at offset {off}: bad length {length}")
        value = data[off + 6 : off + length]
        off += length
        if vendor != 0:
            continue
        if kind in (0x0001, 0x0002, 0x000B) and len(value) != 1:
            raise ParseError(f"chunk {kind:#06x}: {len(value)} bytes, not 1")
        if kind in (0x0007, 0x0008) and len(value) != 2:
            raise ParseError(f"chunk {kind:#06x}: {len(value)} bytes, not 2")
        if kind in (0x0009, 0x000A, 0x000C) and len(value) != 4:
            raise ParseError(f"chunk {kind:#06x}: {len(value)} bytes, not 4")
        if kind == 0x0002:
            m.ip_proto = value[0]
        elif kind in (0x0003, 0x0005):
            m.src = value
        elif kind in (0x0004, 0x0006):
            m.dst = value
        elif kind == 0x0007:
            m.sport = int.from_bytes(value, "big")
        elif kind == 0x0008:
            m.dport = int.from_bytes(value, "big")
        elif kind == 0x0009:
            m.ts_sec = int.from_bytes(value, "big")
        elif kind == 0x000A:
            m.ts_usec = int.from_bytes(value, "big")
        elif kind == 0x000B:
            m.proto_type = value[0]
        elif kind == 0x000C:
            m.agent_id = int.from_bytes(value, "big")
        elif kind == 0x000E:
            m.auth_key = value
        elif kind == 0x000F:
            m.payload = value
        elif kind == 0x0011:
            m.correlation_id = value
    return m
