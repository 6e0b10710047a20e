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

from . import _runtime
from ._meter import Request, meter
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
        rt = _runtime._runtime or runtime()
        if rt is None or ENVIRON_KEY in environ:
            return self.app(environ, start_response)
        try:
            ex = rt.start_request(environ.get("REQUEST_METHOD") or "", self.route, environ, _Exchange)
            ex.result = ()
            ex.start_response = start_response
            ex.meter = m = meter()
            environ[ENVIRON_KEY] = MEASURED
            m.enter(ex)
        except Exception:
            rt.stats.add("internal_errors")
            return self.app(environ, start_response)

        try:
            ex.result = result = self.app(environ, ex)
        except BaseException:
            if ex.status == 0:
                ex.status = 500
            ex.close()
            raise
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and isinstance(wrapper, type) and isinstance(result, wrapper):
            ex.result = ()  # the server's to close
            ex.close()
            return result
        return ex


class _Exchange(Request):
    """One WSGI request, and the app's view of the server: the app calls it as its
    ``start_response`` (which notes the status), and the server gets it as the response, whose
    ``close()`` closes the app's response and ends the request. One object per request, and no
    bound method: the request path allocates as little as it can."""

    __slots__ = ("result", "start_response", "meter")

    def __call__(self, status: str, headers: list, exc_info: Any = None) -> Any:
        try:
            self.status = int(status[:3])
        except (TypeError, ValueError):
            pass
        return self.start_response(status, headers, exc_info)

    def __iter__(self) -> Any:
        return iter(self.result)

    def close(self) -> None:
        """Closes the app's response, then ends the request (once) and lets go of the
        response: the request may be held a while longer (by the sampler)."""
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            m = self.meter
            if m is not None:
                self.meter = self.result = None
                self.runtime.end(m, self)
