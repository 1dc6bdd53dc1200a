"""The connection to the next processor up: sessions, heartbeats, filters, the batch stream.

A *session* is: open a channel (reading the TLS files again, so renewed certificates
are picked up), wait until it is ready, register, then run one StreamPackets call
until it ends or breaks. The session loop runs sessions forever:

* Every connect/register/stream call goes through a
  :class:`~lc.link.breaker.CircuitBreaker`; while it is open no call is made.
* Between failed attempts it waits with exponential backoff and jitter (tenacity's
  ``wait_exponential_jitter``: ``backoff_initial`` doubling to ``backoff_max``,
  1 s to 60 s by default), retrying forever. A session that delivered something
  resets the backoff.
* gRPC keepalives (see :mod:`lc.common.transport`) break a stream whose peer
  vanished without closing it, so the loop notices dead links.
* While no session is up, or the processor asks to PAUSE, the outbox is *offline*
  and batches go to the disk spool; capture never waits for the network.

Flow control: SLOW makes the stream wait ``slow_delay`` between batches (and the
batcher, seeing the backlog, makes bigger ones); PAUSE stops sending; RESUME or
CONTINUE sends again. The processor announces RESUME by itself.

A hunter uses this class as it is. An edge processor forwarding upstream
(:mod:`lc.processor.forward`) subclasses it through the hooks below: what it registers
and heartbeats (``registration_request``, ``registered``, ``heartbeat_request``,
``heartbeat_answered``), what
it subscribes to (``subscription_request``), what a session starts with
(``session_begun``), what must happen before a batch goes (``before_send``: register
its hunter upstream), the stream's metadata, and whether a refusal stops it for good
(``retry_refused``). A batch with a ``source`` (a forwarded one) goes out under that
hunter's id with its own interface table, and its Ack names that hunter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from lc.common.errors import LcError, ParseError, PermissionDenied, Unreachable
from lc.common.text import log_text
from lc.common.transport import TlsFiles, error_from_rpc, open_channel, wait_ready
from lc.common.wire import encode_batch_bytes, filter_to_proto
from lc.link.breaker import CircuitBreaker
from lc.link.outbox import Outbox, Pending
from lc.link.spool import SpooledBatch
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
    local_filters: list = field(default_factory=list)  # the mode's own filters (Filter)


_STREAM_PACKETS = "/lc.v1.DataService/StreamPackets"


def _forget_traceback(e: BaseException) -> None:
    """Drop a broken stream's traceback, which nothing reads: grpc raises the call
    object itself (``raise self`` in ``_MultiThreadedRendezvous._next``), so its
    traceback holds that frame, whose ``self`` is the call. The call, its channel's
    state and every frame up to the session loop were cyclic garbage after each break
    (70-170 objects; a hunter's young collections come every 500,000 allocations)."""
    e.__traceback__ = None


def _serialised(batch: bytes) -> bytes:
    """The stream's request serialiser: _build has serialised the batch already."""
    return batch


class _Retry(Exception):
    """A failed attempt: wait (backoff) and try again."""


class _Stopped(Exception):
    """The uplink is stopping: end the session loop."""


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
        breaker: CircuitBreaker | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        slow_delay: float = 0.05,
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
        self.breaker = breaker or CircuitBreaker()
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.slow_delay = slow_delay
        self.flow = lc_pb2.FLOW_CONTINUE
        self.fatal: LcError | None = None
        self.reconnects = 0
        self.connect_failures = 0
        self.sessions = 0
        self._channel: grpc.Channel | None = None
        self._chan_lock = threading.Lock()
        self.connected = threading.Event()  # a registered session is up
        self._closing = threading.Event()  # no more batches will be added
        self._stopped = threading.Event()  # give up now
        self._threads: list[threading.Thread] = []
        self._proc_id = ""
        self._filter_call = None
        self._stream_call = None
        self.stream_metadata: tuple[tuple[str, str], ...] = ()  # sent with StreamPackets
        self.retry_refused = False  # a refusal (certificate, id, cycle): retry, not stop
        self._heartbeat_refusal = ""  # the processor's last word on a refused heartbeat

    # -- channel -----------------------------------------------------------------------
    def _open(self) -> grpc.Channel:
        """A ready channel (new TLS files are read here), or Unreachable."""
        ch = open_channel(self.target, self.tls)
        try:
            wait_ready(ch, self.target, self.tls, self.connect_timeout, self._stopped)
        except LcError:
            ch.close()
            raise
        return ch

    def _drop_channel(self) -> None:
        with self._chan_lock:
            ch, self._channel = self._channel, None
        self.connected.clear()
        if ch is not None:
            ch.close()

    def _stub(self, kind):
        ch = self._channel
        return None if ch is None else kind(ch)

    # -- lifecycle -----------------------------------------------------------------
    def connect(self) -> str:
        """First connection, made before capture starts; returns the processor's id.

        Raises:
            Unreachable: the processor cannot be reached within ``connect_timeout``
                (TlsFailure, at once, when it answers but the TLS handshake fails).
            ValidationError: our own TLS files are unusable (key mismatch, expired, ...).
            PermissionDenied: the processor refused the registration.
        """
        ch = self._open()
        with self._chan_lock:
            self._channel = ch
        try:
            pid = self._register()
        except LcError:
            self._drop_channel()
            raise
        self.breaker.success()
        self.connected.set()
        return pid

    # -- hooks (see the module docstring) ------------------------------------------------
    def registration_request(self) -> lc_pb2.RegisterRequest:
        """What this uplink registers as."""
        i = self.ident
        return lc_pb2.RegisterRequest(
            hunter_id=i.hunter_id,
            hostname=i.hostname,
            version=i.version,
            mode=i.mode,
            interfaces=i.interfaces,
            capabilities=i.capabilities,
            epoch=i.epoch,
            local_filters=[filter_to_proto(f) for f in i.local_filters],
        )

    def registered(self, resp: lc_pb2.RegisterResponse) -> None:
        """The processor accepted the registration."""

    def heartbeat_answered(self, resp: lc_pb2.HeartbeatResponse) -> None:
        """The processor answered a heartbeat and still knows this uplink."""

    def session_begun(self) -> None:
        """A session (channel and registration) is up; its stream starts next."""

    def before_send(self, p: Pending) -> bool:
        """Called before a batch is sent in the current session: False ends the stream
        (the batch goes back, first in line, for the next session)."""
        return True

    def heartbeat_request(self) -> lc_pb2.HeartbeatRequest:
        return lc_pb2.HeartbeatRequest(
            hunter_id=self.ident.hunter_id,
            epoch=self.ident.epoch,
            counters=self.counters(),
            sent_at_ns=time.time_ns(),
            filter_version=self.filter_version(),
        )

    def subscription_request(self) -> lc_pb2.SubscribeFiltersRequest:
        return lc_pb2.SubscribeFiltersRequest(
            hunter_id=self.ident.hunter_id, filter_types=list(self.filter_types)
        )

    def management_stub(self) -> lc_pb2_grpc.ManagementServiceStub | None:
        """The current session's management stub (None between sessions)."""
        return self._stub(lc_pb2_grpc.ManagementServiceStub)

    def _register(self) -> str:
        stub = self._stub(lc_pb2_grpc.ManagementServiceStub)
        if stub is None:
            raise Unreachable("no channel")
        req = self.registration_request()
        try:
            resp = stub.RegisterHunter(req, timeout=self.connect_timeout)
        except grpc.RpcError as e:
            raise error_from_rpc(e, self.target) from None
        if not resp.accepted:
            what = "processor" if req.HasField("processor") else "hunter"
            raise PermissionDenied(f"processor refused {what} {req.hunter_id!r}: {resp.reason}")
        if resp.heartbeat_interval_ms:
            self.heartbeat_interval = min(self.heartbeat_interval, resp.heartbeat_interval_ms / 1e3)
        self._proc_id = resp.processor_id
        self.registered(resp)
        return resp.processor_id

    def start_filters(self) -> None:
        """Subscribe to filter updates (call before capture starts)."""
        if self.on_filters is None:
            return
        t = threading.Thread(target=self._filter_loop, name="lc-filters", daemon=True)
        t.start()
        self._threads.append(t)

    def _filter_loop(self) -> None:
        while not self._stopped.is_set():
            if not self.connected.wait(0.2):
                continue
            stub = self._stub(lc_pb2_grpc.ManagementServiceStub)
            if stub is None:
                continue
            call = stub.SubscribeFilters(self.subscription_request())
            self._filter_call = call
            try:
                for upd in call:
                    self.on_filters(upd)  # type: ignore[misc]
            except grpc.RpcError as e:
                _forget_traceback(e)
                if self._stopped.is_set():
                    return
                if e.code() in _FATAL:
                    log.error("filter subscription refused: %s", e.details())
                    if not self.retry_refused:
                        return
                    self._stopped.wait(self.backoff_max)
                log.debug("filter subscription broke: %s", e.details())
            except ValueError:  # the channel was closed under us: a new session comes
                pass
            self._stopped.wait(0.5)

    def start(self) -> None:
        for name, fn in (
            ("lc-session", self._session_loop),
            ("lc-heartbeat", self._heartbeat_loop),
        ):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def finish(self, timeout: float) -> bool:
        """No more batches are coming: wait up to ``timeout`` for all acks, then close.

        Returns True when everything was acknowledged. What is not is left to the
        caller (the hunter moves it to the spool).
        """
        self._closing.set()
        self.outbox.wake()
        ok = (
            self.outbox.wait_drained(timeout, lambda: self.fatal is not None)
            if self.fatal is None
            else False
        )
        if ok:  # let the stream half-close on its own: the processor sees a clean end
            for t in self._threads:
                if t.name == "lc-session":
                    t.join(timeout=3.0)
        self._stopped.set()
        self.outbox.wake()
        for call in (self._filter_call, self._stream_call):
            if call is not None:
                call.cancel()
        for t in self._threads:
            t.join(timeout=5.0)
        self._send_final_heartbeat()
        self._drop_channel()
        return ok and self.fatal is None

    # -- the session loop ------------------------------------------------------------
    def _session_loop(self) -> None:
        # One Retrying for the loop (each call starts from the first attempt): tenacity's
        # retry_if_exception_type names itself through a bound method, so one per
        # session was cyclic garbage.
        retrying = Retrying(
            wait=wait_exponential_jitter(
                initial=self.backoff_initial,
                max=self.backoff_max,
                jitter=self.backoff_initial,
            ),
            retry=retry_if_exception_type(_Retry),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        while not self._stopped.is_set():
            try:
                retrying(self._session)
            except _Stopped:
                return
            except LcError as e:  # refused for good (certificate, id): stop the hunter
                if self.retry_refused:  # an edge processor keeps spooling and tries again
                    log.error("%s: %s; next attempt in %.0f s", self.target, e, self.backoff_max)
                    if self._stopped.wait(self.backoff_max):
                        return
                    continue
                self.fatal = e
                log.error("%s", e)
                self.outbox.wake()
                return
            if self._closing.is_set() and self.outbox.drained():
                return

    def _sleep(self, seconds: float) -> None:
        if self._stopped.wait(seconds):
            raise _Stopped()

    def _log_retry(self, rs: RetryCallState) -> None:
        wait = rs.next_action.sleep if rs.next_action else 0.0
        exc = rs.outcome.exception() if rs.outcome else None
        log.warning("processor %s: %s; next attempt in %.1f s", self.target, exc, wait)

    def _session(self) -> None:
        """One connect/register/stream; returns after a session that delivered, raises
        _Retry after a failed one."""
        if self._stopped.is_set():
            raise _Stopped()
        if self._channel is None or not self.connected.is_set():
            if not self.breaker.allow():
                raise _Retry(f"circuit breaker open ({self.breaker.retry_in():.0f} s left)")
            try:
                ch = self._open()
                with self._chan_lock:
                    self._channel = ch
                self._register()
            except PermissionDenied:
                self._drop_channel()
                raise
            except LcError as e:
                self.connect_failures += 1
                self.breaker.failure()
                self._drop_channel()
                raise _Retry(str(e)) from None
            self.breaker.success()
            self.connected.set()
            if self.sessions:
                self.reconnects += 1
                log.info("reconnected to processor %s at %s", self._proc_id, self.target)
            self.session_begun()
        self.sessions += 1
        delivered, error = self._stream()
        if error is None:
            return  # ended cleanly (we closed)
        self.outbox.set_online(False)
        n = self.outbox.requeue_inflight()
        if n:
            log.info("%d unacknowledged batches will be sent again", n)
        self.flow = lc_pb2.FLOW_CONTINUE
        self._drop_channel()
        if isinstance(error, LcError):
            raise error  # fatal
        if self._stopped.is_set():
            raise _Stopped()
        if not delivered:
            self.connect_failures += 1
            self.breaker.failure()
            raise _Retry(error)
        log.warning("stream to %s broke (%s); reconnecting", self.target, error)

    def _stream(self) -> tuple[bool, str | LcError | None]:
        """Run one StreamPackets call: (anything acknowledged?, why it ended or None)."""
        ch = self._channel
        if ch is None:
            return False, "no channel"
        # The batches go out as _build serialised them (see encode_batch_bytes).
        stream = ch.stream_stream(
            _STREAM_PACKETS,
            request_serializer=_serialised,
            response_deserializer=lc_pb2.StreamControl.FromString,
            _registered_method=True,
        )
        call_done = threading.Event()
        delivered = False
        self.flow = lc_pb2.FLOW_CONTINUE
        self.outbox.set_online(True)
        try:
            call = stream(self._requests(call_done), metadata=self.stream_metadata)
            self._stream_call = call
            own = self.ident.hunter_id
            for ctl in call:
                if not delivered:
                    delivered = True
                    self.breaker.success()
                for ack in ctl.acks:
                    source = "" if ack.hunter_id in ("", own) else ack.hunter_id
                    self.outbox.ack(ack.sequence, ack.epoch, source)
                if ctl.flow != self.flow:
                    log.info("processor flow control: %s", lc_pb2.FlowState.Name(ctl.flow))
                    self.flow = ctl.flow
                    # PAUSE: new batches go to the spool; anything else: send again.
                    self.outbox.set_online(ctl.flow != lc_pb2.FLOW_PAUSE)
            call_done.set()
            if self._closing.is_set() and self.outbox.drained():
                return delivered, None
            return delivered, "the processor ended the stream"
        except grpc.RpcError as e:
            _forget_traceback(e)
            call_done.set()
            if self._stopped.is_set():
                return delivered, None
            if e.code() in _FATAL:
                return delivered, error_from_rpc(e, self.target)
            return delivered, f"{e.code().name}: {e.details()}"
        except ValueError as e:  # channel closed under us
            call_done.set()
            return delivered, str(e)

    def _requests(self, call_done: threading.Event) -> Iterator[bytes]:
        ob = self.outbox
        while not self._stopped.is_set() and not call_done.is_set():
            if self._closing.is_set() and ob.drained():
                return  # half-close: tells the processor this hunter is done
            if self.flow == lc_pb2.FLOW_PAUSE:
                time.sleep(0.05)
                continue
            p = ob.next_batch(timeout=0.1, closing=self._closing)
            if p is None:
                continue
            if call_done.is_set() or self._stopped.is_set() or not self.before_send(p):
                ob.unsend(p)  # the stream ended while we waited: it goes with the next one
                return
            yield self._build(p)
            if self.flow == lc_pb2.FLOW_SLOW:
                time.sleep(self.slow_delay)

    def _build(self, p: Pending) -> bytes:
        """The serialised PacketBatch of a pending batch (encode_batch_bytes)."""
        b = p.batch
        if p.source:  # forwarded: its hunter's id, its own interfaces (in its extras)
            args = (p.source, p.epoch, p.sequence, (), b.records, b.count)
        else:
            args = (self.ident.hunter_id, p.epoch, p.sequence, self.interfaces, b.records, b.count)
        if isinstance(b, SpooledBatch):
            try:
                return encode_batch_bytes(
                    *args, b.iface, extras=b.extras, sealed_at_ns=time.time_ns()
                )
            except ParseError as e:  # passed the spool's CRC, so a bug: keep the packets
                log.error("spooled batch %d/%d: %s; sent without it", p.epoch, p.sequence, e)
                return encode_batch_bytes(*args, b.iface, sealed_at_ns=time.time_ns())
        return encode_batch_bytes(
            *args,
            b.iface,
            b.meta,
            b.events,
            sealed_at_ns=time.time_ns(),
            keylog=b.keylog,
            tunnel=b.tunnel,
            caplen=b.caplen,
        )

    # -- heartbeats ----------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        while not self._stopped.wait(self.heartbeat_interval):
            if self.connected.is_set():
                self._heartbeat()

    def heartbeat_now(self) -> None:
        """Send one heartbeat from the caller's thread (e.g. when capture has started)."""
        if self.connected.is_set():
            self._heartbeat()

    def _heartbeat(self) -> None:
        stub = self._stub(lc_pb2_grpc.ManagementServiceStub)
        if stub is None:
            return
        req = self.heartbeat_request()
        try:
            resp = stub.Heartbeat(req, timeout=5.0)
            self._heartbeat_refusal = ""
            if resp.registered:
                self.heartbeat_answered(resp)
            else:
                log.info("processor does not know this hunter any more; registering again")
                self._register()
        except grpc.RpcError as e:
            code = e.code() if callable(getattr(e, "code", None)) else None
            if code in _FATAL:
                # Refused, not lost: every later heartbeat will be too (its counters
                # never reach `lc show hunter`). Said once per distinct refusal.
                why = log_text(e.details() if callable(getattr(e, "details", None)) else e)
                if why != self._heartbeat_refusal:
                    self._heartbeat_refusal = why
                    log.warning("processor %s refused a heartbeat: %s", self.target, why)
            else:
                log.debug("heartbeat failed: %s", e)
        except (LcError, ValueError) as e:
            log.debug("heartbeat failed: %s", e)

    def _send_final_heartbeat(self) -> None:
        if self._channel is None or self.fatal is not None or not self.connected.is_set():
            return
        try:
            self._heartbeat()
        except Exception:  # the final report is best effort
            pass
