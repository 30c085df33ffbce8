"""Building valid Responses stream events: the one place item ids and output indexes are made.

Each attempt's stream is numbered here too (so a translator's output is valid on its own); what the
client sees is renumbered in one place, :class:`ccx_asgi.stream.ClientStream`, under the committed
response id.

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

__all__ = ["ItemKind", "ResponseStream", "new_id", "response_echo", "usage_dict"]

#: ``refusal`` is a ``message`` item whose one content part is a ``refusal`` instead of ``output_text``.
ItemKind = Literal["message", "refusal", "reasoning", "function_call", "custom_tool_call"]

_ID_PREFIX = {"message": "msg", "refusal": "msg", "reasoning": "rs", "function_call": "fc", "custom_tool_call": "ctc"}
_TOOL_CHOICE_MODES = frozenset({"none", "auto", "required"})
# Choice objects a converted channel can honour; one naming a hosted tool is served (and echoed) as auto.
_TOOL_CHOICE_TYPES = frozenset({"function", "custom", "allowed_tools"})


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


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def response_echo(request: dict[str, Any]) -> dict[str, Any]:
    """The request settings a response object repeats, as OpenAI echoes them.

    Built once per :class:`ResponseStream` (the request's values are shared, not copied). Absent
    fields take OpenAI's documented defaults where the gateway knows them (``store`` true,
    ``parallel_tool_calls`` true, ``tool_choice`` auto, ``text.format`` text, ``truncation``
    disabled); sampling values the client left out are ``null`` rather than a guess at the
    upstream's default. A ``tool_choice`` naming a hosted tool is echoed as ``auto``, which is how
    converted channels serve it.
    """
    tools = request.get("tools")
    choice = request.get("tool_choice")
    text = request.get("text")
    if isinstance(text, dict):
        text = text if "format" in text else {"format": {"type": "text"}, **text}
    else:
        text = {"format": {"type": "text"}}
    instructions = request.get("instructions")
    metadata = request.get("metadata")
    reasoning = request.get("reasoning")
    store = request.get("store")
    parallel = request.get("parallel_tool_calls")
    max_output = request.get("max_output_tokens")
    top_logprobs = request.get("top_logprobs")
    truncation = request.get("truncation")
    return {
        "instructions": instructions if isinstance(instructions, str | list) else None,
        "max_output_tokens": max_output if isinstance(max_output, int) and not isinstance(max_output, bool) else None,
        "metadata": metadata if isinstance(metadata, dict) else {},
        "parallel_tool_calls": parallel if isinstance(parallel, bool) else True,
        "previous_response_id": _text_or_none(request.get("previous_response_id")),
        "prompt_cache_key": _text_or_none(request.get("prompt_cache_key")),
        "reasoning": reasoning if isinstance(reasoning, dict) else None,
        "safety_identifier": _text_or_none(request.get("safety_identifier")),
        "service_tier": _text_or_none(request.get("service_tier")),
        "store": store if isinstance(store, bool) else True,
        "temperature": _number(request.get("temperature")),
        "text": text,
        "tool_choice": choice
        if (isinstance(choice, str) and choice in _TOOL_CHOICE_MODES)
        or (isinstance(choice, dict) and isinstance(choice.get("type"), str) and choice["type"] in _TOOL_CHOICE_TYPES)
        else "auto",
        "tools": tools if isinstance(tools, list) else [],
        "top_logprobs": top_logprobs if isinstance(top_logprobs, int) and not isinstance(top_logprobs, bool) else None,
        "top_p": _number(request.get("top_p")),
        "truncation": truncation if isinstance(truncation, str) else "disabled",
        "user": _text_or_none(request.get("user")),
    }


@dataclass(slots=True)
class _Item:
    kind: ItemKind
    index: int
    id: str
    data: dict[str, Any]
    parts: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)


class ResponseStream:
    """Builds one response's event sequence. See the module docstring for the guarantees.

    ``model`` is echoed as the client asked for it; ``request`` (the client's Responses body) supplies
    the settings the response object repeats (:func:`response_echo`, built once here).
    """

    def __init__(self, model: str, request: dict[str, Any] | None = None, *, response_id: str | None = None):
        self.id = response_id or new_id("resp")
        self.model = model
        self.created_at = int(time.time())
        self._echo = response_echo(request or {})
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
            **self._echo,
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
        if kind in ("message", "refusal"):
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
        if kind in ("message", "refusal"):
            part = (
                {"type": "refusal", "refusal": ""}
                if kind == "refusal"
                else {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            )
            self._emit(
                {
                    "type": "response.content_part.added",
                    "item_id": item_id,
                    "output_index": index,
                    "content_index": 0,
                    "part": part,
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

    def delta(self, index: int, text: str, logprobs: list[dict[str, Any]] | None = None) -> None:
        """Append ``text`` to the open item ``index`` (text, refusal, reasoning summary, arguments or input).

        ``logprobs`` (message text only) are the tokens of ``text`` in the shape of the final
        ``output_text`` part (``token``, ``logprob``, ``bytes``, ``top_logprobs``).
        """
        if not text:
            return
        item = self._open[index]
        item.parts.append(text)
        base = {"item_id": item.id, "output_index": index, "delta": text}
        if item.kind == "message":
            if logprobs:
                item.logprobs.extend(logprobs)
            self._emit({"type": "response.output_text.delta", **base, "content_index": 0, "logprobs": logprobs or []})
        elif item.kind == "refusal":
            self._emit({"type": "response.refusal.delta", **base, "content_index": 0})
        elif item.kind == "reasoning":
            self._emit({"type": "response.reasoning_summary_text.delta", **base, "summary_index": 0})
        elif item.kind == "function_call":
            self._emit({"type": "response.function_call_arguments.delta", **base})
        else:
            self._emit({"type": "response.custom_tool_call_input.delta", **base})

    def annotate(self, index: int, annotation: dict[str, Any]) -> None:
        """Add an annotation (such as a ``url_citation``) to the text of the open message ``index``."""
        item = self._open[index]
        if item.kind != "message":
            return
        self._emit(
            {
                "type": "response.output_text.annotation.added",
                "item_id": item.id,
                "output_index": index,
                "content_index": 0,
                "annotation_index": len(item.annotations),
                "annotation": annotation,
            }
        )
        item.annotations.append(annotation)

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
        part: dict[str, Any]
        if item.kind == "refusal":
            part = {"type": "refusal", "refusal": text}
            data["content"] = [part]
            self._emit(
                {
                    "type": "response.refusal.done",
                    "item_id": item.id,
                    "output_index": index,
                    "content_index": 0,
                    "refusal": text,
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
        elif item.kind == "message":
            part = {"type": "output_text", "text": text, "annotations": item.annotations, "logprobs": item.logprobs}
            data["content"] = [part]
            self._emit(
                {
                    "type": "response.output_text.done",
                    "item_id": item.id,
                    "output_index": index,
                    "content_index": 0,
                    "text": text,
                    "logprobs": item.logprobs,
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
