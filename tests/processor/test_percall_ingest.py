"""Per-call PCAPs through the ingest: real batches (dense metadata) into an Ingest with a
CallWriter, files read back with lc's pcap reader and, where installed, tshark.

Run as a script for the per-packet cost of the per-call path inside Ingest.accept().
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import time
from array import array
from pathlib import Path

import pytest

from lc.common.pcapfile import PcapSink, frame_records, open_capture
from lc.common.wire import build_batch, unpack_batch
from lc.processor.calls import CallIndex, CallWriter
from lc.processor.ingest import Ingest
from lc.processor.ledger import Ledger
from lc.proto import lc_pb2

NS = 1_000_000_000
T0 = 1_795_000_000 * NS + 123_456_789
ETHERNET = 1
LINUX_SLL = 113


# --------------------------------------------------------------------------- packets


def _checksum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def udp_frame(payload: bytes, sport: int, dport: int) -> bytes:
    """An Ethernet/IPv4/UDP frame 10.0.0.1 -> 10.0.0.2 (no UDP checksum)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
    )  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return bytes.fromhex("0200000000020200000000010800") + ip + udp


def sip_frame(call_id: str, start: str, cseq_method: str) -> bytes:
    text = (
        f"{start}\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds\r\n"
        "From: <sip:alice@example.com>;tag=1928301774\r\n"
        "To: <sip:bob@example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {cseq_method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return udp_frame(text.encode(), 5060, 5060)


def rtp_frame(seq: int, ssrc: int) -> bytes:
    header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, 160 * seq, ssrc)
    return udp_frame(header + bytes([seq & 0xFF]) * 160, 10000 + 2 * (ssrc % 1000), 20000)


def sip_meta(call_id: str, method: str = "", status: int = 0, cseq: str = "") -> lc_pb2.PacketMeta:
    return lc_pb2.PacketMeta(
        protocol="sip",
        session_id=call_id,
        sip=lc_pb2.SipSummary(
            method=method,
            status=status,
            cseq_method=cseq or method,
            from_user="alice",
            to_user="bob",
            from_uri="sip:alice@example.com",
            to_uri="sip:bob@example.com",
        ),
    )


def rtp_meta(call_id: str) -> lc_pb2.PacketMeta:
    return lc_pb2.PacketMeta(protocol="rtp", session_id=call_id, filter_ids=["voip"])


Packet = tuple[bytes, "lc_pb2.PacketMeta | None"]


def make_batch(
    seq: int,
    packets: list[Packet],
    *,
    t0: int = T0,
    hunter: str = "h1",
    epoch: int = 7,
    ifaces: list[tuple[str, int]] | None = None,
    iface: array | None = None,
) -> tuple[lc_pb2.PacketBatch, list[bytes]]:
    """A batch with dense metadata (one table entry per distinct PacketMeta object),
    and each packet's nanosecond record."""
    n = len(packets)
    ts = array("q", [t0 + seq * 10_000_000 + i * 1000 for i in range(n)])
    cl = array("I", [len(p) for p, _ in packets])
    blob = b"".join(p for p, _ in packets)
    recs = frame_records(ts, cl, cl, blob)
    table: list[lc_pb2.PacketMeta] = []
    where: dict[int, int] = {}
    ref = array("H")
    for _, m in packets:
        if m is None:
            ref.append(0)
            continue
        if id(m) not in where:
            table.append(m)
            where[id(m)] = len(table)
        ref.append(where[id(m)])
    each = []
    off = 0
    for c in cl:
        each.append(recs[off : off + 16 + c])
        off += 16 + c
    batch = build_batch(
        hunter,
        epoch,
        seq,
        recs,
        n,
        ifaces or [("eth0", ETHERNET)],
        iface,
        meta_table=table,
        meta_ref=ref,
    )
    # Through the wire and back, as a processor receives it.
    return lc_pb2.PacketBatch.FromString(batch.SerializeToString()), each


def file_records(path: str | Path) -> list[bytes]:
    """A pcap file's records rebuilt from lc's reader (timestamps, lengths, bytes)."""
    out = []
    with open_capture(path) as r:
        for ts, _, data, orig in r.records():
            out.append(struct.pack("<IIII", ts // NS, ts % NS, len(data), orig) + bytes(data))
    return out


class Rig:
    def __init__(self, tmp: Path, **writer_kw) -> None:
        self.tmp = tmp
        self.dir = tmp / "calls"
        db = str(tmp / "lc.db")
        self.index = CallIndex(db)
        self.calls = CallWriter(self.dir, index=self.index, **writer_kw)
        self.sink = PcapSink(str(tmp / "all.pcap"))
        self.ledger = Ledger(db)
        self.ingest = Ingest(self.sink, self.ledger, calls=self.calls)

    def files(self) -> list[Path]:
        return sorted(self.dir.iterdir())

    def row(self, call_id: str) -> dict:
        row = self.index.get(call_id)
        assert row is not None, call_id
        return row

    def close(self) -> None:
        self.ingest.close()
        self.index.close()
        self.ledger.close()


@pytest.fixture
def rig(tmp_path) -> Rig:
    r = Rig(tmp_path)
    yield r
    r.close()


def interleaved(n: int = 6) -> tuple[list[Packet], list[int], list[int], list[int]]:
    """Two calls' RTP interleaved with packets of no call: (packets, A's, B's, none's)."""
    a, b = rtp_meta("call-A"), rtp_meta("call-B")
    dns = lc_pb2.PacketMeta(protocol="dns", filter_ids=["f"])  # metadata, but no call
    packets: list[Packet] = []
    ia, ib, none = [], [], []
    for k in range(n):
        for which, m, idx in ((0, a, ia), (1, b, ib), (2, None, none), (3, dns, none)):
            idx.append(len(packets))
            packets.append((rtp_frame(k, 0x1000 + which), m))
    return packets, ia, ib, none


# ----------------------------------------------------------------------------- tests


def test_each_call_file_holds_exactly_its_packets_in_order(rig):
    packets, ia, ib, _ = interleaved()
    batch, recs = make_batch(1, packets)
    ack, n, _ = rig.ingest.accept(batch)
    assert ack.packets == len(packets) and n == len(packets)
    # Two calls, two files; the packets of no call are in none of them.
    assert len(rig.files()) == 2
    a, b = rig.row("call-A"), rig.row("call-B")
    for row, idx in ((a, ia), (b, ib)):
        path = Path(str(row["pcap_path"]))
        assert path.parent == rig.dir
        want = [recs[i] for i in idx]
        raw = path.read_bytes()
        # Byte for byte: the nanosecond pcap header, then exactly the call's records.
        assert raw[:4] == struct.pack("<I", 0xA1B23C4D)
        assert raw[24:] == b"".join(want)
        assert file_records(path) == want
        assert row["packets"] == len(idx) and row["rtp_packets"] == len(idx)
        assert row["hunters"] == ["h1"] and row["state"] == "ringing"
    # The unified output still has every packet.
    rig.ingest.sink.flush()
    assert file_records(rig.tmp / "all.pcap") == recs
    # Dense metadata counts per matched filter too: every call packet carries its ids.
    per_filter: dict[str, int] = {}
    for _, m in packets:
        for fid in m.filter_ids if m is not None else ():
            per_filter[fid] = per_filter.get(fid, 0) + 1
    assert per_filter and rig.ingest.filter_matches == per_filter


def test_a_duplicate_batch_adds_nothing_to_the_call_files(rig):
    packets, ia, ib, _ = interleaved()
    batch, _ = make_batch(1, packets)
    rig.ingest.accept(batch)
    sizes = {p: p.stat().st_size for p in rig.files()}
    ack, n, _ = rig.ingest.accept(batch)
    assert ack.duplicate and n == 0
    assert {p: p.stat().st_size for p in rig.files()} == sizes
    assert rig.row("call-A")["packets"] == len(ia)
    assert rig.calls.counters["packets"] == len(ia) + len(ib)
    rig.ingest.sink.flush()
    assert len(file_records(rig.tmp / "all.pcap")) == len(packets)


def test_two_copies_in_one_group_are_written_once(tmp_path):
    r = Rig(tmp_path)
    packets, ia, _, _ = interleaved()
    batch, recs = make_batch(1, packets)
    replies: list[object] = []
    # Queued before the writer starts: both copies land in the same group.
    for _ in range(2):
        r.ingest.submit(batch, unpack_batch(batch), replies.append)
    r.ingest.start()
    deadline = time.monotonic() + 10
    while len(replies) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [type(x) for x in replies] == [lc_pb2.Ack, lc_pb2.Ack]
    assert [x.duplicate for x in replies] == [False, True]
    assert r.ingest.groups == 1 and r.ingest.duplicates == 1
    path = r.row("call-A")["pcap_path"]
    r.close()
    assert file_records(path) == [recs[i] for i in ia]
    assert file_records(tmp_path / "all.pcap") == recs


@pytest.mark.parametrize("dense", [True, False], ids=["dense+sparse", "sparse"])
def test_sparse_metadata_is_resolved_as_packet_meta_says(rig, dense):
    payloads = [rtp_frame(k, 40 + k) for k in range(6)]
    ts = array("q", [T0 + k * 1000 for k in range(6)])
    cl = array("I", map(len, payloads))
    recs = frame_records(ts, cl, cl, b"".join(payloads))
    sparse = [
        lc_pb2.PacketMeta(index=1, protocol="rtp", session_id="C"),
        lc_pb2.PacketMeta(index=3, protocol="rtp", session_id="C"),  # the table's B wins
        lc_pb2.PacketMeta(index=4, protocol="dns"),
        lc_pb2.PacketMeta(index=5, protocol="rtcp", session_id="A"),
    ]
    kw = {}
    if dense:
        kw = {
            "meta_table": [rtp_meta("A"), rtp_meta("B")],
            "meta_ref": array("H", [1, 0, 0, 2, 0, 0]),
        }
    batch = build_batch("h1", 7, 1, recs, 6, [("eth0", ETHERNET)], meta=sparse, **kw)
    batch = lc_pb2.PacketBatch.FromString(batch.SerializeToString())
    want: dict[str, list[int]] = {}
    for i, m in enumerate(unpack_batch(batch).packet_meta()):
        if m is not None and m.session_id:
            want.setdefault(m.session_id, []).append(i)
    assert want == ({"A": [0, 5], "B": [3], "C": [1]} if dense else {"A": [5], "C": [1, 3]})
    rig.ingest.accept(batch)
    each = [recs[16 * k + sum(cl[:k]) : 16 * (k + 1) + sum(cl[: k + 1])] for k in range(6)]
    for call_id, idx in want.items():
        assert file_records(rig.row(call_id)["pcap_path"]) == [each[i] for i in idx]
    assert len(rig.files()) == len(want)
    assert rig.row("A")["rtcp_packets"] == 1


def test_sip_metadata_drives_the_call_state(rig):
    cid = "a84b4c76e66710@pc33.example.com"
    media = rtp_meta(cid)

    def msg(start: str, cseq: str, **kw) -> list[Packet]:
        return [(sip_frame(cid, start, cseq), sip_meta(cid, cseq=cseq, **kw))]

    steps = [
        (msg("INVITE sip:bob@example.com SIP/2.0", "INVITE", method="INVITE"), "ringing"),
        (msg("SIP/2.0 180 Ringing", "INVITE", status=180), "ringing"),
        (msg("SIP/2.0 200 OK", "INVITE", status=200), "answered"),
        ([(rtp_frame(k, 0x77), media) for k in range(5)], "answered"),
        (msg("BYE sip:alice@example.com SIP/2.0", "BYE", method="BYE"), "ended"),
    ]
    written: list[bytes] = []
    for seq, (packets, state) in enumerate(steps, 1):
        batch, recs = make_batch(seq, packets)
        rig.ingest.accept(batch)
        written += recs
        row = rig.row(cid)
        assert row["state"] == state, (seq, row)
    assert row["method"] == "INVITE"
    assert (row["from_user"], row["to_user"]) == ("alice", "bob")
    assert row["to_uri"] == "sip:bob@example.com"
    assert row["end_ns"] is not None and row["end_ns"] > row["start_ns"]
    assert (row["sip_packets"], row["rtp_packets"]) == (4, 5)
    assert file_records(row["pcap_path"]) == written


def test_calls_close_after_their_grace_and_on_ingest_close(tmp_path):
    r = Rig(tmp_path, grace_ns=NS)
    done, going = "done-call", "going-call"
    r.ingest.accept(
        make_batch(1, [(sip_frame(done, "BYE sip:x SIP/2.0", "BYE"), sip_meta(done, "BYE"))])[0]
    )
    r.ingest.accept(make_batch(2, [(rtp_frame(1, 5), rtp_meta(going))])[0])
    assert r.calls.calls == 2
    # Capture time moves on by more than the grace: the ended call's file closes.
    r.ingest.accept(make_batch(3, [(rtp_frame(2, 5), rtp_meta(going))], t0=T0 + 2 * NS)[0])
    assert r.calls.calls == 1 and r.calls.open_files == 1
    r.close()
    assert r.calls.open_files == 0
    rows = {c["call_id"]: c for c in CallIndex(tmp_path / "lc.db").query()}
    assert rows[going]["packets"] == 2 and rows[going]["state"] == "ringing"
    assert rows[done]["state"] == "ended"


def test_a_call_write_failure_is_not_acknowledged_and_the_resend_is_whole(rig, monkeypatch):
    packets, ia, ib, _ = interleaved()
    batch, recs = make_batch(1, packets)
    real = rig.calls.write
    calls = {"n": 0}

    def flaky(call_id, *a):
        calls["n"] += 1
        if call_id == "call-B" and calls["n"] > 3:
            raise OSError(28, "No space left on device")
        return real(call_id, *a)

    monkeypatch.setattr(rig.calls, "write", flaky)
    with pytest.raises(OSError, match="No space"):
        rig.ingest.accept(batch)
    assert rig.ingest.packets == 0 and rig.ingest.call_write_errors == 1
    rig.ingest.sink.flush()
    assert not (rig.tmp / "all.pcap").exists()  # nothing in the unified output either
    assert not rig.ledger.written("h1", 7, 1)
    monkeypatch.setattr(rig.calls, "write", real)
    ack, n, _ = rig.ingest.accept(batch)  # the hunter's resend
    assert not ack.duplicate and n == len(packets)
    rig.ingest.sink.flush()
    assert file_records(rig.tmp / "all.pcap") == recs
    for cid, idx in (("call-A", ia), ("call-B", ib)):
        assert file_records(rig.row(cid)["pcap_path"]) == [recs[i] for i in idx], cid


def test_a_failed_call_flush_refuses_the_group(rig, monkeypatch):
    packets, ia, _, _ = interleaved()
    batch, recs = make_batch(1, packets)
    real = rig.calls.flush

    def failing(defer: bool = False) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(rig.calls, "flush", failing)
    with pytest.raises(OSError, match="Input/output"):
        rig.ingest.accept(batch)
    assert not rig.ledger.written("h1", 7, 1) and rig.ingest.packets == 0
    monkeypatch.setattr(rig.calls, "flush", real)
    ack, n, _ = rig.ingest.accept(batch)  # the resend: the group was taken back whole
    assert not ack.duplicate and n == len(packets)
    assert file_records(rig.row("call-A")["pcap_path"]) == [recs[i] for i in ia]
    assert rig.calls.counters["duplicates"] == 0  # nothing of it had stayed
    rig.ingest.sink.flush()
    assert file_records(rig.tmp / "all.pcap") == recs


def test_the_call_file_takes_the_link_type_of_its_interface(rig):
    m = rtp_meta("sll-call")
    payloads = [rtp_frame(k, 9) for k in range(4)]
    iface = array("H", [1, 1, 0, 1])
    packets = [(p, m if k != 2 else None) for k, p in enumerate(payloads)]
    batch, recs = make_batch(
        1, packets, ifaces=[("eth0", ETHERNET), ("any", LINUX_SLL)], iface=iface
    )
    rig.ingest.accept(batch)
    path = rig.row("sll-call")["pcap_path"]
    with open_capture(path) as rd:
        assert rd.interfaces[0].linktype == LINUX_SLL
    assert file_records(path) == [recs[0], recs[1], recs[3]]


def test_tshark_reads_the_call_id_from_a_call_file(rig):
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    cid = "3848276298220188511@atlanta.example.com"
    invite = sip_frame(cid, "INVITE sip:bob@example.com SIP/2.0", "INVITE")
    rig.ingest.accept(make_batch(1, [(invite, sip_meta(cid, "INVITE"))])[0])
    path = rig.row(cid)["pcap_path"]
    out = subprocess.run(
        ["tshark", "-r", path, "-Y", "sip", "-T", "fields", "-e", "sip.Call-ID"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [cid]


# ----------------------------------------------------------------------------- bench


def voip_batch(seq: int, n: int, calls: int) -> lc_pb2.PacketBatch:
    """``n`` packets of ``calls`` concurrent calls: RTP, with one SIP message in 64."""
    metas = [rtp_meta(f"call-{c}@bench") for c in range(calls)]
    sips = [sip_meta(f"call-{c}@bench", status=200, cseq="INVITE") for c in range(calls)]
    packets: list[Packet] = []
    for i in range(n):
        c = (seq * n + i) % calls
        if i % 64 == 0:
            packets.append((sip_frame(f"call-{c}@bench", "SIP/2.0 200 OK", "INVITE"), sips[c]))
        else:
            packets.append((rtp_frame(seq * n + i, c), metas[c]))
    return make_batch(seq, packets)[0]


def bench(n: int = 4096, calls: int = 200, batches: int = 20, rounds: int = 5) -> None:
    """accept() of VoIP batches with and without the per-call writer, interleaved rounds
    (the development VM is shared: the best round of each is the least disturbed)."""
    import tempfile

    bs = [voip_batch(s, n, calls) for s in range(1, batches + 1)]
    best: dict[str, float] = {}
    for _ in range(rounds):
        for label, with_calls in (("unified only", False), ("unified + per-call", True)):
            with tempfile.TemporaryDirectory() as d:
                r = Rig(Path(d))
                if not with_calls:
                    r.ingest.calls = None
                    r.ingest.sinks = [
                        s for s in getattr(r.ingest, "sinks", []) if s.name != "calls"
                    ]
                r.ingest.accept(bs[0])  # warm up: opens every call's file
                t = time.perf_counter()
                for b in bs[1:]:
                    r.ingest.accept(b)
                us = (time.perf_counter() - t) / ((batches - 1) * n) * 1e6
                r.close()
            best[label] = min(us, best.get(label, us))
    for label, us in best.items():
        print(f"{label:20s} {us:.2f} us/packet")
    print(
        f"per-call path        {best['unified + per-call'] - best['unified only']:.2f} us/packet"
        f" ({n}-packet batches, {calls} calls, 1 SIP message in 64 packets; best of {rounds})"
    )


def test_a_capture_replayed_twice_is_in_the_call_file_twice_as_the_readme_says(tmp_path):
    """Issue 9 item 6d: replaying the same capture twice wrote each per-call packet twice
    while the README said identical packets are written once. Decided: what a hunter
    sends again as a new run is written again, in the call file as in the unified file
    (bounded memory: a processor cannot remember every packet of every call), and only
    copies of one packet from two hunters close in time are dropped; the README says so.
    """
    r = Rig(tmp_path)
    packets, ia, _, _ = interleaved()
    for epoch in (1, 2):  # two runs of `lc hunt -r` over the same file (calls still open)
        batch, recs = make_batch(1, packets, epoch=epoch)
        assert not r.ingest.accept(batch)[0].duplicate
    r.close()
    row = CallIndex(tmp_path / "lc.db").get("call-A")
    want = [recs[i] for i in ia]
    assert file_records(row["pcap_path"]) == want + want
    assert row["packets"] == 2 * len(ia)
    assert len(file_records(tmp_path / "all.pcap")) == 2 * len(packets)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "(same bytes within 50 ms, or the same timestamp) is written once" not in readme
    assert "a file replayed twice — is written again" in readme


if __name__ == "__main__":
    bench(*map(int, sys.argv[1:]))


def test_sessions_of_other_modes_are_not_calls(rig):
    """DNS transactions and email/TCP sessions carry a session id too (since the mode
    seam): they are not VoIP calls, so they get no per-call file and no call-index row
    (a resolver's traffic made one file and one 'ringing' call per transaction)."""
    dns = lc_pb2.PacketMeta(protocol="dns", session_id="udp:10.0.0.1:4000-10.0.0.53:53#7")
    mail = lc_pb2.PacketMeta(protocol="smtp", session_id="tcp:10.0.0.1:4001-10.0.0.25:25@1.0")
    other = lc_pb2.PacketMeta(protocol="session", session_id="toy:1")
    a = rtp_meta("call-A")
    packets: list[Packet] = [
        (rtp_frame(k, 0x2000 + k), m) for k, m in enumerate((dns, mail, other, a))
    ]
    batch, recs = make_batch(1, packets)
    ack, n, _ = rig.ingest.accept(batch)
    assert ack.packets == n == 4
    assert [p.name.split("_", 1)[1] for p in rig.files()] == ["call-A.pcap"]
    assert rig.index.get(dns.session_id) is None and rig.index.get(mail.session_id) is None
    assert rig.row("call-A")["packets"] == 1
    rig.ingest.sink.flush()
    assert file_records(rig.tmp / "all.pcap") == recs


def test_an_ended_call_closes_after_its_grace_when_no_more_packets_come(tmp_path):
    """The last call of a replay (or of a link that went quiet) ends and nothing comes
    after it: the writer's idle housekeeping moves the capture clock on by the time
    that passes, so its file still closes after the grace, not at shutdown."""
    r = Rig(tmp_path, grace_ns=NS)
    try:
        cid = "last-call"
        r.ingest.accept(make_batch(1, [(rtp_frame(1, 5), rtp_meta(cid))])[0])
        bye = (sip_frame(cid, "BYE sip:x SIP/2.0", "BYE"), sip_meta(cid, "BYE"))
        r.ingest.accept(make_batch(2, [bye])[0])
        assert r.calls.calls == 1 and r.calls.open_files == 1
        deadline = time.monotonic() + 10
        while r.calls.calls and time.monotonic() < deadline:
            time.sleep(0.1)
        assert r.calls.calls == 0 and r.calls.open_files == 0
        assert r.row(cid)["state"] == "ended"
        # A packet for it that comes later continues the same file.
        r.ingest.accept(make_batch(3, [(rtp_frame(2, 5), rtp_meta(cid))])[0])
        r.ingest.close()
        assert r.row(cid)["packets"] == 3
    finally:
        r.close()
