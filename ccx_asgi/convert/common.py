"""Small request-side helpers every converted channel (Chat and Claude) needs.

- :func:`input_items` turns a Responses ``input`` (a string or an item list) into a list of items;
- :func:`content_parts` iterates a message's content as ``(kind, part)`` pairs with ``kind`` one of
  ``"text"``, ``"image"``, ``"file"``, ``"audio"`` or ``"other"``;
- :func:`check_parts` finds the first image, file or audio part of a request a channel cannot send
  and answers 400 naming it (``input[3].content[1]``), instead of a silent drop;
- :func:`parse_data_url` splits a ``data:`` image URL into media type and base64 payload;
- :class:`ConversionError` is an upstream answer a dialect cannot read;
- :class:`PerChannel` builds a dialect's options once per channel configuration.

Effort levels and thinking limits live in :mod:`ccx_asgi.convert.effort`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from ccx_asgi.errors import InvalidRequestError

if TYPE_CHECKING:
    from ccx_asgi.settings import ChannelConfig

__all__ = [
    "ConversionError",
    "PartKind",
    "PartProblem",
    "PerChannel",
    "check_parts",
    "content_parts",
    "debug_once",
    "input_items",
    "openai_state_fields",
    "parse_data_url",
    "reject_openai_state",
    "unresolved_file",
    "wants_background",
]

logger = logging.getLogger("ccx_asgi.convert")

PartKind = Literal["text", "image", "file", "audio", "other"]
#: ``(role, part) -> why the channel cannot send it`` (``None`` when it can); ``role`` is ``"tool"``
#: for the parts of a tool output.
PartProblem = Callable[[str, dict[str, Any]], str | None]

#: Request fields whose state lives at OpenAI, with why no converted channel can honour them. The one
#: list: the stateful layer keeps only native candidates for them, and the converters refuse them.
OPENAI_STATE_FIELDS: Mapping[str, str] = {
    "prompt": "prompt templates are stored at OpenAI; send the prompt as instructions and input",
    "conversation": "conversations are stored at OpenAI; send the history as input items",
    "background": "background responses are not available on this channel; stream the request instead",
}


def wants_background(body: Mapping[str, Any]) -> bool:
    """Whether the request asks for a background response; 400 ``invalid_type`` unless ``background``
    is a boolean (or absent/null). The one check of the field for every channel kind."""
    value = body.get("background")
    if value is None or value is False:
        return False
    if value is True:
        return True
    raise InvalidRequestError("'background' must be a boolean.", param="background", code="invalid_type")


def openai_state_fields(body: Mapping[str, Any]) -> list[str]:
    """The fields of :data:`OPENAI_STATE_FIELDS` that ``body`` sets (``background`` only when true)."""
    fields = ["background"] if wants_background(body) else []
    fields.extend(name for name in ("conversation", "prompt") if body.get(name) is not None)
    return fields


def reject_openai_state(body: Mapping[str, Any]) -> None:
    """Raise a 400 naming the first :data:`OPENAI_STATE_FIELDS` field ``body`` sets: a converter
    must never answer as if it had honoured one."""
    for name in openai_state_fields(body):
        raise InvalidRequestError(f"{name}: {OPENAI_STATE_FIELDS[name]}.", param=name, code="unsupported_parameter")


_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})
_logged: set[str] = set()
_T = TypeVar("_T")


class ConversionError(ValueError):
    """An upstream answer that cannot be read in its dialect (not a completion, not a message …)."""


class PerChannel(Generic[_T]):
    """A value derived from a channel configuration, built once per configuration object.

    Channel configurations are frozen, so what is derived from one never changes; keying by identity
    (the entry holds the configuration, so its ``id`` cannot be reused while cached) avoids hashing
    their dict and list fields on every request. At most ``size`` configurations are kept.
    """

    def __init__(self, build: Callable[[ChannelConfig], _T], size: int = 256) -> None:
        self._build = build
        self._size = size
        self._cache: dict[int, tuple[object, _T]] = {}

    def get(self, channel: ChannelConfig) -> _T:
        """The value for ``channel``, built on first use."""
        entry = self._cache.get(id(channel))
        if entry is not None and entry[0] is channel:
            return entry[1]
        value = self._build(channel)
        if len(self._cache) >= self._size:
            self._cache.clear()
        self._cache[id(channel)] = (channel, value)
        return value


def debug_once(what: str) -> None:
    """Log ``what`` (something deliberately dropped in conversion) once per process at debug level."""
    if what not in _logged and len(_logged) < 1024:
        _logged.add(what)
        logger.debug("dropped in conversion: %s", what)


def input_items(value: Any) -> list[Any]:
    """The ``input`` of a Responses request as a list of items (a string becomes one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}] if value else []
    return value if isinstance(value, list) else []


def content_parts(content: Any) -> Iterator[tuple[PartKind, dict[str, Any]]]:
    """The parts of a message's ``content`` (a string or a part list), classified.

    Text parts are yielded as ``("text", part)`` with ``part["text"]`` a string (possibly empty: the
    caller decides whether empty text is allowed upstream); images as ``("image", part)`` with
    ``part["image_url"]`` a string.
    """
    if isinstance(content, str):
        yield "text", {"type": "input_text", "text": content}
        return
    if not isinstance(content, list):
        return
    for part in content:
        if isinstance(part, str):
            yield "text", {"type": "input_text", "text": part}
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if not isinstance(kind, str):  # a malformed part (e.g. "type": []) would not even hash
            yield "other", part
        elif kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            yield "text", part
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            yield "text", {"type": "output_text", "text": part["refusal"]}
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            yield "image", part
        elif kind == "input_file":
            yield "file", part
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            yield "audio", part
        else:
            yield "other", part


_MEDIA_PARTS = frozenset({"input_image", "input_file", "input_audio"})
_OUTPUT_ITEMS = frozenset({"function_call_output", "custom_tool_call_output"})


def unresolved_file(part: dict[str, Any]) -> str | None:
    """Why ``part`` cannot be sent anywhere: an uploaded-file reference (``file_id``) with no inline
    data or URL. The gateway has no Files API to resolve such ids against."""
    kind = part.get("type")
    if kind == "input_image" and not isinstance(part.get("image_url"), str):
        if part.get("file_id"):
            return (
                f"input_image refers to the uploaded file {part['file_id']!r}, which this gateway cannot "
                "resolve; send the image inline as image_url (a data: URL or an https URL)"
            )
        return "input_image has no image_url"
    if kind == "input_file" and not (isinstance(part.get("file_data"), str) or isinstance(part.get("file_url"), str)):
        if part.get("file_id"):
            return (
                f"input_file refers to the uploaded file {part['file_id']!r}, which this gateway cannot "
                "resolve; send the file inline as file_data (a data: URL) or as file_url"
            )
        return "input_file has no file_data or file_url"
    return None


def check_parts(items: Any, problem: PartProblem) -> None:
    """Raise :class:`~ccx_asgi.errors.InvalidRequestError` for the first image, file or audio part of
    ``items`` (message contents and tool outputs) that ``problem`` refuses, naming its place."""
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            field, role = "content", str(item.get("role") or "user")
        elif isinstance(kind, str) and kind in _OUTPUT_ITEMS:
            field, role = "output", "tool"
        else:
            continue
        parts = item.get(field)
        if not isinstance(parts, list):
            continue
        for j, part in enumerate(parts):
            if isinstance(part, dict) and isinstance(part.get("type"), str) and part["type"] in _MEDIA_PARTS:
                reason = unresolved_file(part) or problem(role, part)
                if reason is not None:
                    where = f"input[{i}].{field}[{j}]"
                    raise InvalidRequestError(f"{where}: {reason}.", param=where, code="invalid_value")


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64_data)`` of a base64 ``data:`` URL, else ``None``."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    media_type = header[: -len(";base64")].split(";")[0].strip().lower() or "application/octet-stream"
    return media_type, data
