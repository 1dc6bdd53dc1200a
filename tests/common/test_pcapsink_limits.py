"""PcapSink under hostile or failing conditions (issue 9 items 4 and 5): link types a
hunter chooses open a bounded number of files, a failed file creation takes no rotation
number, and mark/rollback cut every file back. Files are read back with lc's reader."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest

from lc.common import pcapwriter
from lc.common.pcapfile import PcapSink, open_capture
from lc.common.pcapwriter import PcapWriter

NS = 1_000_000_000
T0 = 1_795_000_000 * NS


def rec(i: int, size: int = 40) -> bytes:
    data = bytes([i % 256]) * size
    return struct.pack("<IIII", (T0 + i) // NS, (T0 + i) % NS, size, size) + data


def read(path: str | Path) -> list[bytes]:
    with open_capture(path) as r:
        return [bytes(d) for _, _, d, _ in r.records()]


def test_many_link_types_keep_few_files_open(tmp_path):
    """Item 4: each distinct link type opened and kept another file (1,500 batches ->
    1,504 files, 1,519 fds); now at most max_open_files are open, and an idle one is
    reopened and continued when its link type comes back."""
    sink = PcapSink(tmp_path / "out.pcap", max_open_files=8)
    sent: dict[int, list[bytes]] = {}
    for rnd in range(3):
        for lt in range(200, 300):
            r = rec(lt * 10 + rnd)
            sink.write_records(lt, r, 1)
            sent.setdefault(lt, []).append(r[16:])
            assert sink.open_files <= 8
    assert sink.reopened >= 200
    state = {f.linktype: f for f in sink.state()}
    assert len(state) == 100  # every link type's file is still known (for the ledger)
    sink.close()
    for lt, datas in sent.items():
        assert read(state[lt].path) == datas
    assert len(list(tmp_path.iterdir())) == 100
    assert sink.packets == 300


def test_a_link_type_out_of_range_is_a_value_error_and_writes_nothing(tmp_path):
    sink = PcapSink(tmp_path / "out.pcap")
    with pytest.raises(ValueError, match="70000"):
        sink.write_records(70000, rec(1), 1)
    sink.write_records(1, rec(2), 1)
    sink.close()
    assert [p.name for p in tmp_path.iterdir()] == ["out.pcap"]


def test_a_failed_creation_takes_no_rotation_number(tmp_path, monkeypatch):
    """Item 5: an unwritable directory during rotation, then restored: the numbers were
    used up by the failures (all-000012, all-000013 after 000010). Creation fails here as
    it does in an unwritable directory (root ignores permission bits, so it is injected)."""
    sink = PcapSink(tmp_path / "all.pcap", rotate_size=24 + 3 * 56)
    for i in range(9):
        sink.write_records(1, rec(i), 1)
    assert [Path(f).name for f in sink.files()] == ["all-000001.pcap", "all-000002.pcap",
                                                     "all-000003.pcap"]  # fmt: skip
    real = pcapwriter.PcapWriter
    failing = {"left": 3}

    class Unwritable(real):
        def __init__(self, *a, **kw):
            if failing["left"]:
                failing["left"] -= 1
                raise PermissionError(errno.EACCES, "Permission denied", str(a[0]))
            super().__init__(*a, **kw)

    monkeypatch.setattr(pcapwriter, "PcapWriter", Unwritable)
    for i in range(9, 12):
        with pytest.raises(PermissionError):
            sink.write_records(1, rec(i), 1)
    sink.write_records(1, rec(12), 1)  # the directory is writable again
    assert Path(sink.files()[-1]).name == "all-000004.pcap"
    st = {f.linktype: f for f in sink.state()}[1]
    assert st.counter == 4 and Path(st.path).name == "all-000004.pcap"
    sink.close()
    assert read(tmp_path / "all-000004.pcap") == [rec(12)[16:]]


def test_mark_and_rollback_cut_every_file_back(tmp_path):
    sink = PcapSink(tmp_path / "o.pcap", rotate_size=24 + 2 * 56)
    sink.write_records(1, rec(1), 1)
    sink.write_records(113, rec(2), 1)
    mark = sink.mark()
    sink.write_records(1, rec(3), 1)
    sink.write_records(1, rec(4), 1)  # rotates to a new file
    sink.write_records(113, rec(5), 1)
    sink.write_records(276, rec(6), 1)  # a new link type
    sink.rollback(mark)
    sink.write_records(1, rec(7), 1)
    sink.close()
    files = sink.files()
    assert read(files[0]) == [rec(1)[16:]]
    by_name = {Path(f).name: read(f) for f in files}
    assert by_name["o.linux_sll-000001.pcap"] == [rec(2)[16:]]
    assert by_name["o-000002.pcap"] == [rec(7)[16:]]  # the rotated file, cut and reused
    assert by_name["o.linux_sll2-000001.pcap"] == []


def test_writer_cut_back_and_resume_with_any_link_type(tmp_path):
    w = PcapWriter(tmp_path / "c.pcap", 113, buffered=False)
    w.write_records(rec(1), 1)
    size = w.bytes
    w.write_records(rec(2), 1)
    w.cut_back(size, 1)
    assert (w.bytes, w.packets) == (size, 1)
    with pytest.raises(ValueError):
        w.cut_back(size + 1)
    w.close()
    w2 = PcapWriter.resume(tmp_path / "c.pcap", None, size)
    assert w2.linktype == 113
    w2.close()
