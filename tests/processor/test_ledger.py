"""Tests for lc.processor.ledger: RangeSet arithmetic and the SQLite Ledger across reopens.

Every Ledger test uses a real database file in tmp_path and reopens it, which is what a
restarted (or SIGKILLed) processor does.
"""

from __future__ import annotations

import itertools
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lc.common.errors import LcError
from lc.common.pcapfile import SinkFile
from lc.processor.ledger import Ledger, RangeSet


def spans_of(rs: RangeSet) -> list[tuple[int, int]]:
    out = []
    for part in filter(None, str(rs).split(",")):
        lo, _, hi = part.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


# ---------------------------------------------------------------------------- RangeSet


def test_empty_rangeset():
    rs = RangeSet()
    assert str(rs) == "" and len(rs) == 0 and rs.spans == 0
    assert 0 not in rs and 1 not in rs
    assert str(RangeSet("")) == ""


def test_add_single_values_and_contains():
    rs = RangeSet()
    rs.add(5)
    assert 5 in rs and 4 not in rs and 6 not in rs
    assert str(rs) == "5" and rs.spans == 1 and len(rs) == 1


def test_adjacent_values_merge_in_either_order():
    rs = RangeSet()
    for n in (1, 2, 3):
        rs.add(n)
    assert str(rs) == "1-3" and rs.spans == 1
    rs2 = RangeSet()
    for n in (3, 2, 1):
        rs2.add(n)
    assert str(rs2) == "1-3"


def test_gap_filled_joins_two_ranges():
    rs = RangeSet("1-3,5-7")
    assert rs.spans == 2 and 4 not in rs
    rs.add(4)
    assert str(rs) == "1-7" and rs.spans == 1 and len(rs) == 7


def test_overlapping_and_covering_ranges_merge():
    rs = RangeSet("10-20")
    rs.add_range(15, 25)
    assert str(rs) == "10-25"
    rs.add_range(5, 12)
    assert str(rs) == "5-25"
    rs.add_range(30, 40)
    rs.add_range(50, 60)
    assert str(rs) == "5-25,30-40,50-60"
    rs.add_range(1, 100)  # swallows everything
    assert str(rs) == "1-100" and rs.spans == 1
    rs.add_range(40, 50)  # inside: no change
    assert str(rs) == "1-100"


def test_touching_ranges_merge_but_gaps_stay():
    rs = RangeSet()
    rs.add_range(1, 5)
    rs.add_range(6, 9)  # adjacent on the right
    rs.add_range(11, 12)  # a gap at 10
    assert str(rs) == "1-9,11-12"
    rs.add_range(13, 13)  # adjacent on the right of the last
    assert str(rs) == "1-9,11-13"
    rs.add_range(0, 0)  # adjacent on the left of the first
    assert str(rs) == "0-9,11-13"


def test_out_of_order_adds():
    rs = RangeSet()
    for n in (100, 1, 50, 2, 99, 51, 3, 101):
        rs.add(n)
    assert str(rs) == "1-3,50-51,99-101"
    assert len(rs) == 8
    assert all(n in rs for n in (1, 2, 3, 50, 51, 99, 100, 101))
    assert all(n not in rs for n in (0, 4, 49, 52, 98, 102))


def test_parse_accepts_unsorted_and_overlapping_text():
    rs = RangeSet("7-9,1,2-3,8-12")
    assert str(rs) == "1-3,7-12"


def test_str_round_trip():
    rs = RangeSet("1-5120,5200-5301,9999")
    assert str(RangeSet(str(rs))) == str(rs) == "1-5120,5200-5301,9999"
    assert len(rs) == 5120 + 102 + 1


def test_large_sequence_numbers():
    big = 2**63 - 1
    rs = RangeSet()
    rs.add(big)
    rs.add(big - 1)
    assert str(rs) == f"{big - 1}-{big}"
    assert big in RangeSet(str(rs))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 200), max_size=120))
def test_membership_equals_python_set_and_str_round_trips(values):
    rs = RangeSet()
    for v in values:
        rs.add(v)
    want = set(values)
    for n in range(-2, 205):
        assert (n in rs) == (n in want), n
    assert len(rs) == len(want)
    again = RangeSet(str(rs))
    assert str(again) == str(rs)
    assert all((n in again) == (n in want) for n in range(-2, 205))
    # minimal: sorted, disjoint, no two ranges adjacent (else they would be one span)
    spans = spans_of(rs)
    assert rs.spans == len(spans)
    for lo, hi in spans:
        assert lo <= hi
    for (_, hi), (lo2, _) in itertools.pairwise(spans):
        assert lo2 > hi + 1
    # the number of spans is the number of maximal runs in the set
    runs = sum(1 for n in want if n - 1 not in want)
    assert rs.spans == runs


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 40)), max_size=30))
def test_add_range_equals_union_of_ranges(ranges):
    rs = RangeSet()
    want: set[int] = set()
    for lo, width in ranges:
        rs.add_range(lo, lo + width)
        want.update(range(lo, lo + width + 1))
    assert len(rs) == len(want)
    assert all((n in rs) == (n in want) for n in range(0, 345))
    assert rs.spans == sum(1 for n in want if n - 1 not in want)
    assert str(RangeSet(str(rs))) == str(rs)


# ------------------------------------------------------------------------------ Ledger


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "data" / "lc.db")


def test_marked_and_committed_survives_a_reopen(db):
    lg = Ledger(db)
    assert not lg.written("h1", 1, 1)
    for s in (1, 2, 3, 7):
        lg.mark("h1", 1, s)
    assert lg.written("h1", 1, 2)  # in memory at once
    lg.commit(123)
    assert lg.commits == 1
    lg.close()
    lg2 = Ledger(db)
    try:
        assert all(lg2.written("h1", 1, s) for s in (1, 2, 3, 7))
        assert not lg2.written("h1", 1, 4)
        assert not lg2.written("h1", 1, 8)
        assert lg2.delivered("h1") == {1: "1-3,7"}
    finally:
        lg2.close()


def test_marked_without_commit_is_lost_on_reopen(db):
    lg = Ledger(db)
    lg.mark("h1", 1, 1)
    lg.commit(1)
    lg.mark("h1", 1, 2)  # never committed: as after a SIGKILL
    assert lg.written("h1", 1, 2)
    lg.close()
    lg2 = Ledger(db)
    try:
        assert lg2.written("h1", 1, 1)
        assert not lg2.written("h1", 1, 2)
        assert lg2.delivered("h1") == {1: "1"}
    finally:
        lg2.close()


def test_commit_writes_only_the_changes_and_accumulates(db):
    lg = Ledger(db)
    lg.mark("h1", 1, 1)
    lg.commit(1)
    lg.commit(2)  # nothing new: still a transaction, nothing lost
    lg.mark("h1", 1, 2)
    lg.commit(3)
    assert lg.commits == 3
    lg.close()
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT hunter_id, epoch, ranges, updated_ns FROM delivered").fetchall()
    finally:
        con.close()
    assert rows == [("h1", 1, "1-2", 3)]


def test_hunters_and_epochs_are_kept_apart(db):
    lg = Ledger(db)
    lg.mark("h1", 1, 5)
    lg.mark("h1", 2, 6)
    lg.mark("h2", 1, 7)
    lg.commit(10)
    lg.close()
    lg = Ledger(db)
    try:
        assert lg.written("h1", 1, 5)
        assert not lg.written("h1", 2, 5) and not lg.written("h2", 1, 5)
        assert lg.written("h1", 2, 6)
        assert not lg.written("h1", 1, 6) and not lg.written("h2", 2, 6)
        assert lg.written("h2", 1, 7)
        assert not lg.written("h1", 1, 7)
        assert not lg.written("h3", 1, 5)
        assert lg.delivered("h1") == {1: "5", 2: "6"}
        assert lg.delivered("h2") == {1: "7"}
        assert lg.delivered("nobody") == {}
    finally:
        lg.close()


def test_delivered_reflects_uncommitted_marks(db):
    lg = Ledger(db)
    try:
        for s in (3, 1, 2, 10):
            lg.mark("h", 9, s)
        assert lg.delivered("h") == {9: "1-3,10"}
    finally:
        lg.close()


def test_file_opening_is_durable_at_once_with_size_zero(db):
    lg = Ledger(db)
    lg.file_opening("/out/x.pcap", 1, "", 3, "/out/x-000003.pcap")
    lg.close()  # no commit
    lg = Ledger(db)
    try:
        assert lg.sink_files("/out/x.pcap") == [SinkFile(1, "", 3, "/out/x-000003.pcap", 0)]
    finally:
        lg.close()


def test_file_state_waits_for_commit(db):
    lg = Ledger(db)
    lg.file_opening("/o.pcap", 1, "", 0, "/o.pcap")
    lg.file_state("/o.pcap", [SinkFile(1, "", 0, "/o.pcap", 1000)])
    assert lg.sink_files("/o.pcap") == [SinkFile(1, "", 0, "/o.pcap", 0)]
    lg.commit(5)
    assert lg.sink_files("/o.pcap") == [SinkFile(1, "", 0, "/o.pcap", 1000)]
    lg.file_state("/o.pcap", [SinkFile(1, "", 0, "/o.pcap", 2000)])  # not committed
    lg.close()
    lg = Ledger(db)
    try:
        assert lg.sink_files("/o.pcap") == [SinkFile(1, "", 0, "/o.pcap", 1000)]
    finally:
        lg.close()


def test_file_state_and_marks_commit_together(db):
    lg = Ledger(db)
    lg.mark("h1", 4, 1)
    lg.file_state("/o.pcap", [SinkFile(1, "", 2, "/o-000002.pcap", 500)])
    lg.commit(7)
    lg.close()
    lg = Ledger(db)
    try:
        assert lg.written("h1", 4, 1)
        assert lg.sink_files("/o.pcap") == [SinkFile(1, "", 2, "/o-000002.pcap", 500)]
    finally:
        lg.close()


def test_file_opening_replaces_the_previous_file_and_a_stale_state(db):
    lg = Ledger(db)
    out = "/cap/out.pcap"
    lg.file_opening(out, 1, "", 1, "/cap/out-000001.pcap")
    lg.file_state(out, [SinkFile(1, "", 1, "/cap/out-000001.pcap", 900)])
    # rotation: the next file is recorded before it is created; the pending size of
    # the old file must not overwrite it at the next commit
    lg.file_opening(out, 1, "", 2, "/cap/out-000002.pcap")
    lg.commit(1)
    assert lg.sink_files(out) == [SinkFile(1, "", 2, "/cap/out-000002.pcap", 0)]
    lg.close()


def test_sink_files_per_output_and_link_type_in_order(db):
    lg = Ledger(db)
    a, b = "/a/out.pcap", "/b/out.pcap"
    lg.file_opening(a, 113, "linux_sll", 0, "/a/out.linux_sll.pcap")
    lg.file_opening(a, 101, "raw", 0, "/a/out.raw.pcap")
    lg.file_opening(a, 1, "", 0, "/a/out.pcap")
    lg.file_opening(b, 1, "", 0, "/b/out.pcap")
    lg.file_state(
        a,
        [
            SinkFile(1, "", 0, "/a/out.pcap", 24),
            SinkFile(113, "linux_sll", 0, "/a/out.linux_sll.pcap", 48),
        ],
    )
    lg.file_state(b, [SinkFile(1, "", 0, "/b/out.pcap", 100)])
    lg.commit(1)
    lg.close()
    lg = Ledger(db)
    try:
        # the plain name's owner first, then the others by link type
        assert lg.sink_files(a) == [
            SinkFile(1, "", 0, "/a/out.pcap", 24),
            SinkFile(101, "raw", 0, "/a/out.raw.pcap", 0),
            SinkFile(113, "linux_sll", 0, "/a/out.linux_sll.pcap", 48),
        ]
        assert lg.sink_files(b) == [SinkFile(1, "", 0, "/b/out.pcap", 100)]
        assert lg.sink_files("/c/none.pcap") == []
    finally:
        lg.close()


def test_a_failed_commit_is_retried_by_the_next_one(db):
    lg = Ledger(db)
    lg.mark("h1", 1, 1)
    lg.commit(1)
    lg.mark("h1", 1, 2)
    lg.file_state("/o.pcap", [SinkFile(1, "", 0, "/o.pcap", 500)])
    # Fault injection: the database refuses writes for one commit.
    lg._db.execute("PRAGMA query_only=ON")
    with pytest.raises(sqlite3.Error):
        lg.commit(2)
    lg._db.execute("PRAGMA query_only=OFF")
    assert lg.written("h1", 1, 2)  # the processor treats it as written...
    lg.commit(3)
    lg.close()
    lg = Ledger(db)
    try:
        assert lg.written("h1", 1, 2)  # ...so the next commit must record it
        assert lg.sink_files("/o.pcap") == [SinkFile(1, "", 0, "/o.pcap", 500)]
    finally:
        lg.close()


def test_creates_the_database_directory(tmp_path):
    path = tmp_path / "deep" / "er" / "lc.db"
    lg = Ledger(str(path))
    lg.close()
    assert path.exists()


def test_unusable_database_raises_lc_error(tmp_path):
    bad = tmp_path / "lc.db"
    bad.write_bytes(b"this is not an sqlite database, not even close" * 100)
    with pytest.raises(LcError):
        Ledger(str(bad))


@settings(max_examples=40, deadline=None)
@given(
    marks=st.lists(
        st.tuples(st.sampled_from(["h1", "h2"]), st.integers(0, 2), st.integers(1, 60)),
        max_size=60,
    ),
    cut=st.integers(0, 60),
)
def test_reopen_keeps_exactly_the_committed_prefix(tmp_path_factory, marks, cut):
    db = str(tmp_path_factory.mktemp("ledger") / "lc.db")
    lg = Ledger(db)
    cut = min(cut, len(marks))
    for h, e, s in marks[:cut]:
        lg.mark(h, e, s)
    lg.commit(1)
    for h, e, s in marks[cut:]:
        lg.mark(h, e, s)  # lost with the process
    lg.close()
    lg = Ledger(db)
    try:
        committed = set(marks[:cut])
        for h in ("h1", "h2"):
            for e in range(3):
                for s in range(0, 62):
                    assert lg.written(h, e, s) == ((h, e, s) in committed)
    finally:
        lg.close()
