"""A test-only service type, ``echo``: the whole of a new service type in one module.

It shows what adding a type takes: this module and one :func:`ccx_asgi.channels.register` call
(made by the tests that use it); no other module of the package knows about it. Its upstream
protocol is made up and deliberately unlike the real ones, so nothing can work by accident:

- ``POST {base_url}/echo`` with ``x-echo-key: <key>`` and exactly ``{"model", "text", "stream"}``;
  it answers ``{"words": [...]}``, or with ``stream`` an SSE stream of ``{"word": ...}`` events
  ending with ``{"end": true}``;
- ``GET {base_url}/echo-models`` with the same key lists ``{"data": [{"id": ...}]}``.

:class:`EchoUpstream` is that upstream, as an httpx transport that rejects anything else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from ccx_asgi.channels.base import BaseAdapter, ModelsRequest, UpstreamRequest
from ccx_asgi.context import Attempt, RequestContext
from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.errors import UpstreamStatusError
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.types import Event

__all__ = ["ECHO_MODELS", "EchoAdapter", "EchoTranslator", "EchoUpstream"]

#: What the echo upstream's model list holds.
ECHO_MODELS = ("echo-large", "echo-small")


def _last_user_text(body: dict[str, Any]) -> str:
    items = body.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class EchoTranslator:
    """Echo stream events → Responses events."""

    def __init__(self, model: str, request: dict[str, Any]) -> None:
        self._stream = ResponseStream(model, request)
        self._index: int | None = None
        self._words = 0

    def feed(self, data: dict[str, Any]) -> list[Event]:
        """One ``{"word": ...}`` or the closing ``{"end": true}``."""
        if self._stream.terminal is not None:
            return []
        if isinstance(data.get("word"), str):
            if self._index is None:
                self._stream.start()
                self._index = self._stream.open_item("message")
            self._stream.delta(self._index, ("" if self._words == 0 else " ") + data["word"])
            self._words += 1
        elif data.get("end") is True:
            self._stream.start()
            self._stream.complete(usage_dict(self._words, self._words))
        return self._stream.take()

    def finish(self) -> list[Event]:
        """Close a stream that ended without ``end``."""
        if self._stream.terminal is None:
            self._stream.start()
            self._stream.fail("the echo stream ended early")
        return self._stream.take()

    def fail(self, message: str, code: str = "server_error") -> list[Event]:
        """``response.failed`` for a transport failure after content."""
        if self._stream.terminal is None:
            self._stream.start()
            self._stream.fail(message, code=code)
        return self._stream.take()

    def response(self) -> dict[str, Any]:
        """The response as it stands."""
        return self._stream.response()


class EchoAdapter(BaseAdapter):
    """``service_type: echo`` (see the module docstring)."""

    endpoint = "/echo"

    def auth_headers(self, channel: ChannelConfig, key: SecretStr | None) -> list[tuple[str, str]]:
        """The key in ``x-echo-key``."""
        return [("x-echo-key", key.get_secret_value())] if key is not None else []

    def models_request(self, channel: ChannelConfig) -> ModelsRequest:
        """``GET {base_url}/echo-models``."""
        return ModelsRequest("/echo-models")

    def build_request(self, ctx: RequestContext, attempt: Attempt) -> UpstreamRequest:
        """The last user text, for the mapped model."""
        body = {"model": attempt.upstream_model, "text": _last_user_text(attempt.body), "stream": ctx.stream}
        return UpstreamRequest(self.endpoint, body, [])

    def translator(self, ctx: RequestContext, attempt: Attempt) -> EchoTranslator:
        """A fresh translator echoing the client's model."""
        return EchoTranslator(ctx.model, attempt.body)

    def convert_response(self, ctx: RequestContext, attempt: Attempt, data: Any) -> dict[str, Any]:
        """``{"words": [...]}`` replayed through the translator."""
        words = data.get("words") if isinstance(data, dict) else None
        if not isinstance(words, list):
            raise UpstreamStatusError("not an echo answer", channel=attempt.channel.name, retryable=True)
        translator = self.translator(ctx, attempt)
        for word in words:
            translator.feed({"word": str(word)})
        translator.feed({"end": True})
        return translator.response()


class EchoUpstream(httpx.AsyncBaseTransport):
    """The echo upstream (strict: an unknown field, a missing key or another path is an error).

    ``requests`` records every request it was sent.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer one request."""
        self.requests.append(request)
        if request.headers.get("x-echo-key") != self.key or "authorization" in request.headers:
            return httpx.Response(401, json={"error": {"message": "echo: bad key"}})
        if request.method == "GET" and request.url.path == "/v1/echo-models":
            return httpx.Response(200, json={"data": [{"id": m} for m in ECHO_MODELS]})
        if request.method != "POST" or request.url.path != "/v1/echo":
            return httpx.Response(404, json={"error": {"message": f"echo: no {request.url.path}"}})
        body = orjson.loads(await request.aread())
        if not isinstance(body, dict) or set(body) != {"model", "text", "stream"}:
            return httpx.Response(400, json={"error": {"message": f"echo: bad body {body!r}"}})
        words = [body["model"] + ":", *str(body["text"]).split()]
        if not body["stream"]:
            return httpx.Response(200, json={"words": words})

        async def frames() -> AsyncIterator[bytes]:
            for word in words:
                yield b"data: " + orjson.dumps({"word": word}) + b"\n\n"
            yield b'data: {"end": true}\n\n'

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=frames())
