"""The ``chat`` service type (alias ``openai``): OpenAI Chat Completions upstreams.

DeepSeek, vLLM, Qwen, Kimi, Ollama and most self-hosted servers speak only Chat Completions. The
client's Responses request is converted by :func:`~ccx_asgi.convert.chat.to_chat_request`, sent to
``{base_url}/chat/completions`` with the channel key as ``Authorization: Bearer``, and the answer is
translated back by :class:`~ccx_asgi.convert.chat.ChatStreamTranslator` (streams) or
:func:`~ccx_asgi.convert.chat.chat_to_response` (JSON). Per-channel options are the ``chat_*`` and
``max_tokens_field`` fields of :class:`~ccx_asgi.settings.ChannelConfig`.
"""

from __future__ import annotations

from typing import Any

from ccx_asgi.channels.base import UpstreamRequest, attempt_catalog
from ccx_asgi.context import Attempt, RequestContext
from ccx_asgi.convert.chat import (
    ChatConversionError,
    ChatOptions,
    ChatStreamTranslator,
    chat_to_response,
    to_chat_request,
)
from ccx_asgi.errors import UpstreamStatusError
from ccx_asgi.settings import ChannelConfig

__all__ = ["ChatAdapter", "chat_options"]


def chat_options(channel: ChannelConfig) -> ChatOptions:
    """The :class:`ChatOptions` a channel's configuration asks for."""
    return ChatOptions(
        max_tokens_field=channel.max_tokens_field,
        strict_tools=channel.chat_strict_tools,
        prompt_cache_key=channel.chat_prompt_cache_key,
        stream_usage=channel.chat_stream_usage,
        reasoning_effort=channel.chat_reasoning_effort,
        reasoning_content=channel.chat_reasoning_content,
        allowed_tools=channel.chat_allowed_tools,
        forward_fields=frozenset(channel.chat_forward_fields),
    )


class ChatAdapter:
    """Adapter for ``service_type: chat`` (see the module docstring)."""

    def build_request(self, ctx: RequestContext, attempt: Attempt) -> UpstreamRequest:
        """The attempt's Responses body as a Chat Completions request for the mapped model."""
        body = to_chat_request(
            attempt.body,
            model=attempt.upstream_model,
            options=chat_options(attempt.channel),
            catalog=attempt_catalog(ctx, attempt),
        )
        headers = [("authorization", f"Bearer {attempt.api_key.get_secret_value()}")] if attempt.api_key else []
        return UpstreamRequest("/chat/completions", body, headers)

    def translator(self, ctx: RequestContext, attempt: Attempt) -> ChatStreamTranslator:
        """A fresh Chat → Responses stream translator echoing the client's model."""
        return ChatStreamTranslator(ctx.model, attempt.body, catalog=attempt_catalog(ctx, attempt))

    def convert_response(self, ctx: RequestContext, attempt: Attempt, data: Any) -> dict[str, Any]:
        """Convert a non-streaming Chat completion; an unreadable one may be retried elsewhere."""
        try:
            return chat_to_response(data, model=ctx.model, request=attempt.body, catalog=attempt_catalog(ctx, attempt))
        except ChatConversionError as exc:
            raise UpstreamStatusError(f"channel {attempt.channel.name!r}: {exc}", retryable=True) from None
