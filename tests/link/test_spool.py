"""Tests for lc.link.spool.Spool: round trip, restart, acks, bounds, damage, errors.

Every test reads the files on disk or reopens the spool, so each checks what a crashed
or restarted hunter would find. Nothing is timed.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import tempfile
import threading
from array import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.errors import LcError
from lc.link.spool import HEADER_SIZE, Spool, SpooledBatch, SpoolError

JOIN = 10.0  # upper bound for a thread that must finish; never reached when all is well

Batch = tuple[int, int, bytes, int, array | None, bytes]


def make_batch(rnd: random.Random, epoch: int, seq: int, size: int = 0) -> Batch:
    count = rnd.randint(1, 5)
    body = bytes(rnd.getrandbits(8) for _ in range(size or rnd.randint(0, 120)))
    records = body + bytes(16 * count)
    iface = None
    if rnd.random() < 0.5:
        iface = array("H", [rnd.randint(0, 65535) for _ in range(count)])
    # The spool keeps the extras (the wire codec's metadata and events) as opaque bytes.
    extras = rnd.randbytes(rnd.choice([0, 0, 1, 37]))
    return epoch, seq, records, count, iface, extras


def key(b: SpooledBatch | Batch) -> tuple:
    if isinstance(b, SpooledBatch):
        return (b.epoch, b.sequence, b.records, b.count, b.iface, b.extras)
    return b


def seg_files(d: Path) -> list[Path]:
    return sorted(d.glob("spool-*.seg"))


def fill(sp: Spool, batches: list[Batch]) -> None:
    for b in batches:
        assert sp.append(*b)


# -- round trip and restart -----------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(0, 40),
    segment_bytes=st.integers(1, 2000),
    ack_ratio=st.floats(0, 1),
)
def test_round_trip_ack_reopen(seed: int, n: int, segment_bytes: int, ack_ratio: float) -> None:
    rnd = random.Random(seed)
    batches = [make_batch(rnd, 7, s) for s in range(1, n + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "spool"
        with Spool(d, segment_bytes=segment_bytes) as sp:
            fill(sp, batches)
            got = list(sp.pending())
            assert [key(b) for b in got] == batches
            assert sp.peek(3) == got[:3]
            c = sp.counters()
            assert c["appended"] == c["records"] == n
            assert c["bytes"] == sum(f.stat().st_size for f in seg_files(d))
            acked = [b for b in got if rnd.random() < ack_ratio]
            rnd.shuffle(acked)  # out of order
            for b in acked:
                assert sp.ack(b.epoch, b.sequence)
                assert not sp.ack(b.epoch, b.sequence)
        gone = {(b.epoch, b.sequence) for b in acked}
        left = [b for b in got if (b.epoch, b.sequence) not in gone]
        # a segment file remains exactly when it holds an unacknowledged record
        assert {p.name for p in seg_files(d)} == {f"spool-{b.segment:016d}.seg" for b in left}
        with Spool(d, segment_bytes=segment_bytes) as sp:
            again = list(sp.pending())
            assert [key(b) for b in again] == [key(b) for b in left]
            c = sp.counters()
            assert c["replayed"] == len(left) and c["records"] == len(left)
            assert c["torn"] == c["corrupt"] == 0
            for b in again:
                sp.ack(b.epoch, b.sequence)
            assert list(sp.pending()) == [] and sp.counters()["bytes"] == 0
        assert seg_files(d) == [] and list(d.glob("*.ack*")) == []


def test_segments_deleted_only_when_fully_acked(tmp_path: Path) -> None:
    rnd = random.Random(1)
    batches = [make_batch(rnd, 1, s, size=100) for s in range(1, 10)]
    with Spool(tmp_path, segment_bytes=600) as sp:  # 160-310 byte records: 2 or 3 each
        fill(sp, batches)
        by_seg: dict[int, list[SpooledBatch]] = {}
        for b in sp.pending():
            by_seg.setdefault(b.segment, []).append(b)
        assert len(by_seg) >= 3 and len(seg_files(tmp_path)) == len(by_seg)
        first, *rest = by_seg.values()
        assert len(first) >= 2
        for b in reversed(first[1:]):  # all but the oldest, newest first
            sp.ack(b.epoch, b.sequence)
            assert len(seg_files(tmp_path)) == len(by_seg)
        assert len(list(tmp_path.glob("*.ack"))) == 1
        sp.ack(first[0].epoch, first[0].sequence)
        assert len(seg_files(tmp_path)) == len(by_seg) - 1
        assert list(tmp_path.glob("*.ack")) == []
        for b in rest[-1]:  # the open segment, fully acked, goes too
            sp.ack(b.epoch, b.sequence)
        assert len(seg_files(tmp_path)) == len(by_seg) - 2
        assert sp.append(*make_batch(rnd, 1, 99))  # into a new segment
        assert len(seg_files(tmp_path)) == len(by_seg) - 1


def test_out_of_order_acks_survive_restart(tmp_path: Path) -> None:
    rnd = random.Random(2)
    batches = [make_batch(rnd, 3, s) for s in range(1, 8)]
    with Spool(tmp_path) as sp:
        fill(sp, batches)
        for s in (2, 3, 6):
            assert sp.ack(3, s)
    with Spool(tmp_path) as sp:
        assert [b.sequence for b in sp.pending()] == [1, 4, 5, 7]
        assert sp.ack(3, 1) and sp.ack(3, 5)
    with Spool(tmp_path) as sp:
        assert [b.sequence for b in sp.peek(10)] == [4, 7]
        assert sp.append(*make_batch(rnd, 4, 1))
        assert [(b.epoch, b.sequence) for b in sp.pending()] == [(3, 4), (3, 7), (4, 1)]


def test_damaged_ack_file_means_resend_not_loss(tmp_path: Path) -> None:
    rnd = random.Random(3)
    with Spool(tmp_path) as sp:
        fill(sp, [make_batch(rnd, 1, s) for s in range(1, 5)])
        sp.ack(1, 2)
    (ack,) = tmp_path.glob("*.ack")
    ack.write_bytes(ack.read_bytes()[:-1] + b"\x00")
    with Spool(tmp_path) as sp:
        assert [b.sequence for b in sp.pending()] == [1, 2, 3, 4]


def test_torn_ack_entry_is_cut_and_later_acks_stay_readable(tmp_path: Path) -> None:
    rnd = random.Random(10)
    with Spool(tmp_path) as sp:
        fill(sp, [make_batch(rnd, 1, s) for s in range(1, 6)])
        sp.ack(1, 4)
    (ack,) = tmp_path.glob("*.ack")
    with ack.open("ab") as f:
        f.write(b"\x01\x02\x03")  # a crash in the middle of an entry
    with Spool(tmp_path) as sp:
        assert [b.sequence for b in sp.pending()] == [1, 2, 3, 5]
        sp.ack(1, 2)
    with Spool(tmp_path) as sp:
        assert [b.sequence for b in sp.pending()] == [1, 3, 5]


def test_pending_sees_appends_made_while_it_runs(tmp_path: Path) -> None:
    rnd = random.Random(4)
    with Spool(tmp_path, segment_bytes=200) as sp:
        sp.append(*make_batch(rnd, 1, 1))
        it = sp.pending()
        assert next(it).sequence == 1
        sp.append(*make_batch(rnd, 1, 2))
        sp.ack(1, 1)
        assert [b.sequence for b in it] == [2]


# -- size bound -------------------------------------------------------------------------


def test_full_spool_drops_newest_and_counts(tmp_path: Path) -> None:
    rnd = random.Random(5)
    batches = [make_batch(rnd, 1, s, size=200) for s in range(1, 7)]
    lengths = []
    with Spool(tmp_path, segment_bytes=1) as probe:  # one record per segment
        for b in batches:
            probe.append(*b)
        lengths = [os.path.getsize(p) for p in probe.segments()]
    shutil.rmtree(tmp_path)
    limit = sum(lengths[:3])
    with Spool(tmp_path, max_bytes=limit, segment_bytes=1) as sp:
        assert [sp.append(*b) for b in batches[:5]] == [True, True, True, False, False]
        c = sp.counters()
        assert c["dropped_batches"] == 2
        assert c["dropped_packets"] == batches[3][3] + batches[4][3]
        assert c["bytes"] == limit and c["records"] == 3
        assert [key(b) for b in sp.pending()] == batches[:3]  # the oldest are kept
        sp.ack(1, 1)  # frees its segment, so the next one fits again
        assert sp.append(*batches[5])
        assert [b.sequence for b in sp.pending()] == [2, 3, 6]


def test_batch_bigger_than_the_spool_is_dropped(tmp_path: Path) -> None:
    with Spool(tmp_path, max_bytes=1000) as sp:
        assert not sp.append(1, 1, bytes(2000), 1)
        assert sp.counters()["dropped_batches"] == 1
        assert sp.append(1, 2, bytes(16), 1)


# -- damage -----------------------------------------------------------------------------


def _three_records(d: Path) -> tuple[list[Batch], list[int], Path]:
    rnd = random.Random(6)
    batches = [make_batch(rnd, 9, s, size=60) for s in (1, 2, 3)]
    with Spool(d) as sp:
        fill(sp, batches)
        offsets = [b.offset for b in sp.pending()]
    (seg,) = seg_files(d)
    return batches, offsets, seg


def test_torn_tail_at_every_offset(tmp_path: Path) -> None:
    src = tmp_path / "src"
    batches, offsets, seg = _three_records(src)
    whole = seg.read_bytes()
    for cut in range(offsets[2] + 1, len(whole)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / seg.name).write_bytes(whole[:cut])
        with Spool(d) as sp:
            assert [key(b) for b in sp.pending()] == batches[:2], cut
            c = sp.counters()
            assert (c["torn"], c["corrupt"], c["records"]) == (1, 0, 2), cut
            assert sp.append(*batches[2])
        assert (d / seg.name).stat().st_size == offsets[2]  # the torn tail was cut off
        with Spool(d) as sp:
            assert [key(b) for b in sp.pending()] == batches
            assert sp.counters()["torn"] == 0
        shutil.rmtree(d)


def test_torn_only_record_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _, offsets, seg = _three_records(src)
    d = tmp_path / "d"
    d.mkdir()
    (d / seg.name).write_bytes(seg.read_bytes()[: offsets[1] - 1])
    with Spool(d) as sp:
        assert list(sp.pending()) == [] and sp.counters()["torn"] == 1
    assert seg_files(d) == []


def test_flipped_byte_in_middle_record_is_skipped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    batches, offsets, seg = _three_records(src)
    whole = seg.read_bytes()
    for pos in range(offsets[1], offsets[2]):
        d = tmp_path / f"flip{pos}"
        d.mkdir()
        bad = bytearray(whole)
        bad[pos] ^= 0xFF
        (d / seg.name).write_bytes(bad)
        with Spool(d) as sp:
            assert [key(b) for b in sp.pending()] == [batches[0], batches[2]], pos
            c = sp.counters()
            assert (c["corrupt"], c["torn"], c["records"]) == (1, 0, 2), pos
            for b in list(sp.pending()):
                sp.ack(b.epoch, b.sequence)
        assert seg_files(d) == []  # only the damaged record was left: the segment goes
        shutil.rmtree(d)


def test_damage_after_open_is_skipped_on_read(tmp_path: Path) -> None:
    rnd = random.Random(7)
    batches = [make_batch(rnd, 2, s, size=80) for s in (1, 2, 3)]
    with Spool(tmp_path) as sp:
        fill(sp, batches)
        mid = sp.peek(2)[1]
        (seg,) = seg_files(tmp_path)
        data = bytearray(seg.read_bytes())
        data[mid.offset + HEADER_SIZE + 5] ^= 0x01
        seg.write_bytes(data)
        assert [key(b) for b in sp.pending()] == [batches[0], batches[2]]
        c = sp.counters()
        assert c["corrupt"] == 1 and c["records"] == 2
        assert not sp.ack(2, 2)


def test_garbage_files_named_like_segments(tmp_path: Path) -> None:
    rnd = random.Random(8)
    garbage = bytes(rnd.getrandbits(8) for _ in range(5000))
    (tmp_path / f"spool-{1:016d}.seg").write_bytes(garbage)
    (tmp_path / f"spool-{2:016d}.seg").write_bytes(b"")
    (tmp_path / f"spool-{3:016d}.seg").write_bytes(b"LCSP" + b"\xff" * 200)
    (tmp_path / f"spool-{4:016d}.ack").write_bytes(b"nonsense")
    (tmp_path / "notes.txt").write_text("not ours")
    with Spool(tmp_path) as sp:
        assert list(sp.pending()) == []
        assert sp.counters()["corrupt"] == 2
        assert sp.append(*make_batch(rnd, 1, 1))
        (b,) = sp.pending()
        assert b.segment == 5  # after every number already used
        sp.ack(1, 1)
    names = {p.name for p in tmp_path.iterdir()}
    assert f"spool-{1:016d}.seg" in names and f"spool-{3:016d}.seg" in names  # never deleted
    assert (tmp_path / f"spool-{1:016d}.seg").read_bytes() == garbage
    assert f"spool-{2:016d}.seg" not in names and f"spool-{4:016d}.ack" not in names
    assert "notes.txt" in names


# -- errors -----------------------------------------------------------------------------


def test_unusable_directory_raises_spool_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError, match=r"cannot use spool directory .*file/spool") as ei:
        Spool(blocker / "spool")
    assert isinstance(ei.value, LcError)
    with pytest.raises(SpoolError, match="cannot use spool directory"):
        Spool(blocker)


def test_one_spool_per_directory(tmp_path: Path) -> None:
    with Spool(tmp_path), pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path)
    Spool(tmp_path).close()  # released on close


class _FailingFile:
    """Wraps the spool's segment file: ``write`` stores ``partial`` bytes, then ENOSPC."""

    def __init__(self, real, partial: int = 0) -> None:
        self.real = real
        self.partial = partial

    def write(self, data) -> int:
        if self.partial:
            self.real.write(bytes(data)[: self.partial])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.mark.parametrize("partial", [0, 1, 50])
def test_write_failure_is_counted_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partial: int
) -> None:
    rnd = random.Random(9)
    batches = [make_batch(rnd, 5, s) for s in (1, 2, 3, 4)]
    with Spool(tmp_path) as sp:
        fill(sp, batches[:2])
        real = sp._file
        monkeypatch.setattr(sp, "_file", _FailingFile(real, partial))
        assert not sp.append(*batches[2])
        c = sp.counters()
        assert c["write_errors"] == 1 and c["records"] == 2 and c["appended"] == 2
        assert [key(b) for b in sp.pending()] == batches[:2]
        monkeypatch.setattr(sp, "_file", real)  # the disk has room again
        assert sp.append(*batches[3])
    with Spool(tmp_path) as sp:
        assert [key(b) for b in sp.pending()] == [batches[0], batches[1], batches[3]]
        c = sp.counters()
        assert c["torn"] == c["corrupt"] == 0


def test_write_failures_are_logged_once_when_they_start_and_once_when_they_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rnd = random.Random(10)
    with Spool(tmp_path) as sp, caplog.at_level(logging.WARNING, logger="lc.link.spool"):
        fill(sp, [make_batch(rnd, 5, 1)])
        real = sp._file
        monkeypatch.setattr(sp, "_file", _FailingFile(real, 0))
        assert not any(sp.append(*make_batch(rnd, 5, s)) for s in (2, 3, 4))
        assert sp.counters()["write_errors"] == 3
        assert len(caplog.records) == 1 and "No space left on device" in caplog.messages[0]
        monkeypatch.setattr(sp, "_file", real)
        assert sp.append(*make_batch(rnd, 5, 5)) and sp.append(*make_batch(rnd, 5, 6))
        assert len(caplog.records) == 2 and "writing works again" in caplog.messages[1]


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    sp.close()
    assert not sp.append(1, 1, bytes(16), 1)


def test_bad_arguments_are_bugs(tmp_path: Path) -> None:
    with Spool(tmp_path) as sp, pytest.raises(ValueError, match="iface"):
        sp.append(1, 1, bytes(32), 2, iface=array("H", [1]))


# -- threads ----------------------------------------------------------------------------


def test_capture_threads_append_while_uplink_acks(tmp_path: Path) -> None:
    per_thread = 150
    with Spool(tmp_path, segment_bytes=4096) as sp:
        done = threading.Event()
        seen: list[tuple[int, int]] = []

        def capture(epoch: int) -> None:
            rnd = random.Random(epoch)
            for s in range(1, per_thread + 1):
                assert sp.append(*make_batch(rnd, epoch, s))

        def uplink() -> None:
            while True:
                finished = done.is_set()
                for b in sp.peek(16):
                    seen.append((b.epoch, b.sequence))
                    sp.ack(b.epoch, b.sequence)
                if finished and len(sp) == 0:
                    return

        producers = [threading.Thread(target=capture, args=(e,)) for e in (1, 2)]
        consumer = threading.Thread(target=uplink)
        for t in [*producers, consumer]:
            t.start()
        for t in producers:
            t.join(JOIN)
        done.set()
        consumer.join(JOIN)
        assert not consumer.is_alive()
        for e in (1, 2):
            assert [s for ep, s in seen if ep == e] == list(range(1, per_thread + 1))
        c = sp.counters()
        assert c["acked"] == c["appended"] == 2 * per_thread and c["bytes"] == 0
    assert seg_files(tmp_path) == []
