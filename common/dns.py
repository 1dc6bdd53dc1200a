"""DNS messages (RFC 1035), parsed sans-IO: one UDP datagram, or framed out of a TCP stream.

This module does no I/O. :func:`parse_dns` turns the bytes of one message into a
:class:`DnsMessage`; :class:`DnsTcpFramer` cuts one direction of a DNS-over-TCP byte
stream into messages (RFC 1035 4.2.2, RFC 7766); :func:`transaction_key` names the
query/response pair a message belongs to. The hunter's DNS mode uses them; the
tunneling statistics live in :mod:`lc.common.dnstunnel`.

What is parsed
    * The header: id, QR, opcode, AA, TC, RD, RA, Z, AD, CD, rcode and the four
      counts (RFC 1035 4.1.1, RFC 4035 3.2). Flags other than QR, opcode and rcode
      are properties over ``flags``, the raw 16-bit word.
    * Every section: questions (name, type, class) and the answer, authority and
      additional records (name, type, class, TTL, rdata). The counts are taken as
      the header gives them, but nothing is allocated from a count: a count larger
      than the data is simply a truncated message.
    * Record data decoded for A, AAAA (text, as ``socket.inet_ntop`` writes it),
      NS, CNAME, PTR (a name), MX ``(preference, exchange)``, SRV ``(priority,
      weight, port, target)``, TXT (a tuple of the character-strings as ``bytes``)
      and SOA ``(mname, rname, serial, refresh, retry, expire, minimum)``. Every
      other type keeps its rdata as raw ``bytes`` (RFC 3597), including names
      that RFC 3597 forbids compressing in them (DNAME, SVCB/HTTPS...).
    * EDNS(0) (RFC 6891): the OPT record stays in the additional section where it
      was sent (raw rdata; class = UDP payload size, TTL = extended rcode, version
      and flags), so each section holds as many records as its count says, and is
      also read into :attr:`DnsMessage.edns` (UDP payload size, extended rcode,
      version, DO bit, options as ``(code, bytes)``); :attr:`DnsMessage.full_rcode`
      combines the extended rcode with the header's. A second OPT, or one whose
      owner is not the root, is a defect and is not read.
    * A, AAAA and SRV rdata are decoded in class IN only (mDNS's cache-flush bit
      aside); in another class (CHAOS...) their rdata stays raw.

Names: how they are written
    A name is text: its labels joined with ``.``, without the final dot, the case
    kept as sent; the root is ``"."``. Every label byte is kept faithfully, in the
    presentation format of RFC 1035 5.1 as dig and dnspython write it: bytes
    0x21..0x7E stand for themselves, except ``" ( ) . ; \\ @ $``, which get a
    backslash before them, and every other byte (space, control bytes, the 8-bit
    bytes iodine sends) is written ``\\DDD``, its value in three decimal digits. So
    ``z0p\\195\\164`` is the label ``z0p`` + bytes 0xC3 0xA4, and ``a\\.b.c`` is two
    labels, ``a.b`` and ``c``. The text is always ASCII, so it goes to protobuf, JSON
    and logs as it is, equals dnspython's ``Name.to_text(omit_final_dot=True)``
    (checked by the tests), and :func:`name_labels` turns it back into the exact
    label bytes. Nothing is lower-cased here (DNS compares names without regard to
    ASCII case, RFC 4343: compare ``name.lower()``).

Name compression and its guards (RFC 1035 4.1.4)
    A compression pointer must point strictly before the name being read *and*
    before every pointer already followed for it (dnspython's rule), so a chain of
    pointers always moves backwards: loops and forward pointers are refused. A
    name may follow at most :data:`MAX_POINTER_HOPS` pointers; a label is at most 63
    bytes (the label types 0x40 and 0x80 of RFC 6891/2673 are refused); a whole
    name at most 255 bytes in wire form. Names decoded once in a message are
    remembered by offset, so the usual pointers to an earlier name cost one dict
    look-up, and the work per message stays linear in its size whatever the
    pointers do.

Errors and defects
    :class:`DnsError` (a :class:`~lc.common.errors.ParseError`) is the only
    exception :func:`parse_dns` raises, whatever the input; its text says what and
    at which offset. The header and the question section must be complete and
    valid, or it is raised: without them a message cannot be paired or filtered.
    A fault in a record section (truncation, a bad pointer, rdata that does not fit
    its type or its length) does not raise: parsing stops at that record, the
    records before it are kept, and the fault is described in
    :attr:`DnsMessage.defects` (empty for a valid message). Bytes after the last
    record are a defect too (``trailing bytes``); a UDP message cut by a snap
    length or IP fragment loss therefore still gives its header and question.

DNS over TCP
    :class:`DnsTcpFramer` takes the bytes of one direction in any chunking (several
    messages in one segment, one message across many) and returns every complete
    message with its stream offsets. It holds at most one message (64 KiB + 2),
    so it is bounded by construction. A zero-length message is skipped and counted
    (``empty``). After a hole in the stream (``TcpReassembler`` skipped a gap)
    the message boundaries are unknown: :meth:`DnsTcpFramer.gap` drops what is held
    and every later byte of that direction is dropped and counted
    (``desync_bytes``) until :meth:`DnsTcpFramer.reset` (a new connection). DNS
    connections are short, so nothing tries to guess a boundary. With
    :class:`~lc.common.tcpstream.TcpReassembler`: feed each delivered chunk, call
    ``gap()`` when ``Delivery.gap`` is set, and ``reset()`` when a chunk starts at
    offset 0 again (a new stream on the same key) or the stream closed.

Speed
    The hot path is ``struct.unpack_from`` at offsets, a dict of names already read
    in the message, plain tuples behind small ``NamedTuple`` records, no regex, and
    two fast paths for names (labels up to the root; a pointer to a name already
    read). ``bench/dns_parse_bench.py`` parses the 1,029 DNS messages of the corpus:
    about 5 us per message for everything (3 us for header and question only),
    against 60 to 110 us for dnspython, on the development VM (2 vCPU shared
    with other jobs, so the figures move by a factor of two; run it for yours).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Hashable
from typing import NamedTuple

from lc.common.errors import ParseError

__all__ = [
    "CLASS_IN",
    "FRAMER_COUNTERS",
    "MAX_NAME_WIRE_LENGTH",
    "MAX_POINTER_HOPS",
    "OPCODE_NAMES",
    "RCODE_NAMES",
    "TYPE_A",
    "TYPE_AAAA",
    "TYPE_ANY",
    "TYPE_CNAME",
    "TYPE_MX",
    "TYPE_NAMES",
    "TYPE_NS",
    "TYPE_NULL",
    "TYPE_OPT",
    "TYPE_PTR",
    "TYPE_SOA",
    "TYPE_SRV",
    "TYPE_TXT",
    "DnsError",
    "DnsMessage",
    "DnsQuestion",
    "DnsRecord",
    "DnsTcpFramer",
    "Edns",
    "TransactionKey",
    "answers_have_type",
    "cname_chain",
    "cname_targets",
    "name_labels",
    "name_text",
    "opcode_name",
    "parse_dns",
    "rcode_name",
    "transaction_key",
    "type_name",
]

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_NULL = 10
TYPE_PTR = 12
TYPE_MX = 15
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1

#: Mnemonics of the record types lc names in its output; any other is ``TYPE<n>``
#: (RFC 3597 section 5).
TYPE_NAMES: dict[int, str] = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    10: "NULL",
    12: "PTR",
    13: "HINFO",
    15: "MX",
    16: "TXT",
    17: "RP",
    18: "AFSDB",
    24: "SIG",
    25: "KEY",
    28: "AAAA",
    29: "LOC",
    33: "SRV",
    35: "NAPTR",
    36: "KX",
    37: "CERT",
    39: "DNAME",
    41: "OPT",
    42: "APL",
    43: "DS",
    44: "SSHFP",
    45: "IPSECKEY",
    46: "RRSIG",
    47: "NSEC",
    48: "DNSKEY",
    49: "DHCID",
    50: "NSEC3",
    51: "NSEC3PARAM",
    52: "TLSA",
    53: "SMIMEA",
    55: "HIP",
    59: "CDS",
    60: "CDNSKEY",
    61: "OPENPGPKEY",
    62: "CSYNC",
    63: "ZONEMD",
    64: "SVCB",
    65: "HTTPS",
    99: "SPF",
    108: "EUI48",
    109: "EUI64",
    249: "TKEY",
    250: "TSIG",
    251: "IXFR",
    252: "AXFR",
    253: "MAILB",
    254: "MAILA",
    255: "ANY",
    256: "URI",
    257: "CAA",
}
#: RFC 1035 4.1.1, RFC 2136, RFC 6891 (extended rcodes need the OPT record).
RCODE_NAMES: dict[int, str] = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    6: "YXDOMAIN",
    7: "YXRRSET",
    8: "NXRRSET",
    9: "NOTAUTH",
    10: "NOTZONE",
    11: "DSOTYPENI",
    16: "BADVERS",
    17: "BADKEY",
    18: "BADTIME",
    19: "BADMODE",
    20: "BADNAME",
    21: "BADALG",
    22: "BADTRUNC",
    23: "BADCOOKIE",
}
OPCODE_NAMES: dict[int, str] = {
    0: "QUERY",
    1: "IQUERY",
    2: "STATUS",
    4: "NOTIFY",
    5: "UPDATE",
    6: "DSO",
}

#: Largest name in wire form, length bytes and the root byte included (RFC 1035 3.1).
MAX_NAME_WIRE_LENGTH = 255
#: Compression pointers one name may follow. Compressors point at an earlier name,
#: which may itself end in a pointer: real chains are 1 to 3 long.
MAX_POINTER_HOPS = 32

FRAMER_COUNTERS = ("messages", "bytes", "empty", "gaps", "desync_bytes")

_HEADER = struct.Struct("!6H")
_U16 = struct.Struct("!H")
_QTAIL = struct.Struct("!HH")
_RR = struct.Struct("!HHIH")
_MX = _U16
_SRV = struct.Struct("!3H")
_SOA = struct.Struct("!5I")

# Label bytes that are written as themselves: 0x21..0x7E except the specials that
# RFC 1035 5.1 / dnspython escape with a backslash. _PLAIN_MAP maps them (and ".",
# for the fast check in _text; a "." inside a label is caught by counting the dots)
# to "a" and every other byte to NUL, so "all plain" is translate(...).isalpha().
_SPECIAL = b'"().;\\@$'
_PLAIN_MAP = bytes(
    0x61 if (0x20 < c < 0x7F and c not in _SPECIAL) or c == 0x2E else 0 for c in range(256)
)
_ESCAPE = [
    chr(c)
    if 0x20 < c < 0x7F and c not in _SPECIAL
    else ("\\" + chr(c) if c in _SPECIAL else f"\\{c:03d}")
    for c in range(256)
]
_AF_INET6 = socket.AF_INET6
_ntoa = socket.inet_ntoa
_ntop = socket.inet_ntop


class DnsError(ParseError):
    """Bytes that are not a DNS message; the text says what and at which offset."""


class DnsQuestion(NamedTuple):
    """One entry of the question section."""

    name: str
    qtype: int
    qclass: int


class DnsRecord(NamedTuple):
    """One resource record. ``rdata`` is decoded for the types listed in the module
    docstring and raw ``bytes`` for every other type."""

    name: str
    rtype: int
    rclass: int
    ttl: int
    rdata: object


class Edns(NamedTuple):
    """The OPT pseudo-record of EDNS(0) (RFC 6891 6.1)."""

    udp_size: int
    extended_rcode: int
    version: int
    flags: int
    options: tuple[tuple[int, bytes], ...]

    @property
    def do(self) -> bool:
        """DNSSEC OK (RFC 3225)."""
        return bool(self.flags & 0x8000)


_new_q = DnsQuestion._make
_tuple_new = tuple.__new__


def _text(labels: list[bytes]) -> str:
    raw = b".".join(labels)
    if raw.translate(_PLAIN_MAP).isalpha() and raw.count(46) == len(labels) - 1:
        return raw.decode("ascii")
    return _escaped(labels)


def _escaped(labels: list[bytes]) -> str:
    esc = _ESCAPE
    return ".".join("".join([esc[c] for c in label]) for label in labels)


def name_text(labels: list[bytes] | tuple[bytes, ...]) -> str:
    """The text of a name given as its labels (see the module docstring)."""
    return _text(list(labels)) if labels else "."


def name_labels(name: str) -> tuple[bytes, ...]:
    """The exact label bytes of a name written as :func:`parse_dns` writes it.

    The inverse of :func:`name_text`: ``\\DDD`` and ``\\c`` escapes are undone and
    unescaped dots separate labels; a final dot is dropped. ``"."`` and ``""`` are
    the root, ``()``. Characters beyond ASCII (which :func:`parse_dns` never
    writes, but a user may type) stand for their UTF-8 bytes, without IDNA.
    Raises :class:`DnsError` for a dangling backslash, a ``\\DDD`` over 255, or a
    lone surrogate.
    """
    if name in (".", ""):
        return ()
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise DnsError(f"name {name[:80]!r} is not text that can be bytes") from None
    if b"\\" not in raw:
        if raw.endswith(b"."):
            raw = raw[:-1]
        return tuple(raw.split(b"."))
    labels: list[bytes] = []
    cur = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x5C:  # backslash
            digits = raw[i + 1 : i + 4]
            if len(digits) == 3 and digits.isdigit():
                value = int(digits)
                if value > 255:
                    raise DnsError(f"name {name[:80]!r}: \\{value} is not a byte")
                cur.append(value)
                i += 4
                continue
            if i + 1 >= n:
                raise DnsError(f"name {name[:80]!r} ends in a backslash")
            cur.append(raw[i + 1])
            i += 2
            continue
        if c == 0x2E:  # dot
            labels.append(bytes(cur))
            cur = bytearray()
        else:
            cur.append(c)
        i += 1
    if cur:
        labels.append(bytes(cur))
    return tuple(labels)


def _name(data: bytes, off: int, n: int, cache: dict[int, tuple[str, int]]) -> tuple[str, int]:
    """Reads the name at ``off``; returns its text and the offset after it in place.

    ``n`` bounds the bytes the name may occupy in place (the message end, or the end
    of the rdata holding it). ``cache`` maps the offset of every name already read
    in this message to ``(text, wire length)``. The fast path takes
    the two usual shapes, labels up to the root byte, and labels ending in a
    pointer to a name already read; everything else goes to :func:`_name_slow`.
    """
    start = off
    labels: list[bytes] = []
    try:
        c = data[off]
        if c >= 0xC0 and off + 1 < n:
            # Only a pointer (most owner names): to a name already read, it is that name.
            ptr = ((c & 0x3F) << 8) | data[off + 1]
            hit = cache.get(ptr)
            if hit is not None and ptr < off:
                return hit[0], off + 2
        while 0 < c < 64:
            e = off + 1 + c
            labels.append(data[off + 1 : e])
            off = e
            c = data[off]
    except IndexError:
        raise DnsError(f"name at offset {start} runs past the end ({n} bytes)") from None
    if c == 0 and off < n:
        end = off + 1
        wire = end - start
        if wire > MAX_NAME_WIRE_LENGTH:
            raise DnsError(f"name at offset {start} is longer than 255 bytes")
        if not labels:
            text = "."
        else:
            raw = b".".join(labels)
            if raw.translate(_PLAIN_MAP).isalpha() and raw.count(46) == len(labels) - 1:
                text = raw.decode("ascii")
            else:
                text = _escaped(labels)
    elif c >= 0xC0 and off + 1 < n:
        ptr = ((c & 0x3F) << 8) | data[off + 1]
        suffix = cache.get(ptr)
        if suffix is None or ptr >= start:
            return _name_slow(data, start, n, cache)
        end = off + 2
        wire = off - start + suffix[1]
        if wire > MAX_NAME_WIRE_LENGTH:
            raise DnsError(f"name at offset {start} is longer than 255 bytes")
        if not labels:
            text = suffix[0]
        else:
            text = _text(labels)
            if suffix[1] > 1:
                text = text + "." + suffix[0]
    else:
        return _name_slow(data, start, n, cache)
    cache[start] = (text, wire)
    return text, end


def _name_slow(data: bytes, off: int, n: int, cache: dict[int, tuple[str, int]]) -> tuple[str, int]:
    """:func:`_name` for every shape, with every guard checked as it goes.

    Besides the name itself, the name at the first pointer's target is remembered,
    so that a chain of pointers is walked once per message, not once per record.
    """
    start = off
    labels: list[bytes] = []
    wire = 1
    limit = off
    end = -1
    hops = 0
    suffix = None
    first_ptr = -1
    first_k = 0
    first_wire = 0
    while True:
        if off >= n:
            raise DnsError(f"name at offset {start} runs past the end ({n} bytes)")
        c = data[off]
        if c == 0:
            if end < 0:
                end = off + 1
            break
        if c < 64:
            e = off + 1 + c
            if e > n:
                raise DnsError(f"name at offset {start}: label at {off} runs past the end")
            wire += c + 1
            if wire > MAX_NAME_WIRE_LENGTH:
                raise DnsError(f"name at offset {start} is longer than 255 bytes")
            labels.append(data[off + 1 : e])
            off = e
        elif c >= 0xC0:
            if off + 1 >= n:
                raise DnsError(f"name at offset {start}: pointer at {off} runs past the end")
            ptr = ((c & 0x3F) << 8) | data[off + 1]
            if end < 0:
                end = off + 2
                first_ptr, first_k, first_wire = ptr, len(labels), wire - 1
            if ptr >= limit:
                raise DnsError(
                    f"name at offset {start}: pointer at {off} to {ptr} does not point backwards"
                )
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise DnsError(
                    f"name at offset {start} follows more than {MAX_POINTER_HOPS} pointers"
                )
            suffix = cache.get(ptr)
            if suffix is not None:
                wire += suffix[1] - 1
                if wire > MAX_NAME_WIRE_LENGTH:
                    raise DnsError(f"name at offset {start} is longer than 255 bytes")
                break
            limit = ptr
            off = ptr
        else:
            raise DnsError(f"name at offset {start}: label type 0x{c & 0xC0:02x} at {off}")
    text = _join(labels, suffix)
    cache[start] = (text, wire)
    if first_ptr >= 0 and first_ptr not in cache:
        cache[first_ptr] = (_join(labels[first_k:], suffix), wire - first_wire)
    return text, end


def _join(labels: list[bytes], suffix: tuple[str, int] | None) -> str:
    """The text of ``labels`` followed by a name already read (or the root)."""
    if labels:
        text = _text(labels)
        if suffix is not None and suffix[1] > 1:
            text = text + "." + suffix[0]
        return text
    return "." if suffix is None else suffix[0]


# --- rdata decoders: (data, off, rend, n, cache) -> value; raise DnsError ------------------


def _rd_a(data: bytes, off: int, rend: int, n: int, cache: dict) -> object:
    if rend - off != 4:
        raise DnsError(f"A rdata at offset {off} has {rend - off} bytes, not 4")
    return _ntoa(data[off:rend])


def _rd_aaaa(data: bytes, off: int, rend: int, n: int, cache: dict) -> object:
    if rend - off != 16:
        raise DnsError(f"AAAA rdata at offset {off} has {rend - off} bytes, not 16")
    return _ntop(_AF_INET6, data[off:rend])


def _rd_name(data: bytes, off: int, rend: int, n: int, cache: dict) -> object:
    text, end = _name(data, off, rend, cache)
    if end != rend:
        raise DnsError(f"name rdata at offset {off} leaves {rend - end} bytes")
    return text


def _rd_mx(data: bytes, off: int, rend: int, n: int, cache: dict) -> object:
    if rend - off < 3:
        raise DnsError(f"MX rdata at offset {off} has {rend - off} bytes")
    text, end = _name(data, off + 2, rend, cache)
    if end != rend:
        raise DnsError(f"MX rdata at offset {off} leaves {rend - end} bytes")
    return (_MX.unpack_from(data, off)[0], text)


def _rd_srv(data: bytes, off: int, rend: int, n: int, cache: dict) -> object:
    if rend - off < 7:
        raise DnsError(f"SRV rdata at offset {off} has {rend - off} bytes")
    text, end = _name(data, off + 6, rend, cache)
    if end != rend:
        raise DnsError(f"SRV rdata at offset {off} leaves {rend - end} bytes")
    return (*_SRV.unpack_from(data, off), text)


def _rd_txt(data: bytes, off: int, rend: int, n: int, cache: dict) -> object:
    out = []
    while off < rend:
        e = off + 1 + data[off]
        if e > rend:
            raise DnsError(f"TXT string at offset {off} runs past its rdata")
        out.append(data[off + 1 : e])
        off = e
    return tuple(out)


def _rd_soa(data: bytes, off: int, rend: int, n: int, cache: dict) -> object:
    mname, o = _name(data, off, rend, cache)
    rname, o = _name(data, o, rend, cache)
    if rend - o != 20:
        raise DnsError(f"SOA rdata at offset {off}: {rend - o} bytes after the names, not 20")
    return (mname, rname, *_SOA.unpack_from(data, o))


# Types whose rdata format belongs to class IN (RFC 1035 3.4, RFC 3596, RFC 2782); in
# another class (CHAOS A holds a name) they stay raw. mDNS sets the top bit of the
# class (cache flush), so 0x8001 is IN too.
_IN_ONLY = frozenset((TYPE_A, TYPE_AAAA, TYPE_SRV))

_RDATA = {
    TYPE_A: _rd_a,
    TYPE_AAAA: _rd_aaaa,
    TYPE_NS: _rd_name,
    TYPE_CNAME: _rd_name,
    TYPE_PTR: _rd_name,
    TYPE_MX: _rd_mx,
    TYPE_SRV: _rd_srv,
    TYPE_TXT: _rd_txt,
    TYPE_SOA: _rd_soa,
}


def _records(data: bytes, off: int, n: int, count: int, cache: dict, out: list, what: str) -> int:
    """Appends ``count`` records read from ``off`` to ``out``; returns the end offset."""
    rdata_of = _RDATA.get
    rr = _RR.unpack_from
    tnew = _tuple_new
    for i in range(count):
        try:
            name, off = _name(data, off, n, cache)
        except DnsError as e:
            raise DnsError(f"{what} {i + 1} of {count}: {e}") from None
        if off + 10 > n:
            raise DnsError(f"{what} {i + 1} of {count}: record at offset {off} is truncated")
        rtype, rclass, ttl, rdlen = rr(data, off)
        off += 10
        rend = off + rdlen
        if rend > n:
            raise DnsError(
                f"{what} {i + 1} of {count}: rdata at offset {off} needs {rdlen} bytes, "
                f"has {n - off}"
            )
        decode = rdata_of(rtype)
        if decode is None or (rclass != 1 and rclass & 0x7FFF != 1 and rtype in _IN_ONLY):
            rdata: object = data[off:rend]
        else:
            try:
                rdata = decode(data, off, rend, n, cache)
            except DnsError as e:
                raise DnsError(f"{what} {i + 1} of {count}: {e}") from None
        out.append(tnew(DnsRecord, (name, rtype, rclass, ttl, rdata)))
        off = rend
    return off


def _edns(rec: DnsRecord, defects: list[str]) -> Edns | None:
    raw = rec.rdata
    assert isinstance(raw, bytes)
    opts = []
    off, n = 0, len(raw)
    while off < n:
        if off + 4 > n:
            defects.append(f"OPT option header at rdata offset {off} is truncated")
            break
        code, length = struct.unpack_from("!HH", raw, off)
        if off + 4 + length > n:
            defects.append(f"OPT option {code} at rdata offset {off} runs past the rdata")
            break
        opts.append((code, raw[off + 4 : off + 4 + length]))
        off += 4 + length
    ttl = rec.ttl
    return Edns(rec.rclass, ttl >> 24, (ttl >> 16) & 0xFF, ttl & 0xFFFF, tuple(opts))


_FLAG_BITS = (
    ("AA", 0x0400),
    ("TC", 0x0200),
    ("RD", 0x0100),
    ("RA", 0x0080),
    ("AD", 0x0020),
    ("CD", 0x0010),
)
_FLAG_MASK = sum(bit for _, bit in _FLAG_BITS)
# header_flags by (flags & _FLAG_MASK) | DO (0x10000): 2 ** 7 tuples, made once.
_FLAG_NAMES = {
    b | do: tuple([n for n, bit in _FLAG_BITS if b & bit] + (["DO"] if do else []))
    for b in range(0x800)
    if not b & ~_FLAG_MASK
    for do in (0, 0x10000)
}


class DnsMessage:
    """One parsed DNS message; see the module docstring for what each part holds.

    ``qname``, ``qtype`` and ``qclass`` are those of the first question (``""``, 0,
    0 when there is none); ``questions`` holds them all.
    """

    __slots__ = (
        "additional",
        "ancount",
        "answers",
        "arcount",
        "authority",
        "defects",
        "edns",
        "flags",
        "id",
        "nscount",
        "opcode",
        "qclass",
        "qdcount",
        "qname",
        "qr",
        "qtype",
        "questions",
        "rcode",
    )

    id: int
    flags: int
    qr: bool
    opcode: int
    rcode: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int
    questions: tuple[DnsQuestion, ...]
    qname: str
    qtype: int
    qclass: int
    answers: tuple[DnsRecord, ...]
    authority: tuple[DnsRecord, ...]
    additional: tuple[DnsRecord, ...]
    edns: Edns | None
    defects: tuple[str, ...]

    @property
    def aa(self) -> bool:
        return bool(self.flags & 0x0400)

    @property
    def tc(self) -> bool:
        return bool(self.flags & 0x0200)

    @property
    def rd(self) -> bool:
        return bool(self.flags & 0x0100)

    @property
    def ra(self) -> bool:
        return bool(self.flags & 0x0080)

    @property
    def z(self) -> bool:
        return bool(self.flags & 0x0040)

    @property
    def ad(self) -> bool:
        return bool(self.flags & 0x0020)

    @property
    def cd(self) -> bool:
        return bool(self.flags & 0x0010)

    @property
    def full_rcode(self) -> int:
        """The 12-bit rcode: EDNS's extended rcode above the header's 4 bits."""
        edns = self.edns
        return self.rcode if edns is None else (edns.extended_rcode << 4) | self.rcode

    @property
    def header_flags(self) -> tuple[str, ...]:
        """The flags that are set, as ECS ``dns.header_flags`` lists them: ``AA TC RD
        RA AD CD`` from the header, and ``DO`` from EDNS."""
        edns = self.edns
        do = 0x10000 if edns is not None and edns.flags & 0x8000 else 0
        return _FLAG_NAMES[(self.flags & _FLAG_MASK) | do]

    def __repr__(self) -> str:
        kind = "response" if self.qr else "query"
        return (
            f"<DnsMessage {kind} id=0x{self.id:04x} {self.qname!r} {type_name(self.qtype)} "
            f"rcode={self.rcode} an={len(self.answers)} ns={len(self.authority)} "
            f"ar={len(self.additional)}{' defects' if self.defects else ''}>"
        )


def parse_dns(data: bytes | bytearray | memoryview, *, records: bool = True) -> DnsMessage:
    """Parses one DNS message (a UDP payload, or one message of a TCP stream without
    its length prefix).

    With ``records=False`` only the header and the questions are read (the record
    sections stay empty and ``edns`` None): what a decision on the question needs.
    Raises :class:`DnsError` when the header or the questions are not valid; faults
    in the record sections become ``defects`` (module docstring).
    """
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n < 12:
        raise DnsError(f"message of {n} bytes is shorter than the 12-byte header")
    ident, flags, qd, an, ns, ar = _HEADER.unpack_from(data, 0)
    cache: dict[int, tuple[str, int]] = {}
    off = 12
    if qd == 1:
        qname, off = _name(data, off, n, cache)
        if off + 4 > n:
            raise DnsError(f"question 1 of 1: type and class at offset {off} are truncated")
        qtype, qclass = _QTAIL.unpack_from(data, off)
        off += 4
        questions: tuple[DnsQuestion, ...] = (_tuple_new(DnsQuestion, (qname, qtype, qclass)),)
    elif qd == 0:
        questions = ()
        qname, qtype, qclass = "", 0, 0
    else:
        qs = []
        for i in range(qd):
            try:
                name, off = _name(data, off, n, cache)
            except DnsError as e:
                raise DnsError(f"question {i + 1} of {qd}: {e}") from None
            if off + 4 > n:
                raise DnsError(
                    f"question {i + 1} of {qd}: type and class at offset {off} are truncated"
                )
            qs.append(_new_q((name, *_QTAIL.unpack_from(data, off))))
            off += 4
        questions = tuple(qs)
        qname, qtype, qclass = questions[0]
    msg = DnsMessage()
    msg.id = ident
    msg.flags = flags
    msg.qr = flags >= 0x8000
    msg.opcode = (flags >> 11) & 0xF
    msg.rcode = flags & 0xF
    msg.qdcount = qd
    msg.ancount = an
    msg.nscount = ns
    msg.arcount = ar
    msg.questions = questions
    msg.qname = qname
    msg.qtype = qtype
    msg.qclass = qclass
    msg.edns = None
    if not records or not (an or ns or ar):
        msg.answers = msg.authority = msg.additional = ()
        msg.defects = () if off == n or not records else (f"{n - off} trailing bytes",)
        return msg
    answers: list[DnsRecord] = []
    authority: list[DnsRecord] = []
    additional: list[DnsRecord] = []
    defects: list[str] = []
    try:
        if an:
            off = _records(data, off, n, an, cache, answers, "answer")
        if ns:
            off = _records(data, off, n, ns, cache, authority, "authority record")
        if ar:
            off = _records(data, off, n, ar, cache, additional, "additional record")
        if off != n:
            defects.append(f"{n - off} trailing bytes")
    except DnsError as e:
        defects.append(str(e))
    if additional:
        for rec in additional:
            if rec[1] != TYPE_OPT:
                continue
            if msg.edns is not None:
                defects.append("a second OPT record (ignored)")
            elif rec[0] != ".":
                defects.append(f"OPT record owned by {rec[0][:80]!r}, not the root (ignored)")
            else:
                msg.edns = _edns(rec, defects)
    msg.answers = tuple(answers)
    msg.authority = tuple(authority)
    msg.additional = tuple(additional)
    msg.defects = tuple(defects)
    return msg


# --- transactions --------------------------------------------------------------------


class TransactionKey(NamedTuple):
    """What pairs a query with its response (see :func:`transaction_key`)."""

    transport: str
    client: Hashable
    client_port: int
    server: Hashable
    server_port: int
    id: int
    question: tuple[str, int, int] | None


def answers_have_type(data: bytes | memoryview, rtype: int) -> bool:
    """Whether a record of type ``rtype`` may be in the answer section of a message
    with one question, scanned without decoding (for a decision that needs the
    record only when it is there: a CNAME chain). True too when the scan cannot
    tell (an answer's owner name is not a pointer or plain labels, a truncated
    section): the caller then parses the message. Never raises."""
    n = len(data)
    if n < 12:
        return True
    ancount = data[6] << 8 | data[7]
    off = 12
    while off < n:  # the question's name: plain labels (parsed already)
        c = data[off]
        if not c:
            off += 1
            break
        if c >= 0xC0:
            off += 2
            break
        off += 1 + c
    off += 4
    for _ in range(ancount):
        if off + 12 > n:
            return True
        c = data[off]
        if c >= 0xC0:
            off += 2
        else:
            while off < n and data[off] and data[off] < 0xC0:
                off += 1 + data[off]
            if off >= n:
                return True
            off += 1 if not data[off] else 2
            if off + 10 > n:
                return True
        if (data[off] << 8 | data[off + 1]) == rtype:
            return True
        off += 10 + (data[off + 8] << 8 | data[off + 9])
    return False


def cname_chain(data: bytes) -> list[str] | None:
    """The owner and target names of the CNAME records in the answer section of a
    message with one question, in order (owner, target, owner, target...), written
    as :func:`parse_dns` writes them: what ``parse_dns(data).answers`` gives, for a
    decision on the chain without decoding every record. None when only a whole
    parse can tell: the header or question are not valid, an answer is truncated or
    has a bad name, or one has a type whose rdata :func:`parse_dns` decodes other
    than A, AAAA and CNAME (its decoding could stop the section there). Never
    raises."""
    n = len(data)
    if n < 12 or data[4] or data[5] != 1:
        return None
    an = data[6] << 8 | data[7]
    cache: dict[int, tuple[str, int]] = {}
    out: list[str] = []
    rr = _RR.unpack_from
    try:
        _, off = _name(data, 12, n, cache)
        off += 4
        if off > n:
            return None
        for _ in range(an):
            name, off = _name(data, off, n, cache)
            if off + 10 > n:
                return None
            rtype, rclass, _ttl, rdlen = rr(data, off)
            off += 10
            rend = off + rdlen
            if rend > n:
                return None
            if rtype == TYPE_CNAME:
                target, end = _name(data, off, rend, cache)
                if end != rend:
                    return None
                out.append(name)
                out.append(target)
            elif rtype in (TYPE_A, TYPE_AAAA):
                if rdlen != (4 if rtype == TYPE_A else 16) and (
                    rclass == 1 or rclass & 0x7FFF == 1
                ):
                    return None
            elif rtype in _RDATA:
                return None
            off = rend
    except DnsError:
        return None
    return out


def cname_targets(data: bytes, base: int, off: int, end: int) -> list[bytes] | None:
    """The targets of the CNAME records of the answer section, as their raw wire
    bytes (labels and root byte, case as sent), when the section has the usual shape
    that makes :func:`cname_chain` need no names decoded: every answer's owner is a
    pointer to the question (offset 12) or to an earlier CNAME's target, every CNAME
    target is plain labels filling its rdata, and no answer has a type whose rdata
    :func:`parse_dns` decodes other than A, AAAA (of the right length) and CNAME. The
    chain is then the question's name and these targets. None: not that shape (ask
    :func:`cname_chain`). The message is ``data[base:end]`` (e.g. a frame in a
    capture buffer), its header and question already checked, its answers from
    ``off``. Never raises."""
    an = data[base + 6] << 8 | data[base + 7]
    starts = {12}  # names the owners may point to: the question, then targets
    out: list[bytes] = []
    rr = _RR.unpack_from
    for _ in range(an):
        if off + 12 > end or data[off] < 0xC0:
            return None
        if ((data[off] & 0x3F) << 8 | data[off + 1]) not in starts:
            return None
        rtype, rclass, _ttl, rdlen = rr(data, off + 2)
        off += 12
        rend = off + rdlen
        if rend > end:
            return None
        if rtype == TYPE_CNAME:
            o = off
            while o < rend:
                c = data[o]
                if c == 0 or c > 63:
                    break
                o += 1 + c
            if o != rend - 1 or data[o] or rdlen > MAX_NAME_WIRE_LENGTH:
                return None
            starts.add(off - base)
            out.append(data[off:rend])
        elif rtype in (TYPE_A, TYPE_AAAA):
            if rdlen != (4 if rtype == TYPE_A else 16) and (rclass == 1 or rclass & 0x7FFF == 1):
                return None
        elif rtype in _RDATA:
            return None
        off = rend
    return out


def transaction_key(
    msg: DnsMessage,
    src: Hashable,
    sport: int,
    dst: Hashable,
    dport: int,
    transport: str = "udp",
    *,
    question: bool = True,
) -> TransactionKey:
    """The key under which a query and its response meet.

    ``src``/``dst`` are the packet's addresses in any hashable form (the raw bytes
    of :class:`~lc.common.decode.Decoded` are cheapest), ``transport`` is ``"udp"``
    or ``"tcp"``. The message's QR bit says which end is the client: the source of
    a query, the destination of a response. The question is the first one with its
    name lower-cased (ASCII, RFC 4343; resolvers that use 0x20 mixing echo the
    case, but a lower-case key also pairs servers that do not), or None when the
    message has none; ``question=False`` leaves it out, for pairing a response
    that carries no question (a FORMERR or NOTIMP answer may not).

    Not paired by this key, by design: mDNS and LLMNR answers sent to a multicast
    group, and answers from another address than the query went to.
    """
    q = (msg.qname.lower(), msg.qtype, msg.qclass) if question and msg.questions else None
    if msg.qr:
        return TransactionKey(transport, dst, dport, src, sport, msg.id, q)
    return TransactionKey(transport, src, sport, dst, dport, msg.id, q)


# --- names of numbers ------------------------------------------------------------------


def type_name(rtype: int) -> str:
    """``"AAAA"`` for 28; ``"TYPE65280"`` for a type without a mnemonic (RFC 3597)."""
    return TYPE_NAMES.get(rtype) or f"TYPE{rtype}"


def rcode_name(rcode: int) -> str:
    """``"NXDOMAIN"`` for 3; ``"RCODE<n>"`` for an unassigned value."""
    return RCODE_NAMES.get(rcode) or f"RCODE{rcode}"


def opcode_name(opcode: int) -> str:
    """``"QUERY"`` for 0; ``"OPCODE<n>"`` for an unassigned value."""
    return OPCODE_NAMES.get(opcode) or f"OPCODE{opcode}"


# --- DNS over TCP ----------------------------------------------------------------------


class DnsTcpFramer:
    """Frames one direction of a DNS-over-TCP byte stream (sans-IO).

    ``feed(data)`` returns every message completed by ``data`` as ``(start, end,
    message)``: ``start`` is the stream offset of its 2-byte length prefix, ``end``
    one past its last byte, ``message`` its bytes without the prefix (for
    :func:`parse_dns`). Offsets count every byte fed since the last :meth:`reset`,
    from 0. Never raises on input; ``counters`` (names in :data:`FRAMER_COUNTERS`):
    ``messages`` and ``bytes`` framed, ``empty`` zero-length messages skipped,
    ``gaps`` reported, ``desync_bytes`` dropped after a gap.
    """

    __slots__ = ("_base", "_buf", "_lost", "_need", "counters")

    def __init__(self) -> None:
        self.counters: dict[str, int] = dict.fromkeys(FRAMER_COUNTERS, 0)
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._need = -1  # length of the message at _buf[0] once its prefix is read
        self._lost = False  # after a gap: boundaries unknown

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a complete message (at most 65537)."""
        return len(self._buf)

    @property
    def offset(self) -> int:
        """Stream offset of the next byte to be fed (= bytes fed so far)."""
        return self._base + len(self._buf)

    @property
    def desynced(self) -> bool:
        """True after :meth:`gap` until :meth:`reset`: bytes are being dropped."""
        return self._lost

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, int, bytes]]:
        """Adds the next bytes of the stream; returns the messages they completed."""
        if self._lost:
            self.counters["desync_bytes"] += len(data)
            self._base += len(data)
            return []
        buf = self._buf
        buf += data
        out: list[tuple[int, int, bytes]] = []
        pos = 0
        have = len(buf)
        need = self._need
        counters = self.counters
        while True:
            if need < 0:
                if have - pos < 2:
                    break
                need = (buf[pos] << 8) | buf[pos + 1]
                if need == 0:
                    counters["empty"] += 1
                    pos += 2
                    need = -1
                    continue
            if have - pos - 2 < need:
                break
            start = pos + 2
            end = start + need
            out.append((self._base + pos, self._base + end, bytes(buf[start:end])))
            counters["messages"] += 1
            counters["bytes"] += need
            pos = end
            need = -1
        if pos:
            del buf[:pos]
            self._base += pos
        self._need = need
        return out

    def gap(self) -> None:
        """The stream skipped bytes: drop what is held and every later byte."""
        self.counters["gaps"] += 1
        self.counters["desync_bytes"] += len(self._buf)
        self._base += len(self._buf)
        self._buf.clear()
        self._need = -1
        self._lost = True

    def reset(self) -> None:
        """A new connection on this direction: forget everything (counters stay)."""
        self._buf.clear()
        self._base = 0
        self._need = -1
        self._lost = False
