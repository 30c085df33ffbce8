"""Prometheus exposition, parsed with prometheus_client's own parser; and life without the package."""

from __future__ import annotations

import sys
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PROXY_KEY, AppFactory, channel
from tests.fakes.responses_upstream import FakeResponsesUpstream
from tests.fixture_types import ClientFor


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _get(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_exposition_after_traffic(make_app: AppFactory, client_for: ClientFor) -> None:
    fake = FakeResponsesUpstream()
    channels = [channel("stale", api_keys=["revoked-key-0001"]), channel("main")]
    app = make_app(channels, transport=httpx.ASGITransport(app=fake))
    client = client_for(app)
    for stream in (True, False):
        response = await client.post("/responses", json={"model": "m", "input": "hi", "stream": stream})
        assert response.status_code == 200
    await client.post("/responses", json={"model": "m", "input": "hi", "bogus_field": 1})  # 400, not retried
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = _samples(response.text)
    assert _get(samples, "ccx_requests_total", channel="main", status="200") == 2
    assert _get(samples, "ccx_requests_total", channel="main", status="400") == 1
    # The 401 parks stale's only key, so later requests skip it instead of failing on it again.
    assert _get(samples, "ccx_upstream_failures_total", channel="stale") == 1
    assert _get(samples, "ccx_upstream_failures_total", channel="main") == 1
    # The 401 of "stale" moved on to "main"; main's 400 went to the client: no failover from it.
    assert _get(samples, "ccx_failovers_total", channel="stale") == 1
    assert _get(samples, "ccx_failovers_total", channel="main") is None
    assert _get(samples, "ccx_request_duration_seconds_count", channel="main") == 3
    assert _get(samples, "ccx_time_to_first_byte_seconds_count", channel="main") == 3
    assert _get(samples, "ccx_time_to_first_byte_seconds_bucket", channel="main", le="+Inf") == 3
    assert _get(samples, "ccx_tokens_total", channel="main", kind="input") == 200
    assert _get(samples, "ccx_tokens_total", channel="main", kind="output") == 20
    assert _get(samples, "ccx_tokens_total", channel="main", kind="cached_input") == 80
    assert _get(samples, "ccx_breaker_state", channel="main", ccx_breaker_state="closed") == 1
    assert _get(samples, "ccx_breaker_state", channel="main", ccx_breaker_state="unknown") == 0
    # The failover layer's store feeds the gauge: stale's only key is parked, so the channel is open.
    assert _get(samples, "ccx_breaker_state", channel="stale", ccx_breaker_state="open") == 1


async def test_breaker_state_from_provider(make_app: AppFactory, client_for: ClientFor) -> None:
    app = make_app([channel("a"), channel("b"), channel("c")])
    app.admin.state_provider = lambda: {"a": {"breaker": "half-open"}, "b": {"breaker": {"state": "OPEN"}}}
    samples = _samples((await client_for(app).get("/metrics")).text)
    expected = {"a": "half_open", "b": "open", "c": "unknown"}
    for name, state in expected.items():
        for candidate in ("closed", "half_open", "open", "unknown"):
            value = _get(samples, "ccx_breaker_state", channel=name, ccx_breaker_state=candidate)
            assert value == (1 if candidate == state else 0), (name, candidate)


async def test_metrics_path_is_configurable(make_app: AppFactory, client_for: ClientFor) -> None:
    client = client_for(make_app(metrics_path="/internal/prom"))
    assert (await client.get("/internal/prom")).status_code == 200
    assert (await client.get("/metrics")).status_code == 404
    disabled = client_for(make_app(metrics_path=""))
    assert (await disabled.get("/metrics")).status_code == 404


async def test_separate_apps_have_separate_registries(make_app: AppFactory, client_for: ClientFor) -> None:
    first, second = client_for(make_app(models_from_upstream=False)), client_for(make_app())
    await first.post("/responses", json={"model": "x", "input": "y"}, headers={"x-api-key": PROXY_KEY})
    text = (await second.get("/metrics")).text
    assert "ccx_requests_total{" not in text


async def test_without_prometheus_client(
    monkeypatch: pytest.MonkeyPatch, make_app: AppFactory, client_for: ClientFor
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, "ccx_asgi.metrics", raising=False)
    app = make_app([{"name": "demo", "service_type": "demo"}])
    assert app.observer.metrics is None
    client = client_for(app)
    response = await client.post("/responses", json={"model": "m", "input": "hi"})
    assert response.status_code == 200  # the gateway runs
    response = await client.get("/metrics")
    assert response.status_code == 501
    assert "pip install 'ccx-asgi[metrics]'" in response.json()["error"]["message"]
    doc = (await client.get("/admin/channels")).json()
    assert doc["gateway"]["metrics_path"] is None
