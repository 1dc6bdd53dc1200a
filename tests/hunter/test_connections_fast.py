"""The fast path of whole-connection capture (lc.hunter.modes.sessions): once a
connection is decided and wants no more messages (``ignore_rest``), its later IPv4
frames but SYNs are placed by one look-up in the per-chunk loop: forwarded when
matched, counted when rejected, FIN and RST still end it, a SYN still opens a new
connection on its 5-tuple. Toy line protocol of tests/hunter/conn_toy.py."""

from __future__ import annotations

from lc.hunter.session import SessionLimits
from tests.hunter.conn_toy import Conn, line_mode
from tests.hunter.test_connections import T0, S, feed, keyword


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
    # that still wants its messages take the in-order path (SessionMode._live).
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
