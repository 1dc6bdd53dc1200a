"""The CLI's contract: help for every command, documented in the README, exit codes."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
from click.testing import CliRunner

from lc.cli.main import cli
from tests.conftest import ROOT, run_lc

COMMANDS = [
    ("hunt",),
    ("process",),
    ("certs", "init"),
    ("certs", "check"),
    ("list", "hunters"),
    ("show", "status"),
    ("show", "hunter"),
    ("set", "filter"),
    ("rm", "filter"),
    ("list", "filters"),
    ("show", "filter"),
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_has_help_and_is_in_the_readme(cmd):
    r = CliRunner().invoke(cli, [*cmd, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"`lc {' '.join(cmd)}\b", readme), f"lc {' '.join(cmd)} not in README"


def test_usage_errors_exit_3_not_2():
    # 2 is reserved for connection failures.
    r = run_lc("hunt", "--no-such-flag")
    assert r.returncode == 3, r.stderr
    assert "No such option" in r.stderr
    r = run_lc("hunt", "--processor", "x:1", "--insecure", "--batch-size", "many")
    assert r.returncode == 3


def test_validation_errors_name_the_problem():
    r = run_lc("hunt", "--processor", "127.0.0.1:1", "--insecure")
    assert r.returncode == 3
    assert "either -i/--interface (live) or -r/--read-file" in r.stderr
    r = run_lc("hunt", "--processor", "127.0.0.1:1", "--insecure", "--tls-ca", "x", "-r", "f")
    assert r.returncode == 3 and "--insecure cannot be combined with --tls-ca" in r.stderr
    # each flag named alone: "--breaker-open-time and --shutdown-timeout" blamed both
    r = run_lc("hunt", "--processor", "127.0.0.1:1", "--insecure", "-r", "f",
               "--shutdown-timeout", "-1")  # fmt: skip
    assert r.returncode == 3 and "lc hunt: error: --shutdown-timeout must be >= 0\n" in r.stderr
    r = run_lc("process", "--insecure", "--rotate-size", "lots")
    assert r.returncode == 3 and "--rotate-size" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("target", ["localhost:abc", ":55555", "nohostport", "localhost:0"])
def test_a_malformed_processor_address_fails_at_once_naming_the_flag(target):
    # It used to wait the whole connect timeout and say "cannot reach processor" (exit 2).
    sample = str(ROOT / "captures" / "sip-call.pcap")
    want = f"--processor must be HOST:PORT (port 1-65535), got {target!r}"
    for args in (
        ["hunt", "--processor", target, "--insecure", "-r", sample, "--connect-timeout", "30"],
        ["list", "hunters", "--processor", target, "--insecure"],
        ["watch", "--processor", target, "--insecure", "--count", "1"],
    ):
        t0 = time.monotonic()
        r = run_lc(*args, timeout=20)
        assert r.returncode == 3, (args, r.stderr)
        assert want in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert time.monotonic() - t0 < 10, args  # before any connection attempt


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["filter", "set", "--type", "sip_user"], "lc set filter, lc list filters"),
        (["filters"], "lc set filter, lc list filters"),
        (["hunters"], "lc list hunters, lc show hunter --id ID"),
        (["status"], "lc show status"),
        (["delete", "filter", "--id", "x"], "did you mean 'lc rm'?"),
        (["ls", "hunters"], "did you mean 'lc list'?"),
    ],
)
def test_a_noun_first_or_unknown_verb_names_the_real_commands(args, hint):
    r = run_lc(*args)
    assert r.returncode == 3, r.stderr
    assert f"No such command {args[0]!r}" in r.stderr and hint in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_listen_address_that_cannot_be_bound_says_why(tmp_path):
    # It said "address in use or not available" for a name that does not resolve too.
    common = ("process", "--insecure", "--data-dir", str(tmp_path / "d"), "--listen")
    r = run_lc(*common, "nosuchhost.invalid:55555", timeout=60)
    assert r.returncode == 1, r.stderr
    assert "cannot listen on nosuchhost.invalid:55555: cannot resolve nosuchhost.invalid" in (
        r.stderr
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = f"127.0.0.1:{s.getsockname()[1]}"
        r = run_lc(*common, taken, timeout=60)
    assert r.returncode == 1, r.stderr
    assert f"lc process: error: cannot listen on {taken}: Address already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_admin_commands_without_a_processor_name_the_flag_and_the_variable():
    for args in (["list", "hunters"], ["set", "filter", "--type", "bpf", "--pattern", "udp"],
                 ["watch", "--count", "1"]):  # fmt: skip
        r = run_lc(*args, "--insecure")  # lc_env(): no LC_* variable
        assert r.returncode == 3, r.stderr
        assert json.loads(r.stderr) == {
            "code": 3,
            "error": "missing --processor HOST:PORT (or LC_PROCESSOR in the environment)",
        }


def test_version():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and "lc" in r.output


def test_hunt_voip_refuses_bad_flags_with_one_clear_line():
    from tests.conftest import run_lc

    base = ["hunt", "voip", "--insecure", "--processor", "127.0.0.1:1", "-r", "x.pcap"]
    for extra, text in (
        (["--sip-port", "abc"], "--sip-port 'abc'"),
        (["--sip-port", "70000"], "ports are 1-65535"),
        (["--rtp-port-range", "5-2"], "--rtp-port-range '5-2'"),
        (["--call-grace", "0"], "--call-grace must be positive"),
        (["--max-calls", "0"], "--max-calls must be at least 1"),
    ):
        r = run_lc(*base, *extra)
        assert r.returncode == 3, (extra, r.stderr)
        assert text in r.stderr and "Traceback" not in r.stderr
    r = run_lc("hunt", "--insecure", "voip", "-r", "x.pcap")
    assert r.returncode == 3 and "options go after the mode" in r.stderr


def test_an_unusable_output_is_refused_at_start(tmp_path):
    """Issue 9 item 5: `-w /proc/x.pcap` started normally and failed at the first batch."""
    data = str(tmp_path / "data")
    common = ("process", "--insecure", "--listen", "127.0.0.1:0", "--data-dir", data)
    r = run_lc(*common, "-w", "/proc/x.pcap", timeout=30)
    assert r.returncode == 3, r.stderr
    assert "-w: cannot create files in /proc" in r.stderr and "Traceback" not in r.stderr
    r = run_lc(*common, "--events-dir", "/proc/lc-events", timeout=30)
    assert r.returncode == 3 and "--events-dir" in r.stderr, r.stderr
    r = run_lc(*common, "--no-events", "--events-dir", str(tmp_path / "ev"), timeout=30)
    assert r.returncode == 3 and "--no-events" in r.stderr, r.stderr
    r = run_lc(*common, "--events-rotate-size", "lots", timeout=30)
    assert r.returncode == 3 and "--events-rotate-size" in r.stderr, r.stderr


def test_grpc_log_default_inherited_from_lc_is_not_the_users_choice() -> None:
    """A process started by one that imported lc.cli.main (a test run, a script) inherits
    lc's GRPC_VERBOSITY=NONE: that must not count as the user's own gRPC log setting,
    or `lc process` stops reporting failed TLS handshakes (it did, in a full test run)."""
    import os
    import subprocess
    import sys

    probe = "import lc.cli.main as m; print(m._USER_GRPC_LOG)"

    def user_log(**env: str) -> str:
        base = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_")}
        r = subprocess.run(
            [sys.executable, "-c", probe], env={**base, **env}, capture_output=True, text=True
        )
        return r.stdout.strip()

    assert user_log() == "False"
    inherited = subprocess.run(
        [sys.executable, "-c", "import lc.cli.main, os; print(os.environ['GRPC_VERBOSITY'])"],
        env={k: v for k, v in os.environ.items() if not k.startswith("GRPC_")},
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert inherited == "NONE"
    assert user_log(GRPC_VERBOSITY="NONE", GRPC_VERBOSITY_SET_BY_LC="1") == "False"
    assert user_log(GRPC_VERBOSITY="NONE") == "True"
    assert user_log(GRPC_VERBOSITY="debug", GRPC_VERBOSITY_SET_BY_LC="1") == "True"


def test_an_empty_local_filter_list_is_refused_and_an_absent_one_is_not(tmp_path):
    # `--command ''` was taken as no filter at all, silently; a flag left out is no filter.
    base = ("--processor", "127.0.0.1:1", "--insecure", "-r", str(tmp_path / "none.pcap"))
    r = run_lc("hunt", "email", *base, "--command", " , ")
    assert r.returncode == 3, r.stderr
    assert "--command ' , ': no pattern given" in r.stderr
    r = run_lc("hunt", "http", *base, "--host", "")
    assert r.returncode == 3 and "--host '': no pattern given" in r.stderr
    for mode in ("http", "email"):
        r = run_lc("hunt", mode, *base)  # no local filter flag: only the missing file
        assert r.returncode != 0 and "no pattern given" not in r.stderr, r.stderr
        assert "capture file not found" in r.stderr


def test_hunt_http_refuses_tls_keylog_with_insecure(tmp_path) -> None:
    """TLS keys travel only over the mTLS link: --tls-keylog with --insecure (plaintext,
    unauthenticated) is refused before anything is read or sent, naming both flags."""
    keys = tmp_path / "keys.txt"
    keys.write_text("CLIENT_RANDOM " + "ab" * 32 + " " + "cd" * 48 + "\n")
    cap = ROOT / "tests" / "data" / "no-such.pcap"  # never opened: refused first
    r = run_lc("hunt", "http", "--tls-keylog", str(keys), "--processor", "127.0.0.1:1",
               "--insecure", "-r", str(cap), timeout=60)  # fmt: skip
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "--tls-keylog" in r.stderr and "--insecure" in r.stderr
    assert "CLIENT_RANDOM" not in r.stderr + r.stdout
