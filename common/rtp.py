"""Cheap RTP and RTCP recognition for the hunter's hot path (RFC 3550, RFC 5761).

These functions look at a UDP payload and say whether it is plausibly RTP or
RTCP, reading only fixed header fields with precompiled structs. They build no
objects beyond the returned tuple and never raise on any bytes.

RTP (:func:`rtp_header`, RFC 3550 §5.1)
    Plausible when: version 2; at least 12 + 4·CC bytes; with the X bit, the
    4-byte extension header and its 4·length bytes fit; with the P bit, the last
    byte (the padding count, which counts itself) is at least 1 and the padding
    does not reach into the header. Payload types 72–76 are refused: RFC 3551 §6
    reserves them so that RTP can never be mistaken for RTCP SR/RR/SDES/BYE/APP.
    The result is ``(payload_type, seq, timestamp, ssrc, marker)``.

RTCP (:func:`is_rtcp`, RFC 3550 §6.4–6.7, RFC 4585 §6.1, RFC 3611 §2)
    A datagram is RTCP when its sub-packets tile it exactly: each has version 2
    and a length field ((length+1)·4 bytes) that fits. The first sub-packet's type
    must be SR 200, RR 201, SDES 202, BYE 203, APP 204, RTPFB 205, PSFB 206 or XR
    207 (XR too, since phones append VoIP metrics reports); later ones may carry
    any type in 192–223. Known types must be long enough for their count field
    (SR 28 + 24·RC, RR 8 + 24·RC, SDES 4 + 8·SC, BYE 4 + 4·SC, APP/RTPFB/PSFB 12,
    XR 8). Only the last sub-packet may set the P bit, and its padding count must
    be between 1 and its length less the 4-byte header. Reduced-size RTCP
    (RFC 5506, a lone non-SR/RR packet) is accepted. One to three zero bytes after
    the last sub-packet are tolerated (a real sender in the test corpus pads its
    compound packets so, and tshark accepts them); any other leftover is not.

Classification (:func:`classify`, RFC 5761 §4)
    RTCP is checked first. A second byte in 192–223 (marker set and payload type
    64–95, which RFC 5761 forbids for RTP when RTP and RTCP share a port) means
    RTCP or nothing: such a datagram that is not valid RTCP is ``""``, never
    ``"rtp"``. Everything else is ``"rtp"`` when :func:`rtp_header` accepts it.

Speed
    On the development VM (2 vCPU, CPython 3.11.7): ``rtp_header`` about 0.45 µs,
    ``classify`` about 1.0 µs for RTP, 0.15 µs for SIP text, 1.1 µs for a lone SR
    and 3.2 µs for an SR+RR+SDES compound.

Not handled
    SRTCP (RFC 3711 §3.4) appends an index and a tag after the encrypted compound
    packet, so its lengths do not tile the datagram: it is ``""``. SRTP still
    looks like RTP (its header is clear). STUN, DTLS and ZRTP on the same port
    (RFC 7983) fail the version check. Header extension contents (RFC 8285) and
    CSRC lists are skipped, not parsed.
"""

from __future__ import annotations

import struct

__all__ = [
    "RTCP_APP",
    "RTCP_BYE",
    "RTCP_PSFB",
    "RTCP_RR",
    "RTCP_RTPFB",
    "RTCP_SDES",
    "RTCP_SR",
    "RTCP_XR",
    "classify",
    "is_rtcp",
    "rtcp_packet_types",
    "rtcp_sender_ssrc",
    "rtp_header",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204
RTCP_RTPFB = 205
RTCP_PSFB = 206
RTCP_XR = 207

_RTP = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_RTCP_HDR = struct.Struct("!BBH")  # V/P/count, packet type, length in words - 1

# Fixed bytes and bytes per count-field item, by RTCP packet type.
_RTCP_MIN: dict[int, tuple[int, int]] = {
    RTCP_SR: (28, 24),
    RTCP_RR: (8, 24),
    RTCP_SDES: (4, 8),  # a chunk is an SSRC and at least one null octet, padded to 4
    RTCP_BYE: (4, 4),
    RTCP_APP: (12, 0),
    RTCP_RTPFB: (12, 0),
    RTCP_PSFB: (12, 0),
    RTCP_XR: (8, 0),
}
_FIRST_TYPES = frozenset(_RTCP_MIN)


def rtp_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int, bool] | None:
    """``(payload_type, seq, timestamp, ssrc, marker)`` of a plausible RTP packet,
    None otherwise (see the module docstring for what is checked)."""
    n = len(data)
    if n < 12:
        return None
    b0, b1, seq, ts, ssrc = _RTP.unpack_from(data)
    if b0 & 0xC0 != 0x80:
        return None
    pt = b1 & 0x7F
    if 72 <= pt <= 76:
        return None
    hlen = 12 + ((b0 & 0x0F) << 2)
    if b0 & 0x10:
        if hlen + 4 > n:
            return None
        hlen += 4 + (_U16.unpack_from(data, hlen + 2)[0] << 2)
    if hlen > n:
        return None
    if b0 & 0x20:
        pad = data[n - 1]
        if pad == 0 or hlen + pad > n:
            return None
    return pt, seq, ts, ssrc, b1 > 0x7F


def rtcp_packet_types(data: bytes | bytearray | memoryview) -> list[int] | None:
    """The packet types of the sub-packets of a valid (compound) RTCP datagram, in
    order; None if ``data`` is not RTCP."""
    n = len(data)
    if n < 4:
        return None
    types: list[int] = []
    off = 0
    while off < n:
        if off + 4 > n:
            # 1-3 zero bytes after the last sub-packet: seen from real senders, and
            # tshark accepts them too.
            if off and bytes(data[off:n]) == bytes(n - off):
                break
            return None
        b0, pt, words = _RTCP_HDR.unpack_from(data, off)
        if b0 & 0xC0 != 0x80:
            return None
        size = (words + 1) << 2
        if off + size > n:
            return None
        if types:
            if not 192 <= pt <= 223:
                return None
        elif pt not in _FIRST_TYPES:
            return None
        need = _RTCP_MIN.get(pt)
        if need is not None and size < need[0] + need[1] * (b0 & 0x1F):
            return None
        if b0 & 0x20:
            if off + size != n:
                return None  # only the last sub-packet may be padded
            pad = data[n - 1]
            if pad == 0 or pad > size - 4:
                return None
        types.append(pt)
        off += size
    return types


def is_rtcp(data: bytes | bytearray | memoryview) -> bool:
    """True for a valid RTCP datagram, compound or not (see the module docstring)."""
    n = len(data)
    # A lone, unpadded SR or RR: the usual case, decided without the walk.
    if n >= 8 and data[1] in (RTCP_SR, RTCP_RR) and data[0] & 0xE0 == 0x80:
        b0, pt, words = _RTCP_HDR.unpack_from(data)
        if (words + 1) << 2 == n:
            fixed, per = _RTCP_MIN[pt]
            return n >= fixed + per * (b0 & 0x1F)
    return rtcp_packet_types(data) is not None


def rtcp_sender_ssrc(data: bytes | bytearray | memoryview) -> int | None:
    """The SSRC of the first sub-packet of an RTCP datagram (the sender of an SR, RR,
    APP, feedback or XR packet; the first source of an SDES or BYE), or None when
    ``data`` is not RTCP or that packet names no source."""
    if not is_rtcp(data):
        return None
    if data[1] in (RTCP_SDES, RTCP_BYE) and not data[0] & 0x1F:
        return None
    if len(data) < 8:
        return None
    return _U32.unpack_from(data, 4)[0]


def classify(data: bytes | bytearray | memoryview) -> str:
    """``"rtcp"``, ``"rtp"`` or ``""`` for a UDP payload, demultiplexed as RFC 5761 §4
    says (RTCP first)."""
    if len(data) < 4 or data[0] & 0xC0 != 0x80:
        return ""
    if 192 <= data[1] <= 223:
        return "rtcp" if is_rtcp(data) else ""
    return "rtp" if rtp_header(data) is not None else ""
