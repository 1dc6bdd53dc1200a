"""The DNS mode's fast path (untagged Ethernet/IPv4/UDP without a session until a
match) forwards exactly what the general path (the session engine for every packet)
forwards, with the same metadata and events, on the corpus and on the benchmark's
generated mix; and the answer-type scan it relies on never misses a CNAME."""

from __future__ import annotations

import sys
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lc.common.dns import TYPE_CNAME, DnsError, answers_have_type, parse_dns
from lc.common.filters import Filter, compile_filters
from lc.common.pcaprecord import frame_records
from lc.hunter.capture import Chunk, FileSource
from lc.hunter.modes.base import ModeContext
from lc.hunter.modes.dns import DNS_FILTER_TYPES, DnsConfig, dns_mode
from lc.proto import lc_pb2
from tests.hunter.test_mode_fuzz import T0, chunk_of, through_the_wire

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"


def _replay(
    path: Path,
    filters: list[Filter],
    fast: bool,
    cfg: DnsConfig | None = None,
    events: str = "captured",
    small: bool = False,
) -> tuple[list, list, dict]:
    """(forwarded frames, their metadata, the rest: events, tunneling statistics as
    sent, counters, drops, the fast path's own counts) of a capture through the DNS
    mode, on the fast path or the general one only; read in chunks of 4096 packets,
    or (``small``) of 1 to 5 (the same sizes on both paths)."""
    import random

    src = FileSource(str(path))
    m = dns_mode(ModeContext(src.interfaces, "deny", events), cfg or DnsConfig())
    if not fast:
        m._fast_ok = lambda: False  # type: ignore[method-assign]
    m.apply(compile_filters(filters, "h", DNS_FILTER_TYPES))
    frames, metas, tunnel = [], [], []
    fwds = []
    sizes = random.Random(3)
    sent = []  # each call's events as it returned them (a Forward's list is the mode's)
    while (c := src.read(sizes.randint(1, 5) if small else 4096)) is not None:
        fwds.append(m.process(c))
        sent.append(sorted(e.SerializeToString(deterministic=True) for e in fwds[-1].events))
    fwds.append(m.finish())
    sent.append(sorted(e.SerializeToString(deterministic=True) for e in fwds[-1].events))
    for f in fwds:
        mv = memoryview(f.chunk.records)
        off = 0
        for i, cap in enumerate(f.chunk.caplen):
            frames.append(bytes(mv[off + 16 : off + 16 + cap]))
            meta = f.meta.get(i)
            metas.append(None if meta is None else meta.SerializeToString(deterministic=True))
            off += 16 + cap
        for kind, items in f.extras:
            if kind == "tunnel":
                tunnel += [(t.domain, t.stats) for t in items]
    c = m.counters()
    # Per call, as a set: within one, the general path sends them in its table's order
    # (least recently active first), the fast path those it ends after the engine's.
    rest = {"events": sent, "tunnel": tunnel, "counters": c.figures,
            "dropped": c.dropped, "fast": dict(m.fast)}  # fmt: skip
    return frames, metas, rest


# Figures both paths must agree on. Not these: how transactions that never matched
# left (the general path rejects them at their response and they leave a grace
# later; the fast path drops them at once), and a duplicate response after its
# transaction left the fast path opens a session of its own (transactions_created).
SAME_FIGURES = ("forwarded", "events", "unassociated", "dns_messages", "dns_malformed",
                "dns_queries", "dns_unanswered", "transactions_matched", "transactions_evicted",
                "tunnel_domains", "decode_errors")  # fmt: skip


def _same(fast: tuple, slow: tuple) -> None:
    assert fast[0] == slow[0], "forwarded frames"
    assert fast[1] == slow[1], "metadata"
    assert fast[2]["events"] == slow[2]["events"], "events"
    assert fast[2]["tunnel"] == slow[2]["tunnel"], "tunneling statistics"
    for k in SAME_FIGURES:
        assert fast[2]["counters"].get(k) == slow[2]["counters"].get(k), k
    assert fast[2]["dropped"] == slow[2]["dropped"], "drops"


def _captures(*dirs: str) -> list[str]:
    return [
        f"{d}/{p.name}"
        for d in dirs
        if (CORPUS / d).is_dir()
        for p in sorted((CORPUS / d).iterdir())
        if p.suffix in (".pcap", ".pcapng", ".cap")
    ]


CASES = [
    ("dns/arkime_dns-wiresharkrepo.pcap", "www.l.google.com"),
    ("dns/arkime_dns-wiresharkrepo.pcap", "*.google.com"),
    ("dns/elastic_dns-tunnel-iodine.pcap", "*.pirate.sea"),
    ("dns/dmachard_dnscat2.pcap", "*a*"),
    *((c, p) for c in _captures("dns", "mixed") for p in ("*e*", "*.com")),
]


@pytest.mark.parametrize(("capture", "pattern"), CASES)
def test_fast_path_forwards_what_the_general_path_does(capture: str, pattern: str) -> None:
    """Every capture of the corpus's dns/ and mixed/: the fast path forwards the same
    frames with the same metadata, sends the same events and tunneling statistics,
    and counts the same as the general path (the session engine for every packet)."""
    path = CORPUS / capture
    if not path.exists():
        pytest.skip("corpus not present")
    flt = [Filter(id="f", type="dns_domain", pattern=pattern)]
    _same(_replay(path, flt, True), _replay(path, flt, False))


@pytest.mark.parametrize("small", [False, True], ids=["4096", "1-5"])
@pytest.mark.parametrize(("capture", "pattern"), CASES)
def test_fast_path_events_all_sends_what_the_general_path_does(
    capture: str, pattern: str, small: bool
) -> None:
    """``--events all`` (one event per transaction, captured or not): the same, chunk
    by chunk (the events each chunk sends), in chunks of 4096 packets and of 1 to 5."""
    path = CORPUS / capture
    if not path.exists():
        pytest.skip("corpus not present")
    flt = [Filter(id="f", type="dns_domain", pattern=pattern)]
    fast = _replay(path, flt, True, events="all", small=small)
    _same(fast, _replay(path, flt, False, events="all", small=small))


def test_the_fast_path_reads_the_corpus() -> None:
    """The comparison above is not vacuous: the fast path holds and drops most
    queries of the corpus's DNS over IPv4 itself."""
    path = CORPUS / "dns/arkime_dns-wiresharkrepo.pcap"
    if not path.exists():
        pytest.skip("corpus not present")
    fast = _replay(path, [Filter(id="f", type="dns_domain", pattern="www.l.google.com")], True)
    assert fast[2]["fast"]["queries"] >= 10 and fast[2]["fast"]["dropped"] >= 10


def test_fast_path_on_the_benchmark_mix_cname_matches_included(tmp_path) -> None:
    """The benchmark's generated resolver mix (CNAME chains, NXDOMAIN, 8-bit tunnel
    labels with NULL and TXT, DNS over TCP): the same, for filters that match by the
    question, only through CNAME chains, tunnel names and a prefix."""
    import sys

    sys.path.insert(0, str(ROOT))
    from bench.dns_bench import make_capture

    cap = tmp_path / "mix.pcap"
    info = make_capture(cap, 8000, seed=5)
    for pattern in ("*.watched-bench.com", "*.cdn-7.net", "*.tunnel-bench.net", "api*"):
        flt = [Filter(id="f", type="dns_domain", pattern=pattern)]
        fast = _replay(cap, flt, True)
        _same(fast, _replay(cap, flt, False))
        assert fast[0] and fast[2]["fast"]["queries"] > 7000
    watched = [Filter(id="f", type="dns_domain", pattern="*.watched-bench.com")]
    fast = _replay(cap, watched, True)
    assert len(fast[0]) == info["want_frames"]
    for cfg in (DnsConfig(udp_only=True), DnsConfig(detect_tunneling=False)):
        _same(_replay(cap, watched, True, cfg), _replay(cap, watched, False, cfg))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_answer_scan_never_misses_a_cname(tail: bytes) -> None:
    head = bytes.fromhex("1234818000010002000000000377777701780000010001")
    cname = bytes.fromhex("c00c000500010000003c0004") + b"\x01y\xc0\x10"
    for data in (head + tail, head + cname + tail, head + tail[:20] + cname):
        assert isinstance(answers_have_type(data, TYPE_CNAME), bool)
        try:
            msg = parse_dns(data)
        except DnsError:
            continue
        if any(r[1] == TYPE_CNAME for r in msg.answers):
            assert answers_have_type(data, TYPE_CNAME)


def test_bpf_filter_selects_transactions_by_a_frame_of_theirs(tmp_path) -> None:
    """A bpf filter matches a transaction when the frame of its query or of its
    response matches the expression (compiled by libpcap): both are forwarded. The
    oracle: tshark's DNS ids of the frames longer than 150 bytes, then every frame of
    those ids."""
    import shutil
    import subprocess

    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    cap = CORPUS / "dns" / "arkime_dns-wiresharkrepo.pcap"
    if not cap.exists():
        pytest.skip("corpus not present")

    def tshark(flt: str, field: str) -> list[str]:
        r = subprocess.run(["tshark", "-r", str(cap), "-Y", flt, "-T", "fields", "-e", field],
                           capture_output=True, text=True, check=True)  # fmt: skip
        return r.stdout.split()

    ids = set(tshark("dns and frame.len > 150", "dns.id"))
    assert ids
    want = [int(n) for n in tshark(" or ".join(f"dns.id == {i}" for i in ids), "frame.number")]
    src = FileSource(str(cap))
    every = []
    while (c := src.read()) is not None:
        mv = memoryview(c.records)
        off = 0
        for cap_len in c.caplen:
            every.append(bytes(mv[off + 16 : off + 16 + cap_len]))
            off += 16 + cap_len
    got, metas, _ = _replay(cap, [Filter(id="big", type="bpf", pattern="greater 151")], True)
    assert got == [every[n - 1] for n in want]
    assert all(m is not None and b"big" in m for m in metas)
    # Beside a dns_domain filter, each transaction carries the ids it matched.
    both = [Filter(id="big", type="bpf", pattern="greater 151"),
            Filter(id="g", type="dns_domain", pattern="*.google.com")]  # fmt: skip
    got2, _, _ = _replay(cap, both, True)
    assert set(got) <= set(got2)


# -- hostile DNS through the mode and the wire ---------------------------------------------


def _dns_seeds() -> list[bytes]:
    import random

    from bench.dns_bench import query, response, tcp_frame, udp_frame, wire_name

    out: list[bytes] = []
    for name in ("elastic_dns-tunnel-iodine.pcap", "dmachard_dnscat2.pcap",
                 "arkime_dns-wiresharkrepo.pcap", "arkime_dns-tcp.pcap"):  # fmt: skip
        path = CORPUS / "dns" / name
        if path.exists():
            src = FileSource(str(path))
            c = src.read()
            if c is not None and src.interfaces[0][1] == 1:
                mv = memoryview(c.records)
                off = 0
                for cap_len in list(c.caplen)[:60]:
                    out.append(bytes(mv[off + 16 : off + 16 + cap_len]))
                    off += 16 + cap_len
    rng = random.Random(3)
    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53])
    for qname in (b"\xff\xfe\x00raw.watched-bench.com", b"x.watched-bench.com", b"\xc3(.t.tun.net"):
        w = wire_name(qname)
        q, r = query(7, w, 16), response(7, w, 16, rng, qname.startswith(b"\xc3"))
        out += [udp_frame(a, 4000, b, 53, q), udp_frame(b, 53, a, 4000, r)]
        out.append(tcp_frame(a, 4001, b, 53, 1, 0, 0x18, len(q).to_bytes(2, "big") + q))
    return out


_SEEDS: list[bytes] = []


@st.composite
def _hostile(draw) -> bytes:
    if not _SEEDS:
        _SEEDS.extend(_dns_seeds())
    frame = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "label", "pointer"]))
        pos = draw(st.integers(42, max(42, len(frame) - 1)))
        if kind == "flip" and pos < len(frame):
            frame[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del frame[pos:]
        elif kind == "label":  # raw 8-bit label bytes, the same length (lengths stay right)
            bad = draw(st.binary(min_size=1, max_size=8))
            frame[pos : pos + len(bad)] = bad
        elif kind == "pointer":  # a compression pointer anywhere (loops, forward)
            frame[pos : pos + 2] = bytes([0xC0, draw(st.integers(0, 255))])
        else:
            frame[pos:pos] = draw(st.binary(max_size=20))
    return bytes(frame)


@settings(max_examples=120, deadline=None)
@given(st.lists(_hostile(), min_size=1, max_size=40), st.sampled_from(["captured", "all"]))
def test_hostile_dns_through_the_mode_and_the_wire(frames: list[bytes], events: str) -> None:
    """Mutated DNS frames (iodine-like raw labels, pointer loops, cuts) through the DNS
    mode, on the fast path (``captured``) and the general one (``all``), with every
    filter type it applies, then the batcher, the wire codec and protobuf: nothing
    raises, nothing is forwarded twice."""
    interfaces = [("eth0", 1)]
    m = dns_mode(ModeContext(interfaces, "deny", events), DnsConfig())
    filters = [Filter(id="d", type="dns_domain", pattern="*.watched-bench.com"),
               Filter(id="t", type="dns_domain", pattern="*tun*")]  # fmt: skip
    if events == "all":
        filters += [Filter(id="ip", type="ip_address", pattern="10.0.0.0/8"),
                    Filter(id="b", type="bpf", pattern="udp")]  # fmt: skip
    m.apply(compile_filters(filters, "h1", DNS_FILTER_TYPES))
    half = len(frames) // 2
    sent = through_the_wire(m.process(chunk_of(frames[:half], T0)), interfaces, 1)
    sent += through_the_wire(m.process(chunk_of(frames[half:], T0 + 10**9)), interfaces, 2)
    sent += through_the_wire(m.tick(T0 + 400 * 10**9), interfaces, 3)
    sent += through_the_wire(m.finish(), interfaces, 4)
    c = m.counters()
    assert all(isinstance(v, int) and v >= 0 for v in c.figures.values())
    assert sent <= len(frames)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("events", ["captured", "all"])
def test_a_response_captured_before_its_query_gives_no_negative_rtt(
    transport: str, events: str
) -> None:
    """Capture timestamps need not increase (two interfaces, a merged capture): a
    response stamped before its query is paired, with RTT 0 ("none seen"), instead of a
    negative RTT that protobuf refuses (the whole chunk was lost as ``mode_error``)."""
    import random

    from bench.dns_bench import query, response, tcp_frame, udp_frame, wire_name

    rng = random.Random(1)
    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53])
    w = wire_name(b"x.watched-bench.com")
    q, r = query(7, w, 1), response(7, w, 1, rng, False)
    if transport == "udp":
        frames = [udp_frame(a, 4000, b, 53, q), udp_frame(b, 53, a, 4000, r)]
    else:
        qs, rs = len(q).to_bytes(2, "big") + q, len(r).to_bytes(2, "big") + r
        frames = [
            tcp_frame(a, 4001, b, 53, 1, 1, 0x18, qs),
            tcp_frame(b, 53, a, 4001, 1, 1 + len(qs), 0x18, rs),
        ]
    ts = array("q", [T0 + 2 * 10**9, T0 + 10**9])  # the response 1 s before its query
    caps = array("I", [len(f) for f in frames])
    chunk = Chunk(ts, caps, array("I", caps), frame_records(ts, caps, caps, b"".join(frames)), 0)
    interfaces = [("eth0", 1)]
    m = dns_mode(ModeContext(interfaces, "deny", events), DnsConfig())
    m.apply(compile_filters([Filter(id="d", type="dns_domain", pattern="*.watched-bench.com")],
                            "h1", DNS_FILTER_TYPES))  # fmt: skip
    sent = through_the_wire(m.process(chunk), interfaces, 1)
    sent += through_the_wire(m.tick(T0 + 400 * 10**9), interfaces, 2)
    sent += through_the_wire(m.finish(), interfaces, 3)
    assert sent == 2  # both the query and the response, nothing lost


@pytest.mark.parametrize(
    "capture", ["dns/arkime_dns-tcp.pcap", "dns/suricata_dns-tcp-multirequest-buffer.pcap"]
)
def test_tcp_messages_carry_their_own_rtt(capture: str) -> None:
    """Over TCP the engine asks for a message's summary before the dissector has paired
    it with its query: each forwarded message still carries its own RTT (a query none,
    a response its transaction's, as in the event), not the previous message's (it did:
    every TCP metadata RTT was one message late)."""
    path = CORPUS / capture
    if not path.exists():
        pytest.skip("corpus not present")
    src = FileSource(str(path))
    m = dns_mode(ModeContext(src.interfaces, "deny", "captured"), DnsConfig())
    m.apply(compile_filters([Filter(id="f", type="dns_domain", pattern="*.*")], "h",
                            DNS_FILTER_TYPES))  # fmt: skip
    fwds = []
    while (c := src.read()) is not None:
        fwds.append(m.process(c))
    fwds.append(m.finish())
    metas = [mt.dns for f in fwds for _, mt in sorted(f.meta.items()) if mt.HasField("dns")]
    rtts = {e.dns.id: e.dns.rtt_ns for f in fwds for e in f.events}
    assert len(metas) >= 4 and all(rtts.values())
    for d in metas:
        assert d.rtt_ns == (rtts[d.id] if d.response else 0), d


def test_session_keys_are_transaction_keys_named_by_their_text() -> None:
    """The dissector's session key equals lc.common.dns.transaction_key, the pairing
    the module documents, and its text is the session id (the engine names sessions
    by it: no namedtuple repr per transaction)."""
    import random

    from bench.dns_bench import query, response, wire_name
    from lc.common.dns import transaction_key
    from lc.hunter.modes.dns import DnsDissector

    w = wire_name(b"WWW.Example.com")
    q, r = (
        parse_dns(query(0x1234, w, 28)),
        parse_dns(response(0x1234, w, 28, random.Random(1), False)),
    )
    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53])
    d = DnsDissector(DnsConfig())
    d.flow = (a, 4000, b, 53, 17)
    kq = d.session_key(q)
    d.flow = (b, 53, a, 4000, 17)
    kr = d.session_key(r)
    assert kq == kr == transaction_key(q, a, 4000, b, 53, "udp")
    assert hash(kq) == hash(transaction_key(r, b, 53, a, 4000, "udp"))
    assert str(kq) == "udp:10.0.0.1:4000-10.0.0.53:53#4660"
    # IPv6 in brackets, as a TCP connection's id (common.flow.connection_id): the text
    # was udp:::1:48622-::1:53#4660, ambiguous where an address ends.
    a6, b6 = bytes(15) + b"\x01", bytes.fromhex("20010db8" + "00" * 11 + "53")
    d.flow = (a6, 48622, b6, 53, 17)
    assert str(d.session_key(q)) == "udp:[::1]:48622-[2001:db8::53]:53#4660"


@pytest.mark.parametrize("events", ["captured", "all"])
def test_fast_path_pairs_across_name_cache_flushes_and_filter_changes(
    tmp_path, monkeypatch, events: str
) -> None:
    """The name cache is emptied when full and when the filters change, while queries
    wait for their responses: they still meet them (a question keeps its number in
    the transaction keys), so the fast path still equals the general path."""
    import sys

    import lc.hunter.modes.dns as dns_mode_module

    sys.path.insert(0, str(ROOT))
    from bench.dns_bench import make_capture

    cap = tmp_path / "mix.pcap"
    make_capture(cap, 3000, seed=7)
    monkeypatch.setattr(dns_mode_module, "_NAME_CACHE", 64)  # flushed every 64 questions

    def run(fast: bool) -> tuple:
        src = FileSource(str(cap))
        m = dns_mode(ModeContext(src.interfaces, "deny", events), DnsConfig())
        if not fast:
            m._fast_ok = lambda: False  # type: ignore[method-assign]
        flt = [Filter(id="w", type="dns_domain", pattern="*.watched-bench.com")]
        m.apply(compile_filters(flt, "h", DNS_FILTER_TYPES))
        out = []
        n = 0
        while (c := src.read(256)) is not None:
            n += 1
            if n % 3 == 0:  # a filter change every third chunk (the same filters)
                m.apply(compile_filters(flt, "h", DNS_FILTER_TYPES))
            out.append(m.process(c))
        out.append(m.finish())
        frames = [bytes(f.chunk.records) for f in out]
        sent = sorted(e.SerializeToString(deterministic=True) for f in out for e in f.events)
        c = m.counters()
        return (
            frames,
            sent,
            c.dropped,
            c.figures["dns_unanswered"],
            c.figures["transactions_created"],
        )

    fast, slow = run(True), run(False)
    assert fast[:4] == slow[:4]
    assert fast[4] <= slow[4]  # no response opened a session of its own


def test_question_numbers_are_bounded_and_kept_while_a_query_waits(monkeypatch) -> None:
    import lc.hunter.modes.dns as dns_mode_module

    monkeypatch.setattr(dns_mode_module, "_NAME_CACHE", 16)
    m = dns_mode(ModeContext([("eth0", 1)], "deny", "captured"), DnsConfig(max_transactions=4))
    waiting = {q: m._number(q) for q in (b"\x01a\x00", b"\x01b\x00")}
    for n in waiting.values():
        m._pend[n << 112 | 12345] = b"record"
    for i in range(1000):
        m._number(b"\x02x%d\x00" % i)
        assert len(m._numbers) <= 16
    assert {q: m._number(q) for q in waiting} == waiting  # the same numbers still
    assert m._number(b"\x02x5\x00") not in waiting.values()


def test_scores_of_the_last_report_are_those_it_sent() -> None:
    """The last report's statistics are scored when first asked for: the score is the
    one they had when sent, whatever this hunter counts since."""
    m = dns_mode(ModeContext([("eth0", 1)], "deny", "captured"), DnsConfig())
    det = m.dis.detector
    for i in range(40):
        det.observe(f"x{i}a7f3k9q2m4z8w1v6b5n0p{i}.t.example.com", 16, T0 + i, "10.0.0.1")
    det.observe("www.other.org", 1, T0, "10.0.0.2")
    sent = {d: s.score() for d, s in det.domains.items()}
    assert sent["example.com"] > 0.5
    m._report(T0 + 100, force=True)
    assert m.reports == 1 and not det.domains
    for i in range(200):  # the next interval: ordinary names only
        det.observe(f"www{i % 3}.example.com", 1, T0 + 200 + i, "10.0.0.3")
    now = det.score("example.com")
    assert now < sent["example.com"]
    m.dis.scores = {}
    assert m.dis.domain_score("example.com") == max(sent["example.com"], now)
    assert m.dis.domain_score("other.org") == sent["other.org"]
    assert m.dis.domain_score("never.net") == 0.0


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("events", ["captured", "all"])
def test_unanswered_queries_time_out_counted_and_reported(fast: bool, events: str) -> None:
    """Queries that get no response within --dns-timeout leave as unanswered: counted
    (``dns_unanswered``, the summary line) and, when captured (or with ``--events
    all``), reported by an event with no response, over UDP and TCP, that ends when the
    query was given up (its ``event.duration`` is the time waited: --dns-timeout, 5 s);
    an answered one is not counted."""
    import random

    from bench.dns_bench import query, response, tcp_frame, udp_frame, wire_name

    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53])
    names = (b"x.watched-bench.com", b"y.other.org", b"z.watched-bench.com")
    w, o, n = (wire_name(x) for x in names)
    tq = query(9, n, 1)
    frames = [
        udp_frame(a, 4000, b, 53, query(7, w, 1)),  # matching, unanswered
        udp_frame(a, 4001, b, 53, query(8, o, 1)),  # not matching, unanswered
        tcp_frame(a, 4002, b, 53, 1, 1, 0x18, len(tq).to_bytes(2, "big") + tq),  # TCP, unanswered
        udp_frame(a, 4003, b, 53, query(10, w, 1)),  # answered
        udp_frame(b, 53, a, 4003, response(10, w, 1, random.Random(1), False)),
    ]
    interfaces = [("eth0", 1)]
    m = dns_mode(ModeContext(interfaces, "deny", events), DnsConfig())
    if not fast:
        m._fast_ok = lambda: False  # type: ignore[method-assign]
    m.apply(compile_filters([Filter(id="d", type="dns_domain", pattern="*.watched-bench.com")],
                            "h1", DNS_FILTER_TYPES))  # fmt: skip
    evs = list(m.process(chunk_of(frames, T0)).events)  # (a Forward's list is the mode's)
    evs += m.tick(T0 + 2 * 10**9).events
    assert all(e.dns.answered for e in evs)  # not yet: 5 s by default
    evs += m.tick(T0 + 400 * 10**9).events
    evs += m.finish().events
    lost = sorted((e.dns.qname, e.flow.src_port) for e in evs if not e.dns.answered)
    want = [("x.watched-bench.com", 4000), ("z.watched-bench.com", 4002)]
    if events == "all":
        want.insert(1, ("y.other.org", 4001))
    assert lost == want
    for e in evs:
        if not e.dns.answered:
            assert e.dns.queries == 1 and e.dns.responses == 0 and not e.dns.rtt_ns
            assert not e.dns.answers and e.start_ns >= T0
            assert e.end_ns - e.start_ns == DnsConfig().timeout_ns
    assert [e.dns.rtt_ns > 0 for e in evs if e.dns.answered] == [True]
    c = m.counters()
    assert c.figures["dns_unanswered"] == 3
    assert c.summary.endswith("; unanswered queries: 3"), c.summary


@pytest.mark.parametrize("fast", [True, False])
def test_a_query_unanswered_at_the_end_waited_until_the_end(fast: bool) -> None:
    """A captured query still unanswered when the capture ends (before --dns-timeout)
    was given up at the end: its event ends at the last capture time seen, over UDP
    and TCP (not at the query: an event.duration of 0 said nothing)."""
    from bench.dns_bench import query, tcp_frame, udp_frame, wire_name

    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53])
    w = wire_name(b"x.watched-bench.com")
    tq = query(9, w, 1)
    frames = [
        udp_frame(a, 4000, b, 53, query(7, w, 1)),
        tcp_frame(a, 4002, b, 53, 1, 1, 0x18, len(tq).to_bytes(2, "big") + tq),
        udp_frame(a, 4001, b, 53, query(8, wire_name(b"y.other.org"), 1)),
    ]
    m = dns_mode(ModeContext([("eth0", 1)], "deny", "captured"), DnsConfig())
    if not fast:
        m._fast_ok = lambda: False  # type: ignore[method-assign]
    m.apply(compile_filters([Filter(id="d", type="dns_domain", pattern="*.watched-bench.com")],
                            "h1", DNS_FILTER_TYPES))  # fmt: skip
    first = chunk_of(frames[:2], T0)
    later = chunk_of(frames[2:], T0 + 3 * 10**9)  # 3 s later: within --dns-timeout
    evs = list(m.process(first).events) + list(m.process(later).events)
    evs += m.finish().events
    assert sorted((e.flow.src_port, e.end_ns - e.start_ns) for e in evs) == [
        (4000, 3 * 10**9),
        (4002, 3 * 10**9 - 1000),
    ]


def _tunnel_then_watched(answers: int) -> list[bytes]:
    """Twelve tunnel-like TXT queries under example.co.uk (unanswered), then a query for
    a.b.example.co.uk and its response: a CNAME then ``answers`` A records."""
    import struct

    from bench.dns_bench import query, udp_frame, wire_name

    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53])
    out = []
    for i in range(12):
        name = f"{i}q7x2k9v4m1z8p3w6r5t0y2u8s4l1c9n3b7.t.example.co.uk".encode()
        out.append(udp_frame(a, 5000 + i, b, 53, query(100 + i, wire_name(name), 16)))
    w = wire_name(b"a.b.Example.co.uk")
    target = wire_name(b"edge.cdn.example.net")
    rrs = [b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 300, len(target)) + target]
    tptr = struct.pack("!H", 0xC000 | (12 + len(w) + 4 + 12))
    rrs += [tptr + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([10, 1, 0, i]) for i in range(answers)]
    head = struct.pack("!HHHHHH", 0x4242, 0x8580, 1, len(rrs), 0, 0)  # QR AA RD RA
    resp = head + w + struct.pack("!HH", 1, 1) + b"".join(rrs)
    out.append(udp_frame(a, 4000, b, 53, query(0x4242, w, 1)))
    out.append(udp_frame(b, 53, a, 4000, resp))
    return out


@pytest.mark.parametrize("fast", [True, False])
def test_metadata_and_event_fields_with_their_bounds(fast: bool) -> None:
    """What a forwarded DNS packet carries (id, qname, qtype, rcode, at most 8 answers,
    RTT, the tunneling score of its registered domain) and its transaction's event as
    the event log writes it, with the ECS names the issue lists (dns.id, dns.type,
    dns.op_code, dns.response_code, dns.header_flags, dns.question.name, type, class,
    registered_domain (Public Suffix List: example.co.uk), subdomain, dns.answers (at
    most 16), dns.resolved_ip, RTT as event.duration)."""
    from lc.processor.eventlog import event_document

    frames = _tunnel_then_watched(20)
    m = dns_mode(ModeContext([("eth0", 1)], "deny", "captured"), DnsConfig())
    if not fast:
        m._fast_ok = lambda: False  # type: ignore[method-assign]
    m.apply(compile_filters([Filter(id="d", type="dns_domain", pattern="*.cdn.example.net")],
                            "h1", DNS_FILTER_TYPES))  # fmt: skip
    fwd = m.process(chunk_of(frames, T0))
    evs = list(fwd.events)
    metas = [mt.dns for _, mt in sorted(fwd.meta.items())]
    assert fwd.chunk.caplen.tolist() == [len(frames[-2]), len(frames[-1])]  # the CNAME matched
    q, r = metas
    assert (q.id, q.qname, q.qtype, q.response, q.rtt_ns, list(q.answers)) == (
        0x4242, "a.b.Example.co.uk", 1, False, 0, [])  # fmt: skip
    assert (r.id, r.qname, r.response, r.rcode, r.rtt_ns) == (0x4242, "a.b.Example.co.uk",
                                                              True, 0, 1000)  # fmt: skip
    assert list(r.answers) == ["CNAME edge.cdn.example.net"] + [f"A 10.1.0.{i}" for i in range(7)]
    assert q.tunnel_score == r.tunnel_score >= 0.7  # example.co.uk: the twelve TXT queries
    evs += m.tick(T0 + 10 * 10**9).events
    (ev,) = evs
    doc = event_document(ev, "h1", "h1:1:1:0")
    dns = doc["dns"]
    assert (dns["id"], dns["type"], dns["op_code"], dns["response_code"]) == (
        0x4242, "answer", "QUERY", "NOERROR")  # fmt: skip
    assert dns["header_flags"] == ["AA", "RD", "RA"]
    assert dns["question"] == {
        "name": "a.b.Example.co.uk", "type": "A", "class": "IN",
        "registered_domain": "example.co.uk", "subdomain": "a.b",
    }  # fmt: skip
    assert len(dns["answers"]) == 16
    assert dns["answers"][0] == {"name": "a.b.Example.co.uk", "type": "CNAME", "class": "IN",
                                 "ttl": 300, "data": "edge.cdn.example.net"}  # fmt: skip
    assert dns["answers"][1] == {"name": "edge.cdn.example.net", "type": "A", "class": "IN",
                                 "ttl": 60, "data": "10.1.0.0"}  # fmt: skip
    assert dns["resolved_ip"] == [f"10.1.0.{i}" for i in range(15)]
    assert doc["event"]["duration"] == 1000 == doc["lc"]["dns"]["rtt_ns"]
    assert doc["lc"]["dns"]["tunnel_score"] >= 0.7 and doc["lc"]["filter_ids"] == ["d"]
    assert doc["source"] == {"ip": "10.0.0.1", "port": 4000}
    assert doc["destination"] == {"ip": "10.0.0.53", "port": 53}


def test_dns_ports_udp_only_and_no_tunneling_flags() -> None:
    """--dns-port 53,5353: the kernel filter keeps both ports over UDP and TCP and IP
    fragments (--udp-only: UDP and fragments), as libpcap compiles it; the mode parses
    DNS on both ports; --udp-only leaves DNS over TCP alone; --no-detect-tunneling
    sends no statistics and scores nothing."""
    import random

    from bench.dns_bench import query, response, tcp_frame, udp_frame, wire_name
    from lc.common.bpf import compile_bpf
    from lc.hunter.modes.base import port_list
    from lc.hunter.modes.dns import DnsDissector

    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53])
    w = wire_name(b"x.watched-bench.com")
    q, r = query(7, w, 1), response(7, w, 1, random.Random(1), False)
    frag = bytearray(udp_frame(a, 4000, b, 80, b"x" * 40))
    frag[20:22] = b"\x20\x00"  # more fragments
    probes = [udp_frame(a, 4000, b, 53, q), tcp_frame(a, 4000, b, 53, 1, 1, 0x18, b"xx"),
              udp_frame(a, 4000, b, 5353, q), tcp_frame(a, 4000, b, 5353, 1, 1, 0x18, b"xx"),
              udp_frame(a, 4000, b, 80, q), tcp_frame(a, 4000, b, 80, 1, 1, 0x18, b"xx"),
              bytes(frag)]  # fmt: skip
    ports = port_list("53,5353")
    assert ports == frozenset((53, 5353))
    for udp_only, want in ((False, [1, 1, 1, 1, 0, 0, 1]), (True, [1, 0, 1, 0, 0, 0, 1])):
        expr = DnsDissector(DnsConfig(dns_ports=ports, udp_only=udp_only)).kernel_bpf()
        prog = compile_bpf(expr, 1)
        assert [int(bool(prog.filter(f))) for f in probes] == want, expr

    def run(
        cfg: DnsConfig, frames: list[bytes], pattern: str = "*.watched-bench.com"
    ) -> tuple[int, list, dict]:
        m = dns_mode(ModeContext([("eth0", 1)], "deny", "captured"), cfg)
        m.apply(compile_filters([Filter(id="d", type="dns_domain", pattern=pattern)], "h1",
                                DNS_FILTER_TYPES))  # fmt: skip
        fwds = [m.process(chunk_of(frames, T0)), m.finish()]
        metas = [mt.dns for f in fwds for _, mt in sorted(f.meta.items()) if mt.HasField("dns")]
        tunnel = [t for f in fwds for kind, items in f.extras if kind == "tunnel" for t in items]
        return sum(len(f.chunk.caplen) for f in fwds), metas, {"tunnel": tunnel, "m": m}

    mdns = [udp_frame(a, 4000, b, 5353, q), udp_frame(b, 5353, a, 4000, r)]
    assert run(DnsConfig(), mdns)[0] == 0  # 5353 is not a DNS port by default
    n, metas, _ = run(DnsConfig(dns_ports=ports), mdns)
    assert n == 2 and [d.response for d in metas] == [False, True]
    qs, rs = len(q).to_bytes(2, "big") + q, len(r).to_bytes(2, "big") + r
    tcp = [tcp_frame(a, 4001, b, 53, 1, 1, 0x18, qs),
           tcp_frame(b, 53, a, 4001, 1, 1 + len(qs), 0x18, rs)]  # fmt: skip
    assert run(DnsConfig(), tcp)[0] == 2
    n, _, rest = run(DnsConfig(udp_only=True), tcp)
    assert n == 0 and rest["m"].counters().figures["dns_messages"] == 0
    tunnelish = _tunnel_then_watched(3)
    n, metas, rest = run(DnsConfig(), tunnelish, "*.cdn.example.net")
    assert n == 2 and rest["tunnel"] and min(d.tunnel_score for d in metas) >= 0.7
    n, metas, rest = run(DnsConfig(detect_tunneling=False), tunnelish, "*.cdn.example.net")
    assert n == 2 and rest["tunnel"] == [] and rest["m"].dis.detector is None
    assert all(d.tunnel_score == 0 for d in metas)


@pytest.mark.parametrize("events", ["captured", "all"])
@pytest.mark.parametrize("fast", [True, False])
def test_transactions_followed_are_bounded_and_evictions_counted(fast: bool, events: str) -> None:
    """--max-transactions: beyond it the least recent undecided transaction leaves,
    counted (transactions_evicted, unanswered); what is left still pairs."""
    import random

    from bench.dns_bench import query, response, udp_frame, wire_name

    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53])
    frames = [udp_frame(a, 4000 + i, b, 53, query(i, wire_name(b"n%d.other.org" % i), 1))
              for i in range(10)]  # fmt: skip
    w = wire_name(b"n9.other.org")
    frames.append(udp_frame(b, 53, a, 4009, response(9, w, 1, random.Random(1), False)))
    m = dns_mode(ModeContext([("eth0", 1)], "deny", events), DnsConfig(max_transactions=4))
    if not fast:
        m._fast_ok = lambda: False  # type: ignore[method-assign]
    m.apply(compile_filters([Filter(id="d", type="dns_domain", pattern="*.watched-bench.com")],
                            "h1", DNS_FILTER_TYPES))  # fmt: skip
    evs = list(m.process(chunk_of(frames, T0)).events)
    c = m.counters()
    assert c.figures["transactions_evicted"] == 6 == c.dropped["transactions_evicted"]
    assert c.figures["dns_unanswered"] == 6
    evs += m.finish().events
    c = m.counters()
    assert c.figures["dns_unanswered"] == 9  # the other 3 at the end; n9 was answered
    if events == "all":  # each with its event: 9 unanswered, n9 answered
        assert sorted((e.dns.qname, e.dns.answered) for e in evs) == sorted(
            [(f"n{i}.other.org", i == 9) for i in range(10)]
        )


def test_ip_address_filter_forwards_whole_transactions() -> None:
    """An ip_address filter selects the transactions of a client (its query and its
    response), beside dns_domain filters; other clients' are not forwarded."""
    import random

    from bench.dns_bench import query, response, udp_frame, wire_name

    srv = bytes([10, 0, 0, 53])
    frames = []
    for i, cli in enumerate((bytes([10, 0, 0, 1]), bytes([10, 0, 0, 99]))):
        w = wire_name(b"www.other.org")
        frames.append(udp_frame(cli, 4000, srv, 53, query(i, w, 1)))
        frames.append(udp_frame(srv, 53, cli, 4000, response(i, w, 1, random.Random(i), False)))
    m = dns_mode(ModeContext([("eth0", 1)], "deny", "captured"), DnsConfig())
    m.apply(compile_filters([Filter(id="ip", type="ip_address", pattern="10.0.0.99"),
                             Filter(id="d", type="dns_domain", pattern="*.watched-bench.com")],
                            "h1", DNS_FILTER_TYPES))  # fmt: skip
    fwd = m.process(chunk_of(frames, T0))
    got = bytes(fwd.chunk.records)
    assert fwd.chunk.caplen.tolist() == [len(frames[2]), len(frames[3])]
    assert frames[2] in got and frames[3] in got
    assert [list(mt.filter_ids) for _, mt in sorted(fwd.meta.items())] == [["ip"], ["ip"]]


@pytest.mark.parametrize("small", [False, True], ids=["4096", "1-5"])
def test_fast_path_events_all_on_the_benchmark_mix(tmp_path, small: bool) -> None:
    """``--events all`` on the benchmark's mix (CNAME matches, NXDOMAIN, tunnels, DNS
    over TCP): the same frames, metadata, events chunk by chunk, tunneling statistics
    and drops as the general path; and the fast path ends most transactions itself."""
    sys.path.insert(0, str(ROOT))
    from bench.dns_bench import make_capture

    cap = tmp_path / "mix.pcap"
    make_capture(cap, 8000, seed=5)
    patterns = ("*.watched-bench.com",) if small else ("*.watched-bench.com", "*.cdn-7.net",
                                                       "*.tunnel-bench.net", "api*")  # fmt: skip
    for pattern in patterns:
        flt = [Filter(id="f", type="dns_domain", pattern=pattern)]
        fast = _replay(cap, flt, True, events="all", small=small)
        _same(fast, _replay(cap, flt, False, events="all", small=small))
        assert fast[2]["fast"]["dropped"] > 6000
        assert sum(map(len, fast[2]["events"])) > 7000
    flt = [Filter(id="f", type="dns_domain", pattern="*.watched-bench.com")]
    # A full table (the fast path's transactions and the engine's share the bound, the
    # least recently active leaves first, with its event), and the other flags.
    cfgs = [DnsConfig(max_transactions=200)]
    if not small:
        cfgs += [DnsConfig(udp_only=True), DnsConfig(detect_tunneling=False)]
    for cfg in cfgs:
        fast = _replay(cap, flt, True, cfg, events="all", small=small)
        _same(fast, _replay(cap, flt, False, cfg, events="all", small=small))
        if cfg.max_transactions == 200:
            assert fast[2]["counters"]["transactions_evicted"] > 1000


def _edge_timeline() -> list[tuple[int, bytes]]:
    """(time, frame) of the shapes around an answered transaction the fast path ends
    itself: retransmitted responses and queries within --dns-grace and after it, a
    response before its query, a query retransmitted and never answered, a CNAME
    match and its retransmitted query, a query with no filter match at all."""
    import struct

    from bench.dns_bench import query, udp_frame, wire_name

    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53])
    s = 10**9

    def resp(qid: int, name: bytes, cname: bytes | None = None) -> bytes:
        rrs = b""
        ptr = b"\xc0\x0c"
        if cname is not None:
            rrs += ptr + struct.pack("!HHIH", 5, 1, 300, len(cname)) + cname
            ptr = struct.pack("!H", 0xC000 | (12 + len(name) + 4 + 12))
        rrs += ptr + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, qid & 0xFF])
        head = struct.pack("!HHHHHH", qid, 0x8180, 1, 1 + (cname is not None), 0, 0)
        return head + name + struct.pack("!HH", 1, 1) + rrs

    def q(port: int, qid: int, name: bytes) -> bytes:
        return udp_frame(a, port, b, 53, query(qid, name, 1))

    def r(port: int, qid: int, name: bytes, cname: bytes | None = None) -> bytes:
        return udp_frame(b, 53, a, port, resp(qid, name, cname))

    n1, n2, n3, n4, n5 = (wire_name(f"n{i}.other.org") for i in range(1, 6))
    w = wire_name("edge.watched-bench.com")
    return sorted([
        (0, q(4001, 1, n1)), (s // 100, r(4001, 1, n1)),  # answered,
        (s // 2, r(4001, 1, n1)), (6 * s // 10, q(4001, 1, n1)),  # then both again
        (5 * s, r(4001, 1, n1)),  # long after: a response of its own
        (s // 10, q(4002, 2, n2)), (3 * s, q(4002, 2, n2)),  # never answered
        (2 * s // 10, r(4003, 3, n3)), (3 * s // 10, q(4003, 3, n3)),  # response first
        (4 * s // 10, q(4004, 4, n4)), (45 * s // 100, r(4004, 4, n4, w)),  # CNAME match
        (7 * s // 10, q(4004, 4, n4)),  # its query again: forwarded with it
        (8 * s // 10, q(4005, 5, n5)),  # unanswered at the end
        (12 * s, q(4006, 6, n1)), (12 * s + 5, r(4006, 6, n1)),  # answered, then the end
    ])  # fmt: skip


@pytest.mark.parametrize("per", [1, 2, 3, 16])
def test_fast_path_events_all_retransmissions_and_timeouts(per: int) -> None:
    """The shapes of :func:`_edge_timeline` in chunks of ``per`` packets, time passing
    (ticks) between them: fast and general paths send the same frames, metadata and
    events in the same calls, and count the same."""
    sys.path.insert(0, str(ROOT))
    timeline = _edge_timeline()

    def sent(f) -> tuple:  # (serialised as returned: a Forward's list is the mode's)
        return (
            bytes(f.chunk.records),
            sorted(v.SerializeToString(deterministic=True) for v in f.meta.values()),
            sorted(e.SerializeToString(deterministic=True) for e in f.events),
        )

    def run(fast: bool) -> tuple:
        m = dns_mode(ModeContext([("eth0", 1)], "deny", "all"), DnsConfig())
        if not fast:
            m._fast_ok = lambda: False  # type: ignore[method-assign]
        flt = [Filter(id="w", type="dns_domain", pattern="*.watched-bench.com")]
        m.apply(compile_filters(flt, "h", DNS_FILTER_TYPES))
        fwds = []
        for k in range(0, len(timeline), per):
            part = timeline[k : k + per]
            ts = array("q", [T0 + t for t, _ in part])
            caps = array("I", [len(f) for _, f in part])
            recs = frame_records(ts, caps, caps, b"".join(f for _, f in part))
            fwds.append(sent(m.process(Chunk(ts, caps, array("I", caps), recs, 0))))
            fwds.append(sent(m.tick(ts[-1] + 10**9 // 2)))
        fwds.append(sent(m.finish()))
        c = m.counters()
        return fwds, {k: c.figures.get(k) for k in SAME_FIGURES}, c.dropped, dict(m.fast)

    fast, slow = run(True), run(False)
    assert fast[0] == slow[0]
    assert fast[1] == slow[1]
    assert fast[2] == slow[2]
    assert fast[3]["dropped"] >= 3  # not vacuous: the fast path ended them itself
    events = [lc_pb2.Event.FromString(e) for f in fast[0] for e in f[2]]
    n1 = [e for e in events if e.dns.qname == "n1.other.org" and e.dns.id == 1]
    # (in one chunk, the transaction is still followed when the late response comes:
    # the table expires once per chunk at most)
    want = [(2, 3)] if per >= len(timeline) else [(0, 1), (2, 2)]
    assert sorted((e.dns.queries, e.dns.responses) for e in n1) == want


def _with_ip_options(frame: bytes) -> bytes:
    """The Ethernet/IPv4 frame with 4 bytes of IP options (NOP, NOP, NOP, EOL): not the
    fast path's shape, so the general path reads it."""
    import struct

    total = struct.unpack_from("!H", frame, 16)[0] + 4
    ip = bytes([0x46]) + frame[15:16] + struct.pack("!H", total) + frame[18:34]
    return frame[:14] + ip + b"\x01\x01\x01\x00" + frame[34:]


@pytest.mark.parametrize("events", ["all", "captured"])
def test_a_response_off_the_fast_path_meets_its_waiting_query(events: str) -> None:
    """A query waits on the fast path; its response takes the general path (IP options
    here; a fragmented response, or one without a question, the same). Found by a
    differential fuzzer: the query was left waiting and timed out unanswered, the
    response stood alone (two events instead of one with --events all; with a CNAME
    match, the response forwarded without its query)."""
    sys.path.insert(0, str(ROOT))
    import struct

    from bench.dns_bench import query, udp_frame, wire_name

    a, b = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 53])
    n, w = wire_name("x.other.org"), wire_name("edge.watched-bench.com")

    def resp(qid: int, cname: bytes | None) -> bytes:
        rrs, ptr = b"", b"\xc0\x0c"
        if cname is not None:
            rrs += ptr + struct.pack("!HHIH", 5, 1, 300, len(cname)) + cname
            ptr = struct.pack("!H", 0xC000 | (12 + len(n) + 4 + 12))
        rrs += ptr + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1])
        head = struct.pack("!HHHHHH", qid, 0x8180, 1, 1 + (cname is not None), 0, 0)
        return head + n + struct.pack("!HH", 1, 1) + rrs

    timeline = [
        (0, udp_frame(a, 4001, b, 53, query(1, n, 1))),
        (10**6, _with_ip_options(udp_frame(b, 53, a, 4001, resp(1, None)))),
        (2 * 10**6, udp_frame(a, 4002, b, 53, query(2, n, 1))),  # its chain matches
        (3 * 10**6, _with_ip_options(udp_frame(b, 53, a, 4002, resp(2, w)))),
    ]

    def run(fast: bool) -> tuple:
        m = dns_mode(ModeContext([("eth0", 1)], "deny", events), DnsConfig())
        if not fast:
            m._fast_ok = lambda: False  # type: ignore[method-assign]
        flt = [Filter(id="w", type="dns_domain", pattern="*.watched-bench.com")]
        m.apply(compile_filters(flt, "h", DNS_FILTER_TYPES))
        ts = array("q", [T0 + t for t, _ in timeline])
        caps = array("I", [len(f) for _, f in timeline])
        recs = frame_records(ts, caps, caps, b"".join(f for _, f in timeline))
        frames, evs = b"", []
        chunk = Chunk(ts, caps, array("I", caps), recs, 0)
        for call in (lambda: m.process(chunk), m.finish):
            f = call()  # (taken as returned: the lists are the mode's)
            frames += bytes(f.chunk.records)
            evs += [(e.SerializeToString(deterministic=True), (e.dns.queries, e.dns.responses))
                    for e in f.events]  # fmt: skip
        return frames, sorted(x for x, _ in evs), sorted(y for _, y in evs)

    fast, slow = run(True), run(False)
    assert fast[:2] == slow[:2]
    assert len(fast[0]) > 0  # the matched transaction's two frames
    assert fast[2] == ([(1, 1)] * 2 if events == "all" else [(1, 1)])
