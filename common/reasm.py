"""IPv4 and IPv6 fragment reassembly with hard caps on state, driven by capture time.

Feed every frame that :func:`lc.common.decode.decode_packet` marks ``is_fragment``
to :meth:`FragmentReassembler.feed`. When the last missing piece of a datagram
arrives, ``feed`` returns the whole datagram as ``bytes`` starting at the IP header,
with no link-layer header: decode it with ``decode_packet(LINKTYPE_RAW, datagram)``
(link type 101). The link layer of the fragments (MACs, VLAN tags) is not kept; the
caller still has the frame that completed the datagram.

The returned header
    * IPv4: the header (with options) of the fragment at offset 0; total length set
      to the reassembled size, MF and fragment offset cleared (DF and the reserved
      bit are kept), header checksum **recomputed**.
    * IPv6: the unfragmentable part (fixed header plus the extension headers before
      the fragment header) of the fragment at offset 0, with the fragment header
      removed, the next-header byte that named it set to the fragment header's next
      header, and the payload length fixed.

Datagram identity
    ``(IP version, src, dst, identification, protocol, VLAN ids)``. The protocol is
    the IPv4 protocol field, or the next header of the IPv6 fragment header. The VLAN
    ids are part of the key because the same private addresses may live on several
    VLANs.

Overlaps: first wins
    Bytes already held are never replaced. A later fragment that overlaps them
    contributes only its new bytes. A fragment that brings nothing new and repeats
    the held bytes exactly counts as a duplicate; any other overlap counts in
    ``overlaps``, and in ``overlap_conflicts`` as well when the overlapping bytes
    differ (the signature of evasion attempts: a sniffer cannot know which copy the
    receiving host kept). A second last fragment (MF clear) that disagrees about the
    datagram's end, or data past the known end, is refused as malformed; a last
    fragment that would cut off bytes already held discards the whole datagram
    (counted as malformed).

Time and bounds
    Time is always the caller's capture timestamp (``ts_ns``); the wall clock is
    never read. A partial datagram expires ``timeout_ns`` after its first fragment;
    ``feed`` expires old entries as it goes and :meth:`FragmentReassembler.expire`
    sweeps the whole table. The table holds at most ``max_datagrams`` partial
    datagrams and ``max_total_bytes`` of fragment data and headers; when a new
    fragment does not fit, the oldest partial datagrams are evicted. One datagram may
    not exceed ``max_bytes_per_datagram`` (nor the IP length limits) or
    ``max_fragments_per_datagram`` pieces. Python's per-object overhead is on top of
    the byte count, bounded by the fragment cap.

Counters (``FragmentReassembler.counters``)
    ``fragments`` fragments fed; ``reassembled`` datagrams returned; ``expired``,
    ``dropped_table_full``, ``dropped_too_big`` and ``dropped_too_many_fragments``
    partial datagrams discarded (``dropped_too_big`` also counts a lone oversized
    fragment); ``malformed`` and ``truncated`` fragments refused (unparsable or
    inconsistent; cut short by the snap length); ``duplicates``, ``overlaps`` and
    ``overlap_conflicts`` as described above.
"""

from __future__ import annotations

import struct
from bisect import bisect_right

from lc.common.decode import Decoded, decode_packet
from lc.common.errors import ParseError, ValidationError

__all__ = [
    "DEFAULT_MAX_BYTES_PER_DATAGRAM",
    "DEFAULT_MAX_DATAGRAMS",
    "DEFAULT_MAX_FRAGMENTS_PER_DATAGRAM",
    "DEFAULT_MAX_TOTAL_BYTES",
    "DEFAULT_TIMEOUT_NS",
    "FragmentReassembler",
    "ipv4_header_checksum",
]

DEFAULT_MAX_DATAGRAMS = 1024
#: The largest IPv6 datagram without a jumbogram: fixed header + 65535 payload bytes.
DEFAULT_MAX_BYTES_PER_DATAGRAM = 65535 + 40
DEFAULT_MAX_TOTAL_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_FRAGMENTS_PER_DATAGRAM = 256
#: Linux's ipfrag_time default.
DEFAULT_TIMEOUT_NS = 30 * 1_000_000_000

_COUNTERS = (
    "fragments",
    "reassembled",
    "expired",
    "dropped_table_full",
    "dropped_too_big",
    "dropped_too_many_fragments",
    "malformed",
    "truncated",
    "duplicates",
    "overlaps",
    "overlap_conflicts",
)

_U16 = struct.Struct("!H")
_IP_MAX = 65535


def ipv4_header_checksum(header: bytes | bytearray | memoryview) -> int:
    """The Internet checksum of ``header`` (its checksum field must be zero to compute
    the value to store, or as stored to verify: a valid header then gives 0)."""
    if len(header) % 2:
        header = bytes(header) + b"\x00"
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class _Partial:
    """One datagram being reassembled. ``pieces`` is sorted and non-overlapping."""

    __slots__ = ("first_ts", "header", "held", "nfrags", "pieces", "size", "starts", "total")

    def __init__(self, first_ts: int) -> None:
        self.first_ts = first_ts
        self.header: bytes | None = None  # IPv4 header / IPv6 unfragmentable part
        self.pieces: list[tuple[int, int, bytes]] = []  # (start, stop, data)
        self.starts: list[int] = []
        self.held = 0  # data bytes held
        self.size = 0  # bytes accounted against the caps (data + header)
        self.nfrags = 0
        self.total = -1  # data length once the last fragment was seen

    def max_stop(self) -> int:
        return self.pieces[-1][1] if self.pieces else 0


class FragmentReassembler:
    """Reassembles IPv4 and IPv6 fragments; see the module docstring for the rules."""

    def __init__(
        self,
        max_datagrams: int = DEFAULT_MAX_DATAGRAMS,
        max_bytes_per_datagram: int = DEFAULT_MAX_BYTES_PER_DATAGRAM,
        timeout_ns: int = DEFAULT_TIMEOUT_NS,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        max_fragments_per_datagram: int = DEFAULT_MAX_FRAGMENTS_PER_DATAGRAM,
    ) -> None:
        for name, value in (
            ("max_datagrams", max_datagrams),
            ("max_bytes_per_datagram", max_bytes_per_datagram),
            ("timeout_ns", timeout_ns),
            ("max_total_bytes", max_total_bytes),
            ("max_fragments_per_datagram", max_fragments_per_datagram),
        ):
            if not isinstance(value, int) or value <= 0:
                raise ValidationError(f"{name} must be a positive integer, got {value!r}")
        if max_total_bytes < max_bytes_per_datagram:
            raise ValidationError(
                f"max_total_bytes ({max_total_bytes}) must be at least "
                f"max_bytes_per_datagram ({max_bytes_per_datagram})"
            )
        self.max_datagrams = max_datagrams
        self.max_bytes_per_datagram = max_bytes_per_datagram
        self.timeout_ns = timeout_ns
        self.max_total_bytes = max_total_bytes
        self.max_fragments_per_datagram = max_fragments_per_datagram
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._table: dict[tuple[object, ...], _Partial] = {}
        self._bytes = 0

    # --- state ------------------------------------------------------------------------
    @property
    def pending_datagrams(self) -> int:
        """Partial datagrams held."""
        return len(self._table)

    @property
    def pending_bytes(self) -> int:
        """Fragment data and header bytes held (what ``max_total_bytes`` caps)."""
        return self._bytes

    def clear(self) -> None:
        """Forgets every partial datagram without counting them."""
        self._table.clear()
        self._bytes = 0

    def expire(self, now_ns: int) -> int:
        """Drops every partial datagram whose first fragment is older than
        ``timeout_ns`` at capture time ``now_ns``; returns how many."""
        stale = [k for k, p in self._table.items() if now_ns - p.first_ts > self.timeout_ns]
        for key in stale:
            self._drop(key)
        self.counters["expired"] += len(stale)
        return len(stale)

    def _expire_front(self, now_ns: int) -> None:
        # The table is in arrival order, so the oldest entries are at the front.
        table = self._table
        while table:
            key = next(iter(table))
            if now_ns - table[key].first_ts <= self.timeout_ns:
                return
            self._drop(key)
            self.counters["expired"] += 1

    def _drop(self, key: tuple[object, ...]) -> None:
        partial = self._table.pop(key)
        self._bytes -= partial.size

    def _evict_oldest(self, keep: tuple[object, ...]) -> bool:
        for key in self._table:
            if key != keep:
                self._drop(key)
                self.counters["dropped_table_full"] += 1
                return True
        return False

    # --- feeding ----------------------------------------------------------------------
    def feed(
        self,
        ts_ns: int,
        linktype: int,
        data: bytes | bytearray | memoryview,
        decoded: Decoded | None = None,
    ) -> bytes | None:
        """Adds one captured frame; returns the reassembled datagram (IP header first,
        decode it with link type 101) when this frame completed one, else None.

        ``decoded`` is ``decode_packet(linktype, data)`` if the caller has it already.
        Frames that are not fragments return None and are not counted. Never raises
        on bad input: refused fragments are counted instead.
        """
        counters = self.counters
        if decoded is None:
            try:
                decoded = decode_packet(linktype, data)
            except ParseError:
                counters["malformed"] += 1
                return None
        if not decoded.is_fragment:
            return None
        counters["fragments"] += 1
        self._expire_front(ts_ns)
        if decoded.looks_truncated:
            counters["truncated"] += 1
            return None

        version = decoded.ip_version
        l3 = decoded.l3_offset
        fdata = decoded.frag_data_offset
        stop_in_frame = decoded.l3_end
        if version == 4:
            proto = data[l3 + 9]
            hdr_len = fdata - l3
            payload_base = hdr_len  # bytes of header counted in the IP length
        else:
            proto = data[fdata - 8]
            hdr_len = fdata - 8 - l3
            payload_base = hdr_len - 40
        offset = decoded.frag_offset
        more = decoded.more_fragments
        length = stop_in_frame - fdata
        if length < 0 or (more and (length == 0 or length % 8)):
            counters["malformed"] += 1  # non-last fragments carry multiples of 8 bytes
            return None
        stop = offset + length
        key = (version, decoded.src, decoded.dst, decoded.frag_id, proto, decoded.vlans)
        table = self._table

        if hdr_len + stop > self.max_bytes_per_datagram or payload_base + stop > _IP_MAX:
            counters["dropped_too_big"] += 1
            if key in table:
                self._drop(key)
            return None

        partial = table.get(key)
        if partial is None:
            while len(table) >= self.max_datagrams and self._evict_oldest(key):
                pass
            partial = table[key] = _Partial(ts_ns)

        if not more:
            if partial.total >= 0 and partial.total != stop:
                counters["malformed"] += 1  # a second, different end: first wins
                return None
            if partial.max_stop() > stop:
                counters["malformed"] += 1  # held data lies past this end
                self._drop(key)
                return None
        elif partial.total >= 0 and stop > partial.total:
            counters["malformed"] += 1
            return None

        # Which parts of [offset, stop) are new; first wins for the rest.
        pieces = partial.pieces
        starts = partial.starts
        new: list[tuple[int, int]] = []
        cursor = offset
        overlapped = conflict = False
        i = max(bisect_right(starts, offset) - 1, 0)
        while i < len(pieces):
            start, end, held = pieces[i]
            if start >= stop:
                break
            if end > offset:
                overlapped = True
                if start > cursor:
                    new.append((cursor, start))
                lo = max(start, offset)
                hi = min(end, stop)
                if held[lo - start : hi - start] != bytes(
                    data[fdata + lo - offset : fdata + hi - offset]
                ):
                    conflict = True
                if end > cursor:
                    cursor = end
            i += 1
        if cursor < stop:
            new.append((cursor, stop))
        if overlapped:
            if not new and not conflict:
                counters["duplicates"] += 1
            else:
                counters["overlaps"] += 1
                if conflict:
                    counters["overlap_conflicts"] += 1
        if not new and not (offset == 0 and partial.header is None):
            if not more and partial.total < 0:
                partial.total = stop
                return self._complete_if_done(key, partial)
            return None

        if partial.nfrags >= self.max_fragments_per_datagram:
            counters["dropped_too_many_fragments"] += 1
            self._drop(key)
            return None

        header: bytes | None = None
        if offset == 0 and partial.header is None:
            header = self._first_header(version, data, l3, fdata, hdr_len, proto)
            if header is None:
                counters["malformed"] += 1
                if partial.nfrags == 0:
                    self._drop(key)  # do not keep an empty entry
                return None
        added = sum(b - a for a, b in new) + (len(header) if header is not None else 0)
        while self._bytes + added > self.max_total_bytes and self._evict_oldest(key):
            pass
        if self._bytes + added > self.max_total_bytes:  # this datagram alone is too much
            counters["dropped_table_full"] += 1
            self._drop(key)
            return None

        for a, b in new:
            j = bisect_right(starts, a)
            starts.insert(j, a)
            pieces.insert(j, (a, b, bytes(data[fdata + a - offset : fdata + b - offset])))
        partial.held += added - (len(header) if header is not None else 0)
        partial.size += added
        partial.nfrags += 1
        self._bytes += added
        if header is not None:
            partial.header = header
        if not more:
            partial.total = stop
        return self._complete_if_done(key, partial)

    @staticmethod
    def _first_header(
        version: int,
        data: bytes | bytearray | memoryview,
        l3: int,
        fdata: int,
        hdr_len: int,
        proto: int,
    ) -> bytes | None:
        """The header kept from the offset-0 fragment: the IPv4 header, or the IPv6
        unfragmentable part with the next-header byte that named the fragment header
        already set to ``proto``. None if the IPv6 chain does not lead there."""
        header = bytearray(data[l3 : l3 + hdr_len])
        if version == 4:
            return bytes(header)
        frag_hdr = hdr_len  # relative to l3
        nh_pos = 6
        pos = 40
        while pos < frag_hdr:
            kind = header[nh_pos]
            if pos + 2 > frag_hdr:
                return None
            ext_len = (header[pos + 1] + 2) * 4 if kind == 51 else (header[pos + 1] + 1) * 8
            nh_pos = pos
            pos += ext_len
        if pos != frag_hdr or header[nh_pos] != 44:
            return None
        header[nh_pos] = proto
        return bytes(header)

    def _complete_if_done(self, key: tuple[object, ...], partial: _Partial) -> bytes | None:
        if partial.total < 0 or partial.header is None or partial.held != partial.total:
            return None
        self._drop(key)
        header = bytearray(partial.header)
        body = b"".join(piece[2] for piece in partial.pieces)
        if header[0] >> 4 == 4:
            total = len(header) + len(body)
            if total > _IP_MAX:
                self.counters["dropped_too_big"] += 1
                return None
            header[2:4] = _U16.pack(total)
            header[6] &= 0xC0  # keep reserved + DF, clear MF and the offset
            header[7] = 0
            header[10:12] = b"\x00\x00"
            header[10:12] = _U16.pack(ipv4_header_checksum(header))
        else:
            payload = len(header) - 40 + len(body)
            if payload > _IP_MAX:
                self.counters["dropped_too_big"] += 1
                return None
            header[4:6] = _U16.pack(payload)
        self.counters["reassembled"] += 1
        return bytes(header) + body
