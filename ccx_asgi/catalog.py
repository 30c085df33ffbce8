"""``GET /models``: the models clients may request, in OpenAI's list shape.

The list is the configured names (``model_map`` keys and exact ``models`` allowlist entries, which
never need the network) followed by each upstream's own list, fetched lazily on the first call and
kept for ``ttl`` seconds. Upstream lists are filtered by the channel's allowlist. A slow or failing
upstream never fails ``/models``: it is skipped (and remembered as empty for the TTL, so a dead
upstream does not slow every call) and a warning is logged.

Each list is fetched through :meth:`Upstream.get_json <ccx_asgi.upstream.Upstream.get_json>` (the
channel's own pool, proxy and CA) within ``timeout`` seconds in all. One refresh runs at a time and
callers share it, but none waits for it longer than ``timeout``: a caller that would is answered
with what is cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from ccx_asgi.channels import adapter_for, builtin_models
from ccx_asgi.channels.base import ChannelAdapter, ModelsRequest
from ccx_asgi.errors import UpstreamError
from ccx_asgi.routing import Allowlist, public_models
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.upstream import Upstream

__all__ = ["ModelCatalog"]


class _Remote(NamedTuple):
    """A channel whose upstream list is fetched, with how to ask for it."""

    channel: ChannelConfig
    allow: Allowlist
    adapter: ChannelAdapter
    request: ModelsRequest


logger = logging.getLogger("ccx_asgi.models")

_MAX_LIST_BYTES = 4 * 1024 * 1024


class ModelCatalog:
    """Builds the ``/models`` answer for ``channels`` (enabled, in priority order).

    ``upstream`` is the app's :class:`~ccx_asgi.upstream.Upstream`; ``fetch`` turns upstream lists
    off; ``ttl`` and ``timeout`` are in seconds.
    """

    def __init__(
        self,
        channels: Sequence[ChannelConfig],
        upstream: Upstream,
        *,
        fetch: bool = True,
        ttl: float = 60.0,
        timeout: float = 3.0,
    ) -> None:
        self._upstream = upstream
        self._ttl = ttl
        self._timeout = timeout
        self._static = [_entry(name, channel) for name, channel in public_models(channels)]
        listed = {e["id"] for e in self._static}
        self._static += [_entry(name, owner) for name, owner in builtin_models(channels, listed)]
        self._remote: list[_Remote] = []
        for channel in channels if fetch else ():
            adapter = adapter_for(channel.service_type)
            request = adapter.models_request(channel) if adapter is not None else None
            if adapter is not None and request is not None:
                self._remote.append(_Remote(channel, Allowlist.compile(channel.models), adapter, request))
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._refresh: asyncio.Task[None] | None = None

    async def listing(self, request_id: str) -> dict[str, Any]:
        """The OpenAI-style list: configured names first, then upstream names, without duplicates."""
        data = list(self._static)
        if self._remote:
            seen = {entry["id"] for entry in data}
            for entries in await self._upstream_lists(request_id):
                for entry in entries:
                    if entry["id"] not in seen:
                        seen.add(entry["id"])
                        data.append(entry)
        return {"object": "list", "data": data}

    async def _upstream_lists(self, request_id: str) -> list[list[dict[str, Any]]]:
        if any(self._stale(r.channel.name, time.monotonic()) for r in self._remote):
            # One refresh at a time: concurrent callers share it instead of fetching again, and none
            # waits for it longer than one fetch may take (the refresh itself is bounded by that too).
            task = self._refresh
            if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
                task = self._refresh = asyncio.ensure_future(self._refresh_stale(request_id))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._timeout):
                    await asyncio.shield(task)
        return [self._cache[r.channel.name][1] for r in self._remote if r.channel.name in self._cache]

    async def _refresh_stale(self, request_id: str) -> None:
        now = time.monotonic()
        stale = [r for r in self._remote if self._stale(r.channel.name, now)]
        results = await asyncio.gather(*(self._fetch(r, request_id) for r in stale))
        for remote, entries in zip(stale, results, strict=True):
            self._cache[remote.channel.name] = (time.monotonic() + self._ttl, entries)

    def _stale(self, name: str, now: float) -> bool:
        cached = self._cache.get(name)
        return cached is None or cached[0] <= now

    async def _fetch(self, remote: _Remote, request_id: str) -> list[dict[str, Any]]:
        channel, allow = remote.channel, remote.allow
        key = channel.api_keys[0] if channel.api_keys and channel.api_keys[0].get_secret_value() else None
        headers = [
            ("accept", "application/json"),
            ("x-request-id", request_id),
            *remote.adapter.auth_headers(channel, key),
            *((k, v.get_secret_value()) for k, v in channel.headers.items()),
        ]
        url = channel.url(remote.request.path, remote.request.query)
        try:
            data = await self._upstream.get_json(channel, url, headers, within=self._timeout, limit=_MAX_LIST_BYTES)
        except UpstreamError as exc:  # a model list is a nicety: nothing about it may fail /models
            logger.warning(
                "channel %s: could not fetch the upstream model list for /models (%s); "
                "listing configured names only for %gs",
                channel.name,
                exc.message,
                self._ttl,
            )
            return []
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            logger.warning("channel %s: the upstream model list has no 'data' array", channel.name)
            return []
        return [
            _entry(item["id"], channel.name, item.get("created"))
            for item in items
            if isinstance(item, dict) and isinstance(item.get("id"), str) and allow.allows(item["id"])
        ]


def _entry(model: str, channel: str, created: Any = 0) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": created if isinstance(created, int) and not isinstance(created, bool) else 0,
        "owned_by": channel,
    }
