"""make bench: end-to-end replay throughput, next to tcpdump on the same file.

Generates a ~1M-packet capture (once, in bench-out/), then for a nanosecond and a
microsecond copy of it: times `tcpdump -r FILE -w /dev/null` (the C limit), and
`lc hunt -r FILE` streaming over mutual TLS to `lc process` on loopback, from the
hunter's start to the last acknowledgement: the median and range of ``--runs`` runs,
the hunter's and the processor's CPU per packet (medians; the hunter's includes its
start-up) and the 1-minute load average before the runs (the machine may be shared).
Checks that the processor wrote every packet and that its output is the input byte for
byte (as nanosecond pcap). Prints figures; asserts nothing about speed.

    .venv/bin/python bench/run.py [--packets N] [--runs K] [--insecure-too]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

from _common import synthetic_udp, tls_args

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
LC = [sys.executable, "-m", "lc.cli"]


def generate(path: Path, n: int, nano: bool) -> None:
    """Ethernet/IPv4/UDP packets of 60-460 bytes, ~1 ms apart on average."""
    from array import array

    from lc.common.pcapfile import PcapWriter, frame_records

    w = PcapWriter(path, 1)
    packets = synthetic_udp(n)
    chunk = 50_000
    for _ in range(0, n, chunk):
        tss, caps, pkts = array("q"), array("I"), []
        for ts, pkt in itertools.islice(packets, chunk):
            tss.append(ts if nano else ts // 1000 * 1000)
            caps.append(len(pkt))
            pkts.append(pkt)
        w.write_records(frame_records(tss, caps, caps, b"".join(pkts)), len(caps))
    w.close()
    if not nano:  # rewrite as a classic microsecond pcap, as tcpdump writes by default
        data = bytearray(path.read_bytes())
        struct.pack_into("<I", data, 0, 0xA1B2C3D4)
        off = 24
        while off < len(data):
            _, ns, cap, _ = struct.unpack_from("<IIII", data, off)
            struct.pack_into("<I", data, off + 4, ns // 1000)
            off += 16 + cap
        path.write_bytes(bytes(data))


def time_tcpdump(path: Path, runs: int) -> float | None:
    if shutil.which("tcpdump") is None:
        return None
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(
            ["tcpdump", "-r", str(path), "-w", "/dev/null"], check=True, stderr=subprocess.DEVNULL
        )
        best = min(best, time.perf_counter() - t0)
    return best


def start_processor(data_dir: Path, tls: list[str]) -> tuple[subprocess.Popen, str, Path]:
    err = data_dir.parent / f"{data_dir.name}.log"
    f = open(err, "w")  # noqa: SIM115
    p = subprocess.Popen(
        [*LC, "process", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), *tls],
        stderr=f,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(r"\(port (\d+)\)", err.read_text())
        if m:
            return p, f"127.0.0.1:{m.group(1)}", data_dir / "capture.pcap"
        if p.poll() is not None:
            break
        time.sleep(0.05)
    p.kill()
    raise SystemExit(f"processor did not start: {err.read_text()}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_e2e(
    capture: Path, n: int, tls_p: list[str], tls_h: list[str], tag: str
) -> tuple[float, str, float, float]:
    """(seconds, check, the processor's CPU seconds while the hunter ran, the hunter's)."""
    data = OUT / f"data-{tag}"
    shutil.rmtree(data, ignore_errors=True)
    proc, addr, out = start_processor(data, tls_p)
    try:
        c0 = cpu_seconds(proc.pid)
        h0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run(
            [*LC, "hunt", "--processor", addr, "-r", str(capture), *tls_h],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(proc.pid) - c0
        h1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the hunter: the only child reaped
        hcpu = h1.ru_utime + h1.ru_stime - h0.ru_utime - h0.ru_stime
        if r.returncode != 0:
            raise SystemExit(f"hunter failed: {r.stderr}")
    finally:
        proc.terminate()
        proc.wait(60)
    m = re.search(r"in ([\d.]+) s", r.stdout)
    took = float(m.group(1)) if m else wall
    from lc.common.pcapfile import open_capture

    with open_capture(out) as rd:
        got = 0
        while (c := rd.read_columns(65536)) is not None:
            got += len(c)
    if got != n:
        return took, f"WRONG: {got} of {n} packets written", cpu, hcpu
    if out.read_bytes() != as_nanosecond_pcap(capture):
        return took, "WRONG: the output is not the input, byte for byte", cpu, hcpu
    return took, "ok, byte-identical", cpu, hcpu


def as_nanosecond_pcap(path: Path) -> bytes:
    """The file as the processor writes it: nanosecond pcap, same records (a µs capture's
    times times 1000). The check of byte-identical output."""
    data = bytearray(path.read_bytes())
    if struct.unpack_from("<I", data, 0)[0] == 0xA1B2C3D4:
        struct.pack_into("<I", data, 0, 0xA1B23C4D)
        off = 24
        while off < len(data):
            _, us, cap, _ = struct.unpack_from("<IIII", data, off)
            struct.pack_into("<I", data, off + 4, us * 1000)
            off += 16 + cap
    return bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--insecure-too", action="store_true", help="also measure without TLS")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from lc.common.credentials import init_pki

    pki = OUT / "pki"
    if not (pki / "ca.pem").exists():
        init_pki(pki, hunters=["bench"])

    def tls(name: str) -> list[str]:
        return tls_args(pki, name)

    print(
        f"lc end-to-end replay benchmark: {args.packets:,} packets, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs; median (range) of {args.runs} runs"
    )
    print(
        f"{'input':<20}{'tcpdump -r (C limit)':>22}{'lc hunt -> lc process':>34}"
        f"{'CPU/pkt hunter, processor':>28}{'load':>6}  check"
    )
    modes = [("mTLS", tls("processor"), tls("hunter-bench"))]
    if args.insecure_too:
        modes.append(("insecure", ["--insecure"], ["--insecure"]))
    for nano in (True, False):
        name = f"bench-{args.packets}-{'ns' if nano else 'us'}.pcap"
        cap = OUT / name
        if not cap.exists():
            print(f"  (generating {cap.relative_to(ROOT)} ...)", flush=True)
            generate(cap, args.packets, nano)
        td = time_tcpdump(cap, args.runs)
        td_txt = f"{args.packets / td / 1e3:,.0f}k pkt/s" if td else "tcpdump missing"
        for label, tp, th in modes:
            status, tooks, cpus, hcpus = "ok, byte-identical", [], [], []
            load = os.getloadavg()[0]
            for i in range(args.runs):
                took, st, cpu, hcpu = run_e2e(cap, args.packets, tp, th, f"{label}-{i}")
                tooks.append(took)
                cpus.append(cpu)
                hcpus.append(hcpu)
                if not st.startswith("ok"):
                    status = st
            rates = sorted(args.packets / t / 1e3 for t in tooks)
            mid = len(rates) // 2
            p_us = sorted(cpus)[mid] / args.packets * 1e6
            h_us = sorted(hcpus)[mid] / args.packets * 1e6
            desc = f"{'ns' if nano else 'µs'} pcap, {label}"
            rate = f"{rates[mid]:,.0f}k pkt/s ({rates[0]:,.0f}-{rates[-1]:,.0f}k)"
            print(
                f"{desc:<20}{td_txt:>22}{rate:>34}"
                f"{h_us:>14.2f}, {p_us:.2f} µs{load:>8.1f}  {status}",
                flush=True,
            )
    for d in OUT.glob("data-*"):
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
