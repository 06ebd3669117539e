"""``asyncq run``: one worker in this process, or a supervisor over several."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import anyio
import click

from .. import __version__
from ..recycling import EXIT_RECYCLED
from ..supervisor import Supervisor, supervisor_gone
from ..worker import Worker
from ..worker_options import WorkerOptions
from .common import (
    EXIT_USAGE,
    Failure,
    QueueNames,
    UsageFailure,
    app_argument,
    broker_option,
    configure_logging,
    load_app,
    run_async,
)

if TYPE_CHECKING:
    from ..metrics import PrometheusServer

# Named for the command, not the module, so log lines read the same wherever the code lives.
log = logging.getLogger("asyncq.cli")


@click.command(short_help="Run worker processes.")
@app_argument
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Jobs each worker process runs at the same time.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=0),
    help="Jobs each worker process may hold beyond --concurrency, waiting to start, so the "
    "next batch is on its way while the current one runs (at most --concurrency; default "
    "a quarter of it). Use 0 for long jobs spread over many workers.",
)
@click.option(
    "--queues",
    "-q",
    type=QueueNames(),
    help="Queues to consume, comma-separated (default: every queue the app's tasks use).",
)
@click.option("--burst", is_flag=True, help="Exit once the queues are empty instead of waiting.")
@click.option(
    "--no-schedules",
    is_flag=True,
    help="Do not fire the app's periodic schedules (every worker fires them by default; "
    "each slot is enqueued once whichever do).",
)
@broker_option
@click.option(
    "--processes",
    "-p",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes. Above 1, a supervisor starts them, forwards SIGTERM/SIGINT to "
    "them, and restarts any that dies; should the supervisor itself die, they stop "
    "gracefully.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="After SIGTERM/SIGINT, how long in-flight jobs may take to finish before they are "
    "returned to their queue (default: the app's, 30 s). A second signal returns them at once.",
)
@click.option(
    "--wait-for-broker",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="At start, keep trying to reach the broker for up to this long, logging each failed "
    "attempt, instead of exiting 1 at once: for a worker that may start before its broker. "
    "With --processes N, each worker process waits.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="Least severe log level written to stderr.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How often the worker reports that it is alive. After three missed beats, "
    "`asyncq workers` shows it as gone.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default="text",
    show_default=True,
    help="json: one JSON object per line, each job outcome with its job_id, task, queue, "
    "attempt, outcome, duration_ms and trace_id as fields, for log pipelines.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    metavar="PORT",
    help="Serve Prometheus metrics on http://ADDRESS:PORT/metrics, on every interface unless "
    "--metrics-address says otherwise (needs asyncq[otel]); with "
    "--processes N, worker process i serves on PORT+i-1. Job "
    "outcomes, durations, queue wait, in-flight jobs, and queue depths such as "
    "queue_depth_pending{queue=...} and queue_dlq_depth{queue=...}. Port 0 takes any free "
    "port and logs it.",
)
@click.option(
    "--metrics-address",
    default="0.0.0.0",
    show_default=True,
    metavar="ADDRESS",
    help="The address --metrics-port listens on; the default, 0.0.0.0, is every network "
    "interface (what a Prometheus scraping a pod needs): use 127.0.0.1 to keep the metrics "
    "on this host.",
)
@click.option(
    "--metrics-interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How often the queue depth gauges are read from the broker.",
)
@click.option(
    "--max-jobs",
    type=click.IntRange(min=1),
    metavar="N",
    help="Recycle each worker process after it has taken N jobs: it stops fetching, lets its "
    "in-flight jobs finish (within --shutdown-timeout; the rest go back to the queue, their "
    "attempt unspent) and exits with code 75; with --processes, a fresh one replaces it.",
)
@click.option(
    "--max-memory",
    type=click.FloatRange(min=0, min_open=True),
    metavar="MB",
    help="Recycle each worker process, as --max-jobs does, once its resident memory is over "
    "MB megabytes (looked at four times a second): for handlers that leak.",
)
@click.option(
    "--lifeline",
    type=click.IntRange(min=0),
    hidden=True,
    help="Given by the supervisor to each worker process: the file descriptor of the read "
    "end of a pipe the supervisor holds open; the worker stops when it closes.",
)
def run(
    app_spec: str,
    concurrency: int,
    prefetch: int | None,
    queues: list[str] | None,
    burst: bool,
    no_schedules: bool,
    broker: str | None,
    processes: int,
    shutdown_timeout: float | None,
    wait_for_broker: float,
    log_level: str,
    heartbeat_interval: float,
    log_format: str,
    metrics_port: int | None,
    metrics_address: str,
    metrics_interval: float,
    max_jobs: int | None,
    max_memory: float | None,
    lifeline: int | None,
) -> int:
    """Run a worker: fetch jobs from the app's queues and run them until stopped.

    SIGTERM or SIGINT stops fetching and lets in-flight jobs finish (see
    --shutdown-timeout); jobs still running then go back to their queue, keeping their
    attempt number. The command exits 0 after such a graceful stop, and 75 after a
    worker recycled itself (--max-jobs, --max-memory).

    \b
    Example:
      asyncq run shop.tasks:app --queues default,emails --concurrency 50 --processes 4
    """
    if prefetch is not None and prefetch > concurrency:
        raise UsageFailure(f"--prefetch ({prefetch}) may not exceed --concurrency ({concurrency})")
    if metrics_port and metrics_port + processes - 1 > 65535:
        raise UsageFailure(
            f"--metrics-port {metrics_port} with --processes {processes}: the worker "
            f"processes take ports {metrics_port} to {metrics_port + processes - 1}, "
            "beyond 65535"
        )
    if lifeline is not None:
        try:
            os.fstat(lifeline)
        except OSError as exc:
            raise UsageFailure(f"--lifeline {lifeline}: {exc.strerror}") from None
    app = load_app(
        app_spec,
        broker,
        in_process_note="this worker runs only the jobs its own app enqueues in this process",
    )
    configure_logging(log_level, log_format.lower())
    try:
        options = WorkerOptions(
            queues=tuple(queues) if queues else None,
            concurrency=concurrency,
            prefetch=prefetch,
            burst=burst,
            schedules=not no_schedules,
            shutdown_timeout=app.shutdown_timeout if shutdown_timeout is None else shutdown_timeout,
            handle_signals=True,
            heartbeat_interval=heartbeat_interval,
            metrics_interval=metrics_interval,
            wait_for_broker=wait_for_broker,
            max_jobs=max_jobs,
            max_memory=max_memory,
        )
    except ValueError as exc:
        raise UsageFailure(str(exc)) from None
    log.info(
        "asyncq %s: app %s with %d task(s), broker %s, %d process(es)",
        __version__,
        app_spec,
        len(app.tasks),
        app.describe_broker(),
        processes,
    )
    if processes > 1:
        command = _worker_command(app_spec, broker, log_level, log_format.lower())
        slot_arguments = None
        if metrics_port is not None:
            command += ["--metrics-address", metrics_address]
            slot_arguments = partial(_slot_metrics_port, metrics_port)
        _supervise(command, options, processes, slot_arguments)
        return 0
    if metrics_port is None:
        recycled = run_async(partial(_work, partial(Worker, app, options), lifeline))
    else:
        server = _serve_metrics(metrics_port, metrics_address)
        try:
            served = options.replace(meter_provider=server.provider)
            recycled = run_async(partial(_work, partial(Worker, app, served), lifeline))
        finally:
            server.stop()
    return EXIT_RECYCLED if recycled else 0


async def _work(make_worker: Callable[[], Worker], lifeline: int | None) -> bool:
    """Run a worker until it stops; with a ``lifeline``, also until the supervisor is gone.
    Whether it recycled itself."""
    # Built here, not by the caller: its events and scopes belong to this event loop.
    worker = make_worker()
    if lifeline is None:
        await worker.run()
    else:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_when_orphaned, worker, lifeline)
            await worker.run()
            tg.cancel_scope.cancel()
    return worker.recycled is not None


async def _stop_when_orphaned(worker: Worker, lifeline: int) -> None:
    await supervisor_gone(lifeline)
    # Nobody is left to forward a signal or to restart this process: stop as on SIGTERM,
    # so that jobs in flight finish or go back to their queue, instead of consuming on.
    log.warning(
        "the supervisor has exited: finishing %d in-flight job(s) within %g s, then exiting",
        worker.in_flight,
        worker.shutdown_timeout,
    )
    worker.stop()


def _serve_metrics(port: int, address: str) -> PrometheusServer:
    try:
        from opentelemetry import metrics as otel_metrics

        from ..metrics import configured_provider, serve_prometheus

        server = serve_prometheus(port, address)
    except ImportError as exc:
        raise UsageFailure(
            f"--metrics-port needs the OpenTelemetry extra: pip install 'asyncq[otel]' ({exc})"
        ) from None
    except OSError as exc:
        raise UsageFailure(f"--metrics-port: cannot listen on {address}:{port}: {exc}") from None
    if configured_provider() is None:
        # No provider of the app's own: the handlers' metrics are served on /metrics too.
        otel_metrics.set_meter_provider(server.provider)
    log.info("serving Prometheus metrics on http://%s:%d/metrics", address, server.port)
    return server


def _worker_command(
    app_spec: str, broker: str | None, log_level: str, log_format: str
) -> list[str]:
    """This same ``asyncq run`` with one process: what each supervised child runs (the
    supervisor adds the worker options)."""
    command = [sys.executable, "-m", "asyncq", "run", app_spec, "--processes", "1"]
    command += ["--log-level", log_level, "--log-format", log_format]
    command += ["--broker", broker] if broker is not None else []
    return command


def _slot_metrics_port(first: int, slot: int) -> list[str]:
    """Worker process ``slot`` (from 1) serves its metrics on port ``first + slot - 1``;
    with port 0, each on a free port of its own."""
    return ["--metrics-port", str(first + slot - 1 if first else 0)]


def _supervise(
    command: list[str],
    options: WorkerOptions,
    processes: int,
    slot_arguments: Callable[[int], list[str]] | None,
) -> None:
    supervisor = Supervisor.for_workers(
        command,
        options,
        processes,
        fatal_exit_codes={EXIT_USAGE},
        recycle_exit_codes={EXIT_RECYCLED},
        slot_arguments=slot_arguments,
        lifeline_option="--lifeline",
    )
    code = run_async(supervisor.run)
    if code == EXIT_USAGE:
        raise UsageFailure("a worker process could not start; its error is logged above")
    if code != 0:
        raise Failure("a worker process did not exit cleanly; see the log above")
