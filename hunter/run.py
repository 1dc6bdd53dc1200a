"""Runs a hunter: sources -> batcher -> outbox -> uplink, until stopped or replayed.

Capture threads (one per live interface) and the replay loop only ever touch the
batcher and the outbox; everything that waits on the network lives in the uplink.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lc import __version__
from lc.common.credentials import identity_from_pem, validate_id
from lc.common.errors import LcError, ValidationError
from lc.common.filters import Filter, FilterSet, compile_filters
from lc.common.text import log_text
from lc.common.transport import TlsFiles
from lc.hunter import modes
from lc.hunter.batcher import Batcher
from lc.hunter.capture import (
    DEFAULT_BLOCK_TIMEOUT_MS,
    Chunk,
    FileSource,
    LiveSource,
    check_bpf,
)
from lc.hunter.filtering import HunterFilters
from lc.hunter.modes.base import EMPTY, MATCH_NOTHING, Forward, Mode, ModeContext
from lc.link.breaker import CircuitBreaker
from lc.link.outbox import Outbox
from lc.link.spool import Spool, SpoolError
from lc.link.uplink import HunterIdentity, Uplink
from lc.proto import lc_pb2

__all__ = ["HuntConfig", "Hunter", "ProgressFn", "processor_exclusion"]

# A replay's progress: (phase, packets read, their bytes, file bytes read, file size);
# phase is "reading", then "acks" while the last acknowledgements are awaited.
ProgressFn = Callable[[str, int, int, int, int], None]
_PROGRESS_EVERY = 0.1  # seconds between two progress reports

log = logging.getLogger(__name__)


@dataclass(slots=True)
class HuntConfig:
    processor: str
    interfaces: list[str] = field(default_factory=list)
    read_file: str | None = None
    hunter_id: str | None = None
    bpf: str | None = None
    promisc: bool = False
    snaplen: int = 262144
    pcap_buffer_mb: int = 32  # the kernel's capture ring per live interface
    batch_size: int = 64
    batch_timeout_ms: int = 100
    tls: TlsFiles | None = None
    replay_speed: float = 0.0  # 0: as fast as possible; 1: the capture's own timing
    queue_mb: int = 256
    shutdown_timeout: float = 30.0
    heartbeat_interval: float = 5.0
    connect_timeout: float = 10.0
    mode: str = "generic"  # a registered mode (lc.hunter.modes)
    mode_config: object | None = None  # the mode's config; None: its defaults
    no_filter_policy: str | None = None  # None: the mode's default (generic: allow)
    events: str = "captured"  # session events: of captured sessions, or "all"
    disk_buffer: bool = False
    disk_buffer_dir: str | None = None  # None: ./lc-spool/<hunter id>
    disk_buffer_max_mb: int = 1024
    breaker_failures: int = 5
    breaker_open_time: float = 30.0
    breaker_half_open: int = 3
    backoff_initial: float = 1.0
    backoff_max: float = 60.0

    def validate(self) -> None:
        spec = modes.get(self.mode)
        if spec is None:
            raise ValidationError(
                f"unknown mode {log_text(self.mode)!r}; modes: {', '.join(modes.names())}"
            )
        if self.mode_config is None:
            self.mode_config = spec.config()
        elif not isinstance(self.mode_config, spec.config):
            raise ValidationError(f"mode {self.mode}: config must be a {spec.config.__name__}")
        validate = getattr(self.mode_config, "validate", None)
        if validate is not None:
            validate()
        if self.hunter_id is not None:
            # Before any use: the id names the spool directory and goes on the wire.
            try:
                validate_id(self.hunter_id)
            except ValidationError as e:
                raise ValidationError(f"--id: {e}") from None
        if self.no_filter_policy not in (None, "allow", "deny"):
            raise ValidationError("--no-filter-policy must be allow or deny")
        if self.events not in ("captured", "all"):
            raise ValidationError("--events must be captured or all")
        if bool(self.interfaces) == bool(self.read_file):
            raise ValidationError("give either -i/--interface (live) or -r/--read-file (replay)")
        if ":" not in self.processor:
            raise ValidationError(f"--processor must be HOST:PORT, got {self.processor!r}")
        if self.batch_size < 1:
            raise ValidationError("--batch-size must be at least 1")
        if self.batch_timeout_ms < 1:
            raise ValidationError("--batch-timeout must be at least 1 ms")
        if self.replay_speed < 0:
            raise ValidationError("--replay-speed must be 0 (as fast as possible) or positive")
        if self.replay_speed and not self.read_file:
            raise ValidationError("--replay-speed applies to -r/--read-file only")
        if not 1 <= self.pcap_buffer_mb <= 4096:
            raise ValidationError("--pcap-buffer-mb must be 1 to 4096")
        if self.queue_mb < 1:
            raise ValidationError("--queue-mb must be at least 1")
        if self.disk_buffer_max_mb < 1:
            raise ValidationError("--disk-buffer-max-mb must be at least 1")
        if self.disk_buffer_dir and not self.disk_buffer:
            raise ValidationError("--disk-buffer-dir needs --disk-buffer")
        if self.breaker_failures < 1 or self.breaker_half_open < 1:
            raise ValidationError("--breaker-failures and --breaker-half-open must be at least 1")
        if self.breaker_open_time < 0:
            raise ValidationError("--breaker-open-time must be >= 0")
        if self.shutdown_timeout < 0:
            raise ValidationError("--shutdown-timeout must be >= 0")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValidationError("--backoff-max must be at least the initial backoff (1 s)")


def split_hostport(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        return host, int(port)
    except ValueError:
        raise ValidationError(f"bad port in {target!r}") from None


def processor_exclusion(target: str) -> str:
    """A BPF expression that excludes the hunter's own traffic to its processor."""
    host, port = split_hostport(target)
    try:
        addrs = sorted(
            {ai[4][0] for ai in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
        )
    except socket.gaierror:
        addrs = []
    if not addrs:
        return f"not (tcp port {port})"
    hosts = " or ".join(f"host {a}" for a in addrs)
    return f"not (tcp port {port} and ({hosts}))"


def default_hunter_id(cfg: HuntConfig) -> str:
    """``--id``, else the certificate's common name, else the host name; always a valid id
    (the processor's rule, :func:`lc.common.credentials.validate_id`), since it names the
    spool directory.

    Raises:
        ValidationError: the id taken from the certificate or the host name is not valid.
    """
    if cfg.hunter_id:
        return validate_id(cfg.hunter_id)
    if cfg.tls is not None:
        cert, _, _ = cfg.tls.read()
        cn = identity_from_pem(cert).common_name
        if cn:
            try:
                return validate_id(cn)
            except ValidationError as e:
                raise ValidationError(f"the certificate's common name: {e}; give --id") from None
    host = socket.gethostname()
    try:
        return validate_id(host)
    except ValidationError as e:
        raise ValidationError(f"the host name: {e}; give --id") from None


class _Usage:
    """CPU percentage between two heartbeats, RSS from /proc."""

    def __init__(self) -> None:
        self._last = (time.monotonic(), self._cpu())

    @staticmethod
    def _cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def cpu_percent(self) -> float:
        now, cpu = time.monotonic(), self._cpu()
        t0, c0 = self._last
        self._last = (now, cpu)
        return 100.0 * (cpu - c0) / (now - t0) if now > t0 else 0.0

    @staticmethod
    def rss_bytes() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _GaveUp(LcError):
    """A second SIGINT/SIGTERM: stop waiting for acknowledgements (not a failure)."""


class Hunter:
    def __init__(self, cfg: HuntConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.stop = threading.Event()
        self.epoch = time.time_ns()
        self.spool: Spool | None = None
        self.spool_error = ""
        self.outbox = Outbox(max_bytes=cfg.queue_mb * 1024 * 1024, epoch=self.epoch)
        self.breaker = CircuitBreaker(
            cfg.breaker_failures, cfg.breaker_open_time, cfg.breaker_half_open
        )
        self.captured = 0
        self.bytes_captured = 0
        self.forwarded = 0
        self._usage = _Usage()
        self._live: list[LiveSource] = []
        self._file: FileSource | None = None
        self.interfaces: list[tuple[str, int]] = []
        self.base_bpf: list[str] = []
        self.started = time.monotonic()
        self.uplink: Uplink | None = None
        self.hunter_id = cfg.hunter_id or ""  # the id in use, once run() has worked it out
        self.filters: HunterFilters | None = None
        self.mode: Mode | None = None
        self.kernel_expr = ""
        self.mode_errors = 0  # packets lost to a mode's failure (a bug: logged, counted)
        self._mode_error_logs = 0
        self.policy = ""  # the no-filter policy in force (the mode's default if not given)
        self.most_filters = 0  # the most filters ever applied at once (0: never any)
        self._apply_lock = threading.Lock()
        self._sets_applied = 0  # filter sets applied (the kept one or the processor's)
        self.interrupted: signal.Signals | None = None  # the signal that stopped it
        self.gave_up: signal.Signals | None = None  # a second one: unacknowledged batches left
        self.replay_complete = False  # the whole file was read
        self.causes: list[str] = []  # why the exit code is not 0, for the user
        self.progress: ProgressFn | None = None  # a replay reports to it (lc hunt -r's bar)
        self._progress_next = 0.0
        self._read_pos: int | None = None  # file bytes handed on, inside a paced chunk
        self.capture_error = ""  # a capture thread ended by an exception (a bug)

    # -- setup -----------------------------------------------------------------------
    def open_sources(self) -> None:
        """Open every source before connecting, so bad input fails fast and clearly."""
        cfg = self.cfg
        if cfg.read_file:
            if cfg.bpf:
                check_bpf(cfg.bpf)
            self._file = FileSource(cfg.read_file, cfg.bpf)
            return
        self.base_bpf = [processor_exclusion(cfg.processor)]
        if cfg.bpf:
            check_bpf(cfg.bpf)
            self.base_bpf.insert(0, cfg.bpf)
        # Nothing is captured until the first filter set has been applied, so filters
        # that exist when the hunter starts apply from its first packet. Packets wait
        # in the kernel at most a tenth of the batch timeout (10 ms by default).
        block_ms = max(1, min(DEFAULT_BLOCK_TIMEOUT_MS, cfg.batch_timeout_ms // 10))
        for i, name in enumerate(cfg.interfaces):
            src = LiveSource(
                name, MATCH_NOTHING, cfg.snaplen, cfg.promisc, cfg.pcap_buffer_mb, index=i,
                block_timeout_ms=block_ms,
            )  # fmt: skip
            self._live.append(src)
            self.interfaces.append((name, src.linktype))
            for expr in self.base_bpf:
                check_bpf(expr, src.linktype)

    def counters(self, usage: bool = True) -> lc_pb2.HunterCounters:
        """The heartbeat's counters. ``usage=False`` leaves CPU and RSS out (a metrics
        scrape: the CPU share is measured between two heartbeats)."""
        ob = self.outbox
        dropped = {"queue_full": ob.dropped_packets}
        if self.spool is not None:
            dropped["spool_full"] = self.spool.counters()["dropped_packets"]
        kernel = iface = 0
        for s in self._live:
            _, k, i = s.stats()
            kernel += k
            iface += i
        if self._live:
            dropped["kernel"] = kernel
            dropped["interface"] = iface
        if self._file is not None:
            dropped["file_truncated"] = self._file.truncated
        # The mode's own reasons; "filtered" (packets no filter wanted) is not a loss and
        # is kept apart from the losses in summary().
        mode_figures: dict[str, int] = {}
        dropped["filtered"] = 0
        if self.mode is not None:
            mc = self.mode.counters()
            mode_figures = mc.figures
            dropped.update(mc.dropped)
        if self.mode_errors:
            dropped["mode_error"] = self.mode_errors
        up = self.uplink
        return lc_pb2.HunterCounters(
            mode=mode_figures,
            spool=self._spool_counters(),
            breaker=self.breaker.state,
            reconnects=up.reconnects if up else 0,
            connect_failures=up.connect_failures if up else 0,
            flow=lc_pb2.FlowState.Name(up.flow).removeprefix("FLOW_") if up else "",
            captured=self.captured,
            forwarded=self.forwarded,
            acked=ob.acked_packets,
            dropped=dropped,
            queue_batches=ob.backlog + ob.inflight,
            queue_bytes=ob.queued_bytes,
            batches_sent=ob.sent_batches,
            cpu_percent=self._usage.cpu_percent() if usage else 0.0,
            rss_bytes=self._usage.rss_bytes() if usage else 0,
            bytes_captured=self.bytes_captured,
        )

    def _spool_counters(self) -> lc_pb2.SpoolCounters | None:
        if not self.cfg.disk_buffer:
            return None
        sc = lc_pb2.SpoolCounters(
            dir=self.spool_dir, max_bytes=self.cfg.disk_buffer_max_mb * 1024 * 1024
        )
        if self.spool is None:
            sc.write_errors = 1  # the directory could not be used at all (see the log)
            return sc
        for k, v in self.spool.counters().items():  # the same names on the wire
            setattr(sc, k, v)
        return sc

    def _open_spool(self, hunter_id: str) -> None:
        cfg = self.cfg
        self.spool_dir = os.path.abspath(cfg.disk_buffer_dir or os.path.join("lc-spool", hunter_id))
        try:
            self.spool = Spool(self.spool_dir, max_bytes=cfg.disk_buffer_max_mb * 1024 * 1024)
        except SpoolError as e:
            self.spool_error = str(e)
            log.error("disk buffer disabled: %s; batches stay in memory only", e)
            return
        self.outbox = Outbox(
            max_bytes=cfg.queue_mb * 1024 * 1024, spool=self.spool, epoch=self.epoch
        )
        c = self.spool.counters()
        if c["records"]:
            log.info(
                "disk buffer %s: %d batches (%d bytes) left by an earlier run will be sent first%s",
                self.spool_dir,
                c["records"],
                c["bytes"],
                f"; skipped {c['torn']} torn and {c['corrupt']} corrupt records"
                if c["torn"] or c["corrupt"]
                else "",
            )

    # -- run -------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.cfg
        self._install_signals()  # first: a signal while starting stops it cleanly too
        self.open_sources()
        hunter_id = default_hunter_id(cfg)
        self.hunter_id = hunter_id
        self.spool_dir = ""
        if cfg.disk_buffer:
            self._open_spool(hunter_id)
        if self._file is not None:
            iface_names = [f"file:{self._file.name}"]
            self.interfaces = self._file.interfaces  # the list object grows with pcapng IDBs
        else:
            iface_names = list(cfg.interfaces)
        spec = modes.get(cfg.mode)
        assert spec is not None  # validated
        policy = cfg.no_filter_policy or spec.default_policy
        self.mode = spec.factory(
            ModeContext(self.interfaces, policy=policy, events=cfg.events), cfg.mode_config
        )
        types = spec.filter_types
        self.policy = policy
        self.filters = HunterFilters(hunter_id, types, self._apply_filters, self._check_filter)
        if self.spool is not None:
            # Keep the applied set beside the spool: restarted while the processor is
            # down, the hunter filters as it did, not by the no-filter policy.
            self.filters.load_cached(os.path.join(self.spool_dir, f"filters-{cfg.mode}.json"))
        ident = HunterIdentity(
            hunter_id=hunter_id,
            epoch=self.epoch,
            hostname=socket.gethostname(),
            version=__version__,
            mode=cfg.mode,
            interfaces=iface_names,
            capabilities=[cfg.mode, *(f"filter:{t}" for t in types)],
            local_filters=list(getattr(self.mode, "local_filters", ())),
        )
        self.uplink = Uplink(
            cfg.processor,
            cfg.tls,
            ident,
            self.outbox,
            self.interfaces,
            self.counters,
            heartbeat_interval=cfg.heartbeat_interval,
            connect_timeout=cfg.connect_timeout,
            on_filters=self.filters.apply,
            filter_types=types,
            filter_version=lambda: self.filters.version if self.filters else 0,
            breaker=self.breaker,
            backoff_initial=cfg.backoff_initial,
            backoff_max=cfg.backoff_max,
        )
        if self.spool is None:
            # Without a disk buffer there is nowhere to keep packets: fail fast and clearly.
            proc_id = self.uplink.connect()
            log.info(
                "hunter %s registered with processor %s at %s", hunter_id, proc_id, cfg.processor
            )
        else:
            log.info(
                "hunter %s: connecting to %s in the background; spooling to %s meanwhile",
                hunter_id,
                cfg.processor,
                self.spool_dir,
            )
            self.uplink.start()
        self.uplink.start_filters()
        self._first_filter_set(compile_filters([], hunter_id, types))
        if self.spool is None:
            self.uplink.start()
        # One heartbeat at once: it tells the processor (and `lc show hunter`) that this
        # hunter has applied its filters and is capturing, rather than in 5 s.
        self.uplink.heartbeat_now()
        self.started = time.monotonic()
        if self._file is not None:
            self._replay()
        else:
            self._capture_live()
        # What the mode still holds is decided now (sessions never matched are dropped
        # and counted); what it releases, packets and events, goes out last.
        batcher = self._new_batcher()
        self._put(batcher, self._mode_call(self.mode.finish), block=self._file is not None)
        self._flush(batcher, block=self._file is not None)
        return self._finish()

    def _kernel_expression(self, compiled: FilterSet) -> str:
        """The kernel BPF: the user's -f and the processor exclusion, AND the mode's."""
        assert self.mode is not None
        mode_expr = self.mode.kernel_filter(compiled)
        if mode_expr == MATCH_NOTHING:
            return MATCH_NOTHING
        parts = [f"({b})" for b in self.base_bpf]
        if mode_expr:
            parts.append(f"({mode_expr})")
        return " and ".join(parts)

    def _check_filter(self, f: Filter) -> None:
        """Raise LcError when ``f`` cannot work on this hunter: a ``bpf`` expression
        the processor accepted (it compiles for Ethernet) that does not compile for the
        link type of an interface (``ether host`` on ``-i any``, or replaying its file)."""
        if f.type == "bpf":
            for lt in {lt for _, lt in self.interfaces}:
                check_bpf(f.pattern, lt)

    def _apply_filters(self, filters: list[Filter], compiled: FilterSet) -> None:
        """The filter set from the processor (or the one kept beside the spool)."""
        with self._apply_lock:
            self._apply_set(compiled)
            self._sets_applied += 1
        self.most_filters = max(self.most_filters, len(compiled))

    def _apply_set(self, compiled: FilterSet) -> None:
        """Swap in a filter set: check the kernel filter, give the set to the mode, then
        change the kernel filter. libpcap re-filters what the ring already holds with the
        new program and the handle stays open, so no packet the new set wants is lost.
        Raises LcError (nothing changed) when the kernel filter or a BPF filter is bad."""
        assert self.mode is not None
        expr = self._kernel_expression(compiled)
        if self._live and expr != self.kernel_expr:
            for lt in {src.linktype for src in self._live}:
                check_bpf(expr, lt)
        self.mode.apply(compiled)
        if self._live and expr != self.kernel_expr:
            for src in self._live:
                src.set_filter(expr)
            log.info("kernel filter: %s", expr)
        self.kernel_expr = expr

    def _first_filter_set(self, none: FilterSet) -> None:
        """Apply a first filter set before the first packet is read.

        The set kept from the last run, if any, is applied already. A live capture with a
        disk buffer never waits for the processor: its kernel ring would overflow, or,
        as the handle matches nothing until a set is applied, it would capture nothing
        while connection attempts run (an outage at start lost all but the last second
        of traffic that way). It starts at once with the no-filter policy, and the
        processor's set replaces it on arrival. Otherwise the hunter waits up to
        ``connect_timeout`` for the processor's set, so that filters that exist apply from
        the first packet: without a disk buffer it is connected already, and a replay
        loses nothing by waiting.
        """
        assert self.filters is not None and self.mode is not None
        if self.filters.received.is_set():
            return
        if self._live and self.spool is not None:
            log.info(
                "no filter set yet: capturing at once with --no-filter-policy %s until the "
                "processor's set arrives",
                self.policy,
            )
        else:
            deadline = time.monotonic() + self.cfg.connect_timeout
            while not self.filters.received.wait(0.05):
                if self.stop.is_set() or time.monotonic() >= deadline:
                    break
            else:
                return
            log.warning(
                "no filter set from the processor yet; starting with none (%s)", self.policy
            )
        with self._apply_lock:  # unless the processor's set came in meanwhile
            if not self._sets_applied:
                self._apply_set(none)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, _frame: object) -> None:
            if self.stop.is_set():
                log.warning(
                    "second %s: giving up on unacknowledged batches", signal.Signals(signum).name
                )
                self.gave_up = signal.Signals(signum)
                if self.uplink is not None:
                    self.uplink.fatal = _GaveUp(f"a second {self.gave_up.name}")
                    self.outbox.wake()
                return
            log.info("%s: stopping capture, flushing", signal.Signals(signum).name)
            self.interrupted = signal.Signals(signum)
            self.stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    def _new_batcher(self) -> Batcher:
        return Batcher(self.cfg.batch_size, self.cfg.batch_timeout_ms * 1_000_000)

    def _add(
        self, batcher: Batcher, chunk: Chunk, block: bool, ts_offset: int | None = None
    ) -> None:
        n = len(chunk)
        self.captured += n
        self.bytes_captured += len(chunk.records) - 16 * n
        assert self.mode is not None
        self._put(batcher, self._mode_call(self.mode.process, chunk, lost=n), block, ts_offset)

    def _mode_call(self, fn: Callable[..., Forward], *args: object, lost: int = 0) -> Forward:
        """A mode call that cannot stop the hunter: a mode that raises has a bug, which is
        logged (the first few times) and counted; the ``lost`` packets it had are lost."""
        try:
            return fn(*args)
        except Exception:
            self.mode_errors += lost
            self._mode_error_logs += 1
            if self._mode_error_logs <= 10:
                log.exception("the %s mode failed (%d packets lost)", self.cfg.mode, lost)
            return EMPTY

    def _put(
        self, batcher: Batcher, fwd: Forward, block: bool, ts_offset: int | None = None
    ) -> None:
        """Hand what a mode forwards to the batcher (and sealed batches to the outbox).
        ``ts_offset`` (live capture): the monotonic clock minus the capture clock, so
        that a batch's timeout counts from its oldest packet's capture."""
        now = time.monotonic_ns()
        if fwd.events:
            batcher.add_events(fwd.events, now)
        for kind, items in fwd.extras:
            batcher.add_extras(kind, items, now)
        chunk = fwd.chunk
        if len(chunk):
            ob = self.outbox
            for b in batcher.add_chunk(
                chunk.ts_ns,
                chunk.caplen,
                chunk.origlen,
                chunk.records,
                chunk.iface,
                now,
                self._busy(),
                fwd.meta,
                ts_offset,
            ):
                if ob.put(b, block=block):
                    self.forwarded += len(b)
        self._tick(batcher, block, now)

    def _busy(self) -> bool:
        """Grow batches: a backlog, or the processor asked for fewer, bigger batches."""
        up = self.uplink
        return self.outbox.backlog > 0 or (up is not None and up.flow == lc_pb2.FLOW_SLOW)

    def _tick(self, batcher: Batcher, block: bool, now: int | None = None) -> None:
        if batcher.due(time.monotonic_ns() if now is None else now):
            b = batcher.seal(self._busy())
            if self.outbox.put(b, block=block):
                self.forwarded += len(b)

    def _flush(self, batcher: Batcher, block: bool) -> None:
        if batcher.pending:
            b = batcher.seal()
            if self.outbox.put(
                b, block=block, timeout=self.cfg.shutdown_timeout if block else None
            ):
                self.forwarded += len(b)

    def _replay(self) -> None:
        src = self._file
        assert src is not None
        batcher = self._new_batcher()
        speed = self.cfg.replay_speed
        first_ts = None
        t0 = time.monotonic_ns()
        self._report_progress("reading", force=True)
        while not self.stop.is_set() and (self.uplink is None or self.uplink.fatal is None):
            before = src.offset
            chunk = src.read(256 if speed else 4096)
            if chunk is None:
                self.replay_complete = True
                break
            if len(src.interfaces) != len(self.interfaces):  # before its packets are sent
                self.interfaces[:] = src.interfaces
            if speed:
                if first_ts is None:
                    first_ts = chunk.ts_ns[0]
                # A paced chunk is released over seconds (256 packets of a quiet
                # capture: minutes): the bar follows its packets, not the read ahead.
                span, whole, done = src.offset - before, len(chunk.records) or 1, 0
                for part in _paced(chunk, first_ts, t0, speed, self.stop):
                    self._add(batcher, part, block=True)
                    done += len(part.records)
                    self._read_pos = before + span * done // whole
                    self._report_progress("reading")
                self._read_pos = None
            else:
                self._add(batcher, chunk, block=True)
                self._report_progress("reading")
            if len(src.interfaces) != len(self.interfaces):  # a pcapng IDB came along
                self.interfaces[:] = src.interfaces
        self._flush(batcher, block=True)
        self._report_progress("acks", force=True)

    def _report_progress(self, phase: str, force: bool = False) -> None:
        """Tell ``progress`` where the replay is, at most every _PROGRESS_EVERY seconds."""
        if self.progress is None or self._file is None:
            return
        now = time.monotonic()
        if now < self._progress_next and not force:
            return
        self._progress_next = now + _PROGRESS_EVERY
        src = self._file
        try:
            pos = src.offset if self._read_pos is None else self._read_pos
            self.progress(phase, self.captured, self.bytes_captured, pos, src.size)
        except Exception:  # a display must never stop a replay
            log.debug("progress display failed; no more progress", exc_info=True)
            self.progress = None

    def _capture_live(self) -> None:
        threads = []
        for src in self._live:
            t = threading.Thread(target=self._live_loop, args=(src,), name=f"lc-cap-{src.name}")
            t.start()
            threads.append(t)
        try:
            while not self.stop.wait(0.2):
                if self.uplink is not None and self.uplink.fatal is not None:
                    self.stop.set()
        finally:
            for t in threads:
                t.join()

    def _live_loop(self, src: LiveSource) -> None:
        try:
            self._capture_from(src)
        except Exception as e:  # a bug; never a capture thread ending in silence
            log.exception("capture on %s failed", src.name)
            self.capture_error = f"capture on {src.name} failed: {type(e).__name__}: {e}"
            self.stop.set()

    def _capture_from(self, src: LiveSource) -> None:
        """One interface's capture loop. It sleeps in the source until packets come,
        the pending batch's deadline (counted from its oldest packet's capture time:
        see :class:`Batcher`) or ``idle`` without packets, whichever is first: a batch
        is sealed on time whether or not more packets follow, and the mode's clock
        ticks (sessions end and expire) when none come."""
        assert self.mode is not None
        batcher = self._new_batcher()
        idle = min(100_000_000, self.cfg.batch_timeout_ms * 1_000_000)
        next_idle = time.monotonic_ns() + idle
        while not self.stop.is_set():
            wake = next_idle
            deadline = batcher.deadline()
            if deadline is not None and deadline < wake:
                wake = deadline
            chunk = src.read(max(0, wake - time.monotonic_ns()) / 1e9)
            if chunk is not None:
                self._add(batcher, chunk, False, time.monotonic_ns() - time.time_ns())
                next_idle = time.monotonic_ns() + idle
                continue
            now = time.monotonic_ns()
            if now >= next_idle:
                tick = self._mode_call(self.mode.tick, time.time_ns())
                self._put(batcher, tick, False, now - time.time_ns())
                next_idle = now + idle
            else:
                self._tick(batcher, False, now)
        # Packets already in the kernel ring when the stop came are part of the capture.
        while (chunk := src.read(0.0)) is not None:
            self._add(batcher, chunk, False, time.monotonic_ns() - time.time_ns())
        self._flush(batcher, block=False)

    def _finish(self) -> int:
        assert self.uplink is not None
        ok = self.uplink.finish(self.cfg.shutdown_timeout)
        for s in self._live:
            s.close()
        if self._file is not None:
            self._file.close()
        self.elapsed = time.monotonic() - self.started
        self.spooled_at_exit = 0
        unacked = (self.outbox.memory_batches(), self.outbox.unacked_packets())
        lost = unacked[0]
        if self.spool is not None:
            lost = self.outbox.spool_rest()
            self.spooled_at_exit = len(self.spool)
            self.spool.close()
            if self.spooled_at_exit:
                log.info(
                    "%d batches wait in the disk buffer %s for the next run",
                    self.spooled_at_exit,
                    self.spool_dir,
                )
        if self.uplink.fatal is not None and not isinstance(self.uplink.fatal, _GaveUp):
            raise self.uplink.fatal
        self.causes = self._loss_causes(ok or self.gave_up is not None, lost, unacked[1])
        cut = self._replay_cut_short()
        if cut:
            self.causes.insert(0, f"the replay of {cut}")
        if self.gave_up is not None and lost and self.spool is None:
            self.causes.append(
                f"a second {self.gave_up.name} gave up on {unacked[1]} unacknowledged packets "
                f"({lost} batches)"
            )
        if self.interrupted is not None and (cut or (self.gave_up is not None and self.causes)):
            return 128 + self.interrupted
        return 1 if self.causes else 0

    def _replay_cut_short(self) -> str:
        """'F was interrupted by SIGINT' for a replay stopped before the end of its file."""
        if self._file is None or self.replay_complete:
            return ""
        why = self.interrupted.name if self.interrupted is not None else "a stop"
        return f"{self._file.path} was interrupted by {why}"

    def _loss_causes(self, acked_all: bool, lost_batches: int, unacked_packets: int) -> list[str]:
        """One line per reason packets the hunter had taken were lost (empty: none were)."""
        cfg = self.cfg
        causes = [self.capture_error] if self.capture_error else []
        if self._mode_error_logs:
            causes.append(
                f"the {self.cfg.mode} mode failed {self._mode_error_logs} times (a bug: see the "
                f"log); {self.mode_errors} packets it held were lost (dropped.mode_error)"
            )
        ob = self.outbox
        kernel = sum(s.stats()[1] for s in self._live)
        iface = sum(s.stats()[2] for s in self._live)
        if kernel:
            causes.append(
                f"the kernel dropped {kernel} packets before lc read them (its capture buffer "
                f"was full; --pcap-buffer-mb {cfg.pcap_buffer_mb})"
            )
        if iface:
            causes.append(f"the interfaces dropped {iface} packets (libpcap's ps_ifdrop)")
        if ob.dropped_packets:
            causes.append(
                f"{ob.dropped_packets} packets ({ob.dropped_batches} batches) dropped: the memory "
                f"queue was full (--queue-mb {cfg.queue_mb})"
                + ("" if self.spool is not None else " and there is no disk buffer")
            )
        if self.spool is not None:
            c = self.spool.counters()
            if c["dropped_packets"]:
                causes.append(
                    f"{c['dropped_packets']} packets ({c['dropped_batches']} batches) dropped: "
                    f"the disk buffer {self.spool_dir} was full "
                    f"(--disk-buffer-max-mb {cfg.disk_buffer_max_mb})"
                )
            if c["write_errors"]:
                causes.append(
                    f"{c['write_errors']} writes to the disk buffer {self.spool_dir} failed "
                    "(see the log)"
                )
            if lost_batches:
                causes.append(
                    f"{lost_batches} unacknowledged batches could not be kept in the disk buffer "
                    f"{self.spool_dir} at exit"
                )
        elif not acked_all and lost_batches:
            where = (
                f"the disk buffer could not be used ({self.spool_error})"
                if self.spool_error
                else "no disk buffer (--disk-buffer) to keep them"
            )
            causes.append(
                f"{unacked_packets} packets ({lost_batches} batches) were not acknowledged "
                f"within --shutdown-timeout {cfg.shutdown_timeout:g} s and {where}"
            )
        return causes

    def summary(self) -> str:
        c = self.counters()
        el = getattr(self, "elapsed", time.monotonic() - self.started)
        rate = c.captured / el if el > 0 else 0.0
        if self._file is None:
            what = "captured"
        elif cut := self._replay_cut_short():
            what = f"replay of {cut}"
        else:
            what = f"replayed {self._file.path}"
        dropped = sum(v for k, v in c.dropped.items() if k != "filtered")
        unacked = self.outbox.unacked_packets()
        spooled = ""
        if self.cfg.disk_buffer:
            sc = c.spool
            spooled = (
                f", disk buffer: {getattr(self, 'spooled_at_exit', sc.records)} batches kept, "
                f"{sc.appended} spooled, {sc.replayed} replayed, "
                f"{sc.dropped_packets} packets dropped (full)"
            )
        note = self.mode.counters().summary if self.mode is not None else ""
        if note:
            spooled += f"; {note}"
        reasons = ", ".join(
            f"{k} {v}" for k, v in sorted(c.dropped.items()) if v and k != "filtered"
        )
        # A mode's local filters (lc hunt email --sender, http --host...) are filters too.
        local = getattr(self.mode, "local_filters", ()) if self.mode is not None else ()
        if self.policy == "deny" and self.most_filters == 0 and not local:
            spooled += (
                "; no filter applied and --no-filter-policy deny: nothing forwarded "
                "(add one with `lc set filter`, or give --no-filter-policy allow)"
            )
        return (
            f"lc hunt: {what}: {c.captured} packets ({c.bytes_captured} bytes) in {el:.2f} s "
            f"({rate:,.0f} pkt/s); filtered out {c.dropped['filtered']}, "
            f"forwarded {c.forwarded}, "
            f"acknowledged {c.acked}, "
            f"dropped {dropped}{f' ({reasons})' if reasons else ''}, "
            f"unacknowledged {unacked}{spooled}"
        )


def _paced(chunk: Chunk, first_ts: int, t0: int, speed: float, stop: threading.Event):
    """Split a chunk so that each part is released when its capture time comes due."""
    from array import array

    n = len(chunk)
    start = 0
    off = 0
    mv = memoryview(chunk.records)
    while start < n and not stop.is_set():
        now = time.monotonic_ns()
        due_until = first_ts + int((now - t0) * speed)
        end = start
        while end < n and chunk.ts_ns[end] <= due_until:
            end += 1
        if end == start:
            wait_ns = (chunk.ts_ns[start] - first_ts) / speed - (now - t0)
            stop.wait(min(max(wait_ns / 1e9, 0.0005), 0.1))
            continue
        nb = sum(chunk.caplen[start:end]) + 16 * (end - start)
        iface = chunk.iface if isinstance(chunk.iface, int) else chunk.iface[start:end]
        yield Chunk(
            array("q", chunk.ts_ns[start:end]),
            array("I", chunk.caplen[start:end]),
            array("I", chunk.origlen[start:end]),
            bytes(mv[off : off + nb]),
            iface,
        )
        off += nb
        start = end
