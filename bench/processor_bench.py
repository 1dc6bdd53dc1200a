"""make bench: a processor fed by many hunters at once (a load generator, prebuilt batches).

Starts a real ``lc process -w F`` with mutual TLS, then N concurrent hunters (1, 10, 50
by default), each with its own certificate, TLS connection, registration and
StreamPackets call, sending prebuilt batches of 160 or 2,048 packets (Ethernet/IPv4/
UDP, 60-460 bytes) as fast as the processor acknowledges them. Each generated hunter
behaves as ``lc hunt`` does on the wire: at most ``--window`` batches unacknowledged,
a ``--slow-delay`` pause between batches while the processor says SLOW, nothing sent
while it says PAUSE. The batches are serialised once; only the (hunter, epoch,
sequence) head is encoded per batch, so the generator spends its time on gRPC and TLS,
as a real hunter's uplink would. The generator runs in ``--procs`` processes (the
hunters are spread over them).

Per run it prints the aggregate packets/s from the first batch sent to the last
acknowledgement, the processor's CPU per batch and per packet (from /proc), the
number of flow-control changes the hunters were told, and, per stream count, the
per-batch fixed cost: the wall time per batch T(s) = a + b*s solved from the two
batch sizes (a in ms), the same for the processor's CPU. Beside them: the same run's
``tcpdump -r F -w /dev/null`` on a file of the same packets (the C reference).
Checks that the output holds exactly every batch (its size is the header plus every
batch's records). Prints figures; asserts nothing about speed.

    .venv/bin/python bench/processor_bench.py [--packets N] [--streams 1,10,50]
        [--batch 160,2048] [--procs 2] [--runs 1] [--profile DIR]

``--profile DIR`` records the processor with py-spy (when installed) during each run
into DIR/<streams>x<batch>.txt (collapsed stacks; see the summary printed per run).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _common import synthetic_udp

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
LC = [sys.executable, "-m", "lc.cli"]
_CLK = os.sysconf("SC_CLK_TCK")


def make_records(n: int, seed: int = 1) -> bytes:
    """``n`` nanosecond pcap records: Ethernet/IPv4/UDP, 60-460 bytes, ~1 ms apart."""
    from array import array

    from lc.common.pcapfile import frame_records

    tss, caps, pkts = array("q"), array("I"), []
    for ts, pkt in synthetic_udp(n, seed):
        tss.append(ts)
        caps.append(len(pkt))
        pkts.append(pkt)
    return frame_records(tss, caps, caps, b"".join(pkts))


def batch_body(records: bytes, count: int, caplen: bool = True) -> bytes:
    """The serialised constant part of every batch: count, data, one Ethernet interface
    and (unless told not to, as older hunters) the caplen column. Protobuf messages
    concatenate as a merge, so head + body is the whole batch."""
    from lc.common.pcaprecord import record_lengths
    from lc.common.wire import build_batch

    caps = record_lengths(records, count) if caplen else None
    b = build_batch("", 0, 0, records, count, [("bench0", 1)], caplen=caps)
    return b.SerializeToString()


# -- the generator (child processes) ------------------------------------------------------


@dataclass
class Job:
    addr: str
    pki: str
    hunters: list[str]
    body: bytes
    count: int
    batches: int  # per hunter
    window: int
    slow_delay: float
    epoch: int


async def _hunter(job: Job, hid: str, go: asyncio.Event, ready: list[int]) -> tuple[int, int, int]:
    """One hunter: register, stream ``job.batches`` batches; (acked, duplicates, flow msgs)."""
    import grpc

    from lc.proto import lc_pb2

    pki = Path(job.pki)
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"hunter-{hid}.key").read_bytes(),
        certificate_chain=(pki / f"hunter-{hid}.pem").read_bytes(),
    )
    from lc.common.transport import channel_options

    async with grpc.aio.secure_channel(job.addr, creds, options=channel_options()) as ch:
        await asyncio.wait_for(ch.channel_ready(), 30)
        register = ch.unary_unary(
            "/lc.v1.ManagementService/RegisterHunter",
            request_serializer=lc_pb2.RegisterRequest.SerializeToString,
            response_deserializer=lc_pb2.RegisterResponse.FromString,
        )
        resp = await register(
            lc_pb2.RegisterRequest(
                hunter_id=hid,
                hostname="bench",
                version="bench",
                mode="raw",
                interfaces=["bench0"],
                epoch=job.epoch,
            )
        )
        if not resp.accepted:
            raise SystemExit(f"{hid}: registration refused: {resp.reason}")
        stream = ch.stream_stream(
            "/lc.v1.DataService/StreamPackets",
            request_serializer=None,  # prebuilt bytes
            response_deserializer=lc_pb2.StreamControl.FromString,
        )
        call = stream()
        ready[0] += 1
        await go.wait()
        state = {"sent": 0, "acked": 0, "dup": 0, "flow": 0, "mode": lc_pb2.FLOW_CONTINUE}
        room = asyncio.Condition()

        def may_send() -> bool:
            return (
                state["sent"] - state["acked"] < job.window and state["mode"] != lc_pb2.FLOW_PAUSE
            )

        async def reader() -> None:
            async for ctl in call:
                async with room:
                    for a in ctl.acks:
                        state["acked"] += 1
                        state["dup"] += a.duplicate
                    if ctl.flow != state["mode"]:
                        state["flow"] += 1
                        state["mode"] = ctl.flow
                    room.notify_all()

        rt = asyncio.ensure_future(reader())
        body = job.body
        head = lc_pb2.PacketBatch(hunter_id=hid, epoch=job.epoch)
        for seq in range(1, job.batches + 1):
            async with room:
                await room.wait_for(may_send)
            head.sequence = seq
            await call.write(head.SerializeToString() + body)
            state["sent"] += 1
            if state["mode"] == lc_pb2.FLOW_SLOW:
                await asyncio.sleep(job.slow_delay)
        async with room:
            await room.wait_for(lambda: state["acked"] >= state["sent"] or rt.done())
        await call.done_writing()
        await rt
        return state["acked"], state["dup"], state["flow"]


def _generator(job: Job, ready_q: mp.Queue, go: mp.Event, out_q: mp.Queue) -> None:
    async def main() -> None:
        ev = asyncio.Event()
        ready = [0]
        tasks = [asyncio.ensure_future(_hunter(job, h, ev, ready)) for h in job.hunters]
        while ready[0] < len(job.hunters):
            done = [t for t in tasks if t.done()]
            for t in done:
                t.result()  # raise a failed connection now
            await asyncio.sleep(0.01)
        ready_q.put(len(job.hunters))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        c0 = time.process_time()
        ev.set()
        res = await asyncio.gather(*tasks)
        out_q.put((time.perf_counter(), time.process_time() - c0, res))

    asyncio.run(main())


# -- the processor ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


def cpu_split(pid: int) -> tuple[float, float, int]:
    """(user s, system s, minor page faults) of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _CLK, int(fields[12]) / _CLK, int(fields[7])


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far per thread name (gRPC's C threads are named; Python's are not)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _CLK
    return out


def start_processor(data: Path, out: Path, tls: list[str]) -> tuple[subprocess.Popen, str]:
    log = data.parent / f"{data.name}.log"
    f = open(log, "w")  # noqa: SIM115
    p = subprocess.Popen(
        [
            *LC,
            "process",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data),
            "-w",
            str(out),
            "--no-events",
            *tls,
        ],
        stderr=f,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(r"\(port (\d+)\)", log.read_text())
        if m:
            return p, f"127.0.0.1:{m.group(1)}"
        if p.poll() is not None:
            break
        time.sleep(0.05)
    p.kill()
    raise SystemExit(f"processor did not start: {log.read_text()}")


@dataclass
class Result:
    streams: int
    size: int
    batches: int
    wall: float
    proc_cpu: float
    gen_cpu: float
    flow_msgs: int
    status: str

    @property
    def pps(self) -> float:
        return self.batches * self.size / self.wall


def run_once(
    streams: int, size: int, records: bytes, args: argparse.Namespace, pki: Path, tag: str
) -> Result:
    data = OUT / f"procbench-{tag}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    out = data / "out.pcap"
    tls = [
        "--tls-cert",
        str(pki / "processor.pem"),
        "--tls-key",
        str(pki / "processor.key"),
        "--tls-ca",
        str(pki / "ca.pem"),
    ]
    proc, addr = start_processor(data, out, tls)
    spy = None
    kids: list = []
    try:
        per_hunter = max(1, args.packets // (streams * size))
        body = batch_body(records, size, not args.no_caplen)
        hunters = [f"h{i}" for i in range(streams)]
        nprocs = max(1, min(args.procs, streams))
        ctx = mp.get_context("spawn")
        ready_q, out_q, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        epoch = time.time_ns()
        kids += [
            ctx.Process(
                target=_generator,
                args=(
                    Job(
                        addr,
                        str(pki),
                        hunters[k::nprocs],
                        body,
                        size,
                        per_hunter,
                        args.window,
                        args.slow_delay,
                        epoch,
                    ),
                    ready_q,
                    go,
                    out_q,
                ),
            )
            for k in range(nprocs)
        ]
        for k in kids:
            k.start()
        for _ in kids:
            _get(ready_q, kids, 120)
        if args.profile:
            prof = Path(args.profile)
            prof.mkdir(parents=True, exist_ok=True)
            exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            spy = subprocess.Popen(
                [
                    exe,
                    "record",
                    "-p",
                    str(proc.pid),
                    "-f",
                    "raw",
                    "-r",
                    "100",
                    "--nonblocking",
                    "--gil",
                    "-o",
                    str(prof / f"{streams}x{size}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        c0 = cpu_seconds(proc.pid)
        s0 = cpu_split(proc.pid)
        th0 = thread_cpu(proc.pid)
        t0 = time.perf_counter()
        go.set()
        ends, gen_cpu, acked, dups, flows = [], 0.0, 0, 0, 0
        for _ in kids:
            end, gcpu, res = _get(out_q, kids, 600)
            ends.append(end)
            gen_cpu += gcpu
            for a, d, f in res:
                acked += a
                dups += d
                flows += f
        wall = max(ends) - t0
        proc_cpu = cpu_seconds(proc.pid) - c0
        if args.profile:
            s1 = cpu_split(proc.pid)
            print(
                f"    processor: user {s1[0] - s0[0]:.2f}s, system {s1[1] - s0[1]:.2f}s, "
                f"minor faults {s1[2] - s0[2]:,}"
            )
            th1 = thread_cpu(proc.pid)
            per = {k: v - th0.get(k, 0.0) for k, v in th1.items()}
            print(
                "    processor CPU by thread name:",
                ", ".join(
                    f"{k} {v:.2f}s"
                    for k, v in sorted(per.items(), key=lambda x: -x[1])
                    if v > 0.005
                ),
            )
        for k in kids:
            k.join(30)
    finally:
        for k in kids:
            if k.is_alive():
                k.kill()
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        proc.terminate()
        proc.wait(60)
    batches = per_hunter * streams
    expect = 24 + batches * len(records)
    got = out.stat().st_size if out.exists() else 0
    if acked != batches or dups:
        status = f"WRONG: {acked} acks ({dups} duplicate) for {batches} batches"
    elif got != expect:
        status = f"WRONG: output {got} bytes, expected {expect}"
    else:
        status = "ok"
    shutil.rmtree(data, ignore_errors=True)
    return Result(streams, size, batches, wall, proc_cpu, gen_cpu, flows, status)


def _get(q: mp.Queue, kids: list, timeout: float) -> object:
    """The next item from a generator process; exit if one of them died."""
    import queue

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return q.get(timeout=0.5)
        except queue.Empty:
            if any(k.exitcode not in (None, 0) for k in kids):
                for k in kids:
                    k.kill()
                raise SystemExit("a generator process failed (see above)") from None
    raise SystemExit("the generator did not answer in time")


def time_tcpdump(path: Path) -> float | None:
    if shutil.which("tcpdump") is None:
        return None
    t0 = time.perf_counter()
    subprocess.run(
        ["tcpdump", "-r", str(path), "-w", "/dev/null"], check=True, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000, help="per run (default 1M)")
    ap.add_argument("--streams", default="1,10,50")
    ap.add_argument("--batch", default="160,2048", help="packets per batch")
    ap.add_argument("--procs", type=int, default=2, help="generator processes")
    ap.add_argument("--window", type=int, default=64, help="unacknowledged batches per hunter")
    ap.add_argument("--slow-delay", type=float, default=0.05, help="as lc hunt's uplink")
    ap.add_argument("--runs", type=int, default=1, help="runs per cell (the median is shown)")
    ap.add_argument("--profile", metavar="DIR", help="py-spy the processor into DIR")
    ap.add_argument(
        "--no-caplen", action="store_true", help="send no caplen column (as older hunters)"
    )
    args = ap.parse_args()
    streams = [int(s) for s in args.streams.split(",")]
    sizes = [int(s) for s in args.batch.split(",")]
    OUT.mkdir(exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from lc.common.credentials import init_pki
    from lc.common.pcapfile import PcapWriter

    pki = OUT / "pki-procbench"
    if not (pki / f"hunter-h{max(streams) - 1}.pem").exists():
        print(f"  (issuing {max(streams)} hunter certificates in {pki.relative_to(ROOT)} ...)")
        init_pki(pki, hunters=[f"h{i}" for i in range(max(streams))])
    recs = {s: make_records(s) for s in sizes}
    # The C reference: the same packets as one file of --packets records.
    ref = OUT / f"procbench-ref-{args.packets}.pcap"
    if not ref.exists():
        w = PcapWriter(ref, 1)
        rec = recs[max(sizes)]
        n = max(sizes)
        for _ in range(max(1, args.packets // n)):
            w.write_records(rec, n)
        w.close()
    print(
        f"lc processor load benchmark: ~{args.packets:,} packets per run, mTLS, "
        f"{'no caplen column' if args.no_caplen else 'caplen column'}, window "
        f"{args.window}, {args.procs} generator processes, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load {Path('/proc/loadavg').read_text().split()[0]}"
    )
    print(
        f"{'hunters':>7} {'batch':>6} {'pkt/s':>10} {'proc ms/batch':>14} {'proc µs/pkt':>12} "
        f"{'gen ms/batch':>13} {'flow msgs':>10} {'tcpdump -r':>11}  check"
    )
    table: dict[tuple[int, int], Result] = {}
    for n in streams:
        for s in sizes:
            rs = sorted(
                (run_once(n, s, recs[s], args, pki, f"{n}x{s}-{i}") for i in range(args.runs)),
                key=lambda r: r.pps,
            )
            r = rs[len(rs) // 2]
            r.status = next((x.status for x in rs if x.status != "ok"), r.status)
            table[(n, s)] = r
            td = time_tcpdump(ref)
            ref_n = max(1, args.packets // max(sizes)) * max(sizes)
            td_txt = f"{ref_n / td / 1e6:.2f}M" if td else "-"
            print(
                f"{n:>7} {s:>6} {r.pps / 1e3:>9,.0f}k {r.proc_cpu / r.batches * 1e3:>14.3f} "
                f"{r.proc_cpu / (r.batches * s) * 1e6:>12.3f} {r.gen_cpu / r.batches * 1e3:>13.3f} "
                f"{r.flow_msgs:>10} {td_txt:>11}  {r.status}",
                flush=True,
            )
    if len(sizes) >= 2:
        lo, hi = min(sizes), max(sizes)
        print(f"per-batch fixed cost (T = a + b*packets from the {lo}- and {hi}-packet runs):")
        print(
            f"{'hunters':>7} {'wall a ms':>10} {'wall b µs/pkt':>14} {'cpu a ms':>9} "
            f"{'cpu b µs/pkt':>13}"
        )
        for n in streams:
            a_, b_ = table[(n, lo)], table[(n, hi)]
            w_lo, w_hi = a_.wall / a_.batches, b_.wall / b_.batches
            c_lo, c_hi = a_.proc_cpu / a_.batches, b_.proc_cpu / b_.batches
            wb = (w_hi - w_lo) / (hi - lo)
            cb = (c_hi - c_lo) / (hi - lo)
            print(
                f"{n:>7} {(w_lo - wb * lo) * 1e3:>10.3f} {wb * 1e6:>14.3f} "
                f"{(c_lo - cb * lo) * 1e3:>9.3f} {cb * 1e6:>13.3f}"
            )
    print(f"load after: {Path('/proc/loadavg').read_text().split()[0]}")


if __name__ == "__main__":
    main()
