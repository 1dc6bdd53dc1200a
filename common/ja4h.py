"""JA4H, FoxIO's HTTP client fingerprint, computed from one HTTP/1.x request.

Written from FoxIO's description of JA4H (technical_details/JA4H.md and its figure in
FoxIO-LLC/ja4) and checked against the reference values their tools give for the
corpus captures (``tests/common/test_ja4h.py``). JA4H is licensed by FoxIO under the
FoxIO License 1.1, which does not allow monetisation without their OEM licence.

``JA4H = a_b_c_d``:

``a`` (12 characters)
    the method's first two letters, lower case (``ge``, ``po``, ``he``...); the
    version without its dot (``11``, ``10``); ``c`` if the request has a Cookie header,
    else ``n``; ``r`` if it has a Referer header, else ``n``; the number of header
    fields other than Cookie and Referer, two digits, at most 99; the first four
    characters of the primary Accept-Language (the first language of the first such
    field, parameters dropped, hyphens removed, lower case), padded with ``0``, or
    ``0000`` without one.
``b``
    the first 12 hex digits of the SHA-256 of the header field names (as sent, in wire
    order, Cookie and Referer left out) joined by commas.
``c``
    the same hash of the cookie names, sorted, joined by commas.
``d``
    the same hash of the cookies (``name=value``, or the bare name), sorted by name
    and then value, joined by commas.

A hash of nothing (no headers, no cookies) is ``000000000000``. Cookies are the
``;``-separated items of every Cookie field, blanks around them removed, empty items
skipped. Where FoxIO's two tools disagree on inputs the corpus does not exercise,
this follows the Rust tool, except for Accept-Language, where a ``;q=`` parameter
directly after the first language is dropped (as the Python tool does: it is not
part of the language). Names and values are hashed as the bytes that were sent.

The raw forms (``ja4h_r``: the lists in clear, cookies sorted; ``ja4h_ro``: cookies in
wire order) help to see why two fingerprints differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lc.common.http import HttpRequest

__all__ = ["ja4h", "ja4h_r", "ja4h_request", "ja4h_ro"]

_EMPTY_HASH = "000000000000"


def _hash12(text: bytes) -> str:
    return sha256(text).hexdigest()[:12] if text else _EMPTY_HASH


def _language(value: bytes) -> str:
    lang = value.decode("utf-8", "replace").strip()
    for sep in (",", ";"):
        lang = lang.split(sep, 1)[0]
    lang = lang.strip().replace("-", "").lower()[:4]
    return lang + "0" * (4 - len(lang))


def _parts(
    method: str, version: str, headers: Sequence[tuple[bytes, bytes]]
) -> tuple[str, list[bytes], list[tuple[bytes, bytes]]]:
    """``(a, header names, cookies as (name, item))``; cookies in wire order."""
    names = [n for n, _ in headers]
    lowers = [n.lower() for n in names]
    has_cookie = b"cookie" in lowers
    has_referer = b"referer" in lowers
    cookies: list[tuple[bytes, bytes]] = []
    if has_cookie or has_referer:
        kept = []
        for (name, value), lower in zip(headers, lowers, strict=True):
            if lower == b"cookie":
                for item in value.split(b";"):
                    item = item.strip(b" \t")
                    if item:
                        cookies.append((item.split(b"=", 1)[0].strip(b" \t"), item))
            elif lower != b"referer":
                kept.append(name)
        names = kept
    language = "0000"
    if b"accept-language" in lowers:
        language = _language(headers[lowers.index(b"accept-language")][1])
    a = (
        f"{method[:2].lower()}{version.replace('.', '')[:2]}"
        f"{'c' if has_cookie else 'n'}{'r' if has_referer else 'n'}"
        f"{min(len(names), 99):02d}{language}"
    )
    return a, names, cookies


def ja4h(method: str, version: str, headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The JA4H of a request given its method, version (``"1.1"``) and header fields."""
    a, names, cookies = _parts(method, version, headers)
    cookies.sort(key=lambda c: (c[0], c[1]))
    return (
        f"{a}_{_hash12(b','.join(names))}"
        f"_{_hash12(b','.join(n for n, _ in cookies))}"
        f"_{_hash12(b','.join(item for _, item in cookies))}"
    )


def _raw(a: str, names: list[bytes], cookies: list[tuple[bytes, bytes]]) -> str:
    out = f"{a}_{b','.join(names).decode('utf-8', 'surrogateescape')}_"
    if cookies:
        out += (
            f"{b','.join(n for n, _ in cookies).decode('utf-8', 'surrogateescape')}"
            f"_{b','.join(i for _, i in cookies).decode('utf-8', 'surrogateescape')}"
        )
    return out


def ja4h_r(method: str, version: str, headers: Sequence[tuple[bytes, bytes]]) -> str:
    """JA4H with the lists in clear (cookies sorted): what the hashes are made of."""
    a, names, cookies = _parts(method, version, headers)
    cookies.sort(key=lambda c: (c[0], c[1]))
    return _raw(a, names, cookies)


def ja4h_ro(method: str, version: str, headers: Sequence[tuple[bytes, bytes]]) -> str:
    """Like :func:`ja4h_r`, with the cookies in the order they were sent."""
    a, names, cookies = _parts(method, version, headers)
    return _raw(a, names, cookies)


def ja4h_request(request: HttpRequest) -> str:
    """The JA4H of an :class:`lc.common.http.HttpRequest` (computed once per request:
    a filter and the transaction's event both ask)."""
    value = getattr(request, "_ja4h", None)
    if value is None:
        value = ja4h(request.method, request.version, request.headers)
        request._ja4h = value
    return value
