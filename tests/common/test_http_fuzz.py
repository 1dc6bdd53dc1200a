"""lc.common.http under hypothesis: splits, generated traffic, random and mutated bytes.

* Real streams (every HTTP connection of the corpus) cut at arbitrary points give the
  same events, field for field, as the stream fed segment by segment.
* Generated conversations (pipelined requests with Content-Length, chunked or no
  bodies; HEAD, 1xx, 204, 304; a last response until close), serialised and cut at
  arbitrary points, parse back to what was generated.
* Random bytes, and real streams with bytes flipped, inserted or deleted, never raise,
  never grow a buffer past its bound, and keep at most ``max_pending`` requests.
* The one-message helpers raise nothing but HttpError.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.http import (
    _PLACEHOLDERS_PER_PENDING,
    HttpConnection,
    HttpError,
    HttpEvent,
    HttpRequest,
    HttpTransaction,
    parse_request_head,
    parse_response_head,
)
from tests.common.test_http_corpus import CORPUS, FILES, run_capture

# --- real streams -----------------------------------------------------------------------


@dataclass
class Recorded:
    """One connection's deliveries, in capture order: (from client, bytes, ts)."""

    name: str
    chunks: list[tuple[bool, bytes, int]]
    midstream: bool


@cache
def corpus_streams() -> list[Recorded]:
    """Every corpus connection that carries HTTP, as the harness delivered it."""
    out: list[Recorded] = []
    for capture, _ in FILES:
        path = CORPUS / capture
        if path.is_file():
            for conn in run_capture(path).conns:
                if conn.events and conn.chunks:
                    out.append(Recorded(f"{capture}#{conn.index}", conn.chunks, conn.midstream))
    return out


def summary(events: list[HttpEvent]) -> list[tuple]:
    """Everything an event says, as plain values."""
    out: list[tuple] = []
    for e in events:
        if isinstance(e, HttpRequest):
            out.append(("req", *_msg(e)))
        else:
            assert isinstance(e, HttpTransaction)
            out.append(
                (
                    "tx",
                    _msg(e.request) if e.request else None,
                    _msg(e.response) if e.response else None,
                    e.interim,
                )
            )
    return out


def _msg(m) -> tuple:
    common = (
        m.version,
        m.headers,
        m.content_type,
        m.body,
        m.body_declared,
        m.body_seen,
        m.body_truncated,
        m.chunked,
        m.complete,
        m.defects,
        m.ts_ns,
        m.end_ts_ns,
    )
    if isinstance(m, HttpRequest):
        return (m.method, m.target, m.path, m.query, m.host, m.user_agent, m.referrer, *common)
    return (m.status, m.reason, *common)


def feed_all(
    chunks: list[tuple[bool, bytes, int]], midstream: bool, max_body: int = 1 << 24
) -> tuple[list[HttpEvent], HttpConnection]:
    c = HttpConnection(max_body=max_body, midstream=midstream)
    events: list[HttpEvent] = []
    for from_client, data, ts in chunks:
        events += (c.feed_client if from_client else c.feed_server)(data, ts)
    events += c.close(10**9)
    return events, c


def resplit(chunks: list[tuple[bool, bytes, int]], sizes: list[int]) -> list[tuple]:
    """Each chunk cut into pieces whose sizes cycle through ``sizes``."""
    out = []
    k = 0
    for from_client, data, ts in chunks:
        pos = 0
        while pos < len(data):
            n = sizes[k % len(sizes)]
            k += 1
            out.append((from_client, data[pos : pos + n], ts))
            pos += n
    return out


def test_corpus_has_streams_to_split() -> None:
    streams = corpus_streams()
    assert len(streams) > 50
    assert sum(len(r.chunks) for r in streams) > 300


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), sizes=st.lists(st.integers(1, 700), min_size=1, max_size=12))
def test_arbitrary_splits_of_real_streams_give_the_same_events(data, sizes: list[int]) -> None:
    streams = corpus_streams()
    rec = data.draw(st.sampled_from(streams), label="stream")
    want, _ = feed_all(rec.chunks, rec.midstream)
    got, _ = feed_all(resplit(rec.chunks, sizes), rec.midstream)
    assert summary(got) == summary(want), rec.name


def test_real_streams_byte_by_byte() -> None:
    """The smaller connections, fed one byte at a time (the worst split of all)."""
    done = 0
    for rec in corpus_streams():
        total = sum(len(d) for _, d, _ in rec.chunks)
        if total > 20_000:
            continue
        want, _ = feed_all(rec.chunks, rec.midstream)
        got, _ = feed_all(resplit(rec.chunks, [1]), rec.midstream)
        assert summary(got) == summary(want), rec.name
        done += 1
    assert done >= 10


# --- generated conversations --------------------------------------------------------------
_TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_VALUE = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ;=,/.:", max_size=30
).map(str.strip)
_BODY = st.binary(max_size=300)


@st.composite
def _body_coding(draw):
    return draw(st.sampled_from(["none", "length", "chunked"]))


def _chunked(draw, body: bytes) -> bytes:
    out = b""
    pos = 0
    while pos < len(body):
        n = draw(st.integers(1, max(1, len(body) - pos)))
        ext = draw(st.sampled_from([b"", b";x=1", b" ;name"]))
        out += b"%x%s\r\n" % (n, ext) + body[pos : pos + n] + b"\r\n"
        pos += n
    trailer = draw(st.sampled_from([b"", b"Trailer-Field: v\r\n"]))
    return out + b"0\r\n" + trailer + b"\r\n"


@st.composite
def conversation(draw):
    """(client bytes, server bytes, expected [(method, target, req body, interim,
    status, resp body)], the last response runs until close)."""
    n = draw(st.integers(1, 5))
    client = b""
    server = b""
    model = []
    for i in range(n):
        method = draw(st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "PURGE"]))
        target = "/" + draw(_TOKEN) + draw(st.sampled_from(["", "?a=1", "?q=x&y=z"]))
        headers = [("Host", "h.example")] + [
            (f"X-{draw(_TOKEN)}", draw(_VALUE)) for _ in range(draw(st.integers(0, 3)))
        ]
        body = draw(_BODY) if method in ("POST", "PUT") else b""
        coding = draw(_body_coding()) if body else "none"
        if coding == "none":
            body = b""
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        if coding == "length":
            client += (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        elif coding == "chunked":
            client += (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + _chunked(draw, body)
        else:
            client += (head + "\r\n").encode()
        interim = tuple(draw(st.lists(st.sampled_from([100, 102, 103]), max_size=2)))
        for code in interim:
            server += b"HTTP/1.1 %d Info\r\n\r\n" % code
        status = draw(st.sampled_from([200, 201, 204, 301, 304, 404, 500]))
        last = i == n - 1
        resp_body = draw(_BODY)
        no_body = method == "HEAD" or status in (204, 304)
        rhead = b"HTTP/1.1 %d Reason %d\r\nServer: s\r\n" % (status, i)
        rcoding = draw(st.sampled_from(["length", "chunked"] + (["close"] if last else [])))
        if no_body:
            server += rhead + b"Content-Length: %d\r\n\r\n" % len(resp_body)
            resp_body = b""
        elif rcoding == "length":
            server += rhead + b"Content-Length: %d\r\n\r\n" % len(resp_body) + resp_body
        elif rcoding == "chunked":
            server += rhead + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(draw, resp_body)
        else:
            server += rhead + b"\r\n" + resp_body
        model.append((method, target, body, interim, status, resp_body))
    return client, server, model


@settings(max_examples=300, deadline=None)
@given(conv=conversation(), data=st.data())
def test_generated_conversations_parse_back(conv, data) -> None:
    client, server, model = conv
    cuts_c = sorted(data.draw(st.sets(st.integers(1, max(1, len(client) - 1)), max_size=6)))
    cuts_s = sorted(data.draw(st.sets(st.integers(1, max(1, len(server) - 1)), max_size=6)))
    pieces_c = [client[a:b] for a, b in zip([0, *cuts_c], [*cuts_c, len(client)], strict=True)]
    pieces_s = [server[a:b] for a, b in zip([0, *cuts_s], [*cuts_s, len(server)], strict=True)]
    c = HttpConnection(max_body=1 << 20)
    events: list[HttpEvent] = []
    # All of the client first (pipelining at its most), then the server.
    for p in pieces_c:
        events += c.feed_client(p, 1)
    for p in pieces_s:
        events += c.feed_server(p, 2)
    events += c.end_server(3)
    txs = [e for e in events if isinstance(e, HttpTransaction)]
    got = [
        (
            t.method,
            t.target,
            t.request.body if t.request else None,
            t.interim,
            t.status,
            t.response.body if t.response else None,
        )
        for t in txs
    ]
    assert got == model
    assert all(t.response is not None and t.response.complete for t in txs)
    for name in ("malformed", "bad_chunks", "resyncs", "unanswered", "orphan_responses"):
        assert c.counters[name] == 0, name


# --- hostile bytes ------------------------------------------------------------------------
MAX_HEAD = 256


def check_bounds(c: HttpConnection) -> None:
    for side in (c._client, c._server):
        assert len(side.buf) <= MAX_HEAD + 8, (len(side.buf), side.state)
    # Whole requests are held up to max_pending; past it only their methods (placeholders
    # keep pairing and the HEAD rule right), themselves bounded.
    assert c._full <= c.max_pending
    assert len(c.pending) <= c.max_pending * _PLACEHOLDERS_PER_PENDING
    for side in (c._client, c._server):
        if side.msg is not None:
            assert len(side.msg._body) <= c.max_body


_ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["c", "s"]), st.binary(max_size=200)),
        st.tuples(
            st.sampled_from(["c", "s"]),
            st.sampled_from(
                [
                    b"GET / HTTP/1.1\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                    b"HTTP/1.1 100 Continue\r\n\r\n",
                    b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"5\r\nabcde\r\n",
                    b"0\r\n\r\n",
                    b"HEAD / HTTP/1.1\r\n\r\n",
                    b"\r\n",
                    b"HTTP/1.1 101 Switching\r\n\r\n",
                ]
            ),
        ),
        st.tuples(st.sampled_from(["gc", "gs"]), st.one_of(st.none(), st.integers(0, 50))),
        st.just(("ec", b"")),
        st.just(("es", b"")),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(actions=_ACTIONS, midstream=st.booleans())
def test_random_input_never_raises_and_stays_bounded(actions, midstream: bool) -> None:
    c = HttpConnection(
        max_body=32, max_head=MAX_HEAD, max_pending=4, max_resync=1000, midstream=midstream
    )
    for kind, arg in actions:
        if kind == "c":
            events = c.feed_client(arg, 1)
        elif kind == "s":
            events = c.feed_server(arg, 1)
        elif kind == "gc":
            events = c.gap_client(arg, 1)
        elif kind == "gs":
            events = c.gap_server(arg, 1)
        elif kind == "ec":
            events = c.end_client(1)
        else:
            events = c.end_server(1)
        assert all(isinstance(e, HttpRequest | HttpTransaction) for e in events)
        check_bounds(c)
    c.close(2)
    assert not c.pending


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_real_streams_never_raise(data) -> None:
    rec = data.draw(st.sampled_from(corpus_streams()), label="stream")
    chunks = list(rec.chunks)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(chunks) - 1))
        from_client, blob, ts = chunks[i]
        if not blob:
            continue
        at = data.draw(st.integers(0, len(blob) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            blob = blob[:at] + bytes([blob[at] ^ data.draw(st.integers(1, 255))]) + blob[at + 1 :]
        elif op == "insert":
            blob = blob[:at] + data.draw(st.binary(min_size=1, max_size=20)) + blob[at:]
        else:
            blob = blob[:at] + blob[at + data.draw(st.integers(1, 20)) :]
        chunks[i] = (from_client, blob, ts)
    c = HttpConnection(max_body=64, max_head=MAX_HEAD * 16, midstream=rec.midstream)
    for from_client, blob, ts in chunks:
        (c.feed_client if from_client else c.feed_server)(blob, ts)
        assert len(c._client.buf) <= MAX_HEAD * 16 + 8 and len(c._server.buf) <= MAX_HEAD * 16 + 8
    c.close(10**9)


@settings(max_examples=500, deadline=None)
@given(
    blob=st.binary(max_size=300),
    prefix=st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n"]),
)
def test_head_helpers_raise_only_http_error(blob: bytes, prefix: bytes) -> None:
    for parse in (parse_request_head, parse_response_head):
        try:
            parse(prefix + blob + b"\r\n\r\n")
        except HttpError:
            pass
