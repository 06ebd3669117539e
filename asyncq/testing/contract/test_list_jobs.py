"""``Backend.list_jobs``: a queue's jobs in one state (queued, scheduled, running, dead), in
the order the broker keeps them (the oldest or the soonest first), paged by cursor. A job
waiting for a retry is listed among the scheduled ones, with its status FAILED and the
attempt it will run as. Finished jobs are not listed: they are found by id."""

from __future__ import annotations

import time

import anyio
import pytest

import asyncq
from asyncq import JobStatus
from asyncq.backend import Backend
from asyncq.records import JobListing
from asyncq.testing import SettleLog

pytestmark = pytest.mark.anyio


async def every_page(
    backend: Backend, queue: str, status: JobStatus, limit: int
) -> list[list[JobListing]]:
    """The pages of a listing, ``limit`` jobs each, up to and with the first empty one."""
    pages: list[list[JobListing]] = []
    after: str | None = None
    while not pages or pages[-1]:
        page = await backend.list_jobs(queue, status, limit=limit, after=after)
        pages.append(page)
        if page:
            assert all(job.cursor for job in page)
            after = page[-1].cursor
        assert len(pages) <= 10, "the listing does not end"
    return pages


async def test_jobs_are_listed_by_state_and_paged(app: asyncq.App, settled: SettleLog) -> None:
    holding, release = anyio.Event(), anyio.Event()

    @app.task(retries=3)
    async def work(name: str) -> None:
        if name.startswith("dead"):
            raise asyncq.Reject("no")
        if name == "retry":
            raise asyncq.Retry(delay=60)
        if name == "held":
            holding.set()
            await release.wait()

    q = app.default_queue
    backend = app.backend
    async with app, app.worker(concurrency=1, prefetch=0):
        dead = [await work.enqueue(f"dead-{i}") for i in range(2)]
        retrying = await work.enqueue("retry")
        for job in (*dead, retrying):
            await settled.wait(job.id)
        retried_by = time.time()
        held = await work.enqueue("held")
        with anyio.fail_after(5):
            await holding.wait()
        # The worker's one slot is taken: what comes now waits.
        queued = [await work.enqueue(f"queued-{i}") for i in range(5)]
        before = time.time()
        soon = await work.options(delay=30).enqueue("soon")
        later = await work.options(delay=40).enqueue("later")
        after = time.time()

        queued_pages = await every_page(backend, q, JobStatus.QUEUED, limit=2)
        scheduled_pages = await every_page(backend, q, JobStatus.SCHEDULED, limit=1)
        dead_pages = await every_page(backend, q, JobStatus.DEAD, limit=1)
        running: list[JobListing] | None = None
        try:
            running = await backend.list_jobs(q, JobStatus.RUNNING)
        except asyncq.ConfigurationError:
            # Where the broker itself cannot tell which jobs run, the store does.
            assert not backend.store.available
        assert await backend.list_jobs("elsewhere", JobStatus.QUEUED) == []
        with pytest.raises(ValueError):
            await backend.list_jobs(q, JobStatus.SUCCEEDED)
        release.set()

    assert [[j.id for j in page] for page in queued_pages] == [
        [queued[0].id, queued[1].id],
        [queued[2].id, queued[3].id],
        [queued[4].id],
        [],
    ]
    listed = [(j.queue, j.status, j.task, j.attempt, j.eta) for p in queued_pages for j in p]
    assert listed == [(q, JobStatus.QUEUED, work.name, 1, None)] * 5

    # The soonest first: the delayed jobs, then the retry due in a minute.
    scheduled = [j for page in scheduled_pages for j in page]
    assert [len(page) for page in scheduled_pages] == [1, 1, 1, 0]
    assert [j.id for j in scheduled] == [soon.id, later.id, retrying.id]
    assert [j.status for j in scheduled] == [
        JobStatus.SCHEDULED,
        JobStatus.SCHEDULED,
        JobStatus.FAILED,
    ]
    assert [j.attempt for j in scheduled] == [1, 1, 2]
    assert all(j.task == work.name and j.queue == q for j in scheduled)
    soon_eta, later_eta, retry_eta = (j.eta for j in scheduled)
    assert soon_eta is not None and later_eta is not None and retry_eta is not None
    # A broker may keep an eta to the millisecond (RabbitMQ's headers do).
    assert before + 30 - 0.001 <= soon_eta <= after + 30 + 0.001
    assert before + 40 - 0.001 <= later_eta <= after + 40 + 0.001
    assert later_eta < retry_eta <= retried_by + 60

    if running is not None:
        assert [(j.id, j.status, j.task, j.attempt) for j in running] == [
            (held.id, JobStatus.RUNNING, work.name, 1)
        ]
    assert [[j.id for j in page] for page in dead_pages] == [[dead[0].id], [dead[1].id], []]
    assert all(
        (j.status, j.task, j.queue) == (JobStatus.DEAD, work.name, q)
        for page in dead_pages
        for j in page
    )
