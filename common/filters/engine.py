r"""The compiled matcher: many filters, asked about a few values per packet, cheaply.

:func:`compile_filters` turns filters into an immutable :class:`FilterSet`. Building
one is done off the hot path (when filters change); a hunter then swaps a single
reference to the new set, which is safe without locks because nothing in a set
changes after it is built. What a filter matches is defined in
:mod:`lc.common.filters.model`; this module only makes it fast.

Structures, per type
    * **Exact text patterns**: a dict from the normalised value to the filter ids: one
      hash look-up per observed value, whatever the number of filters.
    * **Wildcard text patterns**: one Aho-Corasick automaton (pyahocorasick) per type.
      The values of one call are normalised, joined and framed with one separator
      character, NUL: ``\0 v1 \0 v2 \0 ... \0``, and scanned once. A prefix pattern
      ``foo*`` is the word ``\0foo``, a suffix ``*foo`` is ``foo\0``, a contains
      ``*foo*`` is ``foo``. Patterns cannot hold control characters, so no word spans
      two values; a value that holds a NUL itself has it replaced by ``\x01``, which
      no pattern holds either. The scan costs a few tens of nanoseconds per character
      (pyahocorasick walks child lists linearly), about half of a SIP message's cost.
    * **ip_address**: one hash table per prefix length present, IPv4 and IPv6 apart,
      keyed by the address shifted right by the host bits. An address costs one shift
      and one dict look-up per prefix length present (at most 33 or 129, in practice a
      handful).
    * **phone_number**: patterns' digit strings bucketed by their last
      :data:`MIN_PHONE_DIGITS` digits. Under the suffix rule two numbers of at least
      that many digits can only match if they end with the same 7 digits, so an
      observed number costs one look-up of its last 7 digits, then an ``endswith``
      check (both ways) per pattern in that bucket: almost always none or one, since
      7 digits leave ten million buckets (a bucket only grows when many patterns share
      their last 7 digits, e.g. one subscriber number under many country codes).
      Indexing every suffix of every pattern instead costs several look-ups per value
      and several entries per pattern. Numbers shorter than 7 digits are looked up
      whole (equality).
    * **keyword**: one Aho-Corasick automaton over bytes (each byte as one character,
      ASCII letters lowered on both sides). :meth:`FilterSet.match` scans whole values
      (a message); :meth:`FilterSet.keywords` gives a :class:`KeywordMatcher` whose
      :meth:`~KeywordMatcher.stream` scans a byte stream piece by piece and finds
      keywords across the pieces (it keeps the last ``longest keyword - 1`` bytes).
    * **range** (``http_status``): the ``(low, high)`` bounds of each pattern, checked
      one by one against an int value (a handful of patterns at most).
    * **bpf**: not matched here; :meth:`FilterSet.bpf` hands the expressions to the
      capture layer (libpcap).

Which structure a type uses is its ``matcher`` in :data:`lc.common.filters.model.TYPES`.

Values may be ``str`` or bytes-like; bytes are decoded as UTF-8 with
``errors="surrogateescape"`` (so undecodable bytes never match a pattern, which is
valid Unicode). Nothing here raises on an observed value: a value that is not an
address or a phone number simply matches nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from typing import Final

import ahocorasick

from lc.common.errors import ValidationError
from lc.common.filters.model import (
    CONTAINS,
    EXACT,
    FILTER_TYPES,
    PREFIX,
    SUFFIX,
    TYPES,
    VALUE_NORMALISATION,
    Filter,
    prepare_filter,
)
from lc.common.filters.phone import MIN_PHONE_DIGITS, normalise_phone

__all__ = ["FilterSet", "KeywordMatcher", "KeywordStream", "compile_filters"]

_TYPE_SET: Final = frozenset(FILTER_TYPES)
# Values are joined with, and framed by, one separator; patterns hold no control
# characters, so neither this nor its stand-in can be part of a pattern.
_SEP: Final = "\x00"
_NOT_IN_PATTERNS: Final = "\x01"
_ONE_VALUE: Final = (str, bytes, bytearray, memoryview)

Value = str | bytes | bytearray | memoryview


def _text(v: Value) -> str:
    return v if type(v) is str else str(v, "utf-8", "surrogateescape")


def _unknown_type(t: object) -> ValidationError:
    return ValidationError(f"unknown filter type {t!r}; known types: {', '.join(FILTER_TYPES)}")


class _TextMatcher:
    """Exact dict plus one automaton for the wildcard patterns of one text type."""

    __slots__ = ("_automaton", "_fold", "_get", "_norm")

    def __init__(self, type_: str, entries: list[tuple[str, str, str]]) -> None:
        how = VALUE_NORMALISATION[type_]
        self._fold = how == "fold"
        self._norm = how if callable(how) else None
        exact: dict[str, tuple[str, ...]] = {}
        words: dict[str, tuple[str, ...]] = {}
        for fid, kind, core in entries:
            if kind == EXACT:
                exact[core] = (*exact.get(core, ()), fid)
                continue
            if kind == PREFIX:
                word = _SEP + core
            elif kind == SUFFIX:
                word = core + _SEP
            else:
                assert kind == CONTAINS
                word = core
            words[word] = (*words.get(word, ()), fid)
        self._get = exact.get if exact else None
        automaton = None
        if words:
            automaton = ahocorasick.Automaton()
            for word, ids in words.items():
                automaton.add_word(word, ids)
            automaton.make_automaton()
        self._automaton = automaton

    def match_into(self, values: Iterable[Value], out: set[str]) -> None:
        if type(values) is not list and type(values) is not tuple:
            values = list(values)
        if not values:
            return
        n = len(values)
        norm = self._norm
        try:
            # The join is also the type check: it (or norm) refuses anything but str.
            joined = _SEP.join(values if norm is None else map(norm, values))
        except (TypeError, AttributeError):
            values = [v if type(v) is str else _text(v) for v in values]
            joined = _SEP.join(values if norm is None else map(norm, values))
        if joined.count(_SEP) != n - 1:
            # A value holds the separator: replace it by a character no pattern holds.
            values = [v.replace(_SEP, _NOT_IN_PATTERNS) for v in values]
            joined = _SEP.join(values if norm is None else map(norm, values))
        if self._fold:
            joined = joined.casefold()  # context-free, so the same as value by value
            values = joined.split(_SEP)
        elif norm is not None:
            values = joined.split(_SEP)
        get = self._get
        if get is not None:
            for ids in filter(None, map(get, values)):
                out.update(ids)
        automaton = self._automaton
        if automaton is not None:
            for _, ids in automaton.iter(f"{_SEP}{joined}{_SEP}"):
                out.update(ids)


class _IpMatcher:
    """Per-prefix-length hash tables of networks, IPv4 and IPv6 apart."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
        tables: dict[tuple[int, int], dict[int, tuple[str, ...]]] = {}
        for fid, (version, plen, network) in entries:
            shift = (32 if version == 4 else 128) - plen
            table = tables.setdefault((version, shift), {})
            key = network >> shift
            table[key] = (*table.get(key, ()), fid)
        # (host bits, table.get) pairs, longest prefixes first (the order does not
        # change the result); the bound get saves an attribute look-up per table.
        self._v4 = tuple((s, t.get) for (ver, s), t in sorted(tables.items()) if ver == 4)
        self._v6 = tuple((s, t.get) for (ver, s), t in sorted(tables.items()) if ver == 6)

    def match_into(self, addresses: Iterable[Value], out: set[str]) -> None:
        v4, v6 = self._v4, self._v6
        for a in addresses:
            if type(a) is str:
                n, ver = _parse_ip_text(a)
            else:
                size = len(a)
                if size == 4:
                    n, ver = int.from_bytes(a, "big"), 4
                elif size == 16:
                    n, ver = int.from_bytes(a, "big"), 6
                else:
                    n, ver = _parse_ip_text(_text(a))
            for shift, get in v4 if ver == 4 else v6 if ver == 6 else ():
                ids = get(n >> shift)
                if ids is not None:
                    out.update(ids)


def _parse_ip_text(s: str) -> tuple[int, int]:
    """(address as int, version) of a textual address, or (0, 0) if it is not one."""
    try:
        a = ipaddress.ip_address(s.strip())
    except ValueError:
        return 0, 0
    return int(a), a.version


class _PhoneMatcher:
    """Suffix rule over digit strings; see the module docstring."""

    __slots__ = ("_exact", "_tails")

    def __init__(self, entries: list[tuple[str, str]]) -> None:
        exact: dict[str, tuple[str, ...]] = {}
        for fid, digits in entries:
            exact[digits] = (*exact.get(digits, ()), fid)
        tails: dict[str, tuple[str, ...]] = {}
        for digits in exact:
            tail = digits[-MIN_PHONE_DIGITS:]
            tails[tail] = (*tails.get(tail, ()), digits)
        self._exact = exact
        self._tails = tails

    def match_into(self, values: Iterable[Value], out: set[str]) -> None:
        exact, tails = self._exact, self._tails
        for value in values:
            v = normalise_phone(value if type(value) is str else _text(value))
            if v is None:
                continue
            if len(v) < MIN_PHONE_DIGITS:
                ids = exact.get(v)  # only equality can match a short number
                if ids is not None:
                    out.update(ids)
                continue
            candidates = tails.get(v[-MIN_PHONE_DIGITS:])
            if candidates is None:
                continue
            for p in candidates:
                if p.endswith(v) or v.endswith(p):
                    out.update(exact[p])


def _latin1(v: Value) -> str:
    """Bytes as one character each, ASCII letters lowered (a str value: its UTF-8)."""
    if type(v) is str:
        v = v.encode("utf-8", "surrogateescape")
    return bytes(v).lower().decode("latin-1")


class KeywordMatcher:
    """The ``keyword`` filters: byte strings found anywhere in a payload."""

    __slots__ = ("_automaton", "longest")

    def __init__(self, entries: list[tuple[str, str]]) -> None:
        words: dict[str, tuple[str, ...]] = {}
        for fid, core in entries:
            word = core.encode("utf-8").decode("latin-1")
            words[word] = (*words.get(word, ()), fid)
        automaton = ahocorasick.Automaton()
        for word, ids in words.items():
            automaton.add_word(word, ids)
        automaton.make_automaton()
        self._automaton = automaton
        self.longest = max(len(w) for w in words)

    def match_into(self, values: Iterable[Value], out: set[str]) -> None:
        automaton = self._automaton
        for v in values:
            for _, ids in automaton.iter(_latin1(v)):
                out.update(ids)

    def stream(self) -> KeywordStream:
        """A scanner for one byte stream (one direction of a connection)."""
        return KeywordStream(self)


class KeywordStream:
    """Scans one byte stream in pieces; a keyword split across pieces is found."""

    __slots__ = ("_automaton", "_keep", "_tail")

    def __init__(self, matcher: KeywordMatcher) -> None:
        self._automaton = matcher._automaton
        self._keep = matcher.longest - 1
        self._tail = ""

    def feed(self, data: bytes | bytearray | memoryview) -> set[str]:
        """The ids of the keywords that end in ``data`` (each match reported once)."""
        tail = self._tail
        text = tail + _latin1(data)
        out: set[str] = set()
        first_new = len(tail)  # a match ending before this was reported already
        for end, ids in self._automaton.iter(text):
            if end >= first_new:
                out.update(ids)
        keep = self._keep
        self._tail = text[-keep:] if keep else ""
        return out


class _RangeMatcher:
    """Inclusive integer ranges (http_status): ``(id, (low, high))`` each."""

    __slots__ = ("_ranges",)

    def __init__(self, entries: list[tuple[str, tuple[int, int]]]) -> None:
        self._ranges = tuple((lo, hi, fid) for fid, (lo, hi) in entries)

    def match_into(self, values: Iterable[object], out: set[str]) -> None:
        for v in values:
            if type(v) is not int:
                try:
                    v = int(v)  # type: ignore[call-overload]
                except (TypeError, ValueError):
                    continue
            for lo, hi, fid in self._ranges:
                if lo <= v <= hi:
                    out.add(fid)


_Matcher = _TextMatcher | _IpMatcher | _PhoneMatcher | KeywordMatcher | _RangeMatcher


class FilterSet:
    """An immutable, compiled set of filters (build it with :func:`compile_filters`).

    The ``match*`` methods return the ids of the filters that match; they never raise
    on an observed value. Asking about a type that has no filters costs one dict
    look-up and matches nothing; asking about a name that is not a filter type raises
    ValidationError, since it is a caller's bug.
    """

    __slots__ = ("_bpf", "_by_id", "_ids", "_matchers", "_types")

    def __init__(
        self,
        filters: tuple[Filter, ...],
        matchers: dict[str, _Matcher],
        bpf: list[tuple[str, str]],
    ) -> None:
        self._by_id = {f.id: f for f in filters}
        self._ids = frozenset(self._by_id)
        self._types = frozenset(f.type for f in filters)
        self._matchers = matchers
        self._bpf = tuple(bpf)

    @property
    def ids(self) -> frozenset[str]:
        """The ids of the compiled filters."""
        return self._ids

    @property
    def filters(self) -> tuple[Filter, ...]:
        """The compiled filters (validated, normalised), in the order given."""
        return tuple(self._by_id.values())

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"<FilterSet {len(self)} filters, types {sorted(self._types)}>"

    def has(self, type_: str) -> bool:
        """Whether any compiled filter is of this type (so a mode can skip parsing)."""
        return type_ in self._types

    def bpf(self) -> list[tuple[str, str]]:
        """The ``bpf`` filters as ``(id, expression)``, for the capture layer."""
        return list(self._bpf)

    def match(self, type_: str, values: Iterable[Value]) -> set[str]:
        """Ids of the filters of ``type_`` that match any of ``values``.

        A single ``str`` or bytes value is taken as one value. ``ip_address`` takes
        addresses as :meth:`match_ip` does; ``bpf`` matches nothing here.

        Raises:
            ValidationError: ``type_`` is not a filter type.
        """
        out: set[str] = set()
        m = self._matchers.get(type_)
        if m is None:
            if type_ not in _TYPE_SET:
                raise _unknown_type(type_)
            return out
        if isinstance(values, _ONE_VALUE):
            values = (values,)
        m.match_into(values, out)
        return out

    def keywords(self) -> KeywordMatcher | None:
        """The ``keyword`` filters' matcher (None without any), for stream scanning."""
        m = self._matchers.get("keyword")
        return m if isinstance(m, KeywordMatcher) else None

    def match_ip(self, addresses: Iterable[bytes | str]) -> set[str]:
        """Ids of the ``ip_address`` filters containing any of ``addresses``.

        Pass a packet's source and destination. Bytes-like values of 4 or 16 bytes are
        raw addresses (as a packet decoder gives them); ``str`` and other bytes are
        text (``192.0.2.1``, ``2001:db8::1``). Anything else matches nothing.
        """
        out: set[str] = set()
        m = self._matchers.get("ip_address")
        if m is not None:
            m.match_into(addresses, out)
        return out

    def match_fields(self, fields: Mapping[str, Iterable[Value]]) -> set[str]:
        """Ids of the filters matching any value of any field; the one entry point modes use.

        Keys are filter types, values the observed values of that type, e.g.
        ``{"sip_user": [from_user, to_user, ruri_user],
        "phone_number": [from_user, to_user, ruri_user], "ip_address": [src, dst]}``
        (a SIP mode passes its users under both ``sip_user`` and ``phone_number``).

        Raises:
            ValidationError: a key is not a filter type.
        """
        out: set[str] = set()
        matchers = self._matchers
        for type_, values in fields.items():
            m = matchers.get(type_)
            if m is None:
                if type_ not in _TYPE_SET:
                    raise _unknown_type(type_)
                continue
            if isinstance(values, _ONE_VALUE):
                values = (values,)
            m.match_into(values, out)
        return out


def compile_filters(
    filters: Iterable[Filter],
    hunter_id: str | None = None,
    types: Collection[str] | None = None,
) -> FilterSet:
    """Validate, select and compile filters into an immutable :class:`FilterSet`.

    Kept: enabled filters that target ``hunter_id`` (a filter with no ``hunters``
    targets every hunter; ``hunter_id=None`` keeps filters whatever they target, as a
    processor would) and whose type is in ``types`` (the types this hunter mode can
    apply; None = all). Every kept filter is validated and normalised first
    (``bpf`` without a compiler: the capture layer compiles it).

    Raises:
        ValidationError: an invalid filter (validate filters one by one with
            :func:`~lc.common.filters.validate_filter` to skip bad ones instead), two
            kept filters with the same id, or an unknown type in ``types``.
    """
    wanted: frozenset[str] | None = None
    if types is not None:
        wanted = frozenset(types)
        for t in wanted - _TYPE_SET:
            raise _unknown_type(t)
    kept: list[Filter] = []
    text: dict[str, list[tuple[str, str, str]]] = {}
    ips: list[tuple[str, tuple[int, int, int]]] = []
    phones: list[tuple[str, str]] = []
    keywords: list[tuple[str, str]] = []
    ranges: dict[str, list[tuple[str, tuple[int, int]]]] = {}
    bpf: list[tuple[str, str]] = []
    seen: set[str] = set()
    for f in filters:
        if f.enabled is False:
            continue
        if wanted is not None and isinstance(f.type, str) and f.type not in wanted:
            continue  # (a type that is not even a str is refused just below)
        p = prepare_filter(f)
        g = p.filter
        if hunter_id is not None and g.hunters and hunter_id not in g.hunters:
            continue
        if g.id in seen:
            raise ValidationError(f"filter {g.id!r}: duplicate id")
        seen.add(g.id)
        kept.append(g)
        matcher = TYPES[g.type].matcher
        if matcher == "text":
            assert isinstance(p.key, str)
            text.setdefault(g.type, []).append((g.id, p.kind, p.key))
        elif matcher == "ip":
            assert isinstance(p.key, tuple)
            ips.append((g.id, p.key))
        elif matcher == "phone":
            assert isinstance(p.key, str)
            phones.append((g.id, p.key))
        elif matcher == "keyword":
            assert isinstance(p.key, str)
            keywords.append((g.id, p.key))
        elif matcher == "range":
            assert isinstance(p.key, tuple)
            ranges.setdefault(g.type, []).append((g.id, p.key))
        elif matcher == "bpf":
            bpf.append((g.id, g.pattern))
        else:  # a new matcher kind in the table without its structure here
            raise ValidationError(f"filter {g.id!r}: type {g.type!r} has no matcher")
    matchers: dict[str, _Matcher] = {t: _TextMatcher(t, e) for t, e in text.items()}
    if ips:
        matchers["ip_address"] = _IpMatcher(ips)
    if phones:
        matchers["phone_number"] = _PhoneMatcher(phones)
    if keywords:
        matchers["keyword"] = KeywordMatcher(keywords)
    for t, r in ranges.items():
        matchers[t] = _RangeMatcher(r)
    return FilterSet(tuple(kept), matchers, bpf)
