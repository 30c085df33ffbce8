"""The ``chat`` service type (alias ``openai``): OpenAI Chat Completions upstreams.

DeepSeek, vLLM, Qwen, Kimi, Ollama and most self-hosted servers speak only Chat Completions. The
client's Responses request is converted by :func:`~ccx_asgi.convert.chat.to_request`, sent to
``{base_url}/chat/completions`` with the channel key as ``Authorization: Bearer``, and the answer is
translated back by :class:`~ccx_asgi.convert.chat.ChatStreamTranslator` (streams) or
:func:`~ccx_asgi.convert.chat.to_response` (JSON). Per-channel options are the ``chat_*`` and
``max_tokens_field`` fields of :class:`~ccx_asgi.settings.ChannelConfig`, read once per channel by
:meth:`~ccx_asgi.convert.chat.ChatOptions.from_channel`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ccx_asgi.channels.base import BaseAdapter, UpstreamRequest, attempt_catalog
from ccx_asgi.context import Attempt, RequestContext
from ccx_asgi.convert import chat
from ccx_asgi.convert.common import ConversionError
from ccx_asgi.errors import UpstreamStatusError

if TYPE_CHECKING:
    from ccx_asgi.settings import ChannelConfig

__all__ = ["ChatAdapter"]


class ChatAdapter(BaseAdapter):
    """Adapter for ``service_type: chat`` (see the module docstring)."""

    endpoint = "/chat/completions"

    def options(self, channel: ChannelConfig) -> chat.ChatOptions:
        """The channel's :class:`~ccx_asgi.convert.chat.ChatOptions`."""
        return chat.ChatOptions.from_channel(channel)

    def build_request(self, ctx: RequestContext, attempt: Attempt) -> UpstreamRequest:
        """The attempt's Responses body as a Chat Completions request for the mapped model."""
        body = chat.to_request(
            attempt.body,
            model=attempt.upstream_model,
            options=self.options(attempt.channel),
            catalog=attempt_catalog(ctx, attempt),
        )
        return UpstreamRequest(self.endpoint, body, [])

    def translator(self, ctx: RequestContext, attempt: Attempt) -> chat.ChatStreamTranslator:
        """A fresh Chat → Responses stream translator echoing the client's model."""
        return chat.ChatStreamTranslator(ctx.model, attempt.body, catalog=attempt_catalog(ctx, attempt))

    def convert_response(self, ctx: RequestContext, attempt: Attempt, data: Any) -> dict[str, Any]:
        """Convert a non-streaming Chat completion; an unreadable one may be retried elsewhere."""
        try:
            return chat.to_response(data, model=ctx.model, request=attempt.body, catalog=attempt_catalog(ctx, attempt))
        except ConversionError as exc:
            raise UpstreamStatusError(str(exc), channel=attempt.channel.name, retryable=True) from None
