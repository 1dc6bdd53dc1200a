"""``lc process --per-call-pcap-dir`` and ``lc list calls`` against real processors."""

from __future__ import annotations

import json
import struct
import threading
from array import array
from pathlib import Path

import pytest

from lc.common.pcapfile import frame_records, open_capture
from lc.common.transport import TlsFiles, open_channel
from lc.common.wire import build_batch
from lc.proto import lc_pb2, lc_pb2_grpc
from tests.conftest import run_lc, start_processor, tls_args

NS = 1_000_000_000
T0 = 1_795_000_000 * NS


@pytest.fixture
def call_processor(tmp_path, pki):
    p = start_processor(
        tmp_path, tls_args(pki, "processor"), "--per-call-pcap-dir", str(tmp_path / "calls")
    )
    yield p
    p.stop()


def list_calls(p, pki, *args: str, cert: str = "admin"):
    return run_lc("list", "calls", "--processor", p.addr, *tls_args(pki, cert), *args, timeout=60)


def send_batch(p, pki, batch: lc_pb2.PacketBatch) -> lc_pb2.Ack:
    """Stream one batch as hunter h1 and wait for its Ack."""
    channel = open_channel(
        p.addr,
        TlsFiles(str(pki / "hunter-h1.pem"), str(pki / "hunter-h1.key"), str(pki / "ca.pem")),
    )
    acked = threading.Event()

    def requests():
        yield batch
        acked.wait(30)  # half-closing now would end the stream before the Ack comes

    try:
        stub = lc_pb2_grpc.DataServiceStub(channel)
        for ctl in stub.StreamPackets(requests(), timeout=30):
            if ctl.acks:
                acked.set()
                return ctl.acks[0]
        raise AssertionError("the stream ended without an Ack")
    finally:
        acked.set()
        channel.close()


def voip_batch() -> tuple[lc_pb2.PacketBatch, list[bytes]]:
    """Two calls: alice->bob (INVITE, 200, 2 RTP) and carol->dave (INVITE only)."""

    def meta(call_id: str, frm: str, to: str, **kw) -> lc_pb2.PacketMeta:
        sip = lc_pb2.SipSummary(from_user=frm, to_user=to, cseq_method="INVITE", **kw)
        return lc_pb2.PacketMeta(session_id=call_id, protocol="sip", sip=sip)

    a_inv = meta("call-a", "alice", "bob", method="INVITE")
    a_ok = meta("call-a", "alice", "bob", status=200)
    a_rtp = lc_pb2.PacketMeta(protocol="rtp", session_id="call-a")
    c_inv = meta("call-c", "carol", "dave", method="INVITE")
    table = [a_inv, a_ok, a_rtp, c_inv]
    ref = array("H", [1, 4, 2, 3, 3, 0])
    payloads = [bytes([k]) * (60 + k) for k in range(len(ref))]
    ts = array("q", [T0 + k * 1000 for k in range(len(ref))])
    cl = array("I", map(len, payloads))
    recs = frame_records(ts, cl, cl, b"".join(payloads))
    batch = build_batch("h1", 1, 1, recs, len(ref), [("eth0", 1)], meta_table=table, meta_ref=ref)
    return batch, payloads


def test_list_calls_is_empty_then_shows_the_calls_written(call_processor, pki, tmp_path):
    r = list_calls(call_processor, pki)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []

    batch, payloads = voip_batch()
    ack = send_batch(call_processor, pki, batch)
    assert ack.sequence == 1 and ack.packets == len(payloads)

    r = list_calls(call_processor, pki)
    assert r.returncode == 0, r.stderr
    calls = {c["call_id"]: c for c in json.loads(r.stdout)}
    assert set(calls) == {"call-a", "call-c"}
    a = calls["call-a"]
    assert a["state"] == "answered" and a["method"] == "INVITE"
    assert (a["from_user"], a["to_user"]) == ("alice", "bob")
    assert (a["packets"], a["sip_packets"], a["rtp_packets"]) == (4, 2, 2)
    assert a["hunters"] == ["h1"] and a["end_ns"] == 0 and a["start_ns"] == T0
    assert a["bytes"] == sum(len(payloads[i]) for i in (0, 2, 3, 4))
    path = Path(a["pcap_path"])
    assert path.parent == tmp_path / "calls" and path.name.endswith("_call-a.pcap")
    with open_capture(path) as rd:
        assert [bytes(d) for _, _, d, _ in rd.records()] == [payloads[i] for i in (0, 2, 3, 4)]

    r = list_calls(call_processor, pki, "--user", "dave")
    assert [c["call_id"] for c in json.loads(r.stdout)] == ["call-c"]
    r = list_calls(call_processor, pki, "--active", "--limit", "1")
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 1
    r = list_calls(call_processor, pki, "--limit", "-1")
    assert r.returncode == 3 and "--limit" in r.stderr

    # Stopping closes the call files; the "stopped" line counts the calls.
    assert call_processor.stop() == 0
    assert "2 new calls" in call_processor.stderr()
    assert path.stat().st_size == 24 + sum(16 + len(payloads[i]) for i in (0, 2, 3, 4))
    assert struct.unpack("<I", path.read_bytes()[:4])[0] == 0xA1B23C4D


def test_list_calls_needs_a_processor_writing_per_call_pcaps(processor, pki):
    r = list_calls(processor, pki)
    assert r.returncode == 1, r.stderr
    err = json.loads(r.stderr)
    assert err["code"] == 1 and "--per-call-pcap-dir" in err["error"]
    assert "FAILED_PRECONDITION" in err["error"]


def test_list_calls_needs_an_admin_certificate(call_processor, pki):
    r = list_calls(call_processor, pki, cert="hunter-h1")
    # The same refusal (and exit code) as every other admin command.
    other = run_lc(
        "list", "hunters", "--processor", call_processor.addr, *tls_args(pki, "hunter-h1")
    )
    assert r.returncode == other.returncode == 1, r.stderr
    assert "admin certificate" in json.loads(r.stderr)["error"]


def test_a_bad_call_file_pattern_is_refused_at_start(tmp_path):
    r = run_lc(
        "process",
        "--insecure",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(tmp_path / "data"),
        "--per-call-pcap-dir",
        str(tmp_path / "calls"),
        "--per-call-pcap-pattern",
        "{nope}.pcap",
        timeout=60,
    )
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lc process: error: ")
    assert "{nope}" in lines[0] and "--per-call-pcap-pattern" in lines[0]
    assert not (tmp_path / "calls").exists()
