"""Shared routing state (circuit breakers, parked keys, session affinity) behind one small interface.

:class:`StateStore` is four operations on JSON-able dicts with a per-entry TTL. Two backends:

- :class:`MemoryStore` (the default): a ``cachetools.TLRUCache`` per process, with an injectable
  clock so tests move time instead of sleeping.
- :class:`RedisStore` (when ``CCX_REDIS_URL`` is set): the same data in Redis under one prefix, so
  several gateway instances share breakers and affinity. Every write also goes to a local
  :class:`MemoryStore`; when Redis fails the store logs it once, serves from the local copy and
  retries Redis after a pause. A Redis outage never fails a request.

Stored responses (:mod:`ccx_asgi.store`) are larger and need a byte bound, so they use a second,
bytes-valued interface, :class:`BlobStore`: :class:`MemoryBlobStore` (bounded in entries *and*
bytes, per-entry TTL) or :class:`RedisBlobStore` (the same server and fallback as :class:`RedisStore`,
through a client of its own with a longer timeout and its own health flag).

Updates are read-modify-write without a transaction: two instances updating the same breaker at the
same moment may lose one increment. That costs at most one extra failure before a breaker opens and
buys one round trip per request instead of a ``WATCH``/``MULTI`` cycle. The half-open probe, which
must be exclusive, uses an atomic ``SET NX`` (:meth:`StateStore.claim`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import orjson
from cachetools import TLRUCache

from ccx_asgi.errors import ConfigurationError

__all__ = [
    "BLOB_TIMEOUT",
    "BlobStore",
    "Clock",
    "MemoryBlobStore",
    "MemoryStore",
    "RedisBlobStore",
    "RedisConnection",
    "RedisStore",
    "StateStore",
    "create_blob_store",
    "create_store",
]

logger = logging.getLogger("ccx_asgi.state")

#: A wall clock in seconds. Wall time (not monotonic) because Redis shares it between hosts.
Clock = Callable[[], float]
_T = TypeVar("_T")


class StateStore(Protocol):
    """What routing needs from a state backend: TTL'd JSON records and one atomic claim."""

    async def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        """The record, or ``None`` when absent or expired."""

    async def set(self, namespace: str, key: str, value: dict[str, Any], ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds."""

    async def delete(self, namespace: str, key: str) -> None:
        """Forget the record (no error when absent)."""

    async def claim(self, namespace: str, key: str, ttl: float) -> bool:
        """Atomically create a marker for ``ttl`` seconds; ``False`` when it already exists."""

    async def aclose(self) -> None:
        """Release connections."""


class MemoryStore:
    """In-process state in a ``TLRUCache`` (per-entry TTL). ``clock`` drives expiry (tests inject one)."""

    def __init__(self, *, maxsize: int = 100_000, clock: Clock = time.time) -> None:
        self.clock = clock
        self._cache: TLRUCache[tuple[str, str], tuple[dict[str, Any], float]] = TLRUCache(
            maxsize=maxsize, ttu=lambda _key, value, _now: value[1], timer=clock
        )

    async def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        """See :meth:`StateStore.get`."""
        entry = self._cache.get((namespace, key))
        return dict(entry[0]) if entry is not None else None

    async def set(self, namespace: str, key: str, value: dict[str, Any], ttl: float) -> None:
        """See :meth:`StateStore.set`."""
        self._cache[(namespace, key)] = (dict(value), self.clock() + max(ttl, 0.001))

    async def delete(self, namespace: str, key: str) -> None:
        """See :meth:`StateStore.delete`."""
        self._cache.pop((namespace, key), None)

    async def claim(self, namespace: str, key: str, ttl: float) -> bool:
        """See :meth:`StateStore.claim` (atomic: no await between the check and the write)."""
        if (namespace, key) in self._cache:
            return False
        self._cache[(namespace, key)] = ({}, self.clock() + max(ttl, 0.001))
        return True

    async def aclose(self) -> None:
        """Nothing to release."""


class RedisConnection:
    """One Redis client with its own socket timeout and its own health flag.

    :meth:`call` runs a command and, on any failure, runs the fallback instead and keeps serving
    fallbacks for ``retry_after`` seconds, so a dead or hung Redis costs one timeout, not one per
    request. :class:`RedisStore` (breakers, affinity: small records, a short timeout) and the stored
    responses' :class:`RedisBlobStore` (large records, a longer one) each have their own, so a slow
    read of a big record never switches the routing state to local.
    """

    def __init__(self, url: str, *, timeout: float, retry_after: float, clock: Clock, name: str) -> None:
        try:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError:  # pragma: no cover - depends on the installation
            raise ConfigurationError(
                "CCX_REDIS_URL is set but the 'redis' package is not installed: pip install 'ccx-asgi[redis]'"
            ) from None

        # No client-side retries: a failure falls back to local state at once instead of stalling.
        self.client = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        self.name = name
        self.retry_after = retry_after
        self._clock = clock
        self._down_until = 0.0
        self._degraded = False

    @property
    def healthy(self) -> bool:
        """Whether Redis is currently in use (``False`` while serving fallbacks after a failure)."""
        return self._clock() >= self._down_until

    async def call(self, action: Callable[[], Awaitable[_T]], fallback: Callable[[], Awaitable[_T]]) -> _T:
        """``action()``, or ``fallback()`` when Redis is marked down or the action fails."""
        if not self.healthy:
            return await fallback()
        try:
            result = await action()
        except Exception as exc:  # any Redis or socket failure must degrade, never fail the request
            log = logger.debug if self._degraded else logger.warning
            log(
                "Redis %s unavailable (%s: %s); using local state, retrying Redis in %gs",
                self.name,
                type(exc).__name__,
                exc,
                self.retry_after,
            )
            self._degraded = True
            self._down_until = self._clock() + self.retry_after
            return await fallback()
        if self._degraded:
            logger.warning("Redis %s reachable again; shared state resumed", self.name)
            self._degraded = False
        return result

    async def aclose(self) -> None:
        """Close the client's connection pool."""
        try:
            await self.client.aclose()
        except Exception:  # closing a dead connection must not break shutdown
            logger.debug("error while closing the Redis client", exc_info=True)


class RedisStore:
    """State in Redis shared by every instance, degrading to a local :class:`MemoryStore`.

    ``url`` is a ``redis://`` URL; ``prefix`` namespaces the keys (``<prefix>:<namespace>:<key>``);
    ``timeout`` bounds each Redis call so a hung server cannot hold a request for long;
    ``retry_after`` is how long to serve locally after a Redis failure before trying Redis again.
    :meth:`open_connection` gives other users of the same server (the stored responses) a client of
    their own.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "ccx",
        timeout: float = 0.5,
        retry_after: float = 5.0,
        clock: Clock = time.time,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.local = MemoryStore(clock=clock)
        self.retry_after = retry_after
        self._clock = clock
        self.connection = RedisConnection(
            url, timeout=timeout, retry_after=retry_after, clock=clock, name="state store"
        )
        self._redis = self.connection.client

    @property
    def healthy(self) -> bool:
        """Whether Redis is currently in use (``False`` while serving from local state)."""
        return self.connection.healthy

    def key(self, namespace: str, key: str) -> str:
        """The Redis key of ``(namespace, key)``: ``<prefix>:<namespace>:<key>``."""
        return f"{self.prefix}:{namespace}:{key}"

    def open_connection(self, *, timeout: float, name: str) -> RedisConnection:
        """A new client of the same server with its own ``timeout`` and health flag (the caller closes it)."""
        return RedisConnection(self.url, timeout=timeout, retry_after=self.retry_after, clock=self._clock, name=name)

    async def _call(self, action: Callable[[], Awaitable[_T]], fallback: Callable[[], Awaitable[_T]]) -> _T:
        return await self.connection.call(action, fallback)

    async def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        """See :meth:`StateStore.get`."""

        async def action() -> dict[str, Any] | None:
            raw = await self._redis.get(self.key(namespace, key))
            if raw is None:
                return None
            value = orjson.loads(raw)
            return value if isinstance(value, dict) else None

        return await self._call(action, lambda: self.local.get(namespace, key))

    async def set(self, namespace: str, key: str, value: dict[str, Any], ttl: float) -> None:
        """See :meth:`StateStore.set` (also kept locally for an outage)."""
        await self.local.set(namespace, key, value, ttl)

        async def action() -> None:
            await self._redis.set(self.key(namespace, key), orjson.dumps(value), px=max(1, int(ttl * 1000)))

        async def nothing() -> None:
            return None

        await self._call(action, nothing)

    async def delete(self, namespace: str, key: str) -> None:
        """See :meth:`StateStore.delete`."""
        await self.local.delete(namespace, key)

        async def action() -> None:
            await self._redis.delete(self.key(namespace, key))

        async def nothing() -> None:
            return None

        await self._call(action, nothing)

    async def claim(self, namespace: str, key: str, ttl: float) -> bool:
        """See :meth:`StateStore.claim` (``SET NX PX`` in Redis)."""

        async def action() -> bool:
            won = await self._redis.set(self.key(namespace, key), b"1", nx=True, px=max(1, int(ttl * 1000)))
            return bool(won)

        return await self._call(action, lambda: self.local.claim(namespace, key, ttl))

    async def aclose(self) -> None:
        """Close the Redis connection pool."""
        await self.connection.aclose()


def create_store(redis_url: str | None, *, prefix: str = "ccx", clock: Clock = time.time) -> StateStore:
    """A :class:`RedisStore` when ``redis_url`` is given, else a :class:`MemoryStore`."""
    if redis_url:
        return RedisStore(redis_url, prefix=prefix, clock=clock)
    return MemoryStore(clock=clock)


# -- bytes-valued records (stored responses) ---------------------------------------------------------


class BlobStore(Protocol):
    """TTL'd byte strings by ``(namespace, key)``, for records too large for :class:`StateStore`."""

    async def get(self, namespace: str, key: str) -> bytes | None:
        """The bytes, or ``None`` when absent or expired."""

    async def get_many(self, namespace: str, keys: list[str]) -> list[bytes | None]:
        """The bytes of each key, in order (one round trip in Redis)."""

    async def put(self, namespace: str, key: str, data: bytes, ttl: float) -> bool:
        """Store ``data`` for ``ttl`` seconds; ``False`` when it is larger than the store may hold."""

    async def put_many(self, namespace: str, entries: list[tuple[str, bytes]], ttl: float) -> None:
        """Store several records at once (one round trip in Redis); ones too large are skipped."""

    async def delete(self, namespace: str, key: str) -> bool:
        """Forget the record; ``True`` when there was one."""

    async def aclose(self) -> None:
        """Release connections."""


class MemoryBlobStore:
    """Byte strings in a ``TLRUCache``, bounded by ``max_entries`` and ``max_bytes`` together.

    cachetools bounds one size, so each entry weighs ``max(len(data), max_bytes // max_entries)``:
    the total weight never exceeds ``max_bytes``, which also caps the count at ``max_entries``. The
    least recently used records go first; expired ones are never returned.
    """

    def __init__(self, *, max_entries: int, max_bytes: int, clock: Clock = time.time) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a MemoryBlobStore needs max_entries >= 1 and max_bytes >= 1")
        self.clock = clock
        self.max_bytes = max_bytes
        floor = max(1, max_bytes // max_entries)
        self._cache: TLRUCache[tuple[str, str], tuple[bytes, float]] = TLRUCache(
            maxsize=max_bytes,
            ttu=lambda _key, value, _now: value[1],
            timer=clock,
            getsizeof=lambda value: max(len(value[0]), floor),
        )

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def size(self) -> int:
        """The weight of what is held (at most ``max_bytes``)."""
        return int(self._cache.currsize)

    @property
    def held_bytes(self) -> int:
        """The bytes of the records held (at most ``size``)."""
        return sum(len(data) for data, _ in self._cache.values())

    async def get(self, namespace: str, key: str) -> bytes | None:
        """See :meth:`BlobStore.get`."""
        entry = self._cache.get((namespace, key))
        return entry[0] if entry is not None else None

    async def get_many(self, namespace: str, keys: list[str]) -> list[bytes | None]:
        """See :meth:`BlobStore.get_many`."""
        return [await self.get(namespace, key) for key in keys]

    async def put(self, namespace: str, key: str, data: bytes, ttl: float) -> bool:
        """See :meth:`BlobStore.put`."""
        if len(data) > self.max_bytes:
            return False
        self._cache[(namespace, key)] = (data, self.clock() + max(ttl, 0.001))
        return True

    async def put_many(self, namespace: str, entries: list[tuple[str, bytes]], ttl: float) -> None:
        """See :meth:`BlobStore.put_many`."""
        for key, data in entries:
            await self.put(namespace, key, data, ttl)

    async def delete(self, namespace: str, key: str) -> bool:
        """See :meth:`BlobStore.delete`."""
        return self._cache.pop((namespace, key), None) is not None

    async def aclose(self) -> None:
        """Nothing to release."""


class RedisBlobStore:
    """Byte strings in Redis through ``connection``, falling back to ``local``.

    ``redis`` gives the server, the key prefix and the key scheme (:meth:`RedisStore.key`);
    ``connection`` is this store's own client (:meth:`RedisStore.open_connection`, with the longer
    :data:`BLOB_TIMEOUT`), so a slow big record never marks the routing state's Redis down. Writes go
    to Redis and to ``local`` (so an outage still finds recent records); reads come from Redis while
    it is healthy. ``local.max_bytes`` refuses single records larger than that; the total in Redis is
    bounded by the TTL and the server's own ``maxmemory`` policy.
    """

    def __init__(self, redis: RedisStore, local: MemoryBlobStore, connection: RedisConnection) -> None:
        self.redis = redis
        self.local = local
        self.connection = connection

    async def get(self, namespace: str, key: str) -> bytes | None:
        """See :meth:`BlobStore.get`."""
        return (await self.get_many(namespace, [key]))[0]

    async def get_many(self, namespace: str, keys: list[str]) -> list[bytes | None]:
        """See :meth:`BlobStore.get_many` (one ``MGET``)."""
        if not keys:
            return []

        async def action() -> list[bytes | None]:
            raws = await self.connection.client.mget([self.redis.key(namespace, key) for key in keys])
            return [raw.encode() if isinstance(raw, str) else raw for raw in raws]

        return await self.connection.call(action, lambda: self.local.get_many(namespace, keys))

    async def put(self, namespace: str, key: str, data: bytes, ttl: float) -> bool:
        """See :meth:`BlobStore.put`."""
        if not await self.local.put(namespace, key, data, ttl):
            return False

        async def action() -> bool:
            await self.connection.client.set(self.redis.key(namespace, key), data, px=max(1, int(ttl * 1000)))
            return True

        async def local_only() -> bool:
            return True

        return await self.connection.call(action, local_only)

    async def put_many(self, namespace: str, entries: list[tuple[str, bytes]], ttl: float) -> None:
        """See :meth:`BlobStore.put_many` (one pipelined round trip)."""
        fitting = [(key, data) for key, data in entries if await self.local.put(namespace, key, data, ttl)]
        if not fitting:
            return

        async def action() -> None:
            async with self.connection.client.pipeline(transaction=False) as pipe:
                for key, data in fitting:
                    pipe.set(self.redis.key(namespace, key), data, px=max(1, int(ttl * 1000)))
                await pipe.execute()

        async def local_only() -> None:
            return None

        await self.connection.call(action, local_only)

    async def delete(self, namespace: str, key: str) -> bool:
        """See :meth:`BlobStore.delete`."""
        held = await self.local.delete(namespace, key)

        async def action() -> bool:
            return bool(await self.connection.client.delete(self.redis.key(namespace, key)))

        async def local_only() -> bool:
            return held

        return await self.connection.call(action, local_only)

    async def aclose(self) -> None:
        """The connection belongs to whoever opened it (closed with it)."""


#: Socket timeout of the stored responses' own Redis client, in seconds: records reach megabytes,
#: far more than the routing state's 0.5 s is meant for.
BLOB_TIMEOUT = 2.0


def create_blob_store(
    state: StateStore,
    *,
    max_entries: int,
    max_bytes: int,
    clock: Clock = time.time,
    connection: RedisConnection | None = None,
) -> BlobStore:
    """A :class:`RedisBlobStore` on ``state``'s server when it is a :class:`RedisStore` (through
    ``connection``, or a new one with :data:`BLOB_TIMEOUT` that the store then owns), else a
    :class:`MemoryBlobStore`."""
    local = MemoryBlobStore(max_entries=max_entries, max_bytes=max_bytes, clock=clock)
    if isinstance(state, RedisStore):
        if connection is None:
            return _OwningRedisBlobStore(
                state, local, state.open_connection(timeout=BLOB_TIMEOUT, name="response store")
            )
        return RedisBlobStore(state, local, connection)
    return local


class _OwningRedisBlobStore(RedisBlobStore):
    """A :class:`RedisBlobStore` that closes its connection with itself."""

    async def aclose(self) -> None:
        """Close the connection opened for this store."""
        await self.connection.aclose()
