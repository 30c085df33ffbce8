r"""Stored responses: what ``store`` keeps so that ``previous_response_id``, ``item_reference`` and
``GET``/``DELETE /responses/{id}`` work on every channel.

Two kinds of record, both under the response id the client saw:

- **local** (a converted channel answered: chat, claude, demo): the final response object, the
  request's *own* input (``item_reference`` resolved), the serving channel and the id of the
  previous response it continued (its *parent*). A chain is stored by reference, not by value: each
  record keeps its parent's id and the ids of up to :data:`ANCESTOR_WINDOW` earlier ancestors, so
  :meth:`ResponseStore.chain` reads a chain of ``n`` responses in ``n / ANCESTOR_WINDOW`` batched
  reads (one ``MGET`` each in Redis), and the bytes stored grow with the turns, not their square.
  A chain is at most :data:`MAX_CHAIN_DEPTH` responses deep. Every output item is also kept under
  its item id, for ``item_reference``.
- **native** (a native Responses channel answered): only the *route*, the channel and key (as the
  secret-free :func:`~ccx_asgi.breaker.target_id`) and the upstream's own id, because that upstream
  holds the response. Follow-ups and ``GET``/``DELETE`` go back to exactly that channel and key.
  Routes are a few hundred bytes, kept apart from the responses in a map of their own (one tenth of
  the byte budget, weighed at :data:`ROUTE_WEIGHT` bytes each) for :data:`ROUTE_TTL` (OpenAI keeps
  responses 30 days) or the response TTL when that is longer.

Every record carries its owner: :func:`owner_fingerprint` of the client key that created it (a
keyed SHA-256, never the key). A lookup by another owner finds nothing, exactly like an unknown id.

Records live in :class:`~ccx_asgi.state.BlobStore`\ s: in memory (bounded in entries and bytes, with
a TTL) or in Redis when ``CCX_REDIS_URL`` is set, so every instance and worker sees them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from ccx_asgi.context import RequestContext
from ccx_asgi.keys import KeySet, presented_keys
from ccx_asgi.state import BLOB_TIMEOUT, BlobStore, Clock, RedisConnection, RedisStore, StateStore, create_blob_store
from ccx_asgi.types import Scope

__all__ = [
    "ANCESTOR_WINDOW",
    "MAX_CHAIN_DEPTH",
    "ROUTE_TTL",
    "ROUTE_WEIGHT",
    "BrokenChain",
    "ResponseStore",
    "StoredResponse",
    "before_answer",
    "client_owner",
    "owner_fingerprint",
]

logger = logging.getLogger("ccx_asgi.store")

_NS_RESPONSE = "response"
_NS_ROUTE = "route"
_NS_ITEM = "item"
# Version 2: chains by reference (own input, parent and ancestor ids); version 1 held the chain.
_VERSION = 2
# Item records kept their format.
_ITEM_VERSION = 1
# Shares of the byte budget: output items by id, native routes; the rest holds responses.
_ITEM_SHARE = 0.2
_ROUTE_SHARE = 0.1
#: The share of ``CCX_RESPONSE_STORE_MAX_MB`` that holds local responses: the largest single one.
RESPONSE_SHARE = 1 - _ITEM_SHARE - _ROUTE_SHARE
# An item record is small; this many of them may exist per stored response.
_ITEMS_PER_RESPONSE = 8
#: What a route weighs in the memory bound: its ~250 bytes of JSON plus the cache's bookkeeping.
ROUTE_WEIGHT = 512
#: Seconds a native route is kept (at least; the response TTL when longer): as long as OpenAI
#: keeps the response itself, so a follow-up a week later still reaches the account that holds it.
ROUTE_TTL = 30 * 86400.0
#: Ancestor ids each local record keeps: a chain is read in batches of this many records.
ANCESTOR_WINDOW = 32
#: The most responses a chain may hold before a follow-up (a longer one is a 400: start a new chain).
MAX_CHAIN_DEPTH = 1000
# Distinguishes these digests from every other SHA-256 of a key (breaker target ids, auth digests).
_OWNER_CONTEXT = b"ccx-asgi stored-response owner v1"


def _compact(raw: bytes) -> bytes:
    """An exact-size copy of ``raw``: orjson leaves its output buffer at the worst-case capacity
    (4 KB for a 500-byte record, 64 KB for a 5 KB one), which a long-lived record would keep."""
    return bytes(memoryview(raw))


def owner_fingerprint(key: bytes | None) -> str:
    """The non-reversible owner id of a client key (``"-"`` for a request without a key)."""
    if not key:
        return "-"
    return hmac.new(_OWNER_CONTEXT, key, hashlib.sha256).hexdigest()[:32]


def client_owner(scope: Scope, keys: KeySet | None) -> str:
    """The owner id of the request in ``scope``: the fingerprint of the configured client key it
    presented, or (on a gateway without client keys) of the first key it sent at all."""
    presented = presented_keys(scope)
    if keys is not None and len(keys):
        for _, value in presented:
            if keys.matches(value):
                return owner_fingerprint(value)
        return owner_fingerprint(None)
    return owner_fingerprint(presented[0][1] if presented else None)


async def before_answer(ctx: RequestContext, response: Any, upstream_id: Any = None) -> None:
    """Give the final response object to the request's :attr:`~ccx_asgi.context.RequestContext.on_answer`
    hook, if any; never raises.

    Called by :class:`~ccx_asgi.channels.endpoint.ChannelEndpoint` with the JSON answer, and by its
    client stream with the terminal event's response, already carrying the id the client sees
    (``upstream_id`` is the id the upstream gave it, different after a failover behind keep-alives).
    """
    hook = ctx.on_answer
    if hook is None or not isinstance(response, dict):
        return
    try:
        await hook(response, upstream_id if isinstance(upstream_id, str) else response.get("id"))
    except Exception:  # storing must never fail an answer that exists
        logger.exception("request %s: could not store the response", ctx.request_id)


class BrokenChain(Exception):
    """An ancestor of a stored response is gone (deleted, expired or evicted): ``missing`` is its id."""

    def __init__(self, missing: str) -> None:
        super().__init__(missing)
        self.missing = missing


@dataclass(slots=True)
class StoredResponse:
    """One stored record (see the module docstring for the two kinds)."""

    id: str
    owner: str
    kind: str
    channel: str
    #: ``local``: the final response object; ``native``: ``None``.
    response: dict[str, Any] | None = None
    #: ``local``: the request's own input items (``item_reference`` resolved), oldest first.
    input: list[Any] = field(default_factory=list)
    #: ``local``: the previous response's id (``""`` for the first of a chain).
    parent: str = ""
    #: ``local``: the nearest ancestors' ids, oldest first, ending with ``parent`` (at most
    #: :data:`ANCESTOR_WINDOW`).
    ancestors: list[str] = field(default_factory=list)
    #: ``local``: how many responses precede this one in its chain.
    depth: int = 0
    #: ``native``: the serving target (:func:`~ccx_asgi.breaker.target_id`) and the upstream's id.
    target: str = ""
    upstream_id: str = ""

    @property
    def output(self) -> list[Any]:
        """The response's output items (``local`` only; empty otherwise)."""
        output = (self.response or {}).get("output")
        return output if isinstance(output, list) else []

    def follow(self, parent: StoredResponse) -> None:
        """Make this record the next response after ``parent`` in its chain."""
        self.parent = parent.id
        self.ancestors = [*parent.ancestors, parent.id][-ANCESTOR_WINDOW:]
        self.depth = parent.depth + 1

    def dump(self) -> bytes:
        """The record as stored."""
        data: dict[str, Any] = {"v": _VERSION, "id": self.id, "o": self.owner, "k": self.kind, "c": self.channel}
        if self.kind == "native":
            data |= {"t": self.target, "u": self.upstream_id}
        else:
            data |= {"r": self.response, "i": self.input, "p": self.parent, "a": self.ancestors, "d": self.depth}
        return _compact(orjson.dumps(data))

    @classmethod
    def load(cls, raw: bytes) -> StoredResponse | None:
        """A record from its bytes; ``None`` for anything damaged or of an unknown format version."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        # A version-1 record (before chains by reference) holds its whole effective input: it reads
        # as the first response of its chain, so chains stored before an upgrade continue.
        if not isinstance(data, dict) or data.get("v") not in (1, _VERSION) or data.get("k") not in ("local", "native"):
            return None
        response, items, ancestors = data.get("r"), data.get("i"), data.get("a")
        return cls(
            id=str(data.get("id", "")),
            owner=str(data.get("o", "")),
            kind=data["k"],
            channel=str(data.get("c", "")),
            response=response if isinstance(response, dict) else None,
            input=items if isinstance(items, list) else [],
            parent=str(data.get("p") or ""),
            ancestors=[str(a) for a in ancestors] if isinstance(ancestors, list) else [],
            depth=int(data.get("d") or 0),
            target=str(data.get("t", "")),
            upstream_id=str(data.get("u", "")),
        )


class ResponseStore:
    """Stored responses, their items and native routes, owner-checked (see the module docstring).

    ``enabled=False`` (``CCX_RESPONSE_STORE=false``) stores nothing and finds nothing. ``ttl`` is
    each response's lifetime in seconds; ``max_entries`` and ``max_bytes`` bound the in-memory copy
    (:data:`RESPONSE_SHARE` of the bytes for responses, one fifth for their items, one tenth for
    native routes). With a :class:`~ccx_asgi.state.RedisStore`, the records go to its server through
    a client of their own (:data:`~ccx_asgi.state.BLOB_TIMEOUT`), closed by :meth:`aclose`.
    """

    def __init__(
        self,
        state: StateStore,
        *,
        enabled: bool = True,
        ttl: float = 86400.0,
        max_entries: int = 10_000,
        max_bytes: int = 256 * 1024 * 1024,
        clock: Clock = time.time,
    ) -> None:
        self.enabled = enabled
        self.ttl = ttl
        self.route_ttl = max(ttl, ROUTE_TTL)
        self.clock = clock
        item_bytes = max(1, int(max_bytes * _ITEM_SHARE))
        route_bytes = max(ROUTE_WEIGHT, int(max_bytes * _ROUTE_SHARE))
        #: The largest single local response record this store keeps, in bytes.
        self.max_record_bytes = max(1, int(max_bytes * RESPONSE_SHARE))
        self._connection: RedisConnection | None = None
        if isinstance(state, RedisStore):
            self._connection = state.open_connection(timeout=BLOB_TIMEOUT, name="response store")

        def blobs(entries: int, size: int) -> BlobStore:
            connection = self._connection
            return create_blob_store(state, max_entries=entries, max_bytes=size, clock=clock, connection=connection)

        self.responses = blobs(max_entries, self.max_record_bytes)
        self.items = blobs(max_entries * _ITEMS_PER_RESPONSE, item_bytes)
        self.routes = blobs(max(1, route_bytes // ROUTE_WEIGHT), route_bytes)

    async def save(self, record: StoredResponse) -> bool:
        """Store ``record`` (and, for a local one, each output item by id); ``False`` when refused."""
        if not self.enabled or not record.id:
            return False
        if record.kind == "native":
            return await self.routes.put(_NS_ROUTE, record.id, record.dump(), self.route_ttl)
        if not await self.responses.put(_NS_RESPONSE, record.id, record.dump(), self.ttl):
            logger.warning(
                "response %s is larger than %d bytes (%d%% of CCX_RESPONSE_STORE_MAX_MB): not stored",
                record.id,
                self.max_record_bytes,
                round(RESPONSE_SHARE * 100),
            )
            return False
        entries = [
            (item["id"], _compact(orjson.dumps({"v": _ITEM_VERSION, "o": record.owner, "r": record.id, "item": item})))
            for item in record.output
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
        ]
        if entries:
            await self.items.put_many(_NS_ITEM, entries, self.ttl)
        return True

    async def find(self, owner: str, response_id: str) -> tuple[StoredResponse | None, bool]:
        """The record of ``response_id`` when ``owner`` created it, and whether any record of that id
        is held at all (``(None, True)``: another owner's, which must not be forwarded anywhere)."""
        if not self.enabled or not response_id:
            return None, False
        raw = await self.routes.get(_NS_ROUTE, response_id)
        if raw is None:
            raw = await self.responses.get(_NS_RESPONSE, response_id)
        record = StoredResponse.load(raw) if raw is not None else None
        if record is None or record.id != response_id:
            return None, False
        if not hmac.compare_digest(record.owner, owner):
            return None, True
        return record, True

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        """The record of ``response_id`` when ``owner`` created it, else ``None``."""
        return (await self.find(owner, response_id))[0]

    async def chain(self, record: StoredResponse) -> list[StoredResponse]:
        """The responses before ``record`` in its chain, oldest first; :class:`BrokenChain` naming the
        first one found missing (deleted, expired, evicted, or not the same owner's)."""
        batches: list[list[StoredResponse]] = []
        held = 0
        current = record
        while current.parent:
            ids = current.ancestors or [current.parent]
            raws = await self.responses.get_many(_NS_RESPONSE, ids)
            batch: list[StoredResponse] = []
            for wanted, raw in zip(ids, raws, strict=True):
                found = StoredResponse.load(raw) if raw is not None else None
                if (
                    found is None
                    or found.kind != "local"
                    or found.id != wanted
                    or not hmac.compare_digest(found.owner, record.owner)
                ):
                    raise BrokenChain(wanted)
                batch.append(found)
            batches.append(batch)
            held += len(batch)
            if held > MAX_CHAIN_DEPTH:  # only a damaged record can point this far back
                raise BrokenChain(batch[0].id)
            current = batch[0]
        return [found for batch in reversed(batches) for found in batch]

    async def item(self, owner: str, item_id: str) -> dict[str, Any] | None:
        """The stored output item ``item_id`` when ``owner`` created it, else ``None``."""
        if not self.enabled or not item_id:
            return None
        raw = await self.items.get(_NS_ITEM, item_id)
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or data.get("v") != _ITEM_VERSION or not isinstance(data.get("item"), dict):
            return None
        if not hmac.compare_digest(str(data.get("o", "")), owner):
            return None
        item: dict[str, Any] = data["item"]
        return item

    async def delete(self, record: StoredResponse) -> None:
        """Forget ``record`` and its items (a later response chained to it cannot be continued then)."""
        if record.kind == "native":
            await self.routes.delete(_NS_ROUTE, record.id)
            return
        await self.responses.delete(_NS_RESPONSE, record.id)
        for item in record.output:
            item_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(item_id, str) and item_id:
                await self.items.delete(_NS_ITEM, item_id)

    async def aclose(self) -> None:
        """Release the stores and this store's own Redis client."""
        await self.responses.aclose()
        await self.items.aclose()
        await self.routes.aclose()
        if self._connection is not None:
            await self._connection.aclose()
