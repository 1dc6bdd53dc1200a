"""The hunter's connection to its processor: registration, heartbeats, the batch stream.

Threads: one runs the StreamPackets call (gRPC itself pulls the request generator
on its own thread) and reads acknowledgements and flow control; one sends a
heartbeat every ``heartbeat_interval`` seconds. Capture never calls into this
module: it only puts batches into the :class:`~lc.hunter.outbox.Outbox`.

A broken stream is retried with exponential backoff; unacknowledged batches are
sent again and the processor drops any it had already written.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from lc.common.errors import LcError, PermissionDenied, Unreachable
from lc.common.transport import TlsFiles, error_from_rpc, open_channel
from lc.common.wire import build_batch
from lc.hunter.outbox import Outbox
from lc.proto import lc_pb2, lc_pb2_grpc

__all__ = ["HunterIdentity", "Uplink"]

log = logging.getLogger(__name__)

_FATAL = {
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
}


@dataclass(slots=True)
class HunterIdentity:
    hunter_id: str
    epoch: int
    hostname: str
    version: str
    mode: str
    interfaces: list[str]
    capabilities: list[str] = field(default_factory=list)


class Uplink:
    def __init__(
        self,
        target: str,
        tls: TlsFiles | None,
        ident: HunterIdentity,
        outbox: Outbox,
        interfaces: list[tuple[str, int]],
        counters: Callable[[], lc_pb2.HunterCounters],
        heartbeat_interval: float = 5.0,
        connect_timeout: float = 10.0,
        on_filters: Callable[[lc_pb2.FilterUpdate], object] | None = None,
        filter_types: tuple[str, ...] = (),
        filter_version: Callable[[], int] = lambda: 0,
    ) -> None:
        self.on_filters = on_filters
        self.filter_types = filter_types
        self.filter_version = filter_version
        self.target = target
        self.tls = tls
        self.ident = ident
        self.outbox = outbox
        self.interfaces = interfaces
        self.counters = counters
        self.heartbeat_interval = heartbeat_interval
        self.connect_timeout = connect_timeout
        self.flow = lc_pb2.FLOW_CONTINUE
        self.fatal: LcError | None = None
        self.reconnects = 0
        self._channel: grpc.Channel | None = None
        self._closing = threading.Event()  # no more batches will be added
        self._stopped = threading.Event()  # give up now
        self._threads: list[threading.Thread] = []
        self._proc_id = ""

    # -- lifecycle -----------------------------------------------------------------
    def connect(self) -> str:
        """Open the channel and register; returns the processor's id.

        Raises:
            Unreachable: the processor cannot be reached within ``connect_timeout``
                (includes TLS handshake failures, which gRPC reports the same way).
            PermissionDenied: the processor refused the registration.
        """
        self._channel = open_channel(self.target, self.tls)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=self.connect_timeout)
        except grpc.FutureTimeoutError:
            self._channel.close()
            raise Unreachable(
                f"cannot reach processor at {self.target} within {self.connect_timeout:g} s"
                + ("" if self.tls is None else " (is it up, and does its TLS trust ours?)")
            ) from None
        return self._register()

    def _register(self) -> str:
        stub = lc_pb2_grpc.ManagementServiceStub(self._channel)
        i = self.ident
        req = lc_pb2.RegisterRequest(
            hunter_id=i.hunter_id,
            hostname=i.hostname,
            version=i.version,
            mode=i.mode,
            interfaces=i.interfaces,
            capabilities=i.capabilities,
            epoch=i.epoch,
        )
        try:
            resp = stub.RegisterHunter(req, timeout=self.connect_timeout)
        except grpc.RpcError as e:
            raise error_from_rpc(e, self.target) from None
        if not resp.accepted:
            raise PermissionDenied(f"processor refused hunter {i.hunter_id!r}: {resp.reason}")
        if resp.heartbeat_interval_ms:
            self.heartbeat_interval = min(self.heartbeat_interval, resp.heartbeat_interval_ms / 1e3)
        self._proc_id = resp.processor_id
        return resp.processor_id

    def start_filters(self) -> None:
        """Subscribe to filter updates (call before capture starts)."""
        if self.on_filters is None:
            return
        t = threading.Thread(target=self._filter_loop, name="lc-filters", daemon=True)
        t.start()
        self._threads.append(t)

    def _filter_loop(self) -> None:
        stub = lc_pb2_grpc.ManagementServiceStub(self._channel)
        req = lc_pb2.SubscribeFiltersRequest(
            hunter_id=self.ident.hunter_id, filter_types=list(self.filter_types)
        )
        backoff = 0.5
        while not self._stopped.is_set():
            call = stub.SubscribeFilters(req)
            self._filter_call = call
            try:
                for upd in call:
                    backoff = 0.5
                    self.on_filters(upd)  # type: ignore[misc]
            except grpc.RpcError as e:
                if self._stopped.is_set():
                    return
                if e.code() in _FATAL:
                    log.error("filter subscription refused: %s", e.details())
                    return
                log.debug("filter subscription broke: %s", e.details())
            self._stopped.wait(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 30.0)

    def start(self) -> None:
        for name, fn in (("lc-stream", self._stream_loop), ("lc-heartbeat", self._heartbeat_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def finish(self, timeout: float) -> bool:
        """No more batches are coming: wait up to ``timeout`` for all acks, then close.

        Returns True when everything was acknowledged.
        """
        self._closing.set()
        self.outbox.wake()
        ok = self.outbox.wait_drained(timeout) if self.fatal is None else False
        self._stopped.set()
        self.outbox.wake()
        call = getattr(self, "_filter_call", None)
        if call is not None:
            call.cancel()
        for t in self._threads:
            t.join(timeout=2.0)
        self._send_final_heartbeat()
        if self._channel is not None:
            self._channel.close()
        return ok and self.fatal is None

    # -- stream --------------------------------------------------------------------
    def _requests(self, call_done: threading.Event) -> Iterator[lc_pb2.PacketBatch]:
        ob = self.outbox
        ident = self.ident
        while not self._stopped.is_set() and not call_done.is_set():
            if self._closing.is_set() and ob.drained():
                return  # half-close: tells the processor this hunter is done
            if self.flow == lc_pb2.FLOW_PAUSE:
                time.sleep(0.05)
                continue
            p = ob.next_batch(timeout=0.1)
            if p is None:
                continue
            b = p.batch
            yield build_batch(
                ident.hunter_id,
                ident.epoch,
                p.sequence,
                b.records,
                b.count,
                self.interfaces,
                b.iface,
                meta=[lc_pb2.PacketMeta(index=i, filter_ids=ids) for i, ids in b.meta],
                sealed_at_ns=time.time_ns(),
            )
            if self.flow == lc_pb2.FLOW_SLOW:
                time.sleep(0.05)

    def _stream_loop(self) -> None:
        stub = lc_pb2_grpc.DataServiceStub(self._channel)
        backoff = 0.5
        while not self._stopped.is_set():
            call_done = threading.Event()
            try:
                call = stub.StreamPackets(self._requests(call_done))
                for ctl in call:
                    backoff = 0.5
                    for ack in ctl.acks:
                        if ack.epoch == self.ident.epoch:
                            self.outbox.ack(ack.sequence)
                    if ctl.flow != self.flow:
                        log.info("processor flow control: %s", lc_pb2.FlowState.Name(ctl.flow))
                        self.flow = ctl.flow
                call_done.set()
                if self._closing.is_set() and self.outbox.drained():
                    return
            except grpc.RpcError as e:
                call_done.set()
                if self._stopped.is_set():
                    return
                if e.code() in _FATAL:
                    self.fatal = error_from_rpc(e, self.target)
                    log.error("%s", self.fatal)
                    self.outbox.wake()
                    return
                log.warning(
                    "stream to %s broke (%s: %s); reconnecting in %.1f s",
                    self.target,
                    e.code().name,
                    e.details(),
                    backoff,
                )
            n = self.outbox.requeue_inflight()
            if n:
                log.info("%d unacknowledged batches will be sent again", n)
            self.flow = lc_pb2.FLOW_CONTINUE
            self._stopped.wait(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 30.0)
            self.reconnects += 1
            try:
                self._register()
            except LcError as e:
                if isinstance(e, PermissionDenied):
                    self.fatal = e
                    self.outbox.wake()
                    return
                log.warning("re-registration failed: %s", e)

    # -- heartbeats ----------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        stub = lc_pb2_grpc.ManagementServiceStub(self._channel)
        while not self._stopped.wait(self.heartbeat_interval):
            self._heartbeat(stub)

    def heartbeat_now(self) -> None:
        """Send one heartbeat from the caller's thread (e.g. when capture has started)."""
        if self._channel is not None:
            self._heartbeat(lc_pb2_grpc.ManagementServiceStub(self._channel))

    def _heartbeat(self, stub: lc_pb2_grpc.ManagementServiceStub) -> None:
        req = lc_pb2.HeartbeatRequest(
            hunter_id=self.ident.hunter_id,
            epoch=self.ident.epoch,
            counters=self.counters(),
            sent_at_ns=time.time_ns(),
            filter_version=self.filter_version(),
        )
        try:
            resp = stub.Heartbeat(req, timeout=5.0)
            if not resp.registered:
                log.info("processor does not know this hunter any more; registering again")
                self._register()
        except (grpc.RpcError, LcError) as e:
            log.debug("heartbeat failed: %s", e)

    def _send_final_heartbeat(self) -> None:
        if self._channel is None or self.fatal is not None:
            return
        try:
            self._heartbeat(lc_pb2_grpc.ManagementServiceStub(self._channel))
        except Exception:  # the final report is best effort
            pass
