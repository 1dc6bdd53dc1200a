"""Nanosecond pcap records: the framing shared by the wire, the reader and the writer.

A record is the 16-byte little-endian header of a nanosecond pcap file (seconds,
nanoseconds, captured length, original length) followed by the packet's bytes. A
hunter frames its batches this way (:func:`frame_records`), a processor checks them
with :func:`check_caplens` when the batch carries its captured lengths as a column
(in bulk, with numpy: ~0.035 µs per record), else with :func:`record_lengths` (a walk
from record to record: ~0.25 µs), and writes them with one ``write``: no per-packet
Python code on the processor. Timestamps are ``int`` nanoseconds since the epoch.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from io import BytesIO
from itertools import repeat, starmap, tee
from operator import floordiv, gt, mod

import numpy as np

from .errors import ParseError

__all__ = [
    "MAX_RECORD",
    "PcapFormatError",
    "check_caplens",
    "frame_records",
    "linktype_name",
    "record_lengths",
]

MAX_RECORD = 64 * 1024 * 1024

_NS = 1_000_000_000
_DEFAULT_SNAPLEN = 262144  # libpcap's and Wireshark's usual maximum, used as a floor for checks
_MAX_TS_NS = (1 << 32) * _NS  # pcap seconds are unsigned 32-bit
# Headers are decoded and built as native uint32 arrays, swapped when the file's
# byte order is not the host's. array('I') is 4 bytes on every CPython platform.
_BIG_ENDIAN_HOST = sys.byteorder == "big"

_PCAP_NS = 0xA1B23C4D  # the nanosecond magic

_LINKTYPE_NAMES = {
    0: "null",
    1: "ethernet",
    101: "raw",
    108: "loop",
    113: "linux_sll",
    276: "linux_sll2",
}


class PcapFormatError(ParseError):
    """The file is not a capture this module can read, or its header is broken.

    Raised only when opening: damage after a valid header is counted, not raised.
    """


def linktype_name(linktype: int) -> str:
    """The short name PcapSink puts in file names for a link type (``dlt<N>`` if unknown)."""
    return _LINKTYPE_NAMES.get(linktype, f"dlt{linktype}")


# --------------------------------------------------------------------------- writing

_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")


def _u32_column(col: Sequence[int], start: int, end: int) -> array[int]:
    """``col[start:end]`` as array('I'); raises OverflowError for values outside uint32."""
    part = col[start:end]
    if isinstance(part, array) and part.typecode == "I":
        return part
    return array("I", part if isinstance(part, list) else list(part))


def frame_records(
    ts_ns: Sequence[int],
    caplen: Sequence[int],
    origlen: Sequence[int],
    blob: bytes | bytearray | memoryview,
    start: int = 0,
    end: int | None = None,
    snaplen: int = 262144,
) -> bytes:
    """Packets ``start..end`` of a columnar batch as nanosecond pcap records, back to back.

    Each record is the 16-byte little-endian header (seconds, nanoseconds, caplen,
    origlen) followed by the packet, exactly as in a nanosecond pcap file: this is
    both what :class:`PcapWriter` appends and what a hunter puts on the wire, so
    that a processor writes a batch with one ``write`` and no per-packet work.

    Raises:
        ValueError: inconsistent columns, origlen < caplen, or a time outside pcap's range.
    """
    total = len(caplen)
    if end is None:
        end = total
    if not 0 <= start <= end <= total or len(ts_ns) < end or len(origlen) < end:
        raise ValueError(
            f"bad batch bounds {start}..{end} for columns of lengths "
            f"{len(ts_ns)}, {total}, {len(origlen)}"
        )
    n = end - start
    if n == 0:
        return b""
    # Every column step below is a C-level map or an array slice: no Python
    # code runs per packet (see the module doc for the measured rate).
    try:
        caps = _u32_column(caplen, start, end)
        origs = _u32_column(origlen, start, end)
    except OverflowError:
        raise ValueError("a packet length does not fit in 32 unsigned bits") from None
    first = sum(caplen[:start]) if start else 0
    need = first + sum(caps)
    if need > len(blob):
        raise ValueError(f"blob holds {len(blob)} bytes, the lengths need {need}")
    if any(map(gt, caps, origs)):
        raise ValueError("a packet has origlen < caplen")
    ts = ts_ns[start:end]
    g = repeat(_NS)
    try:  # array('I') refuses seconds outside 0..2**32-1: the range check is free
        secs = array("I", list(map(floordiv, ts, g)))
    except OverflowError:
        raise ValueError("a timestamp lies outside pcap's range [1970, 2106)") from None
    nsecs = array("I", list(map(mod, ts, g)))
    body = BytesIO(blob)  # shares a bytes blob; reads are cheaper than slices
    body.seek(first)
    datas: list[bytes] = list(map(body.read, caps))
    if max(caps) > snaplen:  # rare: cut to snaplen, keeping origlen
        caps = array("I", map(min, caps, repeat(snaplen)))
        datas = [d[:snaplen] for d in datas]
    hdr = array("I", bytes(16 * n))
    hdr[0::4] = secs
    hdr[1::4] = nsecs
    hdr[2::4] = caps
    hdr[3::4] = origs
    if _BIG_ENDIAN_HOST:
        hdr.byteswap()
    parts: list[bytes] = [b""] * (2 * n)
    parts[0::2] = map(BytesIO(hdr.tobytes()).read, repeat(16, n))
    parts[1::2] = datas
    return b"".join(parts)


def record_lengths(data: bytes, count: int) -> array:
    """Check that ``data`` is exactly ``count`` nanosecond-pcap records; return their caplens.

    The walk is the reader's C-level chain of BytesIO reads (no Python code per
    record), so validating a batch costs far less than writing it did.

    Raises:
        ParseError: the records do not end exactly at the end of ``data``, or their
            number is not ``count``, or a nanosecond field is 10**9 or more.
    """
    if count == 0:
        if data:
            raise ParseError(f"{len(data)} bytes of records for 0 packets")
        return array("I")
    bio = BytesIO(data)
    heads, heads_kept = tee(map(bio.read, repeat(16, count)))
    try:
        sizes = list(map(len, starmap(bio.read, map(_LE_CAPLEN.unpack, heads))))
    except struct.error:
        raise ParseError(f"records end early: fewer than {count} complete headers") from None
    hdr = array("I", b"".join(heads_kept))
    if _BIG_ENDIAN_HOST:
        hdr.byteswap()
    caps = hdr[2::4]
    if len(caps) != count or caps != array("I", sizes):
        raise ParseError(f"records are cut short: {count} packets do not fit the data")
    if bio.tell() != len(data):
        raise ParseError(f"{len(data) - bio.tell()} bytes left over after {count} records")
    if count and max(hdr[1::4]) >= _NS:
        raise ParseError("a record's nanosecond field is 10**9 or more")
    return caps


_LE_CAPLEN = struct.Struct("<8xI4x")
_NS_CAPLEN = np.arange(4, 12, dtype=np.int64)  # a header's nanoseconds and caplen bytes
_STEPS = np.arange(16, 16 * 32768 + 1, 16, dtype=np.int64)  # 16 * (1..k): the headers


def _steps(count: int) -> np.ndarray:
    return np.arange(16, 16 * count + 1, 16, dtype=np.int64)


def check_caplens(data: bytes, count: int, column: bytes) -> array:
    """Check ``data`` against its captured-length column; return the column as array('I').

    ``column`` is ``count`` uint32 LE, each record's captured length. The records' ends
    follow from it with one cumulative sum, and every header's caplen and nanoseconds
    are then read at once: no Python code per record. Refuses every batch that
    :func:`record_lengths` refuses (if the headers agree with the column, walking them
    visits exactly the column's offsets), and also a column that disagrees with them.

    Raises:
        ParseError: the column is not ``count`` lengths, the records it describes do
            not end exactly at the end of ``data``, a header's caplen is not the
            column's, or a nanosecond field is 10**9 or more.
    """
    if len(column) != 4 * count:
        raise ParseError(
            f"caplen column of {len(column)} bytes for {count} packets (expected {4 * count})"
        )
    if count == 0:
        if data:
            raise ParseError(f"{len(data)} bytes of records for 0 packets")
        return array("I")
    caps = np.frombuffer(column, dtype="<u4")
    starts = caps.astype(np.int64)  # (method calls: numpy's wrappers cost µs each)
    ends = starts.cumsum()  # <= 2**32 * count: no overflow
    ends += _STEPS[:count] if count <= len(_STEPS) else _steps(count)
    total = int(ends[-1])
    if total > len(data):
        raise ParseError(f"records are cut short: {count} packets do not fit the data")
    if total < len(data):
        raise ParseError(f"{len(data) - total} bytes left over after {count} records")
    starts -= ends
    starts *= -1
    starts -= 16  # each record's start = its end - caplen - 16; + 16 <= end <= len(data)
    heads = np.frombuffer(data, dtype=np.uint8)[starts[:, None] + _NS_CAPLEN]
    if heads[:, 4:].tobytes() != column:  # the headers' caplens, little-endian
        bad = int(np.flatnonzero(heads[:, 4:].copy().view("<u4")[:, 0] != caps)[0])
        raise ParseError(f"record {bad}'s header disagrees with the caplen column")
    if int(heads[:, :4].copy().view("<u4").max()) >= _NS:
        raise ParseError("a record's nanosecond field is 10**9 or more")
    out = array("I")
    out.frombytes(column)
    if _BIG_ENDIAN_HOST:
        out.byteswap()
    return out
