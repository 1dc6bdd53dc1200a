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
