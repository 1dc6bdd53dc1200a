"""DNS tunneling alerts at the processor (lc.processor.tunnels.TunnelAlerts): statistics
added up per registered domain across hunters (a tunnel split over sensors is one
tunnel), the --tunneling-threshold, debouncing per domain, exactly-once with
rollback, bounds, and the alert's event as the event log writes it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from lc.common.dns import parse_dns
from lc.common.dnstunnel import TunnelDetector
from lc.common.errors import ValidationError
from lc.common.pcapfile import open_capture
from lc.processor.eventlog import event_document
from lc.processor.sinks import Received
from lc.processor.tunnels import TunnelAlerts, alerts_json
from lc.proto import lc_pb2

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
NS = 1_000_000_000


def iodine_queries() -> list[tuple[str, int, int]]:
    """(name, type, time) of every query of the dmachard iodine capture (12, one
    domain: biillpi.com, 0.867 over all of them)."""
    path = CORPUS / "dns" / "dmachard_iodine.pcap"
    if not path.exists():
        pytest.skip("corpus not present")
    out = []
    with open_capture(path) as rd:
        for ts, _, data, _ in rd.records():
            msg = parse_dns(bytes(data)[42:])
            if not msg.qr:
                out.append((msg.qname, msg.qtype, ts))
    assert len(out) == 12
    return out


def report(queries, client: str = "192.168.1.17", shift: int = 0) -> list:
    """A hunter's report (the DnsTunnelStats of a batch) of these queries."""
    det = TunnelDetector()
    for name, qtype, ts in queries:
        det.observe(name, qtype, ts + shift, client)
    return [
        lc_pb2.DnsTunnelStats(domain=d, stats=orjson.dumps(s))
        for d, s in det.snapshot(reset=True).items()
    ]


_seq = [0]


def batch(hunter: str, stats: list) -> Received:
    _seq[0] += 1
    cols = SimpleNamespace(dns_tunnel=stats, events=[])
    return Received(hunter, 1, _seq[0], cols)  # type: ignore[arg-type]


def commit(t: TunnelAlerts, *batches: Received) -> list[lc_pb2.Event]:
    """Batches written as one group and committed: the alert events they carry."""
    for b in batches:
        t.write(b)
    t.prepare()
    t.committed()
    return [ev for b in batches for _, ev in b.cols.events]


def test_a_tunnel_split_over_two_hunters_is_one_alert() -> None:
    """Each hunter sees half of the iodine tunnel: neither half reaches the threshold
    alone, their sum does, as one alert naming both hunters, scored as if one hunter
    had seen everything."""
    qs = iodine_queries()
    one = TunnelDetector()
    for name, qtype, ts in qs:
        one.observe(name, qtype, ts, "192.168.1.17")
    for half in (qs[:6], qs[6:]):
        alone = TunnelAlerts()
        assert commit(alone, batch("h1", report(half))) == [] and alone.alerts() == []
    t = TunnelAlerts()
    assert commit(t, batch("h1", report(qs[:6]))) == []
    (ev,) = commit(t, batch("h2", report(qs[6:])))
    (a,) = t.alerts()
    assert a.domain == "biillpi.com" and list(a.hunters) == ["h1", "h2"]
    assert a.score == pytest.approx(one.score("biillpi.com")) and a.score >= 0.7
    assert list(a.clients) == ["192.168.1.17"] and a.queries == 12
    assert list(ev.dns.alert.hunters) == ["h1", "h2"]
    assert ev.dns.alert.score == pytest.approx(a.score)


def test_the_threshold_decides() -> None:
    qs = iodine_queries()
    high = TunnelAlerts(threshold=0.95)
    assert commit(high, batch("h1", report(qs))) == [] and high.alerts() == []
    low = TunnelAlerts(threshold=0.5)
    assert len(commit(low, batch("h1", report(qs)))) == 1
    for bad in (0, -0.1, 1.01, float("nan")):
        with pytest.raises(ValidationError):
            TunnelAlerts(threshold=bad)


def test_alerts_are_debounced_per_domain_by_capture_time() -> None:
    """More of the same tunnel within debounce_ns (capture time) of the last alert adds
    to its entry in the list (queries, last seen) but writes no second event; past it,
    a new event; another domain alerts on its own."""
    qs = iodine_queries()
    t = TunnelAlerts(debounce_ns=600 * NS)
    assert len(commit(t, batch("h1", report(qs)))) == 1
    assert commit(t, batch("h2", report(qs, shift=60 * NS))) == []
    (a,) = t.alerts()
    assert a.queries == 24 and list(a.hunters) == ["h1", "h2"]
    assert a.last_seen_ns == qs[-1][2] + 60 * NS
    renamed = [(n.replace("biillpi.com", "other-tunnel.net"), q, ts) for n, q, ts in qs]
    assert len(commit(t, batch("h1", report(renamed, shift=61 * NS)))) == 1
    (ev,) = commit(t, batch("h1", report(qs, shift=60 * NS + 601 * NS)))
    assert ev.dns.alert.domain == "biillpi.com" and ev.dns.alert.queries == 36
    assert t.counters["alerts"] == 3
    assert [a.domain for a in t.alerts()] == ["other-tunnel.net", "biillpi.com"]


def test_a_batch_taken_back_adds_nothing_and_its_resend_adds_once() -> None:
    qs = iodine_queries()
    t = TunnelAlerts()
    b = batch("h1", report(qs))
    mark = t.mark()
    t.write(b)
    assert len(b.cols.events) == 1  # staged
    t.rollback(mark)
    t.prepare()
    t.committed()
    assert t.alerts() == [] and t.counters["alerts"] == 0 and not t.detector.domains
    again = batch("h1", report(qs))
    assert len(commit(t, again)) == 1
    assert t.alerts()[0].queries == 12 and t.counters["reports"] == 1


def test_malformed_statistics_are_counted_never_fatal() -> None:
    t = TunnelAlerts()
    bad = [lc_pb2.DnsTunnelStats(domain="x.com", stats=b"{"),
           lc_pb2.DnsTunnelStats(domain="y.com", stats=b"[1]"),
           lc_pb2.DnsTunnelStats(domain="z.com", stats=orjson.dumps({"q": -1}))]  # fmt: skip
    assert commit(t, batch("h1", bad)) == []
    assert t.counters["bad_stats"] == 3 and not t.detector.domains


def test_alert_state_is_bounded() -> None:
    """At most max_alerts alerts are listed (the oldest dropped, counted), and what
    debounces them is bounded with them: a peer naming ever new tunnel domains does
    not grow the processor's memory without end."""
    qs = iodine_queries()
    t = TunnelAlerts(max_alerts=3)
    for i in range(10):
        renamed = [(n.replace("biillpi.com", f"t{i}.example"), q, ts) for n, q, ts in qs]
        assert len(commit(t, batch("h1", report(renamed)))) == 1
    assert [a.domain for a in t.alerts()] == ["t7.example", "t8.example", "t9.example"]
    assert t.counters["alerts"] == 10 and t.counters["alerts_dropped"] == 7
    assert len(t._alerted_at) <= 3
    # a listed one is still debounced
    assert commit(t, batch("h2", report([(n.replace("biillpi.com", "t9.example"), q, ts)
                                         for n, q, ts in qs]))) == []  # fmt: skip


def test_the_alert_event_and_the_listing_carry_the_required_fields() -> None:
    """event.kind alert with the domain, score, components, clients and hunters, as
    the event log writes it; `lc list alerts` JSON with at least domain, score,
    components, hunters, clients, first_seen, last_seen."""
    qs = iodine_queries()
    t = TunnelAlerts()
    commit(t, batch("h1", report(qs[:6])))
    (ev,) = commit(t, batch("h2", report(qs[6:], client="192.168.1.18")))
    doc = event_document(ev, "h2", "h2:1:2:10000")
    assert doc["event"]["kind"] == "alert" and doc["event"]["dataset"] == "lc.dns"
    assert doc["dns"]["question"]["registered_domain"] == "biillpi.com"
    tun = doc["lc"]["dns_tunnel"]
    assert tun["domain"] == "biillpi.com" and tun["score"] >= 0.7
    assert set(tun["components"]) == {"info", "carrier", "odd", "types", "evidence", "rate"}
    assert tun["clients"] == ["192.168.1.17", "192.168.1.18"]
    assert tun["hunters"] == ["h1", "h2"]
    assert tun["first_seen"] < tun["last_seen"]
    (listed,) = alerts_json(t.alerts())
    assert {"domain", "score", "components", "hunters", "clients", "first_seen",
            "last_seen"} <= set(listed)  # fmt: skip
    assert listed["hunters"] == ["h1", "h2"] and listed["domain"] == "biillpi.com"
    assert listed["first_seen"].endswith("Z") and listed["first_seen"] < listed["last_seen"]


def test_an_alert_raised_within_a_group_names_every_hunter_of_the_group() -> None:
    """Hunters' batches are written in groups: when h1's and h2's halves of a tunnel are
    in one group, the alert event (raised by h2's batch) names both hunters, as the
    listing does, not only those of earlier groups plus h2; a batch taken back takes
    its hunter back too."""
    qs = iodine_queries()
    t = TunnelAlerts()
    (ev,) = commit(t, batch("h1", report(qs[:6])), batch("h2", report(qs[6:])))
    assert list(ev.dns.alert.hunters) == ["h1", "h2"]
    assert list(t.alerts()[0].hunters) == ["h1", "h2"]
    t = TunnelAlerts()
    t.write(batch("h3", report(qs[:3])))
    mark = t.mark()
    t.write(batch("h1", report(qs[3:6])))
    t.rollback(mark)
    b = batch("h2", report(qs[3:]))
    t.write(b)
    t.prepare()
    t.committed()
    ((_, ev),) = b.cols.events
    assert list(ev.dns.alert.hunters) == ["h2", "h3"]
    assert list(t.alerts()[0].hunters) == ["h2", "h3"]
