"""The base of profwatch's background threads (the exporter and the sampler).

A daemon thread is started on the process's first request and stopped at shutdown; ``stop``
never joins the calling thread itself (a shutdown run from the thread's own work), and waits
at most ``timeout`` seconds: a stuck thread is a daemon and dies with the process.
"""

from __future__ import annotations

import threading
from typing import Optional


class Daemon:
    """Runs :meth:`_run` in a daemon thread named :attr:`thread_name`; :meth:`_run` returns
    once ``self._stop`` is set."""

    thread_name = "profwatch"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        t = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread = t
        t.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def _run(self) -> None:
        raise NotImplementedError
