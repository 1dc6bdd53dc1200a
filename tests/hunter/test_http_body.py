"""``lc hunt http --max-body-size`` and ``--capture-body`` through the mode: the
examined prefix of each body is what ``keyword`` filters search (always) and what the
transaction's event carries (only with --capture-body); the body's length is counted
whole and the event says the body was cut."""

from __future__ import annotations

from lc.common.filters import Filter, compile_filters
from lc.hunter.modes.base import ModeContext
from lc.hunter.modes.http import HTTP_FILTER_TYPES, HttpConfig, http_mode
from tests.hunter.conn_toy import Conn, chunk, records

T0 = 1_700_000_000 * 10**9
PORT = 8080
BODY = b"user=alice&early=1&" + b"x" * 40 + b"&late=lateword"


def _run(cfg: HttpConfig, *words: str, events: str = "all"):
    m = http_mode(ModeContext([("eth0", 1)], "deny", events), cfg)
    fs = [Filter(id=f"k{n}", type="keyword", pattern=w) for n, w in enumerate(words)]
    m.apply(compile_filters(fs, "h", HTTP_FILTER_TYPES))
    a = Conn(1, PORT)
    frames = [*a.handshake(),
              a.client(b"POST /form HTTP/1.1\r\nHost: h.example\r\nContent-Length: %d\r\n\r\n"
                       % len(BODY) + BODY[:30]),
              a.client(BODY[30:]),
              a.server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]  # fmt: skip
    fwd = m.process(chunk(frames, T0))
    done = m.finish()
    return frames, records(fwd) + records(done), [*fwd.events, *done.events]


def test_keywords_search_only_the_examined_prefix_of_a_body() -> None:
    cfg = HttpConfig(max_body=24)
    frames, got, _ = _run(cfg, "early=1")  # within the first 24 bytes
    assert got == frames
    _, got, (ev,) = _run(cfg, "lateword")  # beyond them: not examined, nothing captured
    assert got == [] and not ev.captured and list(ev.http.keywords) == []
    _, got, _ = _run(HttpConfig(), "lateword")  # the default 65536 examines it all
    assert got == frames


def test_capture_body_puts_the_examined_prefix_into_the_event() -> None:
    _, _, (ev,) = _run(HttpConfig(max_body=24, capture_body=True), "early=1")
    h = ev.http
    assert h.request_body == BODY[:24] and h.request_body_bytes == len(BODY)
    assert h.truncated and list(h.keywords) == ["early=1"] and ev.captured
    _, _, (ev,) = _run(HttpConfig(capture_body=True), "early=1")
    assert ev.http.request_body == BODY and not ev.http.truncated
    _, _, (ev,) = _run(HttpConfig(max_body=24), "early=1")  # without --capture-body
    assert ev.http.request_body == b"" and ev.http.request_body_bytes == len(BODY)


def test_forwarded_packets_carry_the_http_summary() -> None:
    """Metadata on forwarded packets: the packets that complete a request's head and
    its body carry its method, host, target, content type and body length; the one
    that completes a response its status, content type and body length; every other
    packet of the connection its session and filter ids only."""
    m = http_mode(ModeContext([("eth0", 1)], "deny"), HttpConfig())
    m.apply(compile_filters([Filter("u", "http_url", "/up*")], "h", HTTP_FILTER_TYPES))
    a = Conn(2, PORT)
    hs = a.handshake()
    frames = [*hs,
              a.client(b"PUT /up?x=1 HTTP/1.1\r\nHost: s.example\r\nContent-Type: text/csv\r\n"
                       b"Content-Length: 6\r\n\r\na,"),
              a.client(b"b\r\nc\n"),
              a.server(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 2\r\n\r\n{}")]  # fmt: skip
    fwd = m.process(chunk(frames, T0))
    assert records(fwd) == frames
    metas = [fwd.meta[i] for i in range(len(frames))]
    assert all(mt.protocol == "http" and list(mt.filter_ids) == ["u"] for mt in metas)
    assert len({mt.session_id for mt in metas}) == 1 and metas[0].session_id
    summaries = [mt.http if mt.HasField("http") else None for mt in metas]
    n = len(hs)
    assert summaries[:n] == [None] * n  # the handshake
    head, req, resp = summaries[n], summaries[n + 1], summaries[n + 2]
    assert head == req
    assert (req.method, req.host, req.target, req.status) == ("PUT", "s.example", "/up?x=1", 0)
    assert (req.content_type, req.body_bytes, req.response) == ("text/csv", 6, False)
    assert (resp.method, resp.status, resp.content_type) == ("", 201, "application/json")
    assert resp.body_bytes == 2 and resp.response
