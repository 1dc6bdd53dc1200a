"""CPU per packet of the pcap reader and of one hunter mode alone, in process.

The generated captures of ``bench/tls_bench.py``, ``bench/http_bench.py``,
``bench/email_bench.py`` and ``bench/dns_bench.py`` (made once, kept in ``bench-out/``)
are read into chunks the way ``lc hunt -r`` reads them; then the mode, with the
benchmark's filter, processes every chunk and ``time.process_time()`` around that loop
gives its CPU per packet (no uplink, no batcher: on a shared machine wall clock says
little). The reader is timed
the same way on its own. Median of ``--runs`` runs; ``--profile`` runs the mode once
under cProfile and prints its top functions instead; ``--pattern`` replaces the
benchmark filter's pattern (one that matches nothing shows what the matches cost).
Each run builds its mode afresh and starts after a full collection (the previous
run's mode freed); the capture stays in memory across runs.

    .venv/bin/python bench/mode_cpu.py tls|http|email|dns|reader [--runs 3] [--profile]
        [--pattern P] [--tls-shape 10000x44]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def capture(mode: str, tls_shape: tuple[int, int] = (10_000, 44)) -> tuple[Path, str, str]:
    """(capture path, filter type, pattern) of the benchmark of ``mode``; for tls,
    ``tls_shape`` is (connections, bulk packets per connection)."""
    OUT.mkdir(exist_ok=True)
    if mode == "tls":
        tb = _bench_module("tls_bench")
        conns, data = tls_shape
        path = OUT / f"tls-{conns}x{data}.pcap"
        meta = path.with_suffix(".json")
        if not (path.exists() and meta.exists()):
            pattern, _ = tb.build_capture(path, conns, data)
            meta.write_text(json.dumps({"pattern": pattern}))
        return path, "tls_ja4", json.loads(meta.read_text())["pattern"]
    if mode == "http":
        hb = _bench_module("http_bench")
        path = OUT / "http-9000x12.pcap"
        if not (path.exists() and path.with_suffix(".json").exists()):
            path.with_suffix(".json").write_text(json.dumps(hb.make_capture(path, 9000, 12)))
        return path, "http_host", hb.TARGET
    if mode == "email":
        eb = _bench_module("email_bench")
        path = OUT / "email-4200x3.pcap"
        if not (path.exists() and path.with_suffix(".json").exists()):
            path.with_suffix(".json").write_text(json.dumps(eb.make_capture(path, 4200, 3)))
        return path, "email_address", eb.TARGET
    if mode == "dns":
        db = _bench_module("dns_bench")
        path = OUT / "dns-250000.pcap"  # the capture bench/dns_bench.py replays
        if not (path.exists() and path.with_suffix(".json").exists()):
            path.with_suffix(".json").write_text(json.dumps(db.make_capture(path, 250_000)))
        return path, "dns_domain", f"*.{db.WATCHED}"
    if mode in ("raw-ns", "raw-us"):
        path = OUT / f"bench-1000000-{mode[4:]}.pcap"
        if not path.exists():
            _bench_module("run").generate(path, 1_000_000, mode == "raw-ns")
        return path, "", ""
    raise SystemExit(f"unknown mode {mode!r}")


def read_chunks(path: Path, keep: bool = True) -> tuple[list, list, float]:
    from lc.hunter.capture import FileSource

    src = FileSource(str(path))
    t0 = time.process_time()
    chunks = []
    n = 0
    while (c := src.read(4096)) is not None:
        if keep:
            chunks.append(c)
        n += len(c)
    cpu = time.process_time() - t0
    interfaces = src.interfaces
    src.close()
    return chunks if keep else n, interfaces, cpu


def run_mode(mode: str, chunks: list, interfaces: list, ftype: str, pattern: str, prof=None):
    from lc.common.filters import Filter, compile_filters
    from lc.hunter import modes
    from lc.hunter.modes.base import ModeContext

    spec = modes.get(mode)
    m = spec.factory(ModeContext(list(interfaces), policy=spec.default_policy), spec.config())
    m.apply(compile_filters([Filter("f", ftype, pattern)], types=spec.filter_types))
    fwd = 0
    # The previous run's mode may still be alive as cyclic garbage (a mode and its
    # dissector name each other): freed here, outside the timed loop, so that each run
    # starts from the same state and no run pays for another's leftovers.
    gc.collect()
    t0 = time.process_time()
    if prof is not None:
        prof.enable()
    for c in chunks:
        fwd += len(m.process(c).chunk)
    fwd += len(m.finish().chunk)
    if prof is not None:
        prof.disable()
    return time.process_time() - t0, fwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("tls", "http", "email", "dns", "reader"))
    ap.add_argument("--capture", default="tls", help="for reader: whose capture, or a path")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--pattern", help="the filter's pattern instead of the benchmark's")
    ap.add_argument("--tls-shape", default="10000x44", metavar="CONNSxDATA",
                    help="tls: connections x bulk packets (20000x0: handshakes only)")  # fmt: skip
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.what == "reader":
        path = Path(args.capture) if "/" in args.capture else capture(args.capture)[0]
        cpus = []
        for _ in range(args.runs):
            n, _, cpu = read_chunks(path, keep=False)
            cpus.append(cpu)
        med = statistics.median(cpus)
        print(f"reader {path.name}: {n:,} packets, {med / n * 1e6:.3f} µs/packet CPU "
              f"(runs {', '.join(f'{c / n * 1e6:.3f}' for c in cpus)})")  # fmt: skip
        return
    shape = tuple(int(x) for x in args.tls_shape.split("x"))
    path, ftype, pattern = capture(args.what, shape)  # type: ignore[arg-type]
    pattern = args.pattern or pattern
    chunks, interfaces, _ = read_chunks(path)
    n = sum(len(c) for c in chunks)
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        cpu, fwd = run_mode(args.what, chunks, interfaces, ftype, pattern, prof)
        pstats.Stats(prof).sort_stats("tottime").print_stats(35)
        return
    cpus = []
    for _ in range(args.runs):
        cpu, fwd = run_mode(args.what, chunks, interfaces, ftype, pattern)
        cpus.append(cpu)
    med = statistics.median(cpus)
    print(f"{args.what} mode alone over {path.name}: {n:,} packets, {fwd:,} forwarded, "
          f"{med / n * 1e6:.2f} µs/packet CPU = {n / med:,.0f} pkt/s "
          f"(runs {', '.join(f'{c / n * 1e6:.2f}' for c in cpus)})")  # fmt: skip


if __name__ == "__main__":
    main()
