"""Building valid Responses stream events: the one place ids, indexes and sequence numbers are made.

Every converted channel (Chat, Claude, demo) drives a :class:`ResponseStream`: open an item, feed it
deltas, and finish the response with exactly one terminal event. The builder guarantees the
invariants clients depend on (see ``shared/reference/responses-protocol.md``):

- one response id from ``response.created`` to the terminal event, strictly increasing
  ``sequence_number``;
- every item opened with ``output_item.added`` (carrying its real ``name``/``call_id``) before its
  deltas, and closed with ``output_item.done`` carrying the complete item;
- exactly one terminal event, last, whose ``output`` lists the finished items;
- usage in OpenAI semantics (``input_tokens`` includes cached tokens).

The builder does no I/O; methods append to an internal buffer that :meth:`ResponseStream.take`
drains, so translators stay ``feed() -> list[event]`` state machines.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from ccx_asgi.types import Event
from ccx_asgi.upstream_errors import RESPONSE_ERROR_CODES

__all__ = ["ItemKind", "ResponseStream", "new_id", "usage_dict"]

ItemKind = Literal["message", "reasoning", "function_call", "custom_tool_call"]

_ID_PREFIX = {"message": "msg", "reasoning": "rs", "function_call": "fc", "custom_tool_call": "ctc"}


def new_id(prefix: str) -> str:
    """A fresh id such as ``resp_…`` or ``fc_…`` (random, 24 hex digits)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def usage_dict(
    input_tokens: int = 0,
    output_tokens: int = 0,
    *,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> dict[str, Any]:
    """A Responses ``usage`` object. ``input_tokens`` must already include cached tokens."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": cache_write_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


@dataclass(slots=True)
class _Item:
    kind: ItemKind
    index: int
    id: str
    data: dict[str, Any]
    parts: list[str] = field(default_factory=list)


class ResponseStream:
    """Builds one response's event sequence. See the module docstring for the guarantees.

    ``model`` is echoed as the client asked for it; ``request`` (the client's Responses body) supplies
    ``tool_choice``/``parallel_tool_calls`` for the response object.
    """

    def __init__(self, model: str, request: dict[str, Any] | None = None, *, response_id: str | None = None):
        self.id = response_id or new_id("resp")
        self.model = model
        self.created_at = int(time.time())
        request = request or {}
        choice = request.get("tool_choice", "auto")
        self._tool_choice = choice if isinstance(choice, str) else "auto"
        parallel = request.get("parallel_tool_calls", True)
        self._parallel = parallel if isinstance(parallel, bool) else True
        self._seq = 0
        self._events: list[Event] = []
        self._open: dict[int, _Item] = {}
        self._output: list[dict[str, Any] | None] = []
        self.status = "in_progress"
        self.terminal: str | None = None
        self.usage: dict[str, Any] | None = None
        self._error: dict[str, Any] | None = None
        self._incomplete: dict[str, Any] | None = None
        self.started = False

    # -- plumbing ---------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        event["sequence_number"] = self._seq
        self._seq += 1
        self._events.append(event)

    def take(self) -> list[Event]:
        """Return the events produced since the last call and forget them."""
        events, self._events = self._events, []
        return events

    def response(self) -> dict[str, Any]:
        """The response object as it stands (the final one after a terminal event)."""
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "model": self.model,
            "output": [item for item in self._output if item is not None],
            "parallel_tool_calls": self._parallel,
            "tool_choice": self._tool_choice,
            "tools": [],
            "error": self._error,
            "incomplete_details": self._incomplete,
            "usage": self.usage,
        }

    @property
    def has_output(self) -> bool:
        """Whether any item has been opened (the stream carries real content)."""
        return bool(self._output)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Emit ``response.created`` and ``response.in_progress`` (once)."""
        if self.started:
            return
        self.started = True
        self._emit({"type": "response.created", "response": self.response()})
        self._emit({"type": "response.in_progress", "response": self.response()})

    def keepalive(self) -> None:
        """Emit a ``response.in_progress`` event: a real JSON event resets Codex's idle timer."""
        self.start()
        self._emit({"type": "response.in_progress", "response": self.response()})

    # -- items --------------------------------------------------------------------------------

    def open_item(
        self,
        kind: ItemKind,
        *,
        call_id: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
    ) -> int:
        """Open an output item and return its ``output_index``."""
        self.start()
        index = len(self._output)
        item_id = new_id(_ID_PREFIX[kind])
        data: dict[str, Any]
        if kind == "message":
            data = {
                "id": item_id,
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
        elif kind == "reasoning":
            data = {"id": item_id, "type": "reasoning", "summary": [], "status": "in_progress"}
        elif kind == "function_call":
            data = {
                "id": item_id,
                "type": "function_call",
                "status": "in_progress",
                "call_id": call_id or new_id("call"),
                "name": name or "",
                "arguments": "",
            }
            if namespace:
                data["namespace"] = namespace
        else:
            data = {
                "id": item_id,
                "type": "custom_tool_call",
                "status": "in_progress",
                "call_id": call_id or new_id("call"),
                "name": name or "",
                "input": "",
            }
            if namespace:
                data["namespace"] = namespace
        item = _Item(kind, index, item_id, data)
        self._open[index] = item
        self._output.append(None)
        self._emit({"type": "response.output_item.added", "output_index": index, "item": dict(data)})
        if kind == "message":
            self._emit(
                {
                    "type": "response.content_part.added",
                    "item_id": item_id,
                    "output_index": index,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                }
            )
        elif kind == "reasoning":
            self._emit(
                {
                    "type": "response.reasoning_summary_part.added",
                    "item_id": item_id,
                    "output_index": index,
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                }
            )
        return index

    def delta(self, index: int, text: str) -> None:
        """Append ``text`` to the open item ``index`` (text, reasoning summary, arguments or input)."""
        if not text:
            return
        item = self._open[index]
        item.parts.append(text)
        base = {"item_id": item.id, "output_index": index, "delta": text}
        if item.kind == "message":
            self._emit({"type": "response.output_text.delta", **base, "content_index": 0, "logprobs": []})
        elif item.kind == "reasoning":
            self._emit({"type": "response.reasoning_summary_text.delta", **base, "summary_index": 0})
        elif item.kind == "function_call":
            self._emit({"type": "response.function_call_arguments.delta", **base})
        else:
            self._emit({"type": "response.custom_tool_call_input.delta", **base})

    def is_open(self, index: int) -> bool:
        """Whether item ``index`` is still open."""
        return index in self._open

    def item(self, index: int) -> dict[str, Any]:
        """The open item's data (for setting fields such as ``encrypted_content`` before closing)."""
        return self._open[index].data

    def close_item(self, index: int, *, status: str = "completed") -> None:
        """Close item ``index``: emit its ``…done`` events and ``output_item.done`` with the full item."""
        item = self._open.pop(index)
        text = "".join(item.parts)
        data = item.data
        data["status"] = status
        if item.kind == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            data["content"] = [part]
            self._emit(
                {
                    "type": "response.output_text.done",
                    "item_id": item.id,
                    "output_index": index,
                    "content_index": 0,
                    "text": text,
                    "logprobs": [],
                }
            )
            self._emit(
                {
                    "type": "response.content_part.done",
                    "item_id": item.id,
                    "output_index": index,
                    "content_index": 0,
                    "part": part,
                }
            )
        elif item.kind == "reasoning":
            summary = {"type": "summary_text", "text": text}
            data["summary"] = [summary] if text else []
            self._emit(
                {
                    "type": "response.reasoning_summary_text.done",
                    "item_id": item.id,
                    "output_index": index,
                    "summary_index": 0,
                    "text": text,
                }
            )
            self._emit(
                {
                    "type": "response.reasoning_summary_part.done",
                    "item_id": item.id,
                    "output_index": index,
                    "summary_index": 0,
                    "part": summary,
                }
            )
        elif item.kind == "function_call":
            data["arguments"] = text
            self._emit(
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": item.id,
                    "output_index": index,
                    "name": data["name"],
                    "arguments": text,
                }
            )
        else:
            data["input"] = text
            self._emit(
                {
                    "type": "response.custom_tool_call_input.done",
                    "item_id": item.id,
                    "output_index": index,
                    "input": text,
                }
            )
        self._output[index] = data
        self._emit({"type": "response.output_item.done", "output_index": index, "item": data})

    # -- terminal events -------------------------------------------------------------------------

    def _finish(self, status: str, event_type: str, *, close_status: str | None) -> None:
        self.start()
        for index in list(self._open):
            if close_status is None:
                # A failed response must not hand clients half-built items (a cut tool call could run).
                del self._open[index]
            else:
                self.close_item(index, status=close_status)
        self.status = status
        self.terminal = event_type
        self._emit({"type": event_type, "response": self.response()})

    def complete(self, usage: dict[str, Any] | None = None) -> None:
        """Close open items and emit ``response.completed``."""
        self.usage = usage
        self._finish("completed", "response.completed", close_status="completed")

    def incomplete(self, reason: str, usage: dict[str, Any] | None = None) -> None:
        """Close open items as incomplete and emit ``response.incomplete`` with ``reason``."""
        self.usage = usage
        self._incomplete = {"reason": reason}
        self._finish("incomplete", "response.incomplete", close_status="incomplete")

    def fail(self, message: str, *, code: str = "server_error", usage: dict[str, Any] | None = None) -> None:
        """Drop open items and emit ``response.failed`` with ``error``.

        ``code`` outside :data:`~ccx_asgi.upstream_errors.RESPONSE_ERROR_CODES` (the SDK's codes and
        the two Codex stops a turn for) becomes ``server_error`` (clients retry it).
        """
        self.usage = usage
        self._error = {"code": code if code in RESPONSE_ERROR_CODES else "server_error", "message": message}
        self._finish("failed", "response.failed", close_status=None)
