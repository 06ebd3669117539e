"""A FastAPI service that enqueues asyncq jobs and serves their results.

    pip install 'asyncq[web]' fastapi   # (and asyncq[redis] or [amqp] for their brokers)
    uvicorn examples.fastapi_app:api

The server's lifespan opens the asyncq App (the producer side) and, unless told not to,
runs a worker inside the server for as long as it runs.

Environment:

``ASYNCQ_BROKER``
    The broker URL; default ``memory://``, which lives inside this one process.
``ASYNCQ_INPROCESS_WORKER``
    ``1`` (the default): run an in-process worker in the server's lifespan. ``0``: only
    enqueue, and leave the jobs to workers started on their own
    (``asyncq run examples.fastapi_app:app``); that needs a broker the processes share,
    so not ``memory://``.

Endpoints and their status codes:

``POST /jobs/add`` and ``POST /jobs/divide`` with ``{"a": .., "b": ..}``, optional
``?delay=SECONDS``
    202 ``{"id", "status"}``: the job is enqueued.
``GET /jobs/{id}``
    200 ``{"id", "status", "attempt", "error"}``; 404 for an unknown job.
``GET /jobs/{id}/result?timeout=SECONDS`` (default 10, at most 60)
    200 ``{"id", "status": "succeeded", "result"}``;
    404 unknown job (never enqueued, or its record expired);
    409 the job was cancelled;
    422 the job failed and was dead-lettered: ``error`` holds its exception type and message;
    504 the job did not finish within the timeout: ``status`` says where it is; ask again.
``DELETE /jobs/{id}``
    200 ``{"id", "cancelled": true}``; 404 unknown job; 409 the job had already finished.
``/asyncq/``
    The dashboard (``asyncq.web``), read-only here: put the service's own authentication in
    front of it before you let it change anything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import asyncq
from asyncq.web import create_dashboard

app = asyncq.App()


@app.task(name="examples.add")
async def add(a: float, b: float) -> float:
    return a + b


@app.task(name="examples.divide", retries=0)
async def divide(a: float, b: float) -> float:
    return a / b  # b == 0 fails the job; with retries=0 it is dead-lettered at once


def inprocess_worker() -> bool:
    return os.environ.get("ASYNCQ_INPROCESS_WORKER", "1").lower() not in {"0", "false", "no"}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # uvicorn gives only its own loggers a handler: without one on the root logger the
    # worker's job lines (INFO on "asyncq.job") go nowhere, and warnings come out bare.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s %(message)s")
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app)
        if inprocess_worker():
            # Shorter than a typical orchestrator's grace period, so jobs still running at
            # shutdown are returned to the queue before the process is killed.
            await stack.enter_async_context(app.worker(concurrency=20, shutdown_timeout=10))
        yield


api = FastAPI(title="asyncq example", lifespan=lifespan)
# The dashboard under /asyncq: it has no lifespan of its own (the one above opens the App)
# and its links follow the mount point.
api.mount("/asyncq", create_dashboard(app, read_only=True))


class Operands(BaseModel):
    a: float
    b: float


Delay = Annotated[float | None, Query(ge=0, le=86400, description="seconds before it may run")]
Timeout = Annotated[float, Query(gt=0, le=60, description="seconds to wait for the result")]


def answer(status_code: int, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=status_code)


def error_body(error: asyncq.ErrorInfo | None) -> dict[str, str] | None:
    return None if error is None else {"type": error.type, "message": error.message}


async def enqueue(
    task: asyncq.Task[[float, float], float], ops: Operands, delay: float | None
) -> JSONResponse:
    job = await task.options(delay=delay).enqueue(ops.a, ops.b)
    return answer(202, id=job.id, status=str(await job.status()))


@api.post("/jobs/add", status_code=202)
async def enqueue_add(ops: Operands, delay: Delay = None) -> JSONResponse:
    return await enqueue(add, ops, delay)


@api.post("/jobs/divide", status_code=202)
async def enqueue_divide(ops: Operands, delay: Delay = None) -> JSONResponse:
    return await enqueue(divide, ops, delay)


@api.get("/jobs/{job_id}")
async def job_info(job_id: str) -> JSONResponse:
    try:
        info = await app.get_job(job_id).info()
    except asyncq.JobNotFound:
        return answer(404, id=job_id, detail="unknown job")
    return answer(
        200, id=job_id, status=str(info.status), attempt=info.attempt, error=error_body(info.error)
    )


@api.get("/jobs/{job_id}/result")
async def job_result(job_id: str, timeout: Timeout = 10.0) -> JSONResponse:
    job = app.get_job(job_id)
    try:
        result = await job.result(timeout=timeout)
    except TimeoutError:
        try:
            status = str(await job.status())
        except asyncq.JobNotFound:  # its record expired while we waited
            return answer(404, id=job_id, detail="unknown job")
        return answer(504, id=job_id, status=status, detail="not finished yet")
    except asyncq.JobNotFound:
        return answer(404, id=job_id, detail="unknown job")
    except asyncq.JobCancelled:
        return answer(409, id=job_id, status="cancelled", detail="the job was cancelled")
    except asyncq.JobFailed as exc:
        return answer(
            422, id=job_id, status="dead", detail="the job failed", error=error_body(exc.error)
        )
    return answer(200, id=job_id, status="succeeded", result=result)


@api.delete("/jobs/{job_id}")
async def cancel_job(job_id: str) -> JSONResponse:
    job = app.get_job(job_id)
    try:
        status = await job.status()
    except asyncq.JobNotFound:
        return answer(404, id=job_id, detail="unknown job")
    if status.finished or not await job.cancel():
        return answer(409, id=job_id, detail="the job had already finished")
    return answer(200, id=job_id, cancelled=True)
