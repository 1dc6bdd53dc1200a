"""End to end on loopback: certificates from lc certs init, a real processor, real hunters.

The processor's output must hold exactly the packets that went in: the same bytes,
the same nanosecond timestamps, the same order per hunter.
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

from lc.common.pcapfile import open_capture
from tests.conftest import ROOT, lc_env, need, run_lc, start_hunter, start_processor, tls_args

SAMPLE = ROOT / "captures" / "sip-call.pcap"


def records(path: Path) -> list[tuple[int, bytes, int]]:
    with open_capture(path) as r:
        return [(ts, bytes(data), orig) for ts, _, data, orig in r.records()]


def tshark_frames(path: Path) -> list[tuple[int, int]]:
    """(timestamp ns, frame length) per frame, as tshark reads the file."""
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    frames = []
    for line in out.splitlines():
        epoch, length = line.split("\t")
        sec, _, frac = epoch.partition(".")
        frames.append((int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9]), int(length)))
    return frames


def hunt(proc, pki, name: str, *args: str, timeout: float = 120):
    return run_lc(
        "hunt", "--processor", proc.addr, *tls_args(pki, f"hunter-{name}"), *args, timeout=timeout
    )


def status(proc, pki) -> dict:
    r = run_lc("show", "status", "--processor", proc.addr, *tls_args(pki, "admin"))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["pcap", "nsecpcap", "pcapng"])
def test_replay_writes_identical_packets(tmp_path, pki, processor, fmt):
    need("editcap")
    src = tmp_path / f"input.{fmt}"
    subprocess.run(["editcap", "-F", fmt, str(SAMPLE), str(src)], check=True, timeout=60)
    r = hunt(processor, pki, "h1", "-r", str(src), "--batch-size", "50")
    assert r.returncode == 0, r.stderr
    assert "acknowledged 1494" in r.stdout and "unacknowledged 0" in r.stdout, r.stdout
    assert processor.stop() == 0
    out = processor.data_dir / "capture.pcap"
    got, want = records(out), records(src)
    assert len(want) == 1494
    assert got == want
    # Independent reader: tshark sees the same timestamps (ns) and lengths as in the input.
    need("tshark")
    assert tshark_frames(out) == tshark_frames(src)


@pytest.mark.e2e
def test_two_hunters_at_once_each_in_order(tmp_path, pki, processor):
    a = tmp_path / "a.pcap"
    b = tmp_path / "b.pcapng"
    subprocess.run(["editcap", "-F", "nsecpcap", str(SAMPLE), str(a)], check=True, timeout=60)
    # The second hunter's packets are shifted by an hour so that no record is in both.
    subprocess.run(
        ["editcap", "-F", "pcapng", "-t", "3600", "-r", str(SAMPLE), str(b), "1-700"],
        check=True,
        timeout=60,
    )
    results = {}

    def run(name, path):
        results[name] = hunt(processor, pki, name, "-r", str(path), "--replay-speed", "20")

    threads = [threading.Thread(target=run, args=x) for x in (("h1", a), ("h2", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results.values()), results
    st = status(processor, pki)
    assert st["packets_written"] == 1494 + 700
    assert st["hunters_total"] == 2
    hunters = json.loads(
        run_lc("list", "hunters", "--processor", processor.addr, *tls_args(pki, "admin")).stdout
    )
    by_id = {h["hunter_id"]: h for h in hunters}
    assert by_id["h1"]["packets_received"] == 1494 and by_id["h2"]["packets_received"] == 700
    assert by_id["h1"]["state"] == "disconnected"  # both stopped cleanly
    processor.stop()
    got = records(processor.data_dir / "capture.pcap")
    # Interleaved, but each hunter's packets appear in their own capture order.
    want_a, want_b = records(a), records(b)
    assert sorted(got) == sorted(want_a + want_b)
    pos = {rec: i for i, rec in enumerate(got)}
    assert len(pos) == len(got) == len(set(want_a)) + len(set(want_b))
    assert [pos[x] for x in want_a] == sorted(pos[x] for x in want_a)
    assert [pos[x] for x in want_b] == sorted(pos[x] for x in want_b)


@pytest.mark.e2e
def test_replay_speed_honours_capture_timing(tmp_path, pki, processor):
    # The sample spans ~29 s; at 10x the replay must take about 2.9 s, not 0.2 s.
    t0 = time.monotonic()
    r = hunt(processor, pki, "h1", "-r", str(SAMPLE), "--replay-speed", "10")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    span = (records(SAMPLE)[-1][0] - records(SAMPLE)[0][0]) / 1e9
    assert span / 10 * 0.9 <= took <= span / 10 + 8


@pytest.mark.e2e
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
def test_live_capture_on_lo_matches_tcpdump(tmp_path, pki, processor):
    need("tcpdump")
    udp_port, tcp_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    bpf = f"udp port {udp_port} or tcp port {tcp_port}"
    ref = tmp_path / "tcpdump.pcap"
    td = subprocess.Popen(
        # --immediate-mode: otherwise tcpdump leaves what sits in its ring when stopped;
        # -B: its default 2 MiB buffer drops packets of a burst on a busy machine.
        [
            "tcpdump",
            "-i",
            "lo",
            "-n",
            "-U",
            "--immediate-mode",
            "-B",
            "65536",
            "--time-stamp-precision=nano",
            "-w",
            str(ref),
            bpf,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_tcpdump_listening(td)
    hunter = start_hunter(
        processor.addr, pki, "live", "-i", "lo", "-f", bpf, "--batch-timeout", "20"
    )
    try:
        # The hunter heartbeats as soon as its filters are applied and capture runs.
        _wait_for(lambda: _hunter_capturing(processor, pki, "live"), 20, "hunter capturing")
        _send_traffic(udp_port, tcp_port)
        time.sleep(0.5)
    finally:
        hunter.send_signal(signal.SIGTERM)
        out, err = hunter.communicate(timeout=60)
        td.send_signal(signal.SIGINT)
        td.wait(timeout=20)
    assert hunter.returncode == 0, err
    assert "unacknowledged 0" in out, out
    processor.stop()
    got = records(processor.data_dir / "capture.pcap")
    want = records(ref)
    assert len(want) >= 200 + 6  # 200 datagrams plus at least a TCP handshake
    # Same packets, same order. pcapy-ng's live handle gives microseconds (it has no
    # pcap_set_tstamp_precision), and a packet socket stamps a packet itself when the
    # kernel has not yet, so the times agree to within microseconds on an idle machine
    # and a few milliseconds on a loaded one.
    assert [(d, o) for _, d, o in got] == [(d, o) for _, d, o in want]
    assert all(t % 1000 == 0 for t, _, _ in got)
    skew = [abs(a[0] - b[0]) for a, b in zip(got, want, strict=True)]
    assert max(skew) < 5_000_000, max(skew)


def _wait_tcpdump_listening(td: subprocess.Popen, timeout: float = 20) -> None:
    """tcpdump prints "listening on ..." once its capture is open; wait for that line."""
    import select

    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        r, _, _ = select.select([td.stderr], [], [], 0.2)
        if r:
            line = td.stderr.readline()
            if "listening on" in line:
                return
            if not line:
                break
    td.kill()
    raise AssertionError(f"tcpdump did not start: {line!r}")


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send_traffic(udp_port: int, tcp_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for i in range(200):
            u.sendto(f"lc-test-datagram-{i:04d}".encode() * (1 + i % 7), ("127.0.0.1", udp_port))
            if i % 50 == 0:
                time.sleep(0.01)
    srv = socket.socket()
    srv.bind(("127.0.0.1", tcp_port))
    srv.listen()

    def echo():
        c, _ = srv.accept()
        with c:
            while data := c.recv(65536):
                c.sendall(data)

    t = threading.Thread(target=echo)
    t.start()
    with socket.create_connection(("127.0.0.1", tcp_port)) as c:
        for i in range(5):
            c.sendall(b"hello over tcp %d\n" % i)
            c.recv(100)
    t.join(5)
    srv.close()


def _hunter_capturing(proc, pki, hunter_id: str) -> bool:
    r = run_lc(
        "show", "hunter", "--id", hunter_id, "--processor", proc.addr, *tls_args(pki, "admin")
    )
    if r.returncode != 0:
        return False
    h = json.loads(r.stdout)
    return h["state"] == "connected" and h["last_heartbeat_ns"] > 0


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# -- security ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_hunter_claiming_another_id_is_refused(pki, processor):
    r = hunt(processor, pki, "h1", "--id", "h2", "-r", str(SAMPLE))
    assert r.returncode != 0
    assert "certificate is for hunter 'h1', not 'h2'" in r.stderr
    assert "Traceback" not in r.stderr
    assert status(processor, pki)["packets_written"] == 0


@pytest.mark.e2e
def test_hunter_from_another_ca_is_refused(tmp_path, pki, processor):
    from lc.common.credentials import init_pki

    other = tmp_path / "other"
    init_pki(other, hunters=["h1"])
    r = run_lc(
        "hunt",
        "--processor",
        processor.addr,
        "--connect-timeout",
        "3",
        "--tls-cert",
        str(other / "hunter-h1.pem"),
        "--tls-key",
        str(other / "hunter-h1.key"),
        "--tls-ca",
        str(pki / "ca.pem"),
        "-r",
        str(SAMPLE),
    )
    # Refused before connecting: our certificate is not signed by the CA we were given.
    assert r.returncode == 3, r.stderr
    assert "hunter-h1.pem (CN=h1) is not signed by the CA in" in r.stderr
    assert status(processor, pki)["hunters_total"] == 0


@pytest.mark.e2e
def test_client_without_certificate_is_refused(pki, processor):
    import grpc

    from lc.proto import lc_pb2, lc_pb2_grpc

    ca = (pki / "ca.pem").read_bytes()
    ch = grpc.secure_channel(processor.addr, grpc.ssl_channel_credentials(root_certificates=ca))
    stub = lc_pb2_grpc.ManagementServiceStub(ch)
    with pytest.raises(grpc.RpcError) as e:
        stub.RegisterHunter(lc_pb2.RegisterRequest(hunter_id="h1"), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    ch.close()
    # A plaintext client cannot talk to a TLS processor either.
    ch = grpc.insecure_channel(processor.addr)
    with pytest.raises(grpc.RpcError):
        lc_pb2_grpc.ManagementServiceStub(ch).GetStatus(lc_pb2.StatusRequest(), timeout=5)
    ch.close()


@pytest.mark.e2e
def test_hunter_certificate_cannot_use_admin_rpcs(pki, processor):
    r = run_lc("list", "hunters", "--processor", processor.addr, *tls_args(pki, "hunter-h1"))
    assert r.returncode == 1
    err = json.loads(r.stderr)
    assert "admin" in err["error"] and err["code"] == 1


@pytest.mark.e2e
def test_admin_commands_json_and_exit_codes(pki, processor):
    assert hunt(processor, pki, "h1", "-r", str(SAMPLE)).returncode == 0
    env = lc_env(
        LC_PROCESSOR=processor.addr,
        LC_TLS_CERT=str(pki / "admin.pem"),
        LC_TLS_KEY=str(pki / "admin.key"),
        LC_TLS_CA=str(pki / "ca.pem"),
    )
    r = run_lc("show", "hunter", "--id", "h1", env=env)
    assert r.returncode == 0, r.stderr
    h = json.loads(r.stdout)
    assert h["hunter_id"] == "h1" and h["packets_received"] == 1494
    assert h["counters"]["acked"] == 1494  # the final heartbeat carries the hunter's totals
    r = run_lc("show", "hunter", "--id", "nobody", env=env)
    assert r.returncode == 4, r.stderr
    # The error is the last line (once, in CI under load, something else came before it
    # on stderr and was not kept: it shows in this message if it happens again).
    assert json.loads(r.stderr.strip().splitlines()[-1])["code"] == 4, r.stderr
    r = run_lc("show", "status", "--processor", "127.0.0.1:1", *tls_args(pki, "admin"), timeout=60)
    assert r.returncode == 2 and "cannot reach" in json.loads(r.stderr)["error"]


@pytest.mark.e2e
def test_rotation_by_size(tmp_path, pki):
    p = start_processor(
        tmp_path,
        tls_args(pki, "processor"),
        "-w",
        str(tmp_path / "out" / "x.pcap"),
        "--rotate-size",
        "100K",
    )
    try:
        # Paced, so that batches stay small (they grow only when the link is busy).
        r = hunt(p, pki, "h1", "-r", str(SAMPLE), "--batch-size", "32", "--replay-speed", "50")
        assert r.returncode == 0, r.stderr
    finally:
        p.stop()
    files = sorted((tmp_path / "out").glob("x-*.pcap"))
    assert len(files) >= 4, files
    got = [rec for f in files for rec in records(f)]
    assert got == records(SAMPLE) or got == [(t * 1, d, o) for t, d, o in records(SAMPLE)]
    for f in files:
        assert f.stat().st_size <= 100 * 1024 + 70_000  # never split a batch, never far over


# -- bad input: one clear line, non-zero exit, no traceback ------------------------------


def _one_clear_line(r, code: int | None = None, text: str = "") -> None:
    assert r.returncode != 0
    if code is not None:
        assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    assert text in lines[0], lines[0]


@pytest.mark.e2e
def test_bad_input_is_refused_clearly(tmp_path, pki, processor):
    t = tls_args(pki, "hunter-h1")
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture file")
    _one_clear_line(
        run_lc("hunt", "--processor", processor.addr, *t, "-r", str(bad)),
        3,
        "not a pcap or pcapng file",
    )
    _one_clear_line(
        run_lc("hunt", "--processor", processor.addr, *t, "-r", str(tmp_path / "missing.pcap")),
        4,
        "not found",
    )
    _one_clear_line(
        run_lc("hunt", "--processor", processor.addr, *t, "-r", str(SAMPLE), "-f", "udp prot 5060"),
        3,
        "invalid BPF filter 'udp prot 5060'",
    )
    _one_clear_line(
        run_lc("hunt", "--processor", processor.addr, *t, "-i", "nosuchif0"),
        4,
        "unknown interface 'nosuchif0'",
    )
    _one_clear_line(
        run_lc(
            "hunt",
            "--processor",
            processor.addr,
            "--tls-cert",
            str(tmp_path / "nope.pem"),
            "--tls-key",
            str(pki / "hunter-h1.key"),
            "--tls-ca",
            str(pki / "ca.pem"),
            "-r",
            str(SAMPLE),
        ),
        4,
        "TLS certificate file not found",
    )
    _one_clear_line(
        run_lc(
            "hunt", "--processor", "127.0.0.1:1", *t, "-r", str(SAMPLE), "--connect-timeout", "2"
        ),
        2,
        "cannot reach processor at 127.0.0.1:1",
    )
    _one_clear_line(
        run_lc("hunt", "--processor", processor.addr, "-r", str(SAMPLE)), 3, "TLS is required"
    )
    _one_clear_line(run_lc("process", "--listen", "nonsense", "--insecure"), 3, "--listen")
    _one_clear_line(
        run_lc("process", "--listen", processor.addr, *tls_args(pki, "processor")),
        1,
        "cannot listen",
    )
