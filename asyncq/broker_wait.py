"""Opening an App whose broker may not be up yet: ``asyncq run --wait-for-broker S``.

A worker started before its broker (a deployment that starts everything at once) tries
again while the broker cannot be reached, for up to ``wait`` seconds: after 0.5 s, then
twice as long each time, up to 5 s, one warning per failed attempt. Only
``BrokerUnavailable`` is tried again: a bad URL or refused credentials fail at once.
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractAsyncContextManager, AsyncExitStack

import anyio

from .errors import BrokerUnavailable

__all__ = ["enter_when_reachable"]

log = logging.getLogger("asyncq.worker")


async def enter_when_reachable(
    stack: AsyncExitStack, opened: AbstractAsyncContextManager[object], wait: float
) -> None:
    """Enter ``opened`` (``async with app``) on ``stack``; with ``wait`` > 0, try again while
    it raises ``BrokerUnavailable``, and give up with one after ``wait`` seconds."""
    deadline = anyio.current_time() + wait if wait else math.inf
    delay, attempt = 0.5, 1
    error: BrokerUnavailable | None = None
    while True:
        # The deadline bounds an attempt too: one connect may take seconds (a backend may
        # retry a failed command for a while before it gives up).
        with anyio.CancelScope(deadline=deadline):
            try:
                await stack.enter_async_context(opened)
                return
            except BrokerUnavailable as exc:
                if not wait:
                    raise
                error = exc
        left = deadline - anyio.current_time()
        if left <= 0:
            reason = error if error is not None else f"no answer within {wait:g} s"
            raise BrokerUnavailable(
                f"still unreachable after {attempt} attempt(s) over {wait:g} s: {reason}"
            ) from error
        pause = min(delay, left)
        log.warning(
            "broker unreachable (attempt %d); trying again in %.1f s, giving up in %.1f s: %s",
            attempt,
            pause,
            left,
            error,
        )
        await anyio.sleep(pause)
        delay = min(delay * 2, 5.0)
        attempt += 1
