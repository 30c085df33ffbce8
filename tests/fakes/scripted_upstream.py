"""A scripted native-Responses upstream as an httpx transport: one behaviour queue per host.

Each channel in a test gets its own host (``https://<name>.test/v1``). A behaviour is a function
from the request to an ``httpx.Response`` (or an exception to raise, like a real transport would).
The transport checks what every real upstream checks: the path, the bearer key, and a JSON body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.sse import encode_event
from ccx_asgi.types import Event

Behaviour = Callable[[httpx.Request, dict[str, Any]], httpx.Response]


def answer_events(model: str, text: str = "pong") -> list[Event]:
    """A complete, valid Responses stream answering ``text``."""
    stream = ResponseStream(model)
    index = stream.open_item("message")
    for word in text.split(" "):
        stream.delta(index, word + " ")
    stream.complete(usage_dict(10, 2))
    return stream.take()


def sse(
    events: Iterable[Event],
    *,
    fail: Exception | None = None,
    delay: float = 0.0,
    burst: bool = False,
    linger: float = 0.0,
) -> httpx.Response:
    """A 200 event stream of ``events``, one event per chunk (``delay`` before each), or with
    ``burst`` all in one chunk (a fast upstream's burst as one socket read sees it); the stream
    stays open ``linger`` seconds after the last event, then ``fail`` is raised (a dropped
    connection) if given."""
    frames = [encode_event(e) for e in events]
    if burst:
        frames = [b"".join(frames)]

    async def body() -> AsyncIterator[bytes]:
        for frame in frames:
            if delay:
                await asyncio.sleep(delay)
            yield frame
        if linger:
            await asyncio.sleep(linger)
        if fail is not None:
            raise fail

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


class _Paused:
    """A behaviour that waits before the upstream answers at all (no status line yet)."""

    def __init__(self, seconds: float, behaviour: Behaviour) -> None:
        self.pause = seconds
        self.behaviour = behaviour

    def __call__(self, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        return self.behaviour(request, body)


def after(seconds: float, behaviour: Behaviour) -> Behaviour:
    """``behaviour``, but only after ``seconds`` without any response (a slow first byte)."""
    return _Paused(seconds, behaviour)


def ok(text: str = "pong") -> Behaviour:
    """Answer a complete stream (or JSON when not streaming)."""

    def run(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if not body.get("stream"):
            stream = ResponseStream(body["model"])
            index = stream.open_item("message")
            stream.delta(index, text)
            stream.complete(usage_dict(10, 2))
            return httpx.Response(200, json=stream.response())
        return sse(answer_events(body["model"], text))

    return run


def status(code: int, message: str = "boom", *, code_field: str | None = None, **headers: str) -> Behaviour:
    """Answer an HTTP error in OpenAI's shape."""

    def run(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        error = {"message": message, "type": "error", "code": code_field}
        return httpx.Response(code, json={"error": error}, headers={k.replace("_", "-"): v for k, v in headers.items()})

    return run


def raises(exc: Exception) -> Behaviour:
    """Fail at the transport level (connection refused, timeout)."""

    def run(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        raise exc

    return run


def events(
    make: Callable[[str], list[Event]],
    *,
    fail: Exception | None = None,
    delay: float = 0.0,
    burst: bool = False,
    linger: float = 0.0,
) -> Behaviour:
    """Stream ``make(model)`` (see :func:`sse` for the options), then optionally drop the connection."""

    def run(request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        return sse(make(body["model"]), fail=fail, delay=delay, burst=burst, linger=linger)

    return run


def prelude(model: str) -> list[Event]:
    """Only ``response.created``/``in_progress``: no content."""
    stream = ResponseStream(model)
    stream.start()
    return stream.take()


def partial(model: str) -> list[Event]:
    """Content (a message with text) but no terminal event."""
    stream = ResponseStream(model)
    index = stream.open_item("message")
    stream.delta(index, "partial ")
    return stream.take()


def failed(code: str, message: str = "upstream failed") -> Callable[[str], list[Event]]:
    """A stream that reports ``response.failed`` with ``code`` before any content."""

    def make(model: str) -> list[Event]:
        stream = ResponseStream(model)
        stream.start()
        events = stream.take()
        response = {**events[0]["response"], "status": "failed", "error": {"code": code, "message": message}}
        return [*events, {"type": "response.failed", "response": response, "sequence_number": 2}]

    return make


@dataclass
class Call:
    """One request the transport received."""

    host: str
    key: str | None
    body: dict[str, Any]


@dataclass
class Scripted(httpx.AsyncBaseTransport):
    """Routes ``https://<host>/v1/responses`` to ``scripts[host]``: a list of behaviours used in turn
    (the last one repeats). Keys must be in ``keys`` (401 otherwise)."""

    scripts: dict[str, list[Behaviour]] = field(default_factory=dict)
    keys: tuple[str, ...] = ("upstream-key", "key-1", "key-2", "key-3")
    calls: list[Call] = field(default_factory=list)

    def script(self, host: str, *behaviours: Behaviour) -> None:
        """Replace ``host``'s script."""
        self.scripts[host] = list(behaviours)

    def hosts(self) -> list[str]:
        """The hosts called, in order."""
        return [c.host for c in self.calls]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Serve one request from the host's script."""
        host = request.url.host
        assert request.url.path == "/v1/responses", request.url.path
        body = orjson.loads(await request.aread())
        auth = request.headers.get("authorization")
        key = auth[7:] if auth and auth.startswith("Bearer ") else None
        self.calls.append(Call(host, key, body))
        if key not in self.keys:
            return httpx.Response(
                401, json={"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}
            )
        queue = self.scripts.get(host)
        if not queue:
            return httpx.Response(404, json={"error": {"message": f"no script for {host}"}})
        behaviour = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(behaviour, _Paused):
            await asyncio.sleep(behaviour.pause)
        return behaviour(request, body)


def chan(name: str, *, keys: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    """A responses channel at ``https://<name>.test/v1``."""
    return {
        "name": name,
        "service_type": "responses",
        "base_url": f"https://{name}.test/v1",
        "api_keys": keys if keys is not None else ["upstream-key"],
        **fields,
    }


class FakeClock:
    """A wall clock that only moves when told to (for breakers, parking and affinity)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


def stack(channels: list[dict[str, Any]], transport: httpx.AsyncBaseTransport, **options: Any) -> Any:
    """ModelMapper → Failover → ChannelEndpoint over ``transport``, with failover ``options``."""
    from ccx_asgi.channels.endpoint import ChannelEndpoint
    from ccx_asgi.middleware import FailoverMiddleware, ModelMapperMiddleware
    from ccx_asgi.settings import ChannelConfig
    from ccx_asgi.upstream import Upstream

    options.setdefault("keepalive_interval", 0)
    app: Any = ChannelEndpoint(Upstream(transport=transport))
    app = FailoverMiddleware(app, **options)
    return ModelMapperMiddleware(app, channels=[ChannelConfig.model_validate(c) for c in channels])


def asgi_client(app: Any) -> httpx.AsyncClient:
    """An in-process client for a bare ASGI stack."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test")
