"""lc.common.http on hand-built streams: framing, pairing, bounds, recovery.

Each test feeds the two directions of one connection as the flow layer would (bytes
and a capture timestamp) and checks the events. The corpus and its oracles are in
test_http_corpus.py; splits and fuzzing in test_http_fuzz.py.
"""

from __future__ import annotations

import time

import pytest

from lc.common.errors import ParseError, ValidationError
from lc.common.http import (
    HttpConnection,
    HttpError,
    HttpRequest,
    HttpTransaction,
    looks_like_http_request,
    parse_request_head,
    parse_response_head,
)


def txs(events: list) -> list[HttpTransaction]:
    return [e for e in events if isinstance(e, HttpTransaction)]


def reqs(events: list) -> list[HttpRequest]:
    return [e for e in events if isinstance(e, HttpRequest)]


GET = b"GET /a?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: t/1\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello"


def test_one_transaction_with_fields_and_times() -> None:
    c = HttpConnection()
    ev = c.feed_client(GET, 1_000)
    assert [r.target for r in reqs(ev)] == ["/a?x=1"]
    (tx,) = txs(c.feed_server(OK, 5_000))
    assert (tx.method, tx.host, tx.target, tx.path, tx.query) == (
        "GET",
        "example.com",
        "/a?x=1",
        "/a",
        "x=1",
    )
    assert (tx.version, tx.status, tx.reason, tx.content_type) == ("1.1", 200, "OK", "text/html")
    assert tx.user_agent == "t/1" and tx.referrer == ""
    assert tx.response is not None and tx.response.body == b"hello"
    assert tx.response.body_declared == 5 and tx.response.body_seen == 5
    assert tx.duration_ns == 4_000 and not tx.truncated
    ecs = tx.ecs()
    assert ecs["http.request.method"] == "GET" and ecs["url.domain"] == "example.com"
    assert ecs["http.response.status_code"] == 200 and ecs["http.response.mime_type"] == "text/html"
    assert ecs["event.duration"] == 4_000 and ecs["http.response.body.bytes"] == 5
    assert ecs["url.path"] == "/a" and ecs["url.query"] == "x=1"
    assert c.counters["transactions"] == 1 and c.counters["requests"] == 1


def test_pipelined_requests_pair_in_order() -> None:
    c = HttpConnection()
    ev = c.feed_client(
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n",
        10,
    )
    assert [r.target for r in reqs(ev)] == ["/1", "/2", "/3"]
    assert len(c.pending) == 3
    ev = c.feed_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nBB\r\n0\r\n\r\n"
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        20,
    )
    assert [(t.target, t.status, t.response.body) for t in txs(ev) if t.response] == [
        ("/1", 200, b"A"),
        ("/2", 201, b"BB"),
        ("/3", 404, b""),
    ]
    assert not c.pending


def test_head_response_has_no_body_and_the_next_response_is_read() -> None:
    c = HttpConnection()
    c.feed_client(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET /n HTTP/1.1\r\nHost: h\r\n\r\n", 1)
    ev = c.feed_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        2,
    )
    (head, get) = txs(ev)
    assert head.method == "HEAD" and head.response.body_seen == 0 and head.response.complete
    assert head.response.body_declared == 1000 and not head.response.chunked
    assert get.target == "/n" and get.response.body == b"hi"


@pytest.mark.parametrize("status", [204, 304, 103])
def test_no_body_statuses(status: int) -> None:
    c = HttpConnection()
    c.feed_client(GET + GET, 1)
    ev = c.feed_server(
        f"HTTP/1.1 {status} X\r\nContent-Length: 9\r\n\r\n".encode() + OK,
        2,
    )
    if status == 103:  # interim: the final response follows
        (tx,) = txs(ev)
        assert tx.interim == (103,) and tx.status == 200 and tx.response.body == b"hello"
    else:
        tx, nxt = txs(ev)
        assert tx.status == status and tx.response.body_seen == 0
        assert nxt.status == 200 and nxt.response.body == b"hello"
        assert len(c.pending) == 0 and c.counters["orphan_responses"] == 0


def test_chunked_with_extensions_and_trailers() -> None:
    c = HttpConnection()
    c.feed_client(GET, 1)
    ev = c.feed_server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"4;ext=1\r\nWiki\r\n5 \r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n"
        b"0\r\nExpires: never\r\nX: y\r\n\r\n",
        2,
    )
    (tx,) = txs(ev)
    assert tx.response.body == b"Wikipedia in\r\n\r\nchunks." and tx.response.chunked
    assert tx.response.body_declared is None and tx.response.complete


def test_until_close_body_ends_with_the_server() -> None:
    c = HttpConnection()
    c.feed_client(b"GET / HTTP/1.0\r\n\r\n", 1)
    assert txs(c.feed_server(b"HTTP/1.0 200 OK\r\n\r\npart one, ", 2)) == []
    assert txs(c.feed_server(b"part two", 3)) == []
    assert c.server_state == "body-until-close"
    (tx,) = txs(c.end_server(4))
    assert tx.response.body == b"part one, part two" and tx.response.complete
    assert tx.response.end_ts_ns == 4


def test_transfer_encoding_without_chunked_reads_until_close() -> None:
    c = HttpConnection()
    c.feed_client(GET, 1)
    c.feed_server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nabcdef", 2
    )
    (tx,) = txs(c.close(3))
    assert tx.response.body == b"abcdef"


def test_expect_100_continue() -> None:
    c = HttpConnection()
    ev = c.feed_client(
        b"PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n", 1
    )
    assert reqs(ev) == []  # the body is still to come
    assert c.current_request is not None and c.current_request.target == "/up"
    assert txs(c.feed_server(b"HTTP/1.1 100 Continue\r\n\r\n", 2)) == []
    (req,) = reqs(c.feed_client(b"data", 3))
    assert req.body == b"data" and req.complete and req.end_ts_ns == 3
    (tx,) = txs(c.feed_server(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 4))
    assert tx.interim == (100,) and tx.status == 201 and tx.request is req
    assert c.counters["informational"] == 1


def test_folded_header_and_a_head_fed_byte_by_byte() -> None:
    head = b"GET /f HTTP/1.1\r\nHost: h\r\nX-Long: one\r\n two\r\n\tthree\r\nUser-Agent: u\r\n\r\n"
    c = HttpConnection()
    events = []
    for i in range(len(head)):
        events += c.feed_client(head[i : i + 1], i)
    (req,) = reqs(events)
    assert req.header("x-long") == "one two\tthree"
    assert req.user_agent == "u" and req.ts_ns == 0 and req.end_ts_ns == len(head) - 1


def test_bare_lf_heads() -> None:
    c = HttpConnection()
    (req,) = reqs(c.feed_client(b"GET / HTTP/1.1\nHost: h\n\n", 1))
    (tx,) = txs(c.feed_server(b"HTTP/1.1 200 OK\nContent-Length: 1\n\nx", 2))
    assert req.host == "h" and tx.response.body == b"x"


def test_max_body_keeps_a_prefix_counts_the_rest_and_emits_the_request_early() -> None:
    c = HttpConnection(max_body=10)
    ev = c.feed_client(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"k" * 12, 1)
    (req,) = reqs(ev)
    assert not req.complete and req.body == b"k" * 10 and req.body_truncated
    assert reqs(c.feed_client(b"k" * 88, 2)) == []  # emitted once only
    assert req.complete and req.body_seen == 100 and req.end_ts_ns == 2
    assert c.counters["truncated_bodies"] == 1
    (tx,) = txs(c.feed_server(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + b"r" * 20, 3))
    assert tx.response.body == b"r" * 10 and tx.truncated and tx.response.body_seen == 20
    assert tx.ecs()["lc.http.body_truncated"] is True


def test_max_body_zero_keeps_nothing() -> None:
    c = HttpConnection(max_body=0)
    c.feed_client(GET, 1)
    (tx,) = txs(c.feed_server(OK, 2))
    assert tx.response.body == b"" and tx.response.body_seen == 5 and tx.truncated


def test_oversized_head_resyncs_to_the_next_request() -> None:
    c = HttpConnection(max_head=200)
    big = b"GET / HTTP/1.1\r\nX: " + b"a" * 300 + b"\r\n\r\n"
    ev = c.feed_client(big + b"GET /next HTTP/1.1\r\n\r\n", 1)
    assert [r.target for r in reqs(ev)] == ["/next"]
    assert c.counters["oversized_heads"] == 1 and c.counters["resyncs"] == 1
    assert len(c._client.buf) == 0


def test_endless_head_is_bounded() -> None:
    c = HttpConnection(max_head=1000, max_resync=5000)
    c.feed_client(b"GET / HTTP/1.1\r\n", 1)
    for i in range(100):
        c.feed_client(b"X-Filler: " + b"z" * 80 + b"\r\n", i)
        assert len(c._client.buf) <= 1000 + 100
    assert c.counters["oversized_heads"] == 1
    assert c.client_state in ("resync", "dead")


def test_past_max_pending_placeholders_keep_the_pairing() -> None:
    c = HttpConnection(max_pending=2)
    heads = [b"GET /0 HTTP/1.1\r\n\r\n", b"GET /1 HTTP/1.1\r\n\r\n"]
    heads += [b"HEAD /2 HTTP/1.1\r\n\r\n", b"GET /3 HTTP/1.1\r\n\r\n"]
    ev = c.feed_client(b"".join(heads), 1)
    assert [r.target for r in reqs(ev)] == ["/0", "/1", "/2", "/3"] and txs(ev) == []
    assert c.counters["pending_overflow"] == 2 and len(c.pending) == 4
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"  # no body: HEAD
    ev = c.feed_server(OK + OK + head_answer + OK, 2)
    got = [(t.target, t.status, t.response.body) for t in txs(ev)]
    assert got == [
        ("/0", 200, b"hello"),
        ("/1", 200, b"hello"),
        ("", 200, b""),  # the placeholder still said HEAD
        ("", 200, b"hello"),
    ]
    assert c.counters["orphan_responses"] == 0 and not c.pending


def test_past_the_placeholders_the_oldest_is_dropped() -> None:
    c = HttpConnection(max_pending=1)
    ev = c.feed_client(b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % i for i in range(18)), 1)
    (dropped,) = txs(ev)
    assert dropped.target == "/0" and dropped.response is None
    assert c.counters["pending_dropped"] == 2 and len(c.pending) == 16
    assert c.counters["unanswered"] == 2  # the second was a placeholder: no event


def test_tls_on_port_80_is_not_http() -> None:
    c = HttpConnection()
    hello = bytes.fromhex("160301020001000101fc0303") + b"\x00" * 100
    assert c.feed_client(hello, 1) == []
    assert c.not_http and not c.active
    assert c.feed_server(b"HTTP/1.1 200 OK\r\n\r\n", 2) == []
    assert c.close(3) == []
    assert c.counters["not_http"] == 1


@pytest.mark.parametrize(
    ("client", "server"),
    [
        (b"SSH-2.0-OpenSSH_9.0\r\n", b""),
        (b"", b"220 mail.example.com ESMTP\r\n"),
        (b"", b"+OK POP3 ready\r\n"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b""),
        (b"USER alice\r\n", b""),
    ],
)
def test_other_protocols_are_not_http(client: bytes, server: bytes) -> None:
    c = HttpConnection()
    if server:
        assert c.feed_server(server, 1) == []
    if client:
        assert c.feed_client(client, 2) == []
    assert c.not_http, (c.client_state, c.server_state)
    assert c.counters["malformed"] == 0 and c.close(3) == []


def test_server_answering_with_something_else_is_given_up() -> None:
    c = HttpConnection()
    c.feed_client(GET, 1)
    assert c.feed_server(b"SSH-2.0-OpenSSH_5.9\r\n", 2) == []
    assert not c.not_http and c.server_state == "dead"
    (tx,) = txs(c.close(3))
    assert tx.response is None and tx.method == "GET"


def test_midstream_pickup_skips_to_the_next_message() -> None:
    c = HttpConnection(midstream=True)
    ev = c.feed_client(b"rest of a body\r\nmore\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n", 1)
    assert [r.target for r in reqs(ev)] == ["/x"]
    ev = c.feed_server(b"ly the end of a response body\r\n" + OK, 2)
    (tx,) = txs(ev)
    assert tx.target == "/x" and tx.status == 200


def test_malformed_head_resyncs_and_pairs_the_rest() -> None:
    c = HttpConnection()
    ev = c.feed_client(
        GET + b"GET /bad HTTP/1.1\r\nBad Header: x\r\n\r\n" + b"GET /good HTTP/1.1\r\n\r\n", 1
    )
    assert [r.target for r in reqs(ev)] == ["/a?x=1", "/good"]
    assert c.counters["malformed"] == 1 and c.counters["resyncs"] == 1
    ev = c.feed_server(OK + b"HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n", 2)
    assert [(t.target, t.status) for t in txs(ev)] == [("/a?x=1", 200), ("/good", 400)]


def test_bad_chunk_resyncs() -> None:
    c = HttpConnection()
    c.feed_client(GET + GET, 1)
    ev = c.feed_server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\ngarbage\r\n" + OK, 2
    )
    first, second = txs(ev)
    assert not first.response.complete and "incomplete" in first.response.defects
    assert second.status == 200 and second.response.body == b"hello"
    assert c.counters["bad_chunks"] == 1


def test_unknown_method_and_utf8_target() -> None:
    c = HttpConnection()
    (req,) = reqs(c.feed_client("PURGE /caf\u00e9 HTTP/1.1\r\nHost: h\r\n\r\n".encode(), 1))
    assert req.method == "PURGE" and req.target == "/caf\u00e9" and req.host == "h"
    (req,) = reqs(c.feed_client(b"MKCOL /d HTTP/1.1\r\nHost: h\r\n\r\n", 2))
    assert req.method == "MKCOL"


@pytest.mark.parametrize("control", [b"\x01", b"\x00", b"\t", b"\x1b", b"\x7f"])
@pytest.mark.parametrize("first", [True, False])
def test_control_bytes_in_a_target_do_not_hide_the_connection(control: bytes, first: bool) -> None:
    # A lenient server (Python's http.server splits the line on blanks) serves such a
    # request: the connection stays HTTP, the request is read, its Host seen, flagged.
    c = HttpConnection()
    odd = b"GET /a" + control + b"b HTTP/1.1\r\nHost: hidden.example\r\n\r\n"
    plain = b"GET /next HTTP/1.1\r\nHost: hidden.example\r\n\r\n"
    got = reqs(c.feed_client(odd + plain if first else plain + odd, 1))
    assert not c.not_http and c.counters["malformed"] == 0
    assert [r.host for r in got] == ["hidden.example", "hidden.example"]
    req = got[0] if first else got[1]
    assert req.target == "/a" + control.decode() + "b" and req.defects == ("target_controls",)
    assert got[1 if first else 0].defects == ()


def test_upgrade_101_makes_a_tunnel() -> None:
    c = HttpConnection()
    c.feed_client(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 1
    )
    ev = c.feed_server(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello", 2
    )
    (tx,) = txs(ev)
    assert tx.status == 101 and c.tunnel and not c.active
    assert c.feed_client(b"\x81\x85garbage", 3) == [] and c.counters["malformed"] == 0
    assert c.close(4) == [] and c.counters["transactions"] == 1


def test_connect_2xx_makes_a_tunnel() -> None:
    c = HttpConnection()
    (req,) = reqs(
        c.feed_client(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 1)
    )
    assert (req.path, req.host) == ("", "example.com")
    (tx,) = txs(c.feed_server(b"HTTP/1.1 200 Connection established\r\n\r\n", 2))
    assert c.tunnel and tx.status == 200
    assert c.feed_client(b"\x16\x03\x01\x00\x05hello", 3) == [] and not c.not_http
    assert c.close(4) == [] and c.counters["transactions"] == 1


def test_gap_of_known_size_in_a_body_stays_in_step() -> None:
    c = HttpConnection()
    c.feed_client(GET + GET, 1)
    c.feed_server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n012", 2)
    c.gap_server(4, 3)
    ev = c.feed_server(b"789" + OK, 4)
    first, second = txs(ev)
    assert first.response.body_seen == 6 and "gap" in first.response.defects
    assert first.response.complete
    assert second.response.body == b"hello" and c.counters["gaps"] == 1


def test_gap_in_a_head_resyncs() -> None:
    c = HttpConnection()
    c.feed_client(b"GET /lost HTTP/1.1\r\nHo", 1)
    c.gap_client(None, 2)
    (req,) = reqs(c.feed_client(b"st: h\r\n\r\nGET /after HTTP/1.1\r\n\r\n", 3))
    assert req.target == "/after" and c.counters["resyncs"] == 1


def test_content_length_and_chunked_flags_a_defect_and_chunked_wins() -> None:
    c = HttpConnection()
    ev = c.feed_client(
        b"POST / HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
        1,
    )
    first, second = reqs(ev)
    assert first.body == b"abc" and "cl_and_te" in first.defects and second.target == "/2"


def test_request_with_other_transfer_coding_is_malformed() -> None:
    c = HttpConnection()
    ev = c.feed_client(
        GET + b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nxx\r\nGET /z HTTP/1.1\r\n\r\n", 1
    )
    assert [r.target for r in reqs(ev)] == ["/a?x=1", "/z"]
    assert c.counters["malformed"] == 1


def test_orphan_response() -> None:
    c = HttpConnection()
    c.feed_client(b"", 0)
    (tx,) = txs(c.feed_server(OK, 1))
    assert tx.request is None and tx.status == 200 and tx.duration_ns is None
    assert c.counters["orphan_responses"] == 1


def test_close_flushes_incomplete_and_unanswered() -> None:
    c = HttpConnection()
    c.feed_client(GET + b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 1)
    c.feed_server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345", 2)
    ev = c.close(3)
    (post,) = reqs(ev)
    assert post.target == "/p" and not post.complete and post.body == b"abc"
    first, second = txs(ev)
    assert first.target == "/a?x=1" and not first.response.complete
    assert second.target == "/p" and second.response is None
    assert c.counters["unanswered"] == 1 and not c.active


@pytest.mark.parametrize(
    ("target", "host", "path", "query", "want_host"),
    [
        ("/p", "[2001:db8::1]:8080", "/p", "", "[2001:db8::1]"),
        ("/p?", "h:", "/p", "", "h"),
        ("http://u@abs.example:81/x/y?q#frag", "", "/x/y", "q", "abs.example"),
        ("http://abs.example", "", "/", "", "abs.example"),
        ("*", "h", "*", "", "h"),
    ],
)
def test_targets_and_hosts(target: str, host: str, path: str, query: str, want_host: str) -> None:
    head = f"OPTIONS {target} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host else "") + "\r\n"
    req = parse_request_head(head.encode())
    assert (req.path, req.query, req.host) == (path, query, want_host)


def test_duplicate_host_is_a_defect() -> None:
    req = parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert req.host == "a" and "duplicate_host" in req.defects


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: h\r\n",  # no end
        b"GET /\r\n\r\n",  # HTTP/0.9
        b"GET / HTTP/3.0\r\n\r\n",
        b"\x16\x03\x01\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ],
)
def test_parse_request_head_raises_only_http_error(data: bytes) -> None:
    with pytest.raises(HttpError) as info:
        parse_request_head(data)
    assert isinstance(info.value, ParseError)


def test_parse_response_head() -> None:
    resp = parse_response_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\n\r\nbody")
    assert (resp.status, resp.reason, resp.body_declared) == (404, "Not Found", 12)
    with pytest.raises(HttpError):
        parse_response_head(b"HTTP/2.0 200 OK\r\n\r\n")
    with pytest.raises(HttpError):
        parse_response_head(b"ICE/1.0 200 OK\r\n\r\n")


@pytest.mark.parametrize(
    ("data", "want"),
    [(b"GET ", True), (b"GE", None), (b"", None), (b"\x16\x03", False), (b"\r\nPOST /", True)],
)
def test_looks_like_http_request(data: bytes, want: bool | None) -> None:
    assert looks_like_http_request(data) is want


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_body": -1},
        {"max_head": 10},
        {"max_pending": 0},
        {"max_body": True},
        {"max_resync": "x"},
    ],
)
def test_bad_limits_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValidationError) as info:
        HttpConnection(**kwargs)
    assert next(iter(kwargs)) in str(info.value)


def test_shared_counters_sum_connections() -> None:
    counters: dict[str, int] = {}
    for _ in range(3):
        c = HttpConnection(counters=counters)
        c.feed_client(GET, 1)
        c.feed_server(OK, 2)
    assert counters["transactions"] == 3


def test_ecs_strings_are_wire_safe() -> None:
    c = HttpConnection()
    c.feed_client(b"GET /\xff HTTP/1.1\r\nHost: h\xfe\r\nUser-Agent: a\xff\x1b[31m\r\n\r\n", 1)
    (tx,) = txs(c.feed_server(OK, 2))
    ecs = tx.ecs()
    for key in ("url.original", "url.domain", "user_agent.original"):
        value = ecs[key]
        assert isinstance(value, str)
        value.encode("utf-8")  # no lone surrogates
        assert "\ufffd" in value
    assert tx.target.encode("utf-8", "surrogateescape") == b"/\xff"
    assert tx.user_agent.encode("utf-8", "surrogateescape") == b"a\xff\x1b[31m"


@pytest.mark.parametrize("step", [1, 7, 1000])
def test_resync_finds_a_start_split_anywhere(step: int) -> None:
    c = HttpConnection()
    client = GET + b"BROKEN\r\n\r\nxx HTTP/ yy\r\nGET /found HTTP/1.1\r\nHost: h\r\n\r\n"
    server = (
        OK + b"garbage HTTP/1.1 2xx nope\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    )
    events = []
    for i in range(0, len(client), step):
        events += c.feed_client(client[i : i + step], 1)
    for i in range(0, len(server), step):
        events += c.feed_server(server[i : i + step], 2)
    assert [r.target for r in reqs(events)] == ["/a?x=1", "/found"]
    assert [(t.target, t.status) for t in txs(events)] == [("/a?x=1", 200), ("/found", 404)]
    assert c.counters["resyncs"] == 2


@pytest.mark.parametrize("side", ["client", "server"])
def test_resync_over_hostile_bytes_is_linear(side: str) -> None:
    """60 KB of "HTTP/" without a line end, one byte at a time: each byte is looked at
    a bounded number of times (this took minutes when every call rescanned the line)."""
    c = HttpConnection()
    c.feed_client(GET, 1)
    if side == "client":
        feed, start = c.feed_client, b"BROKEN\r\n\r\n"
    else:
        feed, start = c.feed_server, OK + b"junk\r\n"
    feed(start, 1)
    junk = b"HTTP/" * 12_000
    t0 = time.process_time()
    for i in range(len(junk)):
        feed(junk[i : i + 1], 2)
    assert time.process_time() - t0 < 5.0
    state = c.client_state if side == "client" else c.server_state
    assert state in ("resync", "dead")


def test_a_lost_response_head_costs_its_request_only() -> None:
    c = HttpConnection()
    c.feed_client(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", 1)
    ev = c.feed_server(b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 3\r\n\r\nabc" + OK, 2)
    first, second = txs(ev)
    assert (first.target, first.response) == ("/1", None)
    assert (second.target, second.status) == ("/2", 200)
    assert c.counters["malformed"] == 1 and c.counters["unanswered"] == 1


def test_decoded_body() -> None:
    import gzip
    import zlib

    text = b"keyword " * 2000
    for coding, blob in (
        ("gzip", gzip.compress(text)),
        ("deflate", zlib.compress(text)),
        ("deflate", zlib.compress(text)[2:-4]),  # raw deflate, as some servers send
    ):
        c = HttpConnection()
        c.feed_client(GET, 1)
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\n"
        head += f"Content-Length: {len(blob)}\r\n\r\n"
        (tx,) = txs(c.feed_server(head.encode() + blob, 2))
        assert tx.response.body == blob
        assert tx.response.decoded_body() == text
        assert tx.response.decoded_body(100) == text[:100]  # the output is bounded
    resp = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n")
    assert resp.decoded_body() is None
    c = HttpConnection()
    c.feed_client(GET, 1)
    (tx,) = txs(
        c.feed_server(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope", 2
        )
    )
    assert tx.response.decoded_body() is None
    c.feed_client(GET, 3)
    (tx,) = txs(c.feed_server(OK, 4))
    assert tx.response.decoded_body() == b"hello"  # no Content-Encoding: as sent
