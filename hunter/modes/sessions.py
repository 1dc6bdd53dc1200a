"""A protocol mode made of a dissector: the per-chunk loop every session mode shares.

:class:`SessionMode` implements :class:`~lc.hunter.modes.base.Mode` on top of the
flow layer (:mod:`lc.common.flow`) and the session layer (:mod:`lc.hunter.session`);
a protocol supplies only a :class:`Dissector`. What a packet is, in this order:

* **a message**: UDP or TCP with a port in ``Dissector.ports``. UDP datagrams are
  parsed whole (IPv4/IPv6 fragments are reassembled first, and every fragment frame
  belongs to the message); TCP is reassembled per direction and framed by the
  dissector's framer, and each frame belongs to the message(s) its bytes carry.
  Frames of TCP connections that carry no bytes (handshakes, pure ACKs) belong to
  nothing (``tcp_no_message``).
* **an alias's packet**: UDP whose destination or source (address, port) a session
  claimed (:meth:`SessionTable.alias`), e.g. RTP at an endpoint an SDP announced.
  Its tag comes from the alias; ``Dissector.demux`` may switch it by one payload byte
  (RTP/RTCP multiplexing, RFC 5761). This is the hot path: untagged Ethernet/IPv4/UDP
  is read with one ``unpack_from`` (:data:`lc.common.flow.PEEK_IPV4`) and one or two
  dict look-ups, no call per packet.
* anything else is not forwarded (``unassociated``).

A message is parsed (``malformed`` when it cannot be), finds or opens its session
(``session_key``), updates the dissector's view of it (``on_message``: aliases,
parties, state), and while the session is not matched, is matched against the filters
with the values the dissector gives (``filter_values``; the packet's addresses are
added for ``ip_address``). A match forwards what the session held, then its frames;
``settled`` (or ``decide_timeout``) rejects an undecided session. ``after_message``
sets the end (``Session.end_ns``). Sessions leave the table ``grace`` after their
end, when idle, evicted, or at the end of the capture; then the dissector describes
them as an Event: always for matched sessions (``captured``), and with
``--events all`` for the others too (``captured`` false, no filter ids).

With no filter at all, the policy decides: ``deny`` matches nothing, ``allow``
every session. Clocks are capture timestamps, so a replay behaves as the live capture
did; :meth:`SessionMode.tick` moves time on when no packet comes.

**Whole-connection capture** (``Dissector.capture_unit = "connection"``; TLS, HTTP,
email, DNS over TCP). A TCP connection with a port in ``ports`` is one session, keyed
by its canonical 5-tuple (:func:`lc.common.flow.flow_key`) and named by
:func:`lc.common.flow.connection_id` (5-tuple and first-seen time), and **every** frame
of it belongs to it from the first one seen: SYN, SYN-ACK, pure ACKs, data, FIN/RST,
retransmissions, both directions, and ICMP/ICMPv6 errors quoting one of its segments
(:func:`lc.common.flow.icmp_quoted_flow`; a dissector's ``kernel_bpf`` lets them through
if it wants them live). Each frame is placed at once, in capture order: held
in the connection's buffer while undecided, forwarded while matched (with the
connection's metadata, ``meta(s, message_tag, None)``), counted (filtered) while
rejected. The bytes are still reassembled and framed per direction by
``new_framer()``; each message (several per connection: HTTP keep-alive, SMTP
transactions) goes through ``on_message``, ``filter_values``, ``settled``,
``message_event`` and ``after_message`` with the connection's session (``session_key``
is not used). A message that matches flushes the held frames (those of the messages
so far carry their summary, ``meta(s, tag, summary(msg))``) and every later frame is
forwarded at once; a frame that completes a message within the chunk being forwarded
carries that message's summary, frames forwarded in earlier chunks keep the
connection's metadata. ``settled`` true (e.g. after the TLS ServerHello, an HTTP
transaction, the end of an SMTP message) or ``decide_timeout`` rejects: the buffer is
dropped (``filtered``) and frames are no longer held, but later messages are still
judged, and a later match captures the rest of the connection **from the frame that
completes the matching message** on (what is missing: everything from the connection's
start, or from the rejection, to that frame, including the matching message's earlier
segments). An ``ip_address`` filter (or the ``allow`` policy without filters) decides at
the first packet.

The end: FIN in both directions or a RST sets ``end_ns``; the connection leaves the
table ``grace`` later (late ACKs and retransmissions in between still follow it), or
when idle ``idle_timeout``, or evicted (least recently active first among those not
matched: ``evicted``); a later packet of the 5-tuple opens a new connection, picked up
mid-stream, as does a new SYN on an ended one's 5-tuple (``connections_reused``). Seen
mid-stream (no SYN), a connection is oriented with the protocol's port as the server.
Bounds: ``max_sessions`` connections, ``max_held_session_bytes`` and
``max_held_packets`` per connection (times ``message_hold_factor``: every frame has the
message tag), ``max_held_bytes`` overall (``buffer_full``; a frame not held for want of
room still goes if its own message matches). With ``udp_flows`` a UDP flow (5-tuple)
on ``ports`` is a connection too (QUIC): each datagram is parsed as a message, a
malformed one still belongs to it, and it ends by idleness (or ``end_ns`` set by the
dissector); without it, UDP on ``ports`` goes to ``session_key`` sessions if the
dissector defines it (DNS), else belongs to nothing, and the default kernel filter is
its ports over TCP. A message's direction: ``flow[:2] == s.flow[:2]`` for the
initiator's (``s.flow`` is the connection's, initiator first: the SYN's sender, else
the side not on ``ports``). ``ignore_rest(s)`` (from ``on_message``) says no later
message of ``s`` matters (TLS after the handshake): its streams are dropped, and its
frames (still following its decision) skip the decoder: the per-chunk loop places
IPv4-over-Ethernet ones directly, as the alias hot path does.

Events: ``message_event`` gives one per message (a handshake, a transaction);
the engine fills in dataset, session id, times and flow if unset, and sends it once the
connection is decided, with ``captured`` and the filter ids (rejected or never decided:
only with ``--events all``; at most :data:`MAX_WAITING_EVENTS` wait per connection,
``events_dropped``); ``session_events = False`` turns off the per-session event of
``describe``.
"""

from __future__ import annotations

import struct
import threading

from lc.common.decode import LINKTYPE_RAW, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, decode_packet
from lc.common.errors import ParseError
from lc.common.filters import FilterSet
from lc.common.flow import (
    PEEK_IPV4,
    PEEK_OFFSET,
    UDP4_PAYLOAD,
    Fragments,
    Frame,
    Framer,
    TcpStreams,
    connection_id,
    endpoint_key,
    flow_key,
    icmp_quoted_flow,
)
from lc.hunter.capture import Chunk
from lc.hunter.modes.base import EMPTY, Forward, Mode, ModeContext, ModeCounters
from lc.hunter.session import (
    _MAX_TOUCHED,
    MATCHED,
    REJECTED,
    UNDECIDED,
    Out,
    Session,
    SessionLimits,
    SessionTable,
)
from lc.proto import lc_pb2

__all__ = ["CF_SLOW", "IP_FRAGMENTS", "Dissector", "SessionMode", "set_flow"]

_LT_ETHERNET = 1
# Session.cflags of a connection: FIN from its lower / higher endpoint (canonical key
# order), RST, streams dropped.
_FIN_LO, _FIN_HI, _RST, _STREAMS_DROPPED = 1, 2, 4, 16
#: Session.cflags: no more messages wanted from this connection (the dissector's
#: ignore_rest); a mode may read it.
CF_NO_MESSAGES = 8
#: Session.cflags: a mode's hooks want this connection's frames on the general path
#: (e.g. HTTP while the server's FIN waits for the bytes before it), not the in-order one.
CF_SLOW = 32
_LIVE = 64  # its raw keys are in SessionMode._conn_live
#: Events of one undecided session waiting for its decision (more are counted).
MAX_WAITING_EVENTS = 64
#: From frame offset 12: ethertype, version/IHL, flags and fragment offset, then the
#: 12 raw bytes of IPv4 source, destination, source and destination port (a fast
#: connection's key).
_PEEK_KEY = struct.Struct("!HB5xH4x12s")
#: The same with the IPv4 total length, and at frame offset 38 the TCP sequence number,
#: data offset and flags (frame offsets 12 to 48).
_PEEK_KEY_FLAGS = struct.Struct("!HBxH2xH4x12sI4xBB")
#: From frame offset 16: the IPv4 total length, the TCP sequence number and data offset.
_PEEK_SEQ = struct.Struct("!H20xI4xB")
_PORTS = struct.Struct("!HH")
#: Kernel BPF for IP fragments (IPv4 MF or offset; an IPv6 fragment header first).
IP_FRAGMENTS = "(ip and ip[6:2] & 0x3fff != 0) or (ip6 and ip6[6] == 44)"


def _from_lower(k: bytes) -> bool:
    """Whether the sender of a packet with raw key ``k`` (IPv4 source, destination,
    source port, destination port: big-endian, so bytes order as numbers) is its
    connection's lower endpoint (:func:`lc.common.flow.flow_key`)."""
    return k[:4] + k[8:10] <= k[4:8] + k[10:12]


def set_flow(ev: lc_pb2.Event, flow: tuple) -> None:
    """``ev.flow`` from ``(src, sport, dst, dport, proto)``."""
    src, sport, dst, dport, proto = flow
    f = ev.flow
    f.src_ip = src
    f.dst_ip = dst
    f.src_port = sport
    f.dst_port = dport
    f.ip_proto = proto


class Dissector:
    """What a protocol mode supplies (override what applies; see the module docstring).

    Class attributes: ``protocol`` (the event dataset and the message packets'
    ``PacketMeta.protocol``), ``tags`` (``PacketMeta.protocol`` per packet tag),
    ``message_tag`` (the tag of message packets), ``demux`` (None, or ``(tag, payload
    byte, low, high, new tag)``: an alias packet of ``tag`` whose payload byte lies
    in [low, high] has ``new tag``), ``noun`` (singular and plural, for counter
    names), ``alias_noun`` (the figure counting aliases), ``ports`` (message ports),
    ``streams`` (whether messages also come over TCP, framed by :meth:`new_framer`),
    ``capture_unit`` (``"message"``: a session is what ``session_key`` says;
    ``"connection"``: a TCP connection is one, see the module docstring),
    ``udp_flows`` (with ``"connection"``: a UDP flow on ``ports`` is one too),
    ``session_events`` (whether a session leaving the table gives an event).
    The engine sets ``table`` (the :class:`SessionTable`) before the first packet.
    """

    protocol = "session"
    tags: tuple[str, ...] = ("session",)
    message_tag = 0
    demux: tuple[int, int, int, int, int] | None = None
    noun = ("session", "sessions")
    alias_noun = "aliases"
    ports: frozenset[int] = frozenset()
    streams = True
    capture_unit = "message"
    udp_flows = False
    session_events = True
    level_figures: frozenset[str] = frozenset()  # its figures() that are levels, not totals
    table: SessionTable

    def kernel_bpf(self) -> str:
        """The kernel filter of what the mode wants ("" for everything): by default its
        ports (UDP and TCP) and IP fragments (later fragments carry no ports); a
        connection dissector with no use for UDP (no ``udp_flows``, no ``session_key``),
        its ports over TCP."""
        ports = " or ".join(f"port {p}" for p in sorted(self.ports))
        if not ports:
            return ""
        if not self.wants_udp():
            return f"tcp and ({ports})"
        return f"((udp or tcp) and ({ports})) or {IP_FRAGMENTS}"

    def wants_udp(self) -> bool:
        """Whether UDP on ``ports`` is parsed: as flows (``udp_flows``), or as messages
        of sessions (a message dissector, or one that defines ``session_key``)."""
        return (
            self.capture_unit != "connection"
            or self.udp_flows
            or type(self).session_key is not Dissector.session_key
        )

    def new_framer(self) -> Framer:
        raise NotImplementedError

    def parse(self, payload: memoryview) -> object:
        """One message from a datagram's payload; raises ParseError when malformed."""
        raise NotImplementedError

    def session_key(self, msg: object) -> object:
        raise NotImplementedError

    def new_info(self, msg: object, flow: tuple) -> object:
        """The dissector's own state for a new session (``Session.info``); for a
        connection ``msg`` is None (it opens at its first packet) and ``flow`` is the
        connection's, initiator first as far as known."""
        return None

    def message_event(self, s: Session, msg: object, flow: tuple, ts: int) -> object:
        """An event for this message (an ``lc_pb2.Event`` with its detail), or None.
        The engine fills in what is left unset (dataset, session id, filter ids,
        captured, times, flow) and sends it once the session is decided."""
        return None

    def ignore_rest(self, s: Session) -> None:
        """No later message of connection ``s`` can matter (e.g. TLS after the
        handshake): its bytes are no longer reassembled nor framed; its packets
        still follow the connection's decision."""
        s.cflags |= CF_NO_MESSAGES

    def on_message(self, s: Session, msg: object, flow: tuple, ts: int) -> object:
        """Update the session with a message; returns what ``filter_values`` needs."""
        return None

    def filter_values(self, msg: object, ctx: object) -> tuple[dict[str, object], list]:
        """``(values by filter type, extra addresses for ip_address)``."""
        return {}, []

    def settled(self, s: Session, msg: object) -> bool:
        """True when nothing later would make this undecided session match."""
        return False

    def summary(self, msg: object) -> object:
        """A compact summary of the message, kept while its packets are held."""
        return None

    def after_message(self, s: Session, msg: object, ts: int) -> None:
        """Track the session's end (set ``s.end_ns``)."""

    def meta(self, s: Session, tag: int, summary: object) -> lc_pb2.PacketMeta:
        """The metadata of a forwarded packet (``summary`` only for message packets)."""
        return lc_pb2.PacketMeta(protocol=self.tags[tag], session_id=s.name, filter_ids=s.ids)

    def describe(self, s: Session, ev: lc_pb2.Event) -> None:
        """Fill in the event of a session leaving the table: by default its flow is
        that of its first message; a dissector that knows better (who initiated)
        orients it, and adds its detail."""
        if s.flow is not None:
            set_flow(ev, s.flow)

    def figures(self) -> dict[str, int]:
        return {}


class _Token(Frame):
    """A frame of a connection as the flow layer carries it to its message: its
    session, time, index in the session's buffer (held; -1 not held, -2 not held for
    want of room) or in the chunk's output (forwarded in chunk ``gen``).

    It is its own :class:`lc.common.flow.Frame` on the in-order path
    (:meth:`TcpStreams.in_order` sets its byte range): one object per frame, not two;
    ``frame`` is the token itself, as a Frame's is its caller's object."""

    __slots__ = ("gen", "k", "oi", "pkt", "s", "ts")

    def __init__(self, s: Session, ts: int, k: int, gen: int, oi: int, pkt=None) -> None:
        self.s = s
        self.ts = ts
        self.k = k
        self.gen = gen
        self.oi = oi
        self.pkt = pkt  # the frame being placed, while not held nor forwarded
        self.claims = 0

    @property
    def frame(self) -> _Token:  # type: ignore[override]
        return self


_new = object.__new__


class SessionMode(Mode):
    """A mode built from a dissector (see the module docstring). Thread-safe.

    **The in-order path.** A frame of a connection that still wants its messages,
    untagged Ethernet/IPv4/TCP without SYN, FIN or RST, that starts at the next
    expected byte of its direction (nothing held out of order) is placed by the
    per-chunk loop and its bytes go straight to its direction's framer
    (:meth:`lc.common.flow.TcpStreams.in_order`): no decoding, no reassembly objects,
    the same outputs and counters as the general path (``_slow``, ``_tcp_frame``,
    ``TcpStreams.segment``), which takes everything else. A mode that overrides
    ``_tcp_frame``, ``_connection`` or ``_slow`` keeps the general path for every
    frame unless it sets ``in_order_frames`` (its overrides then must do nothing for
    such a frame but set ``dis.now``, see ``set_now``; a connection that needs them
    has ``CF_SLOW`` in its ``cflags``), and may turn the path off (``_live_ok``).
    """

    #: The mode's overrides are safe for the in-order path (see the class docstring).
    in_order_frames = False
    #: Set ``dis.now`` to the frame's capture time before its bytes are framed.
    set_now = False
    #: On the in-order path, ``dis.tok`` is the frame's token while its bytes are
    #: framed (the frame that carries them all); None otherwise.
    frame_token = False

    def __init__(self, ctx: ModeContext, dissector: Dissector, limits: SessionLimits) -> None:
        self.dis = dissector
        self.interfaces = ctx.interfaces
        self.policy = ctx.policy
        self.events_all = ctx.events == "all"
        self.limits = limits
        self._fs: FilterSet | None = None
        self._lock = threading.Lock()
        if dissector.capture_unit not in ("message", "connection"):
            raise ValueError(f"capture_unit {dissector.capture_unit!r}: message or connection")
        self._conn = dissector.capture_unit == "connection"
        # Hooks a dissector left as they are (None for every message) are not called.
        kind = type(dissector)
        self._summaries = kind.summary is not Dissector.summary
        self._message_events = kind.message_event is not Dissector.message_event
        self._udp_flows = self._conn and dissector.udp_flows
        self._udp = dissector.wants_udp()
        # _tcp_frame finds the connection itself unless a mode extends _connection.
        self._own_connection = type(self)._connection is SessionMode._connection
        self.table = SessionTable(
            limits,
            len(dissector.tags),
            dissector.message_tag,
            dissector.meta,
            self._forgotten,
            self._decided if self._conn else None,
        )
        dissector.table = self.table
        streams_kw = {"max_streams": max(4096, 2 * limits.max_sessions)} if self._conn else {}
        self._streams = (
            TcpStreams(dissector.new_framer, idle_timeout_ns=limits.idle_timeout_ns, **streams_kw)
            if dissector.streams or self._conn
            else None
        )
        # The frame of a connection being placed, which completes any message it yields
        # (a dissector's mode may match it with bpf).
        self._pkt: tuple | None = None
        self._gen = 0  # chunks processed: which Out a frame token's index refers to
        # Connections that ignore the rest (IPv4), by their packets' raw source and
        # destination addresses and ports (12 bytes, one entry per direction): the
        # per-chunk loop places their frames.
        self._conn_fast_tcp: dict[bytes, Session] = {}
        self._conn_fast_udp: dict[bytes, Session] = {}
        # Connections (IPv4 TCP) that still want their messages, by the raw key of
        # each direction's packets: (session, the direction's stream key). The
        # per-chunk loop takes their in-order frames (see the class docstring).
        general = (
            type(self)._tcp_frame is not SessionMode._tcp_frame
            or type(self)._connection is not SessionMode._connection
            or type(self)._slow is not SessionMode._slow
        )
        self._live_capable = (
            self._conn and self._streams is not None and (self.in_order_frames or not general)
        )
        self._live_ok = self._live_capable
        self._conn_live: dict[bytes, tuple[Session, tuple]] = {}
        self._frags = Fragments()
        self._events: list[lc_pb2.Event] = []
        self._clock = 0
        self._next_expiry = 0
        if dissector.demux is None:
            self._demux = (-1, 0, 0, 0, 0)
        else:
            tag, byte, lo, hi, to = dissector.demux
            self._demux = (tag, byte, lo, hi, to)
        self.c = dict.fromkeys(
            ("messages", "malformed", "unassociated", "decode_errors", "forwarded", "events"), 0
        )
        self.cc = dict.fromkeys(("frames", "orphan_messages", "events_dropped", "reused"), 0)

    # -- filters ---------------------------------------------------------------------
    def kernel_filter(self, compiled: FilterSet) -> str:
        return self.dis.kernel_bpf()

    def apply(self, compiled: FilterSet) -> None:
        """Swap in a new filter set. Matched sessions stay matched; others are judged by
        the new set from their next message on."""
        self._fs = compiled

    # -- chunks ----------------------------------------------------------------------
    def process(self, chunk: Chunk) -> Forward:
        """The packets to forward now (this chunk's and any flushed from session
        buffers, in capture order), their metadata, and the events of sessions that
        ended."""
        with self._lock:
            out = Out()
            self._gen += 1
            self._process(chunk, out)
            if self._clock >= self._next_expiry:
                self._expire(self._clock, out)
            table = self.table
            table.settle()
            table.commit()  # the records held from this chunk: copied before it goes
            return self._forward(out)

    def tick(self, now_ns: int) -> Forward:
        """Time passes without packets (live capture, wall clock)."""
        with self._lock:
            if now_ns > self._clock:
                self._clock = now_ns
            if self._clock < self._next_expiry:
                return EMPTY
            out = Out()
            self._gen += 1
            self._expire(self._clock, out)
            self.table.commit()
            return self._forward(out)

    def finish(self) -> Forward:
        """End of capture: the streams' last bytes are framed, every session leaves."""
        with self._lock:
            out = Out()
            self._gen += 1
            if self._streams is not None:
                for key, msg, frames in self._streams.close_all():
                    self._stream_message(key, msg, frames, out, self._clock)
            self.table.finish()
            return self._forward(out)

    def _forward(self, out: Out) -> Forward:
        self.c["forwarded"] += len(out)
        events = self._events
        if events:
            self._events = []
        elif not len(out):
            return EMPTY
        return Forward(out.chunk(), out.meta, events)

    def _process(self, chunk: Chunk, out: Out) -> None:
        interfaces = self.interfaces
        single = chunk.iface if isinstance(chunk.iface, int) else None
        rec = chunk.records
        mv = memoryview(rec)
        ports = self.dis.ports
        aliases = self.table.aliases
        unpack = PEEK_IPV4.unpack_from
        ts_col, cap_col, orig_col = chunk.ts_ns, chunk.caplen, chunk.origlen
        unassociated = unmatched = 0
        lt = interfaces[single][1] if single is not None else 0
        # Locals: read once per packet below.
        ethernet, matched, rejected = _LT_ETHERNET, MATCHED, REJECTED
        peek_at = 16 + PEEK_OFFSET
        dtag, dbyte, dlo, dhi, dto = self._demux
        dcap = UDP4_PAYLOAD + dbyte  # the byte is captured when caplen > dcap
        dat = 16 + dcap
        hold = self.table.hold
        meta_of = self.dis.meta
        count_rejected = self.events_all  # their packet counts go only into their events
        iface_col = chunk.iface
        ifx = single
        fast_tcp = self._conn_fast_tcp
        fast_udp = self._conn_fast_udp
        peek_tcp = _PEEK_KEY.unpack_from
        peek_tcp_flags = _PEEK_KEY_FLAGS.unpack_from
        table = self.table
        touched = table.touched
        touch = touched.append
        if len(touched) > _MAX_TOUCHED:
            table.settle()
        ctag = self.dis.message_tag
        live = self._conn_live if self._live_ok else None
        if live is not None:
            # The in-order path's locals (see the class docstring).
            dis = self.dis
            set_now = self.set_now
            frame_token = self.frame_token
            streams = self._streams
            in_order = streams.in_order  # type: ignore[union-attr]
            gen = self._gen
            slow_flags = CF_NO_MESSAGES | CF_SLOW
            # SessionTable.hold's bounds for a message-tagged frame (see below).
            lim = self.limits
            hold_n = lim.max_held_packets * lim.message_hold_factor
            hold_all = lim.max_held_bytes
            hold_per = lim.max_held_session_bytes
        conn_frames = 0
        off = 0
        for i, cap in enumerate(cap_col):
            start = off
            off += 16 + cap
            if single is None:
                ifx = iface_col[i]
                lt = interfaces[ifx][1]
            if lt == ethernet and cap >= 48 and (fast_tcp or live) and rec[start + 39] == 6:
                # A TCP connection whose messages no longer matter (ignore_rest): the
                # bulk of TLS, placed with one look-up by the raw addresses and ports
                # (untagged Ethernet, IPv4 without options, not a fragment). A SYN
                # takes the decoding path: it may open a new connection on the
                # 5-tuple of one that ended (_connection).
                etype, vihl, total, frag, k, seq, doff, fl = peek_tcp_flags(rec, start + 28)
                if etype != 0x0800 or vihl != 0x45 or frag & 0x3FFF:
                    pass
                elif live and not fl & 7 and cap >= 54 and (hit := live.get(k)) is not None:
                    # A connection that wants its messages: its in-order frames. This is
                    # _tcp_frame without decoding (an existing connection, not a SYN,
                    # FIN nor RST), its bytes framed by TcpStreams.in_order when they
                    # come in order (else the general segment).
                    s, key = hit
                    end = 14 + total
                    if end > cap:
                        end = cap
                    po = 34 + ((doff >> 4) << 2)
                    ts = ts_col[i]
                    pkt = (ts, cap, orig_col[i], mv[start:off], ifx)
                    if total < 28 or not 54 <= po <= end or s.cflags & slow_flags:
                        self._slow(pkt, lt, mv[start + 16 : off], out)
                        continue
                    touch(s)
                    s.last_ns = ts
                    if set_now:
                        dis.now = ts
                    self._pkt = pkt
                    s.pk[ctag] += 1
                    s.by[ctag] += cap
                    conn_frames += 1
                    n = end - po
                    tok = None
                    st = s.state
                    if st == matched:
                        meta = s.metas[ctag]
                        if meta is None:
                            meta = s.metas[ctag] = meta_of(s, ctag, None)
                        if n:
                            tok = _new(_Token)
                            tok.k = -1
                            tok.oi = len(out)
                            tok.pkt = None
                        out.add(pkt, meta)
                    elif st == rejected:
                        unmatched += 1
                        if n:
                            tok = _new(_Token)
                            tok.k = tok.oi = -1
                            tok.pkt = pkt
                    else:
                        # SessionTable.hold, inline for a session that holds frames of
                        # this chunk already (the usual case; else the call).
                        size = cap + 19
                        hk = s.buf_n
                        views = s.buf_views
                        if (
                            views is not None
                            and hk < hold_n
                            and table.held_bytes + size <= hold_all
                            and (not hold_per or s.buf_bytes + size <= hold_per)
                        ):
                            views.append(pkt[3])
                            s.buf_if.append(ifx)  # type: ignore[union-attr]
                            s.buf_tag.append(ctag)  # type: ignore[union-attr]
                            s.buf_n = hk + 1
                            s.buf_bytes += size
                            table.held_bytes += size
                        else:
                            hk = hold(s, pkt, ctag)
                        if n:
                            tok = _new(_Token)
                            tok.oi = -1
                            if hk >= 0:
                                tok.k = hk
                                tok.pkt = None
                            else:
                                tok.k = -2  # counted as buffer_full
                                tok.pkt = pkt
                    if tok is None:
                        payload = b""
                    else:
                        tok.s = s
                        tok.ts = ts
                        tok.gen = gen
                        tok.claims = 0
                        at = start + 16
                        payload = bytes(mv[at + po : at + end])
                    if frame_token:
                        dis.tok = tok
                        msgs = in_order(ts, key, seq, payload, tok)
                        dis.tok = None
                    else:
                        msgs = in_order(ts, key, seq, payload, tok)
                    if msgs is None:
                        data = mv[start + 16 : off]
                        msgs = streams.segment(ts, tok, decode_packet(lt, data), data)  # type: ignore[union-attr]
                        if msgs:
                            self._live_messages(s, key, msgs, out, ts)
                    elif msgs:
                        # In order: its own direction's messages only.
                        for _, msg, frames in msgs:
                            self._conn_stream_message(key, msg, frames, out, ts, s)
                    if tok is not None:
                        tok.pkt = None
                    cf = s.cflags
                    if cf & CF_NO_MESSAGES and not cf & _STREAMS_DROPPED:
                        self._drop_streams(s, key)
                    continue
                elif fast_tcp and not fl & 2:
                    s = fast_tcp.get(k)
                    if s is not None:
                        ts = ts_col[i]
                        s.last_ns = ts
                        touch(s)
                        conn_frames += 1
                        st = s.state
                        if st == rejected:
                            # The bulk: connections no filter wanted. Their counts
                            # go only into their events (--events all).
                            unmatched += 1
                            if count_rejected:
                                s.pk[ctag] += 1
                                s.by[ctag] += cap
                            if fl & 5:  # FIN or RST
                                self._conn_end(s, fl, _from_lower(k), ts)
                            continue
                        s.pk[ctag] += 1
                        s.by[ctag] += cap
                        if st == matched:
                            meta = s.metas[ctag]
                            if meta is None:
                                meta = s.metas[ctag] = meta_of(s, ctag, None)
                            out.add((ts, cap, orig_col[i], mv[start:off], ifx), meta)
                        else:
                            hold(s, (ts, cap, orig_col[i], mv[start:off], ifx), ctag)
                        if fl & 5:  # FIN or RST
                            self._conn_end(s, fl, _from_lower(k), ts)
                        continue
            # Fast path: Ethernet, untagged IPv4 without options, not a fragment, UDP,
            # not a message port: an alias's packet, or nothing. (Both tests below want
            # UDP: frame byte 23, the IPv4 protocol, is read first.)
            if lt == ethernet and cap >= 38 and rec[start + 39] == 17:
                etype, vihl, frag, proto, src, dst, sport, dport = unpack(rec, start + peek_at)
                if (
                    etype == 0x0800
                    and vihl == 0x45
                    and not frag & 0x3FFF
                    and proto == 17
                    and sport not in ports
                    and dport not in ports
                ):
                    hit = aliases.get(dst << 16 | dport) or aliases.get(src << 16 | sport)
                    if hit is None:
                        unassociated += 1
                        continue
                    s, tag = hit
                    ts = ts_col[i]
                    s.last_ns = ts
                    st = s.state
                    if st == rejected:
                        # The bulk of the traffic: media of calls no filter wanted.
                        unmatched += 1
                        if not count_rejected:
                            continue
                    if tag == dtag and cap > dcap and dlo <= rec[start + dat] <= dhi:
                        tag = dto
                    s.pk[tag] += 1
                    s.by[tag] += cap
                    if st == rejected:
                        continue
                    if st == matched:
                        meta = s.metas[tag]
                        if meta is None:
                            meta = s.metas[tag] = meta_of(s, tag, None)
                        out.add((ts, cap, orig_col[i], mv[start:off], ifx), meta)
                    else:
                        hold(s, (ts, cap, orig_col[i], mv[start:off], ifx), tag)
                    continue
                if (
                    fast_udp
                    and proto == 17
                    and etype == 0x0800
                    and vihl == 0x45
                    and not frag & 0x3FFF
                    and cap >= 48
                ):
                    # A QUIC flow whose messages no longer matter (ignore_rest).
                    s = fast_udp.get(peek_tcp(rec, start + 28)[3])
                    if s is not None:
                        ts = ts_col[i]
                        s.last_ns = ts
                        touch(s)
                        s.pk[ctag] += 1
                        s.by[ctag] += cap
                        conn_frames += 1
                        st = s.state
                        if st == rejected:
                            unmatched += 1
                        elif st == matched:
                            meta = s.metas[ctag]
                            if meta is None:
                                meta = s.metas[ctag] = meta_of(s, ctag, None)
                            out.add((ts, cap, orig_col[i], mv[start:off], ifx), meta)
                        else:
                            hold(s, (ts, cap, orig_col[i], mv[start:off], ifx), ctag)
                        continue
            pkt = (ts_col[i], cap, orig_col[i], mv[start:off], ifx)
            self._slow(pkt, lt, mv[start + 16 : off], out)
        c = self.c
        c["unassociated"] += unassociated
        self.cc["frames"] += conn_frames
        self.table.unmatched_packets += unmatched
        if len(ts_col):
            last = ts_col[len(ts_col) - 1]
            if last > self._clock:
                self._clock = last

    def _live_messages(self, s: Session, key: tuple, msgs: list, out: Out, ts: int) -> None:
        """The messages a frame of ``s`` (direction ``key``) completed on the general
        path: its connection's, and any other stream's the reassembler flushed."""
        rev = (key[2], key[3], key[0], key[1])
        for mkey, msg, frames in msgs:
            own = mkey in (key, rev)
            self._conn_stream_message(mkey, msg, frames, out, ts, s if own else None)

    def _drop_streams(self, s: Session, key: tuple) -> None:
        """``s`` wants no more messages (from the frame that completed the one that said
        so): its streams go, its frames skip the decoder."""
        s.cflags |= _STREAMS_DROPPED
        streams = self._streams
        streams.drop(key)  # type: ignore[union-attr]
        streams.drop((key[2], key[3], key[0], key[1]))  # type: ignore[union-attr]
        self._go_fast(s)

    def _alias_packet(self, s: Session, tag: int, pkt: tuple, out: Out) -> None:
        s.last_ns = pkt[0]
        st = s.state
        if st != REJECTED or self.events_all:
            s.pk[tag] += 1
            s.by[tag] += pkt[1]
        if st == MATCHED:
            meta = s.metas[tag]
            if meta is None:
                meta = s.metas[tag] = self.dis.meta(s, tag, None)
            out.add(pkt, meta)
        elif st == UNDECIDED:
            self.table.hold(s, pkt, tag)
        else:
            self.table.unmatched_packets += 1

    # -- everything but an alias's plain UDP ---------------------------------------------
    def _slow(self, pkt: tuple, lt: int, data: memoryview, out: Out) -> None:
        try:
            d = decode_packet(lt, data)
        except ParseError:
            self.c["decode_errors"] += 1
            return
        if d.is_fragment:
            self._fragment(pkt, lt, data, d, out)
            return
        ports = self.dis.ports
        if d.proto == 17:
            if d.sport in ports or d.dport in ports:
                payload = data[d.payload_offset : d.payload_offset + d.payload_len]
                if self._udp_flows:
                    self._udp_flow([pkt], payload, (d.src, d.sport, d.dst, d.dport, 17), out)
                elif self._udp:
                    self._datagram([pkt], payload, (d.src, d.sport, d.dst, d.dport, 17), out)
                else:
                    self.c["unassociated"] += 1
                return
            aliases = self.table.aliases
            hit = aliases.get(endpoint_key(d.dst, d.dport)) or aliases.get(
                endpoint_key(d.src, d.sport)
            )
            if hit is None:
                self.c["unassociated"] += 1
                return
            s, tag = hit
            dtag, dbyte, dlo, dhi, dto = self._demux
            if (
                tag == dtag
                and d.payload_len > dbyte
                and dlo <= data[d.payload_offset + dbyte] <= dhi
            ):
                tag = dto
            self._alias_packet(s, tag, pkt, out)
            return
        if d.proto == 6 and self._streams is not None and (d.sport in ports or d.dport in ports):
            if self._conn:
                self._tcp_frame(pkt, d, data, out)
                return
            held = (*pkt[:3], bytes(pkt[3]), pkt[4])
            for key, msg, frames in self._streams.segment(pkt[0], held, d, data):
                self._stream_message(key, msg, frames, out, pkt[0])
            return
        if self._conn and (d.proto == 1 or d.proto == 58) and self._icmp_error(pkt, d, data, out):
            return
        self.c["unassociated"] += 1

    def _icmp_error(self, pkt: tuple, d, data: memoryview, out: Out) -> bool:
        """An ICMP error quoting a packet of a known connection (a path MTU "fragmentation
        needed", a TTL expiry) is one of its frames: forwarded or held with them, never
        fed to its streams and no sign of life (Wireshark gives it the connection's
        ``tcp.stream``)."""
        flow = icmp_quoted_flow(d.proto, data[d.payload_offset : d.payload_offset + d.payload_len])
        if flow is None:
            return False
        key, _ = flow_key(*flow)
        s = self.table.sessions.get(key)
        if s is None:
            return False
        self._place(s, pkt, out)  # counted in connection_frames
        return True

    def _fragment(self, pkt: tuple, lt: int, data: memoryview, d, out: Out) -> None:
        held = pkt if isinstance(pkt[3], bytes) else (*pkt[:3], bytes(pkt[3]), pkt[4])
        done = self._frags.feed(pkt[0], held, lt, data, d)
        if done is None:
            return
        whole, frames = done
        try:
            dd = decode_packet(LINKTYPE_RAW, whole)
        except ParseError:
            self.c["decode_errors"] += 1
            return
        ports = self.dis.ports
        if dd.proto == 17 and (dd.sport in ports or dd.dport in ports):
            payload = memoryview(whole)[dd.payload_offset : dd.payload_offset + dd.payload_len]
            flow = (dd.src, dd.sport, dd.dst, dd.dport, 17)
            if self._udp_flows:
                self._udp_flow(frames, payload, flow, out)
            elif self._udp:
                self._datagram(frames, payload, flow, out)
            else:
                self.c["unassociated"] += len(frames)
        else:
            self.c["unassociated"] += len(frames)

    def _datagram(self, frames: list, payload, flow: tuple, out: Out) -> None:
        try:
            msg = self.dis.parse(payload)
        except ParseError:
            self.c["malformed"] += 1
            return
        self._message(msg, frames, flow, out, frames[-1][0])

    def _stream_message(self, key: tuple, msg: object, frames: list, out: Out, ts: int) -> None:
        if self._conn:
            self._conn_stream_message(key, msg, frames, out, ts)
            return
        if frames:
            last = frames[-1]
            ts = (last.frame if isinstance(last, Frame) else last)[0]
        self._message(msg, frames, (*key, 6), out, ts)

    # -- messages ----------------------------------------------------------------------
    def _message(self, msg: object, frames: list, flow: tuple, out: Out, ts: int) -> None:
        self.c["messages"] += 1
        dis = self.dis
        table = self.table
        key = dis.session_key(msg)
        s = table.sessions.get(key)
        if s is None:
            # Also a message of a session whose start was not seen (a hunter started
            # mid-session): it is followed and judged like any other.
            s = table.open(key, ts, dis.new_info(msg, flow))
            s.flow = flow
        else:
            table.touch(s)
        s.last_ns = ts
        ctx = dis.on_message(s, msg, flow, ts)
        if s.state != MATCHED:
            ids = self._match(msg, ctx, flow)
            if ids is not None:
                table.decide(s, ids, out)
            elif s.state == UNDECIDED and (
                ts - s.first_ns > self.limits.decide_timeout_ns or dis.settled(s, msg)
            ):
                # Settled without a match: stop holding. The frames of this very
                # message are still judged below.
                table.reject(s)
        summary = dis.summary(msg)
        meta = dis.meta(s, dis.message_tag, summary) if s.state == MATCHED else None
        table.message_frames(s, frames, summary, meta, out)
        dis.after_message(s, msg, ts)

    def _match(self, msg: object, ctx: object, flow: tuple) -> list[str] | None:
        fs = self._fs
        if fs is None or not len(fs):
            return [] if self.policy == "allow" else None
        fields, addrs = self.dis.filter_values(msg, ctx)
        ids = fs.match_fields(fields)
        if fs.has("ip_address"):
            ids |= fs.match_ip([flow[0], flow[2], *addrs])
        return sorted(ids) if ids else None

    # -- connections (capture_unit "connection") ------------------------------------------
    def _connection(self, flow: tuple, ts: int, flags: int, out: Out) -> Session:
        """The connection ``flow`` (a packet's 5-tuple) belongs to, opened if new."""
        src, sport, dst, dport, proto = flow
        # flow_key, inline: the lower endpoint first.
        key = flow if (src, sport) <= (dst, dport) else (dst, dport, src, sport, proto)
        table = self.table
        s = table.sessions.get(key)
        if s is not None:
            if s.end_ns and flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
                # A new connection on the 5-tuple of one that ended (within its grace).
                self.cc["reused"] += 1
                table.counters["ended"] += 1
                table.forget(s)
            else:
                table.touch(s)
                s.last_ns = ts
                return s
        return self._new_connection(key, flow, ts, flags, out)

    def _new_connection(self, key: tuple, flow: tuple, ts: int, flags: int, out: Out) -> Session:
        """Open the connection ``key`` (canonical) at its packet ``flow``."""
        src, sport, dst, dport, proto = flow
        table = self.table
        dis = self.dis
        ports = dis.ports
        # A SYN tells; seen mid-stream, the side on a port of the protocol is the server.
        syn = flags & TCP_SYN
        initiator = not flags & TCP_ACK if syn else dport in ports or sport not in ports
        oriented = flow if initiator else (dst, dport, src, sport, proto)
        s = table.open(key, ts, dis.new_info(None, oriented), namer=connection_id)
        s.flow = oriented
        if self._live_capable and proto == 6:
            keys = self._fast_keys(s)
            if keys is not None:
                lo, lport, hi, hport, _ = key
                live = self._conn_live
                live[keys[0]] = (s, (lo, lport, hi, hport))
                live[keys[1]] = (s, (hi, hport, lo, lport))
                s.cflags |= _LIVE
        fs = self._fs
        if fs is None or not len(fs):
            if self.policy == "allow":
                table.decide(s, [], out)
        elif fs.has("ip_address"):
            ids = fs.match_ip((src, dst))
            if ids:
                table.decide(s, sorted(ids), out)
        return s

    def _place(self, s: Session, pkt: tuple, out: Out) -> _Token:
        """One frame of connection ``s``: forwarded, held or counted, at once. A frame
        neither held nor forwarded (rejected, no room) keeps ``pkt`` in its token
        while its own messages are judged: if one matches, it still goes."""
        tag = self.dis.message_tag
        s.pk[tag] += 1
        s.by[tag] += pkt[1]
        self.cc["frames"] += 1
        st = s.state
        if st == MATCHED:
            meta = s.metas[tag]
            if meta is None:
                meta = s.metas[tag] = self.dis.meta(s, tag, None)
            tok = _Token(s, pkt[0], -1, self._gen, len(out))
            out.add(pkt, meta)
            return tok
        if st == UNDECIDED:
            k = self.table.hold(s, pkt, tag)
            if k >= 0:
                return _Token(s, pkt[0], k, self._gen, -1)
            return _Token(s, pkt[0], -2, self._gen, -1, pkt)  # -2: counted as buffer_full
        self.table.unmatched_packets += 1
        return _Token(s, pkt[0], -1, self._gen, -1, pkt)

    def _tcp_frame(self, pkt: tuple, d, data: memoryview, out: Out) -> None:
        # _connection and _place, inline (every decoded frame of a connection).
        self._pkt = pkt
        ts = pkt[0]
        flags = d.tcp_flags
        src, sport, dst, dport = d.src, d.sport, d.dst, d.dport
        lower = (src, sport) <= (dst, dport)
        ckey = (src, sport, dst, dport, 6) if lower else (dst, dport, src, sport, 6)
        table = self.table
        s = table.sessions.get(ckey) if self._own_connection else None
        if s is None:
            if self._own_connection:
                s = self._new_connection(ckey, (src, sport, dst, dport, 6), ts, flags, out)
            else:  # a mode that extends _connection
                s = self._connection((src, sport, dst, dport, 6), ts, flags, out)
        elif s.end_ns and flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
            s = self._connection((src, sport, dst, dport, 6), ts, flags, out)  # reused
        else:
            touched = table.touched
            touched.append(s)
            if len(touched) > _MAX_TOUCHED:
                table.settle()
            s.last_ns = ts
        tag = self.dis.message_tag
        s.pk[tag] += 1
        s.by[tag] += pkt[1]
        self.cc["frames"] += 1
        st = s.state
        # The frame's token: only a frame with payload bytes can belong to a message.
        tok = None
        if st == MATCHED:
            meta = s.metas[tag]
            if meta is None:
                meta = s.metas[tag] = self.dis.meta(s, tag, None)
            if d.payload_len:
                tok = _Token(s, ts, -1, self._gen, len(out))
            out.add(pkt, meta)
        elif st == UNDECIDED:
            k = table.hold(s, pkt, tag)
            if d.payload_len:
                if k >= 0:
                    tok = _Token(s, ts, k, self._gen, -1)
                else:
                    tok = _Token(s, ts, -2, self._gen, -1, pkt)  # -2: counted as buffer_full
        else:
            table.unmatched_packets += 1
            if d.payload_len:
                tok = _Token(s, ts, -1, self._gen, -1, pkt)
        if flags & (TCP_FIN | TCP_RST):
            self._conn_end(s, flags, lower, ts)
        streams = self._streams
        if not s.cflags & CF_NO_MESSAGES:
            for key, msg, frames in streams.segment(ts, tok, d, data):
                # Its own connection's messages (a flush may bring another's).
                own = (
                    (key[1] == sport and key[3] == dport and key[0] == src and key[2] == dst)
                    or (key[1] == dport and key[3] == sport and key[0] == dst and key[2] == src)
                )  # fmt: skip
                self._conn_stream_message(key, msg, frames, out, ts, s if own else None)
            if tok is not None:
                tok.pkt = None
        if s.cflags & CF_NO_MESSAGES and not s.cflags & _STREAMS_DROPPED:
            # From this frame on (the one that completed the message that said so),
            # its frames skip the decoder.
            s.cflags |= _STREAMS_DROPPED
            streams.drop((d.src, d.sport, d.dst, d.dport))
            streams.drop((d.dst, d.dport, d.src, d.sport))
            self._go_fast(s)

    def _conn_end(self, s: Session, flags: int, from_lower: bool, ts: int) -> None:
        """A FIN or RST of connection ``s``: its end once both sides sent FIN, or RST."""
        if flags & TCP_RST:
            s.cflags |= _RST
        else:
            s.cflags |= _FIN_LO if from_lower else _FIN_HI
        cf = s.cflags
        if not s.end_ns and (cf & _RST or cf & (_FIN_LO | _FIN_HI) == _FIN_LO | _FIN_HI):
            s.end_ns = ts

    @staticmethod
    def _fast_keys(s: Session) -> tuple[bytes, bytes] | None:
        """The raw keys of both directions of IPv4 connection ``s``: the lower
        endpoint's packets first."""
        lo, lport, hi, hport, _ = s.key  # type: ignore[misc]
        if len(lo) != 4:
            return None
        return lo + hi + _PORTS.pack(lport, hport), hi + lo + _PORTS.pack(hport, lport)

    def _go_fast(self, s: Session) -> None:
        """``s`` ignores the rest: the per-chunk loop places its IPv4 frames."""
        keys = self._fast_keys(s)
        if keys is not None:
            if s.cflags & _LIVE:
                self._unlive(s, keys)
            fast = self._conn_fast_tcp if s.key[4] == 6 else self._conn_fast_udp  # type: ignore[index]
            fast[keys[0]] = fast[keys[1]] = s

    def _conn_stream_message(
        self, key: tuple, msg: object, frames: list, out: Out, ts: int, s: Session | None = None
    ) -> None:
        """A message of the TCP stream ``key``; ``s``: its connection, if known."""
        if s is None:
            ckey, _ = flow_key(*key, 6)
            s = self.table.sessions.get(ckey)
        toks = [f.frame for f in frames]
        if s is None:  # its connection left the table before this message completed
            self.cc["orphan_messages"] += 1
            return
        if s.cflags & CF_NO_MESSAGES:
            return
        if toks:
            ts = toks[-1].ts
        self._conn_message(s, msg, toks, (*key, 6), out, ts)

    def _udp_flow(self, frames: list, payload, flow: tuple, out: Out) -> None:
        self._pkt = frames[-1]
        ts = frames[-1][0]
        s = self._connection(flow, ts, 0, out)
        toks = [self._place(s, f, out) for f in frames]
        if s.cflags & CF_NO_MESSAGES:
            if not s.cflags & _STREAMS_DROPPED:
                s.cflags |= _STREAMS_DROPPED
                self._go_fast(s)
            return
        try:
            msg = self.dis.parse(payload)
        except ParseError:
            self.c["malformed"] += 1
            return
        self._conn_message(s, msg, toks, flow, out, ts)
        for tok in toks:
            tok.pkt = None
        if s.cflags & CF_NO_MESSAGES and not s.cflags & _STREAMS_DROPPED:
            s.cflags |= _STREAMS_DROPPED
            self._go_fast(s)

    def _conn_message(
        self, s: Session, msg: object, toks: list, flow: tuple, out: Out, ts: int
    ) -> None:
        """A message of connection ``s`` whose frames were placed already (``toks``)."""
        self.c["messages"] += 1
        dis = self.dis
        table = self.table
        summary = dis.summary(msg) if self._summaries else None
        was = s.state
        ctx = dis.on_message(s, msg, flow, ts)
        if was != MATCHED:
            ids = self._match(msg, ctx, flow)
            if ids is not None:
                if summary is not None and was == UNDECIDED:
                    self._summarise(s, toks, summary)  # goes out with its frames
                table.decide(s, ids, out)
                # The frame completing this message, if it was not held (a late
                # match after a rejection, a full buffer), still goes.
                meta = None
                for tok in toks:
                    if tok.pkt is not None and tok.s is s:
                        if meta is None:
                            meta = dis.meta(s, dis.message_tag, summary)
                        out.add(tok.pkt, meta)
                        tok.pkt = None
                        if tok.k == -2:
                            table.buffer_full -= 1
                        else:
                            table.unmatched_packets -= 1
            elif s.state == UNDECIDED:
                if ts - s.first_ns > self.limits.decide_timeout_ns or dis.settled(s, msg):
                    table.reject(s)  # its held frames go uncounted: no summary needed
                elif summary is not None and was == UNDECIDED:
                    self._summarise(s, toks, summary)  # held: it goes if matched later
        elif summary is not None:
            # Its frames forwarded within this chunk carry it too; earlier ones left
            # with the connection's metadata.
            meta = None
            gen = self._gen
            for tok in toks:
                if tok.s is s and tok.oi >= 0 and tok.gen == gen:
                    if meta is None:
                        meta = dis.meta(s, dis.message_tag, summary)
                    out.meta[tok.oi] = meta
        ev = dis.message_event(s, msg, flow, ts) if self._message_events else None
        if ev is not None:
            if not ev.start_ns:
                ev.start_ns = toks[0].ts if toks else ts
            if not ev.end_ns:
                ev.end_ns = ts
            if not ev.HasField("flow"):
                set_flow(ev, flow)
            if s.state == UNDECIDED:
                waiting = s.events
                if waiting is None:
                    waiting = s.events = []
                if len(waiting) < MAX_WAITING_EVENTS:
                    waiting.append(ev)
                else:
                    self.cc["events_dropped"] += 1
            else:
                self._emit(s, ev)
        dis.after_message(s, msg, ts)

    def _summarise(self, s: Session, toks: list, summary: object) -> None:
        """The held frames of a message of undecided ``s`` keep its summary."""
        table = self.table
        for tok in toks:
            if tok.s is s and tok.k >= 0:
                table.summarise(s, tok.k, summary)

    def _emit(self, s: Session, ev: lc_pb2.Event) -> None:
        """Send a message's event of a decided session (``--events all``: rejected too)."""
        captured = s.state == MATCHED
        if not (captured or self.events_all):
            return
        if not ev.dataset:
            ev.dataset = self.dis.protocol
        ev.session_id = s.name
        del ev.filter_ids[:]
        if captured:
            ev.filter_ids.extend(s.ids)
        ev.captured = captured
        self._events.append(ev)
        self.c["events"] += 1

    def _decided(self, s: Session) -> None:
        waiting = s.events
        if waiting:
            s.events = None
            for ev in waiting:
                self._emit(s, ev)

    # -- time and the end ----------------------------------------------------------------
    def _expire(self, now: int, out: Out) -> None:
        self._next_expiry = now + 10**9  # at most once per second of capture time
        if self._streams is not None:
            for key, msg, frames in self._streams.expire(now):
                self._stream_message(key, msg, frames, out, now)
        self.table.expire(now)
        self._frags.expire(now)

    def _unlive(self, s: Session, keys: tuple[bytes, bytes]) -> None:
        """``s`` leaves the in-order path (see the class docstring)."""
        s.cflags &= ~_LIVE
        live = self._conn_live
        for k in keys:
            hit = live.get(k)
            if hit is not None and hit[0] is s:
                del live[k]

    def _forgotten(self, s: Session) -> None:
        if s.cflags & _LIVE:
            self._unlive(s, self._fast_keys(s))  # type: ignore[arg-type]
        if s.cflags & _STREAMS_DROPPED:
            keys = self._fast_keys(s)
            if keys is not None:
                fast = self._conn_fast_tcp if s.key[4] == 6 else self._conn_fast_udp  # type: ignore[index]
                for k in keys:
                    if fast.get(k) is s:
                        del fast[k]
        if s.events:
            self._decided(s)  # undecided to the end: sent with --events all only
        captured = s.state == MATCHED
        if not (self.dis.session_events and (captured or self.events_all)):
            return
        ev = lc_pb2.Event(
            dataset=self.dis.protocol,
            start_ns=s.first_ns,
            end_ns=s.end_ns or s.last_ns,
            session_id=s.name,
            filter_ids=s.ids if captured else (),
            captured=captured,
        )
        self.dis.describe(s, ev)
        self._events.append(ev)
        self.c["events"] += 1

    # -- figures -----------------------------------------------------------------------
    def counters(self) -> ModeCounters:
        with self._lock:
            dis = self.dis
            one, many = dis.noun
            c = self.c
            table = self.table
            figures = {
                f"{dis.protocol}_messages": c["messages"],
                f"{dis.protocol}_malformed": c["malformed"],
                "unassociated": c["unassociated"],
                "decode_errors": c["decode_errors"],
                "forwarded": c["forwarded"],
                "events": c["events"],
            }
            figures.update(table.figures(many))
            figures[dis.alias_noun] = len(table.aliases)
            no_message = 0
            if self._streams is not None:
                for k, v in self._streams.figures().items():
                    figures[f"tcp_{k}"] = v
                if not self._conn:  # a connection's frames all belong to it
                    no_message = self._streams.counters["no_message"]
            if self._conn:
                cc = self.cc
                figures["connection_frames"] = cc["frames"]
                figures["connections_reused"] = cc["reused"]
                figures["messages_orphaned"] = cc["orphan_messages"]
                figures["events_dropped"] = cc["events_dropped"]
            for k, v in self._frags.figures().items():
                figures[f"fragments_{k}"] = v
            figures.update(dis.figures())
            tc = table.counters
            dropped = {
                # Not losses: packets that belong to no session or to unmatched ones.
                "filtered": c["unassociated"] + table.unmatched_packets + no_message,
                f"{one}_buffer_full": table.buffer_full,
                # The packets evicted undecided sessions held (the sessions themselves
                # are the figure of the same name).
                f"{many}_evicted": table.evicted_packets,
                "malformed": c["decode_errors"] + c["malformed"],
            }
            # The dissector's own count of messages wins (email counts mails, not the
            # commands and replies the engine saw), and framing errors are malformed too.
            malformed = figures[f"{dis.protocol}_malformed"] + figures.get(
                "tcp_framer_malformed", 0
            )
            summary = (
                f"{many}: {tc['created']} seen, {tc['matched']} matched, "
                f"{tc['unmatched']} never matched, {tc['evicted']} evicted; "
                f"{figures[f'{dis.protocol}_messages']} {dis.protocol.upper()} messages "
                f"({malformed} malformed)"
            )
            levels = {k for k in figures if k.endswith(("_active", "_now"))}
            levels.update(("buffered_bytes", "buffered_packets", dis.alias_noun, "tcp_streams"))
            levels.update(dis.level_figures)
            return ModeCounters(figures, dropped, summary, frozenset(levels & figures.keys()))
