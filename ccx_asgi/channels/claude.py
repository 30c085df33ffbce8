"""The ``claude`` service type: Anthropic Messages upstreams (``POST {base_url}/messages``).

The Responses request is converted by :func:`~ccx_asgi.convert.claude.to_claude_request` with the
channel's options (``anthropic_version``, ``default_max_tokens``, ``thinking_budgets``,
``prompt_caching``, ``claude_thinking``); the key goes in ``x-api-key`` (never ``Authorization``). Answers come back
through :class:`~ccx_asgi.convert.claude.ClaudeStreamTranslator` or
:func:`~ccx_asgi.convert.claude.convert_claude_message`.
"""

from __future__ import annotations

from typing import Any

from ccx_asgi.channels.base import UpstreamRequest, attempt_catalog
from ccx_asgi.context import Attempt, RequestContext
from ccx_asgi.convert.claude import ClaudeStreamTranslator, convert_claude_message, to_claude_request
from ccx_asgi.errors import UpstreamStatusError

__all__ = ["ClaudeAdapter"]


class ClaudeAdapter:
    """Adapter for ``service_type: claude``."""

    def build_request(self, ctx: RequestContext, attempt: Attempt) -> UpstreamRequest:
        """The Messages request for this attempt, with ``x-api-key`` and ``anthropic-version``."""
        channel = attempt.channel
        body = to_claude_request(
            attempt.body,
            attempt.upstream_model,
            catalog=attempt_catalog(ctx, attempt),
            default_max_tokens=channel.default_max_tokens,
            thinking_budgets=channel.thinking_budgets,
            prompt_caching=channel.prompt_caching,
            thinking_mode=channel.claude_thinking,
        )
        if ctx.stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        headers = [("anthropic-version", channel.anthropic_version)]
        if attempt.api_key is not None:
            headers.append(("x-api-key", attempt.api_key.get_secret_value()))
        return UpstreamRequest("/messages", body, headers)

    def translator(self, ctx: RequestContext, attempt: Attempt) -> ClaudeStreamTranslator:
        """A fresh Messages → Responses stream translator."""
        return ClaudeStreamTranslator(ctx.model, attempt.body, attempt_catalog(ctx, attempt))

    def convert_response(self, ctx: RequestContext, attempt: Attempt, data: Any) -> dict[str, Any]:
        """A non-streaming Messages answer as a Responses object."""
        if not isinstance(data, dict) or data.get("type") != "message" or not isinstance(data.get("content"), list):
            raise UpstreamStatusError(
                f"channel {attempt.channel.name!r}: Claude answered with something that is not a message",
                retryable=True,
            )
        return convert_claude_message(data, ctx.model, attempt.body, attempt_catalog(ctx, attempt))
