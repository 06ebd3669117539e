"""Listing jobs on Redis reads the streams' own structures: queued jobs are the entries after
the group's last-delivered id and running ones its pending entries; the scheduled set pages
on by score and id even when the job a page ended on has left the set; a page is one script
call."""

from __future__ import annotations

import time

import pytest

import asyncq
from asyncq import JobStatus
from asyncq.backend import Settlement
from asyncq.errors import ErrorInfo
from asyncq.records import JobListing

from .redis_support import RoundTrips, redis_client, redis_url

pytestmark = pytest.mark.anyio


async def _all(app: asyncq.App, status: JobStatus, limit: int) -> list[JobListing]:
    """Every listed job, page by page."""
    found: list[JobListing] = []
    after = None
    while True:
        page = await app.backend.list_jobs("default", status, limit=limit, after=after)
        found += page
        if len(page) < limit:
            return found
        after = page[-1].cursor


async def test_delivered_entries_are_running_and_the_rest_queued(prefix: str) -> None:
    app = asyncq.App(redis_url(prefix))

    @app.task(name="work")
    async def work(n: int) -> None:
        pass

    async with app:
        jobs = await work.enqueue_many([(n,) for n in range(5)])
        deliveries = await app.backend.fetch(["default"], 2, timeout=0)
        held = {d.id for d in deliveries}
        assert held == {job.id for job in jobs[:2]}

        running = await _all(app, JobStatus.RUNNING, 1)
        queued = await _all(app, JobStatus.QUEUED, 2)
        assert {j.id for j in running} == held
        assert [j.id for j in queued] == [job.id for job in jobs[2:]]  # oldest first
        assert {(j.status, j.task, j.attempt) for j in running} == {(JobStatus.RUNNING, "work", 1)}
        assert {(j.status, j.task, j.attempt) for j in queued} == {(JobStatus.QUEUED, "work", 1)}

        # A job back in its queue after a retry is queued again, as its next attempt.
        (first, second) = deliveries
        error = ErrorInfo("ValueError", "no")
        retry = Settlement.retry(
            first, task="work", attempt=1, body=first.body, eta=0.0, error=error
        )
        await app.backend.settle(
            [retry, Settlement.dead(second, task="work", attempt=1, error=error)]
        )
        queued = await _all(app, JobStatus.QUEUED, 100)
        assert [(j.id, j.attempt) for j in queued][-1] == (first.id, 2)
        assert await _all(app, JobStatus.RUNNING, 100) == []
        (dead,) = await _all(app, JobStatus.DEAD, 100)
        assert (dead.id, dead.status, dead.task) == (second.id, JobStatus.DEAD, "work")


async def test_the_scheduled_set_pages_on_after_the_last_job_has_left_it(prefix: str) -> None:
    app = asyncq.App(redis_url(prefix))

    @app.task(name="later")
    async def later(n: int) -> None:
        pass

    async with app:
        at = time.time() + 3600
        # Three jobs share one eta (the set orders them by id), two come after them.
        tied = [await later.options(at=at).enqueue(n) for n in range(3)]
        rest = [await later.options(at=at + n).enqueue(n) for n in (1, 2)]
        order = sorted(tied, key=lambda job: job.id) + rest

        listed = await _all(app, JobStatus.SCHEDULED, 2)
        assert [j.id for j in listed] == [job.id for job in order]
        assert {(j.status, j.task) for j in listed} == {(JobStatus.SCHEDULED, "later")}
        assert [j.eta for j in listed] == pytest.approx([at, at, at, at + 1, at + 2])

        # The job the first page ended on is cancelled: the next page starts where it stood.
        first = await app.backend.list_jobs("default", JobStatus.SCHEDULED, limit=2)
        assert await app.backend.store.cancel(first[-1].id, "default")
        after = first[-1].cursor
        rest_of_them = await app.backend.list_jobs(
            "default", JobStatus.SCHEDULED, limit=10, after=after
        )
        assert [j.id for j in rest_of_them] == [job.id for job in order[2:]]


async def test_a_job_waiting_for_its_retry_is_listed_as_failed(prefix: str) -> None:
    app = asyncq.App(redis_url(prefix))

    @app.task(name="flaky")
    async def flaky() -> None:
        pass

    async with app:
        job = await flaky.enqueue()
        (delivery,) = await app.backend.fetch(["default"], 1, timeout=0)
        eta = time.time() + 3600
        error = ErrorInfo("ValueError", "no")
        retry = Settlement.retry(
            delivery, task="flaky", attempt=1, body=delivery.body, eta=eta, error=error
        )
        await app.backend.settle([retry])
        (listed,) = await app.backend.list_jobs("default", JobStatus.SCHEDULED)
        assert (listed.id, listed.status, listed.attempt) == (job.id, JobStatus.FAILED, 2)
        assert listed.eta == pytest.approx(eta)


async def test_a_page_is_one_script_call(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = asyncq.App(redis_url(prefix))

    @app.task(name="work")
    async def work(n: int) -> None:
        pass

    async with app:
        await work.enqueue_many([(n,) for n in range(50)])
        await work.options(delay=3600).enqueue_many([(n,) for n in range(50)])
        trips = RoundTrips(redis_client(app), monkeypatch)
        for status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RUNNING):
            trips.commands.clear()
            trips.pipelines.clear()
            page = await app.backend.list_jobs("default", status, limit=40)
            assert len(page) == (0 if status is JobStatus.RUNNING else 40)
            sent = [*trips.commands, *(c for p in trips.pipelines for c in p)]
            assert [command[0] for command in sent] == ["EVALSHA"], status


async def test_a_state_that_is_not_kept_in_a_structure_is_refused(prefix: str) -> None:
    async with asyncq.App(redis_url(prefix)) as app:
        with pytest.raises(ValueError, match="succeeded"):
            await app.backend.list_jobs("default", JobStatus.SUCCEEDED)
