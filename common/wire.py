"""Packing and unpacking the columnar ``PacketBatch`` and JSON views of wire messages.

The batch keeps per-packet columns as fixed-width little-endian arrays inside bytes
fields (see proto/lc.proto), so a batch of any size is built and parsed with a
handful of memcpy-speed calls instead of one protobuf object per packet.
This module is the only place that knows that layout.
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
from lc.proto import lc_pb2

__all__ = [
    "BatchColumns",
    "build_batch",
    "dumps",
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
class BatchColumns:
    """The packets of one batch as columns; ``blob`` holds their bytes back to back."""

    ts_ns: array  # 'q'
    caplen: array  # 'I'
    origlen: array  # 'I'
    iface: array | None  # 'H' indices into ``interfaces``; None = all packets on interface 0
    interfaces: list[tuple[str, int]]  # (name, linktype)
    blob: bytes
    meta: list[lc_pb2.PacketMeta] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts_ns)

    def linktype_groups(self) -> list[tuple[int, list[int] | None]]:
        """Packets grouped by link type: [(linktype, indices or None for 'all')]."""
        linktypes = {lt for _, lt in self.interfaces} if self.interfaces else {1}
        if self.iface is None or len(linktypes) == 1:
            lt = self.interfaces[0][1] if self.interfaces else 1
            return [(lt, None)]
        groups: dict[int, list[int]] = {}
        ifaces = self.interfaces
        for i, idx in enumerate(self.iface):
            groups.setdefault(ifaces[idx][1], []).append(i)
        return list(groups.items())


def build_batch(
    hunter_id: str,
    epoch: int,
    sequence: int,
    ts_ns: array,
    caplen: array,
    origlen: array,
    blob: bytes,
    interfaces: Sequence[tuple[str, int]],
    iface: array | None = None,
    meta: Sequence[lc_pb2.PacketMeta] = (),
    sealed_at_ns: int = 0,
) -> lc_pb2.PacketBatch:
    """Build a PacketBatch from columns; ``origlen`` is omitted when it equals ``caplen``."""
    n = len(ts_ns)
    batch = lc_pb2.PacketBatch(
        hunter_id=hunter_id,
        epoch=epoch,
        sequence=sequence,
        count=n,
        data=blob,
        ts_ns=_to_le(ts_ns),
        caplen=_to_le(caplen),
        origlen=b"" if origlen == caplen else _to_le(origlen),
        iface=b"" if iface is None or iface.count(0) == n else _to_le(iface),
        sealed_at_ns=sealed_at_ns,
    )
    for name, lt in interfaces:
        batch.interfaces.add(name=name, linktype=lt)
    if meta:
        batch.meta.extend(meta)
    return batch


def unpack_batch(batch: lc_pb2.PacketBatch) -> BatchColumns:
    """Check a received batch's columns for consistency and return them.

    Raises:
        ParseError: a column has the wrong size, lengths do not add up to ``data``,
            an interface index or metadata index is out of range.
    """
    n = batch.count
    ts = _from_le("q", batch.ts_ns, "ts_ns", n)
    caplen = _from_le("I", batch.caplen, "caplen", n)
    origlen = _from_le("I", batch.origlen, "origlen", n) if batch.origlen else caplen
    if sum(caplen) != len(batch.data):
        raise ParseError(
            f"batch {batch.sequence}: captured lengths add up to {sum(caplen)} bytes "
            f"but data holds {len(batch.data)}"
        )
    interfaces = [(i.name, i.linktype) for i in batch.interfaces]
    iface = None
    if batch.iface:
        iface = _from_le("H", batch.iface, "iface", n)
        if n and max(iface) >= len(interfaces):
            raise ParseError(f"batch {batch.sequence}: interface index out of range")
    if not interfaces:
        raise ParseError(f"batch {batch.sequence}: no interface (link type) given")
    for m in batch.meta:
        if m.index >= n:
            raise ParseError(f"batch {batch.sequence}: metadata for packet {m.index} of {n}")
    return BatchColumns(ts, caplen, origlen, iface, interfaces, batch.data, list(batch.meta))


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
