"""procrastinate's worker process: ``python -m pg_peers.procrastinate_worker``.

A module of its own, so that procrastinate's App is built in ``pg_peers.procrastinate_peer``
(as the driver imports it), not in ``__main__``, which procrastinate warns about.
"""

from __future__ import annotations

import asyncio
import logging

from pg_peers.procrastinate_peer import run_worker

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run_worker())
