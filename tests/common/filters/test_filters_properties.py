"""Property tests (hypothesis) for lc.common.filters.

The compiled engine is compared with slow reference matchers written here from the
documented rules (normalise, then ==, startswith, endswith or ``in``), the CIDR engine
with :mod:`ipaddress` membership, the phone engine with the suffix rule, and phone
normalisation with a regex version of its steps. Validation and parsing must never let
anything but ValidationError out.
"""

from __future__ import annotations

import ipaddress
import re

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lc.common.errors import ValidationError
from lc.common.filters import (
    FILTER_TYPES,
    MIN_PHONE_DIGITS,
    Filter,
    compile_filters,
    normalise_phone,
    parse_filters,
    validate_filter,
)

HYP = settings(
    deadline=None,  # the machine is shared: nothing here is timed
    max_examples=120,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# ----------------------------------------------------------------------------- reference

CASE_SENSITIVE = {"sip_user", "call_id", "http_url"}
CASELESS = {"sip_uri", "codec", "dns_domain", "http_host", "tls_sni", "email_address"}
CASELESS |= {"email_subject"}
WILDCARD_TYPES = sorted(CASE_SENSITIVE | CASELESS)


def ref_parse(pattern: str) -> tuple[str, str]:
    """(kind, core) of an accepted pattern, by the grammar in the model docstring."""
    tokens = re.findall(r"\\[*\\]|.", pattern.strip(), re.DOTALL)
    lead = tokens[0] == "*"
    trail = len(tokens) > 1 and tokens[-1] == "*"
    core_tokens = tokens[int(lead) : len(tokens) - int(trail)]
    assert "*" not in core_tokens
    core = "".join(t[-1] for t in core_tokens)
    kind = {
        (False, False): "exact",
        (False, True): "prefix",
        (True, False): "suffix",
        (True, True): "contains",
    }
    return kind[lead, trail], core


def ref_normalise(type_: str, s: str, end_anchored: bool) -> str:
    if type_ in CASELESS or type_.startswith("tls_"):
        s = s.casefold()
    if end_anchored and type_ == "http_host":
        if s.startswith("["):
            if "]" in s:
                s = s[: s.index("]") + 1]
        elif s.count(":") == 1:
            host, port = s.split(":")
            if port == "" or re.fullmatch(r"[0-9]+", port):
                s = host
    if end_anchored and type_ in ("dns_domain", "tls_sni", "http_host"):
        s = s.removesuffix(".")
    return s


def ref_text_match(type_: str, pattern: str, value: str) -> bool:
    kind, core = ref_parse(pattern)
    core = ref_normalise(type_, core, kind in ("exact", "suffix"))
    v = ref_normalise(type_, value, True)
    if kind == "exact":
        return v == core
    if kind == "prefix":
        return v.startswith(core)
    if kind == "suffix":
        return v.endswith(core)
    return core in v


def ref_phone_digits(s: str) -> str | None:
    s = s.strip()
    s = re.sub(r"^<", "", s)
    s = re.sub(r"^(?i:tel|sips|sip):", "", s)
    s = re.split(r"[@]", s)[0]
    s = re.split(r"[;?>]", s)[0]
    s = re.sub(r"[ \t\-.()/]", "", s)
    s = re.sub(r"^\+", "", s)
    s = re.sub(r"^(00|011)", "", s)
    s = re.sub(r"^0", "", s)
    return s if re.fullmatch(r"[0-9]+", s) else None


def ref_phone_match(a: str, b: str) -> bool:
    da, db = ref_phone_digits(a), ref_phone_digits(b)
    if da is None or db is None:
        return False
    short, long_ = sorted((da, db), key=len)
    return da == db or (len(short) >= MIN_PHONE_DIGITS and long_.endswith(short))


def accepted(filters: list[Filter]) -> list[Filter]:
    out = []
    for f in filters:
        try:
            validate_filter(f)
        except ValidationError:
            continue
        out.append(f)
    return out


# ----------------------------------------------------------------------------- text types

# Small alphabets so that patterns and values collide often; with the characters the
# rules care about: '*', backslash, '.', ':', brackets, space, case pairs, NUL (the
# engine's separator), 'ß' (folds to "ss") and final sigma.
CORE_TOKENS = [*"ab.:1[]Aß Σς-", "\\*", "\\\\", "\\"]
VALUE_CHARS = "ab.:*\\ 1[]ABßSsΣσς\x00"


@st.composite
def wildcard_pattern(draw: st.DrawFn) -> str:
    """Mostly well-formed patterns of every kind, sometimes any text (often refused)."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(VALUE_CHARS.replace("\x00", ""), min_size=1, max_size=6))
    core = "".join(draw(st.lists(st.sampled_from(CORE_TOKENS), min_size=1, max_size=5)))
    return ("*" if draw(st.booleans()) else "") + core + ("*" if draw(st.booleans()) else "")


@st.composite
def text_case(draw: st.DrawFn) -> tuple[str, list[Filter], list[str]]:
    type_ = draw(st.sampled_from(WILDCARD_TYPES))
    patterns = draw(st.lists(wildcard_pattern(), max_size=8))
    filters = [Filter(f"f{i}", type_, p) for i, p in enumerate(patterns)]
    # The literal text of each pattern, to build values that hit it.
    pieces = [re.sub(r"\\([*\\])", r"\1", p.strip().strip("*")) for p in patterns] or ["a"]
    values = draw(
        st.lists(
            st.one_of(
                st.text(VALUE_CHARS, max_size=8),
                st.builds(
                    lambda a, p, b, up: (a + p + b).upper() if up else a + p + b,
                    st.text(VALUE_CHARS, max_size=2),
                    st.sampled_from(pieces),
                    st.text(VALUE_CHARS, max_size=2),
                    st.booleans(),
                ),
                st.sampled_from(pieces),
            ),
            max_size=6,
        )
    )
    return type_, filters, values


@HYP
@given(text_case())
def test_text_engine_agrees_with_reference(case: tuple[str, list[Filter], list[str]]) -> None:
    type_, filters, values = case
    good = accepted(filters)
    fs = compile_filters(good)
    expected = {f.id for f in good if any(ref_text_match(type_, f.pattern, v) for v in values)}
    assert fs.match(type_, values) == expected
    assert fs.match_fields({type_: values}) == expected
    # One value at a time gives the same union; bytes the same as str.
    assert set().union(*(fs.match(type_, [v]) for v in values)) == expected
    assert fs.match(type_, [v.encode("utf-8", "surrogateescape") for v in values]) == expected


@HYP
@given(text_case())
def test_normalised_patterns_mean_the_same(case: tuple[str, list[Filter], list[str]]) -> None:
    type_, filters, values = case
    for f in accepted(filters):
        g = validate_filter(f)
        assert validate_filter(g) == g  # idempotent
        for v in values:
            assert ref_text_match(type_, g.pattern, v) == ref_text_match(type_, f.pattern, v)


JA4_STRINGS = st.builds(
    lambda proto, ver, sni, c, e, alpn, h1, h2: f"{proto}{ver}{sni}{c:02d}{e:02d}{alpn}_{h1}_{h2}",
    st.sampled_from("tqdTQD"),
    st.sampled_from(["13", "12", "s3", "d1", "00"]),
    st.sampled_from("diDI"),
    st.integers(0, 99),
    st.integers(0, 99),
    st.sampled_from(["h2", "h1", "00", "H3"]),
    st.text("0123456789abcdefABCDEF", min_size=12, max_size=12),
    st.text("0123456789abcdefABCDEF", min_size=12, max_size=12),
)


@HYP
@given(JA4_STRINGS, st.integers(0, 36), st.integers(0, 36), st.sampled_from("xpsc"), st.data())
def test_ja4_engine_agrees_with_reference(
    ja4: str, i: int, j: int, kind: str, data: st.DataObject
) -> None:
    i, j = sorted((i, j))
    assume(j > i)
    part = ja4[i:j]
    pattern = {"x": ja4, "p": part + "*", "s": "*" + part, "c": "*" + part + "*"}[kind]
    f = Filter("j", "tls_ja4", pattern)
    try:
        validate_filter(f)
    except ValidationError:
        # Only partial patterns can be refused (a part of a JA4 always fits its shape
        # at its own place), and only when "*"-anchoring moves it off that place.
        assert kind in "ps"
        assert (kind == "p" and i > 0) or (kind == "s" and j < 36)
        return
    values = [*data.draw(st.lists(JA4_STRINGS, max_size=3)), ja4, ja4.upper()]
    fs = compile_filters([f])
    expected = {"j"} if any(ref_text_match("tls_ja4", pattern, v) for v in values) else set()
    assert fs.match("tls_ja4", values) == expected


# ----------------------------------------------------------------------------- CIDR


@st.composite
def networks(draw: st.DrawFn) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if draw(st.booleans()):
        plen = draw(st.integers(0, 32))
        addr = draw(st.integers(0, 2**32 - 1)) >> (32 - plen) << (32 - plen)
        return ipaddress.IPv4Network((addr, plen))
    plen = draw(st.integers(0, 128))
    addr = draw(st.integers(0, 2**128 - 1)) >> (128 - plen) << (128 - plen)
    return ipaddress.IPv6Network((addr, plen))


@st.composite
def addresses_near(draw: st.DrawFn, nets: list) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if nets and draw(st.booleans()):
        net = draw(st.sampled_from(nets))
        offset = draw(st.integers(-2, 2**16))
        n = (int(net.network_address) + offset) % (2**net.max_prefixlen)
        return ipaddress.ip_address(n) if net.version == 4 else ipaddress.IPv6Address(n)
    if draw(st.booleans()):
        return ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))
    return ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))


@HYP
@given(st.lists(networks(), max_size=10), st.data())
def test_cidr_engine_agrees_with_ipaddress(nets: list, data: st.DataObject) -> None:
    filters = [Filter(f"n{i}", "ip_address", str(net)) for i, net in enumerate(nets)]
    fs = compile_filters(filters)
    addrs = data.draw(st.lists(addresses_near(nets), min_size=1, max_size=3))
    expected = {
        f"n{i}"
        for i, net in enumerate(nets)
        for a in addrs
        if a.version == net.version and a in net
    }
    assert fs.match_ip([a.packed for a in addrs]) == expected
    assert fs.match_ip([str(a) for a in addrs]) == expected
    assert fs.match_fields({"ip_address": [a.packed for a in addrs]}) == expected


# ----------------------------------------------------------------------------- phone

PHONE_CHARS = "0123456789+-. ()/;@<>:telsipTELx?"


@st.composite
def phone_notation(draw: st.DrawFn, digits: str | None = None) -> str:
    """A number in one of the notations seen on the wire, or random phone-ish text."""
    if digits is None:
        digits = draw(st.text("0123456789", min_size=1, max_size=15))
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(PHONE_CHARS, max_size=20))
    prefix = draw(st.sampled_from(["", "+", "00", "011", "0", "+0", "00 "]))
    sep = draw(st.sampled_from(["", " ", "-", ".", "/"]))
    cut = draw(st.integers(0, len(digits)))
    body = prefix + digits[:cut] + sep + digits[cut:]
    scheme = draw(st.sampled_from(["", "tel:", "sip:", "SIPS:", "<sip:"]))
    tail = draw(st.sampled_from(["", ";ext=1", "@example.com", "@example.com;user=phone>", "?x"]))
    return scheme + body + tail


@HYP
@given(phone_notation())
def test_phone_normalisation_agrees_with_reference(s: str) -> None:
    assert normalise_phone(s) == ref_phone_digits(s)


@st.composite
def phone_case(draw: st.DrawFn) -> tuple[list[Filter], list[str]]:
    numbers = draw(st.lists(st.text("0123456789", min_size=6, max_size=14), max_size=6))
    filters = [
        Filter(f"p{i}", "phone_number", draw(phone_notation(n))) for i, n in enumerate(numbers)
    ]
    values = []
    for _ in range(draw(st.integers(0, 5))):
        if numbers and draw(st.integers(0, 3)) > 0:
            n = draw(st.sampled_from(numbers))
            # the same number, cut or extended at the front: suffixes of every length
            cut = draw(st.integers(0, len(n) if draw(st.booleans()) else max(0, len(n) - 7)))
            n = draw(st.text("0123456789", max_size=3)) + n[cut:]
            values.append(draw(phone_notation(n)))
        else:
            values.append(draw(phone_notation()))
    return filters, values


@HYP
@given(phone_case())
def test_phone_engine_agrees_with_suffix_rule(case: tuple[list[Filter], list[str]]) -> None:
    filters, values = case
    good = accepted(filters)
    fs = compile_filters(good)
    expected = {f.id for f in good if any(ref_phone_match(f.pattern, v) for v in values)}
    assert fs.match("phone_number", values) == expected


# ----------------------------------------------------------------------------- model

ANY_TEXT = st.text(max_size=12)


@HYP
@given(
    st.builds(
        Filter,
        id=ANY_TEXT,
        type=ANY_TEXT,
        pattern=ANY_TEXT,
        enabled=st.booleans(),
        description=ANY_TEXT,
        hunters=st.lists(ANY_TEXT, max_size=3).map(tuple),
    )
)
def test_json_round_trip(f: Filter) -> None:
    assert Filter.from_mapping(f.to_json()) == f


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=10),
    st.binary(max_size=5),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.lists(st.text(max_size=5), max_size=3).map(tuple),
)
PATTERN_TEXT = st.text("ab09.:/%*\\[]@+- \t\x00\x01é", max_size=40)


@HYP
@given(
    st.one_of(st.sampled_from(FILTER_TYPES), ANY_TEXT),
    st.one_of(PATTERN_TEXT, JUNK),
    st.one_of(st.sampled_from(["f1", "h.x-1"]), JUNK),
    JUNK,
    JUNK,
    JUNK,
)
def test_validation_raises_only_validation_error(type_, pattern, id_, enabled, desc, hunters):
    f = Filter(
        id=id_, type=type_, pattern=pattern, enabled=enabled, description=desc, hunters=hunters
    )
    try:
        compile_filters([f], hunter_id="h1", types=["sip_user", "ip_address"])
    except ValidationError:
        pass
    try:
        g = validate_filter(f)
    except ValidationError:
        return
    assert validate_filter(g) == g
    compile_filters([g])


@HYP
@given(
    st.dictionaries(
        st.one_of(
            st.sampled_from(["id", "type", "pattern", "enabled", "description", "hunters"]),
            st.one_of(st.none(), st.integers(), st.text(max_size=8)),
        ),
        st.one_of(PATTERN_TEXT, st.sampled_from(FILTER_TYPES), JUNK),
        max_size=7,
    )
)
def test_from_mapping_raises_only_validation_error(d: dict) -> None:
    try:
        validate_filter(Filter.from_mapping(d))
    except ValidationError:
        pass


@HYP
@given(st.text("-:{}[]!&*?|>'\"%@`#,. \nabtfilrsyp0123456789", max_size=60))
def test_parse_filters_raises_only_validation_error(text: str) -> None:
    try:
        parse_filters(text)
    except ValidationError:
        pass
