"""ASGI middleware (Starlette, FastAPI, any ASGI app): one event per HTTP request.

The request's CPU is the sum over the steps of its task, the tasks it creates, and the sync
calls it runs in anyio/asgiref worker threads (see :mod:`profwatch._tasks` and
:mod:`profwatch._offload`). Its status is the one in ``http.response.start`` (500 if the app
raised before sending one). Only ``http`` scopes are measured; ``websocket`` and ``lifespan``
pass through.

Endpoint: ``route(scope)`` if given, called once the app has returned, else the template of the
route Starlette or FastAPI matched (``scope["route"]``, mount prefixes included), else
``METHOD <unmatched>``. Add it with ``app.add_middleware(profwatch.ASGIMiddleware)`` so that it
sees the scope the router writes into (a middleware inside it that copies the scope hides the
route).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional

from . import _offload, _runtime
from ._endpoint import starlette_template
from ._runtime import runtime
from ._tasks import current, serve, start

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def _starlette_route(arg: Any) -> Optional[str]:
    scope, root_path0 = arg
    return starlette_template(scope, root_path0)


class ASGIMiddleware:
    def __init__(self, app: Callable[..., Awaitable[None]], route: Optional[Callable[[Scope], Optional[str]]] = None) -> None:
        self.app = app
        self.route = route
        _offload.install()

    def _resolve(self, arg: Any) -> Optional[str]:
        return self.route(arg[0]) if self.route is not None else _starlette_route(arg)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or current.get() is not None:
            return await self.app(scope, receive, send)
        rt = _runtime._runtime or runtime()
        req = None if rt is None else start(rt, scope.get("method") or "", self._resolve, (scope, scope.get("root_path", "") or ""))
        if req is None:
            return await self.app(scope, receive, send)

        async def send_status(message: dict) -> None:
            try:
                if message["type"] == "http.response.start":
                    req.status = int(message["status"])
            except Exception:  # a malformed message is the server's to refuse, not ours
                pass
            await send(message)

        await serve(rt, req, self.app(scope, receive, send_status))
