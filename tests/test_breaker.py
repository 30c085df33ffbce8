"""Circuit breaker per (channel, key): open → half-open → closed with an injected clock."""

from __future__ import annotations

import pytest

from ccx_asgi.breaker import BreakerConfig, CircuitBreaker, target_id
from ccx_asgi.state import MemoryStore
from tests.fakes.scripted_upstream import FakeClock, Scripted, asgi_client, chan, ok, stack, status

BODY = {"model": "gpt-5", "input": "hi", "stream": True}
T = "a/0123456789ab"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(MemoryStore(clock=clock), BreakerConfig(), clock=clock)


async def test_opens_after_consecutive_failures_then_half_opens_and_closes(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    for _ in range(4):
        await breaker.failure(T)
        assert (await breaker.check(T)).allowed
    await breaker.failure(T)  # the 5th consecutive failure
    assert await breaker.state(T) == "open"
    verdict = await breaker.check(T)
    assert not verdict.allowed
    assert "circuit open, next probe in 30s" in verdict.reason
    clock.advance(29.9)
    assert not (await breaker.check(T)).allowed
    clock.advance(0.1)
    assert await breaker.state(T) == "half-open"
    probe = await breaker.check(T)
    assert probe.allowed
    assert probe.probe
    # Exactly one probe at a time.
    second = await breaker.check(T)
    assert not second.allowed
    assert "probe is already in flight" in second.reason
    await breaker.success(T, probe=True)
    assert await breaker.state(T) == "closed"
    assert (await breaker.check(T)).allowed


async def test_failed_probe_doubles_the_backoff_up_to_the_cap(breaker: CircuitBreaker, clock: FakeClock) -> None:
    for _ in range(5):
        await breaker.failure(T)
    waits = []
    for _ in range(7):
        record = await breaker.store.get("breaker", T)
        assert record is not None
        waits.append(record["b"])
        clock.advance(record["b"])
        probe = await breaker.check(T)
        assert probe.probe
        await breaker.failure(T, probe=True)
    assert waits == [30, 60, 120, 240, 480, 600, 600]
    # A success after all that closes it and forgets the backoff.
    clock.advance(600)
    probe = await breaker.check(T)
    await breaker.success(T, probe=probe.probe)
    for _ in range(5):
        await breaker.failure(T)
    assert (await breaker.store.get("breaker", T) or {})["b"] == 30


async def test_successes_reset_the_consecutive_count(breaker: CircuitBreaker) -> None:
    for _ in range(4):
        await breaker.failure(T)
    await breaker.success(T)
    for _ in range(4):
        await breaker.failure(T)
    assert await breaker.state(T) == "closed"


async def test_opens_on_failure_ratio_over_the_window(breaker: CircuitBreaker) -> None:
    # Four failures then a success, repeated: never 5 in a row, but 80 % failures.
    outcomes = [False, False, False, False, True] * 2 + [False]
    for n, good in enumerate(outcomes):
        assert await breaker.state(T) == "closed", n
        await (breaker.success(T) if good else breaker.failure(T))
    assert await breaker.state(T) == "open"


async def test_ratio_needs_min_requests(clock: FakeClock) -> None:
    breaker = CircuitBreaker(MemoryStore(clock=clock), BreakerConfig(failure_threshold=100), clock=clock)
    for _ in range(3):
        await breaker.failure(T)
    await breaker.success(T)
    assert await breaker.state(T) == "closed"  # 75 % but only 4 outcomes (< 10)


async def test_healthy_targets_cost_no_writes(breaker: CircuitBreaker) -> None:
    await breaker.success(T)
    assert await breaker.store.get("breaker", T) is None
    await breaker.failure(T)
    await breaker.success(T)
    assert await breaker.store.get("breaker", T) is not None  # the failure is still in the window


async def test_parking_expires(breaker: CircuitBreaker, clock: FakeClock) -> None:
    await breaker.park(T, 30)
    assert await breaker.state(T) == "parked"
    assert "parked for 30s" in (await breaker.check(T)).reason
    clock.advance(30.01)
    assert (await breaker.check(T)).allowed


def test_target_id_hides_the_key() -> None:
    from pydantic import SecretStr

    tid = target_id("main", SecretStr("sk-very-secret"))
    assert tid.startswith("main/")
    assert "secret" not in tid
    assert len(tid) == len("main/") + 12
    assert target_id("main", SecretStr("sk-very-secret")) == tid
    assert target_id("main", None) == "main/-"


@pytest.mark.parametrize(
    "bad",
    [{"failure_threshold": 0}, {"failure_ratio": 0}, {"failure_ratio": 1.5}, {"backoff": 0}, {"max_backoff": 1}],
)
def test_config_is_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="breaker"):
        BreakerConfig(**bad)  # type: ignore[arg-type]


async def test_open_circuit_is_skipped_then_probed_through_the_middleware(clock: FakeClock) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500))
    upstream.script("b.test", ok("from b"))
    app = stack([chan("a"), chan("b")], upstream, clock=clock, state=MemoryStore(clock=clock))
    async with asgi_client(app) as client:
        for _ in range(5):
            assert (await client.post("/responses", json=BODY)).headers["x-ccx-channel"] == "b"
        assert upstream.hosts().count("a.test") == 5
        upstream.calls.clear()
        # Open: 'a' is not even tried.
        response = await client.post("/responses", json=BODY)
        assert upstream.hosts() == ["b.test"]
        assert response.headers["x-ccx-attempts"] == "1"
        # After the backoff one probe goes to 'a'; it has recovered, so the circuit closes.
        upstream.script("a.test", ok("from a"))
        clock.advance(30)
        upstream.calls.clear()
        response = await client.post("/responses", json=BODY)
        assert response.headers["x-ccx-channel"] == "a"
        response = await client.post("/responses", json=BODY)
        assert response.headers["x-ccx-channel"] == "a"
        assert upstream.hosts() == ["a.test", "a.test"]


async def test_all_circuits_open_still_tries_them_as_a_last_resort(clock: FakeClock) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500))
    app = stack([chan("a")], upstream, clock=clock, state=MemoryStore(clock=clock))
    async with asgi_client(app) as client:
        for _ in range(5):
            assert (await client.post("/responses", json=BODY)).status_code == 503
        upstream.script("a.test", ok())
        response = await client.post("/responses", json=BODY)  # open, but nothing else exists
        assert response.status_code == 200


async def test_skipped_targets_are_listed_in_the_503(clock: FakeClock) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(500))
    upstream.script("b.test", ok())
    app = stack([chan("a"), chan("b")], upstream, clock=clock, state=MemoryStore(clock=clock))
    async with asgi_client(app) as client:
        for _ in range(5):
            await client.post("/responses", json=BODY)
        upstream.script("b.test", status(502, "bad gateway"))
        response = await client.post("/responses", json=BODY)
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "b (key #1): upstream returned HTTP 502: bad gateway" in message
    assert "a (key #1): skipped: circuit open, next probe in 30s" in message


async def test_retry_after_parks_the_key_for_that_long(clock: FakeClock) -> None:
    upstream = Scripted()
    upstream.script("a.test", status(429, "slow down", retry_after="20"), ok("from a"))
    app = stack([chan("a", keys=["key-1", "key-2"])], upstream, clock=clock, state=MemoryStore(clock=clock))
    async with asgi_client(app) as client:
        await client.post("/responses", json=BODY)
        await client.post("/responses", json=BODY)
        clock.advance(20.5)
        await client.post("/responses", json=BODY)
    assert [c.key for c in upstream.calls] == ["key-1", "key-2", "key-2", "key-1"]


def test_routing_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ccx_asgi.settings import load_settings

    defaults = load_settings()
    assert (defaults.breaker_failure_threshold, defaults.breaker_backoff, defaults.breaker_max_backoff) == (5, 30, 600)
    assert (defaults.affinity_ttl, defaults.keepalive_interval, defaults.key_park_seconds) == (1800, 10, 300)
    monkeypatch.setenv("CCX_BREAKER_BACKOFF", "7")
    monkeypatch.setenv("CCX_KEEPALIVE_INTERVAL", "2.5")
    monkeypatch.setenv("CCX_AFFINITY_PREFER_PRIORITY", "true")
    settings = load_settings()
    assert settings.breaker_backoff == 7
    assert settings.keepalive_interval == 2.5
    assert settings.affinity_prefer_priority is True


async def test_released_probe_keeps_the_circuit_half_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    for _ in range(5):
        await breaker.failure(T)
    clock.advance(30)
    assert (await breaker.check(T)).probe
    await breaker.release(T)  # e.g. the client disconnected during the probe
    assert await breaker.state(T) == "half-open"
    assert (await breaker.check(T)).probe  # the next request may probe


async def test_channel_state_summarises_keys_by_position(breaker: CircuitBreaker) -> None:
    from ccx_asgi.settings import ChannelConfig

    channel = ChannelConfig.model_validate(chan("a", keys=["k1", "k2"]))
    first, second = (target_id("a", key) for key in channel.api_keys)
    assert await breaker.channel_state(channel) == {"state": "closed", "keys": {"#1": "closed", "#2": "closed"}}
    await breaker.failed(first, park=60)
    state = await breaker.channel_state(channel)
    assert state["state"] == "closed"  # key #2 may still be used
    assert state["keys"]["#2"] == "closed" and state["keys"]["#1"] != "closed"
    await breaker.failed(second, park=60)
    assert (await breaker.channel_state(channel))["state"] == "open"
    assert "k1" not in str(state) and "k2" not in str(state)
