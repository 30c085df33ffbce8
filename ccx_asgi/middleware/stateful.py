"""``StatefulMiddleware``: ``store``, ``previous_response_id`` and ``item_reference`` before conversion.

It sits between the model mapper (which parsed the body) and the failover layer, and turns a
stateful request into a self-contained one, so the converters never see server-side state:

- ``previous_response_id`` naming a response stored by a converted channel: the stored effective
  input and output are put before the new input (tool calls and their outputs stay paired across
  the chain). One naming a response held by a native Responses upstream: the request goes to that
  channel and key only (:attr:`~ccx_asgi.context.RequestContext.pinned_target`), with the upstream's own id.
  Unknown, expired, deleted, ``store: false`` or another client key's ids: 400
  ``previous_response_not_found``, as OpenAI answers.
- ``item_reference`` input items are replaced by the stored items (404 naming the id otherwise,
  as OpenAI answers); on a native channel an unknown reference is left for the upstream.
- ``background``, ``conversation`` and ``prompt`` cannot be honoured by converted channels: only
  native candidates are kept, else 400 naming the field.
- With ``store`` not ``false``, the final response is stored (through the
  :attr:`~ccx_asgi.context.RequestContext.on_answer` hook the endpoint calls before the client sees the answer).

:class:`ChainAttemptMiddleware`, placed inside the failover layer, removes ``previous_response_id``
from an attempt on a native channel when the chain was expanded here (that upstream never saw it),
and the chain's reasoning items in a gateway envelope (only converted channels can read those).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pydantic import SecretStr

from ccx_asgi.breaker import target_id
from ccx_asgi.context import AnswerHook, RequestContext, get_context
from ccx_asgi.convert.common import input_items
from ccx_asgi.errors import CCXError, InvalidRequestError, NotFoundError, send_error
from ccx_asgi.keys import KeySet
from ccx_asgi.routing import Candidate
from ccx_asgi.store import ResponseStore, StoredResponse, client_owner
from ccx_asgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["NATIVE_SERVICE_TYPES", "ChainAttemptMiddleware", "StatefulMiddleware", "holds_state"]

#: Service types whose upstream speaks Responses itself (the demo channel keeps no state, though).
NATIVE_SERVICE_TYPES = frozenset({"responses", "demo"})
_STORABLE = frozenset({"completed", "incomplete"})
# Prefix of every encrypted_content this gateway writes (ccx1.chat., ccx1.claude.).
_ENVELOPE = "ccx1."


def holds_state(candidate: Candidate) -> bool:
    """Whether the candidate's upstream stores responses itself (a native Responses channel)."""
    return candidate.channel.service_type == "responses"


def _not_found(response_id: str, why: str = "") -> InvalidRequestError:
    return InvalidRequestError(
        f"Previous response with id '{response_id}' not found.{why}",
        param="previous_response_id",
        code="previous_response_not_found",
    )


def _unsupported_fields(body: dict[str, Any]) -> list[str]:
    fields = []
    if body.get("background") is True:
        fields.append("background")
    for name in ("conversation", "prompt"):
        if body.get(name) is not None:
            fields.append(name)
    return fields


class StatefulMiddleware:
    """Expand stored state into the request and store the answer (see the module docstring).

    ``store`` is the :class:`~ccx_asgi.store.ResponseStore`; ``client_keys`` are the gateway's
    client keys (the owner of a stored response is the key that created it).
    """

    def __init__(self, app: ASGIApp, *, store: ResponseStore, client_keys: Sequence[SecretStr] = ()) -> None:
        self.app = app
        self.store = store
        self.keys = KeySet(client_keys) if client_keys else None
        self.clock = time.time

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite the request context, install the storing hook, then call the wrapped app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = get_context(scope)
        try:
            await self._prepare(ctx, client_owner(scope, self.keys))
        except CCXError as exc:
            await send_error(send, exc)
            return
        await self.app(scope, receive, send)

    def _natives_only(self, ctx: RequestContext, problem: CCXError) -> None:
        """Keep only native Responses candidates (they can honour what converters cannot), else raise."""
        natives = [c for c in ctx.candidates if holds_state(c)]
        if not natives:
            raise problem
        ctx.candidates = natives

    async def _prepare(self, ctx: RequestContext, owner: str) -> None:
        body = ctx.body
        for name in _unsupported_fields(body):
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
        rewritten: dict[str, Any] = {}
        if previous:
            record = await self.store.get(owner, previous)
            if record is None:
                if self.store.enabled:
                    raise _not_found(previous)
                # Storing is off: a native upstream may still hold it; converted channels cannot.
                self._natives_only(ctx, _not_found(previous, " Storing responses is off (CCX_RESPONSE_STORE)."))
            elif record.kind == "native":
                self._pin(ctx, record)
                if record.upstream_id and record.upstream_id != previous:
                    rewritten["previous_response_id"] = record.upstream_id
            else:
                chain = [*(record.input or []), *record.output]

        own = input_items(body.get("input"))
        resolved = await self._resolve_references(ctx, owner, own)
        effective = [*chain, *resolved]
        if chain or resolved is not own:
            rewritten["input"] = effective
            ctx.expanded = "chain" if chain else "references"
        if rewritten:
            ctx.body = {**body, **rewritten}
        if store_flag is not False and self.store.enabled:
            ctx.on_answer = self._hook(ctx, owner, effective, len(chain))

    def _pin(self, ctx: RequestContext, record: StoredResponse) -> None:
        for candidate in ctx.candidates:
            if candidate.channel.name != record.channel:
                continue
            keys: list[SecretStr | None] = [*candidate.channel.api_keys] or [None]
            if any(target_id(candidate.channel.name, key) == record.target for key in keys):
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

    async def _resolve_references(self, ctx: RequestContext, owner: str, items: list[Any]) -> list[Any]:
        """``items`` with each ``item_reference`` replaced by its stored item (the same list when none)."""
        if not any(isinstance(i, dict) and i.get("type") == "item_reference" for i in items):
            return items
        out: list[Any] = []
        for item in items:
            if not (isinstance(item, dict) and item.get("type") == "item_reference"):
                out.append(item)
                continue
            item_id = item.get("id")
            stored = await self.store.item(owner, item_id) if isinstance(item_id, str) else None
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

    def _hook(self, ctx: RequestContext, owner: str, effective: list[Any], own_from: int) -> AnswerHook:
        store = self.store

        async def save(response: dict[str, Any], upstream_id: Any) -> None:
            attempt = ctx.attempt
            response_id = response.get("id")
            if attempt is None or not isinstance(response_id, str):
                return
            channel = attempt.channel
            native = channel.service_type == "responses"
            # A native upstream keeps every response it made (a queued background one too); the
            # store keeps only finished ones.
            if not native and response.get("status") not in _STORABLE:
                return
            record = StoredResponse(
                id=response_id,
                owner=owner,
                kind="local",
                created_at=self.clock(),
                model=ctx.model,
                channel=channel.name,
            )
            if native:
                record.kind = "native"
                record.target = target_id(channel.name, attempt.api_key)
                record.upstream_id = upstream_id if isinstance(upstream_id, str) else response_id
            else:
                record.response, record.input, record.own_from = response, effective, own_from
            await store.save(record)

        return save


def _gateway_reasoning(item: Any) -> bool:
    """A reasoning item carrying one of this gateway's envelopes (``ccx1.…``), which only the
    converted channels can read: a native upstream would reject it as undecryptable."""
    if not isinstance(item, dict) or item.get("type") != "reasoning":
        return False
    content = item.get("encrypted_content")
    return isinstance(content, str) and content.startswith(_ENVELOPE)


class ChainAttemptMiddleware:
    """Per attempt on a native channel, for a chain the gateway expanded: no ``previous_response_id``
    (that upstream never saw it) and no reasoning in a gateway envelope (it could not read it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite a native attempt's body of an expanded chain, then call the wrapped app."""
        if scope["type"] == "http":
            ctx = get_context(scope)
            attempt = ctx.attempt
            expanded = ctx.expanded
            if attempt is not None and expanded and attempt.channel.service_type in NATIVE_SERVICE_TYPES:
                body = dict(attempt.body)
                if expanded == "chain":
                    body.pop("previous_response_id", None)
                items = body.get("input")
                if isinstance(items, list):
                    body["input"] = [i for i in items if not _gateway_reasoning(i)]
                attempt.body = body
        await self.app(scope, receive, send)
