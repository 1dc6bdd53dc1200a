"""``lc hunt -r``'s progress bar: on a terminal (a pty as stderr) it is drawn, with the
replay's figures; in a pipe there is none, and the summary line on stdout never has one."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading

import pytest

from tests.conftest import LC, ROOT, lc_env, tls_args

PCAP = ROOT / "captures" / "sip-call.pcap"
SUMMARY = re.compile(r"^lc hunt: replayed \S+: (\d+) packets \((\d+) bytes\) in [\d.]+ s .*$")


def _hunt(processor, pki, mode: list[str], stderr_tty: bool) -> tuple[int, str, str]:
    """Run `lc -v hunt [MODE] -r PCAP`; its stderr a pty (200 columns) or a pipe."""
    args = [*LC, "-v", "hunt", *mode, "--processor", processor.addr, *tls_args(pki, "hunter-h1")]
    args += ["-r", str(PCAP), "--no-filter-policy", "allow"]
    env = lc_env(TERM="xterm-256color")
    if not stderr_tty:
        r = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
        return r.returncode, r.stdout, r.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the last holder of the slave side closed it
                return
            if not data:
                return
            chunks.append(data)

    t = threading.Thread(target=drain)
    t.start()
    try:
        p = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env
        )
        os.close(slave)
        out, _ = p.communicate(timeout=120)
    finally:
        t.join(10)
        os.close(master)
    return p.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


@pytest.mark.e2e
@pytest.mark.parametrize("mode", [[], ["voip"]], ids=["generic", "voip"])
def test_bar_on_a_terminal_with_the_replays_figures(processor, pki, mode):
    code, out, err = _hunt(processor, pki, mode, stderr_tty=True)
    assert code == 0, err
    # stdout: the summary line alone, no bar and no terminal control in it.
    m = SUMMARY.match(out.rstrip("\n"))
    assert m and out.count("\n") == 1 and "\x1b" not in out, out
    packets = int(m.group(1))
    # stderr (the terminal): the bar, drawn by rich, ending at the whole file.
    assert "\x1b[" in err and "━" in err, err
    assert "sip-call.pcap" in err and "/captures/" not in err and "100%" in err, err
    done = re.search(r"(\d+\.\d)/(\d+\.\d) kB", err.split("100%")[-1])
    assert done and done.group(1) == done.group(2) == f"{PCAP.stat().st_size / 1e3:.1f}", err
    assert f"{packets:,} pkts" in err and "ETA" in err, err
    assert re.search(r"[1-9][\d,]* pkt/s", err), err  # a rate, also once read
    assert "0/1 bytes" not in err  # the first drawing has the file's size already
    # Log lines come out whole, above the bar rather than through it.
    assert re.search(r"INFO lc\.hunter\.run: hunter h1 registered with processor", err), err


@pytest.mark.e2e
def test_no_bar_when_stderr_is_not_a_terminal(processor, pki):
    code, out, err = _hunt(processor, pki, [], stderr_tty=False)
    assert code == 0, err
    assert SUMMARY.match(out.rstrip("\n")) and out.count("\n") == 1, out
    assert "\x1b" not in err and "━" not in err and "pkts" not in err and "ETA" not in err, err
    assert "registered with processor" in err  # the logs are there, plainly


@pytest.mark.e2e
def test_a_paced_replay_moves_the_bar_with_its_packets(processor, pki):
    """--replay-speed releases each chunk read (256 packets) over its capture time: the
    bar follows the packets released, not the chunk read ahead (sip-call.pcap read in 6
    chunks showed 6 positions, each for seconds, with the ETA standing still)."""
    code, out, err = _hunt(processor, pki, ["--replay-speed", "4"], stderr_tty=True)
    assert code == 0, err
    assert SUMMARY.match(out.rstrip("\n")), out
    total = f"{PCAP.stat().st_size / 1e3:.1f}"
    reading = err.split("waiting for acks")[0]
    shown = {float(x) for x in re.findall(rf"(\d+\.\d)/{re.escape(total)} kB", reading)}
    assert len(shown) >= 12, sorted(shown)  # ~7 s drawn 4 times a second
    assert max(shown) <= float(total)
