"""lc.common.quic: Initial keys, decryption, CRYPTO reassembly, one connection's hellos.

Independent references: the key and packet test vectors of RFC 9001 appendix A and
RFC 9369 appendix A (QUIC v2), and (in test_tls_corpus.py) the QUIC hellos of the
corpus against tshark, FoxIO's Rust tool and Suricata. Packets built here are sealed
with ``cryptography`` directly (AES-GCM, then header protection), the way a sender
does it, so the decoder opens what a peer would send.
"""

from __future__ import annotations

import random
import ssl

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common import fingerprint as fp
from lc.common.errors import ParseError, ValidationError
from lc.common.quic import (
    PACKET_INITIAL,
    PACKET_RETRY,
    QUIC_V1,
    QUIC_V2,
    CryptoReassembler,
    QuicHandshake,
    QuicParseError,
    crypto_frames,
    decrypt_initial,
    initial_keys,
    looks_like_initial,
    parse_long_header,
)
from lc.common.tls import ClientHello, ServerHello, parse_server_hello

RFC_DCID = bytes.fromhex("8394c8f03e515708")

# RFC 9001 A.1 and RFC 9369 A.1: (version, server, key, iv, hp)
KEY_VECTORS = [
    (QUIC_V1, False, "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c",
     "9f50449e04a0e810283a1e9933adedd2"),
    (QUIC_V1, True, "cf3a5331653c364c88f0f379b6067e37", "0ac1493ca1905853b0bba03e",
     "c206b8d9b9f0f37644430b490eeaa314"),
    (QUIC_V2, False, "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f",
     "45b95e15235d6f45a6b19cbcb0294ba9"),
    (QUIC_V2, True, "82db637861d55e1d011f19ea71d5d2a7", "dd13c276499c0249d3310652",
     "edf6d05c83121201b436e16877593c3a"),
]  # fmt: skip

# RFC 9001 A.3 and RFC 9369 A.3: the server's Initial (ACK + CRYPTO with a ServerHello).
RFC_SERVER_INITIAL = {
    QUIC_V1: bytes.fromhex(
        "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a"
        "5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3"
        "dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84"
        "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4"
        "2158407dd074ee"
    ),
    QUIC_V2: bytes.fromhex(
        "dc6b3343cf0008f067a5502a4262b5004075d92faaf16f05d8a4398c47089698"
        "baeea26b91eb761d9b89237bbf87263017915358230035f7fd3945d88965cf17"
        "f9af6e16886c61bfc703106fbaf3cb4cfa52382dd16a393e42757507698075b2"
        "c984c707f0a0812d8cd5a6881eaf21ceda98f4bd23f6fe1a3e2c43edd9ce7ca8"
        "4bed8521e2e140"
    ),
}


@pytest.mark.parametrize(("version", "server", "key", "iv", "hp"), KEY_VECTORS)
def test_initial_keys_match_the_rfcs(version, server, key, iv, hp) -> None:
    k = initial_keys(RFC_DCID, version, server)
    assert (k.key.hex(), k.iv.hex(), k.hp.hex()) == (key, iv, hp)


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_rfc_server_initial_opens(version: int) -> None:
    packet = RFC_SERVER_INITIAL[version]
    hdr = parse_long_header(packet)
    assert (hdr.version, hdr.packet_type, hdr.dcid, hdr.scid.hex(), hdr.end) == (
        version,
        PACKET_INITIAL,
        b"",
        "f067a5502a4262b5",
        len(packet),
    )
    pn, plain = decrypt_initial(packet, hdr, initial_keys(RFC_DCID, version, server=True))
    assert pn == 1
    assert plain.startswith(b"\x02\x00\x00\x00\x00")  # the ACK frame
    ((offset, data),) = crypto_frames(plain)
    assert offset == 0 and data[0] == 2
    sh = parse_server_hello(data[4:])
    assert (sh.cipher, sh.selected_version, sh.extension_types) == (0x1301, 0x0304, (51, 43))
    assert fp.ja4s(sh, quic=True) == "q130200_1301_" + fp.ja4s(sh)[13:]


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_tampered_packets_fail_authentication(version: int) -> None:
    packet = bytearray(RFC_SERVER_INITIAL[version])
    keys = initial_keys(RFC_DCID, version, server=True)
    for pos in (len(packet) - 30, 7):  # in the ciphertext; in the header (only the AAD)
        bad = bytes(packet[:pos]) + bytes((packet[pos] ^ 1,)) + bytes(packet[pos + 1 :])
        with pytest.raises(QuicParseError) as info:
            decrypt_initial(bad, parse_long_header(bad), keys)
        assert info.value.reason == "decrypt" and isinstance(info.value, ParseError)


# --- packets built here ------------------------------------------------------------------------


def varint(n: int, size: int | None = None) -> bytes:
    if size is None:
        size = 1 if n < 64 else 2 if n < 16384 else 4
    prefix = {1: 0, 2: 0x40, 4: 0x80, 8: 0xC0}[size]
    b = n.to_bytes(size, "big")
    return bytes((b[0] | prefix,)) + b[1:]


def crypto(offset: int, data: bytes) -> bytes:
    return b"\x06" + varint(offset) + varint(len(data)) + data


def seal(
    frames: bytes,
    pn: int,
    dcid: bytes,
    *,
    key_dcid: bytes | None = None,
    version: int = QUIC_V1,
    server: bool = False,
    scid: bytes = b"\x01\x02",
    pn_len: int = 2,
    quic_bit: bool = True,
) -> bytes:
    """An Initial packet as a sender seals it (RFC 9001 5.3, 5.4); ``quic_bit`` False:
    greased (RFC 9287)."""
    k = initial_keys(key_dcid or dcid, version, server)
    frames = frames + bytes(max(0, 24 - len(frames)))  # room for the sample
    wire_type = 0 if version == QUIC_V1 else 1
    first = (0xC0 if quic_bit else 0x80) | (wire_type << 4) | (pn_len - 1)
    head = bytes((first,)) + version.to_bytes(4, "big") + bytes((len(dcid),)) + dcid
    head += bytes((len(scid),)) + scid + varint(0)  # no token
    head += varint(pn_len + len(frames) + 16, 2)
    pn_off = len(head)
    head += (pn & ((1 << (8 * pn_len)) - 1)).to_bytes(pn_len, "big")
    nonce = (int.from_bytes(k.iv, "big") ^ pn).to_bytes(12, "big")
    ct = AESGCM(k.key).encrypt(nonce, frames, head)
    sample = ct[4 - pn_len : 20 - pn_len]
    mask = Cipher(algorithms.AES(k.hp), modes.ECB()).encryptor().update(sample)
    out = bytearray(head + ct)
    out[0] ^= mask[0] & 0x0F
    for i in range(pn_len):
        out[pn_off + i] ^= mask[1 + i]
    return bytes(out)


def tls_client_hello(server_name: str = "quic.example") -> bytes:
    """A real OpenSSL ClientHello handshake message (without its record header)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h3"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    data = outgoing.read()
    assert data[0] == 22 and len(data) == 5 + int.from_bytes(data[3:5], "big")
    return data[5:]


DCID = bytes.fromhex("0011223344556677")
CH = tls_client_hello()


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_client_hello_in_one_initial(version: int) -> None:
    packet = seal(crypto(0, CH) + bytes(100), 0, DCID, version=version)
    assert looks_like_initial(packet)
    q = QuicHandshake()
    (ch,) = q.feed(packet, from_client=True)
    assert isinstance(ch, ClientHello) and ch.server_name == "quic.example"
    assert ch.alpn == (b"h3",) and q.client_hello is ch and q.version == version
    assert fp.ja4(ch, quic=True).startswith("q13d")


def test_client_hello_over_several_initials_out_of_order_frames() -> None:
    """Chrome-style: the hello cut into CRYPTO frames, sent out of order, with PING and
    PADDING between them, over three packets."""
    parts = [(0, CH[:100]), (100, CH[100:180]), (180, CH[180:])]
    p0 = seal(b"\x01" + crypto(*parts[1]) + b"\x00" * 5 + crypto(0, CH[:60]), 0, DCID)
    p1 = seal(crypto(*parts[2]), 1, DCID)
    p2 = seal(crypto(40, CH[40:100]) + b"\x01", 2, DCID)  # overlaps the first 60 bytes
    q = QuicHandshake()
    assert q.feed(p0, True) == []
    assert q.feed(p1, True) == []
    (ch,) = q.feed(p2, True)
    assert ch.raw == CH[4:]
    assert q.feed(seal(b"\x01", 3, DCID), True) == []  # done: later Initials are skipped
    assert q.counters["skipped_packets"] == 1


def test_coalesced_packets_and_trailing_bytes() -> None:
    first = seal(crypto(0, CH[:150]), 0, DCID)
    second = seal(crypto(150, CH[150:]), 1, DCID)
    q = QuicHandshake()
    (ch,) = q.feed(first + second + b"\xff" * 30, True)
    assert ch.server_name == "quic.example"
    assert q.counters["initial_packets"] == 2 and q.counters["trailing_bytes"] == 30


def test_server_hello_uses_the_clients_first_dcid() -> None:
    body = b"\x03\x03" + bytes(32) + b"\x00\x13\x01\x00" + b"\x00\x06\x00\x2b\x00\x02\x03\x04"
    sh = b"\x02" + len(body).to_bytes(3, "big") + body
    q = QuicHandshake()
    # A server Initial before any client Initial cannot be opened: skipped, no error.
    early = seal(crypto(0, sh), 0, b"\x01\x02", key_dcid=DCID, server=True, scid=b"\x09")
    assert q.feed(early, False) == [] and q.counters["skipped_packets"] == 1
    q.feed(seal(crypto(0, CH), 0, DCID), True)
    (server_hello,) = q.feed(early, False)
    assert isinstance(server_hello, ServerHello) and server_hello.selected_version == 0x0304
    assert (
        q.done and fp.ja4s(server_hello, quic=True) == "q130100_1301_" + fp.ja4s(server_hello)[13:]
    )


@pytest.mark.parametrize("version", [QUIC_V1, QUIC_V2])
def test_a_greased_quic_bit_is_read(version: int) -> None:
    """RFC 9287: a peer told grease_quic_bit may clear the fixed bit, in Initial packets
    too (ngtcp2's server does): both hellos are still read."""
    body = b"\x03\x03" + bytes(32) + b"\x00\x13\x01\x00" + b"\x00\x06\x00\x2b\x00\x02\x03\x04"
    sh = b"\x02" + len(body).to_bytes(3, "big") + body
    q = QuicHandshake()
    (ch,) = q.feed(seal(crypto(0, CH), 0, DCID, version=version, quic_bit=False), True)
    greased = seal(crypto(0, sh), 0, b"\x01\x02", key_dcid=DCID, server=True, scid=b"\x09",
                   version=version, quic_bit=False)  # fmt: skip
    assert not greased[0] & 0x40
    (server_hello,) = q.feed(greased, False)
    assert ch.server_name == "quic.example" and server_hello.selected_version == 0x0304


def test_retry_makes_the_next_client_initial_choose_the_keys() -> None:
    q = QuicHandshake()
    q.feed(seal(crypto(0, CH[:50]), 0, DCID), True)
    retry = bytes((0xF0,)) + QUIC_V1.to_bytes(4, "big") + b"\x02\x01\x02\x04abcd" + bytes(24)
    assert parse_long_header(retry).packet_type == PACKET_RETRY
    assert q.feed(retry, False) == []
    new_dcid = b"abcd"
    (ch,) = q.feed(seal(crypto(0, CH), 0, new_dcid), True)
    assert q.original_dcid == new_dcid and ch.raw == CH[4:]


def test_frames_not_allowed_in_initial_packets() -> None:
    q = QuicHandshake()
    with pytest.raises(QuicParseError, match="frame type 0x08") as info:
        q.feed(seal(b"\x08\x00\x05hello", 0, DCID), True)
    assert info.value.reason == "frame"


def test_ack_and_connection_close_frames_are_read() -> None:
    frames = b"\x03\x05\x00\x01\x00\x01\x01\x01\x02\x03" + b"\x1c\x00\x00\x03bye" + crypto(0, CH)
    (ch,) = QuicHandshake().feed(seal(frames, 0, DCID), True)
    assert ch.server_name == "quic.example"


def test_crypto_data_is_bounded() -> None:
    q = QuicHandshake(max_crypto_bytes=200)
    with pytest.raises(QuicParseError) as info:
        q.feed(seal(crypto(150, bytes(100)), 0, DCID), True)
    assert info.value.reason == "too_big"
    r = CryptoReassembler(max_bytes=300)
    r.add(100, bytes(150))
    with pytest.raises(QuicParseError, match="held out of order"):
        r.add(101, bytes(199))
    r.add(0, bytes(100))
    assert len(r.data) == 250 and r.held_bytes == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc0\x00\x00\x00\x02\x08" + bytes(30), "version"),
        (b"\xc0\x00\x00\x00\x01\x30" + bytes(40), "header"),
        (b"\xc0\x00\x00", "header"),
        (b"\xc0\x00\x00\x00\x01\x00\x00\x00\x7f\xff" + bytes(20), "header"),
    ],
)
def test_not_quic_gives_the_parsers_error(data: bytes, reason: str) -> None:
    with pytest.raises(QuicParseError) as info:
        QuicHandshake().feed(data, True)
    assert info.value.reason == reason


def test_hello_that_is_not_a_client_hello() -> None:
    with pytest.raises(QuicParseError, match="handshake type 2"):
        QuicHandshake().feed(seal(crypto(0, b"\x02\x00\x00\x10" + bytes(16)), 0, DCID), True)
    with pytest.raises(QuicParseError) as info:
        QuicHandshake().feed(seal(crypto(0, b"\x01\x00\x00\x10" + bytes(16)), 0, DCID), True)
    assert info.value.reason == "hello"


def test_short_header_ends_the_datagram() -> None:
    assert QuicHandshake().feed(b"\x40" + bytes(40), True) == []  # 1-RTT: not an error
    q = QuicHandshake()
    (ch,) = q.feed(seal(crypto(0, CH), 0, DCID) + b"\x41" + bytes(50), True)
    assert ch.server_name and q.counters["trailing_bytes"] == 0


@pytest.mark.parametrize("bad", [0, 63, "1", None])
def test_bad_limit_is_refused(bad) -> None:
    with pytest.raises(ValidationError, match="max_crypto_bytes"):
        QuicHandshake(bad)


def test_packet_numbers_are_reconstructed() -> None:
    q = QuicHandshake()
    q.feed(seal(crypto(0, CH[:100]), 300, DCID, pn_len=2), True)
    (ch,) = q.feed(seal(crypto(100, CH[100:]), 301, DCID, pn_len=1), True)  # 301 & 0xff
    assert ch.raw == CH[4:]


# --- fuzz ---------------------------------------------------------------------------------


def _contract(q: QuicHandshake, datagram: bytes, from_client: bool = True) -> None:
    try:
        for h in q.feed(datagram, from_client):
            assert isinstance(h, ClientHello | ServerHello)
    except QuicParseError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.booleans())
def test_hypothesis_arbitrary_datagrams(data: bytes, from_client: bool) -> None:
    _contract(QuicHandshake(), data, from_client)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=40), st.sampled_from([QUIC_V1, QUIC_V2]))
def test_hypothesis_long_headers(tail: bytes, version: int) -> None:
    wire_type = 0 if version == QUIC_V1 else 1
    data = bytes((0xC0 | wire_type << 4,)) + version.to_bytes(4, "big") + tail
    _contract(QuicHandshake(), data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_hypothesis_decrypted_frames(frames: bytes) -> None:
    """Any plaintext sealed correctly: only hellos, nothing, or the parser's error."""
    _contract(QuicHandshake(), seal(frames, 0, DCID))


def test_real_initial_with_flipped_bytes() -> None:
    packet = seal(crypto(0, CH), 0, DCID)
    rng = random.Random(3)
    for _ in range(500):
        b = bytearray(packet)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        _contract(QuicHandshake(), bytes(b))
    for i in range(0, len(packet), 7):
        _contract(QuicHandshake(), packet[:i])
