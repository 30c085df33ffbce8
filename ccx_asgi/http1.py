"""A lean HTTP/1.1 client for the upstream hot path: asyncio protocols, httptools' C parser, a pool.

Why not httpx here: on loopback, a request through ``httpx.AsyncClient`` costs about 0.85 ms of
client CPU (request and URL models, header objects, httpcore's pool and h11's pure-Python parser),
which was almost all of what the gateway added to a request; the same request through this client
costs about 0.17 ms (``python -m bench``, docs/performance.md). It does exactly what the gateway
needs and nothing else: ``POST``/``GET`` with a complete body, HTTP/1.1 keep-alive, ``http`` and
``https``, ``Content-Length``, chunked and close-delimited answers, ``gzip``/``deflate`` decoding,
flow control both ways, and hard limits on the answer's head. It never follows redirects, never
keeps cookies and never reads proxy settings from the environment (like the httpx client it
replaces, which ran with ``trust_env=False``).

httpx stays for what is not on the hot path or must be replaceable: injected transports (tests, a
host's own transport), the built-in demo channel and the ``/models`` lists. ``CCX_UPSTREAM_CLIENT=
httpx`` sends everything through httpx.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit

import httptools

__all__ = [
    "ClientError",
    "ConnectError",
    "ConnectTimeout",
    "Pool",
    "PoolTimeout",
    "ProtocolError",
    "Response",
    "Target",
    "WriteTimeout",
    "default_ssl_context",
]


class ClientError(Exception):
    """Any failure of an upstream exchange. Messages never carry header values or bodies."""


class ConnectError(ClientError):
    """The upstream could not be reached (DNS, refused, TLS)."""


class ConnectTimeout(ConnectError):
    """Connecting (including the TLS handshake) took longer than the connect timeout."""


class PoolTimeout(ClientError):
    """Every connection slot stayed busy for longer than the connect timeout."""


class WriteTimeout(ClientError):
    """The upstream did not take the request body within the write timeout."""


class ProtocolError(ClientError):
    """The upstream broke HTTP/1.1: a malformed answer, an oversized head, or a cut connection."""


#: Largest answer head (status line and headers) accepted; real upstreams send 1-4 KB.
MAX_HEAD = 64 * 1024
#: Unread answer bytes buffered per connection before reading from the socket pauses.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_USER_AGENT = b"ccx-asgi"
_PATH_SAFE = "/%:@!$&'()*+,;=?~-._"
# RFC 9110 token characters (lower case: names are lower-cased first); anything else in a name, CR and
# LF included, could split the request.
_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_FRAMING = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"te"})


def default_ssl_context() -> ssl.SSLContext:
    """TLS settings for upstreams: certificate and host checks on, ``certifi``'s CA bundle.

    ``SSL_CERT_FILE``/``SSL_CERT_DIR``, when set, replace the bundle (a private CA in front of a
    self-hosted model). certifi comes with httpx, and is what the httpx client used before.
    """
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    if cafile is None and capath is None:
        import certifi

        cafile = certifi.where()
    context = ssl.create_default_context(cafile=cafile, capath=capath)
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed upstream URL: what to connect to and the request line's target."""

    scheme: str
    host: str
    port: int
    #: The ``Host`` header value (the port only when not the scheme's default; IPv6 in brackets).
    authority: bytes
    #: The path and query, as sent on the request line.
    path: bytes
    #: ``Basic`` credentials from the URL's user info, sent when the caller gives no ``authorization``.
    auth: bytes | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, str, int]:
        """The pool key: connections are only reused for the same scheme, host and port."""
        return (self.scheme, self.host, self.port)

    @classmethod
    def parse(cls, url: str) -> Target:
        """Parse an ``http``/``https`` URL; :class:`ValueError` names what is wrong (never the URL's secrets)."""
        # urlsplit silently drops tabs and line breaks and strips outer whitespace: refuse them
        # first, so the URL used is the URL given. Messages never quote the URL (keys in queries).
        if any(c <= " " or c == "\x7f" for c in url):
            raise ValueError("URL contains whitespace or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError("URL is malformed (its host or port)") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {scheme!r} (http or https)")
        host = parts.hostname
        if not host:
            raise ValueError("URL has no host")
        if port == 0:
            raise ValueError("URL has port 0")
        default = 443 if scheme == "https" else 80
        port = port or default
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        shown = f"[{host}]" if ":" in host else host
        authority = shown if port == default else f"{shown}:{port}"
        # Percent-encode what may not appear raw on a request line (as httpx did); '%' stays as given.
        path = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_PATH_SAFE)
        for text in (authority, path):
            if any(c in text for c in "\r\n\x00 \t"):
                raise ValueError("URL contains whitespace or control characters")
        auth = None
        if parts.username is not None or parts.password is not None:
            # As httpx did with such a base_url: user info becomes Basic credentials, never part of Host.
            user, password = unquote(parts.username or ""), unquote(parts.password or "")
            auth = b"Basic " + base64.b64encode(f"{user}:{password}".encode())
        return cls(scheme, host, port, authority.encode("ascii"), path.encode("utf-8"), auth)


def _encode(value: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _head(method: bytes, target: Target, headers: list[tuple[str, str]], length: int) -> bytes:
    """The request head. Framing is the client's own; CR, LF or NUL in a header is refused."""
    lines = [method, b" ", target.path, b" HTTP/1.1\r\nhost: ", target.authority, b"\r\n"]
    agent = encoding = authorized = False
    for name, value in headers:
        raw_name = _encode(name.lower())
        if raw_name in _FRAMING:
            continue
        raw_value = _encode(value)
        bad_value = b"\r" in raw_value or b"\n" in raw_value or b"\x00" in raw_value
        if bad_value or not raw_name or raw_name.translate(None, _TOKEN):
            raise ValueError(f"header {name!r} has a malformed name or value")
        agent = agent or raw_name == b"user-agent"
        encoding = encoding or raw_name == b"accept-encoding"
        authorized = authorized or raw_name == b"authorization"
        lines += (raw_name, b": ", raw_value, b"\r\n")
    if not agent:
        lines.append(b"user-agent: " + _USER_AGENT + b"\r\n")
    if not encoding:
        lines.append(b"accept-encoding: gzip, deflate\r\n")
    if target.auth is not None and not authorized:
        lines.append(b"authorization: " + target.auth + b"\r\n")
    lines += (b"content-length: ", str(length).encode(), b"\r\n\r\n")
    return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One socket to one upstream origin, carrying one exchange at a time."""

    def __init__(self, pool: Pool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.used = False  # served an exchange before: a failure before any answer byte may be a stale socket
        self.busy = False
        self.waiter: asyncio.Future[None] | None = None
        self.write_waiter: asyncio.Future[None] | None = None
        self.write_paused = False
        self.read_paused = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        # Bytes since the last body piece: the head (1xx answers included), chunk lines, trailers.
        self.framing_bytes = 0
        self.head_done = False
        self.keep_alive = False
        self.complete = False
        self.framed = False  # Content-Length or chunked: otherwise the body ends when the socket does
        self.received = False
        self.error: ClientError | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0

    # -- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            # Bytes nobody asked for (a server speaking out of turn): the socket cannot be trusted.
            self.abort()
            return
        self.received = True
        self.framing_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.complete:
                self._fail(ProtocolError(f"malformed HTTP answer from the upstream ({type(exc).__name__})"))
            # else: bytes after the complete answer (see on_message_begin); the answer stands.
            self.abort()
            return
        if self.framing_bytes > MAX_HEAD and not self.complete:
            # httptools keeps a header (or trailer) that has not ended yet in memory without limit,
            # and never reports it to on_header: the limit must hold on the bytes as they arrive.
            part = "trailers exceed" if self.head_done else "head exceeds"
            self._fail(ProtocolError(f"the upstream's answer {part} {MAX_HEAD} bytes"))
            self.abort()
            return
        if self.buffered > _HIGH_WATER and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy and not self.complete:
            if self.head_done and not self.framed and self.error is None and exc is None:
                self.complete = True  # a close-delimited body ends here (a clean close; a reset cuts it)
            elif self.error is None:
                self.error = ProtocolError(
                    "the upstream closed the connection before the answer was complete"
                    + (f" ({type(exc).__name__})" if exc is not None else "")
                )
        self._wake()
        if self.write_waiter is not None and not self.write_waiter.done():
            self.write_waiter.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.write_waiter is not None and not self.write_waiter.done():
            self.write_waiter.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # A second answer to one request (a desynchronised upstream or proxy): it must neither
            # join this body nor be taken as the next request's answer. The raise stops the parser.
            raise ValueError("answer after the complete answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD:
            # Raised inside the parser's callback, which wraps it: keep this message, not the wrapper's.
            self._fail(ProtocolError(f"the upstream's answer head exceeds {MAX_HEAD} bytes"))
            raise ValueError("answer head too large")
        name = name.lower()
        if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            # 1xx (103 Early Hints from a CDN): informational, the real answer follows.
            self.headers = []
            self.head_size = 0
            self.framed = False
            return
        self.status = status
        # Read here: the parser forgets it once the message is complete.
        self.keep_alive = self.parser.should_keep_alive()
        self.head_done = True
        self._wake()
        if self.write_waiter is not None and not self.write_waiter.done():
            self.write_waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.framing_bytes = 0
        self.chunks.append(body)
        self.buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True
            self._wake()

    # -- used by the pool and the response --------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: ClientError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def abort(self) -> None:
        """Drop the socket at once (a cancelled or broken exchange)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def _wait(self) -> None:
        self.waiter = self.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def send(self, data: bytes, write_timeout: float) -> None:
        """Start an exchange: write the whole request, waiting for the socket when its buffer is full."""
        assert self.transport is not None
        self._reset()
        self.busy = True
        if self.closed:
            # Dropped between connecting and sending (bytes arrived before the request did): no
            # connection_lost will come to end the wait for the answer.
            raise ProtocolError("the upstream closed the connection before the request was sent")
        self.transport.write(data)
        try:
            async with asyncio.timeout(write_timeout):
                # An answer that arrives before the whole request was taken (a 413 for a huge body)
                # ends the wait: it is the answer, whether or not the upstream reads the rest.
                while self.write_paused and not self.closed and not self.head_done:
                    self.write_waiter = self.loop.create_future()
                    await self.write_waiter
        except TimeoutError:
            raise WriteTimeout(f"the upstream did not take the request within {write_timeout:g}s") from None
        finally:
            self.write_waiter = None
        if self.write_paused:
            self.keep_alive = False  # part of the request is still unsent: the socket cannot carry another

    async def head(self) -> None:
        """Wait for the answer's status and headers."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def read(self) -> bytes:
        """The body bytes received since the last call; ``b""`` at the end of the body."""
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait()
        chunks = self.chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()
        return data


class Response:
    """An upstream answer whose body is read as it arrives.

    Mirrors the part of ``httpx.Response`` the gateway uses (``status_code``, ``headers.get``,
    ``aiter_bytes``, ``aclose``), so both clients serve the same code. Always ``aclose()`` it: that
    returns the connection to the pool when the body was read to its end, and drops it otherwise.
    """

    __slots__ = ("_conn", "_done", "_pool", "headers", "status_code")

    def __init__(self, pool: Pool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self._done = False
        self.status_code = conn.status
        headers: dict[str, str] = {}
        for name, value in conn.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        #: Lower-case header names; repeated headers joined with ", ".
        self.headers = headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, with ``gzip``/``deflate`` content encoding undone."""
        encoding = self.headers.get("content-encoding", "").strip().lower()
        decoder: Any = None
        if encoding in ("gzip", "x-gzip"):
            decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            decoder = _Deflate()
        conn = self._conn
        while True:
            data = await conn.read()
            if not data:
                break
            if decoder is not None:
                try:
                    data = decoder.decompress(data)
                except zlib.error:
                    raise ProtocolError(f"the upstream's {encoding} body does not decode") from None
                if not data:
                    continue
            yield data
        if decoder is not None:
            try:
                tail = decoder.flush()
            except zlib.error:
                raise ProtocolError(f"the upstream's {encoding} body does not decode") from None
            if tail:
                yield tail

    async def aclose(self) -> None:
        """Release the connection: back to the pool if the body was read to its clean end, else closed."""
        if self._done:
            return
        self._done = True
        conn = self._conn
        # Unread body bytes: the caller gave up on the answer; the socket may also be paused for
        # reading, which would stall the next exchange on it.
        self._pool._release(conn, conn.complete and conn.error is None and not conn.chunks)


class _Deflate:
    """``deflate`` as servers send it: zlib-wrapped per the RFC, or raw (a common mistake)."""

    def __init__(self) -> None:
        self.first = True
        self.head = b""
        self.obj = zlib.decompressobj()

    def decompress(self, data: bytes) -> bytes:
        if self.first:
            # zlib can only tell its two-byte header from raw deflate once it has both bytes: a body
            # whose first chunk is one byte would otherwise be taken for zlib and fail on the next.
            data = self.head + data
            if len(data) < 2:
                self.head = data
                return b""
            self.first = False
            try:
                return self.obj.decompress(data)
            except zlib.error:
                self.obj = zlib.decompressobj(-zlib.MAX_WBITS)
        return self.obj.decompress(data)

    def flush(self) -> bytes:
        if self.first and self.head:
            self.first = False
            return self.obj.decompress(self.head) + self.obj.flush()
        return self.obj.flush()


class Pool:
    """Keep-alive connections per origin, at most ``max_connections`` exchanges at once.

    Idle connections are reused newest first and dropped after ``keepalive_expiry`` seconds; at most
    ``max_idle`` are kept. A request that fails on a reused connection before any answer byte
    arrived (the upstream closed an idle socket as it was reused) is sent once more on a new one.
    """

    def __init__(
        self,
        *,
        max_connections: int = 512,
        max_idle: int = 128,
        keepalive_expiry: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        #: The loop this pool's sockets belong to (it is made on first use, inside a running loop).
        self.loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._expiry = keepalive_expiry
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = default_ssl_context()
        return self._ssl

    async def request(
        self,
        method: str,
        target: Target,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        connect_timeout: float,
        write_timeout: float,
    ) -> Response:
        """Send one request and return its answer once the status and headers are in.

        The caller bounds the wait for the answer (first-byte timeout) and reads the body with its
        own idle timeout; cancelling at any point drops the connection.
        """
        if self._closed:
            raise ConnectError("the upstream client is closed")
        data = _head(method.encode("ascii"), target, headers, len(body)) + body
        if self._slots.locked():
            try:
                async with asyncio.timeout(connect_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise PoolTimeout(f"no upstream connection slot free within {connect_timeout:g}s") from None
        else:
            await self._slots.acquire()
        conn: _Connection | None = None
        try:
            for attempt in (0, 1):
                conn = self._take(target.key) if attempt == 0 else None
                if conn is None:
                    conn = await self._connect(target, connect_timeout)
                try:
                    await conn.send(data, write_timeout)
                    await conn.head()
                except ProtocolError:
                    if attempt == 0 and conn.used and not conn.received:
                        conn.abort()
                        continue
                    raise
                conn.used = True
                return Response(self, conn)
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            if conn is not None:
                conn.busy = False
                conn.abort()
            self._slots.release()
            raise

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        stack = self._idle.get(key)
        now = time.monotonic()
        while stack:
            conn = stack.pop()
            self._idle_count -= 1
            if not conn.closed and now - conn.idle_since < self._expiry:
                return conn
            conn.abort()
        return None

    async def _connect(self, target: Target, limit: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if target.scheme == "https" else None
        conn = _Connection(self, target.key)
        try:
            async with asyncio.timeout(limit):
                await loop.create_connection(
                    lambda: conn,
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls is not None else None,
                )
        except TimeoutError:
            conn.abort()
            raise ConnectTimeout(f"no connection to the upstream within {limit:g}s") from None
        except (OSError, ValueError) as exc:  # ssl.SSLError and socket.gaierror are OSErrors
            conn.abort()
            raise ConnectError(f"could not connect to the upstream ({type(exc).__name__})") from None
        return conn

    def _release(self, conn: _Connection, reusable: bool) -> None:
        conn.busy = False
        self._slots.release()
        if not reusable or conn.closed or self._closed or self._idle_count >= self._max_idle or not conn.keep_alive:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_count += 1

    async def aclose(self) -> None:
        """Close every idle connection; connections in use close when their answers are released."""
        self._closed = True
        for stack in self._idle.values():
            for conn in stack:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
        self._idle_count = 0
