"""The hunter's Prometheus metrics, read from its heartbeat counters at scrape time.

Nothing here runs per packet: :func:`hunter_collector` builds the metric families
from :meth:`lc.hunter.run.Hunter.counters` (the same figures a heartbeat carries) when
Prometheus asks. The mode's figures are exposed generically, one family per figure
(``lc_hunter_mode_<figure>``, label ``mode``): a figure the mode reports as a level
(:attr:`lc.hunter.modes.base.ModeCounters.levels`) is a gauge, every other a counter
(``_total``). The README's metrics table lists every family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from lc import __version__

if TYPE_CHECKING:
    from lc.hunter.run import Hunter

__all__ = ["BREAKER_STATES", "FLOW_STATES", "hunter_collector"]

BREAKER_STATES = ("closed", "open", "half_open")
FLOW_STATES = ("CONTINUE", "SLOW", "PAUSE", "RESUME")

_SPOOL = (
    ("appended", "lc_hunter_spool_appended_batches", "Batches written to the disk buffer."),
    ("replayed", "lc_hunter_spool_replayed_batches", "Batches read back from it and sent."),
    ("write_errors", "lc_hunter_spool_write_errors", "Appends to the disk buffer that failed."),
    ("corrupt", "lc_hunter_spool_corrupt_records", "Damaged disk-buffer records skipped."),
)


def hunter_collector(hunter: Hunter) -> Callable[[], Iterable[Any]]:
    """A collect() function for ``hunter``'s metrics (see the module docstring)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    # The mode's level figures, asked again only when a figure appears that was not there.
    known: dict[str, frozenset[str]] = {"levels": frozenset(), "seen": frozenset()}

    def collect() -> Iterable[Any]:
        c = hunter.counters(usage=False)
        mode = hunter.cfg.mode
        info = GaugeMetricFamily(
            "lc_hunter_info",
            "The hunter: its id, mode and version.",
            labels=["id", "mode", "version"],
        )
        info.add_metric([hunter.hunter_id or _starting_id(hunter), mode, __version__], 1)
        yield info
        for name, value, doc in (
            ("lc_hunter_packets_captured", c.captured, "Packets read from the capture."),
            ("lc_hunter_bytes_captured", c.bytes_captured, "Packet bytes read from the capture."),
            ("lc_hunter_packets_forwarded", c.forwarded, "Packets put into batches."),
            ("lc_hunter_packets_acknowledged", c.acked, "Packets the processor acknowledged."),
            ("lc_hunter_batches_sent", c.batches_sent, "Batches sent to the processor."),
            ("lc_hunter_reconnects", c.reconnects, "Streams to the processor re-established."),
            ("lc_hunter_connect_failures", c.connect_failures,
             "Failed connect/register/stream calls."),
            ("lc_hunter_packets_filtered", c.dropped.get("filtered", 0),
             "Packets no filter wanted (not a loss)."),
        ):  # fmt: skip
            yield CounterMetricFamily(name, doc, value=value)
        dropped = CounterMetricFamily(
            "lc_hunter_packets_dropped",
            "Packets lost, by reason (kernel, interface, queue_full, spool_full, malformed, ...).",
            labels=["reason"],
        )
        for reason, n in sorted(c.dropped.items()):
            if reason != "filtered":
                dropped.add_metric([reason], n)
        yield dropped
        up = hunter.uplink
        connected = up is not None and up.connected.is_set()
        yield GaugeMetricFamily(
            "lc_hunter_processor_connected",
            "1 while a registered session with the processor is up.",
            value=int(connected),
        )
        for name, doc, states, current in (
            ("lc_hunter_breaker_state", "The circuit breaker's state (1 for the current one).",
             BREAKER_STATES, c.breaker),
            ("lc_hunter_flow_state", "The flow state the processor last asked for.",
             FLOW_STATES, c.flow),
        ):  # fmt: skip
            g = GaugeMetricFamily(name, doc, labels=["state"])
            for s in states:
                g.add_metric([s], int(s == current))
            yield g
        yield GaugeMetricFamily(
            "lc_hunter_queue_batches",
            "Batches waiting to be sent or acknowledged.",
            value=c.queue_batches,
        )
        yield GaugeMetricFamily(
            "lc_hunter_queue_bytes", "Bytes of those batches.", value=c.queue_bytes
        )
        spool = c.spool if c.HasField("spool") else None
        yield GaugeMetricFamily(
            "lc_hunter_spool_bytes",
            "Bytes of the disk buffer's segment files (0 without --disk-buffer).",
            value=spool.bytes if spool else 0,
        )
        yield GaugeMetricFamily(
            "lc_hunter_spool_batches",
            "Batches in the disk buffer not yet acknowledged.",
            value=spool.records if spool else 0,
        )
        for field, name, doc in _SPOOL:
            yield CounterMetricFamily(name, doc, value=getattr(spool, field) if spool else 0)
        figures = dict(c.mode)
        if not figures.keys() <= known["seen"]:  # first scrape, or a figure new since
            m = hunter.mode
            known["levels"] = m.counters().levels if m is not None else frozenset()
            known["seen"] = frozenset(figures)
        lv = known["levels"]
        for key, value in sorted(figures.items()):
            name = "lc_hunter_mode_" + _metric_name(key)
            doc = f"The {mode} mode's figure {key}."
            if key in lv:
                g = GaugeMetricFamily(name, doc, labels=["mode"])
                g.add_metric([mode], value)
                yield g
            else:
                k = CounterMetricFamily(name, doc, labels=["mode"])
                k.add_metric([mode], value)
                yield k

    return collect


def _starting_id(hunter: Hunter) -> str:
    """The id a hunter scraped before its run has worked it out will use (the endpoint
    starts first): the same series from the first scrape on, not ``id=""`` then the id."""
    from lc.common.errors import LcError
    from lc.hunter.run import default_hunter_id

    try:
        return default_hunter_id(hunter.cfg)
    except LcError:  # run() refuses it and stops the hunter
        return ""


def _metric_name(key: str) -> str:
    """A figure's key as a metric name part: [a-zA-Z0-9_] only (keys are checked tokens
    already; this is a guard), and no ``_total`` doubled by the counter suffix."""
    out = "".join(ch if (ch.isalnum() and ch.isascii()) or ch == "_" else "_" for ch in key)
    return out.removesuffix("_total")
