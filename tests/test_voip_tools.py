"""The VoIP test tooling itself (tests/voip_tools.py), so that its verdicts can be trusted.

* The synthetic generator against the tshark oracle: tshark must tie exactly the packets
  the generator says it wrote for each call to that call.
* Real sipp calls on loopback (root): the scenarios in tests/sipp/ must produce the calls
  place_calls reports, and the oracle must find them, with RTP over UDP.
"""

from __future__ import annotations

import os
import socket
import struct
from itertools import pairwise
from pathlib import Path

import pytest

from tests.conftest import need
from tests.voip_tools import (
    call_packets,
    calls_by_tshark,
    frame_bytes,
    free_port,
    make_undecided_calls_capture,
    make_voip_capture,
    place_calls,
    run_uas,
    stop_process,
    tcpdump_capture,
)

ANSWERED = ["INVITE", "100", "180", "200", "ACK", "BYE", "200"]


def _udp_ports(pkt: bytes) -> tuple[int, int] | None:
    """(source, destination) ports of an Ethernet/IPv4/UDP packet, else None."""
    if len(pkt) < 42 or pkt[12:14] != b"\x08\x00" or pkt[23] != 17:
        return None
    ihl = (pkt[14] & 0x0F) * 4
    return struct.unpack_from(">HH", pkt, 14 + ihl)


# -- the synthetic generator, checked by tshark --------------------------------------------


def test_generator_matches_tshark(tmp_path: Path) -> None:
    need("tshark")
    pcap = tmp_path / "voip.pcap"
    info = make_voip_capture(
        pcap, calls=24, rtp_per_call=401, match_every=4, seed=7, concurrent=6, tcp_share=0.25
    )
    calls = info["calls"]
    assert len(calls) == 24
    assert sum(v["transport"] == "tcp" for v in calls.values()) == 6
    assert info["targets"] == [cid for cid, v in calls.items() if v["target"]]
    assert len(info["targets"]) == 6
    assert all(v["callee"] == f"target-{v['index']}" for v in calls.values() if v["target"])
    assert all(v["callee"] == f"user-{v['index']}" for v in calls.values() if not v["target"])

    oracle = calls_by_tshark(pcap)
    assert set(oracle) == set(calls)
    for cid, want in calls.items():
        got = oracle[cid]
        assert want["rtp"] == 401 and want["rtcp"] == 2  # 4 s of media: one SR each way
        assert (len(got.sip), len(got.rtp), len(got.rtcp)) == (
            want["sip"],
            want["rtp"],
            want["rtcp"],
        ), cid
        assert got.messages == ANSWERED, cid
        assert (got.from_user, got.to_user) == (want["caller"], want["callee"])
        assert got.media_ports == {want["caller_media"][1], want["callee_media"][1]}

    packets = frame_bytes(pcap)
    totals = info["totals"]
    assert len(packets) == totals["packets"]
    assert totals["target_packets"] == sum(calls[c]["packets"] for c in info["targets"])
    times = [ts for ts, _ in packets]
    assert times == sorted(times)
    # Calls overlap, and every frame but the TCP handshakes and FINs belongs to one call.
    spans = sorted((times[o.frames()[0] - 1], times[o.frames()[-1] - 1]) for o in oracle.values())
    assert any(b[0] < a[1] for a, b in pairwise(spans))
    owned = [f for o in oracle.values() for f in o.frames()]
    assert len(owned) == len(set(owned)) == totals["packets"] - totals["tcp_ctl"]
    # call_packets gives the bytes and times tshark's frames stand for.
    per_call = call_packets(pcap, oracle, info["targets"][:2])
    for cid, pkts in per_call.items():
        assert pkts == [packets[f - 1] for f in oracle[cid].frames()]
        assert len(pkts) == calls[cid]["packets"] - calls[cid]["tcp_ctl"]


def test_generator_is_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    ia = make_voip_capture(a, calls=30, rtp_per_call=50, seed=3, tcp_share=0.5)
    make_voip_capture(b, calls=30, rtp_per_call=50, seed=3, tcp_share=0.5)
    make_voip_capture(c, calls=30, rtp_per_call=50, seed=4, tcp_share=0.5)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert ia["totals"]["packets"] == len(frame_bytes(a))


def test_undecided_calls_capture_matches_tshark(tmp_path: Path) -> None:
    need("tshark")
    pcap = tmp_path / "undecided.pcap"
    info = make_undecided_calls_capture(pcap, calls=60, rtp_per_call=20)
    assert info["totals"]["packets"] == 60 * (3 + 20)
    assert info["targets"] == []
    oracle = calls_by_tshark(pcap)
    assert set(oracle) == set(info["calls"])
    for cid, want in info["calls"].items():
        got = oracle[cid]
        assert got.messages == ["INVITE", "100", "180"]
        assert len(got.rtp) == want["rtp"] == 20
        assert got.rtcp == []
        assert got.to_user == want["callee"]
    times = [ts for ts, _ in frame_bytes(pcap)]
    assert times == sorted(times)


def test_generator_speed(tmp_path: Path) -> None:
    """At least 500k packets in well under a minute (about 3 s on the development VM)."""
    pcap = tmp_path / "big.pcap"
    info = make_voip_capture(pcap, calls=1000, rtp_per_call=500, concurrent=50, tcp_share=0.1)
    n = info["totals"]["packets"]
    assert n >= 500_000
    assert info["seconds"] < 30, info["seconds"]
    with open(pcap, "rb") as f:
        head = f.read(24)
    assert head[:4] == b"\x4d\x3c\xb2\xa1"  # nanosecond pcap, little-endian
    assert os.path.getsize(pcap) > n * (16 + 200)


# -- real sipp calls on loopback ------------------------------------------------------------


def _live_calls(tmp_path: Path, transport: str, users: list[str]):
    for tool in ("sipp", "tcpdump", "tshark"):
        need(tool)
    port = free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
    uas_media, uac_media = 20000, 30000
    bpf = (
        f"(udp or tcp) and (port {port} or portrange {uas_media}-{uas_media + 99}"
        f" or portrange {uac_media}-{uac_media + 99})"
    )
    pcap = tmp_path / f"sipp-{transport}.pcap"
    with tcpdump_capture(pcap, bpf):
        uas = run_uas(port, transport=transport, media_port=uas_media, workdir=tmp_path / "uas")
        try:
            placed = place_calls(
                port,
                users,
                from_user="carol",
                concurrent=len(users),
                call_seconds=3,
                transport=transport,
                media_port=uac_media,
                workdir=tmp_path / "uac",
            )
        finally:
            stop_process(uas)
    return pcap, port, placed


def _check_signalling(oracle, placed, users: list[str]) -> None:
    assert sorted(oracle) == sorted(placed.call_ids)
    assert sorted(placed.call_ids.values()) == sorted(users)
    for cid, callee in placed.call_ids.items():
        call = oracle[cid]
        assert call.from_user == "carol"
        assert call.to_user == callee
        m = call.messages
        assert m[0] == "INVITE" and {"200", "ACK", "BYE"} <= set(m), m
        assert m.index("ACK") < m.index("BYE") < len(m) - 1 and m[-1] == "200", m


@pytest.mark.e2e
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump on lo and sipp's RTP playback need root")
def test_sipp_udp_calls_with_rtp(tmp_path: Path) -> None:
    users = ["alice", "bob", "alice"]
    pcap, port, placed = _live_calls(tmp_path, "udp", users)
    oracle = calls_by_tshark(pcap, sip_ports=[port])
    _check_signalling(oracle, placed, users)
    ports = [p for cid in placed.call_ids for p in sorted(oracle[cid].media_ports)]
    assert len(ports) == 6 and len(set(ports)) == 6, ports  # caller's and callee's, per call
    packets = frame_bytes(pcap)
    for cid in placed.call_ids:
        call = oracle[cid]
        assert len(call.rtp) > 0, cid
        for f in call.rtp:  # the stream goes from the caller's SDP port to the callee's
            assert _udp_ports(packets[f - 1][1]) == tuple(sorted(call.media_ports)[::-1])
    # Every datagram on a media port is RTP of some call.
    media = [
        i + 1
        for i, (_, pkt) in enumerate(packets)
        if (pp := _udp_ports(pkt)) is not None and port not in pp
    ]
    assert sorted(f for cid in oracle for f in oracle[cid].rtp) == media


@pytest.mark.e2e
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="tcpdump on lo needs root")
def test_sipp_tcp_calls(tmp_path: Path) -> None:
    users = ["alice", "bob"]
    pcap, port, placed = _live_calls(tmp_path, "tcp", users)
    oracle = calls_by_tshark(pcap, sip_ports=[port])
    _check_signalling(oracle, placed, users)
    packets = frame_bytes(pcap)
    for cid in placed.call_ids:
        call = oracle[cid]
        assert call.rtp == [] and len(call.media_ports) == 2
        assert all(packets[f - 1][1][23] == 6 for f in call.sip)  # IPv4 protocol TCP
