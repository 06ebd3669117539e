"""A reproduction of what the chaos soak found on PostgreSQL: after a broker outage, a worker
runs new jobs while their acknowledgements wait behind a batch the settler is still retrying
with backoff, unrenewed; past the visibility timeout another worker runs them again, though
no worker was killed or paused.

    python benchmarks/soak/settle_lag.py [DOWN]     # from the repository's root

1. A private PostgreSQL, ``visibility_timeout=2``; worker A (a process) runs batch 1.
2. While batch 1 runs (each job 300 to 400 ms), the server crashes (``pg_ctl stop -m
   immediate``); A's settle of batch 1 fails and its settler tries again after 0.4, 0.8,
   1.6, then 3.2 s.
3. The server is back after about 3.5 s (``DOWN``, default 3.2, plus its start), in the
   settler's last pause; batch 2 is enqueued. A's fetch recovers within a
   second and runs batch 2; their handlers return at once, but their settlements queue
   behind batch 1's retry, and their leases are no longer renewed (the attempts left
   ``worker.running`` when their handlers returned).
4. Worker B starts. Batch 2's leases lapse 2 s after A claimed them, B claims them and runs
   them again; meanwhile job.status() of batch 2 stays ``running``.

Prints each batch-2 job's runs and the seconds from its first return to its SUCCEEDED status.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import asyncq  # noqa: E402
from soak.brokers import PrivatePostgres  # noqa: E402
from soak.children import make_app  # noqa: E402
from soak.ledger import Ledger, LedgerWriter  # noqa: E402


def workdir() -> Path:
    work = Path(tempfile.mkdtemp(prefix="asyncq-settle-lag-"))
    work.chmod(0o755)  # the server runs as the postgres user, its data in here
    (work / "ledger").mkdir()
    (work / "broker").mkdir()
    return work


async def main() -> None:
    work = workdir()
    broker = PrivatePostgres(work / "broker")
    env = {"PYTHONPATH": str(HERE.parent)}
    async with anyio.create_task_group() as tg:
        await tg.start(broker.run)
        url = broker.client_url(broker.upstreams) + "?visibility_timeout=2&schema=lag"
        app, job = make_app(url, LedgerWriter(work / "ledger" / "enqueue.log"))
        ledger = Ledger(work / "ledger")

        def worker(name: str) -> subprocess.Popen[bytes]:
            ledger_file = str(work / "ledger" / f"run-{name}.log")
            command = [sys.executable, "-m", "soak.children", "worker", url, ledger_file,
                       "--handler-ms", "300,400"]  # fmt: skip
            out = (work / f"{name}.out").open("ab")
            return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)

        async def returned(ids: list[str], timeout: float) -> None:
            with anyio.fail_after(timeout):
                while not set(ids) <= set(ledger.finished):
                    await anyio.sleep(0.05)  # files of another process: nothing to wait on
                    ledger.refresh()

        async with app:
            a = worker("a")
            warm = [f"warm-{i}" for i in range(5)]
            for lid in warm:
                await job.enqueue(lid)
            await returned(warm, 30)
            first = [f"one-{i}" for i in range(20)]
            for lid in first:
                await job.enqueue(lid)
            await anyio.sleep(0.15)  # batch 1 running (300 to 400 ms each): now the crash
            await broker.stop_node(0, hard=True)
            crashed = time.monotonic()
            await anyio.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 3.2)
            await broker.start_node(0)
            print(f"server back {time.monotonic() - crashed:.1f} s after the crash")
        async with app:  # a fresh pool after the restart
            second = {f"two-{i}": (await job.enqueue(f"two-{i}")) for i in range(20)}
            await returned(list(second), 30)
            print(f"batch 2 returned {time.monotonic() - crashed:.1f} s after the crash")
            b = worker("b")
            succeeded: dict[str, float] = {}
            with anyio.move_on_after(15):
                while len(succeeded) < len(second):
                    for lid, handle in second.items():
                        if (
                            lid not in succeeded
                            and await handle.status() is asyncq.JobStatus.SUCCEEDED
                        ):
                            succeeded[lid] = time.monotonic()
                    await anyio.sleep(0.05)  # status is read, not notified, in this script
            await anyio.sleep(1.0)
            ledger.refresh()
        for process in (a, b):
            process.terminate()
            process.wait(timeout=30)
        runs = defaultdict(list)
        for run in ledger.runs:
            runs[run.lid].append(run)
        twice = 0
        for lid in second:
            done = ledger.finished[lid]
            lag = succeeded.get(lid, float("nan")) - done
            pids = [f"{r.pid}{'(redelivered)' if r.redelivered else ''}" for r in runs[lid]]
            twice += len(runs[lid]) > 1
            print(f"{lid}: runs by {', '.join(pids)}; returned -> succeeded {lag:.2f} s")
        print(f"batch 2: {twice} of {len(second)} jobs ran twice; no worker was killed")
        print(f"logs and ledger in {work}")
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main)
