"""Shared pieces of the stored-response tests: one conversation "brain" spoken by each strict fake.

The brain answers ``Your secret word is X.`` when an earlier user turn said ``My secret word is X``
and the last one asks for it, ``Noted.`` otherwise, so a follow-up that lost its history shows.
With a ``get_weather`` tool it calls the tool first (unique call ids per turn) and reports its
result once the output is back.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection
from typing import Any

import httpx
import openai

from tests.conftest import PROXY_KEY, channel
from tests.fakes import chat_upstream, claude_upstream
from tests.fakes.chat_upstream import FakeChatUpstream, chunk
from tests.fakes.claude_upstream import FakeClaudeUpstream
from tests.fakes.stateful_responses_upstream import StatefulResponsesUpstream

SECRET = re.compile(r"[Mm]y secret word is (\w+)")
QUESTION = "What is my secret word?"
_calls = itertools.count()


def answer(texts: list[str]) -> str:
    """The brain: ``texts`` are the conversation's user and assistant texts, oldest first."""
    if texts and QUESTION in texts[-1]:
        for text in texts:
            found = SECRET.search(text)
            if found:
                return f"Your secret word is {found.group(1)}."
        return "I do not know your secret word."
    return "Noted."


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return " ".join(p.get("text", "") for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


def item_texts(items: list[dict[str, Any]]) -> list[str]:
    """User and assistant texts of Responses input items."""
    return [_text(i.get("content")) for i in items if i.get("type", "message") == "message"]


# -- chat --------------------------------------------------------------------------------------


def chat_script(body: dict[str, Any]) -> chat_upstream.Reply:
    """The brain over Chat Completions (reasoning on every answer, as DeepSeek's thinking mode)."""
    messages = body["messages"]
    last = messages[-1]
    if last["role"] == "tool":
        return chat_upstream.text_reply(f"The weather is {last['content']}.", reasoning="The tool answered.")
    tools = {t["function"]["name"] for t in body.get("tools") or ()}
    if "get_weather" in tools:
        call_id = f"call_w{next(_calls)}"
        chunks = [
            chunk({"role": "assistant", "content": None}),
            chunk({"reasoning_content": "I need the weather tool."}),
            chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                   "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}),
            chunk({}, "tool_calls"),
            chunk(usage=chat_upstream.usage(80, 10), choices=False),
        ]  # fmt: skip
        return chat_upstream.Reply(chunks)
    texts = [_text(m.get("content")) for m in messages if m["role"] in ("user", "assistant")]
    return chat_upstream.text_reply(answer(texts), reasoning="Let me think.")


# -- claude ------------------------------------------------------------------------------------


def claude_script(body: dict[str, Any]) -> claude_upstream.Reply:
    """The brain over Claude Messages."""
    messages = body["messages"]
    blocks = messages[-1]["content"] if isinstance(messages[-1]["content"], list) else []
    results = [b for b in blocks if b.get("type") == "tool_result"]
    if results:
        return claude_upstream.Reply([{"type": "text", "text": f"The weather is {_text(results[0]['content'])}."}])
    if any(t.get("name") == "get_weather" for t in body.get("tools") or ()):
        return claude_upstream.Reply(
            [{"type": "tool_use", "name": "get_weather", "input": {"city": "Paris"}}], stop_reason="tool_use"
        )
    texts = [_text(m["content"]) for m in messages]
    return claude_upstream.Reply([{"type": "text", "text": answer(texts)}])


# -- native ------------------------------------------------------------------------------------


def native_brain(items: list[dict[str, Any]], tools: Collection[str] = ()) -> str | dict[str, str]:
    """The brain over the expanded Responses input a stateful upstream resolved."""
    if items and items[-1].get("type") == "function_call_output":
        return f"The weather is {items[-1]['output']}."
    if "get_weather" in tools:
        return {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    return answer(item_texts(items))


# -- building ------------------------------------------------------------------------------------


def upstream_for(kind: str) -> Any:
    """A fresh strict fake of ``kind`` (chat, claude, responses) speaking the brain."""
    if kind == "chat":
        return FakeChatUpstream(script=chat_script, require_reasoning_content=True)
    if kind == "claude":
        return FakeClaudeUpstream(script=claude_script)
    return StatefulResponsesUpstream(brain=native_brain)


def channel_for(kind: str, name: str | None = None, **fields: Any) -> dict[str, Any]:
    """The channel dict of ``kind`` at ``https://<name>.test/v1``."""
    name = name or kind
    return channel(name, service_type=kind, base_url=f"https://{name}.test/v1", **fields)


def routed(**apps: Any) -> httpx.AsyncBaseTransport:
    """One transport that sends each host ``<name>.test`` to its own fake app."""
    transports = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}

    class Router(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return await transports[request.url.host.split(".")[0]].handle_async_request(request)

    return Router()


def sdk(app: Any, key: str = PROXY_KEY) -> openai.AsyncOpenAI:
    """The real openai SDK talking to ``app`` in process."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    # openai types http_client as an httpx2 client; it accepts an httpx one too (_httpx2.is_legacy_httpx_async_client)
    return openai.AsyncOpenAI(api_key=key, base_url="http://gw.test", http_client=http, max_retries=0)  # type: ignore[arg-type]


async def create(client: openai.AsyncOpenAI, *, stream: bool, **kwargs: Any) -> Any:
    """``responses.create``, streamed (the SDK's final response) or not."""
    if not stream:
        return await client.responses.create(**kwargs)
    async with client.responses.stream(**kwargs) as events:
        return await events.get_final_response()
