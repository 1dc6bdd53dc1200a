"""lc.common.dns against independent oracles, on the public capture corpus.

Oracles (never generated with lc):

* tshark's ``dns.*`` fields: the ``.expected.tsv`` / ``.expected-dns.tsv`` files
  beside the captures in ``../shared/corpus/`` (tshark 4.0, see its MANIFEST.md),
  and for the two captures that carry DNS without such a file, tshark run here
  with the very command line written in those files' first line.
* Zeek's ``dns.log`` for ``dns/zeek_ipv6-fragmented-dns`` (query/response pairing
  with :func:`transaction_key`, RTT, flags, answers).
* suricata-verify's expected SRV fields for ``dns/suricata_dns-udp-eve-log-srv``.
* Arkime's session documents for the two ``dns/arkime_*`` captures: every
  response's question, rcode, opcode and header flags by name, and all records.
* dnspython (a test-only dependency) over every DNS message in the corpus,
  including mDNS, which tshark's ``dns`` filter leaves out: names as dnspython
  writes them (this checks the escaping of iodine's 8-bit labels) and every
  decoded rdata.

Frames are decoded with :func:`lc.common.decode.decode_packet`; IP fragments go
through :class:`lc.common.reasm.FragmentReassembler`, and DNS over TCP through
:class:`lc.common.tcpstream.TcpReassembler` and :class:`DnsTcpFramer`, so a message
lands on the frame that completed it, as in tshark.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lc.common.decode import IPPROTO_TCP, IPPROTO_UDP, LINKTYPE_RAW, Decoded, decode_packet
from lc.common.dns import (
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    TYPE_MX,
    TYPE_NS,
    TYPE_OPT,
    TYPE_PTR,
    TYPE_SOA,
    TYPE_SRV,
    TYPE_TXT,
    DnsMessage,
    DnsRecord,
    DnsTcpFramer,
    name_labels,
    opcode_name,
    parse_dns,
    rcode_name,
    transaction_key,
    type_name,
)
from lc.common.errors import ParseError
from lc.common.pcapfile import open_capture
from lc.common.reasm import FragmentReassembler
from lc.common.tcpstream import TcpReassembler

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
IN_CI = os.environ.get("CI", "").lower() == "true"

# (capture, tshark DNS oracle). A fixed list, so that a file that goes missing fails
# in CI instead of silently dropping out.
ORACLE_FILES = [
    ("dns/arkime_dns-tcp.pcap", "dns/arkime_dns-tcp.pcap.expected.tsv"),
    ("dns/arkime_dns-wiresharkrepo.pcap", "dns/arkime_dns-wiresharkrepo.pcap.expected.tsv"),
    ("dns/dmachard_dns2tcp.pcap", "dns/dmachard_dns2tcp.pcap.expected.tsv"),
    ("dns/dmachard_dnscat2.pcap", "dns/dmachard_dnscat2.pcap.expected.tsv"),
    ("dns/dmachard_iodine.pcap", "dns/dmachard_iodine.pcap.expected.tsv"),
    ("dns/elastic_dns-tunnel-iodine.pcap", "dns/elastic_dns-tunnel-iodine.pcap.expected.tsv"),
    (
        "dns/suricata_dns-tcp-multirequest-buffer.pcap",
        "dns/suricata_dns-tcp-multirequest-buffer.pcap.expected.tsv",
    ),
    (
        "dns/suricata_dns-udp-eve-log-srv.pcap",
        "dns/suricata_dns-udp-eve-log-srv.pcap.expected.tsv",
    ),
    ("dns/zeek_ipv6-fragmented-dns.pcap", "dns/zeek_ipv6-fragmented-dns.pcap.expected.tsv"),
    ("mixed/ja4_latest.pcapng", "mixed/ja4_latest.pcapng.expected-dns.tsv"),
    ("mixed/suricata_sip-method.pcap", "mixed/suricata_sip-method.pcap.expected-dns.tsv"),
    ("mixed/zeek_wikipedia.pcap", "mixed/zeek_wikipedia.pcap.expected-dns.tsv"),
]
# Captures with DNS (tshark's `dns` filter finds some) but no DNS oracle file: tshark
# is run here with the same command line as the files above.
LIVE_FILES = ["smtp/zeek_smtp.pcap", "tls/arkime_curl-enabled-tls13.pcap"]
# Every capture of the corpus in which any DNS message (port 53 or mDNS 5353) occurs,
# for the dnspython comparison: the above plus mDNS-only ones.
ALL_DNS_FILES = [c for c, _ in ORACLE_FILES] + LIVE_FILES + ["http/arkime_v6-http.pcap"]

DNS_PORTS = (53, 5353)
ROOT = "<Root>"  # tshark's text for the root name


def need(rel: str) -> Path:
    path = CORPUS / rel
    if not path.is_file():
        reason = f"capture corpus file not found: {path}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the corpus is required)")
        pytest.skip(reason)
    return path


def read_oracle_text(text: bytes, where: str) -> tuple[str, list[str], dict[int, dict[str, bytes]]]:
    """(comment line, header, rows by frame number) of a tshark TSV oracle; cells are
    bytes because tshark writes iodine's 8-bit labels raw."""
    lines = text.split(b"\n")
    comment = lines[0].decode("utf-8", "replace")
    assert comment.startswith("# oracle="), f"{where}: line 1 is not the oracle comment"
    header = lines[1].decode().split("\t")
    rows: dict[int, dict[str, bytes]] = {}
    for line in lines[2:]:
        if not line:
            continue
        cells = line.split(b"\t")
        assert len(cells) == len(header), f"{where}: row has {len(cells)} cells: {line[:80]!r}"
        row = dict(zip(header, cells, strict=True))
        rows[int(row["frame.number"])] = row
    return comment, header, rows


def read_oracle(path: Path) -> tuple[str, list[str], dict[int, dict[str, bytes]]]:
    return read_oracle_text(path.read_bytes(), str(path))


def tshark_command(capture: str) -> list[str]:
    """The exact tshark command of the DNS oracles, for another capture."""
    comment, _, _ = read_oracle(need(ORACLE_FILES[0][1]))
    cmd = shlex.split(comment.split("run from the corpus/ directory: ", 1)[1])
    assert cmd[:3] == ["tshark", "-n", "-r"], cmd
    cmd[3] = capture
    return cmd


def frames(path: Path) -> Iterator[tuple[int, int, Decoded, bytes]]:
    """``(frame number, ts_ns, decoded, transport payload)`` of every IP frame, with IP
    fragments reassembled (the datagram shows up at the frame that completed it)."""
    frag = FragmentReassembler()
    with open_capture(path) as reader:
        for number, (ts, iface, data, _orig) in enumerate(reader.records(), 1):
            linktype = reader.interfaces[iface].linktype
            try:
                d = decode_packet(linktype, data)
            except ParseError:
                continue
            if d.ip_version == 0:
                continue
            if d.is_fragment:
                whole = frag.feed(ts, linktype, data, d)
                if whole is None:
                    continue
                data = whole
                d = decode_packet(LINKTYPE_RAW, data)
            yield number, ts, d, bytes(data[d.payload_offset : d.payload_offset + d.payload_len])


def dns_messages(
    path: Path, ports: tuple[int, ...] = DNS_PORTS
) -> list[tuple[int, int, Decoded, bytes]]:
    """Every DNS message (UDP payload, or a message framed out of a TCP stream) as
    ``(frame number, ts_ns, decoded, message bytes)``, in capture order."""
    out = []
    tcp = TcpReassembler()
    framers: dict[tuple[bytes, int, bytes, int], DnsTcpFramer] = {}
    for number, ts, d, payload in frames(path):
        if d.sport not in ports and d.dport not in ports:
            continue
        if d.proto == IPPROTO_UDP:
            out.append((number, ts, d, payload))
        elif d.proto == IPPROTO_TCP:
            key = (d.src, d.sport, d.dst, d.dport)
            delivery = tcp.feed(ts, key, d.tcp_seq, d.tcp_flags, payload)
            framer = framers.setdefault(key, DnsTcpFramer())
            if delivery.gap:
                framer.gap()
            for _off, chunk in delivery.chunks:
                for _s, _e, message in framer.feed(chunk):
                    out.append((number, ts, d, message))
    for framer in framers.values():
        assert framer.counters["gaps"] == 0 and framer.buffered == 0, framer.counters
    return out


# --- tshark's cells ---------------------------------------------------------------------


def tshark_utf8(raw: bytes) -> bytes:
    """Bytes as tshark 4.0 prints a string field: valid UTF-8 as it is, and one U+FFFD
    for each invalid sequence, where a sequence is a lead byte with the continuation
    bytes (0x80..0xBF) that follow it, up to the length the lead byte announces in
    RFC 2279's UTF-8 (0xF8..0xFB announce 5 bytes, 0xFC and 0xFD 6).
    (Python's "replace" differs: for ``\xed\xbf`` it gives two U+FFFD, tshark one.)"""
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        if b < 0x80:
            out.append(b)
            i += 1
            continue
        # Lead bytes as in the original UTF-8 (RFC 2279): up to 6-byte sequences.
        want = next((k for k, top in enumerate((0xC0, 0xE0, 0xF0, 0xF8, 0xFC, 0xFE)) if b < top), 0)
        j = i + 1
        while j < n and j - i <= want and 0x80 <= raw[j] < 0xC0:
            j += 1
        seq = raw[i:j]
        try:
            out += seq.decode("utf-8").encode() if want and j - i == want + 1 else b"\xef\xbf\xbd"
        except UnicodeDecodeError:
            out += b"\xef\xbf\xbd"
        i = j
    return bytes(out)


def tname(name: str) -> bytes:
    """A name as tshark 4.0 prints it: the label bytes joined by dots, through
    :func:`tshark_utf8` (iodine's 8-bit labels)."""
    if name == ".":
        return ROOT.encode()
    return tshark_utf8(b".".join(name_labels(name)))


def all_records(msg: DnsMessage) -> list[DnsRecord]:
    """Every record in wire order, as tshark lists them."""
    return [*msg.answers, *msg.authority, *msg.additional]


def cells(msg: DnsMessage) -> dict[str, list[bytes]]:
    """lc's values for one message, as lists of tshark's cell values per column."""
    c: dict[str, list[bytes]] = {
        "dns.id": [b"0x%04x" % msg.id],
        "dns.flags.response": [b"1" if msg.qr else b"0"],
        "dns.flags.opcode": [b"%d" % msg.opcode],
        # tshark shows the rcode of responses only.
        "dns.flags.rcode": [b"%d" % msg.rcode] if msg.qr else [],
        "dns.count.queries": [b"%d" % msg.qdcount],
        "dns.count.answers": [b"%d" % msg.ancount],
        "dns.qry.name": [tname(q.name) for q in msg.questions],
        "dns.qry.type": [b"%d" % q.qtype for q in msg.questions],
        "dns.qry.class": [b"0x%04x" % q.qclass for q in msg.questions],
    }
    recs = all_records(msg)
    # tshark 4.0 gives no dns.resp.name for SRV records: it splits their owner into
    # dns.srv.service, .proto and .name instead (dns/suricata_dns-udp-eve-log-srv).
    c["dns.resp.name"] = [tname(r.name) for r in recs if r.rtype != TYPE_SRV]
    c["dns.resp.type"] = [b"%d" % r.rtype for r in recs]
    c["dns.resp.ttl"] = [b"%d" % r.ttl for r in recs if r.rtype != TYPE_OPT]

    def of(rtype: int) -> list:
        return [r.rdata for r in recs if r.rtype == rtype]

    c["dns.a"] = [a.encode() for a in of(TYPE_A)]
    c["dns.aaaa"] = [a.encode() for a in of(TYPE_AAAA)]
    c["dns.cname"] = [tname(n) for n in of(TYPE_CNAME)]
    c["dns.ns"] = [tname(n) for n in of(TYPE_NS)]
    c["dns.mx.mail_exchange"] = [tname(mx[1]) for mx in of(TYPE_MX)]
    c["dns.ptr.domain_name"] = [tname(n) for n in of(TYPE_PTR)]
    c["dns.srv.target"] = [tname(s[3]) for s in of(TYPE_SRV)]
    c["dns.srv.port"] = [b"%d" % s[2] for s in of(TYPE_SRV)]
    c["dns.txt"] = [s for txt in of(TYPE_TXT) for s in txt]
    return c


def compare_rows(
    capture: str, rows: dict[int, dict[str, bytes]], messages: list[tuple[int, int, Decoded, bytes]]
) -> None:
    by_frame: dict[int, list[tuple[Decoded, DnsMessage]]] = {}
    for number, _ts, d, raw in messages:
        if 53 not in (d.sport, d.dport):
            continue  # mDNS: tshark's `dns` filter does not show it
        msg = parse_dns(raw)
        assert msg.defects == (), f"{capture} frame {number}: {msg.defects}"
        by_frame.setdefault(number, []).append((d, msg))
    assert by_frame, f"{capture}: no DNS message found"
    assert sorted(by_frame) == sorted(rows), (
        f"{capture}: frames only lc finds {sorted(set(by_frame) - set(rows))}, "
        f"only tshark finds {sorted(set(rows) - set(by_frame))}"
    )
    problems = []
    for number, found in sorted(by_frame.items()):
        row = rows[number]
        d = found[0][0]
        ours: dict[str, list[bytes]] = {}
        for _d, msg in found:
            for column, values in cells(msg).items():
                ours.setdefault(column, []).extend(values)
        ip = "ip" if d.ip_version == 4 else "ipv6"
        l4 = "udp" if d.proto == IPPROTO_UDP else "tcp"
        ours[f"{ip}.src"] = [d.src_text.encode()]
        ours[f"{ip}.dst"] = [d.dst_text.encode()]
        ours[f"{l4}.srcport"] = [b"%d" % d.sport]
        ours[f"{l4}.dstport"] = [b"%d" % d.dport]
        for column, theirs in row.items():
            if column == "frame.number":
                continue
            mine = b"|".join(ours.get(column, []))
            if mine != theirs:
                problems.append(
                    f"frame {number} {column}: tshark {theirs[:120]!r}, lc {mine[:120]!r}"
                )
    assert not problems, f"{capture}: {len(problems)} mismatches:\n" + "\n".join(problems[:30])


@pytest.mark.parametrize(("capture", "oracle"), ORACLE_FILES, ids=[c for c, _ in ORACLE_FILES])
def test_dns_fields_match_tshark_oracle(capture: str, oracle: str) -> None:
    _, header, rows = read_oracle(need(oracle))
    assert "dns.qry.name" in header and "dns.txt" in header
    compare_rows(capture, rows, dns_messages(need(capture)))


@pytest.mark.parametrize("capture", LIVE_FILES)
def test_dns_fields_match_tshark_run_here(capture: str) -> None:
    path = need(capture)
    if shutil.which("tshark") is None:
        if IN_CI:
            pytest.fail("tshark is not installed (CI=true: it is required)")
        pytest.skip("tshark is not installed")
    out = subprocess.run(
        tshark_command(capture), cwd=CORPUS, capture_output=True, check=True, timeout=60
    ).stdout
    _, _, rows = read_oracle_text(b"# oracle=dns (run here)\n" + out, capture)
    assert rows, f"tshark finds no DNS in {capture}"
    compare_rows(capture, rows, dns_messages(path))


def test_corpus_carries_what_these_tests_rely_on() -> None:
    """Several messages in one TCP segment, IPv6 fragments, raw 8-bit labels, EDNS,
    SRV, a 19-record TCP answer: the cases the oracles above exercise. (No message
    of the corpus spans TCP segments; tests/common/test_dns.py covers that.)"""
    multi = dns_messages(need("dns/suricata_dns-tcp-multirequest-buffer.pcap"))
    assert max(sum(1 for m in multi if m[0] == n) for n, *_ in multi) == 20
    frag = dns_messages(need("dns/zeek_ipv6-fragmented-dns.pcap"))
    assert any(len(raw) > 1400 for *_, raw in frag)
    iodine = [parse_dns(raw) for *_, raw in dns_messages(need("dns/dmachard_iodine.pcap"))]
    assert any("\\" in m.qname for m in iodine)
    srv = [
        parse_dns(raw) for *_, raw in dns_messages(need("dns/suricata_dns-udp-eve-log-srv.pcap"))
    ]
    assert any(m.edns for m in srv) and any(r.rtype == TYPE_SRV for m in srv for r in m.answers)
    tcp = dns_messages(need("dns/arkime_dns-tcp.pcap"))
    assert any(
        len(parse_dns(raw).answers) + len(parse_dns(raw).additional) == 15 for *_, raw in tcp
    )


# --- Zeek: transactions and RTT -----------------------------------------------------------


def zeek_rows(path: Path) -> list[dict[str, str]]:
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


def zeek_answers(msg: DnsMessage) -> list[str]:
    """Zeek's ``answers`` vector for the answer section: addresses and names as they
    are, and ``TXT <length> <string>`` for every string of a TXT record."""
    out = []
    for r in msg.answers:
        if r.rtype == TYPE_TXT:
            out.append(" ".join(f"TXT {len(s)} {s.decode()}" for s in r.rdata))
        elif r.rtype in (TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_PTR):
            out.append(r.rdata)
        else:
            raise AssertionError(f"add Zeek's form of type {r.rtype}")
    return out


def test_transactions_and_rtt_match_zeek() -> None:
    """Queries and responses paired with transaction_key (the first query still open
    takes the response; retransmissions wait behind it) give Zeek's dns.log: ids,
    questions, flags, answers, RTT to the microsecond, and the unanswered query."""
    expected = zeek_rows(need("dns/zeek_ipv6-fragmented-dns.pcap.zeek-dns.log"))
    pending: dict[object, list[tuple[int, DnsMessage]]] = {}
    got: list[tuple[int, DnsMessage, DnsMessage | None, int | None]] = []
    for _n, ts, d, raw in dns_messages(need("dns/zeek_ipv6-fragmented-dns.pcap")):
        msg = parse_dns(raw)
        key = transaction_key(msg, d.src, d.sport, d.dst, d.dport, "udp")
        if not msg.qr:
            pending.setdefault(key, []).append((ts, msg))
        else:
            queue = pending.get(key)
            assert queue, f"response {msg} has no query"
            qts, query = queue.pop(0)
            got.append((qts, query, msg, ts - qts))
    got += [(ts, q, None, None) for queue in pending.values() for ts, q in queue]
    got.sort(key=lambda g: g[0])
    assert len(got) == len(expected) == 3
    for (_ts, query, resp, rtt_ns), z in zip(got, expected, strict=True):
        assert int(z["trans_id"]) == query.id
        assert z["query"] == query.qname
        assert (int(z["qclass"]), int(z["qtype"])) == (query.qclass, query.qtype)
        assert z["RD"] == ("T" if query.rd else "F")
        if resp is None:
            assert z["rtt"] == z["rcode"] == z["answers"] == "-"
            continue
        assert rtt_ns is not None
        assert z["rtt"] == f"{rtt_ns / 1e9:.6f}"
        assert int(z["rcode"]) == resp.rcode
        assert (z["AA"], z["TC"], z["RA"]) == tuple(
            "T" if f else "F" for f in (resp.aa, resp.tc, resp.ra)
        )
        assert int(z["Z"]) == int(resp.z)
        assert z["answers"].split(",") == zeek_answers(resp)
        assert [float(t) for t in z["TTLs"].split(",")] == [float(r.ttl) for r in resp.answers]


# --- suricata-verify: SRV fields ----------------------------------------------------------


def test_srv_fields_match_suricata_verify() -> None:
    import yaml

    spec = yaml.safe_load(
        need("dns/suricata_dns-udp-eve-log-srv.pcap.suricata-verify.test.yaml").read_text()
    )
    match = spec["checks"][1]["filter"]["match"]
    msgs = [
        parse_dns(raw) for *_, raw in dns_messages(need("dns/suricata_dns-udp-eve-log-srv.pcap"))
    ]
    resp = next(m for m in msgs if m.qr)
    assert resp.qname == match["dns.queries[0].rrname"]
    assert resp.qtype == 33 and match["dns.queries[0].rrtype"] == "SRV"
    assert resp.rcode == 0 and match["dns.rcode"] == "NOERROR"
    for i, rec in enumerate(resp.answers):
        prio, weight, port, target = rec.rdata
        assert prio == match[f"dns.answers[{i}].srv.priority"]
        assert weight == match[f"dns.answers[{i}].srv.weight"]
        assert port == match[f"dns.answers[{i}].srv.port"]
        assert target == match[f"dns.answers[{i}].srv.name"]


# --- dnspython, over every DNS message of the corpus --------------------------------------


def _dp_name(name: object) -> str:
    import dns.name

    assert isinstance(name, dns.name.Name)
    return "." if name == dns.name.root else name.to_text(omit_final_dot=True)


def _dp_rdata(rd: object) -> object:
    """dnspython's rdata in lc's representation, for the types lc decodes."""
    import dns.rdata

    if isinstance(rd, dns.rdata.GenericRdata):
        return None
    t = rd.rdtype  # type: ignore[attr-defined]
    if t in (TYPE_A, TYPE_AAAA):
        return rd.address  # type: ignore[attr-defined]
    if t in (TYPE_NS, TYPE_CNAME, TYPE_PTR):
        return _dp_name(rd.target)  # type: ignore[attr-defined]
    if t == TYPE_MX:
        return (rd.preference, _dp_name(rd.exchange))  # type: ignore[attr-defined]
    if t == TYPE_SRV:
        return (rd.priority, rd.weight, rd.port, _dp_name(rd.target))  # type: ignore[attr-defined]
    if t == TYPE_TXT:
        return tuple(rd.strings)  # type: ignore[attr-defined]
    if t == TYPE_SOA:
        return (
            _dp_name(rd.mname),  # type: ignore[attr-defined]
            _dp_name(rd.rname),  # type: ignore[attr-defined]
            rd.serial,  # type: ignore[attr-defined]
            rd.refresh,  # type: ignore[attr-defined]
            rd.retry,  # type: ignore[attr-defined]
            rd.expire,  # type: ignore[attr-defined]
            rd.minimum,  # type: ignore[attr-defined]
        )
    return None  # lc keeps the raw bytes; dnspython's wire form may differ (compression)


@pytest.mark.parametrize("capture", ALL_DNS_FILES)
def test_every_message_matches_dnspython(capture: str) -> None:
    dns_message = pytest.importorskip("dns.message")
    import dns.exception

    messages = dns_messages(need(capture))
    assert messages
    compared = 0
    for number, _ts, _d, raw in messages:
        msg = parse_dns(raw)
        assert msg.defects == ()
        try:
            dp = dns_message.from_wire(raw)
        except dns.exception.DNSException as e:
            # mDNS NSEC records compress their next-domain name, which RFC 3597 (and
            # so dnspython) forbids; lc keeps NSEC rdata raw and reads the rest.
            assert "compression" in str(e).lower() or "Decompression" in type(e).__name__, e
            continue
        where = f"{capture} frame {number}"
        assert msg.id == dp.id and msg.flags & 0xFFFF == dp.flags | (dp.opcode() << 11) | (
            dp.rcode() & 0xF
        ), where
        assert [(q.name, q.qtype, q.qclass) for q in msg.questions] == [
            (_dp_name(r.name), r.rdtype, r.rdclass) for r in dp.question
        ], where
        for ours, theirs in (
            (msg.answers, dp.answer),
            (msg.authority, dp.authority),
            (msg.additional, dp.additional),
        ):
            flat = [
                (
                    _dp_name(rrset.name),
                    int(rrset.rdtype),
                    int(rrset.rdclass),
                    rrset.ttl,
                    _dp_rdata(rd),
                )
                for rrset in theirs
                for rd in rrset
            ]
            mine = [
                (r.name, r.rtype, r.rclass, r.ttl, r.rdata if _dp_rdata_known(r) else None)
                for r in ours
                if r.rtype != TYPE_OPT  # dnspython keeps it apart (compared below)
            ]
            # dnspython groups records into RRsets; the multiset must be the same.
            assert sorted(mine, key=repr) == sorted(flat, key=repr), where
        if dp.opt is not None:
            assert msg.edns is not None
            assert (msg.edns.udp_size, msg.edns.version) == (dp.payload, dp.edns), where
            assert msg.edns.flags == dp.ednsflags & 0xFFFF, where
            assert [code for code, _ in msg.edns.options] == [o.otype for o in dp.options], where
        else:
            assert msg.edns is None, where
        compared += 1
    assert compared >= len(messages) // 2, f"{capture}: dnspython read only {compared} messages"


def _dp_rdata_known(r: DnsRecord) -> bool:
    """Whether dnspython decodes this record's rdata into a type that lc decodes too
    (it reads A, AAAA and SRV in class IN only, not in mDNS's 0x8001, unlike lc)."""
    if r.rclass != 1 and r.rtype in (TYPE_A, TYPE_AAAA, TYPE_SRV):
        return False
    return r.rtype in (
        TYPE_A,
        TYPE_AAAA,
        TYPE_NS,
        TYPE_CNAME,
        TYPE_PTR,
        TYPE_MX,
        TYPE_SRV,
        TYPE_TXT,
        TYPE_SOA,
    )


# --- Arkime: per-response summaries -------------------------------------------------------

ARKIME_FILES = ["dns/arkime_dns-wiresharkrepo.pcap", "dns/arkime_dns-tcp.pcap"]


def _arkime_record(r: DnsRecord) -> dict[str, object]:
    """One record as Arkime's ``dns.answers`` entries hold it (names lower-cased, as
    Arkime writes them; PTR data is not in Arkime's entry)."""
    out: dict[str, object] = {
        "class": "IN" if r.rclass == 1 else str(r.rclass),
        "name": r.name.lower(),
        "ttl": r.ttl,
        "type": type_name(r.rtype),
    }
    if r.rtype in (TYPE_A, TYPE_AAAA):
        out["ip"] = r.rdata
    elif r.rtype == TYPE_CNAME:
        out["cname"] = str(r.rdata).lower()
    elif r.rtype == TYPE_NS:
        out["nameserver"] = str(r.rdata).lower()
    elif r.rtype == TYPE_MX:
        out["priority"], out["mx"] = r.rdata[0], r.rdata[1].lower()  # type: ignore[index]
    elif r.rtype == TYPE_TXT:
        out["txt"] = [s.decode() for s in r.rdata]  # type: ignore[union-attr]
    elif r.rtype != TYPE_PTR:
        raise AssertionError(f"add Arkime's form of type {r.rtype}")
    return out


@pytest.mark.parametrize("capture", ARKIME_FILES)
def test_responses_match_arkime(capture: str) -> None:
    """Every response's question, rcode, opcode, header flags (``header_flags``) and
    records in all three sections against Arkime's session documents. Arkime keys
    DNS by response and lower-cases names, so the comparison is of lower-cased
    summaries, as multisets (sessions list them in another order)."""
    import json

    doc = json.loads(need(capture + ".arkime.json").read_text())
    theirs = []
    for session in doc["sessions3"]:
        for e in session["body"].get("dns", []):
            theirs.append(
                {
                    "queryHost": e["queryHost"],
                    "qt": e["qt"],
                    "qc": e["qc"],
                    "status": e["status"],
                    "opcode": e["opcode"],
                    "headerFlags": sorted(e["headerFlags"]),
                    "answersCnt": e["answersCnt"],
                    "answers": e.get("answers", []),
                }
            )
    ours = []
    for *_, raw in dns_messages(need(capture)):
        msg = parse_dns(raw)
        if not msg.qr:
            continue
        records = [r for r in all_records(msg) if r.rtype != TYPE_OPT]
        ours.append(
            {
                "queryHost": msg.qname.lower(),
                "qt": type_name(msg.qtype),
                "qc": "IN" if msg.qclass == 1 else str(msg.qclass),
                "status": rcode_name(msg.full_rcode),
                "opcode": opcode_name(msg.opcode),
                "headerFlags": sorted(msg.header_flags),
                "answersCnt": len(records),
                "answers": [_arkime_record(r) for r in records],
            }
        )
    assert len(ours) == len(theirs) > 0

    def key(entry: dict[str, object]) -> str:
        return json.dumps(entry, sort_keys=True)

    assert sorted(map(key, ours)) == sorted(map(key, theirs))
