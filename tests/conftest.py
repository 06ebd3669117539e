"""Fixtures shared by every test: the anyio backend, and the shared PostgreSQL's catalogs
vacuumed after the session. ``unique`` and the contract suite's
fixtures come from the asyncq.testing plugin; tests/redis_backend and tests/amqp_backend
have conftests of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import services


@pytest.fixture
def anyio_backend() -> str:
    # asyncq's broker clients are asyncio-only, so the tests run on asyncio.
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _vacuum_postgres_catalogs() -> Iterator[None]:
    yield
    services.vacuum_postgres_catalogs()
