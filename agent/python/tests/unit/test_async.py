"""Async requests: CPU summed over the steps of the request's task, the tasks it creates and
the sync calls it offloads to anyio's worker threads; interleaved requests on one loop never
see each other's CPU."""

import asyncio

import anyio.to_thread
import pytest

from helpers import burn

import profwatch
from profwatch._tasks import Stepped


def _app(handlers):
    """A bare ASGI app: path → async handler(); the route is the path itself."""

    async def app(scope, receive, send):
        await handlers[scope["path"]]()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return profwatch.ASGIMiddleware(app, route=lambda scope: scope["path"])


async def _call(app, path):
    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        pass

    await app({"type": "http", "method": "GET", "path": path, "root_path": ""}, receive, send)


def _by_endpoint(events):
    out = {}
    for e in events:
        out.setdefault(e["endpoint"], []).append(e)
    return out


def _the_event(rt, memory):
    """Ships what is queued and returns the one event there must be."""
    rt.exporter.drain()
    [event] = memory.events()
    return event


def _assert_ms(event, ms):
    assert abs(event["cpu_ns"] - ms * 1e6) <= 0.1 * ms * 1e6, (event, ms)


def test_interleaved_requests_on_one_loop_get_their_own_cpu(configure, memory):
    rt = configure()

    async def heavy():
        for _ in range(4):
            burn(10)
            await asyncio.sleep(0.002)

    async def light():
        for _ in range(4):
            burn(3)
            await asyncio.sleep(0.001)

    app = _app({"/heavy": heavy, "/light": light})

    async def main():
        await asyncio.gather(*[_call(app, p) for p in ["/heavy", "/light"] * 3])

    asyncio.run(main())
    rt.exporter.drain()
    events = _by_endpoint(memory.events())
    assert len(events["GET /heavy"]) == len(events["GET /light"]) == 3
    for e in events["GET /heavy"]:
        _assert_ms(e, 40)
        assert e["wall_ns"] > e["cpu_ns"], "the others' CPU ran in between"
    for e in events["GET /light"]:
        _assert_ms(e, 12)


def test_tasks_the_request_creates_are_charged_to_it(configure, memory):
    rt = configure()

    async def child():
        burn(15)
        await asyncio.sleep(0)
        burn(5)

    async def parent():
        burn(5)
        await asyncio.create_task(child())

    async def bystander():
        burn(30)

    app = _app({"/parent": parent})

    async def main():
        other = asyncio.create_task(bystander())  # created outside any request
        await _call(app, "/parent")
        await other

    asyncio.run(main())
    _assert_ms(_the_event(rt, memory), 25)


def test_sync_code_offloaded_to_anyio_threads_is_charged(configure, memory):
    rt = configure()

    async def offloads():
        burn(5)
        await anyio.to_thread.run_sync(burn, 20)

    asyncio.run(_call(_app({"/offload": offloads}), "/offload"))
    _assert_ms(_the_event(rt, memory), 25)


def test_a_failing_app_reports_500_and_its_exception_reaches_the_server(configure, memory):
    rt = configure()

    async def boom():
        burn(1)
        raise KeyError("boom")

    app = _app({"/boom": boom})
    with pytest.raises(KeyError):
        asyncio.run(_call(app, "/boom"))
    assert _the_event(rt, memory)["status"] == 500


def test_stepped_forwards_what_asyncio_and_anyio_inspect():
    async def coro():
        await asyncio.sleep(0)

    c = coro()
    s = Stepped(c, None)
    assert s.cr_frame is c.cr_frame and s.cr_running is False
    assert "coro" in s.__qualname__
    c.close()
