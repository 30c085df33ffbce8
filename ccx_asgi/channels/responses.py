"""The ``responses`` service type: native Responses upstreams, forwarded as they are.

The body goes upstream unchanged except for the mapped model; stream events come back unchanged
except that a missing ``sequence_number`` is filled in and a stream that ends without a terminal
event is closed with ``response.failed`` (so a cut answer never looks complete).
"""

from __future__ import annotations

import time
from typing import Any

from ccx_asgi.channels.base import BaseAdapter, UpstreamRequest
from ccx_asgi.context import Attempt, RequestContext
from ccx_asgi.convert.events import new_id
from ccx_asgi.errors import UpstreamStatusError
from ccx_asgi.stream import TERMINAL_EVENTS
from ccx_asgi.types import Event

__all__ = ["TERMINAL_EVENTS", "PassthroughTranslator", "ResponsesAdapter"]


class PassthroughTranslator:
    """Checks a native Responses stream on its way through; see the module docstring."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._response: dict[str, Any] | None = None
        self._seq = -1
        self.terminal: str | None = None

    def feed(self, data: dict[str, Any]) -> list[Event]:
        """Pass one upstream event through (events after the terminal one are dropped)."""
        kind = data.get("type")
        if not isinstance(kind, str) or self.terminal is not None:
            return []
        seq = data.get("sequence_number")
        if isinstance(seq, int) and seq > self._seq:
            self._seq = seq
        else:
            self._seq += 1
            data["sequence_number"] = self._seq
        response = data.get("response")
        if isinstance(response, dict):
            self._response = response
        if kind in TERMINAL_EVENTS:
            self.terminal = kind
        return [data]

    def finish(self) -> list[Event]:
        """Close a stream the upstream left without a terminal event."""
        if self.terminal is not None:
            return []
        return self.fail("the upstream stream ended before response.completed; the answer is incomplete")

    def fail(self, message: str, code: str = "server_error") -> list[Event]:
        """A ``response.failed`` that reuses the upstream's response id."""
        if self.terminal is not None:
            return []
        response: dict[str, Any] = {
            "id": new_id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "model": self._model,
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        # Keep the upstream's identity, but only fields of the right type: a broken upstream's
        # response object must not make our own failure event invalid.
        seen = self._response or {}
        for key, kind in (("id", str), ("created_at", int | float), ("model", str)):
            if isinstance(seen.get(key), kind) and not isinstance(seen.get(key), bool):
                response[key] = seen[key]
        response.update(status="failed", error={"code": code, "message": message})
        self.terminal = "response.failed"
        self._seq += 1
        return [{"type": "response.failed", "response": response, "sequence_number": self._seq}]


class ResponsesAdapter(BaseAdapter):
    """Adapter for ``service_type: responses`` (the built-in demo is a subclass): Bearer auth,
    ``POST {base_url}/responses``, the upstream's own ``GET /models``; the upstream stores responses."""

    endpoint = "/responses"
    stores_responses = True

    def build_request(self, ctx: RequestContext, attempt: Attempt) -> UpstreamRequest:
        """The client's body with the mapped model."""
        return UpstreamRequest(self.endpoint, {**attempt.body, "model": attempt.upstream_model}, [])

    def translator(self, ctx: RequestContext, attempt: Attempt) -> PassthroughTranslator:
        """A checking pass-through translator."""
        return PassthroughTranslator(ctx.model)

    def convert_response(self, ctx: RequestContext, attempt: Attempt, data: Any) -> dict[str, Any]:
        """Native answers need no conversion, only a sanity check."""
        if not isinstance(data, dict):
            raise UpstreamStatusError(
                "upstream answered with a non-object JSON body",
                channel=attempt.channel.name,
                retryable=True,
            )
        return data
