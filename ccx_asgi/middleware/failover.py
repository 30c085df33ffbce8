"""``FailoverMiddleware``: try the candidate channels, and each channel's keys, in order.

For each candidate it sets ``scope["ccx"].attempt`` and calls the wrapped app. The wrapped app
(normally :class:`~ccx_asgi.channels.endpoint.ChannelEndpoint`) holds the response start until it
has a meaningful answer; until then a failure is raised as an
:class:`~ccx_asgi.errors.UpstreamError`. Retryable errors move on to the next key or channel;
non-retryable ones (validation errors, upstream 404s, content policy) go to the client unchanged.
When every candidate fails the client gets a 503 whose message lists what happened on each
attempted channel, without secrets.
"""

from __future__ import annotations

import logging

from pydantic import SecretStr

from ccx_asgi.context import Attempt, AttemptRecord, get_context
from ccx_asgi.errors import AllChannelsFailedError, CCXError, UpstreamError, send_error
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


class FailoverMiddleware:
    """Run the wrapped app once per candidate channel and key until one answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Try the candidates; report the failures when none answers."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope)
        rid = [(b"x-request-id", ctx.request_id.encode())]
        last: UpstreamError | None = None
        for candidate in ctx.candidates:
            channel = candidate.channel
            keys: list[SecretStr | None] = [*channel.api_keys] or [None]
            for index, key in enumerate(keys):
                ctx.attempt = Attempt(channel, candidate.upstream_model, key, index, ctx.body)
                responder = _Responder(send)
                try:
                    await self.app(scope, receive, responder)
                    return
                except UpstreamError as exc:
                    if responder.started:
                        raise
                    ctx.attempts.append(AttemptRecord(channel.name, index, exc.message, exc.upstream_status))
                    logger.info("request %s: %s", ctx.request_id, exc.message)
                    if not exc.retryable:
                        await send_error(send, exc, rid)
                        return
                    last = exc
        ctx.attempt = None
        summary = "; ".join(f"{r.channel} (key #{r.key_index + 1}): {r.outcome}" for r in ctx.attempts)
        error: CCXError = AllChannelsFailedError(
            f"All upstream channels are currently unavailable. {summary}" if summary else "No channel to try."
        )
        if last is not None and last.retry_after is not None:
            error.headers.append(("retry-after", str(int(last.retry_after + 0.999))))
        await send_error(send, error, rid)
