"""The per-thread meter: stretches charged to the innermost request, nothing charged twice."""

from helpers import burn

from profwatch._meter import Request, meter


def _request(measured=True):
    return Request(None, "GET", lambda _: None, None, measured)


def test_nested_stretches_charge_the_innermost_request_only():
    outer, inner = _request(), _request()
    m = meter()
    m.enter(outer)
    burn(10)
    m.enter(inner)
    burn(20)
    m.exit(inner)
    burn(10)
    m.exit(outer)
    assert 19_000_000 <= inner.cpu_ns <= 23_000_000
    assert 19_000_000 <= outer.cpu_ns <= 23_000_000
    assert m.current is None and m.outer == []


def test_the_meter_names_the_current_request_and_counts_switches():
    a = _request()
    m = meter()
    seq = m.seq
    m.enter(a)
    assert m.current is a and m.seq == seq + 1
    m.exit(a)
    assert m.current is None and m.seq == seq + 2


def test_unmeasured_requests_are_current_but_read_no_clock():
    r = _request(measured=False)
    m = meter()
    m.enter(r)
    assert m.current is r
    burn(2)
    m.exit(r)
    assert r.cpu_ns == 0


def test_an_unbalanced_exit_forgets_that_request():
    a, b = _request(), _request()
    m = meter()
    m.enter(a)
    m.enter(b)
    m.exit(a)  # a server that never closed a's response, say
    assert m.current is b
    m.exit(b)
    assert m.current is None and m.outer == []
