"""The ``claude`` service type: Anthropic Messages upstreams (``POST {base_url}/messages``).

The Responses request is converted by :func:`~ccx_asgi.convert.claude.to_request` with the
channel's :class:`~ccx_asgi.convert.claude.ClaudeOptions` (``default_max_tokens``,
``thinking_budgets``, ``prompt_caching``, ``claude_thinking``, read once per channel); the key goes
in ``x-api-key`` (never ``Authorization``) beside the channel's ``anthropic_version``. Answers come
back through :class:`~ccx_asgi.convert.claude.ClaudeStreamTranslator` or
:func:`~ccx_asgi.convert.claude.to_response`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ccx_asgi.channels.base import BaseAdapter, ModelsRequest, UpstreamRequest, attempt_catalog
from ccx_asgi.context import Attempt, RequestContext
from ccx_asgi.convert import claude
from ccx_asgi.convert.common import ConversionError
from ccx_asgi.errors import UpstreamStatusError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from ccx_asgi.settings import ChannelConfig

__all__ = ["ClaudeAdapter"]

#: Anthropic pages model lists (20 by default); one page of the maximum size holds them all.
_MODELS = ModelsRequest("/models", "limit=1000")


class ClaudeAdapter(BaseAdapter):
    """Adapter for ``service_type: claude``."""

    endpoint = "/messages"

    def auth_headers(self, channel: ChannelConfig, key: SecretStr | None) -> list[tuple[str, str]]:
        """The channel's ``anthropic-version`` and the key as ``x-api-key`` (never ``Authorization``)."""
        headers = [("anthropic-version", channel.anthropic_version)]
        if key is not None:
            headers.append(("x-api-key", key.get_secret_value()))
        return headers

    def models_request(self, channel: ChannelConfig) -> ModelsRequest:
        """``GET {base_url}/models?limit=1000``."""
        return _MODELS

    def options(self, channel: ChannelConfig) -> claude.ClaudeOptions:
        """The channel's :class:`~ccx_asgi.convert.claude.ClaudeOptions`."""
        return claude.ClaudeOptions.from_channel(channel)

    def build_request(self, ctx: RequestContext, attempt: Attempt) -> UpstreamRequest:
        """The Messages request for this attempt."""
        body = claude.to_request(
            attempt.body,
            model=attempt.upstream_model,
            options=self.options(attempt.channel),
            catalog=attempt_catalog(ctx, attempt),
        )
        if ctx.stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return UpstreamRequest(self.endpoint, body, [])

    def translator(self, ctx: RequestContext, attempt: Attempt) -> claude.ClaudeStreamTranslator:
        """A fresh Messages → Responses stream translator."""
        return claude.ClaudeStreamTranslator(ctx.model, attempt.body, catalog=attempt_catalog(ctx, attempt))

    def convert_response(self, ctx: RequestContext, attempt: Attempt, data: Any) -> dict[str, Any]:
        """A non-streaming Messages answer as a Responses object; an unreadable one may be retried elsewhere."""
        try:
            return claude.to_response(
                data, model=ctx.model, request=attempt.body, catalog=attempt_catalog(ctx, attempt)
            )
        except ConversionError as exc:
            raise UpstreamStatusError(str(exc), channel=attempt.channel.name, retryable=True) from None
