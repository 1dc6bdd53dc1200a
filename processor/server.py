"""Builds and runs a processor: gRPC server, services, PCAP output, clean shutdown.

The gRPC server is grpc.aio on an event loop of its own thread (see
:mod:`lc.processor.aioserve` for why, and how the sync management handlers run).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import os
import signal
import socket
import tempfile
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc

from lc.common.credentials import identity_from_pem, validate_id
from lc.common.errors import LcError, ValidationError
from lc.common.pcapfile import PcapSink
from lc.common.transport import TlsFiles, server_credentials, server_options
from lc.processor.aioserve import sync_servicer
from lc.processor.auth import Authorizer
from lc.processor.callfiles import check_pattern
from lc.processor.calls import DEFAULT_PATTERN, CallIndex, CallWriter
from lc.processor.eventlog import DEFAULT_ROTATE_SIZE, EventLog
from lc.processor.filterhub import FilterHub
from lc.processor.forward import Forwarder, UpstreamConfig
from lc.processor.hepout import HepOut
from lc.processor.ingest import Ingest
from lc.processor.keylog import KeyLog
from lc.processor.ledger import Ledger
from lc.processor.limits import StreamGate
from lc.processor.redisout import RedisEvents
from lc.processor.registry import Registry
from lc.processor.service import DataService, ManagementService, add_data_service
from lc.processor.store import FilterStore
from lc.processor.tree import DEFAULT_MAX_DEPTH, Tree
from lc.processor.tunnels import TunnelAlerts
from lc.proto import lc_pb2, lc_pb2_grpc

__all__ = ["ProcessConfig", "Processor", "normalise_listen"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ProcessConfig:
    listen: str = ":55555"
    processor_id: str | None = None
    tls: TlsFiles | None = None
    write_file: str | None = None
    data_dir: str = "lc-data"
    rotate_size: int | None = None
    rotate_interval: float | None = None
    stale_after: float = 30.0
    heartbeat_interval_ms: int = 5000
    # gRPC threads. A stream holds one for its life, so streams get at most
    # max_workers - admin_threads of them; the rest serve registrations, heartbeats and
    # admin commands however many streams are open (see processor.limits).
    max_workers: int = 1024
    admin_threads: int = 64
    shutdown_grace: float = 5.0
    slow_writer_file: str | None = None  # tests: while this file exists, writing is slow
    per_call_pcap_dir: str | None = None  # one pcap per VoIP call there (None: off)
    per_call_pcap_pattern: str = DEFAULT_PATTERN
    call_grace: float = 5.0  # seconds a call's file stays open after the call ended
    call_idle_timeout: float = 300.0  # seconds without a packet before a call is closed
    events: bool = True  # write the event log
    events_dir: str | None = None  # default DATA_DIR/events
    events_rotate_size: int | None = None  # default eventlog.DEFAULT_ROTATE_SIZE
    tunneling_threshold: float = 0.7  # DNS tunneling alert score (lc.processor.tunnels)
    events_redis: str | None = None  # redis://HOST:PORT/N: events to the stream lc:events
    events_redis_maxlen: int = 1_000_000  # XADD MAXLEN ~ this
    hep_out: str | None = None  # udp://HOST:PORT or tcp://: SIP and RTCP as HEPv3
    hep_agent_id: int = 0
    hep_password: str | None = None
    upstream: UpstreamConfig | None = None  # forward every committed batch there (a tree)
    max_tree_depth: int = DEFAULT_MAX_DEPTH  # processor levels allowed below this one

    def output_path(self) -> str:
        return self.write_file or os.path.join(self.data_dir, "capture.pcap")

    def events_path(self) -> str:
        return self.events_dir or os.path.join(self.data_dir, "events")


def check_writable_dir(directory: str, flag: str) -> None:
    """Refuse, at start, a directory where no file can be created (exit 3 naming the
    flag): ``-w /proc/x.pcap`` used to start and fail only at the first batch.

    Creates the directory if needed, then creates and removes a probe file in it
    (permission bits alone say nothing for root, nor for a read-only or special
    file system).

    Raises:
        ValidationError: the directory cannot be created or written.
    """
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".lc-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValidationError(
            f"{flag}: cannot create files in {directory}: {e.strerror or e}"
        ) from None


_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> None:
    """Let glibc's malloc keep what batches free, for the next batches.

    Every batch passes through buffers of up to several MiB (gRPC's message, its bytes,
    the parsed message). By default glibc maps each of those anew and unmaps it, or
    trims its heaps after each, so every batch pays page faults and zeroing in the
    kernel: ~10% of a processor's CPU in the raw replay benchmark. Buffers up to 8 MiB
    now come from the heaps, which keep up to 64 MiB of freed memory. Nothing happens
    where there is no glibc mallopt.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 8 * 1024 * 1024)
    mallopt(_M_TRIM_THRESHOLD, 64 * 1024 * 1024)


def normalise_listen(listen: str) -> str:
    """':55555' -> '[::]:55555' (all addresses); 'HOST:PORT' unchanged.

    Raises:
        ValidationError: no port, or a port out of range.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValidationError(f"--listen must be [HOST]:PORT, got {listen!r}")
    return f"{host or '[::]'}:{port}"


def _open_calls(cfg: ProcessConfig, db: str) -> tuple[CallWriter, CallIndex, CallIndex]:
    """The per-call writer and its index (plus a second connection for queries).

    Raises:
        ValidationError: a bad pattern, grace or idle timeout (the text names it).
        LcError: the directory or the index cannot be created.
    """
    assert cfg.per_call_pcap_dir is not None
    for flag, value, least in (
        ("--call-grace", cfg.call_grace, 0.0),
        ("--call-idle-timeout", cfg.call_idle_timeout, 1e-9),
    ):
        if not (math.isfinite(value) and value >= least):
            raise ValidationError(f"{flag} must be {'positive' if least else '0 or more'}")
    index = CallIndex(db)
    try:
        writer = CallWriter(
            cfg.per_call_pcap_dir,
            cfg.per_call_pcap_pattern,
            index=index,
            grace_ns=round(cfg.call_grace * 1e9),
            idle_timeout_ns=max(1, round(cfg.call_idle_timeout * 1e9)),
        )
    except ValidationError as e:
        index.close()
        raise ValidationError(f"--per-call-pcap-pattern: {e}") from None
    except OSError as e:
        index.close()
        raise LcError(
            f"cannot create the per-call directory {cfg.per_call_pcap_dir}: {e.strerror or e}"
        ) from None
    if not os.access(writer.directory, os.W_OK):
        index.close()
        raise LcError(f"per-call directory {writer.directory} is not writable")
    return writer, index, CallIndex(db)


def default_processor_id(cfg: ProcessConfig) -> str:
    """``--id``; else, for an edge processor (``--upstream``) with TLS, the common name
    of its certificate (the upstream accepts it under no other); else the host name.

    Raises:
        ValidationError: an id lc refuses.
    """
    if cfg.processor_id:
        return validate_id(cfg.processor_id, "processor")
    if cfg.upstream is not None and cfg.tls is not None:
        try:
            with open(cfg.tls.cert, "rb") as f:
                cn = identity_from_pem(f.read()).common_name
            return validate_id(cn, "processor")
        except (OSError, LcError):
            pass  # the TLS files are checked, with a clear message, where they are used
    return socket.gethostname()


def listen_problem(listen: str) -> str:
    """Why ``listen`` (``[HOST]:PORT``) cannot be bound, found by binding it ourselves once
    gRPC has failed to (gRPC says only that it failed): a name that does not resolve, an
    address in use, an address that is not this host's."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(
            host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (ValueError, UnicodeError):
        return "address in use or not available"
    except socket.gaierror as e:
        return f"cannot resolve {host}: {e.strerror}"
    for family, kind, proto, _, addr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(addr)
        except OSError as e:
            return e.strerror or str(e)
    return "address in use or not available"


class Processor:
    def __init__(self, cfg: ProcessConfig) -> None:
        self.cfg = cfg
        self.processor_id = default_processor_id(cfg)
        out = cfg.output_path()
        out_dir = os.path.dirname(os.path.abspath(out))
        if cfg.per_call_pcap_dir is not None:  # a bad pattern is refused before anything
            try:
                check_pattern(cfg.per_call_pcap_pattern)
            except ValidationError as e:
                raise ValidationError(f"--per-call-pcap-pattern: {e}") from None
        check_writable_dir(cfg.data_dir, "--data-dir")
        check_writable_dir(out_dir, "-w" if cfg.write_file else "--data-dir")
        if cfg.events:
            check_writable_dir(
                cfg.events_path(), "--events-dir" if cfg.events_dir else "--data-dir"
            )
        if cfg.per_call_pcap_dir is not None:
            check_writable_dir(cfg.per_call_pcap_dir, "--per-call-pcap-dir")
        if cfg.events_rotate_size is not None and cfg.events_rotate_size < 1:
            raise ValidationError("--events-rotate-size must be positive")
        db = os.path.join(cfg.data_dir, "lc.db")
        # Per-call capture first: a bad pattern or directory is refused before anything opens.
        self.calls: CallWriter | None = None
        self.call_index: CallIndex | None = None  # the writer's connection (writer thread)
        self.call_query: CallIndex | None = None  # the admin RPCs' (WAL: never blocks it)
        if cfg.per_call_pcap_dir is not None:
            self.calls, self.call_index, self.call_query = _open_calls(cfg, db)
        self.store = FilterStore(db)
        self.ledger = Ledger(db)
        output = os.path.abspath(out)

        def on_open(linktype: int, label: str, counter: int, path: str) -> None:
            self.ledger.file_opening(output, linktype, label, counter, path)

        self.sink = PcapSink(
            out,
            rotate_size=cfg.rotate_size,
            rotate_interval=cfg.rotate_interval,
            resume=self.ledger.sink_files(output),
            on_open=on_open,
        )
        for note in self.sink.resume_notes:
            log.info("output: %s", note)
        self.events: EventLog | None = None
        if cfg.events:
            try:
                self.events = EventLog(
                    cfg.events_path(),
                    self.ledger,
                    rotate_size=cfg.events_rotate_size or DEFAULT_ROTATE_SIZE,
                    call_info=self._call_info if self.calls is not None else None,
                )
            except OSError as e:
                raise LcError(
                    f"cannot open the event log in {cfg.events_path()}: {e.strerror or e}"
                ) from None
            for note in self.events.notes:
                log.info("events: %s", note)
        # Outputs fed after the Acks (observers with a thread of their own): --events-redis.
        self.forwarders: list = []
        self.redis: RedisEvents | None = None
        if cfg.events_redis:
            if self.events is None:
                raise ValidationError(
                    "--events-redis sends the event log's events: it cannot be combined "
                    "with --no-events"
                )
            self.redis = RedisEvents(
                cfg.events_redis, cfg.events_redis_maxlen, self.events, cfg.data_dir
            )
            self.forwarders.append(self.redis)
        self.hep: HepOut | None = None
        if cfg.hep_out:
            self.hep = HepOut(cfg.hep_out, cfg.hep_agent_id, cfg.hep_password)
            self.forwarders.append(self.hep)
        self.keys = KeyLog(os.path.join(cfg.data_dir, "keys"))  # opened at its first line
        self.tunnels = TunnelAlerts(cfg.tunneling_threshold)
        self.registry = Registry(stale_after=cfg.stale_after)
        self.hub = FilterHub(self.store)
        self.tree = Tree(self.processor_id, cfg.max_tree_depth, cfg.stale_after)
        self.forwarder: Forwarder | None = None
        if cfg.upstream is not None:
            self.forwarder = Forwarder(
                cfg.upstream,
                cfg.tls,
                self.processor_id,
                cfg.data_dir,
                self.tree,
                describe=self.describe_hunter,
                topology=self.topology,
                on_filters=self.hub.apply_upstream,
            )
        self.ingest = Ingest(
            self.sink,
            self.ledger,
            output,
            slow_writer_file=cfg.slow_writer_file,
            calls=self.calls,
            events=self.events,
            keys=self.keys,
            tunnels=self.tunnels,
            observers=self.forwarders,
            forward=self.forwarder,
        )
        self.auth = Authorizer(insecure=cfg.tls is None)
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._pool: futures.ThreadPoolExecutor | None = None

    def _call_info(self, call_id: str) -> tuple[str, list[str]] | None:
        """(pcap path, hunters) of a call, from the call index (writer thread)."""
        assert self.call_index is not None and self.calls is not None
        path = self.calls.call_path(call_id)
        row = self.call_index.get(call_id)
        if row is None:
            return (path, []) if path else None
        hunters = row["hunters"]
        return path or str(row["pcap_path"]), list(hunters) if isinstance(hunters, list) else []

    def start(self) -> int:
        """Start serving (the gRPC server runs on its own event-loop thread); the port."""
        keep_freed_memory()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="lc-grpc-loop", daemon=True)
        thread.start()
        try:
            port = asyncio.run_coroutine_threadsafe(self._start_server(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise
        self._loop, self._loop_thread = loop, thread
        self.ingest.start()
        for f in self.forwarders:
            f.start()
        if self.forwarder is not None:
            self.forwarder.start()
        self.port = port
        return port

    async def _start_server(self) -> int:
        cfg = self.cfg
        listen = normalise_listen(cfg.listen)
        creds = server_credentials(cfg.tls) if cfg.tls is not None else None
        # The management RPCs run their sync code on this pool; a filter subscription
        # holds a thread of it for its life (the gate's budget bounds those).
        self._pool = futures.ThreadPoolExecutor(
            max_workers=cfg.max_workers, thread_name_prefix="lc-rpc"
        )
        server = grpc.aio.server(options=server_options())
        self.gate = StreamGate(
            max_streams=max(1, cfg.max_workers - cfg.admin_threads),
            heard=self._heard,
            takeover_after=min(15.0, cfg.stale_after),
        )
        self.data = DataService(
            self.ingest,
            self.registry,
            self.auth,
            self.gate,
            tree=self.tree,
            extra_flow=(lambda: self.forwarder.flow) if self.forwarder is not None else None,
        )
        self.mgmt = ManagementService(
            self.registry,
            self.ingest,
            self.auth,
            self.processor_id,
            listen,
            cfg.heartbeat_interval_ms,
            hub=self.hub,
            calls=self.call_query,
            gate=self.gate,
            tunnels=self.tunnels,
            tree=self.tree,
            topology=self.topology,
        )
        add_data_service(self.data, server)
        lc_pb2_grpc.add_ManagementServiceServicer_to_server(
            sync_servicer(self.mgmt, "ManagementService", self._pool), server
        )
        try:
            if creds is None:
                port = server.add_insecure_port(listen)
            else:
                port = server.add_secure_port(listen, creds)
        except RuntimeError:
            raise LcError(f"cannot listen on {listen}: {listen_problem(listen)}") from None
        if port == 0:
            raise LcError(f"cannot listen on {listen}: {listen_problem(listen)}")
        await server.start()
        self.server = server
        host = listen.rpartition(":")[0]
        self.mgmt.listen = f"{host}:{port}"
        return port

    def stop(self) -> None:
        """Stop accepting, let streams finish for the grace period, then write, commit and
        fsync everything received (hunters resend what they saw no Ack for)."""
        loop = self._loop
        if self.server is not None and loop is not None:
            self.data.stopping.set()
            server, self.server = self.server, None
            asyncio.run_coroutine_threadsafe(server.stop(self.cfg.shutdown_grace), loop).result()
        self.ingest.close()  # closes the call files (and commits their rows) first
        for f in self.forwarders:
            f.close()  # sends what it can of what was committed, for a few seconds
        if self.forwarder is not None:  # after the last commit: its batches are spooled
            self.forwarder.shutdown()
        if loop is not None:
            self._loop = None
            loop.call_soon_threadsafe(loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join()
            loop.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for index in (self.call_index, self.call_query):
            if index is not None:
                index.close()
        self.ledger.close()
        self.store.close()

    # -- the tree ------------------------------------------------------------------------
    def _heard(self, ident: str) -> float | None:
        """Seconds since a hunter or a processor below was last heard from."""
        age = self.registry.heard(ident)
        return self.tree.heard(ident) if age is None else age

    def describe_hunter(self, hunter_id: str) -> lc_pb2.RegisterRequest:
        """The registration this processor forwards upstream for a hunter whose batches
        it carries: from its own registry (a hunter connected here), from the tree below
        (a hunter of a processor below), or only its id (a batch an earlier run spooled)."""
        me = self.processor_id
        info = self.registry.get(hunter_id)
        via = [me]
        if info is None:
            info = self.tree.hunter_below(hunter_id)
            if info is not None:
                via = [me, *info.via]
        if info is None:
            return lc_pb2.RegisterRequest(hunter_id=hunter_id, via=via)
        return lc_pb2.RegisterRequest(
            hunter_id=hunter_id,
            hostname=info.hostname,
            version=info.version,
            mode=info.mode,
            interfaces=info.interfaces,
            capabilities=info.capabilities,
            epoch=info.epoch,
            local_filters=info.local_filters,
            via=via,
        )

    def topology(self) -> lc_pb2.Topology:
        """This processor's tree: its hunters, the processors below and theirs."""
        t = lc_pb2.Topology(
            processor_id=self.processor_id,
            hunters=self.registry.all(),
            processors=self.tree.children(),
        )
        fw = self.forwarder
        if fw is not None and self.cfg.upstream is not None:
            t.upstream = self.cfg.upstream.target
            t.upstream_state = fw.upstream_state
            c = fw.spool.counters()
            t.upstream_spool_batches = c["records"]
            t.upstream_spool_bytes = c["bytes"]
        return t

    def serve_forever(self) -> None:
        done = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("%s: shutting down", signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        done.wait()
        self.stop()
