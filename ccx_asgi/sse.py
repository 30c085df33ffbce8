"""Server-sent events: an incremental parser for upstream streams and the encoder for ours.

The parser is a pure state machine over byte chunks (``feed(bytes) -> list[SSEEvent]``) so that it
is tested without sockets and never buffers more than one unfinished event.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ccx_asgi.types import Event

__all__ = ["SSEEvent", "SSEParser", "encode_event"]


@dataclass(slots=True)
class SSEEvent:
    """One parsed event: the ``event:`` name (or ``None``) and the joined ``data:`` lines."""

    event: str | None
    data: str


class SSEParser:
    """Incremental SSE parser (WHATWG rules for ``event``/``data``; ``id``/``retry``/comments skipped).

    ``max_event_bytes`` bounds one unfinished event so a hostile upstream cannot grow memory forever.
    """

    def __init__(self, *, max_event_bytes: int = 64 * 1024 * 1024) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk`` and return the events it completed."""
        buffer = self._buffer + chunk if self._buffer else chunk
        out: list[SSEEvent] = []
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            self._line(line, out)
        self._buffer = buffer[start:]
        if len(self._buffer) + sum(len(d) for d in self._data) > self._max:
            raise ValueError("upstream SSE event exceeds the size limit")
        return out

    def _line(self, line: bytes, out: list[SSEEvent]) -> None:
        if not line:
            if self._data or self._event is not None:
                out.append(SSEEvent(self._event, "\n".join(self._data)))
            self._event, self._data = None, []
            return
        if line[:1] == b":":
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")

    def finish(self) -> list[SSEEvent]:
        """Flush an event the upstream left without its closing blank line."""
        out: list[SSEEvent] = []
        if self._buffer:
            line = self._buffer.rstrip(b"\r")
            self._buffer = b""
            self._line(line, out)
        if self._data:
            out.append(SSEEvent(self._event, "\n".join(self._data)))
        self._event, self._data = None, []
        return out


def encode_event(event: Event) -> bytes:
    """Encode one Responses event as an SSE frame (``event:`` line plus one ``data:`` line)."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
