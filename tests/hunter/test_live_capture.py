"""Live capture's framing (lc.hunter.capture.frame_batch) against frame_records, and a
live handle on lo (root only) delivering a lone packet without waiting for more.

frame_batch turns pcapy-ng's next_batch result (the packets' bytes and per packet
seconds, microseconds, offset, length) into the wire's records; the oracle is
lc.common.pcapfile.frame_records over the same packets, computed independently.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from array import array

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.pcapfile import frame_records
from lc.hunter.capture import LiveSource, frame_batch

NS = 1_000_000_000


def next_batch_like(
    packets: list[tuple[int, int, bytes]], gaps: list[int], order: list[int]
) -> tuple[bytes, bytes]:
    """(data, meta) as next_batch gives them: packets (sec, usec, bytes) stored at
    ``order``'s positions in the buffer with ``gaps`` bytes of junk before each."""
    data = bytearray()
    where: dict[int, int] = {}
    for k, i in enumerate(order):
        data += b"\xee" * gaps[k % len(gaps)] if gaps else b""
        where[i] = len(data)
        data += packets[i][2]
    meta = array("I")
    for i, (sec, usec, pkt) in enumerate(packets):
        meta.extend([sec, usec, where[i], len(pkt)])
    return bytes(data), meta.tobytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    packets=st.lists(
        st.tuples(
            st.integers(0, 2**32 - 2),
            st.integers(0, 999_999) | st.just(1_000_000),  # usec past a second: carried
            st.binary(max_size=300),
        ),
        min_size=1,
        max_size=40,
    ),
    gaps=st.lists(st.integers(0, 7), max_size=3),
    shuffle=st.randoms(use_true_random=False),
)
def test_frame_batch_is_frame_records(packets, gaps, shuffle):
    order = list(range(len(packets)))
    if gaps:  # also out of order in the buffer
        shuffle.shuffle(order)
    data, meta = next_batch_like(packets, gaps, order)
    small = frame_batch(data, meta, numpy_from=10**9)  # per packet
    ts, cl, records = frame_batch(data, meta, numpy_from=0)  # numpy
    assert small[0] == ts and small[1] == cl and bytes(small[2]) == bytes(records)
    want_ts = [s * NS + u * 1000 for s, u, _ in packets]
    want_cl = [len(p) for _, _, p in packets]
    assert list(ts) == want_ts and ts.typecode == "q"
    assert list(cl) == want_cl and cl.typecode == "I"
    blob = b"".join(p for _, _, p in packets)
    assert bytes(records) == frame_records(want_ts, want_cl, want_cl, blob)


def test_frame_batch_example():
    pkts = [(1_700_000_000, 5, b"abc"), (1_700_000_001, 999_999, b""), (7, 0, b"\x00" * 70)]
    data, meta = next_batch_like(pkts, [], [0, 1, 2])
    ts, cl, records = frame_batch(data, meta, numpy_from=0)
    assert list(cl) == [3, 0, 70]
    assert list(ts) == [1_700_000_000_000_005_000, 1_700_000_001_999_999_000, 7 * NS]
    rec = bytes(records)
    assert rec[:16] == struct.pack("<IIII", 1_700_000_000, 5000, 3, 3) and rec[16:19] == b"abc"
    assert rec[19:35] == struct.pack("<IIII", 1_700_000_001, 999_999_000, 0, 0)
    assert rec[35:51] == struct.pack("<IIII", 7, 0, 70, 70) and len(rec) == 51 + 70


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="live capture on lo needs root"
)
def test_a_lone_packet_comes_within_the_block_timeout():
    """libpcap hands a block over after its timeout: a single packet on a quiet link is
    read within about that, not when more packets fill the block (bounded generously:
    the check is that it comes at all before the 2 s read timeout, and its capture time
    is the send time)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        src = LiveSource("lo", f"udp dst port {port}", block_timeout_ms=5)
        try:
            sent = time.time_ns()
            s.sendto(b"lone", ("127.0.0.1", port))
            t0 = time.monotonic()
            chunk = src.read(2.0)
            waited = time.monotonic() - t0
            assert chunk is not None and len(chunk) == 1
            assert bytes(chunk.records)[-4:] == b"lone"
            assert abs(chunk.ts_ns[0] - sent) < NS  # the kernel's capture time, now
            assert waited < 2.0
        finally:
            src.close()


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="live capture on lo needs root"
)
def test_loopback_ring_takes_each_packet_once():
    """On lo every packet passes twice (sent, then received); the kernel filter refuses
    the sent copy, so the ring (and libpcap's received count) holds each packet once,
    and lc still reads every packet once, after a filter change too."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        src = LiveSource("lo", "less 1")
        try:
            assert src.inbound_only
            src.set_filter(f"udp dst port {port}")
            assert src.inbound_only
            for i in range(50):
                s.sendto(b"n%02d" % i, ("127.0.0.1", port))
            got: list[bytes] = []
            deadline = time.monotonic() + 10
            while len(got) < 50 and time.monotonic() < deadline:
                chunk = src.read(0.5)
                if chunk is not None:
                    rec = bytes(chunk.records)
                    off = 0
                    for c in chunk.caplen:
                        got.append(rec[off + 16 + c - 3 : off + 16 + c])
                        off += 16 + c
            assert got == [b"n%02d" % i for i in range(50)]
            assert src.read(0.05) is None  # nothing twice
            assert src.stats()[0] == 50  # libpcap's ps_recv: what the ring took
        finally:
            src.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root")
def test_packets_before_the_first_filter_are_no_kernel_drops():
    """`-i any` takes every interface's packets from the moment its socket exists,
    before its ring is mapped and its first filter set; the kernel counts what it could
    not queue then as drops. Those were never asked for (the hunter opens with a filter
    matching nothing), yet a busy host made `lc hunt -i any` report hundreds of kernel
    drops at once and exit 1 ("its capture buffer was full"). Counted from the open."""
    import threading

    stop = threading.Event()

    def blast() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                for _ in range(200):
                    s.sendto(b"x" * 32, ("127.0.0.1", 9))

    t = threading.Thread(target=blast, daemon=True)
    t.start()
    try:
        time.sleep(0.2)
        srcs = [LiveSource("any", "less 1") for _ in range(5)]
    finally:
        stop.set()
        t.join()
    try:
        assert [src.stats() for src in srcs] == [(0, 0, 0)] * 5
    finally:
        for src in srcs:
            src.close()


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="a tun device needs root and /dev/net/tun",
)
def test_a_tun_device_is_linktype_raw_as_files_have_it():
    """libpcap says DLT_RAW (12) for a tun device; files and the wire say LINKTYPE_RAW
    (101). The hunter reported 12, which the processor wrote into its PCAP header."""
    import fcntl
    import subprocess

    from lc.common.decode import decode_packet

    name = f"lct{os.getpid() % 100000}"
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        # TUNSETIFF, IFF_TUN | IFF_NO_PI
        fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", name.encode(), 0x0001 | 0x1000))
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        subprocess.run(["ip", "addr", "add", "192.0.2.1/24", "dev", name], check=True)
        src = LiveSource(name, "udp", block_timeout_ms=5)
        try:
            assert src.linktype == 101
            udp = struct.pack("!HHHH", 4000, 53, 8 + 4, 0) + b"ping"
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                             bytes([192, 0, 2, 9]), bytes([192, 0, 2, 1]))  # fmt: skip
            os.write(fd, ip + udp)
            chunk = src.read(2.0)
            assert chunk is not None and len(chunk) == 1
            d = decode_packet(src.linktype, bytes(chunk.records)[16:])
            assert (d.proto, d.sport, d.dport) == (17, 4000, 53)
        finally:
            src.close()
    finally:
        os.close(fd)
