"""make bench: live capture on ``lo``, replayed by tcpreplay, capture -> written latency.

Per rate: a fresh ``lc process`` (mutual TLS, its own data directory) and ``lc hunt -i
lo -f 'udp dst port 47999'`` (only the replayed packets; the hunter's own gRPC traffic
on lo is excluded by the hunter anyway). Once a probe datagram sent to that port shows
up in the processor's output (the hunter is capturing), ``tcpreplay -i lo --pps R``
(or ``--topspeed``) sends N packets of a capture made once in bench-out/: Ethernet/IPv4/
UDP frames of 60-460 bytes, each carrying its sequence number, to a MAC address that
is not lo's (the stack drops them at once; libpcap sees each once, as received).
Then the hunter is stopped with SIGINT and its summary gives what libpcap reported
(``dropped.kernel`` = ps_drop, ``dropped.interface`` = ps_ifdrop).

"Written" is measured from the outside: a thread of this process polls the processor's
output file every millisecond and, for every complete record that appeared since the
last poll, takes the wall clock just after the read that returned it. The processor
hands a group's bytes to the OS (``write``) before it commits and acknowledges it, so
this is the moment any reader of the file can see the packet; it is late by at most
one poll interval plus the read. The latency of a packet is that moment minus its
capture time in the record (the kernel's timestamp, CLOCK_REALTIME, as this clock;
microseconds from libpcap). Above ``--latency-max-pps`` the poller stops once the
hunter is capturing (its parsing would take CPU from the hunter and the processor on
a small machine) and the bench waits for the output file to reach the size the sent
packets make.

At the end the output is checked against the capture: every sent packet written,
once, in order, byte for byte (the frames; the timestamps are capture times).

    .venv/bin/python bench/live_bench.py [--rates 300,30000,150000,top] [--seconds 10]

Needs root (capture on lo) and tcpreplay (scripts/test-deps.sh installs it). Prints
figures with the load average; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from _common import tls_args

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
LC = [sys.executable, "-m", "lc.cli"]
PORT = 47999
MAGIC = b"LCLB"
PROBE = b"LCPR"
# Not lo's address (00:00:00:00:00:00): the frames are "to another host" and dropped by
# the stack before IP, so no ICMP answers and no socket work beside the capture.
_ETH = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
_SIZES = (18, 60, 100, 160, 200, 400)  # UDP payload bytes, in turn


def frame(seq: int) -> bytes:
    """Packet ``seq`` of the replayed capture (deterministic)."""
    plen = _SIZES[seq % len(_SIZES)]
    payload = (MAGIC + struct.pack("!Q", seq) + bytes((seq + k) & 255 for k in range(6)))[:plen]
    payload += b"\xa5" * (plen - len(payload))
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        28 + plen,
        seq & 0xFFFF,
        0,
        64,
        17,
        0,
        b"\x7f\x00\x00\x01",
        b"\x7f\x00\x00\x01",
    )
    udp = struct.pack("!HHHH", 40000 + seq % 1000, PORT, 8 + plen, 0)
    return _ETH + ip + udp + payload


def make_capture(n: int) -> Path:
    """bench-out/live-N.pcap (microsecond pcap, made once) of packets 0..n-1."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"live-{n}.pcap"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        buf = []
        for i in range(n):
            fr = frame(i)
            buf.append(
                struct.pack(
                    "<IIII", 1_700_000_000 + i // 1_000_000, i % 1_000_000, len(fr), len(fr)
                )
                + fr
            )
            if len(buf) == 65536:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
    tmp.rename(path)
    return path


def records_size(n: int) -> int:
    """Bytes of the pcap records of packets 0..n-1 (16-byte headers, 42-byte headers
    of the frames, their payloads)."""
    k = len(_SIZES)
    full, rest = divmod(n, k)
    return 58 * n + full * sum(_SIZES) + sum(_SIZES[:rest])


def frames_digest(n: int) -> str:
    h = hashlib.sha256()
    for i in range(n):
        h.update(frame(i))
    return h.hexdigest()


class Poller(threading.Thread):
    """Follows the processor's output file; see the module docstring."""

    def __init__(self, path: Path, timing: bool, interval: float = 0.001) -> None:
        super().__init__(daemon=True, name="poller")
        self.path = path
        self.timing = timing
        self.interval = interval
        self.stop = threading.Event()
        self.latencies: list[int] = []  # ns, per replayed packet seen (when timing)
        self.probes = 0
        self.seen = 0  # replayed packets seen (counted while polling, timing or not)
        self.last_change = time.monotonic()
        self.error = ""

    def run(self) -> None:
        while not self.path.exists():
            if self.stop.wait(self.interval):
                return
        with open(self.path, "rb", buffering=0) as f:
            buf = b""
            header = False
            while True:
                data = f.read(1 << 24)
                now = time.time_ns()
                if data:
                    self.last_change = time.monotonic()
                    buf += data
                    if not header:
                        if len(buf) < 24:
                            continue
                        if struct.unpack_from("<I", buf)[0] != 0xA1B23C4D:
                            self.error = "the output is not a nanosecond pcap"
                            return
                        buf = buf[24:]
                        header = True
                    buf = self._records(buf, now)
                elif self.stop.wait(self.interval):
                    return

    def _records(self, buf: bytes, now: int) -> bytes:
        off, n = 0, len(buf)
        lat = self.latencies
        timing = self.timing
        seen = 0
        while off + 16 <= n:
            sec, nsec, cap, _ = struct.unpack_from("<IIII", buf, off)
            end = off + 16 + cap
            if end > n:
                break
            p = off + 16 + 42  # Ethernet, IPv4 without options, UDP
            if buf[p : p + 4] == MAGIC:
                seen += 1
                if timing:
                    lat.append(now - (sec * 1_000_000_000 + nsec))
            elif buf[p : p + 4] == PROBE:
                self.probes += 1
            off = end
        self.seen += seen
        return buf[off:]


@dataclass
class Case:
    label: str
    pps: int  # 0: --topspeed
    packets: int
    sent: int = 0
    tcpreplay_s: float = 0.0
    tcpreplay_pps: float = 0.0
    captured: int = 0
    kernel: int = 0
    interface: int = 0
    written: int = 0
    check: str = ""
    lat_ms: list[float] = field(default_factory=list)  # p50, p99, max
    hunter_cpu_us: float = 0.0
    processor_cpu_us: float = 0.0
    drops_before: int = 0  # libpcap's drops before the replay (probes, start-up)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after
    summary: str = ""


def kernel_drops(port: int) -> int:
    """The hunter's libpcap drops so far (ps_drop + ps_ifdrop), from its metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        int(float(m.group(1)))
        for m in re.finditer(
            r'^lc_hunter_packets_dropped_total\{reason="(?:kernel|interface)"\} (\S+)', text, re.M
        )
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_case(
    case: Case, cap: Path, pki: Path, hunter_args: list[str], timing: bool, dump: bool = False
) -> Case:
    work = OUT / f"live-{case.label}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    perr = open(work / "processor.err", "w")  # noqa: SIM115
    herr = open(work / "hunter.err", "w")  # noqa: SIM115
    out = work / "data" / "capture.pcap"
    proc = subprocess.Popen(
        [
            *LC,
            "process",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(work / "data"),
            "-w",
            str(out),
            "--no-events",
            *tls_args(pki, "processor"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=perr,
    )
    hunter = None
    poller = Poller(out, timing)
    try:
        deadline = time.monotonic() + 30
        while not (m := re.search(r"\(port (\d+)\)", (work / "processor.err").read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"processor did not start: {(work / 'processor.err').read_text()}")
            time.sleep(0.05)
        addr = f"127.0.0.1:{m.group(1)}"
        with socket.socket() as free:  # the hunter's metrics: libpcap's drops when replay starts
            free.bind(("127.0.0.1", 0))
            metrics = free.getsockname()[1]
        hunter = subprocess.Popen(
            [
                *LC,
                "hunt",
                "--processor",
                addr,
                "-i",
                "lo",
                "-f",
                f"udp dst port {PORT}",
                "--metrics-listen",
                str(metrics),
                *tls_args(pki, "hunter-bench"),
                *hunter_args,
            ],
            stdout=subprocess.PIPE,
            stderr=herr,
            text=True,
        )
        poller.start()
        # Probes until one is written: the hunter is capturing and the path works.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        deadline = time.monotonic() + 30
        while poller.probes == 0:
            if hunter.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"hunter not capturing: {(work / 'hunter.err').read_text()}")
            s.sendto(PROBE, ("127.0.0.1", PORT))
            time.sleep(0.05)
        s.close()
        time.sleep(0.3)  # the last probes' batch
        base = out.stat().st_size
        if not timing:
            poller.stop.set()
        case.load = (os.getloadavg()[0], 0.0)
        case.drops_before = kernel_drops(metrics)
        h0, p0 = cpu_seconds(hunter.pid), cpu_seconds(proc.pid)
        rate = ["--topspeed"] if case.pps == 0 else [f"--pps={case.pps}"]
        r = subprocess.run(
            ["tcpreplay", "-i", "lo", *rate, f"--limit={case.packets}", str(cap)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            sys.exit(f"tcpreplay failed: {r.stdout}{r.stderr}")
        m = re.search(r"Actual: (\d+) packets .* sent in ([\d.]+) seconds", r.stdout)
        m2 = re.search(r"Rated: .*?, ([\d.]+) pps", r.stdout)
        case.sent = int(m.group(1)) if m else 0
        case.tcpreplay_s = float(m.group(2)) if m else 0.0
        case.tcpreplay_pps = float(m2.group(1)) if m2 else 0.0
        # Everything written, or nothing new for 5 s.
        if timing:
            while poller.seen < case.sent and time.monotonic() - poller.last_change < 5:
                time.sleep(0.01)
        else:
            want, size, changed = base + records_size(case.sent), -1, time.monotonic()
            while size < want and time.monotonic() - changed < 5:
                time.sleep(0.05)
                if (new := out.stat().st_size) != size:
                    size, changed = new, time.monotonic()
        case.hunter_cpu_us = (cpu_seconds(hunter.pid) - h0) / max(case.sent, 1) * 1e6
        case.processor_cpu_us = (cpu_seconds(proc.pid) - p0) / max(case.sent, 1) * 1e6
        case.load = (case.load[0], os.getloadavg()[0])
        hunter.send_signal(signal.SIGINT)
        stdout, _ = hunter.communicate(timeout=60)
        case.summary = stdout.strip()
        time.sleep(0.2)
    finally:
        poller.stop.set()
        for p in (hunter, proc):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
        perr.close()
        herr.close()
    poller.join(5)
    m = re.search(r"captured: (\d+) packets", case.summary)
    case.captured = int(m.group(1)) if m else -1
    m = re.search(r"\bkernel (\d+)", case.summary)
    case.kernel = int(m.group(1)) if m else 0
    m = re.search(r"\binterface (\d+)", case.summary)
    case.interface = int(m.group(1)) if m else 0
    if not case.summary:
        case.kernel = case.interface = -1  # no summary: unknown
    case.written, case.check = verify(out, case.sent)
    if poller.latencies:
        lat = sorted(poller.latencies)
        q = statistics.quantiles(lat, n=100) if len(lat) > 1 else lat * 99
        case.lat_ms = [lat[len(lat) // 2] / 1e6, q[98] / 1e6, lat[-1] / 1e6]
        if dump:  # in arrival order: where in the run the slow ones were
            (OUT / f"live-{case.label}.lat").write_text(
                "".join(f"{x / 1e6:.3f}\n" for x in poller.latencies)
            )
    return case


def verify(out: Path, sent: int) -> tuple[int, str]:
    """(replayed packets written, 'ok' or what is wrong): packets 0..sent-1, in order,
    each once and byte for byte."""
    if not out.exists():
        return 0, "WRONG: no output"
    data = out.read_bytes()
    off, n = 24, len(data)
    h = hashlib.sha256()
    written = 0
    while off + 16 <= n:
        cap = struct.unpack_from("<I", data, off + 8)[0]
        fr = data[off + 16 : off + 16 + cap]
        if fr[42:46] == MAGIC:
            h.update(fr)
            written += 1
        off += 16 + cap
    if off != n:
        return written, "WRONG: a torn record at the end"
    if written != sent:
        return written, f"WRONG: {written} of {sent} written"
    if h.hexdigest() != frames_digest(sent):
        return written, "WRONG: not the sent packets, in order, byte for byte"
    return written, "ok"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rates",
        default="300,30000,150000,top",
        help="packets/s per case, comma-separated; 'top' is --topspeed",
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="replay length per case")
    ap.add_argument("--top-packets", type=int, default=1_500_000, help="packets at --topspeed")
    ap.add_argument(
        "--latency-max-pps",
        type=int,
        default=30000,
        help="measure latency only up to this rate (the poller's parsing costs CPU)",
    )
    ap.add_argument(
        "--hunter-arg",
        action="append",
        default=[],
        help="an extra lc hunt argument (repeatable), e.g. --hunter-arg=--batch-timeout=50",
    )
    ap.add_argument(
        "--dump",
        action="store_true",
        help="write each case's latencies (ms, in arrival order) to bench-out/live-RATE.lat",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("live_bench: capture on lo needs root")
    if shutil.which("tcpreplay") is None:
        sys.exit("live_bench: tcpreplay missing (scripts/test-deps.sh installs it)")
    sys.path.insert(0, str(ROOT))
    from lc.common.credentials import init_pki

    pki = OUT / "pki"
    if not (pki / "ca.pem").exists():
        init_pki(pki, hunters=["bench"])
    cases = []
    for r in args.rates.split(","):
        if r.strip() == "top":
            cases.append(Case("top", 0, args.top_packets))
        else:
            pps = int(float(r))
            cases.append(Case(f"{pps}pps", pps, max(1, int(pps * args.seconds))))
    cap = make_capture(max(c.packets for c in cases))
    print(
        f"lc live capture on lo (tcpreplay -> lc hunt -i lo -> lc process, mTLS), "
        f"{os.cpu_count()} CPUs, hunter args {args.hunter_arg or 'default'}"
    )
    print(
        f"{'rate':>10} {'sent':>10} {'tcpreplay pps':>14} {'kernel drops':>13} "
        f"{'written':>10} {'lat p50/p99/max ms':>22} {'CPU us/pkt h/p':>15}  load  check"
    )
    for c in cases:
        timing = c.pps != 0 and c.pps <= args.latency_max_pps
        run_case(c, cap, pki, args.hunter_arg, timing, args.dump)
        lat = "/".join(f"{x:.1f}" for x in c.lat_ms) if c.lat_ms else "-"
        drops = f"{c.kernel}+{c.interface}" if c.interface else f"{c.kernel}"
        print(
            f"{c.label:>10} {c.sent:>10,} {c.tcpreplay_pps:>14,.0f} {drops:>13} "
            f"{c.written:>10,} {lat:>22} {c.hunter_cpu_us:>7.2f}/{c.processor_cpu_us:<7.2f} "
            f"{c.load[0]:.2f}-{c.load[1]:.2f}  {c.check}",
            flush=True,
        )
        if c.drops_before:
            print(f"           (of the drops, {c.drops_before} before the replay began)")
        if c.check != "ok" or c.kernel:
            print(f"           hunter: {c.summary}", flush=True)
    for c in cases:
        shutil.rmtree(OUT / f"live-{c.label}", ignore_errors=True)


if __name__ == "__main__":
    main()
