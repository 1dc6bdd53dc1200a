"""Tests for lc.common.wire: PacketBatch packing, checking on receipt, JSON views.

The expectations are built independently of the module: records are framed by hand
with struct (not with lc's own framing), the interface column is read back with
struct, and a reference walk written here decides which record streams are valid.
"""

from __future__ import annotations

import json
import struct
from array import array

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.errors import ParseError
from lc.common.pcapfile import frame_records, record_lengths
from lc.common.wire import (
    BatchRecords,
    build_batch,
    dumps,
    encode_batch,
    encode_batch_bytes,
    encode_extras,
    event_problem,
    message_to_json,
    split_batch,
    unpack_batch,
)
from lc.proto import lc_pb2

NS = 1_000_000_000
TS_MAX = (1 << 32) * NS - 1
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1

HYP = settings(
    deadline=None,
    max_examples=100,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Packet = tuple[int, bytes, int]  # (ts_ns, data, origlen)


# --------------------------------------------------------------------------- helpers


def record(ts_ns: int, data: bytes, origlen: int | None = None) -> bytes:
    """One nanosecond pcap record, framed by hand."""
    sec, ns = divmod(ts_ns, NS)
    orig = len(data) if origlen is None else origlen
    return struct.pack("<IIII", sec, ns, len(data), orig) + data


def records_of(packets: list[Packet]) -> bytes:
    return b"".join(record(*p) for p in packets)


def ref_caplens(data: bytes, count: int) -> list[int] | None:
    """The reference check: ``count`` whole records, nothing left over, ns < 10**9."""
    off = 0
    caps = []
    for _ in range(count):
        if off + 16 > len(data):
            return None
        _sec, ns, cap, _orig = struct.unpack_from("<IIII", data, off)
        if ns >= NS:
            return None
        off += 16 + cap
        if off > len(data):
            return None
        caps.append(cap)
    return caps if off == len(data) else None


def roundtrip(batch: lc_pb2.PacketBatch) -> BatchRecords:
    parsed = lc_pb2.PacketBatch()
    parsed.ParseFromString(batch.SerializeToString())
    return unpack_batch(parsed)


def reparse(batch: lc_pb2.PacketBatch) -> lc_pb2.PacketBatch:
    parsed = lc_pb2.PacketBatch()
    parsed.ParseFromString(batch.SerializeToString())
    return parsed


def expand(iface: array | None, n: int) -> list[int]:
    return [0] * n if iface is None else list(iface)


def sample(n: int = 4, interfaces=(("eth0", 1), ("lo", 1))) -> lc_pb2.PacketBatch:
    pk = [(1_700_000_000 * NS + i, bytes([i]) * (10 + i), 100 + i) for i in range(n)]
    iface = array("H", [i % len(interfaces) for i in range(n)])
    meta = [lc_pb2.PacketMeta(index=n - 1, protocol="sip")] if n else []
    return build_batch("h1", 7, 3, records_of(pk), n, list(interfaces), iface, meta)


packet_st = st.tuples(st.integers(0, TS_MAX), st.binary(max_size=120), st.integers(0, 5000)).map(
    lambda p: (p[0], p[1], len(p[1]) + p[2])
)
interface_st = st.tuples(st.text(max_size=12), st.integers(0, U32))


@st.composite
def batches(draw, min_packets: int = 0):
    packets = draw(st.lists(packet_st, min_size=min_packets, max_size=40))
    n = len(packets)
    interfaces = draw(st.lists(interface_st, min_size=1, max_size=5))
    kind = draw(st.sampled_from(["none", "zeros", "random"]))
    iface = None
    if kind == "zeros":
        iface = array("H", [0] * n)
    elif kind == "random":
        iface = array(
            "H", draw(st.lists(st.integers(0, len(interfaces) - 1), min_size=n, max_size=n))
        )
    idx = sorted(draw(st.sets(st.integers(0, n - 1), max_size=n))) if n else []
    meta = [
        lc_pb2.PacketMeta(
            index=i,
            protocol=draw(st.sampled_from(["", "sip", "rtp", "dns"])),
            session_id=draw(st.text(max_size=8)),
            filter_ids=draw(st.lists(st.text(max_size=5), max_size=3)),
        )
        for i in idx
    ]
    head = draw(st.tuples(st.text(max_size=10), st.integers(0, U64), st.integers(0, U64)))
    sealed = draw(st.integers(0, U64))
    return packets, interfaces, iface, meta, head, sealed


# --------------------------------------------------------------------------- round trip


@HYP
@given(b=batches())
def test_build_serialise_parse_unpack_round_trip(b):
    packets, interfaces, iface, meta, (hunter, epoch, seq), sealed = b
    n = len(packets)
    recs = records_of(packets)
    msg = build_batch(hunter, epoch, seq, recs, n, interfaces, iface, meta, sealed)
    parsed = reparse(msg)
    assert (parsed.hunter_id, parsed.epoch, parsed.sequence, parsed.count) == (
        hunter,
        epoch,
        seq,
        n,
    )
    assert parsed.sealed_at_ns == sealed
    assert parsed.data == recs
    # The interface column on the wire: empty when all are 0, else uint16 little-endian.
    want_iface = expand(iface, n)
    if any(want_iface):
        assert list(struct.unpack(f"<{n}H", parsed.iface)) == want_iface
    else:
        assert parsed.iface == b""

    got = unpack_batch(parsed)
    assert isinstance(got, BatchRecords)
    assert got.records == recs
    assert len(got) == n
    assert list(got.caplen) == [len(p[1]) for p in packets]
    assert expand(got.iface, n) == want_iface
    assert got.iface is None or any(got.iface)
    assert got.interfaces == [(name, lt) for name, lt in interfaces]
    assert got.meta == meta


def test_lc_framing_round_trips_too():
    ts = array("q", [1_700_000_000 * NS + 999_999_999, 5])
    cap = array("I", [3, 0])
    recs = frame_records(ts, cap, array("I", [60, 0]), b"abc")
    assert recs == record(ts[0], b"abc", 60) + record(5, b"")
    got = roundtrip(build_batch("h", 1, 1, recs, 2, [("eth0", 1)]))
    assert got.records == recs and list(got.caplen) == [3, 0] and got.iface is None


def test_empty_batch_round_trips():
    got = roundtrip(build_batch("h", 1, 1, b"", 0, [("eth0", 1)]))
    assert got.records == b"" and len(got) == 0 and got.iface is None and got.meta == []


# --------------------------------------------------------------------------- refusals


def _count_plus_one(b):
    b.count += 1


def _count_minus_one(b):
    b.count -= 1


def _count_zero(b):
    b.count = 0


def _count_huge(b):
    b.count = U32


def _no_data(b):
    b.data = b""


def _cut_one_byte(b):
    b.data = b.data[:-1]


def _cut_mid_header(b):
    b.data = b.data[: len(b.data) - 13 - 12]  # last packet is 13 bytes: into its header


def _cut_to_10(b):
    b.data = b.data[:10]


def _trailing_byte(b):
    b.data += b"\x00"


def _trailing_record(b):
    b.data += record(1, b"xyz")


def _caplen_too_big(b):
    d = bytearray(b.data)
    struct.pack_into("<I", d, 8, 10**6)
    b.data = bytes(d)


def _nanoseconds_overflow(b):
    d = bytearray(b.data)
    struct.pack_into("<I", d, 4, NS)
    b.data = bytes(d)


def _iface_short(b):
    b.iface = struct.pack(f"<{b.count - 1}H", *([1] * (b.count - 1)))


def _iface_long(b):
    b.iface = struct.pack(f"<{b.count + 1}H", *([1] * (b.count + 1)))


def _iface_odd(b):
    b.iface = struct.pack(f"<{b.count}H", *([1] * b.count)) + b"\x00"


def _iface_one_byte(b):
    b.iface = b"\x01"


def _iface_out_of_range(b):
    b.iface = struct.pack(f"<{b.count}H", *([0] * (b.count - 1)), len(b.interfaces))


def _iface_ffff(b):
    b.iface = struct.pack(f"<{b.count}H", 0xFFFF, *([0] * (b.count - 1)))


def _meta_out_of_range(b):
    b.meta.add(index=b.count)


def _meta_huge(b):
    b.meta.add(index=U32, protocol="dns")


def _no_interfaces(b):
    del b.interfaces[:]


REFUSALS = [
    _count_plus_one,
    _count_minus_one,
    _count_zero,
    _count_huge,
    _no_data,
    _cut_one_byte,
    _cut_mid_header,
    _cut_to_10,
    _trailing_byte,
    _trailing_record,
    _caplen_too_big,
    _nanoseconds_overflow,
    _iface_short,
    _iface_long,
    _iface_odd,
    _iface_one_byte,
    _iface_out_of_range,
    _iface_ffff,
    _meta_out_of_range,
    _meta_huge,
    _no_interfaces,
]


@pytest.mark.parametrize("damage", REFUSALS, ids=lambda f: f.__name__.strip("_"))
def test_unpack_refuses_with_parse_error(damage):
    b = reparse(sample(4))
    assert len(unpack_batch(b)) == 4  # valid before the damage
    damage(b)
    with pytest.raises(ParseError):
        unpack_batch(reparse(b))


def test_empty_batch_refusals():
    b = reparse(build_batch("h", 1, 1, b"", 0, [("eth0", 1)]))
    for damage in (
        lambda m: setattr(m, "data", record(1, b"a")),
        lambda m: setattr(m, "iface", b"\x00\x00"),
        lambda m: m.meta.add(index=0),
        lambda m: m.ClearField("interfaces"),
    ):
        bad = lc_pb2.PacketBatch()
        bad.CopyFrom(b)
        damage(bad)
        with pytest.raises(ParseError):
            unpack_batch(bad)


def test_edges_that_are_valid():
    b = reparse(sample(3, interfaces=(("a", 1), ("b", 113), ("c", 0))))
    b.iface = struct.pack("<3H", 2, 2, 1)  # the highest index in range
    b.meta.add(index=b.count - 1)  # the last packet
    got = unpack_batch(b)
    assert list(got.iface) == [2, 2, 1]
    assert [m.index for m in got.meta] == [2, 2]


# --------------------------------------------------------------------------- fuzz


mutation_st = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
        st.tuples(
            st.just("set32"),
            st.integers(0, 10**6),
            st.sampled_from([0, 1, 16, 999, NS - 1, NS, U32]),
        ),
        st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 20)),
        st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=20)),
        st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, ops) -> bytes:
    d = bytearray(data)
    for kind, pos, arg in ops:
        at = pos % (len(d) + 1)
        if kind == "flip" and d:
            d[pos % len(d)] ^= arg
        elif kind == "set32" and len(d) >= 4:
            # Aim at header fields: any 4-aligned offset of the buffer.
            at = (pos % (len(d) // 4)) * 4
            d[at : at + 4] = struct.pack("<I", arg)
        elif kind == "delete":
            del d[at : at + arg]
        elif kind == "insert":
            d[at:at] = arg
        elif kind == "truncate":
            del d[at:]
    return bytes(d)


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    packets=st.lists(
        st.tuples(st.integers(0, TS_MAX), st.binary(max_size=24), st.just(0)).map(
            lambda p: (p[0], p[1], len(p[1]))
        ),
        max_size=12,
    ),
    ops=mutation_st,
)
def test_fuzz_data_gives_batch_records_or_parse_error(packets, ops):
    n = len(packets)
    iface = array("H", [i % 2 for i in range(n)])
    msg = build_batch("h", 1, 1, records_of(packets), n, [("a", 1), ("b", 113)], iface)
    msg.data = mutate(msg.data, ops)
    msg = reparse(msg)
    want = ref_caplens(msg.data, n)
    try:
        got = unpack_batch(msg)
    except ParseError:
        assert want is None, f"valid records refused: {msg.data.hex()}"
        return
    assert want is not None, f"invalid records accepted: {msg.data.hex()}"
    assert isinstance(got, BatchRecords)
    assert got.records == msg.data
    assert list(got.caplen) == want
    assert len(got) == n


# --------------------------------------------------------------------------- caplen column
#
# A batch may carry its records' captured lengths as a column (PacketBatch.caplen);
# the processor then checks the records in bulk instead of walking them. The bulk
# check must refuse everything the walk refuses, and a column that disagrees with the
# headers; a column that agrees must give exactly what the walk gives.


def column(caps) -> bytes:
    return struct.pack(f"<{len(caps)}I", *caps)


def with_column(b: lc_pb2.PacketBatch, caps=None) -> lc_pb2.PacketBatch:
    """``b`` carrying a caplen column (the true one, from the reference walk, by default)."""
    out = reparse(b)
    out.caplen = column(ref_caplens(b.data, b.count) if caps is None else caps)
    return out


def test_the_column_gives_what_the_walk_gives():
    b = reparse(sample(5))
    walked = unpack_batch(b)
    bulk = unpack_batch(with_column(b))
    assert list(bulk.caplen) == list(walked.caplen) == [10, 11, 12, 13, 14]
    assert bulk.records == walked.records and bulk.caplen.typecode == "I"


def test_build_and_encode_send_the_column():
    pk = [(NS + i, bytes(3 + i), 3 + i) for i in range(3)]
    caps = array("I", [3, 4, 5])
    msg = reparse(build_batch("h", 1, 1, records_of(pk), 3, [("a", 1)], caplen=caps))
    assert msg.caplen == column([3, 4, 5])
    assert list(unpack_batch(msg).caplen) == [3, 4, 5]
    enc = reparse(encode_batch("h", 1, 2, [("a", 1)], records_of(pk), 3, caplen=caps))
    assert enc.caplen == column([3, 4, 5]) and list(unpack_batch(enc).caplen) == [3, 4, 5]
    assert reparse(build_batch("h", 1, 1, records_of(pk), 3, [("a", 1)])).caplen == b""


def test_a_spooled_batch_keeps_its_column():
    pk = [(NS + i, bytes(3 + i), 3 + i) for i in range(3)]
    caps = array("I", [3, 4, 5])
    extras = encode_extras([], 3, caplen=caps)
    assert extras  # the column alone is worth storing
    msg = reparse(encode_batch("h", 1, 2, [("a", 1)], records_of(pk), 3, extras=extras))
    assert msg.caplen == column([3, 4, 5]) and list(unpack_batch(msg).caplen) == [3, 4, 5]
    assert encode_extras([], 3) == b""


@pytest.mark.parametrize("damage", REFUSALS, ids=lambda f: f.__name__.strip("_"))
def test_every_refusal_of_the_walk_holds_with_the_column(damage):
    # The hunter's column is that of the records it framed; the damage comes after.
    b = with_column(sample(4))
    assert len(unpack_batch(b)) == 4
    damage(b)
    with pytest.raises(ParseError):
        unpack_batch(reparse(b))


@pytest.mark.parametrize("damage", REFUSALS, ids=lambda f: f.__name__.strip("_"))
def test_every_refusal_of_the_walk_holds_with_a_column_fitted_to_the_damage(damage):
    # A hostile sender fits the column to the damaged records as well as it can:
    # the caplens a walk reads from the headers that are there, cut or padded to count.
    b = reparse(sample(4))
    damage(b)
    caps, off = [], 0
    while off + 16 <= len(b.data):
        cap = struct.unpack_from("<I", b.data, off + 8)[0]
        caps.append(cap)
        off += 16 + cap
    n = min(b.count, 64)
    caps = (caps + [0] * n)[:n]
    b.caplen = column(caps)
    with pytest.raises(ParseError):
        unpack_batch(reparse(b))


def _col_short(b):
    b.caplen = b.caplen[:-4]


def _col_long(b):
    b.caplen += column([0])


def _col_odd(b):
    b.caplen += b"\x00"


def _col_swapped(b):  # the same total: only the headers tell
    c = list(struct.unpack(f"<{b.count}I", b.caplen))
    c[0], c[1] = c[1], c[0]
    b.caplen = column(c)


def _col_moved_byte(b):  # one byte from the first record to the last
    c = list(struct.unpack(f"<{b.count}I", b.caplen))
    c[0] -= 1
    c[-1] += 1
    b.caplen = column(c)


def _col_huge(b):  # the sum wraps in 32 bits, not in the check
    c = list(struct.unpack(f"<{b.count}I", b.caplen))
    c[0] = U32
    c[1] = (c[1] - U32 - 1) % (1 << 32)
    b.caplen = column(c)


def _col_all_max(b):
    b.caplen = column([U32] * b.count)


COLUMN_REFUSALS = [_col_short, _col_long, _col_odd, _col_swapped, _col_moved_byte, _col_huge,
                   _col_all_max]  # fmt: skip


@pytest.mark.parametrize("damage", COLUMN_REFUSALS, ids=lambda f: f.__name__.strip("_"))
def test_a_column_that_disagrees_with_the_records_is_refused(damage):
    b = with_column(sample(4))
    damage(b)
    with pytest.raises(ParseError, match=r"caplen column|header disagrees|cut short|left over"):
        unpack_batch(reparse(b))


def test_an_empty_batch_with_a_column():
    b = reparse(build_batch("h", 1, 1, b"", 0, [("eth0", 1)]))
    b.caplen = column([5])
    with pytest.raises(ParseError, match="caplen column"):
        unpack_batch(b)


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    packets=st.lists(
        st.tuples(st.integers(0, TS_MAX), st.binary(max_size=24), st.just(0)).map(
            lambda p: (p[0], p[1], len(p[1]))
        ),
        min_size=1,
        max_size=12,
    ),
    ops=st.one_of(st.just([]), mutation_st),
    kind=st.sampled_from(["sent", "fitted", "random", "short"]),
    noise=st.lists(st.integers(0, U32), min_size=12, max_size=12),
)
def test_fuzz_the_column_accepts_exactly_the_walks_verdict(packets, ops, kind, noise):
    n = len(packets)
    msg = build_batch("h", 1, 1, records_of(packets), n, [("a", 1)])
    sent = ref_caplens(msg.data, n)
    msg.data = mutate(msg.data, ops) if ops else msg.data
    want = ref_caplens(msg.data, n)
    if kind == "sent":  # the hunter's column, then the records were damaged
        caps = sent
    elif kind == "fitted":  # a column fitted to the damaged records when they are valid
        caps = want if want is not None else sent
    elif kind == "random":
        caps = noise[:n]
    else:
        caps = sent[:-1]
    msg.caplen = column(caps)  # an empty column is no column: the walk decides
    msg = reparse(msg)
    try:
        got = unpack_batch(msg)
    except ParseError:
        assert want is None or caps not in (want, []), f"valid records refused: {msg.data.hex()}"
        return
    assert want is not None, f"invalid records accepted: {msg.data.hex()} {caps}"
    assert caps in (want, [])
    assert list(got.caplen) == want
    assert got.records == msg.data


# --------------------------------------------------------------------------- linktype groups


def by_linktype(groups: list[tuple[int, bytes, int]]) -> dict[int, tuple[bytes, int]]:
    """Groups keyed by link type (their order is not part of the contract)."""
    lts = [lt for lt, _, _ in groups]
    assert len(lts) == len(set(lts)), f"a link type appears twice: {lts}"
    return {lt: (recs, cnt) for lt, recs, cnt in groups}


def test_linktype_groups_split_a_mixed_batch_in_order():
    pk = [(1_700_000_000 * NS + i, bytes([65 + i]) * (i + 1), i + 1) for i in range(6)]
    ifc = [1, 0, 0, 1, 0, 1]
    msg = build_batch("h", 1, 1, records_of(pk), 6, [("eth0", 1), ("any", 113)], array("H", ifc))
    assert by_linktype(roundtrip(msg).linktype_groups()) == {
        1: (record(*pk[1]) + record(*pk[2]) + record(*pk[4]), 3),
        113: (record(*pk[0]) + record(*pk[3]) + record(*pk[5]), 3),
    }


def test_linktype_groups_single_stream_cases():
    pk = [(i, b"x" * i, i) for i in range(4)]
    recs = records_of(pk)
    # Two interfaces, one link type: one stream.
    msg = build_batch("h", 1, 1, recs, 4, [("a", 1), ("b", 1)], array("H", [0, 1, 0, 1]))
    assert roundtrip(msg).linktype_groups() == [(1, recs, 4)]
    # All on interface 0 although another link type is listed.
    msg = build_batch("h", 1, 1, recs, 4, [("a", 276), ("b", 1)])
    assert roundtrip(msg).linktype_groups() == [(276, recs, 4)]
    # All on interface 1.
    msg = build_batch("h", 1, 1, recs, 4, [("a", 276), ("b", 1)], array("H", [1] * 4))
    assert roundtrip(msg).linktype_groups() == [(1, recs, 4)]


@HYP
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=30),
    linktypes=st.lists(st.sampled_from([0, 1, 113, 276]), min_size=1, max_size=4),
    data=st.data(),
)
def test_linktype_groups_match_a_reference_split(sizes, linktypes, data):
    n = len(sizes)
    packets = [(1_700_000_000 * NS + i, bytes([i % 256]) * s, s) for i, s in enumerate(sizes)]
    ifc = data.draw(st.lists(st.integers(0, len(linktypes) - 1), min_size=n, max_size=n))
    interfaces = [(f"if{i}", lt) for i, lt in enumerate(linktypes)]
    msg = build_batch("h", 1, 1, records_of(packets), n, interfaces, array("H", ifc))
    want: dict[int, list[bytes]] = {}
    for p, i in zip(packets, ifc, strict=True):
        want.setdefault(linktypes[i], []).append(record(*p))
    groups = roundtrip(msg).linktype_groups()
    assert by_linktype(groups) == {lt: (b"".join(rs), len(rs)) for lt, rs in want.items()}
    for _, recs, cnt in groups:
        assert len(record_lengths(recs, cnt)) == cnt


# --------------------------------------------------------------------------- JSON


def test_message_to_json_keeps_uint64_as_int():
    big = U64 - 5
    msg = lc_pb2.PacketBatch(hunter_id="h1", epoch=big, sequence=2**53 + 1, sealed_at_ns=U64)
    out = message_to_json(msg)
    assert out["epoch"] == big and type(out["epoch"]) is int
    assert out["sequence"] == 2**53 + 1  # beyond a double's exact integers
    back = json.loads(dumps(out))
    assert back["epoch"] == big and back["sealed_at_ns"] == U64
    assert f'"epoch": {big}' in dumps(out)


def test_message_to_json_includes_zero_values():
    out = message_to_json(lc_pb2.PacketBatch())
    assert out == {
        "hunter_id": "",
        "epoch": 0,
        "sequence": 0,
        "count": 0,
        "data": "",
        "interfaces": [],
        "iface": "",
        "meta": [],
        "sealed_at_ns": 0,
        "meta_table": [],
        "meta_ref": "",
        "events": [],
        "tls_keylog": [],
        "dns_tunnel": [],
        "caplen": "",
    }
    ctl = message_to_json(lc_pb2.StreamControl())
    assert ctl == {"acks": [], "flow": 0, "message": ""}


def test_message_to_json_nested_repeated_and_map_fields():
    counters = lc_pb2.HunterCounters(captured=U64, cpu_percent=12.5)
    counters.dropped["queue_full"] = 3
    counters.dropped["kernel"] = 0
    counters.dropped["malformed"] = 2**40
    msg = lc_pb2.HeartbeatRequest(hunter_id="h", epoch=9, counters=counters)
    out = message_to_json(msg)
    c = out["counters"]
    assert c["dropped"] == {"kernel": 0, "malformed": 2**40, "queue_full": 3}
    assert c["captured"] == U64 and c["cpu_percent"] == 12.5
    assert c["acked"] == 0 and c["rss_bytes"] == 0  # zero fields are present
    assert set(c) == {f.name for f in lc_pb2.HunterCounters.DESCRIPTOR.fields}
    assert json.loads(dumps(out))["counters"]["dropped"]["kernel"] == 0

    # An unset map and an unset sub-message still appear, empty / zeroed.
    empty = message_to_json(lc_pb2.HeartbeatRequest())
    assert empty["counters"]["dropped"] == {}
    assert empty["counters"]["captured"] == 0

    b = build_batch(
        "h",
        1,
        2,
        record(5, b"\x01\x02"),
        1,
        [("eth0", 1)],
        meta=[lc_pb2.PacketMeta(index=0, protocol="sip", filter_ids=["f1", "f2"])],
    )
    j = message_to_json(b)
    assert j["data"] == record(5, b"\x01\x02").hex()
    assert j["interfaces"] == [{"name": "eth0", "linktype": 1}]
    meta = j["meta"]
    assert len(meta) == 1
    assert {k: meta[0][k] for k in ("index", "protocol", "session_id", "filter_ids")} == {
        "index": 0,
        "protocol": "sip",
        "session_id": "",
        "filter_ids": ["f1", "f2"],
    }
    assert set(meta[0]) == {f.name for f in lc_pb2.PacketMeta.DESCRIPTOR.fields}
    ctl = lc_pb2.StreamControl(flow=lc_pb2.FLOW_PAUSE)
    ctl.acks.add(epoch=U64, sequence=1, packets=3)
    assert message_to_json(ctl)["acks"] == [
        {"epoch": U64, "sequence": 1, "duplicate": False, "packets": 3, "hunter_id": ""}
    ]


def test_dense_meta_round_trips_through_build_and_unpack():
    call = lc_pb2.PacketMeta(protocol="rtp", session_id="c1", filter_ids=["f"])
    sip = lc_pb2.PacketMeta(protocol="sip", session_id="c1", sip=lc_pb2.SipSummary(method="INVITE"))
    recs = b"".join(record(i, bytes([i]) * 3) for i in range(4))
    b = build_batch(
        "h", 1, 1, recs, 4, [("lo", 1)], meta_table=[sip, call], meta_ref=array("H", [1, 2, 0, 2])
    )
    cols = unpack_batch(lc_pb2.PacketBatch.FromString(b.SerializeToString()))
    per = cols.packet_meta()
    assert [m.protocol if m else None for m in per] == ["sip", "rtp", None, "rtp"]
    assert per[0].sip.method == "INVITE" and per[3].session_id == "c1"
    bad = lc_pb2.PacketBatch.FromString(b.SerializeToString())
    bad.meta_ref = array("H", [1, 3, 0, 0]).tobytes()
    with pytest.raises(ParseError, match="metadata reference out of range"):
        unpack_batch(bad)


# --------------------------------------------------------------------------- the hunter's codec


def call_event(n: int, **kw) -> lc_pb2.Event:
    ev = lc_pb2.Event(
        dataset="sip",
        start_ns=T0 + n,
        end_ns=T0 + n + 5 * NS,
        session_id=f"call-{n}@host",
        flow=lc_pb2.FlowTuple(
            src_ip=bytes([10, 0, 0, 1]), dst_ip=bytes([10, 0, 0, 2]),
            src_port=5060, dst_port=5060, ip_proto=17,
        ),
        filter_ids=["alice"],
        captured=True,
        call=lc_pb2.CallEvent(call_id=f"call-{n}@host", method="INVITE", state="ended",
                              codecs=["PCMU"], rtp_packets=100 + n),
    )  # fmt: skip
    for k, v in kw.items():
        setattr(ev, k, v)
    return ev


T0 = 1_700_000_000 * NS


def sealed_parts(n: int = 4):
    """A sealed batch's parts as the batcher gives them: records, sparse filter ids for
    some packets, one PacketMeta object shared by others (dense), events."""
    recs = b"".join(record(T0 + i, bytes([i]) * (i + 3)) for i in range(n))
    shared = lc_pb2.PacketMeta(protocol="rtp", session_id="call-1@host", filter_ids=["alice"])
    sip = lc_pb2.PacketMeta(
        protocol="sip", session_id="call-1@host",
        sip=lc_pb2.SipSummary(method="INVITE", from_user="alice", to_user="bob"),
    )  # fmt: skip
    meta = [(0, sip), (1, ["f1", "ü"]), (2, shared), (3, shared)]
    return recs, n, meta, [call_event(1), call_event(2)]


def test_events_and_meta_round_trip_through_the_wire():
    recs, n, meta, events = sealed_parts()
    msg = encode_batch("h1", 7, 3, [("eth0", 1)], recs, n, None, meta, events, sealed_at_ns=9)
    got = unpack_batch(lc_pb2.PacketBatch.FromString(msg.SerializeToString()))
    assert got.records == recs and len(got) == n
    per = got.packet_meta()
    assert per[0].sip.from_user == "alice" and per[0].WhichOneof("summary") == "sip"
    assert list(per[1].filter_ids) == ["f1", "ü"] and per[1].index == 1
    assert per[2].protocol == per[3].protocol == "rtp"
    assert len(got.meta_table) == 2  # the shared PacketMeta travels once
    assert [(i, e.session_id) for i, e in got.events] == [(0, "call-1@host"), (1, "call-2@host")]
    assert [e.seq for _, e in got.events] == [0, 1]
    assert got.events[1][1].call.rtp_packets == 102 and got.bad_events == 0
    assert events[0].seq == 0 and not events[1].seq  # the caller's events are not changed


def test_spooled_extras_give_the_same_batch_as_the_sealed_one():
    recs, n, meta, events = sealed_parts()
    iface = array("H", [0, 1, 1, 0])
    ifs = [("eth0", 1), ("any", 113)]
    direct = encode_batch("h1", 7, 3, ifs, recs, n, iface, meta, events, sealed_at_ns=9)
    blob = encode_extras(meta, n, events)
    assert isinstance(blob, bytes) and blob
    spooled = encode_batch("h1", 7, 3, ifs, recs, n, iface, extras=blob, sealed_at_ns=9)
    assert spooled == direct
    assert spooled.SerializeToString() == direct.SerializeToString()
    # Nothing besides the records: no extras at all.
    assert encode_extras([], n) == b""
    plain = encode_batch("h1", 7, 3, ifs, recs, n, iface, extras=b"")
    assert not plain.meta and not plain.events and not plain.meta_ref


def test_an_events_only_batch_round_trips():
    msg = encode_batch("h1", 1, 1, [("eth0", 1)], b"", 0, events=[call_event(5)])
    got = unpack_batch(lc_pb2.PacketBatch.FromString(msg.SerializeToString()))
    assert len(got) == 0 and got.linktype_groups() == []
    assert [e.call.call_id for _, e in got.events] == ["call-5@host"]
    msg2 = encode_batch(
        "h1", 1, 1, [("eth0", 1)], b"", 0, extras=encode_extras([], 0, [call_event(5)])
    )
    assert msg2 == msg


def test_damaged_extras_are_a_parse_error():
    blob = encode_extras([], 0, [call_event(1)])
    with pytest.raises(ParseError, match="stored metadata"):
        encode_batch("h", 1, 1, [("eth0", 1)], b"", 0, extras=blob[:-3])


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda e: setattr(e, "dataset", ""), "no dataset"),
        (lambda e: setattr(e.flow, "src_ip", b"\x01\x02\x03"), "neither 4 nor 16"),
        (lambda e: setattr(e.flow, "dst_ip", bytes(16)), "two families"),
        (lambda e: setattr(e.flow, "dst_port", 65536), "port"),
        (lambda e: setattr(e.flow, "ip_proto", 256), "IP protocol"),
    ],
)
def test_a_malformed_event_is_skipped_and_counted_not_the_batch(damage, why):
    bad = call_event(2)
    damage(bad)
    assert why in event_problem(bad)
    good = [call_event(1), call_event(3)]
    msg = build_batch("h", 1, 1, record(T0, b"x"), 1, [("eth0", 1)], events=[good[0], bad, good[1]])
    got = unpack_batch(lc_pb2.PacketBatch.FromString(msg.SerializeToString()))
    assert len(got) == 1  # the packets are fine
    assert [(i, e.session_id) for i, e in got.events] == [(0, "call-1@host"), (2, "call-3@host")]
    assert got.bad_events == 1


def test_events_without_a_flow_or_with_ipv6_are_valid():
    v6 = call_event(1)
    v6.flow.src_ip = bytes(15) + b"\x01"
    v6.flow.dst_ip = bytes(15) + b"\x02"
    bare = lc_pb2.Event(dataset="dns")
    assert event_problem(v6) is None and event_problem(bare) is None


# --------------------------------------------------------------------------- serialised


@HYP
@given(
    b=batches(),
    big=st.sampled_from([0, 1, 200, 20_000]),
    with_caplen=st.booleans(),
    with_events=st.booleans(),
    spooled=st.booleans(),
    as_view=st.booleans(),
)
def test_encode_batch_bytes_is_the_serialised_message_byte_for_byte(
    b, big, with_caplen, with_events, spooled, as_view
):
    """What the uplink sends equals encode_batch(...).SerializeToString() exactly: with
    records long enough for 1-, 2- and 3-byte lengths, every optional part, from a sealed
    batch's parts or a spooled batch's extras, records as bytes or a memoryview."""
    packets, interfaces, iface, pmeta, (hunter, epoch, seq), sealed = b
    if big:
        packets = [*packets, (T0, bytes(range(256)) * (big // 256) + b"x" * (big % 256), big)]
        if iface is not None:
            iface = array("H", [*iface, 0])
    n = len(packets)
    recs = records_of(packets)
    meta = [(m.index, list(m.filter_ids)) for m in pmeta]
    events = [call_event(i) for i in range(3)] if with_events else []
    caplen = array("I", [len(p[1]) for p in packets]) if with_caplen else None
    if spooled:
        kw = {"extras": encode_extras(meta, n, events, caplen=caplen)}
    else:
        kw = {"meta": meta, "events": events, "caplen": caplen, "keylog": [b"CLIENT_RANDOM 1 2"]}
    want = encode_batch(hunter, epoch, seq, interfaces, recs, n, iface, sealed_at_ns=sealed, **kw)
    data = memoryview(recs) if as_view else recs
    got = encode_batch_bytes(
        hunter, epoch, seq, interfaces, data, n, iface, sealed_at_ns=sealed, **kw
    )
    assert isinstance(got, bytes)
    assert got == want.SerializeToString()
    assert lc_pb2.PacketBatch.FromString(got) == want


def test_encode_batch_bytes_of_an_events_only_batch():
    msg = encode_batch("h1", 1, 1, [("eth0", 1)], b"", 0, events=[call_event(5)])
    got = encode_batch_bytes("h1", 1, 1, [("eth0", 1)], b"", 0, events=[call_event(5)])
    assert got == msg.SerializeToString()


# --------------------------------------------------------------------------- split


def split_or_error(raw: bytes):
    """split_batch's result as (message with data, view-or-None), or its DecodeError."""
    try:
        msg, view = split_batch(raw)
    except DecodeError:
        return "DecodeError"
    whole = lc_pb2.PacketBatch()
    whole.CopyFrom(msg)
    if view is not None:
        assert isinstance(view, memoryview) and view.readonly
        assert not msg.data
        whole.data = bytes(view)
    return whole, view


def plain_or_error(raw: bytes):
    try:
        return lc_pb2.PacketBatch.FromString(raw)
    except DecodeError:
        return "DecodeError"


@HYP
@given(b=batches(), events=st.booleans(), caplen=st.booleans())
def test_split_batch_leaves_the_records_in_place_and_parses_the_rest(b, events, caplen):
    packets, interfaces, iface, meta, (hunter, epoch, seq), sealed = b
    n = len(packets)
    recs = records_of(packets)
    caps = array("I", [len(p[1]) for p in packets]) if caplen else None
    kw = {"events": [call_event(1)]} if events else {}
    raw = encode_batch_bytes(hunter, epoch, seq, interfaces, recs, n, iface,
                             [(m.index, list(m.filter_ids)) for m in meta],
                             sealed_at_ns=sealed, caplen=caps, **kw)  # fmt: skip
    got, view = split_or_error(raw)
    assert got == lc_pb2.PacketBatch.FromString(raw)
    assert (view is not None) == bool(recs)  # a batch with records: they stay in place
    if view is not None:
        assert view.obj is raw
    # unpack_batch with the view gives what it gives from a plain parse.
    msg, view = split_batch(raw)
    a = unpack_batch(msg, view)
    b_ = unpack_batch(lc_pb2.PacketBatch.FromString(raw))
    assert bytes(a.records) == b_.records and a.caplen == b_.caplen and a.iface == b_.iface
    assert a.meta == b_.meta and [e for _, e in a.events] == [e for _, e in b_.events]


def _key(field: int, wire: int) -> bytes:
    return bytes([field << 3 | wire])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        _key(5, 2) + b"\x03abc",  # data alone
        _key(4, 0) + b"\x02" + _key(5, 2) + b"\x03abc" + _key(5, 2) + b"\x01z",  # data twice
        _key(5, 2) + b"\x03abc" + _key(5, 2) + b"\x00",  # then empty: the last one wins
        _key(5, 2) + b"\x03abc" + _key(1, 2) + b"\x01h",  # hunter id after the data
        _key(1, 2) + b"\x01h" + _key(1, 2) + b"\x01i" + _key(5, 2) + b"\x01x",  # id twice
        _key(2, 0) + b"\x81\x00" + _key(5, 2) + b"\x01x",  # an overlong varint
        _key(1, 2) + b"\x02\xff\xfe" + _key(5, 2) + b"\x01x",  # hunter id not UTF-8
        _key(5, 2) + b"\x09abc",  # data cut short
        _key(5, 2) + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # length past 64 bits
        _key(5, 2) + b"\x01x" + b"\x98\x01\x05",  # an unknown field (19)
        _key(5, 2) + b"\x01x" + _key(9, 2) + b"\x05\x0a\x01",  # a cut interface
        _key(2, 2) + b"\x01x" + _key(5, 2) + b"\x01x",  # epoch with the wrong wire type
    ],
)
def test_split_batch_agrees_with_a_plain_parse_on_odd_encodings(raw):
    got = split_or_error(raw)
    want = plain_or_error(raw)
    if want == "DecodeError":
        assert got == "DecodeError"
    else:
        assert got != "DecodeError" and got[0] == want


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(b=batches(min_packets=1), ops=mutation_st)
def test_fuzz_split_batch_agrees_with_a_plain_parse(b, ops):
    packets, interfaces, iface, meta, (hunter, epoch, seq), sealed = b
    recs = records_of(packets)
    raw = encode_batch_bytes(hunter, epoch, seq, interfaces, recs, len(packets), iface,
                             [(m.index, list(m.filter_ids)) for m in meta],
                             sealed_at_ns=sealed)  # fmt: skip
    raw = mutate(raw, ops)
    got = split_or_error(raw)
    want = plain_or_error(raw)
    if want == "DecodeError":
        assert got == "DecodeError"
    else:
        assert got != "DecodeError" and got[0] == want
