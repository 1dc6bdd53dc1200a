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
