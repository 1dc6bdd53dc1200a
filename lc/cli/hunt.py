"""``lc hunt``: capture (live or from a file) and forward to a processor."""

from __future__ import annotations

import logging
import sys

import click

from lc.cli.main import fail_line
from lc.cli.options import tls_from_flags, tls_options
from lc.common.errors import LcError, ValidationError

__all__ = ["hunt"]

log = logging.getLogger("lc.hunt")


_HUNT_OPTIONS = [
    click.option(
        "--processor",
        envvar="LC_PROCESSOR",
        metavar="HOST:PORT",
        help="Processor to forward to (env LC_PROCESSOR). Required.",
    ),
    click.option(
        "--id",
        "hunter_id",
        metavar="ID",
        help="Hunter id (default: the name in the certificate, or the host name with --insecure).",
    ),
    click.option(
        "-i",
        "--interface",
        "interfaces",
        multiple=True,
        metavar="IFACE",
        help="Capture live on this interface (repeatable; 'any' for all).",
    ),
    click.option("-r", "--read-file", metavar="FILE", help="Replay a pcap or pcapng file instead."),
    click.option("-f", "--filter", "bpf", metavar="BPF", help="Kernel (BPF) capture filter."),
    click.option("--promisc", is_flag=True, help="Put the interfaces in promiscuous mode."),
    click.option(
        "--snaplen", type=int, default=262144, show_default=True, help="Bytes kept per packet."
    ),
    click.option(
        "--pcap-buffer-mb",
        type=int,
        default=32,
        show_default=True,
        metavar="N",
        help="Kernel capture buffer per live interface; raise it when dropped.kernel grows.",
    ),
    click.option(
        "--batch-size",
        type=int,
        default=64,
        show_default=True,
        help="Packets per batch (grows while the link is busy).",
    ),
    click.option(
        "--batch-timeout",
        "batch_timeout_ms",
        type=int,
        default=100,
        show_default=True,
        metavar="MS",
        help="Send a partial batch after this many milliseconds.",
    ),
    click.option(
        "--replay-speed",
        type=float,
        default=0.0,
        show_default=True,
        metavar="X",
        help="With -r: 0 = as fast as possible, 1 = the capture's own timing, 2 = twice as fast.",
    ),
    click.option(
        "--queue-mb",
        type=int,
        default=256,
        show_default=True,
        help="Memory for batches not yet acknowledged; beyond it batches go to the disk "
        "buffer, or live capture drops (and counts) them.",
    ),
    click.option(
        "--disk-buffer",
        is_flag=True,
        help="Spool to disk what cannot be sent (processor down, PAUSE, full memory); "
        "replayed in order later, also after a hunter restart.",
    ),
    click.option(
        "--disk-buffer-dir",
        metavar="DIR",
        help="Spool directory (default: ./lc-spool/HUNTER_ID).",
    ),
    click.option(
        "--disk-buffer-max-mb",
        type=int,
        default=1024,
        show_default=True,
        help="Spool size limit; when full, the newest batches are dropped and counted.",
    ),
    click.option(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        show_default=True,
        metavar="S",
        help="On stop or end of replay, wait this long for the processor's acks "
        "(then spool the rest with --disk-buffer).",
    ),
    click.option(
        "--no-filter-policy",
        type=click.Choice(["allow", "deny"]),
        default=None,
        help="What to forward while the processor has no filter for this hunter "
        "(generic mode default: allow).",
    ),
    click.option("--connect-timeout", type=float, default=10.0, show_default=True, metavar="S"),
    click.option(
        "--breaker-failures",
        type=int,
        default=5,
        show_default=True,
        metavar="N",
        help="Circuit breaker: open after N consecutive failed connect/register/stream calls.",
    ),
    click.option(
        "--breaker-open-time",
        type=float,
        default=30.0,
        show_default=True,
        metavar="S",
        help="Circuit breaker: stay open (no calls) this long.",
    ),
    click.option(
        "--breaker-half-open",
        type=int,
        default=3,
        show_default=True,
        metavar="N",
        help="Circuit breaker: trial calls let through half open; N successes close it.",
    ),
    click.option(
        "--backoff-max",
        type=float,
        default=60.0,
        show_default=True,
        metavar="S",
        help="Reconnect backoff: 1 s doubling (with jitter) up to this.",
    ),
    click.option(
        "--backoff-initial", type=float, default=1.0, show_default=True, metavar="S", hidden=True
    ),
    click.option(
        "--heartbeat-interval", type=float, default=5.0, show_default=True, metavar="S", hidden=True
    ),
    tls_options,
]


def hunt_options(f):
    """Every ``lc hunt`` option, shared by the generic command and the protocol modes."""
    for opt in reversed(_HUNT_OPTIONS):
        f = opt(f)
    return f


def run_hunter(mode: str, opts: dict, **mode_opts) -> None:
    """Build the HuntConfig from the shared options, run the hunter, exit with its code."""
    from lc.hunter.run import HuntConfig, Hunter

    try:
        if not opts.get("processor"):
            raise ValidationError("Missing option '--processor' (or env LC_PROCESSOR).")
        tls = tls_from_flags(
            opts.pop("tls_cert"), opts.pop("tls_key"), opts.pop("tls_ca"), opts["insecure"]
        )
        if opts.pop("insecure"):
            click.echo(
                "lc hunt: warning: --insecure: traffic is sent in plaintext, unauthenticated",
                err=True,
            )
        cfg = HuntConfig(
            tls=tls, mode=mode, interfaces=list(opts.pop("interfaces")), **opts, **mode_opts
        )
        h = Hunter(cfg)
        code = h.run()
    except LcError as e:
        sys.exit(fail_line("hunt", e))
    click.echo(h.summary())
    for cause in h.causes:
        click.echo(f"lc hunt: error: {cause}", err=True)
    if code != 0 and not h.causes:  # cannot happen; never exit non-zero without a word
        click.echo("lc hunt: error: not every packet was delivered or kept", err=True)
    sys.exit(code)


@click.group(invoke_without_command=True)
@hunt_options
@click.pass_context
def hunt(ctx: click.Context, **opts) -> None:
    """Capture packets and stream them to a processor (generic mode: everything)."""
    if ctx.invoked_subcommand is not None:
        given = [
            k
            for k, v in opts.items()
            if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(
                f"options go after the mode: lc hunt {ctx.invoked_subcommand} [OPTIONS] "
                f"(got {', '.join('--' + g.replace('_', '-') for g in given)} before it)"
            )
        return
    run_hunter("generic", opts)


def _ports(value: str) -> frozenset[int]:
    try:
        ports = frozenset(int(p) for p in value.split(",") if p.strip())
    except ValueError:
        raise click.BadParameter(f"--sip-port {value!r}: a comma-separated list of ports") from None
    if not ports or not all(0 < p < 65536 for p in ports):
        raise click.BadParameter(f"--sip-port {value!r}: ports are 1-65535")
    return ports


def _port_range(value: str) -> tuple[int, int]:
    lo, sep, hi = value.partition("-")
    try:
        a, b = int(lo), int(hi)
    except ValueError:
        raise click.BadParameter(
            f"--rtp-port-range {value!r}: give LOW-HIGH, e.g. 10000-32768"
        ) from None
    if not sep or not 0 < a <= b < 65536:
        raise click.BadParameter(
            f"--rtp-port-range {value!r}: give LOW-HIGH with 1 <= LOW <= HIGH <= 65535"
        )
    return a, b


@hunt.command("voip")
@click.option(
    "--sip-port",
    "sip_ports",
    default="5060,5061",
    show_default=True,
    metavar="PORTS",
    help="Comma-separated ports parsed as SIP (UDP and TCP); also the kernel filter's.",
)
@click.option(
    "--rtp-port-range",
    default="10000-32768",
    show_default=True,
    metavar="LOW-HIGH",
    help="UDP ports captured for RTP/RTCP (tied to calls by their SDP, not by port).",
)
@click.option(
    "--max-calls", type=int, default=20000, show_default=True, help="Calls followed at once."
)
@click.option(
    "--call-buffer-packets",
    type=int,
    default=2000,
    show_default=True,
    help="Packets held per undecided call.",
)
@click.option(
    "--call-buffer-mb",
    type=int,
    default=256,
    show_default=True,
    help="Memory for held packets, over all undecided calls.",
)
@click.option(
    "--call-grace",
    type=float,
    default=5.0,
    show_default=True,
    metavar="S",
    help="A call is followed this long after it ends (late RTP, the 200 to BYE).",
)
@click.option(
    "--call-idle-timeout",
    type=float,
    default=300.0,
    show_default=True,
    metavar="S",
    help="A call without packets this long is over.",
)
@click.option(
    "--call-decide-timeout",
    type=float,
    default=60.0,
    show_default=True,
    metavar="S",
    help="Stop holding a call that no filter matched within this long.",
)
@hunt_options
def voip(
    sip_ports,
    rtp_port_range,
    max_calls,
    call_buffer_packets,
    call_buffer_mb,
    call_grace,
    call_idle_timeout,
    call_decide_timeout,
    **opts,
) -> None:
    """VoIP: capture the SIP and RTP/RTCP of the calls that filters select, whole.

    Calls are held until a SIP message matches a filter (sip_user, phone_number,
    sip_uri, call_id, codec, ip_address); then the call's packets so far and for the
    rest of its life are forwarded. With no filter, nothing is forwarded unless
    --no-filter-policy allow.
    """
    from lc.hunter.voip import VoipConfig

    try:
        ports = _ports(sip_ports)
        rng = _port_range(rtp_port_range)
        for name, v in (
            ("--max-calls", max_calls),
            ("--call-buffer-packets", call_buffer_packets),
            ("--call-buffer-mb", call_buffer_mb),
        ):
            if v < 1:
                raise click.BadParameter(f"{name} must be at least 1")
        for name, v in (
            ("--call-grace", call_grace),
            ("--call-idle-timeout", call_idle_timeout),
            ("--call-decide-timeout", call_decide_timeout),
        ):
            if v <= 0:
                raise click.BadParameter(f"{name} must be positive")
    except click.BadParameter as e:
        sys.exit(fail_line("hunt", ValidationError(e.message)))
    cfg = VoipConfig(
        sip_ports=ports,
        rtp_range=rng,
        max_calls=max_calls,
        max_call_packets=call_buffer_packets,
        max_buffer_bytes=call_buffer_mb * 1024 * 1024,
        grace_ns=int(call_grace * 1e9),
        idle_timeout_ns=int(call_idle_timeout * 1e9),
        decide_timeout_ns=int(call_decide_timeout * 1e9),
    )
    run_hunter("voip", opts, voip=cfg)
