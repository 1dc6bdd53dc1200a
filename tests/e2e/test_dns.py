"""`lc hunt dns` end to end: replays of the corpus and live dig/dnsmasq traffic on
loopback, against a real `lc process`; tshark is the oracle for which frames belong
to the matching transactions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lc.common.pcapfile import open_capture
from tests.conftest import need, run_lc, start_processor, tls_args

pytestmark = pytest.mark.e2e

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def set_filter(p, pki, type_: str, pattern: str, fid: str = "f1") -> None:
    r = run_lc("set", "filter", "--id", fid, "--type", type_, "--pattern", pattern,
               "--processor", p.addr, *tls_args(pki, "admin"))  # fmt: skip
    assert r.returncode == 0, r.stderr


def frames(path: Path) -> list[bytes]:
    with open_capture(path) as rd:
        return [bytes(d) for _, _, d, _ in rd.records()]


def events(p) -> list[dict]:
    out = []
    for log in sorted((p.data_dir / "events").glob("*.jsonl")):
        out += [json.loads(line) for line in log.read_text().splitlines()]
    return out


def tshark_numbers(path: Path, display_filter: str) -> list[int]:
    r = subprocess.run(
        ["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields", "-e", "frame.number"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [int(x) for x in r.stdout.split()]


def test_replay_forwards_exactly_the_matching_transactions_cname_chain_included(tmp_path, pki):
    need("tshark")
    cap = CORPUS / "dns" / "arkime_dns-wiresharkrepo.pcap"
    if not cap.exists():
        pytest.skip("corpus not present")
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    try:
        set_filter(p, pki, "dns_domain", "www.l.google.com")
        r = run_lc("hunt", "dns", "--processor", p.addr, *tls_args(pki, "hunter-h1"),
                   "-r", str(cap))  # fmt: skip
        assert r.returncode == 0, r.stderr
    finally:
        p.stop()
    # The oracle: transactions whose question or answers name www.l.google.com (the
    # www.google.com query matches through its response's CNAME), query and response.
    ids = subprocess.run(
        ["tshark", "-r", str(cap), "-Y", 'dns.qry.name == "www.l.google.com" or '
         'dns.cname == "www.l.google.com"', "-T", "fields", "-e", "dns.id"],
        capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    want = tshark_numbers(cap, " or ".join(f"dns.id == {i}" for i in set(ids)))
    assert want == [15, 16, 17, 18]
    src = frames(cap)
    assert frames(p.data_dir / "capture.pcap") == [src[n - 1] for n in want]
    evs = [e for e in events(p) if e["event"]["dataset"] == "lc.dns"]
    assert sorted(e["dns"]["question"]["name"] for e in evs) == [
        "www.google.com",
        "www.l.google.com",
    ]
    for e in evs:
        assert e["dns"]["type"] == "answer" and e["lc"]["filter_ids"] == ["f1"]
        assert e["event"]["duration"] == e["lc"]["dns"]["rtt_ns"] > 0
        assert e["dns"]["question"]["registered_domain"] == "google.com"
        assert e["source"]["port"] != 53 and e["destination"]["port"] == 53
    cname = next(e for e in evs if e["dns"]["question"]["name"] == "www.google.com")
    assert cname["dns"]["answers"][0] == {"name": "www.google.com", "type": "CNAME",
                                          "class": "IN", "ttl": cname["dns"]["answers"][0]["ttl"],
                                          "data": "www.l.google.com"}  # fmt: skip
    assert "transactions: 19 seen, 2 matched" in r.stdout, r.stdout


def test_tunnel_captures_from_two_hunters_raise_one_alert_ordinary_traffic_none(tmp_path, pki):
    """Two hunters replay the same iodine tunnel; the processor adds their statistics
    up and raises one alert for pirate.sea (debounced: the second hunter's report
    raises no second one), written once as an event.kind alert and listed by
    `lc list alerts` with both hunters. An ordinary capture raises none."""
    tunnel = CORPUS / "dns" / "elastic_dns-tunnel-iodine.pcap"
    plain = CORPUS / "dns" / "arkime_dns-wiresharkrepo.pcap"
    if not tunnel.exists():
        pytest.skip("corpus not present")
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    try:
        for hid, cap in (("h1", tunnel), ("h2", tunnel), ("h1", plain)):
            r = run_lc("hunt", "dns", "--processor", p.addr, *tls_args(pki, f"hunter-{hid}"),
                       "-r", str(cap))  # fmt: skip
            assert r.returncode == 0, r.stderr
        r = run_lc("list", "alerts", "--processor", p.addr, *tls_args(pki, "admin"))
        assert r.returncode == 0, r.stderr
        alerts = json.loads(r.stdout)
        r = run_lc("list", "alerts", "--processor", p.addr, *tls_args(pki, "hunter-h1"))
        assert r.returncode != 0  # admin certificate only
    finally:
        p.stop()
    assert [a["domain"] for a in alerts] == ["pirate.sea"]
    (a,) = alerts
    assert a["score"] >= 0.7 and a["hunters"] == ["h1", "h2"]
    assert set(a["components"]) >= {"info", "carrier", "odd", "types", "evidence", "rate"}
    assert a["clients"] and a["first_seen"] < a["last_seen"]
    kinds = [e for e in events(p) if e["event"]["kind"] == "alert"]
    assert len(kinds) == 1
    (al,) = kinds
    assert al["lc"]["dns_tunnel"]["domain"] == "pirate.sea"
    assert al["dns"]["question"]["registered_domain"] == "pirate.sea"


def _write_pcap(path: Path, records: list[tuple[int, bytes]]) -> None:
    """A nanosecond pcap (Ethernet) of (time, frame) records."""
    import struct

    out = [struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1)]
    for ts, data in records:
        sec, ns = divmod(ts, 10**9)
        out.append(struct.pack("<IIII", sec, ns, len(data), len(data)) + data)
    path.write_bytes(b"".join(out))


def test_a_tunnel_split_over_two_hunters_is_one_alert_at_the_processors_threshold(tmp_path, pki):
    """The iodine tunnel's first six transactions go past hunter h1, the last six past
    h2: neither half alerts alone, their sum at the processor does, once, naming both
    hunters (event and `lc list alerts`). With `--tunneling-threshold 0.95` the same
    traffic raises none."""
    cap = CORPUS / "dns" / "dmachard_iodine.pcap"
    if not cap.exists():
        pytest.skip("corpus not present")
    with open_capture(cap) as rd:
        recs = [(ts, bytes(d)) for ts, _, d, _ in rd.records()]
    assert len(recs) == 24  # 12 queries, each with its response
    halves = [tmp_path / "a.pcap", tmp_path / "b.pcap"]
    _write_pcap(halves[0], recs[:12])
    _write_pcap(halves[1], recs[12:])

    def run(where: Path, *extra: str) -> tuple[list[list[dict]], object]:
        where.mkdir()
        p = start_processor(where, tls_args(pki, "processor"), *extra)
        listed = []
        try:
            for hid, half in zip(("h1", "h2"), halves, strict=True):
                r = run_lc("hunt", "dns", "--processor", p.addr, *tls_args(pki, f"hunter-{hid}"),
                           "-r", str(half))  # fmt: skip
                assert r.returncode == 0, r.stderr
                r = run_lc("list", "alerts", "--processor", p.addr, *tls_args(pki, "admin"))
                assert r.returncode == 0, r.stderr
                listed.append(json.loads(r.stdout))
        finally:
            p.stop()
        return listed, p

    (after_h1, after_h2), p = run(tmp_path / "default")
    assert after_h1 == []
    assert [(a["domain"], a["hunters"], a["clients"], a["queries"]) for a in after_h2] == [
        ("biillpi.com", ["h1", "h2"], ["192.168.1.17"], 12)
    ]
    assert after_h2[0]["score"] >= 0.7
    alerts = [e for e in events(p) if e["event"]["kind"] == "alert"]
    assert len(alerts) == 1 and alerts[0]["lc"]["dns_tunnel"]["hunters"] == ["h1", "h2"]
    (after_h1, after_h2), p = run(tmp_path / "strict", "--tunneling-threshold", "0.95")
    assert after_h1 == after_h2 == []
    assert not [e for e in events(p) if e["event"]["kind"] == "alert"]


def _dnsmasq(port: int, tmp: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
         "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={port}",
         "--pid-file=" + str(tmp / "dnsmasq.pid"), "--user=root", "--log-facility=-",
         "--host-record=www.watched.test,10.1.2.3", "--host-record=www.other.test,10.9.9.9",
         "--cname=alias.other.test,www.watched.test", "--address=/tun.test/10.7.7.7",
         "--address=/plain.test/10.8.8.8"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_live_dig_and_dnsmasq_udp_and_tcp_with_a_tunnel_like_workload(tmp_path, pki):
    """dig against dnsmasq on loopback, captured by `lc hunt dns -i lo` with a
    dns_domain filter and by tcpdump: the unified PCAP holds exactly the DNS frames of
    the matching transactions (a direct name over UDP and TCP, a CNAME alias over
    UDP), as tshark reads the reference; each transaction's event has its RTT. Then a
    tunnel-like workload (long random labels, TXT) raises one alert for its domain,
    and an ordinary one (names of words) none."""
    import os
    import random
    import time

    from tests.conftest import LC, lc_env
    from tests.voip_tools import free_port, stop_process, tcpdump_capture

    if os.geteuid() != 0:
        pytest.skip("live capture on lo needs root")
    for tool in ("dnsmasq", "dig", "tcpdump", "tshark"):
        need(tool)
    port = free_port()
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    dns = _dnsmasq(port, tmp_path)
    set_filter(p, pki, "dns_domain", "*.watched.test")
    h = subprocess.Popen(
        [*LC, "hunt", "dns", "--dns-port", str(port), "--tunnel-report", "1",
         "--processor", p.addr, *tls_args(pki, "hunter-live"), "-i", "lo",
         "--heartbeat-interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lc_env(),
    )  # fmt: skip
    ref = tmp_path / "ref.pcap"
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    tunnel = ["".join(rng.choice(alphabet) for _ in range(50)) + ".t.tun.test" for _ in range(40)]
    words = ["mail", "www", "api", "cdn", "shop", "blog", "news", "static", "img", "login"]
    plain = [f"{w}.plain.test" for w in words] * 3
    batch = tmp_path / "queries"
    batch.write_text("".join(f"{n} TXT\n" for n in tunnel) + "".join(f"{n} A\n" for n in plain))
    try:
        time.sleep(3)  # the hunter has its filter and captures
        dig = ["dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=2"]
        with tcpdump_capture(ref, f"port {port}"):
            for args in (["www.watched.test"], ["+tcp", "www.watched.test"],
                         ["alias.other.test"], ["www.other.test"]):  # fmt: skip
                r = subprocess.run([*dig, *args], capture_output=True, text=True, timeout=20)
                assert "status: NOERROR" in r.stdout, r.stdout
            subprocess.run([*dig, "+short", "-f", str(batch)], capture_output=True, timeout=60)
            time.sleep(1)
        time.sleep(2)
    finally:
        rc = stop_process(h, timeout=40)
        _, herr = h.communicate()
        stop_process(dns)
    try:
        assert rc == 0, herr
        r = run_lc("list", "alerts", "--processor", p.addr, *tls_args(pki, "admin"))
        assert r.returncode == 0, r.stderr
        alerts = json.loads(r.stdout)
    finally:
        p.stop()
    out = frames(p.data_dir / "capture.pcap")
    got = subprocess.run(
        ["tshark", "-r", str(ref), "-d", f"udp.port=={port},dns", "-d", f"tcp.port=={port},dns",
         "-Y", 'dns.flags.response == 1 and (dns.qry.name matches "watched\\\\.test$" '
         'or dns.cname matches "watched\\\\.test$")', "-T", "fields", "-e", "dns.id",
         "-e", "tcp.stream"],
        capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    assert len(got) == 3, got
    rows = [[*line.split("\t"), ""][:2] for line in got]
    udp_ids = [i for i, stream in rows if not stream]
    streams = [stream for _, stream in rows if stream]
    assert len(udp_ids) == 2 and len(streams) == 1, got
    # UDP: the query and response frames; TCP: the whole connection (handshake to the
    # last ACK after both FINs, both directions), as tshark's tcp.stream has it.
    want = tshark_numbers_decoded(
        ref, port, "(udp and (" + " or ".join(f"dns.id == {i}" for i in udp_ids) + "))"
        f" or tcp.stream == {streams[0]}", dns_only=False,
    )  # fmt: skip
    src = frames(ref)
    conn = tshark_numbers_decoded(ref, port, f"tcp.stream == {streams[0]}", dns_only=False)
    assert len(conn) >= 8  # SYN, SYN-ACK, ACK, query, response, ACKs, FINs
    assert set(conn) <= set(want)
    assert out == [src[n - 1] for n in want]
    evs = [e for e in events(p) if e["event"]["kind"] == "event"]
    assert sorted(e["dns"]["question"]["name"] for e in evs) == [
        "alias.other.test", "www.watched.test", "www.watched.test"]  # fmt: skip
    assert sorted(e["network"]["transport"] for e in evs) == ["tcp", "udp", "udp"]
    assert all(e["event"]["duration"] > 0 and e["dns"]["response_code"] == "NOERROR"
               for e in evs)  # fmt: skip
    assert [a["domain"] for a in alerts] == ["tun.test"], alerts
    assert alerts[0]["hunters"] == ["live"] and alerts[0]["clients"] == ["127.0.0.1"]


def tshark_numbers_decoded(
    path: Path, port: int, display_filter: str, dns_only: bool = True
) -> list[int]:
    flt = f"dns and ({display_filter})" if dns_only else display_filter
    r = subprocess.run(
        ["tshark", "-r", str(path), "-d", f"udp.port=={port},dns", "-d", f"tcp.port=={port},dns",
         "-Y", flt, "-T", "fields", "-e", "frame.number"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [int(x) for x in r.stdout.split()]
