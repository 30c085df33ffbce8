"""A strict fake OpenAI Chat Completions upstream (a stand-in for DeepSeek, vLLM, Kimi, OpenAI…).

Strict like the real ones, so a converter bug shows up as the 400 a user would get:
unknown top-level or message fields, a ``tool`` message without a preceding call, an assistant call
without its ``tool`` answers, duplicate call ids, tool names outside ``[A-Za-z0-9_-]{1,64}``,
``tool_choice``/``parallel_tool_calls`` without tools, ``stream_options`` without ``stream``,
``top_logprobs`` without ``logprobs``, malformed ``file``/``input_audio`` parts. OpenAI-only fields
(:data:`OPENAI_FIELDS`) and the native ``allowed_tools`` tool choice are refused unless the fake
is told it stands in for OpenAI (``extra_fields``, ``native_allowed_tools``). The
``strict_roles`` variant rejects the ``developer`` role exactly like DeepSeek (HTTP 422 "unknown
variant `developer`"); ``require_reasoning_content`` demands ``reasoning_content`` on assistant
tool-call turns like DeepSeek's thinking mode; ``max_tokens_field`` rejects the other spelling.

A script turns each accepted request into a :class:`Reply` (stream chunks; the non-stream answer
is assembled from them) or an ``(status, json)`` error. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ccx_asgi.types import Receive, Scope, Send
from tests.fakes.asgi import read_request, send_json

KNOWN_FIELDS = frozenset(
    {
        "model", "messages", "tools", "tool_choice", "parallel_tool_calls", "temperature", "top_p", "stop", "user",
        "seed", "frequency_penalty", "presence_penalty", "max_tokens", "max_completion_tokens", "reasoning_effort",
        "response_format", "stream", "stream_options", "n", "logprobs", "top_logprobs", "logit_bias",
    }
)  # fmt: skip
#: Fields OpenAI's Chat Completions accepts and most other Chat upstreams reject, with their values.
OPENAI_FIELDS: dict[str, frozenset[str] | None] = {
    "safety_identifier": None,
    "verbosity": frozenset({"low", "medium", "high"}),
    "service_tier": frozenset({"auto", "default", "flex", "scale", "priority"}),
    "prompt_cache_retention": frozenset({"in_memory", "24h"}),
    "prompt_cache_key": None,
}
_AUDIO_FORMATS = frozenset({"wav", "mp3"})
_MESSAGE_FIELDS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "reasoning_content", "refusal"},
    "tool": {"role", "content", "tool_call_id"},
}
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})


@dataclass
class Recorded:
    """One request the fake received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Reply:
    """What the fake answers: the stream chunks, and whether ``data: [DONE]`` ends the stream.

    ``done=False`` together with chunks lacking a ``finish_reason`` is a cut stream.
    """

    chunks: list[dict[str, Any]]
    done: bool = True


Script = Callable[[dict[str, Any]], "Reply | tuple[int, dict[str, Any]]"]


def error(status: int, message: str, *, code: str | None = "invalid_request_error") -> tuple[int, dict[str, Any]]:
    """An OpenAI-shaped error answer."""
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


# -- building chunks ---------------------------------------------------------------------------


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    *,
    usage: dict[str, Any] | None = None,
    model: str = "fake-chat",
    choices: bool = True,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` as real upstreams send it."""
    data: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}] if choices else [],
    }
    if usage is not None:
        data["usage"] = usage
    return data


def usage(prompt: int = 100, completion: int = 20, *, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    """A Chat ``usage`` object (``prompt_tokens`` includes cached tokens, as OpenAI reports it)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def text_reply(text: str, *, reasoning: str = "", finish: str = "stop") -> Reply:
    """Reasoning (optional) then text, in small pieces, then finish and a usage chunk."""
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"reasoning_content": reasoning[i : i + 7]}) for i in range(0, len(reasoning), 7)]
    chunks += [chunk({"content": text[i : i + 5]}) for i in range(0, len(text), 5)]
    chunks.append(chunk({}, finish))
    chunks.append(chunk(usage=usage(120, 30, cached=64, reasoning=len(reasoning) // 4), choices=False))
    return Reply(chunks)


def tool_reply(calls: list[tuple[str, dict[str, Any]]], *, reasoning: str = "", text: str = "") -> Reply:
    """Tool calls (arguments streamed in fragments, names only in the first fragment), then finish."""
    chunks = [chunk({"role": "assistant", "content": None})]
    if reasoning:
        chunks.append(chunk({"reasoning_content": reasoning}))
    if text:
        chunks.append(chunk({"content": text}))
    for index, (name, arguments) in enumerate(calls):
        raw = orjson.dumps(arguments).decode()
        first = {"index": index, "id": f"call_{index}_{name[:8]}", "type": "function"}
        chunks.append(chunk({"tool_calls": [{**first, "function": {"name": name, "arguments": ""}}]}))
        for i in range(0, len(raw), 9):
            chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": raw[i : i + 9]}}]}))
    chunks.append(chunk({}, "tool_calls"))
    chunks.append(chunk(usage=usage(150, 40, cached=100), choices=False))
    return Reply(chunks)


def completion_from_chunks(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` equivalent of a chunk list."""
    content: list[str] = []
    reasoning: list[str] = []
    refusal: list[str] = []
    annotations: list[dict[str, Any]] = []
    logprobs: list[dict[str, Any]] = []
    legacy: dict[str, str] = {}
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    total: dict[str, Any] | None = None
    for data in chunks:
        total = data.get("usage") or total
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            content.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning_content") or "")
            refusal.append(delta.get("refusal") or "")
            annotations.extend(delta.get("annotations") or ())
            logprobs.extend((choice.get("logprobs") or {}).get("content") or ())
            for key, value in (delta.get("function_call") or {}).items():
                legacy[key] = legacy.get(key, "") + value
            for frag in delta.get("tool_calls") or ():
                call = calls.setdefault(
                    frag["index"], {"id": frag.get("id"), "type": "function", "function": {"name": "", "arguments": ""}}
                )
                function = frag.get("function") or {}
                call["function"]["name"] += function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None, "refusal": None}
    if any(reasoning):
        message["reasoning_content"] = "".join(reasoning)
    if any(refusal):
        message["refusal"] = "".join(refusal)
    if annotations:
        message["annotations"] = annotations
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    if legacy:
        message["function_call"] = legacy
    choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    if logprobs:
        choice["logprobs"] = {"content": logprobs, "refusal": None}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "fake-chat",
        "choices": [choice],
        "usage": total,
    }


# -- validation ----------------------------------------------------------------------------------


def _check_content(content: Any, role: str, where: str) -> str | None:
    if isinstance(content, str):
        return None
    if content is None:
        return None if role == "assistant" else f"{where}.content: must not be null"
    if not isinstance(content, list):
        return f"{where}.content: must be a string or an array of parts"
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and set(part) == {"type", "text"} and isinstance(part["text"], str):
            continue
        if kind == "image_url" and role == "user" and set(part) == {"type", "image_url"}:
            image = part["image_url"]
            if isinstance(image, dict) and isinstance(image.get("url"), str) and set(image) <= {"url", "detail"}:
                continue
        if kind == "file" and role == "user" and set(part) == {"type", "file"}:
            file = part["file"]
            if (
                isinstance(file, dict)
                and set(file) <= {"file_data", "file_id", "filename"}
                and all(isinstance(v, str) and v for v in file.values())
                and ("file_data" in file or "file_id" in file)
            ):
                continue
        if kind == "input_audio" and role == "user" and set(part) == {"type", "input_audio"}:
            audio = part["input_audio"]
            if isinstance(audio, dict) and set(audio) == {"data", "format"} and audio["format"] in _AUDIO_FORMATS:
                continue
        return f"{where}.content[{j}]: invalid content part for role {role!r}"
    return None


def validate_chat_request(
    body: Any,
    *,
    strict_roles: bool = False,
    require_reasoning_content: bool = False,
    max_tokens_field: str | None = None,
    extra_fields: frozenset[str] = frozenset(),
    native_allowed_tools: bool = False,
) -> tuple[int, str] | None:
    """Why a real upstream would reject ``body`` (``(status, message)``), or ``None`` when it is valid."""
    if not isinstance(body, dict):
        return 400, "the body must be a JSON object"
    unknown = sorted(set(body) - KNOWN_FIELDS - extra_fields)
    if unknown:
        return 400, f"Unrecognized request argument supplied: {unknown[0]}"
    for field_name, values in OPENAI_FIELDS.items():
        value = body.get(field_name)
        if field_name in body and (not isinstance(value, str) or (values is not None and value not in values)):
            return 400, f"Invalid value for '{field_name}': {value!r}"
    if "top_logprobs" in body:
        top = body["top_logprobs"]
        if body.get("logprobs") is not True:
            return 400, "Invalid value for 'top_logprobs': logprobs must be set to true when top_logprobs is used."
        if not isinstance(top, int) or not 0 <= top <= 20:
            return 400, f"Invalid 'top_logprobs': {top!r} (expected an integer from 0 to 20)"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return 400, "you must provide a model parameter"
    if max_tokens_field is not None:
        other = "max_completion_tokens" if max_tokens_field == "max_tokens" else "max_tokens"
        if other in body:
            return 400, f"Unsupported parameter: '{other}' is not supported with this model. Use '{max_tokens_field}'."
    tool_names: set[str] = set()
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            return 400, "'tools' must be a non-empty array"
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or tool.get("type") != "function" or set(tool) != {"type", "function"}:
                return 400, f"tools[{i}]: must be {{type: function, function: {{...}}}}"
            if set(function) - {"name", "description", "parameters", "strict"}:
                return 400, f"tools[{i}].function: unknown field"
            name = function.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                return (
                    400,
                    f"Invalid 'tools[{i}].function.name': string does not match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
                )
            if name in tool_names:
                return 400, f"tools: duplicate function name {name!r}"
            tool_names.add(name)
            if not isinstance(function.get("parameters", {}), dict):
                return 400, f"tools[{i}].function.parameters must be an object"
    for field_name in ("tool_choice", "parallel_tool_calls"):
        if field_name in body and not tool_names:
            return 400, f"Invalid value for '{field_name}': only allowed when 'tools' are specified."
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if not native_allowed_tools:
            return 400, "Invalid value for 'tool_choice': unknown variant `allowed_tools`"
        if set(choice) != {"type", "allowed_tools"} or not isinstance(allowed, dict):
            return 400, "Invalid 'tool_choice': allowed_tools needs an allowed_tools object"
        entries = allowed.get("tools")
        if allowed.get("mode") not in ("auto", "required") or not isinstance(entries, list) or not entries:
            return 400, "Invalid 'tool_choice.allowed_tools': needs a mode (auto, required) and a non-empty tools list"
        for entry in entries:
            name = (entry.get("function") or {}).get("name") if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or entry.get("type") != "function" or name not in tool_names:
                return 400, f"Invalid 'tool_choice.allowed_tools.tools': {entry!r} is not among the tools"
    elif isinstance(choice, dict):
        named = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if named not in tool_names:
            return 400, f"Invalid value for 'tool_choice': function {named!r} is not among the tools"
    elif choice is not None and choice not in ("auto", "none", "required"):
        return 400, f"Invalid value for 'tool_choice': {choice!r}"
    if "stream_options" in body and body.get("stream") is not True:
        return 400, "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    if "reasoning_effort" in body and body["reasoning_effort"] not in _EFFORTS:
        return 400, f"Invalid value for 'reasoning_effort': {body['reasoning_effort']!r}"
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
            return 400, "Invalid 'response_format'"
        schema = fmt.get("json_schema")
        if fmt["type"] == "json_schema" and not (
            isinstance(schema, dict) and schema.get("name") and "schema" in schema
        ):
            return 400, "response_format.json_schema needs a name and a schema"

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 400, "'messages' must be a non-empty array"
    pending: list[str] = []
    seen_ids: set[str] = set()
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        allowed_roles = ("system", "user", "assistant", "tool") if strict_roles else tuple(_MESSAGE_FIELDS)
        if role not in allowed_roles:
            variants = ", ".join(f"`{r}`" for r in allowed_roles)
            return 422, (
                "Failed to deserialize the JSON body into the target type: "
                f"{where}.role: unknown variant `{role}`, expected {variants}"
            )
        assert isinstance(message, dict) and isinstance(role, str)
        extra = set(message) - _MESSAGE_FIELDS[role]
        if extra:
            return 400, f"Additional properties are not allowed ({sorted(extra)[0]!r} was unexpected) in {where}"
        if pending and role != "tool":
            return 400, (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}"
            )
        problem = _check_content(message.get("content"), role, where)
        if problem:
            return 400, problem
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                return 400, (
                    f"Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    f"with 'tool_calls' ({where}, tool_call_id {call_id!r})."
                )
            pending.remove(call_id)
            continue
        calls = message.get("tool_calls")
        if calls is not None:
            if role != "assistant" or not isinstance(calls, list) or not calls:
                return 400, f"{where}.tool_calls must be a non-empty array on an assistant message"
            if require_reasoning_content and not message.get("reasoning_content"):
                return 400, (
                    f"Missing `reasoning_content` field in the assistant message at message index {i}. "
                    "The reasoning_content in the thinking mode must be passed back to the API."
                )
            for j, call in enumerate(calls):
                function = call.get("function") if isinstance(call, dict) else None
                if (
                    not isinstance(function, dict)
                    or call.get("type") != "function"
                    or not isinstance(call.get("id"), str)
                ):
                    return 400, f"{where}.tool_calls[{j}] is malformed"
                if not isinstance(function.get("name"), str) or not _TOOL_NAME.match(function["name"]):
                    return (
                        400,
                        f"Invalid '{where}.tool_calls[{j}].function.name': does not match '^[a-zA-Z0-9_-]{{1,64}}$'",
                    )
                try:
                    parsed = orjson.loads(function.get("arguments", ""))
                except orjson.JSONDecodeError:
                    parsed = None
                if not isinstance(parsed, dict):
                    return 400, f"{where}.tool_calls[{j}].function.arguments must be a JSON object string"
                if call["id"] in seen_ids:
                    return 400, f"Duplicate tool_call id {call['id']!r}"
                seen_ids.add(call["id"])
                pending.append(call["id"])
        elif role == "assistant" and message.get("content") is None:
            return 400, f"{where}: an assistant message needs content or tool_calls"
    if pending:
        return 400, (
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}"
        )
    return None


# -- scripts -------------------------------------------------------------------------------------


def _last_tool_output(body: dict[str, Any]) -> str | None:
    last = body["messages"][-1]
    return str(last.get("content")) if last.get("role") == "tool" else None


def shell_script(body: dict[str, Any]) -> Reply | tuple[int, dict[str, Any]]:
    """Turn 1: run a shell command that writes a marker file; turn 2 (seeing its output): say so."""
    output = _last_tool_output(body)
    if output is not None:
        line = output.strip().splitlines()[-1] if output.strip() else "empty"
        return text_reply(f"The command finished. Output was: {line}", reasoning="The tool ran; report it.")
    names = {t["function"]["name"] for t in body.get("tools") or ()}
    if "exec_command" in names:
        cmd = "echo ccx-chat-$((6*7)) > ccx_chat_marker.txt; echo ccx-chat-$((6*7))"
        return tool_reply([("exec_command", {"cmd": cmd})], reasoning="I should run the command.")
    return text_reply("pong")


#: What a model in Codex's code mode (gpt-6*) writes into ``exec``: JavaScript calling the shell.
CODE_MODE_JS = (
    'const r = await tools.exec_command({cmd: "echo ccx-code-$((6*7)) > ccx_code_marker.txt; echo ccx-code-$((6*7))"});\n'
    "text(r);"
)


def code_mode_script(body: dict[str, Any]) -> Reply | tuple[int, dict[str, Any]]:
    """Turn 1: call the ``exec`` tool of Codex's ``functions`` namespace (offered as ``functions__exec``)
    with JavaScript that runs a shell command; turn 2 (seeing its output): say so."""
    output = _last_tool_output(body)
    if output is not None:
        return text_reply(f"The script ran: {output.strip()[-300:]}")
    names = {t["function"]["name"] for t in body.get("tools") or ()}
    if "functions__exec" in names:
        return tool_reply([("functions__exec", {"input": CODE_MODE_JS})], reasoning="I will use exec.")
    return text_reply("no exec tool was offered")


PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n"


def apply_patch_script(body: dict[str, Any]) -> Reply | tuple[int, dict[str, Any]]:
    """Turn 1: call the (freeform) ``apply_patch`` tool to add hello.txt; turn 2: report."""
    output = _last_tool_output(body)
    if output is not None:
        return text_reply("Created hello.txt.")
    return tool_reply([("apply_patch", {"input": PATCH})], reasoning="I will add the file.")


# -- the app -------------------------------------------------------------------------------------


@dataclass
class FakeChatUpstream:
    """The fake as an ASGI app (see the module docstring). ``delay`` sleeps between chunks."""

    keys: tuple[str, ...] = ("upstream-key",)
    script: Script = shell_script
    strict_roles: bool = False
    require_reasoning_content: bool = False
    max_tokens_field: str | None = None
    extra_fields: frozenset[str] = frozenset()
    native_allowed_tools: bool = False
    delay: float = 0.0
    requests: list[Recorded] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers, raw = await read_request(scope, receive)
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await send_json(send, *error(400, "We could not parse the JSON body of your request."))
            return
        self.requests.append(Recorded(scope["path"], headers, body))
        if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
            await send_json(send, *error(404, f"Unknown path {scope['path']}", code="not_found"))
            return
        if headers.get("authorization") not in {f"Bearer {k}" for k in self.keys}:
            await send_json(send, *error(401, "Incorrect API key provided.", code="invalid_api_key"))
            return
        problem = validate_chat_request(
            body,
            strict_roles=self.strict_roles,
            require_reasoning_content=self.require_reasoning_content,
            max_tokens_field=self.max_tokens_field,
            extra_fields=self.extra_fields,
            native_allowed_tools=self.native_allowed_tools,
        )
        if problem is not None:
            await send_json(send, *error(*problem))
            return
        reply = self.script(body)
        if isinstance(reply, tuple):
            await send_json(send, *reply)
            return
        if not body.get("stream"):
            await send_json(send, 200, completion_from_chunks(reply.chunks))
            return
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for data in reply.chunks:
            if "usage" in data and not include_usage:
                continue  # real upstreams send usage only when asked
            if self.delay:
                await asyncio.sleep(self.delay)
            frame = b"data: " + orjson.dumps(data) + b"\n\n"
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        tail = b"data: [DONE]\n\n" if reply.done else b""
        await send({"type": "http.response.body", "body": tail, "more_body": False})
