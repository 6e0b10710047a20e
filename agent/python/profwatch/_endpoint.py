"""Endpoint names: the method plus a route template, ``GET /items/{id}``.

Invariants:

- A name never holds a raw request path: it is built from a route template (Flask rule,
  Django route, Starlette path format, or what a ``route`` callable returns), and a request
  that matched no route is ``METHOD <unmatched>``.
- Placeholders are written ``{name}`` whatever the framework's syntax, so the same route
  gets the same name from every SDK (the Rust layer writes axum's ``{id}``).
- Methods outside the standard nine count as ``OTHER``, so a client cannot mint endpoints.
- A process names at most :data:`MAX_ENDPOINTS` endpoints; past that (a ``route`` callable
  that returns raw paths, say) new ones become ``METHOD <unmatched>`` and are counted.
- Names are at most 256 bytes (the collector's limit); a longer template is unmatched.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Dict, Optional

MAX_ENDPOINTS = 1024
MAX_ENDPOINT_BYTES = 256
UNMATCHED = "<unmatched>"
#: Framework routes whose template is remembered (converted once, on the first request).
TEMPLATE_CACHE = 4096

_METHODS = frozenset(("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "CONNECT", "PATCH", "TRACE"))

# Flask/werkzeug ``<int:id>``, ``<path:p>``, ``<any(a, b):kind>``, ``<name>``.
_FLASK_PARAM = re.compile(r"<(?:[^<>]*:)?([A-Za-z_][A-Za-z0-9_]*)>")
# Django ``path()`` converters: ``<int:pk>``, ``<slug>``.
_DJANGO_PARAM = re.compile(r"<(?:[A-Za-z_][A-Za-z0-9_]*:)?([A-Za-z_][A-Za-z0-9_]*)>")
# Django ``re_path()`` named and unnamed groups (one level of nesting inside a group).
_REGEX_NAMED = re.compile(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>(?:[^()]|\([^()]*\))*\)")
_REGEX_GROUP = re.compile(r"\((?!\?)(?:[^()]|\([^()]*\))*\)")
_REGEX_ANCHORS = re.compile(r"\\A|\\Z|(?<!\\)[\^$]")
_REGEX_ESCAPE = re.compile(r"\\([^A-Za-z0-9])")


def method_of(method: str) -> str:
    """The method as it appears in a name: a standard method, else ``OTHER``."""
    return method if method in _METHODS else "OTHER"


@functools.lru_cache(maxsize=TEMPLATE_CACHE)
def flask_template(rule: str) -> str:
    """``/items/<int:id>`` → ``/items/{id}``."""
    return _FLASK_PARAM.sub(r"{\1}", rule)


@functools.lru_cache(maxsize=TEMPLATE_CACHE)
def django_template(route: str) -> str:
    """A Django ``ResolverMatch.route`` → ``/items/{pk}/``.

    ``path()`` routes are converted exactly; ``re_path()`` regexes lose their anchors, named
    groups become ``{name}``, unnamed ones ``{arg}``, and escapes are undone (best effort: a
    regex with other syntax keeps it, which still names no single request).
    """
    t = _REGEX_NAMED.sub(r"{\1}", route)
    t = _DJANGO_PARAM.sub(r"{\1}", t)
    if "(" in t or "^" in t or "$" in t or "\\" in t:
        t = _REGEX_GROUP.sub("{arg}", t)
        t = _REGEX_ANCHORS.sub("", t)
        t = _REGEX_ESCAPE.sub(r"\1", t)
    return t if t.startswith("/") else "/" + t


def starlette_template(scope: dict, root_path0: str) -> Optional[str]:
    """The template of the route Starlette (or FastAPI) matched, from ``scope["route"]``.

    A ``Mount`` prefix is what ``root_path`` grew by while routing (``root_path0`` is its value
    before); a mount segment equal to a path parameter the final route does not declare is
    written ``{name}``.
    """
    route = scope.get("route")
    if route is None:
        return None
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    root = scope.get("root_path", "") or ""
    if isinstance(root, str) and len(root) > len(root_path0) and root.startswith(root_path0):
        prefix = root[len(root_path0):]
        own = getattr(route, "param_convertors", None) or {}
        params = scope.get("path_params") or {}
        mount_params = {str(v): k for k, v in params.items() if k not in own}
        if mount_params:
            prefix = "/".join("{%s}" % mount_params[s] if s in mount_params else s for s in prefix.split("/"))
        path = prefix + path
    return path


class Namer:
    """Turns (method, template) into an endpoint name, caching and capping the names.

    The cache is keyed by the method as the request gave it, so that the request path's
    lookup is one dict probe; only standard methods are cached that way (a client cannot
    grow the cache), and ``M <unmatched>`` is cached too but is not an endpoint of the cap.
    """

    def __init__(self, limit: int = MAX_ENDPOINTS) -> None:
        self._limit = limit
        #: ``(method, template) → name``, read without the lock (the request path's lookup).
        self.names: Dict[tuple, str] = {}
        self._count = 0  # the endpoints named (cached names other than unmatched ones)
        self._lock = threading.Lock()
        self.over_limit = 0

    def name(self, method: str, template: Optional[str]) -> str:
        name = self.names.get((method, template))
        if name is None:
            name = self._new(method, template)
        return name

    def _new(self, method: str, template: Optional[str]) -> str:
        m = method_of(method)
        unmatched = m + " " + UNMATCHED
        with self._lock:
            if template is None:
                if m == method:
                    self.names[(m, None)] = unmatched
                return unmatched
            key = (m, template)
            name = self.names.get(key)
            if name is not None:
                return name
            name = m + " " + template
            if len(name.encode("utf-8", "replace")) > MAX_ENDPOINT_BYTES or not _printable(name):
                return unmatched
            if self._count >= self._limit:
                self.over_limit += 1
                return unmatched
            self._count += 1
            self.names[key] = name
            return name


def _printable(s: str) -> bool:
    return s.isprintable()
