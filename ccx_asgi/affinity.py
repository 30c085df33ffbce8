"""Session affinity: keep a conversation on the channel and key that last served it.

Prompt caches and encrypted reasoning are bound to one upstream (and often one key), so moving a
conversation between channels costs money and can break ``encrypted_content`` replay. A session is
identified by the request's ``prompt_cache_key``, else the ``session-id``/``session_id`` header,
else the body's ``user``; only a SHA-256 digest of it is stored.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from ccx_asgi.context import RequestContext
from ccx_asgi.state import Clock, StateStore

__all__ = ["Affinity", "Sticky", "session_key"]

_NS = "affinity"


def session_key(ctx: RequestContext) -> str | None:
    """The conversation identity of ``ctx`` (hashed), or ``None`` when the request carries none."""
    source: str | None = None
    cache_key = ctx.body.get("prompt_cache_key")
    if isinstance(cache_key, str) and cache_key:
        source = "pck:" + cache_key
    else:
        header = ctx.header(b"session-id") or ctx.header(b"session_id")
        if header:
            source = "sid:" + header
        else:
            user = ctx.body.get("user")
            if isinstance(user, str) and user:
                source = "usr:" + user
    if source is None:
        return None
    return hashlib.sha256(source.encode("utf-8", "replace")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Sticky:
    """Where a session was last served: channel name and target id (see :func:`~ccx_asgi.breaker.target_id`)."""

    channel: str
    target: str
    at: float


class Affinity:
    """Session → (channel, key) for ``ttl`` seconds, in ``store``."""

    def __init__(self, store: StateStore, *, ttl: float = 1800.0, clock: Clock = time.time) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock

    async def lookup(self, session: str) -> Sticky | None:
        """The sticky target of ``session``, if it is still remembered."""
        record = await self.store.get(_NS, session)
        if record is None:
            return None
        channel, target = record.get("c"), record.get("t")
        if not isinstance(channel, str) or not isinstance(target, str):
            return None
        return Sticky(channel, target, float(record.get("at", 0)))

    async def remember(self, session: str, channel: str, target: str, previous: Sticky | None) -> None:
        """Stick ``session`` to ``target``; skips the write when nothing changed and the TTL is fresh."""
        now = self.clock()
        if previous is not None and previous.target == target and now - previous.at < self.ttl / 4:
            return
        await self.store.set(_NS, session, {"c": channel, "t": target, "at": now}, self.ttl)
