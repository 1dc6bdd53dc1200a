"""``lc hunt``: capture (live or from a file) and forward to a processor."""

from __future__ import annotations

import logging
import sys

import click

from lc.cli.config import check_deferred, config_option
from lc.cli.main import fail_line
from lc.cli.options import (
    check_own_role,
    check_target,
    metrics_from_flags,
    metrics_options,
    tls_from_flags,
    tls_options,
)
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
        "(default: allow for plain lc hunt, deny for the protocol modes).",
    ),
    click.option(
        "--events",
        type=click.Choice(["captured", "all"]),
        default="captured",
        show_default=True,
        help="Session events (a call ended, ...) to send: those of the sessions whose "
        "packets are captured, or all sessions the mode parsed (metadata only for the "
        "others).",
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
    metrics_options,
    tls_options,
    config_option,
]


def hunt_options(f):
    """Every ``lc hunt`` option, shared by the generic command and the protocol modes."""
    for opt in reversed(_HUNT_OPTIONS):
        f = opt(f)
    return f


def run_hunter(mode: str, opts: dict, mode_config: object = None) -> None:
    """Build the HuntConfig from the shared options, run the hunter, exit with its code."""
    from lc.hunter.run import HuntConfig, Hunter

    try:
        if not opts.get("processor"):
            raise ValidationError(
                "Missing option '--processor' (or env LC_PROCESSOR, or processor: in --config)."
            )
        check_target(opts["processor"], "--processor")
        if opts["insecure"] and getattr(mode_config, "tls_keylog", ""):
            raise ValidationError(
                "--tls-keylog: TLS keys travel only over the mutual-TLS link, "
                "not with --insecure (plaintext, unauthenticated)"
            )
        tls = tls_from_flags(
            opts.pop("tls_cert"), opts.pop("tls_key"), opts.pop("tls_ca"), opts["insecure"]
        )
        check_own_role(tls, "hunter", "lc hunt", "lc certs add --hunter ID issues one")
        metrics = metrics_from_flags(opts, tls)
        if opts.pop("insecure"):
            click.echo(
                "lc hunt: warning: --insecure: traffic is sent in plaintext, unauthenticated",
                err=True,
            )
        cfg = HuntConfig(
            tls=tls,
            mode=mode,
            mode_config=mode_config,
            interfaces=list(opts.pop("interfaces")),
            **opts,
        )
        h = Hunter(cfg)
        server = None
        if metrics is not None:
            from lc.common.metrics import MetricsServer
            from lc.hunter.metrics import hunter_collector

            host, port, mtls = metrics
            server = MetricsServer(host, port, [hunter_collector(h)], tls=mtls).start()  # type: ignore[arg-type]
            click.echo(f"lc hunt: metrics on {server.url}", err=True)
        bar = None
        if cfg.read_file:
            from lc.cli import progress

            if progress.wanted(sys.stderr):  # never a bar in a pipe or a log file
                bar = h.progress = progress.ReplayProgress(cfg.read_file)
        try:
            code = h.run()
        finally:
            if bar is not None:
                bar.close()
            if server is not None:
                server.close()
    except LcError as e:
        sys.exit(fail_line("hunt", e))
    click.echo(h.summary())
    for cause in h.causes:
        click.echo(f"lc hunt: error: {cause}", err=True)
    if code != 0 and not h.causes:  # cannot happen; never exit non-zero without a word
        click.echo("lc hunt: error: not every packet was delivered or kept", err=True)
    sys.exit(code)


class _ModeGroup(click.Group):
    """``lc hunt``'s subcommands: one per registered protocol mode (lc.hunter.modes)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from lc.hunter import modes

        return [n for n in modes.names() if n != "generic"]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from lc.hunter import modes

        spec = modes.get(cmd_name)
        if spec is None or cmd_name == "generic":
            return None
        return mode_command(spec)


def mode_command(spec) -> click.Command:
    """The ``lc hunt NAME`` command of a mode: every ``lc hunt`` option plus the flags
    its config declares (:func:`lc.hunter.modes.base.option`)."""
    from lc.hunter.modes.base import cli_options, parse_options

    flags = cli_options(spec.config)

    def callback(**opts) -> None:
        # A flag left at its default takes the config's own default: so only a value the
        # user gave (command line, LC_* environment, --config) is checked, and e.g. an
        # empty local filter list given on purpose is refused rather than ignored.
        ctx = click.get_current_context()
        default = click.core.ParameterSource.DEFAULT
        texts = {name: opts.pop(name) for name, _ in flags}
        texts = {k: v for k, v in texts.items() if ctx.get_parameter_source(k) != default}
        try:
            cfg = parse_options(spec.config, texts)
        except LcError as e:
            sys.exit(fail_line("hunt", e))
        run_hunter(spec.name, opts, mode_config=cfg)

    f = hunt_options(callback)
    for name, opt in reversed(flags):
        if opt.switch:
            f = click.option(opt.flag, name, is_flag=True, flag_value="yes", default=opt.default,
                             help=opt.help)(f)  # fmt: skip
            continue
        # A default of "true"/"false" makes an on/off flag (--x, or --x/--no-x).
        onoff = opt.default in ("true", "false")
        f = click.option(
            opt.flag,
            name,
            default=opt.default == "true" if onoff else opt.default,
            is_flag=onoff,
            show_default=True,
            metavar=opt.metavar,
            help=opt.help,
        )(f)
    return click.command(spec.name, help=spec.help)(f)


@click.group(cls=_ModeGroup, invoke_without_command=True)
@hunt_options
@click.pass_context
def hunt(ctx: click.Context, **opts) -> None:
    """Capture packets and stream them to a processor (generic mode: everything)."""
    if ctx.invoked_subcommand is not None:
        given = [
            k
            for k in [*opts, "config"]
            if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(
                f"options go after the mode: lc hunt {ctx.invoked_subcommand} [OPTIONS] "
                f"(got {', '.join('--' + g.replace('_', '-') for g in given)} before it)"
            )
        return
    check_deferred(ctx)
    run_hunter("generic", opts)
