"""AuthMiddleware: both headers, wrong and missing keys, no echo, and use on its own in host frameworks."""

from __future__ import annotations

import httpx
import pytest
from litestar import Litestar, get
from litestar.middleware import DefineMiddleware
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ccx_asgi import AuthMiddleware
from tests.conftest import PROXY_KEY, AppFactory
from tests.fixture_types import ClientFor

DEMO = [{"name": "demo", "service_type": "demo"}]
BODY = {"model": "m", "input": "hi"}


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {PROXY_KEY}"},
        {"authorization": f"bearer {PROXY_KEY}"},
        {"x-api-key": PROXY_KEY},
        {"authorization": "Bearer wrong", "x-api-key": PROXY_KEY},
    ],
)
async def test_accepted_headers(make_app: AppFactory, client_for: ClientFor, headers: dict[str, str]) -> None:
    client = client_for(make_app(DEMO), key=None)
    response = await client.post("/responses", json=BODY, headers=headers)
    assert response.status_code == 200, response.text


async def test_extra_keys_are_accepted(make_app: AppFactory, client_for: ClientFor) -> None:
    client = client_for(make_app(DEMO, extra_proxy_access_keys="second,third"), key="third")
    assert (await client.post("/responses", json=BODY)).status_code == 200


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"authorization": "Bearer sk-upstream-looking-key-123"}, "Authorization: Bearer header"),
        ({"x-api-key": "sk-upstream-looking-key-123"}, "x-api-key header"),
        ({}, "Missing API key"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "Missing API key"),
    ],
)
async def test_refusals(make_app: AppFactory, client_for: ClientFor, headers: dict[str, str], says: str) -> None:
    client = client_for(make_app(DEMO), key=None)
    response = await client.post("/responses", json=BODY, headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_api_key"
    assert says in error["message"]
    assert "sk-upstream-looking-key-123" not in response.text
    assert PROXY_KEY not in response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    models = await client.get("/models", headers=headers)
    assert models.status_code == 401


def test_auth_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one non-empty key"):
        AuthMiddleware(lambda s, r, se: None, keys=[])  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="non-empty"):
        AuthMiddleware(lambda s, r, se: None, keys=[""])  # type: ignore[arg-type,return-value]


async def test_standalone_in_starlette() -> None:
    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/", hello)])
    app.add_middleware(AuthMiddleware, keys=["s3"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/")).status_code == 401
        assert (await client.get("/", headers={"x-api-key": "s3"})).text == "hello"


async def test_standalone_in_litestar() -> None:
    @get("/")
    async def hello() -> str:
        return "hello"

    # Litestar wants middleware typed with its own ASGI TypedDicts; AuthMiddleware is a plain ASGI app
    app = Litestar(route_handlers=[hello], middleware=[DefineMiddleware(AuthMiddleware, keys=["s3"])])  # type: ignore[arg-type]
    # Litestar types its ASGI callable with its own TypedDict scopes and events, not httpx's mappings
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:  # type: ignore[arg-type]
        assert (await client.get("/")).status_code == 401
        assert (await client.get("/", headers={"authorization": "Bearer s3"})).text == "hello"
