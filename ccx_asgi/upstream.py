"""All upstream I/O, and the one boundary where transport exceptions and upstream error statuses
become :class:`~ccx_asgi.errors.UpstreamError`.

Real upstreams are reached through :mod:`ccx_asgi.http1` (or httpx with ``CCX_UPSTREAM_CLIENT=
httpx``); one long-lived ``httpx.AsyncClient`` serves injected transports (tests), the built-in demo
channel (an in-process transport mounted on a reserved host) and the model lists. Both answer with
the same small response interface, so everything after the request is the same code. The clients
are created lazily (mounted sub-apps get no lifespan events) and closed by :meth:`Upstream.aclose`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httpcore
import httpx
import orjson

from ccx_asgi import http1
from ccx_asgi.context import Attempt
from ccx_asgi.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from ccx_asgi.hints import upstream_error_hint
from ccx_asgi.settings import DEMO_BASE_URL, ChannelConfig
from ccx_asgi.upstream_errors import upstream_status_error

__all__ = ["Upstream", "UpstreamResponse", "forwardable_headers", "redact"]

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
_DEMO_HOST = urlsplit(DEMO_BASE_URL).hostname or ""
_MAX_ERROR_BODY = 256 * 1024
_MAX_URLS = 1024


class _LinearPool(httpcore.AsyncConnectionPool):
    """httpcore's connection pool with its per-request bookkeeping made linear in the pool size.

    httpcore 1.0.x, on every request start and end, counts *all* pooled connections once for each
    idle one (``len([c.is_idle() for c in self._connections])``), which is O(n²): with 200 upstream
    streams open it was over half of the gateway's CPU (``python -m bench.profile --paced``). The
    count is simply ``len(self._connections)``, so this is the same algorithm with the same result,
    only without the quadratic loop (see encode/httpcore#1035, fixed upstream in httpx2).
    """

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing_connections: list[httpcore.AsyncConnectionInterface] = []
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
            elif connection.has_expired() or (
                connection.is_idle() and len(self._connections) > self._max_keepalive_connections
            ):
                self._connections.remove(connection)
                closing_connections.append(connection)
        for pool_request in [request for request in self._requests if request.is_queued()]:
            origin = pool_request.request.url.origin
            available = [c for c in self._connections if c.can_handle_request(origin) and c.is_available()]
            if available:
                pool_request.assign_to_connection(available[0])
                continue
            if len(self._connections) < self._max_connections:
                connection = self.create_connection(origin)
                self._connections.append(connection)
                pool_request.assign_to_connection(connection)
                continue
            idle = next((c for c in self._connections if c.is_idle()), None)
            if idle is not None:
                self._connections.remove(idle)
                closing_connections.append(idle)
                connection = self.create_connection(origin)
                self._connections.append(connection)
                pool_request.assign_to_connection(connection)
        return closing_connections


class _NoCookies(httpx.Cookies):
    """A cookie store that never stores anything, without the cost of trying.

    One client serves every end user, so a cookie an upstream sets for one request must never ride
    along on another user's request. A jar that refuses every cookie would do, but httpx still
    builds a ``urllib`` request and an ``email`` message per response to offer it the headers
    (about 10% of the gateway's in-process time per request); skipping the offer is the same result.
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


def _transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's default transport, on :class:`_LinearPool` when this httpcore has the known layout."""
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    pool = getattr(transport, "_pool", None)
    if type(pool) is httpcore.AsyncConnectionPool and httpcore.__version__.startswith("1.0."):
        pool.__class__ = _LinearPool
    return transport


# RFC 9110 token characters for names; values may not carry CR, LF or NUL (header splitting).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


def forwardable_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The client headers that may be forwarded upstream (see ``_DROP`` for what never is).

    Headers named in ``Connection`` are hop-by-hop too (RFC 9110 §7.6.1) and are dropped, and so
    are headers with a malformed name or a value that could split the upstream request.
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


class _Redactor:
    """Replaces secrets in a byte stream, including a secret split across two chunks.

    Only a chunk's tail that could be the start of a secret is held back until the next chunk, so
    SSE events (which end in a blank line) are never delayed.
    """

    __slots__ = ("held", "secrets")

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s.encode() for s in secrets if len(s) >= _MIN_STREAM_SECRET]
        self.held = b""

    def feed(self, chunk: bytes) -> bytes:
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


def _detail(exc: Exception) -> str:
    """``": message"`` for the fast client's errors (which never carry values); httpx's may carry URLs."""
    return f": {exc}" if isinstance(exc, http1.ClientError) else ""


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

    __slots__ = ("deadline", "handle", "idle", "loop", "since")

    def __init__(self, deadline: asyncio.Timeout, idle: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.deadline = deadline
        self.idle = idle
        self.since: float | None = None
        self.handle: asyncio.TimerHandle | None = self.loop.call_at(self.loop.time() + idle, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        since = self.since
        if since is not None and now - since >= self.idle:
            self.handle = None
            self.deadline.reschedule(now)
            return
        self.handle = self.loop.call_at((now if since is None else since) + self.idle, self._check)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class UpstreamResponse(Protocol):
    """What the gateway reads of an upstream answer: ``httpx.Response`` and :class:`http1.Response` both fit."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


#: Transport failures of either client: mapped to upstream errors at this boundary only.
_CLIENT_ERRORS = (httpx.HTTPError, http1.ClientError)
_TIMEOUTS = (httpx.TimeoutException, http1.ConnectTimeout, http1.PoolTimeout, http1.WriteTimeout)


class Upstream:
    """The gateway's HTTP clients. One instance per app; cheap to share across requests.

    Requests to real upstreams go through :mod:`ccx_asgi.http1` (``client="fast"``, the default) or
    through httpx (``client="httpx"``). An injected ``transport`` (tests, a host's own) and the
    built-in demo channel always use httpx, whose transports they are. ``max_connections`` bounds
    the requests in flight.
    """

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 512,
        demo_transport: httpx.AsyncBaseTransport | None = None,
        client: Literal["fast", "httpx"] = "fast",
    ) -> None:
        self._transport = transport
        self._demo_transport = demo_transport
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=128)
        self._client: httpx.AsyncClient | None = None
        self._fast = client == "fast" and transport is None
        self._max_connections = max_connections
        self._pool: http1.Pool | None = None
        # Parsed upstream URLs: parsing one costs several us per request, and channels x endpoints are few.
        self._urls: dict[str, httpx.URL | http1.Target] = {}

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared ``httpx.AsyncClient`` (demo channel, injected transports, model lists), created on first use."""
        if self._client is None:
            mounts = {}
            if self._demo_transport is not None:
                mounts["all://" + _DEMO_HOST] = self._demo_transport
            self._client = _Client(
                transport=self._transport if self._transport is not None else _transport(self._limits),
                mounts=mounts,
                limits=self._limits,
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    @property
    def pool(self) -> http1.Pool:
        """The fast client's connection pool, created on first use (it needs a running loop).

        A host that drives one app from several event loops in turn (a test suite with a loop per
        test, a sync framework's portal thread) gets a new pool per loop: sockets and the slot
        semaphore belong to the loop that made them and cannot be used from another.
        """
        pool = self._pool
        if pool is None or pool.loop is not asyncio.get_running_loop():
            pool = self._pool = http1.Pool(max_connections=self._max_connections)
        return pool

    async def aclose(self) -> None:
        """Close the clients and their idle connections; a later request opens new ones."""
        client, self._client = self._client, None
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()
        if client is not None:
            await client.aclose()

    def _parse(self, url: str) -> httpx.URL | http1.Target:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= _MAX_URLS:
                self._urls.clear()
            fast = self._fast and urlsplit(url).hostname != _DEMO_HOST
            parsed = self._urls[url] = http1.Target.parse(url) if fast else httpx.URL(url)
        return parsed

    @asynccontextmanager
    async def open(
        self, attempt: Attempt, url: str, headers: list[tuple[str, str]], body: bytes, *, stream: bool
    ) -> AsyncIterator[UpstreamResponse]:
        """Send one request and yield the response once its status is known to be a success.

        Error statuses are read (bounded) and raised as :class:`UpstreamStatusError`; transport
        failures as :class:`UpstreamConnectError`/:class:`UpstreamTimeoutError`. Nothing here ever
        puts a key into an exception message.
        """
        channel = attempt.channel
        response: UpstreamResponse
        try:
            parsed = self._parse(url)
            async with asyncio.timeout(channel.first_byte_timeout):
                if isinstance(parsed, http1.Target):
                    response = await self.pool.request(
                        "POST",
                        parsed,
                        _last_wins(headers),
                        body,
                        connect_timeout=channel.connect_timeout,
                        write_timeout=channel.write_timeout,
                    )
                else:
                    response = await self._send_httpx(channel, parsed, headers, body)
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"channel {channel.name!r}: no response from the upstream within "
                f"{channel.first_byte_timeout:g}s (first_byte_timeout)"
            ) from None
        except _TIMEOUTS as exc:
            raise UpstreamTimeoutError(f"channel {channel.name!r}: upstream timed out ({type(exc).__name__})") from None
        except _CLIENT_ERRORS as exc:
            raise UpstreamConnectError(
                f"channel {channel.name!r}: could not reach the upstream ({type(exc).__name__}{_detail(exc)})"
            ) from None
        except ValueError as exc:  # a malformed base_url or channel header: configuration, named without values
            raise UpstreamConnectError(f"channel {channel.name!r}: cannot send the request ({exc})") from None
        try:
            if response.status_code >= 300:
                raise await self._status_error(attempt, response)
            yield response
        finally:
            await response.aclose()

    async def _send_httpx(
        self, channel: ChannelConfig, url: httpx.URL, headers: list[tuple[str, str]], body: bytes
    ) -> httpx.Response:
        # httpx's read timeout applies to every socket read, so it is only a backstop here; the
        # first-byte and idle limits are enforced with asyncio deadlines, which also hold for
        # in-process transports and cannot be stretched by an upstream that trickles header bytes.
        timeout = httpx.Timeout(
            connect=channel.connect_timeout,
            read=max(channel.first_byte_timeout, channel.idle_timeout),
            write=channel.write_timeout,
            pool=channel.connect_timeout,
        )
        request = self.client.build_request("POST", url, headers=_last_wins(headers), content=body, timeout=timeout)
        return await self.client.send(request, stream=True)

    async def _status_error(self, attempt: Attempt, response: UpstreamResponse) -> UpstreamError:
        raw = b""
        try:
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) >= _MAX_ERROR_BODY:
                    break
        except _CLIENT_ERRORS:
            pass
        message, code = _error_message(raw)
        message = redact(message, _attempt_secrets(attempt))
        status = response.status_code
        if status < 400:
            # Redirects are never followed (a Location could point anywhere, e.g. a metadata service).
            return UpstreamStatusError(
                f"channel {attempt.channel.name!r}: upstream answered HTTP {status} (a redirect, which the "
                "gateway does not follow; check the channel's base_url)",
                retryable=True,
                upstream_status=status,
            )
        message += upstream_error_hint(attempt.channel, status, message)
        return upstream_status_error(attempt.channel.name, status, code, message, retry_after=_retry_after(response))

    async def iter_bytes(self, attempt: Attempt, response: UpstreamResponse) -> AsyncIterator[bytes]:
        """The response body as it arrives, with read failures mapped to upstream errors.

        The channel's own secrets are replaced by ``[redacted]`` on the way (upstreams that echo
        request headers into error events would otherwise hand the key to the client).
        """
        name = attempt.channel.name
        idle = attempt.channel.idle_timeout
        redactor = _Redactor(_attempt_secrets(attempt))
        chunks = response.aiter_bytes()
        try:
            async with asyncio.timeout(None) as deadline:
                watch = _IdleWatch(deadline, idle)
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
            raise UpstreamTimeoutError(
                f"channel {name!r}: upstream went idle for more than {idle:g}s (idle_timeout)"
            ) from None
        except _CLIENT_ERRORS as exc:
            raise UpstreamConnectError(
                f"channel {name!r}: upstream connection failed mid-response ({type(exc).__name__}{_detail(exc)})"
            ) from None
        finally:
            # httpx hands out an async generator: close it here rather than leave it to the GC.
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    async def read_json(self, attempt: Attempt, response: UpstreamResponse, limit: int) -> Any:
        """Read a whole (bounded) JSON body."""
        raw = bytearray()
        async for chunk in self.iter_bytes(attempt, response):
            raw += chunk
            if len(raw) > limit:
                raise UpstreamStatusError(
                    f"channel {attempt.channel.name!r}: upstream response exceeds {limit} bytes",
                    retryable=False,
                )
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamStatusError(
                f"channel {attempt.channel.name!r}: upstream answered with invalid JSON", retryable=True
            ) from None
