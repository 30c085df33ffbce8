"""Claude channels (issue 14, part B): outputs moved next to their calls, files and uploaded-file
references, ``tool_choice: allowed_tools`` — through the whole app and the strict Claude fake."""

from __future__ import annotations

from typing import Any

import pytest

from ccx_asgi.convert.claude import to_request
from tests.channels.test_claude_channel import claude, stream, transport
from tests.conftest import AppFactory
from tests.convert.test_chat_fidelity import ALLOWED, PDF, TOOLS, user, warning_history
from tests.fakes.claude_upstream import FakeClaudeUpstream, Reply, check_request
from tests.fixture_types import ClientFor


async def test_an_output_after_a_message_is_the_tool_result_of_the_next_user_turn(
    make_app: AppFactory, client_for: ClientFor
) -> None:
    fake = FakeClaudeUpstream()
    app = make_app([claude()], transport=transport(fake))
    response, events = await stream(client_for(app), {"model": "m", "input": warning_history(), "tools": TOOLS})
    assert response.status_code == 200, response.text  # the strict fake found the pairing right
    assert events[-1]["type"] == "response.completed"
    messages = fake.requests[0].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    result, warning = messages[2]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "call_sh"
    assert result["content"] == "Success. Updated: hello.txt"
    assert warning["text"].startswith("Warning: apply_patch")


async def test_pdfs_are_document_blocks_with_their_filename(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeClaudeUpstream()
    app = make_app([claude()], transport=transport(fake))
    item = user({"type": "input_file", "filename": "spec.pdf", "file_data": PDF})
    response, _ = await stream(client_for(app), {"model": "m", "input": [item]})
    assert response.status_code == 200, response.text
    document = fake.requests[0].body["messages"][0]["content"][1]
    assert document["type"] == "document" and document["title"] == "spec.pdf"
    assert document["source"] == {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}


@pytest.mark.parametrize(
    ("part", "words"),
    [
        ({"type": "input_file", "file_id": "file-abc"}, "'file-abc'"),
        ({"type": "input_image", "file_id": "file-img"}, "'file-img'"),
        ({"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}, "no audio"),
        ({"type": "input_image", "image_url": "data:image/bmp;base64,Qk0="}, "JPEG, PNG"),
    ],
    ids=["file_id", "image file_id", "audio", "bmp image"],
)
async def test_parts_claude_cannot_take_are_a_400_naming_them(
    part: dict[str, Any], words: str, make_app: AppFactory, client_for: ClientFor
) -> None:
    fake = FakeClaudeUpstream()
    app = make_app([claude()], transport=transport(fake))
    response = await client_for(app).post("/responses", json={"model": "m", "input": [user(part)]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "input[0].content[1]" and words in error["message"]
    assert not fake.requests


async def test_allowed_tools_sends_only_the_allowed_tools(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeClaudeUpstream(script=lambda body: Reply([{"type": "tool_use", "name": "read_file", "input": {}}]))
    app = make_app([claude()], transport=transport(fake))
    response, events = await stream(
        client_for(app), {"model": "m", "input": "x", "tools": TOOLS, "tool_choice": ALLOWED}
    )
    assert response.status_code == 200, response.text
    sent = fake.requests[0].body
    assert [t["name"] for t in sent["tools"]] == ["read_file", "apply_patch"]
    assert sent["tool_choice"] == {"type": "any"}
    assert events[-1]["response"]["output"][0]["name"] == "read_file"


def test_allowed_tools_naming_only_hosted_tools_keeps_the_tools_and_forbids_calls() -> None:
    hosted = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "web_search"}]}
    history = [*warning_history()[:2], warning_history()[3]]
    out = to_request({"model": "m", "input": history, "tools": TOOLS, "tool_choice": hosted}, model="claude-x")
    check_request(out)  # earlier tool_use blocks still have their tools defined
    assert out["tool_choice"] == {"type": "none"} and len(out["tools"]) == 3
