"""``ModelMapperMiddleware`` in front of a host's own endpoint: the body it read is replayed."""

from __future__ import annotations

import gzip

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ccx_asgi import ModelMapperMiddleware
from ccx_asgi.context import get_context
from ccx_asgi.settings import ChannelConfig
from tests.fakes.scripted_upstream import chan


async def echo(request: Request) -> JSONResponse:
    body = await request.json()  # the host reads the body the mapper already consumed
    ctx = get_context(request.scope)
    return JSONResponse({"body": body, "model": ctx.model, "candidates": [c.channel.name for c in ctx.candidates]})


def _client() -> httpx.AsyncClient:
    app = ModelMapperMiddleware(
        Starlette(routes=[Route("/responses", echo, methods=["POST"])]),
        channels=[ChannelConfig.model_validate(chan("a"))],
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host.test")


async def test_a_starlette_endpoint_behind_the_mapper_reads_the_body() -> None:
    body = {"model": "gpt-5", "input": "hi", "metadata": {"k": "v"}}
    async with _client() as client:
        response = await client.post("/responses", json=body)
    assert response.status_code == 200
    assert response.json() == {"body": body, "model": "gpt-5", "candidates": ["a"]}


async def test_the_replayed_body_is_the_bytes_the_client_sent() -> None:
    async def raw_echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    app = ModelMapperMiddleware(
        Starlette(routes=[Route("/responses", raw_echo, methods=["POST"])]),
        channels=[ChannelConfig.model_validate(chan("a"))],
    )
    raw = gzip.compress(orjson.dumps({"model": "gpt-5", "input": "compressed"}))
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host.test") as client:
        response = await client.post("/responses", content=raw, headers=headers)
    assert response.status_code == 200
    assert response.content == raw  # as received, still gzip: the header that says so is unchanged


async def test_replay_hands_the_body_out_once_then_passes_on() -> None:
    from ccx_asgi.body import replay
    from ccx_asgi.types import Message

    async def server() -> Message:
        return {"type": "http.disconnect"}

    receive = replay(b'{"a": 1}', server)
    assert await receive() == {"type": "http.request", "body": b'{"a": 1}', "more_body": False}
    assert await receive() == {"type": "http.disconnect"}
    assert await receive() == {"type": "http.disconnect"}
