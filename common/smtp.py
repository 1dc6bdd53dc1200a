"""SMTP/ESMTP sessions, sans-IO: commands, replies paired with them, and the messages sent.

:class:`SmtpSession` reads the two reassembled byte streams of one SMTP connection
(RFC 5321) and returns :class:`SmtpCommand`, :class:`SmtpReply` and
:class:`~lc.common.mailmsg.MailMessage` events. Feeding, blocking, give-up and
``close`` follow :class:`~lc.common.mailmsg.MailSession`.

What is read
    * The greeting (the first reply, when its code is 220, 421 or 554; it pairs
      with no command), every reply (``ddd-`` continuation lines and the final
      ``ddd`` line, text kept per line) and every command line (verb
      upper-cased, the rest as ``arg``).
    * Replies pair with commands in order, so PIPELINING (RFC 2920: several
      commands in one segment, the replies later in one or more) pairs right.
      A reply that arrives before the command it answers waits for it; one that
      no command is waiting for (a 421 on timeout, say) comes out at ``close()``
      unpaired.
    * The envelope: HELO/EHLO name, MAIL FROM reverse path, every RCPT TO forward
      path (as sent, whatever the server answered; Zeek's smtp.log does the
      same), reset by RSET, HELO/EHLO and the end of each message.
    * DATA (after a 3xx reply): dot-unstuffed up to the lone ``.`` line, which
      may be split across segments; bare LF line ends are accepted. The end of
      data is answered like a command: the reply to it pairs with a command whose
      verb is ``"."``. BDAT (RFC 3030 CHUNKING): each chunk is exactly its
      announced size, no stuffing, the message ends with ``BDAT n LAST``.
      Several messages per session are read.
    * AUTH: the command's ``arg`` is the mechanism only (an initial response on
      the line is dropped), and each line the client sends after a 334
      challenge is a secret: counted (``secret_lines``), never kept. Replies to
      those lines pair with the AUTH command.
    * STARTTLS: once the server answers 220, ``upgraded`` is set and nothing
      more is parsed.

What is not
    The content of replies beyond their lines (EHLO keywords are not
    interpreted), SMTPUTF8 (bytes are kept, see mailmsg), and BURL. A command
    line that is not SMTP (a verb that is not letters, digits and ``-``) still
    takes its place in the command order (the server will answer it) and counts
    as a bad line; ``max_bad_lines`` of them, or one server line that is not a
    reply, make the session give up.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from lc.common.mailmsg import (
    MAX_ADDRESSES,
    MAX_TEXT,
    MailMessage,
    MailParseError,
    MailSession,
    MessageBuilder,
)

__all__ = ["SmtpCommand", "SmtpEvent", "SmtpReply", "SmtpSession", "smtp_path"]


@dataclass(slots=True)
class SmtpCommand:
    """One command line the client sent."""

    ts_ns: int
    verb: str
    """Upper-cased: ``EHLO``, ``MAIL``, ``RCPT``, ``DATA``, ``BDAT``, ``AUTH``...;
    ``"."`` for the end of message data."""
    arg: str
    """The rest of the line (for AUTH: the mechanism only)."""


@dataclass(slots=True)
class SmtpReply:
    """One complete reply from the server."""

    ts_ns: int
    code: int
    lines: tuple[str, ...]
    """The text of each line, after the code and its separator."""
    command: SmtpCommand | None
    """The command it answers; None for the greeting and unsolicited replies."""

    @property
    def text(self) -> str:
        """The last line's text (what Zeek's ``last_reply`` shows after the code)."""
        return self.lines[-1] if self.lines else ""


SmtpEvent = SmtpCommand | SmtpReply | MailMessage

_VERB = re.compile(rb"[A-Za-z][A-Za-z0-9-]{0,19}\Z")
_REPLY = re.compile(rb"([1-5][0-9][0-9])([ -]|\Z)")
_GREETING_CODES = (220, 421, 554)
MAX_REPLY_LINES = 256

# Client modes
_CMD = "cmd"  # reading command lines
_WAIT = "wait"  # a command whose reply decides what follows is unanswered
_DATA = "data"  # reading dot-stuffed message data
_BDAT = "bdat"  # reading a BDAT chunk
_AUTH_LINE = "auth-line"  # the next line answers a 334 challenge
_AUTH_GUESS = "auth-guess"  # no server in sight: base64-looking lines are secrets

_B64_LINE = re.compile(rb"[A-Za-z0-9+/=]*\Z")


def smtp_path(arg: str, keyword: str) -> str:
    """The address in a MAIL/RCPT argument (``FROM:<a@b> SIZE=1`` -> ``a@b``).

    Source routes (``<@x,@y:a@b>``) are dropped; a path without angle brackets
    runs to the first space. ``""`` when the keyword is missing.
    """
    head = arg[: len(keyword)]
    if head.upper() != keyword:
        return ""
    rest = arg[len(keyword) :].lstrip()
    if rest.startswith("<"):
        end = rest.find(">")
        path = rest[1:] if end < 0 else rest[1:end]
        if path.startswith("@"):
            path = path.partition(":")[2]
        return path.strip()
    return rest.split(" ", 1)[0].strip()


class SmtpSession(MailSession):
    """One SMTP connection (see the module docstring)."""

    protocol = "smtp"
    _COUNTERS = (*MailSession._COUNTERS, "discarded_messages", "rcpt_dropped")

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self.helo = ""
        """The last HELO/EHLO name."""
        self.auth_mechanism = ""
        """The last AUTH mechanism the client asked for."""
        self._mode = _CMD
        self._wait: SmtpCommand | None = None
        self._pending: deque[SmtpCommand] = deque()
        self._greeted = False
        self._held: SmtpReply | None = None
        self._reply_code = 0
        self._reply_lines: list[str] = []
        self._mail_from = ""
        self._rcpt: list[str] = []
        self._msg: MessageBuilder | None = None
        self._msg_verb = ""
        self._bdat_left = 0
        self._bdat_last = False

    # -- client side

    def _client_step(self, out: list) -> bool:
        r = self._c
        mode = self._mode
        if r._pos >= len(r._buf) and mode is not _BDAT and mode is not _DATA:
            # No byte to read in a mode that moves only by reading (a BDAT chunk's end
            # moves without; DATA sets its message's start time even then).
            return False
        start = r.consumed
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
                self._command(line, out)
            elif mode is _DATA:
                msg = self._msg
                assert msg is not None
                if not msg.size:
                    msg.ts_ns = r.ts_ns  # the message begins with its first byte
                done = r.read_dotted(msg.add)
                if done:
                    self._end_message(out)
                    self._push(SmtpCommand(r.ts_ns, ".", ""))
                    self._mode = _CMD
                else:
                    break  # read_dotted took all it could: it would not move again
            elif mode is _BDAT:
                if self._bdat_left:
                    chunk = r.take(self._bdat_left)
                    if not chunk:
                        break
                    self._bdat_left -= len(chunk)
                    if self._msg is not None:
                        if not self._msg.size:
                            self._msg.ts_ns = r.ts_ns
                        self._msg.add(chunk)
                    if self._bdat_left:
                        break
                self._mode = _CMD
                if self._bdat_last:
                    self._end_message(out)
            elif mode is _AUTH_LINE:
                if r._pos >= len(r._buf):
                    break  # nothing left to read (what readline would say, without the call)
                line = r.readline(self.max_line)
                if line is None:
                    break
                self.counters["secret_lines"] += 1
                # Its reply answers the AUTH exchange: pair it with the AUTH command.
                assert self._wait is not None
                self._push(self._wait)
                self._mode = _WAIT
            elif mode is _AUTH_GUESS:
                if r._pos >= len(r._buf):
                    break  # nothing left to read (what readline would say, without the call)
                line = r.readline(self.max_line)
                if line is None:
                    break
                if line and b" " not in line and _B64_LINE.match(line) and len(line) > 4:
                    self.counters["secret_lines"] += 1
                    continue
                self._mode = _CMD
                self._command(line, out)
            else:  # _WAIT
                break
        return r.consumed != start

    def _push(self, cmd: SmtpCommand) -> None:
        pending = self._pending
        if len(pending) >= self.max_pending:
            pending.popleft()
            self.counters["pending_dropped"] += 1
        pending.append(cmd)

    def _command(self, line: bytes, out: list) -> None:
        ts = self._c.ts_ns
        raw_verb, _, raw_arg = line.partition(b" ")
        verb = raw_verb.decode("ascii", "replace").upper()
        arg = self._text(raw_arg.strip())
        if not _VERB.match(raw_verb):
            self._bad_line("command", line)
            cmd = SmtpCommand(ts, verb[:20], arg)
            self._push(cmd)
            out.append(cmd)
            self.counters["commands"] += 1
            return
        cmd = SmtpCommand(ts, verb, arg)
        if verb in ("EHLO", "HELO"):
            self.helo = arg
            self._reset_transaction()
        elif verb == "MAIL":
            self._reset_transaction()
            self._mail_from = smtp_path(arg, "FROM:")
        elif verb == "RCPT":
            if len(self._rcpt) < MAX_ADDRESSES:
                self._rcpt.append(smtp_path(arg, "TO:"))
            else:
                self.counters["rcpt_dropped"] += 1
        elif verb == "RSET":
            self._reset_transaction()
        elif verb in ("DATA", "STARTTLS"):
            self._wait = cmd
            self._mode = _WAIT
        elif verb == "AUTH":
            mech = arg.split(" ", 1)[0].upper()
            cmd.arg = mech
            self.auth_mechanism = mech
            self._wait = cmd
            self._mode = _WAIT
        elif verb == "BDAT":
            size, _, last = arg.partition(" ")
            if size.isdigit() and len(size) <= 18:
                self._bdat_left = int(size)
                self._bdat_last = last.strip().upper() == "LAST"
                self._mode = _BDAT
                if self._msg is None:
                    self._msg = MessageBuilder(self.max_header + self.max_body, ts)
                    self._msg_verb = "BDAT"
            else:
                self._bad_line("BDAT size", line)
        self._push(cmd)
        out.append(cmd)
        self.counters["commands"] += 1

    def _reset_transaction(self) -> None:
        if self._msg is not None:
            self.counters["discarded_messages"] += 1
            self._msg = None
        self._mail_from = ""
        self._rcpt = []

    def _end_message(self, out: list, complete: bool = True) -> None:
        b = self._msg
        if b is None:
            return
        header, body, truncated = b.parts(self.max_header, self.max_body)
        msg = MailMessage(
            header,
            body,
            protocol="smtp",
            command=self._msg_verb,
            ts_ns=b.ts_ns,
            end_ns=self._c.ts_ns,
            size=b.size,
            truncated=truncated,
            complete=complete,
            max_text=self.max_body,
            helo=self.helo,
            mail_from=self._mail_from,
            rcpt_to=tuple(self._rcpt),
        )
        self._msg = None
        self._mail_from = ""
        self._rcpt = []
        self.counters["messages"] += 1
        out.append(msg)

    # -- server side

    def _server_step(self, out: list) -> bool:
        r = self._s
        if self._held is None and r._pos >= len(r._buf):
            return False  # no byte to read and no reply waiting: nothing can move
        start = r.consumed
        progress = False
        if self._held is not None:
            if not self._pending:
                return False
            reply, self._held = self._held, None
            self._pair(reply, out)
            progress = True
        while self._live and self._held is None:
            if r._pos >= len(r._buf):
                break  # nothing left to read (what readline would say, without the call)
            line = r.readline(self.max_line)
            if line is None:
                break
            if r.overlong:
                self.counters["long_lines"] += 1
            m = _REPLY.match(line)
            if m is None:
                raise MailParseError(f"smtp: not an SMTP reply: {line[:40]!r}")
            raw_code, sep = m.groups()
            code = int(raw_code)
            text = line[4:].decode("utf-8", "surrogateescape")  # _text, inline
            if len(text) > MAX_TEXT:
                text = text[:MAX_TEXT]
            lines = self._reply_lines
            if sep == b"-":
                if len(lines) < MAX_REPLY_LINES:
                    lines.append(text)
                self._reply_code = self._reply_code or code
                continue
            if lines:
                if len(lines) < MAX_REPLY_LINES:
                    lines.append(text)
                reply = SmtpReply(r.ts_ns, code, tuple(lines), None)
                self._reply_lines = []
            else:  # a one-line reply (most)
                reply = SmtpReply(r.ts_ns, code, (text,), None)
            self._reply_code = 0
            self.counters["replies"] += 1
            if not self._greeted:
                self._greeted = True
                if code in _GREETING_CODES:
                    out.append(reply)
                    continue
            if not self._pending:
                self._held = reply  # the client's command has not been read yet
                break
            self._pair(reply, out)
        return progress or r.consumed != start

    def _pair(self, reply: SmtpReply, out: list) -> None:
        cmd = self._pending.popleft() if self._pending else None
        reply.command = cmd
        out.append(reply)
        if cmd is None or cmd is not self._wait:
            return
        self._wait = None
        code = reply.code
        verb = cmd.verb
        if verb == "DATA":
            if 300 <= code < 400:
                self._start_data(cmd.ts_ns)
            else:
                self._mode = _CMD
        elif verb == "STARTTLS":
            if code == 220:
                self._upgrade()
            else:
                self._mode = _CMD
        elif verb == "AUTH":
            if code == 334:
                self._wait = cmd
                self._mode = _AUTH_LINE
            else:
                self._mode = _CMD

    def _start_data(self, ts_ns: int) -> None:
        self._mode = _DATA
        self._c.dot_bol = True
        self._msg = MessageBuilder(self.max_header + self.max_body, self._c.ts_ns)
        self._msg_verb = "DATA"

    # -- when the other side is missing

    def _force_client(self, out: list) -> bool:
        if self._mode is not _WAIT or self._wait is None:
            return False
        cmd, self._wait = self._wait, None
        if cmd.verb == "DATA":
            self._start_data(cmd.ts_ns)
        elif cmd.verb == "STARTTLS":
            self._upgrade()
        else:  # AUTH
            self._mode = _AUTH_GUESS
        return True

    def _force_server(self, out: list) -> bool:
        if self._held is None:
            return False
        reply, self._held = self._held, None
        out.append(reply)
        self.counters["unpaired_replies"] += 1
        return True

    def _finish(self, out: list) -> None:
        if self._msg is not None and self._mode in (_DATA, _BDAT):
            self._end_message(out, complete=False)
