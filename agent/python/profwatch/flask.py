"""Flask: ``profwatch.flask.instrument(app)``.

Wraps ``app.wsgi_app`` in :class:`profwatch.WSGIMiddleware`. The endpoint is the rule Flask
matched, ``/items/<int:id>`` → ``GET /items/{id}``, read from the request once the app has
returned: ``app.request_context`` is wrapped so that it leaves Flask's request object in the
environ (Flask clears its own reference, ``werkzeug.request``, when the request ends), and the
route function takes it out again, which breaks the environ ↔ request cycle as Flask does. A
request no rule matched (404, 405) is ``METHOD <unmatched>``.

Why not a ``before_request`` function: Flask calls each one through ``ensure_sync``, which
inspects the function on every request; that and the proxy lookups cost more than the rest of
the Flask-specific work together (bench/README.md).
"""

from __future__ import annotations

from typing import Any, Optional

from ._endpoint import flask_template
from .wsgi import WSGIMiddleware

REQUEST_KEY = "profwatch.flask_request"


def route(environ: dict) -> Optional[str]:
    """The template of the Flask rule that matched this request, if any."""
    rule = getattr(environ.pop(REQUEST_KEY, None), "url_rule", None)
    rule = getattr(rule, "rule", None)
    return flask_template(rule) if isinstance(rule, str) else None


def instrument(app: Any) -> Any:
    """Measures every request of the Flask ``app``; returns the app."""
    if not isinstance(app.wsgi_app, WSGIMiddleware):
        app.wsgi_app = WSGIMiddleware(app.wsgi_app, route=route)
        request_context = app.request_context

        def noting_request_context(environ: dict) -> Any:
            ctx = request_context(environ)
            environ[REQUEST_KEY] = ctx.request
            return ctx

        app.request_context = noting_request_context
    return app
