"""``lc process``: accept hunters, write PCAP, answer the admin commands."""

from __future__ import annotations

import logging
import sys

import click

from lc.cli.config import config_option
from lc.cli.main import fail_line
from lc.cli.options import (
    check_own_role,
    check_target,
    metrics_from_flags,
    metrics_options,
    parse_duration,
    parse_size,
    tls_from_flags,
    tls_options,
)
from lc.common.errors import LcError, ValidationError

__all__ = ["process"]

log = logging.getLogger("lc.process")


@click.command()
@click.option(
    "--listen",
    default=":55555",
    show_default=True,
    metavar="[HOST]:PORT",
    help="Address for hunters and admin clients.",
)
@click.option("--id", "processor_id", metavar="ID", help="Processor id (default: host name).")
@click.option(
    "-w",
    "--write-file",
    metavar="FILE",
    help="Unified PCAP output (default: DATA_DIR/capture.pcap).",
)
@click.option(
    "--data-dir",
    default="lc-data",
    show_default=True,
    metavar="DIR",
    help="Directory for the processor's state and default output.",
)
@click.option("--rotate-size", metavar="SIZE", help="Start a new file past this size (e.g. 100M).")
@click.option(
    "--rotate-interval", metavar="DURATION", help="Start a new file after this long (e.g. 15m)."
)
@click.option(
    "--per-call-pcap-dir",
    metavar="DIR",
    help="Also write one PCAP per VoIP call there, and keep a call index (lc list calls).",
)
@click.option(
    "--per-call-pcap-pattern",
    default="{timestamp}_{callid}.pcap",
    show_default=True,
    metavar="PATTERN",
    help="Per-call file name; tokens {callid} {from} {to} {timestamp} {hunter}.",
)
@click.option(
    "--call-grace",
    type=float,
    default=5.0,
    show_default=True,
    metavar="S",
    hidden=True,
    help="Seconds (of capture time) a call's file stays open after the call ended.",
)
@click.option(
    "--call-idle-timeout",
    type=float,
    default=300.0,
    show_default=True,
    metavar="S",
    hidden=True,
    help="Seconds (of capture time) without a packet after which a call is closed.",
)
@click.option(
    "--events-dir",
    metavar="DIR",
    help="Event log directory: one JSON line per session event (default: DATA_DIR/events).",
)
@click.option(
    "--events-rotate-size",
    metavar="SIZE",
    help="Start a new event log file past this size (default 100M; also every day, UTC).",
)
@click.option("--no-events", is_flag=True, help="Write no event log.")
@click.option(
    "--tunneling-threshold",
    type=float,
    default=0.7,
    show_default=True,
    metavar="SCORE",
    help="DNS tunneling: alert when a domain's score, over all hunters, reaches this (0-1].",
)
@click.option(
    "--upstream",
    metavar="HOST:PORT",
    help="Forward every committed batch to this processor (a processor tree), with this "
    "processor's own certificate; batches wait in DATA_DIR/upstream-spool while it is down.",
)
@click.option(
    "--upstream-spool-max-mb",
    type=click.IntRange(1),
    default=10240,
    show_default=True,
    metavar="N",
    help="Bound of the upstream spool; when it is nearly full, hunters are asked to PAUSE.",
)
@click.option(
    "--upstream-backoff-max",
    type=click.FloatRange(0.1),
    default=60.0,
    show_default=True,
    metavar="S",
    help="Longest wait between attempts to reach the upstream.",
)
@click.option(
    "--upstream-breaker-open-time",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    metavar="S",
    help="Seconds without attempts once 5 attempts in a row failed.",
)
@click.option(
    "--max-tree-depth",
    type=click.IntRange(0, 64),
    default=8,
    show_default=True,
    metavar="N",
    help="Processor levels allowed below this one (the top's value counts, one less "
    "at each level down); a processor that would pass it, or close a cycle, is refused.",
)
@click.option(
    "--stale-after", type=float, default=30.0, show_default=True, metavar="S", hidden=True
)
@click.option(
    "--test-slow-writer",
    "slow_writer_file",
    metavar="FILE",
    hidden=True,
    help="Tests only: while FILE exists, each batch takes 50 ms more to write.",
)
@metrics_options
@click.option(
    "--events-redis",
    metavar="redis://HOST:PORT/N",
    help="Also append every event to the Redis stream lc:events (XADD), from the event "
    "log on disk: a down Redis never delays writing; events are sent later, at least once.",
)
@click.option(
    "--events-redis-maxlen",
    type=int,
    default=1_000_000,
    show_default=True,
    metavar="N",
    help="Cap the stream at about N entries (XADD MAXLEN ~ N).",
)
@click.option(
    "--hep-out",
    metavar="udp://HOST:PORT",
    help="Send every SIP message (and RTCP) written as HEPv3 to a HOMER collector or "
    "sngrep (udp:// or tcp://).",
)
@click.option(
    "--hep-agent-id", type=int, default=0, show_default=True, metavar="N",
    help="HEP capture agent id.",
)  # fmt: skip
@click.option("--hep-password", metavar="TEXT", help="HEP authentication key (optional).")
@tls_options
@config_option
def process(
    listen,
    processor_id,
    write_file,
    data_dir,
    rotate_size,
    rotate_interval,
    per_call_pcap_dir,
    per_call_pcap_pattern,
    call_grace,
    call_idle_timeout,
    events_dir,
    events_rotate_size,
    no_events,
    tunneling_threshold,
    upstream,
    upstream_spool_max_mb,
    upstream_backoff_max,
    upstream_breaker_open_time,
    max_tree_depth,
    stale_after,
    slow_writer_file,
    tls_cert,
    tls_key,
    tls_ca,
    insecure,
    **observe,
) -> None:
    """Run a processor: receive hunters' packets and write them to PCAP.

    With --upstream HOST:PORT it is an edge of a processor tree: it also forwards every
    batch it committed, under the hunter's own id, epoch and sequence, to the upstream
    processor (which deduplicates them as its own hunters'), through a disk spool that
    keeps them, in order, across upstream outages and restarts of either side. Filters
    set upstream reach its hunters; its own stay here. See README, "Processor tree".
    """
    from lc.processor.forward import UpstreamConfig
    from lc.processor.server import ProcessConfig, Processor

    try:
        tls = tls_from_flags(tls_cert, tls_key, tls_ca, insecure)
        # a hunter's or the admin's certificate would start, then fail every handshake
        check_own_role(
            tls,
            "processor",
            "lc process",
            "lc certs init makes processor.pem, lc certs add --processor NAME another",
        )
        metrics = metrics_from_flags(observe, tls)
        up = None
        if upstream is not None:
            up = UpstreamConfig(
                check_target(upstream, "--upstream"),
                spool_max_bytes=upstream_spool_max_mb * 1024 * 1024,
                backoff_max=upstream_backoff_max,
                breaker_open_time=upstream_breaker_open_time,
            )
        cfg = ProcessConfig(
            listen=listen,
            processor_id=processor_id,
            tls=tls,
            write_file=write_file,
            data_dir=data_dir,
            rotate_size=parse_size(rotate_size, "--rotate-size"),
            rotate_interval=parse_duration(rotate_interval, "--rotate-interval"),
            stale_after=stale_after,
            slow_writer_file=slow_writer_file,
            per_call_pcap_dir=per_call_pcap_dir,
            per_call_pcap_pattern=per_call_pcap_pattern,
            call_grace=call_grace,
            call_idle_timeout=call_idle_timeout,
            events=not no_events,
            events_dir=events_dir,
            events_rotate_size=parse_size(events_rotate_size, "--events-rotate-size"),
            tunneling_threshold=tunneling_threshold,
            **observe,  # --events-redis*, --hep-*
            upstream=up,
            max_tree_depth=max_tree_depth,
        )
        if no_events and (events_dir or events_rotate_size):
            raise ValidationError(
                "--no-events cannot be combined with --events-dir or --events-rotate-size"
            )
        p = Processor(cfg)
        server = None
        if metrics is not None:  # bound before the processor listens: a bad port stops both
            from lc.common.metrics import MetricsServer
            from lc.processor.metrics import processor_collector

            host, mport, mtls = metrics
            server = MetricsServer(host, mport, [processor_collector(p)], tls=mtls)  # type: ignore[arg-type]
        port = p.start()
    except LcError as e:
        sys.exit(fail_line("process", e))
    if server is not None:
        server.start()
        click.echo(f"lc process: metrics on {server.url}", err=True)
    if insecure:
        click.echo(
            "lc process: warning: --insecure: plaintext, no client authentication "
            "and no authorization; anyone who reaches the port can send and query",
            err=True,
        )
    calls_note = ""
    if p.calls is not None:
        calls_note = f" and one file per call in {p.calls.directory}"
    if p.events is not None:
        calls_note += f"; events to {p.events.directory}"
    if p.forwarder is not None:
        calls_note += (
            f"; forwarding to {upstream} as processor {p.processor_id} "
            f"(spool {p.forwarder.directory})"
        )
    click.echo(
        f"lc process: listening on {p.mgmt.listen} (port {port}), "
        f"writing {cfg.output_path()}{calls_note}",
        err=True,
    )
    p.serve_forever()
    if server is not None:
        server.close()
    stopped = (
        f"lc process: stopped; wrote {p.ingest.packets} packets in "
        f"{p.ingest.batches} batches to {', '.join(p.sink.files()) or 'no file'}"
    )
    if p.calls is not None:
        c = p.calls.counters
        stopped += (
            f"; {c['packets']} packets of {c['calls_opened']} new calls in {p.calls.directory}"
            f" ({c['duplicates']} duplicates dropped, {c['reopened']} files continued)"
        )
    if p.events is not None:
        stopped += f"; {p.ingest.events} events to {p.events.directory}"
    if p.redis is not None:
        stopped += f"; {p.redis.sent} events to Redis ({p.redis.errors} failed rounds)"
    if p.hep is not None:
        stopped += f"; {p.hep.sent} HEP messages sent ({sum(p.hep.dropped.values())} dropped)"
    click.echo(stopped, err=True)
