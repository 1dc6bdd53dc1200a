"""Tests for ``lc certs init`` (lc/cli/certs.py), driven through click's CliRunner."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from lc.cli.certs import certs
from lc.common.credentials import identity_from_pem, init_pki
from tests.tls_tools import issue


def run(*args: str) -> Result:
    return CliRunner().invoke(certs, list(args))


def error_of(result: Result) -> dict:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert result.stdout == ""
    return json.loads(lines[0])


def test_init_prints_sorted_json(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    result = run(
        "init", "--dir", str(d), "--hunter", "a", "--hunter", "b",
        "--processor-host", "proc.example", "--processor-host", "192.0.2.7",
        "--processor-id", "proc-9",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    # One line on stderr: where the CA key is, and that it stays on this host.
    assert result.stderr.splitlines() == [
        f"lc certs: the CA key is {d.absolute() / 'ca.key'}: ca.key signs new certificates: "
        "it stays on this host (the CA host) and is never copied; hand out ca.pem and each "
        "party's own .pem and .key only"
    ]
    out = json.loads(result.stdout)
    assert result.stdout == json.dumps(out, sort_keys=True, indent=2) + "\n"
    assert out["directory"] == str(d.absolute())
    assert out["ca"] == {"cert": str(d / "ca.pem"), "key": str(d / "ca.key"), "status": "created"}
    assert out["admin"]["status"] == "created"
    assert set(out["hunters"]) == {"a", "b"}
    for entry in [out["ca"], out["processor"], out["admin"], *out["hunters"].values()]:
        assert Path(entry["cert"]).is_file()
        assert stat.S_IMODE(Path(entry["key"]).stat().st_mode) == 0o600
    proc = identity_from_pem(Path(out["processor"]["cert"]).read_bytes())
    assert proc.common_name == "proc-9" and proc.role == "processor"
    assert {"DNS:proc.example", "IP:192.0.2.7", "DNS:localhost"} <= set(proc.sans)
    hunter = identity_from_pem(Path(out["hunters"]["b"]["cert"]).read_bytes())
    assert (hunter.common_name, hunter.role) == ("b", "hunter")


def test_rerun_reuses_and_force_reissues(tmp_path: Path) -> None:
    d = str(tmp_path / "pki")
    assert run("init", "--dir", d, "--hunter", "a").exit_code == 0
    ca_before = (tmp_path / "pki" / "ca.pem").read_bytes()
    a_before = (tmp_path / "pki" / "hunter-a.pem").read_bytes()

    again = run("init", "--dir", d, "--hunter", "a", "--hunter", "c")
    assert again.exit_code == 0, again.stderr
    out = json.loads(again.stdout)
    assert out["ca"]["status"] == "reused"
    assert out["processor"]["status"] == "reused"
    assert out["hunters"]["a"]["status"] == "reused"
    assert out["hunters"]["c"]["status"] == "created"
    assert (tmp_path / "pki" / "hunter-a.pem").read_bytes() == a_before

    forced = run("init", "--dir", d, "--hunter", "a", "--force")
    assert forced.exit_code == 0, forced.stderr
    out = json.loads(forced.stdout)
    assert out["ca"]["status"] == "reused"
    assert out["hunters"]["a"]["status"] == "created"
    assert (tmp_path / "pki" / "ca.pem").read_bytes() == ca_before
    assert (tmp_path / "pki" / "hunter-a.pem").read_bytes() != a_before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--hunter", "bad id"], "invalid hunter id 'bad id'"),
        (["--hunter", "x" * 65], "invalid hunter id"),
        (["--processor-id", "a/b"], "invalid processor id 'a/b'"),
        (["--processor-host", "not a host"], "invalid processor host 'not a host'"),
    ],
)
def test_validation_errors_exit_3_with_one_json_line(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = run("init", "--dir", str(tmp_path / "pki"), *args)
    assert result.exit_code == 3
    err = error_of(result)
    assert err["code"] == 3
    assert needle in err["error"]
    assert list(err) == ["error", "code"]


def test_new_processor_host_without_force_is_refused(tmp_path: Path) -> None:
    d = str(tmp_path / "pki")
    assert run("init", "--dir", d).exit_code == 0
    result = run("init", "--dir", d, "--processor-host", "new.example")
    assert result.exit_code == 3
    assert "--force" in error_of(result)["error"]
    assert run("init", "--dir", d, "--processor-host", "new.example", "--force").exit_code == 0


def test_missing_ca_key_exits_4(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    assert run("init", "--dir", str(d)).exit_code == 0
    (d / "ca.key").unlink()
    result = run("init", "--dir", str(d), "--hunter", "a")
    assert result.exit_code == 4
    err = error_of(result)
    assert err == {"error": f"CA private key file not found: {d / 'ca.key'}", "code": 4}


def test_garbage_ca_exits_3(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    assert run("init", "--dir", str(d)).exit_code == 0
    (d / "ca.pem").write_text("garbage\n")
    result = run("init", "--dir", str(d))
    assert result.exit_code == 3
    assert error_of(result)["error"] == f"CA certificate file is not PEM: {d / 'ca.pem'}"


def test_unwritable_directory_exits_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # A path below a regular file can never be created, whoever runs the test.
    result = run("init", "--dir", str(blocker / "pki"))
    assert result.exit_code == 1
    err = error_of(result)
    assert err["code"] == 1 and "cannot write the PKI" in err["error"]


def test_dir_is_required() -> None:
    result = run("init")
    assert result.exit_code == 2
    assert "--dir" in result.stderr


def test_help_lists_the_options() -> None:
    result = run("init", "--help")
    assert result.exit_code == 0
    for option in ("--dir", "--hunter", "--processor-host", "--processor-id", "--force"):
        assert option in result.stdout


# -- lc certs check ------------------------------------------------------------------------


def check(d: Path) -> tuple[Result, dict]:
    result = run("check", "--dir", str(d))
    assert "Traceback" not in result.output + result.stderr
    return result, json.loads(result.stdout) if result.stdout else {}


def by_file(report: dict) -> dict[str, dict]:
    return {Path(e["cert"]).name: e for e in report["certificates"]}


def test_check_of_a_fresh_directory_is_ok(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    init_pki(d, hunters=["a"])
    result, report = check(d)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert report["ok"] is True
    assert report["ca"]["problems"] == [] and report["ca"]["key"] == str(d / "ca.key")
    assert "stays on this host" in report["ca"]["note"]
    files = by_file(report)
    assert set(files) == {"admin.pem", "processor.pem", "hunter-a.pem"}
    for name, role in [("admin.pem", "admin"), ("processor.pem", "processor")]:
        assert files[name]["role"] == role and files[name]["expected_role"] == role
    a = files["hunter-a.pem"]
    assert (a["role"], a["common_name"], a["problems"], a["warnings"]) == ("hunter", "a", [], [])
    assert 800 < a["days_left"] <= 825


def test_check_names_every_problem_and_exits_1(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    other = tmp_path / "other"
    init_pki(d, hunters=["a", "b", "c"])
    init_pki(other, hunters=["a"])
    issue(d, "hunter-old", role="hunter", cn="old", start_days=-30, end_days=-1)
    issue(d, "hunter-later", role="hunter", cn="later", start_days=2, end_days=30)
    issue(d, "hunter-soon", role="hunter", cn="soon", start_days=-1, end_days=10)
    issue(d, "hunter-x", role="admin", cn="x")
    (d / "hunter-b.key").write_bytes((d / "hunter-c.key").read_bytes())  # wrong key
    (d / "hunter-a.pem").write_bytes((other / "hunter-a.pem").read_bytes())  # other CA
    (d / "hunter-a.key").write_bytes((other / "hunter-a.key").read_bytes())
    (d / "hunter-c.key").unlink()
    result, report = check(d)
    assert result.exit_code == 1
    assert report["ok"] is False
    files = by_file(report)
    problems = {name: " | ".join(e["problems"]) for name, e in files.items()}
    assert "expired on" in problems["hunter-old.pem"]
    assert "not valid before" in problems["hunter-later.pem"]
    assert problems["hunter-soon.pem"] == ""
    assert "expires in 9 days" in files["hunter-soon.pem"]["warnings"][0]
    assert "role (subject OU) is 'admin', not 'hunter'" in problems["hunter-x.pem"]
    assert "does not match the certificate" in problems["hunter-b.pem"]
    assert "not signed by this directory's CA" in problems["hunter-a.pem"]
    assert "key hunter-c.key is missing" in problems["hunter-c.pem"]
    assert problems["processor.pem"] == "" and problems["admin.pem"] == ""
    # Each problem and warning is also one line on stderr.
    lines = result.stderr.splitlines()
    assert any(x.startswith("lc certs: warning: ") and "hunter-soon.pem" in x for x in lines)
    assert sum(x.startswith("lc certs: problem: ") for x in lines) == sum(
        len(e["problems"]) for e in files.values()
    )


def test_check_of_an_expired_ca(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    init_pki(d)
    # A CA that expired: its certificate replaced by one with the same key, valid until
    # yesterday (lc certs init never makes one).
    old = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), None)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now - dt.timedelta(days=1))
    )
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    expired = builder.sign(key, hashes.SHA256())
    (d / "ca.pem").write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    result, report = check(d)
    assert result.exit_code == 1
    assert any("expired on" in p for p in report["ca"]["problems"])


def test_check_of_a_missing_directory_exits_4(tmp_path: Path) -> None:
    result = run("check", "--dir", str(tmp_path / "nope"))
    assert result.exit_code == 4
    assert "PKI directory not found" in error_of(result)["error"]


# -- lc certs add --processor -----------------------------------------------------------


def _eku(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    return {u._name for u in usages}


def test_add_processor_issues_from_the_existing_ca_and_touches_nothing_else(
    tmp_path: Path,
) -> None:
    d = tmp_path / "pki"
    init_pki(d, hunters=["h1"])
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    result = run("add", "--dir", str(d), "--processor", "edge1", "--processor-host", "e1.example")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out == {
        "cert": str(d.absolute() / "processor-edge1.pem"),
        "key": str(d.absolute() / "processor-edge1.key"),
        "processor": "edge1",
        "status": "created",
    }
    # Every file handed out before is byte for byte what it was.
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.name in before} == before
    assert set(p.name for p in d.iterdir()) - set(before) == {
        "processor-edge1.pem",
        "processor-edge1.key",
    }
    assert stat.S_IMODE((d / "processor-edge1.key").stat().st_mode) == 0o600
    ident = identity_from_pem((d / "processor-edge1.pem").read_bytes())
    assert (ident.common_name, ident.role) == ("edge1", "processor")
    assert {"DNS:e1.example", "DNS:localhost", "IP:127.0.0.1"} <= set(ident.sans)
    # A server to its hunters and a client of its upstream.
    assert _eku(d / "processor-edge1.pem") == {"serverAuth", "clientAuth"}
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    x509.load_pem_x509_certificate(
        (d / "processor-edge1.pem").read_bytes()
    ).verify_directly_issued_by(ca)
    # lc certs check knows the new file's role and name.
    report = json.loads(run("check", "--dir", str(d)).stdout)
    entry = by_file(report)["processor-edge1.pem"]
    assert entry["expected_role"] == "processor" and entry["problems"] == []
    assert report["ok"]
    # Again: reused; another host without --force is refused, with it reissued.
    again = run("add", "--dir", str(d), "--processor", "edge1", "--processor-host", "e1.example")
    assert again.exit_code == 0 and json.loads(again.stdout)["status"] == "reused"
    other = run("add", "--dir", str(d), "--processor", "edge1", "--processor-host", "e2.example")
    assert other.exit_code == 3 and "--force" in error_of(other)["error"]


def test_init_processor_certificate_is_also_a_client(tmp_path: Path) -> None:
    init_pki(tmp_path / "pki")
    assert _eku(tmp_path / "pki" / "processor.pem") == {"serverAuth", "clientAuth"}
    assert _eku(tmp_path / "pki" / "admin.pem") == {"clientAuth"}


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--processor", "a/b", "--processor-host", "x.example"], 3, "invalid processor id"),
        (["--processor", "e1", "--processor-host", "not a host"], 3, "invalid processor host"),
    ],
)
def test_add_refuses_bad_names(tmp_path: Path, args: list[str], code: int, words: str) -> None:
    d = tmp_path / "pki"
    init_pki(d)
    result = run("add", "--dir", str(d), *args)
    assert result.exit_code == code
    assert words in error_of(result)["error"]


def test_add_without_a_ca_exits_4_naming_init(tmp_path: Path) -> None:
    result = run(
        "add", "--dir", str(tmp_path / "none"), "--processor", "e1", "--processor-host", "x"
    )
    assert result.exit_code == 4
    assert "lc certs init" in error_of(result)["error"]


def test_add_metrics_issues_a_server_only_certificate_and_touches_nothing_else(
    tmp_path: Path,
) -> None:
    # lc hunt --metrics-tls needs a server certificate (a hunter's is a client's): lc
    # certs could not make one, short of a processor certificate on a sensor.
    d = tmp_path / "pki"
    init_pki(d, hunters=["sensor1"])
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    result = run("add", "--dir", str(d), "--metrics", "sensor1", "--metrics-host", "s1.example")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "metrics": {
            "name": "sensor1",
            "cert": str(d.absolute() / "metrics-sensor1.pem"),
            "key": str(d.absolute() / "metrics-sensor1.key"),
            "status": "created",
        }
    }
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.name in before} == before
    assert {p.name for p in d.iterdir()} - set(before) == {
        "metrics-sensor1.pem",
        "metrics-sensor1.key",
    }
    assert stat.S_IMODE((d / "metrics-sensor1.key").stat().st_mode) == 0o600
    ident = identity_from_pem((d / "metrics-sensor1.pem").read_bytes())
    assert (ident.common_name, ident.role) == ("sensor1", "metrics")  # no lc role
    assert {"DNS:s1.example", "DNS:localhost", "IP:127.0.0.1"} <= set(ident.sans)
    assert _eku(d / "metrics-sensor1.pem") == {"serverAuth"}  # never a client
    report = json.loads(run("check", "--dir", str(d)).stdout)
    entry = by_file(report)["metrics-sensor1.pem"]
    assert entry["expected_role"] == "metrics" and entry["problems"] == [] and report["ok"]
    again = run("add", "--dir", str(d), "--metrics", "sensor1", "--metrics-host", "s1.example")
    assert again.exit_code == 0 and json.loads(again.stdout)["metrics"]["status"] == "reused"
    for args, words in (
        (["--metrics", "sensor1"], "--metrics-host"),
        (["--metrics-host", "s1.example"], "--metrics NAME"),
        (["--metrics", "a/b", "--metrics-host", "x.example"], "invalid metrics certificate id"),
        (["--metrics", "m", "--metrics-host", "not a host"], "invalid metrics host"),
    ):
        bad = run("add", "--dir", str(d), *args)
        assert bad.exit_code == 3 and words in error_of(bad)["error"], (args, bad.stderr)


# -- lc certs add --hunter --------------------------------------------------------------


def test_add_hunter_issues_from_the_existing_ca_and_touches_nothing_else(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    init_pki(d, hunters=["h1"], processor_hosts=["proc.example"])
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    # No --processor-host needed: adding a sensor does not concern the processor.
    result = run("add", "--dir", str(d), "--hunter", "h2", "--hunter", "h3", "--hunter", "h1")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out == {
        "hunters": {
            hid: {
                "cert": str(d.absolute() / f"hunter-{hid}.pem"),
                "key": str(d.absolute() / f"hunter-{hid}.key"),
                "status": "reused" if hid == "h1" else "created",
            }
            for hid in ("h2", "h3", "h1")
        }
    }
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.name in before} == before
    assert {p.name for p in d.iterdir()} - set(before) == {
        "hunter-h2.pem", "hunter-h2.key", "hunter-h3.pem", "hunter-h3.key",
    }  # fmt: skip
    assert stat.S_IMODE((d / "hunter-h2.key").stat().st_mode) == 0o600
    ident = identity_from_pem((d / "hunter-h2.pem").read_bytes())
    assert (ident.common_name, ident.role) == ("h2", "hunter")
    assert _eku(d / "hunter-h2.pem") == {"clientAuth"}
    # The same certificate lc certs init would have made: lc certs check agrees.
    report = json.loads(run("check", "--dir", str(d)).stdout)
    assert by_file(report)["hunter-h2.pem"]["problems"] == [] and report["ok"]
    # Both at once: one JSON object with the processor's files and the hunters'.
    both = run("add", "--dir", str(d), "--processor", "e1", "--processor-host", "e1.x",
               "--hunter", "h4")  # fmt: skip
    assert both.exit_code == 0, both.stderr
    both_out = json.loads(both.stdout)
    assert both_out["processor"] == "e1" and both_out["hunters"]["h4"]["status"] == "created"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "give --processor NAME --processor-host HOST and/or --hunter ID"),
        (["--hunter", "a/b"], "invalid hunter id"),
        (["--processor-host", "x.example", "--hunter", "h2"], "give it"),
    ],
)
def test_add_hunter_refusals_exit_3(tmp_path: Path, args: list[str], words: str) -> None:
    d = tmp_path / "pki"
    init_pki(d)
    result = run("add", "--dir", str(d), *args)
    assert result.exit_code == 3
    assert words in error_of(result)["error"]


def test_add_hunter_without_a_ca_exits_4_naming_init(tmp_path: Path) -> None:
    result = run("add", "--dir", str(tmp_path / "none"), "--hunter", "h1")
    assert result.exit_code == 4
    assert "lc certs init" in error_of(result)["error"]
