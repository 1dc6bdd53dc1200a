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


def curl(port: int, sni: str) -> None:
    subprocess.run(
        ["curl", "-sk", "--http1.1", "--resolve", f"{sni}:{port}:127.0.0.1",
         f"https://{sni}:{port}/"],
        capture_output=True, timeout=20, check=False,
    )  # fmt: skip


def ja4_of_client_hellos(path: Path) -> dict[str, str]:
    """ja4plus (an implementation independent of lc) on each ClientHello of ``path``:
    JA4 by tcp.stream (each hello fits one segment on lo)."""
    tls_utils = pytest.importorskip("ja4plus.utils.tls_utils")
    ja4_mod = pytest.importorskip("ja4plus.fingerprinters.ja4")
    out = {}
    for stream, payload in tshark_fields(
        path, "tls.handshake.type == 1", "tcp.stream", "tcp.payload"
    ):
        info = tls_utils.parse_tls_handshake(bytes.fromhex(payload.replace(":", "")))
        assert info is not None
        out[stream] = ja4_mod.generate_ja4(info)
    return out


def test_live_filters_capture_exactly_the_matching_connections_whole(tmp_path, pki):
    """Live on lo: a tls_sni filter and a tls_ja4 filter equal to curl's JA4 (as ja4plus
    computes it) forward exactly tshark's ``tcp.stream`` frames of the matching
    connections of a tcpdump capture of the same traffic: SYN to FIN, both directions,
    same bytes and times, capture order; nothing of the other connections."""
    if os.geteuid() != 0:
        pytest.skip("live capture on lo needs root")
    for tool in ("openssl", "curl", "tcpdump", "tshark"):
        need(tool)
    from lc.common.pcapfile import open_capture

    port = free_port()
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-www", "-quiet",
         "-cert", str(pki / "processor.pem"), "-key", str(pki / "processor.key"),
         "-alpn", "h2,http/1.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1)
        # curl's client stack, fingerprinted by ja4plus before the hunter runs.
        probe = tmp_path / "probe.pcap"
        with tcpdump_capture(probe, f"tcp port {port}"):
            curl(port, "probe.example")
        (curl_ja4,) = set(ja4_of_client_hellos(probe).values())
        set_filter(p, pki, "tls_sni", "wanted.example")
        set_filter(p, pki, "tls_ja4", curl_ja4, "f2")
        h = subprocess.Popen(
            [*LC, "hunt", "tls", "--processor", p.addr, *tls_args(pki, "hunter-live"),
             "-i", "lo", "--tls-port", str(port), "--heartbeat-interval", "0.5",
             "--conn-grace", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lc_env(),
        )  # fmt: skip
        try:
            wait_for(lambda: hunter_capturing(p, pki, "live"), 30, "the hunter capturing")
            ref = tmp_path / "ref.pcap"
            with tcpdump_capture(ref, f"tcp port {port}"):
                s_client(port, "wanted.example", "-tls1_3", "-alpn", "h2")
                s_client(port, "other.example", "-tls1_3")
                s_client(port, "wanted.example", "-tls1_2", "-alpn", "http/1.1")
                curl(port, "curl.example")
                s_client(port, "third.example", "-tls1_3", "-alpn", "http/1.1")
                curl(port, "curl2.example")
                time.sleep(1)
            time.sleep(3)  # grace: the hunter forwards, the processor writes
        finally:
            rc = stop_process(h, timeout=40)
            _, herr = h.communicate()
        assert rc == 0, herr
    finally:
        stop_process(server)
        p.stop()
    # The oracle: tshark's streams of the reference capture, their SNI, and JA4 by ja4plus.
    streams: dict[str, list[int]] = {}
    for num, stream in tshark_fields(ref, "tcp", "frame.number", "tcp.stream"):
        streams.setdefault(stream, []).append(int(num))
    sni = dict(tshark_fields(
        ref, "tls.handshake.type == 1", "tcp.stream", "tls.handshake.extensions_server_name"
    ))  # fmt: skip
    ja4 = ja4_of_client_hellos(ref)
    assert len(streams) == len(sni) == len(ja4) == 6
    by_sni = {s for s, name in sni.items() if name == "wanted.example"}
    by_ja4 = {s for s, fp in ja4.items() if fp == curl_ja4}
    assert len(by_sni) == 2
    assert {sni[s] for s in by_ja4} == {"curl.example", "curl2.example"}  # curl's stack only
    wanted = by_sni | by_ja4
    with open_capture(ref) as r:
        every = [(ts, bytes(d)) for ts, _, d, _ in r.records()]
    want = [every[n - 1] for n in sorted(n for s in wanted for n in streams[s])]
    out = p.data_dir / "capture.pcap"
    with open_capture(out) as r:
        got = [(ts, bytes(d)) for ts, _, d, _ in r.records()]
    # The same frames (bytes), in capture order, at the same times (two live captures:
    # microseconds apart at most).
    assert [d for _, d in got] == [d for _, d in want]
    diffs = [abs(a - b) for (a, _), (b, _) in zip(got, want, strict=True)]
    assert max(diffs) < 1_000_000, sorted(diffs)[-5:]
    # SYN to FIN, both directions, for each captured connection.
    flags = tshark_fields(out, "tcp", "tcp.stream", "tcp.srcport", "tcp.flags.syn",
                          "tcp.flags.fin")  # fmt: skip
    for stream in {f[0] for f in flags}:
        syn = {f[1] for f in flags if f[0] == stream and f[2] in ("1", "True")}
        fin = {f[1] for f in flags if f[0] == stream and f[3] in ("1", "True")}
        assert len(syn) == 2 and len(fin) == 2, stream
    assert len({f[0] for f in flags}) == 4
    # One ECS event per captured connection, with the filter that selected it.
    (log,) = (p.data_dir / "events").glob("*.jsonl")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(events) == 4
    by_filter = {}
    for e in events:
        by_filter.setdefault(tuple(e["lc"]["filter_ids"]), []).append(e)
        assert e["destination"]["port"] == port
        assert len(e["tls"]["client"]["ja3"]) == 32 and e["tls"]["client"]["ja4"][:1] == "t"
        assert e["tls"]["server"]["ja4s"].startswith("t1")
    assert sorted(by_filter) == [("f1",), ("f2",)]
    assert {e["tls"]["client"]["ja4"] for e in by_filter[("f2",)]} == {curl_ja4}
    assert sorted(e["tls"]["client"]["server_name"] for e in by_filter[("f2",)]) == [
        "curl.example", "curl2.example"
    ]  # fmt: skip
    sni_events = by_filter[("f1",)]
    assert {e["tls"]["version"] for e in sni_events} == {"1.3", "1.2"}
    assert all(e["tls"]["client"]["server_name"] == "wanted.example" for e in sni_events)
    # ALPN: offered in both; chosen is visible in TLS 1.2's ServerHello only (TLS 1.3
    # sends it in the encrypted EncryptedExtensions).
    by_version = {e["tls"]["version"]: e for e in sni_events}
    assert by_version["1.3"]["lc"]["tls"]["alpn"] == ["h2"]
    assert "next_protocol" not in by_version["1.3"]["tls"]
    assert by_version["1.2"]["tls"]["next_protocol"] == "http/1.1"


def test_live_quic_connections_are_captured_whole(tmp_path, pki):
    """Live on lo: ngtcp2's QUIC client and server (the server may grease the QUIC bit,
    RFC 9287). A ``tls_ja4`` filter ``q13*`` captures every datagram of each QUIC
    connection, as a tcpdump capture of the same traffic has them, and each gives an
    event whose JA4 is what ja4plus computes from that capture."""
    if os.geteuid() != 0:
        pytest.skip("live capture on lo needs root")
    for tool in ("gtlsserver", "gtlsclient", "tcpdump", "tshark"):
        need(tool)
    from lc.common.pcapfile import open_capture
    from tests.hunter.test_tls_mode import _ja4plus_by_connection

    port = free_port()
    (tmp_path / "index.html").write_text("hello\n")
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    server = subprocess.Popen(
        ["gtlsserver", "-q", "-d", str(tmp_path), "127.0.0.1", str(port),
         str(pki / "processor.key"), str(pki / "processor.pem")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        set_filter(p, pki, "tls_ja4", "q13*")
        h = subprocess.Popen(
            [*LC, "hunt", "tls", "--processor", p.addr, *tls_args(pki, "hunter-live"),
             "-i", "lo", "--tls-port", str(port), "--heartbeat-interval", "0.5"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lc_env(),
        )  # fmt: skip
        try:
            wait_for(lambda: hunter_capturing(p, pki, "live"), 30, "the hunter capturing")
            ref = tmp_path / "ref.pcap"
            with tcpdump_capture(ref, f"udp port {port}"):
                for _ in range(2):
                    subprocess.run(
                        ["gtlsclient", "-q", "--exit-on-all-streams-close", "127.0.0.1",
                         str(port), f"https://127.0.0.1:{port}/index.html"],
                        capture_output=True, timeout=20, check=False,
                    )  # fmt: skip
                time.sleep(1)
            time.sleep(2)
        finally:
            rc = stop_process(h, timeout=40)
            _, herr = h.communicate()
        assert rc == 0, herr
    finally:
        stop_process(server)
        p.stop()
    with open_capture(ref) as r:
        want = [bytes(d) for _, _, d, _ in r.records()]
    with open_capture(p.data_dir / "capture.pcap") as r:
        got = [bytes(d) for _, _, d, _ in r.records()]
    assert len(want) > 6 and got == want  # every datagram, both ways, in order
    theirs = _ja4plus_by_connection(ref)
    (log,) = (p.data_dir / "events").glob("*.jsonl")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(events) == 2
    for e in events:
        assert e["lc"]["tls"]["quic"] and e["lc"]["filter_ids"] == ["f1"]
        key = ("c", e["source"]["ip"], e["source"]["port"], e["destination"]["ip"], port)
        assert theirs[key] == {e["tls"]["client"]["ja4"]}
        assert e["tls"]["client"]["ja4"].startswith("q13")
        assert e["tls"]["server"]["ja4s"].startswith("q13")  # the server's Initial, read
