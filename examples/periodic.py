"""Periodic jobs: two workers fire the same schedules, and each slot runs once.

    python examples/periodic.py              # memory://, about 3.5 s
    ASYNCQ_BROKER=redis://127.0.0.1:6379/0 python examples/periodic.py

Every worker fires every schedule of its App (there is no scheduler process to keep
alone); a slot's job is enqueued once however many workers pass it, because the slot is
claimed in the broker's job store. Here two workers share one broker, a schedule fires
every second, and each run prints its slot: one line per second, never two.
"""

from __future__ import annotations

import os

import anyio

import asyncq

BROKER = os.environ.get("ASYNCQ_BROKER", "memory://periodic-example")
runs: list[int] = []


def make_app() -> asyncq.App:
    """One worker process's App: the same schedules in each."""
    app = asyncq.App(BROKER)

    @app.periodic(every=1, name="example.tick")
    async def tick() -> None:
        slot = asyncq.current_job().scheduled_for  # the slot it runs for, in UTC
        assert slot is not None
        runs.append(int(slot.timestamp()))
        print(f"tick for {slot:%H:%M:%S}")

    @app.periodic("0 3 * * *", name="example.nightly", timezone="Europe/Berlin")
    async def nightly() -> None:
        print("the nightly report, at 03:00 in Berlin")

    return app


async def main() -> None:
    first, second = make_app(), make_app()
    async with first, second, first.worker(), second.worker():
        with anyio.fail_after(10):
            while len(runs) < 3:  # noqa: ASYNC110 - slots come with the clock
                await anyio.sleep(0.05)
    assert len(set(runs)) == len(runs), f"a slot ran twice: {runs}"
    print(f"{len(runs)} slots, each run once by one of two workers")


if __name__ == "__main__":
    anyio.run(main)
