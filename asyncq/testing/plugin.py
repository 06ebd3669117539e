"""The pytest plugin of :mod:`asyncq.testing`: it collects the contract suite where a test
module binds a :class:`~asyncq.testing.ContractSuite`, runs each test that takes a broker
once per backend of the suite, and gives the tests their fixtures:

* ``asyncq_backend``: the :class:`~asyncq.testing.BackendUnderTest` of this run. The suite
  sets it; a backend's own tests that want the fixtures below override it.
* ``broker``: a :class:`Broker` on that backend under a name no other test uses. Before the
  test it runs the backend's ``requires`` and skips a test whose capability marker
  (``needs_store``, ``needs_leases``, ``needs_priorities``, ``needs_lag``,
  ``needs_bodies``, ``needs_minute_counts``, ``needs_run_now``) the backend
  lacks; after it, the backend's ``cleanup``.
* ``app`` (an App on that broker), ``settled`` (a :class:`SettleLog`), ``recorded`` (a
  :class:`Recorded`), ``spans`` (an in-memory OpenTelemetry exporter), ``unique`` (a fresh
  name).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import asyncq
from asyncq.backend import Backend, Outcome, Settlement, resolve_backend

from .suite import CAPABILITIES, BackendUnderTest, ContractSuite, UrlFactory

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["Broker", "ContractModule", "Recorded", "SettleLog"]

FAST_BACKOFF = asyncq.Backoff(base=0.01, cap=0.05)
"""Retries in milliseconds, so tests of retry paths stay fast."""


# -- collection -------------------------------------------------------------------------------
class ContractModule(pytest.Module):
    """One module of the contract suite, collected under the test module that binds the
    suite, so its node ids (and ``--lf``, ``-k``, reruns by id) go through that module."""

    suite: ContractSuite


def pytest_configure(config: pytest.Config) -> None:
    for capability in CAPABILITIES:
        config.addinivalue_line(
            "markers", f"{capability.marker}: needs {capability.need}; skipped where it is lacking"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> list[ContractModule] | None:
    if not isinstance(obj, ContractSuite) or not isinstance(collector, pytest.Module):
        return None
    modules = []
    for path in obj.modules():
        module = ContractModule.from_parent(
            collector, path=path, name=path.stem, nodeid=f"{collector.nodeid}::{path.stem}"
        )
        module.suite = obj
        modules.append(module)
    return modules


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "asyncq_backend" not in metafunc.fixturenames:
        return
    for node in metafunc.definition.listchain():
        if isinstance(node, ContractModule):
            backends = node.suite.backends
            metafunc.parametrize("asyncq_backend", backends, ids=[b.name for b in backends])
            return


# -- fixtures ---------------------------------------------------------------------------------
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


@pytest.fixture
def unique() -> str:
    """A name no other test uses: for memory:// brokers, key prefixes, queue names."""
    return f"t{os.urandom(6).hex()}"


@pytest.fixture
def asyncq_backend() -> BackendUnderTest:
    """The backend under test; a ContractSuite gives each of its tests one of its own."""
    pytest.fail(
        "no backend under test: the contract suite runs where a test module binds an "
        "asyncq.testing.ContractSuite(...); other tests taking `broker` or `app` override "
        "the asyncq_backend fixture",
        pytrace=False,
    )


_REQUIREMENTS = pytest.StashKey[dict[BackendUnderTest, BaseException | None]]()


def _check_requirements(config: pytest.Config, backend: BackendUnderTest) -> None:
    """Run ``backend.requires`` once a session; later tests get its first outcome."""
    if backend.requires is None:
        return
    checked = config.stash.setdefault(_REQUIREMENTS, {})
    if backend not in checked:
        try:
            backend.requires()
        except (Exception, pytest.skip.Exception, pytest.fail.Exception) as exc:
            checked[backend] = exc
            raise
        checked[backend] = None
    outcome = checked[backend]
    if outcome is not None:
        raise outcome


def _lacking(node: pytest.Item, url: str) -> list[str]:
    """Why the backend of ``url`` cannot run ``node``: the capabilities it is marked as
    needing that the backend lacks."""
    needed = [c for c in CAPABILITIES if node.get_closest_marker(c.marker) is not None]
    if not needed:
        return []
    backend: Backend = resolve_backend(url)  # built, not connected: what it is, not its state
    return [c.reason for c in needed if not c.has(backend)]


@pytest.fixture
def broker(
    request: pytest.FixtureRequest, asyncq_backend: BackendUnderTest, unique: str
) -> Iterator[Broker]:
    """This test's broker on the backend under test."""
    _check_requirements(request.config, asyncq_backend)
    broker = Broker(asyncq_backend.name, unique, asyncq_backend.url_factory)
    lacking = _lacking(request.node, broker.url())
    if lacking:
        pytest.skip("; ".join(lacking))
    try:
        yield broker
    finally:
        if asyncq_backend.cleanup is not None:
            asyncq_backend.cleanup(unique)


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


class Recorded:
    """Checks of a job's record (its status, result, attempt, error), made where the
    backend keeps records and passed over where it keeps none (``backend.store.available``
    is False, as on RabbitMQ without ``records=``).

    A contract test states a semantic through what every backend shows (the handlers, the
    settlements, queue stats, dead letters) and checks the record through this on top, so
    the one test holds on every backend and asserts the record wherever there is one."""

    def __init__(self, backend: Backend) -> None:
        self.kept = backend.store.available
        """Whether the backend keeps job records: where it does not, every check passes."""

    async def status(self, job: asyncq.Job[Any], expected: asyncq.JobStatus) -> None:
        """The job's recorded status is ``expected``."""
        if self.kept:
            status = await job.status()
            assert status is expected, f"job {job.id} is {status}, not {expected}"

    async def result(self, job: asyncq.Job[Any], expected: object, *, timeout: float = 5.0) -> None:
        """The job's result, waited for up to ``timeout``, is ``expected``."""
        if self.kept:
            result = await job.result(timeout=timeout)
            assert result == expected, f"job {job.id} returned {result!r}, not {expected!r}"

    async def failed(
        self, job: asyncq.Job[Any], match: str | None = None, *, timeout: float = 5.0
    ) -> asyncq.JobFailed | None:
        """Waiting for the job's result, up to ``timeout``, raises :class:`~asyncq.JobFailed`
        (its message matching the regular expression ``match``); return it, for more checks
        (None where the backend keeps no records)."""
        if not self.kept:
            return None
        with pytest.raises(asyncq.JobFailed, match=match) as failed:
            await job.result(timeout=timeout)
        return failed.value

    async def info(self, job: asyncq.Job[Any]) -> asyncq.JobInfo | None:
        """The job's record; None where the backend keeps none, for ``if info := ...``."""
        return await job.info() if self.kept else None


@pytest.fixture
def recorded(app: asyncq.App) -> Recorded:
    """Checks of the records of ``app``'s jobs, made where its backend keeps them."""
    return Recorded(app.backend)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider for this test only (the global one can be set once per
    process), recording into memory."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    yield exporter
    provider.shutdown()
