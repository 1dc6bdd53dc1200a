"""lc.common.sip and lc.common.sdp against tshark, on the public capture corpus.

The oracle is the ``.expected.tsv`` / ``.expected-sip.tsv`` files next to the
captures in ``../shared/corpus/`` (made by tshark 4.0, see its MANIFEST.md; never
regenerated with lc). Every frame is decoded with :func:`lc.common.decode.decode_packet`;
for UDP, every payload :func:`looks_like_sip` accepts is parsed and compared field by
field with tshark's row for that frame number, and the set of frames must be the
same both ways. For SIP over TCP, the payloads of each direction are fed in frame
order to a :class:`SipStreamFramer`, and the messages it completes must be tshark's
reassembled messages, at the same frame numbers.

Where lc and tshark differ on purpose, the exception is written next to the
comparison it affects, and only there.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lc.common.decode import IPPROTO_TCP, IPPROTO_UDP, LINKTYPE_RAW, Decoded, decode_packet
from lc.common.errors import ParseError
from lc.common.pcapfile import PcapFormatError, open_capture
from lc.common.sdp import SessionDesc, parse_sdp
from lc.common.sip import SipMessage, SipStreamFramer, looks_like_sip, parse_sip

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
IN_CI = os.environ.get("CI", "").lower() == "true"

# (capture, tshark SIP oracle). A fixed list, so that a file that goes missing fails
# in CI instead of silently dropping out of the test.
UDP_FILES = [
    ("sip/heplify_sip_ipv6_udp.pcap", "sip/heplify_sip_ipv6_udp.pcap.expected.tsv"),
    ("sip/sipnab_DTMFsipinfo.pcap", "sip/sipnab_DTMFsipinfo.pcap.expected.tsv"),
    ("sip/sipnab_b2bua-asterisk.pcapng", "sip/sipnab_b2bua-asterisk.pcapng.expected.tsv"),
    (
        "sip/sipnab_register-invite-reinvite-bye.pcap",
        "sip/sipnab_register-invite-reinvite-bye.pcap.expected.tsv",
    ),
    ("sip/suricata_sip-compact-form.pcap", "sip/suricata_sip-compact-form.pcap.expected.tsv"),
    ("sip/suricata_sip-sdp.pcap", "sip/suricata_sip-sdp.pcap.expected.tsv"),
    ("sip/zeek_sip-wireshark.pcap", "sip/zeek_sip-wireshark.pcap.expected.tsv"),
    ("rtp/sipnab_SIP_DTMF2.cap", "rtp/sipnab_SIP_DTMF2.cap.expected-sip.tsv"),
    ("rtp/sipnab_rtp-protocol.pcap", "rtp/sipnab_rtp-protocol.pcap.expected-sip.tsv"),
    ("rtp/sipnab_sip-rtp-g711.pcap", "rtp/sipnab_sip-rtp-g711.pcap.expected-sip.tsv"),
    ("mixed/sipnab_SIP_CALL_RTP_G711.pcap", "mixed/sipnab_SIP_CALL_RTP_G711.pcap.expected-sip.tsv"),
    ("mixed/suricata_sip-method.pcap", "mixed/suricata_sip-method.pcap.expected-sip.tsv"),
]
TCP_FILE = ("sip/heplify_sip_ipv4_tcp.pcap", "sip/heplify_sip_ipv4_tcp.pcap.expected.tsv")

# tshark's names for the RTP payload types in sdp.media.format (its rtp_payload_type
# value strings), for the static types that occur in the corpus. Dynamic types are
# "DynamicRTP-Type-<n>". A new static type in the corpus fails loudly below.
TSHARK_PT_NAMES = {
    0: "ITU-T G.711 PCMU",
    2: "ITU-T G.721",
    3: "GSM 06.10",
    4: "ITU-T G.723",
    8: "ITU-T G.711 PCMA",
    9: "ITU-T G.722",
    13: "Comfort noise",
    18: "ITU-T G.729",
    31: "ITU-T H.261",
    34: "ITU-T H.263",
}

ETHERTYPE_PPPOE_SESSION = 0x8864
PPP_IPV4 = b"\x00\x21"


def need(rel: str) -> Path:
    path = CORPUS / rel
    if not path.is_file():
        reason = f"capture corpus file not found: {path}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the corpus is required)")
        pytest.skip(reason)
    return path


def read_oracle(path: Path) -> tuple[list[str], dict[int, dict[str, str]]]:
    """The header and the rows (by frame number) of a tshark TSV oracle."""
    lines = path.read_bytes().decode("utf-8", "surrogateescape").split("\n")
    assert lines[0].startswith("# oracle="), f"{path}: line 1 is not the oracle comment"
    header = lines[1].split("\t")
    rows: dict[int, dict[str, str]] = {}
    for line in lines[2:]:
        if not line:
            continue
        cells = line.split("\t")
        assert len(cells) == len(header), f"{path}: row has {len(cells)} cells: {line[:80]!r}"
        row = dict(zip(header, cells, strict=True))
        rows[int(row["frame.number"])] = row
    return header, rows


def frames(path: Path) -> Iterator[tuple[int, Decoded, bytes]]:
    """``(frame number, decoded headers, transport payload)`` of every IP frame.

    decode_packet does not follow PPPoE (its docstring says so); one capture here is
    PPPoE, so its session header is stepped over here and the IPv4 inside decoded
    as raw IP.
    """
    try:
        reader = open_capture(path)
    except PcapFormatError as e:  # e.g. a pcapng the reader cannot handle
        pytest.skip(f"lc.common.pcapfile cannot read {path.name}: {e}")
    with reader:
        for number, (_ts, iface, data, _orig) in enumerate(reader.records(), 1):
            try:
                d = decode_packet(reader.interfaces[iface].linktype, data)
                if d.ip_version == 0 and d.ethertype == ETHERTYPE_PPPOE_SESSION:
                    inner = d.l3_offset + 6
                    if data[inner : inner + 2] != PPP_IPV4:
                        continue
                    data = data[inner + 2 :]
                    d = decode_packet(LINKTYPE_RAW, data)
            except ParseError:
                continue
            if d.ip_version == 0:
                continue
            yield number, d, data[d.payload_offset : d.payload_offset + d.payload_len]


def addr_set(cell: str) -> set[str]:
    out = set()
    for a in cell.split("|"):
        if a:
            try:
                out.add(str(ipaddress.ip_address(a)))
            except ValueError:
                out.add(a)
    return out


def _split_commas(value: str) -> list[str]:
    """Comma-separated header values (Via), enough for the corpus: no quoted commas."""
    return [p.strip() for p in value.split(",") if p.strip()]


def via_fields(msg: SipMessage) -> tuple[str, str]:
    """tshark's sip.Via.transport and sip.Via.branch cells, from ``header_all('via')``."""
    transports = []
    branches = []
    for value in msg.header_all("via"):
        for via in _split_commas(value):
            proto, _, rest = via.partition(" ")
            transports.append(proto.split("/")[2].strip().upper())
            sent_by = rest.split(";", 1)[0]
            if sent_by.count(":") > 1 and "[" not in sent_by:
                # An IPv6 sent-by without brackets (invalid, RFC 3261 25.1; sent in
                # sip/heplify_sip_ipv6_udp): tshark 4.0 stops reading the Via there and
                # reports no branch.
                continue
            for param in via.split(";")[1:]:
                name, _, v = param.partition("=")
                if name.strip().lower() == "branch":
                    branches.append(v.strip())
    return "|".join(transports), "|".join(branches)


def format_cell(sdp: SessionDesc) -> str:
    """tshark's sdp.media.format cell: per m= line, the names of its formats, then the
    payload type of each of its rtpmap and fmtp attributes."""
    out = []
    for m in sdp.media:
        for fmt in m.formats:
            pt = int(fmt)
            if pt >= 96:
                out.append(f"DynamicRTP-Type-{pt}")
            else:
                assert pt in TSHARK_PT_NAMES, f"add tshark's name of payload type {pt}"
                out.append(TSHARK_PT_NAMES[pt])
        for name, value in m.attributes:
            if name.lower() in ("rtpmap", "fmtp"):
                out.append(value.split(None, 1)[0])
    return "|".join(out)


def expected_cells(d: Decoded, msg: SipMessage) -> dict[str, str]:
    """lc's values, in tshark's column names and cell formats."""
    cells = {
        "ip.src": d.src_text if d.ip_version == 4 else "",
        "ipv6.src": d.src_text if d.ip_version == 6 else "",
        "ip.dst": d.dst_text if d.ip_version == 4 else "",
        "ipv6.dst": d.dst_text if d.ip_version == 6 else "",
        "sip.Method": msg.method,
        "sip.r-uri": msg.request_uri,
        "sip.Status-Code": str(msg.status) if msg.status else "",
        "sip.Call-ID": msg.call_id,
        "sip.CSeq.seq": str(msg.cseq_seq),
        "sip.CSeq.method": msg.cseq_method,
        "sip.from.user": msg.from_user,
        "sip.from.tag": msg.from_tag,
        "sip.to.user": msg.to_user,
        "sip.to.tag": msg.to_tag,
        "sip.Contact": "|".join(msg.header_all("contact")),
        "sip.Content-Type": "|".join(msg.header_all("content-type")),
        "sip.User-Agent": "|".join(msg.header_all("user-agent")),
    }
    cells["sip.Via.transport"], cells["sip.Via.branch"] = via_fields(msg)
    if d.proto == IPPROTO_UDP:
        cells["udp.srcport"], cells["udp.dstport"] = str(d.sport), str(d.dport)
    else:
        cells["tcp.srcport"], cells["tcp.dstport"] = str(d.sport), str(d.dport)
    sdp_cells = dict.fromkeys(
        (
            "sdp.owner.username",
            "sdp.owner.sessionid",
            "sdp.owner.version",
            "sdp.media.media",
            "sdp.media.port",
            "sdp.media.proto",
            "sdp.media.format",
            "sdp.media_attr",
        ),
        "",
    )
    if msg.content_type == "application/sdp" and msg.body:
        sdp = parse_sdp(msg.body)
        sdp_cells.update(
            {
                "sdp.owner.username": sdp.origin_username,
                "sdp.owner.sessionid": sdp.session_id,
                "sdp.owner.version": sdp.session_version,
                "sdp.media.media": "|".join(m.media for m in sdp.media),
                "sdp.media.port": "|".join(str(m.port) for m in sdp.media),
                "sdp.media.proto": "|".join(m.proto for m in sdp.media),
                "sdp.media.format": format_cell(sdp),
                "sdp.media_attr": "|".join(
                    f"{n}:{v}" if v else n
                    for n, v in (*sdp.attributes, *(a for m in sdp.media for a in m.attributes))
                ),
            }
        )
        addrs = {m.connection for m in sdp.media if m.connection} | (
            {sdp.connection} if sdp.connection else set()
        )
        sdp_cells["sdp.connection_info.address"] = "|".join(sorted(addrs))
    else:
        sdp_cells["sdp.connection_info.address"] = ""
    cells.update(sdp_cells)
    return cells


def compare(where: str, row: dict[str, str], d: Decoded, msg: SipMessage) -> list[str]:
    """Mismatches between tshark's row and lc's values, one text each."""
    ours = expected_cells(d, msg)
    problems = []
    for column, value in ours.items():
        theirs = row[column]
        if column == "sdp.connection_info.address":
            same = addr_set(theirs) == addr_set(value)
        elif column == "sip.User-Agent":
            # tshark keeps trailing blanks of a header value (rtp/sipnab_SIP_DTMF2
            # sends "...Unified Solutions  "); RFC 3261 7.3.1 makes them no part of the
            # value and lc strips them.
            same = theirs.rstrip(" ") == value
        elif column == "sip.CSeq.method":
            same = theirs.upper() == value  # lc upper-cases methods
        else:
            same = theirs == value
        if not same:
            problems.append(f"{where} {column}: tshark {theirs!r}, lc {value!r}")
    return problems


@pytest.mark.parametrize(("capture", "oracle"), UDP_FILES, ids=[c for c, _ in UDP_FILES])
def test_udp_sip_matches_tshark(capture: str, oracle: str) -> None:
    path = need(capture)
    _, rows = read_oracle(need(oracle))
    udp_rows = {n: r for n, r in rows.items() if r["udp.srcport"]}
    seen: dict[int, tuple[Decoded, SipMessage]] = {}
    for number, d, payload in frames(path):
        if d.proto == IPPROTO_UDP and looks_like_sip(payload):
            seen[number] = (d, parse_sip(payload))
    assert len(seen) > 0, f"{capture}: no SIP frame found"
    assert sorted(seen) == sorted(udp_rows), (
        f"{capture}: frames only lc finds {sorted(set(seen) - set(udp_rows))}, "
        f"only tshark finds {sorted(set(udp_rows) - set(seen))}"
    )
    problems: list[str] = []
    for number, (d, msg) in sorted(seen.items()):
        problems += compare(f"frame {number}", udp_rows[number], d, msg)
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:30])


def test_tcp_sip_stream_matches_tshark() -> None:
    capture, oracle = TCP_FILE
    path = need(capture)
    _, rows = read_oracle(need(oracle))
    framers: dict[tuple[str, int, str, int], SipStreamFramer] = {}
    next_seq: dict[tuple[str, int, str, int], int] = {}
    got: list[tuple[int, Decoded, SipMessage]] = []
    for number, d, payload in frames(path):
        if d.proto != IPPROTO_TCP or not payload:
            continue
        key = (d.src_text, d.sport, d.dst_text, d.dport)
        # In-order capture; skip plain retransmissions of bytes already fed.
        expected = next_seq.get(key)
        if expected is not None and (d.tcp_seq - expected) % (1 << 32) >= 1 << 31:
            continue
        next_seq[key] = (d.tcp_seq + len(payload)) % (1 << 32)
        framer = framers.setdefault(key, SipStreamFramer())
        for _start, _end, msg in framer.feed(payload):
            got.append((number, d, msg))
    assert len(got) > 0
    assert [n for n, _, _ in got] == sorted(rows), "messages completed at other frames"
    problems: list[str] = []
    for number, d, msg in got:
        problems += compare(f"frame {number}", rows[number], d, msg)
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:30])
    for framer in framers.values():
        assert framer.buffered == 0
        c = framer.counters
        assert (c["malformed"], c["oversized"], c["resync"], c["missing_content_length"]) == (
            0,
            0,
            0,
            0,
        )


def test_corpus_carries_what_these_tests_rely_on() -> None:
    """The corpus still holds compact forms, IPv6, PPPoE and SDP with two m= lines."""
    _, rows = read_oracle(need("sip/sipnab_DTMFsipinfo.pcap.expected.tsv"))
    assert any("|" in r["sdp.media.media"] for r in rows.values())
    payloads = [p for _, d, p in frames(need("sip/suricata_sip-compact-form.pcap"))]
    assert any(b"\nf: " in p and b"\nl: " in p for p in payloads)
    v6 = [d for _, d, p in frames(need("sip/heplify_sip_ipv6_udp.pcap")) if looks_like_sip(p)]
    assert v6 and all(d.ip_version == 6 for d in v6)
