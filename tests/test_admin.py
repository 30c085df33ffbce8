"""Admin endpoints: the access rules, key masking, no secret in any output, state and recent requests."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ccx_asgi.admin import mask_secret, sanitize_url
from tests.conftest import PROXY_KEY, UPSTREAM_KEY, AppFactory, channel
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.fixture_types import ClientFor

ADMIN_KEY = "admin-key-for-tests"
EXTRA_KEY = "extra-client-key"
PATHS = ("/admin/channels", "/admin/", "/metrics")


def _basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()


# (settings, presented credentials, expected status) — the rule from shared/design.md.
AUTH_TABLE = [
    ({"admin_access_key": ADMIN_KEY}, {"authorization": f"Bearer {ADMIN_KEY}"}, 200),
    ({"admin_access_key": ADMIN_KEY}, {"x-api-key": ADMIN_KEY}, 200),
    ({"admin_access_key": ADMIN_KEY}, {"authorization": _basic(ADMIN_KEY)}, 200),
    ({"admin_access_key": ADMIN_KEY}, {"authorization": f"Bearer {PROXY_KEY}"}, 401),
    ({"admin_access_key": ADMIN_KEY}, {"authorization": _basic(PROXY_KEY)}, 401),
    ({"admin_access_key": ADMIN_KEY}, {}, 401),
    ({"admin_access_key": ADMIN_KEY}, {"authorization": "Basic !!notbase64"}, 401),
    ({}, {"authorization": f"Bearer {PROXY_KEY}"}, 200),
    ({}, {"authorization": "Bearer wrong"}, 401),
    ({"extra_proxy_access_keys": EXTRA_KEY}, {"authorization": f"Bearer {PROXY_KEY}"}, 403),
    ({"extra_proxy_access_keys": EXTRA_KEY}, {"authorization": f"Bearer {EXTRA_KEY}"}, 403),
    ({"extra_proxy_access_keys": EXTRA_KEY, "admin_access_key": ADMIN_KEY}, {"x-api-key": ADMIN_KEY}, 200),
    ({"proxy_access_key": None}, {}, 200),
    ({"proxy_access_key": None, "admin_access_key": ADMIN_KEY}, {}, 401),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("overrides", "headers", "status"), AUTH_TABLE)
async def test_admin_access_rules(
    make_app: AppFactory,
    client_for: ClientFor,
    path: str,
    overrides: dict[str, Any],
    headers: dict[str, str],
    status: int,
) -> None:
    client = client_for(make_app(**overrides), key=None)
    response = await client.get(path, headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.headers["www-authenticate"].startswith("Basic ")
    if status == 403:
        assert "CCX_ADMIN_ACCESS_KEY" in response.json()["error"]["message"]


async def test_admin_key_does_not_open_the_proxy(make_app: AppFactory, client_for: ClientFor) -> None:
    client = client_for(make_app(admin_access_key=ADMIN_KEY), key=ADMIN_KEY)
    assert (await client.post("/responses", json={"model": "m", "input": "x"})).status_code == 401


@pytest.mark.parametrize(
    ("secret", "masked"),
    [
        ("sk-proj-abcdefghijklmnopqrstuvwxyz", "sk-…wxyz"),
        ("12345678901234567890", "123…7890"),
        ("short-key", "****"),
        ("1234567890123456789", "****"),
        ("", "****"),
    ],
)
def test_mask_secret(secret: str, masked: str) -> None:
    assert mask_secret(secret) == masked


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("https://user:pw@api.example.com/v1", "https://****@api.example.com/v1"),
        ("https://api.example.com/v1?api-key=abc&v=2", "https://api.example.com/v1?api-key=****&v=****"),
    ],
)
def test_sanitize_url(url: str, clean: str) -> None:
    assert sanitize_url(url) == clean


LONG_KEY = "sk-live-0123456789abcdefghijklmnop"


def _secret_app(make_app: AppFactory, **kw: Any) -> Any:
    channels = [
        channel(
            "main",
            api_keys=[LONG_KEY, UPSTREAM_KEY],
            headers={"x-org": "org-secret-42"},
            base_url="https://user:hunter2pass@upstream.test/v1",
            model_map={"gpt": "up-model"},
            models=["gpt*", "!gpt-3*"],
        ),
        channel("backup", priority=-1, models=["gpt*"]),
        channel("off", enabled=False),
    ]
    return make_app(
        channels,
        admin_access_key=ADMIN_KEY,
        extra_proxy_access_keys="extra-client-key-1",
        redis_url="redis://:redispass99@localhost:6379/0",
        **kw,
    )


SECRETS = (
    LONG_KEY,
    UPSTREAM_KEY,
    "org-secret-42",
    "hunter2pass",
    ADMIN_KEY,
    PROXY_KEY,
    "extra-client-key-1",
    "redispass99",
)


async def test_channels_json_effective_config_masked(make_app: AppFactory, client_for: ClientFor) -> None:
    client = client_for(_secret_app(make_app), key=ADMIN_KEY)
    response = await client.get("/admin/channels")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    doc = response.json()
    assert [c["name"] for c in doc["channels"]] == ["backup", "main", "off"]
    assert [c["order"] for c in doc["channels"]] == [0, 1, None]
    main = doc["channels"][1]
    assert main["api_keys"] == ["sk-…mnop", "****"]
    assert main["headers"] == {"x-org": "****"}
    assert main["base_url"] == "https://****@upstream.test/v1"
    assert main["endpoint_url"] == "https://****@upstream.test/v1/responses"
    assert main["model_map"] == {"gpt": "up-model"}
    assert main["models"] == ["gpt*", "!gpt-3*"]
    assert main["first_byte_timeout"] == 300.0  # defaults are filled in: this is the *effective* config
    assert main["idle_timeout"] == 300.0
    # Keys appear by position only, never by value or hash.
    assert main["breaker"] == {"state": "closed", "keys": {"#1": "closed", "#2": "closed"}}
    assert main["affinity"] == {"ttl_seconds": 1800.0}
    assert main["state"] == {"breaker": main["breaker"], "affinity": main["affinity"]}
    assert doc["gateway"]["state_provider"] is True
    assert doc["gateway"]["metrics_path"] == "/metrics"


@pytest.mark.parametrize("path", ["/admin/channels", "/admin/", "/metrics"])
async def test_no_secret_in_any_admin_output(make_app: AppFactory, client_for: ClientFor, path: str) -> None:
    fake = FakeResponsesUpstream()
    app = _secret_app(make_app, transport=httpx.ASGITransport(app=fake))
    proxy = client_for(app)
    # Traffic first, so recent requests and metrics are populated (one failover: LONG_KEY is refused).
    assert (await proxy.post("/responses", json={"model": "gpt-5", "input": "hi", "stream": True})).status_code == 200
    assert (await proxy.post("/responses", json={"model": "nope", "input": "hi"})).status_code == 404
    admin = client_for(app, key=ADMIN_KEY)
    response = await admin.get(path)
    assert response.status_code == 200
    for secret in SECRETS:
        assert secret not in response.text, secret


async def test_recent_requests_per_channel(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeResponsesUpstream()
    channels = [channel("stale", api_keys=["revoked-key-0001"]), channel("main")]
    app = make_app(channels, transport=httpx.ASGITransport(app=fake), admin_access_key=ADMIN_KEY, recent_requests=2)
    proxy = client_for(app)
    ids = []
    for n in range(3):
        response = await proxy.post("/responses", json={"model": "m", "input": "hi"}, headers={"x-request-id": f"r{n}"})
        ids.append(response.headers["x-request-id"])
    await proxy.post("/responses", json={"input": "no model"})
    doc = (await client_for(app, key=ADMIN_KEY).get("/admin/channels")).json()
    by_name = {c["name"]: c for c in doc["channels"]}
    assert [e["request_id"] for e in by_name["main"]["recent"]] == ["r2", "r1"]  # bounded, newest first
    # Failed attempts are listed too; the 401 parked stale's key, so r1 and r2 skipped it.
    assert [e["request_id"] for e in by_name["stale"]["recent"]] == ["r0"]
    assert by_name["stale"]["breaker"]["state"] == "open"
    assert by_name["main"]["breaker"]["state"] == "closed"
    entry = by_name["main"]["recent"][0]
    assert entry["status"] == 200
    assert entry["attempts"] == 1
    assert entry["input_tokens"] == 100
    assert by_name["main"]["stats"] == {"requests": 3, "ok": 3, "failed_attempts": 0}
    assert by_name["stale"]["stats"] == {"requests": 0, "ok": 0, "failed_attempts": 1}
    assert [e["status"] for e in doc["unrouted_recent"]] == [400]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_state_provider(make_app: AppFactory, client_for: ClientFor, kind: str) -> None:
    states = {"main": {"breaker": {"state": "open", "failures": 5}, "affinity": {"sessions": 3}}}

    def sync_provider() -> dict[str, Any]:
        return states

    async def async_provider() -> dict[str, Any]:
        await asyncio.sleep(0)
        return states

    app = make_app(admin_access_key=ADMIN_KEY)
    app.admin.state_provider = sync_provider if kind == "sync" else async_provider
    doc = (await client_for(app, key=ADMIN_KEY).get("/admin/channels")).json()
    [main] = doc["channels"]
    assert main["breaker"] == {"state": "open", "failures": 5}
    assert main["affinity"] == {"sessions": 3}
    assert doc["gateway"]["state_provider"] is True
    page = (await client_for(app, key=ADMIN_KEY).get("/admin/")).text
    assert "breaker: open" in page


async def test_failing_state_provider_does_not_break_admin(make_app: AppFactory, client_for: ClientFor) -> None:
    def broken() -> dict[str, Any]:
        raise ConnectionError("redis down")

    app = make_app(admin_access_key=ADMIN_KEY)
    app.admin.state_provider = broken
    client = client_for(app, key=ADMIN_KEY)
    doc = (await client.get("/admin/channels")).json()
    assert doc["gateway"]["state_error"] == "state provider failed (ConnectionError)"
    assert doc["channels"][0]["breaker"] is None
    assert (await client.get("/admin/")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200


async def test_status_page_escapes_and_headers(make_app: AppFactory, client_for: ClientFor) -> None:
    app = make_app([channel("<script>alert(1)</script>", model_map={"a&b": "<i>"})], admin_access_key=ADMIN_KEY)
    client = client_for(app, key=ADMIN_KEY)
    response = await client.get("/admin/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "<script>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert "a&amp;b &rarr; &lt;i&gt;" in response.text
    redirect = await client.get("/admin")
    assert redirect.status_code == 308
    assert redirect.headers["location"] == "/admin/"


@pytest.mark.parametrize(
    ("provided", "breaker", "error"),
    [
        ({"main": {"breaker": {"state": "open", "opened_at": datetime(2026, 1, 2, tzinfo=UTC)}}}, "open", None),
        ({"main": "not a dict"}, None, None),
        (["not", "a", "mapping"], None, "state provider failed (TypeError)"),
    ],
)
async def test_state_provider_output_is_made_safe(
    make_app: AppFactory, client_for: ClientFor, provided: Any, breaker: str | None, error: str | None
) -> None:
    app = make_app(admin_access_key=ADMIN_KEY)
    app.admin.state_provider = lambda: provided
    doc = (await client_for(app, key=ADMIN_KEY).get("/admin/channels")).json()
    [main] = doc["channels"]
    assert (main["breaker"] or {}).get("state") == breaker
    assert doc["gateway"]["state_error"] == error
