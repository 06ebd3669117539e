"""Fixtures of the RabbitMQ-specific tests: the prefixes of one module's tests, each test's
own prefix for queue names and record keys, a broker URL with either record store, and the
session's three-node cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import services

from .amqp_support import (
    SESSION_CLUSTER,
    Prefixes,
    PrivateCluster,
    amqp_postgres_records_url,
    amqp_url,
    records_schema,
)


@pytest.fixture(scope="module")
def prefixes() -> Iterator[Prefixes]:
    """The prefixes of one module's RabbitMQ tests; their queues and exchanges are deleted
    when the module is done."""
    prefixes = Prefixes()
    try:
        yield prefixes
    finally:
        prefixes.delete_entities()


@pytest.fixture
def prefix(prefixes: Prefixes, unique: str) -> Iterator[str]:
    """This test's prefix for queue names and record keys; its Redis keys go when it ends."""
    with prefixes.claim(unique) as prefix:
        yield prefix


@pytest.fixture(params=["redis", "postgres"], ids=["redis-records", "postgres-records"])
def records_url(request: pytest.FixtureRequest, prefix: str) -> Iterator[str]:
    """A broker URL on the local RabbitMQ with this test's prefix, its job records in Redis
    or in PostgreSQL (a schema of the test's own, dropped after)."""
    if request.param == "redis":
        yield amqp_url(prefix)
        return
    services.require_postgres()
    try:
        yield amqp_postgres_records_url(prefix)
    finally:
        services.drop_postgres_schema(records_schema(prefix))


@pytest.fixture(scope="session")
def rabbitmq_cluster() -> PrivateCluster:
    """The session's three-node RabbitMQ cluster, started on first use; tests/conftest.py
    stops it when the session ends (the contract suite's amqp-cluster backend shares it)."""
    return SESSION_CLUSTER.get()
