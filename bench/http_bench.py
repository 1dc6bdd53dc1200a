"""HTTP end to end: `lc hunt http -r` over a synthetic capture of keep-alive connections.

The capture (>= 500k packets by default): 9,000 TCP connections to port 80, 10 open at a
time and interleaved packet by packet, each a SYN handshake, 12 transactions and a FIN
close. Transactions mix small GETs, multi-segment responses (Content-Length and chunked),
POSTs whose bodies span segments, and pipelining (a fifth of the connections send three
requests in one segment before the responses); the receiver ACKs every second data
segment. 10% of the connections (so 10% of the transactions) carry `Host: target.example`
and an `http_host` filter selects them: each is captured whole. Prints the hunter's
packets/s and transactions/s end to end (replayed over mutual TLS to a real processor),
beside the same run's `tcpdump -r F -w /dev/null` time, and checks that the processor's
PCAP holds exactly the frames of the target connections and the event log one event
per target transaction.

    .venv/bin/python bench/http_bench.py [--connections 9000] [--transactions 12]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
LC = [sys.executable, "-m", "lc.cli"]
MSS = 1400
PORT = 80
TARGET = "target.example"


def _frame(src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int,
           payload: bytes = b"") -> bytes:  # fmt: skip
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    return b"\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x01\x08\x00" + ip + tcp + payload


def _segments(data: bytes) -> list[bytes]:
    return [data[i : i + MSS] for i in range(0, len(data), MSS)] or [b""]


def _response(rnd: random.Random, kind: str) -> bytes:
    if kind == "chunked":
        chunks = [bytes([97 + rnd.randrange(26)]) * rnd.randrange(500, 3000) for _ in range(3)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n"
        return head + b"Server: bench\r\n\r\n" + body
    n = rnd.randrange(100, 1000) if kind == "small" else rnd.randrange(4000, 12000)
    status = b"404 Not Found" if rnd.random() < 0.05 else b"200 OK"
    ctype = b"application/json" if kind == "small" else b"image/png"
    return (b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nServer: bench\r\n\r\n"
            % (status, ctype, n)) + bytes(n)  # fmt: skip


def _request(rnd: random.Random, host: str, i: int, post: bool) -> bytes:
    path = f"/app/{rnd.randrange(1000)}/item{i}?q={rnd.randrange(10**6)}"
    common = (f"Host: {host}\r\nUser-Agent: bench/1.0 (lc)\r\nAccept: */*\r\n"
              "Accept-Language: en-US\r\nCookie: session=abc123; theme=dark\r\n")  # fmt: skip
    if post:
        body = b"field=" + bytes([98 + rnd.randrange(20)]) * rnd.randrange(1500, 4000)
        head = (f"POST {path} HTTP/1.1\r\n{common}Content-Type: application/x-www-form-"
                f"urlencoded\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
        return head.encode() + body
    return f"GET {path} HTTP/1.1\r\n{common}\r\n".encode()


def _conversation(rnd: random.Random, host: str, n: int) -> list[tuple[int, bytes]]:
    """(direction 1 = to the server, 0 = to the client; bytes of one send) per send."""
    out: list[tuple[int, bytes]] = []
    pipelined = rnd.random() < 0.2
    i = 0
    while i < n:
        if pipelined and i + 3 <= n:
            reqs = [_request(rnd, host, i + k, False) for k in range(3)]
            out.append((1, b"".join(reqs)))
            out.append((0, b"".join(_response(rnd, "small") for _ in range(3))))
            i += 3
            continue
        r = rnd.random()
        post = r < 0.2
        kind = "small" if r < 0.6 else ("chunked" if r < 0.75 else "large")
        out.append((1, _request(rnd, host, i, post)))
        out.append((0, _response(rnd, kind)))
        i += 1
    return out


def make_capture(path: Path, conns: int, per_conn: int) -> dict:
    """Write the capture; its figures (packets, transactions, the target's frames)."""
    rnd = random.Random(13)
    ts = 1_700_000_000 * 10**6
    total = 0
    target_frames: list[int] = []
    target_tx = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        active: list[list] = []
        made = 0
        while made < conns or active:
            while made < conns and len(active) < 10:
                target = made % 10 == 3
                host = TARGET if target else f"www{made % 50}.example.com"
                target_tx += per_conn if target else 0
                steps: list[tuple[int, int, bytes]] = [(1, 0x02, b""), (0, 0x12, b""),
                                                       (1, 0x10, b"")]  # fmt: skip
                for d, data in _conversation(rnd, host, per_conn):
                    for k, seg in enumerate(_segments(data)):
                        steps.append((d, 0x18, seg))
                        if k % 2 == 1:
                            steps.append((1 - d, 0x10, b""))  # the receiver's ACK
                steps += [(1, 0x11, b""), (0, 0x11, b""), (1, 0x10, b"")]
                cli = 0x0A000000 + made % 60000 + 2
                active.append([cli, 20000 + made % 40000, steps, 0, [1000, 5000], target])
                made += 1
            c = active[rnd.randrange(len(active))]
            cli, cport, steps, i, seqs, target = c
            to_srv, flags, payload = steps[i]
            srv = 0x0A640001
            if to_srv:
                fr = _frame(cli, srv, cport, PORT, seqs[0], seqs[1], flags, payload)
                seqs[0] += len(payload) + (1 if flags & 0x03 else 0)
            else:
                fr = _frame(srv, cli, PORT, cport, seqs[1], seqs[0], flags, payload)
                seqs[1] += len(payload) + (1 if flags & 0x03 else 0)
            ts += 20
            f.write(struct.pack("<IIII", ts // 10**6, ts % 10**6, len(fr), len(fr)) + fr)
            total += 1
            if target:
                target_frames.append(total)
            c[3] += 1
            if c[3] == len(steps):
                active.remove(c)
    return {
        "packets": total,
        "transactions": conns * per_conn,
        "target_transactions": target_tx,
        "target_packets": len(target_frames),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=9000)
    ap.add_argument("--transactions", type=int, default=12)
    ap.add_argument("--profile", action="store_true", help="cProfile the hunter (slower)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
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
    cap = OUT / f"http-{args.connections}x{args.transactions}.pcap"
    info_path = cap.with_suffix(".json")
    if cap.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
    else:
        info = make_capture(cap, args.connections, args.transactions)
        info_path.write_text(json.dumps(info))
    work = OUT / "http"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    err_path = work / "processor.err"
    err = open(err_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [*LC, "process", "--listen", "127.0.0.1:0", "--data-dir", str(work / "data"),
         *tls["processor"]],
        stdout=subprocess.DEVNULL, stderr=err,
    )  # fmt: skip
    try:
        while not (m := re.search(r"\(port (\d+)\)", err_path.read_text())):
            if proc.poll() is not None:
                sys.exit(err_path.read_text())
            time.sleep(0.05)
        addr = f"127.0.0.1:{m.group(1)}"
        subprocess.run(
            [*LC, "set", "filter", "--id", "target", "--type", "http_host", "--pattern",
             TARGET, "--processor", addr, *tls["admin"]],
            capture_output=True, check=True,
        )  # fmt: skip
        hunt = [*LC, "hunt", "http", "--processor", addr, *tls["hunter-bench"], "-r", str(cap)]
        if args.profile:
            prof = work / "hunter.prof"
            hunt = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "lc.cli", *hunt[3:]]
        t0 = time.monotonic()
        r = subprocess.run(hunt, capture_output=True, text=True)
        wall = time.monotonic() - t0
        t0 = time.monotonic()
        subprocess.run(["tcpdump", "-r", str(cap), "-w", "/dev/null"], capture_output=True,
                       check=True)  # fmt: skip
        tcpdump = time.monotonic() - t0
        time.sleep(1.0)  # the processor writes what it received
    finally:
        proc.terminate()
        proc.wait(60)
    if r.returncode != 0:
        sys.exit(f"hunter failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    m = re.search(r"in ([\d.]+) s \(([\d,]+) pkt/s\)", r.stdout)
    secs = float(m.group(1)) if m else wall
    with open_capture(work / "data" / "capture.pcap") as rd:
        got = sum(1 for _ in rd.records())
    events = sum(
        len(p.read_text().splitlines()) for p in (work / "data" / "events").glob("*.jsonl")
    )
    want_p, want_e = info["target_packets"], info["target_transactions"]
    ok = "OK" if got == want_p and events == want_e else f"MISMATCH: want {want_p}, {want_e}"
    total = info["packets"]
    print(
        f"http replay: {total:,} packets, {info['transactions']:,} transactions "
        f"({info['target_transactions']:,} matching): hunter "
        f"{m.group(2) if m else '?'} pkt/s, {info['transactions'] / secs:,.0f} transactions/s "
        f"over {secs:.1f} s ({total / wall:,.0f} pkt/s wall, start to exit); "
        f"tcpdump -r F -w /dev/null {total / tcpdump:,.0f} pkt/s ({tcpdump:.2f} s); "
        f"{got:,} packets and {events:,} events at the processor "
        f"[{ok}]"
    )
    if args.profile:
        import pstats

        pstats.Stats(str(prof)).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
