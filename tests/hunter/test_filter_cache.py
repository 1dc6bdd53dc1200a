"""The hunter keeps its applied filter set beside the spool (HunterFilters.load_cached)."""

from __future__ import annotations

import json

from lc.hunter.filtering import HunterFilters
from lc.proto import lc_pb2


def update(version: int, *patterns: str) -> lc_pb2.FilterUpdate:
    upd = lc_pb2.FilterUpdate(version=version, full=True)
    for k, p in enumerate(patterns):
        upd.filters.add(id=f"f{k}", type="sip_user", pattern=p, enabled=True)
    return upd


def recorder():
    seen = []
    return seen, lambda filters, compiled: seen.append(sorted(f.pattern for f in filters))


def test_a_restarted_hunter_applies_the_kept_set_then_the_processors(tmp_path):
    path = str(tmp_path / "filters-voip.json")
    seen, on_change = recorder()
    first = HunterFilters("h1", ("sip_user",), on_change)
    assert first.load_cached(path) is False  # nothing kept yet
    assert first.apply(update(3, "alice", "bob"))
    assert seen == [["alice", "bob"]]
    kept = json.loads((tmp_path / "filters-voip.json").read_text())
    assert kept["version"] == 3 and len(kept["filters"]) == 2

    seen2, on_change2 = recorder()
    again = HunterFilters("h1", ("sip_user",), on_change2)
    assert again.load_cached(path) is True
    assert again.version == 3 and again.received.is_set()
    assert seen2 == [["alice", "bob"]]
    # The processor's full set replaces it once connected, whatever its version.
    assert again.apply(update(2, "carol"))
    assert seen2[-1] == ["carol"]
    assert json.loads((tmp_path / "filters-voip.json").read_text())["version"] == 2


def test_a_damaged_kept_set_is_ignored(tmp_path):
    path = tmp_path / "filters-generic.json"
    path.write_text('{"version": 1, "filters": [{"type": "sip_user"')
    seen, on_change = recorder()
    h = HunterFilters("h1", ("sip_user",), on_change)
    assert h.load_cached(str(path)) is False
    assert seen == [] and not h.received.is_set()
    path.write_text('{"version": "three", "filters": []}')
    assert h.load_cached(str(path)) is False
    assert seen == []


def test_keeping_filter_sets_leaves_no_cyclic_garbage(tmp_path):
    """Every set applied is written beside the spool; json.dump's pure-Python encoder
    (closures naming each other) left ~30 objects of cyclic garbage per set."""
    import gc

    _, on_change = recorder()
    h = HunterFilters("h1", ("sip_user",), on_change)
    h.load_cached(str(tmp_path / "filters-voip.json"))
    assert h.apply(update(1, "alice"))
    gc.collect()
    gc.disable()
    try:
        for v in range(2, 22):
            assert h.apply(update(v, "alice", f"bob{v}"))
        garbage = gc.collect()
    finally:
        gc.enable()
    assert json.loads((tmp_path / "filters-voip.json").read_text())["version"] == 21
    assert garbage == 0
