"""The client side of a streaming answer (:mod:`ccx_asgi.stream`): the commit rule as
``ClientStream.offer``, numbering made in one place, and translator bugs that are never failed over."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ccx_asgi.channels.endpoint import ADAPTERS
from ccx_asgi.channels.responses import PassthroughTranslator, ResponsesAdapter
from ccx_asgi.context import Attempt, RequestContext
from ccx_asgi.convert.events import ResponseStream
from ccx_asgi.errors import CCXError, UpstreamStatusError, UpstreamStreamError, all_channels_failed
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.sse import SSELimitError, SSEParser
from ccx_asgi.stream import ClientStream
from ccx_asgi.types import Event, Message
from tests.conftest import AppFactory
from tests.fakes.scripted_upstream import Scripted, answer_events, chan, events, ok
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events

BODY = {"model": "gpt-5", "input": "hi", "stream": True}


def _ctx() -> RequestContext:
    ctx = RequestContext(body=dict(BODY), model="gpt-5", stream=True, request_id="req_1", headers=[])
    channel = ChannelConfig.model_validate(chan("a"))
    ctx.attempt = Attempt(channel, "gpt-5", None, 0, ctx.body)
    return ctx


class _Client:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def events(self) -> list[dict[str, Any]]:
        return parse_sse(b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"))


def _answer(text: str) -> list[Event]:
    built = ResponseStream("gpt-5", BODY)
    index = built.open_item("message")
    built.delta(index, text)
    built.complete(None)
    return built.take()


async def test_offer_holds_the_prelude_until_content() -> None:
    client = _Client()
    stream = ClientStream(_ctx(), client)
    answer = _answer("hello")
    prelude = [e for e in answer if e["type"] in ("response.created", "response.in_progress")]
    await stream.offer(prelude)
    assert client.messages == [] and not stream.started and not stream.content
    await stream.offer(answer[len(prelude) :])
    assert stream.started and stream.content
    await stream.finish([])
    sent = client.events()
    validate_events(sent)
    assert [e["sequence_number"] for e in sent] == list(range(len(sent)))


async def test_a_failure_before_content_is_raised_and_the_next_attempt_starts_clean() -> None:
    client = _Client()
    stream = ClientStream(_ctx(), client)
    first = _answer("lost")
    await stream.offer(first[:2])  # created + in_progress, held
    with pytest.raises(UpstreamStreamError):
        await stream.offer([{"type": "error", "error": {"code": "server_error", "message": "boom"}}])
    assert client.messages == []
    stream.next_attempt()
    await stream.keepalive()  # soft commit: the gateway's own response.created goes out
    second = _answer("kept")
    await stream.offer(second)
    await stream.end()
    sent = client.events()
    validate_events(sent)
    # One response id and gap-free numbers across the keep-alive and the second attempt, whatever
    # the attempt's translator numbered: the client stream numbers what the client sees.
    assert [e["sequence_number"] for e in sent] == list(range(len(sent)))
    assert len({e["response"]["id"] for e in sent if "response" in e}) == 1
    assert [e["type"] for e in sent].count("response.created") == 1
    assert "".join(e.get("delta", "") for e in sent) == "kept"


async def test_a_stream_with_no_answer_raises_for_failover() -> None:
    stream = ClientStream(_ctx(), _Client())
    with pytest.raises(UpstreamStreamError, match="carried no answer"):
        await stream.finish([])


def test_the_sse_size_limit_is_its_own_error() -> None:
    parser = SSEParser(max_event_bytes=10)
    with pytest.raises(SSELimitError):
        parser.feed(b"data: " + b"x" * 20)


class _BuggyTranslator(PassthroughTranslator):
    def __init__(self, model: str, after: int) -> None:
        super().__init__(model)
        self.after = after

    def feed(self, data: dict[str, Any]) -> list[Event]:
        self.after -= 1
        if self.after < 0:
            raise ValueError("a translator bug")
        return super().feed(data)


class _BuggyAdapter(ResponsesAdapter):
    def __init__(self, after: int) -> None:
        self.after = after

    def translator(self, ctx: RequestContext, attempt: Attempt) -> PassthroughTranslator:
        return _BuggyTranslator(ctx.model, self.after)


@pytest.mark.parametrize("after", [0, 5], ids=["before-content", "after-content"])
async def test_a_translator_bug_is_a_gateway_error_never_failed_over(
    make_app: AppFactory,
    client_for: ClientFor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    after: int,
) -> None:
    # Before, a ValueError from a translator was taken for the SSE size limit: an upstream fault,
    # failed over to the next channel, and reported as that channel's failure.
    monkeypatch.setitem(ADAPTERS, "responses", _BuggyAdapter(after))
    upstream = Scripted()
    upstream.script("a.test", events(lambda m: answer_events(m, "one two three")))
    upstream.script("b.test", ok("from b"))
    client = client_for(make_app([chan("a", priority=1), chan("b", priority=2)], transport=upstream))
    with caplog.at_level(logging.ERROR, logger="ccx_asgi"):
        response = await client.post("/responses", json=BODY)
    assert upstream.hosts() == ["a.test"]
    assert any("a translator bug" in (r.exc_text or "") for r in caplog.records)
    if after == 0:
        assert response.status_code == 500
        assert response.json()["error"]["message"] == "Internal gateway error; see the gateway log."
        assert response.headers["x-request-id"]
    else:
        assert response.status_code == 200
        sent = parse_sse(response.content)
        validate_events(sent)
        assert sent[-1]["type"] == "response.failed"
        assert "".join(e.get("delta", "") for e in sent) == "one "  # content had been committed
        assert "from b" not in response.text


@pytest.mark.parametrize(
    ("error", "code", "suffix"),
    [
        (all_channels_failed(["a (key #1): boom"]), "server_error", "boom"),
        (all_channels_failed(["a (key #1): slow down"], retry_after=2.5), "rate_limit_exceeded", "try again in 2.5s."),
        (all_channels_failed(["a (key #1): no credit"], quota=True, retry_after=9), "insufficient_quota", "credit"),
        (
            UpstreamStatusError("too long", code="context_length_exceeded", retryable=False),
            "context_length_exceeded",
            "",
        ),
        (UpstreamStatusError("bad field", code="invalid_value", retryable=False), "invalid_prompt", "field"),
    ],
)
async def test_an_error_after_a_keepalive_ends_the_stream_with_the_code_codex_acts_on(
    error: CCXError, code: str, suffix: str
) -> None:
    client = _Client()
    stream = ClientStream(_ctx(), client)
    await stream.keepalive()
    await stream.fail_with(error)
    sent = client.events()
    validate_events(sent)
    assert sent[-1]["type"] == "response.failed"
    assert sent[-1]["response"]["error"]["code"] == code
    assert sent[-1]["response"]["error"]["message"].endswith(suffix)
    assert client.messages[-1].get("more_body") is False


def test_the_all_failed_error_as_an_http_answer() -> None:
    plain = all_channels_failed(["a (key #1): 503", "b (key #1): circuit open"], retry_after=1.2)
    assert plain.status == 503 and plain.code == "all_channels_failed"
    assert plain.message == "All upstream channels are currently unavailable. a (key #1): 503; b (key #1): circuit open"
    assert plain.headers == [("retry-after", "2")]
    quota = all_channels_failed(["a (key #1): quota"], quota=True, retry_after=30)
    assert (quota.status, quota.code, quota.type, quota.headers) == (
        429,
        "insufficient_quota",
        "insufficient_quota",
        [],
    )
    assert all_channels_failed([]).message == "No channel to try."


def _final_failure(code: str) -> list[Event]:
    """A prelude and a final (non-retryable) ``response.failed``: an answer passed on as it is."""
    built = ResponseStream("gpt-5", BODY)
    built.start()
    head = built.take()
    response = {**head[0]["response"], "status": "failed", "error": {"code": code, "message": "nope"}}
    return [*head, {"type": "response.failed", "response": response, "sequence_number": 2}]


@pytest.mark.parametrize("terminal", ["completed", "final-failed"])
async def test_a_terminal_event_that_commits_reaches_the_store_with_events_after_it(terminal: str) -> None:
    # The commit and the events that came with it share one write; the commit's terminal event
    # must still reach the store hook even when more follows it in the same batch (a registered
    # adapter's translator may emit that; the built-in ones end a batch at the terminal event).
    ctx = _ctx()
    seen: list[str] = []

    async def hook(response: dict[str, Any], upstream_id: Any) -> None:
        seen.append(response["status"])

    ctx.on_answer = hook
    client = _Client()
    stream = ClientStream(ctx, client)
    if terminal == "completed":
        answer = _answer("hello")
        batch = [*answer[:2], answer[-1]]  # created, in_progress, completed (with output)
    else:
        batch = _final_failure("context_length_exceeded")
    late = {"type": "response.output_text.delta", "item_id": "x", "output_index": 0, "content_index": 0}
    batch.append({**late, "delta": "late"})
    await stream.offer(batch)
    assert stream.content
    assert seen == [batch[-2]["response"]["status"]]
    assert len([m for m in client.messages if m["type"] == "http.response.body"]) == 1  # still one write


async def test_no_keepalive_follows_the_terminal_event(make_app: AppFactory, client_for: ClientFor) -> None:
    # An upstream that sends its terminal event and then keeps the connection open a while (a late
    # close or [DONE]): before, the keep-alive ticker sent response.in_progress after completed.
    upstream = Scripted()
    upstream.script("a.test", events(lambda m: answer_events(m, "done early"), burst=True, linger=0.15))
    client = client_for(make_app([chan("a")], transport=upstream, keepalive_interval=0.03))
    sent = parse_sse((await client.post("/responses", json=BODY)).content)
    validate_events(sent)
    assert [e["type"] for e in sent][-1] == "response.completed"
