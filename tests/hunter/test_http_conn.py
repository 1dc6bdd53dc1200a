"""The HTTP mode's hookup to the connection engine, with hand-built frames: the
server's FIN completes an until-close body at once, a connection picked up without its
SYN is parsed in mid-stream mode, and bpf / ip_address select connections that carry
TLS (which the HTTP parser cannot read)."""

from __future__ import annotations

import pytest

from lc.common.errors import ValidationError
from lc.common.filters import Filter, compile_filters
from lc.hunter.modes.base import ModeContext
from lc.hunter.modes.http import HTTP_FILTER_TYPES, HttpConfig, http_mode
from tests.hunter.conn_toy import ACK, FIN, Conn, chunk, records

T0 = 1_700_000_000 * 10**9
S = 10**9
PORT = 8080


def mode(*filters: tuple[str, str], events: str = "captured"):
    m = http_mode(ModeContext([("eth0", 1)], "deny", events), HttpConfig())
    fs = [Filter(id=f"f{k}", type=t, pattern=p) for k, (t, p) in enumerate(filters)]
    m.apply(compile_filters(fs, "h", HTTP_FILTER_TYPES))
    return m


def test_the_servers_fin_completes_an_until_close_body_and_decides_at_once() -> None:
    m = mode(("keyword", "moonbase"))
    a = Conn(1, PORT)
    first = [*a.handshake(), a.client(b"GET /x HTTP/1.0\r\nHost: h.example\r\n\r\n"),
             a.server(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nthe moon"),
             a.server(b"base is here"), a.client_ack()]  # fmt: skip
    fwd = m.process(chunk(first, T0))
    assert records(fwd) == [] and fwd.events == []  # the body may go on: undecided
    fin = a._s(FIN | ACK)
    fwd = m.process(chunk([fin], T0 + S))
    # The FIN ends the body: the keyword in it (across two segments) captures the
    # connection now, every frame so far in order, and its transaction is reported.
    assert records(fwd) == [*first, fin]
    (ev,) = fwd.events
    assert ev.http.status == 200 and ev.http.response_body_bytes == len(b"the moonbase is here")
    assert list(ev.http.keywords) == ["moonbase"] and ev.captured
    rest = [a._c(FIN | ACK), a._s(ACK)]
    assert records(m.process(chunk(rest, T0 + 2 * S))) == rest


def test_a_fin_before_missing_bytes_waits_for_them() -> None:
    m = mode(("keyword", "moonbase"))
    a = Conn(2, PORT)
    head = [*a.handshake(), a.client(b"GET / HTTP/1.1\r\nHost: h.example\r\n\r\n"),
            a.server(b"HTTP/1.1 200 OK\r\n\r\nmoon")]  # fmt: skip
    late = a.server(b"base")  # lost, then retransmitted after the FIN
    fin = a._s(FIN | ACK)
    assert records(m.process(chunk([*head, fin], T0))) == []
    fwd = m.process(chunk([late], T0 + S))
    assert records(fwd) == [*head, fin, late] and len(fwd.events) == 1


def test_a_connection_picked_up_mid_stream_is_parsed_from_its_next_message() -> None:
    m = mode(("http_host", "mid.example"))
    a = Conn(3, PORT)  # no handshake: the capture began during a POST body
    frames = [a.client(b"ield=1234&more=5678\r\n"),
              a.client(b"GET /next HTTP/1.1\r\nHost: mid.example\r\n\r\n"),
              a.server(b"HTTP/1.1 204 No Content\r\n\r\n")]  # fmt: skip
    fwd = m.process(chunk(frames, T0))
    assert records(fwd) == frames
    (ev,) = fwd.events + m.finish().events
    assert ev.http.target == "/next" and ev.http.status == 204


def test_with_its_syn_seen_a_connection_that_starts_with_garbage_is_not_http() -> None:
    m = mode(("http_host", "mid.example"))
    a = Conn(4, PORT)
    frames = [*a.handshake(), a.client(b"ield=1234&more=5678\r\n"),
              a.client(b"GET /next HTTP/1.1\r\nHost: mid.example\r\n\r\n")]  # fmt: skip
    assert records(m.process(chunk(frames, T0))) == []
    assert m.dis.http_counters["not_http"] == 1


CLIENT_HELLO = bytes.fromhex("160301002e0100002a0303") + bytes(32) + bytes.fromhex("000002c02f0100")


def test_bpf_and_ip_address_select_connections_that_carry_tls_whole() -> None:
    for filt in (("bpf", "host 10.0.0.5"), ("ip_address", "10.0.0.5")):
        m = mode(filt)
        tls, other = Conn(5, PORT), Conn(6, PORT)
        frames = [*tls.handshake(), tls.client(CLIENT_HELLO),
                  tls.server(b"\x16\x03\x03\x00\x01x"), *other.handshake(),
                  other.client(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")]  # fmt: skip
        fwd = m.process(chunk(frames, T0))
        assert records(fwd) == frames[:5], filt
        assert all(list(fwd.meta[i].filter_ids) == ["f0"] for i in range(5))
        later = [tls.client(b"\x17\x03\x03\x00\x02ab"), *tls.close()]
        assert records(m.process(chunk(later, T0 + S))) == later, filt
        assert m.dis.http_counters["not_http"] == 1  # the TLS one: never parsed


def test_a_bpf_filter_matching_a_later_frame_flushes_the_held_ones_in_order() -> None:
    m = mode(("bpf", "tcp[13] & 4 != 0"))  # a RST
    a, b = Conn(7, PORT), Conn(8, PORT)
    frames = [*a.handshake(), a.client(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), *b.handshake()]
    assert records(m.process(chunk(frames, T0))) == []
    rst = a.reset()
    fwd = m.process(chunk([rst], T0 + S))
    assert records(fwd) == [*frames[:4], rst]
    assert m.table.counters["matched"] == 1


def test_a_bpf_filter_that_does_not_compile_is_refused_and_the_old_set_stays() -> None:
    m = mode(("http_host", "a.example"))
    bad = compile_filters([Filter(id="b", type="bpf", pattern="nonsense ((")], "h", ("bpf",))
    with pytest.raises(ValidationError):
        m.apply(bad)
    assert m._fs.has("http_host")
