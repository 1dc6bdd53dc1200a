"""Writing capture files: :class:`PcapWriter` (one file) and :class:`PcapSink` (a
processor's unified output: one file per link type, rotation, resume after a crash).

Format written: classic pcap, little-endian, nanosecond magic 0xa1b23c4d.
Wireshark, tshark and tcpdump read it, and it keeps the hunters' nanosecond
timestamps exactly, which the microsecond format would not. Written timestamps
must lie in [1970, 2106): pcap stores unsigned 32-bit seconds.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .errors import ParseError
from .pcaprecord import (
    _DEFAULT_SNAPLEN,
    _MAX_TS_NS,
    _NS,
    _PCAP_HEADER,
    _PCAP_NS,
    _PCAP_RECORD,
    MAX_RECORD,
    PcapFormatError,
    frame_records,
    linktype_name,
)

__all__ = ["PcapSink", "PcapWriter", "SinkFile"]


class PcapWriter:
    """Write a little-endian, nanosecond-precision classic pcap file.

    Each call to ``write`` or ``write_columns`` issues exactly one file write, so
    a crash or a concurrent reader never sees half of a batch's framing built by
    us (the OS may still cut a write short on a full disk). Packets longer than
    ``snaplen`` are cut to it, keeping their original length, as a capture would.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        linktype: int,
        snaplen: int = _DEFAULT_SNAPLEN,
        exclusive: bool = False,
        buffered: bool = True,
    ) -> None:
        if not 0 <= linktype <= 0xFFFF:
            raise ValueError(f"linktype {linktype} out of range (0..65535)")
        if not 0 < snaplen <= MAX_RECORD:
            raise ValueError(f"snaplen {snaplen} out of range (1..{MAX_RECORD})")
        self._path = os.fspath(path)
        self._linktype = linktype
        self._snaplen = snaplen
        self._packets = 0
        # exclusive: FileExistsError rather than overwrite an existing file.
        # Unbuffered (whole batches per write): a failed write is cut off cleanly.
        self._f = open(  # noqa: SIM115 (closed by close())
            self._path, "xb" if exclusive else "wb", buffering=-1 if buffered else 0
        )
        header = _PCAP_HEADER.pack(_PCAP_NS, 2, 4, 0, 0, snaplen, linktype)
        self._f.write(header)
        self._bytes = len(header)

    @classmethod
    def resume(cls, path: str | os.PathLike[str], linktype: int, size: int) -> PcapWriter:
        """Continue a file this writer's format wrote, cut back to ``size`` bytes.

        ``size`` is the length known to hold only complete records (a processor records
        it after every batch), so whatever a crash left past it (a torn record, or
        batches never acknowledged) is removed. A ``size`` below the header's length
        rewrites the header.

        Raises:
            PcapFormatError: the file is not a nanosecond little-endian pcap of
                ``linktype``, or is shorter than ``size``.
            OSError: it cannot be opened for writing.
        """
        path = os.fspath(path)
        f = open(path, "r+b", buffering=0)  # noqa: SIM115 (owned by the writer)
        try:
            head = f.read(_PCAP_HEADER.size)
            end = f.seek(0, os.SEEK_END)
            if size < _PCAP_HEADER.size:
                f.seek(0)
                f.truncate()
                head = _PCAP_HEADER.pack(_PCAP_NS, 2, 4, 0, 0, _DEFAULT_SNAPLEN, linktype)
                f.write(head)
                size = end = len(head)
            elif len(head) < _PCAP_HEADER.size:
                raise PcapFormatError(f"{path}: no pcap header to continue")
            magic, _, _, _, _, snaplen, lt = _PCAP_HEADER.unpack(head)
            if magic != _PCAP_NS or lt != linktype:
                raise PcapFormatError(
                    f"{path}: not a nanosecond pcap of link type {linktype} "
                    f"(magic {magic:#x}, link type {lt}); not continuing it"
                )
            if end < size:
                raise PcapFormatError(
                    f"{path} holds {end} bytes, fewer than the {size} recorded as written"
                )
            f.truncate(size)
            f.seek(size)
        except BaseException:
            f.close()
            raise
        self = cls.__new__(cls)
        self._path = path
        self._linktype = linktype
        self._snaplen = snaplen or _DEFAULT_SNAPLEN
        self._packets = 0
        self._f = f
        self._bytes = size
        return self

    @property
    def path(self) -> str:
        return self._path

    @property
    def linktype(self) -> int:
        return self._linktype

    @property
    def snaplen(self) -> int:
        return self._snaplen

    @property
    def packets(self) -> int:
        """Packets written so far."""
        return self._packets

    def write(self, ts_ns: int, data: bytes, origlen: int | None = None) -> None:
        """Append one packet; ``origlen`` defaults to ``len(data)``."""
        if not isinstance(ts_ns, int):
            raise TypeError(f"ts_ns must be int nanoseconds, not {type(ts_ns).__name__}")
        if origlen is None:
            origlen = len(data)
        caplen = len(data)
        if origlen < caplen:
            raise ValueError(f"origlen {origlen} < captured length {caplen}")
        if not 0 <= ts_ns < _MAX_TS_NS:
            raise ValueError(f"timestamp {ts_ns} ns outside pcap's range [1970, 2106)")
        if origlen > 0xFFFFFFFF:
            raise ValueError(f"origlen {origlen} does not fit in 32 bits")
        if caplen > self._snaplen:
            caplen = self._snaplen
            data = data[:caplen]
        sec, ns = divmod(ts_ns, _NS)
        self._f.write(_PCAP_RECORD.pack(sec, ns, caplen, origlen) + data)
        self._packets += 1
        self._bytes += 16 + caplen

    def write_columns(
        self,
        ts_ns: Sequence[int],
        caplen: Sequence[int],
        origlen: Sequence[int],
        blob: bytes | bytearray | memoryview,
        start: int = 0,
        end: int | None = None,
    ) -> int:
        """Append packets ``start..end`` of a columnar batch in one write; returns bytes written.

        The columns have the layout of :class:`Columns`: packet ``i`` is
        ``blob[o : o + caplen[i]]`` with ``o = sum(caplen[:i])``. Everything is
        checked before anything is written, so a bad batch leaves the file as it was.
        """
        out = frame_records(ts_ns, caplen, origlen, blob, start, end, self._snaplen)
        if not out:
            return 0
        n = (len(caplen) if end is None else end) - start
        self._f.write(out)
        self._packets += n
        self._bytes += len(out)
        return len(out)

    def write_records(self, records: bytes | memoryview, count: int) -> int:
        """Append ``count`` ready-made nanosecond records (see :func:`frame_records`).

        The caller has checked them (:func:`record_lengths`); one write, no per-packet work.
        A failed write (a full disk) is cut back off the file before the error is raised,
        so the file never keeps part of a batch.
        """
        try:
            done = self._f.write(records)
            if done is not None and done < len(records):  # unbuffered: a short write
                mv = memoryview(records)
                while done < len(records):
                    done += self._f.write(mv[done:]) or 0
        except OSError:
            self._cut_back()
            raise
        self._packets += count
        self._bytes += len(records)
        return len(records)

    def _cut_back(self) -> None:
        # Exact for unbuffered writers (the sink's); a buffered one may still hold bytes.
        with contextlib.suppress(OSError, ValueError):
            os.ftruncate(self._f.fileno(), self._bytes)
            self._f.seek(self._bytes)

    def flush(self) -> None:
        """Hand buffered data to the OS, so readers of the file see it.

        On failure (a full disk) the file is cut back to its last complete batch."""
        try:
            self._f.flush()
        except OSError:
            self._cut_back()
            raise

    def fsync(self) -> None:
        """Flush and ask the OS to put the data on disk."""
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        """Flush and close; safe to call twice."""
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PcapWriter({self._path!r}, linktype={self._linktype})"

    # Last in the class body, so that it does not shadow the builtin in the
    # annotations above it.
    @property
    def bytes(self) -> int:
        """The file's size so far (header included), whether flushed or not."""
        return self._bytes


@dataclass(frozen=True, slots=True)
class SinkFile:
    """Where a :class:`PcapSink` stands for one link type (see ``PcapSink.state``)."""

    linktype: int
    label: str  # "" for the link type that owns the plain name
    counter: int  # rotation counter of the file (0 without rotation)
    path: str
    size: int  # bytes of complete batches, header included


class _Stream:
    """The open file (if any) and the rotation state of one link type."""

    __slots__ = ("counter", "label", "opened_at", "writer")

    def __init__(self, label: str | None) -> None:
        self.label = label  # None: the first link type, which gets the plain name
        self.counter = 0
        self.opened_at = 0.0
        self.writer: PcapWriter | None = None


class PcapSink:
    """A processor's unified output: one pcap per link type, optionally rotated.

    Naming rules. ``path`` is split into ``<stem><suffix>`` (``out`` + ``.pcap``).

    * A classic pcap holds a single link type, and mixing link types in one file
      would silently corrupt it for every reader. So the first link type written
      owns the plain name, and each other link type gets its own file named
      ``<stem>.<linkname><suffix>`` (``out.linux_sll.pcap``), with ``linkname``
      from :func:`linktype_name`.
    * Without rotation the first link type goes to ``path`` exactly.
    * With rotation every file gets a 6-digit counter, per link type, starting at
      000001: ``out-000001.pcap``, ``out-000002.pcap``, ``out.linux_sll-000001.pcap``.

    Rotation rules, checked before each batch is written:

    * ``rotate_size`` (bytes): a new file is started if the batch would take the
      current file past ``rotate_size``. A batch is never split, so a single
      batch larger than ``rotate_size`` still goes, whole, into one (new) file.
    * ``rotate_interval`` (seconds of ``clock``): a new file is started when that
      long has passed since the current one was opened. Rotation happens on the
      next write; an idle sink keeps its file open.

    Files are opened when their first batch arrives (no empty files) and their
    directories are created as needed. An existing file is never overwritten: a
    rotating sink skips to the next free counter, and a plain name that is taken
    becomes ``<stem>-<n><suffix>`` (``out-2.pcap``). Each batch is one write call,
    so no file ever holds half a record of ours.

    Continuing after a restart: ``resume`` lists, per link type, the file a previous
    run was writing and the size recorded as complete (:meth:`state` gives these).
    That file is cut back to the size and appended to, and rotation counters carry
    on from it. ``on_open(linktype, label, counter, path)`` is called before a new
    file is created, so a caller can record it first and recognise it after a crash.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        rotate_size: int | None = None,
        rotate_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        resume: Sequence[SinkFile] = (),
        on_open: Callable[[int, str, int, str], None] | None = None,
    ) -> None:
        if rotate_size is not None and rotate_size <= 0:
            raise ValueError(f"rotate_size must be positive, not {rotate_size}")
        if rotate_interval is not None and rotate_interval <= 0:
            raise ValueError(f"rotate_interval must be positive, not {rotate_interval}")
        p = Path(path)
        self._dir = p.parent
        self._stem = p.stem
        self._suffix = p.suffix
        self._path = os.fspath(path)
        self._rotate_size = rotate_size
        self._rotate_interval = rotate_interval
        self._rotating = rotate_size is not None or rotate_interval is not None
        self._clock = clock
        self._streams: dict[int, _Stream] = {}
        self._files: list[str] = []
        self._closed_packets = 0
        self._closed_bytes = 0
        self._closed = False
        self._on_open = on_open
        self.resume_notes: list[str] = []  # what resuming did, for the log
        for sf in resume:
            self._resume(sf)

    def _resume(self, sf: SinkFile) -> None:
        label = sf.label or None
        if label is None and any(st.label is None for st in self._streams.values()):
            label = linktype_name(sf.linktype)
        stream = _Stream(label)
        stream.counter = sf.counter
        self._streams[sf.linktype] = stream
        if not os.path.exists(sf.path):
            self.resume_notes.append(f"{sf.path} is gone; its link type starts a new file")
            return
        try:
            w = PcapWriter.resume(sf.path, sf.linktype, sf.size)
        except (OSError, ParseError) as e:
            self.resume_notes.append(f"not continuing {sf.path}: {e}")
            return
        stream.writer = w
        stream.opened_at = self._clock()
        self._files.append(sf.path)
        self.resume_notes.append(f"continuing {sf.path} at {w.bytes} bytes")

    def state(self) -> list[SinkFile]:
        """Per link type, the file being written and its size so far (complete batches)."""
        return [
            SinkFile(lt, st.label or "", st.counter, st.writer.path, st.writer.bytes)
            for lt, st in self._streams.items()
            if st.writer is not None
        ]

    @property
    def path(self) -> str:
        return self._path

    @property
    def packets(self) -> int:
        """Packets written, over every file."""
        return self._closed_packets + sum(
            s.writer.packets for s in self._streams.values() if s.writer is not None
        )

    def files(self) -> list[str]:
        """Every file written so far, in the order they were opened."""
        return list(self._files)

    def file_name(self, linktype: int, counter: int | None = None) -> str:
        """The path a link type's file (with a rotation counter) gets; see the class doc."""
        stream = self._streams.get(linktype)
        first = stream.label is None if stream else not self._streams
        if first and counter is None:
            return self._path
        stem = self._stem if first else f"{self._stem}.{linktype_name(linktype)}"
        if counter is not None:
            stem = f"{stem}-{counter:06d}"
        return os.fspath(self._dir / f"{stem}{self._suffix}")

    def write_columns(
        self,
        linktype: int,
        ts_ns: Sequence[int],
        caplen: Sequence[int],
        origlen: Sequence[int],
        blob: bytes | bytearray | memoryview,
        start: int = 0,
        end: int | None = None,
    ) -> int:
        """Write a batch of packets of one link type in one write; returns bytes written."""
        if end is None:
            end = len(caplen)
        if end <= start:
            return 0
        records = frame_records(ts_ns, caplen, origlen, blob, start, end)
        return self.write_records(linktype, records, end - start)

    def write_records(self, linktype: int, records: bytes | memoryview, count: int) -> int:
        """Write ``count`` ready-made nanosecond records of one link type in one write."""
        if self._closed:
            raise ValueError("write to a closed PcapSink")
        if not 0 <= linktype <= 0xFFFF:
            raise ValueError(f"linktype {linktype} out of range (0..65535)")
        if count <= 0:
            return 0
        stream = self._streams.get(linktype)
        if stream is None:
            stream = _Stream(None if not self._streams else linktype_name(linktype))
            self._streams[linktype] = stream
        w = stream.writer
        if w is not None and self._rotating and self._due_bytes(stream, w, len(records)):
            self._retire(w)
            w = stream.writer = None
        if w is None:
            w = self._open(linktype, stream)
        return w.write_records(records, count)

    def _due_bytes(self, stream: _Stream, w: PcapWriter, nbytes: int) -> bool:
        interval = self._rotate_interval
        if interval is not None and self._clock() - stream.opened_at >= interval:
            return True
        size = self._rotate_size
        # Not an empty file (a batch bigger than the limit still goes whole into one);
        # ``bytes``, not ``packets``: a continued file has packets from an earlier run.
        return size is not None and w.bytes > _PCAP_HEADER.size and w.bytes + nbytes > size

    def _open(self, linktype: int, stream: _Stream) -> PcapWriter:
        parent = os.path.dirname(self.file_name(linktype))
        if parent:
            os.makedirs(parent, exist_ok=True)
        taken = 1
        while True:
            if self._rotating:
                stream.counter += 1
                name = self.file_name(linktype, stream.counter)
            else:
                name = self.file_name(linktype)
                if taken > 1:
                    stem, suffix = os.path.splitext(name)
                    name = f"{stem}-{taken}{suffix}"
            taken += 1
            if os.path.exists(name):
                continue
            if self._on_open is not None:
                self._on_open(linktype, stream.label or "", stream.counter, name)
            try:
                w = PcapWriter(name, linktype, exclusive=True, buffered=False)
            except FileExistsError:  # created meanwhile by someone else
                continue
            break
        stream.writer = w
        stream.opened_at = self._clock()
        self._files.append(name)
        return w

    def _retire(self, w: PcapWriter) -> None:
        w.close()
        self._closed_packets += w.packets
        self._closed_bytes += w.bytes

    def flush(self) -> None:
        """Hand every open file's buffered data to the OS."""
        for s in self._streams.values():
            if s.writer is not None:
                s.writer.flush()

    def fsync(self) -> None:
        """Flush every open file and ask the OS to put it on disk."""
        for s in self._streams.values():
            if s.writer is not None:
                s.writer.fsync()

    def close(self) -> None:
        """Close every open file; safe to call twice."""
        self._closed = True
        for s in self._streams.values():
            if s.writer is not None:
                self._retire(s.writer)
                s.writer = None

    def __enter__(self) -> PcapSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Last in the class body, so that it does not shadow the builtin in annotations.
    @property
    def bytes(self) -> int:
        """Bytes written (file headers included), over every file."""
        return self._closed_bytes + sum(
            s.writer.bytes for s in self._streams.values() if s.writer is not None
        )
