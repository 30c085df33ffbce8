"""Property tests for the event builder and the SSE parser: any legal use of ``ResponseStream``
yields a stream the openai SDK accepts, and the parser is indifferent to how bytes are split."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccx_asgi.convert.events import ResponseStream
from ccx_asgi.sse import SSEEvent, SSEParser, encode_event
from tests.sdk import TERMINAL, parse_sse, validate_events
from tests.strategies import drive, property_settings, responses_streams, sse_bytes, stream_ops

FAST = property_settings(150)


@FAST
@given(ops=stream_ops())
def test_any_legal_operation_sequence_makes_a_valid_stream(ops: list[tuple[Any, ...]]) -> None:
    events = drive(ResponseStream("m", {"tool_choice": "auto"}), ops)
    validate_events(events)
    final = events[-1]["response"]
    # What the deltas said is what the finished items hold.
    sent: dict[int, str] = {}
    for op in ops:
        if op[0] == "delta":
            sent[op[1]] = sent.get(op[1], "") + op[2]
    if events[-1]["type"] != "response.failed":
        for index, item in enumerate(final["output"]):
            readers: dict[str, Callable[[dict[str, Any]], str]] = {
                "message": lambda i: i["content"][0]["text"],
                "reasoning": lambda i: i["summary"][0]["text"] if i["summary"] else "",
                "function_call": lambda i: i["arguments"],
                "custom_tool_call": lambda i: i["input"],
            }
            body = readers[item["type"]](item)
            assert body == sent.get(index, "")
    else:
        # A failed response carries only the items that were finished before the failure.
        assert all(item["status"] == "completed" for item in final["output"])


@FAST
@given(ops=stream_ops())
def test_the_encoded_stream_round_trips_through_sse(ops: list[tuple[Any, ...]]) -> None:
    events = drive(ResponseStream("m"), ops)
    raw = b"".join(encode_event(e) for e in events)
    assert parse_sse(raw) == events


def _parse_in_pieces(raw: bytes, cuts: list[int]) -> list[SSEEvent]:
    parser = SSEParser()
    points = sorted({min(c, len(raw)) for c in cuts})
    out: list[SSEEvent] = []
    for start, end in zip([0, *points], [*points, len(raw)], strict=True):
        out.extend(parser.feed(raw[start:end]))
    return out + parser.finish()


@FAST
@given(
    events=responses_streams(),
    cuts=st.lists(st.integers(0, 4000), max_size=30),
    crlf=st.booleans(),
    noise=st.booleans(),
)
def test_sse_parser_ignores_chunk_boundaries(events: list[Any], cuts: list[int], crlf: bool, noise: bool) -> None:
    raw = sse_bytes(events, crlf=crlf, noise=noise)
    parsed = _parse_in_pieces(raw, cuts)
    assert [orjson.loads(e.data) for e in parsed] == events
    assert [e.event for e in parsed] == [e["type"] for e in events]


@FAST
@given(raw=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=10))
def test_sse_parser_survives_any_bytes(raw: bytes, cuts: list[int]) -> None:
    whole = _parse_in_pieces(raw, [])
    assert _parse_in_pieces(raw, cuts) == whole
    assert all(isinstance(e.data, str) for e in whole)


@given(lines=st.lists(st.text(max_size=20).filter(lambda t: "\n" not in t and "\r" not in t), min_size=1, max_size=5))
def test_multi_line_data_is_joined_with_newlines(lines: list[str]) -> None:
    raw = "".join(f"data: {line}\n" for line in lines).encode() + b"\n"
    assert _parse_in_pieces(raw, []) == [SSEEvent(None, "\n".join(lines))]


def test_sse_parser_bounds_an_endless_event() -> None:
    parser = SSEParser(max_event_bytes=1000)
    parser.feed(b"data: " + b"x" * 500)
    parser.feed(b"x" * 400)
    with pytest.raises(ValueError, match="size limit"):
        parser.feed(b"x" * 200)


def test_terminal_set_matches_the_builder() -> None:
    stream = ResponseStream("m")
    stream.complete()
    assert stream.take()[-1]["type"] in TERMINAL
