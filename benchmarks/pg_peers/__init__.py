"""One module per job library, each giving the same jobs to ``postgres_compare.py``.

Every module defines three handlers with the same cost in every library (see
:mod:`pg_peers.common`), the library's worker settings, and a :class:`pg_peers.common.Peer`
that installs the library's tables in a PostgreSQL schema of its own, enqueues jobs (alone,
in bulk, and in the caller's transaction beside a business row) and names the command that
runs one worker process.

Only :mod:`pg_peers.common` is imported with the package: a library's module is imported
when it is asked for, so asyncq's own virtualenv (without pgqueuer or procrastinate) runs
the same driver for asyncq alone.
"""

from __future__ import annotations

import importlib

from .common import Peer

__all__ = ["LIBRARIES", "load"]

LIBRARIES: dict[str, str] = {
    "asyncq": "pg_peers.asyncq_peer",
    "pgqueuer": "pg_peers.pgqueuer_peer",
    "procrastinate": "pg_peers.procrastinate_peer",
}
"""Library name (as ``--libs`` takes it) -> module defining its ``PEER``."""


def load(library: str) -> Peer:
    """Import one library's module; ImportError when the library is not installed."""
    peer = importlib.import_module(LIBRARIES[library]).PEER
    assert isinstance(peer, Peer)
    return peer
