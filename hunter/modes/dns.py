"""DNS mode (``lc hunt dns``): DNS transactions over UDP and TCP, domain filters, RTT,
and tunneling statistics for the processor.

A :class:`~lc.hunter.modes.sessions.Dissector` for DNS on the shared session engine.

* **Messages**: DNS over UDP (fragmented too) and TCP (2-byte length framing,
  :class:`lc.common.dns.DnsTcpFramer`) on ``--dns-port`` (``--udp-only``: UDP only),
  parsed by :func:`lc.common.dns.parse_dns`.
* **A session is a transaction**: a query and its response, paired by
  :func:`lc.common.dns.transaction_key` (transport, client and server addresses and
  ports, id, question). A response without a question (FORMERR...) meets its query
  by the key without the question. The RTT is the response's capture time minus the
  first query's. A transaction ends with its response (``--dns-grace`` later it leaves
  the table, so retransmitted answers still belong to it); a query unanswered for
  ``--dns-timeout`` leaves as **unanswered** (counted, and its event says so). An
  unanswered query's event ends when it was given up (:meth:`DnsDissector.given_up`:
  ``--dns-timeout`` after its last retransmission, the end of its TCP connection, or
  the end of the capture if sooner), so its ``event.duration`` is the time waited.
* **Filters**: ``dns_domain`` over the question name and the names of the answer
  chain (CNAME owners and targets), ``ip_address`` (the packet's addresses). A query
  whose name matches is forwarded at once; one that does not is held until its
  response decides (the CNAME chain may match): a matching transaction forwards its
  query **and** its response.
* **Metadata**: every forwarded message packet carries a ``DnsSummary`` (id, qname,
  qtype, rcode, direction, at most 8 answers, RTT, the tunneling score of the
  question's registered domain).
* **Events**: one ``DnsEvent`` per transaction when it leaves the table.
* **Tunneling** (``--detect-tunneling``, default on): every query the hunter sees,
  whatever the filters select, is counted by a :class:`lc.common.dnstunnel.TunnelDetector`.
  Every ``--tunnel-report`` seconds of capture time (and at the end) the statistics
  since the last report go to the processor on the next batch (``PacketBatch.dns_tunnel``),
  which adds up every hunter's and raises alerts (:mod:`lc.processor.tunnels`). The
  score in the metadata is the larger of the domain's score over the last complete
  report interval and over the current one (what this hunter saw).

Strings from the wire go out through :func:`lc.common.text.wire_text`.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
from collections import OrderedDict
from dataclasses import dataclass
from itertools import islice

import orjson

from lc.common.bpf import compile_bpf
from lc.common.dns import (
    MAX_NAME_WIRE_LENGTH,
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    DnsError,
    DnsMessage,
    DnsTcpFramer,
    cname_chain,
    cname_targets,
    name_text,
    parse_dns,
    type_name,
)
from lc.common.dnstunnel import TUNNEL_TYPES, DomainStats, TunnelDetector, registered_domain
from lc.common.text import wire_text
from lc.hunter.capture import Chunk
from lc.hunter.modes.base import (
    Forward,
    ModeContext,
    ModeCounters,
    ModeSpec,
    option,
    port_list,
    positive_int,
    seconds_ns,
    with_extras,
)
from lc.hunter.modes.sessions import IP_FRAGMENTS, Dissector, SessionMode, set_flow
from lc.hunter.session import EVICTION_SCAN, MATCHED, REJECTED, Out, Session, SessionLimits
from lc.proto import lc_pb2

__all__ = ["DNS_FILTER_TYPES", "SPEC", "DnsConfig", "DnsDissector", "DnsMode", "dns_mode"]

DNS_FILTER_TYPES = ("dns_domain", "ip_address", "bpf")

_NAME_MAX = 1024  # a name's text (\DDD escapes make 255 wire bytes up to ~1000)
_DATA_MAX = 256
_META_ANSWERS = 8
_EVENT_ANSWERS = 16
_NAME_CACHE = 65536  # question names -> the dns_domain filters they match (fast path)
_CONN_PENDING = 64  # queries of one TCP connection waiting for their responses
# The fast path's one read of a frame (untagged Ethernet, IPv4 without options, UDP,
# DNS), from frame offset 12: ethertype, version and IHL, IP total length, flags and
# fragment offset, protocol, source, destination, ports, UDP length, DNS id, flags,
# question count, answer count. The DNS header is at frame offset 42, its question
# at 54 (record offsets 58 and 70: a chunk's record has a 16-byte header).
_PEEK_DNS4 = struct.Struct("!HBxHxxHxBxxIIHHHxxHHHH")
_LENGTHS = struct.Struct("!H20xH")  # IP total length, UDP length (record offsets 32, 54)
_REC = struct.Struct("<IIII")  # a record's pcap header
_TS = struct.Struct("<II")  # its time
_LOW = (1 << 112) - 1  # a transaction key without its question's number


def flag(text: str | bool) -> bool:
    """A boolean flag's value (click gives a bool; the environment gives text)."""
    if isinstance(text, bool):
        return text
    v = text.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r}: true or false")


@dataclass(slots=True)
class DnsConfig:
    dns_ports: frozenset[int] = option(
        "--dns-port", "53", port_list, "Comma-separated ports parsed as DNS (UDP and TCP).", "PORTS"
    )
    udp_only: bool = option("--udp-only", "false", flag, "DNS over UDP only (not TCP).")
    detect_tunneling: bool = option(
        "--detect-tunneling/--no-detect-tunneling",
        "true",
        flag,
        "Keep tunneling statistics of every query and report them to the processor.",
    )
    timeout_ns: int = option(
        "--dns-timeout", "5", seconds_ns, "A query unanswered this long is unanswered.", "S"
    )
    grace_ns: int = option(
        "--dns-grace", "1", seconds_ns, "A transaction is followed this long after it ends.", "S"
    )
    report_ns: int = option(
        "--tunnel-report", "5", seconds_ns, "Tunneling statistics go out this often.", "S"
    )
    max_transactions: int = option(
        "--max-transactions", "50000", positive_int, "Transactions followed at once.", "N"
    )
    max_domains: int = option(
        "--tunnel-max-domains", "10000", positive_int, "Domains with tunneling statistics.", "N"
    )

    def validate(self) -> None:
        """Each flag is checked on its own."""

    def limits(self) -> SessionLimits:
        return SessionLimits(
            max_sessions=self.max_transactions,
            max_held_packets=16,  # a TCP handshake, query, ACKs and response fit
            max_held_bytes=64 * 1024 * 1024,
            grace_ns=self.grace_ns,
            idle_timeout_ns=self.timeout_ns,
            decide_timeout_ns=self.timeout_ns,
            message_hold_factor=1,
        )


class _Txn:
    """The dissector's view of a transaction (``Session.info``)."""

    __slots__ = (
        "client_flow",
        "domain",
        "queries",
        "query",
        "query_ns",
        "response",
        "response_ns",
        "responses",
    )  # fmt: skip

    def __init__(self) -> None:
        self.client_flow: tuple | None = None
        self.query: DnsMessage | None = None
        self.response: DnsMessage | None = None
        self.query_ns = 0
        self.response_ns = 0
        self.queries = 0
        self.responses = 0
        self.domain: str | None = None


def rdata_text(rtype: int, rdata: object) -> str:
    """A record's data as text (dig-like), bounded."""
    if isinstance(rdata, str):
        return wire_text(rdata, _NAME_MAX)
    if isinstance(rdata, bytes):
        return "\\# " + str(len(rdata)) + " " + rdata[: _DATA_MAX // 2].hex()
    if isinstance(rdata, tuple):
        if rdata and all(isinstance(x, bytes) for x in rdata):  # TXT
            return wire_text(" ".join('"' + x.decode("latin-1") + '"' for x in rdata), _DATA_MAX)
        return wire_text(" ".join(str(x) for x in rdata), _DATA_MAX)
    return wire_text(str(rdata), _DATA_MAX)


_ASK = object()  # (DnsDissector.fill: the registered domain is not known yet)
_IP_TEXTS: dict[bytes, str] = {}  # address -> text (the same clients and servers come back)


def _ip_text(raw: bytes) -> str:
    got = _IP_TEXTS.get(raw)
    if got is None:
        if len(_IP_TEXTS) >= _NAME_CACHE:
            _IP_TEXTS.clear()
        got = _IP_TEXTS[raw] = socket.inet_ntop(
            socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw
        )
    return got


class _Conn:
    """The dissector's view of a DNS-over-TCP connection (``Session.info`` of a
    connection session): its queries waiting for their responses, in order."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        # (id, question) -> (query, capture time); at most _CONN_PENDING (oldest out).
        self.pending: dict[tuple, tuple[DnsMessage, int]] = {}


def _rtt(query_ns: int, response_ns: int) -> int:
    """A response's round-trip time; 0 ("none seen") when it was stamped before its
    query (timestamps need not increase: two interfaces, a merged capture)."""
    return response_ns - query_ns if response_ns >= query_ns else 0


def _wire_labels(raw: bytes) -> list[bytes]:
    """The labels of a name in wire form without compression (checked already)."""
    labels = []
    off = 0
    c = raw[0]
    while c:
        labels.append(raw[off + 1 : off + 1 + c])
        off += 1 + c
        c = raw[off]
    return labels


def _key_flow(k: int) -> tuple[int, int, int, int]:
    """(client, port, server, port) of a fast-path transaction key: ``question
    number << 112 | ((client << 16 | port) << 48 | server << 16 | port) << 16 | id``."""
    return (
        (k >> 80) & 0xFFFFFFFF,
        (k >> 64) & 0xFFFF,
        (k >> 32) & 0xFFFFFFFF,
        (k >> 16) & 0xFFFF,
    )


def _pairs(p: bytes | tuple) -> tuple:
    """A waiting query's frames as ((record, interface), ...)."""
    return ((p, 0),) if type(p) is bytes else p


def _frames(p: bytes | tuple) -> list[tuple]:
    """A waiting query's frames as the engine takes them: (time, caplen, origlen,
    record, interface)."""
    out = []
    for rec, ifx in _pairs(p):
        sec, nsec, cap, orig = _REC.unpack_from(rec, 0)
        out.append((sec * 1_000_000_000 + nsec, cap, orig, rec, ifx))
    return out


def _rec_ts(rec: bytes) -> int:
    """A record's capture time (its pcap header's)."""
    sec, nsec = _TS.unpack_from(rec, 0)
    return sec * 1_000_000_000 + nsec


def _last_ts(p: bytes | tuple) -> int:
    """A waiting query's last packet's capture time."""
    return _rec_ts(p if type(p) is bytes else p[-1][0])


def _payload(rec: bytes) -> bytes:
    """The DNS message of a record the fast path took (Ethernet, IPv4, UDP): up to
    where the IP and UDP lengths end it, as the decoder reads it."""
    total, ulen = _LENGTHS.unpack_from(rec, 32)
    return rec[58 : min(len(rec), 30 + total, 50 + ulen)]


class _TxnKey(tuple):
    """A transaction's session key: the fields of
    :func:`~lc.common.dns.transaction_key` (transport, client, port, server, port, id,
    question), whose text is the readable session id the engine names the session
    by (``udp:10.0.0.1:4000-10.0.0.53:53#4660``; an IPv6 address in brackets,
    ``udp:[2001:db8::1]:4000-[2001:db8::53]:53#4660``, as a connection's id has it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        c, s = _ip_text(self[1]), _ip_text(self[3])
        if len(self[1]) == 16:
            c, s = f"[{c}]", f"[{s}]"
        return f"{self[0]}:{c}:{self[2]}-{s}:{self[4]}#{self[5]}"

    __str__ = __repr__


def _qkey(msg: DnsMessage) -> tuple:
    q = (msg.qname.lower(), msg.qtype, msg.qclass) if msg.questions else None
    return (msg.id, q)


class _ParsingFramer:
    """A :class:`DnsTcpFramer` whose messages come out parsed (malformed ones counted)."""

    __slots__ = ("counters", "framer")

    def __init__(self) -> None:
        self.framer = DnsTcpFramer()
        self.counters = {"malformed": 0}

    @property
    def offset(self) -> int:
        return self.framer.offset

    def feed(self, data: bytes) -> list[tuple[int, int, object]]:
        out = []
        for start, end, raw in self.framer.feed(data):
            try:
                out.append((start, end, parse_dns(raw)))
            except DnsError:
                self.counters["malformed"] += 1
        return out


class DnsDissector(Dissector):
    protocol = "dns"
    tags = ("dns",)
    message_tag = 0
    noun = ("transaction", "transactions")
    alias_noun = "pending_no_question"
    level_figures = frozenset(("tunnel_domains",))

    def __init__(self, cfg: DnsConfig) -> None:
        self.cfg = cfg
        self.ports = cfg.dns_ports
        self.streams = not cfg.udp_only
        # Over TCP a matching transaction captures its whole connection.
        self.capture_unit = "message" if cfg.udp_only else "connection"
        self.pair: tuple | None = None  # (query, time, response, time) of a TCP response
        self.flow: tuple = ()  # the flow of the message being handled (set by DnsMode)
        self.rtt = 0
        self.rtt_of: DnsMessage | None = None  # the message self.rtt is for
        self.box: list | None = None  # summary() of a TCP message, before on_message
        self.noq: dict[tuple, object] = {}  # key without question -> key of the query
        self.detector: TunnelDetector | None = (
            TunnelDetector(max_domains=cfg.max_domains) if cfg.detect_tunneling else None
        )
        # The statistics of the last complete report interval, per domain: scored when
        # first asked for (then the score replaces them).
        self.last_scores: dict[str, float | DomainStats] = {}
        self.scores: dict[str, float] = {}
        self.events_all = False  # --events all (set by DnsMode): rejected ones' events too
        self.clock = 0  # the mode's capture clock when a session leaves (see given_up)
        self.c = dict.fromkeys(("queries", "responses", "unanswered", "answered",
                                "orphan_responses"), 0)  # fmt: skip

    def kernel_bpf(self) -> str:
        ports = " or ".join(f"port {p}" for p in sorted(self.ports))
        proto = "udp" if self.cfg.udp_only else "(udp or tcp)"
        return f"({proto} and ({ports})) or {IP_FRAGMENTS}"

    def new_framer(self) -> _ParsingFramer:
        return _ParsingFramer()

    def parse(self, payload: memoryview) -> DnsMessage:
        return parse_dns(payload)

    def session_key(self, msg: DnsMessage) -> object:  # type: ignore[override]
        """:func:`~lc.common.dns.transaction_key`'s fields, as a :class:`_TxnKey`."""
        src, sport, dst, dport, proto = self.flow
        transport = "tcp" if proto == 6 else "udp"
        if msg.questions:
            q = (msg.qname.lower(), msg.qtype, msg.qclass)
        elif msg.qr:  # a response without a question meets its query by the rest
            k = _TxnKey((transport, dst, dport, src, sport, msg.id, None))
            return self.noq.get(k, k)
        else:
            q = None
        if msg.qr:
            return _TxnKey((transport, dst, dport, src, sport, msg.id, q))
        return _TxnKey((transport, src, sport, dst, dport, msg.id, q))

    def new_info(self, msg: DnsMessage | None, flow: tuple) -> _Txn | _Conn:  # type: ignore[override]
        return _Conn() if msg is None else _Txn()

    def on_message(self, s: Session, msg: DnsMessage, flow: tuple, ts: int) -> object:  # type: ignore[override]
        t = s.info
        self.rtt = 0
        self.rtt_of = msg
        if type(t) is _Conn:
            self._conn_message(t, msg, ts)
            box = self.box
            if box is not None and box[0] is msg:  # summary() came first (see there)
                box[1] = self.rtt
                self.box = None
            return None
        if msg.qr:
            self.c["responses"] += 1
            t.responses += 1
            if t.response is None:
                t.response = msg
                t.response_ns = ts
                if t.client_flow is None:
                    t.client_flow = (flow[2], flow[3], flow[0], flow[1], flow[4])
                k = s.key
                if k[6] is not None:  # type: ignore[index]
                    self.noq.pop((*k[:6], None), None)  # type: ignore[index]
            if t.query_ns:
                self.rtt = _rtt(t.query_ns, t.response_ns)
        else:
            self.c["queries"] += 1
            t.queries += 1
            if t.query is None:
                t.query = msg
                t.query_ns = ts
                t.client_flow = flow
                k = s.key
                if k[6] is not None and len(self.noq) < 4 * self.cfg.max_transactions:  # type: ignore[index]
                    self.noq[(*k[:6], None)] = k  # type: ignore[index]
        return None

    def _conn_message(self, c: _Conn, msg: DnsMessage, ts: int) -> None:
        """A message of a TCP connection: queries wait for their responses, a
        response meets its query (by id and question, else by id) and leaves the
        pair in ``self.pair`` for :meth:`message_event`."""
        self.pair = None
        pending = c.pending
        if not msg.qr:
            self.c["queries"] += 1
            k = _qkey(msg)
            if k not in pending:
                if len(pending) >= _CONN_PENDING:
                    pending.pop(next(iter(pending)))
                    self.c["unanswered"] += 1
                pending[k] = (msg, ts)
            return
        self.c["responses"] += 1
        got = pending.pop(_qkey(msg), None)
        if got is None:
            for k in pending:
                if k[0] == msg.id:
                    got = pending.pop(k)
                    break
        if got is None:
            self.c["orphan_responses"] += 1
            self.pair = (None, 0, msg, ts)
            return
        self.c["answered"] += 1
        self.rtt = _rtt(got[1], ts)
        self.pair = (got[0], got[1], msg, ts)

    def message_event(self, s: Session, msg: DnsMessage, flow: tuple, ts: int) -> object:  # type: ignore[override]
        """Over TCP, one event per transaction, when its response comes."""
        if not msg.qr or self.pair is None:
            return None
        q, qts, r, rts = self.pair
        self.pair = None
        if s.state == REJECTED and not self.events_all:
            return None  # the engine would not send it: not built
        ev = lc_pb2.Event(start_ns=qts or rts, end_ns=rts)
        set_flow(ev, (flow[2], flow[3], flow[0], flow[1], flow[4]))
        self.fill(ev.dns, q, r, qts, rts, int(q is not None), 1)
        return ev

    def pending_events(self, s: Session) -> list[lc_pb2.Event]:
        """The unanswered queries of a TCP connection leaving the table, as events."""
        c: _Conn = s.info  # type: ignore[assignment]
        out = []
        build = s.state == MATCHED or self.events_all  # else the engine would not send them
        for q, qts in c.pending.values():
            self.c["unanswered"] += 1
            if not build:
                continue
            ev = lc_pb2.Event(start_ns=qts, end_ns=max(qts, self.given_up(s)))
            if s.flow is not None:
                set_flow(ev, s.flow)
            self.fill(ev.dns, q, None, qts, 0, 1, 0)
            out.append(ev)
        c.pending.clear()
        return out

    def given_up(self, s: Session) -> int:
        """When the unanswered queries of ``s`` (a transaction, or a TCP connection)
        were given up, the end of their events (so ``event.duration`` is the time
        waited): the connection's end (FIN or RST), else ``--dns-timeout`` after its
        last packet, or the capture clock when it left sooner (the end of the capture,
        an eviction)."""
        if s.end_ns:
            return s.end_ns
        last = s.last_ns
        return min(last + self.cfg.timeout_ns, max(self.clock, last))

    def filter_values(self, msg: DnsMessage, ctx: object) -> tuple[dict[str, object], list]:  # type: ignore[override]
        names = [msg.qname]
        for r in msg.answers:
            if r[1] == TYPE_CNAME:
                names.append(r[0])
                names.append(r[4])  # type: ignore[arg-type]
        return {"dns_domain": names}, []

    def settled(self, s: Session, msg: DnsMessage) -> bool:  # type: ignore[override]
        if type(s.info) is _Conn:  # a response with no other query waiting
            return msg.qr and not s.info.pending  # type: ignore[attr-defined]
        return msg.qr  # the response decides; nothing later would

    def summary(self, msg: DnsMessage) -> tuple | list:  # type: ignore[override]
        """``(message, RTT)``, formatted only when forwarded (:meth:`meta`). Over TCP
        the engine asks before :meth:`on_message` has paired the message with its
        query: a box then, which on_message fills in (meta reads it once decided)."""
        if self.rtt_of is msg:
            return (msg, self.rtt)
        box = self.box = [msg, 0]
        return box

    def after_message(self, s: Session, msg: DnsMessage, ts: int) -> None:  # type: ignore[override]
        if msg.qr and not s.end_ns and type(s.info) is _Txn:  # (a connection: FIN/RST)
            s.end_ns = ts

    def domain_score(self, domain: str | None) -> float:
        """The domain's score (computed once per chunk: :attr:`scores` is emptied
        before each)."""
        if domain is None or self.detector is None:
            return 0.0
        got = self.scores.get(domain)
        if got is None:
            last = self.last_scores.get(domain, 0.0)
            if type(last) is not float:
                last = self.last_scores[domain] = last.score()
            got = self.scores[domain] = max(last, self.detector.score(domain))
        return got

    def meta(self, s: Session, tag: int, summary: object) -> lc_pb2.PacketMeta:
        # Fields are set one by one, defaults left unset: upb builds that fastest.
        pm = lc_pb2.PacketMeta(protocol="dns", session_id=s.name, filter_ids=s.ids)
        if summary is None:
            return pm
        msg, rtt = summary  # type: ignore[misc]
        t = s.info
        if type(t) is _Txn:
            domain = t.domain
            if domain is None and msg.qname:
                got = registered_domain(msg.qname.lower())
                domain = t.domain = got[0] if got else ""
        else:
            got = registered_domain(msg.qname.lower()) if msg.qname else None
            domain = got[0] if got else None
        d = pm.dns
        d.id = msg.id
        qname = msg.qname
        d.qname = qname if len(qname) <= _NAME_MAX else wire_text(qname, _NAME_MAX)
        d.qtype = msg.qtype
        if msg.qr:
            d.response = True
            d.rcode = msg.full_rcode
        if msg.answers:
            d.answers.extend(
                [f"{type_name(r[1])} {rdata_text(r[1], r[4])}" for r in msg.answers[:_META_ANSWERS]]
            )
        if rtt:
            d.rtt_ns = rtt
        score = self.domain_score(domain)
        if score:
            d.tunnel_score = score
        return pm

    def describe(self, s: Session, ev: lc_pb2.Event) -> None:
        t: _Txn = s.info  # type: ignore[assignment]
        flow = t.client_flow or s.flow
        if flow is not None:
            set_flow(ev, flow)
        if t.response is None and t.query is not None:  # unanswered: until given up
            ev.end_ns = max(ev.start_ns, self.given_up(s))
        self.fill(ev.dns, t.query, t.response, t.query_ns, t.response_ns, t.queries, t.responses)

    def detail(
        self,
        q: DnsMessage | None,
        r: DnsMessage | None,
        qts: int,
        rts: int,
        queries: int,
        responses: int,
    ) -> lc_pb2.DnsEvent:
        """A transaction's event detail: its query and/or response, their times."""
        d = lc_pb2.DnsEvent()
        self.fill(d, q, r, qts, rts, queries, responses)
        return d

    def fill(
        self,
        d: lc_pb2.DnsEvent,
        q: DnsMessage | None,
        r: DnsMessage | None,
        qts: int,
        rts: int,
        queries: int,
        responses: int,
        score: bool = True,
        reg: object = _ASK,
    ) -> str | None:
        """:meth:`detail` into ``d`` (an event's, set field by field: upb builds that
        fastest; defaults are left unset, as the constructor leaves them). ``score``
        False leaves ``tunnel_score`` for the caller to set later (the domain's score
        when the event goes out): the registered domain it is for is returned.
        ``reg``: :func:`registered_domain` of the question's name, when known."""
        m = r if r is not None else q
        assert m is not None
        d.id = m.id
        if m.opcode:
            d.opcode = m.opcode
        flags = m.header_flags
        if flags:
            d.header_flags.extend(flags)
        qname = m.qname
        d.qname = qname if len(qname) <= _NAME_MAX else wire_text(qname, _NAME_MAX)
        d.qtype = m.qtype
        d.qclass = m.qclass
        d.queries = queries
        d.responses = responses
        if r is not None:
            d.answered = True
            d.rcode = r.full_rcode
            if q is not None:
                d.rtt_ns = _rtt(qts, rts)
            if r.answers:
                add = d.answers.add
                ips = []
                for rec in r.answers[:_EVENT_ANSWERS]:
                    name, rtype, rclass, ttl, rdata = rec
                    add(name=name if len(name) <= _NAME_MAX else wire_text(name, _NAME_MAX),
                        type=rtype, ttl=ttl, data=rdata_text(rtype, rdata),
                        **{"class": rclass})  # fmt: skip
                    if rtype in (TYPE_A, TYPE_AAAA) and isinstance(rdata, str):
                        ips.append(rdata)
                if ips:
                    d.resolved_ips.extend(ips)
        if qname:
            got = registered_domain(qname.lower()) if reg is _ASK else reg
            if got is not None:
                d.registered_domain = wire_text(got[0], _NAME_MAX)
                d.subdomain = wire_text(got[1], _NAME_MAX)
                if not score:
                    return got[0]
                d.tunnel_score = self.domain_score(got[0])
        return None

    def forgotten(self, s: Session) -> None:
        t: _Txn = s.info  # type: ignore[assignment]
        if type(t) is _Conn:
            return
        if t.response is None:
            self.c["unanswered"] += 1
            k = s.key
            if k[6] is not None:  # type: ignore[index]
                self.noq.pop((*k[:6], None), None)  # type: ignore[index]
        elif t.query is None:
            self.c["orphan_responses"] += 1
        else:
            self.c["answered"] += 1

    def figures(self) -> dict[str, int]:
        c = self.c  # (a heartbeat holds at most 60 figures: the main ones)
        out = {f"dns_{k}": c[k] for k in ("queries", "unanswered")}
        if self.detector is not None:
            out["tunnel_domains_evicted"] = self.detector.counters["domains_evicted"]
            out["tunnel_domains"] = len(self.detector.domains)
        return out


class DnsMode(SessionMode):
    """The session engine with a DNS dissector, plus tunneling statistics.

    **Fast path** (the bulk of a resolver's traffic, when the filters are only
    ``dns_domain``): one loop over the
    chunk's records reads an untagged Ethernet/IPv4/UDP frame on a DNS port with one
    ``unpack_from`` (addresses, ports, lengths, DNS id, flags, counts) and takes its
    question as the raw bytes up to the first zero byte plus type and class. Those
    bytes are the key of everything derived from the question, computed once per
    distinct question (:meth:`_entry`; plain labels checked, anything else such as a
    compression pointer goes to the general path): its lower-cased form, the
    ``dns_domain`` filters its name matches, its tunneling measures
    (:meth:`TunnelDetector.prepare`) and a number for the transaction keys.

    * A query whose name matches no filter is counted for tunneling
      (:meth:`TunnelDetector.observe_prepared`: plain adds per query) and waits,
      without a session, in a bounded dict (``--max-transactions``; oldest evicted)
      keyed by an int (question number, client, server, ports, id) and holding its
      record's bytes (retransmissions join it): nothing the garbage collector follows.
    * Its response pops it. No CNAME record in its answers (no ``00 05`` byte pair
      after the question, else :func:`~lc.common.dns.cname_targets` reads the chain
      from the targets' raw bytes, verdicts kept per target;
      :func:`~lc.common.dns.cname_chain` or a whole parse for unusual shapes) and no
      match: both are counted (filtered, a transaction never matched) and dropped,
      the response never parsed.
    * A match (the question's name, or the chain) hands the query and the response
      to the engine (:meth:`SessionMode._message`), in capture order with their own
      times, so a captured transaction is the same as on the general path
      (metadata, RTT, event); later packets of a matched transaction meet it there
      through the engine's datagram path (the frame is not decoded again).
    * A query unanswered for ``--dns-timeout`` leaves as unanswered.
    * ``--events all`` (passive DNS: an event per transaction, matched or not): the
      response that pops a waiting query and decides nothing is parsed once and the
      transaction's event built as the engine's :meth:`DnsDissector.describe` would
      (:meth:`_answered`); it stays in :attr:`_done` until ``--dns-grace`` after its
      response (retransmitted queries and responses join it, a late match hands the
      rest to the engine) and leaves in the same call as the engine's session would,
      its tunneling score set then. Unanswered queries leave (timeout, eviction,
      the end) with the engine's unanswered event. The waiting, the answered and the
      engine's sessions share ``--max-transactions`` as one table does, eviction
      following :meth:`SessionTable.open`'s choice (:meth:`_evict`). Queries of
      transactions the engine follows (a match, a response seen first) go to it
      (:attr:`_eng`).

    Everything else (TCP, IPv6, VLANs, fragments, IP options) takes the general
    path; so do all packets while ``ip_address`` or ``bpf`` filters exist, or with
    no filter and ``--no-filter-policy allow`` (the waiting queries are then handed
    to the engine first).
    ``tests/hunter/test_dns_mode.py`` compares both paths on the corpus and on the
    benchmark's mix: same frames, metadata, events, tunneling statistics and drops.
    """

    dis: DnsDissector

    def __init__(self, ctx: ModeContext, dissector: DnsDissector, limits: SessionLimits) -> None:
        super().__init__(ctx, dissector, limits)
        dissector.events_all = self.events_all
        self._report_at = 0
        self._tunnel: list[lc_pb2.DnsTunnelStats] = []
        self.reports = 0
        # Queries waiting (fast path), oldest first: transaction key (an int, see
        # _key_flow) -> the query's record (pcap header and frame) when on interface
        # 0, else ((record, interface), ...), retransmissions included. Ints and
        # bytes: nothing the garbage collector follows (a tuple per query cost more
        # in its collections than the rest of the fast path).
        self._pend: OrderedDict[int, bytes | tuple] = OrderedDict()
        self._serial = 0  # the last question number given (see _number)
        self._numbers: dict[bytes, int] = {}  # question (lower-cased) -> its number
        # question as sent, and lower-cased -> _entry(question) (fast path)
        self._names: dict[bytes, tuple | bool] = {}
        self._clients: dict[int, str] = {}  # IPv4 address -> text (fast path)
        self._preps: dict[str, object] = {}  # question name -> prepare() (general path)
        # CNAME chain name (text, or raw target) -> matches a filter (fast path)
        self._chain: dict[str | bytes, bool] = {}
        self._rec: bytes = b""  # the chunk being read (fast path)
        self._at = 0  # where the frame being read starts in it
        self._bpf: dict[tuple[str, int], object] = {}  # (filter id, link type) -> program
        self._cur: tuple[memoryview, int] | None = None  # the frame being handled
        self._ids: tuple[str, ...] | None = None  # the match of the message being handled
        self.fast = dict.fromkeys(("queries", "dropped", "promoted", "evicted", "name_flushes"), 0)
        # --events all (fast path): answered transactions that never matched, until
        # --dns-grace after their response (retransmissions join them), least recently
        # active first: transaction key -> (event, its registered domain, response
        # time, last packet's time); the event is built at the response, its tunneling
        # score set when it leaves (as the general path scores it then).
        self._done: OrderedDict[int, tuple] = OrderedDict()
        # --events all: keys of the transactions the engine follows (matched, or a
        # response without a waiting query) -> their last packet's time here: their
        # later queries go to the engine too (kept at least as long as the engine
        # keeps the session; a stale key only sends a query the general way).
        self._eng: dict[int, int] = {}
        # A waiting query's key without its question (client, server, ports, id) -> its
        # key: a response the general path reads (a fragmented one, one without a
        # question, one with IP options...) finds its query here, which goes to the
        # engine first, so the two meet there as on the general path (_message).
        # Stale entries are checked against _pend; bounded. Made (from _pend) when the
        # first such response comes and kept from then on: traffic that never has one
        # pays nothing for it (kept for every query, it cost ~5% of the mode).
        self._noq: dict[int, int] | None = None
        self._keyed = False  # the response being handled was looked up by its own key

    def apply(self, compiled) -> None:  # type: ignore[no-untyped-def]
        # bpf filters are compiled (libpcap) for every link type in use before anything
        # changes; a frame completing a message is matched against them.
        programs = {}
        for fid, expr in compiled.bpf():
            for lt in {lt for _, lt in self.interfaces} or {1}:
                programs[(fid, lt)] = self._bpf.get((fid, lt)) or compile_bpf(expr, lt)
        with self._lock:
            super().apply(compiled)
            self._names = {}
            self._chain = {}
            self._bpf = programs

    def _slow(self, pkt: tuple, lt: int, data: memoryview, out: Out) -> None:
        self._cur = (data, lt)
        super()._slow(pkt, lt, data, out)
        self._cur = None

    def _match(self, msg: object, ctx: object, flow: tuple) -> list[str] | None:
        """The engine's match, plus the ``bpf`` filters the frame that completes the
        message matches (a transaction, or a TCP connection, matches then)."""
        if self._ids is not None:  # known already (the fast path's name cache)
            return list(self._ids)
        ids = super()._match(msg, ctx, flow)
        progs = self._bpf
        cur = self._cur
        if not progs or cur is None:
            return ids
        data, lt = cur
        raw = bytes(data)
        hit = {fid for (fid, plt), prog in progs.items() if plt == lt and prog.filter(raw)}  # type: ignore[attr-defined]
        if not hit:
            return ids
        return sorted(hit.union(ids or ()))

    def _fast_ok(self) -> bool:
        fs = self._fs
        if fs is None or not len(fs):
            return self.policy != "allow"
        return not fs.has("ip_address") and not fs.has("bpf")

    def _process(self, chunk: Chunk, out: Out) -> None:  # type: ignore[override]
        if not self._fast_ok():
            if self._pend:
                self._promote_all(out)
            super()._process(chunk, out)
            return
        interfaces = self.interfaces
        single = chunk.iface if isinstance(chunk.iface, int) else None
        rec = chunk.records
        if type(rec) is not bytes:  # a view of the reader's buffer, or a bytearray:
            rec = bytes(rec)  # one copy per chunk buys hashable slices and bytes.find
        self._rec = rec
        mv = memoryview(rec)
        find = rec.find
        ports = self.dis.ports
        unpack = _PEEK_DNS4.unpack_from
        ts_col, cap_col, orig_col = chunk.ts_ns, chunk.caplen, chunk.origlen
        lt = interfaces[single][1] if single is not None else 0
        iface_col = chunk.iface
        ifx = single
        slow = self._slow
        names = self._names
        entry = self._entry
        pend = self._pend
        hold, pop = pend.setdefault, pend.pop
        max_pend = self.dis.cfg.max_transactions
        det = self.dis.detector
        observe = det.observe_prepared if det is not None else None
        clients = self._clients
        datagram = self._datagram
        # --events all: answered transactions until they leave, and the keys of those
        # the engine follows (None otherwise: the loop's extra tests are one each).
        done = self._done if self.events_all else None
        eng = self._eng
        tsessions = self.table.sessions  # (with --events all, all three share the bound)
        noq = self._noq
        unassociated = held = again = answered = answered_frames = 0
        off = 0
        for i, cap in enumerate(cap_col):
            start = off
            off += 16 + cap
            if single is None:
                ifx = iface_col[i]
                lt = interfaces[ifx][1]
            if lt == 1 and cap >= 59:  # Ethernet, IPv4, UDP and a one-byte question
                (etype, vihl, total, frag, proto, src, dst, sport, dport, ulen, qid, flags, qd,
                 an) = unpack(rec, start + 28)  # fmt: skip
                if (
                    etype == 0x0800
                    and vihl == 0x45
                    and not frag & 0x3FFF
                    and proto == 17
                    and total >= 28
                    and ulen >= 8
                ):
                    if sport not in ports and dport not in ports:
                        unassociated += 1
                        continue
                    # The payload ends where the decoder says: the IP and UDP lengths.
                    pe = start + 30 + total
                    if pe > off:
                        pe = off
                    if start + 50 + ulen < pe:
                        pe = start + 50 + ulen
                    z = find(b"\0", start + 70, pe) if qd == 1 else -1
                    if 0 < z <= pe - 5:
                        raw = rec[start + 70 : z + 5]  # the question: name, type, class
                        e = names.get(raw)
                        if e is None:
                            e = entry(raw)
                        if e:
                            _, ids, prep, ttype, hi, _ = e
                            ts = ts_col[i]
                            if flags < 0x8000:  # a query: client first in the key
                                k = hi | ((src << 16 | sport) << 48 | dst << 16 | dport) << 16 | qid
                                if ids is not None and k not in pend:  # its name matches
                                    pkt = (ts, cap, orig_col[i], mv[start:off], ifx)
                                    self._query_matched(e, k, an, pe - start, pkt, out)
                                    continue
                                if done is None or (k not in done and k not in eng):
                                    if prep is not None:
                                        cli = clients.get(src)
                                        if cli is None:
                                            cli = self._client(src)
                                        observe(prep, ttype, ts, cli)
                                    if k not in pend and (
                                        len(pend) >= max_pend
                                        if done is None
                                        else len(pend) + len(done) + len(tsessions) >= max_pend
                                    ):
                                        self._evict()
                                    v = rec[start:off] if not ifx else ((rec[start:off], ifx),)
                                    p = hold(k, v)
                                    if p is v:
                                        held += 1
                                        if noq is not None:  # (see _noq)
                                            if len(noq) >= 4 * max_pend:
                                                noq = self._noq = {q & _LOW: q for q in pend}
                                            noq[k & _LOW] = k
                                    else:  # a retransmission: held with the first
                                        pend[k] = _pairs(p) + _pairs(v)
                                        again += 1
                                        if done is not None:  # (the engine's activity order)
                                            pend.move_to_end(k)
                                    continue
                                if self._late_query(e, k, ts):
                                    continue
                            else:
                                k = hi | ((dst << 16 | dport) << 48 | src << 16 | sport) << 16 | qid
                                p = pop(k, None)
                                if p is not None:
                                    # The question matches (filters changed since the
                                    # query), or a name of its CNAME chain may: decide.
                                    if ids is not None or (an and find(b"\0\5", z + 5, pe) >= 0):
                                        pkt = (ts, cap, orig_col[i], mv[start:off], ifx)
                                        self._at = start
                                        if self._response_decides(e, k, p, z + 5, pe, pkt, out):
                                            continue
                                    if done is not None and not self._answered(
                                        e, k, p, mv[start + 58 : pe], ts
                                    ):  # --events all: its event (False: malformed)
                                        continue
                                    answered += 1
                                    if type(p) is not bytes:
                                        answered_frames += len(p) - 1
                                    continue
                                if done is not None:
                                    if k in done:
                                        self._at = start
                                        if self._late_response(e, k, an, z + 5, pe, ts):
                                            continue
                                    self._engine_has(k, ts)
                    # Everything else of this shape (a response whose query the engine
                    # follows, a malformed message...): the engine's datagram path,
                    # without decoding the frame again. A response whose question was
                    # read here was looked up by its own key (or its question is not
                    # plain labels, as its query's then): no waiting query to find.
                    flow = (src.to_bytes(4, "big"), sport, dst.to_bytes(4, "big"), dport, 17)
                    pkt = (ts_col[i], cap, orig_col[i], mv[start:off], ifx)
                    self._keyed = 0 < z <= pe - 5
                    datagram([pkt], mv[start + 58 : pe], flow, out)
                    self._keyed = False
                    noq = self._noq  # (made there, maybe)
                    continue
            slow((ts_col[i], cap, orig_col[i], mv[start:off], ifx), lt, mv[start + 16 : off], out)
            noq = self._noq  # (made there, maybe)
        c = self.c
        c["unassociated"] += unassociated
        if held or again or answered:
            dc = self.dis.c
            tc = self.table.counters
            c["messages"] += held + again + answered
            dc["queries"] += held + again
            tc["created"] += held
            self.fast["queries"] += held
            dc["responses"] += answered
            dc["answered"] += answered
            tc["unmatched"] += answered
            tc["ended"] += answered
            self.table.unmatched_packets += 2 * answered + answered_frames
            self.fast["dropped"] += answered
        self._rec = b""
        if len(ts_col):
            last = ts_col[len(ts_col) - 1]
            if last > self._clock:
                self._clock = last

    def _client(self, src: int) -> str:
        """A client address as text (kept: the same clients come back)."""
        clients = self._clients
        if len(clients) >= _NAME_CACHE:
            clients.clear()
        text = clients[src] = _ip_text(src.to_bytes(4, "big"))
        return text

    def _entry(self, raw: bytes) -> tuple | bool:
        """What the fast path needs of a question (name, type and class as sent,
        read up to the first zero byte), computed once per distinct question:
        ``(key, ids, prepared, tunnel type)``: the question lower-cased (its part of
        the transaction key), the ``dns_domain`` filters its name matches (None: none),
        :meth:`TunnelDetector.prepare` of its name, whether its type is a tunnel type;
        False when the name is not plain labels up to the root (a compression pointer,
        a zero byte in a label, a bad label type, too long): the general path reads it."""
        names = self._names
        if len(names) >= _NAME_CACHE:
            names.clear()
            self.fast["name_flushes"] += 1
        lkey = raw.lower()
        e = names.get(lkey)
        if e is None:
            e = names[lkey] = self._new_entry(lkey)
        names[raw] = e
        return e

    def _new_entry(self, lkey: bytes) -> tuple | bool:
        n = len(lkey) - 5  # where the root byte is
        if n > MAX_NAME_WIRE_LENGTH - 1:
            return False
        labels = []
        off = 0
        while off < n:
            c = lkey[off]
            if c > 63:
                return False
            off += 1 + c
            labels.append(lkey[off - c : off])
        if off != n:
            return False
        name = name_text(labels)
        ids = None
        fs = self._fs
        if fs is not None and len(fs):
            got = fs.match("dns_domain", name)
            ids = tuple(sorted(got)) if got else None
        det = self.dis.detector
        prep = det.prepare(name, labels) if det is not None else None
        tunnel_type = (lkey[n + 1] << 8 | lkey[n + 2]) in TUNNEL_TYPES
        return (lkey, ids, prep, tunnel_type, self._number(lkey) << 112,
                self._registered(name, prep) if self.events_all else None)  # fmt: skip

    @staticmethod
    def _registered(name: str, prep: object) -> tuple[str, str] | None:
        """:func:`registered_domain` of a question's name (lower-cased text), for its
        events: from the tunneling measures' split when there are some (the same
        labels, the same list), else asked."""
        if type(prep) is tuple:
            domain = prep[0]
            if name == domain:
                return domain, ""
            if name.endswith(domain) and name[-len(domain) - 1] == ".":
                return domain, name[: -len(domain) - 1]
        return registered_domain(name)

    def _number(self, lkey: bytes) -> int:
        """The question's number in the transaction keys: the same for as long as a
        query of it may wait, whatever happens to the name cache (emptied when full
        or when the filters change). Bounded: when full, only the numbers of waiting
        queries are kept (at most --max-transactions: half the room at most)."""
        numbers = self._numbers
        got = numbers.get(lkey)
        if got is None:
            if len(numbers) >= max(_NAME_CACHE, 2 * self.dis.cfg.max_transactions):
                live = {k >> 112 for k in self._pend}
                self._numbers = numbers = {q: n for q, n in numbers.items() if n in live}
            self._serial += 1
            got = numbers[lkey] = self._serial
        return got

    def _name_ids(self, names: list[str]) -> list[str] | None:
        fs = self._fs
        if fs is None or not len(fs):
            return None
        ids = fs.match_fields({"dns_domain": names})
        return sorted(ids) if ids else None

    def _query_matched(self, e: tuple, k: int, an: int, end: int, pkt: tuple, out: Out) -> None:
        """A query whose name matches (``k``: its transaction key, ``an``: its answer
        count, ``end``: where its payload ends in its record): counted for tunneling,
        and the engine takes its transaction (as the general path would)."""
        msg = parse_dns(pkt[3][58:end])
        dis = self.dis
        src, sport, dst, dport = _key_flow(k)
        if e[2] is not None:
            cli = self._clients.get(src) or self._client(src)
            dis.detector.observe_prepared(e[2], e[3], pkt[0], cli)  # type: ignore[union-attr]
        flow = (src.to_bytes(4, "big"), sport, dst.to_bytes(4, "big"), dport, 17)
        dis.flow = flow
        if self.events_all:
            self._engine_has(k, pkt[0])
            self._room(msg)
        if not an:  # the filters its name matches are all the engine's match would find
            self._ids = e[1]
        SessionMode._message(self, msg, [pkt], flow, out, pkt[0])
        self._ids = None

    def _response_decides(
        self, e: tuple, k: int, p: bytes | tuple, qend: int, pe: int, pkt: tuple, out: Out
    ) -> bool:
        """The response of a waiting query ``p`` when its question matches or its answers
        may hold a CNAME (``qend``, ``pe``: where its answers start and its payload
        ends in :attr:`_rec`, the chunk's records, where it starts at ``_at``): if a
        name of the chain matches (or the question), the query and the response go to
        the engine (True). False: no match, the caller drops both."""
        rec, base = self._rec, self._at + 58
        if e[1] is None and not self._chain_hit(qend, pe):
            return False
        full = parse_dns(rec[base:pe])
        self._promote(k, p, out)
        src, sport, dst, dport = _key_flow(k)
        flow = (dst.to_bytes(4, "big"), dport, src.to_bytes(4, "big"), sport, 17)
        self.dis.flow = flow
        SessionMode._message(self, full, [pkt], flow, out, pkt[0])
        return True

    def _chain_hit(self, qend: int, pe: int) -> bool:
        """Whether a name of the CNAME chain of the response at ``_at`` in :attr:`_rec`
        (its answers from ``qend``, its payload ending at ``pe``) matches a filter."""
        rec, base = self._rec, self._at + 58
        verdicts = self._chain
        targets = cname_targets(rec, base, qend, pe)
        if targets is not None:  # the usual shape: the targets' raw bytes will do
            names: list = targets
        else:
            data = rec[base:pe]
            chain = cname_chain(data)
            if chain is None:  # only a whole parse can tell
                chain = []
                for r in parse_dns(data).answers:
                    if r[1] == TYPE_CNAME:
                        chain.append(r[0])
                        chain.append(r[4])  # type: ignore[arg-type]
            names = chain
        for name in names:
            hit = verdicts.get(name)
            if hit is None:
                hit = self._verdict(name)
            if hit:
                return True
        return False

    def _verdict(self, name: str | bytes) -> bool:
        """Whether a name of a CNAME chain matches a ``dns_domain`` filter; the name as
        text, or as raw wire bytes (a target read by :func:`cname_targets`). Kept."""
        verdicts = self._chain
        if len(verdicts) >= _NAME_CACHE:
            verdicts.clear()
        text = name if isinstance(name, str) else name_text(_wire_labels(name))
        fs = self._fs
        hit = verdicts[name] = bool(fs is not None and fs.match("dns_domain", text))
        return hit

    def _evict(self) -> None:
        """The table of waiting queries is full: the oldest leaves (unanswered); with
        ``--events all`` the least recently active of the waiting and the answered
        ones (both count against ``--max-transactions``), with its event."""
        done, pend = self._done, self._pend
        if self.events_all:
            # One table in the general path (SessionTable.open): among its
            # EVICTION_SCAN least recently active, the first not matched leaves, else
            # the very first. Here the fast path's oldest (never matched) stands in
            # that order where its time puts it among the engine's sessions.
            table = self.table
            table.settle()
            tf = None
            if done:
                tf = done[next(iter(done))][3]
            if pend:
                t = _last_ts(pend[next(iter(pend))])
                if tf is None or t < tf:
                    tf = t
            victim = None
            older = 0  # the engine's matched sessions before the fast path's oldest
            for v in islice(table.sessions.values(), EVICTION_SCAN):
                if tf is not None and v.last_ns >= tf:
                    break
                if v.state != MATCHED:
                    victim = v
                    break
                older += 1
            if victim is None and (tf is None or older >= EVICTION_SCAN):
                victim = next(iter(table.sessions.values()))  # all matched: the first
            if victim is not None:
                table.counters["evicted"] += 1
                table.forget(victim, evicted=True)
                return
        if done and (not pend or done[next(iter(done))][3] <= _last_ts(pend[next(iter(pend))])):
            k, d = done.popitem(last=False)
            self.fast["evicted"] += 1
            self.table.counters["evicted"] += 1
            self._done_event(d)
            return
        k, old = self._pend.popitem(last=False)
        self.fast["evicted"] += 1
        self.table.counters["evicted"] += 1
        self._drop(old, unanswered=True, evicted=True)
        if self.events_all:
            self._unanswered_event(k, old)

    # -- --events all: the events of transactions the fast path ends -------------------
    def _txn_event(self, k: int, start: int, end: int) -> lc_pb2.Event:
        """A fast-path transaction's event as the engine starts it (never captured)."""
        src, sport, dst, dport = _key_flow(k)
        c, s = src.to_bytes(4, "big"), dst.to_bytes(4, "big")
        # The session id: the text of its _TxnKey (wire-safe as it is: ASCII, short).
        ev = lc_pb2.Event(
            dataset="dns",
            start_ns=start,
            end_ns=end,
            session_id=f"udp:{_ip_text(c)}:{sport}-{_ip_text(s)}:{dport}#{k & 0xFFFF}",
        )
        f = ev.flow
        f.src_ip = c
        f.dst_ip = s
        f.src_port = sport
        f.dst_port = dport
        f.ip_proto = 17
        return ev

    def _answered(self, e: tuple, k: int, p: bytes | tuple, data: memoryview, rts: int) -> bool:
        """The response (``data``, at ``rts``) of the waiting query ``p`` that decided
        nothing: the transaction's event, sent when it leaves (:meth:`_expire`)."""
        pairs = _pairs(p)
        qts = _rec_ts(pairs[0][0])
        try:
            r = parse_dns(data)  # (the fast path's shape: header and question are valid)
        except DnsError:  # (never seen; as the engine would: malformed, the query waits)
            self._pend[k] = p
            self.c["malformed"] += 1
            return False
        ev = self._txn_event(k, qts, rts)
        # The query is only needed for the RTT (``q is not None``): the response stands
        # in for it, unparsed.
        # e[5]: registered_domain() of the question's name, as the entry read it.
        dom = self.dis.fill(ev.dns, r, r, qts, rts, len(pairs), 1, score=False, reg=e[5])
        self._done[k] = (ev, dom, rts, rts)  # (it was waiting: no more room taken)
        return True

    def _late_query(self, e: tuple, k: int, ts: int) -> bool:
        """A query of a transaction the engine follows (False: the caller hands it to
        the engine), or of an answered one (True: it joins, as in the engine's
        rejected session: counted, for tunneling too)."""
        eng = self._eng
        if k in eng:
            eng[k] = ts
            return False
        done = self._done
        if e[1] is not None:  # its name matches now (the filters changed): the engine's
            self._done_event(done.pop(k))
            return False
        ev, dom, rts, _ = done[k]
        if e[2] is not None:
            src = _key_flow(k)[0]
            cli = self._clients.get(src) or self._client(src)
            self.dis.detector.observe_prepared(e[2], e[3], ts, cli)  # type: ignore[union-attr]
        ev.dns.queries += 1
        done[k] = (ev, dom, rts, ts)
        done.move_to_end(k)
        self.c["messages"] += 1
        self.dis.c["queries"] += 1
        self.table.unmatched_packets += 1
        return True

    def _late_response(self, e: tuple, k: int, an: int, qend: int, pe: int, ts: int) -> bool:
        """A response (at ``_at`` in :attr:`_rec`) of an answered transaction: it joins
        (True) unless its question or CNAME chain matches now: the transaction's event
        goes now and the engine takes the response (False)."""
        done = self._done
        if e[1] is not None or (
            an and self._rec.find(b"\0\5", qend, pe) >= 0 and self._chain_hit(qend, pe)
        ):
            self._done_event(done.pop(k))
            return False
        ev, dom, rts, _ = done[k]
        ev.dns.responses += 1
        done[k] = (ev, dom, rts, ts)
        done.move_to_end(k)
        self.c["messages"] += 1
        dc = self.dis.c
        dc["responses"] += 1
        self.table.unmatched_packets += 1
        return True

    def _engine_has(self, k: int, ts: int) -> None:
        """The engine follows the transaction ``k`` (its later queries go there)."""
        eng = self._eng
        if k not in eng and len(eng) >= 2 * self.dis.cfg.max_transactions:
            del eng[next(iter(eng))]
        eng[k] = ts

    def _done_event(self, d: tuple) -> None:
        """An answered transaction leaves: its event, scored now."""
        ev, dom, _, _ = d
        if dom is not None:
            ev.dns.tunnel_score = self.dis.domain_score(dom)
        self._events.append(ev)
        self.c["events"] += 1

    def _unanswered_event(self, k: int, p: bytes | tuple) -> None:
        """A waiting query leaves unanswered: its event, as the engine's (it ends when
        the query was given up: :meth:`DnsDissector.given_up`)."""
        pairs = _pairs(p)
        first = pairs[0][0]
        qts = _rec_ts(first)
        last = _rec_ts(pairs[-1][0])
        dis = self.dis
        given_up = min(last + dis.cfg.timeout_ns, max(self._clock, last))
        ev = self._txn_event(k, qts, max(qts, given_up))
        q = parse_dns(_payload(first))
        dis.fill(ev.dns, q, None, qts, 0, len(pairs), 0)
        self._events.append(ev)
        self.c["events"] += 1

    def _drop(self, p: bytes | tuple, unanswered: bool, evicted: bool = False) -> None:
        """A waiting query's transaction leaves without a match."""
        t = self.table
        t.counters["unmatched"] += 1
        t.counters["idle" if unanswered else "ended"] += 1
        n = 1 if type(p) is bytes else len(p)
        if evicted:
            t.evicted_packets += n
        else:
            t.unmatched_packets += n
        self.fast["dropped"] += 1
        if unanswered:
            self.dis.c["unanswered"] += 1

    def _promote(self, k: int, p: bytes | tuple, out: Out) -> None:
        """Hand a waiting query (and its retransmissions) to the engine."""
        frames = _frames(p)
        msg = parse_dns(_payload(frames[0][3]))
        n = len(frames)
        self.c["messages"] -= n
        self.dis.c["queries"] -= n
        self.table.counters["created"] -= 1
        self.fast["promoted"] += 1
        if self.events_all:
            self._engine_has(k, frames[-1][0])
        src, sport, dst, dport = _key_flow(k)
        flow = (src.to_bytes(4, "big"), sport, dst.to_bytes(4, "big"), dport, 17)
        self.dis.flow = flow
        SessionMode._message(self, msg, frames[:1], flow, out, frames[0][0])
        for f in frames[1:]:
            SessionMode._message(self, msg, [f], flow, out, f[0])

    def _promote_all(self, out: Out) -> None:
        pend, self._pend = self._pend, OrderedDict()
        for key, p in pend.items():
            self._promote(key, p, out)

    def _expire(self, now: int, out: Out) -> None:
        super()._expire(now, out)
        pend = self._pend
        cfg = self.dis.cfg
        limit = now - cfg.timeout_ns
        if self.events_all:
            # Every transaction is looked at, as the engine's table does (times need
            # not increase), and leaves with its event, least recently active first.
            done = self._done
            if done:
                grace = now - cfg.grace_ns
                for k in [k for k, d in done.items() if d[2] < grace or d[3] < limit]:
                    self._done_event(done.pop(k))
            if pend:
                for k in [k for k, p in pend.items() if _last_ts(p) < limit]:
                    p = pend.pop(k)
                    self._drop(p, unanswered=True)
                    self._unanswered_event(k, p)
            eng = self._eng
            if eng:
                old = limit - cfg.grace_ns
                for k in [k for k, t in eng.items() if t < old]:
                    del eng[k]
            return
        while pend:
            k = next(iter(pend))
            if _frames(pend[k])[0][0] >= limit:
                break
            self._drop(pend.pop(k), unanswered=True)

    def _message(self, msg: object, frames: list, flow: tuple, out, ts: int) -> None:
        if self._pend and msg.qr and not self._keyed and flow[4] == 17 and len(flow[0]) == 4:  # type: ignore[attr-defined]
            # A response off the fast path: its query may be waiting on it (_noq).
            if self._noq is None:
                self._noq = {q & _LOW: q for q in self._pend}
            kq = self._noq.pop(
                (int.from_bytes(flow[2], "big") << 16 | flow[3]) << 64
                | (int.from_bytes(flow[0], "big") << 16 | flow[1]) << 16
                | msg.id,  # type: ignore[attr-defined]
                0,
            )
            pq = self._pend.pop(kq, None) if kq else None
            if pq is not None:
                self._promote(kq, pq, out)
        dis = self.dis
        dis.flow = flow
        if dis.detector is not None and not msg.qr and msg.questions:  # type: ignore[attr-defined]
            self._observe(msg, ts, flow[0])
        if (self._pend or self._done) and self.events_all:
            self._room(msg)  # (after the query counts, as the engine's eviction would be)
        super()._message(msg, frames, flow, out, ts)

    def _new_connection(self, key: tuple, flow: tuple, ts: int, flags: int, out: Out) -> Session:
        # --events all: a new TCP connection takes room from the fast path's too.
        if (self._pend or self._done) and self.events_all:
            pend, done = self._pend, self._done
            if len(pend) + len(done) + len(self.table.sessions) >= self.dis.cfg.max_transactions:
                self._evict()
        return super()._new_connection(key, flow, ts, flags, out)

    def _room(self, msg: object) -> None:
        """--events all: the fast path's transactions count against the bound too, as
        the engine's sessions would: a message opening a session when the three are
        --max-transactions evicts the least recently active (``dis.flow`` is set)."""
        sessions = self.table.sessions
        if (
            len(self._pend) + len(self._done) + len(sessions) >= self.dis.cfg.max_transactions
            and self.dis.session_key(msg) not in sessions
        ):
            self._evict()

    def _observe(self, msg: DnsMessage, ts: int, client: bytes) -> None:
        """A query the general path reads, counted for tunneling (its name's prepared
        measures kept, as the fast path keeps them by the question's bytes)."""
        preps = self._preps
        p = preps.get(msg.qname)
        if p is None:
            if len(preps) >= _NAME_CACHE:
                preps.clear()
            p = preps[msg.qname] = self.dis.detector.prepare(msg.qname)  # type: ignore[union-attr]
        self.dis.detector.observe_prepared(  # type: ignore[union-attr]
            p, msg.qtype in TUNNEL_TYPES, ts, _ip_text(client)
        )

    def _conn_message(self, s: Session, msg: object, toks: list, flow: tuple, out, ts: int) -> None:
        if self.dis.detector is not None and not msg.qr and msg.questions:  # type: ignore[attr-defined]
            self._observe(msg, ts, flow[0])  # type: ignore[arg-type]
        super()._conn_message(s, msg, toks, flow, out, ts)

    def _forgotten(self, s: Session) -> None:
        self.dis.clock = self._clock
        if type(s.info) is _Conn:
            # A connection: its transactions had their events; its unanswered queries
            # have theirs now (no event for the connection itself).
            if s.events:
                self._decided(s)
            for ev in self.dis.pending_events(s):
                self._emit(s, ev)
            return
        self.dis.forgotten(s)
        super()._forgotten(s)

    def counters(self) -> ModeCounters:
        """The engine's figures; the summary line also says how many queries went
        unanswered (``--dns-timeout``), as the events of captured ones do."""
        c = super().counters()
        return dataclasses.replace(
            c, summary=f"{c.summary}; unanswered queries: {c.figures['dns_unanswered']}"
        )

    def _report(self, now: int, force: bool = False) -> None:
        det = self.dis.detector
        if det is None:
            return
        if not self._report_at:
            self._report_at = now + self.dis.cfg.report_ns
            if not force:
                return
        if not force and now < self._report_at:
            return
        self._report_at = now + self.dis.cfg.report_ns
        if not det.domains:
            return
        # Scored when asked for (most domains never are): the objects stay as they
        # are, the detector starts afresh.
        last: dict[str, float | DomainStats] = dict(det.domains)
        snap = det.snapshot(reset=True)
        self.dis.last_scores = last
        self._tunnel.extend(
            lc_pb2.DnsTunnelStats(domain=d, stats=orjson.dumps(v)) for d, v in snap.items()
        )
        self.reports += 1

    def _with_tunnel(self, fwd: Forward) -> Forward:
        if not self._tunnel:
            return fwd
        extra, self._tunnel = self._tunnel, []
        return with_extras(fwd, "tunnel", extra)

    def process(self, chunk: Chunk) -> Forward:
        self.dis.scores = {}
        fwd = super().process(chunk)
        with self._lock:
            self._report(self._clock)
            return self._with_tunnel(fwd)

    def tick(self, now_ns: int) -> Forward:
        self.dis.scores = {}
        fwd = super().tick(now_ns)
        with self._lock:
            self._report(self._clock)
            return self._with_tunnel(fwd)

    def finish(self) -> Forward:
        self.dis.scores = {}
        with self._lock:
            pend, self._pend = self._pend, OrderedDict()
            for k, p in pend.items():
                self._drop(p, unanswered=True)
                if self.events_all:
                    self._unanswered_event(k, p)
            done, self._done = self._done, OrderedDict()
            for d in done.values():
                self._done_event(d)
        fwd = super().finish()
        with self._lock:
            self._report(self._clock, force=True)
            return self._with_tunnel(fwd)


def dns_mode(ctx: ModeContext, cfg: DnsConfig | None = None) -> DnsMode:
    """DNS mode for a hunter (the registry's factory)."""
    cfg = cfg or DnsConfig()
    return DnsMode(ctx, DnsDissector(cfg), cfg.limits())


SPEC = ModeSpec(
    name="dns",
    help="""DNS: capture the transactions (query and response) that filters select,
    with their RTT, and report tunneling statistics of every query to the processor.

    A query is held until its question name or its response's CNAME chain matches a
    dns_domain filter (or an ip_address filter matches); then query and response are
    forwarded. With no filter, nothing is forwarded unless --no-filter-policy allow.""",
    filter_types=DNS_FILTER_TYPES,
    default_policy="deny",
    config=DnsConfig,
    factory=dns_mode,
)
