"""asyncq across two processes on the embedded default broker, with nothing else installed.

    python examples/quickstart.py

It starts a worker as a user would, ``asyncq run examples.quickstart_tasks:app`` (its log lines are
shown with ``worker |``), and from this process, the producer, enqueues jobs to it (one at a
time, in bulk, delayed, one that fails once and is retried, one that is rejected) and awaits
each result. Then it stops the worker with SIGTERM, as a deployment would, and reads the
queue stats and the dead letter. It takes a few seconds.

Neither process names a broker, so both use ``sqlite:///asyncq.db``: the file ``asyncq.db``
in the working directory (jobs wait there, durably, until a worker takes them). A producer
started in another directory would use another file; the worker's log line says which.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
from anyio.abc import Process

import asyncq

# Run as a script from any directory: the tasks are imported from this clone, by this
# process and by the worker (through its PYTHONPATH).
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from examples.quickstart_tasks import add, app, charge, flaky_fetch, remind  # noqa: E402


def since(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1000:7.1f} ms"


async def show_worker_log(worker: Process) -> None:
    assert worker.stderr is not None
    pending = b""
    async for chunk in worker.stderr:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            print(f"  worker | {line.decode(errors='replace')}", flush=True)


async def produce() -> None:
    start = time.perf_counter()
    job = await add.enqueue(2, 3)
    print(
        f"add(2, 3) = {await job.result(timeout=30)}  [{since(start)}, the worker's start included]"
    )

    start = time.perf_counter()
    jobs = await add.enqueue_many([(i, i) for i in range(10)])
    results = [await j.result(timeout=10) for j in jobs]
    print(f"enqueue_many: 10 adds -> {results}  [{since(start)}]")

    start = time.perf_counter()
    flaky = await flaky_fetch.enqueue("https://example.com/")
    print(f"flaky_fetch: {await flaky.result(timeout=10)}  [{since(start)}]")

    start = time.perf_counter()
    later = await remind.options(delay=0.3).enqueue("stand up")
    print(f"remind (delay=0.3 s) is {await later.status()}")
    print(f"remind: {await later.result(timeout=10)}  [{since(start)}]")

    start = time.perf_counter()
    bad = await charge.enqueue(-5)
    try:
        await bad.result(timeout=10)
    except asyncq.JobFailed as exc:
        print(f"charge(-5) failed: {exc.error}  [{since(start)}]")


async def main() -> None:
    print(f"broker: {app.describe_broker()}")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "asyncq", "run", "examples.quickstart_tasks:app", "-c", "20"]
    async with app, await anyio.open_process(command, env=env, stderr=subprocess.PIPE) as worker:
        async with anyio.create_task_group() as tg:
            tg.start_soon(show_worker_log, worker)
            try:
                await produce()
            finally:
                worker.send_signal(signal.SIGTERM)  # a graceful stop: nothing in flight is lost
                await worker.wait()
        print(f"worker exited with {worker.returncode}")

        for name, stats in (await app.queue_stats([app.default_queue])).items():
            print(
                f"queue {name}: pending={stats.pending} scheduled={stats.scheduled} "
                f"running={stats.running} dead={stats.dead}"
            )
        for dead in await app.dead_letters():
            print(f"dead letter {dead.id} ({dead.task}): {dead.error}")
        # Tidy for the next run: the file keeps dead letters until replayed or purged.
        print(f"purged {await app.purge_dead()} dead letter(s)")
    print("done")


if __name__ == "__main__":
    anyio.run(main)
