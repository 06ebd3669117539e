"""Fixtures of the contract suite: every test in tests/contract/ runs once per backend.

A backend joins the suite with one entry in ``BACKENDS``: a function from the test's unique
name and URL options to a broker URL that keeps the test apart from every other one, e.g.
``lambda unique, options: "redis://127.0.0.1:6379/15" + _query({"prefix": unique, **options})``.
The options tests ask for are ``visibility_timeout`` and ``result_ttl`` (seconds); a factory
for a broker that tracks consumer liveness itself (AMQP) drops ``visibility_timeout``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

import anyio
import pytest
import services
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import asyncq
from asyncq.backend import Backend, Outcome, Settlement

UrlFactory = Callable[[str, Mapping[str, object]], str]


def _query(options: Mapping[str, object]) -> str:
    return f"?{urlencode(options)}" if options else ""


def memory_url(unique: str, options: Mapping[str, object]) -> str:
    return f"memory://{unique}{_query(options)}"


def redis_url(unique: str, options: Mapping[str, object]) -> str:
    # The prefix keeps each test's keys apart; db 15 keeps them apart from anything else.
    return f"{services.REDIS_URL}{_query({'prefix': unique, **options})}"


def amqp_url(unique: str, options: Mapping[str, object]) -> str:
    # RabbitMQ tracks consumer liveness itself: there is no visibility timeout to set.
    # Queue names and record keys both start with the unique prefix.
    kept = {k: v for k, v in options.items() if k != "visibility_timeout"}
    query = {"records": services.REDIS_URL, "prefix": unique, **kept}
    return f"{services.AMQP_URL}{_query(query)}"


BACKENDS: dict[str, UrlFactory] = {
    "memory": memory_url,
    "redis": redis_url,
    "amqp": amqp_url,
}

# What each backend needs running, checked once per session (fails in CI, skips elsewhere).
REQUIRES: dict[str, Callable[[], None]] = {
    "redis": services.require_redis,
    "amqp": services.require_rabbitmq_and_redis,
}

FAST_BACKOFF = asyncq.Backoff(base=0.01, cap=0.05)
"""Retries in milliseconds, so tests of retry paths stay fast."""


@dataclass(frozen=True, slots=True)
class Broker:
    """One backend under test, with a name no other test uses."""

    name: str
    unique: str
    make_url: UrlFactory

    def url(self, **options: object) -> str:
        """The broker URL for this test, with backend options such as visibility_timeout."""
        return self.make_url(self.unique, options)

    def app(self, **options: object) -> asyncq.App:
        """A fresh App on this test's broker; ``options`` go into the URL."""
        # A short shutdown timeout keeps a failing test from hanging on a blocked handler.
        return asyncq.App(self.url(**options), backoff=FAST_BACKOFF, shutdown_timeout=2.0)


@pytest.fixture(params=sorted(BACKENDS))
def broker(request: pytest.FixtureRequest, unique: str) -> Iterator[Broker]:
    name: str = request.param
    if name in REQUIRES:
        REQUIRES[name]()
    yield Broker(name, unique, BACKENDS[name])
    if name in ("redis", "amqp"):
        services.delete_redis_keys(unique)


@pytest.fixture(scope="session", autouse=True)
def _delete_test_queues() -> Iterator[None]:
    """RabbitMQ queues cannot be listed by prefix without rabbitmqctl (about a second a
    call), so the contract tests' queues go once, at the end of the session."""
    yield
    services.delete_amqp_entities(r"t[0-9a-f]{12}\.")


@pytest.fixture
def app(broker: Broker) -> asyncq.App:
    """An App on this test's broker; tests register their tasks on it."""
    return broker.app()


class SettleLog:
    """Records every settlement the real backend has made, so a test can wait for a job to
    be settled (retry scheduled, dead-lettered, ...) instead of sleeping.

    This wraps the backend object's own ``settle``; the backend still does all the work.
    """

    def __init__(self, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        self.outcomes: dict[str, list[Outcome]] = {}
        self._changed: anyio.Event | None = None
        real = backend.settle

        async def settle(settlements: Sequence[Settlement]) -> None:
            await real(settlements)
            for s in settlements:
                self.outcomes.setdefault(s.delivery.id, []).append(s.outcome)
            if self._changed is not None:
                self._changed.set()
                self._changed = None

        monkeypatch.setattr(backend, "settle", settle)

    async def wait(self, job_id: str, count: int = 1, *, timeout: float = 5.0) -> list[Outcome]:
        """Wait until ``job_id`` has been settled ``count`` times; return its outcomes."""
        with anyio.fail_after(timeout):
            while len(self.outcomes.get(job_id, ())) < count:
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()
        return self.outcomes[job_id]


@pytest.fixture
def settled(app: asyncq.App, monkeypatch: pytest.MonkeyPatch) -> SettleLog:
    """The settlements of ``app``'s backend, to wait on."""
    return SettleLog(app.backend, monkeypatch)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider for this test only (the global one can be set once per
    process), recording into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    yield exporter
    provider.shutdown()
