"""Tests for ``lc certs init`` (lc/cli/certs.py), driven through click's CliRunner."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from lc.cli.certs import certs
from lc.common.credentials import identity_from_pem


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
    assert result.stderr == ""
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
