"""TLS record layer and handshake hellos, sans-IO: one direction of one connection.

The TLS hunter feeds the bytes of one direction of a TCP connection, as reassembly
makes them contiguous, into a :class:`TlsStream` and gets back the handshake events
they complete: a :class:`ClientHello`, a :class:`ServerHello` (a HelloRetryRequest
is a ServerHello with ``is_hrr`` set), a :class:`HandshakeMessage` for every other
handshake message, and an :class:`Alert` for plaintext alerts. Nothing here reads a
socket or a clock. :func:`parse_client_hello` and :func:`parse_server_hello` parse
one handshake message body (QUIC's CRYPTO stream, :mod:`lc.common.quic`, carries
handshake messages without the record layer).

What is parsed (RFC 8446, RFC 5246, RFC 6066, RFC 7301, RFC 8701)
    * Records (section 5.1 of RFC 8446): content type 20 change_cipher_spec, 21
      alert, 22 handshake, 23 application_data, 24 heartbeat; record version 3.0
      to 3.4; length at most 2**14 + 2048 (the TLSCiphertext bound).
    * Handshake messages reassembled across records and across calls to ``feed``
      (a ClientHello split over several TCP segments, or over several records),
      and several messages in one record. Only ClientHello and ServerHello bodies
      are kept (at most ``max_hello_bytes``); the bodies of the others (Certificate,
      ServerKeyExchange, ...) are skipped as they stream past, never buffered.
    * ClientHello: legacy version, random, session id, cipher suites, compression
      methods and every extension in wire order (type and raw data, duplicates and
      GREASE values kept). Decoded from their data: server_name (the first
      host_name), ALPN, supported_versions, supported_groups, signature_algorithms
      and ec_point_formats. Unknown extensions are kept raw.
    * ServerHello, including TLS 1.3's HelloRetryRequest (the fixed random of
      section 4.1.3) and the draft TLS 1.3 ServerHello (versions 0x7f00-0x7f15,
      which has no session id and no compression method). Decoded: the cipher
      suite chosen, supported_versions (the version chosen) and ALPN.
    * GREASE (RFC 8701): :func:`is_grease` recognises the reserved values; they stay
      in every list, as sent. Fingerprints (:mod:`lc.common.fingerprint`) drop them.

When the stream stops being parsed (``encrypted``)
    Once the bytes of a direction are encrypted, nothing more is parsed: ``feed``
    returns ``[]`` and counts the bytes in ``ignored_bytes``. A direction becomes
    encrypted at its first application_data record; after a ServerHello that
    chooses TLS 1.3 (or a draft of it), which is not a HelloRetryRequest; and after
    a ChangeCipherSpec in TLS 1.2 and older. TLS 1.3's middlebox-compatibility
    ChangeCipherSpec (a direction whose ClientHello offered TLS 1.3, or which sent
    a HelloRetryRequest) is not a key change: the hello that follows a
    HelloRetryRequest is still plaintext. After such a ChangeCipherSpec, the next
    handshake record is parsed only if it starts like a plaintext hello (type 1 or
    2, a plausible length, legacy version 0x0303); anything else there (such as a
    TLS 1.2 Finished, encrypted after the client offered 1.3 and the server chose
    1.2) marks the stream encrypted, without an error.

Errors
    Bytes that are not TLS raise :class:`TlsParseError` (a
    :class:`~lc.common.errors.ParseError`) from ``feed``: an SSLv2-compatible
    hello (``reason == "sslv2"``), an unknown record type or version, a record or a
    hello over its bound (``"too_big"``), an unknown handshake type, a malformed
    hello. The error is raised once; the stream is then ``failed`` and ignores
    whatever is fed later. Incomplete input is never an error: ``need_more`` is
    True while a record or message is partly buffered. ``feed`` raises nothing
    else, whatever the bytes.

Bounds
    A stream buffers at most a record header (5 bytes), a handshake header (4
    bytes) and one hello body (``max_hello_bytes``, default 64 KiB); ``buffered``
    says how much it holds now. A hello that claims more is refused (``too_big``).

Speed
    :func:`parse_client_hello` takes about 12-19 us for a 517-byte OpenSSL
    ClientHello, a new stream fed the whole record about 23 us (development VM, 2
    vCPU shared, CPython 3.11; ``bench/tls_parse_bench.py``). A connection is parsed
    only until both hellos are seen.

Not done here
    Decryption, certificates (their bytes are skipped), SSLv2, DTLS, renegotiation
    inside an encrypted connection. Server names are kept as sent (decoded as
    UTF-8 with ``surrogateescape``, so every byte survives): pass them through
    :func:`lc.common.text.wire_text` or :func:`lc.common.text.log_text` before they
    leave the process.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from lc.common.errors import ParseError, ValidationError

__all__ = [
    "CONTENT_ALERT",
    "CONTENT_APPLICATION_DATA",
    "CONTENT_CHANGE_CIPHER_SPEC",
    "CONTENT_HANDSHAKE",
    "CONTENT_HEARTBEAT",
    "DEFAULT_MAX_HELLO_BYTES",
    "EXT_ALPN",
    "EXT_EC_POINT_FORMATS",
    "EXT_KEY_SHARE",
    "EXT_QUIC_TRANSPORT_PARAMETERS",
    "EXT_SERVER_NAME",
    "EXT_SIGNATURE_ALGORITHMS",
    "EXT_SUPPORTED_GROUPS",
    "EXT_SUPPORTED_VERSIONS",
    "HANDSHAKE_TYPES",
    "HRR_RANDOM",
    "HS_CLIENT_HELLO",
    "HS_SERVER_HELLO",
    "MAX_RECORD_LENGTH",
    "Alert",
    "ClientHello",
    "HandshakeMessage",
    "ServerHello",
    "TlsEvent",
    "TlsParseError",
    "TlsStream",
    "is_grease",
    "is_tls13",
    "looks_like_tls",
    "parse_client_hello",
    "parse_handshake",
    "parse_server_hello",
]

CONTENT_CHANGE_CIPHER_SPEC = 20
CONTENT_ALERT = 21
CONTENT_HANDSHAKE = 22
CONTENT_APPLICATION_DATA = 23
CONTENT_HEARTBEAT = 24

HS_CLIENT_HELLO = 1
HS_SERVER_HELLO = 2
#: Handshake message types a stream accepts (RFC 8446 section 4 and its registry;
#: 3 and 21 are DTLS/TLS 1.2 leftovers that still appear; 254 is message_hash).
HANDSHAKE_TYPES: frozenset[int] = frozenset(
    {0, 1, 2, 3, 4, 5, 6, 8, 11, 12, 13, 14, 15, 16, 20, 21, 22, 23, 24, 25, 254}
)

EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B
EXT_KEY_SHARE = 0x0033
EXT_QUIC_TRANSPORT_PARAMETERS = 0x0039

#: TLSCiphertext.length may be at most 2**14 + 2048 (RFC 5246 section 6.2.3).
MAX_RECORD_LENGTH = 2**14 + 2048
DEFAULT_MAX_HELLO_BYTES = 64 * 1024
#: The ServerHello.random of a HelloRetryRequest: SHA-256("HelloRetryRequest").
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")

_U16 = struct.Struct(">H")
_HH = struct.Struct(">HH")
_REC = struct.Struct(">BHH")
_u16 = _U16.unpack_from
_rec = _REC.unpack_from
_LIST16: dict[int, struct.Struct] = {}
#: The ClientHello extensions whose contents parse_client_hello reads.
_CH_PARSED = frozenset(
    (
        EXT_SERVER_NAME,
        EXT_ALPN,
        EXT_SUPPORTED_VERSIONS,
        EXT_SUPPORTED_GROUPS,
        EXT_SIGNATURE_ALGORITHMS,
        EXT_EC_POINT_FORMATS,
    )
)


class TlsParseError(ParseError):
    """Bytes that are not a well-formed TLS record stream or hello.

    ``reason`` is a short word fit for a counter name: ``sslv2``, ``not_tls``,
    ``record``, ``too_big``, ``handshake``, ``hello``, ``extension``.
    """

    def __init__(self, message: str, reason: str = "hello") -> None:
        super().__init__(message)
        self.reason = reason


def is_grease(value: int) -> bool:
    """True for an RFC 8701 GREASE value (0x0a0a, 0x1a1a, ..., 0xfafa)."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def is_tls13(version: int) -> bool:
    """True for TLS 1.3 (0x0304) and its drafts (0x7fxx)."""
    return version == 0x0304 or version >> 8 == 0x7F


def looks_like_tls(data: bytes | bytearray | memoryview) -> bool:
    """True if ``data`` starts like a TLS handshake or alert record (a prefix test)."""
    n = len(data)
    if n < 1 or data[0] not in (CONTENT_HANDSHAKE, CONTENT_ALERT):
        return False
    return n < 3 or (data[1] == 3 and data[2] <= 4)


# --- events ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClientHello:
    """A ClientHello, with every field and extension as sent (GREASE included)."""

    legacy_version: int
    """ClientHello.legacy_version (0x0303 for TLS 1.2 and 1.3)."""
    random: bytes
    session_id: bytes
    ciphers: tuple[int, ...]
    """Cipher suites in wire order."""
    compression_methods: bytes
    extensions: tuple[tuple[int, bytes], ...]
    """Every extension in wire order: (type, raw data)."""
    extension_types: tuple[int, ...]
    """The types of ``extensions``, in the same order."""
    server_name: str | None
    """The first host_name of server_name (UTF-8, surrogateescape); None without
    the extension, ``""`` when it names no host."""
    alpn: tuple[bytes, ...]
    """ALPN protocol names in order; ``()`` without the extension."""
    supported_versions: tuple[int, ...]
    supported_groups: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    ec_point_formats: tuple[int, ...]
    raw: bytes = field(default=b"", repr=False, compare=False)
    """The message body as received (after the 4-byte handshake header)."""

    @property
    def version(self) -> int:
        """The highest version offered: the largest non-GREASE supported_versions
        value, else ``legacy_version``."""
        best = -1
        for v in self.supported_versions:
            if v > best and not is_grease(v):
                best = v
        return best if best >= 0 else self.legacy_version


@dataclass(frozen=True, slots=True)
class ServerHello:
    """A ServerHello or HelloRetryRequest (``is_hrr``)."""

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher: int
    """The cipher suite chosen."""
    compression_method: int
    extensions: tuple[tuple[int, bytes], ...]
    extension_types: tuple[int, ...]
    selected_version: int | None
    """supported_versions' value, None without the extension."""
    alpn: bytes | None
    """The protocol chosen, None without the extension."""
    is_hrr: bool
    """A HelloRetryRequest (RFC 8446 section 4.1.3)."""
    raw: bytes = field(default=b"", repr=False, compare=False)
    """The message body as received (after the 4-byte handshake header)."""

    @property
    def version(self) -> int:
        """The version chosen: ``selected_version`` if present, else ``legacy_version``."""
        v = self.selected_version
        return self.legacy_version if v is None else v


@dataclass(frozen=True, slots=True)
class HandshakeMessage:
    """Any other handshake message: its type and body length (the body is not kept)."""

    msg_type: int
    length: int


@dataclass(frozen=True, slots=True)
class Alert:
    """A plaintext alert."""

    level: int
    description: int


TlsEvent = ClientHello | ServerHello | HandshakeMessage | Alert


# --- hello parsing ----------------------------------------------------------------------
def _u16_list(data: bytes, off: int, nbytes: int, what: str) -> tuple[int, ...]:
    if nbytes & 1:
        raise TlsParseError(f"{what}: odd length {nbytes}", "extension")
    count = nbytes >> 1
    st = _LIST16.get(count)
    if st is None:
        st = struct.Struct(f">{count}H")
        if count <= 512:
            _LIST16[count] = st
    return st.unpack_from(data, off)


def _vector16(data: bytes, what: str) -> tuple[int, int]:
    """(offset, length) of the u16-length-prefixed vector that must fill ``data``."""
    if len(data) < 2:
        raise TlsParseError(f"{what}: {len(data)} bytes, need a 2-byte length", "extension")
    n = _u16(data, 0)[0]
    if n + 2 != len(data):
        raise TlsParseError(f"{what}: list length {n} in {len(data)} bytes", "extension")
    return 2, n


def _parse_sni(data: bytes) -> str:
    if not data:
        return ""  # allowed in a ServerHello; tolerated in a ClientHello
    off, n = _vector16(data, "server_name")
    end = off + n
    name = None
    while off < end:
        if off + 3 > end:
            raise TlsParseError("server_name: truncated entry", "extension")
        kind = data[off]
        ln = _u16(data, off + 1)[0]
        off += 3
        if off + ln > end:
            raise TlsParseError(f"server_name: entry of {ln} bytes overruns the list", "extension")
        if kind == 0 and name is None:
            name = data[off : off + ln].decode("utf-8", "surrogateescape")
        off += ln
    return "" if name is None else name


def _parse_alpn(data: bytes) -> tuple[bytes, ...]:
    off, n = _vector16(data, "application_layer_protocol_negotiation")
    end = off + n
    names = []
    while off < end:
        ln = data[off]
        off += 1
        if off + ln > end:
            raise TlsParseError(f"ALPN: name of {ln} bytes overruns the list", "extension")
        names.append(data[off : off + ln])
        off += ln
    return tuple(names)


def _parse_extensions(
    data: bytes, off: int, end: int, what: str
) -> tuple[tuple[tuple[int, bytes], ...], tuple[int, ...]]:
    if off == end:
        return (), ()
    if off + 2 > end:
        raise TlsParseError(f"{what}: truncated extensions length", "hello")
    total = _u16(data, off)[0]
    off += 2
    if off + total != end:
        raise TlsParseError(
            f"{what}: extensions length {total} but {end - off} bytes follow", "hello"
        )
    exts = []
    types = []
    add_ext = exts.append
    add_type = types.append
    hh = _HH.unpack_from
    while off < end:
        if off + 4 > end:
            raise TlsParseError(f"{what}: truncated extension header", "hello")
        etype, ln = hh(data, off)
        off += 4
        nxt = off + ln
        if nxt > end:
            raise TlsParseError(
                f"{what}: extension {etype} of {ln} bytes overruns the hello", "hello"
            )
        add_ext((etype, data[off:nxt]))
        add_type(etype)
        off = nxt
    return tuple(exts), tuple(types)


def parse_client_hello(body: bytes | bytearray | memoryview) -> ClientHello:
    """Parses a ClientHello message body (after the 4-byte handshake header).

    Raises:
        TlsParseError: the body is not a well-formed ClientHello.
    """
    data = bytes(body)
    end = len(data)
    if end < 38:
        raise TlsParseError(f"ClientHello of {end} bytes is too short", "hello")
    legacy_version = _u16(data, 0)[0]
    random = data[2:34]
    sid_len = data[34]
    off = 35
    if sid_len > 32 or off + sid_len + 2 > end:
        raise TlsParseError(f"ClientHello: bad session id length {sid_len}", "hello")
    session_id = data[off : off + sid_len]
    off += sid_len
    clen = _u16(data, off)[0]
    off += 2
    if clen & 1 or off + clen + 1 > end:
        raise TlsParseError(f"ClientHello: bad cipher suites length {clen}", "hello")
    ciphers = _u16_list(data, off, clen, "cipher suites")
    off += clen
    mlen = data[off]
    off += 1
    if off + mlen > end:
        raise TlsParseError(f"ClientHello: bad compression methods length {mlen}", "hello")
    compression = data[off : off + mlen]
    off += mlen
    exts, types = _parse_extensions(data, off, end, "ClientHello")

    server_name = None
    alpn: tuple[bytes, ...] = ()
    versions: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    sigalgs: tuple[int, ...] = ()
    formats: tuple[int, ...] = ()
    for etype, edata in exts:
        if etype not in _CH_PARSED:
            continue
        if etype == EXT_SERVER_NAME:
            if server_name is None:
                server_name = _parse_sni(edata)
        elif etype == EXT_ALPN:
            if not alpn:
                alpn = _parse_alpn(edata)
        elif etype == EXT_SUPPORTED_VERSIONS:
            if not edata or edata[0] + 1 != len(edata):
                raise TlsParseError("supported_versions: bad list length", "extension")
            versions = _u16_list(edata, 1, edata[0], "supported_versions")
        elif etype == EXT_SUPPORTED_GROUPS:
            o, n = _vector16(edata, "supported_groups")
            groups = _u16_list(edata, o, n, "supported_groups")
        elif etype == EXT_SIGNATURE_ALGORITHMS:
            o, n = _vector16(edata, "signature_algorithms")
            sigalgs = _u16_list(edata, o, n, "signature_algorithms")
        elif etype == EXT_EC_POINT_FORMATS:
            if not edata or edata[0] + 1 != len(edata):
                raise TlsParseError("ec_point_formats: bad list length", "extension")
            formats = tuple(edata[1:])
    return ClientHello(
        legacy_version,
        random,
        session_id,
        ciphers,
        compression,
        exts,
        types,
        server_name,
        alpn,
        versions,
        groups,
        sigalgs,
        formats,
        data,
    )


def parse_server_hello(body: bytes | bytearray | memoryview) -> ServerHello:
    """Parses a ServerHello (or HelloRetryRequest) body, after the handshake header.

    Raises:
        TlsParseError: the body is not a well-formed ServerHello.
    """
    data = bytes(body)
    end = len(data)
    if end < 36:
        raise TlsParseError(f"ServerHello of {end} bytes is too short", "hello")
    legacy_version = _u16(data, 0)[0]
    random = data[2:34]
    if 0x7F00 <= legacy_version <= 0x7F15:
        # TLS 1.3 drafts before 22: version, random, cipher_suite, extensions.
        session_id = b""
        cipher = _u16(data, 34)[0]
        compression = 0
        off = 36
    else:
        sid_len = data[34]
        off = 35
        if sid_len > 32 or off + sid_len + 3 > end:
            raise TlsParseError(f"ServerHello: bad session id length {sid_len}", "hello")
        session_id = data[off : off + sid_len]
        off += sid_len
        cipher = _u16(data, off)[0]
        compression = data[off + 2]
        off += 3
    exts, types = _parse_extensions(data, off, end, "ServerHello")
    selected = None
    alpn = None
    for etype, edata in exts:
        if etype == EXT_SUPPORTED_VERSIONS:
            if len(edata) != 2:
                raise TlsParseError(
                    f"ServerHello supported_versions of {len(edata)} bytes", "extension"
                )
            selected = _u16(edata, 0)[0]
        elif etype == EXT_ALPN and alpn is None:
            names = _parse_alpn(edata)
            if len(names) != 1:
                raise TlsParseError(f"ServerHello ALPN with {len(names)} names", "extension")
            alpn = names[0]
    return ServerHello(
        legacy_version,
        random,
        session_id,
        cipher,
        compression,
        exts,
        types,
        selected,
        alpn,
        random == HRR_RANDOM,
        data,
    )


def parse_handshake(msg_type: int, body: bytes | bytearray | memoryview) -> TlsEvent:
    """The event for one handshake message: a hello parsed, else a HandshakeMessage.

    Raises:
        TlsParseError: a malformed hello.
    """
    if msg_type == HS_CLIENT_HELLO:
        return parse_client_hello(body)
    if msg_type == HS_SERVER_HELLO:
        return parse_server_hello(body)
    return HandshakeMessage(msg_type, len(body))


# --- the stream ---------------------------------------------------------------------------
# Where a direction is: records in plaintext; after a TLS 1.3 compatibility CCS;
# encrypted (ignored); failed (ignored, the error was raised once).
_PLAIN = 0
_AFTER_CCS = 1
_ENCRYPTED = 2
_FAILED = 3


class TlsStream:
    """One direction of a TLS connection; see the module docstring.

    ``feed(data)`` returns the events ``data`` completed (``[]`` when more bytes are
    needed, or when the stream is encrypted or failed).
    """

    __slots__ = (
        "_alert_buf",
        "_body",
        "_body_left",
        "_hdr",
        "_hs_hdr",
        "_hs_type",
        "_rec_left",
        "_rec_type",
        "_skip",
        "_state",
        "_tentative",
        "_tls13",
        "error",
        "ignored_bytes",
        "max_hello_bytes",
        "records",
    )

    def __init__(self, max_hello_bytes: int = DEFAULT_MAX_HELLO_BYTES) -> None:
        if (
            not isinstance(max_hello_bytes, int)
            or isinstance(max_hello_bytes, bool)
            or not 38 <= max_hello_bytes <= 0xFFFFFF
        ):
            raise ValidationError(
                f"max_hello_bytes must be an integer from 38 to {0xFFFFFF}, got {max_hello_bytes!r}"
            )
        self.max_hello_bytes = max_hello_bytes
        self.error: TlsParseError | None = None
        """The error this stream raised, if any."""
        self.ignored_bytes = 0
        """Bytes fed after the stream became encrypted or failed."""
        self.records = 0
        """Complete record headers read."""
        self._state = _PLAIN
        self._tls13 = False  # this direction offered or chose TLS 1.3
        self._tentative = False  # the hello being read follows a compatibility CCS
        self._hdr = b""  # partial record header
        self._rec_type = 0
        self._rec_left = 0  # payload bytes of the current record still to come
        self._hs_hdr = b""  # partial handshake header
        self._hs_type = -1  # type of the handshake message being read, -1 between
        self._skip = 0  # body bytes of a skipped message still to come
        self._body: bytearray | None = None  # hello body being collected
        self._body_left = 0
        self._alert_buf = b""  # partial alert record data

    # --- state --------------------------------------------------------------------------
    @property
    def encrypted(self) -> bool:
        """The direction is encrypted from here on; nothing more is parsed."""
        return self._state == _ENCRYPTED

    @property
    def failed(self) -> bool:
        """``feed`` raised; the stream ignores the rest."""
        return self._state == _FAILED

    @property
    def need_more(self) -> bool:
        """A record or handshake message is partly read (more bytes complete it)."""
        if self._state >= _ENCRYPTED:
            return False
        return bool(
            self._hdr or self._rec_left or self._hs_hdr or self._hs_type >= 0 or self._alert_buf
        )

    @property
    def buffered(self) -> int:
        """Bytes held now (partial headers and a partial hello body)."""
        body = self._body
        return (
            len(self._hdr)
            + len(self._hs_hdr)
            + len(self._alert_buf)
            + (len(body) if body is not None else 0)
        )

    # --- feeding ------------------------------------------------------------------------
    def feed(self, data: bytes | bytearray | memoryview) -> list[TlsEvent]:
        """Adds the next bytes of this direction; returns the events they completed.

        Raises:
            TlsParseError: the bytes are not TLS (raised once; see ``failed``).
        """
        if self._state >= _ENCRYPTED:
            self.ignored_bytes += len(data)
            return []
        events: list[TlsEvent] = []
        if not isinstance(data, bytes):
            data = bytes(data)
        try:
            if (
                not self._state  # _PLAIN, between records and messages
                and not self._tentative
                and not self._rec_left
                and not self._hdr
                and self._hs_type < 0
                and not self._hs_hdr
                and not self._alert_buf
                and len(data) >= 9
                and data[0] == CONTENT_HANDSHAKE
                and (data[5] == HS_CLIENT_HELLO or data[5] == HS_SERVER_HELLO)
                and self._whole_hello(data, events)
            ):
                return events
            self._feed(data, events)
        except TlsParseError as exc:
            self._fail(exc)
            raise
        return events

    def _whole_hello(self, data: bytes, events: list[TlsEvent]) -> bool:
        """``data`` is exactly one handshake record holding exactly one hello (the
        usual first segment of each direction): what ``_feed`` would do, without its
        record and message loops. False, having done nothing, for anything else."""
        _, version, length = _rec(data, 0)
        if (
            length != len(data) - 5
            or version >> 8 != 3
            or version & 0xFF > 4
            or length > MAX_RECORD_LENGTH
        ):
            return False
        hlen = int.from_bytes(data[6:9], "big")
        if hlen != length - 4 or hlen > self.max_hello_bytes:
            return False
        self.records += 1
        self._rec_type = CONTENT_HANDSHAKE
        self._hs_type = data[5]
        self._hello_done(data[9:], events)
        return True

    def _fail(self, exc: TlsParseError) -> None:
        self._state = _FAILED
        self.error = exc
        self._body = None
        self._hdr = self._hs_hdr = self._alert_buf = b""

    def _encrypt(self) -> None:
        """From here on nothing is parsed (the loops count the bytes left over)."""
        self._state = _ENCRYPTED
        self._body = None
        self._hdr = self._hs_hdr = self._alert_buf = b""
        self._rec_left = self._skip = 0
        self._hs_type = -1

    def _feed(self, data: bytes, events: list[TlsEvent]) -> None:
        n = len(data)
        pos = 0
        while pos < n:
            if self._state >= _ENCRYPTED:
                self.ignored_bytes += n - pos
                return
            left = self._rec_left
            if not left:
                hdr = self._hdr
                take = 5 - len(hdr)
                hdr = hdr + bytes(data[pos : pos + take]) if hdr else bytes(data[pos : pos + take])
                pos += take
                if len(hdr) < 5:
                    self._check_header_prefix(hdr)
                    self._hdr = hdr
                    return
                self._hdr = b""
                if self._record_header(hdr):
                    continue
                left = self._rec_left
                if not left or pos == n:
                    continue
            k = left if left <= n - pos else n - pos
            chunk = data[pos : pos + k]
            pos += k
            self._rec_left = left - k
            rtype = self._rec_type
            if rtype == CONTENT_HANDSHAKE:
                self._handshake(chunk, events)
            elif rtype == CONTENT_ALERT:
                self._alert(chunk, events)
            elif rtype == CONTENT_CHANGE_CIPHER_SPEC:
                if bytes(chunk) != b"\x01":
                    raise TlsParseError(
                        f"ChangeCipherSpec with body {bytes(chunk[:8]).hex()}", "record"
                    )
                if not self._rec_left:
                    self._ccs()
            # heartbeat records are skipped

    def _check_header_prefix(self, hdr: bytes) -> None:
        """Fails early on a partial record header that cannot start a TLS record."""
        first = hdr[0]
        if first & 0x80:
            if len(hdr) >= 3:
                self._not_tls(hdr)
            return
        if first not in (20, 21, 22, 23, 24):
            self._not_tls(hdr)
        if len(hdr) >= 2 and hdr[1] != 3:
            self._not_tls(hdr)
        if len(hdr) >= 3 and hdr[2] > 4:
            self._not_tls(hdr)

    def _not_tls(self, hdr: bytes) -> None:
        if hdr[0] & 0x80 and len(hdr) >= 3 and hdr[2] in (1, 4) and not self.records:
            kind = "ClientHello" if hdr[2] == 1 else "ServerHello"
            raise TlsParseError(f"SSLv2-compatible {kind} (not supported)", "sslv2")
        raise TlsParseError(f"not a TLS record header: {hdr.hex()}", "not_tls")

    def _record_header(self, hdr: bytes) -> bool:
        """Reads a complete record header; True if the stream stopped being parsed."""
        rtype, version, length = _rec(hdr, 0)
        if rtype not in (20, 21, 22, 23, 24) or version >> 8 != 3 or version & 0xFF > 4:
            self._not_tls(hdr)
        if length > MAX_RECORD_LENGTH:
            raise TlsParseError(f"record of {length} bytes (max {MAX_RECORD_LENGTH})", "too_big")
        self.records += 1
        if rtype != CONTENT_HANDSHAKE and (self._hs_type >= 0 or self._hs_hdr):
            if self._state == _AFTER_CCS or rtype == CONTENT_APPLICATION_DATA:
                self._encrypt()
                return True
            raise TlsParseError(
                f"record type {rtype} inside a split handshake message", "handshake"
            )
        if rtype == CONTENT_APPLICATION_DATA:
            self._encrypt()
            return True
        if self._state == _AFTER_CCS:
            if rtype == CONTENT_HANDSHAKE and self._hs_type < 0 and not self._hs_hdr:
                self._tentative = True
            elif rtype != CONTENT_HANDSHAKE:
                self._encrypt()
                return True
        if rtype == CONTENT_CHANGE_CIPHER_SPEC and length != 1:
            raise TlsParseError(f"ChangeCipherSpec record of {length} bytes", "record")
        if rtype == CONTENT_ALERT and length & 1:
            # A plaintext alert is 2 bytes (several may share a record).
            raise TlsParseError(f"alert record of {length} bytes", "record")
        self._rec_type = rtype
        self._rec_left = length
        return False

    def _ccs(self) -> None:
        if self._tls13:
            self._state = _AFTER_CCS
        else:
            self._encrypt()

    def _alert(self, chunk: bytes | memoryview, events: list[TlsEvent]) -> None:
        buf = self._alert_buf + bytes(chunk)
        i = 0
        while i + 2 <= len(buf):
            events.append(Alert(buf[i], buf[i + 1]))
            i += 2
        self._alert_buf = buf[i:]

    def _handshake(self, chunk: bytes | memoryview, events: list[TlsEvent]) -> None:
        n = len(chunk)
        i = 0
        while i < n:
            if self._state >= _ENCRYPTED:
                self.ignored_bytes += n - i
                return
            skip = self._skip
            if skip:
                k = skip if skip <= n - i else n - i
                i += k
                self._skip = skip - k
                if not self._skip:
                    events.append(HandshakeMessage(self._hs_type, self._body_left))
                    self._hs_type = -1
                    self._body_left = 0
                continue
            body = self._body
            if body is not None:
                left = self._body_left - len(body)
                k = left if left <= n - i else n - i
                body += chunk[i : i + k]
                i += k
                if self._tentative and len(body) >= 2 and (body[0], body[1]) != (3, 3):
                    self._encrypt()
                    continue
                if len(body) == self._body_left:
                    self._hello_done(bytes(body), events)
                continue
            hs = self._hs_hdr
            take = 4 - len(hs)
            hs = hs + bytes(chunk[i : i + take])
            i += take
            if len(hs) < 4:
                self._hs_hdr = hs
                return
            self._hs_hdr = b""
            mtype = hs[0]
            length = int.from_bytes(hs[1:4], "big")
            if self._tentative and (
                mtype not in (HS_CLIENT_HELLO, HS_SERVER_HELLO)
                or not 38 <= length <= self.max_hello_bytes
            ):
                self._encrypt()
                continue
            if mtype not in HANDSHAKE_TYPES:
                raise TlsParseError(f"unknown handshake message type {mtype}", "handshake")
            self._hs_type = mtype
            if mtype in (HS_CLIENT_HELLO, HS_SERVER_HELLO):
                if length > self.max_hello_bytes:
                    raise TlsParseError(
                        f"hello of {length} bytes (max {self.max_hello_bytes})", "too_big"
                    )
                self._body_left = length
                self._body = bytearray()
                if not length:
                    self._hello_done(b"", events)
            elif length:
                self._skip = length
                self._body_left = length
            else:
                events.append(HandshakeMessage(mtype, 0))
                self._hs_type = -1

    def _hello_done(self, body: bytes, events: list[TlsEvent]) -> None:
        mtype = self._hs_type
        self._hs_type = -1
        self._body = None
        self._body_left = 0
        self._tentative = False
        if self._state == _AFTER_CCS:
            self._state = _PLAIN
        if mtype == HS_CLIENT_HELLO:
            hello = parse_client_hello(body)
            events.append(hello)
            for v in hello.supported_versions:
                if v == 0x0304 or v >> 8 == 0x7F:  # is_tls13
                    self._tls13 = True
                    break
        else:
            sh = parse_server_hello(body)
            events.append(sh)
            if sh.is_hrr:
                self._tls13 = True
            elif is_tls13(sh.version) or is_tls13(sh.legacy_version):
                # Everything after a TLS 1.3 ServerHello is encrypted.
                self._encrypt()
