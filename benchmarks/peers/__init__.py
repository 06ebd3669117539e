"""One module per job library, each giving the same jobs to ``redis_compare.py``.

Every module defines three handlers with the same cost in every library (see
:mod:`peers.common`), the library's worker settings, and a :class:`peers.common.Peer`
that enqueues jobs and names the command that runs one worker process.
"""

from __future__ import annotations

import importlib

from .common import Peer

__all__ = ["LIBRARIES", "load"]

LIBRARIES: dict[str, str] = {
    "asyncq": "peers.asyncq_peer",
    "arq": "peers.arq_peer",
    "saq": "peers.saq_peer",
    "streaq": "peers.streaq_peer",
    "taskiq": "peers.taskiq_peer",
    "dramatiq": "peers.dramatiq_peer",
}
"""Library name (as ``--libs`` takes it) -> module defining its ``PEER``."""


def load(library: str, libraries: dict[str, str] = LIBRARIES) -> Peer:
    """Import one library's module (from ``libraries``); ImportError when the library is
    not installed."""
    peer = importlib.import_module(libraries[library]).PEER
    assert isinstance(peer, Peer)
    return peer
