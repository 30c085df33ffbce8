"""Role normalisation for upstreams that accept only ``system``/``user``/``assistant``/``tool``."""

from __future__ import annotations

from typing import Any

__all__ = ["normalize_roles"]

_STANDARD = frozenset({"system", "user", "assistant"})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _normalize_item(item: Any) -> Any:
    if not isinstance(item, dict) or item.get("type", "message") != "message":
        return item
    role = item.get("role")
    if isinstance(role, str) and role in _STANDARD:
        return item
    if role == "developer":
        return {**item, "role": "system"}
    call_id = item.get("tool_call_id")
    if isinstance(call_id, str) and call_id:
        # A tool result under a non-standard role: keep it paired with its call.
        return {"type": "function_call_output", "call_id": call_id, "output": _text(item.get("content"))}
    return {**item, "role": "user"}


def normalize_roles(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with ``developer`` → ``system`` and other non-standard roles → ``user``.

    A message that carries a ``tool_call_id`` becomes a ``function_call_output`` (a ``tool`` message
    upstream). The input is never mutated; an unchanged body is returned as the same object.
    """
    items = body.get("input")
    if not isinstance(items, list):
        return body
    changed = [_normalize_item(item) for item in items]
    if all(a is b for a, b in zip(changed, items, strict=True)):
        return body
    return {**body, "input": changed}
