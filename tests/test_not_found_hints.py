"""Helpful 404s for the usual base-URL and wire-API mistakes, mounted and standalone."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from ccx_asgi.__main__ import StandaloneApp
from ccx_asgi.hints import not_found_hint
from tests.conftest import PROXY_KEY, AppFactory
from tests.fixture_types import ClientFor

# (path the client calls on a gateway mounted at /v1, words the 404 must contain)
CASES = [
    ("/v1/v1/responses", ["version segment twice", "http://HOST:PORT/v1"]),
    ("/v1/v1/models", ["version segment twice"]),
    ("/responses", ["lives under /v1", "end in /v1"]),
    ("/v1/chat/completions", ["Responses API", 'wire_api = "responses"', "POST /v1/responses"]),
    ("/chat/completions", ["Responses API", "must end in /v1"]),
    ("/v1/messages", ["not Anthropic Messages"]),
    ("/v1/api/responses", ["base URL to /v1 exactly"]),
]


async def _get_404(app: object, path: str) -> str:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"authorization": f"Bearer {PROXY_KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test", headers=headers) as client:
        response = await client.post(path, json={"model": "m", "input": "hi"})
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "not_found"
    return str(error["message"])


@pytest.mark.parametrize(("path", "words"), CASES)
async def test_standalone(make_app: AppFactory, path: str, words: list[str]) -> None:
    app = make_app(models_from_upstream=False)
    message = await _get_404(StandaloneApp(app), path)
    for word in words:
        assert word in message


@pytest.mark.parametrize(("path", "words"), [c for c in CASES if c[0].startswith("/v1/")])
async def test_mounted_in_starlette(make_app: AppFactory, path: str, words: list[str]) -> None:
    app = make_app(models_from_upstream=False)
    host = Starlette(routes=[Mount("/v1", app=app)])
    message = await _get_404(host, path)
    for word in words:
        assert word in message


def test_no_hint_for_unrelated_paths() -> None:
    assert not_found_hint("/v1/files", "/files") is None
    assert not_found_hint("/favicon.ico", "/favicon.ico", mount="/v1") is None


async def test_plain_404_still_lists_the_routes(make_app: AppFactory, client_for: ClientFor) -> None:
    response = await client_for(make_app()).get("/files")
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "POST /responses," in message and "GET /models" in message
    assert "GET and DELETE /responses/{id}" in message and "GET /responses/{id}/input_items" in message
