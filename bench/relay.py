"""The floor: a bare uvicorn + Starlette + httpx relay with no conversion.

It forwards ``POST /<path>`` to ``<upstream>/<path>`` and streams the answer back byte for byte,
which is the least any Python gateway on this stack can do. Its added latency is the yardstick for
ccx_asgi's. Run it with ``python -m bench.relay --port N --upstream http://127.0.0.1:M``.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route


def build_relay(upstream: str, *, transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """A Starlette app relaying every POST to ``upstream`` through one shared ``httpx.AsyncClient``.

    ``transport`` replaces the network (tests).
    """
    client = httpx.AsyncClient(
        base_url=upstream,
        transport=transport,
        limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        timeout=httpx.Timeout(300.0, connect=10.0),
        trust_env=False,
    )

    async def relay(request: Request) -> StreamingResponse:
        body = await request.body()
        outgoing = client.build_request(
            "POST",
            request.url.path,
            content=body,
            headers={"content-type": "application/json", "accept": request.headers.get("accept", "*/*")},
        )
        response = await client.send(outgoing, stream=True)
        return StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            media_type=response.headers.get("content-type"),
            background=BackgroundTask(response.aclose),
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(routes=[Route("/{path:path}", relay, methods=["POST"])], lifespan=lifespan)


def main() -> None:
    """Serve the relay on 127.0.0.1 (uvicorn with its fastest loop and parser)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(
        build_relay(args.upstream),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
