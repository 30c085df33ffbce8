"""The failover layer serves in the request's own task and cancels it only for a client that left."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from ccx_asgi.context import SCOPE_KEY, RequestContext
from ccx_asgi.middleware.failover import FailoverMiddleware
from ccx_asgi.stream import ClientStream
from ccx_asgi.types import Message, Receive, Scope, Send


class _Scripted(FailoverMiddleware):
    """The layer with its serving loop replaced by ``work`` (the cancellation logic is what is tested)."""

    def __init__(self, work: Any) -> None:
        super().__init__(lambda scope, receive, send: asyncio.sleep(0), keepalive_interval=0)
        self.work = work

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext, stream: ClientStream | None
    ) -> None:
        await self.work()


def _scope() -> Scope:
    ctx = RequestContext(body={"model": "m"}, model="m", stream=False, request_id="req_test", headers=[])
    return {"type": "http", SCOPE_KEY: ctx}


async def _noop_send(message: Message) -> None:
    return None


async def test_a_client_that_leaves_cancels_the_work_and_the_request_ends_quietly() -> None:
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    await _Scripted(work)(_scope(), receive, _noop_send)  # in this task, as under a server
    assert cancelled.is_set()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_disconnect_seen_as_the_work_ends_does_not_cancel_what_the_task_does_next() -> None:
    # The watcher completes first in the same loop iteration in which the work returns: its callback
    # is already scheduled when the layer returns, and must not cancel the caller's next await.
    released: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def receive() -> Message:
        await released
        return {"type": "http.disconnect"}

    async def work() -> None:
        await asyncio.sleep(0)  # the watcher waits on ``released`` first
        await asyncio.sleep(0)
        released.set_result(None)
        await asyncio.sleep(0)  # wakes after the watcher finished, before its callback ran

    await _Scripted(work)(_scope(), receive, _noop_send)
    await asyncio.sleep(0.01)  # a stray cancel would land here
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_cancellation_from_outside_propagates() -> None:
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.sleep(30)

    async def receive() -> Message:
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    request = asyncio.ensure_future(_Scripted(work)(_scope(), receive, _noop_send))
    await started.wait()
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request


async def test_work_that_swallows_the_cancellation_still_returns_the_task_uncancelled() -> None:
    async def work() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # a careless inner layer
            await asyncio.sleep(30)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    await _Scripted(work)(_scope(), receive, _noop_send)  # in this task, as under a server
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.01)


async def test_a_disconnect_is_quiet_even_in_a_task_that_carries_an_earlier_cancellation() -> None:
    # A host that swallowed a cancellation leaves the task's count above zero: the disconnect the
    # layer itself caused must still end the request quietly, and the count stays the host's.
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(1)
    assert task.cancelling() == 1

    async def work() -> None:
        await asyncio.sleep(30)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    await _Scripted(work)(_scope(), receive, _noop_send)
    assert task.cancelling() == 1
    task.uncancel()


async def test_a_receive_that_is_cancelled_ends_the_request_like_a_disconnect() -> None:
    stopped = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise

    async def receive() -> Message:
        raise asyncio.CancelledError

    await _Scripted(work)(_scope(), receive, _noop_send)
    assert stopped.is_set()
