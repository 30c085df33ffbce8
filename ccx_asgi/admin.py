"""Operator endpoints: ``GET /admin/channels`` (JSON), ``GET /admin/`` (HTML status) and ``GET /metrics``.

Access rule (:class:`AdminGuard`), from :meth:`~ccx_asgi.settings.CCXSettings.admin_keys`:

- ``CCX_ADMIN_ACCESS_KEY`` set: only that key opens them (the proxy key does not);
- otherwise the proxy key does, but only when no ``CCX_EXTRA_PROXY_ACCESS_KEYS`` exist; with extra
  keys and no admin key the endpoints answer 403 and say which variable to set;
- with no key configured at all the gateway is open, and so are these read-only endpoints.

The key is accepted as ``Authorization: Bearer``, ``x-api-key`` or HTTP Basic (any user name, the
key as password) so that a browser can open the status page. Nothing here ever outputs a secret:
keys and header values are masked (:func:`mask_secret`), URLs lose their user info and query values
(:func:`sanitize_url`), and the Redis URL is not shown at all.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from pydantic import SecretStr

from ccx_asgi.admin_page import render_status_page
from ccx_asgi.asgi import send_json
from ccx_asgi.channels import adapter_for
from ccx_asgi.errors import AuthenticationError, CCXError, PermissionDeniedError, send_error
from ccx_asgi.keys import KeySet, presented_keys
from ccx_asgi.observability import Observer
from ccx_asgi.routing import ordered_channels
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.types import Receive, Scope, Send

__all__ = [
    "AdminAPI",
    "AdminGuard",
    "ChannelStateProvider",
    "channel_config",
    "mask_secret",
    "render_status_page",
    "sanitize_url",
]

logger = logging.getLogger("ccx_asgi.admin")

#: Returns per-channel state dicts by channel name (keys such as ``breaker`` and ``affinity``),
#: synchronously or as an awaitable. Wired to the breaker/affinity store by the app.
ChannelStateProvider = Callable[[], Mapping[str, Mapping[str, Any]] | Awaitable[Mapping[str, Mapping[str, Any]]]]


_MASK = "****"
_CSP = b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
_SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


def mask_secret(value: str) -> str:
    """A recognisable but useless form of a secret: ``sk-…wxyz`` for long keys, ``****`` otherwise."""
    if len(value) >= 20:
        return f"{value[:3]}…{value[-4:]}"
    return _MASK


def sanitize_url(url: str) -> str:
    """``url`` without user info and with every query value masked (some providers take keys there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{_MASK}@{netloc.rpartition('@')[2]}"
    query = urlencode([(k, _MASK) for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _public(value: Any, name: str = "") -> Any:
    """A JSON-safe copy of a config value with every secret masked (see the module docstring)."""
    if isinstance(value, SecretStr):
        return mask_secret(value.get_secret_value())
    if isinstance(value, dict):
        return {k: _public(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_public(v, name) for v in value]
    if isinstance(value, str) and "url" in name.lower():
        return sanitize_url(value)
    return value


def channel_config(channel: ChannelConfig) -> dict[str, Any]:
    """The channel's effective configuration (defaults filled in), safe to show."""
    config: dict[str, Any] = {
        key: _public(getattr(channel, key), key) for key in type(channel).model_fields if key != "headers"
    }
    # Header names can be informative; their values are credentials more often than not.
    config["headers"] = dict.fromkeys(channel.headers, _MASK)
    adapter = adapter_for(channel.service_type)
    endpoint = adapter.endpoint if adapter is not None else None
    config["endpoint_url"] = sanitize_url(channel.url(endpoint)) if endpoint and channel.base_url else None
    return config


class AdminGuard:
    """Decides whether a request may open the admin endpoints (rules in the module docstring).

    ``admin_keys`` is :meth:`CCXSettings.admin_keys`; ``open_gateway`` is true when no key of any
    kind is configured.
    """

    def __init__(self, admin_keys: Sequence[SecretStr], *, open_gateway: bool) -> None:
        self._keys = KeySet(admin_keys)
        self.open = open_gateway and not self._keys

    def check(self, scope: Scope) -> CCXError | None:
        """``None`` when the request may pass, else the error to answer with."""
        if self.open:
            return None
        if not self._keys:
            return PermissionDeniedError(
                "The admin endpoints are disabled: CCX_EXTRA_PROXY_ACCESS_KEYS is set, so the proxy key "
                "does not double as the admin key. Set CCX_ADMIN_ACCESS_KEY to use them."
            )
        presented = presented_keys(scope, basic=True)
        if any(self._keys.matches(value) for _, value in presented):
            return None
        error = AuthenticationError(
            ("Invalid" if presented else "Missing")
            + " admin key. Send CCX_ADMIN_ACCESS_KEY (or, when it is not set and no extra proxy keys exist, "
            "CCX_PROXY_ACCESS_KEY) as 'Authorization: Bearer <key>', 'x-api-key' or HTTP Basic password."
        )
        error.headers.append(("www-authenticate", 'Basic realm="ccx admin", charset="UTF-8"'))
        return error


class AdminAPI:
    """The admin handlers of one app (see the module docstring). Built once per app.

    ``channels`` are all configured channels (disabled ones included); ``metrics`` is the
    :class:`~ccx_asgi.metrics.Metrics` object or ``None`` when ``prometheus-client`` is missing;
    ``state_provider`` supplies breaker/affinity state (``None``: reported as unknown).
    """

    def __init__(
        self,
        channels: Sequence[ChannelConfig],
        observer: Observer,
        guard: AdminGuard,
        *,
        metrics_path: str | None,
        state_provider: ChannelStateProvider | None = None,
        version: str = "",
    ) -> None:
        self.observer = observer
        self.guard = guard
        self.metrics_path = metrics_path
        self.state_provider = state_provider
        self.version = version
        self.started = time.time()
        order = {c.name: i for i, c in enumerate(ordered_channels(channels))}
        self._configs = sorted(
            ({**channel_config(c), "order": order.get(c.name)} for c in channels),
            key=lambda c: (c["order"] is None, c["order"] if c["order"] is not None else 0),
        )

    async def states(self) -> tuple[Mapping[str, Mapping[str, Any]] | None, str | None]:
        """The state provider's answer, or ``(None, error message)`` when it failed or is absent."""
        if self.state_provider is None:
            return None, None
        try:
            result = self.state_provider()
            if inspect.isawaitable(result):
                result = await result
            if not isinstance(result, Mapping):
                raise TypeError(f"expected a mapping, got {type(result).__name__}")
            # One round trip through JSON: whatever the store returns, the page and the JSON can show it.
            states: Mapping[str, Mapping[str, Any]] = orjson.loads(orjson.dumps(result, default=str))
        except Exception as exc:  # the status page must show even when the state store is down
            logger.warning("admin: the channel state provider failed: %s", exc)
            return None, f"state provider failed ({type(exc).__name__})"
        return {k: v for k, v in states.items() if isinstance(v, Mapping)}, None

    async def snapshot(self) -> dict[str, Any]:
        """The document served at ``/admin/channels`` (and rendered by the status page)."""
        states, state_error = await self.states()
        recent = self.observer.recent
        channels = []
        for config in self._configs:
            name = config["name"]
            state = states.get(name) if states is not None else None
            channels.append(
                {
                    **config,
                    "breaker": state.get("breaker") if state is not None else None,
                    "affinity": state.get("affinity") if state is not None else None,
                    "state": dict(state) if state is not None else None,
                    "stats": dict(recent.counts.get(name, {})),
                    "recent": recent.recent(name),
                }
            )
        now = time.time()
        return {
            "gateway": {
                "version": self.version,
                # With several worker processes each answers for itself: the pid says which one did.
                "pid": os.getpid(),
                "started_at": _iso(self.started),
                "uptime_seconds": round(now - self.started, 1),
                "metrics_path": self.metrics_path if self.observer.metrics is not None else None,
                "state_provider": self.state_provider is not None,
                "state_error": state_error,
                "recent_size": recent.size,
            },
            "channels": channels,
            "unrouted_recent": list(reversed(recent.unrouted)),
        }

    async def _allowed(self, scope: Scope, send: Send) -> bool:
        error = self.guard.check(scope)
        if error is None:
            return True
        await send_error(send, error)
        return False

    async def channels_json(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /admin/channels``."""
        if await self._allowed(scope, send):
            await send_json(send, await self.snapshot(), headers=_SECURITY_HEADERS)

    async def status_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /admin/``: the read-only HTML status page."""
        if not await self._allowed(scope, send):
            return
        body = render_status_page(await self.snapshot()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"content-security-policy", _CSP),
                    (b"referrer-policy", b"no-referrer"),
                    *_SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def redirect_to_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /admin`` → ``/admin/`` (the page's relative links need the slash)."""
        location = (scope.get("root_path") or "") + "/admin/"
        path = scope.get("path") or ""
        if path.endswith("/admin"):
            location = path + "/"
        await send(
            {
                "type": "http.response.start",
                "status": 308,
                "headers": [(b"location", location.encode("latin-1", "replace")), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /metrics`` (path from ``CCX_METRICS_PATH``): the Prometheus text exposition."""
        if not await self._allowed(scope, send):
            return
        metrics = self.observer.metrics
        if metrics is None:
            await send_error(
                send,
                CCXError(
                    "Prometheus metrics need the optional dependency prometheus-client: "
                    "pip install 'ccx-asgi[metrics]' and restart the gateway.",
                    code="metrics_unavailable",
                    status=501,
                ),
            )
            return
        if self.state_provider is not None:
            states, _ = await self.states()
            metrics.set_states(states)
        from ccx_asgi.metrics import CONTENT_TYPE

        body = metrics.exposition()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", CONTENT_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
