"""``ccx_asgi.upstream.AiohttpTransport`` on its own: httpx's API over aiohttp, against raw loopback
servers. aiohttp failures become the httpx exception that says what happened (not httpx-aiohttp's
``ClientConnectionError`` → ``ConnectTimeout``), decompression is bounded per read, a POST is
never replayed, pools are separate, and a transport survives being driven from a second loop."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import warnings
import zlib

import httpx
import pytest
import trustme

from ccx_asgi.upstream import AiohttpTransport, Pool, default_ssl_context
from tests.fakes.raw_upstream import Conn, RawRequest, RawUpstream, head, json_answer

#: Standard loop and uvloop (``pytest_asyncio_loop_factories`` in ``tests/conftest.py``).
BOTH_LOOPS = True


def client(transport: AiohttpTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, connect=1))


async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client(AiohttpTransport()) as c:
        with pytest.raises(httpx.ConnectError) as info:
            await c.post(f"http://127.0.0.1:{port}/x", content=b"{}")
    assert not isinstance(info.value, httpx.TimeoutException)
    assert "cannot connect" in str(info.value)


@pytest.mark.parametrize("mid_body", [False, True])
async def test_a_dropped_connection_is_a_protocol_error_not_a_timeout_and_never_replayed(mid_body: bool) -> None:
    async def drop(conn: Conn, request: RawRequest) -> None:
        if mid_body:
            await conn.send(head(200, "content-length: 100") + b"partial")
        conn.writer.close()

    async with RawUpstream(drop) as up, client(AiohttpTransport()) as c:
        with pytest.raises(httpx.RemoteProtocolError) as info:
            await c.post(up.url + "/x", content=b"{}")  # reads the whole body
        expected = "cut short" if mid_body else "without answering"
        assert expected in str(info.value)
        assert len(up.requests) == 1


async def test_a_full_pool_waits_connect_timeout_then_connect_timeout() -> None:
    async def stall(conn: Conn, request: RawRequest) -> None:
        await conn.send(head(200, "content-length: 10"))
        await conn.stall()

    async with RawUpstream(stall) as up, client(AiohttpTransport(default=Pool(limit=1))) as c:
        first = await c.send(c.build_request("POST", up.url + "/a", content=b"1"), stream=True)
        started = time.monotonic()
        with pytest.raises(httpx.ConnectTimeout):
            await c.post(up.url + "/b", content=b"2", timeout=httpx.Timeout(5, connect=0.3))
        assert time.monotonic() - started < 1.5
        await first.aclose()
        assert len(up.requests) == 1


async def test_certificate_errors_say_why() -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)

    async def never(conn: Conn, request: RawRequest) -> None:
        raise AssertionError("no request may arrive over an unverified connection")

    async with RawUpstream(never, ssl_context=context, host="localhost") as up, client(AiohttpTransport()) as c:
        with pytest.raises(httpx.ConnectError) as info:
            await c.get(up.url + "/x")
    assert "TLS certificate verification failed" in str(info.value)


async def test_an_invalid_url_is_unsupported() -> None:
    async with client(AiohttpTransport()) as c:
        with pytest.raises(httpx.UnsupportedProtocol):
            await c.get("ftp://127.0.0.1/x")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_decompression_is_bounded_per_read(encoding: str) -> None:
    wbits = zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    bomb = b"".join(compressor.compress(b"\0" * 2**20) for _ in range(64)) + compressor.flush()
    answer = head(200, f"content-encoding: {encoding}", f"content-length: {len(bomb)}") + bomb

    async def send_bomb(conn: Conn, request: RawRequest) -> None:
        await conn.send(answer)

    async with (
        RawUpstream(send_bomb) as up,
        client(AiohttpTransport()) as c,
        c.stream("GET", up.url + "/x") as response,
    ):
        assert "content-encoding" not in response.headers  # decoded once, by aiohttp
        sizes = [len(chunk) async for chunk in response.aiter_raw()]
    assert sum(sizes) == 64 * 2**20
    assert max(sizes) <= 2**20, f"one read inflated to {max(sizes)} bytes"  # of a 64 MiB bomb


async def test_cookies_are_neither_kept_nor_sent() -> None:
    async def cookie(conn: Conn, request: RawRequest) -> None:
        await conn.send(
            json_answer({"cookie": request.headers.get("cookie")}).replace(
                b"\r\n\r\n", b"\r\nset-cookie: s=1\r\n\r\n", 1
            )
        )

    async with RawUpstream(cookie) as up, client(AiohttpTransport()) as c:
        first = await c.get(up.url + "/x")
        second = await c.get(up.url + "/x")
    assert "set-cookie" not in first.headers
    assert second.json() == {"cookie": None}


async def test_pools_are_separate_and_bounded() -> None:
    async def stall(conn: Conn, request: RawRequest) -> None:
        await conn.send(head(200, "content-length: 10"))
        await conn.stall()

    async def ok(conn: Conn, request: RawRequest) -> None:
        await conn.send(json_answer({"ok": True}))

    small, other = Pool(limit=2), Pool(limit=2)
    async with RawUpstream(stall) as slow, RawUpstream(ok) as fast, client(AiohttpTransport()) as c:
        held = [
            await c.send(c.build_request("GET", slow.url + "/x", extensions={"ccx_pool": small}), stream=True)
            for _ in range(2)
        ]
        answer = await c.get(fast.url + "/y", extensions={"ccx_pool": other})
        assert answer.json() == {"ok": True}
        with pytest.raises(httpx.ConnectTimeout):
            await c.get(fast.url + "/y", extensions={"ccx_pool": small}, timeout=httpx.Timeout(5, connect=0.2))
        for response in held:
            await response.aclose()


def test_a_transport_used_from_a_second_event_loop_starts_new_pools() -> None:
    transport = AiohttpTransport()

    async def once(url: str) -> int:
        async with RawUpstream(lambda conn, request: conn.send(json_answer({"n": 1}))) as up:
            c = httpx.AsyncClient(transport=transport)
            return (await c.get(up.url + url)).status_code

    assert asyncio.run(once("/a")) == 200
    assert asyncio.run(once("/b")) == 200
    asyncio.run(transport.aclose())


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="TCP_USER_TIMEOUT is Linux-only")
async def test_an_upstream_that_stops_reading_the_body_ends_the_request_at_write_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await asyncio.sleep(30)

    server = await asyncio.start_server(never_reads, "127.0.0.1", 0, limit=1024)
    for sock in server.sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = server.sockets[0].getsockname()[1]
    pool = Pool(ssl=default_ssl_context(), write_timeout=0.5)
    try:
        async with client(AiohttpTransport(default=pool)) as c:
            started = time.monotonic()
            with pytest.raises(httpx.WriteTimeout) as info:
                async with asyncio.timeout(20):
                    await c.post(f"http://127.0.0.1:{port}/x", content=b"x" * (64 * 2**20))
            assert time.monotonic() - started < 10
        assert "write_timeout" in str(info.value)
    finally:
        for writer in accepted:  # the server's side of the connection, which it never read
            writer.transport.abort()
        server.close()


@pytest.mark.parametrize(("expiry", "connections"), [(5.0, 1), (0.0, 3)])
async def test_keepalive_expiry_zero_means_a_connection_per_request(expiry: float, connections: int) -> None:
    async def ok(conn: Conn, request: RawRequest) -> None:
        await conn.send(json_answer({"ok": True}))

    async with RawUpstream(ok) as up, client(AiohttpTransport(keepalive_expiry=expiry)) as c:
        for _ in range(3):
            assert (await c.get(up.url + "/x")).json() == {"ok": True}
    assert len(up.conns) == connections


@pytest.mark.parametrize("size", [1000, 2**20 + 1, 3 * 2**20])
async def test_large_bodies_arrive_whole_without_aiohttps_large_body_warning(size: int) -> None:
    # Above 1 MiB aiohttp warns that a bytes body is written in one piece; the transport hands such
    # bodies over as a file object (64 KiB pieces under flow control), byte for byte the same.
    seen: list[RawRequest] = []

    async def echo(conn: Conn, request: RawRequest) -> None:
        seen.append(request)
        await conn.send(json_answer({"ok": True}))

    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with RawUpstream(echo) as up, client(AiohttpTransport()) as c:
            assert (await c.post(up.url + "/x", content=body)).json() == {"ok": True}
    assert seen[0].body == body and seen[0].headers["content-length"] == str(size)
    assert not [w for w in caught if "large body" in str(w.message)]
