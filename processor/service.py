"""gRPC servicers: thin adapters over the registry, the ingest and the authorizer."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import grpc

from lc import __version__
from lc.common.bpf import check_bpf
from lc.common.credentials import validate_id
from lc.common.errors import LcError, ParseError, ValidationError
from lc.common.filters import Filter, new_filter_id, validate_filter
from lc.common.wire import BatchRecords, filter_to_proto, unpack_batch
from lc.processor.auth import Authorizer
from lc.processor.calls import CallIndex
from lc.processor.filterhub import FilterHub
from lc.processor.ingest import Ingest, flow_to_announce
from lc.processor.registry import Registry
from lc.proto import lc_pb2, lc_pb2_grpc

__all__ = ["DataService", "ManagementService"]

log = logging.getLogger(__name__)

_FLOW_POLL_S = 0.25


class DataService(lc_pb2_grpc.DataServiceServicer):
    def __init__(self, ingest: Ingest, registry: Registry, auth: Authorizer) -> None:
        self.ingest = ingest
        self.registry = registry
        self.auth = auth
        self.stopping = threading.Event()

    def StreamPackets(
        self, request_iterator: Iterator[lc_pb2.PacketBatch], context: grpc.ServicerContext
    ) -> Iterator[lc_pb2.StreamControl]:
        ident = self.auth.peer(context)
        peer = context.peer()
        out: queue.Queue = queue.Queue()
        state = {"hunter": None, "clean": False}

        # Batches are read and written on this thread while the handler's own thread
        # yields acks and, unprompted, flow-control changes (so RESUME never waits
        # for a batch that a paused hunter will not send).
        def reader() -> None:
            try:
                for batch in request_iterator:
                    hid = batch.hunter_id
                    if state["hunter"] is None:
                        if ident is not None and hid != ident.common_name:
                            out.put(
                                (
                                    grpc.StatusCode.PERMISSION_DENIED,
                                    f"certificate is for hunter {ident.common_name!r}, not {hid!r}",
                                )
                            )
                            return
                        if ident is not None and ident.role != "hunter":
                            out.put(
                                (
                                    grpc.StatusCode.PERMISSION_DENIED,
                                    f"certificate {ident.common_name!r} is not a hunter's",
                                )
                            )
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
                    try:
                        self.ingest.submit(batch, cols, _replier(out, self.registry, hid, cols))
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
                change = flow_to_announce(announced, self.ingest.flow)
                if change is not None:
                    announced = change
                if acks or change is not None:
                    yield lc_pb2.StreamControl(acks=acks, flow=announced)
                if err is not None:
                    context.abort(err[0], err[1])
                if end:
                    return
        finally:
            if state["hunter"] is not None:
                self.registry.stream_closed(state["hunter"], bool(state["clean"]))


def _replier(out: queue.Queue, registry: Registry, hunter_id: str, cols: BatchRecords):
    """The writer's callback for one batch: count it, queue its Ack (or the error)."""

    def reply(r: object) -> None:
        if isinstance(r, lc_pb2.Ack):
            n = 0 if r.duplicate else len(cols)
            nb = 0 if r.duplicate else len(cols.records) - 16 * len(cols)
            registry.received(hunter_id, n, nb, r.duplicate)
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
    ) -> None:
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
        try:
            validate_id(request.hunter_id)
        except ValidationError as e:
            return lc_pb2.RegisterResponse(accepted=False, reason=str(e))
        why = self.auth.hunter_mismatch(context, request.hunter_id)
        if why:
            log.warning("refused registration from %s: %s", context.peer(), why)
            return lc_pb2.RegisterResponse(accepted=False, reason=why)
        self.registry.register(request, context.peer())
        log.info(
            "hunter %s registered from %s (%s, mode %s, %s)",
            request.hunter_id,
            context.peer(),
            request.hostname,
            request.mode,
            ", ".join(request.interfaces),
        )
        return lc_pb2.RegisterResponse(
            accepted=True,
            processor_id=self.processor_id,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
        )

    def Heartbeat(self, request, context):
        self.auth.require_hunter(context, request.hunter_id)
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
        )

    def ListHunters(self, request, context):
        self.auth.require_admin(context)
        return lc_pb2.ListHuntersResponse(hunters=self.registry.all())

    def GetHunter(self, request, context):
        self.auth.require_admin(context)
        info = self.registry.get(request.hunter_id)
        if info is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no hunter {request.hunter_id!r}")
        if self.hub is not None:
            stored, version = self.hub.for_hunter(info.hunter_id, filter_types(info.capabilities))
            info.filters.extend(filter_to_proto(f, v) for f, v in stored)
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
        stored, version = self.hub.set_filters(filters)
        log.info("filters set: %s (version %d)", ", ".join(ids), version)
        return lc_pb2.SetFiltersResponse(
            filters=[filter_to_proto(f, v) for f, v in stored], version=version
        )

    def DeleteFilter(self, request, context):
        self.auth.require_admin(context)
        try:
            version = self.hub.delete(request.id)
        except LcError as e:
            abort_for(context, e)
        log.info("filter removed: %s (version %d)", request.id, version)
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
            filters=[filter_to_proto(f, v) for f, v in stored], version=version
        )

    def GetFilter(self, request, context):
        self.auth.require_admin(context)
        try:
            f, v = self.hub.store.get(request.id)
        except LcError as e:
            abort_for(context, e)
        return filter_to_proto(f, v)

    def SubscribeFilters(self, request, context):
        self.auth.require_hunter(context, request.hunter_id)
        sub = self.hub.subscribe(request.hunter_id, request.filter_types)
        try:
            while context.is_active():
                try:
                    upd = sub.updates.get(timeout=0.5)
                except queue.Empty:
                    continue
                yield upd
        finally:
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
