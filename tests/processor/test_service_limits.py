"""The processor's stream limits (lc.processor.limits) and edge checks (lc.processor.service).

The gate's rules with a fake clock, then a real in-process processor (gRPC server, real
client) with a small stream budget.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

import grpc
import pytest

from lc.common.errors import ValidationError
from lc.common.wire import BatchRecords
from lc.processor.limits import DATA, FILTERS, Refused, StreamGate, Throttle
from lc.processor.server import ProcessConfig, Processor
from lc.processor.service import check_heartbeat, check_link_types, check_registration
from lc.processor.tree import MAX_COUNTERS
from lc.proto import lc_pb2, lc_pb2_grpc


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def gate_with(heard: dict[str, float], max_streams: int = 10) -> StreamGate:
    return StreamGate(max_streams, heard.get, takeover_after=15.0)


def canceller(log: list[str]):
    return log.append


def test_budget_refuses_with_resource_exhausted_and_frees_on_close():
    g = gate_with({}, max_streams=2)
    a = g.open(DATA, "p1", print)
    g.open(FILTERS, "p1", print)
    with pytest.raises(Refused) as e:
        g.open(DATA, "p2", print)
    assert e.value.code == "RESOURCE_EXHAUSTED" and "maximum of 2 streams" in e.value.message
    g.close(a)
    g.close(a)  # idempotent
    assert g.open_streams == 1
    g.open(DATA, "p2", print)
    assert g.refused["budget"] == 1


def test_a_newer_stream_of_the_same_kind_replaces_the_older():
    g = gate_with({"h1": 1.0})
    g.register("h1", 7, "p1")
    ended: list[str] = []
    old = g.open(DATA, "p1", ended.append)
    g.claim(old, "h1")
    new = g.open(DATA, "p1", print)
    g.claim(new, "h1")
    assert old.closed and not new.closed
    assert ended == ["replaced by a newer data stream of hunter h1"]
    sub = g.open(FILTERS, "p1", print)
    g.claim(sub, "h1")  # another kind: both stay
    assert not new.closed and not sub.closed
    assert g.replaced == 1


def test_another_run_is_refused_while_the_first_is_live_then_takes_over():
    heard = {"h1": 2.0}
    g = gate_with(heard)
    g.register("h1", 1, "p1")
    ended: list[str] = []
    s = g.open(FILTERS, "p1", ended.append)
    g.claim(s, "h1")
    with pytest.raises(Refused) as e:
        g.register("h1", 2, "p2")
    assert e.value.code == "ALREADY_EXISTS"
    assert "hunter h1 is already connected from p1 (epoch 1, heard from 2 s ago)" in str(e.value)
    # A stream from a connection that did not register the run is refused too.
    t = g.open(DATA, "p2", print)
    with pytest.raises(Refused):
        g.claim(t, "h1")
    # The same run registering again (a reconnect) is accepted at once and ends the old.
    g.register("h1", 1, "p3")
    assert s.closed and ended and "registered again from p3" in ended[0]
    # Silent for takeover_after: another run takes over.
    s2 = g.open(FILTERS, "p3", print)
    g.claim(s2, "h1")
    heard["h1"] = 15.5
    g.register("h1", 2, "p4")
    assert s2.closed


def test_a_run_whose_streams_closed_is_not_live():
    g = gate_with({"h1": 0.5})
    g.register("h1", 1, "p1")
    s = g.open(DATA, "p1", print)
    g.claim(s, "h1")
    g.close(s)  # its process died: the connection closed
    g.register("h1", 2, "p2")  # accepted at once


def test_throttle_holds_back_and_counts(caplog):
    clock = Clock()
    t = Throttle(logging.getLogger("thr"), interval=10, max_keys=2, clock=clock)
    with caplog.at_level(logging.WARNING, "thr"):
        for _ in range(5):
            t.warning("k", "msg")
        clock.t = 11
        t.warning("k", "msg")
        for k in range(10):  # bounded
            t.warning(k, "other")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[:2] == ["msg", "msg (4 more like this in the last 10 s)"]
    assert len(t._keys) <= 2


# -- edge checks --------------------------------------------------------------------------


def cols(interfaces):
    return BatchRecords(b"", None, None, interfaces)  # type: ignore[arg-type]


def test_link_types():
    assert check_link_types(cols([("eth0", 1), ("any", 113), ("lo", 0)])) == ""
    assert check_link_types(cols([("eth0", 65535)])) == ""
    assert "link type 65536, outside 0..65535" in check_link_types(cols([("e", 65536)]))
    many = [(f"i{k}", k) for k in range(9)]
    assert "9 distinct link types" in check_link_types(cols(many))
    assert check_link_types(cols([("i", 1)] * 256)) == ""
    assert "257 interfaces" in check_link_types(cols([("i", 1)] * 257))
    assert "\x1b" not in check_link_types(cols([("\x1b[31m", 70000)]))


def test_registration_fields():
    ok = lc_pb2.RegisterRequest(
        hunter_id="h1", hostname="sensor-1.example", version="0.1.0", mode="voip",
        interfaces=["eth0", "file:odd\nname.pcap"], capabilities=["voip", "filter:sip_user"],
    )  # fmt: skip
    clean = check_registration(ok)
    assert list(clean.interfaces) == ["eth0", "file:odd\nname.pcap"]  # kept; escaped in logs
    long = lc_pb2.RegisterRequest(hunter_id="h1", interfaces=["x" * 5000])
    assert list(check_registration(long).interfaces) == ["x" * 256]
    for fields, field in [
        ({"hostname": "a\rb"}, "hostname"),
        ({"hostname": "a" * 256}, "hostname"),
        ({"version": "v" * 65}, "version"),
        ({"mode": "a b"}, "mode"),
        ({"capabilities": ["x" * 65]}, "capabilities[0]"),
        ({"capabilities": ["a"] * 65}, "capabilities"),
    ]:
        with pytest.raises(ValidationError, match=rf"^{re.escape(field)}: "):
            check_registration(lc_pb2.RegisterRequest(hunter_id="h1", **fields))


def test_heartbeat_fields():
    hb = lc_pb2.HeartbeatRequest(hunter_id="h1")
    hb.counters.dropped["queue_full"] = 1
    hb.counters.breaker = "half_open"
    check_heartbeat(hb)
    hb.counters.mode["calls\x1b"] = 1
    with pytest.raises(ValidationError, match=r"counters\.mode"):
        check_heartbeat(hb)
    hb = lc_pb2.HeartbeatRequest(hunter_id="h1")
    for k in range(MAX_COUNTERS):
        hb.counters.dropped[f"r{k}"] = k
    check_heartbeat(hb)  # the bound itself
    hb.counters.dropped["one_more"] = 1
    with pytest.raises(ValidationError, match=rf"counters\.dropped: {MAX_COUNTERS + 1} entries"):
        check_heartbeat(hb)


# -- a real (in-process) processor with a small budget -------------------------------------


@pytest.fixture
def small_processor(tmp_path):
    # --insecure: no certificate, so nothing binds a data stream before its first batch;
    # only the budget protects the threads.
    cfg = ProcessConfig(
        listen="127.0.0.1:0", data_dir=str(tmp_path / "d"), max_workers=60, admin_threads=10
    )
    p = Processor(cfg)
    port = p.start()
    yield p, f"127.0.0.1:{port}"
    p.stop()


def test_streams_beyond_the_budget_are_refused_and_admin_still_answers(small_processor):
    p, addr = small_processor
    hold = threading.Event()

    def idle():  # a stream that never sends a batch
        hold.wait(30)
        return
        yield

    ch = grpc.insecure_channel(addr)
    try:
        calls = [lc_pb2_grpc.DataServiceStub(ch).StreamPackets(idle()) for _ in range(120)]
        deadline = time.monotonic() + 10
        while sum(c.done() for c in calls) < 70 and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = [c for c in calls if c.done()]
        assert len(refused) == 70
        assert {c.code() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "maximum of 50 streams" in refused[0].details()
        stub = lc_pb2_grpc.ManagementServiceStub(ch)
        t0 = time.monotonic()
        for _ in range(20):  # the admin threads are free
            stub.GetStatus(lc_pb2.StatusRequest(), timeout=2)
        assert time.monotonic() - t0 < 2
        assert p.gate.open_streams == 50
        hold.set()
        deadline = time.monotonic() + 10
        while p.gate.open_streams and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.gate.open_streams == 0  # every ticket is given back
    finally:
        hold.set()
        ch.close()


def test_peer_strings_reach_the_log_escaped(small_processor, caplog):
    _, addr = small_processor
    forged = "eth0\n2026-01-01 00:00:00,000 ERROR lc: forged \x1b[31mred"
    with grpc.insecure_channel(addr) as ch, caplog.at_level(logging.INFO, "lc.processor"):
        stub = lc_pb2_grpc.ManagementServiceStub(ch)
        req = lc_pb2.RegisterRequest(hunter_id="h1", hostname="s", interfaces=[forged])
        assert stub.RegisterHunter(req, timeout=5).accepted
    lines = [r.getMessage() for r in caplog.records if "registered from" in r.getMessage()]
    assert len(lines) == 1
    assert "\n" not in lines[0] and "\x1b" not in lines[0]
    assert "eth0\\n2026-01-01 00:00:00,000 ERROR lc: forged \\x1b[31mred" in lines[0]


def test_a_filter_subscription_whose_client_leaves_is_closed_on_the_processor(small_processor):
    # The management handlers are sync code run beside the asyncio server: a streaming
    # one must learn that its client went away, and its finally must run.
    p, addr = small_processor
    with grpc.insecure_channel(addr) as ch:
        stub = lc_pb2_grpc.ManagementServiceStub(ch)
        assert stub.RegisterHunter(lc_pb2.RegisterRequest(hunter_id="h1"), timeout=5).accepted
        req = lc_pb2.SubscribeFiltersRequest(hunter_id="h1", filter_types=["bpf"])
        calls = [stub.SubscribeFilters(req) for _ in range(3)]
        first = next(calls[2])  # the full set comes first
        assert first.full
        deadline = time.monotonic() + 10
        while p.hub.subscribers != 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # the two older ones were replaced by the newest
        assert p.hub.subscribers == 1 and p.gate.open_streams == 1
        calls[2].cancel()
        while (p.hub.subscribers or p.gate.open_streams) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.hub.subscribers == 0 and p.gate.open_streams == 0
        # An admin RPC that aborts still aborts (NOT_FOUND), and the pool is free.
        with pytest.raises(grpc.RpcError) as e:
            stub.GetHunter(lc_pb2.GetHunterRequest(hunter_id="nobody"), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_acks_of_a_big_batch_go_at_once_and_small_ones_wait_for_company(
    small_processor, monkeypatch
):
    """Acks are grouped (ACK_COUNT, ACK_DELAY), but those covering ACK_NOW_PACKETS
    packets with nothing else of the stream outstanding go at once; a small batch's
    waits for company (here: the stream's end, the delay being an hour)."""
    from array import array

    from lc.common.pcapfile import frame_records
    from lc.common.wire import build_batch
    from lc.processor import service

    monkeypatch.setattr(service, "ACK_DELAY", 3600.0)
    _, addr = small_processor

    def batch(seq: int, n: int) -> lc_pb2.PacketBatch:
        cl = array("I", [60] * n)
        ts = array("q", [1_700_000_000_000_000_000 + seq * 10**6 + k for k in range(n)])
        recs = frame_records(ts, cl, cl, b"\x07" * (60 * n))
        return build_batch("h1", 1, seq, recs, n, [("eth0", 1)], caplen=cl)

    got: list[tuple[int, float]] = []  # (acked sequence, when)
    first_acked = threading.Event()
    small_sent = threading.Event()
    finish = threading.Event()

    def requests():
        yield batch(1, service.ACK_NOW_PACKETS)
        first_acked.wait(30)
        yield batch(2, 1)
        small_sent.set()
        finish.wait(30)  # then half-close: the held ack goes with the stream's end

    with grpc.insecure_channel(addr) as ch:
        call = lc_pb2_grpc.DataServiceStub(ch).StreamPackets(requests(), timeout=60)

        def read():
            for ctl in call:
                for a in ctl.acks:
                    got.append((a.sequence, time.monotonic()))
                    if a.sequence == 1:
                        first_acked.set()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        assert first_acked.wait(20), "the big batch's ack waited for company"
        assert small_sent.wait(20)
        time.sleep(0.5)  # long enough for the small batch to be written and answered
        assert [s for s, _ in got] == [1]  # its ack is held (only a late check passes)
        finish.set()
        t.join(20)
        assert not t.is_alive() and [s for s, _ in got] == [1, 2]


def _garbage_kinds(refused: Callable[[], None], times: int = 10) -> set[str]:
    """The types of the cyclic garbage ``times`` more calls of ``refused`` leave (after
    one call, to warm up, and a collection)."""
    import gc

    refused()
    time.sleep(0.2)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(times):
            refused()
        time.sleep(0.5)  # the handlers' ends, on the server's loop
        gc.collect()
        return {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_refused_streams_leave_no_tracebacks_in_cyclic_garbage(small_processor):
    """A stream ended for an error (here a malformed batch) keeps its status and details,
    and leaves no frames behind: ended with ``context.abort``, its AbortError stayed on
    the call's state with a traceback through the handler's frames, and the reader's
    (which raised it again, holding its batch), which name the context: every such
    stream was cyclic garbage (35 objects each; a full disk: every attempt of every
    hunter). grpc's own per-call cycles (its method lookup, a done callback) remain."""
    from array import array

    from lc.common.pcapfile import frame_records
    from lc.common.wire import build_batch

    _, addr = small_processor
    cl = array("I", [60] * 4)
    ts = array("q", [1_700_000_000_000_000_000 + k for k in range(4)])
    bad = build_batch("h1", 1, 1, frame_records(ts, cl, cl, b"\x07" * 240), 4, [("eth0", 1)])
    bad.count = 5

    with grpc.insecure_channel(addr) as ch:
        stub = lc_pb2_grpc.DataServiceStub(ch)

        def refused() -> None:
            call = stub.StreamPackets(iter([bad]), timeout=10)
            assert call.code() == grpc.StatusCode.INVALID_ARGUMENT  # waits; raises nothing
            assert call.details().startswith("malformed batch: batch 1: ")

        kinds = _garbage_kinds(refused)
    assert not kinds & {"frame", "traceback", "AbortError", "PacketBatch", "BatchRecords"}


def test_refused_management_calls_leave_no_tracebacks_in_cyclic_garbage(small_processor):
    """The management RPCs run as sync code beside the asyncio server (aioserve): one that
    aborts still ends with its status, and leaves no frames behind. Ended with
    ``context.abort``, grpc kept the AbortError on the call's state with a traceback
    through the handler's frames (28 objects per refused call); a streaming one's
    Aborted also stayed in its step, which its frame held (64 per refused
    subscription). grpc's own per-call cycles (its method lookup, a done callback)
    remain."""

    _, addr = small_processor
    with grpc.insecure_channel(addr) as ch:
        stub = lc_pb2_grpc.ManagementServiceStub(ch)

        def refused() -> None:
            code = None
            try:  # (not pytest.raises: what it keeps would be cyclic garbage here)
                stub.GetHunter(lc_pb2.GetHunterRequest(hunter_id="nobody"), timeout=5)
            except grpc.RpcError as e:
                code = e.code()
            assert code == grpc.StatusCode.NOT_FOUND
            call = stub.SubscribeFilters(lc_pb2.SubscribeFiltersRequest(hunter_id="bad id!"))
            assert call.code() == grpc.StatusCode.INVALID_ARGUMENT  # waits; raises nothing

        kinds = _garbage_kinds(refused)
    assert not kinds & {"frame", "traceback", "AbortError", "Aborted"}
