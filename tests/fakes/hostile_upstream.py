"""A misbehaving native Responses upstream for hardening tests: it stalls, trickles, cuts streams,
echoes request headers into its errors and sends hostile response headers, on a script per request.

It watches for the gateway going away (``http.disconnect``) and stops at once when it does, and it
counts the streams it is serving, so tests can prove that a vanished client frees the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.sse import encode_event
from ccx_asgi.types import Receive, Scope, Send
from tests.fakes.asgi import read_request


@dataclass
class Plan:
    """What to do with one request.

    ``stall_before_headers``: never answer. ``events``: the SSE events (dicts, or raw bytes sent as
    they are). ``stall_after``: stop sending (but keep the connection) after that many events.
    ``delay``: seconds between events. ``status``/``error``: answer with an error JSON instead.
    ``headers``: extra response headers.
    """

    stall_before_headers: bool = False
    events: list[dict[str, Any] | bytes] = field(default_factory=list)
    stall_after: int | None = None
    delay: float = 0.0
    status: int = 200
    error: dict[str, Any] | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def text_events(text: str = "pong", *, model: str = "m", pieces: int = 1) -> list[dict[str, Any] | bytes]:
    """A valid stream answering ``text`` in ``pieces`` deltas."""
    stream = ResponseStream(model)
    index = stream.open_item("message")
    step = max(1, len(text) // pieces)
    for start in range(0, len(text), step):
        stream.delta(index, text[start : start + step])
    stream.complete(usage_dict(5, pieces))
    return list(stream.take())


@dataclass
class HostileUpstream:
    """The fake as an ASGI app; ``plan(body, headers)`` decides each request's fate."""

    plan: Callable[[dict[str, Any], dict[str, str]], Plan]
    active: int = 0
    max_active: int = 0
    served: int = 0
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers, raw = await read_request(scope, receive)
        body = orjson.loads(raw) if raw else {}
        self.requests.append((headers, body))
        plan = self.plan(body, headers)
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self._answer(plan, body, send, gone)
        finally:
            self.active -= 1
            self.served += 1
            watcher.cancel()

    async def _answer(self, plan: Plan, body: dict[str, Any], send: Send, gone: asyncio.Event) -> None:
        if plan.stall_before_headers:
            await gone.wait()
            return
        if plan.error is not None:
            data = orjson.dumps(plan.error)
            await send(
                {
                    "type": "http.response.start",
                    "status": plan.status,
                    "headers": [(b"content-type", b"application/json"), *plan.headers],
                }
            )
            await send({"type": "http.response.body", "body": data})
            return
        stream = body.get("stream", False)
        content_type = b"text/event-stream" if stream else b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": plan.status,
                "headers": [(b"content-type", content_type), *plan.headers],
            }
        )
        if not stream:
            final = next((e for e in reversed(plan.events) if isinstance(e, dict) and "response" in e), {})
            await send({"type": "http.response.body", "body": orjson.dumps(final.get("response", {}))})
            return
        for n, event in enumerate(plan.events):
            if plan.stall_after is not None and n >= plan.stall_after:
                await gone.wait()
                return
            if plan.delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), plan.delay)
            if gone.is_set():
                return
            chunk = event if isinstance(event, bytes) else encode_event(event)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
