"""The flow layer: flow keys, TCP streams framed into messages, and which captured
frames carried which bytes. Sans-IO: time is the caller's capture timestamp.

Protocol modes see packets, but their messages live in flows: a SIP message over TCP
spans segments, several messages share one, a UDP datagram arrives in IP fragments.
This module turns frames into messages and remembers, for every message, the frames
that carried it, so that a mode can forward exactly those frames.

Flow keys
    :func:`flow_key` gives a connection's canonical 5-tuple (the lower endpoint first,
    so both directions have one key) and the direction of a packet within it.
    :func:`endpoint_key` gives one (address, port), as an ``int`` for IPv4 (cheap to
    hash; the hot path of a mode builds it inline from :data:`PEEK_IPV4`).
    :func:`connection_id` names a connection (a session id): its canonical 5-tuple
    and the capture time of its first packet seen. :func:`icmp_quoted_flow` gives
    the 5-tuple of the datagram an ICMP or ICMPv6 error quotes (the flow it is about).

The fast peek
    :data:`PEEK_IPV4` is the one fixed-offset layout for the common frame (untagged
    Ethernet, IPv4 without options, UDP or TCP): ethertype, version/IHL, flags and
    fragment offset, protocol, source and destination as ints, source and
    destination port, unpacked from frame offset 12 (:data:`PEEK_OFFSET`). A mode's
    per-packet loop uses it to find a packet's session without building a
    :class:`~lc.common.decode.Decoded`; anything else goes through
    :func:`~lc.common.decode.decode_packet`.

TCP streams (:class:`TcpStreams`)
    One :class:`~lc.common.tcpstream.TcpReassembler` for both directions of every
    connection, with its flush hook wired: bytes it releases outside a ``feed``
    (a stream expired, evicted or restarted; a hole timed out; the end of the
    capture) are framed like any others, never dropped unseen. One framer per
    direction (the mode's, e.g. :class:`~lc.common.sip.SipStreamFramer`); after a
    skipped hole the direction gets a fresh framer, which resynchronises. Every
    frame that carried stream bytes is kept as a :class:`Frame` (its byte range)
    until the messages covering those bytes are complete; each message comes with
    the frames that carried any of its bytes. **A frame carrying the end of one
    message and the start of the next belongs to both**: it is handed out with each
    (the same :class:`Frame` object), and the consumer decides (a session layer
    forwards it once, see ``lc.hunter.session``). Frames without stream bytes
    (handshakes, pure ACKs, FINs) belong to no message (``no_message``). At most
    ``max_frames`` frames wait per direction (the oldest goes: ``frames_dropped``);
    frames whose bytes never became part of a message are counted when their
    direction ends (``frames_unclaimed``).

IP fragments (:class:`Fragments`)
    A :class:`~lc.common.reasm.FragmentReassembler` plus, per datagram, the frames
    (at most 64, for at most 1024 datagrams) that carried its fragments: the whole
    datagram comes back with them.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Hashable
from typing import Protocol

from lc.common.decode import TCP_RST, TCP_SYN, Decoded
from lc.common.reasm import FragmentReassembler
from lc.common.tcpstream import DEFAULT_IDLE_TIMEOUT_NS, Delivery, TcpReassembler

__all__ = [
    "PEEK_IPV4",
    "PEEK_OFFSET",
    "UDP4_PAYLOAD",
    "Fragments",
    "Frame",
    "Framer",
    "TcpStreams",
    "connection_id",
    "endpoint_key",
    "flow_key",
    "icmp_quoted_flow",
]

#: Ethernet + untagged IPv4 (IHL 5) + the first 4 bytes of UDP/TCP, from the ethertype
#: on: ethertype, version/IHL, flags+fragment offset, protocol, src, dst (ints),
#: sport, dport. A frame matches the layout when ethertype is 0x0800, version/IHL is
#: 0x45 and ``flags & 0x3FFF`` is 0 (not a fragment), and it is at least 38 bytes.
PEEK_IPV4 = struct.Struct("!HBxxxxxHxBxxIIHH")
PEEK_OFFSET = 12
#: Where the UDP payload starts in a frame that fits :data:`PEEK_IPV4`.
UDP4_PAYLOAD = 42


def flow_key(
    src: bytes, sport: int, dst: bytes, dport: int, proto: int
) -> tuple[tuple[bytes, int, bytes, int, int], bool]:
    """The connection's canonical key (lower (address, port) first) and whether the
    packet goes from the lower endpoint to the higher (its direction)."""
    if (src, sport) <= (dst, dport):
        return (src, sport, dst, dport, proto), True
    return (dst, dport, src, sport, proto), False


def endpoint_key(addr: bytes, port: int) -> int | tuple[bytes, int]:
    """Dictionary key of an (address, port): one int for IPv4 (fast to hash), the
    same int a hot loop builds as ``addr_int << 16 | port`` from :data:`PEEK_IPV4`."""
    if len(addr) == 4:
        return int.from_bytes(addr, "big") << 16 | port
    return (addr, port)


#: ICMP error types that quote the datagram that caused them (RFC 792, RFC 4443).
_ICMP4_ERRORS = frozenset({3, 4, 5, 11, 12})
_ICMP6_ERRORS = frozenset({1, 2, 3, 4})


def icmp_quoted_flow(proto: int, payload: bytes | memoryview) -> tuple | None:
    """The 5-tuple ``(src, sport, dst, dport, proto)`` of the TCP or UDP datagram an
    ICMP (``proto`` 1) or ICMPv6 (58) error quotes, given the ICMP message (its
    ``payload``), or None: not an error, not TCP/UDP, cut short. An error about a
    connection's segment (a path MTU "fragmentation needed", a TTL expiry) belongs to
    that connection as much as its segments do (Wireshark gives it the connection's
    ``tcp.stream``). Only the quoted IP header and the first 4 transport bytes (the
    ports) are read; an IPv6 extension header or a fragment other than the first
    gives None."""
    n = len(payload)
    if n < 8:
        return None
    if proto == 1:
        if payload[0] not in _ICMP4_ERRORS or n < 28 or payload[8] >> 4 != 4:
            return None
        ihl = (payload[8] & 0x0F) * 4
        if ihl < 20 or n < 8 + ihl + 4 or int.from_bytes(payload[14:16], "big") & 0x1FFF:
            return None
        inner = payload[17]
        src, dst = bytes(payload[20:24]), bytes(payload[24:28])
        at = 8 + ihl
    elif proto == 58:
        if payload[0] not in _ICMP6_ERRORS or n < 52 or payload[8] >> 4 != 6:
            return None
        inner = payload[14]
        src, dst = bytes(payload[16:32]), bytes(payload[32:48])
        at = 48
    else:
        return None
    if inner not in (6, 17):
        return None
    sport = int.from_bytes(payload[at : at + 2], "big")
    dport = int.from_bytes(payload[at + 2 : at + 4], "big")
    return (src, sport, dst, dport, inner)


_PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}


def _addr_text(addr: bytes) -> str:
    if len(addr) == 4:
        return socket.inet_ntop(socket.AF_INET, addr)
    if len(addr) == 16:
        return "[" + socket.inet_ntop(socket.AF_INET6, addr) + "]"
    return addr.hex()


def connection_id(key: tuple[bytes, int, bytes, int, int], first_ns: int) -> str:
    """A connection's session id from its canonical key (:func:`flow_key`) and the
    capture time of its first packet seen, e.g.
    ``tcp:10.0.0.1:40000-10.0.1.1:443@1700000000.000123456``: the same for every
    packet of the connection, both directions, and different for a later connection
    on the same 5-tuple. ASCII only (safe on the wire as it is)."""
    src, sport, dst, dport, proto = key
    name = _PROTO_NAMES.get(proto) or str(proto)
    sec, ns = divmod(first_ns, 1_000_000_000)
    return f"{name}:{_addr_text(src)}:{sport}-{_addr_text(dst)}:{dport}@{sec}.{ns:09d}"


class Frame:
    """One captured frame's share of a stream: the stream bytes [start, end) it
    carried, the caller's frame object, and room for its consumer's bookkeeping
    (``done``: handed on; ``holders``: who holds it; ``claims``: messages that
    claimed it)."""

    __slots__ = ("claims", "done", "end", "frame", "holders", "start")

    def __init__(self, start: int, end: int, frame: object) -> None:
        self.start = start
        self.end = end
        self.frame = frame
        self.done = False
        self.holders: list[object] | tuple = ()  # a list from the first holder
        self.claims = 0


class Framer(Protocol):
    """Frames one direction of a byte stream into messages (as SipStreamFramer does)."""

    @property
    def offset(self) -> int:
        """Bytes fed so far."""

    def feed(self, data: bytes) -> list[tuple[int, int, object]]:
        """The messages ``data`` completed, as (start offset, end offset, message)."""


#: ``(direction key (src, sport, dst, dport), message, frames)``; ``frames`` are
#: :class:`Frame` objects in capture order; a frame shared with a neighbouring
#: message has ``start`` before the message or ``end`` after it.
StreamMessage = tuple[tuple[bytes, int, bytes, int], object, list[Frame]]

_FRAMER_TOTALS = ("malformed", "resync", "garbage_bytes", "oversized")


class _Direction:
    __slots__ = ("base", "framer", "pending")

    def __init__(self, framer: Framer | None, base: int) -> None:
        self.framer = framer
        self.base = base  # stream offset of the framer's offset 0
        self.pending: list[Frame] = []


class TcpStreams:
    """TCP streams framed into messages, with the frames of each (module docstring)."""

    def __init__(
        self,
        new_framer: Callable[[], Framer],
        max_streams: int = 4096,
        idle_timeout_ns: int = DEFAULT_IDLE_TIMEOUT_NS,
        max_frames: int = 256,
    ) -> None:
        self.new_framer = new_framer
        self.max_frames = max_frames
        self.max_streams = max_streams
        self.reassembler = TcpReassembler(
            max_streams=max_streams, idle_timeout_ns=idle_timeout_ns, on_flush=self._flushed
        )
        self._dirs: dict[Hashable, _Direction] = {}
        self._ready: list[StreamMessage] = []
        self.counters = {"no_message": 0, "pending_dropped": 0, "frames_unclaimed": 0}
        self._framer_totals = dict.fromkeys(_FRAMER_TOTALS, 0)

    def segment(self, ts_ns: int, frame: object, d: Decoded, data: memoryview) -> list:
        """Feed one TCP segment (``d`` decoded from ``data``); ``frame`` stands for the
        captured frame (it must own its bytes). Returns the messages now complete, of
        this stream and of any stream the reassembler flushed meanwhile."""
        key = (d.src, d.sport, d.dst, d.dport)
        flags = d.tcp_flags
        n = d.payload_len
        payload = bytes(data[d.payload_offset : d.payload_offset + n]) if n else b""
        dl = self.reassembler.feed(ts_ns, key, d.tcp_seq, flags, payload)
        st = self._dirs.get(key)
        if st is None or flags & TCP_SYN:
            base = dl.start if not dl.chunks else dl.chunks[0][0]
            # The framer comes with the first bytes (most directions never carry any
            # before their connection is decided).
            st = self._dirs[key] = _Direction(None, base)
        if dl.end > dl.start:
            st.pending.append(Frame(dl.start, dl.end, frame))
            if len(st.pending) > self.max_frames:
                st.pending.pop(0)
                self.counters["pending_dropped"] += 1
        else:
            self.counters["no_message"] += 1  # handshake, pure ACK, FIN: no bytes
        out = self._ready
        self._ready = []
        if dl.chunks:
            self._frame(key, st, dl, out)
        if dl.closed or flags & TCP_RST:
            self._end(key)
        elif len(self._dirs) > 2 * self.max_streams:  # cannot happen with the hook; a bound
            self._end(next(iter(self._dirs)))
        return out

    def in_order(
        self, ts_ns: int, key: tuple, seq: int, payload: bytes, frame: object
    ) -> list | None:
        """:meth:`segment` for the common case, without decoding nor a Delivery: a
        segment without SYN, FIN or RST (the caller checks the flags) that starts at
        the next expected byte of a known direction holding nothing out of order,
        whose bytes (if any) continue what its framer was fed. Returns what
        :meth:`segment` would (the messages now complete), or None, having changed
        nothing, when the segment is not that case (then call :meth:`segment`).
        ``key`` is ``(src, sport, dst, dport)``, ``payload`` the segment's bytes;
        ``frame`` (when there are bytes) is a :class:`Frame` of the caller's whose
        ``frame`` is the caller's object (its byte range is set here: no second object
        per segment), e.g. a subclass whose ``frame`` is itself, with ``claims`` 0."""
        reasm = self.reassembler
        streams = reasm._streams
        rs = streams.get(key)
        if rs is None or seq != rs.next_seq or rs.held or rs.fin_off is not None:
            return None
        st = self._dirs.get(key)
        if st is None or self._ready:
            return None
        counters = reasm.counters
        if not payload:
            # TcpReassembler.feed's in-order pure ACK, and segment's "no bytes".
            streams.move_to_end(key)
            rs.last_ts = rs.held_since = ts_ns
            counters["segments"] += 1
            if reasm._waiting:
                reasm._waiting.pop(key, None)
            self.counters["no_message"] += 1
            return []
        off = rs.next_off
        framer = st.framer
        if framer is None:
            if off != st.base:
                return None
            framer = st.framer = self.new_framer()
        elif off != st.base + framer.offset:
            return None
        # TcpReassembler.feed's in-order data, then segment and _frame for one chunk.
        n = len(payload)
        end = off + n
        rs.next_off = end
        rs.next_seq = (seq + n) & 0xFFFFFFFF
        rs.last_ts = ts_ns
        streams.move_to_end(key)
        counters["segments"] += 1
        counters["bytes_delivered"] += n
        frame.start = off
        frame.end = end
        pending = st.pending
        pending.append(frame)
        if len(pending) > self.max_frames:
            pending.pop(0)
            self.counters["pending_dropped"] += 1
        done = framer.feed(payload)
        if not done:
            return done  # most segments complete nothing
        out: list = []
        _messages(key, st, done, out)
        return out

    def drop(self, key: Hashable) -> None:
        """Stop following one direction (``(src, sport, dst, dport)``): its held bytes
        and waiting frames are dropped unframed (a consumer that wants nothing more
        from a connection)."""
        self.reassembler.discard(key)
        if self._ready:
            self._ready = [m for m in self._ready if m[0] != key]
        self._end(key)

    def expire(self, now_ns: int) -> list:
        """Expire idle streams and timed-out holes; the messages their bytes completed."""
        self.reassembler.expire(now_ns)
        out, self._ready = self._ready, []
        return out

    def close_all(self) -> list:
        """End every stream (end of capture); the messages their last bytes completed."""
        for key, dl in self.reassembler.close_all():
            self._flushed(key, dl)
        for key in list(self._dirs):
            self._end(key)
        out, self._ready = self._ready, []
        return out

    def _flushed(self, key: Hashable, dl: Delivery) -> None:
        st = self._dirs.get(key)
        if st is not None:
            self._frame(key, st, dl, self._ready)
            if dl.closed:
                self._end(key)

    def _frame(self, key: Hashable, st: _Direction, dl: Delivery, out: list) -> None:
        for offset, data in dl.chunks:
            if st.framer is None:
                st.framer = self.new_framer()
            if dl.gap or offset != st.base + st.framer.offset:
                self._retire_framer(st.framer)
                st.framer = self.new_framer()  # a gap: frame afresh from here
                st.base = offset
            _messages(key, st, st.framer.feed(data), out)

    def _end(self, key: Hashable) -> None:
        st = self._dirs.pop(key, None)
        if st is None:
            return
        if st.pending:
            self.counters["frames_unclaimed"] += sum(1 for f in st.pending if not f.claims)
        if st.framer is not None:
            self._retire_framer(st.framer)

    def _retire_framer(self, framer: Framer | None) -> None:
        counters = getattr(framer, "counters", None)
        if counters:
            totals = self._framer_totals
            for k in _FRAMER_TOTALS:
                totals[k] += counters.get(k, 0)

    def figures(self) -> dict[str, int]:
        """Counters: the reassembler's, this layer's, the framers' (``framer_*``) and
        ``streams`` (directions followed now)."""
        out = dict(self.reassembler.counters)
        out.update(self.counters)
        out["streams"] = self.reassembler.stream_count
        totals = dict(self._framer_totals)
        for st in self._dirs.values():
            counters = getattr(st.framer, "counters", None)
            if counters:
                for k in _FRAMER_TOTALS:
                    totals[k] += counters.get(k, 0)
        for k, v in totals.items():
            out[f"framer_{k}"] = v
        return out


class Fragments:
    """IP datagrams put back together, with the frames that carried them."""

    def __init__(self, max_datagrams: int = 1024, max_frames: int = 64) -> None:
        self.reassembler = FragmentReassembler()
        self.max_datagrams = max_datagrams
        self.max_frames = max_frames
        self._frames: dict[tuple, list] = {}

    def feed(
        self, ts_ns: int, frame: object, linktype: int, data: memoryview, d: Decoded
    ) -> tuple[bytes, list] | None:
        """Feed one fragment (``d`` decoded from ``data``; ``frame`` owns its bytes);
        the whole datagram (IP header first) and its frames once complete, else None."""
        key = (d.src, d.dst, d.frag_id, d.ip_version)
        frames = self._frames.setdefault(key, [])
        if len(frames) < self.max_frames:
            frames.append(frame)
        if len(self._frames) > self.max_datagrams:  # the reassembler forgets old ones too
            self._frames.pop(next(iter(self._frames)))
        whole = self.reassembler.feed(ts_ns, linktype, data, d)
        if whole is None:
            return None
        return whole, self._frames.pop(key, [])

    def expire(self, now_ns: int) -> None:
        self.reassembler.expire(now_ns)

    def figures(self) -> dict[str, int]:
        return dict(self.reassembler.counters)


def _messages(key: Hashable, st: _Direction, done: list, out: list) -> None:
    """The messages the framer of the direction ``st`` completed (``done``: its
    ``(start, end, message)``) appended to ``out`` as ``(key, message, the frames that
    carried its bytes)``."""
    base = st.base
    for s, e, msg in done:
        s += base
        e += base
        pending = st.pending
        if len(pending) == 1:  # the usual case: one frame carried the message
            f = pending[0]
            frames = [f] if f.start < e and f.end > s else []
            if f.end <= e:
                st.pending = []
        else:
            frames = [f for f in pending if f.start < e and f.end > s]
            # A frame that also carries bytes after this message stays for the next.
            st.pending = [f for f in pending if f.end > e]
        out.append((key, msg, frames))
