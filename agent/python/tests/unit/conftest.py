import pytest

from helpers import MemoryTransport

import profwatch
from profwatch import _meter, _runtime
from profwatch._counters import Counters


@pytest.fixture
def memory():
    return MemoryTransport()


@pytest.fixture
def configure(memory):
    """``configure(**kwargs)`` → a runtime writing to ``memory``; shut down after the test."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("service", "unit")
        kwargs.setdefault("sidecar", "unix:///nonexistent/agent.sock")
        kwargs.setdefault("profile_hz", 0)
        rt = _runtime.configure(transport=memory, **kwargs)
        made.append(rt)
        return rt

    yield make
    profwatch.shutdown()


@pytest.fixture(autouse=True)
def real_counters():
    """Tests that swap in fake counters get the real ones back afterwards."""
    yield
    if not isinstance(_meter.counters, Counters) or _meter.counters.read is not Counters().read:
        _meter.use_counters(Counters())
