"""Packing and unpacking ``PacketBatch`` and JSON views of wire messages.

A batch carries its packets as nanosecond pcap records back to back (see
proto/lc.proto for why); the per-packet interface indices are a packed uint16
array and metadata is sparse. This module is the only place that knows that layout.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from lc.common.errors import ParseError
from lc.common.pcapfile import record_lengths
from lc.proto import lc_pb2

__all__ = [
    "BatchRecords",
    "build_batch",
    "dumps",
    "filter_to_proto",
    "message_to_json",
    "unpack_batch",
]

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
    """A received batch, checked: its records, their captured lengths, their interfaces."""

    records: bytes  # nanosecond pcap records back to back
    caplen: array  # 'I', one per record
    iface: array | None  # 'H' indices into ``interfaces``; None = all on interface 0
    interfaces: list[tuple[str, int]]  # (name, linktype)
    meta: list[lc_pb2.PacketMeta] = field(default_factory=list)
    meta_table: list[lc_pb2.PacketMeta] = field(default_factory=list)
    meta_ref: array | None = None  # 'H' per packet: 0 none, k = meta_table[k - 1]

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
            return [(interfaces[0][1], self.records, len(self))]
        parts: dict[int, list[bytes]] = {}
        mv = memoryview(self.records)
        off = 0
        for idx, c in zip(self.iface, self.caplen, strict=True):
            end = off + 16 + c
            parts.setdefault(interfaces[idx][1], []).append(mv[off:end])
            off = end
        return [(lt, b"".join(p), len(p)) for lt, p in parts.items()]


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
) -> lc_pb2.PacketBatch:
    """Build a PacketBatch from framed records (see :func:`lc.common.pcapfile.frame_records`)."""
    batch = lc_pb2.PacketBatch(
        hunter_id=hunter_id,
        epoch=epoch,
        sequence=sequence,
        count=count,
        data=records,
        iface=b"" if iface is None or iface.count(0) == count else _to_le(iface),
        sealed_at_ns=sealed_at_ns,
    )
    for name, lt in interfaces:
        batch.interfaces.add(name=name, linktype=lt)
    if meta:
        batch.meta.extend(meta)
    if meta_ref is not None:
        batch.meta_table.extend(meta_table)
        batch.meta_ref = _to_le(meta_ref)
    return batch


def unpack_batch(batch: lc_pb2.PacketBatch) -> BatchRecords:
    """Check a received batch's framing and indices and return its records.

    Raises:
        ParseError: the records do not add up to ``count``, an interface or metadata
            index is out of range, or no interface is given.
    """
    n = batch.count
    try:
        caplen = record_lengths(batch.data, n)
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
    return BatchRecords(
        batch.data, caplen, iface, interfaces, list(batch.meta), list(batch.meta_table), meta_ref
    )


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
