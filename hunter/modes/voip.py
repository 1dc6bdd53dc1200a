"""VoIP mode (``lc hunt voip``): follow SIP calls, forward the calls filters select, whole.

A :class:`~lc.hunter.modes.sessions.Dissector` for SIP on the shared session engine
(:mod:`lc.hunter.modes.sessions`), which holds a call's packets until a filter
decides and then forwards the call from its first INVITE to its last BYE.

* **Messages**: SIP over UDP (fragmented too) and TCP (framed by Content-Length,
  :class:`lc.common.sip.SipStreamFramer`) on ``--sip-port``. A **call** is a Call-ID:
  an INVITE dialog, or a transaction without SDP (REGISTER, MESSAGE, OPTIONS,
  SUBSCRIBE/NOTIFY, ...).
* **RTP/RTCP** belong to a call when their (address, port), as source or destination,
  was announced by one of its SDPs (offer and answer, session- or media-level ``c=``,
  every ``m=`` line, ``a=rtcp``; re-INVITE/UPDATE/183/200 add the endpoints they move
  to; the newest SDP wins a port): those endpoints are the call's aliases. RTP on an
  RTCP port's neighbour is told apart by its payload type byte (rtcp-mux, RFC 5761).
  No bare-port guessing: media no SDP announced belongs to no call.
* **Filters**: ``sip_user`` and ``phone_number`` (From, To, Request-URI,
  P-Asserted-Identity, P-Preferred-Identity users), ``sip_uri`` (those URIs),
  ``call_id``, ``codec`` (the SDP's encodings), ``ip_address`` (the packet's
  addresses and the SDP's media addresses).
* **Settled**: an undecided call whose INVITE got a final answer (401/407 challenges
  aside) without a match stops being held (its later SIP is still judged).
* **Ends** by the SIP call-state table (:mod:`lc.common.sipcall`, the one the
  processor's call index uses): BYE, CANCEL, a final failure, a transaction's final
  response; a retry or a crossing 200 revives it.
* **Events**: one ``CallEvent`` per call when it leaves the table (``--call-grace``
  after its end, idle, evicted, or at the end of the capture): Call-ID, initial
  method, state, From/To, packets and bytes per protocol, codecs, the final status of
  the initial request, and the flow of the first INVITE (else the first request).

Strings from the wire go out through :func:`lc.common.text.wire_text`: users and URIs
at most 256 characters, Call-IDs 1024, undecodable bytes replaced with U+FFFD.
"""

from __future__ import annotations

import heapq
import socket
import struct
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from lc.common.flow import UDP4_PAYLOAD
from lc.common.sdp import SdpError, media_of
from lc.common.sip import SipMessage, SipStreamFramer, parse_sip, uris_of, users_of
from lc.common.sipcall import CallState
from lc.common.text import wire_text
from lc.hunter.capture import Chunk
from lc.hunter.modes.base import (
    ModeContext,
    ModeSpec,
    megabytes,
    option,
    port_list,
    port_range,
    positive_int,
    seconds_ns,
)
from lc.hunter.modes.sessions import IP_FRAGMENTS, Dissector, SessionMode, set_flow
from lc.hunter.session import (
    MATCHED,
    REJECTED,
    UNDECIDED,
    Out,
    Session,
    SessionLimits,
    SessionTable,
)
from lc.proto import lc_pb2

__all__ = [
    "SPEC",
    "VOIP_FILTER_TYPES",
    "SipDissector",
    "VoipConfig",
    "VoipMode",
    "voip_bpf",
    "voip_mode",
]

VOIP_FILTER_TYPES = ("sip_user", "phone_number", "sip_uri", "call_id", "codec", "ip_address")

_RTP, _RTCP, _SIP = 0, 1, 2
_USER_MAX = 256
_CALL_ID_MAX = 1024
_MAX_CODECS = 16
_ADDRESS_CACHE = 4096
_VERDICT_CACHE = 4096
_SDP_CACHE = 512
_SDP_CACHE_LEN = 2048  # bytes
_VERDICT_KEY_MAX = 1024  # characters


@dataclass(slots=True)
class VoipConfig:
    sip_ports: frozenset[int] = option(
        "--sip-port",
        "5060,5061",
        port_list,
        "Comma-separated ports parsed as SIP (UDP and TCP); also the kernel filter's.",
        "PORTS",
    )
    rtp_range: tuple[int, int] = option(
        "--rtp-port-range",
        "10000-32768",
        port_range,
        "UDP ports captured for RTP/RTCP (tied to calls by their SDP, not by port).",
        "LOW-HIGH",
    )
    max_calls: int = option("--max-calls", "20000", positive_int, "Calls followed at once.", "N")
    max_call_packets: int = option(
        "--call-buffer-packets", "2000", positive_int, "Packets held per undecided call.", "N"
    )
    max_buffer_bytes: int = option(
        "--call-buffer-mb",
        "256",
        megabytes,
        "Memory for held packets, over all undecided calls.",
        "MB",
    )
    grace_ns: int = option(
        "--call-grace",
        "5",
        seconds_ns,
        "A call is followed this long after it ends (late RTP, the 200 to BYE).",
        "S",
    )
    idle_timeout_ns: int = option(
        "--call-idle-timeout", "300", seconds_ns, "A call without packets this long is over.", "S"
    )
    decide_timeout_ns: int = option(
        "--call-decide-timeout",
        "60",
        seconds_ns,
        "Stop holding a call that no filter matched within this long.",
        "S",
    )

    def validate(self) -> None:
        """Each flag is checked on its own; a SIP port inside the RTP range is parsed
        as SIP (messages win over media)."""

    def limits(self) -> SessionLimits:
        return SessionLimits(
            max_sessions=self.max_calls,
            max_held_packets=self.max_call_packets,
            max_held_bytes=self.max_buffer_bytes,
            grace_ns=self.grace_ns,
            idle_timeout_ns=self.idle_timeout_ns,
            decide_timeout_ns=self.decide_timeout_ns,
        )


def voip_bpf(sip_ports: frozenset[int] | set[int], rtp_range: tuple[int, int]) -> str:
    """Kernel filter: SIP ports (UDP and TCP), the RTP port range (UDP), IP fragments."""
    sip = " or ".join(f"port {p}" for p in sorted(sip_ports))
    lo, hi = rtp_range
    return f"((udp or tcp) and ({sip})) or (udp and portrange {lo}-{hi}) or {IP_FRAGMENTS}"


class _Call:
    """The dissector's view of a call (``Session.info``)."""

    __slots__ = ("codecs", "flow", "flow_is_invite", "from_uri", "from_user", "last_status",
                 "state", "to_uri", "to_user")  # fmt: skip

    def __init__(self) -> None:
        self.state = CallState()
        self.flow: tuple | None = None
        self.flow_is_invite = False
        self.from_user = self.to_user = self.from_uri = self.to_uri = ""
        self.codecs: list[str] = []
        self.last_status = 0


class SipDissector(Dissector):
    protocol = "sip"
    tags = ("rtp", "rtcp", "sip")
    message_tag = _SIP
    # rtcp-mux (RFC 5761): on an RTP endpoint, payload types 192-223 are RTCP.
    demux = (_RTP, 1, 192, 223, _RTCP)
    noun = ("call", "calls")
    alias_noun = "rtp_endpoints"

    def __init__(self, cfg: VoipConfig) -> None:
        self.cfg = cfg
        self.ports = cfg.sip_ports
        self.bulk: _Bulk | None = None  # the chunk in flight through VoipMode._process
        self._current: Session | None = None  # the call of the message being handled
        # SDP address text -> IPv4 as an int, IPv6 as 16 bytes (a bounded cache).
        self._addresses: dict[str, int | bytes] = {}
        # SDP body -> (codecs, RTP/RTCP endpoints) (a bounded cache).
        self._sdps: dict[bytes, tuple[tuple[str, ...], list[tuple[str, int, str]]]] = {}
        self.sdp_malformed = 0
        self.sdp_unusable = 0  # SDP media addresses that are no IP address

    def kernel_bpf(self) -> str:
        return voip_bpf(self.cfg.sip_ports, self.cfg.rtp_range)

    def new_framer(self) -> SipStreamFramer:
        return SipStreamFramer()

    def parse(self, payload: memoryview) -> SipMessage:
        return parse_sip(payload)

    def session_key(self, msg: SipMessage) -> str:  # type: ignore[override]
        return msg.call_id

    def new_info(self, msg: SipMessage, flow: tuple) -> _Call:  # type: ignore[override]
        return _Call()

    def on_message(self, s: Session, msg: SipMessage, flow: tuple, ts: int) -> object:  # type: ignore[override]
        call: _Call = s.info  # type: ignore[assignment]
        self._current = s
        bulk = self.bulk
        if bulk is not None:
            bulk.touched[s] = bulk.pos
        media = None
        body = msg.body
        if body and (msg.content_type == "application/sdp" or body[:2] == b"v="):
            # The codecs and endpoints of an SDP, remembered by its bytes: offers and
            # answers come back (183 then 200, retransmissions, refreshes).
            media = self._sdps.get(body)
            if media is None:
                try:
                    media = media_of(body)  # codecs_of and rtp_endpoints of parse_sdp
                except SdpError:
                    self.sdp_malformed += 1
                else:
                    if len(body) <= _SDP_CACHE_LEN:
                        if len(self._sdps) >= _SDP_CACHE:
                            self._sdps.clear()
                        self._sdps[body] = media
        if media is not None:
            found, endpoints = media
            self._add_endpoints(s, endpoints)
            codecs = call.codecs
            if len(codecs) < _MAX_CODECS:
                for name in found:
                    if name not in codecs:
                        codecs.append(name)  # raw: made wire-safe in describe()
        if not call.flow_is_invite:
            if msg.is_request:
                if call.flow is None or msg.method == "INVITE":
                    call.flow = flow
                    call.flow_is_invite = msg.method == "INVITE"
            elif call.flow is None:  # a response first: its reverse is the request's flow
                call.flow = (flow[2], flow[3], flow[0], flow[1], flow[4])
        if not call.from_user and msg.from_user:
            call.from_user = msg.from_user
            call.from_uri = msg.from_uri
        if not call.to_user and msg.to_user:
            call.to_user = msg.to_user
            call.to_uri = msg.to_uri
        cs = call.state
        cs.apply(msg, ts)
        if msg.status >= 200 and msg.cseq_method == cs.method:
            call.last_status = msg.status
        return media

    def filter_values(self, msg: SipMessage, media: object) -> tuple[dict[str, object], list]:  # type: ignore[override]
        users = users_of(msg)
        fields: dict[str, object] = {
            "sip_user": users,
            "phone_number": users,
            "sip_uri": uris_of(msg),
            "call_id": (msg.call_id,),
        }
        addrs: list = []
        if media is not None:  # from on_message: the SDP's codecs and endpoints
            codecs, endpoints = media  # type: ignore[misc]
            fields["codec"] = codecs
            addrs.extend(a for a, _, _ in endpoints)
        return fields, addrs

    def settled(self, s: Session, msg: SipMessage) -> bool:  # type: ignore[override]
        # The dialog is settled (its final response carried the last identities an
        # INVITE usually gets) and nothing matched.
        return msg.status >= 200 and msg.cseq_method == "INVITE" and msg.status not in (401, 407)

    def summary(self, msg: SipMessage) -> tuple | None:  # type: ignore[override]
        # A plain tuple while held: a protobuf message costs kilobytes (its arena), and
        # 10,000 undecided calls hold tens of thousands of SIP packets.
        # Raw strings: made wire-safe when (if) the packet is forwarded.
        # None for a message of a rejected call (the one on_message saw last: the
        # engine asks right after judging it), whose packets are neither held nor
        # forwarded: its parties need not be read.
        if self._current is not None and self._current.state == REJECTED:
            return None
        return (
            msg.method,
            msg.status,
            msg.cseq_method,
            msg.from_user,
            msg.to_user,
            msg.from_uri,
            msg.to_uri,
        )

    def after_message(self, s: Session, msg: SipMessage, ts: int) -> None:  # type: ignore[override]
        s.end_ns = s.info.state.end_ns or 0  # type: ignore[union-attr]

    def meta(self, s: Session, tag: int, summary: object) -> lc_pb2.PacketMeta:
        if tag != _SIP:
            return lc_pb2.PacketMeta(protocol=self.tags[tag], session_id=s.name, filter_ids=s.ids)
        method, status, cseq, from_user, to_user, from_uri, to_uri = summary  # type: ignore[misc]
        return lc_pb2.PacketMeta(
            protocol="sip",
            session_id=s.name,
            filter_ids=s.ids,
            sip=lc_pb2.SipSummary(
                method=wire_text(method, 64),
                status=status,
                cseq_method=wire_text(cseq, 64),
                from_user=wire_text(from_user, _USER_MAX),
                to_user=wire_text(to_user, _USER_MAX),
                from_uri=wire_text(from_uri, _USER_MAX),
                to_uri=wire_text(to_uri, _USER_MAX),
            ),
        )

    def describe(self, s: Session, ev: lc_pb2.Event) -> None:
        call: _Call = s.info  # type: ignore[assignment]
        if call.flow is not None:
            set_flow(ev, call.flow)
        pk, by = s.pk, s.by
        ev.call.CopyFrom(
            lc_pb2.CallEvent(
                call_id=s.name,
                method=wire_text(call.state.method, 64),
                state=call.state.state,
                from_user=wire_text(call.from_user, _USER_MAX),
                to_user=wire_text(call.to_user, _USER_MAX),
                from_uri=wire_text(call.from_uri, _USER_MAX),
                to_uri=wire_text(call.to_uri, _USER_MAX),
                sip_packets=pk[_SIP],
                rtp_packets=pk[_RTP],
                rtcp_packets=pk[_RTCP],
                sip_bytes=by[_SIP],
                rtp_bytes=by[_RTP],
                rtcp_bytes=by[_RTCP],
                codecs=[wire_text(c, 64) for c in call.codecs[:_MAX_CODECS]],
                last_status=call.last_status,
            )
        )

    def figures(self) -> dict[str, int]:
        return {"sdp_malformed": self.sdp_malformed, "sdp_unusable_addresses": self.sdp_unusable}

    def _add_endpoints(self, s: Session, endpoints: list[tuple[str, int, str]]) -> None:
        alias = self.table.alias
        known = self._addresses
        for addr, port, kind in endpoints:
            raw = known.get(addr)
            if raw is None:
                try:
                    raw = socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
                except (OSError, ValueError):  # a host name, or junk (a NUL: ValueError)
                    self.sdp_unusable += 1
                    continue
                if len(raw) == 4:
                    raw = int.from_bytes(raw, "big")
                if len(known) >= _ADDRESS_CACHE:
                    known.clear()
                known[addr] = raw
            key = raw << 16 | port if type(raw) is int else (raw, port)
            alias(s, key, _RTCP if kind == "rtcp" else _RTP)


# --------------------------------------------------------------------------- the engine

#: Chunks of fewer packets take the engine's per-packet loop: numpy's fixed cost per
#: call outweighs what it saves on a handful of packets.
BULK_MIN = 64
#: Chunks taken by the per-packet loop after one whose media was mostly walked.
LOOP_RUN = 31
_LT_ETHERNET = 1
# Kinds of a chunk's packets (_Bulk.kind). WALK: taken one by one, in order, by the
# per-packet code (SIP and everything else the engine decodes; media of calls not
# decided; media whose call or endpoint changed earlier in the chunk). The others
# are media of calls whose state and endpoints did not change before them in the
# chunk, settled in bulk at its end: NOBODY (no call's endpoint), DROP (a call
# rejected), SEND (a call matched: forwarded), SENT (SEND whose counts went into its
# call already, when the call left the table in the middle of the chunk).
_WALK, _NOBODY, _DROP, _SEND, _SENT = 0, 1, 2, 3, 4
# A packet's kind by its call's state (UNDECIDED, MATCHED, REJECTED; no call: -1).
_KIND_OF_STATE = np.zeros(4, np.int8)
_KIND_OF_STATE[[UNDECIDED, MATCHED, REJECTED, -1]] = [_WALK, _SEND, _DROP, _NOBODY]
_KIND_OF_STATE_L = _KIND_OF_STATE.tolist()
# The bytes of an untagged Ethernet/IPv4/UDP frame read per packet, from offset 12:
# ethertype, version/IHL, flags/fragment offset, protocol, addresses, ports, and the
# first two payload bytes (RTCP's packet type under rtcp-mux, RFC 5761).
_WIN_AT = 12
_WIN = 32
# From frame offset 14: IPv4 total length, addresses, UDP ports and length.
_PEEK_SIP4 = struct.Struct("!2xH8x4s4sHHH")


class _Groups:
    """Positions of a chunk's packets grouped by a value (an endpoint, a call), each
    group in order; ``extra`` holds positions that joined a group later."""

    __slots__ = ("bounds", "extra", "index", "pos", "pos_list")

    def __init__(self, values: np.ndarray, positions: np.ndarray, bits: int) -> None:
        # One sort of value << bits | position (positions < 2**bits, values < 2**48):
        # groups in value order, each in position order.
        if bits <= 15:
            both = np.sort((values << bits) | positions)
            v = both >> bits
            self.pos = both & ((1 << bits) - 1)
        else:
            order = np.argsort(values, kind="stable")
            v = values[order]
            self.pos = positions[order]
        if len(v):
            first = np.flatnonzero(np.concatenate(([True], v[1:] != v[:-1])))
            self.index = dict(zip(v[first].tolist(), range(len(first)), strict=True))
            self.bounds = np.append(first, len(v))
        else:
            self.index = {}
            self.bounds = np.zeros(1, np.int64)
        self.pos_list: list[int] | None = None
        self.extra: dict[int, list[int]] = {}

    def __contains__(self, value: object) -> bool:
        return value in self.index or value in self.extra

    def after(self, value: object, at: int) -> list[int]:
        """The positions from ``at`` on in the group of ``value``, in order."""
        i = self.index.get(value)
        more = self.extra.get(value)
        if i is None:
            return sorted({j for j in more if j >= at}) if more else []
        pos = self.pos_list
        if pos is None:
            pos = self.pos_list = self.pos.tolist()
            if type(self.bounds) is not list:
                self.bounds = self.bounds.tolist()
        lo, hi = self.bounds[i], self.bounds[i + 1]
        lo = bisect_left(pos, at, lo, hi)
        if more:
            return sorted({*pos[lo:hi], *(j for j in more if j >= at)})
        return pos[lo:hi]

    def array_after(self, value: object, at: int) -> np.ndarray | None:
        """The positions from ``at`` on in the group of ``value`` (a group without
        ``extra``), as an array; None when there is none."""
        i = self.index.get(value)
        if i is None:
            return None
        b = self.bounds
        if type(b) is not list:
            b = self.bounds = b.tolist()
        base = self.pos[b[i] : b[i + 1]]
        return base[np.searchsorted(base, at) :]

    def join(self, value: int, positions: list[int]) -> None:
        more = self.extra.get(value)
        if more is None:
            self.extra[value] = positions
        else:
            more.extend(positions)


class _Bulk:
    """A chunk in flight through :meth:`VoipMode._process` (see there).

    Per packet: ``kind``, and for media its call (``sid``, an index into ``sess``) and
    tag as the per-packet loop would find them at its turn, given the table as it is
    now: after each walked packet, the packets its changes of the table concern are
    brought up to date (:meth:`refresh`). ``*_v`` are memoryviews of the arrays, for
    the few packets at a time that the walk's changes concern."""

    __slots__ = ("aliases", "by_dst", "by_src", "cap", "count_rejected", "demux", "dirty_calls",
                 "dirty_forgot", "dirty_keys", "dkey", "dkey_v", "index", "kind", "kind_v", "mode",
                 "moved", "mux", "muxable", "ntags", "pos", "sess", "sid", "sid_v", "skey_v",
                 "tag", "tag_v", "touched", "ts")  # fmt: skip

    def __init__(self, mode: VoipMode) -> None:
        self.mode = mode
        self.aliases = mode.table.aliases
        self.pos = -1  # the packet the walk is at
        self.moved: list[int] = []  # heap: packets sent to the walk after it started
        # Calls the walk touched (a message or a media packet): the position of the last.
        self.touched: dict[Session, int] = {}
        # What the walk's packet changed: endpoints, calls decided, calls gone (as
        # indices into sess).
        self.dirty_keys: list[object] = []
        self.dirty_calls: list[int] = []
        self.dirty_forgot: list[int] = []

    def _call(self, s: Session) -> int:
        x = self.index.get(s)
        if x is None:
            x = self.index[s] = len(self.sess)
            self.sess.append(s)
        return x

    def _place(self, j: int, x: int, t: int, k: int) -> None:
        """Packet ``j`` (after the walk's position) belongs to call ``x`` (-1: none) with
        tag ``t`` and kind ``k`` now."""
        self.sid_v[j] = x
        dtag, to = self.demux[0], self.demux[4]
        if t == dtag and self.muxable[j]:
            t = to
        self.tag_v[j] = t
        kind_v = self.kind_v
        if kind_v[j] != k:
            if k == _WALK:
                heapq.heappush(self.moved, j)
            kind_v[j] = k

    def _resolve(self, js: list[int]) -> None:
        """Look media packets ``js`` up again, one by one, in the table as it is now."""
        get = self.aliases.get
        dkey_v, skey_v = self.dkey_v, self.skey_v
        by_src = self.by_src
        place = self._place
        for j in js:
            src = skey_v[j]
            hit = get(dkey_v[j])
            if hit is None:
                by_src.join(src, [j])  # its source decides from now on
                hit = get(src)
                if hit is None:
                    place(j, -1, 0, _NOBODY)
                    continue
            s, t = hit
            place(j, self._call(s), t, _KIND_OF_STATE_L[s.state])

    def key_changed(self, key: object) -> None:
        """An endpoint changed hands, appeared or went (see :meth:`refresh`)."""
        if key in self.by_dst or key in self.by_src:  # IPv6 endpoints are never in bulk
            self.dirty_keys.append(key)

    def state_changed(self, s: Session) -> None:
        """A call was decided (see :meth:`refresh`)."""
        x = self.index.get(s)
        if x is not None:
            self.dirty_calls.append(x)

    def forgetting(self, s: Session) -> None:
        """A call leaves the table (evicted): its counts so far are made whole for its
        event; its later packets are looked up again once it is gone."""
        x = self.index.get(s)
        if x is None:
            return
        self.dirty_forgot.append(x)
        p = self.pos
        kind = self.kind[:p]
        js = np.flatnonzero((self.sid[:p] == x) & ((kind == _DROP) | (kind == _SEND)))
        if len(js):
            self.settle(js)
            k = kind[js]
            kind[js] = np.where(k == _SEND, _SENT, _WALK)  # _WALK: nothing left to do

    def _assign(self, js: np.ndarray, s: Session, t: int) -> None:
        """Packets ``js`` belong to call ``s`` with tag ``t`` now (their destination is
        its endpoint)."""
        x = self._call(s)
        k = _KIND_OF_STATE_L[s.state]
        self.sid[js] = x
        dtag, to = self.demux[0], self.demux[4]
        self.tag[js] = np.where(self.mux[js], to, t) if t == dtag else t
        self._restate(js, k)

    def _restate(self, js: np.ndarray, k: int) -> None:
        kind = self.kind
        if k == _WALK:
            new = js[kind[js] != _WALK]
            if len(new):
                push, moved = heapq.heappush, self.moved
                for j in new.tolist():
                    push(moved, j)
        kind[js] = k

    def refresh(self) -> None:
        """After the walk's packet: the later packets its changes concern are brought up
        to date with the table as it is now. A packet's destination decides its call
        when it is an endpoint: packets to a changed endpoint belong to its owner now;
        those whose call was decided follow its state; the others (their call gone,
        their source changed) are looked up one by one."""
        at = self.pos + 1
        full: list[np.ndarray] = []
        if self.dirty_keys:
            get = self.aliases.get
            for key in set(self.dirty_keys):
                js = self.by_dst.array_after(key, at)
                if js is not None and len(js):
                    hit = get(key)
                    if hit is None:
                        full.append(js)
                    else:
                        self._assign(js, hit[0], hit[1])
                more = self.by_src.after(key, at)
                if more:
                    full.append(np.array(more, np.int64))
            self.dirty_keys.clear()
        if self.dirty_calls:
            sess = self.sess
            sid = self.sid[at:]
            for x in set(self.dirty_calls):
                js = np.flatnonzero(sid == x)
                if len(js):
                    self._restate(js + at, _KIND_OF_STATE_L[sess[x].state])
            self.dirty_calls.clear()
        if self.dirty_forgot:
            sid = self.sid[at:]
            for x in set(self.dirty_forgot):
                js = np.flatnonzero(sid == x)
                if len(js):
                    full.append(js + at)
            self.dirty_forgot.clear()
        if full:
            js = np.unique(np.concatenate(full)) if len(full) > 1 else full[0]
            self._resolve(js.tolist())

    def settle(self, js: np.ndarray) -> None:
        """Apply what the bulk packets ``js`` (DROP and SEND, in order) do to their calls:
        packet and byte counts, last activity, the count of packets not forwarded."""
        kind = self.kind[js]
        drop = kind == _DROP
        ndrop = int(np.count_nonzero(drop))
        if ndrop:
            self.mode.table.unmatched_packets += ndrop
        counted = js if self.count_rejected or not ndrop else js[~drop]
        sess = self.sess
        if len(counted):
            nt = self.ntags
            codes = self.sid[counted] * nt + self.tag[counted]
            pk = np.bincount(codes)
            by = np.bincount(codes, weights=self.cap[counted])
            used = np.flatnonzero(pk)
            for code, n, b in zip(used.tolist(), pk[used].tolist(), by[used].tolist(),
                                  strict=True):  # fmt: skip
                x, t = divmod(code, nt)
                s = sess[x]
                s.pk[t] += n
                s.by[t] += int(b)
        # Last activity: the last packet of each call, unless the walk touched it later.
        last = np.full(len(sess), -1, np.int64)
        np.maximum.at(last, self.sid[js], js)
        xs = np.flatnonzero(last >= 0)
        pos = last[xs]
        touched = self.touched
        for x, j, t in zip(xs.tolist(), pos.tolist(), self.ts[pos].tolist(), strict=True):
            s = sess[x]
            if touched.get(s, -1) < j:
                s.last_ns = t


class _Table(SessionTable):
    """The session table, telling the chunk in flight of every change that concerns the
    packets it placed in bulk (endpoints, decisions, calls leaving)."""

    bulk: _Bulk | None = None

    def alias(self, s: Session, key: object, tag: int, max_aliases: int = 64) -> None:
        old = self.aliases.get(key)
        super().alias(s, key, tag, max_aliases)
        if self.bulk is not None and (old is None or old[0] is not s):
            self.bulk.key_changed(key)

    def decide(self, s: Session, ids: list[str], out: Out) -> None:
        super().decide(s, ids, out)
        if self.bulk is not None:
            self.bulk.state_changed(s)

    def reject(self, s: Session) -> None:
        super().reject(s)
        if self.bulk is not None:
            self.bulk.state_changed(s)

    def forget(self, s: Session, evicted: bool = False) -> None:
        if self.bulk is not None:
            self.bulk.forgetting(s)
        super().forget(s, evicted)


class VoipMode(SessionMode):
    """The session engine with a faster per-chunk loop for media (see :meth:`_process`)."""

    def __init__(self, ctx: ModeContext, dissector: SipDissector, limits: SessionLimits) -> None:
        super().__init__(ctx, dissector, limits)
        assert not self._conn
        t = self.table
        self.table = _Table(limits, t.ntags, t.message_tag, t.meta, t.on_forget, t.on_decided)
        dissector.table = self.table
        ports = sorted(dissector.ports)
        self._ports = [np.uint16(p) for p in ports]
        tag, byte = self._demux[:2]
        self._demux_at = UDP4_PAYLOAD + byte - _WIN_AT  # in the window
        assert tag < 0 or self._demux_at < _WIN
        self._loop_chunks = 0  # chunks still to take with the per-packet loop
        # Filter verdicts on messages without SDP, by their URIs and Call-ID, for the
        # filter set they were made with (a bounded cache).
        self._verdicts: tuple[object, dict[tuple[str, ...], frozenset[str]]] = (None, {})

    def _match(self, msg: SipMessage, ctx: object, flow: tuple) -> list[str] | None:  # type: ignore[override]
        """As the engine matches, with the verdict on a message without SDP remembered by
        the values it depends on (its URIs and Call-ID; users derive from URIs): the
        messages of a dialog repeat them."""
        fs = self._fs
        if ctx is not None or fs is None or not len(fs):
            return super()._match(msg, ctx, flow)
        key = (msg.from_uri, msg.to_uri, msg.request_uri, msg.pai_uris, msg.ppi_uris,
               msg.call_id)  # fmt: skip
        cache = self._verdicts
        if cache[0] is not fs:
            cache = self._verdicts = (fs, {})
        ids = cache[1].get(key)
        if ids is None:
            fields, _ = self.dis.filter_values(msg, None)
            ids = frozenset(fs.match_fields(fields))
            if _key_length(key) <= _VERDICT_KEY_MAX:
                if len(cache[1]) >= _VERDICT_CACHE:
                    cache[1].clear()
                cache[1][key] = ids
        if fs.has("ip_address"):
            ids = ids | fs.match_ip([flow[0], flow[2]])
        return sorted(ids) if ids else None

    def _alias_packet(self, s: Session, tag: int, pkt: tuple, out: Out) -> None:
        bulk = self.table.bulk
        if bulk is not None:
            bulk.touched[s] = bulk.pos
        super()._alias_packet(s, tag, pkt, out)

    def _process(self, chunk: Chunk, out: Out) -> None:
        """The chunk's packets, with the outcome of the per-packet loop, media in bulk.

        Every untagged Ethernet/IPv4/UDP packet off the SIP ports is looked up in the
        endpoint table as it stands at the chunk's start: one look-up per distinct
        endpoint (numpy). Packets of calls rejected, of calls matched, and of no call
        are settled in bulk (counted; the matched ones forwarded in their place among
        the chunk's output); the rest is walked in order by the per-packet code (SIP,
        media of undecided calls, anything else). A change the walk makes that would
        have placed a later bulk packet otherwise (its endpoint changed hands or
        appeared, its call was decided or left the table) sends that packet to the
        walk; a call leaving the table gets its counts first (its event)."""
        n = len(chunk)
        single = chunk.iface if isinstance(chunk.iface, int) else None
        interfaces = self.interfaces
        if n < BULK_MIN or (single is not None and interfaces[single][1] != _LT_ETHERNET):
            super()._process(chunk, out)
            return
        if self._loop_chunks:
            # Most media of the last chunk taken in bulk had to be walked (calls held
            # undecided with early media): the per-packet loop costs less. Bulk is
            # tried again every LOOP_RUN chunks.
            self._loop_chunks -= 1
            super()._process(chunk, out)
            return
        rec = chunk.records
        buf = np.frombuffer(rec, np.uint8)
        cap = np.frombuffer(chunk.caplen, np.uint32)
        ends = np.cumsum(cap.astype(np.int64) + 16)
        starts = ends - cap - 16
        at = starts + (16 + _WIN_AT)
        over = int(at[-1]) + _WIN - len(buf)
        if over > 0:  # short last frames: their windows would overrun the records
            buf = np.concatenate((buf, np.zeros(over, np.uint8)))
        win = as_strided(buf, shape=(len(buf) - _WIN + 1, _WIN), strides=(1, 1))[at]
        w16 = win.view(">u2")
        sport, dport = w16[:, 11], w16[:, 12]
        udp4 = (
            (cap >= 38)
            & (w16[:, 0] == 0x0800)
            & (win[:, 2] == 0x45)
            & ((w16[:, 4] & 0x3FFF) == 0)
            & (win[:, 11] == 17)
        )
        if single is None:
            lts = np.array([lt for _, lt in interfaces], np.int32)
            udp4 &= lts[np.frombuffer(chunk.iface, np.uint16)] == _LT_ETHERNET
        sip = None
        for port in self._ports:
            m = (sport == port) | (dport == port)
            sip = m if sip is None else sip | m
        fast = udp4 & ~sip if sip is not None else udp4
        if sip is not None:
            # SIP over UDP that decode_packet's fast path would take (a whole IPv4 header
            # and UDP header): the walk reads it without decoding (_sip_datagram).
            sip &= udp4 & (cap >= 42) & (w16[:, 2] >= 28) & (w16[:, 13] >= 8)
        fidx = np.flatnonzero(fast)
        if not len(fidx):
            super()._process(chunk, out)
            return
        dkey = (w16[:, 9].astype(np.int64) << 32) | (w16[:, 10].astype(np.int64) << 16) | dport
        skey = (w16[:, 7].astype(np.int64) << 32) | (w16[:, 8].astype(np.int64) << 16) | sport

        # One look-up per distinct endpoint: destination first, then source.
        table = self.table
        get = table.aliases.get
        sess: list[Session] = []
        index: dict[Session, int] = {}
        bits = max(1, (n - 1).bit_length())

        def look_up(groups: _Groups) -> tuple[list[int], list[int]]:
            """(session number or -1, tag) per distinct endpoint of ``groups``."""
            sids: list[int] = []
            tags: list[int] = []
            for k in groups.index:
                hit = get(k)
                if hit is None:
                    sids.append(-1)
                    tags.append(0)
                    continue
                s, t = hit
                x = index.get(s)
                if x is None:
                    x = index[s] = len(sess)
                    sess.append(s)
                sids.append(x)
                tags.append(t)
            return sids, tags

        by_dst = _Groups(dkey[fidx], fidx, bits)
        sid_u, tag_u = look_up(by_dst)
        counts = np.diff(by_dst.bounds)
        sid = np.full(n, -1, np.int32)
        tag = np.zeros(n, np.int8)
        sid[by_dst.pos] = np.repeat(np.array(sid_u, np.int32), counts)
        tag[by_dst.pos] = np.repeat(np.array(tag_u, np.int8), counts)
        miss = fidx[sid[fidx] < 0]
        by_src = _Groups(skey[miss], miss, bits)
        if len(miss):
            sid_m, tag_m = look_up(by_src)
            counts = np.diff(by_src.bounds)
            sid[by_src.pos] = np.repeat(np.array(sid_m, np.int32), counts)
            tag[by_src.pos] = np.repeat(np.array(tag_m, np.int8), counts)
        dtag, dbyte, dlo, dhi, dto = self._demux
        bulk = _Bulk(self)
        if dtag >= 0:
            # Packets whose payload byte says RTCP when their endpoint is an RTP one.
            b = win[:, self._demux_at]
            mux = (cap > UDP4_PAYLOAD + dbyte) & (b >= dlo) & (b <= dhi) & fast
            tag[(tag == dtag) & mux] = dto
            bulk.mux, bulk.muxable = mux, memoryview(mux)
        states = np.array([s.state for s in sess] + [-1], np.int8)
        kind = _KIND_OF_STATE[states[sid]]  # no call (-1): the last
        kind[~fast] = _WALK
        bulk.kind, bulk.sid, bulk.tag, bulk.sess, bulk.index = kind, sid, tag, sess, index
        bulk.kind_v, bulk.sid_v, bulk.tag_v = memoryview(kind), memoryview(sid), memoryview(tag)
        bulk.dkey = dkey
        bulk.dkey_v, bulk.skey_v = memoryview(dkey), memoryview(skey)
        bulk.demux = self._demux
        # Media by destination, and by source where the destination is no endpoint.
        bulk.by_dst, bulk.by_src = by_dst, by_src
        bulk.ts = np.frombuffer(chunk.ts_ns, np.int64)
        bulk.cap = cap
        bulk.ntags = len(self.dis.tags)
        bulk.count_rejected = self.events_all
        wout = Out()
        wpos: list[int] = []
        table.bulk = self.dis.bulk = bulk
        try:
            self._walk(chunk, bulk, np.flatnonzero(kind == _WALK).tolist(), fast, sip, starts,
                       wout, wpos)  # fmt: skip
            js = np.flatnonzero((kind == _DROP) | (kind == _SEND))
            if len(js):
                bulk.settle(js)
        finally:
            table.bulk = self.dis.bulk = None
        self.c["unassociated"] += int(np.count_nonzero(kind == _NOBODY))
        self._merge(chunk, bulk, starts, ends, wout, wpos, out)
        last = chunk.ts_ns[n - 1]
        if last > self._clock:
            self._clock = last

    def _walk(
        self,
        chunk: Chunk,
        bulk: _Bulk,
        walk: list[int],
        fast: np.ndarray,
        sip: np.ndarray | None,
        starts: np.ndarray,
        out: Out,
        wpos: list[int],
    ) -> None:
        """The per-packet loop over the walked packets (and those moved to the walk)."""
        rec = chunk.records
        mv = memoryview(rec)
        interfaces = self.interfaces
        single = chunk.iface if isinstance(chunk.iface, int) else None
        iface_col = chunk.iface
        ts_col, cap_col, orig_col = chunk.ts_ns, chunk.caplen, chunk.origlen
        lt = interfaces[single][1] if single is not None else 0
        ifx = single
        aliases = self.table.aliases
        hold = self.table.hold
        meta_of = self.dis.meta
        count_rejected = self.events_all
        dtag, dbyte, dlo, dhi, dto = self._demux
        dcap = UDP4_PAYLOAD + dbyte
        dat = 16 + dcap
        touched = bulk.touched
        moved = bulk.moved
        dirty_keys, dirty_calls, dirty_forgot = bulk.dirty_keys, bulk.dirty_calls, bulk.dirty_forgot
        pop = heapq.heappop
        fast_l = memoryview(fast)  # only the walked packets are read: no list of all
        sip_l = memoryview(sip) if sip is not None and self._udp and not self._udp_flows else None
        peek_sip = _PEEK_SIP4.unpack_from
        starts_l = memoryview(starts)
        dkey, skey = bulk.dkey_v, bulk.skey_v
        unassociated = unmatched = walked = 0
        nfast = int(np.count_nonzero(fast))
        matched, rejected = MATCHED, REJECTED
        kind = memoryview(bulk.kind)
        i, nw = 0, len(walk)
        last = -1
        while True:
            if moved and (i >= nw or moved[0] < walk[i]):
                p = pop(moved)
            elif i < nw:
                p = walk[i]
                i += 1
            else:
                break
            if p <= last or kind[p]:  # twice in the walk; no longer for the walk
                continue
            last = bulk.pos = p
            cap = cap_col[p]
            start = starts_l[p]
            end = start + 16 + cap
            if single is None:
                ifx = iface_col[p]
                lt = interfaces[ifx][1]
            before = len(out)
            if fast_l[p]:
                # As SessionMode._process does it, with the table as it is now.
                walked += 1
                hit = aliases.get(dkey[p]) or aliases.get(skey[p])
                if hit is None:
                    unassociated += 1
                    continue
                s, tag = hit
                ts = ts_col[p]
                s.last_ns = ts
                touched[s] = p
                st = s.state
                if st == rejected:
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
                    out.add((ts, cap, orig_col[p], mv[start:end], ifx), meta)
                else:
                    hold(s, (ts, cap, orig_col[p], mv[start:end], ifx), tag)
            elif sip_l is not None and sip_l[p]:
                # What _slow does with it, without decode_packet: its fast path's fields.
                total, src, dst, sport, dport, ulen = peek_sip(rec, start + 30)
                last_byte = 14 + total
                if last_byte > cap:
                    last_byte = cap
                pend = 34 + ulen
                if pend > last_byte:
                    pend = last_byte
                self._datagram([(ts_col[p], cap, orig_col[p], mv[start:end], ifx)],
                               mv[start + 58 : start + 16 + pend], (src, sport, dst, dport, 17),
                               out)  # fmt: skip
            else:
                self._slow((ts_col[p], cap, orig_col[p], mv[start:end], ifx), lt,
                           mv[start + 16 : end], out)  # fmt: skip
            k = len(out) - before
            if k:
                wpos.extend([p] * k)
            if dirty_keys or dirty_calls or dirty_forgot:
                bulk.refresh()
        self.c["unassociated"] += unassociated
        self.table.unmatched_packets += unmatched
        if 2 * walked > nfast:
            self._loop_chunks = LOOP_RUN

    def _merge(
        self,
        chunk: Chunk,
        bulk: _Bulk,
        starts: np.ndarray,
        ends: np.ndarray,
        wout: Out,
        wpos: list[int],
        out: Out,
    ) -> None:
        """``out`` gets the walk's output and the bulk's forwarded packets, in the order
        the per-packet loop would have produced them (by packet; a walked packet's own
        output, e.g. a call's held packets flushed by its match, in its place)."""
        kind = bulk.kind
        send = np.flatnonzero(kind >= _SEND)
        nf, nw = len(send), len(wout)
        if not nf:
            if nw:
                _extend(out, wout)
            return
        base = len(out)
        wp = np.array(wpos, np.int64)
        at_f = np.arange(nf) + np.searchsorted(wp, send)  # walk output before each
        at_w = np.arange(nw) + np.searchsorted(send, wp)
        total = nf + nw
        ts = np.empty(total, np.int64)
        ts[at_f] = bulk.ts[send]
        ts[at_w] = np.frombuffer(wout.ts, np.int64)
        caps = np.empty(total, np.uint32)
        caps[at_f] = bulk.cap[send]
        caps[at_w] = np.frombuffer(wout.caplen, np.uint32)
        origs = np.empty(total, np.uint32)
        origs[at_f] = np.frombuffer(chunk.origlen, np.uint32)[send]
        origs[at_w] = np.frombuffer(wout.origlen, np.uint32)
        ifs = np.empty(total, np.uint16)
        ifs[at_f] = (
            chunk.iface
            if isinstance(chunk.iface, int)
            else np.frombuffer(chunk.iface, np.uint16)[send]
        )
        ifs[at_w] = np.frombuffer(wout.iface, np.uint16)
        out.ts.frombytes(ts.tobytes())
        out.caplen.frombytes(caps.tobytes())
        out.origlen.frombytes(origs.tobytes())
        out.iface.frombytes(ifs.tobytes())
        # Records: runs of consecutive bulk packets are one slice of the chunk.
        mv = memoryview(chunk.records)
        brk = np.flatnonzero((np.diff(send) != 1) | (np.diff(at_f) != 1)) + 1
        run_lo = np.concatenate(([0], brk))
        run_hi = np.concatenate((brk, [nf]))
        runs = zip(
            at_f[run_lo].tolist(),
            starts[send[run_lo]].tolist(),
            ends[send[run_hi - 1]].tolist(),
            strict=True,
        )
        parts = out.parts
        wparts = wout.parts
        at_wl = at_w.tolist()
        j = 0
        for first, a, b in runs:
            while j < nw and at_wl[j] < first:
                parts.append(wparts[j])
                j += 1
            parts.append(mv[a:b])
        parts.extend(wparts[j:])
        # Metadata: one object per call and tag, shared (dense references on the wire).
        sess = bulk.sess
        nt = bulk.ntags
        codes = bulk.sid[send] * nt + bulk.tag[send]
        metas: dict[int, object] = {}
        meta_of = self.dis.meta
        for code in np.unique(codes).tolist():
            x, t = divmod(code, nt)
            s = sess[x]
            m = s.metas[t]
            if m is None:
                m = s.metas[t] = meta_of(s, t, None)
            metas[code] = m
        meta = out.meta
        meta.update(
            zip((at_f + base).tolist(), map(metas.__getitem__, codes.tolist()), strict=True)
        )
        if nw:
            wmeta = wout.meta
            for k, at in enumerate((at_w + base).tolist()):
                meta[at] = wmeta[k]


def _key_length(key: tuple) -> int:
    n = 0
    for v in key:
        if type(v) is tuple:
            n += sum(map(len, v)) + len(v)
        else:
            n += len(v)
    return n


def _extend(out: Out, more: Out) -> None:
    base = len(out)
    out.ts.extend(more.ts)
    out.caplen.extend(more.caplen)
    out.origlen.extend(more.origlen)
    out.iface.extend(more.iface)
    out.parts.extend(more.parts)
    for k, m in more.meta.items():
        out.meta[base + k] = m


def voip_mode(ctx: ModeContext, cfg: VoipConfig | None = None) -> SessionMode:
    """VoIP mode for a hunter (the registry's factory)."""
    cfg = cfg or VoipConfig()
    return VoipMode(ctx, SipDissector(cfg), cfg.limits())


SPEC = ModeSpec(
    name="voip",
    help="""VoIP: capture the SIP and RTP/RTCP of the calls that filters select, whole.

    Calls are held until a SIP message matches a filter (sip_user, phone_number,
    sip_uri, call_id, codec, ip_address); then the call's packets so far and for the
    rest of its life are forwarded. With no filter, nothing is forwarded unless
    --no-filter-policy allow.""",
    filter_types=VOIP_FILTER_TYPES,
    default_policy="deny",
    config=VoipConfig,
    factory=voip_mode,
)
