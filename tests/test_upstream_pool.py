"""The upstream client's connection pool: same behaviour as httpcore's, without its O(n²) bookkeeping."""

from __future__ import annotations

import asyncio
from typing import Any

import httpcore
import httpx
import pytest

from ccx_asgi.upstream import Upstream, _LinearPool, _transport
from tests.servers import serve


async def _slow_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.02)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_the_gateway_client_uses_the_linear_pool() -> None:
    transport = Upstream().client._transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    assert type(transport._pool) is _LinearPool


async def _burst(transport: httpx.AsyncHTTPTransport, url: str, n: int) -> tuple[list[int], int, int]:
    """``n`` concurrent requests; the statuses, the most connections seen, the connections kept after."""
    pool = transport._pool
    most = 0
    async with httpx.AsyncClient(transport=transport) as client:

        async def one() -> int:
            nonlocal most
            response = await client.get(url)
            most = max(most, len(pool.connections))
            return response.status_code

        statuses = await asyncio.gather(*(one() for _ in range(n)))
        kept = len(pool.connections)
    return statuses, most, kept


@pytest.mark.parametrize(("limit", "keepalive"), [(4, 4), (8, 2), (64, 16)])
async def test_queueing_reuse_and_keepalive_eviction_match_httpcore(limit: int, keepalive: int) -> None:
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=keepalive)
    with serve(_slow_ok) as base:
        ours = await _burst(_transport(limits), base, 3 * limit)
        stock_transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
        assert type(stock_transport._pool) is httpcore.AsyncConnectionPool
        stock = await _burst(stock_transport, base, 3 * limit)
    assert ours[0] == [200] * (3 * limit)
    assert ours[1] <= limit
    assert ours == stock
