"""``asyncq web`` in a child process, as the dashboard's CLI and browser tests run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from harness import TESTS_DIR, Lines

__all__ = ["serving"]


@asynccontextmanager
async def serving(*args: str, **env: str) -> AsyncIterator[tuple[str, Lines]]:
    """``asyncq web ARGS --port 0``; the base URL it printed, and its stderr lines."""
    path = os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent)])
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCQ_")}
    process = await anyio.open_process(
        [sys.executable, "-m", "asyncq", "web", *args, "--port", "0"],
        cwd=TESTS_DIR,
        env={**inherited, "PYTHONPATH": path, **env},
        stdin=subprocess.DEVNULL,
    )
    try:
        lines = Lines(process.stderr)
        line = await lines.expect(lambda text: "asyncq dashboard of" in text, timeout=30)
        found = re.search(r"on (http://\S+?)/", line)
        assert found is not None, line
        yield found.group(1), lines
    finally:
        process.terminate()
        with anyio.fail_after(15):
            await process.wait()
        await process.aclose()
