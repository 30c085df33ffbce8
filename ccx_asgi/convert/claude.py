"""Responses ⇄ Anthropic Claude Messages, as pure functions and a pure stream state machine.

- :func:`to_request` turns a Responses request body into a Messages request body, as
  :class:`ClaudeOptions` say;
- :class:`ClaudeStreamTranslator` turns Messages stream events into Responses events (driving
  :class:`~ccx_asgi.convert.events.ResponseStream`);
- :func:`to_response` turns a non-streaming Messages answer into a Responses object (by
  replaying it through the same translator, so both paths behave identically).

:mod:`ccx_asgi.convert.chat` has the same shape.

Thinking round trip: every Claude ``thinking``/``redacted_thinking`` block becomes a ``reasoning``
item whose ``encrypted_content`` is :func:`encode_reasoning` of the exact block (text and
``signature``, or ``data``). Clients that replay items with ``store: false`` (Codex) hand it back and
:func:`to_request` restores the block byte for byte, so Claude can verify its own signature.
Reasoning from any other source (OpenAI's opaque strings, Chat reasoning text) cannot be signed and
is dropped. See ``docs/claude-channels.md`` for why no extra HMAC is added.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ccx_asgi.convert.common import (
    ConversionError,
    PerChannel,
    check_parts,
    content_parts,
    debug_once,
    input_items,
    parse_data_url,
    reject_openai_state,
)
from ccx_asgi.convert.effort import DEFAULT_THINKING_BUDGETS, MIN_THINKING_BUDGET, reasoning_effort
from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.convert.tools import (
    ToolCatalog,
    ToolSpec,
    custom_input,
    history_call,
    output_parts,
    pair_tool_calls,
    request_tools,
    resolve_tool_choice,
)
from ccx_asgi.errors import InvalidRequestError
from ccx_asgi.types import Event
from ccx_asgi.upstream_errors import response_error_code

if TYPE_CHECKING:
    from ccx_asgi.settings import ChannelConfig

__all__ = [
    "REASONING_PREFIX",
    "ClaudeModel",
    "ClaudeOptions",
    "ClaudeStreamTranslator",
    "ThinkingMode",
    "decode_reasoning",
    "encode_reasoning",
    "message_events",
    "to_request",
    "to_response",
]

#: Marks ``encrypted_content`` written by this proxy: format version 1, upstream family ``claude``.
REASONING_PREFIX = "ccx1.claude."
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_ID_BAD = re.compile(r"[^A-Za-z0-9_-]")
_THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})
_PLACEHOLDER_USER = "(the conversation continues)"

ThinkingMode = Literal["auto", "adaptive", "budget", "off"]
# claude-opus-4-7, claude-sonnet-4-5-20250929, claude-3-7-sonnet-latest, anthropic.claude-opus-4-6-v1,
# claude-mythos-preview: the family and its version (a date is neither a major nor a minor version).
_MODEL_ID = re.compile(
    r"claude-(?:(\d)(?:-(\d))?-)?(opus|sonnet|haiku|mythos|fable)(?:-(\d{1,2})(?!\d)(?:[-.](\d{1,2})(?!\d))?)?",
    re.IGNORECASE,
)
#: ``reasoning.effort`` → Claude's ``output_config.effort`` (Claude has no "minimal").
_ADAPTIVE_EFFORT: Mapping[str, str] = {"minimal": "low", "low": "low", "medium": "medium", "high": "high"}


@dataclass(frozen=True, slots=True)
class ClaudeOptions:
    """How a Claude channel converts requests (the ``claude`` options of a channel).

    Each field is the channel field of the same name without its ``claude_`` prefix:
    ``default_max_tokens`` when the client sends no ``max_output_tokens``; ``thinking_budgets`` per
    effort (the channel's table over :data:`~ccx_asgi.convert.effort.DEFAULT_THINKING_BUDGETS`);
    ``prompt_caching`` marks the system prompt and the newest turn with ``cache_control``;
    ``thinking`` picks adaptive thinking or a budget (``auto``: by :class:`ClaudeModel`), or no
    thinking (``off``).
    """

    default_max_tokens: int = 32000
    thinking_budgets: Mapping[str, int] = field(default_factory=lambda: DEFAULT_THINKING_BUDGETS)
    prompt_caching: bool = True
    thinking: ThinkingMode = "auto"

    @classmethod
    def from_channel(cls, channel: ChannelConfig) -> ClaudeOptions:
        """The options ``channel`` asks for, built once per channel configuration."""
        return _CHANNEL_OPTIONS.get(channel)


def _channel_options(channel: ChannelConfig) -> ClaudeOptions:
    return ClaudeOptions(
        default_max_tokens=channel.default_max_tokens,
        thinking_budgets=MappingProxyType({**DEFAULT_THINKING_BUDGETS, **channel.thinking_budgets}),
        prompt_caching=channel.prompt_caching,
        thinking=channel.claude_thinking,
    )


_CHANNEL_OPTIONS = PerChannel(_channel_options)
_DEFAULT_OPTIONS = ClaudeOptions()


@dataclass(frozen=True, slots=True)
class ClaudeModel:
    """What a Claude model accepts for thinking, read from its id (see ``docs/claude-channels.md``).

    ``style``: ``adaptive_only`` (Opus 4.7+, every 5.x model, Mythos, Fable: a thinking budget is a
    400, and so are non-default ``temperature``/``top_p``/``top_k``), ``adaptive`` (Opus/Sonnet 4.6:
    the budget form is deprecated) or ``budget`` (older models, and ids this table cannot read).
    ``xhigh``: the effort level ``reasoning.effort: xhigh`` is sent as: ``xhigh`` where the model has
    it, else the next level above ``high`` it has (``max``), else ``high``.
    """

    style: Literal["adaptive_only", "adaptive", "budget"]
    xhigh: Literal["xhigh", "max", "high"] = "high"

    @classmethod
    def from_id(cls, model: str) -> ClaudeModel:
        """Classify ``model`` (a Claude API, Bedrock or Vertex model id)."""
        match = _MODEL_ID.search(model)
        if match is None:
            return cls("budget")
        lead_major, lead_minor, family, major, minor = match.groups()
        family = family.lower()
        if major is not None:
            version = (int(major), int(minor or 0))
        elif lead_major is not None:
            version = (int(lead_major), int(lead_minor or 0))
        else:
            version = None  # claude-mythos-preview
        if family in ("mythos", "fable"):
            return cls("adaptive_only", xhigh="xhigh" if version is not None else "max")
        if version is None:
            return cls("budget")
        if version >= (5, 0) or (family == "opus" and version >= (4, 7)):
            # Haiku has neither xhigh nor max.
            return cls("adaptive_only", xhigh="high" if family == "haiku" else "xhigh")
        if version == (4, 6) and family in ("opus", "sonnet"):
            return cls("adaptive", xhigh="max")
        return cls("budget")


# -- reasoning items <-> thinking blocks ------------------------------------------------------------


def encode_reasoning(block: dict[str, Any]) -> str:
    """The ``encrypted_content`` carrying one Claude thinking (or redacted thinking) block."""
    if block.get("type") == "redacted_thinking":
        payload: dict[str, Any] = {"type": "redacted_thinking", "data": block.get("data", "")}
    else:
        payload = {"type": "thinking", "thinking": block.get("thinking", ""), "signature": block.get("signature", "")}
    return REASONING_PREFIX + base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()


def decode_reasoning(value: Any) -> dict[str, Any] | None:
    """The Claude block inside ``encrypted_content`` written by :func:`encode_reasoning`, else ``None``.

    Anything else (another provider's opaque string, a damaged value, a block without a signature)
    gives ``None``: it cannot be replayed to Claude and is dropped.
    """
    if not isinstance(value, str) or not value.startswith(REASONING_PREFIX):
        return None
    raw = value[len(REASONING_PREFIX) :]
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("type") == "thinking":
        thinking, signature = data.get("thinking"), data.get("signature")
        if isinstance(thinking, str) and isinstance(signature, str) and signature:
            return {"type": "thinking", "thinking": thinking, "signature": signature}
    elif data.get("type") == "redacted_thinking" and isinstance(data.get("data"), str) and data["data"]:
        return {"type": "redacted_thinking", "data": data["data"]}
    return None


# -- Responses request -> Messages request ----------------------------------------------------------


def _tool_id(call_id: Any) -> str:
    """A ``tool_use`` id Claude accepts (``[A-Za-z0-9_-]+``), the same for the call and its result."""
    text = str(call_id or "")
    return _TOOL_ID_BAD.sub("_", text) or "call_0"


def _image_block(part: dict[str, Any]) -> dict[str, Any] | None:
    url = part["image_url"]
    parsed = parse_data_url(url)
    if parsed is not None:
        media_type, data = parsed
        if media_type == "image/jpg":
            media_type = "image/jpeg"
        if media_type not in _IMAGE_TYPES or not data:
            debug_once(f"image of type {media_type}")
            return None
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    debug_once("image that is neither a data: nor an http(s) URL")
    return None


def _document_block(part: dict[str, Any]) -> dict[str, Any] | None:
    data_url, file_url = part.get("file_data"), part.get("file_url")
    parsed = parse_data_url(data_url) if isinstance(data_url, str) else None
    block: dict[str, Any] | None = None
    if parsed is not None and parsed[0] == "application/pdf" and parsed[1]:
        block = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": parsed[1]}}
    elif isinstance(file_url, str) and file_url.startswith(("http://", "https://")):
        block = {"type": "document", "source": {"type": "url", "url": file_url}}
    else:
        debug_once("input_file that is not a PDF data: URL or an http(s) file_url")
    if block is not None and isinstance(part.get("filename"), str) and part["filename"]:
        block["title"] = part["filename"]
    return block


def _part_problem(role: str, part: dict[str, Any]) -> str | None:
    """Why Claude cannot take this image, file or audio part (see :func:`check_parts`)."""
    kind = part.get("type")
    if kind == "input_audio":
        return "Claude has no audio input"
    if kind == "input_image":
        url = part["image_url"]
        # Only the head of a data: URL is needed to know its type (the payload may be megabytes).
        parsed = None if url.startswith(("http://", "https://")) else parse_data_url(url[:256])
        media_type = parsed[0].replace("image/jpg", "image/jpeg") if parsed else None
        if not url.startswith(("http://", "https://")) and (
            media_type not in _IMAGE_TYPES or not parsed or not parsed[1]
        ):
            return "input_image must be an http(s) URL or a base64 data: URL of a JPEG, PNG, GIF or WebP image"
        if role not in ("user", "tool"):
            return (
                f"images are only accepted in user messages and tool outputs on Claude channels, not in {role} messages"
            )
        return None
    if role != "user":
        where = "tool outputs" if role == "tool" else f"{role} messages"
        return f"input_file is only accepted in user messages on Claude channels, not in {where}"
    data_url, file_url = part.get("file_data"), part.get("file_url")
    if isinstance(file_url, str) and file_url.startswith(("http://", "https://")):
        return None
    parsed = parse_data_url(data_url[:256]) if isinstance(data_url, str) else None
    if parsed is None or parsed[0] != "application/pdf":
        return (
            "input_file must be a PDF on Claude channels: file_data as a data:application/pdf;base64 URL, "
            "or an http(s) file_url"
        )
    return None


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for kind, part in content_parts(content):
        if kind == "text":
            if part["text"].strip():
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image":
            image = _image_block(part)
            if image is not None:
                blocks.append(image)
        elif kind == "file":
            document = _document_block(part)
            if document is not None:
                blocks.append(document)
        else:
            debug_once(f"message part {part.get('type')!r}")
    return blocks


def _assistant_blocks(content: Any) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": part["text"]}
        for kind, part in content_parts(content)
        if kind == "text" and part["text"].strip()
    ]


def _tool_result(item: dict[str, Any]) -> dict[str, Any]:
    text, images = output_parts(item.get("output"))
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(item.get("call_id"))}
    if images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text.strip() else []
        parts.extend(b for b in (_image_block(i) for i in images) if b is not None)
        if parts:
            block["content"] = parts
    elif text.strip():
        block["content"] = text
    return block


def _tool_use(item: dict[str, Any]) -> dict[str, Any]:
    call = history_call(item)
    block: dict[str, Any] = {"type": "tool_use", "id": _tool_id(item.get("call_id")), "name": call.name}
    if call.custom_input is not None:
        block["input"] = {"input": call.custom_input}
        return block
    arguments = item.get("arguments")
    parsed: Any = {}
    if isinstance(arguments, str) and arguments.strip():
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = {}
    elif isinstance(arguments, dict):
        parsed = arguments
    block["input"] = parsed if isinstance(parsed, dict) else {"value": parsed}
    return block


@dataclass(slots=True)
class _Turns:
    """Messages under construction: strictly alternating roles, adjacent turns merged."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if self.messages and self.messages[-1]["role"] == role:
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": role, "content": list(blocks)})

    def add_thinking(self, block: dict[str, Any]) -> None:
        # One Claude answer always starts with its thinking; a block that arrives after other
        # assistant content of the same turn (items reordered by a client) moves up to the front.
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant":
            self.add("assistant", [block])
            return
        content = last["content"]
        position = next((i for i, b in enumerate(content) if b["type"] not in _THINKING_TYPES), len(content))
        content.insert(position, block)


def _convert_input(body: dict[str, Any], system: list[str]) -> list[dict[str, Any]]:
    turns = _Turns()
    for item in pair_tool_calls(input_items(body.get("input"))):
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                system.extend(p["text"] for k, p in content_parts(item.get("content")) if k == "text")
            elif role == "assistant":
                turns.add("assistant", _assistant_blocks(item.get("content")))
            else:
                turns.add("user", _user_blocks(item.get("content")))
        elif kind == "reasoning":
            block = decode_reasoning(item.get("encrypted_content"))
            if block is None:
                debug_once("reasoning item that did not come from a Claude channel")
            else:
                turns.add_thinking(block)
        elif kind in ("function_call", "custom_tool_call"):
            turns.add("assistant", [_tool_use(item)])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            turns.add("user", [_tool_result(item)])
        else:
            debug_once(f"input item of type {kind!r}")
    messages = turns.messages
    # A merged assistant turn may hold nothing but thinking (its answer was dropped): Claude rejects
    # a turn without a final text or tool_use block there, so such turns lose their thinking.
    for message in messages:
        if message["role"] == "assistant" and all(b["type"] in _THINKING_TYPES for b in message["content"]):
            message["content"] = []
    messages = [m for m in messages if m["content"]]
    merged = _Turns()
    for message in messages:
        merged.add(message["role"], message["content"])
    messages = merged.messages
    if messages and messages[0]["role"] == "assistant":
        messages.insert(0, {"role": "user", "content": [{"type": "text", "text": _PLACEHOLDER_USER}]})
    return messages


def _tools(specs: list[ToolSpec]) -> list[dict[str, Any]]:
    tools = []
    for spec in specs:
        schema = dict(spec.parameters)
        schema.setdefault("type", "object")
        tool: dict[str, Any] = {"name": spec.upstream_name, "input_schema": schema}
        if spec.description:
            tool["description"] = spec.description
        tools.append(tool)
    return tools


#: A neutral tool choice mode → Claude's ``tool_choice.type``.
_CHOICE_TYPES = {"auto": "auto", "none": "none", "required": "any", "tool": "tool"}


def _open_tool_turn_lacks_thinking(messages: list[dict[str, Any]]) -> bool:
    """Whether the last assistant turn calls tools that are being answered now, without thinking first.

    Claude requires that turn to start with its thinking block when thinking is enabled.
    """
    if len(messages) < 2 or messages[-1]["role"] != "user" or messages[-2]["role"] != "assistant":
        return False
    if messages[-1]["content"][0]["type"] != "tool_result":
        return False
    assistant = messages[-2]["content"]
    return any(b["type"] == "tool_use" for b in assistant) and assistant[0]["type"] not in _THINKING_TYPES


def _thinking(
    effort: str | None,
    claude_model: ClaudeModel,
    mode: ThinkingMode,
    budgets: Mapping[str, int],
    max_tokens: int,
    forced: bool,
    messages: list[dict[str, Any]],
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``(thinking, output_config)`` for ``reasoning.effort`` (either may be empty); ``forced``: the
    tool choice requires a call, which Claude does not allow with thinking."""
    if effort is None or mode == "off":
        return None, {}
    if mode == "adaptive" or (mode == "auto" and claude_model.style != "budget"):
        # Claude decides how much to think; the effort steers it and every other token of the
        # answer, so it is kept when a forced tool choice rules thinking out.
        config = {"effort": _ADAPTIVE_EFFORT.get(effort) or claude_model.xhigh}
        if forced:
            debug_once("thinking: Claude does not allow it with a forced tool choice")
            return None, config
        return {"type": "adaptive"}, config
    if forced:
        debug_once("thinking: Claude does not allow it with a forced tool choice")
        return None, {}
    budget = min(budgets.get(effort) or DEFAULT_THINKING_BUDGETS[effort], max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        debug_once("thinking: max_tokens too small for the minimum budget")
        return None, {}
    if _open_tool_turn_lacks_thinking(messages):
        debug_once("thinking: the open tool turn has no Claude thinking block to continue from")
        return None, {}
    return {"type": "enabled", "budget_tokens": budget}, {}


def _output_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """Claude's ``output_config.format`` for ``text.format`` (structured outputs), else ``None``.

    ``json_schema`` maps to ``{type: json_schema, schema}``; ``text`` (the default) needs nothing.
    Claude has no schema-less JSON mode, so ``json_object`` is refused with a 400 naming it.
    """
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return {"type": "json_schema", "schema": fmt["schema"]}
    if fmt.get("type") == "json_schema":
        raise InvalidRequestError(
            "text.format json_schema needs a `schema` object.", param="text.format.schema", code="invalid_value"
        )
    raise InvalidRequestError(
        f"text.format {fmt.get('type')!r} is not supported on Claude channels (Claude has no JSON mode "
        "without a schema); send a json_schema format instead.",
        param="text.format",
        code="unsupported_value",
    )


def _mark_cache(blocks: list[dict[str, Any]]) -> None:
    for block in reversed(blocks):
        if block["type"] not in _THINKING_TYPES:
            block["cache_control"] = {"type": "ephemeral"}
            return


def to_request(
    body: dict[str, Any], *, model: str, options: ClaudeOptions | None = None, catalog: ToolCatalog | None = None
) -> dict[str, Any]:
    """Convert a Responses request ``body`` to a Claude Messages request for ``model``.

    ``catalog`` is the body's :class:`ToolCatalog` when the caller already built it (it is needed
    again to translate the answer); ``options`` are the channel's :class:`ClaudeOptions`. Raises
    :class:`~ccx_asgi.errors.InvalidRequestError` when nothing is left to send, and for a field whose
    state lives at OpenAI (``prompt``, ``conversation``, ``background``). The input is not mutated.
    """
    options = options or _DEFAULT_OPTIONS
    reject_openai_state(body)
    catalog = catalog if catalog is not None else ToolCatalog.from_tools(request_tools(body))
    check_parts(input_items(body.get("input")), _part_problem)
    instructions = body.get("instructions")
    system: list[str] = [instructions] if isinstance(instructions, str) else []
    messages = _convert_input(body, system)
    if not messages:
        raise InvalidRequestError(
            "The request has no user or assistant content to send to the model.", param="input", code="invalid_value"
        )
    out: dict[str, Any] = {"model": model, "messages": messages}
    system_blocks = [{"type": "text", "text": text} for text in system if text.strip()]
    if system_blocks:
        out["system"] = system_blocks

    max_output = body.get("max_output_tokens")
    max_tokens = max_output if isinstance(max_output, int) and max_output > 0 else options.default_max_tokens
    out["max_tokens"] = max_tokens

    forced = False
    if catalog.specs:
        choice = resolve_tool_choice(body.get("tool_choice"), catalog, offered_to="Claude", channels="Claude")
        forced = choice.mode in ("required", "tool")
        # allowed_tools: only the allowed tools are offered (Claude has no allowed-list tool choice).
        # A choice that allows nothing is "none", and the tools stay defined: earlier tool_use blocks need them.
        out["tools"] = _tools(choice.allowed or catalog.specs)
        tool_choice: dict[str, Any] = {"type": _CHOICE_TYPES[choice.mode]}
        if choice.name is not None:
            tool_choice["name"] = choice.name
        if body.get("parallel_tool_calls") is False and choice.mode != "none":
            tool_choice["disable_parallel_tool_use"] = True
        out["tool_choice"] = tool_choice
    for dropped in catalog.dropped:
        debug_once(f"tool of type {dropped!r}")

    claude_model = ClaudeModel.from_id(model)
    thinking, output_config = _thinking(
        reasoning_effort(body), claude_model, options.thinking, options.thinking_budgets, max_tokens, forced, messages
    )
    if thinking is not None:
        out["thinking"] = thinking
    elif claude_model.style != "adaptive_only":
        # Claude requires the defaults (temperature 1) when thinking, and current models refuse
        # sampling parameters altogether, so they are sent only without thinking to models that take them.
        temperature = body.get("temperature")
        if isinstance(temperature, int | float) and not isinstance(temperature, bool):
            out["temperature"] = min(max(float(temperature), 0.0), 1.0)
        top_p = body.get("top_p")
        if isinstance(top_p, int | float) and not isinstance(top_p, bool):
            out["top_p"] = float(top_p)
    output_format = _output_format(body)
    if output_format is not None:
        output_config["format"] = output_format
    if output_config:
        out["output_config"] = output_config

    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user[:256]}
    if body.get("stream") is True:
        out["stream"] = True
    if options.prompt_caching:
        if system_blocks:
            _mark_cache(system_blocks)
        _mark_cache(messages[-1]["content"])
    return out


# -- Messages stream -> Responses events -----------------------------------------------------------


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


#: Claude error types → Responses error codes when the message says nothing more specific
#: (``invalid_prompt`` is final: no failover).
_ERROR_CODES = {
    "overloaded_error": "server_error",
    "api_error": "server_error",
    "rate_limit_error": "rate_limit_exceeded",
    "invalid_request_error": "invalid_prompt",
    "request_too_large": "invalid_prompt",
}


#: Claude stop reasons that make the response incomplete, with the Responses reason.
_INCOMPLETE = {
    "max_tokens": "max_output_tokens",
    "model_context_window_exceeded": "max_output_tokens",
    "refusal": "content_filter",
}


@dataclass(slots=True)
class _Block:
    kind: str  # text | thinking | redacted | tool | ignored
    index: int | None = None
    thinking: list[str] = field(default_factory=list)
    signature: list[str] = field(default_factory=list)
    data: str = ""
    custom: bool = False
    json: list[str] = field(default_factory=list)
    start_input: Any = None


class ClaudeStreamTranslator:
    """Claude Messages stream events → Responses events (see the module docstring).

    ``model`` is echoed to the client; ``request`` is the client's Responses body; ``catalog`` maps
    upstream tool names back to custom/namespaced tools (built from ``request`` when not given).
    """

    def __init__(
        self, model: str, request: dict[str, Any] | None = None, *, catalog: ToolCatalog | None = None
    ) -> None:
        self.stream = ResponseStream(model, request)
        self.catalog = catalog if catalog is not None else ToolCatalog.from_tools(request_tools(request or {}))
        self._blocks: dict[int, _Block] = {}
        self._input = self._cache_read = self._cache_write = self._output = 0
        self._stop_reason: str | None = None
        self._pending: _Block | None = None

    @property
    def done(self) -> bool:
        """Whether the terminal event has been produced."""
        return self.stream.terminal is not None

    def feed(self, data: dict[str, Any]) -> list[Event]:
        """Translate one Messages stream event (``ping`` and unknown types are ignored)."""
        if self.done:
            return []
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                self._usage(message.get("usage"))
            self.stream.start()
        elif kind == "content_block_start":
            self._flush("completed")
            self._start(data.get("index"), data.get("content_block"))
        elif kind == "content_block_delta":
            self._delta(data.get("index"), data.get("delta"))
        elif kind == "content_block_stop":
            index = data.get("index")
            block = self._blocks.pop(index, None) if isinstance(index, int) else None
            if block is not None:
                # Closed once the next event says whether the answer was cut (then it is incomplete).
                self._flush("completed")
                self._pending = block
        elif kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self._stop_reason = delta["stop_reason"]
            self._usage(data.get("usage"))
            self._flush(self._item_status())
        elif kind == "message_stop":
            self._terminate()
        elif kind == "error":
            error = data.get("error")
            error = error if isinstance(error, dict) else {}
            message = error.get("message") if isinstance(error.get("message"), str) else "Claude stream error"
            etype = str(error.get("type") or "api_error")
            # "prompt is too long" and "credit balance is too low" come as invalid_request_error.
            code = response_error_code(etype, str(message), default=_ERROR_CODES.get(etype, "server_error"))
            self.stream.fail(f"{etype}: {message}", code=code, usage=self._usage_obj())
        return self.stream.take()

    def finish(self) -> list[Event]:
        """The upstream stream ended: complete if Claude said why it stopped, else fail."""
        if not self.done:
            if self._stop_reason is not None:
                self._terminate()
            else:
                self.stream.fail(
                    "the Claude stream ended before message_stop; the answer is incomplete", usage=self._usage_obj()
                )
        return self.stream.take()

    def fail(self, message: str, code: str = "server_error") -> list[Event]:
        """Emit ``response.failed`` (transport failure mid-stream)."""
        if not self.done:
            self.stream.fail(message, code=code, usage=self._usage_obj())
        return self.stream.take()

    # -- internals ----------------------------------------------------------------------------------

    def _usage(self, usage: Any) -> None:
        # Claude repeats cumulative counts; message_delta's are the final ones.
        if not isinstance(usage, dict):
            return
        self._input = _int(usage.get("input_tokens")) or self._input
        self._cache_read = _int(usage.get("cache_read_input_tokens")) or self._cache_read
        self._cache_write = _int(usage.get("cache_creation_input_tokens")) or self._cache_write
        self._output = _int(usage.get("output_tokens")) or self._output

    def _usage_obj(self) -> dict[str, Any]:
        return usage_dict(
            self._input + self._cache_read + self._cache_write,
            self._output,
            cached_tokens=self._cache_read,
            cache_write_tokens=self._cache_write,
        )

    def _start(self, index: Any, content: Any) -> None:
        if not isinstance(index, int) or not isinstance(content, dict):
            return
        kind = content.get("type")
        stream = self.stream
        if kind == "text":
            block = _Block("text")
            self._blocks[index] = block
            self._text(block, content.get("text"))
        elif kind == "thinking":
            block = _Block("thinking", stream.open_item("reasoning"))
            self._blocks[index] = block
            self._thinking(block, content.get("thinking"))
            if isinstance(content.get("signature"), str):
                block.signature.append(content["signature"])
        elif kind == "redacted_thinking":
            data = content.get("data")
            self._blocks[index] = _Block(
                "redacted", stream.open_item("reasoning"), data=data if isinstance(data, str) else ""
            )
        elif kind == "tool_use" and not (isinstance(content.get("name"), str) and content["name"]):
            # A call without a name cannot be run by the client: dropped, never shown nameless.
            debug_once("Claude tool_use block without a name")
            self._blocks[index] = _Block("ignored")
        elif kind == "tool_use":
            item_type, name, namespace = self.catalog.client_tool(content["name"])
            block = _Block("tool", start_input=content.get("input"), custom=item_type == "custom_tool_call")
            call_id = str(content.get("id") or "") or None
            block.index = stream.open_item(item_type, call_id=call_id, name=name, namespace=namespace)
            self._blocks[index] = block
        else:
            debug_once(f"Claude content block {kind!r}")
            self._blocks[index] = _Block("ignored")

    def _text(self, block: _Block, text: Any) -> None:
        if not isinstance(text, str) or not text:
            return
        if block.index is None:
            # Opened lazily: Claude sometimes sends empty text blocks that would be empty messages.
            block.index = self.stream.open_item("message")
        self.stream.delta(block.index, text)

    def _thinking(self, block: _Block, text: Any) -> None:
        if isinstance(text, str) and text and block.index is not None:
            block.thinking.append(text)
            self.stream.delta(block.index, text)

    def _delta(self, index: Any, delta: Any) -> None:
        block = self._blocks.get(index) if isinstance(index, int) else None
        if block is None or not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta" and block.kind == "text":
            self._text(block, delta.get("text"))
        elif kind == "thinking_delta" and block.kind == "thinking":
            self._thinking(block, delta.get("thinking"))
        elif kind == "signature_delta" and block.kind == "thinking" and isinstance(delta.get("signature"), str):
            block.signature.append(delta["signature"])
        elif kind == "input_json_delta" and block.kind == "tool" and isinstance(delta.get("partial_json"), str):
            block.json.append(delta["partial_json"])
            if not block.custom and block.index is not None:
                self.stream.delta(block.index, delta["partial_json"])

    def _item_status(self) -> str:
        return "incomplete" if self._stop_reason in _INCOMPLETE else "completed"

    def _flush(self, status: str) -> None:
        block, self._pending = self._pending, None
        if block is not None:
            self._close(block, status)

    def _close(self, block: _Block, status: str = "completed") -> None:
        index = block.index
        if index is None or not self.stream.is_open(index):
            return
        if block.kind == "thinking":
            self.stream.item(index)["encrypted_content"] = encode_reasoning(
                {"type": "thinking", "thinking": "".join(block.thinking), "signature": "".join(block.signature)}
            )
        elif block.kind == "redacted":
            self.stream.item(index)["encrypted_content"] = encode_reasoning(
                {"type": "redacted_thinking", "data": block.data}
            )
        elif block.kind == "tool":
            arguments = "".join(block.json)
            streamed = bool(arguments.strip()) and not block.custom
            if not arguments.strip():
                # Non-streamed answers (and tools without parameters) carry the input on the start block.
                start = block.start_input
                arguments = orjson.dumps(start if isinstance(start, dict) else {}).decode()
            if block.custom:
                self.stream.delta(index, custom_input(arguments))
            elif not streamed:
                self.stream.delta(index, arguments)
        self.stream.close_item(index, status=status)

    def _terminate(self) -> None:
        status = self._item_status()
        self._flush(status)
        for key in sorted(self._blocks):
            self._close(self._blocks.pop(key), status)
        usage = self._usage_obj()
        reason = _INCOMPLETE.get(self._stop_reason or "")
        if reason is not None:
            self.stream.incomplete(reason, usage)
        else:
            self.stream.complete(usage)


# -- non-streaming answers -----------------------------------------------------------------------------


def message_events(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A complete Messages answer as the stream events Claude would have sent for it."""
    head = {k: v for k, v in message.items() if k != "content"}
    yield {"type": "message_start", "message": {**head, "content": [], "stop_reason": None}}
    content = message.get("content")
    for index, block in enumerate(content if isinstance(content, list) else []):
        yield {"type": "content_block_start", "index": index, "content_block": block}
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")},
        "usage": message.get("usage") or {},
    }
    yield {"type": "message_stop"}


def to_response(
    data: Any, *, model: str, request: dict[str, Any] | None = None, catalog: ToolCatalog | None = None
) -> dict[str, Any]:
    """A non-streaming Messages answer as a Responses object (same rules as the stream).

    Raises :class:`~ccx_asgi.convert.common.ConversionError` for a body that is not a message.
    """
    if not isinstance(data, dict) or data.get("type") != "message" or not isinstance(data.get("content"), list):
        raise ConversionError("Claude answered with something that is not a message")
    translator = ClaudeStreamTranslator(model, request, catalog=catalog)
    for event in message_events(data):
        translator.feed(event)
    translator.finish()
    return translator.stream.response()
