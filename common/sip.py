"""SIP messages (RFC 3261), parsed sans-IO: one UDP datagram, or framed out of a TCP stream.

This module does no I/O. :func:`parse_sip` turns the bytes of one message into a
:class:`SipMessage`; :class:`SipStreamFramer` cuts one direction of a TCP byte stream
into messages; :func:`looks_like_sip` is the cheap test the hunter runs on every
datagram of a SIP port before paying for a parse. The SDP bodies are parsed by
:mod:`lc.common.sdp`.

What a message is (RFC 3261 section 7)
    A start line, header lines, an empty line, then the body.

    * Start line: a request line ``METHOD SP Request-URI SP SIP/2.0`` or a status line
      ``SIP/2.0 SP 3DIGIT SP Reason-Phrase``. The version is compared without regard to
      case; the method must be a token and is reported upper-cased; the status code
      must lie in 100..699. The start line must be valid UTF-8.
    * Line ends: CRLF, or a bare LF (seen from sloppy stacks). CR/LF before the start
      line is ignored (section 7.5, and keep-alives on streams).
    * Header lines ``name: value``. Names are matched without regard to case and are
      reported lower-cased, with the compact forms (section 7.3.3 and later RFCs)
      expanded to their long names: ``i`` call-id, ``f`` from, ``t`` to, ``m`` contact,
      ``v`` via, ``l`` content-length, ``c`` content-type, ``e`` content-encoding,
      ``k`` supported, ``s`` subject, ``o`` event, ``r`` refer-to, ``b`` referred-by,
      ``a`` accept-contact, ``u`` allow-events, ``x`` session-expires, ``y`` identity,
      ``j`` reject-contact, ``d`` request-disposition. Values lose their surrounding
      whitespace. A line starting with SP or HTAB continues the previous header
      (folding); the pieces are joined with one space. A line that is not
      ``name: value`` is skipped and noted in ``defects``.
    * Header bytes are decoded as UTF-8 with ``errors="surrogateescape"``, so any bytes
      decode and the raw bytes stay recoverable (``str.encode("utf-8",
      "surrogateescape")``).
    * Body: ``Content-Length`` bytes after the empty line. Over UDP a message without
      Content-Length takes the rest of the datagram; bytes past Content-Length are
      ignored (noted in ``defects``); a Content-Length larger than what arrived gives the
      partial body and ``truncated=True`` (a snap length or an IP fragment cut it; the
      headers are still worth having).

Addresses (From, To, P-Asserted-Identity, P-Preferred-Identity, Contact)
    Both ``name-addr`` (``"Bob" <sip:bob@example.com>;tag=1``) and ``addr-spec``
    (``sip:bob@example.com;tag=1``) forms are read. In the ``addr-spec`` form
    everything after the first ``;`` belongs to the header, not to the URI
    (section 20.10), so the ``tag`` there is the header's. Quoted display names may
    hold ``<``, ``,`` and escaped quotes. P-Asserted-Identity and P-Preferred-Identity
    may repeat and may list several addresses separated by commas; all are kept.

    The *user* of a ``sip:``/``sips:`` URI is the userinfo before ``@``, without a
    password (``:...``) and cut at the first ``;`` (so ``sip:+4930123;npdi@host``
    gives ``+4930123``), then percent-decoded (``%40`` becomes ``@``; invalid UTF-8
    becomes U+FFFD). A URI without ``@`` has no user (``""``). For a ``tel:`` URI the
    user is the number before any ``;``. Other schemes have no user. IPv6 host
    literals (``sip:bob@[2001:db8::1]:5060``) need no special care: the user ends at
    the first ``@``.

Errors
    :class:`SipError` (a :class:`~lc.common.errors.ParseError`, hence a ValueError) is
    the only exception :func:`parse_sip` raises, whatever the input. Its text says what
    is wrong and where, quoting at most 80 bytes: not a start line, a start line that
    is not UTF-8, a header section over :data:`MAX_HEADER_BYTES`, a missing Call-ID
    or CSeq, a bad CSeq or Content-Length. Everything else is tolerated and, where
    something was dropped, listed in ``SipMessage.defects``.

Streams (RFC 3261 section 18.3)
    :class:`SipStreamFramer` takes the bytes of one direction in any chunking and
    returns each complete message with its offsets in the stream. Over TCP the
    Content-Length header is mandatory: a message without one is taken to have no
    body (counted in ``missing_content_length``). CR/LF between messages (RFC 5626
    keep-alives) are skipped. When the buffer does not start with a start line, the
    framer drops bytes up to the next line that is one (``resync``,
    ``garbage_bytes``). A message longer than ``max_message_bytes`` is dropped
    (``oversized``, ``oversized_bytes``): its body is skipped by its Content-Length
    when that is at most 16 times the cap, else (and for a header section with no
    end in sight) framing resyncs. A message that frames but does not parse is
    dropped (``malformed``). Nothing raises. A line that starts as garbage stays
    garbage to its LF, and empty lines are keep-alives even inside garbage, so the
    messages and counters do not depend on how the stream was cut into chunks
    (oversized header sections aside). Searches resume where the last one stopped,
    so feeding a message byte by byte costs linear time (the DoS note of h11's
    receive buffer). The framer and :func:`looks_like_sip` want a start line with
    single spaces; :func:`parse_sip` also takes runs of spaces.

Speed
    Measured on the development VM (2 vCPU Xeon 2.5 GHz, CPython 3.11, best of 30
    runs, where one ``str.partition`` call costs about 95 ns): :func:`parse_sip` of
    an 848-byte INVITE with 13 headers, a P-Asserted-Identity and SDP about 24 us
    (19 us without the PAI header); :func:`looks_like_sip` 0.75 us on it, 0.12 us on
    an RTP packet. The hot path is one header split, one ``str.partition`` per line,
    dict look-ups and short paths for the usual address shapes; regexes only where
    they run once per message. ``SipMessage`` is a plain slotted class because a
    frozen dataclass would add about 5 us per message.

Deliberately not handled
    SIP over WebSocket or SCTP, multipart bodies (the body is handed over whole),
    Content-Encoding (bodies are not decompressed), URI escapes outside the user part,
    and header semantics beyond the fields of :class:`SipMessage` (Via, Route and
    authentication headers are available raw through ``headers``).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from lc.common.errors import ParseError

__all__ = [
    "COMPACT_FORMS",
    "FRAMER_COUNTERS",
    "MAX_HEADER_BYTES",
    "MAX_MESSAGE_BYTES",
    "SipError",
    "SipMessage",
    "SipStreamFramer",
    "looks_like_sip",
    "parse_sip",
    "uris_of",
    "users_of",
]

#: Largest header section (start line included) :func:`parse_sip` accepts.
MAX_HEADER_BYTES = 65536
#: Default cap on one message (headers and body) in :class:`SipStreamFramer`.
MAX_MESSAGE_BYTES = 65536
#: Longest start line :func:`looks_like_sip` looks at.
_MAX_START_LINE = 4096
_START_LIMIT = _MAX_START_LINE + 1  # with its LF
_MAX_METHOD = 32
_QUOTE_MAX = 80

#: Compact header names and the long names they stand for (RFC 3261 7.3.3; ``o``
#: and ``u`` RFC 6665, ``r`` 3515, ``b`` 3892, ``a``/``j``/``d`` 3841, ``x`` 4028,
#: ``y`` 8224).
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "m": "contact",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "e": "content-encoding",
    "k": "supported",
    "s": "subject",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "a": "accept-contact",
    "u": "allow-events",
    "x": "session-expires",
    "y": "identity",
    "j": "reject-contact",
    "d": "request-disposition",
}

#: Counter names of :class:`SipStreamFramer`, in the order they are reported.
FRAMER_COUNTERS: tuple[str, ...] = (
    "messages",
    "malformed",
    "oversized",
    "oversized_bytes",
    "resync",
    "garbage_bytes",
    "keepalive_bytes",
    "missing_content_length",
)

# RFC 3261 token characters (section 25.1).
_TOKEN_CHARS = b"!%'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_`abcdefghijklmnopqrstuvwxyz~"
_TOKEN_RE = re.compile(r"[!%'*+\-.0-9A-Za-z_`~]+")
# Header names: RFC 7230 tokens, a superset of RFC 3261's, since some stacks send them.
_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FOLD_RE = re.compile(r"[ \t]*\r?\n[ \t]+")
_CONTENT_LENGTH_RE = re.compile(rb"\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I)
_NEWLINES_RE = re.compile(rb"[\r\n]+")
# A start line (RFC 3261 7.1, 7.2) up to its line end: a request line with a token
# method (first a letter, at most 32 characters) and a URI holding a colon, or a
# status line with a code from 100 to 699.
_START_RE = re.compile(
    rb"(?:[A-Za-z][!%'*+\-.0-9A-Za-z_`~]{0,31} [^ :\r\n]*:[^ \r\n]* (?i:SIP/2\.0)"
    rb"|(?i:SIP/2\.0) [1-6][0-9][0-9](?: [^\r\n]*)?)\r?(?:\n|\Z)"
)
# An oversized message's body is skipped by its Content-Length up to this many
# times max_message_bytes; a larger length is not believed (see SipStreamFramer).
_SKIP_FACTOR = 16
_MAX_CSEQ = 0xFFFFFFFF
# Registered methods (RFC 3261 and extensions): a set test spares the token regex.
_METHODS = frozenset(
    (
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    )
)
_METHOD_NAMES = {m: m for m in _METHODS}
_ALPHA = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

# Raw header name -> canonical name; grows with the names seen, up to a bound.
_CANON: dict[str, str] = {}
_CANON_MAX = 4096
# Address header value -> (uri, user, tag): values up to _ADDRESS_CACHE_LEN characters,
# at most _ADDRESS_CACHE of them (emptied when full).
_ADDRESSES: dict[str, tuple[str, str, str]] = {}
_ADDRESS_CACHE = 4096
_ADDRESS_CACHE_LEN = 512
_NO_ADDRESS = ("", "", "")


class SipError(ParseError):
    """Bytes that are not one SIP message; the text says what is wrong and where."""


def _quote(b: bytes | str) -> str:
    """A bounded repr of offending input for error texts."""
    if len(b) > _QUOTE_MAX:
        return f"{b[:_QUOTE_MAX]!r}..."
    return repr(b)


_FIELDS = (
    "is_request",
    "method",
    "status",
    "reason",
    "request_uri",
    "request_user",
    "call_id",
    "cseq_seq",
    "cseq_method",
    "from_uri",
    "from_user",
    "from_tag",
    "to_uri",
    "to_user",
    "to_tag",
    "pai_uris",
    "pai_users",
    "ppi_uris",
    "ppi_users",
    "contact_uri",
    "content_type",
    "content_length",
    "body",
    "headers",
    "truncated",
    "defects",
)


class SipMessage:
    """One parsed SIP request or response (see the module docstring for the rules).

    A slotted class, read-only by convention: a frozen dataclass would enforce it,
    but costs about 5 us per message to build (ten times this class), which the
    hunter pays for every SIP packet. Compares equal field by field. The fields that
    need more than a look at their header (addresses, users, the Contact URI, the
    Request-URI's user, the header tuple) are read when first asked for, so that a
    message whose parties nobody asks about costs less.

    Fields:

    ``is_request``; ``method`` (upper-cased; ``""`` for responses); ``status`` (0 for
    requests); ``reason`` (``""`` for requests); ``request_uri`` as written and
    ``request_user`` (``""`` for responses or URIs without a user); ``call_id``;
    ``cseq_seq``; ``cseq_method`` (upper-cased); ``from_uri``, ``from_user``,
    ``from_tag``; ``to_uri``, ``to_user``, ``to_tag`` (``""`` when absent);
    ``pai_uris``/``pai_users`` and ``ppi_uris``/``ppi_users``: every
    P-Asserted-Identity and P-Preferred-Identity address, in order (users ``""``
    where a URI has none, so the two tuples line up); ``contact_uri`` (first Contact;
    ``"*"`` for the wildcard; ``""`` if none); ``content_type`` (lower-cased media
    type without parameters, ``""`` if none); ``content_length`` (None when absent);
    ``body``; ``headers``: ``(name, value)`` for every header line in order, names
    lower-cased with compact forms expanded, folding undone; ``truncated``: the body
    is shorter than Content-Length says; ``defects``: tolerated faults, one short
    text each.
    """

    __slots__ = (
        "_contact",
        "_contact_uri",
        "_from",
        "_from_a",
        "_headers",
        "_headers_t",
        "_pai",
        "_pai_a",
        "_ppi",
        "_ppi_a",
        "_request_user",
        "_to",
        "_to_a",
        "body",
        "call_id",
        "content_length",
        "content_type",
        "cseq_method",
        "cseq_seq",
        "defects",
        "is_request",
        "method",
        "reason",
        "request_uri",
        "status",
        "truncated",
    )

    is_request: bool
    method: str
    status: int
    reason: str
    request_uri: str
    call_id: str
    cseq_seq: int
    cseq_method: str
    content_type: str
    content_length: int | None
    body: bytes
    truncated: bool
    defects: tuple[str, ...]

    def __init__(
        self,
        is_request: bool,
        method: str,
        status: int,
        reason: str,
        request_uri: str,
        call_id: str,
        cseq_seq: int,
        cseq_method: str,
        from_value: str | None,
        to_value: str | None,
        pai_values: tuple[str, ...],
        ppi_values: tuple[str, ...],
        contact: str | None,
        content_type: str,
        content_length: int | None,
        body: bytes,
        headers: list[tuple[str, str]],
        truncated: bool = False,
        defects: tuple[str, ...] = (),
    ) -> None:
        self.is_request = is_request
        self.method = method
        self.status = status
        self.reason = reason
        self.request_uri = request_uri
        self.call_id = call_id
        self.cseq_seq = cseq_seq
        self.cseq_method = cseq_method
        self.content_type = content_type
        self.content_length = content_length
        self.body = body
        self.truncated = truncated
        self.defects = defects
        # Header values as written (None: absent), read into fields when asked for.
        self._from = from_value
        self._to = to_value
        self._pai = pai_values
        self._ppi = ppi_values
        self._contact = contact
        self._headers = headers
        self._from_a: tuple[str, str, str] | None = None
        self._to_a: tuple[str, str, str] | None = None
        self._pai_a: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._ppi_a: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._contact_uri: str | None = None
        self._request_user: str | None = None
        self._headers_t: tuple[tuple[str, str], ...] | None = None

    def _from_address(self) -> tuple[str, str, str]:
        a = self._from_a
        if a is None:
            a = self._from_a = _NO_ADDRESS if self._from is None else _address(self._from)
        return a

    def _to_address(self) -> tuple[str, str, str]:
        a = self._to_a
        if a is None:
            a = self._to_a = _NO_ADDRESS if self._to is None else _address(self._to)
        return a

    @property
    def from_uri(self) -> str:
        return self._from_address()[0]

    @property
    def from_user(self) -> str:
        return self._from_address()[1]

    @property
    def from_tag(self) -> str:
        return self._from_address()[2]

    @property
    def to_uri(self) -> str:
        return self._to_address()[0]

    @property
    def to_user(self) -> str:
        return self._to_address()[1]

    @property
    def to_tag(self) -> str:
        return self._to_address()[2]

    def _pai_addresses(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        a = self._pai_a
        if a is None:
            a = self._pai_a = _addresses(self._pai) if self._pai else ((), ())
        return a

    def _ppi_addresses(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        a = self._ppi_a
        if a is None:
            a = self._ppi_a = _addresses(self._ppi) if self._ppi else ((), ())
        return a

    @property
    def pai_uris(self) -> tuple[str, ...]:
        return self._pai_addresses()[0]

    @property
    def pai_users(self) -> tuple[str, ...]:
        return self._pai_addresses()[1]

    @property
    def ppi_uris(self) -> tuple[str, ...]:
        return self._ppi_addresses()[0]

    @property
    def ppi_users(self) -> tuple[str, ...]:
        return self._ppi_addresses()[1]

    @property
    def request_user(self) -> str:
        user = self._request_user
        if user is None:
            user = self._request_user = _uri_user(self.request_uri) if self.is_request else ""
        return user

    @property
    def contact_uri(self) -> str:
        uri = self._contact_uri
        if uri is None:
            value = self._contact
            if value is None:
                uri = ""
            elif value == "*":
                uri = "*"
            else:
                uri = _name_addr(_split_list(value)[0] if "," in value else value)[0]
            self._contact_uri = uri
        return uri

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        h = self._headers_t
        if h is None:
            h = self._headers_t = tuple(self._headers)
        return h

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"SipMessage({inner})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipMessage):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable in principle, like a dataclass

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case, compact or long form), or None."""
        name = _canonical(name.strip()) or name
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def header_all(self, name: str) -> tuple[str, ...]:
        """Every value of header ``name``, one per header line, in order.

        Values are not split at commas: ``Via: a, b`` gives one value ``"a, b"``.
        """
        name = _canonical(name.strip()) or name
        return tuple(v for n, v in self.headers if n == name)


def _canonical(raw: str) -> str:
    """The canonical name of a raw header name (the text before the colon); ``""`` if
    it is not a token. Results are cached, up to a bound."""
    canon = _CANON.get(raw)
    if canon is None:
        name = raw.rstrip(" \t")
        if _NAME_RE.fullmatch(name):
            low = name.lower()
            canon = COMPACT_FORMS.get(low, low)
        else:
            canon = ""
        if len(_CANON) < _CANON_MAX:
            _CANON[raw] = canon
    return canon


# --------------------------------------------------------------------------- start lines


def _is_start_line(line: bytes | bytearray, pos: int = 0, end: int | None = None) -> bool:
    """Whether ``line[pos:end]`` (a line without its LF) is a SIP request or status line."""
    if end is None:
        end = len(line)
    return _START_RE.match(line, pos, end) is not None


def _could_start(prefix: bytes) -> bool:
    """Whether an incomplete first line could still grow into a start line."""
    if not prefix:
        return True
    if prefix[0] not in _ALPHA:
        return False
    sp = prefix.find(b" ")
    tok = prefix if sp < 0 else prefix[:sp]
    if b"SIP/2.0".startswith(tok.upper()):
        return True
    return len(tok) <= _MAX_METHOD and not tok.translate(None, _TOKEN_CHARS)


def looks_like_sip(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` starts with a SIP request or status line.

    Only the first line is examined (at most 4096 bytes): ``METHOD SP uri SP SIP/2.0``
    with a token method starting with a letter and a URI holding a ``:``, or
    ``SIP/2.0 SP [1-6]DD [SP reason]`` (the version in any case), followed by CRLF,
    LF or the end of the data. One precompiled regex match; RTP, DNS and other
    binary payloads fail on their first byte.
    """
    if not data or data[0] not in _ALPHA:
        return False
    if not isinstance(data, bytes):
        data = bytes(data[:_START_LIMIT])
    m = _START_RE.match(data, 0, _START_LIMIT)
    # A match that ends at the limit (not at a LF) is a longer line cut short.
    return m is not None and (len(data) <= _START_LIMIT or data[m.end() - 1] == 10)


# --------------------------------------------------------------------------- addresses


def _split_list(value: str) -> list[str]:
    """Split a header value at commas outside quoted strings and ``<...>``."""
    if "," not in value:
        return [value]
    parts: list[str] = []
    start = 0
    quoted = angle = escape = False
    for i, ch in enumerate(value):
        if quoted:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p for p in (p.strip() for p in parts) if p]


def _lt_after_display(value: str) -> int:
    """Index of the ``<`` opening the URI, skipping a quoted display name; -1 if none."""
    lt = value.find("<")
    if lt < 0:
        return -1
    q = value.find('"', 0, lt)
    if q < 0:
        return lt
    # A quoted display name before the '<' may hold '<' itself: find its closing
    # quote, one not escaped by an odd number of backslashes.
    i = q + 1
    while True:
        e = value.find('"', i)
        if e < 0:
            return lt  # unterminated quote: ignore it, as tolerant parsers do
        k = e - 1
        while k > q and value[k] == "\\":
            k -= 1
        if (e - 1 - k) % 2 == 0:
            return value.find("<", e + 1)
        i = e + 1


def _name_addr(value: str) -> tuple[str, str]:
    """``(uri, header-params)`` of a name-addr or addr-spec header value."""
    lt = _lt_after_display(value)
    if lt >= 0:
        gt = value.find(">", lt + 1)
        if gt < 0:
            return value[lt + 1 :].strip(), ""
        return value[lt + 1 : gt].strip(), value[gt + 1 :]
    semi = value.find(";")
    if semi >= 0:
        return value[:semi].strip(), value[semi:]
    return value.strip(), ""


def _tag(params: str) -> str:
    """The ``tag`` parameter among header parameters (``;a=b;tag=x``); ``""`` if none."""
    if params.startswith(";tag="):  # the usual spelling, first
        v = params[5:]
        semi = v.find(";")
        return (v[:semi] if semi >= 0 else v).strip()
    if "tag" not in params.lower():
        return ""
    for p in params.split(";"):
        k, _, v = p.partition("=")
        if k.strip().lower() == "tag":
            return v.strip()
    return ""


def _tel_number(uri: str) -> str:
    num = uri[4:]
    semi = num.find(";")
    if semi >= 0:
        num = num[:semi]
    num = num.strip()
    return unquote(num) if "%" in num else num


def _uri_user(uri: str) -> str:
    """The user of a sip:/sips: URI, or the number of a tel: URI (see module docstring)."""
    if uri[:4] == "sip:":  # the usual case, first
        at = uri.find("@")
        if at < 0:
            return ""
        user = uri[4:at]
        if ":" not in user and ";" not in user and "%" not in user:
            return user
    at = uri.find("@")
    if at < 0:
        return _tel_number(uri) if uri[:4].lower() == "tel:" else ""
    colon = uri.find(":", 0, at)
    if colon < 0:
        return ""
    scheme = uri[:colon].lower()
    if scheme != "sip" and scheme != "sips":
        return _tel_number(uri) if scheme == "tel" else ""
    user = uri[colon + 1 : at]
    cut = user.find(":")  # a password follows
    if cut >= 0:
        user = user[:cut]
    cut = user.find(";")
    if cut >= 0:
        user = user[:cut]
    return unquote(user) if "%" in user else user


def _address(value: str) -> tuple[str, str, str]:
    """``(uri, user, tag)`` of a name-addr or addr-spec value (From, To, PAI, ...), from
    a bounded cache: a dialog's From and To come back in every message."""
    hit = _ADDRESSES.get(value)
    if hit is None:
        hit = _read_address(value)
        if len(value) <= _ADDRESS_CACHE_LEN:
            if len(_ADDRESSES) >= _ADDRESS_CACHE:
                _ADDRESSES.clear()
            _ADDRESSES[value] = hit
    return hit


def _read_address(value: str) -> tuple[str, str, str]:
    """``(uri, user, tag)`` of a name-addr or addr-spec value (From, To, PAI, ...).

    The usual shapes (``<sip:user@host>;tag=x`` with an optional plain or quoted display
    name) take a short path; everything else goes through the general helpers.
    """
    lt = value.find("<")
    if lt >= 0:
        q = value.find('"', 0, lt)
        if q >= 0:  # a quoted display name: '<' counts only after its closing quote
            q = value.find('"', q + 1)
            if q < 0 or value[q - 1] == "\\":
                lt = -1  # unterminated or escaped quotes: the general path
            elif q > lt:
                lt = value.find("<", q + 1)
        if lt >= 0:
            gt = value.find(">", lt + 1)
            if gt >= 0:
                uri = value[lt + 1 : gt]
                if uri[:1] == " " or uri[-1:] == " ":
                    uri = uri.strip()
                params = value[gt + 1 :]
                return uri, _uri_user(uri), _tag(params) if params else ""
    uri, params = _name_addr(value)
    return uri, _uri_user(uri), _tag(params) if params else ""


def _addresses(values: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """URIs and users of every address in comma-separated, possibly repeated values."""
    uris: list[str] = []
    users: list[str] = []
    for v in values:
        for item in _split_list(v) if "," in v else (v,):
            uri, user, _ = _address(item)
            if uri:
                uris.append(uri)
                users.append(user)
    return tuple(uris), tuple(users)


def users_of(msg: SipMessage) -> tuple[str, ...]:
    """Every user a filter may match: From, To, Request-URI, P-Asserted- and
    P-Preferred-Identity users, non-empty and without duplicates, in that order."""
    seen = dict.fromkeys((msg.from_user, msg.to_user, msg.request_user))
    seen.update(dict.fromkeys(msg.pai_users))
    seen.update(dict.fromkeys(msg.ppi_users))
    seen.pop("", None)
    return tuple(seen)


def uris_of(msg: SipMessage) -> tuple[str, ...]:
    """Every whole URI a filter may match, chosen and ordered as in :func:`users_of`."""
    seen = dict.fromkeys((msg.from_uri, msg.to_uri, msg.request_uri))
    seen.update(dict.fromkeys(msg.pai_uris))
    seen.update(dict.fromkeys(msg.ppi_uris))
    seen.pop("", None)
    return tuple(seen)


# --------------------------------------------------------------------------- parsing


def parse_sip(data: bytes | bytearray | memoryview) -> SipMessage:
    """Parse exactly one SIP message (a UDP datagram, or one framed from a stream).

    Raises:
        SipError: the bytes are not a SIP message; nothing else is ever raised.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    return _parse(data)


def _parse(data: bytes) -> SipMessage:
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    n = len(data)
    if not n:
        raise SipError("empty message: no start line")

    # The header section ends at the first empty line (CRLF or bare LF).
    i = data.find(b"\n\r\n", 0, MAX_HEADER_BYTES + 3)
    j = data.find(b"\n\n", 0, i + 1 if i >= 0 else MAX_HEADER_BYTES + 2)
    if j >= 0:
        head_end, body_start = j + 1, j + 2
    elif i >= 0:
        head_end, body_start = i + 1, i + 3
    elif n > MAX_HEADER_BYTES:
        head_end = body_start = n + 1  # refused just below
    else:
        head_end = body_start = n
    if head_end > MAX_HEADER_BYTES:
        raise SipError(
            f"header section too large: no empty line in the first {MAX_HEADER_BYTES} bytes"
        )

    # One decode for the whole header section; the start line must be UTF-8, the
    # header lines may hold anything (surrogateescape).
    try:
        head = data[:head_end].decode("utf-8")
    except UnicodeDecodeError:
        head = _decode_head(data, head_end)
    nl = head.find("\n")
    if nl >= 0:
        start = head[:nl]
        text = head[nl + 1 :]
    else:
        start = head
        text = ""
    if start[-1:] == "\r":
        start = start[:-1]

    if start[:8].upper() == "SIP/2.0 ":
        code = start[8:11]
        if not (
            len(code) == 3
            and code.isdigit()
            and code.isascii()
            and (len(start) == 11 or start[11] == " ")
        ):
            raise SipError(f"bad status line (want SIP/2.0 SP 3DIGIT): {_quote_start(start)}")
        status = int(code)
        if not 100 <= status <= 699:
            raise SipError(f"status code {status} out of range 100..699: {_quote_start(start)}")
        is_request = False
        method = request_uri = ""
        reason = start[12:].strip()
    else:
        parts = start.split(" ")
        if len(parts) != 3:
            parts = [p for p in parts if p]
        if len(parts) != 3 or parts[2].upper() != "SIP/2.0":
            raise SipError(f"not a SIP start line: {_quote_start(start)}")
        method, request_uri, _ = parts
        known = _METHOD_NAMES.get(method)
        if known is not None:
            method = known  # one string object for every message (held summaries share it)
        else:
            if len(method) > _MAX_METHOD or not _TOKEN_RE.fullmatch(method):
                raise SipError(f"bad method in request line: {_quote_start(start)}")
            method = method.upper()
        if ":" not in request_uri:
            raise SipError(f"Request-URI has no scheme: {_quote_start(start)}")
        is_request = True
        status = 0
        reason = ""

    # Header lines.
    defects: list[str] = []
    if "\n " in text or "\n\t" in text:
        text = _FOLD_RE.sub(" ", text)
    headers: list[tuple[str, str]] = []
    append = headers.append
    canon_get = _CANON.get
    bad = 0
    for line in text.split("\n"):
        name, sep, value = line.partition(":")
        if sep:
            name = canon_get(name) or _canonical(name)
            if name:
                append((name, value.strip()))
                continue
        if line.strip():
            bad += 1
    if bad:
        defects.append(f"{bad} header lines without a name and colon ignored")
    first = dict(reversed(headers))
    get = first.get

    call_id = get("call-id")
    if not call_id:
        raise SipError(
            "missing mandatory header Call-ID" if call_id is None else "empty Call-ID header"
        )
    cseq = get("cseq")
    if cseq is None:
        raise SipError("missing mandatory header CSeq")
    seq, _, cseq_method = cseq.partition(" ")
    if cseq_method not in _METHODS or not seq.isdigit() or not seq.isascii() or len(seq) > 10:
        cseq_seq, cseq_method = _cseq(cseq)
    else:
        cseq_seq = int(seq)
        if cseq_seq > _MAX_CSEQ:
            _cseq(cseq)  # raises
        cseq_method = _METHOD_NAMES[cseq_method]

    from_value = get("from")
    if from_value is None:
        defects.append("no From header")
    to_value = get("to")
    if to_value is None:
        defects.append("no To header")
    if "p-asserted-identity" in first:
        pai = tuple([v for k, v in headers if k == "p-asserted-identity"])
    else:
        pai = ()
    if "p-preferred-identity" in first:
        ppi = tuple([v for k, v in headers if k == "p-preferred-identity"])
    else:
        ppi = ()

    value = get("content-type")
    if value is None:
        content_type = ""
    else:
        semi = value.find(";")
        content_type = (value[:semi] if semi >= 0 else value).strip().lower()

    value = get("content-length")
    truncated = False
    if value is None:
        content_length = None
        body = data[body_start:]
    else:
        if not (value.isdigit() and value.isascii() and len(value) <= 10):
            raise SipError(f"bad Content-Length header {_quote(value)}")
        content_length = int(value)
        have = n - body_start
        if content_length == have:
            body = data[body_start:]
        elif content_length < have:
            body = data[body_start : body_start + content_length]
            if data[body_start + content_length :].strip(b"\r\n\0 "):
                defects.append(f"{have - content_length} bytes after the body ignored")
        else:
            body = data[body_start:]
            truncated = True

    return SipMessage(
        is_request,
        method,
        status,
        reason,
        request_uri,
        call_id,
        cseq_seq,
        cseq_method,
        from_value,
        to_value,
        pai,
        ppi,
        get("contact"),
        content_type,
        content_length,
        body,
        headers,
        truncated,
        tuple(defects),
    )


def _decode_head(data: bytes, head_end: int) -> str:
    """The header section as text when it is not all UTF-8: the start line must be."""
    nl = data.find(b"\n", 0, head_end)
    raw_start = data[: nl if nl >= 0 else head_end]
    if raw_start[-1:] == b"\r":
        raw_start = raw_start[:-1]
    try:
        raw_start.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SipError(
            f"start line is not valid UTF-8 (byte {e.start}): {_quote(raw_start)}"
        ) from None
    return data[:head_end].decode("utf-8", "surrogateescape")


def _quote_start(start: str) -> str:
    return _quote(start.encode("utf-8"))


def _cseq(value: str) -> tuple[int, str]:
    """CSeq number and method (upper-cased), checked; the general path."""
    parts = value.split()
    if (
        len(parts) != 2
        or not parts[0].isdigit()
        or not parts[0].isascii()
        or len(parts[0]) > 10
        or not _TOKEN_RE.fullmatch(parts[1])
    ):
        raise SipError(f"bad CSeq header {_quote(value)}: want '<number> <METHOD>'")
    seq = int(parts[0])
    if seq > _MAX_CSEQ:
        raise SipError(f"bad CSeq header {_quote(value)}: number over 2**32-1")
    return seq, parts[1].upper()


# --------------------------------------------------------------------------- streams


class SipStreamFramer:
    """Frames one direction of a SIP-over-TCP byte stream into messages (sans-IO).

    ``feed(data)`` returns every message completed by ``data`` as
    ``(start_offset, end_offset, message)``; offsets count every byte ever fed,
    from 0, and ``end_offset`` is exclusive. Bytes that are not (yet) part of a
    complete message stay buffered (``buffered``). See the module docstring for
    keep-alives, resync and the caps; ``counters`` (names in
    :data:`FRAMER_COUNTERS`) say what was dropped and why. Never raises on input.
    """

    __slots__ = (
        "_base",
        "_buf",
        "_garbage",
        "_in_line",
        "_line_end",
        "_scan",
        "_skip",
        "_total",
        "counters",
        "max_message_bytes",
    )

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        if max_message_bytes < 64:
            raise ValueError(f"max_message_bytes must be at least 64, not {max_message_bytes}")
        self.max_message_bytes = max_message_bytes
        self.counters: dict[str, int] = dict.fromkeys(FRAMER_COUNTERS, 0)
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self._scan = 0  # where the current search (line end or empty line) resumes
        self._line_end = -1  # end of a validated start line at _buf[0], or -1
        self._total = -1  # length of the message at _buf[0] once its head is read, or -1
        self._garbage = False  # inside a run of discarded bytes (one resync per run)
        self._skip = 0  # bytes of an oversized body still to drop
        self._in_line = False  # inside a garbage line whose end has not arrived

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a complete message."""
        return len(self._buf)

    @property
    def offset(self) -> int:
        """Stream offset of the next byte to be fed (= bytes fed so far)."""
        return self._base + len(self._buf)

    def _drop(self, count: int) -> None:
        del self._buf[:count]
        self._base += count
        self._scan = 0
        self._line_end = -1
        self._total = -1

    def _discard_garbage(self, count: int) -> None:
        if count <= 0:
            return
        if not self._garbage:
            self._garbage = True
            self.counters["resync"] += 1
        self.counters["garbage_bytes"] += count
        self._drop(count)

    def _resync(self, pos: int) -> None:
        """Drop ``_buf[:pos]`` (a line start) and following lines up to a start line."""
        buf = self._buf
        while True:
            if pos < len(buf) and buf[pos] in (10, 13):
                break  # an empty line: keep-alive bytes, counted as such by feed()
            nl = buf.find(b"\n", pos)
            if nl < 0:
                # An incomplete last line: keep it if it may be the next start line.
                if len(buf) - pos > _MAX_START_LINE or not _could_start(bytes(buf[pos : pos + 40])):
                    pos = len(buf)
                    self._in_line = True  # the rest of this line is garbage too
                break
            if nl - pos <= _MAX_START_LINE and _is_start_line(buf, pos, nl):
                break
            pos = nl + 1
        self._discard_garbage(pos)

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[int, int, SipMessage]]:
        """Add bytes of the stream; return the messages they complete, in order."""
        buf = self._buf
        if data:
            buf += data
        out: list[tuple[int, int, SipMessage]] = []
        counters = self.counters
        cap = self.max_message_bytes
        while buf:
            if self._in_line:  # finish dropping a garbage line
                nl = buf.find(b"\n")
                if nl < 0:
                    self._discard_garbage(len(buf))
                    break
                self._in_line = False
                self._resync(nl + 1)
                continue
            skip = self._skip
            if skip:  # the body of an oversized message
                k = min(skip, len(buf))
                counters["oversized_bytes"] += k
                self._skip = skip - k
                self._drop(k)
                continue
            total = self._total
            if total >= 0:  # head read: wait for the body
                if len(buf) < total:
                    break
                raw = bytes(buf[:total])
                start = self._base
                self._drop(total)
                try:
                    msg = _parse(raw)
                except SipError:
                    counters["malformed"] += 1
                    continue
                counters["messages"] += 1
                out.append((start, start + total, msg))
                continue

            line_end = self._line_end
            if line_end < 0:  # at a message boundary: find and check the start line
                if buf[0] in (10, 13):
                    m = _NEWLINES_RE.match(buf)
                    k = m.end() if m else 0
                    counters["keepalive_bytes"] += k
                    self._drop(k)
                    continue
                nl = buf.find(b"\n", self._scan)
                if nl < 0:
                    if len(buf) > _MAX_START_LINE or not _could_start(bytes(buf[:40])):
                        self._resync(0)
                    else:
                        self._scan = len(buf)
                    break
                if nl > _MAX_START_LINE or not _is_start_line(buf, 0, nl):
                    self._resync(nl + 1)
                    continue
                self._garbage = False
                self._line_end = line_end = nl + 1
                self._scan = nl  # the empty-line search starts at the start line's LF

            # Find the empty line that ends the header section.
            scan = self._scan
            i = buf.find(b"\n\r\n", scan)
            j = buf.find(b"\n\n", scan, i + 1 if i >= 0 else len(buf))
            if j >= 0:
                head_len = j + 2
            elif i >= 0:
                head_len = i + 3
            else:
                if len(buf) > cap:
                    counters["oversized"] += 1
                    counters["oversized_bytes"] += line_end
                    self._drop(line_end)
                    self._resync(0)
                    continue
                self._scan = max(line_end - 1, len(buf) - 2)
                break
            m = _CONTENT_LENGTH_RE.search(buf, line_end - 1, head_len)
            if m is None:
                counters["missing_content_length"] += 1
                body_len = 0
            else:
                v = m.group(1).strip()
                if not v.isdigit() or len(v) > 10:
                    counters["malformed"] += 1
                    self._drop(head_len)
                    continue
                body_len = int(v)
            if head_len + body_len > cap:
                # Too big to keep: drop it. The body is skipped by its length when that
                # is plausible, so that the next message is found even if the body
                # does not end with a line end; an absurd length is not trusted (it
                # would blind the framer), and resync finds the next message instead.
                counters["oversized"] += 1
                counters["oversized_bytes"] += head_len
                self._drop(head_len)
                if body_len <= cap * _SKIP_FACTOR:
                    self._skip = body_len
                continue
            self._total = head_len + body_len
        return out
