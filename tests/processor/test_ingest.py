"""Processor pieces without gRPC: ingest (dedup, write, validation), flow control, registry."""

from __future__ import annotations

import itertools
from array import array

import pytest

from lc.common.errors import ParseError
from lc.common.pcapfile import PcapSink, frame_records, open_capture
from lc.common.wire import build_batch, unpack_batch
from lc.processor.ingest import Ingest, flow_to_announce
from lc.processor.registry import Registry
from lc.proto import lc_pb2


def _batch(
    seq: int, payloads: list[bytes], epoch: int = 7, hunter: str = "h1", ifaces=None, iface=None
) -> lc_pb2.PacketBatch:
    ts = array("q", [1_700_000_000_000_000_000 + seq * 1000 + i for i in range(len(payloads))])
    cl = array("I", map(len, payloads))
    recs = frame_records(ts, cl, cl, b"".join(payloads))
    return build_batch(hunter, epoch, seq, recs, len(payloads), ifaces or [("eth0", 1)], iface)


def _read(path) -> list[tuple[int, bytes]]:
    with open_capture(path) as r:
        return [(ts, bytes(d)) for ts, _, d, _ in r.records()]


def test_duplicates_are_acked_but_written_once(tmp_path):
    ing = Ingest(PcapSink(str(tmp_path / "o.pcap")))
    b1, b2 = _batch(1, [b"a" * 60, b"b" * 70]), _batch(2, [b"c" * 80])
    for b in (b1, b2, b1, b2):
        ack, _, _ = ing.accept(b)
        assert ack.sequence == b.sequence
    assert [ing.accept(b)[0].duplicate for b in (b1, b2)] == [True, True]
    # Another epoch of the same hunter is a new run: its sequence 1 is written.
    assert not ing.accept(_batch(1, [b"d" * 90], epoch=8))[0].duplicate
    ing.close()
    got = [d for _, d in _read(tmp_path / "o.pcap")]
    assert got == [b"a" * 60, b"b" * 70, b"c" * 80, b"d" * 90]
    assert ing.packets == 4 and ing.duplicates == 4 and ing.bytes == 300


def test_malformed_batch_is_refused_and_nothing_written(tmp_path):
    ing = Ingest(PcapSink(str(tmp_path / "o.pcap")))
    good = _batch(1, [b"x" * 64])
    bad = lc_pb2.PacketBatch()
    bad.CopyFrom(good)
    bad.count = 2
    with pytest.raises(ParseError, match="batch 1"):
        ing.accept(bad)
    cut = lc_pb2.PacketBatch()
    cut.CopyFrom(good)
    cut.data = good.data[:-1]
    with pytest.raises(ParseError):
        ing.accept(cut)
    assert ing.accept(good)[0].packets == 1  # the same sequence is still writable
    ing.close()
    assert len(_read(tmp_path / "o.pcap")) == 1


def test_mixed_link_types_go_to_separate_files(tmp_path):
    sink = PcapSink(str(tmp_path / "o.pcap"))
    ing = Ingest(sink)
    payloads = [b"e1" * 30, b"s1" * 30, b"e2" * 30, b"s2" * 30]
    iface = array("H", [0, 1, 0, 1])
    ing.accept(_batch(1, payloads, ifaces=[("eth0", 1), ("any", 113)], iface=iface))
    ing.close()
    files = sink.files()
    assert [p.rsplit("/", 1)[1] for p in files] == ["o.pcap", "o.linux_sll.pcap"]
    assert [d for _, d in _read(files[0])] == [payloads[0], payloads[2]]
    assert [d for _, d in _read(files[1])] == [payloads[1], payloads[3]]


def test_flow_counts_the_backlog_behind_each_hunters_first_batch(tmp_path):
    # The writer is not started: what is submitted stays queued.
    ing = Ingest(
        PcapSink(str(tmp_path / "o.pcap")),
        slow_depth=4, pause_depth=8, resume_depth=1, slow_work_s=0, pause_work_s=0,
    )  # fmt: skip
    replies: list = []
    # One waiting batch per hunter is a writer that keeps up, however many hunters.
    for k in range(50):
        b = _batch(1, [b"x" * 60], hunter=f"h{k}")
        ing.submit(b, unpack_batch(b), replies.append)
    assert ing.flow == lc_pb2.FLOW_CONTINUE and ing.queue_batches == 50
    # Batches queued behind a hunter's first one are a backlog: SLOW at 4, PAUSE at 8.
    states = []
    for seq in range(2, 11):
        b = _batch(seq, [b"y" * 60], hunter="h0")
        ing.submit(b, unpack_batch(b), replies.append)
        states.append(ing.flow)
    assert states == [lc_pb2.FLOW_CONTINUE] * 3 + [lc_pb2.FLOW_SLOW] * 4 + [lc_pb2.FLOW_PAUSE] * 2
    ing.start()  # everything is written, and the hunters are told to go on
    ing.close()
    assert len(replies) == 59 and all(r.packets == 1 for r in replies)
    assert ing.flow == lc_pb2.FLOW_CONTINUE and ing._waiting == {}


def test_flow_needs_a_backlog_that_takes_the_writer_a_while(tmp_path):
    # 60 small batches of one fast hunter behind its first: the writer (at 0.1 ms per
    # batch) clears them in 6 ms. SLOW would make that hunter wait 50 ms per batch.
    ing = Ingest(PcapSink(str(tmp_path / "o.pcap")))
    ing._batch_s = 0.0001  # as measured by the writer (not started here)
    replies: list = []
    for seq in range(1, 62):
        b = _batch(seq, [b"x" * 60])
        ing.submit(b, unpack_batch(b), replies.append)
        assert ing.flow == lc_pb2.FLOW_CONTINUE, seq
    # The same backlog behind a slow writer (50 ms per batch, 3 s of work): PAUSE.
    ing._batch_s = 0.05
    b = _batch(62, [b"x" * 60])
    ing.submit(b, unpack_batch(b), replies.append)
    assert ing.flow == lc_pb2.FLOW_PAUSE
    ing.start()
    ing.close()
    assert len(replies) == 62 and ing.flow == lc_pb2.FLOW_CONTINUE


STATES = [lc_pb2.FLOW_CONTINUE, lc_pb2.FLOW_SLOW, lc_pb2.FLOW_PAUSE, lc_pb2.FLOW_RESUME]


@pytest.mark.parametrize(("announced", "state"), list(itertools.product(STATES, STATES[:3])))
def test_flow_announcements_every_pair(announced, state):
    change = flow_to_announce(announced, state)
    told = announced if change is None else change
    # After announcing, the hunter's view agrees with the processor's state...
    if state == lc_pb2.FLOW_CONTINUE:
        assert told in (lc_pb2.FLOW_CONTINUE, lc_pb2.FLOW_RESUME)
    else:
        assert told == state
    # ...a return from SLOW/PAUSE is an explicit RESUME, and nothing is repeated.
    if announced in (lc_pb2.FLOW_SLOW, lc_pb2.FLOW_PAUSE) and state == lc_pb2.FLOW_CONTINUE:
        assert change == lc_pb2.FLOW_RESUME
    assert flow_to_announce(told, state) is None


def test_registry_states_follow_heartbeats_and_clean_stops():
    now = [100.0]
    reg = Registry(stale_after=30, clock=lambda: now[0])
    reg.register(lc_pb2.RegisterRequest(hunter_id="h1", hostname="s1"), "peer")
    assert reg.get("h1").state == "connected"
    now[0] += 31
    assert reg.get("h1").state == "stale"
    assert reg.heartbeat(lc_pb2.HeartbeatRequest(hunter_id="h1"))
    assert reg.get("h1").state == "connected"
    assert not reg.heartbeat(lc_pb2.HeartbeatRequest(hunter_id="nobody"))
    reg.stream_opened("h1", "peer")
    reg.received("h1", 10, 1000, duplicate=False)
    reg.received("h1", 10, 1000, duplicate=True)
    reg.stream_closed("h1", clean=True)
    info = reg.get("h1")
    assert info.state == "disconnected"
    assert (info.packets_received, info.batches_received, info.batches_duplicate) == (10, 1, 1)
    reg.stream_opened("h1", "peer")
    reg.stream_closed("h1", clean=False)  # a broken stream is not a clean stop
    assert reg.get("h1").state == "connected"


def test_failed_batches_leave_no_cyclic_garbage(tmp_path):
    """A batch a sink cannot write is answered with the sink's error; that error kept its
    traceback, whose frames (the writer's) name the group and its results, and so the
    error: every failed batch, with its group's records, was cyclic garbage (18
    objects each; a full disk fails them all)."""
    import gc
    import threading

    class Full:
        name = "events"

        def mark(self) -> None:
            return None

        def write(self, batch) -> None:
            raise OSError(28, "No space left on device")

        def rollback(self, mark) -> None:
            pass

        def prepare(self) -> list:
            return []

        def committed(self) -> None:
            pass

        def close(self) -> list:
            return []

    ing = Ingest(PcapSink(str(tmp_path / "o.pcap")), events=Full())
    ing.start()
    answers: list[object] = []
    done = threading.Semaphore(0)

    def reply(r: object) -> None:
        answers.append(type(r))
        done.release()

    def send(seqs: range) -> None:
        for seq in seqs:
            b = _batch(seq, [b"x" * 200] * 20)
            ing.submit(b, unpack_batch(b), reply)
        for _ in seqs:
            assert done.acquire(timeout=10)

    send(range(1, 4))
    gc.collect()
    gc.disable()
    try:
        send(range(4, 54))
        garbage = gc.collect()
    finally:
        gc.enable()
        ing.close()
    assert answers == [OSError] * 53 and ing.write_errors == 53
    assert garbage == 0
