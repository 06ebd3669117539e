"""A task that fails until $CHARGE_WORKS=1: for the dead-letter commands across processes."""

from __future__ import annotations

import os

import asyncq

app = asyncq.App("memory://cli-failing", backoff=asyncq.Backoff(base=0.01, cap=0.05))


@app.task(name="charge", retries=1)
async def charge(order: int) -> str:
    if os.environ.get("CHARGE_WORKS") != "1":
        raise RuntimeError("card processor down")
    return f"charged {order}"
