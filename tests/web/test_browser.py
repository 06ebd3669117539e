"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, on
``asyncq web`` over a real Redis with jobs in every state. It opens each page, replays a
dead letter through the confirmation and sees the job run, checks that no script in job data
ever runs and that the CSP reports nothing, and saves screenshots (into
``$ASYNCQ_SCREENSHOTS`` when set: that is how docs/screenshots/ is made)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import services

import asyncq

from .server import serving
from .shop import Shop

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def redis_url() -> Iterator[str]:
    services.require_redis()
    unique = f"webui{os.urandom(5).hex()}"
    yield services.broker_url("redis", unique)
    services.clean_broker("redis", unique)


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    chosen = os.environ.get("ASYNCQ_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        message = "no chromium; run: bash scripts/services.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium)
        try:
            yield launched
        finally:
            await launched.close()


async def test_each_page_in_a_browser_and_a_replay_that_runs(
    redis_url: str, browser: Any, screenshots: Path
) -> None:
    shop = Shop(redis_url)
    gateway_down = True

    @shop.app.task(name="send_receipt", retries=0)
    async def send_receipt(order: str) -> str:
        if gateway_down:
            raise ConnectionRefusedError(f"mail gateway refused the receipt of {order}")
        return f"receipt for {order} sent"

    async with shop.app:
        ids = await shop.fill()
        receipt = await send_receipt.enqueue("o-1")
        async with shop.app.worker(concurrency=2, schedules=False):
            with pytest.raises(asyncq.JobFailed):
                await receipt.result(timeout=10)

        async with serving("apps.good:app", "--broker", redis_url) as (base, _):
            page = await browser.new_page(viewport={"width": 1280, "height": 820})
            dialogs: list[str] = []
            problems: list[str] = []
            page.on("dialog", lambda dialog: dialogs.append(dialog.message))
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            page.on(
                "response",
                lambda answer: (
                    problems.append(f"{answer.status} {answer.url}")
                    if answer.status >= 400
                    else None
                ),
            )

            await page.goto(f"{base}/")
            await page.wait_for_selector("text=Overview")
            row = page.locator("tr", has_text="default")
            assert "3" in await row.inner_text()  # three dead letters
            await page.screenshot(path=str(screenshots / "overview.png"), full_page=True)

            for path, heading in (
                ("/queues/default?status=scheduled", "Queue default"),
                ("/workers", "Workers"),
                ("/schedules", "Schedules"),
                (f"/jobs/{ids['succeeded']}", "Job"),
            ):
                await page.goto(f"{base}{path}")
                assert heading in await page.locator("h1").inner_text(), path

            await page.goto(f"{base}/jobs/{ids['dead']}")
            traceback = await page.locator("pre.traceback").inner_text()
            assert "ValueError: card declined for bad-<script>alert(1)</script>" in traceback
            await page.screenshot(path=str(screenshots / "job.png"), full_page=True)

            await page.goto(f"{base}/dead/default")
            await page.screenshot(path=str(screenshots / "dead-letters.png"), full_page=True)
            await page.check(f'input[name="ids"][value="{receipt.id}"]')
            await page.click("text=Replay selected")
            await page.wait_for_selector("text=Replay 1 dead letter(s) of default?")
            gateway_down = False
            async with shop.app.worker(concurrency=2, schedules=False):
                await page.click("text=Yes, replay 1")
                await page.wait_for_selector("text=replayed 1 dead letter(s)")
                assert await receipt.result(timeout=10) == "receipt for o-1 sent"
            await page.goto(f"{base}/jobs/{receipt.id}")
            assert "succeeded" in await page.locator("dl.facts").inner_text()
            assert "receipt for o-1 sent" in await page.locator("pre.data").last.inner_text()

            # Purge every dead letter of task charge, through the confirmation.
            await page.goto(f"{base}/dead/default?task=charge")
            await page.click("text=Purge all matching")
            await page.wait_for_selector("text=Purge 2 dead letter(s) of default?")
            await page.click("text=Yes, purge 2")
            await page.wait_for_selector("text=purged 2 dead letter(s)")
            assert (await shop.app.queue_stats(["default"]))["default"].dead == 0

            # The live overview refreshes itself (its script fetches the live part again).
            await page.goto(f"{base}/")
            # (A selector, not a JavaScript predicate: the CSP refuses eval, Playwright's too.)
            await page.wait_for_selector("#live[data-refreshed]", state="attached", timeout=10_000)
            await page.close()
    assert dialogs == []  # no script from job data ran
    assert problems == []  # nothing refused by the CSP, no failed script
