"""Middleware that carries the current tenant from the code that enqueues a job to the
handler that runs it: a header on the way in, a context variable on the way out.

Run it: ``python examples/tenant_middleware.py`` (memory:// broker, nothing to install).
"""

from __future__ import annotations

import contextvars

import anyio

import asyncq
from asyncq.middleware import Attempt, EnqueueNext, ExecuteNext, Outgoing, Settlement

current_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")


class TenantMiddleware(asyncq.Middleware):
    """Every job remembers the tenant it was enqueued for, and runs as that tenant."""

    header = "x-tenant"

    async def enqueue(self, outgoing: Outgoing, call_next: EnqueueNext) -> list[str]:
        tenant = current_tenant.get()
        if tenant:
            for job in outgoing.jobs:
                job.headers.setdefault(self.header, tenant)
        return await call_next(outgoing)

    async def execute(self, attempt: Attempt, call_next: ExecuteNext) -> Settlement:
        token = current_tenant.set(attempt.headers.get(self.header, ""))
        try:
            return await call_next(attempt)
        finally:
            current_tenant.reset(token)


app = asyncq.App("memory://tenant-example", middleware=[TenantMiddleware()])


@app.task
async def invoice_total(order: int) -> str:
    # No tenant argument: the middleware put it where the handler's code can read it.
    return f"tenant {current_tenant.get() or '?'}: invoice for order {order}"


async def main() -> None:
    async with app, app.worker(concurrency=4):
        for tenant, order in (("acme", 1), ("globex", 2)):
            token = current_tenant.set(tenant)
            try:
                job = await invoice_total.enqueue(order)
            finally:
                current_tenant.reset(token)
            print(await job.result(timeout=10))
        untagged = await invoice_total.enqueue(3)  # enqueued for no tenant
        print(await untagged.result(timeout=10))


if __name__ == "__main__":
    anyio.run(main)
