"""The FastAPI example: the host's own routes and ccx's /v1 work side by side."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from ccx_asgi import ChannelConfig, create_app, load_settings
from examples.fastapi_app.app import build_host_app, create_host_app
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.sdk import parse_sse, validate_events
from tests.servers import serve


def _settings() -> object:
    return load_settings(
        proxy_access_key="host-key",
        channels=[
            ChannelConfig(
                name="up", service_type="responses", base_url="http://up.test/v1", api_keys=[SecretStr("sk-up")]
            )
        ],
    )


async def test_host_routes_and_gateway_in_process() -> None:
    upstream = FakeResponsesUpstream(keys=("sk-up",))
    ccx = create_app(_settings(), transport=httpx.ASGITransport(app=upstream))  # type: ignore[arg-type]
    app = build_host_app(ccx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host.test") as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert (await client.get("/greet/ada")).json() == {"greeting": "hello ada"}
        response = await client.post(
            "/v1/responses",
            json={"model": "gpt-5.5", "input": "ping", "stream": True},
            headers={"authorization": "Bearer host-key"},
        )
        assert response.status_code == 200, response.text
        events = parse_sse(response.content)
        validate_events(events)
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == "pong"
        unauthorized = await client.post("/v1/responses", json={"model": "m", "input": "x"})
        assert unauthorized.status_code == 401
    await ccx.aclose()


def test_factory_reads_the_environment_over_real_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCX_PROXY_ACCESS_KEY", "env-key")
    monkeypatch.setenv("CCX_CHANNELS", '[{"name": "demo", "service_type": "demo"}]')
    with serve(create_host_app()) as url:
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        answer = httpx.post(f"{url}/v1/responses", json={"model": "m", "input": "hi"}, headers={"x-api-key": "env-key"})
        assert answer.status_code == 200
        assert answer.json()["status"] == "completed"
