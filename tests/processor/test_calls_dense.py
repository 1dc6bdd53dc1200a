"""CallWriter.write_dense (a batch of dense metadata, call by call) against
CallWriter.write (packet by packet): the same files, rows, counters, states, dedup
memory, undo and recency of open files, on random batches from several hunters with
SIP, RTP, RTCP, packets of no call, duplicates across hunters, repeated packets,
timestamps out of order, dedup memory pruned, rollbacks, flushes and files closed to
respect max_open_files.
"""

from __future__ import annotations

import os
import random
import struct
from array import array
from pathlib import Path

import pytest

from lc.common.sipcall import SipSummary
from lc.common.wire import BatchRecords
from lc.processor.callfiles import _SNAPSHOT, CallWriter
from lc.processor.callindex import CallIndex
from lc.processor.sinks import CallFiles, write_calls
from lc.proto import lc_pb2

NS = 1_000_000_000
MS = 1_000_000
T0 = 1_790_000_000 * NS
ETHERNET = 1


def _frame(payload: bytes) -> bytes:
    return bytes(14) + payload


def _summary(rng: random.Random) -> SipSummary:
    what = rng.choice(["INVITE", 100, 180, 200, "ACK", "BYE", 486, "CANCEL", 487])
    if isinstance(what, int):
        return SipSummary(status=what, cseq_method=rng.choice(["INVITE", "BYE"]))
    return SipSummary(method=what, cseq_method=what, from_user="a", to_user="b",
                      from_uri="sip:a@x", to_uri="sip:b@x")  # fmt: skip


def _batches(seed: int, hunters: int) -> list[tuple[str, list[tuple]]]:
    """[(hunter, [(call_id or None, protocol, summary or None, ts_ns, packet)])]"""
    rng = random.Random(seed)
    calls = [f"call-{seed}-{k}" for k in range(rng.randint(1, 6))]
    sent: list[tuple] = []  # packets a hunter sent, for others to send again
    clock = T0
    out = []
    for _ in range(rng.randint(3, 14)):
        hunter = f"h{rng.randrange(hunters)}"
        pkts = []
        for _ in range(rng.choice([1, 5, 40, 300])):
            clock += rng.randint(-3 * MS, 20 * MS)
            r = rng.random()
            if sent and r < 0.15:  # another hunter's copy, or this hunter's own again
                cid, proto, sm, ts, pkt = rng.choice(sent)
                pkts.append((cid, proto, sm, ts + rng.randint(-80 * MS, 80 * MS), pkt))
                continue
            cid = rng.choice(calls)
            if r < 0.25:
                proto, sm = "sip", _summary(rng)
            elif r < 0.3:
                proto, sm = "sip", None  # SIP metadata without a summary
            elif r < 0.35:
                cid, proto, sm = None, "dns", None  # no call
            else:
                proto, sm = rng.choice(["rtp", "rtp", "rtp", "rtcp"]), None
            size = rng.choice([0, 1, 20, 172, 172, 172])
            if size < 20:  # a few distinct short packets: repeated, never duplicates
                pkt = _frame(bytes([rng.randrange(4)]) * size)
            else:
                pkt = _frame(struct.pack("<Q", len(sent)) * (size // 8))
            pkts.append((cid, proto, sm, clock, pkt))
            sent.append(pkts[-1])
        out.append((hunter, pkts))
    return out


def _cols(pkts: list[tuple]) -> BatchRecords:
    """A received batch of dense metadata, as a hunter's encode_meta makes it: one table
    entry per (call, protocol) for media, one per SIP packet with a summary."""
    records = bytearray()
    caplen = array("I")
    table: list[lc_pb2.PacketMeta] = []
    slot: dict[tuple, int] = {}
    ref = array("H")
    for cid, proto, sm, ts, pkt in pkts:
        records += struct.pack("<IIII", ts // NS, ts % NS, len(pkt), len(pkt)) + pkt
        caplen.append(len(pkt))
        if cid is None and proto == "dns":
            m = lc_pb2.PacketMeta(protocol="dns", session_id="q1")
            key: tuple = ("dns",)
        else:
            m = lc_pb2.PacketMeta(protocol=proto, session_id=cid)
            key = (cid, proto)
            if sm is not None:
                m.sip.CopyFrom(lc_pb2.SipSummary(
                    method=sm.method, status=sm.status, cseq_method=sm.cseq_method,
                    from_user=sm.from_user, to_user=sm.to_user, from_uri=sm.from_uri,
                    to_uri=sm.to_uri,
                ))  # fmt: skip
                key = (len(table), "own")
        k = slot.get(key)
        if k is None:
            table.append(m)
            k = slot[key] = len(table)
        ref.append(k)
    return BatchRecords(bytes(records), caplen, None, [("eth0", ETHERNET)],
                        meta_table=table, meta_ref=ref)  # fmt: skip


def _per_packet(calls: CallWriter, hunter: str, cols: BatchRecords) -> None:
    """write_calls as it was before write_dense: every packet through write()."""
    real = CallWriter.write_dense
    CallWriter.write_dense = lambda self, *a: False  # type: ignore[method-assign]
    try:
        write_calls(calls, hunter, cols)
    finally:
        CallWriter.write_dense = real  # type: ignore[method-assign]


def _state(w: CallWriter) -> tuple:
    calls = {
        cid: (
            tuple(getattr(c, k) for k in _SNAPSHOT if k != "path"),
            os.path.basename(c.path), sorted(c.hunters), list(c.seen.items()), c.seen_limit,
            bytes(c.pend), c.file is not None, c.gen,
        )
        for cid, c in w._calls.items()
    }  # fmt: skip
    return (calls, w.counters, list(w._lru), [c.call_id for c in w._dirty], w.clock_ns,
            sorted(w._heap), w._journal is None)  # fmt: skip


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.parametrize("seed", range(100))
def test_write_dense_is_write_packet_by_packet(tmp_path: Path, seed: int) -> None:
    rng = random.Random(1000 + seed)
    max_open = rng.choice([1, 3, 8, 1000, 1000])
    history = rng.choice([2 * NS, 50 * MS])
    ws = []
    for name in ("dense", "packets"):
        index = CallIndex(tmp_path / f"{name}.db")
        w = CallWriter(tmp_path / name, index=index, max_open_files=max_open,
                       dedup_history_ns=history)  # fmt: skip
        ws.append((w, CallFiles(w), index))
    for k, (hunter, pkts) in enumerate(_batches(seed, rng.choice([1, 2, 3]))):
        cols = _cols(pkts)
        marks = [sink.mark() for _, sink, _ in ws]
        write_calls(ws[0][0], hunter, cols)
        _per_packet(ws[1][0], hunter, cols)
        assert _state(ws[0][0]) == _state(ws[1][0]), f"batch {k}"
        if rng.random() < 0.2:  # the batch failed elsewhere: taken back
            for (_, sink, _), m in zip(ws, marks, strict=True):
                sink.rollback(m)
            assert _state(ws[0][0]) == _state(ws[1][0]), f"rollback of batch {k}"
        if rng.random() < 0.2 and ws[0][0]._lru:
            # The least recently written file closed (as when more calls are open than
            # max_open_files): the call's next packet reopens it.
            for w, _, _ in ws:
                w._close_file(next(iter(w._lru.values())))
            assert _state(ws[0][0]) == _state(ws[1][0]), f"file closed after batch {k}"
        if rng.random() < 0.4:
            for _, sink, index in ws:
                rows, counts = sink.calls.flush(defer=True)
                index.commit(rows, counts)
                sink.committed()
            assert _state(ws[0][0]) == _state(ws[1][0]), f"flush after batch {k}"
    for w, _, _index in ws:
        w.close()
    assert _files(tmp_path / "dense") == _files(tmp_path / "packets")
    dump = [sorted(tuple(sorted(x.items())) for x in _rows(index)) for _, _, index in ws]
    assert dump[0] == dump[1]


def _rows(index: CallIndex) -> list[dict]:
    out = []
    cur = index._db.execute("SELECT * FROM calls")
    names = [d[0] for d in cur.description]
    for r in cur.fetchall():
        row = dict(zip(names, r, strict=True))
        row["pcap_path"] = os.path.basename(str(row["pcap_path"]))
        out.append(row)
    return out


def test_write_dense_refuses_a_batch_that_could_close_files(tmp_path: Path) -> None:
    """More calls than max_open_files allows: write_dense writes nothing, says so."""
    w = CallWriter(tmp_path / "c", index=CallIndex(tmp_path / "i.db"), max_open_files=2)
    cols = _cols([(f"c{k}", "rtp", None, T0 + k, _frame(b"x" * k)) for k in range(3)])
    entries = [None, *((f"c{k}", "rtp", None) for k in range(3))]
    assert not w.write_dense("h1", cols.records, cols.caplen, cols.meta_ref, entries, ETHERNET)
    assert w.calls == 0 and w.counters["packets"] == 0
    write_calls(w, "h1", cols)  # packet by packet instead
    assert w.calls == 3 and w.counters["packets"] == 3
