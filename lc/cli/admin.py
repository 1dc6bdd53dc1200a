"""Admin commands: ``lc list hunters``, ``lc show status``, ``lc show hunter``.

Output is JSON on stdout; errors are JSON on stderr with the exit code in it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from lc.cli.main import fail_json
from lc.cli.options import tls_from_flags, tls_options
from lc.common.errors import LcError, NotFound, PermissionDenied, Unreachable, ValidationError

__all__ = ["list_group", "show_group"]


def _processor_option(f: Callable) -> Callable:
    return click.option(
        "--processor",
        envvar="LC_PROCESSOR",
        required=True,
        metavar="HOST:PORT",
        help="Processor to ask (env LC_PROCESSOR).",
    )(f)


def _call(processor: str, tls_args: tuple, rpc: Callable[[Any], Any]) -> Any:
    import grpc

    from lc.common.transport import open_channel
    from lc.proto import lc_pb2_grpc

    tls = tls_from_flags(*tls_args)
    channel = open_channel(processor, tls)
    try:
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
        except grpc.FutureTimeoutError:
            raise Unreachable(f"cannot reach processor at {processor}") from None
        stub = lc_pb2_grpc.ManagementServiceStub(channel)
        try:
            return rpc(stub)
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
            if code == grpc.StatusCode.NOT_FOUND:
                raise NotFound(details) from None
            if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                raise PermissionDenied(details) from None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise ValidationError(details) from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unreachable(f"processor {processor}: {details}") from None
            raise LcError(f"processor {processor}: {code.name}: {details}") from None
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
