"""Fixtures shared by the tests: the anyio backend, RabbitMQ prefixes (``unique`` comes from
the asyncq.testing plugin)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from amqp_support import Prefixes


@pytest.fixture
def anyio_backend() -> str:
    # asyncq's broker clients are asyncio-only, so the tests run on asyncio.
    return "asyncio"


# -- tests/amqp -------------------------------------------------------------------------------
# Here rather than in a conftest of their own, which mypy would take for a second module
# named "conftest"; amqp_support is importable once a test of tests/amqp is collected.
@pytest.fixture(scope="module")
def prefixes() -> Iterator[Prefixes]:
    """The prefixes of one module's RabbitMQ tests; their queues and exchanges are deleted
    when the module is done."""
    from amqp_support import Prefixes

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
