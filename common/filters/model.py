r"""Filters: what they are, what they match, and how they are checked and stored.

A filter is ``(id, type, pattern)`` plus ``enabled``, a ``description`` and the
``hunters`` it targets (empty = every hunter able to apply its type). The processor
stores filters and pushes them to hunters; every hunter mode compiles them with
:func:`lc.common.filters.compile_filters` and asks the result about the values it sees.
This docstring is the reference for what a filter matches; every row below is tested
in ``tests/common/filters/``.

Wildcards (every type marked "yes" below; one rule in every mode)
=================================================================

=============  ==========================================================
Pattern        Matches when the normalised value ...
=============  ==========================================================
``foo``        equals ``foo`` (no ``*``: always an EXACT match)
``foo*``       starts with ``foo``
``*foo``       ends with ``foo``
``*foo*``      contains ``foo``
``\*``         is a literal ``*`` anywhere (``a\*b`` equals ``a*b``);
               ``\\`` is a literal backslash (``foo\\*``: starts with ``foo\``);
               any other backslash is an ordinary character
``a*b``        refused: ``*`` only at the start and/or end
``*``, ``**``  refused: only wildcards, would match everything
=============  ==========================================================

Types
=====

The "Case" column says whether case matters; where it does not, both sides are
``str.casefold``-ed. Observed values
are compared as the mode passes them (the parsed token, e.g. the user part of a SIP
URI), with only the normalisation listed; patterns lose their surrounding whitespace.
"End-anchored" normalisations apply to exact and ``*foo`` patterns only, since the end
of a ``foo*`` or ``*foo*`` pattern is not the end of the value. "No spaces": a pattern
with whitespace inside is refused, since such values never hold any.

===============  ==========================  =====  ===============================  =========
Type             Value (what a mode passes)  Case   Normalisation (pattern, value)   Wildcards
===============  ==========================  =====  ===============================  =========
bpf              none: compiled by libpcap   n/a    none; checked by ``bpf_check``   no [1]
ip_address       packet src and dst address  n/a    canonical address or network     no [2]
sip_user         user part of SIP URIs       yes    none                             yes
phone_number     SIP users, tel: numbers     n/a    digits, :mod:`.phone`            no [3]
sip_uri          a whole SIP/SIPS/TEL URI    no     none (no spaces)                 yes
call_id          Call-ID                     yes    none (no spaces)                 yes
codec            SDP rtpmap encoding name    no     none (no spaces)                 yes
dns_domain       DNS query name              no     one trailing ``.`` (end-anch.)   yes
http_host        Host / :authority           no     ``:port``, then one trailing     yes
                                                    ``.`` (end-anchored)
http_url         HTTP request target         yes    none (no spaces)                 yes
http_method      HTTP request method         no     none (no spaces)                 yes
http_status      HTTP response status code   n/a    ``404``, ``4xx``, ``500-599``    no [7]
http_user_agent  User-Agent header           no     none                             yes
http_ja4h        JA4H fingerprint            no     none (no spaces)                 yes
tls_sni          ClientHello server_name     no     one trailing ``.`` (end-anch.)   yes
tls_ja3          JA3 (MD5, 32 hex)           no     none                             no [4]
tls_ja3s         JA3S (MD5, 32 hex)          no     none                             no [4]
tls_ja4          JA4 fingerprint             no     none                             yes [5]
tls_ja4s         JA4S fingerprint            no     none (no spaces)                 yes
email_address    bare address (no name, <>)  no     none                             yes
email_subject    decoded Subject             no     none                             yes
email_mailbox    IMAP mailbox (decoded)      no     none                             yes
email_command    mail command verb           no     none                             yes
keyword          payload bytes               no     ASCII letters lowered            no [6]
===============  ==========================  =====  ===============================  =========

Each row is one :class:`FilterType` in :data:`TYPES`, which also names the hunter
modes that apply the type; the engine dispatches on its ``matcher``, and a type that
is not in the table is refused everywhere (never taken for BPF).

``sip_uri`` is case-insensitive as a whole, user part included (RFC 3261 keeps the
user part case-sensitive, but a URI filter is about the address, and one rule is
simpler than splitting URIs). Use ``sip_user`` for case-sensitive user matching.
``dns_domain``, ``tls_sni`` and ``http_host`` are names (no spaces); a pattern that a
second normalisation would change again (``example.com..``, ``host:80.``) is refused.
``http_host`` filters match the host whatever the port: ``example.com:8080`` is
stored as ``example.com``.

[1] ``bpf`` patterns are libpcap expressions (``*`` is multiplication there). The
    engine never matches them; :meth:`FilterSet.bpf` hands them to the capture layer.
[2] An IPv4 or IPv6 address or CIDR network; it matches a packet whose source OR
    destination address is inside. Host bits must be clear: ``10.1.2.3/8`` is refused
    (naming ``10.0.0.0/8``) rather than silently widened, since it is most often a
    typo for ``/32`` or ``/24``. Canonical forms: ``10.0.0.0/8``, ``192.0.2.1`` (a
    ``/32`` or ``/128`` becomes the bare address), ``2001:db8::/32``. Netmask
    notation (``10.0.0.0/255.0.0.0``) is accepted and rewritten. Zone ids (``%eth0``)
    are refused. ``0.0.0.0/0`` is allowed (explicitly everything). IPv4-mapped IPv6
    addresses (``::ffff:192.0.2.1``) do not match IPv4 filters.
[3] Matched by suffix in both directions with at least 7 digits, see
    :mod:`lc.common.filters.phone`. A ``*`` is refused: matching is already by
    suffix, and a prefix on digits would not mean the same thing for ``+49 30 ...``
    and ``030 ...``; use a ``sip_user`` pattern such as ``4930*`` for number ranges.
    The pattern keeps its written form (``+49 30 1234567``); it must have at least
    7 digits after normalisation.
[4] Exactly 32 hex digits: an MD5 digest, of which a part means nothing.
[5] The FoxIO shape ``t13d1516h2_8daaf6152771_e5627efa2ab1``: ``[tqd]``, a 2-character
    version, ``[di]``, 2 digits (ciphers), 2 digits (extensions), 2 alphanumeric ALPN
    characters, ``_``, 12 hex, ``_``, 12 hex. Wildcards are allowed because JA4's
    parts are meant to be matched apart (``t13d1516h2_8daaf6152771_*``,
    ``*_e5627efa2ab1``), but the fixed part must fit the shape at its place: a
    ``foo*`` pattern must be the start of a possible JA4, ``*foo`` its end, ``*foo*``
    a run of it.
[6] A ``keyword`` is a byte string searched anywhere in a payload (a message, or a
    TCP stream across its segments: :meth:`FilterSet.keywords`), with one
    Aho-Corasick automaton for all keywords. The pattern is UTF-8; ASCII letters match
    in either case, other bytes exactly (no Unicode case folding: payloads are bytes).
    No wildcards (it is always a "contains" match; ``\*`` is a literal star) and at
    least :data:`MIN_KEYWORD_BYTES` bytes, since a shorter one is in most payloads.
[7] A status code (``404``), a class (``4xx``: 400-499) or an inclusive range
    (``500-599``), codes 100-999; stored canonically (``4XX`` becomes ``4xx``, ``404-404``
    becomes ``404``). A mode passes the response's code as an int.

Validation
==========

:func:`validate_filter` returns the filter with its pattern normalised as above
(whitespace stripped, lowercased where case does not matter, trailing dot and port
dropped where they are ignored, canonical IP form; wildcard patterns are written back
with the minimal escapes), its hunters stripped and de-duplicated, and raises
:class:`~lc.common.errors.ValidationError` naming the filter and the problem
otherwise. Ids are 1-128 characters from ``A-Z a-z 0-9 . _ : -``; hunter ids follow
the hunters' own rule (1-64 characters from ``A-Z a-z 0-9 . _ -``, not ``.`` or
``..``). Patterns may not hold control characters other than tab, are at most
:data:`MAX_PATTERN_LEN` characters (:data:`MAX_BPF_LEN` for ``bpf``), and must be
valid Unicode. ``enabled=False`` filters are validated and stored like the others but
never compiled into a matcher.

Storage
=======

:meth:`Filter.to_json` gives the JSON shape (keys ``id``, ``type``, ``pattern``,
``enabled``, ``description``, ``hunters``); :meth:`Filter.from_mapping` reads it back,
and also reads what YAML gives for it (``hunters`` may be a comma-separated string).
:func:`parse_filters` reads a YAML (or JSON) document of filters and validates them;
:func:`dump_filters` writes one.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

import yaml

from lc.common.errors import ValidationError
from lc.common.filters.phone import MIN_PHONE_DIGITS, normalise_phone

__all__ = [
    "FILTER_TYPES",
    "MAX_BPF_LEN",
    "MAX_DESCRIPTION_LEN",
    "MAX_PATTERN_LEN",
    "MIN_KEYWORD_BYTES",
    "TYPES",
    "Filter",
    "FilterType",
    "dump_filters",
    "new_filter_id",
    "normalise_value",
    "parse_filters",
    "validate_filter",
]


@dataclass(frozen=True, slots=True)
class FilterType:
    """Everything about one filter type, in one place (the table in the module doc).

    ``matcher`` says which engine structure matches it: ``text`` (exact values and
    the wildcard grammar), ``ip``, ``phone``, ``keyword`` (bytes in a payload), ``range``
    (integer bounds, ``http_status``) or ``bpf`` (compiled by libpcap, never matched by
    the engine). ``case``:
    ``sensitive``, ``insensitive`` (both sides ``casefold``-ed; ASCII-only lowering
    for ``keyword``, whose values are bytes) or ``n/a``. ``modes`` are the hunter modes
    that apply the type (``lc.hunter.modes`` registers what each mode applies; a test
    keeps the two in step). ``value`` is what a mode passes to the engine.
    """

    name: str
    matcher: str
    value: str
    case: str = "n/a"
    wildcards: bool = True
    no_spaces: bool = False  # the values never hold whitespace: such a pattern is refused
    host_name: bool = False  # a name whose end is normalised (trailing dot, port)
    modes: tuple[str, ...] = ()


_PROTOCOL_MODES: Final = ("voip", "dns", "tls", "http", "email")

TYPES: Final[dict[str, FilterType]] = {
    t.name: t
    for t in (
        FilterType("bpf", "bpf", "none: compiled by libpcap", wildcards=False,
                   modes=("generic", "dns", "http", "tls", "email")),
        FilterType("ip_address", "ip", "packet src and dst address", wildcards=False,
                   modes=("generic", *_PROTOCOL_MODES)),
        FilterType("sip_user", "text", "user part of SIP URIs", "sensitive", modes=("voip",)),
        FilterType("phone_number", "phone", "SIP users, tel: numbers", wildcards=False,
                   modes=("voip",)),
        FilterType("sip_uri", "text", "a whole SIP/SIPS/TEL URI", "insensitive",
                   no_spaces=True, modes=("voip",)),
        FilterType("call_id", "text", "Call-ID", "sensitive", no_spaces=True, modes=("voip",)),
        FilterType("codec", "text", "SDP rtpmap encoding name", "insensitive", no_spaces=True,
                   modes=("voip",)),
        FilterType("dns_domain", "text", "DNS query name", "insensitive", no_spaces=True,
                   host_name=True, modes=("dns",)),
        FilterType("http_host", "text", "Host / :authority", "insensitive", no_spaces=True,
                   host_name=True, modes=("http",)),
        FilterType("http_url", "text", "HTTP request target", "sensitive", no_spaces=True,
                   modes=("http",)),
        FilterType("http_method", "text", "HTTP request method", "insensitive",
                   no_spaces=True, modes=("http",)),
        FilterType("http_status", "range", "HTTP response status code", wildcards=False,
                   modes=("http",)),
        FilterType("http_user_agent", "text", "User-Agent header", "insensitive",
                   modes=("http",)),
        FilterType("http_ja4h", "text", "JA4H fingerprint", "insensitive", no_spaces=True,
                   modes=("http",)),
        FilterType("tls_sni", "text", "ClientHello server_name", "insensitive",
                   no_spaces=True, host_name=True, modes=("tls",)),
        FilterType("tls_ja3", "text", "JA3 (MD5, 32 hex)", "insensitive", wildcards=False,
                   modes=("tls",)),
        FilterType("tls_ja3s", "text", "JA3S (MD5, 32 hex)", "insensitive", wildcards=False,
                   modes=("tls",)),
        FilterType("tls_ja4", "text", "JA4 fingerprint", "insensitive", modes=("tls",)),
        FilterType("tls_ja4s", "text", "JA4S fingerprint", "insensitive", no_spaces=True,
                   modes=("tls",)),
        FilterType("email_address", "text", "bare address (no name, <>)", "insensitive",
                   modes=("email",)),
        FilterType("email_subject", "text", "decoded Subject", "insensitive",
                   modes=("email",)),
        FilterType("email_mailbox", "text", "IMAP mailbox (decoded)", "insensitive",
                   modes=("email",)),
        FilterType("email_command", "text", "mail command verb", "insensitive",
                   modes=("email",)),
        FilterType("keyword", "keyword", "payload bytes (a message, a stream)", "insensitive",
                   wildcards=False, modes=("http", "email")),
    )
}  # fmt: skip
"""Every filter type, in the order the documentation lists them."""

FILTER_TYPES: Final[tuple[str, ...]] = tuple(TYPES)
"""Every filter type's name, in the order the documentation lists them."""

MAX_PATTERN_LEN: Final = 1024
MAX_BPF_LEN: Final = 8192
MAX_DESCRIPTION_LEN: Final = 1024
#: A keyword shorter than this would be found in most payloads.
MIN_KEYWORD_BYTES: Final = 3

_TYPE_SET: Final = frozenset(FILTER_TYPES)
_TEXT = [t for t in TYPES.values() if t.matcher == "text"]
_CASE_SENSITIVE: Final = frozenset(t.name for t in _TEXT if t.case == "sensitive")
_CASE_INSENSITIVE: Final = frozenset(t.name for t in _TEXT if t.case == "insensitive")
TEXT_TYPES: Final = _CASE_SENSITIVE | _CASE_INSENSITIVE
"""Types whose values are text, matched by exact value or the wildcard grammar."""
_NO_WILDCARDS: Final = frozenset(t.name for t in _TEXT if not t.wildcards)
_NO_SPACES: Final = frozenset(t.name for t in _TEXT if t.no_spaces)
_NAME_TYPES: Final = frozenset(t.name for t in _TEXT if t.host_name)
_SPACE_RE: Final = re.compile(r"\s")

# Pattern kinds after the wildcard grammar is applied.
EXACT: Final = "exact"
PREFIX: Final = "prefix"
SUFFIX: Final = "suffix"
CONTAINS: Final = "contains"

_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Same rule as lc.common.credentials.validate_id (kept here so that filters do not
# import the certificate code; a test checks that the two agree).
_HUNTER_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEX32_RE: Final = re.compile(r"[0-9a-f]{32}")
_KEYS: Final = ("id", "type", "pattern", "enabled", "description", "hunters")

_JA4_EXAMPLE: Final = "t13d1516h2_8daaf6152771_e5627efa2ab1"
_ALNUM: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_DIGIT: Final = frozenset("0123456789")
_HEX: Final = frozenset("0123456789abcdef")
# One character class per position of a (lowercase) JA4 fingerprint.
_JA4_SHAPE: Final[tuple[frozenset[str], ...]] = (
    frozenset("tqd"),
    _ALNUM,
    _ALNUM,
    frozenset("di"),
    _DIGIT,
    _DIGIT,
    _DIGIT,
    _DIGIT,
    _ALNUM,
    _ALNUM,
    frozenset("_"),
    *([_HEX] * 12),
    frozenset("_"),
    *([_HEX] * 12),
)


@dataclass(frozen=True, slots=True)
class Filter:
    """One filter as stored by the processor and pushed to hunters.

    Building one checks nothing; :func:`validate_filter` does.
    """

    id: str
    type: str
    pattern: str
    enabled: bool = True
    description: str = ""
    hunters: tuple[str, ...] = ()
    """Hunter ids this filter is for; empty = every hunter able to apply the type."""

    def to_json(self) -> dict[str, Any]:
        """The JSON shape: keys id, type, pattern, enabled, description, hunters (a list)."""
        return {
            "id": self.id,
            "type": self.type,
            "pattern": self.pattern,
            "enabled": self.enabled,
            "description": self.description,
            "hunters": list(self.hunters),
        }

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> Filter:
        """A filter from its JSON shape, or from what YAML reads for it.

        ``id``, ``type`` and ``pattern`` are required strings; ``enabled`` (a bool,
        default true), ``description`` (a string or null) and ``hunters`` (a list of
        strings, a comma-separated string, or null) are optional. Only the shape is
        checked here: call :func:`validate_filter` on the result.

        Raises:
            ValidationError: not a mapping, unknown or missing keys, or a field of the
                wrong type (the message names the filter and the keys).
        """
        if not isinstance(d, Mapping):
            raise ValidationError(f"filter: expected a mapping, got {type(d).__name__}")
        raw_id = d.get("id")
        # an empty id is one the processor generates (lc set filter -f without ids):
        # `filter ''` would name nothing
        who = f"filter {_show(raw_id)}" if raw_id is not None and raw_id != "" else "filter"
        unknown = [k for k in d if k not in _KEYS]
        if unknown:
            names = ", ".join(_show(k) for k in unknown)
            raise ValidationError(
                f"{who}: unknown key{'s' if len(unknown) > 1 else ''} {names} "
                f"(known: {', '.join(_KEYS)})"
            )
        for key in ("id", "type", "pattern"):
            if key not in d:
                raise ValidationError(f"{who}: missing key {key!r}")
            if not isinstance(d[key], str):
                raise ValidationError(
                    f"{who}: {key} must be a string, not {type(d[key]).__name__} (quote it in YAML)"
                )
        enabled = d.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValidationError(f"{who}: enabled must be true or false, not {_show(enabled)}")
        description = d.get("description")
        if description is None:
            description = ""
        elif not isinstance(description, str):
            raise ValidationError(
                f"{who}: description must be a string, not {type(description).__name__}"
            )
        hunters = d.get("hunters")
        if hunters is None:
            hunter_ids: tuple[str, ...] = ()
        elif isinstance(hunters, str):
            hunter_ids = tuple(h.strip() for h in hunters.split(",") if h.strip())
        elif isinstance(hunters, list | tuple) and all(isinstance(h, str) for h in hunters):
            hunter_ids = tuple(hunters)
        else:
            raise ValidationError(
                f"{who}: hunters must be a list of hunter ids or a comma-separated string"
            )
        return cls(
            id=d["id"],
            type=d["type"],
            pattern=d["pattern"],
            enabled=enabled,
            description=description,
            hunters=hunter_ids,
        )


def new_filter_id() -> str:
    """A fresh, random filter id: ``f-`` and 12 hex digits (48 random bits)."""
    return "f-" + secrets.token_hex(6)


# ----------------------------------------------------------------------------- helpers


def _show(value: object, limit: int = 60) -> str:
    """A bounded repr for error messages."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _drop_dot(s: str) -> str:
    return s[:-1] if s.endswith(".") else s


def _drop_port(s: str) -> str:
    """``host:port`` -> ``host``; ``[v6]:port`` -> ``[v6]``; a bare IPv6 stays."""
    if s.startswith("["):
        end = s.find("]")
        return s if end < 0 else s[: end + 1]
    i = s.rfind(":")
    if i >= 0 and s.find(":") == i:
        port = s[i + 1 :]
        if not port or (port.isascii() and port.isdigit()):
            return s[:i]
    return s


def _norm_name(s: str) -> str:
    s = s.casefold()
    return s[:-1] if s.endswith(".") else s


def _norm_host(s: str) -> str:
    return _drop_dot(_drop_port(s.casefold()))


# How the engine normalises the observed values of each text type: "as is" (the
# case-sensitive types), "fold" (str.casefold, applied to all values at once), or a
# function applied to each value.
VALUE_NORMALISATION: Final[dict[str, Callable[[str], str] | str]] = {
    **{t: "as is" for t in _CASE_SENSITIVE},
    **{t: "fold" for t in _CASE_INSENSITIVE},
    "dns_domain": _norm_name,
    "tls_sni": _norm_name,
    "http_host": _norm_host,
}


def normalise_value(type_: str, value: str) -> str:
    """An observed value of a text type, normalised as the matcher compares it.

    Raises:
        ValidationError: ``type_`` is not a text type (ip_address, phone_number and
            bpf have their own forms; see :mod:`.phone` for phone numbers).
    """
    how = VALUE_NORMALISATION.get(type_)
    if how is None:
        raise ValidationError(f"{_show(type_)} is not a text filter type")
    if how == "as is":
        return value
    if how == "fold":
        return value.casefold()
    assert callable(how)
    return how(value)


def _norm_core(type_: str, kind: str, core: str) -> str:
    """Normalise the fixed part of a text pattern the way its values are normalised."""
    if type_ in _CASE_INSENSITIVE:
        core = core.casefold()
    if kind in (EXACT, SUFFIX):  # end-anchored: the core's end is the value's end
        if type_ == "http_host":
            core = _drop_dot(_drop_port(core))
        elif type_ in ("dns_domain", "tls_sni"):
            core = _drop_dot(core)
    return core


def _split_wildcards(pattern: str) -> tuple[str, str] | str:
    """``(kind, core)`` by the wildcard grammar, or an error text for a refused pattern."""
    if "\\" not in pattern:
        if "*" not in pattern:
            return EXACT, pattern
        lead = pattern.startswith("*")
        trail = len(pattern) > 1 and pattern.endswith("*")
        core = pattern[1 if lead else 0 : -1 if trail else None]
        if "*" in core:
            if not core.strip("*"):
                return "is only wildcards and would match everything"
            return "may have '*' only at the start and/or end (write \\* for a literal star)"
        if not core:
            return "is only wildcards and would match everything"
        return (CONTAINS if trail else SUFFIX) if lead else PREFIX, core
    # General case: walk the escapes.
    chars: list[str] = []
    stars: list[int] = []  # positions (in tokens) of unescaped stars
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n and pattern[i + 1] in "*\\":
            chars.append(pattern[i + 1])
            i += 2
            continue
        if c == "*":
            stars.append(len(chars))
        chars.append(c)
        i += 1
    total = len(chars)
    lead = bool(stars) and stars[0] == 0
    trail = bool(stars) and stars[-1] == total - 1 and total > 1
    allowed = int(lead) + int(trail)
    if len(stars) > allowed:
        if total == len(stars):
            return "is only wildcards and would match everything"
        return "may have '*' only at the start and/or end (write \\* for a literal star)"
    core = "".join(chars[1 if lead else 0 : total - 1 if trail else total])
    if not core:
        return "is only wildcards and would match everything"
    if lead:
        return (CONTAINS if trail else SUFFIX), core
    return (PREFIX if trail else EXACT), core


def _escape(core: str, star_follows: bool) -> str:
    """Write a literal core so that :func:`_split_wildcards` reads it back unchanged."""
    if "*" not in core and "\\" not in core:
        return core
    out: list[str] = []
    n = len(core)
    for i, c in enumerate(core):
        if c == "*":
            out.append("\\*")
        elif c == "\\":
            nxt = core[i + 1] if i + 1 < n else ("*" if star_follows else "")
            out.append("\\\\" if nxt in ("*", "\\") else "\\")
        else:
            out.append(c)
    return "".join(out)


def render_pattern(kind: str, core: str) -> str:
    """The pattern text for a ``(kind, core)`` pair, with the minimal escapes."""
    body = _escape(core, kind in (PREFIX, CONTAINS))
    if kind == EXACT:
        return body
    if kind == PREFIX:
        return body + "*"
    if kind == SUFFIX:
        return "*" + body
    return "*" + body + "*"


def _ja4_fits(kind: str, core: str) -> bool:
    shape = _JA4_SHAPE
    n, size = len(core), len(shape)
    if n > size:
        return False

    def fits_at(offset: int) -> bool:
        return all(c in shape[offset + j] for j, c in enumerate(core))

    if kind == EXACT:
        return n == size and fits_at(0)
    if kind == PREFIX:
        return fits_at(0)
    if kind == SUFFIX:
        return fits_at(size - n)
    return any(fits_at(o) for o in range(size - n + 1))


# ----------------------------------------------------------------------------- validation


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated filter and what the engine compiles from it (internal)."""

    filter: Filter
    kind: str  # EXACT/PREFIX/SUFFIX/CONTAINS for text types, EXACT otherwise
    key: str | tuple[int, int, int]
    """Normalised core (text), digits (phone), (version, prefix length, network) (ip),
    expression (bpf)."""


def _check_fields(f: Filter) -> str:
    """Check everything but the pattern; return the ``filter 'id'`` prefix for messages."""
    if not isinstance(f.id, str) or not _ID_RE.fullmatch(f.id):
        raise ValidationError(
            f"invalid filter id {_show(f.id)}: use 1-128 characters from A-Z a-z 0-9 . _ : -"
        )
    who = f"filter {f.id!r}"
    if not isinstance(f.type, str) or f.type not in _TYPE_SET:
        near = (
            difflib.get_close_matches(f.type.lower(), FILTER_TYPES, n=1, cutoff=0.6)
            if isinstance(f.type, str) and len(f.type) <= 64  # a peer's string: bounded work
            else []
        )
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValidationError(
            f"{who}: unknown type {_show(f.type)}{hint}; known types: {', '.join(FILTER_TYPES)}"
        )
    if not isinstance(f.pattern, str):
        raise ValidationError(f"{who}: pattern must be a string, not {type(f.pattern).__name__}")
    if not isinstance(f.enabled, bool):
        raise ValidationError(f"{who}: enabled must be true or false, not {_show(f.enabled)}")
    if not isinstance(f.description, str):
        raise ValidationError(
            f"{who}: description must be a string, not {type(f.description).__name__}"
        )
    if len(f.description) > MAX_DESCRIPTION_LEN:
        raise ValidationError(
            f"{who}: description is {len(f.description)} characters (at most {MAX_DESCRIPTION_LEN})"
        )
    if not _is_unicode(f.description):
        raise ValidationError(f"{who}: description is not valid Unicode text")
    if not isinstance(f.hunters, tuple):
        raise ValidationError(f"{who}: hunters must be a tuple of hunter ids")
    for h in f.hunters:
        if not _is_hunter_id(h):
            raise ValidationError(
                f"{who}: invalid hunter id {_show(h)}: use 1-64 characters from A-Z a-z 0-9 . _ -"
            )
    return who


def _is_hunter_id(h: object) -> bool:
    if not isinstance(h, str):
        return False
    h = h.strip()
    return _HUNTER_ID_RE.fullmatch(h) is not None and h not in (".", "..")


def _is_unicode(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot go on the wire
        return False
    return True


def prepare_filter(f: Filter, bpf_check: Callable[[str], None] | None = None) -> Prepared:
    """Validate and normalise ``f`` and keep what the engine needs (internal)."""
    who = _check_fields(f)
    t = f.type
    p = f.pattern.strip()
    if not p:
        raise ValidationError(f"{who}: empty {t} pattern")
    limit = MAX_BPF_LEN if t == "bpf" else MAX_PATTERN_LEN
    if len(p) > limit:
        raise ValidationError(f"{who}: {t} pattern is {len(p)} characters (at most {limit})")
    if _CONTROL_RE.search(p):
        raise ValidationError(f"{who}: {t} pattern {_show(p)} contains control characters")
    if not _is_unicode(p):
        raise ValidationError(f"{who}: {t} pattern {_show(p)} is not valid Unicode text")
    hunters = tuple(dict.fromkeys(h.strip() for h in f.hunters))

    def done(pattern: str, kind: str, key: Any) -> Prepared:
        if pattern != f.pattern or hunters != f.hunters:
            g = replace(f, pattern=pattern, hunters=hunters)
        else:
            g = f
        return Prepared(g, kind, key)

    if t in TEXT_TYPES:
        if t in _NO_WILDCARDS:
            hexed = p.casefold()
            if not _HEX32_RE.fullmatch(hexed):
                raise ValidationError(
                    f"{who}: {t} pattern {_show(p)} must be exactly 32 hex digits "
                    "(an MD5 digest; wildcards are not allowed)"
                )
            return done(hexed, EXACT, hexed)
        split = _split_wildcards(p)
        if isinstance(split, str):
            raise ValidationError(f"{who}: {t} pattern {_show(p)} {split}")
        kind, core = split
        if t in _NO_SPACES and _SPACE_RE.search(core):
            raise ValidationError(f"{who}: {t} pattern {_show(p)} contains whitespace")
        core = _norm_core(t, kind, core)
        if not core:
            raise ValidationError(f"{who}: {t} pattern {_show(p)} is empty once normalised")
        if t in _NAME_TYPES and _norm_core(t, kind, core) != core:
            # e.g. "example.com.." or "host:80.": one more pass would change it again.
            raise ValidationError(
                f"{who}: {t} pattern {_show(p)} is not a host name (check the trailing "
                "dots and the port)"
            )
        if t == "tls_ja4" and not _ja4_fits(kind, core):
            what = "is not a JA4 fingerprint" if kind == EXACT else "does not fit the JA4 shape"
            raise ValidationError(
                f"{who}: tls_ja4 pattern {_show(p)} {what} (like {_JA4_EXAMPLE}: [tqd], "
                "2-character version, [di], 2+2 digits, 2 ALPN characters, _, 12 hex, "
                "_, 12 hex)"
            )
        return done(render_pattern(kind, core), kind, core)
    if t == "keyword":
        split = _split_wildcards(p)
        if isinstance(split, str) or split[0] != EXACT:
            raise ValidationError(
                f"{who}: keyword pattern {_show(p)} may not use '*': a keyword is found "
                "anywhere in the payload (write \\* for a literal star)"
            )
        raw = split[1].encode("utf-8").lower()  # ASCII letters only
        if len(raw) < MIN_KEYWORD_BYTES:
            raise ValidationError(
                f"{who}: keyword pattern {_show(p)} has {len(raw)} bytes; at least "
                f"{MIN_KEYWORD_BYTES} are needed (a shorter one is in most payloads)"
            )
        core = raw.decode("utf-8")
        return done(render_pattern(EXACT, core), EXACT, core)
    if t == "http_status":
        text, bounds = _parse_status(who, p)
        return done(text, EXACT, bounds)
    if t == "ip_address":
        text, net_key = _parse_network(who, p)
        return done(text, EXACT, net_key)
    if t == "phone_number":
        if "*" in p:
            raise ValidationError(
                f"{who}: phone_number pattern {_show(p)} may not use '*' (phone numbers "
                f"already match by suffix of at least {MIN_PHONE_DIGITS} digits; use a "
                "sip_user pattern such as 4930* for number ranges)"
            )
        digits = normalise_phone(p)
        if digits is None:
            raise ValidationError(f"{who}: phone_number pattern {_show(p)} is not a phone number")
        if len(digits) < MIN_PHONE_DIGITS:
            raise ValidationError(
                f"{who}: phone_number pattern {_show(p)} has {len(digits)} digits once "
                f"normalised; at least {MIN_PHONE_DIGITS} are needed"
            )
        return done(p, EXACT, digits)
    if t == "bpf":
        if bpf_check is not None:
            bpf_check(p)
        return done(p, EXACT, p)
    raise ValidationError(f"{who}: filter type {t!r} has no validation rule")  # a new row


_STATUS_RE: Final = re.compile(r"([1-9])([0-9][0-9]|xx)|([1-9][0-9][0-9])-([1-9][0-9][0-9])")


def _parse_status(who: str, p: str) -> tuple[str, tuple[int, int]]:
    """Canonical text and inclusive ``(low, high)`` of an http_status pattern."""
    m = _STATUS_RE.fullmatch(p.lower())
    if m is None:
        raise ValidationError(
            f"{who}: http_status pattern {_show(p)} is not a status code (404), a class "
            "(4xx) or a range (500-599) of codes 100-999"
        )
    first, rest, lo_text, hi_text = m.groups()
    if first is not None:
        if rest == "xx":
            lo = int(first) * 100
            return f"{first}xx", (lo, lo + 99)
        code = int(first + rest)
        return str(code), (code, code)
    lo, hi = int(lo_text), int(hi_text)
    if lo > hi:
        raise ValidationError(f"{who}: http_status range {_show(p)} ends before it starts")
    return (str(lo) if lo == hi else f"{lo}-{hi}"), (lo, hi)


_IPV4_RE: Final = re.compile(
    r"(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})"
    r"(?:/(0|[1-9][0-9]?))?"
)


def _parse_network(who: str, p: str) -> tuple[str, tuple[int, int, int]]:
    """Canonical text and ``(version, prefix length, network as int)`` of an ip pattern."""
    m = _IPV4_RE.fullmatch(p)
    if m is not None:
        # Fast path for plain IPv4 (ipaddress takes ~20 us per network): same rules.
        a, b, c, d, plen_text = m.groups()
        octets = (int(a), int(b), int(c), int(d))
        plen = 32 if plen_text is None else int(plen_text)
        if max(octets) <= 255 and plen <= 32:
            n = octets[0] << 24 | octets[1] << 16 | octets[2] << 8 | octets[3]
            host_bits = (1 << (32 - plen)) - 1
            if n & host_bits == 0:
                text = f"{a}.{b}.{c}.{d}" if plen == 32 else f"{a}.{b}.{c}.{d}/{plen}"
                return text, (4, plen, n)
    bad = f"{who}: ip_address pattern {_show(p)} is not an IPv4/IPv6 address or CIDR network"
    if "%" in p:
        raise ValidationError(f"{bad} (zone ids are not allowed)")
    if "*" in p:
        raise ValidationError(f"{bad} (wildcards are not allowed; use a CIDR such as 10.0.0.0/8)")
    try:
        net = ipaddress.ip_network(p, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(p, strict=False)
        except ValueError:
            raise ValidationError(bad) from None
        raise ValidationError(
            f"{who}: ip_address pattern {_show(p)} has host bits set (did you mean {loose}?)"
        ) from None
    text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    return text, (net.version, net.prefixlen, int(net.network_address))


def validate_filter(f: Filter, bpf_check: Callable[[str], None] | None = None) -> Filter:
    """``f`` with its pattern and hunters normalised, or ValidationError.

    ``bpf_check`` compiles a ``bpf`` pattern (the caller passes a libpcap compiler)
    and raises ValidationError if it is invalid; that error is let through as it is.
    With ``bpf_check=None`` a ``bpf`` pattern is only checked to be non-empty.
    Validating a validated filter returns it unchanged.

    Raises:
        ValidationError: the message names the filter and the problem (see the
            module docstring for the rules).
    """
    return prepare_filter(f, bpf_check).filter


# ----------------------------------------------------------------------------- YAML / JSON


def parse_filters(text: str, bpf_check: Callable[[str], None] | None = None) -> list[Filter]:
    """Read and validate a YAML (or JSON) document of filters.

    The document is a list of filter mappings, or a mapping whose only key is
    ``filters`` holding that list (what :func:`dump_filters` writes). An empty
    document holds no filters. Ids must be unique.

    Raises:
        ValidationError: a YAML syntax error (with its line), a wrong shape, an
            invalid filter, or a duplicate id.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValidationError(
            f"filters: invalid YAML{where}: {problem} (quote patterns that start with "
            "'*' or contain ': ')"
        ) from None
    except Exception as exc:
        # PyYAML lets other errors out of its constructors (ValueError for 2001-02-30,
        # AttributeError for "!!timestamp x", RecursionError for deep nesting): the
        # document is still the user's mistake.
        raise ValidationError(f"filters: invalid YAML: {_show(str(exc), 100)}") from None
    if doc is None:
        return []
    if isinstance(doc, dict):
        if set(doc) != {"filters"}:
            raise ValidationError("filters: expected a list, or a mapping with one key 'filters'")
        doc = doc["filters"] or []
    if not isinstance(doc, list):
        raise ValidationError(f"filters: expected a list of filters, got {type(doc).__name__}")
    out: list[Filter] = []
    seen: set[str] = set()
    for i, item in enumerate(doc):
        if not isinstance(item, Mapping):
            raise ValidationError(f"filters[{i}]: expected a mapping, got {type(item).__name__}")
        f = validate_filter(Filter.from_mapping(item), bpf_check)
        if f.id in seen:
            raise ValidationError(f"filter {f.id!r}: duplicate id")
        seen.add(f.id)
        out.append(f)
    return out


def dump_filters(filters: Iterable[Filter]) -> str:
    """A YAML document (``filters:`` and a list) that :func:`parse_filters` reads back."""
    doc = {"filters": [f.to_json() for f in filters]}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)
