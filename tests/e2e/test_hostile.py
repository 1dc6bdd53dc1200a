"""A replay of thousands of mutated SIP/RTP frames through `lc hunt` and `lc hunt voip` to a
real processor: both hunters end normally (exit 0), count what they could not read, and
the processor keeps serving (issue 9, item 2: one such frame ended a VoIP hunter with
``UnicodeEncodeError ... surrogates not allowed``)."""

from __future__ import annotations

import json
import random
import re
import struct
from pathlib import Path

import pytest

from tests.conftest import run_lc, start_processor, tls_args
from tests.hunter.test_voip import T0, call_frames, invite, response, tcp_frame

pytestmark = pytest.mark.e2e

HOSTILE = [b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\x1b[2J", b"\x00", b"\r\n\r\n", b"\n"]
MARKERS = [b"sip:", b"Call-ID: ", b"From: <sip:", b"To: <sip:", b"a=rtpmap:8 ", b"c=IN IP4 "]


def mutate(rnd: random.Random, frame: bytes) -> bytes:
    f = bytearray(frame)
    for _ in range(rnd.randint(1, 3)):
        how = rnd.random()
        if how < 0.6:  # in place, so lengths stay right and the message still parses
            at = f.find(rnd.choice(MARKERS))
            if at >= 0:
                bad = rnd.choice(HOSTILE)
                at += rnd.randint(0, 10)
                f[at : at + len(bad)] = bad[: max(0, len(f) - at)]
        elif how < 0.8:
            f[rnd.randrange(len(f))] = rnd.randrange(256)
        else:
            del f[max(1, rnd.randrange(len(f))) :]
    return bytes(f)


def hostile_capture(path, n_calls: int = 60) -> int:
    rnd = random.Random(9)
    frames: list[tuple[int, bytes]] = []
    for k in range(n_calls):
        frames += call_frames(f"h-{k}", f"user{k}", 20000 + 4 * k, 20, T0 + k * 10**7)
        frames.append(
            (
                T0 + k * 10**7 + 5,
                tcp_frame(
                    "10.0.0.1", "10.0.0.2", 40000 + k, 5060, 1, invite(f"t-{k}", "x", 30000 + 2 * k)
                ),
            )
        )
        frames.append(
            (
                T0 + k * 10**7 + 6,
                tcp_frame(
                    "10.0.0.2",
                    "10.0.0.1",
                    5060,
                    40000 + k,
                    1,
                    response(f"t-{k}", "x", 200, "INVITE"),
                ),
            )
        )
    frames.sort(key=lambda x: x[0])
    out = [(t, mutate(rnd, b) if rnd.random() < 0.5 else b) for t, b in frames]
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        for t, b in out:
            fh.write(struct.pack("<IIII", t // 10**9, t % 10**9, len(b), len(b)) + b)
    return len(out)


def test_hostile_frames_through_generic_and_voip_hunters(tmp_path, pki):
    cap = tmp_path / "hostile.pcap"
    n = hostile_capture(cap)
    assert n > 2000
    p = start_processor(tmp_path, tls_args(pki, "processor"), "--per-call-pcap-dir",
                        str(tmp_path / "calls"))  # fmt: skip
    try:
        r = run_lc("set", "filter", "--id", "net", "--type", "ip_address", "--pattern",
                   "10.0.0.0/8", "--hunters", "h1", "--processor", p.addr,
                   *tls_args(pki, "admin"))  # fmt: skip
        assert r.returncode == 0, r.stderr
        generic = run_lc("hunt", "--processor", p.addr, *tls_args(pki, "hunter-h1"),
                         "-r", str(cap))  # fmt: skip
        voip = run_lc("hunt", "voip", "--processor", p.addr, *tls_args(pki, "hunter-h2"),
                      "-r", str(cap), "--no-filter-policy", "allow", "--events", "all")  # fmt: skip
        status = run_lc("show", "status", "--processor", p.addr, *tls_args(pki, "admin"))
    finally:
        p.stop()
    for r in (generic, voip):
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr
        assert f": {n} packets" in r.stdout and "unacknowledged 0" in r.stdout
    # Generic mode reads addresses for its ip_address filter: unreadable frames counted.
    m = re.search(r"; (\d+) malformed", generic.stdout)
    assert m and int(m.group(1)) > 0, generic.stdout
    # VoIP parses SIP: malformed messages counted, the rest of the calls forwarded.
    m = re.search(r"(\d+) SIP messages \((\d+) malformed\)", voip.stdout)
    assert m and int(m.group(1)) > 100 and int(m.group(2)) > 0, voip.stdout
    assert int(re.search(r"forwarded (\d+)", voip.stdout).group(1)) > 1000
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["batches_written"] > 0
    for log in (p.data_dir / "events").glob("*.jsonl"):
        for line in log.read_text(encoding="utf-8").splitlines():
            ev = json.loads(line)
            assert ev["event"]["dataset"] == "lc.sip"


CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
PROTOCOL_SEEDS = ["dns/arkime_dns-tcp.pcap", "dns/dmachard_iodine.pcap",
                  "dns/zeek_ipv6-fragmented-dns.pcap", "smtp/zeek_smtp.pcap",
                  "imap/arkime_imap.pcap", "pop3/zeek_pop3.pcap"]  # fmt: skip


def protocol_hostile_capture(path: Path, n: int = 20000) -> int:
    """Mutated DNS and mail frames from the corpus, with capture times that go back now
    and then (two interfaces, a merged capture): as `lc hunt dns/email` may see them."""
    from lc.common.pcapfile import open_capture

    seeds: list[bytes] = []
    for name in PROTOCOL_SEEDS:
        with open_capture(CORPUS / name) as r:
            seeds += [bytes(data) for _, _, data, _ in r.records()]
    rnd = random.Random(5)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        t = T0
        for _ in range(n):
            f = bytearray(rnd.choice(seeds))
            for _ in range(rnd.randint(0, 4)):
                at = rnd.randrange(42, max(43, len(f)))
                bad = rnd.choice(HOSTILE) if rnd.random() < 0.5 else bytes([rnd.randrange(256)])
                f[at : at + len(bad)] = bad
            t += rnd.randint(-3 * 10**9, 10**9) if rnd.random() < 0.05 else 10**6
            fh.write(struct.pack("<IIII", t // 10**9, t % 10**9, len(f), len(f)) + bytes(f))
    return n


@pytest.mark.skipif(not CORPUS.exists(), reason="needs ../shared/corpus")
@pytest.mark.parametrize("mode", ["dns", "email"])
def test_hostile_frames_through_the_protocol_modes(tmp_path, pki, mode):
    """No mode error (a DNS response stamped before its query gave a negative RTT that
    protobuf refused: the chunk's 4096 packets were lost with a traceback, exit 0)."""
    cap = tmp_path / "hostile.pcap"
    n = protocol_hostile_capture(cap)
    p = start_processor(tmp_path, tls_args(pki, "processor"))
    try:
        r = run_lc("hunt", mode, "--processor", p.addr, *tls_args(pki, "hunter-h1"),
                   "-r", str(cap), "--no-filter-policy", "allow", "--events", "all")  # fmt: skip
    finally:
        p.stop()
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "failed" not in r.stderr, r.stderr[-2000:]
    assert f": {n} packets" in r.stdout and "unacknowledged 0" in r.stdout
    assert "mode_error" not in r.stdout, r.stdout
    for log in (p.data_dir / "events").glob("*.jsonl"):
        for line in log.read_text(encoding="utf-8").splitlines():
            json.loads(line)
