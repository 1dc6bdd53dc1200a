"""Admin commands: ``lc list hunters``, ``lc show status``, ``lc show hunter``, filters, calls.

Output is JSON on stdout; errors are JSON on stderr with the exit code in it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from lc.cli.main import fail_json
from lc.cli.options import check_target, tls_from_flags, tls_options
from lc.common.errors import LcError, NotFound, ValidationError

__all__ = ["list_group", "rm_group", "set_group", "show_group"]


def _processor_option(f: Callable) -> Callable:
    return click.option(
        "--processor",
        envvar="LC_PROCESSOR",
        metavar="HOST:PORT",
        help="Processor to ask (env LC_PROCESSOR).",
    )(f)


def _call(processor: str, tls_args: tuple, rpc: Callable[[Any], Any]) -> Any:
    import grpc

    from lc.common.transport import error_from_rpc, open_channel, wait_ready
    from lc.proto import lc_pb2_grpc

    check_target(processor, "--processor")
    tls = tls_from_flags(*tls_args)
    channel = open_channel(processor, tls)
    try:
        wait_ready(channel, processor, tls, timeout=10)
        stub = lc_pb2_grpc.ManagementServiceStub(channel)
        try:
            return rpc(stub)
        except grpc.RpcError as e:
            raise error_from_rpc(e, processor) from None
    finally:
        channel.close()


def _run(processor: str, tls_args: tuple, rpc: Callable[[Any], Any], render: Callable) -> None:
    from lc.common.wire import dumps

    try:
        result = _call(processor, tls_args, rpc)
    except LcError as e:
        sys.exit(fail_json(e))
    click.echo(dumps(render(result)))


@click.group(name="list")
def list_group() -> None:
    """List objects held by a processor (JSON)."""


@click.group(name="show")
def show_group() -> None:
    """Show one object held by a processor (JSON)."""


@list_group.command(name="hunters")
@_processor_option
@tls_options
def list_hunters(processor, tls_cert, tls_key, tls_ca, insecure) -> None:
    """Every hunter the processor knows, with its state and counters."""
    from lc.common.wire import message_to_json
    from lc.proto import lc_pb2

    _run(
        processor,
        (tls_cert, tls_key, tls_ca, insecure),
        lambda s: s.ListHunters(lc_pb2.ListHuntersRequest(), timeout=10),
        lambda r: [message_to_json(h) for h in r.hunters],
    )


@list_group.command(name="calls")
@_processor_option
@click.option("--active", is_flag=True, help="Only calls still going (ringing or answered).")
@click.option("--user", metavar="USER", help="Only calls whose From or To user is exactly USER.")
@click.option(
    "--limit",
    type=click.IntRange(0, 2**32 - 1),
    default=0,
    metavar="N",
    help="At most N calls, newest first (default: all).",
)
@tls_options
def list_calls(processor, active, user, limit, tls_cert, tls_key, tls_ca, insecure) -> None:
    """Calls in the processor's call index (needs lc process --per-call-pcap-dir), newest first."""
    from lc.common.wire import message_to_json
    from lc.proto import lc_pb2

    req = lc_pb2.ListCallsRequest(active=active, user=user or "", limit=limit)
    _run(
        processor,
        (tls_cert, tls_key, tls_ca, insecure),
        lambda s: s.ListCalls(req, timeout=30),
        lambda r: [message_to_json(c) for c in r.calls],
    )


@list_group.command(name="alerts")
@_processor_option
@tls_options
def list_alerts(processor, tls_cert, tls_key, tls_ca, insecure) -> None:
    """DNS tunneling alerts, aggregated over every hunter (domain, score, components,
    hunters, clients, first and last seen)."""
    from lc.processor.tunnels import alerts_json
    from lc.proto import lc_pb2

    _run(
        processor,
        (tls_cert, tls_key, tls_ca, insecure),
        lambda s: s.ListAlerts(lc_pb2.ListAlertsRequest(), timeout=10),
        lambda r: alerts_json(r.alerts),
    )


@show_group.command(name="status")
@_processor_option
@tls_options
def show_status(processor, tls_cert, tls_key, tls_ca, insecure) -> None:
    """The processor's status: hunters, packets and bytes written, output files."""
    from lc.common.wire import message_to_json
    from lc.proto import lc_pb2

    _run(
        processor,
        (tls_cert, tls_key, tls_ca, insecure),
        lambda s: s.GetStatus(lc_pb2.StatusRequest(), timeout=10),
        message_to_json,
    )


@show_group.command(name="topology")
@_processor_option
@tls_options
def show_topology(processor, tls_cert, tls_key, tls_ca, insecure) -> None:
    """The processor tree below the processor: its hunters, the processors forwarding to
    it (lc process --upstream), theirs, and so on, with states and depth."""
    from lc.common.wire import message_to_json
    from lc.proto import lc_pb2

    _run(
        processor,
        (tls_cert, tls_key, tls_ca, insecure),
        lambda s: s.GetTopology(lc_pb2.TopologyRequest(), timeout=10),
        message_to_json,
    )


@show_group.command(name="hunter")
@_processor_option
@click.option("--id", "hunter_id", required=True, metavar="ID")
@tls_options
def show_hunter(processor, hunter_id, tls_cert, tls_key, tls_ca, insecure) -> None:
    """One hunter: identity, state, its own counters and what the processor received."""
    from lc.common.wire import message_to_json
    from lc.proto import lc_pb2

    _run(
        processor,
        (tls_cert, tls_key, tls_ca, insecure),
        lambda s: s.GetHunter(lc_pb2.GetHunterRequest(hunter_id=hunter_id), timeout=10),
        message_to_json,
    )


# -- filters -----------------------------------------------------------------------------


@click.group(name="set")
def set_group() -> None:
    """Create or change objects at a processor (JSON)."""


@click.group(name="rm")
def rm_group() -> None:
    """Remove objects from a processor (JSON)."""


def _load_filter_file(path: str) -> list:
    """Filters from a YAML (or JSON) file: a list of filters, or {"filters": [...]}."""
    import yaml

    from lc.common.filters import Filter

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError:
        raise NotFound(f"filter file not found: {path}") from None
    except (OSError, yaml.YAMLError) as e:
        raise ValidationError(f"cannot read filter file {path}: {e}") from None
    if isinstance(doc, dict) and "filters" in doc:
        doc = doc["filters"]
    if not isinstance(doc, list) or not doc:
        raise ValidationError(f"{path}: expected a list of filters (or 'filters:' with one)")
    out = []
    for i, item in enumerate(doc, 1):
        if not isinstance(item, dict):
            raise ValidationError(f"{path}: filter #{i} is not a mapping")
        # as `lc list filters` prints: the version and origin are the processor's to set
        item = {k: v for k, v in item.items() if k not in ("version", "origin")}
        item.setdefault("id", "")
        try:
            out.append(Filter.from_mapping(item))
        except ValidationError as e:
            raise ValidationError(f"{path}: filter #{i}: {e}") from None
    return out


@set_group.command(name="filter")
@_processor_option
@click.option("-f", "--file", "file", metavar="FILE.yaml", help="Import every filter in a file.")
@click.option("--id", "filter_id", metavar="ID", help="Filter id (generated when omitted).")
@click.option("--type", "ftype", metavar="TYPE", help="bpf, ip_address, sip_user, ... (README).")
@click.option("--pattern", metavar="P", help="What to match (wildcards: README).")
@click.option("--hunters", metavar="H1,H2", help="Only these hunters (default: every able one).")
@click.option("--description", default="", metavar="TEXT")
@click.option("--disabled", is_flag=True, help="Keep the filter but apply it nowhere.")
@tls_options
def set_filter(
    processor,
    file,
    filter_id,
    ftype,
    pattern,
    hunters,
    description,
    disabled,
    tls_cert,
    tls_key,
    tls_ca,
    insecure,
) -> None:
    """Create or replace filters; prints them as stored, with the new version."""
    from lc.common.filters import Filter
    from lc.common.wire import filter_to_proto, message_to_json
    from lc.proto import lc_pb2

    try:
        if file:
            if ftype or pattern or filter_id or hunters:
                raise ValidationError("-f/--file cannot be combined with --id/--type/--pattern")
            filters = _load_filter_file(file)
        else:
            if not ftype or pattern is None:
                raise ValidationError("give --type and --pattern, or -f FILE.yaml")
            hs = tuple(h.strip() for h in hunters.split(",") if h.strip()) if hunters else ()
            filters = [
                Filter(
                    id=filter_id or "",
                    type=ftype,
                    pattern=pattern,
                    enabled=not disabled,
                    description=description,
                    hunters=hs,
                )
            ]
    except LcError as e:
        sys.exit(fail_json(e))
    req = lc_pb2.SetFiltersRequest(filters=[filter_to_proto(f) for f in filters])
    _run(
        processor,
        (tls_cert, tls_key, tls_ca, insecure),
        lambda s: s.SetFilters(req, timeout=30),
        lambda r: {"filters": [message_to_json(f) for f in r.filters], "version": r.version},
    )


@rm_group.command(name="filter")
@_processor_option
@click.option("--id", "filter_id", required=True, metavar="ID")
@tls_options
def rm_filter(processor, filter_id, tls_cert, tls_key, tls_ca, insecure) -> None:
    """Remove a filter; every hunter stops applying it."""
    from lc.proto import lc_pb2

    _run(
        processor,
        (tls_cert, tls_key, tls_ca, insecure),
        lambda s: s.DeleteFilter(lc_pb2.DeleteFilterRequest(id=filter_id), timeout=30),
        lambda r: {"removed": filter_id, "version": r.version},
    )


@list_group.command(name="filters")
@_processor_option
@click.option("--hunter", "hunter_id", metavar="ID", help="Only the filters this hunter applies.")
@tls_options
def list_filters(processor, hunter_id, tls_cert, tls_key, tls_ca, insecure) -> None:
    """Every filter (a list that `lc set filter -f` imports again)."""
    from lc.common.wire import message_to_json
    from lc.proto import lc_pb2

    _run(
        processor,
        (tls_cert, tls_key, tls_ca, insecure),
        lambda s: s.ListFilters(lc_pb2.ListFiltersRequest(hunter_id=hunter_id or ""), timeout=30),
        lambda r: [message_to_json(f) for f in r.filters],
    )


@show_group.command(name="filter")
@_processor_option
@click.option("--id", "filter_id", required=True, metavar="ID")
@tls_options
def show_filter(processor, filter_id, tls_cert, tls_key, tls_ca, insecure) -> None:
    """One filter."""
    from lc.common.wire import message_to_json
    from lc.proto import lc_pb2

    _run(
        processor,
        (tls_cert, tls_key, tls_ca, insecure),
        lambda s: s.GetFilter(lc_pb2.GetFilterRequest(id=filter_id), timeout=10),
        message_to_json,
    )
