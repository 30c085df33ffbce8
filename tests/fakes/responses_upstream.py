"""A strict fake native Responses upstream (a stand-in for OpenAI's paid API).

Strict like the real one: unknown body fields → 400 ``Unknown parameter``, a wrong or missing key →
401, ``input`` items validated for shape and tool-call pairing. It records every request (headers
and body) so tests can assert what the gateway forwarded. Behaviour is scripted per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.sse import encode_event
from ccx_asgi.types import Receive, Scope, Send
from tests.fakes.asgi import read_request, send_json

KNOWN_FIELDS = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "reasoning", "store",
        "include", "prompt_cache_key", "text", "client_metadata", "service_tier", "stream", "stream_options",
        "temperature", "top_p", "max_output_tokens", "max_tool_calls", "metadata", "previous_response_id",
        "truncation", "user", "background", "conversation", "prompt", "safety_identifier", "top_logprobs",
        "prompt_cache_retention",
    }
)  # fmt: skip


@dataclass
class Recorded:
    """One request the fake received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


#: A script turns a request body into the stream to send (a finished ResponseStream), or a
#: ``(status, json)`` error.
Script = Callable[[dict[str, Any]], "ResponseStream | tuple[int, dict[str, Any]]"]


def codex_script(body: dict[str, Any]) -> ResponseStream | tuple[int, dict[str, Any]]:
    """A model that runs one shell command when asked and then reports its output."""
    stream = ResponseStream(body["model"], body)
    items = body.get("input") or []
    last = items[-1] if isinstance(items, list) and items else {}
    if isinstance(last, dict) and last.get("type") == "function_call_output":
        output = last.get("output")
        text = output if isinstance(output, str) else orjson.dumps(output).decode()
        index = stream.open_item("message")
        stream.delta(index, "The command finished. ")
        stream.delta(index, "Output was: " + text.strip().splitlines()[-1] if text.strip() else "empty")
    elif any(t.get("name") == "exec_command" for t in body.get("tools") or []):
        index = stream.open_item("function_call", name="exec_command")
        stream.delta(
            index, orjson.dumps({"cmd": "echo ccx-e2e-$((6*7)) > ccx_marker.txt; echo ccx-e2e-$((6*7))"}).decode()
        )
    else:
        index = stream.open_item("message")
        stream.delta(index, "pong")
    stream.complete(usage_dict(100, 10, cached_tokens=40))
    return stream


@dataclass
class FakeResponsesUpstream:
    """The fake as an ASGI app. ``delay`` sleeps between stream events; ``cut_after`` closes the
    stream after that many events without a terminal event (an interrupted upstream)."""

    keys: tuple[str, ...] = ("upstream-key",)
    script: Script = codex_script
    delay: float = 0.0
    cut_after: int | None = None
    requests: list[Recorded] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers, body_bytes = await read_request(scope, receive)
        try:
            body = orjson.loads(body_bytes)
        except orjson.JSONDecodeError:
            await send_json(send, 400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
            return
        self.requests.append(Recorded(scope["path"], headers, body))
        if not scope["path"].endswith("/v1/responses"):
            await send_json(send, 404, {"error": {"message": "Not found", "type": "invalid_request_error"}})
            return
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.keys:
            await send_json(
                send, 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                      "code": "invalid_api_key"}}
            )  # fmt: skip
            return
        unknown = sorted(set(body) - KNOWN_FIELDS)
        if unknown:
            await send_json(send, 400, {"error": {"message": f"Unknown parameter: '{unknown[0]}'.",
                                                   "type": "invalid_request_error", "param": unknown[0]}})  # fmt: skip
            return
        problem = _check_input(body.get("input"))
        if problem:
            await send_json(send, 400, {"error": {"message": problem, "type": "invalid_request_error"}})
            return
        result = self.script(body)
        if isinstance(result, tuple):
            await send_json(send, *result)
            return
        if not body.get("stream"):
            await send_json(send, 200, result.response())
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for n, event in enumerate(result.take()):
            if self.cut_after is not None and n >= self.cut_after:
                break
            if self.delay:
                await asyncio.sleep(self.delay)
            await send({"type": "http.response.body", "body": encode_event(event), "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def _check_input(items: Any) -> str | None:
    if isinstance(items, str):
        return None
    if not isinstance(items, list):
        return "Invalid type for 'input': expected a string or an array."
    calls: set[str] = set()
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            return f"Invalid type for 'input[{n}]'."
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") not in ("user", "assistant", "system", "developer"):
            return f"Invalid value for 'input[{n}].role'."
        if kind in ("function_call", "custom_tool_call"):
            calls.add(item.get("call_id", ""))
        if kind in ("function_call_output", "custom_tool_call_output") and item.get("call_id") not in calls:
            return f"No tool call found for function call output with call_id {item.get('call_id')}."
    return None
