"""A passive HTTP/1.0 and 1.1 observer over the two byte streams of one TCP connection, sans-IO.

The caller (the hunter's HTTP mode) reassembles each direction of a connection and
feeds the bytes as they become contiguous, with their capture timestamps (int ns):

    conn = HttpConnection(max_body=65536)
    for event in conn.feed_client(data, ts_ns): ...   # HttpRequest, HttpTransaction
    for event in conn.feed_server(data, ts_ns): ...   # HttpTransaction
    conn.gap_client(nbytes, ts_ns)                      # bytes the capture missed
    conn.end_client(ts_ns); conn.end_server(ts_ns)    # FIN of one direction
    conn.close(ts_ns)                                   # the connection is gone

Nothing here reads a clock, a socket or a file. Every method returns the events it
completed; none raises on any input bytes (see Errors).

Events
    :class:`HttpRequest` when a request is complete, or earlier, as soon as
    ``max_body`` bytes of its body were examined (then ``complete`` is still False and
    the object keeps counting ``body_seen`` until the request ends): everything a
    filter can look at is known at that point. :class:`HttpTransaction` when a final
    response is complete: the request it answers (pipelined requests are paired with
    their responses in order) and the response, with the 1xx interim statuses seen in
    between (``100 Continue``). Requests that never got a response, and responses
    without a request (a capture that began mid-connection), come out as transactions
    with ``response`` or ``request`` None, at the latest from :meth:`~HttpConnection.close`.

Framing (RFC 9112 section 6), done here rather than by llhttp
    Message heads end at the first empty line (CRLF CRLF, bare LF tolerated). A request
    has a body if it says ``Transfer-Encoding: chunked`` (last coding) or has a
    ``Content-Length``; otherwise none. A response to HEAD, a 1xx, 204 or 304 response
    has no body; otherwise chunked, then Content-Length, then everything until the
    server closes. Transfer-Encoding wins over Content-Length (flagged as the defect
    ``cl_and_te``: a smuggling sign). A ``101`` response or a 2xx answer to CONNECT
    turns the connection into a tunnel: nothing after it is parsed (``tunnel``).

    The head itself (request or status line, header fields, obs-fold continuation lines,
    token and character rules) is parsed by llhttp through ``httptools``, one head at a
    time, with lenient header values and optional CR. llhttp knows only registered
    methods and ASCII targets; a request line it refuses for that reason alone, that
    lc's own request-line rule accepts (any token method, any target without blanks or
    controls, such as raw UTF-8), is parsed again with a neutral request line so that
    its header fields still get llhttp's checks. Why not llhttp for the framing too:
    httptools reports no byte offsets, so it cannot be told that a response answers a
    HEAD (it would swallow the next response as body), and after an error nothing says
    where to resume. Measured in ``bench/http_parse_bench.py``.

Resynchronisation and giving up
    The first bytes of a direction must start a message (after optional empty lines):
    its first line must be a request line (client) or status line (server). If the
    client's are not, or the server's are not before the client sent any request (TLS
    ``0x16``, SSH, POP3 and SMTP banners...), the whole connection is marked not HTTP at
    once (``not_http``) and nothing more is parsed in either direction; a server that
    answers HTTP requests with something else is given up (``gave_up``) and the
    requests stay unanswered. With ``midstream=True`` (the caller saw no SYN: the
    capture began mid-connection) text that does not start a message is taken for the
    middle of one and skipped instead; binary is still not HTTP.

    Later, a malformed head, a bad chunk or a gap that cannot be skipped exactly sends
    that direction looking for the next line that starts a message (``resyncs``,
    ``skipped_bytes``); after ``max_resync`` bytes without one it gives up (``gave_up``),
    and if no message was ever parsed on the client side the connection is marked not
    HTTP. When a response head is lost (a status line with bad header fields, a head
    over ``max_head``, a gap), the oldest unanswered request is taken as the one whose
    response it was; junk that does not even start with a status line loses none.

Bounds (constructor arguments, defaults below)
    ``max_head``: bytes of one message head (and of a chunked trailer section);
    ``max_body``: bytes of each body examined and kept (dechunked, not decompressed),
    the rest is counted but not kept (``body_truncated``); ``max_pending``: requests
    waiting for their response that are kept whole for their transactions; past that,
    only their method is kept, so that pairing (and the HEAD rule) stays right, and
    their transactions come out without the request (``pending_overflow``; the request
    events were emitted as usual); past 16 times that, the oldest is given up as
    unanswered and later pairs may drift (``pending_dropped``); ``max_resync``: bytes
    scanned for a message start before giving up. Lengths from the wire are only ever
    counted down, never allocated: Content-Length is limited to 18 digits and chunk
    sizes to 16 hex digits. The buffer of a direction holds at most one unfinished
    head or line. So one connection holds at most about
    ``(max_pending + 3) * max_head + (max_pending + 1) * max_body`` bytes of wire data
    (1.1 MiB with the defaults), plus Python's overhead per header field.

Counters
    ``counters`` (a dict of ints, shared if the caller passes one in, so that a mode can
    sum all connections in one place): ``requests``, ``responses``, ``informational``,
    ``transactions``, ``unanswered``, ``orphan_responses``, ``malformed``,
    ``oversized_heads``, ``bad_chunks``, ``resyncs``, ``skipped_bytes``, ``gaps``,
    ``gave_up``, ``not_http``, ``tunnels``, ``pending_overflow``, ``pending_dropped``,
    ``truncated_bodies``.

Strings
    Text fields are decoded as UTF-8 with ``surrogateescape`` (no byte is lost, filters
    see everything); header fields stay bytes. Put them through
    :func:`lc.common.text.wire_text` or ``log_text`` before they leave the process
    (:meth:`HttpTransaction.ecs` does).

Errors
    Only :class:`HttpError` (a :class:`~lc.common.errors.ParseError`) is raised, and only
    by the one-message helpers :func:`parse_request_head` and
    :func:`parse_response_head`. :class:`HttpConnection` counts bad input and moves on;
    its constructor raises :class:`~lc.common.errors.ValidationError` for a bad limit.
"""

from __future__ import annotations

import re
import zlib
from collections import deque
from collections.abc import Sequence

import httptools

from lc.common.errors import ParseError, ValidationError
from lc.common.text import wire_text

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_HEAD",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_RESYNC",
    "HttpConnection",
    "HttpError",
    "HttpEvent",
    "HttpRequest",
    "HttpResponse",
    "HttpTransaction",
    "looks_like_http_request",
    "parse_request_head",
    "parse_response_head",
]

DEFAULT_MAX_BODY = 65536
DEFAULT_MAX_HEAD = 32768
DEFAULT_MAX_PENDING = 8
DEFAULT_MAX_RESYNC = 256 * 1024

_COUNTERS = (
    "requests",
    "responses",
    "informational",
    "transactions",
    "unanswered",
    "orphan_responses",
    "malformed",
    "oversized_heads",
    "bad_chunks",
    "resyncs",
    "skipped_bytes",
    "gaps",
    "gave_up",
    "not_http",
    "tunnels",
    "pending_overflow",
    "pending_dropped",
    "truncated_bodies",
)

#: Past max_pending waiting requests, this many times more are kept as placeholders.
_PLACEHOLDERS_PER_PENDING = 16
#: Interim statuses kept per transaction (more are counted, not kept).
_MAX_INTERIM = 8
#: A chunk-size line (size, extensions) longer than this is an error.
_MAX_CHUNK_LINE = 1024
_MAX_CL_DIGITS = 18
_MAX_CHUNK_DIGITS = 16

_EMPTY_LINE = re.compile(rb"\n\r?\n")
_TCHAR = rb"!#$%&'*+.^_`|~0-9A-Za-z-"
# lc's own rule for a request line: any token method, a target of any bytes but space,
# CR and LF (8-bit bytes allowed; controls too, flagged ``target_controls``: lenient
# servers take them, and a request line refused for them must not hide the connection
# from the filters), HTTP/d.d.
_REQUEST_LINE = re.compile(rb"([" + _TCHAR + rb"]{1,64}) ([^\x20\r\n]+) HTTP/(1)\.([0-9])\r?\n")
_CONTROLS = re.compile(rb"[\x00-\x1f\x7f]")
_METHOD_PREFIX = re.compile(rb"[" + _TCHAR + rb"]{1,64}( |\Z)")
_RESPONSE_START = re.compile(rb"HTTP/1\.[0-9] [0-9]{3}[ \r\n]")
_VERSION_TAIL = re.compile(rb"HTTP/1\.[0-9]\r?\n")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_NEUTRAL_LINE = b"GET / HTTP/%d.%d\r\n"

# Direction states.
_START = 0  # expecting a message head (nothing of it buffered yet, or part of it)
_BODY_LEN = 1  # Content-Length body: _remaining bytes to go
_CHUNK_SIZE = 2  # expecting a chunk-size line
_CHUNK_DATA = 3  # _remaining bytes of chunk data to go
_CHUNK_END = 4  # expecting the CRLF after chunk data
_TRAILERS = 5  # expecting the trailer section (or its empty line)
_BODY_CLOSE = 6  # body until the server closes
_RESYNC = 7  # looking for the next message start
_DEAD = 8  # given up (or not HTTP): bytes are ignored
_TUNNEL = 9  # after an upgrade or CONNECT: not HTTP any more, not an error

_STATE_NAMES = (
    "start",
    "body",
    "chunk-size",
    "chunk-data",
    "chunk-end",
    "trailers",
    "body-until-close",
    "resync",
    "dead",
    "tunnel",
)


class HttpError(ParseError):
    """Bytes that are not a valid HTTP/1.x message head."""


def _head_end(buf: bytearray, start: int) -> int:
    """Where the first empty line at or after ``start`` ends (CRLF or bare LF), or -1."""
    i = buf.find(b"\n\r\n", start)
    if i < 0:
        j = buf.find(b"\n\n", start)
        return j + 2 if j >= 0 else -1
    j = buf.find(b"\n\n", start, i + 1)
    return j + 2 if j >= 0 else i + 3


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


class _Message:
    """What requests and responses share. Read-only for consumers."""

    __slots__ = (
        "_body",
        "_ctype",
        "_headers",
        "_stripped",
        "body_declared",
        "body_seen",
        "body_truncated",
        "chunked",
        "complete",
        "defects",
        "end_ts_ns",
        "head",
        "ts_ns",
        "version",
    )

    version: str
    """``"1.1"``, ``"1.0"``."""
    head: bytes
    """The head as it was sent (start line to the empty line), what ``keyword`` filters
    search besides the body."""
    body_declared: int | None
    """The Content-Length, if the body was framed by one."""
    body_seen: int
    """Body bytes seen (after dechunking; bytes lost in capture gaps not included)."""
    body_truncated: bool
    """More than ``max_body`` body bytes: only the first ``max_body`` are kept."""
    chunked: bool
    complete: bool
    """The message ended where its framing says (False: cut by a gap, close or error)."""
    defects: tuple[str, ...]
    """Tolerated faults: ``cl_and_te``, ``gap``, ``duplicate_host``, ``incomplete``,
    ``target_controls``..."""
    ts_ns: int
    """Capture time of the segment that carried the first byte."""
    end_ts_ns: int
    """Capture time of the segment that completed it (or of the end that cut it)."""

    def __init__(
        self,
        version: str,
        headers: Sequence[tuple[bytes, bytes]],
        ts_ns: int,
        head: bytes = b"",
        ctype: bytes | None = None,
    ):
        self.version = version
        self._headers = headers  # as llhttp gave them: blanks after a value kept
        self._stripped = False
        self.head = head
        self._ctype: bytes | str | None = ctype  # the Content-Type value, media type once read
        self.body_declared = None
        self.body_seen = 0
        self.body_truncated = False
        self.chunked = False
        self.complete = False
        self.defects = ()
        self.ts_ns = ts_ns
        self.end_ts_ns = ts_ns
        self._body = bytearray()

    @property
    def headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """Header fields in wire order: name as sent, value without surrounding blanks
        (obs-fold continuation lines joined). Made on first use."""
        h = self._headers
        if not self._stripped:
            h = self._headers = tuple((n, v.strip(b" \t")) for n, v in h)
            self._stripped = True
        return h  # type: ignore[return-value]

    @property
    def content_type(self) -> str:
        """The Content-Type's media type, lower case, parameters stripped (``""`` if none)."""
        c = self._ctype
        if c is None:
            return ""
        if type(c) is bytes:
            c = self._ctype = _mime(c)
        return c  # type: ignore[return-value]

    @property
    def body(self) -> bytes:
        """The examined body prefix (at most ``max_body`` bytes, dechunked)."""
        return bytes(self._body)

    def decoded_body(self, limit: int | None = None) -> bytes | None:
        """The examined body with its Content-Encoding undone (gzip, x-gzip, deflate),
        at most ``limit`` bytes (default: as many as ``body`` holds, at least 64 KiB).

        The body as sent when it has no Content-Encoding (or ``identity``); None for
        an encoding lc cannot undo (``br``, ``zstd``, several) or bytes that do not
        decode. A body cut at ``max_body`` decodes as far as it goes. Computed on each
        call, never in the parsing path; the output bound holds whatever the ratio.
        """
        coding = (self.header("content-encoding") or "identity").strip().lower()
        raw = bytes(self._body)
        if limit is None:
            limit = max(len(raw), 65536)
        if coding in ("", "identity"):
            return raw[:limit]
        if coding in ("gzip", "x-gzip"):
            decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            # RFC 9110 says zlib format; some servers send raw deflate.
            wbits = zlib.MAX_WBITS if raw[:1] and (raw[0] & 0x0F) == 8 else -zlib.MAX_WBITS
            decoder = zlib.decompressobj(wbits=wbits)
        else:
            return None
        try:
            return decoder.decompress(raw, limit) if limit > 0 else b""
        except zlib.error:
            return None

    def header(self, name: str) -> str | None:
        """The first value of the header field ``name`` (any case), decoded; or None."""
        key = name.lower().encode("ascii")
        for n, v in self.headers:
            if n.lower() == key:
                return _text(v)
        return None

    def header_all(self, name: str) -> list[str]:
        """Every value of the header field ``name`` (any case), decoded, in wire order."""
        key = name.lower().encode("ascii")
        return [_text(v) for n, v in self.headers if n.lower() == key]

    def _defect(self, name: str) -> None:
        if name not in self.defects:
            self.defects = (*self.defects, name)


class HttpRequest(_Message):
    """One request: its head, examined body and framing facts."""

    __slots__ = (
        "_emitted",
        "_ja4h",
        "_referer",
        "_split",
        "_ua",
        "host",
        "method",
        "target",
    )

    method: str
    """As sent (methods are case-sensitive)."""
    target: str
    """The request-target as sent (``url.original``)."""
    host: str
    """The Host header without its port (IPv6 literals keep their brackets); for an
    absolute-form target without Host, the target's host."""

    # Read on demand (most requests are judged on their host and target only).
    @property
    def path(self) -> str:
        """The target's path (``*`` for OPTIONS *, ``""`` for CONNECT's authority form)."""
        return self._target_parts()[0]

    @property
    def query(self) -> str:
        """The target's query, without ``?`` (``""`` if none)."""
        return self._target_parts()[1]

    def _target_parts(self) -> tuple[str, str, str]:
        split = self._split
        if split is None:
            split = self._split = _split_target(self.target)
        return split

    @property
    def user_agent(self) -> str:
        ua = self._ua
        return _text(ua) if ua is not None else ""

    @property
    def referrer(self) -> str:
        ref = self._referer
        return _text(ref) if ref is not None else ""

    def __repr__(self) -> str:
        return (
            f"HttpRequest({self.method} {self.target!r} HTTP/{self.version} host={self.host!r}"
            f" body={self.body_seen}{'+' if self.body_truncated else ''}"
            f"{'' if self.complete else ' incomplete'})"
        )


class HttpResponse(_Message):
    """One response (final or interim)."""

    __slots__ = ("reason", "status")

    status: int
    reason: str

    def __repr__(self) -> str:
        return (
            f"HttpResponse({self.status} {self.reason!r} HTTP/{self.version}"
            f" body={self.body_seen}{'+' if self.body_truncated else ''}"
            f"{'' if self.complete else ' incomplete'})"
        )


class HttpTransaction:
    """A request and its final response (either may be None, never both)."""

    __slots__ = ("interim", "request", "response")

    def __init__(
        self,
        request: HttpRequest | None,
        response: HttpResponse | None,
        interim: tuple[int, ...] = (),
    ) -> None:
        self.request = request
        self.response = response
        self.interim = interim
        """1xx statuses received before the final response, in order."""

    def __repr__(self) -> str:
        return f"HttpTransaction({self.request!r}, {self.response!r}, interim={self.interim})"

    # --- the summary fields the mode emits -------------------------------------------
    @property
    def method(self) -> str:
        return self.request.method if self.request else ""

    @property
    def host(self) -> str:
        return self.request.host if self.request else ""

    @property
    def target(self) -> str:
        return self.request.target if self.request else ""

    @property
    def path(self) -> str:
        return self.request.path if self.request else ""

    @property
    def query(self) -> str:
        return self.request.query if self.request else ""

    @property
    def version(self) -> str:
        """The request's HTTP version (the response's without a request)."""
        if self.request:
            return self.request.version
        return self.response.version if self.response else ""

    @property
    def status(self) -> int:
        """The final status, 0 without a response."""
        return self.response.status if self.response else 0

    @property
    def reason(self) -> str:
        return self.response.reason if self.response else ""

    @property
    def content_type(self) -> str:
        """The response's media type (``http.response.mime_type``)."""
        return self.response.content_type if self.response else ""

    @property
    def referrer(self) -> str:
        return self.request.referrer if self.request else ""

    @property
    def user_agent(self) -> str:
        return self.request.user_agent if self.request else ""

    @property
    def request_ts_ns(self) -> int | None:
        return self.request.ts_ns if self.request else None

    @property
    def response_end_ts_ns(self) -> int | None:
        return self.response.end_ts_ns if self.response else None

    @property
    def duration_ns(self) -> int | None:
        """From the request's first byte to the response's last (``event.duration``)."""
        if self.request is None or self.response is None:
            return None
        return max(0, self.response.end_ts_ns - self.request.ts_ns)

    @property
    def truncated(self) -> bool:
        """A body was longer than ``max_body`` (only its prefix was examined)."""
        return bool(
            (self.request and self.request.body_truncated)
            or (self.response and self.response.body_truncated)
        )

    def ecs(self) -> dict[str, object]:
        """The transaction in ECS field names, strings made safe by ``wire_text``.

        Fields that are unknown are left out. Body sizes are the bytes seen
        (dechunked); ``lc.http.*`` holds what ECS has no name for.
        """
        out: dict[str, object] = {}
        req, resp = self.request, self.response
        if req is not None:
            out["http.request.method"] = wire_text(req.method)
            out["url.original"] = wire_text(req.target, 8192)
            out["url.path"] = wire_text(req.path, 8192)
            if req.query:
                out["url.query"] = wire_text(req.query, 8192)
            if req.host:
                out["url.domain"] = wire_text(req.host)
            out["http.version"] = req.version
            out["http.request.body.bytes"] = req.body_seen
            if req.content_type:
                out["http.request.mime_type"] = wire_text(req.content_type)
            if req.referrer:
                out["http.request.referrer"] = wire_text(req.referrer, 8192)
            if req.user_agent:
                out["user_agent.original"] = wire_text(req.user_agent)
        if resp is not None:
            if req is None:
                out["http.version"] = resp.version
            out["http.response.status_code"] = resp.status
            out["http.response.body.bytes"] = resp.body_seen
            if resp.content_type:
                out["http.response.mime_type"] = wire_text(resp.content_type)
        duration = self.duration_ns
        if duration is not None:
            out["event.duration"] = duration
        if self.interim:
            out["lc.http.interim_status_codes"] = list(self.interim)
        if self.truncated:
            out["lc.http.body_truncated"] = True
        defects = (*(req.defects if req else ()), *(resp.defects if resp else ()))
        if defects:
            out["lc.http.defects"] = sorted(set(defects))
        return out


HttpEvent = HttpRequest | HttpTransaction


# --- head parsing (llhttp) ------------------------------------------------------------------
_F_HOST, _F_UA, _F_REFERER, _F_CTYPE, _F_CL, _F_TE = range(6)
_FIELDS = {
    b"host": _F_HOST,
    b"user-agent": _F_UA,
    b"referer": _F_REFERER,
    b"content-type": _F_CTYPE,
    b"content-length": _F_CL,
    b"transfer-encoding": _F_TE,
}
_FIELD_LENGTHS = frozenset(len(n) for n in _FIELDS)  # most names are lower-cased for nothing
_METHOD_TEXT: dict[bytes, str] = {}  # llhttp's methods (a bounded, registered set) as text


class _Collector:
    """httptools callbacks for one head. They do as little as they can (one call per
    header field is most of the head's cost): collect the fields, and set aside those
    whose name has the length of one lc reads (:func:`_known`)."""

    __slots__ = ("done", "headers", "known", "status", "url")

    def __init__(self) -> None:
        self.url = b""
        self.status = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.known: list[tuple[bytes, bytes]] = []
        self.done = False  # the head is complete

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, status: bytes) -> None:
        self.status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        field = (name, value)
        self.headers.append(field)
        if len(name) in _FIELD_LENGTHS:
            self.known.append(field)

    def on_headers_complete(self) -> None:
        self.done = True


class _Fields:
    """The header fields lc reads, from the ones the collector set aside (values
    stripped of blanks)."""

    __slots__ = ("cl", "ctype", "hosts", "referer", "te", "ua")

    def __init__(self, known: list[tuple[bytes, bytes]]) -> None:
        self.hosts: list[bytes] = []
        self.ua: bytes | None = None
        self.referer: bytes | None = None
        self.ctype: bytes | None = None
        self.cl: list[bytes] = []
        self.te: list[bytes] = []
        fields = _FIELDS
        for name, value in known:
            field = fields.get(name.lower())
            if field is None:
                continue
            value = value.strip(b" \t")
            if field == _F_HOST:
                self.hosts.append(value)
            elif field == _F_UA:
                if self.ua is None:
                    self.ua = value
            elif field == _F_REFERER:
                if self.referer is None:
                    self.referer = value
            elif field == _F_CTYPE:
                if self.ctype is None:
                    self.ctype = value
            elif field == _F_CL:
                self.cl.append(value)
            else:
                self.te.append(value)


def _new_parser(request: bool, collector: _Collector) -> httptools.HttpRequestParser:
    parser = (httptools.HttpRequestParser if request else httptools.HttpResponseParser)(collector)
    # Observe what servers accept: obs-fold and odd value bytes, bare LF, CL with TE
    # (framing is ours; a conflict is flagged as a defect), any TE on a request.
    parser.set_dangerous_leniencies(
        lenient_headers=True,
        lenient_optional_cr_before_lf=True,
        lenient_optional_lf_after_cr=True,  # with the one above: bare LF line ends
        lenient_chunked_length=True,
        lenient_transfer_encoding=True,
        lenient_keep_alive=True,
    )
    return parser


def _llhttp_head(head: bytes, request: bool) -> tuple[_Collector, object]:
    """Runs llhttp over one complete head; returns the collector and the parser."""
    collector = _Collector()
    parser = _new_parser(request, collector)
    try:
        parser.feed_data(head)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        # Only the head is fed: what llhttp says after it ("Pause on CONNECT/Upgrade")
        # is for the framing, which is done here.
        if not collector.done:
            raise
    return collector, parser


_Framing = tuple[bool, "int | None", bool]  # (chunked, Content-Length, other coding last)


def _parse_request(head: bytes, ts_ns: int) -> tuple[HttpRequest, _Framing]:
    """Parses a complete request head (request line to the empty line included)."""
    controls = False
    try:
        collector, parser = _llhttp_head(head, True)
        raw_method = parser.get_method()
        method = _METHOD_TEXT.get(raw_method)
        if method is None:
            method = _METHOD_TEXT[raw_method] = raw_method.decode("ascii")
        target = collector.url
        version = parser.get_http_version()
    except (httptools.HttpParserInvalidMethodError, httptools.HttpParserInvalidURLError) as e:
        # llhttp knows only registered methods and ASCII targets. Accept what lc's own
        # request-line rule accepts, and let llhttp check the header fields.
        m = _REQUEST_LINE.match(head)
        if m is None:
            raise HttpError(f"bad request line: {e}: {head[:80]!r}") from None
        major, minor = m.group(3).decode(), m.group(4).decode()
        neutral = _NEUTRAL_LINE % (int(major), int(minor))
        try:
            collector, _ = _llhttp_head(neutral + head[m.end() :], True)
        except httptools.HttpParserError as e2:
            raise HttpError(f"bad request head: {e2}: {head[:80]!r}") from None
        method = m.group(1).decode("ascii")
        target = m.group(2)
        version = f"{major}.{minor}"
        if _CONTROLS.search(target) is not None:
            controls = True
    except httptools.HttpParserError as e:
        raise HttpError(f"bad request head: {e}: {head[:80]!r}") from None
    if not version.startswith("1."):
        # llhttp takes "GET /" + CRLF as HTTP/0.9, and "PRI * HTTP/2.0" (the HTTP/2
        # preface) as a request: neither is HTTP/1.x.
        raise HttpError(f"not an HTTP/1.x request line: {head[:80]!r}")
    f = _Fields(collector.known)
    framing = _framing(f)
    req = HttpRequest(version, collector.headers, ts_ns, head, f.ctype)
    req.method = method
    target_s = _text(target)
    req.target = target_s
    req._split = None
    hosts = f.hosts
    req.host = _strip_port(_text(hosts[0])) if hosts else ""
    if len(hosts) > 1:
        req._defect("duplicate_host")
    if controls:
        req._defect("target_controls")
    if not req.host and not target_s.startswith("/"):
        req._split = split = _split_target(target_s)
        if split[2]:
            req.host = _strip_port(split[2])
    req._ua = f.ua
    req._referer = f.referer
    req._emitted = False
    req._ja4h = None
    return req, framing


def _parse_response(head: bytes, ts_ns: int) -> tuple[HttpResponse, _Framing]:
    """Parses a complete response head (status line to the empty line included)."""
    if not head.startswith(b"HTTP/"):
        raise HttpError(f"not an HTTP status line: {head[:80]!r}")
    try:
        collector, parser = _llhttp_head(head, False)
        status = parser.get_status_code()
        version = parser.get_http_version()
    except httptools.HttpParserError as e:
        raise HttpError(f"bad response head: {e}: {head[:80]!r}") from None
    if not version.startswith("1."):
        raise HttpError(f"not an HTTP/1.x status line: {head[:80]!r}")
    f = _Fields(collector.known)
    framing = _framing(f)
    resp = HttpResponse(version, collector.headers, ts_ns, head, f.ctype)
    resp.status = status
    resp.reason = _text(collector.status)
    return resp, framing


def _mime(value: bytes) -> str:
    return _text(value.split(b";", 1)[0].strip(b" \t").lower())


def _strip_port(host: str) -> str:
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name, sep, port = host.rpartition(":")
    if sep and (port.isdigit() or not port):
        return name
    return host


def _split_target(target: str) -> tuple[str, str, str]:
    """``(path, query, authority)`` of a request-target (authority only for the
    absolute and authority forms)."""
    authority = ""
    rest = target
    if not target.startswith("/") and target != "*":
        scheme, sep, after = target.partition("://")
        if sep and scheme.isascii() and scheme.isalpha():
            authority, slash, tail = after.partition("/")
            rest = slash + tail
            authority = authority.rpartition("@")[2]
            if not rest or rest[0] != "/":
                rest = "/" + rest if rest else "/"
        elif "/" not in target and "?" not in target:
            return "", "", target  # authority-form (CONNECT host:port)
    rest = rest.partition("#")[0]
    path, _, query = rest.partition("?")
    return path, query, authority


def _framing(fields: _Fields) -> _Framing:
    """``(chunked, content_length, te_other)`` from the head; raises HttpError on a bad
    Content-Length."""
    chunked = False
    te_other = False
    length: int | None = None
    if fields.te:
        # Only the last coding of the last field frames the message.
        codings = [c.strip(b" \t").lower() for c in fields.te[-1].split(b",")]
        codings = [c for c in codings if c]
        if codings:
            chunked = codings[-1] == b"chunked"
            te_other = not chunked
    for value in fields.cl:
        for part in value.split(b","):
            part = part.strip(b" \t")
            if not part.isdigit() or len(part) > _MAX_CL_DIGITS:
                raise HttpError(f"bad Content-Length: {value[:40]!r}")
            v = int(part)
            if length is not None and v != length:
                raise HttpError(f"conflicting Content-Length values: {value[:40]!r}")
            length = v
    return chunked, length, te_other


def parse_request_head(data: bytes) -> HttpRequest:
    """Parses one complete request head (up to and including its empty line).

    For a message outside a connection, e.g. SSDP over UDP. The body is not read.
    Raises :class:`HttpError`.
    """
    m = _EMPTY_LINE.search(data)
    if m is None:
        raise HttpError(f"request head without its end: {data[:80]!r}")
    req, (chunked, length, _) = _parse_request(bytes(data[: m.end()]).lstrip(b"\r\n"), 0)
    req.chunked, req.body_declared = chunked, length
    return req


def parse_response_head(data: bytes) -> HttpResponse:
    """Parses one complete response head; see :func:`parse_request_head`."""
    m = _EMPTY_LINE.search(data)
    if m is None:
        raise HttpError(f"response head without its end: {data[:80]!r}")
    resp, (chunked, length, _) = _parse_response(bytes(data[: m.end()]).lstrip(b"\r\n"), 0)
    resp.chunked, resp.body_declared = chunked, length
    return resp


def looks_like_http_request(data: bytes) -> bool | None:
    """Whether ``data`` can start an HTTP request: True, False, or None (need more bytes).

    A prefix test (a method token and a blank), for port-less detection.
    """
    data = bytes(data[:80]).lstrip(b"\r\n")
    if not data:
        return None
    m = _METHOD_PREFIX.match(data)
    if m is None:
        return False
    return True if m.group(1) else None


# --- one direction --------------------------------------------------------------------------
class _Side:
    """The parsing state of one direction."""

    __slots__ = (
        "buf",
        "buf_ts",
        "is_client",
        "line_ok",
        "msg",
        "parsed",
        "remaining",
        "resync_budget",
        "resynced",
        "search",
        "started",
        "state",
    )

    def __init__(self, is_client: bool) -> None:
        self.is_client = is_client
        self.state = _START
        self.buf = bytearray()
        self.buf_ts = 0
        self.search = 0  # where the search for the head's end resumes
        self.msg: _Message | None = None
        self.remaining = 0
        self.resync_budget = 0
        self.started = False  # the first bytes looked like HTTP (or a resync found a start)
        self.parsed = 0  # message heads parsed
        self.line_ok = False  # the current head's first line was checked
        self.resynced = False  # a resync found a message start


class HttpConnection:
    """Observes one TCP connection's HTTP/1.x traffic; see the module docstring."""

    __slots__ = (
        "_client",
        "_events",
        "_full",
        "_interim",
        "_server",
        "counters",
        "max_body",
        "max_head",
        "max_pending",
        "max_resync",
        "midstream",
        "not_http",
        "pending",
        "tunnel",
    )

    def __init__(
        self,
        max_body: int = DEFAULT_MAX_BODY,
        max_head: int = DEFAULT_MAX_HEAD,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_resync: int = DEFAULT_MAX_RESYNC,
        counters: dict[str, int] | None = None,
        midstream: bool = False,
    ) -> None:
        for name, value, low in (
            ("max_body", max_body, 0),
            ("max_head", max_head, 64),
            ("max_pending", max_pending, 1),
            ("max_resync", max_resync, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValidationError(f"{name} must be an integer >= {low}, got {value!r}")
        if counters is None:
            counters = {}
        for name in _COUNTERS:
            counters.setdefault(name, 0)
        self.counters = counters
        self.max_body = max_body
        self.max_head = max_head
        self.max_pending = max_pending
        self.max_resync = max_resync
        self.midstream = midstream
        """The capture began after the connection did (no SYN seen): text that does not
        start a message is taken for the middle of one, and skipped."""
        self._client = _Side(True)
        self._server = _Side(False)
        self.pending: deque[HttpRequest | str] = deque()
        """Requests whose head is complete and that await their final response, oldest
        first; past ``max_pending`` of them, only their method is kept (a placeholder
        that keeps the pairing, and the HEAD rule, right)."""
        self._full = 0  # HttpRequest objects in pending
        self._interim: list[int] = []
        self._events: list[HttpEvent] = []
        self.not_http = False
        """The connection does not carry HTTP (nothing is parsed any more)."""
        self.tunnel = False
        """An upgrade (101) or CONNECT turned the connection into a tunnel."""

    # --- state --------------------------------------------------------------------------
    @property
    def client_state(self) -> str:
        return _STATE_NAMES[self._client.state]

    @property
    def server_state(self) -> str:
        return _STATE_NAMES[self._server.state]

    @property
    def active(self) -> bool:
        """False once nothing more will be parsed (not HTTP, tunnel, or both sides done)."""
        return not (
            self.not_http
            or self.tunnel
            or (self._client.state == _DEAD and self._server.state == _DEAD)
        )

    @property
    def current_request(self) -> HttpRequest | None:
        """The request whose body is being received, if any (its head is complete)."""
        msg = self._client.msg
        return msg if isinstance(msg, HttpRequest) else None

    # --- feeding ------------------------------------------------------------------------
    def feed_client(self, data: bytes | bytearray | memoryview, ts_ns: int) -> list[HttpEvent]:
        """Client-to-server bytes, contiguous with the previous ones; returns events."""
        if data and not self.not_http:
            self._feed(self._client, data, ts_ns)
        return self._take()

    def feed_server(self, data: bytes | bytearray | memoryview, ts_ns: int) -> list[HttpEvent]:
        """Server-to-client bytes, contiguous with the previous ones; returns events."""
        if data and not self.not_http:
            self._feed(self._server, data, ts_ns)
        return self._take()

    def gap_client(self, nbytes: int | None, ts_ns: int) -> list[HttpEvent]:
        """``nbytes`` client bytes were lost (None: an unknown number); returns events."""
        self._gap(self._client, nbytes, ts_ns)
        return self._take()

    def gap_server(self, nbytes: int | None, ts_ns: int) -> list[HttpEvent]:
        """``nbytes`` server bytes were lost (None: an unknown number); returns events."""
        self._gap(self._server, nbytes, ts_ns)
        return self._take()

    def end_client(self, ts_ns: int) -> list[HttpEvent]:
        """The client finished sending (FIN). The server may still answer."""
        self._end(self._client, ts_ns)
        return self._take()

    def end_server(self, ts_ns: int) -> list[HttpEvent]:
        """The server finished sending: a body until close ends here, and requests
        still waiting will not be answered."""
        self._end(self._server, ts_ns)
        self._flush_pending()
        return self._take()

    def close(self, ts_ns: int) -> list[HttpEvent]:
        """The connection is gone (RST, expiry, eviction): flushes everything."""
        self._end(self._client, ts_ns)
        self._end(self._server, ts_ns)
        self._flush_pending()
        return self._take()

    # --- internals ----------------------------------------------------------------------
    def _take(self) -> list[HttpEvent]:
        events = self._events
        if events:
            self._events = []
        return events

    def _feed(self, side: _Side, data: bytes | bytearray | memoryview, ts_ns: int) -> None:
        state = side.state
        if state >= _DEAD:
            return
        buf = side.buf
        if state == _BODY_LEN and not buf and len(data) <= side.remaining:
            # The common bulk case: a body segment inside a Content-Length body.
            self._body(side, data, ts_ns)
            side.remaining -= len(data)
            if side.remaining == 0:
                self._finish(side, ts_ns)
            return
        old = len(buf)
        if not old:
            side.buf_ts = ts_ns
        buf += data
        pos = self._run(side, buf, 0, ts_ns, old)
        if pos:
            del buf[:pos]
            side.search = max(0, side.search - pos)
            if buf and pos >= old:
                side.buf_ts = ts_ns

    def _run(self, side: _Side, buf: bytearray, pos: int, ts_ns: int, old: int) -> int:
        """Consumes ``buf`` from ``pos`` as far as it can; returns the new position."""
        end = len(buf)
        while pos < end:
            state = side.state
            if state == _START:
                pos, more = self._head(side, buf, pos, ts_ns, old)
                if more:
                    break
            elif state == _BODY_LEN:
                n = min(side.remaining, end - pos)
                self._body(side, memoryview(buf)[pos : pos + n], ts_ns)
                pos += n
                side.remaining -= n
                if side.remaining == 0:
                    self._finish(side, ts_ns)
            elif state == _CHUNK_DATA:
                n = min(side.remaining, end - pos)
                self._body(side, memoryview(buf)[pos : pos + n], ts_ns)
                pos += n
                side.remaining -= n
                if side.remaining == 0:
                    side.state = _CHUNK_END
            elif state == _CHUNK_SIZE:
                nl = buf.find(b"\n", pos, pos + _MAX_CHUNK_LINE)
                if nl < 0:
                    if end - pos >= _MAX_CHUNK_LINE:
                        self._bad_chunk(side, ts_ns, "chunk-size line too long")
                        pos = end
                    break
                size_text = bytes(buf[pos:nl]).split(b";", 1)[0].strip(b" \t\r")
                if (
                    not size_text
                    or len(size_text) > _MAX_CHUNK_DIGITS
                    or not _HEX.issuperset(size_text)
                ):
                    self._bad_chunk(side, ts_ns, "bad chunk size")
                    pos = nl + 1
                    continue
                pos = nl + 1
                size = int(size_text, 16)
                if size:
                    side.state = _CHUNK_DATA
                    side.remaining = size
                else:
                    side.state = _TRAILERS
            elif state == _CHUNK_END:
                if buf[pos] == 0x0A:  # bare LF
                    pos += 1
                    side.state = _CHUNK_SIZE
                elif buf[pos] == 0x0D:
                    if pos + 1 >= end:
                        break
                    if buf[pos + 1] != 0x0A:
                        self._bad_chunk(side, ts_ns, "no CRLF after chunk data")
                        continue
                    pos += 2
                    side.state = _CHUNK_SIZE
                else:
                    self._bad_chunk(side, ts_ns, "no CRLF after chunk data")
            elif state == _TRAILERS:
                # Either the empty line at once, or trailer fields up to an empty line.
                if buf[pos] == 0x0A:
                    self._finish(side, ts_ns)
                    pos += 1
                    continue
                if buf[pos] == 0x0D:
                    if pos + 1 >= end:
                        break
                    if buf[pos + 1] == 0x0A:
                        self._finish(side, ts_ns)
                        pos += 2
                        continue
                m = _EMPTY_LINE.search(buf, max(pos, side.search))
                if m is None:
                    if end - pos > self.max_head:
                        self._bad_chunk(side, ts_ns, "trailer section too long")
                        pos = end
                    else:
                        side.search = max(pos, end - 2)
                    break
                side.search = 0
                pos = m.end()
                self._finish(side, ts_ns)
            elif state == _BODY_CLOSE:
                self._body(side, memoryview(buf)[pos:end], ts_ns)
                pos = end
            elif state == _RESYNC:
                pos = self._resync(side, buf, pos)
                if side.state == _RESYNC or side.state >= _DEAD:
                    break
            else:  # _DEAD, _TUNNEL
                pos = end
        if side.state >= _DEAD:
            return end
        return pos

    # --- heads ---------------------------------------------------------------------------
    def _head(
        self, side: _Side, buf: bytearray, pos: int, ts_ns: int, old: int
    ) -> tuple[int, bool]:
        """Parses a head starting at ``pos``: ``(position after it, need more bytes)``."""
        end = len(buf)
        # Empty lines between messages are ignored (RFC 9112 section 2.2).
        while pos < end and buf[pos] in b"\r\n":
            pos += 1
        if pos >= end:
            return end, True
        if not side.started:
            verdict = self._first_bytes(side, buf, pos)
            if verdict is None:
                return pos, True
            if not verdict:
                return pos, False
            side.started = True
        search = max(pos, side.search)
        head_end = _head_end(buf, search)
        if head_end < 0:
            if (
                not side.line_ok
                and buf.find(b"\n", search) >= 0
                and not self._first_line(side, buf, pos, ts_ns)
            ):
                # The first line is complete and starts no message: no need to wait
                # up to max_head bytes for the end of something that is not a head.
                return pos, False
            if end - pos > self.max_head:
                self.counters["oversized_heads"] += 1
                self._start_resync(side, ts_ns)
                return end, False
            side.search = max(pos, end - 2)
            return pos, True
        side.search = 0
        line_checked = side.line_ok
        side.line_ok = False
        if head_end - pos > self.max_head:
            self.counters["oversized_heads"] += 1
            self._start_resync(side, ts_ns)
            return head_end, False
        head = bytes(buf[pos:head_end])
        start_ts = side.buf_ts if pos < old else ts_ns
        try:
            if side.is_client:
                self._request_head(side, head, start_ts, ts_ns)
            else:
                self._response_head(side, head, start_ts, ts_ns)
        except HttpError:
            if not line_checked and not self._first_line(side, buf, pos, ts_ns):
                return pos, False  # not even its first line starts a message
            self.counters["malformed"] += 1
            self._start_resync(side, ts_ns)
        return head_end, False

    def _first_line(self, side: _Side, buf: bytearray, pos: int, ts_ns: int) -> bool:
        """Whether the (complete) line at ``pos`` can start a message. If not, the
        direction is rejected (first message) or resynchronised from ``pos``."""
        rule = _REQUEST_LINE if side.is_client else _RESPONSE_START
        if rule.match(buf, pos) is not None:
            side.line_ok = True
            return True
        side.search = 0
        if not side.parsed and not side.resynced:
            self._reject_start(side)
        else:
            # Junk between messages (a body longer than its Content-Length said...):
            # no response head was lost in it.
            self.counters["malformed"] += 1
            self._start_resync(side, ts_ns, lost_response=False)
        return False

    def _first_bytes(self, side: _Side, buf: bytearray, pos: int) -> bool | None:
        """Whether a direction's first bytes can start a message (None: need more)."""
        first = buf[pos]
        if first < 0x20 or first > 0x7E:
            # Binary (TLS, SSH key exchange...): not HTTP, even mid-connection.
            self._reject_start(side, binary=True)
            return False
        chunk = bytes(buf[pos : pos + 80])
        if side.is_client:
            ok = looks_like_http_request(chunk)
        else:
            want = b"HTTP/"
            n = min(len(chunk), len(want))
            ok = None if n < len(want) and chunk[:n] == want[:n] else chunk.startswith(want)
        if ok is None:
            return None
        if not ok:
            self._reject_start(side)
            return False
        return True

    def _reject_start(self, side: _Side, binary: bool = False) -> None:
        """A direction's first bytes do not start an HTTP message."""
        if self.midstream and not binary:
            # Probably the middle of a message: look for the next one.
            self._start_resync(side, 0, lost_response=False)
        elif side.is_client or not self._client.parsed:
            self._mark_not_http()
        else:
            self.counters["gave_up"] += 1
            side.state = _DEAD
            side.buf.clear()

    def _request_head(self, side: _Side, head: bytes, start_ts: int, ts_ns: int) -> None:
        req, (chunked, length, te_other) = _parse_request(head, start_ts)
        if te_other:
            raise HttpError("request with a Transfer-Encoding other than chunked")
        side.parsed += 1
        self.counters["requests"] += 1
        if chunked and length is not None:
            req._defect("cl_and_te")
        req.chunked = chunked
        req.body_declared = None if chunked else length
        pending = self.pending
        if len(pending) >= self.max_pending * _PLACEHOLDERS_PER_PENDING:
            # Not even placeholders fit: give up the oldest (later pairs may drift).
            self.counters["pending_dropped"] += 1
            self._unanswered()
        if self._full >= self.max_pending:
            # Its request event was emitted (or will be): keep only what pairing needs.
            self.counters["pending_overflow"] += 1
            pending.append(req.method)
        else:
            pending.append(req)
            self._full += 1
        side.msg = req
        if chunked:
            side.state = _CHUNK_SIZE
        elif length:
            side.state = _BODY_LEN
            side.remaining = length
        else:
            self._finish(side, ts_ns)

    def _response_head(self, side: _Side, head: bytes, start_ts: int, ts_ns: int) -> None:
        resp, (chunked, length, te_other) = _parse_response(head, start_ts)
        side.parsed += 1
        status = resp.status
        front = self.pending[0] if self.pending else None
        if 100 <= status < 200 and status != 101:
            self.counters["informational"] += 1
            if front is not None and len(self._interim) < _MAX_INTERIM:
                self._interim.append(status)
            return  # interim: the final response is still to come
        self.counters["responses"] += 1
        if (chunked or te_other) and length is not None:
            resp._defect("cl_and_te")
        method = front.method if isinstance(front, HttpRequest) else front or ""
        if status == 101 or (method == "CONNECT" and 200 <= status < 300):
            resp.complete = True
            resp.end_ts_ns = ts_ns
            self._respond(resp)
            self.tunnel = True
            self.counters["tunnels"] += 1
            for s in (self._client, self._server):
                s.state = _TUNNEL
                s.buf.clear()
            return
        side.msg = resp
        no_body = method == "HEAD" or status in (204, 304)
        resp.chunked = chunked and not no_body
        if no_body:
            resp.body_declared = length
            self._finish(side, ts_ns)
        elif chunked:
            side.state = _CHUNK_SIZE
        elif te_other:
            side.state = _BODY_CLOSE  # a coding other than chunked last: until close
        elif length is not None:
            resp.body_declared = length
            if length:
                side.state = _BODY_LEN
                side.remaining = length
            else:
                self._finish(side, ts_ns)
        else:
            side.state = _BODY_CLOSE

    # --- bodies and ends -----------------------------------------------------------------
    def _body(self, side: _Side, data: bytes | bytearray | memoryview, ts_ns: int) -> None:
        msg = side.msg
        if msg is None:
            return
        n = len(data)
        msg.body_seen += n
        kept = msg._body
        room = self.max_body - len(kept)
        if room > 0 and "gap" not in msg.defects:
            kept += data[:room] if n > room else data
            if n >= room and side.is_client:
                self._emit_request(msg)  # type: ignore[arg-type]
        if n > room and not msg.body_truncated:
            msg.body_truncated = True
            self.counters["truncated_bodies"] += 1

    def _finish(self, side: _Side, ts_ns: int, complete: bool = True) -> None:
        """The current message ended (complete or cut)."""
        msg = side.msg
        side.msg = None
        if side.state < _RESYNC:
            side.state = _START
        if msg is None:
            return
        msg.complete = complete
        msg.end_ts_ns = ts_ns
        if not complete:
            msg._defect("incomplete")
        if isinstance(msg, HttpRequest):
            self._emit_request(msg)
        else:
            self._respond(msg)  # type: ignore[arg-type]

    def _emit_request(self, req: HttpRequest) -> None:
        if not req._emitted:
            req._emitted = True
            self._events.append(req)

    def _respond(self, resp: HttpResponse) -> None:
        """A final response ended: pair it with the oldest waiting request."""
        req: HttpRequest | None = None
        if self.pending:
            front = self.pending.popleft()
            if not isinstance(front, str):
                req = front
                self._full -= 1
        else:
            self.counters["orphan_responses"] += 1
        self._events.append(HttpTransaction(req, resp, tuple(self._interim)))
        self._interim = []
        self.counters["transactions"] += 1

    def _unanswered(self) -> None:
        """The oldest waiting request will get no response (its interim ones, if any)."""
        front = self.pending.popleft()
        self.counters["unanswered"] += 1
        if not isinstance(front, str):
            self._full -= 1
            self.counters["transactions"] += 1
            self._events.append(HttpTransaction(front, None, tuple(self._interim)))
        self._interim = []

    def _flush_pending(self) -> None:
        while self.pending:
            self._unanswered()

    def _end(self, side: _Side, ts_ns: int) -> None:
        """This direction ended (FIN or close)."""
        if side.state == _BODY_CLOSE:
            self._finish(side, ts_ns)
        elif side.msg is not None:
            self._finish(side, ts_ns, complete=False)
        if side.state < _DEAD:
            side.state = _DEAD
        side.buf.clear()

    def _gap(self, side: _Side, nbytes: int | None, ts_ns: int) -> None:
        if side.state >= _DEAD or self.not_http:
            return
        self.counters["gaps"] += 1
        msg = side.msg
        state = side.state
        if msg is not None:
            msg._defect("gap")
        if state == _BODY_CLOSE and not side.buf:
            return
        if (
            state in (_BODY_LEN, _CHUNK_DATA)
            and nbytes is not None
            and not side.buf
            and nbytes < side.remaining
        ):
            side.remaining -= nbytes
            return
        if state == _BODY_LEN and nbytes is not None and not side.buf and nbytes == side.remaining:
            self._finish(side, ts_ns)
            return
        side.buf.clear()
        side.search = 0
        side.line_ok = False
        if side.state != _RESYNC:
            self._start_resync(side, ts_ns)

    # --- resynchronisation ---------------------------------------------------------------
    def _bad_chunk(self, side: _Side, ts_ns: int, why: str) -> None:
        self.counters["bad_chunks"] += 1
        self._start_resync(side, ts_ns)

    def _start_resync(self, side: _Side, ts_ns: int, lost_response: bool = True) -> None:
        if side.msg is not None:
            # A message cut short: it still ends (and a response still answers).
            self._finish(side, ts_ns, complete=False)
        elif lost_response and not side.is_client and self.pending:
            # A response head that could not be read: take the oldest request as
            # the one whose response was lost.
            self._unanswered()
        self.counters["resyncs"] += 1
        side.state = _RESYNC
        side.resync_budget = self.max_resync
        side.search = 0

    def _resync(self, side: _Side, buf: bytearray, pos: int) -> int:
        """Looks for a message start (a request line at a line start, a status line
        anywhere); returns where to go on from.

        Linear: every byte is looked at a bounded number of times over all calls
        (``side.search`` remembers where the last call stopped looking).
        """
        end = len(buf)
        at = max(pos, side.search)
        line_start = pos  # pos is a line start, or where the skipping began
        scanned = pos  # newlines before this were taken into line_start
        while True:
            hit = buf.find(b"HTTP/", at)
            if hit < 0:
                break
            if side.is_client:
                # A request line ends with "HTTP/1.x" CRLF: look at this hit's tail first.
                nl = buf.rfind(b"\n", scanned, hit)
                if nl >= 0:
                    line_start = nl + 1
                scanned = hit
                tail = _VERSION_TAIL.match(buf, hit)
                if tail is None:
                    if end - hit < 10 and buf.find(b"\n", hit) < 0:
                        return self._resync_wait(side, buf, pos, line_start, hit)
                elif _REQUEST_LINE.match(buf, line_start) is not None:
                    return self._resynced(side, pos, line_start)
            else:
                # A status line may follow the unframed body of a lost response
                # directly, so it is not looked for at line starts only.
                if end - hit < 13:
                    return self._resync_wait(side, buf, pos, hit, hit)
                if _RESPONSE_START.match(buf, hit):
                    return self._resynced(side, pos, hit)
            at = hit + 1
        # No start here: keep only the last partial line (it may grow into one).
        last_nl = buf.rfind(b"\n", scanned, end)
        keep_from = last_nl + 1 if last_nl >= 0 else line_start
        if end - keep_from > self.max_head:
            keep_from = end
        return self._resync_wait(side, buf, pos, keep_from, max(keep_from, end - 4))

    def _resync_wait(
        self, side: _Side, buf: bytearray, pos: int, keep_from: int, resume: int
    ) -> int:
        skipped = keep_from - pos
        self.counters["skipped_bytes"] += skipped
        side.resync_budget -= skipped
        if side.resync_budget < 0 or len(buf) - keep_from > self.max_head:
            self._give_up(side)
            return len(buf)
        side.search = resume
        return keep_from

    def _resynced(self, side: _Side, pos: int, start: int) -> int:
        self.counters["skipped_bytes"] += start - pos
        side.state = _START
        side.search = 0
        side.line_ok = False
        side.started = True
        side.resynced = True
        return start

    def _give_up(self, side: _Side) -> None:
        side.state = _DEAD
        side.buf.clear()
        self.counters["gave_up"] += 1
        if side.is_client and not side.parsed:
            self._mark_not_http()

    def _mark_not_http(self) -> None:
        if self.not_http:
            return
        self.not_http = True
        self.counters["not_http"] += 1
        for side in (self._client, self._server):
            if side.msg is not None:
                side.msg = None
            side.state = _DEAD
            side.buf.clear()
        self.pending.clear()
        self._full = 0
