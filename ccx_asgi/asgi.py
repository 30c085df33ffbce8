"""Small ASGI helpers shared by the middleware and endpoints (no framework dependency)."""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from ccx_asgi.errors import InvalidRequestError, RequestTooLargeError
from ccx_asgi.types import Receive, Scope, Send

__all__ = ["REQUEST_ID_KEY", "header", "read_body", "request_id", "route_path", "send_json"]

#: Scope key under which the app stores the request id it chose, so every layer reports the same one.
REQUEST_ID_KEY = "ccx.request_id"


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first request header called ``name`` (lower-case bytes)."""
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value)
    return None


def route_path(scope: Scope) -> str:
    """The request path relative to where the app is mounted (Starlette, Litestar, bare ASGI)."""
    path: str = scope.get("path", "") or "/"
    root: str = scope.get("root_path", "") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :] or "/"
    return path


def request_id(scope: Scope) -> str:
    """The client's ``x-request-id``/``x-client-request-id`` when sane, else a new ``req_…`` id.

    The id already chosen for this request (``scope[REQUEST_ID_KEY]``) wins, so a generated id is the
    same in every layer, log line and header.
    """
    chosen = scope.get(REQUEST_ID_KEY)
    if chosen is not None:
        return str(chosen)
    for name in (b"x-request-id", b"x-client-request-id"):
        value = header(scope, name)
        if value and len(value) <= 128 and value.isascii() and all(32 < c < 127 for c in value):
            return value.decode("ascii")
    return "req_" + secrets.token_hex(12)


async def read_body(receive: Receive, scope: Scope, limit: int) -> bytes:
    """Read the whole request body, failing with 413 as soon as it exceeds ``limit`` bytes."""
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise RequestTooLargeError(_too_large(limit))
        except ValueError:
            raise InvalidRequestError("Invalid Content-Length header.") from None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequestError("The client disconnected while sending the body.")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise RequestTooLargeError(_too_large(limit))
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> str:
    return f"Request body exceeds the limit of {limit / (1024 * 1024):g} MB (CCX_MAX_BODY_MB)."


async def send_json(
    send: Send, data: Any, *, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send ``data`` as a complete JSON response."""
    body = orjson.dumps(data)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
