"""Tests for lc.common.filters.model: validation, normalisation, ids, JSON and YAML.

Every refusal is checked with its exact message, since users read them (CLI, gRPC
INVALID_ARGUMENT). Expected normal forms are written out by hand here.
"""

from __future__ import annotations

import re

import pytest

from lc.common.errors import ValidationError
from lc.common.filters import (
    FILTER_TYPES,
    MAX_PATTERN_LEN,
    Filter,
    dump_filters,
    new_filter_id,
    normalise_value,
    parse_filters,
    validate_filter,
)

JA3 = "e7d705a3286e19ea42f587b344ee6865"
JA4 = "t13d1516h2_8daaf6152771_e5627efa2ab1"
JA4_SHAPE = (
    "(like t13d1516h2_8daaf6152771_e5627efa2ab1: [tqd], 2-character version, [di], "
    "2+2 digits, 2 ALPN characters, _, 12 hex, _, 12 hex)"
)
KNOWN = (
    "bpf, ip_address, sip_user, phone_number, sip_uri, call_id, codec, dns_domain, "
    "http_host, http_url, http_method, http_status, http_user_agent, http_ja4h, "
    "tls_sni, tls_ja3, tls_ja3s, tls_ja4, tls_ja4s, email_address, email_subject, "
    "email_mailbox, email_command, keyword"
)


def _v(type_: str, pattern: str, **kw) -> Filter:
    return validate_filter(Filter(id="f1", type=type_, pattern=pattern, **kw))


def test_filter_types_are_the_documented_ones() -> None:
    assert ", ".join(FILTER_TYPES) == KNOWN
    assert len(set(FILTER_TYPES)) == len(KNOWN.split(", "))


# ----------------------------------------------------------------------------- refusals

REFUSALS = [
    # (type, pattern, exact message)
    ("nope", "x", f"filter 'f1': unknown type 'nope'; known types: {KNOWN}"),
    # a typo'd type names the nearest real one
    (
        "sip_usr",
        "x",
        f"filter 'f1': unknown type 'sip_usr' (did you mean 'sip_user'?); known types: {KNOWN}",
    ),
    ("bfp", "x", f"filter 'f1': unknown type 'bfp' (did you mean 'bpf'?); known types: {KNOWN}"),
    (
        "SIP_USER",
        "x",
        f"filter 'f1': unknown type 'SIP_USER' (did you mean 'sip_user'?); known types: {KNOWN}",
    ),
    ("sip_user", "", "filter 'f1': empty sip_user pattern"),
    ("sip_user", "   ", "filter 'f1': empty sip_user pattern"),
    ("bpf", " ", "filter 'f1': empty bpf pattern"),
    (
        "sip_user",
        "a*b",
        "filter 'f1': sip_user pattern 'a*b' may have '*' only at the start and/or end "
        "(write \\* for a literal star)",
    ),
    (
        "dns_domain",
        "**example.com",
        "filter 'f1': dns_domain pattern '**example.com' may have '*' only at the start "
        "and/or end (write \\* for a literal star)",
    ),
    (
        "call_id",
        "a\\*b*c",
        "filter 'f1': call_id pattern 'a\\\\*b*c' may have '*' only at the start and/or "
        "end (write \\* for a literal star)",
    ),
    (
        "sip_user",
        "*",
        "filter 'f1': sip_user pattern '*' is only wildcards and would match everything",
    ),
    ("codec", "**", "filter 'f1': codec pattern '**' is only wildcards and would match everything"),
    (
        "email_subject",
        "***",
        "filter 'f1': email_subject pattern '***' is only wildcards and would match everything",
    ),
    (
        "ip_address",
        "10.0.0.0/33",
        "filter 'f1': ip_address pattern '10.0.0.0/33' is not an IPv4/IPv6 address or CIDR network",
    ),
    (
        "ip_address",
        "300.1.1.1",
        "filter 'f1': ip_address pattern '300.1.1.1' is not an IPv4/IPv6 address or CIDR network",
    ),
    (
        "ip_address",
        "example.com",
        "filter 'f1': ip_address pattern 'example.com' is not an IPv4/IPv6 address or CIDR network",
    ),
    (
        "ip_address",
        "10.1.2.3/8",
        "filter 'f1': ip_address pattern '10.1.2.3/8' has host bits set (did you mean 10.0.0.0/8?)",
    ),
    (
        "ip_address",
        "2001:db8::1/32",
        "filter 'f1': ip_address pattern '2001:db8::1/32' has host bits set (did you mean "
        "2001:db8::/32?)",
    ),
    (
        "ip_address",
        "fe80::1%eth0",
        "filter 'f1': ip_address pattern 'fe80::1%eth0' is not an IPv4/IPv6 address or CIDR "
        "network (zone ids are not allowed)",
    ),
    (
        "ip_address",
        "10.*",
        "filter 'f1': ip_address pattern '10.*' is not an IPv4/IPv6 address or CIDR network "
        "(wildcards are not allowed; use a CIDR such as 10.0.0.0/8)",
    ),
    (
        "tls_ja3",
        "abc",
        "filter 'f1': tls_ja3 pattern 'abc' must be exactly 32 hex digits (an MD5 digest; "
        "wildcards are not allowed)",
    ),
    (
        "tls_ja3s",
        JA3 + "0",
        f"filter 'f1': tls_ja3s pattern '{JA3}0' must be exactly 32 hex digits (an MD5 "
        "digest; wildcards are not allowed)",
    ),
    (
        "tls_ja3",
        "e7d705a3*",
        "filter 'f1': tls_ja3 pattern 'e7d705a3*' must be exactly 32 hex digits (an MD5 "
        "digest; wildcards are not allowed)",
    ),
    (
        "tls_ja3",
        "g" * 32,
        f"filter 'f1': tls_ja3 pattern '{'g' * 32}' must be exactly 32 hex digits (an MD5 "
        "digest; wildcards are not allowed)",
    ),
    (
        "tls_ja4",
        "t13d1516h2_8daaf6152771",
        f"filter 'f1': tls_ja4 pattern 't13d1516h2_8daaf6152771' is not a JA4 fingerprint "
        f"{JA4_SHAPE}",
    ),
    (
        "tls_ja4",
        "x13d1516h2_8daaf6152771_e5627efa2ab1",
        "filter 'f1': tls_ja4 pattern 'x13d1516h2_8daaf6152771_e5627efa2ab1' is not a JA4 "
        f"fingerprint {JA4_SHAPE}",
    ),
    (
        "tls_ja4",
        "t13x1516h2_8daaf6152771_e5627efa2ab1",
        "filter 'f1': tls_ja4 pattern 't13x1516h2_8daaf6152771_e5627efa2ab1' is not a JA4 "
        f"fingerprint {JA4_SHAPE}",
    ),
    (
        "tls_ja4",
        "t13d1516h2_8daaf615277z_e5627efa2ab1",
        "filter 'f1': tls_ja4 pattern 't13d1516h2_8daaf615277z_e5627efa2ab1' is not a JA4 "
        f"fingerprint {JA4_SHAPE}",
    ),
    (
        "tls_ja4",
        "x13d*",
        f"filter 'f1': tls_ja4 pattern 'x13d*' does not fit the JA4 shape {JA4_SHAPE}",
    ),
    (
        "tls_ja4",
        "*_e5627efa2ab1_",
        f"filter 'f1': tls_ja4 pattern '*_e5627efa2ab1_' does not fit the JA4 shape {JA4_SHAPE}",
    ),
    (
        "tls_ja4",
        "*zzz*",
        f"filter 'f1': tls_ja4 pattern '*zzz*' does not fit the JA4 shape {JA4_SHAPE}",
    ),
    (
        "phone_number",
        "12345",
        "filter 'f1': phone_number pattern '12345' has 5 digits once normalised; at least 7 "
        "are needed",
    ),
    (
        "phone_number",
        "+49 30 12",
        "filter 'f1': phone_number pattern '+49 30 12' has 6 digits once normalised; at least "
        "7 are needed",
    ),
    ("phone_number", "alice", "filter 'f1': phone_number pattern 'alice' is not a phone number"),
    (
        "phone_number",
        "+49 30 12x4567",
        "filter 'f1': phone_number pattern '+49 30 12x4567' is not a phone number",
    ),
    (
        "phone_number",
        "4930*",
        "filter 'f1': phone_number pattern '4930*' may not use '*' (phone numbers already "
        "match by suffix of at least 7 digits; use a sip_user pattern such as 4930* for "
        "number ranges)",
    ),
    (
        "sip_user",
        "a\x01b",
        "filter 'f1': sip_user pattern 'a\\x01b' contains control characters",
    ),
    (
        "email_subject",
        "a\nb",
        "filter 'f1': email_subject pattern 'a\\nb' contains control characters",
    ),
    (
        "sip_user",
        "a\udc80",
        "filter 'f1': sip_user pattern 'a\\udc80' is not valid Unicode text",
    ),
    (
        "dns_domain",
        "exa mple.com",
        "filter 'f1': dns_domain pattern 'exa mple.com' contains whitespace",
    ),
    ("call_id", "a b@host", "filter 'f1': call_id pattern 'a b@host' contains whitespace"),
    (
        "dns_domain",
        "example.com..",
        "filter 'f1': dns_domain pattern 'example.com..' is not a host name (check the "
        "trailing dots and the port)",
    ),
    (
        "http_host",
        "host:80.",
        "filter 'f1': http_host pattern 'host:80.' is not a host name (check the trailing "
        "dots and the port)",
    ),
    ("http_host", "*:8080", "filter 'f1': http_host pattern '*:8080' is empty once normalised"),
    ("tls_sni", "*.", "filter 'f1': tls_sni pattern '*.' is empty once normalised"),
    (
        "sip_user",
        "a" * (MAX_PATTERN_LEN + 1),
        "filter 'f1': sip_user pattern is 1025 characters (at most 1024)",
    ),
]


@pytest.mark.parametrize(("type_", "pattern", "message"), REFUSALS)
def test_refusals_have_exact_messages(type_: str, pattern: str, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        _v(type_, pattern)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("f", "message"),
    [
        (
            Filter(id="bad id", type="sip_user", pattern="x"),
            "invalid filter id 'bad id': use 1-128 characters from A-Z a-z 0-9 . _ : -",
        ),
        (
            Filter(id="", type="sip_user", pattern="x"),
            "invalid filter id '': use 1-128 characters from A-Z a-z 0-9 . _ : -",
        ),
        (
            Filter(id="x" * 129, type="sip_user", pattern="x"),
            # the repr is cut at 60 characters
            "invalid filter id '" + "x" * 56 + "...: use 1-128 characters from A-Z a-z 0-9 . _ : -",
        ),
        (
            Filter(id=7, type="sip_user", pattern="x"),  # type: ignore[arg-type]
            "invalid filter id 7: use 1-128 characters from A-Z a-z 0-9 . _ : -",
        ),
        (
            Filter(id="f1", type="sip_user", pattern="x", hunters=("h1", "no way")),
            "filter 'f1': invalid hunter id 'no way': use 1-64 characters from A-Z a-z 0-9 . _ -",
        ),
        (
            Filter(id="f1", type="sip_user", pattern="x", hunters=("..",)),
            "filter 'f1': invalid hunter id '..': use 1-64 characters from A-Z a-z 0-9 . _ -",
        ),
        (
            Filter(id="f1", type="sip_user", pattern="x", hunters=["h1"]),  # type: ignore[arg-type]
            "filter 'f1': hunters must be a tuple of hunter ids",
        ),
        (
            Filter(id="f1", type="sip_user", pattern=5),  # type: ignore[arg-type]
            "filter 'f1': pattern must be a string, not int",
        ),
        (
            Filter(id="f1", type="sip_user", pattern="x", enabled=1),  # type: ignore[arg-type]
            "filter 'f1': enabled must be true or false, not 1",
        ),
        (
            Filter(id="f1", type="sip_user", pattern="x", description=None),  # type: ignore[arg-type]
            "filter 'f1': description must be a string, not NoneType",
        ),
        (
            Filter(id="f1", type="sip_user", pattern="x", description="d" * 1025),
            "filter 'f1': description is 1025 characters (at most 1024)",
        ),
    ],
)
def test_refused_fields(f: Filter, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_filter(f)
    assert str(exc.value) == message


def test_bpf_is_checked_by_the_callers_compiler() -> None:
    seen: list[str] = []

    def check(expr: str) -> None:
        seen.append(expr)
        if "bogus" in expr:
            raise ValidationError(f"invalid BPF expression {expr!r}: syntax error")

    f = Filter(id="b1", type="bpf", pattern=" udp port 5060 ")
    assert validate_filter(f, check).pattern == "udp port 5060"
    with pytest.raises(ValidationError) as exc:
        validate_filter(Filter(id="b2", type="bpf", pattern="bogus"), check)
    assert str(exc.value) == "invalid BPF expression 'bogus': syntax error"  # as it came
    assert seen == ["udp port 5060", "bogus"]
    # Without a compiler only emptiness is checked; '*' is BPF arithmetic, not a wildcard.
    assert validate_filter(Filter(id="b3", type="bpf", pattern="len * 2 > 100")).pattern == (
        "len * 2 > 100"
    )


# ----------------------------------------------------------------------------- normal forms

NORMAL_FORMS = [
    # (type, pattern as written, pattern once validated)
    ("sip_user", "  Alice*  ", "Alice*"),
    ("sip_user", "a\\*b", "a\\*b"),
    ("sip_user", "\\*", "\\*"),
    ("sip_user", "a\\b", "a\\b"),
    ("sip_user", "a\\\\*", "a\\\\*"),
    ("sip_user", "*\\*", "*\\*"),
    ("call_id", "ABC@Host", "ABC@Host"),
    ("http_url", "/Login*", "/Login*"),
    ("sip_uri", "SIP:Alice@Example.COM", "sip:alice@example.com"),
    ("codec", "OPUS", "opus"),
    ("dns_domain", "*.Example.COM.", "*.example.com"),
    ("dns_domain", "Example.com.", "example.com"),
    ("dns_domain", "WWW.*", "www.*"),
    ("dns_domain", "*.example.*", "*.example.*"),
    ("tls_sni", "API.Example.org.", "api.example.org"),
    ("http_host", "Example.com:8080", "example.com"),
    ("http_host", "example.com.:443", "example.com"),
    ("http_host", "[2001:DB8::1]:443", "[2001:db8::1]"),
    ("http_host", "*.example.com:80", "*.example.com"),
    ("email_address", "Alice@Example.COM", "alice@example.com"),
    ("email_subject", "*Invoice*", "*invoice*"),
    ("tls_ja3", JA3.upper(), JA3),
    ("tls_ja3s", JA3.upper(), JA3),
    ("tls_ja4", JA4.upper(), JA4),
    ("tls_ja4", "T13D1516H2_8DAAF6152771_*", "t13d1516h2_8daaf6152771_*"),
    ("tls_ja4", "*_E5627EFA2AB1", "*_e5627efa2ab1"),
    ("tls_ja4", "*1516h2*", "*1516h2*"),
    ("ip_address", "10.0.0.0/8", "10.0.0.0/8"),
    ("ip_address", " 192.0.2.1 ", "192.0.2.1"),
    ("ip_address", "192.0.2.1/32", "192.0.2.1"),
    ("ip_address", "10.0.0.0/255.0.0.0", "10.0.0.0/8"),
    ("ip_address", "0.0.0.0/0", "0.0.0.0/0"),
    ("ip_address", "2001:DB8:0:0::/32", "2001:db8::/32"),
    ("ip_address", "2001:db8::1/128", "2001:db8::1"),
    ("ip_address", "::ffff:192.0.2.1", "::ffff:c000:201"),
    ("phone_number", " +49 30 1234567 ", "+49 30 1234567"),
    ("phone_number", "tel:+1-212-555-0100;ext=1", "tel:+1-212-555-0100;ext=1"),
    ("bpf", "udp port 5060", "udp port 5060"),
]


@pytest.mark.parametrize(("type_", "pattern", "normal"), NORMAL_FORMS)
def test_normal_forms(type_: str, pattern: str, normal: str) -> None:
    f = _v(type_, pattern)
    assert f.pattern == normal
    assert validate_filter(f) == f  # idempotent


def test_validation_keeps_the_other_fields_and_tidies_hunters() -> None:
    f = Filter(
        id="f-1:a.b_c",
        type="sip_user",
        pattern=" bob ",
        enabled=False,
        description="watch bob",
        hunters=(" h1", "h1", "h2"),
    )
    assert validate_filter(f) == Filter(
        id="f-1:a.b_c",
        type="sip_user",
        pattern="bob",
        enabled=False,
        description="watch bob",
        hunters=("h1", "h2"),
    )
    g = Filter(id="f2", type="sip_user", pattern="bob")
    assert validate_filter(g) is g  # nothing to change: the same object


def test_hunter_id_rule_is_the_certificates_rule() -> None:
    from lc.common.credentials import validate_id

    samples = ["h1", "sensor-1.example", "a_b", ".", "..", "a b", "x" * 64, "x" * 65, "é", "a:b"]
    for s in samples:
        try:
            validate_id(s)
            ok = True
        except ValidationError:
            ok = False
        f = Filter(id="f1", type="sip_user", pattern="x", hunters=(s,))
        try:
            validate_filter(f)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == ok, s


def test_normalise_value() -> None:
    assert normalise_value("sip_user", " Alice ") == " Alice "  # values are taken as given
    assert normalise_value("dns_domain", "WWW.Example.COM.") == "www.example.com"
    assert normalise_value("http_host", "Example.com:8080") == "example.com"
    assert normalise_value("http_host", "[::1]:80") == "[::1]"
    assert normalise_value("http_host", "2001:db8::1") == "2001:db8::1"  # bare IPv6: no port
    assert normalise_value("email_subject", "STRASSE") == "strasse"
    assert normalise_value("email_subject", "Straße") == "strasse"  # full case folding
    with pytest.raises(ValidationError) as exc:
        normalise_value("ip_address", "10.0.0.1")
    assert str(exc.value) == "'ip_address' is not a text filter type"


# ----------------------------------------------------------------------------- ids


def test_new_filter_id() -> None:
    ids = {new_filter_id() for _ in range(2000)}
    assert len(ids) == 2000
    for i in ids:
        assert re.fullmatch(r"f-[0-9a-f]{12}", i)
        validate_filter(Filter(id=i, type="sip_user", pattern="x"))


# ----------------------------------------------------------------------------- JSON / YAML


def test_to_json_and_back() -> None:
    f = Filter("f1", "sip_user", "alice*", False, "note", ("h1", "h2"))
    d = f.to_json()
    assert d == {
        "id": "f1",
        "type": "sip_user",
        "pattern": "alice*",
        "enabled": False,
        "description": "note",
        "hunters": ["h1", "h2"],
    }
    assert list(d) == ["id", "type", "pattern", "enabled", "description", "hunters"]
    assert Filter.from_mapping(d) == f


def test_from_mapping_defaults_and_hunter_forms() -> None:
    assert Filter.from_mapping({"id": "f1", "type": "codec", "pattern": "opus"}) == Filter(
        "f1", "codec", "opus"
    )
    base = {"id": "f1", "type": "codec", "pattern": "opus"}
    assert Filter.from_mapping({**base, "hunters": "h1, h2,,h3 "}).hunters == ("h1", "h2", "h3")
    assert Filter.from_mapping({**base, "hunters": ""}).hunters == ()
    assert Filter.from_mapping({**base, "hunters": None}).hunters == ()
    assert Filter.from_mapping({**base, "hunters": ("h1",)}).hunters == ("h1",)
    assert Filter.from_mapping({**base, "description": None}).description == ""


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ([1, 2], "filter: expected a mapping, got list"),
        (
            {"id": "f1", "type": "codec", "pattern": "opus", "color": 1, "size": 2},
            "filter 'f1': unknown keys 'color', 'size' (known: id, type, pattern, enabled, "
            "description, hunters)",
        ),
        (
            {"type": "codec", "pattern": "opus", "colour": 1},
            "filter: unknown key 'colour' (known: id, type, pattern, enabled, description, "
            "hunters)",
        ),
        ({"id": "f1", "type": "codec"}, "filter 'f1': missing key 'pattern'"),
        ({"type": "codec", "pattern": "x"}, "filter: missing key 'id'"),
        # lc set filter -f leaves the id empty for the processor to generate: no `filter ''`
        ({"id": "", "type": "codec"}, "filter: missing key 'pattern'"),
        (
            {"id": "", "type": "codec", "pattern": "x", "enabled": "yes"},
            "filter: enabled must be true or false, not 'yes'",
        ),
        (
            {"id": "f1", "type": "phone_number", "pattern": 4930123456},
            "filter 'f1': pattern must be a string, not int (quote it in YAML)",
        ),
        (
            {"id": 42, "type": "codec", "pattern": "x"},
            "filter 42: id must be a string, not int (quote it in YAML)",
        ),
        (
            {"id": "f1", "type": "codec", "pattern": "x", "enabled": "yes"},
            "filter 'f1': enabled must be true or false, not 'yes'",
        ),
        (
            {"id": "f1", "type": "codec", "pattern": "x", "description": 3},
            "filter 'f1': description must be a string, not int",
        ),
        (
            {"id": "f1", "type": "codec", "pattern": "x", "hunters": [1]},
            "filter 'f1': hunters must be a list of hunter ids or a comma-separated string",
        ),
    ],
)
def test_from_mapping_refusals(d: object, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Filter.from_mapping(d)  # type: ignore[arg-type]
    assert str(exc.value) == message


YAML_DOC = """\
filters:
  - id: watch-alice
    type: sip_user
    pattern: "alice*"
    description: the usual suspect
    hunters: h1, h2
  - id: net
    type: ip_address
    pattern: 10.0.0.0/255.0.0.0
    enabled: false
  - {id: ja3, type: tls_ja3, pattern: E7D705A3286E19EA42F587B344EE6865}
"""


def test_parse_filters_yaml_validates_and_normalises() -> None:
    fs = parse_filters(YAML_DOC)
    assert fs == [
        Filter("watch-alice", "sip_user", "alice*", True, "the usual suspect", ("h1", "h2")),
        Filter("net", "ip_address", "10.0.0.0/8", False),
        Filter("ja3", "tls_ja3", JA3),
    ]
    assert parse_filters(dump_filters(fs)) == fs
    # A bare list and JSON are read too; an empty document holds no filters.
    assert parse_filters('[{"id": "a", "type": "codec", "pattern": "OPUS"}]') == [
        Filter("a", "codec", "opus")
    ]
    assert parse_filters("") == []
    assert parse_filters("filters:\n") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "- id: a\n  type: sip_user\n  pattern: *alice\n",
            "filters: invalid YAML at line 3: found undefined alias 'alice' (quote patterns "
            "that start with '*' or contain ': ')",
        ),
        ("filters: 3\n", "filters: expected a list of filters, got int"),
        ("other: []\n", "filters: expected a list, or a mapping with one key 'filters'"),
        ("- 3\n", "filters[0]: expected a mapping, got int"),
        (
            "- {id: a, type: codec, pattern: opus}\n- {id: a, type: codec, pattern: pcmu}\n",
            "filter 'a': duplicate id",
        ),
        (
            "- {id: a, type: codec, pattern: '*'}\n",
            "filter 'a': codec pattern '*' is only wildcards and would match everything",
        ),
    ],
)
def test_parse_filters_refusals(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_filters(text)
    assert str(exc.value) == message
