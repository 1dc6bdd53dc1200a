"""A processor's place in a processor tree: what is above it and what is below.

Processors chain (``lc process --upstream HOST:PORT``): an edge processor writes its own
PCAP and forwards every batch it committed to its upstream, under the batch's original
(hunter, epoch, sequence). This module keeps, for one processor, pure of gRPC:

* **Above**: the processors between it and the root (``ancestors``, nearest first) and
  how many processor levels the tree still allows below it, both learnt from its
  upstream's answer to its registration and again from the answer to every heartbeat
  (:meth:`Tree.set_upstream`), so a chain learnt before the processors above had
  registered themselves is completed, and one that changed is corrected; forgotten when
  the upstream refuses it (:meth:`Tree.clear_upstream`). At most ``MAX_LEVELS`` ids.
* **Below**: the processors registered with it (*children*), each with the tree it
  reported in its last heartbeat (a :class:`Topology`) and the hunters registered
  through it: by a forwarded registration (made before the first batch of a hunter in
  each session), or by being listed in that tree. Only those hunters' batches may come
  on a child's stream (:meth:`Tree.may_carry`): a processor certificate may carry other
  ids than its own, but only for the hunters it registered.

**Refusals** (:meth:`Tree.check_child`), with a message naming the processors:

* *cycle*: the child is this processor, one of its ancestors, or has one of them below
  it (``ProcessorInfo.descendants``);
* *depth*: the child's height plus one exceeds the levels allowed below this processor
  (``--max-tree-depth`` at the root, one less at each level down; the smaller wins).

**Cycles are checked again at every heartbeat** (:meth:`Tree.heartbeat`). The
registration check uses what each side knows at that instant: two processors
registering to each other at once (A ``--upstream`` B and B ``--upstream`` A, or a ring
of three) both pass, neither having an upstream or a child yet. A heartbeat carries the
child's whole tree, so the loop shows there: the child, or a processor below it, is this
processor or one of its ancestors. Every processor of the loop sees it, and all see the
same loop (each has one upstream, so a connected set of processors holds at most one
loop); only the link *from the greatest processor id of the loop* is cut, by its parent,
so exactly one link goes and the rest stay a tree, with no oscillation: the cut child
is forgotten here (its stream ends, :meth:`Tree.cut_reason`, with the same ``cycle:``
message as a refused registration) and its registrations are refused for as long as
this processor is below it. A loop of more than ``MAX_LEVELS`` processors is not seen.

Everything a child reports is bounded (processors, hunters, depth, strings) and kept
only in memory: after a restart the children register again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lc.common.credentials import validate_id
from lc.common.errors import ValidationError
from lc.common.text import wire_text
from lc.proto import lc_pb2

__all__ = ["DEFAULT_MAX_DEPTH", "MAX_NODES", "Tree", "check_via", "clean_topology"]

DEFAULT_MAX_DEPTH = 8  # processor levels below the root
MAX_NODES = 20_000  # hunters and processors one child may report

#: Entries of a hunter's counter tables (``counters.dropped``, ``counters.mode``) kept:
#: a mode reports a fixed set of named figures (the HTTP mode with --tls-keylog 78 once
#: its parser has seen a connection), the bound only stops a hostile hunter.
MAX_COUNTERS = 256
MAX_LEVELS = 64  # processor levels a report may nest, whatever the limit says
MAX_ALLOWED = 100_000  # hunter ids registered through one child
MAX_CUT = 1024  # children whose link was cut (a loop), remembered with the reason
_STATES = frozenset(("connected", "stale", "disconnected"))


@dataclass(slots=True)
class Child:
    """A processor below this one, as it registered and last reported."""

    processor_id: str
    peer: str = ""
    epoch: int = 0
    registered_at_ns: int = 0
    last_seen: float = 0.0  # monotonic
    height: int = 0
    descendants: frozenset[str] = frozenset()
    topology: lc_pb2.Topology | None = None  # its last report, cleaned
    forwarded: dict[str, lc_pb2.HunterInfo] = field(default_factory=dict)
    forwarded_at: dict[str, int] = field(default_factory=dict)  # ``reports`` then
    reports: int = 0  # trees it reported (heartbeats) since it registered
    allowed: set[str] = field(default_factory=set)  # hunters registered through it
    closed_cleanly: bool = False


class Tree:
    def __init__(
        self,
        processor_id: str,
        max_depth: int = DEFAULT_MAX_DEPTH,
        stale_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_depth < 0:
            raise ValidationError("--max-tree-depth must be 0 or more")
        self.processor_id = processor_id
        self.max_depth = max_depth
        self.stale_after = stale_after
        self._clock = clock
        self._lock = threading.Lock()
        self._children: dict[str, Child] = {}
        self._ancestors: tuple[str, ...] = ()
        self._upstream_levels: int | None = None
        self._cut: dict[str, str] = {}  # child id -> why its link was cut (a loop)
        self.cuts = 0  # links cut since the start

    # -- above -------------------------------------------------------------------------
    def set_upstream(self, ancestors: Iterable[str], levels_below: int) -> None:
        """What this processor's upstream answered to its registration."""
        with self._lock:
            self._ancestors = tuple(wire_text(a, 64) for a in list(ancestors)[:MAX_LEVELS])
            self._upstream_levels = levels_below

    def clear_upstream(self) -> None:
        """The upstream refused this processor (a cycle, the depth limit): nothing is
        above it until a registration is accepted again."""
        with self._lock:
            self._ancestors = ()
            self._upstream_levels = None

    @property
    def ancestors(self) -> tuple[str, ...]:
        with self._lock:
            return self._ancestors

    @property
    def allowance(self) -> int:
        """Processor levels allowed below this processor."""
        with self._lock:
            return self._allowance()

    def _allowance(self) -> int:
        if self._upstream_levels is None:
            return self.max_depth
        return min(self.max_depth, self._upstream_levels)

    # -- below: registration -------------------------------------------------------------
    def check_child(self, child_id: str, info: lc_pb2.ProcessorInfo) -> None:
        """Raise ValidationError (the message names the problem) when ``child_id``, with
        ``info`` below it, may not register here: a cycle, or the depth limit."""
        me = self.processor_id
        with self._lock:
            above = (me, *self._ancestors)
            allowance = self._allowance()
        below = [child_id, *info.descendants[:MAX_NODES]]
        if child_id == me:
            raise ValidationError(
                f"cycle: processor {child_id!r} is this processor (its --upstream points at "
                "itself, or two processors share one id: give each its own --id)"
            )
        loop = next((p for p in below if p in above), None)
        if loop is not None:
            raise ValidationError(_cycle(child_id, loop, above))
        if info.height + 1 > allowance:
            raise ValidationError(
                f"depth limit: processor {child_id!r} has {info.height} processor level(s) "
                f"below it, and {me!r} allows {allowance} level(s) below itself "
                f"(--max-tree-depth, counted from the top)"
            )

    def register_child(self, req: lc_pb2.RegisterRequest, peer: str) -> tuple[list[str], int]:
        """Record a processor registering itself (checked with :meth:`check_child`);
        returns what to answer: (ancestors for it, levels allowed below it)."""
        info = req.processor
        with self._lock:
            c = self._children.get(req.hunter_id)
            if c is None or c.epoch != req.epoch:
                c = self._children[req.hunter_id] = Child(req.hunter_id)
            c.peer = peer
            c.epoch = req.epoch
            c.registered_at_ns = time.time_ns()
            c.last_seen = self._clock()
            c.height = info.height
            c.descendants = frozenset(info.descendants[:MAX_NODES])
            c.closed_cleanly = False
            self._cut.pop(req.hunter_id, None)
            return self._for_child()

    def for_child(self) -> tuple[list[str], int]:
        """What a child is told, at its registration and in every heartbeat answer: its
        ancestors (this processor first) and the levels allowed below it."""
        with self._lock:
            return self._for_child()

    def _for_child(self) -> tuple[list[str], int]:
        return [self.processor_id, *self._ancestors], max(0, self._allowance() - 1)

    def register_forwarded(self, child_id: str, req: lc_pb2.RegisterRequest) -> bool:
        """A hunter registered through ``child_id`` (``req.via[0]``); False when that
        processor is not registered here (it has to register first)."""
        info = _hunter_from_registration(req)
        with self._lock:
            c = self._children.get(child_id)
            if c is None:
                return False
            c.last_seen = self._clock()
            if len(c.allowed) >= MAX_ALLOWED and req.hunter_id not in c.allowed:
                return False
            c.allowed.add(req.hunter_id)
            c.forwarded[req.hunter_id] = info
            c.forwarded_at[req.hunter_id] = c.reports
            return True

    def is_child(self, child_id: str) -> bool:
        with self._lock:
            return child_id in self._children

    def may_carry(self, child_id: str, hunter_id: str) -> bool:
        """May processor ``child_id`` send batches of ``hunter_id``?"""
        with self._lock:
            c = self._children.get(child_id)
            if c is None:
                return False
            c.last_seen = self._clock()
            return hunter_id in c.allowed

    def heartbeat(self, child_id: str, epoch: int, topology: lc_pb2.Topology) -> bool:
        """A child's heartbeat with its tree; False when it is unknown (or another run):
        it has to register again. False too when its tree shows a loop through this
        processor and its link is the one to cut (see the module doc): it is forgotten,
        :meth:`cut_reason` says why, and its registration is refused while the loop's
        other links stay."""
        clean = clean_topology(topology, child_id)
        hunters = [h.hunter_id for h in _walk_hunters(clean)]
        procs = [p.processor_id for p, _ in _walk_processors(clean)]
        height = _height(clean)
        with self._lock:
            above = (self.processor_id, *self._ancestors)
        why = _loop_to_cut(child_id, clean, above)
        with self._lock:
            c = self._children.get(child_id)
            if c is None or (epoch and c.epoch and epoch != c.epoch):
                return False
            if why:
                del self._children[child_id]
                if len(self._cut) >= MAX_CUT:
                    del self._cut[next(iter(self._cut))]
                self._cut[child_id] = why
                self.cuts += 1
                return False
            c.last_seen = self._clock()
            c.closed_cleanly = False
            c.reports += 1
            c.topology = clean
            c.height = height
            c.descendants = frozenset(procs)
            for h in hunters:
                if len(c.allowed) >= MAX_ALLOWED:
                    break
                c.allowed.add(h)
            return True

    def cut_reason(self, child_id: str) -> str:
        """Why the link of ``child_id`` was cut ("" when it was not, or it registered
        again since)."""
        with self._lock:
            return self._cut.get(child_id, "")

    def stream_closed(self, child_id: str, clean: bool) -> None:
        with self._lock:
            c = self._children.get(child_id)
            if c is not None:
                c.closed_cleanly = clean

    def heard(self, child_id: str) -> float | None:
        """Seconds since a child was last heard from (None: not a child)."""
        with self._lock:
            c = self._children.get(child_id)
            return None if c is None else self._clock() - c.last_seen

    def info(self) -> lc_pb2.ProcessorInfo:
        """What this processor tells its upstream about the tree below it."""
        with self._lock:
            desc: set[str] = set()
            height = 0
            for c in self._children.values():
                desc.add(c.processor_id)
                desc.update(c.descendants)
                height = max(height, c.height + 1)
            return lc_pb2.ProcessorInfo(height=height, descendants=sorted(desc)[:MAX_NODES])

    # -- below: what is there ------------------------------------------------------------
    def _state(self, c: Child) -> str:
        if c.closed_cleanly:
            return "disconnected"
        return "stale" if self._clock() - c.last_seen > self.stale_after else "connected"

    def _forwarded_state(self, c: Child, hunter_id: str) -> str:
        """The state of a hunter ``c`` registered here but does not list in its tree.
        Its own hunters appear in its next report; one still missing two reports later is
        not connected anywhere below it: its batches come from the child's spool (a
        hunter of an earlier run of that processor, say), so it is ``disconnected``."""
        state = self._state(c)
        if state == "connected" and c.reports - c.forwarded_at.get(hunter_id, c.reports) >= 2:
            return "disconnected"
        return state

    def children(self, depth: int = 1) -> list[lc_pb2.Topology]:
        """Every child's tree, its depth counted from this processor (``depth`` for the
        children themselves); below a child that is not connected every state is its."""
        with self._lock:
            out = []
            for c in sorted(self._children.values(), key=lambda c: c.processor_id):
                t = lc_pb2.Topology()
                if c.topology is not None:
                    t.CopyFrom(c.topology)
                t.processor_id = c.processor_id
                t.state = self._state(c)
                t.peer = wire_text(c.peer, 256)
                t.epoch = c.epoch
                known = {h.hunter_id for h in _walk_hunters(t)}
                for hid, info in sorted(c.forwarded.items()):
                    if hid not in known and list(info.via) == [c.processor_id]:
                        h = lc_pb2.HunterInfo()  # registered, not (yet) in a report
                        h.CopyFrom(info)
                        h.state = self._forwarded_state(c, hid)
                        t.hunters.append(h)
                _set_depth(t, depth)
                if t.state != "connected":
                    _mark(t, t.state)
                out.append(t)
            return out

    def hunters_below(self) -> list[lc_pb2.HunterInfo]:
        """Every hunter below this processor, each with ``via``: the processors it comes
        through, from the child downwards."""
        out: list[lc_pb2.HunterInfo] = []
        for t in self.children():
            _flatten(t, [], out)
        with self._lock:
            seen = {h.hunter_id for h in out}
            for c in self._children.values():
                for hid, info in c.forwarded.items():
                    if hid not in seen:  # registered through it, not yet in a report
                        h = lc_pb2.HunterInfo()
                        h.CopyFrom(info)
                        h.state = self._forwarded_state(c, hid)
                        out.append(h)
                        seen.add(hid)
        out.sort(key=lambda h: (list(h.via), h.hunter_id))
        return out

    def hunter_below(self, hunter_id: str) -> lc_pb2.HunterInfo | None:
        return next((h for h in self.hunters_below() if h.hunter_id == hunter_id), None)


# -- helpers ------------------------------------------------------------------------------


def _cycle(child_id: str, loop: str, above: tuple[str, ...]) -> str:
    chain = " -> ".join(reversed(above))
    where = "is" if loop == child_id else f"has {loop!r} below it, which is"
    return (
        f"cycle: processor {child_id!r} {where} already above it ({chain}); "
        "a processor tree has no loops"
    )


def _loop_to_cut(child_id: str, tree: lc_pb2.Topology, above: tuple[str, ...]) -> str:
    """The ``cycle:`` message when ``tree`` (the child's report) closes a loop through the
    processor ``above[0]`` (``above``: it and its ancestors) whose greatest processor id
    is the child's, else "". The loop: the child, this processor, its ancestors up to the
    first of them (or itself) found in the child's tree, and the path back down."""
    found = _find_first(tree, set(above))
    if found is None:
        return ""
    down = found  # the child ... the processor found, each one below the previous
    up = above[: above.index(down[-1]) + 1]  # this processor ... the one found
    loop = [child_id, *up, *reversed(down[:-1])]
    if child_id != max(loop):
        return ""  # another link of the loop is cut: the one from its greatest id
    return (
        f"{_cycle(child_id, down[-1], up)} (its heartbeat shows the loop "
        f"{' -> '.join(loop)}; the link from {child_id!r}, the greatest id in it, is cut)"
    )


def _find_first(tree: lc_pb2.Topology, wanted: set[str]) -> list[str] | None:
    """The path (processor ids, ``tree``'s root first) to the processor of ``wanted``
    nearest the root (breadth first), or None."""
    nodes: list[tuple[str, int]] = []  # (id, index of its parent)
    queue: deque[tuple[lc_pb2.Topology, int]] = deque([(tree, -1)])
    while queue:
        node, parent = queue.popleft()
        nodes.append((node.processor_id, parent))
        if node.processor_id in wanted:
            path, i = [], len(nodes) - 1
            while i >= 0:
                path.append(nodes[i][0])
                i = nodes[i][1]
            return path[::-1]
        me = len(nodes) - 1
        queue.extend((p, me) for p in node.processors)
    return None


def _hunter_from_registration(req: lc_pb2.RegisterRequest) -> lc_pb2.HunterInfo:
    return lc_pb2.HunterInfo(
        hunter_id=req.hunter_id,
        hostname=req.hostname,
        version=req.version,
        mode=req.mode,
        interfaces=req.interfaces,
        capabilities=req.capabilities,
        local_filters=req.local_filters,
        state="connected",
        epoch=req.epoch,
        registered_at_ns=time.time_ns(),
        via=req.via,
    )


def check_via(via: Iterable[str], caller: str | None) -> list[str]:
    """A forwarded registration's ``via`` as it may be kept, or ValidationError: 1 to
    MAX_LEVELS processor ids, the first the caller's (when the caller is known)."""
    path = list(via)
    if not path or len(path) > MAX_LEVELS:
        raise ValidationError(f"via: 1 to {MAX_LEVELS} processor ids (got {len(path)})")
    for p in path:
        validate_id(p, "processor")
    if caller is not None and path[0] != caller:
        raise ValidationError(
            f"via: a registration forwarded by processor {caller!r} must name it first, "
            f"not {path[0]!r}"
        )
    return path


def _clean_hunter(h: lc_pb2.HunterInfo, via: list[str]) -> lc_pb2.HunterInfo | None:
    try:
        validate_id(h.hunter_id)
    except ValidationError:
        return None
    c = h.counters
    counters = lc_pb2.HunterCounters(
        captured=c.captured,
        forwarded=c.forwarded,
        acked=c.acked,
        queue_batches=c.queue_batches,
        queue_bytes=c.queue_bytes,
        batches_sent=c.batches_sent,
        cpu_percent=c.cpu_percent,
        rss_bytes=c.rss_bytes,
        bytes_captured=c.bytes_captured,
        breaker=wire_text(c.breaker, 32),
        reconnects=c.reconnects,
        flow=wire_text(c.flow, 32),
        connect_failures=c.connect_failures,
    )
    for src, dst in ((c.dropped, counters.dropped), (c.mode, counters.mode)):
        for k, v in list(src.items())[:MAX_COUNTERS]:
            dst[wire_text(k, 64)] = v
    return lc_pb2.HunterInfo(
        hunter_id=h.hunter_id,
        hostname=wire_text(h.hostname, 255),
        version=wire_text(h.version, 64),
        mode=wire_text(h.mode, 32),
        interfaces=[wire_text(i, 256) for i in h.interfaces[:64]],
        capabilities=[wire_text(i, 64) for i in h.capabilities[:64]],
        state=h.state if h.state in _STATES else "stale",
        peer=wire_text(h.peer, 256),
        epoch=h.epoch,
        registered_at_ns=h.registered_at_ns,
        last_heartbeat_ns=h.last_heartbeat_ns,
        counters=counters,
        packets_received=h.packets_received,
        bytes_received=h.bytes_received,
        batches_received=h.batches_received,
        batches_duplicate=h.batches_duplicate,
        streaming=h.streaming,
        filter_version=h.filter_version,
        processor_filter_version=h.processor_filter_version,
        via=via,
    )


def clean_topology(t: lc_pb2.Topology, processor_id: str) -> lc_pb2.Topology:
    """A child's report as this processor keeps it: ids valid, strings bounded, at most
    MAX_NODES hunters and processors and MAX_LEVELS levels; the root named
    ``processor_id`` (the child's own id, whatever it wrote). ``via`` is recomputed."""
    budget = [MAX_NODES]

    def walk(node: lc_pb2.Topology, pid: str, path: list[str], level: int) -> lc_pb2.Topology:
        out = lc_pb2.Topology(
            processor_id=pid,
            state=node.state if node.state in _STATES else "",
            upstream=wire_text(node.upstream, 256),
            upstream_state=wire_text(node.upstream_state, 32),
            upstream_spool_batches=node.upstream_spool_batches,
            upstream_spool_bytes=node.upstream_spool_bytes,
            peer=wire_text(node.peer, 256),
            epoch=node.epoch,
        )
        via = [*path, pid]
        for h in node.hunters:
            if budget[0] <= 0:
                break
            ch = _clean_hunter(h, via)
            if ch is not None:
                budget[0] -= 1
                out.hunters.append(ch)
        if level >= MAX_LEVELS:
            return out
        for p in node.processors:
            if budget[0] <= 0:
                break
            try:
                validate_id(p.processor_id, "processor")
            except ValidationError:
                continue
            budget[0] -= 1
            out.processors.append(walk(p, p.processor_id, via, level + 1))
        return out

    return walk(t, processor_id, [], 0)


def _walk_hunters(t: lc_pb2.Topology):
    yield from t.hunters
    for p in t.processors:
        yield from _walk_hunters(p)


def _walk_processors(t: lc_pb2.Topology, level: int = 1):
    for p in t.processors:
        yield p, level
        yield from _walk_processors(p, level + 1)


def _height(t: lc_pb2.Topology) -> int:
    return max((lvl for _, lvl in _walk_processors(t)), default=0)


def _set_depth(t: lc_pb2.Topology, depth: int) -> None:
    t.depth = depth
    for p in t.processors:
        _set_depth(p, depth + 1)


def _mark(t: lc_pb2.Topology, state: str) -> None:
    """Everything below a processor that is not connected is in its state: not known."""
    for h in t.hunters:
        h.state = state
    for p in t.processors:
        p.state = state
        _mark(p, state)


def _flatten(t: lc_pb2.Topology, path: list[str], out: list[lc_pb2.HunterInfo]) -> None:
    via = [*path, t.processor_id]
    for h in t.hunters:
        x = lc_pb2.HunterInfo()
        x.CopyFrom(h)
        del x.via[:]
        x.via.extend(via)
        out.append(x)
    for p in t.processors:
        _flatten(p, via, out)
