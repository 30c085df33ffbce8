"""Plain regression tests for the bugs the property tests found (each named after what broke)."""

from __future__ import annotations

import pytest

from ccx_asgi.convert.chat import to_chat_request
from ccx_asgi.errors import InvalidRequestError


def test_chat_input_with_nothing_to_send_is_a_clear_400() -> None:
    # Found by test_chat_conversion_is_accepted_or_a_clear_400: only a reasoning item (no Chat form)
    # gave ``messages: []``, which every Chat upstream refuses with its own, confusing 400.
    body = {"model": "m", "input": [{"type": "reasoning", "id": "rs_0", "summary": []}]}
    with pytest.raises(InvalidRequestError, match="no instructions or messages") as info:
        to_chat_request(body, model="up")
    assert info.value.status == 400
    assert to_chat_request({**body, "instructions": "be brief"}, model="up")["messages"] == [
        {"role": "system", "content": "be brief"}
    ]
