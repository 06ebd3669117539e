"""The examples are programs users copy: each one runs here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import REGISTRY, generate_latest

import asyncq
from examples import fastapi_app
from examples.fastapi_app import api

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/NAME`` as a user would; it must exit 0."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done


def test_periodic_runs_each_slot_once() -> None:
    out = run_example("periodic.py").stdout.splitlines()
    ticks = [line for line in out if line.startswith("tick for ")]
    assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), out
    assert out[-1].endswith("slots, each run once by one of two workers"), out


def test_snooze_and_progress_run() -> None:
    out = run_example("snooze_progress.py").stdout.splitlines()
    assert out == [
        "export attempt 1: the data is not there yet, snoozing 0.2 s",
        "export attempt 1: 25%",
        "export attempt 1: 50%",
        "export attempt 1: 75%",
        "export attempt 1: 100%",
        "exported 1000 rows on attempt 1, snoozed 1 time(s); last progress: "
        "Progress(value=1.0, message='exported 1000 of 1000 rows')",
    ]


def test_quickstart_runs_a_worker_and_a_producer_on_the_embedded_default(tmp_path: Path) -> None:
    # As a user runs it, in a directory of its own: the file is made there.
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "ASYNCQ_BROKER"},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith(f"broker: sqlite:///asyncq.db (the sqlite file {tmp_path}/asyncq.db)")
    assert any(
        line.startswith("  worker | ") and "worker" in line and "started" in line for line in out
    )
    assert out[-1] == "done"
    assert "worker exited with 0" in out
    assert "purged 1 dead letter(s)" in out
    assert any(line.startswith("add(2, 3) = 5 ") for line in out)
    assert any("10 adds -> [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]" in line for line in out)
    assert any("fetched https://example.com/ on attempt 2" in line for line in out)
    assert "remind (delay=0.3 s) is scheduled" in out
    assert any(line.startswith("remind: reminder: stand up ") for line in out)
    assert any(line.startswith("charge(-5) failed: Reject: cannot charge -5") for line in out)
    assert "queue default: pending=0 scheduled=0 running=0 dead=1" in out


def test_priorities_runs_the_priority_9_jobs_first() -> None:
    out = run_example("priorities.py").stdout.splitlines()
    assert out[1] == f"first 10 to run: {', '.join(f'page-{i}' for i in range(10))}", out
    assert out[-1] == "priority 9 first, FIFO within each priority: True", out


def test_tenant_middleware_runs() -> None:
    out = run_example("tenant_middleware.py").stdout.splitlines()
    assert out == [
        "tenant acme: invoice for order 1",
        "tenant globex: invoice for order 2",
        "tenant ?: invoice for order 3",
    ]


@asynccontextmanager
async def serving(broker: str) -> AsyncIterator[httpx.AsyncClient]:
    """The example API with its lifespan running: httpx's ASGI transport runs none itself."""
    fastapi_app.app.use_broker(broker)  # a broker of the test's own
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://test") as c,
    ):
        yield c


@pytest.mark.anyio
async def test_enqueue_then_result(unique: str) -> None:
    async with serving(f"memory://{unique}") as client:
        posted = await client.post("/jobs/add", json={"a": 2, "b": 3.5})
        assert posted.status_code == 202
        job_id = posted.json()["id"]

        got = await client.get(f"/jobs/{job_id}/result", params={"timeout": 10})
        assert got.status_code == 200
        assert got.json() == {"id": job_id, "status": "succeeded", "result": 5.5}

        info = await client.get(f"/jobs/{job_id}")
        assert info.status_code == 200
        assert info.json()["status"] == "succeeded"


@pytest.mark.anyio
async def test_the_dashboard_is_mounted_read_only_under_asyncq(unique: str) -> None:
    async with serving(f"memory://{unique}") as client:
        posted = await client.post("/jobs/divide", json={"a": 1, "b": 0})
        job_id = posted.json()["id"]
        await client.get(f"/jobs/{job_id}/result", params={"timeout": 10})
        page = await client.get(f"/asyncq/jobs/{job_id}")
        assert page.status_code == 200
        assert "ZeroDivisionError" in page.text
        assert 'href="/asyncq/queues/default"' in page.text  # links under the mount point
        assert (await client.post("/asyncq/dead/default/purge")).status_code == 403


@pytest.mark.anyio
async def test_failed_job_is_422_with_its_error(unique: str) -> None:
    async with serving(f"memory://{unique}") as client:
        posted = await client.post("/jobs/divide", json={"a": 1, "b": 0})
        job_id = posted.json()["id"]

        got = await client.get(f"/jobs/{job_id}/result", params={"timeout": 10})
        assert got.status_code == 422
        body = got.json()
        assert body["status"] == "dead"
        assert body["error"]["type"] == "ZeroDivisionError"


@pytest.mark.anyio
async def test_unknown_job_is_404(unique: str) -> None:
    async with serving(f"memory://{unique}") as client:
        assert (await client.get("/jobs/no-such-job/result")).status_code == 404
        assert (await client.get("/jobs/no-such-job")).status_code == 404
        assert (await client.delete("/jobs/no-such-job")).status_code == 404


@pytest.mark.anyio
async def test_timeout_is_504_then_cancel(unique: str) -> None:
    async with serving(f"memory://{unique}") as client:
        posted = await client.post("/jobs/add", params={"delay": 3600}, json={"a": 1, "b": 1})
        assert posted.json()["status"] == "scheduled"
        job_id = posted.json()["id"]

        waited = await client.get(f"/jobs/{job_id}/result", params={"timeout": 0.05})
        assert waited.status_code == 504
        assert waited.json()["status"] == "scheduled"

        assert (await client.delete(f"/jobs/{job_id}")).status_code == 200
        assert (await client.get(f"/jobs/{job_id}/result")).status_code == 409
        assert (await client.delete(f"/jobs/{job_id}")).status_code == 409


@pytest.mark.anyio
async def test_no_inprocess_worker_when_disabled(
    unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCQ_INPROCESS_WORKER", "0")
    async with serving(f"memory://{unique}") as client:
        posted = await client.post("/jobs/add", json={"a": 1, "b": 1})
        job_id = posted.json()["id"]
        waited = await client.get(f"/jobs/{job_id}/result", params={"timeout": 0.2})
        assert waited.status_code == 504
        assert waited.json()["status"] == "queued"  # enqueued, and nobody took it


@pytest.mark.anyio
async def test_bad_input_is_rejected_before_enqueue(unique: str) -> None:
    async with serving(f"memory://{unique}") as client:
        posted = await client.post("/jobs/add", json={"a": "one", "b": 1})
        assert posted.status_code == 422
        assert "detail" in posted.json()


def test_otel_console_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    # A stand-in package that fails to import, as OpenTelemetry does where it is missing.
    hidden = tmp_path / "opentelemetry"
    hidden.mkdir()
    (hidden / "__init__.py").write_text('raise ImportError("No module named opentelemetry")\n')
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "otel_console.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "needs the OpenTelemetry SDK: pip install 'asyncq[otel]'" in done.stderr


def test_otel_console_runs() -> None:
    done = run_example("otel_console.py")
    out = done.stdout.splitlines()
    assert out[-1] == "done"
    assert "resize -> cat.png@320px" in out
    summary = re.compile(
        r"span '(?P<name>[^']+)' +kind=(?P<kind>\w+) +trace=(?P<trace>[0-9a-f]{32}) "
        r"id=(?P<id>[0-9a-f]{16}) parent=(?P<parent>[0-9a-f]{16}|-)$"
    )
    spans = {m["name"]: m for m in map(summary.match, out) if m}
    assert sorted(spans) == ["handle request", "process default", "send default"]
    request, send, process = (
        spans["handle request"],
        spans["send default"],
        spans["process default"],
    )
    assert request["trace"] == send["trace"] == process["trace"]
    assert (request["kind"], send["kind"], process["kind"]) == ("SERVER", "PRODUCER", "CONSUMER")
    assert request["parent"] == "-"
    assert send["parent"] == request["id"]
    assert process["parent"] == send["id"]
    # The SDK's console exporter printed the spans themselves too.
    assert done.stdout.count('"name": "process default"') == 1


DEPLOY = EXAMPLES / "deploy"
# What looks like one of asyncq's metric names in examples/deploy: in PromQL, rule fields or
# comments alike.
METRIC_NAME = re.compile(r"\b(?:asyncq_[a-z_]+|queue_[a-z_]+)\b")


def exposed_names(text: str) -> set[str]:
    """The metric and sample names in Prometheus text: a histogram's name and its
    ``_bucket``, ``_count`` and ``_sum`` series, a counter's name and ``_total``."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


# The exporter puts its otel_scope_* labels before the instrument's own.
RUNNING_ONE = re.compile(r'^queue_depth_running\{[^}]*queue="default"[^}]*\} 1\.0$', re.M)


async def exported_metric_names(broker: str, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The names a worker exports through the Prometheus exporter, as ``asyncq run
    --metrics-port`` serves them: scraped once while a job runs (queue depths, jobs in
    flight) and once after the worker stopped (job outcomes, durations, queue wait)."""
    app = asyncq.App(broker)
    started, release, polled = anyio.Event(), anyio.Event(), anyio.Event()

    @app.task
    async def hold() -> str:
        started.set()
        await release.wait()
        return "held"

    # The depth gauges show the worker's last poll of the broker (one every 0.05 s): note
    # when a poll that began once the job was running has finished.
    read = app.backend.queue_stats

    async def queue_stats(queues: Sequence[str] | None = None) -> list[asyncq.QueueStats]:
        job_running = started.is_set()
        found = await read(queues)
        if job_running:
            polled.set()
        return found

    monkeypatch.setattr(app.backend, "queue_stats", queue_stats)

    def scrape() -> str:
        return generate_latest(REGISTRY).decode()

    # The reader registers itself with prometheus_client's REGISTRY, as in serve_prometheus.
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    try:
        async with app, app.worker(meter_provider=provider, metrics_interval=0.05):
            job = await hold.enqueue()
            with anyio.fail_after(10):
                await started.wait()
                await polled.wait()
                running = scrape()
                release.set()
                assert await job.result(timeout=10) == "held"
        stopped = scrape()
    finally:
        provider.shutdown()  # also takes the reader out of REGISTRY
    assert RUNNING_ONE.search(running), running
    return exposed_names(running) | exposed_names(stopped)


def test_exposed_names_of_prometheus_text() -> None:
    text = """# HELP a_seconds Time.
# TYPE a_seconds histogram
a_seconds_bucket{le="1.0"} 1.0
a_seconds_count 1.0
a_seconds_sum 0.5
# TYPE b counter
b_total{queue="default"} 2.0
"""
    assert exposed_names(text) == {
        "a_seconds",
        "a_seconds_bucket",
        "a_seconds_count",
        "a_seconds_sum",
        "b",
        "b_total",
    }


@pytest.mark.anyio
async def test_deploy_files_name_exported_metrics(
    unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = sorted(DEPLOY.glob("*.yaml"))
    assert {f.name for f in files} >= {
        "worker.yaml",
        "hpa.yaml",
        "prometheus-adapter.yaml",
        "prometheus.yaml",
        "alerts.yaml",
    }
    files += [DEPLOY / "README.md", DEPLOY / "grafana-dashboard.json"]
    referenced = {(f.name, name) for f in files for name in METRIC_NAME.findall(f.read_text())}
    # The names the autoscaler and the alerts depend on are there at all.
    assert {name for _, name in referenced} >= {
        "queue_depth_pending",
        "queue_dlq_depth",
        "queue_oldest_pending_age_seconds",
        "asyncq_jobs_total",
    }

    exported = await exported_metric_names(f"memory://{unique}", monkeypatch)
    # Every name asyncq/metrics.py documents is in the scrape, so the check below is
    # against all of them.
    assert exported >= {
        "asyncq_jobs_total",
        "asyncq_job_duration_seconds",
        "asyncq_job_queue_wait_seconds",
        "asyncq_jobs_in_flight",
        "queue_depth_pending",
        "queue_depth_scheduled",
        "queue_depth_running",
        "queue_dlq_depth",
        "queue_oldest_pending_age_seconds",
    }
    unknown = sorted((file, name) for file, name in referenced if name not in exported)
    assert not unknown, f"names no worker exports: {unknown}"


def test_deploy_files_parse_and_fit_together() -> None:
    files = {f.name: list(yaml.safe_load_all(f.read_text())) for f in DEPLOY.glob("*.yaml")}
    assert sorted(files) == [
        "alerts.yaml",
        "hpa.yaml",
        "prometheus-adapter.yaml",
        "prometheus.yaml",
        "worker.yaml",
    ]
    (worker,) = files["worker.yaml"]
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    port = int(command[command.index("--metrics-port") + 1])
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)

    (hpa,) = files["hpa.yaml"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    scaled_on = [m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    assert scaled_on == ["queue_depth_pending", "queue_oldest_pending_age_seconds"]
    (adapter,) = files["prometheus-adapter.yaml"]
    assert [r["name"]["as"] for r in adapter["externalRules"]] == scaled_on

    (alerts,) = files["alerts.yaml"]
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    assert all(rule["alert"] and rule["expr"] for rule in rules)
    assert any("queue_dlq_depth" in rule["expr"] for rule in rules)


def test_grafana_dashboard_queries_every_depth_and_the_lag() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    queried = " ".join(t["expr"] for p in panels for t in p["targets"])
    for name in (
        "queue_depth_pending",
        "queue_depth_scheduled",
        "queue_depth_running",
        "queue_dlq_depth",
        "queue_oldest_pending_age_seconds",
        "asyncq_jobs_total",
    ):
        assert name in queried, name
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "queue"}


@pytest.mark.anyio
async def test_dashboard_demo_leaves_jobs_in_every_state(tmp_path: Path) -> None:
    from asyncq.web import create_dashboard

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "examples.dashboard_demo", "--once"],
            cwd=EXAMPLES.parent,
            env={**os.environ, "ASYNCQ_BROKER": url},
            capture_output=True,
            text=True,
            timeout=60,
        )
    )
    assert done.returncode == 0, done.stderr
    app = asyncq.App(url)
    async with (
        app,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_dashboard(app)), base_url="http://demo"
        ) as client,
    ):
        queues = {q["name"]: q for q in (await client.get("/api/overview")).json()["queues"]}
        default = queues["default"]
        assert (default["pending"], default["scheduled"], default["dead"]) == (20, 2, 2)
        letters = (await client.get("/api/dead/default")).json()["letters"]
        html = [d["id"] for d in letters if "o-html" in d["error"]["message"]]
        page = await client.get(f"/jobs/{html[0]}")
        assert "&lt;b&gt;o-html&lt;/b&gt;" in page.text and "<b>o-html" not in page.text
