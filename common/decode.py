"""Link-, network- and transport-layer offsets of a captured frame, decoded fast.

``decode_packet(linktype, data)`` reads the headers of one captured frame in place
(``struct.unpack_from`` at offsets; the frame is never sliced or copied) and returns
one flat, slotted :class:`Decoded` with the offsets and the few header fields the
hunter's filters and the L7 parsers (SIP, RTP, DNS, HTTP, TLS) need. No per-layer
objects are built.

What is decoded
    * Link types (the pcap ``LINKTYPE_*`` values, exported below):
      1 Ethernet II, with any number of 802.1Q / 802.1ad / legacy QinQ (0x9100,
      0x9200) tags up to :data:`MAX_VLAN_TAGS`; 113 Linux cooked (SLL); 276 Linux
      cooked v2 (SLL2); 101, 12 and 14 raw IP (the version comes from the first
      nibble); 228 raw IPv4 and 229 raw IPv6; 0 BSD loopback/NULL (4-byte family
      in the capturing host's byte order: whichever order gives a value below
      0x10000 is used); 108 OpenBSD LOOP (family in network order). NULL/LOOP
      families: 2 is IPv4; 10, 24, 28 and 30 are IPv6 (Linux, BSDs, FreeBSD, macOS;
      tshark 4.0 does not take 10 as IPv6 here). Linux cooked frames from netlink
      (ARPHRD 824) are not IP. VLAN tags after an SLL/SLL2 header are walked too.
    * IPv4: header length, total length (Ethernet padding past it is ignored;
      a total length of 0, as written by TSO/GSO offload, means "to the end of the
      capture"), identification, MF flag and fragment offset.
    * IPv6: the fixed header and the extension-header chain hop-by-hop (0), routing
      (43), destination options (60), fragment (44) and AH (51), at most
      :data:`MAX_IPV6_EXT_HEADERS` of them. The walk stops at ESP (50), no next
      header (59) and at every other value, which becomes ``proto``. A payload
      length of 0 (jumbogram or offload) means "to the end of the capture".
    * UDP (ports, length; a length of 0 means "to the IP end", as in jumbograms)
      and TCP (ports, sequence number, flags, data offset). ICMP, ICMPv6 and every
      other transport are reported only as ``proto``.
    * Fragments: ``frag_id``, ``frag_offset`` (in bytes), ``more_fragments``,
      ``is_fragment``. Only the first fragment (offset 0) has its transport header
      read; later fragments report ports 0 and their fragment data as the payload.
      A transport header cut short by fragmentation (not by the snap length) in a
      first fragment is not an error: the ports stay 0. An IPv6 "atomic fragment"
      (offset 0, M clear) is not a fragment and decodes straight through.
      :mod:`lc.common.reasm` puts datagrams back together.

What is ignored
    Tunnels and encapsulations are not followed: IP-in-IP, GRE, VXLAN, MPLS,
    PPPoE and LLC/SNAP frames report the outer layer only (MPLS, PPPoE and
    802.3-length frames have ``ip_version == 0``). Checksums are not verified. IP
    and TCP options are skipped, not parsed. IPv6 jumbograms are not parsed.

Errors and limits
    Malformed or truncated headers raise :class:`~lc.common.errors.ParseError`,
    whose message says which header, at which offset, and what was wrong, e.g.
    ``IPv4 header truncated at offset 14: need 20 bytes, have 7``. Every header the
    decoder reads must be complete; when only the *payload* is cut short by the
    snap length, the frame decodes and ``looks_truncated`` is set. A frame that is
    not IP (ARP, LLDP, an unknown ethertype or loopback family) is not an error: it
    decodes with ``ip_version == 0``. An unsupported link type raises ParseError
    (callers should check :data:`SUPPORTED_LINKTYPES` once per capture handle).

Speed
    Untagged Ethernet + IPv4 without options + UDP/TCP, unfragmented, is read with
    one ``unpack_from`` and no helper calls; everything else takes the general path
    (same results, checked by the tests). For hot paths that need only the 5-tuple,
    :func:`ip_ports` skips building the result object.
"""

from __future__ import annotations

import socket
import struct

from lc.common.errors import ParseError

__all__ = [
    "AF_INET6_VALUES",
    "ETHERTYPE_IPV4",
    "ETHERTYPE_IPV6",
    "IPPROTO_AH",
    "IPPROTO_DSTOPTS",
    "IPPROTO_ESP",
    "IPPROTO_FRAGMENT",
    "IPPROTO_HOPOPTS",
    "IPPROTO_ICMP",
    "IPPROTO_ICMPV6",
    "IPPROTO_NONE",
    "IPPROTO_ROUTING",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_LOOP",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "LINKTYPE_RAW_12",
    "LINKTYPE_RAW_14",
    "MAX_IPV6_EXT_HEADERS",
    "MAX_VLAN_TAGS",
    "SUPPORTED_LINKTYPES",
    "TCP_ACK",
    "TCP_AE",
    "TCP_CWR",
    "TCP_ECE",
    "TCP_FIN",
    "TCP_PSH",
    "TCP_RST",
    "TCP_SYN",
    "TCP_URG",
    "VLAN_TPIDS",
    "Decoded",
    "decode_packet",
    "ip_ports",
]

# --- link types (pcap LINKTYPE_* values) -------------------------------------------
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_12 = 12  # DLT_RAW on most BSDs, seen in old files
LINKTYPE_RAW_14 = 14  # DLT_RAW on OpenBSD, seen in old files
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES: frozenset[int] = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW_12,
        LINKTYPE_RAW_14,
        LINKTYPE_RAW,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
#: Tag protocol identifiers that start a 4-byte VLAN tag: 802.1Q, 802.1ad, and the
#: pre-standard QinQ values.
VLAN_TPIDS: frozenset[int] = frozenset({0x8100, 0x88A8, 0x9100, 0x9200})
MAX_VLAN_TAGS = 8

#: NULL/LOOP address families that mean IPv6 (Linux, NetBSD/OpenBSD, FreeBSD, Darwin).
AF_INET6_VALUES: frozenset[int] = frozenset({10, 24, 28, 30})
_AF_INET = 2
_ARPHRD_NETLINK = 824

# --- IP protocol numbers --------------------------------------------------------------
IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
MAX_IPV6_EXT_HEADERS = 16

# --- TCP flag bits, as in the low 12 bits of the data-offset/flags word -------------------
TCP_FIN = 0x001
TCP_SYN = 0x002
TCP_RST = 0x004
TCP_PSH = 0x008
TCP_ACK = 0x010
TCP_URG = 0x020
TCP_ECE = 0x040
TCP_CWR = 0x080
TCP_AE = 0x100  # formerly NS (RFC 3540), now AccECN (RFC 9768)

_U16 = struct.Struct("!H")
_U32BE = struct.Struct("!I")
_U32LE = struct.Struct("<I")
_VLAN = struct.Struct("!HH")  # TCI, next ethertype
# version/IHL, TOS, total length, id, flags+offset, TTL, protocol, (checksum), src, dst
_IP4 = struct.Struct("!BxHHHxB2x4s4s")
# version/class/flow, payload length, next header, (hop limit), src, dst
_IP6 = struct.Struct("!IHBx16s16s")
_EXT = struct.Struct("!BB")  # next header, length
_FRAG6 = struct.Struct("!BxHI")  # next header, offset+M, identification
_UDP = struct.Struct("!HHH")  # sport, dport, length
_TCP = struct.Struct("!HHI4xH")  # sport, dport, seq, (ack), data offset + flags

# Ethernet type, IPv4 header without options, then sport, dport and the UDP length.
_FAST4 = struct.Struct("!12xHBxHHHxB2x4s4sHHH")
_TCP_SEQ_FLAGS = struct.Struct("!I4xH")  # at TCP header + 4

_IPV6_EXT = frozenset(
    {IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_AH}
)

_new_object = object.__new__
_ntop = socket.inet_ntop
_AF_INET_SOCK = socket.AF_INET
_AF_INET6_SOCK = socket.AF_INET6


def _truncated(what: str, offset: int, need: int, have: int) -> ParseError:
    return ParseError(
        f"{what} truncated at offset {offset}: need {need} bytes, have {max(have, 0)}"
    )


class Decoded:
    """The offsets and header fields of one decoded frame (see the module docstring).

    Offsets index the ``data`` passed to :func:`decode_packet`. Fields:

    ``ip_version``
        4, 6, or 0 for a frame that is not IP (then only ``ethertype``, ``vlans``,
        ``l3_offset`` and the payload fields mean anything).
    ``src``, ``dst``
        Raw address bytes (4 or 16 long; ``b""`` when not IP). ``src_text`` and
        ``dst_text`` format them on request.
    ``proto``
        IPv4 protocol, or for IPv6 the next header after the extension headers
        (for a non-first IPv6 fragment: the fragment header's next header).
    ``l3_offset``, ``l3_end``
        Start of the IP header, and one past the end of the IP datagram as far as it
        was captured (trailing Ethernet padding excluded).
    ``l4_offset``
        Start of the transport header (for a non-first fragment, of its fragment data).
    ``sport``, ``dport``
        UDP/TCP ports, 0 otherwise (and in non-first fragments).
    ``payload_offset``, ``payload_len``
        The transport payload: after TCP options; for UDP the UDP length clamped to
        what was captured; for other protocols (and non-first fragments) everything
        after the last IP header. For non-IP frames, everything after the link header.
    ``tcp_flags``, ``tcp_seq``
        TCP flag bits (``TCP_*``, the low 12 bits of the offset/flags word) and the raw
        sequence number; 0 when not TCP.
    ``vlans``
        VLAN ids, outermost first; usually ``()``.
    ``ethertype``
        The ethertype after the VLAN tags (0x0800/0x86DD also for raw, NULL and LOOP
        link types; 0 when the link header names no known family).
    ``frag_id``, ``frag_offset``, ``more_fragments``, ``is_fragment``, ``frag_data_offset``
        Fragmentation: identification, offset in bytes, MF flag, ``offset > 0 or MF``,
        and where the fragmentable data starts (after the IPv4 header or after the
        IPv6 fragment header; 0 when not a fragment).
    ``looks_truncated``
        The IP header (or UDP length) claims more bytes than were captured.
    """

    __slots__ = (
        "dport",
        "dst",
        "ethertype",
        "frag_data_offset",
        "frag_id",
        "frag_offset",
        "ip_version",
        "is_fragment",
        "l3_end",
        "l3_offset",
        "l4_offset",
        "looks_truncated",
        "more_fragments",
        "payload_len",
        "payload_offset",
        "proto",
        "sport",
        "src",
        "tcp_flags",
        "tcp_seq",
        "vlans",
    )

    ip_version: int
    src: bytes
    dst: bytes
    proto: int
    l3_offset: int
    l3_end: int
    l4_offset: int
    sport: int
    dport: int
    payload_offset: int
    payload_len: int
    tcp_flags: int
    tcp_seq: int
    vlans: tuple[int, ...]
    ethertype: int
    frag_id: int
    frag_offset: int
    more_fragments: bool
    is_fragment: bool
    frag_data_offset: int
    looks_truncated: bool

    def __init__(
        self,
        ip_version: int,
        src: bytes,
        dst: bytes,
        proto: int,
        l3_offset: int,
        l3_end: int,
        l4_offset: int,
        sport: int,
        dport: int,
        payload_offset: int,
        payload_len: int,
        tcp_flags: int,
        tcp_seq: int,
        vlans: tuple[int, ...],
        ethertype: int,
        frag_id: int,
        frag_offset: int,
        more_fragments: bool,
        is_fragment: bool,
        frag_data_offset: int,
        looks_truncated: bool,
    ) -> None:
        self.ip_version = ip_version
        self.src = src
        self.dst = dst
        self.proto = proto
        self.l3_offset = l3_offset
        self.l3_end = l3_end
        self.l4_offset = l4_offset
        self.sport = sport
        self.dport = dport
        self.payload_offset = payload_offset
        self.payload_len = payload_len
        self.tcp_flags = tcp_flags
        self.tcp_seq = tcp_seq
        self.vlans = vlans
        self.ethertype = ethertype
        self.frag_id = frag_id
        self.frag_offset = frag_offset
        self.more_fragments = more_fragments
        self.is_fragment = is_fragment
        self.frag_data_offset = frag_data_offset
        self.looks_truncated = looks_truncated

    @property
    def src_text(self) -> str:
        """The source address as text (``""`` when not IP)."""
        return _addr_text(self.src)

    @property
    def dst_text(self) -> str:
        """The destination address as text (``""`` when not IP)."""
        return _addr_text(self.dst)

    def as_dict(self) -> dict[str, object]:
        """All fields by name (for logs and tests)."""
        return {name: getattr(self, name) for name in _FIELD_ORDER}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"Decoded({inner})"


_FIELD_ORDER = (
    "ip_version",
    "src",
    "dst",
    "proto",
    "l3_offset",
    "l3_end",
    "l4_offset",
    "sport",
    "dport",
    "payload_offset",
    "payload_len",
    "tcp_flags",
    "tcp_seq",
    "vlans",
    "ethertype",
    "frag_id",
    "frag_offset",
    "more_fragments",
    "is_fragment",
    "frag_data_offset",
    "looks_truncated",
)


def _addr_text(addr: bytes) -> str:
    if len(addr) == 4:
        return _ntop(_AF_INET_SOCK, addr)
    if len(addr) == 16:
        return _ntop(_AF_INET6_SOCK, addr)
    return ""


def _vlan_walk(data: bytes, off: int, etype: int, n: int) -> tuple[int, int, tuple[int, ...]]:
    """Reads VLAN tags starting at ``off`` (the TCI after a TPID). Returns
    (next offset, inner ethertype, VLAN ids)."""
    if off + 4 <= n:  # the usual case: one tag
        tci, inner = _VLAN.unpack_from(data, off)
        if inner not in VLAN_TPIDS:
            return off + 4, inner, (tci & 0x0FFF,)
    vids: list[int] = []
    while etype in VLAN_TPIDS:
        if len(vids) == MAX_VLAN_TAGS:
            raise ParseError(f"more than {MAX_VLAN_TAGS} VLAN tags at offset {off}")
        if off + 4 > n:
            raise _truncated("VLAN tag", off, 4, n - off)
        tci, etype = _VLAN.unpack_from(data, off)
        vids.append(tci & 0x0FFF)
        off += 4
    return off, etype, tuple(vids)


def _link(linktype: int, data: bytes, n: int) -> tuple[int, int, tuple[int, ...]]:
    """Link-layer header: returns (L3 offset, ethertype, VLAN ids).

    The ethertype is 0x0800/0x86DD when the link header says IP, another value (or 0)
    otherwise."""
    if linktype == LINKTYPE_ETHERNET:
        if n < 14:
            raise _truncated("Ethernet header", 0, 14, n)
        etype = _U16.unpack_from(data, 12)[0]
        if etype in VLAN_TPIDS:
            return _vlan_walk(data, 14, etype, n)
        return 14, etype, ()
    if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_12, LINKTYPE_RAW_14):
        if n < 1:
            raise _truncated("raw IP header", 0, 1, n)
        version = data[0] >> 4
        if version == 4:
            return 0, ETHERTYPE_IPV4, ()
        if version == 6:
            return 0, ETHERTYPE_IPV6, ()
        raise ParseError(f"raw IP packet at offset 0 has IP version {version}, not 4 or 6")
    if linktype == LINKTYPE_LINUX_SLL:
        if n < 16:
            raise _truncated("Linux SLL header", 0, 16, n)
        if _U16.unpack_from(data, 2)[0] == _ARPHRD_NETLINK:
            return 16, 0, ()
        etype = _U16.unpack_from(data, 14)[0]
        if etype in VLAN_TPIDS:
            return _vlan_walk(data, 16, etype, n)
        return 16, etype, ()
    if linktype == LINKTYPE_LINUX_SLL2:
        if n < 20:
            raise _truncated("Linux SLL2 header", 0, 20, n)
        if _U16.unpack_from(data, 8)[0] == _ARPHRD_NETLINK:
            return 20, 0, ()
        etype = _U16.unpack_from(data, 0)[0]
        if etype in VLAN_TPIDS:
            return _vlan_walk(data, 20, etype, n)
        return 20, etype, ()
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if n < 4:
            name = "NULL" if linktype == LINKTYPE_NULL else "LOOP"
            raise _truncated(f"{name} loopback header", 0, 4, n)
        if linktype == LINKTYPE_LOOP:
            family = _U32BE.unpack_from(data, 0)[0]
        else:
            family = _U32LE.unpack_from(data, 0)[0]
            if family > 0xFFFF:
                family = _U32BE.unpack_from(data, 0)[0]
        if family == _AF_INET:
            return 4, ETHERTYPE_IPV4, ()
        if family in AF_INET6_VALUES:
            return 4, ETHERTYPE_IPV6, ()
        return 4, 0, ()
    if linktype == LINKTYPE_IPV4:
        return 0, ETHERTYPE_IPV4, ()
    if linktype == LINKTYPE_IPV6:
        return 0, ETHERTYPE_IPV6, ()
    raise ParseError(f"unsupported link type {linktype}")


def _ipv6_walk(data: bytes, off: int, end: int, nh: int) -> tuple[int, int, int, int, bool, int]:
    """Walks IPv6 extension headers from ``off`` (just after the fixed header) up to
    ``end``. Returns (transport offset, protocol, frag id, frag offset, MF, frag data
    offset); a non-first fragment stops the walk right after its fragment header."""
    frag_id = frag_off = frag_data = 0
    more = False
    count = 0
    while nh in _IPV6_EXT:
        count += 1
        if count > MAX_IPV6_EXT_HEADERS:
            raise ParseError(
                f"more than {MAX_IPV6_EXT_HEADERS} IPv6 extension headers at offset {off}"
            )
        if nh == IPPROTO_FRAGMENT:
            if off + 8 > end:
                raise _truncated("IPv6 fragment header", off, 8, end - off)
            if frag_data:
                raise ParseError(f"second IPv6 fragment header at offset {off}")
            nh, offmf, frag_id = _FRAG6.unpack_from(data, off)
            frag_off = offmf & 0xFFF8
            more = bool(offmf & 1)
            off += 8
            frag_data = off
            if frag_off:
                break
            continue
        if off + 2 > end:
            raise _truncated(f"IPv6 extension header {nh}", off, 2, end - off)
        nxt, hlen = _EXT.unpack_from(data, off)
        hlen = (hlen + 2) << 2 if nh == IPPROTO_AH else (hlen + 1) << 3
        if off + hlen > end:
            if frag_data and more:
                # A header cut by fragmentation in a first fragment: stop here.
                return off, nh, frag_id, frag_off, more, frag_data
            raise _truncated(f"IPv6 extension header {nh}", off, hlen, end - off)
        nh = nxt
        off += hlen
    return off, nh, frag_id, frag_off, more, frag_data


def decode_packet(linktype: int, data: bytes | bytearray | memoryview) -> Decoded:
    """Decodes the link, IP and UDP/TCP headers of one captured frame.

    ``linktype`` is the capture's pcap link type (``LINKTYPE_*``), ``data`` the
    captured bytes. Raises :class:`ParseError` for malformed or truncated headers and
    for unsupported link types; returns ``ip_version == 0`` for non-IP frames.
    """
    n = len(data)
    if linktype == LINKTYPE_ETHERNET and n >= 42:
        # Fast path: untagged Ethernet, IPv4 without options, not fragmented, UDP/TCP.
        # Anything else (or anything odd) falls through to the general path below.
        etype, vhl, total, frag_id, flags, proto, src, dst, sport, dport, ulen = _FAST4.unpack_from(
            data, 0
        )
        if etype == ETHERTYPE_IPV4 and vhl == 0x45 and not flags & 0x3FFF and total >= 28:
            end = 14 + total
            truncated = end > n
            if truncated:
                end = n
            payload = 0
            if proto == IPPROTO_UDP and ulen >= 8:
                payload = 42
                pend = 34 + ulen
                if pend > end:
                    pend = end
                    truncated = True
                flags = seq = 0
            elif proto == IPPROTO_TCP and end >= 54:
                seq, flags = _TCP_SEQ_FLAGS.unpack_from(data, 38)
                payload = 34 + ((flags >> 12) << 2)
                pend = end
                flags &= 0x0FFF
                if not 54 <= payload <= end:
                    payload = 0  # odd data offset: let the general path report it
            if payload:
                # Attribute stores instead of Decoded(...): skips the __init__ call,
                # which is a fifth of the time per packet on this path.
                d = _new_object(Decoded)
                d.ip_version = 4
                d.src = src
                d.dst = dst
                d.proto = proto
                d.l3_offset = 14
                d.l3_end = end
                d.l4_offset = 34
                d.sport = sport
                d.dport = dport
                d.payload_offset = payload
                d.payload_len = pend - payload
                d.tcp_flags = flags
                d.tcp_seq = seq
                d.vlans = ()
                d.ethertype = ETHERTYPE_IPV4
                d.frag_id = frag_id
                d.frag_offset = 0
                d.more_fragments = False
                d.is_fragment = False
                d.frag_data_offset = 0
                d.looks_truncated = truncated
                return d
    if linktype == LINKTYPE_ETHERNET and n >= 14:
        off = 14
        etype = _U16.unpack_from(data, 12)[0]
        vlans: tuple[int, ...] = ()
        if etype in VLAN_TPIDS:
            off, etype, vlans = _vlan_walk(data, 14, etype, n)
    else:
        off, etype, vlans = _link(linktype, data, n)

    truncated = False
    frag_id = frag_off = frag_data = 0
    more = False
    if etype == ETHERTYPE_IPV4:
        if off + 20 > n:
            raise _truncated("IPv4 header", off, 20, n - off)
        vhl, total, frag_id, flags, proto, src, dst = _IP4.unpack_from(data, off)
        if vhl >> 4 != 4:
            raise ParseError(f"IPv4 header at offset {off} has version {vhl >> 4}")
        ihl = (vhl & 0x0F) << 2
        if ihl < 20:
            raise ParseError(f"IPv4 header at offset {off} has header length {ihl} < 20")
        l4 = off + ihl
        if l4 > n:
            raise _truncated("IPv4 header with options", off, ihl, n - off)
        if total == 0:
            end = n
        elif total < ihl:
            raise ParseError(
                f"IPv4 header at offset {off} has total length {total} < header length {ihl}"
            )
        else:
            end = off + total
            if end > n:
                end = n
                truncated = True
        more = (flags & 0x2000) != 0
        frag_off = (flags & 0x1FFF) << 3
        if more or frag_off:
            frag_data = l4
        version = 4
    elif etype == ETHERTYPE_IPV6:
        if off + 40 > n:
            raise _truncated("IPv6 header", off, 40, n - off)
        vtf, plen, proto, src, dst = _IP6.unpack_from(data, off)
        if vtf >> 28 != 6:
            raise ParseError(f"IPv6 header at offset {off} has version {vtf >> 28}")
        l4 = off + 40
        if plen == 0:
            end = n
        else:
            end = l4 + plen
            if end > n:
                end = n
                truncated = True
        if proto in _IPV6_EXT:
            l4, proto, frag_id, frag_off, more, frag_data = _ipv6_walk(data, l4, end, proto)
        version = 6
    else:
        return Decoded(
            0, b"", b"", 0, off, n, off, 0, 0, off, n - off, 0, 0, vlans, etype,
            0, 0, False, False, 0, False,
        )  # fmt: skip

    is_frag = more or frag_off != 0
    sport = dport = flags = seq = 0
    payload = l4
    pend = end
    if frag_off == 0:
        if proto == IPPROTO_UDP:
            if l4 + 8 <= end:
                sport, dport, ulen = _UDP.unpack_from(data, l4)
                payload = l4 + 8
                if ulen >= 8:
                    if l4 + ulen < end:
                        pend = l4 + ulen
                    elif l4 + ulen > end and not is_frag:
                        truncated = True
                elif ulen != 0:  # 0: jumbogram / offload, runs to the IP end
                    raise ParseError(f"UDP header at offset {l4} has length {ulen} < 8")
            elif not is_frag:
                raise _truncated("UDP header", l4, 8, end - l4)
        elif proto == IPPROTO_TCP:
            if l4 + 20 <= end:
                sport, dport, seq, flags = _TCP.unpack_from(data, l4)
                doff = (flags >> 12) << 2
                if doff < 20:
                    raise ParseError(f"TCP header at offset {l4} has data offset {doff} < 20")
                payload = l4 + doff
                if payload > end:
                    if not is_frag:
                        raise _truncated("TCP header with options", l4, doff, end - l4)
                    payload = end
                flags &= 0x0FFF
            elif not is_frag:
                raise _truncated("TCP header", l4, 20, end - l4)
            else:
                flags = 0
    d = _new_object(Decoded)  # as in the fast path: stores, not an __init__ call
    d.ip_version = version
    d.src = src
    d.dst = dst
    d.proto = proto
    d.l3_offset = off
    d.l3_end = end
    d.l4_offset = l4
    d.sport = sport
    d.dport = dport
    d.payload_offset = payload
    d.payload_len = pend - payload
    d.tcp_flags = flags
    d.tcp_seq = seq
    d.vlans = vlans
    d.ethertype = etype
    d.frag_id = frag_id
    d.frag_offset = frag_off
    d.more_fragments = more
    d.is_fragment = is_frag
    d.frag_data_offset = frag_data
    d.looks_truncated = truncated
    return d


def ip_ports(
    linktype: int, data: bytes | bytearray | memoryview
) -> tuple[bytes, bytes, int, int, int] | None:
    """``(src, dst, proto, sport, dport)`` of an IP frame, or None when it is not IP.

    The same rules and errors as :func:`decode_packet` (ports are 0 for non-UDP/TCP
    and for non-first fragments), without building a :class:`Decoded`.
    """
    n = len(data)
    if linktype == LINKTYPE_ETHERNET and n >= 42:
        # The same fast path as decode_packet's, for UDP.
        etype, vhl, total, _, flags, proto, src, dst, sport, dport, ulen = _FAST4.unpack_from(
            data, 0
        )
        if (
            etype == ETHERTYPE_IPV4
            and vhl == 0x45
            and not flags & 0x3FFF
            and total >= 28
            and proto == IPPROTO_UDP
            and ulen >= 8
        ):
            return src, dst, proto, sport, dport
    if linktype == LINKTYPE_ETHERNET and n >= 14:
        off = 14
        etype = _U16.unpack_from(data, 12)[0]
        if etype in VLAN_TPIDS:
            off, etype, _ = _vlan_walk(data, 14, etype, n)
    else:
        off, etype, _ = _link(linktype, data, n)
    if etype == ETHERTYPE_IPV4:
        if off + 20 > n:
            raise _truncated("IPv4 header", off, 20, n - off)
        vhl, total, _, flags, proto, src, dst = _IP4.unpack_from(data, off)
        if vhl >> 4 != 4:
            raise ParseError(f"IPv4 header at offset {off} has version {vhl >> 4}")
        ihl = (vhl & 0x0F) << 2
        if ihl < 20:
            raise ParseError(f"IPv4 header at offset {off} has header length {ihl} < 20")
        l4 = off + ihl
        if l4 > n:
            raise _truncated("IPv4 header with options", off, ihl, n - off)
        if total == 0:
            end = n
        elif total < ihl:
            raise ParseError(
                f"IPv4 header at offset {off} has total length {total} < header length {ihl}"
            )
        else:
            end = off + total
            if end > n:
                end = n
        if flags & 0x1FFF:
            return src, dst, proto, 0, 0
        is_frag = (flags & 0x2000) != 0
    elif etype == ETHERTYPE_IPV6:
        if off + 40 > n:
            raise _truncated("IPv6 header", off, 40, n - off)
        vtf, plen, proto, src, dst = _IP6.unpack_from(data, off)
        if vtf >> 28 != 6:
            raise ParseError(f"IPv6 header at offset {off} has version {vtf >> 28}")
        l4 = off + 40
        end = n if plen == 0 else min(l4 + plen, n)
        is_frag = False
        if proto in _IPV6_EXT:
            l4, proto, _, frag_off, more, _ = _ipv6_walk(data, l4, end, proto)
            if frag_off:
                return src, dst, proto, 0, 0
            is_frag = more
    else:
        return None
    if proto == IPPROTO_UDP:
        if l4 + 8 <= end:
            sport, dport, ulen = _UDP.unpack_from(data, l4)
            if 0 < ulen < 8:
                raise ParseError(f"UDP header at offset {l4} has length {ulen} < 8")
            return src, dst, proto, sport, dport
        if not is_frag:
            raise _truncated("UDP header", l4, 8, end - l4)
    elif proto == IPPROTO_TCP:
        if l4 + 20 <= end:
            sport, dport, _, flags = _TCP.unpack_from(data, l4)
            doff = (flags >> 12) << 2
            if doff < 20:
                raise ParseError(f"TCP header at offset {l4} has data offset {doff} < 20")
            if l4 + doff > end and not is_frag:
                raise _truncated("TCP header with options", l4, doff, end - l4)
            return src, dst, proto, sport, dport
        if not is_frag:
            raise _truncated("TCP header", l4, 20, end - l4)
    return src, dst, proto, 0, 0
