"""Jobs that stay put, for the operations tests: ``refuse`` goes straight to the dead-letter
queue, ``hold`` runs until its worker is stopped. Run it with ``--broker``."""

from __future__ import annotations

import anyio

import asyncq

app = asyncq.App("memory://cli-observed")


@app.task(name="refuse")
async def refuse() -> None:
    raise asyncq.Reject("refused on purpose")


@app.task(name="hold")
async def hold() -> None:
    await anyio.sleep_forever()
