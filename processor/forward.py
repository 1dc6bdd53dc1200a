"""Forwarding upstream (``lc process --upstream HOST:PORT``): an edge processor's sink.

Every batch the edge commits is forwarded to its upstream processor **under its
original (hunter id, epoch, sequence)**, so the upstream deduplicates it exactly as it
would a hunter's own, through the same delivery code hunters use (:mod:`lc.link`):
the outbox and its disk spool, the circuit breaker, backoff with jitter, keepalives,
acknowledgements and flow control (SLOW, PAUSE, RESUME).

**Durability: the spool is written inside the commit.** :class:`Forwarder` is a sink
(:mod:`lc.processor.sinks`): per batch it keeps the batch's parts (records, interface
indices, and everything else as :func:`lc.common.wire.forward_extras`), and in
``prepare``, after every other output has handed its bytes to the OS and before the
ledger's transaction, it appends them to the upstream spool
(``DATA_DIR/upstream-spool``), one ``write`` each. Only then does the ledger commit and
the hunter get its Ack. So:

* whatever the edge acknowledged to a hunter is in the upstream spool (or already
  acknowledged upstream): a SIGKILL after the commit loses nothing, the spool's
  records are in the page cache and survive the process (``fsync`` only matters for a
  machine crash, as for the edge's own files);
* a SIGKILL between the append and the commit leaves batches in the spool that the
  edge did not acknowledge: the hunter sends them again, the edge writes them again
  and appends them again, and the upstream, which deduplicates by (hunter, epoch,
  sequence), writes each once;
* a spool without room for the group fails the group (nothing is appended: the room is
  checked first), like any output that cannot write: the hunters are told, keep their
  batches and send them again, so the edge never acknowledges what it cannot forward
  (a write error in mid-group fails it too; the batches appended before it are then
  like those of a kill between append and commit: written once upstream).

The uplink reads the spool in append order and acknowledges each record when the
upstream's Ack (which names the hunter) arrives; a restarted edge sends what its last
run left first. Only the spool is used (no memory tier), so nothing committed is ever
only in memory.

Before the first batch of a hunter in each session, the uplink registers that hunter
with the upstream on its behalf (``RegisterRequest.via``): the upstream accepts a
processor's batches only for hunters registered through it. The edge registers itself
as a processor (``RegisterRequest.processor``: its height and the processors below it,
for the upstream's cycle and depth checks), sends its tree in every heartbeat
(``HeartbeatRequest.topology``; the upstream checks it for loops again, and answers with
the chain above the edge as it is now) and subscribes to the upstream's filters, which it
stores and hands down to its own hunters (:meth:`lc.processor.filterhub.FilterHub.
apply_upstream`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import grpc

from lc import __version__
from lc.common.bpf import check_bpf
from lc.common.errors import LcError, PermissionDenied, ValidationError
from lc.common.filters import Filter, validate_filter
from lc.common.text import log_text
from lc.common.transport import TlsFiles, error_from_rpc
from lc.common.wire import forward_extras
from lc.link.breaker import CircuitBreaker
from lc.link.outbox import Outbox, Pending
from lc.link.spool import DEFAULT_MAX_BYTES, Spool, SpoolError
from lc.link.uplink import HunterIdentity, Uplink
from lc.processor.limits import Throttle
from lc.processor.sinks import Received, Statements
from lc.processor.tree import Tree
from lc.proto import lc_pb2

__all__ = ["ForwardUplink", "Forwarder", "UpstreamConfig"]

log = logging.getLogger(__name__)
_throttle = Throttle(log)

SPOOL_DIR = "upstream-spool"
PAUSE_FILL = 0.9  # ask our hunters to PAUSE when the upstream spool is this full
RESUME_FILL = 0.75


class UpstreamConfig:
    """How an edge reaches its upstream (``lc process --upstream`` and its flags)."""

    def __init__(
        self,
        target: str,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        backoff_max: float = 60.0,
        breaker_open_time: float = 30.0,
        connect_timeout: float = 10.0,
        heartbeat_interval: float = 5.0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.target = target
        self.spool_max_bytes = spool_max_bytes
        self.backoff_max = backoff_max
        self.breaker_open_time = breaker_open_time
        self.connect_timeout = connect_timeout
        self.heartbeat_interval = heartbeat_interval
        self.shutdown_timeout = shutdown_timeout


class ForwardUplink(Uplink):
    """The uplink of an edge processor (see the module docstring and :mod:`lc.link.uplink`)."""

    def __init__(
        self,
        *args: Any,
        tree: Tree,
        describe: Callable[[str], lc_pb2.RegisterRequest],
        topology: Callable[[], lc_pb2.Topology],
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.tree = tree
        self.describe = describe
        self.topology = topology
        self.stream_metadata = (("lc-processor", self.ident.hunter_id),)
        self.retry_refused = True  # an edge keeps spooling and tries again
        self._registered: set[str] = set()  # hunters registered upstream in this session
        self.forwarded_registrations = 0

    def registration_request(self) -> lc_pb2.RegisterRequest:
        req = super().registration_request()
        req.processor.CopyFrom(self.tree.info())
        return req

    def registered(self, resp: lc_pb2.RegisterResponse) -> None:
        self.tree.set_upstream(resp.ancestors, resp.levels_below)

    def _register(self) -> str:
        try:
            return super()._register()
        except PermissionDenied:
            # Refused (a cycle, the depth limit), or cut by the upstream: nothing is
            # above this processor now, so its own checks must not count on the chain
            # it was given before (a processor of that chain may be its child next).
            self.tree.clear_upstream()
            raise

    def session_begun(self) -> None:
        self._registered = set()

    def before_send(self, p: Pending) -> bool:
        hid = p.source
        if not hid or hid in self._registered:
            return True
        stub = self.management_stub()
        if stub is None:
            return False
        req = self.describe(hid)
        try:
            resp = stub.RegisterHunter(req, timeout=self.connect_timeout)
        except grpc.RpcError as e:
            err = error_from_rpc(e, self.target)
            _throttle.warning(
                ("forward-register", hid),
                f"upstream {self.target}: cannot register hunter {log_text(hid)}: {err}",
            )
            return False
        if not resp.accepted:
            _throttle.warning(
                ("forward-register", hid),
                f"upstream {self.target} refused hunter {log_text(hid)}: {log_text(resp.reason)}"
                "; its batches wait in the upstream spool",
            )
            return False
        self._registered.add(hid)
        self.forwarded_registrations += 1
        return True

    def heartbeat_request(self) -> lc_pb2.HeartbeatRequest:
        req = super().heartbeat_request()
        req.topology.CopyFrom(self.topology())
        return req

    def heartbeat_answered(self, resp: lc_pb2.HeartbeatResponse) -> None:
        # The chain above as it is now (an upstream of an earlier version says nothing:
        # every processor's answer names at least itself).
        if resp.ancestors:
            self.tree.set_upstream(resp.ancestors, resp.levels_below)

    def subscription_request(self) -> lc_pb2.SubscribeFiltersRequest:
        return lc_pb2.SubscribeFiltersRequest(hunter_id=self.ident.hunter_id, processor=True)


class Forwarder:
    """The upstream sink: committed batches into the upstream spool, and the uplink that
    drains it (see the module docstring)."""

    name = "upstream"

    def __init__(
        self,
        cfg: UpstreamConfig,
        tls: TlsFiles | None,
        processor_id: str,
        data_dir: str,
        tree: Tree,
        describe: Callable[[str], lc_pb2.RegisterRequest],
        topology: Callable[[], lc_pb2.Topology],
        on_filters: Callable[[lc_pb2.FilterUpdate], object],
    ) -> None:
        self.cfg = cfg
        self.directory = os.path.join(data_dir, SPOOL_DIR)
        try:
            self.spool = Spool(self.directory, max_bytes=cfg.spool_max_bytes)
        except SpoolError as e:
            raise LcError(f"--upstream: {e}") from None
        self.epoch = time.time_ns()
        self.outbox = Outbox(spool=self.spool, epoch=self.epoch)
        self.breaker = CircuitBreaker(open_seconds=cfg.breaker_open_time)
        self._on_filters = on_filters
        ident = HunterIdentity(
            hunter_id=processor_id,
            epoch=self.epoch,
            hostname=socket.gethostname(),
            version=__version__,
            mode="processor",
            interfaces=[],
        )
        self.uplink = ForwardUplink(
            cfg.target,
            tls,
            ident,
            self.outbox,
            [],
            self.counters,
            heartbeat_interval=cfg.heartbeat_interval,
            connect_timeout=cfg.connect_timeout,
            on_filters=self._filters,
            breaker=self.breaker,
            backoff_max=cfg.backoff_max,
            tree=tree,
            describe=describe,
            topology=topology,
        )
        self._pending: list[tuple[str, int, int, bytes, int, Any, bytes]] = []
        self._paused = False
        self._wanted = 0  # room a refused group needed: PAUSE until the spool has it
        self.refused_groups = 0  # groups failed because the spool had no room
        self.filters_refused = 0  # filters from the upstream that do not validate here
        left = len(self.spool)
        if left:
            log.info(
                "upstream spool %s holds %d batches an earlier run did not deliver; they go first",
                self.directory,
                left,
            )

    def start(self) -> None:
        self.uplink.start_filters()
        self.uplink.start()

    # -- the sink ------------------------------------------------------------------------
    def mark(self) -> object:
        return len(self._pending)

    def write(self, batch: Received) -> None:
        cols = batch.cols
        self._pending.append(
            (
                batch.hunter_id,
                batch.epoch,
                batch.sequence,
                cols.records,
                len(cols),
                cols.iface,
                forward_extras(cols),
            )
        )

    def rollback(self, mark: object) -> None:
        del self._pending[int(mark) :]  # type: ignore[call-overload]

    def prepare(self) -> Statements:
        pending = self._pending
        if not pending:
            return ()
        need = sum(
            Spool.record_size(len(r), n, len(x) + len(h.encode()))
            for h, _, _, r, n, _, x in pending
        )
        if need > self.spool.room():
            self.refused_groups += 1
            self._wanted = need
            _throttle.warning(
                "upstream-full",
                f"upstream spool {self.directory} is full ({self.spool.room()} bytes left of "
                f"{self.cfg.spool_max_bytes}; --upstream-spool-max-mb): {len(pending)} batches "
                "refused, their hunters keep them and send them again",
            )
            raise OSError(28, f"the upstream spool {self.directory} is full")
        put = self.outbox.put_spooled
        for h, e, s, records, n, iface, extras in pending:
            if not put(h, e, s, records, n, iface, extras):  # a write error (counted)
                raise OSError(5, f"cannot write to the upstream spool {self.directory}")
        pending.clear()
        return ()

    def committed(self) -> None:
        pass

    def close(self) -> Statements:
        return ()

    # -- state ---------------------------------------------------------------------------
    @property
    def flow(self) -> int:
        """PAUSE while the upstream spool is nearly full, or has no room for a group it
        had to refuse (hunters keep their batches in their own spool meanwhile);
        CONTINUE again once it has drained to RESUME_FILL."""
        room = self.spool.room()
        used = 1.0 - room / max(1, self.cfg.spool_max_bytes)
        if used >= PAUSE_FILL or room < self._wanted:
            self._paused = True
        elif used <= RESUME_FILL:
            self._paused = False
            self._wanted = 0
        return lc_pb2.FLOW_PAUSE if self._paused else lc_pb2.FLOW_CONTINUE

    @property
    def upstream_state(self) -> str:
        return "connected" if self.uplink.connected.is_set() else "connecting"

    def counters(self) -> lc_pb2.HunterCounters:
        up, ob = self.uplink, self.outbox
        sc = lc_pb2.SpoolCounters(dir=self.directory, max_bytes=self.cfg.spool_max_bytes)
        for k, v in self.spool.counters().items():
            setattr(sc, k, v)
        return lc_pb2.HunterCounters(
            spool=sc,
            breaker=self.breaker.state,
            reconnects=up.reconnects,
            connect_failures=up.connect_failures,
            flow=lc_pb2.FlowState.Name(up.flow).removeprefix("FLOW_"),
            acked=ob.acked_packets,
            queue_batches=len(self.spool),
            batches_sent=ob.sent_batches,
        )

    def figures(self) -> list[tuple[str, str, str, float]]:
        """(metric name, counter|gauge, help, value) for the processor's metrics."""
        up, ob, sp = self.uplink, self.outbox, self.spool.counters()
        return [
            ("lc_processor_upstream_connected", "gauge",
             "1 while the stream to the upstream processor is up.", int(up.connected.is_set())),
            ("lc_processor_upstream_spool_bytes", "gauge",
             "Bytes in the upstream spool (committed here, not yet acknowledged upstream).",
             sp.get("bytes", 0)),
            ("lc_processor_upstream_spool_batches", "gauge",
             "Batches in the upstream spool.", len(self.spool)),
            ("lc_processor_upstream_packets_acked", "counter",
             "Packets the upstream acknowledged.", ob.acked_packets),
            ("lc_processor_upstream_batches_sent", "counter",
             "Batches sent upstream (resends included).", ob.sent_batches),
            ("lc_processor_upstream_reconnects", "counter",
             "Connections to the upstream after the first.", up.reconnects),
            ("lc_processor_upstream_filters_refused", "counter",
             "Filters from the upstream refused here.", self.filters_refused),
        ]  # fmt: skip

    def _filters(self, upd: lc_pb2.FilterUpdate) -> None:
        """Filters from the upstream, checked here as if set here: one that does not
        validate is left out (logged, counted), never the whole update."""
        good = lc_pb2.FilterUpdate(
            version=upd.version, full=upd.full, removed=list(upd.removed)[:100_000]
        )
        for pb in upd.filters:
            try:
                validate_filter(
                    Filter(
                        pb.id, pb.type, pb.pattern, pb.enabled, pb.description, tuple(pb.hunters)
                    ),
                    bpf_check=check_bpf,
                )
            except (ValidationError, TypeError) as e:
                self.filters_refused += 1
                _throttle.warning(
                    ("upstream-filter", pb.id),
                    f"filter {log_text(pb.id)} from the upstream is refused here: {log_text(e)}",
                )
                continue
            good.filters.append(pb)
        self._on_filters(good)

    def shutdown(self) -> None:
        """At the end (after the last commit): let the upstream acknowledge what it can
        within the shutdown timeout, then stop; the spool keeps the rest for the next run."""
        try:
            self.uplink.finish(self.cfg.shutdown_timeout)
        finally:
            left = len(self.spool)
            self.spool.close()
            if left:
                log.info("upstream spool keeps %d batches for the next run", left)
