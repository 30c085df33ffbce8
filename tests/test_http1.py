"""The fast upstream client (``ccx_asgi.http1``) over real loopback sockets, on asyncio and uvloop.

Most tests talk to a raw ``asyncio.start_server`` that records the exact request bytes and answers
scripted bytes, so framing, keep-alive and failure handling are checked byte for byte. Every socket
test runs on the standard loop and on uvloop (the standalone server's loop, whose transports are not
``asyncio.Transport`` subclasses).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import hashlib
import socket
import ssl
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop

from ccx_asgi import http1
from ccx_asgi.http1 import (
    ConnectError,
    ConnectTimeout,
    Pool,
    PoolTimeout,
    ProtocolError,
    Response,
    Target,
    WriteTimeout,
)
from ccx_asgi.upstream import Upstream
from tests.servers import free_port

# -- harness ---------------------------------------------------------------------------------------

Main = Callable[[], Awaitable[Any]]


class Runner:
    """Runs a test's coroutine on one kind of loop, bounded so a hang fails instead of stalling."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def loop_class(self) -> type[asyncio.AbstractEventLoop]:
        return uvloop.Loop if self.kind == "uvloop" else asyncio.SelectorEventLoop

    def __call__(self, main: Main, *, limit: float = 10.0, loop_factory: Callable[[], Any] | None = None) -> Any:
        async def bounded() -> Any:
            async with asyncio.timeout(limit):
                return await main()

        if self.kind == "uvloop":
            return uvloop.run(bounded(), loop_factory=loop_factory or uvloop.new_event_loop)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(bounded())


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a coroutine function on the standard loop and on uvloop."""
    return Runner(request.param)


class Peer:
    """One accepted connection of a :class:`RawServer`: reads requests and records them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: asyncio.Event) -> None:
        self.reader = reader
        self.writer = writer
        self.requests: list[tuple[bytes, bytes]] = []
        self.eof = asyncio.Event()
        self.got_request = asyncio.Event()
        self.server_got_request = seen

    async def read_request(self) -> tuple[bytes, bytes] | None:
        """The next request's head and body, or ``None`` when the client closed the socket."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof.set()
            return None
        length = int(dict(header_pairs(head)).get(b"content-length", b"0"))
        body = await self.reader.readexactly(length)
        self.requests.append((head, body))
        self.got_request.set()
        self.server_got_request.set()
        return head, body

    async def wait_eof(self) -> bytes:
        """Wait until the client closes (or resets) the socket; return what it sent meanwhile."""
        try:
            data = await self.reader.read()
        except ConnectionError:
            data = b""
        self.eof.set()
        return data

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


Handler = Callable[[Peer], Awaitable[None]]


class RawServer:
    """A loopback TCP (or TLS) server that hands each connection to ``handler``."""

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.host = host
        self.tls = tls
        self.peers: list[Peer] = []
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def requests(self) -> list[tuple[bytes, bytes]]:
        return [r for peer in self.peers for r in peer.requests]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer, self.got_request)
        self.peers.append(peer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(peer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
            pass  # a cancelled handler ends quietly: start_server's callback would log it as an error
        finally:
            self._tasks.discard(task)
            peer.eof.set()
            writer.transport.abort()

    async def __aenter__(self) -> RawServer:
        self.got_request = asyncio.Event()
        self.server = await asyncio.start_server(self._accept, self.host, 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        for peer in self.peers:
            peer.writer.transport.abort()


def header_pairs(head: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, value) pairs of a request head, names as sent."""
    pairs = []
    for line in head.split(b"\r\n")[1:]:
        if line:
            name, _, value = line.partition(b":")
            pairs.append((name, value.strip()))
    return pairs


def ok(body: bytes = b"ok", *extra: bytes, status: bytes = b"200 OK") -> bytes:
    """A complete HTTP/1.1 answer with Content-Length."""
    lines = b"".join(h + b"\r\n" for h in extra)
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n" + lines + b"\r\n" + body


def chunked(*pieces: bytes, trailers: bytes = b"") -> bytes:
    """A chunked answer body (each piece one chunk) with optional trailer lines."""
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n" + trailers + b"\r\n"


def answering(answer: Callable[[Peer, bytes, bytes], bytes | None] | bytes) -> Handler:
    """A handler answering every request on a connection; ``None`` from ``answer`` closes it."""

    async def handle(peer: Peer) -> None:
        while (request := await peer.read_request()) is not None:
            data = answer if isinstance(answer, bytes) else answer(peer, *request)
            if data is None:
                return
            await peer.send(data)

    return handle


async def request(
    pool: Pool,
    url: str | Target,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"{}",
    *,
    method: str = "POST",
    connect_timeout: float = 2.0,
    write_timeout: float = 2.0,
) -> Response:
    target = url if isinstance(url, Target) else Target.parse(url)
    return await pool.request(
        method, target, headers or [], body, connect_timeout=connect_timeout, write_timeout=write_timeout
    )


async def read_into(response: Response, chunks: list[bytes], arrived: asyncio.Event | None = None) -> None:
    """Read a body chunk by chunk into ``chunks`` (setting ``arrived`` at each)."""
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        if arrived is not None:
            arrived.set()


async def fetch(
    pool: Pool, url: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"{}"
) -> tuple[Response, bytes]:
    """One request, its body read to the end, the response closed."""
    response = await request(pool, url, headers, body)
    try:
        data = b"".join([chunk async for chunk in response.aiter_bytes()])
    finally:
        await response.aclose()
    return response, data


# -- request bytes on the wire ---------------------------------------------------------------------


def test_request_head_is_exact(run: Runner) -> None:
    async def main() -> None:
        async with RawServer(answering(ok())) as server:
            pool = Pool()
            response, data = await fetch(
                pool, server.url + "/v1/responses?key=a%2Fb&x=1", [("X-Custom", "Value Kept")], b'{"a":1}'
            )
            await pool.aclose()
        assert (response.status_code, data) == (200, b"ok")
        assert server.requests == [
            (
                b"POST /v1/responses?key=a%2Fb&x=1 HTTP/1.1\r\n"
                + f"host: 127.0.0.1:{server.port}\r\n".encode()
                + b"x-custom: Value Kept\r\nuser-agent: ccx-asgi\r\naccept-encoding: gzip, deflate\r\n"
                b"content-length: 7\r\n\r\n",
                b'{"a":1}',
            )
        ]

    run(main)


def test_caller_framing_headers_are_never_sent(run: Runner) -> None:
    async def main() -> None:
        async with RawServer(answering(ok())) as server:
            pool = Pool()
            given = [
                ("Host", "evil.example"),
                ("Content-Length", "999"),
                ("Transfer-Encoding", "chunked"),
                ("Connection", "close"),
                ("Keep-Alive", "timeout=1"),
                ("TE", "trailers"),
                ("User-Agent", "codex/1.0"),
                ("Accept-Encoding", "identity"),
                ("X-UPPER", "MiXeD"),
            ]
            await fetch(pool, server.url + "/x", given, b"hello")
            await pool.aclose()
        head, body = server.requests[0]
        assert body == b"hello"
        assert header_pairs(head) == [
            (b"host", f"127.0.0.1:{server.port}".encode()),
            (b"user-agent", b"codex/1.0"),
            (b"accept-encoding", b"identity"),
            (b"x-upper", b"MiXeD"),
            (b"content-length", b"5"),
        ]

    run(main)


def test_host_omits_the_default_port(run: Runner) -> None:
    async def main() -> None:
        async with RawServer(answering(ok())) as server:
            pool = Pool()
            # Parsed as port 80 (so the Host header has no port), connected to the test server.
            target = dataclasses.replace(Target.parse("http://127.0.0.1/v1/responses"), port=server.port)
            response = await request(pool, target)
            await response.aclose()
            await pool.aclose()
        assert dict(header_pairs(server.requests[0][0]))[b"host"] == b"127.0.0.1"

    run(main)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback here")
def test_ipv6_host_is_bracketed_on_the_wire(run: Runner) -> None:
    async def main() -> None:
        async with RawServer(answering(ok()), host="::1") as server:
            pool = Pool()
            _, data = await fetch(pool, server.url + "/v1")
            await pool.aclose()
        assert data == b"ok"
        assert dict(header_pairs(server.requests[0][0]))[b"host"] == f"[::1]:{server.port}".encode()

    run(main)


def test_non_ascii_path_and_query_are_percent_encoded(run: Runner) -> None:
    async def main() -> None:
        async with RawServer(answering(ok())) as server:
            pool = Pool()
            await fetch(pool, server.url + "/v1/modèle/ü?q=ä&k=%2F")
            await pool.aclose()
        assert server.requests[0][0].startswith(b"POST /v1/mod%C3%A8le/%C3%BC?q=%C3%A4&k=%2F HTTP/1.1\r\n")

    run(main)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-a", "v\r\nx-injected: 1"),
        ("x-a", "v\nx-injected: 1"),
        ("x-a", "v\rx"),
        ("x-a", "v\x00x"),
        ("x-a\r\nx-injected", "1"),
        ("x-a\n", "1"),
        ("x\x00a", "1"),
        ("x a", "1"),
        ("x:a", "1"),
        ("", "1"),
    ],
)
def test_header_splitting_is_refused_before_anything_is_sent(run: Runner, name: str, value: str) -> None:
    async def main() -> None:
        async with RawServer(answering(ok())) as server:
            pool = Pool(max_connections=1)
            with pytest.raises(ValueError, match="malformed") as raised:
                await request(pool, server.url + "/v1", [("x-fine", "1"), (name, value)])
            assert value not in str(raised.value), "a header value (maybe a key) was echoed"
            # Nothing reached the wire, and the refusal took no slot.
            _, data = await fetch(pool, server.url + "/v1")
            await pool.aclose()
        assert data == b"ok"
        assert len(server.requests) == 1
        assert b"x-injected" not in server.requests[0][0]
        assert b"x-fine" not in server.requests[0][0]

    run(main)


# -- answers ---------------------------------------------------------------------------------------


def test_chunked_answer_with_extensions_and_trailers_then_reuse(run: Runner) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n6;x\r\n world\r\n0\r\nx-trailer: t\r\nx-other: u\r\n\r\n"
    )

    async def main() -> None:
        async with RawServer(answering(answer)) as server:
            pool = Pool()
            first, body1 = await fetch(pool, server.url)
            _, body2 = await fetch(pool, server.url)
            await pool.aclose()
        assert first.status_code == 200
        assert body1 == body2 == b"hello world"
        assert len(server.peers) == 1, "a chunked answer with trailers must leave the connection reusable"

    run(main)


def test_close_delimited_answer_is_complete_and_not_reused(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\npart one, ")
        await asyncio.sleep(0.02)
        await peer.send(b"part two")
        peer.writer.close()

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            _, first = await fetch(pool, server.url)
            _, second = await fetch(pool, server.url)
            await pool.aclose()
        assert first == second == b"part one, part two"
        assert len(server.peers) == 2

    run(main)


def test_reset_in_a_close_delimited_body_is_an_error(run: Runner) -> None:
    # Without a length, only a clean close ends the body: a reset (RST) means it was cut.
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: 1\n\n")
        await asyncio.sleep(0.05)
        sock = peer.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.writer.transport.abort()

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            response = await request(pool, server.url)
            received: list[bytes] = []
            with pytest.raises(ProtocolError, match="ConnectionResetError"):
                await read_into(response, received)
            assert received == [b"data: 1\n\n"]
            await response.aclose()
            await pool.aclose()

    run(main)


@pytest.mark.parametrize(
    "answer",
    [
        ok(b"ok", b"connection: close"),
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0"],
)
def test_answers_that_end_the_connection_are_not_reused(run: Runner, answer: bytes) -> None:
    async def main() -> None:
        # The server keeps the socket open: only the answer says it must not be reused.
        async with RawServer(answering(answer)) as server:
            pool = Pool()
            for _ in range(3):
                _, data = await fetch(pool, server.url)
                assert data == b"ok"
            await pool.aclose()
        assert len(server.peers) == 3
        assert all(len(peer.requests) == 1 for peer in server.peers)

    run(main)


def test_http_1_0_keep_alive_answer_is_reused(run: Runner) -> None:
    answer = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok"

    async def main() -> None:
        async with RawServer(answering(answer)) as server:
            pool = Pool()
            for _ in range(3):
                await fetch(pool, server.url)
            await pool.aclose()
        assert len(server.peers) == 1

    run(main)


def test_informational_answers_are_skipped(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            await asyncio.sleep(0.01)
            await peer.send(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
            await asyncio.sleep(0.01)
            await peer.send(ok(b"real", b"x-real: yes"))

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            first, body = await fetch(pool, server.url)
            _, body2 = await fetch(pool, server.url)
            await pool.aclose()
        assert (first.status_code, body, body2) == (200, b"real", b"real")
        assert first.headers == {"content-length": "4", "x-real": "yes"}
        assert len(server.peers) == 1

    run(main)


def test_repeated_headers_are_joined_and_names_lower_cased(run: Runner) -> None:
    answer = ok(b"", b"X-Rate: a", b"x-rate: b", b"Set-Cookie: c=1", b"X-Rate: c", status=b"429 Too Many Requests")

    async def main() -> None:
        async with RawServer(answering(answer)) as server:
            pool = Pool()
            response, body = await fetch(pool, server.url)
            await pool.aclose()
        assert response.status_code == 429
        assert body == b""
        assert response.headers["x-rate"] == "a, b, c"
        assert response.headers.get("set-cookie") == "c=1"
        assert "X-Rate" not in response.headers

    run(main)


_PLAIN = b"".join(b'{"type":"response.output_text.delta","delta":"word %d "}\n' % n for n in range(2000))


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


_ENCODED = {
    "gzip": gzip.compress(_PLAIN),
    "deflate-zlib": zlib.compress(_PLAIN),
    "deflate-raw": _raw_deflate(_PLAIN),
}


@pytest.mark.parametrize("split", ["whole", "tiny-chunks"])
@pytest.mark.parametrize("kind", list(_ENCODED))
def test_content_encoding_is_decoded(run: Runner, kind: str, split: str) -> None:
    encoded = _ENCODED[kind]
    name = kind.split("-")[0].encode()

    async def handle(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if split == "whole":
                await peer.send(ok(encoded, b"content-encoding: " + name))
                continue
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-encoding: " + name + b"\r\ntransfer-encoding: chunked\r\n\r\n")
            # The first pieces one byte each and read one at a time (a zlib header is two bytes),
            # then the rest in 7-byte chunks.
            pieces = [encoded[:1], encoded[1:2], encoded[2:3]]
            for piece in pieces:
                await peer.send(chunked(piece)[: -len(b"0\r\n\r\n")])
                await asyncio.sleep(0.01)
            rest = encoded[3:]
            await peer.send(chunked(*(rest[i : i + 7] for i in range(0, len(rest), 7))))

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            response, data = await fetch(pool, server.url)
            _, again = await fetch(pool, server.url)
            await pool.aclose()
        assert response.headers["content-encoding"] == name.decode()
        assert data == again == _PLAIN
        assert len(server.peers) == 1

    run(main)


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        (b"gzip", b"this is not gzip at all"),
        (b"gzip", gzip.compress(b"x" * 1000)[:-8] + b"\x00" * 8),  # wrong CRC and length
        (b"deflate", b"\xff\xff\xff\xff not deflate either"),
    ],
    ids=["gzip-garbage", "gzip-bad-crc", "deflate-garbage"],
)
def test_corrupt_encoded_body_raises_protocol_error(run: Runner, encoding: bytes, body: bytes) -> None:
    async def main() -> None:
        async with RawServer(answering(ok(body, b"content-encoding: " + encoding))) as server:
            pool = Pool()
            response = await request(pool, server.url)
            with pytest.raises(ProtocolError, match="does not decode"):
                async for _ in response.aiter_bytes():
                    pass
            await response.aclose()
            await pool.aclose()

    run(main)


def test_oversized_head_of_many_headers(run: Runner) -> None:
    headers = [b"x-h%d: %s" % (n, b"v" * 1000) for n in range(80)]

    async def main() -> None:
        async with RawServer(answering(ok(b"ok", *headers))) as server:
            pool = Pool()
            with pytest.raises(ProtocolError, match=f"exceeds {http1.MAX_HEAD} bytes"):
                await request(pool, server.url)
            await pool.aclose()

    run(main)


def endless_after(prefix: bytes) -> Handler:
    """A handler that sends ``prefix`` and then a header line that never ends (1.6 MB of it)."""

    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(prefix)
        for _ in range(200):
            await peer.send(b"a" * 8192)
            await asyncio.sleep(0.001)
        await asyncio.sleep(30)

    return handle


def test_oversized_head_that_never_ends_fails_fast(run: Runner) -> None:
    # One header value that never ends: the limit must hold while it is still arriving, not only
    # once the parser has a complete header to report.
    async def main() -> None:
        async with RawServer(endless_after(b"HTTP/1.1 200 OK\r\nx-endless: ")) as server:
            pool = Pool()
            started = time.monotonic()
            with pytest.raises(ProtocolError, match=f"exceeds {http1.MAX_HEAD} bytes"):
                await request(pool, server.url)
            assert time.monotonic() - started < 3
            await pool.aclose()

    run(main)


def test_trailers_that_never_end_fail_fast(run: Runner) -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-endless: "

    async def main() -> None:
        async with RawServer(endless_after(head)) as server:
            pool = Pool()
            response = await request(pool, server.url)
            received: list[bytes] = []
            with pytest.raises(ProtocolError, match=f"trailers exceed {http1.MAX_HEAD} bytes"):
                await read_into(response, received)
            assert received == [b"hello"]
            await response.aclose()
            await pool.aclose()

    run(main)


def test_large_bodies_in_many_small_chunks_are_not_mistaken_for_framing(run: Runner) -> None:
    # Chunk lines count as framing only until the next body byte: a long body of tiny chunks is fine.
    pieces = [b"%06d" % n for n in range(40_000)]

    async def main() -> None:
        async with RawServer(
            answering(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked(*pieces))
        ) as server:
            pool = Pool()
            _, data = await fetch(pool, server.url)
            await pool.aclose()
        assert data == b"".join(pieces)

    run(main)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTPT/1.1 200 OK\r\n\r\n",
        b"\x16\x03\x01\x02\x00garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nokk",
        b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
    ],
    ids=["status", "protocol", "binary", "length-and-chunked", "two-lengths", "huge-length", "no-colon"],
)
def test_malformed_status_line_raises_protocol_error(run: Runner, answer: bytes) -> None:
    async def main() -> None:
        async with RawServer(answering(answer)) as server:
            pool = Pool()
            with pytest.raises(ProtocolError, match="malformed"):
                await request(pool, server.url)
            await pool.aclose()

    run(main)


def test_cut_body_raises_protocol_error_when_read(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b")
        await asyncio.sleep(0.02)

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            response = await request(pool, server.url)
            assert response.status_code == 200
            received: list[bytes] = []
            with pytest.raises(ProtocolError, match="closed the connection"):
                await read_into(response, received)
            assert received == [b"only ten b"]
            await response.aclose()
            await pool.aclose()

    run(main)


def test_cut_chunked_body_raises_protocol_error(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            response = await request(pool, server.url)
            with pytest.raises(ProtocolError):
                async for _ in response.aiter_bytes():
                    pass
            await response.aclose()
            await pool.aclose()

    run(main)


def test_extra_answer_bytes_never_join_the_body(run: Runner) -> None:
    # A second, unrequested answer right behind the first (a desynchronised upstream or proxy):
    # the body ends where its Content-Length says, and the connection is not trusted again.
    answer = ok(b"first") + ok(b"smuggled")

    async def main() -> None:
        async with RawServer(answering(answer)) as server:
            pool = Pool()
            _, first = await fetch(pool, server.url)
            _, second = await fetch(pool, server.url)
            await pool.aclose()
        assert first == second == b"first"
        assert len(server.peers) == 2

    run(main)


# -- keep-alive ------------------------------------------------------------------------------------


def test_sequential_requests_reuse_one_connection(run: Runner) -> None:
    async def main() -> None:
        async with RawServer(answering(lambda peer, head, body: ok(body))) as server:
            pool = Pool()
            for n in range(5):
                _, data = await fetch(pool, server.url + f"/r{n}", body=b"n=%d" % n)
                assert data == b"n=%d" % n
            await pool.aclose()
        assert len(server.peers) == 1
        assert [head.split(b" ")[1] for head, _ in server.peers[0].requests] == [b"/r0", b"/r1", b"/r2", b"/r3", b"/r4"]

    run(main)


def test_connection_closed_while_idle_is_not_reused(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok())
        peer.writer.close()

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            await fetch(pool, server.url)
            await asyncio.sleep(0.05)  # the close reaches the client
            target = Target.parse(server.url)
            assert pool._take(target.key) is None, "a socket the server closed was offered for reuse"
            _, data = await fetch(pool, server.url)
            await pool.aclose()
        assert data == b"ok"
        assert [len(peer.requests) for peer in server.peers] == [1, 1]

    run(main)


def test_stale_reused_socket_is_retried_once_on_a_new_connection(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(ok(b"first"))
        if server.peers.index(peer) == 0:
            # The first connection: take the next request, then close without a byte of answer.
            await peer.read_request()
            peer.writer.transport.abort()
            return
        while await peer.read_request() is not None:
            await peer.send(ok(b"again"))

    server = RawServer(handle)

    async def main() -> None:
        async with server:
            pool = Pool()
            _, first = await fetch(pool, server.url)
            _, retried = await fetch(pool, server.url, body=b"second request")
            await pool.aclose()
        assert (first, retried) == (b"first", b"first")
        assert [len(peer.requests) for peer in server.peers] == [2, 1]
        assert server.peers[0].requests[1] == server.peers[1].requests[0]
        assert server.peers[1].requests[0][1] == b"second request"

    run(main)


def test_retry_happens_once_only(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        if not server.peers.index(peer):
            await peer.send(ok())
            await peer.read_request()
        peer.writer.transport.abort()

    server = RawServer(handle)

    async def main() -> None:
        async with server:
            pool = Pool()
            await fetch(pool, server.url)
            with pytest.raises(ProtocolError, match="closed the connection"):
                await request(pool, server.url)
            await asyncio.sleep(0.05)
            await pool.aclose()
        assert [len(peer.requests) for peer in server.peers] == [2, 1]

    run(main)


def test_no_retry_on_a_new_connection_or_after_answer_bytes(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        if server.peers.index(peer) == 0:
            await peer.send(ok())
            await peer.read_request()
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-")  # part of an answer, then gone
        peer.writer.transport.abort()

    server = RawServer(handle)

    async def main() -> None:
        async with server:
            pool = Pool()
            await fetch(pool, server.url)
            # Reused connection, but answer bytes arrived: the request may have been acted on.
            with pytest.raises(ProtocolError):
                await request(pool, server.url)
            # New connection closed before any answer: nothing to suspect, no retry.
            with pytest.raises(ProtocolError):
                await request(pool, server.url)
            await asyncio.sleep(0.05)
            await pool.aclose()
        assert [len(peer.requests) for peer in server.peers] == [2, 1]

    run(main)


def test_idle_connections_expire(run: Runner) -> None:
    async def main() -> None:
        async with RawServer(answering(ok())) as server:
            pool = Pool(keepalive_expiry=0.1)
            await fetch(pool, server.url)
            await fetch(pool, server.url)  # within the expiry: reused
            await asyncio.sleep(0.2)
            await fetch(pool, server.url)
            await asyncio.wait_for(server.peers[0].eof.wait(), 2)  # the expired socket was closed
            await pool.aclose()
        assert [len(peer.requests) for peer in server.peers] == [2, 1]

    run(main)


@pytest.mark.parametrize(("max_idle", "connections"), [(0, 4), (1, 3), (2, 2)])
def test_max_idle_caps_kept_connections(run: Runner, max_idle: int, connections: int) -> None:
    async def main() -> None:
        arrived: list[asyncio.Future[None]] = []

        async def handle(peer: Peer) -> None:
            while await peer.read_request() is not None:
                # Answer only once two requests are in, so two rounds each need two sockets.
                future = asyncio.get_running_loop().create_future()
                arrived.append(future)
                if len(arrived) % 2 == 0:
                    for f in arrived[-2:]:
                        f.set_result(None)
                await future
                await peer.send(ok())

        async with RawServer(handle) as server:
            pool = Pool(max_idle=max_idle)
            for _ in range(2):
                results = await asyncio.gather(fetch(pool, server.url), fetch(pool, server.url))
                assert [data for _, data in results] == [b"ok", b"ok"]
            await pool.aclose()
        assert len(server.peers) == connections

    run(main)


@pytest.mark.parametrize("size", [20, 300_000, 2_000_000])
def test_closing_an_unread_response_drops_the_socket(run: Runner, size: int) -> None:
    async def main() -> None:
        async with RawServer(answering(lambda peer, head, body: ok(b"b" * size))) as server:
            pool = Pool(max_connections=1)
            response = await request(pool, server.url)
            await asyncio.sleep(0.1)  # let what fits arrive
            await response.aclose()
            await asyncio.wait_for(server.peers[0].eof.wait(), 2)
            _, data = await fetch(pool, server.url)
            await pool.aclose()
        assert data == b"b" * size
        assert [len(peer.requests) for peer in server.peers] == [1, 1]

    run(main)


def test_partly_read_body_then_close_drops_the_socket(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nfirst")
            await asyncio.sleep(0.05)
            await peer.send(b"-rest")

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            response = await request(pool, server.url)
            chunks = response.aiter_bytes()
            assert await anext(chunks) == b"first"
            await response.aclose()
            await asyncio.wait_for(server.peers[0].eof.wait(), 2)
            _, data = await fetch(pool, server.url)
            await pool.aclose()
        assert data == b"first-rest"
        assert len(server.peers) == 2

    run(main)


def test_unprompted_bytes_on_an_idle_connection_make_it_unusable(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(ok())
            if server.peers.index(peer) == 0:
                await asyncio.sleep(0.02)
                await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nunasked")

    server = RawServer(handle)

    async def main() -> None:
        async with server:
            pool = Pool()
            await fetch(pool, server.url)
            await asyncio.sleep(0.1)
            _, data = await fetch(pool, server.url)
            await pool.aclose()
        assert data == b"ok"
        assert [len(peer.requests) for peer in server.peers] == [1, 1]

    run(main)


def test_server_speaking_first_on_a_new_connection(run: Runner) -> None:
    # A banner before any request (not an HTTP server at all): an error at once, never a hang.
    async def handle(peer: Peer) -> None:
        await peer.send(b"SSH-2.0-OpenSSH_9.2\r\n")
        await peer.read_request()
        await asyncio.sleep(30)

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            started = time.monotonic()
            with pytest.raises(ProtocolError):
                await request(pool, server.url)
            assert time.monotonic() - started < 2
            await pool.aclose()

    run(main)


def test_connection_lost_before_the_request_is_sent(run: Runner) -> None:
    # The socket dies between connecting and sending (a reset right after the handshake): an
    # error at once, not a wait for an answer that cannot come.
    base = run.loop_class()

    class DroppedOnConnect(base):  # type: ignore[valid-type,misc]
        async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
            transport, protocol = await super().create_connection(*args, **kwargs)
            transport.abort()
            await asyncio.sleep(0.01)  # connection_lost has run
            return transport, protocol

    async def main() -> None:
        async with RawServer(answering(ok())) as server:
            pool = Pool()
            started = time.monotonic()
            with pytest.raises(ProtocolError, match="closed"):
                await request(pool, server.url)
            assert time.monotonic() - started < 2
            await pool.aclose()

    run(main, loop_factory=DroppedOnConnect)


def test_early_answer_to_a_large_body_then_close(run: Runner) -> None:
    # A server refusing a body it will not read (nginx's 413) answers after the head and closes.
    async def handle(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(ok(b"too large", b"connection: close", status=b"413 Payload Too Large"))
        peer.writer.close()
        await asyncio.sleep(0.5)

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            response = await request(pool, server.url, body=b"x" * (16 * 1024 * 1024), write_timeout=3)
            received: list[bytes] = []
            await read_into(response, received)
            await response.aclose()
            await pool.aclose()
        assert response.status_code == 413
        assert b"".join(received) == b"too large"

    run(main)


def test_early_answer_on_a_connection_kept_open(run: Runner) -> None:
    # The same refusal without closing and without reading the body: the answer must come back at
    # once (not a WriteTimeout), and the socket, still holding unsent request bytes, is not reused.
    async def handle(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(ok(b"too large", status=b"413 Payload Too Large"))
        await peer.eof.wait()

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            started = time.monotonic()
            response = await request(pool, server.url, body=b"x" * (16 * 1024 * 1024), write_timeout=5)
            received: list[bytes] = []
            await read_into(response, received)
            await response.aclose()
            elapsed = time.monotonic() - started
            async with asyncio.timeout(2):
                # the dropped socket reaches the server as EOF or reset
                while not server.peers[0].writer.transport.is_closing():
                    data = await server.peers[0].reader.read(1 << 20)
                    if not data:
                        break
            await pool.aclose()
        assert response.status_code == 413
        assert b"".join(received) == b"too large"
        assert elapsed < 3, elapsed

    run(main)


def test_many_concurrent_requests_share_a_bounded_pool(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        while (request := await peer.read_request()) is not None:
            await asyncio.sleep(0.005)
            await peer.send(ok(request[1]))

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool(max_connections=8, max_idle=8)
            results = await asyncio.gather(*(fetch(pool, server.url, body=b"%d" % n) for n in range(200)))
            await pool.aclose()
        assert [data for _, data in results] == [b"%d" % n for n in range(200)]
        assert len(server.peers) <= 8
        assert len(server.requests) == 200

    run(main)


# -- flow control and limits -----------------------------------------------------------------------


def test_large_body_to_a_slow_consumer_is_bounded_and_intact(run: Runner) -> None:
    body = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)

    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
        for offset in range(0, len(body), 256 * 1024):
            await peer.send(body[offset : offset + 256 * 1024])
        await peer.read_request()

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            response = await request(pool, server.url)
            digest = hashlib.sha256()
            biggest = total = 0
            async for chunk in response.aiter_bytes():
                digest.update(chunk)
                biggest = max(biggest, len(chunk))
                total += len(chunk)
                await asyncio.sleep(0.004)  # a slow client
            await response.aclose()
            await pool.aclose()
        assert total == len(body)
        assert digest.digest() == hashlib.sha256(body).digest()
        # Reading paused at the high-water mark: what the client holds stays near 256 KB plus one
        # socket read, not the megabytes a fast loopback sender could push meanwhile.
        assert biggest <= 1024 * 1024, biggest

    run(main, limit=20)


def test_request_body_the_server_never_reads_gives_write_timeout(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        if server.peers.index(peer) == 0:
            await asyncio.sleep(30)  # never reads
        await answering(ok())(peer)

    server = RawServer(handle)

    async def main() -> None:
        async with server:
            pool = Pool(max_connections=1)
            started = time.monotonic()
            with pytest.raises(WriteTimeout):
                await request(pool, server.url, body=b"x" * (48 * 1024 * 1024), write_timeout=0.3)
            assert 0.25 < time.monotonic() - started < 3
            _, data = await fetch(pool, server.url)  # the slot came back
            await pool.aclose()
        assert data == b"ok"

    run(main, limit=20)


def test_one_slot_makes_the_second_request_wait(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await asyncio.sleep(0.3)
            await peer.send(ok())

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool(max_connections=1)
            started = time.monotonic()
            first = asyncio.create_task(fetch(pool, server.url))
            await asyncio.sleep(0.05)
            _, data = await fetch(pool, server.url)
            elapsed = time.monotonic() - started
            await first
            await pool.aclose()
        assert data == b"ok"
        assert elapsed >= 0.55, "the second request did not wait for the first"
        assert len(server.peers) == 1

    run(main)


def test_pool_timeout_when_the_only_slot_never_frees(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        await peer.read_request()
        await asyncio.sleep(30)

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool(max_connections=1)
            stuck = asyncio.create_task(request(pool, server.url))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            with pytest.raises(PoolTimeout):
                await request(pool, server.url, connect_timeout=0.2)
            assert 0.15 < time.monotonic() - started < 1.5
            stuck.cancel()
            await pool.aclose()
        assert len(server.peers) == 1

    run(main)


def test_connect_refused_gives_connect_error(run: Runner) -> None:
    async def main() -> None:
        pool = Pool()
        with pytest.raises(ConnectError, match="ConnectionRefusedError") as raised:
            await request(pool, f"http://127.0.0.1:{free_port()}/v1?key=sk-secret")
        assert not isinstance(raised.value, ConnectTimeout)
        assert "sk-secret" not in str(raised.value)
        await pool.aclose()

    run(main)


def test_slow_connect_gives_connect_timeout(run: Runner) -> None:
    base = run.loop_class()

    class SlowConnect(base):  # type: ignore[valid-type,misc]
        async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(30)

    async def main() -> None:
        pool = Pool()
        started = time.monotonic()
        with pytest.raises(ConnectTimeout):
            await request(pool, "http://127.0.0.1:9/v1", connect_timeout=0.2)
        assert 0.15 < time.monotonic() - started < 1.5
        await pool.aclose()

    run(main, loop_factory=SlowConnect)


def test_stalled_tls_handshake_gives_connect_timeout(run: Runner) -> None:
    async def silent(peer: Peer) -> None:
        await asyncio.sleep(30)

    async def main() -> None:
        async with RawServer(silent) as server:
            pool = Pool(ssl_context=ssl.create_default_context())
            started = time.monotonic()
            with pytest.raises(ConnectTimeout):
                await request(pool, f"https://127.0.0.1:{server.port}/v1", connect_timeout=0.3)
            assert 0.25 < time.monotonic() - started < 2
            await pool.aclose()

    run(main)


# -- cancellation ----------------------------------------------------------------------------------


def test_cancel_while_waiting_for_the_head(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        if server.peers.index(peer) == 0:
            await peer.read_request()
            await peer.wait_eof()
            return
        await answering(ok())(peer)

    server = RawServer(handle)

    async def main() -> None:
        async with server:
            pool = Pool(max_connections=1)
            task = asyncio.create_task(request(pool, server.url))
            await server.got_request.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(server.peers[0].eof.wait(), 2)  # the socket was dropped
            _, data = await asyncio.wait_for(fetch(pool, server.url), 2)  # and the slot freed
            await pool.aclose()
        assert data == b"ok"
        assert len(server.peers) == 2

    run(main)


def test_cancel_in_the_middle_of_the_body(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        if server.peers.index(peer) == 0:
            await peer.read_request()
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nstart")
            await peer.wait_eof()
            return
        await answering(ok())(peer)

    server = RawServer(handle)

    async def consume(pool: Pool, got: list[bytes], arrived: asyncio.Event) -> None:
        # How the gateway reads: the response is always closed, whatever ends the read.
        response = await request(pool, server.url)
        try:
            await read_into(response, got, arrived)
        finally:
            await response.aclose()

    async def main() -> None:
        async with server:
            pool = Pool(max_connections=1)
            got: list[bytes] = []
            arrived = asyncio.Event()
            task = asyncio.create_task(consume(pool, got, arrived))
            await arrived.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(server.peers[0].eof.wait(), 2)
            _, data = await asyncio.wait_for(fetch(pool, server.url), 2)
            await pool.aclose()
        assert got == [b"start"]
        assert data == b"ok"
        assert len(server.peers) == 2

    run(main)


def test_cancel_while_waiting_for_a_slot_takes_no_slot(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await asyncio.sleep(0.2)
            await peer.send(ok())

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool(max_connections=1)
            first = asyncio.create_task(fetch(pool, server.url))
            await asyncio.sleep(0.02)
            waiting = asyncio.create_task(fetch(pool, server.url))
            await asyncio.sleep(0.02)
            waiting.cancel()
            await first
            _, data = await asyncio.wait_for(fetch(pool, server.url), 2)
            await pool.aclose()
        assert data == b"ok"
        assert len(server.requests) == 2

    run(main)


# -- TLS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def test_https_with_a_trusted_private_ca(run: Runner, ca: trustme.CA) -> None:
    async def main() -> None:
        async with RawServer(answering(ok(b"secure")), tls=_server_tls(ca)) as server:
            client = ssl.create_default_context()
            ca.configure_trust(client)
            pool = Pool(ssl_context=client)
            _, first = await fetch(pool, server.url + "/v1")
            _, second = await fetch(pool, server.url + "/v1")
            await pool.aclose()
        assert first == second == b"secure"
        assert len(server.peers) == 1, "TLS connections are kept alive too"
        assert dict(header_pairs(server.requests[0][0]))[b"host"] == f"127.0.0.1:{server.port}".encode()

    run(main)


def test_default_context_rejects_an_unknown_ca(run: Runner, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    async def main() -> None:
        async with RawServer(answering(ok()), tls=_server_tls(ca)) as server:
            pool = Pool()
            with pytest.raises(ConnectError, match="SSLCertVerificationError"):
                await request(pool, server.url + "/v1")
            await pool.aclose()
        assert server.requests == []

    run(main)


def test_default_context_honours_ssl_cert_file(
    run: Runner, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    async def main() -> None:
        async with RawServer(answering(ok(b"private ca")), tls=_server_tls(ca)) as server:
            pool = Pool()
            _, data = await fetch(pool, server.url + "/v1")
            await pool.aclose()
        assert data == b"private ca"

    run(main)


def test_default_context_checks_the_host_name(
    run: Runner, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(context)

    async def main() -> None:
        async with RawServer(answering(ok()), tls=context) as server:
            pool = Pool()
            with pytest.raises(ConnectError):
                await request(pool, server.url + "/v1")
            await pool.aclose()

    run(main)


# -- Target.parse ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "authority", "path", "port"),
    [
        ("http://example.com/v1/responses", b"example.com", b"/v1/responses", 80),
        ("http://example.com:80/v1", b"example.com", b"/v1", 80),
        ("https://example.com:443", b"example.com", b"/", 443),
        ("https://Example.COM:8443/v1?a=1&b=%20", b"example.com:8443", b"/v1?a=1&b=%20", 8443),
        ("http://example.com:443/", b"example.com:443", b"/", 443),
        ("HTTPS://[::1]:8443/v1", b"[::1]:8443", b"/v1", 8443),
        ("http://[::1]/", b"[::1]", b"/", 80),
        ("https://bücher.example/v1", b"xn--bcher-kva.example", b"/v1", 443),
        ("http://h/a/é", b"h", b"/a/%C3%A9", 80),
        ("http://h/v1#fragment", b"h", b"/v1", 80),
    ],
)
def test_target_parse(url: str, authority: bytes, path: bytes, port: int) -> None:
    target = Target.parse(url)
    assert (target.authority, target.path, target.port) == (authority, path, port)
    assert target.key == (target.scheme, target.host, port)


SECRET = "sk-SECRET0123456789"


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://example.com/v1?key={SECRET}",
        f"file:///etc/passwd?key={SECRET}",
        f"example.com/v1?key={SECRET}",
        f"http:///v1?key={SECRET}",
        f"http://:8080/v1?key={SECRET}",
        f"http://example.com:{SECRET}/v1",
        f"http://example.com:99999/v1?key={SECRET}",
        f"http://example.com:0/v1?key={SECRET}",
        f"http://example.com:-1/v1?key={SECRET}",
        f"http://exa mple.com/v1?key={SECRET}",
        f"http://example.com/v 1?key={SECRET}",
        f"http://example.com/v1?key={SECRET}\r\nx-injected: 1",
        f"http://example.com/v1\nx?key={SECRET}",
        f"http://exam\tple.com/v1?key={SECRET}",
        f"http://example.com/v1\x00?key={SECRET}",
        f" http://example.com/v1?key={SECRET}",
        f"http://example.com/v1?key={SECRET}\x7f",
        f"http://[::1/v1?key={SECRET}",
    ],
)
def test_target_parse_refuses_without_echoing_the_url(url: str) -> None:
    with pytest.raises(ValueError, match="URL") as raised:
        Target.parse(url)
    message = str(raised.value)
    assert SECRET not in message
    assert "example.com" not in message
    assert message


# -- the pool itself -------------------------------------------------------------------------------


def test_closed_pool_refuses_and_closes_idle_sockets(run: Runner) -> None:
    async def main() -> None:
        async with RawServer(answering(ok())) as server:
            pool = Pool()
            await fetch(pool, server.url)
            await pool.aclose()
            await asyncio.wait_for(server.peers[0].eof.wait(), 2)
            with pytest.raises(ConnectError, match="closed"):
                await request(pool, server.url)
        assert len(server.peers) == 1

    run(main)


def test_pool_close_with_an_answer_in_flight(run: Runner) -> None:
    async def handle(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nfirst")
            await asyncio.sleep(0.05)
            await peer.send(b"-ok")

    async def main() -> None:
        async with RawServer(handle) as server:
            pool = Pool()
            response = await request(pool, server.url)
            await pool.aclose()
            received: list[bytes] = []
            await read_into(response, received)  # the answer in flight still arrives whole
            await response.aclose()
            await asyncio.wait_for(server.peers[0].eof.wait(), 2)  # then its socket is closed, not kept
        assert b"".join(received) == b"first-ok"

    run(main)


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_bodiless_statuses_end_at_the_head_and_keep_the_connection(run: Runner, status: bytes) -> None:
    async def main() -> None:
        async with RawServer(answering(b"HTTP/1.1 " + status + b"\r\nx-a: 1\r\n\r\n")) as server:
            pool = Pool()
            results = [await fetch(pool, server.url) for _ in range(3)]
            await pool.aclose()
        assert [(r.status_code, data) for r, data in results] == [(int(status[:3]), b"")] * 3
        assert len(server.peers) == 1

    run(main)


# -- URL credentials and event loops ---------------------------------------------------------------


def test_url_user_info_becomes_basic_credentials(run: Runner) -> None:
    async def main() -> None:
        async with RawServer(answering(ok())) as server:
            pool = Pool()
            with_info = server.url.replace("://", "://us%40er:p%3Ass@") + "/v1"
            await fetch(pool, with_info)
            await fetch(pool, with_info, [("authorization", "Bearer sk-channel")])
            await pool.aclose()
        first, second = (dict(header_pairs(head)) for head, _ in server.requests)
        assert first[b"authorization"] == b"Basic " + base64.b64encode(b"us@er:p:ss")
        assert first[b"host"] == f"127.0.0.1:{server.port}".encode()  # never the user info
        assert second[b"authorization"] == b"Bearer sk-channel"  # a given header wins, and only one is sent
        assert sum(name == b"authorization" for name, _ in header_pairs(server.requests[1][0])) == 1
        assert "p:ss" not in repr(Target.parse(with_info)) and "p%3Ass" not in repr(Target.parse(with_info))

    run(main)


def test_upstream_makes_one_pool_per_event_loop() -> None:
    upstream = Upstream()
    pools: list[Pool] = []

    async def main() -> None:
        async with asyncio.timeout(10), RawServer(answering(ok())) as server:
            pool = upstream.pool
            pools.append(pool)
            _, data = await fetch(pool, server.url)
            assert data == b"ok"
            assert upstream.pool is pool  # the same loop keeps its pool (and its sockets)

    asyncio.run(main())
    uvloop.run(main())  # the same app driven from a second loop must not touch the first one's sockets
    asyncio.run(main())
    assert len({id(p) for p in pools}) == 3
    asyncio.run(upstream.aclose())
