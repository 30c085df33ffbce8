"""Server-sent events: an incremental parser for upstream streams and the encoder for ours.

The parser is a pure state machine over byte chunks (``feed(bytes) -> list[SSEEvent]``) so that it
is tested without sockets and never buffers more than one unfinished event.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ccx_asgi.types import Event

__all__ = ["SSEEvent", "SSELimitError", "SSEParser", "encode_event"]


class SSELimitError(ValueError):
    """An upstream event grew past the parser's ``max_event_bytes`` (an upstream fault, unlike any
    other ``ValueError``, which would be a bug of this gateway)."""


@dataclass(slots=True)
class SSEEvent:
    """One parsed event: the ``event:`` name (or ``None``) and the joined ``data:`` lines."""

    event: str | None
    data: str


class SSEParser:
    """Incremental SSE parser (WHATWG rules for ``event``/``data``; ``id``/``retry``/comments skipped).

    ``max_event_bytes`` bounds one unfinished event so a hostile upstream cannot grow memory forever
    (:class:`SSELimitError` past it).
    """

    def __init__(self, *, max_event_bytes: int = 64 * 1024 * 1024) -> None:
        # The unfinished line is kept as a list of pieces so that a long event arriving in many
        # chunks is joined once, not copied again on every chunk.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._event: str | None = None
        self._data: list[str] = []
        self._data_size = 0
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk`` and return the events it completed."""
        if b"\n" not in chunk:
            if chunk:
                self._pending.append(chunk)
                self._pending_size += len(chunk)
                self._check()
            return []
        if self._pending:
            self._pending.append(chunk)
            chunk = b"".join(self._pending)
            self._pending = []
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if tail:
            self._pending.append(tail)
        self._pending_size = len(tail)
        out: list[SSEEvent] = []
        # The common lines (blank and "data: ...") are handled inline: this loop runs per upstream token.
        data = self._data
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                if data or self._event is not None:
                    out.append(SSEEvent(self._event, data[0] if len(data) == 1 else "\n".join(data)))
                    data = self._data = []
                    self._data_size = 0
                self._event = None
            elif line[:6] == b"data: ":
                value = line[6:].decode("utf-8", "replace")
                data.append(value)
                self._data_size += len(value)
            else:
                self._line(line)
        self._check()
        return out

    def _check(self) -> None:
        if self._pending_size + self._data_size > self._max:
            raise SSELimitError("upstream SSE event exceeds the size limit")

    def _line(self, line: bytes) -> None:
        """A non-blank line other than ``data: ...``."""
        if line[:1] == b":":
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            text = value.decode("utf-8", "replace")
            self._data.append(text)
            self._data_size += len(text)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")

    def finish(self) -> list[SSEEvent]:
        """Flush an event the upstream left without its closing blank line."""
        out: list[SSEEvent] = []
        if self._pending:
            line = b"".join(self._pending).rstrip(b"\r")
            self._pending = []
            self._pending_size = 0
            if line:
                self._line(line)
            elif self._data or self._event is not None:
                out.append(SSEEvent(self._event, "\n".join(self._data)))
                self._event, self._data, self._data_size = None, [], 0
        if self._data:
            out.append(SSEEvent(self._event, "\n".join(self._data)))
        self._event, self._data, self._data_size = None, [], 0
        return out


def encode_event(event: Event) -> bytes:
    """Encode one Responses event as an SSE frame (``event:`` line plus one ``data:`` line)."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
