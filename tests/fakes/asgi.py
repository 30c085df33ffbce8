"""The ASGI plumbing every fake upstream shares: reading a request, answering with JSON."""

from __future__ import annotations

from typing import Any

import orjson

from ccx_asgi.types import Receive, Scope, Send


async def read_request(scope: Scope, receive: Receive) -> tuple[dict[str, str], bytes]:
    """The request's headers (names lower-cased) and its whole body."""
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}, raw


async def send_json(send: Send, status: int, data: Any) -> None:
    """A complete JSON response."""
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": orjson.dumps(data)})
