"""No key (proxy, admin, upstream, channel header) in any log line, error body, response, header or
exception text, even when an upstream echoes the request's headers back.

``assert_no_secrets`` and ``SURFACES`` are the extension points: every endpoint that reports state
(models, admin API and page, metrics) is in ``SURFACES`` and checked after hostile traffic.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccx_asgi import CCXApp
from ccx_asgi.errors import ConfigurationError
from ccx_asgi.metrics import BREAKER_STATES
from ccx_asgi.settings import load_settings
from ccx_asgi.upstream import StreamRedactor
from tests.conftest import PROXY_KEY, AppFactory, channel
from tests.fakes.hostile_upstream import HostileUpstream, Plan, text_events
from tests.fixture_types import ClientFor
from tests.sdk import parse_sse, validate_events

UPSTREAM_KEY = "sk-upstream-SECRET-0123456789abcdef"
SECOND_KEY = "sk-upstream-SECOND-fedcba9876543210"
HEADER_SECRET = "hdr-SECRET-value-5555555555"
ADMIN_KEY = "admin-SECRET-key-7777777777"
EXTRA_KEY = "extra-proxy-SECRET-8888888888"
SECRETS = (UPSTREAM_KEY, SECOND_KEY, HEADER_SECRET, ADMIN_KEY, PROXY_KEY, EXTRA_KEY)

WRONG_KEY = "wrong-client-SECRET-9999999999"

#: (method, path, key) of every endpoint that reports gateway state: the model list, the admin API
#: and page, and the Prometheus metrics (all behind the admin key once one is configured).
SURFACES: list[tuple[str, str, str | None]] = [
    ("GET", "/models", PROXY_KEY),
    ("GET", "/admin/channels", ADMIN_KEY),
    ("GET", "/admin/", ADMIN_KEY),
    ("GET", "/metrics", ADMIN_KEY),
]


def assert_no_secrets(*texts: str | bytes, secrets: Iterable[str] = SECRETS) -> None:
    """Fail, naming the secret but not printing it, if any text contains any secret."""
    for text in texts:
        haystack = text.decode("latin-1") if isinstance(text, bytes) else text
        for secret in secrets:
            assert secret not in haystack, f"secret ending …{secret[-4:]} leaked into: {haystack[:200]!r}"


def response_texts(response: httpx.Response) -> list[str]:
    """Everything a client can see of a response: body and every header."""
    return [response.text, *(f"{k}: {v}" for k, v in response.headers.multi_items())]


def log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every captured log line, with its exception text."""
    return [r.getMessage() + (caplog.handler.format(r) if r.exc_info else "") for r in caplog.records]


def echo_headers(status: int) -> Any:
    """An upstream that answers ``status`` and echoes every request header in its error message."""

    def plan(body: dict[str, Any], headers: dict[str, str]) -> Plan:
        echoed = "; ".join(f"{k}={v}" for k, v in headers.items())
        return Plan(status=status, error={"error": {"message": f"rejected, you sent: {echoed}", "code": "x"}})

    return plan


@pytest.fixture
def upstream() -> HostileUpstream:
    return HostileUpstream(plan=echo_headers(401))


@pytest.fixture
def gateway(make_app: AppFactory, upstream: HostileUpstream) -> CCXApp:
    channels = [
        channel("a", api_keys=[UPSTREAM_KEY, SECOND_KEY], headers={"x-portkey-key": HEADER_SECRET}),
        channel("b", api_keys=[UPSTREAM_KEY]),
    ]
    return make_app(
        channels,
        transport=httpx.ASGITransport(app=upstream),
        admin_access_key=ADMIN_KEY,
        extra_proxy_access_keys=EXTRA_KEY,
    )


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, including httpx and httpcore


@pytest.mark.parametrize("status", [401, 429, 500, 400, 404])
@pytest.mark.parametrize("stream", [True, False])
async def test_upstream_errors_echoing_headers_leak_nothing(
    gateway: CCXApp,
    upstream: HostileUpstream,
    client_for: ClientFor,
    caplog: pytest.LogCaptureFixture,
    status: int,
    stream: bool,
) -> None:
    upstream.plan = echo_headers(status)
    response = await client_for(gateway).post("/responses", json={"model": "m", "input": "hi", "stream": stream})
    assert response.status_code >= 400
    # The echo really happened (the fake saw the keys), and was redacted on the way out.
    assert any(h.get("authorization") == f"Bearer {UPSTREAM_KEY}" for h, _ in upstream.requests)
    assert "[redacted]" in response.text
    assert_no_secrets(*response_texts(response), *log_texts(caplog))


async def test_the_all_failed_503_lists_attempts_without_keys(
    gateway: CCXApp, upstream: HostileUpstream, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client_for(gateway).post("/responses", json={"model": "m", "input": "hi"})
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    # three attempts: channel a with both keys, then channel b
    assert "a (key #1)" in message
    assert "a (key #2)" in message
    assert "b (key #1)" in message
    assert_no_secrets(*response_texts(response), *log_texts(caplog))


def _echo_in_stream(committed: bool) -> Any:
    def plan(body: dict[str, Any], headers: dict[str, str]) -> Plan:
        events = text_events("partial answer")
        echoed = f"upstream crashed handling authorization={headers.get('authorization')} x={headers}"
        last = events[-1]
        assert isinstance(last, dict)
        failed = dict(last)
        failed["type"] = "response.failed"
        failed["response"] = {
            **failed["response"],
            "status": "failed",
            "error": {"code": "server_error", "message": echoed},
        }
        # before the commit: only the prelude, then the failure; after: a text delta (the first
        # meaningful event, see channels/endpoint.py), then the failure
        kept = events[:5] if committed else events[:2]
        assert isinstance(kept[-1], dict) and kept[-1]["type"] == (
            "response.output_text.delta" if committed else "response.in_progress"
        )
        return Plan(events=[*kept, failed])

    return plan


@pytest.mark.parametrize("committed", [True, False])
async def test_in_stream_errors_echoing_keys_are_redacted(
    gateway: CCXApp, upstream: HostileUpstream, client_for: ClientFor, caplog: pytest.LogCaptureFixture, committed: bool
) -> None:
    upstream.plan = _echo_in_stream(committed)
    response = await client_for(gateway).post("/responses", json={"model": "m", "input": "hi", "stream": True})
    if committed:
        events = parse_sse(response.content)
        validate_events(events)
        assert events[-1]["type"] == "response.failed"
        assert "[redacted]" in events[-1]["response"]["error"]["message"]
    else:
        assert response.status_code == 503
        assert "[redacted]" in response.text
    assert_no_secrets(*response_texts(response), *log_texts(caplog))


async def test_transport_failures_leak_nothing(
    make_app: AppFactory, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"boom {request.headers}")  # an exception text that carries headers

    app = make_app([channel("a", api_keys=[UPSTREAM_KEY])], transport=httpx.MockTransport(explode))
    response = await client_for(app).post("/responses", json={"model": "m", "input": "hi"})
    assert response.status_code == 503
    assert "ConnectError" in response.json()["error"]["message"]
    assert_no_secrets(*response_texts(response), *log_texts(caplog))


async def test_client_keys_are_never_forwarded(
    gateway: CCXApp, upstream: HostileUpstream, client_for: ClientFor
) -> None:
    upstream.plan = lambda body, headers: Plan(events=text_events())
    client = client_for(gateway, key=EXTRA_KEY)
    response = await client.post(
        "/responses",
        json={"model": "m", "input": "hi", "stream": True},
        headers={"x-api-key": PROXY_KEY, "x-custom": "fine"},
    )
    assert response.status_code == 200
    headers, body = upstream.requests[-1]
    assert headers["x-custom"] == "fine"
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert_no_secrets(orjson.dumps(headers), orjson.dumps(body), secrets=(PROXY_KEY, EXTRA_KEY, ADMIN_KEY))


async def test_wrong_client_keys_are_not_echoed(
    gateway: CCXApp, client_for: ClientFor, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-key-that-looks-real-123456"
    response = await client_for(gateway, key=wrong).post("/responses", json={"model": "m", "input": "hi"})
    assert response.status_code == 401
    assert_no_secrets(*response_texts(response), *log_texts(caplog), secrets=(*SECRETS, wrong))


async def _hostile_traffic(gateway: CCXApp, upstream: HostileUpstream, client_for: ClientFor) -> None:
    """Fill the recent-request rings and metrics with everything that could carry a key: upstream
    errors echoing the request headers (every status, stream or not), an in-stream failure echoing
    them, an all-channels-failed 503, a success, and a client with a wrong key."""
    proxy = client_for(gateway, key=EXTRA_KEY)
    for status in (400, 401, 429, 500):
        upstream.plan = echo_headers(status)
        for stream in (True, False):
            response = await proxy.post("/responses", json={"model": "m", "input": "hi", "stream": stream})
            assert response.status_code >= 400
    # Keys first, so they sit inside the (truncated) failure outcome the admin API keeps.
    upstream.plan = lambda body, headers: Plan(
        status=503, error={"error": {"message": f"bad {headers.get('authorization')} {headers.get('x-portkey-key')}"}}
    )
    assert (await proxy.post("/responses", json={"model": "m", "input": "hi"})).status_code == 503
    upstream.plan = _echo_in_stream(committed=True)
    response = await proxy.post("/responses", json={"model": "m", "input": "hi", "stream": True})
    assert parse_sse(response.content)[-1]["type"] == "response.failed"
    upstream.plan = lambda body, headers: Plan(events=text_events())
    assert (await proxy.post("/responses", json={"model": "m", "input": "hi", "stream": True})).status_code == 200
    assert (await client_for(gateway, key=WRONG_KEY).post("/responses", json={"model": "m"})).status_code == 401
    assert any(h.get("authorization") == f"Bearer {SECOND_KEY}" for h, _ in upstream.requests)


_LABELS = re.compile(r"^[a-z_]+\{([^}]*)\}", re.MULTILINE)


@pytest.mark.parametrize(("method", "path", "key"), SURFACES)
async def test_state_endpoints_leak_nothing(
    gateway: CCXApp,
    upstream: HostileUpstream,
    client_for: ClientFor,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    key: Any,
) -> None:
    await _hostile_traffic(gateway, upstream, client_for)
    response = await client_for(gateway, key=key).request(method, path)
    assert response.status_code == 200, response.text
    assert_no_secrets(*response_texts(response), *log_texts(caplog), secrets=(*SECRETS, WRONG_KEY))
    if path == "/admin/channels":
        # The traffic is there (failed attempts per channel), the keys are not.
        assert {c["name"] for c in response.json()["channels"]} == {"a", "b"}
        assert "bad Bearer [redacted] [redacted]" in response.text
    if path == "/metrics":
        # The failures were counted (the endpoint saw the traffic), and every label value is one the
        # gateway chose: channel names, HTTP statuses, token kinds, buckets, breaker states.
        assert re.search(r'^ccx_upstream_failures_total\{channel="a"\} [1-9]', response.text, re.MULTILINE)
        allowed: dict[str, Callable[[str], bool]] = {
            "channel": lambda v: v in ("a", "b", "none"),
            "status": str.isdigit,
            "kind": lambda v: v in ("input", "output", "cached_input", "reasoning"),
            "le": lambda v: v == "+Inf" or v.replace(".", "", 1).isdigit(),
            "ccx_breaker_state": lambda v: v in BREAKER_STATES,
        }
        pairs = [p for labels in _LABELS.findall(response.text) for p in re.findall(r'(\w+)="([^"]*)"', labels)]
        assert pairs
        for name, value in pairs:
            assert name in allowed and allowed[name](value), (name, value[-4:])


def test_settings_and_configuration_errors_hide_keys() -> None:
    settings = load_settings(
        proxy_access_key=PROXY_KEY,
        admin_access_key=ADMIN_KEY,
        channels=[channel("a", api_keys=[UPSTREAM_KEY], headers={"x-k": HEADER_SECRET})],
    )
    assert_no_secrets(repr(settings), str(settings), repr(settings.channels[0]), settings.model_dump_json())
    bad: list[dict[str, Any]] = [
        {"channels": [{**channel("a"), "api_keys": UPSTREAM_KEY}]},  # a string, not a list
        {"channels": [{**channel("a"), "headers": [HEADER_SECRET]}]},
        {"channels": [{**channel("a", api_keys=[UPSTREAM_KEY]), "base_url": f"ftp://{UPSTREAM_KEY}@x"}]},
        {"channels": f'[{{"name": "a", "api_keys": ["{UPSTREAM_KEY}"]'},  # broken JSON
    ]
    for overrides in bad:
        with pytest.raises(ConfigurationError) as info:
            load_settings(**overrides)
        assert_no_secrets(str(info.value), repr(info.value))


@given(
    text=st.text(st.sampled_from('abc-sk\n:"{} '), max_size=80),
    cuts=st.lists(st.integers(0, 200), max_size=8),
)
def test_redaction_survives_any_chunking(text: str, cuts: list[int]) -> None:
    secret = "sk-abc-secret-key-xyz"
    raw = (text + secret + text + secret[:5]).encode()
    redactor = StreamRedactor([secret])
    points = sorted({min(c, len(raw)) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    out = b"".join(redactor.feed(p) for p in pieces) + redactor.flush()
    assert out == raw.replace(secret.encode(), b"[redacted]")
    assert secret.encode() not in out
