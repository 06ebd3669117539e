"""An App with a job in every state, shared by the dashboard's tests."""

from __future__ import annotations

import anyio
import pytest

import asyncq

__all__ = ["SCRIPT", "Shop"]

SCRIPT = "<script>alert(1)</script>"


class Shop:
    """An App with a job in every state: queued, scheduled, waiting for a retry, running,
    succeeded, dead (one of them with a script tag for an argument) and cancelled."""

    def __init__(self, url: str) -> None:
        self.app = asyncq.App(url)
        self.release = anyio.Event()
        self.started = anyio.Event()
        app = self.app

        @app.task(name="charge", retries=0)
        async def charge(order: str) -> str:
            if order.startswith("bad"):
                raise ValueError(f"card declined for {order}")
            return f"charged {order}"

        self.flaked = anyio.Event()

        @app.task(name="flaky", retries=3, backoff=asyncq.Backoff(base=3600, jitter=False))
        async def flaky() -> None:
            self.flaked.set()
            raise ConnectionError("gateway timeout")

        @app.task(name="hold")
        async def hold() -> None:
            self.started.set()
            await self.release.wait()

        @app.periodic(every=3600, name="nightly")
        async def nightly() -> None:
            pass

        self.charge, self.flaky, self.hold = charge, flaky, hold

    async def fill(self) -> dict[str, str]:
        """Run the jobs that finish; leave one running until ``release``."""
        ids: dict[str, str] = {}
        ok = await self.charge.enqueue("o-1")
        bad = await self.charge.enqueue("bad-" + SCRIPT)
        bad2 = await self.charge.enqueue("bad-2")
        retrying = await self.flaky.enqueue()
        cancelled = await self.charge.options(delay=3600).enqueue("o-cancel")
        await cancelled.cancel()
        async with self.app.worker(concurrency=4, schedules=False):
            assert await ok.result(timeout=10) == "charged o-1"
            for job in (bad, bad2):
                with pytest.raises(asyncq.JobFailed):
                    await job.result(timeout=10)
            with anyio.fail_after(10):
                await self.flaked.wait()
        # The worker settles what it ran before it stops: the retry is scheduled now.
        assert (await retrying.status()) is asyncq.JobStatus.FAILED
        ids |= {"succeeded": ok.id, "dead": bad.id, "dead2": bad2.id, "retrying": retrying.id}
        ids["cancelled"] = cancelled.id
        ids["scheduled"] = (await self.charge.options(delay=3600).enqueue("o-later")).id
        ids["queued"] = (await self.charge.enqueue("o-waiting")).id
        return ids
