"""asyncq's embedded ``sqlite://`` broker beside huey's SqliteHuey, on one machine, in one run.

    python3 -m venv .venv-bench-huey && .venv-bench-huey/bin/pip install huey==3.5.4
    python3 benchmarks/sqlite_compare.py                    # every workload, both libraries
    python3 benchmarks/sqlite_compare.py --only W2 --jobs 50000

The workloads of ``redis_compare.py``, on a fresh file each (in a temporary directory):

* **W1** enqueue ``--jobs`` no-op jobs from one producer process: one call at a time (asyncq:
  ``await task.enqueue()``; huey: ``task()``, synchronous, no event loop), in bulk (asyncq:
  ``enqueue_many`` in batches of 1,000; huey has no bulk enqueue), and from 100 concurrent
  enqueuers (asyncq tasks on one event loop);
* **W2** drain ``--drain-jobs`` no-op jobs enqueued beforehand: one worker process, timed from
  its start (its startup hook) until the last job ran;
* **W3** latency: a running worker, a producer in another process enqueueing ``--latency-jobs``
  jobs at ``--latency-rate`` per second; each job's start time less its enqueue time;
* **W4** ``--sleep-jobs`` jobs that each sleep 10 ms, drained by one worker process;
* **W5** an idle worker's CPU, as a share of one core, over ``--idle-seconds``;
* **W6** a worker SIGKILLed while it runs a job, and another started: does the job run again?

asyncq: defaults (``synchronous=normal``), a worker of concurrency 100. huey 3.5.4 at its
fastest: ``fsync=False`` (``synchronous=off``: a crash of the OS can lose jobs), a consumer
polling every 10 ms (``initial_delay = max_delay = 0.01``), ``--huey-workers`` threads for
W2 (4 by default, its best here) and 100 for W4. huey deletes a job from the queue when a
worker dequeues it, before it runs: a worker killed mid-job loses it (W6 shows it). asyncq
keeps the job leased until it is settled: a killed worker's job runs again
(``redelivered=True``) once its lease runs out (W6 sets ``visibility_timeout=2``).

Each library runs in its own interpreter: huey from ``.venv-bench-huey`` (``--huey-python``),
asyncq from ``.venv-bench-asyncq`` where it exists (a plain install of this checkout), else
this interpreter. Only the standard library is imported by the driver.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SLEEP = 0.01
HOLD = 1.0
"""Seconds the job of the killed-worker check runs."""
KILL_VT = 2.0
"""asyncq's visibility timeout in the killed-worker check (30 s by default)."""
CONCURRENCY = 100


# -- what runs in the children ------------------------------------------------------------------
class Probe:
    """Counts runs in the worker's memory; the run that reaches the target writes the time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.target = int(os.environ.get("BENCH_TARGET", "0"))
        self.runs = 0
        self.latencies: list[float] = []
        self.lock = threading.Lock()  # huey's worker threads

    def ready(self) -> None:
        path = self.directory / "ready"
        if not path.exists():
            path.write_text(repr(time.time()))

    def count(self) -> None:
        with self.lock:
            self.runs += 1
            if self.runs == self.target:
                (self.directory / "done").write_text(repr(time.time()))

    def hold(self) -> None:
        """A job that holds its worker: it says when it started."""
        (self.directory / "held").write_text(repr(time.time()))

    def latency(self, sent: float) -> None:
        started = time.time()
        with self.lock:
            self.latencies.append(started - sent)
            if len(self.latencies) == self.target:
                (self.directory / "done").write_text(json.dumps(self.latencies))


def asyncq_child(role: str, directory: Path, args: dict[str, Any]) -> dict[str, Any]:
    import anyio

    import asyncq

    probe = Probe(directory)
    app = asyncq.App(f"sqlite:///{directory / 'asyncq.db'}?visibility_timeout={args['vt']}")

    @app.lifespan
    async def lifespan(app: asyncq.App) -> Any:
        probe.ready()
        yield

    @app.task(name="noop")
    async def noop() -> None:
        probe.count()

    @app.task(name="sleep")
    async def sleep() -> None:
        await anyio.sleep(SLEEP)
        probe.count()

    @app.task(name="latency")
    async def latency(sent: float) -> None:
        probe.latency(sent)

    @app.task(name="hold")
    async def hold() -> None:
        probe.hold()
        await anyio.sleep(HOLD)
        probe.count()

    tasks = {"noop": noop, "sleep": sleep, "hold": hold}

    async def main() -> dict[str, Any]:
        if role == "worker":
            await app.run_worker(concurrency=CONCURRENCY, handle_signals=True)
            return {}
        out: dict[str, Any] = {}
        async with app:
            n = args["jobs"]
            if role == "enqueue":
                start = time.perf_counter()
                for _ in range(n):
                    await noop.enqueue()
                out["enqueue"] = n / (time.perf_counter() - start)
                start = time.perf_counter()
                for i in range(0, n, 1000):
                    await noop.enqueue_many([()] * min(1000, n - i))
                out["bulk"] = n / (time.perf_counter() - start)

                async def enqueuer(count: int) -> None:
                    for _ in range(count):
                        await noop.enqueue()

                start = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(100):
                        tg.start_soon(enqueuer, n // 100)
                out["concurrent"] = (n // 100 * 100) / (time.perf_counter() - start)
            elif role == "fill":
                for i in range(0, n, 1000):
                    await tasks[args["kind"]].enqueue_many([()] * min(1000, n - i))
            elif role == "latency":
                interval = 1 / args["rate"]
                next_at = time.monotonic()
                for _ in range(n):
                    await latency.enqueue(time.time())
                    next_at += interval
                    await anyio.sleep(max(next_at - time.monotonic(), 0))
        return out

    return anyio.run(main)


def huey_child(role: str, directory: Path, args: dict[str, Any]) -> dict[str, Any]:
    from huey import SqliteHuey

    probe = Probe(directory)
    huey = SqliteHuey(filename=str(directory / "huey.db"), fsync=False)

    @huey.on_startup()
    def started() -> None:
        probe.ready()

    @huey.task(name="noop")
    def noop() -> None:
        probe.count()

    @huey.task(name="sleep")
    def sleep() -> None:
        time.sleep(SLEEP)
        probe.count()

    @huey.task(name="latency")
    def latency(sent: float) -> None:
        probe.latency(sent)

    @huey.task(name="hold")
    def hold() -> None:
        probe.hold()
        time.sleep(HOLD)
        probe.count()

    tasks = {"noop": noop, "sleep": sleep, "hold": hold}
    out: dict[str, Any] = {}
    n = args["jobs"]
    if role == "worker":
        consumer = huey.create_consumer(
            workers=args["workers"],
            worker_type="thread",
            initial_delay=0.01,
            backoff=1.0,
            max_delay=0.01,
            periodic=False,
            check_worker_health=False,
        )
        consumer.run()
    elif role == "enqueue":
        start = time.perf_counter()
        for _ in range(n):
            noop()
        out["enqueue"] = n / (time.perf_counter() - start)
    elif role == "fill":
        for _ in range(n):
            tasks[args["kind"]]()
    elif role == "latency":
        interval = 1 / args["rate"]
        next_at = time.monotonic()
        for _ in range(n):
            latency(time.time())
            next_at += interval
            time.sleep(max(next_at - time.monotonic(), 0))
    return out


# -- the driver ---------------------------------------------------------------------------------
class Library:
    def __init__(self, name: str, python: str) -> None:
        self.name, self.python = name, python

    def child(self, role: str, directory: Path, **args: Any) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_TARGET": str(args.get("target", 0))}
        args.setdefault("vt", 30.0)
        args.setdefault("jobs", 0)
        return subprocess.Popen(
            [self.python, __file__, "--child", self.name, role, str(directory), json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def run(self, role: str, directory: Path, **args: Any) -> dict[str, Any]:
        process = self.child(role, directory, **args)
        out, err = process.communicate(timeout=600)
        if process.returncode:
            raise RuntimeError(f"{self.name} {role} failed:\n{err}")
        return json.loads(out.splitlines()[-1]) if out.strip() else {}

    def version(self) -> str:
        name = "asyncq" if self.name == "asyncq" else "huey"
        return subprocess.run(
            [self.python, "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
            capture_output=True,
            text=True,
        ).stdout.strip()


def _wait_for(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.005)
    return path.read_text()


def _stop(worker: subprocess.Popen[str]) -> None:
    worker.send_signal(signal.SIGINT if "huey" in worker.args[3] else signal.SIGTERM)
    try:
        worker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.communicate()


def drain(lib: Library, kind: str, jobs: int, workers: int) -> float:
    directory = Path(tempfile.mkdtemp(prefix=f"bench-{lib.name}-"))
    lib.run("fill", directory, jobs=jobs, kind=kind)
    worker = lib.child("worker", directory, jobs=jobs, target=jobs, workers=workers)
    try:
        ready = float(_wait_for(directory / "ready", 60))
        done = float(_wait_for(directory / "done", 600))
    finally:
        _stop(worker)
    return jobs / (done - ready)


def latency(lib: Library, jobs: int, rate: float, workers: int) -> tuple[float, float]:
    directory = Path(tempfile.mkdtemp(prefix=f"bench-{lib.name}-"))
    worker = lib.child("worker", directory, jobs=jobs, target=jobs, workers=workers)
    try:
        _wait_for(directory / "ready", 60)
        time.sleep(0.5)  # the worker's first fetch, not its start, is what is measured
        lib.run("latency", directory, jobs=jobs, rate=rate)
        values = sorted(json.loads(_wait_for(directory / "done", 120)))
    finally:
        _stop(worker)
    p50 = statistics.median(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return p50 * 1000, p99 * 1000


def idle_cpu(lib: Library, seconds: float) -> float:
    """The share of one core an idle worker uses."""
    directory = Path(tempfile.mkdtemp(prefix=f"bench-{lib.name}-"))
    worker = lib.child("worker", directory, workers=4)
    try:
        _wait_for(directory / "ready", 60)
        time.sleep(2.0)  # past the start and the first backed-off looks
        before = _cpu_seconds(worker.pid)
        time.sleep(seconds)
        used = _cpu_seconds(worker.pid) - before
    finally:
        _stop(worker)
    return used / seconds * 100


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def killed_worker(lib: Library) -> str:
    """A worker SIGKILLed while it runs a job, another started: does the job run again?"""
    directory = Path(tempfile.mkdtemp(prefix=f"bench-{lib.name}-"))
    lib.run("fill", directory, jobs=1, kind="hold", vt=KILL_VT)
    first = lib.child("worker", directory, target=1, workers=1, vt=KILL_VT)
    _wait_for(directory / "held", 60)
    first.kill()
    first.communicate()
    killed = time.time()
    second = lib.child("worker", directory, target=1, workers=1, vt=KILL_VT)
    try:
        done = float(_wait_for(directory / "done", KILL_VT + HOLD + 20))
    except TimeoutError:
        return f"lost (not run again within {KILL_VT + HOLD + 20:g} s)"
    finally:
        _stop(second)
    return f"ran again, done {done - killed:.1f} s after the kill"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=4, metavar=("LIB", "ROLE", "DIR", "ARGS"))
    parser.add_argument("--only", action="append", choices=("W1", "W2", "W3", "W4", "W5", "W6"))
    parser.add_argument("--jobs", type=int, default=20000, help="W1")
    parser.add_argument("--drain-jobs", type=int, default=20000, help="W2")
    parser.add_argument("--latency-jobs", type=int, default=2000, help="W3")
    parser.add_argument("--latency-rate", type=float, default=200.0, help="W3, jobs/s")
    parser.add_argument("--sleep-jobs", type=int, default=5000, help="W4")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="W5")
    parser.add_argument("--huey-workers", type=int, default=4, help="W2 and W3 threads")
    parser.add_argument("--huey-python", default=str(ROOT / ".venv-bench-huey/bin/python"))
    default_asyncq = ROOT / ".venv-bench-asyncq/bin/python"
    parser.add_argument(
        "--asyncq-python",
        default=str(default_asyncq) if default_asyncq.exists() else sys.executable,
    )
    args = parser.parse_args()
    if args.child:
        name, role, directory, raw = args.child
        run = asyncq_child if name == "asyncq" else huey_child
        print(json.dumps(run(role, Path(directory), json.loads(raw))))
        return
    only = set(args.only or ("W1", "W2", "W3", "W4", "W5", "W6"))
    libs = [Library("asyncq", args.asyncq_python), Library("huey", args.huey_python)]
    print(
        f"load average at the start {os.getloadavg()[0]:.2f}; "
        + ", ".join(f"{lib.name} {lib.version()}" for lib in libs)
    )
    rows: dict[str, dict[str, str]] = {lib.name: {} for lib in libs}
    for lib in libs:
        row = rows[lib.name]
        if "W1" in only:
            directory = Path(tempfile.mkdtemp(prefix=f"bench-{lib.name}-"))
            w1 = lib.run("enqueue", directory, jobs=args.jobs)
            row["W1 enqueue"] = f"{w1['enqueue']:,.0f}/s"
            row["W1 bulk"] = f"{w1['bulk']:,.0f}/s" if "bulk" in w1 else "-"
            row["W1 100 enqueuers"] = f"{w1['concurrent']:,.0f}/s" if "concurrent" in w1 else "-"
        if "W2" in only:
            row["W2 drain"] = f"{drain(lib, 'noop', args.drain_jobs, args.huey_workers):,.0f}/s"
        if "W3" in only:
            p50, p99 = latency(lib, args.latency_jobs, args.latency_rate, args.huey_workers)
            row["W3 p50 / p99"] = f"{p50:.2f} / {p99:.2f} ms"
        if "W4" in only:
            row["W4 10 ms jobs"] = f"{drain(lib, 'sleep', args.sleep_jobs, CONCURRENCY):,.0f}/s"
        if "W5" in only:
            row["W5 idle worker CPU"] = f"{idle_cpu(lib, args.idle_seconds):.2f}% of a core"
        if "W6" in only:
            row["W6 killed worker's job"] = killed_worker(lib)
        print(f"{lib.name}: {row}", flush=True)
    columns = list(rows["asyncq"])
    width = max(map(len, columns)) + 2
    cell = max(len(value) for row in rows.values() for value in row.values())
    print(f"{'':{width}}" + "".join(f"  {lib.name:>{cell}}" for lib in libs))
    for column in columns:
        values = "".join(f"  {rows[lib.name].get(column, '-'):>{cell}}" for lib in libs)
        print(f"{column:{width}}{values}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
