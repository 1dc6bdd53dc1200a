"""Filter push latency: from `lc set filter` returning to the filter applied on N hunters.

Starts a real processor (`lc process`, mutual TLS) and N in-process hunter clients, each
with its own certificate, channel and SubscribeFilters stream, applying updates with
the hunter's own code (lc.hunter.filtering.HunterFilters, which compiles the engine).
Each round sets one filter through the admin RPC that `lc set filter` uses and times,
per hunter, how long after the RPC returned the hunter had applied that version.

    .venv/bin/python bench/filter_push_bench.py [--hunters 50] [--rounds 20]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from lc.common.credentials import init_pki
from lc.common.transport import TlsFiles, open_channel
from lc.hunter.filtering import HunterFilters
from lc.hunter.modes.generic import SPEC as GENERIC
from lc.proto import lc_pb2, lc_pb2_grpc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hunters", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lc-push-"))
    ids = [f"h{i:03d}" for i in range(args.hunters)]
    init_pki(tmp / "pki", hunters=ids)
    pki = tmp / "pki"

    def tls(name: str) -> TlsFiles:
        return TlsFiles(str(pki / f"{name}.pem"), str(pki / f"{name}.key"), str(pki / "ca.pem"))

    err = tmp / "processor.log"
    log = open(err, "w")  # noqa: SIM115 (the processor writes to it until the end)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lc.cli",
            "process",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp / "data"),
            "--tls-cert",
            str(pki / "processor.pem"),
            "--tls-key",
            str(pki / "processor.key"),
            "--tls-ca",
            str(pki / "ca.pem"),
        ],
        stderr=log,
        stdout=subprocess.DEVNULL,
    )
    try:
        port = None
        for _ in range(300):
            m = re.search(r"\(port (\d+)\)", err.read_text())
            if m:
                port = int(m.group(1))
                break
            time.sleep(0.05)
        assert port, err.read_text()
        target = f"127.0.0.1:{port}"
        applied: dict[str, dict[int, float]] = {h: {} for h in ids}
        cond = threading.Condition()
        hunters = []
        for hid in ids:

            def on_change(_filters, _compiled, hid=hid):
                pass

            hf = HunterFilters(hid, GENERIC.filter_types, on_change)
            ch = open_channel(target, tls(f"hunter-{hid}"))
            stub = lc_pb2_grpc.ManagementServiceStub(ch)
            stub.RegisterHunter(lc_pb2.RegisterRequest(hunter_id=hid, mode="bench"), timeout=10)
            call = stub.SubscribeFilters(
                lc_pb2.SubscribeFiltersRequest(
                    hunter_id=hid, filter_types=list(GENERIC.filter_types)
                )
            )

            def consume(call=call, hf=hf, hid=hid):
                try:
                    for upd in call:
                        hf.apply(upd)
                        with cond:
                            applied[hid][upd.version] = time.perf_counter()
                            cond.notify_all()
                except grpc.RpcError:
                    pass

            t = threading.Thread(target=consume, daemon=True)
            t.start()
            hunters.append((ch, call, t))
        admin = lc_pb2_grpc.ManagementServiceStub(open_channel(target, tls("admin")))
        with cond:
            cond.wait_for(lambda: all(0 in v for v in applied.values()), timeout=30)
        lat: list[float] = []
        for r in range(args.rounds):
            req = lc_pb2.SetFiltersRequest(
                filters=[
                    lc_pb2.Filter(
                        id=f"f{r}", type="ip_address", pattern=f"10.{r}.0.0/16", enabled=True
                    )
                ]
            )
            resp = admin.SetFilters(req, timeout=10)
            t0 = time.perf_counter()
            v = resp.version
            with cond:
                ok = cond.wait_for(lambda v=v: all(v in a for a in applied.values()), timeout=10)
            if not ok:
                raise SystemExit(f"round {r}: not every hunter applied version {v}")
            lat += [max(0.0, applied[h][v] - t0) * 1000 for h in ids]
            time.sleep(0.05)
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(
            f"filter push latency to {args.hunters} hunters over {args.rounds} rounds "
            f"({len(lat)} samples, Python {sys.version.split()[0]}): "
            f"p50 {statistics.median(lat):.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms"
        )
        for ch, call, _ in hunters:
            call.cancel()
            ch.close()
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
