"""Stored responses: what ``store`` keeps so that ``previous_response_id``, ``item_reference`` and
``GET``/``DELETE /responses/{id}`` work on every channel.

Two kinds of record, both under the response id the client saw:

- **local** (a converted channel answered: chat, claude): the whole final response object, the
  *effective* input (the expanded chain the upstream actually received, so a follow-up needs one
  lookup however long the chain is), where the request's own input starts in it, and the serving
  channel. Every output item is also kept under its item id, for ``item_reference``.
- **native** (a native Responses channel answered): only the route, channel and key (as the
  secret-free :func:`~ccx_asgi.breaker.target_id`) and the upstream's own id, because that upstream
  holds the response. Follow-ups and ``GET``/``DELETE`` go back to exactly that channel and key.

Every record carries its owner: :func:`owner_fingerprint` of the client key that created it (a
keyed SHA-256, never the key). A lookup by another owner finds nothing, exactly like an unknown id.

Records live in a :class:`~ccx_asgi.state.BlobStore`: in memory (bounded in entries and bytes, with a
TTL) or in Redis when ``CCX_REDIS_URL`` is set, so every instance and worker sees them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ccx_asgi.context import RequestContext
from ccx_asgi.keys import KeySet, presented_keys
from ccx_asgi.state import BlobStore, Clock, StateStore, create_blob_store
from ccx_asgi.types import Scope

__all__ = [
    "ResponseStore",
    "StoredResponse",
    "before_answer",
    "client_owner",
    "owner_fingerprint",
]

logger = logging.getLogger("ccx_asgi.store")

_NS_RESPONSE = "response"
_NS_ITEM = "item"
_VERSION = 1
# The share of the byte budget that holds output items by id (the rest holds responses).
_ITEM_SHARE = 0.2
# An item record is small; this many of them may exist per stored response.
_ITEMS_PER_RESPONSE = 8
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


#: The hook's signature: the final response object and the upstream's id for it.
ResponseHook = Callable[[dict[str, Any], Any], Awaitable[None]]


@dataclass(slots=True)
class StoredResponse:
    """One stored record (see the module docstring for the two kinds)."""

    id: str
    owner: str
    kind: str
    created_at: float
    model: str
    channel: str
    #: ``local``: the final response object; ``native``: ``None``.
    response: dict[str, Any] | None = None
    #: ``local``: the effective input items, oldest first.
    input: list[Any] | None = None
    #: ``local``: index in ``input`` where the request's own input starts.
    own_from: int = 0
    #: ``native``: the serving target (:func:`~ccx_asgi.breaker.target_id`) and the upstream's id.
    target: str = ""
    upstream_id: str = ""

    @property
    def output(self) -> list[Any]:
        """The response's output items (``local`` only; empty otherwise)."""
        output = (self.response or {}).get("output")
        return output if isinstance(output, list) else []

    def dump(self) -> bytes:
        """The record as stored."""
        return _compact(
            orjson.dumps(
                {
                    "v": _VERSION,
                    "id": self.id,
                    "o": self.owner,
                    "k": self.kind,
                    "at": self.created_at,
                    "m": self.model,
                    "c": self.channel,
                    "r": self.response,
                    "i": self.input,
                    "f": self.own_from,
                    "t": self.target,
                    "u": self.upstream_id,
                }
            )
        )

    @classmethod
    def load(cls, raw: bytes) -> StoredResponse | None:
        """A record from its bytes; ``None`` for anything damaged or of another format version."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or data.get("v") != _VERSION or data.get("k") not in ("local", "native"):
            return None
        response, items = data.get("r"), data.get("i")
        return cls(
            id=str(data.get("id", "")),
            owner=str(data.get("o", "")),
            kind=data["k"],
            created_at=float(data.get("at") or 0),
            model=str(data.get("m", "")),
            channel=str(data.get("c", "")),
            response=response if isinstance(response, dict) else None,
            input=items if isinstance(items, list) else None,
            own_from=int(data.get("f") or 0),
            target=str(data.get("t", "")),
            upstream_id=str(data.get("u", "")),
        )


class ResponseStore:
    """Stored responses and their items, owner-checked (see the module docstring).

    ``enabled=False`` (``CCX_RESPONSE_STORE=false``) stores nothing and finds nothing. ``ttl`` is
    each record's lifetime in seconds; ``max_entries`` and ``max_bytes`` bound the in-memory copy
    (four fifths of the bytes for responses, one fifth for their items).
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
        self.clock = clock
        item_bytes = max(1, int(max_bytes * _ITEM_SHARE))
        self.responses: BlobStore = create_blob_store(
            state, max_entries=max_entries, max_bytes=max(1, max_bytes - item_bytes), clock=clock
        )
        self.items: BlobStore = create_blob_store(
            state, max_entries=max_entries * _ITEMS_PER_RESPONSE, max_bytes=item_bytes, clock=clock
        )

    async def save(self, record: StoredResponse) -> bool:
        """Store ``record`` (and, for a local one, each output item by id); ``False`` when refused."""
        if not self.enabled or not record.id:
            return False
        if not await self.responses.put(_NS_RESPONSE, record.id, record.dump(), self.ttl):
            logger.warning("response %s is larger than CCX_RESPONSE_STORE_MAX_MB allows: not stored", record.id)
            return False
        entries = [
            (item["id"], _compact(orjson.dumps({"v": _VERSION, "o": record.owner, "r": record.id, "item": item})))
            for item in record.output
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
        ]
        if entries:
            await self.items.put_many(_NS_ITEM, entries, self.ttl)
        return True

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        """The record of ``response_id`` when ``owner`` created it, else ``None``."""
        if not self.enabled or not response_id:
            return None
        raw = await self.responses.get(_NS_RESPONSE, response_id)
        record = StoredResponse.load(raw) if raw is not None else None
        if record is None or not hmac.compare_digest(record.owner, owner) or record.id != response_id:
            return None
        return record

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
        if not isinstance(data, dict) or data.get("v") != _VERSION or not isinstance(data.get("item"), dict):
            return None
        if not hmac.compare_digest(str(data.get("o", "")), owner):
            return None
        item: dict[str, Any] = data["item"]
        return item

    async def delete(self, record: StoredResponse) -> None:
        """Forget ``record`` and its items."""
        await self.responses.delete(_NS_RESPONSE, record.id)
        for item in record.output:
            item_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(item_id, str) and item_id:
                await self.items.delete(_NS_ITEM, item_id)

    async def aclose(self) -> None:
        """Release the stores (a Redis connection belongs to the state store and closes with it)."""
        await self.responses.aclose()
        await self.items.aclose()
