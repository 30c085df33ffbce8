"""The read-only HTML status page served at ``GET /admin/``: rendered from the same snapshot
``GET /admin/channels`` returns (:meth:`ccx_asgi.admin.AdminAPI.snapshot`), already free of secrets.
Every value is HTML-escaped; the page has no script and inline styles only (see the CSP in admin.py).
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_status_page"]

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
