"""Live capture on ``lo`` while the processor is down, with tcpdump as the oracle.

Real processes throughout: a live ``lc hunt -i lo --disk-buffer`` started while nothing
listens on the processor's port, traffic sent by the test at a known rate, tcpdump
recording the same packets, a SIGKILL of the hunter, then a processor and the hunter
started again on the same spool. The processor's output is compared record by record
(bytes, original length, timestamp) with what tcpdump saw.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import LC, lc_env, need, run_lc, start_processor, tls_args
from tests.e2e.test_delivery import free_port, output_records, wait_for
from tests.voip_tools import free_port as free_udp_port
from tests.voip_tools import stop_process, tcpdump_capture

pytestmark = pytest.mark.e2e

DST = "127.0.8.1"
RATE = 700  # datagrams per second, as in the report
BATCH_TIMEOUT_MS = 200
# libpcap hands packets over in blocks (50 ms timeout) and the capture loop looks at the
# batch timeout at least every 100 ms: what a SIGKILL may take on top of a batch timeout.
SLACK_MS = 300


def live_hunter(target: str, pki: Path, bpf: str, spool: Path, err: Path, *extra: str):
    f = open(err, "w")  # noqa: SIM115 (the process owns it)
    return subprocess.Popen(
        [*LC, "-v", "hunt", "--processor", target, *tls_args(pki, "hunter-live"), "-i", "lo",
         "-f", bpf, "--disk-buffer", "--disk-buffer-dir", str(spool),
         "--no-filter-policy", "allow", "--batch-timeout", str(BATCH_TIMEOUT_MS),
         "--backoff-max", "1", "--breaker-open-time", "1", *extra],
        stdout=subprocess.PIPE, stderr=f, text=True, env=lc_env(),
    )  # fmt: skip


def capturing(err: Path) -> bool:
    """The hunter has put its kernel filter in place: from here on packets are captured."""
    return "kernel filter: " in err.read_text(errors="replace")


class Sender(threading.Thread):
    """UDP datagrams to DST:port at ``rate`` per second, each one numbered."""

    def __init__(self, port: int, rate: float, size: int = 160) -> None:
        super().__init__(daemon=True)
        self.port, self.rate, self.size = port, rate, size
        self.halt = threading.Event()
        self.sent = 0

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            t0 = time.monotonic()
            while not self.halt.is_set():
                s.sendto(self.sent.to_bytes(4, "big") * (self.size // 4), (DST, self.port))
                self.sent += 1
                delay = t0 + self.sent / self.rate - time.monotonic()
                if delay > 0:
                    self.halt.wait(delay)


def setup_live() -> None:
    if os.geteuid() != 0:
        pytest.skip("live capture on lo needs root")
    need("tcpdump")


def test_an_outage_from_the_start_then_sigkill_loses_at_most_the_last_batch_timeout(tmp_path, pki):
    """The report: a hunter started during an outage captured 673 of 5,451 packets and
    said `dropped 0`. Capture must start at once, every batch must reach the spool, and
    a SIGKILL may lose only what arrived in the last batch timeout."""
    setup_live()
    port = free_port()  # the processor's; nothing listens there yet
    dport = free_udp_port()
    bpf = f"udp and dst host {DST} and dst port {dport}"
    spool = tmp_path / "spool"
    ref = tmp_path / "wire.pcap"
    err = tmp_path / "hunter1.err"
    sender = Sender(dport, RATE)
    with tcpdump_capture(ref, bpf, nano=False):  # µs, like pcapy's live handle
        h = live_hunter(f"127.0.0.1:{port}", pki, bpf, spool, err)
        try:
            # Well within the connection attempt's 10 s (--connect-timeout's default).
            wait_for(lambda: capturing(err), 8, "the hunter to capture at once")
            sender.start()
            time.sleep(4.5)
            kill_ns = time.time_ns()
            h.send_signal(signal.SIGKILL)
            h.wait(10)
        finally:
            sender.halt.set()
            if h.poll() is None:
                h.kill()
            h.wait(10)
        sender.join(5)
    wire = output_records([ref])
    assert len(wire) == sender.sent and len(wire) > 2500  # tcpdump saw all of it
    assert list(spool.glob("spool-*.seg")), err.read_text()

    p = start_processor(tmp_path, tls_args(pki, "processor"), "--listen", f"127.0.0.1:{port}")
    err2 = tmp_path / "hunter2.err"
    h2 = live_hunter(p.addr, pki, bpf, spool, err2, "--heartbeat-interval", "0.5")
    try:
        wait_for(lambda: not list(spool.glob("spool-*.seg")), 60, "the spool to drain")
        rc = stop_process(h2, timeout=30)
        out, _ = h2.communicate(timeout=10)
    finally:
        if h2.poll() is None:
            h2.kill()
        p.stop()
    assert rc == 0, err2.read_text()
    assert "dropped 0," in out and "unacknowledged 0" in out, out
    got = output_records(sorted(p.data_dir.glob("*.pcap")))
    # Exact bytes, lengths and timestamps, in capture order, nothing that was not sent...
    assert got == wire[: len(got)]
    # ...and nothing missing but what arrived in the last batch timeout before the kill.
    cutoff = kill_ns - (BATCH_TIMEOUT_MS + SLACK_MS) * 1_000_000
    owed = sum(1 for ts, _, _ in wire if ts <= cutoff)
    assert len(got) >= owed, f"{owed - len(got)} packets before the kill were lost"


def hunter_counters(p, pki, hid: str) -> dict:
    r = run_lc("show", "hunter", "--id", hid, "--processor", p.addr, *tls_args(pki, "admin"))
    if r.returncode != 0:
        return {}
    h = json.loads(r.stdout)
    return h.get("counters", {}) if h.get("last_heartbeat_ns", 0) else {}


def test_kernel_drops_reach_the_heartbeat_the_summary_and_the_exit_code(tmp_path, pki, processor):
    """libpcap's drop count (a 1 MiB ring, and a hunter stopped while 6 MB arrive)."""
    setup_live()
    dport = free_udp_port()
    bpf = f"udp and dst host {DST} and dst port {dport}"
    err = tmp_path / "hunter.err"
    h = live_hunter(processor.addr, pki, bpf, tmp_path / "spool", err,
                    "--pcap-buffer-mb", "1", "--heartbeat-interval", "0.5")  # fmt: skip
    try:
        wait_for(lambda: hunter_counters(processor, pki, "live"), 30, "the first heartbeat")
        os.kill(h.pid, signal.SIGSTOP)  # the capture thread reads nothing meanwhile
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for i in range(5000):
                    s.sendto(i.to_bytes(4, "big") * 300, (DST, dport))
        finally:
            os.kill(h.pid, signal.SIGCONT)

        def kernel_drops() -> int:
            return int(hunter_counters(processor, pki, "live").get("dropped", {}).get("kernel", 0))

        wait_for(lambda: kernel_drops() > 0, 30, "dropped.kernel in the heartbeat")
        seen = kernel_drops()
        rc = stop_process(h, timeout=30)
        out, _ = h.communicate(timeout=10)
    finally:
        if h.poll() is None:
            h.kill()
    stderr = err.read_text()
    assert rc == 1, stderr
    kernel = int(out.split("(kernel ")[1].split(")")[0].split(",")[0])
    assert kernel >= seen > 0
    captured = int(out.split("captured: ")[1].split(" packets")[0])
    assert captured + kernel >= 5000 and captured < 5000, out
    assert f"lc hunt: error: the kernel dropped {kernel} packets" in stderr, stderr
    assert "--pcap-buffer-mb 1" in stderr
