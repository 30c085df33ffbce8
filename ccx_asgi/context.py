"""The per-request context every layer shares through ``scope["ccx"]``.

The model mapper parses the body once and stores a :class:`RequestContext` on a shallow copy of the
scope; later layers read ``ctx.body`` and never re-read bytes. The failover layer sets
``ctx.attempt`` before each try; an :class:`Attempt` carries its own ``body`` so that per-attempt
rewrites (role normalisation) never leak into the next candidate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from ccx_asgi.errors import InvalidRequestError
from ccx_asgi.routing import Candidate
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.types import Scope

if TYPE_CHECKING:
    from ccx_asgi.stream import ClientStream

__all__ = ["PINNED_TARGET", "SCOPE_KEY", "Attempt", "AttemptRecord", "RequestContext", "get_context"]

#: The one scope key under which the :class:`RequestContext` lives.
SCOPE_KEY = "ccx"
#: ``RequestContext.extra`` key of the one target (see :func:`~ccx_asgi.breaker.target_id`) a request
#: may go to: a ``previous_response_id`` follow-up held by one native upstream account.
PINNED_TARGET = "ccx.pinned_target"


@dataclass(slots=True)
class Attempt:
    """One try of one channel with one of its keys."""

    channel: ChannelConfig
    upstream_model: str
    api_key: SecretStr | None
    key_index: int
    body: dict[str, Any]


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
