"""Community ID v1: one string per flow, the same in lc, Zeek, Suricata and Packetbeat.

The published algorithm (version 1): SHA-1 over

    seed (u16) | src address | dst address | IP protocol (u8) | 0 (u8)
      | src port (u16) | dst port (u16)

(big-endian; addresses as their 4 or 16 raw bytes), base64 of the digest, prefixed with
``"1:"``. The endpoints are put in a canonical order first, so both directions of a flow
give the same ID: the smaller address first, the smaller port first when the addresses
are equal. Ports take part for TCP, UDP, SCTP, ICMP and ICMPv6 only; for ICMP they are
the message type and code, and a type that has a counterpart (an echo request and its
reply...) uses the counterpart's type in place of the code, so request and reply share
an ID; other ICMP messages are one-way and keep their direction.

Sans-IO and allocation-light: a few bytes joins and one hash per flow.
"""

from __future__ import annotations

import base64
import hashlib
import struct

__all__ = ["ICMP", "ICMP6", "SCTP", "TCP", "UDP", "community_id"]

ICMP = 1
TCP = 6
UDP = 17
ICMP6 = 58
SCTP = 132

_WITH_PORTS = frozenset((TCP, UDP, SCTP))

# ICMP types with a counterpart (both directions), per address family.
_ICMP4_PAIRS = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 10: 9, 9: 10, 17: 18, 18: 17}
_ICMP6_PAIRS = {
    128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135,
    130: 131, 131: 130, 139: 140, 140: 139, 144: 145, 145: 144,
}  # fmt: skip

_PORTS = struct.Struct("!HH")


def community_id(
    src_ip: bytes,
    dst_ip: bytes,
    ip_proto: int,
    src_port: int = 0,
    dst_port: int = 0,
    seed: int = 0,
) -> str:
    """The Community ID v1 of a flow (``"1:"`` + base64 of a SHA-1 digest).

    ``src_ip``/``dst_ip`` are 4 or 16 raw bytes (both of one family). For ICMP and
    ICMPv6, ``src_port`` is the message type and ``dst_port`` its code.

    Raises:
        ValueError: addresses of other lengths or of two families, a port, protocol
            or seed out of range.
    """
    if len(src_ip) not in (4, 16) or len(src_ip) != len(dst_ip):
        raise ValueError("addresses must both be 4 or both be 16 bytes")
    if not (0 <= ip_proto <= 255 and 0 <= seed <= 0xFFFF):
        raise ValueError("IP protocol or seed out of range")
    if not (0 <= src_port <= 0xFFFF and 0 <= dst_port <= 0xFFFF):
        raise ValueError("port out of range")
    one_way = False
    ports = ip_proto in _WITH_PORTS
    if ip_proto in (ICMP, ICMP6):
        ports = True
        pairs = _ICMP4_PAIRS if ip_proto == ICMP else _ICMP6_PAIRS
        other = pairs.get(src_port)
        if other is None:
            one_way = True  # type and code as they are, direction kept
        else:
            dst_port = other
    if not one_way and (dst_ip, dst_port) < (src_ip, src_port):
        src_ip, dst_ip = dst_ip, src_ip
        src_port, dst_port = dst_port, src_port
    parts = [seed.to_bytes(2, "big"), bytes(src_ip), bytes(dst_ip), bytes((ip_proto, 0))]
    if ports:
        parts.append(_PORTS.pack(src_port, dst_port))
    digest = hashlib.sha1(b"".join(parts), usedforsecurity=False).digest()
    return "1:" + base64.b64encode(digest).decode("ascii")
