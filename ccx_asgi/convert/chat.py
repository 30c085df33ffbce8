"""Responses ⇄ OpenAI Chat Completions, as pure functions and a pure stream state machine.

- :func:`to_request` turns a Responses request body into a Chat Completions body (see
  ``shared/reference/conversion.md`` for the table it implements), as :class:`ChatOptions` say.
- :class:`ChatStreamTranslator` turns Chat stream chunks into Responses events through
  :class:`~ccx_asgi.convert.events.ResponseStream` (``feed(chunk) -> events``, ``finish() -> events``).
- :func:`to_response` turns a non-streaming Chat completion into a Responses object.

:mod:`ccx_asgi.convert.claude` has the same shape (``to_request``, a stream translator,
``to_response``, an options dataclass with ``from_channel``).

Nothing here does I/O. Tools go through the shared :class:`~ccx_asgi.convert.tools.ToolCatalog`
(custom tools become one-string-argument functions, namespaces are flattened) so upstream calls
come back as ``custom_tool_call`` items or ``function_call`` items with their ``namespace``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ccx_asgi.convert.common import (
    ConversionError,
    PerChannel,
    check_parts,
    content_parts,
    debug_once,
    reject_openai_state,
)
from ccx_asgi.convert.events import ResponseStream, new_id, usage_dict
from ccx_asgi.convert.reasoning_codec import decode_chat_reasoning, encode_chat_reasoning
from ccx_asgi.convert.tools import (
    ToolCatalog,
    ToolSpec,
    custom_input,
    history_call,
    output_parts,
    pair_tool_calls,
    request_tools,
    resolve_tool_choice,
    tool_messages_as_outputs,
)
from ccx_asgi.errors import InvalidRequestError
from ccx_asgi.types import Event
from ccx_asgi.upstream_errors import response_error_code

if TYPE_CHECKING:
    from ccx_asgi.settings import ChannelConfig

__all__ = [
    "FORWARDABLE_FIELDS",
    "ChatOptions",
    "ChatStreamTranslator",
    "chat_messages",
    "chat_usage",
    "request_tools",
    "to_request",
    "to_response",
]

logger = logging.getLogger("ccx_asgi.convert.chat")

_CALL_TYPES = frozenset({"function_call", "custom_tool_call"})
_OUTPUT_TYPES = frozenset({"function_call_output", "custom_tool_call_output"})
_SAME_NAME_FIELDS = ("temperature", "top_p", "stop", "user", "seed", "frequency_penalty", "presence_penalty")
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
#: Fields only some Chat upstreams (OpenAI, Azure, OpenRouter…) accept, sent per ``forward_fields``.
FORWARDABLE_FIELDS = ("safety_identifier", "verbosity", "service_tier", "prompt_cache_retention")
_LOGPROBS_INCLUDE = "message.output_text.logprobs"
# The delta fields of nearly every chunk; anything else (refusal, annotations, function_call,
# reasoning_details) takes the slower path, so plain text streams pay nothing for the rare fields.
_COMMON_DELTA = frozenset({"role", "content", "reasoning_content", "reasoning", "tool_calls"})
# The stream index given to a legacy ``function_call`` (pre-tools API): never a real tool_calls index.
_LEGACY_CALL = -1


@dataclass(frozen=True, slots=True)
class ChatOptions:
    """What a Chat upstream accepts (the ``chat`` options of a channel; defaults suit most upstreams).

    Each field is the channel field of the same name without its ``chat_`` prefix.
    """

    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    strict_tools: bool = False
    prompt_cache_key: bool = False
    stream_usage: bool = True
    reasoning_effort: Literal["reasoning_effort", "reasoning", "none"] = "reasoning_effort"
    reasoning_content: bool = True
    allowed_tools: Literal["filter", "native"] = "filter"
    forward_fields: frozenset[str] = frozenset()

    @classmethod
    def from_channel(cls, channel: ChannelConfig) -> ChatOptions:
        """The options ``channel`` asks for, built once per channel configuration."""
        return _CHANNEL_OPTIONS.get(channel)


def _channel_options(channel: ChannelConfig) -> ChatOptions:
    return ChatOptions(
        max_tokens_field=channel.max_tokens_field,
        strict_tools=channel.chat_strict_tools,
        prompt_cache_key=channel.chat_prompt_cache_key,
        stream_usage=channel.chat_stream_usage,
        reasoning_effort=channel.chat_reasoning_effort,
        reasoning_content=channel.chat_reasoning_content,
        allowed_tools=channel.chat_allowed_tools,
        forward_fields=frozenset(channel.chat_forward_fields),
    )


_CHANNEL_OPTIONS = PerChannel(_channel_options)
_DEFAULT_OPTIONS = ChatOptions()


# -- Responses → Chat request ------------------------------------------------------------------


def _part_problem(role: str, part: dict[str, Any]) -> str | None:
    """Why a Chat upstream cannot take this image, file or audio part (see :func:`check_parts`)."""
    kind = part.get("type")
    if role == "tool":
        # Images of tool outputs follow the tool messages as a user message; nothing else can.
        return None if kind == "input_image" else f"{kind} cannot be part of a tool output on Chat channels"
    if role != "user":
        return f"{kind} is only accepted in user messages on Chat channels, not in {role} messages"
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not (
            isinstance(audio, dict) and isinstance(audio.get("data"), str) and isinstance(audio.get("format"), str)
        ):
            return "input_audio needs input_audio.data (base64) and input_audio.format"
    return None


def _file_part(part: dict[str, Any]) -> dict[str, Any]:
    # file_url goes in file_data: OpenRouter and LiteLLM fetch URLs there; OpenAI itself answers
    # a clear 400 asking for base64 data, which reaches the client as is.
    data = part.get("file_data") if isinstance(part.get("file_data"), str) else part.get("file_url")
    file: dict[str, Any] = {"file_data": data}
    if isinstance(part.get("filename"), str) and part["filename"]:
        file["filename"] = part["filename"]
    return {"type": "file", "file": file}


def _content(parts: Any, role: str) -> str | list[dict[str, Any]]:
    """Message content: a plain string when it is only text (every upstream accepts that), parts
    when it carries images, files or audio (only user messages may: :func:`check_parts` ran first)."""
    if isinstance(parts, str):
        return parts
    texts: list[str] = []
    chat_parts: list[dict[str, Any]] = []
    has_media = False
    for kind, part in content_parts(parts):
        if kind == "text":
            texts.append(part["text"])
            chat_parts.append({"type": "text", "text": part["text"]})
            continue
        if kind == "image":
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            chat_parts.append({"type": "image_url", "image_url": image})
        elif kind == "file":
            chat_parts.append(_file_part(part))
        elif kind == "audio":
            audio = part["input_audio"]
            chat_parts.append(
                {"type": "input_audio", "input_audio": {"data": audio["data"], "format": audio["format"]}}
            )
        else:
            debug_once(f"chat: a {part.get('type')} content part (role {role})")
            continue
        has_media = True
    return chat_parts if has_media else "\n\n".join(texts)


def _reasoning_text(item: dict[str, Any]) -> str:
    exact = decode_chat_reasoning(item.get("encrypted_content"))
    if exact is not None:  # the upstream's own reasoning, as this gateway wrapped it
        return exact
    texts = []
    for key in ("content", "summary"):
        parts = item.get(key)
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]:
                texts.append(part["text"])
        if texts:  # raw reasoning when present, else the summary: never both copies
            break
    return "\n\n".join(texts)


def _tool_call(item: dict[str, Any]) -> dict[str, Any]:
    call = history_call(item)
    if call.custom_input is not None:
        arguments = orjson.dumps({"input": call.custom_input}).decode()
    else:
        raw = item.get("arguments")
        arguments = raw if isinstance(raw, str) and raw.strip() else "{}"
    return {"id": item["call_id"], "type": "function", "function": {"name": call.name, "arguments": arguments}}


def chat_messages(instructions: Any, items: Any, *, reasoning_content: bool = True) -> list[dict[str, Any]]:
    """The Chat ``messages`` for a Responses ``instructions`` + ``input``.

    Tool-call pairing is repaired first (:func:`pair_tool_calls`), consecutive calls become one
    assistant message (merged into a directly preceding assistant text), reasoning goes on the next
    assistant message as ``reasoning_content``, and images from tool outputs follow the tool
    messages as one user message (Chat tool messages carry text only).
    """
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    if not isinstance(items, list):
        return messages

    reasoning: list[str] = []
    images: list[dict[str, Any]] = []

    def flush_images() -> None:
        if images:
            messages.append(
                {"role": "user", "content": [{"type": "text", "text": "[images from tool output]"}, *images]}
            )
            images.clear()

    def assistant_message() -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if reasoning:
            if reasoning_content:
                message["reasoning_content"] = "\n\n".join(reasoning)
            reasoning.clear()
        messages.append(message)
        return message

    for item in pair_tool_calls(tool_messages_as_outputs(items)):
        kind = item.get("type", "message")
        if kind in _OUTPUT_TYPES:
            text, parts = output_parts(item.get("output"))
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
            for part in parts:
                image: dict[str, Any] = {"url": part["image_url"]}
                if part.get("detail") in ("low", "high", "auto"):
                    image["detail"] = part["detail"]
                images.append({"type": "image_url", "image_url": image})
            continue
        if kind == "reasoning":
            text = _reasoning_text(item)
            if text:
                reasoning.append(text)
            continue
        if kind in _CALL_TYPES:
            flush_images()
            last = messages[-1] if messages else None
            if last is None or last["role"] != "assistant":
                last = assistant_message()
            elif reasoning:
                # Reasoning between a text answer and its calls still belongs to this turn.
                if reasoning_content:
                    prior = last.get("reasoning_content")
                    last["reasoning_content"] = "\n\n".join([*([prior] if prior else []), *reasoning])
                reasoning.clear()
            last.setdefault("tool_calls", []).append(_tool_call(item))
            continue
        if kind != "message":
            logger.debug("chat: dropped a %s input item (no Chat equivalent)", kind)
            continue
        flush_images()
        role = str(item.get("role") or "user")
        content = _content(item.get("content"), role)
        if role == "assistant":
            message = assistant_message()
            message["content"] = content
        else:
            messages.append({"role": role, "content": content})
    flush_images()
    return messages


def _chat_tool(spec: ToolSpec, strict: bool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": spec.upstream_name, "parameters": spec.parameters}
    if spec.description:
        function["description"] = spec.description
    if strict and spec.strict is not None:
        function["strict"] = spec.strict
    return {"type": "function", "function": function}


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema":
        schema: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": fmt.get("schema") or {}}
        if isinstance(fmt.get("strict"), bool):
            schema["strict"] = fmt["strict"]
        if isinstance(fmt.get("description"), str):
            schema["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": schema}
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    return None


def _tools_and_choice(body: dict[str, Any], catalog: ToolCatalog, options: ChatOptions) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` of the Chat request (empty without tools)."""
    if not catalog.specs:
        return {}
    specs = catalog.specs
    choice = resolve_tool_choice(body.get("tool_choice"), catalog, offered_to="this channel's model", channels="Chat")
    out: dict[str, Any] = {}
    if choice.allowed is not None and options.allowed_tools == "native":
        # Chat's own allowed_tools keeps the tool list (and the upstream's prompt cache) unchanged.
        named = [{"type": "function", "function": {"name": spec.upstream_name}} for spec in choice.allowed]
        out["tool_choice"] = {"type": "allowed_tools", "allowed_tools": {"mode": choice.mode, "tools": named}}
    elif "tool_choice" in body:
        if choice.allowed is not None:
            specs = choice.allowed
        if choice.mode == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            out["tool_choice"] = choice.mode
    out["tools"] = [_chat_tool(spec, options.strict_tools) for spec in specs]
    if isinstance(body.get("parallel_tool_calls"), bool):
        out["parallel_tool_calls"] = body["parallel_tool_calls"]
    return out


def _logprobs_request(body: dict[str, Any]) -> dict[str, Any]:
    """Chat's ``logprobs``/``top_logprobs`` for Responses' ``include`` and ``top_logprobs``."""
    include = body.get("include")
    top = body.get("top_logprobs")
    top = top if isinstance(top, int) and not isinstance(top, bool) and top > 0 else None
    if not (top or (isinstance(include, list) and _LOGPROBS_INCLUDE in include)):
        return {}
    return {"logprobs": True, **({"top_logprobs": top} if top else {})}


def to_request(
    body: dict[str, Any], *, model: str, options: ChatOptions | None = None, catalog: ToolCatalog | None = None
) -> dict[str, Any]:
    """Convert a Responses request ``body`` into a Chat Completions body for ``model``.

    ``catalog`` is the body's :class:`ToolCatalog` when the caller already built it (it is needed
    again to translate the answer). Fields with no Chat meaning (``store``, ``metadata``,
    ``client_metadata``, ``truncation``, ``reasoning.summary`` …) are not sent; the OpenAI-only
    fields in :data:`FORWARDABLE_FIELDS` only when ``options.forward_fields`` names them, and
    ``prompt_cache_key`` only when ``options.prompt_cache_key`` (see ``docs/chat-channels.md`` for
    the whole table). Raises :class:`~ccx_asgi.errors.InvalidRequestError` for a part no Chat
    upstream can take (an uploaded ``file_id`` …) and when nothing is left to send.
    """
    options = options or _DEFAULT_OPTIONS
    reject_openai_state(body)
    catalog = catalog if catalog is not None else ToolCatalog.from_tools(request_tools(body))
    check_parts(body.get("input"), _part_problem)
    messages = chat_messages(body.get("instructions"), body.get("input"), reasoning_content=options.reasoning_content)
    if not messages:
        # Only items with no Chat form (reasoning, hosted-tool calls): every Chat upstream refuses
        # an empty ``messages`` array, so say so in the client's terms.
        raise InvalidRequestError(
            "The request has no instructions or messages to send to the model.", param="input", code="invalid_value"
        )
    chat: dict[str, Any] = {"model": model, "messages": messages}
    chat.update(_tools_and_choice(body, catalog, options))
    for name in _SAME_NAME_FIELDS:
        if body.get(name) is not None:
            chat[name] = body[name]
    if isinstance(body.get("max_output_tokens"), int):
        chat[options.max_tokens_field] = body["max_output_tokens"]
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if isinstance(effort, str) and options.reasoning_effort != "none":
        if options.reasoning_effort == "reasoning":
            chat["reasoning"] = {"effort": effort}
        else:
            chat["reasoning_effort"] = effort
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    chat.update(_logprobs_request(body))
    forward = options.forward_fields
    text = body.get("text")
    values = {
        "safety_identifier": body.get("safety_identifier"),
        "verbosity": text.get("verbosity") if isinstance(text, dict) else None,
        "service_tier": body.get("service_tier"),
        "prompt_cache_retention": body.get("prompt_cache_retention"),
    }
    for name, value in values.items():
        if name in forward and isinstance(value, str):
            chat[name] = value
    safety = values["safety_identifier"]
    if "safety_identifier" not in forward and isinstance(safety, str) and "user" not in chat:
        chat["user"] = safety  # what every Chat upstream accepts for the same purpose
    if options.prompt_cache_key and isinstance(body.get("prompt_cache_key"), str):
        chat["prompt_cache_key"] = body["prompt_cache_key"]
    if body.get("stream") is True:
        chat["stream"] = True
        if options.stream_usage:
            chat["stream_options"] = {"include_usage": True}
    return chat


# -- Chat → Responses ------------------------------------------------------------------------


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """A Chat ``usage`` object in Responses terms (``input_tokens`` includes cached tokens)."""
    if not isinstance(usage, dict):
        return None

    def number(value: Any) -> int:
        return value if isinstance(value, int) and value >= 0 else 0

    prompt = usage.get("prompt_tokens_details")
    completion = usage.get("completion_tokens_details")
    cached = number(prompt.get("cached_tokens")) if isinstance(prompt, dict) else 0
    # DeepSeek and Kimi report cache hits in their own fields.
    cached = cached or number(usage.get("prompt_cache_hit_tokens")) or number(usage.get("cached_tokens"))
    # OpenRouter reports cache writes in prompt_tokens_details, LiteLLM-style proxies at the top.
    written = number(prompt.get("cache_write_tokens")) if isinstance(prompt, dict) else 0
    written = written or number(usage.get("cache_creation_input_tokens"))
    return usage_dict(
        number(usage.get("prompt_tokens")),
        number(usage.get("completion_tokens")),
        cached_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=number(completion.get("reasoning_tokens")) if isinstance(completion, dict) else 0,
    )


@dataclass(slots=True)
class _Call:
    """One upstream tool call being streamed (by its ``index``)."""

    call_id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    output_index: int | None = None
    custom: bool = False


def _reasoning_text_of(delta: dict[str, Any]) -> str:
    for key in ("reasoning_content", "reasoning"):
        value = delta.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _reasoning_details(delta: dict[str, Any]) -> str:
    # OpenRouter may send only the structured form: text and summary entries are readable,
    # ``reasoning.encrypted`` entries are opaque to every other upstream and are not shown.
    details = delta.get("reasoning_details")
    if not isinstance(details, list):
        return ""
    texts = []
    for detail in details:
        if isinstance(detail, dict):
            value = detail.get("text") if detail.get("type") == "reasoning.text" else None
            value = detail.get("summary") if detail.get("type") == "reasoning.summary" else value
            if isinstance(value, str) and value:
                texts.append(value)
    return "".join(texts)


def _reasoning_delta(delta: dict[str, Any]) -> str:
    return _reasoning_text_of(delta) or _reasoning_details(delta)


def _logprobs(logprobs: Any) -> list[dict[str, Any]]:
    """A Chat choice's ``logprobs`` (its content tokens) in the Responses shape (``bytes`` always a list)."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    out = []
    for entry in content if isinstance(content, list) else ():
        if not (isinstance(entry, dict) and isinstance(entry.get("token"), str)):
            continue
        top = entry.get("top_logprobs")
        out.append(
            {
                "token": entry["token"],
                "logprob": entry.get("logprob") if isinstance(entry.get("logprob"), int | float) else 0.0,
                "bytes": entry.get("bytes") if isinstance(entry.get("bytes"), list) else [],
                "top_logprobs": [
                    {
                        "token": t["token"],
                        "logprob": t.get("logprob") if isinstance(t.get("logprob"), int | float) else 0.0,
                        "bytes": t.get("bytes") if isinstance(t.get("bytes"), list) else [],
                    }
                    for t in (top if isinstance(top, list) else ())
                    if isinstance(t, dict) and isinstance(t.get("token"), str)
                ],
            }
        )
    return out


def _annotation(value: Any) -> dict[str, Any] | None:
    """A Chat ``url_citation`` annotation in the Responses shape (others have no Responses form)."""
    citation = value.get("url_citation") if isinstance(value, dict) and value.get("type") == "url_citation" else None
    if not isinstance(citation, dict) or not isinstance(citation.get("url"), str):
        return None
    start, end = citation.get("start_index"), citation.get("end_index")
    return {
        "type": "url_citation",
        "url": citation["url"],
        "title": citation.get("title") if isinstance(citation.get("title"), str) else "",
        "start_index": start if isinstance(start, int) else 0,
        "end_index": end if isinstance(end, int) else 0,
    }


class ChatStreamTranslator:
    """Chat Completions stream chunks → Responses events (pure; see the module docstring).

    Items appear in the order the upstream produced them: reasoning, then text, then tool calls
    (one item per call ``index``, opened once its name is known so ``output_item.added`` carries the
    real name and ``call_id``). Items are closed when the upstream gives its ``finish_reason``; the
    terminal event waits for :meth:`finish`, because the usage chunk comes after the finish chunk.
    A stream that ends without a ``finish_reason`` ends in ``response.failed``.
    """

    def __init__(
        self,
        model: str,
        request: dict[str, Any] | None = None,
        *,
        catalog: ToolCatalog | None = None,
    ) -> None:
        self.stream = ResponseStream(model, request)
        self.catalog = catalog if catalog is not None else ToolCatalog.from_tools(request_tools(request or {}))
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self._reasoning: int | None = None
        self._text: int | None = None
        self._refusal: int | None = None
        self._calls: dict[int, _Call] = {}
        self._reasoning_parts: list[str] = []

    # -- feeding ------------------------------------------------------------------------------

    def feed(self, data: dict[str, Any]) -> list[Event]:
        """Translate one upstream chunk."""
        if self.stream.terminal is not None:
            return []
        error = data.get("error")
        if isinstance(error, dict | str):
            return self._upstream_error(error)
        self.stream.start()
        if isinstance(data.get("usage"), dict):
            self.usage = chat_usage(data["usage"])
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 is never requested; extra choices are not ours to show
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, choice)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason and self.finish_reason is None:
                self.finish_reason = reason
                self._close_items()
        return self.stream.take()

    def _switch(self, keep: str) -> None:
        """Close the open reasoning/text/refusal item other than ``keep``: the upstream moved on.

        Called only when an item opens, so at most one of the three is ever open.
        """
        for attr in ("_reasoning", "_text", "_refusal"):
            index = getattr(self, attr)
            if attr != keep and index is not None:
                self._close(index)
                setattr(self, attr, None)

    def _delta(self, delta: dict[str, Any], choice: dict[str, Any]) -> None:
        stream = self.stream
        common = _COMMON_DELTA.issuperset(delta)
        reasoning = _reasoning_text_of(delta) or ("" if common else _reasoning_details(delta))
        if reasoning:
            if self._reasoning is None:
                self._switch("_reasoning")  # reasoning after text starts a new reasoning item
                self._reasoning = stream.open_item("reasoning")
            stream.delta(self._reasoning, reasoning)
            self._reasoning_parts.append(reasoning)
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self._text is None:
                self._switch("_text")
                self._text = stream.open_item("message")
            logprobs = choice.get("logprobs")  # null unless asked for
            stream.delta(self._text, content, _logprobs(logprobs) if logprobs else None)
        if not common:
            self._rare(delta)
        fragments = delta.get("tool_calls")
        for fragment in fragments if isinstance(fragments, list) else ():
            if isinstance(fragment, dict):
                self._tool_fragment(fragment)

    def _rare(self, delta: dict[str, Any]) -> None:
        """Annotations, refusals and legacy ``function_call`` deltas."""
        stream = self.stream
        annotations = delta.get("annotations")
        for value in annotations if isinstance(annotations, list) else ():
            annotation = _annotation(value)
            if annotation is not None and self._text is not None:
                stream.annotate(self._text, annotation)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            if self._refusal is None:
                self._switch("_refusal")
                self._refusal = stream.open_item("refusal")
            stream.delta(self._refusal, refusal)
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            # The pre-tools functions API: one call, no id, no index.
            self._tool_fragment({"index": _LEGACY_CALL, "function": legacy})

    def _tool_fragment(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index")
        if not isinstance(index, int):
            # Some upstreams omit the index: a fragment with an id starts a call, others continue one.
            index = len(self._calls) if fragment.get("id") or not self._calls else max(self._calls)
        call = self._calls.setdefault(index, _Call())
        fragment_id = fragment.get("id")
        if isinstance(fragment_id, str) and fragment_id and call.call_id not in (None, fragment_id) and call.name:
            # Some upstreams (Gemini's compatibility layer) reuse one index for several calls.
            call = self._calls[max(self._calls) + 1] = _Call()
        if isinstance(fragment_id, str) and fragment_id and call.call_id is None:
            call.call_id = fragment_id
        function = fragment.get("function")
        if not isinstance(function, dict):
            return
        name = function.get("name")
        if isinstance(name, str) and name and not call.name:
            call.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            call.arguments.append(arguments)
            # A fragment after the finish_reason (a broken upstream) finds its item closed: drop it.
            if call.output_index is not None and not call.custom and self.stream.is_open(call.output_index):
                self.stream.delta(call.output_index, arguments)
        if call.output_index is None and call.name:
            self._open_call(call)

    def _open_call(self, call: _Call) -> None:
        self._switch("")
        kind, name, namespace = self.catalog.client_tool(call.name)
        call.call_id = call.call_id or new_id("call")
        call.output_index = self.stream.open_item(kind, call_id=call.call_id, name=name, namespace=namespace)
        if kind == "custom_tool_call":
            call.custom = True  # its input is whole only at the end (see _close_call)
        else:
            self.stream.delta(call.output_index, "".join(call.arguments))

    def _close(self, index: int, status: str = "completed") -> None:
        if self.stream.is_open(index):
            if index == self._reasoning and self._reasoning_parts:
                # Lets store:false clients replay it (see ccx_asgi.convert.reasoning_codec).
                self.stream.item(index)["encrypted_content"] = encode_chat_reasoning("".join(self._reasoning_parts))
                self._reasoning_parts = []
            self.stream.close_item(index, status=status)

    def _close_call(self, call: _Call, status: str) -> None:
        if call.output_index is None or not self.stream.is_open(call.output_index):
            return
        if call.custom:
            # Freeform input arrives JSON-wrapped ({"input": "..."}): only the whole text is the input.
            self.stream.delta(call.output_index, custom_input("".join(call.arguments)))
        self._close(call.output_index, status)

    def _close_items(self, status: str = "completed") -> None:
        if self.finish_reason in _INCOMPLETE:
            status = "incomplete"
        for index in (self._reasoning, self._text, self._refusal):
            if index is not None:
                self._close(index, status)
        self._reasoning = self._text = self._refusal = None
        for call in self._calls.values():
            if call.output_index is None:
                logger.debug("chat: dropped a tool call that never got a name")
            self._close_call(call, status)

    def _upstream_error(self, error: dict[str, Any] | str) -> list[Event]:
        message = error if isinstance(error, str) else str(error.get("message") or "upstream error")
        code = (error.get("code") or error.get("type")) if isinstance(error, dict) else None
        code = response_error_code(code if isinstance(code, str) else None, message)
        self.stream.fail(f"upstream error: {message}", code=code)
        return self.stream.take()

    # -- ending -------------------------------------------------------------------------------

    def finish(self) -> list[Event]:
        """The upstream stream ended: emit the terminal event (``failed`` if it never finished)."""
        if self.stream.terminal is not None:
            return []
        if self.finish_reason is None:
            return self.fail("the upstream stream ended without a finish_reason; the answer is incomplete")
        reason = _INCOMPLETE.get(self.finish_reason)
        if reason is not None:
            self.stream.incomplete(reason, self.usage)
        else:
            self.stream.complete(self.usage)
        return self.stream.take()

    def fail(self, message: str, code: str = "server_error") -> list[Event]:
        """Emit ``response.failed`` (open items are dropped, never shown half-built)."""
        if self.stream.terminal is not None:
            return []
        self.stream.fail(message, code=code, usage=self.usage)
        return self.stream.take()


def to_response(
    data: Any, *, model: str, request: dict[str, Any] | None = None, catalog: ToolCatalog | None = None
) -> dict[str, Any]:
    """Convert a non-streaming Chat completion into a Responses object.

    The completion is replayed through :class:`ChatStreamTranslator` as one chunk, so both paths
    produce exactly the same items. Raises :class:`~ccx_asgi.convert.common.ConversionError` for a
    body that is not a completion.
    """
    if not isinstance(data, dict):
        raise ConversionError("the upstream answered with a non-object JSON body")
    if isinstance(data.get("error"), dict):
        raise ConversionError(f"upstream error: {data['error'].get('message') or data['error']}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ConversionError("the upstream answer has no choices")
    choice = choices[0]
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    calls = message.get("tool_calls")
    delta = {
        "reasoning_content": _reasoning_delta(message),
        "content": message.get("content"),
        "annotations": message.get("annotations"),
        "refusal": message.get("refusal"),
        "tool_calls": [
            {**call, "index": i}
            for i, call in enumerate(calls if isinstance(calls, list) else ())
            if isinstance(call, dict)
        ],
        "function_call": message.get("function_call"),
    }
    translator = ChatStreamTranslator(model, request, catalog=catalog)
    replayed = {
        "index": 0,
        "delta": delta,
        "logprobs": choice.get("logprobs"),
        "finish_reason": choice.get("finish_reason") or "stop",
    }
    translator.feed({"choices": [replayed], "usage": data.get("usage")})
    translator.finish()
    return translator.stream.response()
