"""The exception tree of ccx_asgi and its one mapping to OpenAI-style error responses.

Every error a client can see is a :class:`CCXError`. Each class carries the HTTP status, the OpenAI
``type`` and an optional ``code``/``param``; :func:`error_body` and :func:`send_error` are the only
places that turn one into bytes, so every layer answers in the same shape::

    {"error": {"message": "...", "type": "...", "param": null, "code": null}}

Upstream failures are :class:`UpstreamError` subclasses. Each has a :data:`Failure` kind, and
:data:`RETRY_POLICY`, the one retry table, says for each kind whether the failover layer tries
another target (recording a breaker failure) and whether the key is parked;
:mod:`ccx_asgi.upstream_errors` decides which kind an upstream's answer is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import orjson

from ccx_asgi.types import Send

__all__ = [
    "RETRY_POLICY",
    "AllChannelsFailedError",
    "AuthenticationError",
    "CCXError",
    "ConfigurationError",
    "Failure",
    "InvalidRequestError",
    "ModelNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "RequestTooLargeError",
    "RetryRule",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamStatusError",
    "UpstreamStreamError",
    "UpstreamTimeoutError",
    "error_body",
    "send_error",
]


class CCXError(Exception):
    """Base of every error ccx_asgi reports; maps to an OpenAI-style JSON error."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.param = param
        self.headers = list(headers)


class ConfigurationError(CCXError, ValueError):
    """Invalid configuration found at start-up; the message names the variable and the problem."""


class InvalidRequestError(CCXError):
    """The client's request is malformed (400)."""

    status = 400
    type = "invalid_request_error"


class AuthenticationError(CCXError):
    """The client sent no proxy key or a wrong one (401)."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(CCXError):
    """The key is valid but does not open this endpoint (403)."""

    status = 403
    type = "permission_error"


class NotFoundError(CCXError):
    """No such route (404)."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    """No configured channel serves the requested model (404 ``model_not_found``)."""

    code = "model_not_found"


class RequestTooLargeError(CCXError):
    """The request body is larger than ``CCX_MAX_BODY_MB`` (413)."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


#: Out of quota or credit: the code (and type) Codex stops a turn for instead of retrying.
INSUFFICIENT_QUOTA = "insufficient_quota"

#: The kinds of upstream failure the retry policy tells apart.
Failure = Literal["transient", "rejected_key", "insufficient_quota", "context_length_exceeded", "final"]


@dataclass(frozen=True, slots=True)
class RetryRule:
    """What the failover layer does with one kind of upstream failure that happened before content.

    ``retry``: try the next key or channel and record a breaker failure for this one; otherwise the
    error is the answer, and the breaker records a success (the upstream is up: the request is what
    it refused). ``park_key``: without a ``Retry-After``, park the key for ``key_park_seconds`` (a
    ``Retry-After`` parks any retried key for that long, capped at ``max_retry_after``).
    """

    retry: bool
    park_key: bool


#: The retry policy, read by the errors (``retryable``, :meth:`UpstreamError.park_seconds`) and so
#: by the failover layer. A context-length error is final: the candidates of one requested model
#: serve the same model, and Codex compacts only once it sees the code; quota fails over (another
#: key may have credit) and parks the key, as does a key the upstream rejects (401/403).
RETRY_POLICY: Mapping[Failure, RetryRule] = MappingProxyType(
    {
        "transient": RetryRule(retry=True, park_key=False),
        "rejected_key": RetryRule(retry=True, park_key=True),
        "insufficient_quota": RetryRule(retry=True, park_key=True),
        "context_length_exceeded": RetryRule(retry=False, park_key=False),
        "final": RetryRule(retry=False, park_key=False),
    }
)


class UpstreamError(CCXError):
    """An upstream channel failed.

    ``reason`` says what happened and ``channel`` names the channel it happened on (``None`` for an
    error of no channel); :attr:`message`, what clients and logs see, is made from the two in one
    place: ``channel 'name': reason``. ``failure`` is its kind for :data:`RETRY_POLICY` (without it,
    ``retryable=False`` means ``final`` and anything else ``transient``); ``retry_after`` is the
    upstream's ``Retry-After`` in seconds when it sent one.
    """

    status = 502
    type = "upstream_error"
    code = "upstream_error"

    def __init__(
        self,
        reason: str,
        *,
        channel: str | None = None,
        failure: Failure | None = None,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        headers: Iterable[tuple[str, str]] = (),
        retryable: bool | None = None,
        retry_after: float | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(reason, code=code, param=param, status=status, headers=headers)
        self.channel = channel
        self.failure: Failure = failure if failure is not None else "final" if retryable is False else "transient"
        self.retry_after = retry_after
        self.upstream_status = upstream_status

    @property
    def message(self) -> str:
        """``channel 'name': reason`` (the reason alone without a channel)."""
        return self.reason if self.channel is None else f"channel {self.channel!r}: {self.reason}"

    @message.setter
    def message(self, value: str) -> None:
        self.reason = value
        self.channel = None

    def __str__(self) -> str:
        return self.message

    @property
    def retryable(self) -> bool:
        """Whether another key or channel may succeed where this one failed (:data:`RETRY_POLICY`)."""
        return RETRY_POLICY[self.failure].retry

    def park_seconds(self, *, key_park_seconds: float, max_retry_after: float) -> float | None:
        """How long the failed key is parked (:data:`RETRY_POLICY`), or ``None`` for not at all."""
        if not self.retryable:
            return None
        if self.retry_after is not None:
            return min(self.retry_after, max_retry_after)
        return key_park_seconds if RETRY_POLICY[self.failure].park_key else None


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status; ``upstream_status`` holds it."""


class UpstreamConnectError(UpstreamError):
    """The upstream could not be reached (DNS, refused, TLS, reset before an answer)."""

    code = "upstream_connect_error"


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer or went idle for longer than the channel's timeout."""

    status = 504
    code = "upstream_timeout"


class UpstreamStreamError(UpstreamError):
    """The upstream stream failed or ended before a terminal event."""

    code = "upstream_stream_error"


class AllChannelsFailedError(CCXError):
    """Every candidate channel failed before any byte reached the client (503).

    ``retry_after`` is the last failure's ``Retry-After``, when it had one.
    """

    status = 503
    type = "upstream_error"
    code = "all_channels_failed"
    retry_after: float | None = None


def all_channels_failed(
    outcomes: Sequence[str], *, quota: bool = False, retry_after: float | None = None
) -> AllChannelsFailedError:
    """The error for a request every target failed: ``outcomes`` names what happened on each (no
    secrets). ``quota`` (every target out of quota or credit) makes it a 429 ``insufficient_quota``,
    the code Codex stops for; otherwise a ``retry_after`` becomes a ``Retry-After`` header (Codex
    waits and retries; quota does not come back)."""
    summary = "; ".join(outcomes)
    message = f"All upstream channels are currently unavailable. {summary}" if summary else "No channel to try."
    if quota:
        error = AllChannelsFailedError(message, code=INSUFFICIENT_QUOTA, status=429)
        error.type = INSUFFICIENT_QUOTA
        return error
    error = AllChannelsFailedError(message)
    if retry_after is not None:
        error.retry_after = retry_after
        error.headers.append(("retry-after", str(int(retry_after + 0.999))))
    return error


def error_body(exc: CCXError) -> bytes:
    """Serialise ``exc`` as OpenAI's error JSON."""
    return orjson.dumps({"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}})


async def send_error(send: Send, exc: CCXError, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send ``exc`` as a complete JSON error response."""
    body = error_body(exc)
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers),
    ]
    await send({"type": "http.response.start", "status": exc.status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
