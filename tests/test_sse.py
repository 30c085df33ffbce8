"""The incremental SSE parser on awkward splits and framings."""

from __future__ import annotations

import pytest

from ccx_asgi.sse import SSEParser, encode_event

RAW = (
    b": comment\r\n"
    b"event: response.created\r\n"
    b'data: {"a":1}\r\n\r\n'
    b'data: {"b":\n'
    b"data: 2}\n\n"
    b"id: 7\nretry: 10\ndata:no-space\n\n"
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(RAW)])
def test_any_split_gives_the_same_events(size: int) -> None:
    parser = SSEParser()
    events = []
    for start in range(0, len(RAW), size):
        events += parser.feed(RAW[start : start + size])
    events += parser.finish()
    assert [(e.event, e.data) for e in events] == [
        ("response.created", '{"a":1}'),
        (None, '{"b":\n2}'),
        (None, "no-space"),
        (None, "[DONE]"),
    ]


def test_unterminated_last_event_is_flushed() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"x": 1}') == []
    assert [e.data for e in parser.finish()] == ['{"x": 1}']


def test_event_size_is_bounded() -> None:
    parser = SSEParser(max_event_bytes=100)
    with pytest.raises(ValueError, match="size limit"):
        parser.feed(b"data: " + b"x" * 200)


def test_encoder_round_trip() -> None:
    frame = encode_event({"type": "response.output_text.delta", "delta": "a\nb"})
    events = SSEParser().feed(frame)
    assert events[0].event == "response.output_text.delta"
    assert events[0].data == '{"type":"response.output_text.delta","delta":"a\\nb"}'
