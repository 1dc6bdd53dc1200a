"""DNS end to end: `lc hunt dns -r` to a processor over mutual TLS.

A synthetic resolver capture (Ethernet/IPv4, >= 500k packets by default) is generated
once into bench-out/ (deterministic, seeded):

* ordinary queries from :func:`tests.common.dns_workload.ordinary_workload` (popular
  sites, CDNs, PTR, mail look-ups, service discovery...) from 500 clients to 2
  resolvers, answered after 0.2 to 40 ms (so transactions interleave), answers of 1 to
  3 A/AAAA records, a CNAME chain in 15% of them, NXDOMAIN in 4%;
* 5% of the transactions ask for names under ``watched-bench.com`` (the filter
  ``*.watched-bench.com``): those are what the processor must get;
* 2% are tunnel traffic (iodine-like: 60-character base32 labels with raw 8-bit bytes,
  NULL and TXT queries, TXT answers) under ``t.tunnel-bench.net``;
* 0.5% of the transactions go over TCP, each its own connection (handshake, query,
  response, ACKs, FINs: 9 frames), forwarded whole when it matches.

Then `lc process` (writing one PCAP) and `lc hunt dns -r F` with the filter; prints the
hunter's packets/s (its own figure and wall time from start to exit), its peak RSS,
checks the processor's PCAP holds exactly the matching transactions' frames, and prints
`tcpdump -r F -w /dev/null` on the same file beside it, the hunter's CPU time per
packet (user and system, all its threads: on a shared machine a steadier figure than
wall time), and parse_dns's µs per message (full parse, and header and question only)
over the capture's messages.

    .venv/bin/python bench/dns_bench.py [--transactions 250000] [--profile] [--py-spy F]
        [--per-call]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
LC = [sys.executable, "-m", "lc.cli"]
sys.path.insert(0, str(ROOT))

WATCHED = "watched-bench.com"
TUNNEL = "t.tunnel-bench.net"
_ETH = bytes.fromhex("020000000001020000000002") + b"\x08\x00"
_IP = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")
_REC = struct.Struct("<IIII")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_measured(args: list[str]) -> tuple[int, str, str, float, int, float]:
    """Run a command; (exit code, stdout, stderr, seconds, its peak RSS in bytes, its
    CPU seconds, user and system, all threads)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t0 = time.monotonic()
        p = subprocess.Popen(args, stdout=fo, stderr=fe, text=True)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.monotonic() - t0
        code = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        return code, fo.read(), fe.read(), dt, ru.ru_maxrss * 1024, ru.ru_utime + ru.ru_stime


# -- the capture ---------------------------------------------------------------------------


def _csum(hdr: bytes) -> int:
    s = sum(struct.unpack("!10H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    h = _IP.pack(0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0, src, dst)
    return _ETH + h[:10] + struct.pack("!H", _csum(h)) + h[12:] + payload


def udp_frame(src: bytes, sport: int, dst: bytes, dport: int, dns: bytes) -> bytes:
    return _ip(src, dst, 17, _UDP.pack(sport, dport, 8 + len(dns), 0) + dns)


def tcp_frame(src: bytes, sport: int, dst: bytes, dport: int, seq: int, ack: int, fl: int,
              data: bytes = b"") -> bytes:  # fmt: skip
    return _ip(src, dst, 6, _TCP.pack(sport, dport, seq, ack, 0x50, fl, 65535, 0, 0) + data)


def wire_name(name: str | bytes) -> bytes:
    labels = name.split(b"." if isinstance(name, bytes) else ".")
    out = b""
    for label in labels:
        raw = label if isinstance(label, bytes) else label.encode()
        if raw:
            out += bytes([len(raw[:63])]) + raw[:63]
    return out + b"\0"


def query(qid: int, qname: bytes, qtype: int) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def response(qid: int, qname: bytes, qtype: int, rng: random.Random, tunnel: bool) -> bytes:
    rrs = []
    rcode = 0
    if tunnel:
        txt = bytes(rng.getrandbits(8) for _ in range(rng.randrange(40, 200)))
        rdata = bytes([len(txt)]) + txt
        rrs.append(b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 0, len(rdata)) + rdata)
    elif rng.random() < 0.04:
        rcode = 3
    else:
        ptr = b"\xc0\x0c"
        if rng.random() < 0.15:
            target = wire_name(f"edge{rng.randrange(100)}.cdn-{rng.randrange(50)}.net")
            rrs.append(ptr + struct.pack("!HHIH", 5, 1, 300, len(target)) + target)
            ptr = struct.pack("!H", 0xC000 | (12 + len(qname) + 4 + 12))
        for _ in range(rng.randrange(1, 4)):
            if qtype == 28:
                rrs.append(ptr + struct.pack("!HHIH", 28, 1, 60, 16) + rng.randbytes(16))
            else:
                rrs.append(ptr + struct.pack("!HHIH", 1, 1, 60, 4) + rng.randbytes(4))
    head = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(rrs), 0, 0)
    return head + qname + struct.pack("!HH", qtype, 1) + b"".join(rrs)


def make_capture(path: Path, transactions: int, seed: int = 11) -> dict:
    """Write the capture; returns its totals and the number of frames a filter on
    ``*.watched-bench.com`` must forward."""
    from tests.common.dns_workload import ordinary_workload

    rng = random.Random(seed)
    names = ordinary_workload(min(transactions, 50_000), seed=seed)
    clients = [bytes([10, 1, i // 250, 1 + i % 250]) for i in range(500)]
    resolvers = [bytes([10, 0, 0, 53]), bytes([10, 0, 0, 54])]
    b32 = b"abcdefghijklmnopqrstuvwxyz234567"
    frames: list[tuple[int, bytes]] = []
    want = 0
    matching = 0
    t = 1_700_000_000 * 10**9
    for i in range(transactions):
        t += rng.randrange(1_000, 7_000)  # ~250k transactions per second of capture
        r = rng.random()
        tunnel = False
        if r < 0.05:
            qname, qtype = f"{rng.choice(['www', 'api', 'mail', 'cdn'])}{i % 97}.{WATCHED}", 1
        elif r < 0.07:
            tunnel = True
            label = bytes(rng.choice(b32) for _ in range(50)) + rng.randbytes(10)
            qname, qtype = label + b"." + TUNNEL.encode(), rng.choice([10, 16])
        else:
            qname, qtype = names[i % len(names)]
        wname = wire_name(qname)
        qid = rng.getrandbits(16)
        cli, srv = rng.choice(clients), rng.choice(resolvers)
        q = query(qid, wname, qtype)
        a = response(qid, wname, qtype, rng, tunnel)
        rtt = rng.randrange(200_000, 40_000_000)
        match = r < 0.05
        matching += match
        if rng.random() < 0.005:  # over TCP: a connection of its own
            sport = rng.randrange(1024, 65535)
            cs, ss = rng.getrandbits(32), rng.getrandbits(32)
            ql, al = struct.pack("!H", len(q)) + q, struct.pack("!H", len(a)) + a
            conn = [
                (0, cli, sport, srv, 53, cs, 0, 0x02, b""),
                (80_000, srv, 53, cli, sport, ss, cs + 1, 0x12, b""),
                (160_000, cli, sport, srv, 53, cs + 1, ss + 1, 0x10, b""),
                (200_000, cli, sport, srv, 53, cs + 1, ss + 1, 0x18, ql),
                (rtt, srv, 53, cli, sport, ss + 1, cs + 1 + len(ql), 0x18, al),
                (rtt + 50_000, cli, sport, srv, 53, cs + 1 + len(ql), ss + 1 + len(al), 0x11, b""),
                (rtt + 90_000, srv, 53, cli, sport, ss + 1 + len(al), cs + 2 + len(ql), 0x11, b""),
                (rtt + 130_000, cli, sport, srv, 53, cs + 2 + len(ql), ss + 2 + len(al), 0x10, b""),
            ]
            for dt, s, sp, d, dp, seq, ack, fl, data in conn:
                frames.append((t + dt, tcp_frame(s, sp, d, dp, seq, ack, fl, data)))
            want += len(conn) if match else 0
            continue
        sport = rng.randrange(1024, 65535)
        frames.append((t, udp_frame(cli, sport, srv, 53, q)))
        frames.append((t + rtt, udp_frame(srv, 53, cli, sport, a)))
        want += 2 if match else 0
    frames.sort(key=lambda f: f[0])
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))  # ns pcap
        for ts, data in frames:
            f.write(_REC.pack(ts // 10**9, ts % 10**9, len(data), len(data)))
            f.write(data)
    return {"packets": len(frames), "transactions": transactions, "matching": matching,
            "want_frames": want}  # fmt: skip


# -- figures -------------------------------------------------------------------------------


def parser_us(path: Path, limit: int = 50_000) -> tuple[float, float, int]:
    """parse_dns's µs per message (full; header and question only) over the first
    ``limit`` UDP messages of the capture, best of 3."""
    from lc.common.dns import parse_dns
    from lc.common.pcapfile import open_capture

    msgs = []
    with open_capture(path) as rd:
        for _, _, d, _ in rd.records():
            if d[23] == 17:
                msgs.append(bytes(d[42:]))
                if len(msgs) >= limit:
                    break
    out = []
    for kw in ({}, {"records": False}):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for m in msgs:
                parse_dns(m, **kw)
            best = min(best, time.perf_counter() - t0)
        out.append(best / len(msgs) * 1e6)
    return out[0], out[1], len(msgs)


# The parts of the mode timed by --per-call: (module path, class or "", function).
_PARTS = (
    ("lc.hunter.modes.dns", "DnsMode", "_entry"),
    ("lc.common.dnstunnel", "TunnelDetector", "observe_prepared"),
    ("lc.hunter.modes.dns", "DnsMode", "_query_matched"),
    ("lc.hunter.modes.sessions", "SessionMode", "_datagram"),
    ("lc.hunter.modes.dns", "DnsMode", "_response_decides"),
    ("lc.hunter.modes.dns", "DnsMode", "_slow"),
    ("lc.hunter.modes.dns", "DnsMode", "_forgotten"),
    ("lc.hunter.modes.sessions", "SessionMode", "_message"),
    ("lc.hunter.modes.dns", "", "parse_dns"),
    ("lc.hunter.modes.dns", "DnsDissector", "meta"),
    ("lc.hunter.modes.dns", "DnsDissector", "fill"),
    ("lc.hunter.session", "SessionTable", "open"),
)


def per_call(cap: Path) -> None:
    """The mode alone in process over ``cap`` with the benchmark's filter, each part
    of :data:`_PARTS` timed where it runs (perf_counter around every call: nested
    parts are inside their callers' figures; the wrappers add ~0.2 µs per call)."""
    import importlib
    from collections import defaultdict

    from lc.common.filters import Filter, compile_filters
    from lc.hunter.capture import FileSource
    from lc.hunter.modes.base import ModeContext
    from lc.hunter.modes.dns import DNS_FILTER_TYPES, DnsConfig, dns_mode

    acc: dict[str, list] = defaultdict(lambda: [0, 0.0])
    clock = time.perf_counter

    def timing(f, r: list):  # type: ignore[no-untyped-def]
        def timed(*a, **k):  # type: ignore[no-untyped-def]
            t0 = clock()
            try:
                return f(*a, **k)
            finally:
                r[0] += 1
                r[1] += clock() - t0

        return timed

    for mod, cls, name in _PARTS:
        owner = getattr(importlib.import_module(mod), cls) if cls else importlib.import_module(mod)
        setattr(owner, name, timing(getattr(owner, name), acc[f"{cls}.{name}".lstrip(".")]))
    src = FileSource(str(cap))
    chunks = []
    while (c := src.read(4096)) is not None:
        chunks.append(c)
    m = dns_mode(ModeContext(src.interfaces, "deny", "captured"), DnsConfig())
    m.apply(compile_filters([Filter("f", "dns_domain", f"*.{WATCHED}")], "h", DNS_FILTER_TYPES))
    n = sum(len(c) for c in chunks)
    t0 = time.process_time()
    for c in chunks:
        m.process(c)
    m.finish()
    cpu = time.process_time() - t0
    print(f"mode alone, parts timed: {cpu / n * 1e6:.2f} µs/packet CPU over {n:,} packets")
    for part, (calls, sec) in sorted(acc.items(), key=lambda x: -x[1][1]):
        print(f"  {part:34s} {calls:8,} calls {sec / max(calls, 1) * 1e6:7.2f} µs/call "
              f"{sec / n * 1e6:5.2f} µs/packet")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=250_000)
    ap.add_argument("--profile", action="store_true", help="cProfile the hunter (slower)")
    ap.add_argument("--py-spy", metavar="FILE", help="record the hunter with py-spy (threads, "
                    "collapsed stacks) into FILE; figures drop with it")  # fmt: skip
    ap.add_argument("--per-call", action="store_true", help="the mode alone in process, with "
                    "the µs per call of its main parts where they run (no processor)")  # fmt: skip
    args = ap.parse_args()
    from lc.common.credentials import init_pki
    from lc.common.pcapfile import open_capture

    OUT.mkdir(exist_ok=True)
    pki = OUT / "pki"
    if not (pki / "ca.pem").exists():
        init_pki(pki, hunters=["bench"])
    tls = {
        n: ["--tls-cert", str(pki / f"{n}.pem"), "--tls-key", str(pki / f"{n}.key"),
            "--tls-ca", str(pki / "ca.pem")]
        for n in ("processor", "admin", "hunter-bench")
    }  # fmt: skip
    cap = OUT / f"dns-{args.transactions}.pcap"
    info_path = cap.with_suffix(".json")
    if cap.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
    else:
        info = make_capture(cap, args.transactions)
        info_path.write_text(json.dumps(info))
    if args.per_call:
        per_call(cap)
        return
    work = OUT / "dns"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    addr = f"127.0.0.1:{free_port()}"
    err_path = work / "processor.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [*LC, "process", "--listen", addr, "--data-dir", str(work / "data"),
             "-w", str(work / "out.pcap"), *tls["processor"]],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        while "(port " not in err_path.read_text():
            if proc.poll() is not None:
                sys.exit(err_path.read_text())
            time.sleep(0.05)
        r = subprocess.run(
            [*LC, "set", "filter", "--id", "watched", "--type", "dns_domain",
             "--pattern", f"*.{WATCHED}", "--processor", addr, *tls["admin"]],
            capture_output=True, text=True,
        )  # fmt: skip
        if r.returncode != 0:
            sys.exit(r.stderr)
        hunt = ["hunt", "dns", "--processor", addr, *tls["hunter-bench"], "-r", str(cap)]
        if args.profile:
            prof = OUT / "dns-hunter.prof"
            cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "lc.cli", *hunt]
        else:
            cmd = [*LC, *hunt]
        if args.py_spy:  # SPY_GIL=1: only the samples of threads holding the GIL
            spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--threads"]
            if os.environ.get("SPY_GIL"):
                spy.append("--gil")
            cmd = [*spy, "--format", "raw", "-o", args.py_spy, "--", *cmd]
        code, out, herr, wall, rss, cpu = run_measured(cmd)
    finally:
        proc.terminate()
        proc.wait(60)
    if code != 0:
        sys.exit(f"hunter failed ({code}): {out}\n{herr}")
    m = re.search(r"in ([\d.]+) s \(([\d,]+) pkt/s\)", out)
    with open_capture(work / "out.pcap") as rd:
        got = sum(1 for _ in rd.records())
    ok = "OK" if got == info["want_frames"] else f"MISMATCH: {got} != {info['want_frames']}"
    t0 = time.monotonic()
    subprocess.run(["tcpdump", "-r", str(cap), "-w", "/dev/null"], capture_output=True, check=True)
    td = time.monotonic() - t0
    full, head, n = parser_us(cap)
    total = info["packets"]
    print(
        f"dns replay: {total:,} packets ({info['transactions']:,} transactions, "
        f"{info['matching']:,} matching *.{WATCHED}, 2% tunnel, 0.5% over TCP): "
        f"hunter {m.group(2) if m else '?'} pkt/s over {m.group(1) if m else '?'} s; "
        f"{total / wall:,.0f} pkt/s wall (start to exit, {wall:.1f} s); hunter CPU "
        f"{cpu / total * 1e6:.2f} µs/packet ({cpu:.1f} s, all threads); hunter peak RSS "
        f"{rss / 2**20:.0f} MB; {got:,} frames forwarded [{ok}]; beside it "
        f"tcpdump -r F -w /dev/null {total / td:,.0f} pkt/s ({td:.2f} s); parse_dns "
        f"{full:.2f} µs/message full, {head:.2f} µs header+question ({n:,} messages)"
    )
    if args.profile:
        import pstats

        pstats.Stats(str(OUT / "dns-hunter.prof")).sort_stats("tottime").print_stats(25)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
