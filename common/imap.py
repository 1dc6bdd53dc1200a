"""IMAP4rev1 sessions, sans-IO: tagged commands and responses, untagged data, messages.

:class:`ImapSession` reads the two reassembled byte streams of one IMAP
connection (RFC 3501, with LITERAL+ (RFC 7888), IDLE (RFC 2177), SASL-IR and
STARTTLS) and returns :class:`ImapCommand`, :class:`ImapResponse`,
:class:`ImapUntagged` and :class:`~lc.common.mailmsg.MailMessage` events.
Feeding, blocking, give-up and ``close`` follow
:class:`~lc.common.mailmsg.MailSession`.

What is read
    * Commands: ``tag name args``, with ``UID`` joined to its command
      (``UID FETCH``). Literals ``{n}``, ``{n+}`` and ``~{n}`` are read by
      their count on both sides, so a literal may hold anything, including line
      breaks. A synchronising ``{n}`` is sent only after the server's ``+``
      continuation: the client waits for it (or for the tagged response that
      refuses the command). ``args`` shows the arguments with literals as
      ``{n}``; for LOGIN it is the user name only and for AUTHENTICATE the
      mechanism only; the lines answering AUTHENTICATE challenges are secrets:
      counted (``secret_lines``), never kept.
    * ``mailbox`` (modified UTF-7 decoded, RFC 3501 5.1.3) for SELECT, EXAMINE,
      CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, STATUS, APPEND, and the
      destination of COPY/MOVE. A successful SELECT/EXAMINE sets the session's
      ``mailbox`` (the one FETCH reads from); CLOSE, UNSELECT and a failed
      SELECT clear it.
    * Tagged responses pair with their command by tag; one that arrives before
      its command waits for it. Untagged responses come out as
      :class:`ImapUntagged` (name, number, text with literals as ``{n}``).
    * Messages: in an untagged FETCH response, the literals of ``RFC822``,
      ``BODY[]``, ``BODY[HEADER]``, ``BODY[HEADER.FIELDS (...)]``,
      ``RFC822.HEADER``, ``BODY[TEXT]``, ``RFC822.TEXT`` and body parts
      (``BODY[1.2]``, as text) make one :class:`~lc.common.mailmsg.MailMessage`
      when the response ends (``command="FETCH"``, the selected mailbox). The
      message literal of APPEND comes out when it ends (``command="APPEND"``).
    * IDLE (ended by ``DONE``, which comes out as a command with an empty tag)
      and STARTTLS (once the server answers OK, ``upgraded`` is set and nothing
      more is parsed).

What is not
    Response codes and FETCH items other than message literals are not
    interpreted (ENVELOPE and BODYSTRUCTURE included). A client line without a
    tag and a command counts as a bad line (``max_bad_lines`` of them make the
    session give up); a server line that does not start a response (``*``,
    ``+`` or a tag with OK/NO/BAD/PREAUTH/BYE) makes it give up at once.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import deque
from dataclasses import dataclass

from lc.common.mailmsg import (
    MAX_TEXT,
    MailMessage,
    MailParseError,
    MailSession,
    MessageBuilder,
)

__all__ = [
    "ImapCommand",
    "ImapEvent",
    "ImapResponse",
    "ImapSession",
    "ImapUntagged",
    "decode_mailbox",
]


@dataclass(slots=True)
class ImapCommand:
    """One client command (complete: with its literals)."""

    ts_ns: int
    tag: str
    name: str
    """Upper-cased: ``LOGIN``, ``SELECT``, ``FETCH``, ``UID FETCH``...; ``DONE``
    ends IDLE (its tag is empty)."""
    args: str
    """The arguments, literals shown as ``{n}`` (LOGIN: user; AUTHENTICATE: mechanism)."""
    mailbox: str = ""
    """The mailbox the command names, decoded (see the module docstring)."""


@dataclass(slots=True)
class ImapResponse:
    """A tagged response: the end of one command."""

    ts_ns: int
    tag: str
    status: str
    """``OK``, ``NO`` or ``BAD`` (also ``PREAUTH`` or ``BYE`` when tagged)."""
    text: str
    command: ImapCommand | None
    """The command with that tag; None when none was seen."""


@dataclass(slots=True)
class ImapUntagged:
    """An untagged response (``* ...``)."""

    ts_ns: int
    name: str
    """``OK``, ``CAPABILITY``, ``EXISTS``, ``FETCH``, ``SEARCH``... upper-cased."""
    number: int | None
    """The message number or count before the name (``* 12 FETCH``), if any."""
    text: str
    """What follows the name, literals shown as ``{n}``."""


ImapEvent = ImapCommand | ImapResponse | ImapUntagged | MailMessage

_LITERAL = re.compile(rb"~?\{(\d{1,20})(\+?)\}\Z")
_TAG = re.compile(rb"[!#-'*,-~]{1,64}\Z")  # ASTRING-CHAR without "+", no "{", "(", ")"...
_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9-]{0,31}\Z")
_STATUS = (b"OK", b"NO", b"BAD", b"PREAUTH", b"BYE")
_SECTION = re.compile(
    rb"(?:(?:BODY|BINARY)(?:\.PEEK)?\[([^\]]*)\](?:<(\d+)>)?|RFC822(\.HEADER|\.TEXT)?)\s*\Z",
    re.IGNORECASE,
)
_MAILBOX_FIRST = frozenset(
    {
        "SELECT",
        "EXAMINE",
        "CREATE",
        "DELETE",
        "RENAME",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "STATUS",
        "APPEND",
    }
)
_MAILBOX_SECOND = frozenset({"COPY", "MOVE", "UID COPY", "UID MOVE"})
#: Bytes of a literal kept for reading arguments (mailbox and user names).
KEEP_LITERAL = 1024
#: Lines and literals kept of one command or response (each line is capped too).
MAX_SEGMENTS = 64

# Client modes
_CMD = "cmd"
_LIT = "lit"  # reading a literal of the current command
_WAITLIT = "wait-lit"  # a synchronising literal waits for "+" (or the refusal)
_AUTH_WAIT = "auth-wait"  # AUTHENTICATE waits for a challenge or its tagged response
_AUTH_LINE = "auth-line"  # the next line answers a challenge
_AUTH_GUESS = "auth-guess"  # no server in sight: base64-looking lines are secrets
_WAIT = "wait"  # STARTTLS waits for its tagged response
#: Client modes that move only by reading bytes (the others move when the server answers).
_READING = frozenset({_CMD, _AUTH_LINE, _AUTH_GUESS, _WAIT})

_B64_LINE = re.compile(rb"[A-Za-z0-9+/=*]*\Z")


def decode_mailbox(raw: bytes) -> str:
    """A mailbox name from the wire: modified UTF-7 decoded (RFC 3501 5.1.3).

    Names without ``&`` are read as UTF-8 (as IMAP4rev2 and UTF8=ACCEPT send
    them); a malformed shifted run is left as written.
    """
    if b"&" not in raw:
        return raw.decode("utf-8", "surrogateescape")
    out = []
    i = 0
    n = len(raw)
    while i < n:
        amp = raw.find(b"&", i)
        if amp < 0:
            out.append(raw[i:].decode("utf-8", "surrogateescape"))
            break
        out.append(raw[i:amp].decode("utf-8", "surrogateescape"))
        dash = raw.find(b"-", amp + 1)
        if dash < 0:
            out.append(raw[amp:].decode("utf-8", "surrogateescape"))
            break
        run = raw[amp + 1 : dash]
        if not run:
            out.append("&")
        else:
            b64 = run.replace(b",", b"/")
            b64 += b"=" * (-len(b64) % 4)
            try:
                out.append(base64.b64decode(b64, validate=True).decode("utf-16-be"))
            except (binascii.Error, ValueError, UnicodeDecodeError):
                out.append(raw[amp : dash + 1].decode("utf-8", "surrogateescape"))
        i = dash + 1
    return "".join(out)


class _Lit:
    """A literal among a command's arguments: its size and (small ones) its bytes."""

    __slots__ = ("data", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: bytes | None = None


class _Waiter:
    """A client action that needs the server's ``+`` continuation."""

    __slots__ = ("kind", "state", "tag")

    def __init__(self, kind: str, tag: str) -> None:
        self.kind = kind
        self.tag = tag
        self.state = 0  # 0 waiting, 1 granted ("+"), 2 refused (tagged response)


def _tokens(segs: list[bytes | _Lit], limit: int) -> list[bytes | _Lit | None]:
    """The first ``limit`` arguments: strings as bytes, literals as ``_Lit``, lists as None."""
    out: list[bytes | _Lit | None] = []
    for seg in segs:
        if isinstance(seg, _Lit):
            out.append(seg)
            if len(out) >= limit:
                return out
            continue
        i = 0
        n = len(seg)
        while i < n and len(out) < limit:
            c = seg[i]
            if c == 0x20:
                i += 1
            elif c == 0x22:  # quoted string
                j = i + 1
                buf = bytearray()
                while j < n and seg[j] != 0x22:
                    if seg[j] == 0x5C and j + 1 < n:
                        j += 1
                    buf.append(seg[j])
                    j += 1
                out.append(bytes(buf))
                i = j + 1
            elif c == 0x28:  # a parenthesised list (flags): skipped as one argument
                depth = 0
                j = i
                while j < n:
                    if seg[j] == 0x28:
                        depth += 1
                    elif seg[j] == 0x29:
                        depth -= 1
                        if depth == 0:
                            break
                    j += 1
                out.append(None)
                i = j + 1
            else:
                j = seg.find(b" ", i)
                j = n if j < 0 else j
                out.append(seg[i:j])
                i = j
        if len(out) >= limit:
            return out
    return out


class ImapSession(MailSession):
    """One IMAP connection (see the module docstring)."""

    protocol = "imap"
    _COUNTERS = (*MailSession._COUNTERS, "literal_bytes_skipped", "unsolicited_continuations")

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self.user = ""
        """The LOGIN user name."""
        self.auth_mechanism = ""
        self.mailbox = ""
        """The selected mailbox."""
        self._mode = _CMD
        self._idle = ""  # the tag of an IDLE the client has not ended with DONE
        self._pending: dict[str, deque[ImapCommand]] = {}
        self._npending = 0
        self._waiters: deque[_Waiter] = deque()
        self._cwait: _Waiter | None = None  # the waiter the client is blocked on
        self._tls_cmd: ImapCommand | None = None
        # The command being read
        self._cmd: ImapCommand | None = None
        self._segs: list[bytes | _Lit] = []
        self._lit: _Lit | None = None
        self._lit_left = 0
        self._lit_msg: MessageBuilder | None = None
        self._lit_keep: bytearray | None = None
        # The server response being read
        self._resp: ImapUntagged | None = None
        self._resp_text: list[bytes] = []
        self._slit_left = 0
        self._slit_kind = ""
        self._slit_buf: MessageBuilder | None = None
        self._sections: dict[str, MessageBuilder] = {}
        self._held_resp: ImapResponse | None = None
        self._held_cont = False

    # -- client side

    def _client_step(self, out: list) -> bool:
        r = self._c
        if r._pos >= len(r._buf) and self._mode in _READING:
            return False  # no byte to read in a mode that moves only by reading
        start = r.consumed
        progress = False
        while self._live:
            mode = self._mode
            if mode is _CMD:
                if r._pos >= len(r._buf):
                    break  # nothing left to read (what readline would say, without the call)
                line = r.readline(self.max_line)
                if line is None:
                    break
                if r.overlong:
                    self.counters["long_lines"] += 1
                self._client_line(line, out)
            elif mode is _LIT:
                if self._lit_left:
                    chunk = r.take(self._lit_left)
                    if not chunk:
                        break
                    self._lit_left -= len(chunk)
                    if self._lit_msg is not None:
                        self._lit_msg.add(chunk)
                    elif self._lit_keep is not None:
                        room = KEEP_LITERAL - len(self._lit_keep)
                        self._lit_keep += chunk[:room]
                    else:
                        self.counters["literal_bytes_skipped"] += len(chunk)
                    if self._lit_left:
                        break
                self._end_client_literal(out)
                self._mode = _CMD
            elif mode is _WAITLIT:
                w = self._cwait
                assert w is not None
                if w.state == 0:
                    break
                self._cwait = None
                progress = True
                if w.state == 1:
                    self._mode = _LIT
                else:  # refused: the literal is never sent; the command ends here
                    self._lit = None
                    self._lit_msg = self._lit_keep = None
                    self._mode = _CMD
                    self._end_command(out)
            elif mode is _AUTH_WAIT:
                w = self._cwait
                assert w is not None
                if w.state == 0:
                    break
                self._cwait = None
                progress = True
                if w.state == 1:
                    self._mode = _AUTH_LINE
                else:  # the tagged response ended the exchange
                    self._mode = _CMD
                    self._cmd = None
            elif mode is _AUTH_LINE:
                if r._pos >= len(r._buf):
                    break  # nothing left to read (what readline would say, without the call)
                line = r.readline(self.max_line)
                if line is None:
                    break
                self.counters["secret_lines"] += 1
                assert self._cmd is not None
                self._wait_for_continuation("auth", self._cmd.tag)
                self._mode = _AUTH_WAIT
            elif mode is _AUTH_GUESS:
                if r._pos >= len(r._buf):
                    break  # nothing left to read (what readline would say, without the call)
                line = r.readline(self.max_line)
                if line is None:
                    break
                if line and b" " not in line and _B64_LINE.match(line):
                    self.counters["secret_lines"] += 1
                    continue
                self._mode = _CMD
                self._cmd = None
                self._client_line(line, out)
            else:  # _WAIT: STARTTLS
                break
        return progress or r.consumed != start

    def _wait_for_continuation(self, kind: str, tag: str) -> _Waiter:
        w = _Waiter(kind, tag)
        if len(self._waiters) >= self.max_pending:
            self._waiters.popleft()  # only IDLEs the server never answered pile up
            self.counters["pending_dropped"] += 1
        self._waiters.append(w)
        if kind != "idle":
            self._cwait = w
        return w

    def _client_line(self, line: bytes, out: list) -> None:
        cmd = self._cmd
        if cmd is None:
            if self._idle:
                # Anything but DONE means the IDLE was refused; either way it is over.
                self._idle = ""
                if line.strip().upper() == b"DONE":
                    out.append(ImapCommand(self._c.ts_ns, "", "DONE", ""))
                    self.counters["commands"] += 1
                    return
            raw_tag, _, rest = line.partition(b" ")
            raw_name, _, rest = rest.partition(b" ")
            tag = raw_tag.decode("utf-8", "surrogateescape")[:64]
            if not _TAG.match(raw_tag) or not _NAME.match(raw_name):
                self._bad_line("command", line)
                if raw_tag and _TAG.match(raw_tag):
                    # The server will answer it by its tag: keep its place.
                    self._register(ImapCommand(self._c.ts_ns, tag, "", ""))
                return
            name = raw_name.decode("ascii").upper()
            if name == "UID":
                sub, _, rest = rest.partition(b" ")
                name = "UID " + sub.decode("utf-8", "surrogateescape").upper()[:32]
            cmd = self._cmd = ImapCommand(self._c.ts_ns, tag, name, "")
            self._segs = []
            self._register(cmd)
            if name == "IDLE":
                self._idle = tag
            text = rest
        else:
            text = line
        m = _LITERAL.search(text)
        segs = self._segs
        keep = len(segs) < MAX_SEGMENTS
        if m is None:
            if keep:
                segs.append(text)
            self._end_command(out)
            return
        size = int(m.group(1))
        lit = _Lit(size)
        if keep:
            segs.append(text[: m.start()])
            segs.append(lit)
        self._lit = lit
        self._lit_left = size
        self._lit_msg = self._lit_keep = None
        name = cmd.name
        if name == "APPEND" and len(_tokens(self._segs[:-1], 1)) >= 1:
            self._lit_msg = MessageBuilder(self.max_header + self.max_body, self._c.ts_ns)
        elif not (name == "LOGIN" and len(_tokens(self._segs[:-1], 1)) >= 1):
            self._lit_keep = bytearray()  # LOGIN's password literal is never kept
        if m.group(2):  # LITERAL+: sent at once
            self._mode = _LIT
        else:
            self._wait_for_continuation("lit", cmd.tag)
            self._mode = _WAITLIT

    def _register(self, cmd: ImapCommand) -> None:
        if self._npending >= self.max_pending:
            # Forget the oldest command that still waits for its response.
            for tag, queue in self._pending.items():
                queue.popleft()
                if not queue:
                    del self._pending[tag]
                break
            self._npending -= 1
            self.counters["pending_dropped"] += 1
        self._pending.setdefault(cmd.tag, deque()).append(cmd)
        self._npending += 1

    def _end_client_literal(self, out: list) -> None:
        lit = self._lit
        self._lit = None
        if lit is None:
            return
        if self._lit_keep is not None:
            lit.data = bytes(self._lit_keep)
            self._lit_keep = None
        b = self._lit_msg
        if b is not None:
            self._lit_msg = None
            cmd = self._cmd
            assert cmd is not None
            toks = _tokens(self._segs, 1)
            mailbox = _token_text(toks[0]) if toks else ""
            header, body, truncated = b.parts(self.max_header, self.max_body)
            out.append(
                MailMessage(
                    header,
                    body,
                    protocol="imap",
                    command="APPEND",
                    ts_ns=b.ts_ns,
                    end_ns=self._c.ts_ns,
                    size=b.size,
                    truncated=truncated,
                    max_text=self.max_body,
                    mailbox=mailbox,
                    user=self.user,
                )
            )
            self.counters["messages"] += 1

    def _end_command(self, out: list) -> None:
        cmd = self._cmd
        assert cmd is not None
        self._cmd = None
        segs = self._segs
        self._segs = []
        name = cmd.name
        if name == "LOGIN":
            toks = _tokens(segs, 1)
            cmd.args = self.user = _token_text(toks[0]) if toks else ""
        elif name == "AUTHENTICATE":
            toks = _tokens(segs, 1)
            mech = _token_text(toks[0]).upper() if toks else ""
            cmd.args = self.auth_mechanism = mech
            self._cmd = cmd  # secret lines belong to it
            self._wait_for_continuation("auth", cmd.tag)
            self._mode = _AUTH_WAIT
        else:
            parts = []
            for seg in segs:
                parts.append(f"{{{seg.size}}}" if isinstance(seg, _Lit) else self._text(seg))
            args = "".join(parts).strip()
            cmd.args = args if len(args) <= MAX_TEXT else args[:MAX_TEXT]
            if name in _MAILBOX_FIRST:
                toks = _tokens(segs, 1)
                cmd.mailbox = _token_text(toks[0]) if toks else ""
            elif name in _MAILBOX_SECOND:
                toks = _tokens(segs, 2)
                cmd.mailbox = _token_text(toks[1]) if len(toks) > 1 else ""
            if name == "STARTTLS":
                self._tls_cmd = cmd
                self._mode = _WAIT
            elif name == "IDLE":
                self._wait_for_continuation("idle", cmd.tag)
        out.append(cmd)
        self.counters["commands"] += 1

    # -- server side

    def _server_step(self, out: list) -> bool:
        r = self._s
        if self._held_resp is None and not self._held_cont and r._pos >= len(r._buf):
            return False  # no byte to read and nothing waiting: nothing can move
        start = r.consumed
        progress = False
        while self._live:
            if self._mode is _AUTH_LINE:
                break  # the client owes the line that answers a challenge: nothing comes first
            if self._held_resp is not None:
                if not self._may_pair(self._held_resp.tag):
                    break
                resp, self._held_resp = self._held_resp, None
                self._tagged(resp, out)
                progress = True
                continue
            if self._held_cont:
                if not self._waiters:
                    break
                self._held_cont = False
                self._continuation()
                progress = True
                continue
            if self._slit_left:
                chunk = r.take(self._slit_left)
                if not chunk:
                    break
                self._slit_left -= len(chunk)
                if self._slit_buf is not None:
                    self._slit_buf.add(chunk)
                else:
                    self.counters["literal_bytes_skipped"] += len(chunk)
                if self._slit_left:
                    break
                continue
            if r._pos >= len(r._buf):
                break  # nothing left to read (what readline would say, without the call)
            line = r.readline(self.max_line)
            if line is None:
                break
            if r.overlong:
                self.counters["long_lines"] += 1
            self._server_line(line, out)
        return progress or r.consumed != start

    def _server_line(self, line: bytes, out: list) -> None:
        resp = self._resp
        if resp is None:
            if line[:2] == b"* ":
                rest = line[2:]
                first, _, after = rest.partition(b" ")
                number = None
                if first.isdigit() and len(first) <= 18:
                    number = int(first)
                    first, _, after = after.partition(b" ")
                m = _LITERAL.search(first)
                if m is not None:  # "* 3 {5}" is not a name
                    first = b""
                    after = line[2:]
                name = first.decode("utf-8", "surrogateescape").upper()[:32]
                resp = self._resp = ImapUntagged(self._s.ts_ns, name, number, "")
                self._resp_text = []
                self._sections = {}
                text = after
            elif line[:1] == b"+":
                if not self._waiters:
                    self._held_cont = True
                    return
                self._continuation()
                return
            else:
                raw_tag, _, rest = line.partition(b" ")
                raw_status, _, text = rest.partition(b" ")
                status = raw_status.upper()
                if not raw_tag or status not in _STATUS:
                    raise MailParseError(f"imap: not an IMAP response: {line[:40]!r}")
                tag = raw_tag.decode("utf-8", "surrogateescape")[:64]
                resp_t = ImapResponse(self._s.ts_ns, tag, status.decode(), self._text(text), None)
                self.counters["replies"] += 1
                if not self._may_pair(tag):
                    self._held_resp = resp_t
                    return
                self._tagged(resp_t, out)
                return
        else:
            text = line
        m = _LITERAL.search(text)
        keep = len(self._resp_text) < MAX_SEGMENTS
        if m is None:
            if keep:
                self._resp_text.append(text)
            self._end_untagged(out)
            return
        size = int(m.group(1))
        if keep:
            self._resp_text.append(text[: m.start()] + b"{" + m.group(1) + b"}")
        self._slit_left = size
        self._slit_buf = None
        if resp.name == "FETCH":
            kind = _section_kind(text[: m.start()])
            if kind and kind not in self._sections:
                limit = {
                    "full": self.max_header + self.max_body,
                    "header": self.max_header,
                }.get(kind, self.max_body)
                self._slit_buf = self._sections[kind] = MessageBuilder(limit, self._s.ts_ns)

    def _may_pair(self, tag: str) -> bool:
        """A tagged response can be read: its command has been, and (IDLE) it ended."""
        return tag in self._pending and tag != self._idle

    def _continuation(self) -> None:
        w = self._waiters.popleft()
        if w.state != 0:
            return
        w.state = 1
        if w is self._cwait and w.kind == "auth":
            # The client owes its answer now: the server says nothing more until it
            # has been read (see _server_step).
            self._cwait = None
            self._mode = _AUTH_LINE

    def _end_untagged(self, out: list, complete: bool = True) -> None:
        resp = self._resp
        assert resp is not None
        self._resp = None
        text = self._text(b"".join(self._resp_text))
        self._resp_text = []
        resp.text = text
        out.append(resp)
        self.counters["replies"] += 1
        sections = self._sections
        if not sections:
            return
        self._sections = {}
        full = sections.get("full")
        if full is not None:
            header, body, truncated = full.parts(self.max_header, self.max_body)
            size = full.size
            ts = full.ts_ns
        else:
            hb = sections.get("header")
            tb = sections.get("text") or sections.get("part")
            header = bytes(hb.data) if hb is not None else b""
            body = bytes(tb.data) if tb is not None else b""
            size = (hb.size if hb else 0) + (tb.size if tb else 0)
            truncated = size > len(header) + len(body)
            ts = min(b.ts_ns for b in (hb, tb) if b is not None)
        out.append(
            MailMessage(
                header,
                body,
                protocol="imap",
                command="FETCH",
                ts_ns=ts,
                end_ns=self._s.ts_ns,
                size=size,
                truncated=truncated,
                complete=complete,
                max_text=self.max_body,
                mailbox=self.mailbox,
                user=self.user,
            )
        )
        self.counters["messages"] += 1

    def _tagged(self, resp: ImapResponse, out: list) -> None:
        queue = self._pending.get(resp.tag)
        cmd = None
        if queue:
            cmd = queue.popleft()
            self._npending -= 1
            if not queue:
                del self._pending[resp.tag]
        resp.command = cmd
        out.append(resp)
        # Whatever waited for a "+" under this tag will not get one now.
        if self._waiters:
            for w in self._waiters:
                if w.tag == resp.tag and w.state == 0:
                    w.state = 2
            self._waiters = deque(w for w in self._waiters if w.state == 0)
        if self._cwait is not None and self._cwait.tag == resp.tag and self._cwait.state == 0:
            self._cwait.state = 2
        if cmd is None:
            return
        ok = resp.status == "OK"
        name = cmd.name
        if name in ("SELECT", "EXAMINE"):
            self.mailbox = cmd.mailbox if ok else ""
        elif name in ("CLOSE", "UNSELECT") and ok:
            self.mailbox = ""
        elif name == "STARTTLS" and cmd is self._tls_cmd:
            self._tls_cmd = None
            if ok:
                self._upgrade()
            elif self._mode is _WAIT:
                self._mode = _CMD

    # -- when the other side is missing

    def _force_client(self, out: list) -> bool:
        mode = self._mode
        if mode is _WAITLIT and self._cwait is not None:
            self._cwait.state = 1
            return True
        if mode is _AUTH_WAIT:
            self._cwait = None
            self._cmd = None
            self._mode = _AUTH_GUESS
            return True
        if mode is _WAIT:
            self._upgrade()
            return True
        return False

    def _force_server(self, out: list) -> bool:
        if self._mode is _AUTH_LINE and self._cmd is not None:
            # The client's answer to the challenge is not coming: go on as if it had.
            self._wait_for_continuation("auth", self._cmd.tag)
            self._mode = _AUTH_WAIT
            return True
        if self._held_resp is not None:
            if self._held_resp.tag == self._idle and self._idle:
                self._idle = ""  # the DONE is not coming: pair it all the same
                return True
            resp, self._held_resp = self._held_resp, None
            out.append(resp)
            self.counters["unpaired_replies"] += 1
            return True
        if self._held_cont:
            self._held_cont = False
            self.counters["unsolicited_continuations"] += 1
            return True
        return False

    def _finish(self, out: list) -> None:
        if self._resp is not None and self._sections:
            self._end_untagged(out, complete=False)
        if self._lit_msg is not None:
            b, self._lit_msg = self._lit_msg, None
            header, body, truncated = b.parts(self.max_header, self.max_body)
            out.append(
                MailMessage(
                    header,
                    body,
                    protocol="imap",
                    command="APPEND",
                    ts_ns=b.ts_ns,
                    end_ns=self._c.ts_ns,
                    size=b.size,
                    truncated=truncated,
                    complete=False,
                    max_text=self.max_body,
                    user=self.user,
                )
            )
            self.counters["messages"] += 1


def _token_text(tok: bytes | _Lit | None) -> str:
    if tok is None:
        return ""
    if isinstance(tok, _Lit):
        return decode_mailbox(tok.data) if tok.data is not None else ""
    return decode_mailbox(tok)


def _section_kind(before: bytes) -> str:
    """What a FETCH literal holds, from the item name before it ("" when not a message)."""
    m = _SECTION.search(before[-256:])
    if m is None:
        return ""
    section, origin, rfc822 = m.groups()
    if section is None:
        if rfc822 is None:
            return "full"
        return "header" if rfc822.upper() == b".HEADER" else "text"
    sec = section.upper()
    if origin not in (None, b"0"):
        return "part"  # a later piece of a partial fetch
    if sec == b"":
        return "full"
    if sec == b"TEXT":
        return "text"
    if sec.startswith(b"HEADER"):
        return "header"
    if sec[:1].isdigit():
        last = sec.rsplit(b".", 1)[-1]
        if last in (b"MIME", b"HEADER") or last.startswith(b"HEADER"):
            return ""
        return "part"
    return ""
