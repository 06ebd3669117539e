"""An app whose broker is down: its backend fails every operation with BrokerUnavailable,
as a real backend does when it cannot connect (this is the error the CLI must report)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Self

import asyncq
from asyncq.backend import Delivery, Envelope, Settlement
from asyncq.records import JobListing
from asyncq.store import JobStore


def _down() -> NoReturn:
    raise asyncq.BrokerUnavailable("connection refused (down://127.0.0.1:1)")


class DownStore(JobStore):
    async def watch_cancellations(self, on_cancel: Callable[[str], None]) -> None:
        _down()

    async def job_info(self, job_id: str, queue: str) -> asyncq.JobInfo | None:
        _down()

    async def wait_finished(
        self, job_id: str, queue: str, timeout: float | None
    ) -> asyncq.JobInfo | None:
        _down()

    async def cancel(self, job_id: str, queue: str) -> bool:
        _down()

    async def heartbeat(self, worker: asyncq.WorkerInfo, ttl: float) -> None:
        _down()

    async def deregister(self, worker_id: str) -> None:
        _down()

    async def workers(self, *, include_gone: bool = False) -> list[asyncq.WorkerInfo]:
        _down()


class DownBackend(asyncq.Backend):
    system = "down"

    @property
    def store(self) -> JobStore:
        return DownStore()

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls()

    async def connect(self) -> None:
        _down()

    async def enqueue(self, envelopes: Sequence[Envelope]) -> list[str]:
        _down()

    async def fetch(
        self, queues: Sequence[str], limit: int, *, timeout: float | None
    ) -> list[Delivery]:
        _down()

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        _down()

    async def queue_stats(self, queues: Sequence[str] | None = None) -> list[asyncq.QueueStats]:
        _down()

    async def dead_letters(
        self, queue: str, *, limit: int = 100, after: str | None = None
    ) -> list[asyncq.DeadLetter]:
        _down()

    async def purge_dead(self, queue: str, ids: Sequence[str] | None = None) -> int:
        _down()

    async def purge_queue(self, queue: str, *, limit: int = 1000) -> int:
        _down()

    async def remove_queue(self, queue: str) -> None:
        _down()

    async def list_jobs(
        self, queue: str, status: asyncq.JobStatus, *, limit: int = 100, after: str | None = None
    ) -> list[JobListing]:
        _down()


app = asyncq.App(DownBackend())


@app.task(name="noop")
async def noop(*args: Any) -> None:
    pass
