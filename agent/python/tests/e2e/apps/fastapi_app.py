"""A FastAPI app for the end-to-end tests (uvicorn: one event loop)."""

import asyncio
import os

from fastapi import FastAPI

import profwatch
from common import Inflight, burn

profwatch.configure()
app = FastAPI()
inflight = Inflight()


@app.middleware("http")
async def add_header(request, call_next):
    # A BaseHTTPMiddleware inside profwatch's: it runs the rest of the app in a task of its
    # own, which must still be charged to the request.
    response = await call_next(request)
    response.headers["x-pid"] = str(os.getpid())
    return response


app.add_middleware(profwatch.ASGIMiddleware)


def async_hot_a(ms):
    burn(ms)


def async_hot_b(ms):
    burn(ms)


def sync_hot(ms):
    burn(ms)


@app.get("/healthz")
async def healthz():
    return "ok"


async def _in_steps(hot, ms: float, steps: int) -> None:
    """Spends ``ms`` of CPU in ``hot`` over ``steps`` steps of the task, sleeping in between."""
    with inflight:
        for _ in range(steps):
            hot(ms / steps)
            await asyncio.sleep(0.01)


@app.get("/async/a/{id}")
async def async_a(id: int, ms: float, steps: int = 4):
    await _in_steps(async_hot_a, ms, steps)
    return {"id": id}


@app.get("/async/b/{id}")
async def async_b(id: int, ms: float, steps: int = 4):
    await _in_steps(async_hot_b, ms, steps)
    return {"id": id}


@app.get("/sync/{id}")
def sync_endpoint(id: int, ms: float):
    # A def endpoint: FastAPI runs it in anyio's thread pool.
    sync_hot(ms)
    return {"id": id}


@app.get("/stats")
async def stats():
    return {"max_inflight": inflight.max, **profwatch.stats()}
