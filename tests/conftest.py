"""Fixtures shared by every test: the anyio backend. ``unique`` and the contract suite's
fixtures come from the asyncq.testing plugin; tests/redis_backend and tests/amqp_backend
have conftests of their own."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # asyncq's broker clients are asyncio-only, so the tests run on asyncio.
    return "asyncio"
