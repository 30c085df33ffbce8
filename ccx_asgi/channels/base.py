"""What a service type provides: a pure request builder, a stream translator and a JSON converter.

Adapters do no I/O. :class:`~ccx_asgi.channels.endpoint.ChannelEndpoint` owns the sending and looks
adapters up by ``service_type`` in :data:`ADAPTERS`; the commit rule is
:class:`~ccx_asgi.stream.ClientStream`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ccx_asgi.context import Attempt, RequestContext
from ccx_asgi.convert.tools import ToolCatalog, request_tools
from ccx_asgi.types import Event

__all__ = ["ChannelAdapter", "StreamTranslator", "UpstreamRequest", "attempt_catalog"]


@dataclass(slots=True)
class UpstreamRequest:
    """A converted request: the endpoint path under the channel's API root, headers and JSON body."""

    endpoint: str
    body: dict[str, Any]
    headers: list[tuple[str, str]]


class StreamTranslator(Protocol):
    """A pure state machine from upstream stream events to Responses events.

    ``feed`` takes one upstream event's parsed JSON; ``finish`` is called once when the upstream
    stream ends and must produce the terminal event (``response.failed`` when the upstream ended
    without finishing); ``fail`` produces a ``response.failed`` consistent with what was already
    emitted, for transport errors after the response was committed.
    """

    def feed(self, data: dict[str, Any]) -> list[Event]:
        """Translate one upstream event."""

    def finish(self) -> list[Event]:
        """The upstream stream ended: close the response."""

    def fail(self, message: str, code: str = "server_error") -> list[Event]:
        """The upstream failed mid-stream: emit ``response.failed``."""


class ChannelAdapter(Protocol):
    """The per-service-type conversion, with no I/O."""

    def build_request(self, ctx: RequestContext, attempt: Attempt) -> UpstreamRequest:
        """Convert the client's Responses request for this upstream."""

    def translator(self, ctx: RequestContext, attempt: Attempt) -> StreamTranslator:
        """A fresh stream translator for one attempt."""

    def convert_response(self, ctx: RequestContext, attempt: Attempt, data: Any) -> dict[str, Any]:
        """Convert a non-streaming upstream answer to a Responses object."""


def attempt_catalog(ctx: RequestContext, attempt: Attempt) -> ToolCatalog:
    """The attempt body's flattened tools, built once per attempt and shared by the converted request
    and the translation of the answer (every attempt, with its own body, gets its own)."""
    if attempt.catalog is None:
        attempt.catalog = ToolCatalog.from_tools(request_tools(attempt.body))
    return attempt.catalog
