"""Packet sources for the hunter: live libpcap handles and capture files.

The only module that imports pcapy. Every source hands out *chunks*: columns of
timestamps (int ns), captured and original lengths, and the packets' bytes back to
back, so that the layers above never touch packets one Python object at a time
unless a mode needs to look inside them.

Live capture uses pcapy-ng's ``next_batch`` on a non-blocking handle behind
``select``: ``next_batch`` on a blocking handle waits for the first packet however
long that takes, which would leave batch timeouts and shutdown hanging on a quiet
link. Files are read by :mod:`lc.common.pcapfile`, not libpcap, because
``open_offline`` reduces nanosecond timestamps to microseconds.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import select
import socket
import struct
from array import array
from dataclasses import dataclass
from itertools import accumulate, repeat
from operator import add, mul

import numpy as np
import pcapy

from lc.common.bpf import check_bpf, compile_bpf
from lc.common.errors import LcError, NotFound, ValidationError
from lc.common.pcapfile import PcapFormatError, frame_records, open_capture

__all__ = ["Chunk", "FileSource", "LiveSource", "check_bpf", "frame_batch", "list_interfaces"]

DEFAULT_SNAPLEN = 262144
#: libpcap's block timeout, the longest a captured packet waits in the kernel's ring
#: for a quiet link (see LiveSource).
DEFAULT_BLOCK_TIMEOUT_MS = 10

# pcap_activate() results (pcap/pcap.h); pcapy-ng returns them instead of raising.
_PCAP_ERROR_NO_SUCH_DEVICE = -5
_LINKTYPE_OF_DLT = {12: 101, 14: 101}  # DLT_RAW -> LINKTYPE_RAW (see LiveSource)
_ACTIVATE_ERRORS = {
    -1: "generic libpcap error",
    -4: "the handle was already activated",
    -6: "monitor mode is not supported",
    -7: "permission denied (capture needs root or CAP_NET_RAW)",
    -8: "permission denied (capture needs root or CAP_NET_RAW)",
    -9: "the interface is not up",
    -11: "promiscuous mode is not permitted",
}
_CHUNK = 4096
# glibc's mallopt parameters (malloc.h) and the values the hunter sets (see tune_malloc).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 16 << 20
_TRIM_THRESHOLD = 64 << 20
_tuned = False
# The collector's thresholds the hunter sets when it still has CPython's defaults.
_GC_DEFAULT = (700, 10, 10)
_GC_HUNTER = (500_000, 10, 20)


def tune_runtime() -> None:
    """Once per process, when a capture source opens: :func:`tune_malloc`, and the
    cyclic garbage collector. A hunter holds tens of thousands of long-lived objects
    (connections, streams, calls) and makes a few dozen short-lived ones per decoded
    packet, so with CPython's default thresholds (a young collection every 700
    allocations, a full one as soon as a quarter of the old objects is new) the
    collector took 11% of the TLS mode's CPU (``bench/mode_cpu.py tls``, measured
    with ``gc.callbacks``), 1% with these: what exists at start-up is frozen (never
    traversed again), young collections every 500,000 allocations, an older one every
    10 of them. A connection mode's objects live as long as their connection (held
    frames' tokens, parser state, an undecided HTTP connection's log), so with young
    collections every 50,000 allocations most of them were traversed once young and
    once more in the middle generation: 2.4-2.7 µs of the HTTP mode's 16-16.7 µs per
    packet (``bench/http_bench.py``'s capture), 0.6 with these (the mode's peak RSS
    811 MB against 785); email 0.3-0.4 µs, now none. Reference counting still frees
    everything outside cycles at once; cyclic garbage waits longer. Thresholds someone
    changed already are left alone."""
    global _gc_tuned
    tune_malloc()
    if _gc_tuned:
        return
    _gc_tuned = True
    if gc.get_threshold() == _GC_DEFAULT:
        gc.freeze()
        gc.set_threshold(*_GC_HUNTER)


_gc_tuned = False


def tune_malloc() -> bool:
    """Keep the hunter's megabyte-sized buffers in the heap (glibc only; once).

    Each chunk brings a few buffers of megabytes (the file's read, rewritten records,
    a batch's join, its serialisation). By default glibc maps such sizes fresh, or
    trims the heap as soon as two of them are free, so every page of every buffer is
    faulted in again: measured on a replay of 1.3 kB packets that was ~0.8 µs per
    packet of system time, more than the reader itself. A fixed mmap threshold of
    16 MiB and a trim threshold of 64 MiB (at most that much free memory stays
    mapped) make them reuse the same pages. True when set.
    """
    global _tuned
    if _tuned:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    _tuned = bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
    return _tuned


@dataclass(slots=True)
class Chunk:
    """Packets as nanosecond pcap records (the wire's framing) plus their columns.

    Packet ``i``'s record starts at ``16 * i + sum(caplen[:i])`` in ``records``, which
    is bytes-like (a file's chunk is a read-only view of the reader's buffer, or a
    bytearray when its headers were rewritten): index it, slice it, take
    ``memoryview`` of it, but do not hash it or call bytes methods on it.
    """

    ts_ns: array  # 'q'
    caplen: array  # 'I'
    origlen: array  # 'I'
    records: bytes | bytearray | memoryview
    iface: int | array  # one global interface index for all, or one per packet

    def __len__(self) -> int:
        return len(self.ts_ns)


_HEADER_BYTES = np.arange(16, dtype=np.intp)

# Classic BPF for Linux sockets (linux/filter.h, linux/if_packet.h, asm/socket.h).
_SO_ATTACH_FILTER = 26
_IFF_LOOPBACK = 0x8
_SKF_AD_PKTTYPE = (-0x1000 + 4) & 0xFFFFFFFF  # load skb->pkt_type
_PACKET_OUTGOING = 4
_BPF_RET_K = 0x06
_MAXIMUM_SNAPLEN = 262144  # libpcap's; what it makes a non-zero return of a ring's filter


def _is_loopback(name: str) -> bool:
    try:
        with open(f"/sys/class/net/{name}/flags") as f:
            return bool(int(f.read(), 16) & _IFF_LOOPBACK)
    except (OSError, ValueError):
        return False


def _refuse_outgoing(p, bpf: str, linktype: int, snaplen: int) -> bool:
    """Replace the kernel filter libpcap just installed for ``bpf`` by the same program
    behind a test that refuses outgoing packets (libpcap drops those in user space on
    a loopback interface: they are the sent copies of the received ones). True when
    done; False (libpcap's filter stays, which is correct, only slower) when the
    expression cannot be compiled here or the socket refuses the program.

    Like libpcap for a memory-mapped capture, non-zero returns become its maximum
    snapshot length: libpcap cuts packets to the snaplen itself.
    """
    try:
        mask = struct.unpack("!I", socket.inet_aton(p.getmask()))[0]
        prog = pcapy.compile(linktype, snaplen, bpf, 1, mask).get_bpf()
    except (pcapy.PcapError, OSError, ValueError):
        return False
    insns = [(0x20, 0, 0, _SKF_AD_PKTTYPE), (0x15, 0, 1, _PACKET_OUTGOING), (_BPF_RET_K, 0, 0, 0)]
    for code, jt, jf, k in prog:
        insns.append((code, jt, jf, _MAXIMUM_SNAPLEN if code == _BPF_RET_K and k else k))
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in insns))
    fprog = struct.pack("@HP", len(insns), ctypes.addressof(code))
    try:
        with socket.fromfd(p.getfd(), socket.AF_PACKET, socket.SOCK_RAW) as s:  # a dup
            s.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def frame_batch(
    data: bytes, meta: bytes, numpy_from: int = 32
) -> tuple[array, array, bytes | memoryview]:
    """pcapy-ng's ``next_batch`` result as (ts_ns 'q', caplen 'I', records): the
    records exactly as :func:`~lc.common.pcapfile.frame_records` frames the packets
    (origlen = caplen), without a Python object per packet.

    ``meta`` holds per packet four native uint32: seconds, microseconds, the offset
    of the packet in ``data``, its length. The packets' bytes are copied into place
    with one boolean-mask assignment and the headers with one scatter: 0.20 against
    0.45 µs per packet with ``frame_records`` (a replayed lo mix of 60-460 bytes). But
    numpy's fixed cost per call (~20 µs) loses below ``numpy_from`` packets (a quiet
    link's chunks), which go through ``frame_records`` (6 µs for 3 packets, break-even
    around 30).
    """
    n = len(meta) // 16
    if n < numpy_from:
        a = array("I")
        a.frombytes(meta)
        cl, offs = a[3::4], a[2::4]
        g, k = repeat(1_000_000_000), repeat(1000)
        ts = array("q", map(add, map(mul, a[0::4], g), map(mul, a[1::4], k)))
        if sum(cl) != len(data) or offs != array("I", accumulate(cl[:-1], initial=0)):
            mv = memoryview(data)  # not back to back: gather first
            data = b"".join(mv[o : o + c] for o, c in zip(offs, cl, strict=True))
        return ts, cl, frame_records(ts, cl, cl, data)
    m = np.frombuffer(meta, dtype=np.uint32).reshape(-1, 4)
    cl = m[:, 3]
    offs = m[:, 2].astype(np.intp)
    ends = np.cumsum(cl, dtype=np.intp)
    if n and (offs[0] != 0 or int(ends[-1]) != len(data) or np.any(offs[1:] != ends[:-1])):
        mv = memoryview(data)  # not back to back: gather first
        data = b"".join(mv[o : o + c] for o, c in zip(offs.tolist(), cl.tolist(), strict=True))
        offs = ends - cl
    ts = m[:, 0].astype(np.int64) * 1_000_000_000 + m[:, 1].astype(np.int64) * 1000
    hdr = np.empty((n, 4), dtype="<u4")
    hdr[:, 0], hdr[:, 1] = np.divmod(ts, 1_000_000_000)
    hdr[:, 2] = cl
    hdr[:, 3] = cl
    where = (offs + np.arange(0, 16 * n, 16, dtype=np.intp))[:, None] + _HEADER_BYTES
    where = where.ravel()
    out = np.empty(len(data) + 16 * n, dtype=np.uint8)
    is_data = np.ones(len(out), dtype=bool)
    is_data[where] = False
    out[where] = hdr.view(np.uint8).ravel()
    out[is_data] = np.frombuffer(data, dtype=np.uint8)
    return array("q", ts.tobytes()), array("I", cl.tobytes()), memoryview(out)


def list_interfaces() -> list[str]:
    try:
        return list(pcapy.findalldevs())
    except pcapy.PcapError:
        return []


class LiveSource:
    """A live libpcap handle on one interface.

    libpcap on Linux fills the kernel ring (TPACKET_V3) in blocks, and hands a block
    over when it is full or ``block_timeout_ms`` after its first packet: at low rates
    that timeout is the time packets wait in the kernel, at high rates blocks fill
    first. 128 blocks of 256 KiB make the default 32 MiB ring, so even at the shortest
    timeout the ring holds that many timeouts' worth of packets. (Immediate mode would
    mean TPACKET_V2, one ring slot per packet sized for the snaplen: a few hundred
    packets in the same memory.)
    """

    def __init__(
        self,
        name: str,
        bpf: str | None = None,
        snaplen: int = DEFAULT_SNAPLEN,
        promisc: bool = False,
        buffer_mb: int = 32,
        index: int = 0,
        block_timeout_ms: int = DEFAULT_BLOCK_TIMEOUT_MS,
    ) -> None:
        self.name = name
        self.index = index
        self.snaplen = snaplen
        tune_runtime()
        try:
            p = pcapy.create(name)
            p.set_snaplen(snaplen)
            p.set_promisc(1 if promisc else 0)
            p.set_timeout(max(1, block_timeout_ms))
            p.set_buffer_size(buffer_mb * 1024 * 1024)
            status = p.activate()
        except pcapy.PcapError as e:
            msg = str(e)
            if "No such device" in msg or "doesn't exist" in msg:
                known = ", ".join(list_interfaces()) or "none found"
                raise NotFound(f"unknown interface {name!r} (available: {known})") from None
            raise LcError(f"cannot capture on {name!r}: {msg}") from None
        if status is not None and status < 0:
            if status == _PCAP_ERROR_NO_SUCH_DEVICE:
                known = ", ".join(list_interfaces()) or "none found"
                raise NotFound(f"unknown interface {name!r} (available: {known})")
            why = _ACTIVATE_ERRORS.get(status, f"libpcap error {status}")
            raise LcError(f"cannot capture on {name!r}: {why}")
        # A live handle speaks DLT values; files and the wire speak LINKTYPE values.
        # They differ for raw IP (a tun device): DLT_RAW is 12 (14 on OpenBSD),
        # LINKTYPE_RAW 101, which every pcap reader knows.
        dlt = p.datalink()
        self.linktype = _LINKTYPE_OF_DLT.get(dlt, dlt)
        self._p = p
        # On a loopback interface every packet passes the capture twice, sent and
        # received; libpcap drops the sent copy in user space, after it took room in
        # the ring. Refused in the kernel's filter instead (see _set_filter).
        self._loopback = _is_loopback(name)
        self.inbound_only = False  # outgoing copies refused in the kernel (loopback)
        if bpf:
            self._set_filter(bpf)
        p.setnonblock(1)
        self._last_stats: tuple[int, int, int] = (0, 0, 0)
        # What the kernel counted before the first filter (``any`` takes every
        # interface's packets from the socket's creation, before its ring is mapped,
        # and counts those it could not queue as drops): none of it was asked for.
        self._base: tuple[int, int, int] = (0, 0, 0)
        self._base = self.stats()
        self._fd = p.getfd()
        self.bpf = bpf or ""
        # next_batch reports caplen only; with a snaplen this large nothing is cut,
        # so origlen = caplen. Smaller snaplens take the slower per-packet path.
        self._fast = snaplen >= 65535

    def set_filter(self, bpf: str) -> None:
        """Swap the kernel filter in place (the handle, and its ring, stay open)."""
        self._set_filter(bpf)
        self.bpf = bpf

    def _set_filter(self, bpf: str) -> None:
        try:
            self._p.setfilter(bpf)
        except pcapy.PcapError as e:
            raise ValidationError(f"invalid BPF filter {bpf!r}: {e}") from None
        if self._loopback:
            self.inbound_only = _refuse_outgoing(self._p, bpf, self.linktype, self.snaplen)

    def read(self, timeout: float) -> Chunk | None:
        """Up to a few thousand packets, or None if none arrived within ``timeout`` s."""
        p = self._p
        if self._fast:
            data, meta = p.next_batch(_CHUNK)
            if not meta:
                r, _, _ = select.select([self._fd], [], [], timeout)
                if not r:
                    return None
                data, meta = p.next_batch(_CHUNK)
                if not meta:
                    return None
            ts, cl, records = frame_batch(data, meta)
            return Chunk(ts, cl, array("I", cl), records, self.index)
        return self._read_slow(timeout)

    def _read_slow(self, timeout: float) -> Chunk | None:
        ts = array("q")
        cl = array("I")
        ol = array("I")
        parts: list[bytes] = []

        def on_packet(hdr, data: bytes) -> None:
            s, us = hdr.getts()
            ts.append(s * 1_000_000_000 + us * 1000)
            cl.append(len(data))
            ol.append(hdr.getlen())
            parts.append(data)

        self._p.dispatch(_CHUNK, on_packet)
        if not ts:
            r, _, _ = select.select([self._fd], [], [], timeout)
            if not r:
                return None
            self._p.dispatch(_CHUNK, on_packet)
            if not ts:
                return None
        return Chunk(ts, cl, ol, frame_records(ts, cl, ol, b"".join(parts)), self.index)

    def stats(self) -> tuple[int, int, int]:
        """(received, dropped by the kernel, dropped by the interface) from libpcap."""
        if self._p is None:
            return self._last_stats
        try:
            got = self._p.stats()
            self._last_stats = tuple(n - b for n, b in zip(got, self._base, strict=True))  # type: ignore[assignment]
        except (pcapy.PcapError, ValueError):
            pass
        return self._last_stats

    def close(self) -> None:
        self.stats()
        p, self._p = self._p, None
        try:
            if p is not None:
                p.close()
        except Exception:
            pass


class FileSource:
    """A pcap or pcapng file, read with nanosecond timestamps intact."""

    def __init__(self, path: str, bpf: str | None = None, index_base: int = 0) -> None:
        if not os.path.exists(path):
            raise NotFound(f"capture file not found: {path}")
        if os.path.isdir(path):
            raise ValidationError(f"capture file {path} is a directory")
        tune_runtime()
        try:
            self._r = open_capture(path)
        except PcapFormatError as e:
            raise ValidationError(f"cannot read {path}: {e}") from None
        except OSError as e:
            raise ValidationError(f"cannot read {path}: {e.strerror}") from None
        self.path = path
        self.name = os.path.basename(path)
        self.size = os.path.getsize(path)  # for progress figures
        self.index_base = index_base
        self.bpf = bpf or ""
        self._filters: dict[int, object] = {}
        self.filtered_out = 0

    @property
    def interfaces(self) -> list[tuple[str, int]]:
        """(name, linktype) per interface seen so far (grows as pcapng IDBs are read)."""
        out = []
        for i, itf in enumerate(self._r.interfaces):
            name = itf.name or (self.name if i == 0 else f"{self.name}#{i}")
            out.append((name, itf.linktype))
        return out

    @property
    def truncated(self) -> int:
        return self._r.truncated

    @property
    def offset(self) -> int:
        """Bytes of the file read so far (of ``size``)."""
        return self._r.offset

    def read(self, max_packets: int = _CHUNK) -> Chunk | None:
        """The next chunk of the file, None at its end."""
        while True:
            recs = self._r.read_records(max_packets)
            if recs is None:
                return None
            iface: int | array
            if len(self._r.interfaces) <= 1 or not any(recs.iface):
                iface = self.index_base
            else:
                iface = array("H", (i + self.index_base for i in recs.iface))
            chunk = Chunk(recs.ts_ns, recs.caplen, recs.origlen, recs.records, iface)
            if self.bpf:
                chunk = self._apply_bpf(chunk, recs.iface)
                if not len(chunk):
                    continue
            return chunk

    def _apply_bpf(self, chunk: Chunk, local_iface: array) -> Chunk:
        keep: list[tuple[int, int, int]] = []  # (index, record offset, record length)
        mv = memoryview(chunk.records)
        off = 0
        interfaces = self._r.interfaces
        for i, c in enumerate(chunk.caplen):
            lt = (
                interfaces[local_iface[i]].linktype
                if len(interfaces) > 1
                else interfaces[0].linktype
            )
            prog = self._filters.get(lt)
            if prog is None:
                prog = self._filters[lt] = compile_bpf(self.bpf, lt)
            if prog.filter(bytes(mv[off + 16 : off + 16 + c])):  # type: ignore[attr-defined]
                keep.append((i, off, 16 + c))
            off += 16 + c
        self.filtered_out += len(chunk.caplen) - len(keep)
        if len(keep) == len(chunk.caplen):
            return chunk
        ts = array("q", (chunk.ts_ns[i] for i, _, _ in keep))
        cl = array("I", (chunk.caplen[i] for i, _, _ in keep))
        ol = array("I", (chunk.origlen[i] for i, _, _ in keep))
        records = b"".join(mv[o : o + n] for _, o, n in keep)
        iface = (
            chunk.iface
            if isinstance(chunk.iface, int)
            else array("H", (chunk.iface[i] for i, _, _ in keep))
        )
        return Chunk(ts, cl, ol, records, iface)

    def close(self) -> None:
        self._r.close()
