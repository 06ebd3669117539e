"""A backend from another distribution runs the whole contract suite the way its author
would: its package registers a URL scheme in the ``asyncq.backends`` entry-point group, its
tests' conftest.py loads the asyncq.testing plugin, a test module binds a ContractSuite,
and ``pytest`` runs in a child process.

The backend is the memory backend under the ``acme://`` scheme; ``acme-bare://`` is the
same with no record store, so the run on it shows the suite skipping exactly the tests
marked ``needs_store``, and nothing else failing for the want of one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import asyncq.testing

pytestmark = pytest.mark.slow

PACKAGE = '''
"""A third-party asyncq backend: acme://NAME, the memory backend under a scheme of its own."""

from asyncq.memory import MemoryBackend
from asyncq.store import JobStore, MissingStore


class AcmeBackend(MemoryBackend):
    system = "acme"


class BareAcmeBackend(AcmeBackend):
    """acme-bare://NAME: as a broker that keeps no job records."""

    _no_store = MissingStore("acme-bare:// keeps no records; use acme://")

    @property
    def store(self) -> JobStore:
        return self._no_store
'''

ENTRY_POINTS = """
[asyncq.backends]
acme = asyncq_acme:AcmeBackend
acme-bare = asyncq_acme:BareAcmeBackend
"""

CONFTEST = """
pytest_plugins = ["asyncq.testing"]
"""

PYPROJECT = """
[tool.pytest.ini_options]
addopts = "-ra --strict-config --strict-markers -p no:cacheprovider"
testpaths = ["tests"]
xfail_strict = true
filterwarnings = ["error"]
"""

TEST_MODULE = """
from asyncq.testing import BackendUnderTest, ContractSuite


def {name}_url(unique, options):
    query = "&".join(f"{{k}}={{v}}" for k, v in options.items())
    return f"{scheme}://{{unique}}?{{query}}"


contract = ContractSuite(BackendUnderTest("{name}", {name}_url))
"""

# Loaded with -p: what each collected test is marked with and takes, and how it ended.
REPORTER = """
import json
import os

plan = {}


def pytest_collection_modifyitems(items):
    for item in items:
        plan[item.nodeid] = {
            "needs_store": item.get_closest_marker("needs_store") is not None,
            "takes_broker": "broker" in item.fixturenames,
            "outcome": None,
            "reason": None,
        }


def pytest_runtest_logreport(report):
    entry = plan[report.nodeid]
    if report.failed:
        entry["outcome"] = "failed"
    elif report.skipped and entry["outcome"] is None:
        entry["outcome"], entry["reason"] = "skipped", report.longrepr[2]
    elif report.when == "call" and entry["outcome"] is None:
        entry["outcome"] = "passed"


def pytest_sessionfinish(session):
    with open(os.environ["KIT_REPORT"], "w") as f:
        json.dump(plan, f)
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture(scope="module")
def third_party(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distribution ``asyncq-acme`` as pip would install it (a package and its dist-info
    in a site directory), and its project's tests."""
    root = tmp_path_factory.mktemp("acme")
    site = root / "site"
    write(site / "asyncq_acme" / "__init__.py", PACKAGE)
    dist_info = site / "asyncq_acme-1.0.dist-info"
    write(dist_info / "METADATA", "Metadata-Version: 2.1\nName: asyncq-acme\nVersion: 1.0\n")
    write(dist_info / "entry_points.txt", ENTRY_POINTS)
    project = root / "project"
    write(project / "pyproject.toml", PYPROJECT)
    write(project / "tests" / "conftest.py", CONFTEST)
    write(project / "tests" / "test_contract.py", TEST_MODULE.format(name="acme", scheme="acme"))
    write(
        project / "tests" / "test_contract_bare.py",
        TEST_MODULE.format(name="bare", scheme="acme-bare"),
    )
    write(site / "kit_reporter.py", REPORTER)
    return root


def run_kit(root: Path, module: str) -> tuple[dict[str, dict[str, Any]], float]:
    """``pytest tests/MODULE`` in the third party's project; each test's plan and outcome,
    and how long the run took."""
    report = root / f"{module}.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(root / "site"),
        "KIT_REPORT": str(report),
    }
    env.pop("PYTEST_ADDOPTS", None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "kit_reporter", f"tests/{module}.py"],
        cwd=root / "project",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    plan: dict[str, dict[str, Any]] = json.loads(report.read_text())
    return plan, took


def contract_modules(plan: dict[str, dict[str, Any]]) -> set[str]:
    return {nodeid.split("::")[1] for nodeid in plan}


def test_a_third_party_backend_runs_the_whole_suite(third_party: Path) -> None:
    plan, took = run_kit(third_party, "test_contract")
    print(f"the contract suite on acme:// took {took:.1f} s ({len(plan)} tests)")
    assert contract_modules(plan) == {p.stem for p in asyncq.testing.ContractSuite.modules()}
    outcomes = {nodeid: entry["outcome"] for nodeid, entry in plan.items()}
    assert set(outcomes.values()) == {"passed"}, outcomes
    # Every test that takes a broker ran on acme://; the others (no broker) ran once.
    on_acme = {nodeid for nodeid in plan if "acme" in nodeid.partition("[")[2][:-1].split("-")}
    assert on_acme == {nodeid for nodeid, entry in plan.items() if entry["takes_broker"]}


def test_without_a_store_exactly_the_tests_that_need_one_are_skipped(third_party: Path) -> None:
    plan, took = run_kit(third_party, "test_contract_bare")
    print(f"the contract suite on acme-bare:// took {took:.1f} s ({len(plan)} tests)")
    skipped = {nodeid for nodeid, entry in plan.items() if entry["outcome"] == "skipped"}
    marked = {nodeid for nodeid, e in plan.items() if e["needs_store"] and e["takes_broker"]}
    assert skipped == marked
    assert {e["outcome"] for n, e in plan.items() if n not in skipped} == {"passed"}
    reasons = {plan[nodeid]["reason"] for nodeid in skipped}
    assert reasons == {
        "Skipped: needs a job record store (results, status, cancellation, idempotency keys, "
        "workers); this backend keeps no records (backend.store.available is False)"
    }
