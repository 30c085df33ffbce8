"""Fault injection over real HTTP: 200 streams while one of two upstreams fails at random.

The flaky upstream answers 5xx, drops the connection (before or after content) or stalls (before
or after content). Every request must end with either the complete answer or an explicit error
(a ``response.failed`` event or an HTTP error); none may hang, and none may report success for a
cut answer. The counts are printed (run with ``-s``) and asserted.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from ccx_asgi import ChannelConfig, create_app, load_settings
from ccx_asgi.convert.events import ResponseStream, usage_dict
from ccx_asgi.sse import encode_event
from ccx_asgi.types import Receive, Scope, Send
from tests.conftest import PROXY_KEY
from tests.fakes.asgi import read_request
from tests.sdk import parse_sse, validate_events
from tests.servers import serve

WORDS = [f"w{n}" for n in range(12)]
EXPECTED = "".join(w + " " for w in WORDS)
REQUESTS = 200
CONCURRENCY = 25
MODES = ["ok", "5xx", "drop_before", "drop_after", "stall_before", "stall_after"]
WEIGHTS = [30, 20, 15, 10, 15, 10]


class _Dropped(Exception):
    """Raised inside the upstream app: uvicorn then cuts the connection mid-response."""


class Upstream:
    """A Responses upstream that answers ``EXPECTED``, or fails in a random way when ``flaky``."""

    def __init__(self, *, flaky: bool, seed: int = 7) -> None:
        self.flaky = flaky
        self.rng = random.Random(seed)
        self.modes: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        _, raw = await read_request(scope, receive)
        body = orjson.loads(raw)
        mode = self.rng.choices(MODES, WEIGHTS)[0] if self.flaky else "ok"
        self.modes[mode] += 1
        if mode == "5xx":
            code = self.rng.choice([500, 502, 503])
            payload = orjson.dumps({"error": {"message": "injected failure", "type": "server_error"}})
            await send(
                {"type": "http.response.start", "status": code, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": payload})
            return
        stream = ResponseStream(body["model"])
        stream.start()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await self._flush(send, stream)
        if mode == "drop_before":
            raise _Dropped
        if mode == "stall_before":
            await asyncio.sleep(1.5)
            return
        index = stream.open_item("message")
        for n, word in enumerate(WORDS):
            stream.delta(index, word + " ")
            await self._flush(send, stream)
            await asyncio.sleep(0.002)
            if n == 4 and mode == "drop_after":
                raise _Dropped
            if n == 4 and mode == "stall_after":
                await asyncio.sleep(1.5)
                return
        stream.complete(usage_dict(5, len(WORDS)))
        await self._flush(send, stream, more=False)

    @staticmethod
    async def _flush(send: Send, stream: ResponseStream, *, more: bool = True) -> None:
        frames = b"".join(encode_event(e) for e in stream.take())
        await send({"type": "http.response.body", "body": frames, "more_body": more})


async def _one(client: httpx.AsyncClient, n: int, counts: Counter[str], served: Counter[str]) -> None:
    try:
        response = await client.post("/responses", json={"model": "gpt-5", "input": f"req {n}", "stream": True})
    except httpx.HTTPError as exc:  # a hang (timeout) or a broken gateway connection
        counts[f"client error {type(exc).__name__}"] += 1
        return
    if response.status_code != 200:
        error = response.json()["error"]
        assert error["code"] == "all_channels_failed", error
        counts["explicit HTTP error"] += 1
        return
    served[response.headers.get("x-ccx-channel", "(started by keep-alive)")] += 1
    events = parse_sse(response.content)
    validate_events(events)  # includes: exactly one terminal event, and it is last
    final = events[-1]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    if final["type"] == "response.completed":
        output = final["response"]["output"][0]["content"][0]["text"]
        if text == EXPECTED and output == EXPECTED:
            counts["complete answer"] += 1
        else:
            counts["BAD: completed but cut"] += 1
    elif final["type"] == "response.failed":
        counts["response.failed after content" if text else "response.failed before content"] += 1
    else:
        counts[f"BAD: {final['type']}"] += 1


@pytest.mark.parametrize("breaker", [False, True], ids=["breaker-off", "breaker-on"])
def test_fault_injection_200_streams(breaker: bool) -> None:
    flaky, steady = Upstream(flaky=True), Upstream(flaky=False)
    # With the breaker off every request meets the flaky upstream first; with it on (fast backoff so
    # it keeps probing) the breaker's skipping is exercised under concurrency too.
    breaker_settings: dict[str, Any] = (
        {"breaker_backoff": 0.2, "breaker_max_backoff": 0.4}
        if breaker
        else {"breaker_failure_threshold": 10_000, "breaker_min_requests": 10_000}
    )
    with serve(flaky) as flaky_url, serve(steady) as steady_url:
        settings = load_settings(
            proxy_access_key=PROXY_KEY,
            keepalive_interval=0.2,
            affinity_ttl=0,
            **breaker_settings,
            channels=[
                ChannelConfig(
                    name="flaky", service_type="responses", base_url=flaky_url + "/v1", api_keys=[SecretStr("k")],
                    first_byte_timeout=0.6, idle_timeout=0.6, connect_timeout=1,
                ),
                ChannelConfig(
                    name="steady", service_type="responses", base_url=steady_url + "/v1", api_keys=[SecretStr("k")],
                    first_byte_timeout=2, idle_timeout=2, connect_timeout=1,
                ),
            ],
        )  # fmt: skip
        with serve(create_app(settings)) as gateway:
            counts: Counter[str] = Counter()
            served: Counter[str] = Counter()

            async def run() -> float:
                limits = httpx.Limits(max_connections=CONCURRENCY)
                headers = {"authorization": f"Bearer {PROXY_KEY}"}
                async with httpx.AsyncClient(
                    base_url=gateway, headers=headers, timeout=httpx.Timeout(8.0), limits=limits
                ) as client:
                    gate = asyncio.Semaphore(CONCURRENCY)

                    async def bounded(n: int) -> None:
                        async with gate:
                            await _one(client, n, counts, served)

                    started = time.monotonic()
                    await asyncio.gather(*(bounded(n) for n in range(REQUESTS)))
                    return time.monotonic() - started

            elapsed = asyncio.run(run())
    print(f"\nfault injection ({'breaker on' if breaker else 'breaker off'}): {REQUESTS} streams in {elapsed:.1f}s")
    print(f"  outcomes: {dict(counts)}")
    print(f"  served by: {dict(served)}")
    print(f"  flaky upstream behaviours: {dict(flaky.modes)}; steady upstream calls: {steady.modes['ok']}")
    assert sum(counts.values()) == REQUESTS
    assert not [k for k in counts if k.startswith(("BAD", "client error"))], counts
    # Each after-content fault of the flaky upstream is exactly one reported cut answer (no replay
    # elsewhere, no fake success); every other request got the complete answer or an HTTP error.
    cut = flaky.modes["drop_after"] + flaky.modes["stall_after"]
    assert cut > 0
    assert counts["response.failed after content"] == cut
    assert counts["complete answer"] == REQUESTS - cut - counts["explicit HTTP error"]
    assert sum(flaky.modes[m] for m in MODES if m != "ok") > 20  # faults really were exercised
    assert elapsed < 30
