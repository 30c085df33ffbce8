"""A strict fake Anthropic Messages API (a stand-in for Claude's paid API), as an ASGI app.

Strict like the real one, so a converter bug shows up as the same 400 Claude would send:

- ``x-api-key`` must be a known key (401 ``authentication_error``), ``anthropic-version`` must be
  sent, and an ``Authorization`` header is refused (the gateway must never forward one);
- unknown fields at the top level, in content blocks, tools and ``tool_choice`` are rejected;
- ``messages`` must alternate user/assistant starting with user; text blocks must be non-empty;
  every ``tool_use`` needs its ``tool_result`` in the very next user turn (results first) and every
  result its ``tool_use`` in the turn before; ``max_tokens`` is required;
- ``thinking`` needs ``budget_tokens`` ≥ 1024 and < ``max_tokens``, no forced tool choice, no
  ``temperature``/``top_p``/``top_k``, and the assistant turn that made the tool calls being
  answered must start with a thinking block;
- per model, as Anthropic documents it: Opus 4.7+, every 5.x model, Mythos and Fable take only
  ``thinking: {type: adaptive}`` (a budget is a 400) and refuse ``temperature``/``top_p``/``top_k``
  outright; adaptive thinking is refused by models before 4.6; ``output_config.effort`` must be a
  level the model has (``xhigh``, ``max``); ``output_config.format`` must be ``{type: json_schema,
  schema}``;
- thinking blocks are signed (HMAC of the text with the fake's secret) and redacted blocks carry
  HMAC-checked data; replays with a missing or wrong signature are rejected like Claude does.

Use it in process (``create_app(transport=httpx.ASGITransport(app=fake))``) or over real HTTP
(``tests.servers.serve(fake)``). Replies are scripted per test: a :class:`Reply` (built into a
realistic event stream), a raw SSE transcript string (sent verbatim) or an ``(status, json)`` error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from ccx_asgi.types import Receive, Scope, Send
from tests.fakes.asgi import read_request, send_json

SECRET = b"fake-claude-signing-secret"
VERSION = "2023-06-01"

_TOP_LEVEL = frozenset(
    {
        "model", "messages", "system", "max_tokens", "metadata", "stop_sequences", "stream", "temperature",
        "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier", "output_config",
    }
)  # fmt: skip
_BLOCK_FIELDS = {
    "text": frozenset({"type", "text", "cache_control", "citations"}),
    "image": frozenset({"type", "source", "cache_control"}),
    "document": frozenset({"type", "source", "title", "context", "citations", "cache_control"}),
    "tool_use": frozenset({"type", "id", "name", "input", "cache_control"}),
    "tool_result": frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"}),
    "thinking": frozenset({"type", "thinking", "signature"}),
    "redacted_thinking": frozenset({"type", "data"}),
}
_ROLE_BLOCKS = {
    "user": frozenset({"text", "image", "document", "tool_result"}),
    "assistant": frozenset({"text", "tool_use", "thinking", "redacted_thinking"}),
}
_TOOL_FIELDS = frozenset({"name", "description", "input_schema", "cache_control", "type"})
_CHOICE_FIELDS = {
    "auto": frozenset({"type", "disable_parallel_tool_use"}),
    "any": frozenset({"type", "disable_parallel_tool_use"}),
    "tool": frozenset({"type", "name", "disable_parallel_tool_use"}),
    "none": frozenset({"type"}),
}
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_MEDIA = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# What each model accepts, as Anthropic's adaptive-thinking and effort pages list it (written out
# here by hand, independently of the gateway's own table, so a gateway mistake shows as a 400).
_ADAPTIVE_ONLY = re.compile(r"claude-(?:opus-4-[789]|opus-5|sonnet-5|haiku-5|mythos|fable)")
_ADAPTIVE = re.compile(r"claude-(?:opus-4-6|sonnet-4-6)")
_NO_DISABLED = re.compile(r"claude-(?:mythos|fable)")
_XHIGH = re.compile(r"claude-(?:opus-4-[78]|opus-5|sonnet-5|mythos-5|fable-5)")
_MAX = re.compile(r"claude-(?:opus-4-[678]|sonnet-4-6|opus-5|sonnet-5|mythos|fable)")
_EFFORT = re.compile(r"claude-(?:opus-4-[5678]|sonnet-4-6|opus-5|sonnet-5|haiku-5|mythos|fable)")
_NO_STRUCTURED = re.compile(r"claude-(?:3|opus-4-(?:1|2025)|sonnet-4-2025)")


def sign(thinking: str, secret: bytes = SECRET) -> str:
    """The signature the fake gives a thinking block."""
    return base64.b64encode(hmac.new(secret, thinking.encode(), hashlib.sha256).digest()).decode()


def redacted_data(secret: bytes = SECRET) -> str:
    """Fresh, verifiable data for a redacted thinking block."""
    nonce = secrets.token_hex(8)
    return f"{nonce}.{hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()}"


def _redacted_ok(data: str, secret: bytes) -> bool:
    nonce, _, mac = data.partition(".")
    return hmac.compare_digest(mac, hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest())


class Rejected(Exception):
    """A request the real API would refuse with 400 ``invalid_request_error``."""


def _fields(where: str, obj: dict[str, Any], allowed: frozenset[str]) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise Rejected(f"{where}.{extra[0]}: Extra inputs are not permitted")


def _cache_count(obj: dict[str, Any]) -> int:
    if "cache_control" not in obj:
        return 0
    if obj["cache_control"] != {"type": "ephemeral"}:
        raise Rejected("cache_control: Input should be {'type': 'ephemeral'}")
    return 1


def _check_block(where: str, role: str, block: Any, secret: bytes) -> int:
    if not isinstance(block, dict) or block.get("type") not in _BLOCK_FIELDS:
        raise Rejected(f"{where}: Input tag {block.get('type') if isinstance(block, dict) else block!r} is invalid")
    kind = block["type"]
    if kind not in _ROLE_BLOCKS[role]:
        raise Rejected(f"{where}: `{kind}` blocks are not allowed in `{role}` messages")
    _fields(where, block, _BLOCK_FIELDS[kind])
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise Rejected(f"{where}.text: Field required")
        if not block["text"].strip():
            raise Rejected("messages: text content blocks must contain non-whitespace text")
    elif kind in ("image", "document"):
        source = block.get("source")
        if not isinstance(source, dict):
            raise Rejected(f"{where}.source: Field required")
        if source.get("type") == "base64":
            _fields(f"{where}.source", source, frozenset({"type", "media_type", "data"}))
            allowed = _MEDIA if kind == "image" else frozenset({"application/pdf"})
            if source.get("media_type") not in allowed:
                raise Rejected(f"{where}.source.media_type: Input should be one of {sorted(allowed)}")
            try:
                base64.b64decode(source.get("data", ""), validate=True)
            except ValueError:
                raise Rejected(f"{where}.source.data: invalid base64 data") from None
        elif source.get("type") == "url":
            _fields(f"{where}.source", source, frozenset({"type", "url"}))
            if not str(source.get("url", "")).startswith(("http://", "https://")):
                raise Rejected(f"{where}.source.url: invalid URL")
        else:
            raise Rejected(f"{where}.source: Input tag {source.get('type')!r} is invalid")
    elif kind == "tool_use":
        if not _TOOL_ID.match(str(block.get("id", ""))):
            raise Rejected(f"{where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        if not _NAME.match(str(block.get("name", ""))):
            raise Rejected(f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if not isinstance(block.get("input"), dict):
            raise Rejected(f"{where}.input: Input should be a valid dictionary")
    elif kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            if not content:
                raise Rejected(f"{where}.content: text content blocks must be non-empty")
        elif isinstance(content, list):
            for n, part in enumerate(content):
                _check_block(f"{where}.content.{n}", "user", part, secret)
                if part["type"] not in ("text", "image"):
                    raise Rejected(f"{where}.content.{n}: only text and image blocks are allowed in tool_result")
        elif content is not None:
            raise Rejected(f"{where}.content: Input should be a valid string or list")
    elif kind == "thinking":
        thinking, signature = block.get("thinking"), block.get("signature")
        if not isinstance(thinking, str) or not isinstance(signature, str) or not signature:
            raise Rejected(f"{where}.signature: Field required")
        if not hmac.compare_digest(signature, sign(thinking, secret)):
            raise Rejected(f"{where}: Invalid `signature` in `thinking` block")
    elif kind == "redacted_thinking" and not (
        isinstance(block.get("data"), str) and _redacted_ok(block["data"], secret)
    ):
        raise Rejected(f"{where}: Invalid `data` in `redacted_thinking` block")
    return _cache_count(block)


def check_request(body: Any, secret: bytes = SECRET) -> None:
    """Raise :class:`Rejected` with Claude's message for anything the real API would refuse."""
    if not isinstance(body, dict):
        raise Rejected("body: Input should be a valid dictionary")
    _fields("body", body, _TOP_LEVEL)
    for required in ("model", "messages", "max_tokens"):
        if required not in body:
            raise Rejected(f"{required}: Field required")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        raise Rejected("max_tokens: Input should be a valid integer greater than 0")
    breakpoints = 0
    system = body.get("system")
    if isinstance(system, list):
        for n, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise Rejected(f"system.{n}: Input tag is invalid")
            _fields(f"system.{n}", block, _BLOCK_FIELDS["text"])
            if not str(block.get("text", "")).strip():
                raise Rejected("system: text content blocks must contain non-whitespace text")
            breakpoints += _cache_count(block)
    elif system is not None and not isinstance(system, str):
        raise Rejected("system: Input should be a valid string or list")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise Rejected("messages: at least one message is required")
    for n, message in enumerate(messages):
        if not isinstance(message, dict):
            raise Rejected(f"messages.{n}: Input should be a valid dictionary")
        _fields(f"messages.{n}", message, frozenset({"role", "content"}))
        role = message.get("role")
        if role not in _ROLE_BLOCKS:
            raise Rejected(f"messages.{n}.role: Input should be 'user' or 'assistant'")
        if n == 0 and role != "user":
            raise Rejected('messages: first message must use the "user" role')
        if n > 0 and messages[n - 1].get("role") == role:
            raise Rejected(
                f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" roles in a row'
            )
        content = message.get("content")
        if isinstance(content, str):
            if not content.strip():
                raise Rejected("messages: text content blocks must contain non-whitespace text")
            continue
        if not isinstance(content, list) or not content:
            raise Rejected(f"messages.{n}: all messages must have non-empty content")
        for m, block in enumerate(content):
            breakpoints += _check_block(f"messages.{n}.content.{m}", role, block, secret)
        kinds = [b["type"] for b in content]
        if role == "assistant":
            first_other = next((i for i, k in enumerate(kinds) if k not in ("thinking", "redacted_thinking")), None)
            if first_other is None:
                raise Rejected(f"messages.{n}: an assistant message cannot consist of thinking blocks only")
            if any(k in ("thinking", "redacted_thinking") for k in kinds[first_other:]):
                raise Rejected(f"messages.{n}: thinking blocks must come before text and tool_use blocks")
        if role == "user" and "tool_result" in kinds:
            last = max(i for i, k in enumerate(kinds) if k == "tool_result")
            if any(k != "tool_result" for k in kinds[:last]):
                raise Rejected(f"messages.{n}: tool_result blocks must come first in the user message")
    _check_tool_pairing(messages)
    if breakpoints > 4:
        raise Rejected("A maximum of 4 blocks with cache_control may be provided.")
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise Rejected("tools: Input should be a valid list")
        for n, tool in enumerate(tools):
            if not isinstance(tool, dict):
                raise Rejected(f"tools.{n}: Input should be a valid dictionary")
            _fields(f"tools.{n}", tool, _TOOL_FIELDS)
            name = str(tool.get("name", ""))
            if not _NAME.match(name):
                raise Rejected(f"tools.{n}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
            if name in names:
                raise Rejected("tools: Tool names must be unique.")
            names.add(name)
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise Rejected(f"tools.{n}.input_schema.type: Input should be 'object'")
            breakpoints += _cache_count(tool)
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in _CHOICE_FIELDS:
            raise Rejected("tool_choice: Input tag is invalid")
        _fields("tool_choice", choice, _CHOICE_FIELDS[choice["type"]])
        if choice["type"] == "tool" and choice.get("name") not in names:
            raise Rejected(f"tool_choice.name: Tool '{choice.get('name')}' not found in tools")
    thinking = body.get("thinking")
    if thinking is not None:
        _check_thinking(body, thinking, messages)
    model = str(body["model"])
    if _ADAPTIVE_ONLY.search(model):
        for name in ("temperature", "top_p", "top_k"):
            if name in body:
                raise Rejected(f"`{name}` is deprecated for this model.")
    if "output_config" in body:
        _check_output_config(model, body["output_config"])
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, int | float) and 0 <= temperature <= 1):
        raise Rejected("temperature: Input should be less than or equal to 1")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise Rejected("metadata: Input should be a valid dictionary")
        _fields("metadata", metadata, frozenset({"user_id"}))


def _check_tool_pairing(messages: list[dict[str, Any]]) -> None:
    for n, message in enumerate(messages):
        content = message["content"] if isinstance(message["content"], list) else []
        if message["role"] == "assistant":
            ids = [b["id"] for b in content if b["type"] == "tool_use"]
            if len(set(ids)) != len(ids):
                raise Rejected(f"messages.{n}: `tool_use` ids must be unique")
            if not ids:
                continue
            following = messages[n + 1]["content"] if n + 1 < len(messages) else []
            results = [b.get("tool_use_id") for b in following if isinstance(b, dict) and b["type"] == "tool_result"]
            missing = [i for i in ids if i not in results]
            if missing:
                raise Rejected(
                    f"messages.{n + 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    + ", ".join(missing)
                )
        else:
            previous = messages[n - 1]["content"] if n > 0 else []
            offered = {b.get("id") for b in previous if isinstance(b, dict) and b["type"] == "tool_use"}
            seen: set[str] = set()
            for m, block in enumerate(content):
                if block["type"] != "tool_result":
                    continue
                tool_use_id = block.get("tool_use_id")
                if tool_use_id not in offered:
                    raise Rejected(
                        f"messages.{n}.content.{m}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{tool_use_id}. Each `tool_result` block must have a corresponding `tool_use` block in "
                        "the previous message."
                    )
                if tool_use_id in seen:
                    raise Rejected(f"messages.{n}.content.{m}: multiple `tool_result` blocks with id {tool_use_id}")
                seen.add(tool_use_id)


def _check_output_config(model: str, config: Any) -> None:
    if not isinstance(config, dict):
        raise Rejected("output_config: Input should be a valid dictionary")
    _fields("output_config", config, frozenset({"effort", "format"}))
    if "effort" in config:
        effort = config["effort"]
        if effort not in ("low", "medium", "high", "xhigh", "max"):
            raise Rejected("output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'")
        if not _EFFORT.search(model):
            raise Rejected("output_config.effort: effort is not supported on this model.")
        if effort == "xhigh" and not _XHIGH.search(model):
            raise Rejected("output_config.effort: 'xhigh' is not supported on this model.")
        if effort == "max" and not _MAX.search(model):
            raise Rejected("output_config.effort: 'max' is not supported on this model.")
    if "format" in config:
        fmt = config["format"]
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            raise Rejected("output_config.format.type: Input tag is invalid")
        _fields("output_config.format", fmt, frozenset({"type", "schema"}))
        if not isinstance(fmt.get("schema"), dict):
            raise Rejected("output_config.format.schema: Field required")
        if _NO_STRUCTURED.search(model):
            raise Rejected("output_config.format: structured outputs are not supported on this model.")


def _check_thinking(body: dict[str, Any], thinking: Any, messages: list[dict[str, Any]]) -> None:
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled", "adaptive"):
        raise Rejected("thinking: Input tag is invalid")
    model = str(body["model"])
    if thinking["type"] == "disabled":
        _fields("thinking", thinking, frozenset({"type"}))
        if _NO_DISABLED.search(model):
            raise Rejected('"thinking.type.disabled" is not supported for this model.')
        return
    if thinking["type"] == "adaptive":
        _fields("thinking", thinking, frozenset({"type"}))
        if not (_ADAPTIVE_ONLY.search(model) or _ADAPTIVE.search(model)):
            raise Rejected(f'"thinking.type.adaptive" is not supported for model {model}.')
        _check_thinking_sampling(body)
        return
    if _ADAPTIVE_ONLY.search(model):
        raise Rejected(
            '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" and '
            '"output_config.effort" to control thinking behavior.'
        )
    _fields("thinking", thinking, frozenset({"type", "budget_tokens"}))
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < 1024:
        raise Rejected("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if budget >= body["max_tokens"]:
        raise Rejected("`max_tokens` must be greater than `thinking.budget_tokens`")
    _check_thinking_sampling(body)
    _check_open_tool_turn(messages)


def _check_thinking_sampling(body: dict[str, Any]) -> None:
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        raise Rejected("Thinking may not be enabled when tool_choice forces tool use.")
    for name in ("temperature", "top_p", "top_k"):
        if name in body and not (name == "temperature" and body[name] == 1):
            raise Rejected(f"`{name}` may only be set to its default when thinking is enabled")


def _check_open_tool_turn(messages: list[dict[str, Any]]) -> None:
    # Budget thinking only: in adaptive mode thinking is optional, so a turn without it is valid.
    last_user = messages[-1]
    if (
        len(messages) >= 2
        and last_user["role"] == "user"
        and isinstance(last_user["content"], list)
        and last_user["content"][0]["type"] == "tool_result"
    ):
        assistant = messages[-2]["content"]
        if isinstance(assistant, list) and assistant[0]["type"] not in ("thinking", "redacted_thinking"):
            raise Rejected(
                "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                f"`{assistant[0]['type']}`. When `thinking` is enabled, a final `assistant` message must start "
                "with a thinking block."
            )


# -- replies -----------------------------------------------------------------------------------


@dataclass
class Reply:
    """A scripted answer. ``blocks`` use Claude's shapes without ids/signatures (the fake adds them):
    ``{"type": "text", "text"}``, ``{"type": "thinking", "thinking"}``, ``{"type": "redacted_thinking"}``,
    ``{"type": "tool_use", "name", "input"}``. ``error`` (``{"type", "message"}``) is sent as an
    ``error`` event after ``error_after`` blocks instead of the end of the message."""

    blocks: list[dict[str, Any]]
    stop_reason: str = "end_turn"
    input_tokens: int = 50
    cache_read: int = 0
    cache_write: int = 0
    output_tokens: int = 20
    error: dict[str, Any] | None = None
    error_after: int = 0


#: A script answers one (already validated) request body.
Script = Callable[[dict[str, Any]], "Reply | str | tuple[int, dict[str, Any]]"]


def text_script(body: dict[str, Any]) -> Reply:
    """Answer every request with a short text."""
    return Reply([{"type": "text", "text": "Hello from the fake Claude."}])


def finished_blocks(reply: Reply, secret: bytes = SECRET) -> list[dict[str, Any]]:
    """The reply's blocks as Claude returns them: with tool ids, signatures and redacted data."""
    out = []
    for block in reply.blocks:
        block = dict(block)
        if block["type"] == "thinking":
            block["signature"] = sign(block["thinking"], secret)
        elif block["type"] == "redacted_thinking":
            block["data"] = redacted_data(secret)
        elif block["type"] == "tool_use":
            block.setdefault("id", "toolu_" + secrets.token_hex(12))
        out.append(block)
    return out


def _chunks(text: str, size: int) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]


def stream_events(reply: Reply, model: str, secret: bytes = SECRET, chunk: int = 7) -> list[dict[str, Any]]:
    """The Messages stream events for ``reply`` (deltas split into small chunks like the real API)."""
    usage = {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": reply.cache_write,
        "cache_read_input_tokens": reply.cache_read,
        "output_tokens": 1,
    }
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_" + secrets.token_hex(12),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            },
        },
        {"type": "ping"},
    ]
    for index, block in enumerate(finished_blocks(reply, secret)):
        if reply.error is not None and index == reply.error_after:
            events.append({"type": "error", "error": reply.error})
            return events
        kind = block["type"]
        if kind == "text":
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            )
            for piece in _chunks(block["text"], chunk):
                events.append(
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
                )
        elif kind == "thinking":
            start: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
            events.append({"type": "content_block_start", "index": index, "content_block": start})
            for piece in _chunks(block["thinking"], chunk):
                delta = {"type": "thinking_delta", "thinking": piece}
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
            delta = {"type": "signature_delta", "signature": block["signature"]}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        elif kind == "redacted_thinking":
            events.append({"type": "content_block_start", "index": index, "content_block": block})
        elif kind == "tool_use":
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            events.append({"type": "content_block_start", "index": index, "content_block": start})
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": ""},
                }
            )
            for piece in _chunks(orjson.dumps(block["input"]).decode(), chunk):
                delta = {"type": "input_json_delta", "partial_json": piece}
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    if reply.error is not None:
        events.append({"type": "error", "error": reply.error})
        return events
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": reply.output_tokens},
        }
    )
    events.append({"type": "message_stop"})
    return events


def message_json(reply: Reply, model: str, secret: bytes = SECRET) -> dict[str, Any]:
    """The non-streaming answer for ``reply``."""
    return {
        "id": "msg_" + secrets.token_hex(12),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": finished_blocks(reply, secret),
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": reply.cache_write,
            "cache_read_input_tokens": reply.cache_read,
            "output_tokens": reply.output_tokens,
        },
    }


def encode_sse(event: dict[str, Any]) -> bytes:
    """One Claude SSE frame (``event:`` + ``data:``)."""
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


@dataclass
class Recorded:
    """One request the fake received (the body as sent, and lower-cased headers)."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeClaudeUpstream:
    """The fake Messages API as an ASGI app (see the module docstring).

    ``cut_after`` closes a stream after that many events (an interrupted upstream); ``delay`` sleeps
    between events. ``requests`` records everything received, ``rejections`` every 400 it sent.
    """

    keys: tuple[str, ...] = ("upstream-key",)
    script: Script = text_script
    secret: bytes = SECRET
    cut_after: int | None = None
    delay: float = 0.0
    requests: list[Recorded] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers, raw = await read_request(scope, receive)
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(Recorded(scope["path"], headers, body))
        if scope["method"] != "POST" or scope["path"] != "/v1/messages":
            await self._error(send, 404, "not_found_error", "Not found")
            return
        if headers.get("x-api-key") not in self.keys or "authorization" in headers:
            await self._error(send, 401, "authentication_error", "invalid x-api-key")
            return
        if headers.get("anthropic-version") != VERSION:
            await self._error(send, 400, "invalid_request_error", "anthropic-version: header is required")
            return
        try:
            check_request(body, self.secret)
        except Rejected as exc:
            self.rejections.append(str(exc))
            await self._error(send, 400, "invalid_request_error", str(exc))
            return
        result = self.script(body)
        if isinstance(result, tuple):
            await send_json(send, result[0], result[1])
            return
        if not body.get("stream"):
            if isinstance(result, str):
                raise RuntimeError("a raw transcript can only answer a streaming request")
            await send_json(send, 200, message_json(result, body["model"], self.secret))
            return
        if isinstance(result, str):
            frames = [frame.encode() + b"\n\n" for frame in result.strip().split("\n\n")]
        else:
            frames = [encode_sse(e) for e in stream_events(result, body["model"], self.secret)]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for n, frame in enumerate(frames):
            if self.cut_after is not None and n >= self.cut_after:
                break
            if self.delay:
                await asyncio.sleep(self.delay)
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _error(self, send: Send, status: int, kind: str, message: str) -> None:
        await send_json(send, status, {"type": "error", "error": {"type": kind, "message": message}})
