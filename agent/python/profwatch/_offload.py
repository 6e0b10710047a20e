"""CPU of sync code that an async request runs in a worker thread.

ASGI frameworks run sync code in thread pools: FastAPI/Starlette's ``def`` endpoints and
dependencies go through ``anyio.to_thread.run_sync``; Django under ASGI runs sync views and sync
middleware through ``asgiref.sync.SyncToAsync``. Both run the function inside a copy of the
caller's context, so the request in :data:`profwatch._tasks.current` is visible in the worker
thread, but nothing of the SDK runs there unless the function is wrapped.

:func:`install` wraps the function at those two entry points (``anyio.to_thread.run_sync``,
looked up as a module attribute at each call by Starlette and FastAPI; ``SyncToAsync.__init__``,
which every Django offload goes through) with :class:`Offloaded`, which, in the worker thread,
reads the request from the context and charges the call to it as one stretch of that thread's
meter (and tells the sampler which request the thread works for). Outside a request the
wrapper calls the function and does nothing else. Installing twice is a no-op.

Not covered (documented): other offloads (``asyncio.to_thread``, ``loop.run_in_executor``, a
pool of your own) and functions bound before :func:`install` ran
(``from anyio.to_thread import run_sync``).
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Callable

from ._meter import meter
from ._tasks import current

log = logging.getLogger("profwatch")
_lock = threading.Lock()


class Offloaded:
    """Calls ``func``, charging the call to the request current in the caller's context."""

    __slots__ = ("func",)

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        req = current.get()
        if req is None:
            return self.func(*args, **kwargs)
        m = meter()
        m.enter(req)
        try:
            return self.func(*args, **kwargs)
        finally:
            m.exit(req)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.func, name)


def _patch(owner: Any, name: str, wrap: Callable[[Any], Any]) -> None:
    """Replaces ``owner.name`` with ``wrap(original)``, unless that was done already."""
    original = getattr(owner, name)
    if getattr(original, "_profwatch", False):
        return
    wrapper = functools.wraps(original)(wrap(original))
    wrapper._profwatch = True
    setattr(owner, name, wrapper)


def _patch_anyio() -> None:
    try:
        import anyio.to_thread as to_thread
    except Exception:
        return

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        async def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            if current.get() is not None and not isinstance(func, Offloaded):
                func = Offloaded(func)
            return await original(func, *args, **kwargs)

        return run_sync

    _patch(to_thread, "run_sync", wrap)


def _patch_asgiref() -> None:
    try:
        from asgiref.sync import SyncToAsync
    except Exception:
        return

    def wrap(original: Callable[..., None]) -> Callable[..., None]:
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            func = getattr(self, "func", None)
            if func is not None and not isinstance(func, Offloaded):
                self.func = Offloaded(func)

        return __init__

    _patch(SyncToAsync, "__init__", wrap)


def install() -> None:
    """Wraps the anyio and asgiref thread offloads (those that are installed), once."""
    with _lock:
        for patch in (_patch_anyio, _patch_asgiref):
            try:
                patch()
            except Exception as e:  # a library version we do not know: leave it alone
                log.warning("profwatch: cannot measure thread offloads (%s): %s", patch.__name__, e)
