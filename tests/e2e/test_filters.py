"""Filters end to end: the admin CLI, the SQLite store, pushing to running hunters.

Real processor and hunter processes on loopback; tshark is the oracle for which
packets of a replayed capture a filter selects.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from lc.common.pcapfile import PcapWriter, open_capture
from tests.conftest import ROOT, lc_env, need, run_lc, start_hunter, start_processor, tls_args

SAMPLE = ROOT / "captures" / "sip-call.pcap"
pytestmark = pytest.mark.e2e


def admin(proc, pki, *args: str, timeout: float = 60):
    return run_lc(*args, "--processor", proc.addr, *tls_args(pki, "admin"), timeout=timeout)


def ok_json(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def payloads(path: Path) -> list[bytes]:
    with open_capture(path) as r:
        return [bytes(d) for _, _, d, _ in r.records()]


def tshark_frames(path: Path, display_filter: str) -> list[int]:
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [int(x) for x in out.split()]


# -- the admin CLI and the store ------------------------------------------------------


def test_set_list_show_rm_and_validation(pki, processor):
    r = ok_json(
        admin(
            processor,
            pki,
            "set",
            "filter",
            "--type",
            "sip_user",
            "--pattern",
            "alice",
            "--id",
            "f-alice",
            "--description",
            "Alice's calls",
        )
    )
    assert r["filters"][0]["id"] == "f-alice" and r["version"] == 1
    r = ok_json(
        admin(
            processor,
            pki,
            "set",
            "filter",
            "--type",
            "ip_address",
            "--pattern",
            "10.1.0.0/16",
            "--hunters",
            "h1,h2",
            "--disabled",
        )
    )
    generated = r["filters"][0]["id"]
    assert generated and r["filters"][0]["hunters"] == ["h1", "h2"]
    assert r["filters"][0]["enabled"] is False
    listed = ok_json(admin(processor, pki, "list", "filters"))
    assert sorted(f["id"] for f in listed) == sorted(["f-alice", generated])
    shown = ok_json(admin(processor, pki, "show", "filter", "--id", "f-alice"))
    assert (shown["type"], shown["pattern"], shown["description"]) == (
        "sip_user",
        "alice",
        "Alice's calls",
    )

    bad = [
        (["--type", "sip_usr", "--pattern", "x"], "unknown"),
        (["--type", "sip_user", "--pattern", ""], "empty"),
        (["--type", "bpf", "--pattern", "udp prot 5060"], "invalid BPF filter 'udp prot 5060'"),
        (["--type", "ip_address", "--pattern", "10.0.0.0/33"], "10.0.0.0/33"),
        (["--type", "tls_ja3", "--pattern", "abc"], "32"),
        (["--type", "tls_ja4", "--pattern", "nonsense"], "JA4"),
    ]
    for args, text in bad:
        r = admin(processor, pki, "set", "filter", *args)
        assert r.returncode == 3, (args, r.stderr)
        err = json.loads(r.stderr)
        assert err["code"] == 3 and text.lower() in err["error"].lower(), (args, err)
        # No --id: the message names no id made up by the processor.
        assert not re.search(r"f-[0-9a-f]{12}", err["error"]), err
    r = admin(processor, pki, "set", "filter", "--type", "sip_user", "--pattern", " ")
    assert json.loads(r.stderr)["error"] == "filter (no id given): empty sip_user pattern"
    assert len(ok_json(admin(processor, pki, "list", "filters"))) == 2  # store unchanged

    r = admin(processor, pki, "rm", "filter", "--id", "nope")
    assert r.returncode == 4 and json.loads(r.stderr)["code"] == 4
    assert ok_json(admin(processor, pki, "rm", "filter", "--id", "f-alice"))["removed"] == "f-alice"
    assert [f["id"] for f in ok_json(admin(processor, pki, "list", "filters"))] == [generated]
    r = admin(processor, pki, "show", "filter", "--id", "f-alice")
    assert r.returncode == 4


def test_yaml_import_and_json_export_round_trip(tmp_path, pki, processor):
    y = tmp_path / "filters.yaml"
    y.write_text(
        "filters:\n"
        "  - {id: a, type: sip_user, pattern: 'bob*'}\n"
        "  - id: b\n    type: phone_number\n    pattern: '+49 30 1234567'\n    hunters: [h1]\n"
        "  - {id: c, type: dns_domain, pattern: '*.example.com', enabled: false}\n"
    )
    r = ok_json(admin(processor, pki, "set", "filter", "-f", str(y)))
    assert [f["id"] for f in r["filters"]] == ["a", "b", "c"]
    exported = tmp_path / "export.json"
    exported.write_text(admin(processor, pki, "list", "filters").stdout)
    # Import the export again: same filters, one new version.
    r2 = ok_json(admin(processor, pki, "set", "filter", "-f", str(exported)))
    strip = lambda fs: [{k: v for k, v in f.items() if k != "version"} for f in fs]  # noqa: E731
    assert strip(r2["filters"]) == strip(json.loads(exported.read_text()))
    # A bad entry refuses the whole file.
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {id: ok, type: sip_user, pattern: carol}\n- {id: no, type: codec}\n")
    r = admin(processor, pki, "set", "filter", "-f", str(bad))
    assert r.returncode == 3, r.stderr
    assert "ok" not in [f["id"] for f in ok_json(admin(processor, pki, "list", "filters"))]


def test_environment_supplies_connection_flags(pki, processor):
    env = lc_env(
        LC_PROCESSOR=processor.addr,
        LC_TLS_CERT=str(pki / "admin.pem"),
        LC_TLS_KEY=str(pki / "admin.key"),
        LC_TLS_CA=str(pki / "ca.pem"),
    )
    r = run_lc("set", "filter", "--type", "codec", "--pattern", "PCMA", "--id", "c1", env=env)
    assert r.returncode == 0, r.stderr
    assert [f["id"] for f in json.loads(run_lc("list", "filters", env=env).stdout)] == ["c1"]


def test_only_admin_may_change_filters(pki, processor):
    r = run_lc(
        "set",
        "filter",
        "--type",
        "sip_user",
        "--pattern",
        "x",
        "--processor",
        processor.addr,
        *tls_args(pki, "hunter-h1"),
    )
    assert r.returncode == 1
    assert "admin" in json.loads(r.stderr)["error"]
    assert ok_json(admin(processor, pki, "list", "filters")) == []


def test_filters_survive_a_processor_restart(tmp_path, pki):
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    try:
        ok_json(
            admin(
                p,
                pki,
                "set",
                "filter",
                "--type",
                "bpf",
                "--pattern",
                "udp port 5070",
                "--id",
                "sip",
            )
        )
        ok_json(admin(p, pki, "set", "filter", "--type", "ip_address", "--pattern", "::1"))
        before = ok_json(admin(p, pki, "list", "filters"))
    finally:
        assert p.stop() == 0
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    try:
        assert ok_json(admin(p, pki, "list", "filters")) == before
        assert ok_json(admin(p, pki, "show", "status"))["filter_version"] == 2
    finally:
        p.stop()


# -- applying filters -------------------------------------------------------------------


def test_replay_applies_existing_bpf_filter_from_the_first_packet(pki, processor):
    need("tshark")
    r = ok_json(
        admin(
            processor,
            pki,
            "set",
            "filter",
            "--type",
            "bpf",
            "--pattern",
            "udp port 5070",
            "--id",
            "sip-5070",
        )
    )
    assert r["version"] == 1
    h = run_lc(
        "hunt", "--processor", processor.addr, *tls_args(pki, "hunter-h1"), "-r", str(SAMPLE)
    )
    assert h.returncode == 0, h.stderr
    st = ok_json(admin(processor, pki, "show", "status"))
    processor.stop()
    want_frames = tshark_frames(SAMPLE, "udp.port == 5070")
    assert want_frames, "the sample has SIP on 5070"
    all_payloads = payloads(SAMPLE)
    want = [all_payloads[i - 1] for i in want_frames]
    assert payloads(processor.data_dir / "capture.pcap") == want
    assert st["filter_matches"] == {"sip-5070": len(want)}


def test_ip_address_filters_select_source_or_destination(tmp_path, pki, processor):
    need("tshark")
    cap = tmp_path / "ips.pcap"
    _write_mixed_ips(cap)
    for pat in ("10.9.0.0/24", "2001:db8::1", "192.0.2.7"):
        ok_json(admin(processor, pki, "set", "filter", "--type", "ip_address", "--pattern", pat))
    ok_json(
        admin(
            processor,
            pki,
            "set",
            "filter",
            "--type",
            "ip_address",
            "--pattern",
            "198.51.100.0/24",
            "--disabled",
        )
    )
    ok_json(
        admin(
            processor,
            pki,
            "set",
            "filter",
            "--type",
            "ip_address",
            "--pattern",
            "203.0.113.0/24",
            "--hunters",
            "someone-else",
        )
    )
    h = run_lc("hunt", "--processor", processor.addr, *tls_args(pki, "hunter-h1"), "-r", str(cap))
    assert h.returncode == 0, h.stderr
    processor.stop()
    frames = tshark_frames(
        cap, "ip.addr == 10.9.0.0/24 || ipv6.addr == 2001:db8::1 || ip.addr == 192.0.2.7"
    )
    allp = payloads(cap)
    assert 0 < len(frames) < len(allp)
    assert payloads(processor.data_dir / "capture.pcap") == [allp[i - 1] for i in frames]


def test_no_filter_policy_deny_forwards_nothing_until_a_filter_exists(pki, processor):
    h = run_lc(
        "hunt",
        "--processor",
        processor.addr,
        *tls_args(pki, "hunter-h1"),
        "-r",
        str(SAMPLE),
        "--no-filter-policy",
        "deny",
    )
    assert h.returncode == 0, h.stderr
    assert "forwarded 0" in h.stdout
    assert ok_json(admin(processor, pki, "show", "status"))["packets_written"] == 0


def _write_mixed_ips(path: Path) -> None:
    w = PcapWriter(path, 1)
    addrs4 = ["10.9.0.5", "10.9.1.5", "192.0.2.7", "192.0.2.8", "198.51.100.1", "203.0.113.9"]
    addrs6 = ["2001:db8::1", "2001:db8::2"]
    ts = 1_700_000_000_000_000_000
    n = 0
    for i, a in enumerate(addrs4):
        for j, b in enumerate(addrs4):
            if a == b:
                continue
            ts += 1000
            payload = f"{a}->{b}".encode()
            udp = struct.pack("!HHHH", 1000 + i, 2000 + j, 8 + len(payload), 0) + payload
            ip = struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                20 + len(udp),
                n,
                0,
                64,
                17,
                0,
                socket.inet_aton(a),
                socket.inet_aton(b),
            )
            w.write(ts, bytes(12) + b"\x08\x00" + ip + udp)
            n += 1
    for a in addrs6:
        for b in ["2001:db8::9", *addrs6]:
            if a == b:
                continue
            ts += 1000
            payload = f"{a}->{b}".encode()
            udp = struct.pack("!HHHH", 3000, 4000, 8 + len(payload), 0) + payload
            ip6 = struct.pack(
                "!IHBB16s16s",
                6 << 28,
                len(udp),
                17,
                64,
                socket.inet_pton(socket.AF_INET6, a),
                socket.inet_pton(socket.AF_INET6, b),
            )
            w.write(ts, bytes(12) + b"\x86\xdd" + ip6 + udp)
    w.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
def test_live_hunter_applies_changes_without_restart(tmp_path, pki, processor):
    ports = [_free_udp_port() for _ in range(2)]
    bpf = f"udp port {ports[0]} or udp port {ports[1]}"
    # A filter no generic hunter applies: it only makes the first set's version 1, so
    # that the test can see when the hunter has applied it and started capturing.
    ok_json(admin(processor, pki, "set", "filter", "--type", "sip_user", "--pattern", "nobody"))
    hunter = start_hunter(
        processor.addr,
        pki,
        "live",
        "-i",
        "lo",
        "-f",
        bpf,
        "--batch-timeout",
        "20",
        "--heartbeat-interval",
        "0.3",
    )
    sent: dict[str, list[bytes]] = {}
    try:
        _wait(lambda: _applied(processor, pki, "live", 1), 20)
        sent["open"] = _send(ports, "open")  # no filter, policy allow: both ports
        _settle(processor, pki, 2 * 40)
        v = ok_json(
            admin(
                processor,
                pki,
                "set",
                "filter",
                "--type",
                "bpf",
                "--pattern",
                f"udp dst port {ports[0]}",
                "--id",
                "only-a",
            )
        )["version"]
        _wait(lambda: _applied(processor, pki, "live", v), 10)
        sent["a-only"] = _send(ports, "aonly")
        _settle(processor, pki, 2 * 40 + 40)
        v = ok_json(admin(processor, pki, "rm", "filter", "--id", "only-a"))["version"]
        _wait(lambda: _applied(processor, pki, "live", v), 10)
        sent["open-again"] = _send(ports, "again")
        _settle(processor, pki, 2 * 40 + 40 + 2 * 40)
        st = ok_json(admin(processor, pki, "show", "status"))
    finally:
        hunter.send_signal(signal.SIGTERM)
        _, err = hunter.communicate(timeout=60)
    assert hunter.returncode == 0, err
    processor.stop()
    got = [p[-12:] for p in payloads(processor.data_dir / "capture.pcap")]
    expect = sent["open"] + [x for x in sent["a-only"] if x.startswith(b"A")] + sent["open-again"]
    assert sorted(got) == sorted(expect)
    assert st["filter_matches"] == {"only-a": 40}


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send(ports: list[int], tag: str) -> list[bytes]:
    """40 datagrams to each port, each ending in a unique 12-byte marker."""
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(40):
            for name, port in zip("AB", ports, strict=True):
                marker = f"{name}{tag[:5]:<5}{i:06d}".encode()
                s.sendto(b"payload " + marker, ("127.0.0.1", port))
                out.append(marker)
    return out


def _applied(proc, pki, hunter_id: str, version: int) -> bool:
    r = admin(proc, pki, "show", "hunter", "--id", hunter_id)
    if r.returncode != 0:
        return False
    h = json.loads(r.stdout)
    return h["state"] == "connected" and h["filter_version"] >= version


def _settle(proc, pki, packets: int) -> None:
    _wait(lambda: ok_json(admin(proc, pki, "show", "status"))["packets_written"] >= packets, 10)


def _wait(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture on lo needs root")
def test_bpf_swaps_lose_nothing_the_filters_keep(pki, processor):
    """Port A is wanted throughout; port B is added and removed while traffic flows.

    The kernel filter is swapped twice under a steady stream: every datagram to A must
    arrive, and datagrams to B only while B's filter is in force.
    """
    pa, pb = _free_udp_port(), _free_udp_port()
    ok_json(
        admin(
            processor,
            pki,
            "set",
            "filter",
            "--type",
            "bpf",
            "--pattern",
            f"udp dst port {pa}",
            "--id",
            "a",
        )
    )
    hunter = start_hunter(
        processor.addr,
        pki,
        "live",
        "-i",
        "lo",
        "-f",
        f"udp port {pa} or udp port {pb}",
        "--batch-timeout",
        "20",
        "--heartbeat-interval",
        "0.3",
    )
    sent_a: list[bytes] = []
    sent_b: list[bytes] = []
    try:
        _wait(lambda: _applied(processor, pki, "live", 1), 20)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            v = None
            for i in range(1500):
                ma, mb = f"A{i:011d}".encode(), f"B{i:011d}".encode()
                s.sendto(b"payload " + ma, ("127.0.0.1", pa))
                s.sendto(b"payload " + mb, ("127.0.0.1", pb))
                sent_a.append(ma)
                sent_b.append(mb)
                if i == 400:
                    v = ok_json(
                        admin(
                            processor,
                            pki,
                            "set",
                            "filter",
                            "--type",
                            "bpf",
                            "--pattern",
                            f"udp dst port {pb}",
                            "--id",
                            "b",
                        )
                    )["version"]
                if i == 1000:
                    _wait(lambda v=v: _applied(processor, pki, "live", v), 10)
                    ok_json(admin(processor, pki, "rm", "filter", "--id", "b"))
                time.sleep(0.001)
        _wait(lambda: _applied(processor, pki, "live", v + 1), 10)
        time.sleep(0.5)
    finally:
        hunter.send_signal(signal.SIGTERM)
        _, err = hunter.communicate(timeout=60)
    assert hunter.returncode == 0, err
    st = ok_json(admin(processor, pki, "show", "status"))
    processor.stop()
    got = [p[-12:] for p in payloads(processor.data_dir / "capture.pcap")]
    got_a = [m for m in got if m.startswith(b"A")]
    got_b = [m for m in got if m.startswith(b"B")]
    assert got_a == sent_a  # all of A, in order, across both swaps
    assert 0 < len(got_b) < len(sent_b)
    idx = sorted(int(m[1:]) for m in got_b)
    assert idx == list(range(idx[0], idx[-1] + 1))  # one unbroken run while B was wanted
    assert idx[0] >= 400 and idx[-1] < 1500
    assert st["filter_matches"]["a"] == 1500 and st["filter_matches"]["b"] == len(got_b)


def test_hunter_reconnecting_after_missed_changes_ends_with_the_processors_set(tmp_path, pki):
    """The processor restarts and filters change while the hunter is cut off from it."""
    port = _free_tcp_port()
    listen = ["--listen", f"127.0.0.1:{port}"]
    p = start_processor(tmp_path, tls_args(pki, "processor"), *listen)
    ok_json(
        admin(
            p, pki, "set", "filter", "--type", "ip_address", "--pattern", "192.0.2.1", "--id", "old"
        )
    )
    hunter = start_hunter(
        f"127.0.0.1:{port}",
        pki,
        "h1",
        "-r",
        str(SAMPLE),
        "--replay-speed",
        "0.5",
        "--heartbeat-interval",
        "0.3",
    )
    try:
        _wait(lambda: _applied(p, pki, "h1", 1), 20)
        assert p.stop() == 0
        # While the processor is down nobody can change filters; so the changes the hunter
        # misses are made the moment it is back, before the hunter has resubscribed.
        p = start_processor(tmp_path, tls_args(pki, "processor"), *listen)
        ok_json(admin(p, pki, "rm", "filter", "--id", "old"))
        ok_json(
            admin(
                p,
                pki,
                "set",
                "filter",
                "--type",
                "bpf",
                "--pattern",
                "udp port 5070",
                "--id",
                "new",
            )
        )
        ok_json(
            admin(
                p,
                pki,
                "set",
                "filter",
                "--type",
                "ip_address",
                "--pattern",
                "198.51.100.0/24",
                "--id",
                "other",
                "--hunters",
                "h2",
            )
        )
        _wait(lambda: _applied(p, pki, "h1", 4), 30)
        h = ok_json(admin(p, pki, "show", "hunter", "--id", "h1"))
        assert h["filter_version"] == h["processor_filter_version"] == 4
        assert [f["id"] for f in h["filters"]] == ["new"]
    finally:
        hunter.send_signal(signal.SIGTERM)
        hunter.communicate(timeout=60)
        p.stop()


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
