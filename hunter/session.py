"""The session layer: hold a session's packets until a filter decides, then forward
them and the rest of the session whole. Protocol-neutral; a mode's dissector says
what a session is (a SIP call, a DNS transaction, a TCP connection).

A **session** has a key (its id on the wire, e.g. a Call-ID), a state, the filter
ids it matched, its times, and its held packets. States:

=========  ===========================================================================
undecided  no message matched yet: packets are held in the session's buffer
matched    a message matched: the buffer went out in capture order and every later
           packet of the session is forwarded at once
rejected   the mode judged it settled without a match (or it was held
           ``decide_timeout_ns``): the buffer is dropped and packets are no longer
           held, but messages are still judged, so a later match still captures the
           rest
=========  ===========================================================================

**Aliases** map other keys to a session with a *tag* (the packet's kind within the
session): an RTP endpoint an SDP announced, a DNS transaction id, the reverse
direction of a flow. A mode's per-packet loop reads :attr:`SessionTable.aliases`
directly (one dict look-up per packet); the newest session to claim a key wins it.

**Tags** name a packet's protocol within its session (``PacketMeta.protocol``): the
mode's message tag (e.g. ``sip``) and its other tags (``rtp``, ``rtcp``). Each session
counts packets and bytes per tag (for its event). Packets of a message carry the
message's summary; other packets share one metadata object per (session, tag).

**Shared frames**: a frame that carries the end of one message and the start of the
next (over TCP) belongs to both messages, maybe to two sessions. It comes with a
token (:class:`lc.common.flow.Frame`) and is forwarded **once**: by the first of its
sessions to be matched, with that session's metadata (the wire names one session per
packet; the other session's per-session outputs miss that frame).

**Bounds and time**, each with a counter: ``max_sessions`` (a new session evicts the
least recently active one that is not matched, looking among the
:data:`EVICTION_SCAN` least recently active, else the least recently active:
``evicted``; activity is a message, not every media packet, so that the hot path
stays one look-up; for a connection, every packet); ``max_held_packets`` per session
(``message_hold_factor`` times that for message packets), ``max_held_session_bytes``
per session if set, and ``max_held_bytes`` over all (``buffer_full``). Clocks
are capture timestamps: :meth:`SessionTable.expire` forgets sessions
``grace_ns`` after they ended, or ``idle_timeout_ns`` after their last packet, and
rejects those held ``decide_timeout_ns`` without a match. A session that ends
undecided or rejected is dropped: its held packets count as ``unmatched_packets``
(filtered, not lost); those of an undecided session evicted to make room count as
``evicted_packets`` (it might have matched later: lost).

Not thread-safe: the mode that owns a table serialises access.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from types import MappingProxyType

from lc.common.text import wire_text
from lc.hunter.capture import Chunk
from lc.proto import lc_pb2

__all__ = [
    "MATCHED",
    "REJECTED",
    "STATE_NAMES",
    "UNDECIDED",
    "Out",
    "Session",
    "SessionLimits",
    "SessionTable",
]

UNDECIDED, MATCHED, REJECTED = 0, 1, 2
#: How many of the least recently active sessions a full table looks through for one
#: that is not matched, to evict it rather than a matched one.
EVICTION_SCAN = 256
STATE_NAMES = ("undecided", "matched", "rejected")
#: Touches recorded before the eviction order is settled anyway (memory bound).
_MAX_TOUCHED = 1 << 16
_REC = struct.Struct("<IIII")

# A frame as the layers pass it around: (ts_ns, caplen, origlen, record, iface), the
# record being the frame's 16-byte nanosecond pcap header and bytes.
Pkt = tuple


@dataclass(slots=True)
class SessionLimits:
    max_sessions: int = 20_000
    max_held_packets: int = 2000
    max_held_bytes: int = 256 * 1024 * 1024
    grace_ns: int = 5 * 10**9
    idle_timeout_ns: int = 300 * 10**9
    decide_timeout_ns: int = 60 * 10**9
    message_hold_factor: int = 4
    #: Bytes held per session (0: no bound but ``max_held_packets``); connection
    #: capture sets it, a TCP connection being able to carry much before its decision.
    max_held_session_bytes: int = 0


class Session:
    __slots__ = (
        "_name",
        "_namer",
        "aliases",
        "buf",
        "buf_bytes",
        "buf_if",
        "buf_n",
        "buf_sum",
        "buf_tag",
        "buf_tok",
        "buf_views",
        "by",
        "cflags",
        "end_ns",
        "events",
        "first_ns",
        "flow",
        "ids",
        "info",
        "key",
        "last_ns",
        "metas",
        "pk",
        "state",
    )

    def __init__(
        self,
        key: object,
        name: str | None,
        ts: int,
        ntags: int,
        info: object,
        namer: Callable[[object, int], str] | None = None,
    ) -> None:
        self.key = key
        # The session id as wire text (PacketMeta.session_id): ``name``, or when None
        # ``namer(key, ts)``, made at its first use (most connections are never named).
        self._name = name
        self._namer = namer
        self.state = UNDECIDED
        self.ids: list[str] = []
        self.first_ns = ts
        self.last_ns = ts
        self.end_ns = 0
        self.aliases: list[object] | tuple = ()  # a list from its first alias
        self.metas: list[lc_pb2.PacketMeta | None] = [None] * ntags
        self.pk = [0] * ntags  # packets per tag
        self.by = [0] * ntags  # bytes per tag
        self.info = info  # the dissector's own state
        self.flow: tuple | None = None  # (src, sport, dst, dport, proto) of its first message
        # The held packets, compactly: their pcap records back to back (the 16-byte
        # header holds time and lengths), one bytes object per chunk they came in, and
        # per packet its interface and tag; message packets also keep their summary,
        # shared frames their token.
        # Made with the first held packet (most sessions of a busy link hold nothing
        # for long): until then, and again once dropped, shared empty ones.
        self.buf: list[bytes] | tuple = _NO_PARTS
        self.buf_if: array | tuple = _NO_IFS
        self.buf_tag: bytearray | bytes = _NO_BYTES
        self.buf_sum: dict[int, object] = _NO_SUMS  # type: ignore[assignment]  # by index
        self.buf_tok: dict[int, object] | None = None
        # Records held since the last commit (SessionTable.commit): views of the chunk
        # being processed, copied into ``buf`` once per chunk rather than per packet.
        self.buf_views: list | None = None
        self.buf_n = 0
        self.buf_bytes = 0
        # Connection capture (lc.hunter.modes.sessions): the connection's flags (FINs,
        # RST, ...), and events that wait for the session's decision.
        self.cflags = 0
        self.events: list[lc_pb2.Event] | None = None

    @property
    def name(self) -> str:
        """The session id (PacketMeta.session_id), wire-safe."""
        name = self._name
        if name is None:
            name = self._name = self._namer(self.key, self.first_ns)  # type: ignore[misc]
        return name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value


class Out:
    """The packets a chunk forwards, in order, with their metadata."""

    __slots__ = ("caplen", "iface", "meta", "origlen", "parts", "ts")

    def __init__(self) -> None:
        self.ts = array("q")
        self.caplen = array("I")
        self.origlen = array("I")
        self.iface = array("H")
        self.parts: list[bytes | memoryview] = []
        self.meta: dict[int, lc_pb2.PacketMeta] = {}

    def add(self, pkt: Pkt, meta: lc_pb2.PacketMeta) -> None:
        ts, cap, orig, rec, iface = pkt
        self.meta[len(self.ts)] = meta
        self.ts.append(ts)
        self.caplen.append(cap)
        self.origlen.append(orig)
        self.iface.append(iface)
        self.parts.append(rec)

    def __len__(self) -> int:
        return len(self.ts)

    def chunk(self) -> Chunk:
        return Chunk(self.ts, self.caplen, self.origlen, b"".join(self.parts), self.iface)


# A session's buffers while it holds nothing (never written: hold() makes its own;
# a read-only mapping so that a stray write would fail loudly).
_NO_BYTES = b""
_NO_PARTS: tuple = ()
_NO_IFS: tuple = ()
_NO_SUMS = MappingProxyType({})

# created; matched, rejected (decisions); and how sessions left: ended (grace after
# their end), idle, evicted; unmatched counts those that left without a match.
_COUNTERS = ("created", "matched", "unmatched", "evicted", "rejected", "ended", "idle")


class SessionTable:
    """Sessions, their aliases and held packets (see the module docstring).

    ``meta(session, tag, summary)`` builds the PacketMeta of a packet (``summary`` is
    None except for message packets); ``on_forget(session)`` hears of every session
    leaving the table (ended, idle, evicted or at the end), e.g. to emit its event;
    ``on_decided(session)`` of every decision (matched or rejected), e.g. to release
    the events that waited for it; ``on_deciding(session)`` (an attribute) hears of it
    first, before the held packets go, e.g. to bring their summaries up to date.
    """

    def __init__(
        self,
        limits: SessionLimits,
        ntags: int,
        message_tag: int,
        meta: Callable[[Session, int, object], lc_pb2.PacketMeta],
        on_forget: Callable[[Session], None] | None = None,
        on_decided: Callable[[Session], None] | None = None,
    ) -> None:
        self.limits = limits
        self.ntags = ntags
        self.message_tag = message_tag
        self.meta = meta
        self.on_forget = on_forget
        self.on_decided = on_decided
        self.on_deciding: Callable[[Session], None] | None = None
        self.sessions: dict[object, Session] = {}  # least recently active first
        # Sessions touched since the order was last settled, in order of activity: a
        # touch is an append (the hot path's), the dict's order is brought up to date
        # by settle() before anything reads it (see touch).
        self.touched: list[Session] = []
        self.aliases: dict[object, tuple[Session, int]] = {}
        self.held_bytes = 0
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self.unmatched_packets = 0
        self.evicted_packets = 0  # held by undecided sessions evicted (lost, not filtered)
        self.buffer_full = 0
        # Sessions with records held since the last commit (Session.buf_views).
        self._uncommitted: list[Session] = []

    # -- sessions --------------------------------------------------------------------
    def open(
        self,
        key: object,
        ts: int,
        info: object,
        name: str | None = None,
        namer: Callable[[object, int], str] | None = None,
    ) -> Session:
        """A new session (evicting one when the table is full); ``name`` (wire-safe
        already) is its id, or ``namer(key, ts)`` when first asked for (wire-safe too),
        by default the key as wire text."""
        sessions = self.sessions
        if len(sessions) >= self.limits.max_sessions:
            self.settle()
            victim = next(
                (v for v in islice(sessions.values(), EVICTION_SCAN) if v.state != MATCHED), None
            )
            if victim is None:  # a bounded look: a table full of matched ones costs no scan
                victim = next(iter(sessions.values()))
            self.counters["evicted"] += 1
            self.forget(victim, evicted=True)
        if namer is None:
            if name is None and type(key) is str and key.isascii() and len(key) <= 1024:
                name = key
            name = name or wire_text(str(key))
        s = sessions[key] = Session(key, name, ts, self.ntags, info, namer)
        if self.touched:  # its place among touches not yet settled
            self.touched.append(s)
        self.counters["created"] += 1
        return s

    def touch(self, s: Session) -> None:
        """Mark ``s`` active (it moves to the end of the eviction order).

        Deferred: moving a session to the end of the dict costs two hashes of its
        key, per packet. The touch is recorded in :attr:`touched` (a mode's hot loop
        appends to it directly) and :meth:`settle` applies all of them, in order,
        before the order is read (eviction, expiry, the end); a mode settles after
        each chunk, so that between chunks the order is exact."""
        touched = self.touched
        touched.append(s)
        if len(touched) > _MAX_TOUCHED:
            self.settle()

    def settle(self) -> None:
        """Bring the eviction order up to date with the touches recorded since the last
        call: each touched session moves to the end, in the order of its last touch."""
        touched = self.touched
        if not touched:
            return
        sessions = self.sessions
        last_first = list(dict.fromkeys(reversed(touched)))
        touched.clear()
        for s in reversed(last_first):
            k = s.key
            if sessions.get(k) is s:
                del sessions[k]
                sessions[k] = s

    def alias(self, s: Session, key: object, tag: int, max_aliases: int = 64) -> None:
        """Tie ``key`` to ``s`` with ``tag``; a key another session had is taken over."""
        old = self.aliases.get(key)
        if old is not None and old[0] is s:
            return
        self.aliases[key] = (s, tag)
        if not s.aliases:
            s.aliases = [key]
        elif len(s.aliases) < max_aliases:
            s.aliases.append(key)  # type: ignore[union-attr]

    # -- packets ---------------------------------------------------------------------
    def hold(self, s: Session, pkt: Pkt, tag: int, summary: object = None, token=None) -> int:
        """Keep a packet of an undecided session (or count it when there is no room);
        its index in the session's buffer, or -1."""
        rec = pkt[3]
        size = len(rec) + 3
        lim = self.limits
        limit = lim.max_held_packets
        if tag == self.message_tag:
            limit *= lim.message_hold_factor
        per = lim.max_held_session_bytes
        if (
            s.buf_n >= limit
            or self.held_bytes + size > lim.max_held_bytes
            or (per and s.buf_bytes + size > per)
        ):
            self.buffer_full += 1
            return -1
        k = s.buf_n
        if not k:  # the first: its own buffers
            s.buf = []
            s.buf_if = array("H")
            s.buf_tag = bytearray()
            s.buf_sum = {}
        if token is not None:
            if s.buf_tok is None:
                s.buf_tok = {}
            s.buf_tok[k] = token
        # The record is kept as it is (a view of the chunk) and copied into the buffer
        # with the others of its chunk by commit(): one copy per session and chunk.
        views = s.buf_views
        if views is None:
            s.buf_views = [rec]
            self._uncommitted.append(s)
        else:
            views.append(rec)
        s.buf_if.append(pkt[4])
        s.buf_tag.append(tag)
        if summary is not None:
            s.buf_sum[k] = summary
        s.buf_n = k + 1
        s.buf_bytes += size
        self.held_bytes += size
        return k

    def commit(self) -> None:
        """Copy the records held since the last call into their sessions' buffers: the
        chunk they are views of may go once its processing ends (a mode calls this at
        the end of every chunk)."""
        pending = self._uncommitted
        if not pending:
            return
        for s in pending:
            views = s.buf_views
            if views is not None:
                s.buf_views = None
                s.buf.append(b"".join(views))  # type: ignore[union-attr]
        pending.clear()

    @staticmethod
    def held_records(s: Session) -> list[tuple[bytes | memoryview, int]]:
        """Where each record ``s`` holds lies, in hold order: ``(part, offset)`` of its
        pcap record header (the chunk being processed included: its records are still
        views of it, good until its processing ends)."""
        out = []
        for part in (*s.buf, *(s.buf_views or ())):
            off = 0
            n = len(part)
            while off < n:
                out.append((part, off))
                off += 16 + _REC.unpack_from(part, off)[2]
        return out

    def summarise(self, s: Session, k: int, summary: object) -> None:
        """Give the held packet ``k`` of ``s`` a message's summary (kept: the first)."""
        if 0 <= k < s.buf_n and summary is not None:
            s.buf_sum.setdefault(k, summary)

    def message_frames(
        self, s: Session, frames: list, summary: object, meta: object, out: Out
    ) -> None:
        """The frames of one message of ``s``: forwarded (``meta``), held or counted.

        ``frames`` holds frames, or :class:`lc.common.flow.Frame` tokens of frames
        that may be shared with another message (forwarded at most once).
        """
        tag = self.message_tag
        pk, by = s.pk, s.by
        st = s.state
        for f in frames:
            if type(f) is tuple:
                pk[tag] += 1
                by[tag] += f[1]
                if st == MATCHED:
                    out.add(f, meta)  # type: ignore[arg-type]
                elif st == UNDECIDED:
                    self.hold(s, f, tag, summary)
                else:
                    self.unmatched_packets += 1
                continue
            pkt = f.frame
            first = not f.claims
            f.claims += 1
            if s in f.holders:
                continue  # this session has it already
            pk[tag] += 1
            by[tag] += pkt[1]
            if st == MATCHED:
                if not f.done:
                    f.done = True
                    out.add(pkt, meta)  # type: ignore[arg-type]
            elif st == UNDECIDED:
                if not f.done:
                    if f.holders:
                        f.holders.append(s)  # type: ignore[union-attr]
                    else:
                        f.holders = [s]
                    self.hold(s, pkt, tag, summary, f)
            elif first:
                self.unmatched_packets += 1

    def decide(self, s: Session, ids: list[str], out: Out) -> None:
        """``s`` matched the filters ``ids``: forward what it holds, in capture order."""
        if self.on_deciding is not None:
            self.on_deciding(s)
        s.state = MATCHED
        s.ids = ids
        self.counters["matched"] += 1
        tags = s.buf_tag
        ifs = s.buf_if
        sums = s.buf_sum
        toks = s.buf_tok
        metas = s.metas
        meta_of = self.meta
        for k, (part, off) in enumerate(self.held_records(s)):
            sec, nsec, cap, orig = _REC.unpack_from(part, off)
            tag = tags[k]
            summary = sums.get(k) if sums else None
            if summary is not None:
                meta = meta_of(s, tag, summary)
            else:
                meta = metas[tag]
                if meta is None:
                    meta = metas[tag] = meta_of(s, tag, None)
            tok = toks.get(k) if toks is not None else None
            if tok is None or not tok.done:
                if tok is not None:
                    tok.done = True
                rec = memoryview(part)[off : off + 16 + cap]
                out.add((sec * 1_000_000_000 + nsec, cap, orig, rec, ifs[k]), meta)
        self._drop_held(s)
        if self.on_decided is not None:
            self.on_decided(s)

    def reject(self, s: Session) -> None:
        """Stop holding ``s``: its buffer goes (counted), later messages are still judged."""
        if self.on_deciding is not None:
            self.on_deciding(s)
        s.state = REJECTED
        self.counters["rejected"] += 1
        self.unmatched_packets += self._drop_held(s)
        if self.on_decided is not None:
            self.on_decided(s)

    def _drop_held(self, s: Session) -> int:
        n = s.buf_n
        self.held_bytes -= s.buf_bytes
        s.buf = _NO_PARTS
        s.buf_tag = _NO_BYTES
        s.buf_if = _NO_IFS
        s.buf_sum = _NO_SUMS  # type: ignore[assignment]
        s.buf_tok = None
        s.buf_views = None
        s.buf_n = s.buf_bytes = 0
        return n

    # -- time ------------------------------------------------------------------------
    def expire(self, now: int) -> None:
        """Forget sessions ended ``grace_ns`` ago or idle ``idle_timeout_ns``; reject
        those held ``decide_timeout_ns`` without a match."""
        self.settle()
        lim = self.limits
        grace, idle, decide = lim.grace_ns, lim.idle_timeout_ns, lim.decide_timeout_ns
        gone = [
            s
            for s in self.sessions.values()
            if (s.end_ns and now - s.end_ns > grace)
            or now - s.last_ns > idle
            or (s.state == UNDECIDED and now - s.first_ns > decide)
        ]
        counters = self.counters
        for s in gone:
            if s.state == UNDECIDED and not s.end_ns and now - s.last_ns <= idle:
                self.reject(s)  # held too long: stop holding, keep following
                continue
            counters["ended" if s.end_ns and now - s.end_ns > grace else "idle"] += 1
            self.forget(s)

    def forget(self, s: Session, evicted: bool = False) -> None:
        """Remove ``s`` (and its aliases); an unmatched session's held packets count
        (as ``evicted_packets`` when it leaves to make room)."""
        if s.state != MATCHED:
            self.counters["unmatched"] += 1
            if evicted:
                self.evicted_packets += self._drop_held(s)
            else:
                self.unmatched_packets += self._drop_held(s)
        aliases = self.aliases
        for key in s.aliases:
            hit = aliases.get(key)
            if hit is not None and hit[0] is s:
                del aliases[key]
        self.sessions.pop(s.key, None)
        if self.on_forget is not None:
            self.on_forget(s)

    def finish(self) -> None:
        """The end of the capture: every session goes."""
        self.settle()
        for s in list(self.sessions.values()):
            self.forget(s)

    # -- figures ---------------------------------------------------------------------
    def figures(self, noun: str) -> dict[str, int]:
        """Counters named for the mode's sessions (``calls_created``, ...)."""
        out = {f"{noun}_{k}": v for k, v in self.counters.items()}
        states = [0, 0, 0]
        held = 0
        for s in self.sessions.values():
            states[s.state] += 1
            held += s.buf_n
        out[f"{noun}_active"] = len(self.sessions)
        for name, n in zip(STATE_NAMES, states, strict=True):
            out[f"{noun}_{name}_now"] = n
        out["unmatched_packets"] = self.unmatched_packets
        out["buffer_full"] = self.buffer_full
        out["buffered_bytes"] = self.held_bytes
        out["buffered_packets"] = held
        return out
