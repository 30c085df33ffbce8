"""Request validation, limits, routing errors and model selection, in process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from tests.conftest import AppFactory, channel
from tests.fixture_types import ClientFor

URL = "https://upstream.test/v1/responses"
pytestmark = pytest.mark.usefixtures("upstream_via_httpx")  # respx mocks httpx
# A completed answer needs output: an empty completion fails over (docs/chat-channels.md).
MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "ok", "annotations": []}]}  # fmt: skip
OK = {"id": "resp_1", "object": "response", "created_at": 1, "model": "x", "output": [MESSAGE], "status": "completed",
      "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}  # fmt: skip


@pytest.mark.parametrize(
    ("content", "fragment", "param"),
    [
        (b"{not json", "not valid JSON", None),
        (b"[1, 2]", "must be a JSON object", None),
        (b'"text"', "must be a JSON object", None),
        (b"{}", "'model' is required", "model"),
        (b'{"model": 5}', "'model' is required", "model"),
        (b'{"model": "  "}', "'model' is required", "model"),
        (b'{"model": "m", "stream": "yes"}', "'stream' must be a boolean", "stream"),
    ],
)
async def test_bad_bodies_are_400(
    make_app: AppFactory, client_for: ClientFor, content: bytes, fragment: str, param: str | None
) -> None:
    response = await client_for(make_app()).post("/responses", content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    assert error["param"] == param


async def test_body_over_the_limit_is_413(make_app: AppFactory, client_for: ClientFor) -> None:
    client = client_for(make_app(max_body_mb=0.01))
    big = {"model": "m", "input": "x" * 20_000}
    response = await client.post("/responses", json=big)
    assert response.status_code == 413
    assert "CCX_MAX_BODY_MB" in response.json()["error"]["message"]


async def test_streamed_body_over_the_limit_is_413(make_app: AppFactory, client_for: ClientFor) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no content-length: the limit must hold while reading
        yield b'{"model": "m", "input": "'
        for _ in range(30):
            yield b"x" * 1024
        yield b'"}'

    response = await client_for(make_app(max_body_mb=0.01)).post("/responses", content=chunks())
    assert response.status_code == 413


async def test_unknown_model_names_the_model_and_the_allowlist(make_app: AppFactory, client_for: ClientFor) -> None:
    client = client_for(make_app([channel(models=["claude-*"]), channel("b", models=["deepseek-chat"])]))
    response = await client.post("/responses", json={"model": "gpt-5.5", "input": "hi"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert "'gpt-5.5'" in error["message"]
    assert "allowlist" in error["message"]


async def test_no_channels_at_all(make_app: AppFactory, client_for: ClientFor) -> None:
    response = await client_for(make_app([])).post("/responses", json={"model": "m", "input": "hi"})
    assert response.status_code == 404
    assert "CCX_CHANNELS" in response.json()["error"]["message"]


async def test_allowlist_holds_with_a_single_channel(make_app: AppFactory, client_for: ClientFor) -> None:
    """The original CCX ignored the allowlist when only one channel existed."""
    with respx.mock:
        route = respx.post(URL).mock(return_value=httpx.Response(200, json=OK))
        client = client_for(make_app([channel(models=["gpt-*", "!*-mini"])]))
        assert (await client.post("/responses", json={"model": "gpt-5.5-mini", "input": "x"})).status_code == 404
        assert (await client.post("/responses", json={"model": "gpt-5.5", "input": "x"})).status_code == 200
        assert route.call_count == 1


@pytest.mark.parametrize(
    ("requested", "expected"),
    [("gpt-5.5", "big"), ("gpt-5.5-mini", "small"), ("gpt-5.5-codex", "exact"), ("o3", "o3")],
)
async def test_model_mapping_longest_key_first(
    make_app: AppFactory, client_for: ClientFor, requested: str, expected: str
) -> None:
    with respx.mock:
        route = respx.post(URL).mock(return_value=httpx.Response(200, json=OK))
        client = client_for(make_app([channel(model_map={"gpt": "big", "mini": "small", "gpt-5.5-codex": "exact"})]))
        assert (await client.post("/responses", json={"model": requested, "input": "x"})).status_code == 200
        import json

        assert json.loads(route.calls.last.request.content)["model"] == expected


async def test_priority_and_disabled_channels(make_app: AppFactory, client_for: ClientFor) -> None:
    with respx.mock:
        first = respx.post("https://first.test/v1/responses").mock(return_value=httpx.Response(200, json=OK))
        respx.post(URL).mock(return_value=httpx.Response(200, json=OK))
        channels = [
            channel("low", priority=5),
            channel("off", base_url="https://off.test", priority=0, enabled=False),
            channel("high", base_url="https://first.test", priority=1),
        ]
        response = await client_for(make_app(channels)).post("/responses", json={"model": "m", "input": "x"})
        assert response.headers["x-ccx-channel"] == "high"
        assert first.call_count == 1


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/responses", 405), ("POST", "/models", 405), ("POST", "/nothing", 404), ("POST", "/responses/", 200)],
)
async def test_routes(make_app: AppFactory, client_for: ClientFor, method: str, path: str, status: int) -> None:
    client = client_for(make_app([{"name": "demo", "service_type": "demo"}]))
    response = await client.request(method, path, json={"model": "m", "input": "x"})
    assert response.status_code == status
    if status != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_models_lists_mapping_keys_and_exact_allowlist_names(make_app: AppFactory, client_for: ClientFor) -> None:
    channels = [channel(model_map={"gpt-5.5": "ds"}, models=["gpt-5.5", "claude-*", "!x", "o3"])]
    response = await client_for(make_app(channels)).get("/models")
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["gpt-5.5", "o3"]
    from openai.types import Model

    for entry in data["data"]:
        Model.model_validate(entry)
