"""The benchmark's fake upstreams answer correctly-shaped payloads (checked with the real SDKs' types).

Only shapes are tested here; the benchmark itself is never part of the test suite (``python -m bench``).
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from bench.fakes import FakeUpstream
from bench.floor import VARIANTS
from bench.floor import _app as floor_app
from bench.relay import build_relay
from tests.sdk import parse_sse, validate_events, validate_response
from tests.servers import serve


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake.test")


def _data_lines(raw: bytes) -> list[str]:
    return [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]


@pytest.mark.parametrize("prefix", ["", "/paced"])
async def test_chat_stream_has_deltas_finish_usage_and_done(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.fakes.PACED_INTERVAL", 0.0)
    async with _client(FakeUpstream(fast_chunks=3, paced_chunks=4)) as client:
        response = await client.post(
            f"{prefix}/v1/chat/completions", json={"model": "m", "messages": [], "stream": True}
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = _data_lines(response.content)
    assert lines[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(orjson.loads(line)) for line in lines[:-1]]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ("tok0 tok1 tok2 " if not prefix else "tok0 tok1 tok2 tok3 ")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == (3 if not prefix else 4)


async def test_chat_json_is_a_chat_completion() -> None:
    async with _client(FakeUpstream(fast_chunks=2)) as client:
        response = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    completion = ChatCompletion.model_validate(response.json())
    assert completion.choices[0].message.content == "tok0 tok1 "
    assert completion.usage is not None


# The anthropic SDK is not a test dependency, so the Messages shapes are checked field by field
# against Anthropic's documented stream grammar.
CLAUDE_ORDER = ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
                "content_block_stop", "message_delta", "message_stop"]  # fmt: skip


async def test_claude_stream_follows_the_messages_grammar() -> None:
    async with _client(FakeUpstream(fast_chunks=2)) as client:
        response = await client.post(
            "/v1/messages", json={"model": "m", "max_tokens": 9, "messages": [], "stream": True}
        )
    assert response.status_code == 200
    blocks = [b for b in response.text.split("\n\n") if b.strip()]
    names = [b.split("\n")[0].removeprefix("event: ") for b in blocks]
    events = [orjson.loads(b.split("\n")[1].removeprefix("data: ")) for b in blocks]
    assert names == [e["type"] for e in events] == CLAUDE_ORDER
    start = events[0]["message"]
    assert (start["type"], start["role"], start["content"]) == ("message", "assistant", [])
    assert set(start["usage"]) >= {"input_tokens", "output_tokens"}
    assert events[1]["content_block"] == {"type": "text", "text": ""}
    assert all(e["index"] == 0 for e in events if e["type"].startswith("content_block"))
    assert "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta") == "tok0 tok1 "
    assert all(e["delta"]["type"] == "text_delta" for e in events if e["type"] == "content_block_delta")
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert events[-2]["usage"]["output_tokens"] == 2


async def test_claude_json_is_a_message() -> None:
    async with _client(FakeUpstream(fast_chunks=2)) as client:
        response = await client.post("/v1/messages", json={"model": "m", "max_tokens": 9, "messages": []})
    message = response.json()
    assert (message["type"], message["role"], message["stop_reason"]) == ("message", "assistant", "end_turn")
    assert message["content"] == [{"type": "text", "text": "tok0 tok1 "}]
    assert set(message["usage"]) == {"input_tokens", "output_tokens"}


async def test_responses_stream_and_json_validate_with_the_openai_sdk() -> None:
    async with _client(FakeUpstream(fast_chunks=3)) as client:
        stream = await client.post("/v1/responses", json={"model": "m", "input": "hi", "stream": True})
        answer = await client.post("/v1/responses", json={"model": "m", "input": "hi"})
    events = parse_sse(stream.content)
    validate_events(events)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "tok0 tok1 tok2 "
    assert validate_response(answer.json()).output_text == "tok0 tok1 tok2 "


async def test_unknown_path_is_404_and_stats_count_requests() -> None:
    async with _client(FakeUpstream()) as client:
        missing = await client.post("/v1/nothing", json={})
        await client.post("/v1/responses", json={"model": "m", "input": "x"})
        stats = await client.get("/__stats")
    assert missing.status_code == 404
    assert stats.json() == {"/v1/nothing": 1, "/v1/responses": 1}


async def test_relay_forwards_bytes_unchanged() -> None:
    fake = FakeUpstream(fast_chunks=2)
    async with _client(fake) as client:
        direct = await client.post("/v1/chat/completions", json={"model": "m", "messages": [], "stream": True})
    # bench/fakes.py types the ASGI scope as a dict, narrower than httpx's mapping (bench is not type-checked)
    relay = build_relay("http://fake.test", transport=httpx.ASGITransport(app=fake))  # type: ignore[arg-type]
    async with _client(relay) as client:
        relayed = await client.post("/v1/chat/completions", json={"model": "m", "messages": [], "stream": True})
    assert relayed.status_code == 200
    assert relayed.content == direct.content
    assert fake.hits["/v1/chat/completions"] == 2


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("stream", [False, True])
def test_floor_relays_answer_what_the_fake_answers(variant: str, stream: bool) -> None:
    body = {"model": "m", "messages": [], "stream": stream}
    with serve(FakeUpstream(fast_chunks=3)) as upstream:
        direct = httpx.post(f"{upstream}/v1/chat/completions", json=body, timeout=10)
        with serve(floor_app(variant, upstream)) as relay:
            relayed = httpx.post(f"{relay}/v1/chat/completions", json=body, timeout=10)
    assert relayed.status_code == direct.status_code == 200
    if variant == "asgi-only":  # answers without an upstream: the fake's JSON answer, whatever was asked
        assert ChatCompletion.model_validate(relayed.json()).choices[0].message.content
    else:
        assert relayed.content == direct.content
        # Starlette's StreamingResponse adds a charset: compare the media type.
        assert relayed.headers["content-type"].split(";")[0] == direct.headers["content-type"]


class _EveryOtherFails:
    """Answers 503 to every odd-numbered request (the warm shots) and 200 to the others."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        self.count += 1
        status = 503 if self.count % 2 else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})


async def test_a_failing_warm_shot_counts_as_an_error() -> None:
    # The unmeasured request before each measured one must not hide an arm that fails.
    from bench.client import build_request
    from bench.run import Arm, latency

    with serve(_EveryOtherFails()) as url:
        port = int(url.rsplit(":", 1)[1])
        arm = Arm("ccx", port, None)
        raw = build_request("/v1/responses", b"{}", {"content-type": "application/json"}, port=port)
        result = await latency([arm], {"ccx": raw}, rounds=5, warmup=1)
    assert result["ccx"]["errors"] == 6  # every warm shot, warm-up round included
    assert result["ccx"]["n"] == 5  # the measured requests all answered 200
