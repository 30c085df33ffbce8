"""Request ids: accepted from the client or generated, returned, forwarded upstream once, logged."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from tests.conftest import AppFactory
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events


class RecordingTransport(httpx.ASGITransport):
    """The strict fake upstream behind an ASGI transport that keeps every raw request header list."""

    def __init__(self) -> None:
        self.fake = FakeResponsesUpstream()
        super().__init__(app=self.fake)
        self.seen: list[list[tuple[str, str]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append([(k.lower(), v) for k, v in request.headers.multi_items()])
        return await super().handle_async_request(request)

    def ids(self) -> list[str]:
        """The ``x-request-id`` values of the last upstream request (a list, to catch duplicates)."""
        return [v for k, v in self.seen[-1] if k == "x-request-id"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-request-id": "client-id-1"}, "client-id-1"),
        ({"x-client-request-id": "codex-turn-7"}, "codex-turn-7"),
        ({"x-request-id": "first", "x-client-request-id": "second"}, "first"),
    ],
)
async def test_client_id_is_returned_and_forwarded_once(
    make_app: AppFactory, client_for: ClientFor, headers: dict[str, str], expected: str
) -> None:
    transport = RecordingTransport()
    client = client_for(make_app(transport=transport))
    response = await client.post("/responses", json={"model": "m", "input": "hi", "stream": True}, headers=headers)
    assert response.status_code == 200
    validate_events(parse_sse(response.content))
    assert response.headers["x-request-id"] == expected
    assert transport.ids() == [expected]


async def test_generated_id_is_the_same_everywhere(
    make_app: AppFactory, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    transport = RecordingTransport()
    client = client_for(make_app(transport=transport))
    with caplog.at_level(logging.INFO, logger="ccx_asgi.requests"):
        response = await client.post("/responses", json={"model": "m", "input": "hi"})
    assert response.status_code == 200
    rid = response.headers["x-request-id"]
    assert re.fullmatch(r"req_[0-9a-f]{24}", rid)
    assert transport.ids() == [rid]
    logged = [r.ccx for r in caplog.records if r.name == "ccx_asgi.requests"]  # type: ignore[attr-defined]
    assert [f["request_id"] for f in logged] == [rid]


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "tab\tinside"])
async def test_unusable_client_ids_are_replaced(make_app: AppFactory, client_for: ClientFor, bad: str) -> None:
    transport = RecordingTransport()
    client = client_for(make_app(transport=transport))
    response = await client.post("/responses", json={"model": "m", "input": "hi"}, headers={"x-request-id": bad})
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")
    assert transport.ids() == [response.headers["x-request-id"]]


@pytest.mark.parametrize(
    ("method", "path", "key", "status"),
    [
        ("POST", "/responses", None, 401),
        ("POST", "/responses", "proxy-key-for-tests", 400),
        ("GET", "/models", None, 401),
        ("GET", "/nowhere", "proxy-key-for-tests", 404),
        ("GET", "/admin/channels", "wrong", 401),
        ("GET", "/models", "proxy-key-for-tests", 200),
    ],
)
async def test_every_answer_carries_the_id(
    make_app: AppFactory, client_for: ClientFor, method: str, path: str, key: str | None, status: int
) -> None:
    client = client_for(make_app(models_from_upstream=False), key=key)
    response = await client.request(method, path, content=b"{}", headers={"x-request-id": "trace-me"})
    assert response.status_code == status
    assert response.headers["x-request-id"] == "trace-me"
    assert response.headers.get_list("x-request-id") == ["trace-me"]


async def test_a_pipeline_used_without_the_app_still_answers_with_one_id() -> None:
    # The model mapper heads the /responses pipeline: built by hand (docs/routing.md), it owns the id.
    from tests.fakes.scripted_upstream import Scripted, asgi_client, chan, ok, stack, status

    upstream = Scripted()
    upstream.script("a.test", ok("hi"), status(503))
    async with asgi_client(stack([chan("a")], upstream)) as client:
        served = await client.post("/responses", json={"model": "m", "input": "hi"}, headers={"x-request-id": "own"})
        refused = await client.post("/responses", json={"input": "hi"})
        generated = await client.post("/responses", json={"model": "m", "input": "hi"})
    assert served.status_code == 200
    assert served.headers.get_list("x-request-id") == ["own"]
    assert refused.status_code == 400
    assert refused.headers["x-request-id"].startswith("req_")
    assert generated.status_code == 503  # every channel failed: the failover layer's answer
    assert len(generated.headers.get_list("x-request-id")) == 1
    assert generated.headers["x-request-id"].startswith("req_")


async def test_auth_on_a_host_app_adds_the_id_only_to_its_own_answer() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from ccx_asgi import AuthMiddleware

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = AuthMiddleware(Starlette(routes=[Route("/", hello)]), keys=["k-1"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host.test") as client:
        refused = await client.get("/", headers={"x-request-id": "trace-me"})
        served = await client.get("/", headers={"authorization": "Bearer k-1"})
    assert refused.status_code == 401
    assert refused.headers.get_list("x-request-id") == ["trace-me"]
    assert served.status_code == 200
    assert "x-request-id" not in served.headers  # the host's own responses are the host's business
