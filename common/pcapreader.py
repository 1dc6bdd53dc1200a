"""Reading capture files in pure Python, fast enough for replay.

Formats read (detected by the file's magic, never by its extension):

* classic pcap, microsecond (magic 0xa1b2c3d4) or nanosecond (0xa1b23c4d)
  precision, little- or big-endian;
* pcapng: Section Header Blocks of either byte order (a file may hold several
  sections, each with its own byte order and interfaces), Interface Description
  Blocks with the ``if_name``, ``if_tsresol`` (a power of 10 or of 2) and
  ``if_tsoffset`` options, Enhanced, Simple and (obsolete) Packet Blocks. Every
  other block type (name resolution, statistics, decryption secrets, custom...)
  is skipped.

Timestamps are always ``int`` nanoseconds since the epoch: a float carries only
about 16 significant digits, and a 2020s epoch in nanoseconds needs 19, so
floats would silently round away the precision the hunters captured.

Damage is handled the way a replay wants it: a broken file header raises
:class:`PcapFormatError` at open time, but a truncated tail or a corrupt record
later in the file never raises. The reader counts it in
``CaptureReader.truncated`` and stops cleanly, so everything before the damage
can still be replayed. In pcapng, whose blocks carry their own length, a
packet block with an impossible content (an unknown interface, a capture length
larger than the block) is counted and skipped, and reading goes on.

Interface indexes (``iface_index``, ``Columns.iface``) index
``CaptureReader.interfaces``, which spans every section of a pcapng file; tshark
4.0 shows ``frame.interface_id`` numbered within each section instead.

Performance. Replay reads millions of records, so the classic pcap paths run no
Python code per packet: a buffer is walked with a C-level chain of ``BytesIO``
calls (read the 16-byte header, unpack its caplen, seek past the data; ``seek``
returns where each record ends), and numpy gathers the header fields at those
offsets into the columns (see ``_pcap_segments``). ``read_records``, the hunter's
path, returns the records of one read only: a little-endian nanosecond file's are a
read-only view of the buffer (no copy), other files' are rewritten in one copy with
numpy stores. A seekable file is read again from a record cut by the end of a read,
so that every buffer is the ``bytes`` that ``read`` returned. Measured with
``bench/mode_cpu.py reader`` (CPU per packet of ``FileSource.read``, median of 5, 2
shared vCPUs, load 3-5): 1M packets of 60-460 bytes, 0.29 µs (ns pcap) and 0.36 µs
(µs pcap), 0.50 and 0.75 µs with the previous per-packet bytes objects; the TLS
benchmark's 1.3 kB packets (µs pcap) 0.55-0.65 µs, 1.7 before. pcapng runs one
Python iteration per block.

Limits (deliberate; they keep the hot path short):

* pcap: the "modified" (Kuznetzov, 0xa1b2cd34) variant is not read; the header's
  ``thiszone`` is ignored, as libpcap and Wireshark do; the FCS bits of the
  link-type field are masked off.
* pcapng: Simple Packet Blocks carry no timestamp and are reported with
  ``ts_ns == 0``, as Wireshark shows them; resolutions finer than 1 ns are
  floored to the nanosecond; packet-block options (flags, hashes, comments) and
  the section length are ignored; compressed or encrypted pcapng is not read.
* A record whose capture length exceeds :data:`MAX_RECORD` (or, in classic
  pcap, the larger of 262144 and the file's snaplen) is taken as corruption.
* Written timestamps must lie in [1970, 2106): pcap stores unsigned 32-bit seconds.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from itertools import repeat
from operator import itemgetter
from types import TracebackType

import numpy as np

from .pcaprecord import (
    _DEFAULT_SNAPLEN,
    _NS,
    _PCAP_NS,
    MAX_RECORD,
    PcapFormatError,
    frame_records,
)

__all__ = ["CaptureReader", "Columns", "Interface", "Records", "open_capture"]

# One read per 4 MiB: the syscall and a chunk's setup are amortised, and a chunk of
# read_records (which never spans two reads) holds thousands of full-size packets.
_READ_SIZE = 4 << 20
_RECORDS_CHUNK = 8192  # records() parses this many at a time, then yields from C-level zips

_PCAP_US = 0xA1B2C3D4
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D

# pcapng block types that this module understands.
_IDB = 0x00000001
_OPB = 0x00000002
_SPB = 0x00000003
_EPB = 0x00000006

# pcapng option codes (IDB).
_OPT_ENDOFOPT = 0
_OPT_IF_NAME = 2
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14


@dataclass(frozen=True, slots=True)
class Interface:
    """One capture interface. Classic pcap has exactly one, with an empty name."""

    name: str
    linktype: int
    snaplen: int


@dataclass(slots=True)
class Columns:
    """A chunk of packets in columns, so that replay never builds per-packet objects.

    Packet ``i`` is ``blob[o : o + caplen[i]]`` where ``o = sum(caplen[:i])``;
    ``iface[i]`` indexes ``CaptureReader.interfaces``.
    """

    ts_ns: array[int]  # 'q': int ns since the epoch
    caplen: array[int]  # 'I'
    origlen: array[int]  # 'I'
    iface: array[int]  # 'H'
    blob: bytes

    def __len__(self) -> int:
        return len(self.caplen)


@dataclass(slots=True)
class Records:
    """A chunk of packets as nanosecond pcap records, with their columns beside them.

    Packet ``i``'s record starts at ``o = 16 * i + sum(caplen[:i])`` in ``records``;
    its bytes follow the 16-byte header.
    """

    ts_ns: array[int]  # 'q'
    caplen: array[int]  # 'I'
    origlen: array[int]  # 'I'
    iface: array[int]  # 'H'
    records: bytes | bytearray | memoryview  # read_records: a view of the file's buffer

    def __len__(self) -> int:
        return len(self.caplen)


_FIRST = itemgetter(0)


def _u32_array(col: np.ndarray) -> array[int]:
    """A numpy column as array('I') (one copy, no Python object per value)."""
    return array("I", col.astype(np.uint32).tobytes())


def open_capture(path: str | os.PathLike[str]) -> CaptureReader:
    """Open a pcap or pcapng file for reading, whatever its name says it is.

    Raises PcapFormatError for an unknown magic or a broken header; OSError
    (e.g. FileNotFoundError) propagates unchanged so callers can tell "missing"
    from "garbage".
    """
    return CaptureReader(path)


# --------------------------------------------------------------------------- reading


# A parsed chunk: timestamps, interface indexes (None: all 0), capture lengths,
# original lengths, packet bytes. records() zips them and read_columns() turns them
# into arrays, both at C speed.
_Chunk = tuple[
    list[int], "list[int] | None", "array[int] | list[int]", "array[int] | list[int]", list[bytes]
]
# Records walked in one buffer: (the buffer, record starts, record ends, caplens).
_Segment = tuple[bytes, np.ndarray, np.ndarray, np.ndarray]


class CaptureReader:
    """A pcap or pcapng file opened for sequential reading.

    ``records()`` and ``read_columns()`` read from the same position: records()
    parses ahead in chunks, so do not mix the two on one reader.
    """

    path: str
    format: str
    interfaces: list[Interface]
    truncated: int

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.interfaces = []
        self.truncated = 0
        self._done = False
        self._buf = b""
        self._off = 0
        self._f = open(self.path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        try:
            self._seekable = self._f.seekable()
            self._open()
        except BaseException:
            self._f.close()
            raise

    # -- context manager / lifetime

    def close(self) -> None:
        """Release the file; safe to call twice."""
        self._done = True
        self._buf = b""
        self._f.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[int, int, bytes, int]]:
        return self.records()

    def __repr__(self) -> str:
        return f"CaptureReader({self.path!r}, format={self.format!r})"

    @property
    def offset(self) -> int:
        """Bytes of the file read and parsed so far (progress figures; 0 once closed)."""
        if self._f.closed:
            return 0
        return self._f.tell() - (len(self._buf) - self._off)

    # -- public reading API

    def records(self) -> Iterator[tuple[int, int, bytes, int]]:
        """Yield ``(ts_ns, iface_index, data, origlen)`` for every remaining packet."""
        chunk = self._chunk
        while True:
            got = chunk(_RECORDS_CHUNK)
            if got is None:
                return
            ts, ifaces, _caps, origs, datas = got
            yield from zip(ts, repeat(0) if ifaces is None else ifaces, datas, origs, strict=False)

    def read_columns(self, max_packets: int) -> Columns | None:
        """Read up to ``max_packets`` packets as one columnar chunk; None at the end."""
        if max_packets <= 0:
            raise ValueError(f"max_packets must be positive, not {max_packets}")
        got = self._chunk(max_packets)
        if got is None:
            return None
        ts, ifaces, caps, origs, datas = got
        n = len(caps)
        return Columns(
            ts_ns=array("q", ts),
            caplen=caps if isinstance(caps, array) else array("I", caps),
            origlen=origs if isinstance(origs, array) else array("I", origs),
            iface=array("H", bytes(2 * n)) if ifaces is None else array("H", ifaces),
            blob=b"".join(datas),
        )

    def read_records(self, max_packets: int) -> Records | None:
        """Like :meth:`read_columns`, with the packets framed as nanosecond pcap records.

        This is the replay hot path: a little-endian nanosecond pcap is passed
        through as it lies in the file; other files have their headers rewritten
        once, in bulk (see :func:`frame_records`).
        """
        if max_packets <= 0:
            raise ValueError(f"max_packets must be positive, not {max_packets}")
        if self._chunk == self._chunk_pcap:
            return self._records_pcap(max_packets)
        cols = self.read_columns(max_packets)
        if cols is None:
            return None
        recs = frame_records(cols.ts_ns, cols.caplen, cols.origlen, cols.blob)
        return Records(cols.ts_ns, cols.caplen, cols.origlen, cols.iface, recs)

    # -- buffering

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available at ``_off``; False at EOF.

        A seekable file is read again from ``_off`` (the unread tail is short: at most
        one record), so that the new buffer is the bytes ``read`` returned, not a copy
        of them joined to the tail; a pipe keeps the tail and joins.
        """
        buf = self._buf
        off = self._off
        avail = len(buf) - off
        if avail >= need:
            return True
        if avail and self._seekable:
            self._f.seek(-avail, os.SEEK_CUR)
            avail = 0
        parts = [buf[off:]] if avail else []
        read = self._f.read
        while avail < need:
            data = read(max(_READ_SIZE, need - avail))
            if not data:
                break
            parts.append(data)
            avail += len(data)
        self._buf = parts[0] if len(parts) == 1 else b"".join(parts)
        self._off = 0
        return avail >= need

    def _fail(self, what: str) -> PcapFormatError:
        return PcapFormatError(f"{self.path}: {what}")

    # -- format detection

    def _open(self) -> None:
        if not self._fill(4):
            n = len(self._buf)
            raise self._fail(
                "empty file, not a pcap or pcapng file"
                if n == 0
                else f"file too short ({n} bytes), not a pcap or pcapng file"
            )
        head = self._buf[:4]
        magic_le = int.from_bytes(head, "little")
        magic_be = int.from_bytes(head, "big")
        if magic_le == _PCAPNG_SHB:
            self._open_pcapng()
        elif magic_le in (_PCAP_US, _PCAP_NS):
            self._open_pcap("<", magic_le == _PCAP_NS)
        elif magic_be in (_PCAP_US, _PCAP_NS):
            self._open_pcap(">", magic_be == _PCAP_NS)
        else:
            raise self._fail(f"not a pcap or pcapng file (magic 0x{head.hex()})")

    # -- classic pcap

    def _open_pcap(self, bo: str, nano: bool) -> None:
        self.format = "pcap"
        if not self._fill(24):
            raise self._fail(
                f"truncated pcap file header ({len(self._buf) - self._off} of 24 bytes)"
            )
        major, minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(
            bo + "HHiIII", self._buf, 4
        )
        if major != 2:
            raise self._fail(f"unsupported pcap version {major}.{minor}")
        self._off = 24
        self.interfaces.append(Interface("", network & 0x03FFFFFF, snaplen))
        self._frac_mul = 1 if nano else 1000
        self._max_cap = min(max(snaplen, _DEFAULT_SNAPLEN), MAX_RECORD)
        self._caplen_unpack = struct.Struct(bo + "8xI4x").unpack
        self._u4 = np.dtype(bo + "u4")
        self._swap_out = bo == ">"  # records go out little-endian
        self._passthrough = nano and bo == "<"
        self._chunk = self._chunk_pcap

    def _pcap_segments(self, want: int, one_read: bool = False) -> list[_Segment]:
        """Walk up to ``want`` records without a Python-level loop per record.

        A pcap record is a 16-byte header followed by ``caplen`` bytes, so the buffer
        can be walked with nothing but calls on a BytesIO over it: read the header,
        unpack its caplen, seek past the data; ``seek`` returns where the record ends.
        Chained with ``map`` the walk stays in C and makes no object per packet but
        those of the chain itself (no copy of the data); the columns are then gathered
        from the buffer with numpy at the records' offsets. One segment per buffer the
        records came from (more than one when a refill was needed, unless ``one_read``:
        then the records of one buffer only, possibly fewer than ``want``).
        """
        segs: list[_Segment] = []
        caplen_of = self._caplen_unpack
        max_cap = self._max_cap
        got = 0
        while got < want and not self._done:
            buf = self._buf
            off = self._off
            bio = BytesIO(buf)  # shares the bytes object, no copy
            bio.seek(off)
            ends: list[int] = []
            try:
                ends.extend(
                    map(
                        bio.seek,
                        map(_FIRST, map(caplen_of, map(bio.read, repeat(16, want - got)))),
                        repeat(1),
                    )
                )
            except struct.error:  # a header cut by the end of the buffer
                pass
            n = len(ends)
            if n and ends[-1] > len(buf):  # data cut by the end of the buffer
                n -= 1
            if n:
                e = np.array(ends[:n] if n < len(ends) else ends, dtype=np.int64)
                st = np.empty(n, dtype=np.int64)
                st[0] = off
                st[1:] = e[:-1]
                caps = e - st - 16
                bad = caps > max_cap
                if bad.any():
                    n = int(bad.argmax())
                    self.truncated += 1
                    self._done = True
                    e, st, caps = e[:n], st[:n], caps[:n]
            if n:
                segs.append((buf, st, e, caps))
                self._off = int(e[-1])
                got += n
                if one_read:
                    break
            if got < want and not self._done:
                self._refill_pcap(max_cap)
        return segs

    def _pcap_columns(self, segs: list[_Segment]) -> tuple[np.ndarray, ...]:
        """(ts_ns int64, caplen, origlen, seconds, fraction) of the walked records."""
        secs_l, frac_l, orig_l, caps_l = [], [], [], []
        u4 = self._u4
        for buf, st, _e, caps in segs:
            u = np.ndarray((len(buf) - 3,), dtype=u4, buffer=buf, strides=(1,))
            secs_l.append(u[st])
            frac_l.append(u[st + 4])
            orig_l.append(u[st + 12])
            caps_l.append(caps)
        if len(segs) == 1:
            secs, frac, orig, caps = secs_l[0], frac_l[0], orig_l[0], caps_l[0]
        else:
            secs, frac = np.concatenate(secs_l), np.concatenate(frac_l)
            orig, caps = np.concatenate(orig_l), np.concatenate(caps_l)
        ts = secs.astype(np.int64) * _NS + frac.astype(np.int64) * self._frac_mul
        return ts, caps, orig, secs, frac

    def _chunk_pcap(self, want: int) -> _Chunk | None:
        """Up to ``want`` records as Python columns and per-packet bytes."""
        segs = self._pcap_segments(want)
        if not segs:
            return None
        ts, caps, orig, _, _ = self._pcap_columns(segs)
        datas: list[bytes] = []
        for buf, st, e, _ in segs:
            datas += map(buf.__getitem__, map(slice, (st + 16).tolist(), e.tolist()))
        return ts.tolist(), None, _u32_array(caps), _u32_array(orig), datas

    def _records_pcap(self, want: int) -> Records | None:
        """Up to ``want`` records as nanosecond pcap records (the replay hot path).

        The records of one read only, so that a little-endian nanosecond file's are a
        view of the buffer, not a copy; other files' get their headers rewritten in
        one copy of the buffer's bytes.
        """
        segs = self._pcap_segments(want, one_read=True)
        if not segs:
            return None
        ts, caps, orig, secs, frac = self._pcap_columns(segs)
        buf, st, e, _ = segs[0]
        lo, hi = int(st[0]), int(e[-1])
        # A second or more in the fraction field (damage, or a writer's bug) is carried
        # into the seconds, so that every record's nanoseconds stay below 10**9 (the
        # processor refuses others); ts_ns is the same sum either way.
        carry = bool((frac >= _NS // self._frac_mul).any())
        records: memoryview | bytearray
        if self._passthrough and not carry:
            # A little-endian nanosecond file already holds the wire's records.
            records = memoryview(buf)[lo:hi]
        else:
            records = bytearray(memoryview(buf)[lo:hi])
            w = np.ndarray((hi - lo - 3,), dtype="<u4", buffer=records, strides=(1,))
            rel = st - lo
            if carry:
                w[rel] = (ts // _NS).astype(np.uint32)  # beyond 2106 wraps: not in pcap
                w[rel + 4] = (ts % _NS).astype(np.uint32)
            else:
                if self._swap_out:
                    w[rel] = secs
                w[rel + 4] = frac * self._frac_mul  # < 10**9: no overflow
            if self._swap_out:
                w[rel + 8] = caps
                w[rel + 12] = orig
        return Records(
            ts_ns=array("q", ts.tobytes()),
            caplen=_u32_array(caps),
            origlen=_u32_array(orig),
            iface=array("H", bytes(2 * len(ts))),
            records=records,
        )

    def _refill_pcap(self, max_cap: int) -> None:
        """Read until the record at ``_off`` is complete; at EOF or corruption, stop."""
        if not self._fill(16):
            self._stop_at_eof()
            return
        caplen = self._caplen_unpack(self._buf[self._off : self._off + 16])[0]
        if caplen > max_cap:
            self.truncated += 1
            self._done = True
        elif not self._fill(16 + caplen):
            self._stop_at_eof()

    def _stop_at_eof(self) -> None:
        if len(self._buf) > self._off:  # a partial record: its packet is lost
            self.truncated += 1
        self._done = True

    # -- pcapng

    def _open_pcapng(self) -> None:
        self.format = "pcapng"
        self._sec_base = 0
        self._conv: list[tuple[int, int, int]] = []  # per interface: (mul, div, offset_ns)
        if not self._fill(12):
            raise self._fail("truncated pcapng section header block")
        bo = self._byte_order(self._buf, self._off)
        if bo is None:
            raise self._fail(
                "not a pcapng file (bad byte-order magic "
                f"0x{self._buf[self._off + 8 : self._off + 12].hex()})"
            )
        blen = struct.unpack_from(bo + "I", self._buf, self._off + 4)[0]
        if blen < 28 or blen % 4 or blen > MAX_RECORD:
            raise self._fail(f"bad pcapng section header block length {blen}")
        if not self._fill(blen):
            raise self._fail("truncated pcapng section header block")
        major, minor = struct.unpack_from(bo + "HH", self._buf, self._off + 12)
        if major != 1:
            raise self._fail(f"unsupported pcapng version {major}.{minor}")
        self._set_byte_order(bo)
        self._off += blen
        self._chunk = self._chunk_pcapng
        # Read the interface descriptions that precede the first packet, so that
        # `interfaces` is useful before anything is read.
        self._chunk_pcapng(0)

    @staticmethod
    def _byte_order(buf: bytes, off: int) -> str | None:
        bom = buf[off + 8 : off + 12]
        if int.from_bytes(bom, "little") == _PCAPNG_BOM:
            return "<"
        if int.from_bytes(bom, "big") == _PCAPNG_BOM:
            return ">"
        return None

    def _set_byte_order(self, bo: str) -> None:
        self._bo = bo
        self._bh_unpack_from = struct.Struct(bo + "II").unpack_from
        self._u32_unpack_from = struct.Struct(bo + "I").unpack_from
        self._epb_unpack_from = struct.Struct(bo + "IIIII").unpack_from
        self._opb_unpack_from = struct.Struct(bo + "HHIIII").unpack_from
        self._opt_unpack_from = struct.Struct(bo + "HH").unpack_from

    def _chunk_pcapng(self, want: int) -> _Chunk | None:
        """Parse blocks until ``want`` packets are collected (0: stop at the first packet).

        One Python iteration per block; state used per packet lives in locals and
        is reloaded only after a refill, a section header or an interface block.
        """
        if self._done:
            return None
        ts_out: list[int] = []
        if_out: list[int] = []
        caps_out: list[int] = []
        origs_out: list[int] = []
        datas_out: list[bytes] = []
        n = 0
        conv = self._conv  # grows in place as interfaces are read
        buf = self._buf
        off = self._off
        end = len(buf)
        bh = self._bh_unpack_from
        u32 = self._u32_unpack_from
        epb = self._epb_unpack_from
        base = self._sec_base
        nif = len(conv)
        while True:
            if end - off < 12:
                self._off = off
                if not self._fill(12):
                    self._stop_at_eof_pcapng()
                    break
                buf, off, end = self._buf, self._off, len(self._buf)
                continue
            btype, blen = bh(buf, off)
            if btype == _EPB:
                if n >= want:
                    break
                if blen > end - off or blen < 32:
                    if blen <= MAX_RECORD and blen >= 32:
                        self._off = off
                        if not self._fill(blen):
                            self._stop_at_eof_pcapng()
                            break
                        buf, off, end = self._buf, self._off, len(self._buf)
                        continue
                    self._off = off
                    self._corrupt()
                    break
                if blen & 3 or u32(buf, off + blen - 4)[0] != blen:
                    self._off = off
                    self._corrupt()
                    break
                iid, hi, lo, cap, orig = epb(buf, off + 8)
                g = base + iid
                if g < nif and cap <= blen - 32:
                    mul_, div, toff = conv[g]
                    ts_out.append(((hi << 32 | lo) * mul_) // div + toff)
                    if_out.append(g)
                    caps_out.append(cap)
                    origs_out.append(orig)
                    datas_out.append(buf[off + 28 : off + 28 + cap])
                    n += 1
                else:  # framing is fine, content is not: lose this packet only
                    self.truncated += 1
                off += blen
                continue
            # Rarer blocks: the same framing checks, then a slower dispatch.
            if btype == _PCAPNG_SHB:
                bo = self._byte_order(buf, off)
                if bo is None:
                    self._off = off
                    self._corrupt()
                    break
                blen = struct.unpack_from(bo + "I", buf, off + 4)[0]
            elif btype in (_SPB, _OPB) and n >= want:
                break
            if blen < 12 or blen & 3 or blen > MAX_RECORD:
                self._off = off
                self._corrupt()
                break
            if blen > end - off:
                self._off = off
                if not self._fill(blen):
                    self._stop_at_eof_pcapng()
                    break
                buf, off, end = self._buf, self._off, len(self._buf)
                continue
            if btype == _PCAPNG_SHB:
                self._set_byte_order(bo)  # the trailer is in the new section's order
                bh = self._bh_unpack_from
                u32 = self._u32_unpack_from
                epb = self._epb_unpack_from
                base = self._sec_base = nif
            if u32(buf, off + blen - 4)[0] != blen:
                self._off = off
                self._corrupt()
                break
            if btype == _IDB:
                if blen < 20:
                    self._off = off
                    self._corrupt()
                    break
                self._read_idb(buf, off, blen)
                nif = len(conv)
            elif btype in (_SPB, _OPB):
                got = self._other_packet(btype, buf, off, blen, base, nif)
                if got is None:
                    self.truncated += 1
                else:
                    ts, g, cap, orig, data = got
                    ts_out.append(ts)
                    if_out.append(g)
                    caps_out.append(cap)
                    origs_out.append(orig)
                    datas_out.append(data)
                    n += 1
            # Any other block type is skipped.
            off += blen
        if not self._done:
            self._off = off
        if not caps_out:
            return None
        return ts_out, if_out, caps_out, origs_out, datas_out

    def _other_packet(
        self, btype: int, buf: bytes, off: int, blen: int, base: int, nif: int
    ) -> tuple[int, int, int, int, bytes] | None:
        """Decode a Simple or (obsolete) Packet Block; None if its content is impossible."""
        if btype == _SPB:
            # No interface id (it is the section's first) and no timestamp.
            if blen < 16 or base >= nif:
                return None
            # Its captured length is implied: min(origlen, snaplen), snaplen 0 = none.
            orig = self._u32_unpack_from(buf, off + 8)[0]
            snap = self.interfaces[base].snaplen
            cap = min(orig, snap) if snap else orig
            if cap > blen - 16:
                return None
            return 0, base, cap, orig, buf[off + 12 : off + 12 + cap]
        if blen < 32:
            return None
        iid, _drops, hi, lo, cap, orig = self._opb_unpack_from(buf, off + 8)
        g = base + iid
        if g >= nif or cap > blen - 32:
            return None
        mul_, div, toff = self._conv[g]
        return ((hi << 32 | lo) * mul_) // div + toff, g, cap, orig, buf[off + 28 : off + 28 + cap]

    def _read_idb(self, buf: bytes, off: int, blen: int) -> None:
        linktype, _reserved, snaplen = struct.unpack_from(self._bo + "HHI", buf, off + 8)
        name = ""
        tsresol = 6
        tsoffset = 0
        pos = off + 16
        stop = off + blen - 4
        opt = self._opt_unpack_from
        while pos + 4 <= stop:
            code, olen = opt(buf, pos)
            pos += 4
            if code == _OPT_ENDOFOPT or pos + olen > stop:
                break
            if code == _OPT_IF_NAME:
                name = buf[pos : pos + olen].rstrip(b"\0").decode("utf-8", "replace")
            elif code == _OPT_IF_TSRESOL and olen >= 1:
                tsresol = buf[pos]
            elif code == _OPT_IF_TSOFFSET and olen >= 8:
                tsoffset = struct.unpack_from(self._bo + "q", buf, pos)[0]
            pos += (olen + 3) & ~3
        # Timestamp units -> ns as (units * mul) // div: exact for powers of 10
        # down to 1 ns, floored below that and for powers of 2 (as Wireshark does).
        if tsresol & 0x80:
            mul_, div = _NS, 1 << (tsresol & 0x7F)
        elif tsresol <= 9:
            mul_, div = 10 ** (9 - tsresol), 1
        else:
            mul_, div = 1, 10 ** (tsresol - 9)
        self.interfaces.append(Interface(name, linktype, snaplen))
        self._conv.append((mul_, div, tsoffset * _NS))

    def _corrupt(self) -> None:
        """Block framing is broken, so nothing after it can be found: count and stop."""
        self.truncated += 1
        self._done = True

    def _stop_at_eof_pcapng(self) -> None:
        rest = self._buf[self._off :]
        if rest:
            btype = self._bh_unpack_from(rest, 0)[0] if len(rest) >= 8 else None
            # Only a cut packet block (or one too short to tell) is a lost packet.
            if btype is None or btype in (_EPB, _SPB, _OPB):
                self.truncated += 1
        self._done = True
