"""Hostile upstreams over real loopback sockets, through the whole gateway on its default transport.

Each upstream is a raw TCP server (``tests/fakes/raw_upstream.py``) that writes exact bytes:
malformed or ambiguous framing, stalls, glued answers, resets, bombs, redirects, 1xx and 101
answers. Every case must end within the channel's timeouts with the right status (or, once the
stream has started, ``response.failed``), leave no connection open, and never deliver one POST to
the upstream twice.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import AppFactory, channel
from tests.fakes.raw_upstream import (
    Conn,
    RawRequest,
    RawUpstream,
    chunked,
    completed,
    head,
    json_answer,
    ok_answer,
    sse_events,
)
from tests.sdk import parse_sse, validate_events, validate_response

#: Every case runs on the standard loop and on uvloop, what the standalone server runs on
#: (``pytest_asyncio_loop_factories`` in ``tests/conftest.py``).
BOTH_LOOPS = True

IDLE = 0.5
FIRST_BYTE = 2.0
#: Longest any case may take: the channel's timeouts plus scheduling slack on a busy 2-core machine.
LIMIT = FIRST_BYTE + 2.0


def hostile(name: str, url: str, **fields: Any) -> dict[str, Any]:
    return channel(
        name, base_url=url + "/v1", connect_timeout=1, first_byte_timeout=FIRST_BYTE, idle_timeout=IDLE, **fields
    )


def body(stream: bool, text: str = "hi") -> dict[str, Any]:
    return {"model": "m", "input": text, "stream": stream}


async def gateway(
    make_app: AppFactory, client_for: Callable[..., httpx.AsyncClient], *upstreams: RawUpstream, **fields: Any
) -> httpx.AsyncClient:
    channels = [hostile(f"ch{n}", up.url, **fields) for n, up in enumerate(upstreams)]
    return client_for(make_app(channels))


def assert_once(up: RawUpstream) -> None:
    """No request body reached the upstream twice."""
    bodies = [r.body for r in up.requests if r.method == "POST"]
    assert len(bodies) == len(set(bodies)), "a POST was sent to the upstream twice"


async def ask(client: httpx.AsyncClient, stream: bool, text: str = "hi") -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.post("/responses", json=body(stream, text), timeout=30)
    return response, time.monotonic() - started


def failed_stream(response: httpx.Response) -> bool:
    events = parse_sse(response.content)
    validate_events(events)
    return bool(events[-1]["type"] == "response.failed")


# --- scripts -------------------------------------------------------------------------------------


def script(answer: Callable[[RawRequest], bytes], then: str = "keep") -> Callable[[Conn, RawRequest], Awaitable[None]]:
    """Write ``answer(request)``, then ``keep`` the connection, ``close`` it, ``reset`` it or ``stall``."""

    async def run(conn: Conn, request: RawRequest) -> None:
        await conn.send(answer(request))
        if then == "close":
            conn.writer.close()
        elif then == "reset":
            conn.reset()
        elif then == "stall":
            await conn.stall()

    return run


def sse_head() -> bytes:
    return head(200, "content-type: text/event-stream", "transfer-encoding: chunked")


def _through_delta(events: list[bytes]) -> list[bytes]:
    """The events up to and including the first text delta (what commits a stream to the client)."""
    first = next(n for n, e in enumerate(events) if b"output_text.delta" in e)
    return events[: first + 1]


# --- stalls --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_error_head_then_stalled_body_fails_over_within_idle_timeout(
    make_app: AppFactory, client_for: Any, stream: bool
) -> None:
    stalled = script(
        lambda r: head(500, "content-type: application/json", "content-length: 1000") + b'{"error"', "stall"
    )
    async with RawUpstream(stalled) as bad, RawUpstream(script(ok_answer)) as good:
        client = await gateway(make_app, client_for, bad, good)
        response, took = await ask(client, stream, "first")
        assert response.status_code == 200
        assert took < IDLE + 1.5, "the error body's stall held up failover"
        alone = await gateway(make_app, client_for, bad)
        response, took = await ask(alone, stream, "second")
        assert response.status_code == 503
        assert "HTTP 500" in response.json()["error"]["message"]
        assert took < IDLE + 1.5
        await client.aclose()
        assert await bad.all_closed()
        assert_once(bad)


async def test_json_body_stalled_mid_way_times_out(make_app: AppFactory, client_for: Any) -> None:
    stalled = script(
        lambda r: head(200, "content-type: application/json", "content-length: 500") + b'{"id": "resp', "stall"
    )
    async with RawUpstream(stalled) as up:
        response, took = await ask(await gateway(make_app, client_for, up), False)
        assert response.status_code == 503
        assert "idle_timeout" in response.json()["error"]["message"]
        assert took < IDLE + 1.5
        assert await up.all_closed()
        assert_once(up)


async def test_json_body_trickled_past_the_total_deadline_fails(make_app: AppFactory, client_for: Any) -> None:
    async def trickle(conn: Conn, request: RawRequest) -> None:
        await conn.send(head(200, "content-type: application/json", "content-length: 100000"))
        for _ in range(1000):  # one byte every 0.1 s: never idle, never done
            await conn.send(b" ")
            await asyncio.sleep(0.1)

    async with RawUpstream(trickle) as up:
        response, took = await ask(await gateway(make_app, client_for, up), False)
        assert response.status_code == 503
        assert "first_byte_timeout" in response.json()["error"]["message"]
        assert FIRST_BYTE - 0.2 < took < LIMIT
        assert await up.all_closed()


async def test_stream_stalled_after_the_first_event_ends_with_response_failed(
    make_app: AppFactory, client_for: Any
) -> None:
    async def stall_mid(conn: Conn, request: RawRequest) -> None:
        events = sse_events("partial answer")
        await conn.send(sse_head() + b"".join(f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in _through_delta(events)))
        await conn.stall()

    async with RawUpstream(stall_mid) as up:
        response, took = await ask(await gateway(make_app, client_for, up), True)
        assert response.status_code == 200
        assert failed_stream(response)
        assert took < IDLE + 1.5
        assert await up.all_closed()
        assert_once(up)


@pytest.mark.parametrize(("limit", "count"), [(8, 40), (None, 300)], ids=["8-slots", "default-256-slots"])
async def test_a_stalled_channel_does_not_delay_a_healthy_one(
    make_app: AppFactory, client_for: Any, limit: int | None, count: int
) -> None:
    """More stalled requests than the stalled channel has connections: the healthy channel's pool
    is its own (before, 520 stalls exhausted one shared 512-slot pool for every channel)."""

    async def stall(conn: Conn, request: RawRequest) -> None:
        await conn.send(head(200, "content-type: text/event-stream", "transfer-encoding: chunked"))
        await conn.stall()

    slots = {} if limit is None else {"max_connections": limit}
    async with RawUpstream(stall) as bad, RawUpstream(script(ok_answer)) as good:
        app = make_app(
            [
                channel("stalled", base_url=bad.url + "/v1", models=["slow"], idle_timeout=10, **slots),
                channel("healthy", base_url=good.url + "/v1", models=["fast"]),
            ]
        )
        limit = limit or 256
        client = client_for(app)
        stalls = [
            asyncio.create_task(
                client.post("/responses", json={"model": "slow", "input": "x", "stream": True}, timeout=30)
            )
            for _ in range(count)
        ]
        # Every connection the stalled channel may have is open, and the rest of its requests wait.
        async with asyncio.timeout(5):
            await bad.connections(limit)
        started = time.monotonic()
        answers = await asyncio.gather(
            *(client.post("/responses", json={"model": "fast", "input": f"q{n}"}, timeout=30) for n in range(20))
        )
        took = time.monotonic() - started
        assert [a.status_code for a in answers] == [200] * 20
        assert took < 2.0, f"the healthy channel waited {took:.2f}s behind the stalled one"
        assert len(bad.conns) == limit, "the stalled channel opened more connections than its max_connections"
        for task in stalls:
            task.cancel()
        await asyncio.gather(*stalls, return_exceptions=True)


async def test_a_full_channel_pool_fails_over_after_connect_timeout(make_app: AppFactory, client_for: Any) -> None:
    async def stall(conn: Conn, request: RawRequest) -> None:
        await conn.send(sse_head())
        await conn.stall()

    async with RawUpstream(stall) as bad, RawUpstream(script(ok_answer)) as good:
        app = make_app(
            [
                channel("one-slot", base_url=bad.url + "/v1", max_connections=1, connect_timeout=0.3, idle_timeout=10),
                channel("spare", base_url=good.url + "/v1"),
            ]
        )
        client = client_for(app)
        held = asyncio.create_task(client.post("/responses", json=body(True, "holds the slot"), timeout=30))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        response = await client.post("/responses", json=body(False, "second"), timeout=30)
        assert response.status_code == 200
        assert response.headers["x-ccx-channel"] == "spare"
        assert 0.25 < time.monotonic() - started < 2.0
        assert len(bad.conns) == 1
        held.cancel()
        await asyncio.gather(held, return_exceptions=True)


# --- framing -------------------------------------------------------------------------------------


async def test_two_answers_glued_in_one_packet_are_never_served_to_another_request(
    make_app: AppFactory, client_for: Any
) -> None:
    def glued(request: RawRequest) -> bytes:
        return json_answer(completed(f"answer to {request.json()['input']}")) + json_answer(completed("GLUED"))

    async with RawUpstream(script(glued)) as up:
        app = make_app([hostile("glued", up.url)])
        client = client_for(app)
        for n in range(3):
            response, _ = await ask(client, False, f"q{n}")
            assert response.status_code == 200
            assert validate_response(response.json()).output_text == f"answer to q{n}"
        assert_once(up)
        # The leftover bytes made each connection unusable: every request got its own.
        assert len(up.conns) == 3
        await app.aclose()
        assert await up.all_closed()


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            head(200, "content-type: application/json", "content-length: 5", "transfer-encoding: chunked")
            + chunked(b'{"a":1}'),
            id="content-length+chunked",
        ),
        pytest.param(
            head(200, "content-type: application/json", "content-length: 7", "content-length: 9") + b'{"a":1}xx',
            id="conflicting-lengths",
        ),
        pytest.param(
            head(200, "content-type: application/json", "content-length: 7", "content-length: 7") + b'{"a":1}',
            id="duplicate-length",
        ),
        pytest.param(
            head(200, "content-type: application/json", "content-length: 7, 9") + b'{"a":1}xx', id="length-list"
        ),
        pytest.param(
            head(200, "content-type: application/json", "transfer-encoding: chunked") + b"zz\r\n{}\r\n0\r\n\r\n",
            id="bad-chunk-size",
        ),
        pytest.param(
            head(200, "content-type: application/json", "transfer-encoding: chunked") + b'7\r\n{"a":1}XX0\r\n\r\n',
            id="bad-chunk-end",
        ),
        pytest.param(b"HTTP/1.1 200\r\nbad header line\r\n\r\n{}", id="header-without-colon"),
        pytest.param(b"HTTP/9.9 200 OK\r\ncontent-length: 2\r\n\r\n{}", id="bad-version"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_ambiguous_or_bad_framing_is_an_upstream_error(
    make_app: AppFactory, client_for: Any, answer: bytes, stream: bool
) -> None:
    async with RawUpstream(script(lambda r: answer)) as up:
        response, took = await ask(await gateway(make_app, client_for, up), stream)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "all_channels_failed"
        assert took < LIMIT
        assert await up.all_closed()
        assert_once(up)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_informational_answers_before_the_real_one_are_skipped(
    make_app: AppFactory, client_for: Any, stream: bool
) -> None:
    answer = lambda r: head(100, reason="Continue") + head(103, "link: </x>", reason="Early Hints") + ok_answer(r)  # noqa: E731
    async with RawUpstream(script(answer)) as up:
        response, _ = await ask(await gateway(make_app, client_for, up), stream)
        assert response.status_code == 200
        if stream:
            assert not failed_stream(response)
        else:
            assert validate_response(response.json()).output_text == "pong"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_switching_protocols_is_an_upstream_error_not_a_crash(
    make_app: AppFactory, client_for: Any, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    answer = head(101, "upgrade: websocket", "connection: upgrade", reason="Switching Protocols") + b"\x81\x05hello"
    async with RawUpstream(script(lambda r: answer, "stall")) as up:
        response, took = await ask(await gateway(make_app, client_for, up), stream)
        assert response.status_code == 503
        assert "HTTP 101" in response.json()["error"]["message"]
        assert took < LIMIT
        assert await up.all_closed()
    assert "Traceback" not in caplog.text


async def test_obs_fold_is_unfolded_as_rfc_9112_asks_of_a_user_agent(make_app: AppFactory, client_for: Any) -> None:
    def folded(request: RawRequest) -> bytes:
        data = json_answer(completed("folded"))
        return data.replace(b"\r\n", b"\r\nx-folded: one\r\n two\r\n", 1)

    async with RawUpstream(script(folded)) as up:
        response, _ = await ask(await gateway(make_app, client_for, up), False)
        assert response.status_code == 200
        assert validate_response(response.json()).output_text == "folded"


async def test_bytes_after_the_answer_in_its_packet_fail_it_and_are_never_served(
    make_app: AppFactory, client_for: Any
) -> None:
    async with RawUpstream(script(lambda r: ok_answer(r) + b"EXTRA BYTES")) as up:
        response, took = await ask(await gateway(make_app, client_for, up), False)
        assert response.status_code == 503
        assert "malformed upstream answer" in response.json()["error"]["message"]
        assert b"EXTRA" not in response.content
        assert took < LIMIT
        assert await up.all_closed()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_idle_timeout_answer_on_a_pooled_connection_never_reaches_the_next_request(
    make_app: AppFactory, client_for: Any, stream: bool
) -> None:
    """Some servers answer an idle keep-alive connection with ``408`` and close it."""

    async def then_408(conn: Conn, request: RawRequest) -> None:
        await conn.send(ok_answer(request, f"for {request.json()['input']}"))
        await asyncio.sleep(0.05)  # the answer is complete and its connection back in the pool
        await conn.send(json_answer({"error": {"message": "idle"}}, status=408))
        conn.writer.close()

    async with RawUpstream(then_408) as up:
        client = await gateway(make_app, client_for, up)
        for n in range(2):
            response, _ = await ask(client, stream, f"q{n}")
            await asyncio.sleep(0.1)
            assert response.status_code == 200
            assert b"idle" not in response.content
            if not stream:
                assert validate_response(response.json()).output_text == f"for q{n}"
        assert_once(up)
        assert [len(c.requests) for c in up.conns] == [1, 1]


@pytest.mark.parametrize("then", ["close", "reset"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_body_shorter_than_its_length_or_cut_mid_body(
    make_app: AppFactory, client_for: Any, stream: bool, then: str
) -> None:
    def short(request: RawRequest) -> bytes:
        if stream:
            events = sse_events("cut")
            return sse_head() + b"".join(f"{len(e):x}\r\n".encode() + e + b"\r\n" for e in _through_delta(events))
        return head(200, "content-type: application/json", "content-length: 4000") + b'{"id": "resp_1", "obj'

    async with RawUpstream(script(short, then)) as up:
        response, took = await ask(await gateway(make_app, client_for, up), stream)
        if stream:
            assert response.status_code == 200
            assert failed_stream(response)
        else:
            assert response.status_code == 503
            assert "mid-response" in response.json()["error"]["message"]
        assert took < LIMIT
        assert await up.all_closed()
        assert_once(up)


@pytest.mark.parametrize("then", ["close", "reset"])
async def test_closed_or_reset_before_any_answer_byte(make_app: AppFactory, client_for: Any, then: str) -> None:
    async with RawUpstream(script(lambda r: b"", then)) as up:
        response, took = await ask(await gateway(make_app, client_for, up), False)
        assert response.status_code == 503
        assert took < LIMIT
        assert_once(up)
        assert len(up.requests) == 1, "a written request was sent again"


async def test_keep_alive_reuse_after_the_upstream_half_closed(make_app: AppFactory, client_for: Any) -> None:
    async def answer_then_half_close(conn: Conn, request: RawRequest) -> None:
        await conn.send(ok_answer(request, f"for {request.json()['input']}"))
        conn.writer.write_eof()  # FIN: this side sends no more, but still reads

    async with RawUpstream(answer_then_half_close) as up:
        client = await gateway(make_app, client_for, up)
        first, _ = await ask(client, False, "q0")
        await asyncio.sleep(0.1)  # the FIN has arrived
        second, _ = await ask(client, False, "q1")
        assert first.status_code == second.status_code == 200
        assert validate_response(second.json()).output_text == "for q1"
        assert_once(up)
        assert [len(c.requests) for c in up.conns] == [1, 1], "a request went to the half-closed connection"


# --- bombs ---------------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _bomb(encoding: str, size: int = 256 * 1024 * 1024) -> bytes:
    wbits = {"gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}[encoding]
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = b"\0" * (1024 * 1024)
    return b"".join(compressor.compress(block) for _ in range(size // len(block))) + compressor.flush()


_BOMBS: dict[str, bytes] = {}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize(
    ("status", "stream"), [(500, False), (200, False), (200, True)], ids=["error", "json", "stream"]
)
async def test_compression_bombs_keep_memory_bounded(
    make_app: AppFactory, client_for: Any, encoding: str, status: int, stream: bool
) -> None:
    bomb = _BOMBS.get(encoding) or _BOMBS.setdefault(encoding, _bomb(encoding))
    kind = "text/event-stream" if stream else "application/json"
    answer = (
        head(status, f"content-type: {kind}", f"content-encoding: {encoding}", f"content-length: {len(bomb)}") + bomb
    )
    async with RawUpstream(script(lambda r: answer)) as up:
        client = await gateway(make_app, client_for, up)
        peak = base = _rss()

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, _rss())
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        try:
            response, took = await ask(client, stream)
        finally:
            sampler.cancel()
        if stream:
            assert response.status_code == 503 or failed_stream(response)
        elif status == 200:
            assert response.status_code == 502
            assert "exceeds" in response.json()["error"]["message"]
        else:
            assert response.status_code == 503
            assert "HTTP 500" in response.json()["error"]["message"]
        assert took < LIMIT + 5
        # 256 MiB inflated; the error body is capped at 256 KiB, a JSON answer and an unfinished SSE
        # event at 64 MiB each: memory follows the caps, never the bomb.
        assert peak - base < (100 if status == 200 else 40) * 1024 * 1024, (
            f"RSS grew by {(peak - base) / 2**20:.0f} MiB"
        )
        assert await up.all_closed()


# --- redirects -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirects_are_never_followed(make_app: AppFactory, client_for: Any, status: int, stream: bool) -> None:
    async with RawUpstream(script(ok_answer)) as target:
        location = f"location: {target.url}/v1/responses"
        redirect = head(status, location, "content-length: 0")
        async with RawUpstream(script(lambda r: redirect)) as up:
            response, _ = await ask(await gateway(make_app, client_for, up), stream)
            assert response.status_code == 503
            assert f"HTTP {status}" in response.json()["error"]["message"]
            assert_once(up)
        assert target.requests == []
