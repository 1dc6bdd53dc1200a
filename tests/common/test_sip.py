"""Tests for lc.common.sip: parse_sip, looks_like_sip, users_of/uris_of, SipStreamFramer.

Hand-written messages check each rule of the module docstring; hypothesis checks the
contract that only SipError escapes parse_sip and that nothing escapes the framer,
whatever the bytes and however they are cut. tshark comparisons on real captures are
in test_sip_corpus.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.errors import ParseError
from lc.common.sip import (
    COMPACT_FORMS,
    FRAMER_COUNTERS,
    MAX_HEADER_BYTES,
    SipError,
    SipMessage,
    SipStreamFramer,
    looks_like_sip,
    parse_sip,
    uris_of,
    users_of,
)

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)


def invite(body: bytes = SDP, *, extra: bytes = b"", length: int | None = None) -> bytes:
    """An INVITE (RFC 3665 style) with ``extra`` header lines and a body."""
    cl = len(body) if length is None else length
    return (
        b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n"
        b"Max-Forwards: 70\r\n"
        b"To: Bob <sip:bob@biloxi.example.com>\r\n"
        b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
        b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
        + extra
        + b"Content-Type: application/sdp\r\n"
        + b"Content-Length: %d\r\n\r\n" % cl
        + body
    )


def minimal(start: bytes, headers: bytes = b"", body: bytes = b"") -> bytes:
    return (
        start
        + b"\r\nCall-ID: c1@h\r\nCSeq: 1 INVITE\r\n"
        + headers
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bK4b43c2ff8.1\r\n"
    b"Via: SIP/2.0/UDP bigbox3.site3.atlanta.example.com;branch=z9hG4bK77ef4c2312983.1,"
    b" SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.4>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


# --------------------------------------------------------------------------- requests


def test_invite_fields() -> None:
    data = invite()
    m = parse_sip(data)
    assert m.is_request
    assert (m.method, m.status, m.reason) == ("INVITE", 0, "")
    assert m.request_uri == "sip:bob@biloxi.example.com"
    assert m.request_user == "bob"
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert (m.cseq_seq, m.cseq_method) == (314159, "INVITE")
    assert (m.from_uri, m.from_user, m.from_tag) == (
        "sip:alice@atlanta.example.com",
        "alice",
        "1928301774",
    )
    assert (m.to_uri, m.to_user, m.to_tag) == ("sip:bob@biloxi.example.com", "bob", "")
    assert m.contact_uri == "sip:alice@pc33.atlanta.example.com"
    assert m.content_type == "application/sdp"
    assert m.content_length == len(SDP)
    assert m.body == SDP
    assert not m.truncated
    assert m.defects == ()
    assert (m.pai_uris, m.pai_users, m.ppi_uris, m.ppi_users) == ((), (), (), ())
    assert [n for n, _ in m.headers] == [
        "via",
        "max-forwards",
        "to",
        "from",
        "call-id",
        "cseq",
        "contact",
        "content-type",
        "content-length",
    ]
    assert m.header("Max-Forwards") == "70"
    assert m.header("x-missing") is None


def test_response_fields() -> None:
    m = parse_sip(RESPONSE)
    assert not m.is_request
    assert (m.method, m.status, m.reason, m.request_uri, m.request_user) == (
        "",
        200,
        "OK",
        "",
        "",
    )
    assert m.to_tag == "a6c85cf"
    assert m.from_tag == "1928301774"
    assert m.content_length == 0
    assert m.body == b""
    # Header lines keep their values whole; commas are not split.
    assert m.header_all("via") == (
        "SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bK4b43c2ff8.1",
        "SIP/2.0/UDP bigbox3.site3.atlanta.example.com;branch=z9hG4bK77ef4c2312983.1,"
        " SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8",
    )
    assert m.header("VIA") == m.header_all("v")[0]


@pytest.mark.parametrize(
    ("start", "status", "reason"),
    [
        (b"SIP/2.0 180 Ringing", 180, "Ringing"),
        (b"SIP/2.0 100", 100, ""),
        (b"SIP/2.0 183 Session  Progress ", 183, "Session  Progress"),
        (b"sip/2.0 486 Busy Here", 486, "Busy Here"),
        (b"SIP/2.0 603 D\xc3\xa9clin\xc3\xa9", 603, "Décliné"),
    ],
)
def test_status_lines(start: bytes, status: int, reason: str) -> None:
    m = parse_sip(minimal(start))
    assert (m.status, m.reason, m.is_request) == (status, reason, False)


def test_method_is_upper_cased_and_extension_methods_are_tokens() -> None:
    assert parse_sip(minimal(b"invite sip:a@b SIP/2.0")).method == "INVITE"
    m = parse_sip(minimal(b"X-FOO.bar sip:a@b sip/2.0"))
    assert m.method == "X-FOO.BAR"
    assert parse_sip(minimal(b"INVITE  sip:a@b  SIP/2.0")).request_uri == "sip:a@b"


def test_cseq_method_is_upper_cased() -> None:
    data = minimal(b"ACK sip:a@b SIP/2.0").replace(b"CSeq: 1 INVITE", b"CSeq:  7   ack ")
    m = parse_sip(data)
    assert (m.cseq_seq, m.cseq_method) == (7, "ACK")


def test_bare_lf_and_mixed_line_ends() -> None:
    crlf = invite()
    head, body = crlf.split(b"\r\n\r\n", 1)
    lf = head.replace(b"\r\n", b"\n") + b"\n\n" + body
    m = parse_sip(lf)
    assert m.body == SDP
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.headers == parse_sip(crlf).headers
    # Some lines CRLF, some LF, the empty line LF.
    lines = head.split(b"\r\n")
    mixed = b"\r\n".join(lines[:4]) + b"\n" + b"\n".join(lines[4:]) + b"\n\n" + body
    assert parse_sip(mixed).headers == m.headers
    # A bare-LF empty line after CRLF headers.
    assert parse_sip(head + b"\r\n\n" + body).body == SDP


def test_folded_header_lines() -> None:
    extra = b"Subject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!\r\n"
    m = parse_sip(invite(extra=extra))
    assert m.header("subject") == "I know you're there, pick up the phone and talk to me!"
    folded_from = invite().replace(
        b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
        b'From: "Alice"\r\n <sip:alice@atlanta.example.com>\r\n ;tag=1928301774',
    )
    m = parse_sip(folded_from)
    assert m.header("from") == '"Alice" <sip:alice@atlanta.example.com> ;tag=1928301774'
    assert (m.from_user, m.from_tag) == ("alice", "1928301774")


@pytest.mark.parametrize(("short", "long"), sorted(COMPACT_FORMS.items()))
def test_compact_forms(short: str, long: str) -> None:
    value = "0" if short == "l" else f"value-of-{short}"
    data = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c1@h\r\nCSeq: 1 OPTIONS\r\n"
    data += f"{short}: {value}\r\n\r\n".encode()
    m = parse_sip(data)
    assert m.header_all(long)[-1] == value
    assert m.header_all(short) == m.header_all(long)
    assert m.header_all(long.upper()) == m.header_all(long)
    assert m.header_all(f" {short.upper()} ") == m.header_all(long)
    assert short not in [n for n, _ in m.headers]


def test_compact_message() -> None:
    data = (
        b"INVITE sip:97239287044@voip.example.net SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKnp1\r\n"
        b'f: "arik" <sip:816666@voip.example.net>;tag=6433ef9\r\n'
        b"t: <sip:97239287044@voip.example.net>\r\n"
        b"i: 105090259-446faf7a@192.0.2.2\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"c: application/sdp\r\n"
        b"m: <sip:816666@192.0.2.2>\r\n"
        b"l: %d\r\n\r\n" % len(SDP) + SDP
    )
    m = parse_sip(data)
    assert m.call_id == "105090259-446faf7a@192.0.2.2"
    assert (m.from_user, m.from_tag, m.to_user) == ("816666", "6433ef9", "97239287044")
    assert m.contact_uri == "sip:816666@192.0.2.2"
    assert (m.content_type, m.content_length, m.body) == ("application/sdp", len(SDP), SDP)
    assert m.header("via") == "SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKnp1"


def test_header_names_any_case_and_spacing() -> None:
    data = (
        b"BYE sip:a@b SIP/2.0\r\n"
        b"CALL-ID:c1@h\r\n"
        b"cseq :  2 BYE\r\n"
        b"fRoM\t: <sip:x@y>;TAG=t1\r\n"
        b"To:sip:z@y\r\n"
        b"\r\n"
    )
    m = parse_sip(data)
    assert (m.call_id, m.cseq_seq, m.from_user, m.from_tag, m.to_user) == (
        "c1@h",
        2,
        "x",
        "t1",
        "z",
    )
    assert m.content_length is None


def test_repeated_headers_first_wins() -> None:
    extra = b"Route: <sip:p1@example.com;lr>\r\nRoute: <sip:p2@example.com;lr>\r\n"
    extra += b"Call-ID: second@h\r\n"
    m = parse_sip(invite(extra=extra))
    assert m.header_all("route") == ("<sip:p1@example.com;lr>", "<sip:p2@example.com;lr>")
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.header_all("call-id")[1] == "second@h"


# --------------------------------------------------------------------------- addresses


def test_p_asserted_identity_lists_and_repeats() -> None:
    extra = (
        b'P-Asserted-Identity: "Cullen, Jennings" <sip:fluffy@cisco.example.com>,'
        b" <tel:+1-408-555-1234;phone-context=+1>\r\n"
        b"P-Asserted-Identity: sip:%2B4930123@example.com;user=phone\r\n"
        b"P-Preferred-Identity: <sips:alice@atlanta.example.com>\r\n"
    )
    m = parse_sip(invite(extra=extra))
    assert m.pai_uris == (
        "sip:fluffy@cisco.example.com",
        "tel:+1-408-555-1234;phone-context=+1",
        "sip:%2B4930123@example.com",
    )
    assert m.pai_users == ("fluffy", "+1-408-555-1234", "+4930123")
    assert (m.ppi_uris, m.ppi_users) == (("sips:alice@atlanta.example.com",), ("alice",))


@pytest.mark.parametrize(
    ("value", "uri", "user", "tag"),
    [
        ("<sip:alice@example.com>;tag=1", "sip:alice@example.com", "alice", "1"),
        ("sip:alice@example.com;tag=1", "sip:alice@example.com", "alice", "1"),
        ("sip:alice@example.com ; tag = 1 ", "sip:alice@example.com", "alice", "1"),
        ('"Bob" <sip:bob@x;user=phone>;tag=9;x=y', "sip:bob@x;user=phone", "bob", "9"),
        ("<sip:bob@x>;foo=1;tag=9", "sip:bob@x", "bob", "9"),
        ("Bob <sips:bob@x>", "sips:bob@x", "bob", ""),
        ('"B <o>, \\"b\\"" <sip:bob@x>;tag=2', "sip:bob@x", "bob", "2"),
        ('\\"arik\\" <sip:816666@voip>;tag=6433ef9', "sip:816666@voip", "816666", "6433ef9"),
        (
            "<sip:bob@[2001:db8::1]:5060;transport=tcp>",
            "sip:bob@[2001:db8::1]:5060;transport=tcp",
            "bob",
            "",
        ),
        ("<sip:[2001:db8::1]>;tag=3", "sip:[2001:db8::1]", "", "3"),
        ("<sip:alice:secret@example.com>", "sip:alice:secret@example.com", "alice", ""),
        ("<sip:+4930123;npdi;rn=+4930999@example.com;user=phone>", None, "+4930123", ""),
        ("<sip:alice%40home@example.com>", "sip:alice%40home@example.com", "alice@home", ""),
        ("<sip:%E2%82%AC@example.com>", None, "€", ""),
        ("<sip:%ZZ@example.com>", None, "%ZZ", ""),
        (
            "<tel:+1-201-555-0123;phone-context=x>;tag=4",
            "tel:+1-201-555-0123;phone-context=x",
            "+1-201-555-0123",
            "4",
        ),
        ("tel:+4930123;tag=5", "tel:+4930123", "+4930123", "5"),
        ("<sip:example.com>", "sip:example.com", "", ""),
        ("<urn:service:sos>", "urn:service:sos", "", ""),
        ("<SIP:Carol@Example.COM>", "SIP:Carol@Example.COM", "Carol", ""),
        ("<sip:bob@x", "sip:bob@x", "bob", ""),
        ("", "", "", ""),
    ],
)
def test_from_addresses(value: str, uri: str | None, user: str, tag: str) -> None:
    data = minimal(b"MESSAGE sip:a@b SIP/2.0", b"From: " + value.encode() + b"\r\n")
    m = parse_sip(data)
    if uri is not None:
        assert m.from_uri == uri
    assert (m.from_user, m.from_tag) == (user, tag)


def test_percent_decoding_keeps_raw_bytes() -> None:
    data = minimal(
        b"MESSAGE sip:a@b SIP/2.0",
        b"From: <sip:%41\xff%zz@x>;tag=1\r\nTo: <tel:%2B1\xfe>\r\n",
    )
    m = parse_sip(data)
    assert (m.from_user, m.to_user) == ("A\udcff%zz", "+1\udcfe")


def test_request_uri_users() -> None:
    assert parse_sip(minimal(b"INVITE tel:+15551234;ext=1 SIP/2.0")).request_user == "+15551234"
    assert parse_sip(minimal(b"INVITE sip:[2001:db8::2] SIP/2.0")).request_user == ""
    assert parse_sip(minimal(b"INVITE sip:%2B49@[::1]:5060 SIP/2.0")).request_user == "+49"
    assert parse_sip(minimal(b"REGISTER sip:registrar.example.com SIP/2.0")).request_user == ""


def test_contact_forms() -> None:
    base = b"REGISTER sip:r SIP/2.0"
    assert parse_sip(minimal(base, b"Contact: *\r\n")).contact_uri == "*"
    two = b'Contact: "A, B" <sip:a@h1>;expires=60, <sip:b@h2>\r\n'
    assert parse_sip(minimal(base, two)).contact_uri == "sip:a@h1"
    assert parse_sip(minimal(base, b"m: sip:c@h3;expires=0\r\n")).contact_uri == "sip:c@h3"
    assert parse_sip(minimal(base)).contact_uri == ""


def test_users_of_and_uris_of() -> None:
    extra = b"P-Asserted-Identity: <sip:alice@atlanta.example.com>, <tel:+4930123>\r\n"
    extra += b"P-Preferred-Identity: <sip:bob@biloxi.example.com>, <sip:example.com>\r\n"
    m = parse_sip(invite(extra=extra))
    assert users_of(m) == ("alice", "bob", "+4930123")
    assert uris_of(m) == (
        "sip:alice@atlanta.example.com",
        "sip:bob@biloxi.example.com",
        "tel:+4930123",
        "sip:example.com",
    )
    r = parse_sip(RESPONSE)
    assert users_of(r) == ("alice", "bob")
    assert "" not in uris_of(r)


# --------------------------------------------------------------------------- bodies


def test_content_type_is_media_type_only() -> None:
    m = parse_sip(invite().replace(b"application/sdp", b"Application/SDP ; charset=UTF-8"))
    assert m.content_type == "application/sdp"
    assert m.header("content-type") == "Application/SDP ; charset=UTF-8"
    assert parse_sip(RESPONSE).content_type == ""


def test_body_longer_than_content_length_is_cut() -> None:
    m = parse_sip(invite() + b"trailing junk")
    assert m.body == SDP
    assert m.defects == ("13 bytes after the body ignored",)
    # CRLF or NUL padding after the body is not a defect.
    assert parse_sip(invite() + b"\r\n\0").defects == ()


def test_body_without_content_length_takes_the_rest() -> None:
    data = invite().replace(b"Content-Length: %d\r\n" % len(SDP), b"")
    m = parse_sip(data)
    assert (m.content_length, m.body, m.truncated) == (None, SDP, False)


def test_truncated_body_is_kept_and_flagged() -> None:
    data = invite()[:-10]
    m = parse_sip(data)
    assert m.truncated
    assert m.body == SDP[:-10]
    assert m.content_length == len(SDP)
    assert parse_sip(invite(length=0)).body == b""


def test_no_empty_line_means_no_body() -> None:
    data = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 9 OPTIONS"
    m = parse_sip(data)
    assert (m.call_id, m.cseq_seq, m.body, m.content_length) == ("c", 9, b"", None)
    cut = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 9 OPTIONS\r\nContent-Length: 5\r\n"
    assert parse_sip(cut).truncated


def test_leading_newlines_are_ignored() -> None:
    assert parse_sip(b"\r\n\r\n" + RESPONSE).status == 200


def test_bad_lines_are_defects() -> None:
    extra = b"this line has no colon\r\nBad Name: x\r\n: empty name\r\n"
    m = parse_sip(invite(extra=extra))
    assert m.defects == ("3 header lines without a name and colon ignored",)
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    no_from = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
    assert parse_sip(no_from).defects == ("no From header", "no To header")


def test_non_utf8_header_bytes_survive() -> None:
    m = parse_sip(invite(extra=b"Subject: caf\xe9 \xff\r\n"))
    subject = m.header("subject")
    assert subject is not None
    assert subject.encode("utf-8", "surrogateescape") == b"caf\xe9 \xff"
    name = "Jürgen".encode()
    m = parse_sip(minimal(b"INVITE sip:a@b SIP/2.0", b'From: "' + name + b'" <sip:j@x>;tag=1\r\n'))
    assert m.header("from") == '"Jürgen" <sip:j@x>;tag=1'


def test_input_types() -> None:
    data = invite()
    assert parse_sip(bytearray(data)) == parse_sip(data)
    assert parse_sip(memoryview(data)) == parse_sip(data)
    assert parse_sip(data) != parse_sip(RESPONSE)
    assert "call_id='a84b4c76e66710@pc33.atlanta.example.com'" in repr(parse_sip(data))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"", "empty message: no start line"),
        (b"\r\n\r\n", "empty message: no start line"),
        (b"HELLO world\r\n\r\n", "not a SIP start line: b'HELLO world'"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a SIP start line: b'GET / HTTP/1.1'"),
        (b"INVITE sip:a@b SIP/3.0\r\n\r\n", "not a SIP start line: b'INVITE sip:a@b SIP/3.0'"),
        (
            b"INVITE sip:\xff@b SIP/2.0\r\n\r\n",
            "start line is not valid UTF-8 (byte 11): b'INVITE sip:\\xff@b SIP/2.0'",
        ),
        (b"IN<VITE sip:a@b SIP/2.0\r\n", "bad method in request line: b'IN<VITE sip:a@b SIP/2.0'"),
        (b"INVITE bob SIP/2.0\r\n", "Request-URI has no scheme: b'INVITE bob SIP/2.0'"),
        (b"SIP/2.0 2000 OK\r\n", "bad status line (want SIP/2.0 SP 3DIGIT): b'SIP/2.0 2000 OK'"),
        (b"SIP/2.0 abc OK\r\n", "bad status line (want SIP/2.0 SP 3DIGIT): b'SIP/2.0 abc OK'"),
        (b"SIP/2.0 700 Huh\r\n", "status code 700 out of range 100..699: b'SIP/2.0 700 Huh'"),
        (b"SIP/2.0 099 Huh\r\n", "status code 99 out of range 100..699: b'SIP/2.0 099 Huh'"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n", "missing mandatory header Call-ID"),
        (b"OPTIONS sip:a@b SIP/2.0\r\ni:\r\nCSeq: 1 OPTIONS\r\n\r\n", "empty Call-ID header"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\n\r\n", "missing mandatory header CSeq"),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: OPTIONS\r\n\r\n",
            "bad CSeq header 'OPTIONS': want '<number> <METHOD>'",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: -1 OPTIONS\r\n\r\n",
            "bad CSeq header '-1 OPTIONS': want '<number> <METHOD>'",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 OPTIONS x\r\n\r\n",
            "bad CSeq header '1 OPTIONS x': want '<number> <METHOD>'",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 4294967296 OPTIONS\r\n\r\n",
            "bad CSeq header '4294967296 OPTIONS': number over 2**32-1",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nl: 12a\r\n\r\n",
            "bad Content-Length header '12a'",
        ),
        (
            b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nl: -1\r\n\r\n",
            "bad Content-Length header '-1'",
        ),
    ],
)
def test_errors(data: bytes, text: str) -> None:
    with pytest.raises(SipError) as info:
        parse_sip(data)
    assert str(info.value) == text
    assert isinstance(info.value, ParseError)
    assert isinstance(info.value, ValueError)


def test_long_input_is_quoted_briefly() -> None:
    with pytest.raises(SipError) as info:
        parse_sip(b"X" * 500 + b"\r\n\r\n")
    assert str(info.value) == "not a SIP start line: " + repr(b"X" * 80) + "..."


def test_header_section_cap() -> None:
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    text = "header section too large: no empty line in the first 65536 bytes"
    for data in (invite(extra=filler * 70), b"OPTIONS sip:a@b SIP/2.0\r\n" + filler * 70):
        with pytest.raises(SipError) as info:
            parse_sip(data)
        assert str(info.value) == text
    # Just under the cap is fine.
    fits = invite(extra=b"X-Filler: " + b"a" * (MAX_HEADER_BYTES - len(invite()) - 100) + b"\r\n")
    assert parse_sip(fits).body == SDP


# --------------------------------------------------------------------------- looks_like_sip


@pytest.mark.parametrize(
    "data",
    [
        invite(),
        RESPONSE,
        b"OPTIONS sip:a@b SIP/2.0",
        b"SIP/2.0 100",
        b"SIP/2.0 180 Ringing\n",
        b"sip/2.0 200 OK\r\n",
        b"MESSAGE tel:+123 sip/2.0\r\n",
        b"X-CUSTOM sips:a@b SIP/2.0\r\n",
    ],
)
def test_looks_like_sip_yes(data: bytes) -> None:
    assert looks_like_sip(data)
    assert looks_like_sip(bytearray(data))
    assert looks_like_sip(memoryview(data))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x08\x00\x01" + bytes(160),  # RTP
        b"\r\n\r\n",  # keep-alive
        b"GET / HTTP/1.1\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"SIP/2.0 abc OK\r\n",
        b"SIP/2.0 700 Bad\r\n",
        b"SIP/2.0 2000 OK\r\n",
        b"INVITE sip:a@b SIP/2.0 extra\r\n",
        b"INVITE bob SIP/2.0\r\n",
        b"INVITE sip:a @b SIP/2.0\r\n",
        b"IN(VITE sip:a@b SIP/2.0\r\n",
        b"SIP/2.0",
        b" INVITE sip:a@b SIP/2.0\r\n",
        b"INVITE sip:" + b"a" * 5000 + b" SIP/2.0\r\n",
        b"INVITE sip:" + b"a" * 5000,
        b"A" * 40 + b" sip:a@b SIP/2.0\r\n",
    ],
)
def test_looks_like_sip_no(data: bytes) -> None:
    assert not looks_like_sip(data)
    assert not looks_like_sip(memoryview(data))


# --------------------------------------------------------------------------- framer


def stream_of(*msgs: bytes) -> bytes:
    return b"".join(msgs)


MSG_A = invite()
MSG_B = RESPONSE
MSG_C = minimal(b"BYE sip:alice@pc33.atlanta.example.com SIP/2.0", body=b"xyz")


def collect(framer: SipStreamFramer, chunks: list[bytes]) -> list[tuple[int, int, SipMessage]]:
    out = []
    for c in chunks:
        out += framer.feed(c)
    return out


def test_framer_counters_start_at_zero() -> None:
    f = SipStreamFramer()
    assert f.counters == dict.fromkeys(FRAMER_COUNTERS, 0)
    assert (f.buffered, f.offset) == (0, 0)
    assert f.feed(b"") == []
    with pytest.raises(ValueError, match="max_message_bytes must be at least 64, not 10"):
        SipStreamFramer(max_message_bytes=10)


def test_framer_two_messages_in_one_feed() -> None:
    f = SipStreamFramer()
    got = f.feed(MSG_A + MSG_B)
    assert [(s, e) for s, e, _ in got] == [(0, len(MSG_A)), (len(MSG_A), len(MSG_A) + len(MSG_B))]
    assert got[0][2] == parse_sip(MSG_A)
    assert got[1][2] == parse_sip(MSG_B)
    assert f.buffered == 0
    assert f.offset == len(MSG_A) + len(MSG_B)
    assert f.counters["messages"] == 2


def test_framer_split_at_every_position() -> None:
    data = MSG_A + MSG_B + MSG_C
    whole = SipStreamFramer().feed(data)
    assert len(whole) == 3
    for i in range(len(data) + 1):
        f = SipStreamFramer()
        got = collect(f, [data[:i], data[i:]])
        assert got == whole, f"split at {i}"
        assert f.buffered == 0


def test_framer_byte_by_byte() -> None:
    data = MSG_C + MSG_A + MSG_B
    f = SipStreamFramer()
    got = collect(f, [data[i : i + 1] for i in range(len(data))])
    assert got == SipStreamFramer().feed(data)
    assert f.counters == {**dict.fromkeys(FRAMER_COUNTERS, 0), "messages": 3}


def test_framer_header_search_resumes_where_it_stopped() -> None:
    """Feeding a header section in small pieces must not rescan it (h11's DoS note)."""
    f = SipStreamFramer()
    head = MSG_A.split(b"\r\n\r\n")[0]
    for i in range(0, len(head), 7):
        assert f.feed(head[i : i + 7]) == []
        assert f._scan >= f.buffered - 2  # white box: the search position moved on
    assert len(f.feed(b"\r\n\r\n" + SDP)) == 1


def test_framer_keepalives() -> None:
    f = SipStreamFramer()
    data = b"\r\n\r\n" + MSG_B + b"\r\n\r\n\r\n" + MSG_C + b"\r\n"
    got = f.feed(data)
    assert [(s, e) for s, e, _ in got] == [
        (4, 4 + len(MSG_B)),
        (4 + len(MSG_B) + 6, 4 + len(MSG_B) + 6 + len(MSG_C)),
    ]
    assert f.counters["keepalive_bytes"] == 12
    assert f.counters["resync"] == 0
    assert f.buffered == 0


def test_framer_resyncs_after_garbage() -> None:
    garbage = b"\x00\x01binary junk\r\nmore junk line\r\nPOST / HTTP/1.1\r\n"
    f = SipStreamFramer()
    got = f.feed(garbage + MSG_A)
    assert [(s, e) for s, e, _ in got] == [(len(garbage), len(garbage) + len(MSG_A))]
    assert f.counters["resync"] == 1
    assert f.counters["garbage_bytes"] == len(garbage)
    # The tail of a message whose start was missed (capture began mid-stream).
    f = SipStreamFramer()
    tail = MSG_A[100:]
    got = collect(f, [tail[:50], tail[50:], MSG_B])
    assert [m.status for _, _, m in got] == [200]
    assert got[0][0] == len(tail)
    assert f.counters["resync"] == 1
    # Empty lines inside garbage count as keep-alives (here: the end of the headers).
    assert f.counters["garbage_bytes"] == len(tail) - 2
    assert f.counters["keepalive_bytes"] == 2


def test_framer_drops_binary_garbage_without_newline_at_once() -> None:
    f = SipStreamFramer()
    assert f.feed(b"\x16\x03\x01\x02\x00") == []
    assert f.buffered == 0
    assert (f.counters["resync"], f.counters["garbage_bytes"]) == (1, 5)
    # The rest of that line is garbage too, whatever it looks like ...
    assert f.feed(b"INVI") == []
    assert (f.buffered, f.counters["garbage_bytes"]) == (0, 9)
    # ... but after its line end, a partial line that may become a start line is kept.
    assert f.feed(b"\r\nINVI") == []
    assert f.buffered == 4
    assert len(f.feed(MSG_A[4:])) == 1
    assert f.counters["resync"] == 1
    assert f.counters["garbage_bytes"] == 11


def test_framer_oversized_header_section() -> None:
    f = SipStreamFramer(max_message_bytes=1024)
    endless = b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X-Filler: " + b"a" * 2000 + b"\r\n"
    assert f.feed(endless) == []
    assert f.counters["oversized"] == 1
    assert f.buffered < 1024
    got = f.feed(b"X-More: b\r\n\r\n" + MSG_C)
    assert [m.method for _, _, m in got] == ["BYE"]
    assert got[0][1] == f.offset
    assert f.counters["oversized"] == 1


def test_framer_oversized_header_found_whole() -> None:
    f = SipStreamFramer(max_message_bytes=1024)
    big = minimal(b"OPTIONS sip:a@b SIP/2.0", b"X-Filler: " + b"a" * 2000 + b"\r\n")
    got = f.feed(big + MSG_C)
    assert [m.method for _, _, m in got] == ["BYE"]
    assert f.counters["oversized"] == 1


def test_framer_oversized_body_is_skipped_by_its_length() -> None:
    f = SipStreamFramer(max_message_bytes=1024)
    big = minimal(b"MESSAGE sip:a@b SIP/2.0", body=b"z" * 3000)
    # The body does not end with a line end, so only its length finds MSG_B.
    got = collect(f, [big[:500], big[500:2000], big[2000:] + MSG_B[:10], MSG_B[10:]])
    assert [(s, e, m.status) for s, e, m in got] == [(len(big), len(big) + len(MSG_B), 200)]
    assert f.counters["oversized"] == 1
    assert f.counters["oversized_bytes"] == len(big)
    assert (f.counters["resync"], f.counters["garbage_bytes"]) == (0, 0)


def test_framer_absurd_content_length_is_not_trusted() -> None:
    f = SipStreamFramer(max_message_bytes=1024)
    head = b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n"
    head += b"Content-Length: 999999999\r\n\r\n"
    got = f.feed(head + b"short body\r\n" + MSG_B)
    assert [m.status for _, _, m in got] == [200]
    assert f.counters["oversized"] == 1
    assert (f.counters["resync"], f.counters["garbage_bytes"]) == (1, 12)


def test_framer_missing_content_length_means_no_body() -> None:
    no_cl = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
    f = SipStreamFramer()
    got = f.feed(no_cl + MSG_B)
    assert [(s, e) for s, e, _ in got] == [
        (0, len(no_cl)),
        (len(no_cl), len(no_cl) + len(MSG_B)),
    ]
    assert got[0][2].body == b""
    assert f.counters["missing_content_length"] == 1


def test_framer_malformed_messages_are_counted_and_skipped() -> None:
    bad_cseq = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: x\r\nContent-Length: 0\r\n\r\n"
    bad_cl = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nl: x\r\n\r\n"
    f = SipStreamFramer()
    got = f.feed(bad_cseq + bad_cl + MSG_B)
    assert [m.status for _, _, m in got] == [200]
    assert got[0][0] == len(bad_cseq) + len(bad_cl)
    assert f.counters["malformed"] == 2
    assert f.counters["resync"] == 0


# --------------------------------------------------------------------------- fuzz

VALID = [MSG_A, MSG_B, MSG_C, invite(extra=b"P-Asserted-Identity: <tel:+1>, <sip:x@y>\r\n")]


def only_sip_error(data: bytes) -> None:
    try:
        m = parse_sip(data)
    except SipError:
        return
    assert isinstance(m, SipMessage)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes(data: bytes) -> None:
    only_sip_error(data)
    looks_like_sip(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_fuzz_truncated_and_appended(msg: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(msg)))
    tail = data.draw(st.binary(max_size=200))
    only_sip_error(msg[:cut])
    only_sip_error(msg[:cut] + tail)
    only_sip_error(msg + tail)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_fuzz_inserted_and_replaced(msg: bytes, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(msg)))
    junk = data.draw(st.binary(min_size=1, max_size=50))
    only_sip_error(msg[:at] + junk + msg[at:])
    only_sip_error(msg[:at] + junk + msg[at + len(junk) :])
    text = data.draw(
        st.text(alphabet=st.sampled_from(':;<>"\\,@% \t\r\nsiptel=[]ab0'), max_size=30)
    )
    only_sip_error(msg[:at] + text.encode() + msg[at:])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from([*VALID, b"\r\n\r\n", b"\r\n"]), min_size=1, max_size=6),
    st.lists(st.integers(1, 400), min_size=1, max_size=40),
)
def test_fuzz_framer_chunking_does_not_matter(parts: list[bytes], sizes: list[int]) -> None:
    data = b"".join(parts)
    whole_framer = SipStreamFramer()
    whole = whole_framer.feed(data)
    assert len(whole) == sum(p in VALID for p in parts)
    f = SipStreamFramer()
    chunks = []
    pos = 0
    i = 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        chunks.append(data[pos : pos + n])
        pos += n
        i += 1
    assert collect(f, chunks) == whole
    assert f.counters == whole_framer.counters
    assert f.buffered == 0


GARBAGE_LINE = st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"") + b"\r\n")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(VALID), GARBAGE_LINE), min_size=1, max_size=6),
    st.lists(st.integers(1, 300), min_size=1, max_size=40),
)
def test_fuzz_framer_resync_does_not_depend_on_chunking(
    parts: list[bytes], sizes: list[int]
) -> None:
    data = b"".join(parts)
    whole_framer = SipStreamFramer()
    whole = whole_framer.feed(data)
    f = SipStreamFramer()
    chunks = []
    pos = i = 0
    while pos < len(data):
        chunks.append(data[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    assert collect(f, chunks) == whole
    assert f.counters == whole_framer.counters
    # Every valid message after a garbage line is found again.
    assert len(whole) >= sum(p in VALID for p in parts[1:] if parts[0] in VALID)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.lists(st.integers(1, 300), max_size=20))
def test_fuzz_framer_garbage_never_raises(garbage: bytes, sizes: list[int]) -> None:
    f = SipStreamFramer(max_message_bytes=1024)
    pos = 0
    for n in [*sizes, len(garbage)]:
        f.feed(garbage[pos : pos + n])
        pos += n
    c = f.counters
    assert c["garbage_bytes"] + c["keepalive_bytes"] + f.buffered > 0
    assert f.buffered <= 1024 + 300 + len(garbage)
    # After the garbage and a line end, a valid message is still found.
    got = f.feed(b"\r\n" + MSG_B)
    assert got and got[-1][2] == parse_sip(MSG_B)
    assert got[-1][1] == f.offset


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_fuzz_framer_damaged_stream(msg: bytes, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(msg)))
    junk = data.draw(st.binary(max_size=60))
    f = SipStreamFramer(max_message_bytes=2048)
    f.feed(msg[:at] + junk + msg[at:])
    f.feed(msg)
    assert sum(f.counters.values()) > 0
