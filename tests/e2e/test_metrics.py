"""The Prometheus endpoints of lc hunt and lc process, scraped from real processes."""

from __future__ import annotations

import json
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lc.common.errors import ValidationError
from lc.common.metrics import Buckets, parse_metrics_listen
from tests.conftest import LC, ROOT, lc_env, run_lc, start_hunter, start_processor, tls_args

SIP_CALL = ROOT / "captures" / "sip-call.pcap"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition (the client's own parser: it raises on bad syntax)."""
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def fetch(url: str, ctx: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


def check_exposition(text: str) -> None:
    """promtool's verdict when Debian's prometheus package is installed; the client's
    parser always."""
    parse(text)
    if shutil.which("promtool"):
        r = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stdout + r.stderr


def v(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def metrics_url(stderr_path: Path | None = None, proc: subprocess.Popen | None = None) -> str:
    """The URL a process printed ("lc ...: metrics on URL")."""
    deadline = time.monotonic() + 20
    seen = ""
    while time.monotonic() < deadline:
        if stderr_path is not None:
            seen = stderr_path.read_text()
        else:
            assert proc is not None and proc.stderr is not None
            r, _, _ = select.select([proc.stderr], [], [], 0.2)
            if r:
                seen += proc.stderr.readline()
        m = re.search(r"metrics on (\S+)", seen)
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no metrics URL in {seen!r}")


def status(proc, pki) -> dict:
    r = run_lc("show", "status", "--processor", proc.addr, *tls_args(pki, "admin"))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# -- unit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("9100", ("127.0.0.1", 9100)),
        (":9100", ("127.0.0.1", 9100)),
        ("localhost:9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::]:0", ("::", 0)),
        ("[::1]:9100", ("::1", 9100)),
        ("10.1.2.3:80", ("10.1.2.3", 80)),
    ],
)
def test_listen_address(text, want):
    assert parse_metrics_listen(text) == want


@pytest.mark.parametrize("text", ["", "x", "70000", ":", "host.example:9100", "1.2.3.4:-1"])
def test_listen_address_refused(text):
    with pytest.raises(ValidationError, match="--metrics-listen"):
        parse_metrics_listen(text)


def test_buckets_are_cumulative():
    b = Buckets((0.01, 0.1, 1.0))
    for x in (0.001, 0.01, 0.05, 0.5, 3.0, 7.0):
        b.observe(x)
    cum, total = b.cumulative()
    # le is inclusive: 0.01 falls in the first bucket.
    assert cum == [("0.01", 2), ("0.1", 3), ("1.0", 4), ("+Inf", 6)]
    assert total == pytest.approx(10.561)
    assert b.count == 6


def test_hunter_info_names_the_certificates_id_before_the_run_has_started(pki):
    # The endpoint starts before the run works the id out: a scrape in between gave
    # id="" (seen in a real scrape), then a second series for the same hunter.
    from lc.common.transport import TlsFiles
    from lc.hunter.metrics import hunter_collector
    from lc.hunter.run import HuntConfig, Hunter

    tls = TlsFiles(*(str(pki / n) for n in ("hunter-h1.pem", "hunter-h1.key", "ca.pem")))
    h = Hunter(HuntConfig(processor="127.0.0.1:1", read_file=str(SIP_CALL), tls=tls))
    fams = {f.name: f for f in hunter_collector(h)()}
    assert [s.labels["id"] for s in fams["lc_hunter_info"].samples] == ["h1"]


# -- end to end ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_scrape_during_replay_matches_summary_and_status(tmp_path, pki):
    """Both endpoints scraped while a VoIP replay runs (at 10x: ~3 s); the figures grow,
    and at the end the processor's equal `lc show status` and the hunter's summary."""
    proc = start_processor(tmp_path, tls_args(pki, "processor"), "--metrics-listen", "127.0.0.1:0")
    try:
        purl = metrics_url(proc.stderr_path)
        assert purl.startswith("http://127.0.0.1:")
        hunter = subprocess.Popen(
            [*LC, "hunt", "voip", "--processor", proc.addr, *tls_args(pki, "hunter-h1"),
             "-r", str(SIP_CALL), "--replay-speed", "10", "--no-filter-policy", "allow",
             "--metrics-listen", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lc_env(),
        )  # fmt: skip
        hurl = metrics_url(proc=hunter)
        hunter_seen: list[Samples] = []
        proc_seen: list[Samples] = []
        texts: list[str] = []
        while hunter.poll() is None:
            try:
                text = fetch(hurl)
            except (urllib.error.URLError, ConnectionError):
                break  # the hunter finished meanwhile
            hunter_seen.append(parse(text))
            texts.append(text)
            ptext = fetch(purl)
            proc_seen.append(parse(ptext))
            texts.append(ptext)
            time.sleep(0.3)
        out, err = hunter.communicate(timeout=60)
        assert hunter.returncode == 0, err
        final = parse(fetch(purl))
        st = status(proc, pki)
    finally:
        proc.stop()
    for t in texts[:2] + texts[-2:]:
        check_exposition(t)
    total = 1494
    assert len(hunter_seen) >= 4, "too few scrapes during the replay"
    captured = [v(s, "lc_hunter_packets_captured_total") for s in hunter_seen]
    assert captured == sorted(captured)
    assert any(0 < c < total for c in captured), captured  # seen in the middle of it
    mid = hunter_seen[len(hunter_seen) // 2]
    assert v(mid, "lc_hunter_processor_connected") == 1
    assert v(mid, "lc_hunter_info", id="h1", mode="voip", version=_version()) == 1
    assert v(mid, "lc_hunter_mode_calls_created_total", mode="voip") >= 1
    assert v(mid, "lc_hunter_mode_calls_active", mode="voip") >= 1  # a gauge: a level
    assert v(mid, "lc_hunter_mode_sip_messages_total", mode="voip") >= 1
    assert v(mid, "lc_hunter_breaker_state", state="closed") == 1
    last = hunter_seen[-1]
    assert v(last, "lc_hunter_packets_acknowledged_total") <= v(
        last, "lc_hunter_packets_forwarded_total"
    )
    # The summary: "... 1494 packets (B bytes) ...; forwarded 1494, acknowledged 1494"
    m = re.search(r": (\d+) packets \((\d+) bytes\).*, acknowledged (\d+)", out)
    assert m, out
    assert int(m.group(1)) == total
    assert captured[-1] <= total
    written = [v(s, "lc_processor_packets_written_total") for s in proc_seen]
    assert written == sorted(written)
    assert v(final, "lc_processor_packets_written_total") == st["packets_written"] == total
    assert v(final, "lc_processor_packets_written_total") == int(m.group(3))
    assert v(final, "lc_processor_bytes_written_total") == st["bytes_written"] == int(m.group(2))
    assert v(final, "lc_processor_batches_written_total") == st["batches_written"]
    assert st["events_written"]["sip"] >= 1
    assert (
        v(final, "lc_processor_events_written_total", dataset="sip") == st["events_written"]["sip"]
    )
    assert v(final, "lc_processor_hunters", state="disconnected") == 1
    assert v(final, "lc_processor_hunters", state="connected") == 0
    groups = v(final, "lc_processor_batch_commit_seconds_count")
    assert 1 <= groups <= st["batches_written"]
    assert v(final, "lc_processor_batch_commit_seconds_bucket", le="+Inf") == groups
    assert v(final, "lc_processor_batch_commit_seconds_sum") > 0


@pytest.mark.e2e
@pytest.mark.root
def test_live_hunter_metrics_equal_its_summary(tmp_path, pki):
    """A live hunter on lo: after 150 datagrams its endpoint says exactly what its
    summary line says at the stop, and the processor's what `lc show status` says."""
    proc = start_processor(tmp_path, tls_args(pki, "processor"), "--metrics-listen", ":0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hunter = start_hunter(
        proc.addr, pki, "live", "-i", "lo", "-f", f"udp port {port}",
        "--batch-timeout", "20", "--metrics-listen", "localhost:0",
    )  # fmt: skip
    try:
        purl = metrics_url(proc.stderr_path)
        hurl = metrics_url(proc=hunter)
        _wait(lambda: v(parse(fetch(hurl)), "lc_hunter_processor_connected") == 1, "connected")
        _wait(lambda: v(parse(fetch(purl)), "lc_processor_hunters", state="connected") == 1, "reg")
        time.sleep(0.5)  # the first filter set applied: capture runs
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            for i in range(150):
                u.sendto(b"metrics-%04d" % i, ("127.0.0.1", port))
        _wait(lambda: v(parse(fetch(purl)), "lc_processor_packets_written_total") == 150, "150")
        h = parse(fetch(hurl))
        st = status(proc, pki)
        p = parse(fetch(purl))
        hunter.send_signal(signal.SIGTERM)
        out, err = hunter.communicate(timeout=60)
    finally:
        if hunter.poll() is None:
            hunter.kill()
        proc.stop()
    assert hunter.returncode == 0, err
    m = re.search(
        r"captured: (\d+) packets \((\d+) bytes\).*forwarded (\d+), acknowledged (\d+)", out
    )
    assert m, out
    assert v(h, "lc_hunter_packets_captured_total") == int(m.group(1)) == 150
    assert v(h, "lc_hunter_bytes_captured_total") == int(m.group(2))
    assert v(h, "lc_hunter_packets_forwarded_total") == int(m.group(3)) == 150
    assert v(h, "lc_hunter_packets_acknowledged_total") == int(m.group(4)) == 150
    assert v(h, "lc_hunter_packets_dropped_total", reason="kernel") == 0
    assert v(h, "lc_hunter_mode_malformed_total", mode="generic") == 0
    assert v(p, "lc_processor_packets_written_total") == st["packets_written"] == 150
    assert v(p, "lc_processor_bytes_written_total") == st["bytes_written"]
    assert v(p, "lc_processor_hunters", state="connected") == st["hunters_connected"] == 1


@pytest.mark.e2e
def test_metrics_over_tls_need_the_admin_certificate(tmp_path, pki):
    proc = start_processor(
        tmp_path, tls_args(pki, "processor"), "--metrics-listen", "0", "--metrics-tls"
    )
    try:
        url = metrics_url(proc.stderr_path)
        assert url.startswith("https://127.0.0.1:")

        def ctx(name: str | None) -> ssl.SSLContext:
            c = ssl.create_default_context(cafile=str(pki / "ca.pem"))
            c.check_hostname = False  # the processor's certificate names its host, not 127.0.0.1
            if name:
                c.load_cert_chain(pki / f"{name}.pem", pki / f"{name}.key")
            return c

        samples = parse(fetch(url, ctx("admin")))
        assert ("lc_processor_packets_written_total", ()) in samples
        with pytest.raises(urllib.error.HTTPError) as e:
            fetch(url, ctx("hunter-h1"))
        assert e.value.code == 403
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            fetch(url, ctx(None))  # no client certificate: the handshake fails
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            fetch(url.replace("https", "http"))  # plaintext to the TLS port
        # Still serving after all that.
        assert parse(fetch(url, ctx("admin")))
    finally:
        proc.stop()


@pytest.mark.e2e
def test_a_hunter_serves_tls_metrics_with_a_metrics_certificate(tmp_path, pki):
    """lc certs add --metrics makes the server certificate a hunter's endpoint needs (its
    own is a client's): a scraper checking the host name gets the metrics with the admin
    certificate; the new certificate is no client credential for lc."""
    from lc.common.credentials import add_metrics

    certs = tmp_path / "pki"
    shutil.copytree(pki, certs)  # the session's CA, with one more certificate
    add_metrics(certs, "h1", ["localhost"])
    proc = start_processor(tmp_path, tls_args(pki, "processor"))
    hunter = subprocess.Popen(
        [*LC, "hunt", "--processor", proc.addr, *tls_args(certs, "hunter-h1"),
         "-r", str(SIP_CALL), "--replay-speed", "1", "--metrics-listen", "0", "--metrics-tls",
         "--metrics-tls-cert", str(certs / "metrics-h1.pem"),
         "--metrics-tls-key", str(certs / "metrics-h1.key")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lc_env(),
    )  # fmt: skip
    try:
        url = metrics_url(proc=hunter).replace("127.0.0.1", "localhost")
        assert url.startswith("https://localhost:")
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))  # checks the name
        ctx.load_cert_chain(certs / "admin.pem", certs / "admin.key")
        samples = parse(fetch(url, ctx))
        assert v(samples, "lc_hunter_info", id="h1", mode="generic", version=_version()) == 1
        r = run_lc("hunt", "--processor", proc.addr, "-r", str(SIP_CALL),
                   "--tls-cert", str(certs / "metrics-h1.pem"), "--tls-key",
                   str(certs / "metrics-h1.key"), "--tls-ca", str(certs / "ca.pem"))  # fmt: skip
        assert r.returncode == 3 and "has role 'metrics'" in r.stderr, r.stderr
        # Nor does the processor take it from a client (no clientAuth: no handshake),
        # while the hunter's own certificate works on the same processor.
        import grpc

        from lc.common.transport import TlsFiles, open_channel
        from lc.proto import lc_pb2, lc_pb2_grpc

        def register(name: str, hunter_id: str) -> lc_pb2.RegisterResponse:
            files = TlsFiles(*(str(certs / n) for n in (f"{name}.pem", f"{name}.key", "ca.pem")))
            ch = open_channel(proc.addr, files)
            try:
                stub = lc_pb2_grpc.ManagementServiceStub(ch)
                req = lc_pb2.RegisterRequest(hunter_id=hunter_id)
                return stub.RegisterHunter(req, timeout=10)
            finally:
                ch.close()

        with pytest.raises(grpc.RpcError) as e:
            register("metrics-h1", "h1")
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert register("hunter-h2", "h2").accepted  # the processor is up
    finally:
        hunter.send_signal(signal.SIGINT)
        hunter.communicate(timeout=60)
        proc.stop()


@pytest.mark.e2e
def test_bad_metrics_flags_are_refused(tmp_path, pki):
    r = run_lc("process", "--insecure", "--data-dir", str(tmp_path / "d"), "--listen",
               "127.0.0.1:0", "--metrics-listen", "nohost.example:1")  # fmt: skip
    assert r.returncode == 3 and "--metrics-listen" in r.stderr, r.stderr
    r = run_lc("process", "--insecure", "--data-dir", str(tmp_path / "d"), "--listen",
               "127.0.0.1:0", "--metrics-listen", "0", "--metrics-tls")  # fmt: skip
    assert r.returncode == 3 and "--insecure" in r.stderr, r.stderr
    r = run_lc("process", *tls_args(pki, "processor"), "--data-dir", str(tmp_path / "d"),
               "--listen", "127.0.0.1:0", "--metrics-tls")  # fmt: skip
    assert r.returncode == 3 and "needs --metrics-listen" in r.stderr, r.stderr
    # A hunter's own certificate is a client certificate: refused as a server's.
    r = run_lc("hunt", "--processor", "127.0.0.1:1", *tls_args(pki, "hunter-h1"),
               "-r", str(SIP_CALL), "--metrics-listen", "0", "--metrics-tls")  # fmt: skip
    assert r.returncode == 3 and "client certificate" in r.stderr, r.stderr
    # A port in use.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = subprocess.run(
            [*LC, "hunt", "--insecure", "--processor", "127.0.0.1:1", "-r", str(SIP_CALL),
             "--metrics-listen", str(busy)],
            capture_output=True, text=True, timeout=60, env=lc_env(),
        )  # fmt: skip
    assert r.returncode == 1 and "cannot listen" in r.stderr, r.stderr


def _version() -> str:
    from lc import __version__

    return __version__


def _wait(cond, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (KeyError, urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
