"""Tests for lc.common.filters.engine: the semantics table, row by row, and FilterSet.

Each row of SEMANTICS is one (type, pattern, observed value, matches?) case taken
from the tables in lc.common.filters.model's docstring, run through compile_filters
and FilterSet.match, alone and among many other filters (so that the exact dict and
the automaton are both busy).
"""

from __future__ import annotations

import ipaddress

import pytest

from lc.common.errors import ValidationError
from lc.common.filters import Filter, FilterSet, compile_filters

JA3 = "e7d705a3286e19ea42f587b344ee6865"
JA4 = "t13d1516h2_8daaf6152771_e5627efa2ab1"

SEMANTICS = [
    # --- wildcard grammar (sip_user: case-sensitive, values as given)
    ("sip_user", "alice", "alice", True),
    ("sip_user", "alice", "alice2", False),  # no '*': exact, not prefix
    ("sip_user", "alice", "xalice", False),
    ("sip_user", "alice", "Alice", False),  # case-sensitive
    ("sip_user", "alice", " alice", False),  # values are compared as given
    ("sip_user", "  alice  ", "alice", True),  # patterns lose surrounding whitespace
    ("sip_user", "ali*", "alice", True),
    ("sip_user", "ali*", "ali", True),
    ("sip_user", "ali*", "xalice", False),
    ("sip_user", "*ice", "alice", True),
    ("sip_user", "*ice", "iced", False),
    ("sip_user", "*lic*", "alice", True),
    ("sip_user", "*lic*", "lic", True),
    ("sip_user", "*lic*", "li c", False),
    ("sip_user", "a\\*b", "a*b", True),  # \* is a literal star
    ("sip_user", "a\\*b", "axb", False),
    ("sip_user", "\\*", "*", True),
    ("sip_user", "\\*", "x", False),
    ("sip_user", "*\\*", "star*", True),
    ("sip_user", "*\\*", "star", False),
    ("sip_user", "\\**", "*x", True),
    ("sip_user", "\\**", "x*", False),
    ("sip_user", "a\\b", "a\\b", True),  # other backslashes are ordinary
    ("sip_user", "a\\\\*", "a\\bc", True),  # \\ is a literal backslash
    ("sip_user", "a\\\\*", "abc", False),
    ("sip_user", "jürgen*", "jürgen.k", True),
    ("sip_user", "+4930*", "+49301234567", True),
    # --- case-sensitive types
    ("call_id", "abc@host", "abc@host", True),
    ("call_id", "abc@host", "ABC@host", False),
    ("call_id", "*@host", "a84b4c76e66710@host", True),
    ("http_url", "/login*", "/login?user=x", True),
    ("http_url", "/Login*", "/login", False),
    ("http_url", "*.php", "/index.php", True),
    # --- case-insensitive types
    ("sip_uri", "sip:alice@example.com", "SIP:Alice@Example.COM", True),
    ("sip_uri", "*@example.com", "sip:bob@EXAMPLE.com", True),
    ("sip_uri", "sip:alice@example.com", "sip:alice@example.com;transport=tcp", False),
    ("codec", "opus", "OPUS", True),
    ("codec", "G729*", "g729a", True),
    ("codec", "pcmu", "pcma", False),
    ("email_address", "alice@example.com", "Alice@Example.COM", True),
    ("email_address", "*@example.com", "bob@example.com", True),
    ("email_address", "*@example.com", "bob@example.com.evil", False),
    ("email_subject", "*invoice*", "Your INVOICE is ready", True),
    ("email_subject", "urgent*", "URGENT: pay now", True),
    ("email_subject", "hello", "hello world", False),
    ("email_subject", "straße", "STRASSE", True),  # full case folding
    # --- names: one trailing dot dropped
    ("dns_domain", "example.com", "EXAMPLE.com.", True),
    ("dns_domain", "example.com.", "example.com", True),
    ("dns_domain", "example.com", "www.example.com", False),
    ("dns_domain", "*.example.com", "www.example.com", True),
    ("dns_domain", "*.example.com", "www.example.com.", True),
    ("dns_domain", "*.example.com", "example.com", False),
    ("dns_domain", "*example.com", "badexample.com", True),
    ("dns_domain", "www.*", "www.example.org", True),
    ("dns_domain", "*.example.*", "a.example.net", True),
    ("tls_sni", "*.Example.org", "api.example.org.", True),
    ("tls_sni", "api.example.org", "api.example.org.evil", False),
    # --- http_host: port, then one trailing dot, dropped
    ("http_host", "example.com", "example.com:8080", True),
    ("http_host", "example.com:8080", "example.com", True),
    ("http_host", "example.com:8080", "example.com:443", True),  # ports are ignored
    ("http_host", "example.com", "EXAMPLE.COM.:443", True),
    ("http_host", "[2001:db8::1]", "[2001:db8::1]:443", True),
    ("http_host", "*.example.com", "a.example.com:80", True),
    ("http_host", "example.com", "example.community", False),
    # --- TLS fingerprints: lowercase hex, JA3 exact only, JA4 with wildcards
    ("tls_ja3", JA3, JA3.upper(), True),
    ("tls_ja3", JA3, JA3[:-1] + "0", False),
    ("tls_ja3s", JA3.upper(), JA3, True),
    ("tls_ja4", JA4, JA4.upper(), True),
    ("tls_ja4", JA4, JA4[:-1] + "2", False),
    ("tls_ja4", "t13d1516h2_8daaf6152771_*", "t13d1516h2_8daaf6152771_b0da82dd1658", True),
    ("tls_ja4", "t13d1516h2_8daaf6152771_*", "t13d1517h2_8daaf6152771_b0da82dd1658", False),
    ("tls_ja4", "*_e5627efa2ab1", "t13d1517h2_8daaf6152771_e5627efa2ab1", True),
    ("tls_ja4", "*_8daaf6152771_*", "q13d0312h3_8daaf6152771_aaaaaaaaaaaa", True),
    # --- ip_address: source or destination inside
    ("ip_address", "10.0.0.0/8", "10.1.2.3", True),
    ("ip_address", "10.0.0.0/8", "11.0.0.1", False),
    ("ip_address", "192.0.2.1", "192.0.2.1", True),
    ("ip_address", "192.0.2.1", "192.0.2.2", False),
    ("ip_address", "2001:db8::/32", "2001:db8:1::5", True),
    ("ip_address", "2001:db8::/32", "2001:db9::5", False),
    ("ip_address", "10.0.0.0/8", "::ffff:10.0.0.1", False),  # mapped IPv6 is not IPv4
    ("ip_address", "0.0.0.0/0", "203.0.113.9", True),
    ("ip_address", "0.0.0.0/0", "2001:db8::1", False),
    ("ip_address", "10.0.0.0/8", "not an address", False),
    # --- phone_number: digits, suffix of at least 7 either way
    ("phone_number", "+49 30 1234567", "030 1234567", True),
    ("phone_number", "+49 30 1234567", "0049301234567", True),
    ("phone_number", "030 1234567", "+49 30 1234567", True),
    ("phone_number", "+49 30 1234567", "1234567", True),
    ("phone_number", "+49 30 1234567", "234567", False),  # 6 digits: too short
    ("phone_number", "+49 30 1234567", "+49 30 1234568", False),
    ("phone_number", "+49 30 1234567", "sip:+49-30-1234567@example.com;user=phone", True),
    ("phone_number", "tel:+1-212-555-0100;ext=1", "+12125550100", True),
    ("phone_number", "tel:+1-212-555-0100;ext=1", "011 1 212 555 0100", True),
    ("phone_number", "sip:00441234567890@example.com", "+44 1234 567890", True),
    ("phone_number", "sip:00441234567890@example.com", "01234 567890", True),
    ("phone_number", "+49 30 1234567", "alice", False),  # names never match
    ("phone_number", "+49 30 1234567", "1234567alice", False),
]

# Other filters of every kind, so that a row is matched among neighbours.
NEIGHBOURS = [
    Filter("n1", "sip_user", "bob"),
    Filter("n2", "sip_user", "zed*"),
    Filter("n3", "sip_user", "*zork"),
    Filter("n4", "sip_user", "*qqq*"),
    Filter("n5", "dns_domain", "*.invalid"),
    Filter("n6", "ip_address", "198.51.100.0/24"),
    Filter("n7", "phone_number", "+81 3 9876 5432"),
    Filter("n8", "email_subject", "*lottery*"),
    Filter("n9", "tls_ja4", "q*"),
]


def _match(fs: FilterSet, type_: str, value: str) -> set[str]:
    if type_ == "ip_address":
        return fs.match_ip([value, "fd00::99"])  # an address no row's filter holds
    return fs.match(type_, [value])


@pytest.mark.parametrize(("type_", "pattern", "value", "expected"), SEMANTICS)
def test_semantics(type_: str, pattern: str, value: str, expected: bool) -> None:
    target = Filter("t", type_, pattern)
    for fs in (compile_filters([target]), compile_filters([*NEIGHBOURS, target])):
        assert ("t" in _match(fs, type_, value)) is expected
        assert ("t" in fs.match_fields({type_: [value]})) is expected
    # Bytes (UTF-8) are the same values.
    fs = compile_filters([target])
    if type_ != "ip_address":
        assert ("t" in fs.match(type_, [value.encode()])) is expected


def test_cidr_matches_source_or_destination() -> None:
    fs = compile_filters(
        [
            Filter("v4", "ip_address", "10.0.0.0/8"),
            Filter("host", "ip_address", "192.0.2.1"),
            Filter("v6", "ip_address", "2001:db8::/32"),
            Filter("v6host", "ip_address", "2001:db8::1"),
        ]
    )
    ten = ipaddress.ip_address("10.1.2.3").packed
    other = ipaddress.ip_address("8.8.8.8").packed
    assert fs.match_ip([ten, other]) == {"v4"}  # as source
    assert fs.match_ip([other, ten]) == {"v4"}  # as destination
    assert fs.match_ip([other, other]) == set()
    assert fs.match_ip([ten, bytes([192, 0, 2, 1])]) == {"v4", "host"}
    v6 = ipaddress.ip_address("2001:db8::1").packed
    assert fs.match_ip([other, v6]) == {"v6", "v6host"}
    assert fs.match_ip(["2001:db8::2", "10.255.255.255"]) == {"v6", "v4"}
    assert fs.match_ip([memoryview(ten), bytearray(v6)]) == {"v4", "v6", "v6host"}
    assert fs.match_ip([b"10.9.9.9"]) == {"v4"}  # other bytes are text
    assert fs.match_ip([b"\x0a\x00", b"", "", "::ffff:10.0.0.1", "bogus"]) == set()
    assert fs.match("ip_address", [ten]) == {"v4"}


def test_disabled_filters_are_kept_out() -> None:
    fs = compile_filters(
        [Filter("on", "sip_user", "alice"), Filter("off", "sip_user", "alice", enabled=False)]
    )
    assert fs.ids == frozenset({"on"})
    assert fs.match("sip_user", ["alice"]) == {"on"}


def test_targeting_by_hunter() -> None:
    filters = [
        Filter("all", "sip_user", "alice"),
        Filter("h1", "sip_user", "alice", hunters=("h1",)),
        Filter("h12", "sip_user", "alice", hunters=(" h1", "h2")),
        Filter("h3", "sip_user", "alice", hunters=("h3",)),
    ]
    assert compile_filters(filters, hunter_id="h1").ids == {"all", "h1", "h12"}
    assert compile_filters(filters, hunter_id="h2").ids == {"all", "h12"}
    assert compile_filters(filters, hunter_id="h9").ids == {"all"}
    assert compile_filters(filters).ids == {"all", "h1", "h12", "h3"}  # processor view


def test_targeting_by_types() -> None:
    filters = [
        Filter("u", "sip_user", "alice"),
        Filter("d", "dns_domain", "example.com"),
        Filter("b", "bpf", "udp port 53"),
    ]
    fs = compile_filters(filters, types={"dns_domain", "bpf"})
    assert fs.ids == {"d", "b"}
    assert not fs.has("sip_user") and fs.has("dns_domain") and fs.has("bpf")
    assert fs.match("sip_user", ["alice"]) == set()
    assert compile_filters(filters, types=()).ids == frozenset()
    with pytest.raises(ValidationError) as exc:
        compile_filters(filters, types=["sip_usr"])
    assert str(exc.value).startswith("unknown filter type 'sip_usr'; known types: bpf, ")


def test_filterset_api() -> None:
    filters = [
        Filter("b1", "bpf", " udp port 5060 "),
        Filter("d1", "dns_domain", "*.Example.COM"),
        Filter("b2", "bpf", "tcp port 80"),
    ]
    fs = compile_filters(filters)
    assert len(fs) == 3
    assert fs.ids == frozenset({"b1", "d1", "b2"})
    assert fs.bpf() == [("b1", "udp port 5060"), ("b2", "tcp port 80")]
    assert [f.pattern for f in fs.filters] == ["udp port 5060", "*.example.com", "tcp port 80"]
    assert fs.match("bpf", ["anything"]) == set()  # BPF is libpcap's job
    assert fs.match("dns_domain", "www.example.com") == {"d1"}  # one value alone
    assert fs.match("dns_domain", (v for v in ["x", "a.example.com"])) == {"d1"}
    assert fs.match("dns_domain", []) == set()
    assert fs.match("codec", ["opus"]) == set()  # no filters of that type
    empty = compile_filters([])
    assert len(empty) == 0 and empty.match_fields({"sip_user": ["a"]}) == set()
    assert empty.match_ip([b"\x00\x00\x00\x00"]) == set()
    with pytest.raises(ValidationError) as exc:
        fs.match("sip_usr", ["x"])
    assert str(exc.value).startswith("unknown filter type 'sip_usr'; known types: ")


def test_match_fields_is_the_union() -> None:
    fs = compile_filters(
        [
            Filter("u", "sip_user", "alice"),
            Filter("p", "phone_number", "+49 30 1234567"),
            Filter("n", "ip_address", "10.0.0.0/8"),
            Filter("c", "codec", "opus"),
        ]
    )
    fields = {
        "sip_user": ["bob", "alice", "0301234567"],
        "phone_number": ["bob", "alice", "0301234567"],
        "ip_address": [b"\x0a\x00\x00\x01", b"\x08\x08\x08\x08"],
        "bpf": [],
        "codec": ["PCMU"],
    }
    assert fs.match_fields(fields) == {"u", "p", "n"}
    assert fs.match_fields({}) == set()
    with pytest.raises(ValidationError):
        fs.match_fields({"sip_users": ["alice"]})


def test_undecodable_bytes_and_separators_in_values() -> None:
    fs = compile_filters(
        [
            Filter("e", "sip_user", "foo"),
            Filter("p", "sip_user", "foo*"),
            Filter("s", "sip_user", "*foo"),
            Filter("c", "email_subject", "*foo*"),
        ]
    )
    # A NUL (the engine's separator) inside a value must not forge a value boundary:
    # "x\0foo" ends with foo but neither equals nor starts with it.
    assert fs.match("sip_user", ["x\x00foo"]) == {"s"}
    assert fs.match("sip_user", ["foo\x00x"]) == {"p"}
    assert fs.match("sip_user", ["foo\x00"]) == {"p"}
    assert fs.match("sip_user", ["\x00foo\x00"]) == set()
    assert fs.match("sip_user", ["\x00", "foo"]) == {"e", "p", "s"}
    assert fs.match("sip_user", [b"\xff\xfefoo"]) == {"s"}
    assert fs.match("sip_user", [b"foo\xff"]) == {"p"}
    assert fs.match("email_subject", [b"\xc3(\x00FOO\x00"]) == {"c"}


def test_compile_refuses_invalid_and_duplicate_filters() -> None:
    with pytest.raises(ValidationError) as exc:
        compile_filters([Filter("a", "sip_user", "a*b")])
    assert str(exc.value) == (
        "filter 'a': sip_user pattern 'a*b' may have '*' only at the start and/or end "
        "(write \\* for a literal star)"
    )
    with pytest.raises(ValidationError) as exc:
        compile_filters([Filter("a", "sip_user", "x"), Filter("a", "codec", "opus")])
    assert str(exc.value) == "filter 'a': duplicate id"
    # Disabled filters and filters of other types are left out before they are checked.
    fs = compile_filters(
        [
            Filter("a", "sip_user", "a*b", enabled=False),
            Filter("b", "sip_user", "x"),
            Filter("c", "codec", "*"),
        ],
        types=["sip_user"],
    )
    assert fs.ids == {"b"}


def test_same_pattern_in_several_filters() -> None:
    fs = compile_filters(
        [
            Filter("a", "sip_user", "alice"),
            Filter("b", "sip_user", "alice"),
            Filter("c", "sip_user", "ali*"),
            Filter("d", "sip_user", "ali*"),
            Filter("e", "ip_address", "10.0.0.0/8"),
            Filter("f", "ip_address", "10.0.0.0/255.0.0.0"),
            Filter("g", "phone_number", "+49 30 1234567"),
            Filter("h", "phone_number", "0049301234567"),
        ]
    )
    assert fs.match("sip_user", ["alice"]) == {"a", "b", "c", "d"}
    assert fs.match_ip(["10.0.0.1"]) == {"e", "f"}
    assert fs.match("phone_number", ["030 1234567"]) == {"g", "h"}
