"""The fast path of whole-connection capture (lc.hunter.modes.sessions): once a
connection is decided and wants no more messages (``ignore_rest``), its later IPv4
frames but SYNs are placed by one look-up in the per-chunk loop: forwarded when
matched, counted when rejected, FIN and RST still end it, a SYN still opens a new
connection on its 5-tuple. Toy line protocol of tests/hunter/conn_toy.py."""

from __future__ import annotations

import pytest

from lc.common.filters import Filter, compile_filters
from lc.hunter.session import SessionLimits
from tests.hunter.conn_toy import Conn, chunk, line_mode, records
from tests.hunter.test_connections import T0, S, feed, keyword
from tests.hunter.test_voip import CORPUS, need_corpus


def test_decided_connections_take_the_fast_path_and_still_end():
    m = line_mode(SessionLimits(grace_ns=2 * S))
    keyword(m, "secret")
    slow = []  # frames the per-chunk loop handed to the decoding path
    decode = m._slow
    m._slow = lambda pkt, *rest: (slow.append(pkt), decode(pkt, *rest))
    a, b = Conn(1), Conn(2)
    # a matches and ignores the rest; b is settled (DONE) unmatched and ignores the rest.
    a_head = [*a.handshake(), a.client(b"secret\nIGNORE\n")]
    b_head = [*b.handshake(), b.client(b"DONE\nIGNORE\n")]
    assert feed(m, a_head + b_head) == a_head
    # Only the SYNs decode; the handshake's ACK and the in-order data of a connection
    # that still wants its messages take the in-order path (TcpStreams.in_order).
    assert [bytes(p[3][16:]) for p in slow] == [a_head[0], a_head[1], b_head[0], b_head[1]]
    del slow[:]
    a_tail = [a.server(b"x" * 300), a.client_ack(), a.client(b"no secret parsed\n"), *a.close()]
    b_tail = [b.server(b"y" * 300), b.client_ack(), *b.close()]
    frames = [x for pair in zip(a_tail, b_tail, strict=False) for x in pair] + a_tail[5:]
    assert feed(m, frames, T0 + S) == a_tail
    f = m.counters()
    assert len(slow) <= 2  # at most each connection's first frame after ignore_rest
    assert f.figures["connection_frames"] == len(a_head + b_head + a_tail + b_tail)
    assert f.dropped["filtered"] == len(b_head + b_tail)
    assert m.dis.seen == [b"secret", b"IGNORE", b"DONE", b"IGNORE"]  # nothing parsed after
    sessions = {s.key[1]: s for s in m.table.sessions.values()}
    assert sessions[40001].end_ns and sessions[40002].end_ns  # FINs on the fast path
    assert sessions[40001].pk[0] == len(a_head + a_tail)
    # A SYN on a's 5-tuple within the grace is a new connection, judged afresh.
    c = Conn(1)
    c.cseq += 9999
    again = [*c.handshake(), c.client(b"plain\n")]
    assert feed(m, again, T0 + 2 * S) == []
    assert m.counters().figures["connections_reused"] == 1
    m.tick(T0 + 5 * S)
    assert m.table.counters["ended"] == 2
    assert not m._conn_fast_tcp  # forgotten connections leave the fast path


# -- the in-order path (SessionMode._process, TcpStreams.in_order) ------------------------
_CAPTURES = [
    ("http", "http/zeek_http-pipelined-requests.pcap", [("http_method", "POST")]),
    ("http", "http/arkime_http-post-upload.pcap", [("keyword", "Content-Disposition")]),
    ("http", "http/ja4_http1.pcapng", [("http_host", "nothing.example")]),
    ("http", "mixed/zeek_wikipedia.pcap", [("http_status", "2xx")]),
    ("email", "smtp/zeek_smtp.pcap", [("email_address", "nothing@nowhere.example")]),
    ("email", "pop3/suricata_pop3.pcap", [("email_address", "*@*")]),
    ("email", "imap/arkime_imap.pcap", [("email_address", "nothing@nowhere.example")]),
    ("tls", "tls/arkime_tls-split-client-hello.pcap", [("tls_sni", "nothing.example")]),
    ("tls", "tls/ja4_tls-sni.pcapng", [("tls_sni", "*.com")]),
]


def _frames(path) -> list[bytes]:
    from lc.hunter.capture import FileSource

    src = FileSource(str(path))
    out = []
    while (c := src.read(4096)) is not None:
        off = 0
        for cap in c.caplen:
            out.append(bytes(c.records[off + 16 : off + 16 + cap]))
            off += 16 + cap
    src.close()
    return out


def _shaken(frames: list[bytes], seed: int) -> list[bytes]:
    """Adjacent frames swapped, some sent twice, a few lost: out of order, retransmitted
    and missing segments for the general path beside the in-order ones."""
    import random

    rnd = random.Random(seed)
    out, i = [], 0
    while i < len(frames):
        r = rnd.random()
        if r < 0.02:
            i += 1  # lost
        elif r < 0.12 and i + 1 < len(frames):
            out += [frames[i + 1], frames[i]]
            i += 2
        else:
            out.append(frames[i])
            if r > 0.95:
                out.append(frames[i])
            i += 1
    return out


def _outputs(mode_name: str, frames: list[bytes], filters: list, live: bool):
    from lc.hunter import modes
    from lc.hunter.modes.base import ModeContext

    spec = modes.get(mode_name)
    m = spec.factory(ModeContext([("f", 1)], policy="deny", events="all"), spec.config())
    fs = [Filter(id=f"f{k}", type=t, pattern=p) for k, (t, p) in enumerate(filters)]
    m.apply(compile_filters(fs, "h", spec.filter_types))
    m._live_ok = live and m._live_ok
    taken = [0]
    in_order = m._streams.in_order

    def counted(*args):
        got = in_order(*args)
        taken[0] += got is not None
        return got

    m._streams.in_order = counted
    out = []
    fwds = [m.process(chunk(frames[k : k + 64], T0 + k * 1000)) for k in range(0, len(frames), 64)]
    for fwd in [*fwds, m.finish()]:
        metas = [fwd.meta[k].SerializeToString(deterministic=True) for k in sorted(fwd.meta)]
        events = [e.SerializeToString(deterministic=True) for e in fwd.events]
        out.append((records(fwd), list(fwd.chunk.ts_ns), metas, events))
    c = m.counters()
    return out, c.figures, c.dropped, c.summary, taken[0]


@pytest.mark.parametrize(("mode_name", "capture", "filters"), _CAPTURES)
@pytest.mark.parametrize("seed", [None, 1, 2])
def test_the_in_order_path_changes_no_output(mode_name, capture, filters, seed) -> None:
    """Every packet, metadata, event and counter is the same with the in-order path as
    through the general one, on corpus captures as they are and shaken."""
    need_corpus()
    frames = _frames(CORPUS / capture)
    if seed is not None:
        frames = _shaken(frames, seed)
    fast = _outputs(mode_name, frames, filters, True)
    slow = _outputs(mode_name, frames, filters, False)
    assert fast[:4] == slow[:4]
    assert fast[4] > 0 and slow[4] == 0  # the path was taken, and only when allowed
