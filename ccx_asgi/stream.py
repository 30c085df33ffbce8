"""The client's side of one streaming answer: the commit rule, keep-alives and the stream's end.

:class:`ClientStream` is made by the failover layer for a streaming request (``ctx.client_stream``)
and shared by every attempt; the endpoint only pumps each attempt's translated events into
:meth:`ClientStream.offer`. The rule it enforces:

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
  ``response.in_progress`` event (Codex's idle timer ignores SSE comments), never after a terminal
  event (an upstream may keep its connection open a while after it). If that happens before
  any content, the response is *soft-committed*: the HTTP 200, a gateway-made ``response.created``
  and ``in_progress`` events go out, but no upstream content has. Failover stays possible: a later
  attempt's prelude is dropped and its events are re-stamped with the committed response id and
  sequence numbers, so the client sees one consistent response. If every attempt fails after a soft
  commit, the failover layer ends the stream with ``response.failed`` instead of an HTTP 503.
- After the first meaningful event the channel is fixed. A later upstream failure becomes a
  ``response.failed`` event, never a fake ``response.completed``.

The stream is also the one place the client-visible ``sequence_number`` and response id are made:
each attempt's translator numbers its own events (so a translator's output is a valid stream on its
own), and :meth:`ClientStream._stamp` renumbers them gap-free under the committed response id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ccx_asgi.context import RequestContext
from ccx_asgi.convert.events import ResponseStream
from ccx_asgi.errors import INSUFFICIENT_QUOTA, AllChannelsFailedError, CCXError, UpstreamError, UpstreamStreamError
from ccx_asgi.observability import note_response
from ccx_asgi.sse import encode_event
from ccx_asgi.store import before_answer
from ccx_asgi.types import Event, Send
from ccx_asgi.upstream_errors import CODEX_ERROR_CODES, stream_failure

__all__ = ["TERMINAL_EVENTS", "ClientStream", "empty_completion", "response_headers"]

logger = logging.getLogger("ccx_asgi.upstream")

#: Event types that end a Responses stream.
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
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
_SSE_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


def response_headers(ctx: RequestContext, content_type: bytes) -> list[tuple[bytes, bytes]]:
    """Headers of a successful answer: type, and which channel served after how many tries (the
    request id is added by the app's send wrapper, :func:`~ccx_asgi.asgi.with_request_id`)."""
    headers = [(b"content-type", content_type)]
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


def empty_completion(event: Event) -> bool:
    """A ``response.completed`` without any output: an upstream that "answered" nothing (the same
    rule holds for a non-streaming answer, see :class:`~ccx_asgi.channels.endpoint.ChannelEndpoint`)."""
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
    failure = stream_failure(code)
    return UpstreamStreamError(
        f"upstream stream failed before any content: {message}",
        code=code or "upstream_stream_error",
        failure=failure,
        status=400 if failure == "final" else None,
    )


class ClientStream:
    """The client's side of one streaming response, shared by all attempts of a request.

    The endpoint feeds each attempt's translated events to :meth:`offer` (which holds them until
    the first meaningful one, then commits), ends an attempt with :meth:`finish` or
    :meth:`upstream_failed`; the failover layer calls :meth:`next_attempt` before each try, reads
    :attr:`started`, :attr:`content` and :attr:`failed_after_content` to decide, and ends a stream
    every attempt failed with :meth:`fail`. It sends the response start and every frame, stamps
    each event with the committed response id and a gap-free ``sequence_number``, and sends
    keep-alives (:meth:`run_keepalive`). Sends are serialised by a lock so a keep-alive never
    interleaves with a frame. ``keepalive_interval`` ≤ 0 disables keep-alives.
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
        # A terminal event reached the client: no keep-alive may follow it.
        self._terminal_sent = False
        self._response: dict[str, Any] | None = None
        self._seq = 0
        self._lock = asyncio.Lock()
        self._last = time.monotonic()
        # The current attempt's events held back until its first meaningful one.
        self._held: list[Event] = []

    def next_attempt(self) -> None:
        """Forget what the previous attempt held back (called by the failover layer before each try)."""
        self._held = []

    def _channel(self) -> str:
        attempt = self.ctx.attempt
        return attempt.channel.name if attempt is not None else "?"

    async def offer(self, events: list[Event]) -> None:
        """The commit rule (see the module docstring): hold ``events`` of the current attempt until
        the first meaningful one, then commit and pass everything on.

        Raises :class:`~ccx_asgi.errors.UpstreamStreamError` for a failure before content, so the
        failover layer can try the next target.
        """
        self._note_terminal(events)
        if self.content:
            await self.events(events)
            return
        held = self._held
        for n, event in enumerate(events):
            kind = event.get("type")
            if kind == "response.failed" or kind == "error":
                failure = _failure(event)
                if failure.retryable or kind == "error":
                    raise failure
                # A final in-stream failure (context length, policy) is the answer: pass it on.
                held.append(event)
                await self._commit_held(events[n + 1 :])
                return
            if empty_completion(event):
                raise UpstreamStreamError("the upstream completed without any output", channel=self._channel())
            held.append(event)
            if _meaningful(event):
                await self._commit_held(events[n + 1 :])
                return

    def _note_terminal(self, events: list[Event]) -> None:
        # Translators put the terminal event last in its batch: usage for the log and metrics.
        if events and events[-1].get("type") in TERMINAL_EVENTS:
            note_response(self.ctx, events[-1].get("response"))  # ops

    async def _commit_held(self, rest: list[Event]) -> None:
        held, self._held = self._held, []
        await self.commit(held, rest)

    async def upstream_failed(self, error: UpstreamError, closing: Callable[[str], list[Event]]) -> None:
        """The current attempt's upstream failed mid-stream: before content ``error`` is raised (the
        failover layer tries the next target); after it, ``closing(message)`` (the translator's
        ``response.failed``) ends the client's stream."""
        if not self.content:
            raise error
        logger.warning("channel %s: stream failed after commit: %s", self._channel(), error.message)
        await self.events(closing(error.message))

    async def finish(self, closing: list[Event]) -> None:
        """The current attempt's upstream stream ended: offer the translator's ``closing`` events,
        then end the body; a stream that carried no answer raises for failover."""
        if self.content:
            # Committed: the closing events and the end of the body go out in one write.
            self._note_terminal(closing)
            await self.events(closing, more=False)
            return
        await self.offer(closing)
        if not self.content:
            raise UpstreamStreamError("the upstream stream carried no answer", channel=self._channel())
        await self.end()

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
        headers = response_headers(self.ctx, content_type) if decided else [(b"content-type", content_type)]
        await self._send({"type": "http.response.start", "status": 200, "headers": [*headers, *_SSE_HEADERS]})

    async def _write(self, frames: list[bytes], *, more: bool = True) -> None:
        self._last = time.monotonic()
        await self._send({"type": "http.response.body", "body": b"".join(frames), "more_body": more})
        if not more:
            self.finished = True

    async def commit(self, held: list[Event], rest: list[Event] | None = None) -> None:
        """Send ``held`` (an attempt's events up to its first meaningful one) and ``rest`` (the
        events that came with it) in one write: the channel is now fixed.

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
            if rest and any(e.get("type") == "response.failed" for e in rest):
                self.failed_after_content = True
            # Stamped as two batches (a terminal commit event reaches the store), written as one.
            frames = await self._frames(held)
            if rest:
                frames += await self._frames(rest)
            await self._write(frames)

    async def events(self, events: list[Event], *, more: bool = True) -> None:
        """Send events of the committed attempt; ``more=False`` ends the body with them."""
        if not events and more:
            return
        if any(e.get("type") == "response.failed" for e in events):
            self.failed_after_content = True
        async with self._lock:
            if self.finished:
                return
            await self._write(await self._frames(events), more=more)

    async def _frames(self, events: list[Event]) -> list[bytes]:
        """Stamp ``events``; a terminal one goes to the response store before the client sees it."""
        # Translators put the terminal event last in its batch.
        last = events[-1] if events else None
        terminal = last is not None and last.get("type") in TERMINAL_EVENTS
        upstream = last.get("response") if last is not None and terminal else None
        upstream_id = upstream.get("id") if isinstance(upstream, dict) else None
        frames = [self._stamp(e) for e in events]
        self._terminal_sent = self._terminal_sent or terminal
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
            if self.finished or self._terminal_sent:
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

    async def fail_with(self, error: CCXError) -> None:
        """End a stream a keep-alive already started with ``error`` as ``response.failed``: a client
        error keeps the code Codex acts on (context length and quota stop the turn), else
        ``invalid_prompt``; every target failing is ``server_error`` (``rate_limit_exceeded`` with
        when to try again)."""
        if not isinstance(error, AllChannelsFailedError):
            await self.fail(error.message, error.code if error.code in CODEX_ERROR_CODES else "invalid_prompt")
        elif error.code == INSUFFICIENT_QUOTA:
            await self.fail(error.message, INSUFFICIENT_QUOTA)
        elif error.retry_after is not None:
            await self.fail(f"{error.message} Please try again in {error.retry_after:g}s.", "rate_limit_exceeded")
        else:
            await self.fail(error.message, "server_error")

    async def run_keepalive(self) -> None:
        """Send a keep-alive whenever the stream has been idle for ``keepalive_interval`` (run as a task)."""
        interval = self.keepalive_interval
        if interval <= 0:
            return
        try:
            while not (self.finished or self._terminal_sent):
                idle = time.monotonic() - self._last
                if idle < interval:
                    await asyncio.sleep(interval - idle)
                    continue
                await self.keepalive()
        except Exception as exc:  # the client went away; the disconnect watcher ends the request
            logger.debug("request %s: keep-alive not sent: %r", self.ctx.request_id, exc)
