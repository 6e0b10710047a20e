"""Flask: ``profwatch.flask.instrument(app)``.

Wraps ``app.wsgi_app`` in :class:`profwatch.WSGIMiddleware`. The endpoint is the rule Flask
matched, ``/items/<int:id>`` → ``GET /items/{id}``: a ``before_request`` function, put first
so that no other one can skip it, notes ``request.url_rule`` in the environ (Flask clears its
request object from the environ before the middleware could read it). A request no rule
matched (404, 405) is ``METHOD <unmatched>``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ._endpoint import flask_template
from .wsgi import WSGIMiddleware

RULE_KEY = "profwatch.flask_rule"
_templates: Dict[str, str] = {}
_request: Any = None


def _note_rule() -> None:
    r = _request._get_current_object()  # one proxy lookup instead of two
    rule = r.url_rule
    if rule is not None:
        r.environ[RULE_KEY] = rule.rule


def route(environ: dict) -> Optional[str]:
    """The template of the Flask rule that matched this request, if any."""
    rule = environ.get(RULE_KEY)
    if not isinstance(rule, str):
        return None
    t = _templates.get(rule)
    if t is None:
        t = flask_template(rule)
        if len(_templates) < 4096:
            _templates[rule] = t
    return t


def instrument(app: Any) -> Any:
    """Measures every request of the Flask ``app``; returns the app."""
    global _request
    from flask import request as _request

    if not isinstance(app.wsgi_app, WSGIMiddleware):
        app.wsgi_app = WSGIMiddleware(app.wsgi_app, route=route)
        app.before_request_funcs.setdefault(None, []).insert(0, _note_rule)
    return app
