"""``lc certs``: create the private PKI behind lc's mutual TLS.

    lc certs init --dir DIR [--hunter ID ...] [--processor-host NAME ...]
                  [--processor-id ID] [--force]
    lc certs add (--processor NAME --processor-host HOST [--processor-host HOST ...]
                  | --hunter ID [--hunter ID ...]
                  | --metrics NAME --metrics-host HOST [--metrics-host HOST ...])
                 [--dir DIR] [--force]
    lc certs check --dir DIR

``init`` prints a JSON description of the CA and certificates it created or reused (see
``lc.common.credentials.init_pki``) and, on stderr, where the CA key is and that it stays
on this host. ``add`` issues one more processor certificate, hunter certificates and/or a
metrics endpoint's server certificate from the CA already in DIR
(``lc.common.credentials.add_processor``, ``add_hunters``, ``add_metrics``) and prints
their files as JSON. ``check`` prints
a JSON report of every certificate in DIR (validity, key match, chain, role; see
``lc.common.credentials.check_pki``), warns on stderr of those expiring within 30 days
and exits 1 when any has a problem. On failure it prints one JSON line
``{"error": "...", "code": N}`` on stderr and exits with the error's exit code
(3 for a refused id or host, 4 for a missing file, 1 otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lc.common.credentials import (
    CA_KEY_NOTE,
    add_hunters,
    add_metrics,
    add_processor,
    check_pki,
    init_pki,
)
from lc.common.errors import LcError, ValidationError

__all__ = ["certs"]


def _fail(ctx: click.Context, err: LcError) -> None:
    """Report ``err`` as one JSON line on stderr and exit with its exit code."""
    message = " ".join(str(err).split()) or err.__class__.__name__
    click.echo(json.dumps({"error": message, "code": err.exit_code}), err=True)
    ctx.exit(err.exit_code)


@click.group(name="certs")
def certs() -> None:
    """Manage the TLS certificates of hunters, the processor and the admin CLI."""


@certs.command(name="init")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the CA and certificates (created with mode 0700 if missing).",
)
@click.option(
    "--hunter",
    "hunters",
    multiple=True,
    metavar="ID",
    help="Issue a client certificate for this hunter id (repeatable).",
)
@click.option(
    "--processor-host",
    "processor_hosts",
    multiple=True,
    metavar="NAME",
    help="Host name or IP address the processor is reached at (repeatable); "
    "localhost, 127.0.0.1 and ::1 are always included.",
)
@click.option(
    "--processor-id",
    default="processor",
    show_default=True,
    metavar="ID",
    help="Common name of the processor certificate.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Reissue existing leaf certificates (the CA is never replaced).",
)
@click.pass_context
def init(
    ctx: click.Context,
    directory: Path,
    hunters: tuple[str, ...],
    processor_hosts: tuple[str, ...],
    processor_id: str,
    force: bool,
) -> None:
    """Create a CA and the processor, admin and hunter certificates in --dir.

    Re-running reuses the CA and existing certificates and adds the new ones.
    """
    try:
        paths = init_pki(
            directory,
            hunters=hunters,
            processor_hosts=processor_hosts,
            processor_id=processor_id,
            force=force,
        )
    except LcError as err:
        _fail(ctx, err)
        return
    click.echo(json.dumps(paths.as_dict(), sort_keys=True, indent=2))
    click.echo(f"lc certs: the CA key is {paths.ca.key}: {CA_KEY_NOTE}", err=True)


@certs.command(name="add")
@click.option(
    "--processor",
    "processor_id",
    metavar="NAME",
    help="Id of a new processor: the common name of its certificate.",
)
@click.option(
    "--processor-host",
    "processor_hosts",
    multiple=True,
    metavar="HOST",
    help="Host name or IP address the new processor's hunters reach it at (repeatable; "
    "required with --processor); localhost, 127.0.0.1 and ::1 are always included.",
)
@click.option(
    "--hunter",
    "hunters",
    multiple=True,
    metavar="ID",
    help="Issue a client certificate for this hunter id (repeatable).",
)
@click.option(
    "--metrics",
    "metrics_name",
    metavar="NAME",
    help="Issue metrics-NAME.pem/.key: a server certificate for a --metrics-tls endpoint "
    "(lc hunt --metrics-tls-cert; a hunter's own certificate is a client's).",
)
@click.option(
    "--metrics-host",
    "metrics_hosts",
    multiple=True,
    metavar="HOST",
    help="Host name or IP address scrapers reach that endpoint at (repeatable; required "
    "with --metrics); localhost, 127.0.0.1 and ::1 are always included.",
)
@click.option(
    "--dir",
    "directory",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory made by lc certs init (it holds the CA: ca.pem and ca.key).",
)
@click.option("--force", is_flag=True, help="Reissue the named certificates if they exist.")
@click.pass_context
def add(
    ctx: click.Context,
    processor_id: str | None,
    processor_hosts: tuple[str, ...],
    hunters: tuple[str, ...],
    metrics_name: str | None,
    metrics_hosts: tuple[str, ...],
    directory: Path,
    force: bool,
) -> None:
    """Issue more certificates from the existing CA: a processor's, hunters', a metrics
    endpoint's.

    --processor NAME writes processor-NAME.pem/.key, for a processor tree: it serves the
    processor's hunters (serverAuth) and authenticates it to its upstream (clientAuth).
    --hunter ID writes hunter-ID.pem/.key, as lc certs init --hunter does. --metrics NAME
    writes metrics-NAME.pem/.key (serverAuth only) for lc hunt --metrics-tls-cert.
    Certificates already handed out are not touched.
    """
    try:
        if processor_id is None and not hunters and metrics_name is None:
            raise ValidationError(
                "give --processor NAME --processor-host HOST and/or --hunter ID "
                "(or --metrics NAME --metrics-host HOST)"
            )
        if processor_id is None and processor_hosts:
            raise ValidationError("--processor-host names the hosts of --processor NAME: give it")
        if metrics_name is None and metrics_hosts:
            raise ValidationError("--metrics-host names the hosts of --metrics NAME: give it")
        out: dict[str, Any] = {}
        if processor_id is not None:
            files = add_processor(directory, processor_id, processor_hosts, force=force)
            out.update({"processor": processor_id, **files.as_dict()})
        if hunters:
            issued = add_hunters(directory, hunters, force=force)
            out["hunters"] = {hid: f.as_dict() for hid, f in issued.items()}
        if metrics_name is not None:
            files = add_metrics(directory, metrics_name, metrics_hosts, force=force)
            out["metrics"] = {"name": metrics_name, **files.as_dict()}
    except LcError as err:
        _fail(ctx, err)
        return
    click.echo(json.dumps(out, sort_keys=True, indent=2))


@certs.command(name="check")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory made by lc certs init.",
)
@click.pass_context
def check(ctx: click.Context, directory: Path) -> None:
    """Check every certificate in --dir: expiry, key match, chain to ca.pem, role.

    Prints a JSON report; warns on stderr of certificates expiring within 30 days;
    exits 1 when any certificate has a problem.
    """
    try:
        report = check_pki(directory)
    except LcError as err:
        _fail(ctx, err)
        return
    click.echo(json.dumps(report, sort_keys=True, indent=2))
    for entry in [report["ca"], *report["certificates"]]:
        for problem in entry["problems"]:
            click.echo(f"lc certs: problem: {entry['cert']}: {problem}", err=True)
        for warning in entry["warnings"]:
            click.echo(f"lc certs: warning: {entry['cert']}: {warning}", err=True)
    if not report["ok"]:
        ctx.exit(1)
