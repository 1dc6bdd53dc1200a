"""Why PacketBatch carries framed pcap records: three batch layouts measured side by side.

All three start from the same synthetic packets (Ethernet/IPv4/UDP, 60-400 bytes,
nanosecond timestamps), cut into batches of 4096, as a capture hands them over: per
batch a timestamp, capture-length and original-length column and one blob of packet
bytes. Each layout is timed on the hunter side (build + serialise) and on the processor
side (parse + whatever it takes to have pcap records to write), best of a few runs:

  a. one protobuf message per packet: a dynamic message (defined below, at run time)
     with ts_ns/caplen/origlen/linktype/iface/data, and a batch of ``repeated`` them;
     the processor parses, reads every field and frames pcap records;
  b. columnar: one blob plus packed little-endian arrays in bytes fields of a dynamic
     message; the processor parses, unpacks the arrays and frames pcap records
     itself (``frame_records``);
  c. lc's layout (proto/lc.proto): the hunter frames the records (``frame_records``)
     and builds a PacketBatch (``build_batch``); the processor parses and checks it
     (``unpack_batch``, i.e. ``record_lengths``) and could write ``data`` as it is.

Before timing, every layout's processor output is checked against the expected pcap
records once. Prints figures; asserts nothing about speed.

    .venv/bin/python bench/wire_bench.py [--packets N] [--runs K]
"""

from __future__ import annotations

import argparse
import gc
import math
import platform
import random
import struct
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter

import google.protobuf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal import api_implementation

from lc.common.pcapfile import frame_records
from lc.common.wire import build_batch, unpack_batch
from lc.proto import lc_pb2

BATCH = 4096
LINKTYPE_ETHERNET = 1
_LITTLE = sys.byteorder == "little"


# --------------------------------------------------------------------------- dynamic messages


def _dynamic_messages() -> tuple[type, type, type]:
    """Per-packet message, its batch, and the columnar batch, defined at run time."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="lc_wire_bench.proto", package="lc.wirebench", syntax="proto3"
    )
    f = descriptor_pb2.FieldDescriptorProto
    opt = f.LABEL_OPTIONAL

    def message(name: str, fields: list[tuple[str, int, int, int, str]]) -> None:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            fd = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                fd.type_name = type_name

    message(
        "Packet",
        [
            ("ts_ns", 1, f.TYPE_UINT64, opt, ""),
            ("caplen", 2, f.TYPE_UINT32, opt, ""),
            ("origlen", 3, f.TYPE_UINT32, opt, ""),
            ("linktype", 4, f.TYPE_UINT32, opt, ""),
            ("iface", 5, f.TYPE_UINT32, opt, ""),
            ("data", 6, f.TYPE_BYTES, opt, ""),
        ],
    )
    message(
        "PacketList",
        [("packets", 1, f.TYPE_MESSAGE, f.LABEL_REPEATED, ".lc.wirebench.Packet")],
    )
    message(
        "ColumnBatch",
        [
            ("count", 1, f.TYPE_UINT32, opt, ""),
            ("linktype", 2, f.TYPE_UINT32, opt, ""),
            ("ts_ns", 3, f.TYPE_BYTES, opt, ""),  # count x int64 LE
            ("caplen", 4, f.TYPE_BYTES, opt, ""),  # count x uint32 LE
            ("origlen", 5, f.TYPE_BYTES, opt, ""),  # count x uint32 LE
            ("blob", 6, f.TYPE_BYTES, opt, ""),  # the packets back to back
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("lc.wirebench.Packet")),
        get(pool.FindMessageTypeByName("lc.wirebench.PacketList")),
        get(pool.FindMessageTypeByName("lc.wirebench.ColumnBatch")),
    )


Packet, PacketList, ColumnBatch = _dynamic_messages()


# --------------------------------------------------------------------------- packets


@dataclass(slots=True)
class Batch:
    """One batch as a capture hands it over (columns + blob), and its packets sliced."""

    ts_ns: array  # 'q'
    caplen: array  # 'I'
    origlen: array  # 'I'
    blob: bytes
    datas: list[bytes]  # the same packets one by one (given to layout a for free)

    def __len__(self) -> int:
        return len(self.caplen)


def make_batches(n: int, seed: int = 1) -> list[Batch]:
    """Ethernet/IPv4/UDP packets of 60-400 bytes, ~1 ms apart, in batches of BATCH."""
    rnd = random.Random(seed)
    eth = bytes.fromhex("001122334455667788990aab") + b"\x08\x00"
    pool = rnd.randbytes(4096)
    ip_hdr = struct.Struct("!BBHHHBBH4s4s")
    udp_hdr = struct.Struct("!HHHH")
    ts = 1_700_000_000_000_000_000
    batches = []
    for base in range(0, n, BATCH):
        tss, caps, datas = array("q"), array("I"), []
        for i in range(base, min(n, base + BATCH)):
            plen = rnd.randint(60, 400) - 42  # UDP payload
            ip = ip_hdr.pack(
                0x45, 0, 28 + plen, i & 0xFFFF, 0, 64, 17, 0,
                bytes((10, 0, i >> 8 & 255, i & 255)), bytes((10, 0, 1, 1)),
            )  # fmt: skip
            udp = udp_hdr.pack(10000 + i % 20000, 5060, 8 + plen, 0)
            off = rnd.randrange(4096 - plen)
            pkt = eth + ip + udp + pool[off : off + plen]
            ts += rnd.randint(100_000, 1_900_000)
            tss.append(ts)
            caps.append(len(pkt))
            datas.append(pkt)
        batches.append(Batch(tss, caps, array("I", caps), b"".join(datas), datas))
    return batches


def _le(a: array) -> bytes:
    if _LITTLE:
        return a.tobytes()
    b = array(a.typecode, a)
    b.byteswap()
    return b.tobytes()


def _from_le(typecode: str, raw: bytes) -> array:
    a = array(typecode)
    a.frombytes(raw)
    if not _LITTLE:
        a.byteswap()
    return a


# --------------------------------------------------------------------------- the layouts

# a. One message per packet.


def a_build(b: Batch) -> bytes:
    msg = PacketList()
    add = msg.packets.add
    for ts, cap, orig, data in zip(b.ts_ns, b.caplen, b.origlen, b.datas, strict=True):
        add(ts_ns=ts, caplen=cap, origlen=orig, linktype=LINKTYPE_ETHERNET, iface=0, data=data)
    return msg.SerializeToString()


_A_FIELDS = attrgetter("ts_ns", "caplen", "origlen", "linktype", "iface", "data")


def a_parse(raw: bytes) -> list[tuple]:
    """Parse, and read every field of every packet: what a processor needs to write it."""
    return list(map(_A_FIELDS, PacketList.FromString(raw).packets))


def a_records(rows: list[tuple]) -> bytes:
    """The parsed packets as pcap records, which is what the processor writes."""
    ts = array("q", [r[0] for r in rows])
    caps = array("I", [r[1] for r in rows])
    origs = array("I", [r[2] for r in rows])
    return frame_records(ts, caps, origs, b"".join(r[5] for r in rows))


# b. Columns beside one blob.


def b_build(b: Batch) -> bytes:
    return ColumnBatch(
        count=len(b),
        linktype=LINKTYPE_ETHERNET,
        ts_ns=_le(b.ts_ns),
        caplen=_le(b.caplen),
        origlen=_le(b.origlen),
        blob=b.blob,
    ).SerializeToString()


def b_parse(raw: bytes) -> tuple[array, array, array, bytes]:
    m = ColumnBatch.FromString(raw)
    ts, caps, origs = _from_le("q", m.ts_ns), _from_le("I", m.caplen), _from_le("I", m.origlen)
    n = m.count
    if not len(ts) == len(caps) == len(origs) == n or sum(caps) != len(m.blob):
        raise ValueError("inconsistent columns")
    return ts, caps, origs, m.blob


def b_frame(cols: tuple[array, array, array, bytes]) -> bytes:
    return frame_records(*cols)


# c. lc: records framed by the hunter.


def c_build(b: Batch, seq: int = 1) -> bytes:
    recs = frame_records(b.ts_ns, b.caplen, b.origlen, b.blob)
    msg = build_batch("bench", 1, seq, recs, len(b), [("eth0", LINKTYPE_ETHERNET)])
    return msg.SerializeToString()


def c_parse(raw: bytes) -> bytes:
    return unpack_batch(lc_pb2.PacketBatch.FromString(raw)).records


# --------------------------------------------------------------------------- timing


def best_of(runs: int, fn: Callable[[], object]) -> float:
    """The fastest of ``runs`` calls, in seconds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def sig3(x: float) -> str:
    """``x`` to 3 significant figures, with thousands separators for big numbers."""
    if x <= 0:
        return f"{x:g}"
    r = round(x, 2 - math.floor(math.log10(x)))
    return f"{r:,.0f}" if r >= 100 else f"{r:#.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=200_000, help="packets (default 200000)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure, best kept (default 3)")
    args = ap.parse_args()
    n, runs = args.packets, max(1, args.runs)
    if n < 1:
        ap.error("--packets must be at least 1")

    batches = make_batches(n)
    expected = [frame_records(b.ts_ns, b.caplen, b.origlen, b.blob) for b in batches]

    wire_a = [a_build(b) for b in batches]
    wire_b = [b_build(b) for b in batches]
    wire_c = [c_build(b, i + 1) for i, b in enumerate(batches)]
    parsed_a = [a_parse(r) for r in wire_a]
    parsed_b = [b_parse(r) for r in wire_b]
    # Every layout must deliver exactly the records a processor would write.
    for name, got in (
        ("a", [a_records(p) for p in parsed_a]),
        ("b", [b_frame(c) for c in parsed_b]),
        ("c", [c_parse(r) for r in wire_c]),
    ):
        if got != expected:
            raise SystemExit(f"layout {name} does not deliver the expected pcap records")
    del parsed_a

    rows: list[tuple[str, str, str, float, float]] = []

    def measure(layout: str, side: str, step: str, fn: Callable[[], object], size: float) -> None:
        rows.append((layout, side, step, n / best_of(runs, fn), size))

    def size_of(wire: list[bytes]) -> float:
        return sum(map(len, wire)) / n

    sa, sb, sc = size_of(wire_a), size_of(wire_b), size_of(wire_c)
    la, lb, lc_ = "a. message per packet", "b. columns + blob", "c. lc: framed records"
    measure(la, "hunter", "build + serialise", lambda: [a_build(b) for b in batches], sa)
    measure(la, "processor", "parse + read fields", lambda: [a_parse(r) for r in wire_a], sa)
    measure(
        la,
        "processor",
        "total, to pcap records",
        lambda: [a_records(a_parse(r)) for r in wire_a],
        sa,
    )
    measure(lb, "hunter", "build + serialise", lambda: [b_build(b) for b in batches], sb)
    measure(lb, "processor", "parse + unpack", lambda: [b_parse(r) for r in wire_b], sb)
    measure(lb, "processor", "frame_records", lambda: [b_frame(p) for p in parsed_b], sb)
    measure(
        lb, "processor", "total, to pcap records", lambda: [b_frame(b_parse(r)) for r in wire_b], sb
    )
    measure(
        lc_,
        "hunter",
        "frame + build + serialise",
        lambda: [c_build(b, i + 1) for i, b in enumerate(batches)],
        sc,
    )
    measure(lc_, "processor", "parse + unpack_batch", lambda: [c_parse(r) for r in wire_c], sc)

    print(
        f"wire_bench: Python {platform.python_version()} ({platform.python_implementation()}), "
        f"protobuf {google.protobuf.__version__} ({api_implementation.Type()}), "
        f"{n} packets of 60-400 B in batches of {BATCH}, best of {runs}"
    )
    head = ("layout", "side", "step", "packets/s", "us/packet", "wire B/pkt")
    table = [head] + [
        (lay, side, step, sig3(pps), sig3(1e6 / pps), sig3(size))
        for lay, side, step, pps, size in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for k, r in enumerate(table):
        cells = [r[i].ljust(widths[i]) if i < 3 else r[i].rjust(widths[i]) for i in range(6)]
        print("  ".join(cells).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
