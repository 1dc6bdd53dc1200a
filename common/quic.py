"""QUIC Initial packets: decrypt them and take the TLS hellos out, sans-IO.

A QUIC connection starts with Initial packets whose keys anyone can derive from
the Destination Connection ID of the client's first Initial (RFC 9001 section
5.2). They carry the TLS ClientHello and ServerHello in CRYPTO frames, often
spread over several packets and, since Chrome 124, over several out-of-order
frames. :class:`QuicHandshake` follows one connection (the caller keys it, e.g. by
the client's address and port and the server's) and returns each hello once it is
complete; :mod:`lc.common.fingerprint` computes its ``q`` JA4/JA4S.

What is done (RFC 9000, RFC 9001, RFC 9369)
    * Long headers of versions 1 (0x00000001) and 2 (0x6b3343cf, RFC 9369: its own
      salt, labels and packet type numbers), several coalesced packets per
      datagram. Version negotiation, 0-RTT and Handshake packets are stepped over;
      a short-header (1-RTT) packet ends the datagram.
    * Initial keys: HKDF-Extract with the version's salt, HKDF-Expand-Label
      ``client in``/``server in`` then ``quic key``/``quic iv``/``quic hp`` (``quicv2
      ...`` for v2); header protection removed with AES-128-ECB over the 16-byte
      sample; the payload opened with AES-128-GCM (``cryptography``), the packet
      number reconstructed from the largest one seen (RFC 9000 appendix A.3).
    * Frames allowed in Initial packets: PADDING, PING, ACK (with ECN counts),
      CRYPTO and CONNECTION_CLOSE; any other frame type is an error.
    * CRYPTO data reassembled by offset (out-of-order and overlapping frames; the
      first copy of a byte wins), at most ``max_crypto_bytes`` per direction.
      The first handshake message of each direction is parsed with
      :func:`lc.common.tls.parse_client_hello` / :func:`parse_server_hello`.
    * The server's Initials are opened with the keys of the client's first DCID;
      after a Retry, the client's next Initial sets new keys (RFC 9001 5.2).

Errors and bounds
    Bytes that are not a QUIC v1/v2 long-header packet, packets that fail
    authentication, malformed frames, CRYPTO data beyond ``max_crypto_bytes`` and
    malformed hellos raise :class:`QuicParseError` (a ParseError; ``reason`` names
    the kind), and nothing else. A datagram whose first packet was good may end
    with bytes that are not a packet (padding by some stacks): they are counted in
    ``trailing_bytes`` and skipped. Keys are derived once per connection.

Not done: 1-RTT or Handshake decryption, Retry integrity tags, version negotiation
beyond v1 and v2, QUIC on other ports than the caller chooses.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lc.common.errors import ParseError, ValidationError
from lc.common.tls import (
    HS_CLIENT_HELLO,
    HS_SERVER_HELLO,
    ClientHello,
    ServerHello,
    TlsParseError,
    parse_client_hello,
    parse_server_hello,
)

__all__ = [
    "DEFAULT_MAX_CRYPTO_BYTES",
    "PACKET_0RTT",
    "PACKET_HANDSHAKE",
    "PACKET_INITIAL",
    "PACKET_RETRY",
    "QUIC_V1",
    "QUIC_V2",
    "SUPPORTED_VERSIONS",
    "CryptoReassembler",
    "InitialKeys",
    "LongHeader",
    "QuicHandshake",
    "QuicParseError",
    "crypto_frames",
    "decrypt_initial",
    "initial_keys",
    "looks_like_initial",
    "parse_long_header",
]

QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF
SUPPORTED_VERSIONS = frozenset({QUIC_V1, QUIC_V2})

# Packet types, normalised to version 1's numbering (RFC 9000 17.2).
PACKET_INITIAL = 0
PACKET_0RTT = 1
PACKET_HANDSHAKE = 2
PACKET_RETRY = 3
_V2_TYPES = (PACKET_RETRY, PACKET_INITIAL, PACKET_0RTT, PACKET_HANDSHAKE)  # wire 0..3

_SALTS = {
    QUIC_V1: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    QUIC_V2: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
}
_LABELS = {QUIC_V1: b"quic ", QUIC_V2: b"quicv2 "}
DEFAULT_MAX_CRYPTO_BYTES = 64 * 1024
_U32 = struct.Struct(">I")


class QuicParseError(ParseError):
    """Bytes that are not a decryptable QUIC Initial (or a well-formed hello in it).

    ``reason``: ``header``, ``version``, ``decrypt``, ``frame``, ``too_big``,
    ``hello``.
    """

    def __init__(self, message: str, reason: str = "header") -> None:
        super().__init__(message)
        self.reason = reason


# --- header -------------------------------------------------------------------------------
def _varint(data: bytes, off: int, end: int) -> tuple[int, int]:
    """(value, next offset) of the variable-length integer at ``off`` (RFC 9000 16)."""
    if off >= end:
        raise QuicParseError(f"varint at offset {off} past the end {end}", "frame")
    first = data[off]
    n = 1 << (first >> 6)
    if off + n > end:
        raise QuicParseError(f"varint of {n} bytes at offset {off} past the end {end}", "frame")
    value = first & 0x3F
    for i in range(off + 1, off + n):
        value = (value << 8) | data[i]
    return value, off + n


@dataclass(frozen=True, slots=True)
class LongHeader:
    """A long-header packet's header fields and where its parts lie in the datagram."""

    version: int
    packet_type: int
    """``PACKET_*`` (version 1 numbering, whatever the version)."""
    dcid: bytes
    scid: bytes
    token: bytes
    """Initial packets only (``b""`` otherwise)."""
    start: int
    """Offset of the first byte of the packet."""
    pn_offset: int
    """Offset of the (protected) packet number; for Retry, of the retry token."""
    end: int
    """Offset one past the packet (the Length field's end; the datagram's for Retry)."""


def looks_like_initial(payload: bytes | bytearray | memoryview) -> bool:
    """True if a UDP payload starts like a QUIC v1 or v2 Initial packet (prefix test)."""
    if len(payload) < 7 or payload[0] & 0xC0 != 0xC0:
        return False
    version = int.from_bytes(payload[1:5], "big")
    wire_type = (payload[0] >> 4) & 3
    if version == QUIC_V1:
        return wire_type == 0
    return version == QUIC_V2 and wire_type == 1


def parse_long_header(datagram: bytes, offset: int = 0) -> LongHeader:
    """Parses the long header of the packet at ``offset`` of a UDP payload.

    Raises:
        QuicParseError: not a long header, an unsupported version, or a length that
            overruns the datagram.
    """
    data = datagram
    end = len(data)
    if end - offset < 7:
        raise QuicParseError(f"{end - offset} bytes at offset {offset}: no long header")
    first = data[offset]
    if first & 0x80 == 0:
        raise QuicParseError(f"short header at offset {offset}")
    version = _U32.unpack_from(data, offset + 1)[0]
    if version not in SUPPORTED_VERSIONS:
        raise QuicParseError(f"QUIC version 0x{version:08x} not supported", "version")
    # The fixed bit (0x40) is not checked: a peer that received grease_quic_bit
    # (RFC 9287; ngtcp2 sends it) may clear it, Initial packets included; the version
    # above identifies the long header.
    wire_type = (first >> 4) & 3
    ptype = wire_type if version == QUIC_V1 else _V2_TYPES[wire_type]
    off = offset + 5
    dlen = data[off]
    off += 1
    if dlen > 20 or off + dlen + 1 > end:
        raise QuicParseError(f"bad DCID length {dlen} at offset {off - 1}")
    dcid = data[off : off + dlen]
    off += dlen
    slen = data[off]
    off += 1
    if slen > 20 or off + slen > end:
        raise QuicParseError(f"bad SCID length {slen} at offset {off - 1}")
    scid = data[off : off + slen]
    off += slen
    if ptype == PACKET_RETRY:
        return LongHeader(version, ptype, dcid, scid, b"", offset, off, end)
    token = b""
    if ptype == PACKET_INITIAL:
        tlen, off = _varint(data, off, end)
        if off + tlen > end:
            raise QuicParseError(f"token of {tlen} bytes overruns the datagram")
        token = data[off : off + tlen]
        off += tlen
    length, off = _varint(data, off, end)
    if off + length > end:
        raise QuicParseError(f"packet length {length} overruns the datagram ({end - off} left)")
    if length < 20:
        raise QuicParseError(f"packet length {length} is too short for a sample")
    return LongHeader(version, ptype, dcid, scid, token, offset, off, off + length)


# --- keys and decryption --------------------------------------------------------------------
def _expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand-Label (RFC 8446 7.1) with an empty context, for lengths <= 32."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes((len(full),)) + full + b"\x00"
    return hmac.digest(secret, info + b"\x01", hashlib.sha256)[:length]


class InitialKeys:
    """The AEAD key, IV and header-protection key of one side's Initial packets."""

    __slots__ = ("_aead", "_hp", "hp", "iv", "key")

    def __init__(self, key: bytes, iv: bytes, hp: bytes) -> None:
        self.key = key
        self.iv = iv
        self.hp = hp
        self._aead = AESGCM(key)
        self._hp = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()

    def mask(self, sample: bytes) -> bytes:
        """The header-protection mask for a 16-byte sample."""
        return self._hp.update(sample)

    def open(self, pn: int, header: bytes, ciphertext: bytes) -> bytes:
        """Decrypts and authenticates a payload.

        Raises:
            QuicParseError: authentication failed.
        """
        nonce = (int.from_bytes(self.iv, "big") ^ pn).to_bytes(12, "big")
        try:
            return self._aead.decrypt(nonce, ciphertext, header)
        except InvalidTag:
            raise QuicParseError(f"Initial packet {pn} failed authentication", "decrypt") from None


def initial_keys(dcid: bytes, version: int = QUIC_V1, server: bool = False) -> InitialKeys:
    """The Initial keys of the client (or ``server``) for a connection whose client
    chose ``dcid`` as its first Destination Connection ID.

    Raises:
        QuicParseError: an unsupported version.
    """
    salt = _SALTS.get(version)
    if salt is None:
        raise QuicParseError(f"QUIC version 0x{version:08x} not supported", "version")
    initial = hmac.digest(salt, dcid, hashlib.sha256)
    secret = _expand_label(initial, b"server in" if server else b"client in", 32)
    prefix = _LABELS[version]
    return InitialKeys(
        _expand_label(secret, prefix + b"key", 16),
        _expand_label(secret, prefix + b"iv", 12),
        _expand_label(secret, prefix + b"hp", 16),
    )


def _decode_pn(largest: int, truncated: int, nbits: int) -> int:
    """RFC 9000 appendix A.3."""
    expected = largest + 1
    win = 1 << nbits
    hwin = win >> 1
    mask = win - 1
    candidate = (expected & ~mask) | truncated
    if candidate <= expected - hwin and candidate < (1 << 62) - win:
        return candidate + win
    if candidate > expected + hwin and candidate >= win:
        return candidate - win
    return candidate


def decrypt_initial(
    datagram: bytes, header: LongHeader, keys: InitialKeys, largest_pn: int = -1
) -> tuple[int, bytes]:
    """Removes header protection from, and decrypts, one Initial packet.

    Returns the full packet number and the plaintext frames.

    Raises:
        QuicParseError: the packet is too short or fails authentication.
    """
    pn_off = header.pn_offset
    end = header.end
    if pn_off + 20 > end:
        raise QuicParseError("Initial packet too short for a header-protection sample")
    mask = keys.mask(datagram[pn_off + 4 : pn_off + 20])
    first = datagram[header.start] ^ (mask[0] & 0x0F)
    pn_len = (first & 3) + 1
    truncated = 0
    for i in range(pn_len):
        truncated = (truncated << 8) | (datagram[pn_off + i] ^ mask[1 + i])
    pn = _decode_pn(largest_pn, truncated, 8 * pn_len)
    aad = bytearray(datagram[header.start : pn_off + pn_len])
    aad[0] = first
    aad[pn_off - header.start :] = truncated.to_bytes(pn_len, "big")
    return pn, keys.open(pn, bytes(aad), datagram[pn_off + pn_len : end])


# --- frames -----------------------------------------------------------------------------------
def crypto_frames(plaintext: bytes) -> list[tuple[int, bytes]]:
    """The CRYPTO frames (offset, data) of an Initial packet's plaintext, in order.

    Raises:
        QuicParseError: a malformed frame, or one not allowed in an Initial packet.
    """
    data = plaintext
    end = len(data)
    off = 0
    out = []
    while off < end:
        ftype = data[off]
        off += 1
        if ftype == 0x00 or ftype == 0x01:  # PADDING, PING
            continue
        if ftype == 0x06:  # CRYPTO
            coff, off = _varint(data, off, end)
            clen, off = _varint(data, off, end)
            if off + clen > end:
                raise QuicParseError(f"CRYPTO frame of {clen} bytes overruns the packet", "frame")
            out.append((coff, data[off : off + clen]))
            off += clen
        elif ftype == 0x02 or ftype == 0x03:  # ACK, ACK with ECN counts
            _, off = _varint(data, off, end)  # largest acknowledged
            _, off = _varint(data, off, end)  # ack delay
            count, off = _varint(data, off, end)
            _, off = _varint(data, off, end)  # first range
            if count > end:
                raise QuicParseError(f"ACK frame with {count} ranges", "frame")
            for _ in range(2 * count + (3 if ftype == 0x03 else 0)):
                _, off = _varint(data, off, end)
        elif ftype == 0x1C:  # CONNECTION_CLOSE (transport)
            _, off = _varint(data, off, end)  # error code
            _, off = _varint(data, off, end)  # frame type
            rlen, off = _varint(data, off, end)
            if off + rlen > end:
                raise QuicParseError("CONNECTION_CLOSE reason overruns the packet", "frame")
            off += rlen
        else:
            raise QuicParseError(f"frame type 0x{ftype:02x} in an Initial packet", "frame")
    return out


class CryptoReassembler:
    """One direction's CRYPTO stream, put back in order.

    The stream may not reach past ``max_bytes``, and the out-of-order pieces held
    may not add up to more than ``max_bytes`` either.
    """

    __slots__ = ("_held", "data", "held_bytes", "max_bytes")

    def __init__(self, max_bytes: int = DEFAULT_MAX_CRYPTO_BYTES) -> None:
        self.max_bytes = max_bytes
        self.data = bytearray()
        """The contiguous bytes from offset 0."""
        self.held_bytes = 0
        """Bytes held behind a hole."""
        self._held: dict[int, bytes] = {}  # out-of-order pieces by offset

    def add(self, offset: int, chunk: bytes) -> None:
        """Adds one CRYPTO frame's data.

        Raises:
            QuicParseError: the stream would go past ``max_bytes``, or hold more.
        """
        end = offset + len(chunk)
        if end > self.max_bytes:
            raise QuicParseError(
                f"CRYPTO data up to offset {end} (max {self.max_bytes})", "too_big"
            )
        have = len(self.data)
        if end <= have or not chunk:
            return
        held = self._held
        if offset > have:
            old = held.get(offset)
            if old is None or len(old) < len(chunk):
                grow = len(chunk) - (len(old) if old is not None else 0)
                if self.held_bytes + grow > self.max_bytes:
                    raise QuicParseError(
                        f"more than {self.max_bytes} CRYPTO bytes held out of order", "too_big"
                    )
                held[offset] = chunk
                self.held_bytes += grow
            return
        self.data += chunk[have - offset :]
        while held:
            have = len(self.data)
            ready = sorted(o for o in held if o <= have)
            if not ready:
                break
            for o in ready:
                piece = held.pop(o)
                self.held_bytes -= len(piece)
                have = len(self.data)
                if o + len(piece) > have:
                    self.data += piece[have - o :]


def _first_message(data: bytearray, want: int) -> tuple[int, bytes] | None:
    """The first handshake message of a CRYPTO stream, once complete."""
    if len(data) < 4:
        return None
    mtype = data[0]
    length = int.from_bytes(data[1:4], "big")
    if mtype != want:
        raise QuicParseError(f"CRYPTO stream starts with handshake type {mtype}", "hello")
    if len(data) < 4 + length:
        return None
    return mtype, bytes(data[4 : 4 + length])


# --- one connection ---------------------------------------------------------------------------
class _Side:
    __slots__ = ("crypto", "done", "keys", "largest")

    def __init__(self, max_bytes: int) -> None:
        self.crypto = CryptoReassembler(max_bytes)
        self.keys: InitialKeys | None = None
        self.largest = -1
        self.done = False


class QuicHandshake:
    """The Initial packets of one QUIC connection, both directions.

    ``feed(datagram, from_client)`` returns the hellos completed by that UDP payload
    (at most one ClientHello and one ServerHello over the connection's life).
    """

    __slots__ = (
        "_client",
        "_server",
        "client_hello",
        "counters",
        "max_crypto_bytes",
        "original_dcid",
        "server_hello",
        "version",
    )

    def __init__(self, max_crypto_bytes: int = DEFAULT_MAX_CRYPTO_BYTES) -> None:
        if (
            not isinstance(max_crypto_bytes, int)
            or isinstance(max_crypto_bytes, bool)
            or max_crypto_bytes < 64
        ):
            raise ValidationError(
                f"max_crypto_bytes must be an integer of at least 64, got {max_crypto_bytes!r}"
            )
        self.max_crypto_bytes = max_crypto_bytes
        self.version: int | None = None
        self.original_dcid: bytes | None = None
        """The DCID the Initial keys derive from."""
        self.client_hello: ClientHello | None = None
        self.server_hello: ServerHello | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            ("datagrams", "initial_packets", "other_packets", "skipped_packets", "trailing_bytes"),
            0,
        )
        self._client = _Side(max_crypto_bytes)
        self._server = _Side(max_crypto_bytes)

    @property
    def done(self) -> bool:
        """Both hellos were seen: nothing more to learn from Initial packets."""
        return self._client.done and self._server.done

    def feed(
        self, datagram: bytes | bytearray | memoryview, from_client: bool
    ) -> list[ClientHello | ServerHello]:
        """Reads one UDP payload of the connection.

        Raises:
            QuicParseError: see the module docstring.
        """
        data = datagram if isinstance(datagram, bytes) else bytes(datagram)
        counters = self.counters
        counters["datagrams"] += 1
        out: list[ClientHello | ServerHello] = []
        off = 0
        end = len(data)
        while off < end:
            if data[off] & 0x80 == 0:
                break  # a 1-RTT packet ends the datagram
            try:
                hdr = parse_long_header(data, off)
            except QuicParseError:
                if not off:
                    raise
                counters["trailing_bytes"] += end - off
                break
            off = hdr.end
            if hdr.packet_type == PACKET_RETRY:
                if not from_client:
                    # The client's next Initial chooses the keys (RFC 9001 5.2).
                    self.original_dcid = None
                    self._client = _Side(self.max_crypto_bytes)
                    self._server = _Side(self.max_crypto_bytes)
                counters["other_packets"] += 1
                break
            if hdr.packet_type != PACKET_INITIAL:
                counters["other_packets"] += 1
                continue
            counters["initial_packets"] += 1
            hello = self._initial(data, hdr, from_client)
            if hello is not None:
                out.append(hello)
        return out

    def _initial(
        self, data: bytes, hdr: LongHeader, from_client: bool
    ) -> ClientHello | ServerHello | None:
        if self.original_dcid is None:
            if not from_client:
                self.counters["skipped_packets"] += 1  # no client Initial seen yet
                return None
            self.original_dcid = hdr.dcid
            self.version = hdr.version
            self._client.keys = initial_keys(hdr.dcid, hdr.version, server=False)
            self._server.keys = initial_keys(hdr.dcid, hdr.version, server=True)
        side = self._client if from_client else self._server
        if side.done or hdr.version != self.version:
            self.counters["skipped_packets"] += 1
            return None
        keys = side.keys
        assert keys is not None
        pn, plain = decrypt_initial(data, hdr, keys, side.largest)
        if pn > side.largest:
            side.largest = pn
        crypto = side.crypto
        for coff, chunk in crypto_frames(plain):
            crypto.add(coff, chunk)
        want = HS_CLIENT_HELLO if from_client else HS_SERVER_HELLO
        msg = _first_message(crypto.data, want)
        if msg is None:
            return None
        side.done = True
        try:
            if from_client:
                self.client_hello = parse_client_hello(msg[1])
                return self.client_hello
            self.server_hello = parse_server_hello(msg[1])
            return self.server_hello
        except TlsParseError as exc:
            raise QuicParseError(f"hello in CRYPTO frames: {exc}", "hello") from exc
