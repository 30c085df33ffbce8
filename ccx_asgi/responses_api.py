"""``GET /responses/{id}``, ``DELETE /responses/{id}``, ``GET /responses/{id}/input_items`` and
``POST /responses/{id}/cancel``.

OpenAI's shapes, served from the :class:`~ccx_asgi.store.ResponseStore`. A response created by a
converted channel is answered from the store; one held by a native Responses upstream is forwarded
to the channel and key that created it (through the shared ``httpx`` client of
:class:`~ccx_asgi.upstream.Upstream`), with the upstream's own id; a streamed answer
(``GET …?stream=true`` of a background response) is relayed as it arrives. Another client key's
response, an expired, deleted or never stored one: 404, the same answer as an unknown id.

``include`` on a local retrieve or input-item listing is checked against OpenAI's values (400 naming
an unknown one); of these only ``reasoning.encrypted_content`` concerns what converted channels
produce: reasoning items carry their ``encrypted_content`` only when it is included, as OpenAI
answers. ``input_items`` lists the effective input (the chain before the response, then its own
input), as the items the response was generated from.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
import orjson
from pydantic import SecretStr

from ccx_asgi.asgi import request_id, route_path, send_json
from ccx_asgi.breaker import channel_targets
from ccx_asgi.channels import adapter_for
from ccx_asgi.errors import InvalidRequestError, NotFoundError, UpstreamConnectError, UpstreamTimeoutError
from ccx_asgi.keys import KeySet
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.store import BrokenChain, ResponseStore, StoredResponse, client_owner
from ccx_asgi.types import Receive, Scope, Send
from ccx_asgi.upstream import StreamRedactor, Upstream, redact

__all__ = ["StoredResponsesAPI", "stored_route"]

logger = logging.getLogger("ccx_asgi.store")

_ROUTE = re.compile(r"^/responses/([A-Za-z0-9_.:-]{1,200})(/input_items|/cancel)?/?$")
_MAX_FORWARDED = 64 * 1024 * 1024
_ITEM_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "reasoning": "rs",
}
#: The values ``include`` may name (OpenAI's ``ResponseIncludable``).
INCLUDABLE = frozenset(
    {
        "code_interpreter_call.outputs",
        "computer_call_output.output.image_url",
        "file_search_call.results",
        "message.input_image.image_url",
        "message.output_text.logprobs",
        "reasoning.encrypted_content",
        "web_search_call.action.sources",
        "web_search_call.results",
    }
)
# Item types whose listed form has no ``status`` in the SDK's types.
_NO_STATUS = frozenset({"item_reference", "compaction", "mcp_list_tools", "mcp_approval_request"})


def stored_route(method: str, path: str) -> bool:
    """Whether ``method path`` is one of this API's routes."""
    match = _ROUTE.match(path)
    if match is None:
        return False
    suffix = match.group(2)
    if suffix == "/cancel":
        return method == "POST"
    return method == "GET" or (method == "DELETE" and suffix is None)


def _listed_item(response_id: str, index: int, item: Any) -> dict[str, Any]:
    """An input item as OpenAI lists it: with an ``id`` (stable per position), a ``status`` and list
    content, as the SDK's ``ResponseItem`` types require."""
    if not isinstance(item, dict):
        item = {"type": "message", "role": "user", "content": str(item)}
    kind = item.get("type", "message")
    out = {**item, "type": kind}
    if kind == "message":
        role = out.get("role", "user")
        content = out.get("content")
        part = "output_text" if role == "assistant" else "input_text"
        if isinstance(content, str):
            out["content"] = [{"type": part, "text": content, **({"annotations": []} if role == "assistant" else {})}]
    if kind not in _NO_STATUS:
        out.setdefault("status", "completed")
    if not isinstance(out.get("id"), str) or not out["id"]:
        digest = hashlib.sha256(f"{response_id}:{index}".encode()).hexdigest()[:24]
        out["id"] = f"{_ITEM_PREFIX.get(str(kind), 'item')}_{digest}"
    return out


def _include(query: dict[str, list[str]]) -> frozenset[str]:
    """The ``include`` values of a query (``include`` or ``include[]``); 400 naming an unknown one."""
    values = [v for name in ("include", "include[]") for raw in query.get(name, []) for v in raw.split(",") if v]
    for value in values:
        if value not in INCLUDABLE:
            raise InvalidRequestError(
                f"Invalid value for 'include': '{value}'. Supported values are: {', '.join(sorted(INCLUDABLE))}.",
                param="include",
                code="invalid_value",
            )
    return frozenset(values)


def _shown(item: Any, include: frozenset[str]) -> Any:
    """``item`` as retrieved: a reasoning item's ``encrypted_content`` only when it is included."""
    if (
        "reasoning.encrypted_content" not in include
        and isinstance(item, dict)
        and item.get("type") == "reasoning"
        and "encrypted_content" in item
    ):
        return {k: v for k, v in item.items() if k != "encrypted_content"}
    return item


def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidRequestError(
            f"'{name}' must be an integer from {low} to {high}.", param=name, code="invalid_value"
        )
    return value


class StoredResponsesAPI:
    """The stored-response routes (see the module docstring), one ASGI app for all three.

    ``client_keys`` decide the owner of a request exactly as in
    :class:`~ccx_asgi.middleware.stateful.StatefulMiddleware`.
    """

    def __init__(
        self,
        store: ResponseStore,
        channels: Sequence[ChannelConfig],
        upstream: Upstream,
        *,
        client_keys: Sequence[SecretStr] = (),
    ) -> None:
        self.store = store
        self.channels = {c.name: c for c in channels}
        self.upstream = upstream
        self.keys = KeySet(client_keys) if client_keys else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one stored-response request."""
        match = _ROUTE.match(route_path(scope))
        if match is None:  # the app routes only matching paths here
            raise NotFoundError("No such stored-response route.")
        response_id, suffix = match.group(1), match.group(2) or ""
        method = scope.get("method", "GET")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        record = await self.store.get(client_owner(scope, self.keys), response_id)
        if record is None:
            why = "" if self.store.enabled else " Storing responses is off on this gateway (CCX_RESPONSE_STORE)."
            raise NotFoundError(f"Response with id '{response_id}' not found.{why}")
        if record.kind == "native":
            await self._forward(scope, send, record, method, suffix)
        elif suffix == "/cancel":
            raise InvalidRequestError(
                f"Response '{record.id}' cannot be cancelled: only background responses can be, and this "
                "gateway runs none on converted channels.",
                code="invalid_value",
            )
        elif suffix:
            await send_json(send, await self._input_items(record, query, _include(query)))
        elif method == "DELETE":
            await self.store.delete(record)
            await send_json(send, {"id": record.id, "object": "response", "deleted": True})
        else:
            if query.get("stream", ["false"])[-1].lower() == "true":
                raise InvalidRequestError(
                    "Streaming a stored response ('stream=true') is not supported by this gateway; "
                    "retrieve it without 'stream'.",
                    param="stream",
                    code="unsupported_parameter",
                )
            include = _include(query)
            response = record.response or {}
            output = [_shown(item, include) for item in record.output]
            await send_json(send, {**response, "output": output})

    async def _input_items(
        self, record: StoredResponse, query: dict[str, list[str]], include: frozenset[str]
    ) -> dict[str, Any]:
        limit = _int_param(query, "limit", 20, 1, 100)
        order = query.get("order", ["desc"])[-1]
        if order not in ("asc", "desc"):
            raise InvalidRequestError("'order' must be 'asc' or 'desc'.", param="order", code="invalid_value")
        try:
            ancestors = await self.store.chain(record)
        except BrokenChain as broken:
            raise NotFoundError(
                f"The input of response '{record.id}' cannot be listed: '{broken.missing}', an earlier response "
                "in its chain, was deleted, expired or evicted."
            ) from None
        items: list[dict[str, Any]] = []
        for stored in ancestors:
            items += (_listed_item(stored.id, n, _shown(item, include)) for n, item in enumerate(stored.input))
            items += (_listed_item(stored.id, -1 - n, _shown(item, include)) for n, item in enumerate(stored.output))
        items += (_listed_item(record.id, n, _shown(item, include)) for n, item in enumerate(record.input))
        if order == "desc":
            items.reverse()
        after = query.get("after", [""])[-1]
        if after:
            position = next((n for n, item in enumerate(items) if item["id"] == after), None)
            if position is None:
                raise InvalidRequestError(
                    f"'after' names item '{after}', which is not an input item of this response.",
                    param="after",
                    code="invalid_value",
                )
            items = items[position + 1 :]
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }

    def _target(self, record: StoredResponse) -> tuple[ChannelConfig, SecretStr | None]:
        channel = self.channels.get(record.channel)
        if channel is not None:
            for key, tid in channel_targets(channel.name, channel.api_keys):
                if tid == record.target:
                    return channel, key
        raise NotFoundError(
            f"Response with id '{record.id}' is held by channel '{record.channel}' with a key that is no longer "
            "configured on this gateway."
        )

    async def _forward(self, scope: Scope, send: Send, record: StoredResponse, method: str, suffix: str) -> None:
        """Ask the upstream account that holds the response, and relay its answer."""
        channel, key = self._target(record)
        upstream_id = record.upstream_id or record.id
        url = channel.url(f"/responses/{quote(upstream_id, safe='')}{suffix}")
        query = scope.get("query_string", b"").decode("latin-1")
        headers = {
            **{k: v.get_secret_value() for k, v in channel.headers.items()},
            "accept": "application/json",
            "x-request-id": request_id(scope),
        }
        adapter = adapter_for(channel.service_type)
        if adapter is not None:
            headers.update(adapter.auth_headers(channel, key))
        timeout = httpx.Timeout(
            connect=channel.connect_timeout,
            read=channel.first_byte_timeout,
            write=channel.write_timeout,
            pool=channel.connect_timeout,
        )
        secrets = [key.get_secret_value()] if key is not None else []
        secrets += [v.get_secret_value() for v in channel.headers.values()]
        started = False
        try:
            async with self.upstream.client.stream(
                method, url + (f"?{query}" if query else ""), headers=headers, timeout=timeout
            ) as answer:
                status = answer.status_code
                if status < 300 and answer.headers.get("content-type", "").startswith("text/event-stream"):
                    started = True
                    await self._relay(scope, send, channel, answer, secrets)
                    return
                buffer = bytearray()
                async for chunk in answer.aiter_bytes():
                    buffer += chunk
                    if len(buffer) > _MAX_FORWARDED:
                        raise UpstreamConnectError("the stored response is too large", channel=channel.name)
            body = bytes(buffer)
        except httpx.HTTPError as exc:
            if started:  # the relayed stream broke: nothing more can be said on this response
                logger.warning("channel %s: stored response stream broke: %s", channel.name, type(exc).__name__)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if isinstance(exc, httpx.TimeoutException):
                raise UpstreamTimeoutError("timed out fetching the stored response", channel=channel.name) from None
            raise UpstreamConnectError(
                f"could not reach the upstream that holds the response ({type(exc).__name__})", channel=channel.name
            ) from None
        try:
            data: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            data = None
        if (200 <= status < 300 and method == "DELETE") or (status == 404 and not suffix):
            await self.store.delete(record)  # deleted, or gone upstream: the route leads nowhere now
        if isinstance(data, dict):
            if upstream_id != record.id and data.get("id") == upstream_id:
                data["id"] = record.id  # the client knows the response by the id it was shown
            payload = redact(orjson.dumps(data).decode(), secrets)
        elif 200 <= status < 300 and not body:
            payload = ""
        else:
            logger.info("channel %s: answered %d with a non-JSON body for a stored response", channel.name, status)
            payload = orjson.dumps(
                {
                    "error": {
                        "message": f"channel {channel.name!r} answered {status} without a JSON body",
                        "type": "upstream_error",
                        "param": None,
                        "code": "upstream_error",
                    }
                }
            ).decode()
            status = 502 if status < 400 else status
        raw = payload.encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(raw)).encode()),
                    (b"x-ccx-channel", channel.name.encode("utf-8", "replace")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": raw})

    async def _relay(
        self, scope: Scope, send: Send, channel: ChannelConfig, answer: httpx.Response, secrets: list[str]
    ) -> None:
        """Pass an upstream event stream through as it arrives (secrets replaced, also across chunks)."""
        await send(
            {
                "type": "http.response.start",
                "status": answer.status_code,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-ccx-channel", channel.name.encode("utf-8", "replace")),
                ],
            }
        )
        redactor = StreamRedactor(secrets)
        async for chunk in answer.aiter_bytes():
            if out := redactor.feed(chunk):
                await send({"type": "http.response.body", "body": out, "more_body": True})
        await send({"type": "http.response.body", "body": redactor.flush(), "more_body": False})
