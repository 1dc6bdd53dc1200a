"""Tests for lc.common.sdp: parse_sdp, rtp_endpoints, codecs_of.

Hand-written bodies check each rule of the module docstring (RFC 8866 examples and
the offers real phones send); hypothesis checks that only SdpError escapes
parse_sdp. The corpus comparison with tshark is in test_sip_corpus.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lc.common.errors import ParseError
from lc.common.sdp import (
    STATIC_PAYLOAD_CODECS,
    MediaDesc,
    SdpError,
    SessionDesc,
    codecs_of,
    media_of,
    parse_sdp,
    rtp_endpoints,
)

# RFC 8866 section 5 example, with an rtcp attribute added to the audio.
RFC_EXAMPLE = (
    b"v=0\r\n"
    b"o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1\r\n"
    b"s=Call to John Smith\r\n"
    b"i=SDP Offer #1\r\n"
    b"u=http://www.jdoe.example.com/home.html\r\n"
    b"e=Jane Doe <jane@jdoe.example.com>\r\n"
    b"p=+1 617 555-6011\r\n"
    b"c=IN IP4 198.51.100.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0\r\n"
    b"a=rtcp:53020\r\n"
    b"m=audio 49180 RTP/AVP 0\r\n"
    b"m=video 51372 RTP/AVP 99\r\n"
    b"c=IN IP6 2001:DB8:0:0:0:0:0:1\r\n"
    b"a=rtpmap:99 h263-1998/90000\r\n"
)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(["v=0", "o=- 1 2 IN IP4 192.0.2.1", "s=-", *lines]) + "\r\n").encode()


def test_rfc_example() -> None:
    s = parse_sdp(RFC_EXAMPLE)
    assert isinstance(s, SessionDesc)
    assert (s.origin_username, s.session_id, s.session_version) == (
        "jdoe",
        "3724394400",
        "3724394405",
    )
    assert s.connection == "198.51.100.1"
    assert s.attributes == ()
    assert [(m.media, m.port, m.port_count, m.proto, m.formats) for m in s.media] == [
        ("audio", 49170, 1, "RTP/AVP", ("0",)),
        ("audio", 49180, 1, "RTP/AVP", ("0",)),
        ("video", 51372, 1, "RTP/AVP", ("99",)),
    ]
    a1, a2, v = s.media
    assert a1 == MediaDesc(
        media="audio",
        port=49170,
        port_count=1,
        proto="RTP/AVP",
        formats=("0",),
        connection="198.51.100.1",
        rtcp_port=53020,
        rtcp_address=None,
        codecs=("PCMU",),
        direction="sendrecv",
        attributes=(("rtcp", "53020"),),
    )
    assert (a2.rtcp_port, a2.connection) == (None, "198.51.100.1")
    assert v.connection == "2001:db8::1"  # media-level, normalised
    assert v.codecs == ("h263-1998",)
    assert rtp_endpoints(s) == [
        ("198.51.100.1", 49170, "rtp"),
        ("198.51.100.1", 53020, "rtcp"),
        ("198.51.100.1", 49180, "rtp"),
        ("198.51.100.1", 49181, "rtcp"),
        ("2001:db8::1", 51372, "rtp"),
        ("2001:db8::1", 51373, "rtcp"),
    ]
    assert codecs_of(s) == ("PCMU", "h263-1998")


def test_lf_line_ends_and_blank_lines_and_spaces() -> None:
    lf = RFC_EXAMPLE.replace(b"\r\n", b"\n")
    assert parse_sdp(lf) == parse_sdp(RFC_EXAMPLE)
    padded = b"\r\n\r\n" + RFC_EXAMPLE.replace(b"\r\nt=", b"\r\n\r\n  t=") + b"\r\n\r\n"
    assert parse_sdp(padded) == parse_sdp(RFC_EXAMPLE)
    assert parse_sdp(RFC_EXAMPLE.decode()) == parse_sdp(RFC_EXAMPLE)
    assert parse_sdp(memoryview(RFC_EXAMPLE)) == parse_sdp(RFC_EXAMPLE)


@pytest.mark.parametrize(
    ("line", "address"),
    [
        ("c=IN IP4 224.2.1.1/127", "224.2.1.1"),
        ("c=IN IP4 224.2.1.1/127/3", "224.2.1.1"),
        ("c=IN IP6 FF15::101/3", "ff15::101"),
        ("c=IN IP6 2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("c=IN IP6 fe80:0:0:0:21a:a0ff:fe07:32e0", "fe80::21a:a0ff:fe07:32e0"),
        ("c=IN IP4 media.example.com", "media.example.com"),
        ("c=IN IP4 010.1.1.1", "010.1.1.1"),  # not an address ipaddress accepts: kept
        ("c=IN  IP4   192.0.2.7 ", "192.0.2.7"),
    ],
)
def test_connection_addresses(line: str, address: str) -> None:
    s = parse_sdp(sdp(line, "m=audio 4000 RTP/AVP 0"))
    assert s.connection == address
    assert s.media[0].connection == address


def test_bad_or_missing_connection() -> None:
    s = parse_sdp(sdp("c=IN IP4", "m=audio 4000 RTP/AVP 0"))
    assert s.connection is None
    assert s.media[0].connection is None
    assert rtp_endpoints(s) == []
    s = parse_sdp(sdp("m=audio 4000 RTP/AVP 0", "c=IN IP4 192.0.2.9", "m=audio 4002 RTP/AVP 8"))
    assert [m.connection for m in s.media] == ["192.0.2.9", None]
    assert rtp_endpoints(s) == [("192.0.2.9", 4000, "rtp"), ("192.0.2.9", 4001, "rtcp")]


def test_first_connection_of_a_level_counts() -> None:
    s = parse_sdp(
        sdp(
            "c=IN IP4 192.0.2.1",
            "c=IN IP4 192.0.2.2",
            "m=audio 4000 RTP/AVP 0",
            "c=IN IP4 233.252.0.1/127",
            "c=IN IP4 233.252.0.2/127",
        )
    )
    assert (s.connection, s.media[0].connection) == ("192.0.2.1", "233.252.0.1")


def test_port_count() -> None:
    s = parse_sdp(sdp("c=IN IP4 192.0.2.1", "m=video 49170/2 RTP/AVP 31"))
    assert (s.media[0].port, s.media[0].port_count) == (49170, 2)
    assert rtp_endpoints(s) == [
        ("192.0.2.1", 49170, "rtp"),
        ("192.0.2.1", 49171, "rtcp"),
        ("192.0.2.1", 49172, "rtp"),
        ("192.0.2.1", 49173, "rtcp"),
    ]
    # A count that would run past 65535 is clamped; a bad one is 1.
    assert parse_sdp(sdp("m=audio 65530/100 RTP/AVP 0")).media[0].port_count == 3
    assert parse_sdp(sdp("m=audio 4000/0 RTP/AVP 0")).media[0].port_count == 1
    assert parse_sdp(sdp("m=audio 4000/x RTP/AVP 0")).media[0].port_count == 1


@pytest.mark.parametrize("port", ["abc", "-1", "65536", "99999999999999999999", "", "4000x"])
def test_bad_port_reads_as_zero(port: str) -> None:
    s = parse_sdp(sdp("c=IN IP4 192.0.2.1", f"m=audio {port} RTP/AVP 0", "a=rtpmap:0 PCMU/8000"))
    assert s.media[0].port == 0
    assert s.media[0].attributes == (("rtpmap", "0 PCMU/8000"),)  # kept on its own media
    assert rtp_endpoints(s) == []


def test_short_and_odd_m_lines() -> None:
    s = parse_sdp(sdp("m=audio", "m=", "m=audio 4000"))
    assert [(m.media, m.port, m.proto, m.formats) for m in s.media] == [
        ("audio", 0, "", ()),
        ("", 0, "", ()),
        ("audio", 4000, "", ()),
    ]


def test_rtcp_attribute_with_address() -> None:
    s = parse_sdp(
        sdp(
            "c=IN IP4 192.0.2.1",
            "m=audio 49170 RTP/AVP 0",
            "a=rtcp:53020 IN IP4 126.16.64.4",
            "m=audio 49180 RTP/AVP 0",
            "a=rtcp:53022 IN IP6 2001:db8:0::9",
            "m=audio 49190 RTP/AVP 0",
            "a=rtcp:bad",
        )
    )
    a, b, c = s.media
    assert (a.rtcp_port, a.rtcp_address) == (53020, "126.16.64.4")
    assert (b.rtcp_port, b.rtcp_address) == (53022, "2001:db8::9")
    assert (c.rtcp_port, c.rtcp_address) == (None, None)
    assert rtp_endpoints(s) == [
        ("192.0.2.1", 49170, "rtp"),
        ("126.16.64.4", 53020, "rtcp"),
        ("192.0.2.1", 49180, "rtp"),
        ("2001:db8::9", 53022, "rtcp"),
        ("192.0.2.1", 49190, "rtp"),
        ("192.0.2.1", 49191, "rtcp"),
    ]


def test_rtcp_mux_means_one_endpoint() -> None:
    s = parse_sdp(
        sdp(
            "c=IN IP4 192.0.2.1",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
        )
    )
    assert rtp_endpoints(s) == [("192.0.2.1", 9, "rtp")]
    assert s.media[0].codecs == ("opus", "PCMU")


@pytest.mark.parametrize(
    ("proto", "rtp"),
    [
        ("RTP/AVP", True),
        ("RTP/SAVP", True),
        ("RTP/AVPF", True),
        ("RTP/SAVPF", True),
        ("UDP/TLS/RTP/SAVPF", True),
        ("rtp/avp", True),
        ("udptl", False),
        ("TCP/BFCP", False),
        ("UDP/BFCP", False),
        ("TCP/MSRP", False),
    ],
)
def test_only_rtp_media_give_endpoints(proto: str, rtp: bool) -> None:
    s = parse_sdp(sdp("c=IN IP4 192.0.2.1", f"m=audio 5000 {proto} 0"))
    assert bool(rtp_endpoints(s)) is rtp
    assert s.media[0].codecs == (("PCMU",) if rtp else ())


def test_disabled_and_held_media_give_no_endpoints() -> None:
    s = parse_sdp(
        sdp(
            "c=IN IP4 192.0.2.1",
            "m=audio 0 RTP/AVP 0",
            "m=video 5000 RTP/AVP 31",
            "c=IN IP4 0.0.0.0",
            "m=video 5002 RTP/AVP 31",
            "c=IN IP6 ::",
        )
    )
    assert rtp_endpoints(s) == []


def test_codecs() -> None:
    s = parse_sdp(
        sdp(
            "c=IN IP4 192.0.2.1",
            "m=audio 4000 RTP/AVP 0 8 18 96 97 101 13 3",
            "a=rtpmap:96 opus/48000/2",
            "a=rtpmap:101 telephone-event/8000",
            "a=rtpmap:8 pcma/8000",
            "a=rtpmap:102 telephone-event/16000",  # not in the format list: ignored
            "a=rtpmap:bad",
            "a=rtpmap:",
            "m=audio 4002 RTP/AVP 0 9 4",
            "m=application 5000 TCP/BFCP *",
            "a=rtpmap:1 bfcp-ish/1",
            "m=image 6000 udptl t38",
        )
    )
    a, b, app, image = s.media
    # rtpmap wins over the static table; 97 has no rtpmap: no name.
    assert a.codecs == ("PCMU", "pcma", "G729", "opus", "telephone-event", "CN", "GSM")
    assert b.codecs == ("PCMU", "G722", "G723")
    assert app.codecs == ("bfcp-ish",)
    assert image.codecs == ()
    assert codecs_of(s) == (
        "PCMU",
        "pcma",
        "G729",
        "opus",
        "telephone-event",
        "CN",
        "GSM",
        "G722",
        "G723",
        "bfcp-ish",
    )


def test_duplicate_codec_names_are_dropped() -> None:
    s = parse_sdp(
        sdp(
            "m=audio 4000 RTP/AVP 101 102 0",
            "a=rtpmap:101 telephone-event/8000",
            "a=rtpmap:102 telephone-event/16000",
            "a=rtpmap:0 PCMU/8000",
        )
    )
    assert s.media[0].codecs == ("telephone-event", "PCMU")


def test_static_payload_table() -> None:
    assert {k: STATIC_PAYLOAD_CODECS[k] for k in (0, 3, 4, 8, 9, 13, 18, 26, 31, 32, 33, 34)} == {
        0: "PCMU",
        3: "GSM",
        4: "G723",
        8: "PCMA",
        9: "G722",
        13: "CN",
        18: "G729",
        26: "JPEG",
        31: "H261",
        32: "MPV",
        33: "MP2T",
        34: "H263",
    }
    assert all(0 <= k < 35 for k in STATIC_PAYLOAD_CODECS)
    assert 96 not in STATIC_PAYLOAD_CODECS


def test_directions() -> None:
    s = parse_sdp(
        sdp(
            "c=IN IP4 192.0.2.1",
            "a=sendonly",
            "m=audio 4000 RTP/AVP 0",
            "m=audio 4002 RTP/AVP 0",
            "a=RecvOnly",
            "m=audio 4004 RTP/AVP 0",
            "a=inactive",
            "a=sendrecv",
        )
    )
    assert [m.direction for m in s.media] == ["sendonly", "recvonly", "inactive"]
    assert s.attributes == (("sendonly", ""),)
    assert parse_sdp(sdp("m=audio 4000 RTP/AVP 0")).media[0].direction == "sendrecv"
    assert parse_sdp(sdp("a=SendRecv", "m=audio 1 RTP/AVP 0")).media[0].direction == "sendrecv"


def test_attributes_keep_order_and_values() -> None:
    s = parse_sdp(
        sdp(
            "a=group:BUNDLE 0 1",
            "a=ice-ufrag:F7gI",
            "m=audio 9 RTP/SAVPF 0",
            "a=fmtp:101 0-15",
            "a=candidate:1 1 UDP 2130706431 192.0.2.3 8998 typ host",
            "a=ptime:20",
            "a=weird",
        )
    )
    assert s.attributes == (("group", "BUNDLE 0 1"), ("ice-ufrag", "F7gI"))
    assert s.media[0].attributes == (
        ("fmtp", "101 0-15"),
        ("candidate", "1 1 UDP 2130706431 192.0.2.3 8998 typ host"),
        ("ptime", "20"),
        ("weird", ""),
    )


def test_origin() -> None:
    assert parse_sdp(b"v=0\r\no=- 1\r\n").origin_username == "-"
    s = parse_sdp(b"v=0\r\no=- 1\r\n")
    assert (s.session_id, s.session_version) == ("1", "")
    s = parse_sdp(b"v=0\r\no=x 123456789012345678901234567890 2 IN IP4 h\r\n")
    assert s.session_id == "123456789012345678901234567890"
    assert parse_sdp(b"v=0\r\n").origin_username == ""
    # An o= line inside a media section is not the session's.
    assert parse_sdp(sdp("m=audio 1 RTP/AVP 0", "o=late 9 9 IN IP4 h")).origin_username == "-"


def test_unknown_and_broken_lines_are_skipped() -> None:
    s = parse_sdp(
        sdp(
            "t=0 0",
            "b=AS:64",
            "z=2882844526 -1h 2898848070 0",
            "k=prompt",
            "x-vendor thing",
            "=",
            "q",
            "c=IN IP4 192.0.2.1",
            "m=audio 4000 RTP/AVP 0",
            "y=unknown letter",
        )
    )
    assert (s.connection, len(s.media)) == ("192.0.2.1", 1)


def test_non_utf8_bytes_are_kept() -> None:
    s = parse_sdp(b"v=0\r\ns=\xff\xfe\r\na=x:\xe9\r\n")
    assert s.attributes == (("x", "\udce9"),)


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"", "not SDP: empty body"),
        (b"\r\n \r\n", "not SDP: empty body"),
        (
            b"o=- 1 1 IN IP4 h\r\nv=0\r\n",
            "not SDP: the first line must be v=, not 'o=- 1 1 IN IP4 h'",
        ),
        (b"hello", "not SDP: the first line must be v=, not 'hello'"),
        (b"x" * 200, "not SDP: the first line must be v=, not '" + "x" * 80 + "...'"),
        (b"<xml/>\r\nv=0", "not SDP: the first line must be v=, not '<xml/>'"),
    ],
)
def test_errors(body: bytes, text: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(body)
    assert str(info.value) == text
    assert isinstance(info.value, ParseError)


# --------------------------------------------------------------------------- fuzz


def only_sdp_error(body: bytes) -> None:
    try:
        s = parse_sdp(body)
    except SdpError:
        return
    assert isinstance(s, SessionDesc)
    for addr, port, kind in rtp_endpoints(s):
        assert isinstance(addr, str) and 0 < port <= 0xFFFF and kind in ("rtp", "rtcp")
    codecs_of(s)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1000))
def test_fuzz_random_bytes(body: bytes) -> None:
    only_sdp_error(body)
    only_sdp_error(b"v=0\r\n" + body)


SDP_LINE = st.builds(
    lambda k, v: f"{k}={v}",
    st.sampled_from("vocmatbsk"),
    st.text(alphabet=st.sampled_from("0123456789 /:.INPaudiovRTAVP-+xfe"), max_size=40),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(SDP_LINE, max_size=20), st.sampled_from(["\r\n", "\n"]))
def test_fuzz_sdp_shaped_lines(lines: list[str], eol: str) -> None:
    only_sdp_error(("v=0" + eol + eol.join(lines)).encode())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_truncated_and_damaged(data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(RFC_EXAMPLE)))
    junk = data.draw(st.binary(max_size=80))
    only_sdp_error(RFC_EXAMPLE[:cut])
    only_sdp_error(RFC_EXAMPLE[:cut] + junk + RFC_EXAMPLE[cut:])


# -- media_of: the hunter's shortcut, the same answers as the full parse --------------------


def same_media(body: bytes) -> None:
    try:
        want = (codecs_of(parse_sdp(body)), rtp_endpoints(parse_sdp(body)))
    except SdpError as e:
        with pytest.raises(SdpError) as got:
            media_of(body)
        assert str(got.value) == str(e)
        return
    assert media_of(body) == want


MEDIA_LINE = st.one_of(
    SDP_LINE,
    st.builds(
        lambda pt, enc: f"a=rtpmap:{pt} {enc}",
        st.sampled_from(["0", "8", "9", "18", "96", "101", "abc", "", "1000"]),
        st.sampled_from(["PCMU/8000", "opus/48000/2", "telephone-event/8000", " x ", "", "/"]),
    ),
    st.builds(
        lambda port, rest: f"a=rtcp:{port}{rest}",
        st.sampled_from(["", "53020", "0", "70000", "x", " 9"]),
        st.sampled_from(["", " IN IP4 192.0.2.9", " IN IP6 2001:DB8::9", " IN"]),
    ),
    st.sampled_from(["a=rtcp-mux", "a=RTCP-MUX ", "a=sendonly", "a=inactive", "a=rtcp-mux:x"]),
    st.builds(
        lambda m, port, proto, fmts: f"m={m} {port} {proto} {fmts}",
        st.sampled_from(["audio", "video", "application"]),
        st.sampled_from(["49170", "0", "49170/2", "65534/3", "x", "65535"]),
        st.sampled_from(["RTP/AVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF", "udp", "TCP/MSRP"]),
        st.sampled_from(["0", "8 101", "96 97", "", "*", "3 18 9"]),
    ),
    st.sampled_from(
        [
            "c=IN IP4 198.51.100.1",
            "c=IN IP6 2001:DB8::1",
            "c=IN IP4 0.0.0.0",
            "c=IN",
            "c=IN IP4 pbx.example",
            "c=IN IP4 224.2.1.1/127/3",
        ]
    ),
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(MEDIA_LINE, max_size=25), st.sampled_from(["\r\n", "\n"]))
def test_media_of_is_parse_sdp_codecs_and_endpoints(lines: list[str], eol: str) -> None:
    same_media(("v=0" + eol + eol.join(lines)).encode())
    same_media(eol.join(lines).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_media_of_random_bytes(body: bytes) -> None:
    same_media(body)
    same_media(b"v=0\r\n" + body)


def test_media_of_known_bodies() -> None:
    for body in (RFC_EXAMPLE, RFC_EXAMPLE.replace(b"\r\n", b"\n"), b"", b"\r\n", b"x=1"):
        same_media(body)
