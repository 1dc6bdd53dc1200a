"""VoIP end to end: `lc hunt voip -r` to a processor writing one PCAP per call.

1. A synthetic SIP/RTP capture (tests/voip_tools.make_voip_capture: 1000 calls, 500 RTP
   packets each plus RTCP, 10% of the calls to `target-*` users, 10% of the calls' SIP
   over TCP; >= 500k packets) is replayed with `lc hunt voip -r` over mutual TLS to
   `lc process --per-call-pcap-dir`, with one `sip_user` filter `target-*`. Prints
   packets/s end to end (the hunter's own figure, and wall time from start to exit) and
   the hunter's peak RSS; checks that exactly the target calls got a file, each with
   exactly its packets.
2. 10,000 concurrent undecided calls (INVITE, 100, 180 with SDP and early media, never
   answered) replayed with a filter matching none of them: the hunter holds all of them
   until the end of the file. Prints its peak RSS (target <= 200 MB).

    .venv/bin/python bench/voip_bench.py [--calls 1000] [--rtp 500]
"""

from __future__ import annotations

import argparse
import json
import os
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
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_measured(args: list[str]) -> tuple[int, str, str, float, int]:
    """Run a command; (exit code, stdout, stderr, seconds, its peak RSS in bytes)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t0 = time.monotonic()
        p = subprocess.Popen(args, stdout=fo, stderr=fe, text=True)
        _, status, ru = os.wait4(p.pid, 0)  # the child's own rusage (ru_maxrss in KiB)
        dt = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        return p.returncode, fo.read(), fe.read(), dt, ru.ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rtp", type=int, default=500)
    ap.add_argument("--undecided", type=int, default=10_000)
    args = ap.parse_args()
    from lc.common.credentials import init_pki
    from lc.common.pcapfile import open_capture
    from tests.voip_tools import make_undecided_calls_capture, make_voip_capture

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
    total = info["totals"]["packets"]
    targets = {cid: c for cid, c in info["calls"].items() if c["target"]}

    port = free_port()
    addr = f"127.0.0.1:{port}"
    calls_dir = work / "calls"
    err = open(work / "processor.err", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [*LC, "process", "--listen", addr, "--data-dir", str(work / "data"),
         "-w", str(work / "all.pcap"), "--per-call-pcap-dir", str(calls_dir),
         *tls["processor"]],
        stdout=subprocess.DEVNULL, stderr=err,
    )  # fmt: skip
    while "(port " not in (work / "processor.err").read_text():
        if proc.poll() is not None:
            sys.exit((work / "processor.err").read_text())
        time.sleep(0.05)
    r = subprocess.run(
        [*LC, "set", "filter", "--id", "targets", "--type", "sip_user",
         "--pattern", "target-*", "--processor", addr, *tls["admin"]],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        sys.exit(r.stderr)
    code, out, herr, wall, rss = run_measured(
        [*LC, "hunt", "voip", "--processor", addr, *tls["hunter-bench"], "-r", str(cap)]
    )
    proc.terminate()
    proc.wait(60)
    if code != 0:
        sys.exit(f"hunter failed ({code}): {out}\n{herr}")
    m = re.search(r"in ([\d.]+) s \(([\d,]+) pkt/s\)", out)
    files = sorted(calls_dir.glob("*.pcap"))
    got = {}
    for f in files:
        with open_capture(f) as rd:
            got[f.name] = sum(1 for _ in rd.records())
    want = sorted(c["packets"] for c in targets.values())
    ok = "OK" if sorted(got.values()) == want and len(files) == len(targets) else "MISMATCH"
    print(
        f"voip replay: {total:,} packets, {len(info['calls'])} calls ({len(targets)} matching): "
        f"hunter {m.group(2) if m else '?'} pkt/s over {m.group(1) if m else '?'} s; "
        f"{total / wall:,.0f} pkt/s wall (start to exit, {wall:.1f} s); "
        f"hunter peak RSS {rss / 2**20:.0f} MB; {len(files)} call files [{ok}]"
    )

    # 2. 10k undecided calls held at once.
    und = OUT / f"voip-undecided-{args.undecided}.pcap"
    if not und.exists():
        make_undecided_calls_capture(und, calls=args.undecided, rtp_per_call=20)
    err2 = open(work / "processor2.err", "w")  # noqa: SIM115
    port = free_port()
    addr = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*LC, "process", "--listen", addr, "--data-dir", str(work / "data2"),
         "-w", str(work / "und.pcap"), *tls["processor"]],
        stdout=subprocess.DEVNULL, stderr=err2,
    )  # fmt: skip
    while "(port " not in (work / "processor2.err").read_text():
        time.sleep(0.05)
    subprocess.run(
        [*LC, "set", "filter", "--id", "none", "--type", "sip_user", "--pattern", "nobody",
         "--processor", addr, *tls["admin"]],
        capture_output=True, check=True,
    )  # fmt: skip
    code, out, herr, wall, rss = run_measured(
        [*LC, "hunt", "voip", "--processor", addr, *tls["hunter-bench"], "-r", str(und),
         "--call-decide-timeout", "3600", "--max-calls", str(args.undecided * 2)]
    )  # fmt: skip
    proc.terminate()
    proc.wait(60)
    held = re.search(r"calls: (\d+) seen", out)
    print(
        f"voip undecided: {args.undecided:,} concurrent undecided calls held until the end "
        f"of the file ({held.group(1) if held else '?'} seen): hunter peak RSS "
        f"{rss / 2**20:.0f} MB (target <= 200 MB); exit {code}"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
