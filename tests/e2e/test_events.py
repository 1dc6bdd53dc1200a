"""The event log end to end: a real processor, batches carrying events from a hand-made
gRPC client with the generated stubs (a hunter, as the wire sees one), and a SIGKILL.

Every line is parsed with the standard json module, its ECS fields checked, and its
Community ID compared with an independent computation (the ``communityid`` package
where installed, else lc's own, itself checked against the published vectors).
"""

from __future__ import annotations

import ipaddress
import json
import queue
import signal
import subprocess
import threading
import time
from array import array
from pathlib import Path

import grpc
import pytest

from lc.common.pcapfile import frame_records
from lc.common.transport import TlsFiles, open_channel
from lc.common.wire import encode_batch
from lc.proto import lc_pb2, lc_pb2_grpc
from tests.conftest import LC, lc_env, need, start_processor, tls_args
from tests.e2e.test_voip import set_filter
from tests.voip_tools import free_port, make_voip_capture

pytestmark = pytest.mark.e2e

NS = 1_000_000_000
T0 = 1_795_000_000 * NS
EPOCH = 1_795_000_000_000_000_000


def reference_community_id(src: str, dst: str, proto: int, sp: int, dp: int) -> str:
    try:
        import communityid
    except ImportError:  # lc's own, checked against the published vectors elsewhere
        from lc.common.communityid import community_id

        return community_id(
            ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed, proto, sp, dp
        )
    make = communityid.FlowTuple.make_udp if proto == 17 else communityid.FlowTuple.make_tcp
    return communityid.CommunityID().calc(make(src, dst, sp, dp))


def flow_of(n: int) -> tuple[str, str, int, int, int]:
    """A distinct 5-tuple per call (IPv4 and IPv6, UDP and TCP)."""
    if n % 3 == 2:
        return (f"2001:db8::{n + 1:x}", "2001:db8::5060", 17, 10000 + n, 5060)
    return (f"10.1.{n // 250}.{n % 250 + 1}", "10.2.0.1", 6 if n % 3 else 17, 20000 + n, 5060)


def call_event(n: int) -> lc_pb2.Event:
    src, dst, proto, sp, dp = flow_of(n)
    return lc_pb2.Event(
        dataset="sip",
        start_ns=T0 + n * NS,
        end_ns=T0 + n * NS + 20 * NS,
        session_id=f"call-{n}@e2e",
        flow=lc_pb2.FlowTuple(
            src_ip=ipaddress.ip_address(src).packed, dst_ip=ipaddress.ip_address(dst).packed,
            src_port=sp, dst_port=dp, ip_proto=proto,
        ),
        filter_ids=["f1"],
        captured=n % 2 == 0,
        call=lc_pb2.CallEvent(
            call_id=f"call-{n}@e2e", method="INVITE", state="ended", from_user=f"u{n}",
            to_user="bob", rtp_packets=n, codecs=["PCMU"], last_status=200,
        ),
    )  # fmt: skip


def make_batches(count: int, per_batch: int) -> list[lc_pb2.PacketBatch]:
    """``count`` batches of 3 packets and ``per_batch`` events (every 5th: events only)."""
    out = []
    n = 0
    for seq in range(1, count + 1):
        packets = 0 if seq % 5 == 0 else 3
        payloads = [bytes([seq % 256, k]) * 50 for k in range(packets)]
        ts = array("q", [T0 + seq * 1000 + k for k in range(packets)])
        cl = array("I", map(len, payloads))
        recs = frame_records(ts, cl, cl, b"".join(payloads)) if packets else b""
        events = [call_event(n + k) for k in range(per_batch)]
        n += per_batch
        out.append(encode_batch("h1", EPOCH, seq, [("eth0", 1)], recs, packets, events=events))
    return out


class Client:
    """A hunter as the wire sees it: register, then one stream of batches, acks back."""

    def __init__(self, target: str, pki: Path) -> None:
        self.tls = TlsFiles(
            str(pki / "hunter-h1.pem"), str(pki / "hunter-h1.key"), str(pki / "ca.pem")
        )
        self.target = target
        self.acked: set[int] = set()

    def send(self, batches: list[lc_pb2.PacketBatch], stop_after: int | None = None) -> None:
        """Stream ``batches``; returns when every one is acknowledged or the stream ends."""
        ch = open_channel(self.target, self.tls)
        grpc.channel_ready_future(ch).result(timeout=20)
        lc_pb2_grpc.ManagementServiceStub(ch).RegisterHunter(
            lc_pb2.RegisterRequest(hunter_id="h1", hostname="e2e", version="0", mode="voip",
                                   interfaces=["eth0"], epoch=EPOCH),
            timeout=10,
        )  # fmt: skip
        done = threading.Event()
        q: queue.Queue = queue.Queue()
        for b in batches:
            q.put(b)

        def requests():
            while not done.is_set():
                try:
                    yield q.get(timeout=0.1)
                except queue.Empty:
                    continue

        try:
            for ctl in lc_pb2_grpc.DataServiceStub(ch).StreamPackets(requests(), timeout=60):
                for a in ctl.acks:
                    self.acked.add(a.sequence)
                if all(b.sequence in self.acked for b in batches):
                    break
        except grpc.RpcError:
            pass  # the processor went away
        finally:
            done.set()
            ch.close()


def event_lines(data_dir: Path) -> list[dict]:
    out = []
    for f in sorted((data_dir / "events").glob("events-*.jsonl")):
        raw = f.read_bytes()
        assert not raw or raw.endswith(b"\n"), f"{f} ends in a torn line"
        for line in raw.splitlines():
            out.append(json.loads(line.decode("utf-8")))  # strict UTF-8, strict JSON
    return out


def check_lines(lines: list[dict], batches: list[lc_pb2.PacketBatch]) -> None:
    want = {}
    for b in batches:
        for i, ev in enumerate(b.events):
            want[f"h1:{EPOCH}:{b.sequence}:{i}"] = ev
    ids = [d["event"]["id"] for d in lines]
    assert len(ids) == len(set(ids)), "an event is doubled"
    assert set(ids) == set(want), f"missing {sorted(set(want) - set(ids))[:5]}"
    for d in lines:
        ev = want[d["event"]["id"]]
        n = int(ev.session_id.split("-")[1].split("@")[0])
        src, dst, proto, sp, dp = flow_of(n)
        assert d["event"]["kind"] == "event" and d["event"]["dataset"] == "lc.sip"
        assert d["event"]["duration"] == 20 * NS and d["observer"]["name"] == "h1"
        assert d["source"] == {"ip": src, "port": sp}
        assert d["destination"] == {"ip": dst, "port": dp}
        assert d["network"]["transport"] == {6: "tcp", 17: "udp"}[proto]
        assert d["network"]["community_id"] == reference_community_id(src, dst, proto, sp, dp)
        assert d["sip"]["call_id"] == ev.call.call_id and d["lc"]["captured"] == ev.captured
        assert d["@timestamp"].startswith("2026-")


def test_every_event_is_one_ecs_line(tmp_path, pki):
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    try:
        batches = make_batches(20, 3)
        c = Client(p.addr, pki)
        c.send(batches)
        assert c.acked == set(range(1, 21))
        c.send(batches[:5])  # sent again (a reconnecting hunter): acknowledged, not written
    finally:
        assert p.stop() == 0
    check_lines(event_lines(p.data_dir), batches)
    assert "60 events to" in p.stderr()


def test_no_event_missing_or_doubled_across_a_processor_sigkill(tmp_path, pki):
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    batches = make_batches(400, 4)
    c = Client(p.addr, pki)
    sender = threading.Thread(target=c.send, args=(batches,), daemon=True)
    sender.start()
    deadline = time.monotonic() + 60
    while len(c.acked) < 60 and time.monotonic() < deadline:
        time.sleep(0.005)
    p.proc.send_signal(signal.SIGKILL)  # in the middle of the stream
    p.proc.wait(10)
    sender.join(30)
    acked_before = set(c.acked)
    assert 60 <= len(acked_before) < 400, len(acked_before)
    p2 = start_processor(tmp_path, tls_args(pki, "processor"))
    try:
        c2 = Client(p2.addr, pki)
        c2.send(batches)  # the hunter resends everything it has (acked ones are duplicates)
        assert c2.acked == set(range(1, 401))
    finally:
        assert p2.stop() == 0
    check_lines(event_lines(p2.data_dir), batches)


# -- the real hunter: `lc hunt voip -r`, calls checked against tshark ------------------------


def tshark_invites(cap: Path) -> dict[str, str]:
    """Per Call-ID, the Community ID tshark computes for the call's first INVITE."""
    r = subprocess.run(
        ["tshark", "--enable-protocol", "communityid", "-r", str(cap), "-Y",
         'sip.Method == "INVITE"', "-T", "fields", "-e", "sip.Call-ID", "-e", "communityid"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        cid, _, community = line.partition("\t")
        out.setdefault(cid, community)
    return out


def hunt_voip(p, pki, cap: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*LC, "hunt", "voip", "--processor", p.addr, *tls_args(pki, "hunter-h1"),
         "-r", str(cap), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lc_env(),
    )  # fmt: skip


def check_calls(lines: list[dict], info: dict, cap: Path, calls_dir: Path | None) -> None:
    by_call = {}
    for d in lines:
        assert d["sip"]["call_id"] not in by_call, f"two events for {d['sip']['call_id']}"
        by_call[d["sip"]["call_id"]] = d
    assert set(by_call) == set(info["calls"])
    invites = tshark_invites(cap)
    for cid, d in by_call.items():
        c = info["calls"][cid]
        assert d["network"]["community_id"] == invites[cid], cid
        assert d["event"]["dataset"] == "lc.sip" and d["observer"]["name"] == "h1"
        assert d["lc"]["captured"] == bool(c["target"])
        assert d["sip"]["from"]["uri"]["username"] == c["caller"]
        assert d["sip"]["to"]["uri"]["username"] == c["callee"]
        assert d["lc"]["call"]["packets"]["rtp"] == c["rtp"], cid
        if calls_dir is not None and c["target"]:
            assert Path(d["lc"]["call"]["pcap_path"]).parent == calls_dir
        assert d["event"]["duration"] > 0


def test_a_replay_writes_one_event_per_call(tmp_path, pki):
    need("tshark")
    cap = tmp_path / "calls.pcap"
    info = make_voip_capture(cap, calls=8, rtp_per_call=100, match_every=2, concurrent=4)
    calls_dir = tmp_path / "calls"
    p = start_processor(tmp_path, tls_args(pki, "processor"), "--per-call-pcap-dir", str(calls_dir))
    try:
        set_filter(p, pki, "sip_user", "target-*")
        h = hunt_voip(p, pki, cap, "--events", "all")
        _, err = h.communicate(timeout=120)
        assert h.returncode == 0, err
    finally:
        assert p.stop() == 0
    check_calls(event_lines(p.data_dir), info, cap, calls_dir)


def test_no_call_event_missing_or_doubled_across_a_processor_sigkill(tmp_path, pki):
    from tests.e2e.test_delivery import restart

    need("tshark")
    cap = tmp_path / "calls.pcap"
    info = make_voip_capture(cap, calls=12, rtp_per_call=300, match_every=2, concurrent=3)
    port = free_port()
    p = start_processor(tmp_path, tls_args(pki, "processor"), "--listen", f"127.0.0.1:{port}")
    set_filter(p, pki, "sip_user", "target-*")
    h = hunt_voip(p, pki, cap, "--events", "all", "--replay-speed", "4", "--disk-buffer",
                  "--disk-buffer-dir", str(tmp_path / "spool"), "--backoff-max", "1",
                  "--breaker-open-time", "1", "--shutdown-timeout", "120")  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(event_lines(p.data_dir)) < 3:
            time.sleep(0.05)
        assert len(event_lines(p.data_dir)) < len(info["calls"]), "the replay ended too soon"
        p.proc.send_signal(signal.SIGKILL)  # calls have ended, others are under way
        p.proc.wait(10)
        time.sleep(2)
        restart(p, tmp_path)
        _, err = h.communicate(timeout=180)
        assert h.returncode == 0, err
    finally:
        if h.poll() is None:
            h.kill()
        p.stop()
    check_calls(event_lines(p.data_dir), info, cap, None)
