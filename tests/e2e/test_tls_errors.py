"""TLS failures name their real cause, on both sides (issue 9, item 9).

Before: a processor with a key that does not match its certificate said "address in use";
hunters and the admin CLI with a bad key, an expired certificate or one from another CA
said "cannot reach processor" after the whole connect timeout; the processor said nothing
about failed handshakes and started with an expired certificate without a word.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from lc.common.credentials import init_pki
from tests.conftest import ROOT, run_lc, start_processor, tls_args
from tests.tls_tools import issue

SAMPLE = ROOT / "captures" / "sip-call.pcap"


def files(cert: Path, key: Path, ca: Path) -> list[str]:
    return ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca)]


def one_line(r, code: int, *needles: str) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip() and "warning: --insecure" not in x]
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    """A second, unrelated PKI."""
    d = tmp_path_factory.mktemp("other") / "pki"
    init_pki(d, hunters=["h1"])
    return d


@pytest.fixture(scope="module")
def odd(tmp_path_factory, pki) -> Path:
    """Certificates of the test PKI's CA that are expired, not yet valid, expiring soon."""
    d = tmp_path_factory.mktemp("odd")
    issue(pki, "expired", role="hunter", cn="h1", start_days=-30, end_days=-1, out=d)
    issue(pki, "later", role="hunter", cn="h1", start_days=3, end_days=60, out=d)
    issue(pki, "soon", role="hunter", cn="h1", start_days=-1, end_days=12, out=d)
    issue(pki, "proc-expired", role="processor", cn="p", start_days=-30, end_days=-1, out=d)
    issue(pki, "proc-soon", role="processor", cn="p", start_days=-1, end_days=5, out=d)
    return d


def hunt(addr: str, tls: list[str], *extra: str, timeout: float = 60):
    return run_lc(
        "hunt", "--processor", addr, *tls, "-r", str(SAMPLE), "--connect-timeout", "8", *extra,
        timeout=timeout,
    )  # fmt: skip


# -- the processor refuses bad files of its own at start ---------------------------------


@pytest.mark.e2e
def test_processor_refuses_its_own_bad_files_naming_the_cause(tmp_path, pki, odd, other):
    ca = pki / "ca.pem"
    cases = [
        (files(pki / "processor.pem", pki / "admin.key", ca), "does not match the certificate"),
        (files(odd / "proc-expired.pem", odd / "proc-expired.key", ca), "expired on"),
        (
            files(other / "processor.pem", other / "processor.key", ca),
            "is not signed by the CA in",
        ),
        # a hunter's or the admin's certificate would start and fail every handshake
        (
            files(pki / "hunter-h1.pem", pki / "hunter-h1.key", ca),
            "has role 'hunter' (CN 'h1'): lc process needs a 'processor' certificate",
        ),
        (
            files(pki / "admin.pem", pki / "admin.key", ca),
            "has role 'admin' (CN 'admin'): lc process needs a 'processor' certificate",
        ),
    ]
    for tls, needle in cases:
        r = run_lc("process", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), *tls)
        line = one_line(r, 3, "lc process: error: ", needle)
        assert "address" not in line


@pytest.mark.e2e
def test_processor_warns_of_a_certificate_expiring_within_30_days(tmp_path, pki, odd):
    p = start_processor(
        tmp_path, files(odd / "proc-soon.pem", odd / "proc-soon.key", pki / "ca.pem")
    )
    try:
        assert re.search(r"WARNING .*proc-soon\.pem expires in 4 days", p.stderr()), p.stderr()
    finally:
        p.stop()


# -- hunters and the admin CLI: local files first, then what the handshake says -----------


@pytest.mark.e2e
def test_hunter_with_bad_files_of_its_own_fails_at_once(pki, processor, odd, other):
    ca = pki / "ca.pem"
    cases = [
        (files(pki / "hunter-h1.pem", pki / "hunter-h2.key", ca), "does not match the certificate"),
        (files(odd / "expired.pem", odd / "expired.key", ca), "expired on"),
        (files(odd / "later.pem", odd / "later.key", ca), "is not valid before"),
        (files(other / "hunter-h1.pem", other / "hunter-h1.key", ca), "is not signed by the CA"),
    ]
    for tls, needle in cases:
        t0 = time.monotonic()
        r = hunt(processor.addr, tls)
        one_line(r, 3, needle)
        assert "cannot reach" not in r.stderr
        assert time.monotonic() - t0 < 6  # not after the connect timeout (8 s)


@pytest.mark.e2e
def test_hunter_tells_a_failed_handshake_from_an_unreachable_processor(
    tmp_path, pki, processor, other
):
    # Another PKI altogether: our CA does not trust the processor's certificate.
    t0 = time.monotonic()
    r = hunt(
        processor.addr, files(other / "hunter-h1.pem", other / "hunter-h1.key", other / "ca.pem")
    )
    one_line(r, 2, "TLS handshake with the processor at", "processor's certificate is not "
             f"signed by the CA in {other / 'ca.pem'}")  # fmt: skip
    assert time.monotonic() - t0 < 6
    # We trust the processor (both CAs in our file), it does not trust us.
    both = tmp_path / "both-ca.pem"
    both.write_bytes((other / "ca.pem").read_bytes() + (pki / "ca.pem").read_bytes())
    r = hunt(processor.addr, files(other / "hunter-h1.pem", other / "hunter-h1.key", both))
    one_line(r, 2, f"the processor refused our certificate {other / 'hunter-h1.pem'}")
    # Plaintext against TLS.
    r = hunt(processor.addr, ["--insecure"])
    one_line(r, 2, "the processor expects TLS, and this client runs with --insecure")
    # Nothing listening: still "cannot reach", with the reason.
    r = hunt("127.0.0.1:1", tls_args(pki, "hunter-h1"), "--connect-timeout", "1")
    one_line(r, 2, "cannot reach processor at 127.0.0.1:1", "connection refused")
    assert processor.proc.poll() is None


@pytest.mark.e2e
def test_hunter_warns_of_a_certificate_expiring_within_30_days(pki, processor, odd):
    r = hunt(processor.addr, files(odd / "soon.pem", odd / "soon.key", pki / "ca.pem"))
    assert r.returncode == 0, r.stderr
    assert re.search(r"WARNING .*soon\.pem expires in 11 days", r.stderr), r.stderr


@pytest.mark.e2e
def test_admin_cli_names_the_tls_cause(pki, processor, other):
    def show(tls: list[str]):
        r = run_lc("show", "status", "--processor", processor.addr, *tls, timeout=60)
        assert r.stdout == ""
        return r.returncode, json.loads(r.stderr)["error"]

    code, err = show(files(pki / "admin.pem", pki / "hunter-h1.key", pki / "ca.pem"))
    assert code == 3 and "does not match the certificate" in err
    code, err = show(files(other / "admin.pem", other / "admin.key", other / "ca.pem"))
    assert code == 2 and "processor's certificate is not signed by the CA" in err


# -- the processor logs failed handshakes, rate limited ---------------------------------


@pytest.mark.e2e
def test_processor_logs_failed_handshakes_rate_limited(tmp_path, pki, other):
    import grpc

    p = start_processor(tmp_path, tls_args(pki, "processor"))
    try:
        creds = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.pem").read_bytes(),
            private_key=(other / "hunter-h1.key").read_bytes(),
            certificate_chain=(other / "hunter-h1.pem").read_bytes(),
        )
        for _ in range(5):  # five clients whose certificate is from another CA
            ch = grpc.secure_channel(p.addr, creds)
            with pytest.raises(grpc.FutureTimeoutError):
                grpc.channel_ready_future(ch).result(timeout=0.5)
            ch.close()
        deadline = time.monotonic() + 15  # gRPC's log reaches us through a pipe: be patient
        while "TLS handshake from" not in p.stderr() and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = [x for x in p.stderr().splitlines() if "TLS handshake" in x]
        assert len(lines) == 1, p.stderr()  # the first at once, the rest held back (10 s)
        assert re.search(
            r"WARNING lc\.processor\.tls: TLS handshake from 127\.0\.0\.1:\d+ failed: the "
            r"client's certificate is not signed by our CA \(CERTIFICATE_VERIFY_FAILED",
            lines[0],
        ), lines[0]
        # ... and then summarised in one line.
        deadline = time.monotonic() + 15
        while "more TLS handshakes failed" not in p.stderr() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert re.search(r"\d+ more TLS handshakes failed in the last 10 s", p.stderr())
        # The processor still serves a good hunter, and its own log holds no gRPC noise.
        r = hunt(p.addr, tls_args(pki, "hunter-h1"))
        assert r.returncode == 0, r.stderr
        assert not re.search(r"^[IWE]\d{4} ", p.stderr(), re.M), p.stderr()
    finally:
        p.stop()
