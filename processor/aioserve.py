"""The processor's gRPC server runs on asyncio (grpc.aio); handlers written for the
thread-per-call API run unchanged on a thread pool beside it.

Why asyncio: on the thread-per-call server every batch a hunter sends wakes several
threads (the completion-queue thread, the stream's reader, the thread sending its
acknowledgement, and that thread again when the send completes); with 50 hunters
those hand-offs were most of a processor's fixed cost per batch. On the event loop a
batch is read, checked and queued for the writer by one coroutine, and acknowledgements
come back to the loop once per written group (see :mod:`lc.processor.service`).

The management RPCs keep the synchronous code they have: :func:`sync_servicer` wraps
a servicer written for the ``grpc.server`` API so that each call runs on the pool with
a :class:`SyncContext`, which gives them the calls they use (``abort``, ``peer``,
``auth_context``, ``add_callback``, ``is_active``) with the thread-per-call meaning:
``abort`` ends the call with that status even if the handler swallows the exception,
callbacks run once the call is over, and a streaming handler stops being active when
its client goes away (the generator is then closed, so its ``finally`` runs).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, Future
from typing import Any

import grpc

from lc.proto import lc_pb2

__all__ = ["Aborted", "SyncContext", "sync_servicer"]

log = logging.getLogger(__name__)

_END = object()


class Aborted(Exception):
    """Raised by :meth:`SyncContext.abort` (as ``grpc.ServicerContext.abort`` raises)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class SyncContext:
    """The thread-per-call ServicerContext calls, over a grpc.aio context.

    Usable from any thread. ``abort`` raises :class:`Aborted`; the call is ended with
    the first abort's status by whoever runs the handler.
    """

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self.active = True
        self._callbacks: list[Callable[[], None]] = []

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        if self.aborted is None:
            self.aborted = (code, details)
        raise Aborted(code, details)

    def peer(self) -> str:
        return self._context.peer()

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._context.auth_context()

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def is_active(self) -> bool:
        return self.active

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if not self.active:
            return False
        self._callbacks.append(callback)
        return True

    def finish(self) -> None:
        """The call is over: no longer active; run the callbacks (once)."""
        self.active = False
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("RPC termination callback failed")


def _next(gen: Any) -> Any:
    return next(gen, _END)


class _SyncServicer:
    """Attribute access gives grpc.aio handlers (coroutines) for a sync servicer."""

    def __init__(self, servicer: object, service: str, pool: Executor) -> None:
        self._servicer = servicer
        self._methods = lc_pb2.DESCRIPTOR.services_by_name[service].methods_by_name
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._servicer, name)
        md = self._methods.get(name)
        if md is None or inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method):
            return method
        if md.client_streaming:
            raise TypeError(f"{name}: client-streaming sync handlers are not supported")
        return self._streaming(method) if md.server_streaming else self._unary(method)

    def _unary(self, method: Callable[[Any, SyncContext], Any]) -> Callable:
        pool = self._pool

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            ctx = SyncContext(context)
            loop = asyncio.get_running_loop()
            try:
                response = await loop.run_in_executor(pool, method, request, ctx)
            except Aborted:
                response = None
            finally:
                ctx.finish()
            if ctx.aborted is not None:
                _end(context, *ctx.aborted)
                return None
            return response

        return call

    def _streaming(self, method: Callable[[Any, SyncContext], Any]) -> Callable:
        pool = self._pool

        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            ctx = SyncContext(context)
            loop = asyncio.get_running_loop()
            gen = method(request, ctx)
            running: list[Future | None] = [None]

            def over(_: object = None) -> None:
                # The call ended (done, aborted, cancelled): the generator stops being
                # active; close it now if it waits at a yield, else once its step ends.
                if not ctx.active:
                    return
                ctx.finish()
                step = running[0]
                if step is None or step.done():
                    _close_on(pool, gen)
                else:
                    step.add_done_callback(lambda _f: _close_on(pool, gen))

            context.add_done_callback(over)
            try:
                while True:
                    step = running[0] = pool.submit(_next, gen)
                    try:
                        msg = await asyncio.wrap_future(step, loop=loop)
                    except Aborted:
                        # The step is over; it holds the exception, whose traceback
                        # holds this frame (which holds the step): let go of it.
                        running[0] = step = None
                        break
                    running[0] = None
                    if msg is _END:
                        break
                    yield msg
            finally:
                over()
            if ctx.aborted is not None:
                _end(context, *ctx.aborted)

        return call


def _end(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str) -> None:
    """End the call with this status as its handler returns. Not ``context.abort``:
    grpc keeps the AbortError it raises on the call's state, with a traceback through
    the handler's frames, which hold the context: every refused call (a NOT_FOUND, a
    refused heartbeat) was cyclic garbage (28 objects each)."""
    context.set_code(code)
    context.set_details(details)


def sync_servicer(servicer: object, service: str, pool: Executor) -> Any:
    """``servicer`` (written for ``grpc.server``) as a grpc.aio servicer of ``service``
    (its name in lc.proto): its sync methods run on ``pool``; async ones are kept."""
    return _SyncServicer(servicer, service, pool)


def _close_on(pool: Executor, gen: Any) -> None:
    """Close a handler's generator on the pool, or here once the pool has shut down
    (the server is stopping; the generator is not running, it waits at a yield)."""
    try:
        pool.submit(gen.close)
    except RuntimeError:
        try:
            gen.close()
        except Exception:
            log.debug("closing a stopped handler failed", exc_info=True)
