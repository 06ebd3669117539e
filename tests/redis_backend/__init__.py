"""The Redis-specific tests, beside the contract suite (tests/test_contract.py).

A package, so its modules and its conftest are ``redis_backend.*`` to pytest and mypy alike (no
second module named ``conftest``); named so as not to shadow the ``redis`` client library,
since tests/ is on ``sys.path`` in the tests and in every worker subprocess they start.
"""
