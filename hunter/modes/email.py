"""Email mode (``lc hunt email``): SMTP, IMAP and POP3 sessions, captured whole when a
filter matches one of their messages, with one event per message.

A :class:`~lc.hunter.modes.sessions.Dissector` on the shared session engine. A
**session** is one TCP connection to a mail port (``--smtp-port``, ``--imap-port``,
``--pop3-port``, as chosen by ``--protocol``). Its two reassembled byte streams are
read by the sans-IO session parsers of :mod:`lc.common.smtp`, :mod:`lc.common.imap`
and :mod:`lc.common.pop3` (a direction's first TCP chunk, and the first after a gap,
goes through the dissector, which binds the direction's framer to the session's parser;
then the framer feeds the parser itself and only chunks that complete something are
"messages" for the engine; a gap in a direction makes the parser give up, and the
session is then judged by what it saw). Events are made only for the sessions that
send them (captured, or every one with ``--events all``).

* **Implicit TLS**: ports 465, 993 and 995 (and a connection whose first client bytes
  are a TLS record) are TLS sessions (protocol ``smtps``, ``imaps``, ``pop3s``): their
  ClientHello's server_name and the version chosen come from :mod:`lc.common.tls`;
  nothing else is read. **STARTTLS**: once accepted the parser stops; the session is
  marked ``upgraded`` and keeps being captured if it was selected (an undecided one is
  settled: nothing more can match).
* **Filters**, pushed by the processor and local (the mode's flags, held beside the
  pushed ones and reported to the processor at registration, ``lc show hunter``):
  ``email_address`` (MAIL FROM, RCPT TO, header From/To/Cc), ``email_subject``
  (the decoded Subject), ``keyword`` (the decoded text body, up to
  ``--max-body-size``, whether or not ``--capture-body`` puts it into events),
  ``email_mailbox`` (IMAP mailbox a command names or the selected one),
  ``email_command`` (a client command verb: ``RETR``, ``APPEND``, ``UID FETCH``),
  ``ip_address``, ``bpf`` (libpcap expression; any packet of the connection it
  matches selects it, TLS ones too). Local ``--sender`` is matched against MAIL FROM and From only,
  ``--recipient`` against RCPT TO, To and Cc. With no filter at all (pushed or
  local), ``--no-filter-policy`` decides.
* **Metadata**: each forwarded packet carries the session's state when it went
  (:class:`EmailSummary`: protocol, last command, envelope, last message's From, To,
  Subject, Message-ID, IMAP mailbox).
* **Events**: one :class:`EmailEvent` per message (SMTP DATA/BDAT, IMAP FETCH/APPEND,
  POP3 RETR/TOP) of a captured session (all sessions with ``--events all``), sent as
  the message completes (or when its session matches later); one per implicit-TLS
  or STARTTLS session when it leaves the table (the latter with ``upgraded``).
  ``direction`` is ``outbound`` when the client sends the message (SMTP, APPEND),
  ``inbound`` when it receives it.
* **Ends**: the reply to QUIT (SMTP, POP3) or LOGOUT (IMAP); idle sessions time out.

AUTH secrets and passwords never reach metadata or events (the parsers keep the user
name and mechanism only). Strings from the wire go out through
:func:`lc.common.text.wire_text`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass

from lc.common.bpf import compile_bpf
from lc.common.errors import ValidationError
from lc.common.filters import Filter, FilterSet, compile_filters
from lc.common.imap import ImapCommand, ImapResponse, ImapSession, ImapUntagged
from lc.common.mailmsg import MailMessage, MailSession
from lc.common.pop3 import Pop3Command, Pop3Reply, Pop3Session
from lc.common.smtp import SmtpCommand, SmtpReply, SmtpSession, smtp_path
from lc.common.text import wire_text
from lc.common.tls import ClientHello, ServerHello, TlsStream, looks_like_tls
from lc.hunter.modes.base import (
    Forward,
    ModeContext,
    ModeSpec,
    option,
    port_list,
    positive_int,
)
from lc.hunter.modes.localfilters import local_filter_option, local_filters, session_bounds
from lc.hunter.modes.sessions import (
    CF_NO_MESSAGES,
    MAX_WAITING_EVENTS,
    Dissector,
    SessionMode,
    set_flow,
)
from lc.hunter.session import MATCHED, UNDECIDED, Out, Session
from lc.proto import lc_pb2

__all__ = [
    "EMAIL_FILTER_TYPES",
    "IMPLICIT_TLS_PORTS",
    "SPEC",
    "EmailConfig",
    "EmailDissector",
    "EmailMode",
    "email_mode",
]

EMAIL_FILTER_TYPES = (
    "email_address",
    "email_subject",
    "keyword",
    "email_mailbox",
    "email_command",
    "ip_address",
    "bpf",
)
#: Ports whose sessions are TLS from the first byte (RFC 8314).
IMPLICIT_TLS_PORTS = frozenset({465, 993, 995})
_TEXT_MAX = 1024
_ADDR_MAX = 320
_MAX_LIST = 100
_INBOUND_COMMANDS = frozenset({"FETCH", "RETR", "TOP"})


def icmp_errors_bpf(ports: Iterable[int]) -> str:
    """ICMP destination unreachable / time exceeded and ICMPv6 errors (types 1-4) whose
    quoted packet is TCP to or from one of ``ports``: the only ICMP a connection mode
    can place (the quoted IPv4 header's length read from its first byte; a quoted IPv6
    header taken as having no extension headers). Every other ICMP error on a busy
    host stays in the kernel."""
    v4 = "icmp[8 + (icmp[8] & 0xf) * 4 : 2]", "icmp[10 + (icmp[8] & 0xf) * 4 : 2]"
    v6 = "ip6[88:2]", "ip6[90:2]"
    ps = sorted(ports)
    in4 = " or ".join(f"{at} == {p}" for p in ps for at in v4)
    in6 = " or ".join(f"{at} == {p}" for p in ps for at in v6)
    return (
        "((icmp[icmptype] == icmp-unreach or icmp[icmptype] == icmp-timxceed)"
        f" and icmp[17] == 6 and ({in4}))"
        f" or (icmp6 and ip6[40] >= 1 and ip6[40] <= 4 and ip6[54] == 6 and ({in6}))"
    )


#: The parsers' bounds that drop something (their counter, the mode's figure), added to
#: the mode's figures as each session leaves the table.
_PARSER_DROPS = (
    ("long_lines", "long_lines"),  # a line over the parser's limit: its middle not kept
    ("pending_dropped", "pending_dropped"),  # unanswered commands beyond the limit
    ("rcpt_dropped", "rcpt_dropped"),  # RCPT TO beyond MAX_ADDRESSES
    ("dropped_reply_lines", "reply_lines_dropped"),  # POP3 multi-line answer lines
)


def _protocols(text: str) -> frozenset[str]:
    names = {p.strip().lower() for p in text.split(",") if p.strip()}
    if "all" in names:
        return frozenset({"smtp", "imap", "pop3"})
    bad = names - {"smtp", "imap", "pop3"}
    if bad or not names:
        raise ValueError(f"{text!r}: smtp, imap, pop3 or all (comma-separated)")
    return frozenset(names)


_Bounds = session_bounds(
    "session",
    ("--max-sessions", "--session-buffer-packets", "--session-buffer-mb",
     "--session-idle-timeout", "--session-decide-timeout"),
    ("20000", "2000", "256", "600", "300"),
)  # fmt: skip


@dataclass(slots=True)
class EmailConfig(_Bounds):  # type: ignore[valid-type,misc]
    protocols: frozenset[str] = option(
        "--protocol", "all", _protocols, "Protocols followed: smtp, imap, pop3 or all.", "P"
    )
    smtp_ports: frozenset[int] = option(
        "--smtp-port", "25,587,465", port_list, "SMTP ports (465: implicit TLS).", "PORTS"
    )
    imap_ports: frozenset[int] = option(
        "--imap-port", "143,993", port_list, "IMAP ports (993: implicit TLS).", "PORTS"
    )
    pop3_ports: frozenset[int] = option(
        "--pop3-port", "110,995", port_list, "POP3 ports (995: implicit TLS).", "PORTS"
    )
    capture_body: bool = option(
        "--capture-body",
        "no",
        lambda t: _yes_no("--capture-body", t),
        "Put the decoded text body (up to --max-body-size) into events.",
        switch=True,
    )
    max_body_size: int = option(
        "--max-body-size",
        "65536",
        positive_int,
        "Body bytes kept per message (keyword filters, events).",
        "BYTES",
    )
    senders: tuple[str, ...] = local_filter_option(
        "--sender", "email_address", "Local filter: MAIL FROM or From.", "ADDRS"
    )
    recipients: tuple[str, ...] = local_filter_option(
        "--recipient", "email_address", "Local filter: RCPT TO, To or Cc.", "ADDRS"
    )
    subjects: tuple[str, ...] = local_filter_option(
        "--subject", "email_subject", "Local filter: decoded Subject.", "PATTERNS"
    )
    keywords: tuple[str, ...] = local_filter_option(
        "--keywords", "keyword", "Local filter: words in the text body.", "WORDS"
    )
    mailboxes: tuple[str, ...] = local_filter_option(
        "--mailbox", "email_mailbox", "Local filter: IMAP mailbox.", "NAMES"
    )
    commands: tuple[str, ...] = local_filter_option(
        "--command", "email_command", "Local filter: command verb.", "VERBS"
    )

    def validate(self) -> None:
        seen: dict[int, str] = {}
        for name, ports in (
            ("--smtp-port", self.smtp_ports),
            ("--imap-port", self.imap_ports),
            ("--pop3-port", self.pop3_ports),
        ):
            for p in ports:
                if p in seen:
                    raise ValidationError(f"{name}: port {p} is also given to {seen[p]}")
                seen[p] = name

    def ports(self) -> dict[int, str]:
        """Followed ports and their protocol."""
        out: dict[int, str] = {}
        for proto, ports in (
            ("smtp", self.smtp_ports),
            ("imap", self.imap_ports),
            ("pop3", self.pop3_ports),
        ):
            if proto in self.protocols:
                out.update(dict.fromkeys(ports, proto))
        return out


#: A message whose event is to be made (with the session's user and protocol then), or
#: None for the record of an implicit-TLS session.
_Pending = tuple[MailMessage, str, str] | None


def _yes_no(flag: str, text: str) -> bool:
    t = text.strip().lower()
    if t in ("yes", "true", "1", "on"):
        return True
    if t in ("no", "false", "0", "off", ""):
        return False
    raise ValueError(f"{text!r}: yes or no")


def _ip_text(raw: bytes) -> str:
    try:
        return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)
    except (OSError, ValueError):
        return raw.hex()


#: A bound framer that completed nothing for this many chunks gives the engine an
#: empty message anyway: the frames waiting for a message stay few.
_SILENT_MAX = 128
#: Replies whose command the dissector reads (the session's end, STARTTLS, the
#: selected mailbox): a chunk with one of them is never quiet.
_LOUD = frozenset({"QUIT", "STARTTLS", "STLS", "SELECT", "EXAMINE", "LOGOUT"})
_REPLIES = (SmtpReply, Pop3Reply, ImapResponse)


class _Quiet:
    """A bound framer's message whose events can change nothing the dissector reads:
    replies to ordinary commands and untagged IMAP data (about half of a mail
    session's chunks). The mode counts it without the engine's message path when
    that path would do nothing with it either (:meth:`EmailMode._conn_stream_message`),
    else hands on its ``events`` as any chunk's."""

    __slots__ = ("events",)

    def __init__(self, events: list) -> None:
        self.events = events


def _quiet(events: list) -> bool:
    """Whether every event of a chunk is a reply the dissector only passes over (see
    :meth:`EmailDissector._events`) or untagged IMAP data."""
    for ev in events:
        t = type(ev)
        if t is SmtpReply:
            if ev.code == 421:
                return False
        elif t is not ImapResponse and t is not Pop3Reply and t is not ImapUntagged:
            return False
        cmd = getattr(ev, "command", None)
        if cmd is not None and (cmd.verb if t is not ImapResponse else cmd.name) in _LOUD:
            return False
    return True


class _Chunks:
    """The engine's framer for mail streams: the session parser, fed both directions,
    does the framing. Until the dissector has seen a chunk of it (a new direction, or
    the one after a gap), every chunk is one "message" ``(bytes, fresh, framer)``
    (``fresh``: the framer's first chunk); then it is bound to its connection's parser
    and feeds it itself (at the time of the packet being handled), and only chunks
    that completed something are messages (the ``list`` of the parser's events they
    completed): the engine has nothing to do for a message body's segments."""

    __slots__ = ("client", "conn", "dis", "offset", "silent")

    def __init__(self, dis: EmailDissector) -> None:
        self.offset = 0
        self.dis = dis
        self.conn: _Conn | None = None
        self.client = False
        self.silent = 0

    def feed(self, data: bytes) -> list[tuple[int, int, object]]:
        start = self.offset
        self.offset = end = start + len(data)
        c = self.conn
        p = c.parser if c is not None and not c.closed else None
        if p is None:
            # Unbound, or its connection left the table (the next one binds it) or
            # turned out to be TLS: the dissector sees the chunk.
            self.conn = None
            return [(start, end, (data, start == 0, self))]
        if p.error is None:
            events = p.feed(self.client, data, self.dis.now)
            if p.error is not None:
                self.dis.c["gave_up"] += 1
        else:
            events = p.feed(self.client, data, self.dis.now)  # counted as ignored
        if not events:
            self.silent += 1
            if self.silent < _SILENT_MAX:
                return []
        self.silent = 0
        if events and not p.upgraded and _quiet(events):
            return [(start, end, _Quiet(events))]
        return [(start, end, events)]


class _Conn:
    """The dissector's view of one mail connection (``Session.info``)."""

    __slots__ = ("client", "client_seen", "closed", "command", "ended", "last_msg", "mail_from",
                 "mailbox", "meta", "parser", "pending", "proto", "rcpt_to", "server",
                 "server_seen", "summary", "tls", "tls_c", "tls_s", "tls_sni",
                 "tls_version", "upgraded", "user", "waiting")  # fmt: skip

    def __init__(self, proto: str, client: tuple, server: tuple, tls: bool, parser) -> None:
        self.proto = proto  # smtp, imap, pop3
        self.client = client  # (address, port)
        self.server = server
        self.tls = tls
        self.parser: MailSession | None = parser
        self.tls_c: TlsStream | None = None
        self.tls_s: TlsStream | None = None
        self.tls_sni = ""
        self.tls_version = 0
        self.client_seen = self.server_seen = False
        self.command = ""
        self.mail_from = ""
        self.rcpt_to: list[str] = []
        self.mailbox = ""
        self.user = ""
        self.upgraded = False
        self.closed = False  # left the table
        self.ended = False
        self.last_msg: MailMessage | None = None
        # Messages (and the TLS session's record) whose events are still to be made:
        # those of the last chunk, then those waiting for the session's decision.
        # Events are made only for what is sent (a captured session's, or all with
        # --events all): most sessions are never captured.
        self.pending: list[_Pending] = []
        self.waiting: list[_Pending] = []
        self.summary: tuple | None = None
        self.meta: tuple | None = None  # (summary, PacketMeta) last built

    @property
    def shown(self) -> str:
        return f"{self.proto}s" if self.tls else self.proto


class EmailDissector(Dissector):
    protocol = "email"
    tags = ("email",)
    message_tag = 0
    noun = ("session", "sessions")
    alias_noun = "aliases"
    streams = True
    capture_unit = "connection"  # the whole TCP connection, SYN to the last ACK
    session_events = False  # one event per message instead

    def __init__(self, cfg: EmailConfig) -> None:
        self.cfg = cfg
        self.port_proto = cfg.ports()
        self.ports = frozenset(self.port_proto)
        self.c = dict.fromkeys(
            ("email_messages", "tls_sessions", "starttls", "gave_up", "gaps",
             *(name for _, name in _PARSER_DROPS)),
            0,
        )  # fmt: skip
        #: The filter types in force (pushed or local): only their values are read.
        self.wants: frozenset[str] = frozenset(EMAIL_FILTER_TYPES)
        self.now = 0  # the capture time of the packet being handled (bound framers)

    def kernel_bpf(self) -> str:
        # ICMP errors too: one quoting a captured connection's segment (a path MTU
        # "fragmentation needed") is one of its frames (the engine matches the quote).
        ports = " or ".join(f"port {p}" for p in sorted(self.ports))
        return f"(tcp and ({ports})) or {icmp_errors_bpf(self.ports)}"

    def new_framer(self) -> _Chunks:
        return _Chunks(self)

    def parse(self, payload: memoryview) -> object:
        from lc.common.errors import ParseError

        raise ParseError("mail is TCP only")

    def new_info(self, msg: object, flow: tuple) -> _Conn:
        src, sport, dst, dport, _ = flow  # the initiator first, as far as known
        pp = self.port_proto
        if dport in pp or sport not in pp:
            client, server, port = (src, sport), (dst, dport), dport
        else:
            client, server, port = (dst, dport), (src, sport), sport
        proto = pp.get(port, "smtp")
        tls = port in IMPLICIT_TLS_PORTS
        return _Conn(proto, client, server, tls, None if tls else self._parser(proto))

    def _parser(self, proto: str) -> MailSession:
        size = self.cfg.max_body_size
        cls = {"smtp": SmtpSession, "imap": ImapSession, "pop3": Pop3Session}[proto]
        return cls(max_body=size)

    def on_message(self, s: Session, msg: object, flow: tuple, ts: int) -> object:
        conn: _Conn = s.info  # type: ignore[assignment]
        if type(msg) is list:  # a bound framer's: the parser's events
            return self._events(s, conn, msg)
        data, fresh, framer = msg  # type: ignore[misc]
        from_client = (flow[0], flow[1]) == conn.client
        seen = conn.client_seen if from_client else conn.server_seen
        if from_client:
            conn.client_seen = True
        else:
            conn.server_seen = True
        if (
            not conn.tls
            and from_client
            and not seen
            and looks_like_tls(data[:3])
            and conn.parser is not None
            and not conn.parser.counters["commands"]
        ):
            conn.tls = True  # TLS where cleartext was expected: record it as TLS
            conn.parser = None
        if conn.tls:
            before = (conn.tls_sni, conn.tls_version)
            self._tls(conn, from_client, data)
            if conn.summary is not None and before != (conn.tls_sni, conn.tls_version):
                conn.summary = None  # metadata from the new state
            if conn.summary is None:
                s.metas[0] = None
            return None
        p = conn.parser
        assert p is not None
        if fresh and seen:
            self.c["gaps"] += 1
            p.gap(from_client)
        was_ok = not p.gave_up
        events = p.feed(from_client, data, ts)
        if was_ok and p.gave_up:
            self.c["gave_up"] += 1
        if framer.conn is None:
            framer.conn = conn  # its next chunks are parsed as they are framed
            framer.client = from_client
        return self._events(s, conn, events)

    def _tls(self, conn: _Conn, from_client: bool, data: bytes) -> None:
        if from_client:
            st = conn.tls_c = conn.tls_c or TlsStream()
        else:
            st = conn.tls_s = conn.tls_s or TlsStream()
        if st.failed or st.encrypted:
            return
        try:
            for ev in st.feed(data):
                if isinstance(ev, ClientHello) and ev.server_name:
                    conn.tls_sni = ev.server_name
                elif isinstance(ev, ServerHello) and not ev.is_hrr:
                    conn.tls_version = ev.version
        except Exception:  # TlsParseError: not TLS after all; counted, never raised
            self.c["gave_up"] += 1

    def _events(self, s: Session, conn: _Conn, events: list) -> tuple | None:
        """Update the session from the parser's events; the values the filters in force
        are asked (senders, recipients, subjects, bodies, mailboxes, commands), or None
        when there is none (most chunks: a reply, a message's body). Values of a type
        no filter has could match nothing: they are not gathered."""
        if not events:
            return None
        wants = self.wants
        want_addr = "email_address" in wants
        want_cmd = "email_command" in wants
        want_box = "email_mailbox" in wants
        commands: list[str] = []
        senders: list[str] = []
        recipients: list[str] = []
        subjects: list[str] = []
        bodies: list[str] = []
        mailboxes: list[str] = []
        msgs: list[MailMessage] = []
        changed = False  # a field of the metadata summary (see _summary)
        for ev in events:
            t = type(ev)
            if t is SmtpCommand:
                verb = ev.verb
                if verb == ".":
                    continue
                changed = True
                conn.command = verb
                if want_cmd:
                    commands.append(verb)
                if verb == "MAIL":
                    conn.mail_from = smtp_path(ev.arg, "FROM:")
                    conn.rcpt_to = []
                    if conn.mail_from and want_addr:
                        senders.append(conn.mail_from)
                elif verb == "RCPT":
                    r = smtp_path(ev.arg, "TO:")
                    if r and len(conn.rcpt_to) < _MAX_LIST:
                        conn.rcpt_to.append(r)
                        if want_addr:
                            recipients.append(r)
                elif verb in ("RSET", "HELO", "EHLO"):
                    conn.mail_from, conn.rcpt_to = "", []
            elif t is SmtpReply:
                code = ev.code
                cmd = ev.command
                if cmd is not None and (
                    cmd.verb == "QUIT" or (cmd.verb == "STARTTLS" and code == 220)
                ):
                    conn.ended = cmd.verb == "QUIT"
                if code == 421:
                    conn.ended = True
            elif t is ImapCommand:
                changed = True
                conn.command = ev.name
                if want_cmd:
                    commands.append(ev.name)
                if ev.mailbox and want_box:
                    mailboxes.append(ev.mailbox)
                if ev.name == "LOGIN" and ev.args:
                    conn.user = ev.args.split(" ", 1)[0].strip('"')
            elif t is ImapResponse:
                cmd = ev.command
                if cmd is not None:
                    if cmd.name in ("SELECT", "EXAMINE"):
                        changed = True
                        conn.mailbox = cmd.mailbox if ev.status == "OK" else ""
                    elif cmd.name == "LOGOUT":
                        conn.ended = True
            elif t is Pop3Command:
                changed = True
                conn.command = ev.verb
                if want_cmd:
                    commands.append(ev.verb)
                if ev.verb in ("USER", "APOP") and ev.arg:
                    conn.user = ev.arg.split(" ", 1)[0]
            elif t is Pop3Reply:
                if ev.command is not None and ev.command.verb == "QUIT":
                    conn.ended = True
            elif t is MailMessage:
                changed = True
                msgs.append(ev)
                conn.last_msg = ev
                self.c["email_messages"] += 1
                # Headers are decoded on first use: only those a filter in force reads.
                if want_addr:
                    senders.extend(a.addr for a in ev.from_)
                    recipients.extend(a.addr for a in ev.to)
                    recipients.extend(a.addr for a in ev.cc)
                    if ev.mail_from:
                        senders.append(ev.mail_from)
                    recipients.extend(ev.rcpt_to)
                if "email_subject" in wants:
                    subjects.append(ev.subject)
                if "keyword" in wants:  # decoding the body costs: only for a keyword filter
                    bodies.append(ev.body_text)
                if ev.mailbox and want_box:
                    mailboxes.append(ev.mailbox)
        p = conn.parser
        if p is not None and p.upgraded and not conn.upgraded:
            conn.upgraded = True
            changed = True
            self.c["starttls"] += 1
        if changed:
            # New metadata from now on. A chunk of replies alone changes none of its
            # fields: the metadata stays the same object (the same content as rebuilt:
            # a decision, which sets the filter ids, only comes with new values or to
            # a session never captured, whose metadata was never built).
            conn.summary = None
            s.metas[0] = None
        for m in msgs:
            conn.pending.append((m, m.user or conn.user, conn.shown))
        if commands or senders or recipients or subjects or bodies or mailboxes:
            return senders, recipients, subjects, bodies, mailboxes, commands
        return None

    def filter_values(self, msg: object, ctx: object) -> tuple[dict[str, object], list]:
        if ctx is None:
            return {}, []  # most segments (a message's body, a reply) add no value
        senders, recipients, subjects, bodies, mailboxes, commands = ctx  # type: ignore[misc]
        return {
            "email_address": senders + recipients,
            "email_subject": subjects,
            "keyword": bodies,
            "email_mailbox": mailboxes,
            "email_command": commands,
        }, []

    def settled(self, s: Session, msg: object) -> bool:
        conn: _Conn = s.info  # type: ignore[assignment]
        # Encrypted from here on: nothing more can match but the addresses.
        return conn.upgraded

    def _summary(self, conn: _Conn) -> tuple:
        if conn.summary is None:
            m = conn.last_msg
            conn.summary = (
                conn.shown,
                conn.command,
                conn.mail_from,
                tuple(conn.rcpt_to),
                tuple(a.addr for a in m.from_) if m is not None else (),
                tuple(a.addr for a in m.to) if m is not None else (),
                m.subject if m is not None else "",
                m.message_id if m is not None else "",
                conn.mailbox,
                conn.upgraded,
                conn.tls_sni,
            )
        return conn.summary

    def after_message(self, s: Session, msg: object, ts: int) -> None:
        conn: _Conn = s.info  # type: ignore[assignment]
        if conn.ended and not s.end_ns:
            s.end_ns = ts

    def meta(self, s: Session, tag: int, summary: object) -> lc_pb2.PacketMeta:
        """Every frame of a connection carries the session's state when it went."""
        conn: _Conn = s.info  # type: ignore[assignment]
        summary = self._summary(conn)
        cached = conn.meta
        if cached is not None and cached[0] is summary:
            return cached[1]
        shown, command, mail_from, rcpt, frm, to, subject, mid, mailbox, up, sni = summary  # type: ignore[misc]
        meta = lc_pb2.PacketMeta(
            protocol=shown,
            session_id=s.name,
            filter_ids=s.ids,
            email=lc_pb2.EmailSummary(
                protocol=shown,
                command=wire_text(command, 64),
                mail_from=wire_text(mail_from, _ADDR_MAX),
                rcpt_to=[wire_text(r, _ADDR_MAX) for r in rcpt],
                from_address=[wire_text(a, _ADDR_MAX) for a in frm[:_MAX_LIST]],
                to_address=[wire_text(a, _ADDR_MAX) for a in to[:_MAX_LIST]],
                subject=wire_text(subject, _TEXT_MAX),
                message_id=wire_text(mid, _TEXT_MAX),
                mailbox=wire_text(mailbox, _TEXT_MAX),
                upgraded=up,
                tls_sni=wire_text(sni, 256),
            ),
        )
        conn.meta = (summary, meta)
        return meta

    # -- events ------------------------------------------------------------------------
    def event(self, s: Session, conn: _Conn, item: _Pending) -> lc_pb2.Event:
        """The event of a message (or, ``item`` None, of an implicit-TLS or STARTTLS
        session as it leaves: ``upgraded`` is set on that record only; a message's own
        event describes a message read in clear)."""
        if item is None:
            return self._tls_event(s, conn)
        m, user, shown = item
        ev = lc_pb2.Event(dataset="email", start_ns=m.ts_ns, end_ns=m.end_ns or m.ts_ns)
        ev.session_id = s.name
        self._set_flow(conn, ev)
        e = ev.email
        e.protocol = shown
        e.command = wire_text(m.command, 64)
        e.direction = "inbound" if m.command in _INBOUND_COMMANDS else "outbound"
        e.from_address.extend(wire_text(a.addr, _ADDR_MAX) for a in m.from_[:_MAX_LIST])
        e.to_address.extend(wire_text(a.addr, _ADDR_MAX) for a in m.to[:_MAX_LIST])
        e.cc_address.extend(wire_text(a.addr, _ADDR_MAX) for a in m.cc[:_MAX_LIST])
        e.reply_to.extend(wire_text(a.addr, _ADDR_MAX) for a in m.reply_to[:_MAX_LIST])
        e.subject = wire_text(m.subject, _TEXT_MAX)
        e.message_id = wire_text(m.message_id, _TEXT_MAX)
        e.origination_ns = m.origination_ns or 0
        e.content_type = wire_text(m.content_type, 256)
        e.attachments.extend(wire_text(a, 256) for a in m.attachments[:_MAX_LIST])
        e.helo = wire_text(m.helo, 256)
        e.mail_from = wire_text(m.mail_from, _ADDR_MAX)
        e.rcpt_to.extend(wire_text(r, _ADDR_MAX) for r in m.rcpt_to[:_MAX_LIST])
        e.mailbox = wire_text(m.mailbox, _TEXT_MAX)
        e.user = wire_text(user, 256)
        e.size = m.size
        e.truncated = m.truncated
        e.complete = m.complete
        e.x_mailer = wire_text(m.user_agent, 256)
        if self.cfg.capture_body:
            e.body = wire_text(m.body_text, self.cfg.max_body_size)
        return ev

    def waiting(self, item: _Pending) -> _Pending:
        """An item to keep while its session is undecided: without --capture-body its
        message keeps no body (only its attachments' names are read from it)."""
        if item is not None and not self.cfg.capture_body:
            item[0].drop_body()
        return item

    def _set_flow(self, conn: _Conn, ev: lc_pb2.Event) -> None:
        (ca, cp), (sa, sp) = conn.client, conn.server
        set_flow(ev, (ca, cp, sa, sp, 6))

    def _tls_event(self, s: Session, conn: _Conn) -> lc_pb2.Event:
        ev = lc_pb2.Event(dataset="email", start_ns=s.first_ns, end_ns=s.end_ns or s.last_ns)
        ev.session_id = s.name
        self._set_flow(conn, ev)
        e = ev.email
        e.protocol = conn.shown
        e.tls_sni = wire_text(conn.tls_sni, 256)
        e.tls_version = conn.tls_version
        if conn.upgraded:
            e.command = "STARTTLS"
            e.upgraded = True
            e.user = wire_text(conn.user, 256)
        e.complete = True
        return ev

    def figures(self) -> dict[str, int]:
        return dict(self.c)

    def fold(self, p: MailSession) -> None:
        """Add a leaving session parser's bound counters to the mode's figures."""
        pc, c = p.counters, self.c
        for key, name in _PARSER_DROPS:
            v = pc.get(key, 0)
            if v:
                c[name] += v


class EmailMode(SessionMode):
    """The session engine with the email dissector, local filters and per-message events."""

    dis: EmailDissector
    # Its _tcp_frame only sets dis.now while no bpf filter exists (then the in-order path
    # is off: a bpf filter must see every frame), and the in-order path does that too.
    in_order_frames = True
    set_now = True

    def __init__(self, ctx: ModeContext, cfg: EmailConfig) -> None:
        super().__init__(ctx, EmailDissector(cfg), cfg.limits())
        self.cfg = cfg
        self.local_filters = local_filters(cfg)
        by_kind: dict[str, list[Filter]] = {"sender": [], "recipient": [], "rest": []}
        for f in self.local_filters:
            kind = f.id.split(":")[1]
            by_kind[kind if kind in by_kind else "rest"].append(f)
        types = EMAIL_FILTER_TYPES
        self._local = {k: compile_filters(v, None, types) for k, v in by_kind.items() if v}
        self._bpf: list[tuple[str, str, dict[int, object]]] = []  # (id, expr, per link type)
        if self._local:
            self.policy = "deny"  # filters exist: the no-filter policy does not apply
        self._wants()

    def apply(self, compiled: FilterSet) -> None:
        # bpf filters: compiled for every link type in use before anything changes (a
        # refused expression leaves the previous set in place).
        links = {lt for _, lt in self.interfaces} or {1}
        bpf = [(fid, e, {lt: compile_bpf(e, lt) for lt in links}) for fid, e in compiled.bpf()]
        with self._lock:
            super().apply(compiled)
            self._bpf = bpf
            self._live_ok = self._live_capable and not bpf  # bpf sees every frame
            self._wants()

    def _match_bpf(self, pkt: tuple, data: memoryview) -> list[str]:
        """Ids of the ``bpf`` filters that match this frame (any frame of a connection)."""
        lt = self.interfaces[pkt[4]][1] if self.interfaces else 1
        raw = bytes(data)
        ids = []
        for fid, expr, progs in self._bpf:
            prog = progs.get(lt)
            if prog is None:  # a link type that came later
                try:
                    prog = progs[lt] = compile_bpf(expr, lt)
                except ValidationError:
                    continue
            if prog.filter(raw):  # type: ignore[attr-defined]
                ids.append(fid)
        return ids

    def _wants(self) -> None:
        """What the filters in force (pushed and local) ask, worked out once per set."""
        fs = self._fs
        sets = [f for f in (fs, *self._local.values()) if f is not None]
        self.dis.wants = frozenset(t for t in EMAIL_FILTER_TYPES if any(f.has(t) for f in sets))
        self._filtering = (fs is not None and len(fs) > 0) or bool(self._local)
        self._ip = fs is not None and fs.has("ip_address")

    def _conn_stream_message(
        self, key: tuple, msg: object, frames: list, out: Out, ts: int, s: Session | None = None
    ) -> None:
        if type(msg) is _Quiet:
            # Replies only: the engine's message path would count the message and,
            # with filters in force and none of them ip_address, judge nothing (no
            # values; the decide timeout aside), change neither the session's end nor
            # its metadata, and send no event. Then only the count is done here.
            if s is not None and self._filtering and not self._ip and not s.cflags & CF_NO_MESSAGES:
                conn: _Conn = s.info  # type: ignore[assignment]
                if not conn.pending and not (conn.ended and not s.end_ns):
                    if s.state != UNDECIDED:
                        self.c["messages"] += 1
                        return
                    last = frames[-1].frame.ts if frames else ts
                    if (
                        last - s.first_ns <= self.limits.decide_timeout_ns
                        and not conn.upgraded  # (settled)
                    ):
                        self.c["messages"] += 1
                        return
            msg = msg.events  # type: ignore[attr-defined]
        SessionMode._conn_stream_message(self, key, msg, frames, out, ts, s)

    def _conn_message(
        self, s: Session, msg: object, toks: list, flow: tuple, out: Out, ts: int
    ) -> None:
        SessionMode._conn_message(self, s, msg, toks, flow, out, ts)
        if s.info.pending:  # type: ignore[attr-defined]
            self._take_pending(s)

    def _take_pending(self, s: Session) -> None:
        """The messages of the last chunk: their events are made and sent now if the
        connection is decided, else they wait with it (at most MAX_WAITING_EVENTS;
        sent when it is decided, or dropped)."""
        conn: _Conn = s.info  # type: ignore[assignment]
        if not conn.pending:
            return
        items, conn.pending = conn.pending, []
        if s.state != UNDECIDED:
            self._send(s, conn, items)
            return
        waiting = conn.waiting
        for item in items:
            if len(waiting) < MAX_WAITING_EVENTS:
                waiting.append(self.dis.waiting(item))
            else:
                self.cc["events_dropped"] += 1

    def _send(self, s: Session, conn: _Conn, items: list[_Pending]) -> None:
        """Events for ``items`` of a decided session (or one that leaves undecided),
        made only if they go: the session is captured, or --events all."""
        if s.state == MATCHED or self.events_all:
            for item in items:
                self._emit(s, self.dis.event(s, conn, item))

    def _decided(self, s: Session) -> None:
        super()._decided(s)
        conn: _Conn = s.info  # type: ignore[assignment]
        if conn.waiting:
            items, conn.waiting = conn.waiting, []
            self._send(s, conn, items)

    def _match(self, msg: object, ctx: object, flow: tuple) -> list[str] | None:
        if not self._filtering:
            return [] if self.policy == "allow" else None
        if ctx is None:  # no value to ask about (most messages): only the addresses
            if self._ip:
                ids = self._fs.match_ip([flow[0], flow[2]])  # type: ignore[union-attr]
                return sorted(ids) if ids else None
            return None
        fs = self._fs
        local = self._local
        # filter_values' fields without the empty ones (they match nothing).
        senders, recipients, subjects, bodies, mailboxes, commands = ctx  # type: ignore[misc]
        fields: dict[str, list[str]] = {}
        if senders or recipients:
            fields["email_address"] = senders + recipients
        if subjects:
            fields["email_subject"] = subjects
        if bodies:
            fields["keyword"] = bodies
        if mailboxes:
            fields["email_mailbox"] = mailboxes
        if commands:
            fields["email_command"] = commands
        ids: set[str] = set()
        if fs is not None and len(fs):
            ids |= fs.match_fields(fields)
            if self._ip:
                ids |= fs.match_ip([flow[0], flow[2]])
        if local:
            if "sender" in local and senders:
                ids |= local["sender"].match("email_address", senders)
            if "recipient" in local and recipients:
                ids |= local["recipient"].match("email_address", recipients)
            if "rest" in local:
                rest = dict(fields)
                rest.pop("email_address", None)
                ids |= local["rest"].match_fields(rest)
        return sorted(ids) if ids else None

    def _tcp_frame(self, pkt: tuple, d, data: memoryview, out: Out) -> None:
        self.dis.now = pkt[0]
        if not self._bpf:
            SessionMode._tcp_frame(self, pkt, d, data, out)
            return
        ids = self._match_bpf(pkt, data)
        if not ids:
            SessionMode._tcp_frame(self, pkt, d, data, out)
            return
        # A bpf filter selects this frame's connection: what it held goes, then this
        # frame and every later one (decided before the frame when the connection is
        # known, so that this frame goes too; after it when the frame opens it).
        a, b = (d.src, d.sport), (d.dst, d.dport)
        key = (*a, *b, 6) if a <= b else (*b, *a, 6)
        table = self.table
        s = table.sessions.get(key)
        if s is not None and s.state != MATCHED and not s.end_ns:
            table.decide(s, sorted({*ids, *s.ids}), out)
        SessionMode._tcp_frame(self, pkt, d, data, out)
        s = table.sessions.get(key)
        if s is not None and s.state != MATCHED:
            table.decide(s, sorted({*ids, *s.ids}), out)

    def _forgotten(self, s: Session) -> None:
        conn: _Conn = s.info  # type: ignore[assignment]
        conn.closed = True
        p = conn.parser
        if p is not None and not p.closed:
            self.dis._events(s, conn, p.close(s.last_ns))  # a message cut short
        if p is not None:
            self.dis.fold(p)
        if conn.tls:
            self.dis.c["tls_sessions"] += 1
            conn.pending.append(None)
        elif conn.upgraded:  # STARTTLS: the session's own record, as for implicit TLS
            conn.pending.append(None)
        self._take_pending(s)
        if conn.waiting:  # undecided to the end: sent with --events all only
            items, conn.waiting = conn.waiting, []
            self._send(s, conn, items)
        super()._forgotten(s)

    def finish(self) -> Forward:
        return super().finish()


def email_mode(ctx: ModeContext, cfg: EmailConfig | None = None) -> EmailMode:
    """Email mode for a hunter (the registry's factory)."""
    return EmailMode(ctx, cfg or EmailConfig())


SPEC = ModeSpec(
    name="email",
    help="""Email: capture the SMTP, IMAP and POP3 sessions that filters select, whole.

    A session is held until one of its messages (or commands) matches a filter
    (email_address, email_subject, keyword, email_mailbox, email_command,
    ip_address, bpf), pushed by the processor or given here (--sender, --recipient,
    --subject, --keywords, --mailbox, --command); then its packets so far and the
    rest of it are forwarded, with one event per message. Ports 465, 993 and 995
    are implicit TLS: recorded as TLS sessions. With no filter at all, nothing is
    forwarded unless --no-filter-policy allow.""",
    filter_types=EMAIL_FILTER_TYPES,
    default_policy="deny",
    config=EmailConfig,
    factory=email_mode,
)
