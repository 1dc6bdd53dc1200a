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
from collections import OrderedDict
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
    def resume(cls, path: str | os.PathLike[str], linktype: int | None, size: int) -> PcapWriter:
        """Continue a file this writer's format wrote, cut back to ``size`` bytes.

        ``linktype`` None takes the file's own (then ``size`` must cover the header).

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
            if size < _PCAP_HEADER.size and linktype is None:
                raise PcapFormatError(f"{path}: {size} bytes recorded, less than a pcap header")
            if size < _PCAP_HEADER.size:
                assert linktype is not None
                f.seek(0)
                f.truncate()
                head = _PCAP_HEADER.pack(_PCAP_NS, 2, 4, 0, 0, _DEFAULT_SNAPLEN, linktype)
                f.write(head)
                size = end = len(head)
            elif len(head) < _PCAP_HEADER.size:
                raise PcapFormatError(f"{path}: no pcap header to continue")
            magic, _, _, _, _, snaplen, lt = _PCAP_HEADER.unpack(head)
            if linktype is None:
                linktype = lt
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

    def cut_back(self, size: int, packets: int | None = None) -> None:
        """Remove everything written after the file was ``size`` bytes long (an undo:
        ``size`` must be a record boundary this writer passed). ``packets`` is what
        :attr:`packets` said then.

        Raises:
            OSError: the file cannot be truncated.
        """
        if not _PCAP_HEADER.size <= size <= self._bytes:
            raise ValueError(f"cannot cut {self._path} back to {size} of {self._bytes} bytes")
        self._f.flush()
        os.ftruncate(self._f.fileno(), size)
        self._f.seek(size)
        self._bytes = size
        if packets is not None:
            self._packets = packets

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
    """The file and the rotation state of one link type."""

    __slots__ = ("base", "counter", "label", "opened_at", "path", "retired", "size", "writer")

    def __init__(self, label: str | None) -> None:
        self.label = label  # None: the first link type, which gets the plain name
        self.counter = 0
        self.opened_at = 0.0
        self.writer: PcapWriter | None = None  # None: no file yet, or closed while idle
        self.path = ""  # the current file ("" before the first one)
        self.size = 0  # its size while ``writer`` is None
        self.retired = False  # the current file is finished: the next batch starts a new one
        self.base = 0  # bytes of ``writer`` already counted in the sink's closed bytes

    def current_size(self) -> int:
        return self.writer.bytes if self.writer is not None else self.size


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
      A number is taken only by a file that was created: a failed creation (an
      unwritable directory) leaves the counter where it was.

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

    Open files are bounded: at most ``max_open_files`` are open at once (hunters
    choose link types, so their number is theirs); the least recently written is
    closed and reopened, continued at its size, when its link type comes again.

    Undo: :meth:`mark` returns where every file stands and :meth:`rollback` cuts them
    back to it, so a caller can take back a batch (or a group of batches) that it
    could not complete elsewhere.

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
        max_open_files: int = 32,
    ) -> None:
        if rotate_size is not None and rotate_size <= 0:
            raise ValueError(f"rotate_size must be positive, not {rotate_size}")
        if rotate_interval is not None and rotate_interval <= 0:
            raise ValueError(f"rotate_interval must be positive, not {rotate_interval}")
        if max_open_files < 1:
            raise ValueError(f"max_open_files must be positive, not {max_open_files}")
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
        self._open_lru: OrderedDict[int, _Stream] = OrderedDict()  # link types with a writer
        self._max_open = max_open_files
        self._files: list[str] = []
        self._closed_packets = 0
        self._closed_bytes = 0
        self._closed = False
        self._on_open = on_open
        self.reopened = 0  # files closed while idle and opened again
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
        self._adopt(sf.linktype, stream, w)
        self._files.append(sf.path)
        self.resume_notes.append(f"continuing {sf.path} at {w.bytes} bytes")

    def state(self) -> list[SinkFile]:
        """Per link type, the file being written and its size so far (complete batches)."""
        return [
            SinkFile(lt, st.label or "", st.counter, st.path, st.current_size())
            for lt, st in self._streams.items()
            if st.path
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

    @property
    def open_files(self) -> int:
        return len(self._open_lru)

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
        """Write ``count`` ready-made nanosecond records of one link type in one write.

        Raises:
            ValueError: a link type outside 0..65535, or the sink is closed.
            OSError: the file cannot be created or written (nothing of it is left).
        """
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
        if w is None and stream.path and not stream.retired:
            w = self._reopen(linktype, stream)
        if w is not None and self._rotating and self._due_bytes(stream, w, len(records)):
            self._retire(linktype, stream)
            w = None
        if w is None:
            w = self._open(linktype, stream)
        else:
            self._open_lru.move_to_end(linktype)
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
        counter = stream.counter
        while True:
            if self._rotating:
                counter += 1
                name = self.file_name(linktype, counter)
            else:
                name = self.file_name(linktype)
                if taken > 1:
                    stem, suffix = os.path.splitext(name)
                    name = f"{stem}-{taken}{suffix}"
            taken += 1
            if os.path.exists(name):
                continue
            if self._on_open is not None:
                self._on_open(linktype, stream.label or "", counter, name)
            try:
                w = PcapWriter(name, linktype, exclusive=True, buffered=False)
            except FileExistsError:  # created meanwhile by someone else
                continue
            break
        stream.counter = counter  # only now: a failed creation takes no number
        stream.retired = False
        self._adopt(linktype, stream, w)
        self._files.append(name)
        return w

    def _reopen(self, linktype: int, stream: _Stream) -> PcapWriter | None:
        """Open again a file closed while idle, at its size; None if it cannot be continued
        (gone, or changed behind our back): then a new file is started."""
        try:
            w = PcapWriter.resume(stream.path, linktype, stream.size)
        except (OSError, ParseError) as e:
            self.resume_notes.append(f"not continuing {stream.path}: {e}")
            stream.retired = True
            return None
        self.reopened += 1
        self._adopt(linktype, stream, w, base=stream.size)
        return w

    def _adopt(self, linktype: int, stream: _Stream, w: PcapWriter, base: int = 0) -> None:
        stream.writer = w
        stream.path = w.path
        stream.base = base
        if not base:
            stream.opened_at = self._clock()
        lru = self._open_lru
        lru[linktype] = stream
        lru.move_to_end(linktype)
        while len(lru) > self._max_open:
            _, old = lru.popitem(last=False)
            self._close_writer(old)

    def _close_writer(self, stream: _Stream) -> None:
        w = stream.writer
        if w is None:
            return
        stream.writer = None
        stream.size = w.bytes
        w.close()
        self._closed_packets += w.packets
        self._closed_bytes += w.bytes - stream.base

    def _retire(self, linktype: int, stream: _Stream) -> None:
        self._open_lru.pop(linktype, None)
        self._close_writer(stream)
        stream.retired = True

    # -- undo ------------------------------------------------------------------------
    def mark(self) -> dict[int, tuple[str, int, int, bool]]:
        """Where every link type's file stands now, for :meth:`rollback`."""
        return {
            lt: (st.path, st.current_size(), st.writer.packets if st.writer else 0, st.retired)
            for lt, st in self._streams.items()
        }

    def rollback(self, mark: dict[int, tuple[str, int, int, bool]]) -> None:
        """Cut every file back to where :meth:`mark` found it.

        A file started since then (a rotation, a new link type) is cut back to its
        header and stays the current file, so its name is not taken twice.

        Raises:
            OSError: a file cannot be truncated.
        """
        for lt, st in self._streams.items():
            path, size, packets, retired = mark.get(lt, ("", 0, 0, False))
            if path and st.path == path:
                if st.writer is not None:
                    st.writer.cut_back(max(size, _PCAP_HEADER.size), packets)
                else:
                    os.truncate(path, size)
                    st.size = size
                st.retired = retired
                continue
            if path:  # rotated since: the earlier file loses what it got after the mark
                os.truncate(path, size)
            if st.writer is not None:
                st.writer.cut_back(_PCAP_HEADER.size, 0)
            elif st.path:
                os.truncate(st.path, _PCAP_HEADER.size)
                st.size = _PCAP_HEADER.size

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
            self._close_writer(s)
        self._open_lru.clear()

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
            s.writer.bytes - s.base for s in self._streams.values() if s.writer is not None
        )
