"""The built-in ``demo`` channel: a tiny native-Responses "model" that runs in process.

It lets ``python -m ccx_asgi`` work with Codex and the OpenAI SDK before any upstream account is
configured. It is served by an httpx transport mounted on a reserved host, so demo requests take
exactly the path real ones do (adapter, streaming, commit rule) without touching the network.

Behaviour: when the request offers a shell-like function tool and the last input item is not a tool
result, it calls that tool with a harmless ``echo``; when it offers Codex's code-mode tool instead
(the custom ``exec`` of the ``functions`` namespace in an ``additional_tools`` item, as Codex sends
for gpt-6* models), it runs the same ``echo`` from JavaScript through ``exec``; after a tool result
it summarises the output; otherwise it answers with a short text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from ccx_asgi.channels.base import ModelsRequest
from ccx_asgi.channels.responses import ResponsesAdapter
from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.convert.tools import request_tools
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.sse import encode_event

__all__ = ["DEMO_BASE_URL", "DEMO_MODELS", "DemoAdapter", "DemoTransport", "demo_response"]

#: Base URL of the built-in demo channel; only the in-process demo transport answers there.
DEMO_BASE_URL = "http://demo.ccx.invalid/v1"

#: The names ``GET /models`` lists for a demo channel without a ``model_map`` (it answers any name):
#: Codex's default model first, so pickers that read ``/models`` offer something that works.
DEMO_MODELS = ("gpt-5.5", "demo")

_ECHO = "echo 'hello from the ccx_asgi demo channel'"
_CODE_MODE = f"text(await tools.exec_command({{cmd: {orjson.dumps(_ECHO).decode()}}}));"
_HINT = "(This answer comes from the ccx_asgi demo channel; set CCX_CHANNELS to reach a real model.)"


def _tool_arguments(tool: dict[str, Any]) -> dict[str, Any]:
    name = tool.get("name")
    if name == "exec_command":
        return {"cmd": _ECHO}
    if name in ("shell", "container.exec"):
        return {"command": ["bash", "-lc", _ECHO]}
    raw_params = tool.get("parameters")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    raw_props = params.get("properties")
    props: dict[str, Any] = raw_props if isinstance(raw_props, dict) else {}
    defaults = {"string": "demo", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}
    return {
        key: defaults.get(str(props.get(key, {}).get("type")), "demo")
        for key in params.get("required") or []
        if isinstance(key, str)
    }


def _code_mode_tool(tools: list[Any]) -> tuple[str | None, str] | None:
    """``(namespace, name)`` of Codex's code-mode tool: a custom ``exec``, top level or namespaced."""
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "custom" and tool.get("name") == "exec":
            return None, "exec"
        if tool.get("type") == "namespace" and isinstance(tool.get("name"), str):
            for member in tool.get("tools") or ():
                if isinstance(member, dict) and member.get("type") == "custom" and member.get("name") == "exec":
                    return tool["name"], "exec"
    return None


def _pick_tool(tools: list[Any]) -> dict[str, Any] | None:
    functions = [t for t in tools if isinstance(t, dict) and t.get("type") == "function" and t.get("name")]
    for preferred in ("exec_command", "shell"):
        for tool in functions:
            if tool["name"] == preferred:
                return tool
    return functions[0] if functions else None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text") or p.get("output") or "") for p in content if isinstance(p, dict)).strip()
    return ""


def demo_response(body: dict[str, Any]) -> ResponseStream:
    """Build the demo's whole answer to ``body`` as a finished :class:`ResponseStream`."""
    stream = ResponseStream(str(body.get("model") or "demo"), body)
    items = body.get("input")
    items = [{"type": "message", "role": "user", "content": items}] if isinstance(items, str) else items or []
    last = items[-1] if items and isinstance(items[-1], dict) else {}
    tools = request_tools(body)
    tool = _pick_tool(tools)
    code_mode = _code_mode_tool(tools) if tool is None or tool["name"] not in ("exec_command", "shell") else None
    if last.get("type") in ("function_call_output", "custom_tool_call_output"):
        output = _text_of(last.get("output"))[:500]
        text = f"The tool ran and printed:\n{output}\n{_HINT}"
    elif code_mode is not None and body.get("tool_choice") != "none":
        # Codex's "responses lite" shape (gpt-6*): the shell is reached from JavaScript in `exec`.
        namespace, name = code_mode
        index = stream.open_item("custom_tool_call", name=name, namespace=namespace)
        stream.delta(index, _CODE_MODE)
        stream.complete(usage_dict(len(orjson.dumps(items)) // 4, 24))
        return stream
    elif tool is not None and body.get("tool_choice") != "none":
        index = stream.open_item("function_call", name=tool["name"])
        stream.delta(index, orjson.dumps(_tool_arguments(tool)).decode())
        stream.complete(usage_dict(len(orjson.dumps(items)) // 4, 12))
        return stream
    else:
        said = next(
            (_text_of(i.get("content")) for i in reversed(items) if isinstance(i, dict) and i.get("role") == "user"),
            "",
        )
        text = f"Hello from ccx_asgi. You said: {said[:200]!r}. {_HINT}"
    index = stream.open_item("message")
    for word in text.split(" "):
        stream.delta(index, word + " ")
    stream.complete(usage_dict(len(orjson.dumps(items)) // 4, len(text) // 4))
    return stream


class DemoTransport(httpx.AsyncBaseTransport):
    """An httpx transport that answers ``POST …/responses`` like a native Responses upstream."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer one request without any network."""
        if request.method != "POST" or not request.url.path.endswith("/responses"):
            return httpx.Response(404, json={"error": {"message": "demo: unknown endpoint", "type": "not_found"}})
        try:
            body = orjson.loads(await request.aread())
        except orjson.JSONDecodeError:
            return httpx.Response(400, json={"error": {"message": "demo: invalid JSON", "type": "invalid_request"}})
        answer = demo_response(body if isinstance(body, dict) else {})
        if not (isinstance(body, dict) and body.get("stream")):
            return httpx.Response(200, json=answer.response())
        events = answer.take()

        async def frames() -> AsyncIterator[bytes]:
            for event in events:
                yield encode_event(event)

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=frames())


class DemoAdapter(ResponsesAdapter):
    """``service_type: demo``: a native Responses channel on :data:`DEMO_BASE_URL`, answered in
    process by :class:`DemoTransport`; it keeps no state and lists :data:`DEMO_MODELS`."""

    base_url: str | None = DEMO_BASE_URL
    builtin_models: tuple[str, ...] = DEMO_MODELS
    stores_responses = False

    def models_request(self, channel: ChannelConfig) -> ModelsRequest | None:
        """None: the demo's names are :attr:`builtin_models`."""
        return None

    def transport(self) -> httpx.AsyncBaseTransport:
        """A fresh :class:`DemoTransport`."""
        return DemoTransport()
