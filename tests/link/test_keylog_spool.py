"""TLS key log lines (``lc hunt http --tls-keylog``) survive outages like packets: a
batch that carries them, with or without packets, goes to the spool while the link is
down, is there after a hunter restart, and the uplink sends them (``tls_keylog``)."""

from __future__ import annotations

from lc.common.wire import split_batch
from lc.hunter.batcher import SealedBatch
from lc.link.outbox import Outbox
from lc.link.spool import Spool, SpooledBatch
from lc.link.uplink import HunterIdentity, Uplink
from tests.link.test_outbox_spool import make_batch

K1 = b"CLIENT_RANDOM " + b"ab" * 32 + b" " + b"cd" * 48
K2 = b"CLIENT_TRAFFIC_SECRET_0 " + b"01" * 32 + b" " + b"ef" * 32


def test_key_lines_are_spooled_survive_a_restart_and_are_sent(tmp_path) -> None:
    with_packets = make_batch(1)
    with_packets.extras = {"keylog": [K1]}
    keys_only = SealedBatch(records=b"", count=0, iface=None, nbytes=0, extras={"keylog": [K2]})
    with Spool(tmp_path / "spool") as sp:
        ob = Outbox(spool=sp, epoch=3)  # offline: everything goes to the spool
        assert ob.put(with_packets) and ob.put(keys_only)
        assert len(sp) == 2
    with Spool(tmp_path / "spool") as sp:  # the hunter restarted
        ob = Outbox(spool=sp, epoch=4)
        ident = HunterIdentity("h", 4, "host", "0", "http", ["eth0"])
        up = Uplink("127.0.0.1:9", None, ident, ob, [("eth0", 1)], lambda: None)  # not started
        got = [ob.next_batch(0) for _ in range(2)]
        assert all(p is not None and isinstance(p.batch, SpooledBatch) for p in got)
        msgs = [split_batch(up._build(p))[0] for p in got]  # type: ignore[arg-type]
        assert [list(m.tls_keylog) for m in msgs] == [[K1], [K2]]
        assert [m.count for m in msgs] == [3, 0] and [p.epoch for p in got] == [3, 3]  # type: ignore[union-attr]
