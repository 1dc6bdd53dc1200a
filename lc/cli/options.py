"""Options shared by several commands: processor address and TLS files."""

from __future__ import annotations

import functools
from collections.abc import Callable

import click

from lc.common.errors import LcError, ValidationError
from lc.common.text import log_text
from lc.common.transport import TlsFiles

__all__ = [
    "check_own_role",
    "check_target",
    "metrics_from_flags",
    "metrics_options",
    "parse_duration",
    "parse_size",
    "tls_from_flags",
    "tls_options",
]


def tls_options(f: Callable) -> Callable:
    """--tls-cert/--tls-key/--tls-ca (also LC_TLS_CERT/KEY/CA) and --insecure."""

    @click.option("--tls-cert", envvar="LC_TLS_CERT", metavar="FILE", help="Own certificate (PEM).")
    @click.option("--tls-key", envvar="LC_TLS_KEY", metavar="FILE", help="Own private key (PEM).")
    @click.option(
        "--tls-ca", envvar="LC_TLS_CA", metavar="FILE", help="CA that signs the peers (PEM)."
    )
    @click.option(
        "--insecure",
        is_flag=True,
        help="Plaintext, no authentication or authorization. Must be given on both sides.",
    )
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def metrics_options(f: Callable) -> Callable:
    """--metrics-listen, --metrics-tls, --metrics-tls-cert/--metrics-tls-key (lc hunt and
    lc process; see lc.common.metrics)."""

    @click.option(
        "--metrics-listen",
        metavar="[HOST:]PORT",
        help="Serve Prometheus metrics at http://HOST:PORT/metrics (off by default; a bare "
        "port or localhost: 127.0.0.1 only; 0.0.0.0 or [::] for every address).",
    )
    @click.option(
        "--metrics-tls",
        is_flag=True,
        help="Serve the metrics over HTTPS with this process's certificate; scrapers need "
        "the admin certificate (a client certificate signed by --tls-ca).",
    )
    @click.option(
        "--metrics-tls-cert",
        metavar="FILE",
        help="With --metrics-tls: a server certificate for the endpoint instead of "
        "--tls-cert (a hunter's own is a client certificate).",
    )
    @click.option("--metrics-tls-key", metavar="FILE", help="Its key (with --metrics-tls-cert).")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def metrics_from_flags(opts: dict, tls: TlsFiles | None) -> tuple[str, int, object] | None:
    """Pop the metrics flags from ``opts``: (host, port, MetricsTls or None), or None
    without --metrics-listen.

    Raises:
        ValidationError: a bad address, or TLS flags that do not fit together.
    """
    from lc.common.metrics import MetricsTls, parse_metrics_listen

    listen = opts.pop("metrics_listen", None)
    enabled = opts.pop("metrics_tls", False)
    cert, key = opts.pop("metrics_tls_cert", None), opts.pop("metrics_tls_key", None)
    mtls = MetricsTls.from_flags(tls, cert, key, enabled)
    if listen is None:
        if mtls is not None:
            raise ValidationError("--metrics-tls needs --metrics-listen")
        return None
    host, port = parse_metrics_listen(listen)
    return host, port, mtls


def _source(param: str) -> click.core.ParameterSource | None:
    ctx = click.get_current_context(silent=True)
    return ctx.get_parameter_source(param) if ctx is not None else None


def _from_env(param: str) -> bool:
    """True when the value of ``param`` came from its environment variable (exported for
    the admin commands, say), which the user may not think of when reading the error."""
    return _source(param) == click.core.ParameterSource.ENVIRONMENT


def _from_file(param: str) -> bool:
    """True when the value of ``param`` came from a --config file."""
    return _source(param) == click.core.ParameterSource.DEFAULT_MAP


def tls_from_flags(
    cert: str | None, key: str | None, ca: str | None, insecure: bool
) -> TlsFiles | None:
    """The TLS files, or None with --insecure.

    Raises:
        ValidationError: TLS flags missing without --insecure, or mixed with it.
    """
    if insecure:
        given = [("tls_cert", "--tls-cert", "LC_TLS_CERT", cert),
                 ("tls_key", "--tls-key", "LC_TLS_KEY", key),
                 ("tls_ca", "--tls-ca", "LC_TLS_CA", ca)]  # fmt: skip
        flags = [f for p, f, _, v in given if v and not _from_env(p) and not _from_file(p)]
        env = [e for p, _, e, v in given if v and _from_env(p)]
        conf = [f.removeprefix("--") for p, f, _, v in given if v and _from_file(p)]
        if flags or env or conf:
            parts = [", ".join(flags)] if flags else []
            if env:
                parts.append(
                    f"{', '.join(env)} from the environment (unset "
                    f"{'it' if len(env) == 1 else 'them'}, or drop --insecure)"
                )
            if conf:
                parts.append(f"{', '.join(conf)} from the --config file")
            raise ValidationError(f"--insecure cannot be combined with {', or with '.join(parts)}")
        return None
    missing = [n for n, v in (("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)) if not v]
    if missing:
        raise ValidationError(
            f"TLS is required: missing {', '.join(missing)} (or pass --insecure explicitly)"
        )
    return TlsFiles(cert, key, ca)  # type: ignore[arg-type]


def check_target(value: str | None, flag: str) -> str:
    """``HOST:PORT`` (``[v6]:PORT`` too), or ValidationError naming the flag: checked before
    any connection, so a typo fails at once (exit 3), not as an unreachable processor
    after the connect timeout."""
    if not value:
        env = " (or LC_PROCESSOR in the environment)" if flag == "--processor" else ""
        raise ValidationError(f"missing {flag} HOST:PORT{env}")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValidationError(f"{flag} must be HOST:PORT (port 1-65535), got {value!r}")
    return value


def check_own_role(tls: TlsFiles | None, role: str, what: str, hint: str) -> None:
    """Refuse at start a --tls-cert whose role (subject OU) is not ``role``: the peer would
    refuse it anyway, with a message that does not say where the file came from (an
    ``LC_TLS_CERT`` exported for the admin commands overrides a --config file's
    ``tls-cert``). A file that does not parse is left to the checks that name it."""
    if tls is None:
        return
    from lc.common.credentials import identity_from_pem

    try:
        with open(tls.cert, "rb") as f:
            ident = identity_from_pem(f.read())
    except (OSError, ValueError, LcError):
        return
    if ident.role == role:
        return
    if _from_env("tls_cert"):
        source = " (from LC_TLS_CERT in the environment, which overrides --config)"
    elif _from_file("tls_cert"):
        source = " (from the --config file)"
    else:
        source = ""
    has = f"role {ident.role!r}" if ident.role else "no role (subject OU)"
    raise ValidationError(
        f"--tls-cert {tls.cert}{source} has {has} (CN {log_text(ident.common_name, 64)!r}): "
        f"{what} needs a {role!r} certificate ({hint})"
    )


_SIZE = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
}
_TIME = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def _split(value: str) -> tuple[float, str]:
    v = value.strip().lower()
    i = len(v)
    while i and not (v[i - 1].isdigit() or v[i - 1] == "."):
        i -= 1
    return float(v[:i]), v[i:]


def parse_size(value: str | None, flag: str) -> int | None:
    """'100M' -> 104857600; None stays None."""
    if value is None:
        return None
    try:
        num, unit = _split(value)
        size = int(num * _SIZE[unit])
    except (ValueError, KeyError):
        raise ValidationError(f"{flag}: expected a size like 100M or 2G, got {value!r}") from None
    if size <= 0:
        raise ValidationError(f"{flag} must be positive, got {value!r}")
    return size


def parse_duration(value: str | None, flag: str) -> float | None:
    """'15m' -> 900.0 seconds; None stays None."""
    if value is None:
        return None
    try:
        num, unit = _split(value)
        secs = num * _TIME[unit]
    except (ValueError, KeyError):
        raise ValidationError(
            f"{flag}: expected a duration like 30s, 15m or 1h, got {value!r}"
        ) from None
    if secs <= 0:
        raise ValidationError(f"{flag} must be positive, got {value!r}")
    return secs
