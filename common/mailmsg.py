"""Mail messages as a mail reader shows them, and the stream plumbing SMTP, IMAP and POP3 share.

Messages (RFC 5322, MIME: RFC 2045-2047, 2231)
    :class:`MailMessage` is one message seen on the wire: sent with SMTP ``DATA`` or
    ``BDAT``, fetched with IMAP ``FETCH``, uploaded with IMAP ``APPEND`` or
    retrieved with POP3 ``RETR``/``TOP``. Its header block is split by hand
    (folded lines unfolded, names lower-cased; the first occurrence of a field
    wins) when the message is built; the fields a summary needs are decoded on
    first use and kept (most messages are only matched on a field or two):

    * ``subject`` and display names: RFC 2047 encoded words in any charset, with
      :func:`email.header.decode_header`, joined with the spacing rules of
      :class:`email.header.Header` (whitespace between two encoded words is
      dropped). A charset Python does not know, or bytes that do not fit it, give
      U+FFFD, never an exception. Labels are read the way mail readers read them
      (``gb2312`` as GB18030, ``iso-8859-1`` as windows-1252, ``ks_c_5601-1987``
      as cp949).
    * ``from_``, ``to``, ``cc``, ``reply_to``: address lists parsed with
      :func:`email.utils.getaddresses` (groups, comments, quoted names), display
      names decoded after the split, so an encoded comma cannot split an address.
      Lists of plain ``addr``, ``<addr>``, ``Name <addr>`` and ``"Name" <addr>``
      items are read by a regular expression instead, with the same result (the
      tests check it), since getaddresses walks the value in Python.
    * ``message_id`` without its angle brackets (as ECS and Arkime show it),
      ``date`` as written and ``origination_ns`` (int nanoseconds since the
      epoch, UTC; ``None`` when the date does not parse), ``content_type`` (the
      media type, lower-cased, ``""`` when the header is absent) and
      ``user_agent`` (User-Agent, else X-Mailer).

    From the body bytes kept, also on first use:
    ``attachments`` (file names from the ``filename`` parameter of
    Content-Disposition or the ``name`` parameter of Content-Type, RFC 2231 and
    RFC 2047 forms included) and ``body_text`` (the decoded text of the
    ``text/*`` parts that are not attachments, transfer encoding (base64,
    quoted-printable) and charset undone, line breaks as LF, joined by LF, at
    most ``max_body`` characters: what a keyword filter is matched against). MIME
    nesting is walked to :data:`MAX_MIME_DEPTH` levels and :data:`MAX_MIME_PARTS` parts;
    plain parameter lists are read directly and the rest (RFC 2231 names,
    backslashes, unbalanced quotes) by :class:`email.message.Message`;
    ``message/rfc822`` parts are walked as part of the text. HTML is not
    rendered: its text is matched as it is.

    Strings keep raw bytes that are not valid UTF-8 as lone surrogates
    (``surrogateescape``), like the SIP parser; pass them through
    :func:`lc.common.text.wire_text` (``MailMessage.ecs`` does) before they leave
    the process.

Bounds
    A message keeps at most ``max_header`` bytes of header block and
    ``max_body`` bytes of body (:class:`MessageBuilder`); ``size`` counts every
    byte seen and ``truncated`` says that some were not kept.

Stream plumbing
    :class:`StreamReader` is one direction's receive buffer (lines with a length
    cap, counted byte runs for literals and chunks, dot-stuffed multi-line data);
    :class:`MailSession` is the sans-IO driver the three protocol parsers
    subclass: the caller feeds each direction's reassembled bytes with the
    capture timestamp and gets back the commands, replies and messages they
    completed. Its rules (blocking on a reply that decides how to read the other
    direction, give-up, ``close``) are described on the class.

Errors
    :class:`MailParseError` (a :class:`~lc.common.errors.ParseError`) is the only
    exception that comes out of this module and the protocol parsers for any
    input bytes; the sessions catch it themselves and give up cleanly.
"""

from __future__ import annotations

import binascii
import calendar
import email.utils
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.header import decode_header
from email.message import Message

from lc.common.errors import ParseError, ValidationError
from lc.common.text import wire_text

__all__ = [
    "DEFAULT_MAX_BAD_LINES",
    "DEFAULT_MAX_BLOCKED",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_HEADER",
    "DEFAULT_MAX_LINE",
    "DEFAULT_MAX_PENDING",
    "MAX_MIME_DEPTH",
    "MAX_MIME_PARTS",
    "Address",
    "MailMessage",
    "MailParseError",
    "MailSession",
    "MessageBuilder",
    "StreamReader",
    "decode_bytes",
    "decode_words",
    "parse_addresses",
    "split_headers",
    "split_message",
]

#: Body bytes kept per message for keyword matching (``--max-body-size``).
DEFAULT_MAX_BODY = 65536
#: Header-block bytes kept per message.
DEFAULT_MAX_HEADER = 65536
#: Longest command or reply line read whole; longer lines keep their first
#: ``max_line`` and last :data:`LINE_TAIL` bytes (counted as ``long_lines``).
DEFAULT_MAX_LINE = 4096
#: Commands waiting for their reply; beyond it the oldest is forgotten.
DEFAULT_MAX_PENDING = 128
#: Bytes one direction may buffer while it waits for the other (see MailSession).
DEFAULT_MAX_BLOCKED = 65536
#: Lines that are not the protocol a session may see before it gives up.
DEFAULT_MAX_BAD_LINES = 16
#: The end of an over-long line that is kept (an IMAP literal marker lives there).
LINE_TAIL = 64
MAX_MIME_DEPTH = 8
MAX_MIME_PARTS = 64
#: Recipients kept per SMTP transaction, addresses kept per header field.
MAX_ADDRESSES = 1024
#: Characters kept of a command's arguments or a reply's text.
MAX_TEXT = 1024


class MailParseError(ParseError):
    """Bytes that are not SMTP, IMAP or POP3 (or a message that cannot be read)."""


# --- header decoding ----------------------------------------------------------------

# Labels that mail readers decode with a superset (WHATWG Encoding Standard labels).
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "utf-8",
    "ascii": "utf-8",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "unknown-8bit": "utf-8",
    "x-unknown": "utf-8",
}


def decode_bytes(data: bytes, charset: str | None) -> str:
    """``data`` decoded from ``charset`` the way a mail reader would; never raises.

    Unknown or unusable charsets (and bytes that do not fit) fall back to UTF-8,
    with U+FFFD for what does not decode.
    """
    cs = (charset or "").split("*", 1)[0].strip().lower()
    cs = _CHARSET_ALIASES.get(cs, cs) or "utf-8"
    try:
        return data.decode(cs, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        return data.decode("utf-8", "replace")


def _nonctext(s: str) -> bool:
    return s.isspace() or s in ("(", ")", "\\")


def decode_words(value: str) -> str:
    """RFC 2047 encoded words in ``value`` decoded, as :class:`email.header.Header` shows them.

    Text without ``=?`` comes back unchanged. A malformed encoded word is left as
    it is written.
    """
    if "=?" not in value:
        return value
    try:
        chunks = decode_header(value)
    except (HeaderParseError, ValueError, LookupError, UnicodeError):
        return value
    out: list[str] = []
    last_cs: str | None = None
    last_space = False
    for raw, charset in chunks:
        if isinstance(raw, str):
            text = raw
        elif charset is None:
            # decode_header hands back unencoded text as raw-unicode-escape bytes.
            text = raw.decode("raw-unicode-escape", "replace")
        else:
            text = decode_bytes(raw, charset)
        cs = None if charset in (None, "us-ascii") else charset
        if out:
            has_space = bool(text) and _nonctext(text[0])
            if last_cs is not None:
                if cs is None and not has_space:
                    out.append(" ")
            elif cs is not None and not last_space:
                out.append(" ")
        last_space = bool(text) and _nonctext(text[-1])
        last_cs = cs
        out.append(text)
    return "".join(out)


def split_headers(block: bytes | bytearray) -> tuple[list[tuple[str, str]], int]:
    """A header block as ``[(lower-case name, unfolded value)]`` and a count of defects.

    Lines are split on LF (a CR before it is dropped); a line that starts with a
    space or tab continues the previous field (unfolding removes the line break
    only). A line without a colon, or with an empty name, is a defect and is
    skipped. Bytes that are not UTF-8 are kept as lone surrogates.
    """
    text = bytes(block).decode("utf-8", "surrogateescape")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    fields: list[tuple[str, str]] = []
    append = fields.append
    defects = 0
    for line in text.split("\n"):
        if not line:
            continue
        if line[0] in " \t":
            if fields:
                name, value = fields[-1]
                fields[-1] = (name, value + line)
            else:
                defects += 1
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not name or " " in name:
            defects += 1
            continue
        append((name.lower(), value.lstrip(" \t")))
    return fields, defects


def split_message(data: bytes | bytearray) -> tuple[bytes, bytes]:
    """A message's header block and body, split at the first empty line."""
    data = bytes(data)
    if data.startswith(b"\r\n"):
        return b"", data[2:]
    if data.startswith(b"\n"):
        return b"", data[1:]
    crlf = data.find(b"\n\r\n")
    # Only a bare-LF empty line before the CRLF one matters: no need to search the body.
    lf = data.find(b"\n\n", 0, crlf + 1) if crlf >= 0 else data.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return data, b""
    if lf < 0 or 0 <= crlf < lf:
        return data[: crlf + 1], data[crlf + 3 :]
    return data[: lf + 1], data[lf + 2 :]


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox of an address header."""

    name: str
    """Display name, RFC 2047 decoded; ``""`` when there is none."""
    addr: str
    """The address (addr-spec) as written."""


# The common shapes of an address list, read without getaddresses (which walks
# the value one character at a time in Python): items separated by commas, each
# ``addr``, ``<addr>``, ``Name <addr>`` or ``"Name" <addr>``, with no comments,
# groups, escapes, routes or domain literals. Anything else takes getaddresses;
# the tests check that both agree on what the fast path accepts.
_ADDR = r'[^ \t<>()\[\]\\,;:@"]+@[^ \t<>()\[\]\\,;:@"]+'
_FAST_ITEM = re.compile(
    r'[ \t]*(?:(?:"([^"\\\r\n]*)"|([^"<>()\[\]\\,;:@\r\n]*))[ \t]*<('
    + _ADDR
    + r")>|("
    + _ADDR
    + r"))[ \t]*(?:,|\Z)"
)
_HARD = re.compile(r"[()\\:;\[\]\r\n]")
_LWS = re.compile(r"[ \t]+")


def _fast_addresses(value: str) -> list[tuple[str, str]] | None:
    if _HARD.search(value):
        return None
    out = []
    pos = 0
    end = len(value)
    match = _FAST_ITEM.match
    while pos < end:
        m = match(value, pos)
        if m is None or m.end() == pos:
            return None
        quoted, plain, angle, bare = m.groups()
        if bare is not None:
            out.append(("", bare))
        elif quoted is not None:
            out.append((quoted, angle))
        else:
            # getaddresses splits a phrase on spaces and tabs only, and joins with one space
            out.append((" ".join(w for w in _LWS.split(plain) if w), angle))
        pos = m.end()
        if value[pos - 1] == "," and not value[pos:].strip(" \t"):
            return None  # a trailing comma: let getaddresses decide
    return out


def parse_addresses(value: str) -> tuple[Address, ...]:
    """The mailboxes of one address-list header value (groups flattened).

    Parsed with :func:`email.utils.getaddresses`, except for the plain shapes
    (see ``_FAST_ITEM``), which are read by a regular expression with the same
    result. Items without an address are dropped; at most :data:`MAX_ADDRESSES`
    are kept.
    """
    value = value.strip()
    if not value:
        return ()
    pairs = _fast_addresses(value)
    if pairs is None:
        try:
            pairs = email.utils.getaddresses([value])
        except (ValueError, IndexError, TypeError):
            return ()
    out = []
    for name, addr in pairs[:MAX_ADDRESSES]:
        if not addr:
            continue
        out.append(Address(decode_words(name) if name else "", addr))
    return tuple(out)


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
# The usual RFC 5322 form, read without parsedate_tz: "Tue, 8 Dec 2015 22:30:00 +0100".
_DATE = re.compile(
    r"(?:[A-Za-z]{3},[ \t]*)?(\d{1,2})[ \t]+([A-Za-z]{3})[ \t]+([1-9]\d{3})[ \t]+"
    r"(\d{1,2}):(\d{2})(?::(\d{2}))?[ \t]+([+-])(\d{2})(\d{2})\Z"
)


def _date_ns_stdlib(value: str) -> int | None:
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        # No zone (RFC 5322 "-0000": local time unknown) is taken as UTC.
        secs = calendar.timegm(parsed[:9]) - (parsed[9] or 0)  # type: ignore[arg-type]
    except (ValueError, OverflowError, TypeError, IndexError):
        return None
    return _ns_or_none(int(secs))


def _ns_or_none(secs: int) -> int | None:
    """``secs`` in int nanoseconds, or None outside what a signed 64-bit count of them
    holds (years 1678-2261): a Date such as year 200 or 9999 carried into an event's
    int64 field would end the hunter."""
    ns = secs * 1_000_000_000
    return ns if -(1 << 63) <= ns < 1 << 63 else None


def _date_ns(value: str) -> int | None:
    """A Date value as int nanoseconds since the epoch; what :func:`_date_ns_stdlib`
    (email.utils.parsedate_tz) gives, reading the usual form directly."""
    if not value:
        return None
    m = _DATE.match(value)
    month = _MONTHS.get(m.group(2).lower()) if m is not None else None
    if m is None or month is None:
        return _date_ns_stdlib(value)
    day, _mon, year, hour, minute, second, sign, zh, zm = m.groups()
    offset = int(zh) * 3600 + int(zm) * 60
    try:
        secs = calendar.timegm(
            (int(year), month, int(day), int(hour), int(minute), int(second or 0), 0, 1, 0)
        )
    except (ValueError, OverflowError):
        return None
    return _ns_or_none(secs - (offset if sign == "+" else -offset))


PartInfo = tuple[str, str | None, str | None, str | None, str | None]


def _part_info_stdlib(fields: dict[str, str]) -> PartInfo:
    """Content type, file name, disposition, boundary and charset of a part, read by
    the standard library (RFC 2231 continuations and charsets, quoting)."""
    m = Message()
    for name in ("content-type", "content-disposition"):
        value = fields.get(name)
        if value is not None:
            m[name] = value
    ctype = m.get_content_type() if "content-type" in fields else "text/plain"
    filename = m.get_filename()
    boundary = m.get_boundary() if ctype.startswith("multipart/") else None
    return ctype, filename, m.get_content_disposition(), boundary, m.get_content_charset()


def _unquote(value: str) -> str:
    if len(value) > 1 and (value[0] == value[-1] == '"' or (value[0] == "<" and value[-1] == ">")):
        return value[1:-1]
    return value


def _param_map(value: str) -> tuple[str, dict[str, str]]:
    """The type before the first ";" and the parameters, read the way the stdlib's
    Message.get_param reads a list without backslashes or RFC 2231 names."""
    head = value.partition(";")[0].strip().lower()
    items = []
    rest = value
    while True:
        end = rest.find(";")
        while end > 0 and rest.count('"', 0, end) % 2:  # a ";" inside quotes
            end = rest.find(";", end + 1)
        if end < 0:
            items.append(rest)
            break
        items.append(rest[:end])
        rest = rest[end + 1 :]
    params: dict[str, str] = {}
    for item in items:
        name, eq, val = item.partition("=")
        name = name.strip().lower()
        if name not in params:
            params[name] = _unquote(val.strip()) if eq else ""
    return head, params


def _part_info(fields: dict[str, str]) -> PartInfo:
    """:func:`_part_info_stdlib`'s answer; plain parameter lists (no RFC 2231 ``*``,
    no backslash) are read here directly, which is several times faster."""
    ctype_raw = fields.get("content-type")
    disp_raw = fields.get("content-disposition")
    for value in (ctype_raw, disp_raw):
        if value is not None and ("*" in value or "\\" in value or value.count('"') % 2):
            return _part_info_stdlib(fields)
    if ctype_raw is None:
        ctype, cparams = "text/plain", {}
    else:
        ctype, cparams = _param_map(ctype_raw)
        if ctype.count("/") != 1:
            ctype = "text/plain"
    disposition = None
    dparams: dict[str, str] = {}
    if disp_raw is not None:
        disposition, dparams = _param_map(disp_raw)
    filename = dparams.get("filename")
    if filename is None:
        filename = cparams.get("name")
    boundary = cparams.get("boundary") if ctype.startswith("multipart/") else None
    charset = cparams.get("charset")
    return (
        ctype,
        filename.strip() if filename is not None else None,
        disposition,
        boundary.rstrip() if boundary is not None else None,
        charset.lower() if charset else None,
    )


# --- messages -----------------------------------------------------------------------


class MailMessage:
    """One message seen in a session (see the module docstring for the fields)."""

    __slots__ = (
        "_attachments",
        "_body_text",
        "_cache",
        "body",
        "command",
        "complete",
        "content_type",
        "date",
        "defects",
        "end_ns",
        "fields",
        "header",
        "helo",
        "in_reply_to",
        "mail_from",
        "mailbox",
        "max_text",
        "message_id",
        "protocol",
        "rcpt_to",
        "size",
        "truncated",
        "ts_ns",
        "user",
    )

    protocol: str
    """``"smtp"``, ``"imap"`` or ``"pop3"``."""
    command: str
    """What carried it: ``DATA``, ``BDAT``, ``FETCH``, ``APPEND``, ``RETR``, ``TOP``."""
    ts_ns: int
    """Capture time of the data that began it."""
    end_ns: int
    """Capture time of the data that ended it."""
    size: int
    """Bytes of message seen (after dot-unstuffing), kept or not."""
    truncated: bool
    """More bytes were seen than kept (header or body)."""
    complete: bool
    """The message's end was seen (False when the session ended inside it)."""
    header: bytes
    """The header block as kept (at most ``max_header`` bytes)."""
    body: bytes
    """The body bytes kept (at most ``max_body``)."""
    fields: dict[str, str]
    """Unfolded raw header values by lower-case name (first occurrence)."""
    helo: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    """SMTP envelope: EHLO/HELO name, reverse path and forward paths (every RCPT TO
    the client sent in the transaction, whatever the server answered)."""
    mailbox: str
    """IMAP: the selected mailbox (FETCH) or the target (APPEND)."""
    user: str
    """The session's user name when it was seen in clear (IMAP LOGIN, POP3 USER/APOP)."""

    def __init__(
        self,
        header: bytes,
        body: bytes,
        *,
        protocol: str,
        command: str,
        ts_ns: int = 0,
        end_ns: int = 0,
        size: int | None = None,
        truncated: bool = False,
        complete: bool = True,
        max_text: int = DEFAULT_MAX_BODY,
        helo: str = "",
        mail_from: str = "",
        rcpt_to: tuple[str, ...] = (),
        mailbox: str = "",
        user: str = "",
    ) -> None:
        self.protocol = protocol
        self.command = command
        self.ts_ns = ts_ns
        self.end_ns = end_ns
        self.header = header
        self.body = body
        self.size = len(header) + len(body) if size is None else size
        self.truncated = truncated
        self.complete = complete
        self.max_text = max_text
        self.helo = helo
        self.mail_from = mail_from
        self.rcpt_to = rcpt_to
        self.mailbox = mailbox
        self.user = user
        self._attachments: tuple[str, ...] | None = None
        self._body_text: str | None = None
        pairs, self.defects = split_headers(header)
        fields: dict[str, str] = {}
        for name, value in pairs:
            if name not in fields:
                fields[name] = value
        self.fields = fields
        get = fields.get
        self.message_id = get("message-id", "").strip().strip("<>").strip()
        self.in_reply_to = get("in-reply-to", "").strip()
        self.date = get("date", "").strip()
        ctype = get("content-type", "")
        self.content_type = ctype.split(";", 1)[0].strip().lower()
        self._cache: dict[str, object] = {}

    def __repr__(self) -> str:
        return (
            f"MailMessage({self.protocol} {self.command}, size={self.size}, "
            f"from={[a.addr for a in self.from_]!r}, subject={self.subject!r})"
        )

    # Decoded on first use (most messages are only matched on a field or two), then kept
    # in _cache (no value is ever None but the Date's: it is kept under its own key).

    @property
    def subject(self) -> str:
        """The Subject as a mail reader shows it (RFC 2047 decoded, outer blanks stripped)."""
        cache = self._cache
        value = cache.get("subject")
        if value is None:
            value = cache["subject"] = decode_words(self.fields.get("subject", "").strip())
        return value  # type: ignore[return-value]

    @property
    def from_(self) -> tuple[Address, ...]:
        """From mailboxes."""
        return self._addresses("from")

    @property
    def to(self) -> tuple[Address, ...]:
        """To mailboxes (groups flattened)."""
        return self._addresses("to")

    @property
    def cc(self) -> tuple[Address, ...]:
        """Cc mailboxes."""
        return self._addresses("cc")

    @property
    def reply_to(self) -> tuple[Address, ...]:
        """Reply-To mailboxes."""
        return self._addresses("reply-to")

    def _addresses(self, name: str) -> tuple[Address, ...]:
        cache = self._cache
        value = cache.get(name)
        if value is None:
            raw = self.fields.get(name)
            value = cache[name] = parse_addresses(raw) if raw else ()
        return value  # type: ignore[return-value]

    @property
    def origination_ns(self) -> int | None:
        """The Date as int nanoseconds since the epoch (UTC); None when it does not parse."""
        cache = self._cache
        if "date" not in cache:
            cache["date"] = _date_ns(self.date)
        return cache["date"]  # type: ignore[return-value]

    @property
    def user_agent(self) -> str:
        """User-Agent, else X-Mailer, decoded."""
        cache = self._cache
        value = cache.get("user-agent")
        if value is None:
            get = self.fields.get
            value = cache["user-agent"] = decode_words(
                get("user-agent", get("x-mailer", "")).strip()
            )
        return value  # type: ignore[return-value]

    def addresses(self) -> set[str]:
        """Every address this message names, lower-cased: envelope, From, To and Cc."""
        out = {a.addr.lower() for group in (self.from_, self.to, self.cc) for a in group}
        if self.mail_from:
            out.add(self.mail_from.lower())
        out.update(r.lower() for r in self.rcpt_to if r)
        return out

    @property
    def attachments(self) -> tuple[str, ...]:
        """File names of the MIME parts within the kept body (decoded)."""
        if self._attachments is None and not self._single_part_names():
            self._walk()
        return self._attachments  # type: ignore[return-value]

    def drop_body(self) -> None:
        """Frees the kept body, for a holder that will not ask for ``body_text`` (it is
        "" afterwards); ``attachments`` is read first when it needs the body (a
        multipart or message/rfc822 one: a single part's file name is in its header,
        read when asked)."""
        ct = self.content_type
        if self._attachments is None and (ct.startswith("multipart/") or ct == "message/rfc822"):
            _ = self.attachments
        self.body = b""
        self._body_text = ""

    def _single_part_names(self) -> bool:
        """``attachments`` of a message that is a single part (neither multipart nor
        message/rfc822), read without decoding its text as the walk does; False if
        it needs the walk."""
        try:
            ctype, filename, _, _, _ = _part_info(self.fields)
        except (ValueError, LookupError, TypeError, IndexError, UnicodeError):
            return False  # the walk counts the defect
        if ctype.startswith("multipart/") or ctype == "message/rfc822":
            return False
        name = decode_words(str(filename).strip()) if filename else ""
        self._attachments = (name,) if name else ()
        return True

    @property
    def body_text(self) -> str:
        """The decoded text of the body's text parts, at most ``max_text`` characters."""
        if self._body_text is None:
            self._walk()
        return self._body_text  # type: ignore[return-value]

    def _walk(self) -> None:
        names: list[str] = []
        texts: list[str] = []
        room = self.max_text
        parts = 0
        # (fields, body, depth), depth-first in document order.
        stack: list[tuple[dict[str, str], bytes, int]] = [(self.fields, self.body, 0)]
        while stack and parts < MAX_MIME_PARTS:
            fields, body, depth = stack.pop()
            parts += 1
            try:
                ctype, filename, disposition, boundary, charset = _part_info(fields)
            except (ValueError, LookupError, TypeError, IndexError, UnicodeError):
                self.defects += 1
                continue
            maintype = ctype.split("/", 1)[0]
            if filename:
                name = decode_words(str(filename).strip())
                if name and len(names) < MAX_ADDRESSES:
                    names.append(name)
            if maintype == "multipart":
                if boundary and depth < MAX_MIME_DEPTH:
                    children = [
                        (_fields_of(h), b, depth + 1)
                        for h, b in _split_multipart(body, boundary.encode("utf-8", "replace"))
                    ]
                    stack.extend(reversed(children))
                continue
            if ctype == "message/rfc822" and depth < MAX_MIME_DEPTH:
                h, b = split_message(_undo_transfer(body, fields))
                stack.append((_fields_of(h), b, depth + 1))
                continue
            if maintype != "text" or disposition == "attachment" or room <= 0:
                continue
            text = decode_bytes(_undo_transfer(body, fields), charset)
            if "\r" in text:
                text = text.replace("\r\n", "\n")
            if len(text) > room:
                text = text[:room]
            texts.append(text)
            room -= len(text) + 1
        self._attachments = tuple(names)
        self._body_text = "\n".join(texts)

    def ecs(self) -> dict[str, object]:
        """The message's fields under their ECS names (and lc's own), made wire-safe.

        Empty fields are left out. ``email.direction`` is the mode's to add.
        """
        out: dict[str, object] = {}

        def put(key: str, value: object) -> None:
            if isinstance(value, str):
                if value:
                    out[key] = wire_text(value)
            elif value:
                out[key] = [wire_text(v) for v in value]  # type: ignore[attr-defined]

        put("email.from.address", [a.addr for a in self.from_])
        put("email.to.address", [a.addr for a in self.to])
        put("email.cc.address", [a.addr for a in self.cc])
        put("email.reply_to.address", [a.addr for a in self.reply_to])
        put("email.subject", self.subject)
        put("email.message_id", self.message_id)
        if self.origination_ns is not None:
            secs = self.origination_ns // 1_000_000_000
            try:
                stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                out["email.origination_timestamp"] = stamp
            except (OverflowError, OSError, ValueError):
                pass
        put("email.content_type", self.content_type)
        put("email.attachments.file.name", list(self.attachments))
        put("email.x_mailer", self.user_agent)
        put("lc.smtp.helo", self.helo)
        put("lc.smtp.mail_from", self.mail_from)
        put("lc.smtp.rcpt_to", list(self.rcpt_to))
        put("lc.imap.mailbox", self.mailbox)
        put("lc.email.user", self.user)
        put("lc.email.command", self.command)
        return out


def _fields_of(header: bytes) -> dict[str, str]:
    pairs, _ = split_headers(header)
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name not in fields:
            fields[name] = value
    return fields


def _undo_transfer(body: bytes, fields: dict[str, str]) -> bytes:
    """``body`` with its Content-Transfer-Encoding (base64, quoted-printable) undone."""
    cte = fields.get("content-transfer-encoding", "").strip().lower()
    if cte == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            # Truncated (a body cut at max_body) or damaged: decode the whole quads.
            clean = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
            clean = clean[: len(clean) - len(clean) % 4]
            try:
                return binascii.a2b_base64(clean)
            except binascii.Error:
                return b""
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def _split_multipart(body: bytes, boundary: bytes) -> list[tuple[bytes, bytes]]:
    """The parts of a multipart body as ``(header block, content)``; a cut body keeps
    its last, unfinished part."""
    delim = b"--" + boundary
    starts: list[tuple[int, int]] = []  # (delimiter line start, content start)
    i = 0
    n = len(body)
    closed = False
    while len(starts) <= MAX_MIME_PARTS:
        j = body.find(delim, i)
        if j < 0:
            break
        if j and body[j - 1] != 10:  # not at a line start
            i = j + 1
            continue
        k = j + len(delim)
        nl = body.find(b"\n", k)
        line_end = n if nl < 0 else nl + 1
        closed = body.startswith(b"--", k)
        starts.append((j, line_end))
        if closed:
            break
        i = line_end
    parts = []
    for idx in range(len(starts) - (1 if closed or len(starts) > MAX_MIME_PARTS else 0)):
        begin = starts[idx][1]
        if idx + 1 < len(starts):
            end = starts[idx + 1][0] - 1  # the line break before the delimiter belongs to it
            if end > begin and body[end - 1] == 13:
                end -= 1
        else:
            end = n
        if end < begin:
            end = begin
        parts.append(split_message(body[begin:end]))
    return parts


class MessageBuilder:
    """Collects one message's bytes as they arrive, keeping a bounded prefix."""

    __slots__ = ("data", "limit", "size", "ts_ns")

    def __init__(self, limit: int, ts_ns: int = 0) -> None:
        self.data = bytearray()
        self.limit = limit
        self.size = 0
        self.ts_ns = ts_ns

    def add(self, chunk: bytes | bytearray | memoryview) -> None:
        """Appends ``chunk`` (counted whole, kept up to the limit)."""
        n = len(chunk)
        self.size += n
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk if n <= room else chunk[:room]

    def parts(self, max_header: int, max_body: int) -> tuple[bytes, bytes, bool]:
        """The kept header block and body, cut to their limits, and whether anything
        seen was not kept."""
        header, body = split_message(self.data)
        truncated = self.size > len(self.data)
        if len(header) > max_header:
            cut = header.rfind(b"\n", 0, max_header)
            header = header[: cut + 1] if cut >= 0 else header[:max_header]
            truncated = True
        if len(body) > max_body:
            body = body[:max_body]
            truncated = True
        return header, body, truncated


# --- stream plumbing ----------------------------------------------------------------


class StreamReader:
    """One direction's receive buffer: lines, counted runs and dot-stuffed data.

    Bytes are appended as they come and consumed from the front. Every reading
    method returns the same results however the input was split: it waits for
    more data when what it has cannot decide.

    The buffer is an immutable ``bytes``: most segments are read whole (lines, a
    message's body, a literal), so the next one simply replaces it (no copy), and
    lines and runs are single slices of it. What is left over (a partial line, a
    side waiting for the other) is joined with the next segment.
    """

    __slots__ = (
        "_buf",
        "_head",
        "_pos",
        "_scan",
        "_skipping",
        "_tail",
        "consumed",
        "dot_bol",
        "overlong",
        "ts_ns",
    )

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._scan = 0  # >= _pos; no LF before this offset: searching again from here is enough
        self._skipping = False
        self._head = b""
        self._tail = b""
        self.consumed = 0
        self.dot_bol = True
        self.overlong = False
        self.ts_ns = 0

    def __len__(self) -> int:
        return len(self._buf) - self._pos

    def append(self, data: bytes | bytearray | memoryview, ts_ns: int) -> None:
        """Adds bytes that arrived at capture time ``ts_ns``."""
        pos = self._pos
        buf = self._buf
        if pos >= len(buf):
            self._buf = data if type(data) is bytes else bytes(data)
            self._scan = 0
        else:
            self._buf = (buf[pos:] if pos else buf) + data
            self._scan -= pos
        self._pos = 0
        self.ts_ns = ts_ns

    def clear(self) -> int:
        """Drops everything buffered; returns how many bytes that was."""
        n = len(self)
        self.consumed += n
        self._buf = b""
        self._pos = 0
        self._scan = 0
        self._skipping = False
        self._head = self._tail = b""
        return n

    def readline(self, max_line: int) -> bytes | None:
        """The next line without its line break (LF, or CRLF), or None until one is complete.

        A line longer than ``max_line`` bytes comes back as its first ``max_line``
        and its last :data:`LINE_TAIL` bytes, with ``overlong`` set; it is never
        buffered whole.
        """
        buf = self._buf
        pos = self._pos
        self.overlong = False
        if self._skipping:
            j = buf.find(b"\n", pos)
            if j < 0:
                self._tail = (self._tail + buf[pos:])[-LINE_TAIL:]
                self.consumed += len(buf) - pos
                self._pos = self._scan = len(buf)
                return None
            tail = (self._tail + buf[pos:j])[-LINE_TAIL:]
            self.consumed += j + 1 - pos
            self._pos = self._scan = j + 1
            self._skipping = False
            line = self._head + tail
            self._head = self._tail = b""
            self.overlong = True
            return line[:-1] if line.endswith(b"\r") else line
        j = buf.find(b"\n", self._scan)
        if j < 0:
            if len(buf) - pos > max_line:
                self._head = buf[pos : pos + max_line]
                self._tail = buf[pos + max_line :][-LINE_TAIL:]
                self._skipping = True
                self.consumed += len(buf) - pos
                self._pos = len(buf)
            self._scan = len(buf)
            return None
        self.consumed += j + 1 - pos
        self._pos = self._scan = j + 1
        if j - pos > max_line:
            line = buf[pos:j]
            line = line[:max_line] + line[max_line:][-LINE_TAIL:]
            self.overlong = True
            return line[:-1] if line.endswith(b"\r") else line
        if j > pos and buf[j - 1] == 13:
            return buf[pos : j - 1]
        return buf[pos:j]

    def take(self, n: int) -> bytes:
        """Up to ``n`` bytes from the front (fewer when fewer are buffered)."""
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if pos + n < end:
            end = pos + n
        self._pos = end
        if self._scan < end:
            self._scan = end
        self.consumed += end - pos
        return buf[pos:end]

    def read_dotted(self, sink: Callable[[bytes], object]) -> bool:
        """Dot-stuffed data (SMTP DATA, POP3 multi-line) into ``sink``, unstuffed.

        Returns True once the terminating line (a lone ``.``, before CRLF or a
        bare LF) has been consumed; the line break before it is part of the data.
        ``dot_bol`` must be True when the data starts (it is after a line).

        No loop over lines: one search finds each line that starts with a dot (few),
        which is the end line, a stuffed dot (dropped) or, at the very end of what is
        buffered, a line that may still become the end line (it waits for more, with
        at most the two bytes ``.`` and CR); the data between goes in one slice.
        """
        buf = self._buf
        n = len(buf)
        i = self._pos
        if i >= n:
            return False
        bol = self.dot_bol
        dots: list[int] = []  # offsets of stuffed dots, dropped
        stop = n  # the data ends here (the end line's start, or what waits)
        after = -1  # the offset after the end line
        p = i if bol and buf[i] == 0x2E else -1  # a dot that starts a line
        if p < 0:
            p = buf.find(b"\n.", i) + 1 or -1
        while p >= 0:
            q = p + 1  # the byte after the dot
            if q < n:
                c = buf[q]
                if c == 0x0A:
                    stop, after = p, q + 1
                    break
                if c == 0x0D:
                    if q + 1 < n:
                        if buf[q + 1] == 0x0A:
                            stop, after = p, q + 2
                            break
                    else:
                        stop = p  # "." CR at the end: wait for what follows
                        break
                dots.append(p)
            else:
                stop = p  # a lone "." at the end: wait for what follows
                break
            p = buf.find(b"\n.", q) + 1 or -1
        if stop > i:
            if not dots:
                data = buf[i:stop]
            else:
                pieces = []
                at = i
                for d in dots:
                    pieces.append(buf[at:d])
                    at = d + 1
                pieces.append(buf[at:stop])
                data = b"".join(pieces)
            if data:
                sink(data)
            bol = buf[stop - 1] == 0x0A
        new = after if after >= 0 else stop
        self.consumed += new - i
        self._pos = new
        if self._scan < new:
            self._scan = new
        self.dot_bol = True if after >= 0 else bol
        return after >= 0


class MailSession:
    """The sans-IO driver shared by the SMTP, IMAP and POP3 session parsers.

    Feeding
        ``feed_client(data, ts_ns)`` and ``feed_server(data, ts_ns)`` take one
        direction's reassembled bytes, in stream order, split anywhere, with their
        capture timestamp; each returns the events completed by that call (of
        either direction: see blocking). ``close()`` ends the session: what was
        waiting is decided (see below) and a message still being read comes out
        with ``complete=False``. ``gap(from_client)`` says bytes are missing from
        one direction: the parser cannot find its place again, so it gives up.

    Blocking
        How one direction is read can depend on what the other said: after SMTP
        ``DATA`` the client's bytes are a message only if the server said 354;
        after ``STARTTLS`` they are TLS only if it said yes; after ``AUTH`` each
        client line answers a challenge (and is a secret) only while the server
        keeps challenging; a POP3 ``+OK`` is followed by lines only for some
        commands. At such a point that direction stops and keeps its bytes until
        the other direction has said enough, so results do not depend on how the
        two directions' bytes are interleaved. A side that waits for longer than
        ``max_blocked`` buffered bytes (the other direction is not in the
        capture) goes on assuming the usual answer (354, STARTTLS accepted, and
        for AUTH: lines that look like base64 are secrets), and counts it in
        ``assumed_replies``; ``close()`` does the same.

    Giving up
        Bytes that are not the protocol (``max_bad_lines`` lines that do not
        parse, a server that does not answer in the protocol) make the session
        give up: ``error`` holds the :class:`MailParseError`, its buffers are freed
        and later bytes are only counted (``ignored_bytes``). The events completed
        before are still returned. Nothing is raised to the caller.

    STARTTLS
        Once the server accepts STARTTLS (SMTP 220, IMAP OK, POP3 +OK to STLS),
        ``upgraded`` is True and nothing more is parsed (``ignored_bytes``).

    Counters (``counters``)
        ``commands``, ``replies``, ``messages``, ``long_lines``, ``bad_lines``,
        ``secret_lines`` (AUTH exchanges, never kept), ``pending_dropped``,
        ``assumed_replies``, ``unpaired_replies``, ``ignored_bytes``, and the
        protocol's own.

    Memory per session is bounded by about ``2 * (max_blocked + max_line)`` of
    buffers plus ``max_header + max_body`` for a message being read.

    Subclasses
        ``_client_step`` and ``_server_step`` read their side until they cannot go on
        and return whether they moved (consumed bytes or changed state); a step that
        does not move changes nothing. ``feed`` relies on it to run only the steps
        that can move (see there).
    """

    protocol = ""
    _COUNTERS: tuple[str, ...] = (
        "commands",
        "replies",
        "messages",
        "long_lines",
        "bad_lines",
        "secret_lines",
        "pending_dropped",
        "assumed_replies",
        "unpaired_replies",
        "ignored_bytes",
    )

    def __init__(
        self,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_body: int = DEFAULT_MAX_BODY,
        max_header: int = DEFAULT_MAX_HEADER,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_blocked: int = DEFAULT_MAX_BLOCKED,
        max_bad_lines: int = DEFAULT_MAX_BAD_LINES,
    ) -> None:
        for name, value in (
            ("max_line", max_line),
            ("max_body", max_body),
            ("max_header", max_header),
            ("max_pending", max_pending),
            ("max_blocked", max_blocked),
            ("max_bad_lines", max_bad_lines),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValidationError(f"{name} must be a positive integer, got {value!r}")
        if max_line < 64:
            raise ValidationError(f"max_line must be at least 64, got {max_line}")
        self.max_line = max_line
        self.max_body = max_body
        self.max_header = max_header
        self.max_pending = max_pending
        self.max_blocked = max_blocked
        self.max_bad_lines = max_bad_lines
        self.counters: dict[str, int] = dict.fromkeys(self._COUNTERS, 0)
        self.upgraded = False
        self.error: MailParseError | None = None
        self.closed = False
        self._live = True  # neither given up nor upgraded: still parsing
        self._c = StreamReader()
        self._s = StreamReader()
        self._forcing = False

    # -- public face

    @property
    def gave_up(self) -> bool:
        """The session stopped parsing because its bytes are not the protocol."""
        return self.error is not None

    def feed_client(self, data: bytes | bytearray | memoryview, ts_ns: int) -> list:
        """Bytes the client sent; returns the events they (and waiting bytes) completed."""
        return self.feed(True, data, ts_ns)

    def feed_server(self, data: bytes | bytearray | memoryview, ts_ns: int) -> list:
        """Bytes the server sent; returns the events they (and waiting bytes) completed."""
        return self.feed(False, data, ts_ns)

    def feed(self, from_client: bool, data: bytes | bytearray | memoryview, ts_ns: int) -> list:
        """``feed_client`` or ``feed_server`` by flag."""
        if not self._live or self.closed:
            self.counters["ignored_bytes"] += len(data)
            return []
        out: list = []
        c = self._c
        s = self._s
        try:
            # What _pump does, without the steps that cannot move: every step reads its
            # side until it cannot go on, so when a feed begins both sides are stuck
            # (the last pump ended with both), only the side fed can move, and after a
            # step that did not move the other one cannot either. The steps that run,
            # and so the events, are the same as _pump's.
            if from_client:
                c.append(data, ts_ns)
                while self._client_step(out) and self._live:
                    if not (self._server_step(out) and self._live):
                        break
            else:
                s.append(data, ts_ns)
                while self._server_step(out) and self._live:
                    if not (self._client_step(out) and self._live):
                        break
            mb = self.max_blocked
            if self._live and (len(c._buf) - c._pos > mb or len(s._buf) - s._pos > mb):
                for reader, force in ((c, self._force_client), (s, self._force_server)):
                    while len(reader) > self.max_blocked and not self._done():
                        if not force(out):
                            # Nothing to assume, yet the bytes do not go: never hold them.
                            side = "client" if reader is c else "server"
                            raise MailParseError(
                                f"{self.protocol}: {len(reader)} bytes from the {side} "
                                "cannot be read"
                            )
                        self.counters["assumed_replies"] += 1
                        self._pump(out)
        except MailParseError as e:
            self._give_up(e)
        return out

    def close(self, ts_ns: int | None = None) -> list:
        """The session ended: decides what waits, flushes a message being read."""
        if self.closed:
            return []
        out: list = []
        if self.error is None and not self.upgraded:
            if ts_ns is not None:
                self._c.ts_ns = max(self._c.ts_ns, ts_ns)
                self._s.ts_ns = max(self._s.ts_ns, ts_ns)
            try:
                self._pump(out)
                for _ in range(4 * self.max_pending + 16):
                    if self._done():
                        break
                    forced = self._force_client(out) or self._force_server(out)
                    if not forced:
                        break
                    self.counters["assumed_replies"] += 1
                    self._pump(out)
                if not self._done():
                    self._finish(out)
            except MailParseError as e:
                self._give_up(e)
        self.closed = True
        self._c.clear()
        self._s.clear()
        return out

    def gap(self, from_client: bool) -> None:
        """Bytes are missing from one direction: the session gives up."""
        if self.error is None and not self.upgraded and not self.closed:
            side = "client" if from_client else "server"
            self._give_up(MailParseError(f"{self.protocol}: bytes missing from the {side} stream"))

    # -- for subclasses

    def _done(self) -> bool:
        return not self._live

    def _pump(self, out: list) -> None:
        """Both sides in turn, the client first, until neither moves."""
        while self._live:
            c = self._client_step(out)
            if not self._live:
                break
            s = self._server_step(out)
            if not (c or s):
                break

    def _give_up(self, e: MailParseError) -> None:
        self.error = e
        self._live = False
        self.counters["ignored_bytes"] += self._c.clear() + self._s.clear()

    def _upgrade(self) -> None:
        self.upgraded = True
        self._live = False
        self.counters["ignored_bytes"] += self._c.clear() + self._s.clear()

    def _bad_line(self, what: str, line: bytes) -> None:
        self.counters["bad_lines"] += 1
        if self.counters["bad_lines"] >= self.max_bad_lines:
            raise MailParseError(f"{self.protocol}: not {self.protocol}: {what} {line[:40]!r}")

    def _text(self, raw: bytes) -> str:
        text = raw.decode("utf-8", "surrogateescape")
        return text if len(text) <= MAX_TEXT else text[:MAX_TEXT]

    def _client_step(self, out: list) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _server_step(self, out: list) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _force_client(self, out: list) -> bool:
        """The client waits on a reply that is not coming: assume it. True if it did."""
        return False

    def _force_server(self, out: list) -> bool:
        """The server waits on a command that is not coming: go on without. True if it did."""
        return False

    def _finish(self, out: list) -> None:
        """End of session: emit what is half done."""
