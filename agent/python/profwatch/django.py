"""Django: ``"profwatch.django.Middleware"`` first in ``MIDDLEWARE``, under WSGI or ASGI.

The endpoint is the route Django resolved (``request.resolver_match.route``, includes joined):
``path("items/<int:pk>/", ...)`` → ``GET /items/{pk}/``; ``re_path`` regexes lose their
anchors and name their groups ``{name}``; a request no pattern matched is
``METHOD <unmatched>``.

Under WSGI the middleware is synchronous and the request is one stretch of the thread's meter.
Under ASGI it is asynchronous: it awaits the rest of the chain step by step
(:mod:`profwatch._tasks`), and the sync views and sync middleware that Django runs in worker
threads through ``asgiref`` are charged to the request too (:mod:`profwatch._offload`). What
runs before it in ``MIDDLEWARE`` and Django's handler around the chain are not counted, so list
it first; a streamed response's body, produced after the chain returns, is not counted either.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

from . import _offload, _runtime
from ._endpoint import django_template
from ._meter import meter
from ._runtime import runtime
from ._tasks import current, serve, start
from .wsgi import ENVIRON_KEY, MEASURED

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
except ImportError:  # asgiref < 3.6 (Django < 4.1)
    iscoroutinefunction = asyncio.iscoroutinefunction

    def markcoroutinefunction(func: Any) -> Any:
        func._is_coroutine = getattr(asyncio.coroutines, "_is_coroutine", None)
        return func


def route(request: Any) -> Optional[str]:
    """The template of the Django route that resolved this request, if any."""
    r = getattr(getattr(request, "resolver_match", None), "route", None)
    return django_template(r) if isinstance(r, str) else None


class Middleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
            _offload.install()

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        meta = getattr(request, "META", None)
        if current.get() is not None or (isinstance(meta, dict) and ENVIRON_KEY in meta):
            return self.get_response(request)
        rt = _runtime._runtime or runtime()
        if rt is None:
            return self.get_response(request)
        try:
            req = rt.start_request(getattr(request, "method", "") or "", route, request)
            if isinstance(meta, dict):
                meta[ENVIRON_KEY] = MEASURED
            m = meter()
            m.enter(req)
        except Exception:
            rt.stats.add("internal_errors")
            return self.get_response(request)
        try:
            response = self.get_response(request)
            req.status = getattr(response, "status_code", 0) or 0
        except BaseException:
            req.status = req.status or 500
            rt.end(m, req)
            raise
        rt.end(m, req)
        return response

    async def _acall(self, request: Any) -> Any:
        rt = None if current.get() is not None else _runtime._runtime or runtime()
        req = None if rt is None else start(rt, getattr(request, "method", "") or "", route, request)
        if req is None:
            return await self.get_response(request)
        return await serve(rt, req, self._respond(request, req))

    async def _respond(self, request: Any, req: Any) -> Any:
        response = await self.get_response(request)
        req.status = getattr(response, "status_code", 0) or 0
        return response
