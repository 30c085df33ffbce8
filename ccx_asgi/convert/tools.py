"""Pieces shared by every converted channel (Chat and Claude): tools and tool-call history.

- :class:`ToolCatalog` flattens the client's ``tools`` into plain functions an upstream accepts:
  ``function`` tools as they are, ``custom`` (freeform, e.g. Codex's ``apply_patch``) as a function
  with one string argument ``input``, and ``namespace`` groups (their function and custom members)
  as ``<namespace>__<name>``. It remembers the mapping so upstream calls are turned back into
  ``custom_tool_call`` or ``function_call`` items with their ``namespace`` restored. Hosted tools
  are dropped.
- :func:`pair_tool_calls` repairs a history so every call has exactly one output right after its
  call group and every output has its call — strict upstreams reject anything else.
- :func:`resolve_tool_choice` reads a ``tool_choice`` (``allowed_tools`` included, through
  :func:`allowed_tools`) into a neutral :class:`ToolChoice`; :func:`history_call` reads a call item
  of the history. Each dialect only renders these in its own wire shape.
- :meth:`ToolCatalog.client_tool` says how an upstream call reopens for the client.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import orjson

from ccx_asgi.convert.common import debug_once
from ccx_asgi.errors import InvalidRequestError

__all__ = [
    "CUSTOM_INPUT_SCHEMA",
    "INTERRUPTED_OUTPUT",
    "NAMESPACE_SEPARATOR",
    "HistoryCall",
    "ToolCatalog",
    "ToolChoice",
    "ToolSpec",
    "allowed_tools",
    "custom_input",
    "history_call",
    "output_parts",
    "pair_tool_calls",
    "request_tools",
    "resolve_tool_choice",
    "tool_messages_as_outputs",
    "upstream_tool_name",
]

#: The parameters schema of a converted ``custom`` tool: one raw string.
CUSTOM_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "input": {"type": "string", "description": "The raw input for this tool, exactly as it should be applied."}
    },
    "required": ["input"],
    "additionalProperties": False,
}
#: The output given to a tool call whose result never arrived (an interrupted turn).
INTERRUPTED_OUTPUT = "[no output: the tool call was interrupted before it returned]"

_CALL_TYPES = frozenset({"function_call", "custom_tool_call"})
_OUTPUT_TYPES = frozenset({"function_call_output", "custom_tool_call_output"})
_NAME_OK = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9_-]")
NAMESPACE_SEPARATOR = "__"


def upstream_tool_name(name: str, namespace: str | None = None) -> str:
    """The name a tool gets upstream: ``namespace__name``, made to fit ``[A-Za-z0-9_-]{1,64}``.

    Names that need changing get a short hash of the original so two long or odd names never collide.
    """
    full = f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name
    if _NAME_OK.match(full):
        return full
    digest = hashlib.sha1(full.encode(), usedforsecurity=False).hexdigest()[:8]
    cleaned = _NAME_BAD_CHARS.sub("_", full)[:55] or "tool"
    return f"{cleaned}_{digest}"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool as the upstream sees it, and who it really is for the client."""

    upstream_name: str
    name: str
    kind: Literal["function", "custom"]
    namespace: str | None
    description: str
    parameters: dict[str, Any]
    strict: bool | None = None


def _custom_description(tool: dict[str, Any]) -> str:
    description = str(tool.get("description") or "")
    fmt = tool.get("format")
    note = (
        "\n\nThis is a freeform tool: put the raw text in the `input` argument (not JSON, not "
        "wrapped in quotes or code fences)."
    )
    if isinstance(fmt, dict) and fmt.get("type") == "grammar" and fmt.get("definition"):
        note += f"\nThe input must match this {fmt.get('syntax', 'lark')} grammar:\n{fmt['definition']}"
    return description + note


def _function_spec(tool: dict[str, Any], namespace: str | None = None) -> ToolSpec | None:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        return None
    params = tool.get("parameters")
    strict = tool.get("strict")
    return ToolSpec(
        upstream_tool_name(name, namespace),
        name,
        "function",
        namespace,
        str(tool.get("description") or ""),
        params if isinstance(params, dict) else {"type": "object", "properties": {}},
        strict if isinstance(strict, bool) else None,
    )


def _custom_spec(tool: dict[str, Any], namespace: str | None = None) -> ToolSpec | None:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        return None
    return ToolSpec(
        upstream_tool_name(name, namespace), name, "custom", namespace, _custom_description(tool), CUSTOM_INPUT_SCHEMA
    )


@dataclass(slots=True)
class ToolCatalog:
    """The client's tools flattened for an upstream; see the module docstring."""

    specs: list[ToolSpec] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    _by_upstream: dict[str, ToolSpec] = field(default_factory=dict)

    @classmethod
    def from_tools(cls, tools: Any) -> ToolCatalog:
        """Build the catalog from a Responses ``tools`` array (anything else gives an empty one)."""
        catalog = cls()
        for tool in tools if isinstance(tools, list) else ():
            if not isinstance(tool, dict):
                continue
            kind = tool.get("type")
            if kind == "function":
                catalog._add(_function_spec(tool))
            elif kind == "custom":
                catalog._add(_custom_spec(tool))
            elif kind == "namespace" and isinstance(tool.get("name"), str):
                # Codex's "responses lite" shape (gpt-6*) puts its code-mode tool `exec` here as a
                # custom member of the `functions` namespace, beside plain functions.
                members = tool.get("tools")
                for member in members if isinstance(members, list) else ():
                    member_kind = member.get("type", "function") if isinstance(member, dict) else None
                    if member_kind == "function":
                        catalog._add(_function_spec(member, tool["name"]))
                    elif member_kind == "custom":
                        catalog._add(_custom_spec(member, tool["name"]))
                    else:
                        catalog.dropped.append(f"{tool['name']}.{member_kind}")
            else:
                catalog.dropped.append(str(kind))
        return catalog

    def _add(self, spec: ToolSpec | None) -> None:
        if spec is not None and spec.upstream_name not in self._by_upstream:
            self._by_upstream[spec.upstream_name] = spec
            self.specs.append(spec)

    def resolve(self, upstream_name: str) -> ToolSpec | None:
        """The tool an upstream call name refers to (``None`` for a name the client never offered)."""
        return self._by_upstream.get(upstream_name)

    def has(self, name: str, namespace: str | None = None) -> bool:
        """Whether the client's tool ``name`` (in ``namespace``) survived flattening."""
        return upstream_tool_name(name, namespace) in self._by_upstream

    def client_tool(self, upstream_name: str) -> tuple[Literal["function_call", "custom_tool_call"], str, str | None]:
        """``(item type, name, namespace)`` an upstream call reopens as for the client.

        A ``custom_tool_call`` takes the raw text of the call's ``input`` argument
        (:func:`custom_input`); a name the client never offered stays a plain ``function_call``.
        """
        spec = self._by_upstream.get(upstream_name)
        if spec is None:
            return "function_call", upstream_name, None
        return ("custom_tool_call" if spec.kind == "custom" else "function_call"), spec.name, spec.namespace


def custom_input(arguments: str) -> str:
    """The raw text of a converted custom tool call from its JSON ``arguments``.

    Models sometimes answer with the raw text itself instead of JSON; that text is used as it is.
    """
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get("input"), str):
        return str(parsed["input"])
    return arguments if not isinstance(parsed, str) else parsed


def output_parts(output: Any) -> tuple[str, list[dict[str, Any]]]:
    """Split a tool output (a string, or an array of ``input_text``/``input_image`` parts).

    Returns the joined text and the image parts (each with ``image_url`` and maybe ``detail``).
    """
    if isinstance(output, str):
        return output, []
    if not isinstance(output, list):
        return ("" if output is None else orjson.dumps(output).decode()), []
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for part in output:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            images.append(part)
    return "\n".join(texts), images


def _orphan_message(item: dict[str, Any]) -> dict[str, Any]:
    text, _ = output_parts(item.get("output"))
    return {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": f"[output of tool call {item.get('call_id')}]\n{text}"}],
    }


def _answers(items: list[dict[str, Any]]) -> dict[str, int]:
    """``call_id`` → position of the output that answers it: the first output after the call."""
    called: set[str] = set()
    answers: dict[str, int] = {}
    for position, item in enumerate(items):
        kind = item.get("type", "message")
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            continue
        if kind in _CALL_TYPES:
            called.add(call_id)
        elif kind in _OUTPUT_TYPES and call_id in called and call_id not in answers:
            answers[call_id] = position
    return answers


def pair_tool_calls(items: Iterable[Any]) -> list[dict[str, Any]]:
    """Repair tool-call pairing in a Responses ``input`` list, deterministically.

    - an output that comes later than its call group (a message in between, such as Codex's
      warning about ``apply_patch`` run through the shell) moves up to right after the group, and
      what was between follows it, so the upstream sees the real output;
    - a call without an output (an interrupted turn) gets :data:`INTERRUPTED_OUTPUT` right after
      its group of calls;
    - an output whose call never came before it (or was already answered) becomes a user message
      carrying its text, so nothing is lost; met inside a call group, it follows the group;
    - a call that comes after an output starts a new group;
    - a repeated call with an id already used is dropped (upstreams reject duplicate ids);
    - non-dict items and items whose ``type`` is not a string are dropped.
    The input is not mutated; items that need no change are returned as the same objects.
    """
    # A malformed item ("type": [] …) could not be sent to any upstream either.
    valid = [item for item in items if isinstance(item, dict) and isinstance(item.get("type", "message"), str)]
    answers = _answers(valid)
    moved = set(answers.values())
    out: list[dict[str, Any]] = []
    group: dict[str, dict[str, Any]] = {}  # call_id -> call, in the open call group
    used: set[str] = set()
    orphans: list[dict[str, Any]] = []  # orphan outputs met inside the open group

    def close_group() -> None:
        positions = sorted(answers[call_id] for call_id in group if call_id in answers)
        out.extend(valid[position] for position in positions)
        for call_id, call in group.items():
            if call_id not in answers:
                kind = "custom_tool_call_output" if call.get("type") == "custom_tool_call" else "function_call_output"
                out.append({"type": kind, "call_id": call_id, "output": INTERRUPTED_OUTPUT})
        group.clear()
        out.extend(orphans)
        orphans.clear()

    for position, item in enumerate(valid):
        kind = item.get("type", "message")
        if kind in _CALL_TYPES:
            call_id = item.get("call_id")
            if isinstance(call_id, str) and call_id not in used:
                used.add(call_id)
                group[call_id] = item
                out.append(item)
            continue
        if kind in _OUTPUT_TYPES:
            if position not in moved:
                (orphans if group else out).append(_orphan_message(item))
            elif group:
                close_group()  # the outputs of the group start here (this one is among them)
            continue
        if kind == "reasoning" and group:
            # Reasoning between calls belongs to the same assistant turn; keep order.
            out.append(item)
            continue
        close_group()
        out.append(item)
    close_group()
    return out


def allowed_tools(choice: Any, catalog: ToolCatalog) -> list[ToolSpec] | None:
    """The tools a ``tool_choice: {type: allowed_tools, tools: [...]}`` permits, in catalog order.

    ``None`` for any other choice. Entries name ``function``/``custom`` tools (with their
    ``namespace``) or whole ``namespace`` groups; hosted tools are not in the catalog anyway.
    """
    if not (isinstance(choice, dict) and choice.get("type") == "allowed_tools"):
        return None
    listed = choice.get("tools")
    if listed is not None and not isinstance(listed, list):
        raise InvalidRequestError(
            "'tool_choice.tools' must be an array of tools.", param="tool_choice.tools", code="invalid_type"
        )
    names: set[str] = set()
    namespaces: set[str] = set()
    for tool in listed or ():
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str):
            continue
        if tool.get("type") == "namespace":
            namespaces.add(name)
        elif tool.get("type") in ("function", "custom"):
            namespace = tool.get("namespace")
            names.add(upstream_tool_name(name, namespace if isinstance(namespace, str) and namespace else None))
    return [
        spec
        for spec in catalog.specs
        if spec.upstream_name in names or (spec.namespace is not None and spec.namespace in namespaces)
    ]


def request_tools(body: dict[str, Any]) -> list[Any]:
    """Every tool the request offers: ``tools`` plus those of ``additional_tools`` input items
    (Codex's "responses lite" request shape moves tools there)."""
    tools = list(body["tools"]) if isinstance(body.get("tools"), list) else []
    items = body.get("input")
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and item.get("type") == "additional_tools" and isinstance(item.get("tools"), list):
            tools.extend(item["tools"])
    return tools


def tool_messages_as_outputs(items: list[Any]) -> list[Any]:
    """Chat-style tool answers (a message with a ``tool_call_id``) as ``function_call_output`` items,
    so that :func:`pair_tool_calls` sees them: unpaired, they would be rejected upstream.

    Only the Chat dialect applies it: on Claude channels such a message has always been sent as a
    user message, and that is kept.
    """
    out = []
    for item in items:
        call_id = item.get("tool_call_id") if isinstance(item, dict) else None
        if isinstance(call_id, str) and call_id and item.get("type", "message") == "message":
            text, _ = output_parts(item.get("content"))
            item = {"type": "function_call_output", "call_id": call_id, "output": text}
        out.append(item)
    return out


class HistoryCall(NamedTuple):
    """A ``function_call`` or ``custom_tool_call`` item of the history, as every dialect sends it."""

    #: The upstream name (``namespace__name``, see :func:`upstream_tool_name`).
    name: str
    #: The raw input of a custom tool call (sent as the ``input`` argument); ``None`` for a function call.
    custom_input: str | None


def history_call(item: dict[str, Any]) -> HistoryCall:
    """Read a call item of the history (a missing name becomes ``tool``)."""
    name = item.get("name")
    namespace = item.get("namespace")
    upstream = upstream_tool_name(
        name if isinstance(name, str) and name else "tool",
        namespace if isinstance(namespace, str) and namespace else None,
    )
    if item.get("type") == "custom_tool_call":
        raw = item.get("input")
        return HistoryCall(upstream, raw if isinstance(raw, str) else "")
    return HistoryCall(upstream, None)


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """A Responses ``tool_choice`` resolved against the catalog, before a dialect renders it.

    ``mode`` is ``auto``, ``none``, ``required`` (some tool) or ``tool`` (the tool whose upstream
    name is ``name``); ``allowed`` is the non-empty restriction of an ``allowed_tools`` choice.
    """

    mode: Literal["auto", "none", "required", "tool"]
    name: str | None = None
    allowed: list[ToolSpec] | None = None


def resolve_tool_choice(choice: Any, catalog: ToolCatalog, *, offered_to: str, channels: str) -> ToolChoice:
    """Read ``tool_choice`` (of a request whose catalog has tools) into a :class:`ToolChoice`.

    Anything that cannot be honoured (a hosted tool, a tool that was dropped, an unknown value)
    falls back to ``auto``; an ``allowed_tools`` choice none of whose tools reach the upstream is
    ``none`` (the tools stay offered: earlier calls need them), or a 400 when it requires a call
    (``offered_to`` and ``channels`` name the upstream in that message).
    """
    if isinstance(choice, str) and choice in ("auto", "none", "required"):
        return _CHOICES[choice]
    if choice is None:
        return _CHOICES["auto"]
    if (
        isinstance(choice, dict)
        and choice.get("type") in ("function", "custom")
        and isinstance(choice.get("name"), str)
    ):
        namespace = choice.get("namespace") if isinstance(choice.get("namespace"), str) else None
        if catalog.has(choice["name"], namespace):
            return ToolChoice("tool", upstream_tool_name(choice["name"], namespace))
        debug_once("tool_choice naming a tool the upstream does not get")
        return _CHOICES["auto"]
    allowed = allowed_tools(choice, catalog)
    if allowed is None:
        debug_once(f"tool_choice {choice!r}")
        return _CHOICES["auto"]
    mode: Literal["auto", "required"] = "required" if choice.get("mode") == "required" else "auto"
    if allowed:
        return ToolChoice(mode, allowed=allowed)
    if mode == "required":
        raise InvalidRequestError(
            f"tool_choice.tools: none of the allowed tools can be offered to {offered_to} "
            f"(hosted tools are not available on {channels} channels), so a tool call cannot be required.",
            param="tool_choice.tools",
            code="invalid_value",
        )
    return _CHOICES["none"]  # nothing the model may call


_CHOICES = {mode: ToolChoice(mode) for mode in ("auto", "none", "required")}
