"""The app over real HTTP (uvicorn), against a fake upstream that is itself a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr

from ccx_asgi import ChannelConfig, create_app, load_settings
from ccx_asgi.convert.events import ResponseStream, usage_dict
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.sdk import parse_sse, validate_events
from tests.servers import serve

KEY = "real-http-key"


def _slow_script(body: dict[str, Any]) -> ResponseStream:
    stream = ResponseStream(body["model"], body)
    index = stream.open_item("message")
    for word in ("one ", "two ", "three ", "four ", "five"):
        stream.delta(index, word)
    stream.complete(usage_dict(5, 5))
    return stream


@pytest.fixture
def gateway() -> Iterator[tuple[str, FakeResponsesUpstream]]:
    upstream = FakeResponsesUpstream(keys=("sk-up",), script=_slow_script, delay=0.15)
    with serve(upstream) as upstream_url:
        settings = load_settings(
            proxy_access_key=KEY,
            max_body_mb=0.05,
            channels=[
                ChannelConfig(name="up", service_type="responses", base_url=upstream_url, api_keys=[SecretStr("sk-up")])
            ],
        )
        app = create_app(settings)
        with serve(app) as url:
            yield f"{url}", upstream


def test_events_arrive_before_the_upstream_finishes(gateway: tuple[str, FakeResponsesUpstream]) -> None:
    url, _ = gateway
    arrivals: list[tuple[float, bytes]] = []
    start = time.perf_counter()
    with httpx.stream(
        "POST", f"{url}/responses", json={"model": "m", "input": "count", "stream": True},
        headers={"authorization": f"Bearer {KEY}"}, timeout=30,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        for chunk in response.iter_raw():
            arrivals.append((time.perf_counter() - start, chunk))
    events = parse_sse(b"".join(c for _, c in arrivals))
    validate_events(events)
    total = arrivals[-1][0]
    first_delta = next(t for t, c in arrivals if b"response.output_text.delta" in c)
    # The upstream needs ~13 events x 0.15 s; the first text must reach us long before it is done.
    assert total > 1.2
    assert first_delta < total - 0.6, (first_delta, total)
    assert len(arrivals) >= 5, "the stream was buffered into a few large chunks"


def test_sdk_stream_helper_completes(gateway: tuple[str, FakeResponsesUpstream]) -> None:
    url, upstream = gateway
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
    with client.responses.stream(model="gpt-5.5", input="count") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "one two three four five"
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-up"


def test_sdk_create_and_errors_over_http(gateway: tuple[str, FakeResponsesUpstream]) -> None:
    url, _ = gateway
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
    assert client.responses.create(model="m", input="count").output_text == "one two three four five"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).responses.create(model="m", input="x")
    with pytest.raises(openai.APIStatusError) as too_big:
        client.responses.create(model="m", input="x" * 100_000)
    assert too_big.value.status_code == 413
    with pytest.raises(openai.BadRequestError):
        client.post("/responses", body={"input": "no model"}, cast_to=object)


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_auth_headers_over_http(gateway: tuple[str, FakeResponsesUpstream], header: str) -> None:
    url, _ = gateway
    value = f"Bearer {KEY}" if header == "authorization" else KEY
    ok = httpx.post(f"{url}/responses", json={"model": "m", "input": "x"}, headers={header: value}, timeout=30)
    assert ok.status_code == 200
    bad = httpx.post(f"{url}/responses", json={"model": "m", "input": "x"}, headers={header: value + "x"}, timeout=30)
    assert bad.status_code == 401
    assert KEY not in bad.text


def test_json_answer_has_its_length(gateway: tuple[str, FakeResponsesUpstream]) -> None:
    url, _ = gateway
    response = httpx.post(
        f"{url}/responses",
        json={"model": "m", "input": "count"},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert response.status_code == 200
    assert "transfer-encoding" not in response.headers  # framed by length, not chunked
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json()["status"] == "completed"
