"""Property tests for the native Responses pass-through: whatever a broken upstream sends
(reordered, dropped, duplicated or renumbered events, unknown types, malformed JSON lines, a cut
stream), the client gets strictly increasing sequence numbers, exactly one terminal event, last,
and every event the translator makes itself passes the openai SDK's types."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter, ValidationError

from ccx_asgi.channels.responses import TERMINAL_EVENTS, PassthroughTranslator
from tests.conftest import PROXY_KEY, AppFactory, channel
from tests.fakes.hostile_upstream import HostileUpstream, Plan, text_events
from tests.sdk import validate_events
from tests.strategies import Wire, broken, property_settings, responses_streams, run_translator, wire

FAST = property_settings(200)
_EVENT = TypeAdapter(ResponseStreamEvent)


def _valid(event: dict[str, Any]) -> bool:
    try:
        _EVENT.validate_python(event)
    except ValidationError:
        return False
    return True


def _strip_seq(event: Any) -> Any:
    return {k: v for k, v in event.items() if k != "sequence_number"} if isinstance(event, dict) else event


@FAST
@given(sent=broken(responses_streams()))
def test_any_upstream_sequence_gives_a_well_formed_stream(sent: list[Wire]) -> None:
    before = copy.deepcopy(sent)
    out = run_translator(PassthroughTranslator("m"), wire(sent))
    seqs = [e["sequence_number"] for e in out]
    assert all(isinstance(s, int) for s in seqs)
    assert all(b > a for a, b in itertools.pairwise(seqs)), seqs
    terminals = [i for i, e in enumerate(out) if e.get("type") in TERMINAL_EVENTS]
    assert terminals == [len(out) - 1]
    # Everything passed through is an upstream object event, unchanged but for its sequence number;
    # anything else (the closing response.failed) was made by the translator and must be SDK-valid.
    upstream_events = [_strip_seq(e) for e in before if isinstance(e, dict) and isinstance(e.get("type"), str)]
    for event in out:
        if _strip_seq(event) in upstream_events:
            # A valid upstream event stays valid (the renumbering never breaks it).
            if _valid({**_strip_seq(event), "sequence_number": 0}):
                assert _valid(event), event
        else:
            assert event["type"] == "response.failed"
            assert _valid(event), event


@FAST
@given(events=responses_streams(), cut=st.integers(1, 200))
def test_a_cut_stream_is_closed_with_a_valid_failure(events: list[dict[str, Any]], cut: int) -> None:
    out = run_translator(PassthroughTranslator("m"), wire(list(events[:cut])))
    validate_events(out)
    if cut < len(events):
        assert out[-1]["type"] == "response.failed"
        assert out[-1]["response"]["id"] == events[0]["response"]["id"]
    else:
        assert out == events


@FAST
@given(events=responses_streams(), message=st.text(max_size=50))
def test_fail_after_any_prefix_is_sdk_valid(events: list[dict[str, Any]], message: str) -> None:
    translator = PassthroughTranslator("m")
    out = run_translator(translator, wire(list(events[:-1])), finish=False)
    out += translator.fail(message)
    validate_events(out)
    assert translator.fail("again") == []  # one terminal event, ever


@FAST
@given(
    response=st.dictionaries(
        st.sampled_from(["id", "object", "created_at", "model", "output", "status", "usage", "tools"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)),
    )
)
def test_fail_is_valid_even_after_a_malformed_response_object(response: dict[str, Any]) -> None:
    translator = PassthroughTranslator("m")
    translator.feed({"type": "response.created", "response": response, "sequence_number": 0})
    failed = translator.fail("upstream went away")
    assert len(failed) == 1
    assert _valid(failed[0]), failed[0]
    assert failed[0]["response"]["status"] == "failed"


@pytest.mark.parametrize("position", [0, 1, 3, -1], ids=["first", "after-created", "mid-item", "before-terminal"])
async def test_unknown_upstream_events_are_forwarded_and_the_sdk_tolerates_them(
    make_app: AppFactory, position: int
) -> None:
    """The pass-through forwards event types it does not know (a newer OpenAI event must reach a
    newer SDK). They are not in this SDK's ``ResponseStreamEvent`` union, but neither
    ``responses.stream()`` nor ``responses.create(stream=True)`` validates strictly: both carry on,
    and the final response is intact. See docs/security.md, "Unknown upstream event types"."""
    unknown = {"type": "response.future_thing", "payload": {"x": 1}}
    assert not _valid({**unknown, "sequence_number": 0})
    events: list[Any] = text_events("hello")
    at = position if position >= 0 else len(events) - 1
    events = [*events[:at], unknown, *events[at:]]
    upstream = HostileUpstream(plan=lambda body, headers: Plan(events=events))
    app = make_app([channel()], transport=httpx.ASGITransport(app=upstream))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    # openai types http_client as an httpx2 client; it accepts an httpx one too (_httpx2.is_legacy_httpx_async_client)
    client = openai.AsyncOpenAI(api_key=PROXY_KEY, base_url="http://gw.test", http_client=http, max_retries=0)  # type: ignore[arg-type]
    try:
        async with client.responses.stream(model="m", input="hi") as stream:
            seen = [event.type async for event in stream]
            final = await stream.get_final_response()
        assert "response.future_thing" in seen
        assert final.output_text == "hello" and final.status == "completed"
        raw = await client.responses.create(model="m", input="hi", stream=True)
        types = [event.type async for event in raw]
        assert "response.future_thing" in types and types[-1] == "response.completed"
    finally:
        await http.aclose()
        await app.aclose()
