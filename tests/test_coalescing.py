"""``asyncq.coalescing.Coalescer``: what is in flight together goes out together, and each
caller gets its own items' results and errors."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from asyncq.coalescing import Coalescer

pytestmark = pytest.mark.anyio


class Sender:
    """A send that waits for ``gate`` (so callers pile up behind it) and notes each batch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = anyio.Event()
        self.entered = anyio.Event()
        self.fail_all: Exception | None = None

    async def send(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.entered.set()
        await self.gate.wait()
        if self.fail_all is not None:
            raise self.fail_all
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_callers_behind_a_send_go_out_as_one_batch() -> None:
    sender = Sender()
    coalescer: Coalescer[int, int] = Coalescer(sender.send)
    results: dict[int, object] = {}

    async def call(i: int) -> None:
        try:
            results[i] = await coalescer.submit([i])
        except ValueError as exc:
            results[i] = str(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, 0)
        await sender.entered.wait()  # the first caller's send is in flight, alone
        for i in range(1, 50):
            tg.start_soon(call, i)
        await anyio.wait_all_tasks_blocked()
        sender.gate.set()
    assert sender.batches == [[0], list(range(1, 50))]
    assert results == {i: f"odd {i}" if i % 2 else [i * 10] for i in range(50)}


async def test_a_failed_send_fails_every_caller_of_its_batch() -> None:
    sender = Sender()
    coalescer: Coalescer[int, int] = Coalescer(sender.send)
    errors: list[str] = []

    async def call(i: int) -> None:
        try:
            await coalescer.submit([i * 2])
        except ConnectionError as exc:
            errors.append(str(exc))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, 0)
        await sender.entered.wait()
        for i in range(1, 6):
            tg.start_soon(call, i)
        await anyio.wait_all_tasks_blocked()
        sender.fail_all = ConnectionError("lost")
        sender.gate.set()
    assert errors == ["lost"] * 6
    # The slot came back: the next call goes straight out.
    sender.fail_all, sender.gate = None, anyio.Event()
    sender.gate.set()
    assert await coalescer.submit([4]) == [40]


async def test_a_cancelled_caller_does_not_stop_its_batch() -> None:
    sender = Sender()
    coalescer: Coalescer[int, int] = Coalescer(sender.send)
    got: dict[int, list[int]] = {}

    async def call(i: int) -> None:
        got[i] = await coalescer.submit([i])

    async def cancelled_leader() -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await coalescer.submit([2])  # leads the next batch: shielded, so it goes out

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, 0)
        await sender.entered.wait()
        tg.start_soon(cancelled_leader)
        await anyio.wait_all_tasks_blocked()
        async with anyio.create_task_group() as members:
            members.start_soon(call, 4)
            await anyio.wait_all_tasks_blocked()
            members.cancel_scope.cancel()  # a member cancelled while waiting
        tg.start_soon(call, 6)
        await anyio.wait_all_tasks_blocked()
        sender.gate.set()
    assert sender.batches[0] == [0]
    assert [i for batch in sender.batches[1:] for i in batch] == [2, 4, 6]
    assert got == {0: [0], 6: [60]}


async def test_a_large_submission_goes_at_once() -> None:
    sender = Sender()
    coalescer: Coalescer[int, int] = Coalescer(sender.send, max_items=10)

    async with anyio.create_task_group() as tg:
        tg.start_soon(coalescer.submit, [0])
        await sender.entered.wait()
        with anyio.fail_after(5):
            tg.start_soon(coalescer.submit, list(range(0, 20, 2)))
            await anyio.wait_all_tasks_blocked()
            assert sender.batches == [[0], list(range(0, 20, 2))]  # beside the first
        sender.gate.set()


async def test_with_gather_callers_arriving_together_share_a_send_that_never_yields() -> None:
    batches: list[list[int]] = []

    async def send(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))  # done at once, as an embedded database's commit is
        return [i * 10 for i in items]

    gathering = True
    coalescer: Coalescer[int, int] = Coalescer(send, gather=lambda: gathering)
    results: dict[int, list[int]] = {}

    async def call(i: int) -> None:
        results[i] = await coalescer.submit([i])

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(call, i)
    assert batches == [list(range(20))]
    assert results == {i: [i * 10] for i in range(20)}
    # Without gathering each caller would go out alone, as nothing is ever in flight.
    gathering, batches[:] = False, []
    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(call, i)
    assert batches == [[i] for i in range(5)]
