"""The HTTP mode on the corpus: its transaction events against tshark's ``http.*``
fields and FoxIO's JA4H; filters of every HTTP type against the same captures."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lc.common.filters import Filter, compile_filters
from lc.hunter.capture import FileSource
from lc.hunter.modes.base import ModeContext, port_list
from lc.hunter.modes.http import HTTP_FILTER_TYPES, HttpConfig, http_mode
from tests.hunter.test_voip import CORPUS, need_corpus, tsv

CAPTURES = [
    ("http/arkime_http-100-continue.pcap", ".expected.tsv"),
    ("http/arkime_http-post-upload.pcap", ".expected.tsv"),
    ("http/arkime_http-wrapped-header.pcap", ".expected.tsv"),
    ("http/arkime_http-xff.pcap", ".expected.tsv"),
    ("http/arkime_v6-http.pcap", ".expected.tsv"),
    ("http/ja4_http1.pcapng", ".expected.tsv"),
    ("http/ja4_http1-with-cookies.pcapng", ".expected.tsv"),
    ("http/zeek_http-pipelined-requests.pcap", ".expected.tsv"),
    ("mixed/ja4_latest.pcapng", ".expected-http.tsv"),
    ("mixed/sipnab_SIP_CALL_RTP_G711.pcap", ".expected-http.tsv"),
    ("mixed/zeek_wikipedia.pcap", ".expected-http.tsv"),
]


def run(path: Path, filters: list[Filter], policy: str = "deny", **cfg):
    ifs: list = []
    if "http_ports" in cfg:
        cfg["http_ports"] = port_list(cfg["http_ports"])
    mode = http_mode(ModeContext(ifs, policy=policy, events="all"), HttpConfig(**cfg))
    mode.apply(compile_filters(filters, "h", HTTP_FILTER_TYPES))
    src = FileSource(str(path), None)
    events, forwarded = [], 0
    while (ch := src.read(512)) is not None:
        ifs[:] = src.interfaces
        fwd = mode.process(ch)
        events += fwd.events
        forwarded += len(fwd.chunk)
    fwd = mode.finish()
    return events + fwd.events, forwarded + len(fwd.chunk), mode


def _mime(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


@pytest.mark.parametrize(("capture", "oracle"), CAPTURES)
def test_transactions_equal_tshark(capture: str, oracle: str) -> None:
    """The mode's events (every transaction, --events all) against tshark's http.*
    rows: requests (method, target, Host, version, User-Agent), final responses
    (status, media type, the declared body length) and the connections they are in."""
    need_corpus()
    path = CORPUS / capture
    # HTTP over TCP (the mixed captures also have SSDP over UDP, which is not this mode's).
    port_rows = [r for r in tsv(Path(str(path) + oracle)) if r.get("tcp.dstport")]
    ports = {
        int(r["tcp.dstport"])
        for r in port_rows
        if r.get("http.request.method") and r.get("tcp.dstport")
    }
    events, _, _ = run(path, [], http_ports=",".join(map(str, sorted(ports))))
    req_rows = [r for r in port_rows if r.get("http.request.method")]
    assert req_rows, f"{capture}: no HTTP request in the oracle"
    want_req = Counter(
        (r["http.request.method"], r["http.request.uri"], r["http.host"].split(":")[0],
         r["http.request.version"], r["http.user_agent"])
        for r in req_rows
    )  # fmt: skip
    got_req = Counter(
        (h.method, h.target, h.host.split(":")[0], f"HTTP/{h.version}", h.user_agent)
        for h in (e.http for e in events)
        if h.method
    )
    assert got_req == want_req
    resp_rows = [
        r for r in port_rows if r.get("http.response.code", "")[:1] not in ("", "1")
    ]  # 1xx are interim, not transactions
    got_resp = Counter((e.http.status, e.http.content_type) for e in events if e.http.status)
    want_resp = Counter(
        (int(r["http.response.code"]), _mime(r["http.content_type"])) for r in resp_rows
    )
    assert got_resp == want_resp
    # A response framed by Content-Length (not chunked) has that many body bytes.
    lengths = Counter(
        (int(r["http.response.code"]), int(r["http.content_length_header"]))
        for r in resp_rows
        if r["http.content_length_header"] and not r["http.transfer_encoding"]
    )
    got_lengths = Counter((e.http.status, e.http.response_body_bytes) for e in events)
    assert not lengths - got_lengths, lengths - got_lengths
    # One session id per tcp.stream.
    streams = {r["tcp.stream"] for r in req_rows}
    assert len({e.session_id for e in events if e.http.method}) == len(streams)
    assert all(not e.captured and not e.filter_ids for e in events)


def test_ja4h_equals_foxio() -> None:
    need_corpus()
    for capture in (
        "http/ja4_http1.pcapng",
        "http/ja4_http1-with-cookies.pcapng",
        "mixed/ja4_latest.pcapng",
    ):
        path = CORPUS / capture
        ref = [x for x in json.loads(Path(str(path) + ".ja4-python.json").read_text())
               if "JA4H" in x]  # fmt: skip
        ports = ",".join(sorted({x["dstport"] for x in ref}))
        events, _, _ = run(path, [], http_ports=ports)
        assert sorted(e.http.ja4h for e in events if e.http.method) == sorted(
            x["JA4H"] for x in ref
        )


def test_every_http_filter_type_selects_its_connections() -> None:
    need_corpus()
    path = CORPUS / "http/zeek_http-pipelined-requests.pcap"
    cases = [
        ("http_host", "www.mozilla.org", 5),
        ("http_host", "*.example.com", 0),
        ("http_url", "*.png", 5),  # one match captures the whole connection
        ("http_method", "get", 5),
        ("http_method", "POST", 0),
        ("http_status", "2xx", 5),
        ("http_status", "404", 0),
        ("http_user_agent", "*firefox/3.5*", 5),
        ("http_ja4h", "ge11cr08enus_*", 5),
        ("keyword", "key-point-top", 5),
        ("keyword", "no-such-bytes", 0),
        ("ip_address", "63.245.209.11", 5),
    ]
    for t, pattern, n in cases:
        events, forwarded, _ = run(path, [Filter(id="f", type=t, pattern=pattern)])
        captured = [e for e in events if e.captured]
        assert len(captured) == n, (t, pattern)
        assert (forwarded > 0) == bool(n), (t, pattern)
        if n and t == "keyword":
            assert any(list(e.http.keywords) == [pattern] for e in captured)


def test_local_filters_stand_beside_the_pushed_ones() -> None:
    need_corpus()
    path = CORPUS / "http/zeek_http-pipelined-requests.pcap"
    events, _, _ = run(path, [], statuses=("2xx",))
    assert [e.filter_ids for e in events if e.captured][:1] == [["local:status:1"]]
    events, _, _ = run(path, [Filter(id="x", type="http_host", pattern="nothing.example")],
                       keywords=("mozilla",))  # fmt: skip
    assert all(list(e.filter_ids) == ["local:keywords:1"] for e in events if e.captured)
    assert sum(e.captured for e in events) == 5


def test_event_documents_equal_zeeks_http_log() -> None:
    """The mode's events as the processor writes them (ECS) against Zeek's http.log."""
    from lc.processor.eventlog import event_document
    from tests.common.test_http_corpus import read_zeek_log, run_capture

    need_corpus()
    path = CORPUS / "http/zeek_http-pipelined-requests.pcap"
    zeek = read_zeek_log(Path(f"{path}.zeek-http.log"))
    events, _, _ = run(path, [], policy="allow")
    docs = [event_document(e, "h", f"e{k}") for k, e in enumerate(events)]
    # Zeek counts a gzipped body after gunzipping; lc counts it as sent (Content-Length).
    txs = [tx for _n, _c, tx in run_capture(path).transactions()]
    encoded = {
        k: int(tx.response.header("content-length"))
        for k, tx in enumerate(txs)
        if tx.response.header("content-encoding")
    }
    assert 0 < len(encoded) < 5
    assert len(docs) == len(zeek) == 5
    for k, (d, z) in enumerate(zip(docs, zeek, strict=True)):
        z["response_body_len"] = encoded.get(k, z["response_body_len"])
        got = (
            d["lc"]["http"]["transaction"], d["source"]["ip"], d["source"]["port"],
            d["destination"]["ip"], d["destination"]["port"], d["http"]["request"]["method"],
            d["url"]["domain"], d["url"]["original"], d["http"]["request"]["referrer"],
            d["http"]["version"], d["user_agent"]["original"],
            d["http"]["request"]["body"]["bytes"], d["http"]["response"]["body"]["bytes"],
            d["http"]["response"]["status_code"], d["lc"]["http"]["reason"],
        )  # fmt: skip
        want = (
            int(z["trans_depth"]), z["id.orig_h"], int(z["id.orig_p"]), z["id.resp_h"],
            int(z["id.resp_p"]), z["method"], z["host"], z["uri"], z["referrer"], z["version"],
            z["user_agent"], int(z["request_body_len"]), int(z["response_body_len"]),
            int(z["status_code"]), z["status_msg"],
        )  # fmt: skip
        assert got == want
        assert d["event"]["duration"] > 0 and d["lc"]["captured"]


def test_waiting_transactions_stay_within_a_byte_budget(monkeypatch) -> None:
    """Transactions of a connection not yet decided wait for its decision; what they
    hold (heads and examined bodies) across all connections is bounded, the rest
    counted in events_dropped, and the budget is given back as connections close."""
    import lc.hunter.modes.http as http_mod

    need_corpus()
    path = CORPUS / "http/zeek_http-pipelined-requests.pcap"
    nothing = [Filter(id="f", type="http_host", pattern="nothing.example")]
    events, _, mode = run(path, nothing)
    dis = mode.dis
    assert len(events) == 5 and dis.events_dropped == 0 and dis.waiting_bytes == 0
    sizes = sorted(http_mod._held(e) for e in _transactions(path))
    # Room for the two smallest transactions only: the other three are dropped, counted.
    monkeypatch.setattr(http_mod, "_MAX_WAITING_BYTES", sizes[0] + sizes[1])
    events, _, mode = run(path, nothing)
    assert (len(events), mode.dis.events_dropped, mode.dis.waiting_bytes) == (2, 3, 0)


def test_a_matched_connection_sends_its_transactions_whatever_waits(monkeypatch) -> None:
    """The byte budget is for transactions waiting for a decision: those of a decided
    connection wait for nothing and are never dropped for it (with undecided
    connections holding the whole budget, a matched connection's events were lost:
    bench/http_bench.py saw 8,515 of its 10,800)."""
    import lc.hunter.modes.http as http_mod

    need_corpus()
    path = CORPUS / "http/zeek_http-pipelined-requests.pcap"
    every = [Filter(id="f", type="http_method", pattern="GET")]
    events, _, _ = run(path, every)
    assert len(events) == 5 and all(e.captured for e in events)
    # No budget at all: an undecided connection could keep nothing, a matched one
    # loses nothing.
    monkeypatch.setattr(http_mod, "_MAX_WAITING_BYTES", 0)
    events, _, mode = run(path, every)
    assert (len(events), mode.dis.events_dropped, mode.dis.waiting_bytes) == (5, 0, 0)
    nothing = [Filter(id="f", type="http_host", pattern="nothing.example")]
    events, _, mode = run(path, nothing)
    assert (len(events), mode.dis.events_dropped) == (0, 5)


def _transactions(path: Path) -> list:
    """The capture's HTTP transactions, parsed apart from the mode."""
    import subprocess

    from lc.common.http import HttpConnection, HttpTransaction

    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.payload",
         "-Y", "tcp.len > 0"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    conn = HttpConnection()
    txs = []
    for i, line in enumerate(out.splitlines()):
        sport, payload = line.split("\t")
        feed = conn.feed_server if sport == "80" else conn.feed_client
        txs += [e for e in feed(bytes.fromhex(payload), i) if isinstance(e, HttpTransaction)]
    txs += [e for e in conn.close(i) if isinstance(e, HttpTransaction)]
    return txs


def _outputs(path: Path, filters: list[Filter], chunk: int, probe=None, **cfg) -> tuple:
    """Everything a run forwards and tells (frames, metadata, events) and its counters;
    ``probe(mode)`` after each chunk."""
    mode = http_mode(ModeContext([], policy="deny"), HttpConfig(**cfg))
    mode.apply(compile_filters(filters, "h", HTTP_FILTER_TYPES))
    src = FileSource(str(path), None)
    out: list = []

    def take(fwd) -> None:
        ch = fwd.chunk
        out.append((bytes(ch.ts_ns), bytes(ch.caplen), bytes(ch.records)))
        out.append(
            sorted((k, v.SerializeToString(deterministic=True)) for k, v in fwd.meta.items())
        )
        out.append([e.SerializeToString(deterministic=True) for e in fwd.events])

    while (ch := src.read(chunk)) is not None:
        mode.interfaces[:] = src.interfaces
        take(mode.process(ch))
        if probe is not None:
            probe(mode)
    take(mode.finish())
    return out, mode.counters().figures, mode


@pytest.mark.parametrize("pattern", ["*/item5?*", "*/item11?*", "nothing*"])
def test_lazy_connections_forward_and_tell_what_a_full_parse_does(
    monkeypatch, tmp_path: Path, pattern: str
) -> None:
    """While only request filters are in force, undecided connections' responses are
    parsed only once needed (HttpDissector, "Lazy connections"): the frames, their
    metadata and the events are those of a full parse, including connections that
    match at their 6th or 12th request (held frames summarised, waiting
    transactions sent), and pipelined, chunked and multi-segment exchanges."""
    path, filters = _bench_capture(monkeypatch, tmp_path, pattern)
    lazy, figures, mode = _outputs(path, filters, 7)
    assert not mode.dis.lazy and mode.dis.lazy_bytes == 0  # all parsed or gone
    _parse_in_full(monkeypatch)
    parsed, full_figures, _ = _outputs(path, filters, 7)
    assert lazy == parsed
    assert figures["http_requests"] == full_figures["http_requests"] == 720
    if pattern != "nothing*":  # every connection matched: every response was parsed
        assert figures == full_figures


def _bench_capture(monkeypatch, tmp_path: Path, pattern: str) -> tuple[Path, list[Filter]]:
    """bench/http_bench.py's capture, 60 connections of 12 requests, and two request
    filters: http_url ``pattern`` and its http_host."""
    import importlib.util

    bench = Path(__file__).resolve().parents[2] / "bench"
    monkeypatch.syspath_prepend(str(bench))
    spec = importlib.util.spec_from_file_location("http_bench", bench / "http_bench.py")
    hb = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(hb)  # type: ignore[union-attr]
    path = tmp_path / "http.pcap"
    hb.make_capture(path, 60, 12)
    filters = [Filter(id="u", type="http_url", pattern=pattern),
               Filter(id="h", type="http_host", pattern=hb.TARGET)]  # fmt: skip
    return path, filters


def _parse_in_full(monkeypatch) -> None:
    """No lazy connections from now on (every response parsed as it comes)."""
    import lc.hunter.modes.http as http_mod

    set_filters = http_mod.HttpDissector.set_filters

    def full(self, fs) -> None:
        set_filters(self, fs)
        self._lazy_ok = False

    monkeypatch.setattr(http_mod.HttpDissector, "set_filters", full)


@pytest.mark.parametrize("pattern", ["*/item5?*", "*/item11?*", "nothing*"])
@pytest.mark.parametrize("held", [2000, 2, 1])
def test_lazy_replay_reads_the_held_frames(
    monkeypatch, tmp_path: Path, pattern: str, held: int
) -> None:
    """A lazy connection's log copies no bytes the in-order path took from a held
    frame: it names the frame and the replay reads its bytes there. Frames not held
    (``--conn-buffer-packets`` 2 or 1: 8 or 4 held per connection, the rest counted in
    buffer_full) have their bytes copied as before, the rest of the log still names
    the held ones. Either way the frames, their
    metadata and the events are those of a full parse with the same bounds."""
    import lc.hunter.modes.http as http_mod

    path, filters = _bench_capture(monkeypatch, tmp_path, pattern)
    read = []
    payload = http_mod._payload
    monkeypatch.setattr(http_mod, "_payload", lambda b, o: read.append(o) or payload(b, o))
    named = 0
    copies: Counter = Counter()  # (op, per connection at most) of the logs' copies

    def probe(mode) -> None:
        nonlocal named
        for c in mode.dis.lazy:
            named += len(c.tss)
            ops = Counter(e[0] for e in c.log if type(e) is tuple)
            for op, n in ops.items():
                copies[op] = max(copies[op], n)

    lazy, figures, mode = _outputs(path, filters, 7, probe, max_held_packets=held)
    assert not mode.dis.lazy and mode.dis.lazy_bytes == 0
    assert (figures["buffer_full"] > 0) == (held < 2000)
    assert (named > 0) == (held > 1)  # 4 held: the handshake and the first request
    if held == 2000:
        # Copied: only a connection's first piece each way (its framer not bound yet)
        # and its end; no bytes of the in-order path.
        assert copies[http_mod._FEED_C] == copies[http_mod._PIECE_S] == 1
        assert copies.keys() <= {http_mod._FEED_C, http_mod._PIECE_S, http_mod._END_S}
    else:
        assert copies[http_mod._FEED_T] > 1 and copies[http_mod._FEED_C] > 1
    if pattern != "nothing*" and held > 1:  # decided: parsed from their logs
        assert read
    _parse_in_full(monkeypatch)
    parsed, full_figures, _ = _outputs(path, filters, 7, max_held_packets=held)
    assert lazy == parsed
    assert figures["http_requests"] == full_figures["http_requests"] == 720
    if pattern != "nothing*":
        assert figures == full_figures


@pytest.mark.parametrize("pattern", ["*/item5?*", "nothing*"])
@pytest.mark.parametrize("lazy", [True, False])
def test_ended_connections_leave_no_cyclic_garbage(
    monkeypatch, tmp_path: Path, pattern: str, lazy: bool
) -> None:
    """A connection that leaves the table is freed by reference counting: nothing of
    it (its _Conn, framers, parser, requests) waits for the cyclic collector, which a
    hunter's thresholds (hunter/capture.py) reach late: every young collection
    traversed and freed ~60 objects per ended connection (0.5-4 µs of the HTTP mode's
    ~20 µs per packet), and what outlived one stayed in the older generations until
    a full collection (RSS growing with the connections seen)."""
    import gc

    path, filters = _bench_capture(monkeypatch, tmp_path, pattern)
    if not lazy:
        _parse_in_full(monkeypatch)
    src = FileSource(str(path), None)
    chunks = []
    while (ch := src.read(7)) is not None:
        chunks.append(ch)
    ifs = list(src.interfaces)
    src.close()
    del src  # the reader's own cycle (a bound method), once per file
    gc.collect()
    gc.disable()
    try:
        mode = http_mode(ModeContext(ifs, policy="deny", events="all"), HttpConfig())
        mode.apply(compile_filters(filters, "h", HTTP_FILTER_TYPES))
        forwarded = sum(len(mode.process(ch).chunk) for ch in chunks)
        forwarded += len(mode.finish().chunk)
        assert forwarded > 0 and not mode.dis.lazy
        assert mode.counters().figures["http_requests"] == 720
        garbage = gc.collect()
    finally:
        gc.enable()
    assert garbage == 0
