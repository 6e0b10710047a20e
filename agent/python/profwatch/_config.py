"""Configuration: the arguments of :func:`profwatch.configure`, their environment defaults,
and their validation.

An argument given in code wins over the environment, which wins over the default. Values are
checked against the collector's limits here, once, so that nothing the SDK sends later is
refused for a bad name; a bad value raises :class:`ValueError` naming the argument or the
environment variable it came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Tuple, Union

DEFAULT_SIDECAR = "unix:///run/profwatch/agent.sock"
MAX_LABEL_BYTES = 128
MAX_HZ = 1000


@dataclass(frozen=True)
class Sidecar:
    """Where the sidecar listens: a Unix stream socket path, or a UDP (host, port)."""

    kind: str  # "unix" or "udp"
    address: Union[str, Tuple[str, int]]

    def __str__(self) -> str:
        if self.kind == "unix":
            return "unix://" + str(self.address)
        host, port = self.address  # type: ignore[misc]
        return "udp://%s:%d" % (("[%s]" % host) if ":" in host else host, port)


@dataclass(frozen=True)
class Config:
    """A validated configuration (the defaults are in :data:`DEFAULTS`)."""

    service: str
    build: str
    dc: str
    sidecar: Sidecar
    #: Stack samples per second of each request thread's CPU time; 0 turns the sampler off.
    profile_hz: int
    #: Fraction of requests that send an event (weight ``1 / sample_rate``); 0 < rate <= 1.
    sample_rate: float
    #: Seconds of samples aggregated into each shipped profile.
    profile_interval: float
    #: Sample the main thread from SIGPROF (``ITIMER_PROF``) when it serves requests, instead
    #: of from the sampler thread (see :mod:`profwatch._sampler`).
    profile_signal: bool = True


#: Each argument of :func:`profwatch.configure` and its default; the environment variable is
#: ``PROFWATCH_`` and the name in capitals.
DEFAULTS = {
    "service": "",
    "build": "",
    "dc": "",
    "sidecar": DEFAULT_SIDECAR,
    "profile_hz": 99,
    "sample_rate": 1.0,
    "profile_interval": 10.0,
    "profile_signal": True,
}


def parse_sidecar(url: str, what: str = "sidecar") -> Sidecar:
    """``unix:///run/profwatch/agent.sock`` or ``udp://127.0.0.1:4042`` (``udp://[::1]:4042``)."""
    if not isinstance(url, str):
        raise ValueError("%s: expected a string such as %r, got %r" % (what, DEFAULT_SIDECAR, url))
    if url.startswith("unix://"):
        path = url[len("unix://"):]
        if not path:
            raise ValueError("%s: %r has no socket path (write unix:///path/to/agent.sock)" % (what, url))
        return Sidecar("unix", path)
    if url.startswith("udp://"):
        rest = url[len("udp://"):].rstrip("/")
        if rest.startswith("["):
            host, sep, port = rest[1:].partition("]:")
        else:
            host, sep, port = rest.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("%s: %r is not udp://HOST:PORT (e.g. udp://127.0.0.1:4042)" % (what, url))
        return Sidecar("udp", (host, int(port)))
    raise ValueError(
        "%s: %r must start with unix:// (a socket path) or udp:// (e.g. udp://127.0.0.1:4042)" % (what, url)
    )


def _name(value: str, what: str, required: bool) -> str:
    if not isinstance(value, str):
        raise ValueError("%s: expected a string, got %r" % (what, value))
    n = len(value.encode("utf-8", "surrogatepass"))
    if required and n == 0:
        raise ValueError("%s is required: pass configure(service=...) or set PROFWATCH_SERVICE (1 to 128 bytes)" % what)
    if n > MAX_LABEL_BYTES:
        raise ValueError("%s: %d bytes, at most %d" % (what, n, MAX_LABEL_BYTES))
    if not value.isprintable():
        raise ValueError("%s: %r holds control characters" % (what, value))
    return value


def _number(value, what: str, kind, low, high, low_open: bool = False):
    try:
        v = kind(value)
    except (TypeError, ValueError):
        raise ValueError("%s: %r is not a number" % (what, value)) from None
    if v != v or v > high or v < low or (low_open and v == low):
        raise ValueError("%s: %r is outside %s%s, %s]" % (what, value, "(" if low_open else "[", low, high))
    return v


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("%s: %r is not a flag (1 or 0, true or false, on or off)" % (what, value))


def make_config(env: Mapping[str, str] = os.environ, **args: Any) -> Config:
    """Merges arguments (those of :func:`profwatch.configure`; ``None`` means left out),
    environment and :data:`DEFAULTS` into a validated :class:`Config`."""
    unknown = sorted(set(args) - set(DEFAULTS))
    if unknown:
        raise TypeError("configure() got unknown arguments: %s" % ", ".join(unknown))
    value, what = {}, {}
    for name, default in DEFAULTS.items():
        var = "PROFWATCH_" + name.upper()
        if args.get(name) is not None:
            value[name], what[name] = args[name], name
        elif env.get(var, "") != "":
            value[name], what[name] = env[var], var
        else:
            value[name], what[name] = default, name
    hz = value["profile_hz"]
    if isinstance(hz, float) and hz != int(hz):
        raise ValueError("%s: %r is not a whole number of Hz" % (what["profile_hz"], hz))
    return Config(
        service=_name(value["service"], what["service"], required=True),
        build=_name(value["build"], what["build"], required=False),
        dc=_name(value["dc"], what["dc"], required=False),
        sidecar=parse_sidecar(value["sidecar"], what["sidecar"]),
        profile_hz=_number(hz, what["profile_hz"], int, 0, MAX_HZ),
        sample_rate=_number(value["sample_rate"], what["sample_rate"], float, 0.0, 1.0, low_open=True),
        profile_interval=_number(value["profile_interval"], what["profile_interval"], float, 0.1, 3600.0),
        profile_signal=_flag(value["profile_signal"], what["profile_signal"]),
    )
