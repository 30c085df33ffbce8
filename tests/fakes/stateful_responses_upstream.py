"""A strict fake native Responses upstream that keeps state like OpenAI's: per account (API key).

``POST /v1/responses`` stores the response unless ``store`` is false and resolves
``previous_response_id`` (400 ``previous_response_not_found`` otherwise) and ``item_reference``
items (404 otherwise) against what *this key* stored; ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items`` answer like OpenAI; ``background: true`` answers ``queued`` at
once (the response is finished when retrieved, streamed with ``?stream=true``, or cancelled). Unknown body fields and unpaired tool
outputs in the whole chain are rejected. The script sees the *expanded* input (chain + new items),
so tests can check that a follow-up reached the account that holds its history.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import orjson

from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.sse import encode_event
from ccx_asgi.types import Receive, Scope, Send
from tests.fakes.asgi import read_request, send_json
from tests.fakes.responses_upstream import KNOWN_FIELDS, Recorded, _check_input

#: Turns the expanded input items and the request's tool names into the answer: a text, or a
#: function call as ``{"name": ..., "arguments": ...}``.
Brain = Callable[[list[dict[str, Any]], Collection[str]], "str | dict[str, str]"]


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> tuple[int, Any]:
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def _listed(n: int, item: dict[str, Any]) -> dict[str, Any]:
    """An input item as OpenAI lists it (an id, content as parts)."""
    out = {**item, "id": item.get("id") or f"msg_{n}"}
    if isinstance(out.get("content"), str):
        out["content"] = [{"type": "input_text", "text": out["content"]}]
    return out


@dataclass
class StatefulResponsesUpstream:
    """The fake as an ASGI app; ``stored`` maps ``(key, id)`` to ``(expanded input, response)``."""

    brain: Brain
    keys: tuple[str, ...] = ("upstream-key",)
    requests: list[Recorded] = field(default_factory=list)
    stored: dict[tuple[str, str], tuple[list[dict[str, Any]], dict[str, Any]]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers, raw = await read_request(scope, receive)
        body = orjson.loads(raw) if raw else None
        self.requests.append(Recorded(scope["path"], headers, body if isinstance(body, dict) else {}))
        auth = headers.get("authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else ""
        if key not in self.keys:
            await send_json(send, *_error(401, "Incorrect API key provided", code="invalid_api_key"))
            return
        path, method = scope["path"], scope["method"]
        if path == "/v1/responses" and method == "POST":
            await self._create(send, key, body)
            return
        parts = path.removeprefix("/v1/responses/").split("/")
        entry = self.stored.get((key, parts[0]))
        if entry is None:
            await send_json(send, *_error(404, f"Response with id '{parts[0]}' not found."))
            return
        if parts[1:] == ["cancel"] and method == "POST":
            await send_json(send, 200, {**entry[1], "status": "cancelled"})
        elif not parts[1:] and method == "GET" and scope.get("query_string") == b"stream=true":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
            for event in self.events[parts[0]]:
                await send({"type": "http.response.body", "body": encode_event(event), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif parts[1:] == ["input_items"] and method == "GET":
            items = [_listed(n, item) for n, item in enumerate(entry[0])][::-1]
            await send_json(
                send,
                200,
                {"object": "list", "data": items, "first_id": items[0]["id"], "last_id": items[-1]["id"],
                 "has_more": False},
            )  # fmt: skip
        elif not parts[1:] and method == "GET":
            await send_json(send, 200, entry[1])
        elif not parts[1:] and method == "DELETE":
            del self.stored[(key, parts[0])]
            await send_json(send, 200, {"id": parts[0], "object": "response", "deleted": True})
        else:
            await send_json(send, *_error(404, "Not found"))

    async def _create(self, send: Send, key: str, body: Any) -> None:
        if not isinstance(body, dict):
            await send_json(send, *_error(400, "invalid JSON"))
            return
        unknown = sorted(set(body) - KNOWN_FIELDS)
        if unknown:
            await send_json(send, *_error(400, f"Unknown parameter: '{unknown[0]}'.", param=unknown[0]))
            return
        own = body.get("input") or []
        own = [{"type": "message", "role": "user", "content": own}] if isinstance(own, str) else own
        chain: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            entry = self.stored.get((key, previous))
            if entry is None:
                await send_json(
                    send,
                    *_error(
                        400,
                        f"Previous response with id '{previous}' not found.",
                        param="previous_response_id",
                        code="previous_response_not_found",
                    ),
                )
                return
            chain = [*entry[0], *entry[1]["output"]]
        resolved = []
        for item in own:
            if item.get("type") == "item_reference":
                found = next((i for _, r in self.stored.values() for i in r["output"] if i["id"] == item["id"]), None)
                if found is None:
                    await send_json(send, *_error(404, f"Item with id '{item['id']}' not found.", param="input"))
                    return
                item = found
            resolved.append(item)
        expanded = [*chain, *resolved]
        problem = _check_input(expanded)
        if problem:
            await send_json(send, *_error(400, problem))
            return
        stream = ResponseStream(body["model"], body)
        tools = {t.get("name", "") for t in body.get("tools") or () if isinstance(t, dict)}
        answer = self.brain(expanded, tools)
        if isinstance(answer, dict):
            index = stream.open_item("function_call", name=answer["name"])
            stream.delta(index, answer["arguments"])
        else:
            index = stream.open_item("message")
            stream.delta(index, answer)
        stream.complete(usage_dict(10 * len(expanded), 5))
        final = stream.response()
        events = stream.take()
        if body.get("store", True) is not False:
            self.stored[(key, final["id"])] = (expanded, final)
            self.events[final["id"]] = events
        if body.get("background"):
            # Runs "in the background": answered queued at once, finished when retrieved.
            await send_json(send, 200, {**final, "status": "queued", "output": [], "usage": None})
            return
        if not body.get("stream"):
            await send_json(send, 200, final)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for event in events:
            await send({"type": "http.response.body", "body": encode_event(event), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
