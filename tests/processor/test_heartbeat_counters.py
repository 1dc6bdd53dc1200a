"""A hunter's heartbeat carries its mode's figures (``counters.mode``): the processor's
bound on that table must hold every figure a real mode reports, or every heartbeat of
that hunter is refused (INVALID_ARGUMENT, logged by the hunter at debug only) and
``lc show hunter`` keeps the counters of its registration for ever."""

from __future__ import annotations

from lc.common.filters import Filter, compile_filters
from lc.hunter.modes.base import ModeContext
from lc.hunter.modes.http import HTTP_FILTER_TYPES, HttpConfig, http_mode
from lc.processor.service import check_heartbeat
from lc.processor.tree import _clean_hunter
from lc.proto import lc_pb2
from tests.hunter.conn_toy import Conn, chunk

T0 = 1_700_000_000 * 10**9


def _http_counters(tmp_path) -> lc_pb2.HunterCounters:
    keys = tmp_path / "keys.txt"
    keys.write_bytes(b"")
    m = http_mode(ModeContext([("eth0", 1)], "deny", "all"), HttpConfig(tls_keylog=str(keys)))
    m.apply(compile_filters([Filter("f", "http_host", "h.example")], "h", HTTP_FILTER_TYPES))
    a = Conn(1, 8080)
    frames = [*a.handshake(), a.client(b"GET / HTTP/1.1\r\nHost: h.example\r\n\r\n"),
              a.server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")]  # fmt: skip
    m.process(chunk(frames, T0))
    m.finish()
    mc = m.counters()
    return lc_pb2.HunterCounters(mode=mc.figures, dropped={**mc.dropped, "queue_full": 0})


def test_the_http_modes_heartbeat_after_traffic_is_accepted(tmp_path) -> None:
    c = _http_counters(tmp_path)
    assert len(c.mode) > 64  # the engine's, the parser's and the key log's figures
    check_heartbeat(lc_pb2.HeartbeatRequest(hunter_id="h1", counters=c))  # no refusal


def test_a_hunter_below_keeps_all_its_figures_when_shown_from_above(tmp_path) -> None:
    c = _http_counters(tmp_path)
    shown = _clean_hunter(lc_pb2.HunterInfo(hunter_id="h1", counters=c), ["p1"])
    assert shown is not None and dict(shown.counters.mode) == dict(c.mode)
