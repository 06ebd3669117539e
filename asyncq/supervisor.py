"""Run several worker processes and keep them running: ``asyncq run --processes N``.

Each child is an ordinary ``asyncq run ... --processes 1``, so it shuts down gracefully on
its own. The supervisor forwards SIGTERM and SIGINT to the children, restarts a child that
dies without being asked to (backing off while it keeps dying quickly), and returns once
every child has exited. Children run in their own session: a Ctrl-C in a terminal then
reaches them once, through the supervisor, instead of twice (once from the terminal and
once forwarded), which a worker would take as "exit now".

Every child runs inside a task of the supervisor's task group, under ``async with`` on its
process: if the supervisor itself fails, its children are killed and reaped before it
returns, so no process, task or thread outlives it.

A supervisor that cannot clean up (SIGKILL, the OOM killer) leaves its children to stop on
their own: each holds the read end of a pipe, its *lifeline*, whose write end only the
supervisor holds. The kernel closes that end when the supervisor dies, however it dies, and
the child sees end-of-file (:func:`supervisor_gone`) and stops gracefully. A pipe rather
than Linux's ``PR_SET_PDEATHSIG``: it works on every POSIX system; it needs no code between
fork and exec (``preexec_fn``, unsafe in a threaded program); it fires on the death of the
supervisor process, not of the thread that happened to start the child; and it has no race:
a supervisor that died before the child looked is seen at once, since end-of-file stays. And
the child is told, not signalled, so it chooses how to stop and can log why.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any

import anyio
from anyio.abc import Process, TaskGroup

from .worker_options import WorkerOptions

__all__ = ["Supervisor", "supervisor_gone"]

log = logging.getLogger("asyncq.supervisor")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Supervisor:
    """Keeps ``processes`` copies of ``command`` running until SIGTERM or SIGINT.

    ``shutdown_timeout`` is the children's own; a child still running ``kill_grace``
    seconds after it should have finished is killed. A child that dies unexpectedly is
    restarted after ``restart_delay`` seconds, doubling up to ``max_restart_delay`` while
    it keeps dying within ``stable_after`` seconds of its start. A child exiting with one of
    ``fatal_exit_codes`` (a configuration error, which a restart cannot fix) stops them all;
    one exiting with one of ``recycle_exit_codes`` (it recycled itself, see
    :mod:`asyncq.recycling`) is replaced at once, without a back-off.
    ``slot_arguments(slot)`` gives the arguments added to the command of the child in slot
    1 to ``processes``, the same for every child that slot restarts (its own metrics port).
    With ``lifeline_option`` (``--lifeline``), each child is also given that option and the
    number of its lifeline's file descriptor, for :func:`supervisor_gone`.
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        shutdown_timeout: float,
        kill_grace: float = 10.0,
        restart_delay: float = 1.0,
        max_restart_delay: float = 30.0,
        stable_after: float = 30.0,
        fatal_exit_codes: Collection[int] = (),
        recycle_exit_codes: Collection[int] = (),
        slot_arguments: Callable[[int], Sequence[str]] | None = None,
        lifeline_option: str | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be >= 1")
        self.command = list(command)
        self.processes = processes
        self.shutdown_timeout = shutdown_timeout
        self.kill_grace = kill_grace
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stable_after = stable_after
        self.fatal_exit_codes = frozenset(fatal_exit_codes)
        self.recycle_exit_codes = frozenset(recycle_exit_codes)
        self.recycled = 0
        """Children replaced because they recycled themselves."""
        self.slot_arguments = slot_arguments
        self.lifeline_option = lifeline_option
        self._lifeline: int | None = None
        self._children: dict[int, Process] = {}
        self._exit_codes: dict[int, int] = {}
        self._stop_requested = anyio.Event()
        self._forwarded: set[signal.Signals] = set()
        self._fatal_exit_code: int | None = None
        self._services: TaskGroup | None = None

    @classmethod
    def for_workers(
        cls,
        command: Sequence[str],
        options: WorkerOptions,
        processes: int,
        **supervision: Any,
    ) -> Supervisor:
        """Supervise ``processes`` workers run by ``command`` (``asyncq run ... --processes
        1``) with ``options``: each child gets them as flags, and the children's shutdown
        timeout is theirs."""
        return cls(
            [*command, *options.command_line()],
            processes,
            shutdown_timeout=options.shutdown_timeout,
            **supervision,
        )

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    async def run(self) -> int:
        """Run the children until they have all exited; return the exit code to use: 0 when
        each exited 0 (or recycled itself), a child's fatal exit code if one had one, else 1."""
        # One pipe serves every child, restarted ones too. Its write end is never written:
        # it only has to stay open while this process lives. Both ends are non-inheritable,
        # so a child gets only the read end, which it is passed by number (pass_fds).
        lifeline = os.pipe() if self.lifeline_option is not None else None
        self._lifeline = lifeline[0] if lifeline is not None else None
        try:
            with anyio.open_signal_receiver(*_STOP_SIGNALS) as signals:
                async with anyio.create_task_group() as services:
                    self._services = services
                    try:
                        services.start_soon(self._handle_signals, signals)
                        async with anyio.create_task_group() as slots:
                            for slot in range(1, self.processes + 1):
                                slots.start_soon(self._keep_running, slot)
                        services.cancel_scope.cancel()
                    finally:
                        self._services = None
        finally:
            self._lifeline = None
            if lifeline is not None:  # every child has exited: nobody needs it any more
                for fd in lifeline:
                    os.close(fd)
        if self._fatal_exit_code is not None:
            return self._fatal_exit_code
        # A child that a forwarded signal killed before it could handle it was still
        # starting: it held no job, and it stopped as asked.
        clean = {0, *self.recycle_exit_codes, *(-signum for signum in self._forwarded)}
        return 0 if all(code in clean for code in self._exit_codes.values()) else 1

    def stop(self, signum: signal.Signals = signal.SIGTERM) -> None:
        """Ask every child to shut down gracefully (again: at once), and restart none."""
        if not self.stopping and self._services is not None:
            self._services.start_soon(self._kill_stragglers)
        self._stop_requested.set()
        self._forwarded.add(signum)
        for process in list(self._children.values()):
            _send(process, signum)

    # -- one slot --------------------------------------------------------------------------
    async def _keep_running(self, slot: int) -> None:
        delay = self.restart_delay
        while not self.stopping:
            started = anyio.current_time()
            pid, code = await self._run_child(slot)
            self._exit_codes[slot] = code
            name = f"worker process {slot} (pid {pid})"
            if self.stopping:
                log.info("%s %s", name, _describe(code))
                return
            if code == 0:
                # Only a burst worker ends on its own: its queues are empty.
                log.info("%s finished: its queues are drained", name)
                return
            if code in self.recycle_exit_codes:
                self.recycled += 1
                log.info("%s recycled itself; starting a fresh one", name)
                continue
            if code in self.fatal_exit_codes:
                log.error("%s %s, which a restart cannot fix; stopping", name, _describe(code))
                self._fatal_exit_code = code
                self.stop()
                return
            if anyio.current_time() - started >= self.stable_after:
                delay = self.restart_delay
            log.warning("%s %s unexpectedly; restarting it in %.1f s", name, _describe(code), delay)
            with anyio.move_on_after(delay):
                await self._stop_requested.wait()
            delay = min(delay * 2, self.max_restart_delay)

    async def _run_child(self, slot: int) -> tuple[int, int]:
        """Start one child and wait for it; return its pid and exit code."""
        extra = list(self.slot_arguments(slot)) if self.slot_arguments is not None else []
        pass_fds: list[int] = []
        if self._lifeline is not None:
            assert self.lifeline_option is not None
            extra += [self.lifeline_option, str(self._lifeline)]
            pass_fds.append(self._lifeline)
        async with await anyio.open_process(
            [*self.command, *extra],
            stdin=subprocess.DEVNULL,
            stdout=None,
            stderr=None,
            start_new_session=True,
            pass_fds=pass_fds,
        ) as process:
            log.info("worker process %d started (pid %d)", slot, process.pid)
            self._children[slot] = process
            try:
                # A stop that came while this child was being started has not reached it.
                for signum in self._forwarded:
                    _send(process, signum)
                return process.pid, await process.wait()
            finally:
                del self._children[slot]

    # -- signals ---------------------------------------------------------------------------
    async def _handle_signals(self, signals: AsyncIterator[signal.Signals]) -> None:
        async for signum in signals:
            name = signum.name
            if not self.stopping:
                log.warning(
                    "%s: stopping %d worker process(es) gracefully; again to stop them now",
                    name,
                    len(self._children),
                )
            else:
                log.warning("%s again: telling worker processes to exit now", name)
            self.stop(signum)

    async def _kill_stragglers(self) -> None:
        # A deadline, not a poll: past it a child is stuck (in a handler that ignores
        # cancellation, say), and a supervisor must not wait on it forever.
        await anyio.sleep(self.shutdown_timeout + self.kill_grace)
        for slot, process in list(self._children.items()):
            log.error(
                "worker process %d (pid %d) did not stop within %g s; killing it",
                slot,
                process.pid,
                self.shutdown_timeout + self.kill_grace,
            )
            _send(process, signal.SIGKILL)


async def supervisor_gone(lifeline: int) -> None:
    """In a supervised child: return once the supervisor is gone, told by end-of-file on
    the read end of its lifeline pipe, file descriptor ``lifeline``, which this closes."""
    try:
        os.set_inheritable(lifeline, False)  # the processes a job starts need not hold it
        # The flag belongs to the pipe, so this sets it for its other readers too: the
        # other children, each watching it the same way.
        os.set_blocking(lifeline, False)
        while True:
            await anyio.wait_readable(lifeline)
            try:
                if not os.read(lifeline, 512):
                    return  # end-of-file: the only write end, the supervisor's, is closed
            except BlockingIOError:
                continue  # woken for nothing
    finally:
        os.close(lifeline)


def _send(process: Process, signum: signal.Signals) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass  # it has just exited; its exit is being handled


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
