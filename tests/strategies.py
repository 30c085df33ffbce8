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
from collections.abc import Iterable
from typing import Any

import orjson
from hypothesis import strategies as st

from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.types import Event

__all__ = [
    "broken",
    "drive",
    "responses_requests",
    "responses_streams",
    "run_translator",
    "sse_bytes",
    "stream_ops",
    "wire",
]

# Text that exercises JSON escaping, SSE framing characters and multi-byte UTF-8.
_ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",))
text = st.text(_ALPHABET, max_size=40)
_tricky = st.sampled_from(["\n", "\r\n", "data: x\n\n", '"', "\\", "\u2028", "é", "🙂", "\x00", "event: y"])
texts = st.one_of(text, st.lists(st.one_of(text, _tricky), max_size=6).map("".join))
names = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
ids = st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True)


# -- requests ------------------------------------------------------------------------------------


def _message(role: str) -> st.SearchStrategy[dict[str, Any]]:
    part = "output_text" if role == "assistant" else "input_text"
    content = st.one_of(texts, st.lists(st.builds(lambda t: {"type": part, "text": t}, texts), min_size=1, max_size=3))
    return st.builds(lambda c: {"type": "message", "role": role, "content": c}, content)


_messages = st.one_of(*(_message(role) for role in ("user", "assistant", "system", "developer")))


@st.composite
def _tool_turn(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A tool call and its output, paired by ``call_id`` as every upstream requires."""
    call_id = "call_" + draw(ids)
    if draw(st.booleans()):
        arguments = orjson.dumps(draw(st.dictionaries(names, st.one_of(text, st.integers()), max_size=3))).decode()
        call = {"type": "function_call", "call_id": call_id, "name": draw(names), "arguments": arguments}
        output: Any = draw(st.one_of(texts, st.lists(st.builds(lambda t: {"type": "input_text", "text": t}, texts))))
        return [call, {"type": "function_call_output", "call_id": call_id, "output": output}]
    call = {"type": "custom_tool_call", "call_id": call_id, "name": draw(names), "input": draw(texts)}
    return [call, {"type": "custom_tool_call_output", "call_id": call_id, "output": draw(texts)}]


@st.composite
def _inputs(draw: st.DrawFn) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for chunk in draw(st.lists(st.one_of(_messages.map(lambda m: [m]), _tool_turn()), min_size=1, max_size=6)):
        items.extend(chunk)
    return items


_function_tools = st.builds(
    lambda name, description: {
        "type": "function",
        "name": name,
        "description": description,
        "strict": False,
        "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
    },
    names,
    text,
)
_custom_tools = st.builds(lambda name: {"type": "custom", "name": name, "description": "raw text tool"}, names)


@st.composite
def responses_requests(draw: st.DrawFn, *, stream: bool | None = None) -> dict[str, Any]:
    """A valid Responses request body (``stream`` fixed when given)."""
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(["gpt-test", "codex-mini", "m"])),
        "input": draw(st.one_of(texts.filter(bool), _inputs())),
        "stream": draw(st.booleans()) if stream is None else stream,
    }
    optional = {
        "instructions": texts,
        "tools": st.lists(st.one_of(_function_tools, _custom_tools), max_size=3, unique_by=lambda t: t["name"]),
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "parallel_tool_calls": st.booleans(),
        "reasoning": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {}, optional={"effort": st.sampled_from(["low", "medium", "high"]), "summary": st.just("auto")}
            ),
        ),
        "store": st.booleans(),
        "include": st.just(["reasoning.encrypted_content"]),
        "prompt_cache_key": ids,
        "text": st.just({"verbosity": "low"}),
        "temperature": st.floats(0, 2),
        "max_output_tokens": st.integers(16, 100_000),
        "metadata": st.dictionaries(names, text, max_size=3),
    }
    for key in draw(st.sets(st.sampled_from(sorted(optional)))):
        body[key] = draw(optional[key])
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
