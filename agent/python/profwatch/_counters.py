"""Per-thread CPU time and, where the CPU counts them, user-space instructions.

- ``cpu_ns`` always comes from :func:`time.thread_time_ns` (``CLOCK_THREAD_CPUTIME_ID``): the
  calling thread's CPU time, user and system.
- Instructions come from a hardware counter opened with ``perf_event_open`` through
  :mod:`ctypes` (``PERF_TYPE_HARDWARE``/``PERF_COUNT_HW_INSTRUCTIONS``, ``exclude_kernel``,
  ``exclude_hv``, ``pid = 0, cpu = -1``: this thread on any CPU), one per thread, opened the
  first time the thread measures a request and read with one ``read()`` of
  ``(value, time_enabled, time_running)``.

Which path runs is decided at run time by the first open: if it fails (no PMU, as in most VMs:
``ENOENT``; ``perf_event_paranoid``; seccomp; an architecture whose syscall number is not
known here), the process uses ``thread_time_ns`` alone from then on, logs why once, and events
carry no ``instructions``. A count is reported only for a request during which the counter was
never multiplexed out (``time_running == time_enabled`` over every stretch), so it is never
short. The opener and reader are injectable so that both paths are tested anywhere.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import struct
import threading
from typing import Callable, Optional, Tuple

log = logging.getLogger("profwatch")

_PERF_TYPE_HARDWARE = 0
_PERF_COUNT_HW_INSTRUCTIONS = 1
_PERF_FORMAT_TOTAL_TIME_ENABLED = 1
_PERF_FORMAT_TOTAL_TIME_RUNNING = 2
_EXCLUDE_KERNEL = 1 << 5
_EXCLUDE_HV = 1 << 6
_PERF_FLAG_FD_CLOEXEC = 1 << 3

#: ``__NR_perf_event_open`` by ``platform.machine()``.
_SYSCALL_NR = {
    "x86_64": 298,
    "amd64": 298,
    "aarch64": 241,
    "arm64": 241,
    "riscv64": 241,
    "ppc64le": 319,
    "ppc64": 319,
    "s390x": 331,
    "i386": 336,
    "i686": 336,
    "armv7l": 364,
}

_READ = struct.Struct("=QQQ")


class _PerfEventAttr(ctypes.Structure):
    """The first ``PERF_ATTR_SIZE_VER0`` (64) bytes of ``struct perf_event_attr``."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
    ]


def open_instructions_counter() -> int:
    """Opens this thread's user-space instruction counter; raises :class:`OSError` if it cannot."""
    nr = _SYSCALL_NR.get(platform.machine().lower())
    if nr is None or not hasattr(ctypes, "CDLL"):
        raise OSError(errno.ENOSYS, "perf_event_open: unknown syscall number on %s" % platform.machine())
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_ulong]
    attr = _PerfEventAttr()
    attr.type = _PERF_TYPE_HARDWARE
    attr.size = ctypes.sizeof(_PerfEventAttr)
    attr.config = _PERF_COUNT_HW_INSTRUCTIONS
    attr.read_format = _PERF_FORMAT_TOTAL_TIME_ENABLED | _PERF_FORMAT_TOTAL_TIME_RUNNING
    attr.flags = _EXCLUDE_KERNEL | _EXCLUDE_HV
    fd = syscall(nr, ctypes.addressof(attr), 0, -1, -1, _PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, "perf_event_open(instructions): %s" % os.strerror(e))
    return int(fd)


def read_counter(fd: int) -> Tuple[int, int, int]:
    """``(instructions, time_enabled, time_running)`` of a counter opened above."""
    return _READ.unpack(os.read(fd, _READ.size))


class Counters:
    """Decides, once per process, whether instructions are counted, and opens per-thread counters.

    ``available`` is ``None`` until the first open, then ``True`` or ``False`` for good.
    """

    def __init__(
        self,
        opener: Callable[[], int] = open_instructions_counter,
        reader: Callable[[int], Tuple[int, int, int]] = read_counter,
        enabled: bool = True,
    ) -> None:
        self.read = reader
        self._opener = opener
        self._lock = threading.Lock()
        self.available: Optional[bool] = None if enabled else False
        self.reason = "" if enabled else "turned off"

    @property
    def path(self) -> str:
        """``perf`` (instructions counted), ``thread_time`` (CPU time only) or ``undecided``."""
        return {True: "perf", False: "thread_time", None: "undecided"}[self.available]

    def open(self) -> Optional[int]:
        """A counter fd for the calling thread, or ``None`` on the fallback path."""
        if self.available is False:
            return None
        fd = None
        try:
            fd = self._opener()
            if len(self.read(fd)) != 3:
                raise OSError(errno.EINVAL, "unexpected read format")
        except Exception as e:  # any failure means: no instructions here
            if fd is not None:
                _close(fd)
            with self._lock:
                if self.available is None:
                    self.available = False
                    self.reason = str(e)
                    log.info("profwatch: no hardware instruction counter (%s); reporting CPU time only", e)
            return None
        with self._lock:
            if self.available is None:
                self.available = True
                log.info("profwatch: counting instructions with perf_event_open")
        return fd


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
