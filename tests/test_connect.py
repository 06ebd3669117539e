"""Opening an App whose broker cannot be reached."""

from __future__ import annotations

import pytest

import asyncq
from asyncq.memory import MemoryBackend

pytestmark = pytest.mark.anyio


class HalfConnects(MemoryBackend):
    """Opens something, then finds the broker unreachable, as the AMQP backend does when its
    record store answers and RabbitMQ does not."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.open = 0

    async def connect(self) -> None:
        self.open += 1
        raise asyncq.BrokerUnavailable("connection refused")

    async def close(self) -> None:
        self.open -= 1


async def test_a_failed_connect_leaves_nothing_open(unique: str) -> None:
    backend = HalfConnects(unique)
    app = asyncq.App(backend)
    for _ in range(2):  # as a worker waiting for its broker tries again
        with pytest.raises(asyncq.BrokerUnavailable):
            async with app:
                pass
        assert backend.open == 0
