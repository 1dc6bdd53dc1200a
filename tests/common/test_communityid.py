"""Tests for lc.common.communityid against the published vectors and, where installed,
the ``communityid`` package (the reference implementation's Python port) as an oracle."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lc.common.communityid import ICMP, ICMP6, SCTP, TCP, UDP, community_id


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


# Published examples (the Community ID specification's README and Zeek's documentation).
VECTORS = [
    (("128.232.110.120", "66.35.250.204", TCP, 34855, 80), 0, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    (("66.35.250.204", "128.232.110.120", TCP, 80, 34855), 0, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
    (("128.232.110.120", "66.35.250.204", TCP, 34855, 80), 1, "1:3V71V58M3Ksw/yuFALMcW0LAHvc="),
]


@pytest.mark.parametrize("flow, seed, want", VECTORS)
def test_published_vectors(flow, seed, want):
    s, d, proto, sp, dp = flow
    assert community_id(ip(s), ip(d), proto, sp, dp, seed=seed) == want


def test_both_directions_give_one_id():
    a, b = ip("10.0.0.1"), ip("10.0.0.2")
    assert community_id(a, b, UDP, 5060, 5062) == community_id(b, a, UDP, 5062, 5060)
    # Same address: the ports decide the order.
    assert community_id(a, a, UDP, 9, 7) == community_id(a, a, UDP, 7, 9)
    # Echo request and reply share an ID; a one-way message (unreachable) keeps direction.
    assert community_id(a, b, ICMP, 8, 0) == community_id(b, a, ICMP, 0, 0)
    assert community_id(a, b, ICMP, 3, 1) != community_id(b, a, ICMP, 3, 1)


@pytest.mark.parametrize(
    "args",
    [
        (b"\x01\x02\x03", bytes(4), UDP),
        (bytes(4), bytes(16), UDP),
        (bytes(4), bytes(4), 256),
        (bytes(4), bytes(4), UDP, 70000, 1),
    ],
)
def test_bad_flows_are_refused(args):
    with pytest.raises(ValueError):
        community_id(*args)


communityid = pytest.importorskip("communityid")

addr4 = st.binary(min_size=4, max_size=4)
addr6 = st.binary(min_size=16, max_size=16)
port = st.integers(0, 65535)


def oracle(s: bytes, d: bytes, proto: int, sp: int, dp: int, seed: int) -> str:
    cid = communityid.CommunityID(seed=seed)
    si, di = str(ipaddress.ip_address(s)), str(ipaddress.ip_address(d))
    make = {
        TCP: communityid.FlowTuple.make_tcp,
        UDP: communityid.FlowTuple.make_udp,
        SCTP: communityid.FlowTuple.make_sctp,
    }.get(proto)
    if make is not None:
        return cid.calc(make(si, di, sp, dp))
    if proto == ICMP:
        return cid.calc(communityid.FlowTuple.make_icmp(si, di, sp, dp))
    if proto == ICMP6:
        return cid.calc(communityid.FlowTuple.make_icmp6(si, di, sp, dp))
    return cid.calc(communityid.FlowTuple.make_ip(si, di, proto))


@settings(max_examples=400, deadline=None)
@given(
    family=st.sampled_from([4, 16]),
    data=st.data(),
    proto=st.sampled_from([TCP, UDP, SCTP, ICMP, ICMP6, 47, 50]),
    seed=st.sampled_from([0, 1, 65535]),
)
def test_equal_to_the_reference_implementation(family, data, proto, seed):
    a = data.draw(addr4 if family == 4 else addr6)
    b = data.draw(st.one_of(st.just(a), addr4 if family == 4 else addr6))
    if proto in (ICMP, ICMP6):
        sp = data.draw(st.sampled_from([0, 3, 8, 9, 10, 13, 128, 129, 133, 135, 139, 144, 255]))
        dp = data.draw(st.integers(0, 255))
    elif proto in (TCP, UDP, SCTP):
        sp, dp = data.draw(port), data.draw(port)
    else:
        sp = dp = 0
    assert community_id(a, b, proto, sp, dp, seed=seed) == oracle(a, b, proto, sp, dp, seed)
