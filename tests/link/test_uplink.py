"""The uplink against an in-process gRPC server that breaks its streams."""

from __future__ import annotations

import gc
from array import array
from concurrent import futures

import grpc
import pytest

from lc.common.pcapfile import frame_records
from lc.common.transport import open_channel
from lc.hunter.batcher import Batcher
from lc.link.outbox import Outbox
from lc.link.uplink import HunterIdentity, Uplink
from lc.proto import lc_pb2


def _break_stream(requests, context):
    for _ in requests:
        context.abort(grpc.StatusCode.UNAVAILABLE, "gone")
    return iter(())


def _refuse_filters(request, context):
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "not you")
    yield lc_pb2.FilterUpdate()  # never reached


@pytest.fixture
def breaking_server():
    """A processor whose every batch stream breaks at its first batch and which refuses
    filter subscriptions."""
    server = grpc.server(futures.ThreadPoolExecutor(4))
    handlers = {
        "lc.v1.DataService": {
            "StreamPackets": grpc.stream_stream_rpc_method_handler(
                _break_stream,
                request_deserializer=bytes,
                response_serializer=lc_pb2.StreamControl.SerializeToString,
            )
        },
        "lc.v1.ManagementService": {
            "SubscribeFilters": grpc.unary_stream_rpc_method_handler(
                _refuse_filters,
                request_deserializer=lc_pb2.SubscribeFiltersRequest.FromString,
                response_serializer=lc_pb2.FilterUpdate.SerializeToString,
            )
        },
    }
    server.add_generic_rpc_handlers(
        tuple(grpc.method_handlers_generic_handler(s, h) for s, h in handlers.items())
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def _uplink(target: str) -> Uplink:
    ident = HunterIdentity("h1", 1, "host", "0", "generic", ["eth0"])
    return Uplink(target, None, ident, Outbox(), [("eth0", 1)], lc_pb2.HunterCounters,
                  on_filters=lambda upd: None)  # fmt: skip


def _one_broken_stream(up: Uplink) -> tuple[bool, object]:
    ts, cl = array("q", [1]), array("I", [60])
    for b in Batcher(1).add_chunk(ts, cl, cl, frame_records(ts, cl, cl, b"x" * 60), 0, 0):
        up.outbox.put(b)
    up._channel = open_channel(up.target, None)
    up.connected.set()
    try:
        return up._stream()
    finally:
        up._drop_channel()
        up.outbox.requeue_inflight()


def test_broken_streams_leave_no_cyclic_garbage(breaking_server) -> None:
    """grpc raises a broken stream's call object itself, with a traceback through its
    own frame (whose ``self`` is the call): kept, the call, its channel's state and the
    uplink's frames were cyclic garbage after every break (73 objects each here)."""
    up = _uplink(breaking_server)
    assert _one_broken_stream(up) == (False, "UNAVAILABLE: gone")
    gc.collect()
    gc.disable()
    try:
        for _ in range(10):
            assert _one_broken_stream(up) == (False, "UNAVAILABLE: gone")
        garbage = gc.collect()
    finally:
        gc.enable()
    assert garbage == 0


def test_refused_filter_subscriptions_leave_no_cyclic_garbage(breaking_server) -> None:
    """The filter subscription's call is raised the same way when it breaks."""
    up = _uplink(breaking_server)

    def refused_once() -> None:
        up._channel = open_channel(up.target, None)
        up.connected.set()
        try:
            up._filter_loop()  # returns at a refusal (retry_refused is False)
        finally:
            up._drop_channel()

    refused_once()
    gc.collect()
    gc.disable()
    try:
        for _ in range(10):
            refused_once()
        garbage = gc.collect()
    finally:
        gc.enable()
    assert garbage == 0


def test_sessions_leave_no_cyclic_garbage() -> None:
    """The session loop's retry policy is built once: tenacity's retry_if_exception_type
    names itself through a bound method, so one built per session was cyclic garbage.
    (What the loop leaves when it stops, once, is the same for 1 session or 21.)"""
    from lc.link import uplink as mod

    def garbage_after(n: int) -> int:
        up = _uplink("127.0.0.1:9")
        sessions = []

        def session() -> None:  # a session that delivered and ended: the loop goes on
            sessions.append(1)
            if len(sessions) == n:
                raise mod._Stopped()

        up._session = session  # type: ignore[method-assign]
        gc.collect()
        gc.disable()
        try:
            up._session_loop()
            garbage = gc.collect()
        finally:
            gc.enable()
        assert len(sessions) == n
        return garbage

    assert garbage_after(21) == garbage_after(1)
