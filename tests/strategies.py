"""Hypothesis strategies and harnesses shared by the property tests.

- :func:`responses_requests`: valid Responses request bodies in the shapes Codex and the SDKs send
  (every converter must turn each into an upstream request its strict fake accepts, or a clear 400).
- :func:`stream_ops` / :func:`drive`: random but legal operation sequences for
  :class:`~ccx_asgi.convert.events.ResponseStream`.
- :func:`responses_streams`: valid native Responses event sequences (built by driving a stream).
- :func:`broken` + :func:`wire`: a broken upstream: any list of event dicts is reordered, dropped,
  duplicated, renumbered, mixed with unknown event types, non-object JSON and malformed JSON lines.
- :func:`run_translator`: feeds such a sequence through a translator exactly the way
  ``ChannelEndpoint`` does (JSON-parse each data line, skip what is not an object, ``finish()``).

To cover a new translator (Chat, Claude): write a strategy of its upstream's valid chunk dicts, then
``run_translator(make_translator(), draw(wire(broken(chunks))))`` and check the result with
``tests.sdk.validate_events`` (a converting translator builds every event itself, so the whole
output must validate, whatever arrived).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from typing import Any, Literal

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.types import Event

__all__ = [
    "TRANSLATOR_REQUEST",
    "UPSTREAM_TOOL_NAMES",
    "broken",
    "chat_chunks",
    "claude_events",
    "drive",
    "mangled",
    "property_settings",
    "responses_requests",
    "responses_streams",
    "run_translator",
    "sse_bytes",
    "stream_ops",
    "wire",
]


def property_settings(max_examples: int) -> settings:
    """Settings for the property suites: no deadline, and derandomized so CI runs the same examples
    every time (a failure is reproducible, never flaky). ``CCX_HYPOTHESIS_RANDOM=1`` draws fresh
    examples instead, for bug hunting."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        derandomize=not os.environ.get("CCX_HYPOTHESIS_RANDOM"),
    )


# Text that exercises JSON escaping, SSE framing characters and multi-byte UTF-8.
_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
_ALPHABET = st.characters(codec="utf-8", exclude_categories=_SURROGATES)
text = st.text(_ALPHABET, max_size=40)
_tricky = st.sampled_from(["\n", "\r\n", "data: x\n\n", '"', "\\", "\u2028", "é", "🙂", "\x00", "event: y"])
texts = st.one_of(text, st.lists(st.one_of(text, _tricky), max_size=6).map("".join))
names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
ids = st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True)


# -- requests ------------------------------------------------------------------------------------

_IMAGE_URLS = st.sampled_from(
    [
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJRU5ErkJggg==",
        "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ==",
        "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=",  # a type Claude refuses: must be dropped, not sent
        "https://example.com/cat.png",
    ]
)
_images = st.builds(
    lambda url, detail: {"type": "input_image", "image_url": url, **({"detail": detail} if detail else {})},
    _IMAGE_URLS,
    st.sampled_from([None, "low", "high", "auto"]),
)


def _message(role: str) -> st.SearchStrategy[dict[str, Any]]:
    part = "output_text" if role == "assistant" else "input_text"
    text_part = st.builds(lambda t: {"type": part, "text": t}, texts)
    parts = st.one_of(text_part, _images) if role == "user" else text_part
    content = st.one_of(texts, st.lists(parts, min_size=1, max_size=3))
    return st.builds(lambda c: {"type": "message", "role": role, "content": c}, content)


_messages = st.one_of(*(_message(role) for role in ("user", "assistant", "system", "developer")))


@st.composite
def _reasoning(draw: st.DrawFn) -> dict[str, Any]:
    """A replayed reasoning item: summary and maybe raw content; ``encrypted_content`` absent, an
    opaque OpenAI-style string, or a signed Claude thinking / redacted block (as a Claude channel
    would have written it)."""
    from ccx_asgi.convert.claude import encode_reasoning
    from tests.fakes.claude_upstream import redacted_data, sign

    item: dict[str, Any] = {
        "type": "reasoning",
        "id": "rs_" + draw(ids),
        "summary": draw(st.lists(st.builds(lambda t: {"type": "summary_text", "text": t}, texts), max_size=2)),
    }
    if draw(st.booleans()):
        item["content"] = draw(
            st.one_of(
                st.none(), st.lists(st.builds(lambda t: {"type": "reasoning_text", "text": t}, texts), max_size=2)
            )
        )
    which = draw(st.sampled_from(["none", "opaque", "thinking", "redacted", "broken"]))
    if which == "opaque":
        item["encrypted_content"] = "gAAAAB" + draw(ids)
    elif which == "thinking":
        thought = draw(texts.filter(str.strip))
        item["encrypted_content"] = encode_reasoning(
            {"type": "thinking", "thinking": thought, "signature": sign(thought)}
        )
    elif which == "redacted":
        item["encrypted_content"] = encode_reasoning({"type": "redacted_thinking", "data": redacted_data()})
    elif which == "broken":
        item["encrypted_content"] = "ccx1.claude." + draw(st.text(max_size=12))
    return item


_tool_output = st.one_of(
    texts,
    st.lists(st.one_of(st.builds(lambda t: {"type": "input_text", "text": t}, texts), _images), min_size=0, max_size=3),
)


@st.composite
def _tool_turn(draw: st.DrawFn, *, repairable: bool = False) -> list[dict[str, Any]]:
    """Tool calls and their outputs, paired by ``call_id`` as every upstream requires.

    One to three calls (parallel calls are answered after the whole group); with ``repairable``,
    a call may lack its output (an interrupted turn) and an output may lack its call (an orphan),
    which the converters must repair, not forward.
    """
    calls: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 3))):
        call_id = "call_" + draw(ids)
        kind = draw(st.sampled_from(["function", "namespaced", "custom"]))
        if kind == "custom":
            call: dict[str, Any] = {"type": "custom_tool_call", "call_id": call_id, "name": draw(names)}
            call["input"] = draw(texts)
            output: dict[str, Any] = {"type": "custom_tool_call_output", "call_id": call_id, "output": draw(texts)}
        else:
            arguments = orjson.dumps(
                draw(st.dictionaries(names, st.one_of(text, st.integers(-(2**53), 2**53)), max_size=3))
            ).decode()
            call = {"type": "function_call", "call_id": call_id, "name": draw(names), "arguments": arguments}
            if kind == "namespaced":
                call["namespace"] = draw(st.sampled_from(["multi_agent_v1", "mcp__files"]))
            output = {"type": "function_call_output", "call_id": call_id, "output": draw(_tool_output)}
        if draw(st.booleans()):
            call["id"] = ("fc_" if call["type"] == "function_call" else "ctc_") + draw(ids)
            call["status"] = "completed"
        calls.append(call)
        if repairable and draw(st.integers(0, 4)) == 0:
            continue  # interrupted: the output never arrived
        outputs.append(output)
    if repairable and draw(st.integers(0, 4)) == 0:
        outputs.append({"type": "function_call_output", "call_id": "call_orphan_" + draw(ids), "output": draw(texts)})
    before = [draw(_reasoning())] if draw(st.booleans()) else []
    return [*before, *calls, *draw(st.permutations(outputs))]


@st.composite
def _inputs(draw: st.DrawFn, *, repairable: bool = False) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    pieces = st.one_of(_messages.map(lambda m: [m]), _reasoning().map(lambda r: [r]), _tool_turn(repairable=repairable))
    for chunk in draw(st.lists(pieces, min_size=1, max_size=6)):
        items.extend(chunk)
    return items


_schema = st.sampled_from(
    [
        {"type": "object", "properties": {"x": {"type": "string"}}},
        {"type": "object", "properties": {}, "additionalProperties": False},
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    ]
)
_function_tools = st.builds(
    lambda name, description, strict, parameters: {
        "type": "function",
        "name": name,
        "description": description,
        "strict": strict,
        "parameters": parameters,
    },
    names,
    text,
    st.booleans(),
    _schema,
)
_custom_tools = st.one_of(
    st.builds(lambda name: {"type": "custom", "name": name, "description": "raw text tool"}, names),
    st.builds(
        lambda name: {
            "type": "custom",
            "name": name,
            "description": "Use the `apply_patch` tool to edit files.",
            "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch" /.+/'},
        },
        names,
    ),
)
_namespace_tools = st.builds(
    lambda name, members: {"type": "namespace", "name": name, "description": "a group", "tools": members},
    st.sampled_from(["multi_agent_v1", "mcp__files"]),
    st.lists(_function_tools, min_size=1, max_size=3, unique_by=lambda t: t["name"]),
)
_hosted_tools = st.sampled_from(
    [{"type": "web_search"}, {"type": "web_search", "external_web_access": False}, {"type": "tool_search"}]
)


@st.composite
def _tool_choice(draw: st.DrawFn, tools: list[dict[str, Any]]) -> Any:
    named = [t for t in tools if t["type"] in ("function", "custom")]
    options: list[Any] = ["auto", "none", "required", {"type": "allowed_tools", "mode": "auto", "tools": []}]
    options.append({"type": "allowed_tools", "mode": "required", "tools": []})
    options.extend({"type": t["type"], "name": t["name"]} for t in named)
    options.extend(
        {"type": "function", "name": m["name"], "namespace": t["name"]}
        for t in tools
        if t["type"] == "namespace"
        for m in t["tools"]
    )
    options.append({"type": "web_search"})
    return draw(st.sampled_from(options))


_text_formats = st.sampled_from(
    [
        {"type": "text"},
        {"type": "json_object"},
        {"type": "json_schema", "name": "answer", "schema": {"type": "object", "properties": {}}, "strict": True},
    ]
)


@st.composite
def responses_requests(draw: st.DrawFn, *, stream: bool | None = None, repairable: bool = False) -> dict[str, Any]:
    """A valid Responses request body (``stream`` fixed when given).

    Covers what Codex sends (developer/user/assistant messages with text and images, reasoning items
    with and without ``encrypted_content``, function/custom/namespaced calls with string and array
    outputs, function/custom/namespace/hosted tools, every ``tool_choice`` shape, reasoning effort,
    ``text.format``, ``max_output_tokens``). ``repairable`` adds interrupted calls and orphan outputs:
    histories a converter must repair (a native Responses upstream would refuse them).
    """
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["gpt-test", "codex-mini", "m"])),
        "input": draw(st.one_of(texts.filter(bool), _inputs(repairable=repairable))),
        "stream": draw(st.booleans()) if stream is None else stream,
    }
    tool_list = st.lists(
        st.one_of(_function_tools, _custom_tools, _namespace_tools, _hosted_tools),
        max_size=4,
        unique_by=lambda t: t.get("name", t["type"]),
    )
    optional = {
        "instructions": texts,
        "tools": tool_list,
        "tool_choice": st.just(None),  # drawn below, from the tools actually offered
        "parallel_tool_calls": st.booleans(),
        "reasoning": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "effort": st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh"]),
                    "summary": st.sampled_from(["auto", "concise", "detailed"]),
                },
            ),
        ),
        "store": st.booleans(),
        "include": st.just(["reasoning.encrypted_content"]),
        "prompt_cache_key": ids,
        "text": st.one_of(
            st.just({"verbosity": "low"}),
            st.builds(lambda f: {"format": f}, _text_formats),
            st.builds(lambda f: {"format": f, "verbosity": "medium"}, _text_formats),
        ),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "max_output_tokens": st.integers(16, 100_000),
        "metadata": st.dictionaries(names, text, max_size=3),
    }
    for key in draw(st.sets(st.sampled_from(sorted(optional)))):
        body[key] = draw(optional[key])
    if "tool_choice" in body:
        body["tool_choice"] = draw(_tool_choice(body.get("tools") or []))
    return body


# -- ResponseStream operations ---------------------------------------------------------------


@st.composite
def stream_ops(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """A legal operation sequence: deltas and closes only touch items that are open at that point."""
    ops: list[tuple[Any, ...]] = []
    open_items: list[int] = []
    opened = 0
    for _ in range(draw(st.integers(0, 25))):
        choices = ["open", "keepalive"] + (["delta", "delta", "close"] if open_items else [])
        op = draw(st.sampled_from(choices))
        if op == "open":
            kind = draw(st.sampled_from(["message", "reasoning", "function_call", "custom_tool_call"]))
            ops.append(("open", kind, draw(names)))
            open_items.append(opened)
            opened += 1
        elif op == "delta":
            ops.append(("delta", draw(st.sampled_from(open_items)), draw(texts)))
        elif op == "close":
            index = draw(st.sampled_from(open_items))
            open_items.remove(index)
            ops.append(("close", index))
        else:
            ops.append(("keepalive",))
    ops.append(draw(st.sampled_from([("complete",), ("incomplete", "max_output_tokens"), ("fail", "boom")])))
    return ops


def drive(stream: ResponseStream, ops: Iterable[tuple[Any, ...]]) -> list[Event]:
    """Apply ``ops`` to ``stream`` and return every event it produced."""
    for op in ops:
        name = op[0]
        if name == "open":
            stream.open_item(op[1], name=op[2], call_id="call_" + op[2])
        elif name == "delta":
            stream.delta(op[1], op[2])
        elif name == "close":
            stream.close_item(op[1])
        elif name == "keepalive":
            stream.keepalive()
        elif name == "complete":
            stream.complete(usage_dict(3, 4, cached_tokens=1))
        elif name == "incomplete":
            stream.incomplete(op[1])
        else:
            stream.fail(op[1])
    return stream.take()


def responses_streams() -> st.SearchStrategy[list[Event]]:
    """Complete, valid native Responses event sequences."""
    return stream_ops().map(lambda ops: drive(ResponseStream("m"), ops))


# -- a broken upstream -----------------------------------------------------------------------

#: A wire item: a parsed event to be serialised, or a raw data line sent as it is.
Wire = dict[str, Any] | str

_unknown_events = st.builds(
    lambda kind, extra: {"type": kind, **extra},
    st.one_of(st.sampled_from(["response.future_thing", "ping", "", "response.output_text.delta"]), text),
    st.dictionaries(names, st.one_of(text, st.integers(-(2**63), 2**63 - 1), st.none()), max_size=3),
)
_garbage_lines = st.one_of(
    st.sampled_from(["{", "[DONE]", "null", "[]", "42", '"text"', '{"type": 7}', "{'single': 'quotes'}", ""]),
    text,
)


@st.composite
def broken(draw: st.DrawFn, events: st.SearchStrategy[list[Event]]) -> list[Wire]:
    """``events`` as a broken upstream might send them."""
    sequence: list[Wire] = [copy.deepcopy(e) for e in draw(events)]
    if draw(st.booleans()):
        sequence = draw(st.permutations(sequence))
    for _ in range(draw(st.integers(0, 4))):
        if not sequence:
            break
        index = draw(st.integers(0, len(sequence) - 1))
        action = draw(st.sampled_from(["drop", "duplicate", "renumber", "unnumber", "unknown", "garbage"]))
        item = sequence[index]
        if action == "drop":
            del sequence[index]
        elif action == "duplicate":
            sequence.insert(index, copy.deepcopy(item))
        elif action == "renumber" and isinstance(item, dict):
            item["sequence_number"] = draw(st.one_of(st.integers(-5, 50), st.text(max_size=3), st.none()))
        elif action == "unnumber" and isinstance(item, dict):
            item.pop("sequence_number", None)
        elif action == "unknown":
            sequence.insert(index, draw(_unknown_events))
        elif action == "garbage":
            sequence.insert(index, draw(_garbage_lines))
    if draw(st.booleans()):
        sequence = sequence[: draw(st.integers(0, len(sequence)))]  # the upstream hung up
    return sequence


def wire(items: list[Wire]) -> list[str]:
    """SSE data fields for ``items`` (dicts serialised, raw lines as they are)."""
    return [orjson.dumps(item).decode() if isinstance(item, dict) else item for item in items]


def run_translator(translator: Any, data_lines: Iterable[str], *, finish: bool = True) -> list[Event]:
    """Feed data lines through ``translator`` the way ``ChannelEndpoint`` does, then ``finish()``."""
    out: list[Event] = []
    for data in data_lines:
        if not data or data == "[DONE]":
            continue
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(parsed, dict):
            out.extend(translator.feed(parsed))
    if finish:
        out.extend(translator.finish())
    return out


def sse_bytes(events: Iterable[Event], *, crlf: bool = False, noise: bool = False) -> bytes:
    """An SSE body for ``events``; ``noise`` adds comments, ids and retry lines between them."""
    newline = b"\r\n" if crlf else b"\n"
    out = []
    for event in events:
        if noise:
            out.append(b": keepalive" + newline + b"id: 7" + newline + b"retry: 10" + newline)
        out.append(b"event: " + str(event["type"]).encode() + newline)
        out.append(b"data: " + orjson.dumps(event) + newline + newline)
    return b"".join(out)


# -- converted upstreams: Chat Completions chunks and Claude Messages events ----------------------

#: The client request the translator properties use: one tool of every kind a converter maps back.
TRANSLATOR_REQUEST: dict[str, Any] = {
    "model": "m",
    "tool_choice": "auto",
    "tools": [
        {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}},
        {"type": "custom", "name": "apply_patch", "description": "freeform"},
        {
            "type": "namespace",
            "name": "multi_agent_v1",
            "description": "agents",
            "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}],
        },
        {"type": "web_search"},
    ],
}
#: Upstream tool names: a function, a custom tool, a namespaced function, and one never offered.
UPSTREAM_TOOL_NAMES = ("exec_command", "apply_patch", "multi_agent_v1__spawn_agent", "not_offered")


@st.composite
def _pieces(draw: st.DrawFn, whole: str) -> list[str]:
    """``whole`` cut into fragments at random points (how upstreams stream text and JSON)."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(whole) - 1)), max_size=4))) if len(whole) > 1 else []
    return [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True) if whole[a:b]]


@st.composite
def _tool_arguments(draw: st.DrawFn, name: str) -> str:
    if name == "apply_patch":
        return orjson.dumps({"input": draw(texts)}).decode()
    return orjson.dumps(draw(st.dictionaries(names, st.one_of(text, st.integers(-1000, 1000)), max_size=3))).decode()


def _chat_chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
        **extra,
    }


@st.composite
def chat_chunks(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A valid Chat Completions stream: reasoning, text, parallel tool calls with fragmented
    arguments (interleaved across calls), a finish reason (or none: a cut stream) and usage."""
    chunks: list[dict[str, Any]] = []
    if draw(st.booleans()):
        chunks.append(_chat_chunk({"role": "assistant", "content": ""}))
    key = draw(st.sampled_from(["reasoning_content", "reasoning"]))
    chunks += [_chat_chunk({key: piece}) for piece in draw(_pieces(draw(texts)))]
    chunks += [_chat_chunk({"content": piece}) for piece in draw(_pieces(draw(texts)))]
    fragments: list[list[dict[str, Any]]] = []
    for index in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(UPSTREAM_TOOL_NAMES))
        call_id = f"call_{index}_{draw(ids)}"
        pieces = draw(_pieces(draw(_tool_arguments(name))))
        first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        fragments.append([first, *({"index": index, "function": {"arguments": p}} for p in pieces)])
    while any(fragments):
        # Parallel calls: fragments of different calls interleave, some chunks carry several.
        live = [f for f in fragments if f]
        batch = [f.pop(0) for f in draw(st.lists(st.sampled_from(live), min_size=1, max_size=2, unique_by=id))]
        chunks.append(_chat_chunk({"tool_calls": batch}))
    finish = draw(st.sampled_from([None, "stop", "length", "tool_calls", "content_filter", "function_call"]))
    if finish is not None:
        chunks.append(_chat_chunk({}, finish))
    if draw(st.booleans()):
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
        chunks.append({**_chat_chunk(), "choices": [], "usage": usage})
    return chunks


@st.composite
def claude_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A valid Claude Messages stream: thinking (signed or redacted), text and tool_use blocks with
    fragmented deltas, pings, a stop reason, and ``message_stop`` (either may be missing: a cut
    stream), or an ``error`` event mid-stream."""
    from tests.fakes.claude_upstream import redacted_data, sign

    usage = {"input_tokens": 10, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2, "output_tokens": 1}
    message = {"id": "msg_x", "type": "message", "role": "assistant", "model": "claude", "content": []}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {**message, "stop_reason": None, "usage": usage}}
    ]
    kinds = draw(st.lists(st.sampled_from(["text", "thinking", "redacted_thinking", "tool_use"]), max_size=5))
    for index, kind in enumerate(kinds):
        if draw(st.integers(0, 5)) == 0:
            events.append({"type": "ping"})
        if kind == "text":
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            )
            for piece in draw(_pieces(draw(texts))):
                events.append(
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
                )
        elif kind == "thinking":
            thought = draw(texts)
            start = {"type": "thinking", "thinking": "", "signature": ""}
            events.append({"type": "content_block_start", "index": index, "content_block": start})
            for piece in draw(_pieces(thought)):
                delta = {"type": "thinking_delta", "thinking": piece}
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
            delta = {"type": "signature_delta", "signature": sign(thought)}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        elif kind == "redacted_thinking":
            block: dict[str, Any] = {"type": "redacted_thinking", "data": redacted_data()}
            events.append({"type": "content_block_start", "index": index, "content_block": block})
        else:
            name = draw(st.sampled_from(UPSTREAM_TOOL_NAMES))
            block = {"type": "tool_use", "id": f"toolu_{index}_{draw(ids)}", "name": name, "input": {}}
            events.append({"type": "content_block_start", "index": index, "content_block": block})
            for piece in draw(_pieces(draw(_tool_arguments(name)))):
                delta = {"type": "input_json_delta", "partial_json": piece}
                events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    ending = draw(st.sampled_from(["stop", "stop", "no_message_stop", "cut", "error"]))
    if ending == "error":
        events.append({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        return events
    if ending != "cut":
        reason = draw(st.sampled_from(["end_turn", "max_tokens", "tool_use", "stop_sequence", "refusal", "pause_turn"]))
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": None},
                "usage": {"output_tokens": 9},
            }
        )
    if ending == "stop":
        events.append({"type": "message_stop"})
    return events


_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.text(max_size=3),
    st.just([]),
    st.just({}),
    st.just([{"index": "0"}]),
    st.just({"type": "text_delta"}),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside ``value`` (dicts and lists)."""
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    out = []
    for key, child in items:
        out.append((*prefix, key))
        out.extend(_paths(child, (*prefix, key)))
    return out


@st.composite
def mangled(draw: st.DrawFn, events: st.SearchStrategy[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``events`` with a few values anywhere inside replaced by junk of the wrong type (a broken
    upstream that sends ``"choices": 7``, ``"index": "0"``, ``"arguments": null`` …), or removed."""
    sequence = [copy.deepcopy(e) for e in draw(events)]
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(sequence)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = sequence
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(draw(_junk))  # never share (and later mutate) a st.just value
    return [e for e in sequence if isinstance(e, dict)]
