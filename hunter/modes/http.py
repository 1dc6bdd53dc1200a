"""HTTP mode (``lc hunt http``): HTTP/1.x transactions over reassembled TCP; the
connections that filters select are captured whole.

A :class:`~lc.hunter.modes.sessions.Dissector` on the shared session engine. What it
does with a connection on one of ``--http-port``:

* **Unit of capture: the TCP connection.** A request or response that matches a
  filter captures the connection it travels on (the packets held before the decision,
  in order, then every later one), not just the transaction: an investigator wants
  the exchange in context (earlier requests of a keep-alive connection often matter,
  e.g. the login before the upload), Wireshark needs the whole stream to reassemble
  it, and HTTPS (unparsable here) can only be selected that way (``ip_address``).
* **Parsing**: each direction's reassembled bytes go to one
  :class:`lc.common.http.HttpConnection` (framing, pipelining, 100-continue, HEAD,
  chunked, until-close, resync, bounds: see there). A capture gap gives the parser a
  gap of unknown size. Messages for the engine are the stream pieces the reassembler
  releases that complete a request or a transaction (which are judged): a direction's
  framer is bound to the connection's parser once the dissector has seen its first
  piece, and parses what it is fed itself, so body segments cost the engine nothing.
* **Lazy connections** (speed; outputs unchanged): while every filter in force is a
  request filter (``http_host``, ``http_url``, ``http_method``, ``http_user_agent``,
  ``http_ja4h``; no ``--events all``), nothing about a response can select a
  connection, so an undecided connection's server bytes are not parsed: they are
  logged (with the client's, in order, with their times and held frames) and parsed
  again, as they would have been, the moment the connection is decided or rejected,
  the filters change to a set that may read responses, or the client's side could
  come to depend on the server's (a ``101`` anywhere in the server's bytes, a
  CONNECT, server bytes before any request, 64 request heads), or past 1 MiB logged
  for it (128 MiB of copies in all). The log copies no bytes the connection's held
  frames have: bytes the in-order path took from one held frame are logged as that
  frame's index (and time), and the replay reads them there (it runs before the
  held frames go, or never); bytes of a frame not held (a holding bound,
  ``buffer_full``) and those the general path reassembled are copied, so the replay
  is exact whatever was held. Frames, their metadata and events are those of a full
  parse; counters that differ: ``http_messages``, ``http_responses``,
  ``http_transactions`` (and the parser's other response counters) leave out the
  responses of connections that ended undecided, and ``http_events_dropped`` the
  transactions that no longer wait; when the waiting budget below binds, which
  waiting transactions are dropped can differ.
* **Filters**: ``http_host``, ``http_url`` (the request target), ``http_method``,
  ``http_user_agent``, ``http_ja4h`` (the request's JA4H) when a request's head and
  examined body are known; ``http_status`` when its response is; ``keyword`` over the
  request line, header fields and examined body of either (dechunked, so a keyword
  split by chunking or segments is found; gzip/deflate bodies also decoded),
  ``ip_address`` (the connection's addresses, at its first packet) and ``bpf`` (libpcap
  expressions, tried on each packet of an undecided connection): these two select
  connections the parser cannot read (HTTPS on a --http-port, for --tls-keylog).
  Local filters (``--host``, ``--path``, ``--method``, ``--status``, ``--keywords``)
  are held beside the processor's.
* **Metadata**: a packet that completes a request or response carries an
  ``HttpSummary``; the others of the connection carry its session id.
* **Events**: one ``HttpEvent`` per transaction (request and response), with the
  JA4H, the keywords that matched (patterns), and with ``--capture-body`` the examined
  bodies. Transactions of a connection not yet decided wait (at most
  ``_MAX_WAITING`` per connection and ``_MAX_WAITING_BYTES`` of heads and examined
  bodies in all, then ``events_dropped``) and go out once it is.
"""

from __future__ import annotations

import struct
import time
from array import array
from dataclasses import dataclass

from lc.common.bpf import compile_bpf
from lc.common.decode import TCP_FIN, TCP_SYN
from lc.common.filters import FilterSet, compile_filters
from lc.common.http import HttpConnection, HttpRequest, HttpResponse, HttpTransaction
from lc.common.ja4h import ja4h_request
from lc.common.text import wire_text
from lc.hunter.capture import Chunk
from lc.hunter.keylog import KeylogFollower
from lc.hunter.modes.base import (
    Forward,
    ModeContext,
    ModeCounters,
    ModeSpec,
    option,
    port_list,
    with_extras,
)
from lc.hunter.modes.localfilters import local_filter_option, local_filters, session_bounds
from lc.hunter.modes.sessions import CF_SLOW, Dissector, SessionMode, set_flow
from lc.hunter.session import MATCHED, REJECTED, UNDECIDED, Session, SessionLimits
from lc.proto import lc_pb2

__all__ = ["HTTP_FILTER_TYPES", "SPEC", "HttpConfig", "HttpDissector", "http_mode"]

HTTP_FILTER_TYPES = (
    "http_host",
    "http_url",
    "http_method",
    "http_status",
    "http_user_agent",
    "http_ja4h",
    "keyword",
    "ip_address",
    "bpf",
)
_NO_VALUES: tuple[dict[str, object], list] = ({}, [])  # a piece that completed nothing
#: The filter types judged on a request, and its value for each.
_REQUEST_TYPES = ("http_host", "http_url", "http_method", "http_user_agent", "http_ja4h")
_REQUEST_VALUE = {
    "http_host": lambda r: r.host,
    "http_url": lambda r: r.target,
    "http_method": lambda r: r.method,
    "http_user_agent": lambda r: r.user_agent,
    "http_ja4h": ja4h_request,
}
_MAX_WAITING = 64  # finished transactions kept per undecided connection
# Heads and examined bodies of those transactions, all connections together: each may
# hold two bodies of max_body (64 KiB), and thousands of connections may wait at once.
_MAX_WAITING_BYTES = 64 * 1024 * 1024
_TEXT_MAX = 8192


def _non_negative(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise ValueError(f"{text!r}: a whole number of bytes") from None
    if v < 0:
        raise ValueError("must be 0 or more")
    return v


_Bounds = session_bounds(
    "connection",
    ("--max-connections", "--conn-buffer-packets", "--conn-buffer-mb", "--conn-idle-timeout",
     "--conn-decide-timeout"),
    ("20000", "2000", "256", "300", "60"),
)  # fmt: skip


@dataclass(slots=True)
class HttpConfig(_Bounds):  # type: ignore[valid-type,misc]
    http_ports: frozenset[int] = option(
        "--http-port",
        "80,8080,8000,3000,8888",
        port_list,
        "Comma-separated TCP ports parsed as HTTP; also the kernel filter's.",
        "PORTS",
    )
    max_body: int = option(
        "--max-body-size",
        "65536",
        _non_negative,
        "Bytes of each body parsed and searched by keyword filters.",
        "BYTES",
    )
    capture_body: bool = option(
        "--capture-body",
        "no",
        lambda t: t == "yes",
        "Also put the examined bodies (text, or base64) into transaction events.",
        switch=True,
    )
    hosts: tuple[str, ...] = local_filter_option(
        "--host", "http_host", "Local http_host filters (comma-separated).", "PATTERNS"
    )
    paths: tuple[str, ...] = local_filter_option(
        "--path", "http_url", "Local http_url filters (comma-separated).", "PATTERNS"
    )
    methods: tuple[str, ...] = local_filter_option(
        "--method", "http_method", "Local http_method filters (comma-separated).", "METHODS"
    )
    statuses: tuple[str, ...] = local_filter_option(
        "--status",
        "http_status",
        "Local http_status filters: 404, 4xx, 500-599 (comma-separated).",
        "CODES",
    )
    keywords: tuple[str, ...] = local_filter_option(
        "--keywords", "keyword", "Local keyword filters (comma-separated).", "WORDS"
    )
    tls_keylog: str = option(
        "--tls-keylog",
        "",
        str,
        "Follow this NSS key log file (SSLKEYLOGFILE) and send new lines to the processor.",
        "FILE",
    )


class _Piece:
    """A message for the engine: stream bytes one direction's reassembler released
    (``data``, parsed by the dissector), or what a bound framer parsed already
    (``events``, ``parsed``), or (``end``) the end of the server's stream: its FIN
    reached in order."""

    __slots__ = ("data", "end", "events", "framer", "parsed")

    def __init__(self, framer: object, data: bytes, end: bool = False) -> None:
        self.framer = framer
        self.data = data
        self.end = end
        self.parsed = False
        self.events: list = []  # the HTTP events the piece completed


class _Deferred:
    """Server bytes of a lazy connection (see :class:`_Conn`), framed but not parsed:
    while the connection is lazy the engine takes it for no message and only notes the
    frames that carried it (``toks``); parsed later, it becomes what it would have been
    (``real``: a piece, or None for no message), which the engine gets if it had not
    seen it yet."""

    __slots__ = ("c", "real", "toks")

    def __init__(self, c: _Conn) -> None:
        self.c = c
        self.toks: list | None = None  # set when the engine saw it while lazy
        self.real: _Piece | object | None = _LAZY


_LAZY = object()  # _Deferred.real while not parsed
_NO_OPS: tuple = ()  # a connection's ops and tss while not lazy
_NOTHING = _Deferred(None)  # type: ignore[arg-type]
_NOTHING.real = None  # a message that is nothing: the frames before it are done


#: A bound framer that completed nothing for this many pieces gives the engine an
#: empty message anyway: the frames waiting for a message stay few.
_SILENT_MAX = 128

# Lazy connections (see _Conn): the operations of their logs.
_FEED_C, _FEED_S, _FEED_T, _PIECE_S, _END_S, _GAP_C, _GAP_S = range(7)
# _Conn.ops: the bytes of held frame k (k << 2 | one of these): the client's (its piece
# next in the log, or no piece), the server's; or the next entry of the log.
_REF_C, _REF_CP, _REF_S, _COPY = range(4)
#: A lazy connection's logged bytes (held or copied): past that it is parsed; and
#: what the logs of all hold (bytes copied, and _ENTRY_COST per copy): past that too.
_LAZY_CONN_BYTES = 1 << 20
_LAZY_BYTES = 128 << 20
_ENTRY_COST = 64  # a copy's tuple and bytes object
# A held frame's record (16-byte header and frame), untagged Ethernet, IPv4 without
# options: its IP total length and TCP data offset (as SessionMode._live reads them).
_TOTAL_DOFF = struct.Struct("!H28xB")
_CAPLEN = struct.Struct("<I")
#: Request heads a lazy connection may have parsed: below the requests waiting for
#: their responses at which the parser gives up the oldest (DEFAULT_MAX_PENDING 8 x
#: 16 placeholders), which it does from a client piece.
_LAZY_MAX_HEADS = 64


class _PieceFramer:
    """One direction's framer. Until the dissector has seen one of its pieces (a new
    direction, or the one after a gap) every piece is a message; then it is bound to
    its connection's parser and parses what it is fed itself (in order, at the time
    of the packet being handled), and only pieces that completed a request or
    response are messages: the engine has nothing to do for a body segment."""

    __slots__ = ("client", "conn", "dis", "offset", "silent")

    def __init__(self, dis: HttpDissector) -> None:
        self.offset = 0
        self.dis = dis
        self.conn: _Conn | None = None
        self.client = False
        self.silent = 0

    def feed(self, data: bytes) -> list[tuple[int, int, object]]:
        start = self.offset
        self.offset += len(data)
        c = self.conn
        if c is None or c.closed:
            # Unbound, or its connection left the table (evicted, idle) while the stream
            # goes on: the dissector sees the piece (and binds it to the new one).
            self.conn = None
            return [(start, self.offset, _Piece(self, bytes(data)))]
        log = c.log
        if log is not None:
            if type(data) is not bytes:
                data = bytes(data)  # kept in the log
            if self.client:
                if c.conn._client.parsed + data.count(b"\n") < _LAZY_MAX_HEADS:
                    return self._lazy_client(c, log, start, data)
                self.dis.unlazy(c)
            else:
                dis = self.dis
                tok = dis.tok
                timely = tok is not None and tok.ts - c.deadline <= 0
                # The in-order path, the frame held: the log names the frame (its
                # index), the replay reads the bytes there (see _Conn.ops).
                held = timely and tok.k >= 0 and tok.s.info is c  # type: ignore[union-attr]
                if dis.server_lazy(c, data, held):
                    if timely:
                        # The in-order path: this frame alone carries the bytes, and
                        # they are not late: a message that is nothing (the flow
                        # layer's waiting frames are done with, as they would be).
                        if held:
                            c.ops.append(tok.k << 2 | _REF_S)  # type: ignore[union-attr]
                            c.tss.append(tok.ts)  # type: ignore[union-attr]
                        else:  # not held (no room): a copy
                            c.ops.append(_COPY)
                            log.append((_FEED_T, data, tok.ts, tok.k))  # type: ignore[union-attr]
                        return [(start, self.offset, _NOTHING)]
                    d = _Deferred(c)
                    c.ops.append(_COPY)
                    log.append((_FEED_S, data, dis.now, d))
                    return [(start, self.offset, d)]
                dis.unlazy(c)  # then parsed below, as if it never was lazy
        conn = c.conn
        events = (conn.feed_client if self.client else conn.feed_server)(data, self.dis.now)
        if not events:
            self.silent += 1
            if self.silent < _SILENT_MAX:
                return []
        self.silent = 0
        piece = _Piece(self, b"")
        piece.parsed = True
        piece.events = events
        return [(start, self.offset, piece)]

    def _lazy_client(self, c: _Conn, log: list, start: int, data: bytes) -> list:
        """A client piece of a lazy connection: parsed (requests decide), and logged."""
        dis = self.dis
        now = dis.now
        events = c.conn.feed_client(data, now)
        out: list = []
        piece = None
        if events:
            self.silent = 0
        else:
            self.silent += 1
        if events or self.silent >= _SILENT_MAX:
            self.silent = 0
            piece = _Piece(self, b"")
            piece.parsed = True
            piece.events = events
            out.append((start, self.offset, piece))
        tok = dis.tok
        n = len(data)
        if tok is not None and tok.k >= 0 and tok.s.info is c:  # type: ignore[attr-defined]
            # The in-order path, the frame held: the log names it (see _Conn.ops).
            if piece is None:
                c.ops.append(tok.k << 2 | _REF_C)  # type: ignore[attr-defined]
            else:
                c.ops.append(tok.k << 2 | _REF_CP)  # type: ignore[attr-defined]
                log.append(piece)
            c.tss.append(now)
        else:
            c.ops.append(_COPY)
            log.append((_FEED_C, data, now, piece))
            c.copied += n + _ENTRY_COST
            dis.lazy_bytes += n + _ENTRY_COST
        c.log_bytes += n
        if c.hazard():
            dis.unlazy(c)
        return out


# _Conn.fin: the server's FIN
_FIN_NONE, _FIN_SEEN, _FIN_TOLD = 0, 1, 2


class _Conn:
    """The dissector's view of a connection (``Session.info``)."""

    __slots__ = (
        "client",
        "closed",
        "conn",
        "copied",
        "deadline",
        "fin",
        "first",
        "framers",
        "log",
        "log_bytes",
        "n",
        "ops",
        "seen",
        "tail",
        "tss",
        "waiting",
    )

    def __init__(self, client: tuple, conn: HttpConnection, lazy: bool = False) -> None:
        self.client = client  # (address, port) of the client
        self.conn = conn
        self.closed = False  # left the table
        self.first = True  # no frame of the connection placed yet
        self.fin = _FIN_NONE  # the server's FIN: seen, then told to the parser
        self.framers: list[object] = [None, None]  # the last framer per direction
        self.n = 0  # transactions so far
        self.waiting: list[tuple[HttpTransaction, int, int]] = []  # (tx, number, bytes)
        # Lazy: what was fed (or deferred) while the server side is not parsed, in
        # order (ops), None once parsed in full. Bytes the in-order path took from a
        # held frame are not copied: ops names the frame (k << 2 | _REF_*) and tss
        # has its time; the rest (_COPY) is in log as (op, data, ts, piece), which
        # also has the client pieces of _REF_CP. The held frames stay while the
        # connection is lazy: it is parsed in full before they go (decided or
        # rejected) or forgotten with them; a frame not held for want of room has
        # its bytes copied, as before (the log is then exact, not the frames).
        self.log: list | None = [] if lazy else None
        self.ops: array | tuple = array("q") if lazy else _NO_OPS
        self.tss: array | tuple = array("q") if lazy else _NO_OPS
        self.log_bytes = 0  # logged, held or copied (the bound on one connection)
        self.copied = 0  # what its log holds (in HttpDissector.lazy_bytes)
        self.deadline = 0  # capture time past which a server piece ends the laziness
        self.seen = 0  # requests of conn.pending checked for CONNECT
        self.tail = b""  # the last 2 server bytes (a "101" split between pieces)

    def hazard(self) -> bool:
        """Whether the client side of a lazy connection can no longer be parsed alone:
        a CONNECT (a 2xx answer makes a tunnel), or so many requests waiting that the
        parser would give up the oldest (a transaction from a client piece)."""
        pending = self.conn.pending
        n = len(pending)
        if self.conn.not_http:
            return True
        i = self.seen
        if i == n:
            return False
        self.seen = n
        while i < n:
            r = pending[i]
            if (r if type(r) is str else r.method) == "CONNECT":  # type: ignore[union-attr]
                return True
            i += 1
        return False


def _searched(msg: HttpRequest | HttpResponse) -> list[bytes | bytearray]:
    """What ``keyword`` filters search in a message: its head as sent, the examined
    body, and the body decoded when it has a Content-Encoding lc undoes."""
    out: list[bytes | bytearray] = [msg.head]
    body = msg._body
    if body:
        out.append(body)
        if msg.header("content-encoding"):
            decoded = msg.decoded_body(len(body) * 4 + 65536)
            if decoded and decoded != body:
                out.append(decoded)
    return out


class HttpDissector(Dissector):
    protocol = "http"
    tags = ("http",)
    message_tag = 0
    noun = ("connection", "connections")
    alias_noun = "aliases"
    streams = True
    capture_unit = "connection"
    session_events = False  # one event per transaction instead (see HttpMode)

    def __init__(self, cfg: HttpConfig, events_all: bool = False) -> None:
        self.cfg = cfg
        self.ports = cfg.http_ports
        self.events_all = events_all
        self.set_filters(None)
        self.events: list[lc_pb2.Event] = []
        self.http_counters: dict[str, int] = {}
        self.events_dropped = 0
        self.waiting_bytes = 0  # what the waiting transactions hold (see _MAX_WAITING_BYTES)
        self.gaps = 0
        self.now = 0  # the capture time of the packet being handled (bound framers)
        self.lazy: dict[_Conn, Session] = {}  # the lazy connections (see _Conn)
        self.lazy_bytes = 0  # what their logs hold
        self._scratch: dict[str, int] = {}  # lazy parsers' counters (not figures)
        self.current: _Piece | None = None  # the piece the engine is handling
        self.tok: object = None  # the in-order path's frame token (SessionMode.frame_token)
        self.unlazy = lambda c: None  # set by the mode: parse lazy c in full from now on

    def kernel_bpf(self) -> str:
        ports = " or ".join(f"port {p}" for p in sorted(self.ports))
        return f"tcp and ({ports})"

    def new_framer(self) -> _PieceFramer:
        return _PieceFramer(self)

    def parse(self, payload: memoryview) -> object:
        from lc.common.errors import ParseError

        raise ParseError("HTTP is not carried over UDP")

    def new_info(self, msg: _Piece | None, flow: tuple) -> _Conn:  # type: ignore[override]
        # The engine gives the connection's flow initiator first (as far as it knows).
        client = (flow[0], flow[1])
        if self._lazy_ok:
            if not self.http_counters:  # the figures' names, as a parser gives them
                HttpConnection(counters=self.http_counters)
            # Its server side is not parsed until something needs it (see _Conn); its
            # requests count once they are (or at its end), not here.
            conn = HttpConnection(max_body=self.cfg.max_body, counters=self._scratch)
            return _Conn(client, conn, lazy=True)
        return _Conn(
            client, HttpConnection(max_body=self.cfg.max_body, counters=self.http_counters)
        )

    def server_lazy(self, c: _Conn, data: bytes, held: bool = False) -> bool:
        """Whether server bytes ``data`` of lazy ``c`` may stay unparsed (then they are
        counted in the log's bounds; unless ``held``, the log copies them): not if the
        client has no request yet (the server's first bytes may make the connection
        not HTTP), if they may hold a ``101`` status (a tunnel: the client's later
        bytes are no longer HTTP), or past the bounds."""
        n = len(data)
        tail = c.tail
        c.tail = data[-2:] if n >= 2 else (tail + data)[-2:]
        if (
            not c.conn._client.parsed
            or b"101" in data
            or (tail[-1:] == b"1" and data[:2] == b"01")
            or (tail == b"10" and data[:1] == b"1")
            or c.log_bytes + n > _LAZY_CONN_BYTES
            or (not held and self.lazy_bytes + n + _ENTRY_COST > _LAZY_BYTES)
        ):
            return False
        c.log_bytes += n
        if not held:
            c.copied += n + _ENTRY_COST
            self.lazy_bytes += n + _ENTRY_COST
        return True

    def on_message(self, s: Session, msg: _Piece, flow: tuple, ts: int) -> object:  # type: ignore[override]
        self.current = msg
        if msg.parsed:
            return msg.events
        c: _Conn = s.info  # type: ignore[assignment]
        from_client = (flow[0], flow[1]) == c.client
        d = 0 if from_client else 1
        framer: _PieceFramer = msg.framer  # type: ignore[assignment]
        log = c.log
        if log is not None and (
            (not from_client and not msg.end and not self.server_lazy(c, msg.data))
            or (from_client and c.conn._client.parsed + msg.data.count(b"\n") >= _LAZY_MAX_HEADS)
        ):
            self.unlazy(c)
            log = None
        conn = c.conn
        last = c.framers[d]
        if last is not None and last is not framer:
            self.gaps += 1
            if log is None:
                (conn.gap_client if from_client else conn.gap_server)(None, ts)
            elif from_client:
                c.ops.append(_COPY)  # type: ignore[union-attr]
                log.append((_GAP_C, None, ts, None))
                conn.gap_client(None, ts)
            else:
                c.ops.append(_COPY)  # type: ignore[union-attr]
                log.append((_GAP_S, None, ts, None))
        c.framers[d] = framer
        if msg.end:
            # The server's stream ended in order (FIN): an until-close body is complete
            # and requests still waiting are unanswered (judged now, not at expiry).
            if log is None:
                msg.events = conn.end_server(ts)
            else:
                c.ops.append(_COPY)  # type: ignore[union-attr]
                log.append((_END_S, None, ts, msg))
        else:
            if log is not None and not from_client:
                c.ops.append(_COPY)  # type: ignore[union-attr]
                log.append((_PIECE_S, msg.data, ts, msg))
            else:
                msg.events = (conn.feed_client if from_client else conn.feed_server)(msg.data, ts)
                if log is not None:
                    n = len(msg.data)
                    c.ops.append(_COPY)  # type: ignore[union-attr]
                    log.append((_FEED_C, msg.data, ts, msg))
                    c.log_bytes += n
                    c.copied += n + _ENTRY_COST
                    self.lazy_bytes += n + _ENTRY_COST
                    if c.hazard():
                        self.unlazy(c)
            if framer.conn is None:
                framer.conn = c  # its next pieces are parsed as they are framed
                framer.client = from_client
        msg.data = b""  # the piece may stay as a held frame's summary: not its bytes twice
        return msg.events

    def set_filters(self, fs: FilterSet | None) -> None:
        """The filter set in force: which values :meth:`filter_values` gathers."""
        self.fs = fs
        has = fs.has if fs is not None else (lambda _t: False)
        # Lazy connections while only request filters are in force (see _Conn).
        types = {f.type for f in fs.filters} if fs is not None else set()
        self._lazy_ok = not self.events_all and bool(types) and types <= set(_REQUEST_TYPES)
        self._want_request = any(has(t) for t in _REQUEST_TYPES)
        self._want = {t: has(t) for t in (*_REQUEST_TYPES, "http_status", "keyword")}

    def filter_values(self, msg: _Piece, events: object) -> tuple[dict[str, object], list]:  # type: ignore[override]
        if not events:
            return _NO_VALUES
        want = self._want
        fields: dict[str, list] = {}
        for ev in events:  # type: ignore[attr-defined]
            if isinstance(ev, HttpRequest):
                if self._want_request:
                    for t in _REQUEST_TYPES:
                        if want[t]:
                            v = _REQUEST_VALUE[t](ev)
                            if v or t != "http_user_agent":  # no User-Agent: nothing
                                fields.setdefault(t, []).append(v)
                m: HttpRequest | HttpResponse | None = ev
            else:
                m = ev.response
                if m is not None and want["http_status"]:
                    fields.setdefault("http_status", []).append(m.status)
            if m is not None and want["keyword"]:
                fields.setdefault("keyword", []).extend(_searched(m))
        return fields, []

    def summary(self, msg: _Piece) -> _Piece:  # type: ignore[override]
        # Asked before on_message parses the piece: the piece itself stands for its
        # summary, read in meta() when its frames are forwarded (parsed by then).
        return msg

    @staticmethod
    def _summary_of(piece: _Piece) -> tuple | None:
        for ev in reversed(piece.events):
            if isinstance(ev, HttpRequest):
                return (ev.method, ev.host, ev.target, 0, ev.content_type, ev.body_seen, False)
            r = ev.response
            if r is not None:
                return ("", "", "", r.status, r.content_type, r.body_seen, True)
        return None

    def after_message(self, s: Session, msg: _Piece, ts: int) -> None:  # type: ignore[override]
        self.current = None
        events = msg.events
        if not events:
            return
        c: _Conn = s.info  # type: ignore[assignment]
        for ev in events:
            if isinstance(ev, HttpTransaction):
                self._done(s, c, ev)
        if c.waiting:
            self._release(s, c)

    def meta(self, s: Session, tag: int, summary: object) -> lc_pb2.PacketMeta:
        if isinstance(summary, _Piece):
            summary = self._summary_of(summary)
            if summary is None:
                shared = s.metas[tag]
                if shared is None:
                    shared = s.metas[tag] = self.meta(s, tag, None)
                return shared
        m = lc_pb2.PacketMeta(protocol="http", session_id=s.name, filter_ids=s.ids)
        if summary is not None:
            method, host, target, status, ctype, nbody, response = summary  # type: ignore[misc]
            m.http.CopyFrom(
                lc_pb2.HttpSummary(
                    method=wire_text(method, 64),
                    host=wire_text(host, 256),
                    target=wire_text(target, 1024),
                    status=status,
                    content_type=wire_text(ctype, 128),
                    body_bytes=nbody,
                    response=response,
                )
            )
        return m

    def describe(self, s: Session, ev: lc_pb2.Event) -> None:  # pragma: no cover - unused
        if s.flow is not None:
            set_flow(ev, s.flow)

    def figures(self) -> dict[str, int]:
        out = {f"http_{k}": v for k, v in self.http_counters.items()}
        out["http_events_dropped"] = self.events_dropped
        out["http_gaps"] = self.gaps
        return out

    # -- transactions -> events ---------------------------------------------------------
    def _done(self, s: Session, c: _Conn, tx: HttpTransaction) -> None:
        c.n += 1
        if s.state == UNDECIDED:
            size = _held(tx)
            if len(c.waiting) >= _MAX_WAITING or self.waiting_bytes + size > _MAX_WAITING_BYTES:
                self.events_dropped += 1
                return
        else:
            # Decided: its event goes at once (or never, see _release); it waits for
            # nothing, so the bounds on waiting do not apply (a matched connection's
            # events were dropped when undecided ones had filled _MAX_WAITING_BYTES).
            size = 0
        c.waiting.append((tx, c.n, size))
        self.waiting_bytes += size

    def _unwait(self, c: _Conn) -> None:
        """Forget the connection's waiting transactions (sent or not)."""
        self.waiting_bytes -= sum(w[2] for w in c.waiting)
        c.waiting.clear()

    def _keywords(self, tx: HttpTransaction) -> tuple[str, ...]:
        """The patterns of the keyword filters found in the transaction (its event's)."""
        fs = self.fs
        if fs is None or not fs.has("keyword"):
            return ()
        searched: list[bytes | bytearray] = []
        for m in (tx.request, tx.response):
            if m is not None:
                searched.extend(_searched(m))
        ids = fs.match("keyword", searched)
        if not ids:
            return ()
        return tuple(sorted({f.pattern for f in fs.filters if f.id in ids}))

    def _release(self, s: Session, c: _Conn, final: bool = False) -> None:
        if not c.waiting:
            return
        if s.state == MATCHED:
            captured = True
        elif self.events_all and (s.state == REJECTED or final):
            captured = False
        elif final or s.state == REJECTED:
            self._unwait(c)
            return
        else:
            return
        for tx, n, _ in c.waiting:
            self.events.append(self._event(s, c, tx, n, self._keywords(tx), captured))
        self._unwait(c)

    def closing(self, s: Session) -> None:
        """The connection leaves the table: what the parser still holds is decided."""
        c: _Conn = s.info  # type: ignore[assignment]
        c.fin = _FIN_TOLD
        c.closed = True
        # Its framers name it (bound) and it names them: the cycle would leave the
        # connection's state (parser, requests, framers) to the cyclic collector,
        # which a long-running hunter's thresholds reach late (see hunter/capture.py).
        c.framers = [None, None]
        if c.log is not None:
            # Lazy to its end: undecided, its transactions would go nowhere (no
            # --events all). Its requests count; its responses were never parsed.
            self.lazy.pop(c, None)
            self.lazy_bytes -= c.copied
            c.log = None
            c.ops = c.tss = _NO_OPS
            self.http_counters["requests"] += c.conn._client.parsed
            return
        for ev in c.conn.close(s.last_ns):
            if isinstance(ev, HttpTransaction):
                self._done(s, c, ev)
        self._release(s, c, final=True)

    def _event(
        self, s: Session, c: _Conn, tx: HttpTransaction, n: int, kw: tuple, captured: bool
    ) -> lc_pb2.Event:
        req, resp = tx.request, tx.response
        start = req.ts_ns if req else (resp.ts_ns if resp else s.first_ns)
        end = resp.end_ts_ns if resp else (req.end_ts_ns if req else s.last_ns)
        ev = lc_pb2.Event(
            dataset="http",
            start_ns=start,
            end_ns=end,
            session_id=s.name,
            filter_ids=s.ids if captured else (),
            captured=captured,
        )
        if s.flow is not None:
            src, sport, dst, dport, proto = s.flow
            if (src, sport) != c.client:
                src, sport, dst, dport = dst, dport, src, sport
            set_flow(ev, (src, sport, dst, dport, proto))
        h = ev.http
        h.transaction = n
        h.version = tx.version
        if req is not None:
            h.method = wire_text(req.method, 64)
            h.host = wire_text(req.host, 256)
            h.target = wire_text(req.target, _TEXT_MAX)
            h.path = wire_text(req.path, _TEXT_MAX)
            h.query = wire_text(req.query, _TEXT_MAX)
            h.request_body_bytes = req.body_seen
            h.referrer = wire_text(req.referrer, _TEXT_MAX)
            h.user_agent = wire_text(req.user_agent, 1024)
            h.ja4h = ja4h_request(req)
            if self.cfg.capture_body:
                h.request_body = req.body
        if resp is not None:
            h.status = resp.status
            h.reason = wire_text(resp.reason, 256)
            h.response_body_bytes = resp.body_seen
            h.content_type = wire_text(resp.content_type, 128)
            if self.cfg.capture_body:
                h.response_body = resp.body
        d = tx.duration_ns
        if d is not None:
            h.duration_ns = d
        h.truncated = tx.truncated
        h.keywords.extend(wire_text(k, 256) for k in kw)
        return ev


class HttpMode(SessionMode):
    """The session engine with HTTP's own parts: connection keys from the stream
    direction, local filters beside the processor's, one event per transaction."""

    dis: HttpDissector
    # The engine's in-order path suits the hooks below: it sets dis.now, takes no SYN
    # or FIN, is off while bpf filters exist, and a connection whose server FIN waits
    # (_FIN_SEEN) has CF_SLOW.
    in_order_frames = True
    set_now = True
    frame_token = True  # a lazy connection's server bytes (_PieceFramer.feed)

    def __init__(self, ctx: ModeContext, dissector: HttpDissector, limits: SessionLimits):
        super().__init__(ctx, dissector, limits)
        self._cur: Session | None = None  # the connection of the frame being handled
        self._bpf: list[tuple[str, dict[int, object]]] = []  # (id, program per link type)
        self._frame: tuple = ((), b"")  # the frame being handled, while bpf filters exist
        self._local = local_filters(dissector.cfg)
        self.local_filters = self._local  # registration: shown by `lc show hunter`
        path = dissector.cfg.tls_keylog
        self.keylog = KeylogFollower(path) if path else None
        self._keylog_next = 0
        if self._local:
            self._fs = compile_filters(self._local, types=HTTP_FILTER_TYPES)
            dissector.set_filters(self._fs)
        # A lazy connection is parsed in full before it is decided (its held frames
        # and waiting transactions as they would have been) or rejected.
        dissector.unlazy = self._unlazy
        self.table.on_deciding = self._deciding

    def apply(self, compiled: FilterSet) -> None:
        fs = compile_filters([*compiled.filters, *self._local]) if self._local else compiled
        # bpf filters: compiled for every link type in use before anything changes (a
        # refused expression leaves the previous set in place).
        links = {lt for _, lt in self.interfaces} or {1}
        bpf = [(fid, {lt: compile_bpf(expr, lt) for lt in links}) for fid, expr in fs.bpf()]
        with self._lock:
            self._fs = fs
            self.dis.set_filters(fs)
            if not self.dis._lazy_ok:
                # The new set may read responses (or match at any message): the lazy
                # connections are parsed in full (their server messages so far were
                # judged by the old set, which could not match them).
                for c in list(self.dis.lazy):
                    self._unlazy(c)
            self._bpf = bpf
            self._live_ok = self._live_capable and not bpf  # bpf sees every frame

    # Two small hooks around the engine's connection handling: whether the capture saw
    # the connection's SYN (else the parser starts in mid-stream mode), and when the
    # server's stream ends in order (its FIN, after every byte before it).
    def _connection(self, flow: tuple, ts: int, flags: int, out) -> Session:
        s = super()._connection(flow, ts, flags, out)
        c: _Conn = s.info  # type: ignore[assignment]
        if self._bpf and s.state != MATCHED:
            self._match_bpf(s, out)
        if c.first:
            c.first = False
            if c.log is not None:
                self.dis.lazy[c] = s
                c.deadline = s.first_ns + self.limits.decide_timeout_ns
            if not flags & TCP_SYN:
                c.conn.midstream = True  # picked up mid-connection: skip to a message start
        if flags & TCP_FIN and c.fin == _FIN_NONE and (flow[0], flow[1]) != c.client:
            c.fin = _FIN_SEEN
            s.cflags |= CF_SLOW  # every frame goes through _tcp_frame until it is told
        self._cur = s
        return s

    def _match_bpf(self, s: Session, out) -> None:
        """``bpf`` filters select the connection of a packet they match (any packet of
        it, TLS included): held frames go, this one and every later one follow."""
        pkt, data = self._frame
        lt = self.interfaces[pkt[4]][1] if self.interfaces else 1
        raw = bytes(data)
        ids = [fid for fid, progs in self._bpf if (p := progs.get(lt)) and p.filter(raw)]
        if ids:
            self.table.decide(s, sorted({*ids, *s.ids}), out)

    def _tcp_frame(self, pkt: tuple, d, data: memoryview, out) -> None:
        if self._bpf:
            self._frame = (pkt, data)
        self.dis.now = pkt[0]
        super()._tcp_frame(pkt, d, data, out)
        s = self._cur
        c: _Conn = s.info  # type: ignore[assignment]
        if c.fin != _FIN_SEEN:
            return
        src, sport, dst, dport, _ = s.flow  # type: ignore[misc]
        key = (dst, dport, src, sport) if (src, sport) == c.client else (src, sport, dst, dport)
        if key in self._streams.reassembler:
            return  # bytes before the FIN are still missing
        c.fin = _FIN_TOLD
        s.cflags &= ~CF_SLOW
        end = _Piece(c.framers[1], b"", end=True)
        self._conn_stream_message(key, end, [], out, pkt[0])

    def _conn_stream_message(
        self, key: tuple, msg: object, frames: list, out, ts: int, s: Session | None = None
    ) -> None:
        if type(msg) is _Deferred:
            # Server bytes of a lazy connection: its frames noted while it is lazy
            # (unless this is the message that would reject it for time: then it is
            # parsed in full now), then what the bytes were (a message or not).
            real = msg.real
            if real is _LAZY:
                toks = [f.frame for f in frames]
                c = msg.c
                if (toks[-1].ts if toks else ts) - c.deadline <= 0 or c.log is None:
                    msg.toks = toks
                    return
                self._unlazy(c)
                real = msg.real
            if real is None:
                return
            msg = real
        super()._conn_stream_message(key, msg, frames, out, ts, s)

    def _deciding(self, s: Session) -> None:
        c: _Conn = s.info  # type: ignore[assignment]
        if c.log is not None:
            self._unlazy(c)

    def _unlazy(self, c: _Conn) -> None:
        """Parse lazy connection ``c`` in full from now on: a parser fed again all it
        was fed and what it deferred, in the same order and with the same times, so
        its state, the summaries of the held frames and the waiting transactions are
        what they would have been had it never been lazy (the engine's part for the
        server's messages it saw: they could not match, and were not late)."""
        dis = self.dis
        s = dis.lazy.pop(c)
        log = c.log
        ops, tss = c.ops, c.tss
        c.log = None
        c.ops = c.tss = _NO_OPS
        dis.lazy_bytes -= c.copied
        c.log_bytes = c.copied = 0
        conn = c.conn = HttpConnection(
            max_body=dis.cfg.max_body, counters=dis.http_counters, midstream=c.conn.midstream
        )
        cur = dis.current
        table = self.table
        undecided = s.state == UNDECIDED
        silent = 0  # the server framer's (_PieceFramer.silent)
        entries = iter(log)  # type: ignore[arg-type]
        times = iter(tss)
        starts: list | None = None  # where the held records lie, when first needed
        for v in ops:
            kind = v & 3
            if kind == _COPY:
                op, data, ts, piece = next(entries)
            else:
                k = v >> 2
                if starts is None:
                    starts = table.held_records(s)
                data = _payload(*starts[k])
                ts = next(times)
                if kind == _REF_S:
                    op, piece = _FEED_T, k
                else:
                    op = _FEED_C
                    piece = next(entries) if kind == _REF_CP else None
            if op == _FEED_C:
                events = conn.feed_client(data, ts)
                if piece is not None:
                    piece.events = events
                continue
            if op in (_FEED_S, _FEED_T):
                events = conn.feed_server(data, ts)
                if not events:
                    silent += 1
                    if silent < _SILENT_MAX:
                        if op == _FEED_S and piece.toks is None:
                            piece.real = None
                        continue
                silent = 0
                real = _Piece(None, b"")
                real.parsed = True
                real.events = events
                if op == _FEED_T:
                    self.c["messages"] += 1
                    if undecided and piece >= 0:  # the index of its frame, held
                        table.summarise(s, piece, real)
                elif piece.toks is None:
                    piece.real = real  # the engine gets it when it comes
                    continue
                else:
                    self.c["messages"] += 1
                    if undecided:
                        for tok in piece.toks:
                            if tok.s is s and tok.k >= 0:
                                table.summarise(s, tok.k, real)
            elif op == _PIECE_S:
                silent = 0  # a new framer
                events = piece.events = conn.feed_server(data, ts)
            elif op == _END_S:
                events = piece.events = conn.end_server(ts)
            elif op == _GAP_C:
                conn.gap_client(None, ts)
                continue
            else:
                conn.gap_server(None, ts)
                continue
            if piece is cur:
                continue  # its after_message is still to come
            for ev in events:
                if isinstance(ev, HttpTransaction):
                    dis._done(s, c, ev)
            if c.waiting:
                dis._release(s, c)
        f = c.framers[1]
        if f is not None:
            f.silent = silent  # type: ignore[attr-defined]

    def _decided(self, s: Session) -> None:
        super()._decided(s)
        c: _Conn = s.info  # type: ignore[assignment]
        if c.waiting:  # the transactions that waited for the decision go (or not) now
            self.dis._release(s, c)

    def _forgotten(self, s: Session) -> None:
        self.dis.closing(s)
        super()._forgotten(s)

    # --tls-keylog: the lines appended to the key log go out with what the mode
    # forwards (extras of kind "keylog"), read at most 5 times a second, and at the end.
    def process(self, chunk: Chunk) -> Forward:
        return self._with_keys(super().process(chunk))

    def tick(self, now_ns: int) -> Forward:
        return self._with_keys(super().tick(now_ns))

    def finish(self) -> Forward:
        return self._with_keys(super().finish(), last=True)

    def _with_keys(self, fwd: Forward, last: bool = False) -> Forward:
        keylog = self.keylog
        if keylog is None:
            return fwd
        now = time.monotonic_ns()
        if not last and now < self._keylog_next:
            return fwd
        self._keylog_next = now + 200_000_000
        return with_extras(fwd, "keylog", keylog.poll())

    def counters(self) -> ModeCounters:
        mc = super().counters()
        if self.keylog is not None:
            for k, v in self.keylog.counters.items():
                mc.figures[f"tls_keylog_{k}"] = v
        return mc

    def _forward(self, out):
        if self.dis.events:
            self.c["events"] += len(self.dis.events)
            self._events.extend(self.dis.events)
            self.dis.events.clear()
        return super()._forward(out)


def http_mode(ctx: ModeContext, cfg: HttpConfig | None = None) -> HttpMode:
    """HTTP mode for a hunter (the registry's factory)."""
    cfg = cfg or HttpConfig()
    return HttpMode(ctx, HttpDissector(cfg, ctx.events == "all"), cfg.limits())


SPEC = ModeSpec(
    name="http",
    help="""HTTP: capture the TCP connections whose HTTP/1.x transactions filters select.

    Requests and responses on --http-port are parsed from the reassembled streams;
    a match on http_host, http_url, http_method, http_status, http_user_agent,
    http_ja4h, keyword, ip_address or bpf captures the whole connection (held packets
    first; ip_address and bpf also select HTTPS). One event per transaction. With no
    filter, nothing is forwarded unless --no-filter-policy allow.""",
    filter_types=HTTP_FILTER_TYPES,
    default_policy="deny",
    config=HttpConfig,
    factory=http_mode,
)


def _payload(buf: bytes | memoryview, off: int) -> bytes:
    """The TCP bytes of the held record at ``off``, a frame the in-order path framed
    (untagged Ethernet, IPv4 without options): as ``SessionMode._live`` took them."""
    total, doff = _TOTAL_DOFF.unpack_from(buf, off + 32)
    end = 14 + total
    cap = _CAPLEN.unpack_from(buf, off + 8)[0]
    if end > cap:
        end = cap
    at = off + 16
    return bytes(buf[at + 34 + ((doff >> 4) << 2) : at + end])


def _held(tx: HttpTransaction) -> int:
    """Bytes a waiting transaction holds: its messages' heads and examined bodies."""
    n = 0
    for m in (tx.request, tx.response):
        if m is not None:
            n += len(m.head) + len(m._body)
    return n
