"""The numpy reader against the reader it replaced, and against tshark.

``old_pcapreader`` is the previous implementation, kept verbatim as an oracle: for
random classic pcap files (nanosecond and microsecond, both byte orders, empty and
large packets, cut at any byte, a corrupt length anywhere) and random pcapng files,
read through tiny and default buffer sizes, through a regular file and a pipe, every
reading API must give the same packets, the same nanosecond timestamps, the same
framed records byte for byte and the same damage count. Where the old reader was
wrong (a fraction field of a second or more), the new one is checked against
tshark's arithmetic and the processor's record check instead.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import old_pcapreader as old
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lc.common.pcapreader as new
from lc.common.pcaprecord import record_lengths
from lc.hunter.capture import FileSource

HYP = settings(
    deadline=None,
    max_examples=80,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NS = 1_000_000_000


def craft_pcap(recs: list[tuple[int, int, bytes, int]], bo: str, nano: bool, snap: int) -> bytes:
    """A classic pcap from (seconds, fraction, data, origlen), written from the format
    description (no code shared with the readers)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(bo + "IHHiIII", magic, 2, 4, 0, 0, snap, 1)]
    for sec, frac, data, orig in recs:
        out.append(struct.pack(bo + "IIII", sec, frac, len(data), orig) + data)
    return b"".join(out)


def craft_pcapng(recs: list[tuple[int, int, bytes, int]], bo: str) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        n = 12 + len(body)
        return struct.pack(bo + "II", btype, n) + body + struct.pack(bo + "I", n)

    out = [block(0x0A0D0D0A, struct.pack(bo + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    out.append(block(1, struct.pack(bo + "HHI", 1, 0, 0)))  # microseconds
    for sec, frac, data, orig in recs:
        units = sec * 1_000_000 + frac % 1_000_000
        head = struct.pack(bo + "IIIII", 0, units >> 32, units & 0xFFFFFFFF, len(data), orig)
        out.append(block(6, head + data))
    return b"".join(out)


@contextmanager
def read_size(n: int) -> Iterator[None]:
    saved = new._READ_SIZE, old._READ_SIZE
    new._READ_SIZE = old._READ_SIZE = n
    try:
        yield
    finally:
        new._READ_SIZE, old._READ_SIZE = saved


def everything(mod, path: str, chunk: int) -> dict:
    """What every reading API of module ``mod`` makes of the file."""
    got = {}
    with mod.CaptureReader(path) as r:
        got["records"] = list(r.records())
        got["truncated"] = r.truncated
    with mod.CaptureReader(path) as r:
        cols = []
        while (c := r.read_columns(chunk)) is not None:
            assert 0 < len(c) <= chunk
            cols.append((list(c.ts_ns), list(c.caplen), list(c.origlen), list(c.iface), c.blob))
        got["columns"] = [[x for c in cols for x in c[i]] for i in range(4)] + [
            b"".join(c[4] for c in cols)
        ]
    with mod.CaptureReader(path) as r:
        ts, caps, origs, parts = [], [], [], []
        while (rec := r.read_records(chunk)) is not None:
            assert 0 < len(rec) <= chunk
            assert (rec.ts_ns.typecode, rec.caplen.typecode, rec.origlen.typecode) == tuple("qII")
            assert len(rec.records) == 16 * len(rec) + sum(rec.caplen)
            ts += rec.ts_ns
            caps += rec.caplen
            origs += rec.origlen
            parts.append(bytes(rec.records))
        got["framed"] = (ts, caps, origs, b"".join(parts))
        got["framed_truncated"] = r.truncated
    return got


packets = st.lists(
    st.tuples(
        st.integers(0, 2**32 - 1),
        st.integers(0, 999_999),
        st.one_of(st.binary(max_size=80), st.binary(min_size=1000, max_size=1600)),
        st.sampled_from([0, 0, 3, 1400]),
    ),
    max_size=40,
)


@HYP
@given(
    packets,
    st.sampled_from(["<", ">"]),
    st.booleans(),
    st.one_of(st.none(), st.integers(0, 60_000)),
    st.one_of(st.none(), st.tuples(st.integers(0, 39), st.integers(0, 2**32 - 1))),
    st.sampled_from([7, 100, 1500, 1 << 20]),
    st.sampled_from([1, 3, 4096]),
)
def test_classic_pcap_same_as_the_old_reader(
    tmp_path_factory, pkts, bo, nano, cut, corrupt, rsize, chunk
):
    recs = [
        (sec, frac * 1000 + frac % 1000 if nano else frac, data, len(data) + extra)
        for sec, frac, data, extra in pkts
    ]
    raw = craft_pcap(recs, bo, nano, 65535)
    if corrupt is not None and recs:
        # Overwrite one record's caplen (beyond the 262144 sanity bound, or anything).
        i, value = corrupt
        off = 24 + sum(16 + len(d) for _, _, d, _ in recs[: i % len(recs)])
        raw = raw[: off + 8] + struct.pack(bo + "I", value) + raw[off + 12 :]
    if cut is not None:
        raw = raw[: max(24, min(len(raw), cut))]
    path = tmp_path_factory.mktemp("p") / "f.pcap"
    path.write_bytes(raw)
    with read_size(rsize):
        want = everything(old, str(path), chunk)
        got = everything(new, str(path), chunk)
    assert got == want


@HYP
@given(packets, st.sampled_from(["<", ">"]), st.sampled_from([7, 200, 1 << 20]))
def test_pcapng_same_as_the_old_reader(tmp_path_factory, pkts, bo, rsize):
    raw = craft_pcapng([(s, f, d, len(d) + x) for s, f, d, x in pkts], bo)
    path = tmp_path_factory.mktemp("p") / "f.pcapng"
    path.write_bytes(raw)
    with read_size(rsize):
        assert everything(new, str(path), 5) == everything(old, str(path), 5)


def test_a_pipe_reads_like_a_file(tmp_path: Path):
    """A FIFO cannot seek back to a record cut by a read: the tail is joined instead."""
    rnd = random.Random(5)
    recs = [(1_700_000_000 + i, rnd.randrange(NS), rnd.randbytes(rnd.randrange(1500)), 1500)
            for i in range(3000)]  # fmt: skip
    raw = craft_pcap(recs, "<", True, 65535)
    path = tmp_path / "f.pcap"
    path.write_bytes(raw)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            for i in range(0, len(raw), 4093):
                f.write(raw[i : i + 4093])

    with read_size(10_000):
        want = everything(new, str(path), 700)["framed"]
        t = threading.Thread(target=feed)
        t.start()
        with new.CaptureReader(str(fifo)) as r:
            assert not r._seekable
            ts, parts = [], []
            while (rec := r.read_records(700)) is not None:
                ts += rec.ts_ns
                parts.append(bytes(rec.records))
        t.join()
    assert (ts, b"".join(parts)) == (want[0], want[3])
    assert b"".join(parts) == raw[24:]


@pytest.mark.parametrize("nano", [True, False])
@pytest.mark.parametrize("bo", ["<", ">"])
def test_a_fraction_of_a_second_or_more_is_carried(tmp_path: Path, nano: bool, bo: str):
    """A fraction field of a whole second or more (a broken writer): the timestamp is
    the sum, as tshark shows it, and the framed record carries it into the seconds so
    that the processor's check accepts the batch (the old reader passed it through, or
    failed on it)."""
    unit = NS if nano else 1_000_000
    recs = [(1_700_000_000, unit + 5, b"abc", 3), (1_700_000_001, 7, b"de", 2),
            (1_700_000_002, 3 * unit - 1, b"", 0)]  # fmt: skip
    path = tmp_path / "f.pcap"
    path.write_bytes(craft_pcap(recs, bo, nano, 65535))
    mul = NS // unit
    want_ts = [s * NS + f * mul for s, f, _, _ in recs]
    with new.CaptureReader(str(path)) as r:
        rec = r.read_records(10)
    assert list(rec.ts_ns) == want_ts
    caps = record_lengths(bytes(rec.records), 3)
    assert list(caps) == [3, 2, 0]
    framed = bytes(rec.records)
    off, seen = 0, []
    for cap in caps:
        sec, nsec, _, _ = struct.unpack_from("<IIII", framed, off)
        seen.append(sec * NS + nsec)
        off += 16 + cap
    assert seen == want_ts
    if shutil.which("tshark"):
        out = subprocess.run(
            ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        tshark = []
        for text in out:
            sec, _, frac = text.partition(".")
            tshark.append(int(sec) * NS + int(frac.ljust(9, "0")))
        # tshark's own sum wraps for the last one (3 s less a unit): the first two only.
        assert tshark[:2] == want_ts[:2]


def test_file_source_chunks_are_views_of_one_read(tmp_path: Path):
    """The hunter's replay: a nanosecond little-endian file's chunk is a view of the
    reader's buffer (no copy), never spans two reads, and is byte-identical to the
    file; a microsecond one's records are rewritten in one copy."""
    rnd = random.Random(9)
    recs = [(1_700_000_000 + i // 100, rnd.randrange(NS), rnd.randbytes(rnd.randrange(900)), 900)
            for i in range(5000)]  # fmt: skip
    for nano in (True, False):
        rs = recs if nano else [(s, f // 1000, d, o) for s, f, d, o in recs]
        raw = craft_pcap(rs, "<", nano, 65535)
        path = tmp_path / f"f{nano}.pcap"
        path.write_bytes(raw)
        with read_size(300_000):
            src = FileSource(str(path))
            chunks = []
            while (c := src.read(4096)) is not None:
                chunks.append(c)
            src.close()
        assert all(len(c.records) <= 300_000 for c in chunks)
        assert sum(len(c) for c in chunks) == 5000
        framed = b"".join(bytes(c.records) for c in chunks)
        if nano:
            assert all(isinstance(c.records, memoryview) for c in chunks)
            assert framed == raw[24:]
        else:
            want = craft_pcap([(s, f * 1000, d, o) for s, f, d, o in rs], "<", True, 65535)
            assert framed == want[24:]
