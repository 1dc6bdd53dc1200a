"""Making strings from the wire (or from peers) safe for protobuf, JSON, file names and logs.

Parsers keep what they read loss-free (SIP and SDP decode headers as UTF-8 with
``surrogateescape``, so every byte survives and filters can see it). Before such a
string leaves the process, it goes through one of these:

* :func:`wire_text` for protobuf fields, JSON and the SQLite index: always valid UTF-8.
  Undecodable bytes (and the lone surrogates that stand for them) become U+FFFD, the
  replacement character, and the value is cut to ``limit`` characters.
* :func:`log_text` for log lines and terminal output: :func:`wire_text`, then every
  control character (C0, DEL, C1, including ESC, CR and LF, so no ANSI escape and no
  forged log line) and every U+FFFD is written as a visible escape (``\\x1b``,
  ``\\n``, ``\\ufffd``), and long values end in ``...``.

Both are cheap on the common case (plain printable ASCII goes through untouched).
"""

from __future__ import annotations

__all__ = ["log_text", "wire_text"]

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def wire_text(value: str | bytes | bytearray | memoryview, limit: int = 1024) -> str:
    """``value`` as valid UTF-8 text of at most ``limit`` characters (see module doc)."""
    if isinstance(value, str):
        if value.isascii():
            return value if len(value) <= limit else value[:limit]
        # Lone surrogates (from surrogateescape, or any) cannot be encoded: replace them.
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "surrogatepass")
        value = raw.decode("utf-8", "replace")
    else:
        value = bytes(value).decode("utf-8", "replace")
    return value if len(value) <= limit else value[:limit]


def _escape_char(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    o = ord(c)
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def log_text(value: object, limit: int = 200) -> str:
    """``value`` (any object, str() of it) fit for one log or terminal line."""
    s = value if isinstance(value, str | bytes | bytearray | memoryview) else str(value)
    text = wire_text(s, limit + 1)
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    if not text.isprintable() or "\\" in text or "\ufffd" in text:
        text = "".join(
            _escape_char(c) if c == "\ufffd" or c == "\\" or not c.isprintable() else c
            for c in text
        )
    return text + "..." if cut else text
