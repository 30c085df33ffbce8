"""The one retry policy: ``errors.RETRY_POLICY`` (kind → retry? park the key?), the kinds
``upstream_errors`` gives upstream answers, and the failover layer acting on nothing else."""

from __future__ import annotations

import httpx
import pytest
import respx

from ccx_asgi import errors
from ccx_asgi.convert.events import ResponseStream
from ccx_asgi.errors import RETRY_POLICY, RetryRule, UpstreamConnectError, UpstreamStatusError
from ccx_asgi.upstream_errors import stream_failure, upstream_status_error
from tests.conftest import AppFactory, channel
from tests.fixture_types import ClientFor

pytestmark = pytest.mark.usefixtures("upstream_via_httpx")


def test_the_table() -> None:
    assert dict(RETRY_POLICY) == {
        "transient": RetryRule(retry=True, park_key=False),
        "rejected_key": RetryRule(retry=True, park_key=True),
        "insufficient_quota": RetryRule(retry=True, park_key=True),
        "context_length_exceeded": RetryRule(retry=False, park_key=False),
        "final": RetryRule(retry=False, park_key=False),
    }


@pytest.mark.parametrize(
    ("status", "code", "message", "failure"),
    [
        (401, None, "invalid api key", "rejected_key"),
        (403, None, "forbidden", "rejected_key"),
        (402, None, "payment required", "insufficient_quota"),
        (429, "insufficient_quota", "You exceeded your current quota", "insufficient_quota"),
        (429, None, "rate limited", "transient"),
        (408, None, "timeout", "transient"),
        (500, None, "boom", "transient"),
        (400, None, "the service is overloaded", "transient"),
        (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum", "context_length_exceeded"),
        (403, None, "maximum context length is 4096 tokens", "context_length_exceeded"),
        (400, "invalid_value", "Invalid 'input'", "final"),
        (404, None, "no such model", "final"),
    ],
)
def test_http_answers_get_their_kind(status: int, code: str | None, message: str, failure: str) -> None:
    error = upstream_status_error("c", status, code, message)
    assert error.failure == failure
    assert error.retryable is RETRY_POLICY[error.failure].retry


def test_in_stream_codes_get_their_kind() -> None:
    assert [stream_failure(c) for c in ("context_length_exceeded", "invalid_prompt", "content_filter")] == ["final"] * 3
    assert stream_failure("insufficient_quota") == "insufficient_quota"
    assert [stream_failure(c) for c in ("server_error", "rate_limit_exceeded", None)] == ["transient"] * 3


def test_park_seconds() -> None:
    def park(error: errors.UpstreamError) -> float | None:
        return error.park_seconds(key_park_seconds=300, max_retry_after=600)

    assert park(upstream_status_error("c", 401, None, "bad key")) == 300
    assert park(upstream_status_error("c", 402, None, "payment required")) == 300
    assert park(upstream_status_error("c", 500, None, "boom")) is None
    # A Retry-After parks any retried key for that long, capped; a final error parks nothing.
    assert park(upstream_status_error("c", 429, None, "slow down", retry_after=30)) == 30
    assert park(upstream_status_error("c", 401, None, "bad key", retry_after=9999)) == 600
    assert park(upstream_status_error("c", 400, "invalid_value", "no", retry_after=30)) is None
    assert park(UpstreamConnectError("refused")) is None
    # Errors built with the plain flag map to the two plain kinds.
    assert UpstreamStatusError("x", retryable=False).failure == "final"
    assert UpstreamStatusError("x").failure == "transient"


def _answer() -> dict[str, object]:
    stream = ResponseStream("m")
    stream.delta(stream.open_item("message"), "hi")
    stream.complete()
    return stream.response()


async def test_failover_acts_on_the_table(
    make_app: AppFactory, client_for: ClientFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_for(
        make_app([channel("a", base_url="https://a.test/v1", priority=1), channel("b", base_url="https://b.test/v1")])
    )

    async def ask() -> tuple[httpx.Response, bool]:
        with respx.mock(assert_all_called=False) as router:
            router.post("https://a.test/v1/responses").mock(return_value=httpx.Response(500, text="down"))
            b = router.post("https://b.test/v1/responses").mock(return_value=httpx.Response(200, json=_answer()))
            return await client.post("/responses", json={"model": "m", "input": "hi"}), b.called

    served, b_called = await ask()
    assert served.headers["x-ccx-channel"] == "b" and b_called
    # The same 500 made final in the table: failover gives it to the client, and tries nothing else.
    monkeypatch.setattr(errors, "RETRY_POLICY", {**RETRY_POLICY, "transient": RetryRule(retry=False, park_key=False)})
    final, b_called = await ask()
    assert final.status_code == 502 and not b_called
    assert final.json()["error"]["message"] == "channel 'a': upstream returned HTTP 500: down"
