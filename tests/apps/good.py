"""A plain app with two tasks on two queues, plus an attribute that is not an App."""

from __future__ import annotations

import asyncq

app = asyncq.App("memory://cli-good")

not_an_app = 42


@app.task(name="add")
async def add(a: int, b: int) -> int:
    return a + b


@app.task(name="send_email", queue="emails")
async def send_email(to: str) -> None:
    pass
