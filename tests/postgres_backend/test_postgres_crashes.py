"""A SIGKILLed worker's job runs again, once, after its lease runs out: rescued by the next
claim of a live worker, not by a timer of hours."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import kill_and_take_over

pytestmark = pytest.mark.anyio


async def test_a_sigkilled_workers_job_runs_again_after_its_lease_redelivered(
    url: str, tmp_path: Path
) -> None:
    visibility_timeout = 2.0
    waited = await kill_and_take_over(
        f"{url}&visibility_timeout={visibility_timeout}",
        tmp_path,
        visibility_timeout=visibility_timeout,
    )
    print(f"the lost job restarted {waited:.2f} s after the kill")
    assert visibility_timeout - 1.0 <= waited <= visibility_timeout + 1.0, waited
