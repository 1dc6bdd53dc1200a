"""VoIP end to end: `lc hunt voip` -> `lc process --per-call-pcap-dir`, checked by tshark.

The oracle is tshark on an independent capture of the same traffic (tcpdump, live) or
on the replayed file: for every call it names the SIP frames (by Call-ID) and the
RTP/RTCP frames (tied to the call by its SDP). Each per-call file lc writes must hold
exactly those packets, in order.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from lc.common.pcapfile import open_capture
from tests.conftest import LC, lc_env, need, run_lc, start_processor, tls_args
from tests.voip_tools import (
    call_packets,
    calls_by_tshark,
    free_port,
    make_voip_capture,
    place_calls,
    run_uas,
    stop_process,
    tcpdump_capture,
)

pytestmark = pytest.mark.e2e


def records(path: Path) -> list[tuple[int, bytes]]:
    with open_capture(path) as r:
        return [(ts, bytes(d)) for ts, _, d, _ in r.records()]


def list_calls(p, pki, *args: str) -> list[dict]:
    r = run_lc("list", "calls", *args, "--processor", p.addr, *tls_args(pki, "admin"))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def set_filter(p, pki, type_: str, pattern: str, fid: str = "f1") -> None:
    r = run_lc("set", "filter", "--id", fid, "--type", type_, "--pattern", pattern,
               "--processor", p.addr, *tls_args(pki, "admin"))  # fmt: skip
    assert r.returncode == 0, r.stderr


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def live_calls(
    tmp_path, pki, user_filter: str, users: list[str], transport: str = "udp", **calls_kw
):
    """A processor writing per-call files, `lc hunt voip -i lo` with a sip_user filter, a
    tcpdump reference and a sipp UAS; places the calls, stops everything.

    Returns (processor (still running), placed calls, reference capture, UAS port).
    """
    if os.geteuid() != 0:
        pytest.skip("live capture on lo needs root")
    need("sipp")
    need("tcpdump")
    need("tshark")
    calls_dir = tmp_path / "calls"
    p = start_processor(tmp_path, tls_args(pki, "processor"), "--per-call-pcap-dir", str(calls_dir))
    uas_port = free_port()
    set_filter(p, pki, "sip_user", user_filter)
    media = ["--rtp-port-range", "20000-40000"] if transport == "udp" else []
    h = subprocess.Popen(
        [*LC, "hunt", "voip", "--processor", p.addr, *tls_args(pki, "hunter-live"),
         "-i", "lo", "--sip-port", str(uas_port), *media, "--heartbeat-interval", "0.5",
         "--call-grace", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lc_env(),
    )  # fmt: skip
    uas = None
    try:
        wait_for(lambda: hunter_capturing(p, pki, "live"), 30, "the hunter capturing")
        ref = tmp_path / "ref.pcap"
        bpf = (
            f"udp and (port {uas_port} or portrange 20000-40000)"
            if transport == "udp"
            else f"tcp port {uas_port}"
        )
        with tcpdump_capture(ref, bpf):
            uas = run_uas(uas_port, transport=transport, media_port=20000,
                          workdir=tmp_path / "uas")  # fmt: skip
            placed = place_calls(uas_port, users, from_user="zed", transport=transport,
                                 workdir=tmp_path / "uac", **calls_kw)  # fmt: skip
            time.sleep(2)  # the last RTP and the 200 to BYE reach tcpdump and the hunter
        time.sleep(3)  # grace: the hunter forwards, the processor writes
    finally:
        if uas is not None:
            stop_process(uas)
        rc = stop_process(h, timeout=40)
        _, herr = h.communicate()
    assert rc == 0, herr
    return p, placed, ref, uas_port


def test_live_sipp_calls_only_the_targeted_users_calls_each_in_its_own_file(tmp_path, pki):
    p, placed, ref, uas_port = live_calls(
        tmp_path, pki, "alice", ["alice", "bob", "alice", "carol"],
        concurrent=4, call_seconds=3, media_port=30000,
    )  # fmt: skip
    calls_dir = tmp_path / "calls"
    calls = list_calls(p, pki)
    by_user = list_calls(p, pki, "--user", "alice")
    p.stop()
    oracle = calls_by_tshark(ref, sip_ports=(uas_port,))
    alice = {cid for cid, who in placed.call_ids.items() if who == "alice"}
    assert len(alice) == 2 and alice <= set(oracle)
    assert {c["call_id"] for c in calls} == alice  # only alice's calls were captured
    assert {c["call_id"] for c in by_user} == alice
    want = call_packets(ref, oracle, alice)
    for c in calls:
        assert c["state"] == "ended" and c["to_user"] == "alice" and c["from_user"] == "zed"
        got = records(Path(c["pcap_path"]))
        # Live: the hunter and tcpdump each stamp packets themselves; bytes and order
        # must be exactly tshark's frames of that call (SIP by Call-ID, RTP by SDP).
        assert [b for _, b in got] == [b for _, b in want[c["call_id"]]]
        assert len(oracle[c["call_id"]].rtp) > 50
        assert c["packets"] == len(got) and c["rtp_packets"] == len(oracle[c["call_id"]].rtp)
    assert len(list(calls_dir.glob("*.pcap"))) == 2


def hunter_capturing(p, pki, hid: str) -> bool:
    r = run_lc("show", "hunter", "--id", hid, "--processor", p.addr, *tls_args(pki, "admin"))
    if r.returncode != 0:
        return False
    h = json.loads(r.stdout)
    return h["state"] == "connected" and h["last_heartbeat_ns"] > 0


@pytest.mark.parametrize("tcp_share", [0.0, 1.0], ids=["udp", "tcp"])
def test_replay_writes_each_target_call_exactly_as_tshark_sees_it(tmp_path, pki, tcp_share):
    """Replayed synthetic traffic (long calls, SIP over UDP or TCP with messages split
    across segments and two in one segment): per-call files equal tshark's frames of
    each call, timestamps included; calls of other users get no file."""
    need("tshark")
    cap = tmp_path / "calls.pcap"
    # 65 s calls (3250 RTP packets each way), so RTP continues past every 60 s limit.
    info = make_voip_capture(cap, calls=8, rtp_per_call=6500, match_every=4,
                             concurrent=8, tcp_share=tcp_share)  # fmt: skip
    targets = {cid for cid, c in info["calls"].items() if c["target"]}
    assert len(targets) == 2
    calls_dir = tmp_path / "calls"
    p = start_processor(tmp_path, tls_args(pki, "processor"), "--per-call-pcap-dir", str(calls_dir))
    try:
        set_filter(p, pki, "sip_user", "target-*")
        r = run_lc("hunt", "voip", "--processor", p.addr, *tls_args(pki, "hunter-h1"),
                   "-r", str(cap))  # fmt: skip
        assert r.returncode == 0, r.stderr
        calls = list_calls(p, pki)
    finally:
        p.stop()
    oracle = calls_by_tshark(cap, sip_ports=(5060,))
    assert {c["call_id"] for c in calls} == targets
    want = call_packets(cap, oracle, targets)
    for c in calls:
        got = records(Path(c["pcap_path"]))
        assert got == want[c["call_id"]]
        assert got[-1][0] - got[0][0] > 60 * 10**9  # the file spans the whole long call
        assert sum(1 for _ in got) == info["calls"][c["call_id"]]["packets"] - info["calls"][
            c["call_id"]
        ].get("tcp_ctl", 0)
        assert c["state"] == "ended"
    assert len(list(calls_dir.glob("*.pcap"))) == len(targets)


def test_per_call_files_stay_exact_across_a_processor_sigkill(tmp_path, pki):
    """SIGKILL the processor in the middle of calls and restart it with the same
    arguments: each call's file continues and holds its packets exactly once."""
    import signal

    from tests.e2e.test_delivery import restart

    need("tshark")
    cap = tmp_path / "calls.pcap"
    info = make_voip_capture(cap, calls=4, rtp_per_call=2000, match_every=1, concurrent=4)
    port = free_port()
    calls_dir = tmp_path / "calls"
    p = start_processor(tmp_path, tls_args(pki, "processor"), "--listen", f"127.0.0.1:{port}",
                        "--per-call-pcap-dir", str(calls_dir))  # fmt: skip
    set_filter(p, pki, "sip_user", "target-*")
    h = subprocess.Popen(
        [*LC, "hunt", "voip", "--processor", p.addr, *tls_args(pki, "hunter-h1"), "-r", str(cap),
         "--replay-speed", "1", "--disk-buffer", "--disk-buffer-dir", str(tmp_path / "spool"),
         "--backoff-max", "2", "--breaker-open-time", "2", "--shutdown-timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lc_env(),
    )  # fmt: skip
    try:
        time.sleep(8)  # calls are under way
        p.proc.send_signal(signal.SIGKILL)
        p.proc.wait(10)
        time.sleep(5)
        restart(p, tmp_path)
        _, err = h.communicate(timeout=180)
        assert h.returncode == 0, err
        calls = list_calls(p, pki)
    finally:
        if h.poll() is None:
            h.kill()
        p.stop()
    oracle = calls_by_tshark(cap, sip_ports=(5060,))
    assert {c["call_id"] for c in calls} == set(info["calls"])
    want = call_packets(cap, oracle, set(info["calls"]))
    for c in calls:
        assert records(Path(c["pcap_path"])) == want[c["call_id"]]
    assert len(list(calls_dir.glob("*.pcap"))) == len(info["calls"])


def test_live_call_longer_than_60s_keeps_its_rtp_to_the_end(tmp_path, pki):
    """A live 65 s sipp call with RTP throughout: every RTP packet tshark ties to it,
    to the last, is in its file (the gap lippycat has on long calls)."""
    from tests.voip_tools import SIPP_DIR

    p, placed, ref, uas_port = live_calls(
        tmp_path, pki, "longcall", ["longcall"], concurrent=1, call_seconds=1,
        media_port=30000, scenario=SIPP_DIR / "uac_long.xml",
    )  # fmt: skip
    calls = list_calls(p, pki)
    p.stop()
    (cid,) = placed.call_ids
    oracle = calls_by_tshark(ref, sip_ports=(uas_port,))
    frames = oracle[cid]
    want = call_packets(ref, oracle, [cid])[cid]
    assert [c["call_id"] for c in calls] == [cid]
    got = records(Path(calls[0]["pcap_path"]))
    assert [b for _, b in got] == [b for _, b in want]
    assert calls[0]["rtp_packets"] == len(frames.rtp) > 9 * 200
    assert got[-1][0] - got[0][0] > 60 * 10**9  # RTP (and the BYE) past the first minute


def test_live_sipp_calls_over_tcp(tmp_path, pki):
    """SIP over TCP from real peers: the targeted user's calls, exactly the SIP segments
    tshark attributes to each (no handshakes, no bare ACKs)."""
    p, placed, ref, uas_port = live_calls(
        tmp_path, pki, "alice", ["alice", "bob", "alice"], transport="tcp",
        concurrent=3, call_seconds=2,
    )  # fmt: skip
    calls = list_calls(p, pki)
    p.stop()
    oracle = calls_by_tshark(ref, sip_ports=(uas_port,))
    alice = {cid for cid, who in placed.call_ids.items() if who == "alice"}
    assert len(alice) == 2 and alice <= set(oracle)
    assert {c["call_id"] for c in calls} == alice
    want = call_packets(ref, oracle, alice)
    for c in calls:
        got = records(Path(c["pcap_path"]))
        assert [b for _, b in got] == [b for _, b in want[c["call_id"]]]
        assert c["state"] == "ended" and c["sip_packets"] == len(got) >= 7
