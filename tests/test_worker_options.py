"""A worker built with an option out of range fails at once, naming the option."""

from __future__ import annotations

from typing import Any

import pytest

import asyncq
from asyncq.worker import Worker

BAD_OPTIONS = {
    "concurrency": ({"concurrency": 0}, "concurrency must be >= 1"),
    "prefetch": ({"concurrency": 2, "prefetch": 3}, "prefetch must be between 0 and concurrency"),
    "shutdown_timeout": ({"shutdown_timeout": -1}, "shutdown_timeout must be >= 0"),
    "heartbeat_interval": ({"heartbeat_interval": 0}, "heartbeat_interval must be > 0 seconds"),
    "metrics_interval": ({"metrics_interval": -2.5}, "metrics_interval must be > 0 seconds"),
    "wait_for_broker": ({"wait_for_broker": -1}, "wait_for_broker must be >= 0 seconds"),
    "queues": ({"queues": ["a", ""]}, "queues must be non-empty queue names"),
}


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_option_is_a_value_error(unique: str, options: dict[str, Any], message: str) -> None:
    app = asyncq.App(f"memory://{unique}")
    with pytest.raises(ValueError, match=message):
        Worker(app, **options)
