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

import socket
from dataclasses import dataclass

from lc.common.sdp import SdpError, codecs_of, parse_sdp, rtp_endpoints
from lc.common.sip import SipMessage, SipStreamFramer, parse_sip, uris_of, users_of
from lc.common.sipcall import CallState
from lc.common.text import wire_text
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
from lc.hunter.session import Session, SessionLimits
from lc.proto import lc_pb2

__all__ = ["SPEC", "VOIP_FILTER_TYPES", "SipDissector", "VoipConfig", "voip_bpf", "voip_mode"]

VOIP_FILTER_TYPES = ("sip_user", "phone_number", "sip_uri", "call_id", "codec", "ip_address")

_RTP, _RTCP, _SIP = 0, 1, 2
_USER_MAX = 256
_CALL_ID_MAX = 1024
_MAX_CODECS = 16


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
        sdp = None
        if msg.body and (msg.content_type == "application/sdp" or msg.body[:2] == b"v="):
            try:
                sdp = parse_sdp(msg.body)
            except SdpError:
                self.sdp_malformed += 1
        if sdp is not None:
            self._add_endpoints(s, sdp)
            codecs = call.codecs
            if len(codecs) < _MAX_CODECS:
                for name in codecs_of(sdp):
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
        return sdp

    def filter_values(self, msg: SipMessage, sdp: object) -> tuple[dict[str, object], list]:  # type: ignore[override]
        users = users_of(msg)
        fields: dict[str, object] = {
            "sip_user": users,
            "phone_number": users,
            "sip_uri": uris_of(msg),
            "call_id": (msg.call_id,),
        }
        addrs: list = []
        if sdp is not None:
            fields["codec"] = codecs_of(sdp)  # type: ignore[arg-type]
            addrs.extend(a for a, _, _ in rtp_endpoints(sdp))  # type: ignore[arg-type]
        return fields, addrs

    def settled(self, s: Session, msg: SipMessage) -> bool:  # type: ignore[override]
        # The dialog is settled (its final response carried the last identities an
        # INVITE usually gets) and nothing matched.
        return msg.status >= 200 and msg.cseq_method == "INVITE" and msg.status not in (401, 407)

    def summary(self, msg: SipMessage) -> tuple:  # type: ignore[override]
        # A plain tuple while held: a protobuf message costs kilobytes (its arena), and
        # 10,000 undecided calls hold tens of thousands of SIP packets.
        # Raw strings: made wire-safe when (if) the packet is forwarded.
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

    def _add_endpoints(self, s: Session, sdp) -> None:
        alias = self.table.alias
        for addr, port, kind in rtp_endpoints(sdp):
            try:
                raw = socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
            except (OSError, ValueError):  # a host name, or junk (a NUL: ValueError)
                self.sdp_unusable += 1
                continue
            key = int.from_bytes(raw, "big") << 16 | port if len(raw) == 4 else (raw, port)
            alias(s, key, _RTCP if kind == "rtcp" else _RTP)


def voip_mode(ctx: ModeContext, cfg: VoipConfig | None = None) -> SessionMode:
    """VoIP mode for a hunter (the registry's factory)."""
    cfg = cfg or VoipConfig()
    return SessionMode(ctx, SipDissector(cfg), cfg.limits())


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
