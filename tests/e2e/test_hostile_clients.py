"""Hand-made gRPC clients with a real hunter certificate against a real processor.

Issue 9, items 3, 4 (the edge) and 8: hundreds of streams from one certificate, absurd
link types, hostile registration strings, a second live hunter with the same id. Each
time the admin RPCs must keep answering within a short deadline and a real hunter must
still get its packets written.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import threading
import time
from array import array
from pathlib import Path

import grpc
import pytest

from lc.common.pcapfile import frame_records
from lc.common.transport import TlsFiles, open_channel
from lc.common.wire import build_batch
from lc.proto import lc_pb2, lc_pb2_grpc
from tests.conftest import ROOT, run_lc, start_hunter, start_processor, tls_args

SAMPLE = ROOT / "captures" / "sip-call.pcap"
STREAMS = 600


def channel(proc, pki: Path, name: str) -> grpc.Channel:
    files = TlsFiles(str(pki / f"{name}.pem"), str(pki / f"{name}.key"), str(pki / "ca.pem"))
    return open_channel(proc.addr, files)


def admin_answers(proc, pki: Path, deadline: float = 2.0) -> float:
    """Seconds GetStatus took (fails past ``deadline``)."""
    with channel(proc, pki, "admin") as ch:
        stub = lc_pb2_grpc.ManagementServiceStub(ch)
        t0 = time.monotonic()
        stub.GetStatus(lc_pb2.StatusRequest(), timeout=deadline)
        return time.monotonic() - t0


def real_hunter_delivers(proc, pki: Path, name: str = "h2") -> None:
    r = run_lc(
        "hunt", "--processor", proc.addr, *tls_args(pki, f"hunter-{name}"), "-r", str(SAMPLE),
        "--connect-timeout", "5", timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "acknowledged 1494" in r.stdout, r.stdout


def register(stub, hunter_id: str = "h1", epoch: int = 1, **fields) -> lc_pb2.RegisterResponse:
    return stub.RegisterHunter(
        lc_pb2.RegisterRequest(hunter_id=hunter_id, epoch=epoch, **fields), timeout=5
    )


def drain(calls: list) -> None:
    """Read every call's responses in the background, as a client does (a call whose
    messages nobody reads never sees its end)."""

    def read(call) -> None:
        try:
            for _ in call:
                pass
        except grpc.RpcError:
            pass

    for call in calls:
        threading.Thread(target=read, args=(call,), daemon=True).start()


def settle(calls: list, open_at_most: int, timeout: float = 10.0) -> list:
    """Wait until at most ``open_at_most`` of ``calls`` are still open; the open ones."""
    deadline = time.monotonic() + timeout
    while True:
        still = [c for c in calls if not c.done()]
        if len(still) <= open_at_most or time.monotonic() > deadline:
            return still
        time.sleep(0.1)


def one_batch(sequence: int, interfaces: list[tuple[str, int]], epoch: int = 1):
    payload = b"\x00" * 60
    recs = frame_records([1_700_000_000 * 10**9], [60], [60], payload)
    return build_batch("h1", epoch, sequence, recs, 1, interfaces)


# -- item 3: hundreds of streams from one certificate -----------------------------------


@pytest.mark.e2e
def test_hundreds_of_filter_subscriptions_from_one_certificate(pki, processor):
    chans = [channel(processor, pki, "hunter-h1") for _ in range(3)]
    try:
        register(lc_pb2_grpc.ManagementServiceStub(chans[0]))
        req = lc_pb2.SubscribeFiltersRequest(hunter_id="h1", filter_types=["bpf"])
        calls = [
            lc_pb2_grpc.ManagementServiceStub(chans[i % 3]).SubscribeFilters(req)
            for i in range(STREAMS)
        ]
        drain(calls)
        # Admin RPCs answer while they arrive, and after.
        assert admin_answers(processor, pki) < 2.0
        still = settle(calls, open_at_most=1)
        assert len(still) <= 1, f"{len(still)} subscriptions of one hunter still open"
        assert admin_answers(processor, pki) < 1.0
        codes = {c.code() for c in calls if c.done()}
        assert codes <= {grpc.StatusCode.ABORTED, grpc.StatusCode.ALREADY_EXISTS}, codes
        real_hunter_delivers(processor, pki)
        r = run_lc("show", "status", "--processor", processor.addr, *tls_args(pki, "admin"))
        assert r.returncode == 0 and json.loads(r.stdout)["packets_written"] == 1494
    finally:
        for ch in chans:
            ch.close()
    # The operator is told, in a few lines rather than 600.
    told = [x for x in processor.stderr().splitlines() if "replaces the one from" in x]
    assert 1 <= len(told) <= 5, processor.stderr()


@pytest.mark.e2e
def test_hundreds_of_idle_data_streams_from_one_certificate(pki, processor):
    hold = threading.Event()

    def idle():  # a stream that never sends a batch
        hold.wait(60)
        return
        yield

    chans = [channel(processor, pki, "hunter-h1") for _ in range(3)]
    try:
        calls = [
            lc_pb2_grpc.DataServiceStub(chans[i % 3]).StreamPackets(idle()) for i in range(STREAMS)
        ]
        drain(calls)
        assert admin_answers(processor, pki) < 2.0
        still = settle(calls, open_at_most=1)
        assert len(still) <= 1, f"{len(still)} data streams of one hunter still open"
        assert admin_answers(processor, pki) < 1.0
        real_hunter_delivers(processor, pki)
    finally:
        hold.set()
        for ch in chans:
            ch.close()


# -- item 3: one live run per hunter id -------------------------------------------------


@pytest.mark.e2e
def test_second_live_hunter_with_the_same_id_is_refused_until_the_first_is_gone(pki, processor):
    first = start_hunter(processor.addr, pki, "h1", "-i", "lo", "-f", "udp and port 9")
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        deadline = time.monotonic() + 20
        while True:
            tx.sendto(b"x", ("127.0.0.1", 9))  # something to stream
            r = run_lc("show", "hunter", "--id", "h1", "--processor", processor.addr,
                       *tls_args(pki, "admin"))  # fmt: skip
            if r.returncode == 0 and json.loads(r.stdout)["streaming"]:
                break
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, r.stderr
            time.sleep(0.2)
        t0 = time.monotonic()
        r = run_lc("hunt", "--processor", processor.addr, *tls_args(pki, "hunter-h1"),
                   "-r", str(SAMPLE), timeout=60)  # fmt: skip
        assert r.returncode != 0
        assert time.monotonic() - t0 < 10
        line = r.stderr.strip().splitlines()[-1]
        assert "ALREADY_EXISTS: hunter h1 is already connected from ipv4:127.0.0.1:" in line
        assert "Give each hunter its own id" in line
        assert "refused a registration: hunter h1 is already connected" in processor.stderr()
        # The first one is killed: a restarted hunter gets through at once.
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        real_hunter_delivers(processor, pki, "h1")
    finally:
        tx.close()
        if first.poll() is None:
            first.kill()
            first.wait(10)


@pytest.mark.e2e
def test_a_half_dead_run_gives_way_after_its_silence(tmp_path, pki):
    # A run that registered and holds a subscription but is never heard from again
    # (its link died without closing): a new run is refused at first, then accepted.
    p = start_processor(tmp_path, tls_args(pki, "processor"), "--stale-after", "3")
    ch = channel(p, pki, "hunter-h1")
    try:
        stub = lc_pb2_grpc.ManagementServiceStub(ch)
        assert register(stub, epoch=111).accepted
        old = stub.SubscribeFilters(lc_pb2.SubscribeFiltersRequest(hunter_id="h1"))
        next(old)  # the full set: the subscription is open
        with channel(p, pki, "hunter-h1") as other:  # another run, at once: refused
            with pytest.raises(grpc.RpcError) as e:
                register(lc_pb2_grpc.ManagementServiceStub(other), epoch=222)
            assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert "hunter h1 is already connected" in e.value.details()
        time.sleep(3.2)  # silent for takeover_after (= --stale-after here)
        real_hunter_delivers(p, pki, "h1")
        with pytest.raises(grpc.RpcError) as e:
            next(old)
        assert e.value.code() == grpc.StatusCode.ABORTED
        assert "registered again" in e.value.details()
    finally:
        ch.close()
        p.stop()


# -- item 4 (edge): link types -----------------------------------------------------------


@pytest.mark.e2e
def test_absurd_link_types_are_refused_at_the_edge(pki, processor):
    cases = [
        ([("eth0", 70000)], "link type 70000, outside 0..65535"),
        ([("eth0", 2**32 - 1)], "outside 0..65535"),
        ([(f"if{k}", 200 + k) for k in range(20)], "20 distinct link types in one batch"),
        ([("x", 1)] * 300, "300 interfaces in one batch"),
    ]
    with channel(processor, pki, "hunter-h1") as ch:
        stub = lc_pb2_grpc.DataServiceStub(ch)
        for seq, (interfaces, needle) in enumerate(cases, 1):
            with pytest.raises(grpc.RpcError) as e:
                list(stub.StreamPackets(iter([one_batch(seq, interfaces)]), timeout=10))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert needle in e.value.details()
        assert admin_answers(processor, pki) < 1.0
    real_hunter_delivers(processor, pki)
    out = sorted(f.name for f in processor.data_dir.iterdir() if f.suffix == ".pcap")
    assert out == ["capture.pcap"], out  # no file per absurd link type
    assert "Traceback" not in processor.stderr()


def _column_batch(sequence: int):
    """Four packets of 10-13 bytes with their caplen column (the bulk-checked path)."""
    sizes = [10, 11, 12, 13]
    recs = frame_records([1_700_000_000 * 10**9 + i for i in range(4)], sizes, sizes,
                         b"".join(bytes([i]) * n for i, n in enumerate(sizes)))  # fmt: skip
    return build_batch("h1", 1, sequence, recs, 4, [("eth0", 1)], caplen=array("I", sizes))


def _put32(b, offset: int, value: int) -> None:
    d = bytearray(b.data)
    struct.pack_into("<I", d, offset, value)
    b.data = bytes(d)


def _set_column(b, caps) -> None:
    b.caplen = struct.pack(f"<{len(caps)}I", *caps)


# Each damage the processor refused when it walked the records, and each way a column
# can lie, through a real processor's new (bulk) path.
_MALFORMED_WITH_COLUMN = {
    "count + 1": lambda b: setattr(b, "count", 5),
    "count - 1": lambda b: setattr(b, "count", 3),
    "a byte cut": lambda b: setattr(b, "data", b.data[:-1]),
    "a byte added": lambda b: setattr(b, "data", b.data + b"\x00"),
    "cut into the last header": lambda b: setattr(b, "data", b.data[: len(b.data) - 25]),
    "a header's caplen too big": lambda b: _put32(b, 8, 10**6),
    "nanoseconds 10**9": lambda b: _put32(b, 4, 10**9),
    "column short": lambda b: setattr(b, "caplen", b.caplen[:-4]),
    "column odd": lambda b: setattr(b, "caplen", b.caplen + b"\x00"),
    "column swapped": lambda b: _set_column(b, [11, 10, 12, 13]),
    "column wraps 32 bits": lambda b: _set_column(b, [2**32 - 1, 22, 12, 13]),
}


@pytest.mark.e2e
def test_malformed_batches_with_a_caplen_column_are_refused_and_nothing_of_them_written(
    pki, processor
):
    good = []
    with channel(processor, pki, "hunter-h1") as ch:
        stub = lc_pb2_grpc.DataServiceStub(ch)
        for k, (name, damage) in enumerate(_MALFORMED_WITH_COLUMN.items()):
            ok = _column_batch(2 * k + 1)
            bad = _column_batch(2 * k + 2)
            damage(bad)
            good.append(ok.data)
            with pytest.raises(grpc.RpcError) as e:
                list(stub.StreamPackets(iter([ok, bad]), timeout=10))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert "malformed batch" in e.value.details(), (name, e.value.details())
    # The good batch of every stream is written, nothing of the bad ones.
    out = processor.data_dir / "capture.pcap"
    want = 24 + sum(map(len, good))
    deadline = time.monotonic() + 10
    while (not out.exists() or out.stat().st_size < want) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.read_bytes()[24:] == b"".join(good)
    assert "Traceback" not in processor.stderr()


# -- item 8: hostile registration strings -------------------------------------------------


@pytest.mark.e2e
def test_hostile_registration_strings_are_refused_or_escaped(pki, processor):
    forged = "x\n2026-01-01 00:00:00,000 ERROR lc: forged \x1b[31mred\x1b[0m"
    with channel(processor, pki, "hunter-h1") as ch:
        stub = lc_pb2_grpc.ManagementServiceStub(ch)
        for fields, needle in [
            ({"hostname": forged}, "hostname: holds control characters"),
            ({"hostname": "h" * 100_000}, "hostname: 100000 characters (at most 255)"),
            ({"version": "1\x1b[2J"}, "version: holds control characters"),
            ({"mode": "voip\nERROR"}, "mode: use at most 32 characters from A-Z a-z 0-9 _ . -"),
            (
                {"capabilities": ["ok", "filter:\x1b[31m"]},
                "capabilities[1]: use 1-64 characters from A-Z a-z 0-9 _ . : -",
            ),
            ({"interfaces": ["eth0"] * 65}, "interfaces: 65 entries (at most 64)"),
        ]:
            with pytest.raises(grpc.RpcError) as e:
                register(stub, **fields)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
            assert e.value.details() == f"RegisterHunter: {needle}", e.value.details()
        # Interface names (a replayed file's among them) are kept, cut and escaped.
        assert register(stub, hostname="sensor", interfaces=[forged, "i" * 100_000]).accepted
        r = run_lc("show", "hunter", "--id", "h1", "--processor", processor.addr,
                   *tls_args(pki, "admin"))  # fmt: skip
        assert r.returncode == 0, r.stderr
        shown = json.loads(r.stdout)
        assert shown["interfaces"] == [forged, "i" * 256]
        assert "\x1b" not in r.stdout  # JSON escapes it
        # A hostile interface name in a refused batch reaches the log escaped.
        data = lc_pb2_grpc.DataServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            list(data.StreamPackets(iter([one_batch(1, [(forged, 70000)])]), timeout=10))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    real_hunter_delivers(processor, pki)
    log = processor.stderr()
    assert "\x1b" not in log
    assert not any(x.startswith("2026-01-01 00:00:00,000 ERROR") for x in log.splitlines())
    assert "x\\n2026-01-01 00:00:00,000 ERROR lc: forged \\x1b[31mred" in log
    assert len(max(log.splitlines(), key=len)) < 2000


@pytest.mark.e2e
def test_a_client_that_never_reads_its_acks_stops_being_read(pki, processor):
    """A hunter that streams batches and never reads the Acks: the processor stops
    reading its stream once MAX_UNSENT_ACKS batches wait for their Acks to be taken
    (HTTP/2 flow control then holds the client back) instead of reading on and piling
    up Acks in its memory. Without that bound it reads all 40,000 batches."""
    offered = 40_000
    taken = [0]

    def batches():
        for seq in range(1, offered + 1):
            taken[0] = seq
            yield one_batch(seq, [("eth0", 1)])

    def received() -> int:
        with channel(processor, pki, "admin") as ch:
            stub = lc_pb2_grpc.ManagementServiceStub(ch)
            hunters = stub.ListHunters(lc_pb2.ListHuntersRequest(), timeout=5).hunters
            return sum(h.batches_received for h in hunters if h.hunter_id == "h1")

    files = TlsFiles(*(str(pki / n) for n in ("hunter-h1.pem", "hunter-h1.key", "ca.pem")))
    cert, key, ca = files.checked()
    creds = grpc.ssl_channel_credentials(ca, key, cert)
    # No window growth on the client: the processor's writes block after ~64 kB of Acks.
    with grpc.secure_channel(processor.addr, creds, [("grpc.http2.bdp_probe", 0)]) as ch:
        register(lc_pb2_grpc.ManagementServiceStub(ch))
        call = lc_pb2_grpc.DataServiceStub(ch).StreamPackets(batches(), timeout=120)
        deadline = time.monotonic() + 60
        while taken[0] < offered and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        first = received()
        time.sleep(2.0)
        second = received()
        assert admin_answers(processor, pki) < 1.0
        call.cancel()
    assert 0 < first == second < offered // 4, (first, second, taken[0])
    real_hunter_delivers(processor, pki)
    assert "Traceback" not in processor.stderr()
