"""lc.common.dnstunnel: registered domains, per-query features, mergeable statistics,
bounds, and the tunneling threshold justified on real tunnels and ordinary traffic.

``test_threshold_separates_tunnels_from_ordinary_traffic`` prints both
distributions (run with ``-s`` to see them): every tunnel capture of the corpus,
every other capture's DNS, and a generated ordinary resolver workload
(tests/common/dns_workload.py), beside a plain weighted sum of the lippycat kind
for comparison.
"""

from __future__ import annotations

import math
import random
import re
import string
from pathlib import Path

import pytest
from dns_workload import benign_tunnels, ordinary_workload
from hypothesis import given, settings
from hypothesis import strategies as st
from test_dns_corpus import CORPUS, dns_messages, need

from lc.common.dns import name_labels, parse_dns
from lc.common.dnstunnel import (
    DEFAULT_THRESHOLD,
    DomainStats,
    TunnelDetector,
    query_features,
    registered_domain,
)
from lc.common.errors import ValidationError

# (capture, its tunnel's registered domain)
TUNNELS = [
    ("dns/dmachard_iodine.pcap", "biillpi.com"),
    ("dns/dmachard_dnscat2.pcap", "biillpi.com"),
    ("dns/dmachard_dns2tcp.pcap", "hsc.fr"),
    ("dns/elastic_dns-tunnel-iodine.pcap", "pirate.sea"),
]
# Every other capture of the corpus that holds DNS (port 53, or mDNS).
ORDINARY = [
    "dns/arkime_dns-tcp.pcap",
    "dns/arkime_dns-wiresharkrepo.pcap",
    "dns/suricata_dns-tcp-multirequest-buffer.pcap",
    "dns/suricata_dns-udp-eve-log-srv.pcap",
    "dns/zeek_ipv6-fragmented-dns.pcap",
    "mixed/ja4_latest.pcapng",
    "mixed/suricata_sip-method.pcap",
    "mixed/zeek_wikipedia.pcap",
    "smtp/zeek_smtp.pcap",
    "tls/arkime_curl-enabled-tls13.pcap",
    "http/arkime_v6-http.pcap",
]


# --- registered domains and features -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("www.example.co.uk", ("example.co.uk", "www")),
        ("A.B.Example.COM", ("example.com", "a.b")),
        ("example.com", ("example.com", "")),
        ("d111111abcdef8.cloudfront.net", ("d111111abcdef8.cloudfront.net", "")),
        ("e12345.dscx.akamaiedge.net", ("dscx.akamaiedge.net", "e12345")),
        ("yrb0pe.t1.biillpi.com", ("biillpi.com", "yrb0pe.t1")),
        ("vaaaakardli.pirate.sea", ("pirate.sea", "vaaaakardli")),
        ("z0p\\228X.t1.biillpi.com", ("biillpi.com", "z0p\\228x.t1")),
        ("a\\.b.example.org", ("example.org", "a\\.b")),
        ("x.\\200\\201.example", ("\\200\\201.example", "x")),
        ("com", None),
        ("localhost", None),
        (".", None),
        ("x.compute-1.amazonaws.com", None),
    ],
)
def test_registered_domain_by_public_suffix_list(
    name: str, expected: tuple[str, bytes] | None
) -> None:
    assert registered_domain(name) == expected


def _psl_vectors() -> list[tuple[str, str | None]]:
    """The Public Suffix List's own test vectors (public domain), as shipped with
    publicsuffixlist: ASCII ones without a leading dot (lc's names have none)."""
    import publicsuffixlist

    path = Path(publicsuffixlist.__file__).with_name("test_psl.txt")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"checkPublicSuffix\('([^']+)', (?:'([^']+)'|null)\);", line.strip())
        if m and m.group(1).isascii() and not m.group(1).startswith("."):
            out.append((m.group(1), m.group(2)))
    return out


def test_registered_domain_passes_the_psl_test_vectors() -> None:
    vectors = _psl_vectors()
    assert len(vectors) > 50
    for name, expected in vectors:
        got = registered_domain(name)
        assert (got[0] if got else None) == expected, name


def test_cached_registered_domains_equal_the_list_on_every_name() -> None:
    """The suffix cache (keyed by as few labels as decide the answer) gives what
    publicsuffixlist gives for the whole name, on the generated workload and the
    corpus tunnels, in one detector (so the cache is warm and shared)."""
    from publicsuffixlist import PublicSuffixList

    psl = PublicSuffixList()
    names = [n for n, _ in ordinary_workload(5000)] + [
        "x.s3.dualstack.us-east-1.amazonaws.com",
        "y.x.s3.dualstack.us-east-1.amazonaws.com",
        "a.b.c.ck",
        "www.ck",
        "a.www.ck",
    ]
    det = TunnelDetector()
    for name in names:
        if name.endswith((".arpa", ".local")):
            continue
        expected = psl.privatesuffix(name.lower())
        got = det.observe(name, 1, 0)
        assert got == expected, name


def test_features() -> None:
    n, h, token, longest, carrier, odd = query_features(b"www")
    assert (n, h, token, longest, carrier, odd) == (3, 0.0, 3, 3, False, False)
    n, h, *_ = query_features(b"aabb")
    assert (n, h) == (4, 1.0)
    # dnscat2: one long hex token
    *_, carrier, odd = query_features(b"147901b8d3df9cc46c59d600078b3316ce")
    assert carrier and not odd
    # long hyphenated host names and letter-only tokens are not carriers
    assert not query_features(b"elastic-search-node-prod-17.data")[4]
    assert not query_features(b"averyveryverylongwordwithoutdigits")[4]
    # 8-bit bytes and base64's +/= are odd (and so carriers)
    assert query_features(b"z0p\xe4x.t1")[4:] == (True, True)
    assert query_features(b"abc+def=")[4:] == (True, True)
    # underscore service labels are ordinary
    assert query_features(b"_ldap._tcp.dc._msdcs")[4:] == (False, False)
    # entropy is Shannon's over the bytes, dots left out
    n, h, *_ = query_features(b"ab.cd")
    assert (n, h) == (4, 2.0)


# --- statistics: merge, compact form, HLL --------------------------------------------------


def _stats(names: list[str], qtype: int = 16, client: str | None = None) -> DomainStats:
    s = DomainStats()
    for i, name in enumerate(names):
        s.add(name.encode(), qtype, 1_000_000_000 + i, client)
    return s


def test_merge_equals_counting_everything_in_one_place() -> None:
    rng = random.Random(3)
    names = [
        "".join(rng.choice(string.ascii_lowercase + "234567") for _ in range(rng.randrange(3, 60)))
        for _ in range(500)
    ]
    whole = _stats(names)
    parts = [DomainStats() for _ in range(3)]
    for i, name in enumerate(names):
        parts[i % 3].add(name.encode(), 16, 1_000_000_000 + i)
    merged = DomainStats()
    for p in parts:
        merged.merge(p)
    assert merged.to_dict() == whole.to_dict()
    assert merged.score() == whole.score()
    # through the compact form too (what hunters send)
    wire = DomainStats()
    for p in parts:
        wire.merge(DomainStats.from_dict(p.to_dict()))
    assert wire.to_dict() == whole.to_dict()


@pytest.mark.parametrize("n", [1, 2, 5, 10, 12, 50, 200, 1000, 10000])
def test_unique_subdomains_estimate(n: int) -> None:
    s = DomainStats()
    for i in range(n):
        for _ in range(2):  # every name twice: repeats do not count
            s.add(b"host-%d" % i, 1, i)
    if n <= 50:
        assert abs(s.unique - n) <= max(1, n // 20), s.unique
    else:
        assert abs(s.unique - n) / n < 0.2, s.unique  # 6.5% standard error, 3 sigma
    assert s.queries == 2 * n


def test_distinct_counts_never_exceed_the_queries() -> None:
    """Linear counting overestimates a handful of names that fell in distinct
    registers (17 for 16 of these; 32 for 30 random tunnel names seen by hand in
    `lc list alerts`): the distinct subdomains are at most the queries, the distinct
    carriers at most the carrier queries."""
    det = TunnelDetector()
    for i in range(300):
        det.observe(f"k{i}x.example.com", 1, i, "c")
        det.observe(f"{i}q7x2k9v4m1z8p3w6r5t0y2u8s4l1.example.org", 16, i, "c")
        for domain in ("example.com", "example.org"):
            s = det.domains[domain]
            assert s.unique <= s.queries and s.unique_carriers <= s.carriers
            assert s.summary()["unique_subdomains"] <= s.queries
    assert det.domains["example.org"].carriers == 300


def test_from_dict_refuses_what_a_peer_could_send_wrong() -> None:
    good = _stats(["abc", "def"], client="192.0.2.1").to_dict()
    assert DomainStats.from_dict(good).to_dict() == good
    for key, bad in [
        ("q", -1),
        ("q", "7"),
        ("q", True),
        ("hll", "not base64!"),
        ("hll", "AAAA"),
        ("mbits", 1.5),
        ("mbits", -1),
        ("carrier_mbits", 10**9),
        ("clients", "192.0.2.1"),
        ("clients", [1, 2]),
        ("carriers", 10**6),
    ]:
        with pytest.raises(ValidationError, match="bad DNS tunneling statistics"):
            DomainStats.from_dict({**good, key: bad})
    missing = dict(good)
    del missing["odd"]
    with pytest.raises(ValidationError, match="odd"):
        DomainStats.from_dict(missing)
    # more clients than the cap: kept up to the cap, the rest counted
    many = {**good, "clients": [f"10.0.0.{i}" for i in range(40)]}
    s = DomainStats.from_dict(many, max_clients=16)
    assert len(s.clients) == 16 and s.clients_dropped == 24


def test_clients_are_capped_and_counted() -> None:
    s = DomainStats(max_clients=3)
    for i in range(10):
        s.add(b"x%d" % i, 1, i, f"10.0.0.{i % 5}")
    # queries whose client was not kept: 10.0.0.3 and 10.0.0.4, twice each
    assert s.clients == {"10.0.0.0", "10.0.0.1", "10.0.0.2"} and s.clients_dropped == 4
    other = DomainStats(max_clients=3)
    other.add(b"y", 1, 99, "10.9.9.9")
    s.merge(other)
    assert len(s.clients) == 3 and s.clients_dropped == 5


def test_score_components_and_bounds() -> None:
    empty = DomainStats()
    assert empty.score() == 0.0 and empty.unique == 0
    one = _stats(["147901b8d3df9cc46c59d600078b3316ce"])
    assert one.score() == 0.0  # one name is no evidence, however odd
    c = _stats([f"{i:02d}" + "147901b8d3df9cc46c59d600078b3316" for i in range(30)]).components()
    assert c["evidence"] == 1.0 and c["carrier"] == 1.0 and c["types"] == 1.0 and c["odd"] == 0.0
    assert math.isclose(c["rate"], 30 / 1.0)  # 30 queries within one second: per second
    # the highest score possible: 1 - (1 - 0.5)(1 - 0.8)(1 - 0.5)(1 - 0.3) = 0.965
    s = DomainStats()
    rng = random.Random(5)
    for i in range(100):
        s.add(rng.randbytes(63), 10, i * 1_000_000_000)
    assert s.score() == pytest.approx(0.965, abs=0.001)
    assert math.isclose(s.components()["rate"], 100 / 99)
    summary = s.summary()
    assert summary["queries"] == 100 and 60 < summary["mean_length"] <= 63  # "." splits labels
    assert 5.5 < summary["mean_entropy"] < 6.0  # 63 random bytes: at most log2(63)
    assert summary["unique_subdomains"] == pytest.approx(100, abs=5)


# --- the detector: bounds and counters ------------------------------------------------------


def test_detector_counts_and_bounds() -> None:
    det = TunnelDetector(max_domains=3, max_cache=4)
    assert det.observe("www.example.com", 1, 1, "10.0.0.1") == "example.com"
    assert det.observe("4.3.2.1.in-addr.arpa", 12, 2) is None
    assert det.observe("com", 1, 3) is None
    assert det.observe("bad\\", 1, 4) is None
    for i in range(6):
        det.observe(f"a.site{i}.org", 1, 10 + i)
    c = det.counters
    assert (c["queries"], c["scored"], c["reverse"], c["no_domain"], c["bad_names"]) == (
        10,
        7,
        1,
        1,
        1,
    )
    assert len(det.domains) == 3 and c["domains_evicted"] == 4
    assert list(det.domains) == ["site3.org", "site4.org", "site5.org"]
    assert c["cache_flushes"] >= 1 and len(det._cache) <= 4
    det.observe("b.site3.org", 1, 20)
    assert list(det.domains)[-1] == "site3.org"  # recently seen moves to the end
    with pytest.raises(ValidationError, match="max_domains"):
        TunnelDetector(max_domains=0)


@given(st.text(max_size=300), st.integers(0, 65535))
@settings(max_examples=500, deadline=None)
def test_detector_never_raises(name: str, qtype: int) -> None:
    det = TunnelDetector()
    det.observe(name, qtype, 0, "x")
    for d, s in det.top():
        assert 0.0 <= s <= 1.0 and d.isascii()


def test_snapshot_reset_and_merge_across_hunters() -> None:
    """A tunnel split over three hunters, each sending snapshots with reset, scores
    at the processor exactly as if one hunter had seen it all."""
    msgs = [parse_dns(raw) for *_, raw in dns_messages(need("dns/elastic_dns-tunnel-iodine.pcap"))]
    queries = [m for m in msgs if not m.qr]
    one = TunnelDetector()
    hunters = [TunnelDetector() for _ in range(3)]
    processor = TunnelDetector()
    for i, m in enumerate(queries):
        one.observe(m.qname, m.qtype, i, "10.0.2.30")
        hunters[i % 3].observe(m.qname, m.qtype, i, "10.0.2.30")
        if i % 50 == 49:
            for h in hunters:
                processor.merge_snapshot(h.snapshot(reset=True))
    for h in hunters:
        processor.merge_snapshot(h.snapshot(reset=True))
        assert h.domains == {}
    assert processor.domains["pirate.sea"].to_dict() == one.domains["pirate.sea"].to_dict()
    assert processor.score("pirate.sea") == one.score("pirate.sea") >= DEFAULT_THRESHOLD
    with pytest.raises(ValidationError):
        processor.merge_snapshot({"x.com": {"q": 1}})


# --- the threshold, by measurement -------------------------------------------------------------


def _detector_for(capture: str) -> TunnelDetector:
    det = TunnelDetector()
    for _n, ts, d, raw in dns_messages(need(capture)):
        msg = parse_dns(raw)
        if not msg.qr and msg.questions:
            det.observe(msg.qname, msg.qtype, ts, d.src_text)
    return det


def plain_weighted_sum(queries: list[tuple[str, int]]) -> dict[str, float]:
    """For comparison only: a score of the simple kind this module improves on (a
    weighted sum of mean entropy, unique subdomains, high-entropy share, TXT/NULL
    share and length, clamped to 1), with normalisations chosen here."""
    per: dict[str, list[tuple[bytes, int]]] = {}
    for name, qtype in queries:
        got = registered_domain(name) if not name.lower().endswith(".arpa") else None
        if got:
            sub = b".".join(name_labels(got[1])) if got[1] else b""
            per.setdefault(got[0], []).append((sub, qtype))
    out = {}
    for domain, items in per.items():
        ents = [query_features(sub)[1] for sub, _ in items]
        lens = [len(sub) for sub, _ in items]
        unique = len({sub for sub, _ in items})
        score = (
            0.3 * min(1, sum(ents) / len(ents) / 4.0)
            + 0.2 * min(1, unique / 50)
            + 0.2 * sum(e > 3.5 for e in ents) / len(ents)
            + 0.15 * sum(t in (10, 16) for _, t in items) / len(items)
            + 0.15 * min(1, sum(lens) / len(lens) / 50)
        )
        out[domain] = min(1.0, score)
    return out


def test_threshold_separates_tunnels_from_ordinary_traffic() -> None:
    rows: list[tuple[str, str, str, int, int, float, float]] = []

    plain_alerts: dict[str, list[str]] = {"tunnel": [], "ordinary": []}

    def add(
        kind: str, source: str, det: TunnelDetector, queries: list[tuple[str, int]], top: int
    ) -> None:
        plain = plain_weighted_sum(queries)
        if kind == "tunnel":
            plain_alerts["tunnel"] += [d for d, p in plain.items() if p >= DEFAULT_THRESHOLD]
        elif kind != "benign tunnel":
            plain_alerts["ordinary"] += [d for d, p in plain.items() if p >= DEFAULT_THRESHOLD]
        for domain, score in det.top(top):
            s = det.domains[domain]
            rows.append((kind, source, domain, s.queries, s.unique, score, plain.get(domain, 0.0)))

    def queries_of(capture: str) -> list[tuple[str, int]]:
        msgs = [parse_dns(raw) for *_, raw in dns_messages(need(capture))]
        return [(m.qname, m.qtype) for m in msgs if not m.qr and m.questions]

    tunnel_scores = {}
    for capture, domain in TUNNELS:
        det = _detector_for(capture)
        tunnel_scores[capture] = det.score(domain)
        add("tunnel", capture, det, queries_of(capture), 1)
        assert det.top(1)[0][0] == domain
    ordinary_scores = []
    for capture in ORDINARY:
        det = _detector_for(capture)
        assert det.counters["queries"], f"{capture}: no query seen"
        ordinary_scores += [s for _, s in det.top(len(det.domains))]
        add("corpus", capture, det, queries_of(capture), 2)
    workload = ordinary_workload()
    det = TunnelDetector()
    for i, (name, qtype) in enumerate(workload):
        det.observe(name, qtype, i * 5_000_000, f"10.1.{i % 7}.{i % 251}")
    workload_scores = [s for _, s in det.top(len(det.domains))]
    add(
        "generated",
        f"ordinary workload ({len(workload)} queries, {len(det.domains)} domains)",
        det,
        workload,
        10,
    )
    benign = benign_tunnels()
    bdet = TunnelDetector()
    for i, (name, qtype) in enumerate(benign):
        bdet.observe(name, qtype, i * 5_000_000)
    add("benign tunnel", "file-hash reputation look-ups", bdet, benign, 1)

    print(f"\n{'kind':<14}{'source':<58}{'domain':<28}{'q':>6}{'uniq':>6}{'score':>7}{'plain':>7}")
    for kind, source, domain, q, u, score, plain in rows:
        print(f"{kind:<14}{source[:57]:<58}{domain[:27]:<28}{q:>6}{u:>6}{score:>7.3f}{plain:>7.3f}")
    ordinary = sorted(ordinary_scores + workload_scores)
    buckets = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.01]
    counts = [
        sum(lo <= s < hi for s in ordinary)
        for lo, hi in zip([0.0, *buckets], buckets, strict=False)
    ]
    print(
        "ordinary domains by score: "
        + ", ".join(f"<{b:.1f}: {c}" for b, c in zip(buckets, counts, strict=True))
    )
    print(
        f"plain sum at {DEFAULT_THRESHOLD}: {len(plain_alerts['tunnel'])} of {len(TUNNELS)} "
        f"tunnels, ordinary alerts {sorted(plain_alerts['ordinary'])}"
    )
    low = min(tunnel_scores.values())
    print(f"highest ordinary {ordinary[-1]:.3f}, lowest tunnel {low:.3f}")

    assert all(s >= DEFAULT_THRESHOLD for s in tunnel_scores.values()), tunnel_scores
    assert max(ordinary) < DEFAULT_THRESHOLD
    # the margins the module docstring reports
    assert min(tunnel_scores.values()) >= 0.8 and max(ordinary) < 0.6
    assert len(ordinary) > 1500
    # and, as documented, services that carry data in names do score as tunnels
    assert bdet.score("fhash-reputation.example") >= DEFAULT_THRESHOLD


def test_corpus_is_where_expected() -> None:
    assert CORPUS.name == "corpus"
