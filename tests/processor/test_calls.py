"""Per-call capture: call files, dedup across hunters, call states, lifecycle, the index.

Real files in tmp_path, read back with lc's pcap reader and, where installed, tshark.
Packets are hand-built Ethernet/IPv4/UDP frames carrying real SIP text and RTP headers.
"""

from __future__ import annotations

import errno
import re
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lc.common.errors import ValidationError
from lc.common.pcapfile import open_capture
from lc.processor.calls import (
    STATES,
    CallIndex,
    CallWriter,
    SipSummary,
    next_state,
)

NS = 1_000_000_000
MS = 1_000_000
T0 = int(datetime(2026, 11, 22, 14, 30, tzinfo=UTC).timestamp()) * NS + 123_456_789
ETHERNET = 1
LINUX_SLL = 113
SAFE = re.compile(r"[A-Za-z0-9._@+=-]+")
REASONS = {100: "Trying", 180: "Ringing", 200: "OK", 401: "Unauthorized", 407: "Proxy Auth"}


# --------------------------------------------------------------------------- packets


def _checksum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def udp_frame(payload: bytes, sport: int = 5060, dport: int = 5060) -> bytes:
    """An Ethernet/IPv4/UDP frame 10.0.0.1 -> 10.0.0.2 (UDP checksum 0: none)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
    )  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return bytes.fromhex("0200000000020200000000010800") + ip + udp


def sip(
    call_id: str,
    what: str | int,
    cseq_method: str | None = None,
    cseq: int = 1,
    frm: str = "alice",
    to: str = "bob",
) -> tuple[bytes, SipSummary]:
    """A SIP request (``what`` a method) or response (a status) and its summary."""
    if isinstance(what, int):
        assert cseq_method is not None
        start = f"SIP/2.0 {what} {REASONS.get(what, 'Other')}"
        summary = SipSummary(status=what, cseq_method=cseq_method)
    else:
        cseq_method = cseq_method or what
        start = f"{what} sip:{to}@example.com SIP/2.0"
        summary = SipSummary(method=what, cseq_method=cseq_method)
    summary = SipSummary(
        summary.method,
        summary.status,
        summary.cseq_method,
        frm,
        to,
        f"sip:{frm}@example.com",
        f"sip:{to}@example.com",
    )
    text = (
        f"{start}\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{cseq}{cseq_method}\r\n"
        f"From: <sip:{frm}@example.com>;tag=a1\r\n"
        f"To: <sip:{to}@example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return udp_frame(text.encode(), 5060, 5060), summary


def rtp(seq: int, ssrc: int = 0x1234) -> bytes:
    header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, 160 * seq, ssrc)
    return udp_frame(header + bytes([seq & 0xFF]) * 160, 10000, 20000)


def record(ts_ns: int, packet: bytes) -> bytes:
    return struct.pack("<IIII", ts_ns // NS, ts_ns % NS, len(packet), len(packet)) + packet


def send(
    w: CallWriter,
    call_id: str,
    ts_ns: int,
    packet: bytes,
    protocol: str = "rtp",
    summary: SipSummary | None = None,
    hunter: str = "h1",
    linktype: int = ETHERNET,
) -> bytes:
    rec = record(ts_ns, packet)
    w.write(call_id, hunter, ts_ns, rec, linktype, protocol, summary)
    return rec


def send_sip(w: CallWriter, call_id: str, ts_ns: int, what: str | int, **kw) -> bytes:
    hunter = kw.pop("hunter", "h1")
    packet, summary = sip(call_id, what, **kw)
    return send(w, call_id, ts_ns, packet, "sip", summary, hunter)


def records_of(path: str | Path) -> list[bytes]:
    """The file's packets as nanosecond records, rebuilt from what lc's reader returns."""
    with open_capture(path) as r:
        assert r.format == "pcap" and r.truncated == 0
        return [record(ts, bytes(data)) for ts, _, data, _ in r.records()]


def assert_single_pcap(path: str | Path, records: list[bytes], linktype: int = ETHERNET) -> None:
    """One nanosecond global header, then exactly ``records``, byte for byte."""
    data = Path(path).read_bytes()
    magic, major, minor, zone, sigfigs, snaplen, lt = struct.unpack("<IHHiIII", data[:24])
    assert (magic, major, minor, zone, sigfigs, snaplen, lt) == (
        0xA1B23C4D, 2, 4, 0, 0, 262144, linktype,
    )  # fmt: skip
    assert data[24:] == b"".join(records)
    assert records_of(path) == records


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def index(tmp_path):
    idx = CallIndex(tmp_path / "db" / "calls.db")
    yield idx
    idx.close()


@pytest.fixture
def outdir(tmp_path) -> Path:
    return tmp_path / "calls"


def writer(outdir: Path, index: CallIndex, **kw) -> CallWriter:
    return CallWriter(outdir, index=index, **kw)


# --------------------------------------------------------------------------- files


def test_call_records_are_written_byte_for_byte(outdir, index):
    w = writer(outdir, index)
    cid = "a84b4c76e66710@pc33.example.com"
    sent = [
        send_sip(w, cid, T0, "INVITE"),
        send_sip(w, cid, T0 + 10 * MS, 100, cseq_method="INVITE"),
        send_sip(w, cid, T0 + 900 * MS, 200, cseq_method="INVITE"),
        send_sip(w, cid, T0 + 910 * MS, "ACK"),
    ]
    sent += [send(w, cid, T0 + NS + i * 20 * MS, rtp(i)) for i in range(50)]
    sent.append(send(w, cid, T0 + 3 * NS, udp_frame(b"\x81\xc8\x00\x06" + bytes(24)), "rtcp"))
    sent.append(send_sip(w, cid, T0 + 4 * NS, "BYE", cseq=2))
    w.flush()
    row = index.get(cid)
    assert row is not None
    path = Path(str(row["pcap_path"]))
    assert path.is_absolute() and path.parent == outdir
    assert path.name == f"20261122T143000.123456789Z_{cid}.pcap"
    assert_single_pcap(path, sent)  # readable while the writer still has the file open
    w.close()
    assert_single_pcap(path, sent)
    assert (row["packets"], row["sip_packets"], row["rtp_packets"], row["rtcp_packets"]) == (
        56, 5, 50, 1,
    )  # fmt: skip
    assert row["bytes"] == sum(len(r) - 16 for r in sent)
    assert (row["start_ns"], row["last_seen_ns"], row["end_ns"]) == (T0, T0 + 4 * NS, T0 + 4 * NS)
    c = w.counters
    assert c["packets"] == 56 and c["bytes"] == row["bytes"] and c["calls_opened"] == 1
    assert c["files_closed"] == 1 and w.open_files == 0

    tshark = shutil.which("tshark")
    if tshark is None:
        return  # the byte-level checks above stand; tshark is the independent oracle
    out = subprocess.run(
        [tshark, "-r", str(path), "-T", "fields", "-e", "sip.Call-ID", "-Y", "sip"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [cid] * 5
    frames = subprocess.run(
        [tshark, "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert frames.returncode == 0, frames.stderr
    lines = frames.stdout.split("\n")[:-1]
    assert len(lines) == 56
    first_ts = lines[0].split("\t")[0]
    assert first_ts.endswith(".123456789")  # nanoseconds survive
    if capinfos := shutil.which("capinfos"):
        info = subprocess.run([capinfos, "-c", str(path)], capture_output=True, text=True)
        assert info.returncode == 0, info.stderr
        assert re.search(r"Number of packets:\s+56\b", info.stdout)


def test_linktype_of_the_first_packet_rules(outdir, index):
    w = writer(outdir, index)
    first = send(w, "c1", T0, rtp(1))
    send(w, "c1", T0 + MS, b"\x00" * 16 + rtp(2), linktype=LINUX_SLL)
    w.close()
    assert w.counters["linktype_mismatch"] == 1 and w.counters["packets"] == 1
    assert_single_pcap(index.get("c1")["pcap_path"], [first])


def test_index_is_written_on_flush_not_per_packet(outdir, index):
    w = writer(outdir, index)
    send_sip(w, "c1", T0, "INVITE")
    send(w, "c1", T0 + MS, rtp(1))
    assert index.get("c1") is None
    w.flush()
    assert index.get("c1")["packets"] == 2
    send(w, "c1", T0 + 2 * MS, rtp(2))
    assert index.get("c1")["packets"] == 2
    w.close()
    assert index.get("c1")["packets"] == 3


# --------------------------------------------------------------------------- states

# Each step: (what, cseq_method, expected state, this step's time is the end time)
FLOWS = {
    "answered then ended": [
        ("INVITE", None, "ringing", False),
        (100, "INVITE", "ringing", False),
        (180, "INVITE", "ringing", False),
        (200, "INVITE", "answered", False),
        ("ACK", None, "answered", False),
        ("BYE", None, "ended", True),
        (200, "BYE", "ended", False),
    ],
    "cancelled": [
        ("INVITE", None, "ringing", False),
        (180, "INVITE", "ringing", False),
        ("CANCEL", None, "cancelled", True),
        (200, "CANCEL", "cancelled", False),
        (487, "INVITE", "cancelled", False),
        ("ACK", None, "cancelled", False),
    ],
    "487 without a captured CANCEL": [
        ("INVITE", None, "ringing", False),
        (487, "INVITE", "cancelled", True),
    ],
    "busy": [
        ("INVITE", None, "ringing", False),
        (100, "INVITE", "ringing", False),
        (486, "INVITE", "failed", True),
        ("ACK", None, "failed", False),
    ],
    "failed re-INVITE keeps the call": [
        ("INVITE", None, "ringing", False),
        (200, "INVITE", "answered", False),
        ("ACK", None, "answered", False),
        ("INVITE", None, "answered", False),  # re-INVITE
        (491, "INVITE", "answered", False),
        ("ACK", None, "answered", False),
        ("BYE", None, "ended", True),
    ],
    "auth challenge then answered": [
        ("INVITE", None, "ringing", False),
        (407, "INVITE", "failed", False),
        ("ACK", None, "failed", False),
        ("INVITE", None, "ringing", False),
        (200, "INVITE", "answered", False),
    ],
    "200 crossing the CANCEL": [
        ("INVITE", None, "ringing", False),
        ("CANCEL", None, "cancelled", False),
        (200, "INVITE", "answered", False),
        ("BYE", None, "ended", True),
    ],
    "REGISTER transaction": [
        ("REGISTER", None, "ringing", False),
        (401, "REGISTER", "failed", False),
        ("REGISTER", None, "ringing", False),
        (200, "REGISTER", "ended", True),
    ],
}


@pytest.mark.parametrize("flow", FLOWS)
def test_call_states(outdir, index, flow):
    w = writer(outdir, index)
    end = None
    for i, (what, cseq_method, state, ends) in enumerate(FLOWS[flow]):
        ts = T0 + i * 100 * MS
        send_sip(w, "c1", ts, what, cseq_method=cseq_method, cseq=i + 1)
        if ends:
            end = ts
        w.flush()
        row = index.get("c1")
        assert row["state"] == state, f"step {i} {what}"
    assert row["end_ns"] == end
    assert row["method"] == FLOWS[flow][0][0]
    assert (row["from_user"], row["to_user"]) == ("alice", "bob")
    assert (row["from_uri"], row["to_uri"]) == ("sip:alice@example.com", "sip:bob@example.com")
    w.close()


def test_a_call_first_seen_mid_dialog_is_an_invite_call():
    assert next_state("ringing", "INVITE", SipSummary(method="BYE")) == "ended"
    assert next_state("answered", "INVITE", SipSummary(status=486, cseq_method="INVITE")) == (
        "answered"
    )


SUMMARIES = [
    SipSummary(method=m, cseq_method=m)
    for m in ("INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "PRACK", "")
] + [
    SipSummary(status=s, cseq_method=m)
    for s in (100, 180, 183, 200, 202, 302, 401, 486, 487, 500, 603)
    for m in ("INVITE", "BYE", "CANCEL", "REGISTER", "")
]


def test_every_state_and_message_lands_in_a_state():
    for state in STATES:
        for method in ("INVITE", "REGISTER", "MESSAGE", ""):
            for s in SUMMARIES:
                assert next_state(state, method, s) in STATES


def test_responses_to_other_transactions_do_not_end_a_register():
    ok_options = SipSummary(status=200, cseq_method="OPTIONS")
    assert next_state("ringing", "REGISTER", ok_options) == "ringing"
    assert next_state("ringing", "REGISTER", SipSummary(status=200, cseq_method="REGISTER")) == (
        "ended"
    )


# --------------------------------------------------------------------------- dedup


def test_dedup_across_hunters(outdir, index):
    w = writer(outdir, index)
    invite, summary = sip("c1", "INVITE")
    kept = [send(w, "c1", T0, invite, "sip", summary, hunter="h1")]
    send(w, "c1", T0 + 3 * MS, invite, "sip", summary, hunter="h2")  # same packet, h2's clock
    kept.append(send(w, "c1", T0 + 20 * MS, rtp(1), hunter="h2"))
    send(w, "c1", T0 + 18 * MS, rtp(1), hunter="h1")  # arrives later, stamped earlier
    # h2 sends the same capture again (a second run): its own packets are all written
    # (issue 9 item 6d; a resent batch never gets here, the ledger drops it).
    kept.append(send(w, "c1", T0 + 20 * MS, rtp(1), hunter="h2"))
    # A SIP retransmission 1 s later has the same bytes but is a new packet.
    kept.append(send(w, "c1", T0 + NS, invite, "sip", summary, hunter="h1"))
    send(w, "c1", T0 + NS + 2 * MS, invite, "sip", summary, hunter="h2")
    # One hunter's own identical packets at different times are both on its wire.
    kept.append(send(w, "c1", T0 + NS + 10 * MS, invite, "sip", summary, hunter="h1"))
    # Beyond the window between hunters (clocks 80 ms apart): written twice.
    kept.append(send(w, "c1", T0 + NS + 90 * MS, invite, "sip", summary, hunter="h2"))
    w.close()
    assert w.counters["duplicates"] == 3
    row = index.get("c1")
    assert row["hunters"] == ["h1", "h2"]
    assert row["packets"] == 6 and row["sip_packets"] == 4 and row["rtp_packets"] == 2
    assert_single_pcap(row["pcap_path"], kept)


def test_dedup_memory_is_bounded(outdir, index):
    w = writer(outdir, index)
    for i in range(20_000):
        send(w, "c1", T0 + i * MS, rtp(i, ssrc=i >> 16))
    call = w._calls["c1"]
    assert len(call.seen) <= 4096
    # Hashes inside the history (2 s) are still known: a late copy from h2 is caught.
    send(w, "c1", T0 + 19_000 * MS, rtp(19_000, ssrc=0), hunter="h2")
    assert w.counters["duplicates"] == 1
    w.close()


# --------------------------------------------------------------------------- names


def test_pattern_tokens(outdir, index):
    w = writer(outdir, index, pattern="{from}-{to}_{hunter}_{timestamp}_{callid}.pcap")
    send_sip(w, "abc@host", T0, "INVITE", frm="alice", to="bob", hunter="hunter-1")
    send(w, "media-first", T0 + NS, rtp(1))  # no SIP yet: users unknown
    w.close()
    assert Path(index.get("abc@host")["pcap_path"]).name == (
        "alice-bob_hunter-1_20261122T143000.123456789Z_abc@host.pcap"
    )
    assert Path(index.get("media-first")["pcap_path"]).name == (
        "unknown-unknown_h1_20261122T143001.123456789Z_media-first.pcap"
    )


@pytest.mark.parametrize(
    "call_id",
    [
        "../../etc/passwd@evil",
        "..",
        "/absolute/path",
        "x" * 5000,
        "☎ anruf-müller\x00\n\\..\\win",
        ".hidden",
    ],
)
def test_file_names_stay_safe_inside_the_directory(outdir, index, call_id):
    w = writer(outdir, index, pattern="{callid}.{from}.{to}.{hunter}.{timestamp}.pcap")
    send_sip(w, call_id, T0, "INVITE", frm="../" + "é" * 300, to="b/c", hunter="../h")
    w.close()
    path = Path(index.get(call_id)["pcap_path"])
    assert path.parent == outdir and path.is_file()
    name = path.name
    assert SAFE.fullmatch(name), name
    assert ".." not in name and not name.startswith(".")
    assert len(name) <= 200 and name.endswith(".pcap")
    assert sorted(p.name for p in outdir.iterdir()) == [name]


def test_long_ids_that_collide_after_cutting_get_suffixes(outdir, index):
    w = writer(outdir, index, pattern="{callid}")
    ids = ["y" * 300 + "1", "y" * 300 + "2", "y" * 300 + "3"]
    for i, cid in enumerate(ids):
        send(w, cid, T0 + i, rtp(i))
    w.close()
    names = [Path(index.get(cid)["pcap_path"]).name for cid in ids]
    assert names == ["y" * 64, "y" * 64 + "-2", "y" * 64 + "-3"]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("{caller}.pcap", "unknown token {caller}"),
        ("{}.pcap", "unknown token {}"),
        ("{callid.real}.pcap", "unknown token {callid.real}"),
        ("{callid:>20}.pcap", "format spec"),
        ("{callid!r}.pcap", "format spec"),
        ("{callid.pcap", "call file pattern"),
        ("sub/{callid}.pcap", "path separator"),
        ("", "empty"),
    ],
)
def test_bad_patterns_are_refused(outdir, index, pattern, message):
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        writer(outdir, index, pattern=pattern)
    assert isinstance(e.value, ValidationError)
    if "unknown token" in message:
        assert "allowed: {callid}, {from}, {to}, {timestamp}, {hunter}" in str(e.value)


@pytest.mark.parametrize(
    ("kw", "name"),
    [({"max_open_files": 0}, "max_open_files"), ({"grace_ns": -1}, "grace_ns")],
)
def test_bad_parameters_are_refused(outdir, index, kw, name):
    with pytest.raises(ValidationError, match=name):
        writer(outdir, index, **kw)


def test_existing_files_are_never_overwritten(outdir, index, tmp_path):
    outdir.mkdir()
    (outdir / "alice.pcap").write_bytes(b"precious")
    w = writer(outdir, index, pattern="{from}.pcap")
    a = send_sip(w, "call-a", T0, "INVITE")
    b = send_sip(w, "call-b", T0 + NS, "INVITE")
    w.close()
    # A new processor run, with a fresh index, on the same directory.
    other = CallIndex(tmp_path / "other.db")
    w2 = writer(outdir, other, pattern="{from}.pcap")
    c = send_sip(w2, "call-c", T0 + 2 * NS, "INVITE")
    w2.close()
    assert (outdir / "alice.pcap").read_bytes() == b"precious"
    assert_single_pcap(outdir / "alice-2.pcap", [a])
    assert_single_pcap(outdir / "alice-3.pcap", [b])
    assert_single_pcap(outdir / "alice-4.pcap", [c])
    assert other.get("call-c")["pcap_path"] == str(outdir / "alice-4.pcap")
    other.close()


# --------------------------------------------------------------------------- lifecycle


def test_grace_after_the_end_then_late_packets_append(outdir, index):
    w = writer(outdir, index, grace_ns=5 * NS)
    sent = [send_sip(w, "c1", T0, "INVITE"), send_sip(w, "c1", T0 + NS, 200, cseq_method="INVITE")]
    sent += [send(w, "c1", T0 + 2 * NS + i * 20 * MS, rtp(i)) for i in range(10)]
    bye = T0 + 10 * NS
    sent.append(send_sip(w, "c1", bye, "BYE", cseq=2))
    sent.append(send(w, "c1", bye + 2 * NS, rtp(99)))  # late RTP within the grace
    assert w.clock_ns == bye + 2 * NS
    assert w.tick(bye + 5 * NS - 1) == 0 and w.open_files == 1
    assert w.tick(bye + 5 * NS) == 1
    assert w.open_files == 0 and w.calls == 0 and w.counters["files_closed"] == 1
    row = index.get("c1")  # committed at close time, without a flush
    assert (row["state"], row["end_ns"], row["packets"]) == ("ended", bye, 14)
    # Later still: the call is gone from memory; its file is continued, not replaced.
    sent.append(send(w, "c1", bye + 60 * NS, rtp(100), hunter="h2"))
    assert w.counters["late_packets"] == 1 and w.counters["reopened"] == 1
    assert w.tick(bye + 65 * NS) == 1
    w.close()
    row = index.get("c1")
    assert (row["state"], row["end_ns"], row["packets"]) == ("ended", bye, 15)
    assert row["hunters"] == ["h1", "h2"]
    assert_single_pcap(row["pcap_path"], sent)
    assert len(list(outdir.iterdir())) == 1
    assert w.counters["calls_opened"] == 1


def test_idle_calls_close_and_end(outdir, index):
    w = writer(outdir, index, idle_timeout_ns=300 * NS)
    send_sip(w, "c1", T0, "INVITE")
    send_sip(w, "c1", T0 + NS, 200, cseq_method="INVITE")
    last = T0 + 2 * NS
    send(w, "c1", last, rtp(1))
    send_sip(w, "c2", T0 + 100 * NS, "INVITE", frm="carol")
    w.flush()
    assert [r["call_id"] for r in index.query(active=True)] == ["c2", "c1"]
    assert w.tick(last + 300 * NS - 1) == 0
    assert w.tick(last + 300 * NS) == 1  # wall clock while nothing arrives: same ns scale
    assert (index.get("c1")["state"], index.get("c1")["end_ns"]) == ("ended", last)
    assert [r["call_id"] for r in index.query(active=True)] == ["c2"]
    assert w.open_files == 1 and w.calls == 1
    w.close()
    assert index.get("c2")["state"] == "ringing"  # still going when the writer stopped


def test_max_open_files_closes_the_least_recently_written(outdir, index):
    w = writer(outdir, index, max_open_files=2)
    sent: dict[str, list[bytes]] = {"a": [], "b": [], "c": []}
    ts = T0
    for rnd in range(4):
        for cid in ("a", "b", "c"):
            ts += MS
            sent[cid].append(send(w, cid, ts, rtp(rnd * 3 + ord(cid))))
            assert w.open_files <= 2
    # a, b, c round robin with 2 slots: every packet after the first round reopens.
    assert w.counters["reopened"] == 9 and w.counters["calls_opened"] == 3
    assert w.calls == 3
    w.close()
    for cid, recs in sent.items():
        assert_single_pcap(index.get(cid)["pcap_path"], recs)
    assert w.counters["files_closed"] == 12


def test_the_recently_written_file_stays_open(outdir, index):
    w = writer(outdir, index, max_open_files=2)
    send(w, "a", T0, rtp(1))
    send(w, "b", T0 + 1, rtp(2))
    send(w, "a", T0 + 2, rtp(3))  # a is now the most recently written
    send(w, "c", T0 + 3, rtp(4))  # closes b, not a
    send(w, "a", T0 + 4, rtp(5))
    assert w.counters["reopened"] == 0
    send(w, "b", T0 + 5, rtp(6))
    assert w.counters["reopened"] == 1
    w.close()


def test_a_call_continues_after_a_restart_and_unacknowledged_bytes_are_cut(outdir, index):
    w = writer(outdir, index)
    sent = [send_sip(w, "c1", T0, "INVITE"), send_sip(w, "c1", T0 + NS, 200, cseq_method="INVITE")]
    w.flush()
    w.close()
    path = index.get("c1")["pcap_path"]
    with open(path, "ab") as f:  # a crash in the middle of writing an unacknowledged batch
        f.write(record(T0 + 2 * NS, rtp(1))[:30])
    w2 = writer(outdir, index)
    sent.append(send(w2, "c1", T0 + 3 * NS, rtp(2)))
    sent.append(send_sip(w2, "c1", T0 + 4 * NS, "BYE", cseq=2))
    w2.close()
    assert w2.counters["reopened"] == 1 and w2.counters["calls_opened"] == 0
    assert w2.counters["late_packets"] == 0
    row = index.get("c1")
    assert (row["state"], row["packets"], row["start_ns"]) == ("ended", 4, T0)
    assert_single_pcap(path, sent)


def test_a_lost_file_is_replaced_not_appended_to(outdir, index):
    w = writer(outdir, index, pattern="{callid}.pcap")
    send(w, "c1", T0, rtp(1))
    w.close()
    Path(index.get("c1")["pcap_path"]).unlink()
    w2 = writer(outdir, index, pattern="{callid}.pcap")
    rec = send(w2, "c1", T0 + NS, rtp(2))
    w2.close()
    assert w2.counters["files_replaced"] == 1
    row = index.get("c1")
    assert row["packets"] == 1 and row["start_ns"] == T0
    assert_single_pcap(row["pcap_path"], [rec])


def test_a_failed_flush_raises_and_the_resent_batch_is_written(outdir, index):
    w = writer(outdir, index, pattern="{callid}.pcap")
    a = send(w, "c1", T0, rtp(1))
    w.flush()
    mark = w.mark()  # the processor marks before every batch
    b = send(w, "c1", T0 + MS, rtp(2))
    real = w._calls["c1"].file._f

    class DiskFull:
        """The disk fills up: b's record reaches the file only in part."""

        def write(self, data: bytes) -> int:
            real.write(bytes(data)[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str):
            return getattr(real, name)

    w._calls["c1"].file._f = DiskFull()
    with pytest.raises(OSError, match="No space"):
        w.flush()
    # Nothing of b stays in the file, and the batch is taken back whole.
    assert (outdir / "c1.pcap").stat().st_size == 24 + len(a)
    w.rollback(mark)
    w._calls["c1"].file._f = real
    # The batch was not acknowledged: the hunter sends b again, with its timestamp.
    b_again = send(w, "c1", T0 + MS, rtp(2))
    assert b_again == b and w.counters["duplicates"] == 0
    assert w.counters["files_replaced"] == 0
    w.close()
    row = index.get("c1")
    assert row["pcap_path"] == str(outdir / "c1.pcap") and row["packets"] == 2
    assert_single_pcap(row["pcap_path"], [a, b])


def test_a_batch_taken_back_leaves_no_record_twice(outdir, index):
    """Issue 9 item 6a: a batch that failed after some of its records were written for
    a call (another call's file, or the unified output, failed) is resent whole; before,
    the records written before the failure stayed, and the resend wrote them again."""
    w = writer(outdir, index, pattern="{callid}.pcap")
    first = [send(w, "c1", T0, rtp(1)), send(w, "c2", T0 + 1, rtp(50))]
    w.flush()
    mark = w.mark()
    batch = [("c1", T0 + 10 * MS + k, rtp(2 + k)) for k in range(3)]
    batch += [("c3", T0 + 20 * MS, rtp(90))]  # a new call: its file must go again
    batch += [("c2", T0 + 30 * MS + k, rtp(60 + k)) for k in range(3)]
    for cid, ts, pkt in batch:
        send(w, cid, ts, pkt)
    real = w._calls["c2"].file._f

    class DiskFull:
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str):
            return getattr(real, name)

    w._calls["c2"].file._f = DiskFull()
    with pytest.raises(OSError, match="No space"):
        w.flush()  # c1 and c3 were written before c2 failed
    w._calls["c2"].file._f = real
    w.rollback(mark)  # the batch failed: nothing of it stays
    assert (outdir / "c1.pcap").stat().st_size == 24 + len(first[0])
    assert not (outdir / "c3.pcap").exists() and w.calls == 2
    resent = {cid: [] for cid in ("c1", "c2", "c3")}
    for cid, ts, pkt in batch:
        resent[cid].append(send(w, cid, ts, pkt))
    w.close()
    assert w.counters["duplicates"] == 0
    assert_single_pcap(outdir / "c1.pcap", [first[0], *resent["c1"]])
    assert_single_pcap(outdir / "c2.pcap", [first[1], *resent["c2"]])
    assert_single_pcap(outdir / "c3.pcap", resent["c3"])
    assert index.get("c1")["packets"] == 4 and index.get("c3")["packets"] == 1


def test_writing_to_a_closed_writer_fails(outdir, index):
    w = writer(outdir, index)
    w.close()
    w.close()
    with pytest.raises(ValueError, match="closed"):
        send(w, "c1", T0, rtp(1))


def test_fsync_mode_writes_the_same_files(outdir, index):
    w = writer(outdir, index, fsync=True, max_open_files=1)
    a = send(w, "a", T0, rtp(1))
    b = send(w, "b", T0 + 1, rtp(2))
    w.flush()
    w.close()
    assert_single_pcap(index.get("a")["pcap_path"], [a])
    assert_single_pcap(index.get("b")["pcap_path"], [b])


# --------------------------------------------------------------------------- index


def test_query_and_persistence(outdir, index, tmp_path):
    w = writer(outdir, index)
    send_sip(w, "A", T0, "INVITE", frm="alice", to="bob")
    send_sip(w, "A", T0 + NS, 200, cseq_method="INVITE", frm="alice", to="bob")
    send(w, "A", T0 + 2 * NS, rtp(1))
    send_sip(w, "B", T0 + 10 * NS, "INVITE", frm="carol", to="alice")
    send_sip(w, "B", T0 + 11 * NS, 603, cseq_method="INVITE", frm="carol", to="alice")
    send_sip(w, "C", T0 + 20 * NS, "INVITE", frm="dave", to="erin", hunter="h2")
    send_sip(w, "D", T0 + 30 * NS, "OPTIONS", frm="alicex", to="bob")
    w.close()

    def ids(**kw) -> list[str]:
        return [r["call_id"] for r in index.query(**kw)]

    assert ids() == ["D", "C", "B", "A"]
    assert ids(active=True) == ["D", "C", "A"]
    assert ids(user="alice") == ["B", "A"]
    assert ids(user="bob") == ["D", "A"]
    assert ids(active=True, user="alice") == ["A"]
    assert ids(limit=2) == ["D", "C"]
    assert ids(limit=0) == []
    assert ids(user="nobody") == []
    a = index.get("A")
    assert a["hunters"] == ["h1"] and a["state"] == "answered" and a["end_ns"] is None
    assert index.get("B")["state"] == "failed" and index.get("D")["method"] == "OPTIONS"
    assert index.get("missing") is None
    before = index.query()

    again = CallIndex(tmp_path / "db" / "calls.db")
    try:
        assert again.query() == before
        assert [r["call_id"] for r in again.query(active=True, user="erin")] == ["C"]
    finally:
        again.close()


def test_update_many_is_an_upsert(index):
    row = {
        "call_id": "x",
        "method": "INVITE",
        "state": "ringing",
        "from_user": "a",
        "to_user": "b",
        "from_uri": "",
        "to_uri": "",
        "start_ns": 1,
        "end_ns": None,
        "last_seen_ns": 1,
        "hunters": {"h2", "h1"},
        "packets": 1,
        "bytes": 10,
        "sip_packets": 1,
        "rtp_packets": 0,
        "rtcp_packets": 0,
        "pcap_path": "/x.pcap",
    }
    assert index.update_many([row]) == 1
    assert index.update_many([{**row, "state": "answered", "packets": 2}]) == 1
    got = index.get("x")
    assert got["state"] == "answered" and got["packets"] == 2 and got["hunters"] == ["h1", "h2"]
    assert index.update_many([]) == 0
    with pytest.raises(ValidationError, match="limit"):
        index.query(limit=-1)
