"""One module per job library, each giving the same jobs to ``amqp_compare.py``.

The jobs, the probe their handlers call and the :class:`peers.common.Peer` contract are the
Redis harness's (``peers/``); what is particular to RabbitMQ (the virtual host, the broker
URL, a probe for thread-based workers) is in :mod:`amqp_peers.common`.
"""

from __future__ import annotations

import peers
from peers.common import Peer

__all__ = ["LIBRARIES", "load"]

LIBRARIES: dict[str, str] = {
    "asyncq": "amqp_peers.asyncq_peer",
    "taskiq": "amqp_peers.taskiq_peer",
    "dramatiq": "amqp_peers.dramatiq_peer",
    "celery": "amqp_peers.celery_peer",
}
"""Library name (as ``--libs`` takes it) -> module defining its ``PEER``."""


def load(library: str) -> Peer:
    """Import one library's module; ImportError when the library is not installed."""
    return peers.load(library, LIBRARIES)
