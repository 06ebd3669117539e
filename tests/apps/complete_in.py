"""The worker the complete_in crash test kills with SIGKILL: its one task writes an order
row and completes its job in one transaction, announces the commit on stdout, then never
returns (so the worker never settles it). The test names the ``postgresql://`` broker with
``--broker``; the task writes through a connection of its own to the broker's database."""

from __future__ import annotations

import anyio
import asyncpg

import asyncq

from .output import print_line

app = asyncq.App("memory://complete-in")


@app.task(name="pay.charge")
async def charge(order: str) -> str:
    settings = app.backend.settings  # type: ignore[attr-defined]  # the PostgresBackend's
    conn = await asyncpg.connect(settings.dsn)
    try:
        async with conn.transaction():
            await conn.execute(f'INSERT INTO "{settings.schema}".orders VALUES ($1)', order)
            await asyncq.current_job().complete_in(conn, result=f"paid {order}")
    finally:
        await conn.close()
    print_line(f"committed {asyncq.current_job().id}")
    await anyio.sleep_forever()
    return "never"
