"""Disk spool: write and replay throughput of lc.link.spool.Spool.

Synthetic packets of ~200 bytes (150-250), framed as nanosecond pcap records and cut
into batches of 4096 (a few distinct batches are built once and cycled, so the timing
is the spool's, not the generator's). Measures, in a temporary directory removed after:

  write           append every batch, then close (no fsync)
  write+fsync     the same with ``fsync=True`` (each 16 MiB segment fsynced when sealed)
  replay          reopen (scan + CRC every record), ``pending()`` and ``ack`` each batch,
                  until the directory holds no segment

Replay reads what the page cache still holds from the write, as a hunter that reconnects
minutes after an outage would. Prints a table; asserts nothing.

    .venv/bin/python bench/spool_bench.py [--packets N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from array import array

from lc.common.pcapfile import frame_records
from lc.common.wire import encode_extras
from lc.link.spool import Spool

EXTRAS = encode_extras([(0, ["bench"])], 1)

BATCH = 4096
TEMPLATES = 8


def make_batches(rnd: random.Random) -> list[tuple[bytes, int]]:
    out = []
    for _ in range(TEMPLATES):
        caplen = array("I", (rnd.randint(150, 250) for _ in range(BATCH)))
        ts = array("q", (1_700_000_000_000_000_000 + i * 1000 for i in range(BATCH)))
        blob = os.urandom(sum(caplen))
        out.append((frame_records(ts, caplen, caplen, blob), BATCH))
    return out


def write(directory: str, batches: list[tuple[bytes, int]], n: int, fsync: bool) -> float:
    t0 = time.perf_counter()
    with Spool(directory, max_bytes=1 << 40, fsync=fsync) as sp:
        seq = 0
        sent = 0
        while sent < n:
            records, count = batches[seq % len(batches)]
            seq += 1
            if not sp.append(1, seq, records, count, extras=EXTRAS):
                raise SystemExit(f"append failed: {sp.counters()}")
            sent += count
    return time.perf_counter() - t0


def replay(directory: str) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    with Spool(directory, max_bytes=1 << 40) as sp:
        t_open = time.perf_counter() - t0
        n = 0
        for b in sp.pending():
            n += b.count
            sp.ack(b.epoch, b.sequence)
        left = sp.counters()["records"]
    if left:
        raise SystemExit(f"{left} records left after replay")
    return time.perf_counter() - t0, t_open, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--dir", help="parent of the temporary spool directory")
    args = ap.parse_args()
    batches = make_batches(random.Random(1))
    nbatch = -(-args.packets // BATCH)
    packets = nbatch * BATCH
    volume = sum(len(batches[i % len(batches)][0]) for i in range(nbatch))
    rows = []
    tmp = tempfile.mkdtemp(prefix="lc-spool-bench-", dir=args.dir)
    try:
        for label, fsync in (("write", False), ("write+fsync", True)):
            d = os.path.join(tmp, label)
            secs = write(d, batches, packets, fsync)
            rows.append((label, secs, ""))
            if fsync:
                secs, t_open, n = replay(d)
                assert n == packets
                rows.append(("replay", secs, f"reopen+scan {t_open * 1000:.0f} ms"))
            shutil.rmtree(d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{packets:,} packets in {nbatch} batches of {BATCH}, {volume / 1e6:.0f} MB of records")
    print(f"{'':12} {'seconds':>8} {'packets/s':>12} {'MB/s':>8}")
    for label, secs, note in rows:
        print(f"{label:12} {secs:8.3f} {packets / secs:12,.0f} {volume / 1e6 / secs:8.0f}  {note}")


if __name__ == "__main__":
    main()
