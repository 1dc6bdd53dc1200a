"""HTTP/1.x parsing: microseconds per transaction, lc.common.http against the alternatives.

The workload is generated keep-alive connections (20 transactions each) as a browser
and an API client make them: a GET with 10 to 14 header fields, answered with a
Content-Length body of 0.5-8 KB (30%), a chunked body (30%, 1-4 chunks) or a 304;
a POST with a 200-1500 byte form body (15%); one connection in four pipelines its
requests. Each direction is cut into 1448-byte segments, as TCP would deliver it.
The same bytes go through:

``lc``
    :class:`lc.common.http.HttpConnection` (own framing, heads parsed by llhttp through
    httptools), the examined body kept up to 64 KiB, plus JA4H per request;
``lc, own head parser``
    the same framing with heads split by a minimal pure-Python parser (no validation:
    what "own handling" would cost at the least);
``httptools streaming``
    one llhttp parser per direction doing everything, callbacks collecting the URL,
    header fields and body. The lower bound, but not a passive observer: it cannot be
    told that a response answers HEAD, and it cannot say where to resume after an
    error (see the module docstring of lc.common.http).

With ``../shared/corpus`` present, the corpus HTTP connections are timed too. Figures
are the best CPU time of ``--runs`` runs (CPU time: the development machine is shared);
the script prints them and asserts nothing.

    .venv/bin/python bench/http_parse_bench.py [--connections N] [--runs K]

Measured on the development VM (2 vCPU shared by four engineers, load average 5,
CPython 3.11.7, httptools 0.9.0, best CPU time of 7 runs), generated workload, per
transaction (request and response, 3.3 segments on average):

    lc (llhttp heads) + JA4H   47 us     lc (llhttp heads)      34 us
    lc, own head parser        32 us     httptools streaming     5 us

The corpus connections cost the same per transaction (37-41 us). Decision: lc frames
messages itself (HEAD, 1xx/204/304, pipelining, resynchronisation need byte offsets,
which httptools does not give) and lets llhttp parse each head: a minimal Python head
parser is no faster once the framing is paid, and it validates nothing.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httptools

import lc.common.http as lch
from lc.common.http import HttpConnection, HttpRequest, HttpResponse, HttpTransaction
from lc.common.ja4h import ja4h_request

MSS = 1448
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def _segments(blob: bytes) -> list[bytes]:
    return [blob[i : i + MSS] for i in range(0, len(blob), MSS)]


def make_connection(rnd: random.Random, n: int = 20) -> tuple[list[tuple[bool, bytes]], int]:
    """One connection's segments in capture order, and its transaction count."""
    reqs: list[bytes] = []
    resps: list[bytes] = []
    for i in range(n):
        path = f"/static/{rnd.choice(['css', 'js', 'img', 'api'])}/item{rnd.randint(1, 9999)}"
        headers = [
            f"Host: www{rnd.randint(1, 3)}.example.com",
            f"User-Agent: {UA}",
            "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "Accept-Language: en-US,en;q=0.5",
            "Accept-Encoding: gzip, deflate, br",
            "Connection: keep-alive",
            f"Referer: https://www.example.com/page{rnd.randint(1, 50)}",
            f"Cookie: sid={rnd.getrandbits(64):016x}; theme=dark; _ga={rnd.randint(1, 10**9)}",
            "Sec-Fetch-Dest: document",
            "Sec-Fetch-Mode: navigate",
        ][: rnd.randint(9, 10)]
        if rnd.random() < 0.5:
            headers += ["Upgrade-Insecure-Requests: 1", "Pragma: no-cache", "DNT: 1"]
        roll = rnd.random()
        if roll < 0.15:
            body = ("a=1&b=" + "x" * rnd.randint(200, 1500)).encode()
            head = f"POST {path} HTTP/1.1\r\n" + "\r\n".join(headers)
            head += "\r\nContent-Type: application/x-www-form-urlencoded"
            head += f"\r\nContent-Length: {len(body)}"
            reqs.append(head.encode() + b"\r\n\r\n" + body)
        else:
            reqs.append(
                (f"GET {path}?v={i} HTTP/1.1\r\n" + "\r\n".join(headers)).encode() + b"\r\n\r\n"
            )
        server = (
            "Server: nginx\r\nDate: Mon, 01 Jan 2029 00:00:00 GMT\r\nCache-Control: max-age=60\r\n"
        )
        roll = rnd.random()
        if roll < 0.3:
            body = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(500, 8000)))
            head = f"HTTP/1.1 200 OK\r\n{server}Content-Type: image/png\r\n"
            resps.append(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        elif roll < 0.6:
            chunks = b""
            for _ in range(rnd.randint(1, 4)):
                part = b"<p>" + b"y" * rnd.randint(100, 3000) + b"</p>"
                chunks += b"%x\r\n%s\r\n" % (len(part), part)
            resps.append(
                f"HTTP/1.1 200 OK\r\n{server}Content-Type: text/html; charset=utf-8\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode()
                + chunks
                + b"0\r\n\r\n"
            )
        else:
            resps.append(f'HTTP/1.1 304 Not Modified\r\n{server}ETag: "abc"\r\n\r\n'.encode())
    out: list[tuple[bool, bytes]] = []
    if rnd.random() < 0.25:  # pipelined: all requests, then all responses
        out += [(True, s) for s in _segments(b"".join(reqs))]
        out += [(False, s) for s in _segments(b"".join(resps))]
    else:
        for rq, rs in zip(reqs, resps, strict=True):
            out += [(True, s) for s in _segments(rq)]
            out += [(False, s) for s in _segments(rs)]
    return out, n


def corpus_connections() -> list[tuple[list[tuple[bool, bytes]], int]]:
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    try:
        from tests.common.test_http_corpus import CORPUS, FILES, run_capture
    except ImportError:
        return []
    out = []
    for capture, _ in FILES:
        if (CORPUS / capture).is_file():
            for conn in run_capture(CORPUS / capture).conns:
                n = sum(1 for _, e in conn.events if isinstance(e, HttpTransaction))
                if n and not conn.midstream:
                    out.append(([(c, d) for c, d, _ in conn.chunks], n))
    return out


# --- the contenders ---------------------------------------------------------------------
def run_lc(conns: list[tuple[list[tuple[bool, bytes]], int]], with_ja4h: bool = True) -> int:
    done = 0
    for segments, _n in conns:
        c = HttpConnection()
        fc, fs = c.feed_client, c.feed_server
        ts = 0
        for from_client, seg in segments:
            ts += 1000
            for e in fc(seg, ts) if from_client else fs(seg, ts):
                if type(e) is HttpTransaction:
                    done += 1
                elif with_ja4h:
                    ja4h_request(e)
        done += len(c.close(ts))
    return done


def _py_fields(lines: list[bytes]) -> tuple[list[tuple[bytes, bytes]], lch._Fields]:
    raw = [(n, v) for n, _, v in (line.partition(b":") for line in lines)]
    return raw, lch._Fields(raw)


def _py_request(head: bytes, ts_ns: int) -> tuple[HttpRequest, tuple]:
    """A minimal request-head parser: no validation at all."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    method, target, version = lines[0].split(b" ")
    raw, f = _py_fields(lines[1:])
    req = HttpRequest(version[5:].decode(), raw, ts_ns, head, f.ctype)
    req.method = method.decode()
    req.target = target.decode("utf-8", "surrogateescape")
    req._split = None
    req.host = lch._strip_port(f.hosts[0].decode()) if f.hosts else ""
    req._ua, req._referer = f.ua, f.referer
    req._emitted = False
    req._ja4h = None
    return req, lch._framing(f)


def _py_response(head: bytes, ts_ns: int) -> tuple[HttpResponse, tuple]:
    """A minimal response-head parser: no validation at all."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    version, status, reason = [*lines[0].split(b" ", 2), b""][:3]
    raw, f = _py_fields(lines[1:])
    resp = HttpResponse(version[5:].decode(), raw, ts_ns, head, f.ctype)
    resp.status = int(status)
    resp.reason = reason.decode()
    return resp, lch._framing(f)


def run_lc_own_heads(conns: list[tuple[list[tuple[bool, bytes]], int]]) -> int:
    saved = lch._parse_request, lch._parse_response
    lch._parse_request, lch._parse_response = _py_request, _py_response
    try:
        return run_lc(conns, with_ja4h=False)
    finally:
        lch._parse_request, lch._parse_response = saved


class _Proto:
    __slots__ = ("body", "done", "headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = 0
        self.done = 0

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        self.done += 1
        self.headers = []


def run_httptools(conns: list[tuple[list[tuple[bool, bytes]], int]]) -> int:
    done = 0
    for segments, _n in conns:
        pc, ps = _Proto(), _Proto()
        rq, rs = httptools.HttpRequestParser(pc), httptools.HttpResponseParser(ps)
        for from_client, seg in segments:
            (rq if from_client else rs).feed_data(seg)
        done += ps.done
    return done


def best(fn: Callable[[], int], runs: int) -> tuple[float, int]:
    """Best CPU time of ``runs`` runs (CPU time, as the machine is shared: time spent
    waiting for a core is not the parser's)."""
    times = []
    count = 0
    for _ in range(runs):
        gc.collect()
        t0 = time.process_time()
        count = fn()
        times.append(time.process_time() - t0)
    return min(times), count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=100, help="generated connections")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    workloads = {"generated": [make_connection(rnd) for _ in range(args.connections)]}
    corpus = corpus_connections()
    if corpus:
        workloads["corpus"] = corpus
    for name, conns in workloads.items():
        n_tx = sum(n for _, n in conns)
        n_seg = sum(len(s) for s, _ in conns)
        n_bytes = sum(len(d) for s, _ in conns for _, d in s)
        print(f"{name}: {len(conns)} connections, {n_tx} transactions,", end=" ")
        print(f"{n_seg} segments, {n_bytes} bytes")
        for label, fn in (
            ("lc (llhttp heads) + JA4H", lambda c=conns: run_lc(c)),
            ("lc (llhttp heads)", lambda c=conns: run_lc(c, with_ja4h=False)),
            ("lc, own head parser", lambda c=conns: run_lc_own_heads(c)),
            ("httptools streaming", lambda c=conns: run_httptools(c)),
        ):
            t, count = best(fn, args.runs)
            print(
                f"  {label:26s} {t * 1e6 / n_tx:7.1f} us/transaction"
                f"  {t * 1e6 / n_seg:6.2f} us/segment  ({count} transactions seen)"
            )


if __name__ == "__main__":
    main()
