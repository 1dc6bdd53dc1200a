"""TLS mode (``lc hunt tls``): fingerprint TLS and QUIC handshakes, capture the
connections filters select.

A :class:`~lc.hunter.modes.sessions.Dissector` on the shared session engine with
``capture_unit = "connection"``: a **session** is one connection (TCP, or with
``--quic`` a UDP flow), every frame of it from the SYN on belongs to it, and the engine
names it (:func:`lc.common.flow.connection_id`). A match captures the connection whole
(held frames flushed in capture order, then every later frame until FIN/RST plus the
grace); once a connection is decided and its handshake over (ServerHello seen, QUIC's
hellos complete, or rejected without ``--events all``) the mode calls ``ignore_rest``:
nothing more is reassembled, and the engine's fast path places its frames by one look-up.

* **Messages**: over TCP on ``--tls-port``, each direction is reassembled and fed to
  a :class:`lc.common.tls.TlsStream` (:class:`TlsFramer`), so a ClientHello split over
  segments or records is whole; its messages are the ClientHello and the ServerHello
  (or HelloRetryRequest and the second hellos). With ``--quic`` (the default), every
  UDP datagram on those ports is a message of its flow; the client's and server's
  Initial packets are decrypted (:class:`lc.common.quic.QuicHandshake`) and their
  CRYPTO frames reassembled until both hellos are complete.
* **Fingerprints**: JA3, JA3S, JA4 (``t`` or ``q``), JA4_r and JA4S, computed once
  per distinct hello shape (:class:`lc.common.fingerprint.FingerprintCache`).
* **Filters** and when they decide: ``tls_sni``, ``tls_ja3`` and ``tls_ja4`` at the
  ClientHello; ``tls_ja3s`` and ``tls_ja4s`` at the ServerHello; ``ip_address`` at
  the first packet (the engine); ``bpf`` on the packet completing a hello (the first
  hello of a QUIC flow). A connection no filter matched is settled at its
  ClientHello when no ServerHello filter is loaded, else at its ServerHello: it is
  no longer held.
* **Metadata**: every forwarded packet carries a ``TlsSummary`` with what the
  connection's hellos said so far (SNI, ALPN, versions, JA3/JA3S/JA4/JA4S, cipher).
* **Events**: one ``TlsEvent`` per connection when it leaves the table.

Strings from the wire (SNI, ALPN) go out through :func:`lc.common.text.wire_text`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lc.common.bpf import compile_bpf
from lc.common.errors import ParseError, ValidationError
from lc.common.filters import FilterSet
from lc.common.fingerprint import (
    ClientFingerprints,
    FingerprintCache,
    ServerFingerprints,
)
from lc.common.quic import QuicHandshake, QuicParseError
from lc.common.text import wire_text
from lc.common.tls import (
    ClientHello,
    ServerHello,
    TlsParseError,
    TlsStream,
    is_grease,
)
from lc.hunter.modes.base import (
    ModeContext,
    ModeSpec,
    megabytes,
    option,
    port_list,
    positive_int,
    seconds_ns,
)
from lc.hunter.modes.sessions import Dissector, SessionMode, set_flow
from lc.hunter.session import REJECTED, UNDECIDED, Out, Session, SessionLimits
from lc.proto import lc_pb2

__all__ = ["SPEC", "TLS_FILTER_TYPES", "TlsConfig", "TlsDissector", "TlsFramer", "TlsMode"]

TLS_FILTER_TYPES = (
    "tls_sni",
    "tls_ja3",
    "tls_ja3s",
    "tls_ja4",
    "tls_ja4s",
    "ip_address",
    "bpf",
)
_SERVER_TYPES = ("tls_ja3s", "tls_ja4s")
_NAME_MAX = 256
_ALPN_MAX = 16
_CH, _SH, _HRR, _DGRAM = "client_hello", "server_hello", "hello_retry_request", ""
#: Hello filter verdicts remembered (the memo is cleared when full).
_VERDICTS_MAX = 4096


@dataclass(slots=True)
class TlsConfig:
    tls_ports: frozenset[int] = option(
        "--tls-port",
        "443",
        port_list,
        "Comma-separated ports parsed as TLS (TCP) and, with --quic, QUIC (UDP).",
        "PORTS",
    )
    quic: bool = option(
        "--quic/--no-quic",
        "true",
        lambda v: v if isinstance(v, bool) else _on_off(v),
        "Also follow QUIC (UDP on the TLS ports).",
    )
    max_connections: int = option(
        "--max-connections", "50000", positive_int, "Connections followed at once.", "N"
    )
    max_conn_packets: int = option(
        "--conn-buffer-packets",
        "64",
        positive_int,
        "Packets held per undecided connection.",
        "N",
    )
    max_buffer_bytes: int = option(
        "--conn-buffer-mb", "128", megabytes, "Memory for held packets, over all.", "MB"
    )
    grace_ns: int = option(
        "--conn-grace", "2", seconds_ns, "A connection is followed this long after it ends.", "S"
    )
    idle_timeout_ns: int = option(
        "--conn-idle-timeout",
        "120",
        seconds_ns,
        "A connection without packets this long is over.",
        "S",
    )
    decide_timeout_ns: int = option(
        "--conn-decide-timeout",
        "10",
        seconds_ns,
        "Stop holding a connection no filter matched within this long.",
        "S",
    )

    def validate(self) -> None:
        """Each flag is checked on its own."""

    def limits(self) -> SessionLimits:
        return SessionLimits(
            max_sessions=self.max_connections,
            max_held_packets=self.max_conn_packets,
            max_held_bytes=self.max_buffer_bytes,
            grace_ns=self.grace_ns,
            idle_timeout_ns=self.idle_timeout_ns,
            decide_timeout_ns=self.decide_timeout_ns,
        )


def _on_off(text: str) -> bool:
    value = {"on": True, "true": True, "off": False, "false": False}.get(text.lower())
    if value is None:
        raise ValueError(f"{text!r}: on or off")
    return value


class TlsFramer:
    """Frames one direction of a TCP stream into its TLS hellos (a ``Framer``).

    A hello's byte range runs from the end of the previous hello (or the stream's
    start) to the end of the bytes that completed it, so that the frames which carried
    any part of it, records and segments included, come with it. Errors are counted
    (``counters``: ``malformed``, and per reason ``tls_<reason>``); the direction is
    then ignored.
    """

    __slots__ = ("_mark", "counters", "offset", "stream")

    def __init__(self) -> None:
        self.stream = TlsStream()
        self.offset = 0
        self._mark = 0
        self.counters: dict[str, int] = {}

    def feed(self, data: bytes) -> list[tuple[int, int, object]]:
        stream = self.stream
        self.offset += len(data)
        if stream._state >= 2:  # encrypted or failed: cheap exit for bulk data
            stream.ignored_bytes += len(data)
            return []
        try:
            events = stream.feed(data)
        except TlsParseError as exc:
            c = self.counters
            c["malformed"] = c.get("malformed", 0) + 1
            key = f"tls_{exc.reason}"
            c[key] = c.get(key, 0) + 1
            return []
        out: list[tuple[int, int, object]] = []
        for ev in events:
            if isinstance(ev, (ClientHello, ServerHello)):
                out.append((self._mark, self.offset, ev))
                self._mark = self.offset
        return out


class _Conn:
    """The dissector's view of a connection (``Session.info``)."""

    __slots__ = ("cfp", "ch", "flow", "hrr", "ignored", "meta", "quic", "sfp", "sh")

    def __init__(self, quic: QuicHandshake | None) -> None:
        self.quic = quic
        self.ch: ClientHello | None = None
        self.sh: ServerHello | None = None
        self.cfp: ClientFingerprints | None = None
        self.sfp: ServerFingerprints | None = None
        self.hrr = False
        self.flow: tuple | None = None  # client -> server, once known
        self.meta: lc_pb2.PacketMeta | None = None  # for packets without a hello
        self.ignored = False  # the rest of the connection is not parsed


class TlsDissector(Dissector):
    protocol = "tls"
    tags = ("tls",)
    message_tag = 0
    noun = ("connection", "connections")
    alias_noun = "aliases"
    capture_unit = "connection"
    session_events = True

    def __init__(self, cfg: TlsConfig) -> None:
        self.cfg = cfg
        self.ports = cfg.tls_ports
        self.quic = cfg.quic
        self.udp_flows = cfg.quic  # a QUIC flow is a connection too
        self.cache = FingerprintCache()
        self.server_filters = False  # a ServerHello filter is loaded (set by TlsMode)
        self.c = dict.fromkeys(
            (
                "client_hellos",
                "server_hellos",  # HelloRetryRequests included
                "quic_malformed",
            ),
            0,
        )

    def new_framer(self) -> TlsFramer:
        return TlsFramer()

    def parse(self, payload: memoryview) -> bytes:  # type: ignore[override]
        # A QUIC datagram: decrypted (if it is an Initial) in on_message, which knows
        # the connection.
        if not len(payload):
            raise ParseError("empty datagram")
        return bytes(payload)

    def new_info(self, msg: object, flow: tuple) -> _Conn:  # type: ignore[override]
        # ``flow`` is oriented by the engine (the SYN's sender, else the side off the
        # TLS ports is the client); a ClientHello corrects it.
        conn = _Conn(QuicHandshake() if flow[4] == 17 else None)
        conn.flow = flow
        return conn

    def on_message(self, s: Session, msg: object, flow: tuple, ts: int) -> object:
        conn: _Conn = s.info  # type: ignore[assignment]
        if isinstance(msg, bytes):
            q = conn.quic
            if q is None or q.done:
                return None
            from_client = self._from_client(conn, flow)
            try:
                hellos = q.feed(msg, from_client)
            except QuicParseError:
                self.c["quic_malformed"] += 1
                return None
            for h in hellos:
                self._hello(conn, h, flow, True)
            if not hellos:
                return None
        else:
            self._hello(conn, msg, flow, False)  # type: ignore[arg-type]
        # Later frames of a matched connection carry what the hellos said so far.
        s.metas[self.message_tag] = None
        return conn

    def handshake_done(self, s: Session) -> bool:
        """Nothing later in the connection is parsed: its ServerHello was seen (what
        follows is encrypted, or certificates no filter reads), or QUIC's Initials
        gave both hellos."""
        conn: _Conn = s.info  # type: ignore[assignment]
        if conn.quic is not None:
            return conn.quic.done
        return conn.sh is not None

    def _from_client(self, conn: _Conn, flow: tuple) -> bool:
        if conn.flow is not None:
            return flow[0] == conn.flow[0] and flow[1] == conn.flow[1]
        ports = self.ports
        if flow[3] in ports and flow[1] not in ports:
            conn.flow = flow
            return True
        if flow[1] in ports and flow[3] not in ports:
            conn.flow = (flow[2], flow[3], flow[0], flow[1], flow[4])
            return False
        conn.flow = flow  # both or neither on a TLS port: the first sender is the client
        return True

    def _hello(self, conn: _Conn, h: ClientHello | ServerHello, flow: tuple, quic: bool) -> None:
        conn.meta = None
        if isinstance(h, ClientHello):
            self.c["client_hellos"] += 1
            if conn.ch is None:  # the first (as FoxIO's tools); after an HRR, a second
                conn.ch = h
                conn.cfp = self.cache.client(h, quic)
            if not quic:
                conn.flow = flow
            return
        if h.is_hrr:
            self.c["server_hellos"] += 1
            conn.hrr = True
            return
        self.c["server_hellos"] += 1
        conn.sh = h
        conn.sfp = self.cache.server(h, quic)
        if conn.flow is None:
            conn.flow = (flow[2], flow[3], flow[0], flow[1], flow[4])

    def filter_values(self, msg: object, ctx: object) -> tuple[dict[str, object], list]:
        if ctx is None:  # a datagram that completed no hello
            return {}, []
        conn: _Conn = ctx  # type: ignore[assignment]
        fields: dict[str, object] = {}
        if conn.ch is not None:
            if conn.ch.server_name is not None:
                fields["tls_sni"] = (conn.ch.server_name,)
            cfp = conn.cfp
            fields["tls_ja3"] = (cfp.ja3,)  # type: ignore[union-attr]
            fields["tls_ja4"] = (cfp.ja4,)  # type: ignore[union-attr]
        if conn.sfp is not None:
            fields["tls_ja3s"] = (conn.sfp.ja3s,)
            fields["tls_ja4s"] = (conn.sfp.ja4s,)
        return fields, []

    def settled(self, s: Session, msg: object) -> bool:
        conn: _Conn = s.info  # type: ignore[assignment]
        if conn.sh is not None:
            return True
        return conn.ch is not None and not self.server_filters

    def summary(self, msg: object) -> object:
        if isinstance(msg, ClientHello):
            return _CH
        if isinstance(msg, ServerHello):
            return _HRR if msg.is_hrr else _SH
        return None

    def meta(self, s: Session, tag: int, summary: object) -> lc_pb2.PacketMeta:
        conn: _Conn = s.info  # type: ignore[assignment]
        if summary is None and conn.meta is not None and conn.meta.filter_ids == s.ids:
            return conn.meta
        t = lc_pb2.TlsSummary(handshake=summary or "", quic=conn.quic is not None)
        ch, sh = conn.ch, conn.sh
        if ch is not None:
            t.server_name = wire_text(ch.server_name or "", _NAME_MAX)
            t.alpn.extend(_alpn_texts(ch.alpn))
            t.client_version = ch.version
            t.ja3 = conn.cfp.ja3  # type: ignore[union-attr]
            t.ja4 = conn.cfp.ja4  # type: ignore[union-attr]
        if sh is not None:
            t.server_version = sh.version
            t.cipher = sh.cipher
            t.next_protocol = _alpn_text(sh.alpn) if sh.alpn is not None else ""
            t.ja3s = conn.sfp.ja3s  # type: ignore[union-attr]
            t.ja4s = conn.sfp.ja4s  # type: ignore[union-attr]
        m = lc_pb2.PacketMeta(protocol="tls", session_id=s.name, filter_ids=s.ids, tls=t)
        if summary is None:
            conn.meta = m
        return m

    def describe(self, s: Session, ev: lc_pb2.Event) -> None:
        conn: _Conn = s.info  # type: ignore[assignment]
        flow = conn.flow or s.flow
        if flow is not None:
            set_flow(ev, flow)
        t = ev.tls
        t.quic = conn.quic is not None
        t.hello_retry = conn.hrr
        t.packets = s.pk[0]
        t.bytes = s.by[0]
        ch, sh = conn.ch, conn.sh
        if ch is not None:
            if ch.server_name is not None:
                t.server_name = wire_text(ch.server_name, _NAME_MAX)
            t.alpn.extend(_alpn_texts(ch.alpn))
            t.client_version = ch.version
            t.client_ciphers.extend(c for c in ch.ciphers if not is_grease(c))
            cfp = conn.cfp
            t.ja3 = cfp.ja3  # type: ignore[union-attr]
            t.ja4 = cfp.ja4  # type: ignore[union-attr]
            t.ja4_r = cfp.ja4_r  # type: ignore[union-attr]
        if sh is not None:
            t.server_version = sh.version
            t.cipher = sh.cipher
            if sh.alpn is not None:
                t.next_protocol = _alpn_text(sh.alpn)
            t.ja3s = conn.sfp.ja3s  # type: ignore[union-attr]
            t.ja4s = conn.sfp.ja4s  # type: ignore[union-attr]

    def figures(self) -> dict[str, int]:
        out = dict(self.c)
        cache = self.cache
        # Hello shapes fingerprinted (the others were found in the cache). The heartbeat
        # bounds a mode's figures (60): QUIC datagrams are tls_messages already.
        out["fingerprints_computed"] = cache.misses
        return out


def _alpn_text(value: bytes) -> str:
    return wire_text(value.decode("utf-8", "surrogateescape"), 64)


def _alpn_texts(values: tuple[bytes, ...]) -> list[str]:
    return [_alpn_text(v) for v in values[:_ALPN_MAX]]


class TlsMode(SessionMode):
    """The session engine with the TLS dissector: tells the dissector whether
    ServerHello filters are loaded, adds ``bpf`` filters (matched on the packet
    completing a hello), and ends parsing of decided connections (``ignore_rest``)."""

    dis: TlsDissector

    def __init__(self, ctx: ModeContext, dissector: TlsDissector, limits: SessionLimits) -> None:
        super().__init__(ctx, dissector, limits)
        self._programs: dict[tuple[str, int], object] = {}
        self._bpfs: list[tuple[str, str]] = []
        # Hello filter ids by (SNI, JA3, JA4) and (JA3S, JA4S), for the filter set
        # applied (see _match).
        self._verdicts: dict[tuple, frozenset[str]] = {}

    def apply(self, compiled: FilterSet) -> None:
        programs = {}
        bpfs = compiled.bpf()
        for fid, e in bpfs:
            for lt in {lt for _, lt in self.interfaces} or {1}:
                programs[(fid, lt)] = self._programs.get((fid, lt)) or compile_bpf(e, lt)
        self._programs = programs
        self._bpfs = bpfs
        self.dis.server_filters = any(compiled.has(t) for t in _SERVER_TYPES)
        with self._lock:
            self._verdicts = {}
            super().apply(compiled)

    def _conn_message(
        self, s: Session, msg: object, toks: list, flow: tuple, out: Out, ts: int
    ) -> None:
        super()._conn_message(s, msg, toks, flow, out, ts)
        st = s.state
        conn: _Conn = s.info  # type: ignore[assignment]
        if st == UNDECIDED or conn.ignored:
            return
        # Decided: stop reassembling once the handshake is over, or at once when a
        # rejected connection's event (--events all) needs nothing more.
        if self.dis.handshake_done(s) or (st == REJECTED and not self.events_all):
            conn.ignored = True
            self.dis.ignore_rest(s)
            if st == REJECTED and not self.events_all:
                # No event nor metadata will read its hellos: they go now rather than
                # with the connection (the memory, and the collector's traversals).
                conn.ch = conn.sh = None

    def _match(self, msg: object, ctx: object, flow: tuple) -> list[str] | None:
        fs = self._fs
        if fs is None or not len(fs):
            return [] if self.policy == "allow" else None
        ids: set[str] = set()
        if ctx is not None:
            # The hello filters' verdict depends only on these values: kept per
            # distinct tuple of them (a sensor sees the same few stacks and names).
            conn: _Conn = ctx  # type: ignore[assignment]
            ch, cfp, sfp = conn.ch, conn.cfp, conn.sfp
            key = (
                None if ch is None else (ch.server_name, cfp.ja3, cfp.ja4),  # type: ignore[union-attr]
                None if sfp is None else (sfp.ja3s, sfp.ja4s),
            )
            memo = self._verdicts
            found = memo.get(key)
            if found is None:
                fields, _ = self.dis.filter_values(msg, ctx)
                found = frozenset(fs.match_fields(fields))
                if len(memo) >= _VERDICTS_MAX:
                    memo.clear()
                memo[key] = found
            if not found and not self._bpfs and not fs.has("ip_address"):
                return None  # the usual verdict: no filter wants it
            ids = set(found)
        if fs.has("ip_address"):
            ids |= fs.match_ip([flow[0], flow[2]])
        if self._bpfs and self._pkt is not None:
            ids |= self._match_bpf(self._pkt)
        return sorted(ids) if ids else None

    def _match_bpf(self, pkt: tuple) -> set[str]:
        lt = self.interfaces[pkt[4]][1]
        raw = bytes(pkt[3][16:])
        out = set()
        for fid, e in self._bpfs:
            prog = self._programs.get((fid, lt))
            if prog is None:  # a link type that came later (a pcapng's next interface)
                try:
                    prog = self._programs[(fid, lt)] = compile_bpf(e, lt)
                except ValidationError:  # `ether host` on raw IP: it matches nothing there
                    continue
            if prog.filter(raw):  # type: ignore[attr-defined]
                out.add(fid)
        return out


def tls_mode(ctx: ModeContext, cfg: TlsConfig | None = None) -> TlsMode:
    """TLS mode for a hunter (the registry's factory)."""
    cfg = cfg or TlsConfig()
    return TlsMode(ctx, TlsDissector(cfg), cfg.limits())


SPEC = ModeSpec(
    name="tls",
    help="""TLS: fingerprint TLS and QUIC handshakes (JA3, JA3S, JA4, JA4S, SNI) and
    capture the connections that filters select, whole.

    A connection is held until its ClientHello (tls_sni, tls_ja3, tls_ja4, ip_address,
    bpf) or ServerHello (tls_ja3s, tls_ja4s) matches a filter; then its packets so far
    and for the rest of its life are forwarded. With no filter, nothing is forwarded
    unless --no-filter-policy allow.""",
    filter_types=TLS_FILTER_TYPES,
    default_policy="deny",
    config=TlsConfig,
    factory=tls_mode,
)
