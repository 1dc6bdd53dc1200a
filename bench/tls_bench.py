"""TLS end to end: `lc hunt tls -r` over a synthetic capture of many TLS connections.

The capture (>= 500k packets): 10,000 TCP connections to port 443, 10 at a time,
each SYN, SYN-ACK, ACK, a ClientHello, a ServerHello, 44 packets of bulk
application data (1,400 bytes each, both ways), FIN, FIN, ACK. The hellos are real
ones from the corpus (several client stacks); one stack is given to 10% of the
connections, and a `tls_ja4` filter selects it. Prints the hunter's packets/s end to
end, hellos parsed per second (a rejected connection's ServerHello is not parsed:
once a connection is decided and its handshake no longer matters, its packets
take the engine's fast path), and beside them the same run's
`tcpdump -r F -w /dev/null` time.

    .venv/bin/python bench/tls_bench.py [--connections 10000] [--data 44]
"""

from __future__ import annotations

import argparse
import os
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
CORPUS = ROOT.parent / "shared" / "corpus" / "tls"
LC = [sys.executable, "-m", "lc.cli"]
sys.path.insert(0, str(ROOT))


def hellos() -> tuple[list[bytes], list[bytes]]:
    """Whole-record ClientHello and ServerHello TCP payloads from the corpus."""
    from lc.common.decode import decode_packet
    from lc.common.pcapfile import open_capture

    chs, shs = [], []
    for name in ("ja4_tls-handshake.pcapng", "ja4_badcurveball.pcap", "suricata_ja4-tls.pcap",
                 "arkime_openssl-tls1_2.pcap", "ja4_tls12.pcap"):  # fmt: skip
        with open_capture(CORPUS / name) as cap:
            for _ts, ifc, data, _ in cap:
                d = decode_packet(cap.interfaces[ifc].linktype, data)
                if d.proto != 6:
                    continue
                p = bytes(data[d.payload_offset : d.payload_offset + d.payload_len])
                if len(p) > 9 and p[0] == 22 and p[1] == 3:
                    n = struct.unpack(">H", p[3:5])[0]
                    if len(p) >= 5 + n and p[5] == 1 and p not in chs:
                        chs.append(p[: 5 + n])
                    elif len(p) >= 5 + n and p[5] == 2 and len(shs) < 8:
                        shs.append(p[: 5 + n])
    return chs, shs


def frame(src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int,
          payload: bytes = b"") -> bytes:  # fmt: skip
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    return b"\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x01\x08\x00" + ip + tcp + payload


def make_capture(path: Path, conns: int, data: int, ch_pool: list[bytes], target: bytes,
                 shs: list[bytes]) -> int:  # fmt: skip
    rnd = random.Random(7)
    bulk = b"\x17\x03\x03" + struct.pack(">H", 1395) + bytes(1395)
    n = 0
    ts = 1_700_000_000 * 10**6
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))

        def put(fr: bytes) -> None:
            nonlocal n, ts
            ts += 20
            f.write(struct.pack("<IIII", ts // 10**6, ts % 10**6, len(fr), len(fr)) + fr)
            n += 1

        active: list = []
        made = 0
        while made < conns or active:
            while made < conns and len(active) < 10:
                ch = target if made % 10 == 0 else rnd.choice(ch_pool)
                cli, srv = 0x0A000000 + made % 60000 + 2, 0x0A640001
                steps = [(1, 0x02, b""), (0, 0x12, b""), (1, 0x10, b""), (1, 0x18, ch),
                         (0, 0x18, rnd.choice(shs))]  # fmt: skip
                steps += [(i % 2, 0x10, bulk) for i in range(data)]
                steps += [(1, 0x11, b""), (0, 0x11, b""), (1, 0x10, b"")]
                active.append([cli, 20000 + made % 40000, srv, steps, 0, [1000, 5000]])
                made += 1
            c = active[rnd.randrange(len(active))]
            cli, cport, srv, steps, i, seqs = c
            to_srv, flags, payload = steps[i]
            if to_srv:
                put(frame(cli, srv, cport, 443, seqs[0], seqs[1], flags, payload))
                seqs[0] += len(payload) + (1 if flags & 0x03 else 0)
            else:
                put(frame(srv, cli, 443, cport, seqs[1], seqs[0], flags, payload))
                seqs[1] += len(payload) + (1 if flags & 0x03 else 0)
            c[4] += 1
            if c[4] == len(steps):
                active.remove(c)
    return n


def build_capture(path: Path, conns: int, data: int) -> tuple[str, int]:
    """Write the benchmark's capture to ``path``: (the target stack's JA4, packets)."""
    from lc.common.fingerprint import ja4
    from lc.common.tls import parse_client_hello

    chs, shs = hellos()
    fps = {c: ja4(parse_client_hello(c[9:])) for c in chs}
    target = next(c for c in chs if list(fps.values()).count(fps[c]) == 1)
    pool = [c for c in chs if fps[c] != fps[target]]
    return fps[target], make_capture(path, conns, data, pool, target, shs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--data", type=int, default=44)
    ap.add_argument("--py-spy", metavar="FILE", help="record the hunter with py-spy (threads, "
                    "speedscope JSON) into FILE; figures drop with it")  # fmt: skip
    args = ap.parse_args()
    from lc.common.credentials import init_pki

    OUT.mkdir(exist_ok=True)
    pki = OUT / "pki"
    if not (pki / "ca.pem").exists():
        init_pki(pki, hunters=["bench"])
    tls = {
        n: ["--tls-cert", str(pki / f"{n}.pem"), "--tls-key", str(pki / f"{n}.key"),
            "--tls-ca", str(pki / "ca.pem")]
        for n in ("processor", "admin", "hunter-bench")
    }  # fmt: skip
    cap = OUT / f"tls-{args.connections}x{args.data}.pcap"
    pattern, total = build_capture(cap, args.connections, args.data)
    work = OUT / "tls"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    port = 0
    err_path = work / "processor.err"
    err = open(err_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [*LC, "process", "--listen", "127.0.0.1:0", "--data-dir", str(work / "data"),
         *tls["processor"]],
        stdout=subprocess.DEVNULL, stderr=err,
    )  # fmt: skip
    while not (m := re.search(r"\(port (\d+)\)", err_path.read_text())):
        if proc.poll() is not None:
            sys.exit(err_path.read_text())
        time.sleep(0.05)
    port = int(m.group(1))
    addr = f"127.0.0.1:{port}"
    subprocess.run(
        [*LC, "set", "filter", "--id", "stack", "--type", "tls_ja4", "--pattern", pattern,
         "--processor", addr, *tls["admin"]],
        capture_output=True, check=True,
    )  # fmt: skip
    hunt = [*LC, "hunt", "tls", "--processor", addr, *tls["hunter-bench"], "-r", str(cap)]
    if args.py_spy:
        # SPY_GIL=1: only the samples of threads holding the GIL.
        spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--threads"]
        if os.environ.get("SPY_GIL"):
            spy.append("--gil")
        hunt = [*spy, "--format", "speedscope", "-o", args.py_spy, "--", *hunt]
    t0 = time.monotonic()
    r = subprocess.run(hunt, capture_output=True, text=True)
    wall = time.monotonic() - t0
    proc.terminate()
    proc.wait(60)
    if r.returncode != 0:
        sys.exit(f"hunter failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    t1 = time.monotonic()
    subprocess.run(["tcpdump", "-r", str(cap), "-w", "/dev/null"], capture_output=True)
    tcpdump = time.monotonic() - t1
    m = re.search(r"in ([\d.]+) s \(([\d,]+) pkt/s\)", r.stdout)
    secs = float(m.group(1)) if m else wall
    hm = re.search(r"(\d+) TLS messages", r.stdout)
    hs = int(hm.group(1)) / secs if hm else 0.0
    print(
        f"tls replay: {total:,} packets, {args.connections:,} connections (10% matching "
        f"tls_ja4 {pattern}): hunter {m.group(2) if m else '?'} pkt/s over {secs:.1f} s, "
        f"{hs:,.0f} hellos parsed/s; {total / wall:,.0f} pkt/s wall; "
        f"tcpdump -r F -w /dev/null: {tcpdump:.2f} s ({total / tcpdump:,.0f} pkt/s)"
    )
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
