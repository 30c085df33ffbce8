"""``FailoverMiddleware``: make the candidate channels, and each channel's keys, act as one endpoint.

For each *target* (a candidate channel with one of its keys, in priority order, keys in list order)
it sets ``scope["ccx"].attempt`` and calls the wrapped app, normally
:class:`~ccx_asgi.channels.endpoint.ChannelEndpoint`, whose :class:`~ccx_asgi.stream.ClientStream`
(made here, ``ctx.client_stream``) holds the response until a meaningful answer exists and raises
:class:`~ccx_asgi.errors.UpstreamError` before that. Then:

- a **retryable** error (connect error, timeout, 401/403/408/429/5xx, overload or rate-limit body,
  quota or billing, a stream that fails or ends before content) records a breaker failure and moves
  to the next target; ``Retry-After`` parks the key for that long, a rejected key (401/402/403) or
  one out of quota for ``key_park_seconds``;
- a **non-retryable** error (400 validation, context length, an upstream 404, content policy) goes
  to the client unchanged, without trying elsewhere.

Which is which is the retry policy, :data:`ccx_asgi.errors.RETRY_POLICY` (the error's
``retryable`` and ``park_seconds``); :mod:`ccx_asgi.upstream_errors` says which kind of failure an
upstream's answer is.
- once content reached the client, the channel is fixed (the endpoint turns failures into
  ``response.failed``).

Targets whose circuit is open, or whose key is parked, are skipped while other targets are
available; only when none is available are they tried anyway, as a last resort. A conversation
(``prompt_cache_key``, ``session-id`` header or ``user``) goes first to the target that last served
it (see :mod:`ccx_asgi.affinity`). When everything fails the client gets a 503 (or, if a keep-alive
already started the stream, a ``response.failed``) listing what happened on each target, without
secrets — a 429 ``insufficient_quota`` when every target failed for quota, the code Codex stops for.

It sits between :class:`~ccx_asgi.middleware.ModelMapperMiddleware` (which supplies the candidates)
and the channel endpoint; :func:`ccx_asgi.create_app` builds this chain from settings::

    app = ChannelEndpoint(Upstream())
    app = FailoverMiddleware(app, state=create_store(redis_url), keepalive_interval=10)
    app = ModelMapperMiddleware(app, channels=channels)

A client that disconnects cancels the upstream request at once (its connection is closed, not
drained).

This module owns the decision; the pieces it decides with live with their owners: the target order
(:func:`ccx_asgi.routing.order_targets`), the breaker and parked keys
(:class:`ccx_asgi.breaker.CircuitBreaker`), disconnect watching
(:func:`ccx_asgi.asgi.wait_for_disconnect`), keep-alives and errors inside a started stream
(:class:`ccx_asgi.stream.ClientStream`), and the all-failed error
(:func:`ccx_asgi.errors.all_channels_failed`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from enum import Enum
from typing import Any

from ccx_asgi.affinity import Affinity, Sticky, session_key
from ccx_asgi.asgi import wait_for_disconnect
from ccx_asgi.breaker import BreakerConfig, CircuitBreaker, Verdict
from ccx_asgi.context import Attempt, AttemptRecord, RequestContext, get_context
from ccx_asgi.errors import CCXError, UpstreamError, all_channels_failed, send_error
from ccx_asgi.routing import Target, order_targets
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.state import Clock, MemoryStore, StateStore
from ccx_asgi.stream import ClientStream
from ccx_asgi.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["FailoverMiddleware"]

logger = logging.getLogger("ccx_asgi.failover")


class _Responder:
    """Tracks whether the wrapped app already started the response for this attempt."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class _Next(Enum):
    DONE = 1
    TRY_NEXT = 2


class FailoverMiddleware:
    """Try targets in order until one answers (see the module docstring).

    Options: ``state`` (a :class:`~ccx_asgi.state.StateStore`, default in-memory) shared by breakers,
    parked keys and affinity; ``breaker`` thresholds; ``affinity_ttl`` seconds (0 disables
    affinity); ``affinity_prefer_priority`` lets a healthy higher-priority channel win over the
    sticky one; ``keepalive_interval`` seconds of silence before a ``response.in_progress``
    keep-alive (0 disables); ``key_park_seconds`` for rejected keys; ``max_retry_after`` caps how
    long a ``Retry-After`` parks a key; ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        state: StateStore | None = None,
        breaker: BreakerConfig | None = None,
        affinity_ttl: float = 1800.0,
        affinity_prefer_priority: bool = False,
        keepalive_interval: float = 10.0,
        key_park_seconds: float = 300.0,
        max_retry_after: float = 600.0,
        clock: Clock = time.time,
    ) -> None:
        self.app = app
        self.state = state if state is not None else MemoryStore(clock=clock)
        self.breaker = CircuitBreaker(self.state, breaker, clock=clock)
        self.affinity = Affinity(self.state, ttl=affinity_ttl, clock=clock) if affinity_ttl > 0 else None
        self.affinity_prefer_priority = affinity_prefer_priority
        self.keepalive_interval = keepalive_interval
        self.key_park_seconds = key_park_seconds
        self.max_retry_after = max_retry_after

    async def channel_states(self, channels: Sequence[ChannelConfig]) -> dict[str, dict[str, Any]]:
        """Breaker state per channel for the admin API and metrics (keys by position, never by value).

        A channel is ``closed`` while any of its keys may be used, ``half-open`` while one may be
        probed, and ``open`` when every key is open or parked.
        """
        out: dict[str, dict[str, Any]] = {}
        for channel in channels:
            out[channel.name] = {
                "breaker": await self.breaker.channel_state(channel),
                "affinity": {"ttl_seconds": self.affinity.ttl} if self.affinity is not None else "off",
            }
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request through the first target that answers; cancel it if the client leaves."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope)
        stream: ClientStream | None = None
        if ctx.stream:
            stream = ctx.client_stream = ClientStream(ctx, send, keepalive_interval=self.keepalive_interval)
        # The request is served in this task; a watcher task cancels it when the client leaves.
        # (A second task for the work plus ``asyncio.wait`` cost more than the rest of this layer.)
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.ensure_future(wait_for_disconnect(receive))
        ticker = asyncio.ensure_future(stream.run_keepalive()) if stream is not None else None
        gone, serving = False, True

        def client_left(done: asyncio.Future[None]) -> None:
            nonlocal gone
            # ``serving`` is false once the request has moved on: this callback may already have
            # been scheduled when the work finished, and must not cancel what the task does next.
            # (This layer cancels the watcher itself only after that.) Any other end of the watcher
            # (a disconnect, ``receive()`` failing or cancelled) means the client cannot be served.
            if not serving:
                return
            if not done.cancelled() and done.exception() is not None:
                logger.debug("request %s: receive() failed: %r", ctx.request_id, done.exception())
            gone = True
            task.cancel()

        watcher.add_done_callback(client_left)
        # Cancellations pending before this layer ran (a host that swallowed one) are not ours.
        pending = task.cancelling()
        settled = False
        try:
            await self._serve(scope, receive, send, ctx, stream)
        except asyncio.CancelledError:
            # Only the watcher's own cancellation ends the request quietly; any other (the server
            # shutting down, a host's timeout) propagates.
            if gone:
                settled = True
                if task.uncancel() <= pending:
                    logger.info("request %s: client disconnected; upstream request cancelled", ctx.request_id)
                    return
            raise
        finally:
            serving = False
            watcher.remove_done_callback(client_left)
            watcher.cancel()
            if ticker is not None:
                ticker.cancel()
            if gone and not settled:
                task.uncancel()  # the work returned although it was cancelled: take the request back

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext, stream: ClientStream | None
    ) -> None:
        session = session_key(ctx) if self.affinity is not None else None
        sticky = await self.affinity.lookup(session) if self.affinity is not None and session else None
        targets = order_targets(
            ctx.candidates,
            pinned=ctx.pinned_target,
            sticky=sticky.target if sticky is not None else None,
            prefer_priority=self.affinity_prefer_priority,
        )
        skipped: list[tuple[Target, Verdict]] = []
        last: UpstreamError | None = None
        failures: list[UpstreamError] = []
        for target in targets:
            verdict = await self.breaker.check(target.id)
            if not verdict.allowed:
                skipped.append((target, verdict))
                continue
            step, last = await self._attempt(scope, receive, send, ctx, stream, target, verdict, last)
            if step is _Next.DONE:
                await self._served(session, sticky, target)
                return
            if last is not None:
                failures.append(last)
        if len(skipped) == len(targets):
            # Nothing was available: try the skipped targets anyway rather than refuse outright.
            for target, _ in skipped:
                step, last = await self._attempt(scope, receive, send, ctx, stream, target, Verdict(True), last)
                if step is _Next.DONE:
                    await self._served(session, sticky, target)
                    return
                if last is not None:
                    failures.append(last)
            skipped = []
        quota = bool(failures) and all(f.failure == "insufficient_quota" for f in failures)
        await self._all_failed(send, ctx, stream, skipped, last, quota=quota)

    async def _served(self, session: str | None, sticky: Sticky | None, target: Target) -> None:
        if self.affinity is not None and session:
            await self.affinity.remember(session, target.candidate.channel.name, target.id, sticky)

    async def _attempt(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ctx: RequestContext,
        stream: ClientStream | None,
        target: Target,
        verdict: Verdict,
        last: UpstreamError | None,
    ) -> tuple[_Next, UpstreamError | None]:
        channel = target.candidate.channel
        ctx.attempt = Attempt(channel, target.candidate.upstream_model, target.key, target.index, ctx.body)
        if stream is not None:
            stream.next_attempt()
        responder = _Responder(send)
        try:
            await self.app(scope, receive, responder)
        except UpstreamError as exc:
            if (stream is not None and stream.content) or (stream is None and responder.started):
                raise
            outcome = exc.reason if exc.channel == channel.name else exc.message
            ctx.attempts.append(AttemptRecord(channel.name, target.index, outcome, exc.upstream_status))
            logger.info("request %s: %s (key #%d): %s", ctx.request_id, channel.name, target.index + 1, outcome)
            if not exc.retryable:
                await self.breaker.success(target.id, probe=verdict.probe)
                await self._send_final(send, stream, exc)
                return _Next.DONE, last
            park = exc.park_seconds(key_park_seconds=self.key_park_seconds, max_retry_after=self.max_retry_after)
            await self.breaker.failed(target.id, probe=verdict.probe, park=park)
            return _Next.TRY_NEXT, exc
        except BaseException:
            if verdict.probe:
                # Cancelled (client gone) or crashed: free the probe for the next request.
                await asyncio.shield(self.breaker.release(target.id))
            raise
        if stream is not None and stream.failed_after_content:
            await self.breaker.failure(target.id, probe=verdict.probe)
        else:
            await self.breaker.success(target.id, probe=verdict.probe)
        return _Next.DONE, last

    async def _send_final(self, send: Send, stream: ClientStream | None, exc: CCXError) -> None:
        if stream is not None and stream.started:
            # A keep-alive already sent the 200: report the error inside the stream.
            await stream.fail_with(exc)
            return
        await send_error(send, exc)

    async def _all_failed(
        self,
        send: Send,
        ctx: RequestContext,
        stream: ClientStream | None,
        skipped: list[tuple[Target, Verdict]],
        last: UpstreamError | None,
        *,
        quota: bool = False,
    ) -> None:
        ctx.attempt = None
        outcomes = [f"{r.channel} (key #{r.key_index + 1}): {r.outcome}" for r in ctx.attempts]
        outcomes += [f"{t.candidate.channel.name} (key #{t.index + 1}): {v.reason}" for t, v in skipped]
        retry_after = last.retry_after if last is not None else None
        await self._send_final(send, stream, all_channels_failed(outcomes, quota=quota, retry_after=retry_after))
