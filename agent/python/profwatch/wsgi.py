"""WSGI middleware: one event per request, CPU measured on the serving thread.

The request is one stretch of the thread's meter, from the middleware's entry to the
response's ``close()`` (which PEP 3333 servers call on the thread that iterated the body), so
the CPU of producing a streamed body is the request's too. A ``wsgi.file_wrapper`` response is
passed through untouched (the server may ``sendfile`` it) and the request ends when the app
returns it. Nested instrumentation of one request (the WSGI middleware around a Django app
that also lists the Django middleware, say) measures and reports it once.

Nothing raises into the app from here: if the SDK fails, the request is served unmeasured and
the failure counted.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from ._meter import Meter, Request, meter
from ._runtime import runtime

ENVIRON_KEY = "profwatch.request"
#: The value under ``ENVIRON_KEY``: a marker, not the request, so that no reference cycle
#: (environ → request → environ) outlives the request and wakes the cyclic GC.
MEASURED = True


def _no_route(_: Any) -> Optional[str]:
    return None


class WSGIMiddleware:
    """Wraps a WSGI app; ``route(environ)`` returns the route template (``/items/{id}``) or
    ``None`` (``METHOD <unmatched>``). It is called once the app has returned, so it may read
    what the framework stored in ``environ`` while routing."""

    def __init__(self, app: Callable[..., Iterable[bytes]], route: Optional[Callable[[dict], Optional[str]]] = None) -> None:
        self.app = app
        self.route = route or _no_route

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if ENVIRON_KEY in environ:
            return self.app(environ, start_response)
        rt = runtime()
        if rt is None:
            return self.app(environ, start_response)
        try:
            req = rt.start_request(environ.get("REQUEST_METHOD") or "", self.route, environ)
            environ[ENVIRON_KEY] = MEASURED
            m = meter()
            m.enter(req)
        except Exception:
            rt.stats.add("internal_errors")
            return self.app(environ, start_response)

        response = _Response(m, req, start_response)
        try:
            response.result = result = self.app(environ, response.start)
        except BaseException:
            if req.status == 0:
                req.status = 500
            _end(m, req)
            raise
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and isinstance(wrapper, type) and isinstance(result, wrapper):
            _end(m, req)
            return result
        return response


def _end(m: Meter, req: Request) -> None:
    try:
        m.exit(req)
        req.runtime.finish(req)
    except Exception:
        req.runtime.stats.add("internal_errors")


class _Response:
    """Sees the status (``start``), then is the app's response: ``close()`` closes the app's
    response and ends the request. One object per request."""

    __slots__ = ("result", "_meter", "_req", "_start_response")

    def __init__(self, m: Meter, req: Request, start_response: Callable[..., Any]) -> None:
        self.result: Any = ()
        self._meter = m
        self._req: Optional[Request] = req
        self._start_response = start_response

    def start(self, status: str, headers: list, exc_info: Any = None) -> Any:
        req = self._req
        if req is not None:
            try:
                req.status = int(status[:3])
            except (TypeError, ValueError):
                pass
        return self._start_response(status, headers, exc_info)

    def __iter__(self) -> Any:
        return iter(self.result)

    def close(self) -> None:
        req, self._req = self._req, None
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            if req is not None:
                _end(self._meter, req)
