"""One place per filter type (model.TYPES), and the keyword type."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lc.common.errors import ValidationError
from lc.common.filters import TYPES, Filter, compile_filters, validate_filter
from lc.common.filters.model import MIN_KEYWORD_BYTES


def _v(type_: str, pattern: str) -> Filter:
    return validate_filter(Filter(id="f1", type=type_, pattern=pattern))


@pytest.mark.parametrize("name", list(TYPES))
def test_each_row_says_how_its_type_is_matched(name: str) -> None:
    ft = TYPES[name]
    assert ft.name == name
    assert ft.matcher in ("text", "ip", "phone", "keyword", "range", "bpf")
    assert ft.case in ("sensitive", "insensitive", "n/a")
    assert ft.modes, f"{name}: no mode applies it"
    if ft.matcher == "text":
        word = "t13d" if name == "tls_ja4" else "abc"  # a start JA4's shape allows
        if ft.wildcards:
            assert _v(name, f"{word}*").pattern == f"{word}*"
        else:
            with pytest.raises(ValidationError):
                _v(name, f"{word}*")
        if ft.no_spaces:
            with pytest.raises(ValidationError, match="whitespace"):
                _v(name, "a b")
        if ft.case == "insensitive" and ft.wildcards:
            assert _v(name, f"{word.upper()}*").pattern == f"{word}*"
        if ft.case == "sensitive":
            assert _v(name, "Abc*").pattern == "Abc*"


def test_an_unknown_type_is_refused_everywhere_never_taken_for_bpf() -> None:
    typo = Filter(id="x", type="bfp", pattern="udp port 53")
    with pytest.raises(ValidationError, match="unknown type 'bfp'"):
        validate_filter(typo)
    with pytest.raises(ValidationError, match="unknown type 'bfp'"):
        compile_filters([typo])
    with pytest.raises(ValidationError, match="unknown filter type"):
        compile_filters([], types=["bfp"])
    fs = compile_filters([Filter(id="b", type="bpf", pattern="udp")])
    assert fs.bpf() == [("b", "udp")]
    with pytest.raises(ValidationError, match="unknown filter type"):
        fs.match("bfp", ["x"])


def test_keyword_patterns_are_literal_byte_strings_of_three_bytes_or_more() -> None:
    assert _v("keyword", "  Password ").pattern == "password"
    assert _v("keyword", r"SELECT \*").pattern == r"select \*"
    assert _v("keyword", "Ärger").pattern == "Ärger"  # only ASCII letters are lowered
    for bad, why in (("*pass*", "may not use"), ("pa*ss", "may not use"), ("ab", "3 are")):
        with pytest.raises(ValidationError, match=why):
            _v("keyword", bad)
    assert MIN_KEYWORD_BYTES == 3
    assert _v("keyword", "äb").pattern == "äb"  # 3 bytes in UTF-8


def test_keywords_match_case_insensitively_anywhere_in_bytes() -> None:
    fs = compile_filters(
        [
            Filter(id="pw", type="keyword", pattern="password"),
            Filter(id="star", type="keyword", pattern=r"select \*"),
            Filter(id="umlaut", type="keyword", pattern="Ärger"),
        ]
    )
    assert fs.match("keyword", [b"POST /login\r\n\r\nuser=a&PassWord=b"]) == {"pw"}
    assert fs.match("keyword", [b"\xff\x00select *from t"]) == {"star"}
    assert fs.match("keyword", ["viel Ärger".encode()]) == {"umlaut"}
    assert fs.match("keyword", ["viel ärger".encode()]) == set()  # bytes, not Unicode
    assert fs.match("keyword", [b"pass word", b"selec t *"]) == set()
    assert fs.match_fields({"keyword": [memoryview(b"..password..")]}) == {"pw"}


def test_a_keyword_split_across_segments_is_found_in_the_piece_that_completes_it() -> None:
    fs = compile_filters([Filter(id="k", type="keyword", pattern="secret-token")])
    km = fs.keywords()
    assert km is not None and compile_filters([]).keywords() is None
    s = km.stream()
    assert s.feed(b"GET /?q=sec") == set()
    assert s.feed(b"RET-") == set()
    assert s.feed(b"TOKEN&x=1") == {"k"}
    assert s.feed(b" more bytes") == set()  # reported once, not again
    assert s.feed(b"secret-token") == {"k"}  # a second occurrence is a new match


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"abc", b"ABCD", b"bcd", b"x", b"\xff", b"c"]), max_size=20),
    st.lists(st.integers(0, 60), max_size=8),
)
def test_streaming_finds_exactly_what_a_scan_of_the_whole_stream_finds(parts, cuts) -> None:
    fs = compile_filters(
        [
            Filter(id="abcd", type="keyword", pattern="abcd"),
            Filter(id="bcab", type="keyword", pattern="bcab"),
            Filter(id="cxc", type="keyword", pattern="c\\xc"),  # a literal backslash
        ]
    )
    data = b"".join(parts)
    pieces, last = [], 0
    for c in sorted(min(c, len(data)) for c in cuts):
        pieces.append(data[last:c])
        last = c
    pieces.append(data[last:])
    s = fs.keywords().stream()  # type: ignore[union-attr]
    found: set[str] = set()
    for p in pieces:
        found |= s.feed(p)
    assert found == fs.match("keyword", [data])


def test_http_status_patterns_are_a_code_a_class_or_a_range() -> None:
    assert _v("http_status", " 404 ").pattern == "404"
    assert _v("http_status", "4XX").pattern == "4xx"
    assert _v("http_status", "500-599").pattern == "500-599"
    assert _v("http_status", "404-404").pattern == "404"
    for bad in ("4x4", "40", "1000", "099", "599-500", "5xx-6xx", "*", "4*"):
        with pytest.raises(ValidationError, match="http_status"):
            _v("http_status", bad)


def test_http_status_matches_codes_classes_and_ranges() -> None:
    fs = compile_filters(
        [
            Filter(id="nf", type="http_status", pattern="404"),
            Filter(id="c4", type="http_status", pattern="4xx"),
            Filter(id="r5", type="http_status", pattern="500-503"),
        ]
    )
    assert fs.match_fields({"http_status": (404,)}) == {"nf", "c4"}
    assert fs.match_fields({"http_status": (499,)}) == {"c4"}
    assert fs.match_fields({"http_status": (503,)}) == {"r5"}
    assert fs.match_fields({"http_status": (504,)}) == set()
    assert fs.match_fields({"http_status": (200, 500)}) == {"r5"}
    assert fs.match_fields({"http_status": ("junk", None)}) == set()  # never raises


def test_http_text_types_match_method_agent_and_ja4h() -> None:
    fs = compile_filters(
        [
            Filter(id="m", type="http_method", pattern="post"),
            Filter(id="ua", type="http_user_agent", pattern="*curl/*"),
            Filter(id="j", type="http_ja4h", pattern="ge11nn05enus_*"),
        ]
    )
    assert fs.match_fields({"http_method": ("POST",)}) == {"m"}
    assert fs.match_fields({"http_user_agent": ("Curl/8.5.0",)}) == {"ua"}
    assert fs.match_fields({"http_user_agent": ("libcurl 8",)}) == set()
    assert fs.match_fields({"http_ja4h": ("GE11NN05ENUS_abc_def_ghi",)}) == {"j"}
