"""TLS client and server fingerprints: JA3, JA3S, JA4 (and its raw forms) and JA4S.

Everything here is computed from the hellos of :mod:`lc.common.tls`; nothing reads
the wire. :class:`FingerprintCache` computes each distinct hello *shape* once: a busy
sensor sees the same few client stacks again and again, and only the fields that a
fingerprint depends on make up the key (never the random, the session id or the
server name itself).

JA3 and JA3S (salesforce/ja3, as tshark 4.0 computes ``tls.handshake.ja3``)
    ``JA3 = md5("version,ciphers,extensions,groups,point_formats")``: the ClientHello's
    legacy_version, then cipher suites, extension types, supported_groups and
    ec_point_formats in wire order, decimal, ``-``-joined; a missing list is an empty
    field. GREASE values (RFC 8701) are left out of every list.
    ``JA3S = md5("version,cipher,extensions")`` from the ServerHello (legacy_version;
    for a draft TLS 1.3 ServerHello that is its 0x7fxx version), GREASE left out.

JA4 (FoxIO's technical_details/JA4.md; BSD-3-Clause)
    ``JA4 = a_b_c``. ``a`` is the protocol (``t`` TCP, ``q`` QUIC: the caller says which,
    from the transport), the version (the highest non-GREASE supported_versions value,
    else legacy_version: 13, 12, 11, 10, s3, s2, d1, d2, d3, else ``00``), ``d`` with
    a server_name extension or ``i`` without, the number of cipher suites and of
    extensions (GREASE not counted, capped at 99, two digits) and two ALPN characters
    (below). ``b`` is the first 12 hex digits of SHA-256 over the sorted, comma-joined
    4-digit hex cipher suites (``000000000000`` when there are none). ``c`` is the same
    over the sorted extension types without server_name (0000) and ALPN (0010), then
    ``_`` and the signature algorithms in wire order (no ``_`` when there are none;
    ``000000000000`` when the sorted list is empty). ``JA4_r`` shows those lists
    instead of hashing them; ``JA4_o``/``JA4_ro`` keep the wire order and include
    0000 and 0010 (and, like FoxIO's Python tool, hash to all zeros when no
    extension but those two is left). GREASE values are left out everywhere,
    signature algorithms included.

JA4S (FoxIO's JA4S diagram; JA4+ is under the FoxIO License 1.1)
    ``JA4S = a_b_c``: protocol, the version chosen (supported_versions, else
    legacy_version), the number of extensions (two digits), the two ALPN characters
    of the protocol chosen; the cipher suite chosen in 4 hex digits; the first 12 hex
    digits of SHA-256 over the extension types in wire order, comma-joined
    (``000000000000`` without extensions). ``JA4S_r`` shows that list.

The two ALPN characters: a decision where the reference tools disagree with the text
    The specification: ``00`` without ALPN, without a first value or with an empty
    one; otherwise the first and last character of the first value when both are
    ASCII letters or digits (one character counts as both: ``a`` gives ``aa``);
    otherwise the first and last character of the value's hex form (``0xab`` gives
    ``ab``, ``0x30 0xab`` gives ``3b``). Case is kept (``H2`` stays ``H2``).
    FoxIO's own tools at commit 0e54bc8 do not do that: on
    ``tls/ja4_tls-non-ascii-alpn.pcapng``, whose first ALPN value is the two bytes
    ``ba ad``, their Python and Rust outputs say ``99`` (each non-ASCII character
    becomes ``9``), where the specification gives ``bd``; Rust also prints ``a0``
    for a one-character value. **lc follows the specification**: it is the
    normative definition, FoxIO revised exactly this paragraph (with the examples
    above) after those tools were written, and it depends only on the bytes, not on
    how a dissector decoded them. The test suite pins both the specification's
    examples and the one place where lc differs from the published outputs.

Speed: computing JA3, JA4 and JA4_r from scratch takes about 45-70 us per hello;
a cache hit about 0.6 us (``bench/tls_parse_bench.py``, 2 shared vCPUs).

Not here: JA4H, JA4X, JA4L, JA4T (other parts of JA4+), DTLS (``d``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import md5, sha256

from lc.common.errors import ValidationError
from lc.common.tls import EXT_ALPN, EXT_SERVER_NAME, ClientHello, ServerHello, is_grease

__all__ = [
    "DEFAULT_CACHE_ENTRIES",
    "JA4_VERSION_CODES",
    "ClientFingerprints",
    "FingerprintCache",
    "ServerFingerprints",
    "alpn_chars",
    "ja3",
    "ja3_string",
    "ja3s",
    "ja3s_string",
    "ja4",
    "ja4_o",
    "ja4_r",
    "ja4_ro",
    "ja4s",
    "ja4s_r",
]

#: JA4's two-character version codes; anything else is ``00``.
JA4_VERSION_CODES: dict[int, str] = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
DEFAULT_CACHE_ENTRIES = 4096
_ZERO_HASH = "000000000000"
_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _no_grease(values: Iterable[int]) -> list[int]:
    return [v for v in values if not is_grease(v)]


def _dec(values: Iterable[int]) -> str:
    return "-".join(map(str, values))


def _hex4(values: Iterable[int]) -> str:
    return ",".join([f"{v:04x}" for v in values])


def _hash12(text: str) -> str:
    return sha256(text.encode("ascii")).hexdigest()[:12] if text else _ZERO_HASH


# --- JA3 / JA3S ------------------------------------------------------------------------
def ja3_string(ch: ClientHello) -> str:
    """The JA3 string of a ClientHello (GREASE left out), as tshark's ``ja3_full``."""
    return ",".join(
        (
            str(ch.legacy_version),
            _dec(_no_grease(ch.ciphers)),
            _dec(_no_grease(ch.extension_types)),
            _dec(_no_grease(ch.supported_groups)),
            _dec(ch.ec_point_formats),
        )
    )


def ja3(ch: ClientHello) -> str:
    """The JA3 hash: MD5 of :func:`ja3_string`, lower-case hex."""
    return md5(ja3_string(ch).encode("ascii"), usedforsecurity=False).hexdigest()


def ja3s_string(sh: ServerHello) -> str:
    """The JA3S string of a ServerHello (GREASE left out), as tshark's ``ja3s_full``."""
    return f"{sh.legacy_version},{sh.cipher},{_dec(_no_grease(sh.extension_types))}"


def ja3s(sh: ServerHello) -> str:
    """The JA3S hash: MD5 of :func:`ja3s_string`, lower-case hex."""
    return md5(ja3s_string(sh).encode("ascii"), usedforsecurity=False).hexdigest()


# --- JA4 ------------------------------------------------------------------------------
def alpn_chars(value: bytes | None) -> str:
    """JA4's two ALPN characters for a protocol name (see the module docstring)."""
    if not value:
        return "00"
    first = value[0]
    last = value[-1]
    if first in _ALNUM and last in _ALNUM:
        return chr(first) + chr(last)
    h = value.hex()
    return h[0] + h[-1]


def _version_code(version: int) -> str:
    return JA4_VERSION_CODES.get(version, "00")


def _ja4_parts(ch: ClientHello, quic: bool) -> tuple[str, list[int], list[int], list[int]]:
    """(JA4_a, ciphers, extensions, signature algorithms), GREASE left out."""
    ciphers = _no_grease(ch.ciphers)
    exts = _no_grease(ch.extension_types)
    sigs = _no_grease(ch.signature_algorithms)
    a = "%s%s%s%02d%02d%s" % (  # noqa: UP031 (one format is clearer here)
        "q" if quic else "t",
        _version_code(ch.version),
        "d" if EXT_SERVER_NAME in exts else "i",
        min(len(ciphers), 99),
        min(len(exts), 99),
        alpn_chars(ch.alpn[0] if ch.alpn else None),
    )
    return a, ciphers, exts, sigs


def _ja4_lists(ch: ClientHello, quic: bool, original: bool) -> tuple[str, str, str, bool]:
    """(JA4_a, cipher list, extension list, whether JA4_c is all zeros)."""
    a, ciphers, exts, sigs = _ja4_parts(ch, quic)
    rest = [e for e in exts if e != EXT_SERVER_NAME and e != EXT_ALPN]
    if original:
        ext_text = _hex4(exts)
    else:
        ciphers.sort()
        rest.sort()
        ext_text = _hex4(rest)
    if sigs and ext_text:
        ext_text = f"{ext_text}_{_hex4(sigs)}"
    return a, _hex4(ciphers), ext_text, not rest


def ja4(ch: ClientHello, quic: bool = False) -> str:
    """The JA4 fingerprint of a ClientHello (``quic`` for a QUIC Initial's hello)."""
    a, b, c, zero = _ja4_lists(ch, quic, False)
    return f"{a}_{_hash12(b)}_{_ZERO_HASH if zero else _hash12(c)}"


def ja4_r(ch: ClientHello, quic: bool = False) -> str:
    """JA4_r: JA4 with the sorted lists shown instead of hashed."""
    a, b, c, _zero = _ja4_lists(ch, quic, False)
    return f"{a}_{b}_{c}"


def ja4_o(ch: ClientHello, quic: bool = False) -> str:
    """JA4_o: JA4 over the lists in wire order (server_name and ALPN included; the
    last part is all zeros, as in JA4, when no other extension is left)."""
    a, b, c, zero = _ja4_lists(ch, quic, True)
    return f"{a}_{_hash12(b)}_{_ZERO_HASH if zero else _hash12(c)}"


def ja4_ro(ch: ClientHello, quic: bool = False) -> str:
    """JA4_ro: the lists of :func:`ja4_o`, shown instead of hashed."""
    a, b, c, _zero = _ja4_lists(ch, quic, True)
    return f"{a}_{b}_{c}"


# --- JA4S -----------------------------------------------------------------------------
def _ja4s_lists(sh: ServerHello, quic: bool) -> tuple[str, str, str]:
    exts = _no_grease(sh.extension_types)
    a = "%s%s%02d%s" % (  # noqa: UP031
        "q" if quic else "t",
        _version_code(sh.version),
        min(len(exts), 99),
        alpn_chars(sh.alpn),
    )
    return a, f"{sh.cipher:04x}", _hex4(exts)


def ja4s(sh: ServerHello, quic: bool = False) -> str:
    """The JA4S fingerprint of a ServerHello."""
    a, b, c = _ja4s_lists(sh, quic)
    return f"{a}_{b}_{_hash12(c)}"


def ja4s_r(sh: ServerHello, quic: bool = False) -> str:
    """JA4S_r: JA4S with the extension list shown instead of hashed."""
    a, b, c = _ja4s_lists(sh, quic)
    return f"{a}_{b}_{c}"


# --- the cache ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClientFingerprints:
    """Every client fingerprint of one ClientHello shape."""

    ja3: str
    ja3_string: str
    ja4: str
    ja4_r: str


@dataclass(frozen=True, slots=True)
class ServerFingerprints:
    """Every server fingerprint of one ServerHello shape."""

    ja3s: str
    ja3s_string: str
    ja4s: str
    ja4s_r: str


class FingerprintCache:
    """Fingerprints per distinct hello shape, at most ``max_entries`` of each side.

    The key is the raw tuple of every field a fingerprint reads (for a ClientHello:
    the transport, legacy_version, cipher suites, extension types, supported_groups,
    ec_point_formats, signature_algorithms, supported_versions and the first ALPN
    value). When a side is full, its oldest shape is dropped (``evictions``).
    ``hits`` and ``misses`` count look-ups.
    """

    __slots__ = ("_clients", "_servers", "evictions", "hits", "max_entries", "misses")

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        if not isinstance(max_entries, int) or isinstance(max_entries, bool) or max_entries < 1:
            raise ValidationError(f"max_entries must be a positive integer, got {max_entries!r}")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._clients: dict[tuple, ClientFingerprints] = {}
        self._servers: dict[tuple, ServerFingerprints] = {}

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    def client(self, ch: ClientHello, quic: bool = False) -> ClientFingerprints:
        """The fingerprints of ``ch`` (computed once per shape)."""
        alpn = ch.alpn
        key = (
            quic,
            ch.legacy_version,
            ch.ciphers,
            ch.extension_types,
            ch.supported_groups,
            ch.ec_point_formats,
            ch.signature_algorithms,
            ch.supported_versions,
            alpn[0] if alpn else None,
        )
        cache = self._clients
        fp = cache.get(key)
        if fp is not None:
            self.hits += 1
            return fp
        self.misses += 1
        s = ja3_string(ch)
        fp = ClientFingerprints(
            md5(s.encode("ascii"), usedforsecurity=False).hexdigest(),
            s,
            ja4(ch, quic),
            ja4_r(ch, quic),
        )
        if len(cache) >= self.max_entries:
            del cache[next(iter(cache))]
            self.evictions += 1
        cache[key] = fp
        return fp

    def server(self, sh: ServerHello, quic: bool = False) -> ServerFingerprints:
        """The fingerprints of ``sh`` (computed once per shape)."""
        key = (
            quic,
            sh.legacy_version,
            sh.cipher,
            sh.extension_types,
            sh.selected_version,
            sh.alpn,
        )
        cache = self._servers
        fp = cache.get(key)
        if fp is not None:
            self.hits += 1
            return fp
        self.misses += 1
        s = ja3s_string(sh)
        fp = ServerFingerprints(
            md5(s.encode("ascii"), usedforsecurity=False).hexdigest(),
            s,
            ja4s(sh, quic),
            ja4s_r(sh, quic),
        )
        if len(cache) >= self.max_entries:
            del cache[next(iter(cache))]
            self.evictions += 1
        cache[key] = fp
        return fp
