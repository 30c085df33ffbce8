"""``python -m bench.upstream``: microseconds per request of the upstream client's layers, in process.

One loopback server (a raw asyncio server answering precomputed bytes) and, on the same uvloop
loop, four ways to send the same POST and read its JSON answer:

- ``aiohttp``: a plain ``aiohttp.ClientSession`` (the floor);
- ``httpx build_request``: ``httpx.AsyncClient.build_request`` + ``send`` on ccx's
  ``AiohttpTransport`` (the httpx API used the usual way);
- ``httpx Request``: an ``httpx.Request`` built directly + ``send`` (what ``Upstream`` does);
- ``Upstream``: ``Upstream.open`` + ``read_json``, everything the gateway does per upstream call.

The server's own work is in every number, so the differences are what matter. Sockets, no
uvicorn, no gateway: run ``python -m bench.upstream [--requests N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson

_BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
_PAYLOAD = orjson.dumps({"id": "x", "object": "chat.completion", "choices": [{"message": {"content": "hello" * 20}}]})
_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(_PAYLOAD),
    _PAYLOAD,
)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            writer.write(_ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _measure(name: str, one: Callable[[], Awaitable[None]], requests: int) -> float:
    for _ in range(min(300, requests)):
        await one()
    started = time.perf_counter()
    for _ in range(requests):
        await one()
    per = (time.perf_counter() - started) / requests * 1e6
    print(f"| {name} | {per:.1f} |")
    return per


async def _run(requests: int, rounds: int) -> None:
    import aiohttp
    import httpx

    from ccx_asgi.context import Attempt
    from ccx_asgi.settings import ChannelConfig
    from ccx_asgi.upstream import AiohttpTransport, Upstream

    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    headers = [("content-type", "application/json"), ("accept", "application/json"), ("x-request-id", "req_1")]
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    client = httpx.AsyncClient(transport=AiohttpTransport())
    target = httpx.URL(url)
    channel = ChannelConfig(name="c", service_type="chat", base_url=url.rsplit("/chat/", 1)[0])
    attempt = Attempt(channel, "m", None, 0, {})
    upstream = Upstream()

    async def plain() -> None:
        async with session.post(url, data=_BODY, headers=headers) as response:
            orjson.loads(await response.read())

    async def built() -> None:
        request = client.build_request("POST", url, content=_BODY, headers=headers)
        response = await client.send(request, stream=True)
        try:
            orjson.loads(b"".join([chunk async for chunk in response.aiter_bytes()]))
        finally:
            await response.aclose()

    async def direct() -> None:
        response = await client.send(httpx.Request("POST", target, content=_BODY, headers=headers), stream=True)
        try:
            orjson.loads(b"".join([chunk async for chunk in response.aiter_bytes()]))
        finally:
            await response.aclose()

    async def gateway() -> None:
        async with upstream.open(attempt, channel.url("/chat/completions"), headers, _BODY, stream=False) as response:
            await upstream.read_json(attempt, response, 1 << 26)

    try:
        for n in range(rounds):
            print(f"\nround {n + 1}: µs per request (POST + JSON answer over loopback, server included)")
            print("| client | µs/request |\n|---|---|")
            for name, one in (("aiohttp", plain), ("httpx build_request", built), ("httpx Request", direct),
                              ("Upstream", gateway)):  # fmt: skip
                await _measure(name, one, requests)
    finally:
        await session.close()
        await client.aclose()
        await upstream.aclose()
        server.close()


def main() -> None:
    """Measure and print one table per round."""
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import uvloop

    uvloop.run(_run(args.requests, args.rounds))


if __name__ == "__main__":
    main()
