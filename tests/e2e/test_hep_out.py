"""--hep-out: a VoIP replay's SIP and RTCP, as HEPv3, to sngrep (Debian's, as the
receiver) and to a TCP collector of the test's own, checked against tshark's reading of
the processor's PCAP."""

from __future__ import annotations

import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from lc.common.hep import HEP_RTCP, HEP_SIP, decode_hep3
from tests.conftest import LC, lc_env, need, start_processor, tls_args
from tests.voip_tools import free_port, make_voip_capture


def replay(proc, pki, capture: Path) -> str:
    r = subprocess.run(
        [*LC, "hunt", "voip", "--processor", proc.addr, *tls_args(pki, "hunter-h1"),
         "-r", str(capture), "--no-filter-policy", "allow"],
        capture_output=True, text=True, timeout=120, env=lc_env(),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def tshark_sip(pcap: Path) -> Counter:
    """SIP messages per Call-ID as tshark reads them (TCP reassembled, several messages
    in one segment each counted)."""
    need("tshark")
    r = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "sip", "-T", "fields", "-E", "occurrence=a",
         "-E", "aggregator=|", "-e", "sip.Call-ID"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    out: Counter = Counter()
    for line in r.stdout.splitlines():
        for cid in filter(None, line.split("|")):
            out[cid] += 1
    return out


@pytest.fixture
def capture(tmp_path) -> tuple[Path, dict]:
    path = tmp_path / "voip.pcap"
    info = make_voip_capture(
        path, calls=12, rtp_per_call=30, match_every=1, tcp_share=0.34, rtcp_interval_s=0.1
    )
    return path, info


@pytest.mark.e2e
def test_sngrep_receives_every_call(tmp_path, pki, capture):
    """sngrep -L listens for HEP and saves what it got as a pcap: it holds the Call-IDs
    lc sent, with as many SIP messages each as lc wrote."""
    need("sngrep")
    path, info = capture
    port = free_port(socket.SOCK_DGRAM)
    out = tmp_path / "sngrep.pcap"
    sng = subprocess.Popen(
        ["sngrep", "-N", "-q", "-L", f"udp:127.0.0.1:{port}", "-O", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not _udp_bound(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc = start_processor(
            tmp_path, tls_args(pki, "processor"), "--hep-out", f"udp://127.0.0.1:{port}",
            "--hep-agent-id", "2001", "--metrics-listen", "0",
        )  # fmt: skip
        try:
            replay(proc, pki, path)
            murl = re.search(r"metrics on (\S+)", proc.stderr()).group(1)
            sent = _wait_sent(murl, sum(c["sip"] for c in info["calls"].values()))
        finally:
            proc.stop()
        time.sleep(0.5)
    finally:
        sng.send_signal(signal.SIGTERM)
        sng.wait(10)
    wrote = tshark_sip(proc.data_dir / "capture.pcap")
    assert set(wrote) == set(info["calls"])
    got = tshark_sip(out)
    assert set(got) == set(wrote)  # every Call-ID lc sent, in sngrep's own capture
    assert sum(got.values()) == sum(wrote.values()) <= sent


@pytest.mark.e2e
def test_tcp_collector_gets_whole_messages_and_rtcp(tmp_path, pki, capture):
    """Over tcp://, decoded by the test's own decoder: one HEP message per SIP message
    (the INVITE split over two TCP segments arrives whole, the 100 and 180 sharing one
    arrive apart), each with its Call-ID as correlation id; RTCP with type 5."""
    path, info = capture
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    received = bytearray()
    done = threading.Event()

    def collect() -> None:
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(65536):
                received.extend(data)
        done.set()

    t = threading.Thread(target=collect, daemon=True)
    t.start()
    proc = start_processor(tmp_path, tls_args(pki, "processor"), "--hep-out",
                           f"tcp://127.0.0.1:{port}", "--hep-password", "k3y")  # fmt: skip
    try:
        replay(proc, pki, path)
    finally:
        proc.stop()  # sends what is queued, then closes the connection
    assert done.wait(20)
    srv.close()
    msgs = []
    off = 0
    while off < len(received):
        assert received[off : off + 4] == b"HEP3"
        (n,) = struct.unpack_from("!H", received, off + 4)
        msgs.append(decode_hep3(bytes(received[off : off + n])))
        off += n
    sip = [m for m in msgs if m.proto_type == HEP_SIP]
    rtcp = [m for m in msgs if m.proto_type == HEP_RTCP]
    assert all(m.auth_key == b"k3y" for m in msgs)
    wrote = tshark_sip(proc.data_dir / "capture.pcap")
    assert Counter(m.correlation_id.decode() for m in sip) == wrote
    for m in sip:
        head, _, body = m.payload.partition(b"\r\n\r\n")
        assert re.match(rb"(INVITE|ACK|BYE|SIP/2\.0) ", head), head[:40]
        cid = re.search(rb"\r\nCall-ID: *([^\r]+)", head).group(1)
        assert cid == m.correlation_id
        clen = int(re.search(rb"\r\nContent-Length: *(\d+)", head).group(1))
        assert len(body) == clen  # a whole message, no more, no less
    tcp_calls = {c for c, v in info["calls"].items() if v["transport"] == "tcp"}
    assert tcp_calls and {m.correlation_id.decode() for m in sip if m.ip_proto == 6} == tcp_calls
    want_rtcp = Counter({c: v["rtcp"] for c, v in info["calls"].items() if v["rtcp"]})
    assert want_rtcp and Counter(m.correlation_id.decode() for m in rtcp) == want_rtcp
    assert all(m.ip_proto == 17 and m.payload[1] in (200, 201) for m in rtcp)  # SR/RR first


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _wait_sent(url: str, least: int, timeout: float = 20) -> int:
    import urllib.request

    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=10) as r:
            m = re.search(r"^lc_processor_hep_messages_sent_total (\S+)$", r.read().decode(), re.M)
        n = int(float(m.group(1))) if m else 0
        if n >= least:
            return n
        time.sleep(0.1)
    raise AssertionError(f"only {n} HEP messages sent, expected at least {least}")
