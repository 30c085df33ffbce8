"""The ``claude`` service type: Anthropic Messages upstreams (``POST {base_url}/messages``).

The Responses request is converted by :func:`~ccx_asgi.convert.claude.to_request` with the
channel's :class:`~ccx_asgi.convert.claude.ClaudeOptions` (``default_max_tokens``,
``thinking_budgets``, ``prompt_caching``, ``claude_thinking``, read once per channel); the key goes
in ``x-api-key`` (never ``Authorization``) beside the channel's ``anthropic_version``. Answers come
back through :class:`~ccx_asgi.convert.claude.ClaudeStreamTranslator` or
:func:`~ccx_asgi.convert.claude.to_response`.
"""

from __future__ import annotations

from typing import Any

from ccx_asgi.channels.base import UpstreamRequest, attempt_catalog
from ccx_asgi.context import Attempt, RequestContext
from ccx_asgi.convert import claude
from ccx_asgi.convert.common import ConversionError
from ccx_asgi.errors import UpstreamStatusError

__all__ = ["ClaudeAdapter"]


class ClaudeAdapter:
    """Adapter for ``service_type: claude``."""

    def build_request(self, ctx: RequestContext, attempt: Attempt) -> UpstreamRequest:
        """The Messages request for this attempt, with ``x-api-key`` and ``anthropic-version``."""
        channel = attempt.channel
        body = claude.to_request(
            attempt.body,
            model=attempt.upstream_model,
            options=claude.ClaudeOptions.from_channel(channel),
            catalog=attempt_catalog(ctx, attempt),
        )
        if ctx.stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        headers = [("anthropic-version", channel.anthropic_version)]
        if attempt.api_key is not None:
            headers.append(("x-api-key", attempt.api_key.get_secret_value()))
        return UpstreamRequest("/messages", body, headers)

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
            raise UpstreamStatusError(f"channel {attempt.channel.name!r}: {exc}", retryable=True) from None
