"""profwatch for Python: per-request CPU and Python stack profiles for WSGI and ASGI services.

Each request becomes one event (endpoint ``METHOD /route/{template}``, status, thread CPU
time summed over the request's stretches, instructions where a hardware counter exists, wall
time) sent to the local sidecar (``profwatch agent``); a sampler thread takes Python stacks
of the request threads at ``profile_hz`` per second of their CPU time, attributes each one to
the request running on that thread (under asyncio, to the request whose task step is running)
and ships one profile per endpoint every 10 s. Pure standard library; nothing ever raises into
the app: what cannot be sent is dropped and counted (:func:`stats`).

    import profwatch
    profwatch.configure(service="shop", build="812")   # or PROFWATCH_* environment variables
    app.add_middleware(profwatch.ASGIMiddleware)       # Starlette / FastAPI
    # Django: "profwatch.django.Middleware" first in MIDDLEWARE; Flask: profwatch.flask.instrument(app)
"""

from __future__ import annotations

from typing import Any, Optional

from . import _runtime
from .asgi import ASGIMiddleware
from .wsgi import WSGIMiddleware

__all__ = ["configure", "stats", "flush", "shutdown", "WSGIMiddleware", "ASGIMiddleware"]
__version__ = "0.1.0"


def configure(
    service: Optional[str] = None,
    build: Optional[str] = None,
    dc: Optional[str] = None,
    sidecar: Optional[str] = None,
    profile_hz: Optional[int] = None,
    sample_rate: Optional[float] = None,
    profile_interval: Optional[float] = None,
    profile_signal: Optional[bool] = None,
) -> None:
    """Configures profwatch for this process (call it again to replace the configuration).

    Every argument left out comes from the environment, else its default:

    - ``service`` (``PROFWATCH_SERVICE``, required: 1 to 128 bytes), ``build``
      (``PROFWATCH_BUILD``), ``dc`` (``PROFWATCH_DC``): labels of every event and profile;
      the sidecar fills an empty ``dc`` and the host.
    - ``sidecar`` (``PROFWATCH_SIDECAR``, default ``unix:///run/profwatch/agent.sock``):
      ``unix:///path/to/agent.sock`` or ``udp://127.0.0.1:4042``.
    - ``profile_hz`` (``PROFWATCH_PROFILE_HZ``, default 99): stack samples per second of a
      request thread's CPU time; 0 turns the sampler off.
    - ``sample_rate`` (``PROFWATCH_SAMPLE_RATE``, default 1.0): the fraction of requests that
      send an event, each weighted ``1 / sample_rate``; stack samples of the others still
      count for their endpoint.
    - ``profile_interval`` (``PROFWATCH_PROFILE_INTERVAL``, default 10): seconds per profile.
    - ``profile_signal`` (``PROFWATCH_PROFILE_SIGNAL``, default on): when the main thread
      serves requests (gunicorn's sync workers, uvicorn), sample it from ``SIGPROF`` rather
      than from the sampler thread, which costs less; off leaves ``SIGPROF`` and
      ``ITIMER_PROF`` alone. It is never used if something else already owns them.

    Raises :class:`ValueError` for a value the collector would refuse. Without a call, the
    first request configures from the environment (and, if that fails, logs a warning once
    and serves every request unmeasured).
    """
    _runtime.configure(**locals())  # every argument, by name


def stats() -> dict:
    """This process's counters: requests, events and profiles sent, samples, and every drop
    by reason (``events_dropped``, ``profiles_dropped``, ``samples_dropped``), plus
    ``counter_path`` (``perf`` when instructions are counted, ``thread_time`` when not)."""
    rt = _runtime._runtime
    if rt is None:
        return {"configured": False}
    out: dict = {"configured": True}
    out.update(rt.snapshot())
    return out


def flush() -> None:
    """Sends the current profile interval and every queued event now (tests, short scripts)."""
    rt = _runtime.runtime()
    if rt is not None:
        rt.flush()


def shutdown() -> None:
    """Stops the threads after a last flush; the next request configures again from the
    environment. Runs by itself at interpreter exit."""
    _runtime.shutdown()


def __getattr__(name: str) -> Any:
    # profwatch.flask and profwatch.django import their framework only when asked for.
    if name in ("flask", "django"):
        import importlib

        return importlib.import_module("." + name, __name__)
    raise AttributeError("module 'profwatch' has no attribute %r" % name)
