"""The shared tool flattening and history repair used by every converted channel."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ccx_asgi.convert.tools import (
    INTERRUPTED_OUTPUT,
    ToolCatalog,
    allowed_tools,
    custom_input,
    pair_tool_calls,
    upstream_tool_name,
)
from ccx_asgi.errors import InvalidRequestError
from tests.paths import CODEX_FIXTURES

CODEX = CODEX_FIXTURES


def _load(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((CODEX / name).read_text())
    return body


def test_codex_tools_flatten_and_restore() -> None:
    body = _load("request-custom-slug-turn1.json")
    catalog = ToolCatalog.from_tools(body["tools"])
    names = [s.upstream_name for s in catalog.specs]
    assert "apply_patch" in names
    assert any(n.startswith("multi_agent_v1__") for n in names)
    assert "web_search" in catalog.dropped
    assert all(len(n) <= 64 for n in names)
    namespaced = next(n for n in names if n.startswith("multi_agent_v1__"))
    kind, name, namespace = catalog.client_tool(namespaced)
    assert (kind, namespace) == ("function_call", "multi_agent_v1")
    assert name == namespaced.removeprefix("multi_agent_v1__")
    assert catalog.client_tool("apply_patch") == ("custom_tool_call", "apply_patch", None)
    assert custom_input(json.dumps({"input": "*** Begin Patch\n*** End Patch"})) == "*** Begin Patch\n*** End Patch"
    assert catalog.client_tool("never_offered") == ("function_call", "never_offered", None)
    spec = catalog.resolve("apply_patch")
    assert spec is not None and "lark" in spec.description and spec.parameters["required"] == ["input"]


@pytest.mark.parametrize(
    ("name", "namespace"),
    [("a" * 80, None), ("x.y", None), ("close_agent", "multi agent"), ("n", "ns")],
)
def test_upstream_names_fit_and_are_distinct(name: str, namespace: str | None) -> None:
    flat = upstream_tool_name(name, namespace)
    assert 1 <= len(flat) <= 64
    assert all(c.isalnum() or c in "_-" for c in flat)
    assert flat != upstream_tool_name(name + "2", namespace)


def _call(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"}


def _out(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": "ok"}


def _user(text: str = "hi") -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


def _shape(items: list[dict[str, Any]]) -> list[str]:
    return [
        f"{i.get('type', 'message')}:{i.get('call_id', i.get('role'))}"
        + ("!" if i.get("output") == INTERRUPTED_OUTPUT else "")
        for i in items
    ]


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([_call("a"), _out("a")], ["function_call:a", "function_call_output:a"]),
        ([_call("a"), _call("b"), _out("b"), _out("a")],
         ["function_call:a", "function_call:b", "function_call_output:b", "function_call_output:a"]),
        ([_call("a"), _user()], ["function_call:a", "function_call_output:a!", "message:user"]),
        ([_call("a")], ["function_call:a", "function_call_output:a!"]),
        ([_out("zzz"), _user()], ["message:user", "message:user"]),
        ([_call("a"), _out("a"), _out("a")], ["function_call:a", "function_call_output:a", "message:user"]),
        # A message between a call and its output: the output moves up to its call (issue 14).
        ([_call("a"), _user(), _out("a")], ["function_call:a", "function_call_output:a", "message:user"]),
        ([_call("a"), _call("b"), _out("a"), _user(), _out("b")],
         ["function_call:a", "function_call:b", "function_call_output:a", "function_call_output:b", "message:user"]),
        ([_call("a"), _user(), _call("b"), _out("a"), _out("b")],
         ["function_call:a", "function_call_output:a", "message:user", "function_call:b", "function_call_output:b"]),
        ([_call("a"), _call("b"), _out("a"), _call("c"), _out("b"), _out("c")],
         ["function_call:a", "function_call:b", "function_call_output:a", "function_call_output:b",
          "function_call:c", "function_call_output:c"]),
        ([_out("a"), _call("a"), _out("a")], ["message:user", "function_call:a", "function_call_output:a"]),
        ([_call("a"), _call("a"), _out("a")], ["function_call:a", "function_call_output:a"]),
    ],
)  # fmt: skip
def test_pair_tool_calls(items: list[dict[str, Any]], expected: list[str]) -> None:
    assert _shape(pair_tool_calls(items)) == expected


def test_orphan_output_text_is_kept() -> None:
    repaired = pair_tool_calls([_out("lost")])
    assert "lost" in repaired[0]["content"][0]["text"] and "ok" in repaired[0]["content"][0]["text"]


@pytest.mark.parametrize("members", [True, "exec", {"type": "function", "name": "f"}, None, 3])
def test_a_namespace_whose_tools_is_not_a_list_offers_nothing(members: object) -> None:
    # Found by the malformed-body property (a 500 from iterating `True`): a malformed namespace is
    # skipped like any other unusable tool, and the well-formed tools beside it stay.
    tools = [
        {"type": "namespace", "name": "ns", "tools": members},
        {"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {}}},
    ]
    catalog = ToolCatalog.from_tools(tools)
    assert [spec.upstream_name for spec in catalog.specs] == ["read_file"]


@pytest.mark.parametrize("listed", [True, "a", {"type": "function", "name": "a"}, 3])
def test_allowed_tools_whose_tools_is_not_a_list_is_a_400(listed: object) -> None:
    # Found by the malformed-body property (a TypeError, so a 500): the client hears which field.
    catalog = ToolCatalog.from_tools([{"type": "custom", "name": "a", "description": "raw text tool"}])
    with pytest.raises(InvalidRequestError) as caught:
        allowed_tools({"type": "allowed_tools", "mode": "auto", "tools": listed}, catalog)
    assert caught.value.param == "tool_choice.tools" and caught.value.status == 400
