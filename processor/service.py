"""gRPC servicers: thin adapters over the registry, the ingest and the authorizer."""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from lc import __version__
from lc.common.bpf import check_bpf
from lc.common.credentials import HUNTER_ROLE, PROCESSOR_ROLE, validate_id
from lc.common.errors import LcError, ParseError, ValidationError
from lc.common.filters import Filter, new_filter_id, validate_filter
from lc.common.text import log_text, wire_text
from lc.common.wire import BatchRecords, unpack_batch
from lc.processor.auth import Authorizer
from lc.processor.calls import CallIndex
from lc.processor.filterhub import FilterHub
from lc.processor.ingest import Ingest, flow_to_announce
from lc.processor.limits import DATA, FILTERS, Refused, StreamGate, Throttle, Ticket
from lc.processor.registry import Registry
from lc.processor.tree import MAX_NODES, Tree, check_via
from lc.processor.tunnels import TunnelAlerts
from lc.proto import lc_pb2, lc_pb2_grpc

__all__ = [
    "MAX_INTERFACES",
    "MAX_LINKTYPES",
    "DataService",
    "ManagementService",
    "check_heartbeat",
    "check_link_types",
    "check_registration",
]

log = logging.getLogger(__name__)
_throttle = Throttle(log)

_FLOW_POLL_S = 0.25

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
        if len(table) > MAX_LIST:
            raise ValidationError(f"{name}: {len(table)} entries (at most {MAX_LIST})")
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


class DataService(lc_pb2_grpc.DataServiceServicer):
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

    def _flow(self) -> int:
        """What hunters are asked: the writer's state, or PAUSE/SLOW from elsewhere."""
        flow = self.ingest.flow
        return flow if self.extra_flow is None else max(flow, self.extra_flow())

    def _stream_processor(self, ident, context: grpc.ServicerContext) -> str | None:
        """The processor whose stream this is (its batches are its hunters'), or None for a
        hunter's stream. A processor certificate makes it one; with --insecure, the
        ``lc-processor`` metadata the edge sends."""
        if ident is not None:
            if ident.role == PROCESSOR_ROLE:
                pid = ident.common_name
            elif ident.role == HUNTER_ROLE:
                return None
            else:
                context.abort(
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
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if self.tree is None or not self.tree.is_child(pid):
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"processor {pid!r} is not registered with this processor: it registers first",
            )
        return pid

    def StreamPackets(
        self, request_iterator: Iterator[lc_pb2.PacketBatch], context: grpc.ServicerContext
    ) -> Iterator[lc_pb2.StreamControl]:
        ident = self.auth.peer(context)
        peer = context.peer()
        below = self._stream_processor(ident, context)  # a processor's stream
        out: queue.Queue = queue.Queue()
        ticket = _admit(
            self.gate, context, DATA, lambda why: out.put((grpc.StatusCode.ABORTED, why))
        )
        if below is not None:  # one stream per processor, like one per hunter
            _claim(self.gate, context, ticket, below)
        elif ident is not None:  # the id is the certificate's: the stream is its from the start
            _claim(self.gate, context, ticket, ident.common_name)
        state = {"hunter": None, "clean": False}
        carried: set[str] = set()  # hunters this processor's stream may carry (checked)

        # Batches are read and written on this thread while the handler's own thread
        # yields acks and, unprompted, flow-control changes (so RESUME never waits
        # for a batch that a paused hunter will not send).
        def reader() -> None:
            try:
                for batch in request_iterator:
                    hid = batch.hunter_id
                    if below is not None:
                        if hid not in carried:
                            why = self._may_carry(below, hid)
                            if why:
                                out.put((grpc.StatusCode.PERMISSION_DENIED, why))
                                _throttle.warning(("carry", below), f"{peer}: {log_text(why)}")
                                return
                            if len(carried) < 4096:
                                carried.add(hid)
                        state["hunter"] = below
                    elif state["hunter"] is None:
                        if ident is not None and hid != ident.common_name:
                            out.put(
                                (
                                    grpc.StatusCode.PERMISSION_DENIED,
                                    f"certificate is for hunter {ident.common_name!r}, not {hid!r}",
                                )
                            )
                            return
                        try:
                            validate_id(hid)
                        except ValidationError as e:
                            out.put((grpc.StatusCode.INVALID_ARGUMENT, str(e)))
                            return
                        if ident is None:  # --insecure: the first batch names the hunter
                            try:
                                self.gate.claim(ticket, hid)
                            except Refused as r:
                                out.put((getattr(grpc.StatusCode, r.code), r.message))
                                return
                        state["hunter"] = hid
                        self.registry.stream_opened(hid, peer)
                    elif hid != state["hunter"]:
                        out.put(
                            (
                                grpc.StatusCode.INVALID_ARGUMENT,
                                f"stream of hunter {state['hunter']!r} carried a batch of {hid!r}",
                            )
                        )
                        return
                    try:
                        cols = unpack_batch(batch)
                    except ParseError as e:
                        out.put((grpc.StatusCode.INVALID_ARGUMENT, f"malformed batch: {e}"))
                        return
                    why = check_link_types(cols)
                    if why:
                        out.put(
                            (grpc.StatusCode.INVALID_ARGUMENT, f"batch {batch.sequence}: {why}")
                        )
                        _throttle.warning(
                            ("linktype", hid),
                            f"refused a batch of hunter {hid} from {peer}: {why}",
                        )
                        return
                    try:
                        reply = _replier(out, self.registry, hid, cols, below is not None)
                        self.ingest.submit(batch, cols, reply)
                    except LcError as e:
                        out.put((grpc.StatusCode.UNAVAILABLE, str(e)))
                        return
                state["clean"] = True
            except grpc.RpcError:
                pass  # the hunter went away; its unacknowledged batches come back later
            except Exception as e:  # a bug: report it to the hunter rather than hang
                log.exception("ingest failed")
                out.put((grpc.StatusCode.INTERNAL, f"processor error: {e}"))
            finally:
                out.put(None)

        t = threading.Thread(target=reader, name=f"lc-ingest-{peer}", daemon=True)
        t.start()
        announced = lc_pb2.FLOW_CONTINUE
        try:
            while True:
                try:
                    item = out.get(timeout=_FLOW_POLL_S)
                except queue.Empty:
                    item = False
                acks = []
                end = False
                err = None
                while item is not False:
                    if item is None:
                        end = True
                        break
                    if isinstance(item, tuple):
                        err = item
                        break
                    acks.append(item)
                    try:
                        item = out.get_nowait()
                    except queue.Empty:
                        item = False
                change = flow_to_announce(announced, self._flow())
                if change is not None:
                    announced = change
                if acks or change is not None:
                    yield lc_pb2.StreamControl(acks=acks, flow=announced)
                if err is not None:
                    context.abort(err[0], err[1])
                if end:
                    return
        finally:
            self.gate.close(ticket)
            if below is not None:
                if self.tree is not None:
                    self.tree.stream_closed(below, bool(state["clean"]))
            elif state["hunter"] is not None:
                self.registry.stream_closed(state["hunter"], bool(state["clean"]))

    def _may_carry(self, processor_id: str, hunter_id: str) -> str:
        """Why processor ``processor_id``'s stream may not carry ``hunter_id``'s batch."""
        try:
            validate_id(hunter_id)
        except ValidationError as e:
            return str(e)
        if self.tree is None or not self.tree.may_carry(processor_id, hunter_id):
            return (
                f"processor {processor_id!r} may not carry batches of hunter {hunter_id!r}: "
                "it is not registered through it"
            )
        return ""


def _replier(
    out: queue.Queue, registry: Registry, hunter_id: str, cols: BatchRecords, named: bool = False
):
    """The writer's callback for one batch: count it, queue its Ack (or the error).
    ``named``: the stream carries several hunters (a processor's): the Ack names the
    batch's hunter."""

    def reply(r: object) -> None:
        if isinstance(r, lc_pb2.Ack):
            n = 0 if r.duplicate else len(cols)
            nb = 0 if r.duplicate else len(cols.records) - 16 * len(cols)
            registry.received(hunter_id, n, nb, r.duplicate)
            if named:
                r.hunter_id = hunter_id
            out.put(r)
        else:
            out.put((grpc.StatusCode.UNAVAILABLE, f"processor cannot write: {r}"))

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
            return lc_pb2.HeartbeatResponse(registered=ok)
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
        try:
            filters = [
                validate_filter(_from_proto(pb), bpf_check=check_bpf) for pb in request.filters
            ]
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
