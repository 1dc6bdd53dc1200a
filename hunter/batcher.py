"""Turns a stream of captured packets into sealed columnar batches.

Pure and single-threaded: a capture loop owns one Batcher, feeds it chunks of
packets and asks it, with the current monotonic time, whether a batch is due.

A batch is sealed when it reaches its packet target, its byte target, or when its
oldest packet has waited ``timeout_ns``. The targets adapt to the uplink: when the
caller reports a backlog at seal time (the link is busy), the targets double, up to
``max_packets``/``max_bytes``; when the link keeps up they halve back toward the
configured ``batch_size``. A gRPC stream carries a few thousand messages per
second, so at high packet rates only growing batches keep up.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

__all__ = ["Batcher", "SealedBatch"]

DEFAULT_BATCH_SIZE = 64
DEFAULT_TIMEOUT_MS = 100
DEFAULT_BYTE_TARGET = 256 * 1024
MAX_BATCH_PACKETS = 32768
MAX_BATCH_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class SealedBatch:
    """One batch, framed as nanosecond pcap records, ready to be numbered and sent."""

    records: bytes
    count: int
    iface: array | None  # 'H' per packet; None when every packet is on interface 0
    nbytes: int  # packet bytes, without the record headers
    meta: list[tuple[int, list[str]]] = field(default_factory=list)  # (index, filter ids)

    def __len__(self) -> int:
        return self.count


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
        self._ts = array("q")
        self._caplen = array("I")
        self._origlen = array("I")
        self._iface = array("H")
        self._pieces: list[bytes | memoryview] = []
        self._meta: list[tuple[int, list[str]]] = []
        self._nbytes = 0
        self._first_ns = 0  # monotonic time the oldest pending packet arrived

    @property
    def pending(self) -> int:
        return len(self._ts)

    def add_chunk(
        self,
        ts_ns: array,
        caplen: array,
        origlen: array,
        records: bytes,
        iface: int | array,
        now_ns: int,
        busy: bool = False,
        meta: dict[int, list[str]] | None = None,
    ) -> list[SealedBatch]:
        """Add a chunk of framed packets; return the batches it completed (possibly none).

        ``records`` holds the chunk's packets as nanosecond pcap records (see
        :func:`lc.common.pcapfile.frame_records`). ``iface`` is one interface index for
        the whole chunk or an array of them. ``busy`` tells whether the uplink had a
        backlog, which grows the targets. ``meta`` maps chunk indices to the ids of
        the filters those packets matched; they follow the packets into their batch.
        """
        meta_keys = sorted(meta) if meta else []
        mk = 0
        sealed: list[SealedBatch] = []
        n = len(ts_ns)
        start = 0
        off = 0
        mv = memoryview(records)
        while start < n:
            if not self._ts:
                self._first_ns = now_ns
            room = self.target_packets - len(self._ts)
            end = min(n, start + room)
            nb = sum(caplen[start:end])
            # Respect the byte target: shrink the slice until it fits. When not even one
            # more packet fits, seal what is pending first; a packet bigger than the whole
            # target then travels alone.
            if self._nbytes + nb > self.target_bytes:
                budget = self.target_bytes - self._nbytes
                end, nb = self._fit_bytes(caplen, start, end, budget)
                if nb > budget and self._ts:
                    sealed.append(self.seal(busy))
                    continue
            base = len(self._ts) - start
            while mk < len(meta_keys) and meta_keys[mk] < end:
                k = meta_keys[mk]
                self._meta.append((base + k, meta[k]))  # type: ignore[index]
                mk += 1
            self._ts.extend(ts_ns[start:end])
            self._caplen.extend(caplen[start:end])
            self._origlen.extend(origlen[start:end])
            if isinstance(iface, int):
                self._iface.extend(array("H", [iface]) * (end - start))
            else:
                self._iface.extend(iface[start:end])
            rb = nb + 16 * (end - start)
            self._pieces.append(mv[off : off + rb])
            self._nbytes += nb
            off += rb
            start = end
            if len(self._ts) >= self.target_packets or self._nbytes >= self.target_bytes:
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
        """True when pending packets have waited ``timeout_ns``."""
        return bool(self._ts) and now_ns - self._first_ns >= self.timeout_ns

    def seal(self, busy: bool = False) -> SealedBatch:
        """Close the pending batch (which must not be empty) and adapt the targets."""
        iface = self._iface if any(self._iface) else None
        pieces = self._pieces
        records = bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)
        b = SealedBatch(records, len(self._ts), iface, self._nbytes, self._meta)
        self._reset()
        if busy:
            self.target_packets = min(self.target_packets * 2, self.max_packets)
            self.target_bytes = min(self.target_bytes * 2, self.max_bytes)
        else:
            self.target_packets = max(self.target_packets // 2, self.batch_size)
            self.target_bytes = max(self.target_bytes // 2, self.byte_target)
        return b
