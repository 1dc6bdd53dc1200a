"""`lc hunt http` end to end with real peers: Python's http.server, curl, tcpdump as
the reference capture, tshark as the oracle of which frames belong to which
connection (``tcp.stream``), and the processor's PCAP and event log as the result."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lc.common.pcapfile import open_capture
from lc.hunter.modes.sessions import Dissector
from tests.conftest import need, run_lc, start_processor, tls_args
from tests.voip_tools import tcpdump_capture

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump on lo needs root"),
]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/fail"):
            self._reply(503, b"unavailable\n")
        else:
            self._reply(200, b"page " + self.path.encode() + b"\n")

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        self._reply(201, b"stored\n")


def _serve() -> tuple[ThreadingHTTPServer, int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def _curl(*args: str) -> None:
    subprocess.run(["curl", "-s", "-o", "/dev/null", "--http1.1", *args], check=True, timeout=20)


def _frames(path: Path) -> list[tuple[int, bytes]]:
    with open_capture(path) as r:
        return [(ts, bytes(d)) for ts, _, d, _ in r.records()]


def _streams(path: Path) -> tuple[dict[int, int], set[int]]:
    """tshark: frame number -> tcp.stream, and the frames that carry payload."""
    r = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "tcp.stream",
         "-e", "tcp.len"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out, data = {}, set()
    for line in r.stdout.splitlines():
        n, s, ln = line.split("\t")
        out[int(n)] = int(s)
        if int(ln):
            data.add(int(n))
    return out, data


# Whole-connection capture (handshakes, pure ACKs, FINs) comes with the shared engine's
# connection unit; before it, a connection's frames that carry bytes are what is forwarded.
WHOLE = hasattr(Dissector, "capture_unit")


def _hunt(p, pki: Path, port: int, cap: Path) -> str:
    r = run_lc("hunt", "http", "--http-port", str(port), "--processor", p.addr,
               *tls_args(pki, "hunter-h1"), "-r", str(cap))  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def _set(p, pki: Path, fid: str, type_: str, pattern: str) -> None:
    r = run_lc("set", "filter", "--id", fid, "--type", type_, "--pattern", pattern,
               "--processor", p.addr, *tls_args(pki, "admin"))  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_filters_capture_exactly_the_matching_connections_whole(tmp_path, pki) -> None:
    need("tshark")
    need("curl")
    srv, port = _serve()
    cap = tmp_path / "http.pcap"
    base = f"http://127.0.0.1:{port}"
    try:
        with tcpdump_capture(cap, f"tcp port {port}"):
            # stream 0: host+url match; 1: same host, other url; 2: other host;
            # 3: a keyword only in a POST body; 4: a 5xx; 5: keep-alive, 2nd request 5xx.
            _curl("-H", "Host: shop.example", f"{base}/cart/checkout?id=7")
            _curl("-H", "Host: shop.example", f"{base}/index.html")
            _curl("-H", "Host: blog.example", f"{base}/blog/post")
            _curl("-H", "Host: blog.example", "--data-binary", "name=x&token=TopSecret42",
                  f"{base}/form")  # fmt: skip
            _curl("-H", "Host: blog.example", f"{base}/fail")
            _curl("-H", "Host: blog.example", f"{base}/ok", "--next", "-s", "-o", "/dev/null",
                  "-H", "Host: blog.example", f"{base}/fail/again")  # fmt: skip
    finally:
        srv.shutdown()
        srv.server_close()
    frames = _frames(cap)
    stream_of, with_data = _streams(cap)
    assert sorted(set(stream_of.values())) == [0, 1, 2, 3, 4, 5]

    p = start_processor(tmp_path, tls_args(pki, "processor"))
    try:
        _set(p, pki, "shop", "http_host", "shop.example")
        _set(p, pki, "checkout", "http_url", "/cart/checkout*")
        _set(p, pki, "secret", "keyword", "topsecret")
        _set(p, pki, "fails", "http_status", "5xx")
        summary = _hunt(p, pki, port, cap)
    finally:
        p.stop()
    assert "replayed" in summary
    got = _frames(p.data_dir / "capture.pcap")
    index = {f: n for n, f in enumerate(frames, 1)}
    got_streams: dict[int, list[int]] = {}
    for f in got:
        n = index[f]
        got_streams.setdefault(stream_of[n], []).append(n)
    # Streams 0 and 1 match (http_host; 0 also http_url), 2 does not, 3 by keyword,
    # 4 and 5 by status: each whole, every frame of it, in order; nothing else.
    wanted = {s for s in stream_of.values() if s != 2}
    assert set(got_streams) == wanted
    for s, ns in got_streams.items():
        assert ns == sorted(
            n for n, t in stream_of.items() if t == s and (WHOLE or n in with_data)
        ), s

    (log,) = (p.data_dir / "events").glob("*.jsonl")
    evs = [json.loads(line) for line in log.read_text().splitlines()]
    by_target = {e["url"]["original"]: e for e in evs}
    assert set(by_target) == {
        "/cart/checkout?id=7", "/index.html", "/form", "/fail", "/ok", "/fail/again",
    }  # fmt: skip
    e = by_target["/cart/checkout?id=7"]
    assert e["http"]["request"]["method"] == "GET" and e["url"]["domain"] == "shop.example"
    assert e["url"]["path"] == "/cart/checkout" and e["url"]["query"] == "id=7"
    assert e["http"]["response"]["status_code"] == 200
    assert e["user_agent"]["original"].startswith("curl/")
    assert sorted(e["lc"]["filter_ids"]) == ["checkout", "shop"]
    assert e["destination"]["port"] == port and e["event"]["duration"] > 0
    f = by_target["/form"]
    assert f["lc"]["http"]["keywords"] == ["topsecret"] and f["lc"]["filter_ids"] == ["secret"]
    assert f["http"]["request"]["body"]["bytes"] == len("name=x&token=TopSecret42")
    assert by_target["/fail"]["http"]["response"]["status_code"] == 503
    assert by_target["/ok"]["lc"]["filter_ids"] == ["fails"]  # its connection was captured
    assert all(e["lc"]["captured"] for e in evs)


def test_local_filters_and_bad_flags(tmp_path, pki) -> None:
    r = run_lc("hunt", "http", "--status", "6x6", "--processor", "127.0.0.1:1",
               "--insecure", "-r", "/dev/null")  # fmt: skip
    assert r.returncode == 3 and "--status" in r.stderr and "http_status" in r.stderr
    r = run_lc("hunt", "http", "--keywords", "ab", "--processor", "127.0.0.1:1",
               "--insecure", "-r", "/dev/null")  # fmt: skip
    assert r.returncode == 3 and "--keywords" in r.stderr


def test_local_filters_are_shown_by_show_hunter_and_select(tmp_path, pki) -> None:
    """The local flags register with the hunter (``lc show hunter`` lists them, with
    their flag in the id) and select connections on their own (no pushed filter)."""
    from tests.hunter.test_voip import CORPUS, need_corpus

    need_corpus()
    cap = CORPUS / "http/zeek_http-pipelined-requests.pcap"
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    try:
        r = run_lc("hunt", "http", "--status", "2xx", "--host", "*.mozilla.org,example.org",
                   "--keywords", "no-such-word", "--processor", p.addr,
                   *tls_args(pki, "hunter-h1"), "-r", str(cap))  # fmt: skip
        assert r.returncode == 0, r.stderr
        shown = run_lc("show", "hunter", "--id", "h1", "--processor", p.addr,
                       *tls_args(pki, "admin"))  # fmt: skip
    finally:
        p.stop()
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert [(f["id"], f["type"], f["pattern"]) for f in info["local_filters"]] == [
        ("local:host:1", "http_host", "*.mozilla.org"),
        ("local:host:2", "http_host", "example.org"),
        ("local:status:1", "http_status", "2xx"),
        ("local:keywords:1", "keyword", "no-such-word"),
    ]
    assert info["mode"] == "http"
    (log,) = (p.data_dir / "events").glob("*.jsonl")
    evs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(evs) == 5 and all(e["lc"]["captured"] for e in evs)
    # The first request's Host decides the connection (before any response is seen).
    assert {i for e in evs for i in e["lc"]["filter_ids"]} == {"local:host:1"}
    assert (p.data_dir / "capture.pcap").stat().st_size > 24


@pytest.mark.parametrize("by", ["ip_address", "bpf"])
def test_https_keys_follow_the_capture_and_tshark_decrypts_it(tmp_path, pki, by) -> None:
    need("tshark")
    need("curl")
    need("openssl")
    key, cert = tmp_path / "srv.key", tmp_path / "srv.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-key", str(key), "-cert",
         str(cert), "-www", "-quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    keys = tmp_path / "client-keys.txt"
    cap = tmp_path / "https.pcap"
    try:
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        with tcpdump_capture(cap, f"tcp port {port}"):
            env = {**os.environ, "SSLKEYLOGFILE": str(keys)}
            subprocess.run(["curl", "-sk", "--http1.1", "-o", "/dev/null",
                            f"https://127.0.0.1:{port}/secret-path"],
                           check=True, timeout=20, env=env)  # fmt: skip
    finally:
        srv.terminate()
        srv.wait(10)
    assert keys.stat().st_size > 0

    p = start_processor(tmp_path, tls_args(pki, "processor"))
    try:
        # Both select the HTTPS connection the HTTP parser cannot read.
        if by == "bpf":
            _set(p, pki, "host", "bpf", f"tcp dst port {port} and tcp[13] & 2 != 0")
        else:
            _set(p, pki, "host", "ip_address", "127.0.0.1")
        r = run_lc("hunt", "http", "--http-port", str(port), "--tls-keylog", str(keys),
                   "--processor", p.addr, *tls_args(pki, "hunter-h1"), "-r", str(cap))  # fmt: skip
        assert r.returncode == 0, r.stderr
        status = run_lc("show", "status", "--processor", p.addr, *tls_args(pki, "admin"))
    finally:
        p.stop()
    assert "CLIENT" not in r.stderr and "CLIENT" not in p.stderr()  # keys are never logged
    out_keys = p.data_dir / "keys" / "sslkeylog.txt"
    assert oct(out_keys.stat().st_mode & 0o777) == "0o600"
    assert sorted(out_keys.read_bytes().split()) == sorted(
        x for x in keys.read_bytes().split() if x
    )
    assert "tls_keylog_lines" in status.stdout or "tlsKeylogLines" in status.stdout, status.stdout
    t = subprocess.run(
        ["tshark", "-n", "-r", str(p.data_dir / "capture.pcap"), "-d", f"tcp.port=={port},tls",
         "-o", f"tls.keylog_file:{out_keys}", "-Y", "http.request", "-T", "fields",
         "-e", "http.request.uri"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert t.stdout.split() == ["/secret-path"], (t.stdout, t.stderr)
