"""Tests for lc.common.decode.

The oracle is tshark, run here on the public corpus and on pcaps of hand-built
frames for every supported link type, compared frame by frame with decode_packet.
The frames are built with struct by the helpers below; the pcap reader and writer
are minimal ones of this file's own.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.decode import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    LINKTYPE_RAW_12,
    LINKTYPE_RAW_14,
    MAX_IPV6_EXT_HEADERS,
    MAX_VLAN_TAGS,
    SUPPORTED_LINKTYPES,
    TCP_ACK,
    TCP_PSH,
    TCP_SYN,
    Decoded,
    decode_packet,
    ip_ports,
)
from lc.common.errors import ParseError

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("LC_CORPUS", ROOT.parent / "shared" / "corpus"))
IN_CI = os.environ.get("CI", "").lower() == "true"


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


def need_corpus() -> Path:
    _require(CORPUS.is_dir(), f"capture corpus not found at {CORPUS}")
    return CORPUS


# --- minimal classic pcap reader / writer --------------------------------------------------


def read_pcap(path: Path, tmp_dir: Path | None = None) -> tuple[int, list[tuple[bytes, int]]]:
    """Returns (link type, [(captured bytes, original length)]). pcapng files are
    converted with editcap first."""
    raw = path.read_bytes()
    magic = raw[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        assert tmp_dir is not None, "pcapng needs a temporary directory"
        out = tmp_dir / (path.name + ".pcap")
        subprocess.run(["editcap", "-F", "pcap", str(path), str(out)], check=True)
        return read_pcap(out)
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise AssertionError(f"{path}: not a pcap file (magic {magic.hex()})")
    linktype = struct.unpack_from(order + "I", raw, 20)[0] & 0x0FFFFFFF
    record = struct.Struct(order + "IIII")
    frames = []
    pos = 24
    while pos + 16 <= len(raw):
        _, _, incl, orig = record.unpack_from(raw, pos)
        pos += 16
        frames.append((raw[pos : pos + incl], orig))
        pos += incl
    return linktype, frames


def write_pcap(path: Path, linktype: int, frames: list[bytes | tuple[bytes, int]]) -> None:
    """Writes a little-endian microsecond pcap. A frame may be (bytes, original length)
    to record a snap-length cut."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)]
    for i, frame in enumerate(frames):
        data, orig = frame if isinstance(frame, tuple) else (frame, len(frame))
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(data), orig))
        out.append(data)
    path.write_bytes(b"".join(out))


# --- frame builders ------------------------------------------------------------------------

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
V4_A = bytes([192, 0, 2, 1])
V4_B = bytes([198, 51, 100, 7])
V6_A = bytes.fromhex("20010db8000000000000000000000001")
V6_B = bytes.fromhex("20010db8000000010000000000000abc")


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(
    proto: int,
    payload: bytes,
    *,
    src: bytes = V4_A,
    dst: bytes = V4_B,
    ident: int = 0x1234,
    mf: bool = False,
    frag_offset: int = 0,
    df: bool = False,
    options: bytes = b"",
    total: int | None = None,
) -> bytes:
    assert len(options) % 4 == 0 and frag_offset % 8 == 0
    ihl = 5 + len(options) // 4
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | (frag_offset >> 3)
    length = ihl * 4 + len(payload) if total is None else total
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, length, ident, flags, 64, proto, 0, src, dst)
    hdr += options
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def ipv6(nh: int, payload: bytes, *, src: bytes = V6_A, dst: bytes = V6_B) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nh, 64, src, dst) + payload


def ext_opts(nh: int, size: int = 8) -> bytes:
    """Hop-by-hop or destination options header of ``size`` bytes, PadN-filled."""
    assert size % 8 == 0 and size >= 8
    pad = size - 2
    return struct.pack("!BBBB", nh, size // 8 - 1, 1, pad - 2) + bytes(pad - 2)


def ext_routing(nh: int) -> bytes:
    """Type-0 routing header, one address, no segments left."""
    return struct.pack("!BBBB4x", nh, 2, 0, 0) + V6_A


def ext_frag(nh: int, offset: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", nh, 0, offset | int(more), ident)


def ext_ah(nh: int) -> bytes:
    return struct.pack("!BBHII", nh, 4, 0, 0x1000, 7) + bytes(12)


def udp(sport: int, dport: int, payload: bytes, length: int | None = None) -> bytes:
    n = 8 + len(payload) if length is None else length
    return struct.pack("!HHHH", sport, dport, n, 0) + payload


def tcp(
    sport: int, dport: int, seq: int, flags: int, payload: bytes = b"", options: bytes = b""
) -> bytes:
    assert len(options) % 4 == 0
    doff = 5 + len(options) // 4
    return (
        struct.pack("!HHIIHHHH", sport, dport, seq, 1, (doff << 12) | flags, 65535, 0, 0)
        + options
        + payload
    )


def icmp_echo(payload: bytes = b"ping") -> bytes:
    return struct.pack("!BBHHH", 8, 0, 0, 1, 1) + payload


def eth(etype: int, payload: bytes, vlans: tuple[tuple[int, int], ...] = ()) -> bytes:
    tags = b"".join(struct.pack("!HH", tpid, vid) for tpid, vid in vlans)
    if vlans:
        # tags[0:2] is the outer TPID, which goes where the ethertype would be
        first_tpid = tags[:2]
        rest = tags[2:] + struct.pack("!H", etype)
        return MAC_B + MAC_A + first_tpid + rest + payload
    return MAC_B + MAC_A + struct.pack("!H", etype) + payload


def sll(proto: int, payload: bytes, hatype: int = 1) -> bytes:
    return struct.pack("!HHH8sH", 0, hatype, 6, MAC_A + b"\0\0", proto) + payload


def sll2(proto: int, payload: bytes, hatype: int = 1) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 3, hatype, 0, 6, MAC_A + b"\0\0") + payload


def null_hdr(family: int, payload: bytes, order: str = "<") -> bytes:
    return struct.pack(order + "I", family) + payload


def ip_payloads() -> list[bytes]:
    """IP packets (no link layer) covering the decoder's branches."""
    sip = b"OPTIONS sip:x@example.com SIP/2.0\r\n\r\n"
    big = bytes(range(256)) * 3
    v6_udp = udp(5062, 5060, sip)
    return [
        ipv4(17, udp(5060, 5060, sip)),
        ipv4(6, tcp(40000, 443, 0xDEADBEEF, TCP_SYN, options=b"\x02\x04\x05\xb4\x01\x01\x04\x02")),
        ipv4(6, tcp(443, 40000, 7, TCP_ACK | TCP_PSH, b"hello, world")),
        ipv4(1, icmp_echo()),
        ipv4(17, udp(53, 53, b"\x12\x34" + bytes(30)), options=b"\x94\x04\x00\x00"),  # RA
        ipv4(17, udp(1000, 2000, big[:400], length=8 + len(big)), mf=True, ident=77),
        ipv4(17, big[400:600], frag_offset=408, ident=77),
        ipv4(47, b"\x00\x00\x08\x00" + bytes(20)),  # GRE: not followed
        ipv4(17, udp(4000, 4001, b"abc", length=11) + b"trailer"),  # UDP length < IP payload
        ipv6(17, v6_udp),
        ipv6(6, tcp(50000, 80, 123456, TCP_ACK, b"GET / HTTP/1.1\r\n\r\n")),
        ipv6(58, struct.pack("!BBHHH", 128, 0, 0, 1, 1) + b"ping6"),
        ipv6(0, ext_opts(60, 16) + ext_opts(43) + ext_routing(17) + v6_udp),
        ipv6(44, ext_frag(17, 0, True, 0xABCDEF01) + udp(7000, 7001, big[:496], length=1008)),
        ipv6(44, ext_frag(17, 504, False, 0xABCDEF01) + big[496:1000]),
        ipv6(0, ext_opts(44) + ext_frag(60, 0, True, 5) + ext_opts(17) + udp(9, 9, big[:488])),
        ipv6(51, ext_ah(6) + tcp(1, 2, 3, TCP_ACK, b"ah")),
        ipv6(50, struct.pack("!II", 0x100, 1) + bytes(24)),  # ESP: stop
        ipv6(59, b""),  # no next header
    ]


def link_frames() -> dict[int, list[bytes | tuple[bytes, int]]]:
    """For each link type, frames carrying every IP payload plus link-specific cases."""
    v4 = [p for p in ip_payloads() if p[0] >> 4 == 4]
    v6 = [p for p in ip_payloads() if p[0] >> 4 == 6]
    allp = ip_payloads()

    def et(p: bytes) -> int:
        return 0x0800 if p[0] >> 4 == 4 else 0x86DD

    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC_A, V4_A, bytes(6), V4_B)
    ethernet: list[bytes | tuple[bytes, int]] = [eth(et(p), p) for p in allp]
    # VLAN TCIs carry priority and DEI bits too: only the low 12 bits are the id.
    ethernet += [eth(et(p), p, ((0x8100, 0xA000 | 100),)) for p in allp]
    ethernet += [eth(et(p), p, ((0x88A8, 0x1000 | 200), (0x8100, 300))) for p in allp[:4]]
    ethernet += [eth(et(p), p, ((0x9100, 5), (0x8100, 0xF006), (0x8100, 7))) for p in allp[8:10]]
    ethernet += [
        eth(0x0800, allp[0] + bytes(18)),  # Ethernet padding after the IP datagram
        eth(0x0800, ipv4(6, tcp(1, 2, 3, TCP_ACK, b"x")) + bytes(5)),  # padding after TCP
        eth(0x86DD, ipv6(6, tcp(1, 2, 3, TCP_ACK, b"x")) + bytes(6)),  # an Ethernet trailer
        eth(0x0806, arp),
        eth(0x0806, arp, ((0x8100, 42),)),
        eth(0x88CC, bytes(30)),  # LLDP
        (eth(0x0800, allp[2])[:60], len(eth(0x0800, allp[2]))),  # snap-length cut
    ]
    return {
        LINKTYPE_ETHERNET: ethernet,
        LINKTYPE_LINUX_SLL: [sll(et(p), p) for p in allp]
        + [sll(0x8100, struct.pack("!HH", 12, 0x0800) + allp[0]), sll(0x0806, arp)]
        + [sll(0x0800, allp[0], hatype=824)],  # netlink: the protocol is not an ethertype
        LINKTYPE_LINUX_SLL2: [sll2(et(p), p) for p in allp]
        + [sll2(0x8100, struct.pack("!HH", 12, 0x86DD) + v6[0]), sll2(0x0806, arp)]
        + [sll2(0x0800, allp[0], hatype=824)],
        LINKTYPE_RAW: list(allp),
        LINKTYPE_RAW_12: list(allp),
        LINKTYPE_RAW_14: list(allp),
        LINKTYPE_IPV4: list(v4),
        LINKTYPE_IPV6: list(v6),
        LINKTYPE_NULL: [null_hdr(2, p) for p in v4]
        + [null_hdr(2, v4[0], ">")]
        + [null_hdr(fam, p, order) for fam in (24, 28, 30) for order in "<>" for p in v6[:3]]
        + [null_hdr(7, bytes(20))],
        LINKTYPE_LOOP: [null_hdr(2, p, ">") for p in v4]
        + [null_hdr(fam, p, ">") for fam in (24, 28, 30) for p in v6[:2]],
    }


# --- the tshark oracle -----------------------------------------------------------------------

TSHARK_FIELDS = [
    "frame.number",
    "frame.protocols",
    "frame.len",
    "frame.cap_len",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "ip.proto",
    "ip.len",
    "ip.id",
    "ip.flags.mf",
    "ip.frag_offset",
    "ipv6.plen",
    "ipv6.nxt",
    "ipv6.hopopts.nxt",
    "ipv6.routing.nxt",
    "ipv6.dstopts.nxt",
    "ipv6.fraghdr.nxt",
    "ipv6.fraghdr.offset",
    "ipv6.fraghdr.more",
    "ipv6.fraghdr.ident",
    "ah.next_header",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.flags",
    "tcp.hdr_len",
    "tcp.len",
    "vlan.id",
    "ieee8021ad.id",
]
# Names frame.protocols uses for link-layer headers the decoder skips.
LINK_PROTOCOLS = {"eth", "ethertype", "vlan", "ieee8021ad", "sll", "null", "loop", "raw"}
IPV6_EXT_PROTOCOLS = {
    "ipv6.hopopts": "ipv6.hopopts.nxt",
    "ipv6.routing": "ipv6.routing.nxt",
    "ipv6.dstopts": "ipv6.dstopts.nxt",
    "ipv6.fraghdr": "ipv6.fraghdr.nxt",
    "ah": "ah.next_header",
}


def run_tshark(pcap: Path, *prefs: str) -> list[dict[str, list[str]]]:
    """One dict per frame: field name -> all occurrences, in tshark's order."""
    cmd = [need_tshark(), "-n", "-r", str(pcap), "-T", "fields"]
    cmd += ["-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=|", "-E", "quote=n"]
    cmd += ["-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE"]
    cmd += ["-o", "tcp.desegment_tcp_streams:FALSE"]
    for pref in prefs:
        cmd += ["-o", pref]
    for field in TSHARK_FIELDS:
        cmd += ["-e", field]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, errors="replace")
    rows = []
    for line in out.stdout.splitlines():
        cells = line.split("\t")
        assert len(cells) == len(TSHARK_FIELDS), line
        pairs = zip(TSHARK_FIELDS, cells, strict=True)
        rows.append({f: (c.split("|") if c else []) for f, c in pairs})
    return rows


def _num(text: str) -> int:
    return int(text, 16) if text.startswith("0x") else int(text)


def _flag(text: str) -> bool:
    return text.lower() in ("1", "true")


def expected_from_tshark(row: dict[str, list[str]]) -> dict[str, object]:
    """What decode_packet must say about this frame, derived from tshark's fields only."""
    chain = row["frame.protocols"][0].split(":")
    i = 0
    while i < len(chain) and chain[i] in LINK_PROTOCOLS:
        i += 1
    l3 = chain[i] if i < len(chain) else ""
    vlans = tuple(int(v) for v in row["ieee8021ad.id"] + row["vlan.id"])
    exp: dict[str, object] = {"vlans": vlans}
    if l3 == "ip":
        exp.update(
            ip_version=4,
            src_text=row["ip.src"][0],
            dst_text=row["ip.dst"][0],
            proto=int(row["ip.proto"][0]),
            frag_id=_num(row["ip.id"][0]),
            more_fragments=_flag(row["ip.flags.mf"][0]),
            frag_offset=int(row["ip.frag_offset"][0]) * 8,  # tshark 4.0: 8-byte units
        )
        ip_len = int(row["ip.len"][0])
        after = chain[i + 1 : i + 2]
    elif l3 == "ipv6":
        exp.update(ip_version=6, src_text=row["ipv6.src"][0], dst_text=row["ipv6.dst"][0])
        ip_len = 40 + int(row["ipv6.plen"][0])
        proto = int(row["ipv6.nxt"][0])
        seen: dict[str, int] = {}
        j = i + 1
        while j < len(chain) and chain[j] in IPV6_EXT_PROTOCOLS:
            name = chain[j]
            proto = int(row[IPV6_EXT_PROTOCOLS[name]][seen.get(name, 0)])
            seen[name] = seen.get(name, 0) + 1
            j += 1
        exp["proto"] = proto
        if "ipv6.fraghdr" in seen:
            exp.update(
                frag_id=_num(row["ipv6.fraghdr.ident"][0]),
                more_fragments=_flag(row["ipv6.fraghdr.more"][0]),
                frag_offset=int(row["ipv6.fraghdr.offset"][0]) * 8,
            )
        else:
            exp.update(frag_id=0, more_fragments=False, frag_offset=0)
        after = chain[j : j + 1]
    else:
        exp["ip_version"] = 0
        return exp
    cut = int(row["frame.cap_len"][0]) < int(row["frame.len"][0])
    if not cut:
        exp["ip_len"] = ip_len
    if after == ["udp"]:
        exp.update(sport=int(row["udp.srcport"][0]), dport=int(row["udp.dstport"][0]))
        if not cut and not exp["more_fragments"]:
            exp["payload_len"] = int(row["udp.length"][0]) - 8
    elif after == ["tcp"]:
        exp.update(
            sport=int(row["tcp.srcport"][0]),
            dport=int(row["tcp.dstport"][0]),
            tcp_seq=int(row["tcp.seq_raw"][0]),
            tcp_flags=_num(row["tcp.flags"][0]),
            tcp_header_len=int(row["tcp.hdr_len"][0]),
        )
        if not cut and not exp["more_fragments"]:
            exp["payload_len"] = int(row["tcp.len"][0])
    else:
        exp.update(sport=0, dport=0)
    return exp


def actual_view(d: Decoded) -> dict[str, object]:
    view = d.as_dict()
    view["src_text"] = d.src_text
    view["dst_text"] = d.dst_text
    view["tcp_header_len"] = d.payload_offset - d.l4_offset
    view["ip_len"] = d.l3_end - d.l3_offset
    return view


def check_invariants(d: Decoded, data: bytes) -> None:
    n = len(data)
    assert d.ip_version in (0, 4, 6)
    if d.ip_version == 0:
        assert d.src == d.dst == b""
        assert d.payload_offset + d.payload_len == n
        return
    assert len(d.src) == len(d.dst) == (4 if d.ip_version == 4 else 16)
    assert 0 <= d.l3_offset < d.l4_offset <= d.payload_offset
    assert d.payload_len >= 0
    assert d.payload_offset + d.payload_len <= d.l3_end <= n
    assert d.is_fragment == (d.more_fragments or d.frag_offset > 0)
    if d.frag_offset:
        assert d.sport == d.dport == 0
    if d.is_fragment:
        assert d.l3_offset < d.frag_data_offset <= d.l3_end
    if d.proto not in (6, 17):
        assert d.sport == d.dport == d.tcp_flags == d.tcp_seq == 0


def compare_with_tshark(linktype: int, frames: list[tuple[bytes, int]], pcap: Path) -> int:
    rows = run_tshark(pcap)
    assert len(rows) == len(frames)
    checked = 0
    for row, (data, _orig) in zip(rows, frames, strict=True):
        frame_no = row["frame.number"][0]
        exp = expected_from_tshark(row)
        d = decode_packet(linktype, data)
        check_invariants(d, data)
        got = actual_view(d)
        diff = {k: (v, got[k]) for k, v in exp.items() if got[k] != v}
        assert not diff, f"{pcap.name} frame {frame_no}: (tshark, lc) differ: {diff}"
        ports = ip_ports(linktype, data)
        if d.ip_version:
            assert ports == (d.src, d.dst, d.proto, d.sport, d.dport)
        else:
            assert ports is None
        checked += 1
    return checked


# --- oracle tests ----------------------------------------------------------------------------


def corpus_captures() -> list[str]:
    if not CORPUS.is_dir():
        return ["<corpus missing>"]
    found = sorted(
        str(p.relative_to(CORPUS))
        for p in CORPUS.rglob("*")
        if p.suffix in (".pcap", ".pcapng", ".cap") and p.is_file()
    )
    return found


@pytest.mark.parametrize("name", corpus_captures())
def test_corpus_matches_tshark(name: str, tmp_path: Path) -> None:
    corpus = need_corpus()
    need_tshark()
    path = corpus / name
    linktype, frames = read_pcap(path, tmp_path)
    assert linktype in SUPPORTED_LINKTYPES, f"{name}: link type {linktype}"
    # Compare on the classic pcap we actually read (pcapng converted by read_pcap).
    pcap = (
        path if path.read_bytes()[:4] != b"\x0a\x0d\x0d\x0a" else tmp_path / (path.name + ".pcap")
    )
    assert compare_with_tshark(linktype, frames, pcap) == len(frames) > 0


def test_corpus_covers_the_interesting_cases(tmp_path: Path) -> None:
    """The corpus files this module relies on still carry what they are used for."""
    corpus = need_corpus()
    lt, frames = read_pcap(corpus / "dns/zeek_ipv6-fragmented-dns.pcap")
    decoded = [decode_packet(lt, f) for f, _ in frames]
    assert sum(d.is_fragment for d in decoded) == 4
    assert [d.frag_offset for d in decoded if d.is_fragment] == [2896, 0, 1432, 2864]
    lt, frames = read_pcap(corpus / "pop3/zeek_pop3-starttls.pcap")
    assert lt == 0
    lt, frames = read_pcap(corpus / "dns/suricata_dns-udp-eve-log-srv.pcap")
    assert lt == LINKTYPE_RAW
    lt, frames = read_pcap(corpus / "tls/ja4_tls-alpn-h2-ipv6.pcap")
    assert lt == 0 and all(decode_packet(lt, f).ip_version == 6 for f, _ in frames)


@pytest.mark.parametrize("linktype", sorted(link_frames()), ids=lambda lt: f"linktype{lt}")
def test_built_frames_match_tshark(linktype: int, tmp_path: Path) -> None:
    need_tshark()
    frames = link_frames()[linktype]
    pcap = tmp_path / f"lt{linktype}.pcap"
    write_pcap(pcap, linktype, frames)
    _, read_back = read_pcap(pcap)
    assert compare_with_tshark(linktype, read_back, pcap) == len(frames)


def test_built_vlan_and_padding_cases_say_what_tshark_says(tmp_path: Path) -> None:
    """Spot checks that the oracle comparison above really looks at these fields."""
    need_tshark()
    p = ip_payloads()[0]
    frames = [eth(0x0800, p, ((0x88A8, 200), (0x8100, 300))), eth(0x0800, p + bytes(18))]
    pcap = tmp_path / "spot.pcap"
    write_pcap(pcap, LINKTYPE_ETHERNET, frames)  # type: ignore[arg-type]
    rows = run_tshark(pcap)
    assert expected_from_tshark(rows[0])["vlans"] == (200, 300)
    assert decode_packet(LINKTYPE_ETHERNET, frames[0]).vlans == (200, 300)
    assert expected_from_tshark(rows[1])["payload_len"] == len(p) - 28
    assert decode_packet(LINKTYPE_ETHERNET, frames[1]).payload_len == len(p) - 28


# --- direct checks ------------------------------------------------------------------------------


def test_udp_over_ethernet_fields() -> None:
    payload = b"INVITE sip:bob@example.com SIP/2.0\r\n"
    frame = eth(0x0800, ipv4(17, udp(5060, 5070, payload), ident=0x4321))
    d = decode_packet(LINKTYPE_ETHERNET, frame)
    assert (d.ip_version, d.proto, d.sport, d.dport) == (4, 17, 5060, 5070)
    assert (d.src, d.dst, d.src_text, d.dst_text) == (V4_A, V4_B, "192.0.2.1", "198.51.100.7")
    assert (d.l3_offset, d.l4_offset, d.payload_offset) == (14, 34, 42)
    assert frame[d.payload_offset : d.payload_offset + d.payload_len] == payload
    assert d.frag_id == 0x4321 and not d.is_fragment and not d.looks_truncated
    assert d.vlans == () and d.ethertype == 0x0800 and d.l3_end == len(frame)
    assert ip_ports(LINKTYPE_ETHERNET, frame) == (V4_A, V4_B, 17, 5060, 5070)


def test_fast_path_and_general_path_agree() -> None:
    """The Ethernet/IPv4 fast path must give exactly what the general path gives (the
    general path is reached for the same IP packet through Linux SLL)."""
    for p in ip_payloads():
        if p[0] >> 4 != 4:
            continue
        for extra in (b"", bytes(9)):
            a = decode_packet(LINKTYPE_ETHERNET, eth(0x0800, p + extra)).as_dict()
            b = decode_packet(LINKTYPE_LINUX_SLL, sll(0x0800, p + extra)).as_dict()
            for key in ("l3_offset", "l3_end", "l4_offset", "payload_offset"):
                a[key] -= 14
                b[key] -= 16
            if a["frag_data_offset"]:
                a["frag_data_offset"] -= 14
                b["frag_data_offset"] -= 16
            assert a == b


def test_tcp_fields() -> None:
    opts = b"\x02\x04\x05\xb4\x01\x01\x08\x0a" + bytes(8)
    frame = eth(0x86DD, ipv6(6, tcp(1234, 80, 0xFFFFFFFF, TCP_SYN | TCP_ACK, b"xy", opts)))
    d = decode_packet(LINKTYPE_ETHERNET, frame)
    assert (d.sport, d.dport, d.tcp_seq, d.tcp_flags) == (1234, 80, 0xFFFFFFFF, 0x12)
    assert d.payload_offset == 14 + 40 + 20 + len(opts) and d.payload_len == 2
    assert d.src_text == "2001:db8::1" and d.dst_text == "2001:db8:0:1::abc"


def test_ethernet_padding_is_trimmed_and_snap_cut_is_flagged() -> None:
    p = ipv4(17, udp(1, 2, b"abc"))
    d = decode_packet(LINKTYPE_ETHERNET, eth(0x0800, p) + bytes(15))
    assert d.payload_len == 3 and d.l3_end == 14 + len(p) and not d.looks_truncated
    big = eth(0x0800, ipv4(6, tcp(1, 2, 3, TCP_ACK, bytes(1000))))
    d = decode_packet(LINKTYPE_ETHERNET, big[:96])
    assert d.looks_truncated and d.payload_len == 96 - 54 and d.l3_end == 96
    d = decode_packet(LINKTYPE_ETHERNET, eth(0x0800, ipv4(17, udp(1, 2, b"abc", length=100))))
    assert d.looks_truncated and d.payload_len == 3


def test_ipv4_tso_zero_total_length_runs_to_the_end() -> None:
    p = ipv4(6, tcp(1, 2, 3, TCP_ACK, bytes(100)), total=0)
    d = decode_packet(LINKTYPE_RAW, p)
    assert d.payload_len == 100 and not d.looks_truncated


def test_vlan_depth_and_cap() -> None:
    p = ipv4(17, udp(1, 2, b""))
    tags = tuple((0x8100, i) for i in range(1, MAX_VLAN_TAGS + 1))
    d = decode_packet(LINKTYPE_ETHERNET, eth(0x0800, p, tags))
    assert d.vlans == tuple(range(1, MAX_VLAN_TAGS + 1)) and d.sport == 1
    assert d.l3_offset == 14 + 4 * MAX_VLAN_TAGS
    with pytest.raises(ParseError, match=f"more than {MAX_VLAN_TAGS} VLAN tags"):
        decode_packet(LINKTYPE_ETHERNET, eth(0x0800, p, (*tags, (0x8100, 99))))


def test_non_ip_frames_have_version_zero() -> None:
    d = decode_packet(LINKTYPE_ETHERNET, eth(0x0806, bytes(28), ((0x8100, 9),)))
    assert (d.ip_version, d.ethertype, d.vlans, d.payload_offset, d.payload_len) == (
        0,
        0x0806,
        (9,),
        18,
        28,
    )
    assert d.src_text == "" and ip_ports(LINKTYPE_ETHERNET, eth(0x0806, bytes(28))) is None
    assert decode_packet(LINKTYPE_NULL, null_hdr(17, bytes(40))).ip_version == 0
    assert decode_packet(LINKTYPE_LINUX_SLL, sll(0x0800, bytes(40), hatype=824)).ip_version == 0
    assert decode_packet(LINKTYPE_ETHERNET, eth(0x0042, bytes(46))).ip_version == 0  # 802.3


MALFORMED = [
    (
        LINKTYPE_ETHERNET,
        eth(0x0800, bytes.fromhex("45000014000000004011")),
        "IPv4 header truncated at offset 14: need 20 bytes, have 10",
    ),
    (LINKTYPE_ETHERNET, bytes(13), "Ethernet header truncated at offset 0: need 14 bytes, have 13"),
    (LINKTYPE_LINUX_SLL, bytes(15), "Linux SLL header truncated at offset 0: need 16"),
    (LINKTYPE_LINUX_SLL2, bytes(19), "Linux SLL2 header truncated at offset 0: need 20"),
    (LINKTYPE_NULL, b"\x02\x00", "NULL loopback header truncated at offset 0: need 4"),
    (LINKTYPE_ETHERNET, eth(0x8100, b"\x00"), "VLAN tag truncated at offset 14: need 4"),
    (LINKTYPE_RAW, bytes(30), "IP version 0, not 4 or 6"),
    (LINKTYPE_IPV4, b"\x65" + bytes(30), "IPv4 header at offset 0 has version 6"),
    (LINKTYPE_RAW, b"\x44" + bytes(30), "header length 16 < 20"),
    (LINKTYPE_RAW, b"\x4f" + bytes(30), "IPv4 header with options truncated at offset 0: need 60"),
    (LINKTYPE_RAW, ipv4(17, udp(1, 2, b""), total=12), "total length 12 < header length 20"),
    (LINKTYPE_RAW, ipv4(17, b"\0\1\0\2"), "UDP header truncated at offset 20: need 8 bytes"),
    (LINKTYPE_RAW, ipv4(17, udp(1, 2, b"", length=5)), "UDP header at offset 20 has length 5"),
    (LINKTYPE_RAW, ipv4(6, tcp(1, 2, 3, 0)[:16]), "TCP header truncated at offset 20: need 20"),
    (LINKTYPE_RAW, ipv4(6, b"\0" * 12 + b"\x40" + bytes(7)), "data offset 16 < 20"),
    (LINKTYPE_RAW, ipv4(6, b"\0" * 12 + b"\xf0" + bytes(7)), "TCP header with options"),
    (
        LINKTYPE_RAW,
        ipv6(0, b"\x11\x05" + bytes(10)),
        "IPv6 extension header 0 truncated at offset 40: need 48",
    ),
    (
        LINKTYPE_RAW,
        ipv6(44, b"\x11\x00\x00"),
        "IPv6 fragment header truncated at offset 40: need 8",
    ),
    (
        LINKTYPE_RAW,
        ipv6(44, ext_frag(44, 0, True, 1) + ext_frag(17, 0, True, 1)),
        "second IPv6 fragment header",
    ),
    (
        LINKTYPE_RAW,
        ipv6(60, ext_opts(60) * MAX_IPV6_EXT_HEADERS + ext_opts(17)),
        f"more than {MAX_IPV6_EXT_HEADERS} IPv6 extension headers",
    ),
    (LINKTYPE_IPV6, bytes(39), "IPv6 header truncated at offset 0: need 40 bytes, have 39"),
    (1234, bytes(60), "unsupported link type 1234"),
]


@pytest.mark.parametrize(("linktype", "frame", "message"), MALFORMED, ids=[m[2] for m in MALFORMED])
def test_malformed_input_raises_parse_error_saying_what_and_where(
    linktype: int, frame: bytes, message: str
) -> None:
    with pytest.raises(ParseError) as info:
        decode_packet(linktype, frame)
    assert message in str(info.value)
    with pytest.raises(ParseError):
        ip_ports(linktype, frame)


@pytest.mark.parametrize(
    "frame",
    [f for lt, f, _ in MALFORMED if lt == LINKTYPE_RAW and f[0] >> 4 in (4, 6)],
    ids=[m for lt, f, m in MALFORMED if lt == LINKTYPE_RAW and f[0] >> 4 in (4, 6)],
)
def test_malformed_ip_behind_ethernet_raises_too(frame: bytes) -> None:
    """The same bad IP packets through the Ethernet fast path."""
    with pytest.raises(ParseError):
        decode_packet(LINKTYPE_ETHERNET, eth(0x0800 if frame[0] >> 4 == 4 else 0x86DD, frame))


def test_fragment_fields() -> None:
    first = ipv4(17, udp(1, 2, bytes(16), length=40), mf=True, ident=9)
    d = decode_packet(LINKTYPE_RAW, first)
    assert d.is_fragment and d.more_fragments and d.frag_offset == 0 and d.frag_id == 9
    assert (d.sport, d.dport, d.payload_len, d.frag_data_offset) == (1, 2, 16, 20)
    assert not d.looks_truncated  # the UDP length covers the whole datagram, not this piece
    later = ipv4(17, bytes(16), frag_offset=24, ident=9)
    d = decode_packet(LINKTYPE_RAW, later)
    assert d.is_fragment and not d.more_fragments and d.frag_offset == 24
    assert (d.sport, d.dport, d.l4_offset, d.payload_offset, d.payload_len) == (0, 0, 20, 20, 16)
    tiny = ipv4(6, bytes(8), mf=True)  # first fragment too short for a TCP header
    d = decode_packet(LINKTYPE_RAW, tiny)
    assert d.is_fragment and d.sport == 0 and d.payload_offset == 20
    v6 = ipv6(0, ext_opts(44) + ext_frag(17, 8, True, 0x01020304) + bytes(24))
    d = decode_packet(LINKTYPE_RAW, v6)
    assert (d.proto, d.frag_id, d.frag_offset, d.more_fragments) == (17, 0x01020304, 8, True)
    assert d.frag_data_offset == d.l4_offset == 40 + 8 + 8 and d.payload_len == 24


def test_null_family_in_either_byte_order() -> None:
    for order in "<>":
        for fam, version in ((2, 4), (10, 6), (24, 6), (28, 6), (30, 6)):
            p = ipv4(17, udp(1, 2, b"")) if version == 4 else ipv6(17, udp(1, 2, b""))
            d = decode_packet(LINKTYPE_NULL, null_hdr(fam, p, order))
            assert (d.ip_version, d.l3_offset, d.sport) == (version, 4, 1)
    # LOOP is always network order: a little-endian family is not a family it knows
    assert decode_packet(LINKTYPE_LOOP, null_hdr(2, ipv4(1, b""), "<")).ip_version == 0


def test_accepts_memoryview_and_bytearray() -> None:
    frame = eth(0x0800, ipv4(17, udp(5, 6, b"xyz")))
    for buf in (bytearray(frame), memoryview(frame)):
        d = decode_packet(LINKTYPE_ETHERNET, buf)
        assert (d.src, d.sport, d.payload_len) == (V4_A, 5, 3)
        assert ip_ports(LINKTYPE_ETHERNET, buf) == (V4_A, V4_B, 17, 5, 6)


def test_decoded_is_slotted() -> None:
    d = decode_packet(LINKTYPE_RAW, ipv4(17, udp(1, 2, b"")))
    assert not hasattr(d, "__dict__")
    with pytest.raises(AttributeError):
        d.extra = 1  # type: ignore[attr-defined]
    assert "sport=1" in repr(d)


# --- fuzzing ---------------------------------------------------------------------------------


OFFSET_FIELDS = ("l3_offset", "l3_end", "l4_offset", "payload_offset")


def _via_sll(data: bytes) -> Decoded | None:
    """Decodes an Ethernet frame's contents again behind a Linux SLL header (2 bytes
    longer), which never takes the Ethernet fast path. None if that raises."""
    try:
        d = decode_packet(LINKTYPE_LINUX_SLL, sll(struct.unpack_from("!H", data, 12)[0], data[14:]))
    except ParseError:
        return None
    for name in OFFSET_FIELDS:
        setattr(d, name, getattr(d, name) - 2)
    if d.frag_data_offset:
        d.frag_data_offset -= 2
    return d


def _decode_or_parse_error(linktype: int, data: bytes) -> Decoded | None:
    general = _via_sll(data) if linktype == LINKTYPE_ETHERNET and len(data) >= 14 else None
    try:
        d = decode_packet(linktype, data)
    except ParseError:
        with pytest.raises(ParseError):
            ip_ports(linktype, data)
        assert general is None, "the general path accepted what the fast path refused"
        return None
    check_invariants(d, data)
    ports = ip_ports(linktype, data)
    assert ports == (None if d.ip_version == 0 else (d.src, d.dst, d.proto, d.sport, d.dport))
    if linktype == LINKTYPE_ETHERNET and len(data) >= 14:
        assert general is not None and general.as_dict() == d.as_dict()
    return d


def all_valid_frames() -> Iterator[tuple[int, bytes]]:
    for linktype, frames in link_frames().items():
        for frame in frames:
            yield linktype, frame[0] if isinstance(frame, tuple) else frame


def test_every_truncation_of_every_built_frame() -> None:
    for linktype, frame in all_valid_frames():
        for cut in range(len(frame) + 1):
            _decode_or_parse_error(linktype, frame[:cut])


LINKTYPES = sorted(SUPPORTED_LINKTYPES)
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.sampled_from(LINKTYPES), st.binary(max_size=200))
def test_random_bytes_raise_only_parse_error(linktype: int, data: bytes) -> None:
    _decode_or_parse_error(linktype, data)


# Random bytes rarely get past the link header; these start from real IP headers.
_VALID = list(all_valid_frames())


@FUZZ
@given(
    st.sampled_from(_VALID),
    # mostly in the headers, sometimes anywhere
    st.lists(
        st.tuples(st.one_of(st.integers(0, 80), st.integers(0, 10_000)), st.integers(0, 255)),
        max_size=6,
    ),
    st.integers(0, 10_000),
)
def test_mutated_valid_frames_raise_only_parse_error(
    sample: tuple[int, bytes], flips: list[tuple[int, int]], cut: int
) -> None:
    linktype, frame = sample
    buf = bytearray(frame)
    for pos, value in flips:
        buf[pos % len(buf)] = value
    _decode_or_parse_error(linktype, bytes(buf[: cut % (len(buf) + 1)]))
