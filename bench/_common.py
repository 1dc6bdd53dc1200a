"""What the mode benchmarks share: synthetic TCP captures, the end-to-end run against a
real processor, and the in-process CPU measurement of a mode.

* :func:`tcp_frame` and :func:`write_tcp_capture`: Ethernet/IPv4/TCP conversations
  (a SYN handshake, the data cut into ``mss`` segments, the receiver ACKing every
  second one, a FIN close), ``parallel`` of them open at a time and interleaved
  packet by packet, into a microsecond pcap.
* :func:`end_to_end`: ``lc hunt MODE -r capture`` over mutual TLS to a real
  ``lc process`` with one filter pushed; the hunter's own figures, the wall time, the
  same run's ``tcpdump -r F -w /dev/null`` time and what the processor wrote.
* :func:`in_process`: the mode alone (the registry's factory, the filter applied as
  the processor would push it) fed the capture's chunks as ``lc hunt -r`` reads them;
  the CPU time (``time.process_time``) spent in ``Mode.process`` and ``finish``, the
  median of ``runs`` runs: the figure to compare before and after a change on a
  shared machine. ``profile`` adds cProfile's own time grouped by source file (the
  mode's share against the session engine's) and its top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
LC = [sys.executable, "-m", "lc.cli"]

_ETH = b"\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x01\x08\x00"
_SERVER = 0x0A640001  # 10.100.0.1


def synthetic_udp(n: int, seed: int = 1) -> Iterator[tuple[int, bytes]]:
    """The end-to-end benches' traffic: ``n`` (ns timestamp, frame) pairs, Ethernet/IPv4/
    UDP packets of 60-460 bytes ~1 ms apart on average; the same for the same seed."""
    rnd = random.Random(seed)
    eth = bytes.fromhex("001122334455667788990aab") + b"\x08\x00"
    ts = 1_700_000_000_000_000_000
    for i in range(n):
        plen = rnd.choice((18, 60, 100, 160, 200, 400))
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + plen, i & 0xFFFF, 0, 64, 17, 0,
                         bytes((10, 0, i >> 8 & 255, i & 255)), bytes((10, 0, 1, 1)))  # fmt: skip
        udp = struct.pack("!HHHH", 10000 + i % 20000, 5060, 8 + plen, 0)
        ts += rnd.randint(100_000, 1_900_000)
        yield ts, eth + ip + udp + rnd.randbytes(plen)


def tls_args(pki: Path, name: str) -> list[str]:
    """The TLS flags of certificate ``name`` (``processor``, ``admin``, ``hunter-X``) of
    an ``lc certs init`` directory."""
    return ["--tls-cert", str(pki / f"{name}.pem"), "--tls-key", str(pki / f"{name}.key"),
            "--tls-ca", str(pki / "ca.pem")]  # fmt: skip


def tcp_frame(src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int,
              payload: bytes = b"") -> bytes:  # fmt: skip
    """One Ethernet/IPv4/TCP frame (no options, checksums left 0)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    return _ETH + ip + tcp + payload


# A conversation: (server port, whether filters select it, sends), a send being
# (1 = to the server / 0 = to the client, its bytes).
Conversation = tuple[int, bool, list[tuple[int, bytes]]]


def write_tcp_capture(
    path: Path,
    rnd: random.Random,
    conversations: Iterator[Conversation],
    mss: int,
    parallel: int = 10,
) -> tuple[int, int]:
    """Write the conversations (made lazily, as slots free up) interleaved at random;
    returns (packets, packets of the selected conversations)."""
    ts = 1_700_000_000 * 10**6
    total = selected = 0
    made = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        active: list[list] = []
        more = True
        while more or active:
            while more and len(active) < parallel:
                conv = next(conversations, None)
                if conv is None:
                    more = False
                    break
                port, target, sends = conv
                steps: list[tuple[int, int, bytes]] = [(1, 0x02, b""), (0, 0x12, b""),
                                                       (1, 0x10, b"")]  # fmt: skip
                for d, data in sends:
                    for k, j in enumerate(range(0, len(data), mss)):
                        steps.append((d, 0x18, data[j : j + mss]))
                        if k % 2 == 1:
                            steps.append((1 - d, 0x10, b""))  # the receiver's ACK
                steps += [(1, 0x11, b""), (0, 0x11, b""), (1, 0x10, b"")]
                cli = 0x0A000000 + made % 60000 + 2
                active.append([cli, 20000 + made % 40000, steps, 0, [1000, 5000], target, port])
                made += 1
            if not active:
                break
            c = active[rnd.randrange(len(active))]
            cli, cport, steps, i, seqs, target, port = c
            to_srv, flags, payload = steps[i]
            if to_srv:
                fr = tcp_frame(cli, _SERVER, cport, port, seqs[0], seqs[1], flags, payload)
                seqs[0] += len(payload) + (1 if flags & 0x03 else 0)
            else:
                fr = tcp_frame(_SERVER, cli, port, cport, seqs[1], seqs[0], flags, payload)
                seqs[1] += len(payload) + (1 if flags & 0x03 else 0)
            ts += 20
            f.write(struct.pack("<IIII", ts // 10**6, ts % 10**6, len(fr), len(fr)) + fr)
            total += 1
            selected += 1 if target else 0
            c[3] += 1
            if c[3] == len(steps):
                active.remove(c)
    return total, selected


def cached_capture(name: str, make: Callable[[Path], dict]) -> tuple[Path, dict]:
    """``bench-out/NAME.pcap`` and its figures, made once by ``make(path)``."""
    OUT.mkdir(exist_ok=True)
    cap = OUT / f"{name}.pcap"
    info_path = cap.with_suffix(".json")
    if cap.exists() and info_path.exists():
        return cap, json.loads(info_path.read_text())
    info = make(cap)
    info_path.write_text(json.dumps(info))
    return cap, info


# -- end to end ----------------------------------------------------------------------------


@dataclass
class EndToEnd:
    secs: float  # the hunter's own figure (capture time), else the wall time
    rate: str  # the hunter's pkt/s as it printed it
    wall: float  # hunter start to exit
    tcpdump: float  # tcpdump -r F -w /dev/null on the same capture
    packets: int  # in the processor's PCAP
    events: int  # lines in the processor's event log


def end_to_end(mode: str, cap: Path, filter_type: str, pattern: str, profile: bool) -> EndToEnd:
    """``lc hunt MODE -r cap`` to a real processor holding one filter (see the module
    docstring); exits with the hunter's output if it fails."""
    sys.path.insert(0, str(ROOT))
    from lc.common.credentials import init_pki
    from lc.common.pcapfile import open_capture

    pki = OUT / "pki"
    if not (pki / "ca.pem").exists():
        init_pki(pki, hunters=["bench"])
    tls = {n: tls_args(pki, n) for n in ("processor", "admin", "hunter-bench")}
    work = OUT / mode
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    err_path = work / "processor.err"
    err = open(err_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [*LC, "process", "--listen", "127.0.0.1:0", "--data-dir", str(work / "data"),
         *tls["processor"]],
        stdout=subprocess.DEVNULL, stderr=err,
    )  # fmt: skip
    prof = work / "hunter.prof"
    try:
        while not (m := re.search(r"\(port (\d+)\)", err_path.read_text())):
            if proc.poll() is not None:
                sys.exit(err_path.read_text())
            time.sleep(0.05)
        addr = f"127.0.0.1:{m.group(1)}"
        subprocess.run(
            [*LC, "set", "filter", "--id", "target", "--type", filter_type, "--pattern",
             pattern, "--processor", addr, *tls["admin"]],
            capture_output=True, check=True,
        )  # fmt: skip
        hunt = [*LC, "hunt", mode, "--processor", addr, *tls["hunter-bench"], "-r", str(cap)]
        if profile:
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
        err.close()
    if r.returncode != 0:
        sys.exit(f"hunter failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    m = re.search(r"in ([\d.]+) s \(([\d,]+) pkt/s\)", r.stdout)
    with open_capture(work / "data" / "capture.pcap") as rd:
        got = sum(1 for _ in rd.records())
    events = sum(
        len(p.read_text().splitlines()) for p in (work / "data" / "events").glob("*.jsonl")
    )
    if profile:
        pstats.Stats(str(prof)).sort_stats("tottime").print_stats(30)
    return EndToEnd(
        float(m.group(1)) if m else wall, m.group(2) if m else "?", wall, tcpdump, got, events
    )


# -- in process ----------------------------------------------------------------------------


@dataclass
class InProcess:
    cpu: float  # median CPU seconds in Mode.process + finish
    runs: list[float]
    packets: int
    forwarded: int
    events: int


def in_process(
    mode: str,
    cap: Path,
    filter_type: str,
    pattern: str,
    runs: int = 3,
    profile: bool = False,
    options: dict[str, str] | None = None,
) -> InProcess:
    """The mode alone over the capture (see the module docstring)."""
    from lc.common.filters import Filter, compile_filters
    from lc.hunter import modes
    from lc.hunter.capture import FileSource
    from lc.hunter.modes.base import ModeContext, parse_options

    spec = modes.get(mode)
    assert spec is not None, mode
    cfg = parse_options(spec.config, options or {})
    fs = compile_filters(
        [Filter(id="target", type=filter_type, pattern=pattern)], None, spec.filter_types
    )
    times: list[float] = []
    packets = forwarded = events = 0
    prof = cProfile.Profile() if profile else None
    for _ in range(1 if profile else runs):
        src = FileSource(str(cap))
        m = spec.factory(ModeContext(src.interfaces, policy=spec.default_policy), cfg)
        m.apply(fs)
        packets = forwarded = events = 0
        cpu = 0.0
        gc.collect()
        if prof is not None:
            prof.enable()
        while (chunk := src.read(4096)) is not None:
            t0 = time.process_time()
            fwd = m.process(chunk)
            cpu += time.process_time() - t0
            packets += len(chunk)
            forwarded += len(fwd.chunk)
            events += len(fwd.events)
        t0 = time.process_time()
        fwd = m.finish()
        cpu += time.process_time() - t0
        if prof is not None:
            prof.disable()
        forwarded += len(fwd.chunk)
        events += len(fwd.events)
        times.append(cpu)
    if prof is not None:
        _print_profile(prof)
    return InProcess(statistics.median(times), times, packets, forwarded, events)


def _print_profile(prof: cProfile.Profile) -> None:
    """Own time by source file (the mode against the engine), then the top functions."""
    st = pstats.Stats(prof)
    by_file: dict[str, float] = {}
    total = 0.0
    for (file, _line, _fn), (_cc, _nc, tt, _ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        key = os.path.relpath(file, ROOT) if file.startswith(str(ROOT)) else file
        by_file[key] = by_file.get(key, 0.0) + tt
        total += tt
    print(f"own time by file (of {total:.2f} s under the profiler):")
    for key, tt in sorted(by_file.items(), key=lambda kv: -kv[1])[:20]:
        print(f"  {100 * tt / total:5.1f}%  {tt:6.2f} s  {key}")
    st.sort_stats("tottime").print_stats(25)


def report_in_process(label: str, r: InProcess, units: int, unit: str) -> None:
    """One line: CPU per packet and its rate, per ``unit`` (transactions, messages)."""
    print(
        f"{label} in process (mode only, median of {len(r.runs)}: "
        f"{', '.join(f'{t:.2f}' for t in r.runs)} s CPU): {r.packets:,} packets, "
        f"{r.cpu / r.packets * 1e6:.2f} us/packet = {r.packets / r.cpu:,.0f} pkt/s, "
        f"{units / r.cpu:,.0f} {unit}/s; {r.forwarded:,} forwarded, {r.events:,} events; "
        f"load average {os.getloadavg()[0]:.2f}"
    )


# -- the command line ------------------------------------------------------------------------


def mode_bench(
    doc: str,
    mode: str,
    unit: str,
    target: tuple[str, str],
    sizes: tuple[tuple[str, int, str], tuple[str, int, str]],
    make: Callable[[Path, int, int], dict],
) -> None:
    """A mode benchmark's command line: the capture ``MODE-AxB`` made by ``make(path,
    a, b)`` (``sizes``: the two size flags, defaults and helps); end to end, or with
    ``--in-process`` the mode alone; ``--profile`` either way. ``make``'s figures are
    ``packets``, ``UNIT``, ``target_UNIT`` and ``target_packets``; one filter
    (``target``: type, pattern) selects the target's."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    for flag, default, help in sizes:
        ap.add_argument(flag, type=int, default=default, help=help)
    ap.add_argument("--profile", action="store_true", help="cProfile the hunter (slower)")
    ap.add_argument(
        "--in-process", action="store_true", help="time the mode alone (CPU), no processor"
    )
    ap.add_argument("--runs", type=int, default=3, help="in-process runs (the median)")
    args = ap.parse_args()
    a, b = (getattr(args, flag.lstrip("-").replace("-", "_")) for flag, _, _ in sizes)
    cap, info = cached_capture(f"{mode}-{a}x{b}", lambda p: make(p, a, b))
    total, units, want_units = info["packets"], info[unit], info[f"target_{unit}"]
    if args.in_process:
        r = in_process(mode, cap, *target, args.runs, args.profile)
        report_in_process(mode, r, units, unit)
        return
    e = end_to_end(mode, cap, *target, args.profile)
    want = (info["target_packets"], want_units)
    ok = "OK" if (e.packets, e.events) == want else f"MISMATCH: want {want[0]}, {want[1]}"
    print(
        f"{mode} replay: {total:,} packets, {units:,} {unit} ({want_units:,} matching): "
        f"hunter {e.rate} pkt/s, {units / e.secs:,.0f} {unit}/s over {e.secs:.1f} s "
        f"({total / e.wall:,.0f} pkt/s wall, start to exit); "
        f"tcpdump -r F -w /dev/null {total / e.tcpdump:,.0f} pkt/s ({e.tcpdump:.2f} s); "
        f"{e.packets:,} packets and {e.events:,} events at the processor [{ok}]; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
