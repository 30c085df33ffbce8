"""All upstream I/O, and the one boundary where transport exceptions and upstream error statuses
become :class:`~ccx_asgi.errors.UpstreamError`.

Every upstream call (channels, the ``/models`` lists, the built-in demo channel) goes through one
long-lived ``httpx.AsyncClient``: httpx is the API and its ``transport=`` the test seam. Real
traffic runs on aiohttp underneath (:class:`AiohttpTransport`: llhttp's C parser, aiohttp's pool,
TLS and proxies); the demo channel is an in-process transport mounted on a reserved host. Each
channel has its own aiohttp connection pool (``max_connections``, proxy, CA), so a stalled upstream
can only use up its own connections. The client is created lazily (mounted sub-apps get no
lifespan events) and closed by :meth:`Upstream.aclose`.

Deadlines: connecting (and waiting for a pooled connection) within ``connect_timeout``; the answer's
head within ``first_byte_timeout``; a non-streaming answer whole within ``first_byte_timeout`` from
the start of the request; an error body within ``idle_timeout`` (and 256 KiB); every streamed read
within ``idle_timeout``; a request body that the upstream stops taking within ``write_timeout``.

A request is never sent twice by this module: aiohttp retries a request on a new connection only
for idempotent methods, and every gateway request is a POST (the ``GET /models`` lists excepted),
so a request that was written is answered or fails. A pooled connection the upstream has already
closed is never used (aiohttp drops it before the write).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import io
import logging
import os
import re
import socket
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiohttp
import certifi
import httpx
import orjson
import yarl

from ccx_asgi.context import Attempt
from ccx_asgi.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from ccx_asgi.hints import upstream_error_hint
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.upstream_errors import upstream_status_error

__all__ = ["AiohttpTransport", "StreamRedactor", "Upstream", "UpstreamResponse", "forwardable_headers", "redact"]

# Client headers that must never reach an upstream: hop-by-hop, framing (the client sets its own), client
# credentials (the channel's key replaces them), cookies and anything that says who/where the
# client is or could steer the upstream host.
_DROP = frozenset(
    {
        "host", "content-length", "content-type", "content-encoding", "accept-encoding", "accept",
        "connection", "keep-alive", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
        "authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "forwarded", "via",
        "x-real-ip", "true-client-ip", "cf-connecting-ip", "expect", "origin", "referer",
        "anthropic-version", "anthropic-beta", "openai-organization", "openai-project", "x-request-id",
        "x-original-url", "x-rewrite-url", "x-original-host", "x-host", "x-http-method-override",
        "x-http-method", "x-method-override", "x-client-ip", "x-cluster-client-ip", "client-ip",
    }
)  # fmt: skip
_DROP_PREFIXES = ("x-forwarded-", "proxy-", "x-ccx-", "sec-", "x-amz-", "x-envoy-")
_MAX_ERROR_BODY = 256 * 1024
#: Request bodies larger than this are handed to aiohttp as a file object (see AiohttpTransport).
_LARGE_BODY = 2**20
_MAX_URLS = 1024


# RFC 9110 token characters for names; values must be printable ASCII or tabs: CR, LF or NUL could
# split the upstream request, and a byte above 0x7f cannot be sent as the str the client takes.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_BAD_VALUE = re.compile(r"[^\x20-\x7e\t]")


def forwardable_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The client headers that may be forwarded upstream (see ``_DROP`` for what never is).

    Headers named in ``Connection`` are hop-by-hop too (RFC 9110 §7.6.1) and are dropped, and so
    are headers with a malformed name or a value that is not printable ASCII (one that could split
    the upstream request, or that no HTTP client would send as it is).
    """
    pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]
    hop = {t.strip().lower() for name, value in pairs if name == "connection" for t in value.split(",")}
    return [
        (name, value)
        for name, value in pairs
        if name not in _DROP
        and name not in hop
        and not name.startswith(_DROP_PREFIXES)
        and _HEADER_NAME.fullmatch(name)
        and not _BAD_VALUE.search(value)
    ]


def _last_wins(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One value per header name, the last one given.

    Callers list client headers first and the gateway's own (channel key, channel ``headers``,
    content type) after them, so a client can never shadow a header the gateway sets: upstreams
    differ on whether the first or the last duplicate counts.
    """
    final: dict[str, tuple[str, str]] = {}
    for name, value in headers:
        final[name.lower()] = (name, value)
    return list(final.values())


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced (upstreams sometimes echo headers)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def _attempt_secrets(attempt: Attempt) -> list[str]:
    secrets = [attempt.api_key.get_secret_value()] if attempt.api_key else []
    secrets.extend(v.get_secret_value() for v in attempt.channel.headers.values())
    return secrets


#: Shortest secret redacted inside answer bodies. Shorter channel header values ("true", a date) are
#: configuration rather than credentials, and replacing them in raw JSON could break its structure.
_MIN_STREAM_SECRET = 12
_REDACTED = b"[redacted]"


class StreamRedactor:
    """Replaces secrets in a byte stream, including a secret split across two chunks.

    Only a chunk's tail that could be the start of a secret is held back until the next chunk, so
    SSE events (which end in a blank line) are never delayed.
    """

    __slots__ = ("held", "secrets")

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s.encode() for s in secrets if len(s) >= _MIN_STREAM_SECRET]
        self.held = b""

    def feed(self, chunk: bytes) -> bytes:
        """``chunk`` with the secrets replaced, less a tail that may begin a secret (held for the next)."""
        data = self.held + chunk if self.held else chunk
        for secret in self.secrets:
            if secret in data:
                data = data.replace(secret, _REDACTED)
        keep = 0
        for secret in self.secrets:
            partial = _partial(data, secret)
            if partial > keep:
                keep = partial
        self.held = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep] if keep else data

    def flush(self) -> bytes:
        """The held tail, at the end of the stream."""
        held, self.held = self.held, b""
        return held


def _partial(data: bytes, secret: bytes) -> int:
    """Length of the longest tail of ``data`` that is a proper prefix of ``secret``."""
    # Such a tail ends with data's last byte, so that byte must occur in the secret. SSE chunks end
    # in a newline, which no key holds: this settles almost every chunk without a search.
    if data[-1:] not in secret:
        return 0
    tail = data[-(len(secret) - 1) :]
    index = tail.find(secret[:1])
    while index >= 0:
        if secret.startswith(tail[index:]):
            return len(tail) - index
        index = tail.find(secret[:1], index + 1)
    return 0


def _describe(exc: Exception) -> str:
    """httpx's name for a transport error, plus ``": message"`` for :class:`AiohttpTransport`'s (fixed
    texts that never carry a URL or a header value); httpx's own and other transports' messages may
    carry URLs, so for those only the type shows."""
    name = next((c.__name__ for c in type(exc).__mro__ if c.__module__.startswith("httpx")), type(exc).__name__)
    return f"({name}): {exc}" if isinstance(exc, _Safe) else f"({name})"


def _error_message(raw: bytes) -> tuple[str, str | None]:
    """Pull a human message and an error code out of an upstream error body of any common shape."""
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace").strip()[:2000] or "(empty body)", None
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        message = err.get("message") or err.get("detail") or err.get("msg")
        code = err.get("code") or err.get("type")
        if isinstance(message, str):
            return message[:2000], code if isinstance(code, str) else None
    if isinstance(err, str):
        return err[:2000], None
    return raw.decode("utf-8", "replace")[:2000], None


def _retry_after(response: UpstreamResponse) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class _IdleWatch:
    """Expires ``deadline`` when one read has waited ``idle`` seconds, with one timer per ``idle``.

    ``asyncio.timeout(idle)`` around every read schedules and cancels a timer per chunk (a few us
    each, on every chunk of every stream). Here the reader only notes when its current read began
    (``since``; ``None`` while it is not reading), and a timer that fires at most about once per
    ``idle`` seconds checks it: a read that began ``idle`` ago is cancelled through ``deadline``
    (the reader then sees ``TimeoutError``), otherwise the timer is set again for when the current
    read would be late. Time the reader spends outside a read (the client being slow) never counts.
    """

    __slots__ = ("deadline", "fired", "handle", "idle", "loop", "since")

    def __init__(self, deadline: asyncio.Timeout, idle: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.deadline = deadline
        self.idle = idle
        self.since: float | None = None
        self.fired = False
        self.handle: asyncio.TimerHandle | None = self.loop.call_at(self.loop.time() + idle, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        since = self.since
        if since is not None and now - since >= self.idle:
            self.handle = None
            self.fired = True
            self.deadline.reschedule(now)
            return
        self.handle = self.loop.call_at((now if since is None else since) + self.idle, self._check)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


# --- the transport: httpx on aiohttp -------------------------------------------------------------


class _Safe:
    """Marks a transport error raised by :class:`AiohttpTransport`: its message is a fixed text."""


class _ConnectError(httpx.ConnectError, _Safe):
    pass


class _ConnectTimeout(httpx.ConnectTimeout, _Safe):
    pass


class _ProxyError(httpx.ProxyError, _Safe):
    pass


class _ReadError(httpx.ReadError, _Safe):
    pass


class _WriteTimeout(httpx.WriteTimeout, _Safe):
    pass


class _RemoteProtocolError(httpx.RemoteProtocolError, _Safe):
    pass


class _UnsupportedProtocol(httpx.UnsupportedProtocol, _Safe):
    pass


def _map_error(exc: Exception, request: httpx.Request, *, reading: bool = False) -> httpx.TransportError:
    """The httpx exception for an aiohttp one, with a message that names no URL or header value.

    httpx-aiohttp's table maps every ``ClientConnectionError`` (a reset, a disconnect mid-body) to
    ``ConnectTimeout``; here a timeout is only what timed out, and a dropped connection is a read or
    protocol error, so failover and the error message say what happened.
    """
    error: httpx.TransportError
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        why = getattr(exc.certificate_error, "verify_message", None) or "certificate verify failed"
        error = _ConnectError(f"TLS certificate verification failed: {why}")
    elif isinstance(exc, aiohttp.ClientSSLError):
        error = _ConnectError("TLS handshake failed")
    elif isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        status = getattr(exc, "status", None)
        error = _ProxyError(f"the proxy refused the tunnel (HTTP {status})" if status else "cannot reach the proxy")
    elif isinstance(exc, aiohttp.ConnectionTimeoutError):
        error = _ConnectTimeout("no connection within connect_timeout (connecting, or waiting for the channel's pool)")
    elif isinstance(exc, aiohttp.ClientConnectorDNSError):
        error = _ConnectError("cannot resolve the upstream host")
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = _ConnectError(f"cannot connect to the upstream ({_os_reason(exc.os_error)})")
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        error = _RemoteProtocolError(
            "the upstream closed the connection mid-answer"
            if reading
            else "the upstream closed the connection without answering"
        )
    elif isinstance(exc, aiohttp.ClientPayloadError):
        error = _RemoteProtocolError("the upstream's answer body was cut short or badly framed")
    elif isinstance(exc, aiohttp.ClientResponseError):
        error = _RemoteProtocolError(f"malformed upstream answer ({exc.message.partition(':')[0][:80]})")
    elif isinstance(exc, aiohttp.ClientOSError):
        if exc.errno == errno.ETIMEDOUT:
            error = _WriteTimeout("the upstream stopped taking the request for write_timeout")
        else:
            error = _ReadError(f"connection error ({_os_reason(exc)})")
    elif isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        error = _UnsupportedProtocol("invalid upstream URL")
    else:
        error = _ReadError(f"connection error ({type(exc).__name__})")
    error.request = request
    return error


def _os_reason(exc: OSError | None) -> str:
    if exc is None:
        return "connection failed"
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__


# Response headers that no longer describe the body httpx is handed: aiohttp has already decoded
# it (bounded per read), so httpx must not decode it again; cookies are never kept.
_STALE_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding", b"set-cookie"})


class _Body(httpx.AsyncByteStream):
    """An aiohttp answer's (decoded) body as httpx's stream, read as it arrives."""

    __slots__ = ("request", "response")

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self.response = response
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self.response.content
        try:
            while True:
                # Whatever is buffered: at most about two reads' worth, since aiohttp stops reading the
                # socket (and inflating) above its high-water mark until this consumer catches up.
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except aiohttp.ClientError as exc:
            raise _map_error(exc, self.request, reading=True) from None

    async def aclose(self) -> None:
        response = self.response
        # A body read to its end gives its connection back; anything else (cancelled, cut short, or
        # bytes after the answer) closes it, so no later request can read this one's leftovers.
        if response.content.at_eof() and not response.content.exception():
            response.release()
        else:
            response.close()


@dataclass(eq=False, slots=True)
class Pool:
    """One aiohttp connection pool of :class:`AiohttpTransport`: a channel's, or the default one.

    ``limit`` bounds the connections (in use and idle) of the pool; ``ssl`` is the TLS context its
    connections verify with (unset: :func:`default_ssl_context`); ``proxy`` (with ``proxy_headers``,
    its credentials) where they tunnel through;
    ``write_timeout`` (seconds) how long the upstream may leave sent bytes unacknowledged.
    """

    limit: int = 256
    ssl: ssl.SSLContext | None = None
    proxy: yarl.URL | None = None
    proxy_headers: dict[str, str] | None = None
    write_timeout: float | None = None


def _user_timeout_factory(write_timeout: float | None) -> Any:
    """A socket factory that sets ``TCP_USER_TIMEOUT`` (Linux): bytes written but not taken by the
    upstream for ``write_timeout`` end the connection, which is what a write deadline is."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None or not write_timeout:
        return None
    milliseconds = max(1, int(write_timeout * 1000))

    def factory(addr_info: Any) -> socket.socket:
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family=family, type=kind, proto=proto)
        try:
            sock.setblocking(False)
            if family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, option, milliseconds)
        except OSError:
            sock.close()
            raise
        return sock

    return factory


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends requests with aiohttp, one connection pool per :class:`Pool`.

    A request names its pool in ``request.extensions["ccx_pool"]`` (requests without one use
    ``default``) and may carry its aiohttp URL, already built, in ``extensions["ccx_url"]``. aiohttp
    frames, pools, decodes ``gzip``/``deflate`` (bounded per read), verifies TLS and tunnels through
    proxies; it never follows redirects or keeps cookies here (``DummyCookieJar``), and never
    retries a POST. Connections idle for ``keepalive_expiry`` seconds are closed.

    Sessions belong to the event loop that made them; a host that drives one app from several loops
    in turn gets new ones on each loop.
    """

    def __init__(self, *, default: Pool | None = None, keepalive_expiry: float = 5.0) -> None:
        self._ssl: ssl.SSLContext | None = None
        self.default = default or Pool()
        self.keepalive_expiry = keepalive_expiry
        self._sessions: dict[Pool, aiohttp.ClientSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._urls: dict[str, yarl.URL] = {}
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}

    async def _session(self, pool: Pool) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            await self._abandon(self._loop)
            self._loop = loop
        session = self._sessions.get(pool)
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=pool.limit,
                ssl=pool.ssl if pool.ssl is not None else self._default_ssl(),
                keepalive_timeout=self.keepalive_expiry if self.keepalive_expiry > 0 else None,
                force_close=self.keepalive_expiry <= 0,
                socket_factory=_user_timeout_factory(pool.write_timeout),
            )
            session = self._sessions[pool] = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
                trust_env=False,  # proxies are resolved once per channel (Upstream), netrc never read
                skip_auto_headers=("User-Agent",),
            )
        return session

    def _default_ssl(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = default_ssl_context()
        return self._ssl

    async def _abandon(self, loop: asyncio.AbstractEventLoop | None) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            if loop is None or loop.is_closed():
                with contextlib.suppress(Exception):
                    await session.close()  # nothing left to close on a closed loop: just marks it closed
            else:
                session.detach()  # its loop still runs elsewhere: leave its sockets to it

    def _url(self, request: httpx.Request) -> yarl.URL:
        url = request.extensions.get("ccx_url")
        if isinstance(url, yarl.URL):
            return url
        text = str(request.url)
        url = self._urls.get(text)
        if url is None:
            if len(self._urls) >= _MAX_URLS:
                self._urls.clear()
            url = self._urls[text] = yarl.URL(text, encoded=True)
        return url

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return as soon as the answer's head is in; the body streams."""
        extensions = request.extensions
        pool = extensions.get("ccx_pool") or self.default
        session = await self._session(pool)
        connect = (extensions.get("timeout") or {}).get("connect")
        timeout = self._timeouts.get(connect)
        if timeout is None:
            # Reads are bounded by the caller's asyncio deadlines (one timer per stream rather than
            # aiohttp's per-read timer); connecting and the pool wait are bounded here.
            timeout = self._timeouts[connect] = aiohttp.ClientTimeout(
                total=None, connect=connect, sock_connect=connect, sock_read=None
            )
        data: Any
        try:
            data = request.content or None
        except httpx.RequestNotRead:
            data = request.stream
        if isinstance(data, bytes) and len(data) > _LARGE_BODY:
            # aiohttp writes a bytes body in one piece and warns (ResourceWarning) above 1 MiB; from a
            # file object it writes 64 KiB pieces under flow control. Smaller bodies stay one write.
            data = io.BytesIO(data)
        try:
            response = await session.request(
                request.method,
                self._url(request),
                headers=request.headers.multi_items(),
                data=data,
                allow_redirects=False,
                proxy=pool.proxy,
                proxy_headers=pool.proxy_headers,
                timeout=timeout,
            )
        except aiohttp.ClientError as exc:
            raise _map_error(exc, request) from None
        headers = [(k, v) for k, v in response.raw_headers if k.lower() not in _STALE_HEADERS]
        return httpx.Response(
            status_code=response.status,
            headers=headers,
            stream=_Body(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        """Close every pool's connections."""
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()


def default_ssl_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """The TLS context upstream connections verify with.

    ``ca_bundle`` (a channel's own PEM file) replaces the trust store. Otherwise ``SSL_CERT_FILE``
    replaces certifi's bundle and ``SSL_CERT_DIR`` adds a directory of CAs, as OpenSSL reads them.
    """
    if ca_bundle:
        return ssl.create_default_context(cafile=ca_bundle)
    cafile = os.environ.get("SSL_CERT_FILE") or certifi.where()
    capath = os.environ.get("SSL_CERT_DIR") or None
    return ssl.create_default_context(cafile=cafile, capath=capath)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _no_proxy(host: str, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (comma-separated host names, ``.domain`` suffixes, ``*``) exempts ``host``."""
    host = host.lower().rstrip(".")
    for entry in no_proxy.lower().split(","):
        entry = entry.strip().lstrip(".").rsplit(":", 1)[0] if "]" not in entry else entry.strip()
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return True
    return False


# --- log hygiene ----------------------------------------------------------------------------------

_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@\"'<>]*@", re.IGNORECASE)
_URL_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s\"'<>?#]*)\?[^\s\"'<>#]*", re.IGNORECASE)


class _UrlRedactingFilter(logging.Filter):
    """Strips user info and query strings from URLs in httpx's and aiohttp's log records.

    httpx logs every request's full URL (``HTTP Request: POST …``); a ``base_url`` may carry a
    password or a key in its query, which must never reach a log line at any level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "://" in message:
            cleaned = _URL_QUERY.sub(r"\1?[redacted]", _URL_USERINFO.sub(r"\1[redacted]@", message))
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


_LOG_FILTER = _UrlRedactingFilter()
_FILTERED_LOGGERS = ("httpx", "httpcore", "aiohttp.client", "aiohttp.internal")


def _install_log_filter() -> None:
    for name in _FILTERED_LOGGERS:
        target = logging.getLogger(name)
        if _LOG_FILTER not in target.filters:
            target.addFilter(_LOG_FILTER)


# --- the gateway's side ---------------------------------------------------------------------------


class UpstreamResponse(Protocol):
    """What the gateway reads of an upstream answer (an ``httpx.Response`` fits)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Target:
    """A parsed upstream URL: httpx's and aiohttp's forms, without user info, and Basic credentials
    made from the user info (sent unless the channel sets its own ``authorization``)."""

    url: httpx.URL
    aiohttp_url: yarl.URL
    basic: str | None
    host: tuple[str, str]


@dataclass(slots=True)
class _Route:
    """Everything per channel that every request would otherwise rebuild: its pool and timeouts."""

    pool: Pool
    timeout: dict[str, float | None]


_DEADLINE = "ccx_deadline"
#: The encodings aiohttp inflates with a bound per read (``zstd``/``br`` would need extra packages).
_ACCEPT_ENCODING = ("accept-encoding", "gzip, deflate")


class Upstream:
    """The gateway's HTTP client. One instance per app; cheap to share across requests.

    ``transport`` replaces :class:`AiohttpTransport` (tests, a host's own); ``mounts`` are httpx
    mounts for hosts answered in process (the built-in demo's, from
    :func:`ccx_asgi.channels.local_transports`). ``proxy`` is the default proxy URL of channels without
    their own; ``trust_env`` lets channels without any proxy setting use the standard proxy variables.
    ``max_connections`` bounds the default pool (requests without a channel); each channel's pool
    has its own ``max_connections``.
    """

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 256,
        mounts: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        proxy: str | None = None,
        trust_env: bool = False,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._transport = transport
        self._mounts = dict(mounts or {})
        self._proxy = proxy or None
        self._trust_env = trust_env
        self._keepalive_expiry = keepalive_expiry
        self._ssl = default_ssl_context()
        self._ca_contexts: dict[str, ssl.SSLContext] = {}
        self._default_pool = Pool(limit=max_connections, ssl=self._ssl)
        self._client: httpx.AsyncClient | None = None
        self._routes: dict[str, tuple[ChannelConfig, _Route]] = {}
        # Parsed upstream URLs: parsing one costs several us per request, and channels x endpoints are few.
        self._urls: dict[str, _Target] = {}
        _install_log_filter()

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared ``httpx.AsyncClient``, created on first use."""
        if self._client is None:
            mounts: dict[str, httpx.AsyncBaseTransport | None] = dict(self._mounts)
            transport = self._transport
            if transport is None:
                transport = AiohttpTransport(default=self._default_pool, keepalive_expiry=self._keepalive_expiry)
            self._client = _Client(
                transport=transport,
                mounts=mounts,
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the client and its idle connections; a later request opens new ones."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _route(self, channel: ChannelConfig) -> _Route:
        cached = self._routes.get(channel.name)
        if cached is not None and cached[0] is channel:
            return cached[1]
        pool = Pool(
            limit=channel.max_connections,
            ssl=self._ca_context(channel.ca_bundle) if channel.ca_bundle else self._ssl,
            write_timeout=channel.write_timeout,
        )
        proxy = self._proxy_for(channel)
        if proxy:
            parsed = yarl.URL(proxy)
            if parsed.user is not None:
                pool.proxy_headers = {"Proxy-Authorization": _basic(parsed.user, parsed.password or "")}
            pool.proxy = parsed.with_user(None)
        timeout = httpx.Timeout(
            connect=channel.connect_timeout,
            read=max(channel.first_byte_timeout, channel.idle_timeout),
            write=channel.write_timeout,
            pool=channel.connect_timeout,
        ).as_dict()
        route = _Route(pool, timeout)
        self._routes[channel.name] = (channel, route)
        return route

    def _ca_context(self, path: str) -> ssl.SSLContext:
        context = self._ca_contexts.get(path)
        if context is None:
            context = self._ca_contexts[path] = default_ssl_context(path)
        return context

    def _proxy_for(self, channel: ChannelConfig) -> str | None:
        """The channel's ``proxy``, else ``CCX_UPSTREAM_PROXY``, else (opted in) the environment's."""
        if channel.proxy is not None:
            return channel.proxy.get_secret_value().strip() or None
        if self._proxy:
            return self._proxy
        if self._trust_env and channel.base_url:
            parts = urlsplit(channel.base_url)
            proxies = urllib.request.getproxies_environment()
            if parts.hostname and _no_proxy(parts.hostname, proxies.get("no", "")):
                return None
            return proxies.get(parts.scheme) or proxies.get("all")
        return None

    def _parse(self, url: str) -> _Target:
        target = self._urls.get(url)
        if target is None:
            if len(self._urls) >= _MAX_URLS:
                self._urls.clear()
            parsed = httpx.URL(url)
            basic = None
            if parsed.userinfo:
                basic = _basic(unquote(parsed.username), unquote(parsed.password))
                parsed = parsed.copy_with(username=None, password=None)
            host = ("host", parsed.netloc.decode("ascii"))
            target = self._urls[url] = _Target(parsed, yarl.URL(str(parsed), encoded=True), basic, host)
        return target

    def _request(
        self, method: str, channel: ChannelConfig, url: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> httpx.Request:
        # An ``httpx.Request`` built here rather than with ``client.build_request``: the client's
        # URL, header, cookie and parameter merging was half of httpx's cost per request, and this
        # client has nothing to merge (no base URL, no cookies, no default headers of its own).
        route = self._route(channel)
        target = self._parse(url)
        final = _last_wins([_ACCEPT_ENCODING, *headers])
        if target.basic is not None and not any(name.lower() == "authorization" for name, _ in final):
            final.append(("authorization", target.basic))
        # Given here, httpx need not add them (a search and a copy of the header list each).
        final.append(target.host)
        if body is not None:
            final.append(("content-length", str(len(body))))
        extensions = {"timeout": route.timeout, "ccx_pool": route.pool, "ccx_url": target.aiohttp_url}
        return httpx.Request(method, target.url, headers=final, content=body, extensions=extensions)

    @asynccontextmanager
    async def open(
        self, attempt: Attempt, url: str, headers: list[tuple[str, str]], body: bytes, *, stream: bool
    ) -> AsyncIterator[UpstreamResponse]:
        """Send one request and yield the response once its status is known to be a success.

        Error statuses are read (bounded) and raised as :class:`UpstreamStatusError`; transport
        failures as :class:`UpstreamConnectError`/:class:`UpstreamTimeoutError`. Nothing here ever
        puts a key into an exception message. A non-streaming answer must be complete within
        ``first_byte_timeout`` of the start (:meth:`read_json` holds it to that).
        """
        channel = attempt.channel
        response: httpx.Response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + channel.first_byte_timeout
        try:
            async with asyncio.timeout_at(deadline):
                request = self._request("POST", channel, url, headers, body)
                response = await self.client.send(request, stream=True)
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"no response from the upstream within {channel.first_byte_timeout:g}s (first_byte_timeout)",
                channel=channel.name,
            ) from None
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError(f"upstream timed out {_describe(exc)}", channel=channel.name) from None
        except httpx.HTTPError as exc:
            raise UpstreamConnectError(f"could not reach the upstream {_describe(exc)}", channel=channel.name) from None
        except (ValueError, httpx.InvalidURL) as exc:  # configuration: named without values
            raise UpstreamConnectError(
                f"cannot send the request ({type(exc).__name__})", channel=channel.name
            ) from None
        response.extensions[_DEADLINE] = deadline
        try:
            status = response.status_code
            if status < 200:
                # 1xx answers are skipped by the transport; what is left is a 101 protocol switch.
                raise UpstreamStatusError(
                    f"upstream answered HTTP {status} (a protocol switch the gateway never asked for)",
                    channel=channel.name,
                    retryable=True,
                    upstream_status=status,
                )
            if status >= 300:
                raise await self._status_error(attempt, response)
            yield response
        finally:
            await response.aclose()

    async def _error_body(self, attempt: Attempt, response: UpstreamResponse) -> bytes:
        """An error answer's body: at most 256 KiB, read within the channel's ``idle_timeout`` in all
        (an upstream that sends an error head and stalls its body must not hold up failover)."""
        raw = bytearray()
        with contextlib.suppress(httpx.HTTPError, TimeoutError):
            async with asyncio.timeout(attempt.channel.idle_timeout):
                async for chunk in response.aiter_bytes():
                    raw += chunk
                    if len(raw) >= _MAX_ERROR_BODY:
                        break
        return bytes(raw[:_MAX_ERROR_BODY])

    async def _status_error(self, attempt: Attempt, response: UpstreamResponse) -> UpstreamError:
        raw = await self._error_body(attempt, response)
        message, code = _error_message(raw)
        message = redact(message, _attempt_secrets(attempt))
        status = response.status_code
        if status < 400:
            # Redirects are never followed (a Location could point anywhere, e.g. a metadata service).
            return UpstreamStatusError(
                f"upstream answered HTTP {status} (a redirect, which the "
                "gateway does not follow; check the channel's base_url)",
                channel=attempt.channel.name,
                retryable=True,
                upstream_status=status,
            )
        message += upstream_error_hint(attempt.channel, status, message)
        return upstream_status_error(attempt.channel.name, status, code, message, retry_after=_retry_after(response))

    async def iter_bytes(
        self, attempt: Attempt, response: UpstreamResponse, *, deadline: float | None = None
    ) -> AsyncIterator[bytes]:
        """The response body as it arrives, with read failures mapped to upstream errors.

        Each read may wait ``idle_timeout``; ``deadline`` (loop time) bounds the whole body
        (:meth:`read_json` passes the request's ``first_byte_timeout`` deadline). The channel's own
        secrets are replaced by ``[redacted]`` on the way (upstreams that echo request headers into
        error events would otherwise hand the key to the client).
        """
        channel = attempt.channel
        idle = channel.idle_timeout
        redactor = StreamRedactor(_attempt_secrets(attempt))
        chunks = response.aiter_bytes()
        watch: _IdleWatch | None = None
        try:
            # One deadline object for the whole body: the idle watchdog pulls it in when a read
            # has waited ``idle`` seconds, and ``deadline`` (if any) is its own expiry.
            async with asyncio.timeout_at(deadline) as timeout:
                watch = _IdleWatch(timeout, idle)
                try:
                    while True:
                        watch.since = watch.loop.time()
                        chunk = await anext(chunks, None)
                        watch.since = None
                        if chunk is None:
                            if rest := redactor.flush():
                                yield rest
                            return
                        if redactor.secrets:
                            chunk = redactor.feed(chunk)
                            if not chunk:
                                continue
                        yield chunk
                finally:
                    watch.stop()
        except (TimeoutError, httpx.TimeoutException):
            if watch is not None and watch.fired:
                raise UpstreamTimeoutError(
                    f"upstream went idle for more than {idle:g}s (idle_timeout)", channel=channel.name
                ) from None
            raise UpstreamTimeoutError(
                f"the upstream's answer was not complete within "
                f"{channel.first_byte_timeout:g}s of the request (first_byte_timeout)",
                channel=channel.name,
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamConnectError(
                f"upstream connection failed mid-response {_describe(exc)}", channel=channel.name
            ) from None
        finally:
            # httpx hands out an async generator: close it here rather than leave it to the GC.
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    async def read_json(self, attempt: Attempt, response: UpstreamResponse, limit: int) -> Any:
        """Read a whole (bounded) JSON body, within ``first_byte_timeout`` of the request's start."""
        channel = attempt.channel
        extensions = getattr(response, "extensions", None)
        deadline = extensions.get(_DEADLINE) if isinstance(extensions, dict) else None
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + channel.first_byte_timeout
        raw = bytearray()
        async for chunk in self.iter_bytes(attempt, response, deadline=deadline):
            raw += chunk
            if len(raw) > limit:
                raise UpstreamStatusError(
                    f"upstream response exceeds {limit} bytes",
                    channel=channel.name,
                    retryable=False,
                )
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamStatusError(
                "upstream answered with invalid JSON", channel=channel.name, retryable=True
            ) from None

    async def get_json(
        self, channel: ChannelConfig, url: str, headers: list[tuple[str, str]], *, within: float, limit: int
    ) -> Any:
        """``GET url`` through ``channel``'s pool and return its JSON body; everything (connecting,
        the head, the whole body) within ``within`` seconds and ``limit`` bytes.

        Raises :class:`UpstreamError` (status, size, invalid JSON, transport failures, the deadline).
        """
        try:
            async with asyncio.timeout(within):
                request = self._request("GET", channel, url, headers, None)
                response = await self.client.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        raise UpstreamStatusError(f"HTTP {response.status_code}", upstream_status=response.status_code)
                    raw = bytearray()
                    async for chunk in response.aiter_bytes():
                        raw += chunk
                        if len(raw) > limit:
                            raise UpstreamStatusError(f"more than {limit} bytes")
                finally:
                    await response.aclose()
        except TimeoutError:
            raise UpstreamTimeoutError(f"not complete within {within:g}s") from None
        except httpx.HTTPError as exc:
            raise UpstreamConnectError(_describe(exc).lstrip("(").replace(")", "", 1)) from None
        except (ValueError, httpx.InvalidURL) as exc:
            raise UpstreamConnectError(f"cannot send the request ({type(exc).__name__})") from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamStatusError("invalid JSON") from None


class _NoCookies(httpx.Cookies):
    """A cookie store that never stores anything, without the cost of trying.

    One client serves every end user, so a cookie an upstream sets for one request must never ride
    along on another user's request. The transport already drops ``Set-Cookie``, but httpx would
    still build a ``urllib`` request and an ``email`` message per response to offer the headers to
    its jar (about 10% of the gateway's in-process time per request); skipping the offer is the same.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        """Ignore the response's ``Set-Cookie`` headers."""


class _Client(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose cookie store is a :class:`_NoCookies` (assigning another is ignored)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        """Always empty."""
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        pass  # nothing is ever kept
