"""The ``lc`` command: one group, one way to fail.

Exit codes (every command): 0 ok, 1 general, 2 connection, 3 validation (including
bad flags: click's own usage errors are mapped from 2 to 3, because lc reserves 2
for connection failures), 4 not found. Long-running commands (hunt, process) report
an error as one ``lc <cmd>: error: ...`` line on stderr; the admin commands, whose
stdout is JSON, report it as a JSON object on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import click

from lc import __version__
from lc.common.errors import LcError

__all__ = ["cli", "main"]

# gRPC's C core logs handshake and bind details to stderr; lc reports failures itself
# in one line (set GRPC_VERBOSITY=debug to see them). `lc process` reads that log to
# report failed TLS handshakes (lc.processor.tlslog) unless the user asked for it.
# lc's own default is marked, so that a process started from one that imported this
# module (a test run, a script) does not take the inherited default for the user's choice.
_LC_DEFAULT_MARK = "GRPC_VERBOSITY_SET_BY_LC"
_USER_GRPC_LOG = ("GRPC_VERBOSITY" in os.environ or "GRPC_TRACE" in os.environ) and not (
    os.environ.get(_LC_DEFAULT_MARK) == "1"
    and os.environ.get("GRPC_VERBOSITY") == "NONE"
    and "GRPC_TRACE" not in os.environ
)
if "GRPC_VERBOSITY" not in os.environ:
    os.environ["GRPC_VERBOSITY"] = "NONE"
    os.environ[_LC_DEFAULT_MARK] = "1"
_entry_point = False  # set by main(): only the real command takes over file descriptor 2

# Captured traffic is sensitive: what `lc hunt` and `lc process` create (PCAPs, per-call
# files, lc.db, spool segments, their directories) is not for other users: 0640 / 0750.
_PRIVATE_UMASK = 0o027

USAGE_EXIT = 3


_FILTER_COMMANDS = "lc set filter, lc list filters, lc show filter --id ID, lc rm filter --id ID"
_HUNTER_COMMANDS = "lc list hunters, lc show hunter --id ID"
_NOUN_FIRST = {
    "filter": _FILTER_COMMANDS,
    "filters": _FILTER_COMMANDS,
    "hunter": _HUNTER_COMMANDS,
    "hunters": _HUNTER_COMMANDS,
    "call": "lc list calls",
    "calls": "lc list calls",
    "alert": "lc list alerts",
    "alerts": "lc list alerts",
    "status": "lc show status",
    "topology": "lc show topology",
}
_OTHER_VERBS = {
    "delete": "rm",
    "del": "rm",
    "remove": "rm",
    "add": "set",
    "create": "set",
    "get": "show",
    "ls": "list",
}


class _Group(click.Group):
    """Registers subcommands lazily so that ``lc --help`` imports neither grpc nor pcapy."""

    _lazy = {
        "hunt": ("lc.cli.hunt", "hunt"),
        "process": ("lc.cli.process", "process"),
        "certs": ("lc.cli.certs", "certs"),
        "list": ("lc.cli.admin", "list_group"),
        "show": ("lc.cli.admin", "show_group"),
        "set": ("lc.cli.admin", "set_group"),
        "rm": ("lc.cli.admin", "rm_group"),
        "watch": ("lc.cli.watch", "watch"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._lazy)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # Noun first (`lc filter set`, `lc hunters`) or another verb (`lc delete filter`):
        # name the verb-first commands instead of a bare "No such command".
        name = args[0] if args else ""
        if name not in self._lazy:
            if name in _NOUN_FIRST:
                ctx.fail(
                    f"No such command {name!r}: lc's commands are verb first: {_NOUN_FIRST[name]}"
                )
            if name in _OTHER_VERBS:
                ctx.fail(f"No such command {name!r}: did you mean 'lc {_OTHER_VERBS[name]}'?")
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self._lazy:
            return None
        import importlib

        mod, attr = self._lazy[name]
        if name in ("hunt", "process") and _entry_point:
            os.umask(os.umask(_PRIVATE_UMASK) | _PRIVATE_UMASK)  # tighter, never looser
        if name == "process" and _entry_point and not _USER_GRPC_LOG:
            from lc.processor.tlslog import capture_grpc_log

            capture_grpc_log(show_grpc=(ctx.params.get("verbose") or 0) >= 2)
        return getattr(importlib.import_module(mod), attr)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lc")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """lc: distributed packet capture.

    Hunters capture packets and stream them over mutual-TLS gRPC to a processor,
    which writes PCAP and answers the admin commands.
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def fail_line(command: str, err: LcError | str, code: int | None = None) -> int:
    """Print one plain error line for a long-running command and return its exit code."""
    msg = " ".join(str(err).split())
    click.echo(f"lc {command}: error: {msg}", err=True)
    return code if code is not None else getattr(err, "exit_code", 1)


def fail_json(err: LcError | str, code: int | None = None) -> int:
    """Print an admin command's error as JSON on stderr and return its exit code."""
    exit_code = code if code is not None else getattr(err, "exit_code", 1)
    msg = " ".join(str(err).split())
    click.echo(json.dumps({"error": msg, "code": exit_code}, sort_keys=True), err=True)
    return exit_code


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: maps every failure to an exit code, no tracebacks."""
    global _entry_point
    _entry_point = True
    try:
        rv = cli.main(args=argv, prog_name="lc", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("lc: aborted", err=True)
        sys.exit(1)
    except click.UsageError as e:
        e.exit_code = USAGE_EXIT
        e.show()
        sys.exit(USAGE_EXIT)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except LcError as e:
        sys.exit(fail_line("", e))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # a bug: one line for the user, the traceback with -vv
        logging.getLogger("lc").debug("internal error", exc_info=True)
        click.echo(
            f"lc: internal error: {type(e).__name__}: {e} (run with -vv for details)", err=True
        )
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
