"""The dashboard through httpx's ASGI transport: every page and its JSON on every backend
with jobs in every state, replay and purge with their confirmation, CSRF and read-only
refusals, escaping, the security headers and links under a mount prefix."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import services

import asyncq
from asyncq.web import create_dashboard

from .shop import SCRIPT, Shop

pytestmark = pytest.mark.anyio

KINDS = ("memory", "sqlite", "redis", "postgres", "amqp")


@pytest.fixture
def unique() -> str:
    return f"web{os.urandom(5).hex()}"


@pytest.fixture
def sqlite_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="asyncq-web-") as directory:
        yield Path(directory)


def url_of(kind: str, unique: str, sqlite_dir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{sqlite_dir / unique}.db"
    if kind == "postgres":
        services.require_postgres()
        return f"{services.POSTGRES_URL}?schema={unique}"
    services.require_broker(kind)
    return services.broker_url(kind, unique)


@pytest.fixture(params=KINDS)
def broker(request: pytest.FixtureRequest, unique: str, sqlite_dir: Path) -> Iterator[str]:
    kind: str = request.param
    yield url_of(kind, unique, sqlite_dir)
    if kind == "postgres":
        services.drop_postgres_schema(unique)
    elif kind in ("redis", "amqp"):
        services.clean_broker(kind, unique)


@pytest.fixture
def sqlite_broker(unique: str, sqlite_dir: Path) -> str:
    return url_of("sqlite", unique, sqlite_dir)


@pytest.fixture
async def filled(sqlite_broker: str) -> AsyncIterator[tuple[Shop, dict[str, str]]]:
    """The Shop on SQLite, open, with its jobs in every state (their ids by state)."""
    shop = Shop(sqlite_broker)
    async with shop.app:
        yield shop, await shop.fill()


@pytest.fixture
async def client_for() -> AsyncIterator[object]:
    clients: list[httpx.AsyncClient] = []

    def make(dashboard: object, base: str = "http://dash") -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=dashboard),  # type: ignore[arg-type]
            base_url=base,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


async def test_every_page_shows_jobs_in_every_state(broker: str, client_for: object) -> None:
    shop = Shop(broker)
    async with shop.app:
        ids = await shop.fill()
        client = client_for(create_dashboard(shop.app))  # type: ignore[operator]
        async with shop.app.worker(concurrency=1, schedules=False, queues=["busy"]):
            running = await shop.hold.options(queue="busy").enqueue()
            with anyio.fail_after(10):
                await shop.started.wait()

            overview = await client.get("/")
            assert overview.status_code == 200
            data = (await client.get("/api/overview")).json()
            queues = {q["name"]: q for q in data["queues"]}
            default = queues["default"]
            assert (default["pending"], default["dead"]) == (1, 2)
            assert default["scheduled"] == 2  # the delayed one and the retry
            assert queues["busy"]["running"] == 1
            assert data["workers"] == 1
            # The chart: per-minute counts, added as the worker settled (one success; two
            # dead, one retried: three failed attempts).
            chart = data["throughput"]
            assert (chart["succeeded"], chart["failed"]) == (1, 3)
            assert '<svg class="chart"' in overview.text

            listed = {}
            for status in ("queued", "scheduled", "dead"):
                page = await client.get("/queues/default", params={"status": status})
                assert page.status_code == 200
                api = await client.get("/api/queues/default/jobs", params={"status": status})
                listed[status] = {j["id"] for j in api.json()["jobs"]}
            assert listed["queued"] == {ids["queued"]}
            assert listed["scheduled"] == {ids["scheduled"], ids["retrying"]}
            assert listed["dead"] == {ids["dead"], ids["dead2"]}
            busy = (await client.get("/api/queues/busy/jobs", params={"status": "running"})).json()
            assert [j["id"] for j in busy["jobs"]] == [running.id]

            for state in ("succeeded", "dead", "retrying", "cancelled", "scheduled", "queued"):
                page = await client.get(f"/jobs/{ids[state]}")
                assert page.status_code == 200, state
                assert ids[state] in page.text
            dead = (await client.get(f"/api/jobs/{ids['dead']}")).json()
            assert dead["status"] == "dead"
            assert dead["error"]["type"] == "ValueError"
            assert "card declined" in dead["error"]["traceback"]
            if "amqp" not in broker:  # RabbitMQ's records keep no bodies (see data.py)
                assert dead["args"] == ["bad-" + SCRIPT]
            # Waiting, waiting for a retry, running: arguments where the broker keeps the
            # body (RabbitMQ keeps it in the message, where only a consumer can read it).
            later = (await client.get(f"/api/jobs/{ids['scheduled']}")).json()
            waiting = (await client.get(f"/api/jobs/{ids['queued']}")).json()
            held = (await client.get(f"/api/jobs/{running.id}")).json()
            assert held["status"] == "running"
            if "amqp" in broker:
                assert "args" not in later and "args" not in waiting and "args" not in held
            else:
                assert (later["args"], waiting["args"], held["args"]) == (
                    ["o-later"],
                    ["o-waiting"],
                    [],
                )
                assert waiting["enqueued_at"] > 0
            done = (await client.get(f"/api/jobs/{ids['succeeded']}")).json()
            assert (done["status"], done["result"]) == ("succeeded", "charged o-1")
            retry = (await client.get(f"/api/jobs/{ids['retrying']}")).json()
            assert (retry["status"], retry["error"]["type"]) == ("failed", "ConnectionError")

            letters = (await client.get("/api/dead/default")).json()
            assert {d["id"] for d in letters["letters"]} == {ids["dead"], ids["dead2"]}
            assert letters["total"] == 2
            for path in ("/dead", "/dead/default", "/workers", "/schedules"):
                assert (await client.get(path)).status_code == 200, path
            workers = (await client.get("/api/workers")).json()["workers"]
            assert [w["queues"] for w in workers if not w["gone"]] == [["busy"]]
            (nightly,) = (await client.get("/api/schedules")).json()["schedules"]
            assert (nightly["name"], nightly["paused"]) == ("nightly", False)
            shop.release.set()


async def test_replay_from_the_page_asks_first_then_the_job_runs(
    filled: tuple[Shop, dict[str, str]], client_for: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="asyncq.web")
    shop, ids = filled
    client = client_for(create_dashboard(shop.app))  # type: ignore[operator]
    token = csrf_of((await client.get("/dead/default")).text)
    form = {"csrf": token, "ids": ids["dead2"], "scope": "selected"}
    asked = await client.post("/dead/default/replay", data=form)
    assert asked.status_code == 200
    assert "Yes, replay 1" in asked.text
    assert (await shop.app.queue_stats(["default"]))["default"].dead == 2  # nothing yet
    done = await client.post("/dead/default/replay", data={**form, "confirm": "yes"})
    assert done.status_code == 303
    assert "replayed+1" in done.headers["location"]
    letters = (await client.get("/api/dead/default")).json()["letters"]
    assert [d["id"] for d in letters] == [ids["dead"]]
    # The replayed job runs again (and dies again: its order is still a bad one).
    async with shop.app.worker(concurrency=2, schedules=False):
        with pytest.raises(asyncq.JobFailed):
            await shop.app.get_job(ids["dead2"]).result(timeout=10)

    purge = {"csrf": token, "scope": "matching", "task": "charge", "confirm": "yes"}
    purged = await client.post("/dead/default/purge", data=purge)
    assert "purged+2" in purged.headers["location"]
    said = [r.getMessage() for r in caplog.records if r.name == "asyncq.web"]
    assert any("replayed 1 dead letter(s) of queue default: ids" in m for m in said)
    assert any("purged 2 dead letter(s) of queue default: every dead letter" in m for m in said)
    assert (await shop.app.queue_stats(["default"]))["default"].dead == 0


async def test_posts_without_a_valid_csrf_token_or_in_read_only_mode_are_refused(
    filled: tuple[Shop, dict[str, str]], client_for: object
) -> None:
    shop, ids = filled
    client = client_for(create_dashboard(shop.app))  # type: ignore[operator]
    page = await client.get("/dead/default")
    token = csrf_of(page.text)
    form = {"ids": ids["dead"], "scope": "selected", "confirm": "yes"}
    assert (await client.post("/dead/default/purge", data=form)).status_code == 403
    forged = {**form, "csrf": "0" * 64}
    assert (await client.post("/dead/default/purge", data=forged)).status_code == 403
    # A token from another browser (another cookie) is no good either.
    other = client_for(create_dashboard(shop.app))  # type: ignore[operator]
    await other.get("/")
    stolen = {**form, "csrf": token}
    assert (await other.post("/dead/default/purge", data=stolen)).status_code == 403
    assert (await shop.app.queue_stats(["default"]))["default"].dead == 2

    viewer = client_for(create_dashboard(shop.app, read_only=True))  # type: ignore[operator]
    shown = await viewer.get("/dead/default")
    assert "Purge" not in shown.text and "Replay" not in shown.text
    assert 'name="csrf"' not in (await viewer.get(f"/jobs/{ids['queued']}")).text
    refused = await viewer.post("/dead/default/purge", data={**form, "csrf": token})
    assert refused.status_code == 403
    assert (await viewer.post(f"/jobs/{ids['queued']}/cancel")).status_code == 403
    assert (await shop.app.queue_stats(["default"]))["default"].dead == 2


async def test_job_data_renders_as_text_and_can_be_hidden(
    filled: tuple[Shop, dict[str, str]], client_for: object
) -> None:
    shop, ids = filled
    client = client_for(create_dashboard(shop.app))  # type: ignore[operator]
    for path in (f"/jobs/{ids['dead']}", "/dead/default"):
        page = (await client.get(path)).text
        assert SCRIPT not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    private = client_for(create_dashboard(shop.app, show_data=False))  # type: ignore[operator]
    job = (await private.get(f"/api/jobs/{ids['dead']}")).json()
    assert (job["args"], job["kwargs"], job["headers"]) == ("(hidden)",) * 3
    done = (await private.get(f"/api/jobs/{ids['succeeded']}")).json()
    assert done["result"] == "(hidden)"
    assert "charged o-1" not in (await private.get(f"/jobs/{ids['succeeded']}")).text


async def test_security_headers_and_links_under_a_mount_prefix(
    sqlite_broker: str, client_for: object
) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    shop = Shop(sqlite_broker)
    async with shop.app:
        ids = await shop.fill()
        host = Starlette(routes=[Mount("/ops/asyncq", app=create_dashboard(shop.app))])
        client = client_for(host)  # type: ignore[operator]
        page = await client.get(f"/ops/asyncq/jobs/{ids['queued']}")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        links = re.findall(r'(?:href|action|src)="([^"]+)"', page.text)
        assert links and all(link.startswith("/ops/asyncq/") for link in links), links
        assert (await client.get("/ops/asyncq/static/asyncq.js")).status_code == 200
        found = await client.get("/ops/asyncq/find", params={"id": ids["queued"]})
        assert found.headers["location"] == f"/ops/asyncq/jobs/{ids['queued']}"
        cookie = page.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ops/asyncq" in cookie


async def test_bad_input_gets_a_clear_answer(sqlite_broker: str, client_for: object) -> None:
    shop = Shop(sqlite_broker)
    async with shop.app:
        client = client_for(create_dashboard(shop.app))  # type: ignore[operator]
        bad = await client.get("/queues/default", params={"status": "nonsense"})
        assert bad.status_code == 400 and "status must be one of" in bad.text
        api = await client.get("/api/dead/default", params={"older_than": "-5"})
        assert api.status_code == 400 and "older_than" in api.json()["error"]
        missing = await client.get("/jobs/0123456789abcdef0123456789abcdef")
        assert missing.status_code == 404
        token = csrf_of((await client.get("/schedules")).text)
        unknown = await client.post("/schedules/nope/pause", data={"csrf": token})
        assert unknown.status_code == 400 and "no schedule named" in unknown.text
        empty = await client.post("/dead/default/replay", data={"csrf": token})
        assert empty.status_code == 400 and "select dead letters first" in empty.text


async def test_run_now_cancel_and_schedule_actions_from_the_pages_are_logged(
    filled: tuple[Shop, dict[str, str]], client_for: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="asyncq.web")
    shop, ids = filled
    client = client_for(create_dashboard(shop.app, actor=lambda request: "alice"))  # type: ignore[operator]
    page = await client.get("/queues/default", params={"status": "scheduled"})
    assert page.text.count("Run now") == 2  # the delayed job and the retry
    token = csrf_of(page.text)
    gone = await client.post(
        f"/jobs/{ids['queued']}/cancel", data={"csrf": token, "queue": "default"}
    )
    assert gone.status_code == 303
    assert await shop.app.get_job(ids["queued"]).status() is asyncq.JobStatus.CANCELLED
    ran = await client.post(
        f"/jobs/{ids['scheduled']}/run-now", data={"csrf": token, "queue": "default"}
    )
    assert ran.status_code == 303 and "due+now" in ran.headers["location"]
    async with shop.app.worker(concurrency=2, schedules=False):
        job = shop.app.get_job(ids["scheduled"])
        assert await job.result(timeout=10) == "charged o-later"

    for action, paused in (("pause", True), ("resume", False)):
        done = await client.post(f"/schedules/nightly/{action}", data={"csrf": token})
        assert done.status_code == 303
        (state,) = (await client.get("/api/schedules")).json()["schedules"]
        assert state["paused"] is paused
    fired = await client.post("/schedules/nightly/trigger", data={"csrf": token})
    assert "triggered" in fired.headers["location"]
    said = [r.getMessage() for r in caplog.records if r.name == "asyncq.web"]
    assert f"dashboard: alice ran job {ids['scheduled']} now (queue default)" in said
    assert f"dashboard: alice cancelled job {ids['queued']} (queue default)" in said
    assert "dashboard: alice: schedule nightly: pause" in said
