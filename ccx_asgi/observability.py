"""Request records: one structured log line per request, a bounded ring of recent requests per channel,
and the hooks that fill them.

How a request's facts reach the log without extra parsing:

- :class:`~ccx_asgi.app.CCXApp` creates a :class:`RequestRecord` before routing and stores it under
  ``scope[RECORD_KEY]``. Scope copies made by inner layers share the same record object.
- :func:`record_context` is the model mapper's ``on_context`` hook: it hands the parsed
  :class:`~ccx_asgi.context.RequestContext` to the record.
- The channel endpoint calls :func:`note_upstream_url` and :func:`note_response` with values it
  already holds (the URL it is about to call; the terminal event's response object), so token usage
  is picked up without re-reading the stream.
- The app's send wrapper stamps the status and the time of the first body byte, and finally
  :meth:`Observer.finish` logs the record, adds it to the ring and updates the metrics.

The log record (logger ``ccx_asgi.requests``) carries the fields of :data:`LOG_FIELDS` under the
``ccx`` attribute; :class:`JSONFormatter` renders them as one JSON object per line. No key ever
enters a record: only channel names, key *indexes*, paths (never query strings) and counts. Request
bodies are logged only at DEBUG (logger ``ccx_asgi.requests.body``), redacted by :func:`redact_body`.
Log *configuration* (handlers, the JSON formatter) is :mod:`ccx_asgi.logs`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from ccx_asgi.context import RequestContext
from ccx_asgi.types import Scope

if TYPE_CHECKING:
    from ccx_asgi.metrics import Metrics

__all__ = [
    "LOG_FIELDS",
    "RECORD_KEY",
    "Observer",
    "RecentRequests",
    "RequestRecord",
    "failovers",
    "note_response",
    "note_upstream_url",
    "record_context",
    "redact_body",
]

#: Scope key of the per-request :class:`RequestRecord`.
RECORD_KEY = "ccx.record"

#: The fields of every request log record, in order (``None`` when not known for that request).
LOG_FIELDS = (
    "request_id",
    "method",
    "path",
    "status",
    "model",
    "stream",
    "channel",
    "upstream_model",
    "upstream_path",
    "attempts",
    "failed_attempts",
    "response_status",
    "error_code",
    "error_message",
    "ttfb_ms",
    "duration_ms",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
)

_MAX_ERROR_PEEK = 8192
_MAX_OUTCOME = 300

request_logger = logging.getLogger("ccx_asgi.requests")
body_logger = logging.getLogger("ccx_asgi.requests.body")


def note_upstream_url(ctx: RequestContext, url: str) -> None:
    """Remember the upstream URL of the current attempt (only its path is ever logged)."""
    ctx.upstream_url = url


def note_response(ctx: RequestContext, response: Any) -> None:
    """Remember the final response object's ``status`` and ``usage`` (called with the terminal event's
    ``response`` or the JSON answer; it only keeps references, so it costs nothing per token)."""
    if isinstance(response, dict):
        ctx.response_status = response.get("status")
        usage = response.get("usage")
        if isinstance(usage, dict):
            ctx.usage = usage


def record_context(scope: Scope, ctx: RequestContext) -> None:
    """Hand the parsed context to the request's record (the model mapper's ``on_context`` hook);
    without a record in the scope it does nothing."""
    record = scope.get(RECORD_KEY)
    if isinstance(record, RequestRecord):
        record.context = ctx


@dataclass(slots=True)
class RequestRecord:
    """What the app learns about one request while serving it; turned into log fields at the end."""

    request_id: str
    method: str
    path: str
    route: str
    started: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)
    status: int | None = None
    first_byte: float | None = None
    finished: float | None = None
    context: RequestContext | None = None
    error_peek: bytearray | None = None
    exception: str | None = None

    def on_start(self, status: int) -> None:
        """The response started with ``status``; error bodies are peeked for their code."""
        self.status = status
        if status >= 400:
            self.error_peek = bytearray()

    def on_body(self, body: bytes) -> None:
        """A body chunk went out (the first non-empty one sets the time to first byte)."""
        if body and self.first_byte is None:
            self.first_byte = time.perf_counter()
        peek = self.error_peek
        if peek is not None and len(peek) < _MAX_ERROR_PEEK:
            peek += body[: _MAX_ERROR_PEEK - len(peek)]

    def _error(self) -> tuple[str | None, str | None]:
        """``(code, message)`` of the OpenAI-style error body this request answered with."""
        if not self.error_peek:
            return None, None
        try:
            data = orjson.loads(self.error_peek)
        except orjson.JSONDecodeError:
            return None, None
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            return None, None
        code = error.get("code") or error.get("type")
        message = error.get("message")
        return (
            code if isinstance(code, str) else None,
            message[:_MAX_OUTCOME] if isinstance(message, str) else None,
        )

    def fields(self) -> dict[str, Any]:
        """The log fields (:data:`LOG_FIELDS`) of this record."""
        end = self.finished if self.finished is not None else time.perf_counter()
        out: dict[str, Any] = dict.fromkeys(LOG_FIELDS)
        error_code, error_message = self._error()
        out.update(
            request_id=self.request_id,
            method=self.method,
            path=self.path,
            status=self.status,
            error_code=error_code or self.exception,
            error_message=error_message,
            ttfb_ms=round((self.first_byte - self.started) * 1000, 1) if self.first_byte is not None else None,
            duration_ms=round((end - self.started) * 1000, 1),
        )
        ctx = self.context
        if ctx is None:
            return out
        out.update(model=ctx.model, stream=ctx.stream, response_status=ctx.response_status)
        failed = ctx.attempts
        attempt = ctx.attempt
        # Failover leaves a non-retryable failure as the current attempt *and* records it.
        current_failed = (
            attempt is not None
            and bool(failed)
            and failed[-1].channel == attempt.channel.name
            and failed[-1].key_index == attempt.key_index
        )
        out["attempts"] = len(failed) + (1 if attempt is not None and not current_failed else 0)
        out["failed_attempts"] = [
            {"channel": r.channel, "key_index": r.key_index, "status": r.status, "outcome": r.outcome[:_MAX_OUTCOME]}
            for r in failed
        ]
        if attempt is not None:
            out["channel"] = attempt.channel.name
            out["upstream_model"] = attempt.upstream_model
        elif failed:
            out["channel"] = failed[-1].channel
            out["upstream_model"] = next(
                (c.upstream_model for c in ctx.candidates if c.channel.name == failed[-1].channel), None
            )
        url = ctx.upstream_url
        if url is not None:
            out["upstream_path"] = urlsplit(url).path
        usage = ctx.usage
        if usage is not None:
            out["input_tokens"] = _int(usage.get("input_tokens"))
            out["output_tokens"] = _int(usage.get("output_tokens"))
            out["cached_tokens"] = _int(_get(usage.get("input_tokens_details"), "cached_tokens"))
            out["reasoning_tokens"] = _int(_get(usage.get("output_tokens_details"), "reasoning_tokens"))
        return out


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def failovers(fields: Mapping[str, Any]) -> list[str]:
    """Channels of the failed attempts after which another attempt was made."""
    failed = [f["channel"] for f in fields.get("failed_attempts") or ()]
    attempts = fields.get("attempts") or 0
    return failed if attempts > len(failed) else failed[:-1]


class RecentRequests:
    """A bounded ring of recent request records per channel, plus simple per-channel counters.

    A request is listed under every channel it tried; requests that reached no channel (bad body,
    unknown model) go to the ``unrouted`` ring. Memory is bounded by ``size`` * (channels + 1).
    ``counts[channel]`` holds ``requests`` (answered by it, or last tried), ``ok`` (completed) and
    ``failed_attempts``.
    """

    def __init__(self, channels: Iterable[str], size: int = 50) -> None:
        self.size = size
        self._rings: dict[str, deque[dict[str, Any]]] = {name: deque(maxlen=size) for name in channels}
        self.unrouted: deque[dict[str, Any]] = deque(maxlen=size)
        self.counts: dict[str, dict[str, int]] = {
            name: {"requests": 0, "ok": 0, "failed_attempts": 0} for name in self._rings
        }

    def add(self, fields: dict[str, Any], wall: float) -> None:
        """Add one finished request (``fields`` as from :meth:`RequestRecord.fields`)."""
        if self.size <= 0:
            return
        entry = {"time": round(wall, 3), **fields}
        touched = [f["channel"] for f in fields.get("failed_attempts") or ()]
        winner = fields.get("channel")
        if winner is not None and winner not in touched:
            touched.append(winner)
        if not touched:
            self.unrouted.append(entry)
            return
        for name in dict.fromkeys(touched):
            ring = self._rings.get(name)
            if ring is not None:
                ring.append(entry)
        for name in (f["channel"] for f in fields.get("failed_attempts") or ()):
            if name in self.counts:
                self.counts[name]["failed_attempts"] += 1
        if winner is not None and winner in self.counts:
            counts = self.counts[winner]
            counts["requests"] += 1
            status = fields.get("status")
            if isinstance(status, int) and status < 400 and fields.get("response_status") in (None, "completed"):
                counts["ok"] += 1

    def recent(self, channel: str) -> list[dict[str, Any]]:
        """The channel's recent requests, newest first."""
        return list(reversed(self._rings.get(channel, ())))


class Observer:
    """Finishes request records: the log line, the recent-request ring and the metrics.

    One per app, built once; :meth:`finish` is the only per-request call.
    """

    def __init__(self, recent: RecentRequests, metrics: Metrics | None, secrets: Iterable[str] = ()) -> None:
        self.recent = recent
        self.metrics = metrics
        self._secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def finish(self, record: RequestRecord) -> None:
        """Log ``record`` and account for it."""
        record.finished = time.perf_counter()
        routed = record.context is not None or record.route == "/responses"
        level = logging.INFO if routed or (record.status or 0) >= 400 else logging.DEBUG
        logged = request_logger.isEnabledFor(level)
        if not routed and not logged:
            return  # a model list or an admin page nobody logs: nothing to account for
        fields = record.fields()
        if routed:
            self.recent.add(fields, record.wall)
            if self.metrics is not None:
                self.metrics.observe(fields, failovers(fields))
        if logged:
            request_logger.log(level, "%s", _summary(fields), extra={"ccx": fields})
        ctx = record.context
        if ctx is not None and body_logger.isEnabledFor(logging.DEBUG):
            body_logger.debug(
                "request %s body: %s",
                record.request_id,
                orjson.dumps(redact_body(ctx.body, self._secrets)).decode(),
                extra={"ccx": {"request_id": record.request_id}},
            )


def _summary(f: Mapping[str, Any]) -> str:
    """The human-readable message of a request log record."""
    parts = [f"{f['method']} {f['path']} {f['status'] if f['status'] is not None else '-'}"]
    if f.get("model") is not None:
        parts.append(f"model={f['model']}")
    if f.get("channel") is not None:
        parts.append(f"channel={f['channel']} upstream={f['upstream_model']} {f['upstream_path'] or ''}".rstrip())
    if f.get("attempts"):
        parts.append(f"attempts={f['attempts']}")
    if f.get("response_status") not in (None, "completed"):
        parts.append(f"response={f['response_status']}")
    if f.get("error_code"):
        parts.append(f"error={f['error_code']}")
    if f.get("ttfb_ms") is not None:
        parts.append(f"ttfb={f['ttfb_ms']:g}ms")
    parts.append(f"total={f['duration_ms']:g}ms")
    if f.get("input_tokens") is not None:
        parts.append(f"tokens={f['input_tokens']}/{f['output_tokens']}")
    parts.append(f"rid={f['request_id']}")
    return " ".join(parts)


_SECRET_FIELD_HINTS = ("key", "token", "secret", "password", "authorization")
_MAX_STRING = 200
_MAX_DEPTH = 12


def redact_body(value: Any, secrets: Iterable[str] = (), *, _depth: int = 0) -> Any:
    """A copy of a JSON body fit for a debug log.

    Values of fields whose name looks like a credential are replaced, strings longer than 200
    characters are cut (prompts and tool outputs can be huge and private), configured secrets are
    replaced wherever they appear, and nesting deeper than 12 levels is elided.
    """
    if _depth > _MAX_DEPTH:
        return "[…]"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key).lower()
            # Token *counts* (max_output_tokens) are harmless; token *values* are not.
            if any(h in name for h in _SECRET_FIELD_HINTS) and not isinstance(item, int | float | bool | None):
                out[key] = "[redacted]"
            else:
                out[key] = redact_body(item, secrets, _depth=_depth + 1)
        return out
    if isinstance(value, list):
        return [redact_body(item, secrets, _depth=_depth + 1) for item in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, "[redacted]")
        if len(value) > _MAX_STRING:
            return f"{value[:_MAX_STRING]}…[{len(value) - _MAX_STRING} more chars]"
    return value
