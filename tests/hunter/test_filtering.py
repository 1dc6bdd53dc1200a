"""HunterFilters: a filter this hunter cannot apply is left out, the rest applies."""

from __future__ import annotations

from lc.common.bpf import check_bpf, compile_bpf
from lc.hunter.filtering import HunterFilters
from lc.proto import lc_pb2

SLL = 113  # LINKTYPE_LINUX_SLL: what `-i any` captures


def test_a_bpf_that_does_not_compile_for_the_link_type_blocks_no_other_filter():
    # The processor compiles a bpf filter for Ethernet: `ether host` passes there, but
    # not on a hunter capturing `-i any`. Before, the whole set was refused, so no later
    # change (a new dns_domain filter) ever applied until the bad filter was removed.
    applied = []

    def on_change(filters, compiled):  # as a mode does: every bpf for its link type
        for _fid, expr in compiled.bpf():
            compile_bpf(expr, SLL)
        applied.append(sorted(f.id for f in filters))

    def check(f):
        if f.type == "bpf":
            check_bpf(f.pattern, SLL)

    h = HunterFilters("h1", ("bpf", "dns_domain"), on_change, check)
    upd = lc_pb2.FilterUpdate(version=1, full=True)
    upd.filters.add(id="eth", type="bpf", pattern="ether host 00:00:00:00:00:01", enabled=True)
    upd.filters.add(id="udp", type="bpf", pattern="udp", enabled=True)
    assert h.apply(upd)
    assert applied == [["udp"]] and h.version == 1
    later = lc_pb2.FilterUpdate(version=2)
    later.filters.add(id="d", type="dns_domain", pattern="*.example.com", enabled=True)
    assert h.apply(later)
    assert applied[-1] == ["d", "udp"] and h.version == 2
    # Removed, it is no longer left out (nothing to leave out); another hunter's is
    # not checked at all.
    gone = lc_pb2.FilterUpdate(version=3, removed=["eth"])
    gone.filters.add(id="x", type="bpf", pattern="ether host 00:00:00:00:00:02",
                     enabled=True, hunters=["h2"])  # fmt: skip
    assert h.apply(gone)
    assert applied[-1] == ["d", "udp", "x"] and h.version == 3
