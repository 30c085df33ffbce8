"""The error codes Codex acts on: context length and quota, in JSON errors and in ``response.failed``.

The classification table is checked on the messages real providers send (OpenAI, DeepSeek, vLLM,
Claude, OpenRouter); then every path a client sees: an upstream HTTP error before the stream, an
in-stream error (Chat and Claude translators), a failure after a keep-alive started the stream, and
the failover rule (context length is final, quota fails over and is reported when every target is
out). What the real Codex CLI does with each code is shown in tests/e2e/test_codex_errors.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ccx_asgi.convert.chat import ChatStreamTranslator
from ccx_asgi.convert.claude import ClaudeStreamTranslator
from ccx_asgi.convert.events import ResponseStream
from ccx_asgi.convert.tools import ToolCatalog
from ccx_asgi.upstream_errors import classify_error, response_error_code, upstream_status_error
from tests.conftest import AppFactory
from tests.fakes.chat_upstream import FakeChatUpstream, Reply, chunk
from tests.fakes.claude_upstream import FakeClaudeUpstream
from tests.fakes.scripted_upstream import Scripted, after, chan, events, failed, prelude, status
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events, validate_response

BODY = {"model": "gpt-5", "input": "hi", "stream": True}

CLAUDE_TOO_LONG = "prompt is too long: 210412 tokens > 200000 maximum"
CLAUDE_CREDIT = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or "
    "purchase credits."
)


@pytest.mark.parametrize(
    ("code", "message", "status_code", "expected"),
    [
        # OpenAI
        (
            "context_length_exceeded",
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 130001 tokens.",
            400,
            "context_length_exceeded",
        ),
        (
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing.",
            429,
            "insufficient_quota",
        ),
        ("rate_limit_exceeded", "Rate limit reached for gpt-5. Please try again in 20s.", 429, "rate_limit_exceeded"),
        # DeepSeek: no code for context length, 402 for an empty balance
        (
            "invalid_request_error",
            "This model's maximum context length is 65536 tokens. However, you requested 70000 tokens "
            "(60000 in the messages, 10000 in the completion). Please reduce the length of the messages or completion.",
            400,
            "context_length_exceeded",
        ),
        ("invalid_request_error", "Insufficient Balance", 402, "insufficient_quota"),
        # vLLM, old and new wording
        (
            "BadRequestError",
            "The prompt (total length 5000) is too long to fit into the model (context length 4096).",
            400,
            "context_length_exceeded",
        ),
        (
            None,
            "Input prompt (9000 tokens) is too long and exceeds the context window of 8192",
            400,
            "context_length_exceeded",
        ),
        # Claude (HTTP 400 invalid_request_error for both)
        ("invalid_request_error", CLAUDE_TOO_LONG, 400, "context_length_exceeded"),
        (
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 195000 + 32000 > 200000, decrease input length",
            400,
            "context_length_exceeded",
        ),
        ("invalid_request_error", CLAUDE_CREDIT, 400, "insufficient_quota"),
        (
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            429,
            "rate_limit_exceeded",
        ),
        # OpenRouter
        (None, "Insufficient credits. Add more using https://openrouter.ai/credits", 402, "insufficient_quota"),
        # a per-minute quota is a rate limit, not an empty account
        (
            None,
            "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute'",
            429,
            "rate_limit_exceeded",
        ),
        # ordinary client and server errors are none of these
        ("invalid_request_error", "messages.0.content: Field required", 400, None),
        ("overloaded_error", "Overloaded", 529, None),
    ],
)
def test_the_classification_table(code: str | None, message: str, status_code: int, expected: str | None) -> None:
    assert classify_error(code, message, status_code) == expected


def test_http_errors_get_the_status_and_code_codex_acts_on() -> None:
    context = upstream_status_error("c", 400, "invalid_request_error", CLAUDE_TOO_LONG)
    assert (context.status, context.code, context.type, context.retryable) == (
        400,
        "context_length_exceeded",
        "invalid_request_error",
        False,
    )
    # Codex only says "Quota exceeded" for a 429 (it retries a 402), and another key may have credit.
    for upstream in (402, 400, 429):
        quota = upstream_status_error("c", upstream, "insufficient_quota", "You exceeded your current quota")
        assert (quota.status, quota.code, quota.type, quota.retryable) == (
            429,
            "insufficient_quota",
            "insufficient_quota",
            True,
        )
    plain = upstream_status_error("c", 400, "invalid_value", "Invalid 'input'")
    assert (plain.status, plain.code, plain.retryable) == (400, "invalid_value", False)
    assert upstream_status_error("c", 503, None, "down").retryable
    assert upstream_status_error("c", 404, "not_found", "no such model").status == 404


def test_in_stream_codes_are_kept_when_codex_knows_them() -> None:
    assert response_error_code("context_length_exceeded", "too long") == "context_length_exceeded"
    assert response_error_code(None, CLAUDE_CREDIT) == "insufficient_quota"
    assert response_error_code("invalid_prompt", "flagged") == "invalid_prompt"
    assert response_error_code("weird_code", "something") == "server_error"
    stream = ResponseStream("m")
    stream.fail("too long", code="context_length_exceeded")
    assert stream.response()["error"]["code"] == "context_length_exceeded"
    stream = ResponseStream("m")
    stream.fail("?", code="made_up")
    assert stream.response()["error"]["code"] == "server_error"


def test_translators_report_context_length_and_quota() -> None:
    chat = ChatStreamTranslator("gpt-5", {})
    failed_events = chat.feed(chunk({"role": "assistant"}))
    failed_events += chat.feed({"error": {"message": "maximum context length is 8192 tokens", "code": None}})
    validate_events(failed_events)
    assert failed_events[-1]["response"]["error"]["code"] == "context_length_exceeded"

    claude = ClaudeStreamTranslator("gpt-5", {}, catalog=ToolCatalog())
    out = claude.feed({"type": "message_start", "message": {"usage": {"input_tokens": 1}}})
    out += claude.feed({"type": "error", "error": {"type": "invalid_request_error", "message": CLAUDE_CREDIT}})
    validate_events(out)
    assert out[-1]["response"]["error"]["code"] == "insufficient_quota"
    claude = ClaudeStreamTranslator("gpt-5", {}, catalog=ToolCatalog())
    claude.feed({"type": "message_start", "message": {"usage": {}}})
    out = claude.feed({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert out[-1]["response"]["error"]["code"] == "server_error"


# -- through the app ---------------------------------------------------------------------------------


def _claude_channel(name: str, keys: list[str], **fields: Any) -> dict[str, Any]:
    return chan(name, keys=keys, service_type="claude", base_url=f"https://{name}.test/v1", **fields)


class Hosts(httpx.AsyncBaseTransport):
    """Sends each request to the ASGI fake registered for its host."""

    def __init__(self, fakes: dict[str, Any]) -> None:
        self.transports = {host: httpx.ASGITransport(app=fake) for host, fake in fakes.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.host].handle_async_request(request)


@pytest.mark.parametrize("stream", [True, False])
async def test_claude_prompt_too_long_is_a_final_context_length_error(
    make_app: AppFactory, client_for: ClientFor, stream: bool
) -> None:
    def too_long(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": CLAUDE_TOO_LONG}}

    first = FakeClaudeUpstream(keys=("k1",), script=too_long)
    second = FakeClaudeUpstream(keys=("k2",))
    app = make_app(
        [_claude_channel("a", ["k1"]), _claude_channel("b", ["k2"])],
        transport=Hosts({"a.test": first, "b.test": second}),
    )
    response = await client_for(app).post("/responses", json={**BODY, "stream": stream})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("context_length_exceeded", "invalid_request_error")
    assert CLAUDE_TOO_LONG in error["message"]
    assert len(first.requests) == 1 and second.requests == []  # final: not failed over


async def test_claude_credit_balance_fails_over_then_is_reported_as_quota(
    make_app: AppFactory, client_for: ClientFor
) -> None:
    def no_credit(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": CLAUDE_CREDIT}}

    broke = FakeClaudeUpstream(keys=("k1", "k2"), script=no_credit)
    healthy = FakeClaudeUpstream(keys=("k3",))
    app = make_app(
        [_claude_channel("a", ["k1", "k2"]), _claude_channel("b", ["k3"])],
        transport=Hosts({"a.test": broke, "b.test": healthy}),
    )
    client = client_for(app)
    response = await client.post("/responses", json=BODY)
    assert response.status_code == 200
    validate_events(parse_sse(response.content))
    assert len(broke.requests) == 2 and len(healthy.requests) == 1  # both keys of a, then b

    only_broke = make_app([_claude_channel("a", ["k1", "k2"])], transport=Hosts({"a.test": broke}))
    response = await client_for(only_broke).post("/responses", json=BODY)
    assert response.status_code == 429  # the status Codex stops for ("Quota exceeded")
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("insufficient_quota", "insufficient_quota")
    assert "credit balance is too low" in error["message"]


async def test_quota_answer_never_carries_retry_after(make_app: AppFactory, client_for: ClientFor) -> None:
    upstream = Scripted()
    upstream.script(
        "a.test", status(429, "You exceeded your current quota", code_field="insufficient_quota", retry_after="30")
    )
    response = await client_for(make_app([chan("a")], transport=upstream)).post("/responses", json=BODY)
    assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota"
    assert "retry-after" not in response.headers  # Codex would wait and retry a 429 with Retry-After


async def test_mixed_failures_stay_a_retryable_503(make_app: AppFactory, client_for: ClientFor) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(429, "You exceeded your current quota", code_field="insufficient_quota"))
    upstream.script("b.test", status(503, "down"))
    client = client_for(make_app([chan("a"), chan("b")], transport=upstream))
    response = await client.post("/responses", json=BODY)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "all_channels_failed"


async def test_chat_in_stream_context_length_is_passed_on_not_retried(
    make_app: AppFactory, client_for: ClientFor
) -> None:
    def script(body: dict[str, Any]) -> Reply:
        return Reply(
            [
                chunk({"role": "assistant", "content": ""}),
                {
                    "error": {
                        "message": "This model's maximum context length is 8192 tokens.",
                        "code": "context_length_exceeded",
                    }
                },
            ],
            done=False,
        )

    first = FakeChatUpstream(keys=("k1",), script=script)
    second = FakeChatUpstream(keys=("k2",), script=script)
    chat = {"service_type": "chat"}
    app = make_app(
        [
            chan("a", keys=["k1"], **chat, base_url="https://a.test/v1"),
            chan("b", keys=["k2"], **chat, base_url="https://b.test/v1"),
        ],
        transport=Hosts({"a.test": first, "b.test": second}),
    )
    response = await client_for(app).post("/responses", json=BODY)
    assert response.status_code == 200
    stream = parse_sse(response.content)
    validate_events(stream)
    assert stream[-1]["type"] == "response.failed"
    assert stream[-1]["response"]["error"]["code"] == "context_length_exceeded"
    assert len(first.requests) == 1 and second.requests == []


async def test_in_stream_quota_fails_over(make_app: AppFactory, client_for: ClientFor) -> None:
    upstream = Scripted()
    upstream.script("a.test", events(failed("insufficient_quota", "You exceeded your current quota")))
    upstream.script("b.test", events(failed("insufficient_quota", "You exceeded your current quota")))
    client = client_for(make_app([chan("a"), chan("b")], transport=upstream))
    response = await client.post("/responses", json=BODY)
    assert upstream.hosts() == ["a.test", "b.test"]
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"


QUOTA_429 = status(429, "You exceeded your current quota", code_field="insufficient_quota")
CUT = events(prelude, delay=0.06, fail=httpx.ReadError("reset"))


@pytest.mark.parametrize(
    ("first", "second", "code"),
    [
        (CUT, status(400, CLAUDE_TOO_LONG), "context_length_exceeded"),
        (CUT, status(400, "Invalid 'input'"), "invalid_prompt"),
        (after(0.06, QUOTA_429), QUOTA_429, "insufficient_quota"),
        (CUT, QUOTA_429, "server_error"),  # one target failed otherwise: Codex may retry
    ],
)
async def test_after_a_keepalive_the_failed_event_keeps_the_code(
    make_app: AppFactory, client_for: ClientFor, first: Any, second: Any, code: str
) -> None:
    upstream = Scripted()
    upstream.script("a.test", first)
    upstream.script("b.test", second)
    client = client_for(make_app([chan("a"), chan("b")], transport=upstream, keepalive_interval=0.02))
    response = await client.post("/responses", json=BODY)
    assert response.status_code == 200
    stream = parse_sse(response.content)
    validate_events(stream)
    assert stream[-1]["type"] == "response.failed"
    assert stream[-1]["response"]["error"]["code"] == code


def test_the_sdk_exception_is_only_for_the_two_codex_codes() -> None:
    stream = ResponseStream("m")
    stream.fail("too long", code="context_length_exceeded")
    validate_response(stream.response())  # accepted: Codex needs this code (see tests/sdk.py)
    broken = {**stream.response(), "error": {"code": "made_up_code", "message": "x"}}
    with pytest.raises(ValueError, match="code"):
        validate_response(broken)
