"""asyncq at two commits side by side: Redis and AMQP enqueue and drain, instructions per job.

    python3 benchmarks/compare_commits.py --base 65c57f3 --candidate main --callgrind
    python3 benchmarks/compare_commits.py --quick --callgrind          # smoke run, ~3 min
    python3 benchmarks/compare_commits.py --base-dir A --base-python A/.venv/bin/python \\
        --candidate-dir B --candidate-python B/.venv/bin/python

Each side is a checkout with a virtualenv of its own. Given refs, the script puts the base
in a detached worktree (``../wt-base`` beside this repository's work tree) and the
candidate in another (``../wt-cand``), each with ``.venv-bench`` holding ``pip install -e
'.[redis,amqp]'`` (made again when ``pyproject.toml`` changed). Given directories and
pythons, it uses them as they are.

The timed workloads are each checkout's own ``redis_compare.py`` and ``amqp_compare.py``,
run with ``--libs asyncq --json`` under the checkout's python (asyncq in that process): W1
enqueue (one await per job, then ``enqueue_many``) and W2 drain. Their W3 and W4 run at
one job each, since only W1 and W2 are compared. The sides alternate, base first: round
1 runs Redis base, Redis candidate, AMQP base, AMQP candidate, then round 2, and so on.

``--callgrind`` adds a count of instructions per job on ``memory://`` under ``valgrind
--tool=callgrind``, the same workload for both sides (this file's ``--callgrind-child``
mode, run by each side's python): after a warm-up, a worker drains K jobs; a second run
drains F jobs (few); instructions per job = (Ir(K) - Ir(F)) / (K - F), so the
interpreter's start-up, the imports, the warm-up and the worker's start and stop cancel
out. Both runs enqueue K jobs, the ones not to be drained on a queue no worker serves, so
the enqueue cost cancels too. ``enqueue`` (one await per job) and ``enqueue_many`` count
the same way: K jobs enqueued after the warm-up, against F.

Only the standard library is imported here; the child mode imports asyncq and anyio from
the side's virtualenv.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV = ".venv-bench"
EXTRAS = "[redis,amqp]"
BASE_REF = "65c57f3"
"""The last commit before issue 11."""
THRESHOLD = 0.05
"""How much slower the candidate may be: rates at least 95% of the base's, instructions at
most 105%."""
BENCH_FILES = (
    "benchmarks/redis_compare.py",
    "benchmarks/amqp_compare.py",
    "benchmarks/peers/__init__.py",
    "benchmarks/peers/common.py",
    "benchmarks/peers/asyncq_peer.py",
    "benchmarks/amqp_peers/__init__.py",
    "benchmarks/amqp_peers/common.py",
    "benchmarks/amqp_peers/asyncq_peer.py",
)
"""The harness each side runs from its own checkout; a difference is reported."""
BROKERS = {"redis": "benchmarks/redis_compare.py", "amqp": "benchmarks/amqp_compare.py"}
METRICS = (
    # (broker, JSON field, label, workload whose failure loses it)
    ("redis", "enqueue_rate", "Redis W1 enqueue, 1 await/job", "W1 enqueue"),
    ("redis", "bulk_rate", "Redis W1 enqueue_many", "W1 enqueue"),
    ("redis", "drain_rate", "Redis W2 drain", "W2 drain"),
    ("amqp", "enqueue_rate", "AMQP W1 enqueue, 1 await/job", "W1 enqueue"),
    ("amqp", "bulk_rate", "AMQP W1 enqueue_many", "W1 enqueue"),
    ("amqp", "drain_rate", "AMQP W2 drain", "W2 drain"),
)
CALLGRIND_WORKLOADS = ("drain", "enqueue", "enqueue_many")


class BenchError(Exception):
    """A side could not be prepared or a run failed for good."""


@dataclass(slots=True)
class Side:
    label: str
    """``base`` or ``candidate``."""
    ref: str
    directory: Path
    python: Path
    commit: str = ""
    describe: str = ""
    """asyncq's path and the client versions the side's python imports."""
    runs: dict[str, list[float]] = field(default_factory=dict)
    """Metric label -> one number per run."""
    instructions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Callgrind workload -> one measurement per repeat."""


@dataclass(frozen=True, slots=True)
class Settings:
    runs: int
    brokers: list[str]
    jobs: int
    enqueue_jobs: int
    concurrency: int
    batch: int
    retries: int
    amqp_port: int | None
    rabbitmq_node: str | None
    redis_db: int | None
    callgrind: list[str]
    callgrind_jobs: int
    callgrind_few: int
    callgrind_warmup: int
    callgrind_repeat: int
    work_dir: Path
    keep: bool


# -- the checkouts -----------------------------------------------------------------------------
def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)} (in {cwd}) failed: {done.stderr.strip()}")
    return done.stdout.strip()


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_worktree(repo: Path, side: Side) -> None:
    """Put ``side.directory`` at ``side.ref``: a new detached worktree of ``repo``, or an
    existing one of it, checked out again if it has no changes to tracked files."""
    side.commit = git("rev-parse", "--verify", f"{side.ref}^{{commit}}", cwd=repo)
    where = side.directory
    if not where.exists():
        say(f"{side.label}: git worktree add --detach {where} {side.commit[:12]}")
        git("worktree", "add", "--detach", str(where), side.commit, cwd=repo)
        return
    common = Path(git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=where))
    ours = Path(git("rev-parse", "--path-format=absolute", "--git-common-dir", cwd=repo))
    if common.resolve() != ours.resolve():
        raise BenchError(f"{where} is not a worktree of {repo}")
    if git("rev-parse", "HEAD", cwd=where) == side.commit:
        return
    if git("status", "--porcelain", "--untracked-files=no", cwd=where):
        raise BenchError(f"{where} has changes to tracked files: commit or discard them first")
    say(f"{side.label}: git -C {where} checkout --detach {side.commit[:12]}")
    git("checkout", "-q", "--detach", side.commit, cwd=where)


def prepare_venv(side: Side) -> None:
    """``.venv-bench`` in the checkout, with the checkout installed editable; installed
    again only when ``pyproject.toml`` (entry points, dependencies) changed since."""
    venv = side.directory / VENV
    python = venv / "bin" / "python"
    if not python.exists():
        say(f"{side.label}: python3 -m venv {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    stamp = venv / "asyncq-pyproject.sha256"
    digest = hashlib.sha256((side.directory / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != digest:
        say(f"{side.label}: pip install -e '{side.directory}{EXTRAS}'")
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", f"{side.directory}{EXTRAS}"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise BenchError(f"pip install failed for {side.label}:\n{done.stderr[-3000:]}")
        stamp.write_text(digest + "\n")
    side.python = python


PROBE = """
import json, importlib.metadata as md, asyncq
def v(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
print(json.dumps({"asyncq": asyncq.__file__, "redis": v("redis"), "aio-pika": v("aio-pika"),
                  "anyio": v("anyio")}))
"""


def check_side(side: Side) -> None:
    """The side's python imports asyncq from the side's checkout; note the versions."""
    done = subprocess.run(
        [str(side.python), "-c", PROBE],
        capture_output=True,
        text=True,
        cwd=side.directory,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise BenchError(f"{side.python} cannot import asyncq: {done.stderr.strip()[-2000:]}")
    found = json.loads(done.stdout)
    where = Path(found.pop("asyncq")).resolve()
    if not where.is_relative_to(side.directory.resolve()):
        raise BenchError(f"{side.python} imports asyncq from {where}, not from {side.directory}")
    if not side.commit:
        side.commit = git("rev-parse", "HEAD", cwd=side.directory)
        if git("status", "--porcelain", "--untracked-files=no", cwd=side.directory):
            side.commit += " (with uncommitted changes)"
    versions = ", ".join(f"{k} {v}" for k, v in found.items() if v)
    side.describe = f"{side.directory} at {side.commit[:12]}, {versions}"


def harness_differences(base: Side, candidate: Side) -> list[str]:
    """The harness files that are not the same in both checkouts."""
    differ = []
    for name in BENCH_FILES:
        a, b = base.directory / name, candidate.directory / name
        if (a.read_bytes() if a.exists() else None) != (b.read_bytes() if b.exists() else None):
            differ.append(name)
    return differ


# -- the timed runs ----------------------------------------------------------------------------
_CHILD: subprocess.Popen[bytes] | None = None


def run_child(argv: Sequence[str], *, cwd: Path, log: Path, env: dict[str, str] | None) -> int:
    """Run one benchmark process, its output to ``log``; on an interruption it gets SIGTERM
    (the scripts then stop their workers), and SIGKILL 30 s later."""
    global _CHILD
    with log.open("wb") as out:
        _CHILD = subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        try:
            return _CHILD.wait()
        except BaseException:
            _CHILD.terminate()
            try:
                _CHILD.wait(30)
            except subprocess.TimeoutExpired:
                _CHILD.kill()
                _CHILD.wait()
            raise
        finally:
            _CHILD = None


def tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def script_argv(side: Side, broker: str, cfg: Settings, out: Path) -> list[str]:
    argv = [str(side.python), str(side.directory / BROKERS[broker]), "--libs", "asyncq"]
    argv += ["--json", str(out), "--jobs", str(cfg.jobs), "--enqueue-jobs", str(cfg.enqueue_jobs)]
    argv += ["--concurrency", str(cfg.concurrency), "--batch", str(cfg.batch)]
    # W3 and W4 are not compared: one job each (W3 still runs its 50 warm-up jobs).
    argv += ["--rate", "200", "--duration", "0.005", "--sleep-jobs", "1"]
    if broker == "redis":
        # asyncq in this process, on the side's own redis-py.
        argv += ["--asyncq-python", str(side.python)]
        if cfg.redis_db is not None:
            argv += ["--db", str(cfg.redis_db)]
    else:
        if cfg.amqp_port is not None:
            argv += ["--amqp-port", str(cfg.amqp_port)]
        if cfg.rabbitmq_node:
            argv += ["--rabbitmq-node", cfg.rabbitmq_node]
    return argv


def timed_run(side: Side, broker: str, cfg: Settings, name: str) -> dict[str, Any]:
    """One run of a broker's script for asyncq; its result (the JSON ``results[0]``)."""
    out = cfg.work_dir / f"{name}.json"
    log = cfg.work_dir / f"{name}.log"
    for attempt in range(cfg.retries + 1):
        out.unlink(missing_ok=True)
        code = run_child(script_argv(side, broker, cfg, out), cwd=side.directory, log=log, env=None)
        problem = None
        result: dict[str, Any]
        try:
            data = json.loads(out.read_text())
            (result,) = data["results"]
        except (OSError, ValueError) as exc:
            problem = f"exit {code}, no results ({exc}): {tail(log)}"
        else:
            wanted = {w for b, _, _, w in METRICS if b == broker}
            lost = {w: e for w, e in result.get("errors", {}).items() if w in wanted}
            if result.get("skipped"):
                problem = f"skipped: {result['skipped']}"
            elif lost:
                problem = "; ".join(f"{w} failed: {e}" for w, e in lost.items())
            elif data.get("interrupted"):
                problem = "interrupted"
        if problem is None:
            found = re.search(r"^worker logs: (.+)$", log.read_text(errors="replace"), re.M)
            if found and not cfg.keep:
                shutil.rmtree(found.group(1).strip(), ignore_errors=True)
            return result
        say(f"  {name}: {problem}" + ("; trying again" if attempt < cfg.retries else ""))
    raise BenchError(f"{name} failed {cfg.retries + 1} time(s); see {log}")


def timed_rounds(sides: Sequence[Side], cfg: Settings) -> None:
    total = cfg.runs * len(cfg.brokers) * len(sides)
    step = 0
    for run in range(1, cfg.runs + 1):
        for broker in cfg.brokers:
            for side in sides:
                step += 1
                name = f"{broker}-{side.label}-{run}"
                load = os.getloadavg()[0]
                started = time.monotonic()
                result = timed_run(side, broker, cfg, name)
                numbers = []
                for b, key, label, _ in METRICS:
                    if b == broker:
                        value = float(result[key])
                        side.runs.setdefault(label, []).append(value)
                        numbers.append(f"{label.split(' ', 1)[1]} {value:,.0f}")
                say(
                    f"[{step}/{total}] {name}: {', '.join(numbers)} jobs/s "
                    f"({time.monotonic() - started:.0f} s, load {load:.2f})"
                )


# -- instructions per job (callgrind) ----------------------------------------------------------
def callgrind_total(path: Path) -> int:
    """The total Ir a callgrind output file reports."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise BenchError(f"no totals in {path}")


def callgrind_run(side: Side, cfg: Settings, workload: str, jobs: int, name: str) -> int:
    """Total instructions of one child run under callgrind."""
    out = cfg.work_dir / f"{name}.callgrind"
    log = cfg.work_dir / f"{name}.log"
    argv = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        *child_argv(side, cfg, workload, jobs),
    ]
    # No .pyc written during the counted runs (the warm-up run wrote them): every run
    # imports the same way. A fixed hash seed keeps dict and set layouts the same.
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
    code = run_child(argv, cwd=side.directory, log=log, env=env)
    if code != 0 or not out.exists():
        raise BenchError(f"{name}: valgrind exited {code}: {tail(log)}")
    check_child_output(side, log, jobs)
    total = callgrind_total(out)
    if not cfg.keep:
        out.unlink()
    return total


def child_argv(side: Side, cfg: Settings, workload: str, jobs: int) -> list[str]:
    return [
        str(side.python),
        str(Path(__file__).resolve()),
        "--callgrind-child",
        workload,
        *("--child-jobs", str(jobs), "--child-total", str(cfg.callgrind_few + cfg.callgrind_jobs)),
        *("--child-warmup", str(cfg.callgrind_warmup), "--concurrency", str(cfg.concurrency)),
        *("--batch", str(cfg.batch)),
    ]


def check_child_output(side: Side, log: Path, jobs: int) -> None:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"the callgrind child printed no result: {tail(log)}")
    found = json.loads(lines[-1])
    if not Path(found["asyncq"]).resolve().is_relative_to(side.directory.resolve()):
        raise BenchError(f"the callgrind child imported asyncq from {found['asyncq']}")
    if found["jobs"] != jobs:
        raise BenchError(f"the callgrind child ran {found['jobs']} jobs, not {jobs}")


def callgrind_rounds(sides: Sequence[Side], cfg: Settings) -> None:
    few, many = cfg.callgrind_few, cfg.callgrind_few + cfg.callgrind_jobs
    # Once without valgrind: checks the workload, and writes the .pyc files.
    for side in sides:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        for workload in cfg.callgrind:
            log = cfg.work_dir / f"callgrind-{side.label}-{workload}-check.log"
            code = run_child(
                child_argv(side, cfg, workload, few), cwd=side.directory, log=log, env=env
            )
            if code != 0:
                raise BenchError(
                    f"callgrind workload {workload} fails on {side.label}: {tail(log)}"
                )
            check_child_output(side, log, few)
    total = cfg.callgrind_repeat * len(cfg.callgrind) * len(sides)
    step = 0
    for repeat in range(1, cfg.callgrind_repeat + 1):
        for workload in cfg.callgrind:
            for side in sides:
                step += 1
                name = f"callgrind-{side.label}-{workload}-{repeat}"
                started = time.monotonic()
                low = callgrind_run(side, cfg, workload, few, f"{name}-few")
                high = callgrind_run(side, cfg, workload, many, f"{name}-many")
                per_job = (high - low) / (many - few)
                side.instructions.setdefault(workload, []).append(
                    {"few": few, "many": many, "ir_few": low, "ir_many": high, "per_job": per_job}
                )
                say(
                    f"[{step}/{total}] {name}: {per_job:,.0f} instructions/job (Ir {low:,} at "
                    f"{few} jobs, {high:,} at {many}; {time.monotonic() - started:.0f} s)"
                )


# -- the callgrind workload (runs under a side's python) ---------------------------------------
def callgrind_child(args: argparse.Namespace) -> None:
    import anyio

    import asyncq

    workload, jobs, total = args.callgrind_child, args.child_jobs, args.child_total
    warmup, concurrency, batch = args.child_warmup, args.concurrency, args.batch

    class State:
        ran = 0
        target = 0
        done = anyio.Event()

    app = asyncq.App("memory://compare-commits")

    @app.task(name="noop", queue="measured")
    async def noop() -> None:
        State.ran += 1
        if State.ran == State.target:
            State.done.set()

    @app.task(name="idle", queue="idle")
    async def idle() -> None:
        return None

    async def enqueue_many(task: asyncq.Task[[], None], n: int) -> None:
        for start in range(0, n, batch):
            await task.enqueue_many([()] * min(batch, n - start))

    async def drain(n: int) -> int:
        State.ran, State.target, State.done = 0, n, anyio.Event()
        async with app.worker(queues=["measured"], concurrency=concurrency) as worker:
            await State.done.wait()
        stats = (await app.queue_stats(["measured"]))["measured"]
        if stats.pending or stats.running or stats.dead or stats.scheduled:
            raise SystemExit(f"drain incomplete: {stats}")
        return int(worker.processed)

    async def main() -> int:
        async with app:
            if workload == "drain":
                await enqueue_many(noop, warmup)
                await drain(warmup)
                # Every run enqueues ``total`` jobs; the ones not drained wait on "idle".
                await enqueue_many(noop, jobs)
                await enqueue_many(idle, total - jobs)
                return await drain(jobs)
            if workload == "enqueue":
                for _ in range(warmup):
                    await idle.enqueue()
                for _ in range(jobs):
                    await noop.enqueue()
            else:
                await enqueue_many(idle, warmup)
                await enqueue_many(noop, jobs)
            return (await app.queue_stats(["measured"]))["measured"].pending

    ran = anyio.run(main)
    print(json.dumps({"asyncq": asyncq.__file__, "workload": workload, "jobs": ran}))


# -- report ------------------------------------------------------------------------------------
def verdict(ratio: float, higher_is_better: bool) -> str:
    change = ratio - 1.0 if higher_is_better else 1.0 - ratio
    if change >= -THRESHOLD:
        return "ok"
    return f"SLOWER by {-change:.1%}"


def report(base: Side, candidate: Side, cfg: Settings, notes: Sequence[str]) -> str:
    head = [
        "| workload | base median | candidate median | candidate / base | within 5% | "
        "base runs | candidate runs |",
        "| --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    rows = []
    for _, _, label, _ in METRICS:
        a, b = base.runs.get(label), candidate.runs.get(label)
        if not a or not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        rows.append(
            f"| {label} (jobs/s) | {ma:,.0f} | {mb:,.0f} | {mb / ma:.3f} | "
            f"{verdict(mb / ma, True)} | {' / '.join(f'{v:,.0f}' for v in a)} | "
            f"{' / '.join(f'{v:,.0f}' for v in b)} |"
        )
    for workload in cfg.callgrind:
        a = [m["per_job"] for m in base.instructions.get(workload, [])]
        b = [m["per_job"] for m in candidate.instructions.get(workload, [])]
        if not a or not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        rows.append(
            f"| memory:// {workload} (instructions/job) | {ma:,.0f} | {mb:,.0f} | "
            f"{mb / ma:.3f} | {verdict(mb / ma, False)} | {' / '.join(f'{v:,.0f}' for v in a)} | "
            f"{' / '.join(f'{v:,.0f}' for v in b)} |"
        )
    out = [
        f"base:      {base.ref} = {base.describe}",
        f"candidate: {candidate.ref} = {candidate.describe}",
    ]
    if cfg.brokers:
        out.append(
            f"{cfg.runs} run(s) per side and broker, alternating base/candidate; W1 "
            f"{cfg.enqueue_jobs:,} jobs (enqueue_many in batches of {cfg.batch:,}), W2 "
            f"{cfg.jobs:,} jobs at concurrency {cfg.concurrency}; rates: higher is better"
        )
    if cfg.callgrind:
        out.append(
            f"callgrind: (Ir at {cfg.callgrind_few + cfg.callgrind_jobs:,} jobs - Ir at "
            f"{cfg.callgrind_few:,}) / {cfg.callgrind_jobs:,}, after {cfg.callgrind_warmup:,} "
            f"warm-up jobs, concurrency {cfg.concurrency}, {cfg.callgrind_repeat} repeat(s); "
            "lower is better"
        )
    out += ["", *head, *rows]
    if notes:
        out += ["", "Notes:", *(f"- {n}" for n in notes)]
    return "\n".join(out)


def document(base: Side, candidate: Side, cfg: Settings, notes: Sequence[str]) -> dict[str, Any]:
    def side(s: Side) -> dict[str, Any]:
        return {
            "ref": s.ref,
            "commit": s.commit,
            "directory": str(s.directory),
            "python": str(s.python),
            "describe": s.describe,
            "runs": s.runs,
            "instructions": s.instructions,
        }

    settings = {k: getattr(cfg, k) for k in cfg.__slots__ if k != "work_dir"}
    return {"settings": settings, "base": side(base), "candidate": side(candidate), "notes": notes}


# -- command line ------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base", default=BASE_REF, metavar="REF", help="base commit (default %(default)s)"
    )
    parser.add_argument(
        "--candidate", default="main", metavar="REF", help="candidate commit (default main)"
    )
    parser.add_argument("--base-dir", type=Path, help="base checkout (default ../wt-base)")
    parser.add_argument("--candidate-dir", type=Path, help="candidate checkout (../wt-cand)")
    parser.add_argument(
        "--base-python",
        type=Path,
        help="the base checkout's python with asyncq[redis,amqp] installed editable; with "
        "it the checkout is used as it is (no checkout, no install)",
    )
    parser.add_argument("--candidate-python", type=Path, help="likewise for the candidate")
    parser.add_argument("--runs", type=int, help="runs per side and broker (default 3)")
    parser.add_argument(
        "--brokers",
        default="redis,amqp",
        help="comma-separated: redis, amqp, or none (default %(default)s)",
    )
    parser.add_argument("--jobs", "-n", type=int, help="W2 jobs (default 20,000)")
    parser.add_argument("--enqueue-jobs", type=int, help="W1 jobs (default 5,000)")
    parser.add_argument("--concurrency", "-c", type=int, default=100, help="default 100")
    parser.add_argument("--batch", type=int, default=1_000, help="jobs per enqueue_many")
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="times a failed run is tried again (e.g. a broker restarted under it; default 1)",
    )
    parser.add_argument("--amqp-port", type=int, help="passed to amqp_compare.py")
    parser.add_argument(
        "--redis-db",
        type=int,
        help="passed to redis_compare.py as --db (flushed before each workload; default 14): "
        "another database where others' tests use 14",
    )
    parser.add_argument("--rabbitmq-node", help="passed to amqp_compare.py")
    parser.add_argument(
        "--callgrind",
        nargs="?",
        const=",".join(CALLGRIND_WORKLOADS),
        metavar="WORKLOADS",
        help="also count instructions per job on memory:// under valgrind, for the given "
        f"comma-separated workloads (default: all of {', '.join(CALLGRIND_WORKLOADS)})",
    )
    parser.add_argument(
        "--callgrind-jobs", type=int, help="jobs counted: the difference (default 2,000)"
    )
    parser.add_argument("--callgrind-few", type=int, help="jobs of the short run (default 200)")
    parser.add_argument("--callgrind-warmup", type=int, help="warm-up jobs (default 500)")
    parser.add_argument(
        "--callgrind-repeat", type=int, default=1, help="pairs of runs per side (default 1)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 run, W1 500 jobs, W2 2,000, callgrind 200 + 50 jobs",
    )
    parser.add_argument("--nice", type=int, default=0, help="run everything at this niceness")
    parser.add_argument("--json", metavar="PATH", help="also write every number as JSON")
    parser.add_argument(
        "--keep", action="store_true", help="keep the logs, JSON and callgrind files"
    )
    # The callgrind workload, run by a side's python.
    parser.add_argument("--callgrind-child", choices=CALLGRIND_WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--child-jobs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-warmup", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.callgrind_child:
        return args

    def pick(value: int | None, full: int, quick: int) -> int:
        return value if value is not None else (quick if args.quick else full)

    args.runs = pick(args.runs, 3, 1)
    args.jobs = pick(args.jobs, 20_000, 2_000)
    args.enqueue_jobs = pick(args.enqueue_jobs, 5_000, 500)
    args.callgrind_jobs = pick(args.callgrind_jobs, 2_000, 200)
    args.callgrind_few = pick(args.callgrind_few, 200, 50)
    args.callgrind_warmup = pick(args.callgrind_warmup, 500, 100)
    args.brokers = [b.strip() for b in args.brokers.split(",") if b.strip() not in ("", "none")]
    if unknown := [b for b in args.brokers if b not in BROKERS]:
        parser.error(f"--brokers: unknown {unknown}; known: {', '.join(BROKERS)}")
    args.callgrind = [w.strip() for w in (args.callgrind or "").split(",") if w.strip()]
    if unknown := [w for w in args.callgrind if w not in CALLGRIND_WORKLOADS]:
        parser.error(f"--callgrind: unknown {unknown}; known: {', '.join(CALLGRIND_WORKLOADS)}")
    counts = [args.runs, args.jobs, args.enqueue_jobs, args.concurrency, args.batch]
    counts += [args.callgrind_jobs, args.callgrind_few, args.callgrind_warmup]
    if min(counts) < 1 or args.callgrind_repeat < 1 or args.retries < 0:
        parser.error("counts must be >= 1 (--retries >= 0)")
    if not args.brokers and not args.callgrind:
        parser.error("nothing to run: give --brokers or --callgrind")
    for which in ("base", "candidate"):
        python, directory = getattr(args, f"{which}_python"), getattr(args, f"{which}_dir")
        if python is not None and directory is None:
            parser.error(f"--{which}-python needs --{which}-dir")
        if python is not None and not python.is_file():
            parser.error(f"--{which}-python: no interpreter at {python}")
    if args.callgrind and shutil.which("valgrind") is None:
        parser.error("--callgrind: valgrind is not on PATH")
    return args


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the comparison as Ctrl-C does."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def main() -> None:
    args = parse_args()
    if args.callgrind_child:
        callgrind_child(args)
        return
    if args.nice:
        os.nice(args.nice)
    repo = Path(git("rev-parse", "--show-toplevel", cwd=HERE))
    sides = []
    for label, short in (("base", "base"), ("candidate", "cand")):
        directory = getattr(args, f"{label}_dir") or repo.parent / f"wt-{short}"
        python = getattr(args, f"{label}_python")
        side = Side(label, getattr(args, label), directory.resolve(), python or Path())
        if python is None:
            prepare_worktree(repo, side)
            prepare_venv(side)
        else:
            side.ref = "(as given)"
        check_side(side)
        sides.append(side)
    base, candidate = sides
    if base.directory == candidate.directory:
        raise BenchError("the base and the candidate need checkouts of their own")
    work_dir = Path(tempfile.mkdtemp(prefix="compare-commits-"))
    cfg = Settings(
        runs=args.runs,
        brokers=args.brokers,
        jobs=args.jobs,
        enqueue_jobs=args.enqueue_jobs,
        concurrency=args.concurrency,
        batch=args.batch,
        retries=args.retries,
        amqp_port=args.amqp_port,
        rabbitmq_node=args.rabbitmq_node,
        redis_db=args.redis_db,
        callgrind=args.callgrind,
        callgrind_jobs=args.callgrind_jobs,
        callgrind_few=args.callgrind_few,
        callgrind_warmup=args.callgrind_warmup,
        callgrind_repeat=args.callgrind_repeat,
        work_dir=work_dir,
        keep=args.keep,
    )
    notes = []
    if differ := harness_differences(base, candidate):
        notes.append(f"the harness differs between the checkouts: {', '.join(differ)}")
    say(f"base:      {base.describe}\ncandidate: {candidate.describe}\nlogs: {work_dir}")
    started = time.monotonic()
    interrupted = False
    try:
        with sigterm_interrupts():
            if cfg.brokers:
                timed_rounds(sides, cfg)
            if cfg.callgrind:
                callgrind_rounds(sides, cfg)
    except KeyboardInterrupt:
        interrupted = True
        notes.append("INTERRUPTED: the table holds the runs that finished")
    except BenchError as exc:
        interrupted = True
        notes.append(f"STOPPED: {exc}")
    minutes = (time.monotonic() - started) / 60
    notes.append(f"{minutes:.1f} min; load average at the end {os.getloadavg()[0]:.2f}")
    if interrupted:
        notes.append(f"logs: {work_dir}")
    print(report(base, candidate, cfg, notes))
    if args.json:
        Path(args.json).write_text(json.dumps(document(base, candidate, cfg, notes), indent=2))
    if not cfg.keep and not interrupted:
        shutil.rmtree(work_dir, ignore_errors=True)
    if interrupted:
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"compare_commits: {exc}") from None
