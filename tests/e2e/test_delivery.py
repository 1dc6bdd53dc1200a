"""Nothing lost: real processors and hunters on loopback, killed and restarted.

Every test compares the processor's output files record by record (timestamp, bytes,
original length) with what the hunter read, so a packet lost, doubled or reordered
fails it, and every file is also read by tshark when it is installed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import pytest

from lc.common.pcapfile import PcapWriter, frame_records, open_capture
from lc.link.spool import Spool
from tests.conftest import LC, lc_env, run_lc, start_hunter, start_processor, tls_args

pytestmark = pytest.mark.e2e


# -- helpers ------------------------------------------------------------------------------


def make_capture(path: Path, n: int, rate: float, size: int = 200) -> list[tuple[int, bytes, int]]:
    """n distinct Ethernet/IPv4/UDP frames, ``rate`` per second; returns their records."""
    t0 = 1_700_000_000 * 10**9
    recs = []
    for i in range(n):
        payload = struct.pack("!I", i) + bytes((i + k) & 0xFF for k in range(size - 4))
        udp = struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0) + payload
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
            bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]),
        )  # fmt: skip
        frame = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + udp
        recs.append((t0 + int(i * 1e9 / rate), frame, len(frame)))
    w = PcapWriter(path, 1)
    w.write_records(
        frame_records(
            [r[0] for r in recs],
            [len(r[1]) for r in recs],
            [r[2] for r in recs],
            b"".join(r[1] for r in recs),
        ),
        n,
    )
    w.close()
    return recs


def output_records(files: list[Path]) -> list[tuple[int, bytes, int]]:
    out = []
    for f in files:
        with open_capture(f) as r:
            out.extend((ts, bytes(d), orig) for ts, _, d, orig in r.records())
    return out


def assert_clean_pcap(path: Path) -> None:
    """Every byte of the file is a complete record (no torn tail), and tshark agrees."""
    data = path.read_bytes()
    off = 24
    while off < len(data):
        assert off + 16 <= len(data), f"{path}: torn record header at {off}"
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        off += 16 + caplen
    assert off == len(data), f"{path}: torn record at the end"
    if subprocess.run(["which", "tshark"], capture_output=True).returncode == 0:
        r = subprocess.run(["capinfos", "-c", str(path)], capture_output=True, text=True)
        assert r.returncode == 0 and "appears to have been cut short" not in r.stderr, r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def restart(p, tmp: Path):
    """Start the same processor again with exactly the same arguments."""
    err = tmp / f"processor-{time.monotonic_ns()}.err"
    f = open(err, "w")  # noqa: SIM115
    proc = subprocess.Popen(p.args, stdout=subprocess.DEVNULL, stderr=f, env=lc_env())
    p.proc, p.stderr_path = proc, err
    wait_for(lambda: "(port " in err.read_text() or proc.poll() is not None, 20, "restart")
    assert proc.poll() is None, err.read_text()
    return p


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def admin(p, pki, *args: str) -> dict:
    r = run_lc(*args, "--processor", p.addr, *tls_args(pki, "admin"))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def hunter_info(p, pki, hid: str) -> dict | None:
    r = run_lc("show", "hunter", "--id", hid, "--processor", p.addr, *tls_args(pki, "admin"))
    return json.loads(r.stdout) if r.returncode == 0 else None


def finish(h: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = h.communicate(timeout=timeout)
    return h.returncode, out, err


FAST_RECONNECT = ("--backoff-max", "2", "--breaker-open-time", "2", "--connect-timeout", "3")


# -- processor killed and restarted ---------------------------------------------------------


def test_processor_sigkill_for_30s_then_restart_writes_everything_once_in_order(tmp_path, pki):
    """The processor dies (SIGKILL) for 30 s in the middle of a steady replay and comes
    back with the same arguments: its output holds every packet exactly once, in order,
    and the file it continues holds no torn record."""
    cap = tmp_path / "steady.pcap"
    recs = make_capture(cap, 12_000, rate=200)  # 60 s of traffic
    port = free_port()
    out = tmp_path / "out" / "capture.pcap"
    p = start_processor(
        tmp_path, tls_args(pki, "processor"), "--listen", f"127.0.0.1:{port}", "-w", str(out)
    )
    spool = tmp_path / "spool"
    h = start_hunter(
        p.addr, pki, "h1", "-r", str(cap), "--replay-speed", "1", "--disk-buffer",
        "--disk-buffer-dir", str(spool), "--shutdown-timeout", "120", *FAST_RECONNECT,
    )  # fmt: skip
    try:
        wait_for(lambda: (hunter_info(p, pki, "h1") or {}).get("packets_received", 0) > 1500,
                 30, "the first packets")  # fmt: skip
        p.proc.send_signal(signal.SIGKILL)
        p.proc.wait(10)
        before = output_records([out])
        assert 0 < len(before) < len(recs)
        time.sleep(30)
        assert h.poll() is None, "the hunter must keep capturing while the processor is down"
        restart(p, tmp_path)
        code, summary, err = finish(h, timeout=180)
        assert code == 0, err
        assert "disk buffer: 0 batches kept" in summary, summary  # none left over
    finally:
        if h.poll() is None:
            h.kill()
        p.stop()
    files = sorted(out.parent.glob("*.pcap"))
    assert files == [out], files  # continued, not a second file
    assert_clean_pcap(out)
    got = output_records(files)
    assert len(got) == len(recs)
    assert got == recs  # every packet once, in capture order
    assert got[: len(before)] == before  # nothing written before the kill was rewritten


def test_processor_restart_continues_rotation_numbering(tmp_path, pki):
    cap = tmp_path / "a.pcap"
    recs = make_capture(cap, 3000, rate=1e6, size=300)
    port = free_port()
    out = tmp_path / "rot" / "cap.pcap"
    args = ("--listen", f"127.0.0.1:{port}", "-w", str(out), "--rotate-size", "200K")
    p = start_processor(tmp_path, tls_args(pki, "processor"), *args)
    r = run_lc("hunt", "--processor", p.addr, *tls_args(pki, "hunter-h1"), "-r", str(cap))
    assert r.returncode == 0, r.stderr
    p.stop()
    first = sorted(out.parent.glob("*.pcap"))
    sizes = {f: f.stat().st_size for f in first}
    restart(p, tmp_path)
    cap2 = tmp_path / "b.pcap"
    recs2 = make_capture(cap2, 3000, rate=1e6, size=310)
    r = run_lc("hunt", "--processor", p.addr, *tls_args(pki, "hunter-h1"), "-r", str(cap2))
    assert r.returncode == 0, r.stderr
    p.stop()
    files = sorted(out.parent.glob("*.pcap"))
    assert files[: len(first)] == first
    # Earlier files untouched except the last one, which was continued.
    for f in first[:-1]:
        assert f.stat().st_size == sizes[f]
    assert files[-1].name > first[-1].name
    for f in files:
        assert_clean_pcap(f)
    assert output_records(files) == recs + recs2


# -- hunter killed with spooled data --------------------------------------------------------


def test_hunter_sigkill_with_spooled_data_delivers_it_after_restart_once(tmp_path, pki):
    cap = tmp_path / "a.pcap"
    recs = make_capture(cap, 4000, rate=400)  # 10 s
    port = free_port()  # nothing listens yet: everything goes to the spool
    spool = tmp_path / "spool"
    h = subprocess.Popen(
        [*LC, "hunt", "--processor", f"127.0.0.1:{port}", *tls_args(pki, "hunter-h1"),
         "-r", str(cap), "--replay-speed", "1", "--disk-buffer", "--disk-buffer-dir", str(spool),
         *FAST_RECONNECT],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=lc_env(),
    )  # fmt: skip
    try:
        wait_for(
            lambda: sum(f.stat().st_size for f in spool.glob("*.seg")) > 200_000, 30, "spooling"
        )
    finally:
        h.send_signal(signal.SIGKILL)
        h.wait(10)
    with Spool(spool) as sp:
        spooled = sum(b.count for b in sp.pending())
        assert len(sp) > 0
    assert 0 < spooled < len(recs)
    p = start_processor(tmp_path, tls_args(pki, "processor"), "--listen", f"127.0.0.1:{port}")
    try:
        cap2 = tmp_path / "b.pcap"
        recs2 = make_capture(cap2, 50, rate=1e3, size=120)
        r = run_lc("hunt", "--processor", p.addr, *tls_args(pki, "hunter-h1"), "-r", str(cap2),
                   "--disk-buffer", "--disk-buffer-dir", str(spool))  # fmt: skip
        assert r.returncode == 0, r.stderr
    finally:
        p.stop()
    got = output_records(sorted((tmp_path / "data").glob("*.pcap")))
    # The earlier run's spooled batches first (sent before anything new), none twice.
    assert got == recs[:spooled] + recs2
    assert not list(spool.glob("*.seg")), "a drained spool keeps no segment"


# -- overload: PAUSE, spool, RESUME ---------------------------------------------------------


def test_slow_processor_pauses_hunters_memory_stays_flat_and_resume_drains(tmp_path, pki):
    slow = tmp_path / "slow"
    slow.touch()
    p = start_processor(tmp_path, tls_args(pki, "processor"), "--test-slow-writer", str(slow))
    cap = tmp_path / "a.pcap"
    recs = make_capture(cap, 60_000, rate=1e5, size=400)  # 24 MB
    spool = tmp_path / "spool"
    h = start_hunter(
        p.addr, pki, "h1", "-r", str(cap), "--batch-size", "16", "--batch-timeout", "5",
        "--disk-buffer", "--disk-buffer-dir", str(spool), "--shutdown-timeout", "300",
        "--heartbeat-interval", "0.5",
    )  # fmt: skip
    seen_flow: set[str] = set()
    samples = []
    try:

        def paused_and_spooling() -> bool:
            st = admin(p, pki, "show", "status")
            seen_flow.add(st.get("flow", ""))
            info = hunter_info(p, pki, "h1") or {}
            c = info.get("counters", {})
            if c and h.poll() is None:  # not the final heartbeat of a hunter done draining
                sp = c.get("spool", {})
                samples.append(
                    (
                        int(c.get("rss_bytes", 0)),
                        int(c.get("queue_bytes", 0)),
                        st.get("flow", ""),
                        int(sp.get("replayed", 0)) < int(sp.get("appended", 0)),
                    )
                )
            return "PAUSE" in seen_flow and int(c.get("spool", {}).get("appended", 0)) > 20

        wait_for(paused_and_spooling, 60, "PAUSE and spooling")
        # The replay ends while the processor is still slow; capture is never blocked.
        wait_for(lambda: spool_appended(p, pki) and replay_done(p, pki, len(recs)), 60, "replay")
        for _ in range(10):  # a while longer under PAUSE: memory must not grow
            paused_and_spooling()
            time.sleep(0.3)
        slow.unlink()  # the processor recovers; no new traffic arrives from here on
        code, _, err = finish(h, timeout=300)
        assert code == 0, err
    finally:
        if h.poll() is None:
            h.kill()
        p.stop()
    assert "PAUSE" in seen_flow
    assert "processor flow control: FLOW_RESUME" in err or "FLOW_CONTINUE" in err or code == 0
    assert samples, "no heartbeat seen"
    # Memory stays flat while paused: the in-memory queue is spilled to disk under PAUSE.
    # Only samples taken while the processor said PAUSE and the spool still held batches
    # the hunter had not begun to send count. Once the slow writer catches up, the hunter
    # drains the spool with up to 64 batches (here ~90 kB each) in flight, and its RSS
    # rises by 60-70 MB within 0.2 s (gRPC's buffers and glibc arenas, which keep up to
    # the 64 MiB trim threshold): a bounded transient that is not what this measures. The
    # processor's flow and the hunter's heartbeat are read apart, so a sample from that
    # drain can carry PAUSE (CI saw 132 -> 197 MB that way).
    assert max(s[1] for s in samples[len(samples) // 2 :]) < 16 * 1024 * 1024
    rss = [s[0] for s in samples if s[2] == "PAUSE" and s[3]]
    assert len(rss) >= 3, samples
    assert max(rss) - min(rss) < 64 * 1024 * 1024, str([round(r / 2**20) for r in rss])
    got = output_records(sorted((tmp_path / "data").glob("*.pcap")))
    assert got == recs


def spool_appended(p, pki) -> bool:
    info = hunter_info(p, pki, "h1") or {}
    return int(info.get("counters", {}).get("spool", {}).get("appended", 0)) > 0


def replay_done(p, pki, n: int) -> bool:
    info = hunter_info(p, pki, "h1") or {}
    return int(info.get("counters", {}).get("captured", 0)) >= n


# -- spool trouble: full, unwritable, corrupt ----------------------------------------------


def test_full_spool_drops_newest_counts_them_and_keeps_the_rest(tmp_path, pki):
    cap = tmp_path / "a.pcap"
    recs = make_capture(cap, 20_000, rate=1e6, size=400)  # ~8.5 MB > 2 MB spool
    port = free_port()
    spool = tmp_path / "spool"
    r = run_lc(
        "hunt", "--processor", f"127.0.0.1:{port}", *tls_args(pki, "hunter-h1"), "-r", str(cap),
        "--disk-buffer", "--disk-buffer-dir", str(spool), "--disk-buffer-max-mb", "2",
        "--shutdown-timeout", "1", *FAST_RECONNECT,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr  # not everything could be kept: said so
    assert "packets dropped (full)" in r.stdout
    dropped = int(r.stdout.split(" packets dropped (full)")[0].rsplit(" ", 1)[1])
    assert dropped > 0
    with Spool(spool) as sp:
        kept = sum(b.count for b in sp.pending())
        assert sp.counters()["bytes"] <= 2 * 1024 * 1024
    assert kept + dropped == len(recs)
    p = start_processor(tmp_path, tls_args(pki, "processor"), "--listen", f"127.0.0.1:{port}")
    try:
        empty = tmp_path / "empty.pcap"
        make_capture(empty, 0, rate=1)
        r = run_lc("hunt", "--processor", p.addr, *tls_args(pki, "hunter-h1"), "-r", str(empty),
                   "--disk-buffer", "--disk-buffer-dir", str(spool))  # fmt: skip
        assert r.returncode == 0, r.stderr
    finally:
        p.stop()
    got = output_records(sorted((tmp_path / "data").glob("*.pcap")))
    assert got == recs[:kept]  # drop-newest: the oldest packets are the ones kept


def test_unwritable_spool_directory_is_reported_and_capture_goes_on(tmp_path, pki, processor):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool directory should be")
    cap = tmp_path / "a.pcap"
    recs = make_capture(cap, 500, rate=1e4)
    h = start_hunter(processor.addr, pki, "h1", "-r", str(cap), "--disk-buffer",
                     "--disk-buffer-dir", str(blocker / "spool"), "--replay-speed", "1",
                     "--heartbeat-interval", "0.5")  # fmt: skip
    try:
        wait_for(lambda: hunter_info(processor, pki, "h1") is not None, 20, "registration")
        info = hunter_info(processor, pki, "h1")
        wait_for(
            lambda: (hunter_info(processor, pki, "h1") or {}).get("counters", {}).get("spool"),
            20,
            "spool counters",
        )
        info = hunter_info(processor, pki, "h1")
        sc = info["counters"]["spool"]
        assert int(sc["write_errors"]) >= 1 and sc["dir"].endswith("spool")
        code, _, err = finish(h)
    finally:
        if h.poll() is None:
            h.kill()
    assert code == 0, err
    assert "disk buffer disabled" in err and "not-a-dir" in err
    got = output_records(sorted((processor.data_dir).glob("*.pcap")))
    assert got == recs


def test_corrupt_spool_segment_is_skipped_and_counted(tmp_path, pki):
    cap = tmp_path / "a.pcap"
    recs = make_capture(cap, 3000, rate=1e6, size=300)
    port = free_port()
    spool = tmp_path / "spool"
    r = run_lc(
        "hunt", "--processor", f"127.0.0.1:{port}", *tls_args(pki, "hunter-h1"), "-r", str(cap),
        "--batch-size", "100", "--disk-buffer", "--disk-buffer-dir", str(spool),
        "--shutdown-timeout", "1", *FAST_RECONNECT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr  # everything kept in the spool
    with Spool(spool) as sp:
        batches = [(b.segment, b.offset, b.count) for b in sp.pending()]
    assert len(batches) >= 3
    seg_no, off, lost = batches[1]
    seg = spool / f"spool-{seg_no:016d}.seg"
    with open(seg, "r+b") as f:  # flip bytes inside the second batch's packet data
        f.seek(off + 200)
        f.write(b"\xff" * 16)
    p = start_processor(tmp_path, tls_args(pki, "processor"), "--listen", f"127.0.0.1:{port}")
    try:
        empty = tmp_path / "empty.pcap"
        make_capture(empty, 0, rate=1)
        r = run_lc("-v", "hunt", "--processor", p.addr, *tls_args(pki, "hunter-h1"),
                   "-r", str(empty), "--disk-buffer", "--disk-buffer-dir", str(spool))  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "1 corrupt" in r.stderr
    finally:
        p.stop()
    got = output_records(sorted((tmp_path / "data").glob("*.pcap")))
    first = batches[0][2]
    assert got == recs[:first] + recs[first + lost :]


# -- TLS certificate reload ------------------------------------------------------------------


def _served_cert(port: int, pki: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(pki / "admin.pem"), str(pki / "admin.key"))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as s,
        ctx.wrap_socket(s) as t,
    ):
        return t.getpeercert(binary_form=True)


def test_processor_reloads_its_certificate_without_dropping_hunters(tmp_path, pki):
    from lc.common.credentials import init_pki

    own = tmp_path / "pki"
    own.mkdir()
    for f in pki.iterdir():
        (own / f.name).write_bytes(f.read_bytes())
    p = start_processor(tmp_path, tls_args(own, "processor"))
    cap = tmp_path / "a.pcap"
    recs = make_capture(cap, 2000, rate=200)  # 10 s
    h = start_hunter(p.addr, own, "h1", "-r", str(cap), "--replay-speed", "1")
    try:
        wait_for(lambda: (hunter_info(p, own, "h1") or {}).get("packets_received", 0) > 200,
                 20, "streaming")  # fmt: skip
        old = _served_cert(p.port, own)
        os.remove(own / "processor.pem")
        os.remove(own / "processor.key")
        init_pki(own, hunters=[], admin=False)  # a new processor certificate, same CA
        time.sleep(1.2)  # the reload check runs at most once a second
        wait_for(lambda: _served_cert(p.port, own) != old, 10, "the new certificate")
        code, _, err = finish(h)
        assert code == 0, err
        info = hunter_info(p, own, "h1")
        assert int(info["counters"].get("reconnects", 0)) == 0  # the stream never broke
    finally:
        if h.poll() is None:
            h.kill()
        p.stop()
    got = output_records(sorted((tmp_path / "data").glob("*.pcap")))
    assert got == recs


@pytest.mark.e2e
def test_a_hunter_that_forwarded_nothing_and_stopped_cleanly_shows_disconnected(tmp_path, pki):
    """With a certificate the processor knows the stream's hunter when the stream opens:
    a hunter whose filter matched nothing, stopped with SIGTERM, is disconnected (it
    used to stay connected, then go stale, since only a first batch named it)."""
    proc = start_processor(tmp_path, tls_args(pki, "processor"))
    hunter = start_hunter(proc.addr, pki, "h1", "-i", "lo", "-f", "udp port 9 and host 203.0.113.9")

    def h1() -> dict:
        r = run_lc("list", "hunters", "--processor", proc.addr, *tls_args(pki, "admin"))
        assert r.returncode == 0, r.stderr
        return {h["hunter_id"]: h for h in json.loads(r.stdout)}.get("h1", {})

    try:
        deadline = time.monotonic() + 15
        while not h1().get("streaming") and time.monotonic() < deadline:
            time.sleep(0.2)
        info = h1()
        assert info.get("streaming") and info["state"] == "connected", info
        hunter.send_signal(signal.SIGTERM)
        assert hunter.wait(20) == 0, hunter.stderr.read()
        info = h1()
        assert info["state"] == "disconnected", info
        assert not info.get("streaming") and not info.get("packets_received"), info
    finally:
        if hunter.poll() is None:
            hunter.kill()
            hunter.wait(5)
        proc.stop()
