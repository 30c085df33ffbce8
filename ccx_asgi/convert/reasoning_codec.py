"""``encrypted_content`` for reasoning from Chat Completions upstreams (DeepSeek-style ``reasoning_content``).

Clients that keep no server state (``store: false``) replay reasoning only when it carries
``encrypted_content`` (the Vercel AI SDK skips reasoning items without one), and a DeepSeek-style
upstream in thinking mode rejects a tool turn whose ``reasoning_content`` is not passed back. So the
chat channel gives each reasoning item a gateway-made envelope of its exact text, and the chat
converter reads it back into ``reasoning_content``.

The envelope (``ccx1.chat.`` + unpadded URL-safe base64 of a small JSON object) is not secret and
not signed: it holds only text the client was already shown in the item's summary, and a client
that forges it can only change what it could write into any assistant turn anyway. Claude's thinking
blocks use their own envelope (:func:`ccx_asgi.convert.claude.encode_reasoning`), whose signature
Claude verifies itself.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

__all__ = ["CHAT_REASONING_PREFIX", "decode_chat_reasoning", "encode_chat_reasoning"]

#: Marks ``encrypted_content`` written by this proxy: format version 1, upstream family ``chat``.
CHAT_REASONING_PREFIX = "ccx1.chat."


def encode_chat_reasoning(text: str) -> str:
    """The ``encrypted_content`` carrying one Chat reasoning text."""
    return CHAT_REASONING_PREFIX + base64.urlsafe_b64encode(orjson.dumps({"text": text})).rstrip(b"=").decode()


def decode_chat_reasoning(value: Any) -> str | None:
    """The reasoning text inside an :func:`encode_chat_reasoning` envelope, else ``None`` (another
    provider's opaque string, a Claude envelope, a damaged value)."""
    if not isinstance(value, str) or not value.startswith(CHAT_REASONING_PREFIX):
        return None
    raw = value[len(CHAT_REASONING_PREFIX) :]
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        return None
    text = data.get("text") if isinstance(data, dict) else None
    return text if isinstance(text, str) and text else None
