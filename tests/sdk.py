"""Judging our output with the installed ``openai`` SDK's own types (never hand-written shapes)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from ccx_asgi.upstream_errors import CODEX_ERROR_CODES

_EVENT = TypeAdapter(ResponseStreamEvent)
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def _sdk_view(response: dict[str, Any]) -> dict[str, Any]:
    """``response`` as the SDK may judge it.

    The one documented exception: Codex stops a turn only for ``context_length_exceeded`` and
    ``insufficient_quota`` (checked with the real CLI in tests/e2e) and retries every other code, but
    the SDK's ``ResponseError.code`` literal lacks both. Where they disagree Codex decides, so these
    two codes are swapped for an SDK code and everything else in the object is still validated.
    """
    error = response.get("error")
    if isinstance(error, dict) and error.get("code") in CODEX_ERROR_CODES:
        return {**response, "error": {**error, "code": "server_error"}}
    return response


def _sdk_event(event: dict[str, Any]) -> dict[str, Any]:
    response = event.get("response")
    return {**event, "response": _sdk_view(response)} if isinstance(response, dict) else event


def parse_sse(raw: bytes | str) -> list[dict[str, Any]]:
    """Split an SSE body into its JSON events, checking that each ``event:`` line names its type."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if not data:
            continue
        event = orjson.loads("\n".join(data))
        assert name is None or name == event["type"], (name, event["type"])
        events.append(event)
    return events


def validate_events(events: list[dict[str, Any]]) -> list[Any]:
    """Validate every event with the SDK and the stream invariants; return the SDK objects.

    Invariants: one ``response.created`` first, strictly increasing ``sequence_number``, exactly one
    terminal event and it is last, the same response id throughout, every item opened before its
    deltas and closed with ``output_item.done``, and the terminal output lists the closed items.
    """
    parsed = [_EVENT.validate_python(_sdk_event(e)) for e in events]
    assert events, "empty stream"
    assert events[0]["type"] == "response.created", events[0]["type"]
    seqs = [e["sequence_number"] for e in events]
    assert all(b > a for a, b in itertools.pairwise(seqs)), seqs
    terminals = [i for i, e in enumerate(events) if e["type"] in TERMINAL]
    assert terminals == [len(events) - 1], [e["type"] for e in events]
    rid = events[0]["response"]["id"]
    assert all(e["response"]["id"] == rid for e in events if "response" in e)
    opened: dict[str, int] = {}
    done: dict[int, dict[str, Any]] = {}
    for e in events:
        if e["type"] == "response.output_item.added":
            assert e["item"]["id"] not in opened
            opened[e["item"]["id"]] = e["output_index"]
            if e["item"]["type"] in ("function_call", "custom_tool_call"):
                assert e["item"]["name"], "tool call opened without its name"
                assert e["item"]["call_id"]
        elif e["type"] == "response.output_item.done":
            assert opened.get(e["item"]["id"]) == e["output_index"], "item closed but never opened"
            done[e["output_index"]] = e["item"]
        elif "item_id" in e:
            assert e["item_id"] in opened, f"{e['type']} before its output_item.added"
            assert opened[e["item_id"]] not in done, f"{e['type']} after its output_item.done"
    final = events[-1]["response"]
    if events[-1]["type"] != "response.failed":
        assert [item["id"] for item in final["output"]] == [done[i]["id"] for i in sorted(done)]
    Response.model_validate(_sdk_view(final))
    return parsed


def validate_response(data: dict[str, Any]) -> Response:
    """Validate a non-streaming response object with the SDK."""
    return Response.model_validate(_sdk_view(data))
