"""lc.common.tls: record layer, handshake reassembly, hellos, the encrypted cut-off, bounds.

Real ClientHellos come from OpenSSL through Python's ``ssl`` module (a memory BIO, no
socket); the other records are built here field by field. The fuzz tests hold the
parser to its contract: whatever the bytes and however they are split, ``feed``
returns events, returns ``[]`` (need more), or raises ``TlsParseError``; nothing else.
"""

from __future__ import annotations

import itertools
import random
import ssl
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.errors import ParseError, ValidationError
from lc.common.tls import (
    HRR_RANDOM,
    MAX_RECORD_LENGTH,
    Alert,
    ClientHello,
    HandshakeMessage,
    ServerHello,
    TlsParseError,
    TlsStream,
    is_grease,
    looks_like_tls,
    parse_client_hello,
    parse_server_hello,
)

# --- builders ---------------------------------------------------------------------------


def u16s(values, lenbytes: int = 2) -> bytes:
    body = b"".join(v.to_bytes(2, "big") for v in values)
    return len(body).to_bytes(lenbytes, "big") + body


def ext(etype: int, data: bytes) -> bytes:
    return struct.pack(">HH", etype, len(data)) + data


def sni(name: bytes) -> bytes:
    entry = b"\x00" + len(name).to_bytes(2, "big") + name
    return ext(0, len(entry).to_bytes(2, "big") + entry)


def alpn(*names: bytes) -> bytes:
    body = b"".join(bytes((len(n),)) + n for n in names)
    return ext(16, len(body).to_bytes(2, "big") + body)


def versions(*vs: int) -> bytes:
    return ext(43, u16s(vs, 1))


def client_hello_body(ciphers=(0x1301, 0x1302), exts=(), version=0x0303) -> bytes:
    e = b"".join(exts)
    return (
        version.to_bytes(2, "big")
        + bytes(range(32))
        + b"\x20"
        + bytes(32)
        + u16s(ciphers)
        + b"\x01\x00"
        + len(e).to_bytes(2, "big")
        + e
    )


def server_hello_body(cipher=0x1301, exts=(), version=0x0303, rnd=bytes(32)) -> bytes:
    e = b"".join(exts)
    return (
        version.to_bytes(2, "big")
        + rnd
        + b"\x00"
        + cipher.to_bytes(2, "big")
        + b"\x00"
        + len(e).to_bytes(2, "big")
        + e
    )


def hs(mtype: int, body: bytes) -> bytes:
    return bytes((mtype,)) + len(body).to_bytes(3, "big") + body


def record(ctype: int, payload: bytes, version: int = 0x0303) -> bytes:
    return bytes((ctype,)) + version.to_bytes(2, "big") + len(payload).to_bytes(2, "big") + payload


CCS = record(20, b"\x01")
TLS13_CH = hs(1, client_hello_body(exts=[sni(b"a.example"), versions(0x0304, 0x0303)]))
TLS12_CH = hs(1, client_hello_body(ciphers=(0xC02F,), exts=[sni(b"b.example")]))


def openssl_client_hello(
    server_name: str | None = "test.example", protocols: list[str] | None = None
) -> bytes:
    """The first flight of a real OpenSSL client: one or more TLS records."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if protocols:
        ctx.set_alpn_protocols(protocols)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def feed_all(stream: TlsStream, pieces) -> list:
    out = []
    for p in pieces:
        out += stream.feed(p)
    return out


# --- hellos -----------------------------------------------------------------------------


def test_openssl_client_hello_is_parsed_field_by_field() -> None:
    data = openssl_client_hello("host.example", ["h2", "http/1.1"])
    assert looks_like_tls(data)
    (ch,) = TlsStream().feed(data)
    assert isinstance(ch, ClientHello)
    assert ch.legacy_version == 0x0303
    assert ch.server_name == "host.example"
    assert ch.alpn == (b"h2", b"http/1.1")
    assert 0x0304 in ch.supported_versions and ch.version == 0x0304
    assert ch.signature_algorithms and ch.supported_groups and ch.ciphers
    # The extensions, walked independently over the raw body, in wire order.
    body = ch.raw
    off = 2 + 32
    off += 1 + body[off]
    off += 2 + int.from_bytes(body[off : off + 2], "big")
    off += 1 + body[off]
    end = off + 2 + int.from_bytes(body[off : off + 2], "big")
    off += 2
    walked = []
    while off < end:
        t, n = struct.unpack_from(">HH", body, off)
        walked.append((t, body[off + 4 : off + 4 + n]))
        off += 4 + n
    assert list(ch.extensions) == walked
    assert ch.extension_types == tuple(t for t, _ in walked)


def test_openssl_client_hello_without_sni_or_alpn() -> None:
    (ch,) = TlsStream().feed(openssl_client_hello(None))
    assert ch.server_name is None and ch.alpn == ()
    assert 0 not in ch.extension_types and 16 not in ch.extension_types


def test_grease_values_are_recognised_and_kept() -> None:
    grease = [0x0A0A + 0x1010 * i for i in range(16)]
    assert all(is_grease(v) for v in grease)
    assert not any(is_grease(v) for v in (0x0A1A, 0x1A0A, 0x0303, 0x0B0B, 0xFAFB, 0))
    body = client_hello_body(
        ciphers=(0x2A2A, 0x1301), exts=[ext(0x3A3A, b""), versions(0x4A4A, 0x0304)]
    )
    ch = parse_client_hello(body)
    assert ch.ciphers == (0x2A2A, 0x1301)
    assert ch.extension_types == (0x3A3A, 43)
    assert ch.supported_versions == (0x4A4A, 0x0304) and ch.version == 0x0304


def test_server_hello_fields_and_hrr() -> None:
    sh = parse_server_hello(
        server_hello_body(0x1302, [ext(43, b"\x03\x04"), alpn(b"h2"), ext(51, b"\x00\x1d")])
    )
    assert (sh.cipher, sh.selected_version, sh.version, sh.alpn) == (0x1302, 0x0304, 0x0304, b"h2")
    assert sh.extension_types == (43, 16, 51) and not sh.is_hrr
    hrr = parse_server_hello(server_hello_body(0x1301, [ext(43, b"\x03\x04")], rnd=HRR_RANDOM))
    assert hrr.is_hrr


def test_draft_tls13_server_hello_has_no_session_id() -> None:
    body = b"\x7f\x12" + bytes(32) + b"\x13\x01" + (4).to_bytes(2, "big") + ext(40, b"")
    sh = parse_server_hello(body)
    assert (sh.legacy_version, sh.cipher, sh.extension_types, sh.session_id) == (
        0x7F12,
        0x1301,
        (40,),
        b"",
    )


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"\x03\x03" + bytes(10), "too short"),
        (client_hello_body()[:-2] + b"\x00\x05", "extensions length"),
        (client_hello_body(exts=[ext(43, b"\x04\x03\x04")]), "supported_versions"),
        (client_hello_body(exts=[ext(10, b"\x00\x03\x00\x1d\x00")]), "supported_groups"),
        (client_hello_body(exts=[ext(16, b"\x00\x03\x05h2")]), "ALPN"),
        (client_hello_body(exts=[ext(0, b"\x00\x05\x00\x00\x09ab")]), "server_name"),
        (client_hello_body()[:34] + b"\x21" + bytes(40), "session id"),
    ],
)
def test_malformed_client_hello_gives_the_parsers_error(body: bytes, words: str) -> None:
    with pytest.raises(TlsParseError, match=words) as info:
        parse_client_hello(body)
    assert isinstance(info.value, ParseError) and isinstance(info.value, ValueError)


# --- framing ------------------------------------------------------------------------------


def test_client_hello_split_at_every_offset() -> None:
    data = openssl_client_hello("split.example", ["h2"])
    whole = TlsStream().feed(data)
    for i in range(1, len(data)):
        s = TlsStream()
        assert s.feed(data[:i]) == []
        assert s.need_more
        assert s.feed(data[i:]) == whole
        assert not s.need_more


def test_client_hello_byte_by_byte() -> None:
    data = openssl_client_hello("bytes.example", ["http/1.1"])
    s = TlsStream()
    out = feed_all(s, (data[i : i + 1] for i in range(len(data))))
    assert out == TlsStream().feed(data)
    assert out[0].server_name == "bytes.example"


def test_hello_split_across_records() -> None:
    msg = TLS13_CH
    data = record(22, msg[:3], 0x0301) + record(22, msg[3:50]) + record(22, msg[50:])
    (ch,) = TlsStream().feed(data)
    assert ch.server_name == "a.example"


def test_several_messages_in_one_record() -> None:
    sh = hs(2, server_hello_body(0xC02F, [ext(0xFF01, b"\x00")]))
    cert = hs(11, bytes(300))
    data = record(22, sh + cert + hs(12, bytes(40)) + hs(14, b""))
    out = TlsStream().feed(data)
    assert [type(e) for e in out] == [
        ServerHello,
        HandshakeMessage,
        HandshakeMessage,
        HandshakeMessage,
    ]
    assert out[0].cipher == 0xC02F
    assert out[1:] == [HandshakeMessage(11, 300), HandshakeMessage(12, 40), HandshakeMessage(14, 0)]


def test_skipped_bodies_are_not_buffered() -> None:
    cert = hs(11, bytes(15000))
    data = record(22, hs(2, server_hello_body(0xC02F)) + cert)
    s = TlsStream()
    seen = 0
    for i in range(0, len(data), 1000):
        seen += len(s.feed(data[i : i + 1000]))
        assert s.buffered <= 200  # the hello's body at most, never the certificate
    assert seen == 2


def test_alerts_are_reported() -> None:
    out = TlsStream().feed(record(21, b"\x02\x28\x01\x00", 0x0301))
    assert out == [Alert(2, 40), Alert(1, 0)]


# --- when parsing stops ---------------------------------------------------------------------


def test_tls12_change_cipher_spec_stops_parsing() -> None:
    s = TlsStream()
    finished = record(22, bytes(range(40)))  # an encrypted Finished: type byte 0
    out = s.feed(record(22, TLS12_CH) + record(22, hs(16, bytes(66))) + CCS + finished)
    assert [type(e) for e in out] == [ClientHello, HandshakeMessage]
    assert s.encrypted and not s.need_more
    assert s.feed(b"\xff" * 100) == []
    assert s.ignored_bytes == len(finished) + 100


def test_tls13_server_is_encrypted_after_its_server_hello() -> None:
    s = TlsStream()
    sh = hs(2, server_hello_body(0x1301, [ext(43, b"\x03\x04")]))
    out = s.feed(record(22, sh) + CCS + record(23, bytes(50)))
    assert len(out) == 1 and s.encrypted


def test_application_data_stops_parsing() -> None:
    s = TlsStream()
    assert s.feed(record(22, TLS13_CH) + CCS) != []
    assert not s.encrypted  # a TLS 1.3 client's CCS is only for middleboxes
    assert s.feed(record(23, bytes(30)) + b"garbage that is never read") == []
    assert s.encrypted


def test_hello_retry_request_flow_both_directions() -> None:
    hrr = hs(2, server_hello_body(0x1301, [ext(43, b"\x03\x04")], rnd=HRR_RANDOM))
    sh = hs(2, server_hello_body(0x1301, [ext(43, b"\x03\x04")]))
    server = TlsStream()
    out = server.feed(record(22, hrr) + CCS + record(22, sh) + record(23, bytes(20)))
    assert [e.is_hrr for e in out] == [True, False] and server.encrypted
    client = TlsStream()
    out = client.feed(record(22, TLS13_CH) + CCS + record(22, TLS13_CH) + record(23, bytes(9)))
    assert len(out) == 2 and all(isinstance(e, ClientHello) for e in out)


def test_client_offering_13_that_gets_12_stops_quietly_after_its_ccs() -> None:
    s = TlsStream()
    rng = random.Random(7)
    for _ in range(200):  # encrypted Finished records with random first bytes
        s = TlsStream()
        enc = record(22, bytes(rng.randrange(256) for _ in range(40)))
        out = s.feed(record(22, TLS13_CH) + record(22, hs(16, bytes(33))) + CCS + enc)
        assert len(out) == 2 and s.encrypted


# --- errors and bounds ----------------------------------------------------------------------


def test_sslv2_client_hello_is_refused() -> None:
    v2 = b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + bytes(37)
    s = TlsStream()
    with pytest.raises(TlsParseError, match="SSLv2") as info:
        s.feed(v2)
    assert info.value.reason == "sslv2" and s.failed and s.error is info.value
    assert s.feed(b"\x16\x03\x01") == []  # failed streams ignore the rest


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", "not_tls"),
        (b"\x16\x02\x01\x00\x10", "not_tls"),
        (b"\x16\x03\x09\x00\x10", "not_tls"),
        (b"\x19\x03\x03\x00\x01", "not_tls"),
        (b"\x16\x03\x03" + (MAX_RECORD_LENGTH + 1).to_bytes(2, "big"), "too_big"),
        (record(22, b"\x63\x00\x00\x00"), "handshake"),
        (record(20, b"\x02"), "record"),
        (record(21, b"\x02"), "record"),
        (record(22, TLS13_CH[:10]) + record(21, b"\x02\x28"), "handshake"),
    ],
)
def test_garbage_gives_the_parsers_error(data: bytes, reason: str) -> None:
    with pytest.raises(TlsParseError) as info:
        TlsStream().feed(data)
    assert info.value.reason == reason


def test_a_hello_over_the_bound_is_refused_before_it_is_buffered() -> None:
    s = TlsStream(max_hello_bytes=1000)
    big = hs(1, client_hello_body(exts=[ext(21, bytes(2000))]))
    with pytest.raises(TlsParseError, match="max 1000") as info:
        s.feed(record(22, big[:16000]))
    assert info.value.reason == "too_big" and s.buffered == 0


def test_buffer_stays_within_its_bound() -> None:
    s = TlsStream(max_hello_bytes=5000)
    data = record(22, hs(1, client_hello_body(exts=[ext(21, bytes(4000))])))
    out = []
    for i in range(0, len(data), 7):
        out += s.feed(data[i : i + 7])
        assert s.buffered <= 5000 + 9
    assert len(out) == 1 and s.buffered == 0


@pytest.mark.parametrize("bad", [0, 37, 1 << 24, "10", True])
def test_bad_limit_is_refused(bad) -> None:
    with pytest.raises(ValidationError, match="max_hello_bytes"):
        TlsStream(max_hello_bytes=bad)


# --- fuzz ---------------------------------------------------------------------------------


def _contract(stream: TlsStream, pieces) -> None:
    """Feeding gives events or [] until, at most once, TlsParseError."""
    for p in pieces:
        try:
            for ev in stream.feed(p):
                assert isinstance(ev, ClientHello | ServerHello | HandshakeMessage | Alert)
        except TlsParseError:
            assert stream.failed
            return


def test_real_hello_cut_at_every_offset_with_random_tails() -> None:
    data = openssl_client_hello("fuzz.example", ["h2", "http/1.1"])
    rng = random.Random(12)
    for i in range(len(data)):
        for _ in range(3):
            tail = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
            _contract(TlsStream(), [data[:i] + tail])
            _contract(TlsStream(), [data[:i], tail])
        # Cut and nothing after: only "need more".
        s = TlsStream()
        assert s.feed(data[:i]) == [] and not s.failed


def test_record_layer_flipped_bytes() -> None:
    data = openssl_client_hello("flip.example", ["h2"])
    rng = random.Random(5)
    for _ in range(2000):
        b = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        _contract(TlsStream(), [bytes(b)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_hypothesis_arbitrary_bytes(pieces: list[bytes]) -> None:
    _contract(TlsStream(), pieces)


_RECORD = st.tuples(st.sampled_from([20, 21, 22, 23, 24]), st.binary(max_size=80)).map(
    lambda t: record(t[0], t[1])
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_RECORD, max_size=6), st.integers(min_value=1, max_value=40))
def test_hypothesis_well_framed_records(records: list[bytes], step: int) -> None:
    data = b"".join(records)
    _contract(TlsStream(), [data[i : i + step] for i in range(0, len(data), step)])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(TLS13_CH) - 1), max_size=6, unique=True))
def test_hypothesis_any_record_boundaries_give_the_same_hello(cuts: list[int]) -> None:
    cuts = sorted(cuts)
    bounds = [0, *cuts, len(TLS13_CH)]
    data = b"".join(record(22, TLS13_CH[a:b]) for a, b in itertools.pairwise(bounds))
    (ch,) = TlsStream().feed(data)
    assert ch == parse_client_hello(TLS13_CH[4:])


# --- the whole-hello shortcut -----------------------------------------------------------


class _LoopsOnly(TlsStream):
    """The stream with every byte through the record and message loops (the oracle of
    the whole-hello shortcut of ``feed``)."""

    __slots__ = ()

    def _whole_hello(self, data, events):  # type: ignore[no-untyped-def]
        return False


def _stream_state(s: TlsStream) -> tuple:
    return (s._state, s.records, s._tls13, s._tentative, s.buffered, s.need_more,
            s.ignored_bytes, s._hs_type, s._rec_left, s._rec_type, s._skip,
            None if s.error is None else (type(s.error), s.error.reason, str(s.error)))  # fmt: skip


_SH13 = hs(2, server_hello_body(exts=[ext(43, (0x0304).to_bytes(2, "big"))]))
_PIECES = [
    record(22, TLS13_CH),
    record(22, TLS12_CH),
    record(22, hs(2, server_hello_body())),
    record(22, _SH13),
    record(22, hs(2, server_hello_body(rnd=HRR_RANDOM))),
    record(22, TLS13_CH, version=0x0301),
    record(22, TLS13_CH + hs(11, b"xyz")),  # a hello and another message
    record(22, hs(1, b"short")),  # a malformed hello
    record(22, hs(1, b"")),
    record(22, TLS13_CH)[:-1],  # cut short
    record(22, TLS13_CH) + b"\x17",  # and a byte of the next record
    CCS,
    record(21, b"\x01\x00"),
    record(23, b"secret"),
    record(22, TLS13_CH, version=0x0305),  # not TLS
    b"\x16\x03\x03\x00",
    bytes(12),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=6), st.integers(0, 3))
def test_whole_hello_shortcut_matches_the_loops(pieces: list[bytes], split: int) -> None:
    """A segment that is exactly one record holding one hello skips the loops of
    ``feed``: the same events, errors and state as when it goes through them."""
    data = b"".join(pieces)
    if split:  # also as the pieces came, or cut at a few places
        cuts = sorted({len(data) * k // (split + 1) for k in range(1, split + 1)})
        chunks = [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]
    else:
        chunks = pieces
    fast, slow = TlsStream(max_hello_bytes=4000), _LoopsOnly(max_hello_bytes=4000)
    for chunk in chunks:
        got = want = None
        try:
            got = fast.feed(chunk)
        except TlsParseError as e:
            got = ("error", e.reason, str(e))
        try:
            want = slow.feed(chunk)
        except TlsParseError as e:
            want = ("error", e.reason, str(e))
        assert got == want
        assert _stream_state(fast) == _stream_state(slow)
