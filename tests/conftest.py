"""Shared fixtures: an isolated environment, app builders and an in-process client."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import pytest

from ccx_asgi import CCXApp, ChannelConfig, create_app, load_settings

PROXY_KEY = "proxy-key-for-tests"
UPSTREAM_KEY = "upstream-key"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CCX_* variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("CCX_") or name in ("PROXY_ACCESS_KEY",):
            monkeypatch.delenv(name)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], Any]]:
    """The standard event loop; also uvloop for async tests in modules that set ``BOTH_LOOPS = True``."""
    factories: dict[str, Callable[[], Any]] = {"asyncio": asyncio.new_event_loop}
    if getattr(getattr(item, "module", None), "BOTH_LOOPS", False):
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    return factories


def channel(name: str = "main", **fields: Any) -> dict[str, Any]:
    """A channel dict with test defaults (native Responses at upstream.test)."""
    return {
        "name": name,
        "service_type": "responses",
        "base_url": "https://upstream.test/v1",
        "api_keys": [UPSTREAM_KEY],
        **fields,
    }


AppFactory = Callable[..., CCXApp]


@pytest.fixture
def upstream_via_httpx() -> None:
    """Apps built by ``make_app`` get httpx's own transport (``transport=`` seam), for tests whose
    upstream is a respx mock: respx intercepts that transport. The default (aiohttp) transport is
    tested over real sockets in ``tests/test_upstream_client.py`` and ``tests/test_hostile_upstream.py``.
    """


@pytest.fixture
def make_app(request: pytest.FixtureRequest) -> AppFactory:
    """Build an app from channel dicts and setting overrides (proxy key set by default)."""
    respx_tests = "upstream_via_httpx" in request.fixturenames

    def build(
        channels: list[dict[str, Any]] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **overrides: Any,
    ) -> CCXApp:
        overrides.setdefault("proxy_access_key", PROXY_KEY)
        settings = load_settings(
            channels=[ChannelConfig.model_validate(c) for c in (channels if channels is not None else [channel()])],
            **overrides,
        )
        if transport is None and respx_tests:
            transport = httpx.AsyncHTTPTransport()
        return create_app(settings, transport=transport)

    return build


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[CCXApp], httpx.AsyncClient]]:
    """In-process clients (httpx.ASGITransport) with the proxy key, closed after the test."""
    made: list[tuple[httpx.AsyncClient, CCXApp]] = []

    def build(app: CCXApp, key: str | None = PROXY_KEY) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw.test", headers=headers)
        made.append((client, app))
        return client

    yield build
    for client, app in made:
        await client.aclose()
        await app.aclose()
