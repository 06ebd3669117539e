"""The ``asyncq`` command.

Subprocess tests run the real command (``python -m asyncq`` or the console script) with the
tests directory as working directory and on PYTHONPATH, so the apps in ``tests/apps/`` can
be named as ``apps.<module>:app``; they synchronise on the output lines the command and
its jobs print, read as they arrive, never on sleeps. In-process tests use click's
CliRunner, which shares this process's ``memory://`` brokers with the test, and run burst
workers in between the commands.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import pytest
import services
from anyio.abc import ByteReceiveStream, Process
from anyio.streams.buffered import BufferedByteReceiveStream
from harness import exited

import asyncq
from asyncq.supervisor import Supervisor

TESTS_DIR = Path(__file__).parent
CONSOLE_SCRIPT = Path(sys.executable).parent / "asyncq"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} ")


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m asyncq ARGS`` to completion (killed if it outlives ``timeout``)."""
    return subprocess.run(
        [sys.executable, "-m", "asyncq", *args],
        cwd=TESTS_DIR,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- help and version ------------------------------------------------------------------------
def test_version_from_the_console_script() -> None:
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"asyncq {asyncq.__version__}"


def test_help_lists_the_commands_and_the_exit_codes() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    for command in ("run", "enqueue", "stats", "workers", "dlq"):
        assert re.search(rf"^\s+{command}\s", done.stdout, re.MULTILINE), command
    assert "Exit codes:" in done.stdout
    for code in ("0", "1", "2", "130"):
        assert re.search(rf"^\s+{code}\s", done.stdout, re.MULTILINE), code


@pytest.mark.parametrize("command", [["run"], ["enqueue"], ["stats"], ["dlq", "replay"]])
def test_each_command_has_help(command: list[str]) -> None:
    done = run_cli(*command, "--help")
    assert done.returncode == 0
    assert "MODULE:APP" in done.stdout


def test_console_script_imports_the_app_from_the_working_directory() -> None:
    # No PYTHONPATH: the app must be found because the working directory holds it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "stats", "apps.good:app"],
        cwd=TESTS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0].split() == [
        "QUEUE",
        "PENDING",
        "SCHEDULED",
        "RUNNING",
        "DEAD",
        "LAG",
        "WORKERS",
        "NOTE",
    ]


# -- user mistakes: one line, a meaningful exit code, no traceback -----------------------------
MISTAKES = {
    "module not found": (
        ["stats", "apps.no_such_module:app"],
        2,
        "module 'apps.no_such_module' not found",
    ),
    "package not found": (
        ["stats", "no_such_package.tasks:app"],
        2,
        "module 'no_such_package.tasks' not found",
    ),
    "attribute missing": (["stats", "apps.good:no_such_app"], 2, "has no attribute 'no_such_app'"),
    "not an App": (["stats", "apps.good:not_an_app"], 2, "is an int, not an asyncq.App"),
    "no attribute part": (["stats", "apps.good"], 2, "not in the form MODULE:ATTRIBUTE"),
    "import error inside the module": (
        ["stats", "apps.broken_import:app"],
        2,
        "No module named 'a_dependency_that_is_not_installed' (apps/broken_import.py, line 5)",
    ),
    "broker URL without scheme": (
        ["stats", "apps.good:app", "--broker", "localhost"],
        2,
        "has no scheme",
    ),
    "unknown broker scheme": (
        ["stats", "apps.good:app", "--broker", "nosuchbroker://host"],
        2,
        "no asyncq backend is installed for 'nosuchbroker://'",
    ),
    "unknown broker URL option": (
        ["stats", "apps.good:app", "--broker", "memory://x?bogus=1"],
        2,
        "unknown option 'bogus'",
    ),
    "unknown broker URL option, waiting for the broker": (
        ["run", "apps.good:app", "--broker", "memory://x?bogus=1", "--wait-for-broker", "30"],
        2,
        "unknown option 'bogus'",
    ),
    "unreachable broker": (["stats", "apps.unreachable:app"], 1, "cannot reach the broker"),
    "unreachable broker, dlq": (
        ["dlq", "list", "apps.unreachable:app"],
        1,
        "cannot reach the broker",
    ),
    "unreachable broker, worker": (
        ["run", "apps.unreachable:app", "--burst"],
        1,
        "cannot reach the broker",
    ),
    "bad JSON": (["enqueue", "apps.good:app", "add", "--args", "[1,"], 2, "not valid JSON"),
    "args not a list": (
        ["enqueue", "apps.good:app", "add", "--args", '{"a": 1}'],
        2,
        "expected a JSON list",
    ),
    "kwargs not an object": (
        ["enqueue", "apps.good:app", "add", "--kwargs", "[1, 2]"],
        2,
        "expected a JSON object",
    ),
    "unserialisable args": (
        ["enqueue", "apps.good:app", "add", "--args", "[1, 123456789012345678901234567890]"],
        2,
        "cannot be serialized",
    ),
    "args that do not fit the task": (
        ["enqueue", "apps.good:app", "add", "--args", "[1]"],
        2,
        "missing a required argument: 'b'",
    ),
    "unknown task": (
        ["enqueue", "apps.good:app", "no_such_task"],
        2,
        "apps.good:app: no task named 'no_such_task' (known tasks: add, send_email)",
    ),
    "negative delay": (["enqueue", "apps.good:app", "add", "--delay", "-1"], 2, "'--delay'"),
    "timeout without wait": (["enqueue", "apps.good:app", "add", "--timeout", "1"], 2, "--wait"),
    "priority beyond 9": (
        ["enqueue", "apps.good:app", "add", "--args", "[1, 2]", "--priority", "10"],
        2,
        "priority must be an integer from 0 to 9 (higher runs first), not 10",
    ),
    "bad concurrency": (["run", "apps.good:app", "--concurrency", "0"], 2, "'--concurrency'"),
    "empty queue name": (["run", "apps.good:app", "--queues", "a,,b"], 2, "queue names"),
    "metrics ports beyond 65535": (
        ["run", "apps.good:app", "--processes", "3", "--metrics-port", "65534"],
        2,
        "the worker processes take ports 65534 to 65536, beyond 65535",
    ),
    "bad log format": (["run", "apps.good:app", "--log-format", "xml"], 2, "'--log-format'"),
    "unknown command": (["no-such-command"], 2, "No such command"),
}


@pytest.mark.parametrize(("args", "code", "message"), MISTAKES.values(), ids=MISTAKES.keys())
def test_user_mistake_is_one_error_line(args: list[str], code: int, message: str) -> None:
    done = run_cli(*args)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    assert message in errors[0]
    # Only `run` logs before it fails; every other command says nothing but the error.
    if args[0] != "run":
        assert done.stderr.splitlines() == errors


def test_a_metrics_port_in_use_is_one_error_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(
            "run", "apps.good:app", "--metrics-port", str(port), "--metrics-address", "127.0.0.1"
        )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"error: --metrics-port: cannot listen on 127.0.0.1:{port}" in done.stderr


# -- memory:// in a separate process: an empty broker ----------------------------------------
def test_stats_of_an_empty_memory_broker() -> None:
    done = run_cli("stats", "apps.good:app")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows == [
        ["QUEUE", "PENDING", "SCHEDULED", "RUNNING", "DEAD", "LAG", "WORKERS", "NOTE"],
        ["default", "0", "0", "0", "0", "0s", "0"],
        ["emails", "0", "0", "0", "0", "0s", "0"],
    ]


def test_stats_json_of_an_empty_memory_broker() -> None:
    done = run_cli("stats", "apps.good:app", "--json", "--queues", "emails")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "emails": {
            "pending": 0,
            "scheduled": 0,
            "running": 0,
            "dead": 0,
            "oldest_pending_age": 0.0,
            "workers": 0,
        }
    }


def test_dlq_list_of_an_empty_memory_broker() -> None:
    done = run_cli("dlq", "list", "apps.good:app")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no dead letters in any queue"
    done = run_cli("dlq", "list", "apps.good:app", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


IN_PROCESS_WARNING = "warning: memory://cli-good is an in-process broker: "


@pytest.mark.parametrize(
    ("args", "consequence"),
    [
        (["stats", "apps.good:app"], "this command sees only what it does itself"),
        (["dlq", "list", "apps.good:app"], "this command sees only what it does itself"),
        (["workers", "apps.good:app"], "this command sees only what it does itself"),
        (["enqueue", "apps.good:app", "add", "--args", "[1, 2]"], "no worker can ever run"),
        (["run", "apps.good:app", "--burst"], "runs only the jobs its own app enqueues"),
    ],
)
def test_every_command_on_an_in_process_broker_says_so(args: list[str], consequence: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith(IN_PROCESS_WARNING)
    assert consequence in warning
    assert "--broker URL or $ASYNCQ_BROKER" in warning


def test_enqueue_wait_on_an_in_process_broker_refuses_instead_of_hanging() -> None:
    done = run_cli("enqueue", "apps.good:app", "add", "--args", "[1, 2]", "--wait", timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""  # nothing was enqueued, so no id
    assert "error: --wait on memory://cli-good would wait forever" in done.stderr


def test_a_shared_broker_gets_no_in_process_warning() -> None:
    services.require_redis()
    done = run_cli("stats", "apps.good:app", "--broker", f"{services.REDIS_URL}?prefix=tnowarn")
    assert done.returncode == 0, done.stderr
    assert "warning:" not in done.stderr


# -- asyncq run in a subprocess --------------------------------------------------------------
def test_run_burst_runs_the_jobs_and_exits_0() -> None:
    done = run_cli("run", "apps.burst:app", "--burst")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["ran 0", "ran 1", "ran 2"]
    # The worker's log lines go to stderr, with timestamps.
    started = [line for line in done.stderr.splitlines() if "asyncq.worker" in line]
    assert started and all(TIMESTAMP.match(line) for line in started), done.stderr
    assert "Traceback" not in done.stderr


class CliProcess:
    """A running ``asyncq`` subprocess whose output lines are collected as they arrive."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.worker_pids: set[int] = set()
        """Processes started by a supervisor; killed at the end if they may still run."""
        self._output = anyio.Event()
        self._eof = {"stdout": anyio.Event(), "stderr": anyio.Event()}

    async def pump(self, name: str, stream: ByteReceiveStream | None) -> None:
        assert stream is not None
        lines = self.stdout if name == "stdout" else self.stderr
        buffered = BufferedByteReceiveStream(stream)
        try:
            while True:
                try:
                    line = await buffered.receive_until(b"\n", 1 << 20)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    break
                lines.append(line.decode(errors="replace"))
                self._wake()
            if buffered.buffer:
                lines.append(bytes(buffered.buffer).decode(errors="replace"))
        finally:
            self._eof[name].set()
            self._wake()

    def _wake(self) -> None:
        self._output.set()
        self._output = anyio.Event()

    async def expect(
        self, predicate: Callable[[str], bool], *, stream: str = "stdout", timeout: float = 30.0
    ) -> str:
        """The first line of ``stream`` that matches, waiting up to ``timeout`` for it."""
        lines = self.stdout if stream == "stdout" else self.stderr
        seen = 0
        with anyio.move_on_after(timeout):
            while True:
                for line in lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(lines)
                if self._eof[stream].is_set():
                    break
                await self._output.wait()
        raise AssertionError(f"no matching {stream} line; output so far:\n{self.transcript()}")

    async def finish(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit and its output to end; return its exit code."""
        with anyio.move_on_after(timeout):
            code = await self.process.wait()
            await self._eof["stdout"].wait()
            await self._eof["stderr"].wait()
            return code
        raise AssertionError(f"still running after {timeout} s:\n{self.transcript()}")

    def transcript(self) -> str:
        return "".join(["--- stdout\n", *self.stdout, "--- stderr\n", *self.stderr])

    async def ready_worker(self) -> int:
        """The pid of the next worker process of apps.multi to say it is ready; it is killed
        at the end if it may still run."""
        line = await self.expect(
            lambda line: line.startswith("ready ") and int(line.split()[1]) not in self.worker_pids
        )
        pid = int(line.split()[1])
        self.worker_pids.add(pid)
        return pid

    def lines(self, prefix: str) -> list[str]:
        return [line.split()[1] for line in self.stdout if line.startswith(prefix + " ")]


@asynccontextmanager
async def spawn(*args: str, **env: str) -> AsyncIterator[CliProcess]:
    """Start ``python -m asyncq ARGS``; whatever happens, it and its workers are gone after."""
    process = await anyio.open_process(
        [sys.executable, "-m", "asyncq", *args],
        cwd=TESTS_DIR,
        env=_env(**env),
        stdin=subprocess.DEVNULL,
    )
    cli_process = CliProcess(process)
    try:
        async with anyio.create_task_group() as pumps:
            pumps.start_soon(cli_process.pump, "stdout", process.stdout)
            pumps.start_soon(cli_process.pump, "stderr", process.stderr)
            try:
                yield cli_process
            finally:
                pumps.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode != 0:  # it failed or still runs: its workers may too
                for pid in cli_process.worker_pids:
                    _kill(pid)
            if process.returncode is None:
                process.kill()
            await process.aclose()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.anyio
async def test_sigterm_lets_started_jobs_finish_then_exits_0() -> None:
    async with spawn("run", "apps.slow:app", SLOW_JOB_SECONDS="1") as worker:
        await worker.expect(lambda line: line.startswith("started "))
        worker.process.send_signal(signal.SIGTERM)
        code = await worker.finish()
    assert code == 0, worker.transcript()
    started = worker.lines("started")
    assert started
    assert sorted(worker.lines("finished")) == sorted(started)
    assert "Traceback" not in "".join(worker.stderr)


@pytest.mark.anyio
async def test_second_sigterm_exits_at_once() -> None:
    # The jobs would take minutes, and so would the graceful part of the shutdown.
    args = ("run", "apps.slow:app", "--shutdown-timeout", "300")
    async with spawn(*args, SLOW_JOB_SECONDS="300") as worker:
        await worker.expect(lambda line: line.startswith("started "))
        worker.process.send_signal(signal.SIGTERM)
        await worker.expect(lambda line: "SIGTERM: finishing" in line, stream="stderr")
        worker.process.send_signal(signal.SIGTERM)
        code = await worker.finish(timeout=20)
    assert code == 0, worker.transcript()
    assert worker.lines("finished") == []
    assert "Traceback" not in "".join(worker.stderr)


@pytest.mark.anyio
async def test_each_worker_process_serves_its_own_metrics() -> None:
    args = ["run", "apps.good:app", "--processes", "2", "--metrics-interval", "0.1"]
    args += ["--metrics-port", "0", "--metrics-address", "127.0.0.1"]
    async with spawn(*args) as supervisor:
        ports: list[int] = []

        def serving(line: str) -> bool:
            found = re.search(r"serving Prometheus metrics on http://127.0.0.1:(\d+)/", line)
            return found is not None and int(found.group(1)) not in ports

        for _ in range(2):
            line = await supervisor.expect(serving, stream="stderr")
            ports.append(int(line.rsplit(":", 1)[1].split("/")[0]))
        for port in ports:
            # Served from the start; the depths once that process's worker has read them.
            url = f"http://127.0.0.1:{port}/metrics"
            with anyio.fail_after(30):
                while "queue_depth_pending{" not in (
                    text := await anyio.to_thread.run_sync(partial(_fetch, url))
                ):
                    pass
            assert 'queue="emails"' in text
        supervisor.process.send_signal(signal.SIGTERM)
        code = await supervisor.finish()
    assert code == 0, supervisor.transcript()
    assert len(set(ports)) == 2


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


@pytest.mark.anyio
async def test_processes_are_supervised_restarted_and_stopped() -> None:
    async with spawn("run", "apps.multi:app", "--processes", "2") as supervisor:
        first, second = await supervisor.ready_worker(), await supervisor.ready_worker()
        os.kill(first, signal.SIGKILL)
        replacement = await supervisor.ready_worker()
        supervisor.process.send_signal(signal.SIGTERM)
        code = await supervisor.finish()
    assert code == 0, supervisor.transcript()
    assert not any(_alive(pid) for pid in (first, second, replacement))
    log = "".join(supervisor.stderr)
    assert f"(pid {first}) was killed by SIGKILL unexpectedly; restarting it" in log
    assert "Traceback" not in log


@pytest.mark.anyio
async def test_worker_processes_exit_when_their_supervisor_is_killed() -> None:
    async with spawn("run", "apps.multi:app", "--processes", "2") as supervisor:
        first, second = await supervisor.ready_worker(), await supervisor.ready_worker()
        os.kill(first, signal.SIGKILL)
        replacement = await supervisor.ready_worker()  # a restarted child must notice too
        supervisor.process.kill()
        # The supervisor's output ends once the last worker process writing to it exits.
        code = await supervisor.finish(timeout=10)
    assert code == -signal.SIGKILL
    with anyio.fail_after(5):
        for pid in (second, replacement):
            await exited(pid)
    log = "".join(supervisor.stderr)
    assert log.count("the supervisor has exited") == 2, log
    assert "Traceback" not in log


@pytest.mark.anyio
async def test_supervised_burst_workers_are_not_restarted() -> None:
    async with spawn("run", "apps.burst:app", "--burst", "--processes", "2") as supervisor:
        code = await supervisor.finish()
    assert code == 0, supervisor.transcript()
    # Each worker process has its own memory:// broker, with its own three jobs.
    assert sorted(supervisor.lines("ran")) == ["0", "0", "1", "1", "2", "2"]
    assert "".join(supervisor.stderr).count("finished: its queues are drained") == 2


# -- worker recycling (--max-jobs, --max-memory), on Redis: processes share its queues -------
@pytest.fixture
async def recycling_url(unique: str) -> AsyncIterator[str]:
    await anyio.to_thread.run_sync(services.require_broker, "redis")
    yield services.broker_url("redis", unique)
    await anyio.to_thread.run_sync(services.clean_broker, "redis", unique)


async def enqueue_leaky(url: str, count: int) -> asyncq.App:
    """``count`` jobs for tests/apps/recycling.py on ``url``; the App that sent them."""
    app = asyncq.App(url)

    @app.task(name="leaky", queue="recycling")
    async def leaky(n: int) -> None: ...

    async with app:
        await leaky.enqueue_many([(n,) for n in range(count)])
    return app


def ran_jobs(process: CliProcess) -> list[tuple[int, int, int]]:
    """(job, pid, attempt) of each "ran" line of tests/apps/recycling.py."""
    out = []
    for line in process.stdout:
        if line.startswith("ran "):
            n, pid, attempt = map(int, line.split()[1:])
            out.append((n, pid, attempt))
    return out


async def queue_is_empty(app: asyncq.App) -> bool:
    async with app:
        stats = (await app.queue_stats(["recycling"]))["recycling"]
    return stats == asyncq.QueueStats("recycling")


@pytest.mark.anyio
async def test_max_jobs_worker_exits_75_after_that_many(recycling_url: str) -> None:
    app = await enqueue_leaky(recycling_url, 10)
    args = ("run", "apps.recycling:app", "--broker", recycling_url, "--max-jobs", "3")
    async with spawn(*args, "--concurrency", "2") as worker:
        code = await worker.finish()
    assert code == 75, worker.transcript()
    assert sorted(n for n, _, _ in ran_jobs(worker)) == [0, 1, 2]
    assert "recycles itself: it has taken 3 job(s), its max_jobs" in "".join(worker.stderr)
    async with app:
        stats = (await app.queue_stats(["recycling"]))["recycling"]
    assert (stats.pending, stats.running, stats.dead) == (7, 0, 0)


@pytest.mark.anyio
async def test_supervisor_replaces_a_worker_past_max_jobs(recycling_url: str) -> None:
    app = await enqueue_leaky(recycling_url, 20)
    args = ["run", "apps.recycling:app", "--broker", recycling_url, "--processes", "2"]
    async with spawn(*args, "--max-jobs", "5", "--concurrency", "2") as supervisor:
        await supervisor.expect(lambda _: len(ran_jobs(supervisor)) >= 20, timeout=60)
        supervisor.process.send_signal(signal.SIGTERM)
        code = await supervisor.finish()
    assert code == 0, supervisor.transcript()
    ran = ran_jobs(supervisor)
    assert sorted(n for n, _, _ in ran) == list(range(20))  # each once: none lost, none twice
    assert {attempt for _, _, attempt in ran} == {1}  # no retry spent
    assert len({pid for _, pid, _ in ran}) >= 4  # 20 jobs, at most 5 per process
    assert "".join(supervisor.stderr).count("recycled itself; starting a fresh one") >= 2
    assert await queue_is_empty(app)


@pytest.mark.anyio
async def test_supervisor_replaces_a_worker_past_max_memory(recycling_url: str) -> None:
    # Each job keeps 8 MB; a worker process starts near 60 MB, so one past 120 MB has run
    # about eight jobs. Looked at four times a second, a worker overshoots by what it runs in
    # the meantime (about 4 jobs here).
    app = await enqueue_leaky(recycling_url, 40)
    args = ["run", "apps.recycling:app", "--broker", recycling_url, "--processes", "2"]
    args += ["--max-memory", "120", "--concurrency", "2"]
    async with spawn(*args, LEAK_MB="8", JOB_SECONDS="0.1") as supervisor:
        await supervisor.expect(lambda _: len(ran_jobs(supervisor)) >= 40, timeout=90)
        supervisor.process.send_signal(signal.SIGTERM)
        code = await supervisor.finish()
    assert code == 0, supervisor.transcript()
    ran = ran_jobs(supervisor)
    assert sorted(n for n, _, _ in ran) == list(range(40))
    assert {attempt for _, _, attempt in ran} == {1}
    assert len({pid for _, pid, _ in ran}) >= 3
    log = "".join(supervisor.stderr)
    assert "is over --max-memory (120 MB)" in log, log
    assert await queue_is_empty(app)


# -- the supervisor on its own ---------------------------------------------------------------
@pytest.mark.anyio
async def test_supervisor_stops_instead_of_restarting_a_fatal_exit() -> None:
    command = [sys.executable, "-c", "raise SystemExit(2)"]
    supervisor = Supervisor(command, 2, shutdown_timeout=1.0, fatal_exit_codes={2})
    with anyio.fail_after(30):
        assert await supervisor.run() == 2


@pytest.mark.anyio
async def test_supervisor_kills_a_child_that_ignores_sigterm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The child opens the FIFO once it ignores SIGTERM: that open is the test's cue to stop.
    ready = tmp_path / "ready"
    os.mkfifo(ready)
    child = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(120)\n"
    )
    supervisor = Supervisor([sys.executable, "-c", child], 1, shutdown_timeout=0, kill_grace=0.2)
    codes: list[int] = []

    async def supervise() -> None:
        codes.append(await supervisor.run())

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervise)
            await anyio.to_thread.run_sync(ready.read_bytes)
            supervisor.stop()
    assert codes == [1]  # killed, so not a clean exit
    assert "did not stop within 0.2 s; killing it" in caplog.text


def test_the_enqueue_help_example_names_a_task_as_default_naming_does() -> None:
    app = asyncq.App("memory://help-example")

    async def send_email(to: str) -> None: ...

    send_email.__module__ = "shop.tasks"  # as if defined at the top of shop/tasks.py
    send_email.__qualname__ = "send_email"
    task = app.task(send_email)
    done = run_cli("enqueue", "--help")
    assert f"asyncq enqueue shop.tasks:app {task.name} --kwargs" in done.stdout
