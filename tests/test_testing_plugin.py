"""The asyncq.testing plugin itself: its public names, a core that never imports it, and
how a backend's requirements, clean-up and capabilities reach the tests that take a broker.
(tests/test_contract.py runs the suite; tests/test_third_party_backend.py runs it as
another distribution would.)"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import asyncq.testing
from asyncq.testing import BackendUnderTest, ContractSuite

TESTING_API = {
    "BackendUnderTest",
    "Broker",
    "ContractSuite",
    "Recorded",
    "SettleLog",
    "UrlFactory",
}


def test_all_is_the_documented_api_of_the_plugin() -> None:
    assert set(asyncq.testing.__all__) == TESTING_API
    for name in TESTING_API - {"UrlFactory"}:  # a type alias, documented where it is defined
        assert inspect.getdoc(getattr(asyncq.testing, name)), f"asyncq.testing.{name}"


def test_the_core_imports_neither_the_plugin_nor_pytest() -> None:
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys

        def load(package):
            for found in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
                if found.name not in ("asyncq.testing", "asyncq.__main__"):
                    module = importlib.import_module(found.name)
                    if found.ispkg:
                        load(module)

        load(importlib.import_module("asyncq"))
        loaded = sorted(m for m in sys.modules if m == "pytest" or m.startswith("asyncq.testing"))
        assert not loaded, loaded
        assert "asyncq.cli" in sys.modules and "asyncq.memory" in sys.modules
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def url(unique: str, options: object) -> str:
    return f"memory://{unique}"


def test_a_suite_names_at_least_one_backend_each_once() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ContractSuite()
    with pytest.raises(ValueError, match="unique in a suite: memory"):
        ContractSuite(BackendUnderTest("memory", url), BackendUnderTest("memory", url))
    assert repr(ContractSuite(BackendUnderTest("a", url), BackendUnderTest("b", url))) == (
        "ContractSuite(a, b)"
    )


OWN_TESTS = """
import pytest

from asyncq.testing import BackendUnderTest

checked = []
cleaned = []


def require():
    checked.append(1)
    if len(checked) > 1:
        raise AssertionError("requires ran twice")
    pytest.skip("the acme server is not running")


def memory_url(unique, options):
    return f"memory://{unique}"


@pytest.fixture(params=["down", "up"])
def asyncq_backend(request):
    if request.param == "down":
        return BackendUnderTest("down", memory_url, requires=require)
    return BackendUnderTest("up", memory_url, cleanup=cleaned.append)


def test_one(broker):
    assert broker.url().startswith("memory://t")


def test_two(app):
    assert app.backend.store.available


@pytest.mark.needs_leases
def test_three(broker):
    pass


def test_cleaned_after_each_test_on_up():
    assert len(cleaned) == 3
"""


def test_a_backends_own_tests_take_the_fixtures_by_overriding_asyncq_backend(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_own.py").write_text(OWN_TESTS)
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "asyncq.testing", "-p", "no:cacheprovider"]
        + ["-q", "-rs", "--strict-markers", "test_own.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed, 3 skipped" in done.stdout, done.stdout
    assert done.stdout.count("SKIPPED [1] test_own.py:") == 3
    assert done.stdout.count(": the acme server is not running") == 3


def test_a_contract_test_outside_a_suite_says_how_to_run_it(tmp_path: Path) -> None:
    (tmp_path / "test_alone.py").write_text("def test_alone(broker):\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "asyncq.testing", "-p", "no:cacheprovider"]
        + ["-q", "test_alone.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "binds an asyncq.testing.ContractSuite" in done.stdout, done.stdout
