"""The contract suite (:mod:`asyncq.testing`) on every backend of this repository: memory,
sqlite (a file per test in a temporary directory), PostgreSQL (a schema per test in the
database ``test``), PostgreSQL through a PgBouncer in transaction mode (``pgbouncer=true``,
four server connections shared by every test's pools), Redis, a Redis Cluster of three
masters and three replicas (started once for the session), RabbitMQ with its records in
Redis, RabbitMQ with its records in PostgreSQL (a schema per test), RabbitMQ alone,
with no record store, and a private three-node RabbitMQ cluster on quorum queues (records
in Redis), reached through a URL naming all three nodes.

Each factory keeps a test apart from every other one by its unique name: a memory:// broker
of that name, or a key and queue prefix on the shared servers (Redis db 15).
"""

from __future__ import annotations

import atexit
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlencode

import pytest
import services
from amqp_backend.amqp_support import SESSION_CLUSTER
from postgres_backend.postgres_support import PrivatePgBouncer
from redis_backend.redis_cluster_support import cluster, delete_cluster_keys

from asyncq.testing import BackendUnderTest, ContractSuite


def _query(options: Mapping[str, object]) -> str:
    return f"?{urlencode(options)}" if options else ""


def memory_url(unique: str, options: Mapping[str, object]) -> str:
    return f"memory://{unique}{_query(options)}"


SQLITE_DIR = Path(tempfile.gettempdir()) / f"asyncq-contract-{os.getpid()}"


def sqlite_url(unique: str, options: Mapping[str, object]) -> str:
    return f"sqlite:///{SQLITE_DIR / unique}.db{_query(options)}"


def sqlite_cleanup(unique: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        (SQLITE_DIR / f"{unique}.db{suffix}").unlink(missing_ok=True)


def postgres_schema(unique: str) -> str:
    return unique.lower().replace("-", "_")


def postgres_url(unique: str, options: Mapping[str, object]) -> str:
    return f"{services.POSTGRES_URL}{_query({'schema': postgres_schema(unique), **options})}"


_BOUNCERS: list[PrivatePgBouncer] = []


def _bouncer() -> PrivatePgBouncer:
    """One PgBouncer for the session, started by the first test that needs it."""
    if not _BOUNCERS:
        bouncer = PrivatePgBouncer()
        bouncer.start()
        atexit.register(bouncer.remove)
        _BOUNCERS.append(bouncer)
    return _BOUNCERS[0]


def pgbouncer_url(unique: str, options: Mapping[str, object]) -> str:
    query = {"schema": postgres_schema(unique), "pgbouncer": "true", **options}
    return f"{_bouncer().url()}{_query(query)}"


def postgres_cleanup(unique: str) -> None:
    services.drop_postgres_schema(postgres_schema(unique))


def redis_url(unique: str, options: Mapping[str, object]) -> str:
    return f"{services.REDIS_URL}{_query({'prefix': unique, **options})}"


def redis_cluster_url(unique: str, options: Mapping[str, object]) -> str:
    return f"{cluster().url()}&{_query({'prefix': unique, **options})[1:]}"


def require_redis_cluster() -> None:
    cluster()


def _amqp_options(unique: str, options: Mapping[str, object]) -> dict[str, object]:
    # RabbitMQ tracks consumer liveness itself: there is no visibility timeout to set.
    # Queue names (and record keys) start with the unique prefix.
    return {"prefix": unique, **{k: v for k, v in options.items() if k != "visibility_timeout"}}


def amqp_url(unique: str, options: Mapping[str, object]) -> str:
    query = {"records": services.REDIS_URL, **_amqp_options(unique, options)}
    return f"{services.AMQP_URL}{_query(query)}"


def amqp_postgres_url(unique: str, options: Mapping[str, object]) -> str:
    records = f"{services.POSTGRES_URL}?schema={postgres_schema(unique)}"
    query = {"records": records, **_amqp_options(unique, options)}
    return f"{services.AMQP_URL}{_query(query)}"


def amqp_alone_url(unique: str, options: Mapping[str, object]) -> str:
    return f"{services.AMQP_URL}{_query(_amqp_options(unique, options))}"


def amqp_cluster_url(unique: str, options: Mapping[str, object]) -> str:
    # Quorum queues: the suite skips what the backend says they cannot do (priorities).
    query: dict[str, object] = {"records": services.REDIS_URL, "queue_type": "quorum"}
    query.update(_amqp_options(unique, options))
    return f"{SESSION_CLUSTER.get().hosts_url}{_query(query)}"


def require_amqp_cluster() -> None:
    """Redis for the records, and the cluster, started here for the session: in CI a
    missing rabbitmq-server fails the tests, elsewhere it skips them."""
    services.require_redis()
    SESSION_CLUSTER.get()


# The prefixes of the tests that ran on RabbitMQ: their queues and exchanges go at the end.
RABBITMQ_PREFIXES: list[str] = []


def amqp_cleanup(unique: str) -> None:
    RABBITMQ_PREFIXES.append(unique)
    services.delete_redis_keys(unique)


def amqp_postgres_cleanup(unique: str) -> None:
    RABBITMQ_PREFIXES.append(unique)
    postgres_cleanup(unique)


def require_rabbitmq_and_postgres() -> None:
    services.require_rabbitmq()
    services.require_postgres()


contract = ContractSuite(
    BackendUnderTest("memory", memory_url),
    BackendUnderTest("sqlite", sqlite_url, cleanup=sqlite_cleanup),
    BackendUnderTest(
        "postgres", postgres_url, cleanup=postgres_cleanup, requires=services.require_postgres
    ),
    BackendUnderTest(
        "postgres-pgbouncer",
        pgbouncer_url,
        cleanup=postgres_cleanup,
        requires=services.require_postgres,
    ),
    BackendUnderTest(
        "redis", redis_url, cleanup=services.delete_redis_keys, requires=services.require_redis
    ),
    BackendUnderTest(
        "redis-cluster",
        redis_cluster_url,
        cleanup=delete_cluster_keys,
        requires=require_redis_cluster,
    ),
    BackendUnderTest(
        "amqp", amqp_url, cleanup=amqp_cleanup, requires=services.require_rabbitmq_and_redis
    ),
    BackendUnderTest(
        "amqp-pg-records",
        amqp_postgres_url,
        cleanup=amqp_postgres_cleanup,
        requires=require_rabbitmq_and_postgres,
    ),
    BackendUnderTest(
        "amqp-cluster",
        amqp_cluster_url,
        # The cluster's queues go with it at the end of the session.
        cleanup=services.delete_redis_keys,
        requires=require_amqp_cluster,
    ),
    BackendUnderTest(
        "amqp-no-records",
        amqp_alone_url,
        cleanup=RABBITMQ_PREFIXES.append,
        requires=services.require_rabbitmq,
    ),
)


@pytest.fixture(scope="session", autouse=True)
def _delete_test_queues() -> Iterator[None]:
    """RabbitMQ queues cannot be listed by prefix without rabbitmqctl (about a second a
    call), so the contract tests' queues go once, at the end of the session."""
    yield
    services.delete_amqp_prefixes(RABBITMQ_PREFIXES)
