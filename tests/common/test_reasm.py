"""Tests for lc.common.reasm: IPv4/IPv6 fragment reassembly.

Reassembled datagrams are compared with the datagram the fragments were cut from,
and with tshark's own reassembly (on the public corpus and on a pcap of shuffled,
duplicated fragments written here). The frame builders and the pcap writer are
small ones of this file's own.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.decode import LINKTYPE_ETHERNET, LINKTYPE_RAW, decode_packet
from lc.common.errors import ParseError, ValidationError
from lc.common.reasm import FragmentReassembler, ipv4_header_checksum

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("LC_CORPUS", ROOT.parent / "shared" / "corpus"))
IN_CI = os.environ.get("CI", "").lower() == "true"
SECOND = 1_000_000_000


def _require(ok: bool, reason: str) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def need_tshark() -> str:
    path = shutil.which("tshark")
    _require(path is not None, "tshark is not installed")
    return path  # type: ignore[return-value]


# --- builders ----------------------------------------------------------------------------

V4_A = bytes([10, 0, 0, 1])
V4_B = bytes([10, 0, 0, 2])
V6_A = bytes.fromhex("20010db8000000000000000000000001")
V6_B = bytes.fromhex("20010db8000000000000000000000002")


def csum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(
    proto: int,
    payload: bytes,
    *,
    ident: int = 0x4242,
    mf: bool = False,
    offset: int = 0,
    df: bool = False,
    options: bytes = b"",
    src: bytes = V4_A,
) -> bytes:
    ihl = 5 + len(options) // 4
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | (offset >> 3)
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        ihl * 4 + len(payload),
        ident,
        flags,
        64,
        proto,
        0,
        src,
        V4_B,
    )
    hdr += options
    return hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + payload


def ipv6(nh: int, payload: bytes, src: bytes = V6_A) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nh, 64, src, V6_B) + payload


def ext_opts(nh: int, size: int = 8) -> bytes:
    pad = size - 2
    return struct.pack("!BBBB", nh, size // 8 - 1, 1, pad - 2) + bytes(pad - 2)


def ext_frag(nh: int, offset: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", nh, 0, offset | int(more), ident)


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def eth(etype: int, payload: bytes, vlan: int | None = None) -> bytes:
    macs = bytes.fromhex("020000000002020000000001")
    if vlan is not None:
        return macs + struct.pack("!HHH", 0x8100, vlan, etype) + payload
    return macs + struct.pack("!H", etype) + payload


def frag4(proto: int, body: bytes, step: int, ident: int = 0x4242, **kw: object) -> list[bytes]:
    """IPv4 fragments of ``body`` (everything after the IP header), ``step`` bytes each."""
    assert step % 8 == 0
    return [
        ipv4(proto, body[o : o + step], ident=ident, mf=o + step < len(body), offset=o, **kw)  # type: ignore[arg-type]
        for o in range(0, len(body), step)
    ]


def frag6(
    first_nh: int, body: bytes, step: int, ident: int = 0x01020304, hop_by_hop: bool = False
) -> list[bytes]:
    """IPv6 fragments of the fragmentable part ``body``; optionally with a hop-by-hop
    header in the unfragmentable part."""
    out = []
    for o in range(0, len(body), step):
        frag = ext_frag(first_nh, o, o + step < len(body), ident) + body[o : o + step]
        out.append(ipv6(0, ext_opts(44) + frag) if hop_by_hop else ipv6(44, frag))
    return out


def whole4(proto: int, body: bytes, ident: int = 0x4242, **kw: object) -> bytes:
    return ipv4(proto, body, ident=ident, **kw)  # type: ignore[arg-type]


def whole6(first_nh: int, body: bytes, hop_by_hop: bool = False) -> bytes:
    return ipv6(0, ext_opts(first_nh) + body) if hop_by_hop else ipv6(first_nh, body)


def feed_all(
    r: FragmentReassembler, frames: list[bytes], linktype: int = LINKTYPE_RAW, t0: int = 0
) -> list[tuple[int, bytes]]:
    """Feeds frames 1 ms apart; returns [(index, datagram)] for each completion."""
    done = []
    for i, frame in enumerate(frames):
        out = r.feed(t0 + i * 1_000_000, linktype, frame)
        if out is not None:
            done.append((i, out))
    return done


def feed_until_done(r: FragmentReassembler, frames: list[bytes]) -> tuple[int, bytes]:
    """Feeds frames until one completes a datagram: (its index, the datagram)."""
    for i, frame in enumerate(frames):
        out = r.feed(i * 1_000_000, LINKTYPE_RAW, frame)
        if out is not None:
            return i, out
    raise AssertionError(f"nothing reassembled; counters {r.counters}")


# --- reassembly against the original datagram ---------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(9, 6000),
    step_units=st.integers(1, 185),
    seed=st.integers(0, 2**32 - 1),
    n_dups=st.integers(0, 6),
    options=st.sampled_from([b"", b"\x94\x04\x00\x00", b"\x01\x01\x01\x00" * 2]),
)
def test_ipv4_out_of_order_with_duplicates(
    size: int, step_units: int, seed: int, n_dups: int, options: bytes
) -> None:
    rng = random.Random(seed)
    payload = rng.randbytes(size - 8)
    body = udp(5060, 5061, payload)
    # at least two fragments, at most 200 (the default cap is 256)
    step = 8 * max(min(step_units, (len(body) - 1) // 8), -(-len(body) // 1600))
    frags = frag4(17, body, step, options=options)
    order = frags[:]
    rng.shuffle(order)
    for _ in range(n_dups):
        order.insert(rng.randrange(len(order) + 1), rng.choice(frags))
    r = FragmentReassembler()
    index, datagram = feed_until_done(r, order)
    # It completes exactly when the last distinct fragment has been seen.
    assert index == max(order.index(f) for f in frags)
    assert datagram == whole4(17, body, options=options)
    assert ipv4_header_checksum(datagram[: 20 + len(options)]) == 0
    d = decode_packet(LINKTYPE_RAW, datagram)
    assert not d.is_fragment and (d.sport, d.dport) == (5060, 5061)
    assert datagram[d.payload_offset : d.payload_offset + d.payload_len] == payload
    assert r.counters["reassembled"] == 1
    before = order[:index]
    assert r.counters["duplicates"] == len(before) - len(set(before))


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(9, 6000),
    step_units=st.integers(1, 180),
    seed=st.integers(0, 2**32 - 1),
    n_dups=st.integers(0, 6),
    hop_by_hop=st.booleans(),
    dest_opts=st.booleans(),
)
def test_ipv6_out_of_order_with_duplicates(
    size: int, step_units: int, seed: int, n_dups: int, hop_by_hop: bool, dest_opts: bool
) -> None:
    rng = random.Random(seed)
    payload = rng.randbytes(size - 8)
    # A destination-options header after the fragment header is fragmentable data.
    body = (ext_opts(17, 16) if dest_opts else b"") + udp(53, 5353, payload)
    first_nh = 60 if dest_opts else 17
    # at least two fragments, at most 200 (the default cap is 256)
    step = 8 * max(min(step_units, (len(body) - 1) // 8), -(-len(body) // 1600))
    frags = frag6(first_nh, body, step, hop_by_hop=hop_by_hop)
    order = frags[:]
    rng.shuffle(order)
    for _ in range(n_dups):
        order.insert(rng.randrange(len(order) + 1), rng.choice(frags))
    r = FragmentReassembler()
    index, datagram = feed_until_done(r, order)
    assert index == max(order.index(f) for f in frags)
    assert datagram == whole6(first_nh, body, hop_by_hop=hop_by_hop)
    d = decode_packet(LINKTYPE_RAW, datagram)
    assert not d.is_fragment and (d.proto, d.sport, d.dport) == (17, 53, 5353)
    assert datagram[d.payload_offset : d.payload_offset + d.payload_len] == payload


def test_ipv4_header_fixups() -> None:
    body = udp(1, 2, bytes(range(200)))
    frags = frag4(17, body, 64, ident=7, df=True)
    datagram = feed_all(FragmentReassembler(), frags[::-1])[0][1]
    (flags,) = struct.unpack_from("!H", datagram, 6)
    assert flags == 0x4000  # DF kept, MF and offset cleared
    assert struct.unpack_from("!H", datagram, 2)[0] == len(datagram) == 20 + len(body)
    assert ipv4_header_checksum(datagram[:20]) == 0
    assert datagram[:20] != frags[0][:20]


def test_fragments_on_ethernet_with_vlans_are_keyed_by_vlan() -> None:
    body = udp(1, 2, bytes(100))
    frags = frag4(17, body, 56)
    r = FragmentReassembler()
    assert r.feed(0, LINKTYPE_ETHERNET, eth(0x0800, frags[0], vlan=10)) is None
    assert r.feed(1, LINKTYPE_ETHERNET, eth(0x0800, frags[1], vlan=20)) is None
    assert r.pending_datagrams == 2
    out = r.feed(2, LINKTYPE_ETHERNET, eth(0x0800, frags[1], vlan=10))
    assert out == whole4(17, body)


def test_non_fragments_are_ignored_and_not_counted() -> None:
    r = FragmentReassembler()
    assert r.feed(0, LINKTYPE_RAW, whole4(17, udp(1, 2, b"x"))) is None
    assert r.feed(0, LINKTYPE_ETHERNET, eth(0x0806, bytes(28))) is None
    assert all(v == 0 for v in r.counters.values())


def test_caller_supplied_decoded_is_used() -> None:
    frags = frag4(17, udp(1, 2, bytes(40)), 24)
    r = FragmentReassembler()
    outs = [r.feed(0, LINKTYPE_RAW, f, decode_packet(LINKTYPE_RAW, f)) for f in frags]
    assert outs[-1] == whole4(17, udp(1, 2, bytes(40)))


# --- overlap policy: first wins ------------------------------------------------------------


def test_conflicting_overlap_first_wins() -> None:
    a = ipv4(253, b"a" * 16, mf=True, offset=0)
    b = ipv4(253, b"b" * 16, mf=True, offset=8)  # [8,16) conflicts, [16,24) is new
    c = ipv4(253, b"c" * 8, offset=24)
    r = FragmentReassembler()
    done = feed_all(r, [a, b, c])
    assert done == [(2, whole4(253, b"a" * 16 + b"b" * 8 + b"c" * 8))]
    assert r.counters["overlaps"] == 1 and r.counters["overlap_conflicts"] == 1
    # The same pieces in the other order: the other bytes win.
    r = FragmentReassembler()
    done = feed_all(r, [b, a, c])
    assert done == [(2, whole4(253, b"a" * 8 + b"b" * 16 + b"c" * 8))]


def test_identical_overlap_and_exact_duplicates() -> None:
    body = bytes(range(48))
    big = ipv4(253, body[:32], mf=True)
    small = ipv4(253, body[16:40], mf=True, offset=16)  # overlaps identically, adds [32,40)
    last = ipv4(253, body[40:], offset=40)
    r = FragmentReassembler()
    assert feed_all(r, [big, big, small, last]) == [(3, whole4(253, body))]
    assert r.counters["duplicates"] == 1
    assert r.counters["overlaps"] == 1 and r.counters["overlap_conflicts"] == 0


def test_inconsistent_ends_are_malformed() -> None:
    r = FragmentReassembler()
    r.feed(0, LINKTYPE_RAW, ipv4(253, bytes(8), offset=16))  # ends at 24
    r.feed(0, LINKTYPE_RAW, ipv4(253, bytes(8), offset=32))  # a second, different end
    assert r.counters["malformed"] == 1
    r.feed(0, LINKTYPE_RAW, ipv4(253, bytes(16), mf=True, offset=16))  # past the end
    assert r.counters["malformed"] == 2 and r.pending_datagrams == 1
    out = r.feed(0, LINKTYPE_RAW, ipv4(253, bytes(16), mf=True))
    assert out == whole4(253, bytes(24))
    # A last fragment that would cut off data already held discards the datagram.
    r.feed(0, LINKTYPE_RAW, ipv4(253, bytes(16), mf=True, offset=32, ident=9))
    r.feed(0, LINKTYPE_RAW, ipv4(253, bytes(8), offset=16, ident=9))
    assert r.counters["malformed"] == 3 and r.pending_datagrams == 0 and r.pending_bytes == 0


# --- bounds, time and counters -------------------------------------------------------------


def test_expiry_uses_capture_time_only() -> None:
    frags = frag4(17, udp(1, 2, bytes(100)), 56)
    r = FragmentReassembler(timeout_ns=5 * SECOND)
    r.feed(10 * SECOND, LINKTYPE_RAW, frags[0])
    assert r.expire(15 * SECOND) == 0 and r.pending_datagrams == 1
    assert r.expire(15 * SECOND + 1) == 1 and r.counters["expired"] == 1
    assert r.pending_datagrams == 0 and r.pending_bytes == 0
    # the rest alone does not complete anything
    assert r.feed(16 * SECOND, LINKTYPE_RAW, frags[1]) is None
    # feed() also expires old entries as capture time moves on
    r.feed(30 * SECOND, LINKTYPE_RAW, frag4(17, udp(1, 2, bytes(100)), 56, ident=5)[0])
    assert r.counters["expired"] == 2 and r.pending_datagrams == 1


def test_table_full_evicts_oldest() -> None:
    r = FragmentReassembler(max_datagrams=2)
    sets = [frag4(17, udp(1, 2, bytes(100)), 56, ident=i) for i in range(3)]
    for s in sets:
        assert r.feed(0, LINKTYPE_RAW, s[0]) is None
    assert r.pending_datagrams == 2 and r.counters["dropped_table_full"] == 1
    assert r.feed(0, LINKTYPE_RAW, sets[0][1]) is None  # its first half was evicted
    assert r.counters["dropped_table_full"] == 2  # ... and it pushed out ident 1
    assert r.feed(0, LINKTYPE_RAW, sets[2][1]) == whole4(17, udp(1, 2, bytes(100)), ident=2)


def test_byte_cap_evicts_oldest() -> None:
    r = FragmentReassembler(max_bytes_per_datagram=3000, max_total_bytes=3000)
    a = frag4(17, udp(1, 2, bytes(2400)), 1600, ident=1)
    b = frag4(17, udp(1, 2, bytes(2400)), 1600, ident=2)
    r.feed(0, LINKTYPE_RAW, a[0])
    r.feed(0, LINKTYPE_RAW, b[0])
    assert r.counters["dropped_table_full"] == 1 and r.pending_datagrams == 1
    assert r.pending_bytes <= 3000
    assert r.feed(0, LINKTYPE_RAW, b[1]) == whole4(17, udp(1, 2, bytes(2400)), ident=2)
    assert r.pending_bytes == 0


def test_too_big() -> None:
    r = FragmentReassembler()
    r.feed(0, LINKTYPE_RAW, ipv4(17, bytes(64), mf=True, ident=3))
    r.feed(0, LINKTYPE_RAW, ipv4(17, bytes(16), offset=65512, ident=3))  # 20 + 65528 > 65535
    assert r.counters["dropped_too_big"] == 1 and r.pending_datagrams == 0
    r = FragmentReassembler(max_bytes_per_datagram=1000, max_total_bytes=10_000)
    assert feed_all(r, frag4(17, udp(1, 2, bytes(1200)), 400)) == []
    assert r.counters["dropped_too_big"] >= 1 and r.pending_bytes <= 1000
    # IPv6: the payload length may not pass 65535
    r = FragmentReassembler()
    r.feed(0, LINKTYPE_RAW, ipv6(44, ext_frag(17, 65528, False, 1) + bytes(16)))
    assert r.counters["dropped_too_big"] == 1


def test_too_many_fragments() -> None:
    r = FragmentReassembler(max_fragments_per_datagram=4)
    assert feed_all(r, frag4(17, udp(1, 2, bytes(120)), 16)) == []
    assert r.counters["dropped_too_many_fragments"] >= 1


def test_malformed_and_truncated_fragments_are_counted() -> None:
    r = FragmentReassembler()
    r.feed(0, LINKTYPE_RAW, ipv4(17, bytes(12), mf=True))  # not a multiple of 8
    r.feed(0, LINKTYPE_RAW, b"\x45\x00garbage")
    r.feed(0, 9999, bytes(40))
    assert r.counters["malformed"] == 3
    cut = ipv4(17, bytes(64), mf=True, offset=8)[:50]
    r.feed(0, LINKTYPE_RAW, cut)
    assert r.counters["truncated"] == 1 and r.pending_datagrams == 0
    assert r.counters["fragments"] == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        FragmentReassembler(max_datagrams=0)
    with pytest.raises(ValidationError):
        FragmentReassembler(max_bytes_per_datagram=70_000, max_total_bytes=60_000)


# --- tshark's reassembly as the oracle ------------------------------------------------------


def write_pcap(path: Path, linktype: int, frames: list[bytes]) -> None:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)]
    for i, frame in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000, i, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def read_pcap(path: Path) -> tuple[int, list[tuple[int, bytes]]]:
    """(link type, [(timestamp ns, frame)]) of a classic pcap (either byte order)."""
    raw = path.read_bytes()
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<"}.get(raw[:4], ">")
    nano = raw[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    assert raw[:4] in (
        b"\xd4\xc3\xb2\xa1",
        b"\x4d\x3c\xb2\xa1",
        b"\xa1\xb2\xc3\xd4",
        b"\xa1\xb2\x3c\x4d",
    )
    linktype = struct.unpack_from(order + "I", raw, 20)[0] & 0x0FFFFFFF
    frames, pos = [], 24
    while pos + 16 <= len(raw):
        sec, frac, incl, _ = struct.unpack_from(order + "IIII", raw, pos)
        ts = sec * SECOND + (frac if nano else frac * 1000)
        frames.append((ts, raw[pos + 16 : pos + 16 + incl]))
        pos += 16 + incl
    return linktype, frames


def tshark_reassembled_udp(pcap: Path) -> dict[int, bytes]:
    """frame number -> UDP datagram (header + payload) that tshark reassembled there."""
    cmd = [need_tshark(), "-n", "-r", str(pcap), "-T", "fields", "-E", "occurrence=f"]
    cmd += ["-o", "ip.defragment:TRUE", "-o", "ipv6.defragment:TRUE"]
    cmd += ["-Y", "(ip.fragment.count || ipv6.fragment.count) && udp"]
    cmd += ["-e", "frame.number", "-e", "udp.srcport", "-e", "udp.dstport"]
    cmd += ["-e", "udp.length", "-e", "udp.payload"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = {}
    for line in out.splitlines():
        number, sport, dport, length, payload = line.split("\t")
        data = bytes.fromhex(payload.replace(":", ""))
        assert int(length) == 8 + len(data)
        result[int(number)] = struct.pack("!HHH", int(sport), int(dport), int(length)) + data
    return result


def our_reassembled_udp(linktype: int, frames: list[tuple[int, bytes]]) -> dict[int, bytes]:
    r = FragmentReassembler()
    result = {}
    for number, (ts, frame) in enumerate(frames, start=1):
        try:
            decoded = decode_packet(linktype, frame)
        except ParseError:
            continue
        out = r.feed(ts, linktype, frame, decoded)
        if out is not None:
            d = decode_packet(LINKTYPE_RAW, out)
            assert d.proto == 17 and not d.looks_truncated
            result[number] = out[d.l4_offset : d.l4_offset + 6] + out[d.l4_offset + 8 : d.l3_end]
    return result


def test_ipv6_fragmented_dns_matches_tshark() -> None:
    _require(CORPUS.is_dir(), f"capture corpus not found at {CORPUS}")
    pcap = CORPUS / "dns/zeek_ipv6-fragmented-dns.pcap"
    linktype, frames = read_pcap(pcap)
    expected = tshark_reassembled_udp(pcap)
    assert len(expected) == 1 and len(next(iter(expected.values()))) == 3238 - 2
    got = our_reassembled_udp(linktype, frames)
    assert {k: v.hex() for k, v in got.items()} == {k: v.hex() for k, v in expected.items()}


def test_shuffled_fragments_match_tshark(tmp_path: Path) -> None:
    rng = random.Random(20240607)
    frames: list[bytes] = []
    for i in range(6):
        body = udp(4000 + i, 53, rng.randbytes(rng.randrange(1200, 5000)))
        if i % 2:
            pieces = frag6(17, body, 8 * rng.randrange(60, 180), ident=1000 + i, hop_by_hop=i == 3)
            pieces = [eth(0x86DD, p) for p in pieces]
        else:
            pieces = [eth(0x0800, p) for p in frag4(17, body, 8 * rng.randrange(60, 180), ident=i)]
        rng.shuffle(pieces)
        pieces.insert(rng.randrange(1, len(pieces)), rng.choice(pieces))  # a duplicate
        frames += pieces
    pcap = tmp_path / "shuffled.pcap"
    write_pcap(pcap, LINKTYPE_ETHERNET, frames)
    expected = tshark_reassembled_udp(pcap)
    assert len(expected) == 6
    got = our_reassembled_udp(*read_pcap(pcap))
    assert {k: v.hex() for k, v in got.items()} == {k: v.hex() for k, v in expected.items()}


# --- fuzzing: never raises, never grows past its caps ----------------------------------------


def _fragment_frame(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([4, 6]))
    ident = draw(st.integers(0, 3))
    offset = draw(st.integers(0, 8191)) * 8 if draw(st.booleans()) else draw(st.integers(0, 40)) * 8
    data = draw(st.binary(max_size=300))
    more = draw(st.booleans())
    if version == 4:
        frame = ipv4(draw(st.sampled_from([17, 6, 253])), data, ident=ident, mf=more, offset=offset)
    else:
        frame = ipv6(44, ext_frag(17, offset, more, ident) + data)
    cut = draw(st.integers(0, len(frame)))
    return frame if draw(st.booleans()) else frame[:cut]


@st.composite
def frames_and_times(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    out = []
    ts = 0
    for _ in range(draw(st.integers(1, 60))):
        ts += draw(st.integers(-SECOND, 3 * SECOND))
        if draw(st.integers(0, 4)) == 0:
            frame = draw(st.binary(max_size=100))
        else:
            frame = _fragment_frame(draw)
        out.append((ts, frame))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_and_times())
def test_garbage_never_raises_and_state_stays_bounded(frames: list[tuple[int, bytes]]) -> None:
    r = FragmentReassembler(
        max_datagrams=3,
        max_bytes_per_datagram=65575,
        max_total_bytes=70_000,
        max_fragments_per_datagram=8,
        timeout_ns=5 * SECOND,
    )
    for ts, frame in frames:
        out = r.feed(ts, LINKTYPE_RAW, frame)
        assert r.pending_datagrams <= 3
        assert 0 <= r.pending_bytes <= 70_000
        held = r._table.values()  # internal: the byte count must match what is held
        assert r.pending_bytes == sum(
            len(p.header or b"") + sum(len(x[2]) for x in p.pieces) for p in held
        )
        assert all(p.nfrags <= 8 for p in held)
        if out is not None:
            assert out[0] >> 4 in (4, 6)
            if out[0] >> 4 == 4:
                assert struct.unpack_from("!H", out, 2)[0] == len(out)
                assert ipv4_header_checksum(out[: (out[0] & 15) * 4]) == 0
            else:
                assert struct.unpack_from("!H", out, 4)[0] == len(out) - 40
    r.expire(frames[-1][0] + 10 * SECOND)
    assert r.pending_datagrams == 0 and r.pending_bytes == 0
