"""Turns a stream of captured packets into sealed columnar batches.

Pure and single-threaded: a capture loop owns one Batcher, feeds it chunks of
packets and asks it, with the current monotonic time, whether a batch is due.

A batch is sealed when it reaches its packet target, its byte target, or when its
oldest packet has waited ``timeout_ns``: since it was added, or, for live capture (the
caller gives ``ts_offset_ns``), since it was captured, so that the time a packet spent
in the kernel's ring counts. :meth:`deadline` says when that will be, for a capture
loop to wake up then rather than when the next packets happen to come.

The targets adapt to the uplink: when the caller reports a backlog at seal time (the
link is busy), the targets double, up to ``max_packets``/``max_bytes``; when the link
keeps up they halve back toward the configured ``batch_size``. A gRPC stream carries a
few thousand messages per second, so at high packet rates only growing batches keep up.

Session events (``add_events``) and a mode's extras (``add_extras``: the kinds in
``EXTRA_KINDS``) ride on the next sealed batch. Pending events start the timeout clock
like a packet, so a batch holding only events is sealed by the timeout too; many
pending events (``MAX_BATCH_EVENTS``, or their bytes reaching the byte target) make the
batch due at once.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from lc.proto import lc_pb2

__all__ = ["EXTRA_KINDS", "Batcher", "SealedBatch"]

DEFAULT_BATCH_SIZE = 64
DEFAULT_TIMEOUT_MS = 100
DEFAULT_BYTE_TARGET = 256 * 1024
MAX_BATCH_PACKETS = 32768
MAX_BATCH_BYTES = 8 * 1024 * 1024
MAX_BATCH_EVENTS = 4096
#: What a batch carries beside packets and events (``Forward.extras`` kinds): TLS key
#: log lines (bytes) and DNS tunneling statistics (DnsTunnelStats).
EXTRA_KINDS = ("keylog", "tunnel")


@dataclass(slots=True)
class SealedBatch:
    """One batch, framed as nanosecond pcap records, ready to be numbered and sent."""

    records: bytes
    count: int
    iface: array | None  # 'H' per packet; None when every packet is on interface 0
    nbytes: int  # packet bytes, without the record headers
    # (index, filter ids) or (index, PacketMeta shared by many packets): see wire.encode_meta
    meta: list[tuple[int, object]] = field(default_factory=list)
    events: list[lc_pb2.Event] = field(default_factory=list)
    event_bytes: int = 0  # the events' (and extras') size (memory accounting)
    extras: dict[str, list] = field(default_factory=dict)  # by kind (EXTRA_KINDS)
    # 'I' per packet, the records' captured lengths (PacketBatch.caplen: the processor
    # checks the framing in bulk with it); None: not known (the processor walks them)
    caplen: array | None = None

    def __len__(self) -> int:
        return self.count

    @property
    def keylog(self) -> list[bytes]:
        """TLS key log lines (PacketBatch.tls_keylog)."""
        return self.extras.get("keylog", [])

    @property
    def tunnel(self) -> list[lc_pb2.DnsTunnelStats]:
        """DNS tunneling statistics (PacketBatch.dns_tunnel)."""
        return self.extras.get("tunnel", [])


class Batcher:
    """Accumulates packet columns and seals batches (see module docstring)."""

    def __init__(
        self,
        batch_size: int = DEFAULT_BATCH_SIZE,
        timeout_ns: int = DEFAULT_TIMEOUT_MS * 1_000_000,
        byte_target: int = DEFAULT_BYTE_TARGET,
        max_packets: int = MAX_BATCH_PACKETS,
        max_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.batch_size = batch_size
        self.timeout_ns = timeout_ns
        self.byte_target = max(1, min(byte_target, max_bytes))
        self.max_packets = max(max_packets, batch_size)
        self.max_bytes = max_bytes
        self.target_packets = batch_size
        self.target_bytes = self.byte_target
        self._reset()

    def _reset(self) -> None:
        self._count = 0
        self._iface = array("H")
        self._caplen = array("I")
        self._pieces: list[bytes | memoryview] = []
        self._meta: list[tuple[int, object]] = []
        self._events: list[lc_pb2.Event] = []
        self._event_bytes = 0
        self._extras: dict[str, list] = {}
        self._nextras = 0
        self._nbytes = 0
        self._first_ns = 0  # monotonic time the oldest pending packet (or event) arrived
        # (was captured, with ts_offset_ns)

    @property
    def pending(self) -> int:
        """Packets and events waiting for the next seal."""
        return self._count + len(self._events) + self._nextras

    def add_extras(self, kind: str, items: Iterable[object], now_ns: int | None = None) -> None:
        """Attach a mode's extras of ``kind`` (one of EXTRA_KINDS) to the next sealed
        batch, like :meth:`add_events`: bytes count their length, messages their size."""
        if kind not in EXTRA_KINDS:
            raise ValueError(f"unknown batch extra {kind!r}")
        new = list(items)
        if not new:
            return
        if not self.pending:
            self._first_ns = time.monotonic_ns() if now_ns is None else now_ns
        self._extras.setdefault(kind, []).extend(new)
        self._nextras += len(new)
        self._event_bytes += sum(
            len(x) + 4 if isinstance(x, bytes) else x.ByteSize()  # type: ignore[attr-defined]
            for x in new
        )

    def add_events(self, events: Iterable[lc_pb2.Event], now_ns: int | None = None) -> None:
        """Attach session events to the next sealed batch (in order).

        Never seals by itself: pending events make :meth:`due` true after the timeout
        (``now_ns``, default the monotonic clock, starts it when nothing was pending),
        or at once when they reach ``MAX_BATCH_EVENTS`` or the byte target.
        """
        new = list(events)
        if not new:
            return
        if not self.pending:
            self._first_ns = time.monotonic_ns() if now_ns is None else now_ns
        self._events.extend(new)
        self._event_bytes += sum(ev.ByteSize() for ev in new)

    def add_chunk(
        self,
        ts_ns: array,
        caplen: array,
        origlen: array,
        records: bytes,
        iface: int | array,
        now_ns: int,
        busy: bool = False,
        meta: dict[int, object] | None = None,
        ts_offset_ns: int | None = None,
    ) -> list[SealedBatch]:
        """Add a chunk of framed packets; return the batches it completed (possibly none).

        ``records`` holds the chunk's packets as nanosecond pcap records (see
        :func:`lc.common.pcapfile.frame_records`). ``iface`` is one interface index for
        the whole chunk or an array of them. ``busy`` tells whether the uplink had a
        backlog, which grows the targets. ``meta`` maps chunk indices to the ids of
        the filters those packets matched (or to a PacketMeta, see
        :func:`lc.common.wire.encode_meta`); they follow the packets into their batch.
        ``ts_ns`` and ``origlen`` are the chunk's own columns: the records already hold
        them, so the batcher keeps no column but the interface indices and the captured
        lengths (sent beside the records so the processor checks them in bulk).

        ``ts_offset_ns`` (live capture): the monotonic clock minus the capture clock of
        ``ts_ns``. Given, a batch's timeout counts from its oldest packet's capture
        time (``ts + ts_offset_ns``, never later than ``now_ns``) instead of from
        ``now_ns``; a replayed file's timestamps are not now, so it gives none.
        """
        meta_keys = sorted(meta) if meta else []
        mk = 0
        sealed: list[SealedBatch] = []
        n = len(caplen)
        start = 0
        off = 0
        mv = memoryview(records)
        while start < n:
            if not self.pending:
                self._first_ns = now_ns
            room = self.target_packets - self._count
            end = min(n, start + room)
            nb = sum(caplen[start:end])
            # Respect the byte target: shrink the slice until it fits. When not even one
            # more packet fits, seal what is pending first; a packet bigger than the whole
            # target then travels alone.
            if self._nbytes + nb > self.target_bytes:
                budget = self.target_bytes - self._nbytes
                end, nb = self._fit_bytes(caplen, start, end, budget)
                if nb > budget and self._count:
                    sealed.append(self.seal(busy))
                    continue
            if ts_offset_ns is not None and end > start:
                captured = min(ts_ns[start:end]) + ts_offset_ns
                if captured < self._first_ns:
                    self._first_ns = captured
            base = self._count - start
            while mk < len(meta_keys) and meta_keys[mk] < end:
                k = meta_keys[mk]
                self._meta.append((base + k, meta[k]))  # type: ignore[index]
                mk += 1
            self._count += end - start
            if isinstance(iface, int):
                self._iface.extend(array("H", [iface]) * (end - start))
            else:
                self._iface.extend(iface[start:end])
            self._caplen.extend(caplen[start:end])
            rb = nb + 16 * (end - start)
            self._pieces.append(mv[off : off + rb])
            self._nbytes += nb
            off += rb
            start = end
            if self._count >= self.target_packets or self._nbytes >= self.target_bytes:
                sealed.append(self.seal(busy))
        return sealed

    @staticmethod
    def _fit_bytes(caplen: array, start: int, end: int, budget: int) -> tuple[int, int]:
        """The longest run from ``start`` within ``budget`` bytes (at least one packet)."""
        # Bisect on prefix sums: C-level sums instead of a Python loop per packet.
        lo, hi = start + 1, end
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if sum(caplen[start:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo, sum(caplen[start:lo])

    def due(self, now_ns: int) -> bool:
        """True when pending packets or events have waited ``timeout_ns``, or when the
        pending events alone fill a batch."""
        if not self.pending:
            return False
        if len(self._events) >= MAX_BATCH_EVENTS or self._event_bytes >= self.target_bytes:
            return True
        return now_ns - self._first_ns >= self.timeout_ns

    def deadline(self) -> int | None:
        """The monotonic time from which :meth:`due` is true (possibly past already;
        the oldest pending item's when the events alone fill a batch); None while
        nothing is pending."""
        if not self.pending:
            return None
        if len(self._events) >= MAX_BATCH_EVENTS or self._event_bytes >= self.target_bytes:
            return self._first_ns
        return self._first_ns + self.timeout_ns

    def seal(self, busy: bool = False) -> SealedBatch:
        """Close the pending batch (which must not be empty) and adapt the targets."""
        iface = self._iface if any(self._iface) else None
        pieces = self._pieces
        records = bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)
        b = SealedBatch(
            records, self._count, iface, self._nbytes, self._meta, self._events, self._event_bytes,
            self._extras, self._caplen,
        )  # fmt: skip
        self._reset()
        if busy:
            self.target_packets = min(self.target_packets * 2, self.max_packets)
            self.target_bytes = min(self.target_bytes * 2, self.max_bytes)
        else:
            self.target_packets = max(self.target_packets // 2, self.batch_size)
            self.target_bytes = max(self.target_bytes // 2, self.byte_target)
        return b
