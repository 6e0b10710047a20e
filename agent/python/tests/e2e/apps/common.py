"""Code shared by the test apps: CPU burners with names the tests look for in flame graphs."""

import os
import sys
import threading
import time
import types


def burn(ms: float) -> None:
    """Spends ``ms`` milliseconds of this thread's CPU time in pure Python."""
    end = time.thread_time_ns() + int(ms * 1_000_000)
    while time.thread_time_ns() < end:
        pass


_per_process = None


def per_process_burner():
    """A burner named ``burn_in_worker_<pid>``, made once per process, so that a flame graph
    shows which worker process a sample came from."""
    global _per_process
    pid = os.getpid()
    if _per_process is None or _per_process[0] != pid:
        def template(ms):
            burn(ms)

        name = "burn_in_worker_%d" % pid
        changes = {"co_name": name}
        if sys.version_info >= (3, 11):
            changes["co_qualname"] = name
        code = template.__code__.replace(**changes)
        _per_process = (pid, types.FunctionType(code, template.__globals__, name))
    return _per_process[1]


class Inflight:
    """Counts requests in flight, and the most there ever were at once."""

    def __init__(self):
        self.now = 0
        self.max = 0
        self._lock = threading.Lock()

    def __enter__(self):
        with self._lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def __exit__(self, *exc):
        with self._lock:
            self.now -= 1
