"""Protocol fidelity of Chat channels (issue 14, part B), through the whole app and the strict fake.

Refusals, outputs moved next to their calls, files and audio, ``allowed_tools``, OpenAI-only
fields, logprobs and citations, the echoed request, the empty-completion rule, legacy
``function_call`` and OpenRouter ``reasoning_details``. Every stream is validated event by event
with the openai SDK's types, every JSON answer with its ``Response`` type.
"""

from __future__ import annotations

import json
from typing import Any, get_args

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseOutputMessage, ResponseOutputRefusal, ResponseOutputText
from openai.types.responses.response_output_text import AnnotationURLCitation
from pydantic import ValidationError

from ccx_asgi.convert.chat import (
    FORWARDABLE_FIELDS,
    ChatOptions,
    ChatStreamTranslator,
    to_request,
    to_response,
)
from ccx_asgi.convert.tools import INTERRUPTED_OUTPUT
from ccx_asgi.errors import InvalidRequestError
from ccx_asgi.settings import ChannelConfig
from tests.channels.test_chat_app import chat_channel, routed
from tests.conftest import PROXY_KEY, AppFactory
from tests.fakes.chat_upstream import (
    OPENAI_FIELDS,
    FakeChatUpstream,
    Reply,
    chunk,
    completion_from_chunks,
    text_reply,
    tool_reply,
    usage,
    validate_chat_request,
)
from tests.fixture_types import ClientFor
from tests.paths import CODEX_FIXTURES
from tests.sdk import parse_sse, validate_events, validate_response

PDF = "data:application/pdf;base64,JVBERi0xLjQK"
TOOLS = [
    {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}},
    {"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {}}},
    {"type": "custom", "name": "apply_patch", "description": "patch"},
    {"type": "web_search"},
]


def _first_part(parsed: Response) -> ResponseOutputText | ResponseOutputRefusal:
    """The first content part of the first output item, which must be a message."""
    message = parsed.output[0]
    assert isinstance(message, ResponseOutputMessage)
    return message.content[0]


def codex(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((CODEX_FIXTURES / name).read_text())
    return body


def assert_valid(chat: dict[str, Any], **strictness: Any) -> None:
    problem = validate_chat_request(chat, **strictness)
    assert problem is None, problem


def translate(chunks: list[dict[str, Any]], request: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    translator = ChatStreamTranslator("client-model", request or {"input": "x"})
    events = [e for c in chunks for e in translator.feed(c)] + translator.finish()
    validate_events(events)
    return events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


# -- 4. refusals -----------------------------------------------------------------------------------


def refusal_reply(text: str = "I can't help with that.") -> Reply:
    chunks = [chunk({"role": "assistant", "content": None, "refusal": ""})]
    chunks += [chunk({"refusal": text[i : i + 6]}) for i in range(0, len(text), 6)]
    return Reply([*chunks, chunk({}, "stop"), chunk(usage=usage(30, 8), choices=False)])


async def test_a_refusal_stream_is_the_answer_not_a_failover(make_app: AppFactory, client_for: ClientFor) -> None:
    refusing = FakeChatUpstream(script=lambda body: refusal_reply())
    spare = FakeChatUpstream()
    app = make_app([chat_channel("a"), chat_channel("b")], transport=routed(a=refusing, b=spare))
    response = await client_for(app).post("/responses", json={"model": "m", "input": "do a bad thing", "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["x-ccx-channel"] == "a" and not spare.requests
    events = parse_sse(response.content)
    validate_events(events)
    deltas = [e["delta"] for e in events if e["type"] == "response.refusal.delta"]
    assert "".join(deltas) == "I can't help with that."
    done = next(e for e in events if e["type"] == "response.refusal.done")
    assert done["refusal"] == "I can't help with that."
    assert "response.output_text.delta" not in types(events)
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    (message,) = final["output"]
    assert message["type"] == "message" and message["content"] == [
        {"type": "refusal", "refusal": "I can't help with that."}
    ]


async def test_a_json_refusal_is_a_refusal_part(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream(script=lambda body: refusal_reply("No."))
    app = make_app([chat_channel()], transport=routed(chat=fake))
    response = await client_for(app).post("/responses", json={"model": "m", "input": "x"})
    assert response.status_code == 200, response.text
    parsed = validate_response(response.json())
    part = _first_part(parsed)
    assert part.type == "refusal" and isinstance(part, ResponseOutputRefusal) and part.refusal == "No."


def test_refusal_after_text_is_its_own_message() -> None:
    events = translate([chunk({"content": "Sure, "}), chunk({"refusal": "actually no."}), chunk({}, "stop")])
    text, refusal = events[-1]["response"]["output"]
    assert text["content"][0]["text"] == "Sure, "
    assert refusal["content"] == [{"type": "refusal", "refusal": "actually no."}]


# -- 5. an output separated from its call ----------------------------------------------------------


def warning_history() -> list[dict[str, Any]]:
    """Codex's apply_patch-through-the-shell case: a user warning between the call and its output."""
    return [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "add hello.txt"}]},
        {"type": "function_call", "call_id": "call_sh", "name": "exec_command", "arguments": '{"cmd":"apply_patch"}'},
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Warning: apply_patch was requested via exec_command."}],
        },
        {"type": "function_call_output", "call_id": "call_sh", "output": "Success. Updated: hello.txt"},
    ]


async def test_an_output_after_a_message_moves_next_to_its_call(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream(script=lambda body: text_reply("done"))
    app = make_app([chat_channel()], transport=routed(chat=fake))
    body = {"model": "m", "input": warning_history(), "tools": TOOLS, "stream": True}
    response = await client_for(app).post("/responses", json=body)
    assert response.status_code == 200, response.text  # the strict fake accepted the order
    validate_events(parse_sse(response.content))
    messages = fake.requests[0].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assert messages[2] == {"role": "tool", "tool_call_id": "call_sh", "content": "Success. Updated: hello.txt"}
    assert messages[3]["content"].startswith("Warning: apply_patch")
    assert INTERRUPTED_OUTPUT not in json.dumps(messages)


def test_the_strict_fake_rejects_a_message_between_calls_and_tool_answers() -> None:
    chat: dict[str, Any] = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [tool_call("a")]},
            {"role": "user", "content": "warning"},
            {"role": "tool", "tool_call_id": "a", "content": "ok"},
        ],
    }
    assert validate_chat_request(chat) is not None
    chat["messages"][2:] = [chat["messages"][3], chat["messages"][2]]
    assert_valid(chat)


def tool_call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}


# -- 6. files and audio ----------------------------------------------------------------------------


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "look"}, *parts]}


async def test_files_and_audio_become_chat_parts(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream(script=lambda body: text_reply("read it"))
    app = make_app([chat_channel()], transport=routed(chat=fake))
    item = user(
        {"type": "input_file", "filename": "spec.pdf", "file_data": PDF},
        {"type": "input_file", "file_url": "https://example.com/paper.pdf"},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    )
    response = await client_for(app).post("/responses", json={"model": "m", "input": [item]})
    assert response.status_code == 200, response.text
    validate_response(response.json())
    parts = fake.requests[0].body["messages"][0]["content"]
    assert parts == [
        {"type": "text", "text": "look"},
        {"type": "file", "file": {"file_data": PDF, "filename": "spec.pdf"}},
        {"type": "file", "file": {"file_data": "https://example.com/paper.pdf"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]


@pytest.mark.parametrize(
    ("item", "param", "words"),
    [
        (user({"type": "input_file", "file_id": "file-abc"}), "input[0].content[1]", "'file-abc'"),
        (user({"type": "input_image", "file_id": "file-img"}), "input[0].content[1]", "'file-img'"),
        (user({"type": "input_file", "filename": "x.pdf"}), "input[0].content[1]", "no file_data or file_url"),
        (user({"type": "input_audio", "input_audio": {"data": "AA=="}}), "input[0].content[1]", "format"),
        (
            {"type": "message", "role": "developer", "content": [{"type": "input_file", "file_data": PDF}]},
            "input[0].content[0]",
            "developer messages",
        ),
        (
            {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_file", "file_data": PDF}]},
            "input[0].output[0]",
            "tool output",
        ),
    ],
    ids=["file_id", "image file_id", "no data", "audio without format", "file in developer", "file in tool output"],
)
async def test_parts_a_chat_upstream_cannot_take_are_a_400_naming_them(
    item: dict[str, Any], param: str, words: str, make_app: AppFactory, client_for: ClientFor
) -> None:
    fake = FakeChatUpstream()
    app = make_app([chat_channel()], transport=routed(chat=fake))
    response = await client_for(app).post("/responses", json={"model": "m", "input": [item]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"] and param in error["message"]
    assert not fake.requests  # nothing was sent


def test_the_strict_fake_rejects_malformed_file_and_audio_parts() -> None:
    def body(part: dict[str, Any], role: str = "user") -> dict[str, Any]:
        return {"model": "m", "messages": [{"role": role, "content": [part]}]}

    assert_valid(body({"type": "file", "file": {"file_data": PDF, "filename": "a.pdf"}}))
    assert validate_chat_request(body({"type": "file", "file": {"url": "https://x"}})) is not None
    assert validate_chat_request(body({"type": "file", "file": {"file_data": PDF}}, "system")) is not None
    assert (
        validate_chat_request(body({"type": "input_audio", "input_audio": {"data": "A", "format": "ogg"}})) is not None
    )


# -- 7. allowed_tools ------------------------------------------------------------------------------

ALLOWED = {
    "type": "allowed_tools",
    "mode": "required",
    "tools": [{"type": "function", "name": "read_file"}, {"type": "custom", "name": "apply_patch"}],
}


def test_allowed_tools_filter_offers_only_the_allowed_tools() -> None:
    chat = to_request({"model": "m", "input": "x", "tools": TOOLS, "tool_choice": ALLOWED}, model="up")
    assert_valid(chat)
    assert [t["function"]["name"] for t in chat["tools"]] == ["read_file", "apply_patch"]
    assert chat["tool_choice"] == "required"


def test_allowed_tools_native_keeps_the_tool_list_and_restricts_by_choice() -> None:
    body = {"model": "m", "input": "x", "tools": TOOLS, "tool_choice": ALLOWED}
    chat = to_request(body, model="up", options=ChatOptions(allowed_tools="native"))
    assert [t["function"]["name"] for t in chat["tools"]] == ["exec_command", "read_file", "apply_patch"]
    assert chat["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [
                {"type": "function", "function": {"name": "read_file"}},
                {"type": "function", "function": {"name": "apply_patch"}},
            ],
        },
    }
    assert_valid(chat, native_allowed_tools=True)
    assert validate_chat_request(chat) is not None  # DeepSeek-class upstreams: why filter is the default


def test_allowed_tools_naming_only_dropped_tools() -> None:
    hosted = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "web_search"}]}
    chat = to_request({"model": "m", "input": "x", "tools": TOOLS, "tool_choice": hosted}, model="up")
    assert chat["tool_choice"] == "none" and len(chat["tools"]) == 3
    with pytest.raises(InvalidRequestError) as caught:
        to_request(
            {"model": "m", "input": "x", "tools": TOOLS, "tool_choice": {**hosted, "mode": "required"}}, model="up"
        )
    assert caught.value.param == "tool_choice.tools"


async def test_allowed_tools_through_the_app(make_app: AppFactory, client_for: ClientFor) -> None:
    native = FakeChatUpstream(native_allowed_tools=True, script=lambda body: tool_reply([("read_file", {})]))
    app = make_app([chat_channel(chat_allowed_tools="native")], transport=routed(chat=native))
    body = {"model": "m", "input": "x", "tools": TOOLS, "tool_choice": ALLOWED, "stream": True}
    response = await client_for(app).post("/responses", json=body)
    assert response.status_code == 200, response.text
    events = parse_sse(response.content)
    validate_events(events)
    assert events[-1]["response"]["output"][0]["name"] == "read_file"
    assert events[-1]["response"]["tool_choice"] == ALLOWED  # echoed as asked
    assert native.requests[0].body["tool_choice"]["type"] == "allowed_tools"


# -- 9. OpenAI-only fields, logprobs, citations, cache writes --------------------------------------

HINTS = {
    "safety_identifier": "user-hash-1",
    "text": {"verbosity": "low"},
    "service_tier": "flex",
    "prompt_cache_retention": "24h",
    "prompt_cache_key": "thread-1",
}


def test_openai_only_fields_are_not_sent_by_default_and_safety_becomes_user() -> None:
    chat = to_request({"model": "m", "input": "x", **HINTS}, model="up")
    assert_valid(chat)  # the strict fake rejects every one of them
    assert chat["user"] == "user-hash-1"
    assert not set(chat) & {*OPENAI_FIELDS, "verbosity"}


def test_openai_only_fields_are_forwarded_when_the_channel_names_them() -> None:
    options = ChatOptions(
        forward_fields=frozenset({"safety_identifier", "verbosity", "service_tier", "prompt_cache_retention"}),
        prompt_cache_key=True,
    )
    chat = to_request({"model": "m", "input": "x", **HINTS}, model="up", options=options)
    assert {k: chat[k] for k in OPENAI_FIELDS} == {
        "safety_identifier": "user-hash-1",
        "verbosity": "low",
        "service_tier": "flex",
        "prompt_cache_retention": "24h",
        "prompt_cache_key": "thread-1",
    }
    assert "user" not in chat
    assert validate_chat_request(chat) is not None
    assert_valid(chat, extra_fields=frozenset(OPENAI_FIELDS))


async def test_forward_fields_channel_option(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream(extra_fields=frozenset(OPENAI_FIELDS), script=lambda body: text_reply("ok"))
    app = make_app([chat_channel(chat_forward_fields=["verbosity", "service_tier"])], transport=routed(chat=fake))
    response = await client_for(app).post("/responses", json={"model": "m", "input": "x", **HINTS})
    assert response.status_code == 200, response.text
    sent = fake.requests[0].body
    assert (sent["verbosity"], sent["service_tier"], sent["user"]) == ("low", "flex", "user-hash-1")
    assert "prompt_cache_retention" not in sent and "safety_identifier" not in sent


def logprob(token: str, value: float) -> dict[str, Any]:
    return {
        "token": token,
        "logprob": value,
        "bytes": list(token.encode()),
        "top_logprobs": [{"token": token, "logprob": value, "bytes": list(token.encode())}],
    }


def logprob_reply(body: dict[str, Any]) -> Reply:
    chunks = []
    for token, value in (("Hel", -0.1), ("lo", -0.2)):
        data = chunk({"content": token})
        data["choices"][0]["logprobs"] = {"content": [logprob(token, value)], "refusal": None}
        chunks.append(data)
    return Reply([*chunks, chunk({}, "stop")])


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_logprobs_are_asked_for_and_returned(stream: bool, make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream(script=logprob_reply)
    app = make_app([chat_channel()], transport=routed(chat=fake))
    body = {
        "model": "m",
        "input": "x",
        "stream": stream,
        "top_logprobs": 1,
        "include": ["message.output_text.logprobs"],
    }
    response = await client_for(app).post("/responses", json=body)
    assert response.status_code == 200, response.text
    sent = fake.requests[0].body
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 1)
    if stream:
        events = parse_sse(response.content)
        validate_events(events)
        deltas = [e["logprobs"] for e in events if e["type"] == "response.output_text.delta"]
        assert [d[0]["token"] for d in deltas] == ["Hel", "lo"]
        final = events[-1]["response"]
    else:
        final = response.json()
    parsed = Response.model_validate(final)
    part = _first_part(parsed)
    assert isinstance(part, ResponseOutputText)
    logprobs = part.logprobs
    assert logprobs is not None and [(p.token, p.logprob, p.bytes) for p in logprobs] == [
        ("Hel", -0.1, [72, 101, 108]),
        ("lo", -0.2, [108, 111]),
    ]
    assert logprobs[0].top_logprobs[0].token == "Hel"


def test_include_alone_asks_for_logprobs_and_the_fake_needs_logprobs_for_top() -> None:
    chat = to_request({"model": "m", "input": "x", "include": ["message.output_text.logprobs"]}, model="up")
    assert chat["logprobs"] is True and "top_logprobs" not in chat
    assert validate_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})


CITATION = {
    "type": "url_citation",
    "url_citation": {"url": "https://example.com/a", "title": "A", "start_index": 0, "end_index": 5},
}


def test_url_citations_stream_as_annotations() -> None:
    events = translate([chunk({"content": "Paris is big."}), chunk({"annotations": [CITATION]}), chunk({}, "stop")])
    added = next(e for e in events if e["type"] == "response.output_text.annotation.added")
    expected = {"type": "url_citation", "url": "https://example.com/a", "title": "A", "start_index": 0, "end_index": 5}
    assert added["annotation"] == expected and added["annotation_index"] == 0
    assert events[-1]["response"]["output"][0]["content"][0]["annotations"] == [expected]


def test_json_citations_cache_writes_and_usage() -> None:
    raw = completion_from_chunks(
        [chunk({"content": "Paris is big."}), chunk({"annotations": [CITATION]}), chunk({}, "stop")]
    )
    raw["usage"] = {
        "prompt_tokens": 200,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 120},
    }
    response = to_response(raw, model="m", request={"input": "x"})
    parsed = validate_response(response)
    part = _first_part(parsed)
    assert isinstance(part, ResponseOutputText)
    annotation = part.annotations[0]
    assert isinstance(annotation, AnnotationURLCitation) and annotation.url == "https://example.com/a"
    assert response["usage"]["input_tokens_details"] == {"cached_tokens": 50, "cache_write_tokens": 120}
    assert response["usage"]["input_tokens"] == 200


# -- 10. the echoed request ------------------------------------------------------------------------

ECHOED = {
    "instructions": "Be brief.",
    "tools": TOOLS,
    "tool_choice": {"type": "function", "name": "read_file"},
    "temperature": 0.3,
    "top_p": 0.8,
    "max_output_tokens": 500,
    "parallel_tool_calls": False,
    "text": {"format": {"type": "text"}, "verbosity": "low"},
    "reasoning": {"effort": "low", "summary": "auto"},
    "metadata": {"ticket": "T-1"},
    "previous_response_id": None,  # set to a stored response by the test
    "store": False,
}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_the_response_echoes_the_request(stream: bool, make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream(script=lambda body: text_reply("hi"))
    app = make_app([chat_channel()], transport=routed(chat=fake))
    client = client_for(app)
    # previous_response_id must name a stored response (an unknown one is a 400), so make one first.
    first = await client.post("/responses", json={"model": "m", "input": "earlier"})
    assert first.status_code == 200, first.text
    echoed = {**ECHOED, "previous_response_id": first.json()["id"]}
    response = await client.post("/responses", json={"model": "m", "input": "x", "stream": stream, **echoed})
    assert response.status_code == 200, response.text
    if stream:
        events = parse_sse(response.content)
        validate_events(events)
        objects = [e["response"] for e in events if "response" in e]
        assert [e["type"] for e in events if "response" in e][:2] == ["response.created", "response.in_progress"]
    else:
        objects = [response.json()]
    for obj in objects:  # created, in_progress and the terminal object alike
        validate_response(obj)
        assert {k: obj[k] for k in echoed} == echoed


async def test_echo_defaults_are_openai_defaults(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream(script=lambda body: text_reply("hi"))
    app = make_app([chat_channel()], transport=routed(chat=fake))
    response = await client_for(app).post("/responses", json={"model": "m", "input": "x"})
    final = response.json()
    validate_response(final)
    assert (final["store"], final["parallel_tool_calls"], final["tool_choice"], final["tools"]) == (
        True,
        True,
        "auto",
        [],
    )
    assert final["text"] == {"format": {"type": "text"}} and final["metadata"] == {}
    assert final["temperature"] is None and final["max_output_tokens"] is None
    assert final["previous_response_id"] is None and final["instructions"] is None


async def test_codex_request_is_echoed_and_the_sdk_reads_it(make_app: AppFactory) -> None:
    fake = FakeChatUpstream()
    app = make_app([chat_channel()], transport=routed(chat=fake))
    body = codex("request-gpt-5.5-turn1.json")
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    # openai types http_client as an httpx2 client; it accepts an httpx one too (_httpx2.is_legacy_httpx_async_client)
    client = openai.AsyncOpenAI(api_key=PROXY_KEY, base_url="http://gw.test", http_client=http, max_retries=0)  # type: ignore[arg-type]
    try:
        extra = {"client_metadata": body.pop("client_metadata")}
        created = await client.responses.create(**{**body, "stream": False}, extra_body=extra)
    finally:
        await http.aclose()
        await app.aclose()
    assert created.store is False  # OpenAI echoes it
    assert [t.type for t in created.tools] == [t["type"] for t in body["tools"]]
    assert created.text is not None and created.text.verbosity == "low"
    assert created.reasoning is not None and created.reasoning.effort == "medium"
    assert created.instructions is None  # Codex 0.171 sends its prompt as a developer message


# -- 11. empty completions, legacy function_call, reasoning_details --------------------------------


def empty_reply(body: dict[str, Any]) -> Reply:
    return Reply([chunk({"role": "assistant", "content": ""}), chunk({}, "stop")])


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_an_empty_completion_fails_over_in_both_paths(
    stream: bool, make_app: AppFactory, client_for: ClientFor
) -> None:
    empty = FakeChatUpstream(script=empty_reply)
    spare = FakeChatUpstream(script=lambda body: text_reply("a real answer"))
    app = make_app([chat_channel("a"), chat_channel("b")], transport=routed(a=empty, b=spare), keepalive_interval=0)
    response = await client_for(app).post("/responses", json={"model": "m", "input": "x", "stream": stream})
    assert response.status_code == 200, response.text
    assert response.headers["x-ccx-channel"] == "b" and len(empty.requests) == 1
    final = parse_sse(response.content)[-1]["response"] if stream else response.json()
    assert validate_response(final).output_text == "a real answer"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_only_empty_completions_end_as_503(stream: bool, make_app: AppFactory, client_for: ClientFor) -> None:
    app = make_app([chat_channel()], transport=routed(chat=FakeChatUpstream(script=empty_reply)), keepalive_interval=0)
    response = await client_for(app).post("/responses", json={"model": "m", "input": "x", "stream": stream})
    assert response.status_code == 503
    assert "completed without any output" in response.json()["error"]["message"]


def legacy_chunks() -> list[dict[str, Any]]:
    return [
        chunk({"role": "assistant", "content": None, "function_call": {"name": "exec_command", "arguments": ""}}),
        chunk({"function_call": {"arguments": '{"cmd":'}}),
        chunk({"function_call": {"arguments": '"ls"}'}}),
        chunk({}, "function_call"),
    ]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_legacy_function_call_becomes_a_function_call_item(stream: bool) -> None:
    request = {"input": "x", "tools": TOOLS}
    if stream:
        final = translate(legacy_chunks(), request)[-1]["response"]
    else:
        raw = completion_from_chunks(legacy_chunks())
        assert raw["choices"][0]["message"]["function_call"] == {"name": "exec_command", "arguments": '{"cmd":"ls"}'}
        final = to_response(raw, model="m", request=request)
        validate_response(final)
    (call,) = final["output"]
    assert (call["type"], call["name"], call["arguments"], call["status"]) == (
        "function_call",
        "exec_command",
        '{"cmd":"ls"}',
        "completed",
    )
    assert call["call_id"].startswith("call_")


def details(text: str) -> dict[str, Any]:
    return {"reasoning_details": [{"type": "reasoning.text", "text": text, "format": "anthropic-claude-v1"}]}


def test_openrouter_reasoning_details_become_reasoning() -> None:
    chunks = [
        chunk(details("First, ")),
        chunk({"reasoning_details": [{"type": "reasoning.encrypted", "data": "opaque"}]}),
        chunk(details("think.")),
        chunk({"content": "Answer."}),
        chunk({}, "stop"),
    ]
    reasoning, message = translate(chunks)[-1]["response"]["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "First, think."}]
    assert message["content"][0]["text"] == "Answer."
    summary = {"reasoning_details": [{"type": "reasoning.summary", "summary": "In short."}]}
    raw = completion_from_chunks([chunk({"content": "A"}), chunk({}, "stop")])
    raw["choices"][0]["message"].update(summary)
    assert to_response(raw, model="m")["output"][0]["summary"][0]["text"] == "In short."


@pytest.mark.parametrize(
    ("field", "value"),
    [("prompt", {"id": "pmpt_1"}), ("conversation", "conv_1"), ("background", True)],
)
def test_fields_whose_state_lives_at_openai_are_a_400(field: str, value: Any) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        to_request({"model": "m", "input": "x", field: value}, model="up")
    assert caught.value.param == field and caught.value.status == 400
    assert "background" not in to_request({"model": "m", "input": "x", "background": False}, model="up")


def test_forward_fields_setting_names_exactly_the_forwardable_fields() -> None:
    (literal,) = get_args(ChannelConfig.model_fields["chat_forward_fields"].annotation)
    assert get_args(literal) == FORWARDABLE_FIELDS
    with pytest.raises(ValidationError, match="chat_forward_fields"):
        ChannelConfig.model_validate(chat_channel(chat_forward_fields=["temperature"]))
    with pytest.raises(ValidationError, match="chat_allowed_tools"):
        ChannelConfig.model_validate(chat_channel(chat_allowed_tools="sometimes"))
