"""The HTTP mode's hookup to the connection engine, with hand-built frames: the
server's FIN completes an until-close body at once, a connection picked up without its
SYN is parsed in mid-stream mode, and bpf / ip_address select connections that carry
TLS (which the HTTP parser cannot read)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.errors import ValidationError
from lc.common.filters import Filter, compile_filters
from lc.hunter.modes.base import ModeContext
from lc.hunter.modes.http import HTTP_FILTER_TYPES, HttpConfig, http_mode
from tests.hunter.conn_toy import ACK, FIN, Conn, chunk, records
from tests.hunter.test_mode_fuzz import through_the_wire

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


def test_a_connection_evicted_while_its_streams_go_on_is_parsed_again() -> None:
    # The first piece of each direction binds its framer to the connection's parser;
    # once the connection is evicted (one followed at most), its next bytes must reach
    # the connection opened in its place, not the evicted one's closed parser.
    m = http_mode(ModeContext([("eth0", 1)], "deny"), HttpConfig(max_sessions=1))
    fs = [Filter(id="f0", type="http_host", pattern="late.example")]
    m.apply(compile_filters(fs, "h", HTTP_FILTER_TYPES))
    a, b = Conn(9, PORT), Conn(10, PORT)
    first = [*a.handshake(), a.client(b"GET /1 HTTP/1.1\r\nHost: early.example\r\n\r\n"),
             a.server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")]  # fmt: skip
    assert records(m.process(chunk([*first, *b.handshake()], T0))) == []
    assert m.table.counters["evicted"] == 1
    later = [a.client(b"GET /2 HTTP/1.1\r\nHost: late.example\r\n\r\n"),
             a.server(b"HTTP/1.1 204 No Content\r\n\r\n")]  # fmt: skip
    fwd = m.process(chunk(later, T0 + S))
    assert records(fwd) == later
    (ev,) = fwd.events + m.finish().events
    assert ev.http.target == "/2" and ev.http.status == 204 and ev.captured


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


# -- hypothesis: hostile HTTP connections through the mode and the wire -----------------

FUZZ_FILTERS = [
    Filter(id="host", type="http_host", pattern="*.example"),
    Filter(id="url", type="http_url", pattern="/a*"),
    Filter(id="method", type="http_method", pattern="POST"),
    Filter(id="status", type="http_status", pattern="5xx"),
    Filter(id="ua", type="http_user_agent", pattern="*curl*"),
    Filter(id="ja4h", type="http_ja4h", pattern="po11*"),
    Filter(id="kw", type="keyword", pattern="secret"),
    Filter(id="ip", type="ip_address", pattern="10.0.0.9"),
    Filter(id="bpf", type="bpf", pattern="tcp[13] & 1 != 0"),
]
PIECES = [b"GET /a HTTP/1.1\r\n", b"POST /b HTTP/1.0\r\n", b"HEAD / HTTP/1.1\r\n",
          b"Host: x.example\r\n", b"User-Agent: curl/8\r\n", b"Content-Length: 5\r\n",
          b"Content-Length: 99999999999\r\n", b"Transfer-Encoding: chunked\r\n",
          b"Content-Encoding: gzip\r\n", b"Expect: 100-continue\r\n", b" folded\r\n",
          b"\r\n", b"5\r\nsecre\r\n", b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\n",
          b"HTTP/1.1 503 Busy\r\n", b"HTTP/1.1 100 Continue\r\n\r\n", b"\xff\xfe\x00",
          b"\xed\xa0\x80", b"\x16\x03\x01\x00\x05hello", b"secret", b"\n"]  # fmt: skip


@st.composite
def connections(draw) -> list[bytes]:
    """Frames of 1-3 interleaved connections: optional handshake, pieces of HTTP-ish
    text in random segments either way, reordering, losses, FIN or RST, or nothing."""
    conns = []
    for n in range(draw(st.integers(1, 3))):
        c = Conn(9 + n, PORT)
        frames = list(c.handshake()) if draw(st.booleans()) else []
        for _ in range(draw(st.integers(0, 8))):
            data = b"".join(draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=6)))
            frames.append(c.client(data) if draw(st.booleans()) else c.server(data))
            if draw(st.integers(0, 4)) == 0:
                frames.append(c.client_ack())
        end = draw(st.sampled_from(["fin", "rst", "server-fin", "none"]))
        if end == "fin":
            frames += c.close()
        elif end == "rst":
            frames.append(c.reset())
        elif end == "server-fin":
            frames.append(c._s(FIN | ACK))
        if frames and draw(st.booleans()):  # one reordering and one loss
            i, j = draw(st.integers(0, len(frames) - 1)), draw(st.integers(0, len(frames) - 1))
            frames[i], frames[j] = frames[j], frames[i]
            del frames[draw(st.integers(0, len(frames) - 1))]
        conns.append(frames)
    out: list[bytes] = []
    while any(conns):
        k = draw(st.integers(0, len(conns) - 1))
        if conns[k]:
            out.append(conns[k].pop(0))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(connections(), st.sampled_from(["allow", "filters", "none"]), st.integers(1, 5))
def test_hostile_http_connections_through_the_mode_and_the_wire(frames, how, cut) -> None:
    policy = "allow" if how == "allow" else "deny"
    m = http_mode(ModeContext([("eth0", 1)], policy, "all"), HttpConfig(max_body=16))
    m.apply(compile_filters(FUZZ_FILTERS if how == "filters" else [], "h", HTTP_FILTER_TYPES))
    ifs = [("eth0", 1)]
    sent = 0
    got: list[bytes] = []
    step = max(1, len(frames) // cut)
    for k in range(0, len(frames), step):
        fwd = m.process(chunk(frames[k : k + step], T0 + k * S))
        got += records(fwd)
        sent += through_the_wire(fwd, ifs, k + 1)
    for fwd in (m.tick(T0 + 400 * S), m.finish()):
        got += records(fwd)
        sent += through_the_wire(fwd, ifs, 9999)
    assert sent == len(got) <= len(frames)
    assert all(got.count(f) <= frames.count(f) for f in got)  # nothing forwarded twice
    if how == "allow":
        assert got == frames  # every frame, in order: decided at the first packet
    elif how == "none":
        assert got == []
    c = m.counters()
    assert all(isinstance(v, int) and v >= 0 for v in c.figures.values())
    assert all(isinstance(v, int) and v >= 0 for v in c.dropped.values())


def test_the_key_log_is_followed_by_the_mode_and_its_lines_ride_as_extras(tmp_path) -> None:
    # --tls-keylog belongs to the HTTP mode: the lines appended to the file come out
    # of process/tick/finish as extras of kind "keylog" (at most 5 reads a second;
    # finish reads what is left), malformed ones counted in the mode's figures.
    keys = tmp_path / "sslkeys.txt"
    line1 = b"CLIENT_RANDOM " + b"ab" * 32 + b" " + b"cd" * 48
    line2 = b"CLIENT_HANDSHAKE_TRAFFIC_SECRET " + b"01" * 32 + b" " + b"ef" * 32
    keys.write_bytes(line1 + b"\n# a comment\nnot a key line\n")
    m = http_mode(ModeContext([("eth0", 1)], "deny"), HttpConfig(tls_keylog=str(keys)))
    a = Conn(11, PORT)
    fwd = m.process(chunk(a.handshake(), T0))
    assert fwd.extras == (("keylog", [line1]),)
    with keys.open("ab") as f:
        f.write(line2 + b"\n")
    assert m.process(chunk([a.client_ack()], T0 + S)).extras == ()  # read again later
    assert m.finish().extras == (("keylog", [line2]),)
    figures = m.counters().figures
    assert figures["tls_keylog_lines"] == 2 and figures["tls_keylog_malformed"] == 1
    plain = http_mode(ModeContext([("eth0", 1)], "deny"), HttpConfig())
    assert plain.process(chunk(a.handshake(), T0)).extras == ()
    assert "tls_keylog_lines" not in plain.counters().figures


def test_a_body_of_many_segments_leaves_no_frame_waiting() -> None:
    # Bound framers give the engine a message only for pieces that complete a request
    # or response (and one every 128 silent pieces, so the frames waiting for a
    # message stay few): a 300-segment body, then a match on the next request.
    m = mode(("http_url", "/second"))
    a = Conn(12, PORT)
    body = bytes(300 * 100)
    frames = [*a.handshake(), a.client(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n"),
              a.server(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))]  # fmt: skip
    frames += [a.server(body[i : i + 100]) for i in range(0, len(body), 100)]
    frames += [a.client(b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n")]
    fwd = m.process(chunk(frames, T0))
    assert records(fwd) == frames
    figures = m.counters().figures
    assert figures["tcp_pending_dropped"] == 0 and figures["http_responses"] == 1
    (ev,) = fwd.events  # the first transaction (the second waits for its response)
    assert ev.http.response_body_bytes == len(body) and ev.http.target == "/first"
