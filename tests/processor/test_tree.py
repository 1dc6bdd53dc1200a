"""Processor tree pieces without gRPC: the tree's checks and views, the upstream spool
records (a source per batch), the forward sink inside the ingest's commit, the forwarded
batch's extras, and filters pushed down (store and hub)."""

from __future__ import annotations

import os
import sqlite3
import struct
from array import array

import pytest

from lc.common.errors import LcError, ValidationError
from lc.common.filters import Filter
from lc.common.pcapfile import PcapSink, frame_records
from lc.common.wire import build_batch, encode_batch, forward_extras, unpack_batch
from lc.link.outbox import Outbox
from lc.link.spool import Spool
from lc.processor.filterhub import FilterHub
from lc.processor.forward import Forwarder, UpstreamConfig
from lc.processor.ingest import Ingest
from lc.processor.store import FilterStore
from lc.processor.tree import MAX_NODES, Tree, check_via, clean_topology
from lc.proto import lc_pb2

# -- the tree ------------------------------------------------------------------------------


def _reg(pid: str, epoch: int = 1, height: int = 0, below=()) -> lc_pb2.RegisterRequest:
    return lc_pb2.RegisterRequest(
        hunter_id=pid,
        epoch=epoch,
        processor=lc_pb2.ProcessorInfo(height=height, descendants=list(below)),
    )


def test_cycles_are_refused_naming_the_processors():
    t = Tree("mid")
    t.set_upstream(["top", "root"], 6)
    with pytest.raises(ValidationError, match=r"cycle: processor 'mid' is this processor"):
        t.check_child("mid", lc_pb2.ProcessorInfo())
    with pytest.raises(ValidationError, match=r"'top' is already above it \(root -> top -> mid\)"):
        t.check_child("top", lc_pb2.ProcessorInfo())
    with pytest.raises(ValidationError, match=r"'e1' has 'root' below it"):
        t.check_child("e1", lc_pb2.ProcessorInfo(height=2, descendants=["x", "root"]))
    t.check_child("e1", lc_pb2.ProcessorInfo(height=2, descendants=["x", "y"]))  # fine


def test_depth_limit_is_the_smaller_of_our_own_and_what_the_upstream_allows():
    t = Tree("e", max_depth=3)
    t.check_child("c", lc_pb2.ProcessorInfo(height=2))  # 3 levels: allowed
    with pytest.raises(ValidationError, match=r"depth limit: .*'c' has 3 processor level"):
        t.check_child("c", lc_pb2.ProcessorInfo(height=3))
    t.set_upstream(["top"], 1)  # the top allows one level below us
    assert t.allowance == 1
    t.check_child("c", lc_pb2.ProcessorInfo(height=0))
    with pytest.raises(ValidationError, match="allows 1 level"):
        t.check_child("c", lc_pb2.ProcessorInfo(height=1))
    ancestors, levels = t.register_child(_reg("c"), "peer")
    assert ancestors == ["e", "top"] and levels == 0
    assert t.info() == lc_pb2.ProcessorInfo(height=1, descendants=["c"])


def test_a_child_carries_only_hunters_registered_through_it():
    t = Tree("top")
    assert not t.register_forwarded("e1", lc_pb2.RegisterRequest(hunter_id="h1", via=["e1"]))
    t.register_child(_reg("e1"), "p1")
    t.register_child(_reg("e2"), "p2")
    assert not t.may_carry("e1", "h1")
    assert t.register_forwarded("e1", lc_pb2.RegisterRequest(hunter_id="h1", via=["e1"]))
    assert t.may_carry("e1", "h1") and not t.may_carry("e2", "h1")
    # A hunter listed in a child's tree (its heartbeat) is registered through it too.
    topo = lc_pb2.Topology(
        processor_id="e2",
        hunters=[lc_pb2.HunterInfo(hunter_id="h2")],
        processors=[
            lc_pb2.Topology(processor_id="e3", hunters=[lc_pb2.HunterInfo(hunter_id="h3")])
        ],
    )
    assert t.heartbeat("e2", 1, topo)
    assert t.may_carry("e2", "h2") and t.may_carry("e2", "h3") and not t.may_carry("e1", "h3")
    assert not t.heartbeat("e2", 99, topo)  # another run: register again
    assert not t.heartbeat("nobody", 1, topo)
    assert t.info() == lc_pb2.ProcessorInfo(height=2, descendants=["e1", "e2", "e3"])


def _topo(pid: str, *below: lc_pb2.Topology) -> lc_pb2.Topology:
    return lc_pb2.Topology(processor_id=pid, processors=list(below))


def _race(names: list[str]) -> dict[str, Tree]:
    """A ring names[i] -> names[i + 1] -> ... -> names[0] whose registrations all passed
    at once: each processor knows only its upstream (its answer came after the check)."""
    trees = {n: Tree(n) for n in names}
    for i, n in enumerate(names):
        up = names[(i + 1) % len(names)]
        trees[up].check_child(n, lc_pb2.ProcessorInfo())  # nothing known yet: passes
    for i, n in enumerate(names):
        up = names[(i + 1) % len(names)]
        ancestors, levels = trees[up].register_child(_reg(n), "peer")
        trees[n].set_upstream(ancestors, levels)
    return trees


def test_a_loop_formed_by_simultaneous_registrations_is_cut_at_one_link_by_a_heartbeat():
    t = _race(["e1", "e2"])  # e1 -> e2 and e2 -> e1
    # e2's heartbeat at e1 (e2's tree: e1 below it): e2 is the greater id, cut here.
    assert not t["e1"].heartbeat("e2", 1, _topo("e2", _topo("e1")))
    why = t["e1"].cut_reason("e2")
    assert why.startswith("cycle: processor 'e2' is already above it (e2 -> e1); a processor")
    assert "loop e2 -> e1 -> e2; the link from 'e2', the greatest id in it, is cut" in why
    assert not t["e1"].is_child("e2") and not t["e1"].may_carry("e2", "h1")
    assert t["e1"].info() == lc_pb2.ProcessorInfo()
    # e1's heartbeat at e2 (e1's tree, either before or after the cut): kept.
    assert t["e2"].heartbeat("e1", 1, _topo("e1", _topo("e2")))
    assert t["e2"].heartbeat("e1", 1, _topo("e1"))
    assert t["e2"].is_child("e1") and t["e2"].cut_reason("e1") == ""
    # e2 registers again (its tree still has e1): refused with the registration's message.
    t["e2"].clear_upstream()  # what its uplink does on the refusal
    with pytest.raises(ValidationError, match=r"'e2' is already above it \(e2 -> e1\)"):
        t["e1"].check_child("e2", t["e2"].info())
    assert t["e1"].ancestors == ("e2",) and t["e2"].ancestors == ()


def test_a_ring_of_three_is_cut_once_at_the_link_from_its_greatest_id():
    t = _race(["b", "c", "a"])  # b -> c -> a -> b: the greatest, c, is a child of a
    # First heartbeats: each child's tree holds only its own child (no report yet).
    kept = [("c", "b", _topo("b", _topo("a"))), ("b", "a", _topo("a", _topo("c")))]
    for parent, child, tree in kept:
        assert t[parent].heartbeat(child, 1, tree), (parent, child)
    assert not t["a"].heartbeat("c", 1, _topo("c", _topo("b")))  # found b, a's upstream
    assert "loop c -> a -> b -> c; the link from 'c'" in t["a"].cut_reason("c")
    # Deeper (later) reports of the same loop cut nothing else.
    for parent, child, tree in kept:
        deep = _topo(child, _topo(tree.processors[0].processor_id, _topo(parent)))
        assert t[parent].heartbeat(child, 1, deep) and t[parent].is_child(child)
    assert t["a"].cuts == 1 and t["b"].cuts == 0 and t["c"].cuts == 0


def test_a_loop_is_found_however_deep_below_the_child_and_a_tree_is_left_alone():
    t = Tree("p")
    t.set_upstream(["q", "r"], 5)
    t.register_child(_reg("z"), "peer")
    # r (above p) is three levels below z: z -> p -> q -> r -> y -> x -> z; z is the max.
    assert not t.heartbeat("z", 1, _topo("z", _topo("k"), _topo("x", _topo("y", _topo("r")))))
    assert "loop z -> p -> q -> r -> y -> x -> z" in t.cut_reason("z")
    t.register_child(_reg("a"), "peer")  # the same loop through a: not a's link to cut
    assert t.heartbeat("a", 1, _topo("a", _topo("r")))
    t.register_child(_reg("z"), "peer")  # registered again: no longer cut
    assert t.cut_reason("z") == "" and t.is_child("z")
    assert t.heartbeat("z", 1, _topo("z", _topo("k", _topo("m"))))  # no loop


def test_what_a_child_is_told_follows_the_chain_above_as_it_changes():
    t = Tree("e1")
    assert t.register_child(_reg("e2"), "p") == (["e1"], 7)  # e1 has no upstream yet
    t.set_upstream(["e0", "top"], 1)  # e1 registered (or a heartbeat answer came)
    assert t.for_child() == (["e1", "e0", "top"], 0)  # e2's next heartbeat answer
    t.set_upstream([f"p{i}" for i in range(100)], 0)
    assert len(t.ancestors) == 64  # bounded
    t.clear_upstream()  # refused upstream: nothing above
    assert t.for_child() == (["e1"], 7) and t.allowance == 8


def test_views_count_depth_mark_stale_subtrees_and_give_the_path():
    now = [100.0]
    t = Tree("top", stale_after=30, clock=lambda: now[0])
    t.register_child(_reg("e1"), "p1")
    t.register_child(_reg("e2"), "p2")
    t.heartbeat(
        "e1",
        1,
        lc_pb2.Topology(
            processor_id="whatever-it-says",
            hunters=[lc_pb2.HunterInfo(hunter_id="h1", state="connected")],
            processors=[
                lc_pb2.Topology(
                    processor_id="e3",
                    hunters=[lc_pb2.HunterInfo(hunter_id="h3", state="connected")],
                )
            ],
        ),
    )
    t.register_forwarded("e2", lc_pb2.RegisterRequest(hunter_id="h2", via=["e2"]))
    kids = t.children()
    assert [(k.processor_id, k.depth, k.state) for k in kids] == [
        ("e1", 1, "connected"),
        ("e2", 1, "connected"),
    ]
    assert [(p.processor_id, p.depth) for p in kids[0].processors] == [("e3", 2)]
    assert [h.hunter_id for h in kids[1].hunters] == ["h2"]  # registered, not yet reported
    below = {h.hunter_id: (list(h.via), h.state) for h in t.hunters_below()}
    assert below == {
        "h1": (["e1"], "connected"),
        "h3": (["e1", "e3"], "connected"),
        "h2": (["e2"], "connected"),
    }
    now[0] += 31  # e1 and e2 silent: everything below them is stale, not "connected"
    t.heartbeat("e2", 1, lc_pb2.Topology())
    kids = t.children()
    assert [k.state for k in kids] == ["stale", "connected"]
    assert {h.state for h in kids[0].hunters} | {p.state for p in kids[0].processors} == {"stale"}
    assert t.hunter_below("h3").state == "stale"


def test_a_hunter_only_forwarded_from_a_spool_is_not_shown_connected():
    # A restarted edge drains batches an earlier run spooled, registering their hunter
    # upstream: that hunter is connected nowhere, and the top listed it "connected" for
    # as long as the edge ran. Its own hunters appear in its next report.
    t = Tree("top")
    t.register_child(_reg("e1"), "p1")
    t.register_forwarded("e1", lc_pb2.RegisterRequest(hunter_id="gone", via=["e1"]))
    t.register_forwarded("e1", lc_pb2.RegisterRequest(hunter_id="live", via=["e1"]))

    def states() -> tuple[dict[str, str], dict[str, str]]:
        below = {h.hunter_id: h.state for h in t.hunters_below()}
        listed = {h.hunter_id: h.state for h in t.children()[0].hunters}
        return below, listed

    assert states() == ({"gone": "connected", "live": "connected"},) * 2
    report = lc_pb2.Topology(hunters=[lc_pb2.HunterInfo(hunter_id="live", state="connected")])
    t.heartbeat("e1", 1, report)  # may have been made before the registration came
    assert states() == ({"gone": "connected", "live": "connected"},) * 2
    t.heartbeat("e1", 1, report)
    assert states() == ({"gone": "disconnected", "live": "connected"},) * 2
    assert t.may_carry("e1", "gone")  # its batches still go through
    # Registered again (a new session of the edge's uplink, sending its batches): for now.
    t.register_forwarded("e1", lc_pb2.RegisterRequest(hunter_id="gone", via=["e1"]))
    assert states()[0]["gone"] == "connected"


def test_a_reported_tree_is_cleaned_and_bounded():
    huge = lc_pb2.Topology(processor_id="e1")
    huge.hunters.add(hunter_id="../bad", hostname="x")
    huge.hunters.add(hunter_id="ok", hostname="h" * 1000, state="weird", interfaces=["i"] * 100)
    huge.hunters[1].counters.dropped["k" * 200] = 1
    for i in range(MAX_NODES + 10):
        huge.processors.add(processor_id=f"p{i}")
    huge.processors.add(processor_id="bad/id")
    t = clean_topology(huge, "e1")
    assert [h.hunter_id for h in t.hunters] == ["ok"]
    h = t.hunters[0]
    assert len(h.hostname) == 255 and h.state == "stale" and len(h.interfaces) == 64
    assert list(h.via) == ["e1"] and all(len(k) <= 64 for k in h.counters.dropped)
    assert len(t.hunters) + len(t.processors) == MAX_NODES
    deep = lc_pb2.Topology(processor_id="x")
    node = deep
    for i in range(200):
        node = node.processors.add(processor_id=f"d{i}")
    depth, node = 0, clean_topology(deep, "x")
    while node.processors:
        node, depth = node.processors[0], depth + 1
    assert depth == 64


def test_via_must_start_with_the_caller():
    assert check_via(["e1", "e2"], "e1") == ["e1", "e2"]
    assert check_via(["e1"], None) == ["e1"]  # --insecure: no certificate to compare
    for via, caller, words in (
        ([], "e1", "1 to 64"),
        (["e2"], "e1", "must name it first"),
        (["e1", "a/b"], "e1", "invalid processor id"),
    ):
        with pytest.raises(ValidationError, match=words):
            check_via(via, caller)


# -- the upstream spool: a source per record -------------------------------------------------


def _records(n: int, size: int = 60, t0: int = 1_700_000_000_000_000_000) -> bytes:
    ts = array("q", [t0 + i for i in range(n)])
    cl = array("I", [size] * n)
    return frame_records(ts, cl, cl, b"\x01" * (size * n))


def test_spool_keeps_each_batch_under_its_source_across_a_restart(tmp_path):
    with Spool(tmp_path) as sp:
        assert sp.append(7, 1, _records(2), 2, source="h1")
        assert sp.append(7, 1, _records(3), 3, source="h2", extras=b"x")  # same (epoch, seq)
        assert sp.append(7, 1, _records(1), 1)  # the owner's own
        assert not sp.ack(7, 1, "h3") and len(sp) == 3
        assert sp.ack(7, 1, "h2") and len(sp) == 2
    with Spool(tmp_path) as sp:
        got = [(b.source, b.epoch, b.sequence, b.count) for b in sp.pending()]
        assert got == [("h1", 7, 1, 2), ("", 7, 1, 1)]
        assert sp.ack(7, 1) and sp.ack(7, 1, "h1") and len(sp) == 0


def test_a_flipped_bit_in_the_source_is_caught(tmp_path):
    with Spool(tmp_path) as sp:
        sp.append(7, 1, _records(1), 1, source="hunter-a")
        sp.append(7, 2, _records(1), 1, source="hunter-a")
        seg = sp.segments()[0]
    with open(seg, "r+b") as f:
        data = bytearray(f.read())
        i = data.index(b"hunter-a")
        data[i] ^= 0x20  # "Hunter-a": a different source, same length
        f.seek(0)
        f.write(data)
    with Spool(tmp_path) as sp:
        assert [(b.source, b.sequence) for b in sp.pending()] == [("hunter-a", 2)]
        assert sp.counters()["corrupt"] == 1


def test_outbox_sends_spooled_batches_under_their_source_and_acks_by_it(tmp_path):
    with Spool(tmp_path) as sp:
        ob = Outbox(spool=sp, epoch=1)
        assert ob.put_spooled("h1", 5, 9, _records(2), 2)
        assert ob.put_spooled("h2", 5, 9, _records(1), 1)
        p1, p2 = ob.next_batch(1), ob.next_batch(1)
        assert (p1.source, p1.epoch, p1.sequence) == ("h1", 5, 9)
        assert (p2.source, p2.sequence) == ("h2", 9)
        assert ob.ack(9, 5) == 0  # our own (5, 9): none
        assert ob.ack(9, 5, "h2") == 1
        ob.requeue_inflight()  # a broken stream: h1's batch comes again, from the spool
        again = ob.next_batch(1)
        assert (again.source, again.sequence) == ("h1", 9)
        assert ob.ack(9, 5, "h1") == 2 and ob.drained()


# -- the forwarded batch -------------------------------------------------------------------


def test_forward_extras_rebuild_the_hunters_batch_events_in_place():
    recs = _records(3)
    sip = lc_pb2.PacketMeta(protocol="sip", session_id="c1", sip=lc_pb2.SipSummary(method="BYE"))
    batch = build_batch(
        "h1",
        7,
        3,
        recs,
        3,
        [("eth0", 1), ("any", 113)],
        array("H", [0, 1, 0]),
        meta=[lc_pb2.PacketMeta(index=2, filter_ids=["f1"])],
        meta_table=[sip],
        meta_ref=array("H", [1, 1, 0]),
        events=[
            lc_pb2.Event(dataset="sip", session_id="a"),
            lc_pb2.Event(dataset=""),  # malformed: skipped, keeps its place
            lc_pb2.Event(dataset="dns", session_id="b"),
            lc_pb2.Event(dataset=""),
        ],
    )
    batch.tls_keylog.append(b"CLIENT_RANDOM 00 11")
    batch.dns_tunnel.add(domain="example.com", stats=b"{}")
    cols = unpack_batch(batch)
    cols.events.append((10_003, lc_pb2.Event(dataset="dns")))  # a processor sink's alert
    again = encode_batch("h1", 7, 3, (), cols.records, len(cols), cols.iface,
                         extras=forward_extras(cols))  # fmt: skip
    assert not batch.caplen and again.caplen == struct.pack("<3I", 60, 60, 60)  # added
    back = unpack_batch(again)
    assert back.interfaces == [("eth0", 1), ("any", 113)]
    assert list(back.iface) == [0, 1, 0] and back.records == recs
    assert list(back.meta_ref) == [1, 1, 0] and back.meta_table == [sip]
    assert [m.filter_ids for m in back.meta] == [["f1"]]
    assert [(i, e.session_id) for i, e in back.events] == [(0, "a"), (2, "b")]
    assert back.bad_events == 2  # the upstream skips the same two
    assert back.keylog == [b"CLIENT_RANDOM 00 11"] and back.dns_tunnel[0].domain == "example.com"


# -- the forward sink inside the commit ------------------------------------------------------


def _forwarder(tmp_path, max_bytes: int) -> Forwarder:
    return Forwarder(
        UpstreamConfig("127.0.0.1:9", spool_max_bytes=max_bytes),
        None,
        "edge1",
        str(tmp_path),
        Tree("edge1"),
        describe=lambda h: lc_pb2.RegisterRequest(hunter_id=h, via=["edge1"]),
        topology=lambda: lc_pb2.Topology(processor_id="edge1"),
        on_filters=lambda upd: None,
    )  # never started: no connection is attempted


def _batch(seq: int, n: int = 2, hunter: str = "h1") -> lc_pb2.PacketBatch:
    return build_batch(hunter, 7, seq, _records(n, t0=seq * 1000), n, [("eth0", 1)])


def test_an_acknowledged_batch_is_in_the_upstream_spool(tmp_path):
    fw = _forwarder(tmp_path, 1 << 20)
    ing = Ingest(PcapSink(str(tmp_path / "o.pcap")), forward=fw)
    assert not ing.accept(_batch(1))[0].duplicate
    assert ing.accept(_batch(1))[0].duplicate  # a duplicate is not spooled again
    assert ing.accept(_batch(2, hunter="h2"))[0].packets == 2
    ing.close()
    fw.spool.close()
    with Spool(os.path.join(tmp_path, "upstream-spool")) as sp:
        assert [(b.source, b.sequence, b.count) for b in sp.pending()] == [
            ("h1", 1, 2),
            ("h2", 2, 2),
        ]


def test_a_full_upstream_spool_refuses_the_group_and_appends_nothing(tmp_path):
    fw = _forwarder(tmp_path, 400)  # room for one small batch
    ing = Ingest(PcapSink(str(tmp_path / "o.pcap")), forward=fw)
    ing.accept(_batch(1))
    with pytest.raises(OSError, match=r"upstream spool .* is full"):
        ing.accept(_batch(2, n=4))
    assert len(fw.spool) == 1 and fw.refused_groups == 1
    assert fw.spool.counters()["dropped_batches"] == 0  # refused, not dropped: it comes again
    assert ing.batches == 1  # and not written here either: the hunter keeps it
    assert fw.flow == lc_pb2.FLOW_PAUSE  # hunters are asked to keep theirs meanwhile
    fw.spool.ack(7, 1, "h1")
    assert fw.flow == lc_pb2.FLOW_CONTINUE
    assert ing.accept(_batch(2, n=4))[0].packets == 4
    ing.close()
    fw.spool.close()


# -- filters pushed down -------------------------------------------------------------------


def _f(fid: str, pattern: str = "udp", **kw) -> Filter:
    return Filter(id=fid, type="bpf", pattern=pattern, **kw)


def test_upstream_filters_are_kept_apart_and_only_the_upstream_changes_them(tmp_path):
    store = FilterStore(str(tmp_path / "lc.db"))
    store.upsert([_f("local")])
    changed, gone, v = store.replace_upstream([(_f("top1"), 5), (_f("top2"), 6)])
    assert [f.id for f, _ in changed] == ["top1", "top2"] and gone == [] and v == 2
    assert store.replace_upstream([(_f("top1"), 5), (_f("top2"), 6)]) == ([], [], 2)  # no bump
    changed, gone, v = store.replace_upstream([(_f("top1", "tcp"), 7)])
    assert changed == [(_f("top1", "tcp"), 7)] and gone == ["top2"] and v == 3
    assert store.upstream_ids == {"top1"}
    with pytest.raises(ValidationError, match="set at the upstream processor: change it there"):
        store.upsert([_f("top1")])
    with pytest.raises(ValidationError, match="remove it there"):
        store.delete("top1")
    assert store.apply_upstream([], ["top1", "local"])[1] == ["top1"]  # not ours to delete
    assert [f.id for f, _ in store.all()[0]] == ["local"]
    store.close()


def test_a_database_from_before_trees_gets_the_origin_column(tmp_path):
    db = sqlite3.connect(tmp_path / "lc.db")
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO meta VALUES ('filter_version', 4);"
        "CREATE TABLE filters (id TEXT PRIMARY KEY, type TEXT NOT NULL, pattern TEXT NOT NULL,"
        " enabled INTEGER NOT NULL, description TEXT NOT NULL, hunters TEXT NOT NULL,"
        " version INTEGER NOT NULL);"
        "INSERT INTO filters VALUES ('old', 'bpf', 'udp', 1, '', '[]', 4);"
    )
    db.close()
    store = FilterStore(str(tmp_path / "lc.db"))
    assert store.all() == ([(_f("old"), 4)], 4)
    assert store.upstream_ids == frozenset()
    store.close()


def test_hub_hands_upstream_filters_to_hunters_and_everything_to_processors_below(tmp_path):
    hub = FilterHub(FilterStore(str(tmp_path / "lc.db")))
    hunter = hub.subscribe("h1", ["bpf"])
    below = hub.subscribe("e2", [], everything=True)
    for sub in (hunter, below):
        assert sub.updates.get_nowait().full
    upd = lc_pb2.FilterUpdate(version=9, full=True)
    upd.filters.add(id="t1", type="bpf", pattern="udp", enabled=True, version=9)
    upd.filters.add(id="t2", type="bpf", pattern="tcp", enabled=False, version=8)
    upd.filters.add(id="t3", type="bpf", pattern="icmp", enabled=True, hunters=["h9"], version=7)
    assert hub.apply_upstream(upd) == 1
    got = hunter.updates.get_nowait()
    assert [(f.id, f.version, f.origin) for f in got.filters] == [("t1", 9, "upstream")]
    assert sorted(got.removed) == ["t2", "t3"]  # disabled, or aimed at another hunter
    got = below.updates.get_nowait()  # a processor below gets all three, versions kept
    assert [(f.id, f.version, f.enabled) for f in got.filters] == [
        ("t1", 9, True),
        ("t2", 8, False),
        ("t3", 7, True),
    ]
    assert hub.apply_upstream(upd) == 1 and hunter.updates.empty()  # nothing new: no update
    delta = lc_pb2.FilterUpdate(version=10, removed=["t1"])
    assert hub.apply_upstream(delta) == 2
    assert list(hunter.updates.get_nowait().removed) == ["t1"]
    with pytest.raises(LcError):
        hub.set_filters([_f("t2")])
