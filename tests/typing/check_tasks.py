"""Right and wrong uses of a task, checked by mypy (see tests/test_typing.py).

Each line that must be a type error ends with ``# E: <error code>``; every other line must
type-check.
"""

from __future__ import annotations

from typing import assert_type

import asyncq

app = asyncq.App("memory://typing")


@app.task
async def add(a: int, b: int) -> int:
    return a + b


@app.task(queue="reports", retries=1)
def render(title: str, *, pages: int = 1) -> str:
    return title * pages


async def right() -> None:
    job = await add.enqueue(1, 2)
    assert_type(job, asyncq.Job[int])
    total: int = await job.result()
    total = await job.result(timeout=5)
    later = await add.options(delay=1).enqueue(1, 2)
    total = await later.result()
    by_name = await add.enqueue(a=1, b=2)
    total = await by_name.result()
    many = await add.enqueue_many([(1, 2), {"a": 3, "b": 4}])
    total = await many[0].result()
    report = await render.enqueue("title", pages=2)
    assert_type(report, asyncq.Job[str])
    text: str = await report.result()
    print(total, text)


async def wrong() -> None:
    await add.enqueue("x", 2)  # E: arg-type
    await add.enqueue(1)  # E: call-arg
    await add.enqueue(1, 2, 3)  # E: call-arg
    await add.enqueue(1, c=2)  # E: call-arg
    await add.options(delay=1).enqueue("x", 2)  # E: arg-type
    await add.options(delay="soon").enqueue(1, 2)  # E: arg-type
    await add.enqueue(1, 2, delay=5)  # E: call-arg
    job = await add.enqueue(1, 2)
    text: str = await job.result()  # E: assignment
    await render.enqueue("title", 2)  # E: call-arg
    print(text)
