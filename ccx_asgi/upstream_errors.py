"""What an upstream error means to the client: the one classification table, as pure functions.

Codex (0.171, checked with the real CLI) acts on very few error codes, in JSON errors and in
``response.failed`` alike:

- ``context_length_exceeded`` (HTTP 400 or in-stream): the turn stops and Codex reports "ran out of
  room in the model's context window" (or compacts), instead of retrying the same prompt;
- ``insufficient_quota`` (HTTP **429**, or in-stream): the turn stops with "Quota exceeded". A 402
  is not understood: Codex retries it like a 5xx;
- ``rate_limit_exceeded`` (in-stream, with "try again in Ns" in the message): retried after the
  wait; any other in-stream code and any 5xx are retried; any other 4xx stops the turn.

Upstreams say the same things in many dialects (OpenAI and DeepSeek codes and messages, vLLM
messages, Claude's "prompt is too long" and "credit balance is too low", HTTP 402 from DeepSeek and
OpenRouter), so every converted channel and the upstream client ask :func:`classify_error` and
build errors with :func:`upstream_status_error`; an error inside a stream gets its kind from
:func:`stream_failure`. What each kind means for failover (try another key or channel? park the
key?) is the one table :data:`~ccx_asgi.errors.RETRY_POLICY`:

- a context-length error is **final**: the candidates of one requested model serve the same model
  behind other keys or providers, so they would refuse the prompt as well, and Codex's own remedy
  (compacting the history) only starts once it sees the code — trying every channel first would
  only delay it;
- a quota or billing error **fails over** (another key or channel may have credit) and is reported
  as ``insufficient_quota`` when every target failed that way.
"""

from __future__ import annotations

import re
from typing import Literal

from ccx_asgi.errors import INSUFFICIENT_QUOTA, Failure, UpstreamStatusError

__all__ = [
    "CODEX_ERROR_CODES",
    "CONTEXT_LENGTH_EXCEEDED",
    "FINAL_STREAM_CODES",
    "INSUFFICIENT_QUOTA",
    "RESPONSE_ERROR_CODES",
    "ErrorKind",
    "classify_error",
    "response_error_code",
    "stream_failure",
    "upstream_status_error",
]

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
#: The codes Codex stops a turn for, which the OpenAI SDK's ``ResponseError.code`` list lacks.
CODEX_ERROR_CODES = frozenset({CONTEXT_LENGTH_EXCEEDED, INSUFFICIENT_QUOTA})
#: Codes ``response.error.code`` may carry: the SDK's literal list (as far as a gateway can produce
#: them) plus :data:`CODEX_ERROR_CODES`; anything else is reported as ``server_error``.
RESPONSE_ERROR_CODES = frozenset(
    {"server_error", "rate_limit_exceeded", "invalid_prompt", "vector_store_timeout", "invalid_image"}
    | CODEX_ERROR_CODES
)

ErrorKind = Literal["context_length_exceeded", "insufficient_quota", "rate_limit_exceeded"]

_CONTEXT_CODES = frozenset({"context_length_exceeded", "context_window_exceeded", "model_context_window_exceeded"})
_QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "billing_hard_limit_reached",
        "billing_not_active",
        "insufficient_balance",
        "insufficient_credits",
        "payment_required",
    }
)
_RATE_CODES = frozenset({"rate_limit_exceeded", "rate_limit_error", "too_many_requests"})
# OpenAI/DeepSeek/vLLM ("maximum context length is 65536 tokens", "is too long to fit into the
# model (context length 4096)", "exceeds the context window") and Claude ("prompt is too long:
# 210000 tokens > 200000 maximum", "input length and `max_tokens` exceed context limit").
_CONTEXT_TEXT = re.compile(
    r"maximum context length|context.?length exceeded|context window|exceeds? (?:the )?context|"
    r"exceed context limit|prompt is too long|input is too long|too long to fit into the model|"
    r"reduce the length of the (?:messages|prompt|input)",
    re.IGNORECASE,
)
# Quota and billing, never plain rate limits ("quota metric … per minute" is a rate limit).
_QUOTA_TEXT = re.compile(
    r"insufficient.?(?:quota|balance|funds|credits?)|exceeded your current quota|credit balance|"
    r"billing|payment required|out of credits",
    re.IGNORECASE,
)
_RATE_TEXT = re.compile(r"rate.?limit|too many requests", re.IGNORECASE)
# Other transient conditions another key or channel may not have.
_RETRYABLE_STATUS = frozenset({401, 403, 408, 409, 425, 429})
# Statuses that reject the key itself (402 is quota, see classify_error).
_REJECTED_KEY_STATUS = frozenset({401, 403})
#: Codes of errors reported inside a stream that another channel would hit as well (``final``).
#: insufficient_quota is not among them: another key may have credit.
FINAL_STREAM_CODES = frozenset({"context_length_exceeded", "invalid_prompt", "content_filter", "invalid_request_error"})
_RETRYABLE_TEXT = re.compile(r"overloaded|capacity|try again later|quota", re.IGNORECASE)


def classify_error(code: str | None, message: str, status: int | None = None) -> ErrorKind | None:
    """The error Codex acts on that an upstream error is, or ``None`` for any other error.

    ``code`` is the upstream's error code or type, ``message`` its text, ``status`` the HTTP status
    (``None`` in a stream). Pure: the same inputs always give the same answer.
    """
    if code in _CONTEXT_CODES or _CONTEXT_TEXT.search(message):
        return "context_length_exceeded"
    if status == 402 or code in _QUOTA_CODES or _QUOTA_TEXT.search(message):
        return "insufficient_quota"
    if status == 429 or code in _RATE_CODES or _RATE_TEXT.search(message):
        return "rate_limit_exceeded"
    return None


def response_error_code(code: str | None, message: str, default: str = "server_error") -> str:
    """The ``response.error.code`` for an upstream error reported inside a stream.

    The Codex codes and ``rate_limit_exceeded`` come from :func:`classify_error`; another code is
    kept when a Responses client knows it, else ``default``.
    """
    kind = classify_error(code, message)
    if kind is not None:
        return kind
    return code if code in RESPONSE_ERROR_CODES else default


def stream_failure(code: str | None) -> Failure:
    """The :data:`~ccx_asgi.errors.Failure` kind of an error an upstream reported inside its stream
    before any content, by its code."""
    if code in FINAL_STREAM_CODES:
        return "final"
    return "insufficient_quota" if code == INSUFFICIENT_QUOTA else "transient"


def upstream_status_error(
    channel: str, status: int, code: str | None, message: str, *, retry_after: float | None = None
) -> UpstreamStatusError:
    """The error for an upstream HTTP error answer (``status`` ≥ 400, ``message`` already redacted).

    Retried (the failover layer tries the next target): quota (``insufficient_quota``) and a
    rejected key (401/403, ``rejected_key``), rate limits, 408/409/425/429, every 5xx and overload
    bodies (``transient``). Final: context length (client 400 ``context_length_exceeded``) and other
    client errors (``final``: 400, or the upstream's 404/413).
    """
    text = f"upstream returned HTTP {status}: {message}"
    kind = classify_error(code, message, status)
    if kind == "context_length_exceeded":
        error = UpstreamStatusError(
            text,
            channel=channel,
            failure="context_length_exceeded",
            status=400,
            code=CONTEXT_LENGTH_EXCEEDED,
            upstream_status=status,
        )
        error.type = "invalid_request_error"
        return error
    if kind == "insufficient_quota":
        # 429 is what makes Codex stop and say "Quota exceeded" (it retries a 402).
        error = UpstreamStatusError(
            text,
            channel=channel,
            failure="insufficient_quota",
            status=429,
            code=INSUFFICIENT_QUOTA,
            retry_after=retry_after,
            upstream_status=status,
        )
        error.type = INSUFFICIENT_QUOTA
        return error
    retryable = (
        kind == "rate_limit_exceeded"
        or status in _RETRYABLE_STATUS
        or status >= 500
        or bool(_RETRYABLE_TEXT.search(message))
    )
    if retryable:
        return UpstreamStatusError(
            text,
            channel=channel,
            failure="rejected_key" if status in _REJECTED_KEY_STATUS else "transient",
            status=502,
            code="upstream_error",
            retry_after=retry_after,
            upstream_status=status,
        )
    client_status = status if status in (404, 413) else 400
    return UpstreamStatusError(
        text,
        channel=channel,
        failure="final",
        status=client_status,
        code=code,
        retry_after=retry_after,
        upstream_status=status,
    )
