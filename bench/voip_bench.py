"""VoIP end to end: `lc hunt voip -r` to a processor writing one PCAP per call.

1. A synthetic SIP/RTP capture (tests/voip_tools.make_voip_capture: 1000 calls, 500 RTP
   packets each plus RTCP, 10% of the calls to `target-*` users, 10% of the calls' SIP
   over TCP; >= 500k packets) is replayed with `lc hunt voip -r` over mutual TLS to
   `lc process --per-call-pcap-dir`, twice: with one `sip_user` filter `target-*` (10%
   of the calls match), and with `caller-*` (every call matches). Prints packets/s end
   to end (the hunter's own figure, and wall time from start to exit), the hunter's and
   the processor's CPU time per packet, the hunter's peak RSS, and `tcpdump -r FILE -w
   /dev/null` on the same file; checks that exactly the matching calls got a file, each
   with exactly its packets.
2. 10,000 concurrent undecided calls (INVITE, 100, 180 with SDP and early media, never
   answered) replayed with a filter matching none of them: the hunter holds all of them
   until the end of the file. Prints its peak RSS (target <= 200 MB).
3. Cost as work grows, in process (the VoIP mode alone, CPU time, median of 3 runs):
   packets/s against concurrent calls (100, 1k, 10k: 10,000 calls of 40 RTP packets,
   overlapping that much) and against the number of filters (10, 1k, 100k `sip_user` and
   `phone_number` patterns, one of them `target-*`, on the capture of 1.).
4. Where the CPU of the every-call replay goes, in process, per packet: the hunter's
   mode, batcher and encoding, the processor's per-call files (:func:`costs`).

Peak RSS is the hunter's own high-water mark (VmHWM, read from /proc while it runs). The
child's ru_maxrss is not: after vfork and exec Linux starts a child's ru_maxrss at its
parent's peak RSS, so a bench that had just generated a capture in memory reported that
(e.g. 253 MB for 10,000 undecided calls whose hunter peaked at 173 MB).

    .venv/bin/python bench/voip_bench.py [--calls 1000] [--rtp 500] [--no-tables]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
LC = [sys.executable, "-m", "lc.cli"]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def run_measured(args: list[str]) -> tuple[int, str, str, float, int, float]:
    """Run a command: (exit code, stdout, stderr, seconds, peak RSS in bytes, CPU seconds).

    The peak is the process's own VmHWM, sampled every 10 ms until it exits (see the
    module docstring for why not ru_maxrss)."""
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t0 = time.monotonic()
        p = subprocess.Popen(args, stdout=fo, stderr=fe, text=True)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                v = _hwm_kib(p.pid)
                if v is not None and v > peak[0]:
                    peak[0] = v
                done.wait(0.01)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.monotonic() - t0
        done.set()
        t.join()
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        return (p.returncode, fo.read(), fe.read(), dt, peak[0] * 1024,
                ru.ru_utime + ru.ru_stime)  # fmt: skip


def tcpdump_rate(path: Path, packets: int) -> str:
    if not shutil.which("tcpdump"):
        return "tcpdump: not installed"
    t0 = time.monotonic()
    r = subprocess.run(["tcpdump", "-r", str(path), "-w", "/dev/null"], capture_output=True)
    dt = time.monotonic() - t0
    return f"tcpdump -r: {packets / dt:,.0f} pkt/s" if r.returncode == 0 else "tcpdump failed"


def load() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


class Processor:
    """A `lc process` on loopback with mutual TLS, for one hunter run."""

    def __init__(self, work: Path, tls: dict, name: str, per_call: Path | None) -> None:
        self.addr = f"127.0.0.1:{free_port()}"
        self.err = work / f"{name}.err"
        args = [*LC, "process", "--listen", self.addr, "--data-dir", str(work / f"{name}-data"),
                "-w", str(work / f"{name}.pcap"), *tls["processor"]]  # fmt: skip
        if per_call is not None:
            args += ["--per-call-pcap-dir", str(per_call)]
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        while "(port " not in self.err.read_text():
            if self.proc.poll() is not None:
                sys.exit(self.err.read_text())
            time.sleep(0.05)
        self.tls = tls

    def set_filter(self, fid: str, kind: str, pattern: str) -> None:
        r = subprocess.run(
            [*LC, "set", "filter", "--id", fid, "--type", kind, "--pattern", pattern,
             "--processor", self.addr, *self.tls["admin"]],
            capture_output=True, text=True,
        )  # fmt: skip
        if r.returncode != 0:
            sys.exit(r.stderr)

    def stop(self) -> float:
        """Stop it; its CPU seconds (start-up included), read from /proc just before."""
        cpu = 0.0
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2 :].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
        self.proc.terminate()
        self.proc.wait(60)
        return cpu


def replay(work: Path, tls: dict, cap: Path, info: dict, name: str, pattern: str,
           matching: dict) -> None:  # fmt: skip
    """Section 1: one replay to per-call files with one sip_user filter."""
    from lc.common.pcapfile import open_capture

    total = info["totals"]["packets"]
    calls_dir = work / f"{name}-calls"
    proc = Processor(work, tls, name, calls_dir)
    proc.set_filter("f", "sip_user", pattern)
    load0 = load()
    code, out, herr, wall, rss, cpu = run_measured(
        [*LC, "hunt", "voip", "--processor", proc.addr, *tls["hunter-bench"], "-r", str(cap)]
    )
    pcpu = proc.stop()
    if code != 0:
        sys.exit(f"hunter failed ({code}): {out}\n{herr}")
    m = re.search(r"in ([\d.]+) s \(([\d,]+) pkt/s\)", out)
    files = sorted(calls_dir.glob("*.pcap"))
    got = []
    for f in files:
        with open_capture(f) as rd:
            got.append(sum(1 for _ in rd.records()))
    # TCP segments without payload (handshake, FIN) belong to no SIP message: not sent.
    want = sorted(c["packets"] - c["tcp_ctl"] for c in matching.values())
    ok = "OK" if sorted(got) == want and len(files) == len(matching) else "MISMATCH"
    print(
        f"voip replay, {name}: {total:,} packets, {len(info['calls'])} calls "
        f"({len(matching)} matching): hunter {m.group(2) if m else '?'} pkt/s over "
        f"{m.group(1) if m else '?'} s; {total / wall:,.0f} pkt/s wall (start to exit, "
        f"{wall:.1f} s); hunter CPU {cpu / total * 1e6:.2f} us/pkt, processor CPU "
        f"{pcpu / total * 1e6:.2f} us/pkt (start-up included); "
        f"peak RSS {rss / 2**20:.0f} MB; {tcpdump_rate(cap, total)}; {len(files)} call "
        f"files [{ok}]; load {load0}"
    )


def undecided(work: Path, tls: dict, calls: int) -> None:
    """Section 2: the hunter's peak RSS holding ``calls`` undecided calls."""
    from tests.voip_tools import make_undecided_calls_capture

    und = OUT / f"voip-undecided-{calls}.pcap"
    if not und.exists():
        make_undecided_calls_capture(und, calls=calls, rtp_per_call=20)
    proc = Processor(work, tls, "undecided", None)
    proc.set_filter("none", "sip_user", "nobody")
    code, out, _, _, rss, _ = run_measured(
        [*LC, "hunt", "voip", "--processor", proc.addr, *tls["hunter-bench"], "-r", str(und),
         "--call-decide-timeout", "3600", "--max-calls", str(calls * 2)]
    )  # fmt: skip
    proc.stop()
    held = re.search(r"calls: (\d+) seen", out)
    print(
        f"voip undecided: {calls:,} concurrent undecided calls held until the end of the file "
        f"({held.group(1) if held else '?'} seen): hunter peak RSS {rss / 2**20:.0f} MB "
        f"(VmHWM; target <= 200 MB); exit {code}"
    )


def mode_rate(path: Path, filters: list, runs: int = 3) -> tuple[float, int]:
    """The VoIP mode alone on a capture, in process: (packets/s of CPU, median of
    ``runs``; packets forwarded)."""
    import gc

    from lc.common.filters import compile_filters
    from lc.hunter.capture import FileSource
    from lc.hunter.modes.base import ModeContext
    from lc.hunter.modes.voip import VOIP_FILTER_TYPES, VoipConfig, voip_mode

    src = FileSource(str(path))
    chunks = []
    while (c := src.read(4096)) is not None:
        chunks.append(c)
    n = sum(len(c) for c in chunks)
    compiled = compile_filters(filters, "bench", VOIP_FILTER_TYPES)
    times = []
    forwarded = 0
    for _ in range(runs):
        mode = voip_mode(ModeContext(list(src.interfaces)), VoipConfig(max_calls=40_000))
        mode.apply(compiled)
        gc.collect()
        t0 = time.process_time()
        forwarded = sum(len(mode.process(c).chunk) for c in chunks) + len(mode.finish().chunk)
        times.append(time.process_time() - t0)
    return n / statistics.median(times), forwarded


def patterns(count: int) -> list:
    """``count`` filters, half sip_user (exact and wildcard), half phone_number; one of
    them ``target-*``."""
    from lc.common.filters import Filter

    out = [Filter(id="t", type="sip_user", pattern="target-*")]
    for i in range(count - 1):
        if i % 4 == 0:
            out.append(Filter(id=f"u{i}", type="sip_user", pattern=f"nobody-{i}"))
        elif i % 4 == 1:
            out.append(Filter(id=f"w{i}", type="sip_user", pattern=f"ext{i}-*"))
        else:
            out.append(Filter(id=f"p{i}", type="phone_number", pattern=f"+1555{i:07d}"))
    return out


def tables(cap: Path, quick: bool) -> None:
    """Section 3: the mode's packets/s as concurrent calls and filters grow."""
    from tests.voip_tools import make_voip_capture

    runs = 1 if quick else 3
    print(f"voip mode in process (CPU, median of {runs}), packets/s vs concurrent calls:")
    print("| concurrent calls | packets | pkt/s | us/pkt |")
    print("|---|---|---|---|")
    for conc in (100, 1000, 10000):
        path = OUT / f"voip-conc-{conc}.pcap"
        if not path.exists():
            make_voip_capture(path, 10000, 40, match_every=10, concurrent=conc, tcp_share=0.1)
        rate, _ = mode_rate(path, patterns(1), runs)
        from lc.common.pcapfile import open_capture

        with open_capture(path) as rd:
            n = sum(1 for _ in rd.records())
        print(f"| {conc:,} | {n:,} | {rate:,.0f} | {1e6 / rate:.2f} |")
    print("voip mode in process, packets/s vs filters (sip_user and phone_number patterns):")
    print("| filters | pkt/s | us/pkt | forwarded |")
    print("|---|---|---|---|")
    for count in (10, 1000, 100_000):
        rate, fwd = mode_rate(cap, patterns(count), runs)
        print(f"| {count:,} | {rate:,.0f} | {1e6 / rate:.2f} | {fwd:,} |")


def costs(cap: Path, pattern: str, runs: int = 3) -> None:
    """Section 4: where the CPU of a replay goes, in process, per packet (median of
    ``runs``): the hunter's mode, batcher (with the packets' metadata) and encoding
    (``encode_batch`` + serialisation, 2,048-packet batches), and the processor's
    per-call files (``write_calls`` of every decoded batch, a flush every 4 batches, in
    a temporary directory, the files' digest the same every run)."""
    import gc
    import hashlib

    from lc.common.filters import Filter, compile_filters
    from lc.common.wire import encode_batch, unpack_batch
    from lc.hunter.batcher import Batcher
    from lc.hunter.capture import FileSource
    from lc.hunter.modes.base import ModeContext
    from lc.hunter.modes.voip import VOIP_FILTER_TYPES, VoipConfig, voip_mode
    from lc.processor.callfiles import CallWriter
    from lc.processor.callindex import CallIndex
    from lc.processor.sinks import CallFiles, Received
    from lc.proto import lc_pb2

    src = FileSource(str(cap))
    chunks = []
    while (c := src.read(4096)) is not None:
        chunks.append(c)
    n = sum(len(c) for c in chunks)
    ifs = list(src.interfaces)
    compiled = compile_filters([Filter(id="f", type="sip_user", pattern=pattern)], "bench",
                               VOIP_FILTER_TYPES)  # fmt: skip
    t: dict[str, list[float]] = {"mode": [], "batcher": [], "encode": [], "per-call files": []}
    digests = set()
    for _ in range(runs):
        mode = voip_mode(ModeContext(ifs), VoipConfig(max_calls=40_000))
        mode.apply(compiled)
        gc.collect()
        t0 = time.process_time()
        fwd = [mode.process(c) for c in chunks]
        fwd.append(mode.finish())
        t["mode"].append(time.process_time() - t0)
        b = Batcher(2048, 10**12, max_packets=2048)
        t0 = time.process_time()
        sealed = []
        for f in fwd:
            k = f.chunk
            if len(k):
                sealed += b.add_chunk(k.ts_ns, k.caplen, k.origlen, k.records, k.iface, 0,
                                      False, f.meta)  # fmt: skip
        if b.pending:
            sealed.append(b.seal())
        t["batcher"].append(time.process_time() - t0)
        t0 = time.process_time()
        wire = [
            encode_batch("h1", 1, i, ifs, s.records, s.count, s.iface, s.meta,
                         s.events).SerializeToString()
            for i, s in enumerate(sealed)
        ]  # fmt: skip
        t["encode"].append(time.process_time() - t0)
        cols = []
        for w in wire:
            pb = lc_pb2.PacketBatch()
            pb.ParseFromString(w)
            cols.append(unpack_batch(pb))
        with tempfile.TemporaryDirectory() as d:
            index = CallIndex(os.path.join(d, "calls.db"))
            sink = CallFiles(CallWriter(os.path.join(d, "calls"), index=index))
            gc.collect()
            t0 = time.process_time()
            for k, cb in enumerate(cols):
                sink.mark()
                sink.write(Received("h1", 1, k, cb))
                if k % 4 == 3:
                    rows, counts = sink.calls.flush(defer=True)
                    index.commit(rows, counts)
                    sink.committed()
            sink.close()
            t["per-call files"].append(time.process_time() - t0)
            h = hashlib.sha256()
            for f in sorted(Path(d, "calls").iterdir()):
                h.update(f.name.encode() + f.read_bytes())
            digests.add(h.hexdigest())
    parts = ", ".join(f"{k} {statistics.median(v) / n * 1e6:.2f}" for k, v in t.items())
    print(f"voip CPU per packet in process ({pattern}, median of {runs}, load {load()}): "
          f"{parts} us; per-call files identical across runs: {len(digests) == 1}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rtp", type=int, default=500)
    ap.add_argument("--undecided", type=int, default=10_000)
    ap.add_argument("--no-tables", action="store_true", help="skip sections 3 and 4")
    ap.add_argument("--quick", action="store_true", help="one run per table row")
    args = ap.parse_args()
    from lc.common.credentials import init_pki
    from tests.voip_tools import make_voip_capture

    OUT.mkdir(exist_ok=True)
    pki = OUT / "pki"
    if not (pki / "ca.pem").exists():
        init_pki(pki, hunters=["bench"])
    tls = {
        n: ["--tls-cert", str(pki / f"{n}.pem"), "--tls-key", str(pki / f"{n}.key"),
            "--tls-ca", str(pki / "ca.pem")]
        for n in ("processor", "admin", "hunter-bench")
    }  # fmt: skip
    work = OUT / "voip"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    cap = OUT / f"voip-{args.calls}x{args.rtp}.pcap"
    info_path = cap.with_suffix(".json")
    if cap.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
    else:
        info = make_voip_capture(cap, args.calls, args.rtp, match_every=10, tcp_share=0.1)
        info_path.write_text(json.dumps(info))
    targets = {cid: c for cid, c in info["calls"].items() if c["target"]}
    replay(work, tls, cap, info, "10% matching", "target-*", targets)
    replay(work, tls, cap, info, "every call matching", "caller-*", info["calls"])
    undecided(work, tls, args.undecided)
    if not args.no_tables:
        tables(cap, args.quick)
        costs(cap, "caller-*", 1 if args.quick else 3)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
