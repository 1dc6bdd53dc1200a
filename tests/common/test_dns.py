"""lc.common.dns: the message parser, its guards, the TCP framer and the transaction key.

Valid messages are built with dnspython (a test-only dependency, an independent
encoder) or by hand where the bytes themselves are the point (bad pointers, raw
labels). The corpus comparisons are in test_dns_corpus.py.
"""

from __future__ import annotations

import itertools
import random
import struct
import time

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dns_corpus import ALL_DNS_FILES, CORPUS, dns_messages

from lc.common.dns import (
    MAX_POINTER_HOPS,
    TYPE_A,
    TYPE_CNAME,
    TYPE_OPT,
    TYPE_TXT,
    DnsError,
    DnsTcpFramer,
    cname_chain,
    cname_targets,
    name_labels,
    name_text,
    opcode_name,
    parse_dns,
    rcode_name,
    transaction_key,
    type_name,
)
from lc.common.errors import ParseError


def header(
    ident: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!6H", ident, flags, qd, an, ns, ar)


def wire_name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def question(
    name: bytes = wire_name(b"www", b"example", b"com"), qtype: int = 1, qclass: int = 1
) -> bytes:
    return name + struct.pack("!HH", qtype, qclass)


def rr(name: bytes, rtype: int, rdata: bytes, rclass: int = 1, ttl: int = 300) -> bytes:
    return name + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def response(*records: bytes, an: int | None = None) -> bytes:
    """A response to www.example.com A holding ``records`` in the answer section."""
    count = len(records) if an is None else an
    return header(flags=0x8180, an=count) + question() + b"".join(records)


PTR_Q = b"\xc0\x0c"  # a pointer to the question name


# --- header and question -----------------------------------------------------------------


@pytest.mark.parametrize("opcode", [0, 1, 2, 4, 5])
@pytest.mark.parametrize("rcode", [0, 2, 3, 5, 9])
@pytest.mark.parametrize(
    "flag_bits", [0, 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010, 0x87B0]
)
def test_header_fields_and_flags(opcode: int, rcode: int, flag_bits: int) -> None:
    flags = flag_bits | (opcode << 11) | rcode
    msg = parse_dns(header(0xBEEF, flags) + question())
    assert (msg.id, msg.flags, msg.opcode, msg.rcode) == (0xBEEF, flags, opcode, rcode)
    assert msg.qr == bool(flags & 0x8000)
    assert (msg.aa, msg.tc, msg.rd, msg.ra, msg.ad, msg.cd) == tuple(
        bool(flags & b) for b in (0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010)
    )
    assert set(msg.header_flags) == set(dns.flags.to_text(flags).split()) - {"QR"}
    assert msg.defects == ()


def test_question_shortcuts_and_several_questions() -> None:
    q2 = question(wire_name(b"mail", b"example", b"org"), 15, 1)
    msg = parse_dns(header(qd=2) + question() + q2)
    assert (msg.qname, msg.qtype, msg.qclass) == ("www.example.com", 1, 1)
    assert [tuple(q) for q in msg.questions] == [
        ("www.example.com", 1, 1),
        ("mail.example.org", 15, 1),
    ]
    none = parse_dns(header(qd=0))
    assert (none.qname, none.qtype, none.qclass, none.questions) == ("", 0, 0, ())


def test_root_name_and_case_kept() -> None:
    msg = parse_dns(header() + question(b"\x00", 2))
    assert msg.qname == "."
    msg = parse_dns(header() + question(wire_name(b"WwW", b"ExAmple", b"COM")))
    assert msg.qname == "WwW.ExAmple.COM"


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"", "shorter than the 12-byte header"),
        (header()[:11], "shorter than the 12-byte header"),
        (header(), "runs past the end"),
        (header() + b"\x03www\x07exam", "runs past the end"),
        (header() + wire_name(b"www") + b"\x00\x01", "type and class at offset 17 are truncated"),
        (header(qd=2) + question(), "question 2 of 2"),
        (header(qd=65535) + question(), "question 2 of 65535"),
        (header() + b"\x40abc" + b"\x00\x00\x01\x00\x01", "label type 0x40"),
        (header() + b"\x80abc" + b"\x00\x00\x01\x00\x01", "label type 0x80"),
    ],
)
def test_broken_header_or_question_raises_dns_error(data: bytes, what: str) -> None:
    with pytest.raises(DnsError, match=what) as e:
        parse_dns(data)
    assert isinstance(e.value, ParseError) and isinstance(e.value, ValueError)


# --- names: escaping and the guards --------------------------------------------------------


def test_raw_8bit_labels_are_kept_escaped_like_dnspython() -> None:
    label = bytes([0x7A, 0x30, 0xE4, 0x00, 0x20, 0x2E, 0x5C, 0x22, 0x7F, 0xFF, 0x41])
    name = wire_name(label, b"t1", b"example", b"com")
    msg = parse_dns(header() + question(name, 10))
    assert msg.qname == 'z0\\228\\000\\032\\.\\\\\\"\\127\\255A.t1.example.com'
    assert name_labels(msg.qname) == (label, b"t1", b"example", b"com")
    dp = dns.message.from_wire(header() + question(name, 10))
    assert msg.qname == dp.question[0].name.to_text(omit_final_dot=True)
    assert msg.qname.isascii()


@given(st.lists(st.binary(min_size=1, max_size=63), min_size=1, max_size=4))
@settings(max_examples=300, deadline=None)
def test_any_label_bytes_round_trip_and_equal_dnspython(labels: list[bytes]) -> None:
    name = wire_name(*labels)
    if len(name) > 255:
        return
    data = header() + question(name, 16)
    msg = parse_dns(data)
    assert name_labels(msg.qname) == tuple(labels)
    assert name_text(labels) == msg.qname
    assert msg.qname == dns.message.from_wire(data).question[0].name.to_text(omit_final_dot=True)


def test_name_labels_edge_cases() -> None:
    assert name_labels(".") == name_labels("") == ()
    assert name_labels("example.com.") == (b"example", b"com")
    assert name_labels("a\\.b.c") == (b"a.b", b"c")
    assert name_labels("\\065\\0669") == (b"AB9",)
    assert name_text([]) == "."
    with pytest.raises(DnsError, match="ends in a backslash"):
        name_labels("abc\\")
    with pytest.raises(DnsError, match="not a byte"):
        name_labels("\\256")


def test_compression_pointers_followed() -> None:
    # answer: www.example.com (pointer) CNAME cdn.<pointer to example.com at offset 16>
    cname = b"\x03cdn\xc0\x10"
    msg = parse_dns(
        response(rr(PTR_Q, TYPE_CNAME, cname), rr(b"\x03cdn\xc0\x10", TYPE_A, b"\x01\x02\x03\x04"))
    )
    assert [(r.name, r.rtype, r.rdata) for r in msg.answers] == [
        ("www.example.com", TYPE_CNAME, "cdn.example.com"),
        ("cdn.example.com", TYPE_A, "1.2.3.4"),
    ]
    assert msg.defects == ()


def test_pointer_to_a_pointer_chain_and_root() -> None:
    # rdata: "x" + pointer to the previous record's owner (itself a pointer to 12).
    first = rr(PTR_Q, TYPE_CNAME, b"\x01y\xc0\x0c")
    off_owner2 = 12 + len(question()) + len(first)
    second = rr(b"\x01z\xc0\x0c", TYPE_CNAME, b"\x01x" + struct.pack("!H", 0xC000 | off_owner2))
    root_ptr_target = 12 + len(question()) - 5  # the root byte ending the question name
    third = rr(b"\x01w" + struct.pack("!H", 0xC000 | root_ptr_target), TYPE_A, b"\x05\x06\x07\x08")
    msg = parse_dns(response(first, second, third))
    assert [r.rdata for r in msg.answers[:2]] == ["y.www.example.com", "x.z.www.example.com"]
    assert msg.answers[2].name == "w"
    assert msg.defects == ()


def _defect_of(data: bytes) -> str:
    msg = parse_dns(data)
    assert len(msg.defects) == 1, msg.defects
    return msg.defects[0]


def test_pointer_loops_and_forward_pointers_are_refused() -> None:
    base = len(header()) + len(question())
    # a pointer to itself
    assert "does not point backwards" in _defect_of(
        response(rr(struct.pack("!H", 0xC000 | base), TYPE_A, b"\0" * 4))
    )
    # a forward pointer (to the rdata after it)
    assert "does not point backwards" in _defect_of(
        response(rr(struct.pack("!H", 0xC000 | (base + 12)), TYPE_A, b"\0" * 4))
    )
    # a two-name loop: the question name points forward into the answer, which points back
    loop_q = header(flags=0x8180, an=1) + struct.pack("!H", 0xC000 | 18) + b"\x00\x01\x00\x01"
    loop_q += rr(b"\x01a\xc0\x0c", TYPE_A, b"\0" * 4)
    with pytest.raises(DnsError, match="does not point backwards"):
        parse_dns(loop_q)
    # a loop between two labels of the same name in rdata: a -> b -> a
    rdata_off = base + 2 + 10
    loop = (
        b"\x01a"
        + struct.pack("!H", 0xC000 | (rdata_off + 4))
        + b"\x01b"
        + struct.pack("!H", 0xC000 | rdata_off)
    )
    assert "does not point backwards" in _defect_of(response(rr(PTR_Q, TYPE_CNAME, loop)))


def test_pointer_hops_are_bounded() -> None:
    """A chain of pointers, each to the one before: MAX_POINTER_HOPS are followed, one
    more is refused."""

    def chain_message(hops: int) -> bytes:
        base = len(header()) + len(question())
        rdata_off = base + 2 + 10
        # raw rdata: "\x01a\x00" then pointers, each to the previous one
        raw = bytearray(b"\x01a\x00")
        prev = rdata_off
        for _ in range(hops - 1):
            here = rdata_off + len(raw)
            raw += struct.pack("!H", 0xC000 | prev)
            prev = here
        blob = rr(PTR_Q, 0xFF00, bytes(raw))
        cname_off = base + len(blob) + 2 + 10
        assert cname_off > prev
        return response(blob, rr(PTR_Q, TYPE_CNAME, struct.pack("!H", 0xC000 | prev)))

    ok = parse_dns(chain_message(MAX_POINTER_HOPS))
    assert ok.defects == () and ok.answers[1].rdata == "a"
    assert f"more than {MAX_POINTER_HOPS} pointers" in _defect_of(
        chain_message(MAX_POINTER_HOPS + 1)
    )


def test_label_and_name_length_limits() -> None:
    ok63 = parse_dns(header() + question(wire_name(b"a" * 63, b"com")))
    assert ok63.qname == "a" * 63 + ".com"
    # 255 bytes in wire form: three 64-byte labels (length byte + 63), 62 + 1 for the root
    labels = [b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61]
    assert len(wire_name(*labels)) == 255
    assert parse_dns(header() + question(wire_name(*labels))).qname.endswith("d" * 61)
    labels[-1] = b"d" * 62
    with pytest.raises(DnsError, match="longer than 255"):
        parse_dns(header() + question(wire_name(*labels)))
    # too long only through a pointer to a long suffix
    long_suffix = header() + question(wire_name(b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 50))
    rec = rr(b"\x0c" + b"x" * 12 + b"\xc0\x0c", TYPE_A, b"\0" * 4)  # 13 + 244 bytes
    data = struct.pack("!6H", 1, 0x8180, 1, 1, 0, 0) + long_suffix[12:] + rec
    assert "longer than 255" in _defect_of(data)


# --- record sections -----------------------------------------------------------------------


def test_common_rdata_decoded_as_dnspython_reads_them() -> None:
    q = dns.message.make_query("example.com.", "ANY")
    r = dns.message.make_response(q)
    for rtype, text in [
        ("A", "192.0.2.1"),
        ("AAAA", "2001:db8::1"),
        ("AAAA", "::ffff:192.0.2.1"),
        ("CNAME", "alias.example.net."),
        ("NS", "ns1.example.com."),
        ("PTR", "host.example.com."),
        ("MX", "10 mail.example.com."),
        ("SRV", "20 1 5060 sip.example.com."),
        ("TXT", '"v=spf1 -all" "second" ""'),
        ("SOA", "ns1.example.com. hostmaster.example.com. 2024010101 7200 3600 1209600 300"),
        ("CAA", '0 issue "letsencrypt.org"'),
        ("NULL", "\\# 3 010203"),
    ]:
        r.answer.append(dns.rrset.from_text("example.com.", 60, "IN", rtype, text))
    wire = r.to_wire()
    msg = parse_dns(wire)
    assert msg.defects == ()
    got = {(type_name(rec.rtype), repr(rec.rdata)) for rec in msg.answers}
    assert got == {
        ("A", "'192.0.2.1'"),
        ("AAAA", "'2001:db8::1'"),
        ("AAAA", "'::ffff:192.0.2.1'"),
        ("CNAME", "'alias.example.net'"),
        ("NS", "'ns1.example.com'"),
        ("PTR", "'host.example.com'"),
        ("MX", "(10, 'mail.example.com')"),
        ("SRV", "(20, 1, 5060, 'sip.example.com')"),
        ("TXT", "(b'v=spf1 -all', b'second', b'')"),
        (
            "SOA",
            "('ns1.example.com', 'hostmaster.example.com', 2024010101, 7200, 3600, 1209600, 300)",
        ),
        ("CAA", repr(b"\x00\x05issueletsencrypt.org")),
        ("NULL", repr(b"\x01\x02\x03")),
    }
    assert all(
        rec.ttl == 60 and rec.rclass == 1 and rec.name == "example.com" for rec in msg.answers
    )


def test_sections_counts_and_opt_in_additional() -> None:
    q = dns.message.make_query("example.com.", "A", use_edns=0, payload=1400)
    r = dns.message.make_response(q)
    options = [dns.edns.GenericOption(10, b"cookie!!"), dns.edns.GenericOption(12, b"\0\0")]
    r.use_edns(0, dns.flags.DO, 1232, options=options)
    r.set_rcode(dns.rcode.BADVERS)
    r.answer.append(dns.rrset.from_text("example.com.", 60, "IN", "A", "192.0.2.1"))
    r.authority.append(dns.rrset.from_text("example.com.", 60, "IN", "NS", "ns.example.com."))
    r.additional.append(dns.rrset.from_text("ns.example.com.", 60, "IN", "A", "192.0.2.53"))
    msg = parse_dns(r.to_wire())
    assert (len(msg.answers), len(msg.authority), len(msg.additional)) == (1, 1, 2)
    assert (msg.ancount, msg.nscount, msg.arcount) == (1, 1, 2)
    assert [rec.rtype for rec in msg.additional] == [TYPE_A, TYPE_OPT]
    edns = msg.edns
    assert edns is not None
    assert (edns.udp_size, edns.version, edns.do) == (1232, 0, True)
    assert edns.options == ((10, b"cookie!!"), (12, b"\0\0"))
    assert msg.rcode == 0 and edns.extended_rcode == 1 and msg.full_rcode == 16
    assert rcode_name(msg.full_rcode) == "BADVERS"
    qmsg = parse_dns(q.to_wire())
    assert qmsg.edns is not None and qmsg.edns.udp_size == 1400 and qmsg.full_rcode == 0


def test_bad_opt_records_are_defects() -> None:
    opt = rr(b"\x00", TYPE_OPT, b"", rclass=512, ttl=0)
    two = header(ar=2) + question() + opt + opt
    m = parse_dns(two)
    assert m.edns is not None and m.defects == ("a second OPT record (ignored)",)
    named = header(ar=1) + question() + rr(wire_name(b"x"), TYPE_OPT, b"", rclass=512)
    m = parse_dns(named)
    assert m.edns is None and "not the root" in m.defects[0]
    cut = header(ar=1) + question() + rr(b"\x00", TYPE_OPT, b"\x00\x0a\x00\x08abc", rclass=512)
    m = parse_dns(cut)
    assert m.edns is not None and m.edns.options == () and "runs past the rdata" in m.defects[0]


@pytest.mark.parametrize(
    ("record", "what"),
    [
        (rr(PTR_Q, TYPE_A, b"\x01\x02\x03"), "A rdata at offset 61 has 3 bytes, not 4"),
        (rr(PTR_Q, 28, b"\x00" * 15), "AAAA rdata"),
        (rr(PTR_Q, TYPE_CNAME, wire_name(b"x") + b"\xff"), "leaves 1 bytes"),
        (rr(PTR_Q, TYPE_CNAME, b""), "runs past the end"),
        (rr(PTR_Q, 15, b"\x00"), "MX rdata"),
        (rr(PTR_Q, 33, b"\x00\x01\x00\x01\x13\xc4"), "SRV rdata"),
        (rr(PTR_Q, TYPE_TXT, b"\x05abc"), "TXT string at offset 61 runs past its rdata"),
        (rr(PTR_Q, 6, b"\x00\x00" + b"\x00" * 19), "SOA rdata"),
        (rr(PTR_Q, TYPE_A, b"\x01\x02\x03\x04")[:-1], "needs 4 bytes, has 3"),
        (PTR_Q + b"\x00\x01\x00", "record at offset 51 is truncated"),
    ],
)
def test_record_faults_become_defects_and_keep_what_came_before(record: bytes, what: str) -> None:
    good = rr(PTR_Q, TYPE_A, b"\x0a\x00\x00\x01")
    msg = parse_dns(header(flags=0x8180, an=2) + question() + good + record)
    assert [r.rdata for r in msg.answers] == ["10.0.0.1"]
    assert len(msg.defects) == 1 and "answer 2 of 2" in msg.defects[0] and what in msg.defects[0], (
        msg.defects
    )
    assert (msg.id, msg.qname) == (0x1234, "www.example.com")


def test_trailing_bytes_and_oversized_counts() -> None:
    assert parse_dns(header() + question() + b"xx").defects == ("2 trailing bytes",)
    assert parse_dns(header() + question() + b"xx", records=False).defects == ()
    big = parse_dns(
        header(flags=0x8180, an=65535, ns=65535, ar=65535) + question() + rr(PTR_Q, 1, b"\0" * 4)
    )
    assert len(big.answers) == 1 and "answer 2 of 65535" in big.defects[0]


def test_other_classes_keep_class_in_types_raw() -> None:
    chaos = rr(PTR_Q, TYPE_A, b"\x03foo\x00\x12\x34", rclass=3)
    mdns = rr(PTR_Q, TYPE_A, b"\x0a\x00\x00\x02", rclass=0x8001)
    txt_ch = rr(PTR_Q, TYPE_TXT, b"\x03bar", rclass=3)
    msg = parse_dns(response(chaos, mdns, txt_ch))
    assert [r.rdata for r in msg.answers] == [b"\x03foo\x00\x12\x34", "10.0.0.2", (b"bar",)]


def test_records_false_reads_only_the_question() -> None:
    wire = response(rr(PTR_Q, TYPE_A, b"\x01\x02\x03\x04"), rr(PTR_Q, TYPE_A, b"\x01\x02"))
    quick = parse_dns(wire, records=False)
    assert (quick.qname, quick.ancount, quick.answers, quick.defects, quick.edns) == (
        "www.example.com",
        2,
        (),
        (),
        None,
    )
    assert parse_dns(wire).defects != ()


def test_names_of_numbers() -> None:
    assert (type_name(28), type_name(65), type_name(65280)) == ("AAAA", "HTTPS", "TYPE65280")
    assert (rcode_name(3), rcode_name(15)) == ("NXDOMAIN", "RCODE15")
    assert (opcode_name(0), opcode_name(5), opcode_name(9)) == ("QUERY", "UPDATE", "OPCODE9")
    for t in (1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 65, 255, 257):
        assert type_name(t) == dns.rdatatype.to_text(t)
    for r in range(0, 11):
        assert rcode_name(r) == dns.rcode.to_text(r)


def test_repr_is_short_and_safe() -> None:
    label = bytes(range(0xE0, 0xF0))
    text = repr(parse_dns(header() + question(wire_name(label, b"x"))))
    assert text.isascii() and "query id=0x1234" in text


# --- transactions ---------------------------------------------------------------------------


def test_transaction_key_pairs_query_and_response() -> None:
    q = parse_dns(header(0x77, 0x0100) + question(wire_name(b"WWW", b"Example", b"com")))
    r = parse_dns(header(0x77, 0x8180) + question(wire_name(b"www", b"example", b"COM")))
    kq = transaction_key(q, b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x35", 53, "udp")
    kr = transaction_key(r, b"\x0a\x00\x00\x35", 53, b"\x0a\x00\x00\x01", 40000, "udp")
    assert kq == kr
    assert kq.client == b"\x0a\x00\x00\x01" and kq.server_port == 53 and kq.id == 0x77
    assert kq.question == ("www.example.com", 1, 1)
    # another id, port, transport, question or server: another key
    other = parse_dns(header(0x78, 0x8180) + question())
    assert transaction_key(other, b"\x0a\x00\x00\x35", 53, b"\x0a\x00\x00\x01", 40000) != kq
    assert transaction_key(r, b"\x0a\x00\x00\x35", 53, b"\x0a\x00\x00\x01", 40001) != kq
    assert transaction_key(r, b"\x0a\x00\x00\x35", 53, b"\x0a\x00\x00\x01", 40000, "tcp") != kq
    assert transaction_key(r, b"\x0a\x00\x00\x36", 53, b"\x0a\x00\x00\x01", 40000) != kq
    aaaa = parse_dns(header(0x77, 0x8180) + question(qtype=28))
    assert transaction_key(aaaa, b"\x0a\x00\x00\x35", 53, b"\x0a\x00\x00\x01", 40000) != kq


def test_transaction_key_without_question() -> None:
    q = parse_dns(header(0x99, 0x0100) + question())
    formerr = parse_dns(header(0x99, 0x8181, qd=0))
    args = (b"\x01", 5353, b"\x02", 53)
    assert transaction_key(formerr, *args[2:], *args[:2]).question is None
    assert transaction_key(q, *args, question=False) == transaction_key(
        formerr, args[2], args[3], args[0], args[1]
    )


# --- DNS over TCP ----------------------------------------------------------------------------


def framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


MSGS = [header(i) + question(wire_name(b"n%d" % i, b"example", b"com")) for i in range(5)]


def test_framer_several_messages_in_one_segment() -> None:
    f = DnsTcpFramer()
    out = f.feed(framed(*MSGS))
    assert [m for _, _, m in out] == MSGS
    starts = [s for s, _, _ in out]
    assert starts[0] == 0 and all(e == s2 for (_, e, _), s2 in zip(out, starts[1:], strict=False))
    assert f.buffered == 0 and f.counters["messages"] == 5
    assert [parse_dns(m).qname for _, _, m in out] == [f"n{i}.example.com" for i in range(5)]


def test_framer_one_message_across_segments_and_byte_by_byte() -> None:
    stream = framed(*MSGS)
    f = DnsTcpFramer()
    out = []
    for i in range(len(stream)):
        out += f.feed(stream[i : i + 1])
        assert f.buffered <= max(map(len, MSGS)) + 2
    assert out == DnsTcpFramer().feed(stream)
    assert f.offset == len(stream)


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=12))
@settings(max_examples=200, deadline=None)
def test_framer_result_does_not_depend_on_chunking(cuts: list[int]) -> None:
    stream = framed(*MSGS, b"", header(9) + b"x" * 300)
    whole = DnsTcpFramer().feed(stream)
    f = DnsTcpFramer()
    got = []
    points = sorted({min(c * 3, len(stream)) for c in cuts} | {0, len(stream)})
    for a, b in itertools.pairwise(points):
        got += f.feed(stream[a:b])
    assert got == whole and f.counters["empty"] == 1 and f.buffered == 0


def test_framer_gap_drops_until_reset_and_is_bounded() -> None:
    f = DnsTcpFramer()
    stream = framed(*MSGS)
    assert f.feed(stream[:30]) == []
    held = f.buffered
    f.gap()
    assert f.desynced and f.buffered == 0
    assert f.feed(stream[30:]) == []
    assert f.counters["gaps"] == 1 and f.counters["desync_bytes"] == held + len(stream) - 30
    f.reset()
    assert f.feed(stream)[0][2] == MSGS[0]
    big = DnsTcpFramer()
    out = big.feed(b"\xff\xff" + b"\0" * 65535 + b"\xff\xff" + b"\0" * 100)
    assert [m for _, _, m in out] == [b"\0" * 65535] and big.buffered == 102


# --- hostile input ------------------------------------------------------------------------------


def _only_dns_error(data: bytes) -> None:
    try:
        msg = parse_dns(data)
    except DnsError:
        return
    assert msg.qname.isascii()
    for rec in (*msg.answers, *msg.authority, *msg.additional):
        assert rec.name.isascii()


@given(st.binary(max_size=600))
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_bytes_raise_only_dns_error(data: bytes) -> None:
    _only_dns_error(data)
    _only_dns_error(header(flags=0x8180, an=3, ns=2, ar=2) + question() + data)


def _seed_messages() -> list[bytes]:
    q = dns.message.make_query("www.example.com.", "A", use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.example.com.", 60, "IN", "CNAME", "cdn.example.net."))
    r.answer.append(
        dns.rrset.from_text("cdn.example.net.", 60, "IN", "A", "192.0.2.1", "192.0.2.2")
    )
    r.authority.append(
        dns.rrset.from_text(
            "example.net.", 60, "IN", "SOA", "ns.example.net. h.example.net. 1 2 3 4 5"
        )
    )
    r.additional.append(dns.rrset.from_text("ns.example.net.", 60, "IN", "MX", "5 mx.example.net."))
    r.additional.append(dns.rrset.from_text("ns.example.net.", 60, "IN", "TXT", '"a" "b"'))
    r.additional.append(
        dns.rrset.from_text("_sip._udp.example.net.", 60, "IN", "SRV", "1 2 3 x.example.net.")
    )
    return [q.to_wire(), r.to_wire(), *_corpus_seeds()]


_CORPUS_SEEDS: list[bytes] = []


def _corpus_seeds() -> list[bytes]:
    """Up to six messages of each DNS capture of the corpus (tunnel queries with
    8-bit labels, TXT answers, EDNS, SRV, the 20-record TCP answer...), or none
    when the corpus is not there (the dnspython-built seeds still run)."""
    if not _CORPUS_SEEDS:
        for capture in ALL_DNS_FILES:
            if (CORPUS / capture).is_file():
                msgs = [raw for *_, raw in dns_messages(CORPUS / capture)]
                _CORPUS_SEEDS.extend(msgs[:: max(1, len(msgs) // 6)][:6])
    return _CORPUS_SEEDS


@given(st.data())
@settings(max_examples=1500, deadline=None)
def test_mutated_messages_raise_only_dns_error(data: st.DataObject) -> None:
    """dnspython-built and corpus messages, cut, flipped, overwritten with label and
    pointer bytes, stretched, and given other counts."""
    base = bytearray(data.draw(st.sampled_from(_seed_messages())))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "count"]))
        pos = data.draw(st.integers(0, max(0, len(base) - 1)))
        if op == "flip" and base:
            base[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and base:
            base[pos] = data.draw(
                st.sampled_from([0, 0x3F, 0x40, 0xC0, 0xC0 | (pos >> 8), 0xFF, pos & 0xFF])
            )
        elif op == "insert":
            base[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del base[pos : pos + data.draw(st.integers(1, 8))]
        elif op == "truncate":
            del base[pos:]
        elif op == "count" and len(base) >= 12:
            i = data.draw(st.sampled_from([4, 6, 8, 10]))
            base[i : i + 2] = struct.pack("!H", data.draw(st.sampled_from([0, 1, 2, 255, 65535])))
    _only_dns_error(bytes(base))


def _cname_seeds() -> list[bytes]:
    """Responses with CNAME chains: dnspython's (the target of a target compressed
    against the first), and by hand the usual shape (owner pointers to the question
    and to the target, uncompressed targets), a chain of two, and other types."""
    q = dns.message.make_query("www.example.com.", "A")
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.example.com.", 60, "IN", "CNAME", "a.cdn.net."))
    r.answer.append(dns.rrset.from_text("a.cdn.net.", 60, "IN", "CNAME", "b.a.cdn.net."))
    r.answer.append(dns.rrset.from_text("b.a.cdn.net.", 60, "IN", "A", "192.0.2.1"))
    target = wire_name(b"edge7", b"cdn-3", b"net")
    at = 12 + len(question()) + 12  # where the first answer's rdata starts
    to_target = struct.pack("!H", 0xC000 | at)
    usual = response(
        rr(PTR_Q, TYPE_CNAME, target),
        rr(to_target, TYPE_A, bytes([192, 0, 2, 1])),
        rr(to_target, 28, bytes(16)),
        rr(to_target, 99, b"raw"),
    )
    two = response(
        rr(PTR_Q, TYPE_CNAME, target),
        rr(to_target, TYPE_CNAME, wire_name(b"Z", b"example", b"org")),
        rr(struct.pack("!H", 0xC000 | (at + len(target) + 12)), TYPE_A, bytes(4)),
    )
    # A record the whole parse stops at (an A of 5 bytes; an MX without its name)
    # before a CNAME: the chain is empty, the shortcut must not read past it.
    bad_a = response(rr(PTR_Q, TYPE_A, bytes(5)), rr(PTR_Q, TYPE_CNAME, target))
    bad_mx = response(rr(PTR_Q, 15, b"\x00\x05"), rr(PTR_Q, TYPE_CNAME, target))
    return [r.to_wire(), usual, two, response(rr(PTR_Q, TYPE_A, bytes(4))), bad_a, bad_mx]


def _chain_of(msg) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for r in msg.answers:
        if r[1] == TYPE_CNAME:
            out += [r[0], r[4]]
    return out


@given(st.data())
@settings(max_examples=1500, deadline=None)
def test_cname_chain_and_targets_agree_with_the_whole_parse(data: st.DataObject) -> None:
    """cname_chain gives exactly the CNAME owners and targets parse_dns's answers hold
    (or None); cname_targets gives exactly the targets, the owners being the question
    or earlier targets (or None); on mutated responses with chains."""
    base = bytearray(data.draw(st.sampled_from(_cname_seeds())))
    for _ in range(data.draw(st.integers(0, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "count"]))
        pos = data.draw(st.integers(0, max(0, len(base) - 1)))
        if op == "flip" and base:
            base[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and base:
            base[pos] = data.draw(st.sampled_from([0, 4, 5, 16, 0x3F, 0x40, 0xC0, 0xFF]))
        elif op == "insert":
            base[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del base[pos : pos + data.draw(st.integers(1, 8))]
        elif op == "truncate":
            del base[pos:]
        elif op == "count" and len(base) >= 12:
            base[6:8] = struct.pack("!H", data.draw(st.sampled_from([0, 1, 2, 3, 255])))
    wire = bytes(base)
    try:
        msg = parse_dns(wire)
    except DnsError:
        return
    chain = cname_chain(wire)
    if chain is not None:
        assert chain == _chain_of(msg)
    off = 12  # the question's name as the hunter's fast path reads it: plain labels
    while msg.qdcount == 1 and 0 < wire[off] < 64:
        off += 1 + wire[off]
    if msg.qdcount != 1 or wire[off] or off != wire.index(b"\0", 12):
        return
    qend = off + 5
    targets = cname_targets(wire, 0, qend, len(wire))
    if targets is not None:
        full = _chain_of(msg)
        texts = [name_text(name_labels_of(t)) for t in targets]
        assert texts == full[1::2]
        for i, owner in enumerate(full[0::2]):
            assert owner in (msg.qname, *texts[:i])


def name_labels_of(raw: bytes) -> list[bytes]:
    labels, off = [], 0
    while raw[off]:
        labels.append(raw[off + 1 : off + 1 + raw[off]])
        off += 1 + raw[off]
    return labels


def test_cname_chain_and_targets_on_the_usual_shapes() -> None:
    """Unmutated, each seed is read without a whole parse (the property test above
    would pass with functions that always said None)."""
    seeds = _cname_seeds()
    for wire in seeds[:4]:
        assert cname_chain(wire) == _chain_of(parse_dns(wire))
    usual, two = seeds[1:3]
    qend = 12 + len(question())
    for bad in seeds[4:]:  # only a whole parse can tell
        assert cname_chain(bad) is None and cname_targets(bad, 0, qend, len(bad)) is None
    assert cname_targets(usual, 0, qend, len(usual)) == [wire_name(b"edge7", b"cdn-3", b"net")]
    assert len(cname_targets(two, 0, qend, len(two)) or ()) == 2
    frame = b"x" * 42 + usual  # within a capture buffer, from its offset
    assert cname_targets(frame, 42, 42 + qend, len(frame)) == cname_targets(
        usual, 0, qend, len(usual)
    )
    assert cname_targets(_cname_seeds()[0], 0, qend, 100) is None  # compressed targets


def test_every_truncation_of_a_response() -> None:
    assert len(_seed_messages()) > 2 or not CORPUS.is_dir()
    for wire in _seed_messages():
        for cut in range(len(wire)):
            _only_dns_error(wire[:cut])


def _best_time(data: bytes, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        parse_dns(data)
        best = min(best, time.perf_counter() - t0)
    return best


def test_worst_case_messages_parse_in_bounded_time() -> None:
    """64 KiB of hostile compression: a chain of MAX_POINTER_HOPS pointers to a long
    name, and thousands of records whose names all point at the chain's end. Each
    record costs about what a record pointing at the question costs (the chain is
    walked once per message, not once per record: that was 10 times slower).
    Compared as a ratio of best-of-5 times, so a loaded machine does not matter."""
    base = 12 + len(question())
    rdata_off = base + 2 + 10
    raw = bytearray(wire_name(b"a" * 60, b"b" * 60, b"c" * 60))
    prev = rdata_off
    for _ in range(MAX_POINTER_HOPS - 1):
        here = rdata_off + len(raw)
        raw += struct.pack("!H", 0xC000 | prev)
        prev = here
    blob = rr(PTR_Q, 0xFF00, bytes(raw))
    rec = rr(struct.pack("!H", 0xC000 | prev), TYPE_CNAME, struct.pack("!H", 0xC000 | prev))
    count = (65535 - 12 - len(question()) - len(blob)) // len(rec)
    data = header(flags=0x8180, an=count + 1) + question() + blob + rec * count
    assert len(data) <= 65535
    msg = parse_dns(data)
    assert msg.defects == () and len(msg.answers) == count + 1
    plain = (
        header(flags=0x8180, an=count + 1)
        + question()
        + blob
        + rr(PTR_Q, TYPE_CNAME, PTR_Q) * count
    )
    assert len(parse_dns(plain).answers) == count + 1
    ratio = _best_time(data) / _best_time(plain)
    assert ratio < 3, f"hostile chains cost {ratio:.1f} times plain pointers"
    # and random 64 KiB blobs behind a valid header: at most one record-section
    # fault each, so about as fast as the first bad record
    rng = random.Random(7)
    blobs = [header(flags=0x8180, an=65535) + question() + rng.randbytes(65000) for _ in range(20)]
    t0 = time.perf_counter()
    for b in blobs:
        _only_dns_error(b)
    assert time.perf_counter() - t0 < 20 * _best_time(plain)
