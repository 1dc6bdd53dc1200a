"""POP3 sessions, sans-IO: commands, replies paired with them, and the messages retrieved.

:class:`Pop3Session` reads the two reassembled byte streams of one POP3
connection (RFC 1939, with RFC 2449 CAPA/PIPELINING, RFC 2595 STLS and RFC 5034
AUTH) and returns :class:`Pop3Command`, :class:`Pop3Reply` and
:class:`~lc.common.mailmsg.MailMessage` events. Feeding, blocking, give-up and
``close`` follow :class:`~lc.common.mailmsg.MailSession`.

What is read
    * The greeting (the first status line, paired with no command) and every
      reply: ``+OK``/``-ERR`` and its text. Replies pair with commands in order
      (several commands in one segment are fine). Whether a ``+OK`` is followed
      by a multi-line body depends on the command, so a status line that
      arrives before its command waits for it.
    * Multi-line bodies are dot-unstuffed up to the lone ``.`` line. For RETR
      and TOP the body is the message (TOP: its header and the first lines),
      which comes out as a :class:`~lc.common.mailmsg.MailMessage` just before its
      reply. For LIST and UIDL without an argument, CAPA, and AUTH without a
      mechanism (the list of mechanisms some servers send) the lines are kept in
      ``Pop3Reply.lines`` (at most :data:`MAX_REPLY_LINES`, each cut to
      :data:`~lc.common.mailmsg.MAX_TEXT` characters).
    * ``USER name`` and ``APOP name digest`` give the user name (``user``);
      ``PASS`` is reported with an empty ``arg``, APOP without its digest.
    * ``AUTH mechanism [initial-response]``: ``arg`` is the mechanism only; each
      line the client sends after a ``+`` challenge is a secret: counted
      (``secret_lines``), never kept. The challenges themselves are not replies.
    * STLS: once the server answers ``+OK``, ``upgraded`` is set and nothing more
      is parsed.

What is not
    A command line that is not POP3 (a keyword that is not 1-16 letters and
    digits) takes its place in the command order and counts as a bad line;
    ``max_bad_lines`` of them, or a server line that is neither a status line
    nor a challenge, make the session give up.
"""

from __future__ import annotations

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

__all__ = ["MAX_REPLY_LINES", "Pop3Command", "Pop3Event", "Pop3Reply", "Pop3Session"]

MAX_REPLY_LINES = 4096


@dataclass(slots=True)
class Pop3Command:
    """One command line the client sent."""

    ts_ns: int
    verb: str
    """Upper-cased keyword: ``USER``, ``STAT``, ``RETR``, ``TOP``, ``AUTH``..."""
    arg: str
    """The rest of the line (PASS: ``""``; APOP: the name; AUTH: the mechanism)."""


@dataclass(slots=True)
class Pop3Reply:
    """One complete reply from the server."""

    ts_ns: int
    ok: bool
    """``+OK`` (True) or ``-ERR``."""
    text: str
    """The status line's text after the indicator."""
    lines: tuple[str, ...]
    """Multi-line bodies other than messages (LIST, UIDL, CAPA...)."""
    command: Pop3Command | None
    """The command it answers; None for the greeting."""


Pop3Event = Pop3Command | Pop3Reply | MailMessage

_VERB = re.compile(rb"[A-Za-z][A-Za-z0-9]{0,15}\Z")
_B64_LINE = re.compile(rb"[A-Za-z0-9+/=]*\Z")

_CMD = "cmd"
_WAIT = "wait"  # STLS or AUTH: the reply decides what the client sends next
_AUTH_LINE = "auth-line"  # the next line answers a challenge
_AUTH_GUESS = "auth-guess"  # no server in sight: base64-looking lines are secrets

_LIST_VERBS = ("LIST", "UIDL")  # multi-line without an argument
_MESSAGE_VERBS = ("RETR", "TOP")


def _multi_line(cmd: Pop3Command) -> bool:
    verb = cmd.verb
    if verb in _MESSAGE_VERBS or verb == "CAPA":
        return True
    return not cmd.arg and verb in (*_LIST_VERBS, "AUTH")


def _status_of(line: bytes) -> tuple[bool, bytes] | None:
    """``(ok, text)`` of a status line, None for anything else."""
    head = line[:4].upper()
    if head[:3] == b"+OK":
        rest = line[3:]
        ok = True
    elif head == b"-ERR":
        rest = line[4:]
        ok = False
    else:
        return None
    return ok, rest[1:] if rest[:1] == b" " else rest


class Pop3Session(MailSession):
    """One POP3 connection (see the module docstring)."""

    protocol = "pop3"
    _COUNTERS = (*MailSession._COUNTERS, "dropped_reply_lines")

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self.user = ""
        """The name from USER or APOP."""
        self.auth_mechanism = ""
        self._mode = _CMD
        self._wait: Pop3Command | None = None
        self._pending: deque[Pop3Command] = deque()
        self._greeted = False
        self._held: bytes | None = None  # a status line waiting for its command
        # The multi-line body being read: (its command, the status line's text)
        self._multi: tuple[Pop3Command, str] | None = None
        self._msg: MessageBuilder | None = None
        self._lines = bytearray()

    # -- client side

    def _client_step(self, out: list) -> bool:
        r = self._c
        if r._pos >= len(r._buf):
            return False  # every client move reads a line
        start = r.consumed
        while self._live:
            mode = self._mode
            if mode is _WAIT:
                break
            if r._pos >= len(r._buf):
                break  # nothing left to read (what readline would say, without the call)
            line = r.readline(self.max_line)
            if line is None:
                break
            if mode is _AUTH_LINE:
                self.counters["secret_lines"] += 1
                self._mode = _WAIT
                continue
            if mode is _AUTH_GUESS:
                if line and b" " not in line and _B64_LINE.match(line) and len(line) > 4:
                    self.counters["secret_lines"] += 1
                    continue
                self._mode = _CMD
            if r.overlong:
                self.counters["long_lines"] += 1
            self._command(line, out)
        return r.consumed != start

    def _command(self, line: bytes, out: list) -> None:
        raw_verb, _, raw_arg = line.partition(b" ")
        verb = raw_verb.decode("ascii", "replace").upper()[:16]
        arg = self._text(raw_arg.strip())
        cmd = Pop3Command(self._c.ts_ns, verb, arg)
        if not _VERB.match(raw_verb):
            self._bad_line("command", line)
        elif verb == "USER":
            self.user = arg
        elif verb == "PASS":
            cmd.arg = ""
        elif verb == "APOP":
            cmd.arg = self.user = arg.split(" ", 1)[0]
        elif verb == "AUTH" and arg:
            cmd.arg = self.auth_mechanism = arg.split(" ", 1)[0].upper()
            self._wait = cmd
            self._mode = _WAIT
        elif verb == "STLS":
            self._wait = cmd
            self._mode = _WAIT
        pending = self._pending
        if len(pending) >= self.max_pending:
            pending.popleft()
            self.counters["pending_dropped"] += 1
        pending.append(cmd)
        out.append(cmd)
        self.counters["commands"] += 1

    # -- server side

    def _server_step(self, out: list) -> bool:
        r = self._s
        if self._held is None and self._multi is None and r._pos >= len(r._buf):
            # No byte to read, no status line waiting and no body being read (which
            # sets its message's start time even then): nothing can move.
            return False
        start = r.consumed
        progress = False
        while self._live:
            if self._multi is not None:
                before = r.consumed
                if self._msg is not None and not self._msg.size:
                    self._msg.ts_ns = r.ts_ns  # the message begins with its first byte
                sink = self._msg.add if self._msg is not None else self._add_line_bytes
                if not r.read_dotted(sink):
                    break
                self._end_multi(out)
                progress = progress or r.consumed != before
                continue
            if self._held is not None:
                line = self._held
                if not self._pending or self._mode is _AUTH_LINE:
                    break
                self._held = None
                progress = True
            else:
                if r._pos >= len(r._buf):
                    break  # nothing left to read (what readline would say, without the call)
                line = r.readline(self.max_line)
                if line is None:
                    break
                if r.overlong:
                    self.counters["long_lines"] += 1
            status = _status_of(line)
            if status is not None:
                ok, rest = status
                text = self._text(rest)
                if not self._greeted:
                    self._greeted = True
                    out.append(Pop3Reply(r.ts_ns, ok, text, (), None))
                    self.counters["replies"] += 1
                    continue
                if not self._pending or self._mode is _AUTH_LINE:
                    # Its command is not read yet, or it answers the secret line the
                    # client owes after a challenge.
                    self._held = line
                    break
                self._status(ok, text, out)
            elif line[:1] == b"+":
                # An AUTH challenge: the client's next line answers it.
                if not self._pending or self._mode is _AUTH_LINE:
                    self._held = line
                    break
                if self._pending[0] is self._wait and self._mode is _WAIT:
                    if self._wait.verb == "AUTH":
                        self._mode = _AUTH_LINE
                else:
                    self._bad_line("challenge", line)
            else:
                raise MailParseError(f"pop3: not a POP3 reply: {line[:40]!r}")
        return progress or r.consumed != start

    def _status(self, ok: bool, text: str, out: list) -> None:
        cmd = self._pending.popleft()
        if ok and _multi_line(cmd):
            self._multi = (cmd, text)
            self._s.dot_bol = True
            if cmd.verb in _MESSAGE_VERBS:
                self._msg = MessageBuilder(self.max_header + self.max_body, self._s.ts_ns)
            else:
                self._lines = bytearray()
            return
        self._reply(cmd, ok, text, (), out)

    def _reply(
        self, cmd: Pop3Command | None, ok: bool, text: str, lines: tuple[str, ...], out: list
    ) -> None:
        out.append(Pop3Reply(self._s.ts_ns, ok, text, lines, cmd))
        self.counters["replies"] += 1
        if cmd is None or cmd is not self._wait:
            return
        self._wait = None
        if cmd.verb == "STLS" and ok:
            self._upgrade()
        else:
            self._mode = _CMD

    def _add_line_bytes(self, chunk: bytes) -> None:
        room = MAX_REPLY_LINES * 80 - len(self._lines)
        if room <= 0:
            self.counters["dropped_reply_lines"] += chunk.count(b"\n")
            return
        self._lines += chunk[:room]

    def _end_multi(self, out: list, complete: bool = True) -> None:
        assert self._multi is not None
        cmd, text = self._multi
        self._multi = None
        lines: tuple[str, ...] = ()
        if self._msg is not None:
            b, self._msg = self._msg, None
            header, body, truncated = b.parts(self.max_header, self.max_body)
            out.append(
                MailMessage(
                    header,
                    body,
                    protocol="pop3",
                    command=cmd.verb,
                    ts_ns=b.ts_ns,
                    end_ns=self._s.ts_ns,
                    size=b.size,
                    truncated=truncated,
                    complete=complete,
                    max_text=self.max_body,
                    user=self.user,
                )
            )
            self.counters["messages"] += 1
        else:
            raw = bytes(self._lines).split(b"\n")
            if raw and not raw[-1]:
                raw.pop()
            if len(raw) > MAX_REPLY_LINES:
                self.counters["dropped_reply_lines"] += len(raw) - MAX_REPLY_LINES
                del raw[MAX_REPLY_LINES:]
            lines = tuple(self._text(x[:-1] if x.endswith(b"\r") else x)[:MAX_TEXT] for x in raw)
            self._lines = bytearray()
        self._reply(cmd, True, text, lines, out)

    # -- when the other side is missing

    def _force_client(self, out: list) -> bool:
        if self._mode is not _WAIT or self._wait is None:
            return False
        cmd = self._wait
        if cmd.verb == "STLS":
            self._wait = None
            self._upgrade()
        else:
            self._mode = _AUTH_GUESS
            self._wait = None
        return True

    def _force_server(self, out: list) -> bool:
        if self._held is None:
            return False
        if self._mode is _AUTH_LINE:  # the client's answer is not coming: go on as if it had
            self._mode = _WAIT
            return True
        line, self._held = self._held, None
        status = _status_of(line)
        if status is None:
            return True  # a challenge nobody waits for
        out.append(Pop3Reply(self._s.ts_ns, status[0], self._text(status[1]), (), None))
        self.counters["replies"] += 1
        self.counters["unpaired_replies"] += 1
        return True

    def _finish(self, out: list) -> None:
        if self._multi is not None:
            self._end_multi(out, complete=False)
