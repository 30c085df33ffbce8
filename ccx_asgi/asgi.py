"""Small ASGI helpers shared by the middleware and endpoints (no framework dependency): headers,
the mount-relative path, the request id and its response header, JSON answers, disconnect
watching. Body intake is :mod:`ccx_asgi.body`."""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from ccx_asgi.types import Message, Receive, Scope, Send

__all__ = [
    "REQUEST_ID_KEY",
    "ensure_request_id",
    "header",
    "request_id",
    "route_path",
    "send_json",
    "wait_for_disconnect",
    "with_request_id",
]

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


def with_request_id(message: Message, rid: str) -> Message:
    """``message`` (an ``http.response.start``) with ``x-request-id: rid`` unless it has one.

    The one place the response header is made: :class:`~ccx_asgi.app.CCXApp`'s send wrapper applies
    it to every response, and :func:`ensure_request_id` to a pipeline used without the app. No layer
    adds the header itself.
    """
    headers = message.get("headers") or []
    if any(k.lower() == b"x-request-id" for k, _ in headers):
        return message
    return {**message, "headers": [*headers, (b"x-request-id", rid.encode("latin-1"))]}


def ensure_request_id(scope: Scope, send: Send) -> tuple[Scope, Send]:
    """For a layer that may be used on its own (without :class:`~ccx_asgi.app.CCXApp`): when no outer
    layer chose the request id yet, choose it, store it in the scope copy and wrap ``send`` so that
    responses carry it (:func:`with_request_id`); under the app, ``scope`` and ``send`` unchanged."""
    if scope.get(REQUEST_ID_KEY) is not None:
        return scope, send
    rid = request_id(scope)

    async def stamped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = with_request_id(message, rid)
        await send(message)

    return {**scope, REQUEST_ID_KEY: rid}, stamped


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


async def wait_for_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (call it once the body was read: other messages are ignored)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
