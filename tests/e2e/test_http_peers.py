"""`lc hunt http` against real peers on loopback, the cases the issue names beside
filters: ``ab -k`` keep-alive, pipelined requests (with a HEAD among them), a request
head split across TCP segments, ``Expect: 100-continue`` with a large upload, and a
keyword split by chunked transfer coding. tcpdump records, the hunter replays the
recording (``-r``), tshark's ``tcp.stream`` says which frames belong to which
connection, and the processor's PCAP and event log are checked against it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import need, run_lc, start_processor, tls_args
from tests.e2e.test_http import _frames, _set
from tests.voip_tools import tcpdump_capture

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump on lo needs root"),
]

PIPELINED = (
    b"GET /p1 HTTP/1.1\r\nHost: pipe.example\r\n\r\n"
    b"GET /p2 HTTP/1.1\r\nHost: pipe.example\r\n\r\n"
    b"HEAD /p3 HTTP/1.1\r\nHost: pipe.example\r\n\r\n"
    b"GET /p4 HTTP/1.1\r\nHost: pipe.example\r\nConnection: close\r\n\r\n"
)
SPLIT = (b"GET /spl", b"it HTTP/1.1\r\nHo", b"st: split.exa",
         b"mple\r\nConnection: close\r\n\r\n")  # fmt: skip
UPLOAD = 300_000


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if "keep-alive" in (self.headers.get("Connection") or "").lower():
            self.send_header("Connection", "keep-alive")  # ab -k (HTTP/1.0) wants it
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._reply(200, b"x" * 1234, head=True)

    def do_GET(self) -> None:
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello chunk", b"edsec", b"ret world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        self._reply(200, b"page " + self.path.encode() + b"\n")

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._reply(201, b"stored\n")


def _raw(port: int, parts: tuple[bytes, ...]) -> bytes:
    """Send ``parts`` as separate segments (no Nagle, a pause between), read to close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for k, part in enumerate(parts):
            if k:
                time.sleep(0.05)
            s.sendall(part)
        out = b""
        while d := s.recv(65536):
            out += d
    return out


def _tshark(path, *fields: str) -> list[list[str]]:
    args = ["tshark", "-n", "-r", str(path), "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    r = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    return [line.split("\t") for line in r.stdout.splitlines()]


def test_keep_alive_pipelining_split_heads_100_continue_and_chunks(tmp_path, pki) -> None:
    for tool in ("tshark", "curl", "ab"):
        need(tool)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    base = f"http://127.0.0.1:{port}"
    cap = tmp_path / "peers.pcap"
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(UPLOAD))
    curl = ["curl", "-s", "-o", "/dev/null", "--http1.1"]
    try:
        with tcpdump_capture(cap, f"tcp port {port}"):
            # stream 0: ab -k, 10 requests on one connection (local --host); 1: the same
            # without the host: no match.
            for host in ("ab.example", "ab-other.example"):
                ab = ["ab", "-k", "-q", "-n", "10", "-c", "1", "-H", f"Host: {host}", f"{base}/ab"]
                subprocess.run(ab, check=True, capture_output=True, timeout=60)
            assert _raw(port, (PIPELINED,)).count(b"HTTP/1.1 200") == 4  # 2: http_url /p2
            assert _raw(port, SPLIT).startswith(b"HTTP/1.1 200")  # 3: http_host split.example
            put = [*curl, "-X", "PUT", "-H", "Host: up.example", "-H", "Expect: 100-continue",
                   "--data-binary", f"@{upload}", f"{base}/upload"]  # fmt: skip
            subprocess.run(put, check=True, timeout=30)  # 4: http_method PUT
            subprocess.run([*curl, f"{base}/chunked"], check=True, timeout=30)  # 5: keyword
            subprocess.run([*curl, f"{base}/plain"], check=True, timeout=30)  # 6: none
    finally:
        srv.shutdown()
        srv.server_close()

    rows = _tshark(cap, "frame.number", "tcp.stream", "tcp.len", "tcp.dstport")
    stream_of = {int(n): int(s) for n, s, _, _ in rows}
    assert sorted(set(stream_of.values())) == list(range(7))
    to_server = [(int(s), int(ln)) for _, s, ln, dp in rows if int(ln) and int(dp) == port]
    # The premises: the four requests went in one segment, the split head in four.
    assert [ln for s, ln in to_server if s == 2] == [len(PIPELINED)]
    assert [ln for s, ln in to_server if s == 3] == [len(p) for p in SPLIT]
    assert any(int(c) == 100 for (c,) in _tshark(cap, "http.response.code") if c)

    p = start_processor(tmp_path, tls_args(pki, "processor"))
    try:
        _set(p, pki, "pipe", "http_url", "/p2")
        _set(p, pki, "split", "http_host", "split.example")
        _set(p, pki, "put", "http_method", "PUT")
        _set(p, pki, "chunk", "keyword", "CHUNKEDSECRET")
        r = run_lc("hunt", "http", "--http-port", str(port), "--host", "ab.example",
                   "--processor", p.addr, *tls_args(pki, "hunter-h1"), "-r", str(cap))  # fmt: skip
        assert r.returncode == 0, r.stderr
    finally:
        p.stop()

    frames = _frames(cap)
    index = {f: n for n, f in enumerate(frames, 1)}
    got = [index[f] for f in _frames(p.data_dir / "capture.pcap")]
    wanted = {0, 2, 3, 4, 5}
    # Exactly the matching connections, each whole (every frame, SYN to the last), in
    # capture order within it.
    assert {stream_of[n] for n in got} == wanted
    for s in wanted:
        assert [n for n in got if stream_of[n] == s] == [
            n for n, t in sorted(stream_of.items()) if t == s
        ], s

    (log,) = (p.data_dir / "events").glob("*.jsonl")
    evs = [json.loads(line) for line in log.read_text().splitlines()]
    by_domain: dict[str, list[dict]] = {}
    for e in evs:
        by_domain.setdefault(e["url"]["domain"], []).append(e)
    assert sorted(by_domain) == ["127.0.0.1", "ab.example", "pipe.example",
                                 "split.example", "up.example"]  # fmt: skip
    ab = by_domain["ab.example"]
    assert len(ab) == 10 and {e["http"]["version"] for e in ab} == {"1.0"}
    assert [e["lc"]["http"]["transaction"] for e in ab] == list(range(1, 11))
    assert all(e["lc"]["filter_ids"] == ["local:host:1"] for e in ab)
    # Pipelined: each request paired with its own response, in order; HEAD's has no body.
    pipe = by_domain["pipe.example"]
    assert [(e["http"]["request"]["method"], e["url"]["original"]) for e in pipe] == [
        ("GET", "/p1"), ("GET", "/p2"), ("HEAD", "/p3"), ("GET", "/p4"),
    ]  # fmt: skip
    assert [e["http"]["response"]["status_code"] for e in pipe] == [200] * 4
    assert [e["http"]["response"]["body"]["bytes"] for e in pipe] == [9, 9, 0, 9]  # "page /pN\n"
    (split,) = by_domain["split.example"]
    assert split["url"]["original"] == "/split" and split["lc"]["filter_ids"] == ["split"]
    (up,) = by_domain["up.example"]  # the interim 100 is not the transaction's answer
    assert up["http"]["response"]["status_code"] == 201
    assert up["http"]["request"]["body"]["bytes"] == UPLOAD and up["lc"]["filter_ids"] == ["put"]
    (ch,) = by_domain["127.0.0.1"]
    assert ch["url"]["original"] == "/chunked" and ch["lc"]["http"]["keywords"] == ["chunkedsecret"]
    assert ch["http"]["response"]["body"]["bytes"] == len(b"hello chunkedsecret world")


def test_live_https_keys_appended_while_hunting_decrypt_and_heartbeats_carry_figures(
    tmp_path, pki
) -> None:
    """Live on lo: `lc hunt http -i lo --tls-keylog` follows a key log that curl appends
    to while the hunter runs (two HTTPS requests, a second apart); tshark decrypts both
    from the processor's capture with the processor's key file; and the hunter's
    heartbeats (all of the mode's figures: more than 64 once it has parsed) reach
    `lc show hunter` while it runs."""
    from tests.conftest import LC, lc_env
    from tests.voip_tools import free_port, stop_process

    for tool in ("tshark", "curl", "openssl"):
        need(tool)
    key, cert = tmp_path / "srv.key", tmp_path / "srv.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    port = free_port()
    srv = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-key", str(key), "-cert",
         str(cert), "-www", "-quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    keys = tmp_path / "client-keys.txt"
    keys.write_bytes(b"")
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    h = None
    try:
        _set(p, pki, "tls", "bpf", f"tcp port {port}")
        h = subprocess.Popen(
            [*LC, "-v", "hunt", "http", "--http-port", str(port), "--tls-keylog", str(keys),
             "--processor", p.addr, *tls_args(pki, "hunter-h1"), "-i", "lo",
             "--heartbeat-interval", "0.5"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lc_env(),
        )  # fmt: skip
        time.sleep(3)  # registered, filters applied, capturing
        env = {**os.environ, "SSLKEYLOGFILE": str(keys)}
        for path in ("/first-secret", "/second-secret"):
            subprocess.run(["curl", "-sk", "--http1.1", "-o", "/dev/null",
                            f"https://127.0.0.1:{port}{path}"],
                           check=True, timeout=20, env=env)  # fmt: skip
            time.sleep(1)
        time.sleep(2)  # a few heartbeats
        shown = run_lc("show", "hunter", "--id", "h1", "--processor", p.addr,
                       *tls_args(pki, "admin"))  # fmt: skip
        rc = stop_process(h, timeout=40)
        _, herr = h.communicate()
        h = None
    finally:
        if h is not None:
            stop_process(h, timeout=40)
        srv.terminate()
        srv.wait(10)
        p.stop()
    assert rc == 0, herr
    assert "CLIENT" not in herr and "CLIENT" not in p.stderr()  # keys are never logged
    assert "refused a heartbeat" not in herr
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    figures = info["counters"]["mode"]
    assert len(figures) > 64 and figures["tls_keylog_lines"] > 0, figures
    assert figures["http_not_http"] >= 1  # TLS on an HTTP port: selected by bpf only
    assert info["last_heartbeat_ns"] - info["registered_at_ns"] > 2 * 10**9
    out_keys = p.data_dir / "keys" / "sslkeylog.txt"
    assert sorted(out_keys.read_bytes().split(b"\n")) == sorted(keys.read_bytes().split(b"\n"))
    t = subprocess.run(
        ["tshark", "-n", "-r", str(p.data_dir / "capture.pcap"), "-d", f"tcp.port=={port},tls",
         "-o", f"tls.keylog_file:{out_keys}", "-Y", "http.request", "-T", "fields",
         "-e", "http.request.uri"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert t.stdout.split() == ["/first-secret", "/second-secret"], (t.stdout, t.stderr)
