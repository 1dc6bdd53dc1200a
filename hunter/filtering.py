"""The hunter's copy of the filters aimed at it, and how generic mode applies them.

``HunterFilters`` applies the processor's updates in version order (an update that
is not newer than the applied version is ignored, so nothing is applied twice; a
full update replaces everything, so a hunter that missed changes while away ends
with exactly the processor's set), compiles the engine off the hot path and hands
the result to the mode, which swaps one reference.

``GenericFilter`` is generic mode's use of the engine: ``bpf`` and ``ip_address``
filters become one kernel BPF expression (so the kernel does the cheap part), and
each packet that reaches user space is matched again to name the filters it
matched, which travel with it to the processor.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from array import array
from collections.abc import Callable

from lc.common.bpf import compile_bpf
from lc.common.decode import ip_ports
from lc.common.errors import LcError
from lc.common.filters import Filter, FilterSet, compile_filters
from lc.common.wire import filter_to_proto
from lc.hunter.capture import Chunk
from lc.proto import lc_pb2

__all__ = ["GENERIC_FILTER_TYPES", "GenericFilter", "HunterFilters"]

log = logging.getLogger(__name__)

GENERIC_FILTER_TYPES = ("bpf", "ip_address")
MATCH_NOTHING = "less 1"  # no packet is 1 byte long or less


class HunterFilters:
    def __init__(
        self,
        hunter_id: str,
        types: tuple[str, ...],
        on_change: Callable[[list[Filter], FilterSet], None],
    ) -> None:
        self.hunter_id = hunter_id
        self.types = types
        self.on_change = on_change
        self.version = 0
        self._filters: dict[str, Filter] = {}
        self.received = threading.Event()  # the first complete set has arrived
        self._lock = threading.Lock()

    def apply(self, upd: lc_pb2.FilterUpdate) -> bool:
        """Apply one update from the processor; False when it was not newer."""
        with self._lock:
            if not upd.full and upd.version <= self.version:
                return False
            if upd.full:
                self._filters = {}
            for pb in upd.filters:
                self._filters[pb.id] = Filter(
                    id=pb.id,
                    type=pb.type,
                    pattern=pb.pattern,
                    enabled=pb.enabled,
                    description=pb.description,
                    hunters=tuple(pb.hunters),
                )
            for fid in upd.removed:
                self._filters.pop(fid, None)
            filters = list(self._filters.values())
            compiled = compile_filters(filters, self.hunter_id, self.types)
            try:
                self.on_change(filters, compiled)
            except LcError as e:  # e.g. a BPF the kernel refuses: keep the previous set
                log.error("cannot apply filter set version %d: %s", upd.version, e)
                return False
            self.version = upd.version
            log.info("applied filter set version %d (%d filters)", upd.version, len(compiled))
            if self.cache_path:
                self._save(filters)
        self.received.set()
        return True

    # -- a copy on disk, so a hunter restarted while its processor is down keeps its set
    cache_path: str | None = None

    def _save(self, filters: list[Filter]) -> None:
        data = {"version": self.version, "filters": [f.to_json() for f in filters]}
        tmp = f"{self.cache_path}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.cache_path)
        except OSError as e:
            log.warning("cannot keep the filter set in %s: %s", self.cache_path, e)

    def load_cached(self, path: str) -> bool:
        """Apply the set a previous run kept at ``path`` (and keep later ones there).

        True when a set was applied. The processor's full set replaces it on connect.
        """
        self.cache_path = path
        try:
            with open(path) as fh:
                data = json.load(fh)
            filters = [Filter.from_mapping(d) for d in data["filters"]]
            version = int(data["version"])
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError, LcError) as e:
            log.warning("ignoring the kept filter set %s: %s", path, e)
            return False
        upd = lc_pb2.FilterUpdate(version=version, full=True)
        upd.filters.extend(filter_to_proto(f) for f in filters)
        ok = self.apply(upd)
        if ok:
            log.info("applied the filter set kept from the last run (version %d)", version)
        return ok


class GenericFilter:
    """Generic mode's filtering: kernel BPF plus user-space matching for filter ids."""

    def __init__(
        self,
        policy: str,
        base: list[str],
        set_kernel_filter: Callable[[str], None] | None,
        interfaces: list[tuple[str, int]],
    ) -> None:
        self.policy = policy  # "allow" or "deny": what to forward with no filter
        self.base = base  # the user's -f and the exclusion of the processor's own port
        self.set_kernel_filter = set_kernel_filter
        self.interfaces = interfaces  # (name, linktype) by interface index; may grow
        self._state: tuple[FilterSet, list[tuple[str, str]]] | None = None
        self._programs: dict[tuple[str, int], object] = {}
        self.kernel_expr = ""

    def initial_kernel_expr(self) -> str:
        """Before the first filter set arrives nothing is captured: see apply()."""
        return MATCH_NOTHING

    def kernel_expression(self, filters: list[Filter], compiled: FilterSet) -> str:
        app = [f"({expr})" for _, expr in compiled.bpf()]
        for f in filters:
            if f.id in compiled.ids and f.type == "ip_address":
                app.append(f"net {f.pattern}" if "/" in f.pattern else f"host {f.pattern}")
        if not app:
            if self.policy == "deny":
                return MATCH_NOTHING
            return " and ".join(f"({b})" for b in self.base)
        return " and ".join([*(f"({b})" for b in self.base), f"({' or '.join(app)})"])

    def apply(self, filters: list[Filter], compiled: FilterSet) -> None:
        """Swap in a new filter set: kernel filter first, then user-space matching.

        libpcap re-filters what the ring already holds with the new program, and the
        handle stays open throughout, so no packet that the new set wants is lost.
        """
        expr = self.kernel_expression(filters, compiled)
        # Compile every BPF filter for the link types in use before anything changes.
        programs = {}
        for fid, e in compiled.bpf():
            for lt in self._linktypes():
                programs[(fid, lt)] = self._programs.get((fid, lt)) or compile_bpf(e, lt)
        if self.set_kernel_filter is not None:
            self.set_kernel_filter(expr)
        self.kernel_expr = expr
        self._programs = programs
        self._state = (compiled, compiled.bpf())

    def _linktypes(self) -> set[int]:
        return {lt for _, lt in self.interfaces} or {1}

    def process(self, chunk: Chunk) -> tuple[Chunk, dict[int, list[str]]]:
        """The packets of ``chunk`` to forward, and the filter ids each matched."""
        state = self._state
        if state is None:
            return _take(chunk, []), {}
        compiled, bpfs = state
        if not len(compiled):
            return (chunk if self.policy == "allow" else _take(chunk, [])), {}
        keep: list[int] = []
        meta: dict[int, list[str]] = {}
        has_ip = compiled.has("ip_address")
        programs = self._programs
        interfaces = self.interfaces
        mv = memoryview(chunk.records)
        off = 0
        single = chunk.iface if isinstance(chunk.iface, int) else None
        for i, c in enumerate(chunk.caplen):
            data = mv[off + 16 : off + 16 + c]
            off += 16 + c
            lt = interfaces[single if single is not None else chunk.iface[i]][1]
            ids: set[str] = set()
            if has_ip:
                five = ip_ports(lt, data)
                if five is not None:
                    ids |= compiled.match_ip((five[0], five[1]))
            if bpfs:
                raw = bytes(data)
                for fid, _ in bpfs:
                    prog = programs.get((fid, lt))
                    if prog is None:
                        prog = programs[(fid, lt)] = compile_bpf(dict(bpfs)[fid], lt)
                    if prog.filter(raw):  # type: ignore[attr-defined]
                        ids.add(fid)
            if ids:
                meta[len(keep)] = sorted(ids)
                keep.append(i)
        if len(keep) == len(chunk.caplen):
            return chunk, meta
        return _take(chunk, keep), meta


def _take(chunk: Chunk, keep: list[int]) -> Chunk:
    """The packets of ``chunk`` at the indices ``keep`` (ascending), as a new chunk."""
    if not keep:
        return Chunk(
            array("q"),
            array("I"),
            array("I"),
            b"",
            chunk.iface if isinstance(chunk.iface, int) else array("H"),
        )
    offs = []
    off = 0
    for c in chunk.caplen:
        offs.append(off)
        off += 16 + c
    mv = memoryview(chunk.records)
    cl = chunk.caplen
    records = b"".join(mv[offs[i] : offs[i] + 16 + cl[i]] for i in keep)
    iface = (
        chunk.iface if isinstance(chunk.iface, int) else array("H", (chunk.iface[i] for i in keep))
    )
    return Chunk(
        array("q", (chunk.ts_ns[i] for i in keep)),
        array("I", (cl[i] for i in keep)),
        array("I", (chunk.origlen[i] for i in keep)),
        records,
        iface,
    )
