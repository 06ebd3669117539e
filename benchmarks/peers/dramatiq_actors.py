"""dramatiq's side of the harness, shared by its Redis and its RabbitMQ peer: the probe
opened in the worker process, and the three actors, on the broker each peer builds."""

from __future__ import annotations

from typing import Any

import dramatiq
from amqp_peers.common import sync_probe
from dramatiq.middleware import Middleware

__all__ = ["Actors", "on"]


class ProbeMiddleware(Middleware):
    """Opens the probe in the worker process, before its consumers start."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        sync_probe.open()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        sync_probe.close()


class Actors:
    """The ``noop``, ``sleep`` and ``latency`` actors on one broker (made its global one)."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        broker.add_middleware(ProbeMiddleware())
        dramatiq.set_broker(broker)

        @dramatiq.actor(actor_name="noop", broker=broker)
        def noop() -> None:
            sync_probe.count()

        @dramatiq.actor(actor_name="sleep", broker=broker)
        def sleep() -> None:
            sync_probe.sleep_then_count()

        @dramatiq.actor(actor_name="latency", broker=broker)
        def latency(sent: float) -> None:
            sync_probe.latency(sent)

        self.by_kind: dict[str, Any] = {"noop": noop, "sleep": sleep}
        self.latency: Any = latency


def on(broker: dramatiq.Broker) -> Actors:
    return Actors(broker)
