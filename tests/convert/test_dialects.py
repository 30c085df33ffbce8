"""The two converted dialects (Chat and Claude) have one shape, so the adapters treat them alike."""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

import pytest

from ccx_asgi.channels.chat import ChatAdapter
from ccx_asgi.channels.claude import ClaudeAdapter
from ccx_asgi.context import Attempt, RequestContext
from ccx_asgi.convert import chat, claude
from ccx_asgi.convert.common import ConversionError
from ccx_asgi.errors import UpstreamStatusError
from ccx_asgi.settings import ChannelConfig
from tests.conftest import channel

DIALECTS = [
    pytest.param(chat, chat.ChatOptions, chat.ChatStreamTranslator, ChatAdapter(), "chat", id="chat"),
    pytest.param(claude, claude.ClaudeOptions, claude.ClaudeStreamTranslator, ClaudeAdapter(), "claude", id="claude"),
]


def _signature(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize(("module", "options", "translator", "adapter", "service_type"), DIALECTS)
def test_each_dialect_has_the_same_entry_points(
    module: ModuleType, options: type, translator: type, adapter: Any, service_type: str
) -> None:
    keyword = inspect.Parameter.KEYWORD_ONLY
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    empty = inspect.Parameter.empty
    assert _signature(module.to_request) == [
        ("body", positional, empty),
        ("model", keyword, empty),
        ("options", keyword, None),
        ("catalog", keyword, None),
    ]
    assert _signature(module.to_response) == [
        ("data", positional, empty),
        ("model", keyword, empty),
        ("request", keyword, None),
        ("catalog", keyword, None),
    ]
    assert _signature(translator) == [  # the class signature: __init__ without self
        ("model", positional, empty),
        ("request", positional, None),
        ("catalog", keyword, None),
    ]
    config = ChannelConfig.model_validate(channel(service_type=service_type))
    assert options.from_channel(config) is options.from_channel(config)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("module", "options", "translator", "adapter", "service_type"), DIALECTS)
@pytest.mark.parametrize("answer", [[], "text", {"error": {"message": "boom"}}, {"type": "ping"}])
def test_an_unreadable_answer_is_a_conversion_error_and_a_retryable_upstream_error(
    module: ModuleType, options: type, translator: type, adapter: Any, service_type: str, answer: Any
) -> None:
    with pytest.raises(ConversionError):
        module.to_response(answer, model="m", request={"input": "x"})
    config = ChannelConfig.model_validate(channel(name="up", service_type=service_type))
    body = {"model": "m", "input": "x"}
    ctx = RequestContext.from_body(body, request_id="req_1", headers=[])
    attempt = Attempt(config, "up-model", None, 0, body)
    with pytest.raises(UpstreamStatusError) as caught:
        adapter.convert_response(ctx, attempt, answer)
    assert caught.value.retryable and caught.value.message.startswith("channel 'up': ")


@pytest.mark.parametrize(("module", "options", "translator", "adapter", "service_type"), DIALECTS)
def test_a_translator_without_a_catalog_reads_the_request_tools(
    module: ModuleType, options: type, translator: type, adapter: Any, service_type: str
) -> None:
    request = {"input": "x", "tools": [{"type": "custom", "name": "apply_patch"}]}
    stream = translator("m", request)
    assert stream.catalog.client_tool("apply_patch") == ("custom_tool_call", "apply_patch", None)
    assert translator("m").catalog.specs == []
