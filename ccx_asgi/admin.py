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

import html
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from pydantic import SecretStr

from ccx_asgi.asgi import send_json
from ccx_asgi.errors import AuthenticationError, CCXError, PermissionDeniedError, send_error
from ccx_asgi.keys import KeySet, presented_keys
from ccx_asgi.observability import Observer
from ccx_asgi.routing import ordered_channels
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.types import Receive, Scope, Send

__all__ = [
    "ENDPOINTS",
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

#: The upstream endpoint each service type calls, under the channel's API root.
ENDPOINTS = {"responses": "/responses", "chat": "/chat/completions", "claude": "/messages", "demo": "/responses"}

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
    endpoint = ENDPOINTS.get(channel.service_type)
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


# -- the HTML page ------------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px;display:flex;gap:24px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header span{color:#b7c0d0}header a{color:#9cc3ff}
main{padding:16px 24px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;margin:0 0 16px;padding:12px 16px}
h2{font-size:16px;margin:0 0 8px;display:flex;gap:10px;align-items:center}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f3;vertical-align:top}
th{color:#5b6475;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.badge{white-space:nowrap}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:#f1f3f6;padding:1px 4px;border-radius:4px}
.badge{font-size:12px;padding:1px 8px;border-radius:10px;background:#e8ebf0;color:#3a4252;font-weight:500}
.ok{background:#dcf5e3;color:#13612e}.bad{background:#fde2e1;color:#8f1d18}.warn{background:#fff1d6;color:#7a4d00}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0 0 10px}dt{color:#5b6475}dd{margin:0}
.muted{color:#7b8494}
"""


_DASH = "&ndash;"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _badge(text: str, kind: str = "") -> str:
    return f'<span class="badge {kind}">{_e(text)}</span>'


def _state_text(value: Any) -> str:
    """A breaker or other state for people: its ``state`` when it has one, else ``key value`` pairs."""
    if value is None:
        return "unknown"
    if isinstance(value, Mapping):
        if "state" in value:
            return _state_text(value["state"])
        return ", ".join(f"{str(k).replace('_', ' ')} {_state_text(v)}" for k, v in value.items()) or "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _affinity_text(value: Any) -> str:
    if isinstance(value, Mapping) and isinstance(value.get("ttl_seconds"), int | float):
        ttl = value["ttl_seconds"]
        rest = {k: v for k, v in value.items() if k != "ttl_seconds"}
        span = f"{ttl / 60:g} min" if ttl >= 60 and ttl % 60 == 0 else f"{ttl:g} s"
        return f"on: a conversation stays on its channel for {span}" + (f" ({_state_text(rest)})" if rest else "")
    return _state_text(value)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _status_badge(entry: Mapping[str, Any]) -> str:
    status = entry.get("status")
    outcome = entry.get("response_status")
    if not isinstance(status, int):
        return _badge("-", "warn")
    if status >= 400:
        text = _e(f"{status} {entry.get('error_code') or ''}".strip())
        return f'<span class="badge bad" title="{_e(entry.get("error_message"))}">{text}</span>'
    if outcome not in (None, "completed"):
        return _badge(f"{status} {outcome}", "warn")
    return _badge(str(status), "ok")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ms(value: Any) -> str:
    return f"{value:,.0f} ms" if isinstance(value, int | float) else _DASH


def _recent_table(entries: Sequence[Mapping[str, Any]], limit: int = 20) -> str:
    if not entries:
        return '<p class="muted">No requests yet.</p>'
    rows = []
    for entry in entries[:limit]:
        tokens = (
            f"{entry['input_tokens']:,} / {entry['output_tokens']:,}"
            if isinstance(entry.get("input_tokens"), int) and isinstance(entry.get("output_tokens"), int)
            else _DASH
        )
        failed = ", ".join(
            f'<span title="{_e(f["outcome"])}">{_e(f["channel"])} ({_e(f["status"] or "no answer")})</span>'
            for f in entry.get("failed_attempts") or ()
        )
        if not failed and entry.get("error_message"):
            failed = f'<span class="muted">{_e(_cut(entry["error_message"], 110))}</span>'
        upstream = entry.get("upstream_model")
        model = _e(entry.get("model"))
        if upstream and upstream != entry.get("model"):
            model += " &rarr; " + _e(upstream)
        rows.append(
            "<tr>"
            f"<td>{_e(time.strftime('%H:%M:%S', time.gmtime(entry['time'])))}</td>"
            f"<td><code>{_e(entry.get('request_id'))}</code></td>"
            f"<td>{model}</td>"
            f"<td>{_status_badge(entry)}</td>"
            f"<td>{_e(entry.get('channel'))}</td>"
            f"<td class=num>{_e(entry.get('attempts'))}</td>"
            f"<td>{failed or _DASH}</td>"
            f"<td class=num>{_ms(entry.get('ttfb_ms'))}</td>"
            f"<td class=num>{_ms(entry.get('duration_ms'))}</td>"
            f"<td class=num>{tokens}</td>"
            "</tr>"
        )
    head = (
        "<tr><th>time (UTC)</th><th>request id</th><th>model</th><th>status</th><th>served by</th>"
        "<th>attempts</th><th>failed attempts / error</th><th>TTFB</th><th>total</th><th>tokens in / out</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _channel_section(channel: Mapping[str, Any]) -> str:
    enabled = channel.get("enabled", True)
    breaker = _state_text(channel.get("breaker"))
    breaker_kind = {"closed": "ok", "open": "bad", "half_open": "warn", "half-open": "warn"}.get(breaker, "")
    stats = channel.get("stats") or {}
    model_map = channel.get("model_map") or {}
    mapping = ", ".join(f"{_e(k)} &rarr; {_e(v)}" for k, v in model_map.items()) or _DASH
    keys = ", ".join(channel.get("api_keys") or ()) or "none"
    return (
        f"<section><h2>{_e(channel['name'])} {_badge(channel.get('service_type', ''))}"
        f" {_badge('enabled', 'ok') if enabled else _badge('disabled', 'bad')}"
        f" {_badge('breaker: ' + breaker, breaker_kind)}</h2>"
        "<dl>"
        f"<dt>upstream</dt><dd><code>{_e(channel.get('endpoint_url') or channel.get('base_url'))}</code></dd>"
        f"<dt>try order</dt><dd>{_e(channel.get('order')) if channel.get('order') is not None else _DASH}"
        f" (priority {_e(channel.get('priority') if channel.get('priority') is not None else 'default')})</dd>"
        f"<dt>keys</dt><dd><code>{_e(keys)}</code></dd>"
        f"<dt>model map</dt><dd>{mapping}</dd>"
        f"<dt>allowlist</dt><dd>{_e(', '.join(channel.get('models') or ()) or 'all models')}</dd>"
        f"<dt>affinity</dt><dd>{_e(_affinity_text(channel.get('affinity')))}</dd>"
        f"<dt>requests</dt><dd>{_e(stats.get('requests', 0))} served, {_e(stats.get('ok', 0))} completed,"
        f" {_e(stats.get('failed_attempts', 0))} failed attempts</dd>"
        "</dl>"
        f"{_recent_table(channel.get('recent') or ())}</section>"
    )


def render_status_page(snapshot: Mapping[str, Any]) -> str:
    """The HTML status page for an :meth:`AdminAPI.snapshot` document (every value escaped)."""
    gateway = snapshot["gateway"]
    uptime = int(gateway["uptime_seconds"])
    metrics = gateway.get("metrics_path")
    links = '<a href="channels">JSON</a>'
    if metrics:
        links += f' · <a href="..{_e(metrics)}">metrics</a>'
    unrouted = snapshot.get("unrouted_recent") or []
    sections = "".join(_channel_section(c) for c in snapshot["channels"]) or (
        '<section><p class="muted">No channels configured (CCX_CHANNELS is empty).</p></section>'
    )
    if unrouted:
        sections += f"<section><h2>Requests that reached no channel</h2>{_recent_table(unrouted)}</section>"
    notice = ""
    if gateway.get("state_error"):
        notice = f'<section><span class="badge bad">{_e(gateway["state_error"])}</span></section>'
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        '<meta http-equiv=refresh content="15">'
        f"<title>ccx_asgi status</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>ccx_asgi gateway</h1><span>version {_e(gateway['version'])}</span>"
        f"<span>up {uptime // 3600}h {uptime % 3600 // 60}m {uptime % 60}s (since {_e(gateway['started_at'])})</span>"
        f"<span>{_plural(len(snapshot['channels']), 'channel')}</span>"
        f"<span>pid {_e(gateway.get('pid'))}</span><span>{links}</span></header>"
        f"<main>{notice}{sections}</main></body></html>"
    )
