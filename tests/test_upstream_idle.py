"""The idle timeout of ``Upstream.iter_bytes`` (one watchdog timer per stream, not one per chunk):
a read that waits ``idle_timeout`` fails, steady chunks never do, and a slow *consumer* never counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from ccx_asgi import ChannelConfig
from ccx_asgi.context import Attempt
from ccx_asgi.errors import UpstreamTimeoutError
from ccx_asgi.upstream import Upstream
from tests.conftest import channel

IDLE = 0.2


class _Paced(httpx.AsyncByteStream):
    """Yields ``chunks`` b"x" chunks, sleeping ``gaps[i]`` seconds before chunk ``i``."""

    def __init__(self, gaps: list[float]) -> None:
        self.gaps = gaps

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for gap in self.gaps:
            await asyncio.sleep(gap)
            yield b"x"


def _upstream(gaps: list[float]) -> tuple[Upstream, Attempt]:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Paced(gaps))

    config = ChannelConfig.model_validate(channel("idle", idle_timeout=IDLE, first_byte_timeout=5))
    attempt = Attempt(config, "m", None, 0, {})
    return Upstream(transport=httpx.MockTransport(handler)), attempt


async def _read(gaps: list[float], consumer_pause: float = 0.0) -> tuple[int, float]:
    upstream, attempt = _upstream(gaps)
    started = time.monotonic()
    count = 0
    try:
        async with upstream.open(attempt, "https://upstream.test/v1/x", [], b"{}", stream=True) as response:
            async for _ in upstream.iter_bytes(attempt, response):
                count += 1
                await asyncio.sleep(consumer_pause)
    finally:
        await upstream.aclose()
    return count, time.monotonic() - started


async def test_a_stalled_read_fails_after_idle_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeoutError, match="idle_timeout"):
        await _read([0.0, 0.02, 5.0])
    elapsed = time.monotonic() - started
    assert IDLE <= elapsed < IDLE + 0.3


async def test_steady_chunks_closer_than_idle_never_time_out() -> None:
    # 10 gaps of 0.05 s: the stream lasts 2.5x the idle timeout, yet no single read waits that long.
    count, elapsed = await _read([0.05] * 10)
    assert count == 10
    assert elapsed > 2 * IDLE


async def test_a_slow_consumer_does_not_count_as_upstream_idleness() -> None:
    # The upstream answers at once; the reader takes 1.5x idle per chunk, which is not upstream idleness.
    count, _ = await _read([0.0] * 3, consumer_pause=1.5 * IDLE)
    assert count == 3


async def test_a_stall_after_a_slow_consumer_still_fails() -> None:
    with pytest.raises(UpstreamTimeoutError):
        await _read([0.0, 0.0, 5.0], consumer_pause=1.5 * IDLE)
