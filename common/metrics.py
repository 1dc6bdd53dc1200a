"""The Prometheus ``/metrics`` endpoint of ``lc hunt`` and ``lc process``.

Counting stays where it is: the hunter's heartbeat counters and the processor's status
counters are plain integers, bumped on the hot path as before. A *collector* (one per
role, :mod:`lc.hunter.metrics`, :mod:`lc.processor.metrics`) reads them when Prometheus
scrapes and turns them into metric families; ``prometheus-client`` is never called per
packet or per batch. The one distribution, the processor's commit time, is kept here as
fixed buckets of plain integers (:class:`Buckets`) and exposed at scrape time too.

The endpoint (:class:`MetricsServer`): ``--metrics-listen [HOST:]PORT``; a bare port,
``:PORT`` or ``localhost:PORT`` binds 127.0.0.1 only; any other host binds that address
(``0.0.0.0`` or ``[::]`` for all). With TLS (``--metrics-tls``) it serves HTTPS with the
process's own certificate (or ``--metrics-tls-cert``/``--metrics-tls-key``) and, like
every lc service, requires a client certificate signed by the CA (``--tls-ca``) with the
admin role (the one ``lc certs init`` makes for the admin commands). Requests are
served one thread each, at most :data:`MAX_CONCURRENT` at once (more are closed at
once), each with a 10 s socket timeout.

Labels stay few and bounded: reasons, states, modes, datasets; never an address, a
domain, a Call-ID or a filter id (see the README's metrics table).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from lc.common.credentials import ADMIN_ROLE, identity_from_pem
from lc.common.errors import LcError, ValidationError
from lc.common.transport import TlsFiles

__all__ = [
    "COMMIT_BUCKETS",
    "MAX_CONCURRENT",
    "Buckets",
    "MetricsServer",
    "MetricsTls",
    "parse_metrics_listen",
]

log = logging.getLogger(__name__)

MAX_CONCURRENT = 16

#: Upper bounds (seconds) of the commit-time histogram's buckets.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def parse_metrics_listen(text: str, flag: str = "--metrics-listen") -> tuple[str, int]:
    """``9100``, ``:9100``, ``localhost:9100`` -> ("127.0.0.1", 9100); ``HOST:PORT`` and
    ``[V6]:PORT`` -> that address. Port 0 picks a free port.

    Raises:
        ValidationError: no port, a port out of range, or a host that is not an address
            or ``localhost`` (the endpoint binds an address, not a name that might
            resolve to several).
    """
    t = text.strip()
    host, sep, port = t.rpartition(":")
    if not sep:
        host, port = "", t
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValidationError(f"{flag} must be [HOST:]PORT, got {text!r}")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in ("", "localhost"):
        host = "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValidationError(
            f"{flag}: {host!r} is not an IP address (give 127.0.0.1, 0.0.0.0, [::] or "
            "the address of one interface)"
        ) from None
    return host, int(port)


class Buckets:
    """A histogram kept as plain integers: :meth:`observe` costs a bisect and two
    additions, no lock (one writer thread; a scrape may read a value one observation
    old, which Prometheus tolerates)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = COMMIT_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> tuple[list[tuple[str, int]], float]:
        """([(le, cumulative count)], sum), ``+Inf`` last, as Prometheus wants them."""
        counts = list(self.counts)
        total = 0
        out = []
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out, self.sum


@dataclass(frozen=True, slots=True)
class MetricsTls:
    """The endpoint's certificate and key, and the CA its scrapers' certificates chain to."""

    cert: str
    key: str
    ca: str

    @classmethod
    def from_flags(
        cls, own: TlsFiles | None, cert: str | None, key: str | None, enabled: bool
    ) -> MetricsTls | None:
        """The endpoint's TLS files from the flags, or None without ``--metrics-tls``.

        Raises:
            ValidationError: --metrics-tls-cert/--metrics-tls-key without --metrics-tls,
                only one of them, or --metrics-tls with --insecure (no CA to check
                scrapers against).
        """
        if not enabled:
            if cert or key:
                raise ValidationError("--metrics-tls-cert and --metrics-tls-key need --metrics-tls")
            return None
        if own is None:
            raise ValidationError(
                "--metrics-tls needs the TLS files (--tls-cert, --tls-key, --tls-ca): "
                "it cannot be combined with --insecure"
            )
        if bool(cert) != bool(key):
            raise ValidationError("give both --metrics-tls-cert and --metrics-tls-key, or neither")
        return cls(cert or own.cert, key or own.key, own.ca)

    def context(self) -> ssl.SSLContext:
        """The server's SSL context: its certificate checked (key match, validity, chain to
        the CA, extendedKeyUsage serverAuth) and client certificates required.

        Raises:
            ValidationError: a file is missing or wrong, or the certificate is not a
                server certificate (a hunter's is a client certificate: scrapers such
                as Prometheus refuse it as a server's).
        """
        from cryptography import x509
        from cryptography.x509.oid import ExtendedKeyUsageOID

        files = TlsFiles(self.cert, self.key, self.ca)
        cert_pem, _, _ = files.checked()
        cert = x509.load_pem_x509_certificate(cert_pem)
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = None
        if usages is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usages:
            raise ValidationError(
                f"--metrics-tls: {self.cert} is a client certificate (no serverAuth in its "
                "extendedKeyUsage), which scrapers refuse as a server's: give "
                "--metrics-tls-cert and --metrics-tls-key with a server certificate "
                "(lc certs add --metrics NAME --metrics-host HOST makes one)"
            )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
            ctx.load_verify_locations(self.ca)
        except (OSError, ssl.SSLError) as e:
            raise ValidationError(f"--metrics-tls: cannot use {self.cert}: {e}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def _handler(registry: Any, tls: bool) -> type:
    from prometheus_client.exposition import MetricsHandler

    class Handler(MetricsHandler):  # type: ignore[misc, valid-type]
        timeout = 10  # seconds a client may take per read (setup() applies it)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served")
                return
            if tls and not self._admin():
                self.send_error(403, "the metrics need the admin certificate")
                return
            super().do_GET()

        def _admin(self) -> bool:
            try:
                der = self.connection.getpeercert(binary_form=True)  # type: ignore[attr-defined]
            except (AttributeError, ValueError):
                return False
            if not der:
                return False
            return identity_from_pem(ssl.DER_cert_to_PEM_cert(der)).role == ADMIN_ROLE

    return Handler.factory(registry)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], handler: type, ctx: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self._ctx = ctx
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self.refused = 0  # connections closed because MAX_CONCURRENT were being served
        super().__init__(addr, handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if self._ctx is not None:  # the handshake on the request's own thread
                request.settimeout(10)
                try:
                    request = self._ctx.wrap_socket(request, server_side=True)
                except (OSError, ssl.SSLError) as e:
                    log.debug("metrics: TLS handshake with %s failed: %s", client_address, e)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: request from %s failed", client_address, exc_info=True)


class MetricsServer:
    """``/metrics`` over HTTP(S) on its own thread, for the collectors given.

    Raises:
        LcError: the address cannot be bound.
        ValidationError: the TLS files are wrong (see :meth:`MetricsTls.context`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        collectors: Iterable[Callable[[], Iterable[Any]]],
        tls: MetricsTls | None = None,
        process_metrics: bool = True,
    ) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.process_collector import ProcessCollector

        self.registry = CollectorRegistry(auto_describe=False)
        for collect in collectors:
            self.registry.register(_Adapter(collect))
        if process_metrics:  # process_cpu_seconds_total, process_resident_memory_bytes, ...
            ProcessCollector(registry=self.registry)
        ctx = tls.context() if tls is not None else None
        try:
            self._httpd = _Server((host, port), _handler(self.registry, ctx is not None), ctx)
        except OSError as e:
            raise LcError(
                f"--metrics-listen: cannot listen on {host}:{port}: {e.strerror or e}"
            ) from None
        self.host = host
        self.port = self._httpd.server_address[1]
        self.tls = tls is not None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="lc-metrics", daemon=True
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()


class _Adapter:
    """A collect() function as a prometheus-client collector."""

    def __init__(self, collect: Callable[[], Iterable[Any]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Any]:
        return self._collect()
