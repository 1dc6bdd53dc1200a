"""``lc watch`` against a real processor and real hunters: in a real terminal (tmux), the
figures on the screen are those of ``lc show status`` / ``lc list hunters``, ``q`` exits
0 and gives the terminal back; without a terminal, one JSON snapshot per line."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import LC, ROOT, lc_env, need, run_lc, start_hunter, tls_args

PCAP = ROOT / "captures" / "sip-call.pcap"
HOSTILE_NAME = "[red]x\x1b[2J.pcap"  # a replayed file's name reaches the processor


def admin(processor, pki, *args: str) -> object:
    r = run_lc(*args, "--processor", processor.addr, *tls_args(pki, "admin"))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def replay(processor, pki, path: Path) -> None:
    r = run_lc("hunt", "--processor", processor.addr, *tls_args(pki, "hunter-h1"), "-r", str(path))
    assert r.returncode == 0, r.stderr


class Tmux:
    """A tmux server of its own (its own socket), one window running bash."""

    def __init__(self, tmp: Path) -> None:
        self.sock = str(tmp / f"tmux-{uuid.uuid4().hex[:8]}")
        self.env = lc_env(TERM="xterm-256color")
        self.env.pop("TMUX", None)
        self("new-session", "-d", "-s", "w", "-x", "220", "-y", "50",
             "bash --norc --noprofile")  # fmt: skip

    def __call__(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True, text=True,
                           env=self.env, timeout=20)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout

    def type(self, line: str) -> None:
        self("send-keys", "-t", "w", "-l", line)
        self("send-keys", "-t", "w", "Enter")

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "w")

    def alternate(self) -> bool:
        return self("display-message", "-p", "-t", "w", "#{alternate_on}").strip() == "1"

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.sock, "kill-server"], capture_output=True, timeout=20)


def _row(screen: str, first: str) -> list[str]:
    for line in screen.splitlines():
        if line.startswith(first + " "):
            return line.split()
    raise AssertionError(f"no row for {first!r} on the screen:\n{screen}")


@pytest.mark.e2e
@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
def test_watch_in_a_real_terminal(tmp_path, pki, processor):
    need("tmux")
    # A hunter that has finished (a replayed file with a hostile name) ...
    hostile = tmp_path / HOSTILE_NAME
    shutil.copy(PCAP, hostile)
    replay(processor, pki, hostile)
    # ... and one that is capturing on lo, sent 37 datagrams on a port of its own.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    live = start_hunter(processor.addr, pki, "live", "-i", "lo", "-f", f"udp port {port}",
                        "--batch-timeout", "20", "--heartbeat-interval", "0.5")  # fmt: skip
    term = Tmux(tmp_path)
    try:
        wait_for(
            lambda: any(
                h["hunter_id"] == "live" and h["state"] == "connected"
                and h["last_heartbeat_ns"] > 0
                for h in admin(processor, pki, "list", "hunters")
            ),
            30, "the live hunter capturing",
        )  # fmt: skip

        def send(n: int) -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                for i in range(n):
                    u.sendto(b"lc watch %d" % i, ("127.0.0.1", port))

        send(37)
        status = {}

        def settled() -> bool:  # the live hunter's 37 packets written, nothing moving
            hunters = {h["hunter_id"]: h for h in admin(processor, pki, "list", "hunters")}
            status.update(admin(processor, pki, "show", "status"))
            return hunters["live"]["packets_received"] == 37 and status["packets_written"] == (
                hunters["live"]["packets_received"] + hunters["h1"]["packets_received"]
            )

        wait_for(settled, 30, "37 packets from the live hunter written")
        args = [*LC, "watch", "--processor", processor.addr, *tls_args(pki, "admin")]
        term.type(f"cd {shlex.quote(str(ROOT))}; {shlex.join(args)}; echo watch-exit=$?")

        def shows(status: dict) -> bool:
            screen = term.screen()
            return f"written {status['packets_written']:,} pkts" in screen and "live" in screen

        wait_for(lambda: shows(status), 30, "lc watch on the screen")
        assert term.alternate()  # full screen, on the alternate screen
        screen = term.screen()
        hunters = {h["hunter_id"]: h for h in admin(processor, pki, "list", "hunters")}
        assert f"hunters {status['hunters_connected']} connected" in screen, screen
        assert f"{status['hunters_total']} known" in screen, screen
        row = _row(screen, "live")
        assert row[1:3] == ["connected", "generic"] and row[3] == "lo", row
        assert f"{hunters['live']['packets_received']:,}" in row, (row, hunters["live"])
        h1 = _row(screen, "h1")
        assert h1[1] == "disconnected", h1
        assert f"{hunters['h1']['packets_received']:,}" in h1, (h1, hunters["h1"])
        # The file name as typed: markup not read, the escape shown, not obeyed.
        assert "file:[red]x\\x1b[2J.pcap" in screen, screen
        assert "no call index" in screen and "Recent alerts (0)" in screen
        # It refreshes: 50 more datagrams, and the screen follows the processor.
        send(50)
        wait_for(
            lambda: admin(processor, pki, "show", "status")["packets_written"]
            == status["packets_written"] + 50,
            30, "50 more packets written",
        )  # fmt: skip
        status = admin(processor, pki, "show", "status")
        wait_for(lambda: shows(status), 10, "the new figures on the screen")
        assert f"{87:,}" in _row(term.screen(), "live")
        # q: exit 0, the normal screen back, the terminal's modes as before.
        term("send-keys", "-t", "w", "q")
        exited = re.compile(r"^watch-exit=(\d+)$", re.M)
        wait_for(lambda: exited.search(term.screen()), 10, "lc watch to exit")
        assert exited.search(term.screen()).group(1) == "0", term.screen()
        assert not term.alternate()
        # Ctrl-C quits the same way.
        term.type(f"clear; {shlex.join(args)}; echo watch-exit=$?")
        wait_for(lambda: shows(status), 30, "lc watch on the screen again")
        term("send-keys", "-t", "w", "C-c")
        wait_for(lambda: exited.search(term.screen()), 10, "lc watch to exit on Ctrl-C")
        assert exited.search(term.screen()).group(1) == "0", term.screen()
        assert not term.alternate()
        term.type("stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo -e -icanon -e -echo")
        wait_for(lambda: re.search(r"^icanon\s+^echo\s", term.screen(), re.M) is not None,
                 10, "stty's answer")  # fmt: skip
    finally:
        term.kill()
        live.send_signal(signal.SIGTERM)
        live.communicate(timeout=60)


@pytest.mark.e2e
def test_watch_without_a_terminal_prints_json_lines(tmp_path, pki, processor):
    replay(processor, pki, PCAP)
    status = admin(processor, pki, "show", "status")
    hunters = admin(processor, pki, "list", "hunters")
    # The admin certificate from the environment, as for the other admin commands.
    cert, key, ca = tls_args(pki, "admin")[1::2]
    env = lc_env(LC_PROCESSOR=processor.addr, LC_TLS_CERT=cert, LC_TLS_KEY=key, LC_TLS_CA=ca)
    t0 = time.monotonic()
    r = subprocess.run([*LC, "watch", "--interval", "0.3", "--count", "3"],
                       capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert time.monotonic() - t0 >= 0.6  # three polls, 0.3 s apart
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and "\x1b" not in r.stdout
    snaps = [json.loads(line) for line in lines]
    for snap in snaps:
        assert set(snap) == {"time", "processor", "hunters", "calls", "alerts"}
        p = snap["processor"]
        assert p["packets_written"] == status["packets_written"] > 0
        assert p["bytes_written"] == status["bytes_written"]
        assert p["id"] == status["processor_id"] and snap["calls"] is None
        (h,) = snap["hunters"]
        assert h["hunter_id"] == "h1" and h["state"] == hunters[0]["state"]
        assert h["packets_received"] == hunters[0]["packets_received"]
        assert h["captured"] == hunters[0]["counters"]["captured"]
    assert snaps[0]["processor"]["packets_per_second"] is None  # no earlier poll
    assert snaps[1]["processor"]["packets_per_second"] == 0.0  # nothing new since
    assert snaps[2]["hunters"][0]["packets_per_second"] == 0.0
    # A reader that goes away ends it quietly, exit 0; so does SIGTERM.
    p = subprocess.Popen([*LC, "watch", "--interval", "0.1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)  # fmt: skip
    assert json.loads(p.stdout.readline())["processor"]["packets_written"] > 0
    p.stdout.close()
    assert p.wait(timeout=20) == 0 and p.stderr.read() == b""
    p = subprocess.Popen([*LC, "watch", "--interval", "0.1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)  # fmt: skip
    p.stdout.readline()
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 0 and p.stderr.read() == b""
    p.stdout.close()
    # Not an admin certificate: refused at once, as the admin commands are.
    r = run_lc("watch", "--processor", processor.addr, *tls_args(pki, "hunter-h1"))
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert "admin" in json.loads(r.stderr)["error"], r.stderr
    # The processor going away: a line saying why, and it keeps trying.
    p = subprocess.Popen([*LC, "watch", "--interval", "0.2"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, text=True)  # fmt: skip
    try:
        assert "error" not in json.loads(p.stdout.readline())
        processor.stop()
        errors = []
        while len(errors) < 2:
            line = json.loads(p.stdout.readline())
            if "error" in line:
                errors.append(line)
        assert set(errors[0]) == {"time", "error"}
        assert processor.addr in errors[0]["error"], errors
        # in the words lc uses at start, not gRPC's "failed to connect to all addresses; ..."
        port = processor.addr.rpartition(":")[2]
        assert errors[-1]["error"] == (
            f"cannot reach processor at {processor.addr}: connection refused "
            f"(is a processor listening on port {port}?)"
        ), errors
        assert p.poll() is None
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
    assert p.returncode == 0
