"""The plain-head parser of lc.common.http against llhttp: for every head it takes, the
request or response it makes is the one llhttp's path makes (the same error too), and
heads outside its rule go to llhttp. Hypothesis builds heads near the rule's edges
(odd methods and target bytes, versions, blanks, empty values, obs-fold, bare LF,
Content-Length and Transfer-Encoding variants)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lc.common import http
from lc.common.http import HttpError

_METHODS = st.sampled_from(
    [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"get",
     b"PROPFIND", b"BREW", b"G\xc3\xa9T"]
)  # fmt: skip
_TARGET_BYTES = b"/abcAZ09._~:?#[]@!$&'()*+,;=%-\"<>\\^`{|} \t\x7f\x80\xff"
_TARGETS = st.one_of(
    st.sampled_from(
        [b"/", b"*", b"/a/b?c=d&e=f#g", b"http://h.example:8080/p?q", b"h.example:443"]
    ),
    st.binary(min_size=1, max_size=20).map(
        lambda b: bytes(_TARGET_BYTES[x % len(_TARGET_BYTES)] for x in b)
    ),
)
_VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/1.1 "])
_NAMES = st.sampled_from(
    [b"Host", b"host", b"HOST", b"User-Agent", b"Referer", b"Content-Type", b"Content-Length",
     b"content-length", b"Transfer-Encoding", b"Accept", b"X-A", b"Cookie", b"Connection",
     b"Upgrade", b"Expect", b"Bad Name", b"", b"X\x7f"]
)  # fmt: skip
_VALUE_BYTES = b"aZ09 \t/.,;:=\"'()<>?@[]\\{}*-+%!#$&|~^`\x7f\x80\xc3\xa9\x00"
_VALUES = st.one_of(
    st.sampled_from([b"x.example", b"x.example:80", b"[::1]:8", b"chunked", b"Chunked",
                     b"gzip, chunked", b"chunked, gzip", b"5", b"005", b"1, 1", b" 7 ", b"-1",
                     b"1234567890123456789", b"12a", b"text/html; charset=x", b"", b"  ",
                     b"close", b"upgrade", b"websocket", b"100-continue"]),
    st.binary(max_size=12).map(lambda b: bytes(_VALUE_BYTES[x % len(_VALUE_BYTES)] for x in b)),
)  # fmt: skip
_EOL = st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r\n "])
_FIELDS = st.lists(st.tuples(_NAMES, st.sampled_from([b": ", b":", b":  ", b" : "]), _VALUES,
                             st.sampled_from([b"", b" ", b"\t"]), _EOL), max_size=8)  # fmt: skip


def _fields(fields) -> bytes:
    return b"".join(n + sep + v + trail + eol for n, sep, v, trail, eol in fields)


def _outcome(parse, head: bytes):
    try:
        m, framing = parse(head, 7)
    except HttpError:
        return "error"
    common = (m.version, m.headers, m.content_type, m.head, m.ts_ns, framing)
    if isinstance(m, http.HttpRequest):
        return (*common, m.method, m.target, m.host, m.user_agent, m.referrer, m.path, m.query,
                m.defects, m._ja4h, m._emitted)  # fmt: skip
    return (*common, m.status, m.reason, m.defects)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(_METHODS, _TARGETS, _VERSIONS, _EOL, _FIELDS, _EOL)
def test_plain_requests_parse_as_llhttp_parses_them(method, target, version, eol1, fields, end):
    head = method + b" " + target + b" " + version + eol1 + _fields(fields) + end
    assert _outcome(http._parse_request, head) == _outcome(http._llhttp_request, head)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2"]),
    st.sampled_from([b"200", b"404", b"100", b"101", b"204", b"099", b"600", b"2000", b"20"]),
    st.sampled_from([b" OK", b" Not Found", b"", b" ", b" OK ", b" a\tb", b" \xc3\xa9", b" x\x7f"]),
    _EOL,
    _FIELDS,
    _EOL,
)
def test_plain_responses_parse_as_llhttp_parses_them(version, code, reason, eol1, fields, end):
    head = version + b" " + code + reason + eol1 + _fields(fields) + end
    assert _outcome(http._parse_response, head) == _outcome(http._llhttp_response, head)


def test_the_plain_path_takes_the_common_heads():
    """The bench's heads take the plain path (not llhttp): the point of it."""
    req = (
        b"POST /app/1/item2?q=3 HTTP/1.1\r\nHost: www1.example.com\r\nUser-Agent: bench/1.0 (lc)"
        b"\r\nAccept: */*\r\nCookie: a=b; c=d\r\nContent-Type: application/x-www-form-urlencoded"
        b"\r\nContent-Length: 1500\r\n\r\n"
    )
    assert http._fast_request(req) is not None
    assert _outcome(http._parse_request, req) == _outcome(http._llhttp_request, req)
    resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert http._FAST_STATUS_LINE.match(resp) is not None
    assert http._fast_fields(resp, resp.index(b"\r\n") + 2, "1.1") is not None
    assert _outcome(http._parse_response, resp) == _outcome(http._llhttp_response, resp)


# Heads inside the plain rule, or one step outside it: most take the plain path.
_PLAIN_NAME = st.sampled_from(
    [b"Host", b"host", b"User-Agent", b"Referer", b"Content-Type", b"Content-Length",
     b"Transfer-Encoding", b"Accept", b"X-Forwarded-For", b"Cookie", b"Connection", b"Upgrade",
     b"Expect", b"a!#$%&'*+.^_`|~-z"]
)  # fmt: skip
_PLAIN_VALUE = st.one_of(
    st.sampled_from([b"chunked", b"5", b"0", b"18", b"123456789012345678", b"1234567890123456789",
                     b"x.example", b"[::1]:80", b"keep-alive, Upgrade", b"websocket", b"5, 5",
                     b"text/plain", b"https://r.example/x?y"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=30)
    .map(lambda t: t.strip().encode() or b"v"),
)  # fmt: skip
_PLAIN_TARGET = st.one_of(
    st.text("abcXYZ019._~:/?#[]@!$&'()*+,;=%-", min_size=1, max_size=30).map(
        lambda t: b"/" + t.encode()
    ),
    st.sampled_from([b"*", b"http://a.example/x", b"a.example:443", b"/%zz", b"/a b",
                     b"/\xc3\xa9"]),
)  # fmt: skip
_PLAIN_FIELDS = st.lists(
    st.tuples(_PLAIN_NAME, st.sampled_from([b": ", b":", b":\t"]), _PLAIN_VALUE,
              st.sampled_from([b"", b"", b" ", b"\t "]), st.just(b"\r\n")),
    max_size=10,
)  # fmt: skip


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from(
        [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT"]
    ),
    _PLAIN_TARGET,
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    _PLAIN_FIELDS,
)
def test_near_plain_requests_parse_as_llhttp_parses_them(method, target, version, fields):
    head = method + b" " + target + b" " + version + b"\r\n" + _fields(fields) + b"\r\n"
    assert _outcome(http._parse_request, head) == _outcome(http._llhttp_request, head)


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    st.sampled_from([b"200", b"404", b"100", b"101", b"204", b"304", b"500", b"599"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=20),
    _PLAIN_FIELDS,
)
def test_near_plain_responses_parse_as_llhttp_parses_them(version, code, reason, fields):
    head = version + b" " + code + b" " + reason.encode() + b"\r\n" + _fields(fields) + b"\r\n"
    assert _outcome(http._parse_response, head) == _outcome(http._llhttp_response, head)
