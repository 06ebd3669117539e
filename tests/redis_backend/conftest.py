"""Fixtures of the Redis-specific tests: a key prefix of the test's own on the shared Redis,
and a broker URL under it; the test's keys are deleted when it ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .redis_support import claimed_prefix, redis_url


@pytest.fixture
def prefix(unique: str) -> Iterator[str]:
    with claimed_prefix(unique) as prefix:
        yield prefix


@pytest.fixture
def url(prefix: str) -> str:
    return redis_url(prefix)
