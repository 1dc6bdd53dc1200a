"""Generic mode (``lc hunt``): every packet the filters select, no sessions.

``bpf`` and ``ip_address`` filters become one kernel BPF expression, so the kernel
does the cheap part; each packet that reaches user space is matched again to name the
filters it matched, which travel with it to the processor (sparse metadata). With no
filter, the policy decides: ``allow`` (this mode's default) forwards everything,
``deny`` nothing. A frame whose headers cannot be read while an ``ip_address``
filter needs its addresses matches nothing (``malformed``).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from lc.common.bpf import compile_bpf
from lc.common.decode import ip_ports
from lc.common.errors import ParseError, ValidationError
from lc.common.filters import FilterSet
from lc.hunter.capture import Chunk
from lc.hunter.modes.base import (
    EMPTY,
    MATCH_NOTHING,
    Forward,
    Mode,
    ModeContext,
    ModeCounters,
    ModeSpec,
)

__all__ = ["SPEC", "GenericConfig", "GenericMode"]


@dataclass(slots=True)
class GenericConfig:
    """Generic mode has no options of its own."""

    def validate(self) -> None:
        return None


class GenericMode(Mode):
    def __init__(self, ctx: ModeContext, cfg: GenericConfig | None = None) -> None:
        self.policy = ctx.policy
        self.interfaces = ctx.interfaces
        self._state: tuple[FilterSet, list[tuple[str, str]]] | None = None
        self._programs: dict[tuple[str, int], object] = {}
        self.filtered = 0
        self.malformed = 0

    def kernel_filter(self, compiled: FilterSet) -> str:
        app = [f"({expr})" for _, expr in compiled.bpf()]
        for f in compiled.filters:
            if f.type == "ip_address":
                app.append(f"net {f.pattern}" if "/" in f.pattern else f"host {f.pattern}")
        if not app:
            return MATCH_NOTHING if self.policy == "deny" else ""
        return " or ".join(app)

    def apply(self, compiled: FilterSet) -> None:
        # Compile every BPF filter for the link types in use before anything changes.
        programs = {}
        for fid, e in compiled.bpf():
            for lt in {lt for _, lt in self.interfaces} or {1}:
                programs[(fid, lt)] = self._programs.get((fid, lt)) or compile_bpf(e, lt)
        self._programs = programs
        self._state = (compiled, compiled.bpf())

    def process(self, chunk: Chunk) -> Forward:
        """The packets of ``chunk`` to forward, and the filter ids each matched."""
        state = self._state
        n = len(chunk)
        if state is None:
            self.filtered += n
            return EMPTY
        compiled, bpfs = state
        if not len(compiled):
            if self.policy == "allow":
                return Forward(chunk, {}, [])
            self.filtered += n
            return EMPTY
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
                try:
                    five = ip_ports(lt, data)
                except ParseError:
                    five = None
                    self.malformed += 1
                if five is not None:
                    ids |= compiled.match_ip((five[0], five[1]))
            if bpfs:
                raw = bytes(data)
                for fid, _ in bpfs:
                    prog = programs.get((fid, lt))
                    if prog is None:  # a link type that came later (a pcapng's next IDB)
                        try:
                            prog = programs[(fid, lt)] = compile_bpf(dict(bpfs)[fid], lt)
                        except ValidationError:  # `ether host` on raw IP: matches nothing
                            continue
                    if prog.filter(raw):  # type: ignore[attr-defined]
                        ids.add(fid)
            if ids:
                meta[len(keep)] = sorted(ids)
                keep.append(i)
        self.filtered += n - len(keep)
        if len(keep) == n:
            return Forward(chunk, meta, [])
        return Forward(_take(chunk, keep), meta, [])

    def counters(self) -> ModeCounters:
        # Malformed frames matched nothing: they are among the filtered, and counted.
        figures = {"malformed": self.malformed}
        note = f"{self.malformed} malformed" if self.malformed else ""
        return ModeCounters(figures, {"filtered": self.filtered}, note)


def _take(chunk: Chunk, keep: list[int]) -> Chunk:
    """The packets of ``chunk`` at the indices ``keep`` (ascending), as a new chunk."""
    if not keep:
        return EMPTY.chunk
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


SPEC = ModeSpec(
    name="generic",
    help="Capture packets and stream them to a processor (generic mode: everything).",
    filter_types=("bpf", "ip_address"),
    default_policy="allow",
    config=GenericConfig,
    factory=GenericMode,
)
