"""asyncq on its AMQP backend (RabbitMQ): ``peers.asyncq_peer`` pointed at the benchmark's
virtual host, with its job records in Redis (:func:`amqp_peers.common.asyncq_url`).

The backend ships with asyncq's ``amqp`` extra, so a missing one is an install error that
each workload reports, not a reason to skip the library.
"""

from __future__ import annotations

import os

from .common import asyncq_url

# Before the import below builds the App; worker processes inherit it from the driver.
os.environ["BENCH_ASYNCQ_BROKER"] = asyncq_url()

from peers.asyncq_peer import BROKER, AsyncqPeer, app

__all__ = ["PEER", "app"]


class AmqpAsyncqPeer(AsyncqPeer):
    settings = (
        f"URL {BROKER}: job records (status, results) in that Redis database, kept a day "
        "(result_ttl, the default)"
        if "records=" in BROKER
        else f"URL {BROKER}: no job records (RabbitMQ alone: no results, status or keys)",
        "publisher confirms (always on in asyncq): each enqueue and each bulk batch waits for them",
    )

    def skip_reason(self) -> str | None:
        return None


PEER = AmqpAsyncqPeer()
