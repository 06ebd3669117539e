"""asyncq on its AMQP backend (RabbitMQ): ``peers.asyncq_peer`` pointed at the benchmark's
virtual host. Until an ``amqp`` backend is registered, the driver reports it as skipped."""

from __future__ import annotations

import os

from .common import amqp_url

# Before the import below builds the App; worker processes inherit it from the driver.
os.environ["BENCH_ASYNCQ_BROKER"] = amqp_url()

from peers.asyncq_peer import PEER, app

__all__ = ["PEER", "app"]
