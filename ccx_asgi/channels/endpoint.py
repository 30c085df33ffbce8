"""The innermost ASGI app: sends ``ctx.attempt`` to its upstream and streams the answer back.

The commit rule lives here. Nothing is sent to the client until the first *meaningful* event
(an output item, a delta, or a terminal ``completed``/``incomplete``) has been produced; up to that
point every failure is raised as an :class:`~ccx_asgi.errors.UpstreamError` so that the failover
layer can try another key or channel. After the commit, failures become ``response.failed`` events
in the same stream, never a fake ``response.completed``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from ccx_asgi.channels.base import ChannelAdapter, StreamTranslator
from ccx_asgi.channels.chat import ChatAdapter
from ccx_asgi.channels.responses import ResponsesAdapter
from ccx_asgi.context import Attempt, RequestContext, get_context
from ccx_asgi.errors import UpstreamError, UpstreamStreamError
from ccx_asgi.sse import SSEParser, encode_event
from ccx_asgi.types import Event, Receive, Scope, Send
from ccx_asgi.upstream import Upstream, forwardable_headers

__all__ = ["ADAPTERS", "ChannelEndpoint", "response_headers"]

logger = logging.getLogger("ccx_asgi.upstream")

#: Adapters by ``service_type``. The demo channel speaks native Responses.
ADAPTERS: dict[str, ChannelAdapter] = {
    "responses": ResponsesAdapter(),
    "demo": ResponsesAdapter(),
    "chat": ChatAdapter(),
}

# Events that say nothing about whether the upstream will actually answer.
_PRELUDE = frozenset({"response.created", "response.in_progress", "response.queued"})
# Errors reported in-stream that another channel would hit as well: give them to the client.
_FINAL_CODES = frozenset({"context_length_exceeded", "invalid_prompt", "content_filter", "invalid_request_error"})
_MAX_JSON_RESPONSE = 64 * 1024 * 1024


def response_headers(ctx: RequestContext, content_type: bytes) -> list[tuple[bytes, bytes]]:
    """Headers of a successful answer: type, request id, and which channel served after how many tries."""
    headers = [(b"content-type", content_type), (b"x-request-id", ctx.request_id.encode("latin-1"))]
    if ctx.attempt is not None:
        headers.append((b"x-ccx-channel", ctx.attempt.channel.name.encode("utf-8", "replace")))
        headers.append((b"x-ccx-attempts", str(len(ctx.attempts) + 1).encode()))
    return headers


def _failure(event: Event) -> UpstreamStreamError:
    """The error for a stream that failed before it was committed."""
    if event.get("type") == "error":
        error: Any = event.get("error", event)
    else:
        response = event.get("response")
        error = response.get("error") if isinstance(response, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else "upstream stream failed"
    return UpstreamStreamError(
        f"upstream stream failed before any content: {message}",
        code=code or "upstream_stream_error",
        retryable=code not in _FINAL_CODES,
    )


class ChannelEndpoint:
    """Innermost app of the ``POST /responses`` pipeline (see the module docstring).

    ``adapters`` maps service types to :class:`ChannelAdapter` objects (default :data:`ADAPTERS`).
    """

    def __init__(self, upstream: Upstream, *, adapters: dict[str, ChannelAdapter] | None = None) -> None:
        self.upstream = upstream
        self.adapters = ADAPTERS if adapters is None else adapters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the current attempt."""
        ctx = get_context(scope)
        attempt = ctx.attempt
        if attempt is None:
            raise RuntimeError("no attempt in the ccx context: put FailoverMiddleware in front of ChannelEndpoint")
        adapter = self.adapters.get(attempt.channel.service_type)
        if adapter is None:
            raise UpstreamError(
                f"channel {attempt.channel.name!r}: service_type {attempt.channel.service_type!r} "
                "is not available in this installation",
                retryable=True,
            )
        request = adapter.build_request(ctx, attempt)
        headers = [
            *forwardable_headers(ctx.headers),
            ("x-request-id", ctx.request_id),
            ("content-type", "application/json"),
            ("accept", "text/event-stream" if ctx.stream else "application/json"),
            *((k, v.get_secret_value()) for k, v in attempt.channel.headers.items()),
            *request.headers,
        ]
        body = orjson.dumps(request.body)
        url = attempt.channel.url(request.endpoint)
        async with self.upstream.open(attempt, url, headers, body, stream=ctx.stream) as response:
            if not ctx.stream:
                data = await self.upstream.read_json(attempt, response, _MAX_JSON_RESPONSE)
                payload = orjson.dumps(adapter.convert_response(ctx, attempt, data))
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": response_headers(ctx, b"application/json"),
                    }
                )
                await send({"type": "http.response.body", "body": payload})
                return
            await self._stream(ctx, attempt, adapter.translator(ctx, attempt), response, send)

    async def _stream(
        self, ctx: RequestContext, attempt: Attempt, translator: StreamTranslator, response: Any, send: Send
    ) -> None:
        parser = SSEParser()
        held: list[bytes] = []
        committed = False

        async def emit(events: list[Event]) -> None:
            nonlocal committed
            frames: list[bytes] = []
            for event in events:
                kind = event.get("type")
                if not committed:
                    if kind == "response.failed" or kind == "error":
                        raise _failure(event)
                    held.append(encode_event(event))
                    if kind not in _PRELUDE:
                        committed = True
                        await send(
                            {
                                "type": "http.response.start",
                                "status": 200,
                                "headers": [
                                    *response_headers(ctx, b"text/event-stream; charset=utf-8"),
                                    (b"cache-control", b"no-cache"),
                                    (b"x-accel-buffering", b"no"),
                                ],
                            }
                        )
                        frames.extend(held)
                        held.clear()
                else:
                    frames.append(encode_event(event))
            if frames:
                await send({"type": "http.response.body", "body": b"".join(frames), "more_body": True})

        try:
            async for chunk in self.upstream.iter_bytes(attempt, response):
                for sse in parser.feed(chunk):
                    await emit(_translate(translator, sse.data, attempt))
            for sse in parser.finish():
                await emit(_translate(translator, sse.data, attempt))
            await emit(translator.finish())
        except UpstreamError as exc:
            if not committed:
                raise
            logger.warning("channel %s: stream failed after commit: %s", attempt.channel.name, exc.message)
            await emit(translator.fail(exc.message))
        except ValueError as exc:  # the SSE parser's size bound
            if not committed:
                raise UpstreamStreamError(f"channel {attempt.channel.name!r}: {exc}") from None
            await emit(translator.fail(str(exc)))
        if not committed:
            raise UpstreamStreamError(f"channel {attempt.channel.name!r}: the upstream stream carried no answer")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _translate(translator: StreamTranslator, data: str, attempt: Attempt) -> list[Event]:
    """Feed one SSE data field to ``translator``; ``[DONE]`` and malformed lines are skipped."""
    if not data or data == "[DONE]":
        return []
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        logger.debug("channel %s: skipped a malformed upstream event", attempt.channel.name)
        return []
    return translator.feed(parsed) if isinstance(parsed, dict) else []
