"""Every ``sh`` block of the README, run as written (issue 9, item 11).

The quick start and the filter commands run in one shell, in their own network and mount
namespace (``unshare``, as root): ``eth0`` is a veth there, ``collector.example.net`` is
127.0.0.1 in a private ``/etc/hosts``, so port 55555 and the names are the README's own.
The only changes are around the commands, never in them: ``lc process`` and ``lc hunt``
run in the background (a reader gives each its own terminal), and the test waits until
each is up. Traffic on ``eth0`` then checks the quick start's capture filter: SIP over
UDP and TCP is written, other UDP is not (``udp or tcp port 5060`` used to take every
UDP packet).

``make install && make demo`` runs as written; ``make test`` only as ``make -n test``:
running the suite from inside itself would recurse.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap

import pytest

from tests.conftest import ROOT, lc_env, need

README = ROOT / "README.md"


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M)


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comment-only lines dropped."""
    out: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line + "\n"
            continue
        out.append(pending + line)
        pending = ""
    assert not pending, f"a block ends in a continuation: {block!r}"
    return out


def blocks() -> list[list[str]]:
    return [commands(b) for b in sh_blocks(README.read_text())]


def test_the_readme_holds_the_blocks_this_test_runs():
    # A new sh block must be taught to this test (or written as a plain ``` block).
    got = blocks()
    assert len(got) == 3, got
    assert [c.split("#")[0].strip() for c in got[0]] == ["make install && make demo", "make test"]
    assert got[1][0] == ". .venv/bin/activate"
    assert got[2][0].startswith("lc set filter")
    quick = "\n".join(got[1])
    assert "-f 'udp port 5060 or tcp port 5060'" in quick
    assert "'udp or tcp port 5060'" not in README.read_text().split("Mind the BPF")[0]


@pytest.mark.e2e
def test_make_install_and_demo_as_written():
    need("make")
    env = lc_env()
    r = subprocess.run(
        ["bash", "-c", blocks()[0][0]], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== result" in r.stdout and "processor wrote" in r.stdout, r.stdout
    dry = subprocess.run(
        ["bash", "-c", blocks()[0][1].replace("make test", "make -n test", 1)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert dry.returncode == 0 and "pytest" in dry.stdout, dry.stdout + dry.stderr


PRELUDE = """\
set -euo pipefail
ip link set lo up
ip link add eth0 type veth peer name peer0
ip link set eth0 up
ip link set peer0 up
ip addr add 10.9.9.1/24 dev eth0
ip neigh add 10.9.9.3 lladdr 02:00:00:00:00:03 dev eth0
echo "127.0.0.1 localhost collector.example.net" > hosts
mount --bind hosts /etc/hosts
wait_for() {  # TEXT FILE
    for _ in $(seq 300); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.1; done
    cat "$2" >&2; return 1
}
wait_hunter() {  # until the hunter has applied its filters and is capturing
    for _ in $(seq 300); do
        if lc show hunter --id sensor1 --processor collector.example.net:55555 \\
            --tls-cert pki/admin.pem --tls-key pki/admin.key --tls-ca pki/ca.pem \\
            2>/dev/null | grep -q '"last_heartbeat_ns": [1-9]'; then return 0; fi
        kill -0 $HUNT || { cat hunt.log >&2; return 1; }
        sleep 0.1
    done
    cat hunt.log >&2; return 1
}
"""

TRAFFIC = """\
python - <<'PY'
import socket, time
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(20):
    udp.sendto(b"OPTIONS sip:x SIP/2.0 %d" % i, ("10.9.9.3", 5060))
    udp.sendto(b"not sip %d" % i, ("10.9.9.3", 9999))
for _ in range(3):  # SYNs to TCP port 5060
    t = socket.socket(); t.setblocking(False)
    try: t.connect(("10.9.9.3", 5060))
    except BlockingIOError: pass
time.sleep(0.5)
PY
for _ in $(seq 100); do  # until the 20 UDP datagrams and a SYN are written
    n=$(lc show status | python -c 'import json,sys; print(json.load(sys.stdin)["packets_written"])'
    )
    [ "$n" -ge 21 ] && break
    sleep 0.2
done
"""

EPILOGUE = """\
kill -INT $HUNT; wait $HUNT
kill -TERM $PROC; wait $PROC
"""


def script(quick: list[str], filters: list[str]) -> str:
    lines = [PRELUDE]
    for cmd in quick:
        if cmd.startswith("lc process "):
            lines += [f"{cmd} 2>process.log &", "PROC=$!", "wait_for 'listening on' process.log"]
        elif cmd.startswith("lc hunt "):
            lines += [f"{cmd} >hunt.out 2>hunt.log &", "HUNT=$!", "wait_hunter"]
        else:
            lines.append(cmd)
    lines.append(TRAFFIC)
    lines += filters
    lines.append(EPILOGUE)
    return "\n".join(lines) + "\n"


@pytest.mark.e2e
def test_quick_start_and_filter_commands_as_written(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespace, live capture)")
    for tool in ("unshare", "ip", "tshark"):
        need(tool)
    _, quick, filters = blocks()
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    text = script(quick, filters)
    (tmp_path / "readme.sh").write_text(text)
    r = subprocess.run(
        ["unshare", "--net", "--mount", "bash", "readme.sh"],
        cwd=tmp_path, env=lc_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    logs = "".join(
        f"\n--- {n}\n{(tmp_path / n).read_text(errors='replace')}"
        for n in ("process.log", "hunt.log", "hunt.out")
        if (tmp_path / n).exists()
    )
    assert r.returncode == 0, textwrap.shorten(r.stdout, 3000) + r.stderr + logs
    # The capture holds SIP over UDP and TCP, and nothing else (tshark reads it).
    out = tmp_path / "out" / "all.pcap"
    fields = subprocess.run(
        ["tshark", "-r", str(out), "-T", "fields", "-e", "udp.dstport", "-e", "tcp.dstport"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    udp = [f for f in fields if f.split("\t")[0]]
    tcp = [f for f in fields if f.split("\t")[1]]
    assert udp == ["5060\t"] * 20, fields
    assert tcp and set(tcp) == {"\t5060"}, fields
    assert len(udp) + len(tcp) == len(fields)
    # The admin commands printed JSON; the certificates checked out.
    assert '"hunter_id": "sensor1"' in r.stdout
    assert '"ok": true' in r.stdout
    assert "stays on this host" in r.stderr
