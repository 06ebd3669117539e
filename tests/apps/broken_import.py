"""An app module that cannot be imported: it needs a package that is not installed."""

from __future__ import annotations

import a_dependency_that_is_not_installed  # type: ignore[import-not-found]  # noqa: F401

import asyncq

app = asyncq.App("memory://cli-broken")
