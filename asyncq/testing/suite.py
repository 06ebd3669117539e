"""What a backend package hands the contract suite: the backends to run it on, and where.

A :class:`BackendUnderTest` says how to reach one backend: a URL factory that keeps each
test apart from every other, a clean-up, and what it needs running. A
:class:`ContractSuite` bound to a name in a test module is where pytest collects the suite,
once per backend it names. What a backend can do (keep records, take back a lapsed lease)
is read from the backend itself, never from its name: see :data:`CAPABILITIES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from asyncq.backend import Backend

__all__ = [
    "CAPABILITIES",
    "BackendUnderTest",
    "Capability",
    "ContractSuite",
    "UrlFactory",
]

UrlFactory = Callable[[str, Mapping[str, object]], str]
"""``(unique, options) -> URL``: a broker URL for one test. ``unique`` is a name no other
test uses (put it in a key prefix, a queue prefix, a database name); ``options`` are the
backend options the test asks for (``visibility_timeout``, ``result_ttl``,
``max_message_size``), to put into the URL's query string. A backend without one of them
leaves it out: a broker that tracks consumer liveness itself has no visibility timeout."""

CONTRACT_DIR = Path(__file__).resolve().parent / "contract"
"""The suite's test modules."""


@dataclass(frozen=True, slots=True)
class BackendUnderTest:
    """One backend the suite runs on.

    ``name`` is the backend's part of a test id (``test_result_types_round_trip[redis-none]``),
    unique within a suite. ``cleanup(unique)`` runs after each test on this backend, passed
    or failed, to remove what the test left on a shared server (keys under its prefix).
    ``requires()`` runs before the first test on this backend and, when what the backend
    needs is not running, calls ``pytest.skip(...)`` or ``pytest.fail(...)`` saying what to
    start; its outcome stands for every later test of the session."""

    name: str
    url_factory: UrlFactory
    _: KW_ONLY
    cleanup: Callable[[str], None] | None = None
    requires: Callable[[], None] | None = None


class ContractSuite:
    """The contract suite, where a test module binds it to a name::

        contract = ContractSuite(BackendUnderTest("acme", acme_url, cleanup=drop_prefix))

    pytest collects every module of the suite under that test module, each test once per
    backend (``tests/test_contract.py::test_delays::test_delay_is_honoured[acme-0.3]``),
    with the fixtures of :mod:`asyncq.testing` (the plugin must be loaded:
    ``pytest_plugins = ["asyncq.testing"]`` in the top-level conftest.py)."""

    def __init__(self, *backends: BackendUnderTest) -> None:
        if not backends:
            raise ValueError("ContractSuite needs at least one BackendUnderTest")
        names = [b.name for b in backends]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"backend names must be unique in a suite: {', '.join(duplicates)}")
        self.backends: tuple[BackendUnderTest, ...] = backends

    def __repr__(self) -> str:
        return f"ContractSuite({', '.join(b.name for b in self.backends)})"

    @staticmethod
    def modules() -> list[Path]:
        """The suite's test modules, in name order."""
        return sorted(CONTRACT_DIR.glob("test_*.py"))


@dataclass(frozen=True, slots=True)
class Capability:
    """Something a backend may lack, and the marker that makes a test need it."""

    marker: str
    has: Callable[[Backend], bool]
    need: str
    """What the marked test needs."""
    lacking: str
    """How a backend shows it lacks it."""

    @property
    def reason(self) -> str:
        """The skip reason on a backend without it."""
        return f"needs {self.need}; {self.lacking}"


CAPABILITIES: Sequence[Capability] = (
    Capability(
        "needs_store",
        lambda backend: backend.store.available,
        "a job record store (results, status, cancellation, idempotency keys, workers)",
        "this backend keeps no records (backend.store.available is False)",
    ),
    Capability(
        "needs_leases",
        lambda backend: backend.lease_renewal_interval is not None,
        "a broker that takes a job back once its lease lapses",
        "this one tracks consumer liveness itself (lease_renewal_interval is None), so a "
        "live consumer keeps its jobs",
    ),
    Capability(
        "needs_priorities",
        lambda backend: backend.supports_priorities,
        "a broker that orders a queue's ready jobs by priority",
        "this one has none (backend.supports_priorities is False)",
    ),
    Capability(
        "needs_bodies",
        # Without a store at all, needs_store (which such a test has too) says why.
        lambda backend: backend.store.keeps_bodies or not backend.store.available,
        "a store that can read a waiting or running job's body (its arguments)",
        "this one cannot (backend.store.keeps_bodies is False: the broker holds the body)",
    ),
    Capability(
        "needs_minute_counts",
        lambda backend: backend.counts_minutes,
        "a broker that counts finished attempts per minute",
        "this one does not (backend.counts_minutes is False)",
    ),
    Capability(
        "needs_run_now",
        lambda backend: backend.can_run_now,
        "a broker that can make a waiting job due now",
        "this one cannot (backend.can_run_now is False)",
    ),
    Capability(
        "needs_lag",
        lambda backend: backend.measures_lag,
        "a broker that tells how long a queue's oldest pending job has waited",
        "this one cannot (backend.measures_lag is False)",
    ),
)
"""The capabilities a contract test can need, each read from a backend built from the
test's URL (not connected). A test marked ``@pytest.mark.needs_store`` is skipped, with the
reason, on a backend without that capability."""
