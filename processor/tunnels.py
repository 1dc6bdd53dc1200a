"""DNS tunneling across hunters: statistics added up per registered domain, alerts.

Hunters in DNS mode (``lc hunt dns``) count every query they see in a
:class:`lc.common.dnstunnel.TunnelDetector` and send what came since their last report
on a batch (``PacketBatch.dns_tunnel``: one ``DnsTunnelStats`` per domain, the
``DomainStats.to_dict()`` form as JSON). Riding on a batch, the statistics are
acknowledged, spooled through outages and deduplicated like packets: each report is
added exactly once.

:class:`TunnelAlerts` is a **sink** placed before the event log. For every batch it
adds each domain's statistics into one detector for all hunters (a tunnel spread over
several sensors is still one tunnel), remembers which hunters reported it, and scores
the domains it touched. A domain whose score reaches ``--tunneling-threshold`` raises
an **alert**: a ``DnsEvent`` with ``alert`` set is appended to the batch's events, so
the event log writes it (``event.kind: alert``) in the same transaction as the batch,
exactly once. Debounced per domain: no second alert event for a domain within
``debounce_ns`` (capture time of its queries) of its last one; its entry in
:meth:`alerts` keeps being updated meanwhile (score, components, clients, hunters,
last seen).

A batch that fails in any sink is taken back: statistics and alerts of the batches of
the current group are staged and only become the state at :meth:`committed`, so a
resend adds them once. Malformed statistics from a peer are skipped and counted
(``bad_stats``), never refuse the batch.

Bounds: the detector keeps at most ``max_domains`` domains (least recent evicted,
counted), each with at most 16 clients; hunters per domain at most 64; alerts at most
``max_alerts`` (oldest dropped, counted; a dropped alert's domain is no longer
debounced). State lives in memory: after a restart the
sums start again (the alerts already written stay in the event log).
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Sequence

import orjson

from lc.common.dnstunnel import DEFAULT_THRESHOLD, DomainStats, TunnelDetector
from lc.common.errors import ValidationError
from lc.common.text import wire_text
from lc.processor.sinks import Received, Statements
from lc.proto import lc_pb2

__all__ = ["TunnelAlerts"]

_MAX_HUNTERS = 64
_DOMAIN_MAX = 256


class TunnelAlerts:
    """The tunneling sink (see the module docstring). Thread-safe reads (:meth:`alerts`)."""

    name = "dns_tunnel"

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        debounce_ns: int = 600 * 10**9,
        max_domains: int = 100_000,
        max_alerts: int = 10_000,
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValidationError(f"--tunneling-threshold {threshold}: must be in (0, 1]")
        self.threshold = threshold
        self.debounce_ns = debounce_ns
        self.max_alerts = max_alerts
        self.detector = TunnelDetector(max_domains=max_domains)
        self._hunters: dict[str, list[str]] = {}
        self._alerts: OrderedDict[str, lc_pb2.DnsTunnelAlert] = OrderedDict()
        self._alerted_at: dict[str, int] = {}  # domain -> last_seen of its last alert event
        self._lock = threading.Lock()
        # This group's batches, applied to the detector at committed(): per batch its
        # parsed statistics and the alerts it raised (domain -> last_seen).
        self._staged: list[tuple[Received, list[tuple[str, DomainStats]], dict[str, int]]] = []
        self._stage: dict[str, DomainStats] = {}  # committed + staged, per touched domain
        self._stage_alerted: dict[str, int] = {}
        self.counters = dict.fromkeys(("reports", "bad_stats", "alerts", "alerts_dropped"), 0)

    # -- the sink ------------------------------------------------------------------------
    def mark(self) -> object:
        return len(self._staged)

    def write(self, batch: Received) -> None:
        stats = batch.cols.dns_tunnel
        if not stats:
            return
        parsed: list[tuple[str, DomainStats]] = []
        for st in stats:
            try:
                d = orjson.loads(st.stats)
                if not isinstance(d, dict):
                    raise ValidationError("not an object")
                domain = wire_text(st.domain, _DOMAIN_MAX).lower()
                parsed.append((domain, DomainStats.from_dict(d)))
            except (orjson.JSONDecodeError, ValidationError):
                self.counters["bad_stats"] += 1
        if not parsed:
            return
        alerted: dict[str, int] = {}
        self._staged.append((batch, parsed, alerted))
        self._add(parsed)
        hunter = wire_text(batch.hunter_id, 256)
        for domain in dict.fromkeys(d for d, _ in parsed):
            self._judge(domain, hunter, batch, alerted)

    def _add(self, parsed: list[tuple[str, DomainStats]]) -> None:
        stage = self._stage
        for domain, s in parsed:
            cur = stage.get(domain)
            if cur is None:
                cur = stage[domain] = DomainStats(self.detector.max_clients)
                base = self.detector.domains.get(domain)
                if base is not None:
                    cur.merge(base)
            cur.merge(s)

    def _judge(self, domain: str, hunter: str, batch: Received, alerted: dict[str, int]) -> None:
        stats = self._stage[domain]
        score = stats.score()
        if score < self.threshold:
            return
        last = self._stage_alerted.get(domain, self._alerted_at.get(domain))
        if last is not None and stats.last_ns - last < self.debounce_ns:
            return
        self._stage_alerted[domain] = alerted[domain] = stats.last_ns
        # the hunters of earlier groups, and of this group's batches so far (this one's)
        staged = {
            wire_text(b.hunter_id, 256)
            for b, parsed, _ in self._staged
            if any(d == domain for d, _ in parsed)
        }
        hunters = sorted({*self._hunters.get(domain, ()), *staged, hunter})[:_MAX_HUNTERS]
        ev = lc_pb2.Event(
            dataset="dns",
            start_ns=stats.first_ns,
            end_ns=stats.last_ns,
            session_id=f"dns-tunnel:{domain}",
            captured=False,
        )
        ev.dns.alert.CopyFrom(self._alert(domain, stats, score, hunters))
        ev.dns.registered_domain = domain
        ev.dns.tunnel_score = score
        events = batch.cols.events
        events.append((10_000 + len(events), ev))  # its place: after the hunter's events

    @staticmethod
    def _alert(
        domain: str, stats: DomainStats, score: float, hunters: list[str]
    ) -> lc_pb2.DnsTunnelAlert:
        return lc_pb2.DnsTunnelAlert(
            domain=domain,
            score=score,
            components=stats.components(),
            clients=sorted(wire_text(c, 64) for c in stats.clients),
            hunters=hunters,
            first_seen_ns=stats.first_ns,
            last_seen_ns=stats.last_ns,
            queries=stats.queries,
            unique_subdomains=stats.unique,
        )

    def rollback(self, mark: object) -> None:
        n = int(mark)  # type: ignore[call-overload]
        if n >= len(self._staged):
            return
        kept = self._staged[:n]
        self._staged = kept
        self._stage = {}
        self._stage_alerted = {}
        for _, parsed, alerted in kept:
            self._add(parsed)
            self._stage_alerted.update(alerted)

    def prepare(self) -> Statements:
        return ()

    def committed(self) -> None:
        if not self._staged:
            return
        with self._lock:
            touched: set[str] = set()
            for batch, parsed, alerted in self._staged:
                hunter = wire_text(batch.hunter_id, 256)
                self.counters["reports"] += 1
                for domain, s in parsed:
                    self.detector.merge_domain(domain, s)
                    touched.add(domain)
                    hs = self._hunters.setdefault(domain, [])
                    if hunter not in hs and len(hs) < _MAX_HUNTERS:
                        hs.append(hunter)
                self._alerted_at.update(alerted)
                self.counters["alerts"] += len(alerted)
            if len(self._hunters) > 2 * self.detector.max_domains:
                live = self.detector.domains
                self._hunters = {d: h for d, h in self._hunters.items() if d in live}
            for domain in touched:
                stats = self.detector.domains.get(domain)
                if domain not in self._alerted_at or stats is None:
                    continue
                self._alerts[domain] = self._alert(
                    domain, stats, stats.score(), sorted(self._hunters.get(domain, ()))
                )
                self._alerts.move_to_end(domain)
                while len(self._alerts) > self.max_alerts:
                    gone, _ = self._alerts.popitem(last=False)
                    self._alerted_at.pop(gone, None)
                    self.counters["alerts_dropped"] += 1
            if len(self._alerted_at) > self.max_alerts:
                # an alerted domain evicted from the detector before its commit: its
                # debounce goes (what debounces is bounded with the list)
                self._alerted_at = {d: t for d, t in self._alerted_at.items() if d in self._alerts}
            self._staged = []
            self._stage = {}
            self._stage_alerted = {}

    def close(self) -> Statements:
        return ()

    # -- reading -------------------------------------------------------------------------
    def alerts(self) -> list[lc_pb2.DnsTunnelAlert]:
        """Every alert raised (each domain once, kept up to date), newest activity last."""
        with self._lock:
            return [copy.copy(a) for a in self._alerts.values()]

    def figures(self) -> dict[str, int]:
        with self._lock:
            out = dict(self.counters)
            out["domains"] = len(self.detector.domains)
            return out


def alerts_json(alerts: Sequence[lc_pb2.DnsTunnelAlert]) -> list[dict[str, object]]:
    """Alerts as ``lc list alerts`` prints them."""
    from lc.processor.eventlog import iso_ns

    return [
        {
            "domain": a.domain,
            "score": round(a.score, 6),
            "components": {k: round(v, 6) for k, v in sorted(a.components.items())},
            "hunters": list(a.hunters),
            "clients": list(a.clients),
            "first_seen": iso_ns(a.first_seen_ns),
            "last_seen": iso_ns(a.last_seen_ns),
            "queries": a.queries,
            "unique_subdomains": a.unique_subdomains,
        }
        for a in alerts
    ]
