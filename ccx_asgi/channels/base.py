"""What a service type provides: its wire facts, a pure request builder, a stream translator and a
JSON converter.

Adapters do no I/O. The registry in :mod:`ccx_asgi.channels` maps ``service_type`` names to
adapters; :class:`~ccx_asgi.channels.endpoint.ChannelEndpoint` owns the sending, and the commit rule
is :class:`~ccx_asgi.stream.ClientStream`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import SecretStr

from ccx_asgi.context import Attempt, RequestContext
from ccx_asgi.convert.tools import ToolCatalog, request_tools
from ccx_asgi.types import Event

if TYPE_CHECKING:
    import httpx

    from ccx_asgi.settings import ChannelConfig

__all__ = [
    "BaseAdapter",
    "ChannelAdapter",
    "ModelsRequest",
    "StreamTranslator",
    "UpstreamRequest",
    "attempt_catalog",
    "bearer_headers",
]


@dataclass(slots=True)
class UpstreamRequest:
    """A converted request: the endpoint path under the channel's API root, extra headers (the
    adapter's :meth:`~ChannelAdapter.auth_headers` are added by the endpoint) and JSON body."""

    endpoint: str
    body: dict[str, Any]
    headers: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class ModelsRequest:
    """How a service type asks its upstream for its model list: a path under the API root and a
    query string (``GET {base_url}{path}?{query}``), with the adapter's auth headers."""

    path: str = "/models"
    query: str = ""


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
    """Everything one service type means, with no I/O.

    ``endpoint`` is the path requests are posted to under the channel's API root; ``base_url`` a
    fixed API root the channel always uses (``None``: the channel's ``base_url`` is required);
    ``builtin_models`` the names ``GET /models`` lists for a channel of this type without a
    ``model_map``; ``stores_responses`` whether the upstream keeps responses itself (stored
    responses are then fetched from it, with :meth:`auth_headers`).
    """

    endpoint: str
    base_url: str | None
    builtin_models: tuple[str, ...]
    stores_responses: bool

    def auth_headers(self, channel: ChannelConfig, key: SecretStr | None) -> list[tuple[str, str]]:
        """The headers that authorise a request to ``channel`` with ``key`` (and any the protocol
        requires on every request, such as ``anthropic-version``)."""

    def models_request(self, channel: ChannelConfig) -> ModelsRequest | None:
        """How ``GET /models`` asks this upstream for its list, or ``None`` when it has none."""

    def options(self, channel: ChannelConfig) -> Any:
        """The channel's conversion options, built once per channel configuration (``None`` for a
        type without any)."""

    def transport(self) -> httpx.AsyncBaseTransport | None:
        """An in-process transport that answers :attr:`base_url` (``None``: the network does)."""

    def build_request(self, ctx: RequestContext, attempt: Attempt) -> UpstreamRequest:
        """Convert the client's Responses request for this upstream."""

    def translator(self, ctx: RequestContext, attempt: Attempt) -> StreamTranslator:
        """A fresh stream translator for one attempt."""

    def convert_response(self, ctx: RequestContext, attempt: Attempt, data: Any) -> dict[str, Any]:
        """Convert a non-streaming upstream answer to a Responses object."""


def bearer_headers(key: SecretStr | None) -> list[tuple[str, str]]:
    """``Authorization: Bearer <key>`` (nothing without a key): OpenAI-style authorisation."""
    return [("authorization", f"Bearer {key.get_secret_value()}")] if key is not None else []


class BaseAdapter:
    """Defaults for an OpenAI-style service type: Bearer auth, ``GET /models``, no options, no fixed
    base URL. Subclasses set :attr:`endpoint` and implement the conversion methods."""

    endpoint: str
    base_url: str | None = None
    builtin_models: tuple[str, ...] = ()
    stores_responses: bool = False

    def auth_headers(self, channel: ChannelConfig, key: SecretStr | None) -> list[tuple[str, str]]:
        """``Authorization: Bearer`` with the key."""
        return bearer_headers(key)

    def models_request(self, channel: ChannelConfig) -> ModelsRequest | None:
        """``GET {base_url}/models``."""
        return ModelsRequest()

    def options(self, channel: ChannelConfig) -> Any:
        """No options."""
        return None

    def transport(self) -> httpx.AsyncBaseTransport | None:
        """Served over the network."""
        return None


def attempt_catalog(ctx: RequestContext, attempt: Attempt) -> ToolCatalog:
    """The attempt body's flattened tools, built once per attempt and shared by the converted request
    and the translation of the answer (every attempt, with its own body, gets its own)."""
    if attempt.catalog is None:
        attempt.catalog = ToolCatalog.from_tools(request_tools(attempt.body))
    return attempt.catalog
