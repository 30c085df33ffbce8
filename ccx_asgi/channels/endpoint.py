"""The innermost ASGI app: sends ``ctx.attempt`` to its upstream and streams the answer back.

The commit rule lives here and in :class:`ClientStream`, the client's side of one streaming answer,
shared by every attempt of a request:

- Nothing from an upstream reaches the client until its first *meaningful* event: a text,
  reasoning, argument or input delta with content, a tool call opened (it carries the tool's name),
  a finished item, or a terminal ``completed`` (with output) / ``incomplete`` event. ``created``,
  ``in_progress`` and empty message/reasoning items are held. Up to that point every failure
  (including ``response.failed``, an ``error`` event, or a stream that ends or completes with no
  output) is raised as an :class:`~ccx_asgi.errors.UpstreamError` so the failover layer can try the
  next key or channel. A non-streaming answer that completes with no output fails over the same way:
  one rule for both (an empty answer, even Claude's legitimate empty ``end_turn``, would end a coding
  agent's turn with nothing done; another try almost always answers).
- Keep-alive: when nothing has been sent for ``keepalive_interval`` seconds, the stream sends a
  ``response.in_progress`` event (Codex's idle timer ignores SSE comments). If that happens before
  any content, the response is *soft-committed*: the HTTP 200, a gateway-made ``response.created``
  and ``in_progress`` events go out, but no upstream content has. Failover stays possible: a later
  attempt's prelude is dropped and its events are re-stamped with the committed response id and
  sequence numbers, so the client sees one consistent response. If every attempt fails after a soft
  commit, the failover layer ends the stream with ``response.failed`` instead of an HTTP 503.
- After the first meaningful event the channel is fixed. A later upstream failure becomes a
  ``response.failed`` event, never a fake ``response.completed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from ccx_asgi.channels.base import ChannelAdapter, StreamTranslator
from ccx_asgi.channels.chat import ChatAdapter
from ccx_asgi.channels.claude import ClaudeAdapter
from ccx_asgi.channels.responses import TERMINAL_EVENTS, ResponsesAdapter
from ccx_asgi.context import Attempt, RequestContext, get_context
from ccx_asgi.convert.events import ResponseStream
from ccx_asgi.errors import UpstreamError, UpstreamStreamError
from ccx_asgi.observability import note_response, note_upstream_url
from ccx_asgi.sse import SSEParser, encode_event
from ccx_asgi.store import before_answer
from ccx_asgi.types import Event, Receive, Scope, Send
from ccx_asgi.upstream import Upstream, forwardable_headers

__all__ = ["ADAPTERS", "CLIENT_STREAM", "ChannelEndpoint", "ClientStream", "client_stream", "response_headers"]

logger = logging.getLogger("ccx_asgi.upstream")

#: Adapters by ``service_type``. The demo channel speaks native Responses.
ADAPTERS: dict[str, ChannelAdapter] = {
    "responses": ResponsesAdapter(),
    "demo": ResponsesAdapter(),
    "chat": ChatAdapter(),
    "claude": ClaudeAdapter(),
}

# Key of the client headers that may go upstream, in ``RequestContext.extra``.
_CLIENT_HEADERS = "ccx.client_headers"

#: Key of the request's :class:`ClientStream` in ``RequestContext.extra``.
CLIENT_STREAM = "ccx.client_stream"

# Events that say nothing about whether the upstream will actually answer.
_PRELUDE = frozenset({"response.created", "response.in_progress", "response.queued"})
# Item openings and part openings that carry no content yet.
_EMPTY_OPENINGS = frozenset({"response.content_part.added", "response.reasoning_summary_part.added"})
_HELD_ITEMS = frozenset({"message", "reasoning"})
# Families of events that carry (or close) output content.
_CONTENT_PREFIXES = (
    "response.output_item.",
    "response.output_text.",
    "response.content_part.",
    "response.reasoning",
    "response.function_call_arguments.",
    "response.custom_tool_call_input.",
    "response.refusal.",
)
# Errors reported in-stream that another channel would hit as well: give them to the client.
# (insufficient_quota is not among them: another key may have credit; see ccx_asgi.upstream_errors.)
_FINAL_CODES = frozenset({"context_length_exceeded", "invalid_prompt", "content_filter", "invalid_request_error"})
_MAX_JSON_RESPONSE = 64 * 1024 * 1024
_SSE_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


def response_headers(ctx: RequestContext, content_type: bytes) -> list[tuple[bytes, bytes]]:
    """Headers of a successful answer: type, request id, and which channel served after how many tries."""
    headers = [(b"content-type", content_type), (b"x-request-id", ctx.request_id.encode("latin-1"))]
    if ctx.attempt is not None:
        headers.append((b"x-ccx-channel", ctx.attempt.channel.name.encode("utf-8", "replace")))
        headers.append((b"x-ccx-attempts", str(len(ctx.attempts) + 1).encode()))
    return headers


def _meaningful(event: Event) -> bool:
    """Whether ``event`` carries real content (see the module docstring)."""
    kind = event.get("type")
    if kind in _PRELUDE or kind in _EMPTY_OPENINGS:
        return False
    if kind == "response.output_item.added":
        item = event.get("item")
        return not (isinstance(item, dict) and item.get("type") in _HELD_ITEMS)
    if not isinstance(kind, str) or not kind.startswith(_CONTENT_PREFIXES):
        # An event type this gateway does not know (or a bare "error") proves nothing about the
        # answer: it is passed on, but it must not fix the channel before real content arrives.
        return kind in ("response.completed", "response.incomplete")
    if kind.endswith(".delta"):
        return bool(event.get("delta"))
    return True


def _empty_completion(event: Event) -> bool:
    """A ``response.completed`` without any output: an upstream that "answered" nothing."""
    if event.get("type") != "response.completed":
        return False
    response = event.get("response")
    return isinstance(response, dict) and not response.get("output")


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
    final = code in _FINAL_CODES
    return UpstreamStreamError(
        f"upstream stream failed before any content: {message}",
        code=code or "upstream_stream_error",
        retryable=not final,
        status=400 if final else None,
    )


class ClientStream:
    """The client's side of one streaming response, shared by all attempts of a request.

    It sends the response start and every frame, stamps each event with the committed response id
    and a gap-free ``sequence_number``, sends keep-alives (:meth:`run_keepalive`), and records
    whether content was sent (after which failover is over). Sends are serialised by a lock so a
    keep-alive never interleaves with a frame. ``keepalive_interval`` ≤ 0 disables keep-alives.
    """

    def __init__(self, ctx: RequestContext, send: Send, *, keepalive_interval: float = 0.0) -> None:
        self.ctx = ctx
        self._send = send
        self.keepalive_interval = keepalive_interval
        #: The HTTP response start (and a ``response.created``) has been sent.
        self.started = False
        #: A meaningful upstream event has been sent: the channel is fixed.
        self.content = False
        #: The terminal event and the end of the body have been sent.
        self.finished = False
        #: The upstream failed after content was sent (the stream ended with ``response.failed``).
        self.failed_after_content = False
        self.keepalives = 0
        self._response: dict[str, Any] | None = None
        self._seq = 0
        self._lock = asyncio.Lock()
        self._last = time.monotonic()

    def _stamp(self, event: Event) -> bytes:
        response = event.get("response")
        if isinstance(response, dict):
            if self._response is None:
                self._response = response
            elif response.get("id") != self._response.get("id"):
                event["response"] = {**response, "id": self._response["id"]}
        event["sequence_number"] = self._seq
        self._seq += 1
        return encode_event(event)

    async def _start(self, *, decided: bool) -> None:
        # Started by a keep-alive, the channel is not known yet: say nothing rather than guess.
        self.started = True
        content_type = b"text/event-stream; charset=utf-8"
        if decided:
            headers = response_headers(self.ctx, content_type)
        else:
            headers = [(b"content-type", content_type), (b"x-request-id", self.ctx.request_id.encode("latin-1"))]
        await self._send({"type": "http.response.start", "status": 200, "headers": [*headers, *_SSE_HEADERS]})

    async def _write(self, frames: list[bytes], *, more: bool = True) -> None:
        self._last = time.monotonic()
        await self._send({"type": "http.response.body", "body": b"".join(frames), "more_body": more})
        if not more:
            self.finished = True

    async def commit(self, held: list[Event]) -> None:
        """Send ``held`` (an attempt's events up to its first meaningful one): the channel is now fixed.

        After a soft commit the attempt's own prelude is dropped: the client already has one.
        """
        async with self._lock:
            if self.finished:
                return
            if not self.started:
                await self._start(decided=True)
            elif self._response is not None:
                held = [e for e in held if e.get("type") not in _PRELUDE]
            if self._response is None and (not held or held[0].get("type") != "response.created"):
                held = [*self._prelude(), *held]
            self.content = True
            await self._write(await self._frames(held))

    async def events(self, events: list[Event]) -> None:
        """Send events of the committed attempt."""
        if not events:
            return
        if any(e.get("type") == "response.failed" for e in events):
            self.failed_after_content = True
        async with self._lock:
            if self.finished:
                return
            await self._write(await self._frames(events))

    async def _frames(self, events: list[Event]) -> list[bytes]:
        """Stamp ``events``; a terminal one goes to the response store before the client sees it."""
        # Translators put the terminal event last in its batch.
        last = events[-1] if events else None
        upstream = last.get("response") if last is not None and last.get("type") in TERMINAL_EVENTS else None
        upstream_id = upstream.get("id") if isinstance(upstream, dict) else None
        frames = [self._stamp(e) for e in events]
        if isinstance(upstream, dict) and last is not None:
            await before_answer(self.ctx, last.get("response"), upstream_id)  # stamped: the client's id
        return frames

    async def end(self) -> None:
        """End the HTTP body (after the terminal event)."""
        async with self._lock:
            if not self.finished:
                await self._write([], more=False)

    def _prelude(self) -> list[Event]:
        built = ResponseStream(self.ctx.model, self.ctx.body)
        built.start()
        return built.take()

    async def keepalive(self) -> None:
        """Send one ``response.in_progress`` now (soft-committing the response if needed)."""
        async with self._lock:
            if self.finished:
                return
            if not self.started:
                await self._start(decided=False)
            if self._response is None:
                frames = [self._stamp(e) for e in self._prelude()]
            else:
                snapshot = {**self._response, "status": "in_progress"}
                frames = [self._stamp({"type": "response.in_progress", "response": snapshot})]
            self.keepalives += 1
            logger.debug("request %s: keep-alive #%d", self.ctx.request_id, self.keepalives)
            await self._write(frames)

    async def fail(self, message: str, code: str = "server_error") -> None:
        """End a started stream with ``response.failed`` (every attempt failed after a soft commit)."""
        async with self._lock:
            if self.finished:
                return
            if not self.started:
                await self._start(decided=False)
            frames = [self._stamp(e) for e in self._prelude()] if self._response is None else []
            response = {**(self._response or {}), "status": "failed", "error": {"code": code, "message": message}}
            frames.append(self._stamp({"type": "response.failed", "response": response}))
            await self._write(frames, more=False)

    async def run_keepalive(self) -> None:
        """Send a keep-alive whenever the stream has been idle for ``keepalive_interval`` (run as a task)."""
        interval = self.keepalive_interval
        if interval <= 0:
            return
        try:
            while not self.finished:
                idle = time.monotonic() - self._last
                if idle < interval:
                    await asyncio.sleep(interval - idle)
                    continue
                await self.keepalive()
        except Exception as exc:  # the client went away; the disconnect watcher ends the request
            logger.debug("request %s: keep-alive not sent: %r", self.ctx.request_id, exc)


def client_stream(ctx: RequestContext, send: Send) -> ClientStream:
    """The request's :class:`ClientStream` (made by the failover layer; created here when absent)."""
    stream = ctx.extra.get(CLIENT_STREAM)
    if not isinstance(stream, ClientStream):
        stream = ClientStream(ctx, send)
        ctx.extra[CLIENT_STREAM] = stream
    return stream


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
        client_headers = ctx.extra.get(_CLIENT_HEADERS)
        if client_headers is None:  # filtered once per request, reused by every attempt
            client_headers = ctx.extra[_CLIENT_HEADERS] = forwardable_headers(ctx.headers)
        headers = [
            *client_headers,
            ("x-request-id", ctx.request_id),
            ("content-type", "application/json"),
            ("accept", "text/event-stream" if ctx.stream else "application/json"),
            *((k, v.get_secret_value()) for k, v in attempt.channel.headers.items()),
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
                if completed and _empty_completion({"type": "response.completed", "response": converted}):
                    # The same rule as a stream that completes with no output (see the module docstring).
                    raise UpstreamStreamError(
                        f"channel {attempt.channel.name!r}: the upstream completed without any output"
                    )
                note_response(ctx, converted)  # ops: usage for the request log and metrics
                await before_answer(ctx, converted)  # stored before the client can ask for it
                payload = orjson.dumps(converted)
                answer_headers = response_headers(ctx, b"application/json")
                # A known length spares the server chunked framing and lets clients size the read.
                answer_headers.append((b"content-length", str(len(payload)).encode()))
                await send({"type": "http.response.start", "status": 200, "headers": answer_headers})
                await send({"type": "http.response.body", "body": payload})
                return
            stream = client_stream(ctx, send)
            await self._stream(stream, attempt, adapter.translator(ctx, attempt), response)

    async def _stream(
        self, stream: ClientStream, attempt: Attempt, translator: StreamTranslator, response: Any
    ) -> None:
        parser = SSEParser()
        held: list[Event] = []
        name = attempt.channel.name

        async def emit(events: list[Event]) -> None:
            # Translators put the terminal event last in its batch: usage for the log and metrics.
            if events and events[-1].get("type") in TERMINAL_EVENTS:
                note_response(stream.ctx, events[-1].get("response"))  # ops
            if stream.content:
                await stream.events(events)
                return
            for n, event in enumerate(events):
                kind = event.get("type")
                if kind == "response.failed" or kind == "error":
                    failure = _failure(event)
                    if failure.retryable or kind == "error":
                        raise failure
                    # A final in-stream failure (context length, policy) is the answer: pass it on.
                    held.append(event)
                    await stream.commit(held)
                    held.clear()
                    await stream.events(events[n + 1 :])
                    return
                if _empty_completion(event):
                    raise UpstreamStreamError(f"channel {name!r}: the upstream completed without any output")
                held.append(event)
                if _meaningful(event):
                    await stream.commit(held)
                    held.clear()
                    await stream.events(events[n + 1 :])
                    return

        try:
            async for chunk in self.upstream.iter_bytes(attempt, response):
                for sse in parser.feed(chunk):
                    await emit(_translate(translator, sse.data, attempt))
            for sse in parser.finish():
                await emit(_translate(translator, sse.data, attempt))
            await emit(translator.finish())
        except UpstreamError as exc:
            if not stream.content:
                raise
            logger.warning("channel %s: stream failed after commit: %s", name, exc.message)
            await stream.events(translator.fail(exc.message))
        except ValueError as exc:  # the SSE parser's size bound
            if not stream.content:
                raise UpstreamStreamError(f"channel {name!r}: {exc}") from None
            await stream.events(translator.fail(str(exc)))
        if not stream.content:
            raise UpstreamStreamError(f"channel {name!r}: the upstream stream carried no answer")
        await stream.end()


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
