"""The processor's Prometheus metrics, read from its status counters at scrape time.

Nothing here runs per batch: the writer keeps plain integers (:class:`Ingest`'s
counters, its commit-time :class:`lc.common.metrics.Buckets`), the observers theirs,
the registry its hunters; :func:`processor_collector` reads them when Prometheus
asks. Labels are bounded: hunter states, flow states, reasons, and event datasets
(the first :data:`MAX_DATASETS` names seen that look like one; any other is counted
under ``other``, since a dataset is a string a hunter sends). No hunter id, address,
filter id or Call-ID is ever a label: with ``--insecure`` anyone may invent hunter ids,
and the registry keeps every id it saw; each hunter's own endpoint has its figures.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from lc import __version__
from lc.proto import lc_pb2

if TYPE_CHECKING:
    from lc.processor.server import Processor

__all__ = ["MAX_DATASETS", "processor_collector"]

MAX_DATASETS = 32
_DATASET_RE = re.compile(r"[a-z0-9_.-]{1,32}")
FLOW_STATES = ("CONTINUE", "SLOW", "PAUSE")


def dataset_labels(counts: dict[str, int], limit: int = MAX_DATASETS) -> dict[str, int]:
    """Counts by dataset with at most ``limit`` labels (in name order) plus ``other``."""
    out: dict[str, int] = {}
    other = 0
    for name in sorted(counts):
        if _DATASET_RE.fullmatch(name) and len(out) < limit and name != "other":
            out[name] = counts[name]
        else:
            other += counts[name]
    if other:
        out["other"] = other
    return out


def processor_collector(p: Processor) -> Callable[[], Iterable[Any]]:
    """A collect() function for processor ``p``'s metrics (see the module docstring)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    def collect() -> Iterable[Any]:
        ing = p.ingest
        info = GaugeMetricFamily(
            "lc_processor_info", "The processor: its id and version.", labels=["id", "version"]
        )
        info.add_metric([p.processor_id, __version__], 1)
        yield info
        hunters = GaugeMetricFamily(
            "lc_processor_hunters", "Hunters known, by state.", labels=["state"]
        )
        for state, n in sorted(p.registry.state_counts().items()):
            hunters.add_metric([state], n)
        yield hunters
        for name, value, doc in (
            ("lc_processor_packets_written", ing.packets, "Packets written (acknowledged)."),
            ("lc_processor_bytes_written", ing.bytes, "Packet bytes written (no pcap headers)."),
            ("lc_processor_batches_written", ing.batches, "Batches written."),
            ("lc_processor_batches_received", ing.received, "Batches received."),
            ("lc_processor_batches_duplicate", ing.duplicates,
             "Batches received again and acknowledged without writing."),
            ("lc_processor_write_errors", ing.write_errors,
             "Batches or groups that failed to write."),
            ("lc_processor_events_malformed", ing.bad_events, "Events skipped as malformed."),
            ("lc_processor_observer_groups_dropped", ing.observers.dropped,
             "Committed groups never shown to the observers (their queue was full)."),
        ):  # fmt: skip
            yield CounterMetricFamily(name, doc, value=value)
        events = CounterMetricFamily(
            "lc_processor_events_written", "Events written to the event log, by dataset.",
            labels=["dataset"],
        )  # fmt: skip
        for ds, n in dataset_labels(ing.status.snapshot()[1]).items():
            events.add_metric([ds], n)
        yield events
        yield GaugeMetricFamily(
            "lc_processor_write_queue_batches",
            "Batches received and not yet written.",
            value=ing.queue_batches,
        )
        yield GaugeMetricFamily(
            "lc_processor_write_queue_bytes", "Bytes of those batches.", value=ing.queue_bytes
        )
        flow = GaugeMetricFamily(
            "lc_processor_flow_state", "What the processor asks hunters (1: now).", labels=["state"]
        )
        now = lc_pb2.FlowState.Name(ing.flow).removeprefix("FLOW_")
        for s in FLOW_STATES:
            flow.add_metric([s], int(s == now))
        yield flow
        buckets, total = ing.commit_seconds.cumulative()
        yield HistogramMetricFamily(
            "lc_processor_batch_commit_seconds",
            "Per group of batches: seconds from the writer taking it to its ledger commit "
            "(how long its batches wait for their Acks once dequeued).",
            buckets=buckets,
            sum_value=total,
        )
        tunnels = getattr(p, "tunnels", None)
        if tunnels is not None:
            fig = tunnels.figures()
            yield CounterMetricFamily(
                "lc_processor_dns_tunnel_alerts",
                "DNS tunneling alerts raised (a domain reaching --tunneling-threshold).",
                value=fig.get("alerts", 0),
            )
        calls = getattr(p, "calls", None)
        if calls is not None:
            c = calls.counters
            yield CounterMetricFamily(
                "lc_processor_calls_opened", "Per-call files started for new calls.",
                value=c["calls_opened"],
            )  # fmt: skip
            yield CounterMetricFamily(
                "lc_processor_call_packets_written", "Packets written to per-call files.",
                value=c["packets"],
            )  # fmt: skip
            yield GaugeMetricFamily(
                "lc_processor_calls_open", "Calls with an open per-call file now.",
                value=calls.calls,
            )  # fmt: skip
        upstream = getattr(p, "forwarder", None)
        for out in [*getattr(p, "forwarders", ()), *([upstream] if upstream else [])]:
            for name, kind, doc, value in out.figures():
                family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                yield family(name, doc, value=value)

    return collect
