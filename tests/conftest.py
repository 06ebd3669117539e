"""Fixtures shared by every test: the anyio backend, the shared PostgreSQL's catalogs
vacuumed after the session, and the private RabbitMQ cluster stopped after it. ``unique``
and the contract suite's fixtures come from the asyncq.testing plugin; tests/redis_backend
and tests/amqp_backend have conftests of their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import services
from amqp_backend.amqp_support import SESSION_CLUSTER


@pytest.fixture
def anyio_backend() -> str:
    # asyncq's broker clients are asyncio-only, so the tests run on asyncio.
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def _vacuum_postgres_catalogs() -> Iterator[None]:
    yield
    services.vacuum_postgres_catalogs()


@pytest.fixture(scope="session", autouse=True)
def _stop_rabbitmq_cluster() -> Iterator[None]:
    """The contract suite's amqp-cluster backend and tests/amqp_backend start the cluster
    when they first need it (amqp_support.SESSION_CLUSTER); it stops with the session."""
    yield
    SESSION_CLUSTER.stop()
