"""``lc hunt``: capture (live or from a file) and forward to a processor."""

from __future__ import annotations

import logging
import sys

import click

from lc.cli.main import fail_line
from lc.cli.options import tls_from_flags, tls_options
from lc.common.errors import LcError

__all__ = ["hunt"]

log = logging.getLogger("lc.hunt")


@click.command()
@click.option(
    "--processor",
    envvar="LC_PROCESSOR",
    required=True,
    metavar="HOST:PORT",
    help="Processor to forward to (env LC_PROCESSOR).",
)
@click.option(
    "--id",
    "hunter_id",
    metavar="ID",
    help="Hunter id (default: the name in the certificate, or the host name with --insecure).",
)
@click.option(
    "-i",
    "--interface",
    "interfaces",
    multiple=True,
    metavar="IFACE",
    help="Capture live on this interface (repeatable; 'any' for all).",
)
@click.option("-r", "--read-file", metavar="FILE", help="Replay a pcap or pcapng file instead.")
@click.option("-f", "--filter", "bpf", metavar="BPF", help="Kernel (BPF) capture filter.")
@click.option("--promisc", is_flag=True, help="Put the interfaces in promiscuous mode.")
@click.option(
    "--snaplen", type=int, default=262144, show_default=True, help="Bytes kept per packet."
)
@click.option(
    "--batch-size",
    type=int,
    default=64,
    show_default=True,
    help="Packets per batch (grows while the link is busy).",
)
@click.option(
    "--batch-timeout",
    "batch_timeout_ms",
    type=int,
    default=100,
    show_default=True,
    metavar="MS",
    help="Send a partial batch after this many milliseconds.",
)
@click.option(
    "--replay-speed",
    type=float,
    default=0.0,
    show_default=True,
    metavar="X",
    help="With -r: 0 = as fast as possible, 1 = the capture's own timing, 2 = twice as fast.",
)
@click.option(
    "--queue-mb",
    type=int,
    default=256,
    show_default=True,
    help="Memory for batches not yet acknowledged; live capture drops (and counts) beyond it.",
)
@click.option(
    "--shutdown-timeout",
    type=float,
    default=30.0,
    show_default=True,
    metavar="S",
    help="On stop or end of replay, wait this long for the processor's acks.",
)
@click.option(
    "--no-filter-policy",
    type=click.Choice(["allow", "deny"]),
    default=None,
    help="What to forward while the processor has no filter for this hunter "
    "(generic mode default: allow).",
)
@click.option("--connect-timeout", type=float, default=10.0, show_default=True, metavar="S")
@click.option(
    "--heartbeat-interval", type=float, default=5.0, show_default=True, metavar="S", hidden=True
)
@tls_options
def hunt(
    processor,
    hunter_id,
    interfaces,
    read_file,
    bpf,
    promisc,
    snaplen,
    batch_size,
    batch_timeout_ms,
    replay_speed,
    queue_mb,
    shutdown_timeout,
    no_filter_policy,
    connect_timeout,
    heartbeat_interval,
    tls_cert,
    tls_key,
    tls_ca,
    insecure,
) -> int:
    """Capture packets and stream them to a processor (generic mode: everything)."""
    from lc.hunter.run import HuntConfig, Hunter

    try:
        tls = tls_from_flags(tls_cert, tls_key, tls_ca, insecure)
        if insecure:
            click.echo(
                "lc hunt: warning: --insecure: traffic is sent in plaintext, unauthenticated",
                err=True,
            )
        cfg = HuntConfig(
            processor=processor,
            interfaces=list(interfaces),
            read_file=read_file,
            hunter_id=hunter_id,
            bpf=bpf,
            promisc=promisc,
            snaplen=snaplen,
            batch_size=batch_size,
            batch_timeout_ms=batch_timeout_ms,
            tls=tls,
            replay_speed=replay_speed,
            queue_mb=queue_mb,
            shutdown_timeout=shutdown_timeout,
            heartbeat_interval=heartbeat_interval,
            connect_timeout=connect_timeout,
            no_filter_policy=no_filter_policy,
        )
        h = Hunter(cfg)
        code = h.run()
    except LcError as e:
        sys.exit(fail_line("hunt", e))
    click.echo(h.summary())
    if code != 0:
        click.echo(
            "lc hunt: error: not every packet was acknowledged before the shutdown timeout",
            err=True,
        )
    sys.exit(code)
