"""Tests for lc.common.credentials: the private PKI behind lc's mutual TLS.

Besides checking the files with cryptography itself, the certificates are judged by
independent oracles: the openssl command line (verify, x509, and a real TLS handshake
between s_server and s_client) and grpc's own TLS stack.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lc.common.credentials import (
    CertIdentity,
    PkiPaths,
    check_key_pair,
    identity_from_pem,
    init_pki,
    read_pem,
)
from lc.common.errors import NotFound, ValidationError

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")
SUBPROCESS_TIMEOUT = 20

try:
    from cryptography.x509 import verification as x509_verification
except ImportError:  # cryptography < 42
    x509_verification = None  # type: ignore[assignment]


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    directory = tmp_path_factory.mktemp("pki") / "certs"
    return init_pki(
        directory,
        hunters=["a", "edge_1.b-2"],
        processor_hosts=["proc.example.net", "10.1.2.3", "fd00::7"],
        processor_id="proc-1",
    )


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    """A second, unrelated PKI: its certificates must be refused by the first one's CA."""
    return init_pki(tmp_path_factory.mktemp("other") / "certs", hunters=["a"])


# ----------------------------------------------------------------------------- files


def test_files_and_modes(pki: PkiPaths) -> None:
    d = pki.directory
    expected = {
        "ca.pem",
        "ca.key",
        "processor.pem",
        "processor.key",
        "admin.pem",
        "admin.key",
        "hunter-a.pem",
        "hunter-a.key",
        "hunter-edge_1.b-2.pem",
        "hunter-edge_1.b-2.key",
    }
    assert {p.name for p in d.iterdir()} == expected  # no temporary files left behind
    assert mode_of(d) == 0o700
    for name in expected:
        if name.endswith(".key"):
            assert mode_of(d / name) == 0o600, name
        else:
            assert mode_of(d / name) & 0o077 in (0o044, 0o004, 0o000), name
    assert pki.ca.cert == d / "ca.pem" and pki.ca.key == d / "ca.key"
    assert pki.processor.cert == d / "processor.pem"
    assert pki.admin is not None and pki.admin.key == d / "admin.key"
    assert set(pki.hunters) == {"a", "edge_1.b-2"}
    assert pki.hunters["a"].cert == d / "hunter-a.pem"
    assert all(f.created for f in (pki.ca, pki.processor, pki.admin, *pki.hunters.values()))
    described = pki.as_dict()
    json.dumps(described)  # JSON-ready
    assert described["hunters"]["a"]["status"] == "created"


def test_existing_directory_mode_is_left_alone(tmp_path: Path) -> None:
    d = tmp_path / "shared"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    init_pki(d, admin=False)
    assert mode_of(d) == 0o755
    assert not (d / "admin.pem").exists()


def test_reissued_key_gets_0600_even_if_the_old_file_was_wider(tmp_path: Path) -> None:
    paths = init_pki(tmp_path / "p", hunters=["a"])
    key = paths.hunters["a"].key
    key.chmod(0o644)
    again = init_pki(tmp_path / "p", hunters=["a"], force=True)
    assert again.hunters["a"].created
    assert mode_of(key) == 0o600


# ----------------------------------------------------------------------------- contents


def test_keys_are_p256_and_signatures_sha256(pki: PkiPaths) -> None:
    for files in (pki.ca, pki.processor, pki.admin, *pki.hunters.values()):
        assert files is not None
        cert = load(files.cert)
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert isinstance(key.curve, ec.SECP256R1)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
        check_key_pair(files.cert.read_bytes(), files.key.read_bytes())


def test_ca_extensions(pki: PkiPaths) -> None:
    ca = load(pki.ca.cert)
    assert ca.subject == ca.issuer
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())
    # The CA outlives the leaves it signs.
    assert ca.not_valid_after_utc >= load(pki.processor.cert).not_valid_after_utc


@pytest.mark.parametrize(
    ("which", "role", "cn", "usage"),
    [
        # A processor serves its hunters and is a client of its upstream (a tree).
        (
            "processor",
            "processor",
            "proc-1",
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        ),
        ("admin", "admin", "admin", [ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("hunter-a", "hunter", "a", [ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("hunter-edge_1.b-2", "hunter", "edge_1.b-2", [ExtendedKeyUsageOID.CLIENT_AUTH]),
    ],
)
def test_leaf_subject_and_extensions(
    pki: PkiPaths, which: str, role: str, cn: str, usage: list[x509.ObjectIdentifier]
) -> None:
    ca = load(pki.ca.cert)
    cert = load(pki.directory / f"{which}.pem")
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [a.value for a in ou] == [role]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    assert cert.issuer == ca.subject
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == usage
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    cert.verify_directly_issued_by(ca)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=825) <= lifetime <= dt.timedelta(days=825, minutes=10)


def test_identities(pki: PkiPaths) -> None:
    proc = identity_from_pem(pki.processor.cert.read_bytes())
    assert proc.common_name == "proc-1" and proc.role == "processor"
    assert set(proc.sans) == {
        "DNS:proc.example.net",
        "IP:10.1.2.3",
        "IP:fd00::7",
        "DNS:localhost",
        "IP:127.0.0.1",
        "IP:::1",
    }
    hunter = identity_from_pem(pki.hunters["edge_1.b-2"].cert.read_bytes())
    assert hunter == CertIdentity(
        common_name="edge_1.b-2",
        role="hunter",
        sans=("URI:lc://hunter/edge_1.b-2",),
        fingerprint=hunter.fingerprint,
        not_after=hunter.not_after,
    )
    assert pki.admin is not None
    admin = identity_from_pem(pki.admin.cert.read_bytes())
    assert (admin.common_name, admin.role, admin.sans) == (
        "admin",
        "admin",
        ("URI:lc://admin/admin",),
    )
    ca = identity_from_pem(pki.ca.cert.read_bytes())
    assert ca.role == "" and ca.common_name.startswith("lc CA ")
    assert hunter.not_after.tzinfo is not None
    assert hunter.not_after > dt.datetime.now(dt.UTC) + dt.timedelta(days=800)


def test_identity_is_cached_and_accepts_str(pki: PkiPaths) -> None:
    pem = pki.hunters["a"].cert.read_bytes()
    first = identity_from_pem(pem)
    assert identity_from_pem(bytes(pem)) is first
    assert identity_from_pem(pem.decode()) is first
    assert len(first.fingerprint) == 64 and int(first.fingerprint, 16) >= 0


def test_identity_ambiguous_role_is_empty(pki: PkiPaths) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "hunter"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "admin"),
            x509.NameAttribute(NameOID.COMMON_NAME, "x"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    ident = identity_from_pem(cert.public_bytes(Encoding.PEM))
    assert ident.role == "" and ident.sans == ()


def test_identity_of_garbage_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        identity_from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


# ----------------------------------------------------------------------------- chain checks


@pytest.mark.skipif(x509_verification is None, reason="cryptography has no x509.verification")
def test_chains_verify_against_the_ca(pki: PkiPaths, other_pki: PkiPaths) -> None:
    v = x509_verification
    store = v.Store([load(pki.ca.cert)])
    client = v.PolicyBuilder().store(store).build_client_verifier()
    for files in (pki.admin, *pki.hunters.values()):
        assert files is not None
        verified = client.verify(load(files.cert), [])
        assert len(verified.chain) == 2
    subjects = [
        v.DNSName("localhost"),
        v.DNSName("proc.example.net"),
        v.IPAddress(ipaddress.ip_address("127.0.0.1")),
        v.IPAddress(ipaddress.ip_address("::1")),
        v.IPAddress(ipaddress.ip_address("fd00::7")),
    ]
    for subject in subjects:
        server = v.PolicyBuilder().store(store).build_server_verifier(subject)
        assert len(server.verify(load(pki.processor.cert), [])) == 2
    # A processor is also a client (of its upstream processor).
    assert len(client.verify(load(pki.processor.cert), []).chain) == 2
    # Wrong purpose, wrong host name, wrong CA: all refused.
    with pytest.raises(v.VerificationError):
        v.PolicyBuilder().store(store).build_server_verifier(v.DNSName("localhost")).verify(
            load(pki.hunters["a"].cert), []
        )
    with pytest.raises(v.VerificationError):
        v.PolicyBuilder().store(store).build_server_verifier(v.DNSName("evil.example")).verify(
            load(pki.processor.cert), []
        )
    with pytest.raises(v.VerificationError):
        v.PolicyBuilder().store(store).build_server_verifier(v.DNSName("localhost")).verify(
            load(pki.hunters["a"].cert), []
        )
    with pytest.raises(v.VerificationError):
        client.verify(load(other_pki.hunters["a"].cert), [])


# ----------------------------------------------------------------------------- re-runs


def test_rerun_reuses_ca_and_adds_hunters(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    first = init_pki(d, hunters=["a"])
    ca_bytes = first.ca.cert.read_bytes()
    ca_key_bytes = first.ca.key.read_bytes()
    a_bytes = first.hunters["a"].cert.read_bytes()
    proc_bytes = first.processor.cert.read_bytes()

    second = init_pki(d, hunters=["a", "b", "b"])
    assert not second.ca.created and not second.processor.created
    assert second.admin is not None and not second.admin.created
    assert not second.hunters["a"].created and second.hunters["b"].created
    assert list(second.hunters) == ["a", "b"]
    assert first.ca.cert.read_bytes() == ca_bytes
    assert first.ca.key.read_bytes() == ca_key_bytes
    assert first.hunters["a"].cert.read_bytes() == a_bytes
    assert first.processor.cert.read_bytes() == proc_bytes
    ca = load(second.ca.cert)
    load(second.hunters["b"].cert).verify_directly_issued_by(ca)
    assert second.as_dict()["hunters"]["a"]["status"] == "reused"

    forced = init_pki(d, hunters=["a"], force=True)
    assert not forced.ca.created and forced.hunters["a"].created and forced.processor.created
    assert first.ca.cert.read_bytes() == ca_bytes  # force never replaces the CA
    assert first.hunters["a"].cert.read_bytes() != a_bytes
    load(forced.hunters["a"].cert).verify_directly_issued_by(ca)


def test_rerun_with_new_processor_host_needs_force(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    init_pki(d)
    init_pki(d, processor_hosts=["localhost"])  # already covered: reused
    with pytest.raises(ValidationError, match=r"lacks DNS:new\.example.*--force"):
        init_pki(d, processor_hosts=["new.example"])
    with pytest.raises(ValidationError, match="CN=processor"):
        init_pki(d, processor_id="other")
    again = init_pki(d, processor_hosts=["new.example"], force=True)
    assert "DNS:new.example" in identity_from_pem(again.processor.cert.read_bytes()).sans


def test_half_present_pairs_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    paths = init_pki(d, hunters=["a"])
    paths.hunters["a"].key.unlink()
    with pytest.raises(ValidationError, match=r"hunter-a\.pem exists without hunter-a\.key"):
        init_pki(d, hunters=["a"])
    assert init_pki(d, hunters=["a"], force=True).hunters["a"].created

    paths.ca.key.unlink()
    with pytest.raises(NotFound, match=r"CA private key file not found: .*ca\.key"):
        init_pki(d)


def test_leaf_from_another_ca_is_refused(tmp_path: Path, other_pki: PkiPaths) -> None:
    d = tmp_path / "pki"
    init_pki(d)
    shutil.copy(other_pki.hunters["a"].cert, d / "hunter-a.pem")
    shutil.copy(other_pki.hunters["a"].key, d / "hunter-a.key")
    with pytest.raises(ValidationError, match="not issued by this directory's CA"):
        init_pki(d, hunters=["a"])


def test_mismatched_ca_key_is_refused(tmp_path: Path, other_pki: PkiPaths) -> None:
    d = tmp_path / "pki"
    init_pki(d)
    (d / "ca.key").write_bytes(other_pki.ca.key.read_bytes())
    with pytest.raises(ValidationError, match="does not match the certificate"):
        init_pki(d)


def test_concurrent_runs_share_one_ca(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: init_pki(d, hunters=[f"h{i}"]), range(6)))
    assert sum(r.ca.created for r in results) == 1
    ca = load(d / "ca.pem")
    for i in range(6):
        load(d / f"hunter-h{i}.pem").verify_directly_issued_by(ca)
    load(d / "processor.pem").verify_directly_issued_by(ca)


def test_a_single_string_is_not_a_list_of_hunters(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        init_pki(tmp_path / "pki", hunters="abc")


@pytest.mark.parametrize(
    "bad",
    ["", "a b", "x" * 65, "h\u00e9", "a/b", "../x", ".", "..", "a\n", "a:b"],
)
def test_bad_hunter_ids_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        init_pki(tmp_path / "pki", hunters=["good", bad])
    assert repr(bad) in str(info.value)
    assert not (tmp_path / "pki").exists()  # validated before anything is written


def test_id_limits_accepted(tmp_path: Path) -> None:
    longest = "A" * 64
    paths = init_pki(tmp_path / "pki", hunters=[longest, "-._"], admin=False)
    assert identity_from_pem(paths.hunters[longest].cert.read_bytes()).common_name == longest
    assert paths.hunters["-._"].cert.name == "hunter--._.pem"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"processor_id": "bad id"}, "invalid processor id 'bad id'"),
        ({"processor_hosts": ["bad host"]}, "invalid processor host 'bad host'"),
        ({"processor_hosts": ["a..b"]}, "invalid processor host"),
        ({"processor_hosts": ["-a.example"]}, "invalid processor host"),
        ({"days": 0}, "invalid validity 0 days"),
    ],
)
def test_other_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        init_pki(tmp_path / "pki", **kwargs)


def test_directory_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValidationError, match="not a directory"):
        init_pki(f)


# ----------------------------------------------------------------------------- read_pem, keys


def test_read_pem(pki: PkiPaths, tmp_path: Path) -> None:
    assert read_pem(pki.ca.cert).startswith(b"-----BEGIN CERTIFICATE-----")
    assert read_pem(str(pki.ca.key), what="TLS private key").startswith(b"-----BEGIN ")
    missing = tmp_path / "x" / "y.pem"
    with pytest.raises(NotFound) as info:
        read_pem(missing)
    assert str(info.value) == f"TLS certificate file not found: {missing}"
    assert info.value.exit_code == 4
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate\n")
    not_pem = re.escape(f"TLS certificate file is not PEM: {garbage}")
    with pytest.raises(ValidationError, match=not_pem):
        read_pem(garbage)
    with pytest.raises(ValidationError, match="is a directory"):
        read_pem(tmp_path)


def test_read_pem_unreadable_path(pki: PkiPaths, tmp_path: Path) -> None:
    # A regular file used as a directory: an OSError other than "not found", even for root.
    below_a_file = pki.ca.cert / "x.pem"
    with pytest.raises(ValidationError, match=r"certificate file unreadable: .*Not a directory"):
        read_pem(below_a_file)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of their mode")
def test_read_pem_unreadable(pki: PkiPaths, tmp_path: Path) -> None:
    f = tmp_path / "secret.pem"
    f.write_bytes(pki.ca.cert.read_bytes())
    f.chmod(0)
    with pytest.raises(ValidationError, match="unreadable"):
        read_pem(f)


def test_check_key_pair(pki: PkiPaths, other_pki: PkiPaths) -> None:
    cert = pki.hunters["a"].cert.read_bytes()
    check_key_pair(cert, pki.hunters["a"].key.read_bytes())
    with pytest.raises(ValidationError, match=r"the key does not match the certificate \(CN=a"):
        check_key_pair(cert, other_pki.hunters["a"].key.read_bytes())
    expected = r"the key k\.key does not match the certificate c\.pem"
    with pytest.raises(ValidationError, match=expected):
        check_key_pair(cert, pki.ca.key.read_bytes(), cert_name="c.pem", key_name="k.key")
    with pytest.raises(ValidationError, match="not a valid PEM private key"):
        check_key_pair(cert, cert)


def test_module_does_not_import_grpc() -> None:
    code = (
        "import sys, lc.common.credentials\n"
        "bad = [m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=SUBPROCESS_TIMEOUT)


# ----------------------------------------------------------------------------- openssl oracle


def openssl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


@needs_openssl
def test_openssl_verifies_every_leaf(pki: PkiPaths, other_pki: PkiPaths) -> None:
    d = pki.directory
    for name, purpose in [
        ("processor.pem", "sslserver"),
        ("admin.pem", "sslclient"),
        ("hunter-a.pem", "sslclient"),
        ("hunter-edge_1.b-2.pem", "sslclient"),
    ]:
        out = openssl("verify", "-CAfile", "ca.pem", "-purpose", purpose, name, cwd=d)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"{name}: OK"
    wrong = openssl("verify", "-CAfile", str(d / "ca.pem"), str(other_pki.hunters["a"].cert))
    assert wrong.returncode != 0
    wrong_purpose = openssl(
        "verify", "-CAfile", "ca.pem", "-purpose", "sslserver", "hunter-a.pem", cwd=d
    )
    assert wrong_purpose.returncode != 0


@needs_openssl
@pytest.mark.parametrize(
    ("name", "subject", "san", "eku"),
    [
        (
            "processor.pem",
            "subject=O = lc, OU = processor, CN = proc-1",
            "DNS:proc.example.net, IP Address:10.1.2.3, IP Address:FD00:0:0:0:0:0:0:7, "
            "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1",
            "TLS Web Server Authentication, TLS Web Client Authentication",
        ),
        (
            "hunter-a.pem",
            "subject=O = lc, OU = hunter, CN = a",
            "URI:lc://hunter/a",
            "TLS Web Client Authentication",
        ),
        (
            "admin.pem",
            "subject=O = lc, OU = admin, CN = admin",
            "URI:lc://admin/admin",
            "TLS Web Client Authentication",
        ),
    ],
)
def test_openssl_reads_subject_and_extensions(
    pki: PkiPaths, name: str, subject: str, san: str, eku: str
) -> None:
    out = openssl(
        "x509",
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName,extendedKeyUsage",
        "-in",
        name,
        cwd=pki.directory,
    )
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    assert lines[0] == subject
    assert lines[lines.index("X509v3 Subject Alternative Name:") + 1] == san
    assert lines[lines.index("X509v3 Extended Key Usage:") + 1] == eku


@needs_openssl
def test_openssl_fingerprint_matches_identity(pki: PkiPaths) -> None:
    out = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", str(pki.processor.cert))
    assert out.returncode == 0, out.stderr
    theirs = out.stdout.strip().split("=", 1)[1].replace(":", "").lower()
    assert identity_from_pem(pki.processor.cert.read_bytes()).fingerprint == theirs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def s_server(pki: PkiPaths) -> Iterator[tuple[int, list[str]]]:
    """Run ``openssl s_server`` requiring a client certificate; yield (port, its output)."""
    assert OPENSSL is not None
    output: list[str] = []
    for _attempt in range(3):
        port = free_port()
        proc = subprocess.Popen(
            [
                OPENSSL, "s_server",
                "-cert", str(pki.processor.cert), "-key", str(pki.processor.key),
                "-CAfile", str(pki.ca.cert),
                "-Verify", "1", "-verify_return_error",
                "-accept", f"127.0.0.1:{port}", "-www",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        ready = threading.Event()

        def pump(stream=proc.stdout, sink=output, ready=ready) -> None:
            for line in stream:
                sink.append(line)
                if line.startswith("ACCEPT"):
                    ready.set()
            ready.set()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            # Wait for "ACCEPT" rather than probing the port: a probe would be a failed handshake.
            ready.wait(timeout=SUBPROCESS_TIMEOUT)
            if proc.poll() is None and any(line.startswith("ACCEPT") for line in output):
                yield port, output
                return
        finally:
            proc.kill()
            proc.wait(timeout=SUBPROCESS_TIMEOUT)
            reader.join(timeout=SUBPROCESS_TIMEOUT)
        output.clear()  # port taken between free_port() and the bind: try another one
    pytest.fail("openssl s_server did not start")


def s_client(port: int, cert: Path, key: Path, ca: Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [
            OPENSSL, "s_client",
            "-connect", f"127.0.0.1:{port}",
            "-cert", str(cert), "-key", str(key), "-CAfile", str(ca),
            "-verify_return_error", "-verify_ip", "127.0.0.1",
            "-ign_eof",  # read the server's answer before closing
        ],
        input="GET / HTTP/1.0\r\n\r\n",
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )  # fmt: skip


@needs_openssl
def test_tls_handshake_with_openssl(pki: PkiPaths) -> None:
    with s_server(pki) as (port, server_output):
        out = s_client(port, pki.hunters["a"].cert, pki.hunters["a"].key, pki.ca.cert)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Verify return code: 0 (ok)" in out.stdout
    assert "HTTP/1.0 200 ok" in out.stdout
    assert "OU = hunter, CN = a" in "".join(server_output)


@needs_openssl
def test_tls_refuses_client_from_another_ca(pki: PkiPaths, other_pki: PkiPaths) -> None:
    other = other_pki.hunters["a"]
    with s_server(pki) as (port, server_output):
        out = s_client(port, other.cert, other.key, pki.ca.cert)
        time.sleep(0.2)  # let the server log its side
    assert out.returncode != 0
    assert "HTTP/1.0 200 ok" not in out.stdout
    assert "unknown ca" in out.stderr or "alert" in out.stderr, out.stderr
    assert "certificate verify failed" in "".join(server_output)


@needs_openssl
def test_tls_client_refuses_server_from_another_ca(pki: PkiPaths, other_pki: PkiPaths) -> None:
    with s_server(pki) as (port, _output):
        out = s_client(port, pki.hunters["a"].cert, pki.hunters["a"].key, other_pki.ca.cert)
    assert out.returncode != 0
    assert "HTTP/1.0 200 ok" not in out.stdout


# ----------------------------------------------------------------------------- grpc oracle


def test_grpc_mutual_tls_and_peer_identity(pki: PkiPaths, other_pki: PkiPaths) -> None:
    """grpc's TLS stack accepts the PEM bytes as-is and the peer identity reads back."""
    grpc = pytest.importorskip("grpc")

    def who(request: bytes, context) -> bytes:  # type: ignore[no-untyped-def]
        pem = context.auth_context()["x509_pem_cert"][0]
        ident = identity_from_pem(pem)
        return json.dumps([ident.role, ident.common_name, list(ident.sans)]).encode()

    handler = grpc.method_handlers_generic_handler(
        "lc.test.Who", {"Who": grpc.unary_unary_rpc_method_handler(who)}
    )
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    server_creds = grpc.ssl_server_credentials(
        [(read_pem(pki.processor.key, what="TLS private key"), read_pem(pki.processor.cert))],
        root_certificates=read_pem(pki.ca.cert),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", server_creds)
    server.start()
    try:

        def call(files, ca: Path) -> bytes:  # type: ignore[no-untyped-def]
            creds = grpc.ssl_channel_credentials(
                root_certificates=read_pem(ca),
                private_key=read_pem(files.key, what="TLS private key"),
                certificate_chain=read_pem(files.cert),
            )
            with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
                return channel.unary_unary("/lc.test.Who/Who")(b"", timeout=10)

        assert json.loads(call(pki.hunters["a"], pki.ca.cert)) == [
            "hunter",
            "a",
            ["URI:lc://hunter/a"],
        ]
        assert json.loads(call(pki.admin, pki.ca.cert))[0] == "admin"
        with pytest.raises(grpc.RpcError) as info:
            call(other_pki.hunters["a"], pki.ca.cert)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=None).wait(timeout=10)
