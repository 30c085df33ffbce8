"""The structured request log: its fields for success, failover and errors; JSON output; no secrets."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from ccx_asgi.__main__ import StandaloneApp
from ccx_asgi.logs import JSONFormatter
from ccx_asgi.observability import LOG_FIELDS, redact_body
from tests.conftest import PROXY_KEY, UPSTREAM_KEY, AppFactory, channel
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events, validate_response


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ccx_asgi.requests"]


def _fields(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.ccx for r in _records(caplog)]  # type: ignore[attr-defined]


async def _standalone_post(app: Any, body: dict[str, Any], key: str = PROXY_KEY) -> httpx.Response:
    """POST /v1/responses through the standalone root app, so the client path includes the mount."""
    transport = httpx.ASGITransport(app=StandaloneApp(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        response = await client.post("/v1/responses", json=body, headers={"authorization": f"Bearer {key}"})
    await app.aclose()
    return response


async def test_streamed_success_fields(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeResponsesUpstream()
    app = make_app([channel(model_map={"gpt": "upstream-model"})], transport=httpx.ASGITransport(app=fake))
    with caplog.at_level(logging.INFO, logger="ccx_asgi.requests"):
        response = await _standalone_post(app, {"model": "gpt-5", "input": "hi", "stream": True})
    assert response.status_code == 200
    validate_events(parse_sse(response.content))
    [fields] = _fields(caplog)
    assert list(fields) == list(LOG_FIELDS)
    assert fields["request_id"] == response.headers["x-request-id"]
    assert fields["method"] == "POST"
    assert fields["path"] == "/v1/responses"
    assert fields["status"] == 200
    assert fields["model"] == "gpt-5"
    assert fields["stream"] is True
    assert fields["channel"] == "main"
    assert fields["upstream_model"] == "upstream-model"
    assert fake.requests[-1].body["model"] == "upstream-model"
    assert fields["upstream_path"] == "/v1/responses"
    assert fields["attempts"] == 1
    assert fields["failed_attempts"] == []
    assert fields["response_status"] == "completed"
    assert fields["error_code"] is None
    assert 0 < fields["ttfb_ms"] <= fields["duration_ms"]
    # codex_script reports usage_dict(100, 10, cached_tokens=40)
    assert (fields["input_tokens"], fields["output_tokens"], fields["cached_tokens"]) == (100, 10, 40)
    assert fields["reasoning_tokens"] == 0
    message = _records(caplog)[0].getMessage()
    assert "POST /v1/responses 200" in message
    assert "channel=main upstream=upstream-model /v1/responses" in message


async def test_json_answer_usage_and_failover(
    make_app: AppFactory, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeResponsesUpstream()
    channels = [channel("stale", api_keys=["revoked-key-0001"]), channel("main")]
    client = client_for(make_app(channels, transport=httpx.ASGITransport(app=fake)))
    with caplog.at_level(logging.INFO, logger="ccx_asgi.requests"):
        response = await client.post("/responses", json={"model": "m", "input": "hi"})
    assert response.status_code == 200
    validate_response(response.json())
    [fields] = _fields(caplog)
    assert fields["channel"] == "main"
    assert fields["attempts"] == 2
    assert [(f["channel"], f["key_index"], f["status"]) for f in fields["failed_attempts"]] == [("stale", 0, 401)]
    assert fields["stream"] is False
    assert fields["response_status"] == "completed"
    assert (fields["input_tokens"], fields["output_tokens"]) == (100, 10)


async def test_all_channels_failed(
    make_app: AppFactory, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeResponsesUpstream(keys=("someone-else",))
    client = client_for(make_app([channel("a"), channel("b")], transport=httpx.ASGITransport(app=fake)))
    with caplog.at_level(logging.INFO, logger="ccx_asgi.requests"):
        response = await client.post("/responses", json={"model": "m", "input": "hi"})
    assert response.status_code == 503
    [fields] = _fields(caplog)
    assert fields["status"] == 503
    assert fields["error_code"] == "all_channels_failed"
    assert fields["attempts"] == 2
    assert [f["channel"] for f in fields["failed_attempts"]] == ["a", "b"]
    assert fields["channel"] == "b"
    assert fields["upstream_model"] == "m"
    assert fields["ttfb_ms"] is not None


async def test_non_retryable_upstream_error_is_one_attempt(
    make_app: AppFactory, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeResponsesUpstream()
    client = client_for(make_app([channel("a"), channel("b")], transport=httpx.ASGITransport(app=fake)))
    with caplog.at_level(logging.INFO, logger="ccx_asgi.requests"):
        response = await client.post("/responses", json={"model": "m", "input": "hi", "bogus_field": 1})
    assert response.status_code == 400
    [fields] = _fields(caplog)
    assert fields["attempts"] == 1
    assert fields["channel"] == "a"
    assert fields["failed_attempts"][0]["status"] == 400
    assert "Unknown parameter" in fields["failed_attempts"][0]["outcome"]


async def test_unrouted_request_fields(
    make_app: AppFactory, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(make_app([channel(models=["gpt-*"])]))
    with caplog.at_level(logging.INFO, logger="ccx_asgi.requests"):
        response = await client.post("/responses", json={"model": "claude-x", "input": "hi"})
    assert response.status_code == 404
    [fields] = _fields(caplog)
    assert "'claude-x'" in fields["error_message"]
    assert (fields["status"], fields["error_code"], fields["channel"], fields["attempts"]) == (
        404,
        "model_not_found",
        None,
        None,
    )


async def test_json_formatter_and_no_secrets(
    make_app: AppFactory, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeResponsesUpstream()
    channels = [channel("stale", api_keys=["revoked-key-0001"], headers={"x-org": "org-secret-42"}), channel("main")]
    client = client_for(make_app(channels, transport=httpx.ASGITransport(app=fake)))
    with caplog.at_level(logging.DEBUG, logger="ccx_asgi"):
        response = await client.post("/responses", json={"model": "m", "input": "hi", "stream": True})
    assert response.status_code == 200
    formatter = JSONFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    request_line = json.loads(formatter.format(_records(caplog)[0]))
    assert set(LOG_FIELDS) <= set(request_line)
    assert {"ts", "level", "logger", "message"} <= set(request_line)
    assert request_line["logger"] == "ccx_asgi.requests"
    assert request_line["attempts"] == 2
    everything = "\n".join(lines) + caplog.text
    for secret in (PROXY_KEY, UPSTREAM_KEY, "revoked-key-0001", "org-secret-42"):
        assert secret not in everything


async def test_debug_body_is_redacted(
    make_app: AppFactory, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(make_app(transport=httpx.ASGITransport(app=FakeResponsesUpstream())))
    body = {
        "model": "m",
        "input": f"my key is {UPSTREAM_KEY} and " + "x" * 1000,
        "metadata": {"session_token": "tok-123456"},
        "max_output_tokens": 50,
    }
    with caplog.at_level(logging.INFO, logger="ccx_asgi.requests"):
        await client.post("/responses", json=body)
    assert not [r for r in caplog.records if r.name == "ccx_asgi.requests.body"], "bodies only at DEBUG"
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="ccx_asgi.requests.body"):
        response = await client.post("/responses", json=body)
    assert response.status_code == 200
    [record] = [r for r in caplog.records if r.name == "ccx_asgi.requests.body"]
    text = record.getMessage()
    assert UPSTREAM_KEY not in text
    assert "tok-123456" not in text
    assert "[redacted]" in text
    assert "more chars]" in text
    assert '"max_output_tokens":50' in text
    assert len(text) < 600


def test_redact_body_table() -> None:
    body = {"a": ["s3cr3t-value inside"], "Authorization": "Bearer x", "n_tokens": 5, "deep": {"k": "ok"}}
    assert redact_body(body, ["s3cr3t-value"]) == {
        "a": ["[redacted] inside"],
        "Authorization": "[redacted]",
        "n_tokens": 5,
        "deep": {"k": "ok"},
    }


@pytest.fixture
def _restore_logging() -> Any:
    root, httpx_logger = logging.getLogger(), logging.getLogger("httpx")
    saved = (root.handlers[:], root.level, httpx_logger.level)
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    httpx_logger.setLevel(saved[2])


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_configure_logging(capsys: pytest.CaptureFixture[str], log_format: str) -> None:
    from ccx_asgi.logs import configure_logging

    configure_logging(log_format, "INFO")
    logging.getLogger("ccx_asgi.requests").info("hello", extra={"ccx": {"request_id": "r1", "status": 200}})
    logging.getLogger("httpx").info("HTTP Request: POST https://user:pw@upstream.test/v1/responses")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1  # httpx's INFO line is silenced
    if log_format == "json":
        line = json.loads(err[0])
        assert (line["message"], line["request_id"], line["status"], line["level"]) == ("hello", "r1", 200, "INFO")
    else:
        assert err[0].endswith("INFO ccx_asgi.requests: hello")


def test_json_formatter_drops_ansi_duplicates_and_keeps_extras() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started %d", (7,), None)
    record.color_message = "Started \x1b[36m%d\x1b[0m"
    record.custom = "kept"
    line = json.loads(JSONFormatter().format(record))
    assert line["message"] == "Started 7"
    assert line["custom"] == "kept"
    assert "color_message" not in line


@pytest.mark.parametrize(
    "module", ["ccx_asgi.observability", "ccx_asgi.admin", "ccx_asgi.metrics", "ccx_asgi.catalog", "ccx_asgi.hints"]
)
def test_public_names_exist_and_are_documented(module: str) -> None:
    import importlib
    import inspect

    mod = importlib.import_module(module)
    assert mod.__doc__
    public = {n for n, v in vars(mod).items() if not n.startswith("_") and getattr(v, "__module__", None) == module}
    assert public <= set(mod.__all__), public - set(mod.__all__)
    for name in mod.__all__:
        value = getattr(mod, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name
