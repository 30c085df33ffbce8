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
  to the client unchanged, without trying elsewhere (see :mod:`ccx_asgi.upstream_errors`);
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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import SecretStr

from ccx_asgi.affinity import Affinity, Sticky, session_key
from ccx_asgi.breaker import BreakerConfig, CircuitBreaker, Verdict, target_id
from ccx_asgi.context import Attempt, AttemptRecord, RequestContext, get_context
from ccx_asgi.errors import AllChannelsFailedError, CCXError, UpstreamError, send_error
from ccx_asgi.routing import Candidate
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.state import Clock, MemoryStore, StateStore
from ccx_asgi.stream import ClientStream
from ccx_asgi.types import ASGIApp, Message, Receive, Scope, Send
from ccx_asgi.upstream_errors import CODEX_ERROR_CODES, INSUFFICIENT_QUOTA

__all__ = ["FailoverMiddleware"]

logger = logging.getLogger("ccx_asgi.failover")

_AUTH_STATUSES = frozenset({401, 402, 403})


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


@dataclass(frozen=True, slots=True)
class _Target:
    candidate: Candidate
    key: SecretStr | None
    index: int
    id: str


class _Next(Enum):
    DONE = 1
    TRY_NEXT = 2


class _ClientGone(Exception):
    """The client disconnected; the attempt was cancelled."""


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
            keys: list[SecretStr | None] = [*channel.api_keys] or [None]
            states = [await self.breaker.state(target_id(channel.name, key)) for key in keys]
            summary = "closed" if "closed" in states else "half-open" if "half-open" in states else "open"
            out[channel.name] = {
                "breaker": {"state": summary, "keys": {f"#{n}": state for n, state in enumerate(states, 1)}},
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
        work = asyncio.ensure_future(self._serve(scope, receive, send, ctx, stream))
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        ticker = asyncio.ensure_future(stream.run_keepalive()) if stream is not None else None
        gone = False
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if ticker is not None:
                ticker.cancel()
            watcher.cancel()
            if not work.done():
                gone = True
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            if watcher.done() and not watcher.cancelled() and watcher.exception() is not None:
                logger.debug("request %s: receive() failed: %r", ctx.request_id, watcher.exception())
        if gone:
            logger.info("request %s: client disconnected; upstream request cancelled", ctx.request_id)
            return
        await work

    def _targets(self, ctx: RequestContext, sticky: Sticky | None) -> list[_Target]:
        targets: list[_Target] = []
        for candidate in ctx.candidates:
            keys: list[SecretStr | None] = [*candidate.channel.api_keys] or [None]
            name = candidate.channel.name
            targets.extend(_Target(candidate, key, i, target_id(name, key)) for i, key in enumerate(keys))
        pinned = ctx.pinned_target
        if pinned is not None:
            # Only that account holds the previous response: no other target can serve the follow-up.
            return [t for t in targets if t.id == pinned]
        if sticky is None:
            return targets
        chosen = next((t for t in targets if t.id == sticky.target), None)
        if chosen is None:
            return targets
        rest = [t for t in targets if t is not chosen]
        if not self.affinity_prefer_priority:
            return [chosen, *rest]
        # Keep channel priority (a healthy higher-priority channel wins; an open one is skipped
        # anyway), but use the sticky key first within its channel.
        name = chosen.candidate.channel.name
        first = next((i for i, t in enumerate(rest) if t.candidate.channel.name == name), None)
        return targets if first is None else [*rest[:first], chosen, *rest[first:]]

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext, stream: ClientStream | None
    ) -> None:
        session = session_key(ctx) if self.affinity is not None else None
        sticky = await self.affinity.lookup(session) if self.affinity is not None and session else None
        targets = self._targets(ctx, sticky)
        skipped: list[tuple[_Target, Verdict]] = []
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
        quota = bool(failures) and all(f.code == INSUFFICIENT_QUOTA for f in failures)
        await self._all_failed(send, ctx, stream, skipped, last, quota=quota)

    async def _served(self, session: str | None, sticky: Sticky | None, target: _Target) -> None:
        if self.affinity is not None and session:
            await self.affinity.remember(session, target.candidate.channel.name, target.id, sticky)

    async def _attempt(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        ctx: RequestContext,
        stream: ClientStream | None,
        target: _Target,
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
            outcome = exc.message.removeprefix(f"channel {channel.name!r}: ")
            ctx.attempts.append(AttemptRecord(channel.name, target.index, outcome, exc.upstream_status))
            logger.info("request %s: %s (key #%d): %s", ctx.request_id, channel.name, target.index + 1, outcome)
            if not exc.retryable:
                await self.breaker.success(target.id, probe=verdict.probe)
                await self._send_final(send, ctx, stream, exc)
                return _Next.DONE, last
            await self.breaker.failure(target.id, probe=verdict.probe)
            if exc.retry_after is not None:
                await self.breaker.park(target.id, min(exc.retry_after, self.max_retry_after))
            elif exc.upstream_status in _AUTH_STATUSES or exc.code == INSUFFICIENT_QUOTA:
                # A rejected key, or one out of credit, stays unusable for a while.
                await self.breaker.park(target.id, self.key_park_seconds)
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

    async def _send_final(self, send: Send, ctx: RequestContext, stream: ClientStream | None, exc: CCXError) -> None:
        if stream is not None and stream.started:
            # A keep-alive already sent the 200: report the client error inside the stream, with
            # the code Codex acts on when there is one (context length stops the turn too).
            code = exc.code if exc.code in CODEX_ERROR_CODES else "invalid_prompt"
            await stream.fail(exc.message, code)
            return
        await send_error(send, exc)

    async def _all_failed(
        self,
        send: Send,
        ctx: RequestContext,
        stream: ClientStream | None,
        skipped: list[tuple[_Target, Verdict]],
        last: UpstreamError | None,
        *,
        quota: bool = False,
    ) -> None:
        ctx.attempt = None
        parts = [f"{r.channel} (key #{r.key_index + 1}): {r.outcome}" for r in ctx.attempts]
        parts += [f"{t.candidate.channel.name} (key #{t.index + 1}): {v.reason}" for t, v in skipped]
        summary = "; ".join(parts)
        message = f"All upstream channels are currently unavailable. {summary}" if summary else "No channel to try."
        error: CCXError = AllChannelsFailedError(message)
        if quota:
            # Every target is out of quota or credit: say so, Codex stops the turn on this code
            # (only as a 429) instead of retrying.
            error = AllChannelsFailedError(message, code=INSUFFICIENT_QUOTA, status=429)
            error.type = INSUFFICIENT_QUOTA
        retry_after = last.retry_after if last is not None else None
        if stream is not None and stream.started:
            if quota:
                await stream.fail(message, INSUFFICIENT_QUOTA)
            elif retry_after is not None:
                await stream.fail(f"{message} Please try again in {retry_after:g}s.", "rate_limit_exceeded")
            else:
                await stream.fail(message, "server_error")
            return
        if retry_after is not None and not quota:
            # (Codex would wait and retry a 429 that carries Retry-After; quota does not come back.)
            error.headers.append(("retry-after", str(int(retry_after + 0.999))))
        await send_error(send, error)


async def _wait_for_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (the body was already read by the model mapper)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
