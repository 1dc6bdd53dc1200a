"""A processor tree end to end: hunters -> edge processors -> a top processor.

Real processes on loopback with certificates from ``lc certs init`` and ``lc certs
add``. The top's output is compared record by record (timestamp, bytes, original
length) with what each hunter read: a packet lost, doubled or reordered fails.

The upstream outage lasts ``LC_TREE_OUTAGE`` seconds (default 30, the operating scenario
this guards; ``LC_TREE_OUTAGE=6`` for a quicker run): long enough that both edges spool to
disk, which the test checks, before the top comes back.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import grpc
import pytest

from lc.common.credentials import add_processor, init_pki
from lc.common.pcapfile import frame_records
from lc.common.transport import TlsFiles, open_channel, wait_ready
from lc.common.wire import build_batch
from lc.proto import lc_pb2, lc_pb2_grpc
from tests.conftest import ROOT, need, run_lc, start_hunter, start_processor, tls_args
from tests.e2e.test_delivery import (
    assert_clean_pcap,
    finish,
    free_port,
    make_capture,
    output_records,
    restart,
    wait_for,
)
from tests.e2e.test_metrics import fetch, metrics_url, parse

pytestmark = pytest.mark.e2e

SAMPLE = ROOT / "captures" / "sip-call.pcap"
OUTAGE = float(os.environ.get("LC_TREE_OUTAGE", "30"))
FAST = ("--backoff-max", "1", "--breaker-open-time", "1", "--connect-timeout", "3")
EDGE_FAST = ("--upstream-backoff-max", "1", "--upstream-breaker-open-time", "1")


@pytest.fixture(scope="module")
def tree_pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("treepki") / "certs"
    init_pki(d, hunters=["h1", "h2", "h3"])
    for name in ("edge1", "edge2", "edge3"):
        add_processor(d, name, ["127.0.0.1"])
    return d


def proc_args(pki: Path, name: str) -> list[str]:
    return tls_args(pki, name if name == "processor" else f"processor-{name}")


def start(tmp: Path, pki: Path, name: str, *extra: str, port: int | None = None):
    d = tmp / name
    d.mkdir(exist_ok=True)
    listen = ("--listen", f"127.0.0.1:{port}") if port else ()
    return start_processor(d, proc_args(pki, name), *listen, *extra)


def admin(p, pki: Path, *args: str):
    r = run_lc(*args, "--processor", p.addr, *tls_args(pki, "admin"))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def status(p, pki: Path) -> dict:
    return admin(p, pki, "show", "status")


def pending(edge, pki: Path) -> int:
    """Batches the edge committed and its upstream has not acknowledged."""
    return int(admin(edge, pki, "show", "topology")["upstream_spool_batches"])


def top_has(top, pki: Path, n: int) -> bool:
    try:
        return int(status(top, pki)["packets_written"]) >= n
    except AssertionError:
        return False


def drained(edge, pki: Path) -> bool:
    try:
        return pending(edge, pki) == 0
    except AssertionError:
        return False


def delivered(data_dir: Path) -> dict[tuple[str, int], set[int]]:
    """(hunter id, epoch) -> batch sequences a stopped processor's ledger has written."""
    with closing(sqlite3.connect(f"file:{data_dir / 'lc.db'}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT hunter_id, epoch, ranges FROM delivered").fetchall()
    out: dict[tuple[str, int], set[int]] = {}
    for hunter, epoch, ranges in rows:
        seqs = out.setdefault((hunter, epoch), set())
        for part in filter(None, ranges.split(",")):
            lo, _, hi = part.partition("-")
            seqs.update(range(int(lo), int(hi or lo) + 1))
    return {k: v for k, v in out.items() if v}


# -- delivery: exactly once across kills ---------------------------------------------------


def test_two_edges_deliver_every_packet_once_across_top_and_edge_sigkills(tmp_path, tree_pki):
    """Two edges, a hunter each, replaying for 16 s. The top is SIGKILLed and stays down
    for OUTAGE s; meanwhile edge1 is SIGKILLed and restarted (so what it acknowledged to
    its hunter during the outage is only in its upstream spool); after the top is back
    (writing slowly at first, so the edges take a while to drain), edge2 is SIGKILLed and
    restarted while draining. The top's output then holds exactly
    the union of what the two hunters read, each hunter's packets in capture order."""
    pki = tree_pki
    cap1, cap2 = tmp_path / "h1.pcap", tmp_path / "h2.pcap"
    recs1 = make_capture(cap1, 4000, rate=250, size=200)  # 16 s each
    recs2 = make_capture(cap2, 4000, rate=250, size=230)
    top_port = free_port()
    slow = tmp_path / "slow"  # while it exists the top writes slowly: edges drain slowly
    top = start(tmp_path, pki, "processor", "--test-slow-writer", str(slow), port=top_port)
    up = ("--upstream", top.addr, *EDGE_FAST)
    e1 = start(tmp_path, pki, "edge1", *up, port=free_port())
    e2 = start(tmp_path, pki, "edge2", *up, port=free_port())
    hunters = []
    try:
        for name, edge, cap in (("h1", e1, cap1), ("h2", e2, cap2)):
            spool = tmp_path / f"spool-{name}"
            args = ("-r", str(cap), "--replay-speed", "1", "--disk-buffer", "--disk-buffer-dir",
                    str(spool), "--shutdown-timeout", "90", *FAST)  # fmt: skip
            hunters.append(start_hunter(edge.addr, pki, name, *args))
        wait_for(lambda: top_has(top, pki, 400), 20, "the first packets at the top")
        top.proc.send_signal(signal.SIGKILL)
        top.proc.wait(10)
        t_down = time.monotonic()
        # Both edges keep acknowledging their hunters and spool for the top.
        wait_for(lambda: pending(e1, pki) > 10 and pending(e2, pki) > 10, 15, "spooling")
        spooled = pending(e1, pki)
        e1.proc.send_signal(signal.SIGKILL)  # what it acked is only in its spool now
        e1.proc.wait(10)
        restart(e1, e1.data_dir.parent)
        assert pending(e1, pki) >= spooled, "the restarted edge kept its spool"
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - t_down)))
        assert pending(e1, pki) > spooled, "and spools what its hunter sends meanwhile"
        slow.touch()
        restart(top, top.data_dir.parent)
        wait_for(lambda: top_has(top, pki, 100), 20, "the top receiving again")  # this run
        assert pending(e2, pki) > 0, "edge2 is still draining"
        e2.proc.send_signal(signal.SIGKILL)  # in the middle of draining
        e2.proc.wait(10)
        restart(e2, e2.data_dir.parent)
        slow.unlink()
        for h in hunters:
            code, _, err = finish(h, timeout=90)
            assert code == 0, err
        # Every batch the hunters had acknowledged is committed at its edge, hence in its
        # upstream spool: once both spools are empty, the top has it all.
        wait_for(lambda: drained(e1, pki) and drained(e2, pki), 30, "the edges' spools drained")
        # The top lists the hunters below, marked with the processor they come through.
        # (A restarted edge forgets a hunter that finished before it came back, as any
        # processor does: with a long outage h2 may be done before edge2's restart.)
        below = {h["hunter_id"]: h["via"] for h in admin(top, pki, "list", "hunters")}
        want = {"h1": ["edge1"], "h2": ["edge2"]}
        assert below == {k: v for k, v in want.items() if k in below}
        assert "h1" in below and ("h2" in below or OUTAGE > 8)
        topo = admin(top, pki, "show", "topology")
        assert [(p["processor_id"], p["depth"], p["state"]) for p in topo["processors"]] == [
            ("edge1", 1, "connected"),
            ("edge2", 1, "connected"),
        ]
        listed = [
            (p["processor_id"], h["hunter_id"]) for p in topo["processors"] for h in p["hunters"]
        ]
        assert listed == [(p[0], h) for h, p in sorted(below.items())]
    finally:
        for h in hunters:
            if h.poll() is None:
                h.kill()
        for p in (e1, e2, top):
            p.stop()
    files = sorted(top.data_dir.glob("*.pcap"))
    for f in files:
        assert_clean_pcap(f)
    got = output_records(files)
    assert Counter(got) == Counter(recs1 + recs2)  # the union, each packet exactly once
    assert len(got) == len(recs1) + len(recs2)
    s1, s2 = set(recs1), set(recs2)
    assert [r for r in got if r in s1] == recs1  # each hunter's packets in capture order
    assert [r for r in got if r in s2] == recs2
    for edge, recs in ((e1, recs1), (e2, recs2)):  # and each edge wrote its own, once
        assert output_records(sorted(edge.data_dir.glob("*.pcap"))) == recs
    # Forwarded batches keep their hunter's id, epoch and sequence: the top's ledger holds
    # exactly the (hunter, epoch, sequences) its edges wrote, as for hunters of its own.
    at_edges = {**delivered(e1.data_dir), **delivered(e2.data_dir)}
    assert {h for h, _ in at_edges} == {"h1", "h2"}
    assert delivered(top.data_dir) == at_edges


# -- filters down the tree ---------------------------------------------------------------


def tshark_count(path: Path, display_filter: str) -> int:
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return len(out.split())


def test_filter_set_at_the_top_is_applied_two_levels_down_and_edge_filters_stay(tmp_path, tree_pki):
    need("tshark")
    pki = tree_pki
    top = start(tmp_path, pki, "processor")
    e1 = start(tmp_path, pki, "edge1", "--upstream", top.addr, *EDGE_FAST)
    e2 = start(tmp_path, pki, "edge2", "--upstream", top.addr, *EDGE_FAST,
               "--metrics-listen", "127.0.0.1:0")  # fmt: skip
    try:
        got = admin(top, pki, "set", "filter", "--type", "bpf", "--pattern", "udp port 5070",
                    "--id", "top-sip")  # fmt: skip
        version = got["filters"][0]["version"]
        admin(e1, pki, "set", "filter", "--type", "ip_address", "--pattern", "192.0.2.1",
              "--id", "edge-only")  # fmt: skip

        def pushed(edge) -> bool:
            fs = {f["id"]: f for f in admin(edge, pki, "list", "filters")}
            f = fs.get("top-sip")
            return f is not None and f["origin"] == "upstream" and f["version"] == version

        wait_for(lambda: pushed(e1) and pushed(e2), 15, "the top's filter at both edges")
        # The edge's own filter stays at that edge: not at the top, not at the other edge.
        assert [f["id"] for f in admin(top, pki, "list", "filters")] == ["top-sip"]
        assert [f["id"] for f in admin(e2, pki, "list", "filters")] == ["top-sip"]
        # The edge refuses to change what the top owns.
        r = run_lc("rm", "filter", "--id", "top-sip", "--processor", e1.addr,
                   *tls_args(pki, "admin"))  # fmt: skip
        assert r.returncode == 3 and "upstream" in r.stderr
        # A hunter under edge2 (two levels below the top) applies the top's filter.
        h = run_lc("hunt", "--processor", e2.addr, *tls_args(pki, "hunter-h2"), "-r",
                   str(SAMPLE))  # fmt: skip
        assert h.returncode == 0, h.stderr
        want = tshark_count(SAMPLE, "udp.port == 5070")
        assert 0 < want < tshark_count(SAMPLE, "frame")
        wait_for(lambda: top_has(top, pki, want), 15, "the filtered packets at the top")
        info = admin(e2, pki, "show", "hunter", "--id", "h2")
        assert [(f["id"], f["version"]) for f in info["filters"]] == [("top-sip", version)]
        st = status(top, pki)
        # The edge's metrics say what it forwarded: every packet acknowledged upstream.
        url = metrics_url(stderr_path=e2.stderr_path)
        wait_for(lambda: parse(fetch(url)).get(("lc_processor_upstream_packets_acked_total", ()))
                 == want, 15, "the edge's upstream acks in its metrics")  # fmt: skip
        edge_metrics = parse(fetch(url))
    finally:
        for p in (e1, e2, top):
            p.stop()
    assert st["packets_written"] == want
    assert st["filter_matches"] == {"top-sip": want}
    assert tshark_count(top.data_dir / "capture.pcap", "udp.port == 5070") == want
    assert tshark_count(top.data_dir / "capture.pcap", "frame") == want
    assert edge_metrics[("lc_processor_upstream_connected", ())] == 1
    assert edge_metrics[("lc_processor_upstream_spool_batches", ())] == 0
    assert edge_metrics[("lc_processor_packets_written_total", ())] == want


# -- refusals: cycles, depth, authorization --------------------------------------------------


def test_cycle_and_self_upstream_are_refused_with_clear_messages(tmp_path, tree_pki):
    pki = tree_pki
    pa, pb = free_port(), free_port()
    a = start(tmp_path, pki, "edge1", "--upstream", f"127.0.0.1:{pb}", *EDGE_FAST, port=pa)
    b = None
    pc = free_port()
    me = start(tmp_path, pki, "edge3", "--upstream", f"127.0.0.1:{pc}", *EDGE_FAST, port=pc)
    try:
        b = start(tmp_path, pki, "edge2", "--upstream", f"127.0.0.1:{pa}", *EDGE_FAST, port=pb)

        def said(p, words: str) -> bool:
            return words in p.stderr()

        wait_for(lambda: said(a, "cycle:") or said(b, "cycle:"), 20, "a cycle refused")
        wait_for(lambda: said(me, "is this processor"), 20, "a self-upstream refused")
        refused = a if said(a, "cycle:") else b
        line = next(x for x in refused.stderr().splitlines() if "cycle:" in x)
        assert "edge1" in line and "edge2" in line, line
        assert "refused processor" in line, line
    finally:
        for p in (a, b, me):
            if p is not None:
                p.stop()


def test_depth_limit_refuses_a_processor_too_deep(tmp_path, tree_pki):
    pki = tree_pki
    top = start(tmp_path, pki, "processor", "--max-tree-depth", "1")
    e1 = start(tmp_path, pki, "edge1", "--upstream", top.addr, *EDGE_FAST)
    e2 = None
    try:
        wait_for(
            lambda: (
                [p["processor_id"] for p in admin(top, pki, "show", "topology")["processors"]]
                == ["edge1"]
            ),
            15,
            "edge1 at the top",
        )
        e2 = start(tmp_path, pki, "edge2", "--upstream", e1.addr, *EDGE_FAST)
        wait_for(lambda: "depth limit" in e2.stderr(), 20, "edge2 refused")
        line = next(x for x in e2.stderr().splitlines() if "depth limit" in x)
        assert "edge2" in line and "edge1" in line and "--max-tree-depth" in line, line
        assert admin(e1, pki, "show", "topology")["processors"] == []
    finally:
        for p in (e2, e1, top):
            if p is not None:
                p.stop()


def _channel(target: str, pki: Path, cert: str) -> grpc.Channel:
    tls = TlsFiles(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"), str(pki / "ca.pem"))
    ch = open_channel(target, tls)
    wait_ready(ch, target, tls, 10)
    return ch


def _batch(hunter_id: str, seq: int) -> lc_pb2.PacketBatch:
    frame = bytes(60)
    records = frame_records([1_700_000_000 * 10**9 + seq], [60], [60], frame)
    return build_batch(hunter_id, 7, seq, records, 1, [("eth0", 1)])


def _stream(ch: grpc.Channel, batches: list[lc_pb2.PacketBatch], metadata=()) -> list:
    """Send the batches, half-close once each is acknowledged (as a hunter does)."""
    acks: list = []
    done = threading.Event()

    def requests():
        yield from batches
        done.wait(10)

    call = lc_pb2_grpc.DataServiceStub(ch).StreamPackets(requests(), metadata=metadata)
    try:
        for ctl in call:
            acks.extend(ctl.acks)
            if len(acks) >= len(batches):
                done.set()
    finally:
        done.set()
    return acks


def test_only_a_processor_may_carry_other_ids_and_only_those_registered_through_it(
    tmp_path, tree_pki
):
    pki = tree_pki
    top = start(tmp_path, pki, "processor")
    chans = []
    try:
        edge = _channel(top.addr, pki, "processor-edge1")
        other = _channel(top.addr, pki, "processor-edge2")
        hunter = _channel(top.addr, pki, "hunter-h1")
        chans += [edge, other, hunter]
        mgmt = lc_pb2_grpc.ManagementServiceStub(edge)
        # Not registered as a processor yet: its stream is refused.
        with pytest.raises(grpc.RpcError) as e:
            _stream(edge, [_batch("h3", 1)])
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        reg = mgmt.RegisterHunter(
            lc_pb2.RegisterRequest(hunter_id="edge1", epoch=1, processor=lc_pb2.ProcessorInfo()),
            timeout=10,
        )
        assert reg.accepted and list(reg.ancestors) and reg.levels_below == 7
        # h3 was not registered through edge1: refused.
        with pytest.raises(grpc.RpcError) as e:
            _stream(edge, [_batch("h3", 1)])
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "not registered through it" in e.value.details()
        # Registered through it: carried, and the Ack names the hunter.
        ok = mgmt.RegisterHunter(
            lc_pb2.RegisterRequest(hunter_id="h3", epoch=7, via=["edge1"]), timeout=10
        )
        assert ok.accepted, ok.reason
        acks = _stream(edge, [_batch("h3", 1), _batch("h3", 2)])
        assert [(a.hunter_id, a.sequence, a.duplicate) for a in acks] == [
            ("h3", 1, False),
            ("h3", 2, False),
        ]
        # Another processor may not register through edge1, nor carry h3.
        other_mgmt = lc_pb2_grpc.ManagementServiceStub(other)
        r = other_mgmt.RegisterHunter(
            lc_pb2.RegisterRequest(hunter_id="h2", epoch=1, via=["edge1"]), timeout=10
        )
        assert not r.accepted and "must name it first" in r.reason
        # A hunter certificate may neither register others nor carry another id.
        hm = lc_pb2_grpc.ManagementServiceStub(hunter)
        r = hm.RegisterHunter(lc_pb2.RegisterRequest(hunter_id="h3", via=["edge1"]), timeout=10)
        assert not r.accepted and "only a processor certificate" in r.reason
        r = hm.RegisterHunter(
            lc_pb2.RegisterRequest(hunter_id="h1", processor=lc_pb2.ProcessorInfo()), timeout=10
        )
        assert not r.accepted and "not 'processor'" in r.reason
        with pytest.raises(grpc.RpcError) as e:
            _stream(hunter, [_batch("h3", 3)], metadata=(("lc-processor", "edge1"),))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        st = status(top, pki)
        assert st["packets_written"] == 2
    finally:
        for ch in chans:
            ch.close()
        top.stop()
