"""The innermost ASGI app: sends ``ctx.attempt`` to its upstream and pumps the answer back.

A streaming answer's bytes go through the SSE parser and the adapter's translator into the
request's :class:`~ccx_asgi.stream.ClientStream` (``ctx.client_stream``, made by the failover
layer), which owns the commit rule. A non-streaming answer is converted and sent whole; one that
completes with no output fails over like a stream that does (:func:`~ccx_asgi.stream.empty_completion`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import orjson

from ccx_asgi.channels import ADAPTERS
from ccx_asgi.channels.base import ChannelAdapter, StreamTranslator
from ccx_asgi.context import Attempt, get_context
from ccx_asgi.errors import UpstreamError, UpstreamStreamError
from ccx_asgi.observability import note_response, note_upstream_url
from ccx_asgi.sse import SSEEvent, SSELimitError, SSEParser
from ccx_asgi.store import before_answer
from ccx_asgi.stream import TERMINAL_EVENTS, ClientStream, empty_completion, response_headers
from ccx_asgi.types import Event, Receive, Scope, Send
from ccx_asgi.upstream import Upstream, forwardable_headers

__all__ = ["ADAPTERS", "ChannelEndpoint"]

logger = logging.getLogger("ccx_asgi.upstream")

_MAX_JSON_RESPONSE = 64 * 1024 * 1024


class ChannelEndpoint:
    """Innermost app of the ``POST /responses`` pipeline (see the module docstring).

    ``adapters`` maps service types to :class:`ChannelAdapter` objects (default the registry,
    :data:`ccx_asgi.channels.ADAPTERS`).
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
                f"service_type {attempt.channel.service_type!r} is not available in this installation",
                channel=attempt.channel.name,
                retryable=True,
            )
        request = adapter.build_request(ctx, attempt)
        client_headers = ctx.client_headers
        if client_headers is None:  # filtered once per request, reused by every attempt
            client_headers = ctx.client_headers = forwardable_headers(ctx.headers)
        headers = [
            *client_headers,
            ("x-request-id", ctx.request_id),
            ("content-type", "application/json"),
            ("accept", "text/event-stream" if ctx.stream else "application/json"),
            *((k, v.get_secret_value()) for k, v in attempt.channel.headers.items()),
            *adapter.auth_headers(attempt.channel, attempt.api_key),
            *request.headers,
        ]
        body = orjson.dumps(request.body)
        url = attempt.channel.url(request.endpoint)
        note_upstream_url(ctx, url)  # ops: request log
        async with self.upstream.open(attempt, url, headers, body, stream=ctx.stream) as response:
            if not ctx.stream:
                data = await self.upstream.read_json(attempt, response, _MAX_JSON_RESPONSE)
                converted = adapter.convert_response(ctx, attempt, data)
                completed = converted.get("status") == "completed"
                if completed and empty_completion({"type": "response.completed", "response": converted}):
                    # The same rule as a stream that completes with no output (see the module docstring).
                    raise UpstreamStreamError("the upstream completed without any output", channel=attempt.channel.name)
                note_response(ctx, converted)  # ops: usage for the request log and metrics
                await before_answer(ctx, converted)  # stored before the client can ask for it
                payload = orjson.dumps(converted)
                answer_headers = response_headers(ctx, b"application/json")
                # A known length spares the server chunked framing and lets clients size the read.
                answer_headers.append((b"content-length", str(len(payload)).encode()))
                await send({"type": "http.response.start", "status": 200, "headers": answer_headers})
                await send({"type": "http.response.body", "body": payload})
                return
            stream = ctx.client_stream
            if stream is None:  # the endpoint used without the failover layer
                stream = ctx.client_stream = ClientStream(ctx, send)
            await self._stream(stream, attempt, adapter.translator(ctx, attempt), response)

    async def _stream(
        self, stream: ClientStream, attempt: Attempt, translator: StreamTranslator, response: Any
    ) -> None:
        parser = SSEParser()
        try:
            async for chunk in self.upstream.iter_bytes(attempt, response):
                await _pump(stream, translator, parser.feed(chunk), attempt)
            await _pump(stream, translator, parser.finish(), attempt)
            await stream.finish(translator.finish())
        except UpstreamError as exc:
            await stream.upstream_failed(exc, translator.fail)
            await stream.end()
            return
        except SSELimitError as exc:
            message = str(exc)
            error = UpstreamStreamError(message, channel=attempt.channel.name)
            await stream.upstream_failed(error, lambda _: translator.fail(message))
            await stream.end()
            return
        except Exception:
            # A bug of this gateway (a translator's, say), not an upstream fault: never failed over.
            # It propagates to the app, which logs it and answers 500 if nothing was sent; a
            # started stream is ended here so the client does not wait for more.
            if stream.started:
                with contextlib.suppress(Exception):
                    await stream.fail("Internal gateway error; see the gateway log.")
            raise


async def _pump(stream: ClientStream, translator: StreamTranslator, parsed: list[SSEEvent], attempt: Attempt) -> None:
    """Offer the events translated from the SSE events of one upstream read, batched.

    What arrived together leaves together: after the commit, the rest of a read's events go out in
    one ASGI send (one socket write) rather than one per event, and nothing waits for bytes that
    have not arrived. The commit itself (the prelude and the first content) is written as soon as
    it is translated, so the first event never waits for the rest of its read. A batch is cut after
    a terminal event so that it stays last in its batch (the stream's store and usage hooks look
    there), and what was translated before a translator raised is still offered first.
    """
    if len(parsed) == 1:  # the paced case: one token per read
        await stream.offer(_translate(translator, parsed[0].data, attempt))
        return
    batch: list[Event] = []
    for sse in parsed:
        try:
            events = _translate(translator, sse.data, attempt)
        except Exception:
            # Whatever the fault (an upstream's or a translator bug), the client gets what was
            # translated before it, as it would have one event at a time.
            if batch:
                await stream.offer(batch)
            raise
        if not stream.content:
            # Nothing is written before the commit (the stream holds the prelude back).
            await stream.offer(events)
            continue
        batch += events
        if events and events[-1].get("type") in TERMINAL_EVENTS:
            await stream.offer(batch)
            batch = []
    if batch:
        await stream.offer(batch)


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
