"""``StatefulMiddleware``: ``store``, ``previous_response_id`` and ``item_reference`` before conversion.

It sits between the model mapper (which parsed the body) and the failover layer, and turns a
stateful request into a self-contained one, so the converters never see server-side state:

- ``previous_response_id`` naming a response stored by a converted channel: the stored chain (each
  earlier response's own input and output, read by walking the parents) is put before the new
  input (tool calls and their outputs stay paired across the chain). One naming a response held by
  a native Responses upstream: the request goes to that channel and key only
  (:attr:`~ccx_asgi.context.RequestContext.pinned_target`), with the upstream's own id. One the gateway holds no
  record of: forwarded to the native candidates only (their upstream may hold it: created before a
  restart without Redis, after the store's TTL, or before the gateway was deployed; it answers for
  itself), else 400 ``previous_response_not_found``, as OpenAI answers. Another client key's id is
  never forwarded: 400, like an unknown one.
- ``item_reference`` input items are replaced by the stored items (404 naming the id otherwise,
  as OpenAI answers); on a native channel an unknown reference is left for the upstream.
- ``background``, ``conversation`` and ``prompt`` cannot be honoured by converted channels: only
  native candidates are kept, else 400 naming the field.
- With ``store`` not ``false``, the final response is stored (through the
  :attr:`~ccx_asgi.context.RequestContext.on_answer` hook the endpoint calls before the client sees the answer).

The client's owner id (an HMAC of its key) is computed only when the request reads or stores state.

:class:`ChainAttemptMiddleware`, placed inside the failover layer, removes ``previous_response_id``
from an attempt on a Responses-speaking channel when the chain was expanded here (that upstream
never saw it), and, on every such attempt, reasoning items in a gateway envelope (only converted
channels can read those).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import SecretStr

from ccx_asgi.breaker import channel_targets, target_id
from ccx_asgi.channels import adapter_for
from ccx_asgi.channels.responses import ResponsesAdapter
from ccx_asgi.context import AnswerHook, RequestContext, get_context
from ccx_asgi.convert.claude import REASONING_PREFIX as CLAUDE_REASONING_PREFIX
from ccx_asgi.convert.common import input_items, openai_state_fields, wants_background
from ccx_asgi.convert.reasoning_codec import CHAT_REASONING_PREFIX
from ccx_asgi.errors import CCXError, InvalidRequestError, NotFoundError, send_error
from ccx_asgi.keys import KeySet
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.store import (
    MAX_CHAIN_DEPTH,
    BrokenChain,
    ResponseStore,
    StoredResponse,
    client_owner,
)
from ccx_asgi.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "GATEWAY_ENVELOPES",
    "ChainAttemptMiddleware",
    "StatefulMiddleware",
    "holds_state",
    "speaks_responses",
    "wants_background",
]

_STORABLE = frozenset({"completed", "incomplete"})
#: Prefixes of every ``encrypted_content`` this gateway writes (the converters' own envelopes).
GATEWAY_ENVELOPES = (CHAT_REASONING_PREFIX, CLAUDE_REASONING_PREFIX)


def holds_state(channel: ChannelConfig) -> bool:
    """Whether the channel's upstream stores responses itself (a native Responses channel)."""
    adapter = adapter_for(channel.service_type)
    return adapter is not None and adapter.stores_responses


def speaks_responses(channel: ChannelConfig) -> bool:
    """Whether the channel gets the Responses body as it is (native channels and the built-in demo,
    which keeps no state): the gateway's own envelopes and chain ids must be taken out for it."""
    return isinstance(adapter_for(channel.service_type), ResponsesAdapter)


def _not_found(response_id: str, why: str = "") -> InvalidRequestError:
    return InvalidRequestError(
        f"Previous response with id '{response_id}' not found.{why}",
        param="previous_response_id",
        code="previous_response_not_found",
    )


def _has_references(items: list[Any]) -> bool:
    return any(isinstance(i, dict) and i.get("type") == "item_reference" for i in items)


class _Owner:
    """The request's owner id, computed on first use (most Codex turns never need it)."""

    __slots__ = ("keys", "scope", "value")

    def __init__(self, scope: Scope, keys: KeySet | None) -> None:
        self.scope, self.keys, self.value = scope, keys, ""

    def __call__(self) -> str:
        if not self.value:
            self.value = client_owner(self.scope, self.keys)
        return self.value


class StatefulMiddleware:
    """Expand stored state into the request and store the answer (see the module docstring).

    ``store`` is the :class:`~ccx_asgi.store.ResponseStore`; ``client_keys`` are the gateway's
    client keys (the owner of a stored response is the key that created it).
    """

    def __init__(self, app: ASGIApp, *, store: ResponseStore, client_keys: Sequence[SecretStr] = ()) -> None:
        self.app = app
        self.store = store
        self.keys = KeySet(client_keys) if client_keys else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite the request context, install the storing hook, then call the wrapped app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope)
        try:
            await self._prepare(ctx, _Owner(scope, self.keys))
        except CCXError as exc:
            await send_error(send, exc)
            return
        await self.app(scope, receive, send)

    def _natives_only(self, ctx: RequestContext, problem: CCXError) -> None:
        """Keep only native Responses candidates (they can honour what converters cannot), else raise."""
        natives = [c for c in ctx.candidates if holds_state(c.channel)]
        if not natives:
            raise problem
        ctx.candidates = natives

    async def _prepare(self, ctx: RequestContext, owner: Callable[[], str]) -> None:
        body = ctx.body
        for name in openai_state_fields(body):
            self._natives_only(
                ctx,
                InvalidRequestError(
                    f"'{name}' is not supported for model '{ctx.model}': its channels convert the request "
                    "to another API that has no equivalent. Send the full context in 'input' instead, "
                    "or use a native Responses channel.",
                    param=name,
                    code="unsupported_parameter",
                ),
            )
        store_flag = body.get("store")
        if store_flag is not None and not isinstance(store_flag, bool):
            raise InvalidRequestError("'store' must be a boolean.", param="store", code="invalid_type")
        previous = body.get("previous_response_id")
        if previous is not None and (not isinstance(previous, str) or not previous):
            raise InvalidRequestError(
                "'previous_response_id' must be a non-empty string.", param="previous_response_id", code="invalid_type"
            )

        chain: list[Any] = []
        parent: StoredResponse | None = None
        rewritten: dict[str, Any] = {}
        if previous:
            record, held = await self.store.find(owner(), previous)
            if record is None:
                if held:  # another client key's: never forwarded, answered like an unknown id
                    raise _not_found(previous)
                # No record here: a native upstream may still hold it (and answers for itself if not).
                why = "" if self.store.enabled else " Storing responses is off (CCX_RESPONSE_STORE)."
                self._natives_only(ctx, _not_found(previous, why))
            elif record.kind == "native":
                self._pin(ctx, record)
                if record.upstream_id and record.upstream_id != previous:
                    rewritten["previous_response_id"] = record.upstream_id
            else:
                chain = await self._chain(record)
                parent = record

        own = input_items(body.get("input"))
        resolved = await self._resolve_references(ctx, owner, own) if _has_references(own) else own
        if chain or resolved is not own:
            rewritten["input"] = [*chain, *resolved]
            ctx.expanded = "chain" if chain else "references"
        if rewritten:
            ctx.body = {**body, **rewritten}
        if store_flag is not False and self.store.enabled:
            ctx.on_answer = self._hook(ctx, owner(), resolved, parent)

    async def _chain(self, record: StoredResponse) -> list[Any]:
        """The items of ``record``'s chain up to and including it: each response's input, then its output."""
        if record.depth + 1 >= MAX_CHAIN_DEPTH:
            raise InvalidRequestError(
                f"Previous response '{record.id}' ends a chain of {record.depth + 1} responses; this gateway "
                f"continues chains of at most {MAX_CHAIN_DEPTH}. Start a new chain with the history in 'input'.",
                param="previous_response_id",
                code="invalid_value",
            )
        try:
            ancestors = await self.store.chain(record)
        except BrokenChain as broken:
            raise _not_found(
                broken.missing,
                f" It is an earlier response in the chain of '{record.id}', which cannot be continued without it "
                "(deleted, expired or evicted).",
            ) from None
        items: list[Any] = []
        for stored in (*ancestors, record):
            items += stored.input
            items += stored.output
        return items

    def _pin(self, ctx: RequestContext, record: StoredResponse) -> None:
        for candidate in ctx.candidates:
            if candidate.channel.name != record.channel:
                continue
            targets = channel_targets(candidate.channel.name, candidate.channel.api_keys)
            if any(tid == record.target for _, tid in targets):
                ctx.candidates = [candidate]
                ctx.pinned_target = record.target
                return
        raise InvalidRequestError(
            f"Previous response '{record.id}' is held by channel '{record.channel}' with a key that does not "
            f"serve model '{ctx.model}' (or is no longer configured); only that upstream account can continue it. "
            "Continue with a model that channel serves, or send the full history in 'input'.",
            param="previous_response_id",
            code="previous_response_not_found",
        )

    async def _resolve_references(self, ctx: RequestContext, owner: Callable[[], str], items: list[Any]) -> list[Any]:
        """``items`` with each ``item_reference`` replaced by its stored item (a new list)."""
        out: list[Any] = []
        for item in items:
            if not (isinstance(item, dict) and item.get("type") == "item_reference"):
                out.append(item)
                continue
            item_id = item.get("id")
            stored = await self.store.item(owner(), item_id) if isinstance(item_id, str) else None
            if stored is not None:
                out.append(stored)
                continue
            # A native upstream may hold the item itself; converted channels cannot resolve it.
            self._natives_only(
                ctx,
                NotFoundError(
                    f"Item with id '{item_id}' not found (an 'item_reference' in 'input'). Items are kept only for "
                    "responses created with 'store' true, for the same client key, until they expire.",
                    param="input",
                    code="item_not_found",
                ),
            )
            out.append(item)
        return out

    def _hook(self, ctx: RequestContext, owner: str, own: list[Any], parent: StoredResponse | None) -> AnswerHook:
        store = self.store

        async def save(response: dict[str, Any], upstream_id: Any) -> None:
            attempt = ctx.attempt
            response_id = response.get("id")
            if attempt is None or not isinstance(response_id, str):
                return
            channel = attempt.channel
            record = StoredResponse(id=response_id, owner=owner, kind="local", channel=channel.name)
            if holds_state(channel):
                # A native upstream keeps every response it made (a queued background one too), and
                # the whole input it was sent: only the route is recorded.
                record.kind = "native"
                record.target = target_id(channel.name, attempt.api_key)
                record.upstream_id = upstream_id if isinstance(upstream_id, str) else response_id
            elif response.get("status") not in _STORABLE:
                return
            else:
                record.response, record.input = response, own
                if parent is not None:
                    record.follow(parent)
            await store.save(record)

        return save


def _any_gateway_reasoning(items: list[Any]) -> bool:
    """Whether ``items`` hold a reasoning item in a gateway envelope (one pass, no call per item:
    this runs on every attempt to a native channel, almost always finding none)."""
    for item in items:
        if type(item) is dict and item.get("type") == "reasoning":
            content = item.get("encrypted_content")
            if isinstance(content, str) and content.startswith(GATEWAY_ENVELOPES):
                return True
    return False


def _gateway_reasoning(item: Any) -> bool:
    """A reasoning item carrying one of this gateway's envelopes, which only the converted channels
    can read: a native upstream would reject it as undecryptable."""
    if not isinstance(item, dict) or item.get("type") != "reasoning":
        return False
    content = item.get("encrypted_content")
    return isinstance(content, str) and content.startswith(GATEWAY_ENVELOPES)


class ChainAttemptMiddleware:
    """Per attempt on a channel that gets the Responses body as it is: no reasoning in a gateway
    envelope (it could not read it; a client replays those with ``store: false`` too, and a failover
    from a converted channel brings them here), and no ``previous_response_id`` for a chain the
    gateway expanded (that upstream never saw it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite a Responses-speaking attempt's body when needed, then call the wrapped app."""
        if scope["type"] == "http":
            ctx = get_context(scope)
            attempt = ctx.attempt
            if attempt is not None and speaks_responses(attempt.channel):
                body = attempt.body
                raw = body.get("input")
                items: list[Any] = raw if isinstance(raw, list) else []
                envelopes = _any_gateway_reasoning(items)
                chained = ctx.expanded == "chain" and "previous_response_id" in body
                if envelopes or chained:
                    body = dict(body)
                    if chained:
                        del body["previous_response_id"]
                    if envelopes:
                        body["input"] = [i for i in items if not _gateway_reasoning(i)]
                    attempt.body = body
        await self.app(scope, receive, send)
