"""Fixtures of the PostgreSQL-specific tests: a schema of the test's own in the database
``test``, dropped at the end."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import services


@pytest.fixture
def schema() -> Iterator[str]:
    services.require_postgres()
    name = f"t{os.urandom(6).hex()}"
    yield name
    services.drop_postgres_schema(name)


@pytest.fixture
def url(schema: str) -> str:
    return f"{services.POSTGRES_URL}?schema={schema}"


@pytest.fixture
async def conn() -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, as an application would hold one."""
    connection = await asyncpg.connect(services.POSTGRES_URL)
    try:
        yield connection
    finally:
        await connection.close()
