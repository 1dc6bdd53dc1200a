"""The HTTP parser's resync bound: after a malformed head a direction looks for the
next message start through at most ``max_resync`` skipped bytes, then gives up
(``gave_up``; nothing more is parsed on it). Within the budget the next request is
found and counted as a resync."""

from __future__ import annotations

import pytest

from lc.common.http import HttpConnection, HttpRequest

LINE = b"z" * 99 + b"\n"


@pytest.mark.parametrize(("lines", "found"), [(40, True), (80, False)])
def test_garbage_past_the_resync_budget_gives_the_direction_up(lines: int, found: bool) -> None:
    c = HttpConnection(max_resync=5000)
    ev = c.feed_client(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", 1)
    ev += c.feed_client(b"GET /b HTTP/1.1\r\nBad Header Line\r\n\r\n" + LINE, 2)
    for _ in range(lines):  # 4,000 or 8,000 bytes of lines that start nothing
        ev += c.feed_client(LINE, 3)
    ev += c.feed_client(b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n", 4)
    targets = [e.target for e in ev if isinstance(e, HttpRequest)]
    assert c.counters["malformed"] == 1 and c.counters["resyncs"] == 1
    if found:
        assert targets == ["/a", "/c"] and c.counters["gave_up"] == 0
        assert c.counters["skipped_bytes"] == 41 * len(LINE)
    else:
        assert targets == ["/a"] and c.counters["gave_up"] == 1 and c.client_state == "dead"
        assert 5000 < c.counters["skipped_bytes"] <= 5000 + len(LINE)
