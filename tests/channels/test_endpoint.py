"""The endpoint's stream pump (:mod:`ccx_asgi.channels.endpoint`): what one upstream read carries
leaves in one client write, a terminal event stays last in its batch, and a fault mid-read never
loses what was translated before it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ccx_asgi.app import CCXApp
from ccx_asgi.channels.endpoint import ADAPTERS, _pump
from ccx_asgi.context import Attempt
from ccx_asgi.settings import ChannelConfig
from ccx_asgi.sse import SSEEvent
from ccx_asgi.stream import TERMINAL_EVENTS, ClientStream
from ccx_asgi.types import Event, Message, Receive, Scope, Send
from tests.conftest import PROXY_KEY, AppFactory
from tests.fakes.scripted_upstream import Scripted, answer_events, chan
from tests.fakes.scripted_upstream import events as streamed
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events
from tests.test_stream import _BuggyAdapter

BODY = {"model": "gpt-5", "input": "hi", "stream": True}


def _answer(model: str) -> list[Event]:
    return answer_events(model, "one two three four")


class _Recording:
    """Records every ASGI message the wrapped app sends on its way to the client."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def record(message: Message) -> None:
            self.sent.append(message)
            await send(message)

        await self.app(scope, receive, record)


async def _serve(app: CCXApp) -> list[Message]:
    """One streaming request; every message the app sent."""
    recording = _Recording(app)
    transport = httpx.ASGITransport(app=recording)
    headers = {"authorization": f"Bearer {PROXY_KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test", headers=headers) as client:
        response = await client.post("/responses", json=BODY)
    await app.aclose()
    assert response.status_code == 200
    return recording.sent


@pytest.mark.parametrize("delivery", ["one-read", "per-event"])
async def test_what_arrives_in_one_read_leaves_in_one_write(make_app: AppFactory, delivery: str) -> None:
    # Before, every event was its own ASGI message (one socket write each): a 20-token burst cost
    # 20 writes where a byte relay makes one.
    upstream = Scripted()
    upstream.script("a.test", streamed(_answer, burst=delivery == "one-read"))
    sent = await _serve(make_app([chan("a")], transport=upstream))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    events = parse_sse(b"".join(m.get("body", b"") for m in bodies))
    validate_events(events)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "".join(e.get("delta", "") for e in events) == "one two three four "
    assert bodies[-1].get("more_body", False) is False
    assert all(m.get("more_body") for m in bodies[:-1])
    if delivery == "one-read":
        # The commit (prelude and first delta) at once, then the rest of the burst, then the end
        # of the body (the translator's closing events are none here).
        assert len(bodies) == 3
        assert [e["type"] for e in parse_sse(bodies[0]["body"])][-1] == "response.output_text.delta"
    else:
        # Paced events are never held for company: each one goes out as it comes.
        assert len(bodies) == len(events) - 3  # the prelude waits for the first delta


class _Recorder(ClientStream):
    """A client stream that records each batch it is offered, committed from the start."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.content = True

    async def offer(self, events: list[Event]) -> None:
        self.batches.append([str(e["type"]) for e in events])


class _Echo:
    """A translator that turns each upstream JSON event into the events it lists."""

    def feed(self, data: dict[str, Any]) -> list[Event]:
        if data.get("boom"):
            raise ValueError("a translator bug")
        return [{"type": kind} for kind in data["emit"]]

    def finish(self) -> list[Event]:  # pragma: no cover - the pump never finishes a stream
        return []

    def fail(self, message: str) -> list[Event]:  # pragma: no cover
        return []


def _attempt() -> Attempt:
    channel = ChannelConfig.model_validate(chan("a"))
    return Attempt(channel, "gpt-5", None, 0, dict(BODY))


def _sse(*emits: list[str]) -> list[SSEEvent]:
    return [SSEEvent(None, httpx.Response(200, json={"emit": kinds}).text) for kinds in emits]


async def test_a_terminal_event_stays_last_in_its_batch() -> None:
    # The stream's usage note and the response store read the terminal event at the end of a batch.
    stream = _Recorder()
    parsed = _sse(["response.output_text.delta"], ["response.output_text.done", "response.completed"], ["extra"])
    await _pump(stream, _Echo(), parsed, _attempt())  # type: ignore[arg-type]
    assert stream.batches == [
        ["response.output_text.delta", "response.output_text.done", "response.completed"],
        ["extra"],
    ]
    assert all(kind not in TERMINAL_EVENTS for batch in stream.batches for kind in batch[:-1])


async def test_the_commit_is_offered_before_the_rest_of_its_read_is_translated() -> None:
    # The first content must not wait for the rest of a burst: events are offered one upstream
    # event at a time until the stream commits, then batched.
    stream = _Recorder()
    stream.content = False
    committing = stream.offer

    async def offer(events: list[Event]) -> None:
        await committing(events)
        stream.content = stream.content or any(e["type"] == "response.output_text.delta" for e in events)

    stream.offer = offer  # type: ignore[method-assign]
    parsed = _sse(["response.created"], ["response.output_text.delta"], ["a"], ["b"])
    await _pump(stream, _Echo(), parsed, _attempt())  # type: ignore[arg-type]
    assert stream.batches == [["response.created"], ["response.output_text.delta"], ["a", "b"]]


async def test_a_translator_fault_mid_read_still_offers_what_came_before() -> None:
    stream = _Recorder()
    parsed = [*_sse(["a"], ["b"]), SSEEvent(None, '{"boom": true}'), *_sse(["never"])]
    with pytest.raises(ValueError, match="a translator bug"):
        await _pump(stream, _Echo(), parsed, _attempt())  # type: ignore[arg-type]
    assert stream.batches == [["a", "b"]]


async def test_a_translator_bug_after_content_in_one_read_ends_with_failed(
    make_app: AppFactory, client_for: ClientFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same bug as tests/test_stream.py's, with the whole stream in one read: the content
    # translated before the bug is committed, and the stream ends with response.failed (not a 500).
    monkeypatch.setitem(ADAPTERS, "responses", _BuggyAdapter(5))
    upstream = Scripted()
    upstream.script("a.test", streamed(_answer, burst=True))
    response = await client_for(make_app([chan("a")], transport=upstream)).post("/responses", json=BODY)
    assert response.status_code == 200
    sent = parse_sse(response.content)
    validate_events(sent)
    assert sent[-1]["type"] == "response.failed"
    assert "".join(e.get("delta", "") for e in sent) == "one "
