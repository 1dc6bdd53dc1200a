"""VoIP mode: follow SIP calls, hold each call until a filter decides, forward whole calls.

What a packet is (checked in this order):

* **SIP**: UDP or TCP with a port in ``sip_ports`` (the same list builds the kernel
  BPF). UDP datagrams are parsed whole (IPv4/IPv6 fragments are reassembled first and
  every fragment frame belongs to the message); TCP is reassembled per direction with
  bounded buffers and framed by Content-Length (:class:`lc.common.sip.SipStreamFramer`),
  and each frame belongs to the message(s) its bytes carry. Pure ACKs and handshakes of
  SIP connections carry no message and are not forwarded.
* **RTP/RTCP**: UDP whose destination or source (address, port) an SDP of a call
  announced (offer and answer, session- or media-level ``c=``, every ``m=`` line,
  ``a=rtcp``, rtcp-mux; re-INVITE/UPDATE/183/200 add the endpoints they move to). No
  bare-port guessing: a packet to a port no SDP announced belongs to no call.
* anything else is not forwarded (counted as ``unassociated``).

A **call** is a Call-ID: an INVITE dialog, or a transaction without SDP (REGISTER,
MESSAGE, OPTIONS, SUBSCRIBE/NOTIFY, ...). States:

=========  ==================================================================
undecided  no SIP message matched yet: packets are held in the call's buffer
matched    a SIP message matched: the buffer was flushed in capture order and
           every later packet of the call is forwarded at once
rejected   the final response to the INVITE (401/407 challenges aside) matched
           nothing either, or the call was held ``decide_timeout`` without a
           match: the buffer is dropped and packets are no longer held, but SIP
           is still checked, so a later matching message (a re-INVITE with a
           P-Asserted-Identity, say) still switches the call to matched
=========  ==================================================================

A message matches when any filter of type sip_user or phone_number (From, To,
Request-URI, P-Asserted-Identity, P-Preferred-Identity users), sip_uri (those URIs),
call_id, codec (its SDP's encodings) or ip_address (the packet's addresses and the
SDP's media addresses) matches. With no filter at all, ``policy`` decides: ``deny``
(the default for this mode) matches nothing, ``allow`` everything.

A call **ends** at BYE, CANCEL, or a final failure to its INVITE (401/407 excepted:
a new INVITE follows the challenge), or at the final response of a transaction; it is
forgotten ``grace`` after that (late RTP and the 200 to BYE still belong to it), or
after ``idle_timeout`` without packets. An undecided call that ends is dropped, its
packets counted as ``unmatched_packets`` (filtered, not lost). Clocks are capture
timestamps, so a replay behaves as the live capture did.

**Bounds, each with a counter**: ``max_calls`` calls (the oldest call that is not
matched is evicted: ``calls_evicted``); ``max_call_packets`` held per call
(``buffer_full``: RTP beyond it is not held; SIP is held up to 4x that); ``max_buffer_bytes``
held over all calls (``buffer_full`` too); TCP streams and fragments as bounded by
:class:`~lc.common.tcpstream.TcpReassembler` and :class:`~lc.common.reasm.FragmentReassembler`.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from array import array
from dataclasses import dataclass

from lc.common.decode import TCP_RST, TCP_SYN, decode_packet
from lc.common.errors import ParseError
from lc.common.filters import Filter, FilterSet
from lc.common.reasm import FragmentReassembler
from lc.common.sdp import SdpError, codecs_of, parse_sdp, rtp_endpoints
from lc.common.sip import SipError, SipMessage, SipStreamFramer, parse_sip, uris_of, users_of
from lc.common.tcpstream import TcpReassembler
from lc.hunter.capture import Chunk
from lc.hunter.filtering import MATCH_NOTHING
from lc.proto import lc_pb2

__all__ = ["VOIP_FILTER_TYPES", "VoipConfig", "VoipMode", "voip_bpf"]

log = logging.getLogger(__name__)

VOIP_FILTER_TYPES = ("sip_user", "phone_number", "sip_uri", "call_id", "codec", "ip_address")

UNDECIDED, MATCHED, REJECTED = 0, 1, 2
_RTP, _RTCP, _SIP = 0, 1, 2
_REC = struct.Struct("<IIII")
_STATE_NAMES = ("undecided", "matched", "rejected")

# Ethernet + untagged IPv4 (IHL 5) + the first 4 bytes of UDP/TCP, from the ethertype on.
_ETH_IP4 = struct.Struct("!HBxxxxxHxBxxIIHH")


def _endpoint_key(addr: bytes, port: int) -> int | tuple[bytes, int]:
    """Dictionary key of an (address, port): one int for IPv4 (fast to hash)."""
    if len(addr) == 4:
        return int.from_bytes(addr, "big") << 16 | port
    return (addr, port)


_LT_ETHERNET = 1
_LT_RAW = 101

_COUNTERS = (
    "sip_messages",
    "sip_malformed",
    "sdp_malformed",
    "calls_created",
    "calls_matched",
    "calls_unmatched",
    "calls_evicted",
    "calls_rejected",
    "unmatched_packets",
    "buffer_full",
    "unassociated",
    "tcp_no_message",
    "tcp_pending_dropped",
    "decode_errors",
    "forwarded",
)


@dataclass(slots=True)
class VoipConfig:
    sip_ports: frozenset[int] = frozenset((5060, 5061))
    rtp_range: tuple[int, int] = (10000, 32768)
    max_calls: int = 20_000
    max_call_packets: int = 2000
    max_buffer_bytes: int = 256 * 1024 * 1024
    grace_ns: int = 5 * 10**9
    idle_timeout_ns: int = 300 * 10**9
    decide_timeout_ns: int = 60 * 10**9


def voip_bpf(sip_ports: frozenset[int] | set[int], rtp_range: tuple[int, int]) -> str:
    """Kernel filter: SIP ports (UDP and TCP), the RTP port range (UDP), IP fragments."""
    sip = " or ".join(f"port {p}" for p in sorted(sip_ports))
    lo, hi = rtp_range
    return (
        f"((udp or tcp) and ({sip})) or (udp and portrange {lo}-{hi})"
        " or (ip and ip[6:2] & 0x3fff != 0) or (ip6 and ip6[6] == 44)"
    )


def _sip_meta(call_id: str, ids: list[str], summary: tuple) -> lc_pb2.PacketMeta:
    method, status, cseq, from_user, to_user, from_uri, to_uri = summary
    return lc_pb2.PacketMeta(
        protocol="sip",
        session_id=call_id,
        filter_ids=ids,
        sip=lc_pb2.SipSummary(
            method=method,
            status=status,
            cseq_method=cseq,
            from_user=from_user,
            to_user=to_user,
            from_uri=from_uri,
            to_uri=to_uri,
        ),
    )


class _Call:
    __slots__ = (
        "buf",
        "buf_bytes",
        "buf_if",
        "buf_kind",
        "buf_meta",
        "buf_n",
        "call_id",
        "end_ns",
        "endpoints",
        "first_ns",
        "ids",
        "last_ns",
        "meta_rtcp",
        "meta_rtp",
        "method",
        "state",
    )

    def __init__(self, call_id: str, ts: int, method: str) -> None:
        self.call_id = call_id
        self.state = UNDECIDED
        # The held packets, compactly: their pcap records back to back (the 16-byte
        # header holds time and lengths), and per packet its interface and kind.
        self.buf = bytearray()
        self.buf_if = array("H")
        self.buf_kind = bytearray()  # _RTP, _RTCP or _SIP
        self.buf_meta: list[tuple] = []  # one SIP summary per held SIP packet
        self.buf_n = 0
        self.buf_bytes = 0
        self.ids: list[str] = []
        self.first_ns = ts
        self.last_ns = ts
        self.end_ns = 0
        self.endpoints: list[int | tuple[bytes, int]] = []
        self.method = method
        self.meta_rtp: lc_pb2.PacketMeta | None = None
        self.meta_rtcp: lc_pb2.PacketMeta | None = None


class _Stream:
    """One direction of a SIP-over-TCP connection."""

    __slots__ = ("base", "framer", "pending")

    def __init__(self, base: int) -> None:
        self.framer = SipStreamFramer()
        self.base = base  # stream offset of the framer's offset 0
        self.pending: list[tuple[int, int, tuple]] = []  # (start, end, packet)


class _Out:
    """The packets a chunk forwards, in order."""

    __slots__ = ("caplen", "iface", "meta", "origlen", "parts", "ts")

    def __init__(self) -> None:
        self.ts = array("q")
        self.caplen = array("I")
        self.origlen = array("I")
        self.iface = array("H")
        self.parts: list[bytes | memoryview] = []
        self.meta: dict[int, lc_pb2.PacketMeta] = {}

    def add(self, pkt: tuple, meta: lc_pb2.PacketMeta) -> None:
        ts, cap, orig, rec, iface = pkt[:5]
        self.meta[len(self.ts)] = meta
        self.ts.append(ts)
        self.caplen.append(cap)
        self.origlen.append(orig)
        self.iface.append(iface)
        self.parts.append(rec)

    def chunk(self) -> Chunk:
        return Chunk(self.ts, self.caplen, self.origlen, b"".join(self.parts), self.iface)


class VoipMode:
    """VoIP mode's filtering: the hunter calls ``apply`` on filter changes, ``process``
    per captured chunk, ``tick`` when idle and ``finish`` at the end (thread-safe)."""

    def __init__(
        self,
        policy: str,
        base: list[str],
        set_kernel_filter,
        interfaces: list[tuple[str, int]],
        cfg: VoipConfig | None = None,
    ) -> None:
        self.policy = policy
        self.base = base
        self.set_kernel_filter = set_kernel_filter
        self.interfaces = interfaces
        self.cfg = cfg or VoipConfig()
        self.kernel_expr = ""
        self._fs: FilterSet | None = None
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}
        # (address, port) key (see _endpoint_key) -> (call, is RTCP)
        self._endpoints: dict[int | tuple[bytes, int], tuple[_Call, bool]] = {}
        self._streams: dict[tuple, _Stream] = {}
        self._tcp = TcpReassembler(max_streams=4096, idle_timeout_ns=self.cfg.idle_timeout_ns)
        self._frags = FragmentReassembler()
        self._frag_frames: dict[tuple, list[tuple]] = {}
        self._buffered = 0
        self._clock = 0
        self._next_expiry = 0
        self.c = dict.fromkeys(_COUNTERS, 0)

    # -- filters ---------------------------------------------------------------------
    def kernel_expression(self) -> str:
        parts = [*(f"({b})" for b in self.base), f"({voip_bpf(*self._ports())})"]
        return " and ".join(parts)

    def _ports(self) -> tuple[frozenset[int], tuple[int, int]]:
        return self.cfg.sip_ports, self.cfg.rtp_range

    def apply(self, filters: list[Filter], compiled: FilterSet) -> None:
        """Swap in a new filter set. Matched calls stay matched; others are judged
        by the new set from their next SIP message on."""
        expr = self.kernel_expression()
        if self.set_kernel_filter is not None and expr != self.kernel_expr:
            self.set_kernel_filter(expr)
        self.kernel_expr = expr
        self._fs = compiled

    def initial_kernel_expr(self) -> str:
        return MATCH_NOTHING

    # -- the hot path ----------------------------------------------------------------
    def process(self, chunk: Chunk) -> tuple[Chunk, dict[int, lc_pb2.PacketMeta]]:
        """The packets to forward now (this chunk's and any flushed from call buffers,
        in capture order) and their metadata."""
        with self._lock:
            out = _Out()
            self._process(chunk, out)
            if self._clock >= self._next_expiry:
                self._expire(self._clock)
            self.c["forwarded"] += len(out.ts)
            return out.chunk(), out.meta

    def _process(self, chunk: Chunk, out: _Out) -> None:
        interfaces = self.interfaces
        single = chunk.iface if isinstance(chunk.iface, int) else None
        rec = chunk.records
        mv = memoryview(rec)
        sip_ports = self.cfg.sip_ports
        endpoints = self._endpoints
        unpack = _ETH_IP4.unpack_from
        off = 0
        ts_col, cap_col, orig_col = chunk.ts_ns, chunk.caplen, chunk.origlen
        c = self.c
        unassociated = unmatched = 0
        lt = interfaces[single][1] if single is not None else 0
        ethernet, rejected = _LT_ETHERNET, REJECTED  # locals: read once per packet below
        iface_col = chunk.iface
        ifx = single
        for i, cap in enumerate(cap_col):
            start = off
            off += 16 + cap
            if single is None:
                ifx = iface_col[i]
                lt = interfaces[ifx][1]
            # Fast path: Ethernet, untagged IPv4 without options, not a fragment, UDP.
            if lt == ethernet and cap >= 38:
                etype, vihl, frag, proto, src, dst, sport, dport = unpack(rec, start + 28)
                if (
                    etype == 0x0800
                    and vihl == 0x45
                    and not frag & 0x3FFF
                    and proto == 17
                    and sport not in sip_ports
                    and dport not in sip_ports
                ):
                    hit = endpoints.get(dst << 16 | dport) or endpoints.get(src << 16 | sport)
                    if hit is None:
                        unassociated += 1
                        continue
                    call, rtcp = hit
                    call.last_ns = ts_col[i]
                    if call.state == rejected:
                        unmatched += 1
                        continue
                    if not rtcp and cap > 43 and 192 <= rec[start + 16 + 43] <= 223:
                        rtcp = True  # rtcp-mux: RTCP on the RTP port (RFC 5761)
                    pkt = (ts_col[i], cap, orig_col[i], mv[start:off], ifx)
                    self._media(call, pkt, rtcp, out)
                    continue
            pkt = (ts_col[i], cap, orig_col[i], mv[start:off], ifx)
            self._slow(pkt, lt, mv[start + 16 : off], out)
        c["unassociated"] += unassociated
        c["unmatched_packets"] += unmatched
        if len(ts_col):
            last = ts_col[len(ts_col) - 1]
            if last > self._clock:
                self._clock = last

    def _media(self, call: _Call, pkt: tuple, rtcp: bool, out: _Out) -> None:
        call.last_ns = pkt[0]
        st = call.state
        if st == MATCHED:
            meta = call.meta_rtcp if rtcp else call.meta_rtp
            if meta is None:
                meta = self._media_meta(call, rtcp)
            out.add(pkt, meta)
        elif st == UNDECIDED:
            self._hold(call, pkt, _RTCP if rtcp else _RTP)
        else:
            self.c["unmatched_packets"] += 1

    def _media_meta(self, call: _Call, rtcp: bool) -> lc_pb2.PacketMeta:
        m = lc_pb2.PacketMeta(
            protocol="rtcp" if rtcp else "rtp", session_id=call.call_id, filter_ids=call.ids
        )
        if rtcp:
            call.meta_rtcp = m
        else:
            call.meta_rtp = m
        return m

    def _hold(self, call: _Call, pkt: tuple, kind: int, meta=None) -> None:
        cfg = self.cfg
        rec = pkt[3]
        size = len(rec) + 3
        limit = cfg.max_call_packets * (4 if kind == _SIP else 1)
        if call.buf_n >= limit or self._buffered + size > cfg.max_buffer_bytes:
            self.c["buffer_full"] += 1
            return
        call.buf += rec
        call.buf_if.append(pkt[4])
        call.buf_kind.append(kind)
        if kind == _SIP:
            call.buf_meta.append(meta)
        call.buf_n += 1
        call.buf_bytes += size
        self._buffered += size

    def _drop_held(self, call: _Call) -> int:
        n = call.buf_n
        self._buffered -= call.buf_bytes
        call.buf = bytearray()
        call.buf_if = array("H")
        call.buf_kind = bytearray()
        call.buf_meta = []
        call.buf_n = call.buf_bytes = 0
        return n

    # -- everything but plain UDP media ----------------------------------------------
    def _slow(self, pkt: tuple, lt: int, data: memoryview, out: _Out) -> None:
        try:
            d = decode_packet(lt, data)
        except ParseError:
            self.c["decode_errors"] += 1
            return
        if d.is_fragment:
            self._fragment(pkt, lt, data, d, out)
            return
        sip_ports = self.cfg.sip_ports
        if d.proto == 17:
            if d.sport in sip_ports or d.dport in sip_ports:
                payload = data[d.payload_offset : d.payload_offset + d.payload_len]
                self._sip_datagram([pkt], payload, d.src, d.dst, out)
                return
            ep = self._endpoints
            hit = ep.get(_endpoint_key(d.dst, d.dport)) or ep.get(_endpoint_key(d.src, d.sport))
            if hit is None:
                self.c["unassociated"] += 1
                return
            call, rtcp = hit
            p = d.payload_offset
            if not rtcp and d.payload_len > 1 and 192 <= data[p + 1] <= 223:
                rtcp = True
            self._media(call, pkt, rtcp, out)
            return
        if d.proto == 6 and (d.sport in sip_ports or d.dport in sip_ports):
            self._tcp_segment(pkt, d, data, out)
            return
        self.c["unassociated"] += 1

    def _fragment(self, pkt: tuple, lt: int, data: memoryview, d, out: _Out) -> None:
        key = (d.src, d.dst, d.frag_id, d.ip_version)
        frames = self._frag_frames.setdefault(key, [])
        if len(frames) < 64:
            frames.append(pkt if isinstance(pkt[3], bytes) else (*pkt[:3], bytes(pkt[3]), pkt[4]))
        if len(self._frag_frames) > 1024:  # the reassembler forgets old datagrams too
            self._frag_frames.pop(next(iter(self._frag_frames)))
        whole = self._frags.feed(pkt[0], lt, data, d)
        if whole is None:
            return
        frames = self._frag_frames.pop(key, [])
        try:
            dd = decode_packet(_LT_RAW, whole)
        except ParseError:
            self.c["decode_errors"] += 1
            return
        sip_ports = self.cfg.sip_ports
        if dd.proto == 17 and (dd.sport in sip_ports or dd.dport in sip_ports):
            payload = whole[dd.payload_offset : dd.payload_offset + dd.payload_len]
            self._sip_datagram(frames, payload, dd.src, dd.dst, out)
        else:
            self.c["unassociated"] += len(frames)

    def _sip_datagram(
        self, frames: list[tuple], payload, src: bytes, dst: bytes, out: _Out
    ) -> None:
        try:
            msg = parse_sip(payload)
        except SipError:
            self.c["sip_malformed"] += 1
            return
        self._sip_message(msg, frames, src, dst, out)

    def _tcp_segment(self, pkt: tuple, d, data: memoryview, out: _Out) -> None:
        key = (d.src, d.sport, d.dst, d.dport)
        payload = bytes(data[d.payload_offset : d.payload_offset + d.payload_len])
        dl = self._tcp.feed(pkt[0], key, d.tcp_seq, d.tcp_flags, payload)
        stream = self._streams.get(key)
        if stream is None or d.tcp_flags & TCP_SYN:
            stream = self._streams[key] = _Stream(dl.start if not dl.chunks else dl.chunks[0][0])
        if dl.end > dl.start:
            held = (*pkt[:3], bytes(pkt[3]), pkt[4])
            stream.pending.append((dl.start, dl.end, held))
            if len(stream.pending) > 256:
                stream.pending.pop(0)
                self.c["tcp_pending_dropped"] += 1
        else:
            self.c["tcp_no_message"] += 1  # handshake, pure ACK, FIN: no SIP in it
        for offset, data_bytes in dl.chunks:
            if dl.gap or offset != stream.base + stream.framer.offset:
                stream.framer = SipStreamFramer()  # a gap: start framing afresh here
                stream.base = offset
            for s, e, msg in stream.framer.feed(data_bytes):
                s += stream.base
                e += stream.base
                # Frames carrying this message's bytes go with it; a frame carrying the
                # end of one message and the start of the next goes with the first.
                frames = [p for (a, b, p) in stream.pending if a < e and b > s]
                stream.pending = [x for x in stream.pending if x[0] >= e]
                self._sip_message(msg, frames, d.src, d.dst, out, pkt[0])
        if dl.closed or d.tcp_flags & TCP_RST:
            if stream.pending:
                self.c["tcp_no_message"] += len(stream.pending)
            self._streams.pop(key, None)
        elif len(self._streams) > 4096:
            self._streams.pop(next(iter(self._streams)))

    # -- SIP ---------------------------------------------------------------------------
    def _sip_message(
        self,
        msg: SipMessage,
        frames: list[tuple],
        src: bytes,
        dst: bytes,
        out: _Out,
        ts: int = 0,
    ) -> None:
        c = self.c
        c["sip_messages"] += 1
        cid = msg.call_id
        if frames:
            ts = frames[-1][0]
        call = self._calls.get(cid)
        if call is None:
            # Also a response or in-dialog request of a call whose start we never saw
            # (a hunter started mid-call): it is followed and judged like any other.
            call = self._new_call(cid, ts, msg.method or msg.cseq_method)
        call.last_ns = ts
        sdp = None
        if msg.body and (msg.content_type == "application/sdp" or msg.body[:2] == b"v="):
            try:
                sdp = parse_sdp(msg.body)
            except SdpError:
                c["sdp_malformed"] += 1
        if sdp is not None:
            self._add_endpoints(call, sdp)
        if call.state != MATCHED:
            ids = self._match(msg, sdp, src, dst)
            if ids is not None:
                self._set_matched(call, ids, out)
            elif call.state == UNDECIDED and (
                ts - call.first_ns > self.cfg.decide_timeout_ns
                or (
                    msg.status >= 200
                    and msg.cseq_method == "INVITE"
                    and msg.status not in (401, 407)
                )
            ):
                # The dialog is settled (its final response carried the last identities
                # an INVITE usually gets) and nothing matched: stop holding its media.
                # Packets that arrived with that response are still judged below.
                self._reject(call)
        # A plain tuple while held: a protobuf message costs kilobytes (its arena), and
        # 10,000 undecided calls hold tens of thousands of SIP packets.
        summary = (
            msg.method,
            msg.status,
            msg.cseq_method,
            msg.from_user,
            msg.to_user,
            msg.from_uri,
            msg.to_uri,
        )
        meta = _sip_meta(cid, call.ids, summary) if call.state == MATCHED else summary
        for pkt in frames:
            if call.state == MATCHED:
                out.add(pkt, meta)
            elif call.state == UNDECIDED:
                self._hold(call, pkt, _SIP, meta)
            else:
                c["unmatched_packets"] += 1
        self._track_end(call, msg, ts)

    def _new_call(self, cid: str, ts: int, method: str) -> _Call:
        calls = self._calls
        if len(calls) >= self.cfg.max_calls:
            victim = next((v for v in calls.values() if v.state != MATCHED), None)
            if victim is None:
                victim = next(iter(calls.values()))
            self.c["calls_evicted"] += 1
            self._forget(victim, evicted=True)
        call = calls[cid] = _Call(cid, ts, method)
        self.c["calls_created"] += 1
        return call

    def _match(self, msg: SipMessage, sdp, src: bytes, dst: bytes) -> list[str] | None:
        fs = self._fs
        if fs is None or not len(fs):
            return [] if self.policy == "allow" else None
        users = users_of(msg)
        fields: dict[str, object] = {
            "sip_user": users,
            "phone_number": users,
            "sip_uri": uris_of(msg),
            "call_id": (msg.call_id,),
        }
        addrs: list[bytes | str] = [src, dst]
        if sdp is not None:
            fields["codec"] = codecs_of(sdp)
            addrs.extend(a for a, _, _ in rtp_endpoints(sdp))
        ids = fs.match_fields(fields)
        if fs.has("ip_address"):
            ids |= fs.match_ip(addrs)
        return sorted(ids) if ids else None

    def _set_matched(self, call: _Call, ids: list[str], out: _Out) -> None:
        call.state = MATCHED
        call.ids = ids
        self.c["calls_matched"] += 1
        buf, mv = call.buf, memoryview(call.buf)
        sip_metas = iter(call.buf_meta)
        off = 0
        for k in range(call.buf_n):
            sec, nsec, cap, orig = _REC.unpack_from(buf, off)
            end = off + 16 + cap
            kind = call.buf_kind[k]
            if kind == _SIP:
                meta = _sip_meta(call.call_id, ids, next(sip_metas))
            else:
                meta = call.meta_rtcp if kind == _RTCP else call.meta_rtp
                if meta is None:
                    meta = self._media_meta(call, kind == _RTCP)
            out.add((sec * 1_000_000_000 + nsec, cap, orig, mv[off:end], call.buf_if[k]), meta)
            off = end
        self._drop_held(call)

    def _reject(self, call: _Call) -> None:
        call.state = REJECTED
        self.c["calls_rejected"] += 1
        self.c["unmatched_packets"] += self._drop_held(call)

    def _add_endpoints(self, call: _Call, sdp) -> None:
        for addr, port, kind in rtp_endpoints(sdp):
            try:
                raw = socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
            except OSError:
                continue
            key = _endpoint_key(raw, port)
            old = self._endpoints.get(key)
            if old is not None and old[0] is call:
                continue
            self._endpoints[key] = (call, kind == "rtcp")  # the newest SDP wins a port
            if len(call.endpoints) < 64:
                call.endpoints.append(key)

    def _track_end(self, call: _Call, msg: SipMessage, ts: int) -> None:
        if call.end_ns:
            return
        if msg.is_request:
            if msg.method in ("BYE", "CANCEL"):
                call.end_ns = ts
            return
        status = msg.status
        if status < 200:
            return
        if call.method == "INVITE":
            if msg.cseq_method == "INVITE" and status >= 300 and status not in (401, 407):
                call.end_ns = ts
        elif msg.cseq_method == call.method and status not in (401, 407):
            call.end_ns = ts  # a transaction without a dialog: done at its final response

    # -- time --------------------------------------------------------------------------
    def tick(self, now_ns: int) -> None:
        """Expire calls when no packet has come for a while (live capture, wall clock)."""
        with self._lock:
            if now_ns > self._clock:
                self._clock = now_ns
            self._expire(self._clock)

    def _expire(self, now: int) -> None:
        self._next_expiry = now + 10**9  # at most once per second of capture time
        cfg = self.cfg
        gone = [
            call
            for call in self._calls.values()
            if (call.end_ns and now - call.end_ns > cfg.grace_ns)
            or now - call.last_ns > cfg.idle_timeout_ns
            or (call.state == UNDECIDED and now - call.first_ns > cfg.decide_timeout_ns)
        ]
        for call in gone:
            if (
                call.state == UNDECIDED
                and not call.end_ns
                and now - call.last_ns <= cfg.idle_timeout_ns
            ):
                self._reject(call)  # held too long: stop holding, keep following
                continue
            self._forget(call)
        self._tcp.expire(now)
        self._frags.expire(now)

    def _forget(self, call: _Call, evicted: bool = False) -> None:
        if call.state != MATCHED:
            self.c["calls_unmatched"] += 1
            self.c["unmatched_packets"] += self._drop_held(call)
        for key in call.endpoints:
            hit = self._endpoints.get(key)
            if hit is not None and hit[0] is call:
                del self._endpoints[key]
        self._calls.pop(call.call_id, None)

    def filtered(self) -> int:
        """Packets not forwarded because no call wanted them (not losses)."""
        c = self.c
        return c["unassociated"] + c["unmatched_packets"] + c["tcp_no_message"]

    def finish(self) -> None:
        """End of capture: calls never matched are dropped (counted)."""
        with self._lock:
            for call in list(self._calls.values()):
                self._forget(call)

    # -- figures -----------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        with self._lock:
            out = dict(self.c)
            states = [0, 0, 0]
            for call in self._calls.values():
                states[call.state] += 1
            out["calls_active"] = len(self._calls)
            for name, n in zip(_STATE_NAMES, states, strict=True):
                out[f"calls_{name}_now"] = n
            out["buffered_bytes"] = self._buffered
            out["buffered_packets"] = sum(c.buf_n for c in self._calls.values())
            out["rtp_endpoints"] = len(self._endpoints)
            out["tcp_streams"] = self._tcp.stream_count
            for k, v in self._tcp.counters.items():
                out[f"tcp_{k}"] = v
            for k, v in self._frags.counters.items():
                out[f"fragments_{k}"] = v
            return out
