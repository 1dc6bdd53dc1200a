"""Outage and recovery end to end: 1M packets spooled by a hunter, then drained.

Real processes over mutual TLS on loopback, as ``make bench`` runs them:

1. ``lc hunt -r FILE --disk-buffer`` with no processor listening: every batch goes to
   the disk spool. Prints packets/s and MB/s into the spool (reading the pcap included).
2. A hunter restarted on the same spool (replaying an empty file, so the spool is all it
   sends) while the processor is still down, then the processor starts. Prints:
   * restart -> drained: from starting the processor until it has written all packets
     (includes the hunter's reconnect backoff, which depends on how long it had waited);
   * drain: from the first packet written to the last (the replay rate proper).
Every run checks that the processor wrote exactly the packets of the file.

    .venv/bin/python bench/drain_bench.py [--packets 1000000] [--wait-before-restart 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
LC = [sys.executable, "-m", "lc.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--wait-before-restart", type=float, default=3.0)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    import grpc
    from run import generate  # the same synthetic traffic as bench/run.py

    from lc.common.credentials import init_pki
    from lc.common.pcapfile import open_capture
    from lc.common.transport import TlsFiles, open_channel
    from lc.proto import lc_pb2, lc_pb2_grpc

    OUT.mkdir(exist_ok=True)
    cap = OUT / f"bench-{args.packets}-ns.pcap"
    if not cap.exists():
        generate(cap, args.packets, nano=True)
    pki = OUT / "pki"
    if not (pki / "ca.pem").exists():
        init_pki(pki, hunters=["bench"])

    def tls(name: str) -> list[str]:
        return [
            "--tls-cert", str(pki / f"{name}.pem"), "--tls-key", str(pki / f"{name}.key"),
            "--tls-ca", str(pki / "ca.pem"),
        ]  # fmt: skip

    work = OUT / "drain"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    spool = work / "spool"
    port = free_port()
    target = f"127.0.0.1:{port}"
    common = ["--processor", target, *tls("hunter-bench"), "--disk-buffer",
              "--disk-buffer-dir", str(spool), "--connect-timeout", "1"]  # fmt: skip

    # 1. Spool everything (no processor).
    t0 = time.monotonic()
    r = subprocess.run(
        [*LC, "hunt", *common, "-r", str(cap), "--shutdown-timeout", "0"],
        capture_output=True, text=True,
    )  # fmt: skip
    t_spool = time.monotonic() - t0
    spooled = sum(f.stat().st_size for f in spool.glob("*.seg"))
    if "unacknowledged" not in r.stdout:
        sys.exit(f"spooling run failed: {r.stdout}\n{r.stderr}")
    m = re.search(r"in ([\d.]+) s \(", r.stdout)
    t_cap = float(m.group(1)) if m else t_spool
    print(
        f"spool write: {args.packets:,} packets, {spooled / 1e6:.0f} MB in {t_cap:.2f} s "
        f"= {args.packets / t_cap:,.0f} pkt/s, {spooled / 1e6 / t_cap:.0f} MB/s "
        f"(lc hunt -r into the spool, processor down: reading, batching and spooling; "
        f"{t_spool:.1f} s with start-up)"
    )

    # 2. Hunter waiting on the spool, then the processor comes back.
    empty = work / "empty.pcap"
    from lc.common.pcapfile import PcapWriter

    PcapWriter(empty, 1).close()
    hunter = subprocess.Popen(
        [*LC, "hunt", *common, "-r", str(empty), "--shutdown-timeout", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(args.wait_before_restart)
    out = work / "out.pcap"
    err = work / "processor.err"
    t_restart = time.monotonic()
    proc = subprocess.Popen(
        [*LC, "process", "--listen", target, "--data-dir", str(work / "data"), "-w", str(out),
         *tls("processor")],
        stdout=subprocess.DEVNULL, stderr=open(err, "w"),  # noqa: SIM115
    )  # fmt: skip
    while "(port " not in err.read_text():
        time.sleep(0.01)
    # The processor's count, asked every 5 ms over one admin channel (a `lc show status`
    # per poll took longer than the whole drain: its rate came out as 0 s or less).
    files = TlsFiles(*(str(pki / n) for n in ("admin.pem", "admin.key", "ca.pem")))
    first = None
    written = 0
    with open_channel(target, files) as ch:
        stub = lc_pb2_grpc.ManagementServiceStub(ch)
        while written < args.packets:
            try:
                written = stub.GetStatus(lc_pb2.StatusRequest(), timeout=5).packets_written
            except grpc.RpcError:
                time.sleep(0.05)
                continue
            if written and first is None:
                first = time.monotonic()
            if hunter.poll() is not None and written < args.packets:
                break
            time.sleep(0.005)
    t_done = time.monotonic()
    hunter.communicate(timeout=120)
    proc.terminate()
    proc.wait(30)
    with open_capture(out) as rd:
        n = sum(1 for _ in rd.records())
    ok = "OK" if n == args.packets else f"MISMATCH: {n} written"
    drain = t_done - (first or t_restart)
    print(
        f"restart -> drained: {t_done - t_restart:.2f} s (processor start until all "
        f"{args.packets:,} written; hunter had waited {args.wait_before_restart:g} s) [{ok}]"
    )
    print(
        f"drain: {drain:.2f} s = {args.packets / drain:,.0f} pkt/s, "
        f"{spooled / 1e6 / drain:.0f} MB/s (first to last packet written, mTLS)"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
