"""The per-request context every layer shares through ``scope["ccx"]``.

The model mapper parses the body once and stores a :class:`RequestContext` on a shallow copy of the
scope; later layers read ``ctx.body`` and never re-read bytes. The failover layer sets
``ctx.attempt`` before each try; an :class:`Attempt` carries its own ``body`` so that per-attempt
rewrites (role normalisation) never leak into the next candidate.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from ccx_asgi.errors import InvalidRequestError
from ccx_asgi.routing import Candidate
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.types import Scope

if TYPE_CHECKING:
    from ccx_asgi.convert.tools import ToolCatalog
    from ccx_asgi.stream import ClientStream

__all__ = ["SCOPE_KEY", "AnswerHook", "Attempt", "AttemptRecord", "RequestContext", "get_context"]

#: The one scope key under which the :class:`RequestContext` lives.
SCOPE_KEY = "ccx"
#: What :attr:`RequestContext.on_answer` is called with: the final response object (carrying the id
#: the client sees) and the id the upstream gave it.
AnswerHook = Callable[[dict[str, Any], Any], Awaitable[None]]


@dataclass(slots=True)
class Attempt:
    """One try of one channel with one of its keys."""

    channel: ChannelConfig
    upstream_model: str
    api_key: SecretStr | None
    key_index: int
    body: dict[str, Any]
    #: The body's flattened tools, built on first use by the adapter (after every layer that
    #: rewrites ``body``) and shared by the converted request and the answer's translation.
    catalog: ToolCatalog | None = None


@dataclass(slots=True)
class AttemptRecord:
    """What happened on one attempt, for the all-failed error, headers and logs (never secrets)."""

    channel: str
    key_index: int
    outcome: str
    status: int | None = None


@dataclass(slots=True)
class RequestContext:
    """Everything known about one ``POST /responses`` request."""

    body: dict[str, Any]
    model: str
    stream: bool
    request_id: str
    headers: list[tuple[bytes, bytes]]
    candidates: list[Candidate] = field(default_factory=list)
    attempt: Attempt | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    #: The client's side of a streaming answer, shared by every attempt (made by the failover layer).
    client_stream: ClientStream | None = None
    #: The client headers that may go upstream, filtered once by the endpoint for every attempt.
    client_headers: list[tuple[str, str]] | None = None
    #: The one target (see :func:`~ccx_asgi.breaker.target_id`) the request may go to: a
    #: ``previous_response_id`` follow-up held by one native upstream account (set by the stateful layer).
    pinned_target: str | None = None
    #: ``"chain"`` when the stateful layer expanded a stored chain into the input (native attempts then
    #: drop ``previous_response_id``), ``"references"`` when it only resolved item references.
    expanded: Literal["chain", "references"] | None = None
    #: Awaited with the final response before the client sees it (the stateful layer stores it), so a
    #: follow-up sent the moment the answer arrives finds it; see :func:`ccx_asgi.store.before_answer`.
    on_answer: AnswerHook | None = None
    #: For the request log: the last attempt's upstream URL (only its path is logged), and the final
    #: response's ``status`` and ``usage`` (see :func:`ccx_asgi.observability.note_response`).
    upstream_url: str | None = None
    response_status: Any = None
    usage: dict[str, Any] | None = None
    #: Free for a host's own layers; the gateway itself keeps nothing here.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Any, *, request_id: str, headers: list[tuple[bytes, bytes]]) -> RequestContext:
        """Validate the parsed JSON body's envelope and build the context."""
        if not isinstance(body, dict):
            raise InvalidRequestError("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise InvalidRequestError(
                "'model' is required and must be a non-empty string.", param="model", code="invalid_value"
            )
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise InvalidRequestError("'stream' must be a boolean.", param="stream", code="invalid_type")
        return cls(body=body, model=model, stream=stream, request_id=request_id, headers=headers)

    def header(self, name: bytes) -> str | None:
        """The first client header called ``name`` (lower-case bytes), decoded."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


def get_context(scope: Scope) -> RequestContext:
    """The context stored by the model mapper; a clear error if a layer is missing."""
    ctx = scope.get(SCOPE_KEY)
    if not isinstance(ctx, RequestContext):
        raise RuntimeError("no ccx RequestContext in scope: put ModelMapperMiddleware in front of this layer")
    return ctx
