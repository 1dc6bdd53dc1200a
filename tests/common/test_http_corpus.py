"""lc.common.http against tshark, Zeek and Arkime, on the public capture corpus.

Every capture in ``../shared/corpus/http/`` and the HTTP in ``mixed/`` is decoded with
:func:`lc.common.decode.decode_packet`, each TCP direction is reassembled by
:class:`lc.common.tcpstream.TcpReassembler` and fed to one :class:`HttpConnection` per
connection, with the frame number as the timestamp, so that every event says which
frame completed it. The oracles (never regenerated with lc):

* tshark's ``.expected*.tsv`` (its MANIFEST): the same requests and final responses,
  completed at the same frames, in the same ``tcp.stream``, with the same fields;
  the 1xx rows are the transactions' interim statuses;
* tshark run here for more fields: the request each response answers
  (``http.request_in``), every header line in order, the Referer, chunk sizes and
  dechunked chunk data;
* Zeek's ``http.log`` (pipelining): method, host, URI, referrer, version, user agent,
  status, body lengths, order within the connection;
* Arkime's session documents: the MD5 of every body, hosts, paths, methods, statuses
  and header names.

Where lc and an oracle differ on purpose, the exception is written next to the
comparison it affects, and only there.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lc.common.decode import IPPROTO_TCP, TCP_ACK, TCP_SYN, decode_packet
from lc.common.errors import ParseError
from lc.common.http import (
    HttpConnection,
    HttpEvent,
    HttpRequest,
    HttpResponse,
    HttpTransaction,
    parse_request_head,
)
from lc.common.pcapfile import open_capture
from lc.common.tcpstream import TcpReassembler

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
IN_CI = os.environ.get("CI", "").lower() == "true"

# (capture, tshark HTTP oracle). A fixed list, so that a file that goes missing fails
# in CI instead of silently dropping out.
FILES = [
    ("http/arkime_http-100-continue.pcap", "http/arkime_http-100-continue.pcap.expected.tsv"),
    ("http/arkime_http-post-upload.pcap", "http/arkime_http-post-upload.pcap.expected.tsv"),
    (
        "http/arkime_http-wrapped-header.pcap",
        "http/arkime_http-wrapped-header.pcap.expected.tsv",
    ),
    ("http/arkime_http-xff.pcap", "http/arkime_http-xff.pcap.expected.tsv"),
    ("http/arkime_v6-http.pcap", "http/arkime_v6-http.pcap.expected.tsv"),
    ("http/ja4_http1-with-cookies.pcapng", "http/ja4_http1-with-cookies.pcapng.expected.tsv"),
    ("http/ja4_http1.pcapng", "http/ja4_http1.pcapng.expected.tsv"),
    (
        "http/zeek_http-pipelined-requests.pcap",
        "http/zeek_http-pipelined-requests.pcap.expected.tsv",
    ),
    ("mixed/ja4_latest.pcapng", "mixed/ja4_latest.pcapng.expected-http.tsv"),
    (
        "mixed/sipnab_SIP_CALL_RTP_G711.pcap",
        "mixed/sipnab_SIP_CALL_RTP_G711.pcap.expected-http.tsv",
    ),
    ("mixed/zeek_wikipedia.pcap", "mixed/zeek_wikipedia.pcap.expected-http.tsv"),
]
ARKIME_FILES = [c for c, _ in FILES if c.startswith("http/arkime_")]

# Ports on which the harness takes the side that listens as the server when it saw no
# SYN (a capture that begins mid-connection), as the mode will with --http-port.
SERVER_PORTS = {80, 8000, 8080, 8888, 3000}


def need(rel: str) -> Path:
    path = CORPUS / rel
    if not path.is_file():
        reason = f"capture corpus file not found: {path}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the corpus is required)")
        pytest.skip(reason)
    return path


def need_tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        if IN_CI:
            pytest.fail("tshark is not installed (CI=true: required)")
        pytest.skip("tshark is not installed")
    return path


# --- the harness: capture -> connections -> events ---------------------------------------
@dataclass
class Conn:
    """One TCP connection as the harness saw it."""

    index: int  # order of first appearance, which is tshark's tcp.stream here
    client: tuple[bytes, int]
    server: tuple[bytes, int]
    http: HttpConnection
    midstream: bool
    events: list[tuple[int, HttpEvent]] = field(default_factory=list)
    chunks: list[tuple[bool, bytes, int]] = field(default_factory=list)
    """What was fed: (from the client, bytes, frame number), for test_http_fuzz."""


@dataclass
class Run:
    conns: list[Conn]

    def requests(self) -> list[tuple[int, Conn, HttpRequest]]:
        return [(n, c, e) for c in self.conns for n, e in c.events if isinstance(e, HttpRequest)]

    def transactions(self) -> list[tuple[int, Conn, HttpTransaction]]:
        return [
            (n, c, e) for c in self.conns for n, e in c.events if isinstance(e, HttpTransaction)
        ]


END = 10**9  # the "frame number" of the final close


def run_capture(path: Path, max_body: int = 1 << 24, counters: dict | None = None) -> Run:
    """Feeds every TCP connection of ``path`` to its own HttpConnection."""
    reasm = TcpReassembler()
    conns: dict[tuple, Conn] = {}
    order: list[Conn] = []
    with open_capture(path) as reader:
        for number, (_ts, iface, data, _orig) in enumerate(reader.records(), 1):
            try:
                d = decode_packet(reader.interfaces[iface].linktype, data)
            except ParseError:
                continue
            if d.proto != IPPROTO_TCP or d.is_fragment:
                continue
            a, b = (d.src, d.sport), (d.dst, d.dport)
            key = (min(a, b), max(a, b))
            conn = conns.get(key)
            if conn is None:
                syn = d.tcp_flags & (TCP_SYN | TCP_ACK)
                if syn == TCP_SYN:
                    client, server = a, b
                elif syn == TCP_SYN | TCP_ACK or d.sport in SERVER_PORTS:
                    client, server = b, a
                else:
                    client, server = a, b
                h = HttpConnection(max_body, counters=counters, midstream=not syn)
                conn = Conn(len(order), client, server, h, not syn)
                conns[key] = conn
                order.append(conn)
            from_client = a == conn.client
            h = conn.http
            payload = data[d.payload_offset : d.payload_offset + d.payload_len]
            got = reasm.feed(number, (a, b), d.tcp_seq, d.tcp_flags, payload)
            events: list[HttpEvent] = []
            if got.gap:
                events += (h.gap_client if from_client else h.gap_server)(None, number)
            for _off, chunk in got.chunks:
                conn.chunks.append((from_client, chunk, number))
                events += (h.feed_client if from_client else h.feed_server)(chunk, number)
            if got.closed:
                events += (h.end_client if from_client else h.end_server)(number)
            conn.events += [(number, e) for e in events]
    for conn in order:
        conn.events += [(END, e) for e in conn.http.close(END)]
    return Run(order)


# --- tshark ------------------------------------------------------------------------------
def read_oracle(path: Path) -> list[dict[str, str]]:
    lines = path.read_bytes().decode("utf-8", "surrogateescape").split("\n")
    assert lines[0].startswith("# oracle="), f"{path}: line 1 is not the oracle comment"
    header = lines[1].split("\t")
    rows = []
    for line in lines[2:]:
        if line:
            cells = line.split("\t")
            assert len(cells) == len(header), f"{path}: {line[:80]!r}"
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


def run_tshark(path: Path, fields: list[str]) -> list[dict[str, list[str]]]:
    cmd = [need_tshark(), "-n", "-r", str(path), "-Y", "http.request || http.response"]
    cmd += ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=\x1f"]
    cmd += ["-E", "quote=n"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    rows = []
    for line in out.stdout.decode("utf-8", "surrogateescape").splitlines():
        cells = line.split("\t")
        assert len(cells) == len(fields), line[:120]
        rows.append({f: (c.split("\x1f") if c else []) for f, c in zip(fields, cells, strict=True)})
    return rows


def addr(cell: str) -> str:
    return str(ipaddress.ip_address(cell)) if cell else ""


def _ip_text(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def header_cell(msg: HttpRequest | HttpResponse, name: str) -> str:
    """tshark's cell for a header field: every occurrence, joined by its aggregator."""
    return "|".join(msg.header_all(name))


def request_cells(conn: Conn, req: HttpRequest) -> dict[str, str]:
    return {
        "src": _ip_text(conn.client[0]),
        "dst": _ip_text(conn.server[0]),
        "tcp.srcport": str(conn.client[1]),
        "tcp.dstport": str(conn.server[1]),
        "tcp.stream": str(conn.index),
        "http.request.method": req.method,
        "http.request.uri": req.target,
        "http.request.version": f"HTTP/{req.version}",
        "http.host": header_cell(req, "host"),
        "http.user_agent": header_cell(req, "user-agent"),
        "http.cookie": header_cell(req, "cookie"),
        "http.x_forwarded_for": header_cell(req, "x-forwarded-for"),
        "http.content_type": header_cell(req, "content-type"),
        "http.content_length_header": header_cell(req, "content-length"),
        "http.transfer_encoding": header_cell(req, "transfer-encoding"),
        "http.content_encoding": header_cell(req, "content-encoding"),
    }


def response_cells(conn: Conn, resp: HttpResponse) -> dict[str, str]:
    return {
        "src": _ip_text(conn.server[0]),
        "dst": _ip_text(conn.client[0]),
        "tcp.srcport": str(conn.server[1]),
        "tcp.dstport": str(conn.client[1]),
        "tcp.stream": str(conn.index),
        "http.response.version": f"HTTP/{resp.version}",
        "http.response.code": str(resp.status),
        "http.response.phrase": resp.reason,
        "http.content_type": header_cell(resp, "content-type"),
        "http.content_length_header": header_cell(resp, "content-length"),
        "http.transfer_encoding": header_cell(resp, "transfer-encoding"),
        "http.content_encoding": header_cell(resp, "content-encoding"),
    }


def tshark_row_cells(row: dict[str, str]) -> dict[str, str]:
    out = dict(row)
    out["src"] = addr(row["ip.src"] or row["ipv6.src"])
    out["dst"] = addr(row["ip.dst"] or row["ipv6.dst"])
    return out


@pytest.mark.parametrize(("capture", "oracle"), FILES, ids=[c for c, _ in FILES])
def test_messages_match_tshark_oracle(capture: str, oracle: str) -> None:
    path = need(capture)
    # SSDP (HTTP over UDP multicast, in mixed/ja4_latest) has no TCP connection: it is
    # no part of what HttpConnection observes.
    rows = [r for r in read_oracle(need(oracle)) if r["tcp.stream"]]
    run = run_capture(path)
    req_rows = {int(r["frame.number"]): r for r in rows if r["http.request.method"]}
    resp_rows = [r for r in rows if r["http.response.code"]]
    final_rows = {int(r["frame.number"]): r for r in resp_rows if r["http.response.code"][0] != "1"}
    problems: list[str] = []

    ours_req = {n: (c, r) for n, c, r in run.requests()}
    assert len(ours_req) == len(run.requests()), "two requests completed in one frame"
    assert sorted(ours_req) == sorted(req_rows), (
        f"request frames: only lc {sorted(set(ours_req) - set(req_rows))}, "
        f"only tshark {sorted(set(req_rows) - set(ours_req))}"
    )
    for number, (conn, req) in sorted(ours_req.items()):
        theirs = tshark_row_cells(req_rows[number])
        for column, value in request_cells(conn, req).items():
            if theirs[column] != value:
                problems.append(f"frame {number} {column}: tshark {theirs[column]!r}, lc {value!r}")

    ours_resp = {}
    for _n, conn, tx in run.transactions():
        if tx.response is not None:
            ours_resp[tx.response.end_ts_ns] = (conn, tx)
    assert sorted(ours_resp) == sorted(final_rows), (
        f"response frames: only lc {sorted(set(ours_resp) - set(final_rows))}, "
        f"only tshark {sorted(set(final_rows) - set(ours_resp))}"
    )
    for number, (conn, tx) in sorted(ours_resp.items()):
        theirs = tshark_row_cells(final_rows[number])
        assert tx.response is not None
        for column, value in response_cells(conn, tx.response).items():
            if theirs[column] != value:
                problems.append(f"frame {number} {column}: tshark {theirs[column]!r}, lc {value!r}")

    # Interim (1xx) responses: per connection, the same statuses in the same order.
    interim_tshark: dict[int, list[int]] = {}
    for r in resp_rows:
        if r["http.response.code"][0] == "1":
            interim_tshark.setdefault(int(r["tcp.stream"]), []).append(int(r["http.response.code"]))
    interim_ours: dict[int, list[int]] = {}
    for _n, conn, tx in run.transactions():
        if tx.interim:
            interim_ours.setdefault(conn.index, []).extend(tx.interim)
    assert interim_ours == interim_tshark
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:30])


TSHARK_MORE = [
    "frame.number",
    "tcp.stream",
    "http.request.method",
    "http.response.code",
    "http.request_in",
    "http.request.line",
    "http.response.line",
    "http.referer",
    "http.content_length",
    "http.chunk_size",
    "http.chunk_data",
]


def _fields(msg: HttpRequest | HttpResponse) -> list[tuple[str, str]]:
    return [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in msg.headers]


def _tshark_fields(lines: list[str]) -> list[tuple[str, str]]:
    """tshark's ``http.*.line`` items ("Name: value\\r\\n", CRLF escaped) as pairs."""
    out = []
    for line in lines:
        assert line.endswith("\\r\\n"), line
        name, _, value = line[:-4].partition(":")
        out.append((name, value.strip(" \t")))
    return out


@pytest.mark.parametrize(("capture", "oracle"), FILES, ids=[c for c, _ in FILES])
def test_pairing_headers_and_bodies_match_tshark(capture: str, oracle: str) -> None:
    """Which request each response answers, every header line in order, Referer, and
    body sizes and dechunked data, from tshark run here."""
    path = need(capture)
    rows = {int(r["frame.number"][0]): r for r in run_tshark(path, TSHARK_MORE) if r["tcp.stream"]}
    run = run_capture(path)
    problems: list[str] = []
    request_frame = {id(req): n for n, _c, req in run.requests()}
    checked = 0
    for _n, _conn, tx in run.transactions():
        req, resp = tx.request, tx.response
        if req is not None:
            row = rows[request_frame[id(req)]]
            if _fields(req) != _tshark_fields(row["http.request.line"]):
                problems.append(f"{req}: header fields differ: {row['http.request.line']}")
            if ([req.referrer] if req.referrer else []) != row["http.referer"]:
                problems.append(f"{req}: referer {row['http.referer']} vs {req.referrer!r}")
            checked += 1
        if resp is None:
            continue
        row = rows[resp.end_ts_ns]
        want_req = [str(request_frame[id(req)])] if req is not None else []
        if tx.interim and not row["http.request_in"]:
            # tshark 4.0 pairs the request with its 100 Continue when that comes after
            # the request is complete, and leaves the final response unpaired.
            want_req = []
        if row["http.request_in"] != want_req:
            problems.append(f"{resp}: answers {row['http.request_in']}, lc pairs {want_req}")
        if _fields(resp) != _tshark_fields(row["http.response.line"]):
            problems.append(f"{resp}: header fields differ: {row['http.response.line']}")
        if row["http.chunk_size"]:
            # tshark lists every chunk, the last (size 0) included.
            size = sum(int(s) for s in row["http.chunk_size"])
            data = bytes.fromhex("".join(row["http.chunk_data"]))
            if (resp.body_seen, resp.body) != (size, data):
                problems.append(f"{resp}: chunked body {size} bytes vs {resp.body_seen}")
        elif (
            row["http.content_length"]
            and (req is None or req.method != "HEAD")
            and [str(resp.body_seen)] != row["http.content_length"]
        ):
            problems.append(f"{resp}: body {row['http.content_length']} vs {resp.body_seen}")
        checked += 1
    assert checked > 0
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:30])


def read_zeek_log(path: Path) -> list[dict[str, str]]:
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


def test_pipelined_transactions_match_zeek() -> None:
    path = need("http/zeek_http-pipelined-requests.pcap")
    zeek = read_zeek_log(need("http/zeek_http-pipelined-requests.pcap.zeek-http.log"))
    run = run_capture(path)
    txs = [tx for _n, _c, tx in run.transactions()]
    # Five requests on one keep-alive connection. (Despite its name, on the wire each
    # request here follows the previous response; true pipelining is tested in
    # test_http.py.)
    assert len(txs) == len(zeek) == 5
    assert len(run.conns) == 1
    for depth, (tx, z) in enumerate(zip(txs, zeek, strict=True), 1):
        assert tx.request is not None and tx.response is not None
        assert int(z["trans_depth"]) == depth
        assert (tx.method, tx.host, tx.target, tx.referrer, tx.version, tx.user_agent) == (
            z["method"],
            z["host"],
            z["uri"],
            z["referrer"],
            z["version"],
            z["user_agent"],
        )
        assert (tx.status, tx.reason) == (int(z["status_code"]), z["status_msg"])
        assert tx.request.body_seen == int(z["request_body_len"])
        if tx.response.header("content-encoding") is None:
            assert tx.response.body_seen == int(z["response_body_len"])
        else:
            # Zeek counts the gunzipped body; lc counts (and keeps) the body as sent,
            # dechunked, and decodes it on request.
            assert tx.response.body_seen == int(tx.response.header("content-length") or -1)
            decoded = tx.response.decoded_body(1 << 20)
            assert decoded is not None and len(decoded) == int(z["response_body_len"])
        assert (z["id.orig_p"], z["id.resp_p"]) == ("1673", "80")


@pytest.mark.parametrize("capture", ARKIME_FILES)
def test_bodies_and_fields_match_arkime(capture: str) -> None:
    """Arkime's MD5 of every body (dechunked, as sent), hosts, paths, methods, statuses
    (interim included) and lower-cased header names."""
    path = need(capture)
    doc = json.loads(need(capture + ".arkime.json").read_text())
    run = run_capture(path)
    http = [s["body"]["http"] for s in doc["sessions3"] if "http" in s["body"]]
    assert len(http) == len(run.conns) == 1
    arkime = http[0]
    txs = [tx for _n, _c, tx in run.transactions()]
    md5s = {
        hashlib.md5(m.body).hexdigest()
        for tx in txs
        for m in (tx.request, tx.response)
        if m is not None and m.body_seen
    }
    assert md5s == set(arkime.get("md5", []))
    # Arkime lists the Host as sent and without its port.
    hosts = {h for tx in txs if tx.request for h in (tx.host, tx.request.header("host"))}
    assert hosts == set(arkime["host"])
    assert {tx.path for tx in txs} == set(arkime["path"])
    assert {tx.method for tx in txs} == set(arkime["method"])
    statuses = {s for tx in txs for s in (*tx.interim, tx.status)}
    assert statuses == set(arkime["statuscode"])
    req_names = {n.decode().lower() for tx in txs if tx.request for n, _ in tx.request.headers}
    assert req_names == set(arkime["requestHeader"])
    resp_names = {n.decode().lower() for tx in txs if tx.response for n, _ in tx.response.headers}
    assert resp_names == set(arkime["responseHeader"])


def test_request_to_ssh_server_is_unanswered() -> None:
    """A GET sent to an SSH server (mixed/zeek_get-to-ssh-server, port 22): the request
    is seen; the server's banner is not a response, so the request goes unanswered."""
    counters: dict[str, int] = {}
    run = run_capture(need("mixed/zeek_get-to-ssh-server.pcap"), counters=counters)
    txs = [tx for _n, _c, tx in run.transactions()]
    assert len(txs) == 1
    tx = txs[0]
    assert tx.request is not None and tx.response is None
    assert (tx.method, tx.target, tx.version) == ("GET", "/", "1.1")
    assert counters["unanswered"] == 1 and counters["responses"] == 0
    assert counters["gave_up"] == 1  # the banner is not a status line: server side given up
    assert counters["not_http"] == 0


def test_every_corpus_capture_parses_without_malformed_heads() -> None:
    """No head in the corpus is malformed and no chunk is bad; in http/ no direction is
    given up; the other protocols in mixed/ (POP3, MSN, Yahoo...) are not HTTP."""
    counters: dict[str, int] = {}
    for capture, _ in FILES:
        if capture.startswith("http/"):
            run_capture(need(capture), counters=counters)
    assert counters["requests"] > 60
    for name in ("malformed", "bad_chunks", "oversized_heads", "gave_up", "not_http", "resyncs"):
        assert counters[name] == 0, (name, counters)
    mixed: dict[str, int] = {}
    run = run_capture(need("mixed/sipnab_SIP_CALL_RTP_G711.pcap"), counters=mixed)
    not_http = [c for c in run.conns if c.http.not_http]
    http = [c for c in run.conns if c.events]
    assert len(not_http) == mixed["not_http"] > 10
    assert {c.server[1] for c in http} == {80}
    assert not {c.server[1] for c in not_http} & {80}
    for name in ("malformed", "bad_chunks", "oversized_heads", "resyncs"):
        assert mixed[name] == 0, (name, mixed)


def test_ssdp_requests_match_tshark() -> None:
    """HTTP over UDP (SSDP M-SEARCH in mixed/ja4_latest) through parse_request_head."""
    rows = [
        r
        for r in read_oracle(need("mixed/ja4_latest.pcapng.expected-http.tsv"))
        if not r["tcp.stream"]
    ]
    assert len(rows) == 3
    seen = {}
    with open_capture(need("mixed/ja4_latest.pcapng")) as reader:
        for number, (_ts, iface, data, _orig) in enumerate(reader.records(), 1):
            d = decode_packet(reader.interfaces[iface].linktype, data)
            if d.proto == 17 and d.dport == 1900:
                payload = data[d.payload_offset : d.payload_offset + d.payload_len]
                seen[number] = parse_request_head(payload)
    assert sorted(seen) == sorted(int(r["frame.number"]) for r in rows)
    for r in rows:
        req = seen[int(r["frame.number"])]
        assert (req.method, req.target, f"HTTP/{req.version}", req.header("host")) == (
            r["http.request.method"],
            r["http.request.uri"],
            r["http.request.version"],
            r["http.host"],
        )
