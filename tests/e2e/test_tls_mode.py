"""`lc hunt tls` live on lo with real peers: openssl s_server, s_client (TLS 1.2 and
1.3, SNI, ALPN) and curl; tshark on a tcpdump reference capture is the oracle."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import LC, lc_env, need, start_processor, tls_args
from tests.e2e.test_voip import hunter_capturing, set_filter, wait_for
from tests.voip_tools import free_port, stop_process, tcpdump_capture

pytestmark = pytest.mark.e2e


def tshark_fields(path: Path, display: str, *fields: str) -> list[list[str]]:
    args = ["tshark", "-n", "-r", str(path), "-Y", display, "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def s_client(port: int, sni: str, *flags: str) -> None:
    subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", sni,
         "-ign_eof", *flags],
        input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True, timeout=20, check=False,
    )  # fmt: skip


def test_live_sni_filter_captures_only_the_matching_connections(tmp_path, pki):
    if os.geteuid() != 0:
        pytest.skip("live capture on lo needs root")
    for tool in ("openssl", "curl", "tcpdump", "tshark"):
        need(tool)
    port = free_port()
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    server = None
    try:
        set_filter(p, pki, "tls_sni", "wanted.example")
        h = subprocess.Popen(
            [*LC, "hunt", "tls", "--processor", p.addr, *tls_args(pki, "hunter-live"),
             "-i", "lo", "--tls-port", str(port), "--heartbeat-interval", "0.5",
             "--conn-grace", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lc_env(),
        )  # fmt: skip
        try:
            wait_for(lambda: hunter_capturing(p, pki, "live"), 30, "the hunter capturing")
            server = subprocess.Popen(
                ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-www", "-quiet",
                 "-cert", str(pki / "processor.pem"), "-key", str(pki / "processor.key"),
                 "-alpn", "h2,http/1.1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)
            ref = tmp_path / "ref.pcap"
            with tcpdump_capture(ref, f"tcp port {port}"):
                s_client(port, "wanted.example", "-tls1_3", "-alpn", "h2")
                s_client(port, "other.example", "-tls1_3")
                s_client(port, "wanted.example", "-tls1_2", "-alpn", "http/1.1")
                subprocess.run(
                    ["curl", "-sk", "--http1.1", "--resolve", f"curl.example:{port}:127.0.0.1",
                     f"https://curl.example:{port}/"],
                    capture_output=True, timeout=20, check=False,
                )  # fmt: skip
                time.sleep(1)
            time.sleep(3)  # grace: the hunter forwards, the processor writes
        finally:
            if server is not None:
                stop_process(server)
            rc = stop_process(h, timeout=40)
            _, herr = h.communicate()
        assert rc == 0, herr
    finally:
        p.stop()
    # The oracle: which client ports (tcp streams) sent which SNI.
    hellos = tshark_fields(
        ref, "tls.handshake.type == 1", "tcp.srcport", "tls.handshake.extensions_server_name"
    )
    by_sni: dict[str, set[str]] = {}
    for sport, sni in hellos:
        by_sni.setdefault(sni, set()).add(sport)
    assert set(by_sni) == {"wanted.example", "other.example", "curl.example"}
    assert len(by_sni["wanted.example"]) == 2
    out = p.data_dir / "capture.pcap"
    got = tshark_fields(out, "tcp", "tcp.srcport", "tcp.dstport")
    ports = {a if b == str(port) else b for a, b in got}
    assert ports == by_sni["wanted.example"]
    got_hellos = tshark_fields(
        out, "tls.handshake.type == 1", "tls.handshake.extensions_server_name"
    )
    assert sorted(x[0] for x in got_hellos) == ["wanted.example", "wanted.example"]
    # One ECS event per captured connection.
    (log,) = (p.data_dir / "events").glob("*.jsonl")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(events) == 2
    assert {e["tls"]["version"] for e in events} == {"1.3", "1.2"}
    for e in events:
        assert e["tls"]["client"]["server_name"] == "wanted.example"
        assert e["lc"]["filter_ids"] == ["f1"] and e["destination"]["port"] == port
        assert len(e["tls"]["client"]["ja3"]) == 32 and e["tls"]["client"]["ja4"][:1] == "t"
        assert e["tls"]["server"]["ja4s"].startswith("t1")
        assert str(e["source"]["port"]) in by_sni["wanted.example"]
    # ALPN: offered in both; chosen is visible in TLS 1.2's ServerHello only (TLS 1.3
    # sends it in the encrypted EncryptedExtensions).
    by_version = {e["tls"]["version"]: e for e in events}
    assert by_version["1.3"]["lc"]["tls"]["alpn"] == ["h2"]
    assert "next_protocol" not in by_version["1.3"]["tls"]
    assert by_version["1.2"]["tls"]["next_protocol"] == "http/1.1"
