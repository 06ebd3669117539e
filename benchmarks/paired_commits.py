"""asyncq at two commits, measured in interleaved pairs on one broker: is the candidate as fast?

    python3 benchmarks/paired_commits.py --base bebcd4b --candidate main \\
        --url redis://127.0.0.1:6379/12 --pairs 40 --jobs 2000 --bulk-jobs 20000
    python3 benchmarks/paired_commits.py --base-dir A --base-python A/.venv/bin/python \\
        --candidate-dir B --candidate-python B/.venv/bin/python --url amqp://guest:guest@127.0.0.1/

On a shared machine the throughput of one run moves by a factor of two from minute to
minute, so separate runs of each side (``compare_commits.py``) cannot tell 5% apart. Here
each side is one long-lived process, its App open and its connections warm, and the
parent hands them the same small step in turn (base then candidate, then candidate then
base, and so on): the two samples of a pair are seconds apart and see the same machine.
The figure is the median over pairs of candidate rate / base rate, with a 95% bootstrap
interval; ``--threshold`` (default 5%) decides the verdict from the interval's low end.

A step, for each side: enqueue ``--jobs`` jobs with one await each (timed), drain them
(not timed), enqueue ``--bulk-jobs`` with ``enqueue_many`` in batches of ``--batch``
(timed) and drain those with a worker of ``--concurrency`` (timed, the worker's start
and stop included, as in ``compare_commits.py``'s W2). Each timing is the wall clock and
the process's CPU seconds. Every job enqueued is drained and each side removes its queue
at the end; the finished jobs' records expire after the broker's ``result_ttl``.

The checkouts and their virtualenvs are prepared as ``compare_commits.py`` does (the same
``../wt-base`` and ``../wt-cand`` worktrees with ``.venv-bench``). Only the standard
library is imported here; the child mode imports asyncq and anyio from the side's
virtualenv.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from compare_commits import (
    BenchError,
    Side,
    check_side,
    git,
    prepare_venv,
    prepare_worktree,
    say,
)

WORKLOADS = ("enqueue", "enqueue_many", "drain")
LABELS = {"enqueue": "enqueue, 1 await/job", "enqueue_many": "enqueue_many", "drain": "drain"}
JOBS = {"enqueue": "jobs", "enqueue_many": "bulk_jobs", "drain": "bulk_jobs"}
"""Which count each workload runs."""


# -- the child: one side's long-lived process --------------------------------------------------
def child(args: argparse.Namespace) -> None:
    """Answer each step the parent asks for on stdin with one JSON line of timings."""
    import anyio

    import asyncq

    queue = args.queue

    class State:
        ran = 0
        target = 0
        done = anyio.Event()

    app = asyncq.App(args.url)

    @app.task(name=f"{queue}-noop", queue=queue)
    async def noop() -> None:
        State.ran += 1
        if State.ran == State.target:
            State.done.set()

    def timed() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def since(start: tuple[float, float]) -> dict[str, float]:
        wall, cpu = timed()
        return {"seconds": wall - start[0], "cpu": cpu - start[1]}

    async def drain(n: int) -> dict[str, float]:
        State.ran, State.target, State.done = 0, n, anyio.Event()
        start = timed()
        async with app.worker(queues=[queue], concurrency=args.concurrency):
            await State.done.wait()
        took = since(start)
        stats = (await app.queue_stats([queue]))[queue]
        if stats.pending or stats.running or stats.dead or stats.scheduled:
            raise SystemExit(f"drain incomplete: {stats}")
        return took

    async def step(n: int, bulk: int) -> dict[str, dict[str, float]]:
        out = {}
        start = timed()
        for _ in range(n):
            await noop.enqueue()
        out["enqueue"] = since(start)
        await drain(n)
        start = timed()
        for first in range(0, bulk, args.batch):
            await noop.enqueue_many([()] * min(args.batch, bulk - first))
        out["enqueue_many"] = since(start)
        out["drain"] = await drain(bulk)
        return out

    def reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def main() -> None:
        async with app:
            await app.purge_queue(queue)
            reply({"asyncq": asyncq.__file__})
            try:
                while line := await anyio.to_thread.run_sync(sys.stdin.readline):
                    reply(await step(*map(int, line.split())))
            finally:
                await app.purge_queue(queue)
                await app.remove_queue(queue)

    anyio.run(main)


# -- the parent ---------------------------------------------------------------------------------
class Runner:
    """One side's child process."""

    def __init__(self, side: Side, args: argparse.Namespace) -> None:
        self.side = side
        queue = f"paired-{side.label}-{os.getpid()}"
        argv = [str(side.python), str(Path(__file__).resolve()), "--child", "--url", args.url]
        argv += ["--queue", queue, "--concurrency", str(args.concurrency)]
        argv += ["--batch", str(args.batch)]
        self.process = subprocess.Popen(
            argv, cwd=side.directory, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        hello = self._read()
        where = Path(hello["asyncq"]).resolve()
        if not where.is_relative_to(side.directory.resolve()):
            raise BenchError(f"{side.label} imports asyncq from {where}")

    def _read(self) -> dict[str, Any]:
        out: IO[str] | None = self.process.stdout
        assert out is not None
        line = out.readline()
        if not line:
            raise BenchError(f"the {self.side.label} process ended (exit {self.process.wait()})")
        result: dict[str, Any] = json.loads(line)
        return result

    def step(self, jobs: int, bulk: int) -> dict[str, dict[str, float]]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{jobs} {bulk}\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def bootstrap(ratios: list[float], rounds: int = 10_000) -> tuple[float, float]:
    """A 95% interval for the median of ``ratios`` (fixed seed: the same data, the same
    interval)."""
    rng = random.Random(1)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(rounds))
    return medians[int(rounds * 0.025)], medians[int(rounds * 0.975) - 1]


def report(samples: dict[str, list[dict[str, dict[str, float]]]], args: argparse.Namespace) -> str:
    base, cand = samples["base"], samples["candidate"]
    lines = [
        f"{len(base)} pairs ({args.jobs} jobs enqueued one by one, {args.bulk_jobs} in bulk)"
        f"; ratio = candidate / base per pair "
        f"(rates: higher is better; CPU per job: lower is better)",
        f"{'workload':30} {'base jobs/s':>12} {'cand jobs/s':>12} {'rate ratio':>10} "
        f"{'95% interval':>15} {'CPU/job ratio':>13}  verdict",
    ]
    worst = True
    for w in WORKLOADS:
        jobs = getattr(args, JOBS[w])
        rate_b = [jobs / s[w]["seconds"] for s in base]
        rate_c = [jobs / s[w]["seconds"] for s in cand]
        ratios = [c / b for b, c in zip(rate_b, rate_c, strict=True)]
        cpu = [c[w]["cpu"] / b[w]["cpu"] for b, c in zip(base, cand, strict=True)]
        low, high = bootstrap(ratios)
        ok = low >= 1 - args.threshold
        worst &= ok
        lines.append(
            f"{LABELS[w]:30} {statistics.median(rate_b):12,.0f} {statistics.median(rate_c):12,.0f}"
            f" {statistics.median(ratios):10.3f} {f'{low:.3f}..{high:.3f}':>15}"
            f" {statistics.median(cpu):13.3f}  {'ok' if ok else 'SLOWER?'}"
        )
    lines.append(
        f"verdict: {'within' if worst else 'NOT shown within'} {args.threshold:.0%} "
        f"(the interval's low end at least {1 - args.threshold:.2f} for every workload)"
    )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="bebcd4b", help="base ref (default bebcd4b)")
    parser.add_argument("--candidate", default="HEAD", help="candidate ref (default HEAD)")
    parser.add_argument("--base-dir", type=Path, help="base checkout (default ../wt-base)")
    parser.add_argument("--candidate-dir", type=Path, help="candidate checkout (../wt-cand)")
    parser.add_argument("--base-python", type=Path, help="the base checkout's interpreter")
    parser.add_argument("--candidate-python", type=Path, help="likewise for the candidate")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/12", help="the broker")
    parser.add_argument("--pairs", type=int, default=40, help="default 40")
    parser.add_argument("--jobs", "-n", type=int, default=2_000, help="one-await jobs a step")
    parser.add_argument("--bulk-jobs", type=int, default=20_000, help="enqueue_many's, drained")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (2)")
    parser.add_argument("--concurrency", "-c", type=int, default=100, help="default 100")
    parser.add_argument("--batch", type=int, default=1_000, help="jobs per enqueue_many")
    parser.add_argument("--threshold", type=float, default=0.05, help="default 0.05")
    parser.add_argument("--json", metavar="PATH", help="also write every sample as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.pairs, args.jobs, args.bulk_jobs, args.concurrency, args.batch) < 1:
        parser.error("--pairs, --jobs, --bulk-jobs, --concurrency and --batch must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    for which in ("base", "candidate"):
        python, directory = getattr(args, f"{which}_python"), getattr(args, f"{which}_dir")
        if (python is None) != (directory is None):
            parser.error(f"give --{which}-dir and --{which}-python together")
    return args


def sides_for(args: argparse.Namespace) -> list[Side]:
    repo = Path(git("rev-parse", "--show-toplevel", cwd=Path(__file__).resolve().parent))
    sides = []
    for label, short in (("base", "base"), ("candidate", "cand")):
        python = getattr(args, f"{label}_python")
        directory = getattr(args, f"{label}_dir") or repo.parent / f"wt-{short}"
        side = Side(label, getattr(args, label), directory.resolve(), python or Path())
        if python is None:
            prepare_worktree(repo, side)
            prepare_venv(side)
        check_side(side)
        sides.append(side)
    return sides


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    sides = sides_for(args)
    for side in sides:
        say(f"{side.label:9}: {side.describe}")
    runners = [Runner(side, args) for side in sides]
    samples: dict[str, list[dict[str, dict[str, float]]]] = {s.label: [] for s in sides}
    started = time.monotonic()
    try:
        for _ in range(args.warmup):
            for runner in runners:
                runner.step(args.jobs, args.bulk_jobs)
        for i in range(args.pairs):
            order = runners if i % 2 == 0 else runners[::-1]
            for runner in order:
                samples[runner.side.label].append(runner.step(args.jobs, args.bulk_jobs))
            if (i + 1) % 5 == 0 or i + 1 == args.pairs:
                say(f"{i + 1}/{args.pairs} pairs, {time.monotonic() - started:.0f} s")
    except KeyboardInterrupt:
        say("interrupted: the report covers the pairs that finished")
    finally:
        for runner in runners:
            runner.close()
    pairs = min(len(v) for v in samples.values())
    if pairs == 0:
        raise BenchError("no pair finished")
    samples = {k: v[:pairs] for k, v in samples.items()}
    print(f"broker: {args.url}; load average at the end {os.getloadavg()[0]:.2f}")
    print(report(samples, args))
    if args.json:
        Path(args.json).write_text(json.dumps(samples, indent=1))


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        raise SystemExit(f"paired_commits: {exc}") from None
