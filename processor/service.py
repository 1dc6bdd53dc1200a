"""gRPC servicers: thin adapters over the registry, the ingest and the authorizer."""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

import grpc

from lc import __version__
from lc.common.bpf import check_bpf
from lc.common.credentials import HUNTER_ROLE, PROCESSOR_ROLE, CertIdentity, validate_id
from lc.common.errors import LcError, ParseError, ValidationError
from lc.common.filters import Filter, new_filter_id, validate_filter
from lc.common.text import log_text, wire_text
from lc.common.wire import BatchRecords, split_batch, unpack_batch
from lc.processor.auth import Authorizer
from lc.processor.calls import CallIndex
from lc.processor.filterhub import FilterHub
from lc.processor.ingest import Ingest, flow_to_announce
from lc.processor.limits import DATA, FILTERS, Refused, StreamGate, Throttle, Ticket
from lc.processor.registry import Registry
from lc.processor.tree import MAX_COUNTERS, MAX_NODES, Tree, check_via
from lc.processor.tunnels import TunnelAlerts
from lc.proto import lc_pb2, lc_pb2_grpc

__all__ = [
    "MAX_INTERFACES",
    "MAX_LINKTYPES",
    "DataService",
    "ManagementService",
    "add_data_service",
    "check_heartbeat",
    "check_link_types",
    "check_registration",
]

log = logging.getLogger(__name__)
_throttle = Throttle(log)

_FLOW_POLL_S = 0.25
# A stream's acks wait up to ACK_DELAY seconds, or until ACK_COUNT of them, to go in
# one StreamControl: each message sent costs the loop about as much as reading a
# small batch. (A hunter keeps 64 batches in flight: 16 acks is a quarter of it.)
ACK_DELAY = 0.05
ACK_COUNT = 16
# ... except that acks covering this many packets, with nothing else of the stream
# outstanding, go at once: a hunter sending big batches (a replay, a busy link) is then
# likely waiting for exactly these (the end of a replay waited ACK_DELAY for its last).
ACK_NOW_PACKETS = 2048
# Batches a stream may have read whose Acks the peer has not taken yet (see _Stream).
MAX_UNSENT_ACKS = 1024

# What a batch may name (a hunter captures on a few interfaces of a few link types; each
# link type is its own output file, so the number a batch may open is kept small).
MAX_INTERFACES = 256
MAX_LINKTYPES = 8
MAX_LINKTYPE = 0xFFFF  # a pcap header holds 16 bits of link type


def check_link_types(cols: BatchRecords) -> str:
    """Why a batch's interface table is refused ("" when it is fine)."""
    ifaces = cols.interfaces
    if len(ifaces) > MAX_INTERFACES:
        return f"{len(ifaces)} interfaces in one batch (at most {MAX_INTERFACES})"
    for name, lt in ifaces:
        if not 0 <= lt <= MAX_LINKTYPE:
            name = log_text(name, 64)
            return f"interface '{name}' has link type {lt}, outside 0..{MAX_LINKTYPE}"
    distinct = {lt for _, lt in ifaces}
    if len(distinct) > MAX_LINKTYPES:
        return f"{len(distinct)} distinct link types in one batch (at most {MAX_LINKTYPES})"
    return ""


_MODE_RE = re.compile(r"[A-Za-z0-9_.-]{0,32}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_LIST = 64


def _printable(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ValidationError(f"{field}: {len(value)} characters (at most {limit})")
    if not value.isprintable():
        raise ValidationError(f"{field}: holds control characters")


def check_registration(req: lc_pb2.RegisterRequest) -> lc_pb2.RegisterRequest:
    """The registration as it may be kept and shown, or ValidationError naming the field.

    Host name and version must be printable and short; mode and capabilities are tokens;
    interface names (a replayed file's name among them) are kept, cut to 256 characters,
    since refusing a hunter for its file's name would be wrong: they are escaped wherever
    they are shown (JSON, logs).
    """
    _printable("hostname", req.hostname, 255)
    _printable("version", req.version, 64)
    if not _MODE_RE.fullmatch(req.mode):
        raise ValidationError("mode: use at most 32 characters from A-Z a-z 0-9 _ . -")
    for name, values in (("interfaces", req.interfaces), ("capabilities", req.capabilities)):
        if len(values) > MAX_LIST:
            raise ValidationError(f"{name}: {len(values)} entries (at most {MAX_LIST})")
    for i, cap in enumerate(req.capabilities):
        if not _TOKEN_RE.fullmatch(cap):
            raise ValidationError(
                f"capabilities[{i}]: use 1-64 characters from A-Z a-z 0-9 _ . : -"
            )
    if len(req.local_filters) > MAX_LIST:
        raise ValidationError(f"local_filters: {len(req.local_filters)} (at most {MAX_LIST})")
    for i, lf in enumerate(req.local_filters):
        try:
            validate_filter(Filter(id=lf.id, type=lf.type, pattern=lf.pattern))
        except ValidationError as e:
            raise ValidationError(f"local_filters[{i}]: {e}") from None
        _printable(f"local_filters[{i}].description", lf.description, 1024)
    clean = lc_pb2.RegisterRequest()
    clean.CopyFrom(req)
    del clean.interfaces[:]
    clean.interfaces.extend(wire_text(name, 256) for name in req.interfaces)
    return clean


def check_heartbeat(req: lc_pb2.HeartbeatRequest) -> None:
    """Raise ValidationError naming a heartbeat field that is out of bounds."""
    c = req.counters
    for name, table in (("counters.dropped", c.dropped), ("counters.mode", c.mode)):
        if len(table) > MAX_COUNTERS:
            raise ValidationError(f"{name}: {len(table)} entries (at most {MAX_COUNTERS})")
        for key in table:
            if not _TOKEN_RE.fullmatch(key):
                raise ValidationError(f"{name}: a key is not 1-64 characters of A-Z a-z 0-9 _.:-")
    for name, value in (("counters.breaker", c.breaker), ("counters.flow", c.flow)):
        if not _MODE_RE.fullmatch(value):
            raise ValidationError(f"{name}: use at most 32 characters from A-Z a-z 0-9 _ . -")
    _printable("counters.spool.dir", c.spool.dir, 4096)


def _admit(
    gate: StreamGate, context: grpc.ServicerContext, kind: str, cancel: Callable[[str], None]
) -> Ticket:
    """A ticket for one more stream (released when the call ends), or abort."""
    try:
        ticket = gate.open(kind, context.peer(), cancel)
    except Refused as r:
        context.abort(getattr(grpc.StatusCode, r.code), r.message)
    if not context.add_callback(lambda: gate.close(ticket)):
        gate.close(ticket)  # the call has already ended
    return ticket


def _claim(gate: StreamGate, context: grpc.ServicerContext, ticket: Ticket, hunter_id: str) -> None:
    try:
        gate.claim(ticket, hunter_id)
    except Refused as r:
        context.abort(getattr(grpc.StatusCode, r.code), r.message)


# -- the data plane (asyncio) ---------------------------------------------------------------


class _Stream:
    """What one StreamPackets call has to tell its hunter, in order: Acks, then at most
    an error (code, message) or None (the end). Loop thread only, but for
    :meth:`put_threadsafe`."""

    __slots__ = ("items", "loop", "room_waiter", "sizes", "unsent", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[object] = deque()
        self.waiter: asyncio.Future | None = None
        # Packets of each batch submitted and not answered yet, in order (a stream's
        # batches are answered in the order they were submitted).
        self.sizes: deque[int] = deque()
        # Batches read whose Ack has not been written to the peer yet, and the reader
        # waiting for that to fall (see :meth:`wait_room`).
        self.unsent = 0
        self.room_waiter: asyncio.Future | None = None

    def sent(self, n: int) -> None:
        """``n`` Acks were written to the peer."""
        self.unsent -= n
        w = self.room_waiter
        if w is not None and not w.done() and self.unsent < MAX_UNSENT_ACKS:
            w.set_result(None)

    async def wait_room(self) -> None:
        """Until fewer than MAX_UNSENT_ACKS batches wait for their Ack to be written.
        A peer that sends but never reads its Acks stops being read (HTTP/2 flow control
        then holds it back) instead of piling up Acks in the processor's memory; a
        hunter keeps at most its in-flight window (64) unacknowledged, far below."""
        while self.unsent >= MAX_UNSENT_ACKS:
            w = self.room_waiter = self.loop.create_future()
            try:
                await w
            finally:
                self.room_waiter = None

    def put(self, item: object) -> None:
        self.items.append(item)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def put_threadsafe(self, item: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.put, item)
        except RuntimeError:  # the loop is closed: the call is gone anyway
            pass

    async def wait(self, timeout: float) -> None:
        """Until something is put, or ``timeout`` seconds (the flow-control poll)."""
        if self.items:
            return
        w = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _wake, w)
        try:
            await w
        finally:
            timer.cancel()
            self.waiter = None

    def take(self) -> tuple[list[lc_pb2.Ack], tuple[grpc.StatusCode, str] | None, bool]:
        """(acks, error or None, ended) of what was put since the last take."""
        acks: list[lc_pb2.Ack] = []
        items = self.items
        while items:
            item = items.popleft()
            if item is None:
                return acks, None, True
            if isinstance(item, tuple):
                return acks, item, False  # type: ignore[return-value]
            acks.append(item)  # type: ignore[arg-type]
        return acks, None, False


def _wake(w: asyncio.Future) -> None:
    if not w.done():
        w.set_result(None)


class _AckRouter:
    """Brings the writer's answers to the streams on the loop: the writer thread hands
    each over (a deque append), and the loop is woken once for all that came together
    (a group's worth), not once per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pending: deque[tuple[_Stream, object]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, stream: _Stream, item: object) -> None:  # any thread
        self._pending.append((stream, item))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed (the server stopped): no one to tell
            self._pending.clear()

    def _drain(self) -> None:  # loop thread
        with self._lock:
            self._scheduled = False
        pending = self._pending
        while pending:
            stream, item = pending.popleft()
            stream.put(item)


class _Denied(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Checks:
    """The sync ServicerContext calls the Authorizer makes, raising instead of aborting."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._context.auth_context()

    def peer(self) -> str:
        return self._context.peer()

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Denied(code, details)


def add_data_service(servicer: DataService, server: grpc.aio.Server) -> None:
    """Serve ``servicer``'s StreamPackets on ``server``, its requests parsed by
    :func:`lc.common.wire.split_batch` (the records stay in the received bytes; the
    generated ``add_DataServiceServicer_to_server`` would parse them into a message)."""
    handlers = {
        "StreamPackets": grpc.stream_stream_rpc_method_handler(
            servicer.StreamPackets,
            request_deserializer=split_batch,
            response_serializer=lc_pb2.StreamControl.SerializeToString,
        )
    }
    service = "lc.v1.DataService"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


class DataService(lc_pb2_grpc.DataServiceServicer):
    """Hunters' batch streams, on the server's event loop (see lc.processor.aioserve).

    Per stream one coroutine reads batches, checks them and queues them for the writer
    (:meth:`Ingest.try_submit`; only a full queue waits, on a thread, which is that
    hunter's back-pressure); another sends what the writer answered, all Acks that came
    together in one StreamControl, and, unprompted, flow-control changes (so RESUME
    never waits for a batch that a paused hunter will not send).
    """

    def __init__(
        self,
        ingest: Ingest,
        registry: Registry,
        auth: Authorizer,
        gate: StreamGate,
        tree: Tree | None = None,
        extra_flow: Callable[[], int] | None = None,
    ) -> None:
        self.ingest = ingest
        self.registry = registry
        self.auth = auth
        self.gate = gate
        self.tree = tree  # the processors below (their streams carry their hunters' batches)
        self.extra_flow = extra_flow  # an edge's upstream spool filling up: PAUSE too
        self.stopping = threading.Event()
        self._router: _AckRouter | None = None

    def _flow(self) -> int:
        """What hunters are asked: the writer's state, or PAUSE/SLOW from elsewhere."""
        flow = self.ingest.flow
        return flow if self.extra_flow is None else max(flow, self.extra_flow())

    def _stream_processor(
        self, ident: CertIdentity | None, context: grpc.aio.ServicerContext
    ) -> str | None:
        """The processor whose stream this is (its batches are its hunters'), or None for a
        hunter's stream. A processor certificate makes it one; with --insecure, the
        ``lc-processor`` metadata the edge sends.

        Raises:
            _Denied: the certificate is neither a hunter's nor a processor's, the id is
                malformed, or the processor is not registered here.
        """
        if ident is not None:
            if ident.role == PROCESSOR_ROLE:
                pid = ident.common_name
            elif ident.role == HUNTER_ROLE:
                return None
            else:
                raise _Denied(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"certificate {ident.common_name!r} is neither a hunter's nor a processor's",
                )
        else:
            md = dict(context.invocation_metadata() or ())
            pid = md.get("lc-processor")
            if not pid:
                return None
            try:
                validate_id(pid, "processor")
            except ValidationError as e:
                raise _Denied(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        if self.tree is None or not self.tree.is_child(pid):
            raise _Denied(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"processor {pid!r} is not registered with this processor: it registers first",
            )
        return pid

    async def StreamPackets(
        self,
        request_iterator: AsyncIterator[tuple[lc_pb2.PacketBatch, memoryview | None]],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """One hunter's (or a processor's) stream; its requests come from
        :func:`split_batch` (see :func:`add_data_service`)."""
        loop = asyncio.get_running_loop()
        router = self._router
        if router is None or router.loop is not loop:
            router = self._router = _AckRouter(loop)
        try:
            ident = self.auth.peer(_Checks(context))
            below = self._stream_processor(ident, context)  # a processor's stream
        except _Denied as d:
            _end(context, d.code, d.details)
            return
        peer = context.peer()
        st = _Stream(loop)
        try:
            ticket = self.gate.open(
                DATA, peer, lambda why: st.put_threadsafe((grpc.StatusCode.ABORTED, why))
            )
        except Refused as r:
            _end(context, getattr(grpc.StatusCode, r.code), r.message)
            return
        context.add_done_callback(lambda _c: self.gate.close(ticket))
        state: dict[str, object] = {"hunter": None, "clean": False}
        reader = None
        try:
            # One stream per processor, like one per hunter; a certificate's id owns the
            # stream from the start (--insecure: the first batch names the hunter).
            owner = below if below is not None else ident.common_name if ident else None
            if owner is not None:
                try:
                    self.gate.claim(ticket, owner)
                except Refused as r:
                    _end(context, getattr(grpc.StatusCode, r.code), r.message)
                    return
            if below is None and ident is not None:
                # The hunter is known now: a stream that ends cleanly before its first
                # batch still shows the hunter disconnected, not stale.
                state["hunter"] = ident.common_name
                self.registry.stream_opened(ident.common_name, peer)
            reader = loop.create_task(
                self._read(request_iterator, ident, below, ticket, peer, st, state, router)
            )
            announced = lc_pb2.FLOW_CONTINUE
            held: list[lc_pb2.Ack] = []  # acks not sent yet, the first since ``since``
            held_packets = 0
            since = 0.0
            while True:
                now = loop.time()
                await st.wait(since + ACK_DELAY - now if held else _FLOW_POLL_S)
                acks, err, end = st.take()
                if below is not None and err is None and self.tree is not None:
                    cut = self.tree.cut_reason(below)  # its heartbeat closed a loop
                    if cut:
                        err = (grpc.StatusCode.FAILED_PRECONDITION, cut)
                if acks:
                    if not held:
                        since = loop.time()
                    held += acks
                    sizes = st.sizes
                    for _ in range(min(len(acks), len(sizes))):
                        held_packets += sizes.popleft()
                change = flow_to_announce(announced, self._flow())
                if change is not None:
                    announced = change
                send = bool(held) and (
                    err is not None
                    or end
                    or change is not None
                    or len(held) >= ACK_COUNT
                    or loop.time() - since >= ACK_DELAY
                    or (held_packets >= ACK_NOW_PACKETS and not st.sizes)
                )
                if send or change is not None:
                    try:
                        await context.write(
                            lc_pb2.StreamControl(acks=held if send else (), flow=announced)
                        )
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        # A write that waited on a peer that does not read fails when
                        # that peer cancels: the call is over, nothing to report to it.
                        log.debug("%s: stream ended while writing: %s", peer, e)
                        return
                    if send:
                        st.sent(len(held))
                        held = []
                        held_packets = 0
                if err is not None:
                    _end(context, err[0], err[1])
                    return
                if end:
                    return
        finally:
            if reader is not None:
                reader.cancel()
            self.gate.close(ticket)
            if below is not None:
                if self.tree is not None:
                    self.tree.stream_closed(below, bool(state["clean"]))
            elif state["hunter"] is not None:
                self.registry.stream_closed(str(state["hunter"]), bool(state["clean"]))

    async def _read(
        self,
        requests: AsyncIterator[tuple[lc_pb2.PacketBatch, memoryview | None]],
        ident: CertIdentity | None,
        below: str | None,
        ticket: Ticket,
        peer: str,
        st: _Stream,
        state: dict[str, object],
        router: _AckRouter,
    ) -> None:
        """Read, check and queue the stream's batches; what goes wrong goes to ``st``.
        ``below``: the processor whose stream this is (its batches are its hunters')."""
        ingest = self.ingest
        carried: set[str] = set()  # hunters this processor's stream may carry (checked)
        checked = False  # a hunter's stream: its first batch's hunter was checked
        try:
            async for batch, data in requests:
                if st.unsent >= MAX_UNSENT_ACKS:
                    await st.wait_room()
                hid = batch.hunter_id
                if below is not None:
                    if hid not in carried:
                        why = self._may_carry(below, hid)
                        if why:
                            st.put((grpc.StatusCode.PERMISSION_DENIED, why))
                            _throttle.warning(("carry", below), f"{peer}: {log_text(why)}")
                            return
                        if len(carried) < 4096:
                            carried.add(hid)
                elif not checked:
                    if ident is not None and hid != ident.common_name:
                        st.put(
                            (
                                grpc.StatusCode.PERMISSION_DENIED,
                                f"certificate is for hunter {ident.common_name!r}, not {hid!r}",
                            )
                        )
                        return
                    try:
                        validate_id(hid)
                    except ValidationError as e:
                        st.put((grpc.StatusCode.INVALID_ARGUMENT, str(e)))
                        return
                    if ident is None:  # --insecure: the first batch names the hunter
                        try:
                            self.gate.claim(ticket, hid)
                        except Refused as r:
                            st.put((getattr(grpc.StatusCode, r.code), r.message))
                            return
                        state["hunter"] = hid
                        self.registry.stream_opened(hid, peer)
                    checked = True
                elif hid != state["hunter"]:
                    st.put(
                        (
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"stream of hunter {state['hunter']!r} carried a batch of {hid!r}",
                        )
                    )
                    return
                try:
                    cols = unpack_batch(batch, data)
                except ParseError as e:
                    st.put((grpc.StatusCode.INVALID_ARGUMENT, f"malformed batch: {e}"))
                    return
                why = check_link_types(cols)
                if why:
                    st.put((grpc.StatusCode.INVALID_ARGUMENT, f"batch {batch.sequence}: {why}"))
                    _throttle.warning(
                        ("linktype", hid), f"refused a batch of hunter {hid} from {peer}: {why}"
                    )
                    return
                reply = _replier(router, st, self.registry, hid, cols, below is not None)
                st.unsent += 1
                st.sizes.append(len(cols))  # before its answer can come
                try:
                    if not ingest.try_submit(batch, cols, reply):  # the queue is full: wait
                        await asyncio.get_running_loop().run_in_executor(
                            None, ingest.submit, batch, cols, reply
                        )
                except LcError as e:
                    st.put((grpc.StatusCode.UNAVAILABLE, str(e)))
                    return
            state["clean"] = True
        except asyncio.CancelledError:
            raise
        except (grpc.RpcError, grpc.aio.AioRpcError, grpc.aio.UsageError, grpc.aio.AbortError):
            pass  # the hunter went away (or the stream was aborted here): its
            # unacknowledged batches come back later
        except Exception as e:  # a bug: report it to the hunter rather than hang
            log.exception("ingest failed")
            st.put((grpc.StatusCode.INTERNAL, f"processor error: {e}"))
        finally:
            st.put(None)

    def _may_carry(self, processor_id: str, hunter_id: str) -> str:
        """Why processor ``processor_id``'s stream may not carry ``hunter_id``'s batch."""
        try:
            validate_id(hunter_id)
        except ValidationError as e:
            return str(e)
        if self.tree is None or not self.tree.may_carry(processor_id, hunter_id):
            cut = self.tree.cut_reason(processor_id) if self.tree is not None else ""
            if cut:
                return cut
            return (
                f"processor {processor_id!r} may not carry batches of hunter {hunter_id!r}: "
                "it is not registered through it"
            )
        return ""


def _end(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """End a StreamPackets call with this status as its handler returns (the caller
    returns next). Not ``context.abort``: grpc keeps the AbortError it raises on the
    call's state, and its traceback holds the handler's frames (and the reader's, which
    raised it again: the batch it held), which hold the context: every refused or failed
    stream was cyclic garbage (a full disk: one per attempt of every hunter)."""
    context.set_code(code)
    context.set_details(details)


def _replier(
    router: _AckRouter,
    st: _Stream,
    registry: Registry,
    hunter_id: str,
    cols: BatchRecords,
    named: bool = False,
) -> Callable[[object], None]:
    """The writer's callback for one batch: count it, send its Ack (or the error).
    ``named``: the stream carries several hunters (a processor's): the Ack names the
    batch's hunter."""

    def reply(r: object) -> None:
        if isinstance(r, lc_pb2.Ack):
            n = 0 if r.duplicate else len(cols)
            nb = 0 if r.duplicate else len(cols.records) - 16 * len(cols)
            registry.received(hunter_id, n, nb, r.duplicate)
            if named:
                r.hunter_id = hunter_id
            router.put(st, r)
        else:
            router.put(st, (grpc.StatusCode.UNAVAILABLE, f"processor cannot write: {r}"))

    return reply


class ManagementService(lc_pb2_grpc.ManagementServiceServicer):
    def __init__(
        self,
        registry: Registry,
        ingest: Ingest,
        auth: Authorizer,
        processor_id: str,
        listen: str,
        heartbeat_interval_ms: int = 5000,
        hub: FilterHub | None = None,
        calls: CallIndex | None = None,
        gate: StreamGate | None = None,
        tunnels: TunnelAlerts | None = None,
        tree: Tree | None = None,
        topology: Callable[[], lc_pb2.Topology] | None = None,
    ) -> None:
        self.tree = tree  # the processors below this one (a processor tree)
        self.topology = topology  # this processor's tree (lc show topology)
        self.tunnels = tunnels  # DNS tunneling alerts
        self.gate = gate or StreamGate(10**9, registry.heard)
        self.hub = hub
        self.calls = calls  # the call index, when the processor writes per-call PCAPs
        self.registry = registry
        self.ingest = ingest
        self.auth = auth
        self.processor_id = processor_id
        self.listen = listen
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.started_ns = time.time_ns()
        self._t0 = time.monotonic()

    def RegisterHunter(self, request, context):
        if request.HasField("processor"):
            return self._register_processor(request, context)
        if request.via:
            return self._register_forwarded(request, context)
        peer = context.peer()
        try:
            validate_id(request.hunter_id)
        except ValidationError as e:
            return lc_pb2.RegisterResponse(accepted=False, reason=str(e))
        why = self.auth.hunter_mismatch(context, request.hunter_id)
        if why:
            _throttle.warning(
                ("register", peer), f"refused registration from {peer}: {log_text(why)}"
            )
            return lc_pb2.RegisterResponse(accepted=False, reason=why)
        try:
            request = check_registration(request)
        except ValidationError as e:
            _throttle.warning(
                ("register", peer),
                f"refused registration of hunter {request.hunter_id} from {peer}: {e}",
            )
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"RegisterHunter: {e}")
        try:
            self.gate.register(request.hunter_id, request.epoch, peer)
        except Refused as r:
            context.abort(getattr(grpc.StatusCode, r.code), r.message)
        self.registry.register(request, peer)
        log.info(
            "hunter %s registered from %s (%s, mode %s, %s)",
            request.hunter_id,
            peer,
            log_text(request.hostname),
            log_text(request.mode),
            log_text(", ".join(request.interfaces), 400),
        )
        return lc_pb2.RegisterResponse(
            accepted=True,
            processor_id=self.processor_id,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
        )

    def _refuse(self, context, what: str, why: str) -> lc_pb2.RegisterResponse:
        peer = context.peer()
        _throttle.warning(("register", peer), f"refused {what} from {peer}: {log_text(why, 400)}")
        return lc_pb2.RegisterResponse(accepted=False, reason=why)

    def _register_processor(self, request, context):
        """A processor below registers itself (lc process --upstream pointing here)."""
        peer = context.peer()
        pid = request.hunter_id
        try:
            validate_id(pid, "processor")
        except ValidationError as e:
            return self._refuse(context, "a processor", str(e))
        why = self.auth.processor_mismatch(context, pid)
        if why:
            return self._refuse(context, f"processor {pid}", why)
        try:
            request = check_registration(request)
            if len(request.processor.descendants) > MAX_NODES:
                raise ValidationError(f"processor.descendants: more than {MAX_NODES}")
        except ValidationError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"RegisterHunter: {e}")
        if self.tree is None:
            return self._refuse(context, f"processor {pid}", "this processor takes no processors")
        try:
            self.tree.check_child(pid, request.processor)
        except ValidationError as e:
            return self._refuse(context, f"processor {pid}", str(e))
        try:
            self.gate.register(pid, request.epoch, peer)
        except Refused as r:
            context.abort(getattr(grpc.StatusCode, r.code), r.message)
        ancestors, levels = self.tree.register_child(request, peer)
        log.info(
            "processor %s registered from %s (%s, %d processor level(s) below it)",
            pid, peer, log_text(request.hostname), request.processor.height,
        )  # fmt: skip
        return lc_pb2.RegisterResponse(
            accepted=True,
            processor_id=self.processor_id,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            ancestors=ancestors,
            levels_below=levels,
        )

    def _register_forwarded(self, request, context):
        """A processor below registers one of its hunters (before forwarding its batches)."""
        hid = request.hunter_id
        try:
            validate_id(hid)
        except ValidationError as e:
            return self._refuse(context, "a forwarded hunter", str(e))
        ident = self.auth.peer(context)
        if ident is not None and ident.role != PROCESSOR_ROLE:
            return self._refuse(
                context,
                f"hunter {hid}",
                f"certificate {ident.common_name!r} has role {ident.role or 'none'!r}: only a "
                "processor certificate may register a hunter through itself (via)",
            )
        try:
            via = check_via(request.via, ident.common_name if ident is not None else None)
            request = check_registration(request)
        except ValidationError as e:
            return self._refuse(context, f"hunter {hid}", str(e))
        del request.via[:]
        request.via.extend(via)
        if self.tree is None or not self.tree.register_forwarded(via[0], request):
            return self._refuse(
                context,
                f"hunter {hid}",
                f"processor {via[0]!r} is not registered with this processor (or has "
                "registered too many hunters)",
            )
        log.info("hunter %s registered through %s", hid, log_text(" <- ".join(via)))
        return lc_pb2.RegisterResponse(
            accepted=True,
            processor_id=self.processor_id,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
        )

    def Heartbeat(self, request, context):
        if request.HasField("topology"):  # a processor below, with its tree
            why = self.auth.processor_mismatch(context, request.hunter_id)
            if why:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
            ok = self.tree is not None and self.tree.heartbeat(
                request.hunter_id, request.epoch, request.topology
            )
            cut = "" if ok or self.tree is None else self.tree.cut_reason(request.hunter_id)
            if cut:  # it registers again, and is refused while the loop is there
                _throttle.warning(
                    ("cut", request.hunter_id),
                    f"cut the link of processor {request.hunter_id}: {log_text(cut, 600)}",
                )
            if not ok:
                return lc_pb2.HeartbeatResponse(registered=False)
            ancestors, levels = self.tree.for_child()  # as now: a chain may have changed
            return lc_pb2.HeartbeatResponse(
                registered=True, ancestors=ancestors, levels_below=levels
            )
        self.auth.require_hunter(context, request.hunter_id)
        try:
            check_heartbeat(request)
        except ValidationError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Heartbeat: {e}")
        return lc_pb2.HeartbeatResponse(registered=self.registry.heartbeat(request))

    def GetStatus(self, request, context):
        self.auth.require_admin(context)
        hunters = self.registry.all()
        ing = self.ingest
        return lc_pb2.StatusResponse(
            processor_id=self.processor_id,
            version=__version__,
            started_at_ns=self.started_ns,
            uptime_seconds=time.monotonic() - self._t0,
            hunters_connected=sum(h.state == "connected" for h in hunters),
            hunters_stale=sum(h.state == "stale" for h in hunters),
            hunters_total=len(hunters),
            packets_written=ing.packets,
            bytes_written=ing.bytes,
            batches_written=ing.batches,
            batches_duplicate=ing.duplicates,
            output_files=ing.sink.files(),
            listen=self.listen,
            insecure=self.auth.insecure,
            filter_version=self.hub.store.version if self.hub is not None else 0,
            filter_matches=dict(ing.filter_matches),
            write_queue_batches=ing.queue_batches,
            write_queue_bytes=ing.queue_bytes,
            flow=lc_pb2.FlowState.Name(ing.flow).removeprefix("FLOW_"),
            batches_received=ing.received,
            events_written=ing.events_by_dataset,
            events_malformed=ing.bad_events,
            events_file=ing.events_file,
            **_keylog_status(ing),
        )

    def ListHunters(self, request, context):
        self.auth.require_admin(context)
        hunters = self.registry.all()
        if self.tree is not None:  # and every hunter below, with the processors between
            hunters += self.tree.hunters_below()
        return lc_pb2.ListHuntersResponse(hunters=hunters)

    def GetHunter(self, request, context):
        self.auth.require_admin(context)
        info = self.registry.get(request.hunter_id)
        if info is None and self.tree is not None:
            info = self.tree.hunter_below(request.hunter_id)
        if info is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no hunter {request.hunter_id!r}")
        if self.hub is not None:
            stored, version = self.hub.for_hunter(info.hunter_id, filter_types(info.capabilities))
            info.filters.extend(self.hub.proto(f, v) for f, v in stored)
            info.processor_filter_version = version
        return info

    # -- calls -------------------------------------------------------------------------
    def ListCalls(self, request, context):
        self.auth.require_admin(context)
        if self.calls is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this processor does not write per-call PCAPs (start it with --per-call-pcap-dir)",
            )
        try:
            rows = self.calls.query(
                active=request.active,
                user=request.user or None,
                limit=request.limit or None,
            )
        except LcError as e:
            abort_for(context, e)
        return lc_pb2.ListCallsResponse(calls=[_call_info(r) for r in rows])

    def GetTopology(self, request, context):
        self.auth.require_admin(context)
        if self.topology is None:
            return lc_pb2.Topology(processor_id=self.processor_id)
        return self.topology()

    def ListAlerts(self, request, context):
        self.auth.require_admin(context)
        alerts = self.tunnels.alerts() if self.tunnels is not None else []
        return lc_pb2.ListAlertsResponse(alerts=alerts)

    # -- filters ---------------------------------------------------------------------
    def SetFilters(self, request, context):
        self.auth.require_admin(context)
        filters = []
        for pb in request.filters:
            f = _from_proto(pb)
            try:
                filters.append(validate_filter(f, bpf_check=check_bpf))
            except ValidationError as e:
                if pb.id:
                    abort_for(context, e)
                # The id was made here: a message naming it would name nothing the user gave.
                abort_for(context, ValidationError(str(e).replace(repr(f.id), "(no id given)", 1)))
            except LcError as e:
                abort_for(context, e)
        if not filters:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no filter given")
        ids = [f.id for f in filters]
        if len(set(ids)) != len(ids):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the same filter id is given twice")
        try:
            stored, version = self.hub.set_filters(filters)
        except LcError as e:
            abort_for(context, e)
        log.info("filters set: %s (version %d)", log_text(", ".join(ids), 400), version)
        return lc_pb2.SetFiltersResponse(
            filters=[self.hub.proto(f, v) for f, v in stored], version=version
        )

    def DeleteFilter(self, request, context):
        self.auth.require_admin(context)
        try:
            version = self.hub.delete(request.id)
        except LcError as e:
            abort_for(context, e)
        log.info("filter removed: %s (version %d)", log_text(request.id), version)
        return lc_pb2.DeleteFilterResponse(version=version)

    def ListFilters(self, request, context):
        self.auth.require_admin(context)
        if request.hunter_id:
            info = self.registry.get(request.hunter_id)
            if info is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no hunter {request.hunter_id!r}")
            stored, version = self.hub.for_hunter(
                request.hunter_id, filter_types(info.capabilities)
            )
        else:
            stored, version = self.hub.store.all()
        return lc_pb2.ListFiltersResponse(
            filters=[self.hub.proto(f, v) for f, v in stored], version=version
        )

    def GetFilter(self, request, context):
        self.auth.require_admin(context)
        try:
            f, v = self.hub.store.get(request.id)
        except LcError as e:
            abort_for(context, e)
        return self.hub.proto(f, v)

    def SubscribeFilters(self, request, context):
        if request.processor:  # a processor below: every filter, to hand down its tree
            why = self.auth.processor_mismatch(context, request.hunter_id)
            if why:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
            if self.tree is None or not self.tree.is_child(request.hunter_id):
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"processor {request.hunter_id!r} is not registered with this processor",
                )
        else:
            self.auth.require_hunter(context, request.hunter_id)
        try:
            validate_id(request.hunter_id)
        except ValidationError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        subs: list = []
        why: list[str] = []

        def cancel(reason: str) -> None:  # a newer subscription of this hunter replaced it
            why.append(reason)
            for sub in subs:
                sub.updates.put(None)

        ticket = _admit(self.gate, context, FILTERS, cancel)
        _claim(self.gate, context, ticket, request.hunter_id)
        types = [t for t in request.filter_types[:MAX_LIST] if _TOKEN_RE.fullmatch(t)]
        sub = self.hub.subscribe(request.hunter_id, types, everything=request.processor)
        subs.append(sub)
        try:
            while context.is_active():
                if ticket.closed:
                    context.abort(grpc.StatusCode.ABORTED, why[0] if why else "replaced")
                try:
                    upd = sub.updates.get(timeout=0.5)
                except queue.Empty:
                    continue
                if upd is not None:
                    yield upd
        finally:
            self.gate.close(ticket)
            self.hub.unsubscribe(sub)


def filter_types(capabilities) -> list[str]:
    """The filter types a hunter registered it can apply ("filter:<type>" capabilities)."""
    return [c.split(":", 1)[1] for c in capabilities if c.startswith("filter:")]


def _call_info(row: dict) -> lc_pb2.CallInfo:
    """A call index row as its wire message (``end_ns`` 0 while the call goes on)."""
    return lc_pb2.CallInfo(
        call_id=row["call_id"],
        method=row["method"],
        state=row["state"],
        from_user=row["from_user"],
        to_user=row["to_user"],
        from_uri=row["from_uri"],
        to_uri=row["to_uri"],
        start_ns=row["start_ns"],
        end_ns=row["end_ns"] or 0,
        last_seen_ns=row["last_seen_ns"],
        hunters=row["hunters"],
        packets=row["packets"],
        bytes=row["bytes"],
        sip_packets=row["sip_packets"],
        rtp_packets=row["rtp_packets"],
        rtcp_packets=row["rtcp_packets"],
        pcap_path=row["pcap_path"],
    )


def _from_proto(pb: lc_pb2.Filter) -> Filter:
    return Filter(
        id=pb.id or new_filter_id(),
        type=pb.type,
        pattern=pb.pattern,
        enabled=pb.enabled,
        description=pb.description,
        hunters=tuple(pb.hunters),
    )


def abort_for(context: grpc.ServicerContext, e: LcError) -> None:
    context.abort(getattr(grpc.StatusCode, e.grpc_code), str(e))


def _keylog_status(ing) -> dict:
    """StatusResponse's TLS key log fields (lines written, the file once it exists)."""
    keys = next((s for s in ing.sinks if s.name == "keys"), None)
    if keys is None or not keys.lines:
        return {}
    return {"tls_keylog_lines": keys.lines, "tls_keylog_file": keys.path}
