"""The status counters keep a bounded number of names that hunters choose."""

from types import SimpleNamespace

from lc.processor.sinks import StatusCounters
from lc.proto import lc_pb2


def _batch(datasets: list[str], filter_ids: list[str]) -> SimpleNamespace:
    meta = [lc_pb2.PacketMeta(filter_ids=[f]) for f in filter_ids]
    events = [(i, lc_pb2.Event(dataset=d)) for i, d in enumerate(datasets)]
    return SimpleNamespace(
        cols=SimpleNamespace(meta=meta, meta_ref=None, meta_table=[], events=events)
    )


def test_names_beyond_the_bound_are_counted_as_other() -> None:
    sc = StatusCounters(max_keys=4)
    names = [f"d{i}" for i in range(10)]
    sc.observe([_batch(names, names)])
    sc.observe([_batch(["d0", "new"], ["d1", "new2"])])
    fm, ev = sc.snapshot()
    assert len(ev) == 5 and len(fm) == 5  # four names and OTHER
    assert ev["d0"] == 2 and fm["d1"] == 2
    assert ev[StatusCounters.OTHER] == 10 - 4 + 1
    assert fm[StatusCounters.OTHER] == 10 - 4 + 1
    assert sum(ev.values()) == 12 and sum(fm.values()) == 12
