"""lc.common.fingerprint: the JA4 specification's own examples, edge cases, the cache.

The corpus tests (test_tls_corpus.py) compare with tshark, FoxIO, Arkime, Suricata
and ja4plus; these pin the rules of the specification text where no capture does.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from lc.common import fingerprint as fp
from lc.common.errors import ValidationError
from lc.common.tls import ClientHello, ServerHello, parse_client_hello, parse_server_hello


# Small builders (the same shapes as in test_tls.py; kept here so the modules stand alone).
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


def client_hello_body(ciphers=(0x1301,), exts=(), version=0x0303) -> bytes:
    e = b"".join(exts)
    head = version.to_bytes(2, "big") + bytes(32) + b"\x00" + u16s(ciphers) + b"\x01\x00"
    return head + len(e).to_bytes(2, "big") + e


def server_hello_body(cipher=0x1301, exts=(), version=0x0303) -> bytes:
    e = b"".join(exts)
    head = version.to_bytes(2, "big") + bytes(32) + b"\x00" + cipher.to_bytes(2, "big") + b"\x00"
    return head + len(e).to_bytes(2, "big") + e


# The JA4 specification's worked example (technical_details/JA4.md).
SPEC_CIPHERS = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8]
SPEC_CIPHERS += [0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
SPEC_EXTS = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005]
SPEC_EXTS += [0x0023, 0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015]
SPEC_SIGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def spec_hello(first_alpn: bytes = b"h2", grease: bool = False) -> ClientHello:
    exts = []
    for t in SPEC_EXTS:
        if t == 0x0000:
            exts.append(sni(b"example.com"))
        elif t == 0x0010:
            exts.append(alpn(first_alpn, b"http/1.1"))
        elif t == 0x002B:
            exts.append(versions(*((0x7A7A,) if grease else ()), 0x0304, 0x0303))
        elif t == 0x000A:
            exts.append(ext(t, u16s([29, 23])))
        elif t == 0x000B:
            exts.append(ext(t, b"\x01\x00"))
        elif t == 0x000D:
            exts.append(ext(13, u16s(([0x1A1A] if grease else []) + SPEC_SIGS)))
        else:
            exts.append(ext(t, b""))
    ciphers = SPEC_CIPHERS
    if grease:
        exts.insert(3, ext(0x2A2A, b""))
        ciphers = [0x3A3A, *ciphers]
    return parse_client_hello(client_hello_body(ciphers=ciphers, exts=exts))


def test_the_specifications_example() -> None:
    ch = spec_hello()
    assert fp.ja4(ch) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert fp.ja4_r(ch) == (
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_"
        "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_"
        "0403,0804,0401,0503,0805,0501,0806,0601"
    )
    assert fp.ja4_o(ch) == "t13d1516h2_acb858a92679_18f69afefd3d"
    assert fp.ja4_ro(ch).startswith("t13d1516h2_1301,1302,1303,c02b,")
    assert fp.ja4(ch, quic=True) == "q13d1516h2_8daaf6152771_e5627efa2ab1"


def test_grease_is_ignored_everywhere() -> None:
    """GREASE in ciphers, extensions, supported_versions and signature algorithms."""
    assert fp.ja4(spec_hello(grease=True)) == fp.ja4(spec_hello())
    assert fp.ja4_r(spec_hello(grease=True)) == fp.ja4_r(spec_hello())
    assert fp.ja3(spec_hello(grease=True)) == fp.ja3(spec_hello())


@pytest.mark.parametrize(
    ("value", "chars"),
    [
        (None, "00"),
        (b"", "00"),
        (b"h2", "h2"),
        (b"http/1.1", "h1"),
        (b"H2", "H2"),
        (b"a", "aa"),  # one character is both first and last
        # The specification's own examples of the hex rule:
        (b"\xab", "ab"),
        (b"\x20", "20"),
        (b"\xab\xcd", "ad"),
        (b"\x20\x61", "21"),
        (b"\x30\xab", "3b"),
        (b"\x61\x20", "60"),
        (b"\x30\x31\xab\xcd", "3d"),
        (b"\x30\xab\xcd\x31", "01"),
        (b"\xba\xad", "bd"),  # tls/ja4_tls-non-ascii-alpn: FoxIO's tools print 99
    ],
)
def test_alpn_characters(value: bytes | None, chars: str) -> None:
    assert fp.alpn_chars(value) == chars


def test_first_alpn_value_only() -> None:
    ch = spec_hello(first_alpn=b"\xba\xad")
    assert fp.ja4(ch).startswith("t13d1516bd_")


def test_no_ciphers_no_extensions_no_sigalgs() -> None:
    body = client_hello_body(ciphers=(), exts=[])
    ch = parse_client_hello(body[:-2])  # no extensions block at all
    assert ch.extensions == ()
    assert fp.ja4(ch) == "t12i000000_000000000000_000000000000"
    assert fp.ja4_r(ch) == "t12i000000__"
    assert fp.ja3_string(ch) == "771,,,,"
    only_sni = parse_client_hello(client_hello_body(ciphers=(0x2F,), exts=[sni(b"x")]))
    assert fp.ja4(only_sni).endswith("_000000000000") and fp.ja4(only_sni)[3] == "d"
    no_sigs = parse_client_hello(client_hello_body(ciphers=(0x2F,), exts=[ext(23, b"")]))
    expected = hashlib.sha256(b"0017").hexdigest()[:12]
    assert fp.ja4(no_sigs).endswith("_" + expected)  # no trailing "_" before hashing


def test_counts_cap_at_99_and_versions_map() -> None:
    ch = parse_client_hello(client_hello_body(ciphers=range(1, 150), version=0x0301))
    assert fp.ja4(ch).startswith("t10i9900")
    for version, code in ((0x0300, "s3"), (0x0302, "11"), (0x7F12, "00"), (0xFEFD, "d2")):
        ch = parse_client_hello(client_hello_body(exts=[versions(version)]))
        assert fp.ja4(ch)[1:3] == code


def test_ja3_fields() -> None:
    exts = [
        ext(0x0A0A, b""),
        ext(10, u16s([0x1A1A, 29, 23])),
        ext(11, b"\x02\x00\x01"),
        sni(b"x"),
    ]
    ch = parse_client_hello(client_hello_body(ciphers=(0x2A2A, 0xC02F, 0x35), exts=exts))
    assert fp.ja3_string(ch) == "771,49199-53,10-11-0,29-23,0-1"
    assert fp.ja3(ch) == hashlib.md5(b"771,49199-53,10-11-0,29-23,0-1").hexdigest()


def test_ja3s_and_ja4s() -> None:
    sh = parse_server_hello(
        server_hello_body(0xC030, [ext(0xFF01, b"\x00"), ext(11, b"\x01\x00"), ext(35, b"")])
    )
    assert fp.ja3s_string(sh) == "771,49200,65281-11-35"
    assert fp.ja4s_r(sh) == "t120300_c030_ff01,000b,0023"
    assert fp.ja4s(sh) == "t120300_c030_" + hashlib.sha256(b"ff01,000b,0023").hexdigest()[:12]
    tls13 = parse_server_hello(server_hello_body(0x1301, [ext(43, b"\x03\x04"), alpn(b"h2")]))
    assert fp.ja4s(tls13, quic=True).startswith("q1302h2_1301_")
    bare = parse_server_hello(server_hello_body(0x0005)[:-2])
    assert fp.ja4s(bare) == "t120000_0005_000000000000"


def test_cache_computes_each_shape_once() -> None:
    cache = fp.FingerprintCache(max_entries=2)
    a = spec_hello()
    b = parse_client_hello(client_hello_body(exts=[sni(b"other.example")]))
    first = cache.client(a)
    assert first == fp.ClientFingerprints(fp.ja3(a), fp.ja3_string(a), fp.ja4(a), fp.ja4_r(a))
    # Another random, session id and server name: the same shape, the same object.
    a2 = spec_hello()
    object.__setattr__(a2, "random", bytes(32))
    assert cache.client(a2) is first
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.client(a, quic=True).ja4.startswith("q")  # the transport is in the key
    assert cache.client(b).ja4 == fp.ja4(b)
    assert cache.evictions == 1 and len(cache) == 2
    sh = parse_server_hello(server_hello_body(0x1301, [ext(43, b"\x03\x04")]))
    s = cache.server(sh)
    assert s.ja4s == fp.ja4s(sh) and s.ja3s == fp.ja3s(sh) and cache.server(sh) is s


def test_alpn_is_part_of_the_cache_key() -> None:
    cache = fp.FingerprintCache()
    assert cache.client(spec_hello(b"h2")).ja4 != cache.client(spec_hello(b"h3")).ja4


@pytest.mark.parametrize("bad", [0, -1, "9", False])
def test_cache_limit_is_validated(bad) -> None:
    with pytest.raises(ValidationError, match="max_entries"):
        fp.FingerprintCache(bad)


def test_server_hello_type_is_checked_by_the_cache_key() -> None:
    sh: ServerHello = parse_server_hello(server_hello_body(0x1301))
    hrr_like = parse_server_hello(server_hello_body(0x1302))
    cache = fp.FingerprintCache()
    assert cache.server(sh).ja4s != cache.server(hrr_like).ja4s
