"""Whole-connection capture end to end: real TCP clients and a server on loopback,
recorded by tcpdump, replayed by `lc hunt line -r` (the toy line protocol of
tests/hunter/conn_toy.py registered as a mode) to a real `lc process` with a keyword
filter; the unified PCAP must hold exactly tshark's `tcp.stream == N` frames of the
connections that matched, and, for one matched only after a rejection, exactly its
frames from the one completing the matching line on."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from lc.common.pcapfile import open_capture
from lc.hunter import modes
from lc.hunter.modes.base import ModeSpec, option, positive_int
from lc.hunter.modes.sessions import SessionMode
from lc.hunter.session import SessionLimits
from tests.conftest import need, run_lc, start_processor, tls_args
from tests.hunter.conn_toy import LineDissector
from tests.voip_tools import free_port, tcpdump_capture

pytestmark = pytest.mark.e2e


@dataclass(slots=True)
class LineConfig:
    port: int = option("--line-port", "7070", positive_int, "TCP port of the line protocol.", "N")


LINE = ModeSpec(
    name="line",
    help="A toy TCP line protocol, captured by connection (a test of the engine).",
    filter_types=("keyword", "ip_address"),
    default_policy="deny",
    config=LineConfig,
    factory=lambda ctx, cfg: SessionMode(
        ctx, LineDissector(cfg.port), SessionLimits(grace_ns=10**9)
    ),
)


def serve(listener: socket.socket, stop: threading.Event) -> None:
    """Answer each line with ``ok LINE``; close when the client does."""

    def one(conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    conn.sendall(b"ok " + line + b"\n")

    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def talk(port: int, lines: list[bytes], rst: bool = False) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    for line in lines:
        s.sendall(line + b"\n")
        assert f.readline() == b"ok " + line + b"\n"  # one line per segment, in turn
    f.close()
    if rst:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def tshark(cap: Path, *args: str) -> list[list[str]]:
    r = subprocess.run(["tshark", "-r", str(cap), "-n", *args, "-T", "fields", "-E",
                        "separator=,"], capture_output=True, text=True, check=True)  # fmt: skip
    return [line.split(",") for line in r.stdout.splitlines() if line]


def frames_of(cap: Path) -> list[tuple[int, bytes]]:
    with open_capture(cap) as rd:
        return [(ts, bytes(d)) for ts, _, d, _ in rd.records()]


def test_matching_tcp_connections_are_forwarded_whole_as_tshark_sees_them(tmp_path, pki, capsys):
    from lc.cli.main import main

    need("tshark")
    need("tcpdump")
    port = free_port(socket.SOCK_STREAM)
    cap = tmp_path / "lines.pcap"
    listener = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(listener, stop), daemon=True)
    server.start()
    try:
        with tcpdump_capture(cap, f"tcp port {port}"):
            talk(port, [b"hello", b"the secret", b"bye"])  # matched, FIN
            talk(port, [b"hello", b"plain"])  # never matched
            talk(port, [b"SECRET at once"], rst=True)  # matched, RST
            talk(port, [b"hi", b"DONE", b"still plain", b"late secret", b"after"])  # late
            talk(port, [b"hi", b"DONE"])  # rejected
    finally:
        stop.set()
        server.join(5)
        listener.close()

    # The oracle: tshark's streams, which of them carry the keyword, where it first is.
    streams: dict[int, list[int]] = {}
    for num, stream in tshark(cap, "-e", "frame.number", "-e", "tcp.stream"):
        streams.setdefault(int(stream), []).append(int(num))
    assert len(streams) == 5
    hits = tshark(cap, "-Y", 'tcp.payload contains "secret" or tcp.payload contains "SECRET"',
                  "-e", "frame.number", "-e", "tcp.stream")  # fmt: skip
    first_hit: dict[int, int] = {}
    for num, stream in hits:
        first_hit.setdefault(int(stream), int(num))
    assert sorted(first_hit) == [0, 2, 3]
    every = frames_of(cap)
    want_numbers = streams[0] + streams[2] + [n for n in streams[3] if n >= first_hit[3]]
    want = [every[n - 1] for n in sorted(want_numbers)]

    p = start_processor(tmp_path, tls_args(pki, "processor"))
    modes.register(LINE)
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    umask = os.umask(0o022)  # main() tightens the umask of the process it runs in
    os.umask(umask)
    try:
        r = run_lc("set", "filter", "--id", "kw", "--type", "keyword", "--pattern", "secret",
                   "--processor", p.addr, *tls_args(pki, "admin"))  # fmt: skip
        assert r.returncode == 0, r.stderr
        with pytest.raises(SystemExit) as done:
            main(["hunt", "line", "--line-port", str(port), "--processor", p.addr,
                  *tls_args(pki, "hunter-h1"), "-r", str(cap)])  # fmt: skip
        summary = capsys.readouterr().out
        assert done.value.code == 0, summary
    finally:
        modes.unregister("line")
        signal.signal(signal.SIGINT, handlers[0])
        os.umask(umask)
        signal.signal(signal.SIGTERM, handlers[1])
        p.stop()
    assert "connections: 5 seen, 3 matched, 2 never matched" in summary, summary

    got = frames_of(p.data_dir / "capture.pcap")
    assert sorted(got) == want  # the same frames, timestamps and bytes
    assert got == want  # in capture order

    # One event per line of the matched connections (both directions), captured, with
    # the filter's id; the late one's only from the matching line on.
    (log,) = (p.data_dir / "events").glob("*.jsonl")
    evs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(evs) == 2 * 3 + 2 * 1 + 2 * 2
    assert all(e["lc"]["captured"] and e["lc"]["filter_ids"] == ["kw"] for e in evs)
    ids = {e["lc"]["session_id"] for e in evs}
    assert len(ids) == 3 and all(i.startswith("tcp:127.0.0.1:") for i in ids)
    assert {e["event"]["dataset"] for e in evs} == {"lc.line"}
