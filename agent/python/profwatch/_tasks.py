"""CPU of asynchronous requests: the request's task, measured step by step.

An asyncio task runs as a series of *steps*: the event loop calls its coroutine's ``send()``,
the coroutine runs until it awaits something not ready, and ``send()`` returns. Between two
steps of one request, the same thread runs steps of other requests. So a request's CPU is the
sum over its steps of the thread CPU time each step took, which is what the Rust SDK's
``instrument()`` does with counter deltas around each ``poll``.

Mechanism:

1. The middleware sets the :data:`current` context variable to the request and awaits the
   app through :class:`Stepped`, a coroutine wrapper whose ``send``/``throw`` call the
   thread's meter ``enter(request)`` before resuming the wrapped coroutine and ``exit`` after
   it suspends or finishes (:mod:`profwatch._meter`). Each step of the request's task passes
   through it, on whatever thread runs the loop, so interleaved requests never see each
   other's CPU, and the sampler sees which request the loop thread is working for.
2. Tasks the request creates (``asyncio.create_task``, anyio task groups, Starlette's
   ``BaseHTTPMiddleware``, which runs the rest of the app in a task of its own) inherit the
   context variable. A task factory that :func:`install_task_factory` puts on the running loop
   (chained to a factory already there, never replacing it) wraps the coroutine of every task
   created while a request is current in :class:`Stepped` as well, so their steps are charged
   to the request too.
3. Sync code the request runs in a worker thread is charged by :mod:`profwatch._offload`.

Nested stretches (an eager task's first step inside its parent's step, say) are charged to the
innermost request only (see the meter). A task still running after its request finished keeps
charging a finished request, which no longer reports anything: work that outlives the request
is not counted, as in the Rust SDK.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextvars
import weakref
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Optional

from ._meter import Request, meter

if TYPE_CHECKING:
    from ._runtime import Runtime

#: The request the running code works for (async code, and sync code offloaded from it).
current: "contextvars.ContextVar[Optional[Request]]" = contextvars.ContextVar("profwatch_request", default=None)


class Stepped(collections.abc.Coroutine):
    """Wraps a coroutine so that each of its steps is charged to ``req``."""

    __slots__ = ("_coro", "_req")

    def __init__(self, coro: Any, req: Request) -> None:
        self._coro = coro
        self._req = req

    def send(self, value: Any) -> Any:
        req = self._req
        m = meter()
        m.enter(req)
        try:
            return self._coro.send(value)
        finally:
            m.exit(req)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        req = self._req
        m = meter()
        m.enter(req)
        try:
            if val is None and tb is None:
                return self._coro.throw(typ)
            return self._coro.throw(typ, val, tb)
        finally:
            m.exit(req)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> "Stepped":
        return self

    def __iter__(self) -> "Stepped":
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def __getattr__(self, name: str) -> Any:
        # cr_frame, cr_running, cr_await, cr_code, __qualname__...: what asyncio's repr, the
        # inspect module and anyio (getcoroutinestate) read from a task's coroutine.
        return getattr(self._coro, name)

    def __repr__(self) -> str:
        return "<profwatch.Stepped %r>" % (self._coro,)


_factory_loops: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()


def install_task_factory(loop: asyncio.AbstractEventLoop) -> None:
    """Puts the request-aware task factory on ``loop`` (once per loop)."""
    if loop in _factory_loops:
        return
    _factory_loops.add(loop)
    previous = loop.get_task_factory()
    if getattr(previous, "_profwatch", False):
        return

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> "asyncio.Future[Any]":
        context = kwargs.get("context")
        req = context.get(current) if context is not None else current.get()
        if req is not None and not req.done and asyncio.iscoroutine(coro) and not isinstance(coro, Stepped):
            coro = Stepped(coro, req)
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    factory._profwatch = True  # type: ignore[attr-defined]
    loop.set_task_factory(factory)


def start(rt: "Runtime", method: str, resolve: Callable[[Any], Optional[str]], arg: Any) -> Optional[Request]:
    """A new request to be awaited through :func:`serve` on the running loop, or ``None`` if
    the SDK failed (counted; the caller serves the request unmeasured)."""
    try:
        req = rt.start_request(method, resolve, arg)
        install_task_factory(asyncio.get_running_loop())
    except Exception:
        rt.stats.add("internal_errors")
        return None
    return req


async def serve(rt: "Runtime", req: Request, coro: Coroutine[Any, Any, Any]) -> Any:
    """Awaits ``coro`` step by step as ``req``, which is :data:`current` meanwhile; if it
    raises before a status was set, the status is 500. Then finishes ``req``; nothing of the
    SDK's raises from here, what ``coro`` raises does."""
    token = current.set(req)
    try:
        return await Stepped(coro, req)
    except BaseException:
        if req.status == 0:
            req.status = 500
        raise
    finally:
        try:
            current.reset(token)
            rt.finish(req)
        except Exception:
            rt.stats.add("internal_errors")
