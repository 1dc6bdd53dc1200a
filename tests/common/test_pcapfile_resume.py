"""Tests for continuing capture files after a restart: PcapWriter.resume and PcapSink(resume=).

Files are real files in tmp_path; every check reads them back (bytes, sizes, or
``open_capture``). The torn record and the unacknowledged batch that a SIGKILL
leaves behind are made by appending raw bytes, as a crash would.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common.pcapfile import (
    PcapFormatError,
    PcapSink,
    PcapWriter,
    SinkFile,
    frame_records,
    open_capture,
)

NS = 1_000_000_000
T0 = 1_700_000_000 * NS + 123_456_789
HEADER = 24
ETH = 1
SLL = 113


def packets(tag: int, n: int, size: int = 30) -> list[tuple[int, bytes, int]]:
    """(ts_ns, data, origlen) of ``n`` packets that identify ``tag``."""
    return [
        (T0 + tag * NS + k, bytes([(tag * 7 + k) % 256]) * (size + k), size + k + 3)
        for k in range(n)
    ]


def records(pkts: list[tuple[int, bytes, int]]) -> bytes:
    return frame_records(
        [t for t, _, _ in pkts],
        [len(d) for _, d, _ in pkts],
        [o for _, _, o in pkts],
        b"".join(d for _, d, _ in pkts),
    )


def read_back(path) -> list[tuple[int, bytes, int]]:
    with open_capture(path) as r:
        assert r.truncated == 0
        return [(ts, data, orig) for ts, _iface, data, orig in r.records()]


def write_file(path, pkts, linktype: int = ETH) -> int:
    with PcapWriter(path, linktype) as w:
        for ts, data, orig in pkts:
            w.write(ts, data, orig)
        size = w.bytes
    assert os.path.getsize(path) == size
    return size


def usec_pcap(path, linktype: int = ETH) -> bytes:
    """A microsecond pcap (magic 0xa1b2c3d4) with one record, built by hand."""
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    rec = struct.pack("<IIII", 1_700_000_000, 5, 4, 4) + b"abcd"
    data = head + rec
    with open(path, "wb") as f:
        f.write(data)
    return data


# ---------------------------------------------------------------------- PcapWriter


def test_resume_cuts_a_torn_record_and_an_unacknowledged_batch(tmp_path):
    path = tmp_path / "a.pcap"
    old = packets(1, 4)
    size = write_file(path, old)
    unacked = records(packets(2, 3))
    torn = records(packets(3, 1))
    with open(path, "ab") as f:
        f.write(unacked)
        f.write(torn[: len(torn) // 2])
    w = PcapWriter.resume(path, ETH, size)
    assert os.path.getsize(path) == size  # cut back at once
    assert w.bytes == size and w.packets == 0
    assert w.linktype == ETH and w.path == os.fspath(path)
    new = packets(4, 5)
    assert w.write_records(records(new), len(new)) == len(records(new))
    w.close()
    assert os.path.getsize(path) == size + len(records(new))
    assert read_back(path) == old + new


def test_resume_at_the_exact_end_appends(tmp_path):
    path = tmp_path / "a.pcap"
    old = packets(1, 2)
    size = write_file(path, old)
    with PcapWriter.resume(path, ETH, size) as w:
        for ts, data, orig in packets(2, 2):
            w.write(ts, data, orig)
        assert w.packets == 2
    assert read_back(path) == old + packets(2, 2)


def test_resume_header_only_file(tmp_path):
    path = tmp_path / "a.pcap"
    write_file(path, [])
    with PcapWriter.resume(path, ETH, HEADER) as w:
        w.write_records(records(packets(5, 3)), 3)
    assert read_back(path) == packets(5, 3)


@pytest.mark.parametrize("size", [0, 1, 10, 23])
def test_resume_below_the_header_rewrites_it(tmp_path, size):
    path = tmp_path / "a.pcap"
    write_file(path, packets(1, 3), linktype=SLL)  # even another link type: recorded size 0
    with PcapWriter.resume(path, ETH, size) as w:
        assert w.bytes == HEADER
        w.write_records(records(packets(2, 2)), 2)
    with open_capture(path) as r:
        assert r.interfaces[0].linktype == ETH
    assert read_back(path) == packets(2, 2)
    assert os.path.getsize(path) == HEADER + len(records(packets(2, 2)))


RESUME_SHORT_FILE = (
    "PcapWriter.resume(path, linktype, size < 24) on a file shorter than 24 bytes (empty: "
    "created, crash before the header) compares the file's length measured BEFORE it "
    "rewrote the header with the new size 24, so it raises PcapFormatError after having "
    "truncated the file and written a header; PcapSink then does not continue the file"
)


@pytest.mark.parametrize("content", [b"", b"\x4d\x3c\xb2\xa1\x02\x00"], ids=["empty", "torn"])
def test_resume_below_the_header_of_an_empty_or_torn_header_file(tmp_path, content):
    path = tmp_path / "a.pcap"
    path.write_bytes(content)  # crashed before or while writing the header
    with PcapWriter.resume(path, ETH, 0) as w:
        w.write_records(records(packets(1, 1)), 1)
    assert read_back(path) == packets(1, 1)


def test_resume_keeps_the_files_snaplen(tmp_path):
    path = tmp_path / "a.pcap"
    with PcapWriter(path, ETH, snaplen=100) as w:
        w.write(T0, b"x" * 10)
        size = w.bytes
    with PcapWriter.resume(path, ETH, size) as w:
        assert w.snaplen == 100
        w.write(T0 + 1, b"y" * 300)  # cut to the file's snaplen
    got = read_back(path)
    assert got[1] == (T0 + 1, b"y" * 100, 300)


def test_resume_wrong_linktype_raises_and_leaves_the_file(tmp_path):
    path = tmp_path / "a.pcap"
    size = write_file(path, packets(1, 3), linktype=SLL)
    with open(path, "ab") as f:
        f.write(b"torn tail")
    before = path.read_bytes()
    with pytest.raises(PcapFormatError):
        PcapWriter.resume(path, ETH, size)
    assert path.read_bytes() == before


def test_resume_microsecond_pcap_raises_and_leaves_the_file(tmp_path):
    path = tmp_path / "u.pcap"
    data = usec_pcap(path)
    with pytest.raises(PcapFormatError):
        PcapWriter.resume(path, ETH, len(data))
    with pytest.raises(PcapFormatError):
        PcapWriter.resume(path, ETH, HEADER)
    assert path.read_bytes() == data


def test_resume_not_a_pcap_raises_and_leaves_the_file(tmp_path):
    path = tmp_path / "x.pcap"
    data = b"GIF89a" + bytes(100)
    path.write_bytes(data)
    with pytest.raises(PcapFormatError):
        PcapWriter.resume(path, ETH, 50)
    assert path.read_bytes() == data


def test_resume_file_shorter_than_size_raises_and_leaves_the_file(tmp_path):
    path = tmp_path / "a.pcap"
    size = write_file(path, packets(1, 2))
    before = path.read_bytes()
    with pytest.raises(PcapFormatError):
        PcapWriter.resume(path, ETH, size + 1)
    assert path.read_bytes() == before


def test_resume_file_with_a_short_header_and_a_size_past_it_raises(tmp_path):
    path = tmp_path / "a.pcap"
    path.write_bytes(b"\x4d\x3c\xb2\xa1")
    with pytest.raises(PcapFormatError):
        PcapWriter.resume(path, ETH, 100)
    assert path.read_bytes() == b"\x4d\x3c\xb2\xa1"


def test_resume_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        PcapWriter.resume(tmp_path / "none.pcap", ETH, 24)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    n_old=st.integers(0, 6),
    n_cut=st.integers(0, 4),
    torn=st.integers(0, 45),
    n_new=st.integers(0, 6),
)
def test_resume_yields_old_then_new_records(tmp_path, n_old, n_cut, torn, n_new):
    path = tmp_path / "h.pcap"
    old = packets(1, n_old)
    size = write_file(path, old)
    tail = records(packets(2, n_cut)) + records(packets(3, 1))[:torn]
    with open(path, "ab") as f:
        f.write(tail)
    new = packets(4, n_new)
    with PcapWriter.resume(path, ETH, size) as w:
        if new:
            w.write_records(records(new), len(new))
        end = w.bytes
    assert os.path.getsize(path) == end == size + len(records(new) if new else b"")
    assert read_back(path) == old + new


# ------------------------------------------------------------------------ PcapSink


def test_sink_continues_a_resumed_file(tmp_path):
    out = tmp_path / "out.pcap"
    old = packets(1, 3)
    size = write_file(out, old)
    with open(out, "ab") as f:
        f.write(records(packets(9, 2))[:40])  # unacknowledged, torn
    opened: list[tuple] = []
    sink = PcapSink(
        out,
        resume=[SinkFile(ETH, "", 0, os.fspath(out), size)],
        on_open=lambda *a: opened.append(a),
    )
    assert sink.files() == [os.fspath(out)]
    assert any("continuing" in n for n in sink.resume_notes)
    assert sink.state() == [SinkFile(ETH, "", 0, os.fspath(out), size)]
    new = packets(2, 4)
    sink.write_records(ETH, records(new), len(new))
    st_ = sink.state()
    assert st_ == [SinkFile(ETH, "", 0, os.fspath(out), os.path.getsize(out))]
    sink.close()
    assert opened == []  # no new file was created
    assert read_back(out) == old + new
    assert sorted(os.listdir(tmp_path)) == ["out.pcap"]


def test_sink_rotation_counters_continue_after_resume(tmp_path):
    out = tmp_path / "out.pcap"
    f3 = tmp_path / "out-000003.pcap"
    old = packets(1, 1)
    size = write_file(f3, old)
    batch = packets(2, 1)
    rec = records(batch)
    calls: list[tuple] = []

    def on_open(linktype, label, counter, path):
        assert not os.path.exists(path), "on_open must come before the file exists"
        calls.append((linktype, label, counter, path))

    # room for exactly one more batch in the resumed file
    sink = PcapSink(
        out,
        rotate_size=size + len(rec),
        resume=[SinkFile(ETH, "", 3, os.fspath(f3), size)],
        on_open=on_open,
    )
    sink.write_records(ETH, rec, 1)  # fits: continues -000003
    assert calls == []
    sink.write_records(ETH, records(packets(3, 1)), 1)  # past rotate_size: -000004
    f4 = tmp_path / "out-000004.pcap"
    assert calls == [(ETH, "", 4, os.fspath(f4))]
    assert sink.state() == [SinkFile(ETH, "", 4, os.fspath(f4), os.path.getsize(f4))]
    sink.close()
    assert sink.files() == [os.fspath(f3), os.fspath(f4)]
    assert read_back(f3) == old + batch
    assert read_back(f4) == packets(3, 1)


def test_sink_resumed_file_already_full_rotates_on_the_first_batch(tmp_path):
    out = tmp_path / "out.pcap"
    f3 = tmp_path / "out-000003.pcap"
    size = write_file(f3, packets(1, 3))
    sink = PcapSink(out, rotate_size=size + 10, resume=[SinkFile(ETH, "", 3, os.fspath(f3), size)])
    sink.write_records(ETH, records(packets(2, 1)), 1)  # would take -000003 past rotate_size
    sink.close()
    assert os.path.getsize(f3) == size
    assert sink.files() == [os.fspath(f3), os.fspath(tmp_path / "out-000004.pcap")]


def test_sink_resume_of_a_gone_file_starts_the_next_counter(tmp_path):
    out = tmp_path / "out.pcap"
    gone = tmp_path / "out-000003.pcap"
    calls = []
    sink = PcapSink(
        out,
        rotate_size=10_000,
        resume=[SinkFile(ETH, "", 3, os.fspath(gone), 500)],
        on_open=lambda *a: calls.append(a),
    )
    assert any("gone" in n for n in sink.resume_notes)
    assert sink.state() == []
    sink.write_records(ETH, records(packets(1, 1)), 1)
    sink.close()
    f4 = tmp_path / "out-000004.pcap"
    assert calls == [(ETH, "", 4, os.fspath(f4))]
    assert sink.files() == [os.fspath(f4)]
    assert not gone.exists()


def test_sink_on_open_is_called_before_each_new_file(tmp_path):
    out = tmp_path / "cap" / "out.pcap"
    seen: list[tuple[int, str, int, str]] = []

    def on_open(linktype, label, counter, path):
        assert not os.path.exists(path)
        seen.append((linktype, label, counter, path))

    rec = records(packets(1, 1))
    sink = PcapSink(out, rotate_size=HEADER + len(rec), on_open=on_open)
    for _ in range(3):
        sink.write_records(ETH, rec, 1)
    sink.write_records(SLL, rec, 1)
    sink.close()
    d = tmp_path / "cap"
    assert seen == [
        (ETH, "", 1, os.fspath(d / "out-000001.pcap")),
        (ETH, "", 2, os.fspath(d / "out-000002.pcap")),
        (ETH, "", 3, os.fspath(d / "out-000003.pcap")),
        (SLL, "linux_sll", 1, os.fspath(d / "out.linux_sll-000001.pcap")),
    ]
    assert [p for *_, p in seen] == sink.files()


def test_sink_state_reports_sizes_on_disk(tmp_path):
    out = tmp_path / "out.pcap"
    sink = PcapSink(out)
    assert sink.state() == []
    for i in range(4):
        sink.write_records(ETH, records(packets(i, 2)), 2)
        sink.write_records(SLL, records(packets(i, 1)), 1)
        for sf in sink.state():
            assert sf.size == os.path.getsize(sf.path)  # unbuffered: no flush needed
    by_lt = {sf.linktype: sf for sf in sink.state()}
    assert by_lt[ETH] == SinkFile(ETH, "", 0, os.fspath(out), os.path.getsize(out))
    assert by_lt[SLL].label == "linux_sll"
    assert by_lt[SLL].path == os.fspath(tmp_path / "out.linux_sll.pcap")
    sink.close()


def test_sink_state_round_trips_through_a_restart(tmp_path):
    out = tmp_path / "out.pcap"
    sink = PcapSink(out)
    a = packets(1, 3)
    b = packets(2, 2)
    sink.write_records(ETH, records(a), 3)
    sink.write_records(SLL, records(b), 2)
    state = sink.state()
    # a batch written but never committed, then a crash
    sink.write_records(ETH, records(packets(3, 2)), 2)
    sink.write_records(SLL, records(packets(4, 2)), 2)
    sink.close()
    sink2 = PcapSink(out, resume=state)
    c = packets(5, 1)
    d = packets(6, 1)
    sink2.write_records(ETH, records(c), 1)
    sink2.write_records(SLL, records(d), 1)
    assert {sf.linktype: sf.label for sf in sink2.state()} == {ETH: "", SLL: "linux_sll"}
    sink2.close()
    assert read_back(out) == a + c
    assert read_back(tmp_path / "out.linux_sll.pcap") == b + d
    assert sorted(os.listdir(tmp_path)) == ["out.linux_sll.pcap", "out.pcap"]


def test_sink_never_overwrites_a_plain_name_it_did_not_resume(tmp_path):
    out = tmp_path / "out.pcap"
    out.write_bytes(b"precious, not ours")
    calls = []
    sink = PcapSink(out, on_open=lambda *a: calls.append(a))
    new = packets(1, 2)
    sink.write_records(ETH, records(new), 2)
    sink.close()
    assert out.read_bytes() == b"precious, not ours"
    alt = tmp_path / "out-2.pcap"
    assert calls == [(ETH, "", 0, os.fspath(alt))]
    assert sink.files() == [os.fspath(alt)]
    assert read_back(alt) == new


def test_sink_skips_every_taken_plain_name(tmp_path):
    out = tmp_path / "out.pcap"
    for name in ("out.pcap", "out-2.pcap", "out-3.pcap"):
        (tmp_path / name).write_bytes(name.encode())
    with PcapSink(out) as sink:
        sink.write_records(ETH, records(packets(1, 1)), 1)
    assert sink.files() == [os.fspath(tmp_path / "out-4.pcap")]
    for name in ("out.pcap", "out-2.pcap", "out-3.pcap"):
        assert (tmp_path / name).read_bytes() == name.encode()


def test_sink_rotating_skips_to_the_next_free_counter(tmp_path):
    out = tmp_path / "out.pcap"
    for n in (1, 2, 4):
        (tmp_path / f"out-{n:06d}.pcap").write_bytes(b"old %d" % n)
    rec = records(packets(1, 1))
    with PcapSink(out, rotate_size=HEADER + len(rec)) as sink:
        sink.write_records(ETH, rec, 1)
        sink.write_records(ETH, rec, 1)
    assert sink.files() == [
        os.fspath(tmp_path / "out-000003.pcap"),
        os.fspath(tmp_path / "out-000005.pcap"),
    ]
    for n in (1, 2, 4):
        assert (tmp_path / f"out-{n:06d}.pcap").read_bytes() == b"old %d" % n


def test_sink_not_resuming_a_foreign_file_leaves_it_and_writes_elsewhere(tmp_path):
    out = tmp_path / "out.pcap"
    data = usec_pcap(out)  # a microsecond pcap where ours was recorded
    sink = PcapSink(out, resume=[SinkFile(ETH, "", 0, os.fspath(out), len(data))])
    assert any("not continuing" in n for n in sink.resume_notes)
    assert sink.state() == []
    sink.write_records(ETH, records(packets(1, 1)), 1)
    sink.close()
    assert out.read_bytes() == data
    assert sink.files() == [os.fspath(tmp_path / "out-2.pcap")]


def test_sink_resume_recorded_with_size_zero_rewrites_a_full_file(tmp_path):
    # Recorded with size 0, then written to, then a crash before the first commit.
    out = tmp_path / "out-000001.pcap"
    write_file(out, packets(7, 3))
    sink = PcapSink(
        tmp_path / "out.pcap",
        rotate_size=1 << 20,
        resume=[SinkFile(ETH, "", 1, os.fspath(out), 0)],
    )
    new = packets(1, 2)
    sink.write_records(ETH, records(new), 2)
    assert sink.state() == [SinkFile(ETH, "", 1, os.fspath(out), os.path.getsize(out))]
    sink.close()
    assert read_back(out) == new
    assert sink.files() == [os.fspath(out)]


def test_sink_resume_recorded_before_creation_rewrites_from_scratch(tmp_path):
    # The ledger records a file with size 0 before creating it; a crash right after
    # leaves a file with (part of) a header at most, and it is rewritten.
    out = tmp_path / "out-000001.pcap"
    out.write_bytes(b"")  # created, then the crash came before its header
    sink = PcapSink(
        tmp_path / "out.pcap",
        rotate_size=1 << 20,
        resume=[SinkFile(ETH, "", 1, os.fspath(out), 0)],
    )
    new = packets(1, 2)
    sink.write_records(ETH, records(new), 2)
    assert sink.state() == [SinkFile(ETH, "", 1, os.fspath(out), os.path.getsize(out))]
    sink.close()
    assert read_back(out) == new
    assert sink.files() == [os.fspath(out)]
