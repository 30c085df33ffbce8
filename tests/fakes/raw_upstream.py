"""A raw TCP upstream on loopback whose answers are exact bytes, for the hostile-upstream suite.

Each accepted connection reads whole requests (head plus ``Content-Length`` body) and hands them to
``script(conn, request)``, an async function that writes whatever bytes it likes (malformed heads,
glued answers, bombs), stalls, half-closes or resets. The server records every request (so a test
can prove no POST arrived twice) and every connection (so it can prove the gateway closed it).
Optionally TLS (``ssl=``), and a tiny HTTP proxy (``ConnectProxy``) that tunnels ``CONNECT`` and
forwards absolute-form requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.sse import encode_event


@dataclass
class RawRequest:
    """One request as the upstream saw it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


@dataclass
class Conn:
    """One accepted connection: the script writes to ``writer``; ``closed`` is set at EOF from the peer."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[RawRequest] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def stall(self) -> None:
        """Send nothing more until the gateway hangs up."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass
        self.closed.set()

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Script = Callable[[Conn, RawRequest], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    return RawRequest(method, target, headers, body)


class RawUpstream:
    """The server: ``async with RawUpstream(script) as up`` gives ``up.url`` (``http(s)://host:port``)."""

    def __init__(self, script: Script, *, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.script = script
        self.ssl_context = ssl_context
        self.host = host
        self.conns: list[Conn] = []
        self.requests: list[RawRequest] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted = asyncio.Condition()
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self.conns:
            conn.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(reader, writer)
        self.conns.append(conn)
        async with self._accepted:
            self._accepted.notify_all()
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                conn.requests.append(request)
                self.requests.append(request)
                await self.script(conn, request)
                if writer.transport.is_closing():
                    break
            # Wait for the gateway's FIN (the script may have half-closed or stalled already).
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a cancelled handler (the server shutting down) ends quietly
        finally:
            conn.closed.set()
            writer.transport.abort()
            self._tasks.discard(task)

    async def connections(self, count: int) -> None:
        """Wait until ``count`` connections have been accepted."""
        async with self._accepted:
            await self._accepted.wait_for(lambda: len(self.conns) >= count)

    async def all_closed(self, within: float = 2.0) -> bool:
        """Whether the gateway has closed every connection it opened here (within ``within`` seconds)."""
        try:
            async with asyncio.timeout(within):
                for conn in self.conns:
                    await conn.closed.wait()
        except TimeoutError:
            return False
        return True


def head(status: int = 200, *headers: str, reason: str = "X") -> bytes:
    """A response head with the given header lines."""
    return (f"HTTP/1.1 {status} {reason}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def json_answer(data: Any, status: int = 200) -> bytes:
    """A whole JSON answer with a correct ``Content-Length``."""
    body = orjson.dumps(data)
    return head(status, "content-type: application/json", f"content-length: {len(body)}") + body


def completed(text: str, model: str = "m") -> dict[str, Any]:
    """A completed Responses object answering ``text``."""
    stream = ResponseStream(model)
    index = stream.open_item("message")
    stream.delta(index, text)
    stream.complete(usage_dict(3, 1))
    events = list(stream.take())
    return dict(events[-1]["response"])


def sse_events(text: str, model: str = "m") -> list[bytes]:
    """A valid Responses event stream answering ``text``, one encoded event per item."""
    stream = ResponseStream(model)
    index = stream.open_item("message")
    stream.delta(index, text)
    stream.complete(usage_dict(3, 1))
    return [encode_event(e) for e in stream.take()]


def chunked(*pieces: bytes) -> bytes:
    """Chunked framing of ``pieces`` with the last chunk."""
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces if p) + b"0\r\n\r\n"


def ok_answer(request: RawRequest, text: str = "pong") -> bytes:
    """A correct answer for ``request``: JSON, or a chunked event stream when it asked to stream."""
    body = request.json() or {}
    if body.get("stream"):
        return head(200, "content-type: text/event-stream", "transfer-encoding: chunked") + chunked(*sse_events(text))
    return json_answer(completed(text))


class ConnectProxy:
    """A tiny HTTP proxy: tunnels ``CONNECT host:port`` and forwards absolute-form requests.

    Records each request line and its ``Proxy-Authorization`` header.
    """

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            head_bytes = await reader.readuntil(b"\r\n\r\n")
            lines = head_bytes.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            auth = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in lines[1:]
                    if line.lower().startswith("proxy-authorization:")
                ),
                None,
            )
            self.seen.append((f"{method} {target}", auth))
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                rest = target.split("://", 1)[1]
                hostport, _, path = rest.partition("/")
                host, _, port = hostport.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                kept = [line for line in lines[1:] if line and not line.lower().startswith("proxy-")]
                up_writer.write(
                    f"{method} /{path} {version}\r\n".encode()
                    + "".join(f"{line}\r\n" for line in kept).encode()
                    + b"\r\n"
                )

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                with contextlib.suppress(ConnectionError):
                    while data := await src.read(65536):
                        dst.write(data)
                        await dst.drain()
                with contextlib.suppress(OSError):
                    dst.write_eof()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            # Both sides, also when the proxy is shut down mid-tunnel (a task cancelled in gather).
            if up_writer is not None:
                up_writer.close()
            writer.close()
            self._tasks.discard(task)
