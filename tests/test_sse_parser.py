"""``SSEParser`` against a line-by-line reference implementation of the same rules, on any chunking.

The parser is on the per-token hot path and is written for speed; this checks that it still means
exactly what the simple version means, whatever way the network splits the bytes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccx_asgi.sse import SSEEvent, SSEParser


def reference(raw: bytes) -> list[SSEEvent]:
    """The rules spelled out plainly: lines end in LF (CR before it dropped), a blank line dispatches."""
    out: list[SSEEvent] = []
    event: str | None = None
    data: list[str] = []
    *lines, tail = raw.split(b"\n")
    for line in [*(line.removesuffix(b"\r") for line in lines), *([tail.rstrip(b"\r")] if tail else [])]:
        if not line:
            if data or event is not None:
                out.append(SSEEvent(event, "\n".join(data)))
            event, data = None, []
            continue
        if line.startswith(b":"):
            continue
        name, sep, value = line.partition(b":")
        value = value[1:] if sep and value.startswith(b" ") else value
        if name == b"data":
            data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    if data:
        out.append(SSEEvent(event, "\n".join(data)))
    return out


def parse(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events = [e for chunk in chunks for e in parser.feed(chunk)]
    return events + parser.finish()


_LINE = st.sampled_from(
    [b"data: {\"a\": 1}", b"data:x", b"data", b"data: ", b"event: response.created", b"event:e", b": keep-alive",
     b"id: 7", b"retry: 10", b"", b"data: \xc3\xa9t\xc3\xa9", b"data: \xff", b"dat", b"data: [DONE]"]
)  # fmt: skip
_EOL = st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\r\n\r\n"])


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    raw = b"".join(draw(_LINE) + draw(_EOL) for _ in range(draw(st.integers(0, 30))))
    raw += draw(st.sampled_from([b"", b"data: cut", b"event: only", b"\r", b"data: x\r"]))
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    return raw, chunks


@settings(max_examples=400, deadline=None)
@given(streams())
def test_any_chunking_parses_like_the_reference(stream: tuple[bytes, list[bytes]]) -> None:
    raw, chunks = stream
    assert parse(chunks) == reference(raw)


def test_a_long_event_split_in_many_chunks() -> None:
    payload = b"x" * 100_000
    raw = b"event: big\ndata: " + payload + b"\n\n"
    chunks = [raw[i : i + 999] for i in range(0, len(raw), 999)]
    assert parse(chunks) == [SSEEvent("big", payload.decode())]


@pytest.mark.parametrize("split", [1, 7, 1000])
def test_the_size_bound_applies_to_an_unfinished_event(split: int) -> None:
    parser = SSEParser(max_event_bytes=1000)
    raw = b"data: " + b"y" * 600 + b"\ndata: " + b"y" * 600
    chunks = [raw[i : i + split] for i in range(0, len(raw), split)]

    def feed_all() -> None:
        for chunk in chunks:
            parser.feed(chunk)

    with pytest.raises(ValueError, match="size limit"):
        feed_all()
