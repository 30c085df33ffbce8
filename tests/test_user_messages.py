"""What a user reads: the developer-role 400 names its fix, the status page speaks plainly, demo models list."""

from __future__ import annotations

import os
import re
from typing import Any

import httpx
import pytest

from ccx_asgi import load_settings
from ccx_asgi.__main__ import build_standalone
from ccx_asgi.hints import upstream_error_hint
from ccx_asgi.settings import ChannelConfig
from tests.conftest import AppFactory, channel
from tests.fakes.chat_upstream import FakeChatUpstream
from tests.fixture_types import ClientFor
from tests.paths import CODEX_FIXTURES

DEEPSEEK = "Failed to deserialize the JSON body into the target type: messages[0].role: unknown variant `developer`, expected one of `system`, `user`, `assistant`, `tool`"


def chat(name: str = "deepseek", **fields: object) -> ChannelConfig:
    return ChannelConfig(name=name, service_type="chat", base_url="https://chat.test/v1", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message",
    [DEEPSEEK, "Invalid role: developer", "role 'developer' is not supported", "The developer role is not allowed"],
)
def test_role_rejections_get_the_normalize_roles_hint(message: str) -> None:
    hint = upstream_error_hint(chat(), 400, message)
    assert '"normalize_roles": true' in hint and "'deepseek'" in hint


@pytest.mark.parametrize(
    ("channel_config", "status", "message"),
    [
        (chat(normalize_roles=True), 400, DEEPSEEK),  # already on: the hint would be wrong
        (chat(), 500, DEEPSEEK),  # not a validation error
        (chat(), 400, "max_tokens is too large"),
        (chat(), 400, "developer mode is not available"),
    ],
)
def test_no_hint_where_it_would_not_help(channel_config: ChannelConfig, status: int, message: str) -> None:
    assert upstream_error_hint(channel_config, status, message) == ""


async def test_the_developer_role_400_tells_the_client_the_fix(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeChatUpstream(strict_roles=True)  # rejects `developer` the way DeepSeek does
    config = channel("deepseek", service_type="chat", base_url="https://chat.test/v1")
    app = make_app([config], transport=httpx.ASGITransport(app=fake))
    body = (CODEX_FIXTURES / "request-gpt-5.5-turn1.json").read_bytes()
    response = await client_for(app).post("/responses", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "unknown variant `developer`" in message  # the upstream's own words come first…
    assert "set \"normalize_roles\": true on channel 'deepseek'" in message  # …then the fix


async def test_status_page_has_no_python_reprs(make_app: AppFactory, client_for: ClientFor) -> None:
    app = make_app([channel("main")], admin_access_key="admin-key-for-tests")
    client = client_for(app, key="admin-key-for-tests")
    page = (await client.get("/admin/")).text
    assert "<span>1 channel</span>" in page
    assert "a conversation stays on its channel for 30 min" in page
    assert not re.search(r"\{'|': |&#x27;[a-z_]+&#x27;:", page), "a dict printed as Python"
    doc = (await client.get("/admin/channels")).json()
    assert doc["gateway"]["pid"] == os.getpid()
    assert f"<span>pid {os.getpid()}</span>" in page
    two = make_app([channel("a"), channel("b", base_url="https://b.test/v1")], admin_access_key="k" * 24)
    assert "<span>2 channels</span>" in (await client_for(two, key="k" * 24).get("/admin/")).text


async def test_the_demo_channel_lists_models(make_app: AppFactory, client_for: ClientFor) -> None:
    async def ids(*channels: dict[str, Any]) -> list[str]:
        app = make_app(list(channels), models_from_upstream=False)
        return [m["id"] for m in (await client_for(app).get("/models")).json()["data"]]

    demo = {"name": "demo", "service_type": "demo"}
    assert await ids(demo) == ["gpt-5.5", "demo"]
    assert await ids({**demo, "models": ["gpt*"]}) == ["gpt-5.5"]  # the allowlist still rules
    assert await ids({**demo, "model_map": {"fast": "x"}}) == ["fast"]  # a map says what to list
    assert await ids({**demo, "enabled": False}) == []
    mapped = channel("main", model_map={"gpt-5.5": "upstream-model"})
    assert await ids(mapped, demo) == ["gpt-5.5", "demo"]  # listed once, by the channel that maps it


async def test_standalone_demo_mode_lists_models() -> None:
    app = build_standalone(load_settings(proxy_access_key="k"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test") as client:
        response = await client.get("/v1/models", headers={"authorization": "Bearer k"})
    await app.ccx.aclose()
    assert [(m["id"], m["owned_by"]) for m in response.json()["data"]] == [("gpt-5.5", "demo"), ("demo", "demo")]
