"""Property tests for request conversion, at the converter level (fast, no HTTP): every valid
Responses request — including repairable histories (interrupted calls, orphan outputs) — becomes
a Chat or Claude request that the strict fake's own validator accepts, or the converter raises a
clear :class:`~ccx_asgi.errors.InvalidRequestError` (a 400). Never any other exception.

The recorded Codex bodies in ``tests/fixtures/codex`` seed both properties.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccx_asgi.convert import chat as chat_dialect
from ccx_asgi.convert import claude as claude_dialect
from ccx_asgi.convert.chat import ChatOptions, request_tools
from ccx_asgi.convert.effort import DEFAULT_THINKING_BUDGETS
from ccx_asgi.convert.roles import normalize_roles
from ccx_asgi.convert.tools import ToolCatalog
from ccx_asgi.errors import InvalidRequestError
from tests.fakes.chat_upstream import validate_chat_request
from tests.fakes.claude_upstream import Rejected, check_request
from tests.paths import codex_bodies
from tests.strategies import mangled, property_settings, responses_requests

FAST = property_settings(300)
CODEX_BODIES = [orjson.loads(p.read_bytes()) for p in codex_bodies()]

chat_options = st.builds(
    ChatOptions,
    max_tokens_field=st.sampled_from(["max_tokens", "max_completion_tokens"]),
    strict_tools=st.booleans(),
    prompt_cache_key=st.booleans(),
    stream_usage=st.booleans(),
    reasoning_effort=st.sampled_from(["reasoning_effort", "reasoning", "none"]),
    reasoning_content=st.booleans(),
)


def _chat_extra_fields(options: ChatOptions) -> frozenset[str]:
    """Fields a channel only enables for upstreams that accept them."""
    extra = {"prompt_cache_key"} if options.prompt_cache_key else set()
    if options.reasoning_effort == "reasoning":
        extra.add("reasoning")
    return frozenset(extra)


def check_chat(body: dict[str, Any], options: ChatOptions, *, normalize: bool) -> dict[str, Any] | None:
    """Convert ``body`` like a Chat channel (``normalize_roles`` first when set); assert the strict
    fake accepts the result. Returns it, or ``None`` after a clear 400."""
    original = copy.deepcopy(body)
    if normalize:
        body = normalize_roles(body)
    try:
        chat = chat_dialect.to_request(body, model="up", options=options)
    except InvalidRequestError as exc:
        refused: InvalidRequestError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.status == 400 and refused.message
        return None
    assert body == (normalize_roles(original) if normalize else original), "the converter mutated its input"
    problem = validate_chat_request(
        chat,
        strict_roles=normalize,
        max_tokens_field=options.max_tokens_field,
        extra_fields=_chat_extra_fields(options),
    )
    assert problem is None, (problem, chat)
    orjson.dumps(chat)  # serialisable as it stands
    return chat


def check_claude(body: dict[str, Any]) -> dict[str, Any] | None:
    """Convert ``body`` like a Claude channel; assert the strict fake accepts it (or a clear 400)."""
    original = copy.deepcopy(body)
    try:
        claude = claude_dialect.to_request(body, model="claude-up", catalog=ToolCatalog.from_tools(body.get("tools")))
    except InvalidRequestError as exc:
        refused: InvalidRequestError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.status == 400 and refused.message
        return None
    assert body == original, "the converter mutated its input"
    try:
        check_request(claude)
    except Rejected as exc:
        raise AssertionError(f"{exc}\n{orjson.dumps(claude, option=orjson.OPT_INDENT_2).decode()}") from None
    return claude


@pytest.mark.parametrize("normalize", [False, True], ids=["roles-as-sent", "normalize_roles"])
@FAST
@given(body=responses_requests(repairable=True), options=chat_options)
def test_chat_conversion_is_accepted_or_a_clear_400(
    normalize: bool, body: dict[str, Any], options: ChatOptions
) -> None:
    chat = check_chat(body, options, normalize=normalize)
    if chat is None:
        return
    # Every offered function/custom tool reaches the upstream, hosted ones never do.
    offered = ToolCatalog.from_tools(request_tools(body))
    assert [t["function"]["name"] for t in chat.get("tools", [])] == [s.upstream_name for s in offered.specs]
    if normalize:
        assert all(m["role"] in ("system", "user", "assistant", "tool") for m in chat["messages"])


@FAST
@given(body=responses_requests(repairable=True))
def test_claude_conversion_is_accepted_or_a_clear_400(body: dict[str, Any]) -> None:
    claude = check_claude(body)
    if claude is None:
        return
    effort = (body.get("reasoning") or {}).get("effort")
    if "thinking" in claude:
        assert effort in DEFAULT_THINKING_BUDGETS
        assert claude["thinking"]["budget_tokens"] < claude["max_tokens"]


@pytest.mark.skipif(not CODEX_BODIES, reason="no recorded Codex bodies on this machine")
@pytest.mark.parametrize("normalize", [False, True])
def test_recorded_codex_bodies_convert(normalize: bool) -> None:
    for body in CODEX_BODIES:
        assert check_chat(body, ChatOptions(), normalize=normalize) is not None
        assert check_claude(body) is not None


# -- malformed bodies: a clear 400 or a request, never a crash --------------------------------------


def _convert_or_400(convert: Any, body: dict[str, Any]) -> None:
    try:
        out = convert(body)
    except InvalidRequestError as exc:
        assert exc.status == 400  # noqa: PT017 - the exception type is the property under test
        return
    orjson.dumps(out)


@FAST
@given(body=mangled(responses_requests(repairable=True).map(lambda b: [b])).map(lambda bs: bs[0] if bs else {}))
def test_malformed_bodies_never_crash_a_converter(body: dict[str, Any]) -> None:
    body = {**body, "model": "m"}  # the envelope (model, stream) is checked before any converter runs
    if not isinstance(body.get("stream", False), bool):
        body["stream"] = False
    _convert_or_400(lambda b: chat_dialect.to_request(normalize_roles(b), model="up"), body)
    _convert_or_400(lambda b: claude_dialect.to_request(b, model="up"), body)
