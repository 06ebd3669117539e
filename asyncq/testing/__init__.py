"""asyncq's contract suite as a pytest plugin: every semantic a backend must give, stated
once, run on any backend that asks for it.

A backend package runs the whole suite with two small files in its tests::

    # conftest.py (the top-level one)
    pytest_plugins = ["asyncq.testing"]

    # test_asyncq_contract.py
    from urllib.parse import urlencode

    from asyncq.testing import BackendUnderTest, ContractSuite

    def acme_url(unique, options):  # a name no other test uses, and the options a test asks for
        return f"acme://127.0.0.1:7000/?{urlencode({'prefix': unique, **options})}"

    contract = ContractSuite(
        BackendUnderTest("acme", acme_url, cleanup=drop_prefix, requires=require_acme_server),
    )

then ``pytest``. Each module of the suite (``asyncq/testing/contract/``) is collected under
that test module and each test that takes a broker runs once per backend of the suite:
``test_asyncq_contract.py::test_retries::test_reject_dead_letters_at_once_without_retrying[acme]``.
The backend is found by its URL scheme, through the ``asyncq.backends`` entry point its
package registers, like any other.

A test that needs what not every backend has is marked with the capability
(``@pytest.mark.needs_store``, ``@pytest.mark.needs_leases``,
``@pytest.mark.needs_priorities``, ``@pytest.mark.needs_lag``,
``@pytest.mark.needs_bodies``, ``@pytest.mark.needs_minute_counts``,
``@pytest.mark.needs_run_now``) and skipped, with the reason, on a backend without it;
capabilities are read from the backend (``store.available``, ``lease_renewal_interval``,
``supports_priorities``, ``measures_lag``, ``store.keeps_bodies``, ``counts_minutes``,
``can_run_now``), never from its name. A
test whose semantic shows without job records (through handlers, settlements, queue stats,
dead letters) is not marked: it runs on every backend and checks the records on top through
:class:`Recorded`, where they are kept.

The suite runs on anyio's pytest plugin (its entry point loads it; ``-p anyio`` where plugin
autoloading is off) and needs the OpenTelemetry SDK and pydantic
(``pip install 'asyncq[testing]'``). Nothing in asyncq's core imports this package.
"""

from __future__ import annotations

from .plugin import Broker, Recorded, SettleLog
from .suite import BackendUnderTest, ContractSuite, UrlFactory

__all__ = [
    "BackendUnderTest",
    "Broker",
    "ContractSuite",
    "Recorded",
    "SettleLog",
    "UrlFactory",
]

# Naming this package in ``pytest_plugins`` (or ``-p asyncq.testing``) loads the plugin.
pytest_plugins = ["asyncq.testing.plugin"]
