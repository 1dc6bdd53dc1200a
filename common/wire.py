"""The one codec of ``PacketBatch``, and JSON views of wire messages.

A batch carries its packets as nanosecond pcap records back to back (see
proto/lc.proto for why); the per-packet interface indices are a packed uint16
array; per-packet metadata is sparse (``meta``, with an index) or dense
(``meta_table`` + a uint16 ``meta_ref`` per packet); session events ride along in
``events``. This module is the only place that knows that layout:

* hunter side: :func:`encode_meta` turns a sealed batch's metadata entries into the
  sparse and dense forms, :func:`encode_extras` gives the spool's stored form of
  everything besides the records (metadata and events, one serialised PacketBatch
  holding only those fields), and :func:`encode_batch` builds the message sent, from
  a sealed batch's parts or from a spooled batch's records and extras
  (:func:`encode_batch_bytes`: the same, serialised, what the uplink sends);
* processor side: :func:`split_batch` parses a received batch without copying its
  records, :func:`unpack_batch` checks it (framing, indices, events) and returns
  :class:`BatchRecords`.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError, Message

from lc.common.errors import ParseError
from lc.common.pcaprecord import check_caplens, record_lengths
from lc.proto import lc_pb2

__all__ = [
    "BatchRecords",
    "build_batch",
    "dumps",
    "encode_batch",
    "encode_batch_bytes",
    "encode_extras",
    "encode_meta",
    "event_problem",
    "filter_to_proto",
    "forward_extras",
    "message_to_json",
    "split_batch",
    "unpack_batch",
]

MAX_PORT = 0xFFFF

_LITTLE = sys.byteorder == "little"


def _to_le(a: array) -> bytes:
    if _LITTLE:
        return a.tobytes()
    b = array(a.typecode, a)
    b.byteswap()
    return b.tobytes()


def _from_le(typecode: str, raw: bytes, what: str, count: int) -> array:
    a = array(typecode)
    if len(raw) != count * a.itemsize:
        raise ParseError(
            f"batch column {what}: {len(raw)} bytes for {count} packets "
            f"(expected {count * a.itemsize})"
        )
    a.frombytes(raw)
    if not _LITTLE:
        a.byteswap()
    return a


@dataclass(slots=True)
class BatchRecords:
    """A received batch, checked: its records, their captured lengths, their interfaces,
    its metadata and its events."""

    records: bytes | memoryview  # nanosecond pcap records back to back (read-only)
    caplen: array  # 'I', one per record
    iface: array | None  # 'H' indices into ``interfaces``; None = all on interface 0
    interfaces: list[tuple[str, int]]  # (name, linktype)
    meta: list[lc_pb2.PacketMeta] = field(default_factory=list)
    meta_table: list[lc_pb2.PacketMeta] = field(default_factory=list)
    meta_ref: array | None = None  # 'H' per packet: 0 none, k = meta_table[k - 1]
    # Valid events with their position in the batch (the ``seq`` of the event id).
    events: list[tuple[int, lc_pb2.Event]] = field(default_factory=list)
    bad_events: int = 0  # events skipped as malformed (see :func:`event_problem`)
    keylog: list[bytes] = field(default_factory=list)  # TLS key log lines (field 17)
    # DNS tunneling statistics (checked by their consumer, lc.processor.tunnels)
    dns_tunnel: list[lc_pb2.DnsTunnelStats] = field(default_factory=list)
    event_count: int = -1  # events the batch carried, malformed ones included (-1: unknown)

    def __len__(self) -> int:
        return len(self.caplen)

    def packet_meta(self) -> list[lc_pb2.PacketMeta | None]:
        """Per packet, its metadata (dense table entry, else sparse entry, else None)."""
        out: list[lc_pb2.PacketMeta | None] = [None] * len(self)
        for m in self.meta:
            out[m.index] = m
        if self.meta_ref is not None:
            table = [None, *self.meta_table]
            for i, k in enumerate(self.meta_ref):
                if k:
                    out[i] = table[k]
        return out

    def linktype_groups(self) -> list[tuple[int, bytes, int]]:
        """The records split by link type, in order: [(linktype, records, count)]."""
        interfaces = self.interfaces
        linktypes = {lt for _, lt in interfaces}
        if self.iface is None or len(linktypes) == 1:
            return [(interfaces[0][1], self.records, len(self))] if len(self) else []
        parts: dict[int, list[bytes]] = {}
        mv = memoryview(self.records)
        off = 0
        for idx, c in zip(self.iface, self.caplen, strict=True):
            end = off + 16 + c
            parts.setdefault(interfaces[idx][1], []).append(mv[off:end])
            off = end
        return [(lt, b"".join(p), len(p)) for lt, p in parts.items()]


# -- hunter side ----------------------------------------------------------------------


def encode_meta(
    meta: Sequence[tuple[int, Any]], count: int
) -> tuple[list[lc_pb2.PacketMeta], list[lc_pb2.PacketMeta], array | None]:
    """A sealed batch's metadata entries for the wire: (sparse, table, refs).

    Entries are (index, filter ids), sent sparse, or (index, PacketMeta), where one
    PacketMeta object is shared by many packets (a call's RTP): those go dense, each
    distinct object once in the table and a uint16 reference per packet.
    """
    sparse: list[lc_pb2.PacketMeta] = []
    table: list[lc_pb2.PacketMeta] = []
    refs: array | None = None
    slot: dict[int, int] = {}
    for index, v in meta:
        if isinstance(v, lc_pb2.PacketMeta):
            if refs is None:
                refs = array("H", bytes(2 * count))
            k = slot.get(id(v))
            if k is None:
                if len(table) >= 0xFFFF:  # cannot happen with batches <= 32768 packets
                    continue
                table.append(v)
                k = slot[id(v)] = len(table)
            refs[index] = k
        else:
            sparse.append(lc_pb2.PacketMeta(index=index, filter_ids=v))
    return sparse, table, refs


def _set_extras(
    batch: lc_pb2.PacketBatch,
    meta: Sequence[tuple[int, Any]],
    count: int,
    events: Sequence[lc_pb2.Event],
    keylog: Sequence[bytes] = (),
    tunnel: Sequence[lc_pb2.DnsTunnelStats] = (),
) -> None:
    if keylog:
        batch.tls_keylog.extend(keylog)
    if tunnel:
        batch.dns_tunnel.extend(tunnel)
    if meta:
        sparse, table, refs = encode_meta(meta, count)
        if sparse:
            batch.meta.extend(sparse)
        if refs is not None:
            batch.meta_table.extend(table)
            batch.meta_ref = _to_le(refs)
    if events:
        batch.events.extend(events)
        for i, ev in enumerate(batch.events):
            ev.seq = i


def encode_extras(
    meta: Sequence[tuple[int, Any]],
    count: int,
    events: Sequence[lc_pb2.Event] = (),
    keylog: Sequence[bytes] = (),
    tunnel: Sequence[lc_pb2.DnsTunnelStats] = (),
    caplen: array | None = None,
) -> bytes:
    """What a spool stores besides the records: the metadata and events of a batch of
    ``count`` packets (and its caplen column, when given, so that a replayed batch is
    checked in bulk too), as a serialised PacketBatch holding only those fields (b""
    when there are none). :func:`encode_batch` merges it back with ``extras=``."""
    if not meta and not events and not keylog and not tunnel and caplen is None:
        return b""
    holder = lc_pb2.PacketBatch()
    _set_extras(holder, meta, count, events, keylog, tunnel)
    if caplen is not None:
        holder.caplen = _to_le(caplen)
    return holder.SerializeToString()


def encode_batch(
    hunter_id: str,
    epoch: int,
    sequence: int,
    interfaces: Sequence[tuple[str, int]],
    records: bytes,
    count: int,
    iface: array | None = None,
    meta: Sequence[tuple[int, Any]] = (),
    events: Sequence[lc_pb2.Event] = (),
    extras: bytes = b"",
    sealed_at_ns: int = 0,
    keylog: Sequence[bytes] = (),
    tunnel: Sequence[lc_pb2.DnsTunnelStats] = (),
    caplen: array | None = None,
) -> lc_pb2.PacketBatch:
    """The PacketBatch a hunter sends for one numbered batch.

    From a sealed batch: its ``meta`` entries (see :func:`encode_meta`) and ``events``;
    from a spooled one: its stored ``extras`` (see :func:`encode_extras`). ``caplen``
    ('I', one per record, as framed) lets the processor check the records in bulk.

    Raises:
        ParseError: ``extras`` is not what :func:`encode_extras` wrote.
    """
    batch = build_batch(hunter_id, epoch, sequence, records, count, interfaces, iface,
                        sealed_at_ns=sealed_at_ns, caplen=caplen)  # fmt: skip
    if extras:
        try:
            batch.MergeFromString(extras)
        except DecodeError as e:
            raise ParseError(f"batch {sequence}: stored metadata does not decode: {e}") from None
    else:
        _set_extras(batch, meta, count, events, keylog, tunnel)
    return batch


_DATA_KEY = b"\x2a"  # PacketBatch.data: field 5, length-delimited (5 << 3 | 2)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_batch_bytes(
    hunter_id: str,
    epoch: int,
    sequence: int,
    interfaces: Sequence[tuple[str, int]],
    records: bytes | bytearray | memoryview,
    count: int,
    *args: Any,
    **kwargs: Any,
) -> bytes:
    """:func:`encode_batch` (same arguments), serialised: exactly the bytes of its
    ``SerializeToString()``, without the records ever going into a message.

    Protobuf writes a message's fields in field-number order, so the serialised batch
    is the fields before ``data`` (1-4), ``data``, then the rest (9 and up): each part
    is serialised on its own and the records are joined in between, one copy in all
    (a message copies them on assignment and again, slowly for megabytes, when it is
    serialised).

    Raises:
        ParseError: as :func:`encode_batch`.
    """
    rest = encode_batch("", 0, 0, interfaces, b"", count, *args, **kwargs)
    rest.count = 0  # the head carries it
    head = lc_pb2.PacketBatch(hunter_id=hunter_id, epoch=epoch, sequence=sequence, count=count)
    if not len(records):
        return head.SerializeToString() + rest.SerializeToString()
    return b"".join(
        (
            head.SerializeToString(),
            _DATA_KEY,
            _varint(len(records) if not isinstance(records, memoryview) else records.nbytes),
            records,
            rest.SerializeToString(),
        )
    )


def build_batch(
    hunter_id: str,
    epoch: int,
    sequence: int,
    records: bytes,
    count: int,
    interfaces: Sequence[tuple[str, int]],
    iface: array | None = None,
    meta: Sequence[lc_pb2.PacketMeta] = (),
    sealed_at_ns: int = 0,
    meta_table: Sequence[lc_pb2.PacketMeta] = (),
    meta_ref: array | None = None,
    events: Sequence[lc_pb2.Event] = (),
    caplen: array | None = None,
) -> lc_pb2.PacketBatch:
    """Build a PacketBatch from framed records (see :func:`lc.common.pcapfile.frame_records`)
    and metadata already in wire form (tests and tools; hunters use :func:`encode_batch`).
    ``caplen``: the records' captured lengths ('I'), sent as the bulk-check column."""
    batch = lc_pb2.PacketBatch(
        hunter_id=hunter_id,
        epoch=epoch,
        sequence=sequence,
        count=count,
        data=records,
        iface=b"" if iface is None or iface.count(0) == count else _to_le(iface),
        sealed_at_ns=sealed_at_ns,
        caplen=b"" if caplen is None else _to_le(caplen),
    )
    for name, lt in interfaces:
        batch.interfaces.add(name=name, linktype=lt)
    if meta:
        batch.meta.extend(meta)
    if meta_ref is not None:
        batch.meta_table.extend(meta_table)
        batch.meta_ref = _to_le(meta_ref)
    if events:
        batch.events.extend(events)
    return batch


# -- processor side -------------------------------------------------------------------


def event_problem(ev: lc_pb2.Event) -> str | None:
    """Why an event cannot be used (None when it can): its addresses must be 4 or 16
    bytes (both the same family) or absent, ports 16-bit, the IP protocol 8-bit, and it
    needs a dataset."""
    if not ev.dataset:
        return "no dataset"
    if ev.HasField("flow"):
        f = ev.flow
        if len(f.src_ip) not in (0, 4, 16) or len(f.dst_ip) not in (0, 4, 16):
            return "address neither 4 nor 16 bytes"
        if f.src_ip and f.dst_ip and len(f.src_ip) != len(f.dst_ip):
            return "addresses of two families"
        if f.src_port > MAX_PORT or f.dst_port > MAX_PORT:
            return "port above 65535"
        if f.ip_proto > 255:
            return "IP protocol above 255"
    return None


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at ``pos``; IndexError past the end."""
    value = shift = 0
    while True:
        b = raw[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


# The keys of PacketBatch fields 1-4 (hunter_id: length-delimited; epoch, sequence,
# count: varints), in the order a serialiser writes them.
_HEAD_KEYS = (0x0A, 0x10, 0x18, 0x20)


def split_batch(raw: bytes) -> tuple[lc_pb2.PacketBatch, memoryview | None]:
    """Parse a serialised PacketBatch, leaving its records where they are.

    The processor's request deserialiser: a parsed message copies ``data`` (megabytes)
    into itself and copies it again each time it is read. A batch as serialisers write
    it (fields in number order: 1-4, ``data``, then 9 and up, as
    :func:`encode_batch_bytes` does) is split around ``data``: the other fields are
    parsed as one message, and ``data`` is returned as a read-only view of ``raw``.

    Anything else, or anything the split might read differently from a plain parse
    (``data`` twice, an unusual encoding: the fields parsed do not serialise back to the
    bytes they came from), is parsed whole and returned with None: then the message
    holds ``data``. Either way the result is what ``PacketBatch.FromString(raw)`` gives
    (and a message it refuses raises its DecodeError).
    """
    try:
        pos = 0
        for key in _HEAD_KEYS:
            if pos < len(raw) and raw[pos] == key:
                value, pos = _read_varint(raw, pos + 1)
                if key == 0x0A:
                    pos += value
        if pos < len(raw) and raw[pos] == _DATA_KEY[0]:
            size, start = _read_varint(raw, pos + 1)
            end = start + size
            if end <= len(raw):
                rest = raw[:pos] + raw[end:]
                msg = lc_pb2.PacketBatch.FromString(rest)
                if not msg.data and msg.ByteSize() == len(rest):
                    return msg, memoryview(raw)[start:end]
    except (IndexError, ValueError, DecodeError):
        pass  # parsed whole below: the same verdict as a plain parse
    return lc_pb2.PacketBatch.FromString(raw), None


def unpack_batch(batch: lc_pb2.PacketBatch, data: bytes | memoryview | None = None) -> BatchRecords:
    """Check a received batch's framing and indices and return its records
    (``data``: the batch's records when :func:`split_batch` left them out of it).

    A malformed event does not refuse the batch: it is skipped and counted in
    ``bad_events`` (its packets are good, and the hunter would only send it again).

    The records are checked in bulk against the batch's ``caplen`` column when it has
    one (:func:`lc.common.pcaprecord.check_caplens`), else walked one by one.

    Raises:
        ParseError: the records do not add up to ``count`` (or disagree with the caplen
            column), an interface or metadata index is out of range, or no interface
            is given.
    """
    n = batch.count
    if data is None:
        data = batch.data  # each access copies the field: once
    try:
        column = batch.caplen
        caplen = check_caplens(data, n, column) if column else record_lengths(data, n)
    except ParseError as e:
        raise ParseError(f"batch {batch.sequence}: {e}") from None
    interfaces = [(i.name, i.linktype) for i in batch.interfaces]
    if not interfaces:
        raise ParseError(f"batch {batch.sequence}: no interface (link type) given")
    iface = None
    if batch.iface:
        iface = _from_le("H", batch.iface, "iface", n)
        if n and max(iface) >= len(interfaces):
            raise ParseError(f"batch {batch.sequence}: interface index out of range")
    for m in batch.meta:
        if m.index >= n:
            raise ParseError(f"batch {batch.sequence}: metadata for packet {m.index} of {n}")
    meta_ref = None
    if batch.meta_ref:
        meta_ref = _from_le("H", batch.meta_ref, "meta_ref", n)
        if n and max(meta_ref) > len(batch.meta_table):
            raise ParseError(f"batch {batch.sequence}: metadata reference out of range")
    events: list[tuple[int, lc_pb2.Event]] = []
    bad = 0
    for i, ev in enumerate(batch.events):
        if event_problem(ev) is None:
            events.append((i, ev))
        else:
            bad += 1
    return BatchRecords(
        data, caplen, iface, interfaces, list(batch.meta), list(batch.meta_table),
        meta_ref, events, bad, list(batch.tls_keylog), list(batch.dns_tunnel), len(batch.events),
    )  # fmt: skip


def forward_extras(cols: BatchRecords) -> bytes:
    """What an edge processor spools, besides the records and interface indices, to
    forward a received batch upstream unchanged: its interface table, metadata, events,
    key log lines and tunneling statistics, as a serialised PacketBatch holding only
    those fields (:func:`encode_batch` with ``extras=`` and no interfaces rebuilds it).
    The records' caplen column goes too (checked here already; the upstream checks the
    records in bulk with it), whether or not the hunter sent one.

    Events keep their positions (the ``n`` of their event id, ``hunter:epoch:seq:n``):
    an event this processor skipped as malformed is sent as an empty Event, which the
    upstream skips as malformed too. Events a processor sink appended to ``cols.events``
    after the hunter's (a tunneling alert) are not the hunter's and are left out."""
    holder = lc_pb2.PacketBatch()
    for name, lt in cols.interfaces:
        holder.interfaces.add(name=name, linktype=lt)
    if len(cols):
        holder.caplen = _to_le(cols.caplen)
    if cols.meta:
        holder.meta.extend(cols.meta)
    if cols.meta_ref is not None:
        holder.meta_table.extend(cols.meta_table)
        holder.meta_ref = _to_le(cols.meta_ref)
    total = cols.event_count if cols.event_count >= 0 else len(cols.events) + cols.bad_events
    if total:
        for i, ev in cols.events[: total - cols.bad_events]:  # the hunter's, in order
            while len(holder.events) < i:
                holder.events.add()  # a malformed one: skipped here and upstream alike
            holder.events.append(ev)
        while len(holder.events) < total:
            holder.events.add()
    if cols.keylog:
        holder.tls_keylog.extend(cols.keylog)
    if cols.dns_tunnel:
        holder.dns_tunnel.extend(cols.dns_tunnel)
    return holder.SerializeToString()


def filter_to_proto(f: Any, version: int = 0) -> lc_pb2.Filter:
    """A :class:`lc.common.filters.Filter` as its wire message."""
    return lc_pb2.Filter(
        id=f.id,
        type=f.type,
        pattern=f.pattern,
        enabled=f.enabled,
        description=f.description,
        hunters=list(f.hunters),
        version=version,
    )


def message_to_json(msg: Message) -> dict[str, Any]:
    """A JSON-ready dict of a wire message: field names as in the .proto, numbers as numbers.

    Unlike protobuf's json_format, 64-bit integers stay integers and every field is
    present (zero values included), which is what a shell user piping to jq expects.
    """
    out: dict[str, Any] = {}
    for fd in msg.DESCRIPTOR.fields:
        value = getattr(msg, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            out[fd.name] = {k: _scalar_or_msg(v) for k, v in sorted(value.items())}
        elif fd.is_repeated:
            out[fd.name] = [_scalar_or_msg(v) for v in value]
        else:
            out[fd.name] = _scalar_or_msg(value)
    return out


def _scalar_or_msg(v: Any) -> Any:
    if isinstance(v, Message):
        return message_to_json(v)
    if isinstance(v, bytes):
        return v.hex()
    return v


def dumps(obj: Any) -> str:
    """The one JSON encoding lc prints: sorted keys, two-space indent."""
    return json.dumps(obj, sort_keys=True, indent=2)
