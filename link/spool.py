"""A durable disk spool: batches the processor has not acknowledged, kept across outages.

The hunter appends every numbered batch it cannot deliver now; the uplink reads them back
in append order (``pending``/``peek``) and acknowledges each one (``ack``) once the
processor has written it. A new ``Spool`` on the same directory (after a crash or a
restart) hands back exactly the records an earlier run left unacknowledged, with their
original (epoch, sequence), so the processor's (hunter, epoch, sequence) check drops what
it already wrote. Sans-network: files in, ``SpooledBatch`` out; the uplink does the I/O.

**Files** in the spool directory:

- ``spool-<16-digit counter>.seg``: append-only segment files, one record per batch. A
  new segment starts when the current one would pass ``segment_bytes`` (a record larger
  than that travels alone) and at every start: earlier runs' segments are only read.
- ``spool-<counter>.ack``: that segment's acknowledgements, in any order (out-of-order
  acks need nothing special), one 12-byte entry appended per ack: u64 offset of the
  acknowledged record, u32 ``zlib.crc32`` of (u64 segment counter, u64 offset). Each
  entry is one small ``write``, so it is atomic on its own: a torn last entry is cut off
  at the next open and a damaged one ignored, and a missing or damaged entry only means
  that batch is delivered again (the processor drops the duplicate), never lost.
  Why not an "acked up to" file rewritten with ``os.replace``: on ext4 a rename over an
  existing file flushes the new file's data (``auto_da_alloc``), measured at ~1.2 ms per
  ack, which would cap replay near 800 batches/s; the append costs a few microseconds.
- ``spool.lock``: ``flock``-ed while a Spool is open, so two hunters never share a spool.

A segment file (and its ack file) is deleted only when every valid record in it is
acknowledged. A segment in which no valid record is found at all (garbage, or a format
from a newer lc) is left on disk untouched and counted in ``bytes``.

**Record** (little-endian), one ``write`` per record::

    0  4s magic b"LCSP"          16 u64 epoch
    4  u8 version (1)            24 u64 sequence
    5  u8 flags                  32 u32 count (packets)
    6  u16 source_len (0)        36 u32 records_len
    8  u32 length (header+payload)  40 u32 extras_len
    12 u32 crc                   44 payload

    flags: bit 0 iface present; bit 1 extras in the wire codec's form (always set);
           bit 2 source present
    payload = records (records_len bytes: nanosecond pcap records back to back)
            + iface (2 * count bytes of little-endian uint16, only when flag bit 0)
            + extras (extras_len bytes): the batch's metadata and events as
              :func:`lc.common.wire.encode_extras` wrote them; opaque to the spool
            + source (source_len bytes of UTF-8, only when flag bit 2): the hunter a
              batch comes from when it is not the spool owner's own (an edge
              processor forwarding its hunters' batches upstream); records without
              it are the owner's own. (A batch is (source, epoch, sequence).)

``crc`` is ``zlib.crc32`` of the payload, chained over header bytes 4..12 and 16..44
first, so a flipped bit in epoch, sequence, count or flags is caught as well.

**Damage is counted, never raised.** On open every record is validated (magic, version,
length, CRC). A partial last record (a crash in mid-write) is a *torn* tail: counted
under ``torn`` and truncated away. A bad record followed by valid ones is *corrupt*:
counted under ``corrupt`` and skipped by resyncing at the next magic that starts a valid
record. A record found damaged when read back later is skipped and counted the same way.

**Full spool: drop-newest.** ``max_bytes`` bounds the segment files on disk. An append
that would pass it is refused (``append`` returns False) and counted under
``dropped_batches``/``dropped_packets``. Why not drop-oldest: the spool's promise is that
it never deletes a batch that was not acknowledged; the oldest batches are also the ones
closest to being delivered (they go first) and form the contiguous start of the outage;
and in append-only segments dropping the oldest would mean deleting a whole 16 MiB segment
of unacknowledged data at once. This is the outbox's live-capture policy too: what does not
fit is dropped at the door, and counted. One warning is logged when dropping starts and
one, with what was dropped, when an append fits again.

**Errors while writing** (ENOSPC, EIO, ...) are counted under ``write_errors`` and make
``append`` return False; a capture thread never sees an exception. A failed write is
rolled back (the segment is truncated to its last good record), so what was written
before stays readable.

**Threads**: one lock. Capture threads append; the uplink thread reads and acks. Reads
happen outside the lock (records never change once written).

``fsync=True`` fsyncs each segment when it is sealed (rolled or closed) and the directory
after segments come and go: a power failure then loses at most the open segment. Ack
entries are never fsynced: losing one only resends a batch. Without ``fsync``, a process
crash still loses nothing (the data is in the page cache); only a machine crash may.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import struct
import sys
import threading
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from lc.common.errors import LcError

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_SEGMENT_BYTES", "Spool", "SpoolError", "SpooledBatch"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1024 * 1024 * 1024
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024

MAGIC = b"LCSP"
VERSION = 1
FLAG_IFACE = 1
FLAG_EXTRAS = 2  # the extras are the wire codec's (lc.common.wire.encode_extras)
FLAG_SOURCE = 4  # a source (hunter id) follows the extras; its length is header bytes 6..8
MAX_SOURCE = 0xFFFF
_HEADER = struct.Struct("<4sBBHIIQQIII")
HEADER_SIZE = _HEADER.size  # 44
_MAX_LENGTH = 0xFFFFFFFF
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")

_ACK_ENTRY = struct.Struct("<QI")
_ACK_KEY = struct.Struct("<QQ")
_SEG_RE = re.compile(r"spool-(\d{16})\.(seg|ack)")
_BIG_ENDIAN = sys.byteorder == "big"

_COUNTERS = (
    "bytes",
    "records",
    "appended",
    "replayed",
    "acked",
    "dropped_batches",
    "dropped_packets",
    "torn",
    "corrupt",
    "write_errors",
)


class SpoolError(LcError):
    """The spool directory cannot be used; the hunter carries on without a spool."""


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """One batch read back from the spool."""

    epoch: int
    sequence: int
    records: bytes  # nanosecond pcap records back to back
    count: int  # packets
    iface: array | None  # 'H' per packet; None when every packet is on interface 0
    segment: int  # counter of the segment file holding it
    offset: int  # byte offset of its record in that file
    extras: bytes = b""  # metadata and events, as ``append(extras=)`` got them
    source: str = ""  # the hunter it comes from ("": the spool owner's own batch)

    @property
    def nbytes(self) -> int:
        """Packet bytes, without the 16-byte record headers."""
        return len(self.records) - 16 * self.count


@dataclass(slots=True, eq=False)
class _Segment:
    number: int
    path: str
    size: int = 0  # bytes on disk
    offsets: list[int] = field(default_factory=list)  # valid records, in file order
    # offset -> (source, epoch, sequence, count, length)
    info: dict[int, tuple[str, int, int, int, int]] = field(default_factory=dict)
    first: int = 0  # index into offsets of the first record not yet acknowledged
    acked: set[int] = field(default_factory=set)  # offsets acked at or after ``first``
    live: int = 0  # records not yet acknowledged
    foreign: bool = False  # no valid record found: never ours to delete

    def is_acked(self, index: int) -> bool:
        return index < self.first or self.offsets[index] in self.acked


# -- record encoding ---------------------------------------------------------------


def _crc(buf: bytes | memoryview, pos: int, length: int) -> int:
    mv = memoryview(buf)
    c = zlib.crc32(mv[pos + 4 : pos + 12])
    c = zlib.crc32(mv[pos + 16 : pos + HEADER_SIZE], c)
    return zlib.crc32(mv[pos + HEADER_SIZE : pos + length], c)


def _check(buf: bytes, pos: int) -> int:
    """Length of the valid record at ``pos``; 0 if there is none; -1 if one starts there
    but runs past the end of ``buf`` (a torn tail when nothing valid follows)."""
    n = len(buf)
    if n - pos < HEADER_SIZE:
        return -1 if MAGIC.startswith(buf[pos : pos + 4]) else 0
    magic, version, flags, slen, length, crc, _, _, count, rlen, mlen = _HEADER.unpack_from(
        buf, pos
    )
    if magic != MAGIC or version != VERSION or length < HEADER_SIZE:
        return 0
    if pos + length > n:
        return -1
    ilen = 2 * count if flags & FLAG_IFACE else 0
    if not flags & FLAG_SOURCE:
        slen = 0
    if HEADER_SIZE + rlen + ilen + mlen + slen != length:
        return 0
    if _crc(buf, pos, length) != crc:
        return 0
    return length


def _scan(buf: bytes) -> tuple[list[tuple[int, int]], int, int, int]:
    """Valid (offset, length) records, the end of valid data, torn and corrupt counts."""
    found: list[tuple[int, int]] = []
    pos, n, torn, corrupt = 0, len(buf), 0, 0
    end = n
    while pos < n:
        st = _check(buf, pos)
        if st > 0:
            found.append((pos, st))
            pos += st
            continue
        nxt = _resync(buf, pos + 1)
        if nxt is None:
            if st < 0:
                torn += 1
                end = pos
            else:
                corrupt += 1
            break
        corrupt += 1
        pos = nxt
    return found, end, torn, corrupt


def _resync(buf: bytes, pos: int) -> int | None:
    """Offset of the next valid record at or after ``pos``."""
    while True:
        pos = buf.find(MAGIC, pos)
        if pos < 0:
            return None
        if _check(buf, pos) > 0:
            return pos
        pos += 1


def _source_of(buf: bytes, pos: int, length: int) -> str:
    """The source of the valid record at ``pos`` ("" when it has none)."""
    flags, slen = buf[pos + 5], _U16.unpack_from(buf, pos + 6)[0]
    if not flags & FLAG_SOURCE or not slen:
        return ""
    return buf[pos + length - slen : pos + length].decode("utf-8", "replace")


def _ack_entry(number: int, off: int) -> bytes:
    return _ACK_ENTRY.pack(off, zlib.crc32(_ACK_KEY.pack(number, off)))


def _parse_acks(number: int, data: bytes) -> set[int]:
    """Offsets named by the valid entries of an ack journal."""
    out = set()
    for off, crc in _ACK_ENTRY.iter_unpack(data[: len(data) - len(data) % _ACK_ENTRY.size]):
        if zlib.crc32(_ACK_KEY.pack(number, off)) == crc:
            out.add(off)
    return out


def _seg_name(number: int, kind: str) -> str:
    return f"spool-{number:016d}.{kind}"


# -- the spool ---------------------------------------------------------------------


class Spool:
    """Append-only, checksummed, size-bounded store of unacknowledged batches.

    Raises:
        SpoolError: the directory cannot be created, written or locked.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = False,
    ) -> None:
        if max_bytes < 1 or segment_bytes < 1:
            raise ValueError("max_bytes and segment_bytes must be positive")
        self.directory = os.fspath(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}  # ascending segment numbers
        self._index: dict[tuple[int, int], list[tuple[_Segment, int]]] = {}
        self._active: _Segment | None = None
        self._file = None  # the active segment, opened unbuffered in append mode
        self._next_number = 1
        self._c = dict.fromkeys(_COUNTERS, 0)
        self._full_at: tuple[int, int] | None = None  # drop counters when it became full
        self._failing = False  # the last write failed (said once)
        self._closed = False
        self._lockfd = self._open_directory()
        try:
            self._load()
        except OSError as e:
            self._release()
            raise SpoolError(f"cannot read spool directory {self.directory}: {_why(e)}") from e

    # -- opening -----------------------------------------------------------------
    def _open_directory(self) -> int:
        d = self.directory
        try:
            os.makedirs(d, exist_ok=True)
            fd = os.open(os.path.join(d, "spool.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise SpoolError(f"cannot use spool directory {d}: {_why(e)}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SpoolError(f"spool directory {d} is in use by another spool") from e
            raise SpoolError(f"cannot lock spool directory {d}: {_why(e)}") from e
        return fd

    def _load(self) -> None:
        segs: list[int] = []
        acks: set[int] = set()
        highest = 0
        for name in os.listdir(self.directory):
            m = _SEG_RE.fullmatch(name)
            if m is None:
                continue
            number = int(m.group(1))
            highest = max(highest, number)
            if m.group(2) == "seg":
                segs.append(number)
            else:
                acks.add(number)
        self._next_number = highest + 1
        for number in sorted(segs):
            self._load_segment(number)
        for number in acks - self._segments.keys():  # left by a crash mid-delete
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.directory, _seg_name(number, "ack")))

    def _load_segment(self, number: int) -> None:
        path = os.path.join(self.directory, _seg_name(number, "seg"))
        with open(path, "rb") as f:
            buf = f.read()
        if not buf:
            with contextlib.suppress(OSError):
                os.unlink(path)
            return
        found, end, torn, corrupt = _scan(buf)
        self._c["torn"] += torn
        self._c["corrupt"] += corrupt
        if not found and end == 0:  # only a torn first record: nothing was ever stored
            with contextlib.suppress(OSError):
                os.unlink(path)
            return
        if end < len(buf):
            try:
                os.truncate(path, end)
            except OSError:
                end = len(buf)
        seg = _Segment(number, path, end, foreign=not found)
        acked = self._read_acks(number)
        for off, length in found:
            source = _source_of(buf, off, length)
            _, _, _, _, _, _, epoch, seq, count, _, _ = _HEADER.unpack_from(buf, off)
            seg.offsets.append(off)
            seg.info[off] = (source, epoch, seq, count, length)
            if off in acked:
                seg.acked.add(off)
            else:
                seg.live += 1
                self._index.setdefault((source, epoch, seq), []).append((seg, off))
        self._advance(seg)
        self._segments[number] = seg
        self._c["bytes"] += seg.size
        self._c["records"] += seg.live
        if seg.live == 0 and not seg.foreign:
            self._reclaim(seg)

    def _read_acks(self, number: int) -> set[int]:
        path = os.path.join(self.directory, _seg_name(number, "ack"))
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return set()
        whole = len(data) - len(data) % _ACK_ENTRY.size
        if whole < len(data):  # a torn last entry: cut it so new entries stay aligned
            with contextlib.suppress(OSError):
                os.truncate(path, whole)
        return _parse_acks(number, data)

    # -- writing -----------------------------------------------------------------
    def append(
        self,
        epoch: int,
        sequence: int,
        records: bytes | bytearray | memoryview,
        count: int,
        iface: array | None = None,
        extras: bytes = b"",
        source: str = "",
    ) -> bool:
        """Store one batch; False (and counted) when it is dropped or cannot be written.

        ``source`` names the hunter a forwarded batch comes from ("" for the owner's own).

        Raises ValueError only for inconsistent arguments (a bug in the caller).
        """
        if iface is not None:
            if len(iface) != count:
                raise ValueError(f"iface holds {len(iface)} entries for {count} packets")
            if _BIG_ENDIAN:
                iface = array("H", iface)
                iface.byteswap()
            ib = iface.tobytes()
        else:
            ib = b""
        mb = extras
        sb = source.encode()
        if len(sb) > MAX_SOURCE:
            raise ValueError(f"a source of {len(sb)} bytes does not fit a spool record")
        flags = (FLAG_IFACE if ib else 0) | FLAG_EXTRAS | (FLAG_SOURCE if sb else 0)
        length = HEADER_SIZE + len(records) + len(ib) + len(mb) + len(sb)
        if length > _MAX_LENGTH:
            raise ValueError(f"a batch of {length} bytes does not fit one spool record")
        pre = struct.pack("<BBHI", VERSION, flags, len(sb), length)
        tail = struct.pack("<QQIII", epoch, sequence, count, len(records), len(mb))
        crc = zlib.crc32(ib, zlib.crc32(records, zlib.crc32(tail, zlib.crc32(pre))))
        crc = zlib.crc32(sb, zlib.crc32(mb, crc))
        buf = b"".join((MAGIC, pre, _U32.pack(crc), tail, records, ib, mb, sb))
        with self._lock:
            c = self._c
            if self._closed:  # a capture thread racing shutdown: refused, not raised
                return False
            if c["bytes"] + length > self.max_bytes:
                c["dropped_batches"] += 1
                c["dropped_packets"] += count
                if self._full_at is None:  # said once when dropping starts, once when it ends
                    self._full_at = (c["dropped_batches"] - 1, c["dropped_packets"] - count)
                    log.warning(
                        "disk buffer %s is full (%d bytes of %d): dropping the newest batches "
                        "until the processor acknowledges older ones",
                        self.directory,
                        c["bytes"],
                        self.max_bytes,
                    )
                return False
            if self._full_at is not None:
                b0, p0 = self._full_at
                self._full_at = None
                log.warning(
                    "disk buffer %s has room again; %d batches (%d packets) were dropped "
                    "while it was full",
                    self.directory,
                    c["dropped_batches"] - b0,
                    c["dropped_packets"] - p0,
                )
            seg = self._active
            if seg is not None and seg.size and seg.size + length > self.segment_bytes:
                self._seal()
                seg = None
            if seg is None:
                seg = self._new_segment()
                if seg is None:
                    return False
            off = seg.size
            try:
                mv = memoryview(buf)
                done = self._file.write(buf)  # type: ignore[union-attr]
                while done < length:  # a short write: finish it, or fail below
                    done += self._file.write(mv[done:])  # type: ignore[union-attr]
            except OSError as e:
                self._write_failed(e)
                self._rollback(seg)
                return False
            if self._failing:
                self._failing = False
                log.warning("disk buffer %s: writing works again", self.directory)
            seg.size += length
            seg.offsets.append(off)
            seg.info[off] = (source, epoch, sequence, count, length)
            seg.live += 1
            self._index.setdefault((source, epoch, sequence), []).append((seg, off))
            c["bytes"] += length
            c["records"] += 1
            c["appended"] += 1
            return True

    def _new_segment(self) -> _Segment | None:
        number = self._next_number
        path = os.path.join(self.directory, _seg_name(number, "seg"))
        try:
            self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open across calls
        except OSError as e:
            self._write_failed(e)
            return None
        self._next_number += 1
        seg = _Segment(number, path)
        self._segments[number] = seg
        self._active = seg
        if self.fsync:
            self._sync_dir()
        return seg

    def _write_failed(self, e: OSError) -> None:
        """Count a failed write; log once when failures start (and once when they end)."""
        self._c["write_errors"] += 1
        if not self._failing:
            self._failing = True
            log.error(
                "cannot write to the disk buffer %s: %s; batches that do not fit in memory "
                "are lost until writing works again (spool.write_errors)",
                self.directory,
                _why(e),
            )

    def _rollback(self, seg: _Segment) -> None:
        """Cut a failed write off the active segment; if that fails too, seal it there."""
        try:
            self._file.truncate(seg.size)  # type: ignore[union-attr]
        except OSError:
            self._seal()  # its torn tail is cut at the next open

    def _seal(self) -> None:
        f, seg = self._file, self._active
        self._file = self._active = None
        if f is not None:
            with contextlib.suppress(OSError):
                if self.fsync:
                    os.fsync(f.fileno())
            with contextlib.suppress(OSError):
                f.close()
        if seg is not None and seg.live == 0:
            self._reclaim(seg)

    # -- reading -----------------------------------------------------------------
    def pending(self) -> Iterator[SpooledBatch]:
        """Unacknowledged batches in append order, across segments; picks up batches
        appended while it runs. Every batch handed out counts under ``replayed``."""
        number, index = 0, 0
        fd, fd_number = -1, -1
        try:
            while True:
                with self._lock:
                    loc = self._next_pending(number, index)
                    if loc is None:
                        return
                    seg, index = loc
                    number = seg.number
                    off = seg.offsets[index]
                    length = seg.info[off][4]
                index += 1
                if fd_number != number:
                    if fd >= 0:
                        os.close(fd)
                        fd = -1
                    try:
                        fd = os.open(seg.path, os.O_RDONLY)
                    except FileNotFoundError:  # every record in it was acknowledged meanwhile
                        continue
                    fd_number = number
                batch = self._read(fd, seg, off, length)
                if batch is None:
                    continue
                with self._lock:
                    if seg.is_acked(index - 1):
                        continue
                    self._c["replayed"] += 1
                yield batch
        finally:
            if fd >= 0:
                os.close(fd)

    def next_after(
        self, cursor: tuple[int, int] | None
    ) -> tuple[SpooledBatch, tuple[int, int]] | None:
        """The first unacknowledged batch after ``cursor`` (None: from the start) and the
        cursor to pass next time; None when there is none (yet). Counts ``replayed``.

        Unlike :meth:`pending`, holds nothing open between calls, so a reader can stop
        at the end and carry on from the same place once more is appended.
        """
        number, index = (0, 0) if cursor is None else (cursor[0], cursor[1] + 1)
        while True:
            with self._lock:
                loc = self._next_pending(number, index)
                if loc is None:
                    return None
                seg, index = loc
                number = seg.number
                off = seg.offsets[index]
                length = seg.info[off][4]
            try:
                fd = os.open(seg.path, os.O_RDONLY)
            except FileNotFoundError:  # every record in it was acknowledged meanwhile
                index += 1
                continue
            try:
                batch = self._read(fd, seg, off, length)
            finally:
                os.close(fd)
            if batch is None:
                index += 1
                continue
            with self._lock:
                if seg.is_acked(index):
                    index += 1
                    continue
                self._c["replayed"] += 1
            return batch, (number, index)

    def peek(self, n: int) -> list[SpooledBatch]:
        """The first ``n`` unacknowledged batches (fewer if the spool holds fewer)."""
        out: list[SpooledBatch] = []
        if n <= 0:
            return out
        for b in self.pending():
            out.append(b)
            if len(out) >= n:
                break
        return out

    def _next_pending(self, number: int, index: int) -> tuple[_Segment, int] | None:
        for seg in self._segments.values():
            if seg.number < number or seg.live == 0:
                continue
            i = max(index, seg.first) if seg.number == number else seg.first
            offs = seg.offsets
            while i < len(offs):
                if offs[i] not in seg.acked:
                    return seg, i
                i += 1
        return None

    def _read(self, fd: int, seg: _Segment, off: int, length: int) -> SpooledBatch | None:
        try:
            buf = os.pread(fd, length, off)
        except OSError:
            buf = b""
        if len(buf) == length and _check(buf, 0) == length:
            _, _, flags, _, _, _, epoch, seq, count, rlen, mlen = _HEADER.unpack_from(buf, 0)
            p = HEADER_SIZE + rlen
            iface = None
            if flags & FLAG_IFACE:
                iface = array("H", buf[p : p + 2 * count])
                if _BIG_ENDIAN:
                    iface.byteswap()
                p += 2 * count
            # Extras of another form (none written by lc since it has a wire codec) are
            # damage as far as this version knows.
            if flags & FLAG_EXTRAS or not mlen:
                records = buf[HEADER_SIZE : HEADER_SIZE + rlen]
                extras = buf[p : p + mlen]
                source = _source_of(buf, 0, length)
                return SpooledBatch(
                    epoch, seq, records, count, iface, seg.number, off, extras, source
                )
        with self._lock:  # damaged since it was written: skip it for good
            self._c["corrupt"] += 1
            self._drop_record(seg, off, counted=False)
        return None

    # -- acknowledging -------------------------------------------------------------
    def ack(self, epoch: int, sequence: int, source: str = "") -> bool:
        """Mark a batch delivered; False if the spool holds no such unacknowledged batch."""
        with self._lock:
            locs = self._index.pop((source, epoch, sequence), None)
            if not locs:
                return False
            for seg, off in locs:
                self._drop_record(seg, off, counted=True)
            return True

    def _drop_record(self, seg: _Segment, off: int, counted: bool) -> None:
        """Mark one record gone (acknowledged, or unreadable); persist; reclaim the segment."""
        if off in seg.acked or bisect_left(seg.offsets, off) < seg.first:
            return
        seg.acked.add(off)
        seg.live -= 1
        c = self._c
        c["records"] -= 1
        if counted:
            c["acked"] += 1
        else:
            source, epoch, seq, _, _ = seg.info[off]
            key = (source, epoch, seq)
            locs = self._index.get(key)
            if locs is not None:
                locs[:] = [x for x in locs if x != (seg, off)]
                if not locs:
                    del self._index[key]
        self._advance(seg)
        self._write_ack(seg, off)
        if seg.live == 0:
            self._reclaim(seg)

    @staticmethod
    def _advance(seg: _Segment) -> None:
        offs, acked = seg.offsets, seg.acked
        i = seg.first
        while i < len(offs) and offs[i] in acked:
            acked.discard(offs[i])
            i += 1
        seg.first = i

    def _write_ack(self, seg: _Segment, off: int) -> None:
        """Append one entry to the segment's ack journal (one small write)."""
        path = os.path.join(self.directory, _seg_name(seg.number, "ack"))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, _ack_entry(seg.number, off))
            finally:
                os.close(fd)
        except OSError:
            self._c["write_errors"] += 1  # the ack stays in memory; the batch may come again

    def _reclaim(self, seg: _Segment) -> None:
        """Delete a segment whose every record is acknowledged (never the foreign ones)."""
        if seg.foreign or seg.live:
            return
        if seg is self._active:
            self._seal()  # comes back here with _active cleared
            return
        try:
            os.unlink(seg.path)
        except FileNotFoundError:
            pass
        except OSError:  # kept, with its ack journal; tried again at the next start
            self._c["write_errors"] += 1
            return
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.directory, _seg_name(seg.number, "ack")))
        self._segments.pop(seg.number, None)
        self._c["bytes"] -= seg.size
        if self.fsync:
            self._sync_dir()

    # -- state -----------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """A snapshot: ``bytes`` (segment files on disk), ``records`` (unacknowledged),
        ``appended``, ``replayed``, ``acked``, ``dropped_batches``, ``dropped_packets``,
        ``torn``, ``corrupt``, ``write_errors``."""
        with self._lock:
            return dict(self._c)

    def room(self) -> int:
        """Bytes that can still be appended before the spool is full."""
        with self._lock:
            return self.max_bytes - self._c["bytes"]

    @staticmethod
    def record_size(records_len: int, count: int, extras_len: int) -> int:
        """Bytes one batch takes in a segment (at most: interface indices included)."""
        return HEADER_SIZE + records_len + 2 * count + extras_len

    def __len__(self) -> int:
        with self._lock:
            return self._c["records"]

    def segments(self) -> list[str]:
        """Paths of the segment files the spool currently keeps."""
        with self._lock:
            return [s.path for s in self._segments.values()]

    def _sync_dir(self) -> None:
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def close(self) -> None:
        """Seal the open segment and release the directory. Deletes nothing unacknowledged."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._seal()
            self._release()

    def _release(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._lockfd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(self._lockfd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _why(e: OSError) -> str:
    return e.strerror or str(e)
