"""``lc hunt`` as a user runs it: flags refused before any use, and honest endings.

Real ``lc`` processes (no mocks); where a processor is needed it is a real one.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import LC, ROOT, lc_env, run_lc, start_hunter, tls_args
from tests.e2e.test_delivery import free_port, hunter_info, make_capture, wait_for


def hunt(tmp: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LC, "hunt", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=lc_env(),
        cwd=tmp,
    )


def capture(tmp: Path, n: int = 5) -> Path:
    path = tmp / "a.pcap"
    make_capture(path, n, rate=1e3)
    return path


# -- item 7: --id is validated before it becomes a path -------------------------------------


@pytest.mark.parametrize("bad", ["../escaped", "ABS", "a/b", "..", "", "x" * 65, "bad id"])
def test_an_invalid_id_is_refused_before_the_disk_buffer_uses_it(tmp_path, bad):
    work = tmp_path / "work"
    work.mkdir()
    cap = capture(tmp_path)
    if bad == "ABS":
        bad = str(tmp_path / "abs")
    r = hunt(
        work, "--processor", f"127.0.0.1:{free_port()}", "--insecure", "--id", bad,
        "-r", str(cap), "--disk-buffer", "--shutdown-timeout", "0", "--connect-timeout", "1",
    )  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert "--id" in r.stderr and "invalid hunter id" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    # Nothing was created anywhere from the id: not ./lc-spool/.., not ../escaped, not /abs.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pcap", "work"]
    assert list(work.iterdir()) == []


def test_a_valid_id_names_the_default_spool_directory(tmp_path):
    cap = capture(tmp_path)
    r = hunt(
        tmp_path, "--processor", f"127.0.0.1:{free_port()}", "--insecure", "--id", "sensor-1.a",
        "-r", str(cap), "--disk-buffer", "--shutdown-timeout", "0", "--connect-timeout", "1",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "lc-spool" / "sensor-1.a" / "spool.lock").exists()


# -- item 12: say what really happened ------------------------------------------------------


def test_a_replay_stopped_by_sigint_says_so_and_exits_non_zero(tmp_path, pki, processor):
    cap = tmp_path / "slow.pcap"
    make_capture(cap, 3000, rate=300)  # 10 s at --replay-speed 1
    h = start_hunter(processor.addr, pki, "h1", "-r", str(cap), "--replay-speed", "1",
                     "--heartbeat-interval", "0.5")  # fmt: skip
    try:
        wait_for(
            lambda: int((hunter_info(processor, pki, "h1") or {}).get("counters", {})
                        .get("captured", 0)) > 100,
            20, "the replay to be under way",
        )  # fmt: skip
        h.send_signal(signal.SIGINT)
        out, err = h.communicate(timeout=30)
    finally:
        if h.poll() is None:
            h.kill()
    assert h.returncode == 130, (out, err)
    assert f"lc hunt: replay of {cap} was interrupted by SIGINT: " in out, out
    assert f"lc hunt: error: the replay of {cap} was interrupted by SIGINT" in err, err
    n = int(out.split("interrupted by SIGINT: ")[1].split(" packets")[0])
    assert 100 < n < 3000
    # What was read is delivered all the same.
    assert f"acknowledged {n}," in out and "unacknowledged 0" in out, out


def test_a_full_disk_buffer_says_so_once_and_is_named_as_the_cause(tmp_path):
    cap = capture(tmp_path, 8000)  # ~1.8 MB of packets, into a 1 MB spool
    r = hunt(
        tmp_path, "--processor", f"127.0.0.1:{free_port()}", "--insecure", "--id", "h",
        "-r", str(cap), "--disk-buffer", "--disk-buffer-max-mb", "1",
        "--shutdown-timeout", "1", "--connect-timeout", "1",
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("is full") == 1, r.stderr  # when dropping starts, once
    dropped = int(r.stdout.split(" packets dropped (full)")[0].rsplit(" ", 1)[1])
    assert 0 < dropped < 8000
    assert (
        f"lc hunt: error: {dropped} packets (" in r.stderr
        and "dropped: the disk buffer" in r.stderr
        and "was full (--disk-buffer-max-mb 1)" in r.stderr
    ), r.stderr
    assert "shutdown timeout" not in r.stderr  # not the cause: nothing waited for acks
    assert f"dropped {dropped} (spool_full {dropped})" in r.stdout, r.stdout


@pytest.mark.parametrize("command", [["process", "--listen", "127.0.0.1:0"], ["hunt", "-r", "x"]])
def test_tls_values_from_the_environment_are_named_as_such(tmp_path, command):
    env = lc_env(LC_TLS_CERT="admin.pem", LC_TLS_KEY="admin.key", LC_PROCESSOR="127.0.0.1:1")
    r = subprocess.run([*LC, *command, "--insecure", "--tls-ca", "ca.pem"], capture_output=True,
                       text=True, timeout=60, env=env, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert (
        "--insecure cannot be combined with --tls-ca, or with LC_TLS_CERT, LC_TLS_KEY from the "
        "environment (unset them, or drop --insecure)"
    ) in r.stderr, r.stderr


@pytest.mark.parametrize("policy", ["deny", "allow"])
def test_voip_without_any_filter_says_why_nothing_was_forwarded(tmp_path, pki, processor, policy):
    sip = ROOT / "captures" / "sip-call.pcap"
    args = [] if policy == "deny" else ["--no-filter-policy", "allow"]
    r = run_lc("hunt", "voip", "--processor", processor.addr, *tls_args(pki, "hunter-h1"),
               "-r", str(sip), *args)  # fmt: skip
    assert r.returncode == 0, r.stderr
    hint = "no filter applied and --no-filter-policy deny: nothing forwarded"
    if policy == "deny":
        assert "forwarded 0," in r.stdout and hint in r.stdout, r.stdout
    else:
        assert "forwarded 0," not in r.stdout and hint not in r.stdout, r.stdout


def test_local_filters_are_filters_for_the_no_filter_hint(tmp_path, pki, processor):
    # lc hunt email --sender (a local filter, no pushed one): the summary must not say
    # that no filter applied (it did: the session of that sender was forwarded).
    from tests.hunter.test_voip import CORPUS, need_corpus

    need_corpus()
    r = run_lc("hunt", "email", "--processor", processor.addr, *tls_args(pki, "hunter-h1"),
               "-r", str(CORPUS / "smtp/zeek_smtp.pcap"),
               "--sender", "gurpartap@patriots.in")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "forwarded 0," not in r.stdout, r.stdout
    assert "no filter applied" not in r.stdout, r.stdout
    # A sender nobody used: nothing forwarded, and still no "no filter" hint.
    r = run_lc("hunt", "email", "--processor", processor.addr, *tls_args(pki, "hunter-h1"),
               "-r", str(CORPUS / "smtp/zeek_smtp.pcap"),
               "--sender", "nobody@nowhere.test")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "forwarded 0," in r.stdout and "no filter applied" not in r.stdout, r.stdout


def test_a_second_sigint_gives_up_waiting_for_acks_says_what_it_left_and_exits_130(tmp_path, pki):
    from tests.conftest import start_processor

    p = start_processor(tmp_path, tls_args(pki, "processor"))
    cap = tmp_path / "a.pcap"
    make_capture(cap, 6000, rate=300)  # 20 s at --replay-speed 1
    h = start_hunter(p.addr, pki, "h1", "-r", str(cap), "--replay-speed", "1",
                     "--shutdown-timeout", "300", "--heartbeat-interval", "0.5")  # fmt: skip
    try:
        wait_for(
            lambda: int((hunter_info(p, pki, "h1") or {}).get("counters", {})
                        .get("captured", 0)) > 300,
            30, "the replay to be under way",
        )  # fmt: skip
        p.proc.send_signal(signal.SIGSTOP)  # no acknowledgement comes any more
        time.sleep(1.0)  # what is read meanwhile waits for one
        h.send_signal(signal.SIGINT)  # stop reading, wait for the acknowledgements...
        time.sleep(1.0)
        h.send_signal(signal.SIGINT)  # ...no: give up on them
        out, err = h.communicate(timeout=60)
    finally:
        if h.poll() is None:
            h.kill()
        p.proc.send_signal(signal.SIGCONT)
        p.stop()
    assert h.returncode == 130, (out, err)
    assert "Traceback" not in err, (out, err)
    assert "lc hunt: error: a second SIGINT gave up on " in err, (out, err)
    left = int(err.split("gave up on ")[1].split(" unacknowledged")[0])
    assert left > 0
    assert "was interrupted by SIGINT" in out and f"unacknowledged {left}" in out, out
